"""Type stubs of the native module (checked against it by ``mypy.stubtest`` in the tests)."""
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, final

import numpy as np
import numpy.typing as npt

# What the native module exports (pyo3 sets it; stubtest checks the two agree).
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
    "encode_image",
    "estimate",
    "evaluate",
    "num_threads",
    "plan_folder",
    "read_image",
    "read_prompt_table",
    "restore_options",
    "set_num_threads",
    "write_image",
]

__version__: str

_Image = Union[npt.NDArray[np.uint8], npt.NDArray[np.uint16], npt.NDArray[np.float32], Any]  # Any: a PIL image
_Path = Union[str, "PathLike[str]"]

class SpireError(Exception): ...
class InvalidArgumentError(SpireError, ValueError): ...
class InvalidImageError(SpireError, ValueError): ...
class ModelLoadError(SpireError): ...
class UnsupportedError(SpireError): ...
class DeviceError(SpireError, RuntimeError): ...
class NumericalError(SpireError, ArithmeticError): ...
class CancelledError(SpireError): ...
class InternalError(SpireError, RuntimeError): ...

@final
class RestorationPrompt:
    """A restoration prompt: blind, or deblur / upsample / denoise / dejpeg with strengths."""

    def __new__(
        cls,
        *,
        deblur: Optional[float] = None,
        upsample: Optional[float] = None,
        denoise: Optional[float] = None,
        dejpeg: Optional[int] = None,
    ) -> "RestorationPrompt": ...
    @staticmethod
    def parse(text: str) -> "RestorationPrompt": ...
    @staticmethod
    def blind() -> "RestorationPrompt": ...
    @property
    def deblur(self) -> Optional[float]: ...
    @property
    def upsample(self) -> Optional[float]: ...
    @property
    def denoise(self) -> Optional[float]: ...
    @property
    def dejpeg(self) -> Optional[int]: ...
    @property
    def is_blind(self) -> bool: ...
    @property
    def upsample_factor(self) -> float: ...
    def render(self) -> str: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Restorer:
    """A loaded SPIRE model; copies and threads share one set of weights."""

    @staticmethod
    def from_pretrained(
        path: _Path,
        *,
        device: Optional[str] = None,
        dtype: Optional[str] = None,
        variant: Optional[str] = None,
        adaptor: Optional[_Path] = None,
        weight_dtype: Optional[str] = None,
    ) -> "Restorer": ...
    @staticmethod
    def from_single_file(
        path: _Path,
        *,
        adaptor: _Path,
        config: _Path,
        prediction_type: Optional[str] = None,
        device: Optional[str] = None,
        dtype: Optional[str] = None,
        weight_dtype: Optional[str] = None,
    ) -> "Restorer": ...
    @staticmethod
    def builtin(
        *, device: Optional[str] = None, dtype: Optional[str] = None, weight_dtype: Optional[str] = None
    ) -> "Restorer": ...
    def restore(
        self,
        image: _Image,
        *,
        restoration_prompt: Optional[Union[str, RestorationPrompt]] = None,
        initial_latents: Optional[npt.NDArray[np.float32]] = None,
        progress: Optional[Union[bool, Callable[[int, int], Optional[bool]]]] = None,
        # <options: restore> generated from spire_core::options::OPTIONS (spire-core/tests/options_surfaces.rs)
        verbatim_restoration_prompt: Optional[str] = None,
        semantic_prompt: Optional[str] = None,
        negative_prompt: Optional[str] = None,
        restoration_null_prompt: Optional[str] = None,
        num_inference_steps: Optional[int] = None,
        scheduler: Optional[str] = None,
        eta: Optional[float] = None,
        restoration_guidance: Optional[float] = None,
        semantic_guidance: Optional[float] = None,
        conditioning_scale: Optional[float] = None,
        strength: Optional[float] = None,
        seed: Optional[int] = None,
        color_fix: Optional[str] = None,
        consistency: Optional[float] = None,
        match_noise: Optional[bool] = None,
        upsample_input: Optional[bool] = None,
        tile_size: Optional[Union[int, str]] = None,
        tile_overlap: Optional[int] = None,
        vae_tile_size: Optional[Union[int, str]] = None,
        memory_limit: Optional[Union[int, str]] = None,
        # </options>
    ) -> _Image: ...
    def restore_batch(
        self,
        images: List[_Image],
        *,
        restoration_prompt: Optional[
            Union[str, RestorationPrompt, Sequence[Optional[Union[str, RestorationPrompt]]]]
        ] = None,
        semantic_prompt: Optional[Union[str, Sequence[Optional[str]]]] = None,
        initial_latents: Optional[npt.NDArray[np.float32]] = None,
        progress: Optional[Union[bool, Callable[[int, int], Optional[bool]]]] = None,
        # <options: restore_batch> generated from spire_core::options::OPTIONS (spire-core/tests/options_surfaces.rs)
        verbatim_restoration_prompt: Optional[str] = None,
        negative_prompt: Optional[str] = None,
        restoration_null_prompt: Optional[str] = None,
        num_inference_steps: Optional[int] = None,
        scheduler: Optional[str] = None,
        eta: Optional[float] = None,
        restoration_guidance: Optional[float] = None,
        semantic_guidance: Optional[float] = None,
        conditioning_scale: Optional[float] = None,
        strength: Optional[float] = None,
        seed: Optional[int] = None,
        color_fix: Optional[str] = None,
        consistency: Optional[float] = None,
        match_noise: Optional[bool] = None,
        upsample_input: Optional[bool] = None,
        tile_size: Optional[Union[int, str]] = None,
        tile_overlap: Optional[int] = None,
        vae_tile_size: Optional[Union[int, str]] = None,
        memory_limit: Optional[Union[int, str]] = None,
        # </options>
    ) -> List[_Image]: ...
    def shares_weights_with(self, other: "Restorer") -> bool: ...
    @property
    def path(self) -> str: ...
    @property
    def defaults(self) -> Dict[str, Union[int, float, str]]:
        """The restore options the model recommends (its spire.json); restore() starts from them."""
        ...
    @property
    def size_multiple(self) -> int: ...
    def __copy__(self) -> "Restorer": ...
    def __deepcopy__(self, memo: object) -> "Restorer": ...
    def __reduce__(self) -> Tuple[Callable[..., "Restorer"], Tuple[str, Optional[str], Dict[str, str]]]: ...

def degrade(
    image: _Image, *, pipeline: Optional[str] = None, seed: Optional[int] = None
) -> Tuple[_Image, RestorationPrompt]: ...

def evaluate(
    restorer: Restorer,
    data: _Path,
    *,
    captions: Optional[_Path] = None,
    only: Optional[List[str]] = None,
    size: int = 256,
    seed: int = 0,
    steps: Optional[int] = None,
    rows: str = "paper",
    lpips: Optional[_Path] = None,
    clip: Optional[_Path] = None,
    inception: Optional[_Path] = None,
    save_images: Optional[_Path] = None,
    progress: Optional[Callable[[int, int, str], object]] = None,
) -> Dict[str, Any]: ...

def estimate(image: Union[_Image, _Path], *, output_size: Optional[Tuple[int, int]] = None) -> Dict[str, Any]: ...
def decode_image(data: bytes, name: str = "<bytes>") -> npt.NDArray[Any]: ...
def read_image(path: _Path) -> npt.NDArray[Any]: ...
def write_image(path: _Path, image: _Image) -> None: ...
def encode_image(image: _Image, format: str = "png") -> bytes: ...
def set_num_threads(threads: int) -> None: ...
def num_threads() -> int: ...
def plan_folder(
    input: _Path, output: _Path, format: str = "same", prompts: Optional[_Path] = None
) -> Tuple[List[Tuple[str, Path, Path, Optional[str], Optional[str]]], List[str]]: ...
def read_prompt_table(path: _Path) -> Dict[str, Tuple[Optional[str], Optional[str]]]: ...
def restore_options() -> List[Dict[str, Any]]: ...
