//! The step of a StatefulSet: one unit at a time, highest ordinal first,
//! by the partition (or by deletes under OnDelete).

use super::*;

pub(super) fn step_statefulset(
    sts: &StatefulSet,
    observed: &Observed,
    record: RefreshRecord,
    id: &str,
) -> Action {
    let w = observed.workload;
    let name = sts.metadata.name.as_deref().unwrap_or_default();
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
        && let Some(pod) = stuck_pod(sts, observed.pods, record.deleted_pod.as_deref())
    {
        return delete_stuck(sts, record, pod, observed.now);
    }
    let partition = w.partition().unwrap_or(0);
    if partition >= replicas {
        return start_first_unit(name, replicas - 1, observed, record, id);
    }
    let ordinal = partition.clamp(0, replicas - 1);
    let resume = resume_of(w);
    let unit = Unit {
        name,
        replicas,
        update_revision,
        ordinal,
        pod_name: format!("{name}-{ordinal}"),
        forced: matches!(resume, Some(Resume::Force(_))) && record.state == RefreshState::Failed,
        resume,
    };
    let health = health_at(observed, name, update_revision, ordinal);
    // Done already, or forced past: only its postUnit hook may be left.
    let accepted = record.units.contains_key(&ordinal);
    if health != UnitHealth::Done && !unit.forced && !accepted {
        return await_unit(&unit, health, observed, record, id);
    }
    unit_done(&unit, observed, record, id)
}

/// The unit the partition is at, with what every later decision about it
/// needs.
struct Unit<'a> {
    /// The StatefulSet's name.
    name: &'a str,
    replicas: i32,
    update_revision: &'a str,
    ordinal: i32,
    pod_name: String,
    resume: Option<Resume>,
    /// `resume --force` on a refresh held as Failed: go on past this unit.
    forced: bool,
}

/// The health of the pod at `ordinal` of the StatefulSet `name`.
fn health_at(observed: &Observed, name: &str, update_revision: &str, ordinal: i32) -> UnitHealth {
    unit_health(
        pod_at(observed.pods, name, ordinal),
        update_revision,
        observed.settings.min_ready,
        observed.now,
    )
}

/// Nothing restarted yet: the hooks before the first unit hold it.
fn start_first_unit(
    name: &str,
    first: i32,
    observed: &Observed,
    record: RefreshRecord,
    id: &str,
) -> Action {
    let runs = [
        HookRun::refresh(HookKind::PreRefresh),
        HookRun::unit(HookKind::PreUnit, first),
    ];
    if let Some(action) = first_closed(&runs, observed, &record, id) {
        return action;
    }
    lower_to(
        record,
        first,
        observed.now,
        StepEvent {
            reason: "UnitRefreshing",
            message: format!("refreshing unit {first} ({name}-{first})"),
            warning: false,
        },
        id,
        false,
    )
}

/// The unit's pod is being replaced: wait for it to run the update
/// revision and stay Ready for minReadySeconds, or fail the unit.
fn await_unit(
    unit: &Unit,
    health: UnitHealth,
    observed: &Observed,
    record: RefreshRecord,
    id: &str,
) -> Action {
    let (settings, now) = (observed.settings, observed.now);
    let (ordinal, pod_name) = (unit.ordinal, &unit.pod_name);
    if record.state == RefreshState::Failed {
        // Already held: say again what to do, without a new event or record.
        let reason = record.reason.clone().unwrap_or_default();
        return Action {
            next: unhealthy(observed.workload, record, reason, id).next,
            ..Default::default()
        };
    }
    let waited = elapsed(record.unit_started.unwrap_or(record.started), now);
    if health == UnitHealth::CrashLooping {
        return failed(
            observed,
            record,
            format!("unit {ordinal} ({pod_name}) is crash-looping"),
            id,
        );
    }
    if waited > settings.ready_timeout {
        return failed(
            observed,
            record,
            format!(
                "unit {ordinal} ({pod_name}) is not Ready after {}s",
                settings.ready_timeout.as_secs()
            ),
            id,
        );
    }
    match health {
        UnitHealth::Ready { since } => {
            let settle = settings.min_ready.saturating_sub(elapsed(since, now));
            Action::wait(
                format!(
                    "unit {ordinal} ({pod_name}) is Ready; it must stay Ready {}s more",
                    settle.as_secs()
                ),
                settle.max(Duration::from_secs(1)),
            )
        }
        _ => {
            let left = settings.ready_timeout.saturating_sub(waited);
            Action::wait(
                format!(
                    "waiting for unit {ordinal} ({pod_name}) to run the new revision and be Ready ({}s left)",
                    left.as_secs()
                ),
                left.min(POLL).max(Duration::from_secs(1)),
            )
        }
    }
}

/// The unit is refreshed (or the user forced past it): its postUnit hook,
/// then the finish after unit 0, or the next unit.
fn unit_done(unit: &Unit, observed: &Observed, mut record: RefreshRecord, id: &str) -> Action {
    record.units.insert(unit.ordinal, record.to.clone());
    if let Some(action) = first_closed(
        &[HookRun::unit(HookKind::PostUnit, unit.ordinal)],
        observed,
        &record,
        id,
    ) {
        return action;
    }
    if unit.ordinal == 0 {
        return finish(unit, observed, record, id);
    }
    let next_hook = HookRun::unit(HookKind::PreUnit, unit.ordinal - 1);
    if holds_for_pause(unit, &next_hook, observed, &record) {
        return paused_after(unit, record, id);
    }
    if let Some(action) = quorum_hold(unit, observed) {
        return action;
    }
    if let Some(action) = first_closed(&[next_hook], observed, &record, id) {
        return action;
    }
    refresh_next(unit, observed, record, id)
}

/// Unit 0 was the last: the refresh completes once every unit is Done (or
/// forced past) and the postRefresh hooks are over.
fn finish(unit: &Unit, observed: &Observed, record: RefreshRecord, id: &str) -> Action {
    let replicas = unit.replicas;
    let all_done = (0..replicas)
        .all(|o| health_at(observed, unit.name, unit.update_revision, o) == UnitHealth::Done);
    if !all_done && !unit.forced {
        return Action::wait(
            "waiting for every unit to be Ready on the new revision".into(),
            POLL,
        );
    }
    if !unit.forced
        && let Some(wait) = status_lags(observed.workload)
    {
        return wait;
    }
    let settings = observed.settings;
    let post = hooks::post_refresh_runs(&settings.hooks, &settings.releases, &record);
    if let Some(action) = first_closed(&post, observed, &record, id) {
        return action;
    }
    let detail = format!(": all {replicas} units refreshed");
    completed(record, observed.now, &detail, unit.resume.is_some(), None)
}

/// A wait while the StatefulSet's status still shows the rollout. The
/// webhook's freeze reads that status, which the StatefulSet controller
/// writes a moment after the pods change: a record completed before it
/// would promise a change the freeze still refuses.
fn status_lags(w: &Workload) -> Option<Action> {
    (w.status_shows_rollout() || w.status_is_stale()).then(|| {
        Action::wait(
            "waiting for the StatefulSet controller to report every unit on the new revision"
                .into(),
            POLL,
        )
    })
}

/// Whether pauseAfter holds the refresh after this unit. A resume passes
/// the pause, and so does a begun preUnit hook of the next unit: that hook
/// runs only once the pause is passed.
fn holds_for_pause(
    unit: &Unit,
    next_hook: &HookRun,
    observed: &Observed,
    record: &RefreshRecord,
) -> bool {
    let hold = match observed.settings.pause_after {
        PauseAfter::None => false,
        PauseAfter::First => !record.resumed && unit.ordinal == unit.replicas - 1,
        PauseAfter::All => true,
    };
    hold && unit.resume.is_none() && !begun(next_hook, observed, record)
}

/// Holds the refresh as Paused after the unit, until the user resumes it.
fn paused_after(unit: &Unit, record: RefreshRecord, id: &str) -> Action {
    let resume_cmd = format!("upgrade-guard resume {id}");
    if record.state == RefreshState::Paused {
        // Already held: say again what to do, without a new event or record.
        return Action {
            next: Next {
                text: record.reason.clone().unwrap_or_default(),
                command: Some(resume_cmd),
            },
            ..Default::default()
        };
    }
    let reason = format!(
        "paused after unit {} ({}) refreshed to {}; check it, then resume",
        unit.ordinal, unit.pod_name, record.to
    );
    hold_as_paused(record, reason, None, resume_cmd)
}

/// Holds the next unit while too few pods are Ready to keep a quorum
/// (minAvailable, default replicas - 1), unless forced past.
fn quorum_hold(unit: &Unit, observed: &Observed) -> Option<Action> {
    let replicas = unit.replicas;
    let ready = (0..replicas)
        .filter(|o| {
            pod_at(observed.pods, unit.name, *o)
                .and_then(is_ready)
                .is_some()
        })
        .count();
    let min_available = observed
        .settings
        .min_available
        .map_or(replicas - 1, |m| i32::try_from(m).unwrap_or(i32::MAX));
    if i32::try_from(ready).unwrap_or(0) >= min_available || unit.forced {
        return None;
    }
    Some(Action::wait(
        format!(
            "holding unit {}: {ready} of {replicas} pods Ready, {min_available} needed to keep a quorum",
            unit.ordinal - 1
        ),
        POLL,
    ))
}

/// Lowers the partition past the unit, saying why the refresh went on.
fn refresh_next(unit: &Unit, observed: &Observed, mut record: RefreshRecord, id: &str) -> Action {
    let (ordinal, pod_name) = (unit.ordinal, &unit.pod_name);
    let next_unit = ordinal - 1;
    let (event_reason, message) = match &unit.resume {
        Some(Resume::Force(why)) if unit.forced => (
            "RefreshResumed",
            format!(
                "forced past unhealthy unit {ordinal} ({pod_name}): {}; refreshing unit {next_unit}",
                crate::quoted::bounded(why)
            ),
        ),
        Some(_) => (
            "RefreshResumed",
            format!("resumed; refreshing unit {next_unit}"),
        ),
        None => (
            "UnitRefreshed",
            format!(
                "unit {ordinal} ({pod_name}) refreshed to {}; refreshing unit {next_unit}",
                record.to
            ),
        ),
    };
    let resumed = unit.resume.is_some();
    record.resumed |= resumed && observed.settings.pause_after == PauseAfter::First;
    lower_to(
        record,
        next_unit,
        observed.now,
        StepEvent {
            reason: event_reason,
            message,
            warning: unit.forced,
        },
        id,
        resumed,
    )
}

/// Lowers the partition to `unit`: it restarts now.
pub(super) fn lower_to(
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
pub(super) fn step_on_delete(
    name: &str,
    observed: &Observed,
    record: RefreshRecord,
    update_revision: &str,
) -> Action {
    let now = observed.now;
    let replicas = observed.workload.replicas();
    let health = |o: i32| health_at(observed, name, update_revision, o);
    match (0..replicas).rev().find(|o| health(*o) != UnitHealth::Done) {
        None => status_lags(observed.workload).unwrap_or_else(|| {
            let detail = format!(": all {replicas} units refreshed (OnDelete)");
            completed(record, now, &detail, false, None)
        }),
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
