//! Refresh hooks and failure handling, on the pure step function: hooks
//! before and after units and per release step, a hook failed or timed out
//! then retried then skipped, a controller restart with a Job in flight, a
//! Job upgrade-guard did not make, `onFailure: rollback` from each kind of
//! failure, a rollback's hooks, Deployments; and the webhook's part (every
//! unit held, the images recorded, an automatic rollback recognised by the
//! requester's identity).

mod common;

use std::collections::BTreeMap;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use upgrade_guard::decide::{Change, NoCluster, Requester, Rule, decide_as};
use upgrade_guard::policy::{Policy, PolicySet};
use upgrade_guard::refresh::hooks::{self, HookKind, HookRun};
use upgrade_guard::refresh::status::{ItemState, report};
use upgrade_guard::refresh::{Action, Observed, Settings, step};
use upgrade_guard::workload::{HookMark, RefreshRecord, RefreshState, Workload};

const T0: &str = "2026-11-21T10:00:00Z";

fn at(seconds: i64) -> jiff::Timestamp {
    T0.parse::<jiff::Timestamp>().unwrap() + jiff::SignedDuration::from_secs(seconds)
}

fn hook(name: &str) -> String {
    format!(
        "{{template: {{spec: {{restartPolicy: Never, containers: [{{name: {name}, image: 'tools:1', command: [/bin/{name}]}}]}}}}}}"
    )
}

/// A policy for `db` with the given hooks (`preRefresh`, …) and settings.
fn policy(hook_names: &[&str], extra: &str) -> Policy {
    let hooks: String = hook_names
        .iter()
        .map(|h| format!("      {h}: {}\n", hook(h)))
        .collect();
    let text = format!(
        "apiVersion: upgradeguard.io/v1alpha1
kind: UpgradePolicy
metadata: {{name: db}}
spec:
  selector: {{matchLabels: {{app.kubernetes.io/name: db}}}}
  containers: [db]
  releases: [1.7.0, 1.7.1, 1.7.2, 1.8.0]
  refresh:
    pauseAfter: none
{extra}    hooks:
{hooks}      timeoutSeconds: 600
"
    );
    PolicySet::parse(&text, "hooks.yaml").unwrap().remove(0)
}

fn record(extra: Value) -> Value {
    let mut r = json!({"from": "1.7.0", "to": "1.8.0", "started": T0, "state": "RollingOut",
        "unitStarted": T0, "images": {"db": "db:1.7.0"}});
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

/// A pod at `ordinal` on `revision`, Ready since `ready` (seconds after T0).
fn pod(ordinal: i32, revision: &str, ready: Option<i64>) -> Pod {
    let mut p = json!({"metadata": {"name": format!("db-{ordinal}"), "uid": format!("pod-{ordinal}"),
            "labels": {"controller-revision-hash": revision}},
        "status": {"conditions": [], "containerStatuses": [{"name": "db", "image": "x", "imageID": "", "ready": ready.is_some(), "restartCount": 0}]}});
    if let Some(s) = ready {
        p["status"]["conditions"] =
            json!([{"type": "Ready", "status": "True", "lastTransitionTime": at(s).to_string()}]);
    }
    serde_json::from_value(p).unwrap()
}

fn crashing(ordinal: i32) -> Pod {
    let mut p = serde_json::to_value(pod(ordinal, "new", None)).unwrap();
    p["status"]["containerStatuses"][0]["state"] =
        json!({"waiting": {"reason": "CrashLoopBackOff"}});
    serde_json::from_value(p).unwrap()
}

/// A StatefulSet `db` (or Deployment), its pods and hook Jobs, and the
/// effect of each action on them: what the API server would store.
struct World {
    object: Value,
    pods: Vec<Pod>,
    jobs: Vec<Job>,
    policy: Policy,
}

impl World {
    fn statefulset(replicas: i32, partition: i32, record: Value, policy: Policy) -> World {
        World {
            object: json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "db", "namespace": "shop", "uid": "sts-uid", "generation": 2,
                    "labels": {"app.kubernetes.io/name": "db"},
                    "annotations": {"upgradeguard.io/refresh": record.to_string()}},
                "spec": {"replicas": replicas, "serviceName": "db", "selector": {},
                    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}},
                    "template": {"spec": {"containers": [{"name": "db", "image": "db:1.8.0"}]}}},
                "status": {"replicas": replicas, "observedGeneration": 2, "currentRevision": "old", "updateRevision": "new"},
            }),
            pods: (0..replicas)
                .map(|o| pod(o, if o >= partition { "new" } else { "old" }, Some(-3600)))
                .collect(),
            jobs: Vec::new(),
            policy,
        }
    }

    fn workload(&self) -> Workload {
        of(self.object.clone())
    }

    fn settings(&self) -> Settings {
        Settings::of(&self.policy, &self.workload())
    }

    fn step(&self, now: i64) -> Action {
        let w = self.workload();
        step(&Observed {
            workload: &w,
            pods: &self.pods,
            jobs: &self.jobs,
            settings: &self.settings(),
            now: at(now),
        })
    }

    fn record(&self) -> RefreshRecord {
        self.workload().refresh_record().unwrap().unwrap()
    }

    fn annotate(&mut self, key: &str, value: &str) {
        self.object["metadata"]["annotations"][key] = json!(value);
    }

    /// What the executor and the API server make of an action.
    fn apply(&mut self, a: &Action, now: i64) {
        if let Some(job) = &a.create_job {
            let mut job = serde_json::to_value(job.as_ref()).unwrap();
            job["metadata"]["uid"] = json!(format!("job-{}", self.jobs.len()));
            job["metadata"]["creationTimestamp"] = json!(at(now).to_string());
            self.jobs.push(serde_json::from_value(job).unwrap());
        }
        if let Some(r) = &a.record {
            self.annotate(
                "upgradeguard.io/refresh",
                &serde_json::to_string(r).unwrap(),
            );
        }
        if a.clear_resume {
            self.object["metadata"]["annotations"]
                .as_object_mut()
                .unwrap()
                .remove("upgradeguard.io/resume");
        }
        if let Some(p) = a.partition {
            self.object["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = json!(p);
            // The StatefulSet controller restarts that unit on the new revision.
            let i = self
                .pods
                .iter()
                .position(|x| x.metadata.name.as_deref() == Some(&format!("db-{p}")))
                .unwrap();
            self.pods[i] = pod(p, "new", Some(now));
            self.report_status();
        }
        if let Some(paused) = a.paused {
            self.object["spec"]["paused"] = json!(paused);
        }
    }

    /// What the StatefulSet controller writes to the status once the pods
    /// changed: how many run the update revision, and, when all of them do
    /// and are Ready, that revision as the current one.
    fn report_status(&mut self) {
        let on_new =
            |p: &&Pod| p.metadata.labels.as_ref().unwrap()["controller-revision-hash"] == "new";
        let ready = |p: &&Pod| {
            let conditions = p.status.as_ref().unwrap().conditions.as_ref().unwrap();
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        };
        let updated = self.pods.iter().filter(on_new).count();
        let all_ready = self.pods.iter().all(|p| ready(&p));
        let status = &mut self.object["status"];
        status["updatedReplicas"] = json!(updated);
        if status["replicas"] == json!(updated) && all_ready {
            status["currentRevision"] = json!("new");
        }
    }

    /// The Job controller's verdict on the Job whose name starts so.
    fn finish(&mut self, prefix: &str, condition: &str) {
        let job = self
            .jobs
            .iter_mut()
            .find(|j| j.metadata.name.as_deref().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no Job {prefix}"));
        let mut value = serde_json::to_value(&*job).unwrap();
        value["status"] = json!({"conditions": [{"type": condition, "status": "True",
            "reason": if condition == "Failed" { "BackoffLimitExceeded" } else { "Completed" },
            "message": "Job has reached the specified backoff limit"}]});
        *job = serde_json::from_value(value).unwrap();
    }

    fn forget_job(&mut self, prefix: &str) {
        self.jobs
            .retain(|j| !j.metadata.name.as_deref().unwrap().starts_with(prefix));
    }
}

fn event(a: &Action) -> &str {
    a.event.as_ref().map_or("", |e| e.reason)
}

/// A Job's name without the refresh's hash: `db-pre-unit-2`.
fn short(job: &Job) -> String {
    let name = job.metadata.name.clone().unwrap();
    name[..name.len() - 9].to_string()
}

/// Steps the world until the refresh completes (or `limit` steps): Jobs
/// complete on the step after they were made; what happened, in order.
fn drive(world: &mut World, mut now: i64, limit: usize) -> Vec<String> {
    let mut log = Vec::new();
    for _ in 0..limit {
        now += 20;
        let a = world.step(now);
        if a.is_nothing() {
            let running: Vec<String> = world
                .jobs
                .iter()
                .filter(|j| j.status.is_none())
                .map(short)
                .collect();
            for name in running {
                world.finish(&name, "Complete");
            }
            continue;
        }
        if let Some(job) = &a.create_job {
            log.push(format!("job {}", short(job)));
        }
        if let Some(p) = a.partition {
            log.push(format!("partition {p}"));
        }
        world.apply(&a, now);
        if world.record().state == RefreshState::Completed {
            log.push("completed".into());
            break;
        }
    }
    log
}

#[test]
fn hooks_run_before_and_after_each_unit_and_once_per_release_step_at_the_end() {
    let p = policy(&["preRefresh", "preUnit", "postUnit", "postRefresh"], "");
    let mut world = World::statefulset(3, 3, record(json!({"partition": 3})), p);
    let log = drive(&mut world, 0, 100);
    assert_eq!(
        log,
        [
            "job db-pre-refresh",
            "job db-pre-unit-2",
            "partition 2",
            "job db-post-unit-2",
            "job db-pre-unit-1",
            "partition 1",
            "job db-post-unit-1",
            "job db-pre-unit-0",
            "partition 0",
            "job db-post-unit-0",
            "job db-post-refresh-0",
            "job db-post-refresh-1",
            "job db-post-refresh-2",
            "completed",
        ]
    );
    // Each postRefresh run knows its release step.
    let steps: Vec<(String, String)> = world
        .jobs
        .iter()
        .filter(|j| short(j).starts_with("db-post-refresh"))
        .map(|j| {
            let env = env_of(j);
            (env["UG_STEP_FROM"].clone(), env["UG_STEP_TO"].clone())
        })
        .collect();
    assert_eq!(
        steps,
        [("1.7.0", "1.7.1"), ("1.7.1", "1.7.2"), ("1.7.2", "1.8.0")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let r = world.record();
    assert_eq!(r.hooks.len(), 10, "{:?}", r.hooks);
    assert!(r.hooks.values().all(|m| *m == HookMark::Completed));
}

fn env_of(job: &Job) -> BTreeMap<String, String> {
    job.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn without_releases_post_refresh_runs_once_from_to() {
    assert_eq!(
        hooks::release_steps(&[], "1.7.0", "1.8.0"),
        [("1.7.0".to_string(), "1.8.0".to_string())]
    );
    let releases: Vec<_> = ["1.6.0", "1.7.0", "1.7.1", "1.7.2", "1.8.0", "1.9.0"]
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(
        hooks::release_steps(&releases, "1.7.0", "1.8.0").len(),
        3,
        "only the releases strictly between, then to"
    );
    assert_eq!(
        hooks::release_steps(&releases, "1.7.2", "1.8.0"),
        [("1.7.2".to_string(), "1.8.0".to_string())]
    );
    // An unreadable version: the one step, as written.
    assert_eq!(
        hooks::release_steps(&releases, "latest", "1.8.0"),
        [("latest".to_string(), "1.8.0".to_string())]
    );
}

#[test]
fn units_wait_for_their_pre_unit_hook_and_the_pause_comes_before_the_next_ones() {
    let p = policy(&["preUnit"], "");
    let mut world = World::statefulset(3, 3, record(json!({"partition": 3})), p);
    // pause-after: all, as the annotation says.
    world.annotate("upgradeguard.io/pause-after", "all");
    let a = world.step(10);
    assert_eq!((event(&a), a.partition), ("HookStarted", None));
    world.apply(&a, 10);
    assert!(world.step(20).is_nothing(), "the Job runs");
    world.finish("db-pre-unit-2", "Complete");
    let a = world.step(30);
    assert_eq!(event(&a), "HookCompleted");
    world.apply(&a, 30);
    let a = world.step(40);
    assert_eq!((event(&a), a.partition), ("UnitRefreshing", Some(2)));
    world.apply(&a, 40);
    // Unit 2 done: paused, and the next unit's hook does not run yet.
    let a = world.step(60);
    assert_eq!(event(&a), "RefreshPaused");
    assert!(a.create_job.is_none());
    world.apply(&a, 60);
    assert!(world.step(70).is_nothing());
    world.annotate("upgradeguard.io/resume", "now");
    let a = world.step(80);
    assert_eq!(event(&a), "HookStarted", "resumed: unit 1's preUnit runs");
    assert_eq!(short(a.create_job.as_ref().unwrap()), "db-pre-unit-1");
    assert!(!a.clear_resume, "the resume holds until the unit restarts");
    world.apply(&a, 80);
    world.finish("db-pre-unit-1", "Complete");
    let a = world.step(90);
    world.apply(&a, 90);
    let a = world.step(100);
    assert_eq!((event(&a), a.partition), ("RefreshResumed", Some(1)));
    assert!(a.clear_resume);
}

#[test]
fn a_failed_hook_holds_then_retry_runs_it_again_then_force_skips_it() {
    let p = policy(&["preUnit"], "");
    let mut world = World::statefulset(3, 3, record(json!({"partition": 3})), p);
    let a = world.step(10);
    world.apply(&a, 10);
    world.finish("db-pre-unit-2", "Failed");
    let a = world.step(20);
    assert_eq!(event(&a), "HookFailed");
    assert!(a.event.as_ref().unwrap().warning);
    assert!(a.restore_images.is_empty(), "onFailure: hold");
    assert_eq!(
        a.next.command.as_deref(),
        Some("upgrade-guard retry shop/db")
    );
    assert!(
        a.next.text.contains("BackoffLimitExceeded")
            && a.next
                .text
                .contains("upgrade-guard resume --force --reason TEXT shop/db"),
        "{}",
        a.next.text
    );
    world.apply(&a, 20);
    let r = world.record();
    assert_eq!(r.state, RefreshState::Failed);
    let held = world.step(30);
    assert!(held.is_nothing(), "held: nothing more is written");
    assert_eq!(
        held.next.command.as_deref(),
        Some("upgrade-guard retry shop/db")
    );

    // `retry` deleted the Job: it runs again under the same name, and the
    // refresh moves again.
    let name = world.jobs[0].metadata.name.clone();
    world.forget_job("db-pre-unit-2");
    let a = world.step(40);
    assert_eq!(event(&a), "HookStarted");
    assert_eq!(a.create_job.as_ref().unwrap().metadata.name, name);
    assert_eq!(a.record.as_ref().unwrap().state, RefreshState::RollingOut);
    world.apply(&a, 40);
    world.finish("db-pre-unit-2", "Failed");
    let a = world.step(50);
    world.apply(&a, 50);

    // Skipped with a reason: recorded, audited as a warning, and on.
    world.annotate("upgradeguard.io/resume", "force: switched over by hand");
    let a = world.step(60);
    assert_eq!(event(&a), "HookSkipped");
    assert!(a.event.as_ref().unwrap().warning);
    assert!(
        a.event
            .as_ref()
            .unwrap()
            .message
            .contains("switched over by hand")
    );
    assert!(a.clear_resume);
    world.apply(&a, 60);
    assert_eq!(
        world.record().hooks.get("preUnit/2"),
        Some(&HookMark::Skipped)
    );
    let a = world.step(70);
    assert_eq!(a.partition, Some(2));
}

#[test]
fn a_hook_that_runs_past_its_timeout_has_failed() {
    let p = policy(&["preRefresh"], "");
    let mut world = World::statefulset(3, 3, record(json!({"partition": 3})), p);
    let a = world.step(0);
    world.apply(&a, 0);
    let waiting = world.step(600);
    assert!(waiting.is_nothing());
    assert!(
        waiting.next.text.contains("0s left"),
        "{}",
        waiting.next.text
    );
    let a = world.step(601);
    assert_eq!(event(&a), "HookFailed");
    assert!(
        a.next.text.contains("did not complete within 600s"),
        "{}",
        a.next.text
    );
    // The Job controller stops it too: its deadline is the timeout.
    assert_eq!(
        world.jobs[0].spec.as_ref().unwrap().active_deadline_seconds,
        Some(600)
    );
}

#[test]
fn a_restarted_controller_finds_the_job_in_flight_and_makes_no_second_one() {
    let p = policy(&["preRefresh"], "");
    let mut world = World::statefulset(3, 3, record(json!({"partition": 3})), p);
    let a = world.step(0);
    world.apply(&a, 0);
    // A new controller reads only the cluster: the same step, the same Job.
    for now in [5, 50, 500] {
        let again = world.step(now);
        assert!(
            again.is_nothing() && again.create_job.is_none(),
            "{again:?}"
        );
        assert!(again.next.text.contains("is running"));
    }
    assert_eq!(world.jobs.len(), 1);
    // Completed and recorded, then the Job is gone (a TTL): never run again.
    world.finish("db-pre-refresh", "Complete");
    let a = world.step(510);
    world.apply(&a, 510);
    world.jobs.clear();
    let a = world.step(520);
    assert_eq!(a.partition, Some(2), "{a:?}");
    assert!(a.create_job.is_none());
}

#[test]
fn a_job_of_that_name_that_upgrade_guard_did_not_make_is_not_a_hook_that_ran() {
    let p = policy(&["preRefresh"], "");
    let mut world = World::statefulset(3, 3, record(json!({"partition": 3})), p);
    let a = world.step(0);
    let mut forged = serde_json::to_value(a.create_job.as_ref().unwrap().as_ref()).unwrap();
    forged["spec"]["template"]["spec"]["containers"][0]["command"] = json!(["/bin/true"]);
    forged["status"] = json!({"conditions": [{"type": "Complete", "status": "True"}]});
    world.jobs.push(serde_json::from_value(forged).unwrap());
    let a = world.step(10);
    assert_eq!(event(&a), "HookFailed");
    assert!(a.next.text.contains("did not make"), "{}", a.next.text);
    assert_eq!(a.partition, None);
}

fn rollback_policy(hook_names: &[&str]) -> Policy {
    policy(hook_names, "    onFailure: rollback\n")
}

#[test]
fn on_failure_rollback_puts_the_images_back_when_a_unit_crash_loops() {
    let mut world = World::statefulset(3, 2, record(json!({"partition": 2})), rollback_policy(&[]));
    world.pods[2] = crashing(2);
    let a = world.step(30);
    assert_eq!(event(&a), "AutomaticRollback");
    assert_eq!(
        a.restore_images,
        BTreeMap::from([("db".to_string(), "db:1.7.0".to_string())])
    );
    assert!(
        a.record.is_none(),
        "the webhook writes the rollback's record"
    );
    assert!(a.next.text.contains("crash-looping"), "{}", a.next.text);
}

#[test]
fn on_failure_rollback_when_a_unit_is_not_ready_in_time() {
    let mut world = World::statefulset(3, 2, record(json!({"partition": 2})), rollback_policy(&[]));
    world.pods[2] = pod(2, "new", None);
    assert!(world.step(600).restore_images.is_empty(), "still in time");
    let a = world.step(601);
    assert_eq!(event(&a), "AutomaticRollback");
    assert!(
        a.next.text.contains("not Ready after 600s"),
        "{}",
        a.next.text
    );
}

#[test]
fn on_failure_rollback_when_a_post_unit_hook_fails() {
    let mut world = World::statefulset(
        3,
        2,
        record(json!({"partition": 2})),
        rollback_policy(&["postUnit"]),
    );
    world.pods[2] = pod(2, "new", Some(0));
    let a = world.step(30);
    assert_eq!(event(&a), "HookStarted");
    world.apply(&a, 30);
    world.finish("db-post-unit-2", "Failed");
    let a = world.step(40);
    assert_eq!(event(&a), "AutomaticRollback");
    assert_eq!(
        a.restore_images.get("db").map(String::as_str),
        Some("db:1.7.0")
    );
}

#[test]
fn a_failed_rollback_holds_and_is_never_rolled_back_itself() {
    let back = record(
        json!({"partition": 2, "from": "1.8.0", "to": "1.7.0", "rollback": true,
        "state": "RollingBack", "images": {"db": "db:1.8.0"}}),
    );
    let mut world = World::statefulset(3, 2, back, rollback_policy(&[]));
    world.pods[2] = pod(2, "new", None);
    let a = world.step(601);
    assert_eq!(event(&a), "UnitUnhealthy");
    assert!(a.restore_images.is_empty());
    assert_eq!(a.record.unwrap().state, RefreshState::Failed);
}

#[test]
fn a_rollback_runs_the_unit_hooks_with_ug_rollback_and_no_post_refresh() {
    let back = record(
        json!({"partition": 3, "from": "1.8.0", "to": "1.7.0", "rollback": true,
        "state": "RollingBack", "images": {"db": "db:1.8.0"}}),
    );
    let p = policy(&["preUnit", "postRefresh"], "");
    let mut world = World::statefulset(3, 3, back, p);
    let log = drive(&mut world, 0, 60);
    assert_eq!(
        log,
        [
            "job db-pre-unit-2",
            "partition 2",
            "job db-pre-unit-1",
            "partition 1",
            "job db-pre-unit-0",
            "partition 0",
            "completed",
        ]
    );
    for job in &world.jobs {
        assert_eq!(env_of(job)["UG_ROLLBACK"], "true");
        assert_eq!(
            (&env_of(job)["UG_FROM"][..], &env_of(job)["UG_TO"][..]),
            ("1.8.0", "1.7.0")
        );
    }
}

#[test]
fn status_lists_every_item_with_its_state_and_counts_progress_over_items() {
    let p = policy(&["preRefresh", "preUnit", "postRefresh"], "");
    let mut world = World::statefulset(2, 2, record(json!({"partition": 2})), p.clone());
    for now in [10, 20] {
        let a = world.step(now);
        world.apply(&a, now);
        if let Some(job) = &a.create_job {
            world.finish(&short(job), "Complete");
        }
    }
    let a = world.step(30);
    world.apply(&a, 30);
    world.finish("db-pre-unit-1", "Failed");
    let a = world.step(40);
    world.apply(&a, 40);
    let w = world.workload();
    let r = report(&w, &world.pods, &world.jobs, Some(&p), at(50)).unwrap();
    let states: Vec<(&str, ItemState)> =
        r.items.iter().map(|i| (i.name.as_str(), i.state)).collect();
    assert_eq!(
        states,
        [
            ("preRefresh hook", ItemState::Completed),
            ("preUnit hook of unit 1", ItemState::HoldingFailed),
            ("unit 1 (db-1)", ItemState::Pending),
            ("preUnit hook of unit 0", ItemState::Pending),
            ("unit 0 (db-0)", ItemState::Pending),
            ("postRefresh hook 1.7.0 → 1.7.1", ItemState::Pending),
            ("postRefresh hook 1.7.1 → 1.7.2", ItemState::Pending),
            ("postRefresh hook 1.7.2 → 1.8.0", ItemState::Pending),
        ]
    );
    assert_eq!(r.items_done, 1);
    assert!(
        r.items[1]
            .job
            .as_deref()
            .unwrap()
            .starts_with("db-pre-unit-1-")
    );
    assert_eq!(
        r.next.command.as_deref(),
        Some("upgrade-guard retry shop/db")
    );
    let text = upgrade_guard::refresh::status::text(&[r]);
    assert!(text.contains("HOLDING_FAILED"), "{text}");
    assert!(text.contains("1 of 8 done"), "{text}");
}

#[test]
fn job_names_are_stable_bounded_and_differ_per_refresh() {
    let p = policy(&["preUnit"], "");
    let world = World::statefulset(3, 3, record(json!({"partition": 3})), p);
    let w = world.workload();
    let r = world.record();
    let run = HookRun::unit(HookKind::PreUnit, 2);
    let name = hooks::job_name(&w, &r, &run);
    assert_eq!(
        name,
        hooks::job_name(&w, &r, &run),
        "the same after a restart"
    );
    let mut later = r.clone();
    later.started = at(3600);
    assert_ne!(name, hooks::job_name(&w, &later, &run), "another refresh");
    let mut long = world.object.clone();
    long["metadata"]["name"] = json!("a".repeat(60));
    let long_name = hooks::job_name(&of(long), &r, &run);
    assert!(long_name.len() <= 63, "{long_name}");
    assert!(
        long_name.starts_with("aaaa") && long_name[..long_name.len() - 9].ends_with("-pre-unit-2"),
        "the workload's name is cut, never the hook's place: {long_name}"
    );
}

// ---- The webhook's part. ----

fn set_image(w: &Workload, image: &str) -> Workload {
    with(w, "/spec/template/spec/containers/0/image", json!(image))
}

fn live_db() -> Workload {
    let mut v = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "shop", "uid": "sts-uid", "generation": 1,
            "labels": {"app.kubernetes.io/name": "db"}},
        "spec": {"replicas": 3, "serviceName": "db", "selector": {},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {"spec": {"containers": [{"name": "db", "image": "db:1.7.0"}]}}},
        "status": {"replicas": 3, "observedGeneration": 1, "currentRevision": "old", "updateRevision": "old",
            "updatedReplicas": 3, "readyReplicas": 3, "currentReplicas": 3},
    });
    v["metadata"]["generation"] = json!(1);
    of(v)
}

#[test]
fn with_a_pre_unit_hook_the_webhook_holds_every_unit_and_records_the_images() {
    let set = PolicySet::new(vec![policy(&["preUnit"], "")]).unwrap();
    let old = live_db();
    let v = update(&old, &set_image(&old, "db:1.8.0"), &set);
    assert!(v.allowed, "{v:?}");
    let stored = patched(&set_image(&old, "db:1.8.0"), &v);
    assert_eq!(
        stored.partition(),
        Some(3),
        "nothing restarts before the hook"
    );
    let r = stored.refresh_record().unwrap().unwrap();
    assert_eq!(r.partition, Some(3));
    assert_eq!(r.images.get("db").map(String::as_str), Some("db:1.7.0"));

    // Without one, the first unit starts at once, as before.
    let plain = PolicySet::new(vec![policy(&["postUnit"], "")]).unwrap();
    let v = update(&old, &set_image(&old, "db:1.8.0"), &plain);
    assert_eq!(
        patched(&set_image(&old, "db:1.8.0"), &v).partition(),
        Some(2)
    );
}

#[test]
fn a_rollback_by_upgrade_guard_itself_is_recorded_as_automatic_and_nobody_elses() {
    let set = PolicySet::new(vec![rollback_policy(&[])]).unwrap();
    let old = live_db();
    let new = set_image(&old, "db:1.8.0");
    let started = patched(&new, &update(&old, &new, &set));
    // Mid-refresh (the status shows it), the images go back.
    let mid = with(&started, "/status/updateRevision", json!("new"));
    let back = set_image(&mid, "db:1.7.0");
    for (is_self, automatic) in [(true, true), (false, false)] {
        let who = Requester {
            is_self,
            ..Default::default()
        };
        let change = Change::update(mid.clone(), back.clone());
        let v = decide_as(&change, &set, &NoCluster, now(), &who);
        assert!(v.allowed, "{v:?}");
        let r = patched(&back, &v).refresh_record().unwrap().unwrap();
        assert!(r.rollback);
        assert_eq!(r.automatic, automatic, "is_self {is_self}");
        // The validating webhook recomputes the record as the same requester.
        let stored = patched(&back, &v);
        let check = Change::update(mid.clone(), stored);
        assert!(decide_as(&check, &set, &NoCluster, now(), &who).allowed);
    }
}

#[test]
fn a_deployment_waits_paused_for_its_pre_refresh_hook_and_runs_post_refresh_at_the_end() {
    let p = policy(&["preRefresh", "postRefresh"], "");
    let set = PolicySet::new(vec![p.clone()]).unwrap();
    let old = of(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "uid": "d-uid", "generation": 1,
            "labels": {"app.kubernetes.io/name": "db"}},
        "spec": {"replicas": 2, "selector": {}, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {"spec": {"containers": [{"name": "db", "image": "db:1.7.0"}]}}},
        "status": {"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "observedGeneration": 1},
    }));
    let new = set_image(&old, "db:1.8.0");
    let v = update(&old, &new, &set);
    let stored = patched(&new, &v);
    let d = json(&stored);
    assert_eq!(d["spec"]["paused"], true, "held for the preRefresh hook");
    // `kubectl rollout resume` while the backup runs is refused.
    let resumed = with(&stored, "/spec/paused", json!(false));
    let refused = update(&stored, &resumed, &set);
    assert_eq!(
        refused.rule,
        Some(Rule::FrozenDuringRefresh),
        "{}",
        refused.reason
    );
    assert!(
        refused.reason.contains("resuming the rollout (spec.paused) is refused while the refresh 1.7.0 → 1.8.0 is in progress (RollingOut): upgrade-guard paused it until the preRefresh hook completes"),
        "{}",
        refused.reason
    );
    let mut world = World {
        object: d,
        pods: Vec::new(),
        jobs: Vec::new(),
        policy: p,
    };
    world.object["metadata"]["annotations"]["upgradeguard.io/refresh"] = json!(
        serde_json::to_string(&RefreshRecord {
            unit_started: Some(at(0)),
            ..world.record()
        })
        .unwrap()
    );
    world.object["status"]["updatedReplicas"] = json!(0);
    world.object["metadata"]["generation"] = json!(2);
    world.object["status"]["observedGeneration"] = json!(2);
    let a = world.step(10);
    assert_eq!(short(a.create_job.as_ref().unwrap()), "web-pre-refresh");
    world.apply(&a, 10);
    world.finish("web-pre-refresh", "Complete");
    let a = world.step(20);
    assert_eq!((event(&a), a.paused), ("HookCompleted", Some(false)));
    world.apply(&a, 20);
    // The rollout finishes: postRefresh per release step, then Completed.
    world.object["status"]["updatedReplicas"] = json!(2);
    let mut made = Vec::new();
    for now in (30..200).step_by(10) {
        let a = world.step(now);
        if let Some(job) = &a.create_job {
            made.push(short(job));
        }
        world.apply(&a, now);
        for name in made.clone() {
            if world
                .jobs
                .iter()
                .any(|j| short(j) == name && j.status.is_none())
            {
                world.finish(&name, "Complete");
            }
        }
        if world.record().state == RefreshState::Completed {
            break;
        }
    }
    assert_eq!(
        made,
        [
            "web-post-refresh-0",
            "web-post-refresh-1",
            "web-post-refresh-2"
        ]
    );
    assert_eq!(world.record().state, RefreshState::Completed);
}

#[test]
fn policies_refuse_hooks_the_api_server_would_refuse_and_contradictions() {
    let base = "apiVersion: upgradeguard.io/v1alpha1\nkind: UpgradePolicy\nmetadata: {name: p}\nspec:\n  selector: {}\n";
    for (refresh, field) in [
        (
            "  refresh:\n    hooks:\n      preUnit: {template: {spec: {containers: [{name: a, image: b}]}}}\n",
            "spec.refresh.hooks.preUnit.template.spec.restartPolicy",
        ),
        (
            "  refresh:\n    hooks:\n      postRefresh: {template: {}}\n",
            "spec.refresh.hooks.postRefresh.template.spec",
        ),
        (
            "  refresh:\n    hooks:\n      preRefresh: {template: {spec: {restartPolicy: Never, containers: []}}}\n",
            "spec.refresh.hooks.preRefresh.template.spec.containers",
        ),
        (
            "  downgrade: deny\n  refresh:\n    onFailure: rollback\n",
            "spec.refresh.onFailure",
        ),
    ] {
        let err = PolicySet::parse(&format!("{base}{refresh}"), "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{err}");
        assert!(err.starts_with("p.yaml"), "{err}");
    }
}

#[test]
fn with_no_recorded_container_left_in_the_template_a_failure_holds_instead() {
    let r = record(json!({"partition": 2, "images": {"server": "db:1.7.0"}}));
    let mut world = World::statefulset(3, 2, r, rollback_policy(&[]));
    world.pods[2] = crashing(2);
    let a = world.step(30);
    assert_eq!(event(&a), "UnitUnhealthy");
    assert!(a.restore_images.is_empty());
    assert_eq!(a.record.unwrap().state, RefreshState::Failed);
}

#[test]
fn the_freeze_lasts_while_the_hooks_after_the_units_run_at_partition_zero() {
    use upgrade_guard::decide::Snapshot;
    use upgrade_guard::workload::WorkloadKind;
    // Every unit refreshed (partition 0, the status settled), the
    // migrations still to run: the record is active.
    let world = World::statefulset(
        3,
        0,
        record(json!({"partition": 0, "units": {"0": "1.8.0", "1": "1.8.0", "2": "1.8.0"}})),
        policy(&["postRefresh"], ""),
    );
    let mut live = world.object.clone();
    live["status"] = json!({"replicas": 3, "readyReplicas": 3, "updatedReplicas": 3, "currentReplicas": 3,
        "observedGeneration": 2, "currentRevision": "new", "updateRevision": "new"});
    let scale = Change::Scale {
        kind: WorkloadKind::StatefulSet,
        namespace: "shop".into(),
        name: "db".into(),
        from: 3,
        to: 5,
    };
    for (hooks, frozen) in [(&["postRefresh"][..], true), (&[][..], false)] {
        let set = PolicySet::new(vec![policy(hooks, "")]).unwrap();
        let mut cluster = Snapshot::default();
        cluster.insert_workload(of(live.clone()));
        let v = decide_as(&scale, &set, &cluster, now(), &Requester::default());
        assert_eq!(!v.allowed, frozen, "hooks {hooks:?}: {}", v.reason);
    }
}

#[test]
fn a_job_of_that_name_with_other_env_values_is_not_a_hook_that_ran_either() {
    let p = policy(&["preRefresh"], "");
    let mut world = World::statefulset(3, 3, record(json!({"partition": 3})), p);
    let a = world.step(0);
    let made = serde_json::to_value(a.create_job.as_ref().unwrap().as_ref()).unwrap();
    let env = made["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    let to = env.iter().position(|e| e["name"] == "UG_TO").unwrap();
    let mut forged = made.clone();
    forged["spec"]["template"]["spec"]["containers"][0]["env"][to]["value"] = json!("1.7.0");
    forged["status"] = json!({"conditions": [{"type": "Complete", "status": "True"}]});
    world.jobs.push(serde_json::from_value(forged).unwrap());
    let a = world.step(10);
    assert_eq!(event(&a), "HookFailed");
    assert!(a.next.text.contains("did not make"), "{}", a.next.text);

    // The Job as upgrade-guard made it, with what the API server adds
    // (defaulted container fields, the Job controller's labels), is its own.
    let mut own = made;
    own["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] =
        json!("/dev/termination-log");
    own["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
    own["spec"]["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"] = json!("x");
    own["status"] = json!({"conditions": [{"type": "Complete", "status": "True"}]});
    world.jobs = vec![serde_json::from_value(own).unwrap()];
    assert_eq!(event(&world.step(20)), "HookCompleted");
}
