//! The webhook registrations in `deploy/`: typed as the apiserver reads them (no field that the
//! typed structs would drop), and registering exactly what portcullis judges.

mod common;

use common::*;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhookConfiguration,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

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
    let docs = yaml_docs(&repo().join("deploy/webhooks.yaml"));
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
