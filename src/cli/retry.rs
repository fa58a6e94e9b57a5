//! `upgrade-guard retry NS/NAME`: run a failed (or timed-out) hook again.
//! It deletes that hook's Job, guarded by its UID; the controller sees the
//! Job gone and creates it again under the same name.

use std::process::ExitCode;

use super::cluster::{self, ClusterArgs};
use super::{Common, Error};
use crate::refresh::executor::{self, Outcome};
use crate::refresh::status::{self, ItemState};

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
        let (policies, notes) = cluster::policies(&cluster, common.policies.as_deref()).await?;
        for note in notes {
            eprintln!("upgrade-guard: {note}");
        }
        let (ns, name) = cluster::target(&args.target)?;
        let w = cluster::find(&cluster, &ns, &name).await?;
        let what = format!("{} {ns}/{name}", w.kind());
        let pods = cluster::pods(&cluster, &w).await?;
        let jobs = cluster::jobs(&cluster, &w).await?;
        // The same items `status` shows: the failed hook and its Job.
        let report = status::report(&w, &pods, &jobs, policies.select(&w), common.now());
        let failed = report
            .iter()
            .flat_map(|r| &r.items)
            .find(|i| i.state == ItemState::HoldingFailed && i.job.is_some());
        let Some((item, job_name)) = failed.and_then(|i| Some((i, i.job.as_deref()?))) else {
            return Err(Error::Other(format!(
                "{what}: no failed hook to run again (`upgrade-guard status {ns}/{name}` shows the refresh)"
            )));
        };
        let uid = jobs
            .iter()
            .find(|j| j.metadata.name.as_deref() == Some(job_name))
            .and_then(|j| j.metadata.uid.clone())
            .ok_or_else(|| {
                Error::Other(format!(
                    "{what}: the Job {job_name} is gone already; the controller runs it again"
                ))
            })?;
        match executor::delete_job(&cluster.client, &ns, job_name, &uid).await {
            Ok(Outcome::Conflict) => Err(Error::Other(format!(
                "{what}: the Job {job_name} changed while the command ran; run it again"
            ))),
            Ok(_) => Ok(format!(
                "{what}: deleted the failed Job {job_name}; the controller runs the {} again at its next step",
                item.name
            )),
            Err(e) => Err(cluster.error(&format!("Job {ns}/{job_name}"), e)),
        }
    })?;
    println!("{}", common.suggesting(&message));
    Ok(ExitCode::SUCCESS)
}
