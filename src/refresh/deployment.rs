//! The step of a Deployment: held for its preRefresh hook, then the
//! Deployment controller's rollout, then postRefresh.

use super::*;

/// Deployments have no partition: the refresh is paused (`spec.paused`)
/// once the first updated pod is Ready, when the pause setting asks for it.
pub(super) fn step_deployment(
    d: &Deployment,
    observed: &Observed,
    record: RefreshRecord,
    id: &str,
) -> Action {
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
