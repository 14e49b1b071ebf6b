//! A real server on a pre-bound loopback port, with certificates generated for the test,
//! answering reviews over TLS and HTTP/1.1 as kube-apiserver calls it.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use portcullis::tls;
use portcullis::transport::{self, Limits};
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

struct Server {
    addr: SocketAddr,
    ca: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

async fn start() -> Server {
    start_with(None, Limits::default()).await.0
}

/// A server whose certificate store the test can reload, optionally requiring client certs.
async fn start_with(
    client_ca: Option<&std::path::Path>,
    limits: Limits,
) -> (Server, Arc<tls::CertStore>) {
    let dir = tempfile::tempdir().unwrap();
    let bundle = tls::generate(&names(), 30).unwrap();
    let paths = tls::write(dir.path(), &bundle).unwrap();
    let store = tls::CertStore::load(&paths.cert, &paths.key).unwrap();
    let config = tls::server_config(store.clone(), client_ca).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(transport::serve(
        listener,
        config,
        default_app(),
        limits,
        async {
            let _ = stopped.await;
        },
    ));
    let server = Server {
        addr,
        ca: bundle.ca_cert,
        stop: Some(stop),
        task,
        _dir: dir,
    };
    (server, store)
}

fn client_config(ca_pem: &str, alpn: &[&[u8]], tls12_only: bool) -> Arc<ClientConfig> {
    // Every CA in the bundle: during a rotation a caBundle holds the old and the new one.
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let mut config = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
}

async fn http1(stream: tokio_rustls::client::TlsStream<TcpStream>) -> SendRequest<Full<Bytes>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn post_review(sender: &mut SendRequest<Full<Bytes>>, path: &str, review: &Value) -> Value {
    let req = hyper::Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(review).unwrap())))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), hyper::Version::HTTP_11);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn reviews_are_answered_end_to_end_over_tls_with_keep_alive() {
    let mut server = start().await;
    let stream = connect(
        server.addr,
        client_config(&server.ca, &[b"http/1.1"], false),
        "localhost",
    )
    .await
    .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut sender = http1(stream).await;
    // Several reviews on one connection, as the apiserver's keep-alive client sends them.
    for (file, path, allowed) in [
        ("create-pod.json", "/validate?timeout=5s", true),
        ("create-pod-2.json", "/validate?timeout=5s", false),
        ("create-pod-2.json", "/mutate?timeout=5s", true),
    ] {
        let review = read_json(&apiserver_fixtures().join(file));
        let body = post_review(&mut sender, path, &review).await;
        assert_eq!(body["response"]["uid"], review["request"]["uid"]);
        assert_eq!(body["response"]["allowed"], allowed, "{file} {path}");
    }
    server.stop.take().unwrap().send(()).unwrap();
    drop(sender);
    tokio::time::timeout(Duration::from_secs(30), server.task)
        .await
        .expect("server drains and stops")
        .unwrap();
}

#[tokio::test]
async fn tls12_and_ip_address_san_are_accepted() {
    let server = start().await;
    let stream = connect(
        server.addr,
        client_config(&server.ca, &[], true),
        "127.0.0.1",
    )
    .await
    .unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut sender = http1(stream).await;
    let review = read_json(&apiserver_fixtures().join("create-pod.json"));
    assert_eq!(
        post_review(&mut sender, "/validate", &review).await["response"]["allowed"],
        true
    );
}

#[tokio::test]
async fn a_client_that_wants_only_http2_is_refused() {
    let server = start().await;
    let result = connect(
        server.addr,
        client_config(&server.ca, &[b"h2"], false),
        "localhost",
    )
    .await;
    assert!(
        result.is_err(),
        "ALPN h2 without http/1.1 must fail the handshake"
    );
}

#[tokio::test]
async fn an_untrusted_certificate_fails_verification() {
    let server = start().await;
    let other = tls::generate(&["localhost".into()], 1).unwrap();
    let result = connect(
        server.addr,
        client_config(&other.ca_cert, &[], false),
        "localhost",
    )
    .await;
    assert!(result.is_err());
}

#[tokio::test]
async fn plaintext_http_on_the_tls_port_gets_no_http_answer() {
    let server = start().await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    // The server answers with a TLS alert and closes; the timeout only bounds a broken server.
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut reply))
        .await
        .expect("the server closes the connection")
        .ok();
    // A TLS alert record, not silence and not HTTP: an empty reply would also pass a server
    // that answered nothing at all.
    assert_eq!(
        reply.first(),
        Some(&0x15),
        "expected a TLS alert record, got {reply:?}"
    );
}

/// The certificate is replaced while requests keep arriving on fresh connections: none fails,
/// handshakes move to the new certificate, and a broken pair is refused with the old one kept.
#[tokio::test]
async fn certificate_reload_under_concurrent_requests_drops_nothing() {
    let (server, store) = start_with(None, Limits::default()).await;
    let replacement = tls::generate(&names(), 60).unwrap();
    // The client trusts both CAs, as a caBundle does during a rotation.
    let mut config = (*client_config(
        &format!("{}\n{}", server.ca, replacement.ca_cert),
        &[],
        false,
    ))
    .clone();
    // Every connection a full handshake, as kube-apiserver's Go client makes them: a resumed
    // session would report the certificate of the session it resumes.
    config.resumption = rustls::client::Resumption::disabled();
    let config = Arc::new(config);
    let review = read_json(&apiserver_fixtures().join("create-pod.json"));
    let (progress_tx, mut progress) = tokio::sync::mpsc::channel::<usize>(1);
    let (addr, client_config_for_task) = (server.addr, config.clone());
    let client = tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..120 {
            let stream = connect(addr, client_config_for_task.clone(), "localhost")
                .await
                .expect("handshake");
            seen.insert(stream.get_ref().1.peer_certificates().unwrap()[0].to_vec());
            let mut sender = http1(stream).await;
            let body = post_review(&mut sender, "/validate", &review).await;
            assert_eq!(body["response"]["allowed"], true, "request {i}");
            if i == 30 || i == 60 {
                let _ = progress_tx.send(i).await;
            }
        }
        seen.len()
    });
    let dir = tempfile::tempdir().unwrap();
    let swapped = tls::write(dir.path(), &replacement).unwrap();
    assert_eq!(progress.recv().await, Some(30));
    // Point the store's files at the new pair, as a Secret's symlink swap does.
    let current = tls::CertPaths::in_dir(server._dir.path());
    std::fs::copy(&swapped.cert, &current.cert).unwrap();
    std::fs::copy(&swapped.key, &current.key).unwrap();
    assert!(store.reload().unwrap(), "a new pair is served");
    assert!(!store.reload().unwrap(), "unchanged files are not reloaded");
    assert_eq!(progress.recv().await, Some(60));
    std::fs::write(
        &current.cert,
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    assert!(store.reload().is_err(), "a broken pair is refused");
    let distinct = client.await.expect("no request failed");
    assert_eq!(distinct, 2, "handshakes moved to the new certificate");
}

#[tokio::test]
async fn certificate_expiry_is_read_from_the_certificate() {
    let (_server, store) = start_with(None, Limits::default()).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let days = (store.expires_at() - now) as f64 / 86400.0;
    assert!((29.9..30.1).contains(&days), "expires in {days} days");
}

/// With `--client-ca`, a caller without a certificate from that CA gets no answer.
#[tokio::test]
async fn client_certificates_are_required_with_a_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca_path = dir.path().join("client-ca.crt");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let (server, _) = start_with(Some(&ca_path), Limits::default()).await;
    let review = read_json(&apiserver_fixtures().join("create-pod.json"));

    // No client certificate: the handshake (or, with TLS 1.3, the first request) fails.
    let anonymous = async {
        let stream = connect(
            server.addr,
            client_config(&server.ca, &[], false),
            "localhost",
        )
        .await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        let req = hyper::Request::post("/validate")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(&review).unwrap())))
            .unwrap();
        sender
            .send_request(req)
            .await
            .map_err(std::io::Error::other)
    };
    assert!(
        anonymous.await.is_err(),
        "an anonymous client must not be answered"
    );

    // A client certificate from the CA: answered.
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut client_params =
        rcgen::CertificateParams::new(vec!["kube-apiserver".to_owned()]).unwrap();
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params
        .signed_by(&client_key, &rcgen::Issuer::new(ca_params, ca_key))
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server.ca.as_bytes()).unwrap())
        .unwrap();
    let mut config = ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![client_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::from_pem_slice(client_key.serialize_pem().as_bytes())
                .unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let stream = connect(server.addr, Arc::new(config), "localhost")
        .await
        .unwrap();
    let mut sender = http1(stream).await;
    assert_eq!(
        post_review(&mut sender, "/validate", &review).await["response"]["allowed"],
        true
    );
}

/// A connection to `server` speaking HTTP/1.1.
async fn open(server: &Server) -> SendRequest<Full<Bytes>> {
    let config = client_config(&server.ca, &[b"http/1.1"], false);
    http1(connect(server.addr, config, "localhost").await.unwrap()).await
}

/// A raw TLS stream to `server`, for writing partial requests.
async fn raw(server: &Server) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = client_config(&server.ca, &[b"http/1.1"], false);
    connect(server.addr, config, "localhost").await.unwrap()
}

/// Reads until the server closes, bounded so that a server that never closes fails the test.
/// Returns what was read and how long the server took to close.
async fn until_closed<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    bound: Duration,
) -> (Vec<u8>, Duration) {
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(bound, stream.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("still open after {bound:?}; read {out:?}"))
        .ok();
    (out, started.elapsed())
}

fn review_of(file: &str) -> Value {
    read_json(&apiserver_fixtures().join(file))
}

/// The apiserver keeps idle connections up to 90 s and does not retry a review it wrote into
/// a closing one, so an idle connection must outlive the old 5 s header timer and be reused.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_reused_after_fifteen_seconds() {
    let server = start().await;
    let mut sender = open(&server).await;
    let review = review_of("create-pod.json");
    assert_eq!(
        post_review(&mut sender, "/validate", &review).await["response"]["uid"],
        review["request"]["uid"]
    );
    // The idle period is what is under test, not a synchronisation.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(!sender.is_closed(), "the server closed an idle connection");
    let again = post_review(&mut sender, "/validate", &review).await;
    assert_eq!(again["response"]["uid"], review["request"]["uid"]);
}

/// An idle connection is closed at the idle timeout, not before.
#[tokio::test]
async fn an_idle_connection_is_closed_at_the_idle_timeout() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let (server, _) = start_with(None, limits).await;
    let mut idle = raw(&server).await;
    let (read, after) = until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(read.is_empty(), "{read:?}");
    assert!(
        after >= Duration::from_millis(1900),
        "closed after {after:?}, before the idle timeout"
    );
}

/// A head that has started and stalls is cut off at the connection timeout, however long
/// the idle timeout.
#[tokio::test]
async fn a_stalled_request_head_is_closed_within_the_connection_timeout() {
    let limits = Limits {
        header_read_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let (server, _) = start_with(None, limits).await;
    let mut slow = raw(&server).await;
    slow.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    slow.flush().await.unwrap();
    let (read, after) = until_closed(&mut slow, Duration::from_secs(10)).await;
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(5),
        "closed after {after:?}"
    );
    assert!(!read.starts_with(b"HTTP/1.1 200"), "{read:?}");
}

/// A head that started after an idle period on a reused connection is timed from its first
/// byte, not from the end of the previous answer.
#[tokio::test]
async fn the_head_timer_starts_at_the_first_byte_of_each_request() {
    let limits = Limits {
        header_read_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let (server, _) = start_with(None, limits).await;
    let mut stream = raw(&server).await;
    let body = std::fs::read(apiserver_fixtures().join("create-pod.json")).unwrap();
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    for _ in 0..2 {
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body).await.unwrap();
        stream.flush().await.unwrap();
        let mut status = [0u8; 12];
        stream.read_exact(&mut status).await.unwrap();
        assert_eq!(&status, b"HTTP/1.1 200");
        let mut rest = vec![0u8; 4096];
        let _ = stream.read(&mut rest).await.unwrap();
        // Idle for longer than the head timeout: this is waiting, not slowness.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

/// At the cap, the longest-idle connection is closed to admit a new client; the others stay.
#[tokio::test]
async fn at_the_cap_the_longest_idle_connection_makes_room() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let (server, _) = start_with(None, limits).await;
    let review = review_of("create-pod.json");
    let mut oldest = raw(&server).await;
    let mut newer = open(&server).await;
    post_review(&mut newer, "/validate", &review).await;
    // A third client: the server is at its cap, both connections idle.
    let mut third = open(&server).await;
    let (_, _) = until_closed(&mut oldest, Duration::from_secs(10)).await;
    assert_eq!(
        post_review(&mut third, "/validate", &review).await["response"]["uid"],
        review["request"]["uid"]
    );
    assert!(!newer.is_closed());
    post_review(&mut newer, "/validate", &review).await;
}

/// With every connection busy the cap holds: a further client gets in only once a connection
/// falls idle, and that one is closed to make room. A busy connection is never cut.
#[tokio::test]
async fn the_connection_cap_holds_while_every_connection_is_busy() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let (server, _) = start_with(None, limits).await;
    let body = std::fs::read(apiserver_fixtures().join("create-pod.json")).unwrap();
    // `Expect: 100-continue`: the interim answer proves the server has read the head and is
    // waiting for the body, so the connection is busy, not idle.
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let continued = b"HTTP/1.1 100 Continue\r\n\r\n";
    // Two connections mid-request: heads read by the server, bodies held back.
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = raw(&server).await;
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        let mut interim = vec![0u8; continued.len()];
        stream.read_exact(&mut interim).await.unwrap();
        assert_eq!(interim, continued);
        busy.push(stream);
    }
    let third = tokio::spawn({
        let (addr, config) = (
            server.addr,
            client_config(&server.ca, &[b"http/1.1"], false),
        );
        async move { http1(connect(addr, config, "localhost").await.unwrap()).await }
    });
    // The first finishes its request and is answered in full: busy connections are not cut.
    let mut first = busy.remove(0);
    first.write_all(&body).await.unwrap();
    first.flush().await.unwrap();
    let (answer, _) = until_closed(&mut first, Duration::from_secs(10)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(
            review_of("create-pod.json")["request"]["uid"]
                .as_str()
                .unwrap()
        )
    );
    // Having fallen idle, it was closed (above) to admit the waiting client.
    let mut third = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("admitted once a connection fell idle")
        .unwrap();
    let review = review_of("create-pod.json");
    post_review(&mut third, "/validate", &review).await;
    // The second busy connection was left alone.
    let mut second = busy.remove(0);
    second.write_all(&body).await.unwrap();
    second.flush().await.unwrap();
    let mut status = [0u8; 12];
    second.read_exact(&mut status).await.unwrap();
    assert_eq!(&status, b"HTTP/1.1 200");
}
