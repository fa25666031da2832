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
