//! The Argo CD and Flux health checks in `integrations/`: the Lua on a real
//! Lua 5.1 (`lua5.1`, through `integrations/argocd/harness.lua`, the object
//! handed over as a Lua table as Argo CD hands it), the CEL read from
//! `integrations/flux/kustomization.yaml` and evaluated by a CEL
//! implementation the way Flux evaluates it. Over API-server objects from the
//! recordings and records upgrade-guard writes itself (its `RefreshRecord`
//! serialization, and the controller's own step where the message is the
//! step's next action).

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use common::TempDir;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use upgrade_guard::policy::PauseAfter;
use upgrade_guard::refresh::{Action, Observed, step};
use upgrade_guard::workload::{RefreshRecord, RefreshState};

const RECORD: &str = "upgradeguard.io/refresh";
const T0: &str = "2026-11-21T10:00:00Z";

fn at(seconds: i64) -> jiff::Timestamp {
    T0.parse::<jiff::Timestamp>().unwrap() + jiff::SignedDuration::from_secs(seconds)
}

// ---------------------------------------------------------------- Argo CD

/// What a health script returned.
#[derive(Debug, Clone, PartialEq)]
struct Health {
    status: String,
    message: Option<String>,
}

impl Health {
    fn message(&self) -> &str {
        self.message.as_deref().unwrap_or("")
    }
}

/// `integrations/argocd/health.lua` on `lua5.1`.
struct Argo {
    lua: PathBuf,
    dir: TempDir,
    files: Cell<usize>,
}

impl Argo {
    fn new() -> Option<Argo> {
        let lua = common::tools::tool("lua5.1", "apt-get install -y lua5.1")?;
        Some(Argo {
            lua,
            dir: TempDir::new("health-lua"),
            files: Cell::new(0),
        })
    }

    fn health(&self, object: &Value) -> Health {
        self.run(object, None)
    }

    /// As Argo CD runs it without `useOpenLibs`: no string library.
    fn health_without_string_library(&self, object: &Value) -> Health {
        self.run(object, Some("nostring"))
    }

    fn run(&self, object: &Value, mode: Option<&str>) -> Health {
        let n = self.files.get();
        self.files.set(n + 1);
        let path = self.dir.join(format!("object-{n}.lua"));
        std::fs::write(&path, format!("return {}\n", lua_value(object))).unwrap();
        let argocd = common::root().join("integrations/argocd");
        let out = Command::new(&self.lua)
            .arg(argocd.join("harness.lua"))
            .arg(argocd.join("health.lua"))
            .arg(&path)
            .args(mode)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "health.lua failed on {}: {}{stdout}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let (status, rest) = stdout.split_once('\n').expect("a status line");
        Health {
            status: status.to_string(),
            message: match rest.split_at(1) {
                ("+", message) => Some(message.to_string()),
                ("-", "") => None,
                _ => panic!("harness output: {stdout:?}"),
            },
        }
    }
}

/// Lua source for a JSON value, as Argo CD builds the table: objects keyed
/// by string, arrays from 1, JSON null left out.
fn lua_value(v: &Value) -> String {
    let mut out = String::new();
    write_lua(v, &mut out);
    out
}

fn write_lua(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("nil"),
        Value::Bool(b) => write!(out, "{b}").unwrap(),
        // A JSON number is a Lua number literal as it stands.
        Value::Number(n) => write!(out, "{n}").unwrap(),
        Value::String(s) => write_lua_string(s, out),
        Value::Array(items) => {
            out.push('{');
            for item in items.iter().filter(|i| !i.is_null()) {
                write_lua(item, out);
                out.push(',');
            }
            out.push('}');
        }
        Value::Object(map) => {
            out.push('{');
            for (key, item) in map.iter().filter(|(_, i)| !i.is_null()) {
                out.push('[');
                write_lua_string(key, out);
                out.push_str("]=");
                write_lua(item, out);
                out.push(',');
            }
            out.push('}');
        }
    }
}

/// Printable ASCII as it is; every other byte as a three-digit decimal
/// escape (Lua 5.1 has no `\x`), so UTF-8 and control characters arrive
/// byte for byte.
fn write_lua_string(s: &str, out: &mut String) {
    out.push('"');
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => write!(out, "\\{b:03}").unwrap(),
        }
    }
    out.push('"');
}

// ------------------------------------------------------------------- Flux

/// kstatus's three statuses, as Flux's CEL status reader gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kstatus {
    InProgress,
    Failed,
    Current,
}

/// What Flux makes of what Argo CD shows: it has no Suspended, and a held
/// refresh stays in progress.
fn flux_for(argo_status: &str) -> Kstatus {
    match argo_status {
        "Healthy" => Kstatus::Current,
        "Progressing" | "Suspended" => Kstatus::InProgress,
        "Degraded" => Kstatus::Failed,
        other => panic!("no kstatus for {other}"),
    }
}

struct Exprs {
    in_progress: Option<cel::Program>,
    failed: Option<cel::Program>,
    current: cel::Program,
}

/// The `healthCheckExprs` of `integrations/flux/kustomization.yaml`, by kind.
struct Flux {
    env: Arc<cel::Env>,
    kinds: BTreeMap<String, Exprs>,
}

fn flux_file() -> Value {
    let path = common::root().join("integrations/flux/kustomization.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

impl Flux {
    fn load() -> Flux {
        let file = flux_file();
        let env = Arc::new(cel::Env::stdlib());
        let compile = |entry: &Value, field: &str| {
            entry[field].as_str().map(|text| {
                env.compile(text)
                    .unwrap_or_else(|e| panic!("{field} of {}: {e}", entry["kind"]))
            })
        };
        let mut kinds = BTreeMap::new();
        for entry in file["spec"]["healthCheckExprs"].as_array().unwrap() {
            assert_eq!(entry["apiVersion"], "apps/v1");
            let kind = entry["kind"].as_str().unwrap().to_string();
            let exprs = Exprs {
                in_progress: compile(entry, "inProgress"),
                failed: compile(entry, "failed"),
                current: compile(entry, "current").expect("current is required"),
            };
            assert!(kinds.insert(kind, exprs).is_none(), "one entry per kind");
        }
        Flux { env, kinds }
    }

    /// Flux's `StatusEvaluator.Evaluate` (fluxcd/pkg runtime/cel): the
    /// generation first, then inProgress, failed, current; none: in progress.
    fn status(&self, object: &Value) -> Kstatus {
        let exprs = &self.kinds[object["kind"].as_str().unwrap()];
        let observed = object.pointer("/status/observedGeneration");
        let generation = object.pointer("/metadata/generation");
        if let (Some(observed), Some(generation)) = (observed, generation)
            && observed != generation
        {
            return Kstatus::InProgress;
        }
        let mut context = cel::Context::with_env(Arc::clone(&self.env));
        for (name, value) in object.as_object().unwrap() {
            context.add_variable_from_value(name.as_str(), cel_value(value));
        }
        let checks = [
            (exprs.in_progress.as_ref(), Kstatus::InProgress),
            (exprs.failed.as_ref(), Kstatus::Failed),
            (Some(&exprs.current), Kstatus::Current),
        ];
        for (program, status) in checks {
            let Some(program) = program else { continue };
            // An error stalls Flux's health check: never acceptable here.
            match program.execute(&context) {
                Ok(cel::Value::Bool(true)) => return status,
                Ok(cel::Value::Bool(false)) => {}
                other => panic!("{status:?} expression on {}: {other:?}", object["kind"]),
            }
        }
        Kstatus::InProgress
    }
}

/// As Kubernetes' unstructured JSON reaches Flux: integers as int64.
fn cel_value(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => cel::Value::Float(n.as_f64().unwrap()),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(cel_value).collect())),
        Value::Object(map) => {
            let entries: HashMap<String, cel::Value> =
                map.iter().map(|(k, v)| (k.clone(), cel_value(v))).collect();
            entries.into()
        }
    }
}

// ---------------------------------------------------------------- Objects

fn recording(name: &str) -> Vec<(usize, Value)> {
    let path = common::root().join("tests/data/recordings").join(name);
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let event: Value = serde_json::from_str(line).unwrap();
            (i, event["object"].clone())
        })
        .collect()
}

/// The recorded objects of one kind, by line.
fn recorded(name: &str, kind: &str) -> BTreeMap<usize, Value> {
    recording(name)
        .into_iter()
        .filter(|(_, o)| o["kind"] == kind)
        .collect()
}

fn record_of(object: &Value) -> Option<RefreshRecord> {
    let text = object.pointer("/metadata/annotations")?.get(RECORD)?;
    Some(serde_json::from_str(text.as_str().unwrap()).unwrap())
}

fn with_record_text(object: &Value, text: &str) -> Value {
    let mut object = object.clone();
    let annotations = &mut object["metadata"]["annotations"];
    if annotations.is_null() {
        *annotations = json!({});
    }
    annotations[RECORD] = json!(text);
    object
}

/// The record as upgrade-guard writes it (the executor's
/// `serde_json::to_string`).
fn with_record(object: &Value, record: &RefreshRecord) -> Value {
    with_record_text(object, &serde_json::to_string(record).unwrap())
}

fn without_record(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(annotations) = object["metadata"]["annotations"].as_object_mut() {
        annotations.remove(RECORD);
    }
    object
}

fn record(from: &str, to: &str, state: RefreshState, reason: Option<&str>) -> RefreshRecord {
    let mut r = RefreshRecord::starting(
        from.into(),
        to.into(),
        at(0),
        state == RefreshState::RollingBack,
    );
    r.state = state;
    r.unit_started = Some(at(0));
    r.reason = reason.map(String::from);
    r
}

/// StatefulSet analytics/sqlgw, 4 pods Ready on one revision (recorded).
fn settled_statefulset() -> Value {
    without_record(&recorded("refresh-statefulset.jsonl", "StatefulSet")[&46])
}

/// Deployment fate/mysql, its pod Ready and available (recorded).
fn settled_deployment() -> Value {
    recorded("migrate-deployment.jsonl", "Deployment")[&13].clone()
}

// ------------------------------------------------------------ The installs

#[test]
fn the_argocd_configmap_installs_the_script_itself_for_both_kinds_with_the_string_library() {
    let argocd = common::root().join("integrations/argocd");
    let script = std::fs::read_to_string(argocd.join("health.lua")).unwrap();
    let text = std::fs::read_to_string(argocd.join("argocd-cm.yaml")).unwrap();
    let cm: Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let data = cm["data"].as_object().unwrap();
    for kind in ["StatefulSet", "Deployment"] {
        let health = &data[&format!("resource.customizations.health.apps_{kind}")];
        assert!(
            health.as_str() == Some(script.as_str()),
            "argocd-cm.yaml does not hold health.lua as it is for {kind}: run integrations/argocd/make-argocd-cm.sh"
        );
        // ConfigMap data are strings: a YAML `true` would not load.
        assert_eq!(
            data[&format!("resource.customizations.useOpenLibs.apps_{kind}")],
            json!("true")
        );
    }
    assert_eq!(data.len(), 4, "{:?}", data.keys());
}

#[test]
fn the_flux_expressions_cover_both_kinds_and_every_one_parses() {
    let flux = Flux::load();
    assert_eq!(
        flux.kinds.keys().collect::<Vec<_>>(),
        ["Deployment", "StatefulSet"]
    );
    for (kind, exprs) in &flux.kinds {
        assert!(
            exprs.in_progress.is_some() && exprs.failed.is_some(),
            "{kind}"
        );
    }
    let file = flux_file();
    assert_eq!(file["kind"], "Kustomization");
    assert_eq!(file["apiVersion"], "kustomize.toolkit.fluxcd.io/v1");
    assert_eq!(
        file["spec"]["wait"], true,
        "health checks run only with wait"
    );
}

/// The CEL reads the state from where serde_json puts it: these fields
/// first, in this order, whatever the record holds.
#[test]
fn a_record_always_begins_with_from_to_started_and_state() {
    let mut r = record(
        "1.7.0",
        "1.8.0",
        RefreshState::Failed,
        Some("a \"quoted\" reason"),
    );
    r.partition = Some(2);
    r.containers.insert(
        "state".into(),
        upgrade_guard::workload::VersionStep {
            from: "a".into(),
            to: "b".into(),
        },
    );
    r.images.insert("state".into(), "Paused".into());
    r.units.insert(2, "1.8.0".into());
    r.rollback = true;
    let text = serde_json::to_string(&r).unwrap();
    assert!(
        text.starts_with(
            r#"{"from":"1.7.0","to":"1.8.0","started":"2026-11-21T10:00:00Z","state":"Failed","#
        ),
        "{text}"
    );
    // The one other place `"state":"Paused"` can stand is an image of a
    // container named `state`: the anchored expression never looks there.
    assert!(text.contains(r#""state":"Paused""#));
    let Some(argo) = Argo::new() else { return };
    let object = with_record(&settled_statefulset(), &r);
    assert_eq!(argo.health(&object).status, "Degraded");
    assert_eq!(Flux::load().status(&object), Kstatus::Failed);
}

// ---------------------------------------------------- Recorded, replayed

/// The recorded refresh of analytics/sqlgw: 3.4.2 → 3.4.4 held after the
/// first unit, resumed, completed; a scale to 4; 3.4.5-broken failing on
/// unit 3; `kubectl rollout undo` failing too. Every StatefulSet event
/// through both checks.
#[test]
fn a_recorded_refresh_replays_through_both_checks() {
    use Kstatus::{Current, InProgress};
    let Some(argo) = Argo::new() else { return };
    let flux = Flux::load();
    // Where no refresh is active, the built-in logic's verdict by hand, from
    // the event's status.
    let unobserved = "Waiting for statefulset spec update to be observed...".to_string();
    let waiting = |n: i32| format!("Waiting for {n} pods to be ready...");
    let done = |n: i32| format!("partitioned roll out complete: {n} new pods have been updated...");
    let builtin: BTreeMap<usize, (&str, String, Kstatus)> = [
        (0, ("Progressing", unobserved.clone(), InProgress)),
        (3, ("Progressing", waiting(3), InProgress)),
        (6, ("Progressing", waiting(2), InProgress)),
        (9, ("Progressing", waiting(1), InProgress)),
        (11, ("Healthy", done(3), Current)),
        (40, ("Healthy", done(3), Current)),
        // Completed, then scaled to 4: the rollout the built-in logic sees.
        (41, ("Progressing", unobserved, InProgress)),
        (43, ("Progressing", waiting(1), InProgress)),
        (45, ("Healthy", done(4), Current)),
        (46, ("Healthy", done(4), Current)),
    ]
    .into();
    let mut seen = BTreeSet::new();
    let events = recorded("refresh-statefulset.jsonl", "StatefulSet");
    assert_eq!(events.len(), 34);
    for (line, object) in &events {
        let health = argo.health(object);
        let kstatus = flux.status(object);
        let state = record_of(object).map(|r| r.state);
        seen.insert(format!("{state:?}"));
        let expected = match state {
            None | Some(RefreshState::Completed) => {
                let (status, message, kstatus) = &builtin[line];
                (*status, Some(message.as_str()), *kstatus)
            }
            Some(RefreshState::RollingOut | RefreshState::RollingBack) => {
                ("Progressing", None, InProgress)
            }
            Some(RefreshState::Paused) => ("Suspended", None, InProgress),
            Some(RefreshState::Failed) => ("Degraded", None, Kstatus::Failed),
        };
        assert_eq!(health.status, expected.0, "line {line}: {health:?}");
        if let Some(message) = expected.1 {
            assert_eq!(health.message(), message, "line {line}");
        }
        assert_eq!(kstatus, expected.2, "line {line}");
        assert_eq!(kstatus, flux_for(&health.status), "line {line}");
    }
    assert_eq!(
        seen.len(),
        6,
        "no record and every state were recorded: {seen:?}"
    );

    // What the messages say at the holds, in the recording's own words.
    let at_line = |line: usize| argo.health(&events[&line]);
    assert_eq!(
        at_line(22).message(),
        "paused after unit 2 (sqlgw-2) refreshed to 3.4.4; check it, then resume; run: upgrade-guard resume analytics/sqlgw"
    );
    assert_eq!(
        at_line(24).message(),
        "refresh 3.4.2 → 3.4.4: refreshing unit 1 (sqlgw-1); run: upgrade-guard status analytics/sqlgw"
    );
    assert_eq!(
        at_line(56).message(),
        "unit 3 (sqlgw-3) is crash-looping: roll back to 3.4.4 (`kubectl -n analytics rollout undo statefulset/sqlgw`) or go on anyway; run: upgrade-guard resume --force --reason TEXT analytics/sqlgw"
    );
    assert!(
        at_line(57)
            .message()
            .starts_with("rollback 3.4.5-broken → 3.4.4: refreshing unit 3 (sqlgw-3)"),
        "{:?}",
        at_line(57)
    );
    assert_eq!(
        at_line(61).message(),
        "unit 3 (sqlgw-3) is not Ready after 20s: the rollback to 3.4.4 is held; look at the pods (`kubectl -n analytics get pods`) or go on anyway; run: upgrade-guard resume --force --reason TEXT analytics/sqlgw"
    );
}

/// Issue 13: held after its first unit, the partition is satisfied and the
/// built-in logic of both tools calls it done.
#[test]
fn while_a_refresh_holds_after_its_first_unit_the_builtin_logic_says_healthy_and_these_do_not() {
    let Some(argo) = Argo::new() else { return };
    let flux = Flux::load();
    let held = &recorded("refresh-statefulset.jsonl", "StatefulSet")[&22];
    assert_eq!(record_of(held).unwrap().state, RefreshState::Paused);
    let unguarded = without_record(held);
    assert_eq!(
        argo.health(&unguarded),
        Health {
            status: "Healthy".into(),
            message: Some("partitioned roll out complete: 1 new pods have been updated...".into()),
        }
    );
    assert_eq!(flux.status(&unguarded), Kstatus::Current);
    assert_eq!(argo.health(held).status, "Suspended");
    assert_eq!(flux.status(held), Kstatus::InProgress);
}

/// fate/mysql, recorded while `upgrade-guard migrate` scaled it to 0 and
/// back: no refresh record, so each tool's built-in logic, re-implemented.
/// The two tools differ where their built-ins differ (old pods still
/// terminating count for kstatus, not for Argo CD).
#[test]
fn a_deployment_without_a_record_keeps_each_tools_builtin_health() {
    use Kstatus::{Current, InProgress};
    let Some(argo) = Argo::new() else { return };
    let flux = Flux::load();
    let lags = "Waiting for rollout to finish: observed deployment generation less than desired generation";
    let expected: BTreeMap<usize, (&str, Option<&str>, Kstatus)> = [
        (3, ("Progressing", Some(lags), InProgress)),
        (5, ("Progressing", Some(lags), InProgress)),
        (
            8,
            (
                "Progressing",
                Some("Waiting for rollout to finish: 0 out of 1 new replicas have been updated..."),
                InProgress,
            ),
        ),
        (
            10,
            (
                "Progressing",
                Some("Waiting for rollout to finish: 0 of 1 updated replicas are available..."),
                InProgress,
            ),
        ),
        (13, ("Healthy", None, Current)),
        (16, ("Progressing", Some(lags), InProgress)),
        (18, ("Healthy", None, Current)),
        (20, ("Progressing", Some(lags), InProgress)),
        (21, ("Progressing", Some(lags), InProgress)),
        (22, ("Progressing", Some(lags), InProgress)),
        // Scaled to 0, the pod not gone yet.
        (25, ("Healthy", None, InProgress)),
        (30, ("Healthy", None, Current)),
    ]
    .into();
    let events = recorded("migrate-deployment.jsonl", "Deployment");
    assert_eq!(events.len(), 34);
    for (line, object) in &events {
        let health = argo.health(object);
        let kstatus = flux.status(object);
        let (status, message, want) = match expected.get(line) {
            Some(e) => *e,
            // From here on only the generation moves, and back.
            None if object["metadata"]["generation"] == object["status"]["observedGeneration"] => {
                ("Healthy", None, Current)
            }
            None => ("Progressing", Some(lags), InProgress),
        };
        assert_eq!(health.status, status, "line {line}: {health:?}");
        assert_eq!(health.message.as_deref(), message, "line {line}");
        assert_eq!(kstatus, want, "line {line}");
    }
}

#[test]
fn the_builtin_logic_covers_paused_deployments_deadlines_ondelete_and_plain_rolling_updates() {
    let Some(argo) = Argo::new() else { return };
    let flux = Flux::load();

    let mut paused = settled_deployment();
    paused["spec"]["paused"] = json!(true);
    assert_eq!(
        argo.health(&paused),
        Health {
            status: "Suspended".into(),
            message: Some("Deployment is paused".into())
        }
    );

    let mut late = settled_deployment();
    late["status"]["conditions"] = json!([{"type": "Progressing", "status": "False",
        "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet has timed out progressing."}]);
    assert_eq!(
        argo.health(&late),
        Health {
            status: "Degraded".into(),
            message: Some("Deployment \"mysql\" exceeded its progress deadline".into())
        }
    );
    assert_eq!(flux.status(&late), Kstatus::Failed);
    // A refresh under way outranks the deadline; a finished one does not.
    for (state, status) in [
        (RefreshState::RollingOut, "Progressing"),
        (RefreshState::Paused, "Suspended"),
        (RefreshState::Completed, "Degraded"),
    ] {
        let guarded = with_record(&late, &record("1.7.0", "1.8.0", state, None));
        assert_eq!(argo.health(&guarded).status, status, "{state:?}");
        assert_eq!(flux.status(&guarded), flux_for(status), "{state:?}");
    }

    // OnDelete: Argo CD looks at nothing but the ready pods, kstatus at
    // nothing at all; neither at the revisions.
    let mut on_delete = settled_statefulset();
    on_delete["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
    on_delete["status"]["updateRevision"] = json!("sqlgw-new");
    assert_eq!(
        argo.health(&on_delete),
        Health {
            status: "Healthy".into(),
            message: Some("statefulset has 4 ready pods".into())
        }
    );
    assert_eq!(flux.status(&on_delete), Kstatus::Current);

    // A RollingUpdate without a partition waits for the revisions to meet.
    let mut rolling = settled_statefulset();
    rolling["spec"]["updateStrategy"] = json!({"type": "RollingUpdate"});
    rolling["status"]["updateRevision"] = json!("sqlgw-new");
    rolling["status"]["updatedReplicas"] = json!(1);
    assert_eq!(
        argo.health(&rolling),
        Health {
            status: "Progressing".into(),
            message: Some(
                "waiting for statefulset rolling update to complete 1 pods at revision sqlgw-new..."
                    .into()
            )
        }
    );
    assert_eq!(flux.status(&rolling), Kstatus::InProgress);
    rolling["status"]["updateRevision"] = rolling["status"]["currentRevision"].clone();
    assert_eq!(
        argo.health(&rolling),
        Health {
            status: "Healthy".into(),
            message: Some(
                "statefulset rolling update complete 4 pods at revision sqlgw-746999b954...".into()
            )
        }
    );
    assert_eq!(flux.status(&rolling), Kstatus::Current);
}

// ------------------------------------------------------ Records, by state

#[test]
fn every_state_on_a_statefulset_and_a_deployment_reads_the_same_in_argocd_and_flux() {
    let Some(argo) = Argo::new() else { return };
    let flux = Flux::load();
    let mut automatic = record("3.4.5", "3.4.4", RefreshState::RollingBack, None);
    automatic.automatic = true;
    let cases = [
        (
            record("3.4.4", "3.4.5", RefreshState::RollingOut, None),
            "Progressing",
        ),
        (
            record("3.4.5", "3.4.4", RefreshState::RollingBack, None),
            "Progressing",
        ),
        (automatic, "Progressing"),
        (
            record("3.4.4", "3.4.5", RefreshState::Paused, Some("held")),
            "Suspended",
        ),
        (
            record("3.4.4", "3.4.5", RefreshState::Failed, Some("broken")),
            "Degraded",
        ),
        (
            record("3.4.4", "3.4.5", RefreshState::Completed, None),
            "Healthy",
        ),
    ];
    for object in [settled_statefulset(), settled_deployment()] {
        let kind = object["kind"].as_str().unwrap().to_string();
        for (r, status) in &cases {
            let guarded = with_record(&object, r);
            let health = argo.health(&guarded);
            assert_eq!(health.status, *status, "{kind} {:?}: {health:?}", r.state);
            assert_eq!(
                flux.status(&guarded),
                flux_for(status),
                "{kind} {:?}",
                r.state
            );
        }
        let ns = object["metadata"]["namespace"].as_str().unwrap();
        let name = object["metadata"]["name"].as_str().unwrap();
        let message = |r: &RefreshRecord| argo.health(&with_record(&object, r)).message;
        assert!(
            message(&cases[2].0)
                .unwrap()
                .starts_with("automatic rollback (onFailure: rollback) 3.4.5 → 3.4.4: "),
            "{kind}"
        );
        assert_eq!(
            message(&cases[3].0).unwrap(),
            format!("held; run: upgrade-guard resume {ns}/{name}")
        );
        let resource = kind.to_lowercase();
        assert_eq!(
            message(&cases[4].0).unwrap(),
            format!(
                "broken: roll back to 3.4.4 (`kubectl -n {ns} rollout undo {resource}/{name}`) or go on anyway; run: upgrade-guard resume --force --reason TEXT {ns}/{name}"
            )
        );
    }
}

#[test]
fn a_completed_record_hands_over_to_the_builtin_logic_even_mid_rollout() {
    let Some(argo) = Argo::new() else { return };
    let flux = Flux::load();
    let done = record("3.4.4", "3.4.5", RefreshState::Completed, None);
    // Someone else's rollout after the refresh: one pod not Ready yet.
    let mut object = with_record(&settled_statefulset(), &done);
    object["status"]["readyReplicas"] = json!(3);
    assert_eq!(
        argo.health(&object),
        Health {
            status: "Progressing".into(),
            message: Some("Waiting for 1 pods to be ready...".into())
        }
    );
    assert_eq!(flux.status(&object), Kstatus::InProgress);
    let mut deployment = with_record(&settled_deployment(), &done);
    deployment["status"]["updatedReplicas"] = json!(0);
    assert_eq!(argo.health(&deployment).status, "Progressing");
    assert_eq!(flux.status(&deployment), Kstatus::InProgress);
}

// ------------------------------------------- The controller's own words

/// A StatefulSet `shop/db` as the controller tests shape it.
fn db(replicas: i32, partition: i32, r: &RefreshRecord) -> Value {
    with_record(
        &json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "shop", "uid": "sts-uid", "generation": 2,
                "labels": {"app.kubernetes.io/name": "db"}},
            "spec": {"replicas": replicas, "serviceName": "db", "selector": {},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}},
                "template": {"spec": {"containers": [{"name": "db", "image": "db:1.8.0"}]}}},
            "status": {"replicas": replicas, "readyReplicas": replicas, "observedGeneration": 2,
                "currentRevision": "old", "updateRevision": "new", "updatedReplicas": replicas - partition},
        }),
        r,
    )
}

/// A pod at `ordinal` on `revision`, Ready for an hour, or crash-looping.
fn pod(ordinal: i32, revision: &str, crashing: bool) -> Pod {
    let mut p = json!({"metadata": {"name": format!("db-{ordinal}"), "uid": format!("pod-{ordinal}"),
            "labels": {"controller-revision-hash": revision}},
        "spec": {"containers": [{"name": "web", "image": "web:1.8.0"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True",
            "lastTransitionTime": at(-3600).to_string()}]}});
    if crashing {
        p["status"] = json!({"conditions": [], "containerStatuses": [{"name": "db", "image": "x",
            "imageID": "", "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]});
    }
    serde_json::from_value(p).unwrap()
}

fn step_on(
    object: &Value,
    pods: &[Pod],
    jobs: &[Job],
    settings: &upgrade_guard::refresh::Settings,
    now: i64,
) -> Action {
    let w = common::of(object.clone());
    step(&Observed {
        workload: &w,
        pods,
        jobs,
        settings,
        now: at(now),
    })
}

/// The step's next action on one line, as the checks word it.
fn next_line(action: &Action) -> String {
    format!(
        "{}; run: {}",
        action.next.text,
        action.next.command.as_deref().unwrap()
    )
}

/// The record a step wrote, on the object, as the executor writes it.
fn applied(object: &Value, action: &Action) -> Value {
    let mut object = with_record(object, action.record.as_ref().expect("a record"));
    if let Some(p) = action.partition {
        object["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = json!(p);
    }
    if let Some(paused) = action.paused {
        object["spec"]["paused"] = json!(paused);
    }
    object
}

#[test]
fn the_message_is_the_controllers_next_action_for_each_hold() {
    let Some(argo) = Argo::new() else { return };
    let flux = Flux::load();
    let first = common::refresh_settings(PauseAfter::First);
    let rolling = record("1.7.0", "1.8.0", RefreshState::RollingOut, None);
    let settled = [pod(0, "old", false), pod(1, "old", false)];

    // Unit 2 refreshed: paused after the first unit.
    let object = db(3, 2, &rolling);
    let pods = [&settled[..], &[pod(2, "new", false)]].concat();
    let action = step_on(&object, &pods, &[], &first, 100);
    assert_eq!(action.record.as_ref().unwrap().state, RefreshState::Paused);
    let paused = applied(&object, &action);
    let health = argo.health(&paused);
    assert_eq!(health.status, "Suspended");
    assert_eq!(health.message(), next_line(&action));
    // And what `status` says of the held refresh afterwards, the same.
    assert_eq!(
        health.message(),
        next_line(&step_on(&paused, &pods, &[], &first, 200))
    );
    assert_eq!(flux.status(&paused), Kstatus::InProgress);

    // Unit 2 crash-looping: held as Failed, offering the rollback.
    let pods = [&settled[..], &[pod(2, "new", true)]].concat();
    let action = step_on(&object, &pods, &[], &first, 100);
    assert_eq!(action.record.as_ref().unwrap().state, RefreshState::Failed);
    let failed = applied(&object, &action);
    let health = argo.health(&failed);
    assert_eq!(health.status, "Degraded");
    assert_eq!(health.message(), next_line(&action));
    assert!(health.message().contains("rollout undo statefulset/db"));
    assert_eq!(flux.status(&failed), Kstatus::Failed);

    // The same in a rollback: held, never offering to roll back again.
    let back = record("1.8.0", "1.7.0", RefreshState::RollingBack, None);
    let object = db(3, 2, &back);
    let action = step_on(&object, &pods, &[], &first, 100);
    assert_eq!(action.record.as_ref().unwrap().state, RefreshState::Failed);
    let failed = applied(&object, &action);
    let health = argo.health(&failed);
    assert_eq!(health.message(), next_line(&action));
    assert!(
        health.message().contains("the rollback to 1.7.0 is held"),
        "{health:?}"
    );
    assert_eq!(flux.status(&failed), Kstatus::Failed);

    // Nothing restarted yet: the first unit starts.
    let object = db(3, 3, &rolling);
    let action = step_on(&object, &[], &[], &first, 100);
    assert_eq!(action.partition, Some(2));
    let moving = applied(&object, &action);
    let health = argo.health(&moving);
    assert_eq!(health.status, "Progressing");
    assert_eq!(
        health.message(),
        format!("refresh 1.7.0 → 1.8.0: {}", next_line(&action))
    );
    assert_eq!(flux.status(&moving), Kstatus::InProgress);
}

#[test]
fn a_failed_hook_offers_retry_and_skip_as_the_controller_does() {
    let Some(argo) = Argo::new() else { return };
    let mut settings = common::refresh_settings(PauseAfter::First);
    settings.hooks.pre_refresh = Some(
        serde_json::from_value(json!({"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "check", "image": "tools:1", "command": ["/bin/check"]}]}}}))
        .unwrap(),
    );
    let object = db(
        3,
        3,
        &record("1.7.0", "1.8.0", RefreshState::RollingOut, None),
    );
    let pods = [
        pod(0, "old", false),
        pod(1, "old", false),
        pod(2, "old", false),
    ];
    let start = step_on(&object, &pods, &[], &settings, 10);
    let job = start.create_job.as_deref().expect("the preRefresh Job");
    // The hook runs before any unit restarts.
    assert_eq!(
        argo.health(&applied(&object, &start)),
        Health {
            status: "Progressing".into(),
            message: Some(
                "refresh 1.7.0 → 1.8.0: starting, no unit restarted yet; run: upgrade-guard status shop/db".into()
            ),
        }
    );
    // The Job controller gives up on it.
    let mut job = serde_json::to_value(job).unwrap();
    job["metadata"]["uid"] = json!("job-0");
    job["metadata"]["creationTimestamp"] = json!(at(10).to_string());
    job["status"] = json!({"conditions": [{"type": "Failed", "status": "True",
        "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]});
    let jobs = [serde_json::from_value::<Job>(job).unwrap()];
    let action = step_on(&applied(&object, &start), &pods, &jobs, &settings, 20);
    let failed = applied(&object, &action);
    assert_eq!(record_of(&failed).unwrap().state, RefreshState::Failed);
    let health = argo.health(&failed);
    assert_eq!(health.status, "Degraded");
    assert_eq!(health.message(), next_line(&action));
    assert!(
        health
            .message()
            .ends_with("; run: upgrade-guard retry shop/db"),
        "{health:?}"
    );
    assert_eq!(Flux::load().status(&failed), Kstatus::Failed);
}

#[test]
fn a_deployment_paused_after_its_first_pod_says_how_to_resume() {
    let Some(argo) = Argo::new() else { return };
    let first = common::refresh_settings(PauseAfter::First);
    let object = with_record(
        &json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "uid": "web-uid", "generation": 2,
                "labels": {"app.kubernetes.io/name": "web"}},
            "spec": {"replicas": 3, "selector": {},
                "template": {"spec": {"containers": [{"name": "web", "image": "web:1.8.0"}]}}},
            "status": {"replicas": 3, "updatedReplicas": 1, "readyReplicas": 3,
                "availableReplicas": 3, "observedGeneration": 2},
        }),
        &record("1.7.0", "1.8.0", RefreshState::RollingOut, None),
    );

    // No refreshed pod Ready yet: the rollout goes on.
    let waiting = step_on(&object, &[], &[], &first, 100);
    assert!(waiting.record.is_none());
    assert_eq!(
        argo.health(&object).message(),
        format!(
            "refresh 1.7.0 → 1.8.0: {}; run: upgrade-guard status shop/web",
            waiting.next.text
        )
    );

    let action = step_on(&object, &[pod(0, "any", false)], &[], &first, 100);
    assert_eq!(action.paused, Some(true));
    let paused = applied(&object, &action);
    let health = argo.health(&paused);
    assert_eq!(health.status, "Suspended");
    assert_eq!(health.message(), next_line(&action));
    assert_eq!(
        health.message(),
        "paused after the first pod refreshed to 1.8.0; check it, then resume; run: upgrade-guard resume shop/web"
    );
    assert_eq!(Flux::load().status(&paused), Kstatus::InProgress);
}

// ----------------------------------------------------- Unreadable records

#[test]
fn an_unreadable_record_is_degraded_with_the_reason_and_never_crashes() {
    let Some(argo) = Argo::new() else { return };
    let flux = Flux::load();
    let valid =
        serde_json::to_string(&record("1.7.0", "1.8.0", RefreshState::Paused, None)).unwrap();
    let texts = [
        "".to_string(),
        "not json".into(),
        "null".into(),
        "[]".into(),
        "\"Paused\"".into(),
        "{}".into(),
        "{".into(),
        // A state this version does not know (a newer upgrade-guard's).
        valid.replace("\"Paused\"", "\"Verifying\""),
        valid.replace("\"Paused\"", "\"paused\""),
        // Fields of the wrong type, or missing.
        valid.replace("\"1.7.0\"", "170"),
        valid.replace("\"started\"", "\"begun\""),
        // Broken escapes and strings.
        valid.replace("1.7.0", "1.7\\x"),
        valid.replace("1.7.0", "1.7\n0"),
        r#"{"from":"1.7.0"#.into(),
        format!("{}{}", "[".repeat(200), "]".repeat(200)),
    ];
    for text in &texts {
        assert!(
            serde_json::from_str::<RefreshRecord>(text).is_err(),
            "upgrade-guard reads {text:?}"
        );
        let object = with_record_text(&settled_statefulset(), text);
        let health = argo.health(&object);
        assert_eq!(health.status, "Degraded", "{text:?}: {health:?}");
        assert!(
            health
                .message()
                .starts_with("the upgradeguard.io/refresh record cannot be read: "),
            "{text:?}: {health:?}"
        );
        assert!(
            health
                .message()
                .ends_with("; run: upgrade-guard status analytics/sqlgw")
        );
        assert_eq!(flux.status(&object), Kstatus::Failed, "{text:?}");
    }
    let unknown = with_record_text(&settled_statefulset(), &texts[7]);
    assert!(
        argo.health(&unknown)
            .message()
            .contains("unknown state \"Verifying\""),
        "{:?}",
        argo.health(&unknown)
    );
}

/// The CEL reads serde_json's own layout, and only its leading fields; the
/// Lua reads the record whole, as upgrade-guard does. Apart only for text
/// upgrade-guard never writes.
#[test]
fn where_a_record_is_not_serde_jsons_own_layout_flux_and_argocd_differ_as_documented() {
    let Some(argo) = Argo::new() else { return };
    let flux = Flux::load();
    let valid =
        serde_json::to_string(&record("1.7.0", "1.8.0", RefreshState::Paused, None)).unwrap();

    // Damaged after its state: unreadable for upgrade-guard and the Lua,
    // read by its state in Flux.
    for damaged in [
        format!("{valid}x"),
        valid.replace("\"unitStarted\"", "\"rollback\":\"yes\",\"unitStarted\""),
    ] {
        assert!(serde_json::from_str::<RefreshRecord>(&damaged).is_err());
        let object = with_record_text(&settled_statefulset(), &damaged);
        assert_eq!(argo.health(&object).status, "Degraded", "{damaged}");
        assert_eq!(flux.status(&object), Kstatus::InProgress, "{damaged}");
    }

    // A lone surrogate: the expression checks escapes one by one, not pairs.
    let lone = valid.replace("1.7.0", "\\ud800");
    assert!(serde_json::from_str::<RefreshRecord>(&lone).is_err());
    let object = with_record_text(&settled_statefulset(), &lone);
    assert_eq!(argo.health(&object).status, "Degraded");
    assert_eq!(flux.status(&object), Kstatus::InProgress);

    // The same record in another layout: upgrade-guard and the Lua read it,
    // Flux does not.
    for text in [
        r#"{"state":"Paused","from":"1.7.0","to":"1.8.0","started":"2026-11-21T10:00:00Z"}"#
            .to_string(),
        valid.replace(',', ", "),
    ] {
        assert!(serde_json::from_str::<RefreshRecord>(&text).is_ok());
        let object = with_record_text(&settled_statefulset(), &text);
        assert_eq!(argo.health(&object).status, "Suspended", "{text}");
        assert_eq!(flux.status(&object), Kstatus::Failed, "{text}");
    }
}

#[test]
fn escapes_and_unicode_in_a_reason_or_a_version_come_through_whole() {
    let Some(argo) = Argo::new() else { return };
    let flux = Flux::load();
    let reason = "unit 2 \"db-2\" said: C:\\data\\é → 😀\n\tline two \u{1}\u{7f}, \"state\":\"Completed\" \\u0041";
    let r = record("1.7.0", "1.8.0", RefreshState::Paused, Some(reason));
    let text = serde_json::to_string(&r).unwrap();
    assert!(text.contains(r#"\"state\":\"Completed\""#) && text.contains(r"\u0001"));
    for object in [settled_statefulset(), settled_deployment()] {
        let guarded = with_record(&object, &r);
        let health = argo.health(&guarded);
        assert_eq!(health.status, "Suspended");
        assert!(
            health.message().starts_with(&format!("{reason}; run: ")),
            "{health:?}"
        );
        assert_eq!(flux.status(&guarded), Kstatus::InProgress);
    }

    // Versions that look like the record's own fields, and one ending in a
    // backslash: the state is still the record's.
    for (state, want) in [
        (RefreshState::Completed, Kstatus::Current),
        (RefreshState::Failed, Kstatus::Failed),
        (RefreshState::RollingOut, Kstatus::InProgress),
    ] {
        let mut tricky = record(
            r#"1.7.0","to":"x","started":"y","state":"Paused"#,
            "1.8.0\\",
            state,
            None,
        );
        tricky.reason = (state == RefreshState::Failed).then(|| "broken".into());
        let guarded = with_record(&settled_statefulset(), &tricky);
        let health = argo.health(&guarded);
        assert_eq!(flux_for(&health.status), want, "{state:?}: {health:?}");
        assert_eq!(flux.status(&guarded), want, "{state:?}");
        if state == RefreshState::RollingOut {
            assert!(
                health.message().starts_with(
                    "refresh 1.7.0\",\"to\":\"x\",\"started\":\"y\",\"state\":\"Paused → 1.8.0\\: "
                ),
                "{health:?}"
            );
        }
    }
}

#[test]
fn without_the_string_library_only_a_record_needs_it_and_it_says_so() {
    let Some(argo) = Argo::new() else { return };
    let plain = settled_statefulset();
    assert_eq!(
        argo.health_without_string_library(&plain),
        argo.health(&plain)
    );
    let deployment = settled_deployment();
    assert_eq!(
        argo.health_without_string_library(&deployment),
        argo.health(&deployment)
    );
    let guarded = with_record(
        &deployment,
        &record("1.7.0", "1.8.0", RefreshState::Paused, Some("held")),
    );
    let health = argo.health_without_string_library(&guarded);
    assert_eq!(health.status, "Degraded");
    assert!(
        health
            .message()
            .contains("set resource.customizations.useOpenLibs.apps_Deployment to \"true\""),
        "{health:?}"
    );
}

/// The Lua source handed to `lua5.1` holds every byte as it was.
#[test]
fn lua_source_escapes_strings_byte_for_byte() {
    let value = json!({"a\"b": ["x\\y", "é\u{0}\n9", 1, 2.5, true, null], "n": null});
    assert_eq!(
        lua_value(&value),
        r#"{["a\"b"]={"x\\y","\195\169\000\0109",1,2.5,true,},}"#
    );
}
