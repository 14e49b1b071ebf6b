//! The offline commands as processes, exit codes included: `check` on fixture manifests
//! (files, directories, stdin, Lists, every output format), `replay` on an audit log built
//! from the captured apiserver reviews (tests/fixtures/audit/generate.py), and `audit`
//! against a minimal API server on loopback that serves paginated lists.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use common::*;
use serde_json::{Value, json};

fn portcullis(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fixtures() -> PathBuf {
    repo().join("tests/fixtures")
}

/// A directory holding one policy file (so `check` does not pick up the repository's).
fn policies(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), yaml).unwrap();
    dir
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn check_exits_1_and_names_file_object_container_and_check_on_a_denial() {
    let deny = fixtures().join("checks/run-as-non-root/deny.init-container-as-root.yaml");
    let out = portcullis(&repo(), &["check", arg(&deny)], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("deny.init-container-as-root.yaml#1 Pod default/")
            && text.contains("enforce: init container \"")
            && text.contains("[run-as-non-root]")
            && text.contains("fix: at spec.initContainers[0] set:"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let compliant = dir.path().join("web.yml");
    std::fs::write(
        &compliant,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        image: nginx\n        livenessProbe: {tcpSocket: {port: 80}}\n        readinessProbe: {tcpSocket: {port: 80}}\n",
    )
    .unwrap();
    let out = portcullis(&repo(), &["check", arg(&compliant)], None);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).ends_with("1 objects: 0 denied, 0 admitted with findings, 1 clean\n"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn check_agrees_with_the_webhooks_on_every_fixture_directory() {
    // Every check fixture, read as one directory tree, must get from `check` exactly the
    // denials the apiserver would get from the webhooks: /mutate, the patch applied, then
    // /validate. Exit code 1: there are deny fixtures.
    let out = portcullis(
        &repo(),
        &["check", "-o", "json", arg(&fixtures().join("checks"))],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let app = default_app();
    let mut files = 0;
    for r in &results {
        let source = r["source"].as_str().unwrap();
        let path = source.rsplit_once('#').unwrap().0;
        let [object] = yaml_docs(Path::new(path)).try_into().unwrap();
        let mutated = answer(&app, "/mutate", &create(&object)).await;
        let object = apply(&object, &patch_of(&mutated));
        let webhook = denied_checks(&answer(&app, "/validate", &create(&object)).await);
        let mut offline: Vec<String> = r["violations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["outcome"] == "enforce")
            .map(|v| v["check"].as_str().unwrap().to_owned())
            .collect();
        offline.sort();
        offline.dedup();
        assert_eq!(offline, webhook, "{source}");
        files += 1;
    }
    assert_eq!(files, 44, "check fixtures judged");
}

#[test]
fn check_reads_stdin_multi_document_yaml_and_lists() {
    let stream = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: team-a}
  spec:
    containers: [{name: app, image: nginx}]
---
apiVersion: v1
kind: PodList
items:
- metadata: {name: c, namespace: team-c}
  spec:
    containers: [{name: app, image: nginx, livenessProbe: {tcpSocket: {port: 80}}, readinessProbe: {tcpSocket: {port: 80}}}]
---
{\"apiVersion\": \"apps/v1\", \"kind\": \"Deployment\", \"metadata\": {\"name\": \"b\"},
 \"spec\": {\"template\": {\"spec\": {\"containers\": [{\"name\": \"app\", \"image\": \"nginx\"}]}}}}
";
    let out = portcullis(&repo(), &["check", "-o", "json", "-"], Some(stream));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<(&str, &str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["source"].as_str().unwrap(),
                r["namespace"].as_str().unwrap(),
                r["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("<stdin>#2", "team-a", "a"),
            ("<stdin>#3", "team-c", "c"),
            ("<stdin>#4", "default", "b")
        ]
    );
    // The Pod gets the mutating defaults first (runAsNonRoot, limits): only probes remain.
    let checks = |r: &Value| -> Vec<String> {
        let mut c: Vec<String> = r["violations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["check"].as_str().unwrap().to_owned())
            .collect();
        c.sort();
        c
    };
    assert_eq!(checks(&results[0]), ["liveness-probe", "readiness-probe"]);
    // A typed list's items take its kind; this pod is compliant once defaulted.
    assert!(checks(&results[1]).is_empty(), "{:#}", results[1]);
    // A Deployment is judged as the pods it will create, also defaulted.
    assert_eq!(checks(&results[2]), ["liveness-probe", "readiness-probe"]);
    assert_eq!(
        results[2]["violations"][0]["fix"]["at"],
        "spec.template.spec.containers[0]"
    );
}

const ROLLOUT: &str = "apiVersion: portcullis.dev/v1alpha1
kind: Policy
metadata: {name: rollout}
spec:
  checks:
    liveness-probe: {mode: enforce}
  schedule:
  - {mode: warn, until: 2027-01-15}
  - {mode: enforce}
  exemptions:
  - name: legacy
    checks: [liveness-probe]
    names: [legacy-*]
    reason: rewrite pending
    owner: team-legacy
    expires: 2027-03-01
";

const TWO_PODS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec: {containers: [{name: app, image: nginx}]}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy-web, namespace: shop}
spec: {containers: [{name: app, image: nginx}]}
";

#[test]
fn check_follows_modes_schedules_and_exemption_expiry_as_of_a_date() {
    let dir = policies(ROLLOUT);
    let p = arg(dir.path());
    // Warn stage: nothing would be denied.
    let out = portcullis(
        &repo(),
        &["check", "--policies", p, "--as-of", "2026-12-01", "-"],
        Some(TWO_PODS),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("shop/web: warn: ") && text.contains("enforced from 2027-01-15"),
        "{text}"
    );
    assert!(
        text.contains("shop/legacy-web: exempt: ") && text.contains("team-legacy"),
        "{text}"
    );
    // Enforce stage, exemption still live: only web is denied.
    let out = portcullis(
        &repo(),
        &[
            "check",
            "--policies",
            p,
            "--as-of",
            "2027-02-01",
            "-o",
            "json",
            "-",
        ],
        Some(TWO_PODS),
    );
    assert_eq!(out.status.code(), Some(1));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results[0]["allowed"], false);
    assert_eq!(results[1]["allowed"], true);
    assert_eq!(
        results[1]["violations"][0]["exemption"]["owner"],
        "team-legacy"
    );
    // After expiry the exemption applies nowhere.
    let out = portcullis(
        &repo(),
        &[
            "check",
            "--policies",
            p,
            "--as-of",
            "2027-03-01",
            "-o",
            "json",
            "-",
        ],
        Some(TWO_PODS),
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results[1]["allowed"], false, "{results:#?}");
}

#[test]
fn check_writes_policy_reports_per_namespace() {
    let dir = policies(ROLLOUT);
    let out = portcullis(
        &repo(),
        &[
            "check",
            "--policies",
            arg(dir.path()),
            "--as-of",
            "2027-02-01",
            "-o",
            "policyreport",
            "-",
        ],
        Some(&format!(
            "{TWO_PODS}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: ok, namespace: other}}\nspec: {{containers: [{{name: app, image: nginx, livenessProbe: {{tcpSocket: {{port: 80}}}}}}]}}\n"
        )),
    );
    assert_eq!(out.status.code(), Some(1));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    let reports = list["items"].as_array().unwrap();
    assert_eq!(reports.len(), 2);
    for r in reports {
        assert_eq!(r["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(r["kind"], "PolicyReport");
    }
    let shop = reports
        .iter()
        .find(|r| r["metadata"]["namespace"] == "shop")
        .unwrap();
    assert_eq!(
        shop["summary"],
        json!({"pass": 0, "fail": 1, "warn": 0, "error": 0, "skip": 1})
    );
    let fail = shop["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["result"] == "fail")
        .unwrap();
    assert_eq!(fail["policy"], "rollout");
    assert_eq!(fail["rule"], "liveness-probe");
    assert_eq!(fail["category"], "Best Practices");
    assert!(
        fail.get("severity").is_none(),
        "no severity is known for it"
    );
    assert_eq!(fail["source"], "portcullis");
    assert_eq!(
        fail["resources"][0],
        json!({"apiVersion": "v1", "kind": "Pod", "name": "web", "namespace": "shop"})
    );
    assert!(fail["timestamp"]["seconds"].as_i64().unwrap() > 1_700_000_000);
    let other = reports
        .iter()
        .find(|r| r["metadata"]["namespace"] == "other")
        .unwrap();
    assert_eq!(other["summary"]["pass"], 1);
}

#[test]
fn check_exits_2_on_unreadable_input_or_policies() {
    let out = portcullis(&repo(), &["check", "-"], Some("a: [unclosed"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("portcullis check: <stdin>: "),
        "{}",
        stderr(&out)
    );

    let out = portcullis(&repo(), &["check", "no/such/file.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no/such/file.yaml"),
        "{}",
        stderr(&out)
    );

    let dir = policies(&ROLLOUT.replace("owner: team-legacy", "owner: ''"));
    let out = portcullis(
        &repo(),
        &["check", "--policies", arg(dir.path()), "-"],
        Some(TWO_PODS),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("policy.yaml: spec.exemptions[0].owner: must not be empty"),
        "{}",
        stderr(&out)
    );
}

fn audit_log() -> PathBuf {
    fixtures().join("audit/audit.log")
}

#[test]
fn replay_reports_would_be_denials_per_namespace_check_and_user() {
    let log = audit_log();
    let out = portcullis(
        &repo(),
        &[
            "replay",
            "--audit-log",
            arg(&log),
            "--as-of",
            "2026-11-22",
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    // 78 lines: 37 RequestReceived copies are not counted twice; 24 workload requests carry
    // an object worth judging (creates, controller updates, a patch via its responseObject,
    // the ephemeral-containers update); pod updates, other subresources, deletes, reads, a
    // ConfigMap, a Metadata-level event and one truncated line are not judged.
    assert_eq!(report["events"], 78);
    assert_eq!(report["judged"], 24);
    // The Deployment `dep` would be denied, so under enforce its two ReplicaSets and their
    // four pods would never exist, nor the pods of the denied StatefulSet and
    // ReplicationController: those eight are counted apart, not as more denials. (The
    // CronJob's Job and pod stay: Jobs need no probes, so the CronJob is admitted.)
    assert_eq!(report["denied"], 7);
    assert_eq!(report["downstreamOfDenied"], 8);
    assert_eq!(report["skipped"]["not the ResponseComplete stage"], 37);
    assert_eq!(report["skipped"]["unparseable line"], 1);
    assert_eq!(report["skipped"]["no object (Metadata-level event)"], 1);
    assert_eq!(report["skipped"]["pod update"], 4);
    let rows = report["byNamespaceCheckUser"].as_array().unwrap();
    let row = |ns: &str, check: &str, user: &str| {
        rows.iter()
            .find(|r| r["namespace"] == ns && r["check"] == check && r["user"] == user)
            .cloned()
    };
    // The impersonated user is the one accountable, not the admin acting for them.
    assert_eq!(
        row("team-a", "liveness-probe", "alice@example.com").unwrap()["denied"],
        1
    );
    // The patch is judged from its responseObject, in its namespace.
    assert_eq!(
        row("team-b", "liveness-probe", "bob@example.com").unwrap()["denied"],
        1
    );
    // kube-system is exempt: nothing counted there.
    assert!(rows.iter().all(|r| r["namespace"] != "kube-system"));
    // Offenders are people and workloads: the requests of replicaset-controller and friends
    // trace back to whoever created the root object.
    assert_eq!(
        report["worstUsers"][0],
        json!({"name": "admin", "denied": 5})
    );
    assert_eq!(
        report["worstWorkloads"][0],
        json!({"name": "team-a/Deployment dep", "denied": 2})
    );
    for list in ["worstUsers", "worstWorkloads"] {
        for row in report[list].as_array().unwrap() {
            let name = row["name"].as_str().unwrap();
            assert!(
                !name.contains("controller") && !name.contains("Pod dep-"),
                "{list}: {name}"
            );
        }
    }
    assert!(rows.iter().all(|r| {
        !r["user"]
            .as_str()
            .unwrap()
            .starts_with("system:serviceaccount:")
    }));

    // The same log through stdin, in text, with an audit-mode policy: nothing denied.
    let dir =
        policies(&ROLLOUT.replace("{mode: enforce}\n  schedule", "{mode: audit}\n  schedule"));
    let text = std::fs::read_to_string(&log).unwrap();
    let out = portcullis(
        &repo(),
        &["replay", "--audit-log", "-", "--policies", arg(dir.path())],
        Some(&text),
    );
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.starts_with("-: 78 events, 24 workload requests judged as of "),
        "{text}"
    );
    assert!(text.contains(", 0 would have been denied"), "{text}");
    assert!(
        text.contains("alice@example.com") && text.contains(" 0 / 0 / 1 / 0"),
        "{text}"
    );
}

/// A controller's request for an owner the log saw created goes to that owner's creator; for
/// an owner created before the log began, to the owner workload.
#[test]
fn replay_traces_controllers_requests_to_the_root_request() {
    // The Deployment `dep` itself is exempt, so it is admitted; the ReplicaSets the
    // deployment-controller creates from it are not, and they are admin's doing.
    let dir = policies(
        "apiVersion: portcullis.dev/v1alpha1
kind: Policy
metadata: {name: probes}
spec:
  checks:
    liveness-probe: {mode: enforce}
  exemptions:
  - {name: dep, checks: [liveness-probe], names: [dep], reason: r, owner: o, expires: 2099-01-01}
",
    );
    let events: Vec<Value> = std::fs::read_to_string(audit_log())
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let complete = |pick: &dyn Fn(&Value) -> bool| -> String {
        events
            .iter()
            .filter(|e| e["stage"] == "ResponseComplete" && pick(e))
            .map(|e| format!("{e}\n"))
            .collect()
    };
    let object_is = |e: &Value, kind: &str| e["requestObject"]["kind"] == kind;
    let from_dep = complete(&|e| {
        ["Deployment", "ReplicaSet"].iter().any(|k| object_is(e, k)) && e["verb"] == "create"
            || object_is(e, "Pod")
                && e["requestObject"]["metadata"]["generateName"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("dep-"))
    });
    let replay = |log: &str| -> Value {
        let out = portcullis(
            &repo(),
            &[
                "replay",
                "--audit-log",
                "-",
                "--policies",
                arg(dir.path()),
                "-o",
                "json",
            ],
            Some(log),
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let report = replay(&from_dep);
    // One Deployment (exempt), two ReplicaSets (denied), four pods (downstream of them).
    assert_eq!(report["judged"], 7, "{report}");
    assert_eq!(report["denied"], 2);
    assert_eq!(report["downstreamOfDenied"], 4);
    assert_eq!(
        report["worstUsers"],
        json!([{"name": "admin", "denied": 2}])
    );
    assert_eq!(
        report["worstWorkloads"],
        json!([{"name": "team-a/Deployment dep", "denied": 2}])
    );

    // Only the pods: their ReplicaSets were created before this log began.
    let pods_only = complete(&|e| {
        object_is(e, "Pod") && e["requestObject"]["metadata"]["generateName"] == "dep-5c7fcf9467-"
    });
    let report = replay(&pods_only);
    assert_eq!(report["denied"], 1, "{report}");
    assert_eq!(
        report["worstWorkloads"],
        json!([{"name": "team-a/ReplicaSet dep-5c7fcf9467", "denied": 1}])
    );
    let user = report["worstUsers"][0]["name"].as_str().unwrap();
    assert_eq!(
        user,
        "(controller of team-a/ReplicaSet dep-5c7fcf9467, created before this log)"
    );
}

#[test]
fn replay_shows_progress_on_a_terminal_only() {
    // Piped: the report alone, nothing on stderr.
    let log = audit_log();
    let out = portcullis(&repo(), &["replay", "--audit-log", arg(&log)], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    // On a terminal (util-linux `script` gives it one): progress on stderr.
    let command = format!(
        "{} replay --audit-log {} > /dev/null",
        env!("CARGO_BIN_EXE_portcullis"),
        arg(&log)
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("replay: 78 events read, 24 judged"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn replay_exits_2_when_the_log_cannot_be_read() {
    let out = portcullis(&repo(), &["replay", "--audit-log", "no-such.log"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("portcullis replay: no-such.log: "),
        "{}",
        stderr(&out)
    );
}

/// What the minimal API server serves, and every request it saw.
#[derive(Clone, Default)]
struct Cluster {
    seen: Arc<Mutex<Vec<String>>>,
    /// Answer namespace lists with 403, as for a user without that permission.
    forbid_namespaces: Arc<std::sync::atomic::AtomicBool>,
}

fn list(kind: &str, items: Vec<Value>, next: Option<&str>) -> Value {
    json!({"apiVersion": "v1", "kind": format!("{kind}List"),
           "metadata": {"resourceVersion": "1", "continue": next.unwrap_or("")}, "items": items})
}

fn captured_object(file: &str) -> Value {
    let mut o = read_json(&apiserver_fixtures().join(file))["request"]["object"].clone();
    let m = o["metadata"].as_object_mut().unwrap();
    m.remove("generateName");
    o
}

async fn api(State(cluster): State<Cluster>, req: Request) -> impl axum::response::IntoResponse {
    let uri = req.uri().to_string();
    cluster.seen.lock().unwrap().push(uri.clone());
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let mut bare = captured_object("create-pod-2.json");
    bare["metadata"]["name"] = json!("bare");
    let mut owned = captured_object("create-pod-by-replicaset-controller.json");
    owned["metadata"]["name"] = json!("dep-abc");
    let mut other = bare.clone();
    other["metadata"]["name"] = json!("bare-b");
    other["metadata"]["namespace"] = json!("team-b");
    if path == "/api/v1/namespaces"
        && cluster
            .forbid_namespaces
            .load(std::sync::atomic::Ordering::SeqCst)
    {
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "namespaces is forbidden: User \"dev\" cannot list resource \"namespaces\"",
            "reason": "Forbidden", "code": 403});
        return (
            axum::http::StatusCode::FORBIDDEN,
            [("content-type", "application/json")],
            status.to_string(),
        );
    }
    let body = match path {
        "/api/v1/namespaces" => list(
            "Namespace",
            vec![
                json!({"metadata": {"name": "team-a", "labels": {"portcullis.dev/mode": "warn"}}}),
                json!({"metadata": {"name": "team-b"}}),
            ],
            None,
        ),
        // Two pages: the second only with the first page's continue token.
        "/api/v1/pods" if !query.contains("continue=") => {
            list("Pod", vec![bare, owned], Some("page-2"))
        }
        "/api/v1/pods" if query.contains("continue=page-2") => list("Pod", vec![other], None),
        "/api/v1/namespaces/team-b/pods" => list("Pod", vec![other], None),
        "/apis/apps/v1/deployments" => list(
            "Deployment",
            vec![captured_object("create-deployment.json")],
            None,
        ),
        _ => list("Unknown", vec![], None),
    };
    (
        axum::http::StatusCode::OK,
        [("content-type", "application/json")],
        body.to_string(),
    )
}

#[tokio::test]
async fn audit_lists_live_workloads_page_by_page_and_judges_them_with_namespace_labels() {
    let cluster = Cluster::default();
    let addr = api_server(
        axum::Router::new()
            .fallback(api)
            .with_state(cluster.clone()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), addr);
    let policy = std::fs::read_to_string(repo().join("policies/default.yaml"))
        .unwrap()
        .replace("spec:\n", "spec:\n  namespaceLabels: true\n");
    let policies = policies(&policy);
    let run = |extra: &'static [&'static str]| {
        let config = config.clone();
        let policies = policies.path().to_owned();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
                .args(["audit", "--kubeconfig", config.to_str().unwrap()])
                .args(["--policies", policies.to_str().unwrap(), "-o", "json"])
                .args(extra)
                .env_remove("KUBECONFIG")
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(&[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let seen: Vec<(String, String, bool)> = results
        .iter()
        .map(|r| {
            (
                format!(
                    "{} {}/{}",
                    r["kind"].as_str().unwrap(),
                    r["namespace"].as_str().unwrap(),
                    r["name"].as_str().unwrap()
                ),
                r["violations"][0]["mode"].as_str().unwrap_or("").to_owned(),
                r["allowed"].as_bool().unwrap(),
            )
        })
        .collect();
    // The pod a ReplicaSet owns is left to its owner; team-a is labelled warn.
    assert_eq!(
        seen,
        [
            ("Pod team-a/bare".to_owned(), "warn".to_owned(), true),
            ("Pod team-b/bare-b".to_owned(), "enforce".to_owned(), false),
            ("Deployment team-a/dep".to_owned(), "warn".to_owned(), true),
        ]
    );
    let requests = cluster.seen.lock().unwrap().clone();
    assert!(
        requests.iter().any(|u| u.starts_with("/api/v1/pods?")
            && u.contains("limit=250")
            && u.contains("continue=page-2")),
        "{requests:?}"
    );

    // Limited to one namespace, the cluster-wide lists are not read.
    cluster.seen.lock().unwrap().clear();
    let out = run(&["--namespace", "team-b"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), 1);
    let requests = cluster.seen.lock().unwrap().clone();
    assert!(
        requests.iter().all(|u| !u.starts_with("/api/v1/pods")),
        "{requests:?}"
    );

    // Not allowed to list namespaces: the audit goes on, label rules do not match (team-a's
    // pod is then judged in enforce), and stderr says why.
    cluster
        .forbid_namespaces
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let out = run(&[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("may not list namespaces"),
        "{}",
        stderr(&out)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results[0]["name"], "bare");
    assert_eq!(results[0]["allowed"], false);

    // An API server that is not there (the same kubeconfig file, rewritten to name it):
    // exit 2 with the reason, no report.
    assert_eq!(kubeconfig(dir.path(), unused_address().await), config);
    let out = run(&[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).starts_with("portcullis audit: kubernetes API: "),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
}

/// `webhook-rules` prints what the ValidatingWebhookConfiguration must send: for the shipped
/// policy, exactly the rules deploy/ registers; with CEL rules, their resources too.
#[test]
fn webhook_rules_cover_what_the_policies_judge() {
    let webhooks = yaml_docs(&repo().join("deploy/base/webhooks.yaml"));
    let validating = webhooks
        .iter()
        .find(|d| d["kind"] == "ValidatingWebhookConfiguration")
        .unwrap();
    let shipped = &validating["webhooks"][0]["rules"];
    let out = portcullis(&repo(), &["webhook-rules"], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(&printed, shipped);

    // A VAP on Services and a Kyverno policy on pods (autogen: Deployments only).
    let dir = policies(&std::fs::read_to_string(repo().join("policies/default.yaml")).unwrap());
    std::fs::write(
        dir.path().join("services.yaml"),
        [
            NO_NODEPORT,
            "---
apiVersion: policies.kyverno.io/v1alpha1
kind: ValidatingPolicy
metadata: {name: tagged}
spec:
  autogen: {podControllers: {controllers: [deployments]}}
  matchConstraints:
    resourceRules:
    - {apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [pods]}
  validations:
  - expression: object.spec.containers.all(c, c.image.contains(':'))
",
        ]
        .concat(),
    )
    .unwrap();
    let out = portcullis(
        &repo(),
        &["webhook-rules", "--policies", arg(dir.path())],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(&printed[..3], shipped.as_array().unwrap().as_slice());
    assert_eq!(
        printed[3..],
        [
            json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                   "resources": ["pods"], "scope": "*"}),
            json!({"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE"],
                   "resources": ["deployments"], "scope": "Namespaced"}),
            json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                   "resources": ["services"], "scope": "*"}),
        ]
    );
}

/// `check` takes namespace labels from Namespaces in its input: for CEL's `namespaceObject`
/// and a policy's namespaceSelector, as the namespace watch gives them when serving.
#[test]
fn check_reads_namespace_labels_from_namespaces_in_the_input() {
    let dir = policies(
        "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: prod-needs-team}
spec:
  matchConstraints:
    namespaceSelector: {matchLabels: {env: prod}}
    resourceRules:
    - {apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [pods]}
  validations:
  - expression: \"'team' in object.metadata.?labels.orValue({})\"
    messageExpression: \"'pods in ' + namespaceObject.metadata.name + ' need a team label'\"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: prod-needs-team}
spec: {policyName: prod-needs-team, validationActions: [Deny]}
",
    );
    let input = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {env: prod}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec: {containers: [{name: app, image: nginx}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: sandbox}
spec: {containers: [{name: app, image: nginx}]}
";
    let out = portcullis(
        &repo(),
        &["check", "-o", "json", "--policies", arg(dir.path()), "-"],
        Some(input),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let denied: Vec<(&str, &str)> = results
        .iter()
        .filter(|r| r["allowed"] == false)
        .map(|r| {
            (
                r["namespace"].as_str().unwrap(),
                r["violations"][0]["message"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        denied,
        [("shop", "pods in shop need a team label [prod-needs-team]")]
    );
}

/// A minimal API server with two Services and nothing else.
async fn services_api(req: Request) -> String {
    let items = match req.uri().path() {
        "/api/v1/services" => vec![
            json!({"metadata": {"name": "public", "namespace": "shop"}, "spec": {"type": "NodePort"}}),
            json!({"metadata": {"name": "internal", "namespace": "shop"}, "spec": {"type": "ClusterIP"}}),
        ],
        _ => vec![],
    };
    let kind = if req.uri().path() == "/api/v1/services" {
        "Service"
    } else {
        "Unknown"
    };
    list(kind, items, None).to_string()
}

/// `audit` also lists what CEL rules name: a VAP on Services judges the cluster's Services.
#[tokio::test]
async fn audit_lists_the_resources_cel_rules_name() {
    let addr = api_server(axum::Router::new().fallback(services_api)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), addr);
    let policies = policies(NO_NODEPORT);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["audit", "--kubeconfig", config.to_str().unwrap()])
        .args([
            "--policies",
            policies.path().to_str().unwrap(),
            "-o",
            "json",
        ])
        .env_remove("KUBECONFIG")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let seen: Vec<(String, bool)> = results
        .iter()
        .map(|r| {
            (
                format!(
                    "{} {}",
                    r["kind"].as_str().unwrap(),
                    r["name"].as_str().unwrap()
                ),
                r["allowed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("Service public".to_owned(), false),
            ("Service internal".to_owned(), true)
        ]
    );
}

/// With CEL rules loaded, `replay` judges any kind they may match: here the log's ConfigMap.
#[test]
fn replay_judges_the_kinds_cel_rules_match() {
    let dir = policies(
        "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: configmaps-need-owner}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [''], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [configmaps]}
  validations:
  - expression: \"'owner' in object.metadata.?labels.orValue({})\"
    message: every ConfigMap needs an owner label
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: configmaps-need-owner}
spec: {policyName: configmaps-need-owner, validationActions: [Deny]}
",
    );
    let out = portcullis(
        &repo(),
        &[
            "replay",
            "--audit-log",
            arg(&audit_log()),
            "--policies",
            arg(dir.path()),
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["denied"], 1, "{report}");
    assert_eq!(
        report["byNamespaceCheckUser"],
        json!([{"namespace": "team-b", "check": "configmaps-need-owner", "user": "bob@example.com",
                "denied": 1, "warned": 0, "audited": 0, "exempted": 0}])
    );
}

/// A ValidatingAdmissionPolicy on Services, bound with Deny.
const NO_NODEPORT: &str = "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: no-nodeport}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [''], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [services]}
  validations:
  - expression: object.spec.type != 'NodePort'
    message: NodePort Services are not allowed
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: no-nodeport}
spec: {policyName: no-nodeport, validationActions: [Deny]}
";
