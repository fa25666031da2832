"""The progress callback: called each step, False cancels, exceptions propagate unchanged."""
import pytest

import spire
from conftest import picture


def test_called_for_every_step(restorer):
    seen = []
    restorer.restore(picture(), num_inference_steps=4, progress=lambda s, t: seen.append((s, t)))
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]


def test_returning_false_cancels_within_one_step(restorer):
    calls = []

    def cb(step, total):
        calls.append(step)
        return step < 1

    with pytest.raises(spire.CancelledError):
        restorer.restore(picture(), num_inference_steps=10, progress=cb)
    assert calls == [0, 1]


def test_an_exception_in_the_callback_is_reraised_unchanged(restorer):
    class Boom(Exception):
        pass

    err = Boom("stop here")

    def cb(step, total):
        if step == 2:
            raise err
        return True

    with pytest.raises(Boom) as e:
        restorer.restore(picture(), num_inference_steps=10, progress=cb)
    assert e.value is err


def test_none_and_true_continue(restorer):
    restorer.restore(picture(), num_inference_steps=2, progress=lambda s, t: None)
    restorer.restore(picture(), num_inference_steps=2, progress=lambda s, t: 1)
