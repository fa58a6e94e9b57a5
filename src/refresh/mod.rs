//! The refresh controller: a pure step function from what is observed (the
//! workload, its pods, the settings, the time) to the one thing to do next.
//! Everything it needs lives in the cluster (the refresh record and the
//! status), so a restarted controller carries on where it was.

mod action;
pub mod controller;
mod deployment;
pub mod executor;
mod gates;
pub mod hooks;
pub mod lease;
mod pods;
mod statefulset;
pub mod status;

pub use action::*;
use deployment::*;
use gates::*;
pub use pods::*;
use statefulset::*;

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
