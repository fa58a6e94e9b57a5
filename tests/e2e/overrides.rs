//! Overrides under the real authorizer (users impersonated): a user without
//! `force` sees the RBAC sentence; with the ClusterRole bound, the override
//! passes, once; the refresh record is nobody's to write; refusals are
//! Events on the workload, and a dry-run leaves none.

use std::time::Duration;

use crate::suite::{denial, suite, text};
use crate::workloads::{governed, wait_record_state};

fn forcing_patch(version: &str, reason: &str) -> String {
    format!(
        r#"{{"metadata":{{"annotations":{{"upgradeguard.io/force-to":"{version}","upgradeguard.io/force-reason":"{reason}"}}}},"spec":{{"template":{{"spec":{{"containers":[{{"name":"sqlgw","image":"sqlgw:{version}"}}]}}}}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_needs_the_force_right_counts_once_and_the_record_is_upgrade_guards() {
    let Some(s) = suite() else { return };
    let ns = s.namespace("overrides").await;
    governed(
        s,
        &ns,
        ("sqlgw", 2, "sqlgw", "sqlgw:3.4.0"),
        "track: major.minor\n  step: none\n  crossTrack: force\n  refresh: {pauseAfter: none}",
    )
    .await;
    s.kubectl_ok(&[
        "-n",
        &ns,
        "create",
        "role",
        "sts-editor",
        "--verb=get,list,watch,patch,update",
        "--resource=statefulsets",
    ]);
    s.kubectl_ok(&[
        "-n",
        &ns,
        "create",
        "rolebinding",
        "alice-edits",
        "--role=sts-editor",
        "--user=alice",
    ]);

    // Without the force right: the RBAC sentence, not the record's.
    let patch = forcing_patch("3.5.1", "tested on staging");
    let out = s.kubectl_as(
        "alice",
        &["-n", &ns, "patch", "statefulset", "sqlgw", "-p", &patch],
    );
    assert_eq!(
        denial(&out),
        format!(
            "StatefulSet {ns}/sqlgw: 3.4.0 → 3.5.1 leaves release track 3.4.x: an in-place refresh stays within it; stay within 3.4.x (rule cross-track, policy {ns}/sqlgw); upgradeguard.io/force-to is set, but alice may not force: an override needs the RBAC verb `force` on upgradepolicies.upgradeguard.io in namespace {ns}, which the ClusterRole upgrade-guard-force grants (`kubectl -n {ns} create rolebinding upgrade-guard-force --clusterrole=upgrade-guard-force --user=USER`)"
        )
    );
    // The refusal is an Event on the workload, as `kubectl describe` shows.
    let described = crate::suite::eventually("the UpgradeRefused Event", 30, || async {
        let d = s.kubectl_ok(&["-n", &ns, "describe", "statefulset", "sqlgw"]);
        d.contains("UpgradeRefused").then_some(d)
    })
    .await;
    assert!(
        described.contains("leaves release track 3.4.x"),
        "{described}"
    );

    // A dry-run gets the same verdict and leaves no Event.
    let dry = s.kubectl_as(
        "alice",
        &[
            "-n",
            &ns,
            "patch",
            "statefulset",
            "sqlgw",
            "--dry-run=server",
            "-p",
            &forcing_patch("3.6.0", "dry"),
        ],
    );
    assert!(denial(&dry).contains("3.4.0 → 3.6.0 leaves release track 3.4.x"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = s.kubectl_ok(&["-n", &ns, "get", "events", "-o", "json"]);
    assert!(events.contains("3.4.0 → 3.5.1"), "{events}");
    assert!(
        !events.contains("3.6.0"),
        "a dry-run left an Event: {events}"
    );

    // With the ClusterRole bound, the same request passes and is forced.
    s.kubectl_ok(&[
        "-n",
        &ns,
        "create",
        "rolebinding",
        "upgrade-guard-force",
        "--clusterrole=upgrade-guard-force",
        "--user=alice",
    ]);
    let out = s.kubectl_as(
        "alice",
        &["-n", &ns, "patch", "statefulset", "sqlgw", "-p", &patch],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("forced"),
        "kubectl shows the override's warning: {}",
        text(&out.stderr)
    );
    wait_record_state(s, &ns, "statefulset", "sqlgw", "Completed").await;

    // The record is upgrade-guard's: neither alice nor an administrator may
    // remove or rewrite it.
    let record_rule = format!(
        "StatefulSet {ns}/sqlgw: the upgradeguard.io/refresh annotation is upgrade-guard's record of a refresh, written only by upgrade-guard; this request changes it (rule record-integrity)"
    );
    let removed = s.kubectl_as(
        "alice",
        &[
            "-n",
            &ns,
            "annotate",
            "statefulset",
            "sqlgw",
            "upgradeguard.io/refresh-",
        ],
    );
    assert!(
        denial(&removed).starts_with(&record_rule),
        "{}",
        denial(&removed)
    );
    let rewritten = s.kubectl(&[
        "-n", &ns, "annotate", "--overwrite", "statefulset", "sqlgw",
        r#"upgradeguard.io/refresh={"from":"3.4.0","to":"3.5.1","started":"2026-01-01T00:00:00Z","state":"Completed"}"#,
    ]);
    assert!(
        denial(&rewritten).starts_with(&record_rule),
        "{}",
        denial(&rewritten)
    );

    // The force-to left on the workload is spent: it does not force the
    // workload out of its policy, even for a user who may force.
    let left = s.kubectl_as(
        "alice",
        &[
            "-n",
            &ns,
            "label",
            "statefulset",
            "sqlgw",
            "app.kubernetes.io/name-",
        ],
    );
    let said = denial(&left);
    assert!(said.contains("(rule left-policy"), "{said}");
    assert!(
        said.contains("upgradeguard.io/force-to \"3.5.1\" was set by an earlier request, and an override counts only in the request that sets it"),
        "{said}"
    );
}
