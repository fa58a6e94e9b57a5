//! A unit that crash-loops: the refresh holds, `status` names the rollback
//! command, and `kubectl rollout undo` goes through, highest first, the
//! stuck pod replaced by upgrade-guard (the StatefulSet controller never
//! does it itself).

use crate::kubelet::{self, Behaviour};
use crate::suite::{suite, text};
use crate::workloads::{governed, wait_record_state, wait_rolled_out};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_unit_holds_the_refresh_and_rollout_undo_rolls_it_back() {
    let Some(s) = suite() else { return };
    let ns = s.namespace("crash").await;
    governed(
        s,
        &ns,
        ("crashdb", 3, "db", "crashdb:2.0.0"),
        "track: major\n  step: none\n  refresh: {pauseAfter: none, health: {readyTimeoutSeconds: 600}}",
    )
    .await;
    // The lowest unit crash-loops on the new version; the others run it.
    kubelet::set_for_pod(&ns, "crashdb-0", "crashdb:2.0.1", Behaviour::Broken);

    s.kubectl_ok(&[
        "-n",
        &ns,
        "set",
        "image",
        "statefulset/crashdb",
        "db=crashdb:2.0.1",
    ]);
    wait_record_state(s, &ns, "statefulset", "crashdb", "Failed").await;
    let status = text(&s.ug(&["status", &format!("{ns}/crashdb")]).stdout);
    assert!(
        status.contains(&format!(
            "  next: unit 0 (crashdb-0) is crash-looping: roll back to 2.0.0 (`kubectl -n {ns} rollout undo statefulset/crashdb`) or go on anyway"
        )),
        "{status}"
    );

    s.kubectl_ok(&["-n", &ns, "rollout", "undo", "statefulset/crashdb"]);
    wait_record_state(s, &ns, "statefulset", "crashdb", "Completed").await;
    let record = crate::workloads::record(s, &ns, "statefulset", "crashdb").unwrap();
    assert_eq!(
        (
            record["from"].as_str(),
            record["to"].as_str(),
            record["rollback"].as_bool()
        ),
        (Some("2.0.1"), Some("2.0.0"), Some(true))
    );
    let (new, old) = ("crashdb:2.0.1".to_string(), "crashdb:2.0.0".to_string());
    let pod = |name: &str, image: &String| (name.to_string(), image.clone());
    assert_eq!(
        kubelet::started(&ns)[3..],
        [
            // The refresh, highest first, until unit 0 crash-loops.
            pod("crashdb-2", &new),
            pod("crashdb-1", &new),
            pod("crashdb-0", &new),
            // The rollback: the stuck unit first (deleted by upgrade-guard:
            // the StatefulSet controller replaces nothing while it is not
            // Ready), then the refreshed units, highest first.
            pod("crashdb-0", &old),
            pod("crashdb-2", &old),
            pod("crashdb-1", &old),
        ]
    );
    wait_rolled_out(s, &ns, "statefulset/crashdb").await;
}
