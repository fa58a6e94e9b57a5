//! `upgrade-guard status [NS/NAME] [--output json]`: per refresh, the units
//! and the one next action with the command to run.

use std::process::ExitCode;

use super::cluster::{self, Cluster, ClusterArgs};
use super::{Common, Error, check::Output};
use crate::policy::PolicySet;
use crate::refresh::status::{self, Report};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One workload as NAMESPACE/NAME; default: every one with a refresh record.
    pub target: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn run(args: &Args, common: &Common) -> Result<ExitCode, Error> {
    let runtime = super::runtime()?;
    let (reports, notes) = runtime.block_on(async {
        let cluster = cluster::connect(&args.cluster).await?;
        let (policies, notes) = cluster::policies(&cluster, common.policies.as_deref()).await?;
        let reports = gather(&cluster, args.target.as_deref(), &policies, common.now()).await?;
        Ok::<_, Error>((reports, notes))
    })?;
    for note in notes {
        eprintln!("upgrade-guard: {note}");
    }
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&reports).unwrap_or_default()
        ),
        Output::Table => print!("{}", status::text(&reports)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The reports for `target`, or for every workload with a refresh record,
/// governed by a policy that can be found or not.
pub async fn gather(
    cluster: &Cluster,
    target: Option<&str>,
    policies: &PolicySet,
    now: jiff::Timestamp,
) -> Result<Vec<Report>, Error> {
    let workloads = match target {
        Some(t) => {
            let (ns, name) = cluster::target(t)?;
            vec![cluster::find(cluster, &ns, &name).await?]
        }
        None => cluster::with_records(cluster).await?,
    };
    let mut reports = Vec::new();
    for w in workloads {
        if w.refresh_record().is_none() {
            return Err(Error::Io(format!(
                "{} {}/{}: no refresh recorded",
                w.kind(),
                w.namespace(),
                w.name()
            )));
        }
        let pods = cluster::pods(cluster, &w).await?;
        let policy = policies.select(&w);
        let jobs = match policy {
            Some(p) if p.hooks.any() => cluster::jobs(cluster, &w).await?,
            _ => Vec::new(),
        };
        reports.extend(status::report(&w, &pods, &jobs, policy, now));
    }
    Ok(reports)
}
