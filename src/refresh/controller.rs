//! The controller loop inside `serve` (with cluster access): while this
//! replica holds the Lease, step every governed workload with an active
//! refresh and carry out the action. Thin: the step decides, the executor
//! writes, the Lease decision is a pure function.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::runtime::events::{Recorder, Reporter};

use super::executor::{self, Outcome};
use super::{Observed, Settings, step};
use crate::decide::ClusterView;
use crate::policy::PolicySet;
use crate::webhook::live::LiveCluster;

pub const LEASE_NAME: &str = "upgrade-guard-refresh";
/// A leader that has not renewed for this long is replaced.
pub const LEASE_SECONDS: i32 = 15;
const TICK: Duration = Duration::from_secs(5);

/// The Lease to write to lead, or `None` when another holder's is current.
pub fn lead(
    current: Option<&Lease>,
    me: &str,
    namespace: &str,
    now: jiff::Timestamp,
) -> Option<Lease> {
    let stamp = MicroTime(now);
    let Some(current) = current else {
        return Some(Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(me.into()),
                lease_duration_seconds: Some(LEASE_SECONDS),
                acquire_time: Some(stamp.clone()),
                renew_time: Some(stamp),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        });
    };
    let spec = current.spec.clone().unwrap_or_default();
    let ours = spec.holder_identity.as_deref() == Some(me);
    let duration = jiff::SignedDuration::from_secs(
        spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS).into(),
    );
    let expired = spec
        .renew_time
        .as_ref()
        .is_none_or(|t| t.0 + duration < now)
        || spec.holder_identity.is_none();
    if !ours && !expired {
        return None;
    }
    let mut next = current.clone();
    let mut spec = spec;
    if !ours {
        spec.holder_identity = Some(me.into());
        spec.acquire_time = Some(stamp.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(LEASE_SECONDS);
    spec.renew_time = Some(stamp);
    next.spec = Some(spec);
    Some(next)
}

/// Takes or renews the Lease; `true` while this replica leads. A lost race
/// (409) is simply not leading this time.
pub async fn try_lead(api: &Api<Lease>, me: &str, namespace: &str) -> Result<bool, kube::Error> {
    let current = api.get_opt(LEASE_NAME).await?;
    let Some(next) = lead(current.as_ref(), me, namespace, jiff::Timestamp::now()) else {
        return Ok(false);
    };
    // The read resourceVersion rides along: a concurrent writer wins, not both.
    let written = match current {
        None => api.create(&PostParams::default(), &next).await,
        Some(_) => api.replace(LEASE_NAME, &PostParams::default(), &next).await,
    };
    match written {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs until the process ends.
pub async fn run(
    client: kube::Client,
    view: LiveCluster,
    policies: Arc<ArcSwap<PolicySet>>,
    namespace: String,
    me: String,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "upgrade-guard".into(),
            instance: Some(me.clone()),
        },
    );
    let mut leading = false;
    loop {
        match try_lead(&leases, &me, &namespace).await {
            Ok(now_leading) => {
                if now_leading != leading {
                    tracing::info!(leading = now_leading, identity = %me, "refresh controller leadership");
                }
                leading = now_leading;
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease");
                leading = false;
            }
        }
        if leading {
            // Until the hook Jobs are listed a Job that exists looks missing:
            // a workload with hooks waits; one without does not (nor does it
            // need the Jobs RBAC).
            let jobs_listed = view.jobs_ready(Duration::from_millis(200)).await;
            let policies = policies.load();
            for w in view.with_records() {
                let Some(policy) = policies.select(&w) else {
                    continue;
                };
                let pods = view.pods_of(&w);
                let jobs = view.jobs_of(&w);
                if !jobs_listed && policy.hooks.any() {
                    tracing::debug!(name = w.name(), "hook Jobs not listed yet; next tick");
                    continue;
                }
                let settings = Settings::of(policy, &w);
                let action = step(&Observed {
                    workload: &w,
                    pods: &pods,
                    jobs: &jobs,
                    settings: &settings,
                    now: jiff::Timestamp::now(),
                });
                match executor::execute(&client, Some(&recorder), &w, &action).await {
                    Ok(Outcome::Applied) => tracing::info!(
                        namespace = w.namespace(),
                        name = w.name(),
                        event = action.event.as_ref().map(|e| e.reason),
                        next = %action.next.text,
                        "refresh step"
                    ),
                    Ok(Outcome::Conflict) => {
                        tracing::debug!(name = w.name(), "changed meanwhile; next tick")
                    }
                    Ok(Outcome::Nothing) => {}
                    Err(e) => {
                        tracing::warn!(namespace = w.namespace(), name = w.name(), error = %e, "refresh step not applied")
                    }
                }
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn the_first_comer_creates_the_lease() {
        let lease = lead(None, "pod-a", "upgrade-guard", at(0)).unwrap();
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("pod-a"));
        assert_eq!(spec.renew_time.unwrap().0, at(0));
    }

    #[test]
    fn a_current_holder_keeps_it_and_renews_and_others_wait() {
        let held = lead(None, "pod-a", "ns", at(0)).unwrap();
        assert!(
            lead(Some(&held), "pod-b", "ns", at(10)).is_none(),
            "still current"
        );
        let renewed = lead(Some(&held), "pod-a", "ns", at(10)).unwrap();
        let spec = renewed.spec.unwrap();
        assert_eq!(
            (spec.renew_time.unwrap().0, spec.lease_transitions),
            (at(10), Some(0))
        );
    }

    #[test]
    fn an_expired_lease_is_taken_over() {
        let held = lead(None, "pod-a", "ns", at(0)).unwrap();
        let taken = lead(Some(&held), "pod-b", "ns", at(16)).unwrap();
        let spec = taken.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("pod-b"));
        assert_eq!(
            (spec.acquire_time.unwrap().0, spec.lease_transitions),
            (at(16), Some(1))
        );
    }
}
