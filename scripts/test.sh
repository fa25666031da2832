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

echo "== C ABI: header checks, C/C++ tests under AddressSanitizer, valgrind leak check"
bash scripts/test_c.sh

echo "== C++ example (CMake)"
if command -v cmake >/dev/null; then
  cmake -S examples/cpp -B build/cpp >/dev/null
  cmake --build build/cpp >/dev/null
  ./build/cpp/spire-restore >/dev/null 2>&1 || [ $? -eq 2 ]   # usage exit code: it built and runs
  echo "examples/cpp built"
else
  echo "cmake not installed; example not built"
fi

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
