//! The rules while a refresh is in progress: the freeze is an allowlist,
//! and a rollback puts back everything the refresh changed.

use super::*;

/// While a refresh runs, only its own steps, pausing and a rollback pass.
pub(super) fn judge_during_refresh(
    old: &Subject,
    new: &Subject,
    policy: &Policy,
    refresh: &RefreshView,
    (old_versions, new_versions): (&[GovernedVersion], &[GovernedVersion]),
    overrides: &Overrides,
    verdict: &mut Verdict,
) -> Judged {
    let during = refresh.describe();
    let next = "finish or roll back the refresh first";
    if old.replicas() != new.replicas() {
        return frozen(format!(
            "scaling from {} to {} is refused while {during}; {next}",
            old.replicas(),
            new.replicas()
        ));
    }
    if let (Workload::StatefulSet(o), Workload::StatefulSet(n)) = (old.workload(), new.workload()) {
        let (os, ns) = (o.spec.as_ref(), n.spec.as_ref());
        if os.map(|s| &s.volume_claim_templates) != ns.map(|s| &s.volume_claim_templates) {
            return frozen(format!(
                "changing volumeClaimTemplates is refused while {during}; {next}"
            ));
        }
        if update_strategy(os) != update_strategy(ns) {
            return frozen(format!(
                "changing updateStrategy other than the partition is refused while {during}; {next}"
            ));
        }
    }
    if let (Workload::Deployment(o), Workload::Deployment(n)) = (old.workload(), new.workload()) {
        let strategy = |d: &k8s_openapi::api::apps::v1::Deployment| {
            d.spec.as_ref().and_then(|s| s.strategy.clone())
        };
        if strategy(o) != strategy(n) {
            return frozen(format!(
                "changing the rollout strategy is refused while {during}; {next}"
            ));
        }
    }
    if let Some(field) = frozen_field(old, new) {
        return frozen(format!(
            "changing {field} is refused while {during}; {next}"
        ));
    }
    if unpauses_before_pre_refresh(old, new, policy) {
        return frozen(format!(
            "resuming the rollout (spec.paused) is refused while {during}: upgrade-guard paused it until the preRefresh hook completes"
        ));
    }
    if old.template() == new.template() {
        return Ok(RefreshPlan::NoRefresh);
    }
    let changed: Vec<(&GovernedVersion, &GovernedVersion)> = changed(old_versions, new_versions);
    if changed.is_empty() {
        return frozen(format!(
            "changing the pod template is refused while {during}; {next}"
        ));
    }
    let Some(record) = &refresh.record else {
        // Started before upgrade-guard saw it: a downgrade may be a rollback,
        // which nobody should be barred from, so it can be forced.
        let downgrades = changed
            .iter()
            .all(|(o, n)| matches!((&o.version, &n.version), (Ok(a), Ok(b)) if b < a));
        if !downgrades || policy.downgrade == Downgrade::Deny {
            return frozen(format!(
                "{} is refused while {during}; wait for it to complete",
                steps_text(&changed)
            ));
        }
        let refusal = Refusal {
            rule: Rule::Downgrade,
            reason: format!(
                "{} may be a rollback, but no upgradeguard.io/refresh record says where the rollout in progress started",
                steps_text(&changed)
            ),
            forceable: true,
        };
        for (_, n) in &changed {
            override_for(new, n, &refusal, overrides).map_err(|hint| Refused {
                rule: refusal.rule,
                reason: refusal.reason.clone(),
                hint,
            })?;
        }
        record_forced(verdict, new, &[refusal]);
        return Ok(RefreshPlan::Start(steps_of(&changed, new_versions)));
    };
    let is_rollback = is_whole_rollback(old, new, record, new_versions);
    if !is_rollback {
        return frozen(format!(
            "{} is refused while {during}: only a rollback to {} is allowed until it completes",
            steps_text(&changed),
            record.from
        ));
    }
    for (o, n) in &changed {
        if let (Ok(from), Ok(to)) = (&o.version, &n.version)
            && let PathOutcome::Refused(r) = policy.judge_path(from, to, Some(to))
        {
            return Err(Refused {
                rule: r.rule,
                reason: r.reason,
                hint: String::new(),
            });
        }
    }
    Ok(RefreshPlan::Rollback)
}

/// The first field of `spec` that changed and that a refresh does not
/// allow to change (`spec.ordinals`, say): the freeze is an allowlist.
/// Allowed, or judged on their own: the pod template (a rollback), the
/// replicas and the update strategy (their own messages; the partition is
/// the refresh's), and pausing a Deployment's rollout.
pub(super) fn frozen_field(old: &Subject, new: &Subject) -> Option<String> {
    let spec = |w: &Subject| {
        let value = match w.workload() {
            Workload::StatefulSet(s) => serde_json::to_value(&s.spec),
            Workload::Deployment(d) => serde_json::to_value(&d.spec),
        };
        let mut value = value.unwrap_or_default();
        if let Some(fields) = value.as_object_mut() {
            for allowed in [
                "template",
                "replicas",
                "updateStrategy",
                "strategy",
                "paused",
            ] {
                fields.remove(allowed);
            }
        }
        value
    };
    let (before, after) = (spec(old), spec(new));
    let empty = serde_json::Map::new();
    let (b, a) = (
        before.as_object().unwrap_or(&empty),
        after.as_object().unwrap_or(&empty),
    );
    b.keys()
        .chain(a.keys())
        .find(|k| b.get(*k) != a.get(*k))
        .map(|k| format!("spec.{}", crate::quoted::bounded(k)))
}

/// A Deployment upgrade-guard paused for its preRefresh hook stays paused
/// until the record says the hook completed.
pub(super) fn unpauses_before_pre_refresh(old: &Subject, new: &Subject, policy: &Policy) -> bool {
    let paused = |w: &Subject| match w.workload() {
        Workload::Deployment(d) => d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false),
        Workload::StatefulSet(_) => false,
    };
    let hook_done =
        matches!(new.refresh_record(), Some(Ok(r)) if r.hooks.contains_key("preRefresh"));
    policy.hooks.pre_refresh.is_some() && paused(old) && !paused(new) && !hook_done
}

/// A change during a refresh is its rollback only when it puts back
/// everything the refresh changed: every governed container at the version
/// the record says it came from and, when the record kept the images, the
/// template exactly as before the refresh (no container added, nothing
/// else changed).
pub(super) fn is_whole_rollback(
    old: &Subject,
    new: &Subject,
    record: &RefreshRecord,
    new_versions: &[GovernedVersion],
) -> bool {
    let all_back = !new_versions.is_empty()
        && new_versions.iter().all(|n| {
            let start: Result<Version, _> = record.from_of(&n.container).parse();
            matches!((&n.version, start), (Ok(v), Ok(s)) if *v == s)
        });
    if !all_back {
        return false;
    }
    let (Some(before), Some(after)) = (old.template(), new.template()) else {
        return false;
    };
    if record.images.is_empty() {
        // An older record: at least the same containers.
        let names =
            |t: &Template| -> Vec<String> { t.images().map(|(n, _)| n.to_string()).collect() };
        return names(before) == names(after);
    }
    before.with_images(&record.images) == *after
}

/// A StatefulSet's update strategy but the partition, an absent type read
/// as the API server's default (a rollback patch may write it out).
pub(super) fn update_strategy(spec: Option<&StatefulSetSpec>) -> (&str, Option<&IntOrString>) {
    let strategy = spec.and_then(|s| s.update_strategy.as_ref());
    let kind = strategy
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate");
    let max_unavailable = strategy
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.as_ref());
    (kind, max_unavailable)
}
