//! One view over StatefulSet and Deployment: what upgrade-guard reads of a
//! workload (labels, pod template, replicas, partition, refresh state) without
//! caring which of the two it is.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Serialize};

/// Annotations on the workload (DESIGN.md, "Annotations").
pub const FORCE_TO: &str = "upgradeguard.io/force-to";
pub const FORCE_REASON: &str = "upgradeguard.io/force-reason";
pub const PAUSE_AFTER: &str = "upgradeguard.io/pause-after";
pub const RESUME: &str = "upgradeguard.io/resume";
pub const REFRESH: &str = "upgradeguard.io/refresh";
/// The prefix of upgrade-guard's own annotations.
pub const OWN_PREFIX: &str = "upgradeguard.io/";
/// On every hook Job and its pods: the workload's name (bounded to a label
/// value's 63 characters).
pub const WORKLOAD_LABEL: &str = "upgradeguard.io/workload";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WorkloadKind {
    StatefulSet,
    Deployment,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 2] = [WorkloadKind::StatefulSet, WorkloadKind::Deployment];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::Deployment => "Deployment",
        }
    }

    /// The kind behind an `apps/v1` resource name, as a `scale` subresource
    /// request names it.
    pub fn from_resource(resource: &str) -> Option<Self> {
        match resource {
            "statefulsets" => Some(WorkloadKind::StatefulSet),
            "deployments" => Some(WorkloadKind::Deployment),
            _ => None,
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkloadKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "StatefulSet" => Ok(WorkloadKind::StatefulSet),
            "Deployment" => Ok(WorkloadKind::Deployment),
            _ => Err(()),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    StatefulSet(Box<StatefulSet>),
    Deployment(Box<Deployment>),
}

impl From<StatefulSet> for Workload {
    fn from(s: StatefulSet) -> Self {
        Workload::StatefulSet(Box::new(s))
    }
}

impl From<Deployment> for Workload {
    fn from(d: Deployment) -> Self {
        Workload::Deployment(Box::new(d))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{kind} {name}: {source}")]
pub struct WorkloadError {
    kind: WorkloadKind,
    name: String,
    #[source]
    source: serde_path_to_error::Error<serde_json::Error>,
}

impl Workload {
    /// Reads an `apps/v1` StatefulSet or Deployment; `Ok(None)` for any other
    /// kind, which upgrade-guard leaves alone.
    pub fn from_value(value: serde_json::Value) -> Result<Option<Self>, WorkloadError> {
        let kind = match (
            value.get("apiVersion").and_then(|v| v.as_str()),
            value.get("kind").and_then(|v| v.as_str()),
        ) {
            (Some("apps/v1"), Some(kind)) => match kind.parse::<WorkloadKind>() {
                Ok(kind) => kind,
                Err(()) => return Ok(None),
            },
            _ => return Ok(None),
        };
        let name = value
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .unwrap_or("(unnamed)")
            .to_string();
        // Path tracking is slow; pay for it only to explain a failure.
        fn read<T: serde::de::DeserializeOwned>(
            value: &serde_json::Value,
        ) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
            T::deserialize(value).or_else(|_| serde_path_to_error::deserialize(value))
        }
        let wrap = |source| WorkloadError { kind, name, source };
        Ok(Some(match kind {
            WorkloadKind::StatefulSet => {
                Workload::StatefulSet(Box::new(read(&value).map_err(wrap)?))
            }
            WorkloadKind::Deployment => Workload::Deployment(Box::new(read(&value).map_err(wrap)?)),
        }))
    }

    pub fn kind(&self) -> WorkloadKind {
        match self {
            Workload::StatefulSet(_) => WorkloadKind::StatefulSet,
            Workload::Deployment(_) => WorkloadKind::Deployment,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Workload::StatefulSet(s) => &s.metadata,
            Workload::Deployment(d) => &d.metadata,
        }
    }

    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Workload::StatefulSet(s) => &mut s.metadata,
            Workload::Deployment(d) => &mut d.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    /// A manifest without a namespace lands in `default`, as kubectl puts it.
    pub fn namespace(&self) -> &str {
        self.metadata().namespace.as_deref().unwrap_or("default")
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata()
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.metadata().labels.as_ref()
    }

    pub fn template(&self) -> Option<&PodTemplateSpec> {
        match self {
            Workload::StatefulSet(s) => s.spec.as_ref().map(|s| &s.template),
            Workload::Deployment(d) => d.spec.as_ref().map(|s| &s.template),
        }
    }

    /// `spec.replicas`, defaulted to 1 as the API server does.
    pub fn replicas(&self) -> i32 {
        match self {
            Workload::StatefulSet(s) => s.spec.as_ref().and_then(|s| s.replicas),
            Workload::Deployment(d) => d.spec.as_ref().and_then(|s| s.replicas),
        }
        .unwrap_or(1)
    }

    /// The RollingUpdate partition of a StatefulSet (0 when unset); `None` for
    /// a Deployment, which has none.
    pub fn partition(&self) -> Option<i32> {
        match self {
            Workload::StatefulSet(s) => Some(
                s.spec
                    .as_ref()
                    .and_then(|s| s.update_strategy.as_ref())
                    .and_then(|u| u.rolling_update.as_ref())
                    .and_then(|r| r.partition)
                    .unwrap_or(0),
            ),
            Workload::Deployment(_) => None,
        }
    }

    /// A StatefulSet whose pods restart only when someone deletes them
    /// (`updateStrategy.type: OnDelete`), often a database operator's
    /// choice: upgrade-guard never changes it, nor sets a partition.
    pub fn is_on_delete(&self) -> bool {
        match self {
            Workload::StatefulSet(s) => {
                s.spec
                    .as_ref()
                    .and_then(|s| s.update_strategy.as_ref())
                    .and_then(|u| u.type_.as_deref())
                    == Some("OnDelete")
            }
            Workload::Deployment(_) => false,
        }
    }

    /// The refresh record kept in the `upgradeguard.io/refresh` annotation:
    /// `None` when absent, `Some(Err)` when someone wrote something unreadable.
    pub fn refresh_record(&self) -> Option<Result<RefreshRecord, serde_json::Error>> {
        self.annotation(REFRESH).map(serde_json::from_str)
    }

    /// Whether the workload's status shows a rollout that has not finished.
    /// Compared with `status.replicas` (the pods that exist), not
    /// `spec.replicas`, so a StatefulSet still creating pods in order is not
    /// mistaken for a refresh.
    pub fn status_shows_rollout(&self) -> bool {
        match self {
            Workload::StatefulSet(s) => s.status.as_ref().is_some_and(|st| {
                let revisions_differ = match (&st.current_revision, &st.update_revision) {
                    (Some(current), Some(update)) => current != update,
                    _ => false,
                };
                let pods_behind = st.updated_replicas.unwrap_or(0) < st.replicas;
                // The StatefulSet controller moves `currentRevision` once
                // every pod is updated and Ready, but before Kubernetes 1.36
                // never for OnDelete (kubernetes#73492): there the counts
                // say the same.
                if self.is_on_delete() {
                    pods_behind
                        || (revisions_differ && st.ready_replicas.unwrap_or(0) < st.replicas)
                } else {
                    revisions_differ || pods_behind
                }
            }),
            Workload::Deployment(d) => d.status.as_ref().is_some_and(|st| {
                let generation_lags = match (st.observed_generation, d.metadata.generation) {
                    (Some(observed), Some(generation)) => observed < generation,
                    _ => false,
                };
                generation_lags || st.updated_replicas.unwrap_or(0) < st.replicas.unwrap_or(0)
            }),
        }
    }

    /// Whether the API server's status lags the spec (the controller has not
    /// seen the last change yet).
    pub fn status_is_stale(&self) -> bool {
        let (observed, generation) = match self {
            Workload::StatefulSet(s) => (
                s.status.as_ref().and_then(|st| st.observed_generation),
                s.metadata.generation,
            ),
            Workload::Deployment(d) => (
                d.status.as_ref().and_then(|st| st.observed_generation),
                d.metadata.generation,
            ),
        };
        matches!((observed, generation), (Some(o), Some(g)) if o < g)
    }
}

/// The PersistentVolumeClaims a pod template mounts, as (volume, claim).
pub fn claim_volumes(template: Option<&PodTemplateSpec>) -> Vec<(&str, &str)> {
    let volumes = template
        .and_then(|t| t.spec.as_ref())
        .and_then(|s| s.volumes.as_ref());
    volumes
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some((
                v.name.as_str(),
                v.persistent_volume_claim.as_ref()?.claim_name.as_str(),
            ))
        })
        .collect()
}

/// The user's `upgradeguard.io/resume`: plain, or `force: <reason>`.
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    Plain,
    Force(String),
}

/// What a workload's `upgradeguard.io/resume` asks for.
pub fn resume_of(w: &Workload) -> Option<Resume> {
    let value = w.annotation(RESUME)?.trim();
    match value.strip_prefix("force:") {
        Some(reason) => Some(Resume::Force(reason.trim().to_string())),
        None if value.is_empty() => None,
        None => Some(Resume::Plain),
    }
}

/// An object's controlling owner.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

/// The workload a pod belongs to, by its controlling owner: its
/// StatefulSet, or the Deployment of its ReplicaSet (named after it, plus
/// `-` and the pod-template hash).
pub fn owner_of(pod: &Pod) -> Option<(WorkloadKind, String)> {
    let owner = controller_of(&pod.metadata)?;
    match owner.kind.as_str() {
        "StatefulSet" => Some((WorkloadKind::StatefulSet, owner.name.clone())),
        "ReplicaSet" => {
            let hash = pod.metadata.labels.as_ref()?.get("pod-template-hash")?;
            let name = owner.name.strip_suffix(hash.as_str())?.strip_suffix('-')?;
            Some((WorkloadKind::Deployment, name.to_string()))
        }
        _ => None,
    }
}

/// Since when the pod is Ready (its Ready condition True); `None`: not Ready.
pub fn is_ready(pod: &Pod) -> Option<jiff::Timestamp> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        condition
            .last_transition_time
            .as_ref()
            .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0),
    )
}

/// Every container a pod spec runs, as (name, image): containers, init
/// containers (native sidecars among them) and ephemeral containers.
pub fn pod_images(spec: &PodSpec) -> impl Iterator<Item = (&str, Option<&String>)> {
    let init = spec.init_containers.iter().flatten();
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), c.image.as_ref()));
    spec.containers
        .iter()
        .chain(init)
        .map(|c| (c.name.as_str(), c.image.as_ref()))
        .chain(ephemeral)
}

/// What the webhook (and later the refresh controller) records about a
/// refresh, as JSON in the `upgradeguard.io/refresh` annotation. Everything
/// needed to resume lives here and in the status, never in memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRecord {
    pub from: String,
    pub to: String,
    pub started: jiff::Timestamp,
    pub state: RefreshState,
    /// The partition this record was written for; a partition lower than
    /// this that the record does not confirm is not a step of the refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// Per container, when more than one governed container changes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub containers: BTreeMap<String, VersionStep>,
    /// Back to where the refresh this one undoes started.
    #[serde(default, skip_serializing_if = "is_false")]
    pub rollback: bool,
    /// When the unit now refreshing began (the partition was last lowered);
    /// unset: when the refresh started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_started: Option<jiff::Timestamp>,
    /// Why the refresh holds, while Paused or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `pause-after: first` was resumed: no more holds.
    #[serde(default, skip_serializing_if = "is_false")]
    pub resumed: bool,
    /// The version each refreshed unit (ordinal) was seen running.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub units: BTreeMap<i32, String>,
    /// When it completed: with from and to, the last refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<jiff::Timestamp>,
    /// The UID of the last stuck pod a rollback deleted: never deleted a
    /// second time, so a delete that does not take cannot loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_pod: Option<String>,
    /// The hooks of this refresh that are over, by item key
    /// (`preRefresh`, `preUnit/4`, `postRefresh/1.7.0-1.7.1`): never run again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hooks: BTreeMap<String, HookMark>,
    /// Per container this refresh changes, its image before: what an
    /// automatic rollback puts back.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// A rollback upgrade-guard's controller started itself
    /// (`onFailure: rollback`), as the request's identity showed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub automatic: bool,
}

/// How a hook of a refresh ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HookMark {
    Completed,
    /// Failed, and someone went on past it (`resume --force`).
    Skipped,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionStep {
    pub from: String,
    pub to: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefreshState {
    RollingOut,
    Paused,
    Failed,
    RollingBack,
    Completed,
}

impl RefreshState {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshState::RollingOut => "RollingOut",
            RefreshState::Paused => "Paused",
            RefreshState::Failed => "Failed",
            RefreshState::RollingBack => "RollingBack",
            RefreshState::Completed => "Completed",
        }
    }
}

impl RefreshRecord {
    /// A refresh that starts now, its first unit with it.
    pub fn starting(from: String, to: String, now: jiff::Timestamp, rollback: bool) -> Self {
        RefreshRecord {
            from,
            to,
            started: now,
            state: if rollback {
                RefreshState::RollingBack
            } else {
                RefreshState::RollingOut
            },
            partition: None,
            containers: BTreeMap::new(),
            rollback,
            unit_started: None,
            reason: None,
            resumed: false,
            units: BTreeMap::new(),
            finished: None,
            deleted_pod: None,
            hooks: BTreeMap::new(),
            images: BTreeMap::new(),
            automatic: false,
        }
    }

    /// The same refresh apart from when it was stamped.
    pub fn same_start(&self, other: &RefreshRecord) -> bool {
        let stamped = RefreshRecord {
            started: other.started,
            ..self.clone()
        };
        stamped == *other
    }

    pub fn is_active(&self) -> bool {
        self.state != RefreshState::Completed
    }

    /// The version container `name` had when this refresh started.
    pub fn from_of(&self, name: &str) -> &str {
        self.containers.get(name).map_or(&self.from, |s| &s.from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sts(status: serde_json::Value) -> Workload {
        Workload::from_value(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "generation": 2},
            "spec": {"selector": {}, "serviceName": "db", "template": {}},
            "status": status,
        }))
        .unwrap()
        .unwrap()
    }

    #[test]
    fn other_kinds_are_not_workloads() {
        for value in [
            json!({"apiVersion": "v1", "kind": "Service"}),
            json!({"apiVersion": "apps/v1beta1", "kind": "StatefulSet"}),
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet"}),
            json!({"kind": "StatefulSet"}),
        ] {
            assert!(Workload::from_value(value).unwrap().is_none());
        }
    }

    #[test]
    fn a_wrongly_typed_field_is_named() {
        let err = Workload::from_value(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db"}, "spec": {"replicas": "three"},
        }))
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("StatefulSet db: spec.replicas: "),
            "{text}"
        );
    }

    #[test]
    fn statefulset_rollout_is_read_from_status_pods_not_spec() {
        // As recorded: 3 wanted, one pod created, on the update revision.
        let settled = json!({"replicas": 1, "updatedReplicas": 1,
            "currentRevision": "a", "updateRevision": "a"});
        assert!(!sts(settled).status_shows_rollout());
        let moving = json!({"replicas": 1, "currentRevision": "a", "updateRevision": "b"});
        assert!(sts(moving).status_shows_rollout());
        let lagging = json!({"replicas": 3, "updatedReplicas": 2,
            "currentRevision": "a", "updateRevision": "a"});
        assert!(sts(lagging).status_shows_rollout());
        assert!(!sts(json!(null)).status_shows_rollout());
    }

    #[test]
    fn an_on_delete_rollout_ends_when_every_pod_is_updated_and_ready_whatever_current_revision_says()
     {
        let on_delete = |status: &serde_json::Value| {
            Workload::from_value(json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "db", "generation": 2},
                "spec": {"selector": {}, "serviceName": "db", "template": {},
                    "updateStrategy": {"type": "OnDelete"}},
                "status": status,
            }))
            .unwrap()
            .unwrap()
        };
        // As Kubernetes 1.23 leaves it once every pod was deleted and came
        // back on the update revision.
        let done = json!({"replicas": 3, "readyReplicas": 3, "updatedReplicas": 3,
            "currentReplicas": 0, "currentRevision": "a", "updateRevision": "b"});
        assert!(!on_delete(&done).status_shows_rollout());
        // The same counts under a RollingUpdate: only the revisions meeting
        // end it.
        assert!(sts(done.clone()).status_shows_rollout());
        let mut deleted = done.clone();
        deleted["updatedReplicas"] = json!(2);
        assert!(on_delete(&deleted).status_shows_rollout());
        let mut starting = done;
        starting["readyReplicas"] = json!(2);
        assert!(on_delete(&starting).status_shows_rollout());
        // Once the revisions meet, a pod not Ready is no rollout.
        starting["currentRevision"] = json!("b");
        assert!(!on_delete(&starting).status_shows_rollout());
    }

    #[test]
    fn stale_status_is_observed_generation_behind() {
        assert!(sts(json!({"replicas": 0, "observedGeneration": 1})).status_is_stale());
        assert!(!sts(json!({"replicas": 0, "observedGeneration": 2})).status_is_stale());
        assert!(!sts(json!({"replicas": 0})).status_is_stale());
    }

    #[test]
    fn refresh_record_round_trips_and_tolerates_extra_fields() {
        let text = r#"{"from":"1.7.0","to":"1.8.0","started":"2026-11-21T19:33:22Z","state":"RollingOut","partition":2,"note":"from a later version"}"#;
        let record: RefreshRecord = serde_json::from_str(text).unwrap();
        assert_eq!(record.partition, Some(2));
        assert!(record.is_active());
        assert_eq!(record.from_of("db"), "1.7.0");
        let back = serde_json::to_string(&record).unwrap();
        assert_eq!(
            back,
            r#"{"from":"1.7.0","to":"1.8.0","started":"2026-11-21T19:33:22Z","state":"RollingOut","partition":2}"#
        );
    }
}
