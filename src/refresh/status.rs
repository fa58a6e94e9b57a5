//! What `upgrade-guard status` shows: per refresh, the units and the one
//! next action, from the same observations (and the same step) the
//! controller uses.

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use serde::Serialize;

use super::{Next, Observed, Settings, is_ready, pod_at, restarts, revision, step};
use crate::policy::{PauseAfter, Policy};
use crate::workload::Workload;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub from: String,
    pub to: String,
    pub state: String,
    /// `first`, `all`, `none`; `-` when no policy was found.
    pub pause_after: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    pub progress_percent: u32,
    pub units: Vec<Unit>,
    pub next: Next,
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
    policy: Option<&Policy>,
    now: jiff::Timestamp,
) -> Option<Report> {
    let record = match w.refresh_record()? {
        Ok(record) => record,
        Err(e) => return Some(unreadable(w, &e)),
    };
    let settings = policy.map(|p| Settings::of(p, w));
    let next = match &settings {
        Some(settings) => {
            step(&Observed {
                workload: w,
                pods,
                settings,
                now,
            })
            .next
        }
        None => Next {
            text: "no UpgradePolicy governs it where this command looked (the cluster's, and --policies): versions and the next action are not judged".into(),
            command: None,
        },
    };
    let version = |pod: &Pod| {
        let template = PodTemplateSpec {
            metadata: Some(pod.metadata.clone()),
            spec: pod.spec.clone(),
        };
        policy?
            .versions(&template)
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
        pause_after: settings.map_or("-", |s| pause_name(s.pause_after)),
        partition,
        progress_percent: if record.is_active() {
            (done * 100 / replicas).min(100)
        } else {
            100
        },
        units,
        next,
    })
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
        pause_after: "-",
        partition: w.partition(),
        progress_percent: 0,
        units: Vec::new(),
        next: Next {
            text: format!("the upgradeguard.io/refresh record cannot be read: {e}"),
            command: None,
        },
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
        out.push_str(&format!("  next: {}\n", r.next.text));
        if let Some(command) = &r.next.command {
            out.push_str(&format!("  run:  {command}\n"));
        }
    }
    out
}
