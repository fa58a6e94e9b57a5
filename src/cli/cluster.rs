//! What the live commands share: how to reach the cluster (`--kubeconfig`,
//! `--context`), which workload (`NS/NAME`, or `-n NS NAME`), the policies
//! they judge by (the cluster's `UpgradePolicy` resources, merged with
//! `--policies` when given, as `serve` merges them), finding a workload and
//! its pods, and setting an annotation.
//! Thin; tested with kube's mock API.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::json;

use super::Error;
use crate::cluster::live::{cluster_policy, policy_resource};
use crate::policy::PolicySet;
use crate::refresh::executor::{self, Outcome, annotation_path};
use crate::refresh::hooks;
use crate::workload::{REFRESH, Workload};

/// How a live command reaches the cluster.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// The kubeconfig to use; default: $KUBECONFIG, ~/.kube/config, or the
    /// pod's service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use; default: the current one.
    #[arg(long)]
    pub context: Option<String>,
}

/// `-n/--namespace`, as kubectl spells it, for the commands that name a
/// workload: `-n shop db` is `shop/db`. Its own group, apart from
/// [`ClusterArgs`], since `certs` has a `--namespace` of another meaning.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NamespaceArgs {
    /// The workload's namespace, for a target given as NAME: `-n shop db`
    /// is `shop/db` (`status` without a target looks only here).
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

impl NamespaceArgs {
    /// The target as NAMESPACE/NAME: NAME is put in `-n`'s namespace; a
    /// NAMESPACE/NAME must agree with `-n` when both are given.
    pub fn qualify(&self, target: &str) -> Result<String, Error> {
        let Some(ns) = self.namespace.as_deref() else {
            return Ok(target.to_string());
        };
        if ns.is_empty() {
            return Err(Error::Other("-n/--namespace: give a namespace".into()));
        }
        match target.split_once('/') {
            None => Ok(format!("{ns}/{target}")),
            Some((given, _)) if given == ns => Ok(target.to_string()),
            Some((given, _)) => Err(Error::Other(format!(
                "{target:?} is in namespace {given:?} but -n says {ns:?}: give one of them"
            ))),
        }
    }
}

/// A client and the address of the API server it talks to, for messages.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    pub server: String,
}

impl Cluster {
    /// A cluster reached through `client` (tests: kube's mock).
    pub fn new(client: kube::Client, server: &str) -> Self {
        Cluster {
            client,
            server: server.into(),
        }
    }

    /// `what` failed: one sentence that names the API server and says
    /// why, never a debug dump of the Status.
    pub fn error(&self, what: &str, e: kube::Error) -> Error {
        Error::Told {
            message: describe(&self.server, what, &e),
            source: e.into(),
        }
    }
}

/// One readable sentence for a failed call to the API server at `server`.
pub fn describe(server: &str, what: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let why = match s.code {
                401 => "the credentials were not accepted (401 Unauthorized)".to_string(),
                403 => format!("permission denied (403 Forbidden): {}", s.message),
                404 => format!("not found (404): {}", s.message),
                code => format!("the API server answered {code} {}: {}", s.reason, s.message),
            };
            format!("{what}: {why} (API server {server})")
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            let mut cause = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                cause = s.to_string();
                source = s.source();
            }
            format!("{what}: cannot reach the API server at {server}: {cause}")
        }
        other => format!("{what}: {other} (API server {server})"),
    }
}

pub async fn connect(args: &ClusterArgs) -> Result<Cluster, Error> {
    let options = kube::config::KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::failed(format!("kubeconfig {}", path.display()), e))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| Error::failed(format!("kubeconfig {}", path.display()), e))?
        }
        None if args.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| Error::failed("kubeconfig", e))?,
        None => kube::Config::infer().await.map_err(|e| Error::Told {
            message: format!("no cluster to talk to: {e}; give --kubeconfig or set KUBECONFIG"),
            source: e.into(),
        })?,
    };
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .map_err(|e| Error::failed(format!("cannot make a client for {server}"), e))?;
    Ok(Cluster::new(client, server.trim_end_matches('/')))
}

/// The policies the live commands judge by, and a sentence for each thing
/// that could not be read (a missing CRD, an unreadable UpgradePolicy).
pub async fn policies(
    cluster: &Cluster,
    files: Option<&Path>,
) -> Result<(PolicySet, Vec<String>), Error> {
    let mut all = match files {
        Some(path) => PolicySet::load(path)?.iter().cloned().collect(),
        None => Vec::new(),
    };
    let mut notes = Vec::new();
    let resource = policy_resource();
    let api: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &resource);
    match api.list(&ListParams::default()).await {
        Ok(list) => {
            for object in list.items {
                match cluster_policy(&object) {
                    Ok(policy) => all.push(policy),
                    Err(e) => notes.push(format!("skipped: {e}")),
                }
            }
        }
        Err(kube::Error::Api(s)) if s.code == 404 => notes.push(format!(
            "the UpgradePolicy CRD (upgradepolicies.upgradeguard.io) is not installed on {}; {}",
            cluster.server,
            if files.is_some() {
                "only the --policies files apply"
            } else {
                "no policy applies (give --policies DIR for local ones)"
            }
        )),
        Err(e) => return Err(cluster.error("UpgradePolicies", e)),
    }
    Ok((PolicySet::new(all)?, notes))
}

/// `NS/NAME`.
pub fn target(text: &str) -> Result<(String, String), Error> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.into(), name.into()))
        }
        _ => Err(Error::Other(format!(
            "{text:?}: name the workload as NAMESPACE/NAME"
        ))),
    }
}

/// The StatefulSet, or else the Deployment, of that name.
pub async fn find(cluster: &Cluster, namespace: &str, name: &str) -> Result<Workload, Error> {
    let what = format!("{namespace}/{name}");
    let sts: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), namespace);
    if let Some(s) = sts
        .get_opt(name)
        .await
        .map_err(|e| cluster.error(&what, e))?
    {
        return Ok(Workload::StatefulSet(Box::new(s)));
    }
    let deploy: Api<Deployment> = Api::namespaced(cluster.client.clone(), namespace);
    match deploy
        .get_opt(name)
        .await
        .map_err(|e| cluster.error(&what, e))?
    {
        Some(d) => Ok(Workload::Deployment(Box::new(d))),
        None => Err(Error::NotFound(format!(
            "{what}: no StatefulSet or Deployment of that name"
        ))),
    }
}

/// Every StatefulSet and Deployment that carries a refresh record, in
/// `namespace` only when given.
pub async fn with_records(
    cluster: &Cluster,
    namespace: Option<&str>,
) -> Result<Vec<Workload>, Error> {
    fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let mut out = Vec::new();
    let sts: Api<StatefulSet> = api(&cluster.client, namespace);
    for s in sts
        .list(&ListParams::default())
        .await
        .map_err(|e| cluster.error("StatefulSets", e))?
    {
        out.push(Workload::StatefulSet(Box::new(s)));
    }
    let deploy: Api<Deployment> = api(&cluster.client, namespace);
    for d in deploy
        .list(&ListParams::default())
        .await
        .map_err(|e| cluster.error("Deployments", e))?
    {
        out.push(Workload::Deployment(Box::new(d)));
    }
    out.retain(|w| w.refresh_record().is_some());
    Ok(out)
}

/// The label selector of the workload's pods, from its selector's matchLabels.
pub fn pod_selector(w: &Workload) -> String {
    let selector = match w {
        Workload::StatefulSet(s) => s.spec.as_ref().map(|s| &s.selector),
        Workload::Deployment(d) => d.spec.as_ref().map(|s| &s.selector),
    };
    let labels: Vec<String> = selector
        .and_then(|s| s.match_labels.as_ref())
        .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
        .unwrap_or_default();
    labels.join(",")
}

/// The label selector of the workload's hook Jobs.
pub fn job_selector(w: &Workload) -> String {
    format!(
        "{}={}",
        hooks::WORKLOAD_LABEL,
        hooks::bounded_name(w.name())
    )
}

/// The workload's pods, by its selector's matchLabels.
pub async fn pods(cluster: &Cluster, w: &Workload) -> Result<Vec<Pod>, Error> {
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), w.namespace());
    let list = api
        .list(&ListParams::default().labels(&pod_selector(w)))
        .await
        .map_err(|e| cluster.error(&format!("pods of {}/{}", w.namespace(), w.name()), e))?;
    Ok(list.items)
}

/// Why the workload's controller last failed to create a pod, when
/// upgrade-guard's webhook refused it: the newest `FailedCreate` Event that
/// quotes one of its webhooks (bounded: the message quotes a request).
/// An aid, not the status: a user who may not list Events gets none.
pub async fn refused_pod(cluster: &Cluster, w: &Workload) -> Option<String> {
    let api: Api<CoreEvent> = Api::namespaced(cluster.client.clone(), w.namespace());
    let selector = format!(
        "involvedObject.kind={},involvedObject.name={},reason=FailedCreate",
        w.kind(),
        w.name()
    );
    let list = api
        .list(&ListParams::default().fields(&selector))
        .await
        .inspect_err(|e| tracing::debug!(error = %e, "FailedCreate Events not listed"))
        .ok()?;
    let newest = list
        .items
        .into_iter()
        .filter(|e| {
            e.message
                .as_deref()
                .is_some_and(|m| m.contains(".upgradeguard.io\" denied the request"))
        })
        .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0));
    newest
        .and_then(|e| e.message)
        .map(|m| crate::quoted::bounded_message(&m))
}

/// The workload's hook Jobs (label `upgradeguard.io/workload`).
pub async fn jobs(cluster: &Cluster, w: &Workload) -> Result<Vec<Job>, Error> {
    let api: Api<Job> = Api::namespaced(cluster.client.clone(), w.namespace());
    let list = api
        .list(&ListParams::default().labels(&job_selector(w)))
        .await
        .map_err(|e| cluster.error(&format!("hook Jobs of {}/{}", w.namespace(), w.name()), e))?;
    Ok(list.items)
}

/// Sets one annotation, guarded by the refresh record the command decided
/// on (a JSON Patch `test`), not by the resourceVersion, which the
/// workload's controller moves with every status write.
pub async fn annotate(
    cluster: &Cluster,
    w: &Workload,
    key: &str,
    value: &str,
) -> Result<(), Error> {
    let what = format!("{} {}/{}", w.kind(), w.namespace(), w.name());
    let mut ops = Vec::new();
    if let Some(seen) = w.annotation(REFRESH) {
        ops.push(json!({"op": "test", "path": annotation_path(REFRESH), "value": seen}));
    }
    ops.push(json!({"op": "add", "path": annotation_path(key), "value": value}));
    match executor::json_patch(&cluster.client, w, ops).await {
        Ok(Outcome::Conflict) => Err(Error::Other(format!(
            "{what}: the refresh changed while the command ran; run it again"
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(cluster.error(&what, e)),
    }
}
