//! Scaling (the `scale` subresource, whose Scale object carries only
//! replica counts): judged against the live workload's refresh.

use super::*;

pub(super) fn decide_scale(
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    from: i32,
    to: i32,
    policies: &PolicySet,
    cluster: &dyn ClusterView,
) -> Verdict {
    if from == to {
        return Verdict::allow();
    }
    let Some(live) = cluster.workload(kind, namespace, name) else {
        let mut verdict = Verdict::allow();
        if policies.may_govern(kind, namespace) {
            verdict.warnings.push(format!(
                "upgrade-guard: scale of {kind} {namespace}/{name} judged without its live object: a Scale carries no refresh state, so a refresh in progress could not be checked"
            ));
        }
        return verdict;
    };
    let Some(policy) = policies.select(&live) else {
        return Verdict::allow();
    };
    let refresh = RefreshView::of(&live, policy);
    if !refresh.in_progress {
        return Verdict {
            allowed: true,
            policy: Some(policy.id()),
            warnings: refresh.warnings,
            ..Default::default()
        };
    }
    let (rf, rt) = refresh.versions();
    let refused = Refused {
        rule: Rule::FrozenDuringRefresh,
        reason: format!(
            "scaling from {from} to {to} is refused while {}; scale after it completes or is rolled back",
            refresh.describe()
        ),
        hint: String::new(),
    };
    Verdict {
        allowed: false,
        rule: Some(Rule::FrozenDuringRefresh),
        reason: refusal_text(kind, namespace, name, policy, &refused),
        from: rf,
        to: rt,
        policy: Some(policy.id()),
        warnings: refresh.warnings,
        ..Default::default()
    }
}
