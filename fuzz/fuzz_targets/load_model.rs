//! Fuzzes the whole weight-file path: a single-file model (the built-in format: a safetensors
//! header, its tensor table and data, every component's `config.json` and the tokenizer in its
//! metadata) is parsed, checked and built. No input may panic, abort or allocate from an
//! unchecked size; a file either loads or is refused with a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = spire_core::builtin::load(data, "fuzz.safetensors") {
        // Every refusal is a typed error with a message.
        assert!(!e.to_string().is_empty());
    }
});
