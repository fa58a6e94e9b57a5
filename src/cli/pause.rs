//! `upgrade-guard pause NS/NAME`: hold the refresh after the unit in
//! progress (sets `upgradeguard.io/pause-after: all`).

use std::process::ExitCode;

use super::{Common, Error, cluster, resume::active_record};
use crate::workload::PAUSE_AFTER;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// NAMESPACE/NAME
    pub target: String,
}

pub fn run(args: &Args, _common: &Common) -> Result<ExitCode, Error> {
    let runtime = super::runtime()?;
    let message = runtime.block_on(async {
        let client = cluster::client().await?;
        pause(&client, &args.target).await
    })?;
    println!("{message}");
    Ok(ExitCode::SUCCESS)
}

pub async fn pause(client: &kube::Client, target: &str) -> Result<String, Error> {
    let (ns, name) = cluster::target(target)?;
    let w = cluster::find(client, &ns, &name).await?;
    active_record(&w)?;
    cluster::annotate(client, &w, PAUSE_AFTER, Some("all")).await?;
    Ok(format!(
        "{} {ns}/{name}: holds after the unit in progress; go on with `upgrade-guard resume {ns}/{name}`",
        w.kind()
    ))
}
