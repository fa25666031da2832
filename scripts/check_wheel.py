"""Checks a built wheel before it is shipped: its tags (abi3, manylinux_2_17 — installable on
glibc 2.17 and newer, like safetensors' wheels), its size, the licence files and the typing
marker inside, the extension stripped, and that no extension links a glibc symbol newer than
2.17.

    python scripts/check_wheel.py target/wheels/spire_restore-*.whl [--max-mb 20]
"""
import argparse
import re
import sys
import zipfile
from pathlib import Path


def glibc_versions(elf: bytes):
    """The GLIBC_x.y version names an ELF file's dynamic symbols ask for."""
    return {tuple(int(p) for p in m.group(1).split(b".")) for m in re.finditer(rb"GLIBC_(\d+\.\d+(?:\.\d+)?)\x00", elf)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("wheel", type=Path)
    ap.add_argument("--max-mb", type=float, default=20.0)
    args = ap.parse_args()
    errors = []
    whl = args.wheel
    size_mb = whl.stat().st_size / 1e6
    if size_mb > args.max_mb:
        errors.append(f"{whl.name} is {size_mb:.1f} MB (limit {args.max_mb} MB)")
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        wheel_meta = next((n for n in names if n.endswith(".dist-info/WHEEL")), None)
        if wheel_meta is None:
            errors.append("no .dist-info/WHEEL")
            tags = []
        else:
            tags = [l.split(":", 1)[1].strip() for l in z.read(wheel_meta).decode().splitlines() if l.startswith("Tag:")]
        if not any("abi3" in t for t in tags):
            errors.append(f"not an abi3 wheel: {tags}")
        if not any("manylinux_2_17" in t or "manylinux2014" in t for t in tags):
            errors.append(f"not tagged manylinux_2_17: {tags}")
        for lic in ("LICENSE-MIT", "LICENSE-APACHE"):
            if not any(n.endswith(lic) and ".dist-info/" in n for n in names):
                errors.append(f"{lic} missing from the wheel's .dist-info")
        if "spire/py.typed" not in names:
            errors.append("spire/py.typed missing")
        if "spire/_spire.pyi" not in names:
            errors.append("spire/_spire.pyi missing")
        exts = [n for n in names if n.endswith(".so")]
        if not exts:
            errors.append("no extension module in the wheel")
        ext_mb = 0.0
        for n in exts:
            data = z.read(n)
            ext_mb += len(data) / 1e6
            if b".symtab\x00" in data:
                errors.append(f"{n} is not stripped (has .symtab)")
            newest = max(glibc_versions(data), default=(0, 0))
            if newest > (2, 17):
                errors.append(f"{n} needs GLIBC_{'.'.join(map(str, newest))} (> 2.17)")
    print(f"{whl.name}: {size_mb:.1f} MB (extension {ext_mb:.1f} MB unpacked), tags {', '.join(tags)}")
    for e in errors:
        print("ERROR:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
