//! The changes the mutating webhook makes, as typed edits: each one is both
//! applied to the object (so validation judges what the API server will
//! store) and written as an RFC 6902 JSON Patch for the response.

use json_patch::jsonptr::PointerBuf;
use std::borrow::Cow;

use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::apps::v1::{
    DeploymentStrategy, RollingUpdateDeployment, RollingUpdateStatefulSetStrategy,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::Subject;
use crate::workload::{REFRESH, RefreshRecord, Workload};

#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// StatefulSet: `updateStrategy.type: RollingUpdate` and this partition.
    Partition(i32),
    /// The `upgradeguard.io/refresh` annotation.
    Record(Box<RefreshRecord>),
    /// Deployment: `maxSurge: 0`, and `maxUnavailable: 1` when it was 0
    /// (the API server refuses both at 0).
    NoSurge { raise_unavailable: bool },
    /// Deployment: `spec.paused: true`, so nothing restarts before its
    /// preRefresh hook completed.
    Pause,
}

impl Edit {
    /// Whether the object already says what this edit would write.
    pub fn is_satisfied(&self, w: &Workload) -> bool {
        match (self, w) {
            (Edit::Partition(p), Workload::StatefulSet(s)) => s
                .spec
                .as_ref()
                .and_then(|s| s.update_strategy.as_ref())
                .is_some_and(|u| {
                    u.type_.as_deref() == Some("RollingUpdate")
                        && u.rolling_update.as_ref().and_then(|r| r.partition) == Some(*p)
                }),
            (Edit::Record(record), w) => matches!(w.refresh_record(), Some(Ok(r)) if r == **record),
            (Edit::NoSurge { .. }, Workload::Deployment(_)) => !surges(w),
            (Edit::Pause, Workload::Deployment(d)) => {
                d.spec.as_ref().and_then(|s| s.paused) == Some(true)
            }
            _ => true,
        }
    }

    /// The JSON Patch operations for this edit on `w` as it is now. `add`
    /// replaces an existing member, so only missing parents need care.
    pub fn operations(&self, w: &Workload) -> Vec<PatchOperation> {
        match (self, w) {
            (Edit::Partition(p), Workload::StatefulSet(s)) => {
                let strategy = s.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
                match strategy {
                    None => vec![add(
                        &["spec", "updateStrategy"],
                        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": p}}),
                    )],
                    Some(u) => {
                        let mut ops = Vec::new();
                        if u.type_.as_deref() != Some("RollingUpdate") {
                            ops.push(add(
                                &["spec", "updateStrategy", "type"],
                                json!("RollingUpdate"),
                            ));
                        }
                        ops.push(match u.rolling_update {
                            None => add(
                                &["spec", "updateStrategy", "rollingUpdate"],
                                json!({"partition": p}),
                            ),
                            Some(_) => add(
                                &["spec", "updateStrategy", "rollingUpdate", "partition"],
                                json!(p),
                            ),
                        });
                        ops
                    }
                }
            }
            (Edit::Record(record), w) => {
                // Serializing a plain struct of strings and numbers cannot fail.
                let text = serde_json::to_string(record).unwrap_or_default();
                vec![match w.metadata().annotations {
                    None => add(&["metadata", "annotations"], json!({ REFRESH: text })),
                    Some(_) => add(&["metadata", "annotations", REFRESH], Value::String(text)),
                }]
            }
            (Edit::NoSurge { raise_unavailable }, Workload::Deployment(d)) => {
                let rolling = d
                    .spec
                    .as_ref()
                    .and_then(|s| s.strategy.as_ref())
                    .and_then(|s| s.rolling_update.as_ref());
                let has_strategy = d.spec.as_ref().is_some_and(|s| s.strategy.is_some());
                let mut wanted = json!({"maxSurge": 0});
                if *raise_unavailable {
                    wanted["maxUnavailable"] = json!(1);
                }
                match (has_strategy, rolling) {
                    (false, _) => vec![add(
                        &["spec", "strategy"],
                        json!({"type": "RollingUpdate", "rollingUpdate": wanted}),
                    )],
                    (true, None) => vec![add(&["spec", "strategy", "rollingUpdate"], wanted)],
                    (true, Some(_)) => {
                        let mut ops = vec![add(
                            &["spec", "strategy", "rollingUpdate", "maxSurge"],
                            json!(0),
                        )];
                        if *raise_unavailable {
                            ops.push(add(
                                &["spec", "strategy", "rollingUpdate", "maxUnavailable"],
                                json!(1),
                            ));
                        }
                        ops
                    }
                }
            }
            (Edit::Pause, Workload::Deployment(_)) => vec![add(&["spec", "paused"], json!(true))],
            _ => Vec::new(),
        }
    }

    pub fn apply(&self, w: &mut Workload) {
        match (self, w) {
            (Edit::Partition(p), Workload::StatefulSet(s)) => {
                let spec = s.spec.get_or_insert_with(Default::default);
                let strategy = spec
                    .update_strategy
                    .get_or_insert_with(StatefulSetUpdateStrategy::default);
                strategy.type_ = Some("RollingUpdate".into());
                strategy
                    .rolling_update
                    .get_or_insert_with(RollingUpdateStatefulSetStrategy::default)
                    .partition = Some(*p);
            }
            (Edit::Record(record), w) => {
                let text = serde_json::to_string(record).unwrap_or_default();
                w.metadata_mut()
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(REFRESH.to_string(), text);
            }
            (Edit::NoSurge { raise_unavailable }, Workload::Deployment(d)) => {
                let spec = d.spec.get_or_insert_with(Default::default);
                let strategy = spec.strategy.get_or_insert_with(|| DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: None,
                });
                let rolling = strategy
                    .rolling_update
                    .get_or_insert_with(RollingUpdateDeployment::default);
                rolling.max_surge = Some(IntOrString::Int(0));
                if *raise_unavailable {
                    rolling.max_unavailable = Some(IntOrString::Int(1));
                }
            }
            (Edit::Pause, Workload::Deployment(d)) => {
                d.spec.get_or_insert_with(Default::default).paused = Some(true);
            }
            _ => {}
        }
    }
}

/// Whether a Deployment rolls with a surge pod (a RollingUpdate whose
/// maxSurge is not 0; unset means the default 25%).
pub fn surges(w: &Workload) -> bool {
    let Workload::Deployment(d) = w else {
        return false;
    };
    let strategy = d.spec.as_ref().and_then(|s| s.strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return false;
    }
    let surge = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_surge.as_ref());
    !surge.is_some_and(is_zero)
}

/// Whether a Deployment's maxUnavailable is 0 (unset means the default 25%).
pub fn unavailable_is_zero(w: &Workload) -> bool {
    let Workload::Deployment(d) = w else {
        return false;
    };
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.as_ref())
        .is_some_and(is_zero)
}

fn is_zero(v: &IntOrString) -> bool {
    match v {
        IntOrString::Int(n) => *n == 0,
        IntOrString::String(s) => s.trim_end_matches('%').trim() == "0",
    }
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

/// Applies the edits that the object does not already satisfy, in order,
/// and returns the patch that does the same to its JSON form. The object is
/// copied only if an edit applies.
pub fn plan(edits: &[Edit], w: &mut Cow<'_, Subject>) -> Vec<PatchOperation> {
    let mut ops = Vec::new();
    for edit in edits {
        if !edit.is_satisfied(w.workload()) {
            ops.extend(edit.operations(w.workload()));
            edit.apply(w.to_mut().workload_mut());
        }
    }
    ops
}

/// The patch for edits of disjoint fields, without applying them: for the
/// last edits of a decision, whose result nobody reads.
pub fn patch_for(edits: &[Edit], w: &Subject) -> Vec<PatchOperation> {
    let w = w.workload();
    edits
        .iter()
        .filter(|e| !e.is_satisfied(w))
        .flat_map(|e| e.operations(w))
        .collect()
}

/// `w` with the patch applied, as the API server would store it.
pub fn patched(w: &Workload, patch: &[PatchOperation]) -> Option<Workload> {
    let mut value = match w {
        Workload::StatefulSet(s) => serde_json::to_value(s),
        Workload::Deployment(d) => serde_json::to_value(d),
    }
    .ok()?;
    json_patch::patch(&mut value, patch).ok()?;
    Workload::from_value(value).ok().flatten()
}
