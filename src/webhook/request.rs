//! The AdmissionReview as sent, read in one pass without building its
//! objects whole: the request's own fields typed as kube's
//! `AdmissionRequest` types them, and each object read in place as far as
//! its route needs once the request's resource is known (the API server
//! writes the resource before the objects), else kept as its text and read
//! from it later, the same way. A request is routed, and most are answered,
//! from this read alone ([`super::review`]). It reads through
//! [`super::json`]'s reader, which skips what no type reads at twice
//! serde_json's speed.

use std::fmt;

use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::{AdmissionResponse, Operation};
use kube::core::{GroupVersionKind, GroupVersionResource};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::json::{self, Text};
use super::schema::{AnyValue, KeyText};
use super::wire::{API_VERSION, Asked, KIND, workload_kind};
use super::workload_update::{Object, ObjectSeed};
use crate::policy::PolicySet;

/// The request of an AdmissionReview, or `None` for a body this read does
/// not take (the full read then names what is wrong). `policies` tell a
/// workload whose spec is worth reading in place from one that is not.
pub(super) fn read<'a>(body: &'a [u8], policies: &PolicySet) -> Option<Request<'a>> {
    // Validated once here, the text's strings are not validated again one
    // by one.
    let text = json::utf8(body)?;
    json::from_str_seed(text, EnvelopeSeed { policies }).ok()?
}

/// kube's `AdmissionRequest`, as far as an answer needs it.
pub(super) struct Request<'a> {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    pub sub_resource: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub operation: Operation,
    pub user_info: UserInfo,
    pub object: Option<Sent<'a>>,
    pub old_object: Option<Sent<'a>>,
    pub dry_run: bool,
}

/// An object of the request: read in place, or its text.
pub(super) enum Sent<'a> {
    Text(Text<'a>),
    Workload(Box<Object<'a>>),
}

impl<'a> Sent<'a> {
    /// The object as a workload of `kind`, read from its text if it was
    /// not read in place.
    pub fn workload(
        self,
        kind: crate::workload::WorkloadKind,
        policies: &PolicySet,
    ) -> Option<Object<'a>> {
        match self {
            Sent::Workload(object) => Some(*object),
            Sent::Text(text) => json::from_str_seed(text.get(), ObjectSeed { kind, policies }).ok(),
        }
    }

    /// The object's text, if it was not read in place.
    pub fn text(&self) -> Option<Text<'a>> {
        match self {
            Sent::Text(text) => Some(*text),
            Sent::Workload(_) => None,
        }
    }
}

impl Request<'_> {
    /// Whether the request is on a subresource.
    pub fn on_subresource(&self) -> bool {
        self.sub_resource.as_deref().is_some_and(|s| !s.is_empty())
    }

    /// The facts of the request, `object_uid` its old object's.
    pub fn asked(self, object_uid: Option<String>) -> Asked {
        Asked {
            workload: workload_kind(&self.resource),
            uid: self.uid,
            operation: self.operation,
            kind: self.kind.kind,
            namespace: self.namespace,
            name: self.name,
            user_info: self.user_info,
            dry_run: self.dry_run,
            object_uid,
        }
    }
}

/// Marks `key` read, failing on a second one as serde's derived readers
/// (kube's among them) do.
fn first<E: de::Error>(seen: &mut u32, bit: u32, key: &'static str) -> Result<(), E> {
    if *seen & bit != 0 {
        return Err(E::duplicate_field(key));
    }
    *seen |= bit;
    Ok(())
}

struct EnvelopeSeed<'p> {
    policies: &'p PolicySet,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = Option<Request<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = Option<Request<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an AdmissionReview")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut seen, mut api_version, mut kind, mut request) = (0, None, None, None);
        while let Some(key) = map.next_key_seed(KeyText)? {
            match &*key {
                "apiVersion" => {
                    first(&mut seen, 1, "apiVersion")?;
                    api_version = Some(map.next_value::<String>()?);
                }
                "kind" => {
                    first(&mut seen, 2, "kind")?;
                    kind = Some(map.next_value::<String>()?);
                }
                "request" => {
                    first(&mut seen, 4, "request")?;
                    request = map.next_value_seed(OptionalRequest(self.policies))?;
                }
                // Never sent to a webhook, but read in full by the full read.
                "response" => {
                    first(&mut seen, 8, "response")?;
                    map.next_value::<Option<AdmissionResponse>>()?;
                }
                // kube's flattened type meta parses any other key in full
                // (depth, numbers, strings); the API server sends none.
                other => {
                    return Err(de::Error::unknown_field(
                        other,
                        &["apiVersion", "kind", "request", "response"],
                    ));
                }
            }
        }
        let api_version = api_version.ok_or_else(|| de::Error::missing_field("apiVersion"))?;
        let kind = kind.ok_or_else(|| de::Error::missing_field("kind"))?;
        if api_version != API_VERSION || kind != KIND {
            return Err(de::Error::custom(
                "not an admission.k8s.io/v1 AdmissionReview",
            ));
        }
        Ok(request)
    }
}

/// `null` or a request.
struct OptionalRequest<'p>(&'p PolicySet);

impl<'de> DeserializeSeed<'de> for OptionalRequest<'_> {
    type Value = Option<Request<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for OptionalRequest<'_> {
    type Value = Option<Request<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an AdmissionRequest")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(RequestVisitor(self.0)).map(Some)
    }
}

struct RequestVisitor<'p>(&'p PolicySet);

impl<'de> Visitor<'de> for RequestVisitor<'_> {
    type Value = Request<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an AdmissionRequest")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Request<'de>, A::Error> {
        let mut seen = 0;
        let (mut uid, mut kind, mut resource, mut sub_resource) = (None, None, None, None);
        let (mut name, mut namespace, mut operation, mut user_info) = (None, None, None, None);
        let (mut object, mut old_object, mut dry_run) = (None, None, None);
        while let Some(key) = map.next_key_seed(KeyText)? {
            // Read in place when the resource, written first, says what
            // the object is.
            let sent = ObjectsAre {
                kind: resource.as_ref().and_then(workload_kind),
                policies: self.0,
            };
            match &*key {
                "uid" => {
                    first(&mut seen, 1, "uid")?;
                    uid = Some(map.next_value::<String>()?);
                }
                "kind" => {
                    first(&mut seen, 1 << 1, "kind")?;
                    kind = Some(map.next_value::<GroupVersionKind>()?);
                }
                "resource" => {
                    first(&mut seen, 1 << 2, "resource")?;
                    resource = Some(map.next_value::<GroupVersionResource>()?);
                }
                "subResource" => {
                    first(&mut seen, 1 << 3, "subResource")?;
                    sub_resource = map.next_value::<Option<String>>()?;
                }
                // Not needed for an answer, but the full read fails on
                // them where they are unreadable, so this one does too.
                "requestKind" => {
                    first(&mut seen, 1 << 4, "requestKind")?;
                    map.next_value::<Option<GroupVersionKind>>()?;
                }
                "requestResource" => {
                    first(&mut seen, 1 << 5, "requestResource")?;
                    map.next_value::<Option<GroupVersionResource>>()?;
                }
                "requestSubResource" => {
                    first(&mut seen, 1 << 6, "requestSubResource")?;
                    map.next_value::<Option<String>>()?;
                }
                "options" => {
                    first(&mut seen, 1 << 7, "options")?;
                    map.next_value_seed(AnyValue)?;
                }
                "name" => {
                    first(&mut seen, 1 << 8, "name")?;
                    name = Some(map.next_value::<String>()?);
                }
                "namespace" => {
                    first(&mut seen, 1 << 9, "namespace")?;
                    namespace = map.next_value::<Option<String>>()?;
                }
                "operation" => {
                    first(&mut seen, 1 << 10, "operation")?;
                    operation = Some(map.next_value::<Operation>()?);
                }
                "userInfo" => {
                    first(&mut seen, 1 << 11, "userInfo")?;
                    user_info = Some(map.next_value::<UserInfo>()?);
                }
                "object" => {
                    first(&mut seen, 1 << 12, "object")?;
                    object = map.next_value_seed(sent)?;
                }
                "oldObject" => {
                    first(&mut seen, 1 << 13, "oldObject")?;
                    old_object = map.next_value_seed(sent)?;
                }
                "dryRun" => {
                    first(&mut seen, 1 << 14, "dryRun")?;
                    dry_run = Some(map.next_value::<bool>()?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Request {
            uid: uid.ok_or_else(|| de::Error::missing_field("uid"))?,
            kind: kind.ok_or_else(|| de::Error::missing_field("kind"))?,
            resource: resource.ok_or_else(|| de::Error::missing_field("resource"))?,
            sub_resource,
            name: name.unwrap_or_default(),
            namespace,
            operation: operation.ok_or_else(|| de::Error::missing_field("operation"))?,
            user_info: user_info.ok_or_else(|| de::Error::missing_field("userInfo"))?,
            object,
            old_object,
            dry_run: dry_run.unwrap_or_default(),
        })
    }
}

/// How to read an object: a workload of this kind in place, or its text.
#[derive(Clone, Copy)]
struct ObjectsAre<'p> {
    kind: Option<crate::workload::WorkloadKind>,
    policies: &'p PolicySet,
}

impl<'de> DeserializeSeed<'de> for ObjectsAre<'_> {
    type Value = Option<Sent<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ObjectsAre<'_> {
    type Value = Option<Sent<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Ok(Some(match self.kind {
            Some(kind) => Sent::Workload(Box::new(
                ObjectSeed {
                    kind,
                    policies: self.policies,
                }
                .deserialize(d)?,
            )),
            None => Sent::Text(<Text as serde::Deserialize>::deserialize(d)?),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPDATE: &str = include_str!("../../tests/data/apiserver/sts-update-set-image.json");

    fn read_in_place(request: &Request) -> [bool; 2] {
        [&request.object, &request.old_object]
            .map(|o| o.as_ref().is_some_and(|o| o.text().is_none()))
    }

    /// The API server writes the resource before the objects (the order of
    /// Go's fields, as recorded), so both are read in place, each scanned
    /// once. Keys in another order (serde_json's `Value` sorts them, putting
    /// `object` first) leave the objects as text, read again later.
    #[test]
    fn objects_are_read_in_place_when_the_resource_comes_before_them() {
        let policies = super::super::review::tests::policies();
        let request = read(UPDATE.as_bytes(), &policies).unwrap();
        assert_eq!(read_in_place(&request), [true, true]);
        let sorted: serde_json::Value = serde_json::from_str(UPDATE).unwrap();
        let sorted = serde_json::to_vec(&sorted).unwrap();
        assert!(sorted.starts_with(br#"{"apiVersion""#));
        let request = read(&sorted, &policies).unwrap();
        assert_eq!(read_in_place(&request), [false, false]);
    }
}
