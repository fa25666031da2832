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


def test_any_falsy_value_but_none_cancels(restorer):
    import numpy as np

    for falsy in [np.False_, 0, ""]:
        with pytest.raises(spire.CancelledError):
            restorer.restore(picture(), num_inference_steps=4, progress=lambda s, t, v=falsy: v)
    # None (a callback that returns nothing) keeps going.
    restorer.restore(picture(), num_inference_steps=2, progress=lambda s, t: None)


def test_ctrl_c_stops_a_restore_without_a_callback_within_a_step(python_sigint):
    import _thread
    import threading
    import time

    import numpy as np

    r = spire.Restorer.builtin()
    image = np.zeros((512, 512, 3), np.uint8)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    t = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            # A thousand steps at 512²: minutes if the interrupt were only seen at the end.
            r.restore(image, num_inference_steps=1000, strength=1.0, consistency=0.0)
    finally:
        timer.cancel()
    assert time.perf_counter() - t < 10
