//! The binary as a platform team runs it: `portcullis serve` on a fresh machine generates a
//! development certificate, becomes ready, answers over TLS, and exits 0 on SIGTERM; a broken
//! policy file stops startup with the file and field named.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

#[tokio::test]
async fn serve_on_a_fresh_machine_generates_a_dev_certificate_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Portcullis::spawn(&mut portcullis_serve(dir.path()));
    let [addr, metrics] = server.addresses(["listen", "metrics_listen"]).await;
    let certs = dir.path().join("certs");
    for f in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(certs.join(f).is_file(), "{f} not generated");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(certs.join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key must be private");
    }
    let ca = std::fs::read_to_string(certs.join("ca.crt")).unwrap();
    let status = curl_like(addr, &ca, "/readyz").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        plain_get(metrics, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );

    // A request in flight when SIGTERM arrives. `Expect: 100-continue` makes the server say
    // when its handler has started reading the body, so the request is provably in progress.
    let review = std::fs::read(apiserver_fixtures().join("create-pod-2.json")).unwrap();
    let mut in_flight = tls_connect(addr, &ca).await;
    let head = format!(
        "POST /validate?timeout=5s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        review.len()
    );
    in_flight.write_all(head.as_bytes()).await.unwrap();
    in_flight.flush().await.unwrap();
    let mut interim = [0u8; 25];
    in_flight.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    let rest = review.as_slice();
    let pid = server.child.id().unwrap() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    server
        .wait_for("listener closed; draining in-flight requests")
        .await;
    // Unready at once, so kubelet and the Service stop sending; the listener is closed.
    assert!(
        plain_get(metrics, "/readyz")
            .await
            .starts_with("HTTP/1.1 503")
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener stops accepting"
    );
    // The request in flight still completes.
    in_flight.write_all(rest).await.unwrap();
    let mut answer = String::new();
    in_flight.read_to_string(&mut answer).await.ok();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("6506b51d-0eb5-4129-a9a2-550fb38d21ab"),
        "the uid is answered"
    );
    let exit = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .expect("exits after draining")
        .unwrap();
    assert!(exit.success(), "SIGTERM must exit 0, got {exit}");
}

/// A minimal GET over TLS that returns the status line.
async fn curl_like(addr: std::net::SocketAddr, ca: &str, path: &str) -> String {
    let mut tls = tls_connect(addr, ca).await;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tls.read_to_string(&mut out).await.ok();
    out.lines().next().unwrap_or("").to_owned()
}

/// `serve` on loopback ports with `args`, run in `dir` until it exits by itself.
/// `dir/policies`, holding the shipped default policy as `edit` changes it, in `file`.
fn edited_default(
    dir: &std::path::Path,
    file: &str,
    edit: impl Fn(&str) -> String,
) -> std::path::PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir(&policies).unwrap();
    let default = std::fs::read_to_string(repo().join("policies/default.yaml")).unwrap();
    std::fs::write(policies.join(file), edit(&default)).unwrap();
    policies
}

fn with_namespace_labels(default: &str) -> String {
    default.replace("spec:\n", "spec:\n  namespaceLabels: true\n")
}

async fn serve_until_exit(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    portcullis_serve(dir).args(args).output().await.unwrap()
}

#[tokio::test]
async fn a_broken_policy_file_stops_startup_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let policies = edited_default(dir.path(), "broken.yaml", |d| {
        d.replacen("mode: enforce", "mode: enforced", 1)
    });
    let out = serve_until_exit(dir.path(), &["--policies", policies.to_str().unwrap()]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.yaml"), "{stderr}");
    assert!(
        stderr.contains("unknown variant `enforced`") && stderr.contains("mode: enforced"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("certs").exists(),
        "nothing is started before policies load"
    );
}

#[tokio::test]
async fn certs_writes_a_ca_and_a_serving_certificate_for_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let out = binary()
        .args([
            "certs",
            "--service",
            "portcullis",
            "--namespace",
            "guard",
            "--days",
            "30",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let bundle = String::from_utf8(out.stdout).unwrap();
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(bundle.trim())
            .unwrap(),
        ca,
        "stdout is the caBundle"
    );

    let pem = std::fs::read(dir.path().join("tls.crt")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let mut sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    sans.sort();
    assert_eq!(
        sans,
        [
            "portcullis",
            "portcullis.guard",
            "portcullis.guard.svc",
            "portcullis.guard.svc.cluster.local"
        ]
    );
    let validity = cert.validity();
    let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) as f64 / 86400.0;
    assert!((30.0..30.1).contains(&days), "{days} days");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }
}

/// What the image holds, tested without a Docker engine: the Dockerfile's final stage is read,
/// its files laid out in a read-only directory (plus the certificate a Secret would mount),
/// and the binary started as the image's numeric user with the image's arguments, re-rooted.
#[cfg(unix)]
#[tokio::test]
async fn the_image_layout_runs_as_non_root_from_a_read_only_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let final_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(
        final_stage.starts_with("gcr.io/distroless/"),
        "runs from distroless: {final_stage}"
    );
    let directive = |name: &str| -> Vec<String> {
        let line = final_stage
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name}"));
        serde_json::from_str(line[name.len()..].trim()).unwrap()
    };
    let user = final_stage
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .unwrap()
        .trim();
    let (uid, gid) = user.split_once(':').unwrap();
    assert!(uid.parse::<u32>().unwrap() > 0, "a numeric non-root user");
    let copies: Vec<&str> = final_stage
        .lines()
        .filter(|l| l.starts_with("COPY"))
        .collect();
    assert_eq!(
        copies.len(),
        2,
        "the binary and the policies only: {copies:?}"
    );

    // The image's files: /portcullis and /policies (*.yaml and README.md), plus /certs.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::copy(env!("CARGO_BIN_EXE_portcullis"), root.join("portcullis")).unwrap();
    std::fs::create_dir(root.join("policies")).unwrap();
    for entry in std::fs::read_dir(repo().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_file() && (name.ends_with(".yaml") || name == "README.md") {
            std::fs::copy(&path, root.join("policies").join(&name)).unwrap();
        }
    }
    let bundle = portcullis::tls::generate(&["localhost".into()], 1).unwrap();
    portcullis::tls::write(&root.join("certs"), &bundle).unwrap();
    for (path, mode) in [
        (root.join("certs/tls.key"), 0o444),
        (root.join("certs"), 0o555),
        (root.join("policies"), 0o555),
        (root.join("portcullis"), 0o555),
        (root.to_path_buf(), 0o555),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    let rerooted = |arg: &str| -> String {
        match arg {
            "0.0.0.0:8443" => "127.0.0.1:0".into(),
            a if a.starts_with('/') => format!("{}{a}", root.display()),
            a => a.into(),
        }
    };
    let mut argv: Vec<String> = directive("ENTRYPOINT")
        .iter()
        .map(|a| rerooted(a))
        .collect();
    argv.extend(directive("CMD").iter().map(|a| rerooted(a)));
    let mut server = Portcullis::spawn(
        Command::new("setpriv")
            .args(["--reuid", uid, "--regid", gid, "--clear-groups", "--"])
            .args(&argv)
            .current_dir(root)
            .env("PORTCULLIS_METRICS_LISTEN", "127.0.0.1:0")
            .env("PORTCULLIS_LOG_FORMAT", "json")
            .stderr(Stdio::piped())
            .kill_on_drop(true),
    );
    let [addr] = server.addresses(["listen"]).await;
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.child.id().unwrap())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == uid),
        "{uid_line}"
    );
    assert!(
        curl_like(addr, &bundle.ca_cert, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    assert_eq!(
        unsafe { libc::kill(server.child.id().unwrap() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let exit = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit}");
    // Restore write permission so the temporary directory can be removed.
    for path in [
        root.to_path_buf(),
        root.join("certs"),
        root.join("policies"),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A Secret volume updates by pointing `..data` at a new directory; the server follows the
/// swap on its own and serves the new certificate from the next handshake.
#[cfg(unix)]
#[tokio::test]
async fn a_secret_style_symlink_swap_is_picked_up_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("tls");
    std::fs::create_dir(&mount).unwrap();
    let first = portcullis::tls::generate(&["localhost".into()], 1).unwrap();
    let second = portcullis::tls::generate(&["localhost".into()], 2).unwrap();
    portcullis::tls::write(&mount.join("..v1"), &first).unwrap();
    portcullis::tls::write(&mount.join("..v2"), &second).unwrap();
    mount_volume(&mount, "..v1", &["tls.crt", "tls.key"]);

    let mut server = Portcullis::spawn(
        portcullis_serve(dir.path())
            .args(["--cert-reload-interval", "100ms", "--tls-cert"])
            .arg(mount.join("tls.crt"))
            .arg("--tls-key")
            .arg(mount.join("tls.key")),
    );
    let [addr] = server.addresses(["listen"]).await;
    assert!(
        curl_like(addr, &first.ca_cert, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );

    swap_volume(&mount, "..v2");
    server.wait_for("serving a new certificate").await;
    assert!(
        curl_like(addr, &second.ca_cert, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    server.child.kill().await.unwrap();
}

#[tokio::test]
async fn candidate_policies_are_judged_alongside_and_counted_never_answered_with() {
    let dir = tempfile::tempdir().unwrap();
    let (live, candidate) = (dir.path().join("live"), dir.path().join("candidate"));
    let default = std::fs::read_to_string(repo().join("policies/default.yaml")).unwrap();
    for (d, text) in [
        (
            &live,
            default.replace("mode: enforce", "mode: audit").replace(
                "  mutation:",
                "  exemptions:\n  - {name: old, checks: [run-as-non-root], namespaces: [legacy-*], \
                 reason: r, owner: o, expires: 2099-01-01}\n  mutation:",
            ),
        ),
        (&candidate, default.clone()),
    ] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("default.yaml"), text).unwrap();
    }
    let mut server = Portcullis::spawn(
        portcullis_serve(dir.path())
            .args(["--policies", live.to_str().unwrap()])
            .args(["--candidate-policies", candidate.to_str().unwrap()]),
    );
    let [listen, metrics] = server.addresses(["listen", "metrics_listen"]).await;
    let ca = std::fs::read_to_string(dir.path().join("certs/ca.crt")).unwrap();
    let review = std::fs::read(apiserver_fixtures().join("create-pod-2.json")).unwrap();
    let answer = post_review(listen, &ca, &review).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("\"allowed\":true"),
        "the live set decides: {answer}"
    );
    // The decision line: who, what, and each violation as policy/check:mode.
    let decision = server.wait_for("validated").await;
    let f = &decision["fields"];
    assert_eq!(f["namespace"], "team-a", "{decision}");
    assert_eq!(f["user"], "admin");
    assert_eq!(f["dry_run"], false);
    assert_eq!(f["outcome"], "allowed-with-violations");
    assert!(f["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let violations = f["violations"].as_str().unwrap();
    assert!(
        violations.contains("default/liveness-probe:audit"),
        "{violations}"
    );
    let logged = server.wait_for("candidate policies disagree").await;
    assert_eq!(logged["fields"]["change"], "newly-denied");
    let text = plain_get(metrics, "/metrics").await;
    // The live set's exception debt is on /metrics from start-up.
    assert!(
        text.contains(r#"portcullis_exemptions_live{check="run-as-non-root",namespace="legacy-*",source="policy"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"portcullis_shadow_disagreements_total{check="liveness-probe",namespace="team-a",change="newly-denied"} 1"#),
        "{text}"
    );
    server.child.kill().await.unwrap();

    // A broken candidate set stops start-up like a broken live one.
    std::fs::write(
        candidate.join("default.yaml"),
        default.replacen("mode: enforce", "mode: enforced", 1),
    )
    .unwrap();
    let out = serve_until_exit(
        dir.path(),
        &[
            "--policies",
            live.to_str().unwrap(),
            "--candidate-policies",
            candidate.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("candidate/default.yaml"));
}

/// A minimal API server for the namespace watch: the metadata list kube-rs asks for, then a
/// watch that stays open with nothing to say.
async fn namespace_api() -> std::net::SocketAddr {
    use axum::body::Body;
    use axum::extract::Request;
    async fn api(req: Request) -> axum::response::Response {
        let query = req.uri().query().unwrap_or("");
        if query.contains("watch=true") || query.contains("watch=1") {
            return quiet_watch();
        }
        let list = serde_json::json!({
            "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": "7"},
            "items": [
                {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                 "metadata": {"name": "team-a", "resourceVersion": "5",
                              "labels": {"portcullis.dev/mode": "audit"}}},
                {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                 "metadata": {"name": "team-b", "resourceVersion": "6"}}
            ]
        });
        axum::response::Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(list.to_string()))
            .unwrap()
    }
    api_server(axum::Router::new().fallback(api)).await
}

/// The two listener addresses, once `event` has also been logged (before or after them).
async fn listeners_and(
    server: &mut Portcullis,
    event: &str,
) -> (std::net::SocketAddr, std::net::SocketAddr) {
    let [listen, metrics, _] = server
        .wait_for_all(["listen", "metrics_listen", event])
        .await;
    let addr = |log: &serde_json::Value, field: &str| {
        log["fields"][field].as_str().unwrap().parse().unwrap()
    };
    (addr(&listen, "listen"), addr(&metrics, "metrics_listen"))
}

#[tokio::test]
async fn namespace_labels_come_from_a_watch_that_never_blocks_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let policies = edited_default(dir.path(), "default.yaml", with_namespace_labels);
    let review = std::fs::read(apiserver_fixtures().join("create-pod-2.json")).unwrap();

    // `serve` watching namespaces through the API server at `api`.
    let watching = |api, mode| {
        Portcullis::spawn(
            portcullis_serve(dir.path())
                .args(["--policies", policies.to_str().unwrap()])
                .args(["--watch-namespaces", mode])
                .env("KUBECONFIG", kubeconfig(dir.path(), api)),
        )
    };

    // The API answers: once the cache has synced, team-a's label puts it in audit mode. Out
    // of a cluster, `auto` watches because the policy needs labels and a kubeconfig is there.
    let api = namespace_api().await;
    let mut server = watching(api, "auto");
    let (listen, metrics) = listeners_and(&mut server, "namespace label cache synced").await;
    let ca = std::fs::read_to_string(dir.path().join("certs/ca.crt")).unwrap();
    let answer = post_review(listen, &ca, &review).await;
    assert!(
        answer.contains("\"allowed\":true") && answer.contains("audit: "),
        "{answer}"
    );
    assert!(
        plain_get(metrics, "/metrics")
            .await
            .contains("portcullis_namespace_cache_synced 1")
    );
    server.child.kill().await.unwrap();

    // No API at all: the server is ready at once and judges with the policy's own modes.
    let gone = unused_address().await;
    let mut server = watching(gone, "always");
    // Ready and judging, while the watch fails and retries in the background.
    let failed = "namespace watch failed; retrying (label rules use the policy's modes meanwhile)";
    let (listen, metrics) = listeners_and(&mut server, failed).await;
    assert!(
        plain_get(metrics, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let answer = post_review(listen, &ca, &review).await;
    assert!(answer.contains("\"allowed\":false"), "{answer}");
    assert!(
        plain_get(metrics, "/metrics")
            .await
            .contains("portcullis_namespace_cache_synced 0")
    );
    server.child.kill().await.unwrap();
}

/// The warning `serve` logs when a policy reads namespace labels and no watch feeds them.
const UNWATCHED: &str = "these policies use namespace labels (namespaceLabels or a namespaceModes selector), but the namespace watch is off, so label rules and selectors will not match: serve with --watch-namespaces always (or auto with a kubeconfig) and get/list/watch on namespaces";

#[tokio::test]
async fn a_policy_that_needs_namespace_labels_without_the_watch_is_called_out() {
    let dir = tempfile::tempdir().unwrap();
    let policies = edited_default(dir.path(), "default.yaml", with_namespace_labels);
    let labels = std::fs::read_to_string(policies.join("default.yaml")).unwrap();
    let mut server = Portcullis::spawn(
        portcullis_serve(dir.path())
            .args(["--policies", policies.to_str().unwrap()])
            .args([
                "--watch-namespaces",
                "never",
                "--policy-reload-interval",
                "100ms",
            ]),
    );
    // At start-up, naming the policy.
    let warning = server.wait_for(UNWATCHED).await;
    assert_eq!(warning["fields"]["policies"], "[\"default\"]", "{warning}");
    server.wait_for("listen").await;
    // And again on a reload that still needs them.
    let selector = labels.replace(
        "spec:\n",
        "spec:\n  namespaceModes:\n  - {selector: {matchLabels: {tier: dev}}, mode: warn}\n",
    );
    std::fs::write(policies.join("default.yaml"), selector).unwrap();
    server.wait_for("policies reloaded").await;
    server.wait_for(UNWATCHED).await;
    server.child.kill().await.unwrap();
}
