//! `upgrade-guard check` on large repositories: `cargo bench --bench check`.
//!
//! Writes old and new sets of N StatefulSets (the recorded shop/db object,
//! managed fields and all, as `kubectl get -o yaml` prints it), each set one
//! multi-document YAML file, then runs the release binary on them and
//! prints wall time and peak resident memory (from wait4's rusage) against
//! the input size. Also times the nested-YAML inputs that once took seconds.
//!
//! `CHECK_SIZES` (default `5000,10000`) sets N.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/apiserver/sts-update-set-image.json"
);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "--measure") {
        let (time, peak) = run(&args[2], &args[3..]);
        return println!("{} {peak}", time.as_secs_f64());
    }
    let sizes: Vec<usize> = std::env::var("CHECK_SIZES")
        .unwrap_or_else(|_| "5000,10000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("CHECK_SIZES: numbers"))
        .collect();
    let binary = env!("CARGO_BIN_EXE_upgrade-guard");
    let dir = std::env::temp_dir().join(format!("upgrade-guard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let review: serde_json::Value =
        serde_json::from_slice(&std::fs::read(SAMPLE).expect("the recorded sample")).expect("JSON");
    let old = &review["request"]["oldObject"];
    let new = &review["request"]["object"];

    println!(
        "{:<44} {:>10} {:>10} {:>12} {:>8}",
        "input", "bytes", "time", "peak RSS", "× input"
    );
    for n in sizes {
        let old_path = dir.join(format!("old-{n}.yaml"));
        let new_path = dir.join(format!("new-{n}.yaml"));
        std::fs::write(&old_path, many(old, n)).expect("write");
        std::fs::write(&new_path, many(new, n)).expect("write");
        let bytes = std::fs::metadata(&old_path).map_or(0, |m| m.len())
            + std::fs::metadata(&new_path).map_or(0, |m| m.len());
        let mut args = vec!["check".to_string(), "--policies".into()];
        args.push(concat!(env!("CARGO_MANIFEST_DIR"), "/policies").into());
        for (flag, path) in [("--old", &old_path), ("--new", &new_path)] {
            args.push(flag.into());
            args.push(path.display().to_string());
        }
        args.extend(["--output".into(), "json".into()]);
        let (time, peak) = measured(binary, &args);
        println!(
            "{:<44} {:>10} {:>9.2}s {:>9} MiB {:>7.1}×",
            format!("{n} StatefulSets, old + new"),
            bytes,
            time.as_secs_f64(),
            peak / 1024,
            (peak * 1024) as f64 / bytes as f64
        );
    }
    for (name, open, close) in [("[ nested", "[", "]"), ("{a: nested", "{a: ", "}")] {
        let path = dir.join("nested.yaml");
        let text = format!(
            "kind: ConfigMap\ndata: {}{}\n",
            open.repeat(100_000),
            close.repeat(100_000)
        );
        std::fs::write(&path, &text).expect("write");
        let old = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/manifests/db.yaml"
        );
        let args: Vec<String> = ["check", "--old", old, "--new"]
            .iter()
            .map(|s| s.to_string())
            .chain([path.display().to_string()])
            .collect();
        let (time, peak) = measured(binary, &args);
        println!(
            "{:<44} {:>10} {:>9.2}s {:>9} MiB",
            format!("{name} 100,000 levels (refused)"),
            text.len(),
            time.as_secs_f64(),
            peak / 1024
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// N copies of one object, named apart, as one multi-document YAML text.
fn many(object: &serde_json::Value, n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let mut o = object.clone();
        o["metadata"]["name"] = format!("db-{i}").into();
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&o).expect("YAML"));
    }
    out
}

/// [`run`] from a fresh, small process: a child spawned from this one would
/// inherit this process's own high-water mark in its rusage.
fn measured(binary: &str, args: &[String]) -> (Duration, u64) {
    let out = Command::new(std::env::current_exe().expect("this bench"))
        .arg("--measure")
        .arg(binary)
        .args(args)
        .output()
        .expect("the bench itself");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    let secs: f64 = fields.next().and_then(|f| f.parse().ok()).expect("seconds");
    let peak: u64 = fields.next().and_then(|f| f.parse().ok()).expect("KiB");
    (Duration::from_secs_f64(secs), peak)
}

/// Wall time and peak resident memory (KiB) of one run of the binary.
#[allow(clippy::zombie_processes, reason = "wait4 reaps it")]
fn run(binary: &str, args: &[String]) -> (Duration, u64) {
    let started = Instant::now();
    let child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary");
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into the two locals above.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    (started.elapsed(), usage.ru_maxrss as u64)
}
