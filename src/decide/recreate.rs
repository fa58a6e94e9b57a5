//! A StatefulSet created again over the claims an earlier one left:
//! judged as an upgrade from what their pods still run.

use k8s_openapi::api::core::v1::PodTemplateSpec;

use super::*;

/// A StatefulSet created where an earlier one left its claims
/// (`<template>-<name>-<ordinal>`, which it adopts): judged as an upgrade
/// from what the pods of the same names run. `kubectl delete --cascade=orphan`
/// leaves them running, and they are what last served the data: refused
/// here, the user reads the clearer message; the claims' served records
/// ([`data`]) hold at pod admission either way. With no pod left, a warning
/// says the path cannot be checked here. `None` when no claim is adopted.
pub(super) fn recreated(
    new: &Subject,
    policy: &Policy,
    cluster: &dyn ClusterView,
    now: jiff::Timestamp,
    requester: &Requester,
) -> Option<Verdict> {
    let Workload::StatefulSet(sts) = new.workload() else {
        return None;
    };
    let (namespace, name) = (new.namespace(), new.name());
    let templates: Vec<&str> = sts
        .spec
        .as_ref()?
        .volume_claim_templates
        .iter()
        .flatten()
        .filter_map(|t| t.metadata.name.as_deref())
        .collect();
    let ordinals = 0..new.replicas().max(0);
    let claims: Vec<String> = ordinals
        .clone()
        .flat_map(|i| templates.iter().map(move |t| format!("{t}-{name}-{i}")))
        .filter(|claim| cluster.claim_access_modes(namespace, claim).is_some())
        .collect();
    if claims.is_empty() {
        return None;
    }
    let pods: Vec<_> = ordinals
        .filter_map(|i| cluster.pod(namespace, &format!("{name}-{i}")))
        .collect();
    let id = format!("{} {namespace}/{name}", new.kind());
    let adopted = crate::quoted::bounded(&claims.join(", "));
    if pods.is_empty() {
        let mut verdict = Verdict::allow();
        verdict.warnings.push(format!(
            "upgrade-guard: {id} is created over the claims an earlier one left ({adopted}), and no pod of it is left to tell which version they last served: the upgrade path to this version cannot be checked"
        ));
        return Some(verdict);
    }
    let names: Vec<&str> = pods
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    let context = format!(
        "upgrade-guard: {id} is created over the claims an earlier one left ({adopted}): judged as an upgrade from what its pods {} still run",
        crate::quoted::bounded(&names.join(", "))
    );
    let mut judged: Option<Verdict> = None;
    let mut seen = Vec::new();
    for pod in pods {
        let Some(spec) = pod.spec else { continue };
        let images: Vec<(String, Option<String>)> = spec
            .containers
            .iter()
            .map(|c| (c.name.clone(), c.image.clone()))
            .collect();
        if seen.contains(&images) {
            continue;
        }
        seen.push(images);
        // The old StatefulSet as its pods show it: no refresh was running.
        let mut old = new.clone();
        if let Some(annotations) = old.workload_mut().metadata_mut().annotations.as_mut() {
            annotations.remove(REFRESH);
        }
        if old.template().is_some() {
            old.set_template(Template::of(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: pod.metadata.labels.clone(),
                    annotations: pod.metadata.annotations.clone(),
                    ..Default::default()
                }),
                spec: Some(spec),
            }));
        }
        let mut verdict = decide_update(&old, new, policy, cluster, now, requester);
        // The edits of an update (partition, record) are not a create's.
        verdict.patch.clear();
        verdict.patch_warnings.clear();
        verdict.warnings.insert(0, context.clone());
        if !verdict.allowed {
            return Some(verdict);
        }
        if judged.is_none() || verdict.rule.is_some() {
            judged = Some(verdict);
        }
    }
    judged.or_else(|| {
        let mut verdict = Verdict::allow();
        verdict.warnings.push(context);
        Some(verdict)
    })
}
