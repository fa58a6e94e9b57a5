//! An update of a governed workload: judged during a refresh or on its
//! upgrade path, then the mutation that starts or rolls back a refresh.

use super::*;

/// How an allowed update relates to a refresh, for the mutation plan.
pub(super) enum RefreshPlan {
    /// Nothing about the pod template changed.
    NoRefresh,
    /// A refresh starts: versions per changed container (all governed ones
    /// when only configuration changed).
    Start(Vec<(String, String, String)>),
    /// Back to where the running refresh started.
    Rollback,
}

pub(super) fn decide_update(
    old: &Subject,
    new: &Subject,
    policy: &Policy,
    cluster: &dyn ClusterView,
    now: jiff::Timestamp,
    requester: &Requester,
) -> Verdict {
    let overrides = &requester.overrides;
    let refresh = RefreshView::of(old.workload(), policy);
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
        RefreshPlan::NoRefresh => None,
        RefreshPlan::Start(steps) => Some(start_record(&steps, now)),
        RefreshPlan::Rollback => refresh.record.as_ref().map(|r| {
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
        record.images = old_template.images_changed(new_template);
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
        } else if let Workload::StatefulSet(_) = new.workload() {
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

pub(super) fn start_record(
    steps: &[(String, String, String)],
    now: jiff::Timestamp,
) -> RefreshRecord {
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
pub(super) fn partition_reset(old: &Subject, new: &Subject, refresh: &RefreshView) -> Option<i32> {
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
pub(super) fn volume_edits(
    w: &Subject,
    cluster: &dyn ClusterView,
    warnings: &mut Vec<String>,
) -> Vec<Edit> {
    let (Workload::Deployment(_), Some(template)) = (w.workload(), w.template()) else {
        return Vec::new();
    };
    let single_node = template.claims().map(|(_, claim)| claim).filter(|claim| {
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
    if !mutation::surges(w.workload()) {
        return Vec::new();
    }
    warnings.push(format!(
        "upgrade-guard: Deployment {}/{} mounts ReadWriteOnce claim {claim}: set maxSurge to 0 so a new pod never waits for the volume; a StatefulSet keeps volumes per replica (`upgrade-guard convert`)",
        w.namespace(),
        w.name()
    ));
    vec![Edit::NoSurge {
        raise_unavailable: mutation::unavailable_is_zero(w.workload()),
    }]
}
