//! The command line: one file per command, each a thin shell around the
//! library. Exit codes: 0 allowed, 1 something refused, 2 bad input;
//! `status` adds its own (see [`status::EXIT_CODES`]).
//!
//! The same binary is a kubectl plugin when it is run as
//! `kubectl-upgrade_guard` (kubectl maps `kubectl upgrade-guard …` to that
//! file on PATH): usage then reads `kubectl upgrade-guard`.

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

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    /// Run as `kubectl upgrade-guard` (set from the program's name, not a flag).
    #[arg(skip)]
    pub plugin: bool,
}

impl Common {
    /// How the user runs this program, for the commands it suggests.
    pub fn program(&self) -> &'static str {
        if self.plugin {
            PLUGIN_COMMAND
        } else {
            "upgrade-guard"
        }
    }

    /// `text` with the commands it suggests as the user runs them.
    pub fn suggesting(&self, text: &str) -> String {
        suggesting(text, self.program())
    }

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

/// `text` with the commands it suggests (`` `upgrade-guard …` ``) as
/// `program` (`kubectl upgrade-guard` as the plugin, where no
/// `upgrade-guard` is on PATH).
pub fn suggesting(text: &str, program: &str) -> String {
    match program {
        "upgrade-guard" => text.to_string(),
        program => text.replace("`upgrade-guard ", &format!("`{program} ")),
    }
}

/// What kubectl runs for `kubectl upgrade-guard`: `-` in a plugin's command
/// is `_` in its file name.
pub const PLUGIN_FILE: &str = "kubectl-upgrade_guard";
/// The command line that runs the plugin.
pub const PLUGIN_COMMAND: &str = "kubectl upgrade-guard";

/// Whether the program was run under the plugin's file name (`argv[0]`,
/// a path as kubectl passes it; `.exe` on Windows).
pub fn is_plugin(argv0: &std::ffi::OsStr) -> bool {
    let name = std::path::Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let name = name.strip_suffix(".exe").unwrap_or(name);
    name == PLUGIN_FILE || name == "kubectl-upgrade-guard"
}

impl Cli {
    /// The command line of this process; as the kubectl plugin, help and
    /// usage name `kubectl upgrade-guard`.
    pub fn from_env() -> Cli {
        Cli::from_args(std::env::args_os().collect())
    }

    /// [`Self::from_env`] for these arguments (the first is the program);
    /// `--help`, `--version` and bad usage print and exit, as clap does.
    pub fn from_args(args: Vec<std::ffi::OsString>) -> Cli {
        let plugin = args.first().is_some_and(|a| is_plugin(a));
        let mut command = Cli::command();
        if plugin {
            command = command.bin_name(PLUGIN_COMMAND);
        }
        let matches = command.get_matches_from(args);
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        cli.common.plugin = plugin;
        cli
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
    Check(Targeted<check::Args>),
    /// A CA and serving certificate for the webhook Service, and the caBundle.
    Certs(certs::Args),
    /// Deployment manifests to StatefulSet manifests that keep the volumes.
    Convert(convert::Args),
    /// Migrate a live Deployment to a StatefulSet that keeps its volumes.
    Migrate(Targeted<migrate::Args>),
    /// Live refresh status per unit, and the next action (`--watch`: follow
    /// one refresh until it is over).
    #[command(after_help = status::EXIT_CODES)]
    Status(status::Args),
    /// Let a paused refresh go on (`--force`: past a failed unit).
    Resume(Targeted<resume::Args>),
    /// Hold a refresh after the unit in progress.
    Pause(Targeted<pause::Args>),
    /// Run a failed refresh hook again (delete its Job; the controller makes it anew).
    Retry(Targeted<retry::Args>),
}

/// A command's own arguments, and `-n/--namespace` for the workload it
/// names (`-n shop db` is `shop/db`), resolved before the command runs.
#[derive(Debug, clap::Args)]
pub struct Targeted<A: clap::Args> {
    #[command(flatten)]
    pub args: A,
    #[command(flatten)]
    pub namespace: cluster::NamespaceArgs,
}

impl<A: clap::Args> Targeted<A> {
    /// The command's arguments with the target made NAMESPACE/NAME.
    /// `target` picks the target out; none (`check` without `--live`)
    /// leaves `-n` nothing to qualify, which is said.
    fn qualified(mut self, target: impl FnOnce(&mut A) -> Option<&mut String>) -> Result<A, Error> {
        match (target(&mut self.args), &self.namespace.namespace) {
            (Some(t), _) => *t = self.namespace.qualify(t)?,
            (None, Some(_)) => {
                return Err(Error::Other(
                    "-n/--namespace names the namespace of a live workload: give it with --live NAME".into(),
                ));
            }
            (None, None) => {}
        }
        Ok(self.args)
    }
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
    /// A step that failed: `context` says which (may be empty), `source` why.
    #[error("{}{source}", if context.is_empty() { String::new() } else { format!("{context}: ") })]
    Failed {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A step that failed, told in a sentence of its own that already says
    /// why; `source` is what failed underneath.
    #[error("{message}")]
    Told {
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A command that cannot go on, known by its message alone (bad
    /// arguments, a conflict, nothing confirmed).
    #[error("{0}")]
    Other(String),
    /// No such workload, or no refresh recorded on it.
    #[error("{0}")]
    NotFound(String),
}

impl Error {
    /// [`Error::Failed`]: `context` (empty for none), then `source`.
    pub(crate) fn failed(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::Failed {
            context: context.into(),
            source: source.into(),
        }
    }
}

pub fn run(cli: Cli) -> ExitCode {
    let Cli { common, command } = cli;
    let common = &common;
    let result = match command {
        Command::Review(args) => review::run(&args, common),
        Command::Check(args) => args
            .qualified(|a| a.live.as_mut())
            .and_then(|args| check::run(&args, common)),
        Command::Serve(args) => serve::run(&args, common),
        Command::Certs(args) => certs::run(&args, common),
        Command::Convert(args) => convert::run(&args, common),
        Command::Migrate(args) => args
            .qualified(|a| Some(&mut a.target))
            .and_then(|args| migrate::run(&args, common)),
        Command::Status(args) => status::run(&args, common),
        Command::Resume(args) => args
            .qualified(|a| Some(&mut a.target))
            .and_then(|args| resume::run(&args, common)),
        Command::Pause(args) => args
            .qualified(|a| Some(&mut a.target))
            .and_then(|args| pause::run(&args, common)),
        Command::Retry(args) => args
            .qualified(|a| Some(&mut a.target))
            .and_then(|args| retry::run(&args, common)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("upgrade-guard: {}", common.suggesting(&e.to_string()));
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
        .map_err(|e| Error::failed("cannot start the runtime", e))
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn failed_says_its_context_and_keeps_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let message = io.to_string();
        let e = Error::failed("kubeconfig /x", io);
        assert_eq!(e.to_string(), format!("kubeconfig /x: {message}"));
        let source = std::error::Error::source(&e).expect("a source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the io error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(io.to_string(), message);
        assert_eq!(
            Error::failed("", std::io::Error::other("bare")).to_string(),
            "bare"
        );
    }
}
