"""Shared fixtures: the tiny SPIRE model (tiny SD1 + a latent/modulation adaptor) and images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import spire

FIX = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture(scope="session")
def restorer() -> spire.Restorer:
    return spire.Restorer.from_pretrained(FIX / "tiny-sd1", adaptor=FIX / "tiny-spire-adaptor")


@pytest.fixture(scope="session")
def controlnet_restorer() -> spire.Restorer:
    return spire.Restorer.from_pretrained(FIX / "tiny-sd1", adaptor=FIX / "tiny-controlnet")


def picture(h: int = 24, w: int = 40) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    edge = ((x // 7 + y // 5) % 2) * 40
    img = np.stack([x * 200 // w + edge, y * 200 // h + edge, (x + y) % 50 * 4], axis=-1)
    return img.astype(np.uint8)


QUICK = dict(num_inference_steps=2)


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler for the test: `_thread.interrupt_main` (the simulated Ctrl-C)
    does nothing when SIGINT is ignored, as it is in a shell's background job (`cmd &`)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
