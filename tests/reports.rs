//! `portcullis reports` against a loopback API server that lists, watches and stores as
//! kube-apiserver does: objects appear, change and disappear, and the PolicyReports follow,
//! valid against the wgpolicyk8s.io v1alpha2 CRD (tests/data/crds, from Kyverno) under strict
//! field validation; an unchanged object causes no write; a restart writes nothing new.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use common::*;
use serde_json::{Value, json};

/// A VAP requiring a `team` label on pods and deployments.
const REQUIRE_TEAM: &str = "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: require-team
  annotations: {policies.kyverno.io/category: Multi-Tenancy, policies.kyverno.io/severity: Medium}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [''], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [pods]}
    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}
  validations:
  - expression: \"has(object.metadata.labels) && 'team' in object.metadata.labels\"
    message: every workload needs a team label
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: require-team}
spec:
  policyName: require-team
  validationActions: [Deny]
";

/// The cluster: objects by collection path, open watches, stored reports, and every write.
#[derive(Default)]
struct Inner {
    version: u64,
    objects: BTreeMap<String, Vec<Value>>,
    watches: BTreeMap<String, Vec<tokio::sync::mpsc::UnboundedSender<Value>>>,
    /// Report collection path (`.../namespaces/team-a/policyreports`) → the report.
    reports: BTreeMap<String, Value>,
    writes: Vec<String>,
}

#[derive(Clone, Default)]
struct Cluster(Arc<Mutex<Inner>>);

impl Cluster {
    /// Stores `object` in `collection` under `event` and tells every watcher.
    fn event(&self, collection: &str, event: &str, mut object: Value) {
        let mut inner = self.0.lock().unwrap();
        inner.version += 1;
        object["metadata"]["resourceVersion"] = json!(inner.version.to_string());
        let name = object["metadata"]["name"].clone();
        let namespace = object["metadata"]["namespace"].clone();
        let items = inner.objects.entry(collection.to_owned()).or_default();
        items.retain(|o| o["metadata"]["name"] != name || o["metadata"]["namespace"] != namespace);
        if event != "DELETED" {
            items.push(object.clone());
        }
        for watch in inner.watches.entry(collection.to_owned()).or_default() {
            let _ = watch.send(json!({"type": event, "object": object}));
        }
    }

    fn report(&self, namespace: &str) -> Option<Value> {
        let key = format!("/apis/wgpolicyk8s.io/v1alpha2/namespaces/{namespace}/policyreports");
        self.0.lock().unwrap().reports.get(&key).cloned()
    }

    fn writes(&self) -> Vec<String> {
        self.0.lock().unwrap().writes.clone()
    }
}

fn json_response(status: u16, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn api(State(cluster): State<Cluster>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    let reports = path.starts_with("/apis/wgpolicyk8s.io/");
    if reports && method != axum::http::Method::GET {
        return write_report(&cluster, method.as_str(), &path, &body);
    }
    if query.contains("watch=true") || query.contains("watch=1") {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
        cluster
            .0
            .lock()
            .unwrap()
            .watches
            .entry(path)
            .or_default()
            .push(tx);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            let event = rx.recv().await?;
            Some((Ok::<_, std::io::Error>(format!("{event}\n")), rx))
        });
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let inner = cluster.0.lock().unwrap();
    let items: Vec<Value> = if reports {
        // Every stored report of the kind listed, whatever its namespace.
        let plural = path.rsplit('/').next().unwrap().to_owned();
        inner
            .reports
            .iter()
            .filter(|(k, _)| k.ends_with(&format!("/{plural}")))
            .map(|(_, r)| r.clone())
            .collect()
    } else if path == "/api/v1/namespaces" {
        ["team-a", "team-b"]
            .iter()
            .map(|n| {
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                            "metadata": {"name": n, "resourceVersion": "1"}})
            })
            .collect()
    } else {
        inner.objects.get(&path).cloned().unwrap_or_default()
    };
    let (api_version, kind) = if path == "/api/v1/namespaces" {
        ("meta.k8s.io/v1", "PartialObjectMetadataList")
    } else {
        ("v1", "List")
    };
    json_response(
        200,
        &json!({"apiVersion": api_version, "kind": kind,
                "metadata": {"resourceVersion": inner.version.to_string()}, "items": items}),
    )
}

/// POST, PUT and DELETE of reports, with the apiserver's optimistic concurrency on PUT.
fn write_report(cluster: &Cluster, method: &str, path: &str, body: &[u8]) -> Response {
    let mut inner = cluster.0.lock().unwrap();
    inner.writes.push(format!("{method} {path}"));
    inner.version += 1;
    let version = inner.version.to_string();
    let collection = match method {
        "POST" => path.to_owned(),
        _ => path.rsplit_once('/').unwrap().0.to_owned(),
    };
    match method {
        "POST" | "PUT" => {
            let mut report: Value = serde_json::from_slice(body).unwrap();
            if method == "PUT" {
                let stored = &inner.reports[&collection];
                if stored["metadata"]["resourceVersion"] != report["metadata"]["resourceVersion"] {
                    return json_response(
                        409,
                        &json!({"kind": "Status", "apiVersion": "v1",
                        "status": "Failure", "reason": "Conflict", "code": 409, "message": "conflict"}),
                    );
                }
            }
            report["metadata"]["resourceVersion"] = json!(version);
            inner.reports.insert(collection, report.clone());
            json_response(if method == "POST" { 201 } else { 200 }, &report)
        }
        _ => {
            let gone = inner.reports.remove(&collection).unwrap();
            json_response(200, &gone)
        }
    }
}

/// Errors of `value` against a structural schema, as the apiserver validates a custom
/// resource with strict field validation: types, enums, required fields, unknown fields.
fn schema_errors(value: &Value, schema: &Value, at: &str, out: &mut Vec<String>) {
    let ty = schema["type"].as_str().unwrap_or("");
    let ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "boolean" => value.is_boolean(),
        "number" => value.is_number(),
        _ => true,
    };
    if !ok {
        out.push(format!("{at}: not {ty}: {value}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        out.push(format!("{at}: {value} not in {allowed:?}"));
    }
    if let Some(object) = value.as_object() {
        for field in schema["required"].as_array().into_iter().flatten() {
            if !object.contains_key(field.as_str().unwrap()) {
                out.push(format!("{at}: missing {field}"));
            }
        }
        for (key, child) in object {
            let at = format!("{at}.{key}");
            if let Some(property) = schema["properties"].get(key) {
                schema_errors(child, property, &at, out);
            } else if schema["additionalProperties"].is_object() {
                schema_errors(child, &schema["additionalProperties"], &at, out);
            } else if schema["x-kubernetes-preserve-unknown-fields"] != true {
                out.push(format!("{at}: unknown field"));
            }
        }
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            schema_errors(item, &schema["items"], &format!("{at}[{i}]"), out);
        }
    }
}

fn assert_valid_against_the_crd(report: &Value) {
    let kind = report["kind"].as_str().unwrap().to_lowercase();
    let crd = &yaml_docs(&data().join(format!("crds/wgpolicyk8s.io_{kind}s.yaml")))[0];
    let version = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1alpha2")
        .unwrap();
    let mut schema = version["schema"]["openAPIV3Schema"].clone();
    // ObjectMeta is the apiserver's own to validate, not the CRD's.
    schema["properties"]["metadata"]["x-kubernetes-preserve-unknown-fields"] = json!(true);
    let mut errors = Vec::new();
    schema_errors(report, &schema, "", &mut errors);
    assert!(errors.is_empty(), "{errors:#?}\n{report:#}");
}

/// `portcullis reports` against the cluster at `api`, writing as fast as it likes.
fn reports(
    dir: &std::path::Path,
    policies: &std::path::Path,
    api: std::net::SocketAddr,
) -> Portcullis {
    Portcullis::spawn(portcullis_reports(policies, &kubeconfig(dir, api), 1000).current_dir(dir))
}

/// Waits for the pass that wrote what makes `done` hold: a pass's line is read after its
/// writes, so the cluster may already show a later pass's writes; requiring the line itself
/// to report writes keeps the next step from reading this one's line.
async fn until(server: &mut Portcullis, done: impl Fn() -> bool) -> Value {
    loop {
        let pass = server.wait_for("reports in sync").await;
        if pass["fields"]["written"] != 0 && done() {
            return pass;
        }
    }
}

fn pod(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "team-a", "uid": format!("uid-{name}"), "labels": labels},
           "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}})
}

fn results_of(report: &Value) -> Vec<(String, String, String)> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["resources"][0]["name"].as_str().unwrap().to_owned(),
                r["policy"].as_str().unwrap().to_owned(),
                r["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn reports_follow_the_cluster_and_write_only_what_changed() {
    let cluster = Cluster::default();
    cluster.event("/api/v1/pods", "ADDED", pod("web", json!({})));
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "team-b", "uid": "uid-api", "labels": {"team": "b"}},
        "spec": {"template": {"spec": {"containers": [{"name": "api", "image": "api:1"}]}}}});
    cluster.event("/apis/apps/v1/deployments", "ADDED", deployment.clone());
    let addr = api_server(
        axum::Router::new()
            .fallback(api)
            .with_state(cluster.clone()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("team.yaml"), REQUIRE_TEAM).unwrap();

    // The objects there at start: one report per namespace, created.
    let mut server = reports(dir.path(), &policies, addr);
    let metrics = server.address("metrics_listen").await;
    until(&mut server, || {
        cluster.report("team-a").is_some() && cluster.report("team-b").is_some()
    })
    .await;
    let team_a = cluster.report("team-a").unwrap();
    assert_valid_against_the_crd(&team_a);
    assert_valid_against_the_crd(&cluster.report("team-b").unwrap());
    assert_eq!(
        results_of(&team_a),
        [("web".into(), "require-team".into(), "fail".into())]
    );
    assert_eq!(
        team_a["results"][0]["message"],
        "every workload needs a team label [require-team]"
    );
    assert_eq!(team_a["results"][0]["rule"], "require-team");
    assert_eq!(team_a["results"][0]["category"], "Multi-Tenancy");
    assert_eq!(team_a["results"][0]["severity"], "medium");
    assert_eq!(
        team_a["results"][0]["resources"][0],
        json!({"apiVersion": "v1", "kind": "Pod", "name": "web", "namespace": "team-a", "uid": "uid-web"})
    );
    assert_eq!(team_a["summary"]["fail"], 1);
    assert_eq!(
        team_a["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "portcullis"
    );
    assert_eq!(results_of(&cluster.report("team-b").unwrap())[0].2, "pass");
    let mut writes = cluster.writes();
    writes.sort();
    assert_eq!(
        writes,
        [
            "POST /apis/wgpolicyk8s.io/v1alpha2/namespaces/team-a/policyreports",
            "POST /apis/wgpolicyk8s.io/v1alpha2/namespaces/team-b/policyreports"
        ]
    );

    // The pod is fixed: its result turns to pass, in one update.
    cluster.event("/api/v1/pods", "MODIFIED", pod("web", json!({"team": "a"})));
    until(&mut server, || {
        results_of(&cluster.report("team-a").unwrap())[0].2 == "pass"
    })
    .await;
    assert_valid_against_the_crd(&cluster.report("team-a").unwrap());
    assert_eq!(cluster.writes().len(), 3);
    assert!(cluster.writes()[2].starts_with(
        "PUT /apis/wgpolicyk8s.io/v1alpha2/namespaces/team-a/policyreports/portcullis"
    ));

    // Touched but unchanged (a new resourceVersion, the same object): judged again, not written.
    cluster.event("/api/v1/pods", "MODIFIED", pod("web", json!({"team": "a"})));
    let pass = loop {
        let pass = server.wait_for("reports in sync").await;
        if pass["fields"]["judged"] != 0 {
            break pass;
        }
    };
    assert_eq!(pass["fields"]["judged"], 1, "{pass}");
    assert_eq!(pass["fields"]["written"], 0, "{pass}");
    assert_eq!(cluster.writes().len(), 3);

    // The deployment goes: team-b's report, now empty, is deleted.
    cluster.event("/apis/apps/v1/deployments", "DELETED", deployment);
    until(&mut server, || cluster.report("team-b").is_none()).await;
    assert_eq!(
        cluster.writes()[3],
        "DELETE /apis/wgpolicyk8s.io/v1alpha2/namespaces/team-b/policyreports/portcullis"
    );
    let text = plain_get(metrics, "/metrics").await;
    for line in [
        "portcullis_report_writes_total{operation=\"create\",result=\"ok\"} 2",
        "portcullis_report_writes_total{operation=\"update\",result=\"ok\"} 1",
        "portcullis_report_writes_total{operation=\"delete\",result=\"ok\"} 1",
        "portcullis_report_objects_judged_total 4",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    server.child.kill().await.unwrap();

    // A restart finds its reports in place and writes nothing.
    let mut server = reports(dir.path(), &policies, addr);
    let pass = server.wait_for("reports in sync").await;
    assert_eq!(pass["fields"]["written"], 0, "{pass}");
    assert_eq!(cluster.writes().len(), 4);
    server.child.kill().await.unwrap();
}
