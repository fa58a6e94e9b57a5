//! The version a PersistentVolumeClaim's data last served, as upgrade-guard
//! records it on the claim (annotation [`SERVED`]): the anchor the data guard
//! judges every pod that mounts the claim against, however the pod came to
//! be. Only upgrade-guard writes it, as it does the refresh record.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PodSpec};
use serde::{Deserialize, Serialize};

pub const SERVED: &str = "upgradeguard.io/served";

/// What served a claim: under which policy, and per what carries the
/// version (an image repository, or `label KEY` for `source: label`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Served {
    /// The id of the policy that read the versions (`NAME` or `NAMESPACE/NAME`).
    pub policy: String,
    pub versions: BTreeMap<String, ServedVersion>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServedVersion {
    /// The version the last Ready pod on the claim ran (its text: a tag
    /// the policy cannot read is kept as it is).
    pub version: String,
    /// The one before it: what a rollback may go back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

impl Served {
    /// The record a claim's annotation holds.
    pub fn read(text: &str) -> Result<Served, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn text(&self) -> String {
        // Strings and maps of strings always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The record's annotation on a claim, as written.
pub fn served_annotation(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SERVED))
        .map(String::as_str)
}

/// The claims a pod spec mounts, by name.
pub fn pod_claims(spec: &PodSpec) -> impl Iterator<Item = &str> {
    spec.volumes
        .iter()
        .flatten()
        .filter_map(|v| Some(v.persistent_volume_claim.as_ref()?.claim_name.as_str()))
}
