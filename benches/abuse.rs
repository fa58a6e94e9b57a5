//! Abuse suite: `cargo bench --bench abuse`.
//!
//! Starts `upgrade-guard serve` (loopback, development certificate,
//! ./policies) and treats it the ways a broken or hostile client could:
//! oversized objects, connections that never send a request, a flood past
//! the connection cap, headers that never end, a megabyte-long value, and
//! SIGTERM under load. Each check prints one `PASS name: figures` or
//! `FAIL name: figures` line (`SKIP` when the binary lacks a flag the check
//! needs); the process exits 1 if any failed.
//!
//! Bounded: a fixed number of connections and requests, and every wait has
//! a deadline. serve has no flags for its connection timeouts, so the
//! checks wait the real ones; the longest, the 90 s idle limit of a served
//! HTTP/2 connection, runs beside the other checks (about 95 s in all).
//!
//! Environment:
//! - `ABUSE_BIN`: the binary to test (default: this build's), e.g. an older
//!   build for a before/after comparison.
//! - `ABUSE_IDLE_H2=0` skips the 90 s wait.
//! - `ABUSE_FIRST_REQUEST_SECONDS` (10), `ABUSE_IDLE_SECONDS` (90),
//!   `ABUSE_HEADER_SECONDS` (4), `ABUSE_DRAIN_SECONDS` (20): the limits the
//!   server is expected to keep; `ABUSE_MARGIN_SECONDS` (3) is allowed past
//!   each.
//! - Sizes: `ABUSE_ENTRIES` (40000,115000), `ABUSE_IDLE_CONNECTIONS` (200),
//!   `ABUSE_IDLE_H2_CONNECTIONS` (5), `ABUSE_CAP` (50), `ABUSE_OVER_CAP`
//!   (20), `ABUSE_SLOW_CONNECTIONS` (100), `ABUSE_SIGTERM_LOAD_SECONDS` (2).
//!
//! Arguments that do not start with `-` select checks by name (substring).

mod common;

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::tls_client::{Client, client_tls};
use common::{Binary, Server, StartError, env_or, peak_rss_kib};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

const CREATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/apiserver/sts-create-apply.json"
);
const UPDATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/apiserver/sts-update-set-image.json"
);

/// The API server's own object limit, and serve's default body limit.
const BODY_LIMIT: usize = 3 * 1024 * 1024;

/// The peak a governed body just under the value cap may cost the server.
/// A governed object decoded whole costs hundreds of bytes per JSON value
/// (`{}` env entries: 49,000 values peaked at 32 MiB before the cap, about
/// 680 B each); just under the 25,000-value cap it measured 22.7 MiB as a
/// CREATE and 18.6 MiB as an UPDATE. 40 MiB leaves room for allocator slack
/// and still fails if the cap goes or the cost per value nearly doubles.
const CAP_CEILING_MIB: u64 = 40;

/// A response or log line that echoes a user's value is bounded by this.
const ECHO_CEILING: usize = 16 * 1024;

fn main() {
    let started = Instant::now();
    let config = Config::from_env();
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runs = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let path = std::env::var_os("ABUSE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_upgrade-guard")),
        PathBuf::from,
    );
    let bin = match Binary::new(&path) {
        Ok(bin) => bin,
        Err(e) => {
            println!("FAIL start: {e}");
            std::process::exit(1);
        }
    };
    let checks = [
        "memory",
        "memory-cap",
        "idle-handshaken",
        "idle-h2",
        "flood",
        "slow-headers",
        "long-value",
        "sigterm",
    ];
    let selected: Vec<&str> = checks.iter().copied().filter(|c| runs(c)).collect();
    println!("\nabuse suite against {}", bin.path.display());
    println!(
        "checks: {}; loopback only; limits expected: first request {} s, idle {} s, headers {} s, drain {} s, each + {} s margin",
        selected.join(", "),
        seconds(config.first_request),
        seconds(config.idle),
        seconds(config.header),
        seconds(config.drain),
        seconds(config.margin)
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut report = Report::default();

    // The 90 s wait runs beside the other checks, on its own server.
    let mut idle_h2_task = None;
    if runs("idle-h2") {
        if !config.idle_h2 {
            report.add(Outcome::skip("idle-h2", "ABUSE_IDLE_H2=0"));
        } else {
            match bin.serve("info", false, &[]) {
                Ok(server) => {
                    println!(
                        "idle-h2 runs in the background (waits out the {} s idle limit)",
                        seconds(config.idle)
                    );
                    idle_h2_task = Some(runtime.spawn(idle_h2(server, config.clone())));
                }
                Err(e) => report.add(Outcome::from_start("idle-h2", e)),
            }
        }
    }
    if runs("memory") {
        memory(&bin, &runtime, &config, &mut report);
    }
    if runs("memory-cap") {
        memory_cap(&bin, &runtime, &mut report);
    }
    if runs("idle-handshaken") {
        report.add(runtime.block_on(idle_handshaken(&bin, &config)));
    }
    if runs("flood") {
        report.add(runtime.block_on(flood(&bin, &config)));
    }
    if runs("slow-headers") {
        report.add(runtime.block_on(slow_headers(&bin, &config)));
    }
    if runs("long-value") {
        report.add(runtime.block_on(long_value(&bin)));
    }
    if runs("sigterm") {
        report.add(runtime.block_on(sigterm(&bin, &config)));
    }
    if let Some(task) = idle_h2_task {
        let outcome = runtime
            .block_on(task)
            .unwrap_or_else(|e| Outcome::fail("idle-h2", format!("the check panicked: {e}")));
        report.add(outcome);
    }
    let count = |s: Status| report.0.iter().filter(|o| o.status == s).count();
    let failed = count(Status::Fail);
    println!(
        "{} passed, {failed} failed, {} skipped; total wall time {:.1} s",
        count(Status::Pass),
        count(Status::Skip),
        started.elapsed().as_secs_f64()
    );
    std::process::exit(i32::from(failed > 0));
}

#[derive(Clone)]
struct Config {
    margin: Duration,
    first_request: Duration,
    idle: Duration,
    header: Duration,
    drain: Duration,
    idle_h2: bool,
    entries: Vec<usize>,
    idle_connections: usize,
    idle_h2_connections: usize,
    cap: usize,
    over_cap: usize,
    slow_connections: usize,
    sigterm_load: Duration,
}

impl Config {
    fn from_env() -> Config {
        let seconds = |name: &str, default: f64| Duration::from_secs_f64(env_or(name, default));
        let entries = std::env::var("ABUSE_ENTRIES")
            .unwrap_or_else(|_| "40000,115000".into())
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("ABUSE_ENTRIES: numbers, comma-separated")
            })
            .collect();
        Config {
            margin: seconds("ABUSE_MARGIN_SECONDS", 3.0),
            first_request: seconds("ABUSE_FIRST_REQUEST_SECONDS", 10.0),
            idle: seconds("ABUSE_IDLE_SECONDS", 90.0),
            header: seconds("ABUSE_HEADER_SECONDS", 4.0),
            drain: seconds("ABUSE_DRAIN_SECONDS", 20.0),
            idle_h2: env_or("ABUSE_IDLE_H2", 1) != 0,
            entries,
            idle_connections: env_or("ABUSE_IDLE_CONNECTIONS", 200),
            idle_h2_connections: env_or("ABUSE_IDLE_H2_CONNECTIONS", 5),
            cap: env_or("ABUSE_CAP", 50),
            over_cap: env_or("ABUSE_OVER_CAP", 20),
            slow_connections: env_or("ABUSE_SLOW_CONNECTIONS", 100),
            sigterm_load: seconds("ABUSE_SIGTERM_LOAD_SECONDS", 2.0),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    Fail,
    Skip,
}

struct Outcome {
    status: Status,
    name: String,
    figures: String,
}

impl Outcome {
    fn new(pass: bool, name: &str, figures: impl Into<String>) -> Outcome {
        let status = if pass { Status::Pass } else { Status::Fail };
        Outcome {
            status,
            name: name.into(),
            figures: figures.into(),
        }
    }

    fn fail(name: &str, figures: impl Into<String>) -> Outcome {
        Outcome::new(false, name, figures)
    }

    fn skip(name: &str, why: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Skip,
            name: name.into(),
            figures: why.into(),
        }
    }

    /// A server that did not start: a flag the binary lacks is a skip.
    fn from_start(name: &str, e: StartError) -> Outcome {
        match e {
            StartError::Lacks(why) => Outcome::skip(name, why),
            StartError::Failed(why) => Outcome::fail(name, format!("serve did not start: {why}")),
        }
    }
}

/// Every outcome, each printed as it comes.
#[derive(Default)]
struct Report(Vec<Outcome>);

impl Report {
    fn add(&mut self, outcome: Outcome) {
        let status = match outcome.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        };
        println!("{status} {}: {}", outcome.name, outcome.figures);
        self.0.push(outcome);
    }
}

/// Starts a server, or returns the check's outcome from the failure.
macro_rules! serve_or_return {
    ($name:expr, $started:expr) => {
        match $started {
            Ok(server) => server,
            Err(e) => return Outcome::from_start($name, e),
        }
    };
}

fn recorded(path: &str) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("the recorded review")).expect("JSON")
}

/// The recorded CREATE of StatefulSet shop/db with `env` as its container's
/// env and `name` as its `app.kubernetes.io/name` label (`db` is what the
/// policy semver-db selects); as an UPDATE its old object is a copy of it.
/// Compact, as the API server sends it.
fn workload_review(update: bool, name: &str, env: Vec<Value>) -> Vec<u8> {
    let mut review = recorded(CREATE);
    let request = &mut review["request"];
    let object = &mut request["object"];
    object["metadata"]["labels"]["app.kubernetes.io/name"] = json!(name);
    object["spec"]["template"]["spec"]["containers"][0]["env"] = Value::Array(env);
    if update {
        request["operation"] = json!("UPDATE");
        request["oldObject"] = request["object"].clone();
    }
    serde_json::to_vec(&review).expect("JSON")
}

/// JSON values as the server counts them against its cap: the `{`, `[`,
/// `,` and `:` outside strings.
fn json_values(body: &[u8]) -> usize {
    let mut count = 0;
    let mut bytes = body.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'{' | b'[' | b',' | b':' => count += 1,
            // Skip the string, escapes included.
            b'"' => {
                while let Some(&s) = bytes.next() {
                    match s {
                        b'\\' => {
                            bytes.next();
                        }
                        b'"' => break,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    count
}

/// What one request cost a fresh server.
struct Peak {
    status: u16,
    /// VmHWM after the request less VmHWM before it.
    delta_kib: u64,
    verdict: String,
}

/// Starts a fresh server, warms its connection with one /healthz, and
/// measures how far one POST of `body` to /validate raises its peak memory.
fn peak_of_one(bin: &Binary, runtime: &Runtime, name: &str, body: &[u8]) -> Result<Peak, Outcome> {
    let server = bin
        .serve("info", false, &[])
        .map_err(|e| Outcome::from_start(name, e))?;
    let failed = |what: &str, e: String| Outcome::fail(name, format!("{what}: {e}"));
    runtime.block_on(async {
        let mut client = Client::connect(server.addr, &[&server.ca], "h2", None)
            .await
            .map_err(|e| failed("connect", e))?;
        // The connection's buffers and the first request's set-up are not
        // the body's cost.
        client
            .request("GET", "/healthz", "text/plain", Vec::new())
            .await
            .map_err(|e| failed("GET /healthz", e))?;
        let before =
            peak_rss_kib(server.pid()).ok_or_else(|| failed("VmHWM", "not readable".into()))?;
        let (status, _, answer) = client
            .request("POST", "/validate", "application/json", body.to_vec())
            .await
            .map_err(|e| failed("POST /validate", e))?;
        let after =
            peak_rss_kib(server.pid()).ok_or_else(|| failed("VmHWM", "not readable".into()))?;
        Ok(Peak {
            status: status.as_u16(),
            delta_kib: after.saturating_sub(before),
            verdict: verdict(&answer),
        })
    })
}

/// "allowed", "refused: why" or what else the answer was, briefly.
fn verdict(answer: &[u8]) -> String {
    let review: Value = serde_json::from_slice(answer).unwrap_or_default();
    match review["response"]["allowed"].as_bool() {
        Some(true) => "allowed".into(),
        Some(false) => {
            let why = review["response"]["status"]["message"]
                .as_str()
                .unwrap_or("");
            format!("refused: {}…", common::cut(why, 70))
        }
        None => format!(
            "answered {:?}",
            common::cut(&String::from_utf8_lossy(answer), 100)
        ),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn mib_of_bytes(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// 1. Oversized objects: a fresh server per body, CREATE and UPDATE, with
///    and without a policy selecting them; the peak grows by less than
///    4 × body + 16 MiB.
fn memory(bin: &Binary, runtime: &Runtime, config: &Config, report: &mut Report) {
    for &entries in &config.entries {
        for update in [false, true] {
            for label in ["other", "db"] {
                let operation = if update { "update" } else { "create" };
                let selected = if label == "db" {
                    "selected"
                } else {
                    "unselected"
                };
                let name = format!("memory {operation} {selected} {entries}");
                let body = workload_review(update, label, vec![json!({"name": "a"}); entries]);
                if body.len() >= BODY_LIMIT {
                    report.add(Outcome::fail(
                        &name,
                        format!(
                            "the body ({} B) is not under the 3 MiB limit; lower ABUSE_ENTRIES",
                            body.len()
                        ),
                    ));
                    continue;
                }
                let bound_kib = (4 * body.len() as u64) / 1024 + 16 * 1024;
                report.add(match peak_of_one(bin, runtime, &name, &body) {
                    Ok(p) => Outcome::new(
                        p.status == 200 && p.delta_kib < bound_kib,
                        &name,
                        format!(
                            "body {:.2} MiB, status {}, peak +{:.1} MiB ({:.1} × body; bound {:.1} MiB), {}",
                            mib_of_bytes(body.len()),
                            p.status,
                            mib(p.delta_kib),
                            p.delta_kib as f64 * 1024.0 / body.len() as f64,
                            mib(bound_kib),
                            p.verdict
                        ),
                    ),
                    Err(outcome) => outcome,
                });
            }
        }
    }
}

/// 1b. The costliest governed body the server still decodes: `{}` env
///     entries (the most JSON values per byte), as many as keep the body
///     just under the value cap.
fn memory_cap(bin: &Binary, runtime: &Runtime, report: &mut Report) {
    let cap = upgrade_guard::webhook::review::MAX_VALUES;
    for update in [false, true] {
        let name = format!("memory-cap {}", if update { "update" } else { "create" });
        let body_of = |n: usize| workload_review(update, "db", vec![json!({}); n]);
        let (base, per_1000) = (json_values(&body_of(0)), json_values(&body_of(1000)));
        let per_entry = (per_1000 - base) as f64 / 1000.0;
        let mut n = ((cap - base) as f64 / per_entry) as usize;
        while n > 0 && json_values(&body_of(n)) >= cap {
            n -= 1;
        }
        let body = body_of(n);
        let values = json_values(&body);
        report.add(match peak_of_one(bin, runtime, &name, &body) {
            Ok(p) => {
                // Refused by the cap means the body was not under it: the
                // count here and the server's disagree.
                let decoded = !p.verdict.contains("JSON values");
                Outcome::new(
                    p.status == 200 && decoded && p.delta_kib < CAP_CEILING_MIB * 1024,
                    &name,
                    format!(
                        "{n} env entries `{{}}`, {values} JSON values (cap {cap}), body {:.0} KiB, status {}, peak +{:.1} MiB (ceiling {CAP_CEILING_MIB} MiB), {}",
                        body.len() as f64 / 1024.0,
                        p.status,
                        mib(p.delta_kib),
                        p.verdict
                    ),
                )
            }
            Err(outcome) => outcome,
        });
    }
}

/// The compact recorded UPDATE (1.7.0 → 1.8.0 of shop/db, allowed).
fn update_body() -> Vec<u8> {
    serde_json::to_vec(&recorded(UPDATE)).expect("JSON")
}

fn seconds(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

/// "min–max s" of some durations.
fn span(durations: &[Duration]) -> String {
    match (durations.iter().min(), durations.iter().max()) {
        (Some(min), Some(max)) => format!("{}–{} s", seconds(*min), seconds(*max)),
        _ => "-".into(),
    }
}

/// Reads until the peer closes (EOF or an error) or `limit` passes; how
/// long it took, and how many bytes came.
async fn until_closed(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    from: Instant,
    limit: Duration,
) -> (Option<Duration>, usize) {
    let mut buf = vec![0u8; 4096];
    let mut bytes = 0;
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes += n,
            }
        }
    };
    let closed = tokio::time::timeout(limit.saturating_sub(from.elapsed()), read)
        .await
        .is_ok();
    (closed.then(|| from.elapsed()), bytes)
}

/// How a batch of watched connections ended: closed (after how long, with
/// how many bytes received), still open, or failed to start.
struct Closings {
    closed: Vec<Duration>,
    bytes: Vec<usize>,
    open: usize,
    errors: Vec<String>,
}

impl Closings {
    async fn of(
        mut tasks: tokio::task::JoinSet<Result<(Option<Duration>, usize), String>>,
    ) -> Self {
        let mut c = Closings {
            closed: Vec::new(),
            bytes: Vec::new(),
            open: 0,
            errors: Vec::new(),
        };
        while let Some(joined) = tasks.join_next().await {
            match joined.expect("a connection task") {
                Ok((Some(after), n)) => {
                    c.closed.push(after);
                    c.bytes.push(n);
                }
                Ok((None, _)) => c.open += 1,
                Err(e) => c.errors.push(e),
            }
        }
        c
    }

    fn late(&self, limit: Duration) -> usize {
        self.closed.iter().filter(|d| **d > limit).count()
    }

    /// " (the first error)", or nothing.
    fn first_error(&self) -> String {
        self.errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    }
}

/// 2a. TLS connections that finish the handshake and never send an HTTP
///     byte, as many as the cap: closed after the first-request limit
///     (10 s) while half the places or more are taken, so at least half of
///     them; the rest are held as idle ones (a Go client may still use a
///     connection it dialed early).
async fn idle_handshaken(bin: &Binary, config: &Config) -> Outcome {
    let name = "idle-handshaken";
    let cap = config.idle_connections.to_string();
    let server = serve_or_return!(name, bin.serve("info", false, &["--max-connections", &cap]));
    let limit = config.first_request + config.margin;
    let connector = tokio_rustls::TlsConnector::from(client_tls(&[&server.ca], "h2", None));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..config.idle_connections {
        let (connector, addr) = (connector.clone(), server.addr);
        tasks.spawn(async move {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let localhost = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
            let tls = connector
                .connect(localhost, tcp)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            // Watched a little past the limit, to tell late from never.
            Ok::<_, String>(until_closed(tls, Instant::now(), limit + Duration::from_secs(2)).await)
        });
    }
    let c = Closings::of(tasks).await;
    let (late, open, bytes) = (c.late(limit), c.open, c.bytes.iter().sum::<usize>());
    Outcome::new(
        c.errors.is_empty() && c.closed.len() * 2 >= config.idle_connections && late == 0,
        name,
        format!(
            "{} handshaken connections, no HTTP byte: {} closed by the server {} after the handshake (limit {} s + {} s margin), {late} late, {open} still open, {} failed to connect{}; {bytes} application bytes received",
            config.idle_connections,
            c.closed.len(),
            span(&c.closed),
            seconds(config.first_request),
            seconds(config.margin),
            c.errors.len(),
            c.first_error(),
        ),
    )
}

/// 2b. HTTP/2 connections that made one request and then idle are closed
///     after the idle limit (90 s), and not long before it.
async fn idle_h2(server: Server, config: Config) -> Outcome {
    let name = "idle-h2";
    let body = update_body();
    let mut clients = Vec::new();
    for _ in 0..config.idle_h2_connections {
        let mut client = match Client::connect(server.addr, &[&server.ca], "h2", None).await {
            Ok(c) => c,
            Err(e) => return Outcome::fail(name, format!("connect: {e}")),
        };
        match client
            .request("POST", "/validate", "application/json", body.clone())
            .await
        {
            Ok((status, _, _)) if status == 200 => clients.push((client, Instant::now(), None)),
            other => return Outcome::fail(name, format!("the first request: {other:?}")),
        }
    }
    let (earliest, latest) = (
        config.idle.saturating_sub(Duration::from_secs(5)),
        config.idle + config.margin,
    );
    let deadline = Instant::now() + latest + Duration::from_secs(2);
    while Instant::now() < deadline && clients.iter().any(|c| c.2.is_none()) {
        for (client, since, closed) in &mut clients {
            if closed.is_none() && client.is_closed().await {
                *closed = Some(since.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let closed: Vec<Duration> = clients.iter().filter_map(|c| c.2).collect();
    let open = clients.len() - closed.len();
    let early = closed.iter().filter(|d| **d < earliest).count();
    let late = closed.iter().filter(|d| **d > latest).count();
    Outcome::new(
        open == 0 && early == 0 && late == 0,
        name,
        format!(
            "{} HTTP/2 connections idle after one request: {} closed by the server {} after it (limit {} s: open past {} s, closed by {} s), {early} early, {late} late, {open} still open",
            clients.len(),
            closed.len(),
            span(&closed),
            seconds(config.idle),
            seconds(earliest),
            seconds(latest),
        ),
    )
}

/// A plain HTTP/1.1 GET; the status and body.
async fn plain_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not HTTP: {:?}", common::cut(&text, 80)))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer in 5 s".into()))
}

/// 3. A flood to the connection cap: with --max-connections N and N
///    connections held, more get a 503 and are closed, while the probe
///    port and the held connections still answer, and a freed slot serves.
async fn flood(bin: &Binary, config: &Config) -> Outcome {
    let name = "flood";
    let cap = config.cap.to_string();
    let server = serve_or_return!(name, bin.serve("info", true, &["--max-connections", &cap]));
    let body = update_body();
    let mut held = Vec::new();
    for i in 0..config.cap {
        let answered = match Client::connect(server.addr, &[&server.ca], "h2", None).await {
            Ok(mut client) => {
                let reply = client
                    .request("POST", "/validate", "application/json", body.clone())
                    .await;
                held.push(client);
                reply.map(|r| r.0.as_u16())
            }
            Err(e) => Err(e),
        };
        if answered != Ok(200) {
            return Outcome::fail(name, format!("held connection {i} of {cap}: {answered:?}"));
        }
    }
    // Over the cap, over both protocols.
    let (mut refused, mut other) = (0, Vec::new());
    for i in 0..config.over_cap {
        let alpn = if i % 2 == 0 { "h2" } else { "http/1.1" };
        let reply = match Client::connect(server.addr, &[&server.ca], alpn, None).await {
            Ok(mut client) => {
                client
                    .request("POST", "/validate", "application/json", body.clone())
                    .await
            }
            Err(e) => Err(e),
        };
        match reply {
            Ok((status, _, answer))
                if status == 503
                    && String::from_utf8_lossy(&answer).contains("too many connections") =>
            {
                refused += 1;
            }
            Ok((status, _, answer)) => other.push(format!(
                "{alpn} {status} {}",
                common::cut(&String::from_utf8_lossy(&answer), 60)
            )),
            Err(e) => other.push(format!("{alpn}: {e}")),
        }
    }
    let probe = match server.probe {
        Some(addr) => plain_get(addr, "/healthz").await,
        None => Err("no probe port".into()),
    };
    let probe_ok = probe.as_ref().is_ok_and(|(status, _)| *status == 200);
    let held_ok = held[0]
        .request("POST", "/validate", "application/json", body.clone())
        .await
        .is_ok_and(|r| r.0 == 200);
    // Close a few held connections: a new one is served within 3 s.
    held.truncate(config.cap.saturating_sub(5));
    let freed = Instant::now();
    let mut recovered = None;
    while recovered.is_none() && freed.elapsed() < Duration::from_secs(3) {
        if let Ok(mut client) = Client::connect(server.addr, &[&server.ca], "h2", None).await
            && client
                .request("POST", "/validate", "application/json", body.clone())
                .await
                .is_ok_and(|r| r.0 == 200)
        {
            recovered = Some(freed.elapsed());
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The server's own count, retries of the recovery included.
    let counted = match server.probe {
        Some(addr) => plain_get(addr, "/metrics")
            .await
            .ok()
            .and_then(|(_, text)| {
                text.lines()
                    .find_map(|l| l.strip_prefix("upgrade_guard_connections_refused_total "))
                    .map(str::to_string)
            }),
        None => None,
    };
    Outcome::new(
        refused == config.over_cap && probe_ok && held_ok && recovered.is_some(),
        name,
        format!(
            "--max-connections {cap}, {cap} held: {refused}/{} more got 503 \"too many connections\"{}; probe /healthz {}; a held connection {}; after 5 closed, a new one {}; connections_refused_total {}",
            config.over_cap,
            if other.is_empty() {
                String::new()
            } else {
                format!(" (others: {})", other.join("; "))
            },
            match &probe {
                Ok((status, _)) => status.to_string(),
                Err(e) => e.clone(),
            },
            if held_ok {
                "answers 200"
            } else {
                "does not answer"
            },
            match recovered {
                Some(after) => format!("is served after {} ms", after.as_millis()),
                None => "is still refused after 3 s".into(),
            },
            counted.as_deref().unwrap_or("not read"),
        ),
    )
}

/// 4. Plain connections to the probe port that start a request and never
///    finish its headers are closed after the first-request limit (4 s).
async fn slow_headers(bin: &Binary, config: &Config) -> Outcome {
    let name = "slow-headers";
    let server = serve_or_return!(name, bin.serve("info", true, &[]));
    let probe = server.probe.expect("asked for a probe port");
    let limit = config.header + config.margin;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..config.slow_connections {
        tasks.spawn(async move {
            let mut tcp = TcpStream::connect(probe)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Never-Ends: a")
                .await
                .map_err(|e| format!("write: {e}"))?;
            // Watched a little past the limit, to tell late from never.
            Ok::<_, String>(until_closed(tcp, Instant::now(), limit + Duration::from_secs(2)).await)
        });
    }
    let c = Closings::of(tasks).await;
    let (late, open) = (c.late(limit), c.open);
    let answered = c.bytes.iter().filter(|n| **n > 0).count();
    Outcome::new(
        c.errors.is_empty() && open == 0 && late == 0,
        name,
        format!(
            "{} unfinished request heads on the probe port: {} closed by the server {} after (limit {} s + {} s margin; {answered} with an answer first), {late} late, {open} still open, {} failed{}",
            config.slow_connections,
            c.closed.len(),
            span(&c.closed),
            seconds(config.header),
            seconds(config.margin),
            c.errors.len(),
            c.first_error(),
        ),
    )
}

/// 5. A governed UPDATE to an image whose tag is 1 MB long: the refusal
///    and the log line that audits it echo a bounded part of it.
async fn long_value(bin: &Binary) -> Outcome {
    let name = "long-value";
    let server = serve_or_return!(name, bin.serve("info", false, &[]));
    let mut review = recorded(UPDATE);
    let tag = "x".repeat(1_000_000);
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!(format!("registry.example.com/shop/db:{tag}"));
    let body = serde_json::to_vec(&review).expect("JSON");
    let mut client = match Client::connect(server.addr, &[&server.ca], "h2", None).await {
        Ok(c) => c,
        Err(e) => return Outcome::fail(name, format!("connect: {e}")),
    };
    let from = server.log.lines();
    let mut answers = Vec::new();
    for path in ["/validate", "/mutate"] {
        match client
            .request("POST", path, "application/json", body.clone())
            .await
        {
            Ok((status, _, answer)) => answers.push((path, status.as_u16(), answer)),
            Err(e) => return Outcome::fail(name, format!("POST {path}: {e}")),
        }
    }
    // The log is read by another thread: let it catch up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let longest = server.log.longest_since(from);
    let audit = server.log.find_since(from, "audit");
    let refused = verdict(&answers[0].2).starts_with("refused");
    let small = answers
        .iter()
        .all(|(_, status, answer)| *status == 200 && answer.len() < ECHO_CEILING);
    Outcome::new(
        refused && small && longest < ECHO_CEILING && !audit.is_empty(),
        name,
        format!(
            "a {} B tag in a {:.2} MiB UPDATE: {}; longest log line {longest} B (audit line {}; ceiling {ECHO_CEILING} B)",
            tag.len(),
            mib_of_bytes(body.len()),
            answers
                .iter()
                .map(|(path, status, answer)| format!(
                    "{path} {status} {} B{}, {}",
                    answer.len(),
                    if String::from_utf8_lossy(answer).contains("[cut: ") {
                        " with a cut marker"
                    } else {
                        ""
                    },
                    verdict(answer)
                ))
                .collect::<Vec<_>>()
                .join("; "),
            match audit.first() {
                Some(len) => format!("{len} B"),
                None => "missing".into(),
            },
        ),
    )
}

type H2 = hyper::client::conn::http2::SendRequest<BoxBody<Bytes, Infallible>>;

/// How one request under SIGTERM ended.
enum Attempt {
    /// A complete 200 AdmissionReview.
    Answered,
    /// Never processed by the server, as HTTP/2 says: hyper held it back
    /// (the connection is closing), or the server's GOAWAY or
    /// REFUSED_STREAM says it did not process the stream. Safe to retry.
    NotStarted(&'static str),
    /// Anything else: a reset or a cut after the server took the request.
    Failed(String),
}

/// An error and its sources, joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Why the server never processed a request that failed, if it did not.
/// hyper and h2 say it only in their messages: a GOAWAY with NO_ERROR fails
/// the streams above its last stream id (which the server never processed),
/// REFUSED_STREAM says the same of one stream.
fn never_processed(e: &hyper::Error) -> Option<&'static str> {
    let text = chain(e);
    if e.is_canceled() {
        Some("never sent")
    } else if text.contains("connection error received: not a result of an error") {
        Some("GOAWAY")
    } else if text.contains("refused stream before processing") {
        Some("REFUSED_STREAM")
    } else {
        None
    }
}

async fn attempt(send: &mut H2, body: &Bytes) -> Attempt {
    if send.ready().await.is_err() {
        return Attempt::NotStarted("connection closed");
    }
    let request = hyper::Request::post("https://localhost/validate")
        .header("content-type", "application/json")
        .body(Full::new(body.clone()).boxed())
        .expect("a request");
    let response = match send.send_request(request).await {
        Ok(r) => r,
        Err(e) => {
            return match never_processed(&e) {
                Some(why) => Attempt::NotStarted(why),
                None => Attempt::Failed(format!("before the answer: {}", chain(&e))),
            };
        }
    };
    let status = response.status();
    match response.into_body().collect().await {
        Err(e) => Attempt::Failed(format!("{status}, the answer cut: {}", chain(&e))),
        Ok(answer) => {
            let answer = answer.to_bytes();
            let complete = serde_json::from_slice::<Value>(&answer)
                .is_ok_and(|r| r["response"]["allowed"].is_boolean());
            match (status.as_u16(), complete) {
                (200, true) => Attempt::Answered,
                (200, false) => Attempt::Failed(format!(
                    "a 200 with an incomplete answer of {} B",
                    answer.len()
                )),
                (other, _) => Attempt::Failed(format!("status {other}")),
            }
        }
    }
}

/// 6. SIGTERM while HTTP/2 keep-alive clients send requests back to back
///    and one request's body is still arriving: every request is answered
///    or was never processed, and serve exits 0 within its drain time.
async fn sigterm(bin: &Binary, config: &Config) -> Outcome {
    let name = "sigterm";
    let mut server = serve_or_return!(name, bin.serve("info", false, &[]));
    let body = Bytes::from(update_body());
    let (connections, streams) = (4, 4);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let send = match Client::connect(server.addr, &[&server.ca], "h2", None).await {
            Ok(Client::H2(send)) => send,
            Ok(Client::H1(_)) => return Outcome::fail(name, "no HTTP/2 from ALPN h2"),
            Err(e) => return Outcome::fail(name, format!("connect: {e}")),
        };
        for _ in 0..streams {
            let (mut send, body) = (send.clone(), body.clone());
            // A stop well past the drain time, should the server hang.
            let stop =
                Instant::now() + config.sigterm_load + config.drain + Duration::from_secs(10);
            tasks.spawn(async move {
                let mut attempts = Vec::new();
                while Instant::now() < stop {
                    let started = Instant::now();
                    let outcome = attempt(&mut send, &body).await;
                    let over = !matches!(outcome, Attempt::Answered);
                    attempts.push((started, Instant::now(), outcome));
                    if over {
                        break;
                    }
                }
                attempts
            });
        }
    }
    // One more request, on its own connection, has half its body sent when
    // the signal comes and the rest 0.5 s after: draining must wait for it.
    let before = Duration::from_millis(300);
    tokio::time::sleep(config.sigterm_load.saturating_sub(before)).await;
    let mut slow_client = match Client::connect(server.addr, &[&server.ca], "h2", None).await {
        Ok(client) => client,
        Err(e) => return Outcome::fail(name, format!("connect: {e}")),
    };
    let (chunks, arriving) = tokio::sync::mpsc::channel(2);
    let length = body.len();
    let slow = tokio::spawn(async move {
        slow_client
            .post_channel("/validate", length, arriving)
            .await
    });
    let _ = chunks.send(body.slice(..length / 2)).await;
    tokio::time::sleep(before).await;
    let pid = server.pid() as libc::pid_t;
    let signal_at = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Outcome::fail(name, format!("kill: {}", std::io::Error::last_os_error()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = chunks.send(body.slice(length / 2..)).await;
    drop(chunks);
    let deadline = signal_at + config.drain + config.margin;
    let exit = loop {
        match server.child.try_wait() {
            Ok(Some(status)) => break Some((status, signal_at.elapsed())),
            _ if Instant::now() > deadline => break None,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let (mut answered, mut failed, mut in_flight) = (0, Vec::new(), 0);
    let mut not_started = std::collections::BTreeMap::<&str, usize>::new();
    while let Some(joined) = tasks.join_next().await {
        for (started, ended, outcome) in joined.expect("a client task") {
            match outcome {
                Attempt::Answered => {
                    answered += 1;
                    in_flight += usize::from(started <= signal_at && ended > signal_at);
                }
                Attempt::NotStarted(why) => *not_started.entry(why).or_default() += 1,
                Attempt::Failed(why) => failed.push(why),
            }
        }
    }
    let slow = match slow.await.expect("the slow request's task") {
        Ok((status, _, answer)) => match (status.as_u16(), verdict(&answer)) {
            (200, v) if !v.starts_with("answered") => Ok(format!("200 {v}")),
            (status, v) => Err(format!("{status} {v}")),
        },
        Err(e) => Err(e),
    };
    let drained = server.log.has_message("all connections drained");
    Outcome::new(
        failed.is_empty()
            && answered > 0
            && slow.is_ok()
            && exit.is_some_and(|(status, _)| status.success()),
        name,
        format!(
            "{connections} HTTP/2 connections × {streams} streams, SIGTERM after {} s: {answered} answered ({in_flight} of them in flight at the signal), {} refused at open ({}), {} failed{}; half a body sent at the signal, the rest 0.5 s later: {}; serve {} (drain limit {} s + {} s margin){}",
            seconds(config.sigterm_load),
            not_started.values().sum::<usize>(),
            not_started
                .iter()
                .map(|(why, n)| format!("{why}: {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            failed.len(),
            failed
                .first()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
            match &slow {
                Ok(answer) => answer.clone(),
                Err(e) => format!("FAILED {e}"),
            },
            match exit {
                Some((status, after)) => format!(
                    "exited with {} {} s after SIGTERM",
                    status
                        .code()
                        .map_or_else(|| status.to_string(), |c| c.to_string()),
                    seconds(after)
                ),
                None => "had not exited".into(),
            },
            seconds(config.drain),
            seconds(config.margin),
            if drained {
                ", logged all connections drained"
            } else {
                ""
            },
        ),
    )
}
