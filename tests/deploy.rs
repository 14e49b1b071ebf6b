//! The manifests in `deploy/`: every resource typed as the apiserver reads it (no field the
//! typed structs would drop), the webhooks registering exactly what portcullis judges, the
//! rendered overlays (through `kubectl kustomize`) installing what they promise, and
//! portcullis's own Deployment passing portcullis's own checks.

mod common;

use common::*;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhookConfiguration,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Deserializes into the typed struct and back: anything the typed struct does not know (a
/// misspelt field) would vanish in the round trip and fail the comparison.
fn typed<T: DeserializeOwned + serde::Serialize>(doc: &Value) -> T {
    let typed: T = serde_json::from_value(doc.clone()).unwrap();
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        strip_empty(doc.clone()),
        strip_empty(back),
        "fields lost in the typed round trip"
    );
    typed
}

/// `caBundle: ""` and similar empty values serialize differently but mean the same.
fn strip_empty(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !(v.is_null() || v == "" || v == &Value::Array(vec![])))
                .map(|(k, v)| (k, strip_empty(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_empty).collect()),
        other => other,
    }
}

fn registered(rules: &[RuleWithOperations]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for rule in rules {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for op in rule.operations.iter().flatten() {
                    out.push((group.clone(), resource.clone(), op.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn webhook_configurations_are_typed_and_complete() {
    let docs = yaml_docs(&repo().join("deploy/base/webhooks.yaml"));
    let mutating: MutatingWebhookConfiguration = typed(&docs[0]);
    let validating: ValidatingWebhookConfiguration = typed(&docs[1]);

    let m = &mutating.webhooks.as_ref().unwrap()[0];
    let v = &validating.webhooks.as_ref().unwrap()[0];
    for (versions, side_effects, timeout, policy, match_policy, selector) in [
        (
            &m.admission_review_versions,
            &m.side_effects,
            m.timeout_seconds,
            &m.failure_policy,
            &m.match_policy,
            &m.namespace_selector,
        ),
        (
            &v.admission_review_versions,
            &v.side_effects,
            v.timeout_seconds,
            &v.failure_policy,
            &v.match_policy,
            &v.namespace_selector,
        ),
    ] {
        assert_eq!(versions, &["v1"]);
        assert_eq!(side_effects, "None");
        let timeout = timeout.unwrap();
        assert!(
            (5..=9).contains(&timeout),
            "timeoutSeconds {timeout}: above the server's 4s deadline, under 10"
        );
        assert!(policy.is_some(), "failurePolicy is chosen explicitly");
        assert_eq!(match_policy.as_deref(), Some("Equivalent"));
        let expr = &selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!(expr.key, "kubernetes.io/metadata.name");
        assert_eq!(expr.operator, "NotIn");
        for ns in ["kube-system", "portcullis"] {
            assert!(
                expr.values.as_ref().unwrap().iter().any(|v| v == ns),
                "{ns} must be excluded"
            );
        }
    }
    assert_eq!(m.reinvocation_policy.as_deref(), Some("IfNeeded"));
    // The validating webhook sees UPDATEs; a condition keeps spec-less ones from calling at all.
    // (The mutating one registers CREATE only, where no condition could cut a call.)
    let expression = &v
        .match_conditions
        .as_ref()
        .expect("matchConditions cut needless calls")[0]
        .expression;
    assert!(
        expression.contains("object.spec != oldObject.spec"),
        "{expression}"
    );
    assert_eq!(
        m.client_config.service.as_ref().unwrap().path.as_deref(),
        Some("/mutate")
    );
    assert_eq!(
        v.client_config.service.as_ref().unwrap().path.as_deref(),
        Some("/validate")
    );
    assert!(registered(m.rules.as_ref().unwrap()).contains(&(
        "".into(),
        "pods".into(),
        "CREATE".into()
    )));

    let rules = registered(v.rules.as_ref().unwrap());
    for (group, resource) in [
        ("", "pods"),
        ("", "pods/ephemeralcontainers"),
        ("", "pods/resize"),
        ("", "replicationcontrollers"),
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("apps", "replicasets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
    ] {
        for op in ["CREATE", "UPDATE"] {
            assert!(
                rules.contains(&(group.into(), resource.into(), op.into())),
                "{group}/{resource} {op} not registered"
            );
        }
    }
}

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use portcullis::policy::{self, PolicySet};

/// Types a manifest by its kind; kinds k8s-openapi does not know (cert-manager's) are returned
/// untyped for the caller to check.
fn type_manifest(doc: &Value) -> Option<&'static str> {
    let kind = doc["kind"].as_str().unwrap();
    match kind {
        "Namespace" => drop(typed::<Namespace>(doc)),
        "ServiceAccount" => drop(typed::<ServiceAccount>(doc)),
        "ClusterRole" => drop(typed::<ClusterRole>(doc)),
        "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(doc)),
        "PriorityClass" => drop(typed::<PriorityClass>(doc)),
        "Deployment" => drop(typed::<Deployment>(doc)),
        "Service" => drop(typed::<Service>(doc)),
        "PodDisruptionBudget" => drop(typed::<PodDisruptionBudget>(doc)),
        "ConfigMap" => drop(typed::<k8s_openapi::api::core::v1::ConfigMap>(doc)),
        "MutatingWebhookConfiguration" => drop(typed::<MutatingWebhookConfiguration>(doc)),
        "ValidatingWebhookConfiguration" => drop(typed::<ValidatingWebhookConfiguration>(doc)),
        "Issuer" | "Certificate" => {
            assert_eq!(doc["apiVersion"], "cert-manager.io/v1");
            return None;
        }
        other => panic!("unexpected kind {other} in deploy/"),
    }
    Some("typed")
}

#[test]
fn every_base_and_component_resource_is_typed() {
    for dir in [
        "deploy/base",
        "deploy/components/cert-manager",
        "deploy/components/reports",
    ] {
        let kustomization = &yaml_docs(&repo().join(dir).join("kustomization.yaml"))[0];
        for resource in kustomization["resources"].as_array().unwrap() {
            for doc in yaml_docs(&repo().join(dir).join(resource.as_str().unwrap())) {
                type_manifest(&doc);
            }
        }
    }
}

#[test]
fn the_only_permission_is_reading_namespaces() {
    let docs = yaml_docs(&repo().join("deploy/base/rbac.yaml"));
    let role: ClusterRole = typed(&docs[0]);
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].api_groups.as_deref(), Some(&[String::new()][..]));
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["namespaces".to_owned()][..])
    );
    assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
    let binding: ClusterRoleBinding = typed(&docs[1]);
    assert_eq!(binding.role_ref.name, "portcullis-namespace-reader");
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str()),
        ("ServiceAccount", "portcullis")
    );
}

#[test]
fn policies_in_deploy_stay_in_step_with_policies_dir() {
    let shipped = std::fs::read_to_string(repo().join("policies/default.yaml")).unwrap();
    let base = std::fs::read_to_string(repo().join("deploy/base/policies/default.yaml")).unwrap();
    assert_eq!(
        base, shipped,
        "deploy/base/policies/default.yaml must be a copy of policies/default.yaml"
    );
    let audit = yaml_docs(&repo().join("deploy/overlays/audit/policies/default.yaml")).remove(0);
    let as_audit = serde_json::from_str::<Value>(
        &serde_json::to_string(&yaml_docs(&repo().join("policies/default.yaml"))[0])
            .unwrap()
            .replace(r#""mode":"enforce""#, r#""mode":"audit""#),
    )
    .unwrap();
    assert_eq!(
        audit, as_audit,
        "the audit policy is the default policy with every mode audit"
    );
}

fn render(overlay: &str) -> Option<Vec<Value>> {
    render_dir(&format!("deploy/overlays/{overlay}"))
}

/// What kustomize renders for `dir`, relative to the repository.
fn render_dir(dir: &str) -> Option<Vec<Value>> {
    // kustomize itself, else the copy built into kubectl: .ci/run provides one of them.
    let renderers: [(&str, &[&str]); 2] = [("kustomize", &["build"]), ("kubectl", &["kustomize"])];
    for (program, args) in renderers {
        let Ok(out) = std::process::Command::new(program)
            .args(args)
            .arg(dir)
            .current_dir(repo())
            .output()
        else {
            continue;
        };
        assert!(
            out.status.success(),
            "{program} {} {dir}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(std::str::from_utf8(&out.stdout).unwrap()).unwrap();
        return Some(docs.into_iter().filter(|d| !d.is_null()).collect());
    }
    // Under CI a missing renderer is a failure: this test exists to render the overlays.
    assert!(
        std::env::var("CI").is_err(),
        "neither kustomize nor kubectl is installed, so the overlays cannot be rendered"
    );
    eprintln!("NOT RENDERED: neither kustomize nor kubectl is installed");
    None
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind)
}

#[tokio::test]
async fn rendered_overlays_install_what_they_promise() {
    for overlay in ["enforce", "audit", "audit-cert-manager"] {
        let Some(docs) = render(overlay) else { return };
        for doc in &docs {
            type_manifest(doc);
        }
        // portcullis's own Deployment passes portcullis's own checks, and the restricted profile.
        let deployment = find(&docs, "Deployment").expect("a Deployment");
        let restricted =
            policy::load_dir(&repo().join("policies/profiles/pss-restricted")).unwrap();
        for set in [PolicySet::embedded(), restricted] {
            let response = answer(&app(set), "/validate", &create(deployment)).await;
            assert_eq!(response["allowed"], true, "{overlay}: {response}");
        }
        let spec = &deployment["spec"]["template"]["spec"];
        assert!(deployment["spec"]["replicas"].as_i64().unwrap() >= 2);
        assert!(spec["topologySpreadConstraints"].is_array());
        assert!(spec["priorityClassName"].is_string());
        assert_eq!(
            spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
            true
        );
        assert!(find(&docs, "PodDisruptionBudget").is_some());

        // The namespaceSelector excludes the namespace portcullis runs in.
        let namespace: Namespace =
            serde_json::from_value(find(&docs, "Namespace").unwrap().clone()).unwrap();
        let mut labels = namespace.metadata.labels.clone().unwrap_or_default();
        labels.insert(
            "kubernetes.io/metadata.name".into(),
            namespace.metadata.name.clone().unwrap(),
        );
        let validating: ValidatingWebhookConfiguration = serde_json::from_value(
            find(&docs, "ValidatingWebhookConfiguration")
                .unwrap()
                .clone(),
        )
        .unwrap();
        let hook = &validating.webhooks.as_ref().unwrap()[0];
        assert!(
            !portcullis::admission::selects(hook.namespace_selector.as_ref().unwrap(), &labels),
            "{overlay}: portcullis's namespace is judged"
        );
        let mut team = std::collections::BTreeMap::new();
        team.insert(
            "kubernetes.io/metadata.name".to_owned(),
            "team-a".to_owned(),
        );
        assert!(
            portcullis::admission::selects(hook.namespace_selector.as_ref().unwrap(), &team),
            "an ordinary namespace is judged"
        );
        assert_eq!(
            hook.client_config.service.as_ref().unwrap().namespace,
            namespace.metadata.name.clone().unwrap()
        );

        // The policies ConfigMap holds a loadable policy in the promised modes.
        let config_map = find(&docs, "ConfigMap").unwrap();
        let text = config_map["data"]["default.yaml"].as_str().unwrap();
        let policy = policy::parse("rendered ConfigMap", text).unwrap();
        let mode = policy.spec.checks.run_as_non_root.as_ref().unwrap().mode;
        let audit = overlay.starts_with("audit");
        assert_eq!(
            mode.as_str(),
            if audit { "audit" } else { "enforce" },
            "{overlay}"
        );
        assert_eq!(
            find(&docs, "MutatingWebhookConfiguration").is_some(),
            !audit,
            "{overlay}: mutation only when enforcing"
        );
        assert_eq!(
            hook.failure_policy.as_deref(),
            Some(if audit { "Ignore" } else { "Fail" }),
            "{overlay}"
        );
        if overlay == "audit-cert-manager" {
            assert!(find(&docs, "Certificate").is_some() && find(&docs, "Issuer").is_some());
            assert_eq!(
                validating.metadata.annotations.as_ref().unwrap()["cert-manager.io/inject-ca-from"],
                "portcullis/portcullis"
            );
        }
    }
}

#[test]
fn the_report_writer_may_read_what_it_judges_and_write_reports_nothing_more() {
    use portcullis::workload::WorkloadKind;
    let docs = yaml_docs(&repo().join("deploy/components/reports/rbac.yaml"));
    let role: ClusterRole = typed(&docs[1]);
    let mut granted: Vec<(String, String, Vec<String>)> = Vec::new();
    for rule in role.rules.unwrap() {
        for group in rule.api_groups.unwrap() {
            for resource in rule.resources.clone().unwrap() {
                granted.push((group.clone(), resource, rule.verbs.clone()));
            }
        }
    }
    granted.sort();
    let read = || vec!["list".to_owned(), "watch".to_owned()];
    let mut expected: Vec<(String, String, Vec<String>)> = WorkloadKind::ALL
        .iter()
        .map(|k| (k.group().to_owned(), k.resource(), read()))
        .chain([(String::new(), "namespaces".to_owned(), read())])
        .chain(["policyreports", "clusterpolicyreports"].map(|r| {
            let write = ["list", "create", "update", "delete"]
                .map(String::from)
                .to_vec();
            ("wgpolicyk8s.io".to_owned(), r.to_owned(), write)
        }))
        .collect();
    expected.sort();
    assert_eq!(granted, expected);
    let binding: ClusterRoleBinding = typed(&docs[2]);
    assert_eq!(binding.subjects.unwrap()[0].name, "portcullis-reports");
}

#[tokio::test]
async fn the_reports_component_runs_one_writer_with_the_webhooks_policies() {
    // An overlay of the audit install with the component, inside the repository: kustomize
    // takes relative paths only.
    let overlay = tempfile::Builder::new()
        .prefix(".render-")
        .tempdir_in(repo())
        .unwrap();
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources: [../deploy/overlays/audit]\ncomponents: [../deploy/components/reports]\n",
    )
    .unwrap();
    let name = overlay.path().file_name().unwrap().to_str().unwrap();
    let Some(docs) = render_dir(name) else { return };
    for doc in &docs {
        type_manifest(doc);
    }
    let deployments: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();
    let writer = deployments
        .iter()
        .find(|d| d["metadata"]["name"] == "portcullis-reports")
        .expect("the reports Deployment");
    let webhook = deployments
        .iter()
        .find(|d| d["metadata"]["name"] == "portcullis")
        .unwrap();
    assert_eq!(writer["spec"]["replicas"], 1);
    assert_eq!(writer["spec"]["strategy"]["type"], "Recreate");
    let spec = &writer["spec"]["template"]["spec"];
    assert_eq!(spec["containers"][0]["args"][0], "reports");
    assert_eq!(spec["serviceAccountName"], "portcullis-reports");
    // The same (hashed) policies ConfigMap as the webhook's.
    let config_map =
        |d: &Value| d["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"].clone();
    assert_eq!(config_map(writer), config_map(webhook));
    // Its own pod passes portcullis's checks, and the restricted profile.
    let restricted = policy::load_dir(&repo().join("policies/profiles/pss-restricted")).unwrap();
    for set in [PolicySet::embedded(), restricted] {
        let response = answer(&app(set), "/validate", &create(writer)).await;
        assert_eq!(response["allowed"], true, "{response}");
    }
    // The binary takes the arguments the Deployment gives it.
    let args: Vec<String> = spec["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let parsed = <portcullis::cli::Cli as clap::Parser>::try_parse_from(
        std::iter::once("portcullis".to_owned()).chain(args),
    );
    assert!(parsed.is_ok(), "{parsed:?}");
}

const CHART: &str = "deploy/helm/portcullis";

/// `helm template` of the chart with `args`.
fn helm_template(helm: &std::path::Path, args: &[&str]) -> Vec<Value> {
    // The cluster version the tests' control plane runs; helm built by `go install` would
    // otherwise assume v1.20.
    let mut all = vec!["template", "portcullis", CHART, "--kube-version", "1.36.0"];
    all.extend_from_slice(args);
    let out = run_helm(helm, &all, None);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// Objects by kind, namespace and name, with what legitimately differs between the two
/// renderers taken out: kustomize's name hash on the policies ConfigMap, Helm's checksum
/// annotation that rolls the pods instead, and the text (not the meaning) of ConfigMap data.
fn normalized(docs: Vec<Value>) -> BTreeMap<(String, String, String), Value> {
    let hashed = |name: &str| -> String {
        match name.rsplit_once('-') {
            Some((base, hash)) if base == "portcullis-policies" && hash.len() == 10 => {
                base.to_owned()
            }
            _ => name.to_owned(),
        }
    };
    docs.into_iter()
        .map(|mut doc| {
            let name = hashed(doc["metadata"]["name"].as_str().unwrap());
            doc["metadata"]["name"] = json!(name);
            if doc["kind"] == "ConfigMap" {
                let data = doc["data"].as_object_mut().unwrap();
                for value in data.values_mut() {
                    let text = value.as_str().unwrap().to_owned();
                    *value = serde_saphyr::from_str::<Value>(&text).unwrap();
                }
            }
            if doc["kind"] == "Deployment" {
                let template = &mut doc["spec"]["template"];
                if let Some(annotations) = template
                    .pointer_mut("/metadata/annotations")
                    .and_then(Value::as_object_mut)
                {
                    annotations.remove("checksum/policies");
                    if annotations.is_empty() {
                        template["metadata"]
                            .as_object_mut()
                            .unwrap()
                            .remove("annotations");
                    }
                }
                for volume in template["spec"]["volumes"].as_array_mut().unwrap() {
                    if let Some(config_map) = volume["configMap"]["name"].as_str() {
                        volume["configMap"]["name"] = json!(hashed(config_map));
                    }
                }
            }
            let key = (
                doc["kind"].as_str().unwrap().to_owned(),
                doc["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                name,
            );
            (key, doc)
        })
        .collect()
}

#[test]
fn the_helm_chart_lints_and_renders_what_kustomize_renders() {
    let Some(helm) = helm() else { return };
    for values in [
        &[][..],
        &["-f", "deploy/helm/portcullis/values-enforce.yaml"][..],
    ] {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend_from_slice(values);
        run_helm(&helm, &args, None);
    }
    // (helm values, what kustomize renders the same install from)
    let overlay_with = |dir: &tempfile::TempDir, resources: &str, components: &str| {
        std::fs::write(
            dir.path().join("kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                 resources: [{resources}]\ncomponents: [{components}]\n"
            ),
        )
        .unwrap();
        dir.path().file_name().unwrap().to_str().unwrap().to_owned()
    };
    let extras = tempfile::Builder::new()
        .prefix(".render-")
        .tempdir_in(repo())
        .unwrap();
    let everything = overlay_with(
        &extras,
        "../deploy/overlays/enforce",
        "../deploy/components/monitoring, ../deploy/components/reports",
    );
    let cases: [(&[&str], String); 5] = [
        (&[], "deploy/overlays/audit".into()),
        (
            &["-f", "deploy/helm/portcullis/values-audit.yaml"],
            "deploy/overlays/audit".into(),
        ),
        (
            &["-f", "deploy/helm/portcullis/values-enforce.yaml"],
            "deploy/overlays/enforce".into(),
        ),
        (
            &["--set", "certificates.source=cert-manager"],
            "deploy/overlays/audit-cert-manager".into(),
        ),
        (
            &[
                "-f",
                "deploy/helm/portcullis/values-enforce.yaml",
                "--set",
                "monitoring.enabled=true,reports.enabled=true",
            ],
            everything,
        ),
    ];
    for (values, overlay) in cases {
        let Some(kustomized) = render_dir(&overlay) else {
            return;
        };
        let (helm, kustomize) = (
            normalized(helm_template(&helm, values)),
            normalized(kustomized),
        );
        let keys =
            |m: &BTreeMap<(String, String, String), Value>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            keys(&helm),
            keys(&kustomize),
            "{values:?} vs {overlay}: the objects"
        );
        for (key, object) in &kustomize {
            assert_eq!(&helm[key], object, "{values:?} vs {overlay}: {key:?}");
        }
    }
}

#[test]
fn the_charts_copies_stay_in_step_with_deploy() {
    for (chart, source) in [
        ("files/default.yaml", "policies/default.yaml"),
        (
            "files/prometheusrule.yaml",
            "deploy/components/monitoring/prometheusrule.yaml",
        ),
        (
            "files/portcullis.json",
            "deploy/components/monitoring/portcullis.json",
        ),
    ] {
        let copy = std::fs::read_to_string(repo().join(CHART).join(chart)).unwrap();
        let original = std::fs::read_to_string(repo().join(source)).unwrap();
        assert_eq!(copy, original, "{CHART}/{chart} must be a copy of {source}");
    }
}
