"""Every bad input raises its exact exception class; nothing surfaces as a PanicException."""
import shutil

import numpy as np
import pytest

import spire
from conftest import FIX, QUICK, picture


@pytest.mark.parametrize(
    "image",
    [
        picture().astype(np.float64),  # wrong dtype
        picture().astype(np.int32),
        np.zeros(10, np.uint8),  # wrong ndim
        np.zeros((2, 8, 8, 3), np.uint8),
        np.zeros((8, 8, 2), np.uint8),  # 2 channels
        np.zeros((0, 0, 3), np.uint8),  # empty
        np.zeros((1, 16, 3), np.uint8),  # 1 pixel high
    ],
)
def test_bad_images(restorer, image):
    with pytest.raises(spire.InvalidImageError):
        restorer.restore(image, **QUICK)


def test_nan_in_float_input(restorer):
    img = picture().astype(np.float32) / 255
    img[3, 4, 1] = np.nan
    with pytest.raises(spire.InvalidImageError, match="NaN"):
        restorer.restore(img, **QUICK)


def test_non_array_is_a_type_error(restorer):
    with pytest.raises(TypeError):
        restorer.restore([[1, 2], [3, 4]], **QUICK)


@pytest.mark.parametrize(
    "options, name",
    [
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(strength=0.0), "strength"),
        (dict(strength=1.5), "strength"),
        (dict(restoration_guidance=-1.0), "restoration_guidance"),
        (dict(semantic_guidance=float("nan")), "semantic_guidance"),
        (dict(scheduler="pndm"), "scheduler"),
        (dict(color_fix="sepia"), "color_fix"),
        (dict(eta=0.5, scheduler="euler"), "eta"),
        (dict(initial_latents=np.zeros((1, 4, 3, 3), np.float32)), "initial_latents"),
        (dict(initial_latents=np.zeros((1, 4, 6, 10), np.float64)), "initial_latents"),
        (dict(restoration_prompt=42), "restoration_prompt"),
        (dict(restoration_prompt="Denoise 0.1", verbatim_restoration_prompt="x"), "restoration_prompt"),
        (dict(progress="not callable"), "progress"),
    ],
)
def test_bad_options(restorer, options, name):
    with pytest.raises(spire.InvalidArgumentError, match=name):
        restorer.restore(picture(), **{**QUICK, **options})


def test_bad_prompt_names_the_clause(restorer):
    with pytest.raises(spire.InvalidArgumentError) as e:
        restorer.restore(picture(), restoration_prompt="Denoise with sigma 0.1; Sharpen with sigma 2", **QUICK)
    assert e.value.clause == "Sharpen with sigma 2"
    assert isinstance(e.value, ValueError)
    with pytest.raises(spire.InvalidArgumentError):
        spire.RestorationPrompt.parse("Deblur with sigma 99")
    with pytest.raises(spire.InvalidArgumentError):
        spire.RestorationPrompt(denoise=5.0)


def test_missing_model_folder():
    with pytest.raises(FileNotFoundError) as e:
        spire.Restorer.from_pretrained("/no/such/model")
    assert e.value.filename == "/no/such/model"


def test_corrupt_weights_are_model_load_errors(tmp_path):
    for sub in ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]:
        shutil.copytree(FIX / "tiny-sd1" / sub, tmp_path / sub)
    w = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(spire.ModelLoadError, match="truncated or corrupt"):
        spire.Restorer.from_pretrained(tmp_path, adaptor=FIX / "tiny-controlnet")


def test_bad_device_and_dtype():
    with pytest.raises(spire.DeviceError, match="unknown device `tpu`"):
        spire.Restorer.from_pretrained(FIX / "tiny-sd1", device="tpu")
    # The test build has no GPU back end: the error names the device and the feature to build.
    for dev in ["cuda", "cuda:1", "metal"]:
        feature = dev.split(":")[0]
        with pytest.raises(spire.DeviceError, match=f"`{dev}`.*--features {feature}"):
            spire.Restorer.from_pretrained(FIX / "tiny-sd1", device=dev)
        with pytest.raises(spire.DeviceError, match=f"--features {feature}"):
            spire.Restorer.builtin(device=dev)
    with pytest.raises(spire.InvalidArgumentError, match="dtype"):
        spire.Restorer.from_pretrained(FIX / "tiny-sd1", dtype="int8")


def test_degrade_bad_input():
    with pytest.raises(spire.InvalidArgumentError, match="pipeline"):
        spire.degrade(picture(), pipeline="jpeg-only")
    with pytest.raises(spire.InvalidImageError):
        spire.degrade(np.zeros((4, 4, 3), np.float64))
