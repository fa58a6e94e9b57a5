//! The data guard: no pod starts on a claim at a version its policy does not
//! allow from the version that last served the claim, whatever path led
//! there (a workload edit, a pod edited in place, delete and create again,
//! a relabel, the claim mounted elsewhere). The workload rules refuse
//! earlier, with the clearer message; this is the floor under them. The
//! claim's version is upgrade-guard's record ([`crate::claim`]), so nothing
//! in the request decides what it is compared with.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};

use super::{ClusterView, Requester, Rule, Verdict};
use crate::claim::{SERVED, Served, ServedVersion, served_annotation};
use crate::policy::{GovernedVersion, PathOutcome, Policy, PolicySet, Version};
use crate::template::Template;
use crate::workload::{Workload, claim_volumes, owner_of, pod_images};

/// A pod CREATE, or an UPDATE (an image edited in place, an ephemeral
/// container added): judged against every claim it mounts that carries a
/// served record. An update that changes no image starts nothing new.
pub fn judge_pod(
    old: Option<&Pod>,
    new: &Pod,
    policies: &PolicySet,
    cluster: &dyn ClusterView,
) -> Verdict {
    let mut verdict = Verdict {
        allowed: true,
        ..Default::default()
    };
    if new.spec.is_none() {
        return verdict;
    }
    fn images(p: &Pod) -> impl Iterator<Item = (&str, Option<&String>)> {
        p.spec.iter().flat_map(pod_images)
    }
    if old.is_some_and(|old| images(old).eq(images(new))) {
        return verdict;
    }
    let template = Template::of_pod(new);
    let namespace = new.metadata.namespace.as_deref().unwrap_or("default");
    let pod = crate::quoted::bounded(&format!(
        "{namespace}/{}",
        new.metadata
            .name
            .as_deref()
            .or(new.metadata.generate_name.as_deref())
            .unwrap_or_default()
    ));
    for (_, claim) in template.claims() {
        let Some(text) = cluster.claim_served(namespace, claim) else {
            continue;
        };
        let claim_shown = crate::quoted::bounded(claim);
        let served = match Served::read(&text) {
            Ok(served) => served,
            Err(e) => {
                // Only upgrade-guard writes it, so this is damage: fail closed.
                return Verdict {
                    allowed: false,
                    rule: Some(Rule::RecordIntegrity),
                    reason: format!(
                        "Pod {pod}: claim {claim_shown} carries an unreadable {SERVED} record ({}), so the version its data last served is unknown; an administrator must repair the record (rule {})",
                        crate::quoted::bounded(&e.to_string()),
                        Rule::RecordIntegrity
                    ),
                    ..Default::default()
                };
            }
        };
        let Some(policy) = policies.by_id(&served.policy) else {
            verdict.warnings.push(format!(
                "upgrade-guard: claim {claim_shown} was last served under policy {}, which is no longer loaded: pod {pod} is not checked against it",
                crate::quoted::bounded(&served.policy)
            ));
            continue;
        };
        verdict.policy = Some(policy.id());
        let running = policy.versions_with(&template, &served.versions.keys().cloned().collect());
        for (carrier, last) in &served.versions {
            for to in running.iter().filter(|v| policy.carrier(v) == *carrier) {
                let Some(refusal) = refused_from(policy, last, to) else {
                    continue;
                };
                if authorized(new, claim, last, to, cluster) {
                    continue;
                }
                return Verdict {
                    allowed: false,
                    rule: Some(refusal.rule),
                    reason: format!(
                        "Pod {pod}: claim {claim_shown} was last served by {} {}, and {} (rule {}, {}); the data guard admits no pod on a claim at a version its policy does not allow from the one that last served it: change the version through the workload, one allowed step at a time",
                        crate::quoted::bounded(carrier),
                        crate::quoted::bounded(&last.version),
                        refusal.reason,
                        refusal.rule,
                        policy.describe()
                    ),
                    from: Some(crate::quoted::bounded(&last.version)),
                    to: Some(to.label()),
                    policy: Some(policy.id()),
                    ..Default::default()
                };
            }
        }
    }
    verdict
}

/// Why the policy refuses `last → to`, if it does. The claim's previous
/// version is where a rollback may go.
fn refused_from(
    policy: &Policy,
    last: &ServedVersion,
    to: &GovernedVersion,
) -> Option<crate::policy::Refusal> {
    if to.label() == last.version {
        return None;
    }
    let from: Result<Version, _> = last.version.parse();
    let previous: Option<Version> = last.previous.as_deref().and_then(|p| p.parse().ok());
    match (&from, &to.version) {
        (Ok(from), Ok(v)) => match policy.judge_path(from, v, previous.as_ref()) {
            PathOutcome::Refused(r) => Some(r),
            PathOutcome::Unchanged | PathOutcome::Allowed { .. } => None,
        },
        _ => Some(crate::policy::Refusal {
            rule: Rule::UnknownVersion,
            reason: format!(
                "{} → {}: the version is unknown ({})",
                crate::quoted::bounded(&last.version),
                to.label(),
                match (&from, &to.version) {
                    (Err(e), _) => e.to_string(),
                    (_, Err(e)) => e.clone(),
                    _ => String::new(),
                }
            ),
            forceable: false,
        }),
    }
}

/// A step the policy refuses passes when the workload the pod belongs to,
/// and whose claim this is, carries an active refresh record of exactly
/// that step: upgrade-guard wrote it when it admitted the workload's
/// change (forced through RBAC, say), and nobody else can.
fn authorized(
    pod: &Pod,
    claim: &str,
    last: &ServedVersion,
    to: &GovernedVersion,
    cluster: &dyn ClusterView,
) -> bool {
    let Some((kind, name)) = owner_of(pod) else {
        return false;
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let Some(w) = cluster.workload(kind, namespace, &name) else {
        return false;
    };
    if !mounts(&w, claim) {
        return false;
    }
    let Some(Ok(record)) = w.refresh_record() else {
        return false;
    };
    let to = to.label();
    let step = |from: &str, into: &str| from == last.version && into == to;
    record.is_active()
        && (step(&record.from, &record.to)
            || record.containers.values().any(|s| step(&s.from, &s.to)))
}

/// Whether the workload's pods mount `claim`: a volume of its template, or
/// one its volumeClaimTemplates make (`TEMPLATE-NAME-ORDINAL`).
pub fn mounts(w: &Workload, claim: &str) -> bool {
    if claim_volumes(w.template()).iter().any(|(_, c)| *c == claim) {
        return true;
    }
    let Workload::StatefulSet(sts) = w else {
        return false;
    };
    let templates = sts
        .spec
        .iter()
        .flat_map(|s| s.volume_claim_templates.iter().flatten());
    templates
        .filter_map(|t| t.metadata.name.as_deref())
        .any(|t| {
            claim
                .strip_prefix(t)
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|rest| rest.strip_prefix(w.name()))
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|ordinal| ordinal.parse::<u32>().is_ok())
        })
}

/// A claim's served record may change only by upgrade-guard's own hand; a
/// claim created with one is refused.
pub fn judge_claim(
    old: Option<&PersistentVolumeClaim>,
    new: &PersistentVolumeClaim,
    requester: &Requester,
) -> Verdict {
    let allowed = Verdict {
        allowed: true,
        ..Default::default()
    };
    if requester.is_self || old.and_then(served_annotation) == served_annotation(new) {
        return allowed;
    }
    let name = crate::quoted::bounded(&format!(
        "{}/{}",
        new.metadata.namespace.as_deref().unwrap_or("default"),
        new.metadata.name.as_deref().unwrap_or_default()
    ));
    Verdict {
        allowed: false,
        rule: Some(Rule::RecordIntegrity),
        reason: format!(
            "PersistentVolumeClaim {name}: the {SERVED} annotation is upgrade-guard's record of the version that last served this claim, written only by upgrade-guard; this request {} it (rule {})",
            if old.is_none() {
                "creates a claim with"
            } else {
                "changes"
            },
            Rule::RecordIntegrity
        ),
        ..Default::default()
    }
}

/// The record a claim should carry now that `pod`, Ready, serves it; `None`
/// when the claim's record already says so or no policy reads a version
/// from the pod. The policy is the one the claim was recorded under, else
/// the one that selects the pod's workload (`owner`).
pub fn served_after(
    pod: &Pod,
    recorded: Option<&str>,
    policies: &PolicySet,
    owner: Option<&Workload>,
) -> Option<Served> {
    // An unreadable record is left for an administrator, never overwritten.
    let recorded = recorded.map(Served::read).transpose().ok()?;
    let policy = recorded
        .as_ref()
        .and_then(|r| policies.by_id(&r.policy))
        .or_else(|| owner.and_then(|w| policies.select(w)))?;
    let mut served = match recorded {
        Some(r) if r.policy == policy.id() => r,
        _ => Served {
            policy: policy.id(),
            ..Default::default()
        },
    };
    let known = served.versions.keys().cloned().collect();
    let running = policy.versions_with(&Template::of_pod(pod), &known);
    let before = served.clone();
    for v in &running {
        let label = v.label();
        let entry = served.versions.entry(policy.carrier(v)).or_default();
        if entry.version != label {
            entry.previous =
                Some(std::mem::replace(&mut entry.version, label)).filter(|p| !p.is_empty());
        }
    }
    (served != before).then_some(served)
}
