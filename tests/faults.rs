//! Faults under continuous load against a real process (loopback, bounded). SIGTERM while
//! keep-alive clients keep sending: every request is answered exactly once with its own uid;
//! with `--shutdown-delay` the server tells each client to close between requests, so no
//! client loses a request it has written (a closed connection is seen before sending, the case
//! kube-apiserver's Go client retries elsewhere); nothing gets a 5xx; the process exits 0.
//! Policy reload and certificate rotation under load: no request fails.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

const CLIENTS: usize = 8;
const PER_CLIENT: usize = 400;

#[derive(Debug)]
enum End {
    /// Sent everything it meant to.
    Finished,
    /// The connection closed before this request got any answer.
    Closed(String),
}

/// A TLS connection to `addr` carrying HTTP/1.1 (its driver spawned), and the certificate the
/// server presented.
async fn open(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    Vec<u8>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("the TLS handshake succeeds");
    let certificate = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    (sender, certificate)
}

/// `template` with its own uid, as a request body.
fn with_uid(template: &Value, uid: &str) -> Vec<u8> {
    let mut review = template.clone();
    review["request"]["uid"] = Value::String(uid.to_owned());
    serde_json::to_vec(&review).unwrap()
}

/// A review POSTed to /validate as kube-apiserver sends it.
fn post_validate(body: Vec<u8>) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post("/validate?timeout=5s")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Waits until `answered` has grown by enough that every client has sent a fresh request
/// since the event just before.
async fn settle(answered: &AtomicUsize) {
    let from = answered.load(Ordering::SeqCst);
    let progress = async {
        while answered.load(Ordering::SeqCst) < from + 40 {
            tokio::task::yield_now().await;
        }
    };
    // A deadline, so a stalled server fails the test instead of hanging the suite.
    tokio::time::timeout(Duration::from_secs(60), progress)
        .await
        .unwrap_or_else(|_| panic!("no progress past {from} answers within 60 s"));
}

#[tokio::test]
async fn sigterm_under_load_answers_every_accepted_request_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Portcullis::spawn(
        portcullis_serve(dir.path())
            .args([
                "--drain-timeout",
                "20s",
                "--shutdown-delay",
                "1s",
                "--policies",
            ])
            .arg(repo().join("policies")),
    );
    let addr = server.address("listen").await;
    let config = tls_client(
        &[&std::fs::read_to_string(dir.path().join("certs/ca.crt")).unwrap()],
        &[],
    );
    let template = read_json(&apiserver_fixtures().join("create-pod-2.json"));
    let answered = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (config, template, answered, progress) = (
            config.clone(),
            template.clone(),
            answered.clone(),
            progress.clone(),
        );
        clients.push(tokio::spawn(async move {
            let (mut sender, _) = open(addr, config).await;
            let mut answers: Vec<(String, String)> = Vec::new();
            for i in 0..PER_CLIENT {
                let uid = format!("client-{c}-request-{i}");
                let req = post_validate(with_uid(&template, &uid));
                if sender.ready().await.is_err() {
                    return (
                        answers,
                        End::Closed(format!("{uid}: connection closed before sending")),
                    );
                }
                match sender.send_request(req).await {
                    Ok(res) => {
                        assert_eq!(res.status(), 200, "{uid}");
                        let body = res
                            .into_body()
                            .collect()
                            .await
                            .expect("a started answer completes")
                            .to_bytes();
                        let body: Value = serde_json::from_slice(&body).unwrap();
                        answers.push((uid, body["response"]["uid"].as_str().unwrap().to_owned()));
                        answered.fetch_add(1, Ordering::Relaxed);
                        progress.notify_one();
                    }
                    Err(e) => return (answers, End::Closed(format!("{uid}: {e}"))),
                }
            }
            (answers, End::Finished)
        }));
    }

    // SIGTERM once the load is well under way.
    while answered.load(Ordering::Relaxed) < 300 {
        progress.notified().await;
    }
    let pid = server.child.id().unwrap() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);

    let mut seen = BTreeSet::new();
    let mut closed = 0;
    for client in clients {
        let (answers, end) = tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .unwrap()
            .unwrap();
        for (sent, got) in answers {
            assert_eq!(sent, got, "an answer carried another request's uid");
            assert!(seen.insert(sent), "a uid was answered twice");
        }
        if let End::Closed(why) = end {
            closed += 1;
            // With the shutdown delay, clients are told to close between requests: none may
            // lose a request it had already written.
            assert!(
                why.contains("closed before sending"),
                "a written request was lost: {why}"
            );
        }
    }
    let exit = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit}");
    assert!(seen.len() >= 300, "only {} answered", seen.len());
    // Each closed client was checked above to have lost nothing; at least one must have been
    // moved away by the drain, or the test never exercised it.
    assert!(closed > 0, "no client saw the drain close its connection");
}

/// Live policy reload under continuous load, through a ConfigMap-style symlink swap: a valid
/// new set takes over between requests, an invalid one is refused and the last good set stays
/// in force, and no request fails or is judged by a half-loaded set.
#[cfg(unix)]
#[tokio::test]
async fn policy_reload_under_load_valid_then_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("policies");
    let enforce = std::fs::read_to_string(repo().join("policies/default.yaml")).unwrap();
    let audit = enforce.replace("mode: enforce", "mode: audit");
    let broken = enforce.replacen("mode: enforce", "mode: enforced", 1);
    for (version, text) in [("..v1", &enforce), ("..v2", &audit), ("..v3", &broken)] {
        std::fs::create_dir_all(mount.join(version)).unwrap();
        std::fs::write(mount.join(version).join("default.yaml"), text).unwrap();
    }
    mount_volume(&mount, "..v1", &["default.yaml"]);
    let swap = |version: &str| swap_volume(&mount, version);

    let mut server = Portcullis::spawn(
        portcullis_serve(dir.path())
            .args(["--policy-reload-interval", "100ms", "--policies"])
            .arg(&mount),
    );
    let addr = server.address("listen").await;
    let config = tls_client(
        &[&std::fs::read_to_string(dir.path().join("certs/ca.crt")).unwrap()],
        &[],
    );
    let template = read_json(&apiserver_fixtures().join("create-pod-2.json"));
    // Each answer: (order it arrived in, whether it admitted).
    let order = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (config, template, order, stop) = (
            config.clone(),
            template.clone(),
            order.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let (mut sender, _) = open(addr, config).await;
            let mut seen = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let uid = format!("reload-{c}-{i}");
                i += 1;
                let req = post_validate(with_uid(&template, &uid));
                let res = sender
                    .send_request(req)
                    .await
                    .expect("no request fails during reloads");
                assert_eq!(res.status(), 200);
                let body: Value =
                    serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes())
                        .unwrap();
                assert_eq!(body["response"]["uid"], uid.as_str());
                let at = order.fetch_add(1, Ordering::SeqCst);
                seen.push((at, body["response"]["allowed"] == true));
            }
            seen
        }));
    }

    let settle = || settle(&order);
    settle().await;
    let before_valid = order.load(Ordering::SeqCst);
    swap("..v2");
    server.wait_for("policies reloaded").await;
    let after_valid = order.load(Ordering::SeqCst) + 4;
    settle().await;
    swap("..v3");
    let rejected = server
        .wait_for("policy reload rejected; the last good policies stay in force")
        .await;
    let reason = rejected["fields"]["error"].as_str().unwrap();
    assert!(
        reason.contains("default.yaml") && reason.contains("enforced"),
        "{reason}"
    );
    settle().await;
    stop.store(true, Ordering::Relaxed);

    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.unwrap());
    }
    assert!(answers.len() >= 120, "{} answers", answers.len());
    for (at, allowed) in answers {
        if at < before_valid {
            assert!(
                !allowed,
                "answer {at}: the enforcing set denies the bare pod"
            );
        }
        if at >= after_valid {
            assert!(
                allowed,
                "answer {at}: the audit set (and, after the broken one, still it) admits"
            );
        }
    }
    server.child.kill().await.unwrap();
}

/// Certificate rotation in a real process under continuous load: every request on a fresh
/// connection (a full handshake each), a Secret-style swap to a new pair mid-stream, then a
/// broken pair that is refused. No request fails; handshakes move to the new certificate.
#[cfg(unix)]
#[tokio::test]
async fn certificate_rotation_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("tls");
    let first = portcullis::tls::generate(&["localhost".into()], 1).unwrap();
    let second = portcullis::tls::generate(&["localhost".into()], 2).unwrap();
    portcullis::tls::write(&mount.join("..v1"), &first).unwrap();
    portcullis::tls::write(&mount.join("..v2"), &second).unwrap();
    std::fs::create_dir_all(mount.join("..v3")).unwrap();
    std::fs::write(
        mount.join("..v3/tls.crt"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(mount.join("..v3/tls.key"), "not a key").unwrap();
    mount_volume(&mount, "..v1", &["tls.crt", "tls.key"]);
    let swap = |version: &str| swap_volume(&mount, version);

    let mut server = Portcullis::spawn(
        portcullis_serve(dir.path())
            .args(["--cert-reload-interval", "100ms", "--tls-cert"])
            .arg(mount.join("tls.crt"))
            .arg("--tls-key")
            .arg(mount.join("tls.key"))
            .arg("--policies")
            .arg(repo().join("policies")),
    );
    let addr = server.address("listen").await;
    // Clients trust both CAs, as a caBundle does during a rotation.
    let config = tls_client(&[&first.ca_cert, &second.ca_cert], &[]);
    let body = std::fs::read(apiserver_fixtures().join("create-pod.json")).unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (config, body, done, stop) = (config.clone(), body.clone(), done.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut certificates = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                // A full handshake each time: every one must succeed during rotation.
                let (mut sender, certificate) = open(addr, config.clone()).await;
                certificates.insert(certificate);
                let req = post_validate(body.clone());
                let res = sender
                    .send_request(req)
                    .await
                    .expect("no request fails during rotation");
                assert_eq!(res.status(), 200);
                done.fetch_add(1, Ordering::SeqCst);
            }
            certificates
        }));
    }
    let settle = || settle(&done);
    settle().await;
    swap("..v2");
    server.wait_for("serving a new certificate").await;
    settle().await;
    swap("..v3");
    server
        .wait_for("new certificate rejected; the previous one stays in use")
        .await;
    settle().await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = BTreeSet::new();
    for client in clients {
        seen.extend(client.await.unwrap());
    }
    assert_eq!(
        seen.len(),
        2,
        "handshakes moved from the first certificate to the second"
    );
    server.child.kill().await.unwrap();
}
