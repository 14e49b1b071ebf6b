//! Every review captured from a real kube-apiserver is decoded and answered as
//! `fixtures/apiserver-expectations.yaml` says, through the real router, with patches applied
//! by an independent RFC 6902 implementation and the patched object judged again.

mod common;

use std::collections::BTreeMap;

use common::*;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Expected {
    validate: Vec<String>,
    patched: bool,
    validate_after_mutate: Option<Vec<String>>,
}

fn expectations() -> BTreeMap<String, Expected> {
    let path = repo().join("tests/fixtures/apiserver-expectations.yaml");
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every capture, counted here so that each test that walks them fails on a shrunken set.
fn captured() -> Vec<(String, Value)> {
    let all: Vec<(String, Value)> = sorted_files(&apiserver_fixtures())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                read_json(&p),
            )
        })
        .collect();
    let names: Vec<&String> = all.iter().map(|(n, _)| n).collect();
    assert_eq!(all.len(), 34, "the captured set changed: {names:?}");
    all
}

#[test]
fn every_captured_review_has_an_expectation() {
    let expected = expectations();
    let names: Vec<String> = captured().into_iter().map(|(n, _)| n).collect();
    for name in &names {
        assert!(expected.contains_key(name), "no expectation for {name}");
    }
    for name in expected.keys() {
        assert!(
            names.contains(name),
            "expectation for a missing capture {name}"
        );
    }
}

#[tokio::test]
async fn captured_reviews_get_the_expected_answers() {
    let app = default_app();
    let expected = expectations();
    let mut failures = Vec::new();
    for (name, review) in captured() {
        let want = &expected[&name];
        let validated = answer(&app, "/validate?timeout=5s", &review).await;
        // `answer` sends the review as the apiserver orders it, where a new object's spec is
        // typed as it passes. Sorted, `operation` follows `object` and the spec is read as
        // text: the same answer.
        let sorted = serde_json::to_vec(&review).unwrap();
        for path in ["/validate", "/mutate"] {
            let (_, as_sent) = post(&app, path, wire(&review)).await;
            let (_, sorted) = post(&app, path, sorted.clone()).await;
            assert_eq!(as_sent, sorted, "{name} {path}");
        }
        assert!(
            validated.get("patch").is_none() && validated.get("patchType").is_none(),
            "{name}: a validating response must never carry a patch"
        );
        let denied = denied_checks(&validated);
        if denied != want.validate {
            failures.push(format!(
                "{name}: /validate denied {denied:?}, expected {:?}",
                want.validate
            ));
        }
        if !want.validate.is_empty() {
            assert_eq!(validated["status"]["code"], 403, "{name}");
        }
        let mutated = answer(&app, "/mutate?timeout=5s", &review).await;
        let ops = patch_of(&mutated);
        if ops.is_empty() == want.patched {
            failures.push(format!(
                "{name}: /mutate patched={}, expected {}",
                !ops.is_empty(),
                want.patched
            ));
            continue;
        }
        if ops.is_empty() {
            continue;
        }
        // What the apiserver does next: apply the patch, call /mutate again (reinvocation),
        // then /validate the patched object.
        let mut patched = review.clone();
        patched["request"]["object"] = apply(&review["request"]["object"], &ops);
        let again = patch_of(&answer(&app, "/mutate", &patched).await);
        if !again.is_empty() {
            failures.push(format!(
                "{name}: mutation is not idempotent: second patch {again:?}"
            ));
        }
        let after = denied_checks(&answer(&app, "/validate", &patched).await);
        if Some(&after) != want.validate_after_mutate.as_ref() {
            failures.push(format!(
                "{name}: after mutation /validate denied {after:?}, expected {:?}",
                want.validate_after_mutate
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Our envelope must read every capture exactly as kube's own AdmissionReview type does.
#[test]
fn decoding_agrees_with_kube_admission_types() {
    for (name, review) in captured() {
        let text = wire(&review);
        let ours = portcullis::review::decode(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let theirs: AdmissionReview<DynamicObject> = serde_json::from_slice(&text).unwrap();
        let theirs: AdmissionRequest<DynamicObject> = theirs.try_into().unwrap();
        assert_eq!(ours.uid, theirs.uid, "{name}");
        assert_eq!(ours.operation, theirs.operation, "{name}");
        assert_eq!(ours.kind, theirs.kind.kind, "{name}");
        assert_eq!(ours.sub_resource, theirs.sub_resource, "{name}");
        assert_eq!(Some(ours.namespace.clone()), theirs.namespace, "{name}");
        assert_eq!(ours.dry_run, theirs.dry_run, "{name}");
        assert_eq!(Some(ours.user.clone()), theirs.user_info.username, "{name}");
        if let Some(w) = ours.object.workload() {
            let meta = theirs.object.as_ref().unwrap().metadata.clone();
            assert_eq!(
                Some(w.name.clone()),
                meta.name.or(meta.generate_name),
                "{name}"
            );
        }
    }
}
