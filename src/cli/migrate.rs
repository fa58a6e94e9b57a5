//! `upgrade-guard migrate NS/NAME [--dry-run] [--yes] [--finish | --rollback]`:
//! the live Deployment → StatefulSet migration, one confirmed step at a
//! time, journaled on the Deployment so it can be resumed or rolled back.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use super::cluster::{self, ClusterArgs};
use super::{Common, Error};
use crate::convert::apply::{self, ApplyError, Ended};
use crate::convert::migrate::{self, Mode, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// NAMESPACE/NAME of the Deployment.
    pub target: String,
    /// Print the plan and the exact objects; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Then delete the Deployment (left at 0 replicas until now).
    #[arg(long, conflicts_with = "rollback")]
    pub finish: bool,
    /// Undo the steps in reverse: the Deployment, its claim, the reclaim policy.
    #[arg(long)]
    pub rollback: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn run(args: &Args, common: &Common) -> Result<ExitCode, Error> {
    let mode = match (args.finish, args.rollback) {
        (true, _) => Mode::Finish,
        (_, true) => Mode::Rollback,
        _ => Mode::Migrate,
    };
    super::runtime()?.block_on(async {
        let cluster = cluster::connect(&args.cluster).await?;
        let (ns, name) = cluster::target(&args.target)?;
        let failed = |e: ApplyError| apply_error(&cluster, e);
        let target = apply::target(&cluster.client, &ns, &name).await.map_err(failed)?;
        if args.dry_run {
            let observed = apply::observe(&cluster.client, &ns, &name, &target)
                .await
                .map_err(|e| cluster.error(&format!("observe {ns}/{name}"), e))?;
            let step = migrate::next(&target, &observed, mode).map_err(|e| Error::failed("", e))?;
            println!("next step: {}", step.name());
            for object in plan_objects(&target) {
                print!("---\n{}", serde_yaml_ng::to_string(&object).unwrap_or_default());
            }
            return Ok(ExitCode::SUCCESS);
        }
        if !args.yes && !confirm(&ns, &name, mode)? {
            return Err(Error::Other("not confirmed: nothing was changed".into()));
        }
        let ended = apply::run(&cluster.client, &ns, &name, &target, mode, &mut |line| {
            eprintln!("{line}")
        })
        .await
        .map_err(failed)?;
        let said = match ended {
            Ended::Migrated => format!("Deployment {ns}/{name} migrated; it waits at 0 replicas: `upgrade-guard migrate --finish {ns}/{name}` deletes it"),
            Ended::Finished => format!("Deployment {ns}/{name} migrated and deleted"),
            Ended::RolledBack => format!("Deployment {ns}/{name} rolled back"),
        };
        println!("{}", common.suggesting(&said));
        Ok(ExitCode::SUCCESS)
    })
}

/// A failed call names the API server in one sentence.
fn apply_error(cluster: &cluster::Cluster, e: ApplyError) -> Error {
    match e {
        ApplyError::Kube(what, e) => cluster.error(&what, e),
        other => Error::failed("", other),
    }
}

fn confirm(ns: &str, name: &str, mode: Mode) -> Result<bool, Error> {
    let what = match mode {
        Mode::Rollback => "roll back the migration of",
        Mode::Finish => "migrate, then delete,",
        Mode::Migrate => "migrate",
    };
    eprint!("{what} Deployment {ns}/{name}? (no PersistentVolume is ever deleted) [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::Told {
            message: format!("standard input: {e}; pass --yes"),
            source: e.into(),
        })?;
    Ok(matches!(answer.trim(), "y" | "yes"))
}

fn plan_objects(target: &Target) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = target
        .claims
        .iter()
        .filter_map(|(_, c)| serde_json::to_value(c).ok())
        .collect();
    out.extend(
        target
            .service
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok()),
    );
    out.extend(serde_json::to_value(&target.statefulset).ok());
    out
}
