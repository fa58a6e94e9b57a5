//! AdmissionReview in, AdmissionReview out: the translation between the API
//! server's wire format and [`decide`]. `upgrade-guard review` and the server
//! both call [`review`], so they return the same bytes.

use base64::Engine;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, response::StatusSummary};

use crate::decide::{self, Change, ClusterView, Verdict};
use crate::policy::PolicySet;
use crate::workload::{Workload, WorkloadError, WorkloadKind};

const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";

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

/// Why a body is not a reviewable AdmissionReview. Each says what is wrong
/// and where, for a 400 or for `review`'s exit 2.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is empty")]
    Empty,
    #[error("the body is not an AdmissionReview: {}{message}", if path == "." { String::new() } else { format!("{path}: ") })]
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
    #[error("request.{field}: {source}")]
    Object {
        field: &'static str,
        #[source]
        source: WorkloadError,
    },
}

/// The decision and the facts an audit line and the metrics need.
#[derive(Debug)]
pub struct Reviewed {
    /// The response body, ending in a newline.
    pub body: Vec<u8>,
    pub verdict: Verdict,
    pub uid: String,
    pub operation: &'static str,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub user: String,
    pub groups: Vec<String>,
    pub dry_run: bool,
}

/// Reads one AdmissionReview and answers it as `endpoint` would.
pub fn review(
    body: &[u8],
    endpoint: Endpoint,
    policies: &PolicySet,
    cluster: &dyn ClusterView,
    now: jiff::Timestamp,
) -> Result<Reviewed, ReviewError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ReviewError::Empty);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: AdmissionReview<DynamicObject> = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| ReviewError::Malformed {
            path: e.path().to_string(),
            message: e.into_inner().to_string(),
        })?;
    de.end().map_err(|e| ReviewError::Malformed {
        path: ".".into(),
        message: e.to_string(),
    })?;
    if parsed.types.api_version != API_VERSION {
        return Err(ReviewError::ApiVersion(parsed.types.api_version));
    }
    if parsed.types.kind != KIND {
        return Err(ReviewError::Kind(parsed.types.kind));
    }
    let request: AdmissionRequest<DynamicObject> =
        parsed.try_into().map_err(|_| ReviewError::NoRequest)?;
    let change = change_of(&request)?;
    let verdict = match &change {
        Some(change) => decide::decide(change, policies, cluster, now),
        None => Verdict {
            allowed: true,
            ..Default::default()
        },
    };
    let body = render(respond(&request, &verdict, endpoint));
    Ok(Reviewed {
        body,
        uid: request.uid.clone(),
        operation: operation_name(&request.operation),
        kind: request.kind.kind.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        name: request.name.clone(),
        user: request.user_info.username.clone().unwrap_or_default(),
        groups: request.user_info.groups.clone().unwrap_or_default(),
        dry_run: request.dry_run,
        verdict,
    })
}

fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// The change a request asks for; `None` for anything upgrade-guard leaves
/// alone (other kinds, other subresources, CONNECT).
fn change_of(req: &AdmissionRequest<DynamicObject>) -> Result<Option<Change>, ReviewError> {
    let operation = operation_name(&req.operation);
    if req.resource.group != "apps" || req.resource.version != "v1" {
        return Ok(None);
    }
    let Some(kind) = WorkloadKind::from_resource(&req.resource.resource) else {
        return Ok(None);
    };
    match req.sub_resource.as_deref() {
        None | Some("") => {}
        Some("scale") => {
            let replicas = |o: &Option<DynamicObject>| {
                o.as_ref()
                    .and_then(|o| o.data.pointer("/spec/replicas"))
                    .and_then(|v| v.as_i64())
                    .and_then(|n| i32::try_from(n).ok())
            };
            let (Some(from), Some(to)) = (replicas(&req.old_object), replicas(&req.object)) else {
                return Ok(None);
            };
            return Ok(Some(Change::Scale {
                kind,
                namespace: req.namespace.clone().unwrap_or_else(|| "default".into()),
                name: req.name.clone(),
                from,
                to,
            }));
        }
        Some(_) => return Ok(None),
    }
    let workload =
        |field: &'static str, o: &Option<DynamicObject>| -> Result<Workload, ReviewError> {
            let o = o
                .as_ref()
                .ok_or(ReviewError::MissingObject { field, operation })?;
            let value = serde_json::to_value(o).map_err(|e| ReviewError::Malformed {
                path: format!("request.{field}"),
                message: e.to_string(),
            })?;
            match Workload::from_value(value) {
                Ok(Some(w)) => Ok(w),
                // The resource says apps/v1 workload; the object must agree.
                Ok(None) => Err(ReviewError::Malformed {
                    path: format!("request.{field}"),
                    message: format!("expected an apps/v1 {kind}"),
                }),
                Err(source) => Err(ReviewError::Object { field, source }),
            }
        };
    Ok(Some(match req.operation {
        Operation::Create => Change::Create(workload("object", &req.object)?),
        Operation::Update => Change::Update {
            old: workload("oldObject", &req.old_object)?,
            new: workload("object", &req.object)?,
        },
        Operation::Delete => Change::Delete(workload("oldObject", &req.old_object)?),
        Operation::Connect => return Ok(None),
    }))
}

fn respond(
    req: &AdmissionRequest<DynamicObject>,
    verdict: &Verdict,
    endpoint: Endpoint,
) -> AdmissionResponse {
    let mut resp = AdmissionResponse::from(req);
    let warnings = match endpoint {
        Endpoint::Validate => {
            if !verdict.allowed {
                resp = resp.deny(&verdict.reason);
                // kubectl prints status.message; 403 makes it "Forbidden".
                resp.result.code = 403;
                resp.result.status = Some(StatusSummary::Failure);
            }
            resp.audit_annotations = verdict.audit_annotations().into_iter().collect();
            &verdict.warnings
        }
        Endpoint::Mutate => {
            if verdict.allowed && !verdict.patch.is_empty() {
                let patch = json_patch::Patch(verdict.patch.clone());
                // A patch of plain JSON values always serializes.
                if let Ok(with_patch) = resp.clone().with_patch(patch) {
                    resp = with_patch;
                }
            }
            &verdict.patch_warnings
        }
    };
    if !warnings.is_empty() {
        resp.warnings = Some(warnings.clone());
    }
    resp
}

/// Serialized through a `serde_json::Value`, whose maps are sorted, so the
/// same answer is the same bytes in every process (audit annotations are a
/// `HashMap` in kube-core).
pub fn render(resp: AdmissionResponse) -> Vec<u8> {
    let review = resp.into_review();
    let mut value = serde_json::to_value(&review).unwrap_or_default();
    // kube-core serializes the patch bytes as a number array; the API server
    // reads a Go []byte, which is base64 (kube-rs issue #1781).
    if let Some(patch) = value.pointer_mut("/response/patch") {
        let bytes: Vec<u8> = serde_json::from_value(patch.take()).unwrap_or_default();
        *patch = serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    let mut body = serde_json::to_vec(&value).unwrap_or_default();
    body.push(b'\n');
    body
}
