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
use std::collections::BTreeMap;

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

/// Per check: violations that offered a fix, and violations that offered none.
type Offered = BTreeMap<String, (usize, usize)>;

/// Applies each offered fix on its own and checks it removes its violation, counting per
/// check which violations offered one.
fn try_fixes(
    set: &PolicySet,
    name: &str,
    object: &Value,
    offered: &mut Offered,
    failures: &mut Vec<String>,
) {
    for v in violations(set, object) {
        let counts = offered.entry(v.rule.to_string()).or_default();
        let Some(fix) = &v.add else {
            counts.1 += 1;
            continue;
        };
        counts.0 += 1;
        let snippet: Value = serde_saphyr::from_str(&fix.yaml)
            .unwrap_or_else(|e| panic!("{name}: the snippet is not YAML: {e}\n{}", fix.yaml));
        let mut fixed = object.clone();
        merge(at(&mut fixed, &fix.at.to_string()), &snippet);
        let still = violations(set, &fixed).into_iter().any(|after| {
            after.rule == v.rule && after.subject == v.subject && after.field == v.field
        });
        if still {
            failures.push(format!(
                "{name}: [{}] at {} not fixed by\n{}",
                v.rule.as_str(),
                fix.at,
                fix.yaml
            ));
        }
    }
}

#[test]
fn every_offered_fix_fixes_its_violation() {
    let mut failures = Vec::new();
    // The default checks, validate only (no pod defaults to hide what the fix must do).
    let default = std::fs::read_to_string(repo().join("policies/default.yaml")).unwrap();
    let validate_only = PolicySet {
        policies: vec![
            policy::parse("default", default.split("  mutation:").next().unwrap()).unwrap(),
        ],
        ..PolicySet::default()
    };
    let mut checks = Offered::new();
    for check in sorted_files(&repo().join("tests/fixtures/checks")) {
        for file in sorted_files(&check).into_iter().filter(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("deny.")
        }) {
            for object in yaml_docs(&file) {
                let name = file.display().to_string();
                try_fixes(&validate_only, &name, &object, &mut checks, &mut failures);
            }
        }
    }
    let mut pss = Offered::new();
    for level in ["baseline", "restricted"] {
        let profile =
            policy::load_dir(&repo().join(format!("policies/profiles/pss-{level}"))).unwrap();
        for file in sorted_files(&data().join(format!("conformance/pss/{level}/fail"))) {
            for object in yaml_docs(&file) {
                let name = file.display().to_string();
                try_fixes(&profile, &name, &object, &mut pss, &mut failures);
            }
        }
    }
    // Pinned per check: (violations offering a fix, violations offering none). A check that
    // stops offering its fix, or a fixture that stops producing violations, changes a row.
    let expected = |rows: &[(&str, (usize, usize))]| -> Offered {
        rows.iter().map(|&(id, n)| (id.to_owned(), n)).collect()
    };
    let (expect_checks, expect_pss) = (expected(&EXPECT_CHECKS), expected(&EXPECT_PSS));
    assert_eq!(checks, expect_checks, "fixes offered on the check fixtures");
    assert_eq!(pss, expect_pss, "fixes offered on the PSS fail fixtures");
    assert!(
        failures.is_empty(),
        "{} offered fixes do not fix:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

const EXPECT_CHECKS: [(&str, (usize, usize)); 4] = [
    ("liveness-probe", (21, 0)),
    ("readiness-probe", (21, 0)),
    ("resource-limits", (30, 0)),
    ("run-as-non-root", (30, 0)),
];
/// Controls whose fix depends on values only the user knows (which capability, which volume,
/// which port) offer none; the rest always offer one.
const EXPECT_PSS: [(&str, (usize, usize)); 17] = [
    ("pss-apparmor", (0, 4)),
    ("pss-capabilities-baseline", (0, 8)),
    ("pss-capabilities-restricted", (5, 6)),
    ("pss-host-namespaces", (10, 0)),
    ("pss-host-path-volumes", (0, 7)),
    ("pss-host-ports", (0, 8)),
    ("pss-host-probes", (0, 10)),
    ("pss-privilege-escalation", (6, 0)),
    ("pss-privileged", (4, 0)),
    ("pss-proc-mount", (6, 0)),
    ("pss-run-as-non-root", (7, 0)),
    ("pss-run-as-user", (0, 3)),
    ("pss-seccomp", (12, 0)),
    ("pss-selinux", (0, 10)),
    ("pss-sysctls", (0, 2)),
    ("pss-volume-types", (0, 23)),
    ("pss-windows-host-process", (6, 0)),
];
