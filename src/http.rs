//! The HTTP surface: routes, limits and the one error type whose `IntoResponse` chooses every
//! status. Handlers decode with the wire module, call the pure core, encode, and log the
//! decision. The router is built apart from serving it, so tests drive it with `oneshot`.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Ready;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::future::Either;
use tower_http::timeout::TimeoutLayer;

use crate::admission;
use crate::metrics::{
    Endpoint, EndpointLabels, ExemptionLabels, Metrics, Outcome, RequestKey, RuleLabels,
    ShadowLabels,
};
use crate::namespaces::NamespaceCache;
use crate::params::ParamCache;
use crate::policy::{Date, PolicySet, RuleId, SharedPolicies};
use crate::request::{Request, operation_name};
use crate::review::{self, ReviewError};
use crate::rollout::Context;
use crate::verdict::Verdict;

/// Large enough for an UPDATE carrying object and oldObject at the apiserver's 3 MiB object
/// limit each (controller-runtime accepts 7 MiB); anything larger is refused before it is
/// buffered whole.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The apiserver's URLs are a path and `?timeout=10s`; anything much longer is not from it.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Today's date, asked once per request: the schedule and exemption expiry depend on it.
/// Injected so tests can pin any day.
pub type Clock = Arc<dyn Fn() -> Date + Send + Sync>;

#[derive(Clone)]
pub struct AppState {
    pub policies: Arc<SharedPolicies>,
    /// `--candidate-policies`: judged alongside, never answered with.
    pub candidate: Option<Arc<SharedPolicies>>,
    pub namespaces: NamespaceCache,
    /// Param objects read from the cluster, beside those in the policy directory.
    pub params: ParamCache,
    pub clock: Clock,
    /// True once policies and certificate are loaded and the listener serves; false again
    /// when shutting down, so load balancers stop sending before the listener closes.
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    pub fn new(policies: PolicySet) -> Self {
        Self {
            policies: Arc::new(SharedPolicies::new(policies)),
            candidate: None,
            namespaces: NamespaceCache::disabled(),
            params: ParamCache::disabled(),
            clock: Arc::new(Date::today),
            ready: Arc::new(AtomicBool::new(false)),
            metrics: Arc::new(Metrics::default()),
        }
    }

    pub fn with_candidate(mut self, candidate: PolicySet) -> Self {
        self.candidate = Some(Arc::new(SharedPolicies::new(candidate)));
        self
    }

    pub fn with_namespaces(mut self, namespaces: NamespaceCache) -> Self {
        self.namespaces = namespaces;
        self
    }

    pub fn with_params(mut self, params: ParamCache) -> Self {
        self.params = params;
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
}

/// The webhook router. `request_timeout` bounds each request, body reading included, and
/// must stay below the webhook configurations' `timeoutSeconds`.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let routes = Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { Error::NotFound })
        // axum clones the state for every request: one reference count, not one per field.
        .with_state(Arc::new(state));
    // The limits wrap the routes once, in front of routing. `Router::layer` wraps each route
    // in its own boxed copy of every layer, and axum clones such a route level by level for
    // each request: ten more boxes allocated and freed per review (BENCHMARKS.md,
    // session 25).
    let limited = tower::ServiceBuilder::new()
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer_fn(RefuseOversized)
        .service(routes);
    Router::new().fallback_service(limited)
}

/// The plain-HTTP router of the metrics listener: Prometheus text, and the same health
/// endpoints as the webhook listener so kubelet probes need no TLS.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { Error::NotFound })
        .with_state(Arc::new(state))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Refuses what no apiserver sends before a byte of body is read: an overlong URL (414),
/// oversized headers (431; hyper's read buffer limit is the backstop), or a
/// declared body larger than the limit (413, answered at once instead of after the upload).
/// A service of its own around the routes: axum's `map_request` boxed every request's
/// future and moved the request through an extractor, about 1k instructions per review
/// (BENCHMARKS.md, session 20).
#[derive(Clone)]
struct RefuseOversized<S>(S);

impl<S> tower::Service<axum::extract::Request> for RefuseOversized<S>
where
    S: tower::Service<axum::extract::Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        match oversized(&req) {
            Some(refusal) => Either::Left(std::future::ready(Ok(refusal.into_response()))),
            None => Either::Right(self.0.call(req)),
        }
    }
}

fn oversized(req: &axum::extract::Request) -> Option<Error> {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > MAX_URI_BYTES {
        return Some(Error::UriTooLong(len));
    }
    let head: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if head > crate::transport::MAX_HEAD_BYTES {
        return Some(Error::HeadersTooLarge(head));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    declared
        .filter(|&d| d > MAX_BODY_BYTES as u64)
        .map(Error::BodyTooLarge)
}

/// The request's `Content-Type`, the one header the review endpoints read: taken alone,
/// where axum's `HeaderMap` extractor copied every header of every request.
struct ContentType(Option<HeaderValue>);

impl<S: Sync> FromRequestParts<S> for ContentType {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(parts.headers.get(header::CONTENT_TYPE).cloned()))
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn validate(
    State(state): State<Arc<AppState>>,
    ContentType(content_type): ContentType,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    // The set is taken once, so the request is judged by the set it was decoded for.
    let set = state.policies.current();
    let candidate = state.candidate.as_ref().map(|c| c.current());
    let reading = if set.has_cel() || candidate.as_ref().is_some_and(|c| c.has_cel()) {
        let candidate_reads = candidate.as_ref().map(|c| c.object_reads());
        review::Reading::Cel(
            set.object_reads()
                .union(candidate_reads.unwrap_or_default()),
        )
    } else {
        review::Reading::Checks
    };
    let req = read_review(
        &state,
        Endpoint::Validate,
        content_type.as_ref(),
        body,
        reading,
    )?;
    let started = Instant::now();
    let span = tracing::debug_span!("review", uid = %req.uid);
    let body = span.in_scope(|| {
        let namespace = state.namespaces.get(&req.namespace);
        let params = state.params.current();
        let ctx = Context {
            today: (state.clock)(),
            namespace_labels: NamespaceCache::labels(&namespace),
            cluster_params: params.as_deref(),
        };
        let verdict = admission::validate(&set, &req, &ctx);
        log_validation(&req, &verdict);
        record_validation(&state.metrics, &req, &verdict);
        if let Some(candidate) = &candidate {
            let shadow = admission::validate(candidate, &req, &ctx);
            compare_shadow(&state.metrics, &req, &verdict, &shadow);
        }
        review::encode_validation(&req, &verdict)
    });
    observe(&state.metrics, Endpoint::Validate, started);
    Ok(json(&state, body))
}

/// Logs and counts where the candidate set would decide a check differently. Only enforced
/// denials count: they are what switching sets would change for the workload's owner.
fn compare_shadow(metrics: &Metrics, req: &Request, current: &Verdict, candidate: &Verdict) {
    let denied =
        |v: &Verdict| -> BTreeSet<RuleId> { v.denials().map(|d| d.rule.clone()).collect() };
    let (now, then) = (denied(current), denied(candidate));
    let changes = then
        .difference(&now)
        .map(|c| (c, "newly-denied"))
        .chain(now.difference(&then).map(|c| (c, "no-longer-denied")));
    for (check, change) in changes {
        tracing::info!(
            uid = req.uid.as_str(),
            namespace = req.namespace.as_str(),
            kind = req.kind.as_str(),
            name = req.name.as_str(),
            operation = operation_name(&req.operation),
            user = req.user.as_str(),
            dry_run = req.dry_run,
            check = check.as_str(),
            change,
            "candidate policies disagree"
        );
        let labels = ShadowLabels {
            check: check.clone(),
            namespace: req.namespace.clone(),
            change,
        };
        metrics.shadow_disagreements.get_or_create(&labels).inc();
    }
}

async fn mutate(
    State(state): State<Arc<AppState>>,
    ContentType(content_type): ContentType,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let req = read_review(
        &state,
        Endpoint::Mutate,
        content_type.as_ref(),
        body,
        review::Reading::Full,
    )?;
    let started = Instant::now();
    let span = tracing::debug_span!("review", uid = %req.uid);
    let body = span.in_scope(|| {
        let ops = admission::mutate(&state.policies.current(), &req);
        tracing::debug!(
            namespace = req.namespace.as_str(),
            kind = req.kind.as_str(),
            operation = operation_name(&req.operation),
            patch_operations = ops.len(),
            "mutated"
        );
        let outcome = if ops.is_empty() {
            Outcome::Unchanged
        } else {
            Outcome::Patched
        };
        state.metrics.count_request(request_key(&req, outcome));
        review::encode_mutation(&req, &ops)
    });
    observe(&state.metrics, Endpoint::Mutate, started);
    Ok(json(&state, body))
}

fn observe(metrics: &Metrics, endpoint: Endpoint, started: Instant) {
    metrics.observe_latency(endpoint, started.elapsed().as_secs_f64());
}

fn request_key(req: &Request, outcome: Outcome) -> RequestKey<'_> {
    RequestKey {
        outcome,
        kind: req.workload,
        operation: &req.operation,
        dry_run: req.dry_run,
    }
}

fn record_validation(metrics: &Metrics, req: &Request, verdict: &Verdict) {
    let outcome = match verdict {
        Verdict::Skipped(_) => Outcome::Skipped,
        Verdict::Unjudgeable(_) => Outcome::Unjudgeable,
        Verdict::Judged(_) if !verdict.is_allowed() => Outcome::Denied,
        Verdict::Judged(_) => Outcome::Allowed,
    };
    metrics.count_request(request_key(req, outcome));
    if let Verdict::Judged(found) = verdict {
        for rule in &found.ignored {
            let labels = RuleLabels {
                check: rule.clone(),
            };
            metrics.cel_errors_ignored.get_or_create(&labels).inc();
        }
    }
    metrics.count_violations(
        &req.namespace,
        req.dry_run,
        verdict.violations().map(|v| (&v.rule, v.outcome())),
    );
    for v in verdict.violations() {
        if let Some(e) = &v.exemption {
            let labels = ExemptionLabels {
                check: v.rule.clone(),
                namespace: req.namespace.clone(),
                source: e.source.as_str(),
            };
            metrics.exemptions_applied.get_or_create(&labels).inc();
        }
    }
}

/// The review in the body; anything else is refused with the HTTP error that says why, and
/// counted, since the apiserver then applies the webhook's failurePolicy.
fn read_review(
    state: &AppState,
    endpoint: Endpoint,
    content_type: Option<&HeaderValue>,
    body: Result<Bytes, BytesRejection>,
    reading: review::Reading,
) -> Result<Request, Error> {
    let read = decode_body(content_type, body, reading);
    if read.is_err() {
        state
            .metrics
            .refused
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            })
            .inc();
    }
    read
}

fn decode_body(
    content_type: Option<&HeaderValue>,
    body: Result<Bytes, BytesRejection>,
    reading: review::Reading,
) -> Result<Request, Error> {
    let content_type = content_type.and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(Error::MediaType(content_type.to_owned()));
    }
    let body = body.map_err(Error::Body)?;
    Ok(review::decode_with(&body, reading)?)
}

/// A JSON answer. Once shutdown has begun it also asks the client to close the connection:
/// the client then reconnects (to another replica) before its next request instead of racing
/// the close.
fn json(state: &AppState, body: Vec<u8>) -> Response {
    let mut res = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if !state.ready.load(Ordering::Acquire) {
        res.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    res
}

/// One structured line per decision that is not a plain allow (plain allows and skips at
/// debug), with uid, namespace, kind, name, operation, user and dryRun, and each violation as
/// `policy/check:mode` (`:exempt` where an exemption lifted it). One line, not one per
/// violation: logging is a measurable share of a denial's cost (BENCHMARKS.md).
fn log_validation(req: &Request, verdict: &Verdict) {
    let outcome = match verdict {
        Verdict::Skipped(skip) => skip.as_str(),
        Verdict::Unjudgeable(_) => "unjudgeable",
        Verdict::Judged(_) if !verdict.is_allowed() => "denied",
        Verdict::Judged(v) if v.is_empty() => "allowed",
        Verdict::Judged(_) => "allowed-with-violations",
    };
    // Plain `&str` values: recorded as they are, where `%` and `?` would format each first.
    // The message too: given as a field, first as the macros place it, it is a `&str` where
    // a format string is `fmt::Arguments` formatted through `Debug`; every formatter writes
    // both alike.
    let operation = operation_name(&req.operation);
    macro_rules! line {
        ($level:expr, $($field:tt)*) => {
            tracing::event!($level, message = "validated", uid = req.uid.as_str(),
                namespace = req.namespace.as_str(), kind = req.kind.as_str(),
                name = req.name.as_str(), operation, user = req.user.as_str(),
                dry_run = req.dry_run, outcome, $($field)*)
        };
    }
    match verdict {
        Verdict::Skipped(_) => line!(tracing::Level::DEBUG,),
        Verdict::Judged(v) if v.is_empty() => line!(tracing::Level::DEBUG,),
        Verdict::Unjudgeable(reason) => line!(tracing::Level::INFO, reason = reason.as_str()),
        Verdict::Judged(violations) => {
            let mut list = String::with_capacity(violations.len() * 40);
            for v in violations {
                if !list.is_empty() {
                    list.push(' ');
                }
                list.push_str(&v.policy);
                list.push('/');
                list.push_str(v.rule.as_str());
                list.push(':');
                list.push_str(v.outcome());
            }
            line!(tracing::Level::INFO, violations = list.as_str());
        }
    }
}

/// Everything that keeps a request from being judged. A denial is not an error: it is a
/// judged review and travels as HTTP 200.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Review(#[from] ReviewError),
    #[error("content type {0:?} is not application/json")]
    MediaType(String),
    #[error("{0}")]
    Body(BytesRejection),
    #[error(
        "no such endpoint: portcullis serves POST /validate, POST /mutate, GET /healthz, GET /readyz"
    )]
    NotFound,
    #[error("the URL is {0} bytes long; at most {MAX_URI_BYTES} are accepted")]
    UriTooLong(usize),
    #[error("the body is {0} bytes long; at most {MAX_BODY_BYTES} are accepted")]
    BodyTooLarge(u64),
    #[error("the headers are {0} bytes long; at most {max} are accepted", max = crate::transport::MAX_HEAD_BYTES)]
    HeadersTooLarge(usize),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::Review(_) => StatusCode::BAD_REQUEST,
            Self::MediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Body(rejection) => rejection.status(),
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        };
        tracing::debug!(%status, error = %self, "request refused");
        (status, format!("{self}\n")).into_response()
    }
}
