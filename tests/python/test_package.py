"""The package itself: version, exports, stubs."""
import re
import subprocess
import sys
from pathlib import Path

import spire

ROOT = Path(__file__).resolve().parent.parent.parent


def test_version_is_the_cargo_version():
    text = (ROOT / "Cargo.toml").read_text()
    m = re.search(r'\[workspace\.package\][^\[]*?version\s*=\s*"([^"]+)"', text, re.S)
    assert m, "no workspace version"
    assert spire.__version__ == m.group(1)


def test_exports():
    for name in spire.__all__:
        assert hasattr(spire, name), name
    assert issubclass(spire.InvalidArgumentError, spire.SpireError)
    assert issubclass(spire.InvalidArgumentError, ValueError)
    assert issubclass(spire.InvalidImageError, ValueError)
    assert issubclass(spire.DeviceError, RuntimeError)
    assert spire.SpireError.__module__ == "spire"


def test_stubs_match_the_module():
    r = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "spire._spire", "--ignore-missing-stub"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_typed_marker_is_installed():
    assert (Path(spire.__file__).parent / "py.typed").exists()
    assert (Path(spire.__file__).parent / "_spire.pyi").exists()
