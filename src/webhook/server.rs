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
use axum::routing::{get, post};
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_http::timeout::TimeoutLayer;

use super::metrics::{Metrics, RejectionLabels, RequestLabels, RuleLabels};
use super::rbac::Rbac;
use super::review::{Caller, Endpoint, Reviewed, review};
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
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The API server's own object limit is 3 MiB.
    pub body_bytes: usize,
    /// Below the webhook's `timeoutSeconds`, so the API server hears from us.
    pub request: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 3 * 1024 * 1024,
            request: Duration::from_secs(4),
        }
    }
}

/// The webhook routes, probes and metrics.
pub fn router(app: Arc<App>, limits: Limits) -> Router {
    let max = limits.body_bytes;
    Router::new()
        .route(
            "/validate",
            post(move |s, h, b| admission(s, Endpoint::Validate, h, b, max)),
        )
        .route(
            "/mutate",
            post(move |s, h, b| admission(s, Endpoint::Mutate, h, b, max)),
        )
        .merge(routes())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            rejections,
        ))
        .with_state(app)
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
        "/validate" => "/validate",
        "/mutate" => "/mutate",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        _ => "other",
    };
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "-".to_string(), |c| c.0.to_string());
    let method = crate::echo::bounded(request.method().as_str());
    let response = next.run(request).await;
    let status = response.status();
    if !status.is_client_error() {
        return response;
    }
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
/// curl drop the 413 that came before the reset.
async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Option<Bytes>, String> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > max as u64) {
        tokio::spawn(drain(stream));
        return Ok(None);
    }
    let mut read = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("the request body could not be read: {e}"))?;
        if read.len() + chunk.len() > max {
            tokio::spawn(drain(stream));
            return Ok(None);
        }
        read.extend_from_slice(&chunk);
    }
    Ok(Some(read.into()))
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
    State(app): State<Arc<App>>,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
    max: usize,
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
    let body = match read_body(&headers, body, max).await {
        Ok(Some(body)) => body,
        Ok(None) => {
            return rejected(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body is larger than {max} bytes"),
            );
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
    let mut result = decide(&app.caller);
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
        result = decide(&denied);
    }
    app.metrics
        .decision_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(reviewed) => {
            record(&app.metrics, endpoint, &reviewed);
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
    let span = tracing::info_span!(
        "admission",
        uid = %r.uid,
        operation = r.operation,
        namespace = %r.namespace,
        name = %r.name,
    );
    let _entered = span.enter();
    if endpoint != Endpoint::Validate || !v.is_audited() {
        tracing::debug!(endpoint = endpoint.as_str(), verdict, "answered");
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

/// Below the webhooks' `timeoutSeconds: 5`, like the request timeout.
const HEADER_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight may take to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Accepts TLS connections until `shutdown` completes, then stops accepting
/// and lets every request in flight finish.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // The TLS session tickets and HTTP/2 SETTINGS are small writes: with
        // Nagle on, a new connection's first answer waits ~40 ms for an ACK.
        let _ = tcp.set_nodelay(true);
        let (acceptor, router, metrics, builder) = (
            acceptor.clone(),
            router.clone(),
            metrics.clone(),
            builder.clone(),
        );
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return handshake_failed(&metrics, peer, &e.to_string()),
                Err(_) => return handshake_failed(&metrics, peer, "timed out"),
            };
            // The client's address, for the log line of a rejected request.
            let router = tower::Layer::layer(&axum::Extension(ConnectInfo(peer)), router);
            let service = TowerToHyperService::new(router);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("shutdown: connections still open after {DRAIN_TIMEOUT:?}"),
    }
}

fn handshake_failed(metrics: &Metrics, peer: SocketAddr, why: &str) {
    metrics.tls_handshake_failures.inc();
    tracing::debug!(%peer, error = why, "TLS handshake failed");
}

/// Plain HTTP for probes and metrics (`--metrics-addr`).
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %e, "metrics listener stopped");
    }
}
