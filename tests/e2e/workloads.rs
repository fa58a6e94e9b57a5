//! Manifests the scenarios apply, and waits on what they become.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::suite::{Suite, eventually};

/// An UpgradePolicy selecting `selector` (a YAML flow map of labels), with
/// `spec` (YAML at two spaces' indent) after it.
pub fn policy(name: &str, selector: &str, spec: &str) -> String {
    format!(
        "apiVersion: upgradeguard.io/v1alpha1\nkind: UpgradePolicy\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels: {selector}\n  {spec}\n"
    )
}

/// A StatefulSet of `replicas` running `image` in container `container`,
/// labelled `app.kubernetes.io/name: NAME`.
pub fn statefulset(name: &str, replicas: i32, container: &str, image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
  labels: {{app.kubernetes.io/name: {name}}}
spec:
  replicas: {replicas}
  serviceName: {name}
  selector:
    matchLabels: {{app.kubernetes.io/name: {name}}}
  template:
    metadata:
      labels: {{app.kubernetes.io/name: {name}}}
    spec:
      containers:
        - name: {container}
          image: {image}
"#
    )
}

/// A StatefulSet `name` of `replicas` at `image` (container `container`),
/// governed by a policy of the same name with `spec`, applied in `ns`;
/// returns once it has rolled out.
pub async fn governed(
    s: &Suite,
    ns: &str,
    (name, replicas, container, image): (&str, i32, &str, &str),
    spec: &str,
) {
    let selector = format!("{{app.kubernetes.io/name: {name}}}");
    s.apply(ns, &policy(name, &selector, spec));
    s.apply(ns, &statefulset(name, replicas, container, image));
    wait_rolled_out(s, ns, &format!("statefulset/{name}")).await;
}

/// Waits until `kubectl rollout status` says the rollout is complete.
pub async fn wait_rolled_out(s: &Suite, ns: &str, what: &str) {
    eventually(&format!("{what} to roll out"), 120, || async {
        let out = s.kubectl(&["-n", ns, "rollout", "status", what, "--watch=false"]);
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        let done = [
            "successfully rolled out",
            "roll out complete",
            "rolling update complete",
        ];
        (out.status.success() && done.iter().any(|d| said.contains(d))).then_some(())
    })
    .await
}

/// A workload's refresh record, if it has one.
pub fn record(s: &Suite, ns: &str, kind: &str, name: &str) -> Option<serde_json::Value> {
    let out = s.kubectl(&[
        "-n",
        ns,
        "get",
        kind,
        name,
        "-o",
        r"jsonpath={.metadata.annotations.upgradeguard\.io/refresh}",
    ]);
    serde_json::from_slice(&out.stdout).ok()
}

/// The state in a workload's refresh record, if it has one.
pub fn record_state(s: &Suite, ns: &str, kind: &str, name: &str) -> Option<String> {
    record(s, ns, kind, name)?["state"]
        .as_str()
        .map(String::from)
}

/// Waits until the refresh record's state is `state`.
pub async fn wait_record_state(s: &Suite, ns: &str, kind: &str, name: &str, state: &str) {
    eventually(
        &format!("{kind}/{name}'s refresh to be {state}"),
        120,
        || async { (record_state(s, ns, kind, name).as_deref() == Some(state)).then_some(()) },
    )
    .await
}

/// Each partition a StatefulSet was seen at, with when, in order.
pub type Partitions = Arc<Mutex<Vec<(i32, Instant)>>>;

/// Every partition the StatefulSet `name` is seen at, with when it was
/// first seen, as a watch tells it; abort the task when done.
pub fn watch_partitions(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> (Partitions, tokio::task::JoinHandle<()>) {
    let seen: Partitions = Arc::default();
    let api = Api::<StatefulSet>::namespaced(client.clone(), ns);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut events = watcher(api, config)
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(Ok(sts)) = events.next().await {
                let partition = sts
                    .spec
                    .and_then(|s| s.update_strategy)
                    .and_then(|u| u.rolling_update)
                    .and_then(|r| r.partition)
                    .unwrap_or(0);
                let mut seen = seen.lock().unwrap();
                if seen.last().map(|(p, _)| *p) != Some(partition) {
                    seen.push((partition, Instant::now()));
                }
            }
        })
    };
    (seen, task)
}
