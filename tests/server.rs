//! The webhook over a real socket with a real TLS client (rustls, HTTP/2 and
//! HTTP/1.1 as the API server speaks them), on reviews recorded from a real
//! API server.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Bytes;
use base64::Engine;
use common::tls_client::{Client, Reply, client_tls};
use common::*;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use prometheus_client::registry::Registry;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use upgrade_guard::certs;
use upgrade_guard::decide::{ClusterView, NoCluster, Snapshot};
use upgrade_guard::webhook::metrics::Metrics;
use upgrade_guard::webhook::server::{self, App, ConnectionLimits, Limits};
use upgrade_guard::webhook::tls::{self, CertStore};

struct Options {
    client_ca: Option<PathBuf>,
    cluster: Arc<dyn ClusterView + Send + Sync>,
    ready: bool,
    rbac: Option<upgrade_guard::webhook::rbac::Rbac>,
    events: Option<upgrade_guard::webhook::events::EventSink>,
    connections: ConnectionLimits,
    limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            client_ca: None,
            cluster: Arc::new(NoCluster),
            ready: true,
            rbac: None,
            events: None,
            connections: ConnectionLimits::default(),
            limits: Limits::default(),
        }
    }
}

struct Harness {
    addr: SocketAddr,
    ca: String,
    dir: TempDir,
    store: Arc<CertStore>,
    metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

fn fixed_now() -> jiff::Timestamp {
    now()
}

fn loopback_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

async fn start(options: Options) -> Harness {
    let dir = TempDir::new("server");
    let bundle = certs::generate(&loopback_names(), now(), 30).unwrap();
    std::fs::write(dir.join("tls.crt"), &bundle.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &bundle.key_pem).unwrap();
    let store = CertStore::from_files(&dir.join("tls.crt"), &dir.join("tls.key")).unwrap();
    let tls_config = tls::server_config(store.clone(), options.client_ca.as_deref()).unwrap();
    let mut registry = Registry::with_prefix("upgrade_guard");
    let metrics = Arc::new(Metrics::register(&mut registry));
    let app = Arc::new(App {
        policies: Arc::new(ArcSwap::from_pointee(policies())),
        cluster: options.cluster,
        metrics: metrics.clone(),
        registry: Arc::new(registry),
        ready: Arc::new(AtomicBool::new(options.ready)),
        clock: fixed_now,
        caller: Default::default(),
        rbac: options.rbac,
        events: options.events,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = server::router(app, options.limits);
    let done = tokio::spawn(server::serve(
        listener,
        Some(tokio_rustls::TlsAcceptor::from(tls_config)),
        server::per_core(),
        router,
        metrics.clone(),
        options.connections,
        async {
            let _ = stopped.await;
        },
    ));
    Harness {
        addr,
        ca: bundle.ca_pem,
        dir,
        store,
        metrics,
        stop: Some(stop),
        done,
    }
}

impl Harness {
    async fn client(&self, alpn: &'static str) -> Client {
        Client::connect(self.addr, &[&self.ca], alpn, None)
            .await
            .unwrap()
    }

    /// A TLS connection, the handshake done, no HTTP byte sent.
    async fn handshaken(&self, alpn: &'static str) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        TlsConnector::from(client_tls(&[&self.ca], alpn, None))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.done)
            .await
            .unwrap()
            .unwrap();
    }
}

fn sample_bytes(name: &str) -> Vec<u8> {
    std::fs::read(samples_dir().join(name)).unwrap()
}

fn response_of(body: &Bytes) -> Value {
    let review: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    review["response"].clone()
}

/// What `upgrade-guard review` prints for the same request.
fn cli_review(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_upgrade-guard"))
        .args(["review", "--now", NOW])
        .args(args)
        .current_dir(root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap().stdout
}

#[tokio::test]
async fn allow_refuse_and_mutate_over_http2_and_http1_match_review_byte_for_byte() {
    let server = start(Options::default()).await;
    for alpn in ["h2", "http/1.1"] {
        let mut client = server.client(alpn).await;
        for (sample, allowed) in [
            ("sts-update-set-image.json", true),
            ("sts-update-client-side-apply.json", false),
        ] {
            let body = sample_bytes(sample);
            let (status, content_type, reply) = client.post("/validate", body.clone()).await;
            assert_eq!(status, StatusCode::OK, "{alpn} {sample}");
            assert_eq!(content_type.as_deref(), Some("application/json"));
            assert_eq!(response_of(&reply)["allowed"], allowed, "{alpn} {sample}");
            assert_eq!(
                reply.as_ref(),
                cli_review(&[], &body).as_slice(),
                "{alpn} {sample}: same bytes as review"
            );
            let (_, _, mutated) = client.post("/mutate", body.clone()).await;
            assert_eq!(
                mutated.as_ref(),
                cli_review(&["--mutate"], &body).as_slice(),
                "{alpn} {sample} /mutate"
            );
        }
    }
    server.shutdown().await;
}

/// A body used as it arrived when it comes in one piece, joined when it
/// comes in several: the same answer either way, including pieces that
/// split a UTF-8 character and empty ones.
#[tokio::test]
async fn a_review_sent_in_pieces_is_answered_as_one_sent_whole() {
    let server = start(Options::default()).await;
    let mut body = sample_bytes("sts-update-client-side-apply.json");
    // A two-byte character, so that one cut falls inside it.
    let at = body.len() / 2;
    let text =
        String::from_utf8(body)
            .unwrap()
            .replacen("\"kubectl-patch\"", "\"kubectl-pätch\"", 1);
    body = text.into_bytes();
    let cut = body.iter().position(|&b| b == 0xc3).unwrap() + 1;
    let pieces = |body: &[u8]| {
        let (a, rest) = body.split_at(cut);
        let (b, c) = rest.split_at(at.max(cut + 1) - cut);
        vec![
            Bytes::new(),
            Bytes::copy_from_slice(a),
            Bytes::new(),
            Bytes::copy_from_slice(b),
            Bytes::copy_from_slice(c),
        ]
    };
    for alpn in ["h2", "http/1.1"] {
        let mut client = server.client(alpn).await;
        let (status, _, whole) = client.post("/validate", body.clone()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{alpn}: {}",
            String::from_utf8_lossy(&whole)
        );
        let (status, _, pieced) = client
            .post_streamed("/validate", pieces(&body))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{alpn}");
        assert_eq!(pieced, whole, "{alpn}: the same answer in pieces");
        assert_eq!(
            response_of(&pieced)["allowed"],
            false,
            "{alpn}: still refused"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_refusal_carries_403_and_its_text_in_status_message() {
    let server = start(Options::default()).await;
    let mut client = server.client("h2").await;
    let (_, _, reply) = client
        .post(
            "/validate",
            sample_bytes("sts-update-client-side-apply.json"),
        )
        .await;
    let response = response_of(&reply);
    assert_eq!(response["uid"], "8d93d30b-7447-4976-9e9f-45dbd4bf8e59");
    assert_eq!(response["status"]["code"], 403);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("1.7.0 → 1.9.0 skips 1.8.x")
    );
    assert_eq!(response["auditAnnotations"]["rule"], "skip-version");
    let (_, _, metrics) = client.get("/metrics").await;
    let text = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        text.contains("upgrade_guard_refusals_total{rule=\"skip-version\"} 1"),
        "{text}"
    );
    assert!(text.contains("upgrade_guard_admission_requests_total{endpoint=\"validate\",operation=\"UPDATE\",verdict=\"refused\"} 1"), "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn the_mutating_patch_applies_and_sets_the_partition() {
    let server = start(Options::default()).await;
    let mut client = server.client("h2").await;
    let (_, _, reply) = client
        .post("/mutate", sample_bytes("sts-update-set-image.json"))
        .await;
    let response = response_of(&reply);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut object = sample("sts-update-set-image.json")["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).unwrap();
    assert_eq!(
        object["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
        2
    );
    let record: Value = serde_json::from_str(
        object["metadata"]["annotations"]["upgradeguard.io/refresh"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["to"], "1.8.0");
    server.shutdown().await;
}

#[tokio::test]
async fn scale_and_dry_run_are_judged_as_the_api_server_sends_them() {
    let mut live = Snapshot::default();
    live.insert_workload(workload("generated/live-db-refreshing.json"));
    let server = start(Options {
        cluster: Arc::new(live),
        ..Options::default()
    })
    .await;
    let mut client = server.client("h2").await;
    let (_, _, reply) = client
        .post("/validate", sample_bytes("sts-scale-subresource.json"))
        .await;
    let response = response_of(&reply);
    assert_eq!(response["allowed"], false);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("scaling from 3 to 5 is refused")
    );

    let (_, _, dry) = client
        .post(
            "/validate",
            sample_bytes("sts-update-server-side-apply-dry-run.json"),
        )
        .await;
    assert_eq!(
        response_of(&dry)["auditAnnotations"]["rule"],
        "skip-version"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_a_json_error_and_the_server_keeps_serving() {
    let server = start(Options::default()).await;
    let good = sample_bytes("sts-update-set-image.json");
    let mut v1beta1: Value = serde_json::from_slice(&good).unwrap();
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    // (method, path, content type, body, status, the error says)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        Vec<u8>,
        StatusCode,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/validate",
            "application/json",
            b"{\"apiVersion\":".to_vec(),
            StatusCode::BAD_REQUEST,
            "EOF while parsing",
        ),
        (
            "POST",
            "/validate",
            "text/plain",
            good.clone(),
            StatusCode::BAD_REQUEST,
            "content-type must be application/json",
        ),
        (
            "POST",
            "/mutate",
            "application/json",
            v1beta1.to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
            "admission.k8s.io/v1beta1",
        ),
        (
            "POST",
            "/validate",
            "application/json",
            br#"{"apiVersion":"v1","kind":"Pod"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "is not supported",
        ),
        (
            "POST",
            "/validate",
            "application/json",
            br#"{"kind":"AdmissionReview"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "missing field `apiVersion`",
        ),
        (
            "POST",
            "/validate",
            "application/json",
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "the body is empty",
        ),
        (
            "POST",
            "/validate",
            "application/json",
            vec![b' '; 3 * 1024 * 1024 + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than 3145728 bytes",
        ),
        (
            "GET",
            "/nowhere",
            "text/plain",
            Vec::new(),
            StatusCode::NOT_FOUND,
            "no such endpoint",
        ),
    ];
    for alpn in ["h2", "http/1.1"] {
        let mut client = server.client(alpn).await;
        for (method, path, content_type, body, status, says) in &cases {
            let (got, reply_type, reply) = client
                .request(method, path, content_type, body.clone())
                .await
                .unwrap();
            assert_eq!(got, *status, "{alpn} {path} {says}");
            assert_eq!(
                reply_type.as_deref(),
                Some("application/json"),
                "{alpn} {says}"
            );
            let error: Value = serde_json::from_slice(&reply).unwrap();
            assert!(
                error["error"].as_str().unwrap().contains(says),
                "{alpn}: {error}"
            );
            if *status == StatusCode::PAYLOAD_TOO_LARGE && alpn == "http/1.1" {
                // That connection closes after the 413, as it says.
                assert!(client.is_closed().await);
                client = server.client(alpn).await;
            }
        }
        let (status, _, _) = client
            .request("GET", "/validate", "text/plain", Vec::new())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _, reply) = client.post("/validate", good.clone()).await;
        assert_eq!(status, StatusCode::OK, "still serving after bad input");
        assert_eq!(response_of(&reply)["allowed"], true);
    }
    server.shutdown().await;
}

/// Over HTTP/2 a stream reset while the client still sends made curl drop
/// the 413: the rest of the body is read and discarded instead, and the same
/// connection goes on serving. An HTTP/1.1 connection closes once the rest is
/// read (it cannot carry another request before), so each 413 there is on a
/// connection of its own. Every rejection is counted.
#[tokio::test]
async fn a_body_far_over_the_limit_gets_the_413_over_both_protocols() {
    let server = start(Options::default()).await;
    let good = sample_bytes("sts-update-set-image.json");
    let ten_mib = vec![b' '; 10 * 1024 * 1024];
    let chunks = || vec![Bytes::from(vec![b' '; 1024 * 1024]); 10];
    let expect_413 = |alpn: &str, (status, content_type, reply): Reply| {
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{alpn}");
        assert_eq!(content_type.as_deref(), Some("application/json"));
        assert_eq!(
            serde_json::from_slice::<Value>(&reply).unwrap(),
            json!({"error": "the request body is larger than 3145728 bytes"})
        );
    };

    let mut client = server.client("h2").await;
    expect_413("h2", client.post("/validate", ten_mib.clone()).await);
    expect_413(
        "h2",
        client.post_streamed("/validate", chunks()).await.unwrap(),
    );
    let (status, _, reply) = client.post("/validate", good.clone()).await;
    assert_eq!(status, StatusCode::OK, "h2: the connection still serves");
    assert_eq!(response_of(&reply)["allowed"], true);

    let mut declared = server.client("http/1.1").await;
    expect_413(
        "http/1.1",
        declared.post("/validate", ten_mib.clone()).await,
    );
    assert!(declared.is_closed().await, "Connection: close after a 413");
    let mut streamed = server.client("http/1.1").await;
    let reply = streamed.post_streamed("/validate", chunks()).await.unwrap();
    expect_413("http/1.1", reply);
    assert!(streamed.is_closed().await, "Connection: close after a 413");
    let (status, _, reply) = server
        .client("http/1.1")
        .await
        .post("/validate", good)
        .await;
    assert_eq!(status, StatusCode::OK, "http/1.1: a new connection serves");
    assert_eq!(response_of(&reply)["allowed"], true);
    assert!(!client.is_closed().await, "h2 stays open");

    let (_, _, metrics) = server.client("h2").await.get("/metrics").await;
    let text = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        text.contains("upgrade_guard_rejected_requests_total{reason=\"too_large\"} 4\n"),
        "{text}"
    );
    server.shutdown().await;
}

/// A review whose body stops coming is answered 408 once the request's
/// time is up, and a method other than POST 405 with `Allow: POST`; each
/// is counted by why, and the connection's server goes on serving.
#[tokio::test]
async fn a_body_that_stops_coming_gets_the_408_and_a_get_the_405() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = Limits {
        request: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = start(Options {
        limits,
        ..Options::default()
    })
    .await;
    let body = sample_bytes("sts-update-set-image.json");
    let half = Bytes::copy_from_slice(&body[..body.len() / 2]);

    // HTTP/2, as the API server calls: half the body, then nothing.
    let mut client = server.client("h2").await;
    let (send, chunks) = tokio::sync::mpsc::channel(1);
    send.send(half.clone()).await.unwrap();
    let started = std::time::Instant::now();
    let (status, _, _) = client
        .post_channel("/validate", body.len(), chunks)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert!(started.elapsed() >= Duration::from_millis(250));
    drop(send);

    // HTTP/1.1, with the query the API server adds.
    let mut stream = server.handshaken("http/1.1").await;
    let head = format!(
        "POST /mutate?timeout=10s HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&half).await.unwrap();
    stream.flush().await.unwrap();
    let mut reply = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut reply))
        .await
        .expect("an answer before the body ends")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]).to_string();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");

    let mut stream = server.handshaken("http/1.1").await;
    stream
        .write_all(b"GET /validate HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reply = [0u8; 512];
    let n = stream.read(&mut reply).await.unwrap();
    let head = String::from_utf8_lossy(&reply[..n]).to_lowercase();
    assert!(head.starts_with("http/1.1 405"), "{head}");
    assert!(head.contains("\r\nallow: post\r\n"), "{head}");
    let (status, _, _) = client.get("/mutate").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    let (status, _, reply) = client.post("/validate", body).await;
    assert_eq!(status, StatusCode::OK, "still serving");
    assert_eq!(response_of(&reply)["allowed"], true);
    let (_, _, metrics) = client.get("/metrics").await;
    let text = String::from_utf8(metrics.to_vec()).unwrap();
    for counted in [
        "upgrade_guard_rejected_requests_total{reason=\"timeout\"} 2\n",
        "upgrade_guard_rejected_requests_total{reason=\"method_not_allowed\"} 2\n",
    ] {
        assert!(text.contains(counted), "{counted}: {text}");
    }
    server.shutdown().await;
}

/// Bodies in memory are bounded: with room for one, a second request waits
/// until the first is answered.
#[tokio::test]
async fn bodies_held_at_once_are_bounded() {
    let limits = Limits {
        body_bytes: 64 * 1024,
        bodies_in_memory: 64 * 1024,
        ..Limits::default()
    };
    let server = start(Options {
        limits,
        ..Options::default()
    })
    .await;
    let good = sample_bytes("sts-update-set-image.json");
    // The first request declares the whole budget, sends half and stalls.
    let (send, stalled) = tokio::sync::mpsc::channel::<Bytes>(1);
    let mut first = server.client("h2").await;
    let first =
        tokio::spawn(async move { first.post_channel("/validate", 64 * 1024, stalled).await });
    send.send(Bytes::from(vec![b' '; 32 * 1024])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = server.client("h2").await;
    let second = tokio::spawn(async move { second.post("/validate", good).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "no room while the first holds it all"
    );
    send.send(Bytes::from(vec![b' '; 32 * 1024])).await.unwrap();
    drop(send);
    let (status, _, reply) = first.await.unwrap().unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply,
        Bytes::from_static(b"{\"error\":\"the body is empty\"}")
    );
    let (status, _, reply) = second.await.unwrap();
    assert_eq!(status, StatusCode::OK, "served once the first is answered");
    assert_eq!(response_of(&reply)["allowed"], true);
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_answer_the_format_the_client_asks_for() {
    let server = start(Options::default()).await;
    let mut client = server.client("h2").await;
    client
        .post(
            "/validate",
            sample_bytes("sts-update-server-side-apply-dry-run.json"),
        )
        .await;
    // What Prometheus sends.
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (status, content_type, body) = client.get_accepting("/metrics", prometheus).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        content_type.as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let open = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        open.ends_with("# EOF\n") && open.contains("# TYPE upgrade_guard_refusals counter\n"),
        "{open}"
    );
    let (_, content_type, body) = client.get_accepting("/metrics", "*/*").await;
    assert_eq!(
        content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(!text.contains("# EOF"), "{text}");
    assert!(text.contains("# TYPE upgrade_guard_refusals_total counter\nupgrade_guard_refusals_total{rule=\"skip-version\"} 1\n"), "{text}");
    server.shutdown().await;
}

fn short_limits(max: usize) -> ConnectionLimits {
    ConnectionLimits {
        max,
        first_request: Duration::from_millis(300),
        idle: Duration::from_millis(600),
        ping_every: Duration::from_secs(30),
    }
}

/// Reads until the server closes the connection; how long that took.
async fn closed_within(mut stream: impl tokio::io::AsyncRead + Unpin, limit: Duration) -> Duration {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    tokio::time::timeout(limit, async {
        while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    })
    .await
    .expect("the server closed the connection");
    started.elapsed()
}

/// A request the client gave up on (its HTTP/2 stream reset while the
/// request waited for room for its body) no longer counts as in flight:
/// its connection, idle after it, is closed.
#[tokio::test]
async fn a_stream_the_client_reset_leaves_its_connection_idle() {
    let server = start(Options {
        connections: short_limits(100),
        limits: Limits {
            request: Duration::from_secs(60),
            body_bytes: 64 * 1024,
            bodies_in_memory: 64 * 1024,
            ..Limits::default()
        },
        ..Options::default()
    })
    .await;
    let body = sample_bytes("sts-update-set-image.json");
    let half = Bytes::copy_from_slice(&body[..body.len() / 2]);
    // The first holds all the room for bodies, its body half sent.
    let mut holder = server.client("h2").await;
    let (send, chunks) = tokio::sync::mpsc::channel(1);
    send.send(half.clone()).await.unwrap();
    let holding =
        tokio::spawn(async move { holder.post_channel("/validate", 64 * 1024, chunks).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The second waits for room, and is given up.
    let mut client = server.client("h2").await;
    let (_waiting, chunks) = tokio::sync::mpsc::channel(1);
    let given_up = tokio::time::timeout(
        Duration::from_millis(200),
        client.post_channel("/validate", body.len(), chunks),
    )
    .await;
    assert!(given_up.is_err(), "no answer without room for the body");
    tokio::time::timeout(Duration::from_secs(5), async {
        while !client.is_closed().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the server closed the idle connection");
    drop(send);
    holding.abort();
    server.shutdown().await;
}

/// Connections that do nothing are closed: a TLS connection that sends no
/// request, and an HTTP/2 connection idle after its requests.
#[tokio::test]
async fn connections_that_do_nothing_are_closed() {
    let server = start(Options {
        connections: short_limits(100),
        ..Options::default()
    })
    .await;
    // TLS done, no HTTP byte.
    let tls = server.handshaken("h2").await;
    let took = closed_within(tls, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(250), "{took:?}");

    // HTTP/2, one request, then idle: the connection goes.
    let mut client = server.client("h2").await;
    assert_eq!(client.get("/healthz").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        client
            .request("GET", "/healthz", "text/plain", Vec::new())
            .await
            .is_err()
    );
    server.shutdown().await;
}

/// A connection that has sent no request is held as an idle one while
/// the listener has room (a Go client keeps a connection it dialed but did
/// not need in its pool, and uses it later), and closed after the
/// first-request limit once half the cap is taken.
#[tokio::test]
async fn a_connection_without_a_request_is_closed_early_only_when_places_run_short() {
    use tokio::io::AsyncReadExt;
    let server = start(Options {
        connections: ConnectionLimits {
            first_request: Duration::from_millis(300),
            idle: Duration::from_secs(30),
            ..short_limits(4)
        },
        ..Options::default()
    })
    .await;
    let mut first = server.handshaken("http/1.1").await;
    // Room to spare: still open well past the first-request limit.
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(1500), first.read(&mut buf)).await;
    assert!(read.is_err(), "closed with room to spare: {read:?}");
    // Half the cap taken: it goes (and once it has, the places no longer
    // run short).
    let (second, third) = (
        server.handshaken("http/1.1").await,
        server.handshaken("http/1.1").await,
    );
    closed_within(first, Duration::from_secs(5)).await;
    drop((second, third));
    // And a client that does send a request is served.
    let mut client = server.client("http/1.1").await;
    assert_eq!(client.get("/healthz").await.0, StatusCode::OK);
    server.shutdown().await;
}

/// Above the cap a connection gets one 503 and is closed; the ones within
/// it are served.
#[tokio::test]
async fn connections_over_the_cap_get_a_503() {
    let server = start(Options {
        connections: ConnectionLimits {
            idle: Duration::from_secs(30),
            first_request: Duration::from_secs(30),
            ..short_limits(2)
        },
        ..Options::default()
    })
    .await;
    let mut first = server.client("h2").await;
    let mut second = server.client("http/1.1").await;
    assert_eq!(first.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(second.get("/healthz").await.0, StatusCode::OK);
    let mut third = server.client("http/1.1").await;
    let (status, _, body) = third.get("/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"error": "too many connections; try again"})
    );
    assert_eq!(server.metrics.connections_refused.get(), 1);
    drop(second);
    // A freed slot serves again.
    let mut fourth = None;
    for _ in 0..50 {
        let mut c = server.client("h2").await;
        if c.get("/healthz").await.0 == StatusCode::OK {
            fourth = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fourth.is_some(), "a freed slot is reused");
    assert_eq!(first.get("/healthz").await.0, StatusCode::OK);
    server.shutdown().await;
}

/// The plain probe port has the same bounds: slow headers are cut off.
#[tokio::test]
async fn the_probe_port_closes_a_connection_that_never_finishes_its_headers() {
    use tokio::io::AsyncWriteExt;
    let mut registry = Registry::with_prefix("upgrade_guard");
    let metrics = Arc::new(Metrics::register(&mut registry));
    let app = Arc::new(App {
        policies: Arc::new(ArcSwap::from_pointee(policies())),
        cluster: Arc::new(NoCluster),
        metrics: metrics.clone(),
        registry: Arc::new(registry),
        ready: Arc::new(AtomicBool::new(true)),
        clock: fixed_now,
        caller: Default::default(),
        rbac: None,
        events: None,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        listener,
        None,
        0,
        server::probes(app),
        metrics,
        short_limits(10),
        std::future::pending(),
    ));
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = closed_within(slow, Duration::from_secs(6)).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn probes_say_healthy_and_ready_only_once_ready() {
    let server = start(Options {
        ready: false,
        ..Options::default()
    })
    .await;
    let mut client = server.client("http/1.1").await;
    assert_eq!(client.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(
        client.get("/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    server.shutdown().await;
    let ready = start(Options::default()).await;
    assert_eq!(
        ready.client("http/1.1").await.get("/readyz").await.0,
        StatusCode::OK
    );
    ready.shutdown().await;
}

/// A client CA and a certificate from it that can authenticate a client.
fn client_identity(name: &str) -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(vec![name.to_string()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn mtls_serves_only_clients_with_a_certificate_from_the_client_ca() {
    let (client_ca, cert, key) = client_identity("kube-apiserver");
    let (_, stranger_cert, stranger_key) = client_identity("stranger");
    let dir = TempDir::new("server");
    std::fs::write(dir.join("client-ca.crt"), &client_ca).unwrap();
    let server = start(Options {
        client_ca: Some(dir.join("client-ca.crt")),
        ..Options::default()
    })
    .await;
    let mut trusted = Client::connect(server.addr, &[&server.ca], "h2", Some((&cert, &key)))
        .await
        .unwrap();
    let (status, _, _) = trusted
        .post("/validate", sample_bytes("sts-update-set-image.json"))
        .await;
    assert_eq!(status, StatusCode::OK);

    for identity in [None, Some((stranger_cert.as_str(), stranger_key.as_str()))] {
        // TLS 1.3 reports a refused client certificate on the first read.
        let outcome = match Client::connect(server.addr, &[&server.ca], "h2", identity).await {
            Err(e) => Err(e),
            Ok(mut c) => c
                .request("GET", "/healthz", "text/plain", Vec::new())
                .await
                .map(|_| ()),
        };
        assert!(
            outcome.is_err(),
            "a client without a trusted certificate was served"
        );
    }
    // Counted by the connection tasks: give a loaded machine time.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.metrics.tls_handshake_failures.get() < 2 && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server.metrics.tls_handshake_failures.get() >= 2,
        "handshake failures are counted"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_picked_up_mid_traffic_with_no_failed_request() {
    let server = start(Options::default()).await;
    tokio::spawn(
        server
            .store
            .clone()
            .watch(Duration::from_millis(20), |_| {}, || {}),
    );
    let rotated = certs::generate(&loopback_names(), now(), 60).unwrap();
    let roots: [Arc<str>; 2] = [server.ca.as_str().into(), rotated.ca_pem.as_str().into()];
    let new_der = CertificateDer::from_pem_slice(rotated.cert_pem.as_bytes())
        .unwrap()
        .to_vec();
    let body = sample_bytes("sts-update-set-image.json");
    let addr = server.addr;

    // Traffic: a long-lived HTTP/2 connection and fresh handshakes, nonstop.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, roots, body, new_der) =
            (stop.clone(), roots.clone(), body.clone(), new_der.clone());
        tokio::spawn(async move {
            let roots: Vec<&str> = roots.iter().map(|r| &**r).collect();
            let mut kept = Client::connect(addr, &roots, "h2", None).await.unwrap();
            let (mut sent, mut failed, mut new_seen) = (0, Vec::new(), 0);
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                round += 1;
                let alpn = if round % 2 == 0 { "h2" } else { "http/1.1" };
                match Client::connect_seeing(addr, &roots, alpn, None).await {
                    Ok((mut fresh, presented)) => {
                        new_seen += usize::from(presented == new_der);
                        for client in [&mut fresh, &mut kept] {
                            sent += 1;
                            match client
                                .request("POST", "/validate", "application/json", body.clone())
                                .await
                            {
                                Ok((StatusCode::OK, _, _)) => {}
                                other => failed.push(format!("{other:?}")),
                            }
                        }
                    }
                    Err(e) => failed.push(e),
                }
            }
            (sent, failed, new_seen)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // As a Secret update lands: the files change under the running server.
    std::fs::write(server.dir.join("tls.key"), &rotated.key_pem).unwrap();
    std::fs::write(server.dir.join("tls.crt"), &rotated.cert_pem).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, presented) =
            Client::connect_seeing(addr, &[&server.ca, &rotated.ca_pem], "h2", None)
                .await
                .unwrap();
        if presented == new_der {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (sent, failed, new_seen) = traffic.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(sent >= 4, "traffic ran throughout ({sent} requests)");
    assert!(
        new_seen > 0,
        "handshakes after the rotation got the new certificate"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_half_written_rotation_keeps_the_old_pair() {
    let server = start(Options::default()).await;
    let failures = server.metrics.certificate_reload_failures.clone();
    let watching = tokio::spawn(server.store.clone().watch(
        Duration::from_millis(10),
        |_| {},
        move || {
            failures.inc();
        },
    ));
    let rotated = certs::generate(&loopback_names(), now(), 60).unwrap();
    // The certificate lands before its key: they do not match yet.
    std::fs::write(server.dir.join("tls.crt"), &rotated.cert_pem).unwrap();
    assert!(server.store.reload().is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    watching.abort();
    let (_, _, metrics) = server.client("h2").await.get("/metrics").await;
    let text = String::from_utf8(metrics.to_vec()).unwrap();
    let failed: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("upgrade_guard_certificate_reload_failures_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(failed >= 1, "every failed reload is counted: {text}");
    let mut client = server.client("h2").await;
    assert_eq!(
        client.get("/healthz").await.0,
        StatusCode::OK,
        "still served with the old pair"
    );
    std::fs::write(server.dir.join("tls.key"), &rotated.key_pem).unwrap();
    assert!(server.store.reload().unwrap());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_all_succeed() {
    let server = start(Options::default()).await;
    let body = Bytes::from(sample_bytes("sts-update-client-side-apply.json"));
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(
            server
                .client(if i % 4 == 0 { "http/1.1" } else { "h2" })
                .await,
        );
    }
    // HTTP/2 connections multiplex; each HTTP/1.1 one takes its turn.
    let shared: Vec<_> = clients
        .into_iter()
        .map(|c| Arc::new(tokio::sync::Mutex::new(c)))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let client = shared[i % shared.len()].clone();
        let body = body.clone();
        tasks.spawn(async move {
            let mut guard = client.lock().await;
            let result = match &mut *guard {
                Client::H2(send) => {
                    let mut send = send.clone();
                    drop(guard);
                    let request = Request::post("https://localhost/validate")
                        .header("content-type", "application/json")
                        .body(http_body_util::BodyExt::boxed(Full::new(body)))
                        .unwrap();
                    send.ready().await.map_err(|e| e.to_string())?;
                    send.send_request(request)
                        .await
                        .map_err(|e| e.to_string())?
                        .status()
                }
                h1 => {
                    h1.request("POST", "/validate", "application/json", body.to_vec())
                        .await?
                        .0
                }
            };
            Ok::<_, String>(result)
        });
    }
    let mut ok = 0;
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.unwrap(), Ok(StatusCode::OK));
        ok += 1;
    }
    assert_eq!(ok, 1000);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_a_request_in_flight() {
    let server = start(Options::default()).await;
    let mut stream = server.handshaken("http/1.1").await;
    let body = sample_bytes("sts-update-set-image.json");
    let head = format!(
        "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let Harness {
        stop, done, addr, ..
    } = server;
    let _ = stop.unwrap().send(());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no new connections once shutting down"
    );
    stream.write_all(&body[body.len() / 2..]).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.contains("\"allowed\":true"));
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_review_wrapping_kubectl_set_image_output_is_judged_over_tls() {
    // The recorded envelope, carrying `kubectl set image --local -o yaml` output.
    let mut review = sample("sts-update-set-image.json");
    review["request"]["oldObject"] = value("generated/live-db-1.8.0.json");
    review["request"]["object"] = value("generated/live-db-1.9.0.yaml");
    let server = start(Options::default()).await;
    let mut client = server.client("h2").await;
    let (status, _, reply) = client
        .post("/validate", review.to_string().into_bytes())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        response_of(&reply)["allowed"],
        true,
        "1.8.0 → 1.9.0 is the next minor"
    );
    let (_, _, reply) = client
        .post("/mutate", review.to_string().into_bytes())
        .await;
    assert_eq!(response_of(&reply)["patchType"], "JSONPatch");
    server.shutdown().await;
}

#[tokio::test]
async fn an_override_is_honoured_only_when_rbac_says_the_requesting_user_may_force() {
    use http::{Request, Response};
    use kube::client::Body;
    // A forced 1.7.0 → 1.9.0, sent by the recorded user.
    let mut review = sample("sts-update-set-image.json");
    review["request"]["oldObject"] = value("manifests/db.yaml");
    review["request"]["object"] = value("generated/db-1.9.0-forced.yaml");
    for allowed in [true, false] {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let rbac = upgrade_guard::webhook::rbac::Rbac::new(kube::Client::new(service, "default"));
        let api = tokio::spawn(async move {
            let (request, respond) = handle.next_request().await.unwrap();
            assert_eq!(
                request.uri().path(),
                "/apis/authorization.k8s.io/v1/subjectaccessreviews"
            );
            let body = http_body_util::BodyExt::collect(request.into_body())
                .await
                .unwrap()
                .to_bytes();
            let sar: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(sar["spec"]["user"], "cluster-admin");
            assert_eq!(sar["spec"]["resourceAttributes"]["verb"], "force");
            assert_eq!(sar["spec"]["resourceAttributes"]["namespace"], "shop");
            let reply = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {}, "status": {"allowed": allowed}});
            respond.send_response(
                Response::builder()
                    .status(201)
                    .body(Body::from(reply.to_string().into_bytes()))
                    .unwrap(),
            );
            // The plain approval that follows asks nothing.
            let extra =
                tokio::time::timeout(Duration::from_millis(500), handle.next_request()).await;
            assert!(extra.is_err(), "only the forced request asks RBAC");
        });
        let server = start(Options {
            rbac: Some(rbac),
            ..Options::default()
        })
        .await;
        let mut client = server.client("h2").await;
        let (_, _, reply) = client
            .post("/validate", review.to_string().into_bytes())
            .await;
        let response = response_of(&reply);
        assert_eq!(response["allowed"], allowed, "{response}");
        if !allowed {
            let message = response["status"]["message"].as_str().unwrap();
            assert!(message.contains("cluster-admin may not force"), "{message}");
        }
        let plain = {
            let mut r = review.clone();
            r["request"]["object"] = value("generated/db-1.8.0.yaml");
            r
        };
        let (_, _, reply) = client
            .post("/validate", plain.to_string().into_bytes())
            .await;
        assert_eq!(response_of(&reply)["allowed"], true);
        api.await.unwrap();
        server.shutdown().await;
    }
}

/// A server whose Events go to a mocked API server, and the mock's handle.
async fn with_event_sink() -> (
    Harness,
    tower_test::mock::Handle<http::Request<kube::client::Body>, http::Response<kube::client::Body>>,
) {
    let (service, handle) = tower_test::mock::pair();
    let sink = upgrade_guard::webhook::events::start(
        kube::Client::new(service, "default"),
        "upgrade-guard-0",
        prometheus_client::metrics::counter::Counter::default(),
    );
    let server = start(Options {
        events: Some(sink),
        ..Options::default()
    })
    .await;
    (server, handle)
}

/// Over TLS: a refused dry-run (Argo CD's diff) writes no Event; the same
/// request for real, sent to /mutate and /validate as the API server does,
/// writes exactly one.
#[tokio::test]
async fn a_refusal_writes_one_event_and_a_dry_run_none() {
    use common::api_server::{call, scenario};
    let (server, handle) = with_event_sink().await;
    let mut client = server.client("h2").await;
    let refused = sample("sts-update-client-side-apply.json");
    let mut dry = refused.clone();
    dry["request"]["dryRun"] = json!(true);
    for endpoint in ["/mutate", "/validate"] {
        let (_, _, reply) = client.post(endpoint, dry.to_string().into_bytes()).await;
        if endpoint == "/validate" {
            assert_eq!(response_of(&reply)["allowed"], false);
        }
    }
    let api = tokio::spawn(scenario(handle, vec![]));
    api.await.unwrap();

    let (server, handle) = with_event_sink().await;
    let mut client = server.client("h2").await;
    let api = tokio::spawn(scenario(
        handle,
        vec![call(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/shop/events?",
            201,
            json!({}),
        )],
    ));
    for endpoint in ["/mutate", "/validate"] {
        client
            .post(endpoint, refused.to_string().into_bytes())
            .await;
    }
    api.await.unwrap();
}
