//! The benchmark's yardstick: the same TLS listener, HTTP/1.1 server and review decoder as
//! portcullis, answering every review "allowed" without judging it. `benches/load.sh` runs it
//! beside the real server; portcullis's throughput divided by this one's is the figure that
//! survives a noisy machine.
//!
//! `cargo run --release --example noop_server -- 127.0.0.1:9443 certs/tls.crt certs/tls.key`

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use portcullis::verdict::{Skip, Verdict};
use portcullis::{review, tls, transport};

// The same allocator as the portcullis binary: the comparison is of the handler alone.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn allow(body: Bytes) -> axum::response::Response {
    match review::decode(&body) {
        Ok(req) => (
            [(header::CONTENT_TYPE, "application/json")],
            review::encode_validation(&req, &Verdict::Skipped(Skip::Kind)),
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, cert, key] = args.as_slice() else {
        eprintln!("usage: noop_server LISTEN CERT KEY");
        std::process::exit(2);
    };
    let certs = tls::CertStore::load(cert.as_ref(), key.as_ref()).expect("certificate");
    let config = tls::server_config(certs, None).expect("TLS configuration");
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    let app = Router::new()
        .route("/validate", post(allow))
        .route("/mutate", post(allow))
        .route("/readyz", get(|| async { "ready" }))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(4),
        ));
    eprintln!("noop server on {listen}");
    transport::serve(listener, config, app, transport::Limits::default(), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
}
