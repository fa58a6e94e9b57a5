//! `upgrade-guard check --old PATH --new PATH [--output table|json]`: the
//! GitOps / CI validator. Objects are paired by kind/namespace/name and each
//! change is decided as the webhook would decide it.

use std::process::ExitCode;

use serde::Serialize;

use super::{Common, Error, verdict_code};
use crate::decide::{self, Change, Rule, Verdict};
use crate::manifest;
use crate::workload::Workload;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The manifests as they are (file, directory, or `-`).
    #[arg(long)]
    pub old: String,
    /// The manifests as they will be (file, directory, or `-`).
    #[arg(long)]
    pub new: String,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
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
    if args.old == "-" && args.new == "-" {
        return Err(Error::Io(
            "--old and --new cannot both read standard input".into(),
        ));
    }
    let policies = common.load_policies()?;
    let old_set = manifest::read(&args.old)?;
    let new_set = manifest::read(&args.new)?;
    let old = manifest::workloads(&old_set)?;
    let new = manifest::workloads(&new_set)?;
    // Lookups (claims' access modes) see what the cluster will hold.
    let cluster = manifest::snapshot(&new_set)?;
    let now = common.now();

    let mut rows = Vec::new();
    let find = |set: &[(String, Workload)], w: &Workload| {
        set.iter()
            .find(|(_, o)| manifest::key(o) == manifest::key(w))
            .map(|(_, o)| o.clone())
    };
    for (source, n) in &new {
        let (operation, change) = match find(&old, n) {
            Some(o) => (
                "UPDATE",
                Change::Update {
                    old: o,
                    new: n.clone(),
                },
            ),
            None => ("CREATE", Change::Create(n.clone())),
        };
        let verdict = decide::decide(&change, &policies, &cluster, now);
        rows.push(row(n, operation, source, verdict));
    }
    for (source, o) in &old {
        if find(&new, o).is_none() {
            let verdict = decide::decide(&Change::Delete(o.clone()), &policies, &cluster, now);
            rows.push(row(o, "DELETE", source, verdict));
        }
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

fn row(w: &Workload, operation: &'static str, source: &str, v: Verdict) -> Row {
    let verdict = match (v.allowed, v.rule) {
        (false, _) => "refused",
        (true, Some(Rule::Forced)) => "forced",
        (true, _) => "allowed",
    };
    let mut warnings = v.warnings;
    warnings.extend(v.patch_warnings);
    Row {
        kind: w.kind().to_string(),
        namespace: w.namespace().to_string(),
        name: w.name().to_string(),
        operation,
        source: source.to_string(),
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
