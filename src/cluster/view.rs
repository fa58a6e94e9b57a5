//! What a decision may know of the cluster beyond the request: the live
//! workload behind a `scale` request, claims' access modes, and the pods a
//! StatefulSet created again over old claims would adopt. The server
//! backs it with a watch cache; `review --objects`, `check` and tests with a
//! [`Snapshot`].

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};

use crate::workload::{Workload, WorkloadKind};

pub trait ClusterView {
    fn workload(&self, kind: WorkloadKind, namespace: &str, name: &str) -> Option<Workload>;
    /// `None`: the claim is not known.
    fn claim_access_modes(&self, namespace: &str, name: &str) -> Option<Vec<String>>;
    fn pod(&self, namespace: &str, name: &str) -> Option<Pod>;
    /// The claim's [`crate::claim::SERVED`] annotation, as written; `None`:
    /// the claim is not known or never served.
    fn claim_served(&self, namespace: &str, name: &str) -> Option<String>;
    /// Every known workload that carries a refresh record (for the
    /// refresh gauges; no decision reads it).
    fn with_records(&self) -> Vec<Workload> {
        Vec::new()
    }
}

/// No cluster access: every lookup comes back empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCluster;

impl ClusterView for NoCluster {
    fn workload(&self, _: WorkloadKind, _: &str, _: &str) -> Option<Workload> {
        None
    }
    fn claim_access_modes(&self, _: &str, _: &str) -> Option<Vec<String>> {
        None
    }
    fn pod(&self, _: &str, _: &str) -> Option<Pod> {
        None
    }
    fn claim_served(&self, _: &str, _: &str) -> Option<String> {
        None
    }
}

/// A fixed set of objects.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    workloads: HashMap<(WorkloadKind, String, String), Workload>,
    /// Access modes and the served record, per claim.
    claims: HashMap<(String, String), (Vec<String>, Option<String>)>,
    pods: HashMap<(String, String), Pod>,
}

impl Snapshot {
    pub fn insert_workload(&mut self, w: Workload) {
        let key = (w.kind(), w.namespace().to_string(), w.name().to_string());
        self.workloads.insert(key, w);
    }

    pub fn insert_claim(&mut self, claim: &PersistentVolumeClaim) {
        let key = (
            claim
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            claim.metadata.name.clone().unwrap_or_default(),
        );
        let modes = claim
            .spec
            .as_ref()
            .and_then(|s| s.access_modes.clone())
            .unwrap_or_default();
        let served = crate::claim::served_annotation(claim).map(str::to_string);
        self.claims.insert(key, (modes, served));
    }

    pub fn insert_pod(&mut self, pod: Pod) {
        let key = (
            pod.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        self.pods.insert(key, pod);
    }

    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty() && self.claims.is_empty() && self.pods.is_empty()
    }
}

impl ClusterView for Snapshot {
    fn workload(&self, kind: WorkloadKind, namespace: &str, name: &str) -> Option<Workload> {
        self.workloads
            .get(&(kind, namespace.to_string(), name.to_string()))
            .cloned()
    }
    fn claim_access_modes(&self, namespace: &str, name: &str) -> Option<Vec<String>> {
        self.claims
            .get(&(namespace.to_string(), name.to_string()))
            .map(|(modes, _)| modes.clone())
    }
    fn claim_served(&self, namespace: &str, name: &str) -> Option<String> {
        self.claims
            .get(&(namespace.to_string(), name.to_string()))
            .and_then(|(_, served)| served.clone())
    }
    fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.pods
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
    fn with_records(&self) -> Vec<Workload> {
        self.workloads
            .values()
            .filter(|w| w.refresh_record().is_some())
            .cloned()
            .collect()
    }
}
