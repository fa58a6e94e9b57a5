//! What the pods say: each unit's health, its revision, and the stuck pod
//! a rollback must delete because the StatefulSet controller never will.

use super::*;

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

pub(super) fn crash_looping(pod: &Pod) -> bool {
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

/// The container images of a pod (or pod template) spec, in order.
pub(super) fn images(spec: Option<&k8s_openapi::api::core::v1::PodSpec>) -> Vec<&str> {
    spec.map(|s| {
        s.containers
            .iter()
            .filter_map(|c| c.image.as_deref())
            .collect()
    })
    .unwrap_or_default()
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
pub(super) fn delete_stuck(
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
