//! `upgrade-guard certs --service NAME --namespace NS --out DIR [--patch-manifests]`
//! writes files; `upgrade-guard certs --secret NAME [--webhooks NAME]...`
//! installs in the cluster (the Helm chart's hook Job): keeps the Secret
//! when it does, else writes a new pair, and sets the webhooks' caBundle.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine;

use super::cluster::{self, Cluster, ClusterArgs};
use super::{Common, Error};
use crate::certs::{self, InCluster, InstallError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The webhook Service's name.
    #[arg(long, default_value = "upgrade-guard")]
    pub service: String,
    /// The webhook Service's namespace.
    #[arg(long, default_value = "upgrade-guard")]
    pub namespace: String,
    /// Where to write ca.crt, tls.crt and tls.key.
    #[arg(long, default_value = "certs", conflicts_with = "secret")]
    pub out: PathBuf,
    /// How long the certificates are valid.
    #[arg(long, default_value_t = 365)]
    pub days: i64,
    /// Also write the caBundle into the webhook configurations of this file.
    #[arg(
        long,
        num_args = 0..=1,
        default_missing_value = "manifests/webhooks.yaml",
        conflicts_with = "secret"
    )]
    pub patch_manifests: Option<PathBuf>,
    /// In the cluster instead of files: keep this kubernetes.io/tls Secret
    /// of --namespace when it serves the Service for more than 30 days
    /// more, else write a new pair into it.
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub secret: Option<String>,
    /// Set the caBundle of every webhook of the Validating- and
    /// MutatingWebhookConfiguration of this name to the Secret's CA
    /// (repeatable, or a comma list); one not there yet is skipped.
    #[arg(
        long,
        value_delimiter = ',',
        requires = "secret",
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    pub webhooks: Vec<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn run(args: &Args, common: &Common) -> Result<ExitCode, Error> {
    if let Some(secret) = &args.secret {
        return in_cluster(args, secret, common);
    }
    if args.cluster.kubeconfig.is_some() || args.cluster.context.is_some() {
        return Err(Error::Other(
            "--kubeconfig and --context apply only with --secret (in-cluster mode)".into(),
        ));
    }
    let names = certs::service_names(&args.service, &args.namespace);
    let bundle =
        certs::generate(&names, common.now(), args.days).map_err(|e| Error::failed("", e))?;
    std::fs::create_dir_all(&args.out).map_err(|e| io(&args.out, e))?;
    let files = [
        (args.out.join("ca.crt"), &bundle.ca_pem, 0o644),
        (args.out.join("tls.crt"), &bundle.cert_pem, 0o644),
        (args.out.join("tls.key"), &bundle.key_pem, 0o600),
    ];
    for (path, pem, mode) in &files {
        write(path, pem, *mode)?;
    }
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&bundle.ca_pem);
    if let Some(path) = &args.patch_manifests {
        let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
        let (patched, count) = set_ca_bundle(&text, &ca_bundle);
        if count == 0 {
            return Err(Error::Other(format!(
                "{}: no clientConfig to put the caBundle in",
                path.display()
            )));
        }
        std::fs::write(path, patched).map_err(|e| io(path, e))?;
        eprintln!(
            "wrote the caBundle into {} webhook(s) of {}",
            count,
            path.display()
        );
    }
    // Joined paths, so `--out certs/` does not print `certs//ca.crt`.
    let written: Vec<String> = files
        .iter()
        .map(|(p, ..)| p.display().to_string())
        .collect();
    eprintln!(
        "wrote {} for {}, valid until {} ({} days); the caBundle follows",
        written.join(", "),
        names.join(", "),
        certs::valid_until(common.now(), args.days),
        args.days
    );
    println!("{ca_bundle}");
    Ok(ExitCode::SUCCESS)
}

/// The in-cluster mode: the pod's service account (or --kubeconfig).
fn in_cluster(args: &Args, secret: &str, common: &Common) -> Result<ExitCode, Error> {
    // A pair made for 30 days or fewer would be judged due at once and
    // replaced at every run.
    if args.days <= certs::RENEW_WITHIN_DAYS {
        return Err(Error::Other(format!(
            "--days {} is too short with --secret: a certificate with {} days or fewer left is replaced, so give more than {}",
            args.days,
            certs::RENEW_WITHIN_DAYS,
            certs::RENEW_WITHIN_DAYS
        )));
    }
    let mut webhooks: Vec<String> = Vec::new();
    for name in &args.webhooks {
        if !webhooks.contains(name) {
            webhooks.push(name.clone());
        }
    }
    let target = InCluster {
        namespace: args.namespace.clone(),
        secret: secret.to_string(),
        names: certs::service_names(&args.service, &args.namespace),
        webhooks,
        now: common.now(),
    };
    // Made up front (milliseconds) so the I/O only writes what it is given.
    let fresh =
        certs::generate(&target.names, target.now, args.days).map_err(|e| Error::failed("", e))?;
    let said = super::runtime()?.block_on(async {
        let cluster = cluster::connect(&args.cluster).await?;
        certs::install(&cluster.client, &target, &fresh)
            .await
            .map_err(|e| install_error(&cluster, e))
    })?;
    for line in said {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// One sentence naming the object, as every live command says it.
fn install_error(cluster: &Cluster, e: InstallError) -> Error {
    match e {
        InstallError::Api { what, source } => cluster.error(&what, source),
        InstallError::Refused(why) => Error::Other(why),
    }
}

/// Puts `caBundle` under every `clientConfig:` line, replacing an old one,
/// and keeps the rest of the file (comments included) as it is.
pub fn set_ca_bundle(text: &str, ca_bundle: &str) -> (String, usize) {
    let mut out = Vec::new();
    let mut count = 0;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        out.push(line.to_string());
        if line.trim_end().trim_start() != "clientConfig:" {
            continue;
        }
        let indent = line.len() - line.trim_start().len() + 2;
        while lines.peek().is_some_and(|next| {
            next.trim_start().starts_with("caBundle:")
                && next.len() - next.trim_start().len() == indent
        }) {
            lines.next();
        }
        out.push(format!("{}caBundle: {ca_bundle}", " ".repeat(indent)));
        count += 1;
    }
    let mut patched = out.join("\n");
    if text.ends_with('\n') {
        patched.push('\n');
    }
    (patched, count)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io(path, e))?;
    file.write_all(text.as_bytes()).map_err(|e| io(path, e))
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::failed(path.display().to_string(), e)
}
