//! The refresh controller inside `serve` (with cluster access): a small
//! event loop over the webhook's own caches. It wakes when a watch event
//! concerns a workload with a refresh record (the workload, its pods, its
//! hook Jobs), at the soonest recheck a step asked for, and every
//! [`RESYNC`] for every recorded workload; it steps only the workloads that
//! are due, and writes only while this replica's Lease is current. It also
//! records on each claim the version its Ready pods serve (the data guard).
//!
//! Why not kube-runtime's `Controller`: sharing the webhook's reflectors
//! with it needs the `unstable-runtime-subscribe` feature, and its one
//! primary kind would mean two controllers (StatefulSet and Deployment)
//! over the same pods and Jobs. The loop is Linkerd's status controller's
//! shape: the step decides, the executor writes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::watch;
use tokio::time::Instant;

use super::executor::{self, Outcome};
use super::lease::{self, may_write};
use super::{Observed, Settings, step};
use crate::claim::{pod_claims, served_annotation};
use crate::cluster::{LiveCluster, WorkloadKey};
use crate::decide::ClusterView;
use crate::decide::data::served_after;
use crate::policy::PolicySet;
use crate::workload::{is_ready, owner_of};

/// Every recorded workload is stepped at least this often, whatever the
/// watches said (a step that asked for no recheck is looked at again then).
pub const RESYNC: Duration = Duration::from_secs(30);

/// Runs until `stop` turns true; then gives the Lease up.
pub async fn run(
    client: kube::Client,
    view: LiveCluster,
    policies: Arc<ArcSwap<PolicySet>>,
    namespace: String,
    me: String,
    mut stop: watch::Receiver<bool>,
) {
    let (leading_tx, mut leading) = watch::channel(None);
    let holder = tokio::spawn(lease::hold(
        Api::namespaced(client.clone(), &namespace),
        me.clone(),
        namespace,
        leading_tx,
        stop.clone(),
    ));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "upgrade-guard".into(),
            instance: Some(me),
        },
    );
    let changed = view.changed().clone();
    let mut due: BTreeMap<WorkloadKey, Instant> = BTreeMap::new();
    let mut serving: BTreeSet<(String, String)> = BTreeSet::new();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        let soonest = due.values().min().copied();
        let mut everything = false;
        tokio::select! {
            _ = changed.wait() => {}
            _ = sleep_until(soonest) => {}
            _ = resync.tick() => everything = true,
            // Newly leading (or not): look at everything.
            moved = leading.changed() => {
                if moved.is_err() {
                    break;
                }
                everything = true;
            }
            _ = stop.wait_for(|stop| *stop) => break,
        }
        let now = Instant::now();
        if everything {
            for w in view.with_records() {
                due.insert(WorkloadKey::of(&w), now);
            }
            serving.extend(view.serving_pods());
        }
        for key in changed.take() {
            due.insert(key, now);
        }
        serving.extend(changed.take_serving());
        if !may_write(&leading) {
            // Nothing is due for a follower: it looks at everything when it
            // leads (and must not wake again for what is already past).
            due.clear();
            serving.clear();
            continue;
        }
        for (namespace, pod) in std::mem::take(&mut serving) {
            if !may_write(&leading) {
                break;
            }
            record_served(&client, &view, &policies, &namespace, &pod).await;
        }
        let ready: Vec<WorkloadKey> = due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in ready {
            due.remove(&key);
            if !may_write(&leading) {
                break;
            }
            if let Some(recheck) = step_one(&client, &recorder, &view, &policies, &key).await {
                due.insert(key, Instant::now() + recheck);
            }
        }
    }
    let _ = holder.await;
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Records on each claim a Ready pod mounts the version it serves (the
/// data guard's anchor), when the claim's record does not say so yet.
async fn record_served(
    client: &kube::Client,
    view: &LiveCluster,
    policies: &ArcSwap<PolicySet>,
    namespace: &str,
    name: &str,
) {
    let Some(pod) = view.pod(namespace, name) else {
        return;
    };
    let Some(spec) = pod.spec.as_ref().filter(|_| is_ready(&pod).is_some()) else {
        return;
    };
    let owner = owner_of(&pod).and_then(|(kind, owner)| view.workload(kind, namespace, &owner));
    let policies = policies.load();
    for claim_name in pod_claims(spec) {
        let Some(claim) = view.claim(namespace, claim_name) else {
            continue;
        };
        let recorded = served_annotation(&claim);
        let Some(served) = served_after(&pod, recorded, &policies, owner.as_ref()) else {
            continue;
        };
        match executor::record_served(client, &claim, &served).await {
            Ok(Outcome::Applied) => tracing::info!(
                namespace,
                claim = claim_name,
                pod = name,
                served = %served.text(),
                "claim served"
            ),
            Ok(_) => tracing::debug!(
                claim = claim_name,
                "claim changed meanwhile; recorded on the next event"
            ),
            Err(e) => {
                tracing::warn!(namespace, claim = claim_name, error = %e, "claim's served version not recorded")
            }
        }
    }
}

/// Steps one workload and carries out the action; when to look again
/// (`None`: only when a watch event or the resync says so).
async fn step_one(
    client: &kube::Client,
    recorder: &Recorder,
    view: &LiveCluster,
    policies: &ArcSwap<PolicySet>,
    key: &WorkloadKey,
) -> Option<Duration> {
    let w = view.workload(key.kind, &key.namespace, &key.name)?;
    let active = w.refresh_record()?.ok()?.is_active();
    let policies = policies.load();
    let policy = policies.select(&w)?;
    // Until the hook Jobs are listed a Job that exists looks missing: a
    // workload with hooks waits; one without does not (nor does it need
    // the Jobs RBAC).
    if policy.hooks.any() && !view.jobs_ready(Duration::from_millis(200)).await {
        tracing::debug!(name = w.name(), "hook Jobs not listed yet");
        return Some(Duration::from_secs(1));
    }
    let (pods, jobs) = (
        view.pods_of(&w),
        view.jobs_of(&w, &super::hooks::bounded_name(w.name())),
    );
    let settings = Settings::of(policy, &w);
    let action = step(&Observed {
        workload: &w,
        pods: &pods,
        jobs: &jobs,
        settings: &settings,
        now: jiff::Timestamp::now(),
    });
    match executor::execute(client, Some(recorder), &w, &action).await {
        Ok(Outcome::Applied) => tracing::info!(
            namespace = w.namespace(),
            name = w.name(),
            event = action.event.as_ref().map(|e| e.reason),
            next = %action.next.text,
            "refresh step"
        ),
        Ok(Outcome::Conflict) => {
            tracing::debug!(
                name = w.name(),
                "changed meanwhile; stepped again on the next event"
            )
        }
        Ok(Outcome::Nothing) => {}
        Err(e) => {
            tracing::warn!(namespace = w.namespace(), name = w.name(), error = %e, "refresh step not applied");
            return Some(Duration::from_secs(2));
        }
    }
    action.recheck.or(active.then_some(RESYNC))
}
