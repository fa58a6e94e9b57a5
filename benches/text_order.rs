//! The order the server's code is laid out in (`build.rs`):
//! `cargo bench --bench text_order --profile dist` rewrites
//! `link/text-order.txt`. Needs valgrind (Debian `valgrind`).
//!
//! Runs `upgrade-guard serve` under callgrind, cuts its profile once it
//! listens, then sends every review of the load bench's matrix, and its
//! 13.7 kB review, to /validate and /mutate over HTTP/2 and HTTP/1.1 and
//! stops it. The list is the binary's functions that ran once it
//! listened (serving, then stopping), the busiest first, then those only
//! startup ran. Its names
//! are the linker's, whose hashes carry cargo's metadata of each crate, so
//! it holds for builds like the one it was made from (`dist`, the same
//! dependencies); a function missing from it is laid out after the listed
//! ones.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tls_client::Client;
use common::{Scratch, certificates, free_port, sample};

const LIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/link/text-order.txt");
/// Of each review, to each endpoint, over each protocol: 3.2 MB on the
/// HTTP/2 connection, past its 1 MiB windows, so window updates run too.
const REQUESTS: usize = 8;

fn main() {
    // `cargo test --benches` runs benches without `--bench`: a debug
    // build's names would not be the shipped build's.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_upgrade-guard");
    if !bin.contains("/dist/") {
        eprintln!(
            "the list is made from the dist build: cargo bench --bench text_order --profile dist"
        );
        std::process::exit(2);
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("cargo bench --bench text_order needs valgrind: apt-get install -y valgrind");
        std::process::exit(2);
    }
    let dir = Scratch::new();
    certificates(&dir.0);
    let profile = dir.0.join("callgrind.out");
    let addr = free_port();
    let mut valgrind = Command::new("valgrind")
        .args(["--tool=callgrind", "--demangle=no", "--dump-instr=no"])
        .arg(format!("--callgrind-out-file={}", profile.display()))
        .arg(bin)
        .args(["serve", "--log-format", "json", "--addr", &addr.to_string()])
        .arg("--tls-cert")
        .arg(dir.0.join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.0.join("tls.key"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("valgrind");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "serve did not listen within 120 s"
        );
        assert!(
            valgrind.try_wait().expect("the server's state").is_none(),
            "serve exited before it listened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = valgrind.id().to_string();
    let dumped = Command::new("callgrind_control")
        .args(["--dump=startup", &pid])
        .stdout(Stdio::null())
        .status()
        .expect("callgrind_control");
    assert!(dumped.success(), "callgrind_control --dump: {dumped}");

    let ca = std::fs::read_to_string(dir.0.join("ca.crt")).expect("the CA");
    let mut reviews = sample::review_matrix();
    reviews.push(("13.7 kB".into(), sample::five_containers_compact()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        for alpn in ["h2", "http/1.1"] {
            let (mut client, _) =
                Client::connect_to(addr, "upgrade-guard.upgrade-guard.svc", &[&ca], alpn, None)
                    .await
                    .expect("a connection");
            for (name, body) in &reviews {
                for path in ["/validate", "/mutate"] {
                    for _ in 0..REQUESTS {
                        let (status, _, _) = client
                            .request("POST", path, "application/json", body.clone())
                            .await
                            .expect("an answer");
                        assert!(status.is_success(), "{name} {path} over {alpn}: {status}");
                    }
                }
            }
        }
    });
    // serve drains and exits, and callgrind writes the rest.
    // SAFETY: a signal to the child this process started and has not reaped.
    let stopped = unsafe { libc::kill(valgrind.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(stopped, 0, "SIGTERM to {pid}");
    let status = valgrind.wait().expect("serve's exit");
    assert!(status.success(), "serve under valgrind: {status}");

    let parts = parts(&dir.0);
    let (startup, serving) = match parts.as_slice() {
        [startup, serving] => (startup, serving),
        _ => panic!("callgrind wrote {} profiles, not 2", parts.len()),
    };
    let startup = functions_run(startup, bin);
    let serving = functions_run(serving, bin);
    // The busiest first; ties by name, so the same profile gives the same list.
    let busiest_first = |a: &(&String, &u64), b: &(&String, &u64)| b.1.cmp(a.1).then(a.0.cmp(b.0));
    let mut list: Vec<(&String, &u64)> = serving.iter().collect();
    list.sort_by(busiest_first);
    let mut only_startup: Vec<(&String, &u64)> = startup
        .iter()
        .filter(|(name, _)| !serving.contains_key(*name))
        .collect();
    only_startup.sort_by(busiest_first);
    let (served, started) = (list.len(), only_startup.len());
    assert!(
        served > 0 && started > 0,
        "no function of {bin} in the profile"
    );
    list.extend(only_startup);
    let text: String = list.iter().map(|(name, _)| format!("{name}\n")).collect();
    // Written only when it changed: a new list relinks the binary.
    if std::fs::read_to_string(LIST).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(LIST, text).expect("the list");
    }
    println!(
        "{LIST}: {served} functions that ran once it listened, then {started} that only startup ran"
    );
}

/// The profile's parts in the order callgrind wrote them.
fn parts(dir: &Path) -> Vec<PathBuf> {
    let mut parts: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .expect("the scratch directory")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?;
            if !name.starts_with("callgrind.out") {
                return None;
            }
            let text = std::fs::read_to_string(&path).ok()?;
            let part = text
                .lines()
                .find_map(|l| l.strip_prefix("part: "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            Some((part, path))
        })
        .collect();
    parts.sort();
    parts.into_iter().map(|(_, path)| path).collect()
}

/// The functions of `object` a callgrind profile ran, by linker name, and
/// the instructions each ran itself (its calls' costs left out).
///
/// The format names an object (`ob=`) and a function (`fn=`) in full the
/// first time and by `(id)` after; a cost line that follows `calls=` is
/// the call's, not the function's own.
fn functions_run(profile: &Path, object: &str) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(profile).expect("a callgrind profile");
    // Cost lines are read as `position instructions`.
    for header in ["positions: line", "events: Ir"] {
        assert!(
            text.lines().any(|l| l == header),
            "{}: no `{header}` (VALGRIND_OPTS or a .valgrindrc?)",
            profile.display()
        );
    }
    let object = std::fs::canonicalize(object).expect("the binary's path");
    let mut objects: HashMap<String, bool> = HashMap::new();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut costs: HashMap<String, u64> = HashMap::new();
    let mut in_object = false;
    let mut current: Option<String> = None;
    let mut after_call = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("ob=") {
            in_object = is_object(&mut objects, rest, &object);
        } else if let Some(rest) = line.strip_prefix("cob=") {
            // Objects share one table of names with callees' objects.
            is_object(&mut objects, rest, &object);
        } else if let Some(rest) = line.strip_prefix("fn=") {
            let (id, name) = compressed(rest);
            if let Some(name) = name {
                names.insert(id.to_string(), name.to_string());
            }
            current = in_object.then(|| id.to_string());
            if let Some(id) = &current {
                costs.entry(id.clone()).or_default();
            }
        } else if let Some(rest) = line.strip_prefix("cfn=") {
            // A callee's name is given in full where it is first called.
            if let (id, Some(name)) = compressed(rest) {
                names.insert(id.to_string(), name.to_string());
            }
        } else if line.starts_with("calls=") {
            after_call = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            let cost: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if let (Some(id), false) = (&current, after_call) {
                *costs.entry(id.clone()).or_default() += cost;
            }
            after_call = false;
        }
    }
    let mut functions: HashMap<String, u64> = HashMap::new();
    for (id, cost) in costs {
        let Some(name) = names.get(&id) else { continue };
        // Callgrind names a function's recursive calls `name'2`, code it
        // has no symbol for by its address, and what runs before `main`
        // `(below main)`: none of them a linker's name.
        let name = match name.rsplit_once('\'') {
            Some((name, depth)) if depth.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => name,
        };
        if !name.starts_with("0x") && !name.contains(' ') {
            *functions.entry(name.to_string()).or_default() += cost;
        }
    }
    functions
}

/// Whether an `ob=`/`cob=` field names `object`, remembering what a
/// name's first use says.
fn is_object(objects: &mut HashMap<String, bool>, field: &str, object: &Path) -> bool {
    match compressed(field) {
        (id, Some(path)) => {
            let ours = std::fs::canonicalize(path).is_ok_and(|p| p == object);
            objects.insert(id.to_string(), ours);
            ours
        }
        (id, None) => objects.get(id).copied().unwrap_or(false),
    }
}

/// `(id) name` or `(id)`.
fn compressed(field: &str) -> (&str, Option<&str>) {
    let field = field.trim();
    match field.strip_prefix('(').and_then(|f| f.split_once(')')) {
        Some((id, rest)) => {
            let rest = rest.trim();
            (id, (!rest.is_empty()).then_some(rest))
        }
        None => (field, Some(field)),
    }
}
