//! The decision core on a realistic review: a StatefulSet of 5 containers
//! and 20 env vars, with 20 policies loaded (the governing one last); and a
//! whole review from bytes, on that review and on the recorded one, the
//! quick way (a template seen before, and one not seen lately) and in
//! full; and how many allocations one review makes.
//! `cargo bench --bench decide`

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;
use upgrade_guard::decide::{Change, NoCluster, decide};
use upgrade_guard::policy::PolicySet;
use upgrade_guard::webhook::{Caller, Endpoint, review, review_in_full};
use upgrade_guard::workload::Workload;

// The server's allocator, so `review` costs here what it costs there (a
// relaxed load more per call); counting only while `allocations` asks it to.
#[global_allocator]
static ALLOCATOR: Counting = Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

struct Counting;

impl Counting {
    fn count(size: usize) {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            ALLOCATED.fetch_add(size, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is passed on to mimalloc unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count(new_size.saturating_sub(layout.size()));
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
}

/// How many allocations (and reallocations) `f` makes, and how many bytes
/// they ask for in all (a reallocation counts what it adds).
fn allocations<T>(f: impl FnOnce() -> T) -> (usize, usize) {
    ALLOCATIONS.store(0, Ordering::Relaxed);
    ALLOCATED.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    drop(black_box(f()));
    COUNTING.store(false, Ordering::Relaxed);
    (
        ALLOCATIONS.load(Ordering::Relaxed),
        ALLOCATED.load(Ordering::Relaxed),
    )
}

#[path = "common/sample.rs"]
mod sample;
use sample::five_containers as realistic;

const POLICIES: &str = include_str!("../policies/semver-db.yaml");

fn policies() -> PolicySet {
    // 19 policies that select other workloads, then the one that governs db.
    let mut all = Vec::new();
    for i in 0..19 {
        let text = format!(
            "apiVersion: upgradeguard.io/v1alpha1\nkind: UpgradePolicy\nmetadata: {{name: other-{i:02}}}\nspec:\n  selector:\n    matchLabels: {{app.kubernetes.io/name: svc-{i}}}\n    matchExpressions: [{{key: tier, operator: In, values: [a, b]}}]\n  releases: [1.0.0, 1.1.0, 1.2.0, 1.3.0]\n  matrix: [{{from: '1.0.*', to: '1.2.*', allow: false}}]\n"
        );
        all.extend(PolicySet::parse(&text, "bench").unwrap());
    }
    all.extend(PolicySet::parse(&POLICIES.replace("semver-db", "zz-semver-db"), "bench").unwrap());
    PolicySet::new(all).unwrap()
}

fn change(review: &Value) -> Change {
    let workload = |v: &Value| Workload::from_value(v.clone()).unwrap().unwrap();
    Change::update(
        workload(&review["request"]["oldObject"]),
        workload(&review["request"]["object"]),
    )
}

fn bench(c: &mut Criterion) {
    let policies = policies();
    let now: jiff::Timestamp = "2026-11-21T20:00:00Z".parse().unwrap();
    let start = realistic("registry.example.com/shop/db:1.8.0");
    let skip = realistic("registry.example.com/shop/db:1.9.0");
    let (start_change, skip_change) = (change(&start), change(&skip));
    assert!(decide(&start_change, &policies, &NoCluster, now).allowed);
    assert!(!decide(&skip_change, &policies, &NoCluster, now).allowed);

    c.bench_function("decide/refresh starts (patch)", |b| {
        b.iter(|| decide(black_box(&start_change), &policies, &NoCluster, now))
    });
    c.bench_function("decide/skip refused", |b| {
        b.iter(|| decide(black_box(&skip_change), &policies, &NoCluster, now))
    });
    // The 5-container review, the recorded one as the API server sent it,
    // and four of the load bench's matrix.
    let bodies = [
        ("5 containers", sample::compact(&start)),
        ("recorded", sample::recorded()),
        (
            "5 containers x 20 env",
            sample::compact(&sample::matrix_review(5, 20, true, true)),
        ),
        (
            "5 containers x 20 env, keys sorted",
            sample::keys_sorted(&sample::matrix_review(5, 20, true, true)),
        ),
        (
            "ungoverned",
            sample::compact(&sample::matrix_review(5, 20, true, false)),
        ),
        (
            "pod CREATE, no claim",
            sample::compact(&sample::pod_create(false)),
        ),
    ];
    let at = |endpoint: Endpoint, body: &[u8]| {
        review(
            body,
            endpoint,
            &policies,
            &NoCluster,
            now,
            &Caller::default(),
        )
        .unwrap()
    };
    for (name, body) in &bodies {
        // Once before counting: the first review of a text checks it.
        drop(at(Endpoint::Validate, body));
        let (count, bytes) = allocations(|| at(Endpoint::Validate, body));
        println!("review/validate from bytes, {name}: {count} allocations, {bytes} bytes");
        for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
            let id = format!(
                "review/{} from bytes, {name} ({} B)",
                endpoint.as_str(),
                body.len()
            );
            c.bench_function(&id, |b| b.iter(|| at(endpoint, black_box(body))));
        }
        // A template this thread has not checked lately (32 bodies in turn,
        // one env value apart, past the 16 it remembers): the check runs,
        // and the text is remembered.
        if *name == "5 containers" {
            let unseen: Vec<Vec<u8>> = (0..32)
                .map(|i| {
                    let mut other = start.clone();
                    for object in ["object", "oldObject"] {
                        other["request"][object]["spec"]["template"]["spec"]["containers"][0]["env"]
                            [0]["value"] = format!("unseen-{i:02}").into();
                    }
                    sample::compact(&other)
                })
                .collect();
            let mut next = unseen.iter().cycle();
            let id = format!("review/validate from bytes, {name}, template unseen");
            c.bench_function(&id, |b| {
                b.iter(|| at(Endpoint::Validate, black_box(next.next().unwrap())))
            });
        }
        // The reference read, each object built whole: what the quick one
        // saves.
        let id = format!("review/validate in full, {name} ({} B)", body.len());
        c.bench_function(&id, |b| {
            b.iter(|| {
                review_in_full(
                    black_box(body),
                    Endpoint::Validate,
                    &policies,
                    &NoCluster,
                    now,
                    &Caller::default(),
                )
                .unwrap()
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
