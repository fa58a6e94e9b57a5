//! A clustered database whose nodes speak only to neighbouring protocol
//! versions: v1 → v3 is refused, v1 → v2 → v3 goes through, and the
//! minAvailable gate holds the next unit while too few pods are Ready.

use crate::kubelet;
use crate::suite::{denial, eventually, suite, text};
use crate::workloads::{governed, wait_record_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_v2_is_refused_and_v1_to_v2_to_v3_goes_through_the_min_available_gate() {
    let Some(s) = suite() else { return };
    let ns = s.namespace("protocol").await;
    governed(
        s,
        &ns,
        ("clusterdb", 3, "node", "clusterdb:v1"),
        "track: none\n  step: major\n  releases: [v1, v2, v3]\n  refresh: {pauseAfter: first, health: {minAvailable: 3, minReadySeconds: 0}}",
    )
    .await;

    let skip = s.kubectl(&[
        "-n",
        &ns,
        "set",
        "image",
        "statefulset/clusterdb",
        "node=clusterdb:v3",
    ]);
    assert_eq!(
        denial(&skip),
        format!(
            "StatefulSet {ns}/clusterdb: v1 → v3 skips v2: upgrade to v2 first (rule skip-version, policy {ns}/clusterdb); to accept the risk, set upgradeguard.io/force-to: \"v3\" and upgradeguard.io/force-reason"
        )
    );

    s.kubectl_ok(&[
        "-n",
        &ns,
        "set",
        "image",
        "statefulset/clusterdb",
        "node=clusterdb:v2",
    ]);
    wait_record_state(s, &ns, "statefulset", "clusterdb", "Paused").await;
    // A node drops out while the refresh is paused: resuming must not take
    // a second one down.
    let client = s.client().await;
    kubelet::set_ready(&client, &ns, "clusterdb-0", false).await;
    s.ug(&["resume", &format!("{ns}/clusterdb")]);
    let held = eventually("the quorum hold in status", 60, || async {
        let status = text(&s.ug(&["status", &format!("{ns}/clusterdb")]).stdout);
        status
            .contains("  next: holding unit 1: 2 of 3 pods Ready, 3 needed to keep a quorum")
            .then_some(status)
    })
    .await;
    assert!(held.contains("partition 2"), "{held}");
    kubelet::set_ready(&client, &ns, "clusterdb-0", true).await;
    wait_record_state(s, &ns, "statefulset", "clusterdb", "Completed").await;

    s.kubectl_ok(&[
        "-n",
        &ns,
        "set",
        "image",
        "statefulset/clusterdb",
        "node=clusterdb:v3",
    ]);
    wait_record_state(s, &ns, "statefulset", "clusterdb", "Paused").await;
    s.ug(&["resume", &format!("{ns}/clusterdb")]);
    wait_record_state(s, &ns, "statefulset", "clusterdb", "Completed").await;
    let record = crate::workloads::record(s, &ns, "statefulset", "clusterdb").unwrap();
    assert_eq!(
        (record["from"].as_str(), record["to"].as_str()),
        (Some("v2"), Some("v3"))
    );
}
