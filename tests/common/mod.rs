//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod api_server;
pub mod recording;
pub mod tls_client;
pub mod tools;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use upgrade_guard::decide::{self, Change, ClusterView, NoCluster, Verdict};
use upgrade_guard::manifest;
use upgrade_guard::policy::PolicySet;
use upgrade_guard::workload::Workload;

pub const NOW: &str = "2026-11-21T20:00:00Z";

pub fn now() -> jiff::Timestamp {
    NOW.parse().unwrap()
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

/// A fresh directory under the system's temporary directory, removed when
/// dropped, so no test leaves files behind.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ug-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The example policies shipped in `policies/`.
pub fn policies() -> PolicySet {
    PolicySet::load(&root().join("policies")).unwrap()
}

pub fn policy_text(text: &str) -> PolicySet {
    PolicySet::new(PolicySet::parse(text, "test.yaml").unwrap()).unwrap()
}

/// The JSON of the one object in a fixture file (YAML or JSON).
pub fn value(rel: &str) -> Value {
    let path = fixture(rel);
    let mut all = manifest::read(path.to_str().unwrap()).unwrap();
    assert_eq!(all.len(), 1, "{rel} holds one object");
    all.remove(0).value
}

pub fn workload(rel: &str) -> Workload {
    of(value(rel))
}

pub fn of(v: Value) -> Workload {
    Workload::from_value(v).unwrap().unwrap()
}

pub fn json(w: &Workload) -> Value {
    match w {
        Workload::StatefulSet(s) => serde_json::to_value(s).unwrap(),
        Workload::Deployment(d) => serde_json::to_value(d).unwrap(),
    }
}

pub fn update(old: &Workload, new: &Workload, policies: &PolicySet) -> Verdict {
    decide::decide(
        &Change::update(old.clone(), new.clone()),
        policies,
        &NoCluster,
        now(),
    )
}

pub fn decide_with(change: Change, policies: &PolicySet, cluster: &dyn ClusterView) -> Verdict {
    decide::decide(&change, policies, cluster, now())
}

/// Applies a verdict's JSON Patch the way the API server does.
pub fn patched(w: &Workload, verdict: &Verdict) -> Workload {
    let mut doc = json(w);
    json_patch::patch(&mut doc, &verdict.patch).unwrap();
    of(doc)
}

/// Sets a JSON pointer in a workload (creating parents), for shaping live objects.
pub fn with(w: &Workload, pointer: &str, v: Value) -> Workload {
    let mut doc = json(w);
    let mut cur = &mut doc;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let key = part.replace("~1", "/").replace("~0", "~");
        let last = i + 1 == parts.len();
        cur = match cur {
            Value::Array(items) => &mut items[key.parse::<usize>().unwrap()],
            _ => {
                if !last && cur.get(key.as_str()).is_none_or(|c| c.is_null()) {
                    cur[key.as_str()] = serde_json::json!({});
                }
                &mut cur[key.as_str()]
            }
        };
    }
    *cur = v;
    of(doc)
}

pub fn samples_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/apiserver"))
}

pub fn sample(name: &str) -> Value {
    let text = std::fs::read_to_string(samples_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Refresh pacing for the controller tests: 600 s to be Ready, 10 s settled.
pub fn refresh_settings(
    pause_after: upgrade_guard::policy::PauseAfter,
) -> upgrade_guard::refresh::Settings {
    upgrade_guard::refresh::Settings {
        pause_after,
        ready_timeout: std::time::Duration::from_secs(600),
        min_ready: std::time::Duration::from_secs(10),
        min_available: None,
        on_failure: Default::default(),
        hooks: Default::default(),
        releases: Vec::new(),
    }
}

/// A pod review as the API server sends it, from a user: named as its
/// object is.
pub fn pod_review(operation: &str, object: &Value, old: Option<&Value>) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": object["metadata"]["name"], "namespace": "shop", "operation": operation,
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": object, "oldObject": old,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        }
    })
}
