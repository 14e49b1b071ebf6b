//! The listener: TCP accept, TLS handshake (rustls), one HTTP/1.1 connection per client
//! (hyper), and a graceful drain on shutdown. HTTP/1.1 only, by construction: kube-apiserver
//! never speaks HTTP/2 to webhooks, and serving it would only add attack surface.
//!
//! Idle and slow are told apart. kube-apiserver's webhook client (Go's transport) keeps idle
//! connections for up to 90 s, and a POST it has written on a connection the server is closing
//! fails with EOF and is not retried: under `failurePolicy: Fail` the object is rejected. So an
//! idle connection stays open past the client's own idle limit and the client closes first,
//! while a request head that has *started* must finish within the connection timeout.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Limits of the connection layer.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A client that has not completed the handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// A request head that has begun must be complete within this long (slowloris).
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request under way is closed after this long. Above
    /// the apiserver's 90 s, so its client closes first and never writes into a closing one.
    pub idle_timeout: Duration,
    /// How long in-flight requests may take to finish once shutdown starts.
    pub drain_timeout: Duration,
    /// Connections open at once, idle ones included. At the cap the longest-idle connection
    /// is closed to admit a new client; with none idle, new clients wait in the accept queue.
    pub max_connections: usize,
}

/// A request head (request line and headers) larger than this gets 431: apiserver requests
/// carry a handful of short headers.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
pub const MAX_HEADERS: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(20),
            max_connections: 1024,
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` completes, then stops accepting,
/// closes idle connections, and waits (at most `limits.drain_timeout`) for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let registry = Arc::new(Registry::default());
    let (stop, stopping) = watch::channel(false);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next_id = 0u64;
    'accept: loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors or similar: the listener itself stays healthy.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::task::yield_now().await;
                    continue;
                }
            },
            () = &mut shutdown => break 'accept,
        };
        // A client is waiting. At the cap, make room by closing the longest-idle connection;
        // with none idle, wait for a connection to end or to fall idle.
        let permit = loop {
            if let Ok(permit) = connections.clone().try_acquire_owned() {
                break permit;
            }
            registry.evict_oldest_idle();
            tokio::select! {
                permit = connections.clone().acquire_owned() => break permit.expect("the semaphore is never closed"),
                () = registry.fell_idle.notified() => {}
                () = &mut shutdown => break 'accept,
            }
        };
        // Responses are small and latency-bound: never hold a segment back waiting for an ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        next_id += 1;
        let id = next_id;
        let acceptor = acceptor.clone();
        let app = app.clone();
        let registry = registry.clone();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            // Held for the connection's life: the cap counts connections, not requests.
            let _permit = permit;
            let tls =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let phase = Arc::new(Phase::new());
            registry.insert(id, phase.clone());
            let io = Watched::new(tls, phase.clone(), limits);
            let service = {
                let (start, finish) = (phase.clone(), phase.clone());
                let finish_registry = registry.clone();
                app.map_request(move |req| {
                    start.set(State::Busy);
                    req
                })
                .map_response(move |res| {
                    finish.set(State::Idle);
                    finish_registry.fell_idle.notify_one();
                    res
                })
            };
            // No hyper header timer: it would also run while the connection idles, so the
            // head and idle deadlines are kept by `Watched` instead.
            let mut builder = http1::Builder::new();
            builder
                .max_buf_size(MAX_HEAD_BYTES)
                .max_headers(MAX_HEADERS)
                .keep_alive(true);
            let conn =
                builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
            let mut conn = std::pin::pin!(conn);
            // Closing asks hyper for a graceful end: an idle connection closes at once, a busy
            // one after its answer (which then carries `Connection: close`).
            let mut closing = false;
            let result = loop {
                tokio::select! {
                    result = conn.as_mut() => break result,
                    () = phase.evict.notified(), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    _ = stopping.wait_for(|stop| *stop), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            };
            registry.remove(id);
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("listener closed; draining in-flight requests");
    // Every connection task holds a permit until it ends: all permits back means all drained.
    let everyone = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = stop.send(true);
    tokio::select! {
        _ = connections.acquire_many(everyone) => tracing::info!("all connections drained"),
        () = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!(timeout = ?limits.drain_timeout, "drain timeout reached; closing remaining connections");
        }
    }
}

/// Where a connection is between requests, as the reader (first bytes of a head) and the
/// service (head complete, answer ready) see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum State {
    /// Waiting for the next request: not slow, and evictable at the cap.
    Idle = 0,
    /// A head has started arriving and must finish within the header timeout.
    Head = 1,
    /// Head complete: the body and the answer are bounded by the request timeout.
    Busy = 2,
    /// Chosen to make room at the cap, and closing.
    Evicted = 3,
}

/// One connection's state, shared by its reader, its service and the registry.
struct Phase {
    state: AtomicU8,
    /// Bumped each time an answer completes, so the reader knows a new idle period began.
    answers: AtomicU64,
    /// When the current idle period began, in ms since the process's clock origin.
    idle_since_ms: AtomicU64,
    evict: Notify,
}

impl Phase {
    fn new() -> Self {
        Self {
            state: AtomicU8::new(State::Idle as u8),
            answers: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(now_ms()),
            evict: Notify::new(),
        }
    }

    fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Idle,
            1 => State::Head,
            2 => State::Busy,
            _ => State::Evicted,
        }
    }

    fn set(&self, state: State) {
        if state == State::Idle {
            self.idle_since_ms.store(now_ms(), Ordering::Relaxed);
            self.answers.fetch_add(1, Ordering::Release);
        }
        self.state.store(state as u8, Ordering::Release);
    }
}

fn now_ms() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The open connections, so the accept loop can find the longest-idle one at the cap.
#[derive(Default)]
struct Registry {
    open: Mutex<HashMap<u64, Arc<Phase>>>,
    /// Signalled whenever an answer completes, for an accept loop waiting at the cap.
    fell_idle: Notify,
}

impl Registry {
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Phase>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, id: u64, phase: Arc<Phase>) {
        self.open().insert(id, phase);
    }

    fn remove(&self, id: u64) {
        self.open().remove(&id);
    }

    /// Closes the longest-idle connection, unless one chosen earlier is still closing: one
    /// waiting client needs one slot.
    fn evict_oldest_idle(&self) {
        let open = self.open();
        if open.values().any(|p| p.state() == State::Evicted) {
            return;
        }
        let oldest = open
            .values()
            .filter(|p| p.state() == State::Idle)
            .min_by_key(|p| p.idle_since_ms.load(Ordering::Relaxed));
        if let Some(phase) = oldest {
            tracing::debug!("connection cap reached: closing the longest-idle connection");
            phase.state.store(State::Evicted as u8, Ordering::Release);
            phase.evict.notify_one();
        }
    }
}

/// The TLS stream with the two read deadlines: `idle_timeout` while no request is under way
/// (then the connection ends as if the client had closed), `header_read_timeout` from the
/// first byte of a head until the head is complete (then the read fails, closing it).
struct Watched<S> {
    inner: S,
    phase: Arc<Phase>,
    limits: Limits,
    deadline: Pin<Box<Sleep>>,
    /// The `answers` count this reader last saw, to notice a new idle period.
    answers_seen: u64,
}

impl<S> Watched<S> {
    fn new(inner: S, phase: Arc<Phase>, limits: Limits) -> Self {
        Self {
            inner,
            phase,
            limits,
            deadline: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            answers_seen: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let answers = this.phase.answers.load(Ordering::Acquire);
        if answers != this.answers_seen {
            this.answers_seen = answers;
            let idle = Instant::now() + this.limits.idle_timeout;
            this.deadline.as_mut().reset(idle);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.phase.state() == State::Idle {
                    this.phase.set(State::Head);
                    let head = Instant::now() + this.limits.header_read_timeout;
                    this.deadline.as_mut().reset(head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.phase.state() {
                // The body: the request timeout answers a trickle with 408.
                State::Busy => Poll::Pending,
                State::Head => {
                    ready!(this.deadline.as_mut().poll(cx));
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request head not complete within the connection timeout",
                    )))
                }
                // End of stream: hyper closes an idle connection as if the client had.
                State::Idle | State::Evicted => {
                    ready!(this.deadline.as_mut().poll(cx));
                    Poll::Ready(Ok(()))
                }
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
