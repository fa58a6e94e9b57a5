//! `upgrade-guard check --old PATH --new PATH [--output table|json]`: the
//! GitOps / CI validator. Objects are paired by kind/namespace/name and each
//! change is decided as the webhook would decide it.

use std::process::ExitCode;

use serde::Serialize;

use super::{Common, Error, verdict_code};
use crate::decide::{self, Change, Rule, Verdict};
use crate::manifest::{self, WorkloadSet};
use crate::workload::Workload;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The manifests as they are (file, directory, or `-`).
    #[arg(
        long,
        required_unless_present = "live",
        requires = "new",
        conflicts_with = "live"
    )]
    pub old: Option<String>,
    /// The manifests as they will be (file, directory, or `-`).
    #[arg(long, requires = "old")]
    pub new: Option<String>,
    /// Pre-refresh check of a live workload (NAMESPACE/NAME): would a
    /// refresh to `--to` be admitted, and is it healthy enough to start?
    #[arg(long, requires = "to")]
    pub live: Option<String>,
    /// The version for `--live`.
    #[arg(long, requires = "live")]
    pub to: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub cluster: super::cluster::ClusterArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Serialize)]
struct Row {
    kind: String,
    namespace: String,
    name: String,
    operation: &'static str,
    source: String,
    verdict: &'static str,
    from: Option<String>,
    to: Option<String>,
    rule: Option<Rule>,
    reason: String,
    policy: Option<String>,
    warnings: Vec<String>,
}

pub fn run(args: &Args, common: &Common) -> Result<ExitCode, Error> {
    if let (Some(target), Some(to)) = (&args.live, &args.to) {
        let runtime = super::runtime()?;
        let (ready, text) = runtime.block_on(async {
            let cluster = super::cluster::connect(&args.cluster).await?;
            let (policies, notes) =
                super::cluster::policies(&cluster, common.policies.as_deref()).await?;
            for note in notes {
                eprintln!("upgrade-guard: {note}");
            }
            live(&cluster, target, to, &policies, common.now()).await
        })?;
        print!("{text}");
        return Ok(verdict_code(ready));
    }
    let policies = common.load_policies_noting()?;
    let (Some(old), Some(new)) = (&args.old, &args.new) else {
        return Err(Error::Other(
            "give --old and --new, or --live and --to".into(),
        ));
    };
    if old == "-" && new == "-" {
        return Err(Error::Other(
            "--old and --new cannot both read standard input".into(),
        ));
    }
    // The two sets parse side by side: parsing is most of check's time.
    let (old_set, new_set) = std::thread::scope(|s| {
        let old_set = s.spawn(|| WorkloadSet::read(old));
        let new_set = WorkloadSet::read(new);
        (old_set.join(), new_set)
    });
    let mut old_set = old_set.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    let new_set = new_set?;
    // An empty new set is a failed render far more often than an intent to
    // delete everything; an empty pipe never means anything.
    for (path, set, flag) in [(old, &old_set, "--old"), (new, &new_set, "--new")] {
        if set.objects == 0 && (flag == "--new" || path == "-") {
            return Err(Error::Other(format!(
                "{flag} {path}: no Kubernetes objects"
            )));
        }
    }
    // Lookups (claims' access modes) see what the cluster will hold; check
    // never judges a Scale, the one change that looks up a workload.
    let cluster = new_set.claims;
    let now = common.now();

    // Each old workload is moved into the one change that pairs with it.
    let mut unpaired: Vec<Option<(String, Workload)>> = std::mem::take(&mut old_set.workloads)
        .into_iter()
        .map(Some)
        .collect();
    let mut rows = Vec::new();
    for (source, n) in new_set.workloads {
        let key = manifest::key(&n);
        let paired = old_set.position(&key).and_then(|i| unpaired[i].take());
        let (operation, change) = match paired {
            Some((_, o)) => ("UPDATE", Change::update(o, n)),
            None => ("CREATE", Change::create(n)),
        };
        let verdict = decide::decide(&change, &policies, &cluster, now);
        rows.push(row(key, operation, source, verdict));
    }
    for (source, o) in unpaired.into_iter().flatten() {
        let key = manifest::key(&o);
        let verdict = decide::decide(&Change::delete(o), &policies, &cluster, now);
        rows.push(row(key, "DELETE", source, verdict));
    }
    let all_allowed = rows.iter().all(|r| r.verdict != "refused");
    match args.output {
        Output::Json => {
            let out = serde_json::json!({ "allowed": all_allowed, "results": rows });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Output::Table => print!("{}", table(&rows)),
    }
    Ok(verdict_code(all_allowed))
}

fn row(key: manifest::Key, operation: &'static str, source: String, v: Verdict) -> Row {
    let (kind, namespace, name) = key;
    let verdict = match (v.allowed, v.rule) {
        (false, _) => "refused",
        (true, Some(Rule::Forced)) => "forced",
        (true, _) => "allowed",
    };
    let mut warnings = v.warnings;
    warnings.extend(v.patch_warnings);
    Row {
        kind: kind.to_string(),
        namespace,
        name,
        operation,
        source,
        verdict,
        from: v.from,
        to: v.to,
        rule: v.rule,
        reason: if v.policy.is_none() {
            "no policy governs it".into()
        } else {
            v.reason
        },
        policy: v.policy,
        warnings,
    }
}

fn table(rows: &[Row]) -> String {
    let header = ["OBJECT", "OPERATION", "CHANGE", "VERDICT", "RULE", "REASON"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let change = match (&r.from, &r.to) {
                // The image changed, the version did not (a variant tag).
                (Some(f), Some(t)) if f == t => format!("{f} (same version)"),
                (Some(f), Some(t)) => format!("{f} → {t}"),
                _ => "-".into(),
            };
            [
                format!("{} {}/{}", r.kind, r.namespace, r.name),
                r.operation.to_string(),
                change,
                r.verdict.to_string(),
                r.rule.map_or("-".into(), |r| r.to_string()),
                r.reason.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for c in &cells {
        for (w, cell) in widths.iter_mut().zip(c) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |c: &[String]| {
        let mut s = String::new();
        for (i, cell) in c.iter().enumerate() {
            if i + 1 == c.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&header.map(String::from));
    for (c, r) in cells.iter().zip(rows) {
        out.push_str(&line(c));
        for w in &r.warnings {
            out.push_str(&format!("  warning: {w}\n"));
        }
    }
    out
}

/// The pre-refresh check: the verdict a change to `to` would get, and
/// whether the workload is healthy enough to start (all replicas Ready, no
/// refresh running). `true` when both hold.
pub async fn live(
    cluster: &super::cluster::Cluster,
    target: &str,
    to: &str,
    policies: &crate::policy::PolicySet,
    now: jiff::Timestamp,
) -> Result<(bool, String), Error> {
    let (ns, name) = super::cluster::target(target)?;
    let old = super::cluster::find(cluster, &ns, &name).await?;
    let id = format!("{} {ns}/{name}", old.kind());
    let Some(policy) = policies.select(&old) else {
        return Ok((
            true,
            format!("{id}: no policy governs it; any version is admitted\n"),
        ));
    };
    let mut new = old.clone();
    if let Some(template) = match &mut new {
        Workload::StatefulSet(s) => s.spec.as_mut().map(|s| &mut s.template),
        Workload::Deployment(d) => d.spec.as_mut().map(|s| &mut s.template),
    } {
        policy.retarget(template, to);
    }
    let verdict = decide::decide(
        &Change::update(old.clone(), new),
        policies,
        &crate::decide::NoCluster,
        now,
    );
    let mut text = if verdict.allowed {
        format!(
            "{id}: a refresh to {to} would be admitted{}\n",
            verdict
                .from
                .as_ref()
                .map(|f| format!(" ({f} → {to})"))
                .unwrap_or_default()
        )
    } else {
        format!(
            "{id}: a refresh to {to} would be refused: {}\n",
            verdict.reason
        )
    };
    let (ready, replicas) = match &old {
        Workload::StatefulSet(s) => (
            s.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
            old.replicas(),
        ),
        Workload::Deployment(d) => (
            d.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
            old.replicas(),
        ),
    };
    let running =
        old.status_shows_rollout() || matches!(old.refresh_record(), Some(Ok(r)) if r.is_active());
    let healthy = ready >= replicas && !running;
    text.push_str(&format!(
        "health: {ready} of {replicas} pods Ready, {}: {}\n",
        if running {
            "a refresh is running"
        } else {
            "no refresh running"
        },
        if healthy {
            "ready to start"
        } else {
            "not ready to start"
        }
    ));
    Ok((verdict.allowed && healthy, text))
}
