//! `upgrade-guard serve` and `upgrade-guard certs` as a user runs them: the
//! real binary, real files, real TLS, real signals.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::tls_client::Client;
use common::*;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use serde_json::Value;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_upgrade-guard"));
    cmd.current_dir(root()).env_remove("UPGRADE_GUARD_POLICIES");
    cmd
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A running `serve` whose JSON log lines arrive on a channel.
struct Serving {
    child: Child,
    lines: mpsc::Receiver<Value>,
    /// Where the development CA goes; removed with the server.
    dir: TempDir,
}

impl Serving {
    fn start(args: &[&str]) -> Serving {
        let dir = TempDir::new("serve");
        let mut child = bin()
            .args(["serve", "--log-format", "json", "--dev-ca"])
            .arg(dir.join("ca.crt"))
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| panic!("a log line that is not JSON: {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Serving { child, lines, dir }
    }

    /// The first log line for which `pick` says yes.
    fn wait_for(&self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if pick(&line) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no log line: {what}");
    }

    fn terminate(mut self) -> i32 {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn message(line: &Value) -> &str {
    line["message"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_no_certificate_makes_a_development_one_audits_refusals_and_stops_on_sigterm() {
    let addr = free_port();
    let serving = Serving::start(&["--addr", &addr.to_string()]);
    let dev = serving.wait_for("the development CA path", |l| {
        message(l).starts_with("development certificate")
    });
    let ca_path = serving.dir.join("ca.crt").display().to_string();
    assert_eq!(dev["ca"], ca_path.as_str());
    let curl_command = format!(
        "curl --cacert {ca_path} https://localhost:{}/healthz",
        addr.port()
    );
    assert_eq!(dev["curl"], curl_command.as_str());
    let ca = std::fs::read_to_string(&ca_path).unwrap();
    serving.wait_for("serving", |l| message(l).starts_with("serving /validate"));

    // The logged command works as printed, with the real curl.
    let args: Vec<&str> = curl_command.split(' ').skip(1).collect();
    let healthz = Command::new("curl")
        .args(["-sS"])
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&healthz.stdout), "ok\n");

    // curl over HTTP/2 with a body far over the limit hears the 413 (a
    // stream reset while it still sent made it report error 92 instead).
    let big = serving.dir.join("big.json");
    std::fs::write(&big, vec![b' '; 10 * 1024 * 1024]).unwrap();
    for protocol in ["--http2", "--http1.1"] {
        let out = Command::new("curl")
            .args([
                "-sS",
                protocol,
                "--cacert",
                &ca_path,
                "-w",
                "\n%{http_code} %{http_version}",
            ])
            .args(["-H", "content-type: application/json", "--data-binary"])
            .arg(format!("@{}", big.display()))
            .arg(format!("https://localhost:{}/validate", addr.port()))
            .output()
            .unwrap();
        let version = if protocol == "--http2" { "2" } else { "1.1" };
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned()
            ),
            (
                Some(0),
                format!(
                    "{{\"error\":\"the request body is larger than 3145728 bytes\"}}\n413 {version}"
                )
            ),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rejected =
            serving.wait_for("the rejection logged", |l| message(l) == "request rejected");
        assert_eq!(
            (&rejected["status"], &rejected["reason"], &rejected["path"]),
            (
                &Value::from(413),
                &Value::from("too_large"),
                &Value::from("/validate")
            )
        );
        assert!(
            rejected["client"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"),
            "{rejected}"
        );
    }

    let mut client = Client::connect(addr, &[&ca], "h2", None).await.unwrap();
    let body =
        std::fs::read(samples_dir().join("sts-update-server-side-apply-dry-run.json")).unwrap();
    let (status, _, reply) = client.post("/validate", body).await;
    assert_eq!(status, hyper::StatusCode::OK);
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["response"]["allowed"], false);

    let audit = serving.wait_for("an audit line", |l| l["target"] == "upgrade_guard::audit");
    assert_eq!(audit["uid"], "f93a0627-eeae-41d5-9da7-723f06759cb1");
    assert_eq!(audit["user"], "cluster-admin");
    assert_eq!(audit["operation"], "UPDATE");
    assert_eq!(audit["kind"], "StatefulSet");
    assert_eq!(
        (audit["namespace"].as_str(), audit["name"].as_str()),
        (Some("shop"), Some("db"))
    );
    assert_eq!(
        (audit["from"].as_str(), audit["to"].as_str()),
        (Some("1.7.0"), Some("1.9.0"))
    );
    assert_eq!(audit["rule"], "skip-version");
    assert_eq!(audit["dry_run"], true);
    assert!(audit["groups"].as_str().unwrap().contains("system:masters"));

    // The client closes on the server's GOAWAY, as the API server does.
    drop(client);
    let started = Instant::now();
    assert_eq!(serving.terminate(), 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drained promptly: {:?}",
        started.elapsed()
    );
}

/// Text logs redirected to a file or a pipe carry no colour codes, and an
/// empty policy directory is said loudly.
#[test]
fn text_logs_in_a_pipe_are_plain_and_an_empty_policy_directory_is_warned_about() {
    let empty = TempDir::new("no-policies");
    let dir = TempDir::new("plain");
    let mut child = bin()
        .args(["serve", "--addr", &free_port().to_string(), "--dev-ca"])
        .arg(dir.join("ca.crt"))
        .arg("--policies")
        .arg(&*empty)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.contains("serving /validate");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = seen.join("\n");
    assert!(!text.contains('\x1b'), "{text}");
    let warning = format!(
        "WARN upgrade_guard::cli::serve: no policy loaded from {} (no UpgradePolicy in its .yaml, .yml or .json files): nothing is governed, every change is allowed",
        empty.display()
    );
    assert!(text.contains(&warning), "{text}");
}

#[test]
fn serve_refuses_to_start_on_bad_policies_with_one_line() {
    let dir = TempDir::new("bad-policy");
    std::fs::write(dir.join("p.yaml"), "apiVersion: upgradeguard.io/v1alpha1\nkind: UpgradePolicy\nmetadata: {name: p}\nspec: {selector: {}, step: minr}\n").unwrap();
    let out = bin()
        .args([
            "serve",
            "--addr",
            &free_port().to_string(),
            "--policies",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr
            .lines()
            .last()
            .unwrap()
            .starts_with("upgrade-guard: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("p.yaml: document 1: spec.step: unknown value `minr`"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_makes_a_serving_pair_for_the_service_and_patches_the_webhooks() {
    let dir = TempDir::new("certs");
    let webhooks = dir.join("webhooks.yaml");
    std::fs::copy(root().join("manifests/webhooks.yaml"), &webhooks).unwrap();
    let run = || {
        bin()
            .args([
                "certs",
                "--service",
                "upgrade-guard",
                "--namespace",
                "upgrade-guard",
                "--out",
            ])
            .arg(format!("{}/", dir.join("out").display()))
            .arg("--patch-manifests")
            .arg(&webhooks)
            .output()
            .unwrap()
    };
    run();
    let out = run(); // twice: the caBundle is replaced, not repeated
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `--out DIR/` prints DIR/ca.crt, never DIR//ca.crt, and the lifetime.
    let out_dir = dir.join("out").display().to_string();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "wrote {out_dir}/ca.crt, {out_dir}/tls.crt, {out_dir}/tls.key for upgrade-guard.upgrade-guard.svc, upgrade-guard.upgrade-guard.svc.cluster.local, valid until "
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(" (365 days); the caBundle follows"));
    let ca = std::fs::read_to_string(dir.join("out/ca.crt")).unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(printed.trim())
        .unwrap();
    assert_eq!(decoded, ca.as_bytes(), "stdout is the base64 caBundle");

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("out/tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the key is private: {mode:o}");

    let patched = std::fs::read_to_string(&webhooks).unwrap();
    assert_eq!(patched.matches("caBundle:").count(), 3, "{patched}");
    assert!(
        patched.contains("# caBundle is deliberately absent"),
        "comments kept"
    );
    let docs = upgrade_guard::manifest::parse(&patched, "webhooks.yaml").unwrap();
    let mutating: MutatingWebhookConfiguration =
        serde_json::from_value(docs[0].value.clone()).unwrap();
    let validating: ValidatingWebhookConfiguration =
        serde_json::from_value(docs[1].value.clone()).unwrap();
    let validating = validating.webhooks.unwrap();
    for bundle in [
        &mutating.webhooks.unwrap()[0].client_config.ca_bundle,
        &validating[0].client_config.ca_bundle,
        &validating[1].client_config.ca_bundle,
    ] {
        assert_eq!(bundle.as_ref().unwrap().0, ca.as_bytes());
    }

    // The pair serves the Service's names, verified against ca.crt.
    let addr = free_port();
    let (cert, key) = (dir.join("out/tls.crt"), dir.join("out/tls.key"));
    let serving = Serving::start(&[
        "--addr",
        &addr.to_string(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    serving.wait_for("serving", |l| message(l).starts_with("serving /validate"));
    for name in [
        "upgrade-guard.upgrade-guard.svc",
        "upgrade-guard.upgrade-guard.svc.cluster.local",
    ] {
        let (mut client, _) = Client::connect_to(addr, name, &[&ca], "h2", None)
            .await
            .unwrap();
        assert_eq!(
            client.get("/healthz").await.0,
            hyper::StatusCode::OK,
            "{name}"
        );
        drop(client);
    }
    assert!(
        Client::connect_to(addr, "other.upgrade-guard.svc", &[&ca], "h2", None)
            .await
            .is_err()
    );
    assert_eq!(serving.terminate(), 0);
}
