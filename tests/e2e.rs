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
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

/// The versions tests/controlplane/go.mod pins; the cache directory is named after them.
const VERSIONS: &str = "controlplane-v1.36.3-etcd-v3.6.8";

/// Where build.sh puts the binaries.
fn binaries() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    let dir = cache.join("portcullis-tools").join(VERSIONS);
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

        // portcullis with its own certificate for 127.0.0.1, watching namespaces through the
        // apiserver.
        let webhook = portcullis::tls::generate(&["127.0.0.1".into()], 1).unwrap();
        let certs = dir.path().join("webhook");
        std::fs::create_dir(&certs).unwrap();
        let paths = portcullis::tls::write(&certs, &webhook).unwrap();
        let mut portcullis = Portcullis::spawn(
            portcullis_serve(dir.path())
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

        // deploy/'s webhooks, pointed at that address.
        let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&webhook.ca_cert);
        for mut doc in yaml_docs(&repo().join("deploy/base/webhooks.yaml")) {
            for hook in doc["webhooks"].as_array_mut().unwrap() {
                let path = hook["clientConfig"]["service"]["path"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                hook["clientConfig"] =
                    json!({"url": format!("https://{listen}{path}"), "caBundle": ca_bundle});
            }
            let pp = PostParams::default();
            if doc["kind"] == "MutatingWebhookConfiguration" {
                let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
                api.create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap();
            } else {
                let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
                api.create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap();
            }
        }
        let plane = ControlPlane {
            _etcd: etcd,
            _apiserver: apiserver,
            _controllers: controllers,
            portcullis,
            dir,
            client,
        };
        // The apiserver picks registrations up asynchronously: wait until a pod that breaks
        // the policy is refused by portcullis.
        plane.namespace("e2e").await;
        until("the webhooks in force", || async {
            matches!(plane.create_pod("e2e", &root_pod("probe"), true).await,
                Err(ref m) if m.contains("portcullis"))
        })
        .await;
        Some(plane)
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
    // A pod as users write it: /mutate fills the limits and the non-root defaults, so what
    // /validate then denies is what only its owner can add, each check named with its fix.
    let denial = plane
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
    let denial = plane
        .create_pod("e2e", &root_pod("root"), false)
        .await
        .unwrap_err();
    assert!(denial.contains("[run-as-non-root]"), "{denial}");
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

    // A pod with probes: /mutate's defaults are patched in, stored, and then pass /validate.
    plane
        .create_pod("e2e", &good_pod("good"), false)
        .await
        .unwrap();
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
    let staged = policies.path().join("default.yaml.staged");
    std::fs::write(&staged, edited("enforce")).unwrap();
    std::fs::rename(&staged, &file).unwrap();
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
