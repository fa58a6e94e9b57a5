//! Refusals and overrides as Events on the workload: which reviewed
//! requests call for one (never a dry-run), how repeats aggregate into one
//! Event whose count rises, and the exact requests the writer sends to
//! kube's mock API server.

mod common;

use std::time::Duration;

use common::api_server::*;
use common::{now, policies, sample};
use http::{Request, Response};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::client::Body;
use prometheus_client::metrics::counter::Counter;
use serde_json::{Value, json};
use upgrade_guard::decide::NoCluster;
use upgrade_guard::webhook::events::{self, Aggregator, Occurrence, Write};
use upgrade_guard::webhook::{Caller, Endpoint, Reviewed, review};
use upgrade_guard::workload::WorkloadKind;

const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";

fn reviewed(body: &Value, endpoint: Endpoint) -> Reviewed {
    review(
        body.to_string().as_bytes(),
        endpoint,
        &policies(),
        &NoCluster,
        now(),
        &Caller::default(),
    )
    .unwrap()
}

/// `kubectl apply` of 1.9.0 over 1.7.0, as the API server sent it: refused
/// (it skips 1.8).
fn skipping() -> Value {
    sample("sts-update-client-side-apply.json")
}

fn forced() -> Value {
    let mut body = skipping();
    let annotations = &mut body["request"]["object"]["metadata"]["annotations"];
    annotations["upgradeguard.io/force-to"] = json!("1.9.0");
    annotations["upgradeguard.io/force-reason"] = json!("INC-4711: hotfix only in 1.9");
    body
}

fn uid_of(body: &Value) -> String {
    body["request"]["oldObject"]["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_refusal_on_validate_is_an_occurrence_on_the_workload_with_its_uid() {
    let body = skipping();
    let r = reviewed(&body, Endpoint::Validate);
    assert!(!r.verdict.allowed);
    let o = events::occurrence(Endpoint::Validate, &r, now()).unwrap();
    assert_eq!(
        o.regarding,
        ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("StatefulSet".into()),
            namespace: Some("shop".into()),
            name: Some("db".into()),
            uid: Some(uid_of(&body)),
            ..Default::default()
        }
    );
    assert!(!o.forced);
    let rule = r.verdict.rule.unwrap().as_str();
    assert!(o.note.starts_with(&r.verdict.reason), "{}", o.note);
    assert!(o.note.contains(&format!("rule {rule}")), "{}", o.note);
    assert!(
        o.note
            .ends_with(&format!("(requested by {})", r.user_info.username.unwrap())),
        "{}",
        o.note
    );
    assert_eq!(o.at, now());
}

#[test]
fn no_occurrence_for_a_dry_run_the_mutating_call_or_an_approval() {
    let mut dry = skipping();
    dry["request"]["dryRun"] = json!(true);
    let r = reviewed(&dry, Endpoint::Validate);
    assert!(!r.verdict.allowed, "a dry-run gets the same verdict");
    assert_eq!(events::occurrence(Endpoint::Validate, &r, now()), None);

    let r = reviewed(&skipping(), Endpoint::Mutate);
    assert_eq!(events::occurrence(Endpoint::Mutate, &r, now()), None);

    let r = reviewed(&sample("sts-update-set-image.json"), Endpoint::Validate);
    assert!(r.verdict.allowed);
    assert_eq!(events::occurrence(Endpoint::Validate, &r, now()), None);
}

#[test]
fn a_forced_override_is_an_occurrence_naming_who_forced_it() {
    let r = reviewed(&forced(), Endpoint::Validate);
    assert!(r.verdict.allowed);
    let o = events::occurrence(Endpoint::Validate, &r, now()).unwrap();
    assert!(o.forced);
    assert!(o.note.contains("INC-4711"), "{}", o.note);
    assert!(
        o.note.ends_with(&format!(
            "(forced by {})",
            r.user_info.username.clone().unwrap()
        )),
        "{}",
        o.note
    );
}

#[test]
fn a_refused_scale_request_is_recorded_on_the_statefulset_not_the_scale() {
    let body = sample("sts-scale-subresource.json");
    let mut r = reviewed(&body, Endpoint::Validate);
    assert_eq!(r.kind, "Scale");
    assert_eq!(r.workload, Some(WorkloadKind::StatefulSet));
    r.verdict.allowed = false;
    r.verdict.reason = "shop/db is refreshing: scaling waits".into();
    let o = events::occurrence(Endpoint::Validate, &r, now()).unwrap();
    assert_eq!(o.regarding.kind.as_deref(), Some("StatefulSet"));
    assert_eq!(o.regarding.api_version.as_deref(), Some("apps/v1"));
    // A Scale carries its workload's UID.
    assert_eq!(o.regarding.uid, Some(uid_of(&body)));
}

#[test]
fn a_note_is_bounded_to_what_the_api_server_accepts() {
    let mut body = forced();
    body["request"]["object"]["metadata"]["annotations"]["upgradeguard.io/force-reason"] =
        json!("x".repeat(100_000));
    body["request"]["userInfo"]["username"] = json!("u".repeat(10_000));
    let r = reviewed(&body, Endpoint::Validate);
    let o = events::occurrence(Endpoint::Validate, &r, now()).unwrap();
    assert!(o.note.len() <= 1024, "{}", o.note.len());
    assert!(o.note.contains("[cut: "), "{}", o.note);
}

fn occurrence(note: &str, at: &str) -> Occurrence {
    Occurrence {
        regarding: ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("StatefulSet".into()),
            namespace: Some("shop".into()),
            name: Some("db".into()),
            uid: Some("3f1f".into()),
            ..Default::default()
        },
        forced: false,
        note: note.into(),
        at: at.parse().unwrap(),
    }
}

fn count_of(w: &Write) -> (String, i32, String) {
    match w {
        Write::Count { name, series, .. } => (
            name.clone(),
            series.count,
            series.last_observed_time.0.to_string(),
        ),
        other => panic!("a count, not {other:?}"),
    }
}

fn created(w: Option<Write>) -> String {
    match w {
        Some(Write::Create(e)) => e.metadata.name.unwrap(),
        other => panic!("a create, not {other:?}"),
    }
}

#[test]
fn repeats_raise_one_events_count_the_first_at_once_the_rest_at_a_flush() {
    let mut agg = Aggregator::new("upgrade-guard-7d9f-abcde");
    let name = created(agg.observe(occurrence("skip: 1.7 → 1.9", "2026-11-21T20:00:00Z")));
    let second = agg
        .observe(occurrence("skip: 1.7 → 1.9", "2026-11-21T20:00:05Z"))
        .unwrap();
    assert_eq!(
        count_of(&second),
        (name.clone(), 2, "2026-11-21T20:00:05Z".into())
    );
    for at in ["2026-11-21T20:00:10Z", "2026-11-21T20:00:15Z"] {
        assert_eq!(agg.observe(occurrence("skip: 1.7 → 1.9", at)), None);
    }
    let flushed = agg.flush();
    assert_eq!(flushed.len(), 1);
    assert_eq!(
        count_of(&flushed[0]),
        (name.clone(), 4, "2026-11-21T20:00:15Z".into())
    );
    assert_eq!(agg.flush(), vec![], "nothing new: nothing written");
    // Another message on the same workload is another Event.
    let other = created(agg.observe(occurrence("skip: 1.7 → 2.0", "2026-11-21T20:00:20Z")));
    assert_ne!(other, name);
    // Quiet for longer than the series lasts: a new Event.
    let later = created(agg.observe(occurrence("skip: 1.7 → 1.9", "2026-11-21T20:11:00Z")));
    assert_ne!(later, name);
}

#[test]
fn an_event_gone_from_the_api_server_is_made_again() {
    let mut agg = Aggregator::new("a");
    let name = created(agg.observe(occurrence("n", "2026-11-21T20:00:00Z")));
    agg.forget("shop", &name);
    created(agg.observe(occurrence("n", "2026-11-21T20:00:01Z")));
}

#[test]
fn event_names_stay_within_the_api_servers_limit() {
    let mut agg = Aggregator::new(&"i".repeat(500));
    let mut o = occurrence("n", "2026-11-21T20:00:00Z");
    o.regarding.name = Some("d".repeat(253));
    let Some(Write::Create(e)) = agg.observe(o) else {
        panic!()
    };
    assert!(e.metadata.name.unwrap().len() <= 253);
    assert!(e.reporting_instance.unwrap().len() <= 128);
}

fn mock() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// The Event the API server stores for the refusal at 20:00:00.
fn refused_event(uid: &str, note: &str) -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "db.18ea27d5a4628000", "namespace": "shop"},
        "eventTime": "2026-11-21T20:00:00.000000Z",
        "action": "Refuse",
        "reason": "UpgradeRefused",
        "note": note,
        "type": "Warning",
        "regarding": {"apiVersion": "apps/v1", "kind": "StatefulSet", "namespace": "shop", "name": "db", "uid": uid},
        "reportingController": "upgradeguard.io/webhook",
        "reportingInstance": "upgrade-guard-7d9f-abcde",
    })
}

#[tokio::test(start_paused = true)]
async fn the_writer_creates_then_counts_with_merge_patches_of_the_series() {
    let (client, handle) = mock();
    let dropped = Counter::default();
    let sink = events::start_flushing_every(
        client,
        "upgrade-guard-7d9f-abcde",
        dropped.clone(),
        Duration::from_secs(2),
    );
    let r = reviewed(&skipping(), Endpoint::Validate);
    let o = events::occurrence(Endpoint::Validate, &r, now()).unwrap();
    let body = refused_event(&uid_of(&skipping()), &o.note);
    let at = |s: &str| Occurrence {
        at: s.parse().unwrap(),
        ..o.clone()
    };
    let api =
        tokio::spawn(scenario(
            handle,
            vec![
            call("POST", &format!("{EVENTS}?"), 201, body.clone()).with_body(body.clone()),
            call("PATCH", &format!("{EVENTS}/db.18ea27d5a4628000?"), 200, body.clone()).with_body(
                json!({"series": {"count": 2, "lastObservedTime": "2026-11-21T20:00:04.000000Z"}}),
            ),
            // The third and fourth tries wait for the flush.
            call("PATCH", &format!("{EVENTS}/db.18ea27d5a4628000?"), 200, body.clone()).with_body(
                json!({"series": {"count": 4, "lastObservedTime": "2026-11-21T20:00:12.000000Z"}}),
            ),
        ],
        ));
    sink.send(o.clone());
    sink.send(at("2026-11-21T20:00:04Z"));
    sink.send(at("2026-11-21T20:00:08Z"));
    sink.send(at("2026-11-21T20:00:12Z"));
    api.await.unwrap();
    assert_eq!(dropped.get(), 0);
}

#[tokio::test]
async fn a_forced_override_is_created_as_upgrade_forced() {
    let (client, handle) = mock();
    let sink = events::start_flushing_every(
        client,
        "upgrade-guard-7d9f-abcde",
        Counter::default(),
        Duration::from_secs(3600),
    );
    let r = reviewed(&forced(), Endpoint::Validate);
    let o = events::occurrence(Endpoint::Validate, &r, now()).unwrap();
    let mut body = refused_event(&uid_of(&forced()), &o.note);
    body["action"] = json!("Force");
    body["reason"] = json!("UpgradeForced");
    let api = tokio::spawn(scenario(
        handle,
        vec![call("POST", &format!("{EVENTS}?"), 201, body.clone()).with_body(body)],
    ));
    sink.send(o);
    api.await.unwrap();
}

#[tokio::test]
async fn a_write_the_api_server_refuses_is_counted_and_the_writer_goes_on() {
    let (client, handle) = mock();
    let dropped = Counter::default();
    let sink = events::start_flushing_every(
        client,
        "upgrade-guard-7d9f-abcde",
        dropped.clone(),
        Duration::from_secs(3600),
    );
    let o = occurrence("first", "2026-11-21T20:00:00Z");
    let second = Occurrence {
        note: "second".into(),
        ..o.clone()
    };
    let forbidden = status(403, "Forbidden", "events.events.k8s.io is forbidden");
    let api = tokio::spawn(scenario(
        handle,
        vec![
            call("POST", &format!("{EVENTS}?"), 403, forbidden),
            call("POST", &format!("{EVENTS}?"), 201, json!({})),
        ],
    ));
    sink.send(o);
    sink.send(second);
    api.await.unwrap();
    assert_eq!(dropped.get(), 1);
}
