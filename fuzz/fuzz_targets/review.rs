//! Any bytes as a request body: decoding either refuses them or yields a request that the core
//! judges and mutates without panicking, and whose patch applies to the object it came from.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use portcullis::policy::PolicySet;
use portcullis::{admission, review};

static POLICIES: LazyLock<PolicySet> = LazyLock::new(PolicySet::embedded);

fuzz_target!(|data: &[u8]| {
    let Ok(req) = review::decode(data) else {
        return;
    };
    let verdict = admission::validate(&POLICIES, &req);
    let _ = review::encode_validation(&req, &verdict);
    let ops = admission::mutate(&POLICIES, &req);
    let _ = review::encode_mutation(&req, &ops);
    if ops.is_empty() {
        return;
    }
    // The decoder skips fields it does not read without decoding their escapes; a body with a
    // broken escape there (never sent by the apiserver, whose Go encoder writes U+FFFD) cannot
    // be re-read whole, so there is no object to check the patch against.
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let mut object = body["request"]["object"].clone();
    json_patch::patch(&mut object, &ops).expect("a returned patch applies to its object");
});
