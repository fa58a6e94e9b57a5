//! `upgrade-guard convert FILE|DIR|- [--pv CLAIM=PV]`: Deployment manifests
//! to StatefulSet manifests that keep the volumes. The manifests to commit
//! go to stdout; the ordered steps, notes and problems to stderr.

use std::collections::HashMap;
use std::process::ExitCode;

use super::{Common, Error, verdict_code};
use crate::{convert, manifest};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The manifests: a file, a directory, or `-`.
    pub input: String,
    /// The PersistentVolume that holds a claim's data, as CLAIM=PV (repeat
    /// for each claim); the new claim binds to it by volumeName.
    #[arg(long = "pv", value_parser = claim_pv)]
    pub pvs: Vec<(String, String)>,
}

fn claim_pv(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((claim, pv)) if !claim.is_empty() && !pv.is_empty() => Ok((claim.into(), pv.into())),
        _ => Err(format!("{text:?}: expected CLAIM=PV")),
    }
}

pub fn run(args: &Args, _common: &Common) -> Result<ExitCode, Error> {
    let manifests = manifest::read(&args.input)?;
    let pvs: HashMap<String, String> = args.pvs.iter().cloned().collect();
    let conversion = convert::convert(&manifests, &pvs).map_err(|e| Error::failed("", e))?;
    let mut out = String::new();
    for object in &conversion.objects {
        let yaml =
            serde_yaml_ng::to_string(object).map_err(|e| Error::failed("cannot write YAML", e))?;
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    print!("{out}");
    for note in &conversion.notes {
        eprintln!("note: {note}");
    }
    for problem in &conversion.problems {
        eprintln!("problem: {problem}");
    }
    if !conversion.steps.is_empty() {
        eprintln!("steps, in order, to move the data on the cluster:");
        for step in &conversion.steps {
            eprintln!("  {step}");
        }
    }
    Ok(verdict_code(conversion.problems.is_empty()))
}
