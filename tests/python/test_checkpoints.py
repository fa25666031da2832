"""Checkpoints as people hold them: single-file Stable Diffusion + ControlNet files."""
import shutil

import numpy as np
import pytest

import spire
from conftest import FIX, QUICK, picture

SF = FIX / "single-file"


def minimal_config(tmp_path):
    # Only what a single file lacks: the tokenizer and the scheduler.
    for sub in ["tokenizer", "scheduler"]:
        shutil.copytree(SF / "sd1-config" / sub, tmp_path / "cfg" / sub)
    return tmp_path / "cfg"


def test_a_single_file_checkpoint_and_controlnet_restore(tmp_path):
    cfg = minimal_config(tmp_path)
    r = spire.Restorer.from_single_file(
        SF / "tiny-sd1.safetensors", adaptor=SF / "tiny-controlnet.safetensors", config=cfg
    )
    img = picture()
    out = r.restore(img, **QUICK)
    assert out.shape == img.shape and out.dtype == np.uint8
    # The same weights given as a path string load and restore identically.
    r2 = spire.Restorer.from_single_file(
        str(SF / "tiny-sd1.safetensors"), adaptor=str(SF / "tiny-controlnet.safetensors"), config=str(cfg),
        prediction_type="epsilon",
    )
    assert np.array_equal(r2.restore(img, **QUICK), out)


def test_pickles_and_bad_options_are_clear_errors(tmp_path):
    cfg = minimal_config(tmp_path)
    pk = tmp_path / "v1-5-pruned-emaonly.ckpt"
    pk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(spire.ModelLoadError, match="pickle") as e:
        spire.Restorer.from_single_file(pk, adaptor=SF / "tiny-controlnet.safetensors", config=cfg)
    assert "v1-5-pruned-emaonly.ckpt" in str(e.value) and "safetensors" in str(e.value)
    with pytest.raises(spire.ModelLoadError, match="this is a ControlNet"):
        spire.Restorer.from_single_file(
            SF / "tiny-controlnet.safetensors", adaptor=SF / "tiny-controlnet.safetensors", config=cfg
        )
    with pytest.raises(ValueError, match="prediction_type"):
        spire.Restorer.from_single_file(
            SF / "tiny-sd1.safetensors", adaptor=SF / "tiny-controlnet.safetensors", config=cfg,
            prediction_type="x0",
        )
