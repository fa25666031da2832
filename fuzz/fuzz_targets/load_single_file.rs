//! Fuzzes single-file checkpoints (the original Stable Diffusion layout) and single-file
//! ControlNets: the bytes are written to a file and loaded as a checkpoint (with the tiny SD 1.x
//! fixture's tokenizer as the config folder) and as a ControlNet for a tiny backbone. Detection,
//! config inference, the renaming, the OpenCLIP row split and every shape check run on hostile
//! headers; no input may panic, abort or allocate from an unchecked size.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use spire_core::model::{Adaptor, SingleFile, UNetConfig};
use spire_core::LoadOptions;

fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("spire-fuzz-single-file-{}.safetensors", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/single-file/sd1-config");
    let opts = LoadOptions::default().with_config(Some(config));
    if let Err(e) = SingleFile::load(&path, &opts) {
        assert!(!e.to_string().is_empty());
    }
    if let Err(e) = Adaptor::from_path(&path, &UNetConfig::tiny_sd1(), &LoadOptions::default()) {
        assert!(!e.to_string().is_empty());
    }
});
