//! Policy files: the shipped ones load, the documented examples parse, and every broken file
//! is refused at load with the file and the field named.

mod common;

use std::path::Path;

use common::*;
use portcullis::policy::{self, Mode, PolicyError, PolicySet};

const HEADER: &str = "apiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {name: p}\n";

fn load(files: &[(&str, &str)]) -> Result<PolicySet, PolicyError> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    policy::load_dir(dir.path())
}

fn error(files: &[(&str, &str)]) -> String {
    load(files).expect_err("must be refused").to_string()
}

#[test]
fn the_shipped_policy_directory_is_the_embedded_default() {
    let set = policy::load_dir(&repo().join("policies")).unwrap();
    assert_eq!(
        set.policies.len(),
        1,
        "profiles/ below policies/ must not be loaded by default"
    );
    let from_dir = &set.policies[0].spec;
    let embedded = PolicySet::embedded();
    assert_eq!(
        format!("{from_dir:?}"),
        format!("{:?}", embedded.policies[0].spec)
    );
    let checks = &from_dir.checks;
    assert_eq!(checks.run_as_non_root.as_ref().unwrap().mode, Mode::Enforce);
    assert_eq!(checks.liveness_probe.as_ref().unwrap().mode, Mode::Enforce);
    assert_eq!(checks.readiness_probe.as_ref().unwrap().mode, Mode::Enforce);
    assert_eq!(checks.resource_limits.as_ref().unwrap().mode, Mode::Enforce);
    assert!(embedded.mutation().is_some());
}

#[test]
fn every_yaml_example_in_the_policy_readme_loads() {
    // All together, as one directory: portcullis policies, CEL rules, a VAP with its binding,
    // and the policy that adopts it.
    let readme = std::fs::read_to_string(repo().join("policies/README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut examples = 0;
    for block in readme.split("```yaml").skip(1) {
        let text = block.split("```").next().unwrap();
        examples += 1;
        std::fs::write(dir.path().join(format!("example-{examples}.yaml")), text).unwrap();
    }
    assert_eq!(examples, 7, "the README's policy examples");
    let set = policy::load_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = set.policies.iter().map(|p| &*p.name).collect();
    assert_eq!(
        names,
        [
            "default",
            "probes-rollout",
            "kyverno-semantics",
            "images",
            "team-label-rollout",
            "replicalimit-policy.example.com"
        ]
    );
}

#[test]
fn errors_name_the_file_and_the_field() {
    let cases: &[(&str, &[&str])] = &[
        (
            "spec:\n  checks:\n    run-as-nonroot: {mode: enforce}\n",
            &["unknown field `run-as-nonroot`", "line 6"],
        ),
        (
            "spec:\n  checks:\n    liveness-probe: {mode: enforced}\n",
            &["unknown variant `enforced`", "warn"],
        ),
        (
            "spec:\n  checks:\n    resource-limits: {limitz: [cpu]}\n",
            &["unknown field `limitz`"],
        ),
        (
            "spec:\n  checks:\n    resource-limits: {limits: [gpu]}\n",
            &["unknown variant `gpu`"],
        ),
        (
            "spec:\n  checks:\n    resource-limits: {limits: [], requests: []}\n",
            &["spec.checks.resource-limits", "both empty"],
        ),
        (
            "spec:\n  checks:\n    liveness-probe: {satisfiedBy: []}\n",
            &["spec.checks.liveness-probe.satisfiedBy"],
        ),
        (
            "spec:\n  exemptNamespaces: [Kube_System]\n",
            &["spec.exemptNamespaces[0]", "Kube_System"],
        ),
        (
            "spec:\n  mutation:\n    resources:\n      cpu: {request: 1, limit: 500m}\n",
            &[
                "spec.mutation.resources.cpu",
                "request 1 is above limit 500m",
            ],
        ),
        (
            "spec:\n  mutation:\n    resources:\n      memory: {request: 12 MB, limit: 1Gi}\n",
            &["not a Kubernetes quantity"],
        ),
        (
            "spec:\n  mutation:\n    targets: []\n",
            &["spec.mutation.targets"],
        ),
        (
            "spec:\n  mutation:\n    targets: [deployments]\n",
            &["unknown variant `deployments`"],
        ),
        ("spec:\n  checks: []\n", &["line 5"]),
    ];
    for (spec, expected) in cases {
        let message = error(&[("team.yaml", &format!("{HEADER}{spec}"))]);
        assert!(message.contains("team.yaml"), "file not named: {message}");
        for e in *expected {
            assert!(message.contains(e), "{spec:?}: {message:?} lacks {e:?}");
        }
    }
    let wrong_version = error(&[(
        "v.yaml",
        "apiVersion: portcullis.dev/v2\nkind: Policy\nmetadata: {name: p}\nspec: {}\n",
    )]);
    assert!(
        wrong_version.contains("v.yaml") && wrong_version.contains("portcullis.dev/v2"),
        "{wrong_version}"
    );
    let no_name = error(&[(
        "n.yaml",
        "apiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {name: ' '}\nspec: {}\n",
    )]);
    assert!(no_name.contains("metadata.name"), "{no_name}");
}

#[test]
fn rules_across_files_are_enforced() {
    let a = format!("{HEADER}spec:\n  mutation: {{}}\n");
    let b = a.replace("name: p", "name: q");
    let message = error(&[("a.yaml", &a), ("b.yaml", &b)]);
    assert!(
        message.contains("b.yaml")
            && message.contains("only one policy may set mutation")
            && message.contains("a.yaml"),
        "{message}"
    );
    let dup = error(&[
        ("a.yaml", &format!("{HEADER}spec: {{}}\n")),
        ("b.yaml", &format!("{HEADER}spec: {{}}\n")),
    ]);
    assert!(
        dup.contains("b.yaml: metadata.name") && dup.contains("already used by"),
        "{dup}"
    );
    let empty = error(&[("README.md", "# not a policy")]);
    assert!(empty.contains("no policy files"), "{empty}");
}

#[test]
fn omitted_fields_take_documented_defaults() {
    let set = load(&[("p.yaml", &format!("{HEADER}spec:\n  checks:\n    run-as-non-root: {{}}\n    liveness-probe: {{}}\n  mutation: {{}}\n"))]).unwrap();
    let p = &set.policies[0];
    assert_eq!(
        p.spec.exempt_namespaces,
        ["kube-system", "kube-public", "kube-node-lease"]
    );
    let probe = p.spec.checks.liveness_probe.as_ref().unwrap();
    assert_eq!(probe.mode, Mode::Enforce);
    assert!(probe.satisfied_by.is_none());
    assert!(
        p.spec
            .checks
            .run_as_non_root
            .as_ref()
            .unwrap()
            .accept_non_zero_run_as_user
    );
    assert!(
        p.spec.checks.readiness_probe.is_none(),
        "an omitted check is off"
    );
    let (_, m) = set.mutation().unwrap();
    assert!(m.run_as_non_root && m.seccomp_runtime_default && m.drop_all_capabilities);
    assert!(
        m.resources.cpu.is_none(),
        "no resource defaults unless configured"
    );
}

/// A ConfigMap volume: real files under a timestamped dot-directory, reached through `..data`
/// and top-level symlinks, which kubelet swaps atomically on update.
#[cfg(unix)]
#[test]
fn a_mounted_configmap_layout_loads_once() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("..2026_11_22_10_00_00.123");
    std::fs::create_dir(&real).unwrap();
    std::fs::copy(
        repo().join("policies/default.yaml"),
        real.join("default.yaml"),
    )
    .unwrap();
    mount_volume(dir.path(), "..2026_11_22_10_00_00.123", &["default.yaml"]);
    let set = policy::load_dir(dir.path()).unwrap();
    assert_eq!(set.policies.len(), 1);
    assert!(set.policies[0].source.ends_with("default.yaml"));
}

#[test]
fn a_missing_directory_is_an_error() {
    let err = policy::load_dir(Path::new("/nonexistent/policies")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/policies"));
}
