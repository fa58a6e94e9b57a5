//! AdmissionReview in, AdmissionReview out: the translation between the API
//! server's wire format and [`decide`]. `upgrade-guard review` and the server
//! both call [`review`], so they return the same bytes.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use kube::core::{DynamicObject, GroupVersionResource, Resource};
use serde::de::DeserializeOwned;

use super::lean::{Lean, Parts, Skim};
use super::wire::{API_VERSION, Asked, Endpoint, KIND, render, workload_kind};
use k8s_openapi::api::authentication::v1::UserInfo;

use crate::decide::{self, Change, ClusterView, Overrides, Requester, Verdict};
use crate::policy::PolicySet;
use crate::workload::{Workload, WorkloadKind};

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

/// The decision and the facts an audit line and the metrics need.
#[derive(Debug, PartialEq)]
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
    /// Who asked, as the API server authenticated them.
    pub user_info: UserInfo,
    pub dry_run: bool,
    /// The workload the request is about (a `scale` request's too).
    pub workload: Option<WorkloadKind>,
    /// Its UID, when it exists already: what `kubectl describe` finds
    /// its Events by.
    pub object_uid: Option<String>,
}

/// What the server knows about who may do what: its own identity, and
/// whether RBAC allowed an override to this request's user.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// upgrade-guard's own user name (`serve --self-user`).
    pub self_user: Option<String>,
    pub overrides: Overrides,
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

/// Reads one AdmissionReview and answers it as `endpoint` would: the quick
/// way when it can vouch for the request, else in full.
pub fn review(
    body: &[u8],
    endpoint: Endpoint,
    policies: &PolicySet,
    cluster: &dyn ClusterView,
    now: jiff::Timestamp,
    caller: &Caller,
) -> Result<Reviewed, ReviewError> {
    let ctx = Context::new(endpoint, policies, cluster, now, caller);
    match ctx.quick(body) {
        Some(reviewed) => Ok(reviewed),
        None => ctx.review_in_full(body),
    }
}

/// [`review`] the quick way alone ([`super::fast`]): `None` when it cannot
/// vouch for the request. With [`review_in_full`], for the test that holds
/// the two to the same answers.
pub fn review_quick(
    body: &[u8],
    endpoint: Endpoint,
    policies: &PolicySet,
    cluster: &dyn ClusterView,
    now: jiff::Timestamp,
    caller: &Caller,
) -> Option<Reviewed> {
    Context::new(endpoint, policies, cluster, now, caller).quick(body)
}

/// [`review`] with each object read whole into its type: the reference.
pub fn review_in_full(
    body: &[u8],
    endpoint: Endpoint,
    policies: &PolicySet,
    cluster: &dyn ClusterView,
    now: jiff::Timestamp,
    caller: &Caller,
) -> Result<Reviewed, ReviewError> {
    Context::new(endpoint, policies, cluster, now, caller).review_in_full(body)
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
            path: crate::echo::bounded(&e.path().to_string()),
            message: crate::echo::bounded_message(&e.into_inner().to_string()),
        },
        // Valid up to trailing bytes: the plain error says where.
        Ok(_) => ReviewError::Malformed {
            path: ".".into(),
            message: crate::echo::bounded_message(&plain.to_string()),
        },
    }
}

struct Context<'a> {
    endpoint: Endpoint,
    policies: &'a PolicySet,
    cluster: &'a dyn ClusterView,
    now: jiff::Timestamp,
    caller: &'a Caller,
    /// The body's JSON values, counted at most once per request.
    values: std::cell::OnceCell<usize>,
}

/// A governed request's objects are parsed into their full types, up to
/// ~1.1 kB per JSON value for the smallest (`{}` entries in an env list:
/// 25,000 values in a 40 kB body peaked at +23 to +27 MiB, `cargo bench
/// --bench abuse`), so the values a governed request may carry are capped. Real
/// workloads carry a few hundred to a few thousand (the recorded ones about
/// 400, managedFields included). A request no policy selects is answered
/// from its metadata and never counted.
pub const MAX_VALUES: usize = 25_000;

/// Counts the JSON values of a body, roughly: the `{`, `[`, `,` and `:`
/// outside strings. One linear pass, no allocation.
fn json_values(body: &[u8]) -> usize {
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

impl<'a> Context<'a> {
    fn new(
        endpoint: Endpoint,
        policies: &'a PolicySet,
        cluster: &'a dyn ClusterView,
        now: jiff::Timestamp,
        caller: &'a Caller,
    ) -> Self {
        Context {
            endpoint,
            policies,
            cluster,
            now,
            caller,
            values: Default::default(),
        }
    }

    fn values(&self, body: &[u8]) -> usize {
        *self.values.get_or_init(|| json_values(body))
    }

    /// The requests read without building whole objects: a workload UPDATE
    /// ([`super::fast`]) and a pod that mounts no claim. `None`: take the
    /// full way.
    fn quick(&self, body: &[u8]) -> Option<Reviewed> {
        // Never more values than bytes: a short body is under the cap unread.
        if body.len() > MAX_VALUES && self.values(body) > MAX_VALUES {
            return None;
        }
        let request = super::wire::envelope(body)?;
        if request.on_subresource() {
            return None;
        }
        if let Some(kind) = workload_kind(&request.resource) {
            let read = super::fast::read(&request, kind, self.policies)?;
            return Some(self.finish(request.asked(read.object_uid), read.change));
        }
        match data_resource(&request.resource, "") {
            Some(DataResource::Pod) => {
                let (old, new) = (request.old_object, request.object?);
                let old_uid = match old {
                    Some(old) => Some(pod_without_claims(old)?.1),
                    None => None,
                };
                let (mounts_a_claim, _) = pod_without_claims(new)?;
                if mounts_a_claim {
                    return None;
                }
                Some(self.finish(request.asked(old_uid.flatten()), None))
            }
            _ => None,
        }
    }

    /// Every request, each object read into its type: the reference the
    /// quick way is held to, and the one that names what is wrong.
    fn review_in_full(&self, body: &[u8]) -> Result<Reviewed, ReviewError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ReviewError::Empty);
        }
        let peek: Peek =
            serde_json::from_slice(body).map_err(|e| explain::<DynamicObject>(body, e))?;
        if peek.api_version != API_VERSION {
            return Err(ReviewError::ApiVersion(crate::echo::bounded(
                &peek.api_version,
            )));
        }
        if peek.kind != KIND {
            return Err(ReviewError::Kind(crate::echo::bounded(&peek.kind)));
        }
        let request = peek.request.ok_or(ReviewError::NoRequest)?;
        let kind = workload_kind(&request.resource);
        let sub_resource = request.sub_resource.as_deref().unwrap_or("");
        if let Some(data) = data_resource(&request.resource, sub_resource) {
            return self.answer_data(body, data);
        }
        match (kind, sub_resource) {
            (Some(WorkloadKind::StatefulSet), "") => self.answer::<StatefulSet>(body),
            (Some(WorkloadKind::Deployment), "") => self.answer::<Deployment>(body),
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
                Ok(self.finish((&request).into(), change))
            }
            _ => {
                let request = parse::<DynamicObject>(body)?;
                Ok(self.finish((&request).into(), None))
            }
        }
    }

    /// A request on a workload itself: its objects become the change. Read
    /// first as far as their metadata; parsed whole only when a policy
    /// selects one of them or the refresh record changes.
    fn answer<K>(&self, body: &[u8]) -> Result<Reviewed, ReviewError>
    where
        K: Parts
            + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
        Workload: From<K>,
    {
        let mut skimmed = parse::<Skim<K>>(body)?;
        // Read before the objects are taken: the old one's UID is in it.
        let asked: Asked = (&skimmed).into();
        let change = take_change(&mut skimmed, |o| Workload::from(o.0))?;
        if change.is_none_or(|c| decide::is_ungoverned(&c, self.policies)) {
            return Ok(self.finish(asked, None));
        }
        let values = self.values(body);
        if values > MAX_VALUES {
            let request = &skimmed;
            let refused = Verdict {
                allowed: false,
                reason: format!(
                    "{} {}/{}: the request carries about {values} JSON values; upgrade-guard reads a governed workload of at most {MAX_VALUES}, so that no one request can exhaust its memory (move long env lists into a ConfigMap with envFrom)",
                    crate::echo::bounded(&request.kind.kind),
                    crate::echo::bounded(request.namespace.as_deref().unwrap_or_default()),
                    crate::echo::bounded(&request.name),
                ),
                ..Default::default()
            };
            return Ok(self.finish_with(asked, refused));
        }
        let mut request = parse::<Lean<K>>(body)?;
        let asked: Asked = (&request).into();
        let change = take_change(&mut request, |o| Workload::from(o.0))?;
        Ok(self.finish(asked, change))
    }

    /// A pod or a claim: judged by the data guard.
    fn answer_data(&self, body: &[u8], data: DataResource) -> Result<Reviewed, ReviewError> {
        match data {
            DataResource::Pod => {
                // Most pods mount no claim: answered from their metadata,
                // their specs skipped unread.
                let claims: ClaimsOnly =
                    serde_json::from_slice(body).map_err(|e| explain::<DynamicObject>(body, e))?;
                if !claims.mounts_a_claim() {
                    let request = parse::<Skim<Pod>>(body)?;
                    return Ok(self.finish(Asked::from(&request), None));
                }
                let request = parse::<Lean<Pod>>(body)?;
                let verdict = match (&request.operation, &request.object) {
                    (Operation::Create | Operation::Update, Some(new)) => decide::data::judge_pod(
                        request.old_object.as_ref().map(|o| &o.0),
                        &new.0,
                        self.policies,
                        self.cluster,
                    ),
                    _ => Verdict {
                        allowed: true,
                        ..Default::default()
                    },
                };
                Ok(self.finish_with(Asked::from(&request), verdict))
            }
            DataResource::Claim => {
                let request = parse::<PersistentVolumeClaim>(body)?;
                let asked = Asked::from(&request);
                let verdict = match (&request.operation, &request.object) {
                    (Operation::Create | Operation::Update, Some(new)) => {
                        decide::data::judge_claim(
                            request.old_object.as_ref(),
                            new,
                            &self.requester(&asked),
                        )
                    }
                    _ => Verdict {
                        allowed: true,
                        ..Default::default()
                    },
                };
                Ok(self.finish_with(asked, verdict))
            }
        }
    }

    fn requester(&self, asked: &Asked) -> Requester {
        Requester {
            is_self: self.caller.self_user.is_some()
                && asked.user_info.username == self.caller.self_user,
            overrides: self.caller.overrides.clone(),
        }
    }

    fn finish(&self, asked: Asked, change: Option<Change>) -> Reviewed {
        let requester = self.requester(&asked);
        let verdict = match &change {
            Some(change) => {
                decide::decide_as(change, self.policies, self.cluster, self.now, &requester)
            }
            None => Verdict {
                allowed: true,
                ..Default::default()
            },
        };
        self.finish_with(asked, verdict)
    }

    fn finish_with(&self, asked: Asked, verdict: Verdict) -> Reviewed {
        Reviewed {
            body: render(&asked.uid, &verdict, self.endpoint),
            operation: operation_name(&asked.operation),
            kind: asked.kind,
            namespace: asked.namespace.unwrap_or_default(),
            name: asked.name,
            user: asked.user_info.username.clone().unwrap_or_default(),
            groups: asked.user_info.groups.clone().unwrap_or_default(),
            user_info: asked.user_info,
            dry_run: asked.dry_run,
            workload: asked.workload,
            object_uid: asked.object_uid,
            uid: asked.uid,
            verdict,
        }
    }
}

/// The core resources the data guard reviews.
#[derive(Clone, Copy)]
enum DataResource {
    /// A pod, or its ephemeral containers.
    Pod,
    Claim,
}

fn data_resource(resource: &GroupVersionResource, sub_resource: &str) -> Option<DataResource> {
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
struct ClaimsSpec {
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
    fn mounts_a_claim(&self) -> bool {
        self.volumes
            .iter()
            .flatten()
            .any(|v| v.persistent_volume_claim.is_some())
    }
}

/// Of a pod's own text, whether it mounts a claim, and its UID; `None` for
/// what the full read would refuse (another kind, unreadable metadata).
fn pod_without_claims(text: &serde_json::value::RawValue) -> Option<(bool, Option<String>)> {
    let (metadata, spec) = super::lean::metadata_and::<Pod, ClaimsSpec>(text.get()).ok()?;
    Some((spec.is_some_and(|s| s.mounts_a_claim()), metadata.uid))
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
        Operation::Create => Some(Change::Create(take("object")?)),
        Operation::Update => {
            let new = take("object")?;
            Some(Change::Update {
                old: take("oldObject")?,
                new,
            })
        }
        Operation::Delete => Some(Change::Delete(take("oldObject")?)),
        Operation::Connect => None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::NoCluster;
    use base64::Engine;
    use serde_json::{Value, json};

    const CREATE: &str = include_str!("../../tests/data/apiserver/sts-create-apply.json");

    fn policies() -> PolicySet {
        let text = include_str!("../../policies/semver-db.yaml");
        PolicySet::new(PolicySet::parse(text, "semver-db.yaml").unwrap()).unwrap()
    }

    /// The recorded CREATE with its object edited by `edit`.
    fn create(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut review: Value = serde_json::from_str(CREATE).unwrap();
        edit(&mut review["request"]["object"]);
        serde_json::to_vec(&review).unwrap()
    }

    fn run(body: &[u8], endpoint: Endpoint) -> Result<Reviewed, ReviewError> {
        let now = "2026-11-22T00:00:00Z".parse().unwrap();
        review(
            body,
            endpoint,
            &policies(),
            &NoCluster,
            now,
            &Caller::default(),
        )
    }

    #[test]
    fn a_request_no_policy_selects_is_answered_from_its_metadata() {
        // A spec that does not even parse is never read when nothing selects it.
        let unread = create(|o| {
            o["metadata"]["labels"] = json!({"app.kubernetes.io/name": "other"});
            o["spec"]["replicas"] = json!("three");
        });
        let reviewed = run(&unread, Endpoint::Validate).unwrap();
        assert!(reviewed.verdict.allowed);
        assert_eq!(
            reviewed.verdict,
            Verdict {
                allowed: true,
                ..Default::default()
            }
        );
        // Selected, the same spec is read and its fault named.
        let read = create(|o| o["spec"]["replicas"] = json!("three"));
        let err = run(&read, Endpoint::Validate).unwrap_err().to_string();
        assert!(err.starts_with("the body is not an AdmissionReview: request.object.spec.replicas: invalid type: string \"three\""), "{err}");
        // The wrong kind is refused either way: the metadata read checks it.
        let wrong = create(|o| {
            o["metadata"]["labels"] = json!({"app.kubernetes.io/name": "other"});
            o["kind"] = json!("Deployment");
        });
        let err = run(&wrong, Endpoint::Validate).unwrap_err().to_string();
        assert!(
            err.contains("expected apps/v1 StatefulSet, found apps/v1 Deployment"),
            "{err}"
        );
    }

    #[test]
    fn a_governed_request_past_the_value_cap_is_refused_unread() {
        let env = vec![json!({"name": "a"}); 30_000];
        let dense = create(|o| o["spec"]["template"]["spec"]["containers"][0]["env"] = json!(env));
        let refused = run(&dense, Endpoint::Validate).unwrap();
        assert!(!refused.verdict.allowed);
        assert_eq!(
            refused.verdict.reason,
            format!(
                "StatefulSet shop/db: the request carries about {} JSON values; upgrade-guard reads a governed workload of at most 25000, so that no one request can exhaust its memory (move long env lists into a ConfigMap with envFrom)",
                json_values(&dense)
            )
        );
        let response: Value = serde_json::from_slice(&refused.body).unwrap();
        assert_eq!(response["response"]["allowed"], false);
        // /mutate never refuses: no patch, and /validate says why.
        let mutated = run(&dense, Endpoint::Mutate).unwrap();
        let response: Value = serde_json::from_slice(&mutated.body).unwrap();
        assert_eq!(response["response"]["allowed"], true);
        assert_eq!(response["response"].get("patch"), None);
        // What the sender wrote is echoed bounded.
        let mut long: Value = serde_json::from_slice(&dense).unwrap();
        long["request"]["kind"]["kind"] = json!("K".repeat(100_000));
        long["request"]["namespace"] = json!("n".repeat(100_000));
        let refused = run(&serde_json::to_vec(&long).unwrap(), Endpoint::Validate).unwrap();
        assert!(!refused.verdict.allowed);
        assert!(
            refused.verdict.reason.len() < 1_000,
            "{}",
            refused.verdict.reason.len()
        );
        // Unselected, the same object is allowed from its metadata.
        let unselected = create(|o| {
            o["spec"]["template"]["spec"]["containers"][0]["env"] = json!(env);
            o["metadata"]["labels"] = json!({});
        });
        assert!(
            run(&unselected, Endpoint::Validate)
                .unwrap()
                .verdict
                .allowed
        );
        // Below the cap, the governed object is judged as usual.
        let small =
            create(|o| o["spec"]["template"]["spec"]["containers"][0]["env"] = json!(env[..100]));
        let judged = run(&small, Endpoint::Validate).unwrap();
        assert!(judged.verdict.allowed);
        assert_eq!(judged.verdict.policy.as_deref(), Some("semver-db"));
    }

    #[test]
    fn the_answer_is_what_kubes_admission_types_and_the_api_server_read() {
        let refused = Verdict {
            allowed: false,
            rule: Some(decide::Rule::SkipVersion),
            reason: "StatefulSet shop/db: 1.7.0 → 1.9.0 skips 1.8".into(),
            from: Some("1.7.0".into()),
            to: Some("1.9.0".into()),
            warnings: vec!["w".into()],
            ..Default::default()
        };
        let body = render("u-1", &refused, Endpoint::Validate);
        assert!(body.ends_with(b"}\n"));
        let review: AdmissionReview<DynamicObject> = serde_json::from_slice(&body).unwrap();
        assert_eq!(review.types.api_version, API_VERSION);
        assert_eq!(review.types.kind, KIND);
        let response = review.response.unwrap();
        assert_eq!(response.uid, "u-1");
        assert!(!response.allowed);
        assert_eq!(response.result.code, 403);
        assert_eq!(response.result.message, refused.reason);
        assert_eq!(response.warnings, Some(vec!["w".to_string()]));
        assert_eq!(
            response.audit_annotations,
            refused.audit_annotations().into_iter().collect()
        );
        // /mutate allows, with the patch as base64 (a Go []byte).
        let patch: Vec<json_patch::PatchOperation> =
            serde_json::from_value(json!([{"op": "add", "path": "/spec/replicas", "value": 3}]))
                .unwrap();
        let starts = Verdict {
            allowed: true,
            patch: patch.clone(),
            patch_warnings: vec!["p".into()],
            ..Default::default()
        };
        let answer: Value =
            serde_json::from_slice(&render("u-2", &starts, Endpoint::Mutate)).unwrap();
        let text = answer["response"]["patch"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Vec<json_patch::PatchOperation>>(&bytes).unwrap(),
            patch
        );
        assert_eq!(
            answer["response"],
            json!({"allowed": true, "patch": text, "patchType": "JSONPatch", "status": {}, "uid": "u-2", "warnings": ["p"]})
        );
        // A refusal is never a patch, and /mutate never refuses.
        let answer: Value =
            serde_json::from_slice(&render("u-3", &refused, Endpoint::Mutate)).unwrap();
        assert_eq!(
            answer["response"],
            json!({"allowed": true, "status": {}, "uid": "u-3"})
        );
    }

    #[test]
    fn values_are_counted_outside_strings_only() {
        assert_eq!(json_values(br#"{"a":[1,2,{}]}"#), 6);
        assert_eq!(json_values(br#"{"a":"{[,:]} \" {"}"#), 2);
        assert_eq!(json_values(br#""\\" "#), 0);
    }
}
