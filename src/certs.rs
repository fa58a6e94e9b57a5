//! A CA and a serving certificate signed by it: for `upgrade-guard certs`
//! (the webhook Service's names) and for `serve`'s development mode
//! (loopback), so both are made the same way.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

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
