//! A policy `serve` reads from its own files (the chart's policies.files):
//! `status` on the operator's laptop cannot see it, and still gives the next
//! action, from the refresh record that only upgrade-guard writes.

use crate::suite::{suite, text};
use crate::workloads::{statefulset, wait_record_state, wait_rolled_out};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_without_the_policy_names_resume_from_the_record_and_where_the_policy_is() {
    let Some(s) = suite() else { return };
    let ns = s.namespace("filepolicy").await;
    s.apply(&ns, &statefulset("filedb", 2, "db", "filedb:5.0.0"));
    wait_rolled_out(s, &ns, "statefulset/filedb").await;
    s.kubectl_ok(&[
        "-n",
        &ns,
        "set",
        "image",
        "statefulset/filedb",
        "db=filedb:5.0.1",
    ]);
    wait_record_state(s, &ns, "statefulset", "filedb", "Paused").await;

    let status = text(&s.ug(&["status", &format!("{ns}/filedb")]).stdout);
    assert!(
        status.contains("5.0.0 → 5.0.1  Paused  pause-after -"),
        "{status}"
    );
    assert!(
        status.contains(&format!(
            "  next: paused: paused after unit 1 (filedb-1) refreshed to 5.0.1; check it, then resume (its UpgradePolicy is not among the cluster's nor in --policies here (serve may read it from its own policy files: give the same with --policies to see versions))\n  run:  upgrade-guard resume {ns}/filedb"
        )),
        "{status}"
    );
    let resumed = s.ug(&["resume", &format!("{ns}/filedb")]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    wait_record_state(s, &ns, "statefulset", "filedb", "Completed").await;
}
