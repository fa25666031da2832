"""SPIRE — semantic prompt-driven image restoration.

numpy in, numpy out; the work happens in Rust (``spire-core``) with the GIL released.

>>> import spire
>>> restorer = spire.Restorer.from_pretrained("path/to/model")
>>> out = restorer.restore(image, restoration_prompt="Denoise with sigma 0.1")
"""
from ._spire import (
    CancelledError,
    DeviceError,
    InternalError,
    InvalidArgumentError,
    InvalidImageError,
    ModelLoadError,
    NumericalError,
    RestorationPrompt,
    Restorer,
    SpireError,
    UnsupportedError,
    __version__,
    degrade,
    evaluate,
)

__all__ = [
    "CancelledError",
    "DeviceError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidImageError",
    "ModelLoadError",
    "NumericalError",
    "RestorationPrompt",
    "Restorer",
    "SpireError",
    "UnsupportedError",
    "__version__",
    "degrade",
    "evaluate",
]
