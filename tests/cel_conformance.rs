//! Kyverno's CEL ValidatingPolicies (`tests/data/conformance/kyverno-vpol/`), each loaded from
//! its own file as it is, and every resource of its `kyverno-test.yaml` judged as `check`
//! judges a manifest (the same offline request and core). Each expected result (`pass`, `fail`,
//! `skip`) is compared with portcullis's: `fail` when the policy's rule has a violation, `skip`
//! when no rule of it applies, else `pass`. Kyverno's expectations agree with kube-apiserver's
//! own ValidatingAdmissionPolicy on every object it accepted (the suite's README).
//! Every difference is listed in tests/conformance.md with its reason.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;
use portcullis::admission;
use portcullis::offline;
use portcullis::policy::{self, PolicySet};
use portcullis::request::Operation;
use portcullis::rollout::Context;
use serde_json::Value;

fn suite() -> PathBuf {
    data().join("conformance/kyverno-vpol")
}

/// What portcullis says of one resource under one policy.
fn result(set: &PolicySet, name: &str, object: &Value, operation: Operation) -> &'static str {
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let ctx = Context::now();
    let Some(req) = offline::request(object, operation, namespace, true) else {
        return "skip";
    };
    let verdict = admission::validate(set, &req, &ctx);
    if verdict.violations().any(|v| *v.policy == *name) {
        return "fail";
    }
    let json = req.json.as_deref().unwrap();
    let policy = set.policies.iter().find(|p| *p.name == *name).unwrap();
    if policy
        .cel
        .iter()
        .any(|rule| admission::cel_rule_matched(rule, &req, json, (&set.params, &ctx)))
    {
        "pass"
    } else {
        "skip"
    }
}

/// Rows of the Kyverno table in tests/conformance.md: (policy, kind, resource) → our result.
fn documented() -> BTreeMap<(String, String, String), String> {
    let text = std::fs::read_to_string(repo().join("tests/conformance.md")).unwrap();
    let section = text
        .split("## Kyverno CEL ValidatingPolicies")
        .nth(1)
        .expect("tests/conformance.md has a Kyverno CEL ValidatingPolicies section");
    section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<String> = l
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect();
            (
                (cells[1].clone(), cells[2].clone(), cells[3].clone()),
                cells[5].clone(),
            )
        })
        .collect()
}

#[test]
fn kyverno_validating_policies_agree_with_their_expected_results() {
    let files = kyverno_tests(&suite());
    assert_eq!(files.len(), 67, "kyverno-test.yaml files");
    let documented = documented();
    let (mut total, mut agree) = (0, 0);
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for test_file in &files {
        let dir = test_file.parent().unwrap();
        let [test]: [Value; 1] = yaml_docs(test_file).try_into().unwrap();
        // Every policy loads, as it is.
        let policies = tempfile::tempdir().unwrap();
        for p in test["policies"].as_array().unwrap() {
            let path = dir.join(p.as_str().unwrap());
            std::fs::copy(&path, policies.path().join(path.file_name().unwrap())).unwrap();
        }
        let set = policy::load_dir(policies.path())
            .unwrap_or_else(|e| panic!("{}: {e}", test_file.display()));
        // Resources by kind and name, and per-resource operations from values.yaml.
        let mut resources: BTreeMap<(String, String), Value> = BTreeMap::new();
        for r in test["resources"].as_array().unwrap() {
            for doc in yaml_docs(&dir.join(r.as_str().unwrap())) {
                for object in offline::objects(doc) {
                    let kind = object["kind"].as_str().unwrap_or("").to_owned();
                    let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
                    resources.insert((kind, name), object);
                }
            }
        }
        let mut operations: BTreeMap<String, Operation> = BTreeMap::new();
        if let Some(values) = test["variables"].as_str() {
            let [values]: [Value; 1] = yaml_docs(&dir.join(values)).try_into().unwrap();
            for p in values["policies"].as_array().into_iter().flatten() {
                for r in p["resources"].as_array().into_iter().flatten() {
                    if r["values"]["request.operation"] == "UPDATE" {
                        operations
                            .insert(r["name"].as_str().unwrap().to_owned(), Operation::Update);
                    }
                }
            }
        }
        for expected in test["results"].as_array().unwrap() {
            let policy = expected["policy"].as_str().unwrap();
            let kind = expected["kind"].as_str().unwrap();
            let want = expected["result"].as_str().unwrap().trim();
            for name in expected["resources"].as_array().unwrap() {
                // `namespace/name` or `name`.
                let name = name.as_str().unwrap();
                let bare = name.rsplit_once('/').map_or(name, |(_, n)| n);
                let key = (kind.to_owned(), bare.to_owned());
                let object = resources
                    .get(&key)
                    .unwrap_or_else(|| panic!("{}: no {kind} {name}", test_file.display()));
                let operation = operations.get(bare).cloned().unwrap_or(Operation::Create);
                let got = result(&set, policy, object, operation);
                total += 1;
                let row = (policy.to_owned(), kind.to_owned(), name.to_owned());
                match documented.get(&row) {
                    Some(ours) if ours == got => seen.push(row),
                    Some(ours) => problems.push(format!(
                        "{row:?}: conformance.md says portcullis gives {ours}, it gives {got}"
                    )),
                    None if got == want => agree += 1,
                    None => problems.push(format!(
                        "| `{policy}` | `{kind}` | `{name}` | {want} | {got} | |"
                    )),
                }
            }
        }
    }
    for row in documented.keys().filter(|k| !seen.contains(k)) {
        problems.push(format!("conformance.md row matches no difference: {row:?}"));
    }
    eprintln!("kyverno-vpol: {agree} of {total} expected results agree");
    assert!(
        problems.is_empty(),
        "{} undocumented differences (policy, kind, resource, expected, portcullis):\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        agree * 100 >= total * 95,
        "{agree} of {total} agree: below 95%"
    );
    assert_eq!(total, 1041, "expected results compared");
}
