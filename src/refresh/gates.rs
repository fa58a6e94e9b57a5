//! Hook gates: a hook's Job wanted, begun, and whether it holds the refresh.

use super::*;

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
pub(super) fn begun(run: &HookRun, observed: &Observed, record: &RefreshRecord) -> bool {
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
pub(super) fn gate(
    run: &HookRun,
    observed: &Observed,
    record: &RefreshRecord,
    id: &str,
) -> Option<Action> {
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
        let why = crate::quoted::bounded(&why);
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
pub(super) fn first_closed(
    runs: &[HookRun],
    observed: &Observed,
    record: &RefreshRecord,
    id: &str,
) -> Option<Action> {
    runs.iter().find_map(|run| gate(run, observed, record, id))
}
