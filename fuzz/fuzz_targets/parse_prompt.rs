//! Fuzzes the restoration prompt parser: no input may panic, and whatever parses must render
//! to text that parses back to the same prompt.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spire_core::RestorationPrompt;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = RestorationPrompt::parse(text) {
            let again = RestorationPrompt::parse(&p.render()).expect("a rendered prompt must parse");
            assert_eq!(again, p);
        }
    }
});
