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

echo "== clippy (every crate and target, warnings are errors)"
cargo clippy --workspace --all-targets -q -- -D warnings

echo "== Rust tests (release)"
cargo test --workspace --release

# The path a GPU takes (candle's operations instead of the fused CPU kernels), proven on the
# CPU: the model, pipeline, training and half-precision parity tests again with every layer
# built with the kernels off (docs/gpu.md).
echo "== Parity tests with the fused CPU kernels off (SPIRE_FUSED_KERNELS=0)"
# (--workspace: the same feature set as the run above, so no dependency is built twice.)
SPIRE_FUSED_KERNELS=0 cargo test --release --workspace --test parity_models --test restorer \
  --test parity_train --test precision --test training --test tiling

# Most desktops and laptops have AVX2 but not AVX-512: SPIRE_SIMD caps the fused kernels'
# dispatch and their GEMMs, so an AVX-512 machine proves the AVX2 and baseline paths as well.
# (The pipeline tests only at AVX2: the scalar GEMMs are slow, and the kernel tests cover them.)
for level in avx2 baseline; do
  echo "== Kernel and model parity tests with the fused kernels at $level (SPIRE_SIMD=$level)"
  extra=""
  [ "$level" = avx2 ] && extra="--test restorer"
  SPIRE_SIMD=$level cargo test --release --workspace --lib --test parity_models $extra -q
done

# 3×3 convolutions of 16×16 pixels and more run as Winograd F(2×2, 3×3) by default; the model
# and pipeline parity tests again with every convolution on the im2col path.
echo "== Model and pipeline parity tests with Winograd off (SPIRE_WINOGRAD=0)"
SPIRE_WINOGRAD=0 cargo test --release --workspace --test parity_models --test restorer -q

echo "== The optional \`image\` feature (DynamicImage conversions): clippy and its tests"
cargo clippy -p spire-core --features image --lib -q -- -D warnings
cargo test --release -p spire-core --features image --lib image::dynamic

echo "== GPU check's parity mode on the CPU (every model and the restore in f32, f16, bf16)"
cargo build --release -q --workspace --example gpu_check
./target/release/examples/gpu_check parity --device cpu > target/gpu_check_parity.jsonl
echo "$(grep -c '"ok":true' target/gpu_check_parity.jsonl) parity checks within tolerance"

echo "== cuda feature type-check (stand-in nvcc; no GPU, no toolkit)"
bash scripts/cuda_check.sh

echo "== fuzz targets type-check (libFuzzer runs are timed by hand: bash fuzz/run.sh TARGET SECONDS)"
CARGO_TARGET_DIR="$PWD/target/fuzz-check" cargo check -q --manifest-path fuzz/Cargo.toml --bins

echo "== Rust docs without warnings, and the publishable crate (cargo package, verified by a build)"
for pkg in spire-core spire-py spire-capi; do   # each package ships the root's licence texts
  cmp LICENSE-MIT "$pkg/LICENSE-MIT" && cmp LICENSE-APACHE "$pkg/LICENSE-APACHE"
done
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace -q
cargo package -p spire-core --allow-dirty -q 2>&1 | grep -v -e "^warning: ignoring \(test\|example\)" -e "^$" || true
CRATE=$(ls target/package/spire-core-*.crate)
# crates.io takes at most 10 MB; the tests and examples (they read ../tests/fixtures) stay out.
python3 - "$CRATE" <<'PYEOF'
import sys, tarfile, os
path = sys.argv[1]
names = tarfile.open(path).getnames()
size = os.path.getsize(path) / 1e6
bad = [n for n in names if "/tests/" in n or "/examples/" in n]
assert size <= 10, f"{path} is {size:.1f} MB"
assert not bad, bad[:5]
for need in ("LICENSE-MIT", "LICENSE-APACHE", "README.md", "assets/spire-tiny.safetensors"):
    assert any(n.endswith(need) for n in names), need
print(f"{os.path.basename(path)}: {size:.1f} MB, {len(names)} files, verified")
PYEOF

echo "== A project that adds spire-core by path (the README's Rust route)"
APP=target/path-app
rm -rf "$APP" && mkdir -p "$APP/src"
printf '[package]\nname = "path-app"\nversion = "0.0.0"\nedition = "2021"\n\n[workspace]\n\n[dependencies]\n\n[profile.release]\nstrip = "symbols"\n' > "$APP/Cargo.toml"
cp Cargo.lock "$APP/"   # the workspace's versions, so the compiled dependencies are reused
cat > "$APP/src/main.rs" <<'RSEOF'
fn main() -> spire_core::Result<()> {
    let (w, h) = (48, 32);
    let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
    let image = spire_core::ImageView::rgb8(w, h, &pixels)?;
    let restorer = spire_core::Restorer::builtin()?;
    let opts = restorer.default_options().with_restoration_text("Denoise with sigma 0.1")?;
    let out = restorer.restore(&image, &opts)?;
    println!("path-app: restored {}x{} with spire-core added by path", out.width, out.height);
    Ok(())
}
RSEOF
(cd "$APP" && cargo add -q spire-core --path ../../spire-core)
CARGO_TARGET_DIR="$PWD/target" cargo run --release -q --manifest-path "$APP/Cargo.toml"

echo "== C ABI: header checks, C/C++ tests under AddressSanitizer, valgrind leak check"
bash scripts/test_c.sh

echo "== C++ example from the installed library: find_package(spire) and pkg-config"
# scripts/test_c.sh installed libspire under target/c-prefix. Tools: cmake and pkg-config from
# the system, else from the Python registry (a fresh machine may have neither).
PY=${PYTHON:-python3}
PREFIX="$PWD/target/c-prefix"
if ! command -v cmake >/dev/null || ! { command -v pkg-config >/dev/null || command -v pkgconf >/dev/null; }; then
  [ -x target/tools-venv/bin/python ] || "$PY" -m venv target/tools-venv
  target/tools-venv/bin/python -m pip install -q cmake pkgconf ninja
  export PATH="$PATH:$PWD/target/tools-venv/bin"
fi
PKGCONF=$(command -v pkg-config || command -v pkgconf)
GEN=()
if ! command -v make >/dev/null; then GEN=(-G Ninja); fi
rm -rf build/cpp
cmake -S examples/cpp -B build/cpp "${GEN[@]}" -DCMAKE_PREFIX_PATH="$PREFIX" >/dev/null
cmake --build build/cpp >/dev/null
./build/cpp/spire-restore builtin tests/fixtures/photos/chelsea_crop256_distorted.png target/cpp-cmake.png \
  "Denoise with sigma 0.05" "a cat"
g++ -std=c++17 examples/cpp/spire_restore.cpp \
  $(PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig" "$PKGCONF" --cflags --libs spire) -Wl,-rpath,"$PREFIX/lib" \
  -o target/spire-restore-pkgconfig
./target/spire-restore-pkgconfig builtin tests/fixtures/photos/chelsea_crop256_distorted.png target/cpp-pkgconfig.png \
  "Denoise with sigma 0.05" "a cat"
# The static library: nothing but libspire.a and its Libs.private.
g++ -std=c++17 examples/cpp/spire_restore.cpp $(PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig" "$PKGCONF" --cflags spire) \
  "$PREFIX/lib/libspire.a" $(PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig" "$PKGCONF" --static --libs-only-l spire | sed 's/-lspire//') \
  -o target/spire-restore-static
./target/spire-restore-static builtin tests/fixtures/photos/chelsea_crop256_distorted.png target/cpp-static.png \
  "Denoise with sigma 0.05" "a cat"
cmp target/cpp-cmake.png target/cpp-pkgconfig.png && cmp target/cpp-cmake.png target/cpp-static.png
echo "examples/cpp built from $PREFIX three ways (CMake, pkg-config, static); outputs equal"

echo "== Python: the abi3 wheel (manylinux_2_17 via zig) and the sdist, installed without Rust, pytest"
BUILD_VENV=target/py-build-venv
[ -x "$BUILD_VENV/bin/python" ] || "$PY" -m venv "$BUILD_VENV"
"$BUILD_VENV/bin/python" -m pip install -q --upgrade pip
"$BUILD_VENV/bin/python" -m pip install -q "maturin>=1.9,<2" ziglang
rm -rf target/wheels
(export PATH="$PWD/$BUILD_VENV/bin:$PATH"
 maturin build --release --zig --compatibility manylinux2014 --out target/wheels
 maturin sdist --out target/wheels)
WHEEL=$(ls target/wheels/spire_restore-*.whl)
"$BUILD_VENV/bin/python" scripts/check_wheel.py "$WHEEL" --max-mb 20
ls target/wheels/spire_restore-*.tar.gz

# A venv that has never seen Rust: no cargo or rustc on PATH while installing and testing.
# Rust's directories leave PATH, and stubs that fail shadow any toolchain left elsewhere.
STUBS="$PWD/target/no-rust-bin"
mkdir -p "$STUBS"
for t in cargo rustc rustup; do
  printf '#!/bin/sh\necho "$0: no Rust toolchain in this check" >&2\nexit 127\n' > "$STUBS/$t"
  chmod +x "$STUBS/$t"
done
NO_RUST_PATH="$STUBS:$(printf '%s' "$PATH" | tr ':' '\n' | grep -v -e '\.cargo' -e 'rustup' | paste -sd: -)"
VENV=${SPIRE_TEST_VENV:-$PWD/.venv-test}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
(export PATH="$NO_RUST_PATH"
 if cargo --version >/dev/null 2>&1 || rustc --version >/dev/null 2>&1; then
   echo "a Rust toolchain is still reachable"; exit 1
 fi
 "$VENV/bin/python" -m pip install -q --upgrade pip
 "$VENV/bin/python" -m pip install -q pytest numpy mypy pillow "ray[data]>=2.10"
 "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$WHEEL"
 SPIRE_EXPECT_WHEEL=1 "$VENV/bin/python" -m pytest tests/python -q)
