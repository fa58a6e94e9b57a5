//! The quick read of the reviews the API server sends most: an UPDATE of a
//! StatefulSet or Deployment. One pass over the body, and of each
//! object only what a decision reads:
//!
//! - metadata without managedFields, and of its annotations only
//!   upgrade-guard's own (`upgradeguard.io/`), plus whether there are any;
//! - the spec typed, but the pod template reduced to its labels, its
//!   containers' names and images, and its claim volumes;
//! - the status typed.
//!
//! Every template field the reduction drops is still checked against its
//! k8s-openapi type and kept as [`Token`]s ([`super::shape`]), and every
//! other field the full read parses is parsed here too, so this read fails
//! wherever the full one would. Two templates are equal when what was read
//! and those tokens are (the API server serializes both objects the same
//! way); two whose reductions are equal but whose tokens differ (another
//! order, another spelling) are beyond this read. Those, every other kind
//! of request, and anything this read fails on go the full way
//! ([`super::review`]), which names what is wrong. So both ways always
//! decide alike; `tests/fast_path.rs` holds them to it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentStatus, DeploymentStrategy, StatefulSet, StatefulSetOrdinals,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetStatus, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::core::admission::{AdmissionResponse, Operation};
use kube::core::{GroupVersionKind, GroupVersionResource};
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::lean::{Meta, checked};
use super::shape::{AnyString, Seed, Shape, Token};
use super::wire::{API_VERSION, Asked, KIND, workload_kind};
use crate::decide::Change;
use crate::workload::{Workload, WorkloadKind};

/// The request's facts and the change it asks for, or `None`: take the full
/// way (see the module's documentation).
pub(super) fn read(body: &[u8]) -> Option<(Asked, Change)> {
    shapes()?;
    // Validated once here, the text's strings are not validated again one
    // by one.
    let review: Review = serde_json::from_str(std::str::from_utf8(body).ok()?).ok()?;
    if review.api_version != API_VERSION || review.kind != KIND {
        return None;
    }
    let request = review.request?;
    let kind = workload_kind(&request.resource)?;
    if request
        .sub_resource
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return None;
    }
    // Only UPDATE: no shipped webhook configuration sends DELETE, and
    // anything else goes the full way.
    let (Operation::Update, Some(old), Some(new)) =
        (&request.operation, request.old_object, request.object)
    else {
        return None;
    };
    let same_text = old.template() == new.template();
    let (old, new) = (old.workload(kind)?, new.workload(kind)?);
    if !same_text && old.template() == new.template() {
        // They differ only in what the reduction dropped.
        return None;
    }
    let object_uid = old.metadata().uid.clone();
    let change = Change::Update { old, new };
    let asked = Asked {
        uid: request.uid,
        operation: request.operation,
        kind: request.kind.kind,
        namespace: request.namespace,
        name: request.name,
        user_info: request.user_info,
        dry_run: request.dry_run,
        workload: Some(kind),
        object_uid,
    };
    Some((asked, change))
}

// The full read takes kube's AdmissionReview, whose flattened type meta
// parses every other top-level key in full (depth, numbers, strings); the
// API server sends none, so one here goes the full way.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Review<'a> {
    api_version: String,
    kind: String,
    #[serde(borrow)]
    request: Option<Request<'a>>,
    // Never sent to a webhook, but read in full by the full read.
    #[serde(default)]
    #[allow(dead_code)]
    response: Option<AdmissionResponse>,
}

/// kube's `AdmissionRequest` as far as an answer needs it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    uid: String,
    kind: GroupVersionKind,
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
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
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    user_info: UserInfo,
    // Boxed: an object read is about a kilobyte, and serde returns each
    // value up through every level that holds it (perf: copies were a tenth
    // of a review).
    #[serde(borrow)]
    object: Option<Box<Object<'a>>>,
    #[serde(borrow)]
    old_object: Option<Box<Object<'a>>>,
    #[serde(default)]
    dry_run: bool,
}

/// A StatefulSet or a Deployment: which one is known only once the whole
/// request is read, so the spec holds the fields of both.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object<'a> {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Meta<Own>,
    #[serde(borrow, default)]
    spec: Option<Spec<'a>>,
    #[serde(borrow, default)]
    status: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec<'a> {
    #[serde(borrow)]
    template: Option<Template<'a>>,
    replicas: Option<i32>,
    selector: Option<LabelSelector>,
    min_ready_seconds: Option<i32>,
    revision_history_limit: Option<i32>,
    service_name: Option<String>,
    update_strategy: Option<StatefulSetUpdateStrategy>,
    volume_claim_templates: Option<Vec<PersistentVolumeClaim>>,
    pod_management_policy: Option<String>,
    persistent_volume_claim_retention_policy:
        Option<StatefulSetPersistentVolumeClaimRetentionPolicy>,
    ordinals: Option<StatefulSetOrdinals>,
    strategy: Option<DeploymentStrategy>,
    progress_deadline_seconds: Option<i32>,
    paused: Option<bool>,
}

impl Object<'_> {
    fn template(&self) -> Option<&Template<'_>> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }

    /// The workload of `kind`, its template reduced. `None` where this read
    /// cannot vouch for it: the wrong kind, an unreadable status, a required
    /// field missing (a spec's template or selector, a pod's containers, a
    /// container's or volume's name: the full read takes those as empty, as
    /// the API server's decoder would). Built in its box: a StatefulSet is
    /// 2.5 kB, and each move of one is a copy.
    fn workload(self, kind: WorkloadKind) -> Option<Workload> {
        let Object {
            api_version,
            kind: object_kind,
            metadata,
            spec,
            status,
        } = self;
        // Both kinds alike but for the spec fields of their own.
        macro_rules! built {
            ($kind:ident, $status:ty, |$s:ident, $out:ident| $own:block) => {{
                let mut object = Box::<$kind>::default();
                object.metadata =
                    checked::<$kind, serde_json::Error, _>(api_version, object_kind, metadata)
                        .ok()?;
                if let Some($s) = spec {
                    let $out = object.spec.insert(Default::default());
                    $s.template?.reduce_into(&mut $out.template)?;
                    $out.selector = $s.selector?;
                    $out.min_ready_seconds = $s.min_ready_seconds;
                    $out.replicas = $s.replicas;
                    $out.revision_history_limit = $s.revision_history_limit;
                    $own
                }
                object.status = typed::<$status>(status)?;
                Workload::$kind(object)
            }};
        }
        Some(match kind {
            WorkloadKind::StatefulSet => built!(StatefulSet, StatefulSetStatus, |s, out| {
                out.ordinals = s.ordinals;
                out.persistent_volume_claim_retention_policy =
                    s.persistent_volume_claim_retention_policy;
                out.pod_management_policy = s.pod_management_policy;
                out.service_name = s.service_name;
                out.update_strategy = s.update_strategy;
                out.volume_claim_templates = s.volume_claim_templates;
            }),
            WorkloadKind::Deployment => built!(Deployment, DeploymentStatus, |s, out| {
                out.paused = s.paused;
                out.progress_deadline_seconds = s.progress_deadline_seconds;
                out.strategy = s.strategy;
            }),
        })
    }
}

/// `Some(None)` for no status, `None` for an unreadable one.
fn typed<T: serde::de::DeserializeOwned>(raw: Option<&RawValue>) -> Option<Option<T>> {
    match raw {
        None => Some(None),
        Some(raw) => serde_json::from_str(raw.get()).ok().map(Some),
    }
}

/// A pod template as far as decisions read it: its labels (a version may be
/// a label), its containers' names and images, and its claim volumes. Every
/// other field is kept as its text, where it was, so that two templates are
/// equal when both what was read and the texts of the rest are.
#[derive(PartialEq, Default)]
struct Template<'a> {
    metadata: Option<TemplateMeta<'a>>,
    spec: Option<TemplatePod<'a>>,
    rest: Rest<'a>,
}

#[derive(PartialEq, Default)]
struct TemplateMeta<'a> {
    labels: Option<BTreeMap<String, String>>,
    rest: Rest<'a>,
}

#[derive(PartialEq, Default)]
struct TemplatePod<'a> {
    containers: Option<Vec<Named<'a>>>,
    volumes: Option<Vec<ClaimVolume<'a>>>,
    rest: Rest<'a>,
}

#[derive(PartialEq, Default)]
struct Named<'a> {
    name: Option<String>,
    image: Option<String>,
    rest: Rest<'a>,
}

#[derive(PartialEq, Default)]
struct ClaimVolume<'a> {
    name: Option<String>,
    persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    rest: Rest<'a>,
}

/// The fields not built, as their keys and values' tokens, in the order
/// sent; fields the type does not know are skipped, as the full read does.
type Rest<'a> = Vec<Token<'a>>;

/// The k8s-openapi types the reduced ones stand for.
pub(super) struct Shapes {
    template: Shape,
    meta: Shape,
    pod: Shape,
    container: Shape,
    volume: Shape,
}

/// Traced once. `None` (a k8s-openapi type beyond the tracer) turns this
/// read off: every request then goes the full way.
pub(super) fn shapes() -> Option<&'static Shapes> {
    static SHAPES: OnceLock<Option<Shapes>> = OnceLock::new();
    SHAPES
        .get_or_init(|| {
            Some(Shapes {
                template: Shape::of::<PodTemplateSpec>().ok()?,
                meta: Shape::of::<ObjectMeta>().ok()?,
                pod: Shape::of::<PodSpec>().ok()?,
                container: Shape::of::<Container>().ok()?,
                volume: Shape::of::<Volume>().ok()?,
            })
        })
        .as_ref()
}

impl Template<'_> {
    /// Writes the template as decisions see it into `out` (a default one);
    /// `None` for a container or volume without a name or a pod without
    /// containers.
    fn reduce_into(self, out: &mut PodTemplateSpec) -> Option<()> {
        if let Some(m) = self.metadata {
            out.metadata.insert(ObjectMeta::default()).labels = m.labels;
        }
        if let Some(pod) = self.spec {
            let spec = out.spec.insert(PodSpec::default());
            spec.containers = each(pod.containers?, |c, out: &mut Container| {
                out.name = c.name?;
                out.image = c.image;
                Some(())
            })?;
            if let Some(volumes) = pod.volumes {
                spec.volumes = Some(each(volumes, |v, out: &mut Volume| {
                    out.name = v.name?;
                    out.persistent_volume_claim = v.persistent_volume_claim;
                    Some(())
                })?);
            }
        }
        Some(())
    }
}

/// Each item written by `f` into a default `U`, or `None` if any fails.
/// Written in place: a k8s `Container` is 2 kB, a `Volume` 3 kB, and one
/// built on the stack is copied into the vector.
fn each<T, U: Default>(
    items: Vec<T>,
    mut f: impl FnMut(T, &mut U) -> Option<()>,
) -> Option<Vec<U>> {
    let mut out = Vec::with_capacity(items.len());
    out.resize_with(items.len(), U::default);
    for (item, slot) in items.into_iter().zip(&mut out) {
        f(item, slot)?;
    }
    Some(out)
}

/// An object read field by field: the ones a decision reads into their
/// place, the others' text into `rest`.
trait Fields<'de>: Default {
    /// Reads `key`'s value if it is one of ours; `false` leaves it unread.
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;
    fn rest(&mut self) -> &mut Rest<'de>;
    /// The shape of the k8s-openapi type this one reduces.
    fn shape(shapes: &Shapes) -> &Shape;
}

struct FieldsVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Fields<'de>> Visitor<'de> for FieldsVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let shape = T::shape(shapes().ok_or_else(|| serde::de::Error::custom("untraced"))?);
        let mut object = T::default();
        while let Some(key) = map.next_key::<&'de str>()? {
            if object.field(key, &mut map)? {
                continue;
            }
            match shape.field(key) {
                Some(shape) => {
                    object.rest().push(Token::Key(Cow::Borrowed(key)));
                    map.next_value_seed(Seed {
                        shape,
                        tokens: object.rest(),
                    })?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(object)
    }
}

/// The `Deserialize` and [`Fields`] of a reduced object: `"key" => field`
/// for the fields read, the others kept in `rest`.
macro_rules! read_by_fields {
    ($($name:ident($shape:ident) { $($key:literal => $field:ident),* })*) => {$(
        impl<'de: 'a, 'a> Deserialize<'de> for $name<'a> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_map(FieldsVisitor::<$name<'de>>(std::marker::PhantomData))
            }
        }

        impl<'de> Fields<'de> for $name<'de> {
            fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
                match key {
                    $($key => self.$field = map.next_value()?,)*
                    _ => return Ok(false),
                }
                Ok(true)
            }
            fn rest(&mut self) -> &mut Rest<'de> {
                &mut self.rest
            }
            fn shape(shapes: &Shapes) -> &Shape {
                &shapes.$shape
            }
        }
    )*};
}
read_by_fields! {
    Template(template) { "metadata" => metadata, "spec" => spec }
    TemplateMeta(meta) { "labels" => labels }
    TemplatePod(pod) { "containers" => containers, "volumes" => volumes }
    Named(container) { "name" => name, "image" => image }
    ClaimVolume(volume) { "name" => name, "persistentVolumeClaim" => persistent_volume_claim }
}

/// The annotations decisions read: upgrade-guard's own. The others are
/// only checked to be strings (kubectl's last-applied-configuration alone
/// is often a kilobyte of escaped JSON).
#[derive(Default)]
pub(super) struct Own(BTreeMap<String, String>);

const OWN_PREFIX: &str = "upgradeguard.io/";

impl From<Own> for BTreeMap<String, String> {
    fn from(own: Own) -> Self {
        own.0
    }
}

impl<'de> Deserialize<'de> for Own {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Annotations;
        impl<'de> Visitor<'de> for Annotations {
            type Value = Own;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of annotations")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Own, M::Error> {
                let mut own = BTreeMap::new();
                while let Some(OwnKey(key)) = map.next_key()? {
                    match key {
                        Some(key) => {
                            own.insert(key, map.next_value()?);
                        }
                        None => {
                            map.next_value_seed(AnyString)?;
                        }
                    }
                }
                Ok(Own(own))
            }
        }
        deserializer.deserialize_map(Annotations)
    }
}

/// An annotation key, kept only when it is upgrade-guard's.
struct OwnKey(Option<String>);

impl<'de> Deserialize<'de> for OwnKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = OwnKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an annotation key")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<OwnKey, E> {
                Ok(OwnKey(key.starts_with(OWN_PREFIX).then(|| key.to_string())))
            }
        }
        deserializer.deserialize_str(Key)
    }
}
