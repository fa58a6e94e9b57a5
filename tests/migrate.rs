//! The migration planner against an in-memory cluster that binds claims to
//! volumes as Kubernetes does (claimRef name and UID): interrupted after any
//! step it finishes the same, repeated it changes nothing, rolled back from
//! any step it restores the original, and no volume is ever lost.

mod common;

use std::collections::BTreeMap;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, Service,
};
use serde_json::json;
use upgrade_guard::convert::migrate::{JOURNAL, Journal, Mode, Observed, Step, Target, next};
use upgrade_guard::manifest;

#[derive(Clone, Debug)]
struct Cluster {
    deployment: Option<Deployment>,
    deployment_pods: usize,
    statefulset: Option<StatefulSet>,
    statefulset_pods: usize,
    service: Option<Service>,
    /// Claims and their UIDs.
    claims: BTreeMap<String, (PersistentVolumeClaim, u32)>,
    /// Volumes and the (claim name, UID) they are bound to.
    volumes: BTreeMap<String, (PersistentVolume, Option<(String, u32)>)>,
    next_uid: u32,
}

const NS: &str = "fate";

fn target_and_cluster() -> (Target, Cluster) {
    let (target, cluster) = component("database.yaml", "mysql");
    assert_eq!(target.claims[0].0, "mysql-data");
    assert!(
        target.service.is_some(),
        "no headless Service existed: one is made"
    );
    (target, cluster)
}

/// A component of the platform: its Deployment, each claim bound to a
/// volume of its own (the one it names, else `pvc-7f3a` for mysql-data,
/// `pv-<claim>` otherwise).
fn component(file: &str, name: &str) -> (Target, Cluster) {
    let text = std::fs::read_to_string(fixture(&format!("convert/{file}"))).unwrap();
    let manifests = manifest::parse(&text, file).unwrap();
    let of_kind = |kind: &'static str| manifests.iter().filter(move |m| m.value["kind"] == kind);
    let pv_of = |claim: &str| {
        let named = manifests
            .iter()
            .find(|m| m.value["metadata"]["name"] == claim);
        match named.and_then(|m| m.value["spec"]["volumeName"].as_str()) {
            Some(own) => own.to_string(),
            None if claim == "mysql-data" => "pvc-7f3a".to_string(),
            None => format!("pv-{claim}"),
        }
    };
    let pvs = of_kind("PersistentVolumeClaim")
        .map(|m| {
            let claim = m.value["metadata"]["name"].as_str().unwrap().to_string();
            (claim.clone(), pv_of(&claim))
        })
        .collect();
    let converted = upgrade_guard::convert::convert(&manifests, &pvs).unwrap();
    let deployment: Deployment =
        serde_json::from_value(of_kind("Deployment").next().unwrap().value.clone()).unwrap();
    let services: Vec<Service> = of_kind("Service")
        .map(|m| serde_json::from_value(m.value.clone()).unwrap())
        .collect();
    let existing: Vec<String> = services
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    let target = Target::of(&deployment, &converted.objects, &existing).unwrap();
    let mut claims = BTreeMap::new();
    let mut volumes = BTreeMap::new();
    for (uid, m) in of_kind("PersistentVolumeClaim").enumerate() {
        let uid = uid as u32 + 1;
        let mut claim: PersistentVolumeClaim = serde_json::from_value(m.value.clone()).unwrap();
        let name = claim.metadata.name.clone().unwrap();
        claim.spec.as_mut().unwrap().volume_name = Some(pv_of(&name));
        let pv: PersistentVolume =
            serde_json::from_value(json!({"metadata": {"name": pv_of(&name)},
            "spec": {"persistentVolumeReclaimPolicy": "Delete"}}))
            .unwrap();
        volumes.insert(pv_of(&name), (pv, Some((name.clone(), uid))));
        claims.insert(name, (claim, uid));
    }
    let next_uid = claims.len() as u32 + 1;
    let cluster = Cluster {
        deployment: Some(deployment),
        deployment_pods: 1,
        statefulset: None,
        statefulset_pods: 0,
        service: services
            .into_iter()
            .find(|s| s.metadata.name.as_deref() == Some(name)),
        claims,
        volumes,
        next_uid,
    };
    (target, cluster)
}

impl Cluster {
    fn observed(&self) -> Observed {
        Observed {
            deployment: self.deployment.clone(),
            deployment_pods: self.deployment_pods,
            statefulset: self.statefulset.clone(),
            statefulset_pods: self.statefulset_pods,
            service: self.service.clone(),
            claims: self
                .claims
                .iter()
                .map(|(k, (c, _))| (k.clone(), c.clone()))
                .collect(),
            volumes: self
                .volumes
                .iter()
                .map(|(k, (v, bound))| {
                    let mut v = v.clone();
                    v.spec.as_mut().unwrap().claim_ref =
                        bound.as_ref().map(|(name, uid)| ObjectReference {
                            name: Some(name.clone()),
                            namespace: Some(NS.into()),
                            uid: Some(uid.to_string()),
                            ..Default::default()
                        });
                    (k.clone(), v)
                })
                .collect(),
        }
    }

    fn journal(&self) -> Option<Journal> {
        let d = self.deployment.as_ref()?;
        d.metadata
            .annotations
            .as_ref()?
            .get(JOURNAL)
            .map(|t| serde_json::from_str(t).unwrap())
    }

    fn set_journal(&mut self, journal: Option<&Journal>) {
        let annotations = self
            .deployment
            .as_mut()
            .unwrap()
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        match journal {
            Some(j) => annotations.insert(JOURNAL.into(), serde_json::to_string(j).unwrap()),
            None => annotations.remove(JOURNAL),
        };
    }

    fn bound(&self, claim: &str) -> bool {
        let Some((c, uid)) = self.claims.get(claim) else {
            return false;
        };
        let volume = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        self.volumes
            .get(&volume)
            .is_some_and(|(_, b)| b.as_ref() == Some(&(claim.to_string(), *uid)))
    }

    fn create_claim(&mut self, claim: &PersistentVolumeClaim) {
        let name = claim.metadata.name.clone().unwrap();
        let uid = self.next_uid;
        self.next_uid += 1;
        let volume = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap();
        // The PV controller binds a claim only to a volume with no claimRef.
        let (_, bound) = self.volumes.get_mut(&volume).unwrap();
        if bound.is_none() {
            *bound = Some((name.clone(), uid));
        }
        self.claims.insert(name, (claim.clone(), uid));
    }

    /// What the executor and the cluster's controllers do.
    fn apply(&mut self, step: &Step) {
        let volumes_before = self.volumes.len();
        match step {
            Step::Begin(j) => self.set_journal(Some(j)),
            Step::RetainVolume { volume } | Step::RestoreReclaim { volume, .. } => {
                let policy = match step {
                    Step::RestoreReclaim { policy, .. } => policy.clone(),
                    _ => "Retain".into(),
                };
                let pv = &mut self.volumes.get_mut(volume).unwrap().0;
                pv.spec.as_mut().unwrap().persistent_volume_reclaim_policy = Some(policy);
            }
            Step::ScaleDown => {
                self.deployment
                    .as_mut()
                    .unwrap()
                    .spec
                    .as_mut()
                    .unwrap()
                    .replicas = Some(0)
            }
            Step::ScaleUp(n) => {
                self.deployment
                    .as_mut()
                    .unwrap()
                    .spec
                    .as_mut()
                    .unwrap()
                    .replicas = Some(*n)
            }
            Step::Wait(_) => {
                // Time passes: pods follow their controllers.
                self.deployment_pods = self.deployment.as_ref().map_or(0, |d| {
                    d.spec.as_ref().unwrap().replicas.unwrap_or(1) as usize
                });
                let sts_ready = match &self.statefulset {
                    Some(s) => {
                        let name = s.metadata.name.clone().unwrap();
                        let claims_bound = s
                            .spec
                            .as_ref()
                            .unwrap()
                            .volume_claim_templates
                            .iter()
                            .flatten()
                            .all(|t| {
                                self.bound(&format!(
                                    "{}-{name}-0",
                                    t.metadata.name.as_deref().unwrap()
                                ))
                            });
                        if claims_bound {
                            s.spec.as_ref().unwrap().replicas.unwrap_or(1)
                        } else {
                            0
                        }
                    }
                    None => 0,
                };
                self.statefulset_pods = sts_ready as usize;
                if let Some(s) = self.statefulset.as_mut() {
                    s.status = Some(
                        serde_json::from_value(
                            json!({"replicas": sts_ready, "readyReplicas": sts_ready}),
                        )
                        .unwrap(),
                    );
                }
            }
            Step::DeleteClaim { claim } => {
                // The volume keeps its claimRef (name and the old UID).
                self.claims.remove(claim);
            }
            Step::FreeVolume { volume } => self.volumes.get_mut(volume).unwrap().1 = None,
            Step::CreateClaim(c) | Step::RestoreClaim(c) => self.create_claim(c),
            Step::CreateService(s) => self.service = Some(s.clone()),
            Step::DeleteService { .. } => self.service = None,
            Step::CreateStatefulSet(s) => self.statefulset = Some((**s).clone()),
            Step::DeleteStatefulSet => self.statefulset = None,
            Step::DeleteDeployment => self.deployment = None,
            Step::EndJournal => self.set_journal(None),
            Step::Migrated | Step::Finished => {}
        }
        assert_eq!(
            self.volumes.len(),
            volumes_before,
            "a volume was lost at {step:?}"
        );
        if !matches!(
            step,
            Step::Begin(_)
                | Step::Wait(_)
                | Step::EndJournal
                | Step::DeleteDeployment
                | Step::Migrated
                | Step::Finished
        ) && let Some(mut j) = self.journal()
        {
            j.done.push(step.name());
            self.set_journal(Some(&j));
        }
        // The data is safe at every moment: a volume not Retained is bound.
        for (name, (v, bound)) in &self.volumes {
            let retained = v
                .spec
                .as_ref()
                .unwrap()
                .persistent_volume_reclaim_policy
                .as_deref()
                == Some("Retain");
            let in_use = bound
                .as_ref()
                .is_some_and(|(c, uid)| self.claims.get(c).is_some_and(|(_, u)| u == uid));
            assert!(
                retained || in_use,
                "volume {name} could be reclaimed after {step:?}"
            );
        }
    }

    /// The state a user cares about, without UIDs or the journal's history.
    fn summary(&self) -> String {
        let d = self
            .deployment
            .as_ref()
            .map(|d| (d.spec.as_ref().unwrap().replicas, self.journal().is_some()));
        let claims: Vec<(String, bool)> = self
            .claims
            .keys()
            .map(|c| (c.clone(), self.bound(c)))
            .collect();
        let volumes: Vec<(String, Option<String>)> = self
            .volumes
            .iter()
            .map(|(k, (v, _))| {
                (
                    k.clone(),
                    v.spec
                        .as_ref()
                        .unwrap()
                        .persistent_volume_reclaim_policy
                        .clone(),
                )
            })
            .collect();
        format!(
            "deployment {d:?}; statefulset {} ready {}; service {}; claims {claims:?}; volumes {volumes:?}",
            self.statefulset.is_some(),
            self.statefulset_pods,
            self.service.is_some()
        )
    }
}

/// Runs the planner until its last step; returns the steps taken.
fn run(target: &Target, cluster: &mut Cluster, mode: Mode) -> Vec<String> {
    let mut steps = Vec::new();
    for _ in 0..100 {
        let step = next(target, &cluster.observed(), mode).unwrap();
        let last = matches!(step, Step::Migrated | Step::Finished | Step::EndJournal);
        steps.push(step.name());
        cluster.apply(&step);
        if last {
            return steps;
        }
    }
    panic!("the migration never finished: {steps:?}");
}

#[test]
fn a_migration_moves_the_volume_to_the_statefulset_step_by_step() {
    let (target, mut cluster) = target_and_cluster();
    let steps = run(&target, &mut cluster, Mode::Migrate);
    assert_eq!(
        steps,
        [
            "begin",
            "retain pvc-7f3a",
            "scale-down",
            "wait",
            "delete-claim mysql-data",
            "free pvc-7f3a",
            "create-claim data-mysql-0",
            "create-service mysql-headless",
            "create-statefulset",
            "wait",
            "migrated"
        ]
    );
    assert!(
        cluster.bound("data-mysql-0"),
        "the new claim holds the old volume"
    );
    assert_eq!(cluster.statefulset_pods, 1);
    let journal = cluster.journal().unwrap();
    assert_eq!(journal.replicas, 1);
    assert_eq!(journal.moves[0].reclaim_policy, "Delete");
    assert_eq!(
        journal.done.first().map(String::as_str),
        Some("retain pvc-7f3a")
    );
    // Run again: nothing changes.
    let before = cluster.summary();
    assert_eq!(run(&target, &mut cluster, Mode::Migrate), ["migrated"]);
    assert_eq!(cluster.summary(), before);
    // --finish deletes the Deployment, and only it.
    assert_eq!(
        run(&target, &mut cluster, Mode::Finish),
        ["delete-deployment", "finished"]
    );
    assert!(cluster.deployment.is_none() && cluster.bound("data-mysql-0"));
}

#[test]
fn interrupted_after_any_step_it_finishes_the_same_without_repeating_one() {
    let (target, mut whole) = target_and_cluster();
    let all = run(&target, &mut whole, Mode::Migrate);
    for stop in 0..all.len() {
        let (_, mut cluster) = target_and_cluster();
        for _ in 0..stop {
            let step = next(&target, &cluster.observed(), Mode::Migrate).unwrap();
            cluster.apply(&step);
        }
        // A new run, knowing nothing but the cluster.
        let rest = run(&target, &mut cluster, Mode::Migrate);
        assert_eq!(rest, all[stop..], "interrupted after {stop} steps");
        assert_eq!(cluster.summary(), whole.summary());
    }
}

#[test]
fn a_rollback_from_any_step_restores_the_deployment_and_its_claim() {
    let (target, original) = target_and_cluster();
    let forward = run(&target, &mut original.clone(), Mode::Migrate).len();
    for stop in 0..=forward {
        let mut cluster = original.clone();
        for _ in 0..stop {
            let step = next(&target, &cluster.observed(), Mode::Migrate).unwrap();
            cluster.apply(&step);
        }
        if cluster.journal().is_none() {
            let err = next(&target, &cluster.observed(), Mode::Rollback).unwrap_err();
            assert!(err.0.contains("nothing to roll back"), "{err}");
            continue;
        }
        run(&target, &mut cluster, Mode::Rollback);
        assert_eq!(
            cluster.summary(),
            original.summary(),
            "rolled back after {stop} steps"
        );
        assert!(
            cluster.bound("mysql-data"),
            "after {stop}: the old claim holds the volume again"
        );
    }
}

#[test]
fn an_unbound_claim_or_a_deleted_deployment_is_refused_clearly() {
    let (target, mut cluster) = target_and_cluster();
    cluster
        .claims
        .get_mut("mysql-data")
        .unwrap()
        .0
        .spec
        .as_mut()
        .unwrap()
        .volume_name = None;
    let err = next(&target, &cluster.observed(), Mode::Migrate).unwrap_err();
    assert_eq!(
        err.0,
        "claim mysql-data is not bound to a PersistentVolume yet"
    );

    let (target, mut cluster) = target_and_cluster();
    run(&target, &mut cluster, Mode::Finish);
    let err = next(&target, &cluster.observed(), Mode::Rollback).unwrap_err();
    assert!(err.0.contains("nothing to roll back to"), "{err}");
}

#[test]
fn every_component_of_the_platform_comes_out_with_its_volumes_reattached() {
    // FATE 1.7 → 1.8: the database (one claim) and the node manager (two
    // claims, a config map, a headless Service already there).
    for (file, name, volumes) in [
        ("database.yaml", "mysql", vec![("data-mysql-0", "pvc-7f3a")]),
        (
            "two-claims.yaml",
            "nodemanager",
            vec![
                ("data-nodemanager-0", "pvc-0a1b2c3d"),
                ("logs-nodemanager-0", "pv-nm-logs"),
            ],
        ),
    ] {
        let (target, mut cluster) = component(file, name);
        let before = cluster.volumes.len();
        let steps = run(&target, &mut cluster, Mode::Migrate);
        assert_eq!(
            steps.last().map(String::as_str),
            Some("migrated"),
            "{name}: {steps:?}"
        );
        assert_eq!(cluster.volumes.len(), before, "{name}: no volume deleted");
        for (claim, volume) in volumes {
            assert!(cluster.bound(claim), "{name}: {claim} holds its volume");
            assert_eq!(
                cluster.claims[claim]
                    .0
                    .spec
                    .as_ref()
                    .unwrap()
                    .volume_name
                    .as_deref(),
                Some(volume)
            );
        }
        assert_eq!(cluster.statefulset_pods, 1, "{name}: Ready on the old data");
    }
}
