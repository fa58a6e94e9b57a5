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
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
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
            "PriorityClass" => drop(exact::<PriorityClass>(v)),
            "NetworkPolicy" => drop(exact::<NetworkPolicy>(v)),
            "CustomResourceDefinition" => drop(exact::<CustomResourceDefinition>(v)),
            "MutatingWebhookConfiguration" => drop(exact::<MutatingWebhookConfiguration>(v)),
            "ValidatingWebhookConfiguration" => drop(exact::<ValidatingWebhookConfiguration>(v)),
            other => panic!("unexpected kind {other}"),
        }
    }
    assert_eq!(kinds.len(), 14, "{kinds:?}");
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
        // Events are written for refusals and overrides, never for a dry-run.
        assert_eq!(side_effects, "NoneOnDryRun");
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
    let memory = |m: &Option<std::collections::BTreeMap<String, Quantity>>| {
        m.as_ref().unwrap()["memory"].0.clone()
    };
    // docs/operations.md: the arithmetic behind both.
    assert_eq!(
        (memory(&resources.requests), memory(&resources.limits)),
        ("128Mi".to_string(), "256Mi".to_string())
    );
    assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
    assert_eq!(c.args.as_ref().unwrap()[0], "serve");
    // A class that exists: the one shipped.
    let class: PriorityClass = exact(of_kind(&all, "PriorityClass")[0]);
    assert_eq!(pod.priority_class_name, class.metadata.name);
    assert_eq!(class.value, 1_000_000_000, "the highest a user may define");
}

/// A terminating replica keeps serving through preStop while the endpoints
/// catch up, then drains; the grace period covers both.
#[test]
fn a_replica_stops_within_its_grace_period_after_the_endpoints_moved_on() {
    let all = objects("manifests");
    let d: Deployment = exact(of_kind(&all, "Deployment")[0]);
    let pod = d.spec.unwrap().template.spec.unwrap();
    let pre_stop = pod.containers[0]
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.sleep.as_ref())
        .map(|s| s.seconds)
        .expect("a preStop sleep");
    assert!(
        pre_stop >= 5,
        "endpoints take seconds to propagate: {pre_stop}"
    );
    let drain = upgrade_guard::webhook::server::DRAIN_TIMEOUT.as_secs() as i64;
    let grace = pod.termination_grace_period_seconds.unwrap();
    assert!(
        pre_stop + drain < grace,
        "preStop {pre_stop} s + drain {drain} s must end before the {grace} s grace period"
    );
}

/// The disruption controller's arithmetic for a PDB (integer minAvailable
/// or maxUnavailable): evictions allowed with `healthy` of `expected` pods.
fn disruptions_allowed(pdb: &PodDisruptionBudget, healthy: i32, expected: i32) -> i32 {
    let spec = pdb.spec.as_ref().unwrap();
    let desired = match (&spec.min_available, &spec.max_unavailable) {
        (Some(IntOrString::Int(min)), None) => *min,
        (None, Some(IntOrString::Int(max))) => expected - max,
        other => panic!("not modelled: {other:?}"),
    };
    (healthy - desired).max(0)
}

#[test]
fn a_voluntary_eviction_always_leaves_one_replica_serving() {
    let all = objects("manifests");
    let d: Deployment = exact(of_kind(&all, "Deployment")[0]);
    let pdb: PodDisruptionBudget = exact(of_kind(&all, "PodDisruptionBudget")[0]);
    let spec = d.spec.clone().unwrap();
    // The budget covers the Deployment's pods, in its namespace.
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    let selector = pdb.spec.as_ref().unwrap().selector.clone().unwrap();
    assert!(
        selector
            .match_labels
            .unwrap()
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    );
    assert_eq!(pdb.metadata.namespace, d.metadata.namespace);
    let replicas = spec.replicas.unwrap();
    // Evict while the budget allows: what is left never drops below one.
    let mut serving = replicas;
    while disruptions_allowed(&pdb, serving, replicas) > 0 {
        serving -= 1;
    }
    assert_eq!(serving, 1, "evictions stop at one replica serving");
    // The Deployment's own rollout never takes one away first.
    let rolling = spec.strategy.unwrap().rolling_update.unwrap();
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
}

/// Only the API server reaches the webhook port, only Prometheus the
/// metrics port, and the shipped address is one that matches nothing.
#[test]
fn the_network_policy_admits_the_api_server_and_the_scrape_only() {
    let all = objects("manifests");
    let d: Deployment = exact(of_kind(&all, "Deployment")[0]);
    let policy: NetworkPolicy = exact(of_kind(&all, "NetworkPolicy")[0]);
    let spec = policy.spec.unwrap();
    let labels = d.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    assert_eq!(spec.pod_selector.unwrap().match_labels.unwrap(), labels);
    assert_eq!(spec.policy_types.unwrap(), vec!["Ingress".to_string()]);
    let rules = spec.ingress.unwrap();
    let port = |i: usize| {
        let ports = rules[i].ports.clone().unwrap();
        assert_eq!(ports.len(), 1);
        ports[0].port.clone().unwrap()
    };
    assert_eq!(rules.len(), 2);
    assert_eq!(port(0), IntOrString::String("https".into()));
    let from = rules[0].from.clone().unwrap();
    assert_eq!(from.len(), 1);
    let block = from[0].ip_block.clone().unwrap();
    assert_eq!((block.cidr.as_str(), block.except), ("192.0.2.0/24", None));
    assert!(from[0].pod_selector.is_none() && from[0].namespace_selector.is_none());
    assert_eq!(port(1), IntOrString::String("metrics".into()));
    let from = rules[1].from.clone().unwrap();
    assert_eq!(from.len(), 1, "no empty peer (which would admit everyone)");
    assert_eq!(
        serde_json::to_value(&from[0]).unwrap(),
        json!({
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        })
    );
}

/// (apiGroups, resources, resourceNames, verbs) of each rule.
type Grant = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);

fn grants(rules: Option<Vec<k8s_openapi::api::rbac::v1::PolicyRule>>) -> Vec<Grant> {
    rules
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.api_groups.unwrap_or_default(),
                r.resources.unwrap_or_default(),
                r.resource_names.unwrap_or_default(),
                r.verbs,
            )
        })
        .collect()
}

fn grant(groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]) -> Grant {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    (
        strings(groups),
        strings(resources),
        strings(names),
        strings(verbs),
    )
}

/// Exactly the calls the server makes: reads for the cache (list and watch,
/// the reflectors' only verbs), and the refresh controller's writes apart,
/// so they can be bound per namespace.
#[test]
fn rbac_grants_exactly_the_calls_the_server_makes() {
    let all = objects("manifests");
    let role = |name: &str| -> ClusterRole {
        let found = of_kind(&all, "ClusterRole")
            .into_iter()
            .find(|r| r["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("ClusterRole {name}"));
        exact(found)
    };
    assert_eq!(
        grants(role("upgrade-guard").rules),
        vec![
            grant(
                &["apps"],
                &["statefulsets", "deployments"],
                &[],
                &["list", "watch"]
            ),
            grant(
                &[""],
                &["pods", "persistentvolumeclaims"],
                &[],
                &["list", "watch"]
            ),
            grant(
                &["upgradeguard.io"],
                &["upgradepolicies"],
                &[],
                &["list", "watch"]
            ),
            grant(
                &["authorization.k8s.io"],
                &["subjectaccessreviews"],
                &[],
                &["create"]
            ),
        ]
    );
    assert_eq!(
        grants(role("upgrade-guard-refresh").rules),
        vec![
            grant(&["apps"], &["statefulsets", "deployments"], &[], &["patch"]),
            grant(&[""], &["pods"], &[], &["delete"]),
            grant(&[""], &["persistentvolumeclaims"], &[], &["patch"]),
            grant(&["events.k8s.io"], &["events"], &[], &["create", "patch"]),
            grant(
                &["batch"],
                &["jobs"],
                &[],
                &["create", "get", "list", "watch", "delete"]
            ),
        ]
    );
    // The role to bind to the people who may override: `force`, nothing else.
    assert_eq!(
        grants(role("upgrade-guard-force").rules),
        vec![grant(
            &["upgradeguard.io"],
            &["upgradepolicies"],
            &[],
            &["force"]
        )]
    );
    // The Lease: create (which cannot name an object), then only its own.
    let lease: Role = exact(of_kind(&all, "Role")[0]);
    assert_eq!(
        grants(lease.rules),
        vec![
            grant(&["coordination.k8s.io"], &["leases"], &[], &["create"]),
            grant(
                &["coordination.k8s.io"],
                &["leases"],
                &[upgrade_guard::refresh::lease::LEASE_NAME],
                &["get", "update"]
            ),
        ]
    );
    // The service account gets both cluster roles, and the Lease role.
    let bound: BTreeSet<(String, String)> = of_kind(&all, "ClusterRoleBinding")
        .into_iter()
        .chain(of_kind(&all, "RoleBinding"))
        .map(|b| {
            assert_eq!(
                b["subjects"],
                json!([{"kind": "ServiceAccount", "name": "upgrade-guard", "namespace": "upgrade-guard"}])
            );
            (
                b["roleRef"]["kind"].as_str().unwrap().to_string(),
                b["roleRef"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("ClusterRole", "upgrade-guard"),
        ("ClusterRole", "upgrade-guard-refresh"),
        ("Role", "upgrade-guard"),
    ];
    assert_eq!(
        bound,
        expected
            .iter()
            .map(|(k, n)| (k.to_string(), n.to_string()))
            .collect()
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
                    _ if schema["x-kubernetes-preserve-unknown-fields"] == true => continue,
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
    onFailure: rollback
    hooks:
      preRefresh: {template: {spec: {restartPolicy: Never, containers: [{name: backup, image: "backup:1"}]}}}
      preUnit: {backoffLimit: 0, template: {spec: {restartPolicy: Never, containers: [{name: switch, image: "tool:1"}]}}}
      postUnit: {template: {spec: {restartPolicy: OnFailure, containers: [{name: check, image: "tool:1"}]}}}
      postRefresh: {template: {spec: {restartPolicy: Never, containers: [{name: migrate, image: "tool:1"}]}}}
      timeoutSeconds: 300
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
        json!({"selector": {}, "refresh": {"onFailure": "undo"}}),
        json!({"selector": {}, "refresh": {"hooks": {"timeoutSeconds": 0}}}),
        json!({"selector": {}, "refresh": {"hooks": {"preUnit": {"backoffLimit": 1}}}}),
        json!({"selector": {}, "refresh": {"hooks": {"midUnit": {"template": {}}}}}),
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

/// The documented mTLS set-up names the user the API server will pick for
/// the webhooks' Service, in both webhook plugins.
#[test]
fn the_admission_configuration_example_presents_a_client_certificate_to_the_webhooks() {
    let read = |path: &str| -> Value {
        let text = std::fs::read_to_string(root().join(path)).unwrap();
        serde_yaml_ng::from_str(&text).unwrap()
    };
    let config = read("docs/examples/admission-configuration.yaml");
    let kubeconfig = read("docs/examples/webhook-kubeconfig.yaml");
    assert_eq!(config["kind"], "AdmissionConfiguration");
    let plugins: BTreeSet<&str> = config["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["configuration"]["kind"], "WebhookAdmissionConfiguration");
            let file = p["configuration"]["kubeConfigFile"].as_str().unwrap();
            assert!(file.ends_with("/webhook-kubeconfig.yaml"), "{file}");
            p["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        plugins,
        BTreeSet::from(["MutatingAdmissionWebhook", "ValidatingAdmissionWebhook"])
    );
    let all = objects("manifests");
    for webhooks in of_kind(&all, "MutatingWebhookConfiguration")
        .into_iter()
        .chain(of_kind(&all, "ValidatingWebhookConfiguration"))
    {
        let service = &webhooks["webhooks"][0]["clientConfig"]["service"];
        assert_eq!(service["port"], 443, "a host name without :PORT");
        let host = format!(
            "{}.{}.svc",
            service["name"].as_str().unwrap(),
            service["namespace"].as_str().unwrap()
        );
        let user = kubeconfig["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == host.as_str())
            .unwrap_or_else(|| panic!("no kubeconfig user {host}"));
        assert!(user["user"]["client-certificate"].is_string());
        assert!(user["user"]["client-key"].is_string());
    }
}
