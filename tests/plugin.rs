//! The binary as a kubectl plugin, run by the real kubectl: found by
//! `kubectl plugin list` under the name `kubectl-upgrade_guard`, naming
//! itself `kubectl upgrade-guard`, and reaching an API server through the
//! kubeconfig kubectl's user gives it (here a small local HTTP server that
//! answers with objects a real API server sent, from
//! tests/data/recordings/refresh-statefulset.jsonl). Also `-n/--namespace`
//! for every command that names a workload, and the krew manifest's shape.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use common::{TempDir, recording, root};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_upgrade-guard");
const NOW: &str = "2026-11-21T23:51:00Z";

// ---------------------------------------------------------------------------
// What the local API server serves: the recorded StatefulSet and its pods
// after one event of the recording, and the policy it ran under.

#[derive(Clone)]
struct Recorded {
    sts: Value,
    pods: Vec<Value>,
}

fn recorded(upto: usize) -> Recorded {
    let watched = recording::Watched::at(upto);
    Recorded {
        sts: watched.sts.unwrap_or(Value::Null),
        pods: watched.pods.into_values().collect(),
    }
}

/// The recorded policy as the cluster serves it.
fn policy_resource() -> Value {
    let text =
        std::fs::read_to_string(root().join("tests/data/recordings/sqlgw-policy.yaml")).unwrap();
    let mut v: Value = serde_yaml_ng::from_str(&text).unwrap();
    v["metadata"]["namespace"] = json!("analytics");
    v["metadata"]["resourceVersion"] = json!("300");
    v
}

const STS: &str = "/apis/apps/v1/namespaces/analytics/statefulsets";
const PODS: &str = "/api/v1/namespaces/analytics/pods";
const POLICIES: &str = "/apis/upgradeguard.io/v1alpha1/upgradepolicies?";
const BY_LABEL: &str = "labelSelector=app.kubernetes.io%2Fname%3Dsqlgw";
/// What `status` asks to say why pods are refused (this server has none: 404).
const EVENTS: &str = "/api/v1/namespaces/analytics/events?&fieldSelector=involvedObject.kind%3DStatefulSet%2CinvolvedObject.name%3Dsqlgw%2Creason%3DFailedCreate";

/// The answer to one GET, `None` to hold a watch open.
fn answer(state: &Recorded, path: &str) -> Option<(u16, Value)> {
    let rv = state.sts["metadata"]["resourceVersion"].clone();
    let list = |kind: &str, items: Vec<Value>| json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items});
    if path.contains("watch=true") {
        return None;
    }
    Some(match path {
        POLICIES => (
            200,
            json!({"apiVersion": "upgradeguard.io/v1alpha1", "kind": "UpgradePolicyList",
                "metadata": {"resourceVersion": "300"}, "items": [policy_resource()]}),
        ),
        // A GET, or the merge patch of an annotation (answered with the
        // object as it was: the commands read only the status code).
        p if p == format!("{STS}/sqlgw")
            || p == format!("{STS}/sqlgw?&fieldManager=upgrade-guard") =>
        {
            (200, state.sts.clone())
        }
        p if p == format!("{STS}?") => (200, list("StatefulSetList", vec![state.sts.clone()])),
        "/apis/apps/v1/namespaces/analytics/deployments?" => (200, list("DeploymentList", vec![])),
        p if p == format!("{STS}?&fieldSelector=metadata.name%3Dsqlgw&limit=500") => {
            (200, list("StatefulSetList", vec![state.sts.clone()]))
        }
        p if p == format!("{PODS}?&{BY_LABEL}") || p == format!("{PODS}?&{BY_LABEL}&limit=500") => {
            (200, list("PodList", state.pods.clone()))
        }
        _ => (
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                "code": 404, "message": format!("the server could not find the requested resource ({path})")}),
        ),
    })
}

/// A plain-HTTP API server on 127.0.0.1 (kube-rs takes an `http://`
/// server from a kubeconfig) that answers from `state` and notes every
/// request's path. It stops with the runtime.
struct ApiServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl ApiServer {
    fn start(state: Recorded) -> ApiServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let noted = seen.clone();
        let state = Arc::new(state);
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (noted, state) = (noted.clone(), state.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (noted, state) = (noted.clone(), state.clone());
                        async move {
                            let path = request.uri().path_and_query().unwrap().to_string();
                            noted
                                .lock()
                                .unwrap()
                                .push(format!("{} {path}", request.method()));
                            let Some((code, body)) = answer(&state, &path) else {
                                // A watch: open, with nothing to say.
                                std::future::pending::<()>().await;
                                unreachable!();
                            };
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(code)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body.to_string())))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        ApiServer {
            addr,
            seen,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A kubeconfig whose current context `dead` points where nothing listens
/// (port 1 of loopback), and whose context `live` points at `server`.
fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: live
  cluster: {{server: \"{server}\"}}
- name: dead
  cluster: {{server: \"http://127.0.0.1:1\"}}
users:
- name: dev
  user: {{token: dev-token}}
contexts:
- name: live
  context: {{cluster: live, user: dev}}
- name: dead
  context: {{cluster: dead, user: dev}}
current-context: dead
"
    );
    std::fs::write(&path, text).unwrap();
    path
}

// ---------------------------------------------------------------------------
// kubectl and the plugin on PATH

/// kubectl, and a PATH of a temporary directory holding
/// `kubectl-upgrade_guard` (a link to the built binary) and kubectl's own
/// directory, so no other plugin of the machine's is in view.
struct Kubectl {
    kubectl: PathBuf,
    plugins: TempDir,
}

impl Kubectl {
    fn find() -> Option<Kubectl> {
        let kubectl = common::tools::tool("kubectl", "apt-get install -y kubernetes-client")?;
        let plugins = TempDir::new("plugin");
        std::os::unix::fs::symlink(BIN, plugins.join("kubectl-upgrade_guard")).unwrap();
        Some(Kubectl { kubectl, plugins })
    }

    fn path(&self) -> String {
        let own = self.kubectl.parent().unwrap();
        format!("{}:{}", self.plugins.display(), own.display())
    }

    fn run(&self, args: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut command = Command::new(&self.kubectl);
        command
            .args(args)
            .env_clear()
            .env("PATH", self.path())
            .env("HOME", &*self.plugins)
            .env("NO_COLOR", "1");
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn kubectl_lists_the_plugin_and_runs_it_as_kubectl_upgrade_guard() {
    let Some(k) = Kubectl::find() else { return };
    let list = k.run(&["plugin", "list"], &[]);
    let listed = text(&list.stdout);
    assert!(list.status.success(), "{listed}{}", text(&list.stderr));
    let link = k.plugins.join("kubectl-upgrade_guard");
    assert!(
        listed.lines().any(|l| l == link.to_str().unwrap()),
        "{listed}"
    );

    let help = k.run(&["upgrade-guard", "--help"], &[]);
    let said = text(&help.stdout);
    assert!(help.status.success(), "{said}{}", text(&help.stderr));
    assert!(
        said.contains("Usage: kubectl upgrade-guard [OPTIONS] <COMMAND>"),
        "{said}"
    );
    assert!(!said.contains("Usage: upgrade-guard"), "{said}");

    let help = k.run(&["upgrade-guard", "status", "--help"], &[]);
    let said = text(&help.stdout);
    assert!(
        said.contains("Usage: kubectl upgrade-guard status [OPTIONS] [TARGET]"),
        "{said}"
    );
    assert!(said.contains("-n, --namespace <NAMESPACE>"), "{said}");
    assert!(said.contains("-w, --watch"), "{said}");
    assert!(said.contains("Exit codes:\n  0  shown"), "{said}");

    let bad = k.run(&["upgrade-guard", "status", "--no-such-flag"], &[]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("Usage: kubectl upgrade-guard status"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn the_plugin_reaches_the_api_server_of_the_kubeconfig_it_is_given() {
    let Some(k) = Kubectl::find() else { return };
    // Paused after the first unit (event 22): 3.4.2 → 3.4.4 held at partition 2.
    let server = ApiServer::start(recorded(22));
    let config = kubeconfig(&k.plugins, &server.url());
    let config = config.to_str().unwrap();
    let out = k.run(
        &[
            "upgrade-guard",
            "status",
            "-n",
            "analytics",
            "sqlgw",
            "--kubeconfig",
            config,
            "--context",
            "live",
            "--now",
            NOW,
        ],
        &[],
    );
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert_eq!(
        server.seen(),
        [
            format!("GET {POLICIES}"),
            format!("GET {STS}/sqlgw"),
            format!("GET {EVENTS}"),
            format!("GET {PODS}?&{BY_LABEL}"),
        ]
    );
    assert!(
        said.starts_with("StatefulSet analytics/sqlgw: 3.4.2 → 3.4.4  Paused  pause-after first  partition 2  33% refreshed\n"),
        "{said}"
    );
    assert!(
        said.contains("  2     sqlgw-2                   3.4.4       sqlgw-746999b954    yes"),
        "{said}"
    );
    assert!(
        said.contains("  1     sqlgw-1                   3.4.2       sqlgw-5c46c6778d    yes    0        ← restarts next\n"),
        "{said}"
    );
    // As the plugin, the command to run next is the plugin's.
    assert!(
        said.ends_with("  run:  kubectl upgrade-guard resume analytics/sqlgw\n"),
        "{said}"
    );
    // The same, named NAMESPACE/NAME and by the kubeconfig in $KUBECONFIG.
    let again = k.run(
        &[
            "upgrade-guard",
            "status",
            "analytics/sqlgw",
            "--context",
            "live",
            "--now",
            NOW,
        ],
        &[("KUBECONFIG", Path::new(config))],
    );
    assert_eq!(text(&again.stdout), said, "{}", text(&again.stderr));
}

#[test]
fn as_the_plugin_the_commands_pause_suggests_are_the_plugins() {
    let Some(k) = Kubectl::find() else { return };
    let server = ApiServer::start(recorded(22));
    let config = kubeconfig(&k.plugins, &server.url());
    let args = ["upgrade-guard", "pause", "analytics/sqlgw", "--kubeconfig"];
    let out = k.run(
        &[&args[..], &[config.to_str().unwrap(), "--context", "live"]].concat(),
        &[],
    );
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert_eq!(
        server.seen(),
        [
            format!("GET {STS}/sqlgw"),
            format!("PATCH {STS}/sqlgw?&fieldManager=upgrade-guard")
        ]
    );
    assert_eq!(
        said,
        "StatefulSet analytics/sqlgw: holds after the unit in progress; go on with `kubectl upgrade-guard resume analytics/sqlgw`\n"
    );
    // By its own name, its own.
    let out = upgrade_guard(&[
        "pause",
        "analytics/sqlgw",
        "--kubeconfig",
        config.to_str().unwrap(),
        "--context",
        "live",
    ]);
    assert!(
        text(&out.stdout).ends_with("go on with `upgrade-guard resume analytics/sqlgw`\n"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn flags_before_the_plugin_name_are_refused_by_kubectl_and_the_context_is_the_plugins() {
    let Some(k) = Kubectl::find() else { return };
    let server = ApiServer::start(recorded(22));
    let config = kubeconfig(&k.plugins, &server.url());
    let config = config.to_str().unwrap();
    // kubectl does not parse its own flags for a plugin: before the name
    // they are refused, after it they are the plugin's.
    let before = k.run(
        &[
            "--kubeconfig",
            config,
            "upgrade-guard",
            "status",
            "analytics/sqlgw",
        ],
        &[],
    );
    assert_ne!(before.status.code(), Some(0));
    assert!(
        text(&before.stderr).contains("flags cannot be placed before plugin name: --kubeconfig"),
        "{}",
        text(&before.stderr)
    );
    // Without --context, the kubeconfig's current one (where nothing listens).
    let dead = k.run(
        &[
            "upgrade-guard",
            "status",
            "-n",
            "analytics",
            "sqlgw",
            "--kubeconfig",
            config,
        ],
        &[],
    );
    assert_eq!(dead.status.code(), Some(2));
    let said = text(&dead.stderr);
    assert!(
        said.starts_with(
            "upgrade-guard: UpgradePolicies: cannot reach the API server at http://127.0.0.1:1"
        ),
        "{said}"
    );
    assert!(server.seen().is_empty(), "{:?}", server.seen());
}

#[test]
fn the_plugin_watches_a_refresh_to_its_end_and_exits_with_its_code() {
    let Some(k) = Kubectl::find() else { return };
    for (upto, code, said) in [
        (
            40,
            0,
            "StatefulSet analytics/sqlgw: refresh 3.4.2 → 3.4.4 completed\n",
        ),
        (
            56,
            3,
            "upgrade-guard: StatefulSet analytics/sqlgw: refresh 3.4.4 → 3.4.5-broken failed: ",
        ),
    ] {
        let server = ApiServer::start(recorded(upto));
        let config = kubeconfig(&k.plugins, &server.url());
        let out = k.run(
            &[
                "upgrade-guard",
                "status",
                "--watch",
                "-n",
                "analytics",
                "sqlgw",
                "--kubeconfig",
                config.to_str().unwrap(),
                "--context",
                "live",
                "--now",
                NOW,
                "--timeout",
                "20s",
            ],
            &[],
        );
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(code), "{stdout}{stderr}");
        // Not a terminal: the report once, plainly, no cursor movement.
        assert!(
            stdout.starts_with("StatefulSet analytics/sqlgw: "),
            "{stdout}"
        );
        assert!(!stdout.contains('\x1b'), "{stdout:?}");
        assert_eq!(stdout.matches("  next: ").count(), 1, "{stdout}");
        if code == 0 {
            assert!(stdout.ends_with(said), "{stdout}");
        } else {
            assert!(stderr.starts_with(said), "{stderr}");
        }
        let seen = server.seen();
        assert_eq!(
            seen[..2],
            [format!("GET {POLICIES}"), format!("GET {STS}/sqlgw")],
            "{seen:#?}"
        );
        // Then each watcher lists, and watches from there: side by side,
        // over their own connections, so in no one order.
        let lists = [
            format!("GET {STS}?&fieldSelector=metadata.name%3Dsqlgw&limit=500"),
            format!("GET {PODS}?&{BY_LABEL}&limit=500"),
        ];
        for list in &lists {
            assert_eq!(seen.iter().filter(|s| *s == list).count(), 1, "{seen:#?}");
        }
        assert!(
            seen[2..]
                .iter()
                .all(|s| lists.contains(s) || s.contains("watch=true")),
            "{seen:#?}"
        );
    }
}

// ---------------------------------------------------------------------------
// The binary by its own name, and -n/--namespace

fn upgrade_guard(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn by_its_own_name_the_usage_is_upgrade_guards() {
    let out = upgrade_guard(&["status", "--help"]);
    let said = text(&out.stdout);
    assert!(
        said.contains("Usage: upgrade-guard status [OPTIONS] [TARGET]"),
        "{said}"
    );
    assert!(!said.contains("kubectl upgrade-guard"), "{said}");
}

#[test]
fn the_namespace_flag_works_without_kubectl_and_agrees_with_the_target() {
    let server = ApiServer::start(recorded(22));
    let dir = TempDir::new("plugin-ns");
    let config = kubeconfig(&dir, &server.url());
    let config = config.to_str().unwrap();
    let run = |target: &[&str]| {
        let mut args = vec![
            "status",
            "--kubeconfig",
            config,
            "--context",
            "live",
            "--now",
            NOW,
        ];
        args.extend(target);
        upgrade_guard(&args)
    };
    let named = run(&["analytics/sqlgw"]);
    assert_eq!(named.status.code(), Some(0), "{}", text(&named.stderr));
    let with_n = run(&["-n", "analytics", "sqlgw"]);
    let both = run(&["--namespace", "analytics", "analytics/sqlgw"]);
    assert_eq!(text(&with_n.stdout), text(&named.stdout));
    assert_eq!(text(&both.stdout), text(&named.stdout));
    // Without a target, -n's namespace only.
    let all_there = run(&["-n", "analytics"]);
    assert_eq!(
        text(&all_there.stdout),
        text(&named.stdout),
        "{}",
        text(&all_there.stderr)
    );
    let seen = server.seen();
    assert!(
        seen.contains(&format!("GET {STS}?"))
            && seen.contains(&"GET /apis/apps/v1/namespaces/analytics/deployments?".to_string()),
        "{seen:#?}"
    );
    // Run by its own name, it suggests its own name.
    assert!(
        text(&named.stdout).ends_with("  run:  upgrade-guard resume analytics/sqlgw\n"),
        "{}",
        text(&named.stdout)
    );
    let before = server.seen().len();
    // Refused before any request: two namespaces, or no namespace at all.
    let clash = run(&["-n", "shop", "analytics/sqlgw"]);
    assert_eq!(clash.status.code(), Some(2));
    assert_eq!(
        text(&clash.stderr),
        "upgrade-guard: \"analytics/sqlgw\" is in namespace \"analytics\" but -n says \"shop\": give one of them\n"
    );
    let bare = run(&["sqlgw"]);
    assert_eq!(bare.status.code(), Some(2));
    assert!(
        text(&bare.stderr).contains("\"sqlgw\": name the workload as NAMESPACE/NAME"),
        "{}",
        text(&bare.stderr)
    );
    // A missing workload is not found: its own exit code.
    let missing = run(&["-n", "analytics", "nothing"]);
    assert_eq!(missing.status.code(), Some(4), "{}", text(&missing.stderr));
    assert!(
        text(&missing.stderr).contains("no StatefulSet or Deployment of that name"),
        "{}",
        text(&missing.stderr)
    );
    let seen = server.seen();
    assert!(
        !seen[before..].iter().any(|s| s.contains("namespaces/shop")),
        "{seen:#?}"
    );
}

#[test]
fn every_command_that_names_a_workload_takes_the_namespace_flag() {
    for command in ["pause", "resume", "retry", "migrate"] {
        let out = upgrade_guard(&[command, "-n", "shop", "other/db"]);
        assert_eq!(out.status.code(), Some(2), "{command}");
        assert_eq!(
            text(&out.stderr),
            "upgrade-guard: \"other/db\" is in namespace \"other\" but -n says \"shop\": give one of them\n",
            "{command}"
        );
    }
    let out = upgrade_guard(&["pause", "-n", "", "db"]);
    assert_eq!(
        text(&out.stderr),
        "upgrade-guard: -n/--namespace: give a namespace\n"
    );
    let out = upgrade_guard(&["check", "--live", "other/db", "--to", "1.8.0", "-n", "shop"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("but -n says \"shop\""),
        "{}",
        text(&out.stderr)
    );
    // `check` without --live names no workload: -n has nothing to qualify.
    let out = upgrade_guard(&["check", "--old", "a.yaml", "--new", "b.yaml", "-n", "shop"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "upgrade-guard: -n/--namespace names the namespace of a live workload: give it with --live NAME\n"
    );
}

// ---------------------------------------------------------------------------
// The krew manifest

#[test]
fn the_krew_manifest_installs_this_version_as_kubectl_upgrade_guard() {
    let text = std::fs::read_to_string(root().join("plugins/krew/upgrade-guard.yaml")).unwrap();
    let m: Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(
        m["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(m["kind"], "Plugin");
    // Krew links `bin` as kubectl-<name, `-` as `_`>: what kubectl runs.
    let name = m["metadata"]["name"].as_str().unwrap();
    assert_eq!(name, "upgrade-guard");
    let bin = format!("kubectl-{}", name.replace('-', "_"));
    let spec = &m["spec"];
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        spec["version"].as_str(),
        Some(version.as_str()),
        "Cargo's version"
    );
    for field in ["shortDescription", "description", "homepage"] {
        assert!(
            spec[field].as_str().is_some_and(|s| !s.trim().is_empty()),
            "spec.{field}"
        );
    }
    assert!(spec["homepage"].as_str().unwrap().starts_with("https://"));
    let platforms = spec["platforms"].as_array().unwrap();
    let mut seen = Vec::new();
    for p in platforms {
        let labels = &p["selector"]["matchLabels"];
        let (os, arch) = (
            labels["os"].as_str().unwrap(),
            labels["arch"].as_str().unwrap(),
        );
        seen.push(format!("{os}/{arch}"));
        let uri = p["uri"].as_str().unwrap();
        assert!(
            uri.starts_with("https://")
                && uri.ends_with(&format!("/{version}/{bin}-{version}-{os}-{arch}.tar.gz")),
            "{uri}"
        );
        // The release job fills these; until then a marked placeholder.
        let sha = p["sha256"].as_str().unwrap();
        let placeholder = format!(
            "RELEASE_JOB_FILLS_SHA256_{}_{}",
            os.to_uppercase(),
            arch.to_uppercase()
        );
        assert!(
            sha == placeholder || (sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit())),
            "{os}/{arch}: {sha}"
        );
        assert_eq!(p["bin"].as_str(), Some(bin.as_str()), "{os}/{arch}");
        let files = p["files"].as_array().unwrap();
        assert!(
            files
                .iter()
                .any(|f| f["from"] == bin.as_str() && f["to"] == "."),
            "{os}/{arch}: the binary is installed"
        );
        // Krew's index takes only plugins that ship their license.
        assert!(
            files
                .iter()
                .any(|f| f["from"] == "LICENSE" && f["to"] == "."),
            "{os}/{arch}: the license is installed"
        );
    }
    // The license shipped is the one Cargo declares.
    let license = std::fs::read_to_string(root().join("LICENSE")).unwrap();
    assert_eq!(env!("CARGO_PKG_LICENSE"), "Apache-2.0");
    assert!(license.contains("Apache License\n                        Version 2.0, January 2004"));
    seen.sort();
    assert_eq!(
        seen,
        ["darwin/amd64", "darwin/arm64", "linux/amd64", "linux/arm64"]
    );
    assert!(
        text.contains("the release job"),
        "the placeholders are explained"
    );
}
