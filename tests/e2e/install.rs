//! The shipped manifests and the chart's default render, applied with a
//! server-side dry-run to the real API server: its validation and admission,
//! not a parser's. v1.23 lacks what the chart needs newer versions for; the
//! test changes only those fields, each named below with the version that
//! serves it (the chart README's "Kubernetes versions" lists the same).

use serde_json::Value;

use crate::common;
use crate::suite::{suite, text};

/// (JSON pointer to a field v1.23 does not serve, the version that does).
const NEWER: &[(&str, &str)] = &[
    (
        "/spec/template/spec/containers/0/lifecycle/preStop/sleep",
        "1.30 (PodLifecycleSleepAction, beta and on by default)",
    ),
    (
        "/spec/unhealthyPodEvictionPolicy",
        "1.27 (PDBUnhealthyPodEvictionPolicy, beta and on by default)",
    ),
];

fn documents(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The object without the fields v1.23 does not serve, and which it had.
fn for_v1_23(mut object: Value) -> (Value, Vec<&'static str>) {
    let mut removed = Vec::new();
    for (pointer, _) in NEWER {
        let (parent, field) = pointer.rsplit_once('/').unwrap();
        if let Some(Value::Object(map)) = object.pointer_mut(parent)
            && map.remove(field).is_some()
        {
            removed.push(*pointer);
            // preStop with no handler is invalid: the hook goes with it.
            if map.is_empty() {
                let (grandparent, hook) = parent.rsplit_once('/').unwrap();
                if let Some(Value::Object(up)) = object.pointer_mut(grandparent) {
                    up.remove(hook);
                }
            }
        }
    }
    (object, removed)
}

fn dry_run(s: &crate::suite::Suite, object: &Value) -> std::process::Output {
    s.kubectl_in(
        &[
            "apply",
            "--dry-run=server",
            "-n",
            "upgrade-guard",
            "-f",
            "-",
        ],
        &serde_json::to_string(object).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_and_the_chart_are_accepted_by_the_api_server_but_for_fields_it_predates() {
    let Some(s) = suite() else { return };
    let manifests = common::root().join("manifests");
    let mut objects: Vec<(String, Value)> = Vec::new();
    for file in [
        "namespace.yaml",
        "crd.yaml",
        "serviceaccount.yaml",
        "rbac.yaml",
        "service.yaml",
        "deployment.yaml",
        "pdb.yaml",
        "priorityclass.yaml",
        "webhooks.yaml",
    ] {
        for object in documents(&manifests.join(file)) {
            objects.push((format!("manifests/{file}"), object));
        }
    }
    for object in documents(&common::fixture("chart/default.yaml")) {
        objects.push(("the chart's default render".into(), object));
    }
    let mut changed = Vec::new();
    for (origin, object) in objects {
        let name = format!(
            "{origin}: {} {}",
            object["kind"].as_str().unwrap(),
            object["metadata"]["name"]
        );
        let (served, removed) = for_v1_23(object.clone());
        if !removed.is_empty() {
            // As shipped, v1.23 refuses it for exactly that field.
            let refused = dry_run(s, &object);
            assert!(
                !refused.status.success(),
                "{name} was accepted with {removed:?}"
            );
            for pointer in &removed {
                let field = pointer.rsplit('/').next().unwrap();
                let said = text(&refused.stderr);
                assert!(
                    said.contains(&format!("unknown field \"{field}\"")),
                    "{name}: {said}"
                );
            }
            changed.push(name.clone());
        }
        let out = dry_run(s, &served);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
    }
    assert_eq!(
        changed,
        [
            "manifests/deployment.yaml: Deployment \"upgrade-guard\"",
            "manifests/pdb.yaml: PodDisruptionBudget \"upgrade-guard\"",
            "the chart's default render: Deployment \"upgrade-guard\"",
            "the chart's default render: PodDisruptionBudget \"upgrade-guard\""
        ]
    );
}
