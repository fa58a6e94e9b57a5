//! The live cluster view against kube's mock API server (tower-test): the
//! exact requests the reflectors send, and what the cache then serves to
//! decisions. No real API server can run here; this is the thin part.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use common::*;
use http::{Request, Response};
use kube::client::Body;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::{Value, json};
use upgrade_guard::cluster::live;
use upgrade_guard::decide::{Change, ClusterView, Rule};
use upgrade_guard::policy::PolicySet;
use upgrade_guard::workload::WorkloadKind;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"kind": format!("{kind}List"), "apiVersion": api_version, "metadata": {"resourceVersion": "100"}, "items": items})
}

fn policy_cr(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "upgradeguard.io/v1alpha1", "kind": "UpgradePolicy",
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": "7"}, "spec": spec})
}

/// What the UpgradePolicy LIST does when the CRD is missing at first: the
/// first answers 404; the next waits until `ready`, checks what the server
/// holds then (`check`), and answers the list.
struct MissingCrd {
    ready: Arc<AtomicBool>,
    check: Box<dyn Fn() + Send + Sync>,
}

/// Answers each LIST by path, holds each WATCH open, and reports the
/// requests it saw (path and query) once `until` have arrived.
async fn api_server(
    mut handle: Handle,
    until: usize,
    mut missing_crd: Option<MissingCrd>,
) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let mut held = Vec::new();
    let mut lists = 0;
    let mut answered_404 = false;
    while lists < until {
        let (request, respond) =
            tokio::time::timeout(Duration::from_secs(10), handle.next_request())
                .await
                .expect("the reflectors stopped asking")
                .expect("the client went away");
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        assert_eq!(request.method(), "GET", "{path}: the cache only reads");
        seen.push((path.clone(), query.clone()));
        if query.contains("watch=true") {
            held.push(respond);
            continue;
        }
        lists += 1;
        if path == "/apis/upgradeguard.io/v1alpha1/upgradepolicies"
            && let Some(missing) = &missing_crd
        {
            if !answered_404 {
                answered_404 = true;
                let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource"});
                respond.send_response(
                    Response::builder()
                        .status(404)
                        .body(Body::from(serde_json::to_vec(&status).unwrap()))
                        .unwrap(),
                );
                continue;
            }
            for _ in 0..200 {
                if missing.ready.load(Ordering::Acquire) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (missing.check)();
            missing_crd = None;
        }
        let mut live_db = value("generated/live-db-refreshing.json");
        live_db["metadata"]["resourceVersion"] = json!("99");
        let body = match path.as_str() {
            "/apis/apps/v1/statefulsets" => list("StatefulSet", "apps/v1", vec![live_db]),
            "/apis/apps/v1/deployments" => list("Deployment", "apps/v1", vec![]),
            "/api/v1/persistentvolumeclaims" => list(
                "PersistentVolumeClaim",
                "v1",
                vec![json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "shared", "namespace": "shop", "resourceVersion": "5"},
                    "spec": {"accessModes": ["ReadWriteMany"]}})],
            ),
            "/api/v1/pods" => list(
                "Pod",
                "v1",
                vec![
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-0", "namespace": "shop", "resourceVersion": "3", "labels": {"app.kubernetes.io/name": "db"}}}),
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "shop", "resourceVersion": "4", "labels": {"app.kubernetes.io/name": "web"}}}),
                ],
            ),
            "/apis/batch/v1/jobs" => {
                assert!(
                    query.contains("labelSelector=upgradeguard.io%2Fworkload"),
                    "only hook Jobs are watched: {query}"
                );
                list("Job", "batch/v1", vec![])
            }
            "/apis/upgradeguard.io/v1alpha1/upgradepolicies" => list(
                "UpgradePolicy",
                "upgradeguard.io/v1alpha1",
                vec![
                    policy_cr(
                        "cache",
                        json!({"selector": {"matchLabels": {"app.kubernetes.io/name": "cache"}}, "step": "patch"}),
                    ),
                    policy_cr("broken", json!({"selector": {}, "step": "minr"})),
                ],
            ),
            other => panic!("unexpected request {other}?{query}"),
        };
        respond.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
    }
    // Report once every reflector has opened its watch (bounded, for a loaded machine).
    let watches = |seen: &Vec<(String, String)>| {
        seen.iter()
            .filter(|(_, q)| q.contains("watch=true"))
            .count()
    };
    while watches(&seen) < until {
        let Ok(Some((request, respond))) =
            tokio::time::timeout(Duration::from_secs(10), handle.next_request()).await
        else {
            break;
        };
        seen.push((
            request.uri().path().to_string(),
            request.uri().query().unwrap_or("").to_string(),
        ));
        held.push(respond);
    }
    drop(held);
    seen
}

#[tokio::test]
async fn the_cache_lists_then_watches_each_kind_and_serves_decisions() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let server = tokio::spawn(api_server(handle, 6, None));

    let files = PolicySet::load(&root().join("policies")).unwrap();
    let file_policies: Vec<_> = files.iter().cloned().collect();
    let policies = Arc::new(ArcSwap::from_pointee(files));
    let ready = Arc::new(AtomicBool::new(false));
    let view = live::start(
        client,
        file_policies,
        policies.clone(),
        ready.clone(),
        Gauge::default(),
    );

    let seen = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .unwrap()
        .unwrap();
    let lists: BTreeSet<&str> = seen
        .iter()
        .filter(|(_, q)| !q.contains("watch=true"))
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(
        lists,
        BTreeSet::from([
            "/api/v1/persistentvolumeclaims",
            "/api/v1/pods",
            "/apis/apps/v1/deployments",
            "/apis/apps/v1/statefulsets",
            "/apis/batch/v1/jobs",
            "/apis/upgradeguard.io/v1alpha1/upgradepolicies",
        ])
    );
    for (path, query) in &seen {
        if query.contains("watch=true") {
            assert!(
                query.contains("resourceVersion=100"),
                "{path}?{query}: the watch resumes from the list"
            );
        }
    }
    assert!(
        seen.iter()
            .filter(|(_, q)| q.contains("watch=true"))
            .count()
            >= 4,
        "{seen:?}"
    );
    assert!(
        ready.load(Ordering::Acquire),
        "ready once every cache synced"
    );

    // Decisions read the cache: the live StatefulSet, without managedFields.
    let live = view
        .workload(WorkloadKind::StatefulSet, "shop", "db")
        .expect("cached");
    assert!(
        live.metadata()
            .managed_fields
            .as_ref()
            .is_none_or(Vec::is_empty)
    );
    assert_eq!(
        view.claim_access_modes("shop", "shared"),
        Some(vec!["ReadWriteMany".to_string()])
    );
    assert!(
        view.workload(WorkloadKind::Deployment, "shop", "db")
            .is_none()
    );
    let scale = Change::Scale {
        kind: WorkloadKind::StatefulSet,
        namespace: "shop".into(),
        name: "db".into(),
        from: 5,
        to: 6,
    };
    let verdict = upgrade_guard::decide::decide(&scale, &policies.load(), &view, now());
    assert_eq!(
        verdict.rule,
        Some(Rule::FrozenDuringRefresh),
        "{}",
        verdict.reason
    );

    // The readable custom policy joined the file policies; the broken one was skipped.
    let names: BTreeSet<String> = policies.load().iter().map(|p| p.name.clone()).collect();
    assert!(
        names.contains("cache") && names.contains("semver-db") && !names.contains("broken"),
        "{names:?}"
    );
}

#[tokio::test]
async fn without_the_crd_the_server_is_ready_on_its_file_policies_and_picks_the_crd_up_later() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let files = PolicySet::load(&root().join("policies")).unwrap();
    let file_policies: Vec<_> = files.iter().cloned().collect();
    let policies = Arc::new(ArcSwap::from_pointee(files));
    let ready = Arc::new(AtomicBool::new(false));
    let missing: Gauge = Gauge::default();
    let names = |p: &ArcSwap<PolicySet>| -> BTreeSet<String> {
        p.load().iter().map(|p| p.name.clone()).collect()
    };
    let check = {
        let (policies, missing, ready) = (policies.clone(), missing.clone(), ready.clone());
        Box::new(move || {
            assert!(ready.load(Ordering::Acquire), "ready without the CRD");
            assert_eq!(missing.get(), 1, "the missing CRD is a metric");
            let now = names(&policies);
            assert!(
                now.contains("semver-db") && !now.contains("cache"),
                "{now:?}"
            );
        })
    };
    let server = tokio::spawn(api_server(
        handle,
        7,
        Some(MissingCrd {
            ready: ready.clone(),
            check,
        }),
    ));
    live::start(
        client,
        file_policies,
        policies.clone(),
        ready.clone(),
        missing.clone(),
    );
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .unwrap()
        .unwrap();
    for _ in 0..100 {
        if names(&policies).contains("cache") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        names(&policies).contains("cache"),
        "the CRD, installed later, is picked up"
    );
    assert_eq!(missing.get(), 0);
}
