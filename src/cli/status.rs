//! `upgrade-guard status [NS/NAME | -n NS [NAME]] [--output json]`: per
//! refresh, the units and the one next action with the command to run.
//!
//! `--watch` follows one refresh, as `kubectl rollout status` follows a
//! rollout: kube watchers of the workload (by `metadata.name`) and of its
//! pods (and hook Jobs, when its policy has hooks) feed the same report
//! `status` prints, shown again only when its text changes, until the
//! refresh is over; [`Report::over`] decides that, and the exit code says
//! how ([`EXIT_CODES`]).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::cluster::{self, Cluster, ClusterArgs, NamespaceArgs};
use super::{Common, Error, check::Output};
use crate::policy::PolicySet;
use crate::refresh::status::{self, Over, Report};
use crate::workload::Workload;

/// The exit codes, as `status --help` prints them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  shown; with --watch: the refresh completed
  2  bad input, or the API server could not be asked
  3  with --watch: the refresh failed (held as Failed), or the controller
     rolled it back itself (onFailure: rollback)
  4  no such workload, or no (readable) refresh record on it; with --watch
     also: it was deleted, or its record removed, while watched
  5  with --watch: --timeout passed before the refresh was over";

/// The refresh failed, or was rolled back automatically.
pub const EXIT_FAILED: u8 = 3;
/// No such workload, or no refresh record to show or follow.
pub const EXIT_NOT_FOUND: u8 = 4;
/// `--timeout` passed first.
pub const EXIT_TIMED_OUT: u8 = 5;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One workload as NAMESPACE/NAME, or NAME with -n; default: every one
    /// with a refresh record (in -n's namespace, when given).
    pub target: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
    /// Follow one refresh, showing its items and progress again as they
    /// change, until it completes or fails. Without a target: the one
    /// workload with a refresh record (or the one whose refresh is running).
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// With --watch: give up after this long (`90s`, `10m`, `1h`);
    /// default: wait as long as it takes (a paused refresh waits for
    /// `resume`).
    #[arg(long, requires = "watch", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    #[command(flatten)]
    pub namespace: NamespaceArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let span: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 90s, 10m or 1h: {e}"))?;
    Duration::try_from(span)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?}: give a duration above zero"))
}

pub fn run(args: &Args, common: &Common) -> Result<ExitCode, Error> {
    let target = args
        .target
        .as_deref()
        .map(|t| args.namespace.qualify(t))
        .transpose()?;
    let shown = if args.watch {
        follow(args, target.as_deref(), common)
    } else {
        show(args, target.as_deref(), common)
    };
    match shown {
        Err(Error::NotFound(message)) => {
            eprintln!("upgrade-guard: {message}");
            Ok(ExitCode::from(EXIT_NOT_FOUND))
        }
        other => other,
    }
}

fn show(args: &Args, target: Option<&str>, common: &Common) -> Result<ExitCode, Error> {
    let runtime = super::runtime()?;
    let (mut reports, notes) = runtime.block_on(async {
        let cluster = cluster::connect(&args.cluster).await?;
        let (policies, notes) = cluster::policies(&cluster, common.policies.as_deref()).await?;
        let namespace = args.namespace.namespace.as_deref();
        let reports = gather_in(&cluster, target, namespace, &policies, common.now()).await?;
        Ok::<_, Error>((reports, notes))
    })?;
    for note in notes {
        eprintln!("upgrade-guard: {note}");
    }
    for report in &mut reports {
        run_by(report, common.program());
    }
    print!("{}", render(args.output, &reports));
    Ok(ExitCode::SUCCESS)
}

fn render(output: Output, reports: &[Report]) -> String {
    match output {
        Output::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(reports).unwrap_or_default()
        ),
        Output::Table => status::text(reports),
    }
}

/// The suggested commands as the user runs this program (`kubectl
/// upgrade-guard …` as the plugin, where no `upgrade-guard` is on PATH).
pub fn run_by(report: &mut Report, program: &str) {
    const OURS: &str = "upgrade-guard ";
    if program == OURS.trim_end() {
        return;
    }
    if let Some(rest) = report
        .next
        .command
        .as_deref()
        .and_then(|c| c.strip_prefix(OURS))
    {
        report.next.command = Some(format!("{program} {rest}"));
    }
    report.next.text = super::suggesting(&report.next.text, program);
}

/// The reports for `target`, or for every workload with a refresh record,
/// governed by a policy that can be found or not.
pub async fn gather(
    cluster: &Cluster,
    target: Option<&str>,
    policies: &PolicySet,
    now: jiff::Timestamp,
) -> Result<Vec<Report>, Error> {
    gather_in(cluster, target, None, policies, now).await
}

/// [`gather`], without a target looking in `namespace` only when given.
pub async fn gather_in(
    cluster: &Cluster,
    target: Option<&str>,
    namespace: Option<&str>,
    policies: &PolicySet,
    now: jiff::Timestamp,
) -> Result<Vec<Report>, Error> {
    let workloads = match target {
        Some(t) => {
            let (ns, name) = cluster::target(t)?;
            vec![cluster::find(cluster, &ns, &name).await?]
        }
        None => cluster::with_records(cluster, namespace).await?,
    };
    let mut reports = Vec::new();
    for w in workloads {
        let refused = cluster::refused_pod(cluster, &w).await;
        if w.refresh_record().is_none() {
            return Err(no_record(&w, refused.as_deref()));
        }
        let pods = cluster::pods(cluster, &w).await?;
        let policy = policies.select(&w);
        let jobs = match policy {
            Some(p) if p.hooks.any() => cluster::jobs(cluster, &w).await?,
            _ => Vec::new(),
        };
        reports.extend(
            status::report(&w, &pods, &jobs, policy, now).map(|r| status::Report {
                pod_refused: refused.clone(),
                ..r
            }),
        );
    }
    Ok(reports)
}

/// No refresh to show; but a pod upgrade-guard refused is worth saying.
fn no_record(w: &Workload, refused: Option<&str>) -> Error {
    let id = format!("{} {}/{}", w.kind(), w.namespace(), w.name());
    Error::NotFound(match refused {
        Some(why) => format!("{id}: no refresh recorded; its pods are refused: {why}"),
        None => format!("{id}: no refresh recorded"),
    })
}

fn follow(args: &Args, target: Option<&str>, common: &Common) -> Result<ExitCode, Error> {
    let runtime = super::runtime()?;
    let mut screen = Screen::new(std::io::stdout(), args.output);
    let watched = runtime.block_on(async {
        let cluster = cluster::connect(&args.cluster).await?;
        let (policies, notes) = cluster::policies(&cluster, common.policies.as_deref()).await?;
        for note in notes {
            eprintln!("upgrade-guard: {note}");
        }
        let target = match target {
            Some(t) => t.to_string(),
            None => one_to_watch(&cluster, args.namespace.namespace.as_deref()).await?,
        };
        let settings = WatchSettings {
            now: common.now,
            timeout: args.timeout,
            output: args.output,
            program: common.program(),
        };
        watch(&cluster, &target, &policies, &settings, &mut |text| {
            screen.show(text)
        })
        .await
    })?;
    match watched.ended {
        Ended::Over(Over::Completed) => println!("{}", watched.said),
        _ => eprintln!("upgrade-guard: {}", watched.said),
    }
    Ok(ExitCode::from(watched.ended.exit_code()))
}

/// The one workload `--watch` follows when none is named: the one with a
/// refresh record, or else the one whose refresh is not yet completed
/// (records stay after a refresh, so most workloads come to carry one).
pub async fn one_to_watch(cluster: &Cluster, namespace: Option<&str>) -> Result<String, Error> {
    let found = cluster::with_records(cluster, namespace).await?;
    let all: Vec<&Workload> = found.iter().collect();
    let id = |w: &&Workload| format!("{}/{}", w.namespace(), w.name());
    let active: Vec<&Workload> = all
        .iter()
        .copied()
        .filter(|w| {
            w.refresh_record()
                .and_then(Result::ok)
                .is_some_and(|r| r.is_active())
        })
        .collect();
    match (all.as_slice(), active.as_slice()) {
        ([], _) => Err(Error::NotFound(format!(
            "no StatefulSet or Deployment carries a refresh record{}: nothing to watch",
            namespace
                .map(|ns| format!(" in namespace {ns}"))
                .unwrap_or_default()
        ))),
        ([one], _) | (_, [one]) => Ok(id(one)),
        (_, _) => {
            let names: Vec<String> = all.iter().map(id).collect();
            Err(Error::Other(format!(
                "--watch follows one refresh, and {} workloads carry a refresh record ({}){}: name one (NAMESPACE/NAME, or NAME with -n)",
                all.len(),
                names.join(", "),
                if active.is_empty() {
                    String::new()
                } else {
                    format!(", {} of them with a refresh running", active.len())
                }
            )))
        }
    }
}

/// How `--watch` renders and judges reports.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Fixed time for the reports (`--now`); default: the clock at each change.
    pub now: Option<jiff::Timestamp>,
    pub timeout: Option<Duration>,
    pub output: Output,
    /// How the user runs this program, for the commands suggested.
    pub program: &'static str,
}

/// How a watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The refresh is over, in the way [`Report::over`] says.
    Over(Over),
    /// The workload was deleted, or its refresh record removed.
    Gone,
    /// `--timeout` passed first.
    TimedOut,
}

impl Ended {
    pub fn exit_code(self) -> u8 {
        match self {
            Ended::Over(Over::Completed) => 0,
            Ended::Over(Over::Failed | Over::RolledBack) => EXIT_FAILED,
            Ended::Over(Over::Unreadable) | Ended::Gone => EXIT_NOT_FOUND,
            Ended::TimedOut => EXIT_TIMED_OUT,
        }
    }
}

/// How a watch ended, and one sentence saying so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub ended: Ended,
    pub said: String,
}

type Events<K> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// Follows the refresh of `target` (NAMESPACE/NAME): each report whose
/// rendered text differs from the last one shown goes to `show`, until the
/// refresh is over, the workload or its record is gone, or the timeout.
pub async fn watch(
    cluster: &Cluster,
    target: &str,
    policies: &PolicySet,
    settings: &WatchSettings,
    show: &mut dyn FnMut(&str),
) -> Result<Watched, Error> {
    let (ns, name) = cluster::target(target)?;
    let found = cluster::find(cluster, &ns, &name).await?;
    if found.refresh_record().is_none() {
        let refused = cluster::refused_pod(cluster, &found).await;
        return Err(no_record(&found, refused.as_deref()));
    }
    let what = format!("{} {ns}/{name}", found.kind());
    let by_name = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let client = cluster.client.clone();
    let mut workloads: Events<Workload> = match &found {
        Workload::StatefulSet(_) => {
            events(Api::<StatefulSet>::namespaced(client.clone(), &ns), by_name)
                .map(|e| e.map(|e| lift(e, |s| Workload::StatefulSet(Box::new(s)))))
                .boxed()
        }
        Workload::Deployment(_) => {
            events(Api::<Deployment>::namespaced(client.clone(), &ns), by_name)
                .map(|e| e.map(|e| lift(e, |d| Workload::Deployment(Box::new(d)))))
                .boxed()
        }
    };
    let labelled = |selector: String| {
        let config = watcher::Config::default();
        if selector.is_empty() {
            config
        } else {
            config.labels(&selector)
        }
    };
    let mut pods = events(
        Api::<Pod>::namespaced(client.clone(), &ns),
        labelled(cluster::pod_selector(&found)),
    );
    // Hook Jobs move hook items; without hooks none are read, as `status`.
    let hooks = policies.select(&found).is_some_and(|p| p.hooks.any());
    let mut jobs: Events<Job> = if hooks {
        events(
            Api::<Job>::namespaced(client, &ns),
            labelled(cluster::job_selector(&found)),
        )
    } else {
        futures::stream::pending().boxed()
    };
    let mut seen_workload = Seen::new(|w: &Workload| w.name().to_string());
    let mut seen_pods = Seen::new(name_of::<Pod>);
    let mut seen_jobs = Seen::new(name_of::<Job>);
    seen_jobs.listed = !hooks;
    let mut expiry = std::pin::pin!(async {
        match settings.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    });
    let mut shown: Option<String> = None;
    let mut last: Option<Report> = None;
    loop {
        // Biased: one order of polling, so the requests go out in one order.
        tokio::select! {
            biased;
            event = workloads.next() => seen_workload.apply(stepped(event, cluster, &what)?),
            event = pods.next() => seen_pods.apply(stepped(event, cluster, &format!("pods of {ns}/{name}"))?),
            event = jobs.next() => seen_jobs.apply(stepped(event, cluster, &format!("hook Jobs of {ns}/{name}"))?),
            () = &mut expiry => {
                let state = last.as_ref().map_or("not yet seen", |r| r.state.as_str());
                let after = jiff::SignedDuration::try_from(settings.timeout.unwrap_or_default())
                    .map(|d| format!("{d:#}"))
                    .unwrap_or_default();
                return Ok(Watched {
                    ended: Ended::TimedOut,
                    said: format!("{what}: the refresh is still {state} after {after} (--timeout)"),
                });
            }
        }
        if !(seen_workload.listed && seen_pods.listed && seen_jobs.listed) {
            continue;
        }
        let Some(w) = seen_workload.objects.values().next() else {
            return Ok(Watched {
                ended: Ended::Gone,
                said: format!("{what} was deleted while watched"),
            });
        };
        let pods: Vec<Pod> = seen_pods.objects.values().cloned().collect();
        let jobs: Vec<Job> = seen_jobs.objects.values().cloned().collect();
        let now = settings.now.unwrap_or_else(jiff::Timestamp::now);
        let Some(mut report) = status::report(w, &pods, &jobs, policies.select(w), now) else {
            return Ok(Watched {
                ended: Ended::Gone,
                said: format!("{what}: its refresh record was removed while watched"),
            });
        };
        run_by(&mut report, settings.program);
        let text = match settings.output {
            // One JSON document a line, for programs reading along.
            Output::Json => format!("{}\n", serde_json::to_string(&report).unwrap_or_default()),
            Output::Table => status::text(std::slice::from_ref(&report)),
        };
        if shown.as_deref() != Some(text.as_str()) {
            show(&text);
            shown = Some(text);
        }
        if let Some(over) = report.over() {
            return Ok(Watched {
                ended: Ended::Over(over),
                said: report.ending(over),
            });
        }
        last = Some(report);
    }
}

fn events<K>(api: Api<K>, config: watcher::Config) -> Events<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, config).default_backoff().boxed()
}

fn lift<K>(event: watcher::Event<K>, into: impl Fn(K) -> Workload) -> watcher::Event<Workload> {
    match event {
        watcher::Event::Apply(k) => watcher::Event::Apply(into(k)),
        watcher::Event::Delete(k) => watcher::Event::Delete(into(k)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(k) => watcher::Event::InitApply(into(k)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

fn name_of<K: kube::Resource>(k: &K) -> String {
    k.meta().name.clone().unwrap_or_default()
}

/// A watcher's next event. Refusals (401, 403, 404) stop the watch with
/// one sentence; anything else (a dropped connection, a stale
/// resourceVersion) is said and retried after kube's backoff.
fn stepped<K>(
    event: Option<Result<watcher::Event<K>, watcher::Error>>,
    cluster: &Cluster,
    what: &str,
) -> Result<Option<watcher::Event<K>>, Error> {
    let refused = |code: u16| matches!(code, 401 | 403 | 404);
    match event {
        Some(Ok(event)) => Ok(Some(event)),
        Some(Err(
            watcher::Error::InitialListFailed(e)
            | watcher::Error::WatchStartFailed(e)
            | watcher::Error::WatchFailed(e),
        )) if matches!(&e, kube::Error::Api(s) if refused(s.code)) => Err(cluster.error(what, e)),
        Some(Err(watcher::Error::WatchError(s))) if refused(s.code) => {
            Err(cluster.error(what, kube::Error::Api(s)))
        }
        Some(Err(e)) => {
            eprintln!("upgrade-guard: watching {what}: {e}; trying again");
            Ok(None)
        }
        None => Err(Error::Other(format!("watching {what}: the watch ended"))),
    }
}

/// The objects one watcher has shown, as kube's reflector keeps them: a
/// relist (`Init` … `InitDone`) replaces them whole.
struct Seen<K> {
    key: fn(&K) -> String,
    objects: BTreeMap<String, K>,
    relist: Option<BTreeMap<String, K>>,
    /// Listed once: only then is the picture whole.
    listed: bool,
}

impl<K> Seen<K> {
    fn new(key: fn(&K) -> String) -> Self {
        Seen {
            key,
            objects: BTreeMap::new(),
            relist: None,
            listed: false,
        }
    }

    fn apply(&mut self, event: Option<watcher::Event<K>>) {
        match event {
            None => {}
            Some(watcher::Event::Init) => self.relist = Some(BTreeMap::new()),
            Some(watcher::Event::InitApply(k)) => {
                let into = self.relist.as_mut().unwrap_or(&mut self.objects);
                into.insert((self.key)(&k), k);
            }
            Some(watcher::Event::InitDone) => {
                if let Some(listed) = self.relist.take() {
                    self.objects = listed;
                }
                self.listed = true;
            }
            Some(watcher::Event::Apply(k)) => {
                self.objects.insert((self.key)(&k), k);
            }
            Some(watcher::Event::Delete(k)) => {
                self.objects.remove(&(self.key)(&k));
            }
        }
    }
}

/// Where `--watch` shows reports: on a terminal, each in place of the
/// last; elsewhere (a pipe, a CI log) each new one once, plainly.
pub struct Screen<W: Write> {
    out: W,
    /// Rows the last report took on the terminal; `None`: not a terminal.
    drawn: Option<usize>,
    width: usize,
}

impl<W: Write + IsTerminal> Screen<W> {
    fn new(out: W, output: Output) -> Self {
        // JSON is for programs: one document a change, never redrawn.
        let terminal = out.is_terminal() && matches!(output, Output::Table);
        Screen {
            width: terminal_width().unwrap_or(usize::MAX),
            drawn: terminal.then_some(0),
            out,
        }
    }
}

impl<W: Write> Screen<W> {
    fn show(&mut self, text: &str) {
        let written = match self.drawn {
            Some(rows) => {
                self.drawn = Some(rows_of(text, self.width));
                write!(self.out, "{}", redraw(rows, text))
            }
            None => write!(self.out, "{text}"),
        };
        // A closed stdout (the reader went away) ends nothing here; the
        // exit code still tells.
        let _ = written.and_then(|()| self.out.flush());
    }
}

/// What a terminal is sent to put `text` in place of the `rows` rows drawn
/// last: up to the first of them, clear to the end of the screen, draw.
pub fn redraw(rows: usize, text: &str) -> String {
    if rows == 0 {
        text.to_string()
    } else {
        format!("\x1b[{rows}F\x1b[J{text}")
    }
}

/// The rows `text` (ending in a newline) takes on a terminal `width`
/// columns wide, long lines wrapping.
pub fn rows_of(text: &str, width: usize) -> usize {
    text.lines()
        .map(|line| line.chars().count().div_ceil(width.max(1)).max(1))
        .sum()
}

/// The width of the terminal on stdout.
fn terminal_width() -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize it is given and nothing else.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(usize::from(size.ws_col))
}
