//! Hooks as real Jobs run by the real Job controller: preRefresh, preUnit,
//! postUnit and postRefresh (once per release step) in order; a failed hook
//! holds and `retry` runs it again; `status` names every item's state at
//! each point. And `onFailure: rollback`: the controller rolls back itself.

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};

use crate::kubelet::{self, Behaviour};
use crate::suite::{Suite, eventually, suite, text};
use crate::workloads::{governed, wait_record_state, wait_rolled_out};

fn hook(image: &str) -> String {
    format!(
        "{{backoffLimit: 0, template: {{spec: {{restartPolicy: Never, containers: [{{name: hook, image: '{image}', command: [/bin/true]}}]}}}}}}"
    )
}

/// The ITEM rows of `status`: (item, state).
fn items(s: &Suite, target: &str) -> Vec<(String, String)> {
    let out = text(&s.ug(&["status", target, "--output", "json"]).stdout);
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let report = if report.is_array() {
        report[0].clone()
    } else {
        report
    };
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn states(items: &[(String, String)]) -> Vec<&str> {
    items.iter().map(|(_, state)| state.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_as_jobs_in_order_a_failed_one_holds_and_retry_runs_it_again() {
    let Some(s) = suite() else { return };
    let ns = s.namespace("hooks").await;
    let target = format!("{ns}/hooked");
    governed(
        s,
        &ns,
        ("hooked", 2, "db", "hooked:1.0.0"),
        &format!(
                "step: none\n  releases: [1.0.0, 1.0.1, 1.0.2]\n  refresh:\n    pauseAfter: first\n    health: {{minReadySeconds: 0}}\n    hooks:\n      preRefresh: {}\n      preUnit: {}\n      postUnit: {}\n      postRefresh: {}\n      timeoutSeconds: 300",
                hook("hooks/backup:1"),
                hook("hooks/pre-unit:1"),
                hook("hooks/post-unit:1"),
                hook("hooks/migrate:1")
            ),
    )
    .await;

    // The backup runs first, and nothing restarts while it runs.
    kubelet::set(&ns, "hooks/backup:1", Behaviour::Waiting);
    s.kubectl_ok(&[
        "-n",
        &ns,
        "set",
        "image",
        "statefulset/hooked",
        "db=hooked:1.0.2",
    ]);
    let running = eventually("the backup hook to run", 60, || async {
        let i = items(s, &target);
        (i.first().map(|(_, state)| state.as_str()) == Some("IN_PROGRESS")).then_some(i)
    })
    .await;
    assert_eq!(
        running,
        [
            ("preRefresh hook".into(), "IN_PROGRESS".into()),
            ("preUnit hook of unit 1".into(), "PENDING".into()),
            ("unit 1 (hooked-1)".into(), "PENDING".into()),
            ("postUnit hook of unit 1".into(), "PENDING".into()),
            ("preUnit hook of unit 0".into(), "PENDING".into()),
            ("unit 0 (hooked-0)".into(), "PENDING".into()),
            ("postUnit hook of unit 0".into(), "PENDING".into()),
            ("postRefresh hook 1.0.0 → 1.0.1".into(), "PENDING".into()),
            ("postRefresh hook 1.0.1 → 1.0.2".into(), "PENDING".into()),
        ] as [(String, String); 9]
    );
    assert_eq!(
        kubelet::started(&ns).len(),
        2,
        "no unit restarted during the backup"
    );

    // The backup done, the first unit goes, then the refresh holds.
    kubelet::set(&ns, "hooks/backup:1", Behaviour::Healthy);
    wait_record_state(s, &ns, "statefulset", "hooked", "Paused").await;
    assert_eq!(
        states(&items(s, &target)),
        [
            "COMPLETED",
            "COMPLETED",
            "COMPLETED",
            "COMPLETED", // preRefresh, unit 1 and its hooks
            "PENDING",
            "HOLDING",
            "PENDING", // unit 0 held by the pause
            "PENDING",
            "PENDING", // the migrations
        ]
    );

    // The post-unit check of unit 0 fails: the refresh holds on it.
    kubelet::set(&ns, "hooks/post-unit:1", Behaviour::Broken);
    s.ug(&["resume", &target]);
    wait_record_state(s, &ns, "statefulset", "hooked", "Failed").await;
    assert_eq!(
        states(&items(s, &target)),
        [
            "COMPLETED",
            "COMPLETED",
            "COMPLETED",
            "COMPLETED",
            "COMPLETED",
            "COMPLETED",
            "HOLDING_FAILED", // unit 0's postUnit hook
            "PENDING",
            "PENDING",
        ]
    );
    let status = text(&s.ug(&["status", &target]).stdout);
    assert!(
        status.contains("  next: the postUnit hook of unit 0 failed (Job hooked-post-unit-0-"),
        "{status}"
    );
    assert!(
        status.contains(&format!("  run:  upgrade-guard retry {target}")),
        "{status}"
    );

    kubelet::set(&ns, "hooks/post-unit:1", Behaviour::Healthy);
    let retried = s.ug(&["retry", &target]);
    assert!(retried.status.success(), "{}", text(&retried.stderr));
    wait_record_state(s, &ns, "statefulset", "hooked", "Completed").await;
    let done = items(s, &target);
    assert!(states(&done).iter().all(|s| *s == "COMPLETED"), "{done:?}");

    // In order, as the Jobs ran: (hook, unit or step).
    let jobs: Api<Job> = Api::namespaced(s.client().await, &ns);
    let jobs = jobs.list(&ListParams::default()).await.unwrap().items;
    let ran: Vec<String> = kubelet::started(&ns)
        .into_iter()
        .filter_map(|(pod, _)| {
            let job = jobs
                .iter()
                .find(|j| pod.starts_with(&format!("{}-", j.metadata.name.as_deref().unwrap())))?;
            let env = job.spec.as_ref()?.template.spec.as_ref()?.containers[0]
                .env
                .clone()?;
            let get = |k: &str| {
                env.iter()
                    .find(|e| e.name == k)
                    .and_then(|e| e.value.clone())
            };
            let hook = job
                .metadata
                .labels
                .as_ref()?
                .get("upgradeguard.io/hook")?
                .clone();
            Some(
                match (get("UG_UNIT"), get("UG_STEP_FROM"), get("UG_STEP_TO")) {
                    (Some(unit), _, _) => format!("{hook} {unit}"),
                    (None, Some(from), Some(to)) => format!("{hook} {from}-{to}"),
                    _ => hook,
                },
            )
        })
        .collect();
    assert_eq!(
        ran,
        [
            "preRefresh",
            "preUnit 1",
            "postUnit 1",
            "preUnit 0",
            "postUnit 0", // failed
            "postUnit 0", // retried
            "postRefresh 1.0.0-1.0.1",
            "postRefresh 1.0.1-1.0.2",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_rollback_rolls_a_crash_looping_unit_back_by_itself_with_the_event() {
    let Some(s) = suite() else { return };
    let ns = s.namespace("autoback").await;
    governed(
        s,
        &ns,
        ("autoback", 2, "db", "autoback:4.1.0"),
        "track: major\n  step: none\n  refresh: {pauseAfter: none, onFailure: rollback}",
    )
    .await;
    kubelet::set(&ns, "autoback:4.2.0", Behaviour::Broken);

    s.kubectl_ok(&[
        "-n",
        &ns,
        "set",
        "image",
        "statefulset/autoback",
        "db=autoback:4.2.0",
    ]);
    eventually("the automatic rollback to complete", 120, || async {
        let r = crate::workloads::record(s, &ns, "statefulset", "autoback")?;
        (r["state"] == "Completed" && r["rollback"] == true).then_some(())
    })
    .await;
    let record = crate::workloads::record(s, &ns, "statefulset", "autoback").unwrap();
    assert_eq!(
        (
            record["from"].as_str(),
            record["to"].as_str(),
            record["automatic"].as_bool()
        ),
        (Some("4.2.0"), Some("4.1.0"), Some(true))
    );
    let image = s.kubectl_ok(&[
        "-n",
        &ns,
        "get",
        "statefulset",
        "autoback",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, "autoback:4.1.0");
    let events = s.kubectl_ok(&[
        "-n",
        &ns,
        "get",
        "events",
        "--field-selector",
        "reason=AutomaticRollback",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert_eq!(
        events,
        "unit 1 (autoback-1) is crash-looping: rolling back to 4.1.0 automatically (onFailure: rollback)"
    );
    wait_rolled_out(s, &ns, "statefulset/autoback").await;
}
