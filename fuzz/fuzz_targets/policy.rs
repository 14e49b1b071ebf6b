//! Any text as a policy file: parsed or refused with a reason, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = portcullis::policy::parse("fuzz.yaml", text);
    }
});
