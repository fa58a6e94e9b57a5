//! Carries out a step's action: one JSON merge patch of the workload, with
//! its resourceVersion as a precondition so a concurrent change is never
//! overwritten (the API server answers 409 and the next step sees it), and a
//! Kubernetes Event. Thin: what to do was decided by [`super::step`].

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use serde_json::{Value, json};

use super::Action;
use crate::workload::{REFRESH, RESUME, Workload};

pub const FIELD_MANAGER: &str = "upgrade-guard";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Nothing,
    Applied,
    /// The workload changed since it was observed; nothing was written.
    Conflict,
}

/// The merge patch that performs `action` on `w`.
pub fn patch_body(w: &Workload, action: &Action) -> Value {
    let mut annotations = serde_json::Map::new();
    if let Some(record) = &action.record {
        annotations.insert(
            REFRESH.into(),
            Value::String(serde_json::to_string(record).unwrap_or_default()),
        );
    }
    if action.clear_resume {
        annotations.insert(RESUME.into(), Value::Null);
    }
    let mut patch = json!({"metadata": {"resourceVersion": w.metadata().resource_version}});
    if !annotations.is_empty() {
        patch["metadata"]["annotations"] = Value::Object(annotations);
    }
    if let Some(partition) = action.partition {
        patch["spec"] = json!({"updateStrategy": {"rollingUpdate": {"partition": partition}}});
    }
    if let Some(paused) = action.paused {
        patch["spec"] = json!({"paused": paused});
    }
    patch
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
    match patch(client, w, &patch_body(w, action)).await {
        Ok(()) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => return Ok(Outcome::Conflict),
        Err(e) => return Err(e),
    }
    if let (Some(recorder), Some(event)) = (recorder, &action.event) {
        let event = KubeEvent {
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

/// A JSON merge patch of the workload, as upgrade-guard's field manager.
pub async fn patch(client: &kube::Client, w: &Workload, body: &Value) -> Result<(), kube::Error> {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match w {
        Workload::StatefulSet(_) => Api::<StatefulSet>::namespaced(client.clone(), w.namespace())
            .patch(w.name(), &params, &Patch::Merge(body))
            .await
            .map(drop),
        Workload::Deployment(_) => Api::<Deployment>::namespaced(client.clone(), w.namespace())
            .patch(w.name(), &params, &Patch::Merge(body))
            .await
            .map(drop),
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
