//! The peer suites in `tests/data/conformance/`, run with policy settings that mirror each peer:
//! Polaris's checks, Kyverno's best-practices and pod-security policies, and the Pod Security
//! Standards fixtures kube-apiserver's own admission is tested with. Every case where portcullis
//! judges differently must be a row of `tests/conformance.md` (and every row must still differ),
//! so no difference is ever skipped silently.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;
use portcullis::policy::{self, PolicySet};
use portcullis::workload::WorkloadKind;
use serde_json::Value;

/// One object and what the peer expects of it.
struct Case {
    label: String,
    object: Value,
    peer_fails: bool,
}

struct Suite {
    name: &'static str,
    /// Whether comparing portcullis's shipped settings with this peer says anything: not for
    /// a peer check portcullis has no default equivalent of (Polaris's request checks).
    compare_default: bool,
    /// The `spec.checks` of a policy mirroring the peer; the suite's verdict is whether any
    /// check in it denies.
    checks: &'static str,
    cases: fn(&Path) -> Vec<Case>,
}

const SUITES: &[Suite] = &[
    // Kyverno's pod-security policies, each against the profile control it implements
    // (the settings of policies/profiles/pss-*, one control at a time).
    Suite {
        name: "kyverno/pod-security/baseline/disallow-capabilities",
        compare_default: false,
        checks: "pss-capabilities-baseline: {}",
        cases: kyverno,
    },
    Suite {
        name: "kyverno/pod-security/baseline/disallow-host-namespaces",
        compare_default: false,
        checks: "pss-host-namespaces: {}",
        cases: kyverno,
    },
    Suite {
        name: "kyverno/pod-security/baseline/disallow-host-path",
        compare_default: false,
        checks: "pss-host-path-volumes: {}",
        cases: kyverno,
    },
    Suite {
        name: "kyverno/pod-security/baseline/disallow-host-ports",
        compare_default: false,
        checks: "pss-host-ports: {}",
        cases: kyverno,
    },
    Suite {
        name: "kyverno/pod-security/baseline/disallow-host-ports-range",
        compare_default: false,
        checks: "pss-host-ports: {}",
        cases: kyverno,
    },
    Suite {
        name: "kyverno/pod-security/baseline/disallow-host-process",
        compare_default: false,
        checks: "pss-windows-host-process: {}",
        cases: kyverno,
    },
    Suite {
        name: "kyverno/pod-security/baseline/disallow-privileged-containers",
        compare_default: false,
        checks: "pss-privileged: {}",
        cases: kyverno,
    },
    Suite {
        name: "kyverno/pod-security/baseline/disallow-proc-mount",
        compare_default: false,
        checks: "pss-proc-mount: {level: baseline}",
        cases: kyverno,
    },
    Suite {
        name: "kyverno/pod-security/baseline/disallow-selinux",
        compare_default: false,
        checks: "pss-selinux: {}",
        cases: kyverno,
    },
    Suite {
        name: "kyverno/pod-security/baseline/restrict-apparmor-profiles",
        compare_default: false,
        checks: "pss-apparmor: {}",
        cases: kyverno,
    },
    Suite {
        name: "kyverno/pod-security/baseline/restrict-seccomp",
        compare_default: false,
        checks: "pss-seccomp: {level: baseline}",
        cases: kyverno,
    },
    Suite {
        name: "kyverno/pod-security/baseline/restrict-sysctls",
        compare_default: false,
        checks: "pss-sysctls: {}",
        cases: kyverno,
    },
    Suite {
        name: "kyverno/pod-security/restricted/disallow-capabilities-strict",
        compare_default: false,
        checks: "pss-capabilities-restricted: {}",
        cases: kyverno,
    },
    Suite {
        name: "kyverno/pod-security/restricted/disallow-privilege-escalation",
        compare_default: false,
        checks: "pss-privilege-escalation: {}",
        cases: kyverno,
    },
    Suite {
        name: "kyverno/pod-security/restricted/require-run-as-non-root-user",
        compare_default: false,
        checks: "pss-run-as-user: {}",
        cases: kyverno,
    },
    Suite {
        name: "kyverno/pod-security/restricted/require-run-as-nonroot",
        compare_default: false,
        checks: "pss-run-as-non-root: {}",
        cases: kyverno,
    },
    Suite {
        name: "kyverno/pod-security/restricted/restrict-seccomp-strict",
        compare_default: false,
        checks: "pss-seccomp: {level: restricted}",
        cases: kyverno,
    },
    Suite {
        name: "kyverno/pod-security/restricted/restrict-volume-types",
        compare_default: false,
        checks: "pss-volume-types: {}",
        cases: kyverno,
    },
    Suite {
        name: "polaris/runAsRootAllowed",
        compare_default: true,
        checks: "run-as-non-root: {acceptNonZeroRunAsUser: true}",
        cases: polaris,
    },
    Suite {
        name: "polaris/livenessProbeMissing",
        compare_default: true,
        checks: "liveness-probe: {exemptKinds: [Job, CronJob]}",
        cases: polaris,
    },
    Suite {
        name: "polaris/readinessProbeMissing",
        compare_default: true,
        checks: "readiness-probe: {exemptKinds: [Job, CronJob]}",
        cases: polaris,
    },
    Suite {
        name: "polaris/cpuLimitsMissing",
        compare_default: true,
        checks: "resource-limits: {limits: [cpu], containerTypes: [containers]}",
        cases: polaris,
    },
    Suite {
        name: "polaris/memoryLimitsMissing",
        compare_default: true,
        checks: "resource-limits: {limits: [memory], containerTypes: [containers]}",
        cases: polaris,
    },
    Suite {
        name: "polaris/cpuRequestsMissing",
        compare_default: false,
        checks: "resource-limits: {limits: [], requests: [cpu], containerTypes: [containers]}",
        cases: polaris,
    },
    Suite {
        name: "polaris/memoryRequestsMissing",
        compare_default: false,
        checks: "resource-limits: {limits: [], requests: [memory], containerTypes: [containers]}",
        cases: polaris,
    },
    Suite {
        compare_default: true,
        name: "kyverno/best-practices/require-probes",
        checks: "liveness-probe: {satisfiedBy: [livenessProbe, readinessProbe, startupProbe], exemptKinds: []}",
        cases: kyverno,
    },
    Suite {
        compare_default: true,
        name: "kyverno/best-practices/require-pod-requests-limits",
        checks: "resource-limits: {limits: [memory], requests: [cpu, memory], containerTypes: [containers, initContainers, ephemeralContainers]}",
        cases: kyverno,
    },
    Suite {
        compare_default: true,
        name: "kyverno/pod-security/restricted/require-run-as-nonroot",
        checks: "run-as-non-root: {acceptNonZeroRunAsUser: false}",
        cases: kyverno,
    },
    Suite {
        name: "pss/restricted/runasnonroot",
        compare_default: true,
        checks: "run-as-non-root: {acceptNonZeroRunAsUser: false}",
        cases: pss,
    },
    Suite {
        name: "pss/restricted/runasuser",
        compare_default: true,
        checks: "run-as-non-root: {acceptNonZeroRunAsUser: false}",
        cases: pss,
    },
];

/// How a suite is run: with settings mirroring the peer (where no difference is expected), or
/// with portcullis's shipped default settings for the same check (where the table says why
/// they differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Settings {
    Mirror,
    Default,
}

impl Settings {
    fn as_str(self) -> &'static str {
        match self {
            Self::Mirror => "mirror",
            Self::Default => "default",
        }
    }
}

fn policy_for(suite: &Suite, settings: Settings) -> PolicySet {
    // No mutation: peers judge templates as written, and no namespace is exempt.
    let yaml = format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {{name: mirror}}\nspec:\n  exemptNamespaces: []\n  checks:\n    {}\n",
        suite.checks
    );
    let mut set = PolicySet {
        policies: vec![policy::parse(suite.name, &yaml).unwrap()],
        ..PolicySet::default()
    };
    if settings == Settings::Default {
        let shipped = PolicySet::embedded().policies.remove(0).spec.checks;
        let mirror = &mut set.policies[0].spec.checks;
        // The shipped settings of the one check this suite exercises.
        if mirror.run_as_non_root.is_some() {
            mirror.run_as_non_root = shipped.run_as_non_root;
        }
        if mirror.liveness_probe.is_some() {
            mirror.liveness_probe = shipped.liveness_probe;
        }
        if mirror.readiness_probe.is_some() {
            mirror.readiness_probe = shipped.readiness_probe;
        }
        if mirror.resource_limits.is_some() {
            mirror.resource_limits = shipped.resource_limits;
        }
    }
    set
}

fn name_of(object: &Value) -> String {
    let meta = &object["metadata"];
    meta["name"]
        .as_str()
        .or(meta["generateName"].as_str())
        .unwrap_or("?")
        .to_owned()
}

fn judged(object: &Value) -> bool {
    object["kind"]
        .as_str()
        .and_then(WorkloadKind::from_kind)
        .is_some()
}

/// `success*` must pass, `failure*` must fail, `mutated*` (Polaris's own fix) must pass.
fn polaris(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    for file in sorted_files(dir) {
        let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
        let peer_fails = match file_name.split('.').next().unwrap() {
            "failure" => true,
            "success" | "mutated" => false,
            _ => continue,
        };
        for object in yaml_docs(&file).into_iter().filter(judged) {
            cases.push(Case {
                label: file_name.clone(),
                object,
                peer_fails,
            });
        }
    }
    cases
}

/// The CLI test's per-resource results, and the chainsaw good/bad objects.
fn kyverno(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let test_dir = dir.join(".kyverno-test");
    let test = &yaml_docs(&test_dir.join("kyverno-test.yaml"))[0];
    let mut expected: BTreeMap<(String, String), bool> = BTreeMap::new();
    for result in test["results"].as_array().unwrap() {
        let fails = result["result"] == "fail";
        for name in result["resources"].as_array().unwrap() {
            // Results are listed per rule: a resource fails the policy if any rule fails it.
            let key = (
                result["kind"].as_str().unwrap().to_owned(),
                name.as_str().unwrap().to_owned(),
            );
            *expected.entry(key).or_insert(false) |= fails;
        }
    }
    for resources in test["resources"].as_array().unwrap() {
        for object in yaml_docs(&test_dir.join(resources.as_str().unwrap()))
            .into_iter()
            .filter(judged)
        {
            let key = (
                object["kind"].as_str().unwrap().to_owned(),
                name_of(&object),
            );
            if let Some(&peer_fails) = expected.get(&key) {
                cases.push(Case {
                    label: format!("kyverno-test {}/{}", key.0, key.1),
                    object,
                    peer_fails,
                });
            }
        }
    }
    for file in sorted_files(&dir.join(".chainsaw-test")) {
        let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
        let peer_fails = if file_name.contains("bad") {
            true
        } else if file_name.contains("good") {
            false
        } else {
            continue;
        };
        for object in yaml_docs(&file).into_iter().filter(judged) {
            let label = format!(
                "chainsaw {file_name} {}/{}",
                object["kind"].as_str().unwrap(),
                name_of(&object)
            );
            cases.push(Case {
                label,
                object,
                peer_fails,
            });
        }
    }
    cases
}

/// `pss/<level>/{pass,fail}/<control>*.yaml`; the suite name ends with the control.
fn pss(dir: &Path) -> Vec<Case> {
    let (level_dir, control) = (
        dir.parent().unwrap(),
        dir.file_name().unwrap().to_str().unwrap(),
    );
    let mut cases = Vec::new();
    for (outcome, peer_fails) in [("pass", false), ("fail", true)] {
        for file in sorted_files(&level_dir.join(outcome)) {
            let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
            if !file_name.starts_with(control) {
                continue;
            }
            for object in yaml_docs(&file) {
                cases.push(Case {
                    label: format!("{outcome}/{file_name}"),
                    object,
                    peer_fails,
                });
            }
        }
    }
    cases
}

type Row = (String, String, String);

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Rows of the differences table: (settings, suite, case) → portcullis's verdict.
fn documented_differences() -> BTreeMap<Row, bool> {
    let table = std::fs::read_to_string(repo().join("tests/conformance.md")).unwrap();
    let mut rows = BTreeMap::new();
    // The peer suites' table comes first; the sections after it have tables of their own.
    for line in table
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| `"))
    {
        let cells: Vec<&str> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().trim_matches('`'))
            .collect();
        let fails = match cells[3] {
            "deny" => true,
            "allow" => false,
            other => {
                panic!("conformance.md: portcullis column must be allow or deny, got {other:?}")
            }
        };
        rows.insert(
            (
                cells[0].to_owned(),
                cells[1].to_owned(),
                cells[2].to_owned(),
            ),
            fails,
        );
    }
    rows
}

#[tokio::test]
async fn peer_suites_match_or_differ_only_as_documented() {
    let documented = documented_differences();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    let mut total = 0;
    let runs = [Settings::Mirror, Settings::Default]
        .into_iter()
        .flat_map(|s| SUITES.iter().map(move |suite| (s, suite)))
        .filter(|(s, suite)| *s == Settings::Mirror || suite.compare_default);
    for (settings, suite) in runs {
        let app = app(policy_for(suite, settings));
        let dir = data().join("conformance").join(suite.name);
        let cases = (suite.cases)(&dir);
        assert!(
            cases.iter().any(|c| c.peer_fails) && cases.iter().any(|c| !c.peer_fails),
            "{}: the suite needs passing and failing cases, found {}",
            suite.name,
            cases.len()
        );
        let (count, peer_failing) = (cases.len(), cases.iter().filter(|c| c.peer_fails).count());
        let mut denied = 0;
        for case in cases {
            total += 1;
            let response = answer(&app, "/validate", &create(&case.object)).await;
            let we_fail = response["allowed"] == false;
            denied += usize::from(we_fail);
            let label = (settings.as_str(), suite.name, case.label.as_str());
            // Exact rows first, then rows whose case is a glob (`*` matches any text).
            let row = documented
                .keys()
                .filter(|(s, su, pattern)| s == label.0 && su == label.1 && glob(pattern, label.2))
                .min_by_key(|(_, _, pattern)| pattern.contains('*'))
                .cloned();
            let key = match row {
                Some(row) if row.2.contains('*') && we_fail == case.peer_fails => continue,
                Some(row) => row,
                None => (label.0.to_owned(), label.1.to_owned(), label.2.to_owned()),
            };
            match documented.get(&key) {
                Some(&ours) => {
                    seen.insert(key.clone());
                    if we_fail == case.peer_fails {
                        problems.push(format!(
                            "{key:?}: documented as a difference but now agrees"
                        ));
                    } else if ours != we_fail {
                        problems.push(format!(
                            "{key:?}: table says portcullis {}",
                            if ours { "denies" } else { "allows" }
                        ));
                    }
                }
                None if we_fail != case.peer_fails => problems.push(format!(
                    "| `{}` | `{}` | `{}` | {} | {} | {}",
                    key.0,
                    key.1,
                    key.2,
                    if we_fail { "deny" } else { "allow" },
                    if case.peer_fails { "fail" } else { "pass" },
                    response["status"]["message"].as_str().unwrap_or("")
                )),
                None => {}
            }
        }
        eprintln!(
            "{:8} {:55} {count:3} cases, peer fails {peer_failing:3}, portcullis denies {denied:3}",
            settings.as_str(),
            suite.name
        );
    }
    for key in documented.keys().filter(|k| !seen.contains(*k)) {
        problems.push(format!("conformance.md row matches no case: {key:?}"));
    }
    assert_eq!(total, 2399, "peer cases run");
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
