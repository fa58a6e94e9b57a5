//! The data guard: every pod is judged against the version its claims last
//! served, and only upgrade-guard writes that version.

mod common;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use serde_json::{Value, json};
use upgrade_guard::claim::{SERVED, Served, ServedVersion};
use upgrade_guard::decide::data::{judge_claim, judge_pod, mounts, served_after};
use upgrade_guard::decide::{Requester, Rule, Snapshot};
use upgrade_guard::policy::PolicySet;
use upgrade_guard::webhook::{Caller, Endpoint, review};
use upgrade_guard::workload::{REFRESH, Workload};

const POD: &str = include_str!("data/pods/pod-db-0.json");
const WEB: &str = include_str!("data/pods/pod-web.json");

fn policies() -> PolicySet {
    let text = include_str!("../policies/semver-db.yaml");
    PolicySet::new(PolicySet::parse(text, "semver-db.yaml").unwrap()).unwrap()
}

fn pod(edit: impl FnOnce(&mut Value)) -> Pod {
    let mut value: Value = serde_json::from_str(POD).unwrap();
    edit(&mut value);
    serde_json::from_value(value).unwrap()
}

fn set_images(image: &str) -> impl FnOnce(&mut Value) {
    move |p| {
        p["spec"]["containers"][0]["image"] = json!(image);
        p["spec"]["initContainers"][0]["image"] = json!(image);
    }
}

fn served(version: &str, previous: Option<&str>) -> Served {
    Served {
        policy: "semver-db".into(),
        versions: [(
            "db".to_string(),
            ServedVersion {
                version: version.into(),
                previous: previous.map(str::to_string),
            },
        )]
        .into(),
    }
}

fn claim(name: &str, record: Option<&str>) -> PersistentVolumeClaim {
    let mut value = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    });
    if let Some(record) = record {
        value["metadata"]["annotations"] = json!({SERVED: record});
    }
    serde_json::from_value(value).unwrap()
}

fn cluster(record: Option<&Served>) -> Snapshot {
    let mut cluster = Snapshot::default();
    cluster.insert_claim(&claim("data-db-0", record.map(Served::text).as_deref()));
    cluster
}

#[test]
fn a_pod_at_a_skipped_release_is_refused_on_a_claim_served_at_the_old_one() {
    let cluster = cluster(Some(&served("1.7.0", None)));
    let skipped = pod(set_images("registry.example/db:1.9.0"));
    let verdict = judge_pod(None, &skipped, &policies(), &cluster);
    assert!(!verdict.allowed);
    assert_eq!(verdict.rule, Some(Rule::SkipVersion));
    assert_eq!(
        verdict.reason,
        "Pod shop/db-0: claim data-db-0 was last served by db 1.7.0, and 1.7.0 → 1.9.0 skips 1.8.x: upgrade to 1.8.x first (rule skip-version, policy semver-db); the data guard admits no pod on a claim at a version its policy does not allow from the one that last served it: change the version through the workload, one allowed step at a time"
    );
    assert_eq!(
        (verdict.from.as_deref(), verdict.to.as_deref()),
        (Some("1.7.0"), Some("1.9.0"))
    );
    // The next release passes, and so does the same one.
    for ok in ["registry.example/db:1.8.0", "registry.example/db:1.7.0"] {
        let verdict = judge_pod(None, &pod(set_images(ok)), &policies(), &cluster);
        assert!(verdict.allowed, "{ok}: {}", verdict.reason);
    }
}

#[test]
fn every_container_list_and_any_name_running_the_repository_is_read() {
    let cluster = cluster(Some(&served("1.7.0", None)));
    // Only the init container runs the skipped release.
    let init =
        pod(|p| p["spec"]["initContainers"][0]["image"] = json!("registry.example/db:1.9.0"));
    let verdict = judge_pod(None, &init, &policies(), &cluster);
    assert_eq!(verdict.rule, Some(Rule::SkipVersion), "{}", verdict.reason);
    // A decoy keeps the governed name; another container runs the data's
    // image, from a mirror under another registry.
    let decoy = pod(|p| {
        p["spec"]["containers"][0]["image"] = json!("registry.example/decoy:1.7.0");
        p["spec"]["containers"][1]["image"] = json!("mirror.example:5000/db:1.9.0");
    });
    let verdict = judge_pod(None, &decoy, &policies(), &cluster);
    assert_eq!(verdict.rule, Some(Rule::SkipVersion), "{}", verdict.reason);
    // An ephemeral container (`kubectl debug`) is a container too.
    let debug = pod(|p| {
        p["spec"]["ephemeralContainers"] =
            json!([{"name": "debugger", "image": "registry.example/db:2.0.0"}])
    });
    let verdict = judge_pod(Some(&pod(|_| {})), &debug, &policies(), &cluster);
    assert_eq!(verdict.rule, Some(Rule::CrossTrack), "{}", verdict.reason);
    // A tool that is not the data's image may mount the claim.
    let backup = pod(|p| {
        p["spec"]["containers"] = json!([{"name": "db", "image": "busybox:1.36"}]);
        p["spec"]["initContainers"] = json!([]);
    });
    assert!(judge_pod(None, &backup, &policies(), &cluster).allowed);
}

#[test]
fn an_unreadable_version_on_a_served_claim_is_refused() {
    let cluster = cluster(Some(&served("1.7.0", None)));
    let latest = pod(set_images("registry.example/db:latest"));
    let verdict = judge_pod(None, &latest, &policies(), &cluster);
    assert_eq!(verdict.rule, Some(Rule::UnknownVersion));
    assert!(
        verdict.reason.contains(
            "1.7.0 → latest: the version is unknown (tag latest: \"latest\" is not a version"
        ),
        "{}",
        verdict.reason
    );
}

#[test]
fn a_rollback_to_the_claims_previous_version_passes_and_no_further() {
    let cluster = cluster(Some(&served("1.8.0", Some("1.7.0"))));
    let back = judge_pod(
        None,
        &pod(set_images("registry.example/db:1.7.0")),
        &policies(),
        &cluster,
    );
    assert!(back.allowed, "{}", back.reason);
    let further = judge_pod(
        None,
        &pod(set_images("registry.example/db:1.6.0")),
        &policies(),
        &cluster,
    );
    assert_eq!(further.rule, Some(Rule::Downgrade), "{}", further.reason);
}

#[test]
fn an_image_edited_in_place_is_judged_and_other_pod_updates_are_not() {
    let cluster = cluster(Some(&served("1.7.0", None)));
    let old = pod(|_| {});
    let edited = pod(set_images("registry.example/db:1.9.0"));
    assert_eq!(
        judge_pod(Some(&old), &edited, &policies(), &cluster).rule,
        Some(Rule::SkipVersion)
    );
    // A label change starts nothing.
    let relabelled = pod(|p| p["metadata"]["labels"] = json!({"app": "other"}));
    let mut stale = old.clone();
    stale.spec.as_mut().unwrap().containers[0].image = Some("registry.example/db:1.9.0".into());
    let mut relabelled_stale = relabelled.clone();
    relabelled_stale.spec = stale.spec.clone();
    assert!(judge_pod(Some(&stale), &relabelled_stale, &policies(), &cluster).allowed);
}

#[test]
fn claims_without_a_record_and_pods_without_claims_pass() {
    let skipped = pod(set_images("registry.example/db:1.9.0"));
    assert!(judge_pod(None, &skipped, &policies(), &cluster(None)).allowed);
    let web: Pod = serde_json::from_str(WEB).unwrap();
    assert!(
        judge_pod(
            None,
            &web,
            &policies(),
            &cluster(Some(&served("1.7.0", None)))
        )
        .allowed
    );
}

#[test]
fn a_damaged_record_fails_closed_and_a_policy_gone_warns() {
    let mut cluster = Snapshot::default();
    cluster.insert_claim(&claim("data-db-0", Some("{not json")));
    let verdict = judge_pod(None, &pod(|_| {}), &policies(), &cluster);
    assert_eq!(verdict.rule, Some(Rule::RecordIntegrity));
    assert!(
        verdict.reason.starts_with(
            "Pod shop/db-0: claim data-db-0 carries an unreadable upgradeguard.io/served record ("
        ),
        "{}",
        verdict.reason
    );
    let mut gone = served("1.7.0", None);
    gone.policy = "retired".into();
    let verdict = judge_pod(
        None,
        &pod(set_images("registry.example/db:1.9.0")),
        &policies(),
        &self::cluster(Some(&gone)),
    );
    assert!(verdict.allowed);
    assert_eq!(
        verdict.warnings,
        [
            "upgrade-guard: claim data-db-0 was last served under policy retired, which is no longer loaded: pod shop/db-0 is not checked against it"
        ]
    );
}

fn statefulset(record: Option<Value>) -> Workload {
    let mut value = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "shop", "labels": {"app.kubernetes.io/name": "db"}},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "db"}},
            "serviceName": "db",
            "replicas": 3,
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": "db"}},
                "spec": {"containers": [{"name": "db", "image": "registry.example/db:1.9.0"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}}],
        },
    });
    if let Some(record) = record {
        value["metadata"]["annotations"] = json!({REFRESH: record.to_string()});
    }
    Workload::from(serde_json::from_value::<StatefulSet>(value).unwrap())
}

#[test]
fn a_step_the_workloads_own_refresh_record_admitted_passes() {
    // alice was allowed to force 1.7.0 → 1.9.0 on the StatefulSet: its
    // refresh record says so, and its pods may start on its claims.
    let forced = json!({"from": "1.7.0", "to": "1.9.0", "started": "2026-11-21T19:00:00Z", "state": "RollingOut"});
    let mut cluster = cluster(Some(&served("1.7.0", None)));
    cluster.insert_workload(statefulset(Some(forced.clone())));
    let skipped = pod(set_images("registry.example/db:1.9.0"));
    let verdict = judge_pod(None, &skipped, &policies(), &cluster);
    assert!(verdict.allowed, "{}", verdict.reason);
    // Not another step, not another workload's claim, not a finished record.
    let cross = pod(set_images("registry.example/db:2.0.0"));
    assert!(!judge_pod(None, &cross, &policies(), &cluster).allowed);
    let elsewhere = pod(|p| {
        set_images("registry.example/db:1.9.0")(p);
        p["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = json!("data-other-0");
    });
    let mut other = cluster.clone();
    other.insert_claim(&claim("data-other-0", Some(&served("1.7.0", None).text())));
    assert!(!judge_pod(None, &elsewhere, &policies(), &other).allowed);
    let mut done = forced;
    done["state"] = json!("Completed");
    let mut finished = self::cluster(Some(&served("1.7.0", None)));
    finished.insert_workload(statefulset(Some(done)));
    assert!(!judge_pod(None, &skipped, &policies(), &finished).allowed);
}

#[test]
fn a_statefulsets_claims_are_its_templates_per_ordinal() {
    let sts = statefulset(None);
    assert!(mounts(&sts, "data-db-0"));
    assert!(mounts(&sts, "data-db-12"));
    for not in [
        "data-db-",
        "data-db-x",
        "data-dbx-0",
        "logs-db-0",
        "data-db-0-1",
    ] {
        assert!(!mounts(&sts, not), "{not}");
    }
}

#[test]
fn only_upgrade_guard_writes_a_claims_record() {
    let record = served("1.7.0", None).text();
    let user = Requester::default();
    let created = judge_claim(None, &claim("data-db-0", Some(&record)), &user);
    assert!(!created.allowed);
    assert_eq!(
        created.reason,
        "PersistentVolumeClaim shop/data-db-0: the upgradeguard.io/served annotation is upgrade-guard's record of the version that last served this claim, written only by upgrade-guard; this request creates a claim with it (rule record-integrity)"
    );
    let before = claim("data-db-0", Some(&record));
    for after in [
        claim("data-db-0", None),
        claim("data-db-0", Some(&served("1.9.0", Some("1.7.0")).text())),
    ] {
        let verdict = judge_claim(Some(&before), &after, &user);
        assert_eq!(verdict.rule, Some(Rule::RecordIntegrity));
        assert!(
            verdict.reason.contains("this request changes it"),
            "{}",
            verdict.reason
        );
        let ours = Requester {
            is_self: true,
            ..Default::default()
        };
        assert!(judge_claim(Some(&before), &after, &ours).allowed);
    }
    // Any other change to the claim is not the guard's business.
    let mut resized = before.clone();
    resized.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
    assert!(judge_claim(Some(&before), &resized, &user).allowed);
    assert!(judge_claim(None, &claim("data-db-0", None), &user).allowed);
}

#[test]
fn a_ready_pod_records_its_version_and_keeps_the_one_before() {
    let sts = statefulset(None);
    let first = served_after(&pod(|_| {}), None, &policies(), Some(&sts)).unwrap();
    assert_eq!(first, served("1.7.0", None));
    // Unchanged: nothing to write.
    assert_eq!(
        served_after(&pod(|_| {}), Some(&first.text()), &policies(), None),
        None
    );
    let upgraded = pod(set_images("registry.example/db:1.8.0"));
    let second = served_after(&upgraded, Some(&first.text()), &policies(), None).unwrap();
    assert_eq!(second, served("1.8.0", Some("1.7.0")));
    // A pod no policy reads a version from records nothing; a damaged
    // record is never overwritten.
    let web: Pod = serde_json::from_str(WEB).unwrap();
    assert_eq!(served_after(&web, None, &policies(), None), None);
    assert_eq!(
        served_after(&upgraded, Some("{"), &policies(), Some(&sts)),
        None
    );
}

/// A pod review as the API server sends it, on `sub` if given.
fn pod_review(operation: &str, object: &Pod, old: Option<&Pod>, sub: Option<&str>) -> Vec<u8> {
    let json = |p: &Pod| serde_json::to_value(p).unwrap();
    let mut review = common::pod_review(operation, &json(object), old.map(json).as_ref());
    if let Some(sub) = sub {
        review["request"]["subResource"] = json!(sub);
    }
    serde_json::to_vec(&review).unwrap()
}

#[test]
fn the_webhook_answers_pod_and_claim_reviews() {
    let cluster = cluster(Some(&served("1.7.0", None)));
    let now = "2026-11-22T00:00:00Z".parse().unwrap();
    let answer = |body: &[u8]| {
        review(
            body,
            Endpoint::Validate,
            &policies(),
            &cluster,
            now,
            &Caller::default(),
        )
        .unwrap()
    };
    let skipped = pod(set_images("registry.example/db:1.9.0"));
    let refused = answer(&pod_review("CREATE", &skipped, None, None));
    assert!(!refused.verdict.allowed);
    let body: Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(body["response"]["status"]["code"], 403);
    assert_eq!(body["response"]["auditAnnotations"]["rule"], "skip-version");
    // `kubectl set image pod/…` and `kubectl debug` are UPDATEs.
    let edited = answer(&pod_review("UPDATE", &skipped, Some(&pod(|_| {})), None));
    assert!(!edited.verdict.allowed);
    let debug = answer(&pod_review(
        "UPDATE",
        &skipped,
        Some(&pod(|_| {})),
        Some("ephemeralcontainers"),
    ));
    assert!(!debug.verdict.allowed);
    // A pod without a claim is answered before it is read whole: even a
    // field of the wrong type elsewhere is not looked at.
    let mut web: Value = serde_json::from_str(WEB).unwrap();
    web["spec"]["containers"][0]["env"] = json!("not a list");
    let mut body: Value =
        serde_json::from_slice(&pod_review("CREATE", &pod(|_| {}), None, None)).unwrap();
    body["request"]["object"] = web;
    assert!(answer(&serde_json::to_vec(&body).unwrap()).verdict.allowed);
    // Its metadata is still read, and the wrong kind named.
    body["request"]["object"]["kind"] = json!("Deployment");
    body["request"]["object"]["apiVersion"] = json!("apps/v1");
    let err = review(
        &serde_json::to_vec(&body).unwrap(),
        Endpoint::Validate,
        &policies(),
        &cluster,
        now,
        &Caller::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("expected v1 Pod, found apps/v1 Deployment"),
        "{err}"
    );
    // With a claim, a bad field is named.
    let mut bad: Value =
        serde_json::from_slice(&pod_review("CREATE", &skipped, None, None)).unwrap();
    bad["request"]["object"]["spec"]["containers"][0]["image"] = json!(7);
    let err = review(
        &serde_json::to_vec(&bad).unwrap(),
        Endpoint::Validate,
        &policies(),
        &cluster,
        now,
        &Caller::default(),
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("the body is not an AdmissionReview: request.object.spec.containers[0].image: invalid type: integer `7`"), "{err}");
    // A claim written by a user is refused; by upgrade-guard, allowed.
    let mut claim_review: Value =
        serde_json::from_slice(&pod_review("UPDATE", &skipped, None, None)).unwrap();
    let request = &mut claim_review["request"];
    request["kind"] = json!({"group": "", "version": "v1", "kind": "PersistentVolumeClaim"});
    request["resource"] =
        json!({"group": "", "version": "v1", "resource": "persistentvolumeclaims"});
    request["object"] = serde_json::to_value(claim(
        "data-db-0",
        Some(&served("1.9.0", Some("1.7.0")).text()),
    ))
    .unwrap();
    request["oldObject"] =
        serde_json::to_value(claim("data-db-0", Some(&served("1.7.0", None).text()))).unwrap();
    let body = serde_json::to_vec(&claim_review).unwrap();
    assert_eq!(answer(&body).verdict.rule, Some(Rule::RecordIntegrity));
    let ours = Caller {
        self_user: Some("system:serviceaccount:upgrade-guard:upgrade-guard".into()),
        ..Default::default()
    };
    claim_review["request"]["userInfo"]["username"] =
        json!("system:serviceaccount:upgrade-guard:upgrade-guard");
    let body = serde_json::to_vec(&claim_review).unwrap();
    assert!(
        review(&body, Endpoint::Validate, &policies(), &cluster, now, &ours)
            .unwrap()
            .verdict
            .allowed
    );
}
