//! A unit that crash-loops: the refresh holds, `status` names the rollback
//! command, and `kubectl rollout undo` goes through, the stuck pod replaced
//! by upgrade-guard (the StatefulSet controller never does it itself).

use crate::kubelet::{self, Behaviour};
use crate::suite::{suite, text};
use crate::workloads::{policy, statefulset, wait_record_state, wait_rolled_out};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_unit_holds_the_refresh_and_rollout_undo_rolls_it_back() {
    let Some(s) = suite() else { return };
    let ns = s.namespace("crash").await;
    s.apply(
        &ns,
        &policy(
            "crashdb",
            "{app.kubernetes.io/name: crashdb}",
            "track: major\n  step: none\n  refresh: {pauseAfter: none, health: {readyTimeoutSeconds: 600}}",
        ),
    );
    s.apply(&ns, &statefulset("crashdb", 3, "db", "crashdb:2.0.0"));
    wait_rolled_out(s, &ns, "statefulset/crashdb").await;
    kubelet::set(&ns, "crashdb:2.0.1", Behaviour::Broken);

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
            "  next: unit 2 (crashdb-2) is crash-looping: roll back to 2.0.0 (`kubectl -n {ns} rollout undo statefulset/crashdb`) or go on anyway"
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
    let after_rollout: Vec<_> = kubelet::started(&ns).into_iter().skip(3).collect();
    assert_eq!(
        after_rollout,
        [
            ("crashdb-2".to_string(), "crashdb:2.0.1".to_string()),
            ("crashdb-2".to_string(), "crashdb:2.0.0".to_string()),
        ],
        "only the highest unit was refreshed, then put back; the others never restarted"
    );
    wait_rolled_out(s, &ns, "statefulset/crashdb").await;
}
