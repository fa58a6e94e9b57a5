//! The decision core: (change, policies, cluster view, now) → verdict.
//! Pure and synchronous; the webhook, `review`, `check` and the refresh
//! controller all call [`decide`], so they cannot drift apart.

pub mod data;
pub mod mutation;

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSetSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

pub use crate::cluster::{ClusterView, NoCluster, Snapshot};
pub use crate::policy::Rule;
pub use mutation::Edit;

use crate::policy::{Downgrade, GovernedVersion, PathOutcome, Policy, PolicySet, Refusal, Version};
use crate::workload::{
    FORCE_REASON, FORCE_TO, REFRESH, RESUME, RefreshRecord, Resume, VersionStep, Workload,
    WorkloadKind, claim_volumes, images_changed, resume_of,
};

/// What the API server is asked to do.
#[derive(Debug, Clone)]
pub enum Change {
    Create(Workload),
    Update {
        old: Workload,
        new: Workload,
    },
    Delete(Workload),
    /// The `scale` subresource: a Scale object carries only replica counts.
    Scale {
        kind: WorkloadKind,
        namespace: String,
        name: String,
        from: i32,
        to: i32,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    /// The refusing rule, or `forced` when an override let a refusal through.
    pub rule: Option<Rule>,
    /// Why, in one sentence naming the workload, both versions and the next step.
    pub reason: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The id of the policy that judged it (`NAME` or `NAMESPACE/NAME`;
    /// `None`: not governed).
    pub policy: Option<String>,
    /// For the validating webhook's response.
    pub warnings: Vec<String>,
    /// RFC 6902 operations for the mutating webhook; empty: none.
    pub patch: Vec<json_patch::PatchOperation>,
    /// For the mutating webhook's response.
    pub patch_warnings: Vec<String>,
}

impl Verdict {
    fn allow() -> Self {
        Verdict {
            allowed: true,
            ..Default::default()
        }
    }

    /// Refusals and forced overrides are audited; plain approvals are not.
    pub fn is_audited(&self) -> bool {
        !self.allowed || self.rule == Some(Rule::Forced)
    }

    /// The `auditAnnotations` of the response. Plain keys: the API server
    /// prefixes each with the webhook's name itself.
    pub fn audit_annotations(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if !self.is_audited() {
            return out;
        }
        if let Some(rule) = self.rule {
            out.insert("rule".into(), rule.to_string());
        }
        for (key, value) in [("from", &self.from), ("to", &self.to)] {
            if let Some(v) = value {
                out.insert(key.into(), v.clone());
            }
        }
        out.insert("reason".into(), self.reason.clone());
        out
    }
}

/// Who asks, as far as a decision needs to know: from the AdmissionReview's
/// `userInfo` and Kubernetes RBAC, never from the object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requester {
    /// upgrade-guard's own identity (its refresh controller): the only one
    /// that may write the refresh record.
    pub is_self: bool,
    pub overrides: Overrides,
}

/// Whether `upgradeguard.io/force-to` may be honoured in this request.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Overrides {
    /// Not asked: offline (`check`, `review`) or a server without cluster
    /// access, where there is no RBAC to ask. Honoured as written.
    #[default]
    Unchecked,
    /// RBAC says `user` may not `force` upgradepolicies in `namespace`.
    Denied { user: String, namespace: String },
    /// The request does not set the override: `force-to` and `force-reason`
    /// are as an earlier request left them. An override is for the change
    /// it is written with, never a standing exception.
    Earlier,
}

impl Requester {
    /// This requester, for `change`: an override the change does not set
    /// is no override.
    fn for_change(&self, change: &Change) -> Cow<'_, Requester> {
        match change {
            Change::Update { old, new }
                if new.annotation(FORCE_TO).is_some()
                    && old.annotation(FORCE_TO) == new.annotation(FORCE_TO)
                    && old.annotation(FORCE_REASON) == new.annotation(FORCE_REASON) =>
            {
                Cow::Owned(Requester {
                    overrides: Overrides::Earlier,
                    ..self.clone()
                })
            }
            _ => Cow::Borrowed(self),
        }
    }
}

/// Decides one change, as an unchecked requester (offline). `now` stamps a
/// refresh that starts.
pub fn decide(
    change: &Change,
    policies: &PolicySet,
    cluster: &dyn ClusterView,
    now: jiff::Timestamp,
) -> Verdict {
    decide_as(change, policies, cluster, now, &Requester::default())
}

/// Whether the change is allowed with nothing to say, whoever asks: no
/// policy selects any of its objects and the refresh record is untouched.
/// It reads only metadata, so the server answers such a request without
/// reading the objects' specs.
pub fn is_ungoverned(change: &Change, policies: &PolicySet) -> bool {
    match change {
        Change::Create(new) => policies.select(new).is_none() && new.annotation(REFRESH).is_none(),
        Change::Update { old, new } => {
            policies.select(old).is_none()
                && policies.select(new).is_none()
                && old.annotation(REFRESH) == new.annotation(REFRESH)
        }
        Change::Delete(old) => policies.select(old).is_none(),
        Change::Scale { .. } => false,
    }
}

/// Decides one change asked for by `requester`.
pub fn decide_as(
    change: &Change,
    policies: &PolicySet,
    cluster: &dyn ClusterView,
    now: jiff::Timestamp,
    requester: &Requester,
) -> Verdict {
    if is_ungoverned(change, policies) {
        return Verdict::allow();
    }
    let asked = requester;
    let requester = &*requester.for_change(change);
    if !requester.is_self
        && let Some(refused) = forged_record(change, policies, cluster, now, requester)
    {
        return refused;
    }
    let verdict = decide_record_trusted(change, policies, cluster, now, requester);
    match change {
        Change::Update { old, new } if verdict.allowed && !asked.is_self => {
            forced_resume(old, new, policies, &asked.overrides, verdict)
        }
        _ => verdict,
    }
}

/// `upgrade-guard resume --force` (`upgradeguard.io/resume: "force: …"`)
/// goes on past a failed hook or unit: an override like `force-to`,
/// honoured only for a user RBAC lets `force`, and audited.
fn forced_resume(
    old: &Workload,
    new: &Workload,
    policies: &PolicySet,
    overrides: &Overrides,
    mut verdict: Verdict,
) -> Verdict {
    let Some(Resume::Force(reason)) = resume_of(new) else {
        return verdict;
    };
    if old.annotation(RESUME) == new.annotation(RESUME) {
        return verdict;
    }
    let Some(policy) = policies.select(new).or_else(|| policies.select(old)) else {
        return verdict;
    };
    let id = format!("{} {}/{}", new.kind(), new.namespace(), new.name());
    if let Overrides::Denied { user, namespace } = overrides {
        return Verdict {
            allowed: false,
            rule: Some(Rule::FrozenDuringRefresh),
            reason: format!(
                "{id}: going on past a failed step ({RESUME}: force) is an override, and {} may not force: it needs the RBAC verb `force` on upgradepolicies.upgradeguard.io in namespace {namespace}, which the ClusterRole upgrade-guard-force grants (rule {}, {})",
                crate::echo::bounded(user),
                Rule::FrozenDuringRefresh,
                policy.describe()
            ),
            policy: Some(policy.id()),
            ..Default::default()
        };
    }
    let forced = format!(
        "{id}: forced past a failed step of the refresh (resume --force): {}",
        crate::echo::bounded(&reason)
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

/// [`decide_as`] without judging who wrote the refresh record: what the
/// record check recomputes, as the same requester.
fn decide_record_trusted(
    change: &Change,
    policies: &PolicySet,
    cluster: &dyn ClusterView,
    now: jiff::Timestamp,
    requester: &Requester,
) -> Verdict {
    match change {
        Change::Delete(old) => {
            let mut verdict = Verdict::allow();
            if let Some(policy) = policies.select(old) {
                verdict.policy = Some(policy.id());
                verdict.reason = format!(
                    "{} {}/{}: deleting changes no version; its claims stay, and a StatefulSet created over them again is judged from the pods still running on them",
                    old.kind(),
                    old.namespace(),
                    old.name()
                );
            }
            verdict
        }
        Change::Scale {
            kind,
            namespace,
            name,
            from,
            to,
        } => decide_scale(*kind, namespace, name, *from, *to, policies, cluster),
        Change::Create(new) => match policies.select(new) {
            None => Verdict::allow(),
            Some(policy) => {
                let mut verdict = match recreated(new, policy, cluster, now, requester) {
                    Some(judged) if !judged.allowed => return judged,
                    Some(judged) => judged,
                    None => Verdict::allow(),
                };
                let mut new = Cow::Borrowed(new);
                verdict.policy = Some(policy.id());
                let edits = volume_edits(&new, cluster, &mut verdict.patch_warnings);
                verdict.patch = mutation::plan(&edits, &mut new);
                verdict
            }
        },
        Change::Update { old, new } => match (policies.select(old), policies.select(new)) {
            (None, None) => Verdict::allow(),
            (Some(before), after) if after.is_none_or(|a| a.describe() != before.describe()) => {
                let leaving = left_policy(new, before, &requester.overrides);
                if !leaving.allowed {
                    return leaving;
                }
                let mut verdict = decide_update(old, new, before, cluster, now, requester);
                if verdict.allowed && verdict.rule != Some(Rule::Forced) {
                    verdict.rule = leaving.rule;
                    verdict.reason = leaving.reason;
                    verdict.warnings.extend(leaving.warnings);
                }
                verdict
            }
            (_, Some(policy)) | (Some(policy), None) => {
                decide_update(old, new, policy, cluster, now, requester)
            }
        },
    }
}

fn decide_scale(
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

/// A StatefulSet created where an earlier one left its claims
/// (`<template>-<name>-<ordinal>`, which it adopts): judged as an upgrade
/// from what the pods of the same names run. `kubectl delete --cascade=orphan`
/// leaves them running, and they are what last served the data: refused
/// here, the user reads the clearer message; the claims' served records
/// ([`data`]) hold at pod admission either way. With no pod left, a warning
/// says the path cannot be checked here. `None` when no claim is adopted.
fn recreated(
    new: &Workload,
    policy: &Policy,
    cluster: &dyn ClusterView,
    now: jiff::Timestamp,
    requester: &Requester,
) -> Option<Verdict> {
    let Workload::StatefulSet(sts) = new else {
        return None;
    };
    let (namespace, name) = (new.namespace(), new.name());
    let templates: Vec<&str> = sts
        .spec
        .as_ref()?
        .volume_claim_templates
        .iter()
        .flatten()
        .filter_map(|t| t.metadata.name.as_deref())
        .collect();
    let ordinals = 0..new.replicas().max(0);
    let claims: Vec<String> = ordinals
        .clone()
        .flat_map(|i| templates.iter().map(move |t| format!("{t}-{name}-{i}")))
        .filter(|claim| cluster.claim_access_modes(namespace, claim).is_some())
        .collect();
    if claims.is_empty() {
        return None;
    }
    let pods: Vec<_> = ordinals
        .filter_map(|i| cluster.pod(namespace, &format!("{name}-{i}")))
        .collect();
    let id = format!("{} {namespace}/{name}", new.kind());
    let adopted = crate::echo::bounded(&claims.join(", "));
    if pods.is_empty() {
        let mut verdict = Verdict::allow();
        verdict.warnings.push(format!(
            "upgrade-guard: {id} is created over the claims an earlier one left ({adopted}), and no pod of it is left to tell which version they last served: the upgrade path to this version cannot be checked"
        ));
        return Some(verdict);
    }
    let names: Vec<&str> = pods
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    let context = format!(
        "upgrade-guard: {id} is created over the claims an earlier one left ({adopted}): judged as an upgrade from what its pods {} still run",
        crate::echo::bounded(&names.join(", "))
    );
    let mut judged: Option<Verdict> = None;
    let mut seen = Vec::new();
    for pod in pods {
        let Some(spec) = pod.spec else { continue };
        let images: Vec<(String, Option<String>)> = spec
            .containers
            .iter()
            .map(|c| (c.name.clone(), c.image.clone()))
            .collect();
        if seen.contains(&images) {
            continue;
        }
        seen.push(images);
        // The old StatefulSet as its pods show it: no refresh was running.
        let mut old = new.clone();
        if let Some(annotations) = old.metadata_mut().annotations.as_mut() {
            annotations.remove(REFRESH);
        }
        if let Workload::StatefulSet(s) = &mut old
            && let Some(spec_of_old) = s.spec.as_mut()
        {
            spec_of_old.template.spec = Some(spec);
            spec_of_old.template.metadata = Some(ObjectMeta {
                labels: pod.metadata.labels.clone(),
                annotations: pod.metadata.annotations.clone(),
                ..Default::default()
            });
        }
        let mut verdict = decide_update(&old, new, policy, cluster, now, requester);
        // The edits of an update (partition, record) are not a create's.
        verdict.patch.clear();
        verdict.patch_warnings.clear();
        verdict.warnings.insert(0, context.clone());
        if !verdict.allowed {
            return Some(verdict);
        }
        if judged.is_none() || verdict.rule.is_some() {
            judged = Some(verdict);
        }
    }
    judged.or_else(|| {
        let mut verdict = Verdict::allow();
        verdict.warnings.push(context);
        Some(verdict)
    })
}

/// What the old object says about a refresh.
struct RefreshView {
    record: Option<RefreshRecord>,
    in_progress: bool,
    warnings: Vec<String>,
}

impl RefreshView {
    fn of(old: &Workload, policy: &Policy) -> Self {
        let mut warnings = Vec::new();
        let record = match old.refresh_record() {
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                warnings.push(format!(
                    "upgrade-guard: annotation upgradeguard.io/refresh on {} {}/{} is unreadable ({e}); ignored",
                    old.kind(),
                    old.namespace(),
                    old.name()
                ));
                None
            }
            None => None,
        };
        let active = record.as_ref().is_some_and(RefreshRecord::is_active);
        // Our record keeps the freeze while the partition holds units back or
        // the controller has not yet seen the change that started it.
        // Hooks after the units (the last unit's postUnit, the migrations)
        // run at partition 0: the freeze lasts until the record completes.
        let held = active
            && (old.partition().is_some_and(|p| p > 0)
                || old.status_is_stale()
                || policy.hooks.post_unit.is_some()
                || policy.hooks.post_refresh.is_some());
        RefreshView {
            in_progress: old.status_shows_rollout() || held,
            record: record.filter(RefreshRecord::is_active),
            warnings,
        }
    }

    fn versions(&self) -> (Option<String>, Option<String>) {
        match &self.record {
            Some(r) => (Some(r.from.clone()), Some(r.to.clone())),
            None => (None, None),
        }
    }

    fn describe(&self) -> String {
        match &self.record {
            Some(r) => format!(
                "the refresh {} → {} is in progress ({:?})",
                r.from, r.to, r.state
            ),
            None => {
                "a rollout is in progress (the status shows pods not yet on the update revision)"
                    .to_string()
            }
        }
    }
}

/// How an allowed update relates to a refresh, for the mutation plan.
enum Outcome {
    /// Nothing about the pod template changed.
    NoRefresh,
    /// A refresh starts: versions per changed container (all governed ones
    /// when only configuration changed).
    Start(Vec<(String, String, String)>),
    /// Back to where the running refresh started.
    Rollback,
}

fn decide_update(
    old: &Workload,
    new: &Workload,
    policy: &Policy,
    cluster: &dyn ClusterView,
    now: jiff::Timestamp,
    requester: &Requester,
) -> Verdict {
    let overrides = &requester.overrides;
    let refresh = RefreshView::of(old, policy);
    let mut verdict = Verdict {
        allowed: true,
        policy: Some(policy.id()),
        warnings: refresh.warnings.clone(),
        ..Default::default()
    };
    let (Some(old_template), Some(new_template)) = (old.template(), new.template()) else {
        return verdict;
    };
    let (old_versions, new_versions) = policy.versions_of_change(old_template, new_template);
    if new_versions.is_empty() && old_versions.is_empty() {
        verdict.warnings.push(format!(
            "upgrade-guard: {} names containers {:?}, and {} {}/{} has none of them: not checked",
            policy.describe(),
            policy.containers,
            new.kind(),
            new.namespace(),
            new.name()
        ));
        return verdict;
    }
    if new_versions.is_empty() {
        return containers_removed(new, policy, &old_versions, overrides, verdict);
    }

    // What the API server stores is the object after mutation, so judge that.
    let mut mutated = Cow::Borrowed(new);
    let mut edits = volume_edits(new, cluster, &mut verdict.patch_warnings);
    if let Some(restore) = partition_reset(old, new, &refresh) {
        verdict.patch_warnings.push(format!(
            "upgrade-guard: the partition of StatefulSet {}/{} is managed during the refresh; kept it at {restore} (use `upgrade-guard resume {}/{}` to go on)",
            new.namespace(),
            new.name(),
            new.namespace(),
            new.name()
        ));
        edits.push(Edit::Partition(restore));
    }
    let mut patch = mutation::plan(&edits, &mut mutated);

    let judged = if refresh.in_progress {
        // What our mutation makes of an object is no change of the user's:
        // compare with the old object as our mutation would have left it.
        let mut old_edited = Cow::Borrowed(old);
        let old_edits = volume_edits(old, cluster, &mut Vec::new());
        mutation::plan(&old_edits, &mut old_edited);
        judge_during_refresh(
            &old_edited,
            &mutated,
            policy,
            &refresh,
            (&old_versions, &new_versions),
            overrides,
            &mut verdict,
        )
    } else {
        judge_path(
            old,
            &mutated,
            policy,
            &refresh,
            (&old_versions, &new_versions),
            overrides,
            &mut verdict,
        )
    };
    let outcome = match judged {
        Ok(outcome) => outcome,
        Err(refused) => {
            verdict.allowed = false;
            verdict.rule = Some(refused.rule);
            verdict.reason =
                refusal_text(new.kind(), new.namespace(), new.name(), policy, &refused);
            verdict.patch_warnings.clear();
            if verdict.from.is_none() {
                (verdict.from, verdict.to) = refresh.versions();
            }
            return verdict;
        }
    };

    let record = match outcome {
        Outcome::NoRefresh => None,
        Outcome::Start(steps) => Some(start_record(&steps, now)),
        Outcome::Rollback => refresh.record.as_ref().map(|r| {
            let mut back = RefreshRecord::starting(r.to.clone(), r.from.clone(), now, !r.rollback);
            back.automatic = requester.is_self && back.rollback;
            back.containers = r
                .containers
                .iter()
                .map(|(c, s)| {
                    (
                        c.clone(),
                        VersionStep {
                            from: s.to.clone(),
                            to: s.from.clone(),
                        },
                    )
                })
                .collect();
            back
        }),
    };
    if let Some(mut record) = record {
        record.images = images_changed(old_template, new_template);
        if verdict.from.is_none() {
            (verdict.from, verdict.to) = (Some(record.from.clone()), Some(record.to.clone()));
        }
        let mut refresh_edits = Vec::new();
        if new.is_on_delete() {
            let warning = format!(
                "upgrade-guard: StatefulSet {}/{} uses updateStrategy OnDelete, which upgrade-guard leaves as it is: its pods restart only when you delete them, one at a time, highest ordinal first; the upgrade path was checked, and the refresh stays frozen until every pod runs the new revision",
                new.namespace(),
                new.name()
            );
            verdict.warnings.push(warning.clone());
            verdict.patch_warnings.push(warning);
        } else if let Workload::StatefulSet(_) = new {
            // A hook that must run before a unit restarts holds them all.
            let partition = if policy.hooks.hold_units() {
                new.replicas().max(0)
            } else {
                (new.replicas() - 1).max(0)
            };
            record.partition = Some(partition);
            refresh_edits.push(Edit::Partition(partition));
        } else if policy.hooks.pre_refresh.is_some() {
            refresh_edits.push(Edit::Pause);
        }
        // Re-invoked on an object we already stamped: keep its start time.
        if let Some(Ok(existing)) = mutated.refresh_record()
            && record.same_start(&existing)
        {
            record = existing;
        }
        refresh_edits.push(Edit::Record(Box::new(record)));
        patch.extend(mutation::patch_for(&refresh_edits, &mutated));
    }
    verdict.patch = patch;
    verdict
}

fn start_record(steps: &[(String, String, String)], now: jiff::Timestamp) -> RefreshRecord {
    let (from, to) = steps
        .first()
        .map(|(_, f, t)| (f.clone(), t.clone()))
        .unwrap_or_default();
    let mut record = RefreshRecord::starting(from, to, now, false);
    if steps.len() > 1 {
        record.containers = steps
            .iter()
            .map(|(c, f, t)| {
                (
                    c.clone(),
                    VersionStep {
                        from: f.clone(),
                        to: t.clone(),
                    },
                )
            })
            .collect();
    }
    record
}

/// During a refresh, a lowered partition that the refresh record does not
/// confirm is a re-apply resetting it (GitOps): keep the live one instead.
fn partition_reset(old: &Workload, new: &Workload, refresh: &RefreshView) -> Option<i32> {
    if !refresh.in_progress || refresh.record.is_none() || old.template() != new.template() {
        return None;
    }
    let (live, wanted) = (old.partition()?, new.partition()?);
    let confirmed =
        matches!(new.refresh_record(), Some(Ok(r)) if r.is_active() && r.partition == Some(wanted));
    (wanted < live && !confirmed).then_some(live)
}

/// Deployments whose pods mount claims: a surge pod would wait forever for
/// a ReadWriteOnce volume, so roll without one.
fn volume_edits(w: &Workload, cluster: &dyn ClusterView, warnings: &mut Vec<String>) -> Vec<Edit> {
    let Workload::Deployment(_) = w else {
        return Vec::new();
    };
    let single_node = claim_volumes(w.template())
        .into_iter()
        .map(|(_, claim)| claim)
        .filter(|claim| {
            cluster
                .claim_access_modes(w.namespace(), claim)
                .is_none_or(|modes| {
                    modes
                        .iter()
                        .any(|m| m == "ReadWriteOnce" || m == "ReadWriteOncePod")
                })
        });
    let Some(claim) = single_node.into_iter().next() else {
        return Vec::new();
    };
    if !mutation::surges(w) {
        return Vec::new();
    }
    warnings.push(format!(
        "upgrade-guard: Deployment {}/{} mounts ReadWriteOnce claim {claim}: set maxSurge to 0 so a new pod never waits for the volume; a StatefulSet keeps volumes per replica (`upgrade-guard convert`)",
        w.namespace(),
        w.name()
    ));
    vec![Edit::NoSurge {
        raise_unavailable: mutation::unavailable_is_zero(w),
    }]
}

/// A refusal before the workload is named: the rule, why, and how to get
/// past it (empty when there is no way).
struct Refused {
    rule: Rule,
    reason: String,
    hint: String,
}

type Judged = Result<Outcome, Refused>;

fn frozen(reason: String) -> Judged {
    Err(Refused {
        rule: Rule::FrozenDuringRefresh,
        reason,
        hint: String::new(),
    })
}

/// `StatefulSet shop/db: 1.7.0 → 1.9.0 skips 1.8.x: … (rule skip-version, policy semver-db)`.
fn refusal_text(
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    policy: &Policy,
    refused: &Refused,
) -> String {
    format!(
        "{kind} {namespace}/{name}: {} (rule {}, {}){}",
        refused.reason,
        refused.rule,
        policy.describe(),
        refused.hint
    )
}

/// While a refresh runs, only its own steps, pausing and a rollback pass.
fn judge_during_refresh(
    old: &Workload,
    new: &Workload,
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
    if let (Workload::StatefulSet(o), Workload::StatefulSet(n)) = (old, new) {
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
    if let (Workload::Deployment(o), Workload::Deployment(n)) = (old, new) {
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
        return Ok(Outcome::NoRefresh);
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
        return Ok(Outcome::Start(steps_of(&changed, new_versions)));
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
    Ok(Outcome::Rollback)
}

/// The first field of `spec` that changed and that a refresh does not
/// allow to change (`spec.ordinals`, say): the freeze is an allowlist.
/// Allowed, or judged on their own: the pod template (a rollback), the
/// replicas and the update strategy (their own messages; the partition is
/// the refresh's), and pausing a Deployment's rollout.
fn frozen_field(old: &Workload, new: &Workload) -> Option<String> {
    let spec = |w: &Workload| {
        let value = match w {
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
        .map(|k| format!("spec.{}", crate::echo::bounded(k)))
}

/// A Deployment upgrade-guard paused for its preRefresh hook stays paused
/// until the record says the hook completed.
fn unpauses_before_pre_refresh(old: &Workload, new: &Workload, policy: &Policy) -> bool {
    let paused = |w: &Workload| match w {
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
fn is_whole_rollback(
    old: &Workload,
    new: &Workload,
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
        let names = |t: &k8s_openapi::api::core::v1::PodTemplateSpec| -> Vec<String> {
            t.spec
                .iter()
                .flat_map(crate::workload::pod_images)
                .map(|(n, _)| n.to_string())
                .collect()
        };
        return names(before) == names(after);
    }
    let mut expected = before.clone();
    if let Some(spec) = expected.spec.as_mut() {
        let init = spec.init_containers.iter_mut().flatten();
        for c in spec.containers.iter_mut().chain(init) {
            if let Some(image) = record.images.get(&c.name) {
                c.image = Some(image.clone());
            }
        }
    }
    expected == *after
}

/// A StatefulSet's update strategy but the partition, an absent type read
/// as the API server's default (a rollback patch may write it out).
fn update_strategy(spec: Option<&StatefulSetSpec>) -> (&str, Option<&IntOrString>) {
    let strategy = spec.and_then(|s| s.update_strategy.as_ref());
    let kind = strategy
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate");
    let max_unavailable = strategy
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.as_ref());
    (kind, max_unavailable)
}

/// Outside a refresh: every changed governed container must follow the
/// upgrade path, or carry a matching override.
fn judge_path(
    old: &Workload,
    new: &Workload,
    policy: &Policy,
    refresh: &RefreshView,
    (old_versions, new_versions): (&[GovernedVersion], &[GovernedVersion]),
    overrides: &Overrides,
    verdict: &mut Verdict,
) -> Judged {
    if old.template() == new.template() {
        return Ok(Outcome::NoRefresh);
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
                        crate::echo::bounded(&o.image),
                        crate::echo::bounded(&n.image),
                        crate::echo::bounded(n.digest().unwrap_or_default())
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
    if let Workload::Deployment(_) = new
        && !changed.is_empty()
        && !rollback
        && !claim_volumes(new.template()).is_empty()
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
        return Ok(Outcome::Rollback);
    }
    Ok(Outcome::Start(steps_of(&changed, new_versions)))
}

/// (container, from, to) for the refresh record: the changed containers, or
/// every governed one when only configuration changed.
fn steps_of(
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

/// An override let these refusals through: say so, audibly.
fn record_forced(verdict: &mut Verdict, new: &Workload, overridden: &[Refusal]) {
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

/// Governed containers whose version (or image, when unreadable) changed,
/// each paired with the version it replaces: the old container of the same
/// name; else (renamed) the next old governed container no new one is named
/// after; else (added) the workload's version, the highest the old governed
/// containers ran. So a rename or an added container is judged on the
/// versions it runs, like any other change.
fn changed<'a>(
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
fn containers_removed(
    new: &Workload,
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
fn no_governed_container() -> GovernedVersion {
    GovernedVersion {
        container: String::new(),
        image: "none".into(),
        version: Err("no governed container".into()),
    }
}

/// `verdict` forced past `refusal` when an override for `target` may be
/// used, else refused by it under `policy`.
fn unless_overridden(
    new: &Workload,
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

fn steps_text(changed: &[(&GovernedVersion, &GovernedVersion)]) -> String {
    let steps: Vec<String> = changed
        .iter()
        .map(|(o, n)| format!("{} → {}", o.label(), n.label()))
        .collect();
    steps.join(", ")
}

/// Whether `upgradeguard.io/force-to` lets this refusal through; the error
/// says why not, when someone tried.
fn override_for(
    new: &Workload,
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
            crate::echo::bounded(force_to)
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
            crate::echo::bounded(user)
        ));
    }
    Ok(())
}

/// A change that takes a governed workload out of its policy (its labels no
/// longer select it, or now select another) is judged by the policy it
/// leaves: refused (rule left-policy) unless overridden for the version it
/// runs, when the verdict is the forced one.
fn left_policy(new: &Workload, before: &Policy, overrides: &Overrides) -> Verdict {
    let refusal = Refusal {
        rule: Rule::LeftPolicy,
        reason: format!(
            "this change removes what made {} select it (its labels now {}); a governed workload cannot leave its policy quietly: change the policy, or keep the labels",
            before.describe(),
            crate::echo::bounded(&format!("{:?}", new.labels().cloned().unwrap_or_default()))
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

/// The refresh record is upgrade-guard's alone: a request by anyone else may
/// carry a change to it only when it is exactly what upgrade-guard's
/// mutating webhook wrote into this same request. The validating webhook
/// sees the object after mutation, so the record is recomputed from the
/// request with the record as it was, and must come out the same (but for
/// `started`, the mutation's own clock, which may not lie ahead).
fn forged_record(
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
    let recomputed = mutation::patched(&candidate, &verdict.patch)
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
                .select(new)
                .or_else(|| old.and_then(|o| policies.select(o)))
                .map(Policy::id);
            Some(refused)
        }
    }
}
