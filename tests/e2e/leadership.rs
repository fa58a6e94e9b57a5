//! Two `serve` replicas sharing the refresh controller's Lease, on a control
//! plane of their own (the suite's serve would step the refresh too): the
//! leader is killed mid-refresh, the other takes over within the lease
//! time, and no step runs twice.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};

use crate::suite::{OwnPlane, cpu, eventually, suite};
use crate::workloads::{governed, wait_record_state, watch_partitions};

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("upgrade-guard-refresh")
        .await
        .ok()??
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_replica_takes_over_when_the_leader_dies_mid_refresh_and_no_step_runs_twice() {
    let Some(shared) = suite() else { return };
    let own = OwnPlane::start(shared, "leadership").await;
    let leases: Api<Lease> = Api::namespaced(own.client.clone(), "upgrade-guard");
    let a = own.serve("serve-a").await;
    eventually("serve-a to lead", 60, || async {
        (holder(&leases).await.as_deref() == Some("serve-a")).then_some(())
    })
    .await;
    let b = own.serve("serve-b").await;
    let s = own.suite(&b).await;
    let client = own.client.clone();

    let ns = s.namespace("lease").await;
    governed(
        &s,
        &ns,
        ("ha", 3, "db", "ha:1.0.0"),
        "track: major\n  step: none\n  refresh: {pauseAfter: none}",
    )
    .await;
    let (seen, watch) = watch_partitions(&client, &ns, "ha");
    let follower_before = cpu(b.pid);
    s.kubectl_ok(&["-n", &ns, "set", "image", "statefulset/ha", "db=ha:1.0.1"]);

    // The leader has taken the first step: it dies.
    eventually("the first step", 60, || async {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(p, _)| *p == 1)
            .then_some(())
    })
    .await;
    // Its Event is written after the step (an Event is not worth undoing a
    // step for): the leader dies once that is written too, or the Event
    // could be lost with it.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    eventually("the first step's Event", 30, || async {
        let listed = events.list(&ListParams::default()).await.ok()?;
        listed
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("UnitRefreshed")
                    && e.reporting_instance.as_deref() == Some("serve-a")
            })
            .then_some(())
    })
    .await;
    assert_eq!(holder(&leases).await.as_deref(), Some("serve-a"));
    // The follower saw every event of the refresh so far and stepped none.
    let follower = cpu(b.pid) - follower_before;
    assert!(
        follower < Duration::from_secs(1),
        "the follower spent {follower:?}"
    );
    // SAFETY: kill has no preconditions; the pid is our child's.
    assert_eq!(unsafe { libc::kill(a.pid as i32, libc::SIGKILL) }, 0);
    let killed = Instant::now();

    wait_record_state(&s, &ns, "statefulset", "ha", "Completed").await;
    watch.abort();
    assert_eq!(holder(&leases).await.as_deref(), Some("serve-b"));
    let seen = seen.lock().unwrap().clone();
    let partitions: Vec<i32> = seen.iter().map(|(p, _)| *p).collect();
    assert_eq!(partitions, [0, 2, 1, 0], "each step written once");
    let (_, next_step) = seen[3];
    let takeover = next_step.duration_since(killed);
    eprintln!(
        "figure: the next step {} ms after the leader was killed (lease 15 s)",
        takeover.as_millis()
    );
    assert!(takeover < Duration::from_secs(30), "{takeover:?}");

    // Every Event the refresh made, each once: no step was taken twice.
    let events = events.list(&ListParams::default()).await.unwrap().items;
    let mut said: Vec<(String, String)> = events
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("upgrade-guard"))
        .map(|e| {
            assert!(e.series.is_none(), "repeated: {e:?}");
            (
                e.reason.clone().unwrap_or_default(),
                e.reporting_instance.clone().unwrap_or_default(),
            )
        })
        .collect();
    said.sort();
    let pair = |reason: &str, by: &str| (reason.to_string(), by.to_string());
    assert_eq!(
        said,
        [
            pair("RefreshCompleted", "serve-b"),
            pair("RefreshStarted", "serve-a"),
            pair("UnitRefreshed", "serve-a"), // unit 2
            pair("UnitRefreshed", "serve-b"), // unit 1
        ]
    );

    // Stopped with SIGTERM, as a rollout or a drain stops it, the leader
    // gives the Lease up: a third replica takes over at its next try, not
    // after the lease time.
    let c = own.serve("serve-c").await;
    // SAFETY: kill has no preconditions; the pid is our child's.
    assert_eq!(unsafe { libc::kill(b.pid as i32, libc::SIGTERM) }, 0);
    let stopped = Instant::now();
    eventually("serve-c to lead", 30, || async {
        (holder(&leases).await.as_deref() == Some("serve-c")).then_some(())
    })
    .await;
    let handed_over = stopped.elapsed();
    eprintln!(
        "figure: serve-c leads {} ms after the leader got SIGTERM",
        handed_over.as_millis()
    );
    assert!(handed_over < Duration::from_secs(8), "{handed_over:?}");
    let _ = c;
}
