//! AdmissionReview in, AdmissionReview out: the translation between the API
//! server's wire format and [`decide`]. `upgrade-guard review` and the server
//! both call [`review`], so they return the same bytes.

use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::Operation;

use super::full_read::{ClaimsSpec, DataResource, Read, data_resource, values_over_cap};
use super::wire::{Asked, Endpoint, operation_name, render, workload_kind};
use crate::decide::{self, Change, ClusterView, Overrides, Requester, Verdict};
use crate::policy::PolicySet;
use crate::workload::WorkloadKind;

pub use super::full_read::MAX_VALUES;
pub use super::wire::ReviewError;

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
    /// Answered without building its objects whole (a workload UPDATE, a
    /// pod without a claim), rather than by [`review_in_full`].
    pub quick: bool,
}

/// What the server knows about who may do what: its own identity, and
/// whether RBAC allowed an override to this request's user.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// upgrade-guard's own user name (`serve --self-user`).
    pub self_user: Option<String>,
    pub overrides: Overrides,
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
        Some(reviewed) => Ok(Reviewed {
            quick: true,
            ..reviewed
        }),
        None => ctx.review_in_full(body),
    }
}

/// [`review`] with each object read whole into its type, never the quick
/// way: the reference [`review`] is held to (`tests/fast_path.rs`), and
/// `upgrade-guard review --full`.
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

struct Context<'a> {
    endpoint: Endpoint,
    policies: &'a PolicySet,
    cluster: &'a dyn ClusterView,
    now: jiff::Timestamp,
    caller: &'a Caller,
    /// The body's JSON values if over the cap, counted at most once.
    over_cap: std::cell::OnceCell<Option<usize>>,
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
            over_cap: Default::default(),
        }
    }

    fn over_cap(&self, body: &[u8]) -> Option<usize> {
        *self.over_cap.get_or_init(|| values_over_cap(body))
    }

    /// The requests read without building whole objects: a workload UPDATE
    /// ([`super::workload_update`]) and a pod that mounts no claim. `None`: take the
    /// full way.
    fn quick(&self, body: &[u8]) -> Option<Reviewed> {
        if self.over_cap(body).is_some() {
            return None;
        }
        let mut request = super::request::read(body, self.policies)?;
        if request.on_subresource() {
            return None;
        }
        let (old, new) = (request.old_object.take(), request.object.take());
        if let Some(kind) = workload_kind(&request.resource) {
            // Only UPDATE: no shipped webhook configuration sends DELETE,
            // and anything else goes the full way.
            if request.operation != Operation::Update {
                return None;
            }
            let (old, new) = (
                old?.workload(kind, self.policies)?,
                new?.workload(kind, self.policies)?,
            );
            let read = super::workload_update::read(old, new, kind, self.policies)?;
            return Some(self.finish(request.asked(read.object_uid), read.change));
        }
        match data_resource(&request.resource, "") {
            Some(DataResource::Pod) => {
                let old_uid = match old {
                    Some(old) => pod_without_claims(old.text()?)?.1,
                    None => None,
                };
                let (mounts_a_claim, _) = pod_without_claims(new?.text()?)?;
                if mounts_a_claim {
                    return None;
                }
                Some(self.finish(request.asked(old_uid), None))
            }
            _ => None,
        }
    }

    /// Every request, each object read into its type: the reference the
    /// quick way is held to, and the one that names what is wrong.
    fn review_in_full(&self, body: &[u8]) -> Result<Reviewed, ReviewError> {
        let read = super::full_read::read(body, self.policies, &|| self.over_cap(body))?;
        Ok(match read {
            Read::Change(asked, change) => self.finish(asked, change),
            Read::Refused(asked, verdict) => self.finish_with(asked, verdict),
            Read::Pod { asked, old, new } => {
                let verdict =
                    decide::data::judge_pod(old.as_deref(), &new, self.policies, self.cluster);
                self.finish_with(asked, verdict)
            }
            Read::Claim { asked, old, new } => {
                let verdict =
                    decide::data::judge_claim(old.as_deref(), &new, &self.requester(&asked));
                self.finish_with(asked, verdict)
            }
        })
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
            quick: false,
            uid: asked.uid,
            verdict,
        }
    }
}

/// Of a pod's own text, whether it mounts a claim, and its UID; `None` for
/// what the full read would refuse (another kind, unreadable metadata).
fn pod_without_claims(text: super::json::Text) -> Option<(bool, Option<String>)> {
    // An object, as the full read's claim check reads it (serde's derived
    // readers would take an array of the fields too).
    if !text.get().starts_with('{') {
        return None;
    }
    let (metadata, spec) = super::objects::metadata_and::<Pod, ClaimsSpec>(text.get()).ok()?;
    Some((spec.is_some_and(|s| s.mounts_a_claim()), metadata.uid))
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::full_read::json_values;
    use super::super::wire::{API_VERSION, KIND};
    use super::*;
    use crate::decide::NoCluster;
    use base64::Engine;
    use kube::core::{DynamicObject, admission::AdmissionReview};
    use serde_json::{Value, json};

    const CREATE: &str = include_str!("../../tests/data/apiserver/sts-create-apply.json");

    /// The example policy that governs the recorded `db` StatefulSet.
    pub(in super::super) fn policies() -> PolicySet {
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
}
