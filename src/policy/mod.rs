//! Upgrade policies: the model, its strict parser, which workloads a policy
//! governs, and how a version is read from a pod template. Pure: loading a
//! directory is the only I/O, and it lives in [`PolicySet::load`].

mod path;
mod rule;
pub mod spec;
pub mod version;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use regex::Regex;
use serde::Deserialize;

pub use path::{PathOutcome, Refusal};
pub use rule::Rule;
pub use spec::{
    Downgrade, Health, Hooks, OnFailure, Operator, Override, PauseAfter, Selector, Step, Track,
};
pub use version::{ImageRef, Version, VersionError, repository};

use crate::template::Template;
use crate::workload::{Workload, WorkloadKind};

/// A policy ready to decide with: patterns compiled, versions parsed.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    /// `None` in a file: the policy applies in every namespace.
    pub namespace: Option<String>,
    /// Where it came from, for messages: `policies/fate.yaml: document 2`.
    pub source: String,
    pub selector: Selector,
    pub kinds: Vec<WorkloadKind>,
    pub containers: Vec<String>,
    pub version_source: VersionSource,
    pub track: Track,
    pub step: Step,
    /// Sorted ascending.
    pub releases: Vec<Version>,
    pub matrix: Vec<MatrixEdge>,
    pub unknown_version: Override,
    pub cross_track: Override,
    pub downgrade: Downgrade,
    pub require_stateful_set: bool,
    pub pause_after: PauseAfter,
    pub health: Health,
    pub on_failure: OnFailure,
    pub hooks: Hooks,
}

#[derive(Debug, Clone)]
pub enum VersionSource {
    Tag {
        pattern: Option<Regex>,
        digests: HashMap<String, Version>,
    },
    Label(String),
}

#[derive(Debug, Clone)]
pub struct MatrixEdge {
    pub from: String,
    pub to: String,
    from_glob: wildmatch::WildMatch,
    to_glob: wildmatch::WildMatch,
    pub allow: bool,
    pub note: Option<String>,
}

impl MatrixEdge {
    /// A glob matches the version as written (`v1.9.3`) or in semver form
    /// (`1.9.3`), so `1.9.*` works whatever the tag's spelling.
    fn matches(&self, from: &Version, to: &Version) -> bool {
        let hit = |glob: &wildmatch::WildMatch, v: &Version| {
            glob.matches(v.as_str())
                || glob.matches(&format!("{}.{}.{}", v.major(), v.minor(), v.patch()))
        };
        hit(&self.from_glob, from) && hit(&self.to_glob, to)
    }
}

/// What a governed container's image (or the version label) says.
#[derive(Debug, Clone)]
pub struct GovernedVersion {
    pub container: String,
    /// The image reference, or the label value for `source: label`.
    pub image: String,
    pub version: Result<Version, String>,
}

impl GovernedVersion {
    /// The version as text, or the image when it has none (bounded: the
    /// text is a user's, and it is echoed).
    pub fn label(&self) -> String {
        match &self.version {
            Ok(v) => v.as_str().to_string(),
            Err(_) => {
                crate::quoted::bounded(ImageRef::parse(&self.image).tag.unwrap_or(&self.image))
            }
        }
    }

    /// Same version and the same digest, or the same image when a version
    /// cannot be read. When an image names a digest, the digest is what
    /// runs: another digest under the same tag is another build.
    pub fn same_as(&self, other: &GovernedVersion) -> bool {
        match (&self.version, &other.version) {
            (Ok(a), Ok(b)) => a == b && self.digest() == other.digest(),
            _ => self.image == other.image,
        }
    }

    /// The digest the image names, if any.
    pub fn digest(&self) -> Option<&str> {
        ImageRef::parse(&self.image).digest
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{location}: {}{message}", field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct PolicyError {
    pub location: String,
    pub field: Option<String>,
    pub message: String,
}

impl PolicyError {
    fn at(location: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyError {
            location: location.to_string(),
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

impl Policy {
    /// Compiles one parsed document; `location` names it in errors.
    pub fn compile(doc: spec::Document, location: &str) -> Result<Policy, PolicyError> {
        let err = |field: &str, message: String| PolicyError::at(location, field, message);
        if doc.api_version != spec::API_VERSION {
            return Err(err(
                "apiVersion",
                format!(
                    "{:?} is not supported, expected {}",
                    doc.api_version,
                    spec::API_VERSION
                ),
            ));
        }
        if doc.kind != spec::KIND {
            return Err(err("kind", format!("{:?} is not {}", doc.kind, spec::KIND)));
        }
        if doc.metadata.name.is_empty() {
            return Err(err("metadata.name", "must not be empty".into()));
        }
        let spec = doc.spec;
        for (i, req) in spec.selector.match_expressions.iter().enumerate() {
            let needs_values = matches!(req.operator, Operator::In | Operator::NotIn);
            if needs_values == req.values.is_empty() {
                return Err(err(
                    &format!("spec.selector.matchExpressions[{i}].values"),
                    format!(
                        "operator {:?} {}",
                        req.operator,
                        if needs_values {
                            "needs values"
                        } else {
                            "takes no values"
                        }
                    ),
                ));
            }
        }
        if spec.kinds.is_empty() {
            return Err(err(
                "spec.kinds",
                "selects no kind: omit it for both".into(),
            ));
        }
        let version_source = match (spec.version.source, spec.version.label) {
            (spec::VersionSourceKind::Label, Some(label)) => {
                if spec.version.pattern.is_some() || !spec.version.digests.is_empty() {
                    return Err(err(
                        "spec.version",
                        "pattern and digests apply to source: tag, not to source: label".into(),
                    ));
                }
                VersionSource::Label(label)
            }
            (spec::VersionSourceKind::Label, None) => {
                return Err(err(
                    "spec.version.label",
                    "source: label needs the name of the pod-template label".into(),
                ));
            }
            (spec::VersionSourceKind::Tag, Some(_)) => {
                return Err(err(
                    "spec.version.label",
                    "applies only to source: label".into(),
                ));
            }
            (spec::VersionSourceKind::Tag, None) => {
                let pattern = match spec.version.pattern {
                    Some(p) => {
                        let re = Regex::new(&p)
                            .map_err(|e| err("spec.version.pattern", e.to_string()))?;
                        if !re.capture_names().any(|n| n == Some("version")) {
                            return Err(err(
                                "spec.version.pattern",
                                "needs a named group (?P<version>...)".into(),
                            ));
                        }
                        Some(re)
                    }
                    None => None,
                };
                let mut digests = HashMap::new();
                for (digest, v) in spec.version.digests {
                    let parsed = v.parse().map_err(|e: VersionError| {
                        err(&format!("spec.version.digests[{digest}]"), e.to_string())
                    })?;
                    digests.insert(digest, parsed);
                }
                VersionSource::Tag { pattern, digests }
            }
        };
        let mut releases = Vec::with_capacity(spec.releases.len());
        for (i, r) in spec.releases.iter().enumerate() {
            let v: Version = r
                .parse()
                .map_err(|e: VersionError| err(&format!("spec.releases[{i}]"), e.to_string()))?;
            if releases.contains(&v) {
                return Err(err(
                    &format!("spec.releases[{i}]"),
                    format!("{r} is listed twice"),
                ));
            }
            releases.push(v);
        }
        releases.sort();
        let mut matrix = Vec::with_capacity(spec.matrix.len());
        for (i, edge) in spec.matrix.into_iter().enumerate() {
            for (field, glob) in [("from", &edge.from), ("to", &edge.to)] {
                if glob.trim().is_empty() {
                    return Err(err(
                        &format!("spec.matrix[{i}].{field}"),
                        "must not be empty".into(),
                    ));
                }
            }
            matrix.push(MatrixEdge {
                from_glob: wildmatch::WildMatch::new(&edge.from),
                to_glob: wildmatch::WildMatch::new(&edge.to),
                from: edge.from,
                to: edge.to,
                allow: edge.allow,
                note: edge.note,
            });
        }
        if spec.refresh.health.ready_timeout_seconds == 0 {
            return Err(err(
                "spec.refresh.health.readyTimeoutSeconds",
                "must be at least 1".into(),
            ));
        }
        check_hooks(&spec.refresh.hooks).map_err(|(field, message)| err(&field, message))?;
        if spec.refresh.on_failure == OnFailure::Rollback && spec.downgrade == Downgrade::Deny {
            return Err(err(
                "spec.refresh.onFailure",
                "rollback contradicts downgrade: deny, which refuses every rollback".into(),
            ));
        }
        Ok(Policy {
            name: doc.metadata.name,
            namespace: doc.metadata.namespace,
            source: location.to_string(),
            selector: spec.selector,
            kinds: spec.kinds,
            containers: spec.containers,
            version_source,
            track: spec.track,
            step: spec.step,
            releases,
            matrix,
            unknown_version: spec.unknown_version,
            cross_track: spec.cross_track,
            downgrade: spec.downgrade,
            require_stateful_set: spec.require_stateful_set,
            pause_after: spec.refresh.pause_after,
            health: spec.refresh.health,
            on_failure: spec.refresh.on_failure,
            hooks: spec.refresh.hooks,
        })
    }

    /// Whether this policy governs the workload.
    pub fn governs(&self, workload: &Workload) -> bool {
        self.selects(workload.kind(), workload.namespace(), workload.labels())
    }

    /// Whether this policy governs a workload of `kind` in `namespace`
    /// labelled `labels`: what [`Policy::governs`] reads of a workload.
    pub fn selects(
        &self,
        kind: WorkloadKind,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> bool {
        self.may_govern(kind, namespace) && self.selector.matches(labels)
    }

    /// Whether this policy could govern some workload of `kind` in `namespace`.
    pub fn may_govern(&self, kind: WorkloadKind, namespace: &str) -> bool {
        self.kinds.contains(&kind) && self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }

    /// The versions of the governed containers, in pod-template order.
    pub fn versions(&self, template: &Template) -> Vec<GovernedVersion> {
        self.versions_with(template, &BTreeSet::new())
    }

    /// The governed versions of both sides of a change: a container that
    /// runs the repository of a container the policy names, on either
    /// side, is governed too, whatever its name (a decoy cannot keep the
    /// name while another container runs the data's image).
    pub fn versions_of_change(
        &self,
        old: &Template,
        new: &Template,
    ) -> (Vec<GovernedVersion>, Vec<GovernedVersion>) {
        let mut repositories = self.named_repositories(old);
        repositories.extend(self.named_repositories(new));
        (
            self.versions_with(old, &repositories),
            self.versions_with(new, &repositories),
        )
    }

    /// What carries a governed version, as a claim's served record keys it:
    /// the image's repository, or `label KEY`.
    pub fn carrier(&self, version: &GovernedVersion) -> String {
        match self.version_source {
            VersionSource::Label(_) => version.container.clone(),
            VersionSource::Tag { .. } => repository(&version.image).into_owned(),
        }
    }

    /// The repositories the containers the policy names run; none when it
    /// names none (every container is governed then) or reads a label.
    fn named_repositories(&self, template: &Template) -> BTreeSet<String> {
        if self.containers.is_empty() || matches!(self.version_source, VersionSource::Label(_)) {
            return BTreeSet::new();
        }
        template
            .images()
            .filter(|(name, _)| self.containers.iter().any(|c| c == name))
            .filter_map(|(_, image)| image.map(|i| repository(i).into_owned()))
            .collect()
    }

    /// The governed versions of a pod template: every container it runs
    /// (init containers, native sidecars and ephemeral containers too) that
    /// the policy names, or whose image is of one of `repositories`.
    pub fn versions_with(
        &self,
        template: &Template,
        repositories: &BTreeSet<String>,
    ) -> Vec<GovernedVersion> {
        if let VersionSource::Label(label) = &self.version_source {
            let value = template.labels().and_then(|l| l.get(label));
            return vec![GovernedVersion {
                container: format!("label {label}"),
                image: value.cloned().unwrap_or_default(),
                version: match value {
                    Some(v) => v.parse().map_err(|e: VersionError| e.to_string()),
                    None => Err(format!("pod-template label {label} is missing")),
                },
            }];
        }
        let named =
            |name: &str| self.containers.is_empty() || self.containers.iter().any(|c| c == name);
        let of_repository = |image: Option<&String>| {
            !repositories.is_empty()
                && image.is_some_and(|i| repositories.contains(repository(i).as_ref()))
        };
        template
            .images()
            .filter(|(name, image)| named(name) || of_repository(*image))
            .map(|(name, image)| {
                let image = image.cloned().unwrap_or_default();
                let version = self.version_of_image(&image);
                GovernedVersion {
                    container: name.to_string(),
                    image,
                    version,
                }
            })
            .collect()
    }

    /// The template as it would be at `version`: each governed container's
    /// image re-tagged (a digest dropped), or the version label set.
    pub fn retarget(&self, template: &mut PodTemplateSpec, version: &str) {
        if let VersionSource::Label(label) = &self.version_source {
            template
                .metadata
                .get_or_insert_with(Default::default)
                .labels
                .get_or_insert_with(Default::default)
                .insert(label.clone(), version.to_string());
            return;
        }
        let Some(spec) = template.spec.as_mut() else {
            return;
        };
        for c in spec.containers.iter_mut() {
            if (self.containers.is_empty() || self.containers.contains(&c.name))
                && let Some(image) = c.image.as_mut()
            {
                *image = format!("{}:{version}", ImageRef::parse(image).name);
            }
        }
    }

    /// Whether `spec.version.digests` names the image's digest.
    pub fn maps_digest(&self, image: &str) -> bool {
        let VersionSource::Tag { digests, .. } = &self.version_source else {
            return false;
        };
        ImageRef::parse(image)
            .digest
            .is_some_and(|d| digests.contains_key(d))
    }

    /// Reads the version an image carries: a known digest first, then the tag.
    pub fn version_of_image(&self, image: &str) -> Result<Version, String> {
        let VersionSource::Tag { pattern, digests } = &self.version_source else {
            return Err("this policy reads versions from a label".into());
        };
        let reference = ImageRef::parse(image);
        if let Some(v) = reference.digest.and_then(|d| digests.get(d)) {
            return Ok(v.clone());
        }
        // The image is a user's text, echoed in the refusal: bounded (and
        // only when refused: this runs on every container of every review).
        let shown = crate::quoted::bounded;
        let Some(tag) = reference.tag else {
            return Err(match reference.digest {
                Some(d) => format!(
                    "image {} has no tag and digest {} is not in spec.version.digests",
                    shown(image),
                    shown(d)
                ),
                None => format!("image {} has no tag", shown(image)),
            });
        };
        let text = match pattern {
            Some(re) => re
                .captures(tag)
                .and_then(|c| c.name("version"))
                .map(|m| m.as_str())
                .ok_or_else(|| format!("tag {} does not match spec.version.pattern", shown(tag)))?,
            None => tag,
        };
        text.parse()
            .map_err(|e: VersionError| format!("tag {}: {e}", shown(tag)))
    }

    /// `NAME`, or `NAMESPACE/NAME` for a namespaced policy.
    pub fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// `policy ID`: why a workload was judged by this policy, for messages.
    pub fn describe(&self) -> String {
        format!("policy {}", self.id())
    }
}

impl Selector {
    /// Kubernetes LabelSelector semantics: every term must hold; an empty
    /// selector matches everything.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k));
        self.match_labels.iter().all(|(k, v)| get(k) == Some(v))
            && self.match_expressions.iter().all(|r| match r.operator {
                Operator::In => get(&r.key).is_some_and(|v| r.values.contains(v)),
                Operator::NotIn => get(&r.key).is_none_or(|v| !r.values.contains(v)),
                Operator::Exists => get(&r.key).is_some(),
                Operator::DoesNotExist => get(&r.key).is_none(),
            })
    }
}

/// All loaded policies; a namespaced policy wins over a cluster-wide one,
/// then names decide, so the choice never depends on file order.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    policies: Vec<Policy>,
}

impl PolicySet {
    pub fn new(mut policies: Vec<Policy>) -> Result<Self, PolicyError> {
        policies.sort_by(|a, b| {
            (a.namespace.is_none(), &a.namespace, &a.name).cmp(&(
                b.namespace.is_none(),
                &b.namespace,
                &b.name,
            ))
        });
        for pair in policies.windows(2) {
            if pair[0].namespace == pair[1].namespace && pair[0].name == pair[1].name {
                return Err(PolicyError::at(
                    &pair[1].source,
                    "metadata.name",
                    format!(
                        "{} is also defined in {}",
                        pair[1].describe(),
                        pair[0].source
                    ),
                ));
            }
        }
        Ok(PolicySet { policies })
    }

    /// Parses every document of one YAML (or JSON) text.
    pub fn parse(text: &str, source: &str) -> Result<Vec<Policy>, PolicyError> {
        let mut out = Vec::new();
        let documents = crate::yaml::documents(text).map_err(|e| PolicyError {
            location: source.to_string(),
            field: None,
            message: e.to_string(),
        })?;
        for (i, document) in documents.enumerate() {
            let location = format!("{source}: document {}", i + 1);
            // serde_yaml_ng's own message names the field path, line and column.
            let doc = Option::<spec::Document>::deserialize(document).map_err(|e| PolicyError {
                location: location.clone(),
                field: None,
                message: friendly(&e.to_string()),
            })?;
            if let Some(doc) = doc {
                out.push(Policy::compile(doc, &location)?);
            }
        }
        Ok(out)
    }

    /// Loads a policy file, or every `.yaml`, `.yml` and `.json` file below
    /// a directory, subdirectories included (in path order), as manifests
    /// are read.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let io_err = |p: &Path, e: std::io::Error| PolicyError {
            location: p.display().to_string(),
            field: None,
            message: format!("cannot read policies: {e}"),
        };
        let files = crate::yaml::files(path).map_err(|e| PolicyError {
            location: e.path,
            field: None,
            message: format!("cannot read policies: {}", e.source),
        })?;
        let mut policies = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| io_err(&file, e))?;
            policies.extend(Self::parse(&text, &file.display().to_string())?);
        }
        Self::new(policies)
    }

    /// The policy that governs this workload, if any.
    pub fn select(&self, workload: &Workload) -> Option<&Policy> {
        self.policies.iter().find(|p| p.governs(workload))
    }

    /// The policy whose [`Policy::id`] is `id`.
    pub fn by_id(&self, id: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.id() == id)
    }

    pub fn may_govern(&self, kind: WorkloadKind, namespace: &str) -> bool {
        self.policies.iter().any(|p| p.may_govern(kind, namespace))
    }

    /// Whether a policy governs a workload of `kind` in `namespace`
    /// labelled `labels` ([`Policy::selects`]).
    pub fn selects(
        &self,
        kind: WorkloadKind,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> bool {
        self.policies
            .iter()
            .any(|p| p.selects(kind, namespace, labels))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.policies.iter()
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

/// serde says "variant" where a policy author thinks "value".
fn friendly(message: &str) -> String {
    message.replace("unknown variant", "unknown value")
}

/// Lets a policy be read from a value (a custom resource from the cluster).
impl Policy {
    pub fn from_value(value: serde_json::Value, location: &str) -> Result<Policy, PolicyError> {
        // A JSON value carries no positions: track the path to name the field.
        let doc: spec::Document = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            PolicyError {
                location: location.to_string(),
                field: (path != ".").then_some(path),
                message: friendly(&e.into_inner().to_string()),
            }
        })?;
        Policy::compile(doc, location)
    }
}

/// What the API server would refuse in a hook's Job, said where the
/// policy is read rather than when the first Job is created mid-refresh.
fn check_hooks(hooks: &Hooks) -> Result<(), (String, String)> {
    if hooks.timeout_seconds == 0 {
        return Err((
            "spec.refresh.hooks.timeoutSeconds".into(),
            "must be at least 1".into(),
        ));
    }
    for (name, job) in hooks.named() {
        let Some(job) = job else { continue };
        let at = format!("spec.refresh.hooks.{name}.template.spec");
        let Some(pod) = job.template.spec.as_ref() else {
            return Err((at, "is missing: a hook needs a pod template".into()));
        };
        if pod.containers.is_empty() {
            return Err((
                format!("{at}.containers"),
                "must name at least one container".into(),
            ));
        }
        match pod.restart_policy.as_deref() {
            Some("Never" | "OnFailure") => {}
            other => {
                return Err((
                    format!("{at}.restartPolicy"),
                    format!(
                        "is {}: a Job's pods must use Never or OnFailure",
                        other.map_or("unset (Always)".to_string(), |p| format!("{p:?}"))
                    ),
                ));
            }
        }
    }
    Ok(())
}
