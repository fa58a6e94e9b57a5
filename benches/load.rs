//! The webhook on the wire, side by side with a ceiling: `cargo bench --bench load`.
//!
//! h2load (Debian `nghttp2-client`) sends the same AdmissionReview (the
//! recorded set-image review grown to 5 containers and 20 env vars, compact)
//! to `upgrade-guard serve` and to nginx (Debian `nginx-light` with
//! `libnginx-mod-http-echo`: TLS, HTTP/2, one worker, reading the body and
//! answering upgrade-guard's own response bytes). Both use the same
//! certificate, on loopback, in one run. Shapes:
//!
//! - one HTTP/2 connection, one request at a time (how a kube-apiserver
//!   calls a webhook), `LOAD_REQUESTS` requests (default 5,000);
//! - 16 HTTP/2 connections × 4 streams, `LOAD_SECONDS` (default 5) seconds;
//! - the same two over HTTP/1.1 (64 connections for the second).
//!
//! Then a matrix of reviews under HTTP/2 16×4 (`MATRIX_SECONDS`, default 3,
//! per run): StatefulSet updates of 1, 5 and 10 containers with 0, 4 and 20
//! env entries each, without managedFields, ungoverned, and pod CREATEs with
//! and without a claim; each against nginx answering the same bytes.
//!
//! Each shape runs `LOAD_ROUNDS` rounds (default 3), the targets in turn.
//! Prints, from the round with the median req/s: req/s, p50/p99/max
//! latency, requests over 5 ms, server CPU per request and the ratio to
//! nginx's median in the same shape; and each target's peak resident memory
//! in that shape.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tls_client::Client;
use common::{Scratch, certificates, env_or, file_rss_kib, free_port, peak_rss_kib, sample};

const INSTALL: &str = "apt-get install -y nghttp2-client nginx-light libnginx-mod-http-echo";
const ECHO_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_echo_module.so";

fn main() {
    let missing: Vec<&str> = [("h2load", "h2load"), ("nginx", "nginx")]
        .into_iter()
        .filter(|(_, bin)| !on_path(bin))
        .map(|(name, _)| name)
        .chain((!Path::new(ECHO_MODULE).exists()).then_some("nginx's echo module"))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "cargo bench --bench load needs {}: {INSTALL}",
            missing.join(", ")
        );
        std::process::exit(2);
    }
    let requests: usize = env_or("LOAD_REQUESTS", 5_000);
    let seconds: u64 = env_or("LOAD_SECONDS", 5);
    let rounds: usize = env_or("LOAD_ROUNDS", 3).max(1);
    let dir = Scratch::new();
    let body = sample::five_containers_compact();
    let body_file = dir.0.join("review.json");
    std::fs::write(&body_file, &body).expect("the body file");
    certificates(&dir.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");

    let (cert, key) = (dir.0.join("tls.crt"), dir.0.join("tls.key"));
    let ug = common::Binary::new(env!("CARGO_BIN_EXE_upgrade-guard"))
        .expect("upgrade-guard")
        .serve(
            "warn,upgrade_guard::cli=info",
            false,
            &[
                "--tls-cert",
                &cert.to_string_lossy(),
                "--tls-key",
                &key.to_string_lossy(),
            ],
        )
        .expect("upgrade-guard serve");
    let ca = std::fs::read_to_string(dir.0.join("ca.crt")).expect("the CA");
    // nginx answers exactly what upgrade-guard answers.
    let answers = ["/validate", "/mutate"].map(|path| {
        let answer = runtime.block_on(post(ug.addr, &ca, path, &body));
        assert!(
            answer.starts_with(br#"{"apiVersion":"admission.k8s.io/v1""#),
            "{path}: {}",
            String::from_utf8_lossy(&answer)
        );
        answer
    });
    // The matrix: each review with its own nginx location answering
    // upgrade-guard's bytes for it.
    let matrix = sample::review_matrix();
    let mut locations: Vec<(String, Vec<u8>)> = vec![
        ("/validate".into(), answers[0].clone()),
        ("/mutate".into(), answers[1].clone()),
    ];
    for (i, (name, body)) in matrix.iter().enumerate() {
        let answer = runtime.block_on(post(ug.addr, &ca, "/validate", body));
        assert!(
            answer.starts_with(br#"{"apiVersion":"admission.k8s.io/v1""#),
            "{name}: {}",
            String::from_utf8_lossy(&answer)
        );
        locations.push((format!("/matrix/{i}"), answer));
    }
    let nginx = Nginx::start(&dir.0, &locations);
    for (path, answer) in ["/validate", "/mutate"].iter().zip(&answers) {
        assert_eq!(
            &runtime.block_on(post(nginx.addr, &ca, path, &body)),
            answer,
            "nginx answers {path} with upgrade-guard's bytes"
        );
    }

    let shapes = [
        Shape::one(Protocol::H2, requests),
        Shape::many(Protocol::H2, 16, 4, seconds),
        Shape::one(Protocol::H1, requests),
        Shape::many(Protocol::H1, 64, 1, seconds),
    ];
    let targets = [
        ("upgrade-guard /validate", ug.pid(), ug.addr, "/validate"),
        ("upgrade-guard /mutate", ug.pid(), ug.addr, "/mutate"),
        ("nginx ceiling", nginx.pid(), nginx.addr, "/validate"),
    ];
    println!(
        "\n{} byte AdmissionReview; h2load against each in turn, {rounds} rounds, on loopback \
         (medians; peak RSS is the highest of the rounds, of it mapped files: the \
         binary's code and libraries, shared with the page cache)",
        body.len()
    );
    println!(
        "{:<24} {:<26} {:>8} {:>7} {:>7} {:>7} {:>6} {:>9} {:>6} {:>9} {:>6}",
        "shape",
        "target",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        ">5 ms",
        "CPU/req",
        "ratio",
        "peak MiB",
        "files"
    );
    for shape in &shapes {
        // Rounds alternate the targets, so a slow spell of the shared
        // machine falls on all of them rather than on one.
        let mut measured: Vec<Vec<Measured>> = targets.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for ((_, pid, addr, path), runs) in targets.iter().zip(&mut measured) {
                let url = format!("https://{addr}{path}");
                // Warm-up: connections, caches, allocator.
                shape
                    .warm_up()
                    .run(&url, &body_file, &dir.0.join("warm.log"));
                reset_peak_rss(*pid);
                let before = cpu_seconds(*pid);
                let run = shape.run(&url, &body_file, &dir.0.join("run.log"));
                let cpu = cpu_seconds(*pid) - before;
                let peak_kib = peak_rss_kib(*pid).unwrap_or(0);
                let file_kib = file_rss_kib(*pid).unwrap_or(0);
                runs.push(Measured {
                    cpu_per_request: cpu / run.succeeded.max(1) as f64,
                    peak_kib,
                    file_kib,
                    run,
                });
            }
        }
        let medians: Vec<&Measured> = measured.iter().map(|runs| median(runs)).collect();
        let ceiling = medians.last().map_or(f64::NAN, |m| m.run.rps);
        for (((name, ..), m), runs) in targets.iter().zip(&medians).zip(&measured) {
            let run = &m.run;
            let failed: usize = runs.iter().map(|r| r.run.failed).sum();
            let peak = runs.iter().max_by_key(|r| r.peak_kib);
            let (peak, files) = peak.map_or((0, 0), |r| (r.peak_kib, r.file_kib));
            println!(
                "{:<24} {:<26} {:>8.0} {:>7.3} {:>7.3} {:>7.2} {:>6} {:>6.0} µs {:>6.2} {:>9.1} {:>6.1}{}",
                shape.label(),
                name,
                run.rps,
                run.quantile(0.50),
                run.quantile(0.99),
                run.quantile(1.0),
                run.over_ms(5.0),
                m.cpu_per_request * 1e6,
                run.rps / ceiling,
                peak as f64 / 1024.0,
                files as f64 / 1024.0,
                if failed > 0 {
                    format!("  ({failed} failed)")
                } else {
                    String::new()
                }
            );
        }
    }
    run_matrix(
        &matrix,
        (ug.pid(), ug.addr),
        (nginx.pid(), nginx.addr),
        &dir.0,
        env_or("MATRIX_SECONDS", 3),
        rounds,
    );
}

/// Each review of the matrix under HTTP/2 16×4, upgrade-guard's /validate
/// and nginx in turn, `rounds` rounds: CPU per request and the ratio.
fn run_matrix(
    matrix: &[(String, Vec<u8>)],
    ug: (u32, std::net::SocketAddr),
    nginx: (u32, std::net::SocketAddr),
    dir: &Path,
    seconds: u64,
    rounds: usize,
) {
    let shape = Shape::many(Protocol::H2, 16, 4, seconds);
    println!("\nthe matrix: {}, {rounds} rounds (medians)", shape.label());
    println!(
        "{:<38} {:>7} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "review", "bytes", "ug req/s", "ug CPU", "nginx r/s", "nginx CPU", "ratio"
    );
    for (i, (name, body)) in matrix.iter().enumerate() {
        let body_file = dir.join(format!("matrix-{i}.json"));
        std::fs::write(&body_file, body).expect("the body file");
        let targets = [
            (ug.0, format!("https://{}/validate", ug.1)),
            (nginx.0, format!("https://{}/matrix/{i}", nginx.1)),
        ];
        let mut measured: Vec<Vec<Measured>> = vec![Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for ((pid, url), runs) in targets.iter().zip(&mut measured) {
                shape.warm_up().run(url, &body_file, &dir.join("warm.log"));
                let before = cpu_seconds(*pid);
                let run = shape.run(url, &body_file, &dir.join("run.log"));
                let cpu = cpu_seconds(*pid) - before;
                runs.push(Measured {
                    cpu_per_request: cpu / run.succeeded.max(1) as f64,
                    peak_kib: 0,
                    file_kib: 0,
                    run,
                });
            }
        }
        let (u, n) = (median(&measured[0]), median(&measured[1]));
        println!(
            "{:<38} {:>7} {:>9.0} {:>6.0} µs {:>9.0} {:>6.0} µs {:>6.2}",
            name,
            body.len(),
            u.run.rps,
            u.cpu_per_request * 1e6,
            n.run.rps,
            n.cpu_per_request * 1e6,
            u.run.rps / n.run.rps
        );
    }
}

/// One target's run in one round.
struct Measured {
    run: Run,
    cpu_per_request: f64,
    peak_kib: u64,
    /// After the run: file pages stay mapped.
    file_kib: u64,
}

/// The round with the median req/s (the lower middle of an even count).
fn median(runs: &[Measured]) -> &Measured {
    let mut order: Vec<&Measured> = runs.iter().collect();
    order.sort_by(|a, b| a.run.rps.total_cmp(&b.run.rps));
    order[(order.len() - 1) / 2]
}

/// Resets a process's peak resident memory (VmHWM) to what it holds now
/// (`/proc/PID/clear_refs`, Linux 4.0+), so each run reports its own peak.
fn reset_peak_rss(pid: u32) {
    if let Err(e) = std::fs::write(format!("/proc/{pid}/clear_refs"), "5") {
        eprintln!("could not reset the peak RSS of {pid}: {e}");
    }
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join(bin).is_file())
            || Path::new("/usr/sbin").join(bin).is_file()
    })
}

/// One HTTP/2 request, its response body.
async fn post(addr: std::net::SocketAddr, ca: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let (mut client, _) =
        Client::connect_to(addr, "upgrade-guard.upgrade-guard.svc", &[ca], "h2", None)
            .await
            .expect("a connection");
    let (status, _, answer) = client
        .request("POST", path, "application/json", body.to_vec())
        .await
        .expect("an answer");
    assert_eq!(
        status,
        hyper::StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&answer)
    );
    answer.to_vec()
}

/// nginx as the ceiling: one process, TLS and HTTP/2, the body read, fixed
/// bytes answered.
struct Nginx {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Nginx {
    /// nginx answering each (path, bytes).
    fn start(dir: &Path, answers: &[(String, Vec<u8>)]) -> Nginx {
        let addr = free_port();
        let d = dir.display();
        let location = |path: &str, answer: &[u8]| {
            // The echo directive adds the line break the answer ends with.
            let text = String::from_utf8_lossy(answer.strip_suffix(b"\n").unwrap_or(answer))
                .replace('\\', "\\\\")
                .replace('\'', "\\'");
            assert!(!text.contains('$'), "nginx would read $ as a variable");
            format!(
                "location = {path} {{ default_type application/json; echo_read_request_body; echo '{text}'; }}"
            )
        };
        let conf = format!(
            "load_module {ECHO_MODULE};
daemon off; master_process off; worker_processes 1;
error_log {d}/nginx-error.log warn; pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  client_max_body_size 3m; client_body_buffer_size 64k;
  keepalive_requests 1000000;
  server {{
    listen {addr} ssl http2;
    ssl_certificate {d}/tls.crt; ssl_certificate_key {d}/tls.key;
    {}
  }}
}}
",
            answers
                .iter()
                .map(|(path, answer)| location(path, answer))
                .collect::<Vec<_>>()
                .join("\n    "),
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    H1,
    H2,
}

/// Connections × streams each, for a number of requests or seconds.
struct Shape {
    protocol: Protocol,
    connections: usize,
    streams: usize,
    requests: Option<usize>,
    seconds: u64,
}

impl Shape {
    fn one(protocol: Protocol, requests: usize) -> Shape {
        Shape {
            protocol,
            connections: 1,
            streams: 1,
            requests: Some(requests),
            seconds: 0,
        }
    }

    fn many(protocol: Protocol, connections: usize, streams: usize, seconds: u64) -> Shape {
        Shape {
            protocol,
            connections,
            streams,
            requests: None,
            seconds,
        }
    }

    fn warm_up(&self) -> Shape {
        Shape {
            requests: Some(500 * self.connections),
            ..*self
        }
    }

    fn label(&self) -> String {
        let protocol = match self.protocol {
            Protocol::H1 => "HTTP/1.1",
            Protocol::H2 => "HTTP/2",
        };
        match self.protocol {
            Protocol::H2 => format!("{protocol} {}×{}", self.connections, self.streams),
            Protocol::H1 => format!("{protocol} {} conn", self.connections),
        }
    }

    fn run(&self, url: &str, body: &Path, log: &Path) -> Run {
        // h2load appends to its log.
        let _ = std::fs::remove_file(log);
        let mut command = Command::new("h2load");
        command
            .args(["-t", "1", "-c", &self.connections.to_string()])
            .args(["-m", &self.streams.to_string()])
            .args(["-H", "content-type: application/json", "-d"])
            .arg(body)
            .arg(format!("--log-file={}", log.display()));
        match self.requests {
            Some(n) => command.args(["-n", &n.to_string()]),
            None => command.args(["-D", &self.seconds.to_string()]),
        };
        if self.protocol == Protocol::H1 {
            command.arg("--h1");
        }
        let out = command.arg(url).output().expect("h2load");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "h2load {url}: {text}");
        let finished = text
            .lines()
            .find_map(|l| l.strip_prefix("finished in "))
            .unwrap_or_else(|| panic!("h2load printed no result: {text}"));
        let rps = finished
            .split(", ")
            .find_map(|f| f.strip_suffix(" req/s"))
            .and_then(|f| f.parse().ok())
            .unwrap_or(f64::NAN);
        let log = std::fs::read_to_string(log).expect("the h2load log");
        let mut latencies_us = Vec::new();
        let mut failed = 0;
        for line in log.lines() {
            let mut columns = line.split('\t').skip(1);
            match (columns.next(), columns.next().and_then(|d| d.parse().ok())) {
                (Some("200"), Some(us)) => latencies_us.push(us),
                _ => failed += 1,
            }
        }
        latencies_us.sort_unstable();
        Run {
            rps,
            succeeded: latencies_us.len(),
            failed,
            latencies_us,
        }
    }
}

struct Run {
    rps: f64,
    succeeded: usize,
    failed: usize,
    latencies_us: Vec<u64>,
}

impl Run {
    fn quantile(&self, q: f64) -> f64 {
        let n = self.latencies_us.len();
        let at = ((n as f64 * q) as usize).min(n.saturating_sub(1));
        self.latencies_us
            .get(at)
            .map_or(f64::NAN, |&us| us as f64 / 1000.0)
    }

    fn over_ms(&self, ms: f64) -> usize {
        let us = (ms * 1000.0) as u64;
        self.latencies_us.iter().filter(|&&l| l > us).count()
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (tick(11) + tick(12)) / 100.0
}
