//! `upgrade-guard pause NS/NAME`: hold the refresh after the unit in
//! progress (sets `upgradeguard.io/pause-after: all`).

use std::process::ExitCode;

use super::cluster::{self, Cluster, ClusterArgs};
use super::{Common, Error, resume::active_record};
use crate::workload::PAUSE_AFTER;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// NAMESPACE/NAME
    pub target: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn run(args: &Args, common: &Common) -> Result<ExitCode, Error> {
    let runtime = super::runtime()?;
    let message = runtime.block_on(async {
        let cluster = cluster::connect(&args.cluster).await?;
        pause(&cluster, &args.target).await
    })?;
    println!("{}", common.suggesting(&message));
    Ok(ExitCode::SUCCESS)
}

pub async fn pause(cluster: &Cluster, target: &str) -> Result<String, Error> {
    let (ns, name) = cluster::target(target)?;
    let w = cluster::find(cluster, &ns, &name).await?;
    active_record(&w)?;
    cluster::annotate(cluster, &w, PAUSE_AFTER, "all").await?;
    Ok(format!(
        "{} {ns}/{name}: holds after the unit in progress; go on with `upgrade-guard resume {ns}/{name}`",
        w.kind()
    ))
}
