//! End to end through a real control plane: etcd and kube-apiserver v1.36.3, built from their
//! Go modules by `tests/controlplane/build.sh` into a cache outside target/, started here on
//! loopback ports with generated certificates. portcullis runs as `serve` and is registered
//! with deploy/'s own webhook configurations (the URL form of clientConfig, with caBundle);
//! the tests then act as a user does, through the API. Without the binaries these tests say
//! loudly that they did not run; under CI (`CI=true`) that is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

/// The versions tests/controlplane/go.mod pins; the cache directory is named after them.
const VERSIONS: &str = "controlplane-v1.36.3-etcd-v3.6.8-r2";

/// Where build.sh puts the binaries.
fn binaries() -> Option<PathBuf> {
    let dir = tools_cache()?.join(VERSIONS);
    let present = ["etcd", "kube-apiserver", "kube-controller-manager"]
        .iter()
        .all(|b| dir.join(b).is_file());
    if !present {
        assert!(
            std::env::var("CI").is_err(),
            "no control plane in {}: run tests/controlplane/build.sh (.ci/run does)",
            dir.display()
        );
        eprintln!(
            "END-TO-END TESTS NOT RUN: no control plane in {} (tests/controlplane/build.sh builds it)",
            dir.display()
        );
        return None;
    }
    Some(dir)
}

/// A loopback port nothing listens on now, for a process that binds it itself.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct ControlPlane {
    _etcd: tokio::process::Child,
    _apiserver: tokio::process::Child,
    _controllers: tokio::process::Child,
    portcullis: Portcullis,
    /// Where portcullis listens, and its CA as a webhook's caBundle.
    listen: std::net::SocketAddr,
    ca_bundle: String,
    dir: tempfile::TempDir,
    client: kube::Client,
}

const TOKEN: &str = "e2e-admin-token";

/// A kube-rs client for the apiserver at `port`, as the admin the token file names.
fn client(port: u16, ca: &str) -> kube::Client {
    let mut config = kube::Config::new(format!("https://127.0.0.1:{port}").parse().unwrap());
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap();
    config.root_cert = Some(vec![der.to_vec()]);
    config.auth_info.token = Some(TOKEN.to_owned().into());
    kube::Client::try_from(config).unwrap()
}

/// The same, as a kubeconfig file, for portcullis's namespace watch.
fn admin_kubeconfig(dir: &Path, port: u16, ca: &str) -> PathBuf {
    let path = dir.join("admin.kubeconfig");
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: e2e, cluster: {{server: 'https://127.0.0.1:{port}', certificate-authority-data: {ca}}}}}]\n\
             users: [{{name: admin, user: {{token: {TOKEN}}}}}]\ncontexts: [{{name: e2e, context: {{cluster: e2e, user: admin}}}}]\n\
             current-context: e2e\n"
        ),
    )
    .unwrap();
    path
}

/// Polls `ready` until it holds, failing after `what` has had a minute: the processes here
/// start in seconds, so a minute means they will not.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut ready: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl ControlPlane {
    /// etcd, kube-apiserver and portcullis (serving `policies`), with deploy/'s webhooks
    /// registered against portcullis, or `None` when the binaries are not built.
    async fn start(policies: &Path) -> Option<Self> {
        let plane = Self::boot(policies).await?;
        for mut doc in yaml_docs(&repo().join("deploy/base/webhooks.yaml")) {
            plane.point_at_portcullis(&mut doc);
            plane.create_object(&doc).await;
        }
        plane.until_webhooks_in_force().await;
        Some(plane)
    }

    /// Makes the namespace `e2e` and waits there until portcullis's validating webhook
    /// refuses a root pod: the apiserver picks registrations up asynchronously.
    async fn until_webhooks_in_force(&self) {
        self.namespace("e2e").await;
        until("the webhooks in force", || async {
            matches!(self.create_pod("e2e", &root_pod("probe"), true).await,
                Err(ref m) if m.contains("validate.portcullis.dev"))
        })
        .await;
    }

    /// The same, with no webhook registered yet.
    async fn boot(policies: &Path) -> Option<Self> {
        Self::boot_on(policies, std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// The same, portcullis's webhook listening on `ip`.
    async fn boot_on(policies: &Path, ip: std::net::IpAddr) -> Option<Self> {
        let bin = binaries()?;
        let dir = tempfile::tempdir().unwrap();
        let (client_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let spawn = |program: PathBuf, args: Vec<String>, log: &str| {
            let log = std::fs::File::create(dir.path().join(log)).unwrap();
            tokio::process::Command::new(program)
                .args(args)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        };
        let etcd = spawn(
            bin.join("etcd"),
            vec![
                "--name=e2e".into(),
                format!("--data-dir={}", dir.path().join("etcd").display()),
                format!("--listen-client-urls=http://127.0.0.1:{client_port}"),
                format!("--advertise-client-urls=http://127.0.0.1:{client_port}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-cluster=e2e=http://127.0.0.1:{peer_port}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            "etcd.log",
        );

        // The apiserver's serving certificate, its service-account key, and an admin token.
        let serving =
            portcullis::tls::generate(&["127.0.0.1".into(), "localhost".into()], 1).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let cert = write("apiserver.crt", &serving.cert);
        let key = write("apiserver.key", &serving.key);
        let sa_key = rcgen::KeyPair::generate().unwrap();
        let sa = write("sa.key", &sa_key.serialize_pem());
        let sa_public = write("sa.pub", &sa_key.public_key_pem());
        let tokens = write(
            "tokens.csv",
            &format!("{TOKEN},admin,admin-uid,system:masters\n"),
        );
        let audit_policy = write(
            "audit-policy.yaml",
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n  resources: [{group: '', resources: [pods]}]\n- level: None\n",
        );
        let apiserver = spawn(
            bin.join("kube-apiserver"),
            vec![
                format!("--etcd-servers=http://127.0.0.1:{client_port}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=10.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--tls-cert-file={cert}"),
                format!("--tls-private-key-file={key}"),
                format!("--token-auth-file={tokens}"),
                "--authorization-mode=RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={sa_public}"),
                format!("--service-account-signing-key-file={sa}"),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                // Webhooks with a service reference are called at an endpoint of the Service
                // (there is no kube-proxy here to route a ClusterIP).
                "--enable-aggregator-routing=true".into(),
                // No controller-manager makes default ServiceAccounts here.
                "--disable-admission-plugins=ServiceAccount".into(),
                format!("--audit-policy-file={audit_policy}"),
                format!(
                    "--audit-log-path={}",
                    dir.path().join("audit.log").display()
                ),
            ],
            "apiserver.log",
        );
        let client = client(api_port, &serving.ca_cert);
        until("kube-apiserver ready", || {
            let client = client.clone();
            async move {
                let request = axum::http::Request::get("/readyz")
                    .body(Vec::new())
                    .unwrap();
                client.request_text(request).await.is_ok_and(|t| t == "ok")
            }
        })
        .await;

        // The Deployment and ReplicaSet controllers, so pods are made as in a cluster.
        let kubeconfig = admin_kubeconfig(dir.path(), api_port, &serving.ca_cert);
        let controllers = spawn(
            bin.join("kube-controller-manager"),
            vec![
                format!("--kubeconfig={}", kubeconfig.display()),
                "--controllers=deployment-controller,replicaset-controller".into(),
                "--leader-elect=false".into(),
                "--use-service-account-credentials=false".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
            ],
            "controller-manager.log",
        );

        // portcullis with its own certificate, for 127.0.0.1 and for the name the apiserver
        // checks when it calls the chart's Service, watching namespaces through the apiserver.
        let webhook =
            portcullis::tls::generate(&["127.0.0.1".into(), "portcullis.portcullis.svc".into()], 1)
                .unwrap();
        let certs = dir.path().join("webhook");
        std::fs::create_dir(&certs).unwrap();
        let paths = portcullis::tls::write(&certs, &webhook).unwrap();
        let mut portcullis = Portcullis::spawn(
            portcullis_serve_on(dir.path(), ip)
                .args(["--policies", policies.to_str().unwrap()])
                .args(["--tls-cert", paths.cert.to_str().unwrap()])
                .args(["--tls-key", paths.key.to_str().unwrap()])
                .args([
                    "--watch-namespaces",
                    "always",
                    "--policy-reload-interval",
                    "200ms",
                ])
                .env(
                    "KUBECONFIG",
                    admin_kubeconfig(dir.path(), api_port, &serving.ca_cert),
                ),
        );
        let listen = portcullis.address("listen").await;
        Some(ControlPlane {
            _etcd: etcd,
            _apiserver: apiserver,
            _controllers: controllers,
            portcullis,
            listen,
            ca_bundle: base64::engine::general_purpose::STANDARD.encode(&webhook.ca_cert),
            dir,
            client,
        })
    }

    /// Points every webhook of a webhook configuration at portcullis (the URL form of
    /// clientConfig, with its CA), keeping the path its service reference names.
    fn point_at_portcullis(&self, configuration: &mut Value) {
        for hook in configuration["webhooks"].as_array_mut().unwrap() {
            let path = hook["clientConfig"]["service"]["path"]
                .as_str()
                .unwrap()
                .to_owned();
            hook["clientConfig"] = json!({"url": format!("https://{}{path}", self.listen),
                                          "caBundle": self.ca_bundle});
        }
    }

    /// Creates any object, under strict field validation: the apiserver's error if refused.
    async fn try_create_object(&self, object: &Value) -> Result<(), String> {
        let (status, _, message) = self.post(object, false).await;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(message)
        }
    }

    async fn create_object(&self, object: &Value) {
        if let Err(e) = self.try_create_object(object).await {
            panic!("{e}: {object}");
        }
    }

    /// POSTs an object of any kind (a server-side dry-run when `dry_run`): the HTTP status,
    /// the warnings and the Status message. The kind's path comes from discovery.
    async fn post(&self, object: &Value, dry_run: bool) -> (u16, Vec<String>, String) {
        let Some(path) = self.collection(object).await else {
            return (404, Vec::new(), "kind not served".into());
        };
        let dry = if dry_run { "&dryRun=All" } else { "" };
        let request = axum::http::Request::post(format!("{path}?fieldValidation=Strict{dry}"))
            .header("content-type", "application/json")
            .body(kube::client::Body::from(
                serde_json::to_vec(object).unwrap(),
            ))
            .unwrap();
        let response = self.client.send(request).await.unwrap();
        let status = response.status().as_u16();
        let warnings = response
            .headers()
            .get_all("warning")
            .iter()
            .map(|w| w.to_str().unwrap().to_owned())
            .collect();
        let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), 1 << 20)
            .await
            .unwrap();
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|s| s["message"].as_str().map(str::to_owned))
            .unwrap_or_default();
        (status, warnings, message)
    }

    /// The path an object of this kind is created at, or `None` when the apiserver does not
    /// serve its apiVersion and kind.
    async fn collection(&self, object: &Value) -> Option<String> {
        let api_version = object["apiVersion"].as_str()?;
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, object["kind"].as_str()?);
        let (resource, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .ok()?;
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        Some(match caps.scope {
            kube::discovery::Scope::Namespaced => {
                let namespace = object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default");
                format!("{base}/namespaces/{namespace}/{}", resource.plural)
            }
            kube::discovery::Scope::Cluster => format!("{base}/{}", resource.plural),
        })
    }

    /// Deletes an object created with `create_object`.
    async fn delete_object(&self, object: &Value) {
        let path = self.collection(object).await.unwrap();
        let name = object["metadata"]["name"].as_str().unwrap();
        let request = axum::http::Request::delete(format!("{path}/{name}"))
            .body(kube::client::Body::empty())
            .unwrap();
        let response = self.client.send(request).await.unwrap();
        assert!(response.status().is_success(), "delete {path}/{name}");
    }

    /// The shipped policy enforced, as a user meets it: a pod as users write it denied
    /// naming what only its owner can add, a root pod denied, and a pod with probes stored
    /// with /mutate's defaults (as `e2e/good`).
    async fn enforces_the_shipped_policy(&self) {
        // A pod as users write it: /mutate fills the limits and the non-root defaults, so what
        // /validate then denies is what only its owner can add, each check named with its fix.
        let denial = self
            .create_pod("e2e", &bare_pod("bare"), false)
            .await
            .unwrap_err();
        assert!(
            denial.contains("admission webhook \"validate.portcullis.dev\" denied the request")
                && denial.contains("[liveness-probe]")
                && denial.contains("[readiness-probe]")
                && !denial.contains("[resource-limits]"),
            "{denial}"
        );
        // A pod that asks for root: no default can override that, and it is denied.
        let denial = self
            .create_pod("e2e", &root_pod("root"), false)
            .await
            .unwrap_err();
        assert!(denial.contains("[run-as-non-root]"), "{denial}");
        // A pod with probes: /mutate's defaults are patched in, stored, and then pass /validate.
        self.create_pod("e2e", &good_pod("good"), false)
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "e2e");
        let pod = serde_json::to_value(pods.get("good").await.unwrap()).unwrap();
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["resources"]["limits"]["cpu"], "500m", "{pod}");
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["spec"]["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
    }

    async fn namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        api.create(&PostParams::default(), &ns).await.unwrap();
    }

    /// Creates a pod through the raw API: the HTTP status and the warnings the apiserver
    /// passed on (kubectl prints these as `Warning:` lines).
    async fn create_pod_raw(&self, namespace: &str, pod: &Value) -> (u16, Vec<String>) {
        let request = axum::http::Request::post(format!("/api/v1/namespaces/{namespace}/pods"))
            .header("content-type", "application/json")
            .body(kube::client::Body::from(serde_json::to_vec(pod).unwrap()))
            .unwrap();
        let response = self.client.send(request).await.unwrap();
        let warnings = response
            .headers()
            .get_all("warning")
            .iter()
            .map(|w| w.to_str().unwrap().to_owned())
            .collect();
        (response.status().as_u16(), warnings)
    }

    /// Creates a pod (server-side dry-run when `dry_run`): the stored pod, or the denial.
    async fn create_pod(&self, namespace: &str, pod: &Value, dry_run: bool) -> Result<Pod, String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pp = PostParams {
            dry_run,
            ..PostParams::default()
        };
        api.create(&pp, &serde_json::from_value(pod.clone()).unwrap())
            .await
            .map_err(|e| e.to_string())
    }
}

/// A pod as a user writes it: no probes, no limits, nothing about users.
fn bare_pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}})
}

/// A pod that passes the default policy once /mutate's defaults are in.
fn good_pod(name: &str) -> Value {
    let probe = json!({"httpGet": {"path": "/healthz", "port": 8080}});
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1.0",
               "livenessProbe": probe, "readinessProbe": probe}]}})
}

/// A pod with probes that asks to run as root.
fn root_pod(name: &str) -> Value {
    let mut pod = good_pod(name);
    pod["spec"]["securityContext"] = json!({"runAsUser": 0});
    pod
}

fn shipped_policies() -> PathBuf {
    repo().join("policies")
}

#[tokio::test]
async fn through_a_real_apiserver_pods_are_denied_defaulted_and_dry_run() {
    let Some(plane) = ControlPlane::start(&shipped_policies()).await else {
        return;
    };
    plane.enforces_the_shipped_policy().await;
    // Server-side dry-run is judged alike, and nothing is stored.
    let dry = plane
        .create_pod("e2e", &bare_pod("bare"), true)
        .await
        .unwrap_err();
    assert!(dry.contains("liveness-probe"), "{dry}");
    let stored = plane
        .create_pod("e2e", &good_pod("dry"), true)
        .await
        .unwrap();
    assert_eq!(stored.metadata.name.as_deref(), Some("dry"));
    let pods: Api<Pod> = Api::namespaced(plane.client.clone(), "e2e");
    assert!(
        pods.get_opt("dry").await.unwrap().is_none(),
        "a dry run stores nothing"
    );

    // `kubectl debug` with a root ephemeral container: the subresource is judged too.
    let debug = json!({"spec": {"ephemeralContainers": [{"name": "debugger", "image": "busybox:1.36",
        "securityContext": {"runAsUser": 0}}]}});
    let denial = pods
        .patch_subresource(
            "ephemeralcontainers",
            "good",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(debug),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(denial.contains("[run-as-non-root]"), "{denial}");

    // A Deployment without probes is denied when it is applied, not when its pods fail later.
    let deployments: Api<Deployment> = Api::namespaced(plane.client.clone(), "e2e");
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}});
    let denial = deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(deployment).unwrap(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(denial.contains("liveness-probe"), "{denial}");

    // A Deployment with probes is admitted, and the pods its ReplicaSet's controller makes
    // carry /mutate's defaults.
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}},
                              "spec": good_pod("template")["spec"].clone()}}});
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(deployment).unwrap(),
        )
        .await
        .unwrap();
    let made = kube::api::ListParams::default().labels("app=app");
    until("a pod made by the ReplicaSet controller", || {
        let (pods, made) = (pods.clone(), made.clone());
        async move { pods.list(&made).await.is_ok_and(|l| !l.items.is_empty()) }
    })
    .await;
    let pod = serde_json::to_value(&pods.list(&made).await.unwrap().items[0]).unwrap();
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["limits"]["memory"], "256Mi",
        "{pod}"
    );
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);

    // Would-be denials reach the apiserver's audit log as annotations.
    let audit = std::fs::read_to_string(plane.dir.path().join("audit.log")).unwrap();
    assert!(
        audit.contains("liveness-probe"),
        "the audit log carries portcullis's annotations"
    );
}

#[tokio::test]
async fn warn_and_audit_modes_reach_kubectl_and_the_audit_log_and_edits_apply_live() {
    // The shipped policy with liveness in warn, readiness in audit, and namespace labels on.
    let policies = tempfile::tempdir().unwrap();
    let default = std::fs::read_to_string(shipped_policies().join("default.yaml")).unwrap();
    let edited = |readiness: &str| {
        default
            .replace(
                "liveness-probe:\n      mode: enforce",
                "liveness-probe:\n      mode: warn",
            )
            .replace(
                "readiness-probe:\n      mode: enforce",
                &format!("readiness-probe:\n      mode: {readiness}"),
            )
            .replace("spec:\n", "spec:\n  namespaceLabels: true\n")
    };
    let file = policies.path().join("default.yaml");
    std::fs::write(&file, edited("audit")).unwrap();
    assert!(edited("audit").contains("mode: warn"), "the edit took");
    let Some(mut plane) = ControlPlane::start(policies.path()).await else {
        return;
    };

    // Warn: admitted, and the apiserver hands portcullis's warning to the client.
    let (status, warnings) = plane.create_pod_raw("e2e", &bare_pod("warned")).await;
    assert_eq!(status, 201, "{warnings:?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("livenessProbe") && w.contains("[liveness-probe]")),
        "{warnings:?}"
    );
    // Audit: nothing said to the client, everything in the apiserver's audit log, under the
    // webhook's name.
    assert!(
        !warnings.iter().any(|w| w.contains("readiness")),
        "{warnings:?}"
    );
    let audit = std::fs::read_to_string(plane.dir.path().join("audit.log")).unwrap();
    let event = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["objectRef"]["name"] == "warned" && e["stage"] == "ResponseComplete")
        .expect("an audit event for the pod");
    let annotation = event["annotations"]["validate.portcullis.dev/readiness-probe"]
        .as_str()
        .unwrap_or_default();
    assert!(annotation.starts_with("audit: "), "{event}");

    // An edit to the policy file is in force without a restart.
    replace_file(&file, &edited("enforce"));
    plane.portcullis.wait_for("policies reloaded").await;
    let denial = plane
        .create_pod("e2e", &bare_pod("now-denied"), false)
        .await
        .unwrap_err();
    assert!(denial.contains("[readiness-probe]"), "{denial}");

    // A namespace labelled into audit mode is picked up from the live namespace watch.
    let namespaces: Api<Namespace> = Api::all(plane.client.clone());
    let labelled = serde_json::from_value(
        json!({"metadata": {"name": "relaxed", "labels": {"portcullis.dev/mode": "audit"}}}),
    )
    .unwrap();
    namespaces
        .create(&PostParams::default(), &labelled)
        .await
        .unwrap();
    until("the namespace label seen", || async {
        plane
            .create_pod("relaxed", &bare_pod("relaxed"), true)
            .await
            .is_ok()
    })
    .await;
    let denial = plane.create_pod("relaxed", &root_pod("root"), true).await;
    assert!(denial.is_ok(), "audit mode admits even root: {denial:?}");
}

#[tokio::test]
async fn policy_reports_are_accepted_by_the_real_crd_and_follow_the_cluster() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let Some(plane) = ControlPlane::start(&shipped_policies()).await else {
        return;
    };
    // The wgpolicyk8s.io CRDs, as Kyverno installs them.
    let crds: Api<CustomResourceDefinition> = Api::all(plane.client.clone());
    for kind in ["policyreports", "clusterpolicyreports"] {
        let crd = yaml_docs(&data().join(format!("crds/wgpolicyk8s.io_{kind}.yaml"))).remove(0);
        crds.create(
            &PostParams::default(),
            &serde_json::from_value(crd).unwrap(),
        )
        .await
        .unwrap();
        let name = format!("{kind}.wgpolicyk8s.io");
        until("the CRD established", || {
            let (crds, name) = (crds.clone(), name.clone());
            async move {
                crds.get(&name).await.is_ok_and(|c| {
                    c.status.and_then(|s| s.conditions).is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
                })
            }
        })
        .await;
    }
    // A workload to report on (admitted, so stored).
    plane
        .create_pod("e2e", &good_pod("listed"), false)
        .await
        .unwrap();

    // `portcullis audit -o policyreport` against the live cluster: every report it prints is
    // accepted under strict field validation.
    let kubeconfig = plane.dir.path().join("admin.kubeconfig");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "audit",
            "-o",
            "policyreport",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ])
        .args(["--policies", shipped_policies().to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "{out:?}"
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reports = list["items"].as_array().unwrap();
    assert!(!reports.is_empty(), "{list}");
    for report in reports {
        let namespace = report["metadata"]["namespace"].as_str().unwrap();
        let request = axum::http::Request::post(format!(
            "/apis/wgpolicyk8s.io/v1alpha2/namespaces/{namespace}/policyreports?fieldValidation=Strict"
        ))
        .header("content-type", "application/json")
        .body(kube::client::Body::from(serde_json::to_vec(report).unwrap()))
        .unwrap();
        let response = plane.client.send(request).await.unwrap();
        assert_eq!(response.status().as_u16(), 201, "{report}");
    }
    // Cleared for the continuous writer, which owns the reports it labels.
    let request = axum::http::Request::delete(
        "/apis/wgpolicyk8s.io/v1alpha2/namespaces/e2e/policyreports/portcullis",
    )
    .body(kube::client::Body::empty())
    .unwrap();
    assert!(
        plane
            .client
            .send(request)
            .await
            .unwrap()
            .status()
            .is_success()
    );

    // `portcullis reports`: the report appears, and follows a new pod.
    let mut writer = Portcullis::spawn(&mut portcullis_reports(
        &shipped_policies(),
        &kubeconfig,
        100,
    ));
    let resource = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "wgpolicyk8s.io",
        "v1alpha2",
        "PolicyReport",
    ));
    let api =
        Api::<kube::api::DynamicObject>::namespaced_with(plane.client.clone(), "e2e", &resource);
    let names = |api: Api<kube::api::DynamicObject>| async move {
        api.get_opt("portcullis").await.unwrap().map(|r| {
            r.data["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["resources"][0]["name"].as_str().unwrap().to_owned())
                .collect::<std::collections::BTreeSet<String>>()
        })
    };
    writer.wait_for("reports in sync").await;
    assert!(names(api.clone()).await.unwrap().contains("listed"));
    plane
        .create_pod("e2e", &good_pod("second"), false)
        .await
        .unwrap();
    loop {
        writer.wait_for("reports in sync").await;
        if names(api.clone()).await.unwrap().contains("second") {
            break;
        }
    }
}

/// A Kyverno ValidatingPolicy as the ValidatingAdmissionPolicy it extends: the same spec
/// without the fields only Kyverno reads (its actions, autogen, background evaluation and
/// webhook settings).
fn admission_policy(validating_policy: &Value) -> Value {
    let mut spec = validating_policy["spec"].clone();
    for kyverno_only in [
        "validationActions",
        "autogen",
        "evaluation",
        "webhookConfiguration",
    ] {
        spec.as_object_mut().unwrap().remove(kyverno_only);
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
           "metadata": {"name": validating_policy["metadata"]["name"]}, "spec": spec})
}

fn binding(policy: &str, action: &str) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1",
           "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": policy},
           "spec": {"policyName": policy, "validationActions": [action]}})
}

/// A policy that fails every ConfigMap called `name`, with its Warn binding: once the
/// apiserver warns about it, every policy and binding created before it is in force too (the
/// plugin rebuilds its set from the informers' caches, filled in the order of creation).
fn sentinel(name: &str) -> [Value; 2] {
    let policy = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name},
        "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                     "operations": ["CREATE"], "resources": ["configmaps"]}]},
                 "validations": [{"expression": "object.metadata.name != 'parity-sentinel'"}]}});
    [policy, binding(name, "Warn")]
}

/// A policy's name, and whether kube-apiserver and portcullis found it violated.
type Verdicts = (String, bool, bool);

/// One object of the corpus judged by both: the test it comes from, its kind and name, and
/// for each policy of that test whether kube-apiserver and portcullis found it violated.
struct Judged {
    test: String,
    kind: String,
    name: String,
    /// The verdicts, or the apiserver's status and message when it refused the object before
    /// admission (or does not serve its kind).
    outcome: Result<Vec<Verdicts>, (u16, String)>,
}

#[tokio::test]
async fn native_validating_admission_policies_and_portcullis_agree_on_the_kyverno_cel_corpus() {
    // Every ValidatingPolicy of the corpus as a ValidatingAdmissionPolicy, loaded by
    // portcullis with a Deny binding (its denial names every policy that failed, however
    // many), beside a probe policy for ConfigMaps.
    let suite = data().join("conformance/kyverno-vpol");
    let mut rounds = Vec::new();
    let policies = tempfile::tempdir().unwrap();
    // JSON is YAML: each document written as JSON.
    let write = |name: &str, docs: &[Value]| {
        let text: Vec<String> = docs.iter().map(|d| format!("{d:#}\n")).collect();
        std::fs::write(
            policies.path().join(format!("{name}.yaml")),
            text.join("---\n"),
        )
        .unwrap();
    };
    for test_file in kyverno_tests(&suite) {
        let dir = test_file.parent().unwrap();
        let [test]: [Value; 1] = yaml_docs(&test_file).try_into().unwrap();
        let mut vaps = Vec::new();
        for p in test["policies"].as_array().unwrap() {
            for doc in yaml_docs(&dir.join(p.as_str().unwrap())) {
                let vap = admission_policy(&doc);
                let name = vap["metadata"]["name"].as_str().unwrap().to_owned();
                write(&name, &[vap.clone(), binding(&name, "Deny")]);
                vaps.push(vap);
            }
        }
        let mut objects = Vec::new();
        for r in test["resources"].as_array().unwrap() {
            for doc in yaml_docs(&dir.join(r.as_str().unwrap())) {
                objects.extend(portcullis::offline::objects(doc));
            }
        }
        let name = dir
            .parent()
            .unwrap()
            .strip_prefix(&suite)
            .unwrap()
            .display()
            .to_string();
        rounds.push((name, vaps, objects));
    }
    assert_eq!(rounds.len(), 67, "kyverno-test.yaml files");
    let probe =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "parity-probe"}});
    let [mut probe_policy, _] = sentinel("parity-probe");
    probe_policy["spec"]["validations"][0]["expression"] =
        json!("object.metadata.name != 'parity-probe'");
    write(
        "parity-probe",
        &[probe_policy, binding("parity-probe", "Deny")],
    );

    let Some(plane) = ControlPlane::boot(policies.path()).await else {
        return;
    };
    for namespace in ["foo", "monitoring", "policy-test", "test"] {
        plane.namespace(namespace).await;
    }
    // portcullis is sent every kind the corpus holds, as the apiserver sends a webhook that
    // matches everything.
    let mut webhook = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "parity.portcullis.dev"},
        "webhooks": [{"name": "parity.portcullis.dev",
            "clientConfig": {"service": {"namespace": "-", "name": "-", "path": "/validate"}},
            "rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"],
                       "operations": ["CREATE"], "scope": "*"}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"], "timeoutSeconds": 10}]});
    plane.point_at_portcullis(&mut webhook);
    plane.create_object(&webhook).await;
    until("portcullis's webhook in force", || async {
        plane.post(&probe, true).await.2.contains("[parity-probe]")
    })
    .await;

    // Round by round, each test's policies installed natively with a Warn binding (the
    // apiserver warns once per failed validation, naming the policy), and each of its objects
    // sent as a server-side dry-run CREATE: one request, judged by both.
    let mut judged = Vec::new();
    for (round, (test, vaps, objects)) in rounds.iter().enumerate() {
        let mut installed = Vec::new();
        for vap in vaps {
            let name = vap["metadata"]["name"].as_str().unwrap();
            installed.push(vap.clone());
            installed.push(binding(name, "Warn"));
        }
        let marker = format!("parity-sentinel-{round}");
        installed.extend(sentinel(&marker));
        for object in &installed {
            plane.create_object(object).await;
        }
        let sentinel_object = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "parity-sentinel"}});
        until("the round's policies in force", || async {
            let (_, warnings, _) = plane.post(&sentinel_object, true).await;
            warnings.iter().any(|w| w.contains(&format!("'{marker}'")))
        })
        .await;
        for object in objects {
            let (status, warnings, message) = plane.post(object, true).await;
            let outcome = if status == 404 || status == 422 || status == 400 {
                Err((status, message))
            } else {
                Ok(vaps
                    .iter()
                    .map(|vap| {
                        let name = vap["metadata"]["name"].as_str().unwrap();
                        let native = warnings.iter().any(|w| {
                            w.contains(&format!("ValidatingAdmissionPolicy '{name}' with binding"))
                        });
                        let ours = message.contains("portcullis")
                            && message.contains(&format!(" [{name}]"));
                        (name.to_owned(), native, ours)
                    })
                    .collect())
            };
            judged.push(Judged {
                test: test.clone(),
                kind: object["kind"].as_str().unwrap_or_default().to_owned(),
                name: object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                outcome,
            });
        }
        for object in installed.iter().rev() {
            plane.delete_object(object).await;
        }
    }

    // Every difference, and every object the apiserver would not judge, is in
    // tests/conformance.md.
    let (mut compared, mut failing) = (0, 0);
    let mut found = Vec::new();
    for j in &judged {
        match &j.outcome {
            Err((status, message)) => found.push(format!(
                "| `{}` | `{}` | `{}` | not judged: {status} | {message} |",
                j.test, j.kind, j.name
            )),
            Ok(verdicts) => {
                for (policy, native, ours) in verdicts {
                    compared += 1;
                    failing += usize::from(*native);
                    if native != ours {
                        let word = |f: bool| if f { "fail" } else { "admit" };
                        found.push(format!(
                            "| `{}` | `{}` | `{}` | `{policy}`: kube-apiserver {}, portcullis {} | |",
                            j.test,
                            j.kind,
                            j.name,
                            word(*native),
                            word(*ours)
                        ));
                    }
                }
            }
        }
    }
    eprintln!("VAP parity: {compared} verdicts compared, {failing} failures");
    let text = std::fs::read_to_string(repo().join("tests/conformance.md")).unwrap();
    let section = text
        .split("## Native ValidatingAdmissionPolicy parity")
        .nth(1)
        .expect("tests/conformance.md has a native parity section");
    let documented: Vec<&str> = section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| `"))
        .collect();
    // Rows are told apart by test, kind, resource and finding; the last cell is the reason.
    let key = |row: &str| row.split(" | ").take(4).collect::<Vec<_>>().join(" | ");
    let undocumented: Vec<&String> = found
        .iter()
        .filter(|f| !documented.iter().any(|d| key(d) == key(f)))
        .collect();
    let stale: Vec<&&str> = documented
        .iter()
        .filter(|d| !found.iter().any(|f| key(d) == key(f)))
        .collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "undocumented:\n{}\nstale rows of tests/conformance.md:\n{}",
        undocumented
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        stale.iter().map(|s| **s).collect::<Vec<_>>().join("\n"),
    );
    // Pinned, so an object that silently stopped being judged shows.
    assert_eq!(
        (compared, failing),
        (1305, 260),
        "verdicts compared, failures"
    );
}

/// `helm` with `args` against the control plane, its state kept in `home`.
fn helm_run(helm: &Path, plane: &ControlPlane, home: &Path, args: &[&str]) -> String {
    let kubeconfig = plane.dir.path().join("admin.kubeconfig");
    let mut all = args.to_vec();
    all.extend(["--kubeconfig", kubeconfig.to_str().unwrap()]);
    run_helm(helm, &all, Some(home))
}

#[tokio::test]
async fn the_helm_chart_installs_into_a_real_apiserver_and_its_webhooks_judge_pods() {
    let Some(helm) = helm() else { return };
    // What the chart's pods would mount: its policies ConfigMap, as files.
    let served = tempfile::tempdir().unwrap();
    std::fs::copy(
        shipped_policies().join("default.yaml"),
        served.path().join("default.yaml"),
    )
    .unwrap();
    // An endpoint may not be a loopback address, so portcullis listens on this machine's own.
    let ip = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("198.51.100.1:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback());
    let Some(ip) = ip else {
        assert!(
            std::env::var("CI").is_err(),
            "this machine has no routable IPv4 address to serve the chart's endpoint on"
        );
        eprintln!("NOT TESTED: no routable IPv4 address for the chart's endpoint");
        return;
    };
    let Some(plane) = ControlPlane::boot_on(served.path(), ip).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let chart = "deploy/helm/portcullis";
    // As the README installs it, enforcing, with the CA of portcullis's certificate.
    helm_run(
        &helm,
        &plane,
        home.path(),
        &[
            "install",
            "portcullis",
            chart,
            "-f",
            "deploy/helm/portcullis/values-enforce.yaml",
            "--set",
            &format!("certificates.caBundle={}", plane.ca_bundle),
        ],
    );
    // The chart's objects are stored as the apiserver accepted them.
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(plane.client.clone(), "portcullis");
    let policies = configmaps.get("portcullis-policies").await.unwrap();
    assert_eq!(
        policies.data.unwrap()["default.yaml"],
        std::fs::read_to_string(shipped_policies().join("default.yaml")).unwrap(),
        "the chart's enforce policy is the one portcullis serves here"
    );
    let deployments: Api<Deployment> = Api::namespaced(plane.client.clone(), "portcullis");
    assert!(deployments.get_opt("portcullis").await.unwrap().is_some());

    // No kubelet runs the chart's pods here: portcullis, serving outside, is made the
    // Service's ready endpoint, which is where the apiserver sends the chart's webhooks.
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "portcullis-e2e", "namespace": "portcullis",
                     "labels": {"kubernetes.io/service-name": "portcullis"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [plane.listen.ip().to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": plane.listen.port(), "protocol": "TCP"}]});
    plane.create_object(&slice).await;
    plane.until_webhooks_in_force().await;
    // Through the chart's own webhooks, both of them.
    plane.enforces_the_shipped_policy().await;

    // `helm upgrade` to the audit values: the same root pod is admitted (audit mode only
    // records it), and no defaults are patched in any more.
    helm_run(
        &helm,
        &plane,
        home.path(),
        &[
            "upgrade",
            "portcullis",
            chart,
            "--set",
            &format!("certificates.caBundle={}", plane.ca_bundle),
        ],
    );
    // The new ConfigMap reaches portcullis as a kubelet updates a mounted one: the file changes.
    let audit = configmaps
        .get("portcullis-policies")
        .await
        .unwrap()
        .data
        .unwrap();
    assert!(audit["default.yaml"].contains("mode: audit"), "{audit:?}");
    replace_file(&served.path().join("default.yaml"), &audit["default.yaml"]);
    let mut plane = plane;
    plane.portcullis.wait_for("policies reloaded").await;
    until("the root pod admitted in audit mode", || async {
        plane
            .create_pod("e2e", &root_pod("root"), true)
            .await
            .is_ok()
    })
    .await;
    until("the mutating webhook gone", || async {
        let pod = plane.create_pod("e2e", &good_pod("plain"), true).await;
        pod.is_ok_and(|p| {
            let spec = p.spec.unwrap();
            spec.security_context
                .and_then(|c| c.run_as_non_root)
                .is_none()
        })
    })
    .await;
}
