//! The HTTP contract, through the router: what is not a v1 AdmissionReview gets a 400 with a
//! one-line reason (never an `allowed: true`), the other refusals get their own status, and
//! the wire form of each kind of response is pinned field by field.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use portcullis::http::{AppState, MAX_BODY_BYTES, router};
use portcullis::policy::PolicySet;
use serde_json::{Value, json};

fn captured(name: &str) -> Value {
    read_json(&apiserver_fixtures().join(name))
}

#[tokio::test]
async fn bodies_that_are_not_v1_reviews_get_400_with_a_reason() {
    let app = default_app();
    let good = captured("create-pod.json");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let good_text = serde_json::to_string(&good).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty body", vec![], "not a JSON AdmissionReview"),
        ("not JSON", b"hello".to_vec(), "not a JSON AdmissionReview"),
        ("a JSON array", b"[]".to_vec(), "not a JSON AdmissionReview"),
        (
            "trailing garbage",
            format!("{good_text} x").into_bytes(),
            "trailing",
        ),
        (
            "a name that is not UTF-8",
            good_text
                .replacen("\"name\":\"", "\"name\":\"\u{1}", 1)
                .into_bytes()
                .into_iter()
                .map(|b| if b == 1 { 0xff } else { b })
                .collect(),
            "UTF-8",
        ),
        (
            "v1beta1",
            with(&|v| v["apiVersion"] = json!("admission.k8s.io/v1beta1")),
            "apiVersion",
        ),
        (
            "no apiVersion",
            with(&|v| {
                v.as_object_mut().unwrap().remove("apiVersion");
            }),
            "apiVersion",
        ),
        (
            "another kind",
            with(&|v| v["kind"] = json!("ConversionReview")),
            "kind",
        ),
        (
            "request null",
            with(&|v| v["request"] = Value::Null),
            "no request",
        ),
        (
            "request missing",
            with(&|v| {
                v.as_object_mut().unwrap().remove("request");
            }),
            "no request",
        ),
        (
            "uid missing",
            with(&|v| {
                v["request"].as_object_mut().unwrap().remove("uid");
            }),
            "uid",
        ),
        (
            "uid a number",
            with(&|v| v["request"]["uid"] = json!(42)),
            "invalid type",
        ),
        (
            "uid empty",
            with(&|v| v["request"]["uid"] = json!("")),
            "uid is empty",
        ),
        (
            "unknown operation",
            with(&|v| v["request"]["operation"] = json!("PATCH")),
            "PATCH",
        ),
        (
            "request is a string",
            with(&|v| v["request"] = json!("x")),
            "invalid type",
        ),
    ];
    for path in ["/validate", "/mutate"] {
        for (what, body, reason) in &cases {
            let (status, body) = post(&app, path, body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {what}: {body}");
            let text = body.as_str().unwrap_or_else(|| panic!("{what}: {body}"));
            assert!(
                text.contains(reason),
                "{path} {what}: reason {text:?} lacks {reason:?}"
            );
            assert_eq!(
                text.trim_end().lines().count(),
                1,
                "{what}: one-line reason"
            );
        }
    }
}

#[tokio::test]
async fn the_apiserver_query_string_is_accepted() {
    let app = default_app();
    let review = captured("create-pod.json");
    for path in ["/validate?timeout=5s", "/mutate?timeout=10s", "/validate?"] {
        let (status, body) = post(&app, path, serde_json::to_vec(&review).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
}

#[tokio::test]
async fn other_refusals_have_their_own_status() {
    let app = default_app();
    let review = serde_json::to_vec(&captured("create-pod.json")).unwrap();
    let get = Request::get("/validate").body(Body::empty()).unwrap();
    assert_eq!(send(&app, get).await.0, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        post(&app, "/nowhere", review.clone()).await.0,
        StatusCode::NOT_FOUND
    );
    let yaml = Request::post("/validate")
        .header("content-type", "application/yaml")
        .body(Body::from(review.clone()))
        .unwrap();
    assert_eq!(send(&app, yaml).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let none = Request::post("/validate")
        .body(Body::from(review.clone()))
        .unwrap();
    assert_eq!(send(&app, none).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let charset = Request::post("/validate")
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::from(review))
        .unwrap();
    assert_eq!(send(&app, charset).await.0, StatusCode::OK);
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    assert_eq!(
        post(&app, "/validate", huge).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let state = AppState::new(PolicySet::embedded());
    let app = router(state.clone(), Duration::from_secs(4));
    let get = |p: &str| Request::get(p).body(Body::empty()).unwrap();
    assert_eq!(send(&app, get("/healthz")).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, get("/readyz")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    state
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    assert_eq!(send(&app, get("/readyz")).await.0, StatusCode::OK);
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

/// Each response field in exactly the form the apiserver decodes.
#[tokio::test]
async fn wire_form_of_every_response_is_pinned() {
    let app = default_app();
    let (status, allowed) = post(
        &app,
        "/validate",
        serde_json::to_vec(&captured("create-pod.json")).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        allowed,
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
               "response": {"uid": "83f493bc-ca46-47da-961b-d97aa7995c42", "allowed": true}})
    );

    let (_, denied) = post(
        &app,
        "/validate",
        serde_json::to_vec(&captured("create-daemonset.json")).unwrap(),
    )
    .await;
    let response = &denied["response"];
    assert_eq!(
        keys(response),
        ["allowed", "auditAnnotations", "status", "uid"]
    );
    assert_eq!(response["allowed"], json!(false));
    assert_eq!(keys(&response["status"]), ["code", "message", "reason"]);
    assert_eq!(response["status"]["code"], json!(403));
    assert_eq!(response["status"]["reason"], json!("Forbidden"));
    assert_eq!(
        response["status"]["message"],
        json!(
            "DaemonSet \"agent\" was denied by portcullis (3 violations):\n\
- container \"agent\" runs as root (runAsUser: 0): set securityContext.runAsUser to a non-zero UID [run-as-non-root]\n\
\x20 fix: at spec.template.spec.containers[0] set:\n\
\x20   securityContext:\n\
\x20     runAsUser: 10001  # any non-zero UID\n\
\x20     runAsNonRoot: true\n\
- container \"agent\" has no livenessProbe: add a livenessProbe (httpGet, tcpSocket, grpc or exec) [liveness-probe]\n\
\x20 fix: at spec.template.spec.containers[0] set:\n\
\x20   livenessProbe:\n\
\x20     httpGet:\n\
\x20       path: /healthz  # an endpoint of your app\n\
\x20       port: 8080\n\
- container \"agent\" has no readinessProbe: add a readinessProbe (httpGet, tcpSocket, grpc or exec) [readiness-probe]\n\
\x20 fix: at spec.template.spec.containers[0] set:\n\
\x20   readinessProbe:\n\
\x20     httpGet:\n\
\x20       path: /healthz  # an endpoint of your app\n\
\x20       port: 8080"
        )
    );
    for value in response["auditAnnotations"].as_object().unwrap().values() {
        assert!(value.is_string());
    }

    let (_, mutated) = post(
        &app,
        "/mutate",
        serde_json::to_vec(&captured("create-pod-2.json")).unwrap(),
    )
    .await;
    let response = &mutated["response"];
    assert_eq!(keys(response), ["allowed", "patch", "patchType", "uid"]);
    assert_eq!(response["patchType"], json!("JSONPatch"));
    let patch = response["patch"]
        .as_str()
        .expect("patch travels as a base64 string");
    assert!(
        patch
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)),
        "standard base64"
    );
    assert_eq!(
        patch_of(response),
        vec![
            json!({"op": "add", "path": "/spec/securityContext/runAsNonRoot", "value": true}),
            json!({"op": "add", "path": "/spec/securityContext/seccompProfile", "value": {"type": "RuntimeDefault"}}),
            json!({"op": "add", "path": "/spec/containers/0/securityContext", "value": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}),
            json!({"op": "add", "path": "/spec/containers/0/resources/limits", "value": {"cpu": "500m", "memory": "256Mi"}}),
            json!({"op": "add", "path": "/spec/containers/0/resources/requests", "value": {"cpu": "100m", "memory": "128Mi"}}),
        ]
    );

    let (_, unjudgeable) = post(&app, "/validate", {
        let mut r = captured("create-pod.json");
        r["request"]["object"] = Value::Null;
        serde_json::to_vec(&r).unwrap()
    })
    .await;
    assert_eq!(unjudgeable["response"]["status"]["code"], json!(400));
    assert_eq!(
        unjudgeable["response"]["status"]["reason"],
        json!("BadRequest")
    );
    assert_eq!(unjudgeable["response"]["allowed"], json!(false));
}

/// After real requests, /metrics on the metrics router reports them: requests by endpoint,
/// kind, operation and outcome, violations by check, mode and namespace, and the latency
/// histogram with sub-millisecond buckets. Repeated label sets add up on the same series, and
/// label sets no request had are not listed.
#[tokio::test]
async fn metrics_report_real_requests() {
    let state = AppState::new(PolicySet::embedded());
    state
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    let app = router(state.clone(), Duration::from_secs(4));
    let metrics_app = portcullis::http::metrics_router(state.clone());
    for file in [
        "create-pod-2.json",
        "create-pod.json",
        "delete-pod.json",
        "create-pod-2.json",
        "create-deployment.json",
    ] {
        answer(&app, "/validate", &captured(file)).await;
    }
    answer(&app, "/mutate", &captured("create-pod-2.json")).await;
    let res = send(
        &metrics_app,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(res.0, StatusCode::OK);
    let text = res.1.as_str().unwrap().to_owned();
    for line in [
        r#"portcullis_requests_total{endpoint="validate",kind="Pod",operation="CREATE",outcome="denied",dry_run="false"} 2"#,
        r#"portcullis_requests_total{endpoint="validate",kind="Deployment",operation="CREATE",outcome="denied",dry_run="false"} 1"#,
        r#"portcullis_requests_total{endpoint="validate",kind="Pod",operation="CREATE",outcome="allowed",dry_run="false"} 1"#,
        r#"portcullis_requests_total{endpoint="validate",kind="Pod",operation="DELETE",outcome="skipped",dry_run="false"} 1"#,
        r#"portcullis_requests_total{endpoint="mutate",kind="Pod",operation="CREATE",outcome="patched",dry_run="false"} 1"#,
        r#"portcullis_violations_total{check="run-as-non-root",mode="enforce",namespace="team-a",dry_run="false"} 2"#,
        r#"portcullis_violations_total{check="liveness-probe",mode="enforce",namespace="team-a",dry_run="false"} 3"#,
        r#"portcullis_request_duration_seconds_count{endpoint="validate"} 5"#,
        r#"portcullis_request_duration_seconds_count{endpoint="mutate"} 1"#,
        r#"portcullis_request_duration_seconds_bucket{le="0.0001",endpoint="validate"}"#,
        "# TYPE portcullis_certificate_expiry_timestamp_seconds gauge",
        "# TYPE portcullis_certificate_reloads counter",
        "# TYPE portcullis_policy_reloads counter",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert_eq!(
        text.matches("portcullis_requests_total{").count(),
        5,
        "one series per label set seen:\n{text}"
    );
    for path in ["/healthz", "/readyz"] {
        let res = send(
            &metrics_app,
            Request::get(path).body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(res.0, StatusCode::OK, "{path} on the metrics listener");
    }
}
