//! Any bytes as a request body: decoding either refuses them or yields a request that the core
//! judges and mutates without panicking, and whose patch applies to the object it came from.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use portcullis::policy::{self, PolicySet};
use portcullis::rollout::Context;
use portcullis::{admission, review};

/// The default policy, and one using every rollout feature, so scopes, globs, image matching
/// and exemptions see hostile names, namespaces and images too.
static POLICIES: LazyLock<PolicySet> = LazyLock::new(|| {
    let mut set = PolicySet::embedded();
    let rollout = include_str!("../corpus/policy/rollout.yaml");
    set.policies.push(policy::parse("rollout.yaml", rollout).unwrap());
    set
});

static LABELS: LazyLock<std::collections::BTreeMap<String, String>> = LazyLock::new(|| {
    [("portcullis.dev/mode.liveness-probe", "warn"), ("stage", "experimental"), ("team", "ml")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let Ok(req) = review::decode(data) else {
        return;
    };
    let ctx = Context {
        today: policy::Date::parse("2026-12-15").unwrap(),
        namespace_labels: Some(&LABELS),
    };
    let verdict = admission::validate(&POLICIES, &req, &ctx);
    let _ = verdict.warnings();
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
