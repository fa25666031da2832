#!/usr/bin/env bash
# Installs libspire under target/c-prefix (scripts/install_c.sh) and runs the C and C++ tests
# against the installed library: the header compiled alone as C99 and C++17 with strict
# warnings, the SONAME and version checked, the tests under AddressSanitizer, and the C test
# under valgrind's leak checker (no definite leaks allowed).
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="$PWD/target/c-prefix"
rm -rf "$PREFIX"
SPIRE_CARGO_SELECT=--workspace bash scripts/install_c.sh "$PREFIX"
LIB="$PREFIX/lib"
INC="$PREFIX/include"
OUT=target/c-tests
mkdir -p "$OUT"
WARN="-Wall -Wextra -Werror -pedantic"

echo "-- header alone: C99 and C++17"
gcc -std=c99 $WARN -fsyntax-only -x c include/spire.h
g++ -std=c++17 $WARN -fsyntax-only -x c++ include/spire.h
g++ -std=c++17 $WARN -fsyntax-only -x c++ include/spire.hpp

echo "-- installed layout: SONAME, versioned names, strip"
VERSION=$(sed -n 's/^#define SPIRE_VERSION "\(.*\)"$/\1/p' "$INC/spire.h")
SONAME=$(readelf -d "$LIB/libspire.so.$VERSION" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$SONAME" = "libspire.so.${VERSION%%.*}" ] || { echo "SONAME is '$SONAME'"; exit 1; }
[ "$(readlink "$LIB/libspire.so")" = "$SONAME" ] && [ "$(readlink "$LIB/$SONAME")" = "libspire.so.$VERSION" ]
if readelf -S "$LIB/libspire.so.$VERSION" | grep -q '\.symtab'; then echo "libspire.so is not stripped"; exit 1; fi
echo "SONAME $SONAME; libspire.so.$VERSION $(du -m "$LIB/libspire.so.$VERSION" | cut -f1) MB, libspire.a $(du -m "$LIB/libspire.a" | cut -f1) MB"

echo "-- C and C++ tests under AddressSanitizer"
gcc -std=c99 $WARN -g -fsanitize=address -fno-omit-frame-pointer -I"$INC" tests/c/test_capi.c -L"$LIB" -lspire -o "$OUT/test_capi_asan"
g++ -std=c++17 $WARN -g -fsanitize=address -fno-omit-frame-pointer -I"$INC" tests/cpp/test_threads.cpp -L"$LIB" -lspire -lpthread -o "$OUT/test_threads_asan"
export LD_LIBRARY_PATH="$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
SCRATCH=$(mktemp -d)
# A model folder with the scheduler config diffusers writes for DPM++ (`-Infinity` in it).
cp -r tests/fixtures/tiny-sd1 "$SCRATCH/dpm-model"
cp tests/fixtures/diffusers-dpm/scheduler_config.json "$SCRATCH/dpm-model/scheduler/"
ASAN_OPTIONS=detect_leaks=1 "$OUT/test_capi_asan" tests/fixtures "$SCRATCH"
ASAN_OPTIONS=detect_leaks=1 "$OUT/test_threads_asan" tests/fixtures

echo "-- valgrind leak check of the C test"
if command -v valgrind >/dev/null; then
  gcc -std=c99 $WARN -g -I"$INC" tests/c/test_capi.c -L"$LIB" -lspire -o "$OUT/test_capi"
  valgrind --quiet --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite --error-exitcode=3 \
    "$OUT/test_capi" tests/fixtures "$SCRATCH" 2>&1 | tee "$OUT/valgrind.log"
  if grep -q "definitely lost: [1-9]" "$OUT/valgrind.log"; then
    echo "valgrind found definite leaks"; exit 1
  fi
else
  echo "valgrind not installed; skipped"
fi
rm -rf "$SCRATCH"
