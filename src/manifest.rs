//! Manifest sets as GitOps repositories and `kubectl get -o yaml` hold them:
//! files or directories of multi-document YAML or JSON, `List`s unwrapped.

use std::collections::HashMap;
use std::path::Path;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde::Deserialize;

use crate::cluster::Snapshot;
use crate::workload::{Workload, WorkloadKind};

/// One object and where it was read.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `deploy/db.yaml: document 2` (with `item 3` inside a List).
    pub source: String,
    pub value: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct InputError {
    pub location: String,
    pub message: String,
}

impl InputError {
    fn new(location: impl Into<String>, message: impl ToString) -> Self {
        InputError {
            location: location.into(),
            message: message.to_string(),
        }
    }
}

/// Parses every document of a YAML text, or every value of a JSON stream
/// (kubectl prints several objects as concatenated JSON).
pub fn parse(text: &str, source: &str) -> Result<Vec<Manifest>, InputError> {
    let mut out = Vec::new();
    parse_each(text, source, &mut |m| {
        out.push(m);
        Ok(())
    })?;
    Ok(out)
}

/// [`parse`], handing each object on as it is read, so a caller keeps only
/// what it needs of a large repository.
fn parse_each(text: &str, source: &str, each: &mut Each) -> Result<(), InputError> {
    if text.trim_start().starts_with(['{', '[']) {
        let stream = serde_json::Deserializer::from_str(text).into_iter::<Object>();
        for (i, value) in stream.enumerate() {
            let location = format!("{source}: document {}", i + 1);
            let Object(value) = value.map_err(|e| InputError::new(&location, e))?;
            document(value, location, each)?;
        }
        return Ok(());
    }
    let documents = crate::yaml::documents(text).map_err(|e| InputError::new(source, e))?;
    for (i, doc) in documents.enumerate() {
        let location = format!("{source}: document {}", i + 1);
        let Object(value) = Object::deserialize(doc).map_err(|e| InputError::new(&location, e))?;
        document(value, location, each)?;
    }
    Ok(())
}

type Each<'a> = dyn FnMut(Manifest) -> Result<(), InputError> + 'a;

/// A JSON value read from YAML or JSON in one pass, refusing a key given
/// twice (serde_json's own map would silently keep the last one).
struct Object(serde_json::Value);

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectVisitor).map(Object)
    }
}

struct ObjectVisitor;

impl<'de> serde::de::Visitor<'de> for ObjectVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML or JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Object(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(out.into())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Object(value) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate entry with key {}",
                    serde_json::Value::from(crate::quoted::bounded(&key))
                )));
            }
            out.insert(key, value);
        }
        Ok(out.into())
    }
}

fn document(value: serde_json::Value, location: String, each: &mut Each) -> Result<(), InputError> {
    match value {
        serde_json::Value::Null => Ok(()),
        serde_json::Value::Object(_) => unwrap_list(value, location, each),
        other => Err(InputError::new(
            location,
            format!("expected a Kubernetes object, found {}", json_type(&other)),
        )),
    }
}

fn unwrap_list(
    mut value: serde_json::Value,
    location: String,
    each: &mut Each,
) -> Result<(), InputError> {
    let is_list = value
        .get("kind")
        .and_then(|k| k.as_str())
        .is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some();
    if !is_list {
        if value.get("kind").and_then(|k| k.as_str()).is_none() {
            return Err(InputError::new(location, "the object has no kind"));
        }
        return each(Manifest {
            source: location,
            value,
        });
    }
    let serde_json::Value::Array(items) = value["items"].take() else {
        return Err(InputError::new(location, "items: expected a list"));
    };
    for (j, item) in items.into_iter().enumerate() {
        unwrap_list(item, format!("{location}: item {}", j + 1), each)?;
    }
    Ok(())
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "nothing",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Reads a file, every `.yaml`/`.yml`/`.json` file below a directory (in
/// path order), or standard input for `-`.
pub fn read(path: &str) -> Result<Vec<Manifest>, InputError> {
    let mut out = Vec::new();
    read_each(path, &mut |m| {
        out.push(m);
        Ok(())
    })?;
    Ok(out)
}

/// [`read`], one object at a time.
fn read_each(path: &str, each: &mut Each) -> Result<(), InputError> {
    if path == "-" {
        let text = std::io::read_to_string(std::io::stdin())
            .map_err(|e| InputError::new("standard input", e))?;
        return parse_each(&text, "standard input", each);
    }
    for file in
        crate::yaml::files(Path::new(path)).map_err(|e| InputError::new(e.path, e.source))?
    {
        let shown = file.display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|e| InputError::new(&shown, e))?;
        parse_each(&text, &shown, each)?;
    }
    Ok(())
}

/// What deciding needs of a manifest set: its workloads, keyed for pairing,
/// and its claims and pods. Nothing else is kept, so a repository of thousands of
/// objects costs little more than its workloads.
#[derive(Debug, Default)]
pub struct WorkloadSet {
    /// With where each was read.
    pub workloads: Vec<(String, Workload)>,
    /// Claims and pods, for lookups.
    pub claims: Snapshot,
    /// Every object read, of any kind.
    pub objects: usize,
    index: HashMap<Key, usize>,
}

pub type Key = (WorkloadKind, String, String);

pub fn key(w: &Workload) -> Key {
    (w.kind(), w.namespace().to_string(), w.name().to_string())
}

impl WorkloadSet {
    /// [`read`] into a set; a second object with the same kind, namespace
    /// and name is an error.
    pub fn read(path: &str) -> Result<Self, InputError> {
        let mut set = WorkloadSet::default();
        read_each(path, &mut |m| set.add(m))?;
        Ok(set)
    }

    fn add(&mut self, mut m: Manifest) -> Result<(), InputError> {
        self.objects += 1;
        let core = m.value.get("apiVersion").and_then(|v| v.as_str()) == Some("v1");
        match m.value.get("kind").and_then(|v| v.as_str()) {
            Some("PersistentVolumeClaim") if core => {
                let claim: PersistentVolumeClaim =
                    serde_json::from_value(m.value).map_err(|e| InputError::new(&m.source, e))?;
                self.claims.insert_claim(&claim);
                return Ok(());
            }
            Some("Pod") if core => {
                let pod =
                    serde_json::from_value(m.value).map_err(|e| InputError::new(&m.source, e))?;
                self.claims.insert_pod(pod);
                return Ok(());
            }
            _ => {}
        }
        // No decision reads them, and kubectl's output is half managed fields.
        if let Some(meta) = m.value.get_mut("metadata").and_then(|v| v.as_object_mut()) {
            meta.remove("managedFields");
        }
        let Some(w) = Workload::from_value(m.value).map_err(|e| InputError::new(&m.source, e))?
        else {
            return Ok(());
        };
        let key = key(&w);
        if let Some(&first) = self.index.get(&key) {
            return Err(InputError::new(
                &m.source,
                format!(
                    "{} {}/{} is also defined at {}",
                    w.kind(),
                    w.namespace(),
                    w.name(),
                    self.workloads[first].0
                ),
            ));
        }
        self.index.insert(key, self.workloads.len());
        self.workloads.push((m.source, w));
        Ok(())
    }

    /// Where the workload with this key is in [`Self::workloads`].
    pub fn position(&self, key: &Key) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// The objects a cluster would hold, for lookups during a decision.
    pub fn into_snapshot(self) -> Snapshot {
        let mut snapshot = self.claims;
        for (_, w) in self.workloads {
            snapshot.insert_workload(w);
        }
        snapshot
    }
}
