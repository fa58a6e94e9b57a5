//! The refresh hooks' side of the executor against kube's mock API server:
//! the exact requests that create a hook's Job (name, labels, owner,
//! deadline, the contract's environment) and then patch the workload, that
//! delete a hook's Job for a retry, and that put images back for an
//! automatic rollback; and which answers are a conflict.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::api_server::*;
use http::{Request, Response};
use k8s_openapi::api::batch::v1::JobSpec;
use kube::client::Body;
use serde_json::{Value, json};
use upgrade_guard::policy::{Hooks, Version};
use upgrade_guard::refresh::Action;
use upgrade_guard::refresh::executor::{self, Outcome};
use upgrade_guard::refresh::hooks::{self, HookKind, HookRun};
use upgrade_guard::workload::{RefreshRecord, Workload};

const UID: &str = "7d3c52a4-1f0e-4b8e-9a51-0c6f2d9e8b10";
const STS: &str = "/apis/apps/v1/namespaces/shop/statefulsets/db";
const JOBS: &str = "/apis/batch/v1/namespaces/shop/jobs";
/// The record as the workload carries it: paused after unit 4.
const RECORD: &str = r#"{"from":"1.7.0","to":"1.8.0","started":"2026-11-21T19:00:00Z","state":"Paused","partition":4,"reason":"paused after unit 4"}"#;
/// The record the step writes with the Job: moving again, no reason.
const MOVING: &str = r#"{"from":"1.7.0","to":"1.8.0","started":"2026-11-21T19:00:00Z","state":"RollingOut","partition":4}"#;
const TIMEOUT: Duration = Duration::from_secs(600);

fn mock() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// shop/db: 5 replicas at partition 4, container `db` on 1.8.0, carrying
/// `RECORD`, with `containers` as its pod template's.
fn db_with(containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "shop", "uid": UID, "resourceVersion": "240",
            "annotations": {"upgradeguard.io/refresh": RECORD}},
        "spec": {
            "replicas": 5,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 4}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": containers},
            },
        },
    })
}

fn db_value() -> Value {
    db_with(json!([{"name": "db", "image": "registry.example.com/shop/db:1.8.0"}]))
}

fn workload(v: Value) -> Workload {
    Workload::from_value(v).unwrap().unwrap()
}

fn record() -> RefreshRecord {
    serde_json::from_str(RECORD).unwrap()
}

/// The policy's hook: one container that sets `UG_FROM` itself (ours must
/// win) and `MODE` (kept), an init container, a deadline of 900 s.
fn spec(deadline: i64) -> JobSpec {
    serde_json::from_value(json!({
        "backoffLimit": 0,
        "activeDeadlineSeconds": deadline,
        "template": {"spec": {
            "restartPolicy": "Never",
            "initContainers": [{"name": "wait", "image": "tool:1"}],
            "containers": [{"name": "switch", "image": "tool:1", "args": ["switch"],
                "env": [{"name": "UG_FROM", "value": "wrong"}, {"name": "MODE", "value": "check"}]}],
        }},
    }))
    .unwrap()
}

/// The step that starts a hook: write the moving record, create the Job.
fn starting(job: k8s_openapi::api::batch::v1::Job) -> Action {
    Action {
        record: Some(serde_json::from_str(MOVING).unwrap()),
        create_job: Some(Box::new(job)),
        ..Default::default()
    }
}

/// The contract's environment as the Job carries it: `extra` after the six
/// every hook gets.
fn contract_env(extra: &[(&str, &str)]) -> Vec<Value> {
    let mut env = vec![
        ("UG_NAMESPACE", "shop"),
        ("UG_NAME", "db"),
        ("UG_KIND", "StatefulSet"),
        ("UG_FROM", "1.7.0"),
        ("UG_TO", "1.8.0"),
        ("UG_ROLLBACK", "false"),
    ];
    env.extend_from_slice(extra);
    env.into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect()
}

/// The Job POST body, exactly: `name`, the two labels on the Job and its
/// pods, the workload as the one owner, `deadline`, and in both containers
/// the policy's `MODE` kept and the contract's variables after it.
fn job_body(name: &str, hook: &str, deadline: i64, env: Vec<Value>) -> Value {
    let labels = json!({"upgradeguard.io/workload": "db", "upgradeguard.io/hook": hook});
    let mut policy_env = vec![json!({"name": "MODE", "value": "check"})];
    policy_env.extend(env.iter().cloned());
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": name, "namespace": "shop", "labels": labels,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": UID}],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "initContainers": [{"name": "wait", "image": "tool:1", "env": env}],
                    "containers": [{"name": "switch", "image": "tool:1", "args": ["switch"], "env": policy_env}],
                },
            },
        },
    })
}

/// The guarded patch of the record: the one read, replaced by `MOVING`.
fn record_patch() -> Call {
    call(
        "PATCH",
        &format!("{STS}?&fieldManager=upgrade-guard"),
        200,
        db_value(),
    )
    .with_body(json!([
            {"op": "test", "path": "/metadata/annotations/upgradeguard.io~1refresh", "value": RECORD},
            {"op": "replace", "path": "/metadata/annotations/upgradeguard.io~1refresh", "value": MOVING},
        ]),
    )
}

fn job_post(body: Value, status: u16, reply: Value) -> Call {
    call(
        "POST",
        &format!("{JOBS}?&fieldManager=upgrade-guard"),
        status,
        reply,
    )
    .with_body(body)
}

/// Starting `job` creates exactly `body` and patches the record once.
async fn creates_the_job_and_applies(
    w: &Workload,
    job: k8s_openapi::api::batch::v1::Job,
    body: Value,
) {
    let (client, handle) = mock();
    let server = tokio::spawn(scenario(
        handle,
        vec![job_post(body.clone(), 201, body), record_patch()],
    ));
    let outcome = executor::execute(&client, None, w, &starting(job))
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(outcome, Outcome::Applied);
}

#[tokio::test]
async fn a_hook_job_is_created_with_the_contracts_name_labels_owner_and_environment() {
    let w = workload(db_value());
    let run = HookRun::unit(HookKind::PreUnit, 4);
    let job = hooks::job(&w, &record(), &run, &spec(900), TIMEOUT);
    // Stable across builds and restarts: a restarted controller finds it.
    let name = hooks::job_name(&w, &record(), &run);
    assert_eq!(name, "db-pre-unit-4-403b1be4");
    let body = job_body(
        &name,
        "preUnit",
        600,
        contract_env(&[("UG_UNIT", "4"), ("UG_POD", "db-4")]),
    );
    creates_the_job_and_applies(&w, job, body).await;
}

#[tokio::test]
async fn a_post_refresh_job_carries_its_release_step_and_the_shorter_deadline() {
    let w = workload(db_value());
    let hooks = Hooks {
        post_refresh: Some(spec(300)),
        ..Default::default()
    };
    let releases: Vec<Version> = ["1.6.0", "1.7.1", "1.8.0", "1.9.0"]
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    let runs = hooks::post_refresh_runs(&hooks, &releases, &record());
    let keys: Vec<String> = runs.iter().map(HookRun::key).collect();
    assert_eq!(
        keys,
        ["postRefresh/1.7.0-1.7.1", "postRefresh/1.7.1-1.8.0"],
        "one run per release passed, none outside from → to"
    );
    let run = &runs[1];
    let job = hooks::job(
        &w,
        &record(),
        run,
        hooks.post_refresh.as_ref().unwrap(),
        TIMEOUT,
    );
    let name = hooks::job_name(&w, &record(), run);
    assert_eq!(name, "db-post-refresh-1-403b1be4");
    let body = job_body(
        &name,
        "postRefresh",
        300,
        contract_env(&[("UG_STEP_FROM", "1.7.1"), ("UG_STEP_TO", "1.8.0")]),
    );
    creates_the_job_and_applies(&w, job, body).await;
}

#[tokio::test]
async fn a_hook_job_already_there_is_a_conflict_and_the_record_is_not_patched() {
    let w = workload(db_value());
    let run = HookRun::unit(HookKind::PreUnit, 4);
    let job = hooks::job(&w, &record(), &run, &spec(900), TIMEOUT);
    let body = job_body(
        "db-pre-unit-4-403b1be4",
        "preUnit",
        600,
        contract_env(&[("UG_UNIT", "4"), ("UG_POD", "db-4")]),
    );
    let exists = status(
        409,
        "AlreadyExists",
        "jobs.batch \"db-pre-unit-4-403b1be4\" already exists",
    );
    let (client, handle) = mock();
    // Only the POST: the scenario fails on any request after it.
    let server = tokio::spawn(scenario(handle, vec![job_post(body, 409, exists)]));
    let outcome = executor::execute(&client, None, &w, &starting(job))
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(outcome, Outcome::Conflict);
}

fn job_delete(status: u16, reply: Value) -> Call {
    call(
        "DELETE",
        &format!("{JOBS}/db-pre-unit-4-403b1be4?"),
        status,
        reply,
    )
    .with_body(json!({"propagationPolicy": "Background", "preconditions": {"uid": "job-uid-1"}}))
}

#[tokio::test]
async fn a_hook_job_is_deleted_only_if_it_is_the_one_observed_and_its_pods_with_it() {
    let deleting = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "db-pre-unit-4-403b1be4", "namespace": "shop", "uid": "job-uid-1",
            "deletionTimestamp": "2026-11-21T20:00:00Z"}});
    let (client, handle) = mock();
    let server = tokio::spawn(scenario(handle, vec![job_delete(200, deleting)]));
    let outcome = executor::delete_job(&client, "shop", "db-pre-unit-4-403b1be4", "job-uid-1")
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(outcome, Outcome::Applied);
}

#[tokio::test]
async fn a_hook_job_gone_or_replaced_is_a_conflict_when_deleting() {
    for (code, reason) in [(404, "NotFound"), (409, "Conflict")] {
        let (client, handle) = mock();
        let server = tokio::spawn(scenario(
            handle,
            vec![job_delete(code, status(code, reason, "not that Job"))],
        ));
        let outcome = executor::delete_job(&client, "shop", "db-pre-unit-4-403b1be4", "job-uid-1")
            .await
            .unwrap();
        server.await.unwrap();
        assert_eq!(outcome, Outcome::Conflict, "answered {code}");
    }
}

#[tokio::test]
async fn a_refused_hook_job_delete_is_an_error_not_a_conflict() {
    let (client, handle) = mock();
    let server = tokio::spawn(scenario(
        handle,
        vec![job_delete(
            403,
            status(403, "Forbidden", "jobs.batch is forbidden"),
        )],
    ));
    let err = executor::delete_job(&client, "shop", "db-pre-unit-4-403b1be4", "job-uid-1")
        .await
        .unwrap_err();
    server.await.unwrap();
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 403),
        other => panic!("expected the API's 403, got {other:?}"),
    }
}

/// shop/db with three containers; an automatic rollback puts `db` and
/// `backup` back (and names a container the template no longer has).
fn rollback() -> (Workload, Action) {
    let w = workload(db_with(json!([
        {"name": "db", "image": "registry.example.com/shop/db:1.8.0"},
        {"name": "metrics", "image": "exporter:3"},
        {"name": "backup", "image": "registry.example.com/shop/backup:2.1"},
    ])));
    let restore: BTreeMap<String, String> = [
        ("backup", "registry.example.com/shop/backup:2.0"),
        ("db", "registry.example.com/shop/db:1.7.0"),
        ("gone", "registry.example.com/shop/gone:1"),
    ]
    .into_iter()
    .map(|(c, i)| (c.to_string(), i.to_string()))
    .collect();
    let action = Action {
        restore_images: restore,
        ..Default::default()
    };
    (w, action)
}

/// The record as read, then per restored container (by its index) its
/// name as read and its image.
fn rollback_ops() -> Value {
    json!([
        {"op": "test", "path": "/metadata/annotations/upgradeguard.io~1refresh", "value": RECORD},
        {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "db"},
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "registry.example.com/shop/db:1.7.0"},
        {"op": "test", "path": "/spec/template/spec/containers/2/name", "value": "backup"},
        {"op": "replace", "path": "/spec/template/spec/containers/2/image", "value": "registry.example.com/shop/backup:2.0"},
    ])
}

#[test]
fn restoring_images_tests_the_record_and_each_containers_name_before_replacing_its_image() {
    let (w, action) = rollback();
    let ops = executor::patch_ops(&w, &action);
    assert_eq!(Value::Array(ops), rollback_ops());
}

#[tokio::test]
async fn restoring_images_is_one_guarded_patch_of_the_workload() {
    let (w, action) = rollback();
    let (client, handle) = mock();
    let patch = call(
        "PATCH",
        &format!("{STS}?&fieldManager=upgrade-guard"),
        200,
        db_value(),
    )
    .with_body(rollback_ops());
    let server = tokio::spawn(scenario(handle, vec![patch]));
    let outcome = executor::execute(&client, None, &w, &action).await.unwrap();
    server.await.unwrap();
    assert_eq!(outcome, Outcome::Applied);
}
