//! The audit trail inside the cluster: an Event on the workload for each
//! refusal (`UpgradeRefused`) and each forced override (`UpgradeForced`),
//! so that `kubectl describe` and `kubectl get events` show them.
//!
//! Repeats are aggregated the way client-go's events.k8s.io recorder does:
//! the first occurrence creates the Event, the second raises its
//! `series.count` at once, and later ones are counted in memory and written
//! at most once per [`FLUSH_EVERY`], so a GitOps controller retrying a
//! refused sync every few seconds costs one write a minute, not one a try.
//! Requests never wait for an Event: they are queued, and dropped (and
//! counted) when the queue is full.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use super::review::Reviewed;
use super::wire::Endpoint;
use crate::decide::Rule;

/// Who writes the Events (`reportingController`).
pub const REPORTER: &str = "upgradeguard.io/webhook";
/// How often counted repeats are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(60);
/// A repeat later than this after the last one starts a new Event.
const SERIES_TTL: jiff::SignedDuration = jiff::SignedDuration::from_mins(10);
/// Distinct Events aggregated at once; past it the stalest is forgotten.
const MAX_SERIES: usize = 4096;
/// Occurrences waiting to be written.
const QUEUE: usize = 1024;
/// The API server refuses a longer `note`.
const NOTE_BYTES: usize = 1024;

/// One refusal or override to record.
#[derive(Clone, Debug, PartialEq)]
pub struct Occurrence {
    pub regarding: ObjectReference,
    pub forced: bool,
    pub note: String,
    pub at: jiff::Timestamp,
}

/// The Event a reviewed request calls for: a refusal or an override on
/// `/validate` (the mutating webhook sees the same change; one Event per
/// change), on a StatefulSet or Deployment, never for a dry-run.
pub fn occurrence(endpoint: Endpoint, r: &Reviewed, at: jiff::Timestamp) -> Option<Occurrence> {
    let v = &r.verdict;
    if endpoint != Endpoint::Validate || !v.is_audited() || r.dry_run {
        return None;
    }
    let kind = r.workload?;
    let forced = v.rule == Some(Rule::Forced);
    let by = crate::quoted::bounded(&r.user);
    // The reason names the rule and the policy already.
    let note = if forced {
        format!("{} (forced by {by})", v.reason)
    } else {
        format!("{} (requested by {by})", v.reason)
    };
    Some(Occurrence {
        regarding: ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some(kind.as_str().into()),
            namespace: Some(r.namespace.clone()),
            name: Some(r.name.clone()),
            uid: r.object_uid.clone(),
            ..Default::default()
        },
        forced,
        note: crate::quoted::bounded_within(&note, NOTE_BYTES),
        at,
    })
}

/// A write to the Events API.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    Create(Box<Event>),
    /// Raise the count of the Event `name` in `namespace`.
    Count {
        namespace: String,
        name: String,
        series: EventSeries,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    namespace: String,
    kind: String,
    name: String,
    uid: Option<String>,
    forced: bool,
    note: String,
}

impl Key {
    fn of(o: &Occurrence) -> Self {
        let r = &o.regarding;
        Key {
            namespace: r.namespace.clone().unwrap_or_default(),
            kind: r.kind.clone().unwrap_or_default(),
            name: r.name.clone().unwrap_or_default(),
            uid: r.uid.clone(),
            forced: o.forced,
            note: o.note.clone(),
        }
    }
}

#[derive(Clone, Debug)]
struct Series {
    event: String,
    count: i32,
    last: jiff::Timestamp,
    /// The count the API server has.
    written: i32,
}

/// Which occurrences become which writes. Pure: the clock is the
/// occurrences' own, and flushing is asked for.
#[derive(Debug)]
pub struct Aggregator {
    instance: String,
    series: BTreeMap<Key, Series>,
}

impl Aggregator {
    /// `instance`: this replica (`reportingInstance`), e.g. its pod name.
    pub fn new(instance: &str) -> Self {
        Aggregator {
            instance: crate::quoted::bounded_within(instance, 128),
            series: BTreeMap::new(),
        }
    }

    /// The write an occurrence needs now, if any.
    pub fn observe(&mut self, o: Occurrence) -> Option<Write> {
        self.series.retain(|_, s| s.last + SERIES_TTL > o.at);
        let key = Key::of(&o);
        if let Some(s) = self.series.get_mut(&key) {
            s.count = s.count.saturating_add(1);
            s.last = o.at;
            // The first repeat shows at once; later ones wait for a flush.
            return (s.written == 1).then(|| {
                s.written = s.count;
                Write::Count {
                    namespace: key.namespace.clone(),
                    name: s.event.clone(),
                    series: series(s),
                }
            });
        }
        if self.series.len() >= MAX_SERIES
            && let Some(stalest) = self
                .series
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
        {
            self.series.remove(&stalest);
        }
        let event = self.event(&o);
        self.series.insert(
            key,
            Series {
                event: event.metadata.name.clone().unwrap_or_default(),
                count: 1,
                last: o.at,
                written: 1,
            },
        );
        Some(Write::Create(Box::new(event)))
    }

    /// The counts raised since they were last written.
    pub fn flush(&mut self) -> Vec<Write> {
        self.series
            .iter_mut()
            .filter(|(_, s)| s.count > s.written)
            .map(|(key, s)| {
                s.written = s.count;
                Write::Count {
                    namespace: key.namespace.clone(),
                    name: s.event.clone(),
                    series: series(s),
                }
            })
            .collect()
    }

    /// The Event `name` is gone (expired from the API server): the next
    /// occurrence makes a new one.
    pub fn forget(&mut self, namespace: &str, name: &str) {
        self.series
            .retain(|k, s| !(k.namespace == namespace && s.event == name));
    }

    fn event(&self, o: &Occurrence) -> Event {
        let regarding = &o.regarding;
        // client-go's naming: the object's name and the time in hex; kept
        // within the 253 characters of a name.
        let object = regarding.name.as_deref().unwrap_or("workload");
        let object = &object[..floor_boundary(object, 200)];
        let nanos = o.at.as_nanosecond();
        let (action, reason) = if o.forced {
            ("Force", "UpgradeForced")
        } else {
            ("Refuse", "UpgradeRefused")
        };
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{nanos:x}")),
                namespace: regarding.namespace.clone(),
                ..Default::default()
            },
            event_time: Some(MicroTime(o.at)),
            action: Some(action.into()),
            reason: Some(reason.into()),
            note: Some(o.note.clone()),
            type_: Some("Warning".into()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(REPORTER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        }
    }
}

fn series(s: &Series) -> EventSeries {
    EventSeries {
        count: s.count,
        last_observed_time: MicroTime(s.last),
    }
}

fn floor_boundary(text: &str, max: usize) -> usize {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// Where the server puts occurrences; a task writes them.
#[derive(Clone, Debug)]
pub struct EventSink {
    queue: mpsc::Sender<Occurrence>,
    dropped: Counter,
}

impl EventSink {
    /// Queues an occurrence; never waits.
    pub fn send(&self, o: Occurrence) {
        if self.queue.try_send(o).is_err() {
            self.dropped.inc();
        }
    }
}

/// Starts the writer task; `dropped` counts occurrences lost to a full
/// queue or a failed write.
pub fn start(client: kube::Client, instance: &str, dropped: Counter) -> EventSink {
    start_flushing_every(client, instance, dropped, FLUSH_EVERY)
}

/// [`start`], the counted repeats written every `flush_every`.
pub fn start_flushing_every(
    client: kube::Client,
    instance: &str,
    dropped: Counter,
    flush_every: Duration,
) -> EventSink {
    let (queue, occurrences) = mpsc::channel(QUEUE);
    tokio::spawn(write_all(
        client,
        Aggregator::new(instance),
        occurrences,
        dropped.clone(),
        flush_every,
    ));
    EventSink { queue, dropped }
}

/// Writes until every sender is gone, then flushes what is left.
async fn write_all(
    client: kube::Client,
    mut aggregator: Aggregator,
    mut occurrences: mpsc::Receiver<Occurrence>,
    dropped: Counter,
    flush_every: Duration,
) {
    let mut tick = tokio::time::interval(flush_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let writes = tokio::select! {
            o = occurrences.recv() => match o {
                Some(o) => aggregator.observe(o).into_iter().collect(),
                None => break,
            },
            _ = tick.tick() => aggregator.flush(),
        };
        for w in writes {
            apply(&client, &mut aggregator, w, &dropped).await;
        }
    }
    for w in aggregator.flush() {
        apply(&client, &mut aggregator, w, &dropped).await;
    }
}

async fn apply(client: &kube::Client, aggregator: &mut Aggregator, w: Write, dropped: &Counter) {
    let result = match &w {
        Write::Create(event) => {
            let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
            let result = Api::<Event>::namespaced(client.clone(), namespace)
                .create(&PostParams::default(), event)
                .await
                .map(drop);
            // Never made: a repeat must not count an Event that is not there.
            if result.is_err() {
                aggregator.forget(
                    namespace,
                    event.metadata.name.as_deref().unwrap_or_default(),
                );
            }
            result
        }
        Write::Count {
            namespace,
            name,
            series,
        } => {
            let patch = serde_json::json!({ "series": series });
            let result = Api::<Event>::namespaced(client.clone(), namespace)
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop);
            if let Err(kube::Error::Api(s)) = &result
                && s.code == 404
            {
                aggregator.forget(namespace, name);
            }
            result
        }
    };
    if let Err(e) = result {
        dropped.inc();
        tracing::warn!(error = %e, "event not written");
    }
}
