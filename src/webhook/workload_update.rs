//! The quick read of the reviews the API server sends most: an UPDATE of a
//! StatefulSet or Deployment, each object read in place as the envelope is
//! read ([`super::request`]), into the [`Subject`] decisions read:
//!
//! - metadata without managedFields, and of its annotations only
//!   upgrade-guard's own (`upgradeguard.io/`), plus whether there are any;
//!   a workload no policy selects is answered from these alone, its spec
//!   only scanned ([`super::json`]; read later only if the other object is
//!   selected);
//! - the spec typed, but the pod template read only as far as a
//!   [`Template`] holds it (its labels, every container's name and image,
//!   its claim volumes);
//! - the status typed, as the spec's claim templates are (the old
//!   object's copied from the new one's where they are the same text).
//!
//! The API server writes both objects of a review the same way, so an
//! unchanged part of a template is the same text (scanned once: the two
//! objects are read as [`json::TWIN`]s, and the second one's containers
//! and volumes that are the first one's bytes are copied from those).
//! Every template field a [`Template`] does not hold is kept as its
//! text, and the two templates are built only when those texts are the
//! same, marked as having the same rest: a template whose other fields
//! changed (an env var, a probe, a new container) is beyond this read.
//! Those texts are still checked against their k8s-openapi types
//! ([`super::schema`]), once (the other object's are the same text; a text
//! that passed lately on this thread is not checked again, [`Passed`]), and
//! every other field the full read parses is parsed here too, so this read
//! fails wherever the full one would. What is beyond it, and anything it
//! fails on, goes the full way ([`super::review`]), which names what is
//! wrong. So both ways always decide alike; `tests/fast_path.rs` holds them
//! to it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentStrategy, StatefulSet, StatefulSetOrdinals,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::json::{self, Item, Text};
use super::objects::{Meta, checked};
use super::passed::Passed;
use super::schema::{AnyString, Check, KeyText, Shape};
use crate::decide::{self, Change, Subject};
use crate::policy::PolicySet;
use crate::template::{self, Image, Kept, PodKept, Template};
use crate::workload::{OWN_PREFIX, Workload, WorkloadKind};

/// What the quick read makes of a workload UPDATE: the old object's UID,
/// and the change, `None` when no policy selects either object.
pub(super) struct Read {
    pub object_uid: Option<String>,
    pub change: Option<Change>,
}

/// The UPDATE of a workload of `kind` from its two objects, or `None`:
/// take the full way (see the module's documentation).
pub(super) fn read(
    old: Object<'_>,
    new: Object<'_>,
    kind: WorkloadKind,
    policies: &PolicySet,
) -> Option<Read> {
    let shapes = shapes()?;
    let (old, old_rest) = old.skim(kind)?;
    let (new, new_rest) = new.skim(kind)?;
    let object_uid = old.metadata().uid.clone();
    if decide::is_ungoverned_update(&old, &new, policies) {
        return Some(Read {
            object_uid,
            change: None,
        });
    }
    let (mut old, mut new) = (old, new);
    let mut old_spec = match old_rest.spec {
        Some(spec) => Some(spec.read()?),
        None => None,
    };
    let mut new_spec = match new_rest.spec {
        Some(spec) => Some(spec.read()?),
        None => None,
    };
    let templates = match (&mut old_spec, &mut new_spec) {
        (Some(o), Some(n)) => Some(templates(o.template.take()?, n.template.take()?, shapes)?),
        (None, None) => None,
        // A template on one side has no other to be compared with as text,
        // and its fields would go unchecked.
        _ => return None,
    };
    let (old_template, new_template) = templates.unzip();
    fill(
        (&mut old, old_spec, old_rest.status),
        (&mut new, new_spec, new_rest.status),
    )?;
    Some(Read {
        object_uid,
        change: Some(Change::Update {
            old: Subject::with_template(old, old_template),
            new: Subject::with_template(new, new_template),
        }),
    })
}

/// Both templates reduced, or `None` when the fields the reduction drops
/// are not the same text in both, or not what their types accept (checked
/// once: the other's are the same text).
fn templates(
    old: TemplateText<'_>,
    new: TemplateText<'_>,
    shapes: &'static Shapes,
) -> Option<(Template, Template)> {
    let (mut old, mut new) = (old, new);
    old.copy_items(&new)?;
    new.copy_items(&old)?;
    let new_rests = new.rests(shapes);
    if old.rests(shapes) != new_rests {
        return None;
    }
    check_once(&new_rests)?;
    drop(new_rests);
    Some(Template::same_rest(old.reduce()?, new.reduce()?))
}

/// A StatefulSet or a Deployment as the quick read takes it: its metadata,
/// its spec read in place when the object may be governed, and its status
/// as text.
pub(super) struct Object<'a> {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Meta<Own>,
    spec: Option<SpecSent<'a>>,
    status: Option<Text<'a>>,
}

/// A spec read in place, or its text: one of an object no policy selects
/// is read only if the other object of the review is selected.
enum SpecSent<'a> {
    Read(Box<Spec<'a>>),
    Text(Text<'a>),
}

impl<'a> SpecSent<'a> {
    fn read(self) -> Option<Spec<'a>> {
        match self {
            SpecSent::Read(spec) => Some(*spec),
            SpecSent::Text(text) => json::from_str(text.get()).ok().map(|SpecObject(spec)| spec),
        }
    }
}

/// Reads an [`Object`] of `kind`.
#[derive(Clone, Copy)]
pub(super) struct ObjectSeed<'p> {
    pub kind: WorkloadKind,
    pub policies: &'p PolicySet,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = Object<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Object<'de>, D::Error> {
        // A review's two objects are twins: most of the old one's text is
        // the new one's.
        d.deserialize_newtype_struct(json::TWIN, self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = Object<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a workload")
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> Result<Object<'de>, D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
        use serde::de::Error;
        let mut seen = [false; 5];
        let first = |seen: &mut [bool; 5], i: usize, key: &'static str| {
            if std::mem::replace(&mut seen[i], true) {
                return Err(A::Error::duplicate_field(key));
            }
            Ok(())
        };
        let mut object = Object {
            api_version: None,
            kind: None,
            metadata: Meta::default(),
            spec: None,
            status: None,
        };
        while let Some(key) = map.next_key_seed(KeyText)? {
            match &*key {
                "apiVersion" => {
                    first(&mut seen, 0, "apiVersion")?;
                    object.api_version = map.next_value()?;
                }
                "kind" => {
                    first(&mut seen, 1, "kind")?;
                    object.kind = map.next_value()?;
                }
                "metadata" => {
                    first(&mut seen, 2, "metadata")?;
                    object.metadata = map.next_value::<Meta<Own>>()?;
                }
                "spec" => {
                    first(&mut seen, 3, "spec")?;
                    // The metadata comes first from the API server: an
                    // object no policy selects keeps its spec unread.
                    object.spec = if seen[2] && !self.may_be_governed(&object.metadata) {
                        map.next_value::<Option<Text>>()?.map(SpecSent::Text)
                    } else {
                        map.next_value::<Option<SpecObject>>()?
                            .map(|SpecObject(spec)| SpecSent::Read(Box::new(spec)))
                    };
                }
                "status" => {
                    first(&mut seen, 4, "status")?;
                    object.status = map.next_value()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(object)
    }
}

impl ObjectSeed<'_> {
    /// Whether a policy selects an object of this metadata, or it carries
    /// any of upgrade-guard's annotations.
    fn may_be_governed(&self, metadata: &Meta<Own>) -> bool {
        let Some(own) = metadata.annotations() else {
            return true;
        };
        if !own.0.is_empty() {
            return true;
        }
        let namespace = metadata.namespace().unwrap_or("default");
        self.policies
            .selects(self.kind, namespace, metadata.labels())
    }
}

/// Which kind the spec is is known only from the request, so it holds the
/// fields of both. Read from a JSON object only, as k8s-openapi reads a
/// spec (serde's derived reader would take an array of the fields too).
struct SpecObject<'a>(Spec<'a>);

impl<'de> Deserialize<'de> for SpecObject<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = SpecObject<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a spec")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SpecObject<'de>, A::Error> {
                Spec::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(SpecObject)
            }
        }
        d.deserialize_map(Fields)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec<'a> {
    #[serde(borrow)]
    template: Option<TemplateText<'a>>,
    replicas: Option<i32>,
    selector: Option<LabelSelector>,
    min_ready_seconds: Option<i32>,
    revision_history_limit: Option<i32>,
    service_name: Option<String>,
    update_strategy: Option<StatefulSetUpdateStrategy>,
    /// A StatefulSet's typed by [`fill`] (most UPDATEs leave them alone,
    /// and then the old object's are copied from the new one's); a
    /// Deployment's only scanned, as its spec's type has none.
    #[serde(borrow)]
    volume_claim_templates: Option<Text<'a>>,
    pod_management_policy: Option<String>,
    persistent_volume_claim_retention_policy:
        Option<StatefulSetPersistentVolumeClaimRetentionPolicy>,
    ordinals: Option<StatefulSetOrdinals>,
    strategy: Option<DeploymentStrategy>,
    progress_deadline_seconds: Option<i32>,
    paused: Option<bool>,
}

/// What the metadata leaves to read.
struct Unread<'a> {
    spec: Option<SpecSent<'a>>,
    status: Option<Text<'a>>,
}

impl<'a> Object<'a> {
    /// The workload of `kind` as far as its metadata, and what is left
    /// unread; `None` for another kind. Built in its box: a StatefulSet is
    /// 2.5 kB, and each move of one is a copy.
    fn skim(self, kind: WorkloadKind) -> Option<(Workload, Unread<'a>)> {
        let Object {
            api_version,
            kind: object_kind,
            metadata,
            spec,
            status,
        } = self;
        macro_rules! skimmed {
            ($kind:ident) => {{
                let mut object = Box::<$kind>::default();
                object.metadata =
                    checked::<$kind, serde_json::Error, _>(api_version, object_kind, metadata)
                        .ok()?;
                Workload::$kind(object)
            }};
        }
        let workload = match kind {
            WorkloadKind::StatefulSet => skimmed!(StatefulSet),
            WorkloadKind::Deployment => skimmed!(Deployment),
        };
        Some((workload, Unread { spec, status }))
    }
}

/// Puts each skimmed workload's spec, but its template, and status in
/// place (the template is read by [`read`], which declines a spec without
/// one). `None` where this read cannot vouch for them: an unreadable
/// status or claim templates, a required field missing (a spec's selector: the full read
/// takes it as empty, as the API server's decoder would), or a claim template
/// carrying managedFields (any JSON, whose depth only a read of the whole
/// body measures).
fn fill(
    (old, old_spec, old_status): (&mut Workload, Option<Spec<'_>>, Option<Text>),
    (new, new_spec, new_status): (&mut Workload, Option<Spec<'_>>, Option<Text>),
) -> Option<()> {
    macro_rules! filled {
        ($object:ident, $spec:ident, |$s:ident, $out:ident| $own:block) => {
            if let Some($s) = $spec {
                let $out = $object.spec.insert(Default::default());
                $out.selector = $s.selector?;
                $out.min_ready_seconds = $s.min_ready_seconds;
                $out.replicas = $s.replicas;
                $out.revision_history_limit = $s.revision_history_limit;
                $own
            }
        };
    }
    match (old, new) {
        (Workload::StatefulSet(old), Workload::StatefulSet(new)) => {
            (old.status, new.status) = typed_twins(old_status, new_status)?;
            let (old_claims, new_claims) = typed_twins::<Vec<PersistentVolumeClaim>>(
                old_spec.as_ref().and_then(|s| s.volume_claim_templates),
                new_spec.as_ref().and_then(|s| s.volume_claim_templates),
            )?;
            for (sts, spec, claims) in [(old, old_spec, old_claims), (new, new_spec, new_claims)] {
                filled!(sts, spec, |s, out| {
                    if claims
                        .iter()
                        .flatten()
                        .any(|c| c.metadata.managed_fields.is_some())
                    {
                        return None;
                    }
                    out.ordinals = s.ordinals;
                    out.persistent_volume_claim_retention_policy =
                        s.persistent_volume_claim_retention_policy;
                    out.pod_management_policy = s.pod_management_policy;
                    out.service_name = s.service_name;
                    out.update_strategy = s.update_strategy;
                    out.volume_claim_templates = claims;
                });
            }
        }
        (Workload::Deployment(old), Workload::Deployment(new)) => {
            (old.status, new.status) = typed_twins(old_status, new_status)?;
            for (deploy, spec) in [(old, old_spec), (new, new_spec)] {
                filled!(deploy, spec, |s, out| {
                    out.paused = s.paused;
                    out.progress_deadline_seconds = s.progress_deadline_seconds;
                    out.strategy = s.strategy;
                });
            }
        }
        _ => return None,
    }
    Some(())
}

/// Both objects' texts typed, `Some(None)` for one absent, `None` for one
/// unreadable. The API server writes a review's two objects alike: where
/// the old object's text is the same bytes as the new one's, it is the
/// same value, copied rather than read again.
fn typed_twins<T: serde::de::DeserializeOwned + Clone>(
    old: Option<Text>,
    new: Option<Text>,
) -> Option<(Option<T>, Option<T>)> {
    let new_typed = typed(new)?;
    let old_typed = if old == new {
        new_typed.clone()
    } else {
        typed(old)?
    };
    Some((old_typed, new_typed))
}

/// `Some(None)` for no text, `None` for an unreadable one.
fn typed<T: serde::de::DeserializeOwned>(text: Option<Text>) -> Option<Option<T>> {
    match text {
        None => Some(None),
        Some(text) => json::from_str(text.get()).ok().map(Some),
    }
}

/// A pod template as far as decisions read it: its labels (a version may be
/// a label), its containers' names and images, and its claim volumes. Every
/// other field is kept as its text, where it was.
#[derive(Default)]
struct TemplateText<'a> {
    metadata: Option<TemplateMeta<'a>>,
    spec: Option<TemplatePod<'a>>,
    rest: Rest<'a>,
}

#[derive(Default)]
struct TemplateMeta<'a> {
    labels: Option<BTreeMap<String, String>>,
    rest: Rest<'a>,
}

/// Its containers and volumes are [`Item`]s: the second object's that
/// are the first one's bytes are copied from those, not read again.
#[derive(Default)]
struct TemplatePod<'a> {
    containers: Option<Vec<Item<Named<'a>>>>,
    /// Read as containers are: a policy governs init containers and native
    /// sidecars too.
    init_containers: Option<Vec<Item<Named<'a>>>>,
    volumes: Option<Vec<Item<ClaimVolume<'a>>>>,
    rest: Rest<'a>,
}

#[derive(Default, Clone)]
struct Named<'a> {
    name: Option<String>,
    image: Option<String>,
    rest: Rest<'a>,
}

#[derive(Default, Clone)]
struct ClaimVolume<'a> {
    name: Option<String>,
    persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    rest: Rest<'a>,
}

/// The fields not built, as their keys and values' texts, in the order
/// sent; fields the type does not know are skipped, as the full read does.
type Rest<'a> = Vec<(&'a str, &'a str)>;

/// Room for a [`Rest`] at its first field.
const REST_FIELDS: usize = 16;

/// One object's fields not built, with what checks them.
struct RestOf<'r, 'a> {
    /// The type the object reduces.
    shape: &'static Shape,
    /// Where it is in the template: the list it is in, and its index.
    at: (&'static str, usize),
    /// How many arrays and objects of the review hold the fields.
    depth: usize,
    rest: &'r Rest<'a>,
}

impl PartialEq for RestOf<'_, '_> {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.shape, other.shape) && self.at == other.at && self.rest == other.rest
    }
}

impl RestOf<'_, '_> {
    /// Everything [`RestOf::check`] reads: the type (its shape's address:
    /// the shapes are traced once, for the process), the depth, and each
    /// key and value, every one after its length, so that two are the same
    /// bytes only when they check alike.
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&std::ptr::from_ref(self.shape).addr().to_le_bytes());
        out.extend_from_slice(&self.depth.to_le_bytes());
        out.extend_from_slice(&self.rest.len().to_le_bytes());
        for (key, text) in self.rest {
            for part in [key, text] {
                out.extend_from_slice(&part.len().to_le_bytes());
                out.extend_from_slice(part.as_bytes());
            }
        }
    }

    /// How many bytes [`RestOf::write`] writes.
    fn size(&self) -> usize {
        const WORD: usize = size_of::<usize>();
        let fields: usize = self
            .rest
            .iter()
            .map(|(k, t)| 2 * WORD + k.len() + t.len())
            .sum();
        3 * WORD + fields
    }

    /// Each field as its type reads it.
    fn check(&self) -> Option<()> {
        for (key, text) in self.rest {
            let shape = self.shape.field(key)?;
            let mut de = serde_json::Deserializer::from_str(text);
            Check {
                shape,
                depth: self.depth,
            }
            .deserialize(&mut de)
            .ok()?;
        }
        Some(())
    }
}

/// How many texts that passed the check each serving thread remembers, and
/// in how many bytes (a template's other fields are some kilobytes): with
/// the scratch text, at most 320 KiB a thread.
const PASSED_TEXTS: usize = 16;
const PASSED_BYTES: usize = 256 * 1024;

/// Checks `rests` ([`RestOf::check`]) unless the very same types and text
/// passed lately on this thread ([`Passed`]).
fn check_once(rests: &[RestOf]) -> Option<()> {
    thread_local! {
        static PASSED: RefCell<(Passed, Vec<u8>)> =
            RefCell::new((Passed::new(PASSED_TEXTS, PASSED_BYTES), Vec::new()));
    }
    let check = || rests.iter().try_for_each(RestOf::check);
    if rests.is_empty() {
        return Some(());
    }
    let size: usize = rests.iter().map(RestOf::size).sum();
    // A thread past its end (a destructor's) checks as before.
    let remembered = PASSED.try_with(|cell| {
        let (passed, text) = &mut *cell.borrow_mut();
        if !passed.keeps(size) {
            return check();
        }
        text.clear();
        text.reserve_exact(size);
        for rest in rests {
            rest.write(text);
        }
        if passed.seen(text) {
            return Some(());
        }
        check()?;
        passed.remember(text);
        Some(())
    });
    remembered.unwrap_or_else(|_| check())
}

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

/// The template sits at `request.object.spec.template`: the review, the
/// request, the object, the spec and the template hold its own fields.
const TEMPLATE_DEPTH: usize = 5;

impl<'a> TemplateText<'a> {
    /// Every object's fields not built, in the order of the template, the
    /// objects that have none left out: a template whose fields differ
    /// only in what was built (a container added with a name and an image,
    /// its metadata gone with its labels) has the same rests.
    fn rests<'r>(&'r self, shapes: &'static Shapes) -> Vec<RestOf<'r, 'a>> {
        let mut all = Vec::new();
        let mut of = |shape, at, depth, rest: &'r Rest<'a>| {
            if !rest.is_empty() {
                all.push(RestOf {
                    shape,
                    at,
                    depth,
                    rest,
                });
            }
        };
        of(&shapes.template, ("", 0), TEMPLATE_DEPTH, &self.rest);
        if let Some(m) = &self.metadata {
            of(&shapes.meta, ("metadata", 0), TEMPLATE_DEPTH + 1, &m.rest);
        }
        if let Some(pod) = &self.spec {
            of(&shapes.pod, ("spec", 0), TEMPLATE_DEPTH + 1, &pod.rest);
            // A container's fields: in the spec, its list, itself.
            for (list, items) in [
                ("containers", &pod.containers),
                ("initContainers", &pod.init_containers),
            ] {
                for (i, c) in values_of(items).enumerate() {
                    of(&shapes.container, (list, i), TEMPLATE_DEPTH + 3, &c.rest);
                }
            }
            for (i, v) in values_of(&pod.volumes).enumerate() {
                of(&shapes.volume, ("volumes", i), TEMPLATE_DEPTH + 3, &v.rest);
            }
        }
        all
    }

    /// Each of its items taken as the other object's ([`Item::Same`]),
    /// copied from that one; `None` where the other has no item of that
    /// count and type.
    fn copy_items(&mut self, other: &TemplateText<'a>) -> Option<()> {
        let Some(pod) = self.spec.as_mut() else {
            return Some(());
        };
        let from = other.spec.as_ref();
        let containers = from.map(|o| [&o.containers, &o.init_containers]);
        copied(&mut pod.containers, containers.as_ref())?;
        copied(&mut pod.init_containers, containers.as_ref())?;
        copied(&mut pod.volumes, from.map(|o| [&o.volumes]).as_ref())
    }

    /// What decisions read of the template; `None` for a container or
    /// volume without a name, a pod without containers, or one that names
    /// ephemeral containers at all, even as null (a policy governs them;
    /// this read does not read them).
    fn reduce(self) -> Option<Kept> {
        fn images(containers: Vec<Item<Named>>) -> Option<Vec<Image>> {
            let image = |c: Item<Named>| {
                let Item::Read(c, _) = c else { return None };
                Some(Image {
                    name: c.name?,
                    image: c.image,
                })
            };
            containers.into_iter().map(image).collect()
        }
        let spec = match self.spec {
            None => None,
            Some(pod) => {
                if pod
                    .rest
                    .iter()
                    .any(|(key, _)| *key == "ephemeralContainers")
                {
                    return None;
                }
                let volume = |v: Item<ClaimVolume>| {
                    let Item::Read(v, _) = v else { return None };
                    Some(template::ClaimVolume {
                        name: v.name?,
                        claim: v.persistent_volume_claim,
                    })
                };
                Some(PodKept {
                    containers: images(pod.containers?)?,
                    init_containers: match pod.init_containers {
                        Some(init) => Some(images(init)?),
                        None => None,
                    },
                    ephemeral_containers: None,
                    volumes: match pod.volumes {
                        Some(volumes) => {
                            Some(volumes.into_iter().map(volume).collect::<Option<_>>()?)
                        }
                        None => None,
                    },
                })
            }
        };
        Some(Kept {
            metadata: self.metadata.map(|m| m.labels),
            spec,
        })
    }
}

/// The values of a list's items read (after [`TemplateText::copy_items`], all).
fn values_of<T>(items: &Option<Vec<Item<T>>>) -> impl Iterator<Item = &T> {
    items.iter().flatten().filter_map(|item| match item {
        Item::Read(value, _) => Some(value),
        Item::Same(_) => None,
    })
}

/// Each of `items` taken as the other object's, copied from its item of
/// that count in `from`; `None` where it has none.
fn copied<T: Clone, const N: usize>(
    items: &mut Option<Vec<Item<T>>>,
    from: Option<&[&Option<Vec<Item<T>>>; N]>,
) -> Option<()> {
    // Found by halves: a first object's items are counted in the order
    // read, so each list's counts rise (tens of thousands of items cost
    // no more than their read).
    let count_of = |item: &Item<T>| match item {
        Item::Read(_, Some(c)) => *c,
        _ => usize::MAX,
    };
    for item in items.iter_mut().flatten() {
        let Item::Same(count) = *item else {
            continue;
        };
        let mut lists = from?.iter().filter_map(|list| list.as_deref());
        let first = lists.find_map(|list| {
            let at = list.binary_search_by_key(&count, count_of).ok()?;
            match list.get(at)? {
                Item::Read(value, _) => Some(value),
                Item::Same(_) => None,
            }
        })?;
        *item = Item::Read(first.clone(), None);
    }
    Some(())
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
                Some(_) => {
                    let text: Text<'de> = map.next_value()?;
                    let rest = object.rest();
                    // A container keeps about a dozen: grown once, not
                    // three times.
                    if rest.capacity() == 0 {
                        rest.reserve(REST_FIELDS);
                    }
                    rest.push((key, text.get()));
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
                    // A key given twice: the first value would go unchecked.
                    $($key if self.$field.is_some() => {
                        return Err(serde::de::Error::duplicate_field($key));
                    }
                    $key => self.$field = map.next_value()?,)*
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
    TemplateText(template) { "metadata" => metadata, "spec" => spec }
    TemplateMeta(meta) { "labels" => labels }
    TemplatePod(pod) {
        "containers" => containers,
        "initContainers" => init_containers,
        "volumes" => volumes
    }
    Named(container) { "name" => name, "image" => image }
    ClaimVolume(volume) { "name" => name, "persistentVolumeClaim" => persistent_volume_claim }
}

/// The annotations decisions read: upgrade-guard's own. The others are
/// only checked to be strings (kubectl's last-applied-configuration alone
/// is often a kilobyte of escaped JSON).
#[derive(Default)]
pub(super) struct Own(BTreeMap<String, String>);

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
