//! The HTTPS server: routes that translate requests to [`review`] and back,
//! and a TLS accept loop serving HTTP/2 and HTTP/1.1 with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_http::timeout::TimeoutLayer;

use super::events::{self, EventSink};
use super::metrics::{Metrics, RejectionLabels, RequestLabels, RuleLabels};
use super::rbac::Rbac;
use super::review::{Caller, Reviewed, review};
use super::wire::Endpoint;
use crate::decide::{ClusterView, Overrides, Rule};
use crate::policy::PolicySet;

/// What the handlers share.
pub struct App {
    pub policies: Arc<ArcSwap<PolicySet>>,
    pub cluster: Arc<dyn ClusterView + Send + Sync>,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    /// Policies loaded and, with cluster access, caches synced.
    pub ready: Arc<AtomicBool>,
    pub clock: fn() -> jiff::Timestamp,
    /// upgrade-guard's own identity, for the refresh record's integrity;
    /// overrides unchecked until RBAC is asked.
    pub caller: Caller,
    /// With cluster access: RBAC, asked whether a user may override.
    pub rbac: Option<Rbac>,
    /// With cluster access: where refusals and overrides go as Events.
    pub events: Option<EventSink>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The API server's own object limit is 3 MiB.
    pub body_bytes: usize,
    /// Below the webhook's `timeoutSeconds`, so the API server hears from us.
    pub request: Duration,
    /// Request bodies held in memory at once, in bytes (at least one
    /// `body_bytes`); a request waits for room as its body arrives.
    pub bodies_in_memory: usize,
    /// Requests decoded at once; each decode of a governed object costs up
    /// to ~1.1 kB per JSON value (capped by [`super::review::MAX_VALUES`]).
    pub decoders: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 3 * 1024 * 1024,
            request: Duration::from_secs(4),
            bodies_in_memory: 24 * 1024 * 1024,
            decoders: 2,
        }
    }
}

/// What bounds the memory of the requests in flight: the bytes of their
/// bodies, and how many are decoded at once.
#[derive(Clone)]
struct Budget {
    max_body: usize,
    bodies: Arc<tokio::sync::Semaphore>,
    decoders: Arc<tokio::sync::Semaphore>,
}

impl Budget {
    fn new(limits: &Limits) -> Self {
        let bodies = limits
            .bodies_in_memory
            .max(limits.body_bytes)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        Budget {
            max_body: limits.body_bytes,
            bodies: Arc::new(tokio::sync::Semaphore::new(bodies)),
            decoders: Arc::new(tokio::sync::Semaphore::new(limits.decoders.max(1))),
        }
    }

    /// Room for a body of `total` bytes: tops up what `held` already holds.
    async fn hold(&self, held: &mut Option<tokio::sync::OwnedSemaphorePermit>, total: usize) {
        let have = held.as_ref().map_or(0, |p| p.num_permits());
        let Ok(more) = u32::try_from(total.saturating_sub(have)) else {
            return;
        };
        if more == 0 {
            return;
        }
        if let Ok(permit) = self.bodies.clone().acquire_many_owned(more).await {
            match held {
                Some(h) => h.merge(permit),
                None => *held = Some(permit),
            }
        }
    }
}

/// What a listener serves: `/validate` and `/mutate` answered directly,
/// everything else by a router.
#[derive(Clone)]
pub struct Routes {
    admission: Option<Arc<Admission>>,
    router: Router,
}

impl From<Router> for Routes {
    fn from(router: Router) -> Routes {
        Routes {
            admission: None,
            router,
        }
    }
}

/// The two admission endpoints. They take most requests, so they are
/// served without the router: its layers boxed, cloned and dropped a
/// service and a future each per request, a tenth of the CPU of a pod
/// review (`perf`, docs/benchmarks.md).
struct Admission {
    app: Arc<App>,
    budget: Budget,
    timeout: Duration,
}

/// The webhook's endpoints, probes and metrics.
pub fn router(app: Arc<App>, limits: Limits) -> Routes {
    // Traced here, at start-up, not by the first request.
    super::workload_update::shapes();
    let admission = Admission {
        app: app.clone(),
        budget: Budget::new(&limits),
        timeout: limits.request,
    };
    let router = routes()
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            rejections,
        ))
        .with_state(app);
    Routes {
        admission: Some(Arc::new(admission)),
        router,
    }
}

impl Routes {
    /// The answer to one request from `peer`, counted in `activity`.
    async fn answer(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
        peer: SocketAddr,
        activity: &Activity,
    ) -> Response {
        let _in_flight = activity.begin();
        match (&self.admission, Endpoint::at(request.uri().path())) {
            (Some(admission), Some(endpoint)) => admission.answer(endpoint, request, peer).await,
            _ => {
                let mut request = request.map(Body::new);
                // The client's address, for the log line of a rejected request.
                request.extensions_mut().insert(ConnectInfo(peer));
                routed(self.router.clone(), request).await
            }
        }
    }
}

/// `request` answered by `router`.
async fn routed(mut router: Router, request: axum::extract::Request) -> Response {
    use tower::Service;
    let Ok(()) =
        std::future::poll_fn(|cx| Service::<axum::extract::Request>::poll_ready(&mut router, cx))
            .await;
    let Ok(response) = router.call(request).await;
    response
}

impl Admission {
    /// POST only; cut short past the request's time limit, as the router's
    /// other routes are.
    async fn answer(
        &self,
        endpoint: Endpoint,
        request: hyper::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> Response {
        let app = &self.app;
        let method = request.method().clone();
        let response = if method != axum::http::Method::POST {
            let mut refused = rejected(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "only POST is served here",
            );
            refused
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            refused
        } else {
            let (parts, body) = request.into_parts();
            let answered = admission(
                app,
                endpoint,
                parts.version,
                parts.headers,
                Body::new(body),
                &self.budget,
            );
            match tokio::time::timeout(self.timeout, answered).await {
                Ok(response) => response,
                Err(_) => {
                    let mut late = Response::new(Body::empty());
                    *late.status_mut() = StatusCode::REQUEST_TIMEOUT;
                    late
                }
            }
        };
        noted(app, endpoint.path(), Some(peer), &method, response)
    }
}

/// Probes and metrics alone, for the optional plain-HTTP port.
pub fn probes(app: Arc<App>) -> Router {
    routes()
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            rejections,
        ))
        .with_state(app)
}

fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { rejected(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
}

/// Why a request was turned away, for the log line and the metric label.
#[derive(Debug, Clone, Copy)]
struct Rejected(&'static str);

/// Logs and counts every 4xx answer with the client's address: a client
/// that sends oversized, mistyped or malformed requests is visible.
async fn rejections(
    State(app): State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Only the routes' own paths are echoed; anything else is one word.
    let path = match request.uri().path() {
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        _ => "other",
    };
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let method = request.method().clone();
    let response = next.run(request).await;
    noted(&app, path, client, &method, response)
}

/// `response`, logged and counted if it is a 4xx.
fn noted(
    app: &App,
    path: &'static str,
    client: Option<SocketAddr>,
    method: &axum::http::Method,
    response: Response,
) -> Response {
    let status = response.status();
    if !status.is_client_error() {
        return response;
    }
    let client = client.map_or_else(|| "-".to_string(), |c| c.to_string());
    let method = crate::quoted::bounded(method.as_str());
    let reason = match (response.extensions().get::<Rejected>(), status) {
        (Some(Rejected(reason)), _) => reason,
        (None, StatusCode::METHOD_NOT_ALLOWED) => "method_not_allowed",
        (None, StatusCode::REQUEST_TIMEOUT) => "timeout",
        (None, _) => "other",
    };
    app.metrics
        .rejections
        .get_or_create(&RejectionLabels { reason })
        .inc();
    tracing::warn!(%client, %method, path, status = status.as_u16(), reason, "request rejected");
    response
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: policies or caches not loaded yet",
        )
    }
}

/// OpenMetrics when the client asks for it (Prometheus does), else the
/// Prometheus text format that curl and older scrapers read.
async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let mut text = String::new();
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let ready = app.ready.load(Ordering::Acquire);
    app.metrics.ready.set(i64::from(ready));
    app.metrics
        .observe_refreshes(&app.cluster.with_records(), (app.clock)());
    match prometheus_client::encoding::text::encode(&mut text, &app.registry) {
        Ok(()) if openmetrics => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            super::metrics::prometheus_text(&text),
        )
            .into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be encoded",
        ),
    }
}

/// A JSON error body: what was wrong with the request, nothing internal.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let body = serde_json::json!({ "error": message.to_string() }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// [`error`] for a request turned away, with why, for [`rejections`].
fn rejected(status: StatusCode, reason: &'static str, message: impl std::fmt::Display) -> Response {
    let mut response = error(status, message);
    response.extensions_mut().insert(Rejected(reason));
    response
}

/// How much of an oversized body is read and thrown away after the 413, at
/// most, and for how long: enough for a client that sent a few times the
/// limit to finish; past it the stream is reset.
const DRAIN_BYTES: usize = 64 * 1024 * 1024;
const DRAIN_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a body of at most `max` bytes. A longer one (by its Content-Length,
/// or as it arrives) gets `None`, and the rest of it is read and discarded
/// in the background, up to [`DRAIN_BYTES`] or [`DRAIN_BODY_TIMEOUT`]: over HTTP/2,
/// resetting a stream the client is still sending on makes clients such as
/// curl drop the 413 that came before the reset; over HTTP/1.1, closing
/// while the client still sends can lose the 413 to a TCP reset.
/// The body is held in `budget` (in `held`) as it is read.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    budget: &Budget,
    held: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Option<Bytes>, String> {
    let max = budget.max_body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > max as u64) {
        tokio::spawn(drain(stream));
        return Ok(None);
    }
    // Room for a declared length up front, so two bodies never each hold
    // half of what both need.
    let declared = declared.map_or(0, |n| n as usize);
    budget.hold(held, declared).await;
    // A body whose declared length comes in one chunk (one HTTP/2 DATA
    // frame, see `serve`) is kept as it came. Any other is copied together
    // as it comes, so that no chunk is held while the client takes its time.
    let mut whole = None;
    let mut read = Vec::new();
    let mut length = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("the request body could not be read: {e}"))?;
        if length + chunk.len() > max {
            tokio::spawn(drain(stream));
            return Ok(None);
        }
        length += chunk.len();
        budget.hold(held, length).await;
        if length == declared && length == chunk.len() {
            whole = Some(chunk);
            continue;
        }
        read.reserve(declared.max(length).saturating_sub(read.len()));
        if let Some(earlier) = whole.take() {
            read.extend_from_slice(&earlier);
        }
        read.extend_from_slice(&chunk);
    }
    Ok(Some(whole.unwrap_or_else(|| read.into())))
}

async fn drain(mut stream: axum::body::BodyDataStream) {
    let mut left = DRAIN_BYTES;
    let _ = tokio::time::timeout(DRAIN_BODY_TIMEOUT, async {
        while let Some(Ok(chunk)) = stream.next().await {
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

async fn admission(
    app: &App,
    endpoint: Endpoint,
    version: axum::http::Version,
    headers: HeaderMap,
    body: Body,
    budget: &Budget,
) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "application/json")
        });
    if !json {
        return rejected(
            StatusCode::BAD_REQUEST,
            "content_type",
            "content-type must be application/json",
        );
    }
    let max = budget.max_body;
    // Released when the answer is made, whatever path it takes.
    let mut held = None;
    let body = match read_body(&headers, body, budget, &mut held).await {
        Ok(Some(body)) => body,
        Ok(None) => {
            let mut too_large = rejected(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body is larger than {max} bytes"),
            );
            // An HTTP/1.1 connection cannot carry the next request until the
            // rest of this body is read: say it closes once it is (RFC 9112
            // 9.6), rather than leave the client waiting on a drain.
            if version < axum::http::Version::HTTP_2 {
                too_large.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
            }
            return too_large;
        }
        Err(e) => return rejected(StatusCode::BAD_REQUEST, "body_unreadable", e),
    };
    let started = Instant::now();
    let policies = app.policies.load();
    let now = (app.clock)();
    let decide = |caller: &Caller| {
        review(
            &body,
            endpoint,
            &policies,
            app.cluster.as_ref(),
            now,
            caller,
        )
    };
    let decoding = budget.decoders.acquire().await;
    let mut result = decide(&app.caller);
    drop(decoding);
    // An override is honoured only when RBAC says this user may force here;
    // asked only when one would be used, then the request decided again.
    if let (Ok(reviewed), Some(rbac), Endpoint::Validate) = (&result, &app.rbac, endpoint)
        && reviewed.verdict.rule == Some(Rule::Forced)
        && !rbac
            .may_force(&reviewed.user_info, &reviewed.namespace)
            .await
    {
        let denied = Caller {
            overrides: Overrides::Denied {
                user: reviewed.user.clone(),
                namespace: reviewed.namespace.clone(),
            },
            ..app.caller.clone()
        };
        let _decoding = budget.decoders.acquire().await;
        result = decide(&denied);
    }
    app.metrics
        .decision_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(reviewed) => {
            record(&app.metrics, endpoint, &reviewed);
            if let (Some(sink), Some(o)) =
                (&app.events, events::occurrence(endpoint, &reviewed, now))
            {
                sink.send(o);
            }
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                reviewed.body,
            )
                .into_response()
        }
        Err(e) => {
            app.metrics
                .requests
                .get_or_create(&RequestLabels {
                    endpoint: endpoint.as_str(),
                    operation: "",
                    verdict: "invalid",
                })
                .inc();
            rejected(StatusCode::BAD_REQUEST, "malformed", e)
        }
    }
}

/// Metrics for every answer; an audit line for every refusal and override
/// (on /validate only, so one change is audited once).
fn record(metrics: &Metrics, endpoint: Endpoint, r: &Reviewed) {
    let v = &r.verdict;
    let verdict = match (v.allowed, v.rule) {
        (false, _) => "refused",
        (true, Some(Rule::Forced)) => "forced",
        (true, _) => "allowed",
    };
    metrics
        .requests
        .get_or_create(&RequestLabels {
            endpoint: endpoint.as_str(),
            operation: r.operation,
            verdict,
        })
        .inc();
    // No span per request: at the info level a span formats its fields
    // into the log layer whether or not anything is logged inside it.
    if endpoint != Endpoint::Validate || !v.is_audited() {
        tracing::debug!(
            uid = %r.uid,
            operation = r.operation,
            namespace = %r.namespace,
            name = %r.name,
            endpoint = endpoint.as_str(),
            verdict,
            "answered"
        );
        return;
    }
    match v.rule {
        Some(Rule::Forced) => {
            metrics.overrides.inc();
        }
        Some(rule) => {
            metrics
                .refusals
                .get_or_create(&RuleLabels {
                    rule: rule.as_str(),
                })
                .inc();
        }
        None => {}
    }
    tracing::info!(
        target: "upgrade_guard::audit",
        uid = %r.uid,
        user = %r.user,
        groups = ?r.groups,
        operation = r.operation,
        kind = %r.kind,
        namespace = %r.namespace,
        name = %r.name,
        from = v.from.as_deref().unwrap_or(""),
        to = v.to.as_deref().unwrap_or(""),
        rule = v.rule.map(Rule::as_str).unwrap_or(""),
        reason = %v.reason,
        dry_run = r.dry_run,
        allowed = v.allowed,
        "audit"
    );
}

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight may take to finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// What bounds one listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once; above it a connection gets one 503.
    pub max: usize,
    /// A connection that sends no whole request head this long after it
    /// opened (the TLS handshake done) is closed while half the cap or more
    /// is taken: what frees the slots of clients that connect and send
    /// nothing, or trickle their first request's headers. With room to
    /// spare such a connection is held as an idle one is: the API server's
    /// Go client keeps a connection it dialed but did not need in its idle
    /// pool, and closing it sooner raced with the client's first use of it
    /// (a webhook call failed with "broken pipe" on the real control plane).
    pub first_request: Duration,
    /// A connection with no request in flight this long is closed. Longer
    /// than the API server's Go client keeps an idle one (90 s), so that the
    /// client closes first: a server that closes an idle connection races
    /// with a client reusing it.
    pub idle: Duration,
    /// HTTP/2 pings find dead peers sooner.
    pub ping_every: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max: 1000,
            first_request: Duration::from_secs(4),
            idle: Duration::from_secs(120),
            ping_every: Duration::from_secs(30),
        }
    }
}

/// Per connection: requests in flight and when the last one ended.
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    served: AtomicBool,
    last: std::sync::Mutex<tokio::time::Instant>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: Default::default(),
            served: AtomicBool::new(false),
            last: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    fn touch(&self) {
        if let Ok(mut last) = self.last.lock() {
            *last = tokio::time::Instant::now();
        }
    }

    /// A request came in, for [`Activity::idle`]: in flight until the
    /// guard is dropped.
    fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Release);
        InFlight(self)
    }

    /// Resolves once the connection has been idle past its limit; one
    /// that has sent no request yet is held to `first_request` while its
    /// listener is `pressed`.
    async fn idle(&self, limits: &ConnectionLimits, pressed: impl Fn() -> bool) {
        loop {
            let served = self.served.load(Ordering::Acquire);
            let limit = if served || !pressed() {
                limits.idle
            } else {
                limits.first_request
            };
            let since = self.last.lock().map_or(Duration::ZERO, |l| l.elapsed());
            if self.in_flight.load(Ordering::Acquire) == 0 && since >= limit {
                return;
            }
            let mut wait = limit.saturating_sub(since);
            if !served {
                // Pressure may come at any time.
                wait = wait.min(limits.first_request);
            }
            tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
        }
    }
}

/// A request in flight on a connection. It ends when dropped: answered, or
/// given up when the client resets its stream, which drops the answer's
/// future half way.
struct InFlight<'a>(&'a Activity);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Raises the soft limit on open files to the hard one, and returns the
/// connection cap that leaves `reserve` descriptors for everything else
/// (watches, files, the other listener).
pub fn descriptor_budget(wanted: usize, reserve: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the one struct above.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return wanted;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    };
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    wanted.min(soft.saturating_sub(reserve).max(1))
}

/// One serving thread per core: what the webhook's listener serves on.
pub fn per_core() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The accept loop of both listeners (TLS when `tls` is given), its
/// connections served on `threads` threads of their own ([`Workers`]; 0:
/// on the caller's runtime, enough for probes): serves until `shutdown`
/// completes, then stops accepting and lets every request in flight finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    threads: usize,
    routes: impl Into<Routes>,
    metrics: Arc<Metrics>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let routes = Arc::new(routes.into());
    let workers = (threads > 0)
        .then(|| Workers::start(threads))
        .transpose()
        .inspect_err(|e| tracing::warn!(error = %e, "no serving threads; connections are served on the main runtime"))
        .ok()
        .flatten();
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No header read timeout: hyper starts it when it waits for the next
    // request's head, so it closed idle keep-alive connections after a few
    // seconds without a word, and a Go client reusing one just then (the API
    // server's, which does not retry a POST) got EOF and failed the write
    // under failurePolicy Fail. The connection's own limits (first request,
    // idle) bound a client that trickles its headers.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    // Frames of up to 64 KiB: a review of that size comes in one DATA
    // frame, so its body is read without a copy (`read_body`).
    builder
        .http2()
        .max_frame_size(64 * 1024)
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.ping_every))
        .keep_alive_timeout(limits.ping_every);
    let builder = Arc::new(builder);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max));
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tokio::time::sleep(accept_errors.failed(&e)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        accept_errors.succeeded();
        // The TLS session tickets and HTTP/2 SETTINGS are small writes: with
        // Nagle on, a new connection's first answer waits ~40 ms for an ACK.
        let _ = tcp.set_nodelay(true);
        let slot = slots.clone().try_acquire_owned().ok();
        if slot.is_none() {
            metrics.connections_refused.inc();
        }
        let connection = Connection {
            tls: tls.clone(),
            routes: routes.clone(),
            metrics: metrics.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            limits,
            slot,
            slots: slots.clone(),
            peer,
        };
        match &workers {
            Some(workers) => workers.hand(tcp, connection),
            None => drop(tokio::spawn(connection.serve(tcp))),
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("shutdown: connections still open after {DRAIN_TIMEOUT:?}"),
    }
}

fn closed<E: std::fmt::Display>(peer: SocketAddr, result: Result<(), E>) {
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection closed with an error");
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    tls: Option<TlsAcceptor>,
    routes: Arc<Routes>,
    metrics: Arc<Metrics>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    limits: ConnectionLimits,
    /// Its place under the connection cap; `None` over it.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The listener's places.
    slots: Arc<tokio::sync::Semaphore>,
    peer: SocketAddr,
}

impl Connection {
    /// Serves the connection until it closes, idles past its limit or the
    /// server shuts down.
    async fn serve(self, tcp: tokio::net::TcpStream) {
        let Connection {
            tls,
            routes,
            metrics,
            builder,
            watcher,
            limits,
            slot,
            slots,
            peer,
        } = self;
        let activity = Arc::new(Activity::new());
        let routes = match slot {
            Some(_) => routes,
            // Over the cap: one polite answer, then the connection closes.
            None => Arc::new(Routes::from(Router::new().fallback(|| async {
                let mut busy = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many connections; try again",
                );
                busy.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
                busy
            }))),
        };
        let limits = match slot {
            Some(_) => limits,
            None => ConnectionLimits {
                first_request: Duration::from_secs(1),
                idle: Duration::ZERO,
                ..limits
            },
        };
        let service = hyper::service::service_fn(|request| {
            let (routes, activity) = (routes.clone(), activity.clone());
            // Boxed: hyper moves each stream's future, which holds the
            // whole answer's, into a task of its own, a copy of all of it
            // per request (3% of a pod review's CPU, `perf`).
            Box::pin(async move {
                Ok::<_, std::convert::Infallible>(routes.answer(request, peer, &activity).await)
            })
        });
        let served = async {
            match &tls {
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                return handshake_failed(&metrics, peer, &e.to_string());
                            }
                            Err(_) => return handshake_failed(&metrics, peer, "timed out"),
                        };
                    activity.touch();
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    closed(peer, watcher.watch(connection.into_owned()).await)
                }
                None => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                    closed(peer, watcher.watch(connection.into_owned()).await)
                }
            }
        };
        // Half the cap or more taken (over it, always).
        let pressed = || slot.is_none() || slots.available_permits() * 2 < limits.max;
        tokio::select! {
            () = served => {}
            () = activity.idle(&limits, pressed) => tracing::debug!(%peer, "closed an idle connection"),
        }
        drop(slot);
    }
}

/// Threads that each run their own single-threaded runtime and serve the
/// connections handed to them, each connection and its HTTP/2 streams on
/// one thread, one thread per core. Under the multi-threaded runtime, a
/// stream's task and its connection's ran on different threads, and each
/// answer cost a wake-up across them: served this way, a pod review took
/// half the CPU (`cargo bench --bench load`, docs/benchmarks.md).
struct Workers {
    queues: Vec<tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, Connection)>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Workers {
    /// `count` threads, each with its runtime. They stop once the
    /// `Workers` are dropped and their connections have closed.
    fn start(count: usize) -> std::io::Result<Workers> {
        let mut queues = Vec::new();
        for i in 0..count {
            let (queue, mut handed) = tokio::sync::mpsc::unbounded_channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name(format!("serve-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let mut open = tokio::task::JoinSet::new();
                        loop {
                            tokio::select! {
                                next = handed.recv() => {
                                    let Some((tcp, connection)) = next else { break };
                                    match tokio::net::TcpStream::from_std(tcp) {
                                        Ok(tcp) => drop(open.spawn(Connection::serve(connection, tcp))),
                                        Err(e) => tracing::warn!(error = %e, "a connection could not be served"),
                                    }
                                }
                                Some(_) = open.join_next(), if !open.is_empty() => {}
                            }
                        }
                        while open.join_next().await.is_some() {}
                    });
                })?;
            queues.push(queue);
        }
        Ok(Workers {
            queues,
            next: Default::default(),
        })
    }

    /// Hands the connection to the next thread, round robin; served here
    /// if that thread is gone.
    fn hand(&self, tcp: tokio::net::TcpStream, connection: Connection) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => return tracing::warn!(error = %e, "a connection could not be handed over"),
        };
        if let Err(tokio::sync::mpsc::error::SendError((tcp, connection))) =
            self.queues[i].send((tcp, connection))
        {
            match tokio::net::TcpStream::from_std(tcp) {
                Ok(tcp) => drop(tokio::spawn(connection.serve(tcp))),
                Err(e) => tracing::warn!(error = %e, "a connection could not be served"),
            }
        }
    }
}

/// Backs off on failed accepts (out of descriptors, say), 50 ms doubling
/// to 800 ms, and logs the first failure and then at most one line a minute.
#[derive(Default)]
struct AcceptErrors {
    failures: u32,
    suppressed: u64,
    logged: Option<tokio::time::Instant>,
}

impl AcceptErrors {
    fn failed(&mut self, e: &std::io::Error) -> Duration {
        let due = self
            .logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        if due {
            tracing::warn!(error = %e, suppressed = self.suppressed, "accept failed; backing off");
            self.logged = Some(tokio::time::Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        self.failures = (self.failures + 1).min(5);
        Duration::from_millis(50 << (self.failures - 1))
    }

    fn succeeded(&mut self) {
        self.failures = 0;
    }
}

fn handshake_failed(metrics: &Metrics, peer: SocketAddr, why: &str) {
    metrics.tls_handshake_failures.inc();
    tracing::debug!(%peer, error = why, "TLS handshake failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_fits_the_raised_descriptor_limit() {
        let cap = descriptor_budget(usize::MAX, 128);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the one struct above.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max, "the soft limit is raised");
        let soft = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
        assert_eq!(cap, soft.saturating_sub(128).max(1));
        assert_eq!(descriptor_budget(10, 128), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_accepts_back_off_to_a_second_and_log_once_a_minute() {
        let mut errors = AcceptErrors::default();
        let e = std::io::Error::other("too many open files");
        let waits: Vec<u128> = (0..7).map(|_| errors.failed(&e).as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 400, 800, 800, 800]);
        assert_eq!(errors.suppressed, 6, "one line logged, six held back");
        tokio::time::advance(Duration::from_secs(61)).await;
        errors.failed(&e);
        assert_eq!(errors.suppressed, 0, "logged again after a minute");
        errors.succeeded();
        assert_eq!(errors.failed(&e).as_millis(), 50);
    }
}
