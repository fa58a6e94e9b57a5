//! Refresh hooks: the Kubernetes Jobs the controller runs before and after
//! units (and once per release step at the end), made from the policy's
//! JobSpecs. Pure: which Job a hook run is (a name derived from the
//! workload, the hook, the unit or step and the refresh, so a restarted
//! controller finds the Job it made), its body, and what an observed Job
//! says. Creating and deleting Jobs is the executor's.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::policy::{Hooks, Version};
use crate::workload::{RefreshRecord, Workload};

pub use crate::workload::WORKLOAD_LABEL;
/// On every hook Job and its pods: `preRefresh`, `preUnit`, `postUnit` or `postRefresh`.
pub const HOOK_LABEL: &str = "upgradeguard.io/hook";

/// Kubernetes names and label values.
const NAME_MAX: usize = 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    PreRefresh,
    PreUnit,
    PostUnit,
    PostRefresh,
}

impl HookKind {
    /// As the policy and the `upgradeguard.io/hook` label spell it.
    pub fn name(self) -> &'static str {
        match self {
            HookKind::PreRefresh => "preRefresh",
            HookKind::PreUnit => "preUnit",
            HookKind::PostUnit => "postUnit",
            HookKind::PostRefresh => "postRefresh",
        }
    }

    fn job_part(self) -> &'static str {
        match self {
            HookKind::PreRefresh => "pre-refresh",
            HookKind::PreUnit => "pre-unit",
            HookKind::PostUnit => "post-unit",
            HookKind::PostRefresh => "post-refresh",
        }
    }

    pub fn spec(self, hooks: &Hooks) -> Option<&JobSpec> {
        match self {
            HookKind::PreRefresh => hooks.pre_refresh.as_ref(),
            HookKind::PreUnit => hooks.pre_unit.as_ref(),
            HookKind::PostUnit => hooks.post_unit.as_ref(),
            HookKind::PostRefresh => hooks.post_refresh.as_ref(),
        }
    }
}

/// One run of one hook in one refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    pub kind: HookKind,
    /// The unit (ordinal) of a preUnit or postUnit run.
    pub unit: Option<i32>,
    /// The release step of a postRefresh run, and its place in the order.
    pub step: Option<(usize, String, String)>,
}

impl HookRun {
    pub fn refresh(kind: HookKind) -> Self {
        HookRun {
            kind,
            unit: None,
            step: None,
        }
    }

    pub fn unit(kind: HookKind, unit: i32) -> Self {
        HookRun {
            kind,
            unit: Some(unit),
            step: None,
        }
    }

    /// How the refresh record marks it: `preRefresh`, `preUnit/4`,
    /// `postRefresh/1.7.0-1.7.1`.
    pub fn key(&self) -> String {
        match (&self.unit, &self.step) {
            (Some(unit), _) => format!("{}/{unit}", self.kind.name()),
            (None, Some((_, from, to))) => format!("{}/{from}-{to}", self.kind.name()),
            (None, None) => self.kind.name().to_string(),
        }
    }

    /// In words: `the preUnit hook of unit 4`.
    pub fn describe(&self) -> String {
        format!("the {}", self.title())
    }

    /// As an item of the refresh: `preUnit hook of unit 4`.
    pub fn title(&self) -> String {
        match (&self.unit, &self.step) {
            (Some(unit), _) => format!("{} hook of unit {unit}", self.kind.name()),
            (None, Some((_, from, to))) => format!("{} hook {from} → {to}", self.kind.name()),
            (None, None) => format!("{} hook", self.kind.name()),
        }
    }
}

/// The release steps a refresh from `from` to `to` crosses, in order: with
/// `releases`, one per release passed on the way (1.7.0 → 1.8.0 over
/// 1.7.1 and 1.7.2 is three steps); without, or when a version cannot be
/// read, the one step from → to.
pub fn release_steps(releases: &[Version], from: &str, to: &str) -> Vec<(String, String)> {
    let (Ok(low), Ok(high)) = (from.parse::<Version>(), to.parse::<Version>()) else {
        return vec![(from.to_string(), to.to_string())];
    };
    let mut points = vec![from.to_string()];
    points.extend(
        releases
            .iter()
            .filter(|r| **r > low && **r < high)
            .map(|r| r.as_str().to_string()),
    );
    points.push(to.to_string());
    points
        .windows(2)
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect()
}

/// The runs of postRefresh for this record: none on a rollback.
pub fn post_refresh_runs(
    hooks: &Hooks,
    releases: &[Version],
    record: &RefreshRecord,
) -> Vec<HookRun> {
    if hooks.post_refresh.is_none() || record.rollback {
        return Vec::new();
    }
    release_steps(releases, &record.from, &record.to)
        .into_iter()
        .enumerate()
        .map(|(i, (from, to))| HookRun {
            kind: HookKind::PostRefresh,
            unit: None,
            step: Some((i, from, to)),
        })
        .collect()
}

/// FNV-1a: a stable hash, the same in every build, for names that must
/// come out the same after a restart.
fn stable_hash(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// A name or label value of at most 63 characters: as it is when it fits,
/// else cut with a hash of the whole.
pub fn bounded_name(name: &str) -> String {
    if name.len() <= NAME_MAX {
        return name.to_string();
    }
    let hash = format!("{:08x}", stable_hash(&[name]) as u32);
    format!("{}-{hash}", cut_name(name, NAME_MAX - hash.len() - 1))
}

/// The start of `name` in at most `max` bytes, not ending in `-` or `.`.
fn cut_name(name: &str, max: usize) -> &str {
    let mut end = max.min(name.len());
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].trim_end_matches(['-', '.'])
}

/// The Job's name: the workload, the hook, the unit or step, and a hash of
/// the refresh (namespace, name, from, to, when it started, whether a
/// rollback), so a later refresh never meets an earlier one's Job.
pub fn job_name(w: &Workload, record: &RefreshRecord, run: &HookRun) -> String {
    let started = record.started.to_string();
    let refresh = stable_hash(&[
        w.namespace(),
        w.name(),
        &record.from,
        &record.to,
        &started,
        if record.rollback {
            "rollback"
        } else {
            "refresh"
        },
    ]);
    let place = match (&run.unit, &run.step) {
        (Some(unit), _) => format!("-{unit}"),
        (None, Some((i, _, _))) => format!("-{i}"),
        (None, None) => String::new(),
    };
    let suffix = format!("-{}{place}-{:08x}", run.kind.job_part(), refresh as u32);
    format!(
        "{}{suffix}",
        cut_name(w.name(), NAME_MAX.saturating_sub(suffix.len()))
    )
}

/// The Job for one hook run: the policy's JobSpec with the contract's
/// environment in every container, the labels on the Job and its pods, an
/// ownerReference to the workload (deleting it deletes its hooks), and
/// `activeDeadlineSeconds` no later than the hooks' timeout, so the Job
/// controller itself stops a hook that runs too long.
pub fn job(
    w: &Workload,
    record: &RefreshRecord,
    run: &HookRun,
    spec: &JobSpec,
    timeout: Duration,
) -> Job {
    let labels: BTreeMap<String, String> = [
        (WORKLOAD_LABEL.to_string(), bounded_name(w.name())),
        (HOOK_LABEL.to_string(), run.kind.name().to_string()),
    ]
    .into();
    let mut spec = spec.clone();
    let timeout = i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX);
    spec.active_deadline_seconds = Some(
        spec.active_deadline_seconds
            .map_or(timeout, |d| d.min(timeout)),
    );
    let template_meta = spec.template.metadata.get_or_insert_with(Default::default);
    template_meta
        .labels
        .get_or_insert_with(Default::default)
        .extend(labels.clone());
    let env = environment(w, record, run);
    if let Some(pod) = spec.template.spec.as_mut() {
        for container in pod
            .containers
            .iter_mut()
            .chain(pod.init_containers.iter_mut().flatten())
        {
            set_env(container, &env);
        }
    }
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(w, record, run)),
            namespace: Some(w.namespace().to_string()),
            labels: Some(labels),
            owner_references: w.metadata().uid.as_ref().map(|uid| {
                vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: w.kind().to_string(),
                    name: w.name().to_string(),
                    uid: uid.clone(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// `UG_NAMESPACE`, `UG_NAME`, `UG_KIND`, `UG_FROM`, `UG_TO`, `UG_ROLLBACK`;
/// unit hooks `UG_UNIT` and `UG_POD`; postRefresh `UG_STEP_FROM`, `UG_STEP_TO`.
pub fn environment(w: &Workload, record: &RefreshRecord, run: &HookRun) -> Vec<(String, String)> {
    let mut env = vec![
        ("UG_NAMESPACE", w.namespace().to_string()),
        ("UG_NAME", w.name().to_string()),
        ("UG_KIND", w.kind().to_string()),
        ("UG_FROM", record.from.clone()),
        ("UG_TO", record.to.clone()),
        ("UG_ROLLBACK", record.rollback.to_string()),
    ];
    if let Some(unit) = run.unit {
        env.push(("UG_UNIT", unit.to_string()));
        env.push(("UG_POD", format!("{}-{unit}", w.name())));
    }
    if let Some((_, from, to)) = &run.step {
        env.push(("UG_STEP_FROM", from.clone()));
        env.push(("UG_STEP_TO", to.clone()));
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Ours win over a same-named variable in the policy's container.
fn set_env(container: &mut Container, env: &[(String, String)]) {
    let vars = container.env.get_or_insert_with(Vec::new);
    vars.retain(|v| !env.iter().any(|(name, _)| *name == v.name));
    vars.extend(env.iter().map(|(name, value)| EnvVar {
        name: name.clone(),
        value: Some(value.clone()),
        value_from: None,
    }));
}

/// What the cluster says about a hook run's Job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Missing,
    /// Being deleted (a retry): wait until it is gone.
    Deleting,
    /// A Job of that name that upgrade-guard did not make: another owner,
    /// or other containers. Never taken as the hook having run.
    Foreign,
    Running {
        since: jiff::Timestamp,
    },
    Complete,
    Failed(String),
}

/// The state of `found` (the Job of that name, if any), measured against
/// the Job upgrade-guard would make.
pub fn job_state(found: Option<&Job>, wanted: &Job) -> JobState {
    let Some(job) = found else {
        return JobState::Missing;
    };
    if job.metadata.deletion_timestamp.is_some() {
        return JobState::Deleting;
    }
    if !same_origin(job, wanted) {
        return JobState::Foreign;
    }
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let holds = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    if holds("Complete").is_some() {
        return JobState::Complete;
    }
    if let Some(failed) = holds("Failed") {
        let why = [failed.reason.as_deref(), failed.message.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        return JobState::Failed(crate::quoted::bounded(&why));
    }
    JobState::Running {
        since: job
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0),
    }
}

/// Owned by the same workload (UID) and running the same containers and
/// init containers (names, images, commands, arguments, and the values of
/// the environment, ours included) as the Job upgrade-guard makes: anyone
/// who could create a Job of that name otherwise could fake a hook.
/// `valueFrom` is not compared: the API server fills in its defaults.
fn same_origin(job: &Job, wanted: &Job) -> bool {
    let owner = |j: &Job| {
        j.metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .map(|o| o.uid.clone())
    };
    owner(job) == owner(wanted) && runs(job) == runs(wanted)
}

/// What a Job's containers run, for [`same_origin`].
type Run<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a [String]>,
    Option<&'a [String]>,
    Vec<(&'a str, Option<&'a str>)>,
);

fn runs(job: &Job) -> Vec<Run<'_>> {
    let pod = job.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    pod.into_iter()
        .flat_map(|p| {
            p.containers
                .iter()
                .chain(p.init_containers.iter().flatten())
        })
        .map(|c| {
            let env = c.env.iter().flatten();
            (
                c.name.as_str(),
                c.image.as_deref(),
                c.command.as_deref(),
                c.args.as_deref(),
                env.map(|e| (e.name.as_str(), e.value.as_deref())).collect(),
            )
        })
        .collect()
}

/// The Job named `name` among `jobs`.
pub fn find<'a>(jobs: &'a [Job], name: &str) -> Option<&'a Job> {
    jobs.iter()
        .find(|j| j.metadata.name.as_deref() == Some(name))
}
