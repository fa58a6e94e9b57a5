//! The review the server benches send: the recorded set-image
//! AdmissionReview, its StatefulSet grown to 5 containers and 20 env vars,
//! as compact JSON (the API server sends it unindented).

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

/// `value` as the API server would send it.
pub fn compact(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON")
}

/// The recorded review, compact.
pub fn recorded() -> Vec<u8> {
    compact(&serde_json::from_str(RECORDED).expect("the recorded review"))
}
