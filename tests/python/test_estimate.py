"""spire.estimate and restoration_prompt="auto": the prompt read from the photo."""
import numpy as np
import pytest

import spire
from conftest import FIX


def test_a_jpeg_files_quality_is_exact_and_a_clean_photo_is_blind():
    e = spire.estimate(FIX / "jpeg" / "q50.jpg")
    assert e["jpeg"] == (50.0, 1.0, "file")
    assert e["prompt"] == spire.RestorationPrompt.parse("Dejpeg with quality 50")
    clean = spire.read_image(FIX / "photos" / "chelsea_crop256.png")
    e = spire.estimate(clean)
    assert e["prompt"] == spire.RestorationPrompt()  # blind
    assert e["jpeg"] is None and e["scale"] is None
    e = spire.estimate(clean[::2, ::2].copy(), output_size=(256, 256))
    assert e["scale"] == (2.0, 1.0)
    with pytest.raises(spire.InvalidArgumentError, match="output size"):
        spire.estimate(clean, output_size=(16, 16))


def test_auto_restores_with_the_estimated_prompt():
    r = spire.Restorer.builtin()
    clean = spire.read_image(FIX / "photos" / "chelsea_crop256.png")[:96, :96].copy()
    rng = np.random.default_rng(0)
    noisy = np.clip(clean / 255.0 + rng.normal(0, 0.08, clean.shape), 0, 1).astype(np.float32)
    p = spire.estimate(noisy)["prompt"]
    assert p.denoise is not None and abs(p.denoise - 0.08) <= 0.01, p
    opts = dict(num_inference_steps=4, strength=0.5, seed=1)
    auto = r.restore(noisy, restoration_prompt="auto", **opts)
    assert np.array_equal(auto, r.restore(noisy, restoration_prompt=p, **opts))
    # Given clauses win over the estimate.
    kept = r.restore(noisy, restoration_prompt="auto; Denoise with sigma 0.2", **opts)
    assert np.array_equal(kept, r.restore(noisy, restoration_prompt="Denoise with sigma 0.2", **opts))
    with pytest.raises(spire.InvalidArgumentError):
        r.restore(noisy, restoration_prompt="auto; Sharpen with sigma 2", **opts)
