//! `migrate` and `migrate --rollback`, each in one run, against a fake API
//! server that behaves as the recorded one did (tests/data/recordings/
//! migrate-deployment.jsonl): the Deployment controller writes the
//! Deployment's status after every change, so its resourceVersion moves
//! between every read and the write that follows. The fake refuses a write
//! guarded by a stale resourceVersion (409) and a JSON Patch whose `test`
//! fails (422), as the API server does; it runs a Deployment, StatefulSet,
//! garbage collector and PersistentVolume binder model after each request,
//! and deletes a Released volume whose reclaim policy is Delete, as the
//! real binder would.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use common::root;
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use upgrade_guard::convert::apply::{self, Ended};
use upgrade_guard::convert::migrate::{JOURNAL, Mode};

const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/fate/deployments/mysql";
const STATEFULSET: &str = "/apis/apps/v1/namespaces/fate/statefulsets/mysql";
const PV: &str = "/api/v1/persistentvolumes/pv-mysql";
const OLD_CLAIM: &str = "/api/v1/namespaces/fate/persistentvolumeclaims/mysql-data";
const NEW_CLAIM: &str = "/api/v1/namespaces/fate/persistentvolumeclaims/data-mysql-0";

#[derive(Default)]
struct Fake {
    /// Item path → object.
    objects: BTreeMap<String, Value>,
    version: u64,
    /// Every request: method, path, and the refusals the fake gave.
    log: Vec<String>,
    /// How often the PersistentVolume was deleted (must stay 0).
    volumes_deleted: usize,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": message})
}

impl Fake {
    /// The objects as the recording has them just before `migrate` began.
    fn recorded() -> Fake {
        let text =
            std::fs::read_to_string(root().join("tests/data/recordings/migrate-deployment.jsonl"))
                .unwrap();
        let mut fake = Fake::default();
        for line in text.lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            let object = &event["object"];
            if object["metadata"]["annotations"][JOURNAL].is_string() {
                break;
            }
            let path = item_path(object);
            match event["type"].as_str() {
                Some("DELETED") => {
                    fake.objects.remove(&path);
                }
                _ => {
                    fake.objects.insert(path, object.clone());
                }
            }
            fake.version = object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
        }
        fake.objects.retain(|p, _| !p.contains("/replicasets/"));
        assert!(fake.objects.contains_key(DEPLOYMENT) && fake.objects.contains_key(PV));
        fake
    }

    fn stamp(&mut self, object: &mut Value) {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
    }

    fn put(&mut self, path: &str, mut object: Value) {
        self.stamp(&mut object);
        self.objects.insert(path.to_string(), object);
    }

    fn handle(&mut self, method: &str, path: &str, query: &str, body: &[u8]) -> (u16, Value) {
        match method {
            "GET" if self.objects.contains_key(path) => (200, self.objects[path].clone()),
            "GET" if path.ends_with("/pods") || path.ends_with("/services") => {
                let selector: Vec<(String, String)> = query
                    .split('&')
                    .filter_map(|q| q.strip_prefix("labelSelector="))
                    .flat_map(|s| s.split("%2C"))
                    .filter_map(|kv| kv.split_once("%3D"))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let items: Vec<Value> = self
                    .objects
                    .iter()
                    .filter(|(p, _)| {
                        p.rsplit_once('/')
                            .is_some_and(|(collection, _)| collection == path)
                    })
                    .map(|(_, o)| o)
                    .filter(|o| {
                        selector
                            .iter()
                            .all(|(k, v)| o["metadata"]["labels"][k] == v.as_str())
                    })
                    .cloned()
                    .collect();
                (
                    200,
                    json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": self.version.to_string()}, "items": items}),
                )
            }
            "GET" => (404, status(404, "NotFound", &format!("{path} not found"))),
            "PATCH" => self.patch(path, body),
            "POST" => {
                let mut object: Value = serde_json::from_slice(body).unwrap();
                let name = object["metadata"]["name"].as_str().unwrap().to_string();
                let item = format!("{path}/{name}");
                if self.objects.contains_key(&item) {
                    return (409, status(409, "AlreadyExists", &format!("{name} exists")));
                }
                object["metadata"]["uid"] = json!(format!("uid-{}-{}", name, self.version));
                object["metadata"]["generation"] = json!(1);
                self.put(&item, object.clone());
                (201, self.objects[&item].clone())
            }
            "DELETE" => {
                let Some(current) = self.objects.get(path) else {
                    return (404, status(404, "NotFound", "gone"));
                };
                let options: Value = serde_json::from_slice(body).unwrap_or_default();
                let pre = &options["preconditions"];
                if (pre["uid"].is_string() && pre["uid"] != current["metadata"]["uid"])
                    || (pre["resourceVersion"].is_string()
                        && pre["resourceVersion"] != current["metadata"]["resourceVersion"])
                {
                    self.log.push(format!("409 DELETE {path}"));
                    return (409, status(409, "Conflict", "precondition failed"));
                }
                let gone = self.objects.remove(path).unwrap();
                self.deleted(&gone);
                (
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                )
            }
            other => panic!("unexpected {other} {path}"),
        }
    }

    fn patch(&mut self, path: &str, body: &[u8]) -> (u16, Value) {
        let Some(current) = self.objects.get(path).cloned() else {
            return (404, status(404, "NotFound", "gone"));
        };
        let patch: Value = serde_json::from_slice(body).unwrap();
        let mut next = current.clone();
        if patch.is_array() {
            let ops: json_patch::Patch = serde_json::from_value(patch).unwrap();
            if let Err(e) = json_patch::patch(&mut next, &ops) {
                self.log.push(format!("422 PATCH {path}"));
                return (422, status(422, "", &e.to_string()));
            }
        } else {
            let guard = &patch["metadata"]["resourceVersion"];
            if guard.is_string() && guard != &current["metadata"]["resourceVersion"] {
                self.log.push(format!("409 PATCH {path}"));
                return (409, status(409, "Conflict", "the object has been modified"));
            }
            json_patch::merge(&mut next, &patch);
        }
        // Deployments count a change of spec or annotations as a generation.
        if next["spec"] != current["spec"]
            || next["metadata"]["annotations"] != current["metadata"]["annotations"]
        {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
            next["metadata"]["generation"] = json!(generation + 1);
        }
        self.put(path, next);
        (200, self.objects[path].clone())
    }

    /// The garbage collector and the binder react to a delete.
    fn deleted(&mut self, gone: &Value) {
        let uid = gone["metadata"]["uid"].clone();
        let owned: Vec<String> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in owned {
            self.objects.remove(&p);
        }
        if gone["kind"] == "PersistentVolumeClaim"
            && let Some(mut pv) = self.objects.get(PV).cloned()
            && pv["spec"]["claimRef"]["uid"] == uid
        {
            pv["status"]["phase"] = json!("Released");
            if pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete" {
                self.objects.remove(PV);
                self.volumes_deleted += 1;
            } else {
                self.put(PV, pv);
            }
        }
    }

    /// What the controllers do after each request.
    fn reconcile(&mut self) {
        self.bind();
        // The Deployment's pods follow its replicas.
        if let Some(d) = self.objects.get(DEPLOYMENT).cloned() {
            let pod = "/api/v1/namespaces/fate/pods/mysql-6d47c7894-7kfcz";
            let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
            if replicas == 0 {
                self.objects.remove(pod);
            } else if !self.objects.contains_key(pod) {
                self.put(
                    pod,
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mysql-6d47c7894-7kfcz", "namespace": "fate",
                        "uid": format!("pod-{}", self.version), "labels": {"app": "mysql"},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "mysql-6d47c7894", "uid": "rs-uid"}]}}),
                );
            }
        }
        // The StatefulSet's pod runs once its claim is bound.
        if let Some(mut sts) = self.objects.get(STATEFULSET).cloned() {
            let pod = "/api/v1/namespaces/fate/pods/mysql-0";
            if !self.objects.contains_key(pod) {
                let labels = sts["spec"]["template"]["metadata"]["labels"].clone();
                self.put(
                    pod,
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mysql-0", "namespace": "fate",
                        "uid": format!("pod-{}", self.version), "labels": labels,
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "mysql", "uid": sts["metadata"]["uid"]}]}}),
                );
            }
            let bound = self
                .objects
                .get(NEW_CLAIM)
                .is_some_and(|c| c["status"]["phase"] == "Bound");
            let status = json!({"observedGeneration": sts["metadata"]["generation"], "replicas": 1,
                "readyReplicas": i32::from(bound), "currentReplicas": 1, "updatedReplicas": 1});
            if sts["status"] != status {
                sts["status"] = status;
                self.put(STATEFULSET, sts);
            }
        }
        // The Deployment controller writes status after everything: the
        // resourceVersion the client read a moment ago is stale again.
        if let Some(mut d) = self.objects.get(DEPLOYMENT).cloned() {
            d["status"]["observedGeneration"] = d["metadata"]["generation"].clone();
            self.put(DEPLOYMENT, d);
        }
    }

    /// A claim that names a volume binds it when the volume is free (or
    /// already its own).
    fn bind(&mut self) {
        for claim_path in [OLD_CLAIM, NEW_CLAIM] {
            let (Some(mut claim), Some(mut pv)) = (
                self.objects.get(claim_path).cloned(),
                self.objects.get(PV).cloned(),
            ) else {
                continue;
            };
            if claim["spec"]["volumeName"] != "pv-mysql" || claim["status"]["phase"] == "Bound" {
                continue;
            }
            let uid = claim["metadata"]["uid"].clone();
            let holder = &pv["spec"]["claimRef"]["uid"];
            if !holder.is_null() && holder != &uid {
                continue;
            }
            pv["spec"]["claimRef"] = json!({"kind": "PersistentVolumeClaim", "namespace": "fate",
                "name": claim["metadata"]["name"], "uid": uid});
            pv["status"]["phase"] = json!("Bound");
            self.put(PV, pv);
            claim["status"]["phase"] = json!("Bound");
            self.put(claim_path, claim);
        }
    }
}

fn item_path(object: &Value) -> String {
    let name = object["metadata"]["name"].as_str().unwrap();
    let ns = object["metadata"]["namespace"].as_str();
    let plural = match object["kind"].as_str().unwrap() {
        "PersistentVolume" => return format!("/api/v1/persistentvolumes/{name}"),
        "PersistentVolumeClaim" => "persistentvolumeclaims",
        "Pod" => "pods",
        "Service" => "services",
        "Deployment" => {
            return format!(
                "/apis/apps/v1/namespaces/{}/deployments/{name}",
                ns.unwrap()
            );
        }
        "StatefulSet" => {
            return format!(
                "/apis/apps/v1/namespaces/{}/statefulsets/{name}",
                ns.unwrap()
            );
        }
        "ReplicaSet" => {
            return format!(
                "/apis/apps/v1/namespaces/{}/replicasets/{name}",
                ns.unwrap()
            );
        }
        other => panic!("kind {other}"),
    };
    format!("/api/v1/namespaces/{}/{plural}/{name}", ns.unwrap())
}

/// A kube client whose every request the fake answers.
fn client(fake: Arc<Mutex<Fake>>) -> kube::Client {
    let service = tower::service_fn(move |request: Request<Body>| {
        let fake = fake.clone();
        async move {
            let method = request.method().to_string();
            let path = request.uri().path().to_string();
            let query = request.uri().query().unwrap_or("").to_string();
            let body = http_body_util::BodyExt::collect(request.into_body())
                .await
                .unwrap()
                .to_bytes();
            let (code, reply) = {
                let mut fake = fake.lock().unwrap();
                fake.log.push(format!("{method} {path}"));
                let answer = fake.handle(&method, &path, &query, &body);
                fake.reconcile();
                answer
            };
            Ok::<_, Infallible>(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            )
        }
    });
    kube::Client::new(service, "default")
}

async fn run(fake: &Arc<Mutex<Fake>>, mode: Mode) -> (Ended, Vec<String>) {
    let client = client(fake.clone());
    let target = apply::target(&client, "fate", "mysql").await.unwrap();
    let mut lines = Vec::new();
    let ended = apply::run(&client, "fate", "mysql", &target, mode, &mut |l| {
        lines.push(l)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", fake.lock().unwrap().log));
    (ended, lines)
}

fn get(fake: &Arc<Mutex<Fake>>, path: &str) -> Option<Value> {
    fake.lock().unwrap().objects.get(path).cloned()
}

#[tokio::test(start_paused = true)]
async fn migrate_and_its_rollback_each_finish_in_one_run_while_status_writes_move_the_resource_version()
 {
    let fake = Arc::new(Mutex::new(Fake::recorded()));

    let (ended, lines) = run(&fake, Mode::Migrate).await;
    assert_eq!(ended, Ended::Migrated);
    let steps: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("step: "))
        .collect();
    assert_eq!(
        steps,
        [
            "begin",
            "retain pv-mysql",
            "scale-down",
            "delete-claim mysql-data",
            "free pv-mysql",
            "create-claim data-mysql-0",
            "create-service mysql-headless",
            "create-statefulset"
        ]
    );
    let pv = get(&fake, PV).expect("the volume is kept");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["claimRef"]["name"], "data-mysql-0");
    assert_eq!(get(&fake, NEW_CLAIM).unwrap()["status"]["phase"], "Bound");
    assert_eq!(
        get(&fake, STATEFULSET).unwrap()["status"]["readyReplicas"],
        1
    );
    let d = get(&fake, DEPLOYMENT).unwrap();
    assert_eq!(d["spec"]["replicas"], 0);
    let journal: Value =
        serde_json::from_str(d["metadata"]["annotations"][JOURNAL].as_str().unwrap()).unwrap();
    assert_eq!(journal["done"].as_array().unwrap().len(), 7, "{journal}");

    let (ended, _) = run(&fake, Mode::Rollback).await;
    assert_eq!(ended, Ended::RolledBack);
    let pv = get(&fake, PV).expect("the volume is kept");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(pv["spec"]["claimRef"]["name"], "mysql-data");
    assert_eq!(get(&fake, OLD_CLAIM).unwrap()["status"]["phase"], "Bound");
    assert!(get(&fake, STATEFULSET).is_none() && get(&fake, NEW_CLAIM).is_none());
    let d = get(&fake, DEPLOYMENT).unwrap();
    assert_eq!(d["spec"]["replicas"], 1);
    assert!(d["metadata"]["annotations"][JOURNAL].is_null());

    let fake = fake.lock().unwrap();
    assert_eq!(fake.volumes_deleted, 0);
    let refused: Vec<&String> = fake
        .log
        .iter()
        .filter(|l| l.starts_with("409") || l.starts_with("422"))
        .collect();
    assert!(
        refused.is_empty(),
        "no write is guarded by what status writes move: {refused:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_person_scaling_the_deployment_meanwhile_stops_the_step_with_what_changed() {
    let mut recorded = Fake::recorded();
    // Begun and Retain done; then someone scales to 3 before scale-down.
    let deployment = recorded.objects.get_mut(DEPLOYMENT).unwrap();
    deployment["metadata"]["annotations"][JOURNAL] = json!(
        r#"{"replicas":1,"moves":[{"oldClaim":"mysql-data","newClaim":"data-mysql-0","volume":"pv-mysql","reclaimPolicy":"Delete","oldSpec":{"volumeName":"pv-mysql"}}],"service":"mysql-headless","done":["retain pv-mysql"]}"#
    );
    recorded.objects.get_mut(PV).unwrap()["spec"]["persistentVolumeReclaimPolicy"] =
        json!("Retain");
    let fake = Arc::new(Mutex::new(recorded));
    let client = client(fake.clone());
    let target = apply::target(&client, "fate", "mysql").await.unwrap();
    let observed = apply::observe(&client, "fate", "mysql", &target)
        .await
        .unwrap();
    let step = upgrade_guard::convert::migrate::next(&target, &observed, Mode::Migrate).unwrap();
    assert_eq!(step.name(), "scale-down");
    fake.lock().unwrap().objects.get_mut(DEPLOYMENT).unwrap()["spec"]["replicas"] = json!(3);
    let err = apply::execute(&client, "fate", &step, &observed)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Deployment fate/mysql changed while the step ran: spec.replicas is now 3 (the step read 1); nothing was written, run migrate again to plan from what is there"
    );
    assert_eq!(get(&fake, DEPLOYMENT).unwrap()["spec"]["replicas"], 3);
}
