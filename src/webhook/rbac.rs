//! Whether a user may use an override, asked of Kubernetes RBAC with a
//! SubjectAccessReview: the verb `force` (upgrade-guard's own) on
//! `upgradepolicies.upgradeguard.io` in the workload's namespace. Thin:
//! the decision takes the answer as [`crate::decide::Overrides`].

use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// The verb an override needs; the ClusterRole `upgrade-guard-force` grants it.
pub const FORCE_VERB: &str = "force";

#[derive(Clone)]
pub struct Rbac {
    client: kube::Client,
}

impl Rbac {
    pub fn new(client: kube::Client) -> Self {
        Rbac { client }
    }

    /// The SubjectAccessReview for `user` forcing in `namespace`.
    pub fn review_for(user: &UserInfo, namespace: &str) -> SubjectAccessReview {
        SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                uid: user.uid.clone(),
                groups: user.groups.clone(),
                extra: user.extra.clone(),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.to_string()),
                    verb: Some(FORCE_VERB.into()),
                    group: Some("upgradeguard.io".into()),
                    resource: Some("upgradepolicies".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// `true` only when the API server says allowed; an error is a refusal
    /// (an override is never honoured unchecked in a cluster).
    pub async fn may_force(&self, user: &UserInfo, namespace: &str) -> bool {
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        match api
            .create(&PostParams::default(), &Self::review_for(user, namespace))
            .await
        {
            Ok(answer) => answer.status.is_some_and(|s| s.allowed),
            Err(e) => {
                tracing::warn!(error = %e, "SubjectAccessReview failed: the override is refused");
                false
            }
        }
    }
}
