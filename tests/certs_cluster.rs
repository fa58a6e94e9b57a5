//! `upgrade-guard certs --secret NAME --webhooks NAME`, the Helm chart's
//! hook Job: the decisions (does this Secret do? which caBundles need a
//! patch, and what patch?) as pure functions, the I/O against kube's mock
//! API server (exact paths, methods, bodies), and the command's wiring and
//! error sentence against a local HTTP server.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

use base64::Engine;
use common::api_server::*;
use common::*;
use http::{Request, Response};
use k8s_openapi::api::core::v1::Secret;
use kube::client::Body;
use serde_json::{Value, json};
use upgrade_guard::certs::{
    self, Bundle, InCluster, InstallError, SecretPlan, WebhookEntry, ca_bundle_patch, judge_pair,
    plan_secret,
};
use upgrade_guard::cli::cluster;

const NS: &str = "upgrade-guard";
const SECRETS: &str = "/api/v1/namespaces/upgrade-guard/secrets";
const SECRET: &str = "/api/v1/namespaces/upgrade-guard/secrets/upgrade-guard-tls";
const VWC: &str =
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/upgrade-guard";
const MWC: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/upgrade-guard";
const WRITE: &str = "?&fieldManager=upgrade-guard";
const SERVER: &str = "https://10.0.0.1:6443";
const NAMES_LINE: &str =
    "upgrade-guard.upgrade-guard.svc, upgrade-guard.upgrade-guard.svc.cluster.local";

fn mock() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

fn names() -> Vec<String> {
    certs::service_names("upgrade-guard", NS)
}

fn target(webhooks: &[&str]) -> InCluster {
    InCluster {
        namespace: NS.into(),
        secret: "upgrade-guard-tls".into(),
        names: names(),
        webhooks: webhooks.iter().map(|w| w.to_string()).collect(),
        now: now(),
    }
}

/// A pair for the Service, valid from now for `days` days.
fn pair(days: i64) -> Bundle {
    certs::generate(&names(), now(), days).unwrap()
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn data(b: &Bundle) -> Value {
    json!({"ca.crt": b64(&b.ca_pem), "tls.crt": b64(&b.cert_pem), "tls.key": b64(&b.key_pem)})
}

/// The Secret as the API server returns it: with a resourceVersion,
/// Helm's labels, and managedFields.
fn stored(b: &Bundle, resource_version: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "upgrade-guard-tls", "namespace": NS, "resourceVersion": resource_version,
            "uid": "0b6e2f4c-3b7a-4f43-9d59-5d8a8e0f6d11",
            "labels": {"team": "platform"},
            "managedFields": [{"manager": "upgrade-guard", "operation": "Update", "apiVersion": "v1"}]},
        "type": "kubernetes.io/tls",
        "data": data(b),
    })
}

/// A webhook configuration of `kind` whose entries carry these caBundles.
fn config(kind: &str, entries: &[(&str, Option<&str>)]) -> Value {
    let webhooks: Vec<Value> = entries
        .iter()
        .map(|(name, ca)| {
            let mut client_config = json!({"service": {"namespace": NS, "name": "upgrade-guard", "path": "/validate", "port": 443}});
            if let Some(ca) = ca {
                client_config["caBundle"] = json!(b64(ca));
            }
            json!({"name": name, "clientConfig": client_config, "sideEffects": "NoneOnDryRun", "admissionReviewVersions": ["v1"]})
        })
        .collect();
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
        "metadata": {"name": "upgrade-guard", "resourceVersion": "9"}, "webhooks": webhooks})
}

fn validating(entries: &[(&str, Option<&str>)]) -> Value {
    config("ValidatingWebhookConfiguration", entries)
}

fn mutating(entries: &[(&str, Option<&str>)]) -> Value {
    config("MutatingWebhookConfiguration", entries)
}

fn not_found(what: &str) -> Value {
    status(
        404,
        "NotFound",
        &format!("{what} \"upgrade-guard\" not found"),
    )
}

/// The patch that sets entry `index` (named `name`) to `ca`.
fn set_ca(index: usize, name: &str, ca: &str) -> [Value; 2] {
    [
        json!({"op": "test", "path": format!("/webhooks/{index}/name"), "value": name}),
        json!({"op": "add", "path": format!("/webhooks/{index}/clientConfig/caBundle"), "value": b64(ca)}),
    ]
}

async fn run(
    calls: Vec<Call>,
    target: &InCluster,
    fresh: &Bundle,
) -> Result<Vec<String>, InstallError> {
    let (client, handle) = mock();
    let server = tokio::spawn(scenario(handle, calls));
    let result = certs::install(&client, target, fresh).await;
    server.await.unwrap();
    result
}

fn never_says_the_key(lines: &[String], bundles: &[&Bundle]) {
    let text = lines.join("\n");
    for b in bundles {
        let body = b.key_pem.lines().nth(1).unwrap();
        assert!(!text.contains(body), "{text}");
        assert!(!text.contains(&b64(&b.key_pem)), "{text}");
    }
}

// --- The decisions ---------------------------------------------------------

#[test]
fn a_fresh_pair_for_the_service_does_and_its_expiry_is_said() {
    let b = pair(365);
    let expiry = judge_pair(
        b.ca_pem.as_bytes(),
        b.cert_pem.as_bytes(),
        b.key_pem.as_bytes(),
        &names(),
        now(),
    )
    .unwrap();
    assert_eq!(expiry, "2027-11-21T00:00:00Z");
}

#[test]
fn a_pair_with_30_days_or_less_left_does_not_do_and_31_days_does() {
    // Made now for 30 days: it lapses 2026-12-21T00:00Z, before now + 30 days.
    let short = pair(30);
    let why = judge_pair(
        short.ca_pem.as_bytes(),
        short.cert_pem.as_bytes(),
        short.key_pem.as_bytes(),
        &names(),
        now(),
    )
    .unwrap_err();
    assert_eq!(
        why,
        "tls.crt (valid until 2026-12-21T00:00:00Z) or its CA expires within 30 days"
    );
    let enough = pair(31);
    assert_eq!(
        judge_pair(
            enough.ca_pem.as_bytes(),
            enough.cert_pem.as_bytes(),
            enough.key_pem.as_bytes(),
            &names(),
            now(),
        ),
        Ok("2026-12-22T00:00:00Z".into())
    );
}

#[test]
fn an_expired_pair_does_not_do() {
    let old = certs::generate(
        &names(),
        now() - jiff::SignedDuration::from_hours(24 * 400),
        365,
    )
    .unwrap();
    let why = judge_pair(
        old.ca_pem.as_bytes(),
        old.cert_pem.as_bytes(),
        old.key_pem.as_bytes(),
        &names(),
        now(),
    )
    .unwrap_err();
    assert_eq!(
        why,
        "tls.crt (valid until 2026-10-17T00:00:00Z) or its CA has expired"
    );
}

#[test]
fn a_pair_for_another_service_does_not_do() {
    let other = certs::generate(&certs::service_names("other", NS), now(), 365).unwrap();
    let why = judge_pair(
        other.ca_pem.as_bytes(),
        other.cert_pem.as_bytes(),
        other.key_pem.as_bytes(),
        &names(),
        now(),
    )
    .unwrap_err();
    assert_eq!(why, "tls.crt is not for upgrade-guard.upgrade-guard.svc");
    // Only one of the two names is not enough either.
    let half = certs::generate(&names()[..1], now(), 365).unwrap();
    let why = judge_pair(
        half.ca_pem.as_bytes(),
        half.cert_pem.as_bytes(),
        half.key_pem.as_bytes(),
        &names(),
        now(),
    )
    .unwrap_err();
    assert_eq!(
        why,
        "tls.crt is not for upgrade-guard.upgrade-guard.svc.cluster.local"
    );
}

#[test]
fn a_certificate_not_signed_by_ca_crt_or_a_key_not_its_own_does_not_do() {
    let (a, b) = (pair(365), pair(365));
    let why = judge_pair(
        b.ca_pem.as_bytes(),
        a.cert_pem.as_bytes(),
        a.key_pem.as_bytes(),
        &names(),
        now(),
    )
    .unwrap_err();
    assert_eq!(why, "tls.crt is not signed by the CA in ca.crt");
    let why = judge_pair(
        a.ca_pem.as_bytes(),
        a.cert_pem.as_bytes(),
        b.key_pem.as_bytes(),
        &names(),
        now(),
    )
    .unwrap_err();
    assert_eq!(
        why,
        "tls.crt and tls.key: keys may not be consistent: KeyMismatch"
    );
    for (ca, cert, key) in [
        ("", a.cert_pem.as_str(), a.key_pem.as_str()),
        (a.ca_pem.as_str(), "not a certificate", a.key_pem.as_str()),
        (a.ca_pem.as_str(), a.cert_pem.as_str(), ""),
    ] {
        assert!(
            judge_pair(
                ca.as_bytes(),
                cert.as_bytes(),
                key.as_bytes(),
                &names(),
                now()
            )
            .is_err(),
            "{ca:?} {cert:?}"
        );
    }
}

fn secret(v: Value) -> Secret {
    serde_json::from_value(v).unwrap()
}

#[test]
fn the_secret_plan_creates_keeps_replaces_or_refuses() {
    assert_eq!(plan_secret(None, &names(), now()), Ok(SecretPlan::Create));

    let good = pair(365);
    assert_eq!(
        plan_secret(Some(&secret(stored(&good, "77"))), &names(), now()),
        Ok(SecretPlan::Keep {
            ca_pem: good.ca_pem.clone().into_bytes(),
            expiry: "2027-11-21T00:00:00Z".into()
        })
    );

    let mut lacking = stored(&good, "78");
    lacking["data"].as_object_mut().unwrap().remove("ca.crt");
    assert_eq!(
        plan_secret(Some(&secret(lacking)), &names(), now()),
        Ok(SecretPlan::Replace {
            resource_version: "78".into(),
            why: "lacks one of ca.crt, tls.crt, tls.key".into()
        })
    );

    let mut opaque = stored(&good, "79");
    opaque["type"] = json!("Opaque");
    assert_eq!(
        plan_secret(Some(&secret(opaque)), &names(), now()),
        Err("is of type Opaque, not kubernetes.io/tls; a Secret's type cannot be changed: delete it or name another with --secret".into())
    );
}

#[test]
fn a_renewal_carries_the_old_cas_still_valid_and_the_result_is_kept() {
    let (old, fresh) = (pair(20), pair(365));
    let expired = certs::generate(
        &names(),
        now() - jiff::SignedDuration::from_hours(24 * 400),
        365,
    )
    .unwrap();
    assert_eq!(certs::carried_cas(old.ca_pem.as_bytes(), now()), old.ca_pem);
    assert_eq!(certs::carried_cas(expired.ca_pem.as_bytes(), now()), "");
    assert_eq!(certs::carried_cas(b"not PEM", now()), "");
    let chain = format!("{}{}", expired.ca_pem, old.ca_pem);
    assert_eq!(certs::carried_cas(chain.as_bytes(), now()), old.ca_pem);

    // What a renewal writes is kept by the next run, with both CAs.
    let renewed = certs::replaced_secret(&secret(stored(&old, "5")), &fresh, now());
    assert_eq!(
        plan_secret(Some(&renewed), &names(), now()),
        Ok(SecretPlan::Keep {
            ca_pem: both(&fresh, &old).into_bytes(),
            expiry: "2027-11-21T00:00:00Z".into()
        })
    );
}

fn entry(name: &str, ca: Option<&str>) -> WebhookEntry {
    WebhookEntry {
        name: name.into(),
        ca_bundle: ca.map(|c| c.as_bytes().to_vec()),
    }
}

#[test]
fn only_entries_whose_ca_bundle_differs_are_patched_each_guarded_by_its_name() {
    let (ca, old) = (pair(365).ca_pem, pair(365).ca_pem);
    let entries = [
        entry("a.upgradeguard.io", Some(&ca)),
        entry("b.upgradeguard.io", None),
        entry("c.upgradeguard.io", Some(&old)),
    ];
    let ops = ca_bundle_patch(&entries, ca.as_bytes());
    let mut wanted = set_ca(1, "b.upgradeguard.io", &ca).to_vec();
    wanted.extend(set_ca(2, "c.upgradeguard.io", &ca));
    assert_eq!(ops, wanted);
    assert!(ca_bundle_patch(&entries[..1], ca.as_bytes()).is_empty());
    assert!(ca_bundle_patch(&[], ca.as_bytes()).is_empty());
}

// --- The I/O, against the mock API server ------------------------------------

#[tokio::test]
async fn no_secret_creates_one_and_patches_both_webhook_configurations() {
    let fresh = pair(365);
    let created = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "upgrade-guard-tls", "namespace": NS,
            "labels": {"app.kubernetes.io/managed-by": "upgrade-guard-certs"}},
        "type": "kubernetes.io/tls",
        "data": data(&fresh),
    });
    let calls = vec![
        call(
            "GET",
            SECRET,
            404,
            status(404, "NotFound", "secrets \"upgrade-guard-tls\" not found"),
        ),
        call(
            "POST",
            &format!("{SECRETS}{WRITE}"),
            201,
            stored(&fresh, "1"),
        )
        .with_body(created),
        call(
            "GET",
            VWC,
            200,
            validating(&[("validate.upgradeguard.io", None)]),
        ),
        call("PATCH", &format!("{VWC}{WRITE}"), 200, validating(&[])).with_body(json!(set_ca(
            0,
            "validate.upgradeguard.io",
            &fresh.ca_pem
        ))),
        call(
            "GET",
            MWC,
            200,
            mutating(&[("mutate.upgradeguard.io", None)]),
        ),
        call("PATCH", &format!("{MWC}{WRITE}"), 200, mutating(&[])).with_body(json!(set_ca(
            0,
            "mutate.upgradeguard.io",
            &fresh.ca_pem
        ))),
    ];
    let said = run(calls, &target(&["upgrade-guard"]), &fresh)
        .await
        .unwrap();
    assert_eq!(
        said,
        [
            format!(
                "Secret upgrade-guard/upgrade-guard-tls: created; its certificate for {NAMES_LINE} is valid until 2027-11-21T00:00:00Z"
            ),
            "ValidatingWebhookConfiguration upgrade-guard: caBundle set in 1 of its 1 webhook(s)"
                .into(),
            "MutatingWebhookConfiguration upgrade-guard: caBundle set in 1 of its 1 webhook(s)"
                .into(),
        ]
    );
    never_says_the_key(&said, &[&fresh]);
}

#[tokio::test]
async fn a_good_secret_is_kept_and_only_the_webhook_whose_ca_bundle_differs_is_patched() {
    let (kept, fresh, old) = (pair(365), pair(365), pair(365));
    let calls = vec![
        call("GET", SECRET, 200, stored(&kept, "77")),
        call(
            "GET",
            VWC,
            200,
            validating(&[("validate.upgradeguard.io", Some(&kept.ca_pem))]),
        ),
        call(
            "GET",
            MWC,
            200,
            mutating(&[
                ("mutate.upgradeguard.io", Some(&kept.ca_pem)),
                ("mutate-scale.upgradeguard.io", Some(&old.ca_pem)),
            ]),
        ),
        call("PATCH", &format!("{MWC}{WRITE}"), 200, mutating(&[])).with_body(json!(set_ca(
            1,
            "mutate-scale.upgradeguard.io",
            &kept.ca_pem
        ))),
    ];
    let said = run(calls, &target(&["upgrade-guard"]), &fresh)
        .await
        .unwrap();
    assert_eq!(
        said,
        [
            format!("Secret upgrade-guard/upgrade-guard-tls: kept; its certificate for {NAMES_LINE} is valid until 2027-11-21T00:00:00Z"),
            "ValidatingWebhookConfiguration upgrade-guard: the caBundle of its 1 webhook(s) is the CA already; not patched".into(),
            "MutatingWebhookConfiguration upgrade-guard: caBundle set in 1 of its 2 webhook(s)".into(),
        ]
    );
    never_says_the_key(&said, &[&kept, &fresh]);
}

/// The update the API server must receive: the Secret as read (labels,
/// uid, resourceVersion kept; managedFields left out) holding `fresh`,
/// its ca.crt the new CA then the old one (`old`, still valid).
fn update_of(read: &Value, fresh: &Bundle, old: &Bundle) -> Value {
    let mut body = read.clone();
    body["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    body["data"] = data(fresh);
    body["data"]["ca.crt"] = json!(b64(&both(fresh, old)));
    body
}

/// The ca.crt of a Secret renewed from `old` to `fresh`.
fn both(fresh: &Bundle, old: &Bundle) -> String {
    format!("{}{}", fresh.ca_pem, old.ca_pem)
}

#[tokio::test]
async fn an_expiring_secret_is_replaced_by_an_update_carrying_the_resource_version_read() {
    let (expiring, fresh) = (pair(20), pair(365));
    let read = stored(&expiring, "77");
    let calls = vec![
        call("GET", SECRET, 200, read.clone()),
        call(
            "PUT",
            &format!("{SECRET}{WRITE}"),
            200,
            stored(&fresh, "78"),
        )
        .with_body(update_of(&read, &fresh, &expiring)),
        call(
            "GET",
            VWC,
            200,
            validating(&[("validate.upgradeguard.io", Some(&expiring.ca_pem))]),
        ),
        call("PATCH", &format!("{VWC}{WRITE}"), 200, validating(&[])).with_body(json!(set_ca(
            0,
            "validate.upgradeguard.io",
            &both(&fresh, &expiring)
        ))),
        call("GET", MWC, 404, not_found("mutatingwebhookconfigurations")),
    ];
    let said = run(calls, &target(&["upgrade-guard"]), &fresh)
        .await
        .unwrap();
    assert_eq!(
        said[0],
        format!(
            "Secret upgrade-guard/upgrade-guard-tls: replaced (tls.crt (valid until 2026-12-11T00:00:00Z) or its CA expires within 30 days); its certificate for {NAMES_LINE} is valid until 2027-11-21T00:00:00Z"
        )
    );
    assert_eq!(
        said[2],
        "MutatingWebhookConfiguration upgrade-guard: not there (yet); skipped, the post-install run sets its caBundle"
    );
    never_says_the_key(&said, &[&expiring, &fresh]);
}

#[tokio::test]
async fn a_secret_for_other_names_is_replaced_and_no_webhooks_means_no_patch() {
    let other = certs::generate(&certs::service_names("old-name", NS), now(), 365).unwrap();
    let fresh = pair(365);
    let read = stored(&other, "12");
    let calls = vec![
        call("GET", SECRET, 200, read.clone()),
        call(
            "PUT",
            &format!("{SECRET}{WRITE}"),
            200,
            stored(&fresh, "13"),
        )
        .with_body(update_of(&read, &fresh, &other)),
    ];
    let said = run(calls, &target(&[]), &fresh).await.unwrap();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].starts_with("Secret upgrade-guard/upgrade-guard-tls: replaced (tls.crt is not for upgrade-guard.upgrade-guard.svc); "),
        "{said:?}"
    );
}

#[tokio::test]
async fn an_expired_secret_is_replaced_without_its_old_ca() {
    let expired = certs::generate(
        &names(),
        now() - jiff::SignedDuration::from_hours(24 * 400),
        365,
    )
    .unwrap();
    let fresh = pair(365);
    let read = stored(&expired, "30");
    let mut body = update_of(&read, &fresh, &expired);
    body["data"]["ca.crt"] = json!(b64(&fresh.ca_pem));
    let calls = vec![
        call("GET", SECRET, 200, read.clone()),
        call(
            "PUT",
            &format!("{SECRET}{WRITE}"),
            200,
            stored(&fresh, "31"),
        )
        .with_body(body),
        call(
            "GET",
            VWC,
            200,
            validating(&[("validate.upgradeguard.io", Some(&expired.ca_pem))]),
        ),
        call("PATCH", &format!("{VWC}{WRITE}"), 200, validating(&[])).with_body(json!(set_ca(
            0,
            "validate.upgradeguard.io",
            &fresh.ca_pem
        ))),
        call("GET", MWC, 404, not_found("mutatingwebhookconfigurations")),
    ];
    let said = run(calls, &target(&["upgrade-guard"]), &fresh)
        .await
        .unwrap();
    assert!(
        said[0].contains(
            ": replaced (tls.crt (valid until 2026-10-17T00:00:00Z) or its CA has expired); "
        ),
        "{said:?}"
    );
}

#[tokio::test]
async fn a_409_on_create_keeps_the_pair_the_other_writer_made() {
    let (theirs, fresh) = (pair(365), pair(365));
    let calls = vec![
        call("GET", SECRET, 404, status(404, "NotFound", "not found")),
        call(
            "POST",
            &format!("{SECRETS}{WRITE}"),
            409,
            status(
                409,
                "AlreadyExists",
                "secrets \"upgrade-guard-tls\" already exists",
            ),
        ),
        call("GET", SECRET, 200, stored(&theirs, "5")),
        // Their run patched this one already; the other is still to do,
        // with their CA, not the one this run made.
        call(
            "GET",
            VWC,
            200,
            validating(&[("validate.upgradeguard.io", Some(&theirs.ca_pem))]),
        ),
        call(
            "GET",
            MWC,
            200,
            mutating(&[("mutate.upgradeguard.io", None)]),
        ),
        call("PATCH", &format!("{MWC}{WRITE}"), 200, mutating(&[])).with_body(json!(set_ca(
            0,
            "mutate.upgradeguard.io",
            &theirs.ca_pem
        ))),
    ];
    let said = run(calls, &target(&["upgrade-guard"]), &fresh)
        .await
        .unwrap();
    assert_eq!(
        said[0],
        "Secret upgrade-guard/upgrade-guard-tls: written by another run meanwhile; kept theirs, valid until 2027-11-21T00:00:00Z"
    );
}

#[tokio::test]
async fn a_409_whose_winner_does_not_do_fails_and_patches_nothing() {
    let (expiring, fresh) = (pair(10), pair(365));
    let read = stored(&expiring, "7");
    let calls = vec![
        call("GET", SECRET, 200, read.clone()),
        call(
            "PUT",
            &format!("{SECRET}{WRITE}"),
            409,
            status(409, "Conflict", "the object has been modified"),
        )
        .with_body(update_of(&read, &fresh, &expiring)),
        call("GET", SECRET, 200, stored(&expiring, "8")),
    ];
    let err = run(calls, &target(&["upgrade-guard"]), &fresh)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Secret upgrade-guard/upgrade-guard-tls: changed by another writer while this run wrote it, and what it holds does not do (tls.crt (valid until 2026-12-01T00:00:00Z) or its CA expires within 30 days); run again"
    );
}

#[tokio::test]
async fn missing_webhook_configurations_are_skipped_when_the_secret_was_just_made() {
    let fresh = pair(365);
    let calls = vec![
        call("GET", SECRET, 404, status(404, "NotFound", "not found")),
        call(
            "POST",
            &format!("{SECRETS}{WRITE}"),
            201,
            stored(&fresh, "1"),
        ),
        call(
            "GET",
            VWC,
            404,
            not_found("validatingwebhookconfigurations"),
        ),
        call("GET", MWC, 404, not_found("mutatingwebhookconfigurations")),
    ];
    let said = run(calls, &target(&["upgrade-guard"]), &fresh)
        .await
        .unwrap();
    assert_eq!(
        said[1..],
        [
            "ValidatingWebhookConfiguration upgrade-guard: not there (yet); skipped, the post-install run sets its caBundle",
            "MutatingWebhookConfiguration upgrade-guard: not there (yet); skipped, the post-install run sets its caBundle",
        ]
    );
}

#[tokio::test]
async fn both_configurations_missing_after_a_kept_secret_is_said_but_no_error() {
    let (kept, fresh) = (pair(365), pair(365));
    let calls = vec![
        call("GET", SECRET, 200, stored(&kept, "3")),
        call(
            "GET",
            VWC,
            404,
            not_found("validatingwebhookconfigurations"),
        ),
        call("GET", MWC, 404, not_found("mutatingwebhookconfigurations")),
    ];
    let said = run(calls, &target(&["upgrade-guard"]), &fresh)
        .await
        .unwrap();
    assert_eq!(
        said.last().unwrap(),
        "neither a ValidatingWebhookConfiguration nor a MutatingWebhookConfiguration named upgrade-guard exists: no caBundle written (is --webhooks right?)"
    );
}

#[tokio::test]
async fn a_403_on_the_secret_is_one_sentence_naming_it_and_nothing_more_is_asked() {
    let calls = vec![call(
        "GET",
        SECRET,
        403,
        status(
            403,
            "Forbidden",
            "secrets \"upgrade-guard-tls\" is forbidden: User \"system:serviceaccount:upgrade-guard:certs\" cannot get resource \"secrets\" in API group \"\" in the namespace \"upgrade-guard\"",
        ),
    )];
    let err = run(calls, &target(&["upgrade-guard"]), &pair(365))
        .await
        .unwrap_err();
    let InstallError::Api { what, source } = err else {
        panic!("{err}")
    };
    assert_eq!(what, "Secret upgrade-guard/upgrade-guard-tls");
    // What the command prints (it maps the error with `describe`).
    assert_eq!(
        cluster::describe(SERVER, &what, &source),
        "Secret upgrade-guard/upgrade-guard-tls: permission denied (403 Forbidden): secrets \"upgrade-guard-tls\" is forbidden: User \"system:serviceaccount:upgrade-guard:certs\" cannot get resource \"secrets\" in API group \"\" in the namespace \"upgrade-guard\" (API server https://10.0.0.1:6443)"
    );
}

#[tokio::test]
async fn a_403_on_a_patch_names_the_webhook_configuration() {
    let (kept, old) = (pair(365), pair(365));
    let calls = vec![
        call("GET", SECRET, 200, stored(&kept, "3")),
        call(
            "GET",
            VWC,
            200,
            validating(&[("validate.upgradeguard.io", Some(&old.ca_pem))]),
        ),
        call(
            "PATCH",
            &format!("{VWC}{WRITE}"),
            403,
            status(403, "Forbidden", "cannot patch"),
        )
        .with_body(json!(set_ca(0, "validate.upgradeguard.io", &kept.ca_pem))),
    ];
    let err = run(calls, &target(&["upgrade-guard"]), &pair(365))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, InstallError::Api { what, source: kube::Error::Api(s) }
            if what == "ValidatingWebhookConfiguration upgrade-guard" && s.code == 403),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_secret_of_another_type_is_refused_and_not_written() {
    let mut opaque = stored(&pair(20), "4");
    opaque["type"] = json!("Opaque");
    let err = run(
        vec![call("GET", SECRET, 200, opaque)],
        &target(&["upgrade-guard"]),
        &pair(365),
    )
    .await
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "Secret upgrade-guard/upgrade-guard-tls is of type Opaque, not kubernetes.io/tls; a Secret's type cannot be changed: delete it or name another with --secret"
    );
}

#[tokio::test]
async fn a_failed_name_test_is_planned_again_from_a_fresh_read_once() {
    let (kept, old) = (pair(365), pair(365));
    let calls = vec![
        call("GET", SECRET, 200, stored(&kept, "3")),
        call(
            "GET",
            VWC,
            200,
            validating(&[("validate.upgradeguard.io", Some(&old.ca_pem))]),
        ),
        call(
            "PATCH",
            &format!("{VWC}{WRITE}"),
            422,
            status(422, "Invalid", "the test operation failed"),
        )
        .with_body(json!(set_ca(0, "validate.upgradeguard.io", &kept.ca_pem))),
        // Someone put a webhook in front meanwhile: index 1 now.
        call(
            "GET",
            VWC,
            200,
            validating(&[
                ("new.upgradeguard.io", Some(&kept.ca_pem)),
                ("validate.upgradeguard.io", Some(&old.ca_pem)),
            ]),
        ),
        call("PATCH", &format!("{VWC}{WRITE}"), 200, validating(&[])).with_body(json!(set_ca(
            1,
            "validate.upgradeguard.io",
            &kept.ca_pem
        ))),
        call("GET", MWC, 404, not_found("mutatingwebhookconfigurations")),
    ];
    let said = run(calls, &target(&["upgrade-guard"]), &pair(365))
        .await
        .unwrap();
    assert_eq!(
        said[1],
        "ValidatingWebhookConfiguration upgrade-guard: caBundle set in 1 of its 2 webhook(s)"
    );

    // A second failure is an error, not a loop.
    let calls = vec![
        call("GET", SECRET, 200, stored(&kept, "3")),
        call(
            "GET",
            VWC,
            200,
            validating(&[("validate.upgradeguard.io", None)]),
        ),
        call(
            "PATCH",
            &format!("{VWC}{WRITE}"),
            422,
            status(422, "Invalid", "the test operation failed"),
        ),
        call(
            "GET",
            VWC,
            200,
            validating(&[("validate.upgradeguard.io", None)]),
        ),
        call(
            "PATCH",
            &format!("{VWC}{WRITE}"),
            422,
            status(422, "Invalid", "the test operation failed"),
        ),
    ];
    let err = run(calls, &target(&["upgrade-guard"]), &pair(365))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, InstallError::Api { source: kube::Error::Api(s), .. } if s.code == 422),
        "{err:?}"
    );
}

#[tokio::test]
async fn each_configuration_name_given_is_patched() {
    let kept = pair(365);
    let vwc_b = VWC.replace("/upgrade-guard", "/upgrade-guard-extra");
    let mwc_b = MWC.replace("/upgrade-guard", "/upgrade-guard-extra");
    let calls =
        vec![
            call("GET", SECRET, 200, stored(&kept, "3")),
            call(
                "GET",
                VWC,
                200,
                validating(&[("v.upgradeguard.io", Some(&kept.ca_pem))]),
            ),
            call(
                "GET",
                MWC,
                200,
                mutating(&[("m.upgradeguard.io", Some(&kept.ca_pem))]),
            ),
            call(
                "GET",
                &vwc_b,
                200,
                validating(&[("v2.upgradeguard.io", None)]),
            ),
            call("PATCH", &format!("{vwc_b}{WRITE}"), 200, validating(&[]))
                .with_body(json!(set_ca(0, "v2.upgradeguard.io", &kept.ca_pem))),
            call(
                "GET",
                &mwc_b,
                404,
                not_found("mutatingwebhookconfigurations"),
            ),
        ];
    let said = run(
        calls,
        &target(&["upgrade-guard", "upgrade-guard-extra"]),
        &pair(365),
    )
    .await
    .unwrap();
    assert_eq!(
        said[3],
        "ValidatingWebhookConfiguration upgrade-guard-extra: caBundle set in 1 of its 1 webhook(s)"
    );
}

// --- The command, against a local HTTP server ---------------------------------

/// Answers every request with a 403 Status until the client goes, and
/// hands back the request lines it saw.
fn forbidding_server() -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        // One request is all the command may send; bounded in any case.
        if let Ok((stream, _)) = listener.accept() {
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            seen.push(line.trim_end().to_string());
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                    break;
                }
            }
            let body = status(
                403,
                "Forbidden",
                "secrets \"upgrade-guard-tls\" is forbidden",
            )
            .to_string();
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
        seen
    });
    (address, handle)
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_upgrade-guard"))
}

#[test]
fn the_command_reads_the_secret_with_the_kubeconfig_and_says_a_403_in_one_sentence() {
    let dir = TempDir::new("certs-cluster");
    let (address, server) = forbidding_server();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: \"{address}\"}}\nusers:\n- name: nobody\n  user: {{}}\ncontexts:\n- name: local\n  context: {{cluster: local, user: nobody}}\ncurrent-context: local\n"
        ),
    )
    .unwrap();
    let out = bin()
        .args([
            "certs",
            "--secret",
            "upgrade-guard-tls",
            "--webhooks",
            "upgrade-guard",
        ])
        .args([
            "--service",
            "upgrade-guard",
            "--namespace",
            NS,
            "--days",
            "365",
        ])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .output()
        .unwrap();
    let seen = server.join().unwrap();
    assert_eq!(
        seen,
        [format!("GET {SECRET} HTTP/1.1")],
        "the Secret is read first"
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "upgrade-guard: Secret upgrade-guard/upgrade-guard-tls: permission denied (403 Forbidden): secrets \"upgrade-guard-tls\" is forbidden (API server {address})\n"
        )
    );
}

#[test]
fn the_command_refuses_mixed_modes_and_a_lifetime_it_would_renew_every_run() {
    for args in [
        &["certs", "--secret", "s", "--out", "somewhere"][..],
        &["certs", "--secret", "s", "--patch-manifests"],
        &["certs", "--webhooks", "upgrade-guard"],
        &["certs", "--secret", ""],
        &["certs", "--secret", "s", "--days", "30"],
        &["certs", "--kubeconfig", "/nowhere", "--out", "somewhere"],
    ] {
        let out = bin().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = bin()
        .args(["certs", "--secret", "s", "--days", "30"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "upgrade-guard: --days 30 is too short with --secret: a certificate with 30 days or fewer left is replaced, so give more than 30\n"
    );
}
