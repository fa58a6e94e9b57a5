//! A workload as decisions read it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::template::Template;
use crate::workload::{OWN_PREFIX, RefreshRecord, Workload, WorkloadKind};

/// A workload as decisions read it: its pod template as a [`Template`],
/// the rest typed, and of its annotations only upgrade-guard's own
/// (`upgradeguard.io/`). Every reader builds one through [`Subject::new`]
/// or [`Subject::with_template`], so a rule reads the same whichever
/// reader answered: what a reader drops, no rule can read.
#[derive(Clone, Debug, PartialEq)]
pub struct Subject {
    /// Without its pod template and managedFields.
    workload: Workload,
    template: Option<Template>,
}

impl Subject {
    /// A workload read whole.
    pub fn new(mut workload: Workload) -> Subject {
        let template = match &mut workload {
            Workload::StatefulSet(s) => s.spec.as_mut().map(|s| std::mem::take(&mut s.template)),
            Workload::Deployment(d) => d.spec.as_mut().map(|s| std::mem::take(&mut s.template)),
        };
        Subject::with_template(workload, template.map(Template::of))
    }

    /// A workload whose template a reader read as `template`; any template
    /// left in `workload` is dropped.
    pub fn with_template(mut workload: Workload, template: Option<Template>) -> Subject {
        let metadata = workload.metadata_mut();
        metadata.managed_fields = None;
        if let Some(annotations) = metadata.annotations.as_mut() {
            annotations.retain(|key, _| key.starts_with(OWN_PREFIX));
        }
        match &mut workload {
            Workload::StatefulSet(s) => s
                .spec
                .iter_mut()
                .for_each(|s| s.template = Default::default()),
            Workload::Deployment(d) => d
                .spec
                .iter_mut()
                .for_each(|s| s.template = Default::default()),
        }
        Subject { workload, template }
    }

    /// The workload without its pod template (read [`Subject::template`])
    /// and with only upgrade-guard's own annotations.
    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    pub(super) fn workload_mut(&mut self) -> &mut Workload {
        &mut self.workload
    }

    pub fn template(&self) -> Option<&Template> {
        self.template.as_ref()
    }

    pub(super) fn set_template(&mut self, template: Template) {
        self.template = Some(template);
    }

    pub fn kind(&self) -> WorkloadKind {
        self.workload.kind()
    }

    pub fn name(&self) -> &str {
        self.workload.name()
    }

    pub fn namespace(&self) -> &str {
        self.workload.namespace()
    }

    pub fn metadata(&self) -> &ObjectMeta {
        self.workload.metadata()
    }

    /// One of upgrade-guard's own annotations.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.workload.annotation(key)
    }

    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.workload.labels()
    }

    pub fn replicas(&self) -> i32 {
        self.workload.replicas()
    }

    pub fn partition(&self) -> Option<i32> {
        self.workload.partition()
    }

    pub fn is_on_delete(&self) -> bool {
        self.workload.is_on_delete()
    }

    pub fn refresh_record(&self) -> Option<Result<RefreshRecord, serde_json::Error>> {
        self.workload.refresh_record()
    }

    pub fn status_shows_rollout(&self) -> bool {
        self.workload.status_shows_rollout()
    }

    pub fn status_is_stale(&self) -> bool {
        self.workload.status_is_stale()
    }
}

impl From<Workload> for Subject {
    fn from(workload: Workload) -> Subject {
        Subject::new(workload)
    }
}
