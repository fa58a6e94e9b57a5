//! Load test: `cargo bench --bench load`.
//!
//! Starts `upgrade-guard serve` (development certificate, ./policies) and a
//! bare endpoint of the same stack (rustls, hyper, axum) that returns a fixed
//! response, each as its own process, then drives each with 64 concurrent
//! keep-alive HTTP/1.1 connections posting a recorded AdmissionReview.
//! Prints requests per second, p50 and p99 latency, and the server's peak
//! resident memory. Bounded: loopback only, a fixed duration per run.
//!
//! `LOAD_SECONDS` (default 10) and `LOAD_CONNECTIONS` (default 64) tune it.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use common::tls_client::Client;
use common::{env_or, free_port, peak_rss_kib};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/apiserver/sts-update-set-image.json"
);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--bare") {
        return bare(&args[at + 1]);
    }
    let seconds: u64 = env_or("LOAD_SECONDS", 10);
    let connections: usize = env_or("LOAD_CONNECTIONS", 64);
    // The API server sends compact JSON; the recorded file is indented.
    let sample: serde_json::Value =
        serde_json::from_slice(&std::fs::read(SAMPLE).expect("the recorded sample")).expect("JSON");
    let body = serde_json::to_vec(&sample).expect("JSON");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");

    let server = common::Binary::new(env!("CARGO_BIN_EXE_upgrade-guard"))
        .expect("upgrade-guard")
        .serve("warn,upgrade_guard::cli=info", false, &[])
        .expect("upgrade-guard serve");
    let (addr, ca) = (server.addr, server.ca.clone());
    let mut rows = Vec::new();
    for path in ["/validate", "/mutate"] {
        let stats = measured(server.pid(), || {
            runtime.block_on(drive(addr, &ca, path, &body, connections, seconds))
        });
        rows.push((format!("upgrade-guard {path}"), stats));
    }
    // Unsaturated: latency is service time, not queueing behind 64 others.
    let light = measured(server.pid(), || {
        runtime.block_on(drive(addr, &ca, "/validate", &body, 2, seconds))
    });
    rows.push(("upgrade-guard /validate, 2 connections".into(), light));
    let peak = peak_rss_kib(server.pid());
    drop(server);

    let (mut bare, addr, ca) = start_bare();
    let stats = measured(bare.id(), || {
        runtime.block_on(drive(addr, &ca, "/validate", &body, connections, seconds))
    });
    rows.push(("bare TLS endpoint (fixed response)".into(), stats));
    let light = measured(bare.id(), || {
        runtime.block_on(drive(addr, &ca, "/validate", &body, 2, seconds))
    });
    rows.push(("bare TLS endpoint, 2 connections".into(), light));
    let _ = bare.kill();

    println!(
        "\n{connections} keep-alive HTTP/1.1 connections (unless said), {seconds} s per run, {} byte request body",
        body.len()
    );
    println!(
        "{:<40} {:>9} {:>8} {:>8} {:>14} {:>7}",
        "target", "req/s", "p50 ms", "p99 ms", "server CPU/req", "errors"
    );
    for (name, s) in &rows {
        println!(
            "{name:<40} {:>9.0} {:>8.3} {:>8.3} {:>11.0} µs {:>7}",
            s.rps, s.p50_ms, s.p99_ms, s.server_cpu_us, s.errors
        );
    }
    let ceiling = rows[3].1.rps;
    println!(
        "/validate at {:.0}% of the bare ceiling, /mutate at {:.0}%",
        100.0 * rows[0].1.rps / ceiling,
        100.0 * rows[1].1.rps / ceiling
    );
    match peak {
        Some(kib) => println!(
            "upgrade-guard peak resident memory (VmHWM): {:.1} MiB",
            kib as f64 / 1024.0
        ),
        None => println!("upgrade-guard peak resident memory: not readable"),
    }
}

struct Stats {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
    /// The server process's CPU time (user + system) per request.
    server_cpu_us: f64,
}

/// Runs `load` and charges the server's CPU time to its requests.
fn measured(pid: u32, load: impl FnOnce() -> Stats) -> Stats {
    let before = cpu_seconds(pid);
    let started = Instant::now();
    let mut stats = load();
    let (after, elapsed) = (cpu_seconds(pid), started.elapsed().as_secs_f64());
    // Warm-up requests are not counted, so scale by the measured share.
    let requests = stats.rps * elapsed;
    if let (Some(b), Some(a)) = (before, after) {
        stats.server_cpu_us = (a - b) / requests.max(1.0) * 1e6;
    }
    stats
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

async fn drive(
    addr: SocketAddr,
    ca: &str,
    path: &'static str,
    body: &[u8],
    connections: usize,
    seconds: u64,
) -> Stats {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(
            Client::connect(addr, &[ca], "http/1.1", None)
                .await
                .expect("a connection"),
        );
    }
    // A short warm-up, then the measured run.
    let warm_until = Instant::now() + Duration::from_secs(1);
    let until = warm_until + Duration::from_secs(seconds);
    let body = Arc::new(body.to_vec());
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in clients {
        let body = body.clone();
        tasks.spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0usize);
            loop {
                let started = Instant::now();
                if started >= until {
                    break;
                }
                let ok = matches!(
                    client
                        .request("POST", path, "application/json", body.to_vec())
                        .await,
                    Ok((hyper::StatusCode::OK, _, _))
                );
                if started >= warm_until {
                    if ok {
                        latencies.push(started.elapsed().as_micros() as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        });
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    while let Some(Ok((latencies, e))) = tasks.join_next().await {
        all.extend(latencies);
        errors += e;
    }
    all.sort_unstable();
    let at = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    Stats {
        rps: all.len() as f64 / seconds as f64,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        errors,
        server_cpu_us: f64::NAN,
    }
}

/// This bench binary again, as the bare endpoint; it prints its CA.
fn start_bare() -> (Child, SocketAddr, String) {
    let addr = free_port();
    let mut child = Command::new(std::env::current_exe().expect("this binary"))
        .args(["--bare", &addr.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the bare endpoint");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut ca = String::new();
    let mut line = String::new();
    while out.read_line(&mut line).expect("the CA") > 0 {
        ca.push_str(&line);
        if line.starts_with("-----END CERTIFICATE") {
            break;
        }
        line.clear();
    }
    std::thread::sleep(Duration::from_millis(200));
    (child, addr, ca)
}

/// The same TLS accept loop, rustls config and router layers, answering a
/// fixed AdmissionReview: the ceiling of this stack on this machine.
fn bare(addr: &str) {
    use upgrade_guard::webhook::{metrics::Metrics, server, tls};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let names = ["localhost", "127.0.0.1"].map(String::from);
        let bundle = upgrade_guard::certs::generate(&names, jiff::Timestamp::now(), 1).expect("a certificate");
        let store = tls::CertStore::from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes()).expect("a store");
        let config = tls::server_config(store, None).expect("a TLS config");
        let metrics = Arc::new(Metrics::register(&mut prometheus_client::registry::Registry::default()));
        let fixed = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"allowed":true,"status":{},"uid":"x"}}"#;
        let router = Router::new()
            .route("/validate", post(move |_body: axum::body::Bytes| async move { ([("content-type", "application/json")], fixed) }))
            .layer(axum::extract::DefaultBodyLimit::max(3 * 1024 * 1024));
        let listener = tokio::net::TcpListener::bind(addr).await.expect("the bare port");
        println!("{}", bundle.ca_pem.trim_end());
        let tls = Some(tokio_rustls::TlsAcceptor::from(config));
        let limits = server::ConnectionLimits::default();
        server::serve(listener, tls, router, metrics, limits, std::future::pending()).await;
    });
}
