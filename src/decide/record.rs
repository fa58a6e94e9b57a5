//! The refresh record is upgrade-guard's alone.

use super::*;

/// The refresh record is upgrade-guard's alone: a request by anyone else may
/// carry a change to it only when it is exactly what upgrade-guard's
/// mutating webhook wrote into this same request. The validating webhook
/// sees the object after mutation, so the record is recomputed from the
/// request with the record as it was, and must come out the same (but for
/// `started`, the mutation's own clock, which may not lie ahead).
pub(super) fn forged_record(
    change: &Change,
    policies: &PolicySet,
    cluster: &dyn ClusterView,
    now: jiff::Timestamp,
    requester: &Requester,
) -> Option<Verdict> {
    let (old, new) = match change {
        Change::Create(new) => (None, new),
        Change::Update { old, new } => (Some(old), new),
        Change::Delete(_) | Change::Scale { .. } => return None,
    };
    let was = old.and_then(|o| o.annotation(REFRESH));
    let written = new.annotation(REFRESH);
    if was == written {
        return None;
    }
    let mut candidate = new.clone();
    let annotations = candidate
        .workload_mut()
        .metadata_mut()
        .annotations
        .get_or_insert_with(Default::default);
    match was {
        Some(w) => annotations.insert(REFRESH.into(), w.into()),
        None => annotations.remove(REFRESH),
    };
    let ours = match old {
        Some(old) => Change::Update {
            old: old.clone(),
            new: candidate.clone(),
        },
        None => Change::Create(candidate.clone()),
    };
    let verdict = decide_record_trusted(&ours, policies, cluster, now, requester);
    // Refused on its own merits (this requester may not force, say): that
    // is the reason that applies, whatever record the mutation wrote.
    if !verdict.allowed {
        return Some(verdict);
    }
    let recomputed = mutation::patched(candidate.workload(), &verdict.patch)
        .and_then(|w| w.refresh_record().and_then(Result::ok));
    let claimed = new.refresh_record().and_then(Result::ok);
    // `started` is the mutation's own clock (kept on reinvocation), so a
    // record the mutation starts may be stamped earlier than now, never
    // later; a record it did not write must stay exactly as it was, every
    // field (`started`, `unitStarted`) included.
    let not_ahead = |r: &RefreshRecord| r.started.as_second() <= now.as_second() + 60;
    let kept = old.and_then(|o| o.refresh_record()).and_then(Result::ok);
    match (recomputed, claimed) {
        (Some(ours), Some(theirs)) if kept.as_ref() == Some(&ours) && ours == theirs => None,
        (Some(ours), Some(theirs))
            if kept.as_ref() != Some(&ours) && ours.same_start(&theirs) && not_ahead(&theirs) =>
        {
            None
        }
        _ => {
            let mut refused = Verdict {
                allowed: false,
                rule: Some(Rule::RecordIntegrity),
                reason: format!(
                    "{} {}/{}: the {REFRESH} annotation is upgrade-guard's record of a refresh, written only by upgrade-guard; this request changes it (rule {})",
                    new.kind(),
                    new.namespace(),
                    new.name(),
                    Rule::RecordIntegrity
                ),
                ..Default::default()
            };
            refused.policy = policies
                .select(new.workload())
                .or_else(|| old.and_then(|o| policies.select(o.workload())))
                .map(Policy::id);
            Some(refused)
        }
    }
}
