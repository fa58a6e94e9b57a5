//! `status --watch`: when a refresh is over and how (a pure question on the
//! report), and the watch loop against kube's tower-test mock, fed the
//! watch events a real API server sent (tests/data/recordings/
//! refresh-statefulset.jsonl): the exact list and watch requests, each
//! report shown once when its text changes, and the way the watch ends.

mod common;

use std::time::Duration;

use common::api_server::status as api_status;
use common::{of, recording, root};
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use upgrade_guard::cli::Error;
use upgrade_guard::cli::check::Output;
use upgrade_guard::cli::cluster::Cluster;
use upgrade_guard::cli::status::{
    self, Ended, WatchSettings, Watched, one_to_watch, redraw, rows_of,
};
use upgrade_guard::policy::PolicySet;
use upgrade_guard::refresh::status::{Over, Report, report};

// ---------------------------------------------------------------------------
// The recording

fn events() -> Vec<Value> {
    recording::events("refresh-statefulset.jsonl")
}

fn policies() -> PolicySet {
    PolicySet::load(&root().join("tests/data/recordings/sqlgw-policy.yaml")).unwrap()
}

/// The StatefulSet and its pods as the recorded watch showed them after
/// event `upto`.
type Recorded = recording::Watched;

impl Recorded {
    fn sts(&self) -> Value {
        self.sts.clone().unwrap()
    }

    fn rv(&self) -> String {
        self.sts()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The report `status` gives of this moment.
    fn report(&self) -> Option<Report> {
        let pods = self.typed_pods();
        let w = of(self.sts.clone()?);
        let policies = policies();
        report(&w, &pods, &[], policies.select(&w), common::now())
    }
}

/// The recorded StatefulSet after `upto`, with its refresh record edited.
fn with_record(upto: usize, edit: impl FnOnce(&mut Value)) -> Recorded {
    let mut r = Recorded::at(upto);
    let mut sts = r.sts();
    let annotations = &mut sts["metadata"]["annotations"];
    let mut record: Value =
        serde_json::from_str(annotations["upgradeguard.io/refresh"].as_str().unwrap()).unwrap();
    edit(&mut record);
    annotations["upgradeguard.io/refresh"] = json!(record.to_string());
    r.sts = Some(sts);
    r
}

fn record_state(r: &Recorded) -> String {
    let sts = r.sts();
    let text = sts["metadata"]["annotations"]["upgradeguard.io/refresh"]
        .as_str()
        .unwrap();
    serde_json::from_str::<Value>(text).unwrap()["state"]
        .as_str()
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------------------
// Is the refresh over, and how: pure, on the report

#[test]
fn a_refresh_that_moves_or_is_paused_is_not_over() {
    for (upto, state) in [(31, "RollingOut"), (22, "Paused"), (57, "RollingBack")] {
        let r = Recorded::at(upto);
        assert_eq!(record_state(&r), state, "event {upto}");
        let report = r.report().unwrap();
        assert_eq!(report.over(), None, "{state} is not over");
    }
}

#[test]
fn a_completed_refresh_is_over_and_completed() {
    let report = Recorded::at(40).report().unwrap();
    assert_eq!(report.state, "Completed");
    assert_eq!(report.over(), Some(Over::Completed));
    assert_eq!(
        report.ending(Over::Completed),
        "StatefulSet analytics/sqlgw: refresh 3.4.2 → 3.4.4 completed"
    );
}

#[test]
fn a_failed_refresh_is_over_and_failed_with_the_reason() {
    let report = Recorded::at(56).report().unwrap();
    assert_eq!(report.over(), Some(Over::Failed));
    let said = report.ending(Over::Failed);
    assert!(
        said.starts_with("StatefulSet analytics/sqlgw: refresh 3.4.4 → 3.4.5-broken failed: "),
        "{said}"
    );
    assert!(said.ends_with(&report.next.text), "{said}");
    // A rollback held as Failed has failed too.
    let rollback = Recorded::at(61).report().unwrap();
    assert!(rollback.rollback);
    assert_eq!(rollback.over(), Some(Over::Failed));
    assert!(
        rollback
            .ending(Over::Failed)
            .contains("rollback 3.4.5-broken → 3.4.4 failed"),
        "{}",
        rollback.ending(Over::Failed)
    );
}

#[test]
fn a_completed_automatic_rollback_means_the_refresh_did_not_happen() {
    let automatic = with_record(40, |r| {
        r["rollback"] = json!(true);
        r["automatic"] = json!(true);
        (r["from"], r["to"]) = (json!("3.4.4"), json!("3.4.2"));
    })
    .report()
    .unwrap();
    assert_eq!(automatic.over(), Some(Over::RolledBack));
    assert_eq!(
        automatic.ending(Over::RolledBack),
        "StatefulSet analytics/sqlgw: the refresh to 3.4.4 was rolled back automatically (onFailure: rollback); 3.4.2 runs again"
    );
    // One someone asked for (`kubectl rollout undo`) completed what was asked.
    let asked = with_record(40, |r| r["rollback"] = json!(true))
        .report()
        .unwrap();
    assert_eq!(asked.over(), Some(Over::Completed));
    // Still rolling back automatically: followed on.
    let rolling = with_record(40, |r| {
        r["rollback"] = json!(true);
        r["automatic"] = json!(true);
        r["state"] = json!("RollingBack");
    })
    .report()
    .unwrap();
    assert_eq!(rolling.over(), None);
}

#[test]
fn an_unreadable_record_is_over_as_unreadable() {
    let mut r = Recorded::at(31);
    let mut sts = r.sts();
    sts["metadata"]["annotations"]["upgradeguard.io/refresh"] = json!("{\"from\": 3");
    r.sts = Some(sts);
    let report = r.report().unwrap();
    assert_eq!(report.over(), Some(Over::Unreadable));
    assert!(
        report.ending(Over::Unreadable).starts_with(
            "StatefulSet analytics/sqlgw: the upgradeguard.io/refresh record cannot be read"
        ),
        "{}",
        report.ending(Over::Unreadable)
    );
}

#[test]
fn each_ending_has_its_exit_code() {
    let codes = [
        (Ended::Over(Over::Completed), 0),
        (Ended::Over(Over::Failed), status::EXIT_FAILED),
        (Ended::Over(Over::RolledBack), status::EXIT_FAILED),
        (Ended::Over(Over::Unreadable), status::EXIT_NOT_FOUND),
        (Ended::Gone, status::EXIT_NOT_FOUND),
        (Ended::TimedOut, status::EXIT_TIMED_OUT),
    ];
    for (ended, code) in codes {
        assert_eq!(ended.exit_code(), code, "{ended:?}");
    }
    assert_eq!(
        (
            status::EXIT_FAILED,
            status::EXIT_NOT_FOUND,
            status::EXIT_TIMED_OUT
        ),
        (3, 4, 5)
    );
    for code in ["  3  ", "  4  ", "  5  "] {
        assert!(status::EXIT_CODES.contains(code), "{code} is documented");
    }
}

// ---------------------------------------------------------------------------
// The terminal

#[test]
fn a_terminal_is_redrawn_in_place_over_the_rows_drawn_last() {
    assert_eq!(redraw(0, "a\nb\n"), "a\nb\n", "nothing drawn yet");
    assert_eq!(redraw(3, "a\n"), "\x1b[3F\x1b[Ja\n");
    assert_eq!(rows_of("ab\ncd\n", 80), 2);
    // A line longer than the terminal wraps onto more rows.
    assert_eq!(rows_of(&format!("{}\nx\n", "y".repeat(81)), 80), 3);
    assert_eq!(rows_of("\n", 80), 1, "an empty line is a row");
    assert_eq!(rows_of("→←\n", 2), 1, "characters, not bytes");
}

// ---------------------------------------------------------------------------
// The watch loop against the mock API server

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock() -> (Cluster, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (Cluster::new(client, "https://10.0.0.1:6443"), handle)
}

enum Reply {
    Json(u16, Value),
    /// A watch response: these events, one JSON a line, then the end.
    Events(Vec<Value>),
    /// A watch that stays open with nothing to say.
    Hold,
}

struct Expect {
    path: String,
    reply: Reply,
}

fn get(path: &str, reply: Reply) -> Expect {
    Expect {
        path: path.into(),
        reply,
    }
}

/// Plays the API server step by step: every request of a step must come
/// (in any order: the watchers run side by side), each a GET with exactly
/// one of the step's paths, before the step's replies go out; then no more
/// requests. Held watches stay open until the end.
async fn play(mut handle: Handle, steps: Vec<Vec<Expect>>) {
    let mut held = Vec::new();
    for (n, mut step) in steps.into_iter().enumerate() {
        let mut answers = Vec::new();
        while !step.is_empty() {
            let waiting: Vec<&str> = step.iter().map(|e| e.path.as_str()).collect();
            let (request, respond) =
                tokio::time::timeout(Duration::from_secs(5), handle.next_request())
                    .await
                    .unwrap_or_else(|_| panic!("step {n}: {waiting:?} never came"))
                    .expect("the client went away");
            let path = request.uri().path_and_query().unwrap().to_string();
            assert_eq!(request.method(), "GET", "{path}");
            let at = step.iter().position(|e| e.path == path).unwrap_or_else(|| {
                panic!("step {n}: unexpected {path}; expected one of {waiting:?}")
            });
            answers.push((step.remove(at).reply, respond));
        }
        for (reply, respond) in answers {
            let (code, body) = match reply {
                Reply::Json(code, v) => (code, serde_json::to_vec(&v).unwrap()),
                Reply::Events(events) => (
                    200,
                    events
                        .iter()
                        .map(|e| format!("{e}\n"))
                        .collect::<String>()
                        .into_bytes(),
                ),
                Reply::Hold => {
                    held.push(respond);
                    continue;
                }
            };
            respond.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(body))
                    .unwrap(),
            );
        }
    }
    let extra = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
    if let Ok(Some((request, _))) = extra {
        panic!("an unexpected extra request: {}", request.uri());
    }
    drop(held);
}

const STS: &str = "/apis/apps/v1/namespaces/analytics/statefulsets";
const PODS: &str = "/api/v1/namespaces/analytics/pods";
const BY_NAME: &str = "fieldSelector=metadata.name%3Dsqlgw";
const BY_LABEL: &str = "labelSelector=app.kubernetes.io%2Fname%3Dsqlgw";

fn sts_list() -> String {
    format!("{STS}?&{BY_NAME}&limit=500")
}

fn pods_list() -> String {
    format!("{PODS}?&{BY_LABEL}&limit=500")
}

fn sts_watch(rv: &str) -> String {
    format!(
        "{STS}?&watch=true&timeoutSeconds=290&{BY_NAME}&allowWatchBookmarks=true&resourceVersion={rv}"
    )
}

fn pods_watch(rv: &str) -> String {
    format!(
        "{PODS}?&watch=true&timeoutSeconds=290&{BY_LABEL}&allowWatchBookmarks=true&resourceVersion={rv}"
    )
}

fn list(kind: &str, rv: &str, items: Vec<Value>) -> Reply {
    Reply::Json(
        200,
        json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items}),
    )
}

/// The first requests of every watch: the workload by name, then the
/// lists of it and of its pods, as they were after event `upto`.
fn start(upto: usize) -> Vec<Vec<Expect>> {
    let r = Recorded::at(upto);
    let rv = r.rv();
    vec![
        vec![get(&format!("{STS}/sqlgw"), Reply::Json(200, r.sts()))],
        vec![
            get(&sts_list(), list("StatefulSetList", &rv, vec![r.sts()])),
            get(
                &pods_list(),
                list("PodList", &rv, r.pods.values().cloned().collect()),
            ),
        ],
    ]
}

/// The recorded events in `range` of one kind.
fn recorded(range: std::ops::RangeInclusive<usize>, kind: &str) -> Vec<Value> {
    events()[range]
        .iter()
        .filter(|e| e["object"]["kind"] == kind)
        .cloned()
        .collect()
}

fn rv_of(event: &Value) -> String {
    event["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

fn settings(output: Output, timeout: Option<Duration>) -> WatchSettings {
    WatchSettings {
        now: Some(common::now()),
        timeout,
        output,
        program: "upgrade-guard",
    }
}

async fn watched(
    steps: Vec<Vec<Expect>>,
    target: &str,
    settings: WatchSettings,
) -> (Result<Watched, Error>, Vec<String>) {
    let (cluster, handle) = mock();
    let server = tokio::spawn(play(handle, steps));
    let mut shown = Vec::new();
    let result = status::watch(&cluster, target, &policies(), &settings, &mut |t| {
        shown.push(t.to_string())
    })
    .await;
    server.await.unwrap();
    (result, shown)
}

/// What the watch should show: the report after each event, in the order
/// the watch takes them, each text only when it differs from the last.
fn expected(start: usize, order: &[Value]) -> Vec<String> {
    let mut r = Recorded::at(start);
    let mut texts = vec![upgrade_guard::refresh::status::text(&[r.report().unwrap()])];
    for event in order {
        r.apply(event);
        let text = upgrade_guard::refresh::status::text(&[r.report().unwrap()]);
        if texts.last() != Some(&text) {
            texts.push(text);
        }
    }
    texts
}

#[tokio::test]
async fn a_rolling_refresh_is_followed_through_its_pods_until_it_completes() {
    // From unit 1 refreshing to the end: the StatefulSet's events and the
    // pods' come on their own watches; each watch, when it ends, is taken
    // up again from the last resourceVersion it saw.
    let sts_first = recorded(32..=35, "StatefulSet");
    let pods_first = recorded(32..=38, "Pod");
    let sts_then = recorded(36..=40, "StatefulSet");
    let mut steps = start(31);
    steps.push(vec![
        get(&sts_watch("382"), Reply::Events(sts_first.clone())),
        get(&pods_watch("382"), Reply::Events(pods_first.clone())),
    ]);
    let (sts_rv, pods_rv) = (
        rv_of(sts_first.last().unwrap()),
        rv_of(pods_first.last().unwrap()),
    );
    assert_eq!((sts_rv.as_str(), pods_rv.as_str()), ("388", "393"));
    steps.push(vec![
        get(&sts_watch(&sts_rv), Reply::Events(sts_then.clone())),
        get(&pods_watch(&pods_rv), Reply::Hold),
    ]);
    let (result, shown) = watched(steps, "analytics/sqlgw", settings(Output::Table, None)).await;
    let watched = result.unwrap();
    assert_eq!(watched.ended, Ended::Over(Over::Completed));
    assert_eq!(watched.ended.exit_code(), 0);
    assert_eq!(
        watched.said,
        "StatefulSet analytics/sqlgw: refresh 3.4.2 → 3.4.4 completed"
    );
    // The workload's events first, then the pods', as the watch polls them.
    let order: Vec<Value> = [sts_first, pods_first, sts_then].concat();
    assert_eq!(shown, expected(31, &order));
    assert!(
        shown[0].contains("RollingOut  pause-after first  partition 1  66% refreshed"),
        "{}",
        shown[0]
    );
    assert!(shown.last().unwrap().contains("Completed"), "{shown:?}");
    // The pods changed the report: unit 0 gone, then back on the new revision.
    assert!(
        shown
            .iter()
            .any(|t| t
                .contains("  0     sqlgw-0                   -           -                   no ")),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|t| t
                .contains("  0     sqlgw-0                   3.4.4       sqlgw-746999b954    yes")),
        "{shown:#?}"
    );
    // Events that change nothing shown are not shown again.
    assert!(
        shown.len() < order.len() + 1,
        "{} shown for {} events",
        shown.len(),
        order.len()
    );
    for pair in shown.windows(2) {
        assert_ne!(pair[0], pair[1]);
    }
}

#[tokio::test]
async fn a_refresh_that_fails_ends_the_watch_with_the_failure_code() {
    let sts = recorded(54..=56, "StatefulSet");
    let pods = recorded(54..=56, "Pod");
    let mut steps = start(53);
    steps.push(vec![
        get(&sts_watch("413"), Reply::Events(sts.clone())),
        get(&pods_watch("413"), Reply::Events(pods)),
    ]);
    let (result, shown) = watched(steps, "analytics/sqlgw", settings(Output::Table, None)).await;
    let watched = result.unwrap();
    assert_eq!(watched.ended, Ended::Over(Over::Failed));
    assert_eq!(watched.ended.exit_code(), 3);
    assert!(
        watched
            .said
            .starts_with("StatefulSet analytics/sqlgw: refresh 3.4.4 → 3.4.5-broken failed: "),
        "{}",
        watched.said
    );
    assert!(shown[0].contains("RollingOut"), "{}", shown[0]);
    let last = shown.last().unwrap();
    assert!(
        last.contains("  Failed  ") && last.contains("  run:  upgrade-guard "),
        "{last}"
    );
}

#[tokio::test]
async fn a_completed_refresh_ends_the_watch_at_once() {
    let (result, shown) =
        watched(start(41), "analytics/sqlgw", settings(Output::Table, None)).await;
    assert_eq!(result.unwrap().ended, Ended::Over(Over::Completed));
    assert_eq!(shown.len(), 1);
}

#[tokio::test]
async fn json_output_is_one_report_a_line() {
    let (result, shown) = watched(start(41), "analytics/sqlgw", settings(Output::Json, None)).await;
    assert_eq!(result.unwrap().ended, Ended::Over(Over::Completed));
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].matches('\n').count(), 1, "{}", shown[0]);
    let v: Value = serde_json::from_str(&shown[0]).unwrap();
    assert_eq!(
        (v["name"].as_str(), v["state"].as_str()),
        (Some("sqlgw"), Some("Completed"))
    );
}

#[tokio::test]
async fn a_workload_deleted_while_watched_ends_it_as_gone() {
    let mut deleted = Recorded::at(31).sts();
    deleted["metadata"]["resourceVersion"] = json!("500");
    let mut steps = start(31);
    steps.push(vec![
        get(
            &sts_watch("382"),
            Reply::Events(vec![json!({"type": "DELETED", "object": deleted})]),
        ),
        get(&pods_watch("382"), Reply::Hold),
    ]);
    let (result, _) = watched(steps, "analytics/sqlgw", settings(Output::Table, None)).await;
    let watched = result.unwrap();
    assert_eq!(watched.ended, Ended::Gone);
    assert_eq!(watched.ended.exit_code(), 4);
    assert_eq!(
        watched.said,
        "StatefulSet analytics/sqlgw was deleted while watched"
    );
}

#[tokio::test]
async fn the_timeout_ends_a_paused_refresh_with_its_own_code() {
    let mut steps = start(22);
    steps.push(vec![
        get(&sts_watch("367"), Reply::Hold),
        get(&pods_watch("367"), Reply::Hold),
    ]);
    let (result, shown) = watched(
        steps,
        "analytics/sqlgw",
        settings(Output::Table, Some(Duration::from_millis(300))),
    )
    .await;
    let watched = result.unwrap();
    assert_eq!(watched.ended, Ended::TimedOut);
    assert_eq!(watched.ended.exit_code(), 5);
    assert_eq!(
        watched.said,
        "StatefulSet analytics/sqlgw: the refresh is still Paused after 300ms (--timeout)"
    );
    assert_eq!(shown.len(), 1, "shown once, then nothing changed");
}

#[tokio::test]
async fn no_such_workload_is_not_found_and_nothing_is_watched() {
    let nf = || Reply::Json(404, api_status(404, "NotFound", "not found"));
    let steps = vec![
        vec![get(&format!("{STS}/sqlgw"), nf())],
        vec![get(
            "/apis/apps/v1/namespaces/analytics/deployments/sqlgw",
            nf(),
        )],
    ];
    let (result, shown) = watched(steps, "analytics/sqlgw", settings(Output::Table, None)).await;
    match result {
        Err(Error::NotFound(m)) => {
            assert_eq!(
                m,
                "analytics/sqlgw: no StatefulSet or Deployment of that name"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(shown.is_empty());
}

#[tokio::test]
async fn a_workload_without_a_record_is_not_found_and_nothing_is_watched() {
    let before = Recorded::at(11);
    let events = "/api/v1/namespaces/analytics/events?&fieldSelector=involvedObject.kind%3DStatefulSet%2CinvolvedObject.name%3Dsqlgw%2Creason%3DFailedCreate";
    let steps = vec![
        vec![get(&format!("{STS}/sqlgw"), Reply::Json(200, before.sts()))],
        vec![get(
            events,
            Reply::Json(
                200,
                json!({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": []}),
            ),
        )],
    ];
    let (result, _) = watched(steps, "analytics/sqlgw", settings(Output::Table, None)).await;
    match result {
        Err(Error::NotFound(m)) => {
            assert_eq!(m, "StatefulSet analytics/sqlgw: no refresh recorded")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_refused_watch_is_one_sentence_naming_the_api_server() {
    let r = Recorded::at(31);
    let forbidden = api_status(
        403,
        "Forbidden",
        "pods is forbidden: User \"dev\" cannot list resource \"pods\" in the namespace \"analytics\"",
    );
    let steps = vec![
        vec![get(&format!("{STS}/sqlgw"), Reply::Json(200, r.sts()))],
        vec![
            get(&sts_list(), list("StatefulSetList", "382", vec![r.sts()])),
            get(&pods_list(), Reply::Json(403, forbidden)),
        ],
    ];
    let (result, shown) = watched(steps, "analytics/sqlgw", settings(Output::Table, None)).await;
    let err = result.unwrap_err().to_string();
    assert_eq!(
        err,
        "pods of analytics/sqlgw: permission denied (403 Forbidden): pods is forbidden: User \"dev\" cannot list resource \"pods\" in the namespace \"analytics\" (API server https://10.0.0.1:6443)"
    );
    assert!(
        shown.is_empty(),
        "nothing shown before the picture is whole"
    );
}

#[tokio::test]
async fn a_bad_target_is_refused_before_any_request() {
    let (result, _) = watched(vec![], "sqlgw", settings(Output::Table, None)).await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "\"sqlgw\": name the workload as NAMESPACE/NAME"
    );
}

// ---------------------------------------------------------------------------
// Which workload, without a target

fn records(sts: Vec<Value>) -> Vec<Vec<Expect>> {
    vec![
        vec![get(
            "/apis/apps/v1/namespaces/analytics/statefulsets?",
            list("StatefulSetList", "1", sts),
        )],
        vec![get(
            "/apis/apps/v1/namespaces/analytics/deployments?",
            list("DeploymentList", "1", vec![]),
        )],
    ]
}

fn renamed(mut sts: Value, name: &str) -> Value {
    sts["metadata"]["name"] = json!(name);
    sts
}

async fn chosen(sts: Vec<Value>) -> Result<String, Error> {
    let (cluster, handle) = mock();
    let server = tokio::spawn(play(handle, records(sts)));
    let result = one_to_watch(&cluster, Some("analytics")).await;
    server.await.unwrap();
    result
}

#[tokio::test]
async fn without_a_target_the_one_workload_with_a_record_is_watched() {
    let done = renamed(Recorded::at(40).sts(), "done");
    let untouched = renamed(Recorded::at(11).sts(), "untouched");
    assert_eq!(
        chosen(vec![done.clone(), untouched.clone()]).await.unwrap(),
        "analytics/done"
    );
    // Of several with records, the one whose refresh is running.
    let running = Recorded::at(31).sts();
    assert_eq!(
        chosen(vec![done.clone(), running.clone()]).await.unwrap(),
        "analytics/sqlgw"
    );
    // Two running, or none running of two: say which, and ask for one.
    let other = renamed(running.clone(), "other");
    let err = chosen(vec![running, other]).await.unwrap_err().to_string();
    assert_eq!(
        err,
        "--watch follows one refresh, and 2 workloads carry a refresh record (analytics/sqlgw, analytics/other), 2 of them with a refresh running: name one (NAMESPACE/NAME, or NAME with -n)"
    );
    let err = chosen(vec![done.clone(), renamed(done, "done-too")])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("--watch follows one refresh, and 2 workloads"),
        "{err}"
    );
    assert!(!err.contains("running"), "{err}");
}

#[tokio::test]
async fn without_a_target_and_no_record_there_is_nothing_to_watch() {
    match chosen(vec![renamed(Recorded::at(11).sts(), "untouched")]).await {
        Err(Error::NotFound(m)) => assert_eq!(
            m,
            "no StatefulSet or Deployment carries a refresh record in namespace analytics: nothing to watch"
        ),
        other => panic!("{other:?}"),
    }
}
