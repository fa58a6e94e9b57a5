//! An OnDelete StatefulSet keeps its strategy: the operator deletes each
//! pod, highest ordinal first, the refresh completes once every pod runs
//! the new revision, and the StatefulSet then takes a scale and the next
//! upgrade. Kubernetes before 1.36 never moves an OnDelete StatefulSet's
//! `status.currentRevision` (kubernetes#73492): the freeze must not wait
//! for it.

use crate::suite::{Suite, denial, eventually, suite, text};
use crate::workloads::{policy, statefulset, wait_record_state};

fn jsonpath(s: &Suite, ns: &str, what: &str, path: &str) -> String {
    let out = s.kubectl(&["-n", ns, "get", what, "-o", &format!("jsonpath={path}")]);
    text(&out.stdout)
}

/// Waits until pod `pod` runs `image`, Ready.
async fn wait_pod_ready(s: &Suite, ns: &str, pod: &str, image: &str) {
    eventually(&format!("{pod} Ready at {image}"), 120, || async {
        let at = jsonpath(s, ns, &format!("pod/{pod}"), "{.spec.containers[0].image}");
        let ready = jsonpath(
            s,
            ns,
            &format!("pod/{pod}"),
            r#"{.status.conditions[?(@.type=="Ready")].status}"#,
        );
        (at == image && ready == "True").then_some(())
    })
    .await
}

/// The OnDelete StatefulSet `db` of `replicas` at `db:v1`, governed
/// through `releases` without pauses, each pod Ready.
async fn on_delete_db(s: &Suite, ns: &str, replicas: i32, releases: &str) {
    s.apply(
        ns,
        &policy(
            "db",
            "{app.kubernetes.io/name: db}",
            &format!(
                "track: none\n  step: major\n  releases: [{releases}]\n  refresh: {{pauseAfter: none}}"
            ),
        ),
    );
    let on_delete = statefulset("db", replicas, "db", "db:v1").replace(
        "  serviceName:",
        "  updateStrategy: {type: OnDelete}\n  serviceName:",
    );
    s.apply(ns, &on_delete);
    for ordinal in (0..replicas).rev() {
        wait_pod_ready(s, ns, &format!("db-{ordinal}"), "db:v1").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_delete_refresh_completes_pod_by_pod_and_the_statefulset_then_takes_changes() {
    let Some(s) = suite() else { return };
    let ns = s.namespace("ondelete").await;
    on_delete_db(s, &ns, 2, "v1, v2, v3").await;

    let upgrade = s.kubectl(&["-n", &ns, "set", "image", "statefulset/db", "db=db:v2"]);
    assert!(upgrade.status.success(), "{}", text(&upgrade.stderr));
    assert!(
        text(&upgrade.stderr).contains("uses updateStrategy OnDelete"),
        "{}",
        text(&upgrade.stderr)
    );
    wait_record_state(s, &ns, "statefulset", "db", "RollingOut").await;
    // Nothing restarts by itself, and a scale waits for the refresh.
    let scale = s.kubectl(&["-n", &ns, "scale", "statefulset/db", "--replicas=3"]);
    let refused = denial(&scale);
    assert!(refused.contains("(rule frozen-during-refresh"), "{refused}");

    for pod in ["db-1", "db-0"] {
        s.kubectl_ok(&["-n", &ns, "delete", "pod", pod, "--wait=false"]);
        wait_pod_ready(s, &ns, pod, "db:v2").await;
    }
    wait_record_state(s, &ns, "statefulset", "db", "Completed").await;
    eventually("every pod counted on the update revision", 60, || async {
        let updated = jsonpath(s, &ns, "statefulset/db", "{.status.updatedReplicas}");
        (updated == "2").then_some(())
    })
    .await;

    // What the freeze must not wait for: the pinned control plane (1.23)
    // leaves `currentRevision` at the first revision.
    let revisions = jsonpath(
        s,
        &ns,
        "statefulset/db",
        "{.status.currentRevision} {.status.updateRevision}",
    );
    let (current, update) = revisions.split_once(' ').unwrap_or_default();
    assert_ne!(
        current, update,
        "this control plane moves currentRevision for OnDelete: the test no longer covers kubernetes#73492"
    );

    s.kubectl_ok(&["-n", &ns, "scale", "statefulset/db", "--replicas=3"]);
    wait_pod_ready(s, &ns, "db-2", "db:v2").await;
    s.kubectl_ok(&["-n", &ns, "set", "image", "statefulset/db", "db=db:v3"]);
    wait_record_state(s, &ns, "statefulset", "db", "RollingOut").await;
    let record = crate::workloads::record(s, &ns, "statefulset", "db").unwrap();
    assert_eq!(
        (record["from"].as_str(), record["to"].as_str()),
        (Some("v2"), Some("v3"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_delete_refresh_rolled_back_by_rollout_undo_completes_once_the_refreshed_pod_is_deleted()
 {
    let Some(s) = suite() else { return };
    let ns = s.namespace("ondelete-undo").await;
    on_delete_db(s, &ns, 3, "v1, v2").await;
    s.kubectl_ok(&["-n", &ns, "set", "image", "statefulset/db", "db=db:v2"]);
    wait_record_state(s, &ns, "statefulset", "db", "RollingOut").await;
    s.kubectl_ok(&["-n", &ns, "delete", "pod", "db-2", "--wait=false"]);
    wait_pod_ready(s, &ns, "db-2", "db:v2").await;

    s.kubectl_ok(&["-n", &ns, "rollout", "undo", "statefulset/db"]);
    let status = eventually("status to name db-2 to delete", 60, || async {
        let said = text(&s.ug(&["status", &format!("{ns}/db")]).stdout);
        said.contains("delete pod db-2").then_some(said)
    })
    .await;
    assert!(status.contains("v2 → v1"), "{status}");
    s.kubectl_ok(&["-n", &ns, "delete", "pod", "db-2", "--wait=false"]);
    wait_pod_ready(s, &ns, "db-2", "db:v1").await;
    wait_record_state(s, &ns, "statefulset", "db", "Completed").await;
    let record = crate::workloads::record(s, &ns, "statefulset", "db").unwrap();
    assert_eq!(record["rollback"], true, "{record}");
    s.kubectl_ok(&["-n", &ns, "scale", "statefulset/db", "--replicas=2"]);
}
