//! Deployment → StatefulSet conversion that keeps the volumes. Pure: the
//! manifests in, the manifests to commit out, with the ordered steps that
//! move the data and the problems that stop a conversion.
//!
//! Each PersistentVolumeClaim the pod template mounts becomes a
//! volumeClaimTemplate named after the volume (so the volumeMounts stay as
//! they are), and the old claim is replaced by `<volume>-<statefulset>-0`,
//! bound by `volumeName` to the PersistentVolume that holds the data.

pub mod apply;
pub mod migrate;

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::apps::v1::{
    Deployment, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::manifest::Manifest;
use crate::workload::claim_volumes;

#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ConvertError {
    pub location: String,
    pub message: String,
}

fn error(location: &str, message: impl Into<String>) -> ConvertError {
    ConvertError {
        location: location.into(),
        message: message.into(),
    }
}

#[derive(Debug, Default)]
pub struct Conversion {
    /// The manifests to commit: converted objects replace the originals,
    /// everything else is passed through as it was.
    pub objects: Vec<Value>,
    /// In order: how to move the data on a cluster.
    pub steps: Vec<String>,
    /// Worth knowing, not blocking (a Deployment with no claim, data in an emptyDir).
    pub notes: Vec<String>,
    /// What stopped a Deployment's conversion; it is passed through unchanged.
    pub problems: Vec<String>,
}

fn kind_of(v: &Value) -> (&str, &str) {
    (
        v.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
        v.get("kind").and_then(Value::as_str).unwrap_or(""),
    )
}

fn name_of(v: &Value) -> (String, String) {
    let meta = &v["metadata"];
    (
        meta["namespace"].as_str().unwrap_or("default").to_string(),
        meta["name"].as_str().unwrap_or("").to_string(),
    )
}

/// The PersistentVolume that holds a claim's data: the claim's own
/// `spec.volumeName`, or `--pv`. Without it the new claim would get a new,
/// empty volume, so there is no conversion.
fn volume_of(
    claim: &str,
    spec: &PersistentVolumeClaimSpec,
    pvs: &HashMap<String, String>,
    ns: &str,
    deployment: &str,
) -> Result<String, String> {
    match (spec.volume_name.as_deref(), pvs.get(claim)) {
        (Some(own), Some(given)) if own != given => Err(format!(
            "PersistentVolumeClaim {ns}/{claim} is bound to PersistentVolume {own}, but --pv says {given}: drop --pv {claim}={given}"
        )),
        (Some(own), _) => Ok(own.to_string()),
        (None, Some(given)) => Ok(given.clone()),
        (None, None) => Err(format!(
            "PersistentVolumeClaim {ns}/{claim} names no volume (spec.volumeName), so the PersistentVolume that holds its data is not known here, and the new claim would get an empty one: give --pv {claim}=PV (kubectl -n {ns} get pvc {claim} -o jsonpath='{{.spec.volumeName}}'), or migrate live with `upgrade-guard migrate {ns}/{deployment}`"
        )),
    }
}

/// `pvs`: claim name → PersistentVolume name (`--pv`), for claims whose
/// manifest does not name their volume.
pub fn convert(
    manifests: &[Manifest],
    pvs: &HashMap<String, String>,
) -> Result<Conversion, ConvertError> {
    let mut claims: BTreeMap<(String, String), (PersistentVolumeClaim, &Manifest)> =
        BTreeMap::new();
    let mut services: Vec<Service> = Vec::new();
    let mut deployments = Vec::new();
    for m in manifests {
        match kind_of(&m.value) {
            ("v1", "PersistentVolumeClaim") => {
                let claim: PersistentVolumeClaim = typed(m)?;
                claims.insert(name_of(&m.value), (claim, m));
            }
            ("v1", "Service") => services.push(typed::<Service>(m)?),
            ("apps/v1", "Deployment") => deployments.push((typed::<Deployment>(m)?, m)),
            _ => {}
        }
    }
    let source = manifests.first().map_or("the input", |m| m.source.as_str());
    let source = source.split(": document").next().unwrap_or(source);
    if deployments.is_empty() {
        return Err(error(source, "no Deployment to convert"));
    }
    let mut unknown: Vec<&String> = pvs
        .keys()
        .filter(|claim| !claims.keys().any(|(_, name)| name == *claim))
        .collect();
    unknown.sort();
    if let Some(claim) = unknown.first() {
        return Err(error(
            source,
            format!("--pv names claim {claim}, which is not in these manifests"),
        ));
    }

    let mut out = Conversion::default();
    let mut replaced: Vec<(String, String, &str)> = Vec::new(); // (namespace, name, kind) dropped from the output
    let mut added: Vec<Value> = Vec::new();
    for (deployment, manifest) in &deployments {
        let d: &Deployment = deployment;
        let (ns, name) = name_of(&manifest.value);
        let id = format!("Deployment {ns}/{name}");
        let spec = d.spec.clone().unwrap_or_default();
        let template = spec.template.clone();
        let pod = template.spec.clone().unwrap_or_default();
        let volumes = pod.volumes.clone().unwrap_or_default();
        let mounted: Vec<(String, String)> = claim_volumes(Some(&template))
            .into_iter()
            .map(|(volume, claim)| (volume.to_string(), claim.to_string()))
            .collect();
        for v in volumes.iter().filter(|v| v.empty_dir.is_some()) {
            let paths: Vec<String> = pod
                .containers
                .iter()
                .flat_map(|c| c.volume_mounts.iter().flatten())
                .filter(|m| m.name == v.name)
                .map(|m| m.mount_path.clone())
                .collect();
            if paths.iter().any(|p| looks_like_data(p)) {
                out.notes.push(format!(
                    "{id}: emptyDir volume {} is mounted at {} and looks like data; an emptyDir is lost with its pod, so make it a PersistentVolumeClaim if it must be kept",
                    v.name,
                    paths.join(", ")
                ));
            }
        }
        if mounted.is_empty() {
            out.notes.push(format!(
                "{id} mounts no PersistentVolumeClaim: left as it is"
            ));
            continue;
        }
        let mut templates = Vec::new();
        let mut new_claims = Vec::new();
        let mut problem = None;
        for (volume, claim_name) in &mounted {
            let Some((claim, claim_manifest)) = claims.get(&(ns.clone(), claim_name.clone()))
            else {
                return Err(error(
                    &manifest.source,
                    format!(
                        "{id} mounts claim {claim_name}, which is not in these manifests: add it (kubectl get pvc {claim_name} -n {ns} -o yaml)"
                    ),
                ));
            };
            let claim_spec = claim.spec.clone().unwrap_or_default();
            let size = claim_spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"));
            if size.is_none() {
                return Err(error(
                    &claim_manifest.source,
                    format!(
                        "PersistentVolumeClaim {ns}/{claim_name} has no size (spec.resources.requests.storage)"
                    ),
                ));
            }
            let modes = claim_spec.access_modes.clone().unwrap_or_default();
            let single_node = modes.is_empty()
                || modes
                    .iter()
                    .any(|m| m == "ReadWriteOnce" || m == "ReadWriteOncePod");
            if spec.replicas.unwrap_or(1) > 1 && single_node {
                problem = Some(format!(
                    "{id} has {} replicas sharing ReadWriteOnce claim {claim_name}: only one of them can hold it, so a StatefulSet (a volume per replica) would change what the data is; resolve it (one replica, or a ReadWriteMany claim) before converting",
                    spec.replicas.unwrap_or(1)
                ));
                break;
            }
            let template_spec = PersistentVolumeClaimSpec {
                access_modes: claim_spec.access_modes.clone(),
                storage_class_name: claim_spec.storage_class_name.clone(),
                resources: claim_spec.resources.clone(),
                volume_mode: claim_spec.volume_mode.clone(),
                ..Default::default()
            };
            templates.push(PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(volume.clone()),
                    ..Default::default()
                },
                spec: Some(template_spec.clone()),
                status: None,
            });
            let new_name = format!("{volume}-{name}-0");
            let pv = volume_of(claim_name, &claim_spec, pvs, &ns, &name)
                .map_err(|message| error(&claim_manifest.source, message))?;
            new_claims.push((claim_name.clone(), new_name.clone(), pv.clone()));
            added.push(to_value(&PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(new_name),
                    namespace: Some(ns.clone()),
                    labels: claim.metadata.labels.clone(),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    volume_name: Some(pv),
                    ..template_spec
                }),
                status: None,
            }));
            replaced.push((ns.clone(), claim_name.clone(), "PersistentVolumeClaim"));
        }
        if let Some(p) = problem {
            out.problems.push(p);
            continue;
        }
        let mut pod = pod;
        pod.volumes = Some(
            volumes
                .into_iter()
                .filter(|v| v.persistent_volume_claim.is_none())
                .collect(),
        )
        .filter(|v: &Vec<_>| !v.is_empty());
        let labels = spec.selector.match_labels.clone().unwrap_or_default();
        let headless = services.iter().find(|s| {
            s.metadata.namespace.as_deref().unwrap_or("default") == ns
                && s.spec.as_ref().is_some_and(|sp| {
                    sp.cluster_ip.as_deref() == Some("None")
                        && sp.selector.as_ref().is_some_and(|sel| {
                            !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                        })
                })
        });
        let service_name = match headless {
            Some(s) => s.metadata.name.clone().unwrap_or_default(),
            None => {
                let service = format!("{name}-headless");
                added.push(to_value(&Service {
                    metadata: ObjectMeta {
                        name: Some(service.clone()),
                        namespace: Some(ns.clone()),
                        labels: d.metadata.labels.clone(),
                        ..Default::default()
                    },
                    spec: Some(ServiceSpec {
                        cluster_ip: Some("None".into()),
                        selector: Some(labels.clone()),
                        ports: ports(&pod),
                        ..Default::default()
                    }),
                    status: None,
                }));
                service
            }
        };
        let mut annotations = d.metadata.annotations.clone().unwrap_or_default();
        // The Deployment's own bookkeeping, not the workload's.
        annotations.retain(|k, _| {
            !matches!(
                k.as_str(),
                "deployment.kubernetes.io/revision"
                    | "kubectl.kubernetes.io/last-applied-configuration"
                    | migrate::JOURNAL
            )
        });
        let sts = StatefulSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: d.metadata.labels.clone(),
                annotations: Some(annotations).filter(|a| !a.is_empty()),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: spec.replicas,
                selector: spec.selector.clone(),
                service_name: Some(service_name.clone()),
                template: k8s_openapi::api::core::v1::PodTemplateSpec {
                    metadata: template.metadata.clone(),
                    spec: Some(pod),
                },
                update_strategy: Some(StatefulSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: None,
                }),
                persistent_volume_claim_retention_policy: Some(
                    StatefulSetPersistentVolumeClaimRetentionPolicy {
                        when_deleted: Some("Retain".into()),
                        when_scaled: Some("Retain".into()),
                    },
                ),
                volume_claim_templates: Some(templates),
                ..Default::default()
            }),
            status: None,
        };
        added.push(to_value(&sts));
        replaced.push((ns.clone(), name.clone(), "Deployment"));
        steps(&mut out.steps, &ns, &name, &service_name, &new_claims);
    }

    for m in manifests {
        let (ns, name) = name_of(&m.value);
        let kind = kind_of(&m.value).1;
        if !replaced
            .iter()
            .any(|(n, nm, k)| *n == ns && *nm == name && *k == kind)
        {
            out.objects.push(m.value.clone());
        }
    }
    out.objects.extend(added);
    Ok(out)
}

fn typed<T: serde::de::DeserializeOwned>(m: &Manifest) -> Result<T, ConvertError> {
    serde_json::from_value(m.value.clone()).map_err(|e| error(&m.source, e.to_string()))
}

fn to_value<T: serde::Serialize>(object: &T) -> Value {
    // k8s-openapi objects are plain data: serializing them cannot fail.
    let mut v = serde_json::to_value(object).unwrap_or_default();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("creationTimestamp");
    }
    v
}

/// A mount path that usually holds state.
fn looks_like_data(path: &str) -> bool {
    ["/data", "/var/lib", "/db", "/storage"]
        .iter()
        .any(|p| path.contains(p))
}

/// The pods' container ports; none is fine, a headless Service needs none
/// to give each pod its DNS name.
fn ports(pod: &k8s_openapi::api::core::v1::PodSpec) -> Option<Vec<ServicePort>> {
    let ports: Vec<ServicePort> = pod
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| ServicePort {
            name: p.name.clone(),
            port: p.container_port,
            protocol: p.protocol.clone(),
            ..Default::default()
        })
        .collect();
    Some(ports).filter(|p| !p.is_empty())
}

fn steps(
    steps: &mut Vec<String>,
    ns: &str,
    name: &str,
    service: &str,
    claims: &[(String, String, String)],
) {
    let n = |steps: &Vec<String>| steps.len() + 1;
    for (old, _, pv) in claims {
        steps.push(format!(
            "{}. kubectl patch pv {pv} -p '{{\"spec\":{{\"persistentVolumeReclaimPolicy\":\"Retain\"}}}}'   # keep the data of claim {old} when it goes",
            n(steps)
        ));
    }
    steps.push(format!("{}. kubectl -n {ns} scale deployment/{name} --replicas=0   # and wait until its pods are gone", n(steps)));
    for (old, new, pv) in claims {
        steps.push(format!(
            "{}. kubectl -n {ns} delete pvc {old}   # {pv} becomes Released; Retain keeps it",
            n(steps)
        ));
        steps.push(format!(
            "{}. kubectl patch pv {pv} --type json -p '[{{\"op\":\"remove\",\"path\":\"/spec/claimRef\"}}]'   # free it for {new}",
            n(steps)
        ));
    }
    steps.push(format!(
        "{}. apply the converted manifests: the claims bind to their PVs by volumeName, then StatefulSet {ns}/{name} (Service {service}) starts",
        n(steps)
    ));
    steps.push(format!(
        "{}. kubectl -n {ns} rollout status statefulset/{name}",
        n(steps)
    ));
    steps.push(format!(
        "{}. kubectl -n {ns} delete deployment/{name}   # once the StatefulSet is Ready",
        n(steps)
    ));
}
