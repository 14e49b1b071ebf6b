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

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let bundle = tls::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    let paths = tls::write(dir.path(), &bundle).unwrap();
    let config = tls::server_config(&paths.cert, &paths.key).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(transport::serve(
        listener,
        config,
        default_app(),
        Limits::default(),
        async {
            let _ = stopped.await;
        },
    ));
    Server {
        addr,
        ca: bundle.ca_cert,
        stop: Some(stop),
        task,
        _dir: dir,
    }
}

fn client_config(ca_pem: &str, alpn: &[&[u8]], tls12_only: bool) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
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
    let other = tls::generate(&["localhost".into()]).unwrap();
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
    assert!(
        !reply.starts_with(b"HTTP/"),
        "got an HTTP answer in plaintext"
    );
    if let Some(&first) = reply.first() {
        assert_eq!(first, 0x15, "expected a TLS alert record");
    }
}
