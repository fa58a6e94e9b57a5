//! Manifest sets as GitOps repositories and `kubectl get -o yaml` hold them:
//! files or directories of multi-document YAML or JSON, `List`s unwrapped.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde::Deserialize;

use crate::decide::Snapshot;
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
    if text.trim_start().starts_with(['{', '[']) {
        let stream = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
        for (i, value) in stream.enumerate() {
            let location = format!("{source}: document {}", i + 1);
            let value = value.map_err(|e| InputError::new(&location, e))?;
            document(value, location, &mut out)?;
        }
        return Ok(out);
    }
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let location = format!("{source}: document {}", i + 1);
        // Through serde_yaml_ng's own Value, which refuses a key given twice
        // (serde_json's map would silently keep the last one).
        let value = serde_yaml_ng::Value::deserialize(doc)
            .and_then(|yaml| serde_json::to_value(yaml).map_err(serde::ser::Error::custom))
            .map_err(|e| InputError::new(&location, e))?;
        document(value, location, &mut out)?;
    }
    Ok(out)
}

fn document(
    value: serde_json::Value,
    location: String,
    out: &mut Vec<Manifest>,
) -> Result<(), InputError> {
    match value {
        serde_json::Value::Null => Ok(()),
        serde_json::Value::Object(_) => unwrap_list(value, location, out),
        other => Err(InputError::new(
            location,
            format!("expected a Kubernetes object, found {}", json_type(&other)),
        )),
    }
}

fn unwrap_list(
    value: serde_json::Value,
    location: String,
    out: &mut Vec<Manifest>,
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
        out.push(Manifest {
            source: location,
            value,
        });
        return Ok(());
    }
    let serde_json::Value::Array(items) = value["items"].clone() else {
        return Err(InputError::new(location, "items: expected a list"));
    };
    for (j, item) in items.into_iter().enumerate() {
        unwrap_list(item, format!("{location}: item {}", j + 1), out)?;
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
    if path == "-" {
        let text = std::io::read_to_string(std::io::stdin())
            .map_err(|e| InputError::new("standard input", e))?;
        return parse(&text, "standard input");
    }
    let mut files = Vec::new();
    collect(Path::new(path), &mut files)?;
    let mut out = Vec::new();
    for file in files {
        let shown = file.display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|e| InputError::new(&shown, e))?;
        out.extend(parse(&text, &shown)?);
    }
    Ok(out)
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let meta =
        std::fs::metadata(path).map_err(|e| InputError::new(path.display().to_string(), e))?;
    if !meta.is_dir() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| InputError::new(path.display().to_string(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect(&entry, files)?;
        } else if entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            files.push(entry);
        }
    }
    Ok(())
}

/// The workloads of a manifest set, keyed for pairing; a second object with
/// the same kind, namespace and name is an error.
pub fn workloads(manifests: &[Manifest]) -> Result<Vec<(String, Workload)>, InputError> {
    let mut out: Vec<(String, Workload)> = Vec::new();
    for m in manifests {
        let Some(w) =
            Workload::from_value(m.value.clone()).map_err(|e| InputError::new(&m.source, e))?
        else {
            continue;
        };
        if let Some((first, _)) = out.iter().find(|(_, o)| key(o) == key(&w)) {
            return Err(InputError::new(
                &m.source,
                format!(
                    "{} {}/{} is also defined at {first}",
                    w.kind(),
                    w.namespace(),
                    w.name()
                ),
            ));
        }
        out.push((m.source.clone(), w));
    }
    Ok(out)
}

pub fn key(w: &Workload) -> (WorkloadKind, &str, &str) {
    (w.kind(), w.namespace(), w.name())
}

/// The objects a cluster would hold, for lookups during a decision.
pub fn snapshot(manifests: &[Manifest]) -> Result<Snapshot, InputError> {
    let mut snapshot = Snapshot::default();
    for (_, w) in workloads(manifests)? {
        snapshot.insert_workload(w);
    }
    for m in manifests {
        let is_claim = m.value.get("apiVersion").and_then(|v| v.as_str()) == Some("v1")
            && m.value.get("kind").and_then(|v| v.as_str()) == Some("PersistentVolumeClaim");
        if is_claim {
            let claim: PersistentVolumeClaim = serde_json::from_value(m.value.clone())
                .map_err(|e| InputError::new(&m.source, e))?;
            snapshot.insert_claim(&claim);
        }
    }
    Ok(snapshot)
}
