#!/usr/bin/env bash
# Runs every test of the project: the Rust unit, parity and integration tests (release mode:
# tensor code is ~14x slower in debug). Fixtures are committed; nothing needs PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."

if cargo fmt --version >/dev/null 2>&1; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
else
  echo "== cargo fmt not installed; formatting not checked"
fi

echo "== Rust tests (release)"
cargo test --workspace --release

echo "== Python package (maturin build) and pytest"
PY=${PYTHON:-python3}
VENV=${SPIRE_TEST_VENV:-$PWD/.venv-test}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q maturin pytest numpy mypy pillow
"$VENV/bin/python" -m pip install -q .
"$VENV/bin/python" -m pytest tests/python -q
