//! One refresh controller among the replicas, chosen by a Lease. The
//! decisions (take, renew, release) are pure functions; the holder task
//! renews in its own loop, apart from the controller's work, and publishes
//! until when this replica may write. A leader that cannot renew stops
//! writing before its lease runs out; on shutdown it releases the Lease so
//! another replica takes over at its next try instead of after the lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

pub const LEASE_NAME: &str = "upgrade-guard-refresh";
/// A leader that has not renewed for this long is replaced.
pub const LEASE_SECONDS: i32 = 15;
/// [`LEASE_SECONDS`] as a duration.
pub const LEASE_SECONDS_DURATION: Duration = Duration::from_secs(LEASE_SECONDS as u64);
/// How often the holder renews, and a follower tries (client-go's retry
/// period).
pub const RENEW: Duration = Duration::from_secs(2);
/// A leader stops writing this long before its lease would run out, counted
/// from when it asked to renew: the others count from when the renewal was
/// written, which is later.
pub const MARGIN: Duration = Duration::from_secs(3);

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

/// The Lease with this holder gone, or `None` when `me` does not hold it.
pub fn released(current: &Lease, me: &str) -> Option<Lease> {
    let spec = current.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(me) {
        return None;
    }
    let mut next = current.clone();
    if let Some(spec) = next.spec.as_mut() {
        spec.holder_identity = None;
    }
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

/// Gives the Lease up if this replica holds it (guarded by the
/// resourceVersion read, so a newer holder is never removed).
pub async fn release(api: &Api<Lease>, me: &str) -> Result<bool, kube::Error> {
    let Some(current) = api.get_opt(LEASE_NAME).await? else {
        return Ok(false);
    };
    let Some(next) = released(&current, me) else {
        return Ok(false);
    };
    match api.replace(LEASE_NAME, &PostParams::default(), &next).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Until when this replica may write; `None` while another leads.
pub type Leading = watch::Receiver<Option<Instant>>;

/// Whether the deadline `leading` holds is still ahead.
pub fn may_write(leading: &Leading) -> bool {
    leading.borrow().is_some_and(|until| Instant::now() < until)
}

/// Holds the Lease (or waits for it) until `stop` turns true, then releases
/// it if held. A renewal that fails leaves the last deadline to run out.
pub async fn hold(
    api: Api<Lease>,
    me: String,
    namespace: String,
    leading: watch::Sender<Option<Instant>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let asked = Instant::now();
        match tokio::time::timeout(RENEW, try_lead(&api, &me, &namespace)).await {
            Ok(Ok(true)) => {
                if leading
                    .send_replace(Some(asked + LEASE_SECONDS_DURATION - MARGIN))
                    .is_none()
                {
                    tracing::info!(identity = %me, "refresh controller: leading");
                }
            }
            Ok(Ok(false)) => {
                if leading.send_replace(None).is_some() {
                    tracing::info!(identity = %me, "refresh controller: another replica leads");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "lease not renewed"),
            Err(_) => tracing::warn!("lease not renewed: no answer in {RENEW:?}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RENEW) => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    if leading.send_replace(None).is_some() {
        match release(&api, &me).await {
            Ok(true) => tracing::info!(identity = %me, "refresh controller: lease released"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "lease not released; it runs out by itself"),
        }
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

    #[test]
    fn a_released_lease_is_taken_at_once_and_only_its_holder_releases() {
        let held = lead(None, "pod-a", "ns", at(0)).unwrap();
        assert!(released(&held, "pod-b").is_none());
        let given_up = released(&held, "pod-a").unwrap();
        assert_eq!(given_up.spec.as_ref().unwrap().holder_identity, None);
        let taken = lead(Some(&given_up), "pod-b", "ns", at(1)).unwrap();
        assert_eq!(
            taken.spec.unwrap().holder_identity.as_deref(),
            Some("pod-b")
        );
    }
}
