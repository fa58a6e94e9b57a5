//! `upgrade-guard review [FILE|-] [--mutate] [--objects FILE]`

use std::io::{Read, Write};
use std::process::ExitCode;

use super::{Common, Error, verdict_code};
use crate::decide::{ClusterView, NoCluster};
use crate::manifest;
use crate::webhook::{self, Endpoint};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The AdmissionReview (JSON); `-` for standard input.
    #[arg(default_value = "-")]
    pub file: String,
    /// Answer as the mutating webhook (/mutate) instead of /validate.
    #[arg(long)]
    pub mutate: bool,
    /// Live objects the server's cache would hold (YAML or JSON, several
    /// documents, `List`s unwrapped): the workload behind a scale request.
    #[arg(long)]
    pub objects: Option<String>,
    /// Decide as `serve --self-user` would: this user may write the
    /// refresh record. Overrides are honoured as written (offline, there is
    /// no RBAC to ask).
    #[arg(long)]
    pub self_user: Option<String>,
    /// Read every object whole into its type, never the quick way: the
    /// reference the server's quick reads are held to (the same answer,
    /// slower).
    #[arg(long)]
    pub full: bool,
}

pub fn run(args: &Args, common: &Common) -> Result<ExitCode, Error> {
    let policies = common.load_policies_noting()?;
    let snapshot = match &args.objects {
        Some(path) => Some(manifest::WorkloadSet::read(path)?.into_snapshot()),
        None => None,
    };
    let cluster: &dyn ClusterView = match &snapshot {
        Some(s) => s,
        None => &NoCluster,
    };
    let (source_name, body) = read_input(&args.file)?;
    let endpoint = if args.mutate {
        Endpoint::Mutate
    } else {
        Endpoint::Validate
    };
    let caller = webhook::Caller {
        self_user: args.self_user.clone(),
        ..Default::default()
    };
    let read = if args.full {
        webhook::review_in_full
    } else {
        webhook::review
    };
    let reviewed = read(&body, endpoint, &policies, cluster, common.now(), &caller)
        .map_err(|error| Error::Review { source_name, error })?;
    std::io::stdout()
        .write_all(&reviewed.body)
        .map_err(|e| Error::failed("standard output", e))?;
    Ok(verdict_code(
        reviewed.verdict.allowed || endpoint == Endpoint::Mutate,
    ))
}

fn read_input(file: &str) -> Result<(String, Vec<u8>), Error> {
    let mut body = Vec::new();
    if file == "-" {
        std::io::stdin()
            .read_to_end(&mut body)
            .map_err(|e| Error::failed("standard input", e))?;
        return Ok(("standard input".into(), body));
    }
    body = std::fs::read(file).map_err(|e| Error::failed(file, e))?;
    Ok((file.to_string(), body))
}
