//! Properties of the decision core over generated workloads: it never
//! panics, and applying its patch then deciding again adds nothing.

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use upgrade_guard::decide::{self, Change, NoCluster, Snapshot};
use upgrade_guard::workload::{Workload, WorkloadKind};

fn version() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<bool>(), 0u64..4, 0u64..12, 0u64..4)
            .prop_map(|(v, a, b, c)| format!("{}{a}.{b}.{c}", if v { "v" } else { "" })),
        (0u64..4, 0u64..12).prop_map(|(a, b)| format!("{a}.{b}")),
        (1u64..4).prop_map(|a| format!("v{a}")),
        (0u64..3, 0u64..3).prop_map(|(a, b)| format!("{a}.{b}.0-rc.1")),
        Just("latest".to_string()),
        "[a-z0-9.+_-]{0,12}",
    ]
}

fn image() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("registry.example.com:5000/shop/db"),
            Just("federatedai/mysql"),
            Just("example.com/clusterdb")
        ],
        version(),
        prop::option::of(Just("@sha256:aaa")),
    )
        .prop_map(|(name, tag, digest)| format!("{name}:{tag}{}", digest.unwrap_or("")))
}

fn record() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        (
            version(),
            version(),
            prop_oneof![
                Just("RollingOut"),
                Just("Paused"),
                Just("RollingBack"),
                Just("Completed")
            ],
            prop::option::of(0i32..6)
        )
            .prop_map(|(f, t, s, p)| {
                let mut r =
                    json!({"from": f, "to": t, "started": "2026-11-20T10:00:00Z", "state": s});
                if let Some(p) = p {
                    r["partition"] = json!(p);
                }
                r.to_string()
            }),
        "[{}a-z\":,]{0,20}",
    ])
}

/// A StatefulSet or Deployment with the fields decisions read.
fn workload() -> impl Strategy<Value = Value> {
    (
        any::<bool>(),
        prop_oneof![Just("db"), Just("kyuubi"), Just("clusterdb"), Just("other")],
        prop::collection::vec((prop_oneof![Just("db"), Just("node"), Just("mysql"), Just("sidecar")], image()), 1..4),
        0i32..6,
        prop::option::of(0i32..7),
        record(),
        prop::option::of(version()),
        any::<bool>(),
        (0i32..6, 0i32..6, any::<bool>()),
    )
        .prop_map(|(sts, app, containers, replicas, partition, record, force, claim, status)| {
            let containers: Vec<Value> = containers
                .iter()
                .enumerate()
                .map(|(i, (name, image))| json!({"name": format!("{name}{i}").replace("db0", "db"), "image": image}))
                .collect();
            let mut annotations = json!({});
            if let Some(r) = record {
                annotations["upgradeguard.io/refresh"] = json!(r);
            }
            if let Some(f) = force {
                annotations["upgradeguard.io/force-to"] = json!(f);
                annotations["upgradeguard.io/force-reason"] = json!("tested");
            }
            let labels = json!({"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "fate"});
            let mut template = json!({"metadata": {"labels": labels}, "spec": {"containers": containers}});
            if claim {
                template["spec"]["volumes"] = json!([{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]);
            }
            let (ready, updated, revisions_differ) = status;
            let mut w = json!({
                "apiVersion": "apps/v1",
                "metadata": {"name": "w", "namespace": "ns", "labels": labels, "annotations": annotations, "generation": 3},
                "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template},
            });
            if sts {
                w["kind"] = json!("StatefulSet");
                w["spec"]["serviceName"] = json!("w");
                if let Some(p) = partition {
                    w["spec"]["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": p}});
                }
                w["status"] = json!({"replicas": ready, "updatedReplicas": updated, "observedGeneration": 3,
                    "currentRevision": "a", "updateRevision": if revisions_differ { "b" } else { "a" }});
            } else {
                w["kind"] = json!("Deployment");
                if partition.is_some_and(|p| p % 2 == 0) {
                    w["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}});
                }
                w["status"] = json!({"replicas": ready, "updatedReplicas": updated, "observedGeneration": if revisions_differ { 2 } else { 3 }});
            }
            w
        })
}

/// An edit a client might make to the old object.
fn edit() -> impl Strategy<Value = (String, Value)> {
    prop_oneof![
        image().prop_map(|i| (
            "/spec/template/spec/containers/0/image".to_string(),
            json!(i)
        )),
        (0i32..7).prop_map(|r| ("/spec/replicas".to_string(), json!(r))),
        (0i32..7).prop_map(|p| (
            "/spec/updateStrategy".to_string(),
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": p}})
        )),
        "[a-z]{1,5}".prop_map(|v| (
            "/spec/template/spec/containers/0/env".to_string(),
            json!([{"name": "X", "value": v}])
        )),
        record().prop_filter_map("present", |r| r.map(|r| (
            "/metadata/annotations/upgradeguard.io~1refresh".to_string(),
            json!(r)
        ))),
        version().prop_map(|v| (
            "/metadata/annotations/upgradeguard.io~1force-to".to_string(),
            json!(v)
        )),
    ]
}

fn pair() -> impl Strategy<Value = (Workload, Workload)> {
    (workload(), prop::collection::vec(edit(), 0..4)).prop_map(|(old, edits)| {
        let mut new = old.clone();
        for (pointer, value) in edits {
            if let Some(slot) = new.pointer_mut(&pointer) {
                *slot = value;
            } else if let Some((parent, key)) = pointer.rsplit_once('/')
                && let Some(Value::Object(map)) = new.pointer_mut(parent)
            {
                map.insert(key.replace("~1", "/"), value);
            }
        }
        (of(old), of(new))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn deciding_never_panics((old, new) in pair(), from in 0i32..6, to in 0i32..6) {
        let policies = policies();
        let now = now();
        let mut live = Snapshot::default();
        live.insert_workload(old.clone());
        let changes = [
            Change::update(old.clone(), new.clone()),
            Change::create(new.clone()),
            Change::delete(old.clone()),
            Change::Scale { kind: old.kind(), namespace: "ns".into(), name: "w".into(), from, to },
            Change::Scale { kind: WorkloadKind::StatefulSet, namespace: "ns".into(), name: "w".into(), from, to },
        ];
        for change in &changes {
            let v = decide::decide(change, &policies, &live, now);
            prop_assert!(v.allowed || v.patch.is_empty(), "a refusal carries no patch");
            prop_assert!(v.allowed || v.rule.is_some(), "a refusal names its rule");
            prop_assert!(v.allowed || !v.reason.is_empty());
        }
    }

    #[test]
    fn applying_the_patch_then_deciding_again_adds_nothing((old, new) in pair()) {
        let policies = policies();
        let first = decide::decide(&Change::update(old.clone(), new.clone()), &policies, &NoCluster, now());
        if first.allowed && !first.patch.is_empty() {
            let after = patched(&new, &first);
            let second = decide::decide(&Change::update(old.clone(), after), &policies, &NoCluster, now());
            prop_assert!(second.allowed, "the mutated object is refused: {}", second.reason);
            prop_assert!(second.patch.is_empty(), "second patch {:?} after {:?}", second.patch, first.patch);
            prop_assert_eq!(second.rule, first.rule);
        }
        let created = decide::decide(&Change::create(new.clone()), &policies, &NoCluster, now());
        if !created.patch.is_empty() {
            let after = patched(&new, &created);
            let again = decide::decide(&Change::create(after), &policies, &NoCluster, now());
            prop_assert!(again.patch.is_empty());
        }
    }
}

/// A governed StatefulSet of one or two containers at `versions`, its first
/// container named `first`.
fn sts_running(first: &str, versions: &[String]) -> Workload {
    let containers: Vec<Value> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({"name": if i == 0 { first.to_string() } else { format!("c{i}") },
                "image": format!("registry.example.com/shop/db:{v}")})
        })
        .collect();
    of(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "shop", "labels": {"app.kubernetes.io/name": "db"}},
        "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app.kubernetes.io/name": "db"}},
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": "db"}}, "spec": {"containers": containers}}}}))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Renaming, adding or removing governed containers never lets through
    /// a version change that the same change without them refuses.
    #[test]
    fn renaming_adding_or_removing_containers_never_lets_a_refused_change_through(
        from in version(),
        to in version(),
        extra in prop::option::of(version()),
        rename in any::<bool>(),
        named_policy in any::<bool>(),
    ) {
        let policies = if named_policy {
            policies()
        } else {
            let text = std::fs::read_to_string(root().join("policies/semver-db.yaml")).unwrap();
            policy_text(&text.replace("  containers: [db]\n", ""))
        };
        let old = sts_running("db", std::slice::from_ref(&from));
        let plain = sts_running("db", std::slice::from_ref(&to));
        let mut versions = vec![to.clone()];
        versions.extend(extra);
        let disguised = sts_running(if rename { "database" } else { "db" }, &versions);
        let decide = |new: &Workload| {
            decide::decide(&Change::update(old.clone(), new.clone()), &policies, &NoCluster, now())
        };
        let (straight, around) = (decide(&plain), decide(&disguised));
        if !straight.allowed {
            prop_assert!(!around.allowed, "{} → {}: refused straight ({}), allowed disguised as {:?}", from, to, straight.reason, versions);
        }
    }
}
