//! `portcullis webhook-rules`: the `rules` of the ValidatingWebhookConfiguration that sends the
//! apiserver's requests for everything the loaded policies judge. The built-in checks need
//! pods (with the subresources that change what runs) and pod controllers; a CEL rule needs
//! the resources its `matchConstraints` name, and the pod controllers its autogen covers.
//! Printed as JSON, which is YAML, to go under `webhooks[0].rules`.

use std::io::Write;

use serde_json::{Value, json};

use crate::cli::WebhookRulesArgs;
use crate::offline::{self, OfflineError};
use crate::policy::PolicySet;

/// The rules the built-in checks need, as deploy/base/webhooks.yaml registers them.
fn check_rules() -> Vec<Value> {
    let rule = |group: &str, resources: &[&str]| {
        json!({"apiGroups": [group], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
               "resources": resources, "scope": "Namespaced"})
    };
    vec![
        rule(
            "",
            &[
                "pods",
                "pods/ephemeralcontainers",
                "pods/resize",
                "replicationcontrollers",
            ],
        ),
        rule(
            "apps",
            &["deployments", "statefulsets", "daemonsets", "replicasets"],
        ),
        rule("batch", &["jobs", "cronjobs"]),
    ]
}

/// The group and resource of a pod controller kind.
fn controller_resource(kind: &str) -> Option<(&'static str, String)> {
    let kind = crate::workload::WorkloadKind::from_kind(kind)?;
    Some((kind.group(), kind.resource()))
}

/// Every rule the set needs, without duplicates, in a stable order.
pub fn rules(set: &PolicySet) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut add = |rule: Value| {
        if !out.contains(&rule) {
            out.push(rule);
        }
    };
    if set
        .policies
        .iter()
        .any(|p| p.spec.checks.configured().next().is_some())
    {
        check_rules().into_iter().for_each(&mut add);
    }
    for rule in set.policies.iter().flat_map(|p| &p.cel) {
        let constraints = [Some(&rule.match_constraints), rule.binding_match.as_ref()];
        for resource_rule in constraints
            .into_iter()
            .flatten()
            .flat_map(|m| m.resource_rules.iter().flatten())
        {
            let operations = resource_rule.operations.clone().unwrap_or_default();
            add(json!({
                "apiGroups": resource_rule.api_groups,
                "apiVersions": resource_rule.api_versions,
                "operations": operations,
                "resources": resource_rule.resources,
                "scope": resource_rule.scope.clone().unwrap_or_else(|| "*".into()),
            }));
            let on_pods = resource_rule
                .resources
                .iter()
                .flatten()
                .any(|r| r == "pods" || r == "*");
            if on_pods {
                for (group, resource) in rule.autogen.iter().filter_map(|k| controller_resource(k))
                {
                    add(json!({
                        "apiGroups": [group], "apiVersions": ["v1"],
                        "operations": operations, "resources": [resource],
                        "scope": "Namespaced",
                    }));
                }
            }
        }
    }
    out
}

pub fn run(args: &WebhookRulesArgs) -> Result<(), OfflineError> {
    let set = offline::load_policies(args.policies.as_deref())?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &rules(&set)).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}
