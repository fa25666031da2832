#!/usr/bin/env bash
# Builds libspire and runs the C and C++ tests against include/: the header compiled alone as
# C99 and C++17 with strict warnings, the tests under AddressSanitizer, and the C test under
# valgrind's leak checker (no definite leaks allowed).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p spire-capi
LIB=target/release
OUT=target/c-tests
mkdir -p "$OUT"
WARN="-Wall -Wextra -Werror -pedantic"

echo "-- header alone: C99 and C++17"
gcc -std=c99 $WARN -fsyntax-only -x c include/spire.h
g++ -std=c++17 $WARN -fsyntax-only -x c++ include/spire.h
g++ -std=c++17 $WARN -fsyntax-only -x c++ include/spire.hpp

echo "-- C and C++ tests under AddressSanitizer"
gcc -std=c99 $WARN -g -fsanitize=address -fno-omit-frame-pointer -Iinclude tests/c/test_capi.c -L"$LIB" -lspire -o "$OUT/test_capi_asan"
g++ -std=c++17 $WARN -g -fsanitize=address -fno-omit-frame-pointer -Iinclude tests/cpp/test_threads.cpp -L"$LIB" -lspire -lpthread -o "$OUT/test_threads_asan"
export LD_LIBRARY_PATH="$PWD/$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
SCRATCH=$(mktemp -d)
# A model folder with the scheduler config diffusers writes for DPM++ (`-Infinity` in it).
cp -r tests/fixtures/tiny-sd1 "$SCRATCH/dpm-model"
cp tests/fixtures/diffusers-dpm/scheduler_config.json "$SCRATCH/dpm-model/scheduler/"
ASAN_OPTIONS=detect_leaks=1 "$OUT/test_capi_asan" tests/fixtures "$SCRATCH"
ASAN_OPTIONS=detect_leaks=1 "$OUT/test_threads_asan" tests/fixtures

echo "-- valgrind leak check of the C test"
if command -v valgrind >/dev/null; then
  gcc -std=c99 $WARN -g -Iinclude tests/c/test_capi.c -L"$LIB" -lspire -o "$OUT/test_capi"
  valgrind --quiet --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite --error-exitcode=3 \
    "$OUT/test_capi" tests/fixtures "$SCRATCH" 2>&1 | tee "$OUT/valgrind.log"
  if grep -q "definitely lost: [1-9]" "$OUT/valgrind.log"; then
    echo "valgrind found definite leaks"; exit 1
  fi
else
  echo "valgrind not installed; skipped"
fi
rm -rf "$SCRATCH"
