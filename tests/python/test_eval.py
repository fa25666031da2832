"""spire.evaluate and python -m spire.eval: the core's evaluation from Python."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import spire
from conftest import FIX, picture


@pytest.fixture()
def photos(tmp_path):
    for i in range(2):
        Image.fromarray(np.roll(picture(48, 64), 7 * i, axis=1)).save(tmp_path / f"p{i}.png")
    (tmp_path / "captions.tsv").write_text("file\tcaption\np0.png\ta checkerboard\n")
    return tmp_path


def test_evaluate_returns_the_table(restorer, photos):
    seen = []
    r = spire.evaluate(restorer, photos, size=40, steps=1, rows="plain",
                       progress=lambda d, t, w: seen.append((d, t)))
    assert seen[-1] == (8, 8)
    assert [row["name"] for row in r["rows"]] == ["Degraded input", "SPIRE w/o text", "SPIRE"]
    first = r["rows"][1]["parameterized"]
    assert first["images"] == 2 and first["lpips"] is None and np.isfinite(first["psnr"])
    assert "| Method | Sem | Res |" in r["markdown"] and "n/a" in r["markdown"]
    assert r["csv"].count("\n") == 1 + 3 * 2
    assert any("LPIPS" in n for n in r["notes"])


def test_evaluate_errors(restorer, photos):
    with pytest.raises(spire.InvalidArgumentError, match="rows"):
        spire.evaluate(restorer, photos, rows="everything")
    with pytest.raises(spire.InvalidArgumentError, match="nope.png"):
        spire.evaluate(restorer, photos, only=["nope.png"], size=40, steps=1)
    with pytest.raises(ZeroDivisionError):
        spire.evaluate(restorer, photos, size=40, steps=1, rows="plain", progress=lambda d, t, w: 1 / 0)


def test_module_cli(photos, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "spire.eval", "--data", str(photos), "--model", str(FIX / "tiny-sd1"),
           "--size", "40", "--steps", "1", "--rows", "plain", "--out", str(out)]
    # tiny-sd1 has no adaptor of its own: the CLI loads model folders as they are, so this
    # must fail cleanly with the loader's message.
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode != 0 and "adaptor" in p.stderr.lower(), p.stderr
    h = subprocess.run([sys.executable, "-m", "spire.eval", "--help"], capture_output=True, text=True)
    assert h.returncode == 0 and "--inception" in h.stdout


def test_module_cli_with_the_builtin_model(photos, tmp_path):
    out = tmp_path / "builtin"
    # 50 steps at the built-in model's recommended strength (0.02): one step runs.
    cmd = [sys.executable, "-m", "spire.eval", "--data", str(photos), "--size", "32", "--steps", "50",
           "--rows", "plain", "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    table = (out / "eval.md").read_text()
    assert "| SPIRE |" in table and (out / "eval.csv").exists()


def test_ctrl_c_stops_an_evaluation_within_a_step(tmp_path, python_sigint):
    import _thread
    import threading
    import time

    # Large photos and many steps: the whole evaluation would take many minutes.
    for i in range(2):
        Image.fromarray(np.roll(picture(256, 256), 7 * i, axis=1)).save(tmp_path / f"p{i}.png")
    r = spire.Restorer.builtin()
    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    t = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            spire.evaluate(r, tmp_path, size=256, steps=500, rows="plain")
    finally:
        timer.cancel()
    assert time.perf_counter() - t < 15
