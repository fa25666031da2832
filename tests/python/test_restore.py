"""Round trips through Restorer.restore: layouts, dtypes, sizes, determinism, batches."""
import numpy as np
import pytest

import spire
from conftest import QUICK, picture


def test_rgb8_round_trip(restorer):
    img = picture()
    out = restorer.restore(img, **QUICK)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert out.std() > 1.0


def test_float32_gray_and_rgba(restorer):
    img = picture()
    f = img.astype(np.float32) / 255.0
    out = restorer.restore(f, **QUICK)
    assert out.dtype == np.float32 and out.shape == f.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    # Same as the 8-bit path, within rounding.
    out8 = restorer.restore(img, **QUICK)
    assert np.abs(out * 255 - out8.astype(np.float32)).max() <= 0.51
    gray = img[:, :, 0]
    assert restorer.restore(gray, **QUICK).shape == gray.shape
    # One rule on every surface: the output keeps the input's layout (H×W×1 in, H×W×1 out).
    assert restorer.restore(gray[:, :, None], **QUICK).shape == gray.shape + (1,)
    assert restorer.restore_batch([gray[:, :, None], gray], **QUICK)[0].shape == gray.shape + (1,)
    # degrade works in RGB on every surface (gray in, RGB out).
    assert spire.degrade(gray[:, :, None])[0].shape == gray.shape + (3,)
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 99, np.uint8)], axis=-1)
    out = restorer.restore(rgba, **QUICK)
    assert out.shape == rgba.shape and (out[:, :, 3] == 99).all()


def test_non_contiguous_input(restorer):
    img = picture(30, 50)
    view = img[::-1, 5:45]  # negative stride and offset
    assert not view.flags["C_CONTIGUOUS"]
    a = restorer.restore(view, **QUICK)
    b = restorer.restore(np.ascontiguousarray(view), **QUICK)
    assert np.array_equal(a, b)


def test_output_size_follows_the_upsample_factor(restorer):
    img = picture(13, 9)
    out = restorer.restore(img, restoration_prompt="Upsample with scale 2.5", **QUICK)
    assert out.shape == (33, 23, 3)  # round(13·2.5), round(9·2.5)
    p = spire.RestorationPrompt(upsample=2.0, denoise=0.1)
    assert restorer.restore(img, restoration_prompt=p, **QUICK).shape == (26, 18, 3)


def test_same_seed_same_output(restorer):
    img = picture()
    a = restorer.restore(img, seed=3, **QUICK)
    b = restorer.restore(img, seed=3, **QUICK)
    c = restorer.restore(img, seed=4, **QUICK)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_every_option_is_accepted(restorer):
    img = picture()
    out = restorer.restore(
        img,
        restoration_prompt="Deblur with sigma 1.0; Denoise with sigma 0.05",
        semantic_prompt="a photo",
        negative_prompt="",
        restoration_null_prompt="Remove all degradation",
        num_inference_steps=3,
        scheduler="ddim",
        eta=0.5,
        restoration_guidance=2.0,
        semantic_guidance=3.0,
        conditioning_scale=0.8,
        strength=0.7,
        seed=1,
        color_fix="adain",
    )
    assert out.shape == img.shape
    for s in ["dpm++2m", "euler", "model"]:
        restorer.restore(img, scheduler=s, **QUICK)
    latents = np.random.default_rng(0).standard_normal((1, 4, 6, 10)).astype(np.float32)
    a = restorer.restore(img, initial_latents=latents, **QUICK)
    b = restorer.restore(img, initial_latents=latents, seed=99, **QUICK)
    assert np.array_equal(a, b), "explicit latents replace the seed"


def test_verbatim_prompt_with_a_controlnet(controlnet_restorer):
    img = picture()
    out = controlnet_restorer.restore(img, verbatim_restoration_prompt="a red motorcycle", **QUICK)
    assert out.shape == img.shape


def test_batch_equals_single_images(restorer):
    imgs = [picture(), 255 - picture(), picture(16, 16)]
    outs = restorer.restore_batch(imgs, seed=5, semantic_prompt="a photo", semantic_guidance=2.0, **QUICK)
    for i, (img, out) in enumerate(zip(imgs, outs)):
        single = restorer.restore(img, seed=5 + i, semantic_prompt="a photo", semantic_guidance=2.0, **QUICK)
        assert np.abs(out.astype(int) - single.astype(int)).max() <= 1


def test_restoration_prompt_class():
    p = spire.RestorationPrompt.parse("upsample 4x, denoise .08")
    assert p.render() == "Upsample with scale 4.0; Denoise with sigma 0.08"
    assert str(p) == p.render()
    assert p.upsample == pytest.approx(4.0) and p.denoise == pytest.approx(0.08)
    assert p.deblur is None and p.dejpeg is None and not p.is_blind
    assert p == spire.RestorationPrompt(upsample=4.0, denoise=0.08)
    assert hash(p) == hash(spire.RestorationPrompt(denoise=0.08, upsample=4))
    assert spire.RestorationPrompt().is_blind and spire.RestorationPrompt.blind().render() == "Remove all degradation"
    assert eval(repr(p), {"RestorationPrompt": spire.RestorationPrompt}) == p


def test_memory_limit_and_tiles(restorer):
    img = picture(40, 32)
    whole = restorer.restore(img, memory_limit="unlimited", **QUICK)
    tiled = restorer.restore(img, memory_limit="unlimited", tile_size=1000, vae_tile_size=16, **QUICK)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1
    assert restorer.restore(img, memory_limit=8 << 30, **QUICK).shape == img.shape
    assert restorer.restore(img, memory_limit="8GiB", **QUICK).shape == img.shape
    with pytest.raises(spire.InvalidArgumentError, match="memory_limit"):
        restorer.restore(img, memory_limit="1kB", **QUICK)
    with pytest.raises(spire.InvalidArgumentError, match="memory_limit"):
        restorer.restore(img, memory_limit="lots", **QUICK)
    with pytest.raises(spire.InvalidArgumentError, match="memory_limit"):
        restorer.restore(img, memory_limit=1.5, **QUICK)


def test_builtin_restores_without_files():
    r = spire.Restorer.builtin()
    # It recommends restoring from the input noised part-way (it was trained on that range).
    assert 0 < r.defaults["strength"] < 1 and r.defaults["scheduler"] == "ddim"
    steps = 2 / r.defaults["strength"]  # two steps run
    out = r.restore(np.zeros((20, 28, 3), np.uint8), restoration_prompt="Upsample 2x", num_inference_steps=round(steps))
    assert out.shape == (40, 56, 3) and out.dtype == np.uint8
    img = np.zeros((8, 8, 3), np.float32)
    assert spire.Restorer.builtin().restore(img, strength=1.0, num_inference_steps=1).shape == (8, 8, 3)
    with pytest.raises(spire.InvalidArgumentError, match="strength"):
        r.restore(img, num_inference_steps=1)  # 1 × strength leaves no step


def test_prompt_driven_consistency_and_noise_match():
    r = spire.Restorer.builtin()
    assert r.defaults["consistency"] > 0
    rng = np.random.default_rng(0)
    img = (rng.random((32, 40, 3)) * 0.5 + 0.25).astype(np.float32)
    on = r.restore(img, restoration_prompt="Deblur with sigma 2.0")
    off = r.restore(img, restoration_prompt="Deblur with sigma 2.0", consistency=0.0)
    assert on.shape == off.shape == img.shape and np.abs(on - off).max() > 1e-3
    # The noise-matched start adds no noise: the seed no longer matters.
    a = r.restore(img, restoration_prompt="Denoise with sigma 0.10", seed=1)
    b = r.restore(img, restoration_prompt="Denoise with sigma 0.10", seed=2)
    c = r.restore(img, restoration_prompt="Denoise with sigma 0.10", seed=2, match_noise=False)
    assert np.array_equal(a, b) and not np.array_equal(b, c)
    with pytest.raises(spire.InvalidArgumentError, match="consistency"):
        r.restore(img, restoration_prompt="Deblur with sigma 2.0", consistency=-1.0)


def test_model_defaults_from_spire_json(tmp_path, restorer):
    # No spire.json: no recommendations, restore() starts from the library defaults.
    assert restorer.defaults == {}
    import shutil

    from conftest import FIX

    shutil.copytree(FIX / "tiny-sd1", tmp_path / "m")
    (tmp_path / "m" / "spire.json").write_text('{"defaults": {"strength": 0.5, "num_inference_steps": 4}}')
    r = spire.Restorer.from_pretrained(tmp_path / "m", adaptor=FIX / "tiny-spire-adaptor")
    assert r.defaults == {"strength": 0.5, "num_inference_steps": 4}
    img = picture()
    # The recommendations apply when not passed, and passed arguments win.
    assert np.array_equal(r.restore(img), restorer.restore(img, strength=0.5, num_inference_steps=4))
    assert np.array_equal(r.restore(img, strength=1.0), restorer.restore(img, num_inference_steps=4))
    (tmp_path / "m" / "spire.json").write_text('{"defaults": {"strenght": 0.5}}')
    with pytest.raises(spire.ModelLoadError, match="defaults.strenght"):
        spire.Restorer.from_pretrained(tmp_path / "m", adaptor=FIX / "tiny-spire-adaptor")


def test_a_model_folder_with_the_json_diffusers_writes_loads(tmp_path):
    # diffusers saves a DPM++ scheduler with `"lambda_min_clipped": -Infinity` (Python's json).
    import shutil

    from conftest import FIX

    shutil.copytree(FIX / "tiny-sd1", tmp_path / "m")
    shutil.copy(FIX / "diffusers-dpm" / "scheduler_config.json", tmp_path / "m" / "scheduler")
    assert "-Infinity" in (tmp_path / "m" / "scheduler" / "scheduler_config.json").read_text()
    r = spire.Restorer.from_pretrained(tmp_path / "m", adaptor=FIX / "tiny-spire-adaptor")
    out = r.restore(picture(), num_inference_steps=2)
    assert out.shape == picture().shape


def test_degrade_then_restore_with_upsample_input_off_keeps_the_size():
    """SPIRE's setting: `degrade` returns an image resized back to its size with an upsample
    clause in its prompt; restoring it with that prompt and upsample_input=False returns an
    image of the same size (with it on, one that much larger)."""
    img = picture(64, 64)
    for seed in range(200):
        degraded, prompt = spire.degrade(img, seed=seed)
        if prompt.upsample:
            break
    else:
        pytest.fail("no upsampling prompt in 200 seeds")
    assert degraded.shape == img.shape
    r = spire.Restorer.builtin()
    same = r.restore(degraded, restoration_prompt=prompt, upsample_input=False)
    assert same.shape == img.shape and same.dtype == img.dtype
    bigger = r.restore(degraded, restoration_prompt=prompt)
    assert bigger.shape[0] > img.shape[0] * 1.05 and bigger.shape[1] > img.shape[1] * 1.05


def test_every_table_option_is_a_keyword_with_its_errors_named():
    names = [o["name"] for o in spire.restore_options()]
    assert "upsample_input" in names and "eta" in names and "verbatim_restoration_prompt" in names
    r = spire.Restorer.builtin()
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(spire.InvalidArgumentError, match="stenght.*closest: strength"):
        r.restore(img, stenght=0.5)
    with pytest.raises(spire.InvalidArgumentError, match="eta"):
        r.restore(img, eta=1.5, scheduler="ddim")
    with pytest.raises(spire.InvalidArgumentError, match="tile_overlap"):
        r.restore(img, tile_overlap=-1)
    doc = spire.Restorer.restore.__doc__
    for name in names:
        assert f"    {name} (" in doc, name


def test_sixteen_bit_and_float_keep_their_kind_and_pil_comes_back_as_pil(restorer):
    img8 = picture()
    img16 = img8.astype(np.uint16) * 257
    out16 = restorer.restore(img16, **QUICK)
    out8 = restorer.restore(img8, **QUICK)
    assert out16.dtype == np.uint16 and out16.shape == img8.shape
    # The 16-bit result carries more than 8 bits: it is not just the 8-bit one scaled.
    assert np.any(out16 % 257 != 0)
    assert np.abs(out16.astype(np.int64) // 257 - out8.astype(np.int64)).max() <= 2
    outf = restorer.restore(img8.astype(np.float32) / 255, **QUICK)
    assert outf.dtype == np.float32
    Image = pytest.importorskip("PIL.Image")
    pil = Image.fromarray(img8)
    out = restorer.restore(pil, **QUICK)
    assert isinstance(out, Image.Image) and out.size == pil.size and out.mode == "RGB"
    assert np.array_equal(np.asarray(out), out8)
    pal = pil.convert("P")
    assert isinstance(restorer.restore(pal, **QUICK), Image.Image)


def test_progress_false_true_and_callable(restorer, capsys):
    img = picture()
    seen = []
    restorer.restore(img, progress=lambda s, t: seen.append((s, t)), **QUICK)
    assert seen and seen[-1][0] == seen[-1][1]
    restorer.restore(img, progress=False, **QUICK)
    with pytest.raises(spire.InvalidArgumentError, match="progress"):
        restorer.restore(img, progress=3, **QUICK)
    # Not a terminal here: the default shows nothing.
    restorer.restore(img, **QUICK)
    assert "restoring" not in capsys.readouterr().err


def test_image_files_16_bit_tiff_webp_exif_and_strided_arrays(restorer, tmp_path):
    from conftest import FIX

    files = FIX / "image-files"
    # 16-bit PNG and TIFF read as uint16: (x·2731 + y·977 + c·12345) mod 65536.
    y, x, c = np.mgrid[0:16, 0:24, 0:3]
    want = ((x * 2731 + y * 977 + c * 12345) % 65536).astype(np.uint16)
    for name in ["rgb16.png", "rgb16.tif"]:
        got = spire.read_image(files / name)
        assert got.dtype == np.uint16 and np.array_equal(got, want), name
    # Written back 16-bit (PNG, TIFF) and read again unchanged; float TIFF stays float.
    for ext in ["png", "tif"]:
        spire.write_image(tmp_path / f"o.{ext}", want)
        assert np.array_equal(spire.read_image(tmp_path / f"o.{ext}"), want), ext
    f32 = spire.read_image(files / "gray-f32.tif")
    assert f32.dtype == np.float32 and f32.shape == (16, 24, 1)
    # WebP equals the PNG; EXIF orientation 6 turns the 24×16 crop upright to 16×24.
    assert np.array_equal(spire.read_image(files / "lossless.webp"), spire.read_image(files / "base.png"))
    o6 = spire.read_image(files / "orient6.png")
    assert o6.shape == (24, 16, 3)
    assert np.array_equal(o6, spire.read_image(files / "orient6-upright.png"))
    # A strided (non-contiguous) array restores as its contiguous copy does.
    big = picture(24, 80)
    strided = big[:, ::2]
    assert not strided.flags["C_CONTIGUOUS"]
    assert np.array_equal(restorer.restore(strided, **QUICK), restorer.restore(np.ascontiguousarray(strided), **QUICK))
    gray_t = picture()[:, :, 0].T  # a transposed 2-D gray array
    assert restorer.restore(gray_t, **QUICK).shape == gray_t.shape


def test_thread_count():
    n = spire.num_threads()
    assert n >= 1
    spire.set_num_threads(n)  # the count it has: a no-op
    with pytest.raises(spire.InvalidArgumentError, match="threads"):
        spire.set_num_threads(0)
    with pytest.raises(spire.InvalidArgumentError, match="already run"):
        spire.set_num_threads(n + 1)
