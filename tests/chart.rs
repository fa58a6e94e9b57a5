//! The Helm chart (charts/upgrade-guard) as real Helm renders it. The renders
//! are committed in tests/fixtures/chart/, one per values file of
//! charts/test-values/; charts/render.sh makes them with Helm's own library
//! and CI re-runs it and fails if they differ, so what is read here is what
//! `helm template` makes of the chart.
//!
//! Equivalence with manifests/: with default values, release and namespace
//! `upgrade-guard`, the chart renders the objects the kustomize base builds,
//! identified by (apiVersion, kind, namespace, name), with equal bodies. The
//! only differences allowed are listed by name below (`CERT_JOB`,
//! `NAMESPACE`) and in `without_helm`: the labels Helm's conventions add and
//! the hook annotations. Comments and key order do not count, nor how a
//! number is written (`1` and `1.0`); every value does, strings and numbers
//! apart. The CRD, in the chart's crds/, is in every render (as with
//! `helm template --include-crds`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::tools::tool;
use common::*;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, PodTemplateSpec, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use upgrade_guard::manifest;
use upgrade_guard::policy::{Policy, PolicySet};

/// Release and namespace of every render (charts/render.py).
const RELEASE: &str = "upgrade-guard";

/// Only in the chart, by default: the certificate hook Job
/// (certificates.mode=job) and the ServiceAccount and RBAC it runs with.
const CERT_JOB: [(&str, &str); 6] = [
    ("ServiceAccount", "upgrade-guard-certs"),
    ("Role", "upgrade-guard-certs"),
    ("RoleBinding", "upgrade-guard-certs"),
    ("ClusterRole", "upgrade-guard-certs"),
    ("ClusterRoleBinding", "upgrade-guard-certs"),
    ("Job", "upgrade-guard-certs"),
];

/// Only in manifests/: Helm installs into a release namespace that already
/// exists (it keeps the release record there), so the chart cannot own it;
/// its README has the namespace made and labelled instead.
const NAMESPACE: [(&str, &str); 1] = [("Namespace", "upgrade-guard")];

/// Labels Helm's chart conventions add to every templated object.
const HELM_LABELS: [&str; 4] = [
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
];

/// Kinds that `namespace:` of a kustomization leaves alone.
const CLUSTER_SCOPED: [&str; 7] = [
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

// ---- Reading renders, values and manifests. ----

fn render(case: &str) -> Vec<Value> {
    read_objects(&fixture(&format!("chart/{case}.yaml")))
}

fn read_objects(path: &Path) -> Vec<Value> {
    manifest::read(path.to_str().unwrap())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|m| m.value)
        .collect()
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match serde_yaml_ng::from_str(&text).unwrap() {
        Value::Null => json!({}),
        v => v,
    }
}

/// The values file a render was made with.
fn test_values(case: &str) -> Value {
    yaml(&root().join(format!("charts/test-values/{case}.yaml")))
}

/// The chart's defaults.
fn chart_values() -> Value {
    yaml(&root().join("charts/upgrade-guard/values.yaml"))
}

/// Every values file, by case name.
fn cases() -> BTreeSet<String> {
    std::fs::read_dir(root().join("charts/test-values"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The text after `# refused: ` in a values file: what Helm must say.
fn refusal(case: &str) -> Option<String> {
    let text =
        std::fs::read_to_string(root().join(format!("charts/test-values/{case}.yaml"))).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("# refused: "))
        .map(str::to_string)
}

fn rendered_cases() -> Vec<String> {
    cases()
        .into_iter()
        .filter(|c| refusal(c).is_none())
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|v| v["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(found.len(), 1, "one {kind}, found {}", found.len());
    found[0]
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|v| v["kind"] == kind && v["metadata"]["name"] == name)
}

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap()
}

/// The objects a kustomization builds, for the features manifests/ and
/// certs/cert-manager/ use: `resources` (files, or directories with their own
/// kustomization), `patches` whose target the patch itself names, and
/// `namespace`. the_kustomizations_read_here_are_what_kubectl_builds holds
/// it to real kustomize.
fn kustomization(dir: &Path) -> Vec<Value> {
    let k = yaml(&dir.join("kustomization.yaml"));
    let mut objects = Vec::new();
    for resource in k["resources"].as_array().unwrap() {
        let path = dir.join(resource.as_str().unwrap());
        if path.is_dir() {
            objects.extend(kustomization(&path));
        } else {
            objects.extend(read_objects(&path));
        }
    }
    for patch in k["patches"].as_array().into_iter().flatten() {
        let patch: Value = serde_yaml_ng::from_str(patch["patch"].as_str().unwrap()).unwrap();
        let target = objects
            .iter_mut()
            .find(|o| id(o).1 == id(&patch).1 && o["metadata"]["name"] == patch["metadata"]["name"])
            .unwrap_or_else(|| panic!("no target for the patch {patch}"));
        merge_patch(target, &patch);
    }
    if let Some(namespace) = k["namespace"].as_str() {
        for o in &mut objects {
            if !CLUSTER_SCOPED.contains(&o["kind"].as_str().unwrap()) {
                o["metadata"]["namespace"] = json!(namespace);
            }
        }
    }
    objects
}

/// RFC 7386: what a strategic merge patch does to plain maps.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().unwrap();
    for (key, value) in fields {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

// ---- The comparison. ----

/// (apiVersion, kind, namespace, name); the namespace is empty for a
/// cluster-scoped object.
type Id = (String, String, String, String);

fn id(v: &Value) -> Id {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        text(&v["apiVersion"]),
        text(&v["kind"]),
        text(&v["metadata"]["namespace"]),
        text(&v["metadata"]["name"]),
    )
}

fn shown(id: &Id) -> String {
    match id.2.as_str() {
        "" => format!("{} {}", id.1, id.3),
        ns => format!("{} {ns}/{}", id.1, id.3),
    }
}

/// The object without what Helm adds to its metadata: `HELM_LABELS` and the
/// `helm.sh/hook*` annotations. Nested labels (pod templates, selectors) are
/// compared whole.
fn without_helm(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        drop_keys(meta, "labels", |k| HELM_LABELS.contains(&k));
        drop_keys(meta, "annotations", |k| k.starts_with("helm.sh/hook"));
    }
    v
}

fn drop_keys(meta: &mut Map<String, Value>, field: &str, drop: impl Fn(&str) -> bool) {
    if let Some(Value::Object(map)) = meta.get_mut(field) {
        map.retain(|k, _| !drop(k));
        if map.is_empty() {
            meta.remove(field);
        }
    }
}

/// Where two JSON values differ, one line per path. Numbers compare by value
/// (`1` and `1.0` are one number); everything else exactly.
fn diff(a: &Value, b: &Value, names: (&str, &str), at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()).collect::<BTreeSet<_>>() {
                let here = format!("{at}/{key}");
                match (x.get(key), y.get(key)) {
                    (Some(p), Some(q)) => diff(p, q, names, &here, out),
                    (Some(p), None) => out.push(format!("{here}: {p} in {} only", names.0)),
                    (None, Some(q)) => out.push(format!("{here}: {q} in {} only", names.1)),
                    (None, None) => unreachable!(),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(p, q, names, &format!("{at}/{i}"), out);
            }
        }
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => {}
        _ if a == b => {}
        _ => out.push(format!("{at}: {} has {a}, {} has {b}", names.0, names.1)),
    }
}

/// Every way `chart` differs from `manifests` beyond what is allowed:
/// objects listed by (kind, name) in `chart_only` or `manifests_only` may be
/// on one side only (and must be), every other object must be on both sides
/// with equal bodies but for `without_helm`.
fn differences(
    manifests: &[Value],
    chart: &[Value],
    chart_only: &[(&str, &str)],
    manifests_only: &[(&str, &str)],
) -> Vec<String> {
    let mut out = Vec::new();
    let mut index = |objects: &[Value], side: &str| {
        let mut map = BTreeMap::new();
        for o in objects {
            if map.insert(id(o), o.clone()).is_some() {
                out.push(format!("{}: twice in {side}", shown(&id(o))));
            }
        }
        map
    };
    let m = index(manifests, "manifests/");
    let c = index(chart, "the chart");
    let listed =
        |list: &[(&str, &str)], id: &Id| list.iter().any(|(k, n)| id.1 == *k && id.3 == *n);
    for (id, want) in &m {
        match (c.get(id), listed(manifests_only, id)) {
            (None, true) => {}
            (None, false) => out.push(format!("{}: missing from the chart", shown(id))),
            (Some(_), true) => out.push(format!(
                "{}: listed as manifests-only, but the chart has it",
                shown(id)
            )),
            (Some(got), false) => {
                let mut paths = Vec::new();
                let names = ("manifests/", "the chart");
                diff(
                    &without_helm(want),
                    &without_helm(got),
                    names,
                    "",
                    &mut paths,
                );
                out.extend(paths.into_iter().map(|p| format!("{}: {p}", shown(id))));
            }
        }
    }
    for id in c.keys() {
        match (m.contains_key(id), listed(chart_only, id)) {
            (false, false) => out.push(format!("{}: only in the chart", shown(id))),
            (true, true) => out.push(format!(
                "{}: listed as chart-only, but manifests/ has it",
                shown(id)
            )),
            _ => {}
        }
    }
    for (kind, name) in chart_only {
        if !c.keys().any(|id| id.1 == *kind && id.3 == *name) {
            out.push(format!("{kind} {name}: listed as chart-only, not rendered"));
        }
    }
    for (kind, name) in manifests_only {
        if !m.keys().any(|id| id.1 == *kind && id.3 == *name) {
            out.push(format!(
                "{kind} {name}: listed as manifests-only, not in manifests/"
            ));
        }
    }
    out
}

#[test]
fn the_default_render_is_the_manifests_but_for_the_listed_objects_and_helm_labels() {
    let manifests = kustomization(&root().join("manifests"));
    let chart = render("default");
    let found = differences(&manifests, &chart, &CERT_JOB, &NAMESPACE);
    assert!(found.is_empty(), "{found:#?}");
    // Not vacuous: every object of manifests/ but the namespace was compared.
    assert_eq!(
        chart.len(),
        manifests.len() - NAMESPACE.len() + CERT_JOB.len()
    );
    // Helm's labels are really there, on every templated object.
    for o in chart
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
    {
        for label in HELM_LABELS {
            assert!(o["metadata"]["labels"][label].is_string(), "{label} on {o}");
        }
    }
    // The namespace left out: the chart's README makes it with manifests/' labels.
    let readme = std::fs::read_to_string(root().join("charts/upgrade-guard/README.md")).unwrap();
    let namespace = one(&manifests, "Namespace");
    assert!(readme.contains(&format!("kubectl create namespace {}", name(namespace))));
    for (key, value) in namespace["metadata"]["labels"].as_object().unwrap() {
        if key != "app.kubernetes.io/name" {
            let label = format!("{key}={}", value.as_str().unwrap());
            assert!(
                readme.contains(&label),
                "the chart's README must set {label}"
            );
        }
    }
}

#[test]
fn the_comparison_reports_a_real_difference_and_nothing_else() {
    let manifests = kustomization(&root().join("manifests"));
    let chart = render("default");
    let with = |change: &dyn Fn(&mut Vec<Value>)| {
        let mut copy = chart.clone();
        change(&mut copy);
        differences(&manifests, &copy, &CERT_JOB, &NAMESPACE)
    };
    let find = |objects: &mut Vec<Value>, kind: &str| -> usize {
        objects.iter().position(|o| o["kind"] == kind).unwrap()
    };
    // What Helm may add, and a changed chart version, are no difference.
    let allowed = with(&|objects| {
        let i = find(objects, "Deployment");
        objects[i]["metadata"]["labels"]["helm.sh/chart"] = json!("upgrade-guard-9.9.9");
        objects[i]["metadata"]["annotations"] = json!({"helm.sh/hook-weight": "5"});
    });
    assert_eq!(allowed, Vec::<String>::new());
    let one_difference = |change: &dyn Fn(&mut Vec<Value>), expected: &str| {
        let found = with(change);
        assert_eq!(found.len(), 1, "{expected}: {found:#?}");
        assert!(found[0].contains(expected), "{expected}: {found:#?}");
    };
    one_difference(
        &|o| {
            let i = find(o, "Deployment");
            o[i]["spec"]["replicas"] = json!(3);
        },
        "Deployment upgrade-guard/upgrade-guard: /spec/replicas: manifests/ has 2, the chart has 3",
    );
    one_difference(
        &|o| {
            let i = find(o, "Deployment");
            o[i]["spec"]["replicas"] = json!("2");
        },
        "/spec/replicas",
    );
    one_difference(
        &|o| {
            let i = find(o, "Service");
            o[i]["metadata"]["labels"]["team"] = json!("db");
        },
        "Service upgrade-guard/upgrade-guard: /metadata/labels/team: \"db\" in the chart only",
    );
    one_difference(
        &|o| {
            let i = find(o, "Deployment");
            o[i]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] =
                json!("x");
        },
        "/spec/template/metadata/labels/app.kubernetes.io/instance: \"x\" in the chart only",
    );
    one_difference(
        &|o| {
            let i = find(o, "ValidatingWebhookConfiguration");
            o[i]["webhooks"][0]["timeoutSeconds"] = json!(10);
        },
        "/webhooks/0/timeoutSeconds",
    );
    one_difference(
        &|o| {
            let i = find(o, "PodDisruptionBudget");
            o.remove(i);
        },
        "PodDisruptionBudget upgrade-guard/upgrade-guard: missing from the chart",
    );
    one_difference(
        &|o| {
            let i = find(o, "PriorityClass");
            let mut extra = o[i].clone();
            extra["metadata"]["name"] = json!("extra");
            o.push(extra);
        },
        "PriorityClass extra: only in the chart",
    );
    one_difference(
        &|o| {
            let i = find(o, "Job");
            o.remove(i);
        },
        "Job upgrade-guard-certs: listed as chart-only, not rendered",
    );
    // Another namespace is another object: one missing, one extra.
    let moved = with(&|o| {
        let i = find(o, "Service");
        o[i]["metadata"]["namespace"] = json!("elsewhere");
    });
    assert_eq!(
        moved,
        [
            "Service upgrade-guard/upgrade-guard: missing from the chart",
            "Service elsewhere/upgrade-guard: only in the chart",
        ]
    );
}

/// kubectl's own kustomize builds what `kustomization` reads, so the
/// comparisons above are against what `kubectl apply -k` applies.
#[test]
fn the_kustomizations_read_here_are_what_kubectl_builds() {
    let Some(kubectl) = tool("kubectl", "apt-get install -y kubernetes-client") else {
        return;
    };
    for dir in ["manifests", "certs/cert-manager"] {
        let out = std::process::Command::new(&kubectl)
            .args(["kustomize", dir])
            .current_dir(root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let built: Vec<Value> =
            manifest::parse(&String::from_utf8(out.stdout).unwrap(), "kubectl kustomize")
                .unwrap()
                .into_iter()
                .map(|m| m.value)
                .collect();
        let read = kustomization(&root().join(dir));
        let found = differences(&built, &read, &[], &[]);
        assert!(found.is_empty(), "{dir}: {found:#?}");
        assert_eq!(built.len(), read.len());
    }
}

#[test]
fn the_cert_manager_render_is_the_cert_manager_overlay() {
    let overlay = kustomization(&root().join("certs/cert-manager"));
    let chart = render("cert-manager");
    let found = differences(&overlay, &chart, &[], &NAMESPACE);
    assert!(found.is_empty(), "{found:#?}");
    assert!(of_kind(&chart, "Job").is_empty());
    // Both webhooks take their CA from the Certificate the server's Secret comes from.
    let serving = named(&chart, "Certificate", "upgrade-guard-serving").unwrap();
    let secret = tls_secret(&chart);
    assert_eq!(serving["spec"]["secretName"], secret.as_str());
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let webhooks = one(&chart, kind);
        assert_eq!(
            webhooks["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!("{RELEASE}/{}", name(serving)),
        );
    }
    // The default render has no such annotation.
    for webhooks in of_kind(&render("default"), "ValidatingWebhookConfiguration") {
        assert!(webhooks["metadata"].get("annotations").is_none());
    }
}

#[test]
fn cert_manager_with_an_issuer_of_the_cluster_bootstraps_none() {
    let values = &test_values("cert-manager-issuer")["certificates"]["certManager"];
    let chart = render("cert-manager-issuer");
    assert!(of_kind(&chart, "Issuer").is_empty());
    let certificate = one(&chart, "Certificate");
    assert_eq!(certificate["spec"]["issuerRef"], values["issuerRef"]);
    assert_eq!(certificate["spec"]["duration"], values["duration"]);
    assert_eq!(certificate["spec"]["renewBefore"], values["renewBefore"]);
    assert_ne!(
        values["duration"],
        chart_values()["certificates"]["certManager"]["duration"]
    );
}

#[test]
fn the_network_policy_render_is_the_optional_manifest() {
    let manifest = read_objects(&root().join("manifests/network-policy/networkpolicy.yaml"));
    let chart = render("network-policy");
    let policies = of_kind(&chart, "NetworkPolicy")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    let found = differences(&manifest, &policies, &[], &[]);
    assert!(found.is_empty(), "{found:#?}");
    assert!(of_kind(&render("default"), "NetworkPolicy").is_empty());
}

// ---- Every object reads as its type. ----

/// Typed and back again is the same JSON: no field its type does not know.
fn typed<T: DeserializeOwned + Serialize>(v: &Value) -> T {
    let t: T =
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{}: {e}", shown(&id(v))));
    let mut unknown = Vec::new();
    let back = serde_json::to_value(&t).unwrap();
    diff(v, &back, ("the render", "its type"), "", &mut unknown);
    assert!(
        unknown.is_empty(),
        "{} has what its type does not know: {unknown:#?}",
        shown(&id(v))
    );
    t
}

fn policies_of(text: &str, source: &str) -> Vec<Policy> {
    PolicySet::parse(text, source).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_object_of_every_render_reads_as_its_type_with_nothing_left_over() {
    let mut kinds = BTreeSet::new();
    for case in rendered_cases() {
        for v in render(&case) {
            let kind = v["kind"].as_str().unwrap().to_string();
            match kind.as_str() {
                "ServiceAccount" => drop(typed::<ServiceAccount>(&v)),
                "ClusterRole" => drop(typed::<ClusterRole>(&v)),
                "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(&v)),
                "Role" => drop(typed::<Role>(&v)),
                "RoleBinding" => drop(typed::<RoleBinding>(&v)),
                "Deployment" => drop(typed::<Deployment>(&v)),
                "Service" => drop(typed::<Service>(&v)),
                "PodDisruptionBudget" => drop(typed::<PodDisruptionBudget>(&v)),
                "PriorityClass" => drop(typed::<PriorityClass>(&v)),
                "NetworkPolicy" => drop(typed::<NetworkPolicy>(&v)),
                "CustomResourceDefinition" => drop(typed::<CustomResourceDefinition>(&v)),
                "MutatingWebhookConfiguration" => drop(typed::<MutatingWebhookConfiguration>(&v)),
                "ValidatingWebhookConfiguration" => {
                    drop(typed::<ValidatingWebhookConfiguration>(&v))
                }
                "Job" => drop(typed::<Job>(&v)),
                "ConfigMap" => drop(typed::<ConfigMap>(&v)),
                // upgrade-guard's own strict parser: unknown fields are errors.
                "UpgradePolicy" => {
                    let text = serde_json::to_string(&v).unwrap();
                    assert_eq!(policies_of(&text, &case).len(), 1);
                }
                // No Rust types: the cert-manager objects are compared with
                // certs/cert-manager/ above, the Prometheus Operator's field
                // by field in metrics_objects_scrape_the_metrics_port_and_carry_the_files.
                "Issuer" | "Certificate" | "ServiceMonitor" | "PrometheusRule" => {}
                other => panic!("{case}: a kind this test does not check: {other}"),
            }
            kinds.insert(kind);
        }
    }
    assert_eq!(kinds.len(), 20, "{kinds:?}");
}

#[test]
fn every_values_file_has_its_render_or_its_refusal() {
    let fixtures: BTreeSet<String> = std::fs::read_dir(fixture("chart"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut expected = BTreeSet::new();
    let mut refused = 0;
    for case in cases() {
        match refusal(&case) {
            Some(reason) => {
                let file = format!("{case}.refused.txt");
                let text = std::fs::read_to_string(fixture(&format!("chart/{file}"))).unwrap();
                assert!(text.contains(&reason), "{file}: {text}");
                expected.insert(file);
                refused += 1;
            }
            None => {
                expected.insert(format!("{case}.yaml"));
            }
        }
    }
    // None stale, none missing.
    assert_eq!(fixtures, expected);
    assert!(refused >= 1 && refused < expected.len());
    // values.schema.json refuses, naming the field, and so do the templates.
    let text = |case: &str| {
        std::fs::read_to_string(fixture(&format!("chart/{case}.refused.txt"))).unwrap()
    };
    assert!(text("invalid-mode").contains("- at '/certificates/mode': value must be one of"));
    assert!(text("invalid-timeout").contains("- at '/webhooks/timeoutSeconds': minimum"));
    assert!(text("invalid-typo").contains("additional properties 'replica' not allowed"));
    assert!(text("invalid-single-replica").contains("templates/pdb.yaml"));
}

// ---- References between the objects, in every render. ----

fn pod_templates(objects: &[Value]) -> Vec<(String, PodTemplateSpec)> {
    let mut out = Vec::new();
    for v in objects {
        match v["kind"].as_str() {
            Some("Deployment") => out.push((
                name(v).to_string(),
                typed::<Deployment>(v).spec.unwrap().template,
            )),
            Some("Job") => out.push((name(v).to_string(), typed::<Job>(v).spec.unwrap().template)),
            _ => {}
        }
    }
    out
}

fn server(objects: &[Value]) -> (Deployment, PodSpec) {
    let d: Deployment = typed(one(objects, "Deployment"));
    let pod = d.spec.clone().unwrap().template.spec.unwrap();
    (d, pod)
}

/// The Secret the server mounts its certificate from.
fn tls_secret(objects: &[Value]) -> String {
    let (_, pod) = server(objects);
    let volume = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "tls")
        .unwrap();
    volume.secret.unwrap().secret_name.unwrap()
}

fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
}

fn arg_after<'a>(args: &'a [String], flag: &str) -> &'a str {
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag}"));
    &args[at + 1]
}

#[test]
fn the_objects_of_every_render_refer_to_each_other() {
    for case in rendered_cases() {
        let objects = render(&case);
        let has = |kind: &str, name: &str| named(&objects, kind, name).is_some();
        let (deployment, pod) = server(&objects);
        let server_labels = deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .clone()
            .unwrap()
            .labels
            .unwrap();
        // Service accounts, roles and bindings.
        for (_, template) in pod_templates(&objects) {
            let account = template.spec.unwrap().service_account_name.unwrap();
            assert!(has("ServiceAccount", &account), "{case}: {account}");
        }
        for binding in of_kind(&objects, "RoleBinding")
            .into_iter()
            .chain(of_kind(&objects, "ClusterRoleBinding"))
        {
            let role = &binding["roleRef"];
            assert!(
                has(
                    role["kind"].as_str().unwrap(),
                    role["name"].as_str().unwrap()
                ),
                "{case}: {role}"
            );
            for subject in binding["subjects"].as_array().unwrap() {
                assert_eq!(subject["kind"], "ServiceAccount");
                assert_eq!(subject["namespace"], RELEASE);
                assert!(
                    has("ServiceAccount", subject["name"].as_str().unwrap()),
                    "{case}: {subject}"
                );
            }
        }
        // The webhooks call the Service, which sends them to the server's pods only.
        let service = one(&objects, "Service");
        assert!(selects(&service["spec"]["selector"], &server_labels));
        for kind in [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ] {
            let target = &one(&objects, kind)["webhooks"][0]["clientConfig"]["service"];
            assert_eq!(target["name"], service["metadata"]["name"], "{case}");
            assert_eq!(
                target["namespace"], service["metadata"]["namespace"],
                "{case}"
            );
            let port = service["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["port"] == target["port"])
                .unwrap();
            assert_eq!(port["targetPort"], "https");
        }
        let pdb = of_kind(&objects, "PodDisruptionBudget");
        let selectors = std::iter::once(&service["spec"]["selector"])
            .chain(pdb.iter().map(|p| &p["spec"]["selector"]["matchLabels"]))
            .chain(
                of_kind(&objects, "NetworkPolicy")
                    .into_iter()
                    .map(|p| &p["spec"]["podSelector"]["matchLabels"]),
            )
            .chain(
                of_kind(&objects, "ServiceMonitor")
                    .into_iter()
                    .map(|m| &m["spec"]["selector"]["matchLabels"]),
            );
        for selector in selectors {
            for (owner, template) in pod_templates(&objects) {
                let labels = template.metadata.unwrap().labels.unwrap();
                assert_eq!(
                    selects(selector, &labels),
                    owner == name(one(&objects, "Deployment")),
                    "{case}: {selector} and {owner}"
                );
            }
        }
        // The priority class is shipped, or one the cluster has.
        if let Some(class) = &pod.priority_class_name {
            assert!(
                has("PriorityClass", class) || class.starts_with("system-"),
                "{case}: {class}"
            );
        }
        // The policies ConfigMap, when there is one, is mounted where --policies reads.
        let container = &pod.containers[0];
        let args = container.args.clone().unwrap();
        let volumes = pod.volumes.clone().unwrap();
        let policies = volumes.iter().find(|v| v.name == "policies").unwrap();
        let map_name = policies.config_map.as_ref().unwrap().name.clone();
        let mount = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "policies")
            .unwrap();
        assert_eq!(mount.mount_path, arg_after(&args, "--policies"));
        if let Some(map) = of_kind(&objects, "ConfigMap")
            .into_iter()
            .find(|m| m["metadata"]["labels"].get("grafana_dashboard").is_none())
        {
            assert_eq!(name(map), map_name, "{case}");
        }
        let tls = volumes.iter().find(|v| v.name == "tls").unwrap();
        let tls_mount = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "tls")
            .unwrap();
        assert!(arg_after(&args, "--tls-cert").starts_with(&format!("{}/", tls_mount.mount_path)));
        let secret = tls.secret.as_ref().unwrap().secret_name.clone().unwrap();
        // Whoever makes the certificate makes it into the mounted Secret.
        if let Some(job) = of_kind(&objects, "Job").first() {
            let job: Job = typed(job);
            let args = job.spec.unwrap().template.spec.unwrap().containers[0]
                .args
                .clone()
                .unwrap();
            assert_eq!(arg_after(&args, "--secret"), secret, "{case}");
        }
        if let Some(certificate) = of_kind(&objects, "Certificate")
            .into_iter()
            .find(|c| name(c).ends_with("-serving"))
        {
            assert_eq!(certificate["spec"]["secretName"], secret.as_str(), "{case}");
            let host = format!("{}.{}.svc", name(service), RELEASE);
            assert_eq!(certificate["spec"]["dnsNames"][0], host.as_str());
        }
    }
}

// ---- The certificate hook Job (certificates.mode=job, the default). ----

fn hook(v: &Value) -> (Vec<String>, i64, String) {
    let annotations = &v["metadata"]["annotations"];
    let events = annotations["helm.sh/hook"]
        .as_str()
        .unwrap_or_else(|| panic!("{} is no hook", shown(&id(v))))
        .split(',')
        .map(str::to_string)
        .collect();
    let weight = annotations["helm.sh/hook-weight"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let policy = annotations["helm.sh/hook-delete-policy"]
        .as_str()
        .unwrap()
        .to_string();
    (events, weight, policy)
}

/// (apiGroups, resources, resourceNames, verbs) of each rule.
fn grants(rules: &Value) -> Vec<(Value, Value, Value, Value)> {
    rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let field = |f: &str| r.get(f).cloned().unwrap_or(json!([]));
            (
                field("apiGroups"),
                field("resources"),
                field("resourceNames"),
                field("verbs"),
            )
        })
        .collect()
}

#[test]
fn the_cert_job_runs_hardened_with_least_privilege_around_install_and_upgrade() {
    let objects = render("default");
    let job_value = one(&objects, "Job");
    let job: Job = typed(job_value);
    let (events, job_weight, policy) = hook(job_value);
    assert_eq!(
        events,
        ["pre-install", "pre-upgrade", "post-install", "post-upgrade"]
    );
    assert_eq!(policy, "before-hook-creation,hook-succeeded");
    // What it runs with exists before it, in the same phases, and goes with it.
    for (kind, name) in CERT_JOB.iter().filter(|(k, _)| *k != "Job") {
        let v = named(&objects, kind, name).unwrap();
        let (their_events, weight, their_policy) = hook(v);
        assert_eq!(their_events, events, "{kind}");
        assert_eq!(their_policy, policy, "{kind}");
        assert!(weight < job_weight, "{kind} weight {weight}");
    }
    // The arguments name the Service, the Secret and the webhooks of this render.
    let service = one(&objects, "Service");
    let secret = tls_secret(&objects);
    let webhooks = name(one(&objects, "ValidatingWebhookConfiguration"));
    assert_eq!(
        webhooks,
        name(one(&objects, "MutatingWebhookConfiguration"))
    );
    let days = chart_values()["certificates"]["job"]["days"]
        .as_i64()
        .unwrap();
    let pod = job.spec.as_ref().unwrap().template.spec.clone().unwrap();
    let container = &pod.containers[0];
    assert_eq!(
        container.args.clone().unwrap(),
        [
            "certs",
            "--secret",
            &secret,
            "--webhooks",
            webhooks,
            "--service",
            name(service),
            "--namespace",
            service["metadata"]["namespace"].as_str().unwrap(),
            "--days",
            &days.to_string(),
        ]
    );
    // The server's image and hardening.
    let (_, server_pod) = server(&objects);
    let server_container = &server_pod.containers[0];
    assert_eq!(container.image, server_container.image);
    assert_eq!(
        container.security_context,
        server_container.security_context
    );
    assert_eq!(pod.security_context, server_pod.security_context);
    let hardening = container.security_context.clone().unwrap();
    assert_eq!(hardening.run_as_user, Some(65532));
    assert_eq!(hardening.read_only_root_filesystem, Some(true));
    assert_eq!(hardening.allow_privilege_escalation, Some(false));
    assert_eq!(hardening.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    assert_eq!(hardening.seccomp_profile.unwrap().type_, "RuntimeDefault");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    // Least privilege: the Secret by name (create cannot be named), the two
    // webhook configurations by name, nothing else.
    let account = pod.service_account_name.clone().unwrap();
    let role = named(&objects, "Role", &account).unwrap();
    assert_eq!(
        grants(&role["rules"]),
        [
            (
                json!([""]),
                json!(["secrets"]),
                json!([]),
                json!(["create"])
            ),
            (
                json!([""]),
                json!(["secrets"]),
                json!([secret]),
                json!(["get", "update"])
            ),
        ]
    );
    let cluster_role = named(&objects, "ClusterRole", &account).unwrap();
    assert_eq!(
        grants(&cluster_role["rules"]),
        [(
            json!(["admissionregistration.k8s.io"]),
            json!([
                "validatingwebhookconfigurations",
                "mutatingwebhookconfigurations"
            ]),
            json!([webhooks]),
            json!(["get", "patch"])
        )]
    );
    for kind in ["RoleBinding", "ClusterRoleBinding"] {
        let binding = named(&objects, kind, &account).unwrap();
        assert_eq!(binding["roleRef"]["name"], account.as_str());
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": account, "namespace": RELEASE}])
        );
    }
    // The other modes run no Job.
    for case in ["cert-manager", "secret"] {
        let objects = render(case);
        assert!(
            CERT_JOB
                .iter()
                .all(|(k, n)| named(&objects, k, n).is_none()),
            "{case}"
        );
    }
}

#[test]
fn a_secret_of_the_users_is_mounted_and_its_ca_given_to_both_webhooks() {
    let values = &test_values("secret")["certificates"]["secret"];
    let objects = render("secret");
    assert_eq!(tls_secret(&objects), values["name"].as_str().unwrap());
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let webhooks = one(&objects, kind);
        assert_eq!(
            webhooks["webhooks"][0]["clientConfig"]["caBundle"],
            values["caBundle"]
        );
        assert!(webhooks["metadata"].get("annotations").is_none());
    }
    assert!(of_kind(&objects, "Certificate").is_empty());
    // By default there is no caBundle in the chart: the Job writes it.
    let default = render("default");
    assert!(
        one(&default, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]
            .get("caBundle")
            .is_none()
    );
}

// ---- Values that change behaviour. ----

#[test]
fn changed_values_show_in_the_server_and_the_webhooks() {
    let values = test_values("overrides");
    let defaults = chart_values();
    let changed = |path: &str| {
        let (v, d) = (
            values.pointer(path).unwrap(),
            defaults.pointer(path).unwrap(),
        );
        assert_ne!(v, d, "{path} is the default: the case tests nothing");
        v.clone()
    };
    let objects = render("overrides");
    let (deployment, pod) = server(&objects);
    assert_eq!(
        json!(deployment.spec.as_ref().unwrap().replicas),
        changed("/replicas")
    );
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref().unwrap(),
        format!(
            "{}:{}",
            changed("/image/repository").as_str().unwrap(),
            changed("/image/tag").as_str().unwrap()
        )
    );
    assert_eq!(
        json!(container.image_pull_policy),
        changed("/image/pullPolicy")
    );
    assert_eq!(
        serde_json::to_value(&container.resources).unwrap(),
        changed("/resources")
    );
    assert_eq!(
        serde_json::to_value(&pod.image_pull_secrets).unwrap(),
        changed("/imagePullSecrets")
    );
    assert_eq!(
        serde_json::to_value(&pod.node_selector).unwrap(),
        changed("/nodeSelector")
    );
    assert_eq!(
        serde_json::to_value(&pod.tolerations).unwrap(),
        changed("/tolerations")
    );
    assert_eq!(
        json!(pod.priority_class_name),
        changed("/priorityClass/name")
    );
    assert!(of_kind(&objects, "PriorityClass").is_empty());
    let pdb: PodDisruptionBudget = typed(one(&objects, "PodDisruptionBudget"));
    assert_eq!(
        serde_json::to_value(pdb.spec.unwrap().min_available).unwrap(),
        changed("/podDisruptionBudget/minAvailable")
    );
    let job: Job = typed(one(&objects, "Job"));
    let args = job.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(
        arg_after(&args, "--days"),
        changed("/certificates/job/days").to_string()
    );
    // Every webhook: failure policy, timeout, and the namespaces they judge.
    let selector = changed("/webhooks/namespaceSelector");
    let excluded = json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", RELEASE]});
    for (kind, at, failure) in [
        ("MutatingWebhookConfiguration", 0, "/webhooks/failurePolicy"),
        (
            "ValidatingWebhookConfiguration",
            0,
            "/webhooks/failurePolicy",
        ),
        (
            "ValidatingWebhookConfiguration",
            1,
            "/webhooks/data/failurePolicy",
        ),
    ] {
        let webhook = &one(&objects, kind)["webhooks"][at];
        assert_eq!(webhook["failurePolicy"], changed(failure));
        assert_eq!(
            webhook["timeoutSeconds"],
            changed("/webhooks/timeoutSeconds")
        );
        let rendered = &webhook["namespaceSelector"];
        assert_eq!(rendered["matchLabels"], selector["matchLabels"]);
        // The chart's exclusion first, so the webhook never guards its own rollout.
        let mut expressions = vec![excluded.clone()];
        expressions.extend(
            selector["matchExpressions"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
        assert_eq!(rendered["matchExpressions"], json!(expressions));
    }
}

// ---- Policies. ----

#[test]
fn inline_policies_are_rendered_as_given_and_parse() {
    let values = test_values("policies");
    let given = values["policies"]["inline"].as_array().unwrap();
    let objects = render("policies");
    let rendered: Vec<&Value> = of_kind(&objects, "UpgradePolicy");
    assert_eq!(rendered.len(), given.len());
    for (want, got) in given.iter().zip(&rendered) {
        let mut paths = Vec::new();
        diff(want, got, ("the values", "the render"), "", &mut paths);
        assert!(paths.is_empty(), "{paths:#?}");
        let text = serde_json::to_string(got).unwrap();
        let policy = policies_of(&text, "inline").remove(0);
        assert_eq!(policy.name, want["metadata"]["name"].as_str().unwrap());
        assert_eq!(
            policy.namespace.as_deref(),
            want["metadata"]["namespace"].as_str()
        );
        let releases: Vec<String> = policy
            .releases
            .iter()
            .map(|r| r.as_str().to_string())
            .collect();
        let wanted: Vec<String> = want["spec"]["releases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        let (mut sorted, mut wanted_sorted) = (releases.clone(), wanted.clone());
        sorted.sort();
        wanted_sorted.sort();
        assert_eq!(sorted, wanted_sorted, "versions such as 1.10 stay text");
    }
    assert!(of_kind(&render("default"), "UpgradePolicy").is_empty());
}

#[test]
fn policy_files_land_where_the_server_reads_them_and_parse() {
    let values = test_values("policies");
    let files = values["policies"]["files"].as_object().unwrap();
    let objects = render("policies");
    let map: ConfigMap = typed(one(&objects, "ConfigMap"));
    let data = map.data.clone().unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        files.keys().collect::<Vec<_>>()
    );
    let mut set = Vec::new();
    for (file, text) in &data {
        assert_eq!(text, files[file].as_str().unwrap(), "{file}");
        let policies = policies_of(text, file);
        assert_eq!(policies.len(), 1);
        let declared = yaml_text(text);
        assert_eq!(
            policies[0].namespace.as_deref(),
            declared["metadata"]["namespace"].as_str(),
            "a file policy without a namespace applies in every namespace"
        );
        set.extend(policies);
    }
    PolicySet::new(set).unwrap();
    // Mounted where --policies reads, and new files roll the pods.
    let (deployment, pod) = server(&objects);
    let volume = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "policies")
        .unwrap();
    assert_eq!(volume.config_map.unwrap().name, map.metadata.name.unwrap());
    let checksum = |d: &Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .and_then(|a| a.get("checksum/policies").cloned())
    };
    let mine = checksum(&deployment).expect("a checksum of the policy files");
    let (renamed, _) = server(&render("renamed"));
    let other = checksum(&renamed).expect("a checksum of the policy files");
    assert_ne!(mine, other);
    let (default, _) = server(&render("default"));
    assert_eq!(checksum(&default), None);
}

fn yaml_text(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap()
}

// ---- Metrics. ----

#[test]
fn metrics_objects_scrape_the_metrics_port_and_carry_the_files() {
    let values = &test_values("metrics")["metrics"];
    let objects = render("metrics");
    let (_, pod) = server(&objects);
    let container = &pod.containers[0];
    let metrics_port = container
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .unwrap();
    let args = container.args.clone().unwrap();
    assert!(
        arg_after(&args, "--metrics-addr").ends_with(&format!(":{}", metrics_port.container_port))
    );
    // The ServiceMonitor scrapes the Service's port that leads there.
    let service = one(&objects, "Service");
    let monitor = one(&objects, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        monitor["metadata"]["namespace"],
        service["metadata"]["namespace"]
    );
    assert!(selects(
        &monitor["spec"]["selector"]["matchLabels"],
        &serde_json::from_value(service["metadata"]["labels"].clone()).unwrap()
    ));
    let endpoints = monitor["spec"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    let port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == endpoints[0]["port"])
        .expect("the scraped port on the Service");
    assert_eq!(port["targetPort"], "metrics");
    assert_eq!(endpoints[0]["path"], "/metrics");
    assert_eq!(
        endpoints[0]["interval"],
        values["serviceMonitor"]["interval"]
    );
    for (key, value) in values["serviceMonitor"]["labels"].as_object().unwrap() {
        assert_eq!(&monitor["metadata"]["labels"][key], value);
    }
    // The PrometheusRule holds the rules file's groups, unchanged.
    let rules_file = root().join("charts/upgrade-guard/files/prometheus-rules.yaml");
    let rule = one(&objects, "PrometheusRule");
    let mut paths = Vec::new();
    diff(
        &yaml(&rules_file)["groups"],
        &rule["spec"]["groups"],
        ("files/prometheus-rules.yaml", "the PrometheusRule"),
        "",
        &mut paths,
    );
    assert!(paths.is_empty(), "{paths:#?}");
    assert!(rule["spec"]["groups"].is_array());
    for (key, value) in values["prometheusRule"]["labels"].as_object().unwrap() {
        assert_eq!(&rule["metadata"]["labels"][key], value);
    }
    // The dashboard, byte for byte, where Grafana's sidecar looks.
    let dashboard_file = root().join("charts/upgrade-guard/files/grafana-dashboard.json");
    let text = std::fs::read_to_string(&dashboard_file).unwrap();
    let dashboard = of_kind(&objects, "ConfigMap")
        .into_iter()
        .find(|m| m["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("a ConfigMap labelled grafana_dashboard: \"1\"");
    let data = dashboard["data"].as_object().unwrap();
    assert_eq!(data.len(), 1);
    let (key, held) = data.iter().next().unwrap();
    assert!(key.ends_with(".json"));
    assert_eq!(held.as_str().unwrap(), text);
    serde_json::from_str::<Value>(&text).unwrap();
    assert_eq!(
        dashboard["metadata"]["annotations"],
        values["dashboard"]["annotations"]
    );
    // None of them by default.
    let default = render("default");
    for kind in ["ServiceMonitor", "PrometheusRule", "ConfigMap"] {
        assert!(of_kind(&default, kind).is_empty(), "{kind}");
    }
}

#[test]
fn without_the_metrics_service_port_the_probes_still_use_the_metrics_port() {
    let objects = render("no-metrics-service");
    let ports: Vec<&Value> = one(&objects, "Service")["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["name"], "https");
    let default = render("default");
    assert!(
        one(&default, "Service")["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "metrics")
    );
    let (_, pod) = server(&objects);
    let container = &pod.containers[0];
    assert!(
        container
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .any(|p| p.name.as_deref() == Some("metrics"))
    );
    let probe = container
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(serde_json::to_value(&probe.port).unwrap(), "metrics");
}

#[test]
fn the_chart_follows_the_crate_version() {
    let chart = yaml(&root().join("charts/upgrade-guard/Chart.yaml"));
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    let (_, pod) = server(&render("default"));
    let image = pod.containers[0].image.clone().unwrap();
    assert_eq!(image.rsplit_once(':').unwrap().1, env!("CARGO_PKG_VERSION"));
}
