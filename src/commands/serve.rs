//! The `serve` command: load policies and certificate (generating a development pair on a fresh
//! machine), bind, mark ready, and serve until SIGTERM or Ctrl-C. Every startup failure is a
//! `StartupError` naming what to fix; nothing is served half-configured.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::cli::{ServeArgs, WatchNamespaces};
use crate::http::{self, AppState};
use crate::metrics::ResultLabels;
use crate::namespaces::{self, NamespaceCache};
use crate::params::ParamCache;
use crate::policy::{self, PolicyError, PolicySet, SharedPolicies, Snapshot};
use crate::tls::{self, CertStore, TlsError};
use crate::transport::{self, Limits};

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
    let (policies, snapshot) = load_policies(args.policies.as_deref())?;
    let certs = load_certificate(args.tls_cert, args.tls_key)?;
    let tls = tls::server_config(certs.clone(), args.client_ca.as_deref())?;
    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })
    };
    let listener = bind(args.listen).await?;
    let metrics_listener = bind(args.metrics_listen).await?;
    let mut state = AppState::new(policies);
    let mut candidate_snapshot = None;
    if let Some(dir) = &args.candidate_policies {
        let snapshot = Snapshot::read(dir)?;
        state = state.with_candidate(snapshot.parse()?);
        tracing::info!(dir = %dir.display(), "candidate policies loaded: judging every request with them too (shadow)");
        candidate_snapshot = Some((dir.clone(), snapshot));
    }
    let current = state.policies.current();
    let client = cluster_client(args.watch_namespaces, &current, state.candidate.as_deref()).await;
    // Params the policy directory lacks can only come from the cluster: without one, such a
    // policy is refused now rather than failing every request it matches.
    let sets =
        std::iter::once(current.clone()).chain(state.candidate.as_ref().map(|c| c.current()));
    for set in sets {
        policy::require_params(&set, client.is_some())?;
    }
    let (cache, params) = match client {
        Some(client) => {
            tracing::info!("watching namespace labels");
            (namespaces::watch(client.clone()), ParamCache::new(client))
        }
        None => (NamespaceCache::disabled(), ParamCache::disabled()),
    };
    warn_unwatched(&current, &cache);
    params.watch(&current.param_kinds());
    if let Some(candidate) = &state.candidate {
        params.watch(&candidate.current().param_kinds());
    }
    state = state.with_namespaces(cache).with_params(params);
    // Reloaded against the complete state: its namespace watch and its cluster params.
    if let Some((dir, snapshot)) = candidate_snapshot {
        let target = state.candidate.clone().expect("set with the snapshot");
        tokio::spawn(reload_policies(
            dir,
            snapshot,
            target,
            state.clone(),
            args.policy_reload_interval,
            None,
        ));
    }
    let synced = state.clone();
    tokio::spawn(async move {
        synced.namespaces.synced().await;
        synced.metrics.namespace_cache_synced.set(1);
        tracing::info!("namespace label cache synced");
    });
    tokio::spawn(track_exemption_debt(
        state.clone(),
        args.policy_reload_interval,
    ));
    let ready = state.ready.clone();
    state.metrics.certificate_expiry.set(certs.expires_at());
    tokio::spawn(reload_certificates(
        certs,
        state.clone(),
        args.cert_reload_interval,
    ));
    if let Some(snapshot) = snapshot {
        let dir = args
            .policies
            .clone()
            .unwrap_or_else(|| PathBuf::from(policy::DEFAULT_DIR));
        let interval = args.policy_reload_interval;
        let target = state.policies.clone();
        tokio::spawn(reload_policies(
            dir,
            snapshot,
            target,
            state.clone(),
            interval,
            None,
        ));
    }
    let metrics_addr = metrics_listener
        .local_addr()
        .map_or(args.metrics_listen, |a| a);
    tracing::info!(metrics_listen = %metrics_addr, "serving /metrics, /healthz and /readyz over HTTP");
    let metrics_app = http::metrics_router(state.clone());
    let metrics_server = tokio::spawn(async move {
        if let Err(e) = axum::serve(metrics_listener, metrics_app).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    let app = http::router(state, args.request_timeout);
    let limits = Limits {
        handshake_timeout: args.connection_timeout,
        header_read_timeout: args.connection_timeout,
        idle_timeout: args.idle_timeout,
        drain_timeout: args.drain_timeout,
        max_connections: args.max_connections,
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
        tokio::time::sleep(args.shutdown_delay).await;
    })
    .await;
    metrics_server.abort();
    Ok(())
}

/// Checks the certificate files every `interval` and serves a new pair once it loads; a
/// broken pair is logged and counted, and the old one stays in use.
async fn reload_certificates(certs: Arc<CertStore>, state: AppState, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let result = match certs.reload() {
            Ok(false) => continue,
            Ok(true) => {
                tracing::info!(expires_at = certs.expires_at(), "serving a new certificate");
                state.metrics.certificate_expiry.set(certs.expires_at());
                "ok"
            }
            Err(e) => {
                tracing::error!(error = %e, "new certificate rejected; the previous one stays in use");
                "failed"
            }
        };
        state
            .metrics
            .certificate_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }
}

/// The policies to serve, and the directory they came from (`None`: the embedded default).
fn load_policies(dir: Option<&Path>) -> Result<(PolicySet, Option<Snapshot>), PolicyError> {
    let (set, snapshot) = match policy::configured_dir(dir) {
        Some(dir) => {
            let snapshot = Snapshot::read(&dir)?;
            (snapshot.parse()?, Some(snapshot))
        }
        None => {
            tracing::info!(
                "no policies/ directory: using the default policy compiled into the binary"
            );
            (PolicySet::embedded(), None)
        }
    };
    for p in &set.policies {
        tracing::info!(policy = %p.name, source = %p.source, "policy loaded");
    }
    Ok((set, snapshot))
}

/// Reads the policy directory every `interval` (a mounted ConfigMap changes by a symlink
/// swap, which a fresh read follows). A new set that loads whole replaces the old one between
/// requests, and wakes `changed` if given; one that does not is logged with file, field and
/// reason, counted, and ignored.
pub(crate) async fn reload_policies(
    dir: PathBuf,
    mut last: Snapshot,
    target: Arc<SharedPolicies>,
    state: AppState,
    interval: Duration,
    changed: Option<Arc<tokio::sync::Notify>>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let result = match Snapshot::read(&dir) {
            Ok(snapshot) if snapshot == last => continue,
            Ok(snapshot) => match snapshot.parse().and_then(|set| {
                policy::require_params(&set, state.params.is_enabled()).map(|()| set)
            }) {
                Ok(set) => {
                    state.params.watch(&set.param_kinds());
                    let names: Vec<String> =
                        set.policies.iter().map(|p| p.name.to_string()).collect();
                    // In force before it is reported: whoever reads the line sees the new set.
                    target.replace(set);
                    if let Some(changed) = &changed {
                        changed.notify_one();
                    }
                    tracing::info!(dir = %dir.display(), policies = ?names, "policies reloaded");
                    warn_unwatched(&target.current(), &state.namespaces);
                    last = snapshot;
                    "ok"
                }
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "policy reload rejected; the last good policies stay in force");
                    last = snapshot;
                    "failed"
                }
            },
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "policy reload rejected; the last good policies stay in force");
                "failed"
            }
        };
        state
            .metrics
            .policy_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }
}

/// The exception-debt gauge follows the policy set in force and the date: set now, before
/// the server is ready, then recomputed whenever either has changed (after a reload, and
/// when exemptions expire).
fn track_exemption_debt(state: AppState, interval: Duration) -> impl Future<Output = ()> {
    // Holding the last set keeps its address from being reused, so ptr_eq cannot be fooled.
    let mut last = (state.policies.current(), (state.clock)());
    state.metrics.set_exemptions(&last.0, last.1);
    async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (set, today) = (state.policies.current(), (state.clock)());
            if !Arc::ptr_eq(&last.0, &set) || last.1 != today {
                state.metrics.set_exemptions(&set, today);
                last = (set, today);
            }
        }
    }
}

/// The client the namespace label cache and the params are read with, or none. Without it,
/// label rules and selectors do not match and the policies' own modes apply, and params come
/// from the policy directory alone. `auto` connects in a cluster, and outside one too when a
/// policy needs labels or params and a kubeconfig is found.
async fn cluster_client(
    mode: WatchNamespaces,
    set: &PolicySet,
    candidate: Option<&SharedPolicies>,
) -> Option<kube::Client> {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let candidate = candidate.map(SharedPolicies::current);
    let needs =
        |s: &PolicySet| !s.needing_namespace_labels().is_empty() || !s.param_kinds().is_empty();
    let wanted = match mode {
        WatchNamespaces::Never => false,
        WatchNamespaces::Always => true,
        WatchNamespaces::Auto => {
            in_cluster || needs(set) || candidate.as_deref().is_some_and(needs)
        }
    };
    if !wanted {
        return None;
    }
    match kube::Config::infer().await.map(kube::Client::try_from) {
        Ok(Ok(client)) => Some(client),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "no namespace label cache or cluster params: cannot build a Kubernetes client");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "no namespace label cache or cluster params: no Kubernetes configuration");
            None
        }
    }
}

/// A policy that reads namespace labels, served without the watch, would silently use its own
/// modes everywhere: say so, at start-up and on every reload, naming the flag.
fn warn_unwatched(set: &PolicySet, cache: &NamespaceCache) {
    let needing = set.needing_namespace_labels();
    if !needing.is_empty() && !cache.is_enabled() {
        tracing::warn!(
            policies = ?needing,
            "these policies use namespace labels (namespaceLabels or a namespaceModes selector), \
             but the namespace watch is off, so label rules and selectors will not match: serve \
             with --watch-namespaces always (or auto with a kubeconfig) and get/list/watch on namespaces"
        );
    }
}

fn load_certificate(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Arc<CertStore>, TlsError> {
    let (cert, key) = match (cert, key) {
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            let dir = Path::new(DEFAULT_CERT_DIR);
            let paths = tls::CertPaths::in_dir(dir);
            if !paths.cert.exists() && !paths.key.exists() {
                let names = ["localhost", "127.0.0.1"].map(String::from);
                let written = tls::write(dir, &tls::generate(&names, 365)?)?;
                tracing::warn!(ca = %written.ca.display(), cert = %written.cert.display(),
                    "no certificate given: generated a development CA and serving certificate \
                     for localhost and 127.0.0.1; trust the CA to call the server");
            }
            (paths.cert, paths.key)
        }
    };
    CertStore::load(&cert, &key)
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
