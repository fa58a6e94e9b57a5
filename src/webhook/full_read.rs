//! The full read: every request, each object read into its k8s-openapi
//! type (less managedFields, [`super::objects`]) through kube's admission
//! types. It is the reference the quick reads are held to, and the one that
//! names what is wrong with a body. It reads; [`super::review`] decides.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use kube::core::{DynamicObject, GroupVersionResource, Resource};
use serde::de::DeserializeOwned;

use super::objects::{Lean, Parts, Skim};
use super::wire::{API_VERSION, Asked, KIND, ReviewError, operation_name, workload_kind};
use crate::decide::{self, Change, Verdict};
use crate::policy::PolicySet;
use crate::workload::{Workload, WorkloadKind};

/// What the full read makes of a request.
pub(super) enum Read {
    /// A change for the decision core; `None`: nothing to judge.
    Change(Asked, Option<Change>),
    /// Refused unread (a governed workload past the value cap).
    Refused(Asked, Verdict),
    /// A pod created or updated, for the data guard.
    Pod {
        asked: Asked,
        old: Option<Box<Pod>>,
        new: Box<Pod>,
    },
    /// A claim created or updated, for the data guard.
    Claim {
        asked: Asked,
        old: Option<Box<PersistentVolumeClaim>>,
        new: Box<PersistentVolumeClaim>,
    },
}

/// Every request, each object read into its type: the reference the
/// quick way is held to, and the one that names what is wrong.
/// `over_cap` counts the body's JSON values when they may be over the cap.
pub(super) fn read(
    body: &[u8],
    policies: &PolicySet,
    over_cap: &dyn Fn() -> Option<usize>,
) -> Result<Read, ReviewError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ReviewError::Empty);
    }
    let peek: Peek = serde_json::from_slice(body).map_err(|e| explain::<DynamicObject>(body, e))?;
    if peek.api_version != API_VERSION {
        return Err(ReviewError::ApiVersion(crate::quoted::bounded(
            &peek.api_version,
        )));
    }
    if peek.kind != KIND {
        return Err(ReviewError::Kind(crate::quoted::bounded(&peek.kind)));
    }
    let request = peek.request.ok_or(ReviewError::NoRequest)?;
    let kind = workload_kind(&request.resource);
    let sub_resource = request.sub_resource.as_deref().unwrap_or("");
    if let Some(data) = data_resource(&request.resource, sub_resource) {
        return answer_data(body, data);
    }
    match (kind, sub_resource) {
        (Some(WorkloadKind::StatefulSet), "") => answer::<StatefulSet>(body, policies, over_cap),
        (Some(WorkloadKind::Deployment), "") => answer::<Deployment>(body, policies, over_cap),
        (Some(kind), "scale") => {
            let request = parse::<Scale>(body)?;
            let replicas = |o: &Option<Scale>| {
                o.as_ref()
                    .and_then(|s| s.spec.as_ref())
                    .and_then(|s| s.replicas)
            };
            let change = match (replicas(&request.old_object), replicas(&request.object)) {
                (Some(from), Some(to)) => Some(Change::Scale {
                    kind,
                    namespace: request
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                    name: request.name.clone(),
                    from,
                    to,
                }),
                _ => None,
            };
            Ok(Read::Change((&request).into(), change))
        }
        _ => {
            let request = parse::<DynamicObject>(body)?;
            Ok(Read::Change((&request).into(), None))
        }
    }
}

/// A request on a workload itself: its objects become the change. Read
/// first as far as their metadata; parsed whole only when a policy
/// selects one of them or the refresh record changes.
fn answer<K>(
    body: &[u8],
    policies: &PolicySet,
    over_cap: &dyn Fn() -> Option<usize>,
) -> Result<Read, ReviewError>
where
    K: Parts
        + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    Workload: From<K>,
{
    let mut skimmed = parse::<Skim<K>>(body)?;
    // Read before the objects are taken: the old one's UID is in it.
    let asked: Asked = (&skimmed).into();
    let change = take_change(&mut skimmed, |o| Workload::from(o.0))?;
    if change.is_none_or(|c| decide::is_ungoverned(&c, policies)) {
        return Ok(Read::Change(asked, None));
    }
    if let Some(values) = over_cap() {
        let request = &skimmed;
        let refused = Verdict {
            allowed: false,
            reason: format!(
                "{} {}/{}: the request carries about {values} JSON values; upgrade-guard reads a governed workload of at most {MAX_VALUES}, so that no one request can exhaust its memory (move long env lists into a ConfigMap with envFrom)",
                crate::quoted::bounded(&request.kind.kind),
                crate::quoted::bounded(request.namespace.as_deref().unwrap_or_default()),
                crate::quoted::bounded(&request.name),
            ),
            ..Default::default()
        };
        return Ok(Read::Refused(asked, refused));
    }
    let mut request = parse::<Lean<K>>(body)?;
    let asked: Asked = (&request).into();
    let change = take_change(&mut request, |o| Workload::from(o.0))?;
    Ok(Read::Change(asked, change))
}

/// A pod or a claim, for the data guard.
fn answer_data(body: &[u8], data: DataResource) -> Result<Read, ReviewError> {
    match data {
        DataResource::Pod => {
            // Most pods mount no claim: answered from their metadata,
            // their specs skipped unread.
            let claims: ClaimsOnly =
                serde_json::from_slice(body).map_err(|e| explain::<DynamicObject>(body, e))?;
            if !claims.mounts_a_claim() {
                let request = parse::<Skim<Pod>>(body)?;
                return Ok(Read::Change(Asked::from(&request), None));
            }
            let mut request = parse::<Lean<Pod>>(body)?;
            let asked = Asked::from(&request);
            Ok(match (&request.operation, request.object.take()) {
                (Operation::Create | Operation::Update, Some(new)) => Read::Pod {
                    asked,
                    old: request.old_object.take().map(|o| Box::new(o.0)),
                    new: Box::new(new.0),
                },
                _ => Read::Change(asked, None),
            })
        }
        DataResource::Claim => {
            let mut request = parse::<PersistentVolumeClaim>(body)?;
            let asked = Asked::from(&request);
            Ok(match (&request.operation, request.object.take()) {
                (Operation::Create | Operation::Update, Some(new)) => Read::Claim {
                    asked,
                    old: request.old_object.take().map(Box::new),
                    new: Box::new(new),
                },
                _ => Read::Change(asked, None),
            })
        }
    }
}

/// Enough of a review to know which type its objects are, read before the
/// whole body so the objects are parsed once, straight into their types.
#[derive(serde::Deserialize)]
struct Peek {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    #[serde(default)]
    request: Option<PeekRequest>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PeekRequest {
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
}

/// The full request, its objects typed.
fn parse<T: Resource + DeserializeOwned>(body: &[u8]) -> Result<AdmissionRequest<T>, ReviewError> {
    let review: AdmissionReview<T> =
        serde_json::from_slice(body).map_err(|e| explain::<T>(body, e))?;
    review.try_into().map_err(|_| ReviewError::NoRequest)
}

/// Says where a body went wrong. Path tracking is slow, so it runs only
/// once parsing has failed.
fn explain<T: Resource + DeserializeOwned>(body: &[u8], plain: serde_json::Error) -> ReviewError {
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, AdmissionReview<T>>(&mut de) {
        // Both quote the offending value, which is the sender's: bounded.
        Err(e) => ReviewError::Malformed {
            path: crate::quoted::bounded(&e.path().to_string()),
            message: crate::quoted::bounded_message(&e.into_inner().to_string()),
        },
        // Valid up to trailing bytes: the plain error says where.
        Ok(_) => ReviewError::Malformed {
            path: ".".into(),
            message: crate::quoted::bounded_message(&plain.to_string()),
        },
    }
}

/// A governed request's objects are parsed into their full types, up to
/// ~1.1 kB per JSON value for the smallest (`{}` entries in an env list:
/// 25,000 values in a 40 kB body peaked at +23 to +27 MiB, `cargo bench
/// --bench abuse`), so the values a governed request may carry are capped. Real
/// workloads carry a few hundred to a few thousand (the recorded ones about
/// 400, managedFields included). A request no policy selects is answered
/// from its metadata and never counted.
pub const MAX_VALUES: usize = 25_000;

/// The body's JSON values when they are over [`MAX_VALUES`]. Counted
/// only when a bound is over the cap: every `{`, `[`, `,` and `:`, inside
/// strings too, 16 bytes at a time, and only until the rest could not take
/// it over the cap (the exact count goes byte by byte, and took a quarter
/// of a 30 kB review; so did the bound, byte by byte).
pub(super) fn values_over_cap(body: &[u8]) -> Option<usize> {
    // Never more values than bytes: a short body is under the cap unread.
    if body.len() <= MAX_VALUES {
        return None;
    }
    if !super::json::separators_over(body, MAX_VALUES) {
        return None;
    }
    Some(json_values(body)).filter(|&values| values > MAX_VALUES)
}

/// Counts the JSON values of a body, roughly: the `{`, `[`, `,` and `:`
/// outside strings. One linear pass, no allocation.
pub(super) fn json_values(body: &[u8]) -> usize {
    let (mut count, mut in_string, mut escaped) = (0, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' | b',' | b':' => count += 1,
                _ => {}
            }
        }
    }
    count
}

/// The core resources the data guard reviews.
#[derive(Clone, Copy)]
pub(super) enum DataResource {
    /// A pod, or its ephemeral containers.
    Pod,
    Claim,
}

pub(super) fn data_resource(
    resource: &GroupVersionResource,
    sub_resource: &str,
) -> Option<DataResource> {
    if !resource.group.is_empty() || resource.version != "v1" {
        return None;
    }
    match (resource.resource.as_str(), sub_resource) {
        ("pods", "" | "ephemeralcontainers") => Some(DataResource::Pod),
        ("persistentvolumeclaims", "") => Some(DataResource::Claim),
        _ => None,
    }
}

/// Of a pod review, only whether the new pod mounts a claim.
#[derive(serde::Deserialize)]
struct ClaimsOnly {
    #[serde(default)]
    request: Option<ClaimsRequest>,
}

#[derive(serde::Deserialize)]
struct ClaimsRequest {
    #[serde(default)]
    object: Option<ClaimsObject>,
}

#[derive(serde::Deserialize)]
struct ClaimsObject {
    #[serde(default)]
    spec: Option<ClaimsSpec>,
}

#[derive(serde::Deserialize)]
pub(super) struct ClaimsSpec {
    #[serde(default)]
    volumes: Option<Vec<ClaimsVolume>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimsVolume {
    #[serde(default)]
    persistent_volume_claim: Option<serde::de::IgnoredAny>,
}

impl ClaimsOnly {
    fn mounts_a_claim(&self) -> bool {
        self.request
            .as_ref()
            .and_then(|r| r.object.as_ref())
            .and_then(|o| o.spec.as_ref())
            .is_some_and(ClaimsSpec::mounts_a_claim)
    }
}

impl ClaimsSpec {
    pub(super) fn mounts_a_claim(&self) -> bool {
        self.volumes
            .iter()
            .flatten()
            .any(|v| v.persistent_volume_claim.is_some())
    }
}

/// The change a request on a workload asks for; `None` for CONNECT.
fn take_change<T: Resource>(
    request: &mut AdmissionRequest<T>,
    workload: impl Fn(T) -> Workload,
) -> Result<Option<Change>, ReviewError> {
    let operation = operation_name(&request.operation);
    let mut take = |field: &'static str| {
        let slot = match field {
            "object" => request.object.take(),
            _ => request.old_object.take(),
        };
        slot.map(&workload)
            .ok_or(ReviewError::MissingObject { field, operation })
    };
    Ok(match request.operation {
        Operation::Create => Some(Change::create(take("object")?)),
        Operation::Update => {
            let new = take("object")?;
            Some(Change::update(take("oldObject")?, new))
        }
        Operation::Delete => Some(Change::delete(take("oldObject")?)),
        Operation::Connect => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_over_the_cap_by_its_values_outside_strings() {
        let values = |n: usize| format!("[{}0]", "0,".repeat(n - 1));
        assert_eq!(values_over_cap(values(MAX_VALUES).as_bytes()), None);
        assert_eq!(
            values_over_cap(values(MAX_VALUES + 1).as_bytes()),
            Some(MAX_VALUES + 1)
        );
        // Commas in a string are no values, however many.
        let quoted = format!("[\"{}\"]", ",".repeat(2 * MAX_VALUES));
        assert_eq!(values_over_cap(quoted.as_bytes()), None);
    }

    #[test]
    fn values_are_counted_outside_strings_only() {
        assert_eq!(json_values(br#"{"a":[1,2,{}]}"#), 6);
        assert_eq!(json_values(br#"{"a":"{[,:]} \" {"}"#), 2);
        assert_eq!(json_values(br#""\\" "#), 0);
    }
}
