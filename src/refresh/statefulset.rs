//! The step of a StatefulSet: one unit at a time, highest ordinal first,
//! by the partition (or by deletes under OnDelete).

use super::*;

pub(super) fn step_statefulset(
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
