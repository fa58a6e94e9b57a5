//! `upgrade-guard status [NS/NAME] [--output json]`: per refresh, the units
//! and the one next action with the command to run.

use std::process::ExitCode;

use super::{Common, Error, check::Output, cluster};
use crate::policy::PolicySet;
use crate::refresh::status::{self, Report};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One workload as NAMESPACE/NAME; default: every one with a refresh record.
    pub target: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
}

pub fn run(args: &Args, common: &Common) -> Result<ExitCode, Error> {
    let policies = common.load_policies()?;
    let runtime = super::runtime()?;
    let reports = runtime.block_on(async {
        let client = cluster::client().await?;
        gather(&client, args.target.as_deref(), &policies, common.now()).await
    })?;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&reports).unwrap_or_default()
        ),
        Output::Table => print!("{}", status::text(&reports)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The reports for `target`, or for every workload with a refresh record
/// that a policy governs.
pub async fn gather(
    client: &kube::Client,
    target: Option<&str>,
    policies: &PolicySet,
    now: jiff::Timestamp,
) -> Result<Vec<Report>, Error> {
    let workloads = match target {
        Some(t) => {
            let (ns, name) = cluster::target(t)?;
            vec![cluster::find(client, &ns, &name).await?]
        }
        None => cluster::with_records(client).await?,
    };
    let mut reports = Vec::new();
    for w in workloads {
        let Some(policy) = policies.select(&w) else {
            if target.is_some() {
                return Err(Error::Io(format!(
                    "{} {}/{}: no policy governs it",
                    w.kind(),
                    w.namespace(),
                    w.name()
                )));
            }
            continue;
        };
        let pods = cluster::pods(client, &w).await?;
        match status::report(&w, &pods, policy, now) {
            Some(report) => reports.push(report),
            None if target.is_some() => {
                return Err(Error::Io(format!(
                    "{} {}/{}: no refresh recorded",
                    w.kind(),
                    w.namespace(),
                    w.name()
                )));
            }
            None => {}
        }
    }
    Ok(reports)
}
