//! The HTTPS server: routes that translate requests to [`review`] and back,
//! and a TLS accept loop serving HTTP/2 and HTTP/1.1 with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_http::timeout::TimeoutLayer;

use super::metrics::{Metrics, RequestLabels, RuleLabels};
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
    Router::new()
        .route(
            "/validate",
            post(|s, h, b| admission(s, Endpoint::Validate, h, b)),
        )
        .route(
            "/mutate",
            post(|s, h, b| admission(s, Endpoint::Mutate, h, b)),
        )
        .merge(probes())
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request,
        ))
        .with_state(app)
}

/// Probes and metrics alone, for the optional plain-HTTP port.
pub fn probes() -> Router<Arc<App>> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
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

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &app.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
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

async fn admission(
    State(app): State<Arc<App>>,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "application/json")
        });
    if !json {
        return error(
            StatusCode::BAD_REQUEST,
            "content-type must be application/json",
        );
    }
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
            tracing::warn!(endpoint = endpoint.as_str(), error = %e, "malformed AdmissionReview");
            error(StatusCode::BAD_REQUEST, e)
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
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %e, "metrics listener stopped");
    }
}
