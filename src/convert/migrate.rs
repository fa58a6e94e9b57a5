//! The live migration of a Deployment to the StatefulSet `convert` makes,
//! as a pure planner: what is observed in the cluster, and the journal the
//! migration keeps on the Deployment, give the one next step.
//!
//! Each step is computed from the cluster as it is, so a step runs only once
//! the one before it shows in the cluster, an interrupted run continues where
//! it stopped, and a repeated one changes nothing. The journal keeps what the
//! cluster cannot tell afterwards (replicas, reclaim policies, the old
//! claims) for rollback. No step deletes a PersistentVolume: there is none.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::workload::claim_volumes;

/// The journal annotation on the Deployment.
pub const JOURNAL: &str = "upgradeguard.io/migration";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    /// The Deployment's replicas before it was scaled to 0.
    pub replicas: i32,
    pub moves: Vec<Move>,
    /// The headless Service the migration created (removed on rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Completed steps, in order.
    #[serde(default)]
    pub done: Vec<String>,
}

/// One volume changing hands: from the Deployment's claim to the
/// StatefulSet's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Move {
    pub old_claim: String,
    pub new_claim: String,
    pub volume: String,
    /// The volume's reclaim policy before the migration set Retain.
    pub reclaim_policy: String,
    /// To put the old claim back on rollback.
    pub old_spec: PersistentVolumeClaimSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_labels: Option<BTreeMap<String, String>>,
}

/// What the migration should end with (from `convert`).
#[derive(Debug, Clone)]
pub struct Target {
    pub statefulset: StatefulSet,
    pub service: Option<Service>,
    /// (old claim, new claim); the new claim's volumeName is set here.
    pub claims: Vec<(String, PersistentVolumeClaim)>,
}

impl Target {
    /// The target for `deployment` from `convert`'s output; `existing`
    /// names the Services that were there already (not to be created).
    pub fn of(
        deployment: &Deployment,
        objects: &[serde_json::Value],
        existing: &[String],
    ) -> Result<Target, MigrateError> {
        let name = deployment.metadata.name.as_deref().unwrap_or_default();
        let named = |kind: &str, n: &str| {
            objects
                .iter()
                .find(|o| o["kind"] == kind && o["metadata"]["name"] == n)
        };
        fn parse<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, MigrateError> {
            serde_json::from_value(v.clone()).map_err(|e| MigrateError(e.to_string()))
        }
        let statefulset: StatefulSet = parse(
            named("StatefulSet", name)
                .ok_or_else(|| MigrateError(format!("Deployment {name} was not converted")))?,
        )?;
        let service = match statefulset
            .spec
            .as_ref()
            .and_then(|s| s.service_name.as_deref())
        {
            Some(s) if !existing.iter().any(|e| e == s) => {
                named("Service", s).map(parse).transpose()?
            }
            _ => None,
        };
        let template = deployment.spec.as_ref().map(|s| &s.template);
        let mut claims = Vec::new();
        for (volume, old) in claim_volumes(template) {
            let new_name = format!("{volume}-{name}-0");
            let new = named("PersistentVolumeClaim", &new_name)
                .ok_or_else(|| MigrateError(format!("claim {new_name} missing")))?;
            claims.push((old.to_string(), parse(new)?));
        }
        Ok(Target {
            statefulset,
            service,
            claims,
        })
    }
}

/// What is in the cluster now.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub deployment: Option<Deployment>,
    pub deployment_pods: usize,
    pub statefulset: Option<StatefulSet>,
    pub statefulset_pods: usize,
    pub service: Option<Service>,
    pub claims: BTreeMap<String, PersistentVolumeClaim>,
    pub volumes: BTreeMap<String, PersistentVolume>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Migrate,
    /// Migrate, then delete the Deployment.
    Finish,
    Rollback,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Begin(Journal),
    RetainVolume {
        volume: String,
    },
    ScaleDown,
    Wait(String),
    DeleteClaim {
        claim: String,
    },
    FreeVolume {
        volume: String,
    },
    CreateClaim(PersistentVolumeClaim),
    CreateService(Service),
    CreateStatefulSet(Box<StatefulSet>),
    /// Done: the StatefulSet is Ready; the Deployment waits at 0 for `--finish`.
    Migrated,
    DeleteDeployment,
    Finished,
    DeleteStatefulSet,
    DeleteService {
        service: String,
    },
    RestoreClaim(PersistentVolumeClaim),
    RestoreReclaim {
        volume: String,
        policy: String,
    },
    ScaleUp(i32),
    /// The last rollback step: the journal goes, the Deployment is back.
    EndJournal,
}

impl Step {
    /// The name recorded in the journal.
    pub fn name(&self) -> String {
        match self {
            Step::Begin(_) => "begin".into(),
            Step::RetainVolume { volume } => format!("retain {volume}"),
            Step::ScaleDown => "scale-down".into(),
            Step::Wait(_) => "wait".into(),
            Step::DeleteClaim { claim } => format!("delete-claim {claim}"),
            Step::FreeVolume { volume } => format!("free {volume}"),
            Step::CreateClaim(c) => format!(
                "create-claim {}",
                c.metadata.name.as_deref().unwrap_or_default()
            ),
            Step::CreateService(s) => format!(
                "create-service {}",
                s.metadata.name.as_deref().unwrap_or_default()
            ),
            Step::CreateStatefulSet(_) => "create-statefulset".into(),
            Step::Migrated => "migrated".into(),
            Step::DeleteDeployment => "delete-deployment".into(),
            Step::Finished => "finished".into(),
            Step::DeleteStatefulSet => "delete-statefulset".into(),
            Step::DeleteService { service } => format!("delete-service {service}"),
            Step::RestoreClaim(c) => format!(
                "restore-claim {}",
                c.metadata.name.as_deref().unwrap_or_default()
            ),
            Step::RestoreReclaim { volume, .. } => format!("restore-reclaim {volume}"),
            Step::ScaleUp(_) => "scale-up".into(),
            Step::EndJournal => "end-journal".into(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct MigrateError(pub String);

fn journal_of(d: &Deployment) -> Result<Option<Journal>, MigrateError> {
    let Some(text) = d.metadata.annotations.as_ref().and_then(|a| a.get(JOURNAL)) else {
        return Ok(None);
    };
    serde_json::from_str(text).map(Some).map_err(|e| {
        MigrateError(format!(
            "annotation {JOURNAL} is unreadable ({e}); fix or remove it by hand"
        ))
    })
}

fn reclaim(v: &PersistentVolume) -> &str {
    v.spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Delete")
}

fn claimed_by(v: &PersistentVolume) -> Option<&str> {
    v.spec.as_ref()?.claim_ref.as_ref()?.name.as_deref()
}

/// Whether the volume's claimRef stands in the way of `wanted` binding it:
/// it names another claim, or a claim that no longer exists (a deleted
/// claim's UID stays in claimRef, and a new claim of the same name would
/// never bind).
fn holds_elsewhere(o: &Observed, volume: &str, wanted: &str) -> bool {
    o.volumes
        .get(volume)
        .and_then(claimed_by)
        .is_some_and(|c| c != wanted || !o.claims.contains_key(wanted))
}

fn terminating(c: &PersistentVolumeClaim) -> bool {
    c.metadata.deletion_timestamp.is_some()
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// The one next step.
pub fn next(target: &Target, observed: &Observed, mode: Mode) -> Result<Step, MigrateError> {
    let name = target
        .statefulset
        .metadata
        .name
        .as_deref()
        .unwrap_or_default();
    let Some(deployment) = &observed.deployment else {
        return match mode {
            Mode::Rollback => Err(MigrateError(format!(
                "Deployment {name} is gone (deleted by --finish): there is nothing to roll back to"
            ))),
            _ if observed.statefulset.is_some() => Ok(Step::Finished),
            _ => Err(MigrateError(format!("Deployment {name} not found"))),
        };
    };
    let Some(journal) = journal_of(deployment)? else {
        return match mode {
            Mode::Rollback => Err(MigrateError(format!(
                "no migration is recorded on Deployment {name}: nothing to roll back"
            ))),
            _ => begin(target, observed, deployment).map(Step::Begin),
        };
    };
    match mode {
        Mode::Rollback => rollback(observed, deployment, &journal),
        _ => forward(target, observed, deployment, &journal, mode),
    }
}

fn begin(
    target: &Target,
    observed: &Observed,
    deployment: &Deployment,
) -> Result<Journal, MigrateError> {
    let mut moves = Vec::new();
    for (old, new) in &target.claims {
        let claim = observed
            .claims
            .get(old)
            .ok_or_else(|| MigrateError(format!("claim {old} not found")))?;
        let volume = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .ok_or_else(|| {
                MigrateError(format!(
                    "claim {old} is not bound to a PersistentVolume yet"
                ))
            })?;
        let pv = observed.volumes.get(&volume).ok_or_else(|| {
            MigrateError(format!(
                "PersistentVolume {volume} of claim {old} not found"
            ))
        })?;
        let mut old_spec = claim.spec.clone().unwrap_or_default();
        old_spec.volume_name = Some(volume.clone());
        moves.push(Move {
            old_claim: old.clone(),
            new_claim: new.metadata.name.clone().unwrap_or_default(),
            volume,
            reclaim_policy: reclaim(pv).to_string(),
            old_spec,
            old_labels: claim.metadata.labels.clone(),
        });
    }
    let service = match (&target.service, &observed.service) {
        (Some(s), None) => s.metadata.name.clone(),
        _ => None,
    };
    Ok(Journal {
        replicas: replicas(deployment),
        moves,
        service,
        done: Vec::new(),
    })
}

fn forward(
    target: &Target,
    o: &Observed,
    d: &Deployment,
    journal: &Journal,
    mode: Mode,
) -> Result<Step, MigrateError> {
    for m in &journal.moves {
        let pv = o
            .volumes
            .get(&m.volume)
            .ok_or_else(|| MigrateError(format!("PersistentVolume {} is gone", m.volume)))?;
        if reclaim(pv) != "Retain" {
            return Ok(Step::RetainVolume {
                volume: m.volume.clone(),
            });
        }
    }
    if replicas(d) != 0 {
        return Ok(Step::ScaleDown);
    }
    if o.deployment_pods > 0 {
        return Ok(Step::Wait(format!(
            "{} pods of the Deployment still running",
            o.deployment_pods
        )));
    }
    for m in &journal.moves {
        match o.claims.get(&m.old_claim) {
            Some(c) if terminating(c) => {
                return Ok(Step::Wait(format!("claim {} being deleted", m.old_claim)));
            }
            Some(_) => {
                return Ok(Step::DeleteClaim {
                    claim: m.old_claim.clone(),
                });
            }
            None => {}
        }
    }
    for m in &journal.moves {
        if holds_elsewhere(o, &m.volume, &m.new_claim) {
            return Ok(Step::FreeVolume {
                volume: m.volume.clone(),
            });
        }
    }
    for (_, new) in &target.claims {
        if !o
            .claims
            .contains_key(new.metadata.name.as_deref().unwrap_or_default())
        {
            return Ok(Step::CreateClaim(new.clone()));
        }
    }
    if let (Some(service), None) = (&target.service, &o.service) {
        return Ok(Step::CreateService(service.clone()));
    }
    let Some(sts) = &o.statefulset else {
        return Ok(Step::CreateStatefulSet(Box::new(
            target.statefulset.clone(),
        )));
    };
    let want = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = sts
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    if ready < want {
        return Ok(Step::Wait(format!(
            "{ready} of {want} StatefulSet pods Ready"
        )));
    }
    Ok(if mode == Mode::Finish {
        Step::DeleteDeployment
    } else {
        Step::Migrated
    })
}

fn rollback(o: &Observed, d: &Deployment, journal: &Journal) -> Result<Step, MigrateError> {
    if o.statefulset.is_some() {
        return Ok(Step::DeleteStatefulSet);
    }
    if o.statefulset_pods > 0 {
        return Ok(Step::Wait(format!(
            "{} StatefulSet pods still running",
            o.statefulset_pods
        )));
    }
    if let (Some(service), Some(_)) = (&journal.service, &o.service) {
        return Ok(Step::DeleteService {
            service: service.clone(),
        });
    }
    for m in &journal.moves {
        match o.claims.get(&m.new_claim) {
            Some(c) if terminating(c) => {
                return Ok(Step::Wait(format!("claim {} being deleted", m.new_claim)));
            }
            Some(_) => {
                return Ok(Step::DeleteClaim {
                    claim: m.new_claim.clone(),
                });
            }
            None => {}
        }
    }
    for m in &journal.moves {
        if holds_elsewhere(o, &m.volume, &m.old_claim) {
            return Ok(Step::FreeVolume {
                volume: m.volume.clone(),
            });
        }
    }
    for m in &journal.moves {
        if !o.claims.contains_key(&m.old_claim) {
            return Ok(Step::RestoreClaim(PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(m.old_claim.clone()),
                    namespace: d.metadata.namespace.clone(),
                    labels: m.old_labels.clone(),
                    ..Default::default()
                },
                spec: Some(m.old_spec.clone()),
                status: None,
            }));
        }
    }
    for m in &journal.moves {
        let pv = o
            .volumes
            .get(&m.volume)
            .ok_or_else(|| MigrateError(format!("PersistentVolume {} is gone", m.volume)))?;
        if reclaim(pv) != m.reclaim_policy {
            return Ok(Step::RestoreReclaim {
                volume: m.volume.clone(),
                policy: m.reclaim_policy.clone(),
            });
        }
    }
    if replicas(d) != journal.replicas {
        return Ok(Step::ScaleUp(journal.replicas));
    }
    Ok(Step::EndJournal)
}
