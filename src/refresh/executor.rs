//! Carries out a step's action: a hook's Job created, one JSON Patch of the
//! workload and, for a forced rollback, one pod delete; then a Kubernetes
//! Event. Thin: what to
//! do was decided by [`super::step`].
//!
//! The patch is guarded by `test` operations on exactly what the step read
//! (the refresh record, the partition, the resume annotation), never by the
//! whole object's resourceVersion: the StatefulSet and Deployment
//! controllers write status every few seconds, and a resourceVersion guard
//! turned each of those writes into a 409 (recorded on a real cluster). A
//! user's change to a guarded field fails the test (422), nothing is
//! written, and the step is taken again on what is there now.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod};
use kube::api::{
    Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use kube::runtime::events::{Event, EventType, Recorder};
use serde_json::{Value, json};

use super::{Action, PodRef};
use crate::claim::{SERVED, Served};
use crate::workload::{REFRESH, RESUME, Workload};

pub const FIELD_MANAGER: &str = "upgrade-guard";

/// How often a write the API server answered 409 is sent again.
const CONFLICT_RETRIES: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Nothing,
    Applied,
    /// What the step read changed meanwhile; nothing was written.
    Conflict,
}

/// A JSON Pointer to an annotation (`/` in the key escaped as `~1`).
pub fn annotation_path(key: &str) -> String {
    format!(
        "/metadata/annotations/{}",
        key.replace('~', "~0").replace('/', "~1")
    )
}

/// The JSON Patch that performs `action` on `w`, guarded as the module
/// says; empty when there is nothing to patch.
pub fn patch_ops(w: &Workload, action: &Action) -> Vec<Value> {
    let mut ops = Vec::new();
    if let Some(record) = &action.record {
        let path = annotation_path(REFRESH);
        let text = serde_json::to_string(record).unwrap_or_default();
        match w.annotation(REFRESH) {
            Some(seen) => {
                ops.push(json!({"op": "test", "path": path, "value": seen}));
                ops.push(json!({"op": "replace", "path": path, "value": text}));
            }
            None => ops.push(json!({"op": "add", "path": path, "value": text})),
        }
    }
    if action.clear_resume
        && let Some(seen) = w.annotation(RESUME)
    {
        let path = annotation_path(RESUME);
        ops.push(json!({"op": "test", "path": path, "value": seen}));
        ops.push(json!({"op": "remove", "path": path}));
    }
    if let (Some(partition), Workload::StatefulSet(sts)) = (action.partition, w) {
        let strategy = sts.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
        let seen = strategy
            .and_then(|u| u.rolling_update.as_ref())
            .map(|r| r.partition);
        match seen {
            Some(Some(seen)) => {
                let path = "/spec/updateStrategy/rollingUpdate/partition";
                ops.push(json!({"op": "test", "path": path, "value": seen}));
                ops.push(json!({"op": "replace", "path": path, "value": partition}));
            }
            Some(None) => ops.push(json!({"op": "add", "path": "/spec/updateStrategy/rollingUpdate/partition", "value": partition})),
            None if strategy.is_some() => ops.push(json!({"op": "add", "path": "/spec/updateStrategy/rollingUpdate", "value": {"partition": partition}})),
            None => ops.push(json!({"op": "add", "path": "/spec/updateStrategy", "value": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}}})),
        }
    }
    if let Some(paused) = action.paused {
        ops.push(json!({"op": "add", "path": "/spec/paused", "value": paused}));
    }
    if !action.restore_images.is_empty() {
        if action.record.is_none()
            && let Some(seen) = w.annotation(REFRESH)
        {
            ops.push(json!({"op": "test", "path": annotation_path(REFRESH), "value": seen}));
        }
        let spec = w.template().and_then(|t| t.spec.as_ref());
        let lists = [
            ("containers", spec.map(|s| s.containers.as_slice())),
            (
                "initContainers",
                spec.and_then(|s| s.init_containers.as_deref()),
            ),
        ];
        for (list, containers) in lists {
            for (i, c) in containers.unwrap_or_default().iter().enumerate() {
                if let Some(image) = action.restore_images.get(&c.name) {
                    let at = format!("/spec/template/spec/{list}/{i}");
                    ops.push(json!({"op": "test", "path": format!("{at}/name"), "value": c.name}));
                    ops.push(
                        json!({"op": "replace", "path": format!("{at}/image"), "value": image}),
                    );
                }
            }
        }
    }
    ops
}

pub async fn execute(
    client: &kube::Client,
    recorder: Option<&Recorder>,
    w: &Workload,
    action: &Action,
) -> Result<Outcome, kube::Error> {
    if action.is_nothing() {
        return Ok(Outcome::Nothing);
    }
    if let Some(job) = &action.create_job
        && create_job(client, job).await? == Outcome::Conflict
    {
        return Ok(Outcome::Conflict);
    }
    let ops = patch_ops(w, action);
    if !ops.is_empty() && json_patch(client, w, ops).await? == Outcome::Conflict {
        return Ok(Outcome::Conflict);
    }
    if let Some(pod) = &action.delete_pod
        && delete_pod(client, w.namespace(), pod).await? == Outcome::Conflict
    {
        return Ok(Outcome::Conflict);
    }
    if let (Some(recorder), Some(event)) = (recorder, &action.event) {
        let event = Event {
            type_: if event.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: event.reason.into(),
            note: Some(event.message.clone()),
            action: "Refresh".into(),
            secondary: None,
        };
        // An event that cannot be written is not worth undoing the step for.
        if let Err(e) = recorder.publish(&event, &reference(w)).await {
            tracing::warn!(error = %e, "event not recorded");
        }
    }
    Ok(Outcome::Applied)
}

/// Sends `write` again while the API server answers 409 (its own retries
/// on a busy object ran out), with a doubling pause, a bounded number of
/// times. The guard travels in the write itself, so sending it again is
/// safe.
pub async fn retry_conflicts<T, F, Fut>(mut write: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut pause = FIRST_BACKOFF;
    let mut left = CONFLICT_RETRIES;
    loop {
        match write().await {
            Err(kube::Error::Api(s)) if s.code == 409 && left > 0 => {
                left -= 1;
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
}

/// A guarded JSON Patch of the workload; see [`guarded`].
pub async fn json_patch(
    client: &kube::Client,
    w: &Workload,
    ops: Vec<Value>,
) -> Result<Outcome, kube::Error> {
    match w {
        Workload::StatefulSet(_) => {
            let api = Api::<StatefulSet>::namespaced(client.clone(), w.namespace());
            guarded(&api, w.name(), ops).await
        }
        Workload::Deployment(_) => {
            let api = Api::<Deployment>::namespaced(client.clone(), w.namespace());
            guarded(&api, w.name(), ops).await
        }
    }
}

/// The JSON Patch that writes `served` on a claim, guarded by a `test` of
/// the record it replaces (or, when the claim has no annotations at all, of
/// its resourceVersion: there is no absence to test).
pub fn served_ops(claim: &PersistentVolumeClaim, served: &Served) -> Vec<Value> {
    let path = annotation_path(SERVED);
    let text = served.text();
    let annotations = claim.metadata.annotations.as_ref();
    match annotations.and_then(|a| a.get(SERVED)) {
        Some(seen) => vec![
            json!({"op": "test", "path": path, "value": seen}),
            json!({"op": "replace", "path": path, "value": text}),
        ],
        None if annotations.is_some() => vec![json!({"op": "add", "path": path, "value": text})],
        None => vec![
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": claim.metadata.resource_version}),
            json!({"op": "add", "path": "/metadata/annotations", "value": {SERVED: text}}),
        ],
    }
}

/// Writes on a claim the version that last served it.
pub async fn record_served(
    client: &kube::Client,
    claim: &PersistentVolumeClaim,
    served: &Served,
) -> Result<Outcome, kube::Error> {
    let namespace = claim.metadata.namespace.as_deref().unwrap_or("default");
    let name = claim.metadata.name.as_deref().unwrap_or_default();
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace);
    guarded(&api, name, served_ops(claim, served)).await
}

/// A JSON Patch as upgrade-guard's field manager whose `test` operations
/// guard it; a failed test (422) or conflicts past the retries are
/// [`Outcome::Conflict`]: nothing was written.
pub async fn guarded<K>(api: &Api<K>, name: &str, ops: Vec<Value>) -> Result<Outcome, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(ops)).map_err(kube::Error::SerdeError)?;
    let body = Patch::Json::<()>(patch);
    let params = params();
    match retry_conflicts(|| api.patch(name, &params, &body)).await {
        Ok(_) => Ok(Outcome::Applied),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => {
            tracing::debug!(name, message = %s.message, "guarded patch not applied");
            Ok(Outcome::Conflict)
        }
        Err(e) => Err(e),
    }
}

/// Which `test` of `ops` no longer holds on `current`, in words: what a
/// person changed while a step was being taken.
pub fn failed_test(ops: &[Value], current: &Value) -> Option<String> {
    ops.iter().filter(|op| op["op"] == "test").find_map(|op| {
        let path = op["path"].as_str()?;
        let now = current.pointer(path).unwrap_or(&Value::Null);
        (now != &op["value"]).then(|| {
            format!(
                "{} is now {} (the step read {})",
                path.trim_start_matches('/')
                    .replace('/', ".")
                    .replace("~1", "/")
                    .replace("~0", "~"),
                crate::quoted::bounded(&now.to_string()),
                crate::quoted::bounded(&op["value"].to_string())
            )
        })
    })
}

/// Creates a hook's Job as upgrade-guard's field manager; one of that name
/// already there (made by an earlier step whose watch event has not come
/// yet) is [`Outcome::Conflict`]: the next step reads it.
pub async fn create_job(client: &kube::Client, job: &Job) -> Result<Outcome, kube::Error> {
    let api: Api<Job> = Api::namespaced(
        client.clone(),
        job.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.create(&params, job).await {
        Ok(_) => Ok(Outcome::Applied),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Outcome::Conflict),
        Err(e) => Err(e),
    }
}

/// Deletes a hook's Job (and, in the background, its pods) only if it is
/// still the one observed (same UID): `upgrade-guard retry`.
pub async fn delete_job(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<Outcome, kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &params).await {
        Ok(_) => Ok(Outcome::Applied),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Outcome::Conflict),
        Err(e) => Err(e),
    }
}

/// Deletes one pod only if it is still the one observed (same UID); a pod
/// already gone is as good as deleted.
pub async fn delete_pod(
    client: &kube::Client,
    namespace: &str,
    pod: &PodRef,
) -> Result<Outcome, kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(pod.uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match retry_conflicts(|| api.delete(&pod.name, &params)).await {
        Ok(_) => Ok(Outcome::Applied),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Outcome::Applied),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Outcome::Conflict),
        Err(e) => Err(e),
    }
}

pub fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

pub fn reference(w: &Workload) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some(w.kind().to_string()),
        name: Some(w.name().to_string()),
        namespace: Some(w.namespace().to_string()),
        uid: w.metadata().uid.clone(),
        resource_version: w.metadata().resource_version.clone(),
        field_path: None,
    }
}
