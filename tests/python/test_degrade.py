"""spire.degrade and the PIL helpers."""
import numpy as np
import pytest

import spire
from conftest import picture


def test_parameterized_returns_image_and_prompt():
    img = picture(64, 64)
    out, prompt = spire.degrade(img, seed=1)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert isinstance(prompt, spire.RestorationPrompt) and not prompt.is_blind
    out2, prompt2 = spire.degrade(img, seed=1)
    assert np.array_equal(out, out2) and prompt == prompt2
    prompts = {spire.degrade(img, seed=s)[1].render() for s in range(8)}
    assert len(prompts) > 4


def test_realesrgan_is_blind_and_float_stays_float():
    img = picture(64, 64).astype(np.float32) / 255
    out, prompt = spire.degrade(img, pipeline="realesrgan", seed=2)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert prompt.is_blind


def test_pil_helpers(restorer):
    Image = pytest.importorskip("PIL.Image")
    import spire.pil

    im = Image.fromarray(picture())
    out = spire.pil.restore(restorer, im, num_inference_steps=1)
    assert out.size == im.size and out.mode == "RGB"
    deg, prompt = spire.pil.degrade(im, seed=3)
    assert deg.size == im.size and isinstance(prompt, spire.RestorationPrompt)
