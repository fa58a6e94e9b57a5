//! Kyuubi-like: track major.minor, pause after the first unit.

use crate::kubelet;
use crate::suite::{denial, suite, text};
use crate::workloads::{policy, statefulset, wait_record_state, wait_rolled_out};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_track_upgrade_is_refused_and_a_refresh_goes_highest_first_holding_after_the_first_unit()
 {
    let Some(s) = suite() else { return };
    let ns = s.namespace("kyuubi").await;
    s.apply(
        &ns,
        &policy(
            "kyuubi",
            "{app.kubernetes.io/name: kyuubi}",
            "track: major.minor\n  step: none\n  refresh: {pauseAfter: first}",
        ),
    );
    s.apply(
        &ns,
        &statefulset("kyuubi", 3, "kyuubi", "apache/kyuubi:1.7.0"),
    );
    wait_rolled_out(s, &ns, "statefulset/kyuubi").await;

    let out = s.kubectl(&[
        "-n",
        &ns,
        "set",
        "image",
        "statefulset/kyuubi",
        "kyuubi=apache/kyuubi:1.8.0",
    ]);
    assert_eq!(
        denial(&out),
        format!(
            "StatefulSet {ns}/kyuubi: 1.7.0 → 1.8.0 leaves release track 1.7.x: an in-place refresh stays within it; stay within 1.7.x (rule cross-track, policy {ns}/kyuubi)"
        )
    );

    s.kubectl_ok(&[
        "-n",
        &ns,
        "set",
        "image",
        "statefulset/kyuubi",
        "kyuubi=apache/kyuubi:1.7.1",
    ]);
    wait_record_state(s, &ns, "statefulset", "kyuubi", "Paused").await;
    let refreshed: Vec<_> = kubelet::started(&ns).into_iter().skip(3).collect();
    assert_eq!(
        refreshed,
        [("kyuubi-2".to_string(), "apache/kyuubi:1.7.1".to_string())]
    );
    let status = text(&s.ug(&["status", &format!("{ns}/kyuubi")]).stdout);
    assert!(
        status.contains(&format!(
            "  next: paused after unit 2 (kyuubi-2) refreshed to 1.7.1; check it, then resume\n  run:  upgrade-guard resume {ns}/kyuubi"
        )),
        "{status}"
    );

    // As the README's walk-through shows it.
    let items = [
        "  ITEM (1 of 3 done)                       STATE           JOB",
        "  unit 2 (kyuubi-2)                        COMPLETED       -",
        "  unit 1 (kyuubi-1)                        HOLDING         -",
        "  unit 0 (kyuubi-0)                        PENDING         -",
    ];
    assert!(status.contains(&items.join("\n")), "{status}");

    let scale = s.kubectl(&["-n", &ns, "scale", "statefulset/kyuubi", "--replicas=4"]);
    assert_eq!(
        denial(&scale),
        format!(
            "StatefulSet {ns}/kyuubi: scaling from 3 to 4 is refused while the refresh 1.7.0 → 1.7.1 is in progress (Paused); scale after it completes or is rolled back (rule frozen-during-refresh, policy {ns}/kyuubi)"
        )
    );
    let env = s.kubectl(&[
        "-n",
        &ns,
        "set",
        "env",
        "statefulset/kyuubi",
        "KYUUBI_OPTS=-Xmx2g",
    ]);
    assert_eq!(
        denial(&env),
        format!(
            "StatefulSet {ns}/kyuubi: changing the pod template is refused while the refresh 1.7.0 → 1.7.1 is in progress (Paused); finish or roll back the refresh first (rule frozen-during-refresh, policy {ns}/kyuubi)"
        )
    );

    let resume = s.ug(&["resume", &format!("{ns}/kyuubi")]);
    assert!(resume.status.success(), "{}", text(&resume.stderr));
    wait_record_state(s, &ns, "statefulset", "kyuubi", "Completed").await;
    let refreshed: Vec<_> = kubelet::started(&ns).into_iter().skip(3).collect();
    let image = "apache/kyuubi:1.7.1".to_string();
    assert_eq!(
        refreshed,
        [
            ("kyuubi-2".to_string(), image.clone()),
            ("kyuubi-1".to_string(), image.clone()),
            ("kyuubi-0".to_string(), image)
        ]
    );
    let status = text(&s.ug(&["status", &format!("{ns}/kyuubi")]).stdout);
    assert!(status.contains("1.7.0 → 1.7.1  Completed"), "{status}");
    assert!(status.contains("100% refreshed"), "{status}");
}
