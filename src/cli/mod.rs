//! The command line: one file per command, each a thin shell around the
//! library. Exit codes: 0 allowed, 1 something refused, 2 bad input.

mod certs;
pub mod check;
pub mod cluster;
mod convert;
mod migrate;
pub mod pause;
pub mod resume;
pub mod retry;
mod review;
mod serve;
pub mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::manifest::InputError;
use crate::policy::{PolicyError, PolicySet};
use crate::webhook::ReviewError;

#[derive(Debug, Parser)]
#[command(
    name = "upgrade-guard",
    version,
    about = "Safe in-place upgrades of StatefulSets and Deployments"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

/// Arguments every command takes.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Policy file, or directory of policy files (default: ./policies).
    /// The live commands read the cluster's UpgradePolicy resources, and
    /// these files too only when given.
    #[arg(long, global = true, env = "UPGRADE_GUARD_POLICIES")]
    pub policies: Option<PathBuf>,
    /// Decide as if it were this time (RFC 3339), for reproducible output;
    /// default: now.
    #[arg(long, global = true, env = "UPGRADE_GUARD_NOW")]
    pub now: Option<jiff::Timestamp>,
}

impl Common {
    fn now(&self) -> jiff::Timestamp {
        self.now.unwrap_or_else(jiff::Timestamp::now)
    }

    /// `--policies`, or `./policies` by default.
    pub fn policy_path(&self) -> PathBuf {
        self.policies
            .clone()
            .unwrap_or_else(|| PathBuf::from("policies"))
    }

    fn load_policies(&self) -> Result<PolicySet, Error> {
        Ok(PolicySet::load(&self.policy_path())?)
    }

    /// [`Self::load_policies`] for the offline commands: an empty set is
    /// said on stderr.
    fn load_policies_noting(&self) -> Result<PolicySet, Error> {
        let policies = self.load_policies()?;
        if policies.is_empty() {
            eprintln!("upgrade-guard: warning: {}", no_policy(&self.policy_path()));
        }
        Ok(policies)
    }
}

/// Said loudly wherever no policy was loaded: nothing is governed then.
fn no_policy(path: &std::path::Path) -> String {
    format!(
        "no policy loaded from {} (no UpgradePolicy in its .yaml, .yml or .json files): nothing is governed, every change is allowed",
        path.display()
    )
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The webhook server: /validate, /mutate, /healthz, /readyz, /metrics.
    Serve(serve::Args),
    /// One AdmissionReview in, the response /validate (or /mutate) would give out.
    Review(review::Args),
    /// Judge the changes between two manifest sets, as the webhook would.
    Check(check::Args),
    /// A CA and serving certificate for the webhook Service, and the caBundle.
    Certs(certs::Args),
    /// Deployment manifests to StatefulSet manifests that keep the volumes.
    Convert(convert::Args),
    /// Migrate a live Deployment to a StatefulSet that keeps its volumes.
    Migrate(migrate::Args),
    /// Live refresh status per unit, and the next action.
    Status(status::Args),
    /// Let a paused refresh go on (`--force`: past a failed unit).
    Resume(resume::Args),
    /// Hold a refresh after the unit in progress.
    Pause(pause::Args),
    /// Run a failed refresh hook again (delete its Job; the controller makes it anew).
    Retry(retry::Args),
}

/// What stops a command; printed as one line on stderr, exit 2.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{source_name}: {error}")]
    Review {
        source_name: String,
        error: ReviewError,
    },
    #[error("{0}")]
    Io(String),
}

pub fn run(cli: Cli) -> ExitCode {
    let result = match &cli.command {
        Command::Review(args) => review::run(args, &cli.common),
        Command::Check(args) => check::run(args, &cli.common),
        Command::Serve(args) => serve::run(args, &cli.common),
        Command::Certs(args) => certs::run(args, &cli.common),
        Command::Convert(args) => convert::run(args, &cli.common),
        Command::Migrate(args) => migrate::run(args, &cli.common),
        Command::Status(args) => status::run(args, &cli.common),
        Command::Resume(args) => resume::run(args, &cli.common),
        Command::Pause(args) => pause::run(args, &cli.common),
        Command::Retry(args) => retry::run(args, &cli.common),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("upgrade-guard: {e}");
            ExitCode::from(2)
        }
    }
}

/// 0 when everything was allowed, 1 when something was refused.
fn verdict_code(all_allowed: bool) -> ExitCode {
    if all_allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A runtime for the commands that talk to a cluster.
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start the runtime: {e}")))
}
