//! The monitoring component (deploy/components/monitoring): its alert rules pass `promtool check
//! rules`, every alert fires on synthetic series and stays quiet on others (`promtool test
//! rules`), every alert says what to do, and every metric the rules and the dashboard read is
//! one the server really exports.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use portcullis::http::AppState;
use portcullis::policy::{self, PolicySet};
use serde_json::{Value, json};

fn component() -> PathBuf {
    repo().join("deploy/components/monitoring")
}

fn rule_groups() -> Value {
    let [rule] = yaml_docs(&component().join("prometheusrule.yaml"))
        .try_into()
        .expect("one PrometheusRule");
    assert_eq!(rule["kind"], "PrometheusRule");
    rule["spec"].clone()
}

/// Every alerting rule, by name.
fn alerts() -> Vec<Value> {
    rule_groups()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

fn dashboard() -> Value {
    read_json(&component().join("portcullis.json"))
}

/// The metric names an expression reads: every identifier that starts like one of ours, and
/// Prometheus's own `up`.
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if token.starts_with("portcullis_") || token == "up" {
            out.insert(token.to_owned());
        }
    }
}

/// The series names the server exposes, from the `# TYPE` lines of /metrics after a denial,
/// an exemption and a shadow disagreement (a family shows once it has a sample).
async fn exported() -> BTreeSet<String> {
    let default = std::fs::read_to_string(repo().join("policies/default.yaml")).unwrap();
    let exempting = default.replace(
        "  mutation:",
        "  exemptions:\n  - {name: bare, checks: [liveness-probe], names: [bare], reason: r, owner: o, expires: 2099-01-01}\n  mutation:",
    );
    // And a CEL rule whose expression fails on the pod under failurePolicy: Ignore.
    let cel = tempfile::tempdir().unwrap();
    std::fs::write(cel.path().join("default.yaml"), &exempting).unwrap();
    std::fs::write(
        cel.path().join("erring.yaml"),
        "apiVersion: policies.kyverno.io/v1alpha1
kind: ValidatingPolicy
metadata: {name: erring}
spec:
  failurePolicy: Ignore
  matchConstraints:
    resourceRules:
    - {apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [pods]}
  validations:
  - expression: object.spec.hostNetwork == false
",
    )
    .unwrap();
    let live = policy::load_dir(cel.path()).unwrap();
    let candidate = PolicySet {
        policies: vec![
            policy::parse(
                "candidate.yaml",
                &default.replace("mode: enforce", "mode: audit"),
            )
            .unwrap(),
        ],
        ..PolicySet::default()
    };
    let state = AppState::new(live).with_candidate(candidate);
    state
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    state
        .metrics
        .set_exemptions(&state.policies.current(), portcullis::policy::Date::today());
    let webhook = portcullis::http::router(state.clone(), std::time::Duration::from_secs(4));
    let denied = answer(
        &webhook,
        "/validate",
        &read_json(&apiserver_fixtures().join("create-pod-2.json")),
    )
    .await;
    assert_eq!(denied["allowed"], false);
    let app = portcullis::http::metrics_router(state);
    let request = axum::http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(app, request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_read_is_exported() {
    let mut used = BTreeSet::new();
    for alert in alerts() {
        metric_names(alert["expr"].as_str().unwrap(), &mut used);
    }
    let panels = dashboard()["panels"].as_array().unwrap().clone();
    assert_eq!(panels.len(), 12, "dashboard panels");
    for panel in &panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            metric_names(target["expr"].as_str().unwrap(), &mut used);
        }
    }
    let mut exported = exported().await;
    // Prometheus adds `up` for every scrape target.
    exported.insert("up".into());
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(unknown.is_empty(), "not exported: {unknown:?}");
    // And the dashboard shows every family portcullis exports.
    let unshown: Vec<&String> = exported
        .iter()
        .filter(|n| !n.ends_with("_sum") && !n.ends_with("_count"))
        .filter(|n| !used.contains(*n))
        .collect();
    assert!(unshown.is_empty(), "exported but not shown: {unshown:?}");
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_runbook_line() {
    let alerts = alerts();
    assert_eq!(alerts.len(), 10, "alerts");
    for alert in &alerts {
        let name = alert["alert"].as_str().unwrap();
        assert!(
            ["critical", "warning", "info"]
                .contains(&alert["labels"]["severity"].as_str().unwrap()),
            "{name}"
        );
        for field in ["summary", "runbook"] {
            let text = alert["annotations"][field].as_str().unwrap_or("");
            assert!(text.len() > 20, "{name}: {field} {text:?}");
        }
    }
}

/// The `promtool test rules` file: for each alert, its firing case (with the alert's own
/// labels and annotations expected) and its quiet case (nothing expected).
fn promtool_tests(rules_file: &str) -> Value {
    let cases: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/monitoring/alerts.yaml")).unwrap(),
    )
    .unwrap();
    let alerts = alerts();
    let named: BTreeSet<&str> = alerts
        .iter()
        .map(|a| a["alert"].as_str().unwrap())
        .collect();
    let cased: BTreeSet<&str> = cases
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        named, cased,
        "every alert has cases, and every case an alert"
    );
    let series = |case: &Value| -> Vec<Value> {
        case["series"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(s, values)| json!({"series": s, "values": values}))
            .collect()
    };
    let mut tests = Vec::new();
    for alert in &alerts {
        let name = alert["alert"].as_str().unwrap();
        let case = &cases[name];
        let mut labels = case["firing"]["labels"].clone();
        for (k, v) in alert["labels"].as_object().unwrap() {
            labels[k] = v.clone();
        }
        tests.push(json!({
            "name": format!("{name} fires"),
            "interval": "1m",
            "input_series": series(&case["firing"]),
            "alert_rule_test": [{
                "eval_time": case["firing"]["eval"],
                "alertname": name,
                "exp_alerts": [{"exp_labels": labels, "exp_annotations": alert["annotations"]}],
            }],
        }));
        tests.push(json!({
            "name": format!("{name} stays quiet"),
            "interval": "1m",
            "input_series": series(&case["quiet"]),
            "alert_rule_test": [{
                "eval_time": case["quiet"]["eval"],
                "alertname": name,
                "exp_alerts": [],
            }],
        }));
    }
    json!({"rule_files": [rules_file], "evaluation_interval": "1m", "tests": tests})
}

fn promtool(dir: &Path, args: &[&str]) -> Option<std::process::Output> {
    match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => Some(out),
        Err(e) => {
            // Under CI a missing promtool is a failure: these tests exist to run it.
            assert!(
                std::env::var("CI").is_err(),
                "promtool is not installed ({e}); .ci/run installs Debian's prometheus package"
            );
            eprintln!("NOT RUN: promtool is not installed ({e})");
            None
        }
    }
}

#[test]
fn alert_rules_pass_promtool_and_every_alert_fires_and_stays_quiet() {
    let dir = tempfile::tempdir().unwrap();
    // PrometheusRule's spec is a Prometheus rules file; JSON is YAML.
    std::fs::write(dir.path().join("rules.yaml"), rule_groups().to_string()).unwrap();
    std::fs::write(
        dir.path().join("tests.yaml"),
        promtool_tests("rules.yaml").to_string(),
    )
    .unwrap();
    let Some(check) = promtool(dir.path(), &["check", "rules", "rules.yaml"]) else {
        return;
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("SUCCESS: 10 rules found"),
        "{}",
        text(&check)
    );
    let test = promtool(dir.path(), &["test", "rules", "tests.yaml"]).unwrap();
    assert!(test.status.success(), "{}", text(&test));
}

#[test]
fn the_dashboard_ships_in_a_configmap_the_grafana_sidecar_picks_up() {
    let kustomization = std::fs::read_to_string(component().join("kustomization.yaml")).unwrap();
    let [k]: [Value; 1] = serde_saphyr::from_multiple::<Value>(&kustomization)
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(k["kind"], "Component");
    let generator = &k["configMapGenerator"][0];
    assert_eq!(generator["files"], json!(["portcullis.json"]));
    assert_eq!(generator["options"]["labels"]["grafana_dashboard"], "1");
    let resources: Vec<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for resource in &resources {
        assert!(component().join(resource).is_file(), "{resource}");
    }
    // The ServiceMonitor selects the webhook's Service and the report writer's, on the port
    // each serves /metrics on.
    let [monitor] = yaml_docs(&component().join("servicemonitor.yaml"))
        .try_into()
        .unwrap();
    let selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
        serde_json::from_value(monitor["spec"]["selector"].clone()).unwrap();
    let webhook = yaml_docs(&repo().join("deploy/base/service.yaml")).remove(0);
    let writer = yaml_docs(&repo().join("deploy/components/reports/deployment.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "Service")
        .unwrap();
    let port = monitor["spec"]["endpoints"][0]["port"].as_str().unwrap();
    for service in [webhook, writer] {
        let labels = serde_json::from_value(service["metadata"]["labels"].clone()).unwrap();
        assert!(
            portcullis::admission::selects(&selector, &labels),
            "{}",
            service["metadata"]["name"]
        );
        assert!(
            service["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == port),
            "{port}"
        );
    }
    assert_eq!(dashboard()["uid"], "portcullis");
}
