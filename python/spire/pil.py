"""PIL helpers: ``restore`` and ``degrade`` on ``PIL.Image`` objects.

PIL is imported when these functions are called, so ``import spire`` never needs it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Tuple

import numpy as np

from ._spire import RestorationPrompt, Restorer, degrade as _degrade

if TYPE_CHECKING:
    from PIL import Image


def to_array(image: "Image.Image") -> np.ndarray:
    """A PIL image as a uint8 array (``L`` → H×W, ``RGB`` → H×W×3, ``RGBA`` → H×W×4; other
    modes are converted to RGB)."""
    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def from_array(array: np.ndarray) -> "Image.Image":
    """A uint8 or float32 (0–1) array as a PIL image."""
    from PIL import Image

    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return Image.fromarray(array)


def restore(restorer: Restorer, image: "Image.Image", **options: Any) -> "Image.Image":
    """``restorer.restore`` on a PIL image; options as ``Restorer.restore``."""
    return from_array(restorer.restore(to_array(image), **options))


def degrade(image: "Image.Image", **options: Any) -> Tuple["Image.Image", RestorationPrompt]:
    """``spire.degrade`` on a PIL image; returns ``(degraded image, prompt)``."""
    out, prompt = _degrade(to_array(image), **options)
    return from_array(out), prompt
