//! A whole 5-replica refresh, end to end, against an in-memory model of the
//! StatefulSet controller as the real one behaved on the recorded cluster
//! (tests/data/recordings): OrderedReady, so nothing is created or replaced
//! while any pod is not Ready; then the highest pod at ordinal ≥ partition
//! not on the update revision is replaced, one at a time; a missing pod is
//! recreated on the update revision at ordinal ≥ partition, the current one
//! below. Pods become Ready after a delay, or crash when told. Paused tokio
//! time. The webhook starts the refresh (and a rollback) through `decide`;
//! the controller's step drives it. Hook Jobs run in a model of the Job
//! controller: Complete a while after they are created, or Failed when
//! told; an automatic rollback's patch goes through the webhook as
//! upgrade-guard's own identity, as the API server would send it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tokio::time::Instant;
use upgrade_guard::decide::{self, Change, NoCluster, Requester};
use upgrade_guard::policy::{PauseAfter, PolicySet};
use upgrade_guard::refresh::{Action, Observed, Settings, step};
use upgrade_guard::workload::{RefreshRecord, RefreshState, Workload};

const READY_AFTER: Duration = Duration::from_secs(30);
/// How long a hook Job runs before the Job controller says Complete.
const JOB_RUNS: Duration = Duration::from_secs(20);

struct SimJob {
    job: Job,
    created: Instant,
    /// The Job controller marks it Failed instead.
    fails: bool,
}

struct SimPod {
    revision: String,
    created: Instant,
    crashing: bool,
    uid: u64,
}

struct Model {
    sts: Value,
    pods: BTreeMap<i32, SimPod>,
    /// Pods at these ordinals crash on this image.
    crash: Option<(BTreeSet<i32>, String)>,
    start: Instant,
    t0: jiff::Timestamp,
    /// Pod UIDs handed out so far.
    uids: u64,
    /// The executor's pod deletes are dropped (the controller as it was).
    ignore_deletes: bool,
    /// The policies the webhook decides with.
    policies: PolicySet,
    jobs: Vec<SimJob>,
    /// Jobs whose name starts with one of these fail, once each.
    failing_jobs: BTreeSet<String>,
}

fn revision_of(sts: &Value) -> String {
    let image = sts["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    format!("db-{}", image.rsplit(':').next().unwrap())
}

impl Model {
    fn new() -> Model {
        let mut sts = value("generated/live-db-1.8.0.json");
        sts["spec"]["replicas"] = json!(5);
        sts["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("registry.example.com/shop/db:1.7.0");
        sts["metadata"]["generation"] = json!(1);
        let start = Instant::now();
        let revision = revision_of(&sts);
        let pods = (0..5)
            .map(|o| {
                (
                    o,
                    SimPod {
                        revision: revision.clone(),
                        created: start - Duration::from_secs(3600),
                        crashing: false,
                        uid: o as u64,
                    },
                )
            })
            .collect();
        let mut model = Model {
            sts,
            pods,
            crash: None,
            start,
            t0: "2026-11-21T10:00:00Z".parse().unwrap(),
            uids: 5,
            ignore_deletes: false,
            policies: policies(),
            jobs: Vec::new(),
            failing_jobs: BTreeSet::new(),
        };
        model.reconcile();
        model
    }

    fn now(&self) -> jiff::Timestamp {
        self.t0 + jiff::SignedDuration::try_from(Instant::now() - self.start).unwrap()
    }

    fn at(&self, instant: Instant) -> jiff::Timestamp {
        let offset = instant
            .checked_duration_since(self.start)
            .map_or(-3600, |d| d.as_secs() as i64);
        self.t0 + jiff::SignedDuration::from_secs(offset)
    }

    fn partition(&self) -> i64 {
        self.sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"]
            .as_i64()
            .unwrap_or(0)
    }

    /// A new pod at `ordinal` on `revision`, crashing if told to.
    fn create(&mut self, ordinal: i32, revision: &str) {
        let image = revision.trim_start_matches("db-").to_string();
        let crashing = self
            .crash
            .as_ref()
            .is_some_and(|(ords, bad)| ords.contains(&ordinal) && *bad == image);
        self.uids += 1;
        self.pods.insert(
            ordinal,
            SimPod {
                revision: revision.to_string(),
                created: Instant::now(),
                crashing,
                uid: self.uids,
            },
        );
    }

    /// What the StatefulSet controller does (OrderedReady), one change a
    /// pass; then the status.
    fn reconcile(&mut self) {
        let update = revision_of(&self.sts);
        let current = self.sts["status"]["currentRevision"]
            .as_str()
            .unwrap_or(&update)
            .to_string();
        let partition = self.partition();
        let mut blocked = false;
        for ordinal in 0..5 {
            match self.pods.get(&ordinal) {
                None => {
                    let revision = if i64::from(ordinal) >= partition {
                        &update
                    } else {
                        &current
                    };
                    self.create(ordinal, &revision.clone());
                    blocked = true;
                    break;
                }
                Some(pod) if !self.is_ready(pod) => {
                    blocked = true;
                    break;
                }
                Some(_) => {}
            }
        }
        if !blocked {
            for ordinal in (0..5).rev().filter(|o| i64::from(*o) >= partition) {
                if self.pods[&ordinal].revision != update {
                    self.create(ordinal, &update.clone());
                    break;
                }
            }
        }
        let updated = self.pods.values().filter(|p| p.revision == update).count();
        let ready = self.pods.values().filter(|p| self.is_ready(p)).count();
        let current = if updated == 5 {
            update.clone()
        } else {
            self.sts["status"]["currentRevision"]
                .as_str()
                .unwrap_or(&update)
                .to_string()
        };
        self.sts["status"] = json!({"replicas": 5, "updatedReplicas": updated, "readyReplicas": ready,
            "currentRevision": current, "updateRevision": update, "observedGeneration": self.sts["metadata"]["generation"]});
    }

    fn is_ready(&self, pod: &SimPod) -> bool {
        !pod.crashing && Instant::now() >= pod.created + READY_AFTER
    }

    fn workload(&self) -> Workload {
        of(self.sts.clone())
    }

    fn pods(&self) -> Vec<Pod> {
        self.pods
            .iter()
            .map(|(o, p)| {
                let mut pod = json!({"metadata": {"name": format!("db-{o}"), "uid": p.uid.to_string(), "labels": {"controller-revision-hash": p.revision}},
                    "spec": {"containers": [{"name": "db", "image": format!("registry.example.com/shop/db:{}", p.revision.trim_start_matches("db-"))}]},
                    "status": {"conditions": [], "containerStatuses": [{"name": "db", "image": "", "imageID": "", "ready": self.is_ready(p), "restartCount": if p.crashing { 5 } else { 0 }}]}});
                if p.crashing {
                    pod["status"]["containerStatuses"][0]["state"] = json!({"waiting": {"reason": "CrashLoopBackOff"}});
                } else if self.is_ready(p) {
                    pod["status"]["conditions"] = json!([{"type": "Ready", "status": "True",
                        "lastTransitionTime": self.at(p.created + READY_AFTER).to_string()}]);
                }
                serde_json::from_value(pod).unwrap()
            })
            .collect()
    }

    /// A user's `kubectl set image`, through the webhook as the API server would.
    fn set_image(&mut self, version: &str) -> decide::Verdict {
        let old = self.workload();
        let mut new = self.sts.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!(format!("registry.example.com/shop/db:{version}"));
        let verdict = decide::decide(
            &Change::update(old, of(new.clone())),
            &self.policies,
            &NoCluster,
            self.now(),
        );
        if verdict.allowed {
            json_patch::patch(&mut new, &verdict.patch).unwrap();
            new["metadata"]["generation"] =
                json!(self.sts["metadata"]["generation"].as_i64().unwrap() + 1);
            self.sts = new;
        }
        verdict
    }

    fn annotate(&mut self, key: &str, value: &str) {
        self.sts["metadata"]["annotations"][key] = json!(value);
    }

    /// The hook Jobs as the Job controller leaves them now.
    fn jobs(&self) -> Vec<Job> {
        self.jobs
            .iter()
            .map(|j| {
                let mut job = serde_json::to_value(&j.job).unwrap();
                job["metadata"]["creationTimestamp"] = json!(self.at(j.created).to_string());
                if Instant::now() >= j.created + JOB_RUNS {
                    let kind = if j.fails { "Failed" } else { "Complete" };
                    job["status"] = json!({"conditions": [{"type": kind, "status": "True", "reason": if j.fails { "BackoffLimitExceeded" } else { "Completed" }}]});
                }
                serde_json::from_value(job).unwrap()
            })
            .collect()
    }

    /// What `upgrade-guard retry` does: the failed Job deleted.
    fn retry(&mut self) {
        self.jobs.retain(|j| !j.fails);
    }

    /// The controller's own patch of the template (an automatic rollback),
    /// through the webhook as its own identity.
    fn restore(&mut self, images: &std::collections::BTreeMap<String, String>) {
        let old = self.workload();
        let mut new = self.sts.clone();
        for container in new["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
        {
            if let Some(image) = images.get(container["name"].as_str().unwrap()) {
                container["image"] = json!(image);
            }
        }
        let me = Requester {
            is_self: true,
            ..Default::default()
        };
        let change = Change::update(old, of(new.clone()));
        let verdict = decide::decide_as(&change, &self.policies, &NoCluster, self.now(), &me);
        assert!(
            verdict.allowed,
            "the webhook admits the automatic rollback: {}",
            verdict.reason
        );
        json_patch::patch(&mut new, &verdict.patch).unwrap();
        new["metadata"]["generation"] =
            json!(self.sts["metadata"]["generation"].as_i64().unwrap() + 1);
        self.sts = new;
    }

    /// What the executor does.
    fn apply(&mut self, action: &Action) {
        if let Some(job) = &action.create_job {
            let name = job.metadata.name.clone().unwrap();
            let fails = match self
                .failing_jobs
                .iter()
                .find(|p| name.starts_with(p.as_str()))
            {
                Some(prefix) => {
                    let prefix = prefix.clone();
                    self.failing_jobs.remove(&prefix)
                }
                None => false,
            };
            self.jobs.push(SimJob {
                job: *job.clone(),
                created: Instant::now(),
                fails,
            });
        }
        if !action.restore_images.is_empty() {
            self.restore(&action.restore_images);
        }
        if let Some(record) = &action.record {
            self.annotate(
                "upgradeguard.io/refresh",
                &serde_json::to_string(record).unwrap(),
            );
        }
        if let Some(p) = action.partition {
            self.sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = json!(p);
            self.sts["metadata"]["generation"] =
                json!(self.sts["metadata"]["generation"].as_i64().unwrap() + 1);
        }
        if let Some(pod) = &action.delete_pod
            && !self.ignore_deletes
        {
            let ordinal: i32 = pod.name.trim_start_matches("db-").parse().unwrap();
            if self
                .pods
                .get(&ordinal)
                .is_some_and(|p| p.uid.to_string() == pod.uid)
            {
                self.pods.remove(&ordinal);
            }
        }
        if action.clear_resume {
            self.sts["metadata"]["annotations"]
                .as_object_mut()
                .unwrap()
                .remove("upgradeguard.io/resume");
        }
    }

    fn record(&self) -> RefreshRecord {
        self.workload().refresh_record().unwrap().unwrap()
    }
}

fn settings(pause_after: PauseAfter) -> Settings {
    refresh_settings(pause_after)
}

/// Runs the controller until the refresh completes; a user resumes every
/// hold after a minute. Returns the events, as `Reason` or `Reason:unit`.
async fn drive(model: &mut Model, settings: &Settings, resume_holds: bool) -> Vec<String> {
    let mut events = Vec::new();
    for _ in 0..2000 {
        model.reconcile();
        let (w, pods, jobs) = (model.workload(), model.pods(), model.jobs());
        let action = step(&Observed {
            workload: &w,
            pods: &pods,
            jobs: &jobs,
            settings,
            now: model.now(),
        });
        if let Some(e) = &action.event {
            let unit = action
                .partition
                .map(|p| format!(":{}", p + 1))
                .unwrap_or_default();
            let job = action
                .create_job
                .as_ref()
                .map(|j| {
                    let name = j.metadata.name.clone().unwrap();
                    format!(":{}", &name[..name.len() - 9])
                })
                .unwrap_or_default();
            events.push(format!("{}{unit}{job}", e.reason));
        }
        model.apply(&action);
        let record = model.record();
        match record.state {
            RefreshState::Completed => return events,
            RefreshState::Paused if resume_holds && action.event.is_some() => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                model.annotate("upgradeguard.io/resume", "now");
            }
            RefreshState::Failed if action.event.is_some() => return events,
            _ => {}
        }
        tokio::time::sleep(action.recheck.unwrap_or(Duration::from_secs(10))).await;
    }
    panic!("the refresh never finished: {events:?}");
}

fn all_on(model: &Model, revision: &str) -> bool {
    model.pods.values().all(|p| p.revision == revision)
}

#[tokio::test(start_paused = true)]
async fn pause_after_none_refreshes_every_unit_highest_first() {
    let mut model = Model::new();
    assert!(model.set_image("1.8.0").allowed);
    assert_eq!(
        model.partition(),
        4,
        "the webhook started it at the highest ordinal"
    );
    let events = drive(&mut model, &settings(PauseAfter::None), false).await;
    assert_eq!(
        events,
        [
            "RefreshStarted",
            "UnitRefreshed:4",
            "UnitRefreshed:3",
            "UnitRefreshed:2",
            "UnitRefreshed:1",
            "RefreshCompleted"
        ]
    );
    assert!(all_on(&model, "db-1.8.0"));
    let r = model.record();
    assert_eq!((r.state, model.partition()), (RefreshState::Completed, 0));
    assert_eq!(r.units.len(), 5);
}

#[tokio::test(start_paused = true)]
async fn pause_after_first_holds_once_then_goes_on() {
    let mut model = Model::new();
    model.set_image("1.8.0");
    let events = drive(&mut model, &settings(PauseAfter::First), true).await;
    assert_eq!(
        events,
        [
            "RefreshStarted",
            "RefreshPaused",
            "RefreshResumed:4",
            "UnitRefreshed:3",
            "UnitRefreshed:2",
            "UnitRefreshed:1",
            "RefreshCompleted"
        ]
    );
    assert!(all_on(&model, "db-1.8.0"));
}

#[tokio::test(start_paused = true)]
async fn pause_after_all_holds_after_every_unit() {
    let mut model = Model::new();
    model.set_image("1.8.0");
    let events = drive(&mut model, &settings(PauseAfter::All), true).await;
    let holds = events.iter().filter(|e| *e == "RefreshPaused").count();
    assert_eq!(holds, 4, "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("RefreshCompleted"));
    let resumed: Vec<&str> = events
        .iter()
        .filter(|e| e.starts_with("RefreshResumed"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        resumed,
        [
            "RefreshResumed:4",
            "RefreshResumed:3",
            "RefreshResumed:2",
            "RefreshResumed:1"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_unit_holds_the_refresh_and_a_rollback_undoes_it_in_the_same_order() {
    let mut model = Model::new();
    model.crash = Some((BTreeSet::from([2]), "1.8.0".into()));
    model.set_image("1.8.0");
    let started = Instant::now();
    let events = drive(&mut model, &settings(PauseAfter::None), false).await;
    assert_eq!(
        events,
        [
            "RefreshStarted",
            "UnitRefreshed:4",
            "UnitRefreshed:3",
            "UnitUnhealthy"
        ]
    );
    let failed = model.record();
    assert_eq!(failed.state, RefreshState::Failed);
    assert_eq!(
        failed.reason.as_deref(),
        Some("unit 2 (db-2) is crash-looping")
    );
    assert_eq!(model.partition(), 2, "held at the failing unit");
    assert!(Instant::now() - started < Duration::from_secs(300));

    // Another new version is refused; the rollback is admitted by the webhook.
    assert!(!model.set_image("1.9.0").allowed);
    let back = model.set_image("1.7.0");
    assert!(back.allowed, "{}", back.reason);
    assert_eq!(
        model.partition(),
        4,
        "a rollback starts again from the highest ordinal"
    );
    let events = drive(&mut model, &settings(PauseAfter::None), false).await;
    assert_eq!(
        events,
        [
            "RefreshRolledBack",
            "StuckPodDeleted",
            "UnitRefreshed:4",
            "UnitRefreshed:3",
            "UnitRefreshed:2",
            "UnitRefreshed:1",
            "RefreshCompleted"
        ]
    );
    assert!(all_on(&model, "db-1.7.0"));
    assert!(model.pods.values().all(|p| !p.crashing));
    let r = model.record();
    assert!(r.rollback && r.state == RefreshState::Completed);
}

#[tokio::test(start_paused = true)]
async fn without_the_forced_delete_the_rollback_is_stuck_as_on_the_real_cluster() {
    let mut model = Model::new();
    model.crash = Some((BTreeSet::from([2]), "1.8.0".into()));
    model.set_image("1.8.0");
    drive(&mut model, &settings(PauseAfter::None), false).await;
    assert!(model.set_image("1.7.0").allowed);
    model.ignore_deletes = true;
    let events = drive(&mut model, &settings(PauseAfter::None), false).await;
    assert_eq!(
        events,
        ["RefreshRolledBack", "StuckPodDeleted", "UnitUnhealthy"]
    );
    let r = model.record();
    assert_eq!(
        r.reason.as_deref(),
        Some("unit 4 (db-4) is not Ready after 600s"),
        "the crash-looping db-2 blocks every replacement"
    );
    assert!(model.pods[&2].crashing && model.pods[&4].revision == "db-1.8.0");
}

#[tokio::test(start_paused = true)]
async fn a_restarted_controller_carries_on_from_the_cluster_alone() {
    // Drive half-way, then "restart": nothing but the model (the cluster) is kept.
    let mut model = Model::new();
    model.set_image("1.8.0");
    let s = settings(PauseAfter::None);
    for _ in 0..12 {
        model.reconcile();
        let (w, pods) = (model.workload(), model.pods());
        let action = step(&Observed {
            workload: &w,
            pods: &pods,
            jobs: &[],
            settings: &s,
            now: model.now(),
        });
        model.apply(&action);
        tokio::time::sleep(action.recheck.unwrap_or(Duration::from_secs(10))).await;
    }
    let midway = model.partition();
    assert!((1..4).contains(&midway), "mid-way: partition {midway}");
    let events = drive(&mut model, &s, false).await;
    assert_eq!(events.last().map(String::as_str), Some("RefreshCompleted"));
    assert!(
        !events.contains(&"RefreshStarted".to_string()),
        "no second start: {events:?}"
    );
    assert!(all_on(&model, "db-1.8.0"));
}

// ---- Hooks, a failing hook and retry, automatic rollback. ----

/// semver-db with hooks (each a one-container Job) and `onFailure`.
fn hooked(hooks: &[&str], on_failure: &str) -> PolicySet {
    let hooks: String = hooks
        .iter()
        .map(|h| format!("      {h}: {{template: {{spec: {{restartPolicy: Never, containers: [{{name: h, image: 'tools:1'}}]}}}}}}\n"))
        .collect();
    policy_text(&format!(
        "apiVersion: upgradeguard.io/v1alpha1
kind: UpgradePolicy
metadata: {{name: semver-db}}
spec:
  selector: {{matchLabels: {{app.kubernetes.io/name: db}}}}
  containers: [db]
  track: major
  step: minor
  releases: [1.7.0, 1.7.3, 1.8.0]
  refresh:
    pauseAfter: none
    onFailure: {on_failure}
    hooks:
{hooks}"
    ))
}

fn hooked_settings(model: &Model) -> Settings {
    let w = model.workload();
    Settings::of(model.policies.select(&w).unwrap(), &w)
}

#[tokio::test(start_paused = true)]
async fn a_whole_refresh_with_hooks_runs_each_job_in_order_around_the_partitions() {
    let mut model = Model::new();
    model.policies = hooked(
        &["preRefresh", "preUnit", "postUnit", "postRefresh"],
        "hold",
    );
    assert!(model.set_image("1.8.0").allowed);
    assert_eq!(model.partition(), 5, "held until the hooks ran");
    let s = hooked_settings(&model);
    let events = drive(&mut model, &s, false).await;
    let mut expected = vec![
        "RefreshStarted".to_string(),
        "HookStarted:db-pre-refresh".into(),
        "HookCompleted".into(),
    ];
    for unit in (0..5).rev() {
        expected.push(format!("HookStarted:db-pre-unit-{unit}"));
        expected.push("HookCompleted".into());
        expected.push(if unit == 4 {
            "UnitRefreshing:5".into()
        } else {
            format!("UnitRefreshed:{}", unit + 1)
        });
        expected.push(format!("HookStarted:db-post-unit-{unit}"));
        expected.push("HookCompleted".into());
    }
    for step in 0..2 {
        expected.push(format!("HookStarted:db-post-refresh-{step}"));
        expected.push("HookCompleted".into());
    }
    expected.push("RefreshCompleted".into());
    assert_eq!(events, expected);
    assert!(all_on(&model, "db-1.8.0"));
    assert_eq!(model.jobs.len(), 1 + 5 + 5 + 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_hook_holds_the_refresh_until_retry_runs_it_again() {
    let mut model = Model::new();
    model.policies = hooked(&["postUnit"], "hold");
    let s = hooked_settings(&model);
    model.set_image("1.8.0");
    let job = |unit: i32| {
        let w = model.workload();
        let run = upgrade_guard::refresh::hooks::HookRun::unit(
            upgrade_guard::refresh::hooks::HookKind::PostUnit,
            unit,
        );
        upgrade_guard::refresh::hooks::job_name(&w, &model.record(), &run)
    };
    let failing = job(3);
    model.failing_jobs.insert(failing.clone());
    let events = drive(&mut model, &s, false).await;
    assert_eq!(
        events,
        [
            "RefreshStarted",
            "HookStarted:db-post-unit-4",
            "HookCompleted",
            "UnitRefreshed:4",
            "HookStarted:db-post-unit-3",
            "HookFailed",
        ]
    );
    assert_eq!(model.record().state, RefreshState::Failed);
    assert_eq!(model.partition(), 3, "unit 2 waits");
    // Held: a minute later nothing has moved.
    tokio::time::sleep(Duration::from_secs(60)).await;
    model.reconcile();
    assert_eq!(model.partition(), 3);

    model.retry();
    let events = drive(&mut model, &s, false).await;
    assert_eq!(events[0], "HookStarted:db-post-unit-3", "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("RefreshCompleted"));
    let runs = model
        .jobs
        .iter()
        .filter(|j| j.job.metadata.name.as_deref() == Some(&failing))
        .count();
    assert_eq!(runs, 1, "the failed Job was deleted and made again once");
    assert!(all_on(&model, "db-1.8.0"));
}

#[tokio::test(start_paused = true)]
async fn on_failure_rollback_undoes_a_crash_looping_refresh_by_itself() {
    let mut model = Model::new();
    model.policies = hooked(&["preUnit"], "rollback");
    let s = hooked_settings(&model);
    model.crash = Some((BTreeSet::from([3]), "1.8.0".into()));
    model.set_image("1.8.0");
    let events = drive(&mut model, &s, false).await;
    assert_eq!(
        events,
        [
            "RefreshStarted",
            "HookStarted:db-pre-unit-4",
            "HookCompleted",
            "UnitRefreshing:5",
            "HookStarted:db-pre-unit-3",
            "HookCompleted",
            "UnitRefreshed:4",
            "AutomaticRollback",
            "RefreshRolledBack",
            "StuckPodDeleted",
            "HookStarted:db-pre-unit-4",
            "HookCompleted",
            "UnitRefreshing:5",
            "HookStarted:db-pre-unit-3",
            "HookCompleted",
            "UnitRefreshed:4",
            "HookStarted:db-pre-unit-2",
            "HookCompleted",
            "UnitRefreshed:3",
            "HookStarted:db-pre-unit-1",
            "HookCompleted",
            "UnitRefreshed:2",
            "HookStarted:db-pre-unit-0",
            "HookCompleted",
            "UnitRefreshed:1",
            "RefreshCompleted",
        ]
    );
    let r = model.record();
    assert!(r.rollback && r.automatic && r.state == RefreshState::Completed);
    assert!(all_on(&model, "db-1.7.0"));
    assert!(model.pods.values().all(|p| !p.crashing));
    // The rollback's hooks knew it was one.
    let rollback_jobs: Vec<&SimJob> = model.jobs.iter().skip(2).collect();
    assert_eq!(rollback_jobs.len(), 5);
    for j in rollback_jobs {
        let env = &j
            .job
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env;
        assert!(
            env.iter()
                .flatten()
                .any(|e| e.name == "UG_ROLLBACK" && e.value.as_deref() == Some("true")),
            "{env:?}"
        );
    }
}
