//! The `UpgradePolicy` document as written in YAML or stored as a custom
//! resource, read strictly: an unknown field or value is an error naming it.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::JobSpec;
use serde::Deserialize;

use crate::workload::WorkloadKind;

pub const API_VERSION: &str = "upgradeguard.io/v1alpha1";
pub const KIND: &str = "UpgradePolicy";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Document {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
    /// A custom resource read back from a cluster may carry a status.
    #[serde(default)]
    pub status: Option<serde::de::IgnoredAny>,
}

/// Only what a policy uses; the API server's own metadata fields are let
/// through untouched.
#[derive(Debug, Deserialize)]
pub struct Metadata {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    pub selector: Selector,
    #[serde(default = "all_kinds")]
    pub kinds: Vec<WorkloadKind>,
    #[serde(default)]
    pub containers: Vec<String>,
    #[serde(default)]
    pub version: VersionSpec,
    #[serde(default)]
    pub track: Track,
    #[serde(default)]
    pub step: Step,
    #[serde(default)]
    pub releases: Vec<String>,
    #[serde(default)]
    pub matrix: Vec<Edge>,
    #[serde(default)]
    pub unknown_version: Override,
    #[serde(default)]
    pub cross_track: Override,
    #[serde(default)]
    pub downgrade: Downgrade,
    #[serde(default)]
    pub require_stateful_set: bool,
    #[serde(default)]
    pub refresh: RefreshSpec,
}

fn all_kinds() -> Vec<WorkloadKind> {
    WorkloadKind::ALL.to_vec()
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSpec {
    #[serde(default)]
    pub source: VersionSourceKind,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub digests: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VersionSourceKind {
    #[default]
    Tag,
    Label,
}

/// What must stay equal across an in-place refresh.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum Track {
    #[default]
    #[serde(rename = "major")]
    Major,
    #[serde(rename = "major.minor")]
    MajorMinor,
    #[serde(rename = "none")]
    None,
}

/// The granularity of "no skipped versions".
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Major,
    #[default]
    Minor,
    Patch,
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub allow: bool,
    #[serde(default)]
    pub note: Option<String>,
}

/// `deny`: never; `force`: only with `upgradeguard.io/force-to`.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Override {
    #[default]
    Deny,
    Force,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Downgrade {
    #[default]
    RollbackOnly,
    Deny,
    Allow,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RefreshSpec {
    #[serde(default)]
    pub pause_after: PauseAfter,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub on_failure: OnFailure,
    #[serde(default)]
    pub hooks: Hooks,
}

/// What a failed unit or hook does to the refresh.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Hold it as Failed until someone rolls back, retries or forces.
    #[default]
    Hold,
    /// The controller puts the images back to where the refresh started.
    Rollback,
}

/// The refresh's hooks: each a batch/v1 JobSpec the controller runs as a Job.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hooks {
    #[serde(default)]
    pub pre_refresh: Option<JobSpec>,
    #[serde(default)]
    pub pre_unit: Option<JobSpec>,
    #[serde(default)]
    pub post_unit: Option<JobSpec>,
    #[serde(default)]
    pub post_refresh: Option<JobSpec>,
    /// A hook Job not Complete by then has failed.
    #[serde(default = "default_hook_timeout")]
    pub timeout_seconds: u32,
}

fn default_hook_timeout() -> u32 {
    600
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            pre_refresh: None,
            pre_unit: None,
            post_unit: None,
            post_refresh: None,
            timeout_seconds: default_hook_timeout(),
        }
    }
}

impl Hooks {
    /// Whether a Job must complete before a unit may restart: then the
    /// webhook holds every unit (partition = replicas) at the start.
    pub fn hold_units(&self) -> bool {
        self.pre_refresh.is_some() || self.pre_unit.is_some()
    }

    /// Whether the policy has any hook: only then are Jobs read.
    pub fn any(&self) -> bool {
        self.named().iter().any(|(_, h)| h.is_some())
    }

    /// Each hook with its name as the policy spells it.
    pub fn named(&self) -> [(&'static str, Option<&JobSpec>); 4] {
        [
            ("preRefresh", self.pre_refresh.as_ref()),
            ("preUnit", self.pre_unit.as_ref()),
            ("postUnit", self.post_unit.as_ref()),
            ("postRefresh", self.post_refresh.as_ref()),
        ]
    }
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PauseAfter {
    #[default]
    First,
    All,
    None,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Health {
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_seconds: u32,
    #[serde(default = "default_min_ready")]
    pub min_ready_seconds: u32,
    /// Default: replicas - 1.
    #[serde(default)]
    pub min_available: Option<u32>,
}

fn default_ready_timeout() -> u32 {
    600
}
fn default_min_ready() -> u32 {
    10
}

impl Default for Health {
    fn default() -> Self {
        Health {
            ready_timeout_seconds: default_ready_timeout(),
            min_ready_seconds: default_min_ready(),
            min_available: None,
        }
    }
}
