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
        [sys.executable, "-m", "mypy.stubtest", "spire._spire"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_typed_marker_is_installed():
    assert (Path(spire.__file__).parent / "py.typed").exists()
    assert (Path(spire.__file__).parent / "_spire.pyi").exists()


def test_installed_from_the_wheel_with_its_licences():
    """CI installs the built wheel (scripts/test.sh, SPIRE_EXPECT_WHEEL=1): the package comes
    from site-packages, its WHEEL file carries the abi3 manylinux_2_17 tag, and the licence
    files are in its metadata."""
    import os
    from importlib import metadata

    dist = metadata.distribution("spire-restore")
    files = [str(f) for f in dist.files or []]
    assert any(f.endswith("LICENSE-MIT") for f in files), files
    assert any(f.endswith("LICENSE-APACHE") for f in files), files
    assert dist.metadata["Version"] == spire.__version__
    if os.environ.get("SPIRE_EXPECT_WHEEL"):
        wheel = dist.read_text("WHEEL") or ""
        assert "abi3" in wheel and "manylinux_2_17" in wheel, wheel
        assert "site-packages" in Path(spire.__file__).parts, spire.__file__
        assert ROOT / "python" not in Path(spire.__file__).parents
