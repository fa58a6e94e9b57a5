//! The AdmissionReview on the wire, as both reads of a review share it:
//! which request it was (however it was read), which endpoint answers, and
//! the answer's exact bytes.

use base64::Engine;
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::{AdmissionRequest, Operation};
use kube::core::{GroupVersionResource, Resource};

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

    /// The path it is served on.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Validate => "/validate",
            Endpoint::Mutate => "/mutate",
        }
    }

    /// The endpoint served on `path`, if any.
    pub fn at(path: &str) -> Option<Endpoint> {
        [Endpoint::Validate, Endpoint::Mutate]
            .into_iter()
            .find(|e| e.path() == path)
    }
}

/// The kind behind an `apps/v1` resource, if upgrade-guard reads it.
pub(super) fn workload_kind(resource: &GroupVersionResource) -> Option<WorkloadKind> {
    (resource.group == "apps" && resource.version == "v1")
        .then(|| WorkloadKind::from_resource(&resource.resource))
        .flatten()
}

/// Why a body is not a reviewable AdmissionReview. Each says what is wrong
/// and where, for a 400 or for `review`'s exit 2.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is empty")]
    Empty,
    #[error("the body is not an AdmissionReview: {}{message}", if path == "." || path == "?" { String::new() } else { format!("{path}: ") })]
    Malformed { path: String, message: String },
    #[error("apiVersion {0:?} is not supported: send admission.k8s.io/v1")]
    ApiVersion(String),
    #[error("kind {0:?} is not AdmissionReview")]
    Kind(String),
    #[error("the AdmissionReview has no request")]
    NoRequest,
    #[error("request.{field} is missing for a {operation} request")]
    MissingObject {
        field: &'static str,
        operation: &'static str,
    },
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

pub(super) fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
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
