//! The deployment manifests: every object reads as its k8s-openapi type with
//! nothing left over (so a misspelled field is caught), the webhooks cover
//! what the decisions need, and the CRD schema accepts exactly what the
//! policy parser accepts.

mod common;

use std::collections::BTreeSet;

use common::*;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use upgrade_guard::manifest;
use upgrade_guard::policy::{PolicySet, spec};

fn objects(dir: &str) -> Vec<Value> {
    manifest::read(root().join(dir).to_str().unwrap())
        .unwrap()
        .into_iter()
        .map(|m| m.value)
        .filter(|v| v["kind"] != "Kustomization")
        .collect()
}

fn of_kind<'a>(all: &'a [Value], kind: &str) -> Vec<&'a Value> {
    all.iter().filter(|v| v["kind"] == kind).collect()
}

/// Typed and back again equals the original: no field was unknown.
fn exact<T: DeserializeOwned + serde::Serialize>(v: &Value) -> T {
    let typed: T =
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{}: {e}", v["kind"]));
    assert_eq!(
        numbers_by_value(serde_json::to_value(&typed).unwrap()),
        numbers_by_value(v.clone()),
        "{} {} has fields its type does not know",
        v["kind"],
        v["metadata"]["name"]
    );
    typed
}

/// `minimum: 0` comes back from k8s-openapi as 0.0: compare numbers by value.
fn numbers_by_value(v: Value) -> Value {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 => json!(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(numbers_by_value).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, numbers_by_value(v)))
                .collect(),
        ),
        other => other,
    }
}

#[test]
fn every_manifest_reads_as_its_kubernetes_type_with_nothing_left_over() {
    let all = objects("manifests");
    let mut kinds = BTreeSet::new();
    for v in &all {
        let kind = v["kind"].as_str().unwrap();
        kinds.insert(kind.to_string());
        match kind {
            "Namespace" => drop(exact::<Namespace>(v)),
            "ServiceAccount" => drop(exact::<ServiceAccount>(v)),
            "ClusterRole" => drop(exact::<ClusterRole>(v)),
            "ClusterRoleBinding" => drop(exact::<ClusterRoleBinding>(v)),
            "Role" => drop(exact::<Role>(v)),
            "RoleBinding" => drop(exact::<RoleBinding>(v)),
            "Deployment" => drop(exact::<Deployment>(v)),
            "Service" => drop(exact::<Service>(v)),
            "PodDisruptionBudget" => drop(exact::<PodDisruptionBudget>(v)),
            "CustomResourceDefinition" => drop(exact::<CustomResourceDefinition>(v)),
            "MutatingWebhookConfiguration" => drop(exact::<MutatingWebhookConfiguration>(v)),
            "ValidatingWebhookConfiguration" => drop(exact::<ValidatingWebhookConfiguration>(v)),
            other => panic!("unexpected kind {other}"),
        }
    }
    assert_eq!(kinds.len(), 12, "{kinds:?}");
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let text = std::fs::read_to_string(root().join("manifests/kustomization.yaml")).unwrap();
    let listed: Value = serde_yaml_ng::from_str(&text).unwrap();
    let listed: BTreeSet<String> = listed["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let files: BTreeSet<String> = std::fs::read_dir(root().join("manifests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    assert_eq!(listed, files);
}

fn rules_cover_scale(rules: &[RuleWithOperations]) {
    let resources: BTreeSet<&str> = rules
        .iter()
        .flat_map(|r| r.resources.iter().flatten())
        .map(String::as_str)
        .collect();
    for needed in [
        "statefulsets",
        "deployments",
        "statefulsets/scale",
        "deployments/scale",
    ] {
        assert!(
            resources.contains(needed),
            "{needed} missing from {resources:?}"
        );
    }
    for rule in rules {
        assert_eq!(rule.api_groups.as_deref(), Some(&["apps".to_string()][..]));
        let ops: BTreeSet<&str> = rule
            .operations
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        assert_eq!(ops, BTreeSet::from(["CREATE", "UPDATE"]));
    }
}

#[test]
fn both_webhooks_cover_the_workloads_and_their_scale_subresources() {
    let all = objects("manifests");
    let mutating: MutatingWebhookConfiguration =
        exact(of_kind(&all, "MutatingWebhookConfiguration")[0]);
    let validating: ValidatingWebhookConfiguration =
        exact(of_kind(&all, "ValidatingWebhookConfiguration")[0]);
    let m = &mutating.webhooks.unwrap()[0];
    let v = &validating.webhooks.unwrap()[0];
    rules_cover_scale(m.rules.as_deref().unwrap());
    rules_cover_scale(v.rules.as_deref().unwrap());
    assert_eq!(m.reinvocation_policy.as_deref(), Some("IfNeeded"));
    for (path, side_effects, versions, failure, timeout, selector, service) in [
        (
            "/mutate",
            &m.side_effects,
            &m.admission_review_versions,
            &m.failure_policy,
            m.timeout_seconds,
            &m.namespace_selector,
            &m.client_config.service,
        ),
        (
            "/validate",
            &v.side_effects,
            &v.admission_review_versions,
            &v.failure_policy,
            v.timeout_seconds,
            &v.namespace_selector,
            &v.client_config.service,
        ),
    ] {
        assert_eq!(side_effects, "None");
        assert_eq!(versions, &vec!["v1".to_string()]);
        assert_eq!(failure.as_deref(), Some("Fail"));
        // Longer than the server's own request timeout (4 s), so it answers first.
        assert!(
            timeout.is_some_and(|t| (5..=10).contains(&t)),
            "{timeout:?}"
        );
        let excluded = &selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!(excluded.key, "kubernetes.io/metadata.name");
        assert_eq!(excluded.operator, "NotIn");
        let names: BTreeSet<&str> = excluded
            .values
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        assert_eq!(names, BTreeSet::from(["kube-system", "upgrade-guard"]));
        assert_eq!(service.as_ref().unwrap().path.as_deref(), Some(path));
    }
}

#[test]
fn the_deployment_runs_hardened_with_probes_and_limits() {
    let all = objects("manifests");
    let d: Deployment = exact(of_kind(&all, "Deployment")[0]);
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert!(pod.affinity.unwrap().pod_anti_affinity.is_some());
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let resources = c.resources.as_ref().unwrap();
    assert!(resources.requests.is_some() && resources.limits.is_some());
    assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
    assert_eq!(c.args.as_ref().unwrap()[0], "serve");
}

#[test]
fn rbac_reads_what_the_cache_needs_patches_only_workloads_and_deletes_only_pods() {
    let all = objects("manifests");
    let roles = of_kind(&all, "ClusterRole");
    let role: ClusterRole = exact(roles[0]);
    let rules: Vec<(Vec<String>, Vec<String>, Vec<String>)> = role
        .rules
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.api_groups.unwrap_or_default(),
                r.resources.unwrap_or_default(),
                r.verbs,
            )
        })
        .collect();
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        rules,
        vec![
            (
                strings(&["apps"]),
                strings(&["statefulsets", "deployments"]),
                strings(&["get", "list", "watch", "patch"])
            ),
            (
                strings(&[""]),
                strings(&["pods"]),
                strings(&["get", "list", "watch", "delete"])
            ),
            (
                strings(&[""]),
                strings(&["persistentvolumeclaims"]),
                strings(&["get", "list", "watch"])
            ),
            (
                strings(&["upgradeguard.io"]),
                strings(&["upgradepolicies"]),
                strings(&["get", "list", "watch"])
            ),
            (
                strings(&["events.k8s.io"]),
                strings(&["events"]),
                strings(&["create", "patch"])
            ),
            (
                strings(&["authorization.k8s.io"]),
                strings(&["subjectaccessreviews"]),
                strings(&["create"])
            ),
        ]
    );
    // The role to bind to the people who may override: `force`, nothing else.
    let force: ClusterRole = exact(roles[1]);
    assert_eq!(force.metadata.name.as_deref(), Some("upgrade-guard-force"));
    let rules = force.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        (
            rules[0].api_groups.clone().unwrap(),
            rules[0].resources.clone().unwrap(),
            rules[0].verbs.clone()
        ),
        (
            strings(&["upgradeguard.io"]),
            strings(&["upgradepolicies"]),
            strings(&["force"])
        )
    );
}

// ---- The CRD schema and the parser accept the same documents. ----

fn crd_schema() -> Value {
    let all = objects("manifests");
    let crd = of_kind(&all, "CustomResourceDefinition")[0];
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Checks the subset of OpenAPI v3 the CRD uses; properties are closed,
/// as the API server's pruning (and `kubectl --validate=strict`) makes them.
fn validate(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(options) = schema.get("enum")
        && !options.as_array().unwrap().contains(value)
    {
        return Err(format!("{at}: {value} is not one of {options}"));
    }
    match schema["type"].as_str() {
        Some("object") => {
            let map = value.as_object().ok_or(format!("{at}: not an object"))?;
            for required in schema["required"].as_array().into_iter().flatten() {
                if !map.contains_key(required.as_str().unwrap()) {
                    return Err(format!("{at}: {required} is required"));
                }
            }
            for (key, item) in map {
                let sub = match (schema.get("properties"), schema.get("additionalProperties")) {
                    (Some(props), _) if props.get(key).is_some() => &props[key],
                    (_, Some(additional)) => additional,
                    (Some(_), None)
                        if at.is_empty()
                            && ["metadata", "apiVersion", "kind"].contains(&key.as_str()) =>
                    {
                        continue;
                    }
                    (None, None) => continue,
                    _ => return Err(format!("{at}.{key}: unknown field")),
                };
                validate(sub, item, &format!("{at}.{key}"))?;
            }
            Ok(())
        }
        Some("array") => {
            let items = value.as_array().ok_or(format!("{at}: not a list"))?;
            for (i, item) in items.iter().enumerate() {
                validate(&schema["items"], item, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        Some("string") => value
            .is_string()
            .then_some(())
            .ok_or(format!("{at}: not a string")),
        Some("boolean") => value
            .is_boolean()
            .then_some(())
            .ok_or(format!("{at}: not a boolean")),
        Some("integer") => {
            let n = value.as_i64().ok_or(format!("{at}: not an integer"))?;
            match schema["minimum"].as_i64() {
                Some(min) if n < min => Err(format!("{at}: below {min}")),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// A value for every property the schema declares.
fn everything(schema: &Value) -> Value {
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    match schema["type"].as_str() {
        Some("object") => match (schema.get("properties"), schema.get("additionalProperties")) {
            (Some(props), _) => Value::Object(
                props
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, s)| (k.clone(), everything(s)))
                    .collect(),
            ),
            (None, Some(additional)) => json!({ "key": everything(additional) }),
            (None, None) => json!({}),
        },
        Some("array") => json!([everything(&schema["items"])]),
        Some("boolean") => json!(true),
        Some("integer") => json!(schema["minimum"].as_i64().unwrap_or(0).max(1)),
        _ => json!("x"),
    }
}

/// Every field the parser knows, set.
const KITCHEN_SINK: &str = r#"
apiVersion: upgradeguard.io/v1alpha1
kind: UpgradePolicy
metadata: {name: all, namespace: shop}
spec:
  selector:
    matchLabels: {app: db}
    matchExpressions: [{key: tier, operator: In, values: [data]}]
  kinds: [StatefulSet, Deployment]
  containers: [db]
  version: {source: tag, pattern: '^(?P<version>.*)$', digests: {"sha256:a": "1.0.0"}}
  track: major.minor
  step: patch
  releases: ["1.0.0", "1.10.0"]
  matrix: [{from: "1.*", to: "2.*", allow: false, note: why}]
  unknownVersion: force
  crossTrack: force
  downgrade: allow
  requireStatefulSet: true
  refresh:
    pauseAfter: none
    health: {readyTimeoutSeconds: 60, minReadySeconds: 0, minAvailable: 1}
"#;

#[test]
fn every_field_the_parser_knows_is_in_the_crd_schema() {
    let schema = crd_schema();
    let doc: Value = serde_yaml_ng::from_str(KITCHEN_SINK).unwrap();
    assert_eq!(
        PolicySet::parse(KITCHEN_SINK, "kitchen-sink")
            .unwrap()
            .len(),
        1
    );
    validate(&schema, &doc, "").unwrap();
    let label = json!({"apiVersion": "upgradeguard.io/v1alpha1", "kind": "UpgradePolicy", "metadata": {"name": "l"},
        "spec": {"selector": {}, "version": {"source": "label", "label": "app.kubernetes.io/version"}}});
    validate(&schema, &label, "").unwrap();
    for file in [
        "fate.yaml",
        "kyuubi.yaml",
        "protocol-db.yaml",
        "semver-db.yaml",
    ] {
        let text = std::fs::read_to_string(root().join("policies").join(file)).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        validate(&schema, &doc, "").unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn every_field_the_crd_schema_declares_is_known_to_the_parser() {
    let mut doc = everything(&crd_schema());
    doc["metadata"] = json!({"name": "from-schema"});
    let parsed: Result<spec::Document, _> = serde_json::from_value(doc.clone());
    parsed.unwrap_or_else(|e| panic!("the parser refuses a field the CRD allows: {e}\n{doc}"));
}

/// One difference is deliberate: in a file, an unquoted `1.10` is read as
/// the text `1.10` (YAML would make it the number 1.1), while the API server
/// refuses a number where the CRD says string. Neither loses the version.
#[test]
fn the_crd_schema_refuses_what_the_parser_refuses() {
    let schema = crd_schema();
    let with = |spec: Value| json!({"apiVersion": "upgradeguard.io/v1alpha1", "kind": "UpgradePolicy", "metadata": {"name": "p"}, "spec": spec});
    for bad in [
        json!({"selector": {}, "stepp": "minor"}),
        json!({"selector": {}, "step": "minr"}),
        json!({"step": "minor"}),
        json!({"selector": {}, "refresh": {"health": {"readyTimeoutSeconds": 0}}}),
    ] {
        let doc = with(bad.clone());
        assert!(
            validate(&schema, &doc, "").is_err(),
            "the CRD accepts {bad}"
        );
        let text = serde_json::to_string(&doc).unwrap();
        assert!(
            PolicySet::parse(&text, "t").is_err(),
            "the parser accepts {bad}"
        );
    }
}
