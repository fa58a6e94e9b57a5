//! Manifests the scenarios apply, and waits on what they become.

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
