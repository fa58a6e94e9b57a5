//! A pod template, or a pod, as decisions read it: its labels (a version
//! may be a label), every container's name and image, the claims its
//! volumes mount, and a mark that tells whether the rest is the same.
//!
//! This is the whole of what a rule may read of a template, so the
//! compiler holds every reader to it: the full read builds one from a
//! typed template ([`Template::of`]), the webhook's quick read from the
//! fields it keeps, and a pod under the data guard from its own metadata
//! and spec. A rule that needs another field adds it here, where each
//! reader must then supply it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::{
    Container, EphemeralContainer, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    kept: Kept,
    rest: Rest,
}

/// What decisions read of a template, each part as present or absent as
/// in the template: with the rest, it is the whole template.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Kept {
    /// Its metadata, if it has any: the labels.
    pub metadata: Option<Labels>,
    /// Its pod spec, if it has one.
    pub spec: Option<PodKept>,
}

pub type Labels = Option<BTreeMap<String, String>>;

/// What decisions read of a pod spec.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PodKept {
    pub containers: Vec<Image>,
    pub init_containers: Option<Vec<Image>>,
    pub ephemeral_containers: Option<Vec<Image>>,
    pub volumes: Option<Vec<ClaimVolume>>,
}

/// A volume's name and, if it is one, its PersistentVolumeClaim.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimVolume {
    pub name: String,
    pub claim: Option<PersistentVolumeClaimVolumeSource>,
}

/// A container's name and image.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub name: String,
    pub image: Option<String>,
}

/// Everything else in the template. Two templates are equal exactly when
/// what the fields above hold and the rest are.
#[derive(Clone, Debug)]
enum Rest {
    /// The typed template less what the fields above hold.
    Typed(Box<PodTemplateSpec>),
    /// Found the same as the other template of the same mark, by a reader
    /// that compared their texts and built neither.
    Same(u64),
}

/// Templates of one reader compare: one built by [`Template::of`] never
/// equals one the quick read marked, whatever they hold.
impl PartialEq for Rest {
    fn eq(&self, other: &Rest) -> bool {
        match (self, other) {
            (Rest::Typed(a), Rest::Typed(b)) => a == b,
            (Rest::Same(a), Rest::Same(b)) => a == b,
            _ => false,
        }
    }
}

/// A container of any kind.
trait NamedImage {
    /// Its name and image, taken out.
    fn take(&mut self) -> Image;
}

impl NamedImage for Container {
    fn take(&mut self) -> Image {
        Image {
            name: std::mem::take(&mut self.name),
            image: self.image.take(),
        }
    }
}

impl NamedImage for EphemeralContainer {
    fn take(&mut self) -> Image {
        Image {
            name: std::mem::take(&mut self.name),
            image: self.image.take(),
        }
    }
}

/// Marks of [`Rest::Same`]: unique within the process.
static MARKS: AtomicU64 = AtomicU64::new(0);

impl Template {
    /// What a typed template holds.
    pub fn of(mut template: PodTemplateSpec) -> Template {
        fn images(containers: &mut [impl NamedImage]) -> Vec<Image> {
            containers.iter_mut().map(NamedImage::take).collect()
        }
        let metadata = template.metadata.as_mut().map(|m| m.labels.take());
        let spec = template.spec.as_mut().map(|spec| PodKept {
            containers: images(&mut spec.containers),
            init_containers: spec.init_containers.as_deref_mut().map(images),
            ephemeral_containers: spec.ephemeral_containers.as_deref_mut().map(images),
            volumes: spec.volumes.as_mut().map(|volumes| {
                volumes
                    .iter_mut()
                    .map(|v| ClaimVolume {
                        name: std::mem::take(&mut v.name),
                        claim: v.persistent_volume_claim.take(),
                    })
                    .collect()
            }),
        });
        Template {
            kept: Kept { metadata, spec },
            rest: Rest::Typed(Box::new(template)),
        }
    }

    /// A pod as a template: its labels and its spec.
    pub fn of_pod(pod: &Pod) -> Template {
        Template::of(PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: pod.metadata.labels.clone(),
                ..Default::default()
            }),
            spec: pod.spec.clone(),
        })
    }

    /// Two templates whose other fields a reader found the same text.
    pub fn same_rest(old: Kept, new: Kept) -> (Template, Template) {
        let mark = MARKS.fetch_add(1, Ordering::Relaxed);
        let template = |kept| Template {
            kept,
            rest: Rest::Same(mark),
        };
        (template(old), template(new))
    }

    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.kept.metadata.as_ref()?.as_ref()
    }

    /// Every container it runs, as (name, image): containers, init
    /// containers (native sidecars among them), then ephemeral containers.
    pub fn images(&self) -> impl Iterator<Item = (&str, Option<&String>)> {
        let containers = self.kept.spec.iter().flat_map(|p| {
            let init = p.init_containers.iter().flatten();
            let ephemeral = p.ephemeral_containers.iter().flatten();
            p.containers.iter().chain(init).chain(ephemeral)
        });
        containers.map(|c| (c.name.as_str(), c.image.as_ref()))
    }

    /// The claims it mounts, as (volume, claim).
    pub fn claims(&self) -> impl Iterator<Item = (&str, &str)> {
        let volumes = self
            .kept
            .spec
            .iter()
            .flat_map(|p| p.volumes.iter().flatten());
        volumes.filter_map(|v| Some((v.name.as_str(), v.claim.as_ref()?.claim_name.as_str())))
    }

    /// This template with the containers (not the ephemeral ones) named in
    /// `images` running those images.
    pub fn with_images(&self, images: &BTreeMap<String, String>) -> Template {
        let mut out = self.clone();
        if let Some(pod) = out.kept.spec.as_mut() {
            let init = pod.init_containers.iter_mut().flatten();
            for c in pod.containers.iter_mut().chain(init) {
                if let Some(image) = images.get(&c.name) {
                    c.image = Some(image.clone());
                }
            }
        }
        out
    }

    /// Per container whose image differs in `new`, its image here.
    pub fn images_changed(&self, new: &Template) -> BTreeMap<String, String> {
        // Borrowed: only the images that changed are copied.
        fn images(t: &Template) -> BTreeMap<&str, &str> {
            t.images()
                .filter_map(|(name, image)| Some((name, image?.as_str())))
                .collect()
        }
        let after = images(new);
        images(self)
            .into_iter()
            .filter(|(name, image)| after.get(name).is_some_and(|a| a != image))
            .map(|(name, image)| (name.to_owned(), image.to_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(value: serde_json::Value) -> Template {
        Template::of(serde_json::from_value(value).unwrap())
    }

    #[test]
    fn two_templates_are_equal_exactly_when_their_whole_texts_are() {
        let base = json!({
            "metadata": {"labels": {"app": "db"}, "annotations": {"a": "1"}},
            "spec": {
                "containers": [{"name": "db", "image": "db:1.0.0", "env": [{"name": "X", "value": "1"}]}],
                "initContainers": [{"name": "init", "image": "init:1"}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-0", "readOnly": true}}]
            }
        });
        assert_eq!(template(base.clone()), template(base.clone()));
        let edits: [(&str, serde_json::Value); 7] = [
            ("/metadata/labels/app", json!("other")),
            ("/metadata/annotations/a", json!("2")),
            ("/spec/containers/0/image", json!("db:1.0.1")),
            ("/spec/containers/0/env/0/value", json!("2")),
            ("/spec/initContainers/0/name", json!("init2")),
            (
                "/spec/volumes/0/persistentVolumeClaim/claimName",
                json!("data-1"),
            ),
            (
                "/spec/volumes/0/persistentVolumeClaim/readOnly",
                json!(false),
            ),
        ];
        for (at, value) in edits {
            let mut edited = base.clone();
            *edited.pointer_mut(at).unwrap() = value;
            assert_ne!(template(base.clone()), template(edited), "{at}");
        }
        // What is there and what is not, and in which list.
        let db = json!({"name": "db", "image": "db:1"});
        let side = json!({"name": "side", "image": "side:1"});
        let differ = [
            (
                json!({"spec": {"containers": [db, side]}}),
                json!({"spec": {"containers": [db], "initContainers": [side]}}),
            ),
            (
                json!({"spec": {"containers": [db]}}),
                json!({"spec": {"containers": [db], "initContainers": []}}),
            ),
            (
                json!({"spec": {"containers": [db]}}),
                json!({"spec": {"containers": [db], "volumes": [{"name": "v"}]}}),
            ),
            (
                json!({"spec": {"containers": [db]}}),
                json!({"metadata": {}, "spec": {"containers": [db]}}),
            ),
            (json!({"metadata": {}}), json!({"metadata": {"labels": {}}})),
            (json!({}), json!({"spec": {"containers": []}})),
        ];
        for (a, b) in differ {
            assert_ne!(template(a.clone()), template(b.clone()), "{a} {b}");
        }
    }

    #[test]
    fn it_reads_every_container_and_claim() {
        let t = template(json!({
            "spec": {
                "containers": [{"name": "db", "image": "db:1"}],
                "initContainers": [{"name": "init"}],
                "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "c"}}, {"name": "tmp", "emptyDir": {}}]
            }
        }));
        let images: Vec<_> = t.images().map(|(n, i)| (n, i.cloned())).collect();
        assert_eq!(
            images,
            [
                ("db", Some("db:1".to_string())),
                ("init", None),
                ("debug", Some("busybox".to_string()))
            ]
        );
        assert_eq!(t.claims().collect::<Vec<_>>(), [("data", "c")]);
        let back = t.with_images(&[("db".to_string(), "db:0".to_string())].into());
        assert_eq!(
            t.images_changed(&back),
            [("db".into(), "db:1".into())].into()
        );
    }

    #[test]
    fn rests_of_different_readers_or_marks_differ() {
        let typed = template(json!({"spec": {"containers": []}}));
        let (a, b) = Template::same_rest(Kept::default(), Kept::default());
        assert_eq!(a, b);
        let (c, _) = Template::same_rest(Kept::default(), Kept::default());
        assert_ne!(a, c);
        assert_ne!(a, typed);
    }
}
