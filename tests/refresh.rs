//! The refresh controller's step function: every pause mode, a pause
//! setting changed mid-refresh, resume, force, failure, timeout, quorum,
//! rollback, 1 and 5 replicas, and a controller that restarts anywhere (the
//! step reads only the cluster, so a restart is the same step again).

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use upgrade_guard::policy::PauseAfter;
use upgrade_guard::refresh::{Action, Observed, Settings, step};
use upgrade_guard::workload::{RefreshRecord, RefreshState, Workload};

const T0: &str = "2026-11-21T10:00:00Z";

fn at(seconds: i64) -> jiff::Timestamp {
    T0.parse::<jiff::Timestamp>().unwrap() + jiff::SignedDuration::from_secs(seconds)
}

fn settings(pause_after: PauseAfter) -> Settings {
    refresh_settings(pause_after)
}

fn record(partition: i32, state: &str, extra: Value) -> String {
    let mut r = json!({"from": "1.7.0", "to": "1.8.0", "started": T0, "state": state,
        "partition": partition, "unitStarted": T0});
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r.to_string()
}

/// A StatefulSet `db` mid-refresh: `record` in its annotation.
fn sts(replicas: i32, partition: i32, record: &str, annotations: Value) -> Workload {
    let mut ann = json!({"upgradeguard.io/refresh": record});
    for (k, v) in annotations.as_object().unwrap() {
        ann[k] = v.clone();
    }
    of(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "shop", "generation": 2, "annotations": ann},
        "spec": {"replicas": replicas, "serviceName": "db", "selector": {},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}},
            "template": {"spec": {"containers": [{"name": "db", "image": "db:1.8.0"}]}}},
        "status": {"replicas": replicas, "observedGeneration": 2, "currentRevision": "old", "updateRevision": "new"},
    }))
}

/// `w` as the StatefulSet controller reports it once every pod runs the
/// update revision and is Ready.
fn reported_done(w: &Workload) -> Workload {
    let replicas = w.replicas();
    let w = with(w, "/status/updatedReplicas", json!(replicas));
    with(&w, "/status/currentRevision", json!("new"))
}

/// A pod at `ordinal`, on `revision`, Ready since `ready` seconds after T0.
fn pod(ordinal: i32, revision: &str, ready: Option<i64>) -> Pod {
    let mut p = json!({"metadata": {"name": format!("db-{ordinal}"), "labels": {"controller-revision-hash": revision}},
        "status": {"conditions": [], "containerStatuses": [{"name": "db", "image": "x", "imageID": "", "ready": ready.is_some(), "restartCount": 0}]}});
    if let Some(s) = ready {
        p["status"]["conditions"] =
            json!([{"type": "Ready", "status": "True", "lastTransitionTime": at(s).to_string()}]);
    }
    serde_json::from_value(p).unwrap()
}

fn crashing(ordinal: i32) -> Pod {
    let mut p = serde_json::to_value(pod(ordinal, "new", None)).unwrap();
    p["status"]["containerStatuses"][0]["restartCount"] = json!(4);
    p["status"]["containerStatuses"][0]["state"] =
        json!({"waiting": {"reason": "CrashLoopBackOff"}});
    serde_json::from_value(p).unwrap()
}

/// Pods of a StatefulSet of `replicas` whose ordinals ≥ `from` are on the new
/// revision; all Ready since T0+`ready`.
fn pods(replicas: i32, from: i32, ready: i64) -> Vec<Pod> {
    (0..replicas)
        .map(|o| pod(o, if o >= from { "new" } else { "old" }, Some(ready)))
        .collect()
}

fn run(w: &Workload, pods: &[Pod], s: &Settings, now: i64) -> Action {
    step(&Observed {
        workload: w,
        pods,
        jobs: &[],
        settings: s,
        now: at(now),
    })
}

fn event(a: &Action) -> &str {
    a.event.as_ref().map_or("", |e| e.reason)
}

fn written(a: &Action) -> RefreshRecord {
    a.record.clone().expect("a record to write")
}

#[test]
fn a_new_refresh_is_acknowledged_once() {
    let fresh = json!({"from": "1.7.0", "to": "1.8.0", "started": T0, "state": "RollingOut", "partition": 4}).to_string();
    let w = sts(5, 4, &fresh, json!({}));
    let a = run(&w, &pods(5, 5, 0), &settings(PauseAfter::First), 5);
    assert_eq!(event(&a), "RefreshStarted");
    assert_eq!(written(&a).unit_started, Some(at(0)));
    assert_eq!(a.partition, None);
}

#[test]
fn nothing_is_done_without_an_active_refresh() {
    let done = record(0, "Completed", json!({"finished": T0}));
    assert!(
        run(
            &sts(5, 0, &done, json!({})),
            &pods(5, 0, 0),
            &settings(PauseAfter::None),
            5
        )
        .is_nothing()
    );
    let plain = of(
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "selector": {}, "template": {}}}),
    );
    assert!(run(&plain, &[], &settings(PauseAfter::None), 5).is_nothing());
}

#[test]
fn the_highest_ordinal_must_be_ready_for_min_ready_seconds_first() {
    let w = sts(5, 4, &record(4, "RollingOut", json!({})), json!({}));
    let s = settings(PauseAfter::None);
    // Not on the new revision yet.
    let a = run(&w, &pods(5, 5, 0), &s, 30);
    assert!(a.is_nothing());
    assert!(
        a.next.text.contains("waiting for unit 4 (db-4)"),
        "{}",
        a.next.text
    );
    // New revision, Ready since 100 s: 10 s of minReadySeconds not over at 105.
    let mut p = pods(5, 5, 0);
    p[4] = pod(4, "new", Some(100));
    let a = run(&w, &p, &s, 105);
    assert!(a.is_nothing());
    assert_eq!(a.recheck, Some(Duration::from_secs(5)));
    // At 110 it has settled: the partition goes down by one.
    let a = run(&w, &p, &s, 110);
    assert_eq!(a.partition, Some(3));
    assert_eq!(event(&a), "UnitRefreshed");
    let r = written(&a);
    assert_eq!(
        (r.partition, r.unit_started, r.state),
        (Some(3), Some(at(110)), RefreshState::RollingOut)
    );
    assert_eq!(r.units.get(&4).map(String::as_str), Some("1.8.0"));
}

#[test]
fn pause_after_first_holds_once_and_a_resume_goes_on_without_further_holds() {
    let s = settings(PauseAfter::First);
    let w = sts(5, 4, &record(4, "RollingOut", json!({})), json!({}));
    let a = run(&w, &pods(5, 4, 0), &s, 60);
    assert_eq!((event(&a), a.partition), ("RefreshPaused", None));
    let paused = written(&a);
    assert_eq!(paused.state, RefreshState::Paused);
    assert_eq!(
        a.next.command.as_deref(),
        Some("upgrade-guard resume shop/db")
    );
    // Looking again while paused changes nothing (a restarted controller too).
    let w = sts(5, 4, &serde_json::to_string(&paused).unwrap(), json!({}));
    assert!(run(&w, &pods(5, 4, 0), &s, 70).is_nothing());
    // The user resumes.
    let w = sts(
        5,
        4,
        &serde_json::to_string(&paused).unwrap(),
        json!({"upgradeguard.io/resume": "2026-11-21T10:02:00Z"}),
    );
    let a = run(&w, &pods(5, 4, 0), &s, 120);
    assert_eq!(
        (event(&a), a.partition, a.clear_resume),
        ("RefreshResumed", Some(3), true)
    );
    let resumed = written(&a);
    assert!(resumed.resumed);
    assert_eq!(resumed.state, RefreshState::RollingOut);
    // The next unit goes on without a hold.
    let w = sts(5, 3, &serde_json::to_string(&resumed).unwrap(), json!({}));
    let a = run(&w, &pods(5, 3, 0), &s, 200);
    assert_eq!((event(&a), a.partition), ("UnitRefreshed", Some(2)));
}

#[test]
fn pause_after_all_holds_after_every_unit() {
    let s = settings(PauseAfter::All);
    for partition in [4, 3, 2, 1] {
        let resumed = record(partition, "RollingOut", json!({"resumed": true}));
        let a = run(
            &sts(5, partition, &resumed, json!({})),
            &pods(5, partition, 0),
            &s,
            60,
        );
        assert_eq!(event(&a), "RefreshPaused", "unit {partition}");
        let a = run(
            &sts(
                5,
                partition,
                &resumed,
                json!({"upgradeguard.io/resume": "now"}),
            ),
            &pods(5, partition, 0),
            &s,
            60,
        );
        assert_eq!(a.partition, Some(partition - 1));
    }
}

#[test]
fn pause_after_none_never_holds() {
    let s = settings(PauseAfter::None);
    for partition in [4, 3, 2, 1] {
        let a = run(
            &sts(
                5,
                partition,
                &record(partition, "RollingOut", json!({})),
                json!({}),
            ),
            &pods(5, partition, 0),
            &s,
            60,
        );
        assert_eq!(
            (event(&a), a.partition),
            ("UnitRefreshed", Some(partition - 1))
        );
    }
}

#[test]
fn the_pause_setting_can_change_during_the_refresh() {
    let policy = policies()
        .iter()
        .find(|p| p.name == "semver-db")
        .unwrap()
        .clone();
    let paused = record(3, "Paused", json!({"reason": "paused after unit 3"}));
    // Was `all`; the user switches to `none`: it goes on without a resume.
    let w = sts(
        5,
        3,
        &paused,
        json!({"upgradeguard.io/pause-after": "none"}),
    );
    let s = Settings::of(&policy, &w);
    assert_eq!(s.pause_after, PauseAfter::None);
    let a = run(&w, &pods(5, 3, 0), &s, 60);
    assert_eq!(a.partition, Some(2));
    // And the other way: `none` → `all` holds after the current unit.
    let w = sts(
        5,
        2,
        &record(2, "RollingOut", json!({})),
        json!({"upgradeguard.io/pause-after": "all"}),
    );
    let a = run(&w, &pods(5, 2, 0), &Settings::of(&policy, &w), 60);
    assert_eq!(event(&a), "RefreshPaused");
}

#[test]
fn a_unit_not_ready_in_time_or_crash_looping_holds_the_refresh_as_failed() {
    let s = settings(PauseAfter::None);
    let w = sts(5, 4, &record(4, "RollingOut", json!({})), json!({}));
    let mut p = pods(5, 5, 0);
    p[4] = pod(4, "new", None);
    assert!(run(&w, &p, &s, 599).is_nothing());
    let a = run(&w, &p, &s, 601);
    assert_eq!(event(&a), "UnitUnhealthy");
    assert!(a.event.as_ref().unwrap().warning);
    let failed = written(&a);
    assert_eq!(failed.state, RefreshState::Failed);
    assert_eq!(
        failed.reason.as_deref(),
        Some("unit 4 (db-4) is not Ready after 600s")
    );
    assert!(a.next.text.contains("roll back"), "{}", a.next.text);
    assert_eq!(
        a.next.command.as_deref(),
        Some("upgrade-guard resume --force --reason TEXT shop/db")
    );

    p[4] = crashing(4);
    let a = run(&w, &p, &s, 30);
    assert_eq!(
        written(&a).reason.as_deref(),
        Some("unit 4 (db-4) is crash-looping")
    );
}

#[test]
fn a_failed_refresh_waits_for_a_forced_resume_or_a_rollback() {
    let s = settings(PauseAfter::None);
    let failed = record(
        4,
        "Failed",
        json!({"reason": "unit 4 (db-4) is crash-looping"}),
    );
    let mut p = pods(5, 5, 0);
    p[4] = crashing(4);
    assert!(run(&sts(5, 4, &failed, json!({})), &p, &s, 700).is_nothing());
    // A plain resume does not go past a failure.
    let plain = sts(5, 4, &failed, json!({"upgradeguard.io/resume": "now"}));
    assert!(run(&plain, &p, &s, 700).is_nothing());
    // A forced one does, audibly.
    let forced = sts(
        5,
        4,
        &failed,
        json!({"upgradeguard.io/resume": "force: the crash is a known false alarm"}),
    );
    let a = run(&forced, &p, &s, 700);
    assert_eq!(
        (event(&a), a.partition, a.clear_resume),
        ("RefreshResumed", Some(3), true)
    );
    let e = a.event.unwrap();
    assert!(
        e.warning && e.message.contains("forced past unhealthy unit 4"),
        "{}",
        e.message
    );
}

#[test]
fn the_partition_is_never_lowered_below_quorum() {
    let mut s = settings(PauseAfter::None);
    let w = sts(5, 3, &record(3, "RollingOut", json!({})), json!({}));
    let mut p = pods(5, 3, 0);
    p[0] = pod(0, "old", None); // one pod down: 4 of 5 Ready, 4 needed by default
    assert_eq!(run(&w, &p, &s, 60).partition, Some(2));
    p[1] = pod(1, "old", None); // two down: 3 of 5
    let a = run(&w, &p, &s, 60);
    assert_eq!(a.partition, None);
    assert!(
        a.next.text.contains("3 of 5 pods Ready, 4 needed"),
        "{}",
        a.next.text
    );
    s.min_available = Some(3);
    assert_eq!(run(&w, &p, &s, 60).partition, Some(2));
}

#[test]
fn the_last_unit_completes_the_refresh_or_the_rollback() {
    let s = settings(PauseAfter::All);
    let w = sts(
        5,
        0,
        &record(0, "RollingOut", json!({"resumed": true})),
        json!({}),
    );
    // Every pod is Ready on the new revision, but the StatefulSet
    // controller has not said so yet: the webhook's freeze still holds.
    let lagging = run(&w, &pods(5, 0, 0), &s, 60);
    assert!(lagging.is_nothing(), "{lagging:?}");
    assert_eq!(
        lagging.next.text,
        "waiting for the StatefulSet controller to report every unit on the new revision"
    );
    let w = reported_done(&w);
    let stale = with(&w, "/status/observedGeneration", json!(1));
    assert!(run(&stale, &pods(5, 0, 0), &s, 60).is_nothing());
    let a = run(&w, &pods(5, 0, 0), &s, 60);
    assert_eq!(event(&a), "RefreshCompleted");
    let r = written(&a);
    assert_eq!(
        (r.state, r.finished),
        (RefreshState::Completed, Some(at(60)))
    );
    // Not every unit is Ready yet: wait.
    let mut p = pods(5, 0, 0);
    p[3] = pod(3, "new", None);
    assert!(run(&w, &p, &s, 60).is_nothing());
    let back = reported_done(&sts(
        5,
        0,
        &record(0, "RollingBack", json!({"rollback": true})),
        json!({}),
    ));
    let done = run(&back, &pods(5, 0, 0), &s, 60);
    assert_eq!(event(&done), "RefreshCompleted");
    assert!(
        done.event
            .unwrap()
            .message
            .starts_with("rollback 1.7.0 → 1.8.0 completed")
    );
}

#[test]
fn a_rollback_mid_way_starts_again_from_the_highest_ordinal() {
    // The webhook reset the partition to 4 with a rollback record; the
    // update revision is the old template again ("new" here), so ordinal 4
    // is refreshed first while units 3 and below keep what they run.
    let s = settings(PauseAfter::None);
    let back = record(
        4,
        "RollingBack",
        json!({"from": "1.8.0", "to": "1.7.0", "rollback": true}),
    );
    let w = sts(5, 4, &back, json!({}));
    let mut p = pods(5, 4, 0);
    p[3] = crashing(3);
    // 4 of 5 Ready meets the quorum: go on to unit 3, the one to heal.
    let a = run(&w, &p, &s, 60);
    assert_eq!(
        (a.partition, written(&a).state),
        (Some(3), RefreshState::RollingBack)
    );
    // With a second pod down, it waits.
    p[2] = pod(2, "old", None);
    assert_eq!(run(&w, &p, &s, 60).partition, None);
}

#[test]
fn one_replica_completes_after_its_only_unit() {
    let s = settings(PauseAfter::First);
    let w = reported_done(&sts(1, 0, &record(0, "RollingOut", json!({})), json!({})));
    assert!(run(&w, &[pod(0, "new", None)], &s, 30).is_nothing());
    assert_eq!(
        event(&run(&w, &[pod(0, "new", Some(0))], &s, 30)),
        "RefreshCompleted"
    );
}

#[test]
fn a_stale_status_is_waited_for() {
    let w = sts(5, 4, &record(4, "RollingOut", json!({})), json!({}));
    let stale = with(&w, "/status/observedGeneration", json!(1));
    let a = run(&stale, &pods(5, 4, 0), &settings(PauseAfter::None), 60);
    assert!(a.is_nothing());
    assert!(a.next.text.contains("controller to see the change"));
}

fn deployment(
    paused: bool,
    updated: i32,
    available: i32,
    record: &str,
    annotations: Value,
) -> Workload {
    let mut ann = json!({"upgradeguard.io/refresh": record});
    for (k, v) in annotations.as_object().unwrap() {
        ann[k] = v.clone();
    }
    of(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "generation": 2, "annotations": ann},
        "spec": {"replicas": 4, "paused": paused, "selector": {},
            "template": {"spec": {"containers": [{"name": "web", "image": "web:2.1.0"}]}}},
        "status": {"replicas": 4, "updatedReplicas": updated, "availableReplicas": available, "observedGeneration": 2},
    }))
}

fn web_pod(image: &str, ready: Option<i64>) -> Pod {
    let mut p = json!({"metadata": {"name": format!("web-{}", image.replace([':', '.'], "-"))},
        "spec": {"containers": [{"name": "web", "image": image}]}, "status": {}});
    if let Some(s) = ready {
        p["status"]["conditions"] =
            json!([{"type": "Ready", "status": "True", "lastTransitionTime": at(s).to_string()}]);
    }
    serde_json::from_value(p).unwrap()
}

#[test]
fn a_deployment_is_paused_after_its_first_refreshed_pod_and_resumed_on_request() {
    let s = settings(PauseAfter::First);
    let rolling = record(0, "RollingOut", json!({}));
    let w = deployment(false, 1, 3, &rolling, json!({}));
    let waiting = run(
        &w,
        &[web_pod("web:2.1.0", None), web_pod("web:2.0.0", Some(0))],
        &s,
        30,
    );
    assert!(waiting.is_nothing());
    let a = run(
        &w,
        &[web_pod("web:2.1.0", Some(0)), web_pod("web:2.0.0", Some(0))],
        &s,
        30,
    );
    assert_eq!((event(&a), a.paused), ("RefreshPaused", Some(true)));
    let paused = serde_json::to_string(&written(&a)).unwrap();
    let w = deployment(
        true,
        1,
        4,
        &paused,
        json!({"upgradeguard.io/resume": "now"}),
    );
    let a = run(&w, &[], &s, 60);
    assert_eq!(
        (event(&a), a.paused, a.clear_resume),
        ("RefreshResumed", Some(false), true)
    );
    let done = deployment(
        false,
        4,
        4,
        &serde_json::to_string(&written(&a)).unwrap(),
        json!({}),
    );
    assert_eq!(event(&run(&done, &[], &s, 90)), "RefreshCompleted");
}

#[test]
fn an_on_delete_statefulset_is_never_partitioned_and_completes_when_every_pod_is_refreshed() {
    let mut w = json(&sts(3, 0, &record(0, "RollingOut", json!({})), json!({})));
    w["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
    let w = of(w);
    let s = settings(PauseAfter::None);
    let waiting = run(&w, &pods(3, 3, 0), &s, 100);
    assert!(waiting.is_nothing() && waiting.partition.is_none());
    assert_eq!(
        waiting.next.text,
        "updateStrategy OnDelete: delete pod db-2 to refresh it (`kubectl -n shop delete pod db-2`), highest ordinal first"
    );
    let starting = run(
        &w,
        &[
            pod(0, "old", Some(0)),
            pod(1, "old", Some(0)),
            pod(2, "new", None),
        ],
        &s,
        100,
    );
    assert!(
        starting.next.text.contains("waiting for db-2 to be Ready"),
        "{}",
        starting.next.text
    );
    // Every pod is on the new revision, but the status does not say so yet.
    let lagging = run(&w, &pods(3, 0, 0), &s, 100);
    assert!(lagging.is_nothing(), "{lagging:?}");
    assert_eq!(
        lagging.next.text,
        "waiting for the StatefulSet controller to report every unit on the new revision"
    );
    // As Kubernetes 1.23 reports it: every pod updated and Ready, and
    // `currentRevision` left where it was, as it always is for OnDelete.
    let w = with(&w, "/status/updatedReplicas", json!(3));
    let w = with(&w, "/status/readyReplicas", json!(3));
    let done = run(&w, &pods(3, 0, 0), &s, 100);
    assert_eq!(event(&done), "RefreshCompleted");
    assert_eq!(written(&done).state, RefreshState::Completed);
    assert_eq!(done.partition, None);
}

#[test]
fn without_a_visible_policy_the_record_alone_names_the_next_command() {
    use upgrade_guard::refresh::status::report;
    let next = |state: &str, extra: Value, jobs: &[k8s_openapi::api::batch::v1::Job]| {
        let w = sts(3, 2, &record(2, state, extra), json!({}));
        let r = report(&w, &pods(3, 3, 0), jobs, None, at(60)).unwrap();
        (r.next.command, r.next.text)
    };
    let (command, text) = next(
        "Failed",
        json!({"reason": "unit 2 (db-2) is crash-looping"}),
        &[],
    );
    assert_eq!(
        command.as_deref(),
        Some("kubectl -n shop rollout undo statefulset/db")
    );
    assert!(
        text.starts_with("held: unit 2 (db-2) is crash-looping: roll back to 1.7.0 (`kubectl -n shop rollout undo statefulset/db`)"),
        "{text}"
    );
    let failed_hook: k8s_openapi::api::batch::v1::Job = serde_json::from_value(json!({
        "metadata": {"name": "db-post-unit-2-1f9c03ab"},
        "status": {"conditions": [{"type": "Failed", "status": "True"}]}}))
    .unwrap();
    let (command, _) = next("Failed", json!({}), &[failed_hook]);
    assert_eq!(command.as_deref(), Some("upgrade-guard retry shop/db"));
    let (command, text) = next("Failed", json!({"rollback": true}), &[]);
    assert_eq!(
        command.as_deref(),
        Some("upgrade-guard resume --force --reason TEXT shop/db")
    );
    assert!(text.starts_with("the rollback to 1.8.0 is held"), "{text}");
    let (command, text) = next("RollingOut", json!({}), &[]);
    assert_eq!(command, None);
    assert!(
        text.starts_with("rolling out 1.7.0 → 1.8.0: the refresh controller moves it on"),
        "{text}"
    );
}
