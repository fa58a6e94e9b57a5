//! The migration executor against kube's mock API server: the exact
//! requests each step sends, their guards (JSON Patch `test`s of what the
//! step read, the UID of what it deletes), and that no request of any step
//! ever deletes a PersistentVolume.

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use upgrade_guard::convert::apply;
use upgrade_guard::convert::migrate::{Journal, Move, Observed, Step};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    content_type: Option<String>,
    body: Value,
}

/// Answers every request plausibly and records it.
async fn recorder(mut handle: Handle) -> Vec<Seen> {
    let mut seen = Vec::new();
    while let Ok(Some((request, respond))) =
        tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await
    {
        let method = request.method().to_string();
        let path = request.uri().path_and_query().unwrap().to_string();
        let content_type = request
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = http_body_util::BodyExt::collect(request.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let kind = |p: &str| {
            if p.contains("/deployments") {
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mysql"}})
            } else if p.contains("/statefulsets") {
                json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "mysql"}})
            } else if p.contains("/persistentvolumeclaims") {
                json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"}})
            } else if p.contains("/persistentvolumes") {
                json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "v"}})
            } else {
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}})
            }
        };
        let reply = match method.as_str() {
            "DELETE" => {
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}})
            }
            _ => kind(&path),
        };
        seen.push(Seen {
            method,
            path,
            content_type,
            body,
        });
        respond.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap(),
        );
    }
    seen
}

fn value<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn observed() -> Observed {
    let mut o = Observed {
        deployment: Some(value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "mysql", "namespace": "fate", "uid": "d-uid", "resourceVersion": "11"},
            "spec": {"replicas": 1, "selector": {}, "template": {}}}))),
        statefulset: Some(value(
            json!({"metadata": {"name": "mysql", "namespace": "fate", "uid": "s-uid", "resourceVersion": "20"}}),
        )),
        service: Some(value(
            json!({"metadata": {"name": "mysql-headless", "namespace": "fate", "uid": "v-uid", "resourceVersion": "21"}}),
        )),
        ..Default::default()
    };
    o.claims.insert(
        "mysql-data".into(),
        value(json!({"metadata": {"name": "mysql-data", "namespace": "fate", "uid": "c-uid", "resourceVersion": "7"},
            "spec": {"volumeName": "pvc-7f3a"}})),
    );
    o.volumes.insert(
        "pvc-7f3a".into(),
        value(json!({"metadata": {"name": "pvc-7f3a", "resourceVersion": "3"},
            "spec": {"persistentVolumeReclaimPolicy": "Delete", "claimRef": {"name": "mysql-data", "uid": "c-uid"}}})),
    );
    o
}

fn journal() -> Journal {
    Journal {
        replicas: 1,
        moves: vec![Move {
            old_claim: "mysql-data".into(),
            new_claim: "data-mysql-0".into(),
            volume: "pvc-7f3a".into(),
            reclaim_policy: "Delete".into(),
            old_spec: Default::default(),
            old_labels: None,
        }],
        service: Some("mysql-headless".into()),
        done: vec![],
    }
}

async fn run(step: &Step) -> Vec<Seen> {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let server = tokio::spawn(recorder(handle));
    apply::execute(&client, "fate", step, &observed())
        .await
        .unwrap();
    drop(client);
    server.await.unwrap()
}

#[tokio::test]
async fn each_step_sends_one_guarded_request() {
    let cases: Vec<(Step, &str, &str, Value)> = vec![
        (
            Step::Begin(journal()),
            "PATCH",
            "/apis/apps/v1/namespaces/fate/deployments/mysql?&fieldManager=upgrade-guard",
            json!([{"op": "test", "path": "/metadata/uid", "value": "d-uid"},
                {"op": "add", "path": "/metadata/annotations", "value": {"upgradeguard.io/migration": serde_json::to_string(&journal()).unwrap()}}]),
        ),
        (
            Step::RetainVolume {
                volume: "pvc-7f3a".into(),
            },
            "PATCH",
            "/api/v1/persistentvolumes/pvc-7f3a?&fieldManager=upgrade-guard",
            json!([{"op": "test", "path": "/spec/persistentVolumeReclaimPolicy", "value": "Delete"},
                {"op": "replace", "path": "/spec/persistentVolumeReclaimPolicy", "value": "Retain"}]),
        ),
        (
            Step::ScaleDown,
            "PATCH",
            "/apis/apps/v1/namespaces/fate/deployments/mysql?&fieldManager=upgrade-guard",
            json!([{"op": "test", "path": "/spec/replicas", "value": 1},
                {"op": "replace", "path": "/spec/replicas", "value": 0}]),
        ),
        (
            Step::DeleteClaim {
                claim: "mysql-data".into(),
            },
            "DELETE",
            "/api/v1/namespaces/fate/persistentvolumeclaims/mysql-data?",
            json!({"preconditions": {"uid": "c-uid"}}),
        ),
        (
            Step::FreeVolume {
                volume: "pvc-7f3a".into(),
            },
            "PATCH",
            "/api/v1/persistentvolumes/pvc-7f3a?&fieldManager=upgrade-guard",
            json!([{"op": "test", "path": "/spec/claimRef/uid", "value": "c-uid"},
                {"op": "remove", "path": "/spec/claimRef"}]),
        ),
        (
            Step::RestoreReclaim {
                volume: "pvc-7f3a".into(),
                policy: "Delete".into(),
            },
            "PATCH",
            "/api/v1/persistentvolumes/pvc-7f3a?&fieldManager=upgrade-guard",
            json!([{"op": "test", "path": "/spec/persistentVolumeReclaimPolicy", "value": "Delete"},
                {"op": "replace", "path": "/spec/persistentVolumeReclaimPolicy", "value": "Delete"}]),
        ),
        (
            Step::DeleteStatefulSet,
            "DELETE",
            "/apis/apps/v1/namespaces/fate/statefulsets/mysql?",
            json!({"preconditions": {"uid": "s-uid"}}),
        ),
    ];
    for (step, method, path, body) in cases {
        let seen = run(&step).await;
        assert_eq!(seen.len(), 1, "{step:?}: {seen:?}");
        let s = &seen[0];
        assert_eq!(
            (s.method.as_str(), s.path.as_str()),
            (method, path),
            "{step:?}"
        );
        if method == "PATCH" {
            assert_eq!(
                s.content_type.as_deref(),
                Some("application/json-patch+json")
            );
        }
        assert_eq!(s.body, body, "{step:?}");
    }
}

#[tokio::test]
async fn a_claim_is_created_bound_to_its_volume() {
    let claim: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data-mysql-0", "namespace": "fate"},
        "spec": {"volumeName": "pvc-7f3a", "accessModes": ["ReadWriteOnce"]}}))
    .unwrap();
    let seen = run(&Step::CreateClaim(claim)).await;
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/api/v1/namespaces/fate/persistentvolumeclaims?")
    );
    assert_eq!(seen[0].body["spec"]["volumeName"], "pvc-7f3a");
}

#[tokio::test]
async fn no_step_ever_deletes_a_persistent_volume() {
    let claim: k8s_openapi::api::core::v1::PersistentVolumeClaim =
        serde_json::from_value(json!({"metadata": {"name": "c", "namespace": "fate"}})).unwrap();
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(
        json!({"metadata": {"name": "mysql-headless", "namespace": "fate"}}),
    )
    .unwrap();
    let sts: k8s_openapi::api::apps::v1::StatefulSet =
        serde_json::from_value(json!({"metadata": {"name": "mysql", "namespace": "fate"}}))
            .unwrap();
    let every = [
        Step::Begin(journal()),
        Step::RetainVolume {
            volume: "pvc-7f3a".into(),
        },
        Step::ScaleDown,
        Step::Wait("x".into()),
        Step::DeleteClaim {
            claim: "mysql-data".into(),
        },
        Step::FreeVolume {
            volume: "pvc-7f3a".into(),
        },
        Step::CreateClaim(claim.clone()),
        Step::CreateService(service),
        Step::CreateStatefulSet(Box::new(sts)),
        Step::Migrated,
        Step::DeleteDeployment,
        Step::Finished,
        Step::DeleteStatefulSet,
        Step::DeleteService {
            service: "mysql-headless".into(),
        },
        Step::RestoreClaim(claim),
        Step::RestoreReclaim {
            volume: "pvc-7f3a".into(),
            policy: "Delete".into(),
        },
        Step::ScaleUp(1),
        Step::EndJournal,
    ];
    let mut deletes = Vec::new();
    for step in &every {
        for s in run(step).await {
            if s.method == "DELETE" {
                deletes.push(s.path.clone());
            }
        }
    }
    assert!(
        !deletes.is_empty(),
        "deletes happen: claims, the StatefulSet, the Service, the Deployment"
    );
    assert!(
        deletes.iter().all(|p| !p.contains("/persistentvolumes/")),
        "{deletes:?}"
    );
}

/// Answers by path from a fixed table; anything else is a test failure.
async fn serve(mut handle: Handle, table: Vec<(&'static str, u16, Value)>) -> Vec<String> {
    let mut seen = Vec::new();
    while let Ok(Some((request, respond))) =
        tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await
    {
        let path = request.uri().path_and_query().unwrap().to_string();
        let (_, status, body) = table
            .iter()
            .find(|(p, _, _)| path.starts_with(p))
            .unwrap_or_else(|| panic!("unexpected request {path}"));
        seen.push(format!("{} {path}", request.method()));
        respond.send_response(
            Response::builder()
                .status(*status)
                .body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap(),
        );
    }
    seen
}

#[tokio::test]
async fn mid_migration_the_target_comes_from_the_live_deployment_and_the_journal() {
    let mut j = journal();
    j.moves[0].old_spec = value(
        json!({"accessModes": ["ReadWriteOnce"], "volumeName": "pvc-7f3a",
        "resources": {"requests": {"storage": "20Gi"}}}),
    );
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "mysql", "namespace": "fate", "resourceVersion": "30",
            "annotations": {"upgradeguard.io/migration": serde_json::to_string(&j).unwrap()}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "mysql"}},
            "template": {"metadata": {"labels": {"app": "mysql"}}, "spec": {
                "containers": [{"name": "mysql", "image": "mysql:8", "volumeMounts": [{"name": "data", "mountPath": "/var/lib/mysql"}]}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "mysql-data"}}]}}}});
    let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404});
    let services = json!({"kind": "ServiceList", "apiVersion": "v1", "metadata": {}, "items": [
        {"metadata": {"name": "unrelated", "namespace": "fate"}, "spec": {"selector": {"app": "web"}}}]});
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let server = tokio::spawn(serve(
        handle,
        vec![
            (
                "/apis/apps/v1/namespaces/fate/deployments/mysql",
                200,
                deployment,
            ),
            (
                "/api/v1/namespaces/fate/persistentvolumeclaims/mysql-data",
                404,
                gone,
            ),
            ("/api/v1/namespaces/fate/services", 200, services),
        ],
    ));
    let target = apply::target(&client, "fate", "mysql").await.unwrap();
    drop(client);
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let spec = target.statefulset.spec.clone().unwrap();
    assert_eq!(
        spec.replicas,
        Some(1),
        "the journal's replicas, not the live 0"
    );
    assert!(
        target
            .statefulset
            .metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key("upgradeguard.io/migration"))
    );
    assert_eq!(target.claims[0].0, "mysql-data");
    assert_eq!(
        target.claims[0]
            .1
            .spec
            .as_ref()
            .unwrap()
            .volume_name
            .as_deref(),
        Some("pvc-7f3a")
    );
    assert_eq!(
        target.service.as_ref().unwrap().metadata.name.as_deref(),
        Some("mysql-headless")
    );
}
