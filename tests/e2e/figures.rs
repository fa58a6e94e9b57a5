//! Figures only a real control plane gives, each printed with a generous
//! bound: how soon the next partition step follows a unit turning Ready,
//! and serve's memory with thousands of pods in its caches.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::Api;

use crate::kubelet;
use crate::suite::{OwnPlane, cpu, suite, text};
use crate::workloads::{governed, statefulset, wait_record_state, watch_partitions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_partition_step_follows_a_ready_unit_promptly() {
    let Some(s) = suite() else { return };
    let ns = s.namespace("reaction").await;
    governed(
        s,
        &ns,
        ("react", 4, "db", "react:1.0.0"),
        "track: major\n  step: none\n  refresh: {pauseAfter: none, health: {minReadySeconds: 0}}",
    )
    .await;

    let (seen, watch) = watch_partitions(&s.client().await, &ns, "react");
    s.kubectl_ok(&[
        "-n",
        &ns,
        "set",
        "image",
        "statefulset/react",
        "db=react:1.0.1",
    ]);
    wait_record_state(s, &ns, "statefulset", "react", "Completed").await;
    watch.abort();

    let seen = seen.lock().unwrap().clone();
    let partitions: Vec<i32> = seen.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        partitions,
        [0, 3, 2, 1, 0],
        "each step written once, highest unit first"
    );
    let ready = kubelet::started_at(&ns);
    let mut reactions = Vec::new();
    for unit in [3, 2, 1] {
        let pod = format!("react-{unit}");
        let (_, _, turned_ready) = ready
            .iter()
            .rfind(|(p, image, _)| *p == pod && image == "react:1.0.1")
            .unwrap_or_else(|| panic!("{pod} never turned Ready on 1.0.1"));
        let at = seen.iter().position(|(p, _)| *p == unit).unwrap();
        let (_, stepped) = seen[at + 1];
        // minReadySeconds 0: the API server keeps condition times to the
        // second, so with more the measure would be off by up to a second.
        reactions.push(stepped.duration_since(*turned_ready));
    }
    eprintln!(
        "figure: the next partition step after a unit turned Ready: {:?}",
        reactions
            .iter()
            .map(|r| format!("{} ms", r.as_millis()))
            .collect::<Vec<_>>()
    );
    for reaction in &reactions {
        // Under a second alone; generous for a loaded CI machine.
        assert!(*reaction < Duration::from_secs(3), "{reactions:?}");
    }
    let _ = text;
}

/// (resident, peak resident) of a process, in MiB, from /proc.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            .unwrap()
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_holds_5000_pods_and_500_statefulsets_in_its_caches_in_bounded_memory() {
    use futures::stream::{self, StreamExt as _};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::PostParams;

    let Some(shared) = suite() else { return };
    // A control plane of its own: the load stays off the other tests, and
    // serve's caches hold this test's objects alone.
    let own = OwnPlane::start(shared, "scale").await;
    let serve = own.serve("serve-0").await;
    let s = &own.suite(&serve).await;
    let ns = s.namespace("scale").await;
    let client = own.client.clone();
    let (before, _) = memory_mib(s.serve_pid);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    let made: Vec<Result<(), String>> = stream::iter(0..5500)
        .map(|i| {
            let (statefulsets, pods) = (statefulsets.clone(), pods.clone());
            async move {
                if i < 500 {
                    let mut sts: StatefulSet = serde_yaml_ng::from_str(&statefulset(
                        &format!("idle-{i}"),
                        0,
                        "db",
                        "idle/db:1.0.0",
                    ))
                    .unwrap();
                    sts.metadata.namespace = None;
                    statefulsets.create(&PostParams::default(), &sts).await.map(|_| ()).map_err(|e| e.to_string())
                } else {
                    let pod: Pod = serde_json::from_value(serde_json::json!({
                        "metadata": {"name": format!("pod-{i}"), "labels": {"app.kubernetes.io/name": format!("idle-{}", i % 500), "tier": "data"}},
                        "spec": {"containers": [{"name": "db", "image": "idle/db:1.0.0",
                            "env": (0..5).map(|e| serde_json::json!({"name": format!("VAR_{e}"), "value": "x".repeat(40)})).collect::<Vec<_>>(),
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
                    }))
                    .unwrap();
                    pods.create(&PostParams::default(), &pod).await.map(|_| ()).map_err(|e| e.to_string())
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(
        made.iter().all(Result::is_ok),
        "{:?}",
        made.iter().find(|r| r.is_err())
    );
    let created_in = started.elapsed();
    // The kubelet stand-in makes them Running and Ready: status in the cache too.
    crate::suite::eventually("5000 pods to be Ready", 300, || async {
        (kubelet::started(&ns).len() >= 5000).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, peak) = memory_mib(s.serve_pid);
    let cpu_before = cpu(s.serve_pid);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = cpu(s.serve_pid) - cpu_before;
    eprintln!(
        "figure: serve with 5000 pods and 500 StatefulSets cached (created in {:.1} s): {rss:.1} MiB resident ({before:.1} before), peak {peak:.1} MiB; CPU over the next 10 s: {} ms",
        created_in.as_secs_f64(),
        idle.as_millis()
    );
    assert!(rss < 256.0, "{rss} MiB");
    assert!(idle < Duration::from_secs(2), "{idle:?} in 10 s");
}
