//! The YAML a denial offers is a real fix: merged into the object at the path it names, the
//! violation it was offered for is gone. Run over every deny fixture of the default checks
//! and every `fail` fixture of kube-apiserver's Pod Security Admission suite, so each check
//! and control that offers a snippet is exercised.

mod common;

use common::*;
use portcullis::offline;
use portcullis::policy::{self, PolicySet};
use portcullis::rollout::Context;
use portcullis::verdict::Violation;
use serde_json::Value;

/// Merges `add` into `target`: mappings key by key, anything else replaced.
fn merge(target: &mut Value, add: &Value) {
    match (target, add) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, v) in a {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, a) => *t = a.clone(),
    }
}

/// `spec.template.spec.containers[0]` → the value there.
fn at<'a>(object: &'a mut Value, path: &str) -> &'a mut Value {
    path.split('.')
        .fold(object, |v, part| match part.split_once('[') {
            Some((field, index)) => {
                let i: usize = index.trim_end_matches(']').parse().unwrap();
                &mut v[field][i]
            }
            None => &mut v[part],
        })
}

fn violations(set: &PolicySet, object: &Value) -> Vec<Violation> {
    let judged = offline::judge(set, &Context::now(), object, "team-a").unwrap();
    judged.verdict.violations().cloned().collect()
}

/// Applies each offered fix on its own and checks it removes its violation. Returns how many
/// fixes were tried, and the failures.
fn try_fixes(set: &PolicySet, name: &str, object: &Value, failures: &mut Vec<String>) -> usize {
    let mut tried = 0;
    for v in violations(set, object) {
        let Some(fix) = &v.add else { continue };
        tried += 1;
        let snippet: Value = serde_saphyr::from_str(&fix.yaml)
            .unwrap_or_else(|e| panic!("{name}: the snippet is not YAML: {e}\n{}", fix.yaml));
        let mut fixed = object.clone();
        merge(at(&mut fixed, &fix.at), &snippet);
        let still = violations(set, &fixed).into_iter().any(|after| {
            after.check == v.check && after.subject == v.subject && after.field == v.field
        });
        if still {
            failures.push(format!(
                "{name}: [{}] at {} not fixed by\n{}",
                v.check.as_str(),
                fix.at,
                fix.yaml
            ));
        }
    }
    tried
}

#[test]
fn every_offered_fix_fixes_its_violation() {
    let mut failures = Vec::new();
    let mut tried = 0;
    // The default checks, validate only (no pod defaults to hide what the fix must do).
    let default = std::fs::read_to_string(repo().join("policies/default.yaml")).unwrap();
    let validate_only = PolicySet {
        policies: vec![
            policy::parse("default", default.split("  mutation:").next().unwrap()).unwrap(),
        ],
    };
    for check in sorted_files(&repo().join("tests/fixtures/checks")) {
        for file in sorted_files(&check).into_iter().filter(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("deny.")
        }) {
            for object in yaml_docs(&file) {
                tried += try_fixes(
                    &validate_only,
                    &file.display().to_string(),
                    &object,
                    &mut failures,
                );
            }
        }
    }
    let checks_tried = tried;
    assert!(
        checks_tried >= 20,
        "{checks_tried} fixes tried on the check fixtures"
    );
    for level in ["baseline", "restricted"] {
        let profile =
            policy::load_dir(&repo().join(format!("policies/profiles/pss-{level}"))).unwrap();
        for file in sorted_files(&shared().join(format!("conformance/pss/{level}/fail"))) {
            for object in yaml_docs(&file) {
                tried += try_fixes(
                    &profile,
                    &file.display().to_string(),
                    &object,
                    &mut failures,
                );
            }
        }
    }
    assert!(
        tried - checks_tried >= 40,
        "{} fixes tried on the PSS fixtures",
        tried - checks_tried
    );
    assert!(
        failures.is_empty(),
        "{} of {tried} fixes do not fix:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
