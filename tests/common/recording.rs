//! The watch events a real API server sent during a refresh
//! (tests/data/recordings/), and the StatefulSet and pods they add up to.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

/// Every event of `tests/data/recordings/NAME`, in order.
pub fn events(name: &str) -> Vec<Value> {
    std::fs::read_to_string(super::root().join("tests/data/recordings").join(name))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The StatefulSet and its pods as the watch has shown them so far.
#[derive(Clone, Default, Debug)]
pub struct Watched {
    pub sts: Option<Value>,
    pub pods: BTreeMap<String, Value>,
}

impl Watched {
    /// After event `upto` of the recorded refresh.
    pub fn at(upto: usize) -> Watched {
        let mut w = Watched::default();
        for event in &events("refresh-statefulset.jsonl")[..=upto] {
            w.apply(event);
        }
        w
    }

    pub fn apply(&mut self, event: &Value) {
        let object = &event["object"];
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        match (
            object["kind"].as_str().unwrap(),
            event["type"].as_str().unwrap(),
        ) {
            ("StatefulSet", "DELETED") => self.sts = None,
            ("StatefulSet", _) => self.sts = Some(object.clone()),
            ("Pod", "DELETED") => {
                self.pods.remove(&name);
            }
            ("Pod", _) => {
                self.pods.insert(name, object.clone());
            }
            _ => {}
        }
    }

    pub fn typed_pods(&self) -> Vec<Pod> {
        self.pods
            .values()
            .map(|p| serde_json::from_value(p.clone()).unwrap())
            .collect()
    }
}
