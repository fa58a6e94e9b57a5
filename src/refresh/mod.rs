//! The refresh controller: a pure step function from what is observed (the
//! workload, its pods, the settings, the time) to the one thing to do next.
//! Everything it needs lives in the cluster (the refresh record and the
//! status), so a restarted controller carries on where it was.

pub mod controller;
pub mod executor;
pub mod hooks;
pub mod lease;
pub mod status;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use crate::policy::{Hooks, OnFailure, PauseAfter, Policy, Version};
use crate::workload::{HookMark, PAUSE_AFTER, RefreshRecord, RefreshState, Workload, pod_images};
pub use crate::workload::{Resume, is_ready, resume_of};
use hooks::{HookKind, HookRun, JobState};

/// How a refresh of one workload is paced.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub pause_after: PauseAfter,
    pub ready_timeout: Duration,
    pub min_ready: Duration,
    /// Default: replicas - 1.
    pub min_available: Option<u32>,
    pub on_failure: OnFailure,
    pub hooks: Hooks,
    /// The policy's releases: the steps postRefresh runs for.
    pub releases: Vec<Version>,
}

impl Settings {
    /// The policy's, with the workload's `upgradeguard.io/pause-after`
    /// annotation (which may change during a refresh) taking precedence.
    pub fn of(policy: &Policy, w: &Workload) -> Self {
        let pause_after = match w.annotation(PAUSE_AFTER) {
            Some("first") => PauseAfter::First,
            Some("all") => PauseAfter::All,
            Some("none") => PauseAfter::None,
            _ => policy.pause_after,
        };
        Settings {
            pause_after,
            ready_timeout: Duration::from_secs(policy.health.ready_timeout_seconds.into()),
            min_ready: Duration::from_secs(policy.health.min_ready_seconds.into()),
            min_available: policy.health.min_available,
            on_failure: policy.on_failure,
            hooks: policy.hooks.clone(),
            releases: policy.releases.clone(),
        }
    }

    fn hook_timeout(&self) -> Duration {
        Duration::from_secs(self.hooks.timeout_seconds.into())
    }
}

pub struct Observed<'a> {
    pub workload: &'a Workload,
    pub pods: &'a [Pod],
    /// The workload's hook Jobs (label `upgradeguard.io/workload`).
    pub jobs: &'a [Job],
    pub settings: &'a Settings,
    pub now: jiff::Timestamp,
}

/// What to do; all fields empty: nothing (yet).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Action {
    /// The refresh record to write.
    pub record: Option<RefreshRecord>,
    /// StatefulSet: lower (or keep) the partition to this.
    pub partition: Option<i32>,
    /// Deployment: `spec.paused`.
    pub paused: Option<bool>,
    /// Forced rollback: delete this pod (guarded by its UID) so the
    /// StatefulSet controller recreates it from the restored template.
    pub delete_pod: Option<PodRef>,
    /// Run a hook: create this Job.
    pub create_job: Option<Box<Job>>,
    /// `onFailure: rollback`: put these images (per container) back in the
    /// pod template; the webhook records it as a rollback.
    pub restore_images: BTreeMap<String, String>,
    /// Remove `upgradeguard.io/resume`: it was acted on.
    pub clear_resume: bool,
    pub event: Option<StepEvent>,
    /// Look again after this long even if nothing changes.
    pub recheck: Option<Duration>,
    /// What happens next, in words, and the command that makes it happen.
    pub next: Next,
}

/// One pod, as the API server knows it: a delete names both, so a pod
/// recreated under the same name is never deleted by mistake.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRef {
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Next {
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// The Kubernetes Event a step asks the executor to record on the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct StepEvent {
    /// RefreshStarted, UnitRefreshing, UnitRefreshed, RefreshPaused,
    /// UnitUnhealthy, RefreshResumed, RefreshRolledBack, AutomaticRollback,
    /// StuckPodDeleted, HookStarted, HookCompleted, HookFailed, HookSkipped,
    /// RefreshCompleted.
    pub reason: &'static str,
    pub message: String,
    pub warning: bool,
}

impl Action {
    pub fn is_nothing(&self) -> bool {
        self.record.is_none()
            && self.partition.is_none()
            && self.paused.is_none()
            && self.delete_pod.is_none()
            && self.create_job.is_none()
            && self.restore_images.is_empty()
            && !self.clear_resume
    }

    fn wait(text: String, recheck: Duration) -> Self {
        Action {
            recheck: Some(recheck),
            next: Next {
                text,
                command: None,
            },
            ..Default::default()
        }
    }
}

/// One pod's place in the refresh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnitHealth {
    Missing,
    /// Not yet on the update revision.
    Outdated,
    /// On it, not Ready.
    Starting,
    CrashLooping,
    /// Ready, but not yet for minReadySeconds.
    Ready {
        since: jiff::Timestamp,
    },
    /// Ready for minReadySeconds on the update revision.
    Done,
}

pub fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

fn crash_looping(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
            })
        })
}

/// The revision a StatefulSet pod runs.
pub fn revision(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get("controller-revision-hash")
        .map(String::as_str)
}

pub fn unit_health(
    pod: Option<&Pod>,
    update_revision: &str,
    min_ready: Duration,
    now: jiff::Timestamp,
) -> UnitHealth {
    let Some(pod) = pod else {
        return UnitHealth::Missing;
    };
    if revision(pod) != Some(update_revision) {
        return UnitHealth::Outdated;
    }
    if crash_looping(pod) {
        return UnitHealth::CrashLooping;
    }
    match is_ready(pod) {
        None => UnitHealth::Starting,
        Some(since) if elapsed(since, now) >= min_ready => UnitHealth::Done,
        Some(since) => UnitHealth::Ready { since },
    }
}

pub(crate) fn elapsed(since: jiff::Timestamp, now: jiff::Timestamp) -> Duration {
    let nanos = now.as_nanosecond() - since.as_nanosecond();
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

/// The pod of a StatefulSet at an ordinal.
pub fn pod_at<'a>(pods: &'a [Pod], workload: &str, ordinal: i32) -> Option<&'a Pod> {
    let name = format!("{workload}-{ordinal}");
    pods.iter()
        .find(|p| p.metadata.name.as_deref() == Some(&name))
}

/// How often to look while waiting on something with no deadline.
const POLL: Duration = Duration::from_secs(10);

/// The one next step of the refresh this workload is in, if any.
pub fn step(observed: &Observed) -> Action {
    let w = observed.workload;
    let Some(Ok(record)) = w.refresh_record() else {
        return Action::default();
    };
    if !record.is_active() {
        return Action {
            next: Next {
                text: format!(
                    "no refresh in progress; the last one, {} → {}, completed",
                    record.from, record.to
                ),
                command: None,
            },
            ..Default::default()
        };
    }
    if w.status_is_stale() {
        return Action::wait(
            "waiting for the workload's controller to see the change".into(),
            Duration::from_secs(2),
        );
    }
    let id = format!("{}/{}", w.namespace(), w.name());
    if record.unit_started.is_none() {
        // First look at a refresh the webhook started: say so, once.
        let mut seen = record.clone();
        seen.unit_started = Some(record.started);
        return Action {
            event: Some(StepEvent {
                reason: if record.rollback {
                    "RefreshRolledBack"
                } else {
                    "RefreshStarted"
                },
                message: format!(
                    "{} {} → {} started, one unit at a time",
                    match (record.rollback, record.automatic) {
                        (true, true) => "automatic rollback (onFailure: rollback)",
                        (true, false) => "rollback",
                        _ => "refresh",
                    },
                    record.from,
                    record.to
                ),
                warning: false,
            }),
            record: Some(seen),
            next: Next {
                text: "refresh started".into(),
                command: Some(format!("upgrade-guard status {id}")),
            },
            ..Default::default()
        };
    }
    match w {
        Workload::StatefulSet(sts) => step_statefulset(sts, observed, record, &id),
        Workload::Deployment(d) => step_deployment(d, observed, record, &id),
    }
}

fn held(mut record: RefreshRecord, state: RefreshState, reason: String) -> RefreshRecord {
    record.state = state;
    record.reason = Some(reason);
    record
}

/// The container images of a pod (or pod template) spec, in order.
fn images(spec: Option<&k8s_openapi::api::core::v1::PodSpec>) -> Vec<&str> {
    spec.map(|s| {
        s.containers
            .iter()
            .filter_map(|c| c.image.as_deref())
            .collect()
    })
    .unwrap_or_default()
}

/// The refresh (or rollback) is over: the record keeps from, to and when.
fn completed(
    mut record: RefreshRecord,
    now: jiff::Timestamp,
    detail: &str,
    clear_resume: bool,
    unpause: Option<bool>,
) -> Action {
    record.state = RefreshState::Completed;
    record.finished = Some(now);
    record.reason = None;
    let what = if record.rollback {
        "rollback"
    } else {
        "refresh"
    };
    let message = format!("{what} {} → {} completed{detail}", record.from, record.to);
    Action {
        event: Some(StepEvent {
            reason: "RefreshCompleted",
            message: message.clone(),
            warning: false,
        }),
        record: Some(record),
        paused: unpause,
        clear_resume,
        next: Next {
            text: message,
            command: None,
        },
        ..Default::default()
    }
}

/// Holds the refresh as Paused until the user resumes it.
fn hold_as_paused(
    record: RefreshRecord,
    reason: String,
    spec_paused: Option<bool>,
    resume_cmd: String,
) -> Action {
    Action {
        event: Some(StepEvent {
            reason: "RefreshPaused",
            message: reason.clone(),
            warning: false,
        }),
        record: Some(held(record, RefreshState::Paused, reason.clone())),
        paused: spec_paused,
        next: Next {
            text: reason,
            command: Some(resume_cmd),
        },
        ..Default::default()
    }
}

fn moving(record: &RefreshRecord) -> RefreshState {
    if record.rollback {
        RefreshState::RollingBack
    } else {
        RefreshState::RollingOut
    }
}

/// A unit or hook failed: with `onFailure: rollback` (and not already in a
/// rollback) the controller rolls back itself; otherwise the refresh holds.
fn failed(observed: &Observed, record: RefreshRecord, reason: String, id: &str) -> Action {
    // Only images of containers still in the template can be put back.
    let restorable = observed
        .workload
        .template()
        .and_then(|t| t.spec.as_ref())
        .is_some_and(|s| pod_images(s).any(|(name, _)| record.images.contains_key(name)));
    if observed.settings.on_failure == OnFailure::Rollback && !record.rollback && restorable {
        return roll_back(record, reason);
    }
    unhealthy(observed.workload, record, reason, id)
}

/// Puts the images back to where the refresh started, as `kubectl rollout
/// undo` would; the webhook admits it as a rollback and records it.
fn roll_back(record: RefreshRecord, reason: String) -> Action {
    let message = format!(
        "{reason}: rolling back to {} automatically (onFailure: rollback)",
        record.from
    );
    Action {
        event: Some(StepEvent {
            reason: "AutomaticRollback",
            message: message.clone(),
            warning: true,
        }),
        restore_images: record.images.clone(),
        recheck: Some(Duration::from_secs(1)),
        next: Next {
            text: message,
            command: None,
        },
        ..Default::default()
    }
}

/// The Job upgrade-guard makes for `run`, if the policy has that hook.
pub(crate) fn wanted_job(
    run: &HookRun,
    observed: &Observed,
    record: &RefreshRecord,
) -> Option<Job> {
    let spec = run.kind.spec(&observed.settings.hooks)?;
    Some(hooks::job(
        observed.workload,
        record,
        run,
        spec,
        observed.settings.hook_timeout(),
    ))
}

/// Whether `run` has begun: recorded as over, or its Job exists.
fn begun(run: &HookRun, observed: &Observed, record: &RefreshRecord) -> bool {
    record.hooks.contains_key(&run.key())
        || (run.kind.spec(&observed.settings.hooks).is_some()
            && hooks::find(
                observed.jobs,
                &hooks::job_name(observed.workload, record, run),
            )
            .is_some())
}

/// One hook run's transition: create its Job, wait for it, record it over,
/// or hold the refresh when it failed (or skip it when forced past).
/// `None`: over, or no such hook; go on.
fn gate(run: &HookRun, observed: &Observed, record: &RefreshRecord, id: &str) -> Option<Action> {
    if record.hooks.contains_key(&run.key()) {
        return None;
    }
    let wanted = wanted_job(run, observed, record)?;
    let (w, now) = (observed.workload, observed.now);
    let name = wanted.metadata.name.clone().unwrap_or_default();
    let what = run.describe();
    let status_cmd = Some(format!("upgrade-guard status {id}"));
    let mark = |mark: HookMark| {
        let mut record = record.clone();
        record.hooks.insert(run.key(), mark);
        record.state = moving(&record);
        record.reason = None;
        record
    };
    let failure = match hooks::job_state(hooks::find(observed.jobs, &name), &wanted) {
        JobState::Complete => {
            let message = format!("{what} completed (Job {name})");
            return Some(Action {
                event: Some(StepEvent {
                    reason: "HookCompleted",
                    message: message.clone(),
                    warning: false,
                }),
                record: Some(mark(HookMark::Completed)),
                recheck: Some(Duration::from_secs(1)),
                next: Next {
                    text: message,
                    command: status_cmd,
                },
                ..Default::default()
            });
        }
        JobState::Missing => {
            let mut started = record.clone();
            started.state = moving(record);
            started.reason = None;
            return Some(Action {
                event: Some(StepEvent {
                    reason: "HookStarted",
                    message: format!("running {what} as Job {name}"),
                    warning: false,
                }),
                record: Some(started),
                create_job: Some(Box::new(wanted)),
                recheck: Some(Duration::from_secs(2)),
                next: Next {
                    text: format!("running {what} (Job {name})"),
                    command: status_cmd,
                },
                ..Default::default()
            });
        }
        JobState::Deleting => {
            return Some(Action::wait(
                format!("waiting for the earlier Job {name} to be gone before {what} runs again"),
                Duration::from_secs(2),
            ));
        }
        JobState::Running { since } => {
            let timeout = observed.settings.hook_timeout();
            let ran = elapsed(since, now);
            if ran <= timeout {
                let left = timeout - ran;
                return Some(Action::wait(
                    format!("{what} is running (Job {name}, {}s left)", left.as_secs()),
                    left.min(POLL).max(Duration::from_secs(1)),
                ));
            }
            format!(
                "{what} did not complete within {}s (Job {name})",
                timeout.as_secs()
            )
        }
        JobState::Failed(why) => format!("{what} failed (Job {name}: {why})"),
        JobState::Foreign => format!(
            "a Job named {name} exists that upgrade-guard did not make (another owner or other containers); it is not taken as {what}: delete it"
        ),
    };
    let held_failed = record.state == RefreshState::Failed;
    if let Some(Resume::Force(why)) = resume_of(w)
        && held_failed
    {
        let why = crate::echo::bounded(&why);
        return Some(Action {
            event: Some(StepEvent {
                reason: "HookSkipped",
                message: format!("skipped {what}, which failed: {why}"),
                warning: true,
            }),
            record: Some(mark(HookMark::Skipped)),
            clear_resume: true,
            recheck: Some(Duration::from_secs(1)),
            next: Next {
                text: format!("skipped {what}"),
                command: status_cmd,
            },
            ..Default::default()
        });
    }
    let (ns, name_of_w) = (w.namespace(), w.name());
    let hold_text = format!(
        "{failure}: run it again (`upgrade-guard retry {ns}/{name_of_w}`) or skip it (`upgrade-guard resume --force --reason TEXT {ns}/{name_of_w}`)"
    );
    if held_failed {
        return Some(Action {
            next: Next {
                text: hold_text,
                command: Some(format!("upgrade-guard retry {id}")),
            },
            ..Default::default()
        });
    }
    let mut action = failed(observed, record.clone(), failure.clone(), id);
    if action.restore_images.is_empty() {
        if let Some(event) = action.event.as_mut() {
            event.reason = "HookFailed";
        }
        action.next = Next {
            text: hold_text,
            command: Some(format!("upgrade-guard retry {id}")),
        };
    }
    Some(action)
}

/// Runs the gates of `runs` in order; the first closed one decides.
fn first_closed(
    runs: &[HookRun],
    observed: &Observed,
    record: &RefreshRecord,
    id: &str,
) -> Option<Action> {
    runs.iter().find_map(|run| gate(run, observed, record, id))
}

/// The command that puts `w`'s pod template back, as its operator types it.
pub(crate) fn rollout_undo(w: &Workload) -> String {
    let resource = match w {
        Workload::StatefulSet(_) => "statefulset",
        Workload::Deployment(_) => "deployment",
    };
    format!(
        "kubectl -n {} rollout undo {resource}/{}",
        w.namespace(),
        w.name()
    )
}

/// What to do about a failed unit. A failed refresh offers the rollback
/// (`from` is where it started); a failed rollback never offers its own
/// `from`, the version that failed.
fn unhealthy(w: &Workload, record: RefreshRecord, reason: String, id: &str) -> Action {
    let ns = w.namespace();
    let undo = rollout_undo(w);
    let text = if record.rollback {
        format!(
            "{reason}: the rollback to {} is held; look at the pods (`kubectl -n {ns} get pods`) or go on anyway",
            record.to
        )
    } else {
        format!(
            "{reason}: roll back to {} (`{undo}`) or go on anyway",
            record.from
        )
    };
    Action {
        event: Some(StepEvent {
            reason: "UnitUnhealthy",
            message: reason.clone(),
            warning: true,
        }),
        record: Some(held(record, RefreshState::Failed, reason)),
        next: Next {
            text,
            command: Some(format!("upgrade-guard resume --force --reason TEXT {id}")),
        },
        ..Default::default()
    }
}

/// The pod a rollback must delete itself, if any: not Ready, not already
/// terminating, and on a revision other than the one the StatefulSet
/// controller would recreate it on (update at ordinals ≥ partition,
/// current below). With OrderedReady pod management the StatefulSet
/// controller never replaces such a pod, and it blocks every other pod
/// too (kubernetes/kubernetes#67250, "forced rollback"). Highest ordinal
/// first, one at a time: none while another pod is still terminating, and
/// never the pod (by UID) `deleted` already names.
pub fn stuck_pod(sts: &StatefulSet, pods: &[Pod], deleted: Option<&str>) -> Option<PodRef> {
    let name = sts.metadata.name.as_deref()?;
    let status = sts.status.as_ref()?;
    let update = status.update_revision.as_deref()?;
    let current = status.current_revision.as_deref().unwrap_or(update);
    let partition = sts
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let ordinal_of = |pod: &Pod| {
        pod.metadata
            .name
            .as_deref()?
            .strip_prefix(name)?
            .strip_prefix('-')?
            .parse::<i32>()
            .ok()
    };
    if pods.iter().any(|p| p.metadata.deletion_timestamp.is_some()) {
        return None;
    }
    pods.iter()
        .filter_map(|p| Some((ordinal_of(p)?, p)))
        .filter(|(ordinal, pod)| {
            let wanted = if *ordinal >= partition {
                update
            } else {
                current
            };
            is_ready(pod).is_none()
                && revision(pod).is_some_and(|r| r != wanted)
                && pod.metadata.uid.is_some()
                && pod.metadata.uid.as_deref() != deleted
        })
        .max_by_key(|(ordinal, _)| *ordinal)
        .and_then(|(_, pod)| {
            Some(PodRef {
                name: pod.metadata.name.clone()?,
                uid: pod.metadata.uid.clone()?,
            })
        })
}

/// Deletes a stuck pod during a rollback; the unit's clock starts again,
/// and a rollback held as Failed goes on.
fn delete_stuck(
    sts: &StatefulSet,
    mut record: RefreshRecord,
    pod: PodRef,
    now: jiff::Timestamp,
) -> Action {
    let revision = sts
        .status
        .as_ref()
        .and_then(|s| s.update_revision.clone())
        .unwrap_or_default();
    let message = format!(
        "deleted pod {} (not Ready, on a revision the rollback leaves) so that the StatefulSet controller recreates it on {revision}",
        pod.name
    );
    record.state = RefreshState::RollingBack;
    record.reason = None;
    record.unit_started = Some(now);
    record.deleted_pod = Some(pod.uid.clone());
    Action {
        event: Some(StepEvent {
            reason: "StuckPodDeleted",
            message: message.clone(),
            warning: true,
        }),
        record: Some(record),
        delete_pod: Some(pod),
        recheck: Some(Duration::from_secs(1)),
        next: Next {
            text: message,
            command: None,
        },
        ..Default::default()
    }
}

fn step_statefulset(
    sts: &StatefulSet,
    observed: &Observed,
    record: RefreshRecord,
    id: &str,
) -> Action {
    let (settings, now, pods) = (observed.settings, observed.now, observed.pods);
    let name = sts.metadata.name.as_deref().unwrap_or_default();
    let w = observed.workload;
    let replicas = w.replicas().max(1);
    let update_revision = sts
        .status
        .as_ref()
        .and_then(|s| s.update_revision.as_deref())
        .unwrap_or_default();
    if w.is_on_delete() {
        return step_on_delete(name, observed, record, update_revision);
    }
    if record.rollback
        && let Some(pod) = stuck_pod(sts, pods, record.deleted_pod.as_deref())
    {
        return delete_stuck(sts, record, pod, now);
    }
    if w.partition().unwrap_or(0) >= replicas {
        // Nothing restarted yet: the hooks before the first unit hold it.
        let first = replicas - 1;
        let runs = [
            HookRun::refresh(HookKind::PreRefresh),
            HookRun::unit(HookKind::PreUnit, first),
        ];
        if let Some(action) = first_closed(&runs, observed, &record, id) {
            return action;
        }
        return lower_to(
            record,
            first,
            now,
            StepEvent {
                reason: "UnitRefreshing",
                message: format!("refreshing unit {first} ({name}-{first})"),
                warning: false,
            },
            id,
            false,
        );
    }
    let unit = w.partition().unwrap_or(0).clamp(0, replicas - 1);
    let pod = pod_at(pods, name, unit);
    let pod_name = format!("{name}-{unit}");
    let health = unit_health(pod, update_revision, settings.min_ready, now);
    let resume = resume_of(w);
    let forced = matches!(resume, Some(Resume::Force(_))) && record.state == RefreshState::Failed;
    // Done already, or forced past: only its postUnit hook may be left.
    let accepted = record.units.contains_key(&unit);

    if health != UnitHealth::Done && !forced && !accepted {
        if record.state == RefreshState::Failed {
            let reason = record.reason.clone().unwrap_or_default();
            return Action {
                next: unhealthy(w, record, reason, id).next,
                ..Default::default()
            };
        }
        let unit_started = record.unit_started.unwrap_or(record.started);
        let waited = elapsed(unit_started, now);
        if health == UnitHealth::CrashLooping {
            return failed(
                observed,
                record,
                format!("unit {unit} ({pod_name}) is crash-looping"),
                id,
            );
        }
        if waited > settings.ready_timeout {
            return failed(
                observed,
                record,
                format!(
                    "unit {unit} ({pod_name}) is not Ready after {}s",
                    settings.ready_timeout.as_secs()
                ),
                id,
            );
        }
        let left = settings.ready_timeout.saturating_sub(waited);
        return match health {
            UnitHealth::Ready { since } => {
                let settle = settings.min_ready.saturating_sub(elapsed(since, now));
                Action::wait(
                    format!(
                        "unit {unit} ({pod_name}) is Ready; it must stay Ready {}s more",
                        settle.as_secs()
                    ),
                    settle.max(Duration::from_secs(1)),
                )
            }
            _ => Action::wait(
                format!(
                    "waiting for unit {unit} ({pod_name}) to run the new revision and be Ready ({}s left)",
                    left.as_secs()
                ),
                left.min(POLL).max(Duration::from_secs(1)),
            ),
        };
    }

    // The unit is refreshed (or the user forced past it).
    let mut record = record;
    record.units.insert(unit, record.to.clone());
    if let Some(action) = first_closed(
        &[HookRun::unit(HookKind::PostUnit, unit)],
        observed,
        &record,
        id,
    ) {
        return action;
    }
    if unit == 0 {
        let all_done = (0..replicas).all(|o| {
            unit_health(
                pod_at(pods, name, o),
                update_revision,
                settings.min_ready,
                now,
            ) == UnitHealth::Done
        });
        if !all_done && !forced {
            return Action::wait(
                "waiting for every unit to be Ready on the new revision".into(),
                POLL,
            );
        }
        let post = hooks::post_refresh_runs(&settings.hooks, &settings.releases, &record);
        if let Some(action) = first_closed(&post, observed, &record, id) {
            return action;
        }
        let detail = format!(": all {replicas} units refreshed");
        return completed(record, now, &detail, resume.is_some(), None);
    }

    let first_unit = unit == replicas - 1;
    let hold = match settings.pause_after {
        PauseAfter::None => false,
        PauseAfter::First => !record.resumed && first_unit,
        PauseAfter::All => true,
    };
    let resume_cmd = format!("upgrade-guard resume {id}");
    // The next unit's preUnit hook runs only once the pause is passed.
    let next_hook = HookRun::unit(HookKind::PreUnit, unit - 1);
    let next_begun = begun(&next_hook, observed, &record);
    if hold && resume.is_none() && !next_begun {
        if record.state == RefreshState::Paused {
            return Action {
                next: Next {
                    text: record.reason.clone().unwrap_or_default(),
                    command: Some(resume_cmd),
                },
                ..Default::default()
            };
        }
        let reason = format!(
            "paused after unit {unit} ({pod_name}) refreshed to {}; check it, then resume",
            record.to
        );
        return hold_as_paused(record, reason, None, resume_cmd);
    }

    let ready = (0..replicas)
        .filter(|o| pod_at(pods, name, *o).and_then(is_ready).is_some())
        .count();
    let min_available = settings
        .min_available
        .map_or(replicas - 1, |m| i32::try_from(m).unwrap_or(i32::MAX));
    if i32::try_from(ready).unwrap_or(0) < min_available && !forced {
        return Action::wait(
            format!(
                "holding unit {}: {ready} of {replicas} pods Ready, {min_available} needed to keep a quorum",
                unit - 1
            ),
            POLL,
        );
    }

    if let Some(action) = first_closed(&[next_hook], observed, &record, id) {
        return action;
    }
    let next_unit = unit - 1;
    let (event_reason, message) = match &resume {
        Some(Resume::Force(why)) if forced => (
            "RefreshResumed",
            format!(
                "forced past unhealthy unit {unit} ({pod_name}): {}; refreshing unit {next_unit}",
                crate::echo::bounded(why)
            ),
        ),
        Some(_) => (
            "RefreshResumed",
            format!("resumed; refreshing unit {next_unit}"),
        ),
        None => (
            "UnitRefreshed",
            format!(
                "unit {unit} ({pod_name}) refreshed to {}; refreshing unit {next_unit}",
                record.to
            ),
        ),
    };
    record.resumed |= resume.is_some() && settings.pause_after == PauseAfter::First;
    lower_to(
        record,
        next_unit,
        now,
        StepEvent {
            reason: event_reason,
            message,
            warning: forced,
        },
        id,
        resume.is_some(),
    )
}

/// Lowers the partition to `unit`: it restarts now.
fn lower_to(
    mut record: RefreshRecord,
    unit: i32,
    now: jiff::Timestamp,
    event: StepEvent,
    id: &str,
    clear_resume: bool,
) -> Action {
    let name = id.rsplit('/').next().unwrap_or_default();
    record.state = moving(&record);
    record.reason = None;
    record.partition = Some(unit);
    record.unit_started = Some(now);
    Action {
        event: Some(event),
        record: Some(record),
        partition: Some(unit),
        clear_resume,
        recheck: Some(Duration::from_secs(1)),
        next: Next {
            text: format!("refreshing unit {unit} ({name}-{unit})"),
            command: Some(format!("upgrade-guard status {id}")),
        },
        ..Default::default()
    }
}

/// An OnDelete StatefulSet is refreshed by whoever deletes its pods; the
/// controller only says which one is next and completes the record once
/// every pod runs the update revision and is Ready.
fn step_on_delete(
    name: &str,
    observed: &Observed,
    record: RefreshRecord,
    update_revision: &str,
) -> Action {
    let (settings, now, pods) = (observed.settings, observed.now, observed.pods);
    let replicas = observed.workload.replicas();
    let health = |o: i32| {
        unit_health(
            pod_at(pods, name, o),
            update_revision,
            settings.min_ready,
            now,
        )
    };
    match (0..replicas).rev().find(|o| health(*o) != UnitHealth::Done) {
        None => {
            let detail = format!(": all {replicas} units refreshed (OnDelete)");
            completed(record, now, &detail, false, None)
        }
        Some(o) if health(o) == UnitHealth::Outdated => Action::wait(
            format!(
                "updateStrategy OnDelete: delete pod {name}-{o} to refresh it (`kubectl -n {} delete pod {name}-{o}`), highest ordinal first",
                observed.workload.namespace()
            ),
            POLL,
        ),
        Some(o) => Action::wait(
            format!(
                "updateStrategy OnDelete: waiting for {name}-{o} to be Ready on the new revision"
            ),
            POLL,
        ),
    }
}

/// Deployments have no partition: the refresh is paused (`spec.paused`)
/// once the first updated pod is Ready, when the pause setting asks for it.
fn step_deployment(d: &Deployment, observed: &Observed, record: RefreshRecord, id: &str) -> Action {
    let (settings, now, pods) = (observed.settings, observed.now, observed.pods);
    let w = observed.workload;
    let replicas = w.replicas();
    let status = d.status.clone().unwrap_or_default();
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let resume = resume_of(w);
    // The webhook paused the Deployment for its preRefresh hook: the
    // action that marks the hook over lets the rollout go on.
    if let Some(mut action) = first_closed(
        &[HookRun::refresh(HookKind::PreRefresh)],
        observed,
        &record,
        id,
    ) {
        if paused && action.record.as_ref().is_some_and(|r| !r.hooks.is_empty()) {
            action.paused = Some(false);
        }
        return action;
    }
    if updated >= replicas && available >= replicas && status.replicas.unwrap_or(0) == replicas {
        let post = hooks::post_refresh_runs(&settings.hooks, &settings.releases, &record);
        if let Some(action) = first_closed(&post, observed, &record, id) {
            return action;
        }
        return completed(record, now, "", resume.is_some(), paused.then_some(false));
    }
    if paused && resume.is_some() {
        let mut record = record;
        record.resumed = true;
        record.state = moving(&record);
        record.reason = None;
        return Action {
            event: Some(StepEvent {
                reason: "RefreshResumed",
                message: "resumed".into(),
                warning: false,
            }),
            record: Some(record),
            paused: Some(false),
            clear_resume: true,
            next: Next {
                text: "refreshing the remaining pods".into(),
                command: Some(format!("upgrade-guard status {id}")),
            },
            ..Default::default()
        };
    }
    let template_images = images(w.template().and_then(|t| t.spec.as_ref()));
    let updated_ready = pods
        .iter()
        .filter(|p| {
            images(p.spec.as_ref()) == template_images
                && is_ready(p).is_some_and(|since| elapsed(since, now) >= settings.min_ready)
        })
        .count();
    let hold = settings.pause_after != PauseAfter::None && !record.resumed;
    if hold && updated_ready >= 1 && !paused {
        let reason = format!(
            "paused after the first pod refreshed to {}; check it, then resume",
            record.to
        );
        return hold_as_paused(
            record,
            reason,
            Some(true),
            format!("upgrade-guard resume {id}"),
        );
    }
    if paused {
        return Action {
            next: Next {
                text: record.reason.clone().unwrap_or_else(|| "paused".into()),
                command: Some(format!("upgrade-guard resume {id}")),
            },
            ..Default::default()
        };
    }
    let waited = elapsed(record.unit_started.unwrap_or(record.started), now);
    if waited > settings.ready_timeout && updated_ready == 0 && record.state != RefreshState::Failed
    {
        return failed(
            observed,
            record,
            format!(
                "no refreshed pod is Ready after {}s",
                settings.ready_timeout.as_secs()
            ),
            id,
        );
    }
    Action::wait(
        format!("{updated} of {replicas} pods refreshed, {available} available"),
        POLL,
    )
}
