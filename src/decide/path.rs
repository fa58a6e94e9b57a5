//! The upgrade-path rules outside a refresh: every changed governed
//! container must follow the policy's path, or carry an override.

use super::*;

/// Outside a refresh: every changed governed container must follow the
/// upgrade path, or carry a matching override.
pub(super) fn judge_path(
    old: &Subject,
    new: &Subject,
    policy: &Policy,
    refresh: &RefreshView,
    (old_versions, new_versions): (&[GovernedVersion], &[GovernedVersion]),
    overrides: &Overrides,
    verdict: &mut Verdict,
) -> Judged {
    if old.template() == new.template() {
        return Ok(RefreshPlan::NoRefresh);
    }
    let changed = changed(old_versions, new_versions);
    let several = new_versions.len() > 1;
    let mut rollback = !changed.is_empty();
    let mut forced: Vec<Refusal> = Vec::new();
    for (o, n) in &changed {
        let rollback_to: Option<Version> = refresh
            .record
            .as_ref()
            .and_then(|r| r.from_of(&n.container).parse().ok());
        let outcome = match (&o.version, &n.version) {
            (Ok(from), Ok(to))
                if from == to && n.digest().is_some() && !policy.maps_digest(&n.image) =>
            {
                PathOutcome::Refused(Refusal {
                    rule: Rule::UnknownVersion,
                    reason: format!(
                        "{} → {}: the digest changed under the same tag, and the digest is what runs; spec.version.digests does not map {}, so the version it runs is unknown",
                        crate::quoted::bounded(&o.image),
                        crate::quoted::bounded(&n.image),
                        crate::quoted::bounded(n.digest().unwrap_or_default())
                    ),
                    forceable: policy.unknown_version == crate::policy::Override::Force,
                })
            }
            (Ok(from), Ok(to)) => policy.judge_path(from, to, rollback_to.as_ref()),
            (from, to) => {
                let why = [from, to]
                    .into_iter()
                    .find_map(|v| v.as_ref().err())
                    .cloned()
                    .unwrap_or_default();
                PathOutcome::Refused(Refusal {
                    rule: Rule::UnknownVersion,
                    reason: format!(
                        "{} → {}: the version is unknown ({why})",
                        o.label(),
                        n.label()
                    ),
                    forceable: policy.unknown_version == crate::policy::Override::Force,
                })
            }
        };
        match outcome {
            PathOutcome::Unchanged => {}
            PathOutcome::Allowed {
                rollback: is_rollback,
                note,
            } => {
                rollback &= is_rollback;
                if let Some(note) = note {
                    verdict.warnings.push(format!(
                        "upgrade-guard: {} → {}: {note}",
                        o.label(),
                        n.label()
                    ));
                }
            }
            PathOutcome::Refused(mut refusal) => {
                rollback = false;
                if several {
                    refusal.reason = format!("container {}: {}", n.container, refusal.reason);
                }
                verdict.from = Some(o.label().to_string());
                verdict.to = Some(n.label().to_string());
                match override_for(new, n, &refusal, overrides) {
                    Ok(()) => forced.push(refusal),
                    Err(hint) => {
                        return Err(Refused {
                            rule: refusal.rule,
                            reason: refusal.reason,
                            hint,
                        });
                    }
                }
            }
        }
    }
    if let Workload::Deployment(_) = new.workload()
        && !changed.is_empty()
        && !rollback
        && new.template().is_some_and(|t| t.claims().next().is_some())
    {
        let convert = format!(
            "a Deployment cannot keep a volume per replica: convert it to a StatefulSet first (`upgrade-guard convert` offline, `upgrade-guard migrate {}/{}` live)",
            new.namespace(),
            new.name()
        );
        if policy.require_stateful_set {
            if let Some((o, n)) = changed.first() {
                verdict.from = Some(o.label().to_string());
                verdict.to = Some(n.label().to_string());
            }
            return Err(Refused {
                rule: Rule::RequireStatefulset,
                reason: format!(
                    "{} of a Deployment that mounts PersistentVolumeClaims: {convert}",
                    steps_text(&changed)
                ),
                hint: String::new(),
            });
        }
        verdict.warnings.push(format!(
            "upgrade-guard: Deployment {}/{} mounts PersistentVolumeClaims; {convert}",
            new.namespace(),
            new.name()
        ));
    }
    if !forced.is_empty() {
        record_forced(verdict, new, &forced);
    }
    if rollback && refresh.record.is_some() {
        return Ok(RefreshPlan::Rollback);
    }
    Ok(RefreshPlan::Start(steps_of(&changed, new_versions)))
}

/// (container, from, to) for the refresh record: the changed containers, or
/// every governed one when only configuration changed.
pub(super) fn steps_of(
    changed: &[(&GovernedVersion, &GovernedVersion)],
    new_versions: &[GovernedVersion],
) -> Vec<(String, String, String)> {
    if changed.is_empty() {
        return new_versions
            .iter()
            .map(|n| {
                (
                    n.container.clone(),
                    n.label().to_string(),
                    n.label().to_string(),
                )
            })
            .collect();
    }
    changed
        .iter()
        .map(|(o, n)| {
            (
                n.container.clone(),
                o.label().to_string(),
                n.label().to_string(),
            )
        })
        .collect()
}

/// Governed containers whose version (or image, when unreadable) changed,
/// each paired with the version it replaces: the old container of the same
/// name; else (renamed) the next old governed container no new one is named
/// after; else (added) the workload's version, the highest the old governed
/// containers ran. So a rename or an added container is judged on the
/// versions it runs, like any other change.
pub(super) fn changed<'a>(
    old: &'a [GovernedVersion],
    new: &'a [GovernedVersion],
) -> Vec<(&'a GovernedVersion, &'a GovernedVersion)> {
    let mut renamed = old
        .iter()
        .filter(|o| !new.iter().any(|n| n.container == o.container));
    let workload = old
        .iter()
        .filter(|o| o.version.is_ok())
        .max_by(|a, b| a.version.as_ref().ok().cmp(&b.version.as_ref().ok()))
        .or_else(|| old.first());
    new.iter()
        .filter_map(|n| {
            let o = match old.iter().find(|o| o.container == n.container) {
                Some(o) => o,
                None if old.iter().any(|o| o.same_as(n)) => return None,
                None => renamed.next().or(workload)?,
            };
            (!o.same_as(n)).then_some((o, n))
        })
        .collect()
}

/// Every container the policy names is gone from the new template (renamed
/// away, say): the version can no longer be checked, so the change is
/// refused unless overridden (`force-to: "none"`).
pub(super) fn containers_removed(
    new: &Subject,
    policy: &Policy,
    old_versions: &[GovernedVersion],
    overrides: &Overrides,
    mut verdict: Verdict,
) -> Verdict {
    let ran: Vec<String> = old_versions
        .iter()
        .map(|o| format!("{} {}", o.container, o.label()))
        .collect();
    let refusal = Refusal {
        rule: Rule::GovernedContainerRemoved,
        reason: format!(
            "the new pod template runs none of the containers the policy names ({}), which ran {}: its version could no longer be checked; keep the container names, or change the policy first",
            policy.containers.join(", "),
            ran.join(", ")
        ),
        forceable: true,
    };
    verdict.from = old_versions.first().map(|o| o.label().to_string());
    unless_overridden(
        new,
        policy,
        &no_governed_container(),
        refusal,
        overrides,
        verdict,
    )
}

/// The override target when the template runs no governed container.
pub(super) fn no_governed_container() -> GovernedVersion {
    GovernedVersion {
        container: String::new(),
        image: "none".into(),
        version: Err("no governed container".into()),
    }
}

pub(super) fn steps_text(changed: &[(&GovernedVersion, &GovernedVersion)]) -> String {
    let steps: Vec<String> = changed
        .iter()
        .map(|(o, n)| format!("{} → {}", o.label(), n.label()))
        .collect();
    steps.join(", ")
}
