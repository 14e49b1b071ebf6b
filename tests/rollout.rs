//! Staged rollout through the router: modes, per-namespace rules, namespace labels from a
//! namespace cache the test feeds (kube-rs's own reflector store, no API server), schedules
//! under an injected clock, exemptions and their expiry, and shadow evaluation.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use common::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::{ObjectMeta, PartialObjectMeta};
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use portcullis::http::{AppState, router};
use portcullis::namespaces::NamespaceCache;
use portcullis::policy::{self, Date, PolicySet};
use serde_json::{Value, json};

/// A pod (image `nginx`) with probes and limits but no proof of running as non-root: it
/// violates run-as-non-root and nothing else under the policies below.
fn pod(name: &str) -> Value {
    let mut pod =
        read_json(&apiserver_fixtures().join("create-pod-2.json"))["request"]["object"].clone();
    pod["metadata"]["name"] = json!(name);
    let c = &mut pod["spec"]["containers"][0];
    c["livenessProbe"] = json!({"tcpSocket": {"port": 80}});
    c["readinessProbe"] = json!({"tcpSocket": {"port": 80}});
    c["resources"] = json!({"limits": {"cpu": "1", "memory": "1Gi"}});
    pod
}

fn set(yaml: &str) -> PolicySet {
    PolicySet {
        policies: vec![policy::parse("rollout.yaml", yaml).unwrap()],
        ..PolicySet::default()
    }
}

const CHECKS: &str = "
  checks:
    run-as-non-root: {mode: enforce, acceptNonZeroRunAsUser: true}
    liveness-probe: {mode: enforce}
";

fn policy(extra: &str) -> String {
    format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {{name: rollout}}\nspec:{CHECKS}{extra}"
    )
}

struct Harness {
    app: Router,
    state: AppState,
}

fn harness(yaml: &str, today: &str, namespaces: NamespaceCache) -> Harness {
    let today = Date::parse(today).unwrap();
    let state = AppState::new(set(yaml))
        .with_clock(Arc::new(move || today))
        .with_namespaces(namespaces);
    state.ready.store(true, Ordering::Release);
    Harness {
        app: router(state.clone(), Duration::from_secs(4)),
        state,
    }
}

impl Harness {
    async fn create(&self, namespace: &str, object: &Value) -> Value {
        answer(
            &self.app,
            "/validate",
            &review("CREATE", namespace, Some(object), None),
        )
        .await
    }

    fn metrics(&self) -> String {
        self.state.metrics.encode()
    }
}

/// A namespace cache holding `namespaces` (name, labels), synced as after a first list.
fn cache(namespaces: &[(&str, &[(&str, &str)])]) -> NamespaceCache {
    let mut writer: Writer<PartialObjectMeta<Namespace>> = Writer::default();
    let cache = NamespaceCache::new(&writer);
    writer.apply_watcher_event(&Event::Init);
    for (name, labels) in namespaces {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let meta = PartialObjectMeta::<Namespace> {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(labels),
                ..Default::default()
            },
            _phantom: Default::default(),
        };
        writer.apply_watcher_event(&Event::InitApply(meta));
    }
    writer.apply_watcher_event(&Event::InitDone);
    cache
}

fn warnings(response: &Value) -> Vec<String> {
    response["warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// The mode a response shows for run-as-non-root: denied, warned, audited, or nothing.
fn outcome(response: &Value) -> &'static str {
    let annotation = response["auditAnnotations"]["run-as-non-root"]
        .as_str()
        .unwrap_or("");
    if response["allowed"] == false {
        assert!(annotation.starts_with("enforce: "), "{response}");
        "enforce"
    } else if annotation.starts_with("warn: ") {
        assert_eq!(warnings(response).len(), 1, "{response}");
        "warn"
    } else if annotation.starts_with("audit: ") {
        assert!(response.get("warnings").is_none(), "{response}");
        "audit"
    } else if annotation.starts_with("exempt (") {
        "exempt"
    } else {
        assert!(response.get("auditAnnotations").is_none(), "{response}");
        "none"
    }
}

#[tokio::test]
async fn each_mode_means_the_same_thing() {
    for (mode, expected) in [
        ("enforce", "enforce"),
        ("warn", "warn"),
        ("audit", "audit"),
        ("off", "none"),
    ] {
        let yaml = policy(&format!(
            "  namespaceModes:\n  - {{names: [team-*], mode: {mode}}}\n"
        ));
        let h = harness(&yaml, "2026-11-22", NamespaceCache::disabled());
        let response = h.create("team-a", &pod("web")).await;
        assert_eq!(outcome(&response), expected, "{mode}: {response}");
        // Other namespaces keep the check's own mode.
        let other = h.create("shop", &pod("web")).await;
        assert_eq!(outcome(&other), "enforce", "{mode}: {other}");
    }
}

#[tokio::test]
async fn namespace_rules_match_by_name_glob_selector_and_per_check() {
    let yaml = policy(
        "  namespaceModes:
  - {names: [legacy-*], checks: {run-as-non-root: warn}}
  - selector: {matchLabels: {stage: canary}}
    mode: audit
  - selector: {matchExpressions: [{key: tier, operator: In, values: [gold]}]}
    names: [pay-*]
    mode: warn
",
    );
    let namespaces = cache(&[
        ("canary-1", &[("stage", "canary")]),
        ("pay-1", &[("tier", "gold")]),
        ("ops", &[("tier", "gold")]),
    ]);
    let h = harness(&yaml, "2026-11-22", namespaces);
    assert_eq!(outcome(&h.create("legacy-app", &pod("a")).await), "warn");
    assert_eq!(outcome(&h.create("canary-1", &pod("a")).await), "audit");
    assert_eq!(outcome(&h.create("pay-1", &pod("a")).await), "warn");
    // Name and selector must both match.
    assert_eq!(outcome(&h.create("ops", &pod("a")).await), "enforce");
    // A namespace the cache has not seen matches no selector: the policy's own mode.
    assert_eq!(outcome(&h.create("pay-2", &pod("a")).await), "enforce");
}

#[tokio::test]
async fn namespace_labels_set_modes_only_where_the_policy_allows() {
    let labelled = || {
        cache(&[
            ("team-a", &[("portcullis.dev/mode", "audit")]),
            (
                "team-b",
                &[
                    ("portcullis.dev/mode", "enforce"),
                    ("portcullis.dev/mode.run-as-non-root", "warn"),
                ],
            ),
            ("team-c", &[("portcullis.dev/mode", "bogus")]),
        ])
    };
    let h = harness(
        &policy("  namespaceLabels: true\n"),
        "2026-11-22",
        labelled(),
    );
    assert_eq!(outcome(&h.create("team-a", &pod("a")).await), "audit");
    // The per-check label wins over the policy-wide one.
    assert_eq!(outcome(&h.create("team-b", &pod("a")).await), "warn");
    // A value that is not a mode is ignored.
    assert_eq!(outcome(&h.create("team-c", &pod("a")).await), "enforce");

    // Without `namespaceLabels: true` the labels mean nothing.
    let h = harness(&policy(""), "2026-11-22", labelled());
    assert_eq!(outcome(&h.create("team-a", &pod("a")).await), "enforce");
}

#[tokio::test]
async fn before_the_namespace_cache_syncs_the_policy_modes_apply() {
    let mut writer: Writer<PartialObjectMeta<Namespace>> = Writer::default();
    let namespaces = NamespaceCache::new(&writer);
    let h = harness(
        &policy("  namespaceLabels: true\n"),
        "2026-11-22",
        namespaces.clone(),
    );
    // Listed but not yet complete: nothing is visible, nothing blocks.
    writer.apply_watcher_event(&Event::Init);
    let meta = PartialObjectMeta::<Namespace> {
        types: None,
        metadata: ObjectMeta {
            name: Some("team-a".into()),
            labels: Some([("portcullis.dev/mode".to_owned(), "audit".to_owned())].into()),
            ..Default::default()
        },
        _phantom: Default::default(),
    };
    writer.apply_watcher_event(&Event::InitApply(meta.clone()));
    assert_eq!(outcome(&h.create("team-a", &pod("a")).await), "enforce");
    writer.apply_watcher_event(&Event::InitDone);
    namespaces.synced().await;
    assert_eq!(outcome(&h.create("team-a", &pod("a")).await), "audit");
    // A watch update relabels the namespace for the next request.
    let mut relabelled = meta;
    relabelled.metadata.labels =
        Some([("portcullis.dev/mode".to_owned(), "warn".to_owned())].into());
    writer.apply_watcher_event(&Event::Apply(relabelled));
    assert_eq!(outcome(&h.create("team-a", &pod("a")).await), "warn");
}

const SCHEDULE: &str = "  schedule:
  - {mode: audit, until: 2026-12-01}
  - {mode: warn, until: 2027-01-15}
  - {mode: enforce}
";

#[tokio::test]
async fn a_schedule_escalates_with_the_clock_and_names_the_next_date() {
    let yaml = policy(SCHEDULE);
    for (today, expected) in [
        ("2026-11-30", "audit"),
        ("2026-12-01", "warn"),
        ("2027-01-14", "warn"),
        ("2027-01-15", "enforce"),
        ("2030-01-01", "enforce"),
    ] {
        let h = harness(&yaml, today, NamespaceCache::disabled());
        let response = h.create("team-a", &pod("a")).await;
        assert_eq!(outcome(&response), expected, "{today}: {response}");
        if expected == "warn" {
            let w = &warnings(&response)[0];
            assert!(w.ends_with("(enforced from 2027-01-15)"), "{w}");
            assert!(w.len() <= 120, "{} characters: {w}", w.len());
        }
    }
    // The schedule caps a check's mode; it never makes a warn check enforce.
    let capped = policy(SCHEDULE).replace(
        "run-as-non-root: {mode: enforce",
        "run-as-non-root: {mode: warn",
    );
    let h = harness(&capped, "2027-02-01", NamespaceCache::disabled());
    let response = h.create("team-a", &pod("a")).await;
    assert_eq!(outcome(&response), "warn");
    assert!(!warnings(&response)[0].contains("from 20"), "{response}");
    // A namespace rule replaces the schedule: an early adopter enforces now.
    let early = policy(&format!(
        "{SCHEDULE}  namespaceModes:\n  - {{names: [early], mode: enforce}}\n"
    ));
    let h = harness(&early, "2026-11-22", NamespaceCache::disabled());
    assert_eq!(outcome(&h.create("early", &pod("a")).await), "enforce");
    assert_eq!(outcome(&h.create("late", &pod("a")).await), "audit");
}

const EXEMPTIONS: &str = "  exemptionWarningDays: 14
  exemptions:
  - name: legacy-web
    checks: [run-as-non-root]
    namespaces: [legacy-*]
    names: [web-*]
    reason: image runs as root until the v2 rewrite
    owner: team-legacy
    expires: 2027-01-01
  - name: vendor-nginx
    checks: [run-as-non-root]
    images: [docker.io/library/nginx:1.*]
    reason: vendor image
    owner: platform
    expires: 2026-12-01
";

#[tokio::test]
async fn exemptions_match_namespace_name_and_normalised_image_until_they_expire() {
    let h = harness(
        &policy(EXEMPTIONS),
        "2026-11-01",
        NamespaceCache::disabled(),
    );
    // Namespace and name both match: exempt, recorded, no warning yet (61 days left).
    let response = h.create("legacy-shop", &pod("web-1")).await;
    assert_eq!(outcome(&response), "exempt", "{response}");
    let note = response["auditAnnotations"]["run-as-non-root"]
        .as_str()
        .unwrap();
    assert!(
        note.contains("legacy-web") && note.contains("team-legacy"),
        "{note}"
    );
    assert!(response.get("warnings").is_none(), "{response}");
    // Name does not match.
    assert_eq!(
        outcome(&h.create("legacy-shop", &pod("api")).await),
        "enforce"
    );
    // `nginx:1.27` normalises to docker.io/library/nginx:1.27; `nginx` alone is :latest.
    let mut tagged = pod("api");
    tagged["spec"]["containers"][0]["image"] = json!("nginx:1.27");
    assert_eq!(outcome(&h.create("shop", &tagged).await), "exempt");
    assert_eq!(outcome(&h.create("shop", &pod("api")).await), "enforce");

    // 13 days before expiry: still exempt, and the owner is warned.
    let h = harness(
        &policy(EXEMPTIONS),
        "2026-12-19",
        NamespaceCache::disabled(),
    );
    let response = h.create("legacy-shop", &pod("web-1")).await;
    assert_eq!(outcome(&response), "exempt");
    let w = warnings(&response);
    assert_eq!(w.len(), 1, "{response}");
    assert!(
        w[0].contains("legacy-web") && w[0].contains("expires 2027-01-01"),
        "{w:?}"
    );
    // Expired: enforced again, and the debt gauge no longer counts it.
    let h = harness(
        &policy(EXEMPTIONS),
        "2027-01-01",
        NamespaceCache::disabled(),
    );
    assert_eq!(
        outcome(&h.create("legacy-shop", &pod("web-1")).await),
        "enforce"
    );
}

#[tokio::test]
async fn annotation_exemptions_are_honoured_only_where_allowed_and_recorded() {
    let mut annotated = pod("web");
    annotated["metadata"]["annotations"] =
        json!({"portcullis.dev/exempt": "liveness-probe, run-as-non-root"});
    let allowed =
        policy("  annotationExemptions: {checks: [run-as-non-root], namespaces: [sandbox-*]}\n");
    let h = harness(&allowed, "2026-11-22", NamespaceCache::disabled());
    let response = h.create("sandbox-1", &annotated).await;
    assert_eq!(outcome(&response), "exempt", "{response}");
    assert!(
        response["auditAnnotations"]["run-as-non-root"]
            .as_str()
            .unwrap()
            .contains("portcullis.dev/exempt")
    );
    let metrics = h.metrics();
    assert!(
        metrics.contains(r#"portcullis_exemptions_applied_total{check="run-as-non-root",namespace="sandbox-1",source="annotation"} 1"#),
        "{metrics}"
    );
    // Outside the allowed namespaces, and under a policy without the setting, it is ignored.
    assert_eq!(outcome(&h.create("prod", &annotated).await), "enforce");
    let h = harness(&policy(""), "2026-11-22", NamespaceCache::disabled());
    assert_eq!(outcome(&h.create("sandbox-1", &annotated).await), "enforce");
}

#[tokio::test]
async fn exception_debt_is_a_metric_by_check_and_namespace() {
    let h = harness(
        &policy(EXEMPTIONS),
        "2026-11-01",
        NamespaceCache::disabled(),
    );
    // `serve` keeps the gauge in step with the set and the day; here each day is set directly.
    h.state.metrics.set_exemptions(
        &h.state.policies.current(),
        Date::parse("2026-11-01").unwrap(),
    );
    let text = h.metrics();
    for line in [
        r#"portcullis_exemptions_live{check="run-as-non-root",namespace="legacy-*",source="policy"} 1"#,
        r#"portcullis_exemptions_live{check="run-as-non-root",namespace="*",source="policy"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    h.state.metrics.set_exemptions(
        &h.state.policies.current(),
        Date::parse("2026-12-01").unwrap(),
    );
    let text = h.metrics();
    assert!(
        text.contains(r#"namespace="legacy-*",source="policy"} 1"#),
        "{text}"
    );
    assert!(
        !text.contains(r#"namespace="*",source="policy"}"#),
        "{text}"
    );
}

#[tokio::test]
async fn shadow_evaluation_counts_disagreements_and_never_changes_the_answer() {
    let current =
        policy("  namespaceModes:\n  - {names: [team-*], checks: {run-as-non-root: warn}}\n");
    let candidate = policy("");
    let today = Date::parse("2026-11-22").unwrap();
    let state = AppState::new(set(&current))
        .with_candidate(set(&candidate))
        .with_clock(Arc::new(move || today));
    state.ready.store(true, Ordering::Release);
    let app = router(state.clone(), Duration::from_secs(4));
    for name in ["a", "b"] {
        let response = answer(&app, "/validate", &create(&pod(name))).await;
        assert_eq!(
            outcome(&response),
            "warn",
            "the candidate must not decide: {response}"
        );
    }
    let reversed = AppState::new(set(&candidate)).with_candidate(set(&current));
    reversed.ready.store(true, Ordering::Release);
    let app2 = router(reversed.clone(), Duration::from_secs(4));
    let response = answer(&app2, "/validate", &create(&pod("c"))).await;
    assert_eq!(outcome(&response), "enforce");

    let text = state.metrics.encode();
    assert!(
        text.contains(r#"portcullis_shadow_disagreements_total{check="run-as-non-root",namespace="team-a",change="newly-denied"} 2"#),
        "{text}"
    );
    let text = reversed.metrics.encode();
    assert!(
        text.contains(r#"portcullis_shadow_disagreements_total{check="run-as-non-root",namespace="team-a",change="no-longer-denied"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn warnings_stay_short_and_within_the_apiservers_budget() {
    // Forty containers, every check in warn mode: many warnings, none long, total < 4 KiB.
    let mut many = pod("many");
    let container = many["spec"]["containers"][0].clone();
    let containers: Vec<Value> = (0..40)
        .map(|i| {
            let mut c = container.clone();
            c["name"] = json!(format!("container-with-a-rather-long-name-{i}"));
            c.as_object_mut().unwrap().remove("livenessProbe");
            c
        })
        .collect();
    many["spec"]["containers"] = json!(containers);
    let yaml = policy("  namespaceModes:\n  - {names: ['*'], mode: warn}\n");
    let h = harness(&yaml, "2026-11-22", NamespaceCache::disabled());
    let response = h.create("team-a", &many).await;
    assert_eq!(response["allowed"], true);
    let w = warnings(&response);
    assert_eq!(w.len(), 43, "{w:?}");
    assert!(w.iter().all(|w| w.len() <= 120), "{w:?}");
    let total: usize = w.iter().map(String::len).sum();
    assert!(total < 4096, "{total} bytes of warnings");
    assert!(w.last().unwrap().contains("more warnings"), "{w:?}");
}

#[tokio::test]
async fn a_denied_controller_gets_the_yaml_to_add_inside_its_pod_template() {
    let deployment =
        read_json(&apiserver_fixtures().join("create-deployment.json"))["request"]["object"]
            .clone();
    let response = answer(&default_app(), "/validate", &create(&deployment)).await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "fix: at spec.template.spec.containers[0] set:\n    livenessProbe:\n      httpGet:"
        ),
        "{message}"
    );
    // The snippet is YAML that, merged at that path, satisfies the check.
    let snippet: String = message
        .split("fix: at spec.template.spec.containers[0] set:\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", &l[4..]))
        .collect();
    let parsed: Value = serde_saphyr::from_str(&snippet).unwrap();
    assert!(parsed.is_object(), "{snippet}");
}

#[tokio::test]
async fn dry_run_requests_are_marked_in_metrics() {
    let h = harness(&policy(""), "2026-11-22", NamespaceCache::disabled());
    let mut r = review("CREATE", "team-a", Some(&pod("a")), None);
    r["request"]["dryRun"] = json!(true);
    let response = answer(&h.app, "/validate", &r).await;
    assert_eq!(outcome(&response), "enforce");
    let text = h.metrics();
    assert!(
        text.contains(r#"portcullis_violations_total{check="run-as-non-root",mode="enforce",namespace="team-a",dry_run="true"} 1"#),
        "{text}"
    );
}

#[test]
fn broken_rollout_settings_fail_with_file_and_field() {
    for (extra, field) in [
        (
            "  schedule:\n  - {mode: audit, until: 2027-01-01}\n  - {mode: warn, until: 2026-12-01}\n",
            "spec.schedule[1].until",
        ),
        (
            "  schedule:\n  - {mode: audit}\n  - {mode: warn, until: 2026-12-01}\n",
            "spec.schedule[0].until",
        ),
        (
            "  namespaceModes:\n  - {names: [a], checks: {resource-limits: warn}}\n",
            "spec.namespaceModes[0].checks",
        ),
        (
            "  namespaceModes:\n  - {mode: warn}\n",
            "spec.namespaceModes[0]",
        ),
        (
            "  namespaceModes:\n  - selector: {matchExpressions: [{key: a, operator: In}]}\n    mode: warn\n",
            "spec.namespaceModes[0].selector.matchExpressions[0].values",
        ),
        (
            "  exemptions:\n  - {name: x, checks: [run-as-non-root], reason: '', owner: me, expires: 2027-01-01}\n",
            "spec.exemptions[0].reason",
        ),
        (
            "  exemptions:\n  - {name: x, checks: [pss-privileged], reason: r, owner: me, expires: 2027-01-01}\n",
            "spec.exemptions[0].checks",
        ),
        (
            "  annotationExemptions: {checks: [readiness-probe]}\n",
            "spec.annotationExemptions.checks",
        ),
    ] {
        let err = policy::parse("rollout.yaml", &policy(extra))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("rollout.yaml: {field}: ")),
            "{extra}: {err}"
        );
    }
    for (extra, needle) in [
        (
            "  exemptions:\n  - {name: x, checks: [run-as-non-root], reason: r, owner: me, expires: next-week}\n",
            "not a date",
        ),
        (
            "  exemptions:\n  - {name: x, checks: [run-as-root], reason: r, owner: me, expires: 2027-01-01}\n",
            "spec.exemptions[0].checks: run-as-root is not a rule of this policy",
        ),
        (
            "  exemptions:\n  - {name: x, checks: [run-as-non-root], owner: me, expires: 2027-01-01}\n",
            "reason",
        ),
    ] {
        let err = policy::parse("rollout.yaml", &policy(extra))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("rollout.yaml: ") && err.contains(needle),
            "{extra}: {err}"
        );
    }
}

/// The apiserver prefixes each key with the webhook's name and rejects the whole response if
/// the result is not a qualified name, so every key must be a valid name part.
fn valid_key(key: &str) -> bool {
    let edge = |c: char| c.is_ascii_alphanumeric();
    !key.is_empty()
        && key.len() <= 63
        && key.starts_with(edge)
        && key.ends_with(edge)
        && key.chars().all(|c| edge(c) || "-_.".contains(c))
}

#[tokio::test]
async fn every_decision_but_a_plain_allow_is_recorded_under_valid_keys() {
    let yaml = policy(&format!(
        "{EXEMPTIONS}  namespaceModes:\n  - {{names: [w], mode: warn}}\n  - {{names: [a], mode: audit}}\n"
    ));
    let h = harness(&yaml, "2026-11-01", NamespaceCache::disabled());
    let mut unreadable = pod("broken");
    unreadable["spec"]["containers"] = json!("not a list");
    let cases = [
        ("shop", pod("a"), "enforce"),
        ("w", pod("a"), "warn"),
        ("a", pod("a"), "audit"),
        ("legacy-1", pod("web-1"), "exempt"),
        ("shop", unreadable, "unjudgeable"),
    ];
    for (namespace, object, expected) in cases {
        let response = h.create(namespace, &object).await;
        let annotations = response["auditAnnotations"]
            .as_object()
            .unwrap_or_else(|| panic!("{expected}: nothing recorded: {response}"));
        for key in annotations.keys() {
            assert!(valid_key(key), "{expected}: invalid key {key:?}");
        }
        if expected == "unjudgeable" {
            assert_eq!(response["allowed"], false);
            assert!(
                annotations["unjudgeable"]
                    .as_str()
                    .unwrap()
                    .contains("cannot be read")
            );
        } else {
            assert_eq!(outcome(&response), expected);
        }
    }
    // A clean pod is a plain allow: nothing recorded.
    let mut clean = pod("clean");
    clean["spec"]["securityContext"] = json!({"runAsNonRoot": true});
    let response = h.create("shop", &clean).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("auditAnnotations").is_none(), "{response}");
}
