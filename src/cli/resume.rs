//! `upgrade-guard resume NS/NAME [--force --reason TEXT]`: let a paused
//! refresh go on; `--force` goes on past a failed unit, and is audited.

use std::process::ExitCode;

use super::cluster::{self, Cluster, ClusterArgs};
use super::{Common, Error};
use crate::workload::{RESUME, RefreshState, Workload};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// NAMESPACE/NAME
    pub target: String,
    /// Go on past a failed (unhealthy) unit.
    #[arg(long, requires = "reason")]
    pub force: bool,
    /// Why, recorded in the workload's events.
    #[arg(long, requires = "force")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn run(args: &Args, common: &Common) -> Result<ExitCode, Error> {
    let runtime = super::runtime()?;
    let message = runtime.block_on(async {
        let cluster = cluster::connect(&args.cluster).await?;
        resume(
            &cluster,
            &args.target,
            args.force
                .then_some(args.reason.as_deref().unwrap_or_default()),
            common.now(),
        )
        .await
    })?;
    println!("{}", common.suggesting(&message));
    Ok(ExitCode::SUCCESS)
}

/// Sets `upgradeguard.io/resume`; refuses when there is nothing to resume.
pub async fn resume(
    cluster: &Cluster,
    target: &str,
    force_reason: Option<&str>,
    now: jiff::Timestamp,
) -> Result<String, Error> {
    let (ns, name) = cluster::target(target)?;
    let w = cluster::find(cluster, &ns, &name).await?;
    let record = active_record(&w)?;
    let value = match force_reason {
        Some(reason) if reason.trim().is_empty() => {
            return Err(Error::Other(
                "--force needs a --reason that says why".into(),
            ));
        }
        Some(reason) => format!("force: {}", reason.trim()),
        None if record.state == RefreshState::Failed => {
            return Err(Error::Other(format!(
                "{} {ns}/{name}: the refresh failed ({}): roll back, run a failed hook again (`upgrade-guard retry`), or go on anyway with --force --reason TEXT",
                w.kind(),
                record.reason.unwrap_or_default()
            )));
        }
        None => now.to_string(),
    };
    cluster::annotate(cluster, &w, RESUME, &value).await?;
    Ok(format!(
        "{} {ns}/{name}: resume requested; the controller goes on at its next step",
        w.kind()
    ))
}

pub fn active_record(w: &Workload) -> Result<crate::workload::RefreshRecord, Error> {
    match w.refresh_record() {
        Some(Ok(r)) if r.is_active() => Ok(r),
        _ => Err(Error::Other(format!(
            "{} {}/{}: no refresh in progress, nothing to resume or pause",
            w.kind(),
            w.namespace(),
            w.name()
        ))),
    }
}
