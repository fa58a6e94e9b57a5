//! The decision core: (change, policies, cluster view, now) → verdict.
//! Pure and synchronous; the webhook, `review`, `check` and the refresh
//! controller all call [`decide`], so they cannot drift apart.

pub mod data;
mod during;
pub mod mutation;
mod overrides;
mod path;
mod record;
mod recreate;
mod scale;
mod subject;
mod update;

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSetSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

pub use crate::cluster::{ClusterView, NoCluster, Snapshot};
pub use crate::policy::Rule;
pub use mutation::Edit;
pub use subject::Subject;

use during::*;
use overrides::*;
use path::*;
use record::*;
use recreate::*;
use scale::*;
use update::*;

use crate::policy::{Downgrade, GovernedVersion, PathOutcome, Policy, PolicySet, Refusal, Version};
use crate::template::Template;
use crate::workload::{
    FORCE_REASON, FORCE_TO, REFRESH, RESUME, RefreshRecord, Resume, VersionStep, Workload,
    WorkloadKind, resume_of,
};

/// What the API server is asked to do.
#[derive(Debug, Clone)]
pub enum Change {
    Create(Subject),
    Update {
        old: Subject,
        new: Subject,
    },
    Delete(Subject),
    /// The `scale` subresource: a Scale object carries only replica counts.
    Scale {
        kind: WorkloadKind,
        namespace: String,
        name: String,
        from: i32,
        to: i32,
    },
}

impl Change {
    pub fn create(new: Workload) -> Change {
        Change::Create(Subject::new(new))
    }

    pub fn update(old: Workload, new: Workload) -> Change {
        Change::Update {
            old: Subject::new(old),
            new: Subject::new(new),
        }
    }

    pub fn delete(old: Workload) -> Change {
        Change::Delete(Subject::new(old))
    }
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
        Change::Create(new) => {
            policies.select(new.workload()).is_none() && new.annotation(REFRESH).is_none()
        }
        Change::Update { old, new } => {
            is_ungoverned_update(old.workload(), new.workload(), policies)
        }
        Change::Delete(old) => policies.select(old.workload()).is_none(),
        Change::Scale { .. } => false,
    }
}

/// [`is_ungoverned`] for an UPDATE, from the two objects' metadata.
pub fn is_ungoverned_update(old: &Workload, new: &Workload, policies: &PolicySet) -> bool {
    policies.select(old).is_none()
        && policies.select(new).is_none()
        && old.annotation(REFRESH) == new.annotation(REFRESH)
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
            if let Some(policy) = policies.select(old.workload()) {
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
        Change::Create(new) => match policies.select(new.workload()) {
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
        Change::Update { old, new } => match (
            policies.select(old.workload()),
            policies.select(new.workload()),
        ) {
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

/// A refusal before the workload is named: the rule, why, and how to get
/// past it (empty when there is no way).
struct Refused {
    rule: Rule,
    reason: String,
    hint: String,
}

type Judged = Result<RefreshPlan, Refused>;

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
