//! The cluster view from kube-runtime reflectors: decisions read the cache,
//! never the API per request. Thin: the stores are filled by kube-runtime
//! and read through [`ClusterView`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::metrics::gauge::Gauge;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::ClusterView;
use crate::claim::pod_claims;
use crate::policy::{Policy, PolicyError, PolicySet};
use crate::workload::{WORKLOAD_LABEL, Workload, WorkloadKind, controller_of, is_ready, owner_of};

/// The `UpgradePolicy` custom resource.
pub fn policy_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("upgradeguard.io", "v1alpha1", "UpgradePolicy"),
        "upgradepolicies",
    )
}

/// One workload, as the refresh controller steps it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WorkloadKey {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl WorkloadKey {
    pub fn of(w: &Workload) -> WorkloadKey {
        WorkloadKey {
            kind: w.kind(),
            namespace: w.namespace().into(),
            name: w.name().into(),
        }
    }
}

/// What watch events concerned since the refresh controller last took
/// them: sets (a flood of pod events is one entry per workload, and nothing
/// is lost or unbounded) and a wake-up.
#[derive(Clone, Default)]
pub struct Changed {
    keys: Arc<Mutex<BTreeSet<WorkloadKey>>>,
    /// Ready pods that mount a claim, as (namespace, name): what they serve
    /// is recorded on their claims.
    serving: Arc<Mutex<BTreeSet<(String, String)>>>,
    wake: Arc<Notify>,
}

impl Changed {
    pub fn mark(&self, key: WorkloadKey) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.insert(key);
        }
        self.wake.notify_one();
    }

    /// Every workload marked since the last call.
    pub fn take(&self) -> BTreeSet<WorkloadKey> {
        self.keys
            .lock()
            .map(|mut k| std::mem::take(&mut *k))
            .unwrap_or_default()
    }

    pub fn mark_serving(&self, namespace: String, pod: String) {
        if let Ok(mut pods) = self.serving.lock() {
            pods.insert((namespace, pod));
        }
        self.wake.notify_one();
    }

    /// Every serving pod marked since the last call.
    pub fn take_serving(&self) -> BTreeSet<(String, String)> {
        self.serving
            .lock()
            .map(|mut k| std::mem::take(&mut *k))
            .unwrap_or_default()
    }

    /// Until something is marked (at once if something was since the last wait).
    pub async fn wait(&self) {
        self.wake.notified().await;
    }
}

/// A Ready pod that mounts a claim serves its data.
fn serves_a_claim(pod: &Pod) -> bool {
    is_ready(pod).is_some()
        && pod
            .spec
            .as_ref()
            .is_some_and(|s| pod_claims(s).next().is_some())
}

/// The workload a pod belongs to.
fn pod_owner(pod: &Pod) -> Option<WorkloadKey> {
    let (kind, name) = owner_of(pod)?;
    Some(WorkloadKey {
        kind,
        namespace: pod.metadata.namespace.clone()?,
        name,
    })
}

/// The workload a hook Job was made for (its owner).
fn job_owner(job: &Job) -> Option<WorkloadKey> {
    let owner = controller_of(&job.metadata)?;
    let kind = match owner.kind.as_str() {
        "StatefulSet" => WorkloadKind::StatefulSet,
        "Deployment" => WorkloadKind::Deployment,
        _ => return None,
    };
    Some(WorkloadKey {
        kind,
        namespace: job.metadata.namespace.clone()?,
        name: owner.name.clone(),
    })
}

/// Whether an object carries a refresh record.
fn has_record(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(crate::workload::REFRESH))
}

/// A workload concerns the controller while it carries a refresh record.
fn recorded<K: Resource>(kind: WorkloadKind) -> impl Fn(&K) -> Option<WorkloadKey> {
    move |object: &K| {
        let meta = object.meta();
        if !has_record(meta) {
            return None;
        }
        Some(WorkloadKey {
            kind,
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
        })
    }
}

#[derive(Clone)]
pub struct LiveCluster {
    statefulsets: Store<StatefulSet>,
    deployments: Store<Deployment>,
    claims: Store<PersistentVolumeClaim>,
    pods: Store<Pod>,
    /// Hook Jobs only (label `upgradeguard.io/workload`), env kept: which
    /// Job is upgrade-guard's is judged on it. Read by the refresh
    /// controller, not by decisions.
    jobs: Store<Job>,
    changed: Changed,
}

impl LiveCluster {
    /// What the watches mark for the refresh controller.
    pub fn changed(&self) -> &Changed {
        &self.changed
    }

    /// The cached pods a workload's selector (matchLabels) picks.
    pub fn pods_of(&self, w: &Workload) -> Vec<Pod> {
        let selector = match w {
            Workload::StatefulSet(s) => s
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.clone()),
            Workload::Deployment(d) => d
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.clone()),
        }
        .unwrap_or_default();
        self.pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(w.namespace()))
            .filter(|p| {
                let labels = p.metadata.labels.as_ref();
                selector
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            })
            .map(|p| (*p).clone())
            .collect()
    }
}

impl LiveCluster {
    /// A cached claim.
    pub fn claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.claims.get(&ObjectRef::new(name).within(namespace))
    }

    /// Every cached Ready pod that mounts a claim, as (namespace, name).
    pub fn serving_pods(&self) -> Vec<(String, String)> {
        self.pods
            .state()
            .into_iter()
            .filter(|p| serves_a_claim(p))
            .filter_map(|p| Some((p.metadata.namespace.clone()?, p.metadata.name.clone()?)))
            .collect()
    }

    /// The cached hook Jobs of a workload: those labelled
    /// [`WORKLOAD_LABEL`]` = label` in its namespace.
    pub fn jobs_of(&self, w: &Workload, label: &str) -> Vec<Job> {
        self.jobs
            .state()
            .into_iter()
            .filter(|j| j.metadata.namespace.as_deref() == Some(w.namespace()))
            .filter(|j| {
                j.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(WORKLOAD_LABEL))
                    .is_some_and(|v| v == label)
            })
            .map(|j| (*j).clone())
            .collect()
    }

    /// Whether the hook Jobs are listed (waiting at most `wait`): before
    /// that, a Job that exists would look missing.
    pub async fn jobs_ready(&self, wait: std::time::Duration) -> bool {
        matches!(
            tokio::time::timeout(wait, self.jobs.wait_until_ready()).await,
            Ok(Ok(()))
        )
    }
}

impl ClusterView for LiveCluster {
    fn workload(&self, kind: WorkloadKind, namespace: &str, name: &str) -> Option<Workload> {
        match kind {
            WorkloadKind::StatefulSet => self
                .statefulsets
                .get(&ObjectRef::new(name).within(namespace))
                .map(|s| Workload::StatefulSet(Box::new((*s).clone()))),
            WorkloadKind::Deployment => self
                .deployments
                .get(&ObjectRef::new(name).within(namespace))
                .map(|d| Workload::Deployment(Box::new((*d).clone()))),
        }
    }

    fn claim_access_modes(&self, namespace: &str, name: &str) -> Option<Vec<String>> {
        let claim = self.claims.get(&ObjectRef::new(name).within(namespace))?;
        claim.spec.as_ref().and_then(|s| s.access_modes.clone())
    }

    fn claim_served(&self, namespace: &str, name: &str) -> Option<String> {
        let claim = self.claims.get(&ObjectRef::new(name).within(namespace))?;
        crate::claim::served_annotation(&claim).map(str::to_string)
    }

    fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.pods
            .get(&ObjectRef::new(name).within(namespace))
            .map(|p| (*p).clone())
    }

    fn with_records(&self) -> Vec<Workload> {
        let statefulsets = self
            .statefulsets
            .state()
            .into_iter()
            .filter(|s| has_record(&s.metadata))
            .map(|s| Workload::StatefulSet(Box::new((*s).clone())));
        let deployments = self
            .deployments
            .state()
            .into_iter()
            .filter(|d| has_record(&d.metadata))
            .map(|d| Workload::Deployment(Box::new((*d).clone())));
        statefulsets.chain(deployments).collect()
    }
}

/// Starts the watches. `policies` is kept equal to the file policies plus
/// every readable `UpgradePolicy`; `ready` turns true once all caches
/// synced. A cluster without the UpgradePolicy CRD (the list answers 404)
/// counts as synced with the file policies alone, with a warning and
/// `crd_missing` at 1: under `failurePolicy: Fail` an unready webhook
/// would refuse every workload change in the cluster. The watch keeps
/// retrying, so a CRD installed later is picked up.
pub fn start(
    client: Client,
    file_policies: Vec<Policy>,
    policies: Arc<ArcSwap<PolicySet>>,
    ready: Arc<AtomicBool>,
    crd_missing: Gauge<i64, AtomicI64>,
) -> LiveCluster {
    let all = watcher::Config::default;
    let changed = Changed::default();
    let statefulsets = watch(
        Api::<StatefulSet>::all(client.clone()),
        all(),
        |_| {},
        (changed.clone(), recorded(WorkloadKind::StatefulSet)),
    );
    let deployments = watch(
        Api::<Deployment>::all(client.clone()),
        all(),
        |_| {},
        (changed.clone(), recorded(WorkloadKind::Deployment)),
    );
    let claims = watch(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        all(),
        |_| {},
        (changed.clone(), |_: &PersistentVolumeClaim| None),
    );
    let serving = changed.clone();
    let pods = watch(
        Api::<Pod>::all(client.clone()),
        all(),
        trim_pod,
        (changed.clone(), move |pod: &Pod| {
            if serves_a_claim(pod)
                && let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name)
            {
                serving.mark_serving(ns.clone(), name.clone());
            }
            pod_owner(pod)
        }),
    );
    let hooks = all().labels(WORKLOAD_LABEL);
    let jobs = watch(
        Api::<Job>::all(client.clone()),
        hooks,
        |_| {},
        (changed.clone(), job_owner),
    );

    let resource = policy_resource();
    let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
    let custom = writer.as_reader();
    let stream = watcher(
        Api::<DynamicObject>::all_with(client, &resource),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer);
    let store = custom.clone();
    let (policies_synced, mut synced_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                // The store swaps in a (re)list only at InitDone.
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => {
                    if crd_missing.set(0) == 1 {
                        tracing::info!(
                            "the UpgradePolicy CRD is installed now: cluster policies apply"
                        );
                    }
                    policies.store(Arc::new(merge(&file_policies, &store)));
                    policies_synced.send_replace(true);
                }
                Err(watcher::Error::InitialListFailed(kube::Error::Api(s))) if s.code == 404 => {
                    if crd_missing.set(1) != 1 {
                        tracing::warn!(
                            "the UpgradePolicy CRD (upgradepolicies.upgradeguard.io) is not installed: only the policy files apply until it is"
                        );
                    }
                    if !store.state().is_empty() {
                        policies.store(Arc::new(
                            PolicySet::new(file_policies.clone()).unwrap_or_default(),
                        ));
                    }
                    policies_synced.send_replace(true);
                }
                Err(e) => tracing::warn!(error = %e, "UpgradePolicy watch"),
            }
        }
    });

    let view = LiveCluster {
        statefulsets,
        deployments,
        claims,
        pods,
        jobs,
        changed,
    };
    let waiting = view.clone();
    tokio::spawn(async move {
        let synced = futures::join!(
            waiting.statefulsets.wait_until_ready(),
            waiting.deployments.wait_until_ready(),
            waiting.claims.wait_until_ready(),
            waiting.pods.wait_until_ready(),
            async { synced_rx.wait_for(|synced| *synced).await.map(drop) },
        );
        if matches!(synced, (Ok(()), Ok(()), Ok(()), Ok(()), Ok(()))) {
            ready.store(true, Ordering::Release);
            tracing::info!("caches synced: ready");
        }
    });
    view
}

/// What the cache keeps of a pod: labels, owners, container names and
/// images, the claims it mounts, and status. Env values (secrets written
/// inline, too), commands and other volumes are read by no decision, so they
/// are not kept in memory.
pub fn trim_pod(pod: &mut Pod) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    if let Some(volumes) = spec.volumes.as_mut() {
        volumes.retain(|v| v.persistent_volume_claim.is_some());
        for v in volumes.iter_mut() {
            *v = Volume {
                name: std::mem::take(&mut v.name),
                persistent_volume_claim: v.persistent_volume_claim.take(),
                ..Default::default()
            };
        }
    }
    // A debugging container serves no data.
    spec.ephemeral_containers = None;
    let init = spec.init_containers.iter_mut().flatten();
    for c in spec.containers.iter_mut().chain(init) {
        c.env = None;
        c.env_from = None;
        c.command = None;
        c.args = None;
        c.volume_mounts = None;
    }
}

/// A reflector whose store drops managedFields (often half an object) and
/// whatever `trim` drops; each object changed or deleted marks the workload
/// it `concerns` (after the store has it).
fn watch<K, F>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
    (changed, concerns): (Changed, F),
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    F: Fn(&K) -> Option<WorkloadKey> + Send + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(move |o| {
            o.managed_fields_mut().clear();
            trim(o);
        })
        .reflect(writer)
        .touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(object) => {
                    if let Some(key) = concerns(&object) {
                        changed.mark(key);
                    }
                }
                // A watch error is retried with backoff; one bad object is skipped.
                Err(e) => {
                    tracing::warn!(error = %e, kind = %K::kind(&Default::default()), "watch")
                }
            }
        }
    });
    reader
}

/// One `UpgradePolicy` resource, parsed as a policy file is.
pub fn cluster_policy(object: &DynamicObject) -> Result<Policy, PolicyError> {
    let location = format!(
        "UpgradePolicy {}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    );
    let value = serde_json::to_value(object).unwrap_or_default();
    Policy::from_value(value, &location)
}

/// File policies and the cluster's, the unreadable ones skipped with a warning.
fn merge(file_policies: &[Policy], custom: &Store<DynamicObject>) -> PolicySet {
    let mut all = file_policies.to_vec();
    for object in custom.state() {
        match cluster_policy(&object) {
            Ok(policy) => all.push(policy),
            Err(e) => tracing::warn!(error = %e, "policy skipped"),
        }
    }
    PolicySet::new(all).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "duplicate policy names; keeping the file policies only");
        PolicySet::new(file_policies.to_vec()).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_cached_pod_keeps_what_decisions_read_and_no_env() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "db-0", "namespace": "shop", "labels": {"app": "db"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u", "controller": true}]},
            "spec": {
                "containers": [{"name": "db", "image": "db:1.6.2", "command": ["db"], "args": ["--x"],
                    "env": [{"name": "PASSWORD", "value": "hunter2"}], "envFrom": [{"secretRef": {"name": "s"}}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                "initContainers": [{"name": "init", "image": "init:1", "env": [{"name": "TOKEN", "value": "t"}]}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0", "readOnly": true}},
                    {"name": "token", "secret": {"secretName": "db-token"}}],
                "ephemeralContainers": [{"name": "debugger", "image": "busybox:1.36"}],
            },
            "status": {"phase": "Running", "containerStatuses": [{"name": "db", "image": "db:1.6.2", "imageID": "", "ready": true, "restartCount": 0}]},
        }))
        .unwrap();
        let status = pod.status.clone();
        trim_pod(&mut pod);
        assert_eq!(
            serde_json::to_value(&pod.spec).unwrap(),
            json!({"containers": [{"name": "db", "image": "db:1.6.2"}],
                   "initContainers": [{"name": "init", "image": "init:1"}],
                   "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0", "readOnly": true}}]})
        );
        assert_eq!(pod.status, status);
        assert!(!serde_json::to_string(&pod).unwrap().contains("hunter2"));
        assert_eq!(pod.metadata.owner_references.unwrap()[0].name, "db");
    }
}
