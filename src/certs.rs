//! A CA and a serving certificate signed by it: for `upgrade-guard certs`
//! (the webhook Service's names) and for `serve`'s development mode
//! (loopback), so both are made the same way; and `certs --secret`'s
//! install in the cluster: keep or write the Secret, set the caBundles.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};

use crate::webhook::tls;

/// PEM texts: `ca.crt`, `tls.crt`, `tls.key`.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot make a certificate: {0}")]
pub struct CertError(#[from] rcgen::Error);

/// A CA and a certificate for `names` (DNS names or IP addresses), both
/// valid from `from` for `days` days.
pub fn generate(names: &[String], from: jiff::Timestamp, days: i64) -> Result<Bundle, CertError> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = named("upgrade-guard CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut ca, from, days);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

    let mut leaf = CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name = named(names.first().map_or("upgrade-guard", String::as_str));
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut leaf, from, days);
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca)?;

    Ok(Bundle {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The DNS names the API server uses to reach a webhook Service.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

fn named(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Valid from a day before `from` (clock skew between nodes) to `days` after it.
fn set_validity(params: &mut CertificateParams, from: jiff::Timestamp, days: i64) {
    let today = from.to_zoned(jiff::tz::TimeZone::UTC).date();
    let day = |d: jiff::civil::Date| {
        rcgen::date_time_ymd(
            i32::from(d.year()),
            d.month().unsigned_abs(),
            d.day().unsigned_abs(),
        )
    };
    params.not_before = day(today.yesterday().unwrap_or(today));
    params.not_after = day(valid_until(from, days));
}

/// The day (00:00 UTC) certificates made at `from` for `days` days expire.
pub fn valid_until(from: jiff::Timestamp, days: i64) -> jiff::civil::Date {
    let today = from.to_zoned(jiff::tz::TimeZone::UTC).date();
    today
        .checked_add(jiff::Span::new().days(days))
        .unwrap_or(today)
}

// ---------------------------------------------------------------------------
// In-cluster mode (`certs --secret NAME --webhooks NAME`, the Helm chart's
// hook Job): decide what the Secret and the webhook configurations need
// (pure), then do it with a few guarded calls (thin).

/// A kept certificate must stay valid this much longer; a shorter one is
/// replaced, so the hook renews it at an upgrade well before it lapses.
pub const RENEW_WITHIN_DAYS: i64 = 30;
pub const TLS_TYPE: &str = "kubernetes.io/tls";
pub const CA_KEY: &str = "ca.crt";
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";
/// The field manager of every write, as the controller's.
const FIELD_MANAGER: &str = "upgrade-guard";

/// Whether a CA, certificate and key (PEM) serve `names` now and for more
/// than [`RENEW_WITHIN_DAYS`] more: `Ok(expiry)` (RFC 3339), or why not.
/// The key must match the certificate, the certificate must chain to the
/// CA for every name (what the API server checks against the caBundle),
/// and both must be valid at `now` and [`RENEW_WITHIN_DAYS`] later.
pub fn judge_pair(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
    names: &[String],
    now: jiff::Timestamp,
) -> Result<String, String> {
    let store = tls::CertStore::from_pem(cert_pem, key_pem).map_err(|e| match e {
        tls::TlsError::Invalid { message, .. } => format!("{CERT_KEY} and {KEY_KEY}: {message}"),
        other => other.to_string(),
    })?;
    let expiry = tls::expiry(store.not_after());
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{CERT_KEY}: {e}"))?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| format!("{CERT_KEY}: no PEM certificate found"))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        let ca = ca.map_err(|e| format!("{CA_KEY}: {e}"))?;
        roots.add(ca).map_err(|e| format!("{CA_KEY}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{CA_KEY}: no PEM certificate found"));
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        tls::provider(),
    )
    .build()
    .map_err(|e| format!("{CA_KEY}: {e}"))?;
    let later = now
        .checked_add(jiff::SignedDuration::from_hours(24 * RENEW_WITHIN_DAYS))
        .unwrap_or(now);
    for (at, soon) in [(now, false), (later, true)] {
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            at.as_second().max(0).unsigned_abs(),
        ));
        for name in names {
            let server = ServerName::try_from(name.as_str())
                .map_err(|e| format!("{name:?} is no DNS name: {e}"))?;
            verifier
                .verify_server_cert(leaf, intermediates, &server, &[], at)
                .map_err(|e| why_not(&e, name, soon, &expiry))?;
        }
    }
    Ok(expiry)
}

/// A verifier's refusal in words; `soon`: the check 30 days ahead.
fn why_not(e: &rustls::Error, name: &str, soon: bool, expiry: &str) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!("{CERT_KEY} is not for {name}")
            }
            C::Expired | C::ExpiredContext { .. } => format!(
                "{CERT_KEY} (valid until {expiry}) or its CA {}",
                if soon {
                    "expires within 30 days"
                } else {
                    "has expired"
                }
            ),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                format!("{CERT_KEY} or its CA is not valid yet")
            }
            C::UnknownIssuer | C::BadSignature => {
                format!("{CERT_KEY} is not signed by the CA in {CA_KEY}")
            }
            other => format!("{CERT_KEY}: {other:?}"),
        },
        other => format!("{CERT_KEY}: {other}"),
    }
}

/// What to do with the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretPlan {
    /// It does: keep it; its CA goes into the caBundles.
    Keep { ca_pem: Vec<u8>, expiry: String },
    /// There is none: create it.
    Create,
    /// It does not do: replace it by an update guarded by the
    /// resourceVersion read, so a concurrent writer gets a 409.
    Replace {
        resource_version: String,
        why: String,
    },
}

/// The plan for the Secret as read (`None`: not there). `Err`: one that
/// must not be overwritten (another type, which is immutable).
pub fn plan_secret(
    existing: Option<&Secret>,
    names: &[String],
    now: jiff::Timestamp,
) -> Result<SecretPlan, String> {
    let Some(secret) = existing else {
        return Ok(SecretPlan::Create);
    };
    let kind = secret.type_.as_deref().unwrap_or("Opaque");
    if kind != TLS_TYPE {
        return Err(format!(
            "is of type {kind}, not {TLS_TYPE}; a Secret's type cannot be changed: delete it or name another with --secret"
        ));
    }
    let resource_version = secret
        .metadata
        .resource_version
        .clone()
        .ok_or("has no resourceVersion to guard an update with")?;
    let data = secret.data.as_ref();
    let get = |key: &str| data.and_then(|d| d.get(key)).map(|b| b.0.as_slice());
    let judged = match (get(CA_KEY), get(CERT_KEY), get(KEY_KEY)) {
        (Some(ca), Some(cert), Some(key)) => {
            judge_pair(ca, cert, key, names, now).map(|expiry| SecretPlan::Keep {
                ca_pem: ca.to_vec(),
                expiry,
            })
        }
        _ => Err(format!("lacks one of {CA_KEY}, {CERT_KEY}, {KEY_KEY}")),
    };
    Ok(judged.unwrap_or_else(|why| SecretPlan::Replace {
        resource_version,
        why,
    }))
}

/// A new `kubernetes.io/tls` Secret holding `bundle`.
pub fn new_secret(namespace: &str, name: &str, bundle: &Bundle) -> Secret {
    let mut secret = Secret {
        type_: Some(TLS_TYPE.into()),
        ..Default::default()
    };
    secret.metadata.name = Some(name.into());
    secret.metadata.namespace = Some(namespace.into());
    secret.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_string(),
        "upgrade-guard-certs".to_string(),
    )]));
    secret.data = Some(tls_data(bundle));
    secret
}

/// `existing` holding `bundle` instead: its labels, annotations and owners
/// kept, its resourceVersion the guard. Other data keys go: the Secret is
/// the serving pair and nothing else. Its `ca.crt` keeps the old CAs still
/// valid at `now` after the new one (see [`carried_cas`]).
pub fn replaced_secret(existing: &Secret, bundle: &Bundle, now: jiff::Timestamp) -> Secret {
    let old_ca = existing
        .data
        .as_ref()
        .and_then(|d| d.get(CA_KEY))
        .map_or(&[][..], |b| b.0.as_slice());
    let mut secret = existing.clone();
    // Omitted managedFields are kept by the API server; sent back, they
    // would be written as they were read.
    secret.metadata.managed_fields = None;
    secret.string_data = None;
    let mut data = tls_data(bundle);
    data.insert(
        CA_KEY.into(),
        ByteString(format!("{}{}", bundle.ca_pem, carried_cas(old_ca, now)).into_bytes()),
    );
    secret.data = Some(data);
    secret
}

/// The CA certificates of an old `ca.crt` that are still valid at `now`,
/// as PEM. The caBundle changes at once but the kubelet brings the new
/// serving pair to the pods up to a minute or so later: trusting the old
/// CA too meanwhile keeps the webhooks answering (failurePolicy Fail)
/// across a renewal. An expired or unreadable one is dropped, so the
/// bundle does not grow.
pub fn carried_cas(old_ca_pem: &[u8], now: jiff::Timestamp) -> String {
    CertificateDer::pem_slice_iter(old_ca_pem)
        .filter_map(Result::ok)
        .filter(|der| {
            x509_parser::parse_x509_certificate(der)
                .is_ok_and(|(_, c)| c.validity().not_after.timestamp() > now.as_second())
        })
        .map(|der| {
            let text = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
            let lines: Vec<&str> = text
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).unwrap_or_default())
                .collect();
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                lines.join("\n")
            )
        })
        .collect()
}

fn tls_data(bundle: &Bundle) -> BTreeMap<String, ByteString> {
    [
        (CA_KEY, &bundle.ca_pem),
        (CERT_KEY, &bundle.cert_pem),
        (KEY_KEY, &bundle.key_pem),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect()
}

/// One entry of a webhook configuration, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEntry {
    pub name: String,
    pub ca_bundle: Option<Vec<u8>>,
}

/// The JSON Patch that sets the caBundle of every entry whose caBundle is
/// not `ca_pem` (empty: nothing to write). A JSON Patch rather than a
/// merge patch: a merge patch replaces the whole `webhooks` list (rules,
/// selectors and all, from what was read); this one touches only the
/// caBundles, addressed by index, each guarded by a `test` of the entry's
/// name, so a list reordered or shrunk meanwhile fails (422) instead of
/// patching the wrong entry. Not guarded by the resourceVersion, which
/// any unrelated write (a label) moves.
pub fn ca_bundle_patch(entries: &[WebhookEntry], ca_pem: &[u8]) -> Vec<Value> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.ca_bundle.as_deref() != Some(ca_pem))
        .flat_map(|(i, e)| {
            [
                json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": e.name}),
                json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded}),
            ]
        })
        .collect()
}

/// What the hook Job installs.
#[derive(Debug, Clone)]
pub struct InCluster {
    pub namespace: String,
    pub secret: String,
    /// The Service's DNS names the certificate must be for.
    pub names: Vec<String>,
    /// The webhook configurations (validating and mutating) to patch.
    pub webhooks: Vec<String>,
    pub now: jiff::Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A call about `what` (say `Secret ns/name`) failed.
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Refused(String),
}

/// Makes sure the Secret holds a good pair (keeps it, or writes `fresh`)
/// and every webhook's caBundle is its CA. Returns what it did, a sentence
/// each; no sentence holds the key.
pub async fn install(
    client: &kube::Client,
    target: &InCluster,
    fresh: &Bundle,
) -> Result<Vec<String>, InstallError> {
    let mut said = Vec::new();
    let (ca_pem, made) = ensure_secret(client, target, fresh, &mut said).await?;
    for name in &target.webhooks {
        let validating =
            patch_config::<ValidatingWebhookConfiguration>(client, name, &ca_pem, &mut said)
                .await?;
        let mutating =
            patch_config::<MutatingWebhookConfiguration>(client, name, &ca_pem, &mut said).await?;
        if !validating && !mutating && !made {
            // Pre-install comes before the chart's configurations; a run
            // that found its Secret made already (post-install, an upgrade)
            // and still no configuration is looking for the wrong name.
            said.push(format!(
                "neither a ValidatingWebhookConfiguration nor a MutatingWebhookConfiguration named {name} exists: no caBundle written (is --webhooks right?)"
            ));
        }
    }
    Ok(said)
}

/// A webhook configuration's webhooks, as names and CA bundles: the two
/// kinds hold them in webhook types of their own.
trait WebhookEntries {
    fn entries(&self) -> Vec<WebhookEntry>;
}

macro_rules! webhook_entries {
    ($($config:ty),*) => {$(
        impl WebhookEntries for $config {
            fn entries(&self) -> Vec<WebhookEntry> {
                self.webhooks
                    .iter()
                    .flatten()
                    .map(|w| WebhookEntry {
                        name: w.name.clone(),
                        ca_bundle: w.client_config.ca_bundle.as_ref().map(|b| b.0.clone()),
                    })
                    .collect()
            }
        }
    )*};
}
webhook_entries!(ValidatingWebhookConfiguration, MutatingWebhookConfiguration);

/// The Secret's CA after keeping or writing it, and whether this run wrote it.
async fn ensure_secret(
    client: &kube::Client,
    target: &InCluster,
    fresh: &Bundle,
    said: &mut Vec<String>,
) -> Result<(Vec<u8>, bool), InstallError> {
    let what = format!("Secret {}/{}", target.namespace, target.secret);
    let api_error = |source| InstallError::Api {
        what: what.clone(),
        source,
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), &target.namespace);
    let existing = api.get_opt(&target.secret).await.map_err(api_error)?;
    let plan = plan_secret(existing.as_ref(), &target.names, target.now)
        .map_err(|why| InstallError::Refused(format!("{what} {why}")))?;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let (body, done, replacing) = match plan {
        SecretPlan::Keep { ca_pem, expiry } => {
            said.push(format!(
                "{what}: kept; its certificate for {} is valid until {expiry}",
                target.names.join(", ")
            ));
            return Ok((ca_pem, false));
        }
        SecretPlan::Create => (
            new_secret(&target.namespace, &target.secret, fresh),
            "created".to_string(),
            false,
        ),
        SecretPlan::Replace { why, .. } => {
            let old = existing
                .as_ref()
                .expect("a replace plan comes from a Secret read");
            (
                replaced_secret(old, fresh, target.now),
                format!("replaced ({why})"),
                true,
            )
        }
    };
    let written = if replacing {
        api.replace(&target.secret, &params, &body).await
    } else {
        api.create(&params, &body).await
    };
    match written {
        Ok(_) => {
            said.push(format!(
                "{what}: {done}; its certificate for {} is valid until {}",
                target.names.join(", "),
                fresh_expiry(fresh)
            ));
            // What the caBundles must trust: the ca.crt just written.
            let ca = body.data.and_then(|mut d| d.remove(CA_KEY));
            Ok((ca.map(|b| b.0).unwrap_or_default(), true))
        }
        // Another run (the other hook, a second replica of the Job) wrote
        // first: keep its pair if it does, rather than overwrite it.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let theirs = api.get_opt(&target.secret).await.map_err(api_error)?;
            match plan_secret(theirs.as_ref(), &target.names, target.now) {
                Ok(SecretPlan::Keep { ca_pem, expiry }) => {
                    said.push(format!(
                        "{what}: written by another run meanwhile; kept theirs, valid until {expiry}"
                    ));
                    Ok((ca_pem, true))
                }
                Ok(SecretPlan::Replace { why, .. }) | Err(why) => {
                    Err(InstallError::Refused(format!(
                        "{what}: changed by another writer while this run wrote it, and what it holds does not do ({why}); run again"
                    )))
                }
                Ok(SecretPlan::Create) => Err(InstallError::Refused(format!(
                    "{what}: the API server answered 409 Conflict, then the Secret was gone; run again"
                ))),
            }
        }
        Err(source) => Err(api_error(source)),
    }
}

fn fresh_expiry(fresh: &Bundle) -> String {
    tls::CertStore::from_pem(fresh.cert_pem.as_bytes(), fresh.key_pem.as_bytes())
        .map(|s| tls::expiry(s.not_after()))
        .unwrap_or_else(|_| "unknown".into())
}

/// Patches the caBundles of the configuration of kind `K` named `name`;
/// `false`: there is none (yet). A patch whose name tests fail (the list
/// changed meanwhile) is planned again from a fresh read, once.
async fn patch_config<K>(
    client: &kube::Client,
    name: &str,
    ca_pem: &[u8],
    said: &mut Vec<String>,
) -> Result<bool, InstallError>
where
    K: kube::Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
        + WebhookEntries
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let what = format!("{} {name}", K::kind(&()));
    let api_error = |source| InstallError::Api {
        what: what.clone(),
        source,
    };
    let api: Api<K> = Api::all(client.clone());
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let mut retried = false;
    loop {
        let Some(config) = api.get_opt(name).await.map_err(api_error)? else {
            said.push(format!(
                "{what}: not there (yet); skipped, the post-install run sets its caBundle"
            ));
            return Ok(false);
        };
        let entries = config.entries();
        let ops = ca_bundle_patch(&entries, ca_pem);
        if ops.is_empty() {
            said.push(format!(
                "{what}: the caBundle of its {} webhook(s) is the CA already; not patched",
                entries.len()
            ));
            return Ok(true);
        }
        let patched = ops.len() / 2;
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))
            .map_err(|e| api_error(kube::Error::SerdeError(e)))?;
        match api.patch(name, &params, &Patch::Json::<()>(patch)).await {
            Ok(_) => {
                said.push(format!(
                    "{what}: caBundle set in {patched} of its {} webhook(s)",
                    entries.len()
                ));
                return Ok(true);
            }
            Err(kube::Error::Api(s)) if (s.code == 422 || s.code == 409) && !retried => {
                retried = true;
            }
            Err(source) => return Err(api_error(source)),
        }
    }
}
