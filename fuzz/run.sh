#!/usr/bin/env bash
# Runs one libFuzzer target for a fixed time, starting from its committed seeds (the built-in
# model is the seed of `load_model`). New inputs go to fuzz/corpus/TARGET (ignored by git); a
# crash is saved under fuzz/artifacts/TARGET and should become a regression test in
# spire-core/tests/hostile.rs.
#
#     bash fuzz/run.sh parse_prompt|configs|decode_image|load_model|load_single_file [SECONDS]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Uses the nightly toolchain when it is
# installed; on stable alone RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the sanitizer flags.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?target: parse_prompt, configs, decode_image, load_model or load_single_file}
secs=${2:-60}
mkdir -p "corpus/$target"
seeds="seeds/$target"
extra=()
if [ "$target" = load_model ]; then
  mkdir -p seeds/load_model
  cp ../spire-core/assets/spire-tiny.safetensors corpus/load_model/spire-tiny.safetensors
  extra=(-max_len=8000000 -rss_limit_mb=4096)
fi
if [ "$target" = load_single_file ]; then
  # The tiny single files: SD 1.x (CLIP), SD 2.x (OpenCLIP) and a ControlNet.
  mkdir -p corpus/load_single_file
  cp ../tests/fixtures/single-file/*.safetensors corpus/load_single_file/
  extra=(-max_len=6000000 -rss_limit_mb=4096)
fi
[ -d "$seeds" ] || seeds=""
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  cargo +nightly fuzz run --release "$target" "corpus/$target" $seeds -- -max_total_time="$secs" "${extra[@]}"
else
  RUSTC_BOOTSTRAP=1 cargo fuzz run --release "$target" "corpus/$target" $seeds -- \
    -max_total_time="$secs" "${extra[@]}"
fi
