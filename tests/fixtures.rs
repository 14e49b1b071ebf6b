//! The data-driven suites: `fixtures/checks/<check-id>/{allow,deny}.<case>.yaml` are objects
//! submitted to `/validate` as CREATEs under the default policy; `fixtures/defaults/<case>.yaml`
//! hold a Pod and the Pod expected once the `/mutate` patch is applied (`unchanged.*`: no patch).
//! One harness walks each tree and reports every mismatch at once.

mod common;

use common::*;
use portcullis::policy::PolicySet;
use portcullis::workload::{self, WorkloadKind};
use serde_json::Value;

#[tokio::test]
async fn check_fixtures() {
    let app = default_app();
    let root = repo().join("tests/fixtures/checks");
    let mut failures = Vec::new();
    let mut seen = 0;
    for check_dir in sorted_files(&root) {
        let check = check_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let (mut allows, mut denies) = (0, 0);
        for file in sorted_files(&check_dir) {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let expect_deny = match name.split('.').next() {
                Some("deny") => true,
                Some("allow") => false,
                _ => panic!(
                    "{}: fixture names start with allow. or deny.",
                    file.display()
                ),
            };
            if expect_deny {
                denies += 1
            } else {
                allows += 1
            }
            let [object] = yaml_docs(&file)
                .try_into()
                .expect("one object per check fixture");
            let response = answer(&app, "/validate", &create(&object)).await;
            let denied = denied_checks(&response).contains(&check);
            if denied != expect_deny {
                failures.push(format!(
                    "{check}/{name}: denied={denied}, response {response}"
                ));
            }
            if expect_deny {
                let message = response["status"]["message"].as_str().unwrap_or("");
                let line = message
                    .lines()
                    .find(|l| l.ends_with(&format!("[{check}]")))
                    .unwrap_or("");
                // Every denial names the container and says what to set.
                if !(line.contains("container \"")
                    && (line.contains(": set ") || line.contains(": add ")))
                {
                    failures.push(format!(
                        "{check}/{name}: message does not say where and how to fix: {line:?}"
                    ));
                }
            }
            seen += 1;
        }
        assert!(
            allows > 0 && denies > 0,
            "{check}: needs both allow and deny fixtures"
        );
    }
    // Exact: a fixture lost or left unread fails here, not silently.
    assert_eq!(seen, 44, "check fixtures walked");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn defaults_fixtures() {
    let app = default_app();
    let policies = PolicySet::embedded();
    let (_, mutation) = policies.mutation().unwrap();
    let mut failures = Vec::new();
    let files = sorted_files(&repo().join("tests/fixtures/defaults"));
    // Exact: an empty or shrunken directory must not pass.
    assert_eq!(files.len(), 11, "defaults fixtures");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let docs = yaml_docs(&file);
        let (input, expected) = match (name.starts_with("unchanged."), docs.as_slice()) {
            (true, [input]) => (input, input),
            (false, [input, expected]) => (input, expected),
            _ => panic!("{name}: unchanged.* holds one document, others an input and its result"),
        };
        let ops = patch_of(&answer(&app, "/mutate", &create(input)).await);
        if name.starts_with("unchanged.") != ops.is_empty() {
            failures.push(format!("{name}: unexpected patch presence: {ops:?}"));
            continue;
        }
        let patched = apply(input, &ops);
        if &patched != expected {
            failures.push(format!(
                "{name}: patched pod differs\n got: {patched}\nwant: {expected}"
            ));
            continue;
        }
        // Reinvocation (reinvocationPolicy: IfNeeded) must find nothing left to do.
        let again = patch_of(&answer(&app, "/mutate", &create(&patched)).await);
        if !again.is_empty() {
            failures.push(format!("{name}: not idempotent, second patch {again:?}"));
        }
        // The JSON patch and the in-memory defaulting must agree.
        let mut typed = decode_pod(input);
        portcullis::defaults::fill(mutation, typed.pod_spec.as_mut().unwrap());
        let patched_spec = decode_pod(&patched).pod_spec.unwrap();
        if typed.pod_spec.as_ref() != Some(&patched_spec) {
            failures.push(format!("{name}: in-memory defaults differ from the patch"));
        }
        // The overlay /validate judges by carries every field the patch filled.
        let input_spec = decode_pod(input).pod_spec.unwrap();
        let overlay = portcullis::defaults::overlay(mutation, &input_spec);
        let init = patched_spec.init_containers.as_deref().unwrap_or_default();
        if overlay.security_context.as_deref() != patched_spec.security_context.as_ref()
            || !touched_as_patched(&overlay.containers, &patched_spec.containers)
            || !touched_as_patched(&overlay.init_containers, init)
        {
            failures.push(format!(
                "{name}: the defaults overlay differs from the patch"
            ));
        }
        // Defaults can always satisfy resource-limits.
        let denied = denied_checks(&answer(&app, "/validate", &create(&patched)).await);
        if denied.iter().any(|c| c == "resource-limits") {
            failures.push(format!("{name}: patched pod still lacks limits"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn decode_pod(object: &Value) -> workload::Workload {
    workload::decode(WorkloadKind::Pod, object).expect("fixture pod decodes")
}

/// Whether the overlay's containers hold the patched containers' security contexts and
/// resources, one for one.
fn touched_as_patched(
    touched: &[portcullis::defaults::Touched],
    patched: &[k8s_openapi::api::core::v1::Container],
) -> bool {
    touched.len() == patched.len()
        && touched.iter().zip(patched).all(|(t, c)| {
            t.security_context.as_deref() == c.security_context.as_ref()
                && t.resources.as_deref() == c.resources.as_ref()
        })
}
