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
    decode_image,
    degrade,
    estimate,
    evaluate,
    read_image,
    restore_options,
    write_image,
    encode_image,
    num_threads,
    set_num_threads,
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
    "decode_image",
    "degrade",
    "estimate",
    "evaluate",
    "read_image",
    "restore_options",
    "write_image",
    "encode_image",
    "num_threads",
    "set_num_threads",
]

def _progress_bar(force=False):
    """The progress display of ``restore(progress=None)`` (the default): a tqdm bar when tqdm is
    installed and stderr is a terminal or a notebook is running; ``progress=True`` (``force``)
    shows it whenever tqdm is installed. Returns a ``(step, total)`` callback, or None."""
    import sys

    if not force:
        stderr = getattr(sys, "stderr", None)
        tty = bool(stderr is not None and hasattr(stderr, "isatty") and stderr.isatty())
        if not (tty or "ipykernel" in sys.modules):
            return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    bar = None

    def update(step, total):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="restoring", unit="step", leave=False)
        bar.total = total
        bar.n = step
        bar.refresh()
        if step >= total:
            bar.close()

    return update


# One restorer per source and process: unpickled restorers (worker processes, Ray actors)
# share the weights loaded by the first one.
_LOADED: dict = {}


def _restorer_from_source(kind, path, kwargs):
    """Loads (once per process) the restorer a pickle refers to; see ``Restorer.__reduce__``."""
    key = (kind, str(path), tuple(sorted(kwargs.items())))
    r = _LOADED.get(key)
    if r is None:
        if kind == "builtin":
            r = Restorer.builtin(**kwargs)
        elif kind == "pretrained":
            r = Restorer.from_pretrained(path, **kwargs)
        elif kind == "single_file":
            r = Restorer.from_single_file(path, **kwargs)
        else:
            raise ValueError(f"unknown restorer source {kind!r}")
        _LOADED[key] = r
    return r
