//! The review the server benches send: the recorded set-image
//! AdmissionReview, its StatefulSet grown to 5 containers and 20 env vars,
//! as the API server sends it: compact, its fields in the order of Go's
//! types.

use serde_json::{Value, json};

pub const RECORDED: &str = include_str!("../../tests/data/apiserver/sts-update-set-image.json");

/// The recorded review, its new object's `db` container on `image`.
pub fn five_containers(image: &str) -> Value {
    let mut review: Value = serde_json::from_str(RECORDED).expect("the recorded review");
    for object in ["oldObject", "object"] {
        let containers = &mut review["request"][object]["spec"]["template"]["spec"]["containers"];
        let db = containers[0].clone();
        let mut list = vec![db];
        for (i, name) in ["backup", "exporter", "proxy", "log-shipper"]
            .iter()
            .enumerate()
        {
            let mut c = list[0].clone();
            c["name"] = json!(name);
            c["image"] = json!(format!("registry.example.com/tools/{name}:0.{i}.1"));
            list.push(c);
        }
        for c in list.iter_mut() {
            c["env"] = json!(
                (0..4)
                    .map(|i| json!({"name": format!("SETTING_{i}"), "value": format!("value-{i}")}))
                    .collect::<Vec<_>>()
            );
            c["resources"] = json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}});
            c["readinessProbe"] = json!({"tcpSocket": {"port": 5432}, "periodSeconds": 5});
        }
        *containers = json!(list);
    }
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!(image);
    review
}

/// `value` as the API server sends it: compact, and the fields of the
/// review, its request, its objects and every metadata in the order of
/// Go's types (`resource` before `object`, as recorded in
/// tests/data/apiserver/). serde_json's `Value` keeps keys sorted, which
/// puts `object` before `resource`: no API server sends that.
pub fn compact(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_in_go_order(value, "", &mut out);
    out
}

/// `value` with its keys sorted, as serde_json writes a `Value`.
#[allow(dead_code)] // the load bench's
pub fn keys_sorted(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON")
}

/// The fields of the Go type under `key`, in its order; fields not named
/// follow, sorted.
fn go_order(key: &str) -> &'static [&'static str] {
    match key {
        "" => &["kind", "apiVersion", "request", "response"],
        "request" => &[
            "uid",
            "kind",
            "resource",
            "subResource",
            "requestKind",
            "requestResource",
            "requestSubResource",
            "name",
            "namespace",
            "operation",
            "userInfo",
            "object",
            "oldObject",
            "dryRun",
            "options",
        ],
        "object" | "oldObject" => &["kind", "apiVersion", "metadata", "spec", "status"],
        "metadata" => &[
            "name",
            "generateName",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "labels",
            "annotations",
            "ownerReferences",
            "finalizers",
            "managedFields",
        ],
        _ => &[],
    }
}

fn write_in_go_order(value: &Value, key: &str, out: &mut Vec<u8>) {
    match value {
        Value::Object(fields) => {
            let order = go_order(key);
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort_by_key(|k| order.iter().position(|o| o == k).unwrap_or(order.len()));
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).expect("JSON");
                out.push(b':');
                write_in_go_order(&fields[k], k, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_in_go_order(item, key, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("JSON"),
    }
}

/// The recorded review, compact.
pub fn recorded() -> Vec<u8> {
    compact(&serde_json::from_str(RECORDED).expect("the recorded review"))
}

/// The recorded set-image review with `containers` containers of `env`
/// entries each (the new object's first one moved to 1.8.0), with or
/// without managedFields, and selected by the example policy or by none.
#[allow(dead_code)] // the load bench's
pub fn matrix_review(containers: usize, env: usize, managed_fields: bool, governed: bool) -> Value {
    let mut review: Value = serde_json::from_str(RECORDED).expect("the recorded review");
    for object in ["oldObject", "object"] {
        let o = &mut review["request"][object];
        let db = o["spec"]["template"]["spec"]["containers"][0].clone();
        let list: Vec<Value> = (0..containers)
            .map(|i| {
                let mut c = db.clone();
                if i > 0 {
                    c["name"] = json!(format!("sidecar-{i}"));
                    c["image"] = json!(format!("registry.example.com/tools/sidecar-{i}:0.{i}.1"));
                }
                c["env"] = json!(
                    (0..env)
                        .map(|e| json!({"name": format!("SETTING_{e}"), "value": format!("value-{e}")}))
                        .collect::<Vec<_>>()
                );
                c
            })
            .collect();
        o["spec"]["template"]["spec"]["containers"] = json!(list);
        if !managed_fields && let Some(meta) = o["metadata"].as_object_mut() {
            meta.remove("managedFields");
        }
        if !governed {
            o["metadata"]["labels"] = json!({"app.kubernetes.io/name": "web"});
        }
    }
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("registry.example.com/shop/db:1.8.0");
    review
}

/// A pod CREATE as the StatefulSet controller sends it (the pod of
/// tests/data/pods/), mounting its claim or, without `claim`, none.
#[allow(dead_code)] // the load bench's
pub fn pod_create(claim: bool) -> Value {
    let mut pod: Value =
        serde_json::from_str(include_str!("../../tests/data/pods/pod-db-0.json")).expect("the pod");
    if !claim {
        pod["spec"]["volumes"] = json!([{"name": "cache", "emptyDir": {}}]);
        pod["spec"]["containers"][0]["volumeMounts"] = json!([]);
    }
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:statefulset-controller",
                "uid": "6f1e2d1c-0000-4000-8000-000000000001",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions", "fieldManager": "kube-controller-manager"}
        }
    })
}

/// The benches' 13.7 kB review: five containers, compact.
#[allow(dead_code)] // the load, review_loop and text_order benches'
pub fn five_containers_compact() -> Vec<u8> {
    compact(&five_containers("registry.example.com/shop/db:1.8.0"))
}

/// The load bench's matrix of reviews: (name, compact body).
#[allow(dead_code)] // the load and review_loop benches'
pub fn review_matrix() -> Vec<(String, Vec<u8>)> {
    let mut reviews = Vec::new();
    for containers in [1, 5, 10] {
        for env in [0, 4, 20] {
            reviews.push((
                format!("sts {containers}c {env}env mf governed"),
                compact(&matrix_review(containers, env, true, true)),
            ));
        }
    }
    reviews.push((
        "sts 5c 20env no-mf governed".into(),
        compact(&matrix_review(5, 20, false, true)),
    ));
    // What a client other than the API server may send: `object` before
    // `resource`, so each object is scanned as text before it is read.
    reviews.push((
        "sts 5c 20env mf governed, keys sorted".into(),
        keys_sorted(&matrix_review(5, 20, true, true)),
    ));
    reviews.push((
        "sts 5c 20env mf ungoverned".into(),
        compact(&matrix_review(5, 20, true, false)),
    ));
    reviews.push(("pod CREATE, no claim".into(), compact(&pod_create(false))));
    reviews.push(("pod CREATE, a claim".into(), compact(&pod_create(true))));
    reviews
}
