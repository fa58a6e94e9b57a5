//! The cluster reads and writes the live commands share: find a workload,
//! list its pods, set an annotation. Thin; tested with kube's mock API.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::json;

use super::Error;
use crate::refresh::executor;
use crate::workload::Workload;

pub async fn client() -> Result<kube::Client, Error> {
    kube::Client::try_default().await.map_err(|e| {
        Error::Io(format!(
            "cannot reach a cluster (kubeconfig or in-cluster): {e}"
        ))
    })
}

/// `NS/NAME`.
pub fn target(text: &str) -> Result<(String, String), Error> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.into(), name.into()))
        }
        _ => Err(Error::Io(format!(
            "{text:?}: name the workload as NAMESPACE/NAME"
        ))),
    }
}

fn kube_error(what: &str, e: kube::Error) -> Error {
    Error::Io(format!("{what}: {e}"))
}

/// The StatefulSet, or else the Deployment, of that name.
pub async fn find(client: &kube::Client, namespace: &str, name: &str) -> Result<Workload, Error> {
    let what = format!("{namespace}/{name}");
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    if let Some(s) = sts.get_opt(name).await.map_err(|e| kube_error(&what, e))? {
        return Ok(Workload::StatefulSet(Box::new(s)));
    }
    let deploy: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    match deploy
        .get_opt(name)
        .await
        .map_err(|e| kube_error(&what, e))?
    {
        Some(d) => Ok(Workload::Deployment(Box::new(d))),
        None => Err(Error::Io(format!(
            "{what}: no StatefulSet or Deployment of that name"
        ))),
    }
}

/// Every StatefulSet and Deployment that carries a refresh record.
pub async fn with_records(client: &kube::Client) -> Result<Vec<Workload>, Error> {
    let mut out = Vec::new();
    let sts: Api<StatefulSet> = Api::all(client.clone());
    for s in sts
        .list(&ListParams::default())
        .await
        .map_err(|e| kube_error("StatefulSets", e))?
    {
        out.push(Workload::StatefulSet(Box::new(s)));
    }
    let deploy: Api<Deployment> = Api::all(client.clone());
    for d in deploy
        .list(&ListParams::default())
        .await
        .map_err(|e| kube_error("Deployments", e))?
    {
        out.push(Workload::Deployment(Box::new(d)));
    }
    out.retain(|w| w.refresh_record().is_some());
    Ok(out)
}

/// The workload's pods, by its selector's matchLabels.
pub async fn pods(client: &kube::Client, w: &Workload) -> Result<Vec<Pod>, Error> {
    let selector = match w {
        Workload::StatefulSet(s) => s.spec.as_ref().map(|s| &s.selector),
        Workload::Deployment(d) => d.spec.as_ref().map(|s| &s.selector),
    };
    let labels: Vec<String> = selector
        .and_then(|s| s.match_labels.as_ref())
        .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
        .unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), w.namespace());
    let list = api
        .list(&ListParams::default().labels(&labels.join(",")))
        .await
        .map_err(|e| kube_error(&format!("pods of {}/{}", w.namespace(), w.name()), e))?;
    Ok(list.items)
}

/// Sets (or, with `None`, removes) one annotation, guarded by the
/// resourceVersion the decision was made on.
pub async fn annotate(
    client: &kube::Client,
    w: &Workload,
    key: &str,
    value: Option<&str>,
) -> Result<(), Error> {
    let body = json!({"metadata": {
        "resourceVersion": w.metadata().resource_version,
        "annotations": {key: value},
    }});
    let what = format!("{} {}/{}", w.kind(), w.namespace(), w.name());
    let result = executor::patch(client, w, &body).await;
    result.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 409 => {
            Error::Io(format!("{what} changed meanwhile; run the command again"))
        }
        e => kube_error(&what, e),
    })
}
