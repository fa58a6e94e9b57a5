//! The executor and the live commands (`status`, `resume`, `pause`,
//! `check --live`) against kube's mock API server: the exact requests,
//! bodies and preconditions they send, and what they refuse.

mod common;

use common::api_server::*;
use common::*;
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use upgrade_guard::cli::cluster::{self, Cluster};
use upgrade_guard::cli::{check, pause, resume, status};
use upgrade_guard::refresh::executor::{self, Outcome};
use upgrade_guard::refresh::{Action, PodRef, StepEvent};
use upgrade_guard::workload::{RefreshRecord, Workload};

fn mock() -> (Cluster, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (Cluster::new(client, "https://10.0.0.1:6443"), handle)
}

/// The guard every write of a refresh carries: the record as it was read.
fn record_test(record: &str) -> Value {
    json!({"op": "test", "path": "/metadata/annotations/upgradeguard.io~1refresh", "value": record})
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

const RECORD: &str = r#"{"from":"1.7.0","to":"1.8.0","started":"2026-11-21T19:00:00Z","state":"Paused","partition":4,"unitStarted":"2026-11-21T19:00:00Z","reason":"paused after unit 4 (db-4) refreshed to 1.8.0; check it, then resume"}"#;

/// The recorded StatefulSet mid-refresh, with a refresh record.
fn db(record: Option<&str>) -> Value {
    let mut v = value("generated/live-db-refreshing.json");
    v["metadata"]["resourceVersion"] = json!("240");
    v["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = json!(4);
    if let Some(r) = record {
        v["metadata"]["annotations"]["upgradeguard.io/refresh"] = json!(r);
    }
    v
}

const STS: &str = "/apis/apps/v1/namespaces/shop/statefulsets/db";

fn pods_list() -> Value {
    let pod = |o: i32, rev: &str, image: &str| {
        json!({"metadata": {"name": format!("db-{o}"), "namespace": "shop", "labels": {"controller-revision-hash": rev}},
            "spec": {"containers": [{"name": "db", "image": image}]},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-21T19:10:00Z"}],
                "containerStatuses": [{"name": "db", "image": image, "imageID": "", "ready": true, "restartCount": 1}]}})
    };
    let mut items = vec![pod(
        4,
        "db-5c486b85c7",
        "registry.example.com/shop/db:1.8.0",
    )];
    for o in (0..4).rev() {
        items.push(pod(o, "db-99fb5d7f6", "registry.example.com/shop/db:1.7.0"));
    }
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
}

/// The workload's FailedCreate Events, as `status` asks for them.
fn events(items: Value) -> Call {
    call(
        "GET",
        "/api/v1/namespaces/shop/events?&fieldSelector=involvedObject.kind%3DStatefulSet%2CinvolvedObject.name%3Ddb%2Creason%3DFailedCreate",
        200,
        json!({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": items}),
    )
}

fn failed_create(message: &str, at: &str) -> Value {
    json!({"metadata": {"name": format!("db.{at}"), "namespace": "shop"},
        "involvedObject": {"kind": "StatefulSet", "name": "db", "namespace": "shop"},
        "reason": "FailedCreate", "type": "Warning", "message": message, "lastTimestamp": at})
}

#[tokio::test]
async fn status_names_the_rule_that_refused_the_workloads_pods() {
    let refusal = "create Pod db-0 in StatefulSet db failed error: admission webhook \"data.upgradeguard.io\" denied the request: Pod shop/db-0: claim data-db-0 was last served by db 1.7.0, and 1.7.0 → 1.9.0 skips 1.8.x: upgrade to 1.8.x first (rule skip-version, policy semver-db)";
    // Not refreshing: the answer says why no pod comes up.
    let (client, handle) = mock();
    let server = tokio::spawn(scenario(
        handle,
        vec![
            call("GET", STS, 200, db(None)),
            events(json!([
                failed_create(
                    "create Pod db-0 in StatefulSet db failed error: pods \"db-0\" is forbidden: exceeded quota",
                    "2026-11-21T19:00:00Z"
                ),
                failed_create(refusal, "2026-11-21T19:59:00Z"),
            ])),
        ],
    ));
    let err = status::gather(&client, Some("shop/db"), &policies(), now())
        .await
        .unwrap_err()
        .to_string();
    server.await.unwrap();
    assert_eq!(
        err,
        format!("StatefulSet shop/db: no refresh recorded; its pods are refused: {refusal}")
    );
    // Refreshing: a line of the report.
    let (client, handle) = mock();
    let server = tokio::spawn(scenario(
        handle,
        vec![
            call("GET", STS, 200, db(Some(RECORD))),
            events(json!([failed_create(refusal, "2026-11-21T19:59:00Z")])),
            call(
                "GET",
                "/api/v1/namespaces/shop/pods?&labelSelector=app.kubernetes.io%2Fname%3Ddb",
                200,
                pods_list(),
            ),
        ],
    ));
    let reports = status::gather(&client, Some("shop/db"), &policies(), now())
        .await
        .unwrap();
    server.await.unwrap();
    let text = upgrade_guard::refresh::status::text(&reports);
    assert!(
        text.contains(&format!("\n  refused pod: {refusal}\n")),
        "{text}"
    );
}

#[tokio::test]
async fn status_reports_each_unit_and_the_next_action() {
    let (client, handle) = mock();
    let server = tokio::spawn(scenario(
        handle,
        vec![
            call("GET", STS, 200, db(Some(RECORD))),
            events(json!([])),
            call(
                "GET",
                "/api/v1/namespaces/shop/pods?&labelSelector=app.kubernetes.io%2Fname%3Ddb",
                200,
                pods_list(),
            ),
        ],
    ));
    let reports = status::gather(&client, Some("shop/db"), &policies(), now())
        .await
        .unwrap();
    server.await.unwrap();
    let r = &reports[0];
    assert_eq!(
        (
            r.from.as_str(),
            r.to.as_str(),
            r.state.as_str(),
            r.pause_after
        ),
        ("1.7.0", "1.8.0", "Paused", "first")
    );
    assert_eq!((r.partition, r.progress_percent), (Some(4), 20));
    assert_eq!(r.units[0].version.as_deref(), Some("1.8.0"));
    assert_eq!(r.units[1].version.as_deref(), Some("1.7.0"));
    assert!(r.units[1].next, "unit 3 restarts next");
    assert_eq!(
        r.next.command.as_deref(),
        Some("upgrade-guard resume shop/db")
    );
    let text = upgrade_guard::refresh::status::text(&reports);
    assert!(text.starts_with("StatefulSet shop/db: 1.7.0 → 1.8.0  Paused  pause-after first  partition 4  20% refreshed\n"), "{text}");
    assert!(text.contains("  3     db-3                      1.7.0       db-99fb5d7f6        yes    1        ← restarts next\n"), "{text}");
    assert!(text.ends_with("  next: paused after unit 4 (db-4) refreshed to 1.8.0; check it, then resume\n  run:  upgrade-guard resume shop/db\n"), "{text}");
    let json = serde_json::to_value(&reports).unwrap();
    assert_eq!(json[0]["units"][0]["pod"], "db-4");
    assert_eq!(json[0]["next"]["command"], "upgrade-guard resume shop/db");
}

#[tokio::test]
async fn resume_sets_the_annotation_guarded_by_the_record_it_read() {
    let (client, handle) = mock();
    let mut patch = call(
        "PATCH",
        &format!("{STS}?&fieldManager=upgrade-guard"),
        200,
        db(Some(RECORD)),
    );
    patch.body = Some(json!([record_test(RECORD),
        {"op": "add", "path": "/metadata/annotations/upgradeguard.io~1resume", "value": NOW}]));
    let server = tokio::spawn(scenario(
        handle,
        vec![call("GET", STS, 200, db(Some(RECORD))), patch],
    ));
    let said = resume::resume(&client, "shop/db", None, now())
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(
        said,
        "StatefulSet shop/db: resume requested; the controller goes on at its next step"
    );
}

#[tokio::test]
async fn resume_refuses_when_there_is_nothing_to_resume_and_writes_nothing() {
    let (client, handle) = mock();
    let server = tokio::spawn(scenario(handle, vec![call("GET", STS, 200, db(None))]));
    let err = resume::resume(&client, "shop/db", None, now())
        .await
        .unwrap_err()
        .to_string();
    server.await.unwrap();
    assert_eq!(
        err,
        "StatefulSet shop/db: no refresh in progress, nothing to resume or pause"
    );
}

#[tokio::test]
async fn a_failed_refresh_needs_force_and_a_reason() {
    let failed = RECORD.replace("\"Paused\"", "\"Failed\"");
    let (client, handle) = mock();
    let server = tokio::spawn(scenario(
        handle,
        vec![call("GET", STS, 200, db(Some(&failed)))],
    ));
    let err = resume::resume(&client, "shop/db", None, now())
        .await
        .unwrap_err()
        .to_string();
    server.await.unwrap();
    assert!(
        err.contains("the refresh failed") && err.contains("--force --reason TEXT"),
        "{err}"
    );

    let (client, handle) = mock();
    let mut patch = call(
        "PATCH",
        &format!("{STS}?&fieldManager=upgrade-guard"),
        200,
        db(Some(&failed)),
    );
    patch.body = Some(json!([record_test(&failed),
        {"op": "add", "path": "/metadata/annotations/upgradeguard.io~1resume", "value": "force: vendor confirmed the probe is wrong"}]));
    let server = tokio::spawn(scenario(
        handle,
        vec![call("GET", STS, 200, db(Some(&failed))), patch],
    ));
    resume::resume(
        &client,
        "shop/db",
        Some("vendor confirmed the probe is wrong"),
        now(),
    )
    .await
    .unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn pause_holds_after_the_unit_in_progress_and_finds_deployments_too() {
    let (client, handle) = mock();
    let mut web: Value = sample("deploy-update-set-image.json")["request"]["object"].clone();
    web["metadata"]["resourceVersion"] = json!("77");
    let rolling = RECORD.replace("\"Paused\"", "\"RollingOut\"");
    web["metadata"]["annotations"]["upgradeguard.io/refresh"] = json!(rolling);
    let mut patch = call(
        "PATCH",
        "/apis/apps/v1/namespaces/shop/deployments/web?&fieldManager=upgrade-guard",
        200,
        web.clone(),
    );
    patch.body = Some(json!([record_test(&rolling),
        {"op": "add", "path": "/metadata/annotations/upgradeguard.io~1pause-after", "value": "all"}]));
    let server = tokio::spawn(scenario(
        handle,
        vec![
            call(
                "GET",
                "/apis/apps/v1/namespaces/shop/statefulsets/web",
                404,
                not_found(),
            ),
            call(
                "GET",
                "/apis/apps/v1/namespaces/shop/deployments/web",
                200,
                web,
            ),
            patch,
        ],
    ));
    let said = pause::pause(&client, "shop/web").await.unwrap();
    server.await.unwrap();
    assert!(
        said.starts_with("Deployment shop/web: holds after the unit in progress"),
        "{said}"
    );
}

#[tokio::test]
async fn a_bad_target_is_refused_before_any_request() {
    let (client, handle) = mock();
    let server = tokio::spawn(scenario(handle, vec![]));
    let err = pause::pause(&client, "db").await.unwrap_err().to_string();
    server.await.unwrap();
    assert_eq!(err, "\"db\": name the workload as NAMESPACE/NAME");
}

#[tokio::test]
async fn the_pre_refresh_check_says_whether_it_would_be_admitted_and_can_start() {
    // Settled at 1.7.0, 3 of 3 Ready.
    let mut settled = sample("sts-update-set-image.json")["request"]["oldObject"].clone();
    settled["status"]["readyReplicas"] = json!(3);
    settled["status"]["replicas"] = json!(3);
    settled["status"]["updatedReplicas"] = json!(3);
    let (client, handle) = mock();
    let server = tokio::spawn(scenario(
        handle,
        vec![call("GET", STS, 200, settled.clone())],
    ));
    let (ok, text) = check::live(&client, "shop/db", "1.8.0", &policies(), now())
        .await
        .unwrap();
    server.await.unwrap();
    assert!(ok, "{text}");
    assert_eq!(
        text,
        "StatefulSet shop/db: a refresh to 1.8.0 would be admitted (1.7.0 → 1.8.0)\nhealth: 3 of 3 pods Ready, no refresh running: ready to start\n"
    );

    let (client, handle) = mock();
    let server = tokio::spawn(scenario(handle, vec![call("GET", STS, 200, settled)]));
    let (ok, text) = check::live(&client, "shop/db", "1.9.0", &policies(), now())
        .await
        .unwrap();
    server.await.unwrap();
    assert!(!ok);
    assert!(
        text.contains("would be refused: StatefulSet shop/db: 1.7.0 → 1.9.0 skips 1.8.x"),
        "{text}"
    );

    // Mid-refresh: not ready to start.
    let (client, handle) = mock();
    let server = tokio::spawn(scenario(
        handle,
        vec![call("GET", STS, 200, db(Some(RECORD)))],
    ));
    let (ok, text) = check::live(&client, "shop/db", "1.9.0", &policies(), now())
        .await
        .unwrap();
    server.await.unwrap();
    assert!(!ok);
    assert!(
        text.contains("a refresh is running: not ready to start"),
        "{text}"
    );
}

/// A resumed refresh: lower the partition, clear the resume annotation.
fn lowering() -> (Workload, Action) {
    let mut resumed = db(Some(RECORD));
    resumed["metadata"]["annotations"]["upgradeguard.io/resume"] = json!(NOW);
    let w = of(resumed);
    let mut record: RefreshRecord = serde_json::from_str(RECORD).unwrap();
    record.partition = Some(3);
    record.state = upgrade_guard::workload::RefreshState::RollingOut;
    record.reason = None;
    let action = Action {
        record: Some(record),
        partition: Some(3),
        clear_resume: true,
        event: Some(StepEvent {
            reason: "RefreshResumed",
            message: "resumed; refreshing unit 3".into(),
            warning: false,
        }),
        ..Default::default()
    };
    (w, action)
}

/// The record and the partition, each guarded by its value as read, and
/// the resume annotation removed only if it is still the one acted on.
fn lowering_ops(action: &Action) -> Value {
    json!([
        record_test(RECORD),
        {"op": "replace", "path": "/metadata/annotations/upgradeguard.io~1refresh",
            "value": serde_json::to_string(action.record.as_ref().unwrap()).unwrap()},
        {"op": "test", "path": "/metadata/annotations/upgradeguard.io~1resume", "value": NOW},
        {"op": "remove", "path": "/metadata/annotations/upgradeguard.io~1resume"},
        {"op": "test", "path": "/spec/updateStrategy/rollingUpdate/partition", "value": 4},
        {"op": "replace", "path": "/spec/updateStrategy/rollingUpdate/partition", "value": 3},
    ])
}

fn event_post() -> Call {
    call(
        "POST",
        "/apis/events.k8s.io/v1/namespaces/shop/events?",
        201,
        json!({}),
    )
}

fn recorder(client: &kube::Client) -> kube::runtime::events::Recorder {
    let reporter = kube::runtime::events::Reporter {
        controller: "upgrade-guard".into(),
        instance: None,
    };
    kube::runtime::events::Recorder::new(client.clone(), reporter)
}

#[tokio::test]
async fn the_executor_patches_partition_and_record_in_one_guarded_request_then_records_an_event() {
    let (w, action) = lowering();
    let (client, handle) = mock();
    let mut patch = call(
        "PATCH",
        &format!("{STS}?&fieldManager=upgrade-guard"),
        200,
        db(Some(RECORD)),
    );
    patch.body = Some(lowering_ops(&action));
    let server = tokio::spawn(scenario(handle, vec![patch, event_post()]));
    let outcome = executor::execute(&client.client, Some(&recorder(&client.client)), &w, &action)
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(outcome, Outcome::Applied);
}

#[tokio::test]
async fn a_409_is_sent_again_and_then_applies() {
    let (w, action) = lowering();
    let (client, handle) = mock();
    let patch = || {
        let mut c = call(
            "PATCH",
            &format!("{STS}?&fieldManager=upgrade-guard"),
            200,
            db(Some(RECORD)),
        );
        c.body = Some(lowering_ops(&action));
        c
    };
    let mut busy = patch();
    (busy.status, busy.reply) = (409, status(409, "Conflict", "the object has been modified"));
    let server = tokio::spawn(scenario(handle, vec![busy, patch(), event_post()]));
    let outcome = executor::execute(&client.client, Some(&recorder(&client.client)), &w, &action)
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Applied,
        "the same guarded patch, sent again"
    );
}

#[tokio::test]
async fn a_concurrent_change_is_never_overwritten() {
    let (w, action) = lowering();
    let (client, handle) = mock();
    // The API server's answer when a `test` fails: the record was changed.
    let failed = status(
        422,
        "",
        "testing value /metadata/annotations/upgradeguard.io~1refresh failed: test failed",
    );
    let server = tokio::spawn(scenario(
        handle,
        vec![call(
            "PATCH",
            &format!("{STS}?&fieldManager=upgrade-guard"),
            422,
            failed,
        )],
    ));
    let outcome = executor::execute(&client.client, None, &w, &action)
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Conflict,
        "no event, no retry with stale data"
    );
}

#[tokio::test]
async fn nothing_to_do_sends_nothing() {
    let (client, handle) = mock();
    let server = tokio::spawn(scenario(handle, vec![]));
    let outcome = executor::execute(
        &client.client,
        None,
        &of(db(Some(RECORD))),
        &Action::default(),
    )
    .await
    .unwrap();
    server.await.unwrap();
    assert_eq!(outcome, Outcome::Nothing);
}

#[tokio::test]
async fn the_first_replica_creates_the_lease_and_a_lost_race_is_not_leading() {
    use k8s_openapi::api::coordination::v1::Lease;
    use upgrade_guard::refresh::lease;
    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/upgrade-guard/leases";
    let (client, handle) = mock();
    let api: kube::Api<Lease> = kube::Api::namespaced(client.client, "upgrade-guard");
    let created = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "upgrade-guard-refresh", "namespace": "upgrade-guard", "resourceVersion": "1"},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15}});
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "exists"});
    let server = tokio::spawn(scenario(
        handle,
        vec![
            call(
                "GET",
                &format!("{LEASES}/upgrade-guard-refresh"),
                404,
                not_found(),
            ),
            call("POST", &format!("{LEASES}?"), 201, created.clone()),
            call(
                "GET",
                &format!("{LEASES}/upgrade-guard-refresh"),
                404,
                not_found(),
            ),
            call("POST", &format!("{LEASES}?"), 409, conflict),
        ],
    ));
    assert!(
        lease::try_lead(&api, "pod-a", "upgrade-guard")
            .await
            .unwrap()
    );
    assert!(
        !lease::try_lead(&api, "pod-b", "upgrade-guard")
            .await
            .unwrap(),
        "lost the race"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn a_current_holders_lease_is_left_alone() {
    use k8s_openapi::api::coordination::v1::Lease;
    use upgrade_guard::refresh::lease;
    let (client, handle) = mock();
    let api: kube::Api<Lease> = kube::Api::namespaced(client.client, "upgrade-guard");
    let held = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "upgrade-guard-refresh", "namespace": "upgrade-guard", "resourceVersion": "5"},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15, "renewTime": jiff::Timestamp::now().to_string()}});
    let server = tokio::spawn(scenario(
        handle,
        vec![call(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/upgrade-guard/leases/upgrade-guard-refresh",
            200,
            held,
        )],
    ));
    assert!(
        !lease::try_lead(&api, "pod-b", "upgrade-guard")
            .await
            .unwrap()
    );
    server.await.unwrap();
}

const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/upgrade-guard/leases/upgrade-guard-refresh";

fn lease_held_by(holder: Option<&str>) -> Value {
    let mut lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "upgrade-guard-refresh", "namespace": "upgrade-guard", "resourceVersion": "1"},
        "spec": {"leaseDurationSeconds": 15}});
    if let Some(holder) = holder {
        lease["spec"]["holderIdentity"] = json!(holder);
    }
    lease
}

type Holder = (
    upgrade_guard::refresh::lease::Leading,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
    tokio::task::JoinHandle<()>,
);

/// `lease::hold` as pod-a against the mock API server, which finds no Lease,
/// creates it, then answers `then`: until when pod-a may write, the stop,
/// and the holder's and the server's tasks.
fn hold_as_pod_a(then: Vec<Call>) -> Holder {
    use upgrade_guard::refresh::lease;
    let (client, handle) = mock();
    let mut calls = vec![
        call("GET", LEASE, 404, not_found()),
        call(
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/upgrade-guard/leases?",
            201,
            lease_held_by(Some("pod-a")),
        ),
    ];
    calls.extend(then);
    let server = tokio::spawn(scenario(handle, calls));
    let (leading_tx, leading) = tokio::sync::watch::channel(None);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let holder = tokio::spawn(lease::hold(
        kube::Api::namespaced(client.client, "upgrade-guard"),
        "pod-a".into(),
        "upgrade-guard".into(),
        leading_tx,
        stopped,
    ));
    (leading, stop, holder, server)
}

#[tokio::test]
async fn the_lease_holder_publishes_until_when_it_may_write_and_gives_the_lease_up_when_stopped() {
    use upgrade_guard::refresh::lease;
    let asked = tokio::time::Instant::now();
    let (mut leading, stop, holder, server) = hold_as_pod_a(vec![
        // Stopped: read, and written back without a holder, guarded by
        // the resourceVersion read.
        call("GET", LEASE, 200, lease_held_by(Some("pod-a"))),
        call("PUT", &format!("{LEASE}?"), 200, lease_held_by(None)).with_body(lease_held_by(None)),
    ]);
    leading.changed().await.unwrap();
    assert!(lease::may_write(&leading));
    let until = leading.borrow().unwrap();
    let budget = lease::LEASE_SECONDS_DURATION - lease::MARGIN;
    assert!(
        asked + budget <= until && until <= tokio::time::Instant::now() + budget,
        "it stops writing before its lease, counted from when it asked, runs out"
    );
    stop.send(true).unwrap();
    holder.await.unwrap();
    server.await.unwrap();
    assert!(!lease::may_write(&leading));
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_stops_writing_before_its_lease_runs_out() {
    use std::time::Duration;
    use upgrade_guard::refresh::lease;
    let unavailable = status(503, "ServiceUnavailable", "etcd is down");
    // Every renewal after it fails (one each RENEW, 2 s), and so does the
    // release when it is stopped at 13 s.
    let (mut leading, stop, holder, server) = hold_as_pod_a(
        (0..7)
            .map(|_| call("GET", LEASE, 503, unavailable.clone()))
            .collect(),
    );
    leading.changed().await.unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(
        lease::may_write(&leading),
        "12 s of the 15 s lease are its to use"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !lease::may_write(&leading),
        "not renewed since: it must not write, 2 s before another replica may take over"
    );
    stop.send(true).unwrap();
    holder.await.unwrap();
    server.await.unwrap();
}

const POLICIES: &str = "/apis/upgradeguard.io/v1alpha1/upgradepolicies";

/// The example semver-db policy, as the cluster serves it.
fn semver_db_resource() -> Value {
    let text = std::fs::read_to_string(root().join("policies/semver-db.yaml")).unwrap();
    let mut v: Value = serde_yaml_ng::from_str(&text).unwrap();
    v["metadata"]["namespace"] = json!("shop");
    v["metadata"]["resourceVersion"] = json!("9");
    v
}

#[tokio::test]
async fn status_reads_the_clusters_policies_with_no_local_files() {
    let (client, handle) = mock();
    let server = tokio::spawn(scenario(
        handle,
        vec![
            call(
                "GET",
                &format!("{POLICIES}?"),
                200,
                json!({"apiVersion": "upgradeguard.io/v1alpha1", "kind": "UpgradePolicyList", "metadata": {},
                    "items": [semver_db_resource(),
                        {"apiVersion": "upgradeguard.io/v1alpha1", "kind": "UpgradePolicy",
                         "metadata": {"name": "typo", "namespace": "shop"}, "spec": {"selector": {}, "step": "minr"}}]}),
            ),
            call("GET", STS, 200, db(Some(RECORD))),
            events(json!([])),
            call(
                "GET",
                "/api/v1/namespaces/shop/pods?&labelSelector=app.kubernetes.io%2Fname%3Ddb",
                200,
                pods_list(),
            ),
        ],
    ));
    let (policies, notes) = cluster::policies(&client, None).await.unwrap();
    let reports = status::gather(&client, Some("shop/db"), &policies, now())
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(policies.len(), 1);
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].starts_with("skipped: UpgradePolicy shop/typo") && notes[0].contains("spec.step"),
        "{notes:?}"
    );
    assert_eq!(
        reports[0].pause_after, "first",
        "judged by the cluster's policy"
    );
    assert_eq!(reports[0].units[0].version.as_deref(), Some("1.8.0"));
    assert_eq!(
        reports[0].next.command.as_deref(),
        Some("upgrade-guard resume shop/db")
    );
}

#[tokio::test]
async fn a_missing_crd_is_one_sentence_and_status_still_lists_every_record() {
    let (client, handle) = mock();
    let server = tokio::spawn(scenario(
        handle,
        vec![
            call(
                "GET",
                &format!("{POLICIES}?"),
                404,
                status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            ),
            call(
                "GET",
                "/apis/apps/v1/statefulsets?",
                200,
                json!({"kind": "StatefulSetList", "apiVersion": "apps/v1", "metadata": {}, "items": [db(Some(RECORD))]}),
            ),
            call(
                "GET",
                "/apis/apps/v1/deployments?",
                200,
                json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {}, "items": []}),
            ),
            events(json!([])),
            call(
                "GET",
                "/api/v1/namespaces/shop/pods?&labelSelector=app.kubernetes.io%2Fname%3Ddb",
                200,
                pods_list(),
            ),
        ],
    ));
    let (policies, notes) = cluster::policies(&client, None).await.unwrap();
    let reports = status::gather(&client, None, &policies, now())
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(
        notes,
        [
            "the UpgradePolicy CRD (upgradepolicies.upgradeguard.io) is not installed on https://10.0.0.1:6443; no policy applies (give --policies DIR for local ones)"
        ]
    );
    let text = upgrade_guard::refresh::status::text(&reports);
    assert!(
        text.starts_with("StatefulSet shop/db: 1.7.0 → 1.8.0  Paused  pause-after -  partition 4"),
        "{text}"
    );
    assert!(text.contains("  next: paused"), "{text}");
    assert!(
        text.contains("its UpgradePolicy is not among the cluster's nor in --policies here"),
        "{text}"
    );
    assert!(
        text.contains("  run:  upgrade-guard resume shop/db"),
        "{text}"
    );
}

#[tokio::test]
async fn errors_from_the_api_server_are_one_sentence_naming_it() {
    let (client, handle) = mock();
    let server = tokio::spawn(scenario(
        handle,
        vec![call(
            "GET",
            STS,
            403,
            status(
                403,
                "Forbidden",
                "statefulsets.apps \"db\" is forbidden: User \"dev\" cannot get resource \"statefulsets\" in the namespace \"shop\"",
            ),
        )],
    ));
    let err = resume::resume(&client, "shop/db", None, now())
        .await
        .unwrap_err()
        .to_string();
    server.await.unwrap();
    assert_eq!(
        err,
        "shop/db: permission denied (403 Forbidden): statefulsets.apps \"db\" is forbidden: User \"dev\" cannot get resource \"statefulsets\" in the namespace \"shop\" (API server https://10.0.0.1:6443)"
    );
    assert!(!err.contains("Status {"));
}

#[test]
fn an_unreachable_api_server_is_named_with_the_cause() {
    let e = kube::Error::Service("tcp connect error: Connection refused (os error 111)".into());
    assert_eq!(
        cluster::describe("https://127.0.0.1:6443", "shop/db", &e),
        "shop/db: cannot reach the API server at https://127.0.0.1:6443: tcp connect error: Connection refused (os error 111)"
    );
}

#[tokio::test]
async fn a_forced_rollback_deletes_the_stuck_pod_guarded_by_its_uid() {
    let rolling_back = r#"{"from":"1.8.0","to":"1.7.0","started":"2026-11-21T19:00:00Z","state":"RollingBack","partition":4,"rollback":true,"unitStarted":"2026-11-21T19:00:00Z"}"#;
    let w = of(db(Some(rolling_back)));
    let mut record: RefreshRecord = serde_json::from_str(rolling_back).unwrap();
    record.unit_started = Some(now());
    let action = Action {
        record: Some(record.clone()),
        delete_pod: Some(PodRef {
            name: "db-4".into(),
            uid: "pod-uid-4".into(),
        }),
        event: Some(StepEvent {
            reason: "StuckPodDeleted",
            message: "deleted pod db-4".into(),
            warning: true,
        }),
        ..Default::default()
    };
    let (client, handle) = mock();
    let mut patch = call(
        "PATCH",
        &format!("{STS}?&fieldManager=upgrade-guard"),
        200,
        db(Some(rolling_back)),
    );
    patch.body = Some(json!([record_test(rolling_back),
        {"op": "replace", "path": "/metadata/annotations/upgradeguard.io~1refresh", "value": serde_json::to_string(&record).unwrap()}]));
    let pod_path = "/api/v1/namespaces/shop/pods/db-4?";
    let mut busy = call(
        "DELETE",
        pod_path,
        409,
        status(409, "Conflict", "try again"),
    );
    busy.body = Some(json!({"preconditions": {"uid": "pod-uid-4"}}));
    let mut delete = call(
        "DELETE",
        pod_path,
        200,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
    );
    delete.body = Some(json!({"preconditions": {"uid": "pod-uid-4"}}));
    let server = tokio::spawn(scenario(handle, vec![patch, busy, delete, event_post()]));
    let outcome = executor::execute(&client.client, Some(&recorder(&client.client)), &w, &action)
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(outcome, Outcome::Applied);
}

#[tokio::test]
async fn an_override_is_asked_of_rbac_for_the_requesting_user() {
    use k8s_openapi::api::authentication::v1::UserInfo;
    use upgrade_guard::webhook::rbac::Rbac;
    let user = UserInfo {
        username: Some("dev@example.com".into()),
        uid: Some("u-1".into()),
        groups: Some(vec!["dbas".into(), "system:authenticated".into()]),
        extra: None,
    };
    let sar = |allowed: bool| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": "dev@example.com"}, "status": {"allowed": allowed}})
    };
    let expected = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "metadata": {},
        "spec": {"user": "dev@example.com", "uid": "u-1", "groups": ["dbas", "system:authenticated"],
            "resourceAttributes": {"namespace": "shop", "verb": "force", "group": "upgradeguard.io", "resource": "upgradepolicies"}}});
    const SARS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews?";
    for (reply, status, want) in [
        (sar(true), 201, true),
        (sar(false), 201, false),
        (status_reply(), 403, false),
    ] {
        let (client, handle) = mock();
        let mut post = call("POST", SARS, status, reply);
        post.body = Some(expected.clone());
        let server = tokio::spawn(scenario(handle, vec![post]));
        let allowed = Rbac::new(client.client).may_force(&user, "shop").await;
        server.await.unwrap();
        assert_eq!(allowed, want);
    }
}

/// The API server refusing the SubjectAccessReview itself: no override.
fn status_reply() -> Value {
    status(403, "Forbidden", "cannot create subjectaccessreviews")
}
