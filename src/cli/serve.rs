//! `upgrade-guard serve`: the webhook server. With no flags: 127.0.0.1:8443,
//! a development certificate made in memory, policies from `./policies`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::{Common, Error};
use crate::cluster::live;
use crate::decide::{ClusterView, NoCluster};
use crate::webhook::metrics::Metrics;
use crate::webhook::server::{self, App, Limits};
use crate::webhook::tls;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve HTTPS on.
    #[arg(long, env = "UPGRADE_GUARD_ADDR", default_value = "127.0.0.1:8443")]
    pub addr: SocketAddr,
    /// Serving certificate (PEM); reloaded when it changes. Without it, a
    /// development certificate for loopback is made.
    #[arg(long, env = "UPGRADE_GUARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Serving key (PEM).
    #[arg(long, env = "UPGRADE_GUARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve only clients with a certificate from this CA (mTLS).
    #[arg(long, env = "UPGRADE_GUARD_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// A plain-HTTP address for /metrics, /healthz and /readyz.
    #[arg(long, env = "UPGRADE_GUARD_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    #[arg(
        long,
        env = "UPGRADE_GUARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Watch a cluster with this kubeconfig (in a pod, the in-cluster
    /// configuration is used without it).
    #[arg(long, env = "UPGRADE_GUARD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The user name the refresh controller writes as, the only one whose
    /// changes to the refresh record are accepted; in a pod, the service
    /// account (`system:serviceaccount:NS:NAME`) by default.
    #[arg(long, env = "UPGRADE_GUARD_SELF_USER")]
    pub self_user: Option<String>,
    /// Where the development CA is written when no --tls-cert is given.
    #[arg(long, env = "UPGRADE_GUARD_DEV_CA", default_value_os_t = std::env::temp_dir().join("upgrade-guard-dev-ca.crt"))]
    pub dev_ca: PathBuf,
    /// Connections served at once on each listener (above it: one 503, then
    /// closed); lowered to fit the open-file limit.
    #[arg(long, env = "UPGRADE_GUARD_MAX_CONNECTIONS", default_value_t = 1000)]
    pub max_connections: usize,
    /// Largest request body accepted (larger gets 413).
    #[arg(long, env = "UPGRADE_GUARD_MAX_BODY_BYTES", default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Time to answer one request; keep it below the webhook's timeoutSeconds.
    #[arg(
        long,
        env = "UPGRADE_GUARD_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 4.0
    )]
    pub request_timeout_seconds: f64,
    /// How often the certificate files are checked for a change.
    #[arg(long, env = "UPGRADE_GUARD_CERT_RELOAD_SECONDS", default_value_t = 5.0)]
    pub cert_reload_seconds: f64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn run(args: &Args, common: &Common) -> Result<ExitCode, Error> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::failed("cannot start the runtime", e))?;
    runtime.block_on(serve(args, common))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal, never into a file or a pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

async fn serve(args: &Args, common: &Common) -> Result<ExitCode, Error> {
    let file_policies = common.load_policies()?;
    tracing::info!(policies = file_policies.len(), path = %common.policy_path().display(), "policies loaded");
    if file_policies.is_empty() {
        tracing::warn!("{}", super::no_policy(&common.policy_path()));
    }
    let mut registry = Registry::with_prefix("upgrade_guard");
    let metrics = Arc::new(Metrics::register(&mut registry));

    let certs = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let store = tls::CertStore::from_files(cert, key).map_err(|e| Error::failed("", e))?;
            let (gauge, failures, every) = (
                metrics.certificate_expiry.clone(),
                metrics.certificate_reload_failures.clone(),
                Duration::from_secs_f64(args.cert_reload_seconds.max(0.05)),
            );
            tokio::spawn(store.clone().watch(
                every,
                move |s| {
                    gauge.set(s.not_after().unwrap_or_default());
                },
                move || {
                    failures.inc();
                },
            ));
            store
        }
        _ => development_certificate(common.now(), &args.dev_ca, args.addr)?,
    };
    metrics
        .certificate_expiry
        .set(certs.not_after().unwrap_or_default());
    tracing::info!(not_after = %tls::expiry(certs.not_after()), "serving certificate");
    let tls_config =
        tls::server_config(certs, args.client_ca.as_deref()).map_err(|e| Error::failed("", e))?;

    let policies = Arc::new(ArcSwap::from_pointee(file_policies.clone()));
    let ready = Arc::new(AtomicBool::new(false));
    let mut rbac = None;
    let mut events = None;
    let instance = std::env::var("HOSTNAME")
        .unwrap_or_else(|_| format!("upgrade-guard-{}", std::process::id()));
    let self_user = args.self_user.clone().or_else(service_account_user);
    match &self_user {
        Some(user) => tracing::info!(%user, "the refresh record is accepted from this user only"),
        None => tracing::warn!(
            "no --self-user and no service account token: every change to a refresh record is refused, the refresh controller's too"
        ),
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut controller = None;
    let cluster: Arc<dyn ClusterView + Send + Sync> = match cluster_client(
        args.kubeconfig.as_deref(),
    )
    .await?
    {
        Some(client) => {
            tracing::info!(
                "watching the cluster: StatefulSets, Deployments, pods, claims, UpgradePolicies"
            );
            rbac = Some(crate::webhook::rbac::Rbac::new(client.clone()));
            events = Some(crate::webhook::events::start(
                client.clone(),
                &instance,
                metrics.events_dropped.clone(),
            ));
            let view = live::start(
                client.clone(),
                file_policies.iter().cloned().collect(),
                policies.clone(),
                ready.clone(),
                metrics.policy_crd_missing.clone(),
            );
            // One refresh controller among the replicas, chosen by a Lease.
            let namespace =
                std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "upgrade-guard".into());
            let me = instance.clone();
            controller = Some(tokio::spawn(crate::refresh::controller::run(
                client,
                view.clone(),
                policies.clone(),
                namespace,
                me,
                stopped.clone(),
            )));
            Arc::new(view)
        }
        None => {
            tracing::info!(
                "no cluster access: policies from files; scale requests are judged without the live object"
            );
            ready.store(true, std::sync::atomic::Ordering::Release);
            Arc::new(NoCluster)
        }
    };
    let app = Arc::new(App {
        policies,
        cluster,
        metrics: metrics.clone(),
        registry: Arc::new(registry),
        ready,
        clock: jiff::Timestamp::now,
        caller: crate::webhook::Caller {
            self_user,
            ..Default::default()
        },
        rbac,
        events,
    });
    let limits = Limits {
        body_bytes: args.max_body_bytes,
        request: Duration::from_secs_f64(args.request_timeout_seconds.max(0.1)),
        ..Limits::default()
    };

    // Two listeners share the descriptors; 128 are kept for the rest.
    let max = server::descriptor_budget(args.max_connections * 2, 128) / 2;
    if max < args.max_connections {
        tracing::warn!(max, "the open-file limit lowers --max-connections");
    }
    let connections = server::ConnectionLimits {
        max: max.max(1),
        ..Default::default()
    };
    let listener = TcpListener::bind(args.addr)
        .await
        .map_err(|e| Error::failed(format!("cannot listen on {}", args.addr), e))?;
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = stop.send(true);
    });
    if let Some(addr) = args.metrics_addr {
        let plain = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::failed(format!("cannot listen on {addr}"), e))?;
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz over plain HTTP");
        let router = server::probes(app.clone());
        tokio::spawn(server::serve(
            plain,
            None,
            0,
            router,
            metrics.clone(),
            connections,
            until(stopped.clone()),
        ));
    }
    tracing::info!(addr = %args.addr, "serving /validate and /mutate over HTTPS");
    server::serve(
        listener,
        Some(tokio_rustls::TlsAcceptor::from(tls_config)),
        server::per_core(),
        server::router(app, limits),
        metrics,
        connections,
        until(stopped),
    )
    .await;
    // The controller gives its Lease up, so another replica takes over now.
    if let Some(controller) = controller {
        let _ = tokio::time::timeout(Duration::from_secs(5), controller).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// How long the development certificate is valid.
const DEV_CERT_DAYS: i64 = 30;

/// A development CA and loopback certificate, made in memory; the CA is
/// written to `ca_path` (replacing the last run's) so a client can trust it.
fn development_certificate(
    now: jiff::Timestamp,
    ca_path: &std::path::Path,
    addr: SocketAddr,
) -> Result<Arc<tls::CertStore>, Error> {
    let names = ["localhost", "127.0.0.1", "::1"].map(String::from);
    let bundle =
        crate::certs::generate(&names, now, DEV_CERT_DAYS).map_err(|e| Error::failed("", e))?;
    std::fs::write(ca_path, &bundle.ca_pem)
        .map_err(|e| Error::failed(ca_path.display().to_string(), e))?;
    let curl = format!(
        "curl --cacert {} https://localhost:{}/healthz",
        ca_path.display(),
        addr.port()
    );
    tracing::info!(ca = %ca_path.display(), %curl, "development certificate for localhost; trust this CA");
    tls::CertStore::from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes())
        .map_err(|e| Error::failed("", e))
}

/// A client when there is cluster access: `--kubeconfig`, or in a pod.
async fn cluster_client(
    kubeconfig: Option<&std::path::Path>,
) -> Result<Option<kube::Client>, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::failed(path.display().to_string(), e))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| Error::failed(path.display().to_string(), e))?
        }
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            kube::Config::incluster().map_err(|e| Error::failed("in-cluster configuration", e))?
        }
        None => return Ok(None),
    };
    kube::Client::try_from(config)
        .map(Some)
        .map_err(|e| Error::failed("cannot make a Kubernetes client", e))
}

async fn until(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// In a pod: the service account's user name, read from its token's `sub`
/// claim (the file is the pod's own; nothing here is verified or trusted
/// from a request).
fn service_account_user() -> Option<String> {
    use base64::Engine;
    let token =
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/token").ok()?;
    let payload = token.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["sub"].as_str().map(String::from)
}
