//! Reads what the migration planner needs and carries out its steps with
//! kube. Thin: every write is guarded by the resourceVersion (deletes also
//! by the UID) the step was decided on, so nothing changed meanwhile is
//! overwritten or deleted.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use std::collections::HashMap;

use super::migrate::{JOURNAL, Journal, Observed, Step, Target};
use crate::manifest::Manifest;
use crate::refresh::executor::FIELD_MANAGER;
use crate::workload::claim_volumes;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}: {1}")]
    Kube(String, #[source] kube::Error),
    #[error("{0}")]
    Plan(String),
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

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// A delete that fails if the object changed since it was observed.
fn guarded<K: Resource>(object: &K) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: object.meta().uid.clone(),
            resource_version: object.meta().resource_version.clone(),
        }),
        ..Default::default()
    }
}

fn merge(resource_version: Option<String>, body: Value) -> Value {
    let mut body = body;
    body["metadata"]["resourceVersion"] = json!(resource_version);
    body
}

/// Carries out one step on what was observed.
pub async fn execute(
    client: &kube::Client,
    namespace: &str,
    step: &Step,
    o: &Observed,
) -> Result<(), kube::Error> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let deployment = o.deployment.as_ref();
    let d_name = deployment.map(|d| d.name_any()).unwrap_or_default();
    let d_version = deployment.and_then(|d| d.resource_version());
    let pv = |name: &str| o.volumes.get(name).and_then(|v| v.resource_version());
    match step {
        Step::Begin(journal) => {
            let text = serde_json::to_string(journal).unwrap_or_default();
            let body = merge(
                d_version,
                json!({"metadata": {"annotations": {JOURNAL: text}}}),
            );
            deployments
                .patch(&d_name, &params(), &Patch::Merge(&body))
                .await?;
        }
        Step::RetainVolume { volume } | Step::RestoreReclaim { volume, .. } => {
            let policy = match step {
                Step::RestoreReclaim { policy, .. } => policy.as_str(),
                _ => "Retain",
            };
            let body = merge(
                pv(volume),
                json!({"spec": {"persistentVolumeReclaimPolicy": policy}}),
            );
            pvs.patch(volume, &params(), &Patch::Merge(&body)).await?;
        }
        Step::ScaleDown | Step::ScaleUp(_) => {
            let replicas = if let Step::ScaleUp(n) = step { *n } else { 0 };
            let body = merge(d_version, json!({"spec": {"replicas": replicas}}));
            deployments
                .patch(&d_name, &params(), &Patch::Merge(&body))
                .await?;
        }
        Step::DeleteClaim { claim } => {
            if let Some(c) = o.claims.get(claim) {
                claims.delete(claim, &guarded(c)).await?;
            }
        }
        Step::FreeVolume { volume } => {
            let body = merge(pv(volume), json!({"spec": {"claimRef": null}}));
            pvs.patch(volume, &params(), &Patch::Merge(&body)).await?;
        }
        Step::CreateClaim(claim) | Step::RestoreClaim(claim) => {
            create(claims.create(&PostParams::default(), claim).await)?;
        }
        Step::CreateService(service) => {
            let api: Api<Service> = Api::namespaced(client.clone(), namespace);
            create(api.create(&PostParams::default(), service).await)?;
        }
        Step::CreateStatefulSet(sts) => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
            create(api.create(&PostParams::default(), sts).await)?;
        }
        Step::DeleteStatefulSet => {
            if let Some(sts) = &o.statefulset {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
                api.delete(&sts.name_any(), &guarded(sts)).await?;
            }
        }
        Step::DeleteService { service } => {
            if let Some(s) = &o.service {
                let api: Api<Service> = Api::namespaced(client.clone(), namespace);
                api.delete(service, &guarded(s)).await?;
            }
        }
        Step::EndJournal => {
            let body = merge(
                d_version,
                json!({"metadata": {"annotations": {JOURNAL: null}}}),
            );
            deployments
                .patch(&d_name, &params(), &Patch::Merge(&body))
                .await?;
        }
        Step::DeleteDeployment => {
            if let Some(d) = deployment {
                deployments.delete(&d_name, &guarded(d)).await?;
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

/// Appends a completed step to the journal, guarded like every write.
pub async fn record(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    step: &Step,
) -> Result<(), kube::Error> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let Some(d) = deployments.get_opt(name).await? else {
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
    let text = serde_json::to_string(&journal).unwrap_or_default();
    let body = merge(
        d.resource_version(),
        json!({"metadata": {"annotations": {JOURNAL: text}}}),
    );
    deployments
        .patch(name, &params(), &Patch::Merge(&body))
        .await?;
    Ok(())
}
