//! One review from bytes, over and over, for a profiler or an instruction
//! count: `cargo bench --bench review_loop -- BODY N`, where BODY is one of
//! the load bench's reviews (run without arguments for their names).
//! Instructions a review, the same on every run of a build (what the time
//! of one review, on a shared 2-core machine, is not):
//!
//! ```text
//! cargo bench --bench review_loop --config \
//!   'target.x86_64-unknown-linux-gnu.runner="valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null"' \
//!   -- "sts 10c 20env mf governed" 1200
//! ```
//!
//! less the same with 200, over 1000. `-- BODY body` writes the body
//! itself to stdout, for h2load to send to a running server.

use std::hint::black_box;
use std::io::Write;

use upgrade_guard::decide::NoCluster;
use upgrade_guard::policy::PolicySet;
use upgrade_guard::webhook::{Caller, Endpoint, review};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/sample.rs"]
mod sample;

/// The load bench's matrix, the 13.7 kB review and the recorded one.
fn bodies() -> Vec<(String, Vec<u8>)> {
    let mut bodies = sample::review_matrix();
    bodies.push(("13.7 kB".to_string(), sample::five_containers_compact()));
    bodies.push(("recorded".to_string(), sample::recorded()));
    bodies
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let bodies = bodies();
    let named = |name: &str| match bodies.iter().find(|(b, _)| b == name) {
        Some((_, body)) => body,
        None => panic!("no body named {name:?}"),
    };
    // The body itself, for a client such as h2load to send.
    if let (Some(name), Some("body")) = (args.first(), args.get(1).map(String::as_str)) {
        std::io::stdout()
            .write_all(named(name))
            .expect("the body written");
        return;
    }
    let (Some(name), Some(Ok(n))) = (args.first(), args.get(1).map(|n| n.parse::<usize>())) else {
        let names: Vec<&str> = bodies.iter().map(|(name, _)| name.as_str()).collect();
        println!(
            "review_loop BODY N | review_loop BODY body, BODY one of: {}",
            names.join(", ")
        );
        return;
    };
    let body = named(name);
    let policies = PolicySet::parse(include_str!("../policies/semver-db.yaml"), "bench")
        .and_then(PolicySet::new)
        .expect("the example policy");
    let now: jiff::Timestamp = "2026-11-21T20:00:00Z".parse().expect("a time");
    let started = std::time::Instant::now();
    for _ in 0..n {
        let answer = review(
            black_box(body),
            Endpoint::Validate,
            &policies,
            &NoCluster,
            now,
            &Caller::default(),
        );
        black_box(answer.expect("a review"));
    }
    let each = started.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64;
    println!("{name} ({} B): {n} reviews, {each:.2} µs each", body.len());
}
