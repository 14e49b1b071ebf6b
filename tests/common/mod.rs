//! Helpers shared by the integration tests: drive the real router, wrap manifests into
//! AdmissionReviews as kube-apiserver frames them, and apply returned patches with the
//! json-patch crate's RFC 6902 implementation (independent of how portcullis builds them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt;
use portcullis::http::{AppState, router};
use portcullis::policy::PolicySet;
use serde_json::{Value, json};
use tower::ServiceExt;

/// How long a test waits for an expected log line: generous for a loaded 2-core machine, but
/// finite.
pub const LOG_DEADLINE: Duration = Duration::from_secs(60);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/data`: captured reviews and peer suites, copied in with their licences.
pub fn data() -> PathBuf {
    repo().join("tests/data")
}

pub fn apiserver_fixtures() -> PathBuf {
    data().join("apiserver")
}

pub fn app(policies: PolicySet) -> Router {
    let state = AppState::new(policies);
    state.ready.store(true, Ordering::Release);
    router(state, Duration::from_secs(4))
}

pub fn default_app() -> Router {
    app(PolicySet::embedded())
}

/// POSTs `body` as JSON to `path` and returns the status and the body (JSON when it parses).
pub async fn post(app: &Router, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    send(app, req).await
}

pub async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

/// `review` as kube-apiserver writes it: compact, with the review's and the request's fields in
/// the order of Go's `AdmissionReview` and `AdmissionRequest` structs (any other field after
/// them), so that the kind and the operation come before the objects, as the captures show.
/// `serde_json::to_vec` sorts them instead, which puts `operation` after `object`.
pub fn wire(review: &Value) -> Vec<u8> {
    const REVIEW: &[&str] = &["kind", "apiVersion", "request"];
    const REQUEST: &[&str] = &[
        "uid",
        "kind",
        "resource",
        "subResource",
        "requestKind",
        "requestResource",
        "requestSubResource",
        "name",
        "namespace",
        "operation",
        "userInfo",
        "object",
        "oldObject",
        "dryRun",
        "options",
    ];
    fn ordered(value: &Value, order: &[&str], inner: Option<(&str, &[&str])>) -> String {
        let Some(map) = value.as_object() else {
            return value.to_string();
        };
        let known = order.iter().filter_map(|k| map.get_key_value(*k));
        let rest = map.iter().filter(|(k, _)| !order.contains(&k.as_str()));
        let fields: Vec<String> = known
            .chain(rest)
            .map(|(k, v)| {
                let v = match inner {
                    Some((field, order)) if k == field => ordered(v, order, None),
                    _ => v.to_string(),
                };
                format!("{}:{v}", Value::from(k.as_str()))
            })
            .collect();
        format!("{{{}}}", fields.join(","))
    }
    let text = ordered(review, REVIEW, Some(("request", REQUEST)));
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        *review,
        "reordering changed the review"
    );
    format!("{text}\n").into_bytes()
}

/// Sends a review as kube-apiserver writes it (`wire`) and returns its `response`, asserting
/// the HTTP 200, the v1 framing and the uid echo that every judged review must get.
pub async fn answer(app: &Router, path: &str, review: &Value) -> Value {
    let (status, body) = post(app, path, wire(review)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    let response = body["response"].clone();
    assert_eq!(response["uid"], review["request"]["uid"], "uid not echoed");
    assert!(response["allowed"].is_boolean());
    response
}

/// The check ids a `/validate` response denies for, from `[id]` markers in the message.
pub fn denied_checks(response: &Value) -> Vec<String> {
    if response["allowed"] == true {
        return Vec::new();
    }
    let message = response["status"]["message"].as_str().unwrap_or("");
    let mut ids: Vec<String> = message
        .lines()
        .filter(|l| l.starts_with("- "))
        .filter_map(|l| {
            l.rsplit_once('[')
                .map(|(_, id)| id.trim_end_matches(']').to_owned())
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The decoded patch of a `/mutate` response (empty when there is none), with the wire form
/// checked: `patch` is a base64 string and `patchType` is `JSONPatch`.
pub fn patch_of(response: &Value) -> Vec<Value> {
    assert_eq!(
        response["allowed"], true,
        "/mutate must never deny: {response}"
    );
    match &response["patch"] {
        Value::Null => {
            assert!(
                response.get("patchType").is_none(),
                "patchType without patch"
            );
            Vec::new()
        }
        Value::String(b64) => {
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("patch is standard base64");
            let ops: Vec<Value> = serde_json::from_slice(&bytes).expect("patch is a JSON array");
            assert!(!ops.is_empty(), "an empty patch must not be sent");
            ops
        }
        other => panic!("patch must be a base64 string, got {other}"),
    }
}

/// Applies RFC 6902 operations with the json-patch crate.
pub fn apply(object: &Value, ops: &[Value]) -> Value {
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(ops.to_vec())).expect("operations are RFC 6902");
    let mut doc = object.clone();
    json_patch::patch(&mut doc, &patch)
        .unwrap_or_else(|e| panic!("patch does not apply: {e}\n{ops:?}"));
    doc
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A kubeconfig in `dir` for a plain-HTTP API server at `server`, with a dummy token.
pub fn kubeconfig(dir: &Path, server: std::net::SocketAddr) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'http://{server}'}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n\
             current-context: c\n"
        ),
    )
    .unwrap();
    path
}

/// Lays `dir` out as kubelet mounts a ConfigMap or Secret: the versions are dot-directories
/// (written by the caller), `..data` points at `version`, and each of `files` is a symlink
/// through `..data`.
#[cfg(unix)]
pub fn mount_volume(dir: &Path, version: &str, files: &[&str]) {
    use std::os::unix::fs::symlink;
    symlink(version, dir.join("..data")).unwrap();
    for file in files {
        symlink(format!("..data/{file}"), dir.join(file)).unwrap();
    }
}

/// kubelet's atomic update of such a volume: a new `..data` link renamed over the old one.
#[cfg(unix)]
pub fn swap_volume(dir: &Path, version: &str) {
    std::os::unix::fs::symlink(version, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
}

/// Replaces a file whole (write, then rename), as a ConfigMap update does: the reloader
/// never reads it half-written.
pub fn replace_file(path: &Path, text: &str) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

/// A loopback address nothing listens on (bound, then released): a server that is gone.
pub async fn unused_address() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// The entries of a directory, sorted, so suites walk fixtures in a stable order.
pub fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Every YAML document in a file, as JSON values (empty documents dropped).
pub fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// Group, version and resource of a kind, as the apiserver names them in a review; a kind
/// portcullis does not judge is framed in the core group.
fn group_resource(kind: &str) -> (&'static str, &'static str, String) {
    match portcullis::workload::WorkloadKind::from_kind(kind) {
        Some(k) => (k.group(), "v1", k.resource()),
        None => ("", "v1", format!("{}s", kind.to_ascii_lowercase())),
    }
}

/// Frames `object` as kube-apiserver would for `operation` in `namespace`.
pub fn review(
    operation: &str,
    namespace: &str,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Value {
    let obj = object
        .or(old)
        .expect("a review needs an object or an old object");
    let kind = obj["kind"].as_str().unwrap_or("Pod");
    let (group, version, resource) = group_resource(kind);
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("test-{operation}-{name}"),
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": old,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

/// A CREATE of `object` in a namespace no policy exempts.
pub fn create(object: &Value) -> Value {
    review("CREATE", "team-a", Some(object), None)
}

/// `portcullis serve` on loopback ports with JSON logs at info, run in `dir`; add flags, then
/// hand it to `Portcullis::spawn`.
pub fn portcullis_serve(dir: &Path) -> tokio::process::Command {
    portcullis_serve_on(dir, std::net::Ipv4Addr::LOCALHOST.into())
}

/// The same, its webhook listening on `ip`.
pub fn portcullis_serve_on(dir: &Path, ip: std::net::IpAddr) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .args(["serve", "--listen", &format!("{ip}:0")])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--log-format", "json"])
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

/// A running portcullis process. Every log line is read as it comes (a full pipe would stall
/// the server) and forwarded, so a test can wait for the events it cares about.
pub struct Portcullis {
    pub child: tokio::process::Child,
    events: tokio::sync::mpsc::UnboundedReceiver<Value>,
}

impl Portcullis {
    pub fn spawn(command: &mut tokio::process::Command) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = command.spawn().expect("the portcullis binary starts");
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(log) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(log);
                }
            }
        });
        Self { child, events }
    }

    /// The next log line whose message is `key`, or which carries a field named `key`.
    pub async fn wait_for(&mut self, key: &str) -> Value {
        let [log] = self.wait_for_all([key]).await;
        log
    }

    /// The first log line for each of `keys` (a message, or a field it carries), in whatever
    /// order the lines come.
    pub async fn wait_for_all<const N: usize>(&mut self, keys: [&str; N]) -> [Value; N] {
        let mut found: [Option<Value>; N] = std::array::from_fn(|_| None);
        let search = async {
            while found.iter().any(Option::is_none) {
                let log = self.events.recv().await.expect("the server exited");
                for (slot, key) in found.iter_mut().zip(keys) {
                    let hit = log["fields"]["message"] == key || log["fields"].get(key).is_some();
                    if slot.is_none() && hit {
                        *slot = Some(log.clone());
                    }
                }
            }
        };
        // A deadline, so a log line that never comes fails the test instead of hanging it.
        if tokio::time::timeout(LOG_DEADLINE, search).await.is_err() {
            panic!("no log line for each of {keys:?} within {LOG_DEADLINE:?}");
        }
        found.map(Option::unwrap)
    }

    /// The addresses logged under each of `fields`, in whatever order the lines come.
    pub async fn addresses<const N: usize>(
        &mut self,
        fields: [&str; N],
    ) -> [std::net::SocketAddr; N] {
        let logs = self.wait_for_all(fields).await;
        std::array::from_fn(|i| {
            logs[i]["fields"][fields[i]]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
    }

    /// The address the server logs under `field` (`listen`, `metrics_listen`).
    pub async fn address(&mut self, field: &str) -> std::net::SocketAddr {
        self.wait_for(field).await["fields"][field]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// A TLS client trusting the PEM CAs in `cas`, offering `alpn`, with session resumption off so
/// every connection is a full handshake, as kube-apiserver's Go client makes them.
pub fn tls_client(cas: &[&str], alpn: &[&[u8]]) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for pem in cas {
        for ca in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(portcullis::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = rustls::client::Resumption::disabled();
    std::sync::Arc::new(config)
}

pub async fn tls_connect(
    addr: std::net::SocketAddr,
    ca: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(tls_client(&[ca], &[]))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// A POST to /validate over TLS with `Connection: close`, returning the whole answer.
pub async fn post_review(addr: std::net::SocketAddr, ca: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls_connect(addr, ca).await;
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body).await.unwrap();
    let mut out = String::new();
    tls.read_to_string(&mut out).await.ok();
    out
}

/// A plain-HTTP GET to the metrics listener, returning the whole answer.
pub async fn plain_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut tcp,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut tcp, &mut out)
        .await
        .ok();
    out
}

/// `portcullis reports` with JSON logs at info and its metrics on a loopback port, judging with
/// `policies` against the cluster `kubeconfig` names, writing up to `writes_per_second`; hand
/// it to `Portcullis::spawn`.
pub fn portcullis_reports(
    policies: &Path,
    kubeconfig: &Path,
    writes_per_second: u32,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .args([
            "reports",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .args(["--policies", policies.to_str().unwrap()])
        .args(["--max-writes-per-second", &writes_per_second.to_string()])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

/// What a loopback API server answers a watch with: a stream that never sends an event, as an
/// apiserver with nothing to report does.
pub fn quiet_watch() -> axum::response::Response {
    let never = futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
    axum::response::Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(never))
        .unwrap()
}

/// Serves `app` on a pre-bound loopback port until the test ends: the loopback API servers
/// kube-rs clients are pointed at.
pub async fn api_server(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Every `.kyverno-test/kyverno-test.yaml` below `dir`, in path order.
pub fn kyverno_tests(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in sorted_files(dir) {
        if entry.is_dir() {
            let test = entry.join("kyverno-test.yaml");
            if entry.file_name().is_some_and(|n| n == ".kyverno-test") && test.is_file() {
                out.push(test);
            } else {
                out.extend(kyverno_tests(&entry));
            }
        }
    }
    out
}

/// Where `.ci/run` and tests/controlplane/build.sh keep the tools they build, outside the
/// clone: `$XDG_CACHE_HOME/portcullis-tools`, else `~/.cache/portcullis-tools`.
pub fn tools_cache() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .map(|c| c.join("portcullis-tools"))
}

/// `helm` from PATH or the tools cache `.ci/run` installs it into; `None` (said loudly)
/// outside CI when there is none, a failure under CI.
pub fn helm() -> Option<std::path::PathBuf> {
    let cache = tools_cache().map(|c| c.join("bin/helm"));
    let found = std::process::Command::new("helm")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
        .then(|| std::path::PathBuf::from("helm"))
        .or_else(|| cache.filter(|c| c.is_file()));
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "helm is not installed, so the chart cannot be tested (.ci/run installs it)"
        );
        eprintln!("NOT TESTED: helm is not installed (.ci/run installs it)");
    }
    found
}

/// `helm` with `args`, run at the repository's root, its state kept in `home` when given:
/// what it printed, or a failure showing helm's own words.
pub fn run_helm(helm: &Path, args: &[&str], home: Option<&Path>) -> String {
    let mut command = std::process::Command::new(helm);
    command.args(args).current_dir(repo());
    if let Some(home) = home {
        command.envs(["HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"].map(|v| (v, home)));
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
