//! Reads what the migration planner needs and carries out its steps with
//! kube. Thin: every write is a JSON Patch guarded by `test` operations on
//! exactly the fields the step was decided on, and every delete by the
//! object's UID, so nothing a person changed meanwhile is overwritten or
//! deleted. Never by the whole object's resourceVersion: the Deployment
//! controller writes status after every change, and on a real cluster
//! that turned the journal writes into 409s.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use std::collections::HashMap;

use super::migrate::{JOURNAL, Journal, Observed, Step, Target};
use crate::manifest::Manifest;
use crate::refresh::executor::{self, Outcome, annotation_path};
use crate::workload::claim_volumes;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}: {1}")]
    Kube(String, #[source] kube::Error),
    #[error("{0}")]
    Plan(String),
    /// A person changed what a step was decided on.
    #[error("{0}")]
    Changed(String),
}

/// The StatefulSet (and claims, Service) this Deployment migrates to, from
/// the live objects; claims already deleted come from the journal.
pub async fn target(client: &kube::Client, ns: &str, name: &str) -> Result<Target, ApplyError> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| ApplyError::Kube(name.to_string(), e))?
        .ok_or_else(|| ApplyError::Plan(format!("Deployment {ns}/{name} not found")))?;
    let journal: Option<Journal> = deployment
        .annotations()
        .get(JOURNAL)
        .and_then(|t| serde_json::from_str(t).ok());
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let source = |what: &str| format!("{what} (live)");
    let mut manifests = Vec::new();
    let mut pvs = HashMap::new();
    let claim_names: Vec<String> = claim_volumes(deployment.spec.as_ref().map(|s| &s.template))
        .into_iter()
        .map(|(_, claim)| claim.to_string())
        .collect();
    for claim_name in claim_names {
        let claim = match claims_api
            .get_opt(&claim_name)
            .await
            .map_err(|e| ApplyError::Kube(claim_name.clone(), e))?
        {
            Some(c) => c,
            None => {
                let m = journal
                    .as_ref()
                    .and_then(|j| j.moves.iter().find(|m| m.old_claim == claim_name))
                    .ok_or_else(|| {
                        ApplyError::Plan(format!(
                            "claim {ns}/{claim_name} not found, and no migration journal has it"
                        ))
                    })?;
                PersistentVolumeClaim {
                    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                        name: Some(claim_name.clone()),
                        namespace: Some(ns.into()),
                        labels: m.old_labels.clone(),
                        ..Default::default()
                    },
                    spec: Some(m.old_spec.clone()),
                    status: None,
                }
            }
        };
        if let Some(pv) = claim.spec.as_ref().and_then(|s| s.volume_name.clone()) {
            pvs.insert(claim_name.clone(), pv);
        }
        manifests.push(Manifest {
            source: source(&claim_name),
            value: to_value(&claim)?,
        });
    }
    let services = Api::<Service>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| ApplyError::Kube("Services".into(), e))?;
    let existing: Vec<String> = services.items.iter().map(|s| s.name_any()).collect();
    for s in &services.items {
        manifests.push(Manifest {
            source: source(&s.name_any()),
            value: to_value(s)?,
        });
    }
    // Scaled to 0 by the migration: the StatefulSet gets the original count.
    let mut original = deployment.clone();
    if let (Some(j), Some(spec)) = (&journal, original.spec.as_mut()) {
        spec.replicas = Some(j.replicas);
    }
    manifests.push(Manifest {
        source: source(name),
        value: to_value(&original)?,
    });
    let conversion =
        super::convert(&manifests, &pvs).map_err(|e| ApplyError::Plan(e.to_string()))?;
    if let Some(problem) = conversion.problems.first() {
        return Err(ApplyError::Plan(format!("cannot migrate: {problem}")));
    }
    Target::of(&original, &conversion.objects, &existing).map_err(|e| ApplyError::Plan(e.0))
}

fn to_value<T: serde::Serialize>(object: &T) -> Result<Value, ApplyError> {
    serde_json::to_value(object).map_err(|e| ApplyError::Plan(e.to_string()))
}

/// Everything the planner reads, in one namespace.
pub async fn observe(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    target: &Target,
) -> Result<Observed, kube::Error> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = deployments.get_opt(name).await?;
    let sts_name = target.statefulset.name_any();
    let statefulset = Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .get_opt(&sts_name)
        .await?;
    let labels: Vec<String> = target
        .statefulset
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
        .unwrap_or_default();
    // Both controllers' pods carry the same labels: tell them by owner.
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&labels.join(",")))
        .await?;
    let owned_by = |kind: &str| {
        pods.items
            .iter()
            .filter(|p| p.owner_references().iter().any(|o| o.kind == kind))
            .count()
    };
    let service_name = target
        .statefulset
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .unwrap_or_default();
    let service = Api::<Service>::namespaced(client.clone(), namespace)
        .get_opt(&service_name)
        .await?;
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let mut observed = Observed {
        deployment_pods: owned_by("ReplicaSet"),
        statefulset_pods: owned_by("StatefulSet"),
        deployment,
        statefulset,
        service,
        ..Default::default()
    };
    let journal: Option<Journal> = observed
        .deployment
        .as_ref()
        .and_then(|d| d.annotations().get(JOURNAL))
        .and_then(|t| serde_json::from_str(t).ok());
    let mut volumes: Vec<String> = journal
        .iter()
        .flat_map(|j| j.moves.iter().map(|m| m.volume.clone()))
        .collect();
    for (old, new) in &target.claims {
        for claim in [old.clone(), new.name_any()] {
            if let Some(c) = claims_api.get_opt(&claim).await? {
                volumes.extend(c.spec.as_ref().and_then(|s| s.volume_name.clone()));
                observed.claims.insert(claim, c);
            }
        }
    }
    volumes.sort();
    volumes.dedup();
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    for v in volumes {
        if let Some(pv) = pvs.get_opt(&v).await? {
            observed.volumes.insert(v, pv);
        }
    }
    Ok(observed)
}

/// A delete of exactly the object observed (its UID): one recreated under
/// the same name is never deleted. Not its resourceVersion, which the
/// controllers move with every status write.
fn guarded_delete<K: Resource>(object: &K) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: object.meta().uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    }
}

/// The JSON Patch that sets the journal to `next` (or removes it), guarded
/// by the journal's own previous value: the Deployment controller's status
/// writes never conflict with it, a concurrent migration's journal does.
pub fn journal_ops(deployment: &Deployment, next: Option<&Journal>) -> Vec<Value> {
    let path = annotation_path(JOURNAL);
    let mut ops =
        vec![json!({"op": "test", "path": "/metadata/uid", "value": deployment.metadata.uid})];
    let text = next.map(|j| serde_json::to_string(j).unwrap_or_default());
    match (deployment.annotations().get(JOURNAL), text) {
        (Some(seen), Some(text)) => {
            ops.push(json!({"op": "test", "path": path, "value": seen}));
            ops.push(json!({"op": "replace", "path": path, "value": text}));
        }
        (Some(seen), None) => {
            ops.push(json!({"op": "test", "path": path, "value": seen}));
            ops.push(json!({"op": "remove", "path": path}));
        }
        (None, Some(text)) if deployment.metadata.annotations.is_some() => {
            ops.push(json!({"op": "add", "path": path, "value": text}));
        }
        (None, Some(text)) => {
            ops.push(
                json!({"op": "add", "path": "/metadata/annotations", "value": {JOURNAL: text}}),
            );
        }
        (None, None) => {}
    }
    ops
}

/// A guarded patch; when its guard failed, one sentence saying what
/// changed, read from the object as it is now.
async fn patch<K>(api: &Api<K>, what: &str, name: &str, ops: Vec<Value>) -> Result<(), ApplyError>
where
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let kube_error = |e| ApplyError::Kube(what.to_string(), e);
    if executor::guarded(api, name, ops.clone())
        .await
        .map_err(kube_error)?
        == Outcome::Applied
    {
        return Ok(());
    }
    let current = api.get_opt(name).await.map_err(kube_error)?;
    let change = match current {
        None => "it was deleted".to_string(),
        Some(object) => {
            let value = serde_json::to_value(&object).unwrap_or_default();
            executor::failed_test(&ops, &value).unwrap_or_else(|| "it kept changing".to_string())
        }
    };
    Err(ApplyError::Changed(format!(
        "{what} changed while the step ran: {change}; nothing was written, run migrate again to plan from what is there"
    )))
}

/// A delete guarded by the UID; gone already is as good as deleted.
async fn delete<K>(api: &Api<K>, what: &str, object: &K) -> Result<(), ApplyError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let params = guarded_delete(object);
    match executor::retry_conflicts(|| api.delete(&name, &params)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(ApplyError::Changed(format!(
            "{what} was replaced by another object of the same name; nothing was deleted, run migrate again"
        ))),
        Err(e) => Err(ApplyError::Kube(what.to_string(), e)),
    }
}

/// Carries out one step on what was observed.
pub async fn execute(
    client: &kube::Client,
    namespace: &str,
    step: &Step,
    o: &Observed,
) -> Result<(), ApplyError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let deployment = o.deployment.as_ref();
    let d_name = deployment.map(|d| d.name_any()).unwrap_or_default();
    let d_what = format!("Deployment {namespace}/{d_name}");
    let kube_error = |what: &str| {
        let what = what.to_string();
        move |e| ApplyError::Kube(what, e)
    };
    match step {
        Step::Begin(journal) => {
            if let Some(d) = deployment {
                patch(
                    &deployments,
                    &d_what,
                    &d_name,
                    journal_ops(d, Some(journal)),
                )
                .await?;
            }
        }
        Step::RetainVolume { volume } | Step::RestoreReclaim { volume, .. } => {
            let policy = match step {
                Step::RestoreReclaim { policy, .. } => policy.as_str(),
                _ => "Retain",
            };
            let path = "/spec/persistentVolumeReclaimPolicy";
            let seen = o
                .volumes
                .get(volume)
                .and_then(|v| v.spec.as_ref())
                .and_then(|s| s.persistent_volume_reclaim_policy.clone());
            let ops = vec![
                json!({"op": "test", "path": path, "value": seen}),
                json!({"op": "replace", "path": path, "value": policy}),
            ];
            patch(&pvs, &format!("PersistentVolume {volume}"), volume, ops).await?;
        }
        Step::ScaleDown | Step::ScaleUp(_) => {
            let replicas = if let Step::ScaleUp(n) = step { *n } else { 0 };
            let seen = deployment
                .and_then(|d| d.spec.as_ref())
                .and_then(|s| s.replicas);
            let ops = match seen {
                Some(seen) => vec![
                    json!({"op": "test", "path": "/spec/replicas", "value": seen}),
                    json!({"op": "replace", "path": "/spec/replicas", "value": replicas}),
                ],
                None => vec![json!({"op": "add", "path": "/spec/replicas", "value": replicas})],
            };
            patch(&deployments, &d_what, &d_name, ops).await?;
        }
        Step::DeleteClaim { claim } => {
            if let Some(c) = o.claims.get(claim) {
                delete(&claims, &format!("claim {namespace}/{claim}"), c).await?;
            }
        }
        Step::FreeVolume { volume } => {
            let seen = o
                .volumes
                .get(volume)
                .and_then(|v| v.spec.as_ref())
                .and_then(|s| s.claim_ref.as_ref())
                .map(|r| r.uid.clone());
            if let Some(uid) = seen {
                let ops = vec![
                    json!({"op": "test", "path": "/spec/claimRef/uid", "value": uid}),
                    json!({"op": "remove", "path": "/spec/claimRef"}),
                ];
                patch(&pvs, &format!("PersistentVolume {volume}"), volume, ops).await?;
            }
        }
        Step::CreateClaim(claim) | Step::RestoreClaim(claim) => {
            let what = format!("claim {namespace}/{}", claim.name_any());
            create(claims.create(&PostParams::default(), claim).await)
                .map_err(kube_error(&what))?;
        }
        Step::CreateService(service) => {
            let api: Api<Service> = Api::namespaced(client.clone(), namespace);
            let what = format!("Service {namespace}/{}", service.name_any());
            create(api.create(&PostParams::default(), service).await).map_err(kube_error(&what))?;
        }
        Step::CreateStatefulSet(sts) => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
            let what = format!("StatefulSet {namespace}/{}", sts.name_any());
            create(api.create(&PostParams::default(), sts).await).map_err(kube_error(&what))?;
        }
        Step::DeleteStatefulSet => {
            if let Some(sts) = &o.statefulset {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
                delete(
                    &api,
                    &format!("StatefulSet {namespace}/{}", sts.name_any()),
                    sts,
                )
                .await?;
            }
        }
        Step::DeleteService { service } => {
            if let Some(s) = &o.service {
                let api: Api<Service> = Api::namespaced(client.clone(), namespace);
                delete(&api, &format!("Service {namespace}/{service}"), s).await?;
            }
        }
        Step::EndJournal => {
            if let Some(d) = deployment {
                patch(&deployments, &d_what, &d_name, journal_ops(d, None)).await?;
            }
        }
        Step::DeleteDeployment => {
            if let Some(d) = deployment {
                delete(&deployments, &d_what, d).await?;
            }
        }
        Step::Wait(_) | Step::Migrated | Step::Finished => {}
    }
    Ok(())
}

/// Already there (a repeated run) is as good as made.
fn create<K>(result: Result<K, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Appends a completed step to the journal, guarded by the journal as it
/// was read.
pub async fn record(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    step: &Step,
) -> Result<(), ApplyError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let what = format!("Deployment {namespace}/{name}");
    let Some(d) = deployments
        .get_opt(name)
        .await
        .map_err(|e| ApplyError::Kube(what.clone(), e))?
    else {
        return Ok(());
    };
    let Some(mut journal) = d
        .annotations()
        .get(JOURNAL)
        .and_then(|t| serde_json::from_str::<Journal>(t).ok())
    else {
        return Ok(());
    };
    journal.done.push(step.name());
    patch(&deployments, &what, name, journal_ops(&d, Some(&journal))).await
}

/// How a run of the migration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The StatefulSet runs; the Deployment waits at 0 replicas.
    Migrated,
    /// ... and the Deployment is deleted.
    Finished,
    RolledBack,
}

/// How long to wait before looking again while the cluster catches up.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// Enough for a slow cluster: about 100 minutes of waiting.
const MAX_STEPS: usize = 2000;

/// Runs the migration (or its rollback) to its end: observe, plan the one
/// next step, carry it out, journal it, again. `progress` hears each step
/// and each wait, as a line.
pub async fn run(
    client: &kube::Client,
    ns: &str,
    name: &str,
    target: &Target,
    mode: super::migrate::Mode,
    progress: &mut dyn FnMut(String),
) -> Result<Ended, ApplyError> {
    for _ in 0..MAX_STEPS {
        let observed = observe(client, ns, name, target)
            .await
            .map_err(|e| ApplyError::Kube(format!("observe {ns}/{name}"), e))?;
        let step =
            super::migrate::next(target, &observed, mode).map_err(|e| ApplyError::Plan(e.0))?;
        match &step {
            Step::Wait(why) => {
                progress(format!("waiting: {why}"));
                tokio::time::sleep(WAIT).await;
                continue;
            }
            Step::Migrated => return Ok(Ended::Migrated),
            Step::Finished => return Ok(Ended::Finished),
            _ => {}
        }
        progress(format!("step: {}", step.name()));
        execute(client, ns, &step, &observed).await?;
        if step == Step::EndJournal {
            return Ok(Ended::RolledBack);
        }
        if !matches!(step, Step::Begin(_) | Step::DeleteDeployment) {
            record(client, ns, name, &step).await?;
        }
    }
    Err(ApplyError::Plan(format!(
        "Deployment {ns}/{name}: the migration did not finish; run it again to continue"
    )))
}
