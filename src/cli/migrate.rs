//! `upgrade-guard migrate NS/NAME [--dry-run] [--yes] [--finish | --rollback]`:
//! the live Deployment → StatefulSet migration, one confirmed step at a
//! time, journaled on the Deployment so it can be resumed or rolled back.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::{Common, Error, cluster};
use crate::convert::migrate::{self, JOURNAL, Journal, Mode, Step, Target};
use crate::convert::{self, apply};
use crate::manifest::Manifest;

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
}

fn kube(what: &str) -> impl Fn(kube::Error) -> Error + '_ {
    move |e| Error::Io(format!("{what}: {e}"))
}

pub fn run(args: &Args, _common: &Common) -> Result<ExitCode, Error> {
    let mode = match (args.finish, args.rollback) {
        (true, _) => Mode::Finish,
        (_, true) => Mode::Rollback,
        _ => Mode::Migrate,
    };
    super::runtime()?.block_on(async {
        let client = cluster::client().await?;
        let (ns, name) = cluster::target(&args.target)?;
        let target = build_target(&client, &ns, &name).await?;
        if args.dry_run {
            let observed = apply::observe(&client, &ns, &name, &target).await.map_err(kube("observe"))?;
            let step = migrate::next(&target, &observed, mode).map_err(|e| Error::Io(e.0))?;
            println!("next step: {}", step.name());
            for object in plan_objects(&target) {
                print!("---\n{}", serde_yaml_ng::to_string(&object).unwrap_or_default());
            }
            return Ok(ExitCode::SUCCESS);
        }
        if !args.yes && !confirm(&ns, &name, mode)? {
            return Err(Error::Io("not confirmed: nothing was changed".into()));
        }
        for _ in 0..2000 {
            let observed = apply::observe(&client, &ns, &name, &target).await.map_err(kube("observe"))?;
            let step = migrate::next(&target, &observed, mode).map_err(|e| Error::Io(e.0))?;
            match &step {
                Step::Wait(why) => {
                    eprintln!("waiting: {why}");
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    continue;
                }
                Step::Migrated => {
                    println!("Deployment {ns}/{name} migrated; it waits at 0 replicas: `upgrade-guard migrate --finish {ns}/{name}` deletes it");
                    return Ok(ExitCode::SUCCESS);
                }
                Step::Finished => {
                    println!("Deployment {ns}/{name} migrated and deleted");
                    return Ok(ExitCode::SUCCESS);
                }
                _ => {}
            }
            eprintln!("step: {}", step.name());
            apply::execute(&client, &ns, &step, &observed).await.map_err(kube(&step.name()))?;
            if step == Step::EndJournal {
                println!("Deployment {ns}/{name} rolled back");
                return Ok(ExitCode::SUCCESS);
            }
            if !matches!(step, Step::Begin(_) | Step::DeleteDeployment) {
                apply::record(&client, &ns, &name, &step).await.map_err(kube("journal"))?;
            }
        }
        Err(Error::Io(format!("Deployment {ns}/{name}: the migration did not finish; run it again to continue")))
    })
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
        .map_err(|e| Error::Io(format!("standard input: {e}; pass --yes")))?;
    Ok(matches!(answer.trim(), "y" | "yes"))
}

/// The StatefulSet (and claims, Service) this Deployment migrates to, from
/// the live objects; claims already deleted come from the journal.
async fn build_target(client: &kube::Client, ns: &str, name: &str) -> Result<Target, Error> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(kube(name))?
        .ok_or_else(|| Error::Io(format!("Deployment {ns}/{name} not found")))?;
    let journal: Option<Journal> = deployment
        .annotations()
        .get(JOURNAL)
        .and_then(|t| serde_json::from_str(t).ok());
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let source = |what: &str| format!("{what} (live)");
    let mut manifests = Vec::new();
    let mut pvs = HashMap::new();
    let volumes = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.volumes.clone())
        .unwrap_or_default();
    for claim_name in volumes.iter().filter_map(|v| {
        v.persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.clone())
    }) {
        let claim = match claims_api
            .get_opt(&claim_name)
            .await
            .map_err(kube(&claim_name))?
        {
            Some(c) => c,
            None => {
                let m = journal
                    .as_ref()
                    .and_then(|j| j.moves.iter().find(|m| m.old_claim == claim_name))
                    .ok_or_else(|| {
                        Error::Io(format!(
                            "claim {ns}/{claim_name} not found, and no migration journal has it"
                        ))
                    })?;
                PersistentVolumeClaim {
                    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                        name: Some(claim_name.clone()),
                        namespace: Some(ns.into()),
                        labels: m.old_labels.clone(),
                        ..Default::default()
                    },
                    spec: Some(m.old_spec.clone()),
                    status: None,
                }
            }
        };
        if let Some(pv) = claim.spec.as_ref().and_then(|s| s.volume_name.clone()) {
            pvs.insert(claim_name.clone(), pv);
        }
        manifests.push(Manifest {
            source: source(&claim_name),
            value: to_value(&claim)?,
        });
    }
    let services = Api::<Service>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(kube("Services"))?;
    let existing: Vec<String> = services.items.iter().map(|s| s.name_any()).collect();
    for s in &services.items {
        manifests.push(Manifest {
            source: source(&s.name_any()),
            value: to_value(s)?,
        });
    }
    // Scaled to 0 by the migration: the StatefulSet gets the original count.
    let mut original = deployment.clone();
    if let (Some(j), Some(spec)) = (&journal, original.spec.as_mut()) {
        spec.replicas = Some(j.replicas);
    }
    manifests.push(Manifest {
        source: source(name),
        value: to_value(&original)?,
    });
    let conversion = convert::convert(&manifests, &pvs).map_err(|e| Error::Io(e.to_string()))?;
    if let Some(problem) = conversion.problems.first() {
        return Err(Error::Io(format!("cannot migrate: {problem}")));
    }
    Target::of(&original, &conversion.objects, &existing).map_err(|e| Error::Io(e.0))
}

fn to_value<T: serde::Serialize>(object: &T) -> Result<serde_json::Value, Error> {
    serde_json::to_value(object).map_err(|e| Error::Io(e.to_string()))
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
