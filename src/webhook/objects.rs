//! Workload and pod objects read from an AdmissionReview without `managedFields`.
//! The API server sends them with every object; they are often half its
//! bytes, parse into a tree of maps, and no decision reads them. Skipping
//! them cut the server's CPU per review by a fifth (`cargo bench --bench load`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::de::{DeserializeOwned, Error, IgnoredAny};
use serde::{Deserialize, Deserializer};

/// A workload read without its managedFields.
#[derive(Debug, Clone)]
pub struct Lean<K>(pub K);

/// How a kind is put back together from the parts read.
pub trait Parts: k8s_openapi::Resource + Sized {
    type Spec: DeserializeOwned;
    type Status: DeserializeOwned;
    fn assemble(
        metadata: ObjectMeta,
        spec: Option<Self::Spec>,
        status: Option<Self::Status>,
    ) -> Self;
}

impl Parts for StatefulSet {
    type Spec = k8s_openapi::api::apps::v1::StatefulSetSpec;
    type Status = k8s_openapi::api::apps::v1::StatefulSetStatus;
    fn assemble(
        metadata: ObjectMeta,
        spec: Option<Self::Spec>,
        status: Option<Self::Status>,
    ) -> Self {
        StatefulSet {
            metadata,
            spec,
            status,
        }
    }
}

impl Parts for Deployment {
    type Spec = k8s_openapi::api::apps::v1::DeploymentSpec;
    type Status = k8s_openapi::api::apps::v1::DeploymentStatus;
    fn assemble(
        metadata: ObjectMeta,
        spec: Option<Self::Spec>,
        status: Option<Self::Status>,
    ) -> Self {
        Deployment {
            metadata,
            spec,
            status,
        }
    }
}

impl Parts for Pod {
    type Spec = k8s_openapi::api::core::v1::PodSpec;
    type Status = k8s_openapi::api::core::v1::PodStatus;
    fn assemble(
        metadata: ObjectMeta,
        spec: Option<Self::Spec>,
        status: Option<Self::Status>,
    ) -> Self {
        Pod {
            metadata,
            spec,
            status,
        }
    }
}

/// An object as sent: its spec and status read as `S` and `T`
/// ([`IgnoredAny`] to skip them).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw<S, T> {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Meta,
    #[serde(default = "none")]
    spec: Option<S>,
    #[serde(default = "none")]
    status: Option<T>,
}

fn none<T>() -> Option<T> {
    None
}

/// ObjectMeta less managedFields, which serde skips as an unknown field; its
/// annotations read as `A`.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Meta<A = BTreeMap<String, String>> {
    annotations: Option<A>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

impl<'de, K: Parts> Deserialize<'de> for Lean<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Raw::<K::Spec, K::Status>::deserialize(deserializer)?;
        let metadata = checked::<K, D::Error, _>(raw.api_version, raw.kind, raw.metadata)?;
        Ok(Lean(K::assemble(metadata, raw.spec, raw.status)))
    }
}

/// A workload read as far as its metadata: enough to tell whether any policy
/// selects it. Its spec and status are skipped unread (serde allocates
/// nothing for them), so a request no policy selects costs next to nothing.
#[derive(Debug, Clone)]
pub struct Skim<K>(pub K);

impl<'de, K: Parts> Deserialize<'de> for Skim<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Raw::<IgnoredAny, IgnoredAny>::deserialize(deserializer)?;
        let metadata = checked::<K, D::Error, _>(raw.api_version, raw.kind, raw.metadata)?;
        Ok(Skim(K::assemble(metadata, None, None)))
    }
}

impl<A> Meta<A> {
    pub(super) fn annotations(&self) -> Option<&A> {
        self.annotations.as_ref()
    }

    pub(super) fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub(super) fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.labels.as_ref()
    }
}

/// An object of kind `K` read from its own text as far as its metadata,
/// and its spec as `S`; its status skipped unread.
pub(super) fn metadata_and<K: Parts, S: DeserializeOwned>(
    text: &str,
) -> Result<(ObjectMeta, Option<S>), serde_json::Error> {
    let raw: Raw<S, IgnoredAny> = super::json::from_str(text)?;
    let metadata = checked::<K, serde_json::Error, _>(raw.api_version, raw.kind, raw.metadata)?;
    Ok((metadata, raw.spec))
}

/// The object must be the kind its resource says.
pub(super) fn checked<K: Parts, E: Error, A: Into<BTreeMap<String, String>>>(
    api_version: Option<String>,
    kind: Option<String>,
    m: Meta<A>,
) -> Result<ObjectMeta, E> {
    if kind.as_deref().is_some_and(|k| k != K::KIND)
        || api_version.as_deref().is_some_and(|v| v != K::API_VERSION)
    {
        return Err(E::custom(format!(
            "expected {} {}, found {} {}",
            K::API_VERSION,
            K::KIND,
            api_version.unwrap_or_default(),
            kind.unwrap_or_default()
        )));
    }
    Ok(ObjectMeta {
        annotations: m.annotations.map(Into::into),
        creation_timestamp: m.creation_timestamp,
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        deletion_timestamp: m.deletion_timestamp,
        finalizers: m.finalizers,
        generate_name: m.generate_name,
        generation: m.generation,
        labels: m.labels,
        managed_fields: None,
        name: m.name,
        namespace: m.namespace,
        owner_references: m.owner_references,
        resource_version: m.resource_version,
        self_link: m.self_link,
        uid: m.uid,
    })
}

/// kube's admission types need a `Resource`: the one of the kind inside.
macro_rules! resource_of_inner {
    ($wrapper:ident) => {
        impl<K: Parts> k8s_openapi::Resource for $wrapper<K> {
            const API_VERSION: &'static str = K::API_VERSION;
            const GROUP: &'static str = K::GROUP;
            const KIND: &'static str = K::KIND;
            const VERSION: &'static str = K::VERSION;
            const URL_PATH_SEGMENT: &'static str = K::URL_PATH_SEGMENT;
            type Scope = K::Scope;
        }

        impl<K: Parts + k8s_openapi::Metadata<Ty = ObjectMeta>> k8s_openapi::Metadata
            for $wrapper<K>
        {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                self.0.metadata()
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                self.0.metadata_mut()
            }
        }
    };
}
resource_of_inner!(Lean);
resource_of_inner!(Skim);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_lean_read_equals_the_full_read_less_managed_fields() {
        let object = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "shop", "uid": "u", "generation": 3,
                "labels": {"a": "b"}, "annotations": {"c": "d"}, "resourceVersion": "9",
                "creationTimestamp": "2026-11-21T19:33:22Z", "finalizers": ["f"],
                "managedFields": [{"manager": "kubectl", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"replicas": 3, "serviceName": "db", "selector": {}, "template": {}},
            "status": {"replicas": 1, "currentRevision": "x"},
        });
        let Lean(lean) = serde_json::from_value::<Lean<StatefulSet>>(object.clone()).unwrap();
        let mut full: StatefulSet = serde_json::from_value(object).unwrap();
        assert!(full.metadata.managed_fields.take().is_some());
        assert_eq!(lean, full);
    }

    #[test]
    fn another_kind_is_refused() {
        let wrong =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}});
        let err = serde_json::from_value::<Lean<StatefulSet>>(wrong)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "expected apps/v1 StatefulSet, found apps/v1 Deployment"
        );
        let err = serde_json::from_value::<Skim<StatefulSet>>(json!({"kind": "Pod"}))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "expected apps/v1 StatefulSet, found  Pod");
    }

    #[test]
    fn a_skim_reads_the_metadata_and_nothing_else() {
        let object = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "shop", "labels": {"a": "b"},
                "annotations": {"c": "d"}, "managedFields": [{"manager": "kubectl"}]},
            // Not even read: a spec of the wrong shape is skipped.
            "spec": {"replicas": "three", "template": [1, 2, 3]},
            "status": "whatever",
        });
        let Skim(skim) = serde_json::from_value::<Skim<StatefulSet>>(object).unwrap();
        assert_eq!(
            skim,
            StatefulSet {
                metadata: ObjectMeta {
                    name: Some("db".into()),
                    namespace: Some("shop".into()),
                    labels: Some([("a".into(), "b".into())].into()),
                    annotations: Some([("c".into(), "d".into())].into()),
                    ..Default::default()
                },
                spec: None,
                status: None,
            }
        );
    }
}
