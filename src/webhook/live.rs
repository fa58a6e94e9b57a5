//! The cluster view from kube-runtime reflectors: decisions read the cache,
//! never the API per request. Thin: the stores are filled by kube-runtime
//! and read through [`ClusterView`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::metrics::gauge::Gauge;
use serde::de::DeserializeOwned;

use crate::decide::ClusterView;
use crate::policy::{Policy, PolicyError, PolicySet};
use crate::workload::{Workload, WorkloadKind};

/// The `UpgradePolicy` custom resource.
pub fn policy_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("upgradeguard.io", "v1alpha1", "UpgradePolicy"),
        "upgradepolicies",
    )
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
}

impl LiveCluster {
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
    /// The cached hook Jobs of a workload.
    pub fn jobs_of(&self, w: &Workload) -> Vec<Job> {
        let label = crate::refresh::hooks::bounded_name(w.name());
        self.jobs
            .state()
            .into_iter()
            .filter(|j| j.metadata.namespace.as_deref() == Some(w.namespace()))
            .filter(|j| {
                j.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(crate::refresh::hooks::WORKLOAD_LABEL))
                    == Some(&label)
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
            .map(|s| Workload::StatefulSet(Box::new((*s).clone())));
        let deployments = self
            .deployments
            .state()
            .into_iter()
            .map(|d| Workload::Deployment(Box::new((*d).clone())));
        statefulsets
            .chain(deployments)
            .filter(|w| w.refresh_record().is_some())
            .collect()
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
    let statefulsets = watch(Api::<StatefulSet>::all(client.clone()), all(), |_| {});
    let deployments = watch(Api::<Deployment>::all(client.clone()), all(), |_| {});
    let claims = watch(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        all(),
        |_| {},
    );
    let pods = watch(Api::<Pod>::all(client.clone()), all(), trim_pod);
    let hooks = all().labels(crate::refresh::hooks::WORKLOAD_LABEL);
    let jobs = watch(Api::<Job>::all(client.clone()), hooks, |_| {});

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
/// images, and status. Env values (secrets written inline, too), commands
/// and volumes are read by no decision, so they are not kept in memory.
pub fn trim_pod(pod: &mut Pod) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    spec.volumes = None;
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
/// whatever `trim` drops.
fn watch<K>(api: Api<K>, config: watcher::Config, trim: fn(&mut K)) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(move |o| {
            o.managed_fields_mut().clear();
            trim(o);
        })
        .reflect(writer)
        .applied_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            // A watch error is retried with backoff; one bad object is skipped.
            if let Err(e) = event {
                tracing::warn!(error = %e, kind = %K::kind(&Default::default()), "watch");
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
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}}],
            },
            "status": {"phase": "Running", "containerStatuses": [{"name": "db", "image": "db:1.6.2", "imageID": "", "ready": true, "restartCount": 0}]},
        }))
        .unwrap();
        let status = pod.status.clone();
        trim_pod(&mut pod);
        assert_eq!(
            serde_json::to_value(&pod.spec).unwrap(),
            json!({"containers": [{"name": "db", "image": "db:1.6.2"}],
                   "initContainers": [{"name": "init", "image": "init:1"}]})
        );
        assert_eq!(pod.status, status);
        assert!(!serde_json::to_string(&pod).unwrap().contains("hunter2"));
        assert_eq!(pod.metadata.owner_references.unwrap()[0].name, "db");
    }
}
