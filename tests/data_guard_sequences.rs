//! The data guard's invariant over sequences of requests: from a StatefulSet
//! at 1.7.0 whose pods served its claims at 1.7.0, any sequence of requests a
//! user who may not force can make (workload UPDATE, CREATE, DELETE with
//! orphan, relabel; pod CREATE by a controller or by hand, with any owner,
//! any claim, the version in a container, an init container or a second
//! container; images edited in place; ephemeral containers; pods becoming
//! Ready, which records their version on the claims) never admits a pod on
//! a claim at a version that skips a release, leaves the track or cannot be
//! read, from the version the claim last served. Downgrades are left out of
//! the oracle: whether one is a rollback depends on the record, which is
//! what is under test.

mod common;

use std::collections::BTreeMap;

use common::*;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use proptest::prelude::*;
use serde_json::{Value, json};
use upgrade_guard::claim::{SERVED, Served};
use upgrade_guard::decide::data::{judge_pod, served_after};
use upgrade_guard::decide::{self, Change, Overrides, Requester, Snapshot};
use upgrade_guard::policy::{PathOutcome, PolicySet, Version, repository};
use upgrade_guard::workload::{Workload, pod_images};

const POD: &str = include_str!("data/pods/pod-db-0.json");
const VERSIONS: [&str; 7] = ["1.6.0", "1.7.0", "1.8.0", "1.9.0", "2.0.0", "latest", "1.8"];
const PODS: [&str; 3] = ["db-0", "db-1", "x-0"];
const CLAIMS: [&str; 2] = ["data-db-0", "data-db-1"];

fn policies() -> PolicySet {
    let text = include_str!("../policies/semver-db.yaml");
    PolicySet::new(PolicySet::parse(text, "semver-db.yaml").unwrap()).unwrap()
}

fn image(version: &str) -> String {
    format!("registry.example/db:{version}")
}

fn statefulset(version: &str) -> Workload {
    of(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "shop", "uid": "sts-uid", "generation": 1,
            "labels": {"app.kubernetes.io/name": "db"}},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "db"}},
            "serviceName": "db", "replicas": 2,
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": "db"}},
                "spec": {"containers": [{"name": "db", "image": image(version)}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}}],
        },
        "status": {"replicas": 2, "readyReplicas": 2, "currentReplicas": 2, "updatedReplicas": 2,
            "currentRevision": "r1", "updateRevision": "r1", "observedGeneration": 1},
    }))
}

/// Who made a pod.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Nobody,
    StatefulSet,
    ReplicaSet,
}

/// Where in the pod the version goes.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Container,
    Init,
    Second,
}

fn pod(name: &str, claim: &str, version: &str, owner: Owner, slot: Slot) -> Pod {
    let mut p: Value = serde_json::from_str(POD).unwrap();
    p["metadata"]["name"] = json!(name);
    p["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = json!(claim);
    p["spec"]["initContainers"] = json!([]);
    let at = image(version);
    match slot {
        Slot::Container => p["spec"]["containers"][0]["image"] = json!(at),
        Slot::Init => {
            p["spec"]["containers"][0]["image"] = json!("busybox:1.36");
            p["spec"]["initContainers"] = json!([{"name": "init", "image": at}]);
        }
        Slot::Second => {
            p["spec"]["containers"][0]["image"] = json!("registry.example/decoy:1.7.0");
            p["spec"]["containers"][1]["image"] = json!(at);
        }
    }
    match owner {
        Owner::Nobody => p["metadata"]["ownerReferences"] = json!([]),
        Owner::StatefulSet => {}
        Owner::ReplicaSet => {
            p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "app-5c9f", "uid": "rs", "controller": true}]);
            p["metadata"]["labels"]["pod-template-hash"] = json!("5c9f");
        }
    }
    serde_json::from_value(p).unwrap()
}

fn with_status_ready(mut p: Pod) -> Pod {
    p.status = Some(
        serde_json::from_value(json!({"conditions": [{"type": "Ready", "status": "True"}]}))
            .unwrap(),
    );
    p
}

#[derive(Debug, Clone)]
enum Op {
    SetImage(&'static str),
    Relabel,
    DeleteOrphan,
    Create(&'static str),
    /// The StatefulSet controller makes pod `db-i` from the template.
    ControllerPod(usize),
    UserPod {
        pod: usize,
        claim: usize,
        version: &'static str,
        owner: Owner,
        slot: Slot,
    },
    EditImage(usize, &'static str),
    Debug(usize, &'static str),
    DeletePod(usize),
    Ready(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let v = || prop::sample::select(VERSIONS.to_vec());
    let owner = prop_oneof![
        Just(Owner::Nobody),
        Just(Owner::StatefulSet),
        Just(Owner::ReplicaSet)
    ];
    let slot = prop_oneof![Just(Slot::Container), Just(Slot::Init), Just(Slot::Second)];
    prop_oneof![
        v().prop_map(Op::SetImage),
        Just(Op::Relabel),
        Just(Op::DeleteOrphan),
        v().prop_map(Op::Create),
        (0usize..2).prop_map(Op::ControllerPod),
        (0usize..3, 0usize..2, v(), owner, slot).prop_map(|(pod, claim, version, owner, slot)| {
            Op::UserPod {
                pod,
                claim,
                version,
                owner,
                slot,
            }
        }),
        (0usize..3, v()).prop_map(|(p, v)| Op::EditImage(p, v)),
        (0usize..3, v()).prop_map(|(p, v)| Op::Debug(p, v)),
        (0usize..3).prop_map(Op::DeletePod),
        (0usize..3).prop_map(Op::Ready),
    ]
}

struct World {
    sts: Option<Workload>,
    pods: BTreeMap<String, Pod>,
    claims: BTreeMap<String, Option<String>>,
}

impl World {
    fn start() -> World {
        let served =
            Served::read(r#"{"policy":"semver-db","versions":{"db":{"version":"1.7.0"}}}"#)
                .unwrap()
                .text();
        World {
            sts: Some(statefulset("1.7.0")),
            pods: (0..2)
                .map(|i| {
                    let name = format!("db-{i}");
                    let p = pod(
                        &name,
                        CLAIMS[i],
                        "1.7.0",
                        Owner::StatefulSet,
                        Slot::Container,
                    );
                    (name, with_status_ready(p))
                })
                .collect(),
            claims: CLAIMS
                .iter()
                .map(|c| (c.to_string(), Some(served.clone())))
                .collect(),
        }
    }

    fn cluster(&self) -> Snapshot {
        let mut s = Snapshot::default();
        if let Some(w) = &self.sts {
            s.insert_workload(w.clone());
        }
        for p in self.pods.values() {
            s.insert_pod(p.clone());
        }
        for (name, served) in &self.claims {
            let mut c = json!({"metadata": {"name": name, "namespace": "shop"},
                "spec": {"accessModes": ["ReadWriteOnce"]}});
            if let Some(text) = served {
                c["metadata"]["annotations"] = json!({SERVED: text});
            }
            s.insert_claim(&serde_json::from_value::<PersistentVolumeClaim>(c).unwrap());
        }
        s
    }

    /// A workload change as the webhooks take it: mutation, then
    /// validation of what the mutation made; stored when both allow.
    fn workload(&mut self, old: Option<Workload>, new: Workload) {
        let change = match &old {
            Some(old) => Change::update(old.clone(), new.clone()),
            None => Change::create(new.clone()),
        };
        let user = Requester {
            is_self: false,
            overrides: Overrides::Denied {
                user: "mallory".into(),
                namespace: "shop".into(),
            },
        };
        let cluster = self.cluster();
        let verdict = decide::decide_as(&change, &policies(), &cluster, now(), &user);
        if !verdict.allowed {
            return;
        }
        let stored = decide::mutation::patched(&new, &verdict.patch).unwrap();
        let check = match old {
            Some(old) => Change::update(old, stored.clone()),
            None => Change::create(stored.clone()),
        };
        if decide::decide_as(&check, &policies(), &cluster, now(), &user).allowed {
            self.sts = Some(stored);
        }
    }

    /// A pod request; the oracle checks every admitted one.
    fn admit(&mut self, old: Option<&Pod>, new: Pod) -> Result<(), String> {
        let verdict = judge_pod(old, &new, &policies(), &self.cluster());
        if !verdict.allowed {
            return Ok(());
        }
        self.oracle(&new)?;
        let mut new = new;
        new.status = None;
        self.pods.insert(new.metadata.name.clone().unwrap(), new);
        Ok(())
    }

    fn oracle(&self, pod: &Pod) -> Result<(), String> {
        let policies = policies();
        let policy = policies.by_id("semver-db").unwrap();
        let spec = pod.spec.as_ref().unwrap();
        for claim in upgrade_guard::claim::pod_claims(spec) {
            let Some(Some(text)) = self.claims.get(claim) else {
                continue;
            };
            let served = Served::read(text).unwrap();
            let last = &served.versions["db"].version;
            for (_, image) in pod_images(spec) {
                let image = image.unwrap();
                if repository(image) != "db" {
                    continue;
                }
                let tag = image.rsplit(':').next().unwrap();
                let ok = match (last.parse::<Version>(), tag.parse::<Version>()) {
                    (Ok(from), Ok(to)) if to <= from => true,
                    (Ok(from), Ok(to)) => {
                        !matches!(policy.judge_path(&from, &to, None), PathOutcome::Refused(_))
                    }
                    _ => tag == last,
                };
                if !ok {
                    return Err(format!(
                        "pod {:?} admitted at {tag} on {claim}, last served {last}",
                        pod.metadata.name
                    ));
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::SetImage(v) => {
                if let Some(old) = self.sts.clone() {
                    let new = with(
                        &old,
                        "/spec/template/spec/containers/0/image",
                        json!(image(v)),
                    );
                    self.workload(Some(old), new);
                }
            }
            Op::Relabel => {
                if let Some(old) = self.sts.clone() {
                    let new = with(&old, "/metadata/labels", json!({"app": "other"}));
                    self.workload(Some(old), new);
                }
            }
            Op::DeleteOrphan => self.sts = None,
            Op::Create(v) => {
                if self.sts.is_none() {
                    self.workload(None, statefulset(v));
                }
            }
            Op::ControllerPod(i) => {
                let Some(sts) = &self.sts else { return Ok(()) };
                let name = format!("db-{i}");
                let template = sts.template().unwrap().spec.as_ref().unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap();
                if self.pods.get(&name).is_some_and(|p| {
                    p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some(&template)
                }) {
                    return Ok(());
                }
                // The controller replaces an outdated pod: delete, create.
                self.pods.remove(&name);
                let version = template.rsplit(':').next().unwrap().to_string();
                let p = pod(
                    &name,
                    CLAIMS[*i],
                    &version,
                    Owner::StatefulSet,
                    Slot::Container,
                );
                self.admit(None, p)?;
            }
            Op::UserPod {
                pod: at,
                claim,
                version,
                owner,
                slot,
            } => {
                let name = PODS[*at];
                if !self.pods.contains_key(name) {
                    self.admit(None, pod(name, CLAIMS[*claim], version, *owner, *slot))?;
                }
            }
            Op::EditImage(at, v) => {
                if let Some(old) = self.pods.get(PODS[*at]).cloned() {
                    let mut new = old.clone();
                    new.spec.as_mut().unwrap().containers[0].image = Some(image(v));
                    self.admit(Some(&old), new)?;
                }
            }
            Op::Debug(at, v) => {
                if let Some(old) = self.pods.get(PODS[*at]).cloned() {
                    let mut new = old.clone();
                    new.spec.as_mut().unwrap().ephemeral_containers = Some(vec![
                        serde_json::from_value(json!({"name": "debug", "image": image(v)}))
                            .unwrap(),
                    ]);
                    self.admit(Some(&old), new)?;
                }
            }
            Op::DeletePod(at) => {
                self.pods.remove(PODS[*at]);
            }
            Op::Ready(at) => {
                let Some(p) = self.pods.get(PODS[*at]).cloned() else {
                    return Ok(());
                };
                let p = with_status_ready(p);
                let owner = self.sts.clone();
                // What the cache keeps: a debugging container serves no data.
                let mut cached = p.clone();
                cached.spec.as_mut().unwrap().ephemeral_containers = None;
                let spec = cached.spec.clone().unwrap();
                for claim in upgrade_guard::claim::pod_claims(&spec) {
                    let recorded = self.claims.get(claim).cloned().flatten();
                    if let Some(s) =
                        served_after(&cached, recorded.as_deref(), &policies(), owner.as_ref())
                    {
                        self.claims.insert(claim.to_string(), Some(s.text()));
                    }
                }
                self.pods.insert(PODS[*at].to_string(), p);
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn no_request_sequence_starts_a_pod_past_what_its_claim_served(ops in prop::collection::vec(op(), 1..16)) {
        let mut world = World::start();
        for op in &ops {
            if let Err(e) = world.apply(op) {
                return Err(TestCaseError::fail(format!("{e} after {ops:?}")));
            }
        }
    }
}

/// The generator reaches each route of the issue: the sequences below are
/// the routes, one each, and every one ends refused.
#[test]
fn each_route_is_refused_at_the_pod() {
    let routes: Vec<Vec<Op>> = vec![
        // A pod's image edited in place.
        vec![Op::EditImage(0, "1.9.0")],
        // Delete with orphan, delete the pods, create at a skipped release.
        vec![
            Op::DeleteOrphan,
            Op::DeletePod(0),
            Op::Create("1.9.0"),
            Op::ControllerPod(0),
        ],
        // A skipped release in an init container, in a second container.
        vec![
            Op::DeletePod(0),
            Op::UserPod {
                pod: 0,
                claim: 0,
                version: "1.9.0",
                owner: Owner::StatefulSet,
                slot: Slot::Init,
            },
        ],
        vec![
            Op::DeletePod(0),
            Op::UserPod {
                pod: 0,
                claim: 0,
                version: "1.9.0",
                owner: Owner::StatefulSet,
                slot: Slot::Second,
            },
        ],
        // Another workload (a Deployment's ReplicaSet) mounting the claim.
        vec![Op::UserPod {
            pod: 2,
            claim: 1,
            version: "2.0.0",
            owner: Owner::ReplicaSet,
            slot: Slot::Container,
        }],
        // An ephemeral container.
        vec![Op::Debug(1, "latest")],
        // Relabelled out of the policy, then a pod at a skipped release.
        vec![
            Op::Relabel,
            Op::DeletePod(1),
            Op::UserPod {
                pod: 1,
                claim: 1,
                version: "1.9.0",
                owner: Owner::StatefulSet,
                slot: Slot::Container,
            },
        ],
    ];
    for route in routes {
        let mut world = World::start();
        let before: Vec<String> = world.pods.keys().cloned().collect();
        for op in &route {
            world.apply(op).unwrap();
        }
        let started: Vec<(String, Vec<String>)> = world
            .pods
            .iter()
            .map(|(n, p)| {
                let images = pod_images(p.spec.as_ref().unwrap())
                    .filter_map(|(_, i)| i.cloned())
                    .collect();
                (n.clone(), images)
            })
            .collect();
        assert!(
            started.iter().all(|(_, images)| images
                .iter()
                .all(|i| i.ends_with("1.7.0") || !i.contains("/db:"))),
            "{route:?}: {started:?} (before: {before:?})"
        );
    }
}
