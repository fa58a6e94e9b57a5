//! The kubelet's part, played through `pods/status` (there is no kubelet
//! and no scheduler): a pod becomes Running and Ready, or crash-loops when
//! its test said so for its image; a Job's pod runs to Succeeded, or to
//! Failed when its test said so. Every pod made Ready is noted, in order,
//! so that a test can see which unit went first.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Behaviour {
    /// Running, Ready; a Job's pod: Succeeded.
    Healthy,
    /// Running, never Ready, `CrashLoopBackOff`; a Job's pod: Failed.
    Broken,
    /// Left Pending (a Job's pod: running) until its test says otherwise.
    Waiting,
}

/// (namespace, image) -> behaviour other than Healthy.
static BEHAVIOURS: Mutex<Vec<(String, String, Behaviour)>> = Mutex::new(Vec::new());

/// (namespace, pod, image, when) of every pod made Ready or run to its end.
static STARTED: Mutex<Vec<(String, String, String, Instant)>> = Mutex::new(Vec::new());

/// The UIDs of the pods played already: each is played once.
static PLAYED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// The UIDs of the pods being played now.
static PLAYING: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// From now on, pods in `namespace` running `image` behave so.
pub fn set(namespace: &str, image: &str, behaviour: Behaviour) {
    let mut all = BEHAVIOURS.lock().unwrap();
    all.retain(|(ns, i, _)| !(ns == namespace && i == image));
    all.push((namespace.into(), image.into(), behaviour));
}

/// (pod, image) of every pod of `namespace` started so far, in order.
pub fn started(namespace: &str) -> Vec<(String, String)> {
    started_at(namespace)
        .into_iter()
        .map(|(pod, image, _)| (pod, image))
        .collect()
}

/// (pod, image, when its Ready status was written) in `namespace`, in order.
pub fn started_at(namespace: &str) -> Vec<(String, String, Instant)> {
    STARTED
        .lock()
        .unwrap()
        .iter()
        .filter(|(ns, ..)| ns == namespace)
        .map(|(_, pod, image, at)| (pod.clone(), image.clone(), *at))
        .collect()
}

/// Pod `pod` of `namespace` running `image` behaves so, whatever its
/// namespace's setting for the image says.
pub fn set_for_pod(namespace: &str, pod: &str, image: &str, behaviour: Behaviour) {
    set(&format!("{namespace}/{pod}"), image, behaviour);
}

fn behaviour(namespace: &str, pod: &str, images: &[String]) -> Behaviour {
    let all = BEHAVIOURS.lock().unwrap();
    let of = |scope: &str| {
        all.iter()
            .find(|(s, image, _)| s == scope && images.iter().any(|i| i == image))
            .map(|(_, _, b)| *b)
    };
    of(&format!("{namespace}/{pod}"))
        .or_else(|| of(namespace))
        .unwrap_or(Behaviour::Healthy)
}

/// Plays the kubelet for every pod of the cluster until the process ends:
/// on each watch event, and every half second over the cache, so a pod left
/// waiting is played once its test changes its behaviour.
pub async fn run(client: kube::Client) {
    let pods: Api<Pod> = Api::all(client.clone());
    let (cache, writer) = reflector::store();
    let mut events = reflector(writer, watcher(pods, watcher::Config::default()))
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    let concurrent = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    loop {
        let pods: Vec<_> = tokio::select! {
            event = events.next() => match event {
                Some(Ok(pod)) => vec![std::sync::Arc::new(pod)],
                Some(Err(_)) => continue,
                None => return,
            },
            _ = tick.tick() => cache.state(),
        };
        // Many pods at once, as many kubelets would: a test that creates
        // thousands must not hold up another test's one.
        for pod in pods {
            let Ok(permit) = concurrent.clone().acquire_owned().await else {
                return;
            };
            let client = client.clone();
            tokio::spawn(async move {
                if let Err(e) = play(&client, &pod).await {
                    eprintln!("kubelet stand-in: {e}");
                }
                drop(permit);
            });
        }
    }
}

async fn play(client: &kube::Client, pod: &Pod) -> Result<(), kube::Error> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let (Some(namespace), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
        return Ok(());
    };
    let Some(spec) = &pod.spec else { return Ok(()) };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if PLAYED.lock().unwrap().contains(&uid) || !PLAYING.lock().unwrap().insert(uid.clone()) {
        return Ok(());
    }
    let played = play_once(client, pod, namespace, name, spec, &uid).await;
    PLAYING.lock().unwrap().remove(&uid);
    played
}

async fn play_once(
    client: &kube::Client,
    pod: &Pod,
    namespace: &str,
    name: &str,
    spec: &k8s_openapi::api::core::v1::PodSpec,
    uid: &str,
) -> Result<(), kube::Error> {
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let images: Vec<String> = spec
        .containers
        .iter()
        .filter_map(|c| c.image.clone())
        .collect();
    let run_to_end = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Job");
    let behaviour = behaviour(namespace, name, &images);
    if behaviour == Behaviour::Waiting {
        return Ok(());
    }
    let now = jiff::Timestamp::now().to_string();
    let statuses = |state: serde_json::Value, ready: bool, restarts: i32| {
        spec.containers
            .iter()
            .map(|c| {
                json!({
                    "name": c.name, "image": c.image, "imageID": "",
                    "ready": ready, "started": ready, "restartCount": restarts,
                    "state": state,
                })
            })
            .collect::<Vec<_>>()
    };
    let patch = if run_to_end {
        if phase != "Pending" {
            return Ok(());
        }
        let (phase, code) = match behaviour {
            Behaviour::Broken => ("Failed", 1),
            _ => ("Succeeded", 0),
        };
        let ended = json!({"terminated": {"exitCode": code, "startedAt": now, "finishedAt": now,
            "reason": if code == 0 { "Completed" } else { "Error" }}});
        json!({"status": {"phase": phase, "startTime": now,
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
            "containerStatuses": statuses(ended, false, 0)}})
    } else {
        let already = status
            .container_statuses
            .as_ref()
            .is_some_and(|cs| !cs.is_empty());
        if already {
            return Ok(());
        }
        match behaviour {
            Behaviour::Healthy | Behaviour::Waiting => {
                json!({"status": {"phase": "Running", "startTime": now,
                "conditions": [
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}],
                "containerStatuses": statuses(json!({"running": {"startedAt": now}}), true, 0)}})
            }
            Behaviour::Broken => json!({"status": {"phase": "Running", "startTime": now,
                "conditions": [
                    {"type": "Ready", "status": "False", "lastTransitionTime": now,
                     "reason": "ContainersNotReady"}],
                "containerStatuses": statuses(
                    json!({"waiting": {"reason": "CrashLoopBackOff",
                        "message": "back-off 40s restarting failed container"}}), false, 3)}}),
        }
    };
    // The UID makes the patch miss a pod made anew under the same name.
    let mut patch = patch;
    patch["metadata"] = json!({"uid": pod.metadata.uid});
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            PLAYED.lock().unwrap().insert(uid.to_string());
            STARTED.lock().unwrap().push((
                namespace.to_string(),
                name.to_string(),
                images.first().cloned().unwrap_or_default(),
                Instant::now(),
            ));
            Ok(())
        }
        // Deleted meanwhile: the next pod of that name is another event.
        Err(kube::Error::Api(s)) if [404, 409, 422].contains(&s.code) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Marks a running pod Ready or not, as a kubelet whose probe changed its
/// mind would.
pub async fn set_ready(client: &kube::Client, namespace: &str, pod: &str, ready: bool) {
    let now = jiff::Timestamp::now().to_string();
    let status = if ready { "True" } else { "False" };
    let patch = json!({"status": {"conditions": [
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "Ready", "status": status, "lastTransitionTime": now},
        {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}]}});
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.patch_status(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("pods/{pod}/status: {e}"));
}
