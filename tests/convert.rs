//! `upgrade-guard convert` on realistic manifests: each output is parsed
//! back with the k8s-openapi types and checked field by field.

mod common;

use std::process::Command;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use serde::de::DeserializeOwned;
use serde_json::Value;
use upgrade_guard::manifest;

struct Converted {
    code: i32,
    objects: Vec<Value>,
    stderr: String,
}

fn convert(file: &str, extra: &[&str]) -> Converted {
    let out = Command::new(env!("CARGO_BIN_EXE_upgrade-guard"))
        .arg("convert")
        .arg(fixture(&format!("convert/{file}")))
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    Converted {
        code: out.status.code().unwrap(),
        objects: manifest::parse(&stdout, "output")
            .unwrap()
            .into_iter()
            .map(|m| m.value)
            .collect(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn one<T: DeserializeOwned>(objects: &[Value], kind: &str, name: &str) -> T {
    let v = objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the output"));
    serde_json::from_value(v.clone()).unwrap()
}

fn count(objects: &[Value], kind: &str) -> usize {
    objects.iter().filter(|o| o["kind"] == kind).count()
}

#[test]
fn a_database_with_one_claim_becomes_a_statefulset_that_rebinds_its_volume() {
    let c = convert("database.yaml", &["--pv", "mysql-data=pvc-7f3a"]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    assert_eq!(
        (
            count(&c.objects, "Deployment"),
            count(&c.objects, "StatefulSet")
        ),
        (0, 1)
    );
    let sts: StatefulSet = one(&c.objects, "StatefulSet", "mysql");
    assert_eq!(sts.metadata.namespace.as_deref(), Some("fate"));
    assert_eq!(
        sts.metadata.labels.as_ref().unwrap()["app.kubernetes.io/part-of"],
        "fate"
    );
    let annotations = sts.metadata.annotations.clone().unwrap();
    assert_eq!(annotations.get("team").map(String::as_str), Some("data"));
    assert!(!annotations.contains_key("deployment.kubernetes.io/revision"));
    let spec = sts.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.selector.match_labels.unwrap()["app"], "mysql");
    assert_eq!(spec.service_name.as_deref(), Some("mysql-headless"));
    assert_eq!(
        spec.update_strategy.unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );
    let retention = spec.persistent_volume_claim_retention_policy.unwrap();
    assert_eq!(
        (
            retention.when_deleted.as_deref(),
            retention.when_scaled.as_deref()
        ),
        (Some("Retain"), Some("Retain"))
    );
    let pod = spec.template.spec.unwrap();
    assert!(pod.volumes.is_none(), "the claim volume became a template");
    assert_eq!(
        pod.containers[0].volume_mounts.as_ref().unwrap()[0].name,
        "data",
        "mounts unchanged"
    );
    let template = &spec.volume_claim_templates.unwrap()[0];
    assert_eq!(template.metadata.name.as_deref(), Some("data"));
    let t = template.spec.as_ref().unwrap();
    assert_eq!(t.storage_class_name.as_deref(), Some("fast-ssd"));
    assert_eq!(
        t.access_modes.as_deref(),
        Some(&["ReadWriteOnce".to_string()][..])
    );
    assert_eq!(
        t.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "20Gi"
    );

    // The claim that carries the data: StatefulSet naming, bound to the PV.
    assert_eq!(
        count(&c.objects, "PersistentVolumeClaim"),
        1,
        "the old claim is replaced"
    );
    let claim: PersistentVolumeClaim = one(&c.objects, "PersistentVolumeClaim", "data-mysql-0");
    let cs = claim.spec.unwrap();
    assert_eq!(cs.volume_name.as_deref(), Some("pvc-7f3a"));
    assert_eq!(cs.storage_class_name.as_deref(), Some("fast-ssd"));
    assert_eq!(claim.metadata.labels.unwrap()["app"], "mysql");

    let service: Service = one(&c.objects, "Service", "mysql-headless");
    let ss = service.spec.unwrap();
    assert_eq!(ss.cluster_ip.as_deref(), Some("None"));
    assert_eq!(ss.selector.unwrap()["app"], "mysql");
    assert_eq!(ss.ports.unwrap()[0].port, 3306);

    // The steps, in order, never deleting a PV.
    let steps: Vec<&str> = c
        .stderr
        .lines()
        .filter(|l| l.trim_start().starts_with(char::is_numeric))
        .collect();
    assert!(
        steps[0].contains("kubectl patch pv pvc-7f3a") && steps[0].contains("Retain"),
        "{steps:?}"
    );
    assert!(steps[1].contains("scale deployment/mysql --replicas=0"));
    assert!(steps[2].contains("delete pvc mysql-data"));
    assert!(steps[3].contains("/spec/claimRef"));
    assert!(!c.stderr.contains("delete pv "), "a PV is never deleted");
}

#[test]
fn two_claims_and_a_config_map_keep_the_config_map_and_reuse_the_headless_service() {
    // nm-data names its own volume; nm-logs's comes from --pv.
    let c = convert("two-claims.yaml", &["--pv", "nm-logs=pvc-9e8f7a6b"]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    let sts: StatefulSet = one(&c.objects, "StatefulSet", "nodemanager");
    let spec = sts.spec.unwrap();
    assert_eq!(
        spec.service_name.as_deref(),
        Some("nodemanager"),
        "the existing headless Service"
    );
    assert_eq!(count(&c.objects, "Service"), 1);
    let templates: Vec<String> = spec
        .volume_claim_templates
        .unwrap()
        .iter()
        .map(|t| t.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(templates, ["data", "logs"]);
    let volumes: Vec<String> = spec
        .template
        .spec
        .unwrap()
        .volumes
        .unwrap()
        .iter()
        .map(|v| v.name.clone())
        .collect();
    assert_eq!(
        volumes,
        ["conf", "scratch"],
        "configMap and emptyDir stay in the pod template"
    );
    for (name, pv) in [
        ("data-nodemanager-0", "pvc-0a1b2c3d"),
        ("logs-nodemanager-0", "pvc-9e8f7a6b"),
    ] {
        let claim: PersistentVolumeClaim = one(&c.objects, "PersistentVolumeClaim", name);
        assert_eq!(claim.spec.unwrap().volume_name.as_deref(), Some(pv));
    }
    assert_eq!(count(&c.objects, "ConfigMap"), 1);
    assert!(
        c.stderr
            .contains("emptyDir volume scratch is mounted at /data/scratch and looks like data"),
        "{}",
        c.stderr
    );
    // Every step names the real volume, and the volume stays known: it is
    // freed by name after the claim that named it is gone.
    for line in [
        "kubectl patch pv pvc-0a1b2c3d -p '{\"spec\":{\"persistentVolumeReclaimPolicy\":\"Retain\"}}'   # keep the data of claim nm-data when it goes",
        "kubectl -n fate delete pvc nm-data   # pvc-0a1b2c3d becomes Released; Retain keeps it",
        "kubectl patch pv pvc-0a1b2c3d --type json -p '[{\"op\":\"remove\",\"path\":\"/spec/claimRef\"}]'   # free it for data-nodemanager-0",
        "kubectl patch pv pvc-9e8f7a6b --type json -p '[{\"op\":\"remove\",\"path\":\"/spec/claimRef\"}]'   # free it for logs-nodemanager-0",
    ] {
        assert!(c.stderr.contains(line), "{line}\n{}", c.stderr);
    }
    assert!(
        !c.stderr.contains(" PV ") && !c.stderr.contains("$("),
        "{}",
        c.stderr
    );
}

#[test]
fn a_claim_whose_volume_cannot_be_known_stops_the_conversion() {
    let c = convert("two-claims.yaml", &[]);
    assert_eq!(c.code, 2);
    assert!(c.objects.is_empty(), "no plan that loses data");
    assert!(
        c.stderr.ends_with("two-claims.yaml: document 3: PersistentVolumeClaim fate/nm-logs names no volume (spec.volumeName), so the PersistentVolume that holds its data is not known here, and the new claim would get an empty one: give --pv nm-logs=PV (kubectl -n fate get pvc nm-logs -o jsonpath='{.spec.volumeName}'), or migrate live with `upgrade-guard migrate fate/nodemanager`\n"),
        "{}",
        c.stderr
    );
}

#[test]
fn a_pv_for_a_claim_not_in_the_manifests_or_against_the_claims_own_is_an_error() {
    let c = convert("two-claims.yaml", &["--pv", "nm-log=pvc-9e8f7a6b"]);
    assert_eq!(c.code, 2);
    assert!(
        c.stderr
            .ends_with("--pv names claim nm-log, which is not in these manifests\n"),
        "{}",
        c.stderr
    );
    let c = convert(
        "two-claims.yaml",
        &["--pv", "nm-logs=pvc-9e8f7a6b", "--pv", "nm-data=pvc-other"],
    );
    assert_eq!(c.code, 2);
    assert!(
        c.stderr.contains("PersistentVolumeClaim fate/nm-data is bound to PersistentVolume pvc-0a1b2c3d, but --pv says pvc-other"),
        "{}",
        c.stderr
    );
}

#[test]
fn a_deployment_without_claims_is_left_as_it_is_and_said_so() {
    let c = convert("no-claims.yaml", &[]);
    assert_eq!(c.code, 0);
    let d: Deployment = one(&c.objects, "Deployment", "fateboard");
    assert_eq!(d.spec.unwrap().replicas, Some(2));
    assert_eq!(count(&c.objects, "StatefulSet"), 0);
    assert!(
        c.stderr.contains(
            "note: Deployment fate/fateboard mounts no PersistentVolumeClaim: left as it is"
        ),
        "{}",
        c.stderr
    );
}

#[test]
fn replicas_sharing_a_single_node_claim_are_refused_not_converted() {
    let c = convert("shared-rwo.yaml", &[]);
    assert_eq!(c.code, 1);
    assert_eq!(count(&c.objects, "StatefulSet"), 0);
    let _: Deployment = one(&c.objects, "Deployment", "datanode");
    let _: PersistentVolumeClaim = one(&c.objects, "PersistentVolumeClaim", "hdfs-data");
    assert!(
        c.stderr.contains(
            "problem: Deployment fate/datanode has 3 replicas sharing ReadWriteOnce claim hdfs-data"
        ),
        "{}",
        c.stderr
    );
}

#[test]
fn a_claim_with_no_storage_class_keeps_the_cluster_default() {
    let c = convert("no-storage-class.yaml", &["--pv", "notebook-home=pvc-5d6e"]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    let sts: StatefulSet = one(&c.objects, "StatefulSet", "notebook");
    assert_eq!(sts.metadata.namespace.as_deref(), Some("default"));
    let template = &sts.spec.unwrap().volume_claim_templates.unwrap()[0];
    assert!(template.spec.as_ref().unwrap().storage_class_name.is_none());
    let claim: PersistentVolumeClaim = one(&c.objects, "PersistentVolumeClaim", "home-notebook-0");
    assert!(claim.spec.unwrap().storage_class_name.is_none());
}

fn bad(text: &str) -> (i32, String) {
    let dir = TempDir::new("convert");
    let path = dir.join(format!("{}.yaml", text.len()));
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_upgrade-guard"))
        .arg("convert")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.stdout.is_empty());
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn bad_input_is_refused_naming_the_object() {
    let (code, err) = bad("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n");
    assert_eq!(code, 2);
    assert!(err.ends_with(": no Deployment to convert\n"), "{err}");

    let deployment = std::fs::read_to_string(fixture("convert/database.yaml")).unwrap();
    let only_deployment = deployment.split("---\n").nth(1).unwrap();
    let (code, err) = bad(only_deployment);
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "Deployment fate/mysql mounts claim mysql-data, which is not in these manifests"
        ),
        "{err}"
    );

    let no_size = deployment.replace("  resources: {requests: {storage: 20Gi}}\n", "");
    let (code, err) = bad(&no_size);
    assert_eq!(code, 2);
    assert!(
        err.contains("document 1: PersistentVolumeClaim fate/mysql-data has no size"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_upgrade-guard"))
        .args(["convert", "x.yaml", "--pv", "no-equals-sign"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected CLAIM=PV"));
}
