//! One control plane for the whole suite, started on first use, with
//! upgrade-guard installed from `manifests/` (namespace, service account,
//! RBAC, CRD) and `serve` running as the real process under its service
//! account's token, registered through `manifests/webhooks.yaml` with only
//! the clientConfig changed to a loopback URL and its caBundle. Each test
//! takes a namespace of its own.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::common::{self, tls_client};
use crate::control_plane::{self, Binaries, ControlPlane};
use crate::kubelet;

/// upgrade-guard's own identity, as `manifests/` installs it.
pub const SELF_USER: &str = "system:serviceaccount:upgrade-guard:upgrade-guard";

pub struct Suite {
    pub dir: PathBuf,
    /// A kubeconfig for `system:masters`: the operator's laptop.
    pub admin: PathBuf,
    pub serve_log: PathBuf,
    pub serve_pid: u32,
    /// For a test that needs a control plane of its own.
    pub binaries: Binaries,
}

static SUITE: OnceLock<Result<Suite, String>> = OnceLock::new();

/// The suite's control plane, or None (after one line saying how to get the
/// binaries) when `KUBEBUILDER_ASSETS` is unset and tools are not required.
pub fn suite() -> Option<&'static Suite> {
    let required = std::env::var("UPGRADE_GUARD_TOOLS").is_ok_and(|v| v == "required");
    let Some(assets) = std::env::var_os(control_plane::ASSETS) else {
        assert!(
            !required,
            "the end-to-end suite is required here: {}",
            control_plane::HOW_TO_GET
        );
        eprintln!("skipped: no control plane: {}", control_plane::HOW_TO_GET);
        return None;
    };
    let suite = SUITE.get_or_init(|| start(PathBuf::from(assets)));
    match suite {
        Ok(suite) => Some(suite),
        Err(e) => panic!("{e}"),
    }
}

/// Starts everything on a thread that lives as long as the process (the
/// processes die with it), which then plays the kubelet.
fn start(assets: PathBuf) -> Result<Suite, String> {
    let bins = Binaries::find(&assets)?;

    let (send, receive) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("control-plane".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let dir = suite_dir();
            let mut plane = ControlPlane::start(&bins, &dir);
            let suite = runtime.block_on(async {
                let kubeconfig = install(&mut plane).await;
                let serve = start_serve(&dir, &kubeconfig, "serve-0").await;
                register(&plane.admin, &dir, &serve).await;
                Suite {
                    dir: dir.clone(),
                    admin: plane.admin.clone(),
                    serve_log: serve.log,
                    serve_pid: serve.pid,
                    binaries: bins,
                }
            });
            let client = runtime.block_on(client_of(&suite.admin));
            let _ = send.send(suite);
            runtime.block_on(kubelet::run(client));
            // The kubelet's watch never ends; if it did, keep the processes.
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| e.to_string())?;
    receive
        .recv_timeout(Duration::from_secs(240))
        .map_err(|e| match e {
            std::sync::mpsc::RecvTimeoutError::Timeout => {
                "the control plane did not come up in 240 s".into()
            }
            std::sync::mpsc::RecvTimeoutError::Disconnected => {
                "the control plane did not start: see the panic of thread 'control-plane' above"
                    .into()
            }
        })
}

/// A directory for this run; those of runs whose process is gone are removed.
fn suite_dir() -> PathBuf {
    let base = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(pid) = name.strip_prefix("ug-e2e-")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("ug-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// upgrade-guard as `manifests/` installs it (namespace, service account,
/// RBAC, CRD): returns the kubeconfig of its service account's token.
pub async fn install(plane: &mut ControlPlane) -> PathBuf {
    let admin = plane.admin.clone();
    // The token controller has run once the default service account has a token.
    plane.wait(
        "the service-account token controller",
        Duration::from_secs(90),
        |p| {
            p.get("/api/v1/namespaces/default/secrets")
                .is_some_and(|s| s.contains("kubernetes.io/service-account-token"))
        },
    );
    let manifests = common::root().join("manifests");
    for file in [
        "namespace.yaml",
        "serviceaccount.yaml",
        "rbac.yaml",
        "crd.yaml",
    ] {
        kubectl_must(
            &admin,
            &["apply", "-f", &manifests.join(file).display().to_string()],
        );
    }
    kubectl_must(
        &admin,
        &[
            "wait",
            "--for=condition=Established",
            "crd/upgradepolicies.upgradeguard.io",
            "--timeout=60s",
        ],
    );
    let token = service_account_token(&client_of(&admin).await).await;
    control_plane::kubeconfig(
        &plane.dir,
        "serve.kubeconfig",
        &plane.server,
        &plane.dir.join("ca.crt"),
        &format!("    token: {token}"),
    )
}

/// One `serve` process: the real binary, as the chart's Deployment runs it.
pub struct Replica {
    pub pid: u32,
    pub addr: SocketAddr,
    pub ca: String,
    pub log: PathBuf,
}

/// Starts `serve` as replica `name` (its HOSTNAME, the identity it leads
/// by) and waits until it is ready. It dies with the calling thread.
pub async fn start_serve(dir: &Path, kubeconfig: &Path, name: &str) -> Replica {
    let addr: SocketAddr = format!("127.0.0.1:{}", control_plane::free_port())
        .parse()
        .unwrap();
    let log = dir.join(format!("{name}.log"));
    let dev_ca = dir.join(format!("{name}-ca.crt"));
    let policies = common::root().join("tests/e2e/policies");
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_upgrade-guard"));
    let args: Vec<String> = [
        "serve",
        "--addr",
        &addr.to_string(),
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--self-user",
        SELF_USER,
        "--dev-ca",
        &dev_ca.display().to_string(),
        "--policies",
        &policies.display().to_string(),
        "--log-format",
        "text",
    ]
    .map(String::from)
    .to_vec();
    let serve = control_plane::spawn(
        &binary,
        &args,
        &log,
        &[
            ("POD_NAMESPACE", "upgrade-guard"),
            ("HOSTNAME", name),
            ("RUST_LOG", "info"),
        ],
    );
    let pid = serve.id();
    // Reaped by init when it dies; killed with the thread that started it.
    std::mem::forget(serve);
    let ca = wait_ready(addr, &dev_ca, &log).await;
    Replica { pid, addr, ca, log }
}

/// Registers `replica` through the shipped webhook configurations and waits
/// until the API server calls it.
pub async fn register(admin: &Path, dir: &Path, replica: &Replica) {
    let webhooks = dir.join("webhooks.json");
    std::fs::write(
        &webhooks,
        serde_json::to_vec_pretty(&webhooks_for(replica.addr, &replica.ca)).unwrap(),
    )
    .unwrap();
    kubectl_must(admin, &["apply", "-f", &webhooks.display().to_string()]);
    // A server-side dry-run of a StatefulSet carrying a made-up refresh
    // record is refused once the webhooks are called.
    let probe = r#"{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"probe","namespace":"default","annotations":{"upgradeguard.io/refresh":"{}"}},"spec":{"serviceName":"probe","selector":{"matchLabels":{"app":"probe"}},"template":{"metadata":{"labels":{"app":"probe"}},"spec":{"containers":[{"name":"c","image":"probe:1.0.0"}]}}}}"#;
    eventually(
        "the API server to call upgrade-guard's webhooks",
        60,
        || async {
            let out = kubectl_with(
                admin,
                None,
                &["create", "--dry-run=server", "-f", "-"],
                Some(probe),
            );
            (!out.status.success() && text(&out.stderr).contains("upgradeguard.io")).then_some(())
        },
    )
    .await;
}

fn kubectl_must(kubeconfig: &Path, args: &[&str]) {
    let out = kubectl_with(kubeconfig, None, args, None);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        text(&out.stderr)
    );
}

/// A control plane of a test's own, with upgrade-guard installed and a
/// kubelet stand-in, for a test whose load or whose `serve` processes must
/// not meet the suite's. Its processes die with the thread that made it.
pub struct OwnPlane {
    pub plane: ControlPlane,
    /// `serve`'s kubeconfig.
    pub kubeconfig: PathBuf,
    pub client: kube::Client,
    binaries: Binaries,
    kubelet: tokio::task::JoinHandle<()>,
}

impl OwnPlane {
    pub async fn start(shared: &Suite, tag: &str) -> OwnPlane {
        let dir = shared.dir.join(tag);
        std::fs::create_dir_all(&dir).unwrap();
        let mut plane = ControlPlane::start(&shared.binaries, &dir);
        let kubeconfig = install(&mut plane).await;
        let client = client_of(&plane.admin).await;
        let kubelet = tokio::spawn(kubelet::run(client.clone()));
        OwnPlane {
            plane,
            kubeconfig,
            client,
            binaries: shared.binaries.clone(),
            kubelet,
        }
    }

    /// Starts a `serve` replica on it.
    pub async fn serve(&self, name: &str) -> Replica {
        start_serve(&self.plane.dir, &self.kubeconfig, name).await
    }

    /// The suite's helpers (kubectl, upgrade-guard, namespaces) on this
    /// plane, with `serve` the replica the webhooks call.
    pub async fn suite(&self, serve: &Replica) -> Suite {
        register(&self.plane.admin, &self.plane.dir, serve).await;
        Suite {
            dir: self.plane.dir.clone(),
            admin: self.plane.admin.clone(),
            serve_log: serve.log.clone(),
            serve_pid: serve.pid,
            binaries: self.binaries.clone(),
        }
    }
}

impl Drop for OwnPlane {
    fn drop(&mut self) {
        self.kubelet.abort();
    }
}

/// The shipped webhook configurations with each clientConfig pointing at
/// `addr` and trusting `ca`; nothing else changed.
pub fn webhooks_for(addr: SocketAddr, ca: &str) -> Value {
    let text = std::fs::read_to_string(common::root().join("manifests/webhooks.yaml")).unwrap();
    let mut items = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut object: Value = serde::Deserialize::deserialize(document).unwrap();
        for webhook in object["webhooks"].as_array_mut().unwrap() {
            let path = webhook["clientConfig"]["service"]["path"]
                .as_str()
                .unwrap()
                .to_string();
            webhook["clientConfig"] = json!({
                "url": format!("https://{addr}{path}"),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(ca),
            });
        }
        items.push(object);
    }
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

async fn service_account_token(client: &kube::Client) -> String {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "upgrade-guard");
    eventually("the upgrade-guard service account's token", 60, || async {
        let list = secrets.list(&Default::default()).await.ok()?;
        list.items.into_iter().find_map(|s| {
            let for_us = s.type_.as_deref() == Some("kubernetes.io/service-account-token")
                && s.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("kubernetes.io/service-account.name"))
                    .is_some_and(|n| n == "upgrade-guard");
            let token = s.data?.get("token")?.0.clone();
            for_us.then(|| String::from_utf8(token).unwrap())
        })
    })
    .await
}

async fn wait_ready(addr: SocketAddr, ca_path: &Path, log: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(ca) = std::fs::read_to_string(ca_path)
            && let Ok(mut client) =
                tls_client::Client::connect(addr, &[&ca], "http/1.1", None).await
            && client.get("/readyz").await.0 == 200
        {
            return ca;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "serve was not ready in 60 s:\n{}",
            tail(log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn client_of(kubeconfig: &Path) -> kube::Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// What upgrade-guard's validating webhook said in refusing a kubectl
/// command (kubectl's own wording around it differs between versions).
pub fn denial(out: &Output) -> String {
    denial_by(out, "validate.upgradeguard.io")
}

/// What upgrade-guard's webhook `webhook` said in refusing a kubectl command.
pub fn denial_by(out: &Output, webhook: &str) -> String {
    assert!(!out.status.success(), "not refused: {}", text(&out.stdout));
    let said = text(&out.stderr);
    let marker = format!("admission webhook \"{webhook}\" denied the request: ");
    match said.find(&marker) {
        Some(at) => said[at + marker.len()..].to_string(),
        None => panic!("not refused by {webhook}: {said}"),
    }
}

/// CPU time (user + system) of a process so far.
pub fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name's closing parenthesis: utime and stime are the
    // 12th and 13th fields.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// The last lines of a log, for a failure message.
pub fn tail(path: &Path) -> String {
    let all = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = all.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn kubectl_with(
    kubeconfig: &Path,
    user: Option<&str>,
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let mut command = Command::new("kubectl");
    command.arg("--kubeconfig").arg(kubeconfig);
    if let Some(user) = user {
        command.args(["--as", user]);
    }
    command.args(args);
    for proxy in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
        command.env_remove(proxy);
    }
    run_with_input(command, stdin)
}

fn run_with_input(mut command: Command, stdin: Option<&str>) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = command.spawn().expect("the command starts");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Polls `probe` every 100 ms until it gives a value; fails after `seconds`.
pub async fn eventually<T, F, Fut>(what: &str, seconds: u64, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if start.elapsed() > Duration::from_secs(seconds) {
            let serve = match SUITE.get() {
                Some(Ok(suite)) => tail(&suite.serve_log),
                _ => String::new(),
            };
            panic!("waited {seconds} s for {what}; serve's log ends:\n{serve}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Suite {
    /// A client for `system:masters`, on the calling test's runtime.
    pub async fn client(&self) -> kube::Client {
        client_of(&self.admin).await
    }

    /// A new namespace for one test.
    pub async fn namespace(&self, tag: &str) -> String {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("e2e-{tag}-{}", N.fetch_add(1, Ordering::Relaxed));
        let namespaces: Api<Namespace> = Api::all(self.client().await);
        let object: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
        name
    }

    /// kubectl as the cluster's administrator.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        kubectl_with(&self.admin, None, args, None)
    }

    /// kubectl as the administrator with `input` on its standard input.
    pub fn kubectl_in(&self, args: &[&str], input: &str) -> Output {
        kubectl_with(&self.admin, None, args, Some(input))
    }

    /// kubectl as `user` (impersonated: the authorizer is real).
    pub fn kubectl_as(&self, user: &str, args: &[&str]) -> Output {
        kubectl_with(&self.admin, Some(user), args, None)
    }

    /// kubectl that must succeed; its standard output.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Applies YAML or JSON given as text, as the administrator.
    pub fn apply(&self, namespace: &str, manifest: &str) {
        let out = self.kubectl_in(&["apply", "-n", namespace, "-f", "-"], manifest);
        assert!(out.status.success(), "kubectl apply: {}", text(&out.stderr));
    }

    /// The upgrade-guard command line from the operator's laptop: the
    /// admin kubeconfig, no policy files.
    pub fn ug(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_upgrade-guard"));
        command
            .args(args)
            .env("KUBECONFIG", &self.admin)
            .env_remove("UPGRADE_GUARD_POLICIES")
            .current_dir(&self.dir);
        for proxy in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
            command.env_remove(proxy);
        }
        run_with_input(command, None)
    }
}
