//! The refresh controller's step, replayed on the watch events a real API
//! server sent (tests/data/recordings/refresh-statefulset.jsonl): at every
//! point where the recorded controller wrote, the step on the objects as
//! they were just before decides the same write, up to the rollback that
//! got stuck, where it now deletes the crash-looping pod instead.

mod common;

use common::{of, recording, root};
use serde_json::Value;
use upgrade_guard::policy::{Policy, PolicySet};
use upgrade_guard::refresh::status::report;
use upgrade_guard::refresh::{Action, Observed, PodRef, Settings, step};
use upgrade_guard::workload::{REFRESH, RefreshRecord, RefreshState, Workload};

fn events() -> Vec<Value> {
    recording::events("refresh-statefulset.jsonl")
}

fn policy() -> Policy {
    let path = root().join("tests/data/recordings/sqlgw-policy.yaml");
    let set = PolicySet::load(&path).unwrap();
    set.iter().next().unwrap().clone()
}

/// The cluster as the watch has shown it so far.
type Cluster = recording::Watched;

impl Cluster {
    fn workload(&self) -> Workload {
        of(self.sts.clone().unwrap())
    }

    fn step(&self, now: jiff::Timestamp) -> Action {
        let w = self.workload();
        let settings = Settings::of(&policy(), &w);
        step(&Observed {
            workload: &w,
            pods: &self.typed_pods(),
            jobs: &[],
            settings: &settings,
            now,
        })
    }

    /// The latest moment the objects show: the controller decided after it.
    fn latest(&self) -> jiff::Timestamp {
        let mut times: Vec<jiff::Timestamp> = Vec::new();
        for pod in self.pods.values() {
            for c in pod["status"]["conditions"].as_array().into_iter().flatten() {
                times.extend(
                    c["lastTransitionTime"]
                        .as_str()
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok()),
                );
            }
        }
        if let Some(Some(Ok(r))) = self.sts.as_ref().map(|s| of(s.clone()).refresh_record()) {
            times.extend(
                [Some(r.started), r.unit_started, r.finished]
                    .into_iter()
                    .flatten(),
            );
        }
        times.into_iter().max().unwrap()
    }
}

fn record_of(object: &Value) -> Option<RefreshRecord> {
    serde_json::from_str(object["metadata"]["annotations"][REFRESH].as_str()?).ok()
}

fn partition_of(object: &Value) -> Option<i64> {
    object["spec"]["updateStrategy"]["rollingUpdate"]["partition"].as_i64()
}

/// The recorded controller writes: the record changed, the template did not
/// (the webhook's records come with a template change).
fn controller_writes() -> Vec<(usize, Cluster, Value)> {
    let mut cluster = Cluster::default();
    let mut writes = Vec::new();
    for (i, event) in events().iter().enumerate() {
        let object = &event["object"];
        if object["kind"] == "StatefulSet"
            && let Some(before) = &cluster.sts
            && before["metadata"]["annotations"][REFRESH]
                != object["metadata"]["annotations"][REFRESH]
            && before["spec"]["template"] == object["spec"]["template"]
        {
            writes.push((i, cluster.clone(), object.clone()));
        }
        cluster.apply(event);
    }
    writes
}

const STUCK_POD_UID: &str = "27376b12-cc7a-4d51-aed9-4db428c96f55";

#[test]
fn the_step_decides_every_recorded_write_of_the_controller_until_the_stuck_rollback() {
    let writes = controller_writes();
    let mut states = Vec::new();
    for (i, before, after) in &writes {
        let recorded = record_of(after).unwrap();
        let previous = record_of(before.sts.as_ref().unwrap()).unwrap();
        // The controller's own clock is in the record when it wrote one.
        let now = if recorded.finished != previous.finished {
            recorded.finished.unwrap()
        } else if recorded.unit_started != previous.unit_started {
            recorded.unit_started.unwrap()
        } else {
            before.latest() + jiff::SignedDuration::from_secs(5)
        };
        let action = before.step(now);
        if recorded.rollback && recorded.state == RefreshState::Failed {
            // Recorded: "not Ready after 20s", because nothing replaced the
            // pod. Now: the stuck pod is deleted, and only it.
            assert_eq!(
                action.delete_pod,
                Some(PodRef {
                    name: "sqlgw-3".into(),
                    uid: STUCK_POD_UID.into()
                }),
                "event {i}"
            );
            assert_eq!(action.partition, None);
            assert_eq!(action.record.unwrap().state, RefreshState::RollingBack);
            states.push("deletes sqlgw-3".to_string());
            continue;
        }
        assert_eq!(action.record.as_ref(), Some(&recorded), "event {i}");
        if partition_of(after) != partition_of(before.sts.as_ref().unwrap()) {
            assert_eq!(
                action.partition.map(i64::from),
                partition_of(after),
                "event {i}"
            );
        } else {
            assert_eq!(action.partition, None, "event {i}");
        }
        assert_eq!(
            action.delete_pod, None,
            "event {i}: nothing deleted outside a rollback"
        );
        states.push(format!("{:?} {:?}", recorded.state, recorded.partition));
    }
    assert_eq!(
        states,
        [
            "RollingOut Some(2)", // first look: RefreshStarted
            "Paused Some(2)",     // held after the first unit
            "RollingOut Some(1)", // resumed
            "RollingOut Some(0)",
            "Completed Some(0)",
            "RollingOut Some(3)",  // 3.4.5-broken: first look
            "Failed Some(3)",      // unit 3 crash-loops
            "RollingBack Some(3)", // rollout undo: first look
            "deletes sqlgw-3",
        ]
    );
}

#[test]
fn the_stuck_rollback_at_the_end_of_the_recording_deletes_sqlgw_3_and_nothing_else() {
    let mut cluster = Cluster::default();
    for event in events() {
        cluster.apply(&event);
    }
    let record = of(cluster.sts.clone().unwrap())
        .refresh_record()
        .unwrap()
        .unwrap();
    assert_eq!(
        (record.state, record.rollback),
        (RefreshState::Failed, true)
    );
    let action = cluster.step(cluster.latest() + jiff::SignedDuration::from_secs(60));
    assert_eq!(
        action.delete_pod,
        Some(PodRef {
            name: "sqlgw-3".into(),
            uid: STUCK_POD_UID.into()
        })
    );
    assert_eq!((action.partition, action.paused), (None, None));
    let written = action.record.unwrap();
    assert_eq!(
        (written.state, written.partition, written.reason.clone()),
        (RefreshState::RollingBack, Some(3), None)
    );
    assert_eq!(written.deleted_pod.as_deref(), Some(STUCK_POD_UID));
    let event = action.event.unwrap();
    assert_eq!(event.reason, "StuckPodDeleted");
    assert!(
        !action.next.text.contains("3.4.5-broken"),
        "{}",
        action.next.text
    );

    // A delete that did not take (the same pod, by UID, still there) is
    // not sent again: the rollback's timeout decides instead.
    let mut retried = cluster.clone();
    let sts = retried.sts.as_mut().unwrap();
    sts["metadata"]["annotations"][REFRESH] = serde_json::to_string(&written).unwrap().into();
    let again = retried.step(retried.latest() + jiff::SignedDuration::from_secs(1));
    assert_eq!(again.delete_pod, None, "{:?}", again.next);

    // Once the pod is gone and not yet recreated, nothing more is deleted.
    cluster.pods.remove("sqlgw-3");
    let after = cluster.step(cluster.latest() + jiff::SignedDuration::from_secs(61));
    assert_eq!(after.delete_pod, None);
}

#[test]
fn a_failed_refresh_names_the_workload_and_a_failed_rollback_never_offers_the_failed_version() {
    let writes = controller_writes();
    let (_, crash, _) = writes
        .iter()
        .find(|(_, _, after)| {
            record_of(after).is_some_and(|r| r.state == RefreshState::Failed && !r.rollback)
        })
        .unwrap();
    let action = crash.step(crash.latest());
    assert_eq!(
        action.next.text,
        "unit 3 (sqlgw-3) is crash-looping: roll back to 3.4.4 (`kubectl -n analytics rollout undo statefulset/sqlgw`) or go on anyway"
    );
    assert_eq!(
        action.next.command.as_deref(),
        Some("upgrade-guard resume --force --reason TEXT analytics/sqlgw")
    );

    // The recorded failed rollback, its pod already replaced and still not
    // Ready: the text offers no version but the one rolled back to.
    let mut cluster = Cluster::default();
    for event in events() {
        cluster.apply(&event);
    }
    let pod = cluster.pods.get_mut("sqlgw-3").unwrap();
    pod["metadata"]["labels"]["controller-revision-hash"] = "sqlgw-746999b954".into();
    let w = cluster.workload();
    let r = report(
        &w,
        &cluster.typed_pods(),
        &[],
        Some(&policy()),
        cluster.latest(),
    )
    .unwrap();
    assert_eq!(
        (r.state.as_str(), r.from.as_str(), r.to.as_str()),
        ("Failed", "3.4.5-broken", "3.4.4")
    );
    assert_eq!(
        r.next.text,
        "unit 3 (sqlgw-3) is not Ready after 20s: the rollback to 3.4.4 is held; look at the pods (`kubectl -n analytics get pods`) or go on anyway"
    );
}

#[test]
fn status_of_the_recorded_hold_names_the_resume_command() {
    let writes = controller_writes();
    let (_, _, paused) = writes
        .iter()
        .find(|(_, _, after)| record_of(after).is_some_and(|r| r.state == RefreshState::Paused))
        .unwrap();
    let mut cluster = Cluster::default();
    for event in events() {
        cluster.apply(&event);
        if event["object"] == *paused {
            break;
        }
    }
    let now = cluster.latest() + jiff::SignedDuration::from_secs(5);
    let r = report(
        &cluster.workload(),
        &cluster.typed_pods(),
        &[],
        Some(&policy()),
        now,
    )
    .unwrap();
    assert_eq!(
        (r.state.as_str(), r.pause_after, r.partition),
        ("Paused", "first", Some(2))
    );
    assert_eq!(
        r.next.command.as_deref(),
        Some("upgrade-guard resume analytics/sqlgw")
    );
    let versions: Vec<_> = r.units.iter().map(|u| u.version.clone().unwrap()).collect();
    assert_eq!(versions, ["3.4.4", "3.4.2", "3.4.2"]);

    // Without a policy the record and the pods still show, and the next
    // action follows from the record alone: upgrade-guard wrote it.
    let r = report(&cluster.workload(), &cluster.typed_pods(), &[], None, now).unwrap();
    assert_eq!(
        (r.from.as_str(), r.to.as_str(), r.pause_after),
        ("3.4.2", "3.4.4", "-")
    );
    assert_eq!(
        r.next.command.as_deref(),
        Some("upgrade-guard resume analytics/sqlgw")
    );
    assert_eq!(
        r.next.text,
        "paused: paused after unit 2 (sqlgw-2) refreshed to 3.4.4; check it, then resume (its UpgradePolicy is not among the cluster's nor in --policies here (serve may read it from its own policy files: give the same with --policies to see versions))"
    );

    assert_eq!(r.units.len(), 3);
}
