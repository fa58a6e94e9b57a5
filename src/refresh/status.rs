//! What `upgrade-guard status` shows: per refresh, the units and the one
//! next action, from the same observations (and the same step) the
//! controller uses.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use super::hooks::{self, HookKind, HookRun, JobState};
use super::{Next, Observed, Settings, is_ready, pod_at, restarts, revision, step};
use crate::policy::{PauseAfter, Policy};
use crate::template::Template;
use crate::workload::{HookMark, RefreshRecord, RefreshState, Workload};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub from: String,
    pub to: String,
    pub state: String,
    /// A rollback: `to` is where the refresh it undoes started.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
    /// A rollback the controller started itself (`onFailure: rollback`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub automatic: bool,
    /// The record's state, typed; `None` when the record cannot be read.
    #[serde(skip)]
    pub record_state: Option<RefreshState>,
    /// `first`, `all`, `none`; `-` when no policy was found.
    pub pause_after: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    pub progress_percent: u32,
    pub units: Vec<Unit>,
    /// Every item of the refresh in order: hooks, units, release steps.
    pub items: Vec<Item>,
    /// Items COMPLETED or SKIPPED, of all.
    pub items_done: usize,
    /// Why the workload's controller cannot create a pod, when upgrade-guard
    /// refused it (the data guard): the latest `FailedCreate` Event's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_refused: Option<String>,
    pub next: Next,
}

/// One item of a refresh, in the words operators of rolling upgrades know.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub name: String,
    pub state: ItemState,
    /// A hook's Job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ItemState {
    Pending,
    InProgress,
    /// A pause: waiting for `resume`.
    Holding,
    HoldingFailed,
    Completed,
    Skipped,
}

impl ItemState {
    pub fn is_over(self) -> bool {
        matches!(self, ItemState::Completed | ItemState::Skipped)
    }

    fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "PENDING",
            ItemState::InProgress => "IN_PROGRESS",
            ItemState::Holding => "HOLDING",
            ItemState::HoldingFailed => "HOLDING_FAILED",
            ItemState::Completed => "COMPLETED",
            ItemState::Skipped => "SKIPPED",
        }
    }
}

/// The refresh as items, each with its state, from the same observations
/// the step reads: the record (units and hooks over), the partition, and
/// the hook Jobs.
pub fn items(observed: &Observed, record: &RefreshRecord) -> Vec<Item> {
    let (w, settings) = (observed.workload, observed.settings);
    let has = |kind: HookKind| kind.spec(&settings.hooks).is_some();
    let hook = |run: HookRun| hook_item(&run, observed, record);
    let held = |current: bool| match record.state {
        RefreshState::Completed => ItemState::Completed,
        _ if !current => ItemState::Pending,
        RefreshState::Failed => ItemState::HoldingFailed,
        RefreshState::Paused => ItemState::Holding,
        _ => ItemState::InProgress,
    };
    let mut items = Vec::new();
    if has(HookKind::PreRefresh) {
        items.push(hook(HookRun::refresh(HookKind::PreRefresh)));
    }
    match (w, w.partition()) {
        (Workload::StatefulSet(_), Some(partition)) if !w.is_on_delete() => {
            // Paused after the unit at the partition was done: the pause
            // holds the next unit.
            let paused_before = (record.state == RefreshState::Paused
                && record.units.contains_key(&partition))
            .then_some(partition - 1);
            for unit in (0..w.replicas()).rev() {
                if has(HookKind::PreUnit) {
                    items.push(hook(HookRun::unit(HookKind::PreUnit, unit)));
                }
                let state = if record.units.contains_key(&unit) || partition < unit {
                    ItemState::Completed
                } else {
                    held(partition == unit || paused_before == Some(unit))
                };
                items.push(Item {
                    name: format!("unit {unit} ({}-{unit})", w.name()),
                    state,
                    job: None,
                });
                if has(HookKind::PostUnit) {
                    items.push(hook(HookRun::unit(HookKind::PostUnit, unit)));
                }
            }
        }
        _ => {
            let waiting = items.iter().any(|i: &Item| !i.state.is_over());
            items.push(Item {
                name: format!("rollout of {} {}", w.kind(), w.name()),
                state: held(!waiting),
                job: None,
            });
        }
    }
    let post = hooks::post_refresh_runs(&settings.hooks, &settings.releases, record);
    items.extend(post.into_iter().map(hook));
    // A failed hook is the item that holds; the unit beside it is not.
    if items
        .iter()
        .any(|i| i.job.is_some() && i.state == ItemState::HoldingFailed)
    {
        for item in items.iter_mut().filter(|i| i.job.is_none()) {
            if item.state == ItemState::HoldingFailed {
                item.state = ItemState::InProgress;
            }
        }
    }
    items
}

fn hook_item(run: &HookRun, observed: &Observed, record: &RefreshRecord) -> Item {
    let wanted = super::wanted_job(run, observed, record);
    let job = wanted.as_ref().and_then(|j| j.metadata.name.clone());
    let state = match (record.hooks.get(&run.key()), &wanted) {
        (Some(HookMark::Completed), _) => ItemState::Completed,
        (Some(HookMark::Skipped), _) => ItemState::Skipped,
        (None, _) if !record.is_active() => ItemState::Skipped,
        (None, None) => ItemState::Pending,
        (None, Some(wanted)) => {
            let found = hooks::find(observed.jobs, job.as_deref().unwrap_or_default());
            match hooks::job_state(found, wanted) {
                JobState::Missing | JobState::Deleting => ItemState::Pending,
                JobState::Complete => ItemState::Completed,
                JobState::Running { since }
                    if super::elapsed(since, observed.now) <= observed.settings.hook_timeout() =>
                {
                    ItemState::InProgress
                }
                JobState::Running { .. } | JobState::Failed(_) | JobState::Foreign => {
                    ItemState::HoldingFailed
                }
            }
        }
    };
    Item {
        name: run.title(),
        state,
        job,
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unit {
    pub ordinal: i32,
    pub pod: String,
    /// Read from the pod's image, as the policy reads versions.
    pub version: Option<String>,
    pub revision: Option<String>,
    pub ready: bool,
    pub restarts: i32,
    /// This unit restarts at the next step.
    pub next: bool,
}

fn pause_name(p: PauseAfter) -> &'static str {
    match p {
        PauseAfter::First => "first",
        PauseAfter::All => "all",
        PauseAfter::None => "none",
    }
}

/// The report for one workload; `None` when it has no refresh record.
/// Without a policy (none found where the command looked), the record and
/// the pods are still shown; versions and the next action are not judged.
pub fn report(
    w: &Workload,
    pods: &[Pod],
    jobs: &[Job],
    policy: Option<&Policy>,
    now: jiff::Timestamp,
) -> Option<Report> {
    let record = match w.refresh_record()? {
        Ok(record) => record,
        Err(e) => return Some(unreadable(w, &e)),
    };
    let settings = policy.map(|p| Settings::of(p, w));
    let observed = settings.as_ref().map(|settings| Observed {
        workload: w,
        pods,
        jobs,
        settings,
        now,
    });
    let items = observed
        .as_ref()
        .map(|o| items(o, &record))
        .unwrap_or_default();
    let next = match &observed {
        Some(observed) => step(observed).next,
        None => next_from_record(w, &record, jobs),
    };
    let version = |pod: &Pod| {
        policy?
            .versions(&Template::of_pod(pod))
            .first()
            .map(|v| v.label().to_string())
    };
    let mut units = Vec::new();
    let partition = w.partition();
    let update_revision = match w {
        Workload::StatefulSet(s) => s.status.as_ref().and_then(|s| s.update_revision.clone()),
        Workload::Deployment(_) => None,
    };
    let mut done = 0;
    if let Some(partition) = partition {
        for ordinal in (0..w.replicas()).rev() {
            let pod = pod_at(pods, w.name(), ordinal);
            let on_update = pod.and_then(revision).is_some()
                && pod.and_then(revision) == update_revision.as_deref();
            let ready = pod.and_then(is_ready).is_some();
            done += u32::from(on_update && ready);
            units.push(Unit {
                ordinal,
                pod: format!("{}-{ordinal}", w.name()),
                version: pod.and_then(version),
                revision: pod.and_then(revision).map(String::from),
                ready,
                restarts: pod.map_or(0, restarts),
                next: record.is_active()
                    && (ordinal == partition - 1 || (ordinal == partition && !on_update)),
            });
        }
    } else {
        for (i, pod) in pods.iter().enumerate() {
            let ready = is_ready(pod).is_some();
            units.push(Unit {
                ordinal: i32::try_from(i).unwrap_or(i32::MAX),
                pod: pod.metadata.name.clone().unwrap_or_default(),
                version: version(pod),
                revision: None,
                ready,
                restarts: restarts(pod),
                next: false,
            });
            done += u32::from(ready && version(pod).as_deref() == Some(record.to.as_str()));
        }
    }
    let replicas = u32::try_from(w.replicas().max(1)).unwrap_or(1);
    Some(Report {
        kind: w.kind().to_string(),
        namespace: w.namespace().to_string(),
        name: w.name().to_string(),
        from: record.from.clone(),
        to: record.to.clone(),
        state: format!("{:?}", record.state),
        rollback: record.rollback,
        automatic: record.automatic,
        record_state: Some(record.state),
        pause_after: settings.map_or("-", |s| pause_name(s.pause_after)),
        partition,
        progress_percent: if record.is_active() {
            (done * 100 / replicas).min(100)
        } else {
            100
        },
        units,
        items_done: items.iter().filter(|i| i.state.is_over()).count(),
        items,
        pod_refused: None,
        next,
    })
}

/// The next action when no policy is visible here (`serve` may read it from
/// files this command was not given): the record is written only by
/// upgrade-guard, so its state says what the refresh waits for; versions
/// are not judged.
fn next_from_record(w: &Workload, record: &RefreshRecord, jobs: &[Job]) -> Next {
    let (ns, name) = (w.namespace(), w.name());
    let id = format!("{ns}/{name}");
    let unseen = "its UpgradePolicy is not among the cluster's nor in --policies here (serve may read it from its own policy files: give the same with --policies to see versions)";
    let reason = record.reason.as_deref().map_or(String::new(), |r| {
        format!(": {}", crate::quoted::bounded(r))
    });
    let undo = super::rollout_undo(w);
    let hook_failed = jobs.iter().any(|job| {
        job.status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True")
    });
    let (text, command) = match record.state {
        RefreshState::Paused => (
            match record.reason {
                Some(_) => format!("paused{reason}"),
                None => "paused; check it, then resume".into(),
            },
            Some(format!("upgrade-guard resume {id}")),
        ),
        RefreshState::Failed if record.rollback => (
            format!(
                "the rollback to {} is held{reason}; look at the pods (`kubectl -n {ns} get pods`) or go on anyway",
                record.to
            ),
            Some(format!("upgrade-guard resume --force --reason TEXT {id}")),
        ),
        RefreshState::Failed if hook_failed => (
            format!(
                "held{reason}: run the failed hook again (`upgrade-guard retry {id}`), skip it (`upgrade-guard resume --force --reason TEXT {id}`) or roll back to {} (`{undo}`)",
                record.from
            ),
            Some(format!("upgrade-guard retry {id}")),
        ),
        RefreshState::Failed => (
            format!(
                "held{reason}: roll back to {} (`{undo}`) or go on anyway (`upgrade-guard resume --force --reason TEXT {id}`)",
                record.from
            ),
            Some(undo.clone()),
        ),
        RefreshState::RollingOut | RefreshState::RollingBack => (
            format!(
                "{} {} → {}: the refresh controller moves it on; nothing to do",
                if record.rollback {
                    "rolling back"
                } else {
                    "rolling out"
                },
                record.from,
                record.to
            ),
            None,
        ),
        RefreshState::Completed => (
            format!(
                "no refresh in progress; the last one, {} → {}, completed",
                record.from, record.to
            ),
            None,
        ),
    };
    Next {
        text: format!("{text} ({unseen})"),
        command,
    }
}

/// A record nobody can read: say so, with the parser's words.
fn unreadable(w: &Workload, e: &serde_json::Error) -> Report {
    Report {
        kind: w.kind().to_string(),
        namespace: w.namespace().to_string(),
        name: w.name().to_string(),
        from: "?".into(),
        to: "?".into(),
        state: "Unreadable".into(),
        rollback: false,
        automatic: false,
        record_state: None,
        pause_after: "-",
        partition: w.partition(),
        progress_percent: 0,
        units: Vec::new(),
        items: Vec::new(),
        items_done: 0,
        pod_refused: None,
        next: Next {
            text: format!("the upgradeguard.io/refresh record cannot be read: {e}"),
            command: None,
        },
    }
}

/// How a refresh ended, as `status --watch` tells it (each its own exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// Completed: a refresh, or a rollback someone asked for.
    Completed,
    /// Held as Failed: a unit or hook failed; it waits for `resume --force`,
    /// `retry` or a rollback.
    Failed,
    /// The controller rolled the refresh back itself (`onFailure:
    /// rollback`), and the rollback completed: the refresh did not happen.
    RolledBack,
    /// The record cannot be read: nothing to follow.
    Unreadable,
}

impl Report {
    /// Whether this refresh is over, and how; `None` while it moves or is
    /// paused (a pause waits for `resume`, it is not an end). An automatic
    /// rollback is followed until it completes, and then ends as
    /// [`Over::RolledBack`].
    pub fn over(&self) -> Option<Over> {
        match self.record_state {
            None => Some(Over::Unreadable),
            Some(RefreshState::Failed) => Some(Over::Failed),
            Some(RefreshState::Completed) if self.rollback && self.automatic => {
                Some(Over::RolledBack)
            }
            Some(RefreshState::Completed) => Some(Over::Completed),
            Some(RefreshState::RollingOut | RefreshState::Paused | RefreshState::RollingBack) => {
                None
            }
        }
    }

    /// One sentence for how it ended.
    pub fn ending(&self, over: Over) -> String {
        let what = format!("{} {}/{}", self.kind, self.namespace, self.name);
        let run = if self.rollback { "rollback" } else { "refresh" };
        match over {
            Over::Completed => format!("{what}: {run} {} → {} completed", self.from, self.to),
            Over::Failed => format!(
                "{what}: {run} {} → {} failed: {}",
                self.from, self.to, self.next.text
            ),
            Over::RolledBack => format!(
                "{what}: the refresh to {} was rolled back automatically (onFailure: rollback); {} runs again",
                self.from, self.to
            ),
            Over::Unreadable => format!("{what}: {}", self.next.text),
        }
    }
}

/// The text `upgrade-guard status` prints.
pub fn text(reports: &[Report]) -> String {
    if reports.is_empty() {
        return "no StatefulSet or Deployment carries a refresh record\n".into();
    }
    let mut out = String::new();
    for r in reports {
        out.push_str(&format!(
            "{} {}/{}: {} → {}  {}  pause-after {}{}  {}% refreshed\n",
            r.kind,
            r.namespace,
            r.name,
            r.from,
            r.to,
            r.state,
            r.pause_after,
            r.partition
                .map(|p| format!("  partition {p}"))
                .unwrap_or_default(),
            r.progress_percent
        ));
        out.push_str(
            "  UNIT  POD                       VERSION     REVISION            READY  RESTARTS\n",
        );
        for u in &r.units {
            out.push_str(&format!(
                "  {:<5} {:<25} {:<11} {:<19} {:<6} {:<8}{}\n",
                u.ordinal,
                u.pod,
                u.version.as_deref().unwrap_or("-"),
                u.revision.as_deref().unwrap_or("-"),
                if u.ready { "yes" } else { "no" },
                u.restarts,
                if u.next { " ← restarts next" } else { "" }
            ));
        }
        if !r.items.is_empty() {
            let title = format!("ITEM ({} of {} done)", r.items_done, r.items.len());
            out.push_str(&format!("  {title:<40} {:<15} JOB\n", "STATE"));
            for item in &r.items {
                out.push_str(&format!(
                    "  {:<40} {:<15} {}\n",
                    item.name,
                    item.state.as_str(),
                    item.job.as_deref().unwrap_or("-")
                ));
            }
        }
        if let Some(refused) = &r.pod_refused {
            out.push_str(&format!("  refused pod: {refused}\n"));
        }
        out.push_str(&format!("  next: {}\n", r.next.text));
        if let Some(command) = &r.next.command {
            out.push_str(&format!("  run:  {command}\n"));
        }
    }
    out
}
