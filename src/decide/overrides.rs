//! Overrides: `force-to` for one exact version, `resume --force` past a
//! failed step, and leaving a policy; each honoured only where RBAC says
//! the requester may `force`, and each audited.

use super::*;

/// `upgrade-guard resume --force` (`upgradeguard.io/resume: "force: …"`)
/// goes on past a failed hook or unit: an override like `force-to`,
/// honoured only for a user RBAC lets `force`, and audited.
pub(super) fn forced_resume(
    old: &Subject,
    new: &Subject,
    policies: &PolicySet,
    overrides: &Overrides,
    mut verdict: Verdict,
) -> Verdict {
    let Some(Resume::Force(reason)) = resume_of(new.workload()) else {
        return verdict;
    };
    if old.annotation(RESUME) == new.annotation(RESUME) {
        return verdict;
    }
    let Some(policy) = policies
        .select(new.workload())
        .or_else(|| policies.select(old.workload()))
    else {
        return verdict;
    };
    let id = format!("{} {}/{}", new.kind(), new.namespace(), new.name());
    if let Overrides::Denied { user, namespace } = overrides {
        return Verdict {
            allowed: false,
            rule: Some(Rule::FrozenDuringRefresh),
            reason: format!(
                "{id}: going on past a failed step ({RESUME}: force) is an override, and {} may not force: it needs the RBAC verb `force` on upgradepolicies.upgradeguard.io in namespace {namespace}, which the ClusterRole upgrade-guard-force grants (rule {}, {})",
                crate::quoted::bounded(user),
                Rule::FrozenDuringRefresh,
                policy.describe()
            ),
            policy: Some(policy.id()),
            ..Default::default()
        };
    }
    let forced = format!(
        "{id}: forced past a failed step of the refresh (resume --force): {}",
        crate::quoted::bounded(&reason)
    );
    verdict.policy = Some(policy.id());
    if verdict.rule == Some(Rule::Forced) {
        verdict.reason = format!("{}; {forced}", verdict.reason);
    } else {
        verdict.rule = Some(Rule::Forced);
        verdict.reason = forced.clone();
    }
    verdict.warnings.push(format!("upgrade-guard: {forced}"));
    verdict
}

/// An override let these refusals through: say so, audibly.
pub(super) fn record_forced(verdict: &mut Verdict, new: &Subject, overridden: &[Refusal]) {
    let reason = new.annotation(FORCE_REASON).unwrap_or_default();
    let what: Vec<String> = overridden
        .iter()
        .map(|r| format!("{} ({})", r.reason, r.rule))
        .collect();
    verdict.rule = Some(Rule::Forced);
    verdict.reason = format!(
        "{} {}/{}: forced past {}: {reason}",
        new.kind(),
        new.namespace(),
        new.name(),
        what.join("; ")
    );
    verdict
        .warnings
        .push(format!("upgrade-guard: {}", verdict.reason));
}

/// `verdict` forced past `refusal` when an override for `target` may be
/// used, else refused by it under `policy`.
pub(super) fn unless_overridden(
    new: &Subject,
    policy: &Policy,
    target: &GovernedVersion,
    refusal: Refusal,
    overrides: &Overrides,
    mut verdict: Verdict,
) -> Verdict {
    match override_for(new, target, &refusal, overrides) {
        Ok(()) => record_forced(&mut verdict, new, &[refusal]),
        Err(hint) => {
            let refused = Refused {
                rule: refusal.rule,
                reason: refusal.reason,
                hint,
            };
            verdict.allowed = false;
            verdict.rule = Some(refused.rule);
            verdict.reason =
                refusal_text(new.kind(), new.namespace(), new.name(), policy, &refused);
        }
    }
    verdict
}

/// Whether `upgradeguard.io/force-to` lets this refusal through; the error
/// says why not, when someone tried.
pub(super) fn override_for(
    new: &Subject,
    target: &GovernedVersion,
    refusal: &Refusal,
    overrides: &Overrides,
) -> Result<(), String> {
    let hint = format!(
        "; to accept the risk, set {FORCE_TO}: \"{}\" and {FORCE_REASON}",
        target.label()
    );
    let Some(force_to) = new.annotation(FORCE_TO) else {
        return Err(if refusal.forceable {
            hint
        } else {
            String::new()
        });
    };
    if *overrides == Overrides::Earlier {
        return Err(format!(
            "; {FORCE_TO} {:?} was set by an earlier request, and an override counts only in the request that sets it: set {FORCE_TO} and {FORCE_REASON} together with this change",
            crate::quoted::bounded(force_to)
        ));
    }
    let names_target = force_to == target.label()
        || force_to == target.image
        || matches!((&target.version, force_to.parse::<Version>()), (Ok(v), Ok(f)) if *v == f);
    if !names_target {
        return Err(format!(
            "; {FORCE_TO} is {force_to:?}, which is not this target ({}): an override applies to one exact version",
            target.label()
        ));
    }
    if !refusal.forceable {
        return Err(format!(
            "; rule {} cannot be forced under this policy",
            refusal.rule
        ));
    }
    if new
        .annotation(FORCE_REASON)
        .is_none_or(|r| r.trim().is_empty())
    {
        return Err(format!("; {FORCE_TO} needs a non-empty {FORCE_REASON}"));
    }
    if let Overrides::Denied { user, namespace } = overrides {
        return Err(format!(
            "; {FORCE_TO} is set, but {} may not force: an override needs the RBAC verb `force` on upgradepolicies.upgradeguard.io in namespace {namespace}, which the ClusterRole upgrade-guard-force grants (`kubectl -n {namespace} create rolebinding upgrade-guard-force --clusterrole=upgrade-guard-force --user=USER`)",
            crate::quoted::bounded(user)
        ));
    }
    Ok(())
}

/// A change that takes a governed workload out of its policy (its labels no
/// longer select it, or now select another) is judged by the policy it
/// leaves: refused (rule left-policy) unless overridden for the version it
/// runs, when the verdict is the forced one.
pub(super) fn left_policy(new: &Subject, before: &Policy, overrides: &Overrides) -> Verdict {
    let refusal = Refusal {
        rule: Rule::LeftPolicy,
        reason: format!(
            "this change removes what made {} select it (its labels now {}); a governed workload cannot leave its policy quietly: change the policy, or keep the labels",
            before.describe(),
            crate::quoted::bounded(&format!("{:?}", new.labels().cloned().unwrap_or_default()))
        ),
        forceable: true,
    };
    let target = new
        .template()
        .map(|t| before.versions(t))
        .and_then(|v| v.into_iter().next())
        .unwrap_or_else(no_governed_container);
    let verdict = Verdict {
        allowed: true,
        policy: Some(before.id()),
        ..Default::default()
    };
    unless_overridden(new, before, &target, refusal, overrides, verdict)
}
