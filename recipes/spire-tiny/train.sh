#!/usr/bin/env bash
# The spire-tiny recipe: backbone from scratch, then the adaptor, then the built-in file.
# The adaptor trains on the backbone as it ships: the built-in file stores f16 weights, so the
# backbone is rounded to f16 (exported and unpacked) before the adaptor stage.
# Run from the repository root (the photos are in ../shared/data/photos). Resumable: rerun the
# same command after an interruption and each stage continues from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p spire-core --bin spire
SPIRE=target/release/spire
mkdir -p target/spire-tiny
t0=$(date +%s)
$SPIRE train --config recipes/spire-tiny/backbone.json
t1=$(date +%s)
$SPIRE export-builtin target/spire-tiny target/spire-tiny-backbone.safetensors
$SPIRE unpack-builtin target/spire-tiny --from target/spire-tiny-backbone.safetensors
$SPIRE train --config recipes/spire-tiny/adaptor.json
t2=$(date +%s)
$SPIRE export-builtin target/spire-tiny spire-core/assets/spire-tiny.safetensors
echo "backbone: $((t1 - t0)) s, adaptor: $((t2 - t1)) s, total: $((t2 - t0)) s"
