//! The decision core on a realistic review: a StatefulSet of 5 containers
//! and 20 env vars, with 20 policies loaded (the governing one last).
//! `cargo bench --bench decide`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use upgrade_guard::decide::{Change, NoCluster, decide};
use upgrade_guard::policy::PolicySet;
use upgrade_guard::webhook::{Caller, Endpoint, review};
use upgrade_guard::workload::Workload;

const SAMPLE: &str = include_str!("../tests/data/apiserver/sts-update-set-image.json");
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

/// The recorded set-image review, grown to 5 containers and 20 env vars.
fn realistic(image: &str) -> Value {
    let mut review: Value = serde_json::from_str(SAMPLE).unwrap();
    for object in ["oldObject", "object"] {
        let containers = &mut review["request"][object]["spec"]["template"]["spec"]["containers"];
        let db = containers[0].clone();
        let mut list = vec![db];
        for (i, name) in ["backup", "exporter", "proxy", "log-shipper"]
            .iter()
            .enumerate()
        {
            let mut c = list[0].clone();
            c["name"] = json!(name);
            c["image"] = json!(format!("registry.example.com/tools/{name}:0.{i}.1"));
            list.push(c);
        }
        for c in list.iter_mut() {
            c["env"] = json!(
                (0..4)
                    .map(|i| json!({"name": format!("SETTING_{i}"), "value": format!("value-{i}")}))
                    .collect::<Vec<_>>()
            );
            c["resources"] = json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}});
            c["readinessProbe"] = json!({"tcpSocket": {"port": 5432}, "periodSeconds": 5});
        }
        *containers = json!(list);
    }
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!(image);
    review
}

fn change(review: &Value) -> Change {
    let workload = |v: &Value| Workload::from_value(v.clone()).unwrap().unwrap();
    Change::Update {
        old: workload(&review["request"]["oldObject"]),
        new: workload(&review["request"]["object"]),
    }
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
    let body = serde_json::to_vec(&start).unwrap();
    c.bench_function("review/validate from bytes (parse, decide, render)", |b| {
        b.iter(|| {
            review(
                black_box(&body),
                Endpoint::Validate,
                &policies,
                &NoCluster,
                now,
                &Caller::default(),
            )
            .unwrap()
        })
    });
    c.bench_function("review/mutate from bytes (parse, decide, render)", |b| {
        b.iter(|| {
            review(
                black_box(&body),
                Endpoint::Mutate,
                &policies,
                &NoCluster,
                now,
                &Caller::default(),
            )
            .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
