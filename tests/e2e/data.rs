//! The data guard on a real control plane: once a claim has served a
//! version, no pod starts on it at a version the policy does not allow from
//! there, by whatever route: a pod's image edited in place, or the
//! StatefulSet deleted with its pods orphaned and created again.

use std::time::Duration;

use crate::kubelet;
use crate::suite::{Suite, denial_by, eventually, suite, text};
use crate::workloads::{policy, statefulset, wait_rolled_out};

/// `statefulset(…)` with a claim per pod (`data-NAME-ORDINAL`).
fn with_claims(name: &str, replicas: i32, image: &str) -> String {
    statefulset(name, replicas, "db", image)
        + "  volumeClaimTemplates:\n    - metadata: {name: data}\n      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n"
}

fn served(s: &Suite, ns: &str, claim: &str) -> Option<serde_json::Value> {
    let out = s.kubectl(&[
        "-n",
        ns,
        "get",
        "pvc",
        claim,
        "-o",
        r"jsonpath={.metadata.annotations.upgradeguard\.io/served}",
    ]);
    serde_json::from_slice(&out.stdout).ok()
}

async fn wait_served(s: &Suite, ns: &str, claim: &str, version: &str) {
    eventually(
        &format!("claim {claim} to record {version} served"),
        60,
        || async {
            let record = served(s, ns, claim)?;
            (record["versions"]["datadb"]["version"] == version).then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pod_starts_on_a_claim_at_a_version_its_policy_forbids_from_what_served_it() {
    let Some(s) = suite() else { return };
    let ns = s.namespace("data").await;
    s.apply(
        &ns,
        &policy(
            "datadb",
            "{app.kubernetes.io/name: datadb}",
            "track: major\n  step: minor\n  refresh: {pauseAfter: none}",
        ),
    );
    s.apply(&ns, &with_claims("datadb", 2, "datadb:1.7.0"));
    wait_rolled_out(s, &ns, "statefulset/datadb").await;

    // Ready pods: upgrade-guard records on each claim what served it.
    wait_served(s, &ns, "data-datadb-0", "1.7.0").await;
    wait_served(s, &ns, "data-datadb-1", "1.7.0").await;
    assert_eq!(
        served(s, &ns, "data-datadb-0").unwrap(),
        serde_json::json!({"policy": format!("{ns}/datadb"), "versions": {"datadb": {"version": "1.7.0"}}})
    );

    // The record is upgrade-guard's: a user cannot remove or rewrite it.
    let removed = s.kubectl(&[
        "-n",
        &ns,
        "annotate",
        "pvc",
        "data-datadb-0",
        "upgradeguard.io/served-",
    ]);
    assert_eq!(
        denial_by(&removed, "data.upgradeguard.io"),
        format!(
            "PersistentVolumeClaim {ns}/data-datadb-0: the upgradeguard.io/served annotation is upgrade-guard's record of the version that last served this claim, written only by upgrade-guard; this request changes it (rule record-integrity)"
        )
    );

    // The StatefulSet controller never reverts a pod edited in place.
    let edited = s.kubectl(&["-n", &ns, "set", "image", "pod/datadb-0", "db=datadb:1.9.0"]);
    let skip = format!(
        "Pod {ns}/datadb-0: claim data-datadb-0 was last served by datadb 1.7.0, and 1.7.0 → 1.9.0 skips 1.8.x: upgrade to 1.8.x first (rule skip-version, policy {ns}/datadb); the data guard admits no pod on a claim at a version its policy does not allow from the one that last served it: change the version through the workload, one allowed step at a time"
    );
    assert_eq!(denial_by(&edited, "data.upgradeguard.io"), skip);

    // Orphan the pods, delete them, and create the StatefulSet again at the
    // skipped release: no pod of it may start on the old claims.
    s.kubectl_ok(&[
        "-n",
        &ns,
        "delete",
        "statefulset/datadb",
        "--cascade=orphan",
    ]);
    s.kubectl_ok(&["-n", &ns, "delete", "pod", "datadb-0", "datadb-1", "--wait"]);
    s.apply(&ns, &with_claims("datadb", 2, "datadb:1.9.0"));
    let events = eventually(
        "the StatefulSet controller's FailedCreate naming the rule",
        60,
        || async {
            let out = s.kubectl(&[
                "-n",
                &ns,
                "get",
                "events",
                "--field-selector",
                "involvedObject.kind=StatefulSet,involvedObject.name=datadb,reason=FailedCreate",
                "-o",
                "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
            ]);
            let said = text(&out.stdout);
            said.contains("rule skip-version").then_some(said)
        },
    )
    .await;
    assert!(
        events.contains("data.upgradeguard.io") && events.contains("1.7.0 → 1.9.0 skips 1.8.x"),
        "{events}"
    );
    // `status` says why no pod comes up, naming the rule.
    let said = text(&s.ug(&["status", &format!("{ns}/datadb")]).stderr);
    assert!(
        said.contains(&format!(
            "StatefulSet {ns}/datadb: no refresh recorded; its pods are refused: "
        )) && said.contains("(rule skip-version, policy"),
        "{said}"
    );
    // Still none a few seconds on (the controller keeps retrying).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pods = s.kubectl_ok(&["-n", &ns, "get", "pods", "-o", "name"]);
    assert_eq!(pods.trim(), "", "{pods}");
    assert!(
        !kubelet::started(&ns)
            .iter()
            .any(|(_, image)| image == "datadb:1.9.0"),
        "{:?}",
        kubelet::started(&ns)
    );

    // The next release is an allowed step from what the claims served.
    s.kubectl_ok(&["-n", &ns, "delete", "statefulset/datadb"]);
    s.apply(&ns, &with_claims("datadb", 2, "datadb:1.8.0"));
    wait_rolled_out(s, &ns, "statefulset/datadb").await;
    wait_served(s, &ns, "data-datadb-0", "1.8.0").await;
    assert_eq!(
        served(s, &ns, "data-datadb-0").unwrap()["versions"]["datadb"],
        serde_json::json!({"version": "1.8.0", "previous": "1.7.0"})
    );
}
