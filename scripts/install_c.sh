#!/usr/bin/env bash
# Installs the C library under a prefix, laid out like any other C library:
#
#   PREFIX/include/spire.h, spire.hpp
#   PREFIX/lib/libspire.so.X.Y.Z, libspire.so.X (the SONAME) -> it, libspire.so -> libspire.so.X
#   PREFIX/lib/libspire.a
#   PREFIX/lib/cmake/spire/spireConfig.cmake, spireConfigVersion.cmake   (find_package(spire))
#   PREFIX/lib/pkgconfig/spire.pc                                        (pkg-config spire)
#   PREFIX/share/doc/spire/LICENSE-MIT, LICENSE-APACHE, c-api.md
#
# Usage: bash scripts/install_c.sh PREFIX   (builds `cargo build --release -p spire-capi` first;
# SPIRE_FEATURES=cuda passes features through). Then, in a CMake project:
#   find_package(spire 0.1 REQUIRED)   target_link_libraries(app PRIVATE spire::spire)
# (spire::spire_static for the static library), with -DCMAKE_PREFIX_PATH=PREFIX; or
#   g++ app.cpp $(PKG_CONFIG_PATH=PREFIX/lib/pkgconfig pkg-config --cflags --libs spire)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 1 ]; then
  echo "usage: $0 PREFIX" >&2
  exit 2
fi
mkdir -p "$1"
PREFIX=$(cd "$1" && pwd)

FEATURES=()
if [ -n "${SPIRE_FEATURES:-}" ]; then FEATURES=(--features "$SPIRE_FEATURES"); fi
# SPIRE_CARGO_SELECT=--workspace (the test script) builds with the workspace's feature set, so
# nothing already built for the tests is built again.
read -r -a SELECT <<< "${SPIRE_CARGO_SELECT:--p spire-capi}"
cargo build --release -q "${SELECT[@]}" "${FEATURES[@]}"
# The one version: the workspace's, as the crate, the wheel and the header's macros carry it.
VERSION=$(sed -n 's/^#define SPIRE_VERSION "\(.*\)"$/\1/p' include/spire.h)
CRATE_VERSION=$(cargo pkgid -p spire-capi | sed 's/.*[#@]//')
if [ "$VERSION" != "$CRATE_VERSION" ]; then
  echo "include/spire.h says $VERSION but the crate is $CRATE_VERSION: regenerate the header" >&2
  exit 1
fi
MAJOR=${VERSION%%.*}

LIB="$PREFIX/lib"
mkdir -p "$PREFIX/include" "$LIB/cmake/spire" "$LIB/pkgconfig" "$PREFIX/share/doc/spire"
install -m 644 include/spire.h include/spire.hpp "$PREFIX/include/"
install -m 755 target/release/libspire.so "$LIB/libspire.so.$VERSION"
ln -sf "libspire.so.$VERSION" "$LIB/libspire.so.$MAJOR"
ln -sf "libspire.so.$MAJOR" "$LIB/libspire.so"
install -m 644 target/release/libspire.a "$LIB/libspire.a"
# Rust's own standard library comes with line tables; nothing of ours needs them.
if command -v strip >/dev/null; then strip --strip-debug "$LIB/libspire.a"; fi
install -m 644 LICENSE-MIT LICENSE-APACHE docs/c-api.md "$PREFIX/share/doc/spire/"

# What a program linked against the static library also needs (Rust's std on glibc).
STATIC_LIBS="-lpthread -ldl -lm -lgcc_s -lc"

cat > "$LIB/pkgconfig/spire.pc" <<EOF
prefix=$PREFIX
exec_prefix=\${prefix}
libdir=\${exec_prefix}/lib
includedir=\${prefix}/include

Name: spire
Description: SPIRE: semantic prompt-driven image restoration (C ABI; C++ wrapper spire.hpp)
Version: $VERSION
Libs: -L\${libdir} -lspire
Libs.private: $STATIC_LIBS
Cflags: -I\${includedir}
EOF

cat > "$LIB/cmake/spire/spireConfigVersion.cmake" <<EOF
# Same major version (and, while it is 0, the same minor) and at least the one asked for.
set(PACKAGE_VERSION "$VERSION")
if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
elseif(NOT PACKAGE_FIND_VERSION_MAJOR EQUAL "$MAJOR")
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
elseif("$MAJOR" EQUAL 0 AND NOT PACKAGE_FIND_VERSION_MINOR EQUAL "$(echo "$VERSION" | cut -d. -f2)")
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
EOF

cat > "$LIB/cmake/spire/spireConfig.cmake" <<'EOF'
# spire::spire (the shared library) and spire::spire_static, with include/spire.h and spire.hpp.
# Paths are relative to this file, so the prefix can be moved.
get_filename_component(_spire_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(spire_INCLUDE_DIRS "${_spire_prefix}/include")
find_package(Threads REQUIRED)
if(NOT TARGET spire::spire)
  add_library(spire::spire SHARED IMPORTED)
  set_target_properties(spire::spire PROPERTIES
    IMPORTED_LOCATION "${_spire_prefix}/lib/libspire.so.@VERSION@"
    IMPORTED_SONAME "libspire.so.@MAJOR@"
    INTERFACE_INCLUDE_DIRECTORIES "${_spire_prefix}/include")
  add_library(spire::spire_static STATIC IMPORTED)
  set_target_properties(spire::spire_static PROPERTIES
    IMPORTED_LOCATION "${_spire_prefix}/lib/libspire.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_spire_prefix}/include"
    INTERFACE_LINK_LIBRARIES "Threads::Threads;${CMAKE_DL_LIBS};m")
endif()
set(spire_LIBRARIES spire::spire)
unset(_spire_prefix)
EOF
sed -i "s/@VERSION@/$VERSION/; s/@MAJOR@/$MAJOR/" "$LIB/cmake/spire/spireConfig.cmake"

echo "installed libspire $VERSION under $PREFIX"
