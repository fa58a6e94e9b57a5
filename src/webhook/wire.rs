//! The AdmissionReview on the wire, as both reads of a review share it:
//! which request it was (however it was read), which endpoint answers, and
//! the answer's exact bytes.

use base64::Engine;
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::core::{GroupVersionKind, GroupVersionResource, Resource};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::decide::Verdict;
use crate::workload::WorkloadKind;

pub(super) const API_VERSION: &str = "admission.k8s.io/v1";
pub(super) const KIND: &str = "AdmissionReview";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/validate`: allow or refuse, never a patch.
    Validate,
    /// `/mutate`: always allows; carries the patch.
    Mutate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
        }
    }
}

/// The kind behind an `apps/v1` resource, if upgrade-guard reads it.
pub(super) fn workload_kind(resource: &GroupVersionResource) -> Option<WorkloadKind> {
    (resource.group == "apps" && resource.version == "v1")
        .then(|| WorkloadKind::from_resource(&resource.resource))
        .flatten()
}

/// An AdmissionReview read but for its objects, which are left as their
/// text: a request is routed, and most are answered, before either object
/// is parsed, each then parsed once from its own text as far as its route
/// needs. `None` for a body this read cannot take; the full read then
/// names what is wrong.
pub(super) fn envelope(body: &[u8]) -> Option<Request<'_>> {
    // Validated once here, the text's strings are not validated again one
    // by one.
    let review: Envelope = serde_json::from_str(std::str::from_utf8(body).ok()?).ok()?;
    if review.api_version != API_VERSION || review.kind != KIND {
        return None;
    }
    review.request
}

// The full read takes kube's AdmissionReview, whose flattened type meta
// parses every other top-level key in full (depth, numbers, strings); the
// API server sends none, so one here goes the full way.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Envelope<'a> {
    api_version: String,
    kind: String,
    #[serde(borrow)]
    request: Option<Request<'a>>,
    // Never sent to a webhook, but read in full by the full read.
    #[serde(default)]
    #[allow(dead_code)]
    response: Option<AdmissionResponse>,
}

/// kube's `AdmissionRequest`, its objects as their text.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Request<'a> {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    // Not needed for an answer, but the full read fails on them where they
    // are unreadable, so this one does too.
    #[serde(default)]
    #[allow(dead_code)]
    request_kind: Option<GroupVersionKind>,
    #[serde(default)]
    #[allow(dead_code)]
    request_resource: Option<GroupVersionResource>,
    #[serde(default)]
    #[allow(dead_code)]
    request_sub_resource: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    options: Option<RawExtension>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    pub user_info: UserInfo,
    #[serde(borrow, default)]
    pub object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub old_object: Option<&'a RawValue>,
    #[serde(default)]
    pub dry_run: bool,
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

/// What the answer and the audit line need of a request, however it was read.
pub(super) struct Asked {
    pub uid: String,
    pub operation: Operation,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub user_info: UserInfo,
    pub dry_run: bool,
    pub workload: Option<WorkloadKind>,
    pub object_uid: Option<String>,
}

impl<T: Resource> From<&AdmissionRequest<T>> for Asked {
    fn from(request: &AdmissionRequest<T>) -> Self {
        Asked {
            uid: request.uid.clone(),
            operation: request.operation.clone(),
            kind: request.kind.kind.clone(),
            namespace: request.namespace.clone(),
            name: request.name.clone(),
            user_info: request.user_info.clone(),
            dry_run: request.dry_run,
            workload: workload_kind(&request.resource),
            object_uid: request
                .old_object
                .as_ref()
                .and_then(|o| o.meta().uid.clone()),
        }
    }
}

/// The AdmissionReview answered: `/validate` allows or refuses, with the
/// audit annotations and warnings; `/mutate` always allows, with the patch
/// and its warnings. Fields in sorted order, so the same answer is the same
/// bytes in every process; the body ends in a newline.
pub fn render(uid: &str, verdict: &Verdict, endpoint: Endpoint) -> Vec<u8> {
    let (allowed, warnings) = match endpoint {
        Endpoint::Validate => (verdict.allowed, &verdict.warnings),
        Endpoint::Mutate => (true, &verdict.patch_warnings),
    };
    let refused = !allowed;
    // The API server reads the patch as a Go []byte: base64.
    let patch = (endpoint == Endpoint::Mutate && verdict.allowed && !verdict.patch.is_empty())
        .then(|| serde_json::to_vec(&verdict.patch).ok())
        .flatten()
        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes));
    let answer = Answer {
        api_version: API_VERSION,
        kind: KIND,
        response: Response {
            allowed,
            audit_annotations: match endpoint {
                Endpoint::Validate => verdict.audit_annotations(),
                Endpoint::Mutate => Default::default(),
            },
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            status: Status {
                // kubectl prints the message; 403 makes it "Forbidden".
                code: refused.then_some(403),
                message: (refused && !verdict.reason.is_empty()).then_some(&verdict.reason),
                status: refused.then_some("Failure"),
            },
            uid,
            warnings: (!warnings.is_empty()).then_some(warnings),
        },
    };
    // Plain strings, numbers and maps of strings always serialize.
    let mut body = serde_json::to_vec(&answer).unwrap_or_default();
    body.push(b'\n');
    body
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: Response<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    allowed: bool,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    audit_annotations: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    status: Status<'a>,
    uid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a Vec<String>>,
}

#[derive(serde::Serialize)]
struct Status<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
}
