//! What a step asks for ([`Action`]) and the actions several steps build:
//! hold, complete, fail (or roll back by itself), and the rollback command.

use super::*;

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

    pub(super) fn wait(text: String, recheck: Duration) -> Self {
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

pub(super) fn held(
    mut record: RefreshRecord,
    state: RefreshState,
    reason: String,
) -> RefreshRecord {
    record.state = state;
    record.reason = Some(reason);
    record
}

/// The refresh (or rollback) is over: the record keeps from, to and when.
pub(super) fn completed(
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
pub(super) fn hold_as_paused(
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

pub(super) fn moving(record: &RefreshRecord) -> RefreshState {
    if record.rollback {
        RefreshState::RollingBack
    } else {
        RefreshState::RollingOut
    }
}

/// A unit or hook failed: with `onFailure: rollback` (and not already in a
/// rollback) the controller rolls back itself; otherwise the refresh holds.
pub(super) fn failed(
    observed: &Observed,
    record: RefreshRecord,
    reason: String,
    id: &str,
) -> Action {
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
pub(super) fn roll_back(record: RefreshRecord, reason: String) -> Action {
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

/// What to do about a failed unit. A failed refresh offers the rollback
/// (`from` is where it started); a failed rollback never offers its own
/// `from`, the version that failed.
pub(super) fn unhealthy(w: &Workload, record: RefreshRecord, reason: String, id: &str) -> Action {
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
