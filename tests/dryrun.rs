//! The dry run predicts enforce. The audit install has no mutating webhook, so `/validate`
//! sees new Pods unpatched; what it records must still be exactly what the enforcing install
//! (which patches first) would deny. The same captured objects, under the audit install's
//! policy, must get the same findings from the webhook, `check`, `audit` and `replay`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use axum::extract::{Request, State};
use common::*;
use portcullis::policy;
use serde_json::{Value, json};

/// The audit overlay's policy: every check in audit mode, the same pod defaults as enforce.
fn audit_policy_dir() -> std::path::PathBuf {
    repo().join("deploy/overlays/audit/policies")
}

/// Captured CREATEs of judged kinds outside the exempt namespaces, by fixture name.
fn creates() -> BTreeMap<String, Value> {
    let all: BTreeMap<String, Value> = sorted_files(&apiserver_fixtures())
        .into_iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            let review = read_json(&path);
            let r = &review["request"];
            let judged = r["operation"] == "CREATE"
                && r["namespace"] != "kube-system"
                && portcullis::workload::WorkloadKind::from_kind(
                    r["object"]["kind"].as_str().unwrap_or(""),
                )
                .is_some();
            judged.then_some((name, review))
        })
        .collect();
    assert_eq!(all.len(), 20, "captured creates: {:?}", all.keys());
    all
}

type Findings = BTreeSet<String>;

fn audited(violations: &Value) -> Findings {
    violations
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert_eq!(v["outcome"], "audit", "{v}");
            v["check"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// The webhook, as the audit install calls it: `/validate` only, the object unpatched.
async fn webhook(reviews: &BTreeMap<String, Value>) -> BTreeMap<String, Findings> {
    let app = app(policy::load_dir(&audit_policy_dir()).unwrap());
    let mut out = BTreeMap::new();
    for (name, review) in reviews {
        let response = answer(&app, "/validate", review).await;
        assert_eq!(response["allowed"], true, "{name}: {response}");
        let annotations = response["auditAnnotations"].as_object();
        let found: Findings = annotations
            .into_iter()
            .flatten()
            .map(|(check, text)| {
                assert!(text.as_str().unwrap().starts_with("audit: "), "{text}");
                check.clone()
            })
            .collect();
        out.insert(name.clone(), found);
    }
    out
}

fn portcullis(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

/// Each object in a file named after its fixture, for `check` to name in its sources.
fn write_objects(dir: &Path, reviews: &BTreeMap<String, Value>) {
    for (name, review) in reviews {
        let object = &review["request"]["object"];
        std::fs::write(dir.join(name), object.to_string()).unwrap();
    }
}

fn check(reviews: &BTreeMap<String, Value>) -> BTreeMap<String, Findings> {
    let dir = tempfile::tempdir().unwrap();
    write_objects(dir.path(), reviews);
    let out = portcullis(&[
        "check",
        "-o",
        "json",
        "--policies",
        audit_policy_dir().to_str().unwrap(),
        dir.path().to_str().unwrap(),
    ]);
    // Audit mode: nothing is denied, so exit 0.
    succeeded(&out)
        .iter()
        .map(|r| {
            let source = r["source"].as_str().unwrap();
            let file = Path::new(source.rsplit_once('#').unwrap().0);
            let name = file.file_name().unwrap().to_str().unwrap().to_owned();
            (name, audited(&r["violations"]))
        })
        .collect()
}

/// A minimal API server listing the objects by resource, for `portcullis audit`.
async fn api(State(objects): State<BTreeMap<String, Value>>, req: Request) -> String {
    let path = req.uri().path();
    let kind_of = |plural: &str| {
        [
            ("/api/v1/pods", "Pod"),
            ("/api/v1/replicationcontrollers", "ReplicationController"),
            ("/apis/apps/v1/deployments", "Deployment"),
            ("/apis/apps/v1/replicasets", "ReplicaSet"),
            ("/apis/apps/v1/statefulsets", "StatefulSet"),
            ("/apis/apps/v1/daemonsets", "DaemonSet"),
            ("/apis/batch/v1/jobs", "Job"),
            ("/apis/batch/v1/cronjobs", "CronJob"),
        ]
        .into_iter()
        .find(|(p, _)| *p == plural)
        .map(|(_, k)| k)
    };
    let items: Vec<Value> = match kind_of(path) {
        Some(kind) => objects
            .values()
            .filter(|o| o["kind"] == kind)
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
        .to_string()
}

async fn audit(reviews: &BTreeMap<String, Value>) -> BTreeMap<String, Findings> {
    // Live objects carry the names the apiserver gave them; the fixture name is kept in a
    // label so results can be matched back.
    let objects: BTreeMap<String, Value> = reviews
        .iter()
        .enumerate()
        .map(|(i, (name, review))| {
            let mut o = review["request"]["object"].clone();
            o["metadata"]["name"] = json!(format!("object-{i}"));
            o["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("generateName");
            (name.clone(), o)
        })
        .collect();
    let names: BTreeMap<String, String> = objects
        .iter()
        .map(|(name, o)| {
            (
                o["metadata"]["name"].as_str().unwrap().to_owned(),
                name.clone(),
            )
        })
        .collect();
    let addr = api_server(axum::Router::new().fallback(api).with_state(objects)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), addr);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "audit",
            "-o",
            "json",
            "--kubeconfig",
            config.to_str().unwrap(),
        ])
        .args(["--policies", audit_policy_dir().to_str().unwrap()])
        .env_remove("KUBECONFIG")
        .output()
        .await
        .unwrap();
    succeeded(&out)
        .iter()
        .map(|r| {
            let name = &names[r["name"].as_str().unwrap()];
            (name.clone(), audited(&r["violations"]))
        })
        .collect()
}

/// `replay` of an audit log holding one CREATE as the log backend writes it. One log per
/// object: replay traces a controller's request to its owner's creator, so a shared log would
/// merge rows.
fn replay(reviews: &BTreeMap<String, Value>) -> BTreeMap<String, Findings> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut found = BTreeMap::new();
    for (name, review) in reviews {
        let r = &review["request"];
        let event = json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request",
            "auditID": r["uid"], "stage": "ResponseComplete", "verb": "create",
            "user": {"username": "someone"},
            "objectRef": {"resource": r["resource"]["resource"], "namespace": r["namespace"],
                          "apiGroup": r["resource"]["group"], "apiVersion": r["resource"]["version"]},
            "responseStatus": {"metadata": {}, "code": 201},
            "requestObject": r["object"],
        });
        std::fs::write(&log, format!("{event}\n")).unwrap();
        let out = portcullis(&[
            "replay",
            "-o",
            "json",
            "--audit-log",
            log.to_str().unwrap(),
            "--policies",
            audit_policy_dir().to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["judged"], 1, "{name}: {report}");
        let rows = report["byNamespaceCheckUser"].as_array().unwrap();
        let checks: Findings = rows
            .iter()
            .map(|row| {
                assert_eq!(
                    (&row["audited"], &row["denied"]),
                    (&json!(1), &json!(0)),
                    "{row}"
                );
                row["check"].as_str().unwrap().to_owned()
            })
            .collect();
        found.insert(name.clone(), checks);
    }
    found
}

#[tokio::test]
async fn audit_mode_findings_are_what_enforce_would_deny_on_every_path() {
    let reviews = creates();
    let webhook = webhook(&reviews).await;

    // What enforce would deny: the default policy, /mutate's patch applied, then /validate.
    let enforce = default_app();
    for (name, review) in &reviews {
        let patch = patch_of(&answer(&enforce, "/mutate", review).await);
        let mut patched = review.clone();
        patched["request"]["object"] = apply(&review["request"]["object"], &patch);
        let denied: Findings = denied_checks(&answer(&enforce, "/validate", &patched).await)
            .into_iter()
            .collect();
        assert_eq!(
            webhook[name], denied,
            "{name}: audit recorded what enforce would not deny"
        );
    }
    // The case that used to be overstated: a Job's pod (probes not required) with no
    // securityContext and no limits. The defaults fill both, so nothing would be denied.
    assert_eq!(
        webhook["create-pod-by-job-controller.json"],
        Findings::new()
    );
    // A finding the defaults cannot fix is still recorded, on pods and controllers alike.
    let probes: Findings = ["liveness-probe", "readiness-probe"]
        .map(String::from)
        .into();
    assert_eq!(webhook["create-pod-2.json"], probes);
    assert_eq!(webhook["create-deployment.json"], probes);

    assert_eq!(check(&reviews), webhook, "check");
    assert_eq!(replay(&reviews), webhook, "replay");
    // `audit` leaves pods and jobs that a controller owns to their owners.
    let owned: Vec<&String> = reviews
        .iter()
        .filter(|(_, r)| r["request"]["object"]["metadata"]["ownerReferences"].is_array())
        .map(|(n, _)| n)
        .collect();
    let mut expected = webhook.clone();
    expected.retain(|n, _| !owned.contains(&n));
    assert_eq!(audit(&reviews).await, expected, "audit");
}

/// The JSON results of a command that must have exited 0 (audit mode denies nothing).
fn succeeded(out: &std::process::Output) -> Vec<Value> {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
