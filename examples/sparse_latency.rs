//! Latency of a review on a quiet cluster: sent on a keep-alive connection that has been idle
//! for a while, against one sent on a busy connection and one that needs a new TLS handshake.
//! A client that finds its idle connection closed does what Go's transport does: it dials
//! again, so a server that closes idle connections shows up here as a handshake per review.
//! BENCHMARKS.md records a run.
//!
//! `cargo run --release --example sparse_latency -- ADDR CA.crt REVIEW.json [IDLE_SECS] [ROUNDS]`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

type Sender = SendRequest<Full<Bytes>>;

async fn dial(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Sender {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    sender
}

/// One review on `sender`, redialling first when the server has closed it.
async fn review(
    sender: &mut Sender,
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    body: &Bytes,
) -> (Duration, bool) {
    let started = Instant::now();
    let redialled = sender.ready().await.is_err();
    if redialled {
        *sender = dial(addr, config.clone()).await;
    }
    let req = hyper::Request::post("/validate?timeout=5s")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .unwrap();
    let res = sender.send_request(req).await.expect("an answer");
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();
    (started.elapsed(), redialled)
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, ca, body, rest @ ..] = args.as_slice() else {
        eprintln!("usage: sparse_latency ADDR CA.crt REVIEW.json [IDLE_SECS] [ROUNDS]");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().expect("ADDR");
    let idle = Duration::from_secs(rest.first().map_or(10, |s| s.parse().unwrap()));
    let rounds: usize = rest.get(1).map_or(5, |s| s.parse().unwrap());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    let body = Bytes::from(std::fs::read(body).expect("REVIEW.json"));

    // Busy: back to back on one warm connection.
    let mut busy = dial(addr, config.clone()).await;
    let mut warm = Vec::new();
    for _ in 0..200 {
        warm.push(review(&mut busy, addr, &config, &body).await.0);
    }
    // Fresh: a new connection, handshake included, for every review.
    let mut fresh = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let mut sender = dial(addr, config.clone()).await;
        review(&mut sender, addr, &config, &body).await;
        fresh.push(started.elapsed());
    }
    // Sparse: one review, then `idle` of silence, then the next on the same connection.
    let mut sender = dial(addr, config.clone()).await;
    review(&mut sender, addr, &config, &body).await;
    let (mut sparse, mut redials) = (Vec::new(), 0);
    for _ in 0..rounds {
        tokio::time::sleep(idle).await;
        let (took, redialled) = review(&mut sender, addr, &config, &body).await;
        sparse.push(took);
        redials += usize::from(redialled);
    }
    println!(
        "| busy connection (median of 200) | {:.0} µs |",
        median(warm).as_secs_f64() * 1e6
    );
    println!(
        "| new connection per review, handshake included (median of 50) | {:.0} µs |",
        median(fresh).as_secs_f64() * 1e6
    );
    println!(
        "| after {} s idle on the same connection (median of {rounds}; {redials} needed a new connection) | {:.0} µs |",
        idle.as_secs(),
        median(sparse).as_secs_f64() * 1e6
    );
}
