//! The `serve` command: load policies and certificate (generating a development pair on a fresh
//! machine), bind, mark ready, and serve until SIGTERM or Ctrl-C. Every startup failure is a
//! `StartupError` naming what to fix; nothing is served half-configured.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;

use crate::cli::ServeArgs;
use crate::http::{self, AppState};
use crate::policy::{self, PolicyError, PolicySet};
use crate::tls::{self, TlsError};
use crate::transport::{self, Limits};

const DEFAULT_POLICY_DIR: &str = "policies";
const DEFAULT_CERT_DIR: &str = "certs";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// `started` is when the process began, so the log can say how long start-up took.
pub async fn run(args: ServeArgs, started: std::time::Instant) -> Result<(), StartupError> {
    let policies = load_policies(args.policies.as_deref())?;
    let tls = load_certificate(args.tls_cert, args.tls_key)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| StartupError::Bind {
            addr: args.listen,
            source,
        })?;
    let state = AppState::new(policies);
    let ready = state.ready.clone();
    let app = http::router(state, args.request_timeout);
    let limits = Limits {
        drain_timeout: args.drain_timeout,
        ..Limits::default()
    };
    let local = listener.local_addr().map_or(args.listen, |a| a);
    tracing::info!(listen = %local, startup_ms = started.elapsed().as_secs_f64() * 1e3,
        "serving /validate and /mutate over HTTPS");
    ready.store(true, Ordering::Release);
    transport::serve(listener, tls, app, limits, async move {
        shutdown_signal().await;
        // Unready first, so probes fail while in-flight requests still finish.
        ready.store(false, Ordering::Release);
        tracing::info!("shutdown requested: draining");
    })
    .await;
    Ok(())
}

fn load_policies(dir: Option<&Path>) -> Result<PolicySet, PolicyError> {
    let set = match dir {
        Some(dir) => policy::load_dir(dir)?,
        None if Path::new(DEFAULT_POLICY_DIR).is_dir() => {
            policy::load_dir(Path::new(DEFAULT_POLICY_DIR))?
        }
        None => {
            tracing::info!(
                "no policies/ directory: using the default policy compiled into the binary"
            );
            PolicySet::embedded()
        }
    };
    for p in &set.policies {
        tracing::info!(policy = %p.name, source = %p.source, "policy loaded");
    }
    Ok(set)
}

fn load_certificate(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<std::sync::Arc<rustls::ServerConfig>, TlsError> {
    let (cert, key) = match (cert, key) {
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            let dir = Path::new(DEFAULT_CERT_DIR);
            let paths = tls::CertPaths::in_dir(dir);
            if !paths.cert.exists() && !paths.key.exists() {
                let names = ["localhost", "127.0.0.1"].map(String::from);
                let written = tls::write(dir, &tls::generate(&names)?)?;
                tracing::warn!(ca = %written.ca.display(), cert = %written.cert.display(),
                    "no certificate given: generated a development CA and serving certificate \
                     for localhost and 127.0.0.1; trust the CA to call the server");
            }
            (paths.cert, paths.key)
        }
    };
    tls::server_config(&cert, &key)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
