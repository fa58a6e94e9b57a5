//! The decision core, judged on objects made by real kubectl edits
//! (tests/fixtures/generate.sh) and on live objects recorded from an API server.

mod common;

use common::*;
use serde_json::json;
use upgrade_guard::decide::{Change, NoCluster, Requester, Rule, Snapshot};
use upgrade_guard::workload::{REFRESH, RefreshRecord, RefreshState, Workload, WorkloadKind};

fn record(w: &Workload) -> RefreshRecord {
    w.refresh_record().expect("a refresh record").unwrap()
}

fn refused(v: &upgrade_guard::decide::Verdict, rule: Rule) {
    assert!(!v.allowed, "expected a refusal: {v:?}");
    assert_eq!(v.rule, Some(rule), "{}", v.reason);
    assert!(v.patch.is_empty(), "a refusal carries no patch");
}

/// The StatefulSet as recorded mid-refresh (1.7.0 → 1.8.0, pod 4 of 5
/// updated), with the record and partition the webhook would have written.
fn refreshing_with_record() -> Workload {
    let live = workload("generated/live-db-refreshing.json");
    let live = with(
        &live,
        "/spec/updateStrategy/rollingUpdate/partition",
        json!(4),
    );
    let text = r#"{"from":"1.7.0","to":"1.8.0","started":"2026-11-21T19:00:00Z","state":"RollingOut","partition":4}"#;
    with(
        &live,
        &format!("/metadata/annotations/{}", REFRESH.replace('/', "~1")),
        json!(text),
    )
}

#[test]
fn a_minor_step_is_allowed_and_starts_a_refresh_at_the_highest_ordinal() {
    let (old, new) = (
        workload("manifests/db.yaml"),
        workload("generated/db-1.8.0.yaml"),
    );
    let v = update(&old, &new, &policies());
    assert!(v.allowed, "{v:?}");
    assert_eq!(v.rule, None);
    assert_eq!(
        (v.from.as_deref(), v.to.as_deref()),
        (Some("1.7.0"), Some("1.8.0"))
    );
    assert!(
        v.audit_annotations().is_empty(),
        "a plain approval is not audited"
    );
    let after = patched(&new, &v);
    assert_eq!(
        after.partition(),
        Some(2),
        "3 replicas: only ordinal 2 refreshes first"
    );
    let r = record(&after);
    assert_eq!((r.from.as_str(), r.to.as_str()), ("1.7.0", "1.8.0"));
    assert_eq!(r.state, RefreshState::RollingOut);
    assert_eq!(r.partition, Some(2));
    assert_eq!(r.started, now());
}

#[test]
fn deciding_again_on_the_mutated_object_adds_nothing() {
    let (old, new) = (
        workload("manifests/db.yaml"),
        workload("generated/db-1.8.0.yaml"),
    );
    let first = update(&old, &new, &policies());
    let after = patched(&new, &first);
    // Re-invoked later (reinvocationPolicy: IfNeeded), with a later clock.
    let later = upgrade_guard::decide::decide(
        &Change::update(old.clone(), after.clone()),
        &policies(),
        &NoCluster,
        "2026-11-22T08:00:00Z".parse().unwrap(),
    );
    assert!(later.allowed);
    assert!(later.patch.is_empty(), "{:?}", later.patch);
    assert_eq!(record(&after).started, now(), "the start time is kept");
}

#[test]
fn skipping_a_minor_release_is_refused_with_the_next_step() {
    let v = update(
        &workload("manifests/db.yaml"),
        &workload("generated/db-1.9.0.yaml"),
        &policies(),
    );
    refused(&v, Rule::SkipVersion);
    assert!(
        v.reason.starts_with("StatefulSet shop/db: 1.7.0 → 1.9.0 skips 1.8.x: upgrade to 1.8.x first (rule skip-version, policy semver-db)"),
        "{}",
        v.reason
    );
    let audit = v.audit_annotations();
    assert_eq!(audit["rule"], "skip-version");
    assert_eq!(audit["from"], "1.7.0");
    assert_eq!(audit["to"], "1.9.0");
    assert!(
        audit.keys().all(|k| !k.contains('/')),
        "plain keys: the API server adds the prefix"
    );
}

#[test]
fn a_major_change_leaves_the_track() {
    let v = update(
        &workload("manifests/db.yaml"),
        &workload("generated/db-2.0.0.yaml"),
        &policies(),
    );
    refused(&v, Rule::CrossTrack);
    assert!(
        v.reason.contains("1.7.0 → 2.0.0 leaves release track 1.x"),
        "{}",
        v.reason
    );
    assert!(
        !v.reason.contains("force-to"),
        "crossTrack: deny cannot be forced, so no hint: {}",
        v.reason
    );
}

#[test]
fn an_image_without_a_version_is_an_unknown_version() {
    let v = update(
        &workload("manifests/db.yaml"),
        &workload("generated/db-latest.yaml"),
        &policies(),
    );
    refused(&v, Rule::UnknownVersion);
    assert!(
        v.reason.contains("1.7.0 → latest: the version is unknown"),
        "{}",
        v.reason
    );
}

#[test]
fn a_force_override_applies_to_its_exact_target_only_and_is_audited() {
    let old = workload("manifests/db.yaml");
    let v = update(
        &old,
        &workload("generated/db-1.9.0-forced.yaml"),
        &policies(),
    );
    assert!(v.allowed, "{}", v.reason);
    assert_eq!(v.rule, Some(Rule::Forced));
    assert!(
        v.reason.contains("forced past 1.7.0 → 1.9.0 skips 1.8.x"),
        "{}",
        v.reason
    );
    assert!(
        v.reason
            .ends_with("1.8 was withdrawn; vendor-approved jump"),
        "{}",
        v.reason
    );
    assert_eq!(v.audit_annotations()["rule"], "forced");
    assert!(v.warnings.iter().any(|w| w.contains("forced past")));
    assert_eq!(
        record(&patched(&workload("generated/db-1.9.0-forced.yaml"), &v)).to,
        "1.9.0"
    );

    let other = update(
        &old,
        &workload("generated/db-1.9.0-forced-other.yaml"),
        &policies(),
    );
    refused(&other, Rule::SkipVersion);
    assert!(
        other
            .reason
            .contains("upgradeguard.io/force-to is \"1.9.1\", which is not this target (1.9.0)"),
        "{}",
        other.reason
    );
}

#[test]
fn a_force_override_needs_a_reason_and_a_forceable_rule() {
    let old = workload("manifests/db.yaml");
    let no_reason = with(
        &workload("generated/db-1.9.0-forced.yaml"),
        "/metadata/annotations/upgradeguard.io~1force-reason",
        json!(" "),
    );
    let v = update(&old, &no_reason, &policies());
    refused(&v, Rule::SkipVersion);
    assert!(
        v.reason
            .contains("needs a non-empty upgradeguard.io/force-reason"),
        "{}",
        v.reason
    );

    let major = with(
        &workload("generated/db-2.0.0.yaml"),
        "/metadata/annotations",
        json!({
        "upgradeguard.io/force-to": "2.0.0", "upgradeguard.io/force-reason": "please"}),
    );
    let v = update(&old, &major, &policies());
    refused(&v, Rule::CrossTrack);
    assert!(
        v.reason
            .contains("rule cross-track cannot be forced under this policy"),
        "{}",
        v.reason
    );
}

#[test]
fn kyuubi_stays_on_its_major_minor_track() {
    let old = workload("manifests/kyuubi.yaml");
    let v = update(&old, &workload("generated/kyuubi-3.4.3.yaml"), &policies());
    assert!(v.allowed, "{}", v.reason);
    let v = update(&old, &workload("generated/kyuubi-3.5.0.yaml"), &policies());
    refused(&v, Rule::CrossTrack);
    assert!(
        v.reason
            .contains("3.4.1 → 3.5.0 leaves release track 3.4.x"),
        "{}",
        v.reason
    );
}

#[test]
fn a_sidecar_change_is_a_refresh_without_a_version_change() {
    let new = workload("generated/kyuubi-sidecar.yaml");
    let v = update(&workload("manifests/kyuubi.yaml"), &new, &policies());
    assert!(v.allowed, "{}", v.reason);
    let r = record(&patched(&new, &v));
    assert_eq!((r.from.as_str(), r.to.as_str()), ("3.4.1", "3.4.1"));
}

#[test]
fn protocol_v1_to_v3_must_go_through_v2() {
    let old = workload("manifests/clusterdb.yaml");
    let v = update(&old, &workload("generated/clusterdb-v3.yaml"), &policies());
    refused(&v, Rule::SkipVersion);
    assert!(
        v.reason.contains("v1 → v3 skips v2: upgrade to v2 first"),
        "{}",
        v.reason
    );
    let v = update(&old, &workload("generated/clusterdb-v2.yaml"), &policies());
    assert!(v.allowed);
    assert_eq!(
        patched(&workload("generated/clusterdb-v2.yaml"), &v).partition(),
        Some(4)
    );
}

#[test]
fn fate_deployment_releases_follow_the_matrix_and_need_a_statefulset_for_volumes() {
    let p = policies();
    let mysql = workload("manifests/fate/mysql.yaml");
    let v = update(&mysql, &workload("generated/fate-mysql-1.8.0.yaml"), &p);
    refused(&v, Rule::Matrix);
    assert!(
        v.reason
            .contains("Deployment-based 1.7 charts lose their PVs"),
        "{}",
        v.reason
    );
    let v = update(&mysql, &workload("generated/fate-mysql-1.7.2.yaml"), &p);
    refused(&v, Rule::RequireStatefulset);
    assert!(
        v.reason.contains("upgrade-guard migrate fate/mysql"),
        "{}",
        v.reason
    );

    let board = workload("manifests/fate/fateboard.yaml");
    let v = update(&board, &workload("generated/fate-fateboard-1.7.2.yaml"), &p);
    assert!(v.allowed, "no claims: nothing to convert: {}", v.reason);
    let r = record(&patched(
        &workload("generated/fate-fateboard-1.7.2.yaml"),
        &v,
    ));
    assert_eq!(
        (r.from.as_str(), r.to.as_str(), r.partition),
        ("1.7.0", "1.7.2", None)
    );
}

#[test]
fn a_deployment_with_a_single_node_claim_rolls_without_a_surge_pod() {
    let mysql = workload("manifests/fate/mysql.yaml");
    let v = decide_with(Change::create(mysql.clone()), &policies(), &NoCluster);
    assert!(v.allowed);
    assert!(
        v.patch_warnings
            .iter()
            .any(|w| w.contains("ReadWriteOnce claim mysql-data"))
    );
    let Workload::Deployment(d) = patched(&mysql, &v) else {
        unreachable!()
    };
    let rolling = d.spec.unwrap().strategy.unwrap().rolling_update.unwrap();
    assert_eq!(
        rolling.max_surge,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0))
    );

    // A claim the cluster knows as ReadWriteMany can take a surge pod.
    let mut cluster = Snapshot::default();
    let claim: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "mysql-data", "namespace": "fate"},
        "spec": {"accessModes": ["ReadWriteMany"]}}))
    .unwrap();
    cluster.insert_claim(&claim);
    let v = decide_with(Change::create(mysql), &policies(), &cluster);
    assert!(v.patch.is_empty());
}

#[test]
fn surge_zero_raises_max_unavailable_when_it_was_zero() {
    let mysql = with(
        &workload("manifests/fate/mysql.yaml"),
        "/spec/strategy",
        json!({
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}),
    );
    let v = decide_with(Change::create(mysql.clone()), &policies(), &NoCluster);
    let Workload::Deployment(d) = patched(&mysql, &v) else {
        unreachable!()
    };
    let rolling = d.spec.unwrap().strategy.unwrap().rolling_update.unwrap();
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int;
    assert_eq!(
        (rolling.max_surge, rolling.max_unavailable),
        (Some(Int(0)), Some(Int(1)))
    );
}

#[test]
fn during_a_refresh_scaling_config_volumes_and_strategy_changes_are_frozen() {
    let live = workload("generated/live-db-refreshing.json");
    let p = policies();
    let cases = [
        ("/spec/replicas", json!(7), "scaling from 5 to 7"),
        (
            "/spec/template/spec/containers/0/env/0/value",
            json!("standalone"),
            "changing the pod template",
        ),
        (
            "/spec/volumeClaimTemplates/0/spec/resources/requests/storage",
            json!("2Gi"),
            "changing volumeClaimTemplates",
        ),
        (
            "/spec/updateStrategy/type",
            json!("OnDelete"),
            "changing updateStrategy",
        ),
        (
            "/spec/template/spec/containers/0/image",
            json!("registry.example.com/shop/db:1.9.0"),
            "1.8.0 → 1.9.0 is refused while a rollout is in progress",
        ),
    ];
    for (pointer, value, says) in cases {
        let v = update(&live, &with(&live, pointer, value), &p);
        refused(&v, Rule::FrozenDuringRefresh);
        assert!(v.reason.contains(says), "{pointer}: {}", v.reason);
    }
}

#[test]
fn during_a_refresh_metadata_and_partition_steps_pass() {
    let live = workload("generated/live-db-refreshing.json");
    let p = policies();
    let annotated = with(
        &live,
        "/metadata/annotations/upgradeguard.io~1pause-after",
        json!("all"),
    );
    assert!(update(&live, &annotated, &p).allowed);
    let labelled = with(&live, "/metadata/labels/team", json!("storage"));
    assert!(update(&live, &labelled, &p).allowed);
    let held = with(
        &live,
        "/spec/updateStrategy/rollingUpdate/partition",
        json!(3),
    );
    assert!(update(&live, &held, &p).allowed);
}

#[test]
fn a_second_new_version_during_our_refresh_is_refused_but_rollback_is_allowed() {
    let live = refreshing_with_record();
    let p = policies();
    let next = with(
        &live,
        "/spec/template/spec/containers/0/image",
        json!("registry.example.com/shop/db:1.9.0"),
    );
    let v = update(&live, &next, &p);
    refused(&v, Rule::FrozenDuringRefresh);
    assert!(
        v.reason
            .contains("the refresh 1.7.0 → 1.8.0 is in progress"),
        "{}",
        v.reason
    );
    assert!(
        v.reason.contains("only a rollback to 1.7.0 is allowed"),
        "{}",
        v.reason
    );

    let back = with(
        &live,
        "/spec/template/spec/containers/0/image",
        json!("registry.example.com/shop/db:1.7.0"),
    );
    let v = update(&live, &back, &p);
    assert!(v.allowed, "{}", v.reason);
    let after = patched(&back, &v);
    let r = record(&after);
    assert_eq!(
        (r.from.as_str(), r.to.as_str(), r.state),
        ("1.8.0", "1.7.0", RefreshState::RollingBack)
    );
    assert_eq!(
        after.partition(),
        Some(4),
        "rollback starts again from the highest ordinal"
    );
    assert!(update(&live, &after, &p).patch.is_empty(), "idempotent");
}

#[test]
fn a_rollback_puts_back_everything_the_refresh_changed_or_is_frozen() {
    let live = refreshing_with_record();
    // A container added at the old version, the refreshed one left new.
    let mut added = json(&live);
    let mut old_one = added["spec"]["template"]["spec"]["containers"][0].clone();
    old_one["name"] = json!("db-old");
    old_one["image"] = json!("registry.example.com/shop/db:1.7.0");
    added["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(old_one);
    let v = update(&live, &of(added), &policies());
    refused(&v, Rule::FrozenDuringRefresh);
    assert!(
        v.reason.contains("only a rollback to 1.7.0 is allowed"),
        "{}",
        v.reason
    );

    // With the images the refresh changed in the record, the rollback must
    // be the template as it was: the old image and nothing else.
    let mut r = record(&live);
    r.images = [(
        "db".to_string(),
        "registry.example.com/shop/db:1.7.0".to_string(),
    )]
    .into();
    let live = with(
        &live,
        &format!("/metadata/annotations/{}", REFRESH.replace('/', "~1")),
        json!(serde_json::to_string(&r).unwrap()),
    );
    let back = with(
        &live,
        "/spec/template/spec/containers/0/image",
        json!("registry.example.com/shop/db:1.7.0"),
    );
    assert!(update(&live, &back, &policies()).allowed);
    let back_and_more = with(
        &back,
        "/spec/template/metadata/labels/extra",
        json!("smuggled"),
    );
    refused(
        &update(&live, &back_and_more, &policies()),
        Rule::FrozenDuringRefresh,
    );
}

#[test]
fn the_freeze_is_an_allowlist_every_other_spec_field_is_frozen() {
    let live = refreshing_with_record();
    for (pointer, value, field) in [
        ("/spec/minReadySeconds", json!(30), "spec.minReadySeconds"),
        ("/spec/ordinals", json!({"start": 5}), "spec.ordinals"),
        (
            "/spec/persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Delete", "whenScaled": "Delete"}),
            "spec.persistentVolumeClaimRetentionPolicy",
        ),
        (
            "/spec/revisionHistoryLimit",
            json!(1),
            "spec.revisionHistoryLimit",
        ),
    ] {
        let v = update(&live, &with(&live, pointer, value), &policies());
        refused(&v, Rule::FrozenDuringRefresh);
        assert_eq!(
            v.reason,
            format!(
                "StatefulSet shop/db: changing {field} is refused while the refresh 1.7.0 → 1.8.0 is in progress (RollingOut); finish or roll back the refresh first (rule frozen-during-refresh, policy semver-db)"
            )
        );
    }
    // Raising the partition (holding units back) and labels that keep the
    // policy's selection are not frozen.
    assert!(
        update(
            &live,
            &with(
                &live,
                "/spec/updateStrategy/rollingUpdate/partition",
                json!(5)
            ),
            &policies()
        )
        .allowed
    );
    assert!(
        update(
            &live,
            &with(&live, "/metadata/labels/team", json!("storage")),
            &policies()
        )
        .allowed
    );
}

#[test]
fn a_rollback_without_our_record_can_be_forced_but_not_assumed() {
    let live = workload("generated/live-db-refreshing.json");
    let back = with(
        &live,
        "/spec/template/spec/containers/0/image",
        json!("registry.example.com/shop/db:1.7.0"),
    );
    let v = update(&live, &back, &policies());
    refused(&v, Rule::Downgrade);
    assert!(v.reason.contains("may be a rollback"), "{}", v.reason);
    assert!(
        v.reason.contains("upgradeguard.io/force-to: \"1.7.0\""),
        "{}",
        v.reason
    );
    let forced = with(
        &back,
        "/metadata/annotations/upgradeguard.io~1force-to",
        json!("1.7.0"),
    );
    let forced = with(
        &forced,
        "/metadata/annotations/upgradeguard.io~1force-reason",
        json!("1.8.0 crashes"),
    );
    let v = update(&live, &forced, &policies());
    assert!(v.allowed, "{}", v.reason);
    assert_eq!(v.rule, Some(Rule::Forced));
}

#[test]
fn a_gitops_reapply_keeps_the_live_partition_and_a_controller_step_is_kept() {
    let live = refreshing_with_record();
    let p = policies();
    let reset = with(
        &live,
        "/spec/updateStrategy/rollingUpdate/partition",
        json!(0),
    );
    let v = update(&live, &reset, &p);
    assert!(v.allowed, "{}", v.reason);
    assert_eq!(patched(&reset, &v).partition(), Some(4));
    assert!(
        v.patch_warnings.iter().any(|w| w.contains("kept it at 4")),
        "{:?}",
        v.patch_warnings
    );

    let step = with(
        &live,
        "/spec/updateStrategy/rollingUpdate/partition",
        json!(3),
    );
    let text = r#"{"from":"1.7.0","to":"1.8.0","started":"2026-11-21T19:00:00Z","state":"RollingOut","partition":3}"#;
    let step = with(
        &step,
        "/metadata/annotations/upgradeguard.io~1refresh",
        json!(text),
    );
    let controller = Requester {
        is_self: true,
        ..Default::default()
    };
    let change = Change::update(live.clone(), step.clone());
    let v = upgrade_guard::decide::decide_as(&change, &p, &NoCluster, now(), &controller);
    assert!(v.allowed && v.patch.is_empty(), "{v:?}");
}

#[test]
fn the_scale_subresource_is_judged_against_the_live_object() {
    let p = policies();
    let scale = || Change::Scale {
        kind: WorkloadKind::StatefulSet,
        namespace: "shop".into(),
        name: "db".into(),
        from: 5,
        to: 7,
    };
    let mut cluster = Snapshot::default();
    cluster.insert_workload(workload("generated/live-db-refreshing.json"));
    let v = decide_with(scale(), &p, &cluster);
    refused(&v, Rule::FrozenDuringRefresh);
    assert!(
        v.reason.starts_with(
            "StatefulSet shop/db: scaling from 5 to 7 is refused while a rollout is in progress"
        ),
        "{}",
        v.reason
    );

    let mut settled = Snapshot::default();
    settled.insert_workload(workload("generated/live-db-1.8.0.json"));
    assert!(decide_with(scale(), &p, &settled).allowed);

    let blind = decide_with(scale(), &p, &NoCluster);
    assert!(blind.allowed);
    assert!(
        blind.warnings[0].contains("a Scale carries no refresh state"),
        "{:?}",
        blind.warnings
    );
}

#[test]
fn an_unreadable_refresh_record_is_ignored_with_a_warning() {
    let unreadable = |w: &Workload| with(w, "/metadata/annotations", json!({REFRESH: "{not json"}));
    let old = unreadable(&workload("manifests/db.yaml"));
    let v = update(
        &old,
        &unreadable(&workload("generated/db-1.8.0.yaml")),
        &policies(),
    );
    assert!(v.allowed);
    assert!(
        v.warnings.iter().any(|w| w.contains("is unreadable")),
        "{:?}",
        v.warnings
    );
}

#[test]
fn workloads_no_policy_governs_pass_untouched() {
    let review = sample("deploy-update-set-image.json");
    let old = of(review["request"]["oldObject"].clone());
    let new = of(review["request"]["object"].clone());
    let v = update(&old, &new, &policies());
    assert!(v.allowed && v.patch.is_empty() && v.warnings.is_empty() && v.policy.is_none());
    let v = decide_with(
        Change::delete(workload("manifests/db.yaml")),
        &policies(),
        &NoCluster,
    );
    assert!(v.allowed && v.patch.is_empty());
}

const TWO_CONTAINERS: &str = r#"
apiVersion: upgradeguard.io/v1alpha1
kind: UpgradePolicy
metadata: {name: pair}
spec:
  selector: {matchLabels: {app: pair}}
  step: minor
"#;

fn pair(app: &str, sidecar: &str) -> Workload {
    of(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "pair", "namespace": "default", "labels": {"app": "pair"}},
        "spec": {"replicas": 2, "serviceName": "pair", "selector": {"matchLabels": {"app": "pair"}},
            "template": {"spec": {"containers": [
                {"name": "app", "image": format!("app:{app}")},
                {"name": "agent", "image": format!("agent:{sidecar}")}]}}}
    }))
}

#[test]
fn every_governed_container_is_checked_and_named() {
    let p = policy_text(TWO_CONTAINERS);
    let v = update(&pair("1.0.0", "2.0.0"), &pair("1.1.0", "2.2.0"), &p);
    refused(&v, Rule::SkipVersion);
    assert!(
        v.reason
            .contains("container agent: 2.0.0 → 2.2.0 skips 2.1.x"),
        "{}",
        v.reason
    );

    let new = pair("1.1.0", "2.1.0");
    let v = update(&pair("1.0.0", "2.0.0"), &new, &p);
    assert!(v.allowed);
    let r = record(&patched(&new, &v));
    assert_eq!(r.containers["agent"].to, "2.1.0");
    assert_eq!(r.containers["app"].from, "1.0.0");
}

#[test]
fn versions_can_come_from_a_pod_template_label_or_a_digest() {
    let by_label = policy_text(
        "apiVersion: upgradeguard.io/v1alpha1\nkind: UpgradePolicy\nmetadata: {name: l}\nspec:\n  selector: {}\n  version: {source: label, label: app.kubernetes.io/version}\n",
    );
    let labelled = |v: &str| {
        with(
            &workload("manifests/db.yaml"),
            "/spec/template/metadata/labels/app.kubernetes.io~1version",
            json!(v),
        )
    };
    let v = update(&labelled("1.7.0"), &labelled("1.9.0"), &by_label);
    refused(&v, Rule::SkipVersion);

    let by_digest = policy_text(
        "apiVersion: upgradeguard.io/v1alpha1\nkind: UpgradePolicy\nmetadata: {name: d}\nspec:\n  selector: {}\n  version:\n    digests: {\"sha256:aaa\": 1.7.0, \"sha256:bbb\": 1.8.0, \"sha256:ccc\": 1.9.0}\n",
    );
    let pinned = |d: &str| {
        with(
            &workload("manifests/db.yaml"),
            "/spec/template/spec/containers/0/image",
            json!(format!("registry.example.com/shop/db@{d}")),
        )
    };
    assert!(update(&pinned("sha256:aaa"), &pinned("sha256:bbb"), &by_digest).allowed);
    refused(
        &update(&pinned("sha256:aaa"), &pinned("sha256:ccc"), &by_digest),
        Rule::SkipVersion,
    );
    refused(
        &update(&pinned("sha256:aaa"), &pinned("sha256:zzz"), &by_digest),
        Rule::UnknownVersion,
    );
}

#[test]
fn a_new_digest_under_an_unchanged_tag_is_an_unknown_version_unless_mapped() {
    let image = |i: &str| {
        with(
            &workload("manifests/db.yaml"),
            "/spec/template/spec/containers/0/image",
            json!(format!("registry.example.com/shop/db:{i}")),
        )
    };
    let (a, b) = ("1.7.0@sha256:aaa", "1.7.0@sha256:bbb");
    let v = update(&image(a), &image(b), &policies());
    refused(&v, Rule::UnknownVersion);
    assert_eq!(
        v.reason,
        "StatefulSet shop/db: registry.example.com/shop/db:1.7.0@sha256:aaa → registry.example.com/shop/db:1.7.0@sha256:bbb: the digest changed under the same tag, and the digest is what runs; spec.version.digests does not map sha256:bbb, so the version it runs is unknown (rule unknown-version, policy semver-db)"
    );
    // Pinning a digest for the first time is such a change too.
    refused(
        &update(&image("1.7.0"), &image(a), &policies()),
        Rule::UnknownVersion,
    );
    // Mapped, the digest's version is judged.
    let text = std::fs::read_to_string(root().join("policies/semver-db.yaml")).unwrap();
    let mapped = policy_text(&text.replace(
        "  track: major\n",
        "  version: {digests: {\"sha256:bbb\": 1.7.0}}\n  track: major\n",
    ));
    assert!(update(&image(a), &image(b), &mapped).allowed);
    // A new tag with its digest is read by the tag.
    assert!(update(&image(a), &image("1.8.0@sha256:ddd"), &policies()).allowed);
}

#[test]
fn a_deployment_from_before_upgrade_guard_is_not_frozen_by_our_own_surge_fix() {
    // Created without a strategy, mounting a claim, mid-rollout.
    let old = with(
        &workload("manifests/fate/mysql.yaml"),
        "/status",
        json!({
        "replicas": 2, "updatedReplicas": 1, "observedGeneration": 1}),
    );
    let new = with(&old, "/metadata/labels/team", json!("data"));
    let first = update(&old, &new, &policies());
    assert!(first.allowed, "{}", first.reason);
    assert!(!first.patch.is_empty(), "maxSurge is set to 0");
    let again = update(&old, &patched(&new, &first), &policies());
    assert!(again.allowed, "{}", again.reason);
    assert!(again.patch.is_empty());
}

#[test]
fn a_rollback_that_writes_out_the_default_strategy_is_not_frozen_when_decided_again() {
    // A StatefulSet whose manifest never set updateStrategy, mid-refresh.
    let live = refreshing_with_record();
    let bare = with(&live, "/spec/updateStrategy", serde_json::Value::Null);
    let bare = with(&bare, "/status/observedGeneration", json!(1));
    let bare = with(&bare, "/metadata/generation", json!(2));
    let back = with(
        &bare,
        "/spec/template/spec/containers/0/image",
        json!("registry.example.com/shop/db:1.7.0"),
    );
    let first = update(&bare, &back, &policies());
    assert!(first.allowed, "{}", first.reason);
    let after = patched(&back, &first);
    let again = update(&bare, &after, &policies());
    assert!(again.allowed, "{}", again.reason);
    assert!(again.patch.is_empty(), "{:?}", again.patch);
}

// ---- Renaming, adding or removing governed containers. ----

/// semver-db without `containers:`: every container carries the version.
fn all_containers_governed() -> upgrade_guard::policy::PolicySet {
    let text = std::fs::read_to_string(root().join("policies/semver-db.yaml")).unwrap();
    policy_text(&text.replace("  containers: [db]\n", ""))
}

#[test]
fn a_renamed_container_that_runs_the_governed_repository_is_still_governed() {
    let (old, new) = (
        workload("manifests/db.yaml"),
        workload("generated/db-2.0.0-renamed.yaml"),
    );
    let v = update(&old, &new, &policies());
    refused(&v, Rule::CrossTrack);
    assert_eq!(
        v.reason,
        "StatefulSet shop/db: 1.7.0 → 2.0.0 leaves release track 1.x: an in-place refresh stays within it; stay within 1.x (rule cross-track, policy semver-db)"
    );
    // Renamed at the same version: nothing to judge, a plain refresh.
    let v = update(&old, &workload("generated/db-renamed.yaml"), &policies());
    assert!(v.allowed, "{}", v.reason);
}

#[test]
fn renaming_the_named_container_away_from_its_image_is_refused_by_a_rule_of_its_own() {
    let old = workload("manifests/db.yaml");
    let new = with(
        &workload("generated/db-renamed.yaml"),
        "/spec/template/spec/containers/0/image",
        json!("registry.example.com/shop/other:2.0.0"),
    );
    let v = update(&old, &new, &policies());
    refused(&v, Rule::GovernedContainerRemoved);
    assert_eq!(
        v.reason,
        "StatefulSet shop/db: the new pod template runs none of the containers the policy names (db), which ran db 1.7.0: its version could no longer be checked; keep the container names, or change the policy first (rule governed-container-removed, policy semver-db); to accept the risk, set upgradeguard.io/force-to: \"none\" and upgradeguard.io/force-reason"
    );
}

#[test]
fn a_decoy_under_the_governed_name_does_not_hide_the_image_that_runs() {
    let old = workload("manifests/db.yaml");
    let mut value = json(&old);
    let containers = &mut value["spec"]["template"]["spec"]["containers"];
    let mut real = containers[0].clone();
    real["name"] = json!("engine");
    real["image"] = json!("registry.example.com/shop/db:1.9.0");
    containers[0]["image"] = json!("registry.example.com/shop/decoy:1.7.0");
    containers.as_array_mut().unwrap().push(real);
    let v = update(&old, &of(value.clone()), &policies());
    refused(&v, Rule::SkipVersion);
    // The same in an init container.
    let mut init = json(&old);
    init["spec"]["template"]["spec"]["initContainers"] =
        json!([{"name": "migrate", "image": "registry.example.com/shop/db:1.9.0"}]);
    refused(&update(&old, &of(init), &policies()), Rule::SkipVersion);
}

#[test]
fn a_rename_with_every_container_governed_is_judged_on_the_versions_it_runs() {
    let (old, new) = (
        workload("manifests/db.yaml"),
        workload("generated/db-2.0.0-renamed.yaml"),
    );
    let v = update(&old, &new, &all_containers_governed());
    refused(&v, Rule::CrossTrack);
    assert_eq!(
        (v.from.as_deref(), v.to.as_deref()),
        (Some("1.7.0"), Some("2.0.0")),
        "never a version compared with itself"
    );
    // Renamed at the same version: nothing to judge, a plain refresh.
    let v = update(
        &old,
        &workload("generated/db-renamed.yaml"),
        &all_containers_governed(),
    );
    assert!(v.allowed, "{}", v.reason);
}

#[test]
fn an_added_container_is_judged_against_the_workloads_version() {
    let old = workload("manifests/db.yaml");
    let mut sidecar = json(&old);
    let mut second = sidecar["spec"]["template"]["spec"]["containers"][0].clone();
    second["name"] = json!("replica");
    second["image"] = json!("registry.example.com/shop/db:1.9.0");
    sidecar["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(second);
    let v = update(&old, &of(sidecar), &all_containers_governed());
    refused(&v, Rule::SkipVersion);
    assert_eq!(
        (v.from.as_deref(), v.to.as_deref()),
        (Some("1.7.0"), Some("1.9.0"))
    );
}

#[test]
fn removing_every_named_container_can_be_forced_as_none() {
    let old = workload("manifests/db.yaml");
    let new = with(
        &with(
            &workload("generated/db-renamed.yaml"),
            "/spec/template/spec/containers/0/image",
            json!("registry.example.com/shop/other:2.0.0"),
        ),
        "/metadata/annotations",
        json!({"upgradeguard.io/force-to": "none", "upgradeguard.io/force-reason": "the chart renamed the container"}),
    );
    let v = update(&old, &new, &policies());
    assert!(v.allowed, "{}", v.reason);
    assert_eq!(v.rule, Some(Rule::Forced));
}

// ---- The refresh record is upgrade-guard's alone. ----

const FORGED: &str = r#"{"from":"1.2.0","to":"1.9.0","started":"2026-11-21T19:00:00Z","state":"RollingOut","partition":2}"#;

fn with_record(w: &Workload, text: &str) -> Workload {
    with(
        w,
        &format!("/metadata/annotations/{}", REFRESH.replace('/', "~1")),
        json!(text),
    )
}

fn annotated(w: &Workload) -> Workload {
    with(w, "/metadata/annotations", json!({}))
}

#[test]
fn a_record_written_by_a_metadata_only_update_is_refused() {
    let old = annotated(&workload("manifests/db.yaml"));
    let v = update(&old, &with_record(&old, FORGED), &policies());
    refused(&v, Rule::RecordIntegrity);
    assert_eq!(
        v.reason,
        "StatefulSet shop/db: the upgradeguard.io/refresh annotation is upgrade-guard's record of a refresh, written only by upgrade-guard; this request changes it (rule record-integrity)"
    );
    assert!(v.is_audited());
}

#[test]
fn a_record_removed_or_rewritten_by_a_user_is_refused_and_upgrade_guard_may_write_it() {
    let live = refreshing_with_record();
    let mut removed = json(&live);
    removed["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove(REFRESH);
    refused(
        &update(&live, &of(removed), &policies()),
        Rule::RecordIntegrity,
    );
    let rewritten = with_record(&live, &FORGED.replace("1.9.0", "1.8.0"));
    refused(
        &update(&live, &rewritten, &policies()),
        Rule::RecordIntegrity,
    );

    let controller = Requester {
        is_self: true,
        ..Default::default()
    };
    let change = Change::update(live.clone(), rewritten);
    let v = upgrade_guard::decide::decide_as(&change, &policies(), &NoCluster, now(), &controller);
    assert!(v.allowed, "{}", v.reason);
}

#[test]
fn every_field_of_the_record_is_upgrade_guards_times_included() {
    let live = refreshing_with_record();
    let edit = |change: &dyn Fn(&mut RefreshRecord)| {
        let mut r = record(&live);
        change(&mut r);
        with_record(&live, &serde_json::to_string(&r).unwrap())
    };
    let future: jiff::Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let past: jiff::Timestamp = "2020-01-01T00:00:00Z".parse().unwrap();
    // A unit that never times out, a refresh that started long ago, a hook
    // marked done: each is refused.
    for (what, forged) in [
        ("unitStarted", edit(&|r| r.unit_started = Some(future))),
        ("started", edit(&|r| r.started = past)),
        ("resumed", edit(&|r| r.resumed = true)),
        (
            "hooks",
            edit(&|r| {
                r.hooks.insert(
                    "preRefresh".into(),
                    upgrade_guard::workload::HookMark::Completed,
                );
            }),
        ),
    ] {
        let v = update(&live, &forged, &policies());
        assert_eq!(v.rule, Some(Rule::RecordIntegrity), "{what}: {}", v.reason);
    }
    // The same record, written again as it was, is no change.
    let same = edit(&|_| {});
    assert!(update(&live, &same, &policies()).allowed);
}

#[test]
fn the_record_the_mutating_webhook_wrote_into_the_same_request_is_accepted() {
    let (old, new) = (
        workload("manifests/db.yaml"),
        workload("generated/db-1.8.0.yaml"),
    );
    let mutated = patched(&new, &update(&old, &new, &policies()));
    assert!(mutated.refresh_record().is_some());
    let v = update(&old, &mutated, &policies());
    assert!(v.allowed, "{}", v.reason);

    // The same request with the record's origin forged is not.
    let mut forged = record(&mutated);
    forged.from = "1.2.0".into();
    let forged = with_record(&mutated, &serde_json::to_string(&forged).unwrap());
    refused(&update(&old, &forged, &policies()), Rule::RecordIntegrity);
}

#[test]
fn an_object_created_with_a_record_is_refused() {
    let created = with_record(&annotated(&workload("manifests/db.yaml")), FORGED);
    let v = decide_with(Change::create(created), &policies(), &NoCluster);
    refused(&v, Rule::RecordIntegrity);
}

/// The sentence a refusal ends with for a user RBAC does not let force.
const DEV_MAY_NOT_FORCE: &str = "; upgradeguard.io/force-to is set, but dev@example.com may not force: an override needs the RBAC verb `force` on upgradepolicies.upgradeguard.io in namespace shop, which the ClusterRole upgrade-guard-force grants (`kubectl -n shop create rolebinding upgrade-guard-force --clusterrole=upgrade-guard-force --user=USER`)";

/// `change` decided for dev@example.com, whom RBAC does not let force.
fn as_dev_who_may_not_force(change: Change) -> upgrade_guard::decide::Verdict {
    let denied = Requester {
        is_self: false,
        overrides: upgrade_guard::decide::Overrides::Denied {
            user: "dev@example.com".into(),
            namespace: "shop".into(),
        },
    };
    upgrade_guard::decide::decide_as(&change, &policies(), &NoCluster, now(), &denied)
}

#[test]
fn an_override_rbac_denied_is_refused_with_the_rule_that_would_grant_it() {
    let (old, new) = (
        workload("manifests/db.yaml"),
        workload("generated/db-1.9.0-forced.yaml"),
    );
    assert_eq!(update(&old, &new, &policies()).rule, Some(Rule::Forced));
    let v = as_dev_who_may_not_force(Change::update(old, new));
    refused(&v, Rule::SkipVersion);
    assert!(v.reason.ends_with(DEV_MAY_NOT_FORCE), "{}", v.reason);
}

#[test]
fn going_on_past_a_failed_step_is_an_override_rbac_must_allow() {
    let live = refreshing_with_record();
    let forced = with(
        &live,
        "/metadata/annotations/upgradeguard.io~1resume",
        json!("force: the backup ran by hand"),
    );
    // Allowed unasked (offline), as an audited override.
    let v = update(&live, &forced, &policies());
    assert!(v.allowed, "{}", v.reason);
    assert_eq!(v.rule, Some(Rule::Forced));
    assert!(v.is_audited());
    assert_eq!(
        v.reason,
        "StatefulSet shop/db: forced past a failed step of the refresh (resume --force): the backup ran by hand"
    );
    // RBAC says no: refused, naming the right it takes.
    let v = as_dev_who_may_not_force(Change::update(live.clone(), forced));
    refused(&v, Rule::FrozenDuringRefresh);
    assert_eq!(
        v.reason,
        "StatefulSet shop/db: going on past a failed step (upgradeguard.io/resume: force) is an override, and dev@example.com may not force: it needs the RBAC verb `force` on upgradepolicies.upgradeguard.io in namespace shop, which the ClusterRole upgrade-guard-force grants (rule frozen-during-refresh, policy semver-db)"
    );
    // A plain resume is nobody's override.
    let plain = with(
        &live,
        "/metadata/annotations/upgradeguard.io~1resume",
        json!("true"),
    );
    let v = as_dev_who_may_not_force(Change::update(live, plain));
    assert!(v.allowed && v.rule.is_none(), "{v:?}");
}

#[test]
fn a_user_who_may_not_force_sees_the_rbac_sentence_not_the_record_the_mutation_wrote() {
    let (old, new) = (
        workload("manifests/db.yaml"),
        workload("generated/db-1.9.0-forced.yaml"),
    );
    // The mutating webhook (which asks no RBAC) wrote a record for the
    // forced change; the validating webhook then judges it as this user.
    let mutated = patched(&new, &update(&old, &new, &policies()));
    assert!(mutated.annotation(REFRESH).is_some());
    let v = as_dev_who_may_not_force(Change::update(old, mutated));
    refused(&v, Rule::SkipVersion);
    assert!(v.reason.ends_with(DEV_MAY_NOT_FORCE), "{}", v.reason);
}

#[test]
fn an_override_left_by_an_earlier_request_is_spent() {
    let forced = workload("generated/db-1.9.0-forced.yaml");
    // The forced change itself passes: the request sets the override.
    assert_eq!(
        update(&workload("manifests/db.yaml"), &forced, &policies()).rule,
        Some(Rule::Forced)
    );
    // Set on its own first, then the version changed: the override was not
    // set with the change it would let through.
    let annotated_only = with(
        &workload("manifests/db.yaml"),
        "/metadata/annotations",
        forced
            .metadata()
            .annotations
            .clone()
            .map_or(json!({}), |a| json!(a)),
    );
    let v = update(&annotated_only, &forced, &policies());
    refused(&v, Rule::SkipVersion);
    assert!(
        v.reason.ends_with("; upgradeguard.io/force-to \"1.9.0\" was set by an earlier request, and an override counts only in the request that sets it: set upgradeguard.io/force-to and upgradeguard.io/force-reason together with this change"),
        "{}",
        v.reason
    );
    // Left on the workload after the forced upgrade, it does not force the
    // workload out of its policy.
    let at_target = patched(
        &forced,
        &update(&workload("manifests/db.yaml"), &forced, &policies()),
    );
    let unlabelled = with(&at_target, "/metadata/labels", json!({}));
    let v = update(&at_target, &unlabelled, &policies());
    refused(&v, Rule::LeftPolicy);
    assert!(
        v.reason
            .contains("upgradeguard.io/force-to \"1.9.0\" was set by an earlier request"),
        "{}",
        v.reason
    );
    // A new reason is a new override, set by this request.
    let reasoned = with(
        &unlabelled,
        "/metadata/annotations/upgradeguard.io~1force-reason",
        json!("decommissioning db; its data is archived"),
    );
    assert_eq!(
        update(&at_target, &reasoned, &policies()).rule,
        Some(Rule::Forced)
    );
}

// ---- A governed workload cannot leave its policy quietly. ----

#[test]
fn dropping_the_label_its_policy_selects_is_refused_so_the_three_step_route_stops_at_once() {
    let (old, unlabelled) = (
        workload("manifests/db.yaml"),
        workload("generated/db-unlabelled.yaml"),
    );
    let v = update(&old, &unlabelled, &policies());
    refused(&v, Rule::LeftPolicy);
    assert_eq!(
        v.reason,
        "StatefulSet shop/db: this change removes what made policy semver-db select it (its labels now {}); a governed workload cannot leave its policy quietly: change the policy, or keep the labels (rule left-policy, policy semver-db); to accept the risk, set upgradeguard.io/force-to: \"1.7.0\" and upgradeguard.io/force-reason"
    );
    // Forced for the version it runs, it leaves, audibly.
    let forced = with(
        &unlabelled,
        "/metadata/annotations",
        json!({"upgradeguard.io/force-to": "1.7.0", "upgradeguard.io/force-reason": "handing db to the new team's policy"}),
    );
    let v = update(&old, &forced, &policies());
    assert!(v.allowed, "{}", v.reason);
    assert_eq!(v.rule, Some(Rule::Forced));
    // Dropping the label and jumping a major in one go is judged by the policy it leaves.
    let v = update(
        &old,
        &workload("generated/db-unlabelled-2.0.0.yaml"),
        &policies(),
    );
    refused(&v, Rule::LeftPolicy);
}

#[test]
fn a_workload_no_policy_selected_before_or_after_is_ungoverned() {
    let v = update(
        &workload("generated/db-unlabelled.yaml"),
        &workload("generated/db-unlabelled-2.0.0.yaml"),
        &policies(),
    );
    assert!(v.allowed && v.policy.is_none(), "{v:?}");
}

// ---- OnDelete is the operator's choice: left as it is, said so. ----

#[test]
fn an_on_delete_statefulset_keeps_its_strategy_with_a_warning_and_its_path_is_still_checked() {
    let old = workload("generated/db-ondelete.yaml");
    let new = workload("generated/db-ondelete-1.8.0.yaml");
    let v = update(&old, &new, &policies());
    assert!(v.allowed, "{}", v.reason);
    assert!(
        v.patch.iter().all(|op| !serde_json::to_string(op)
            .unwrap()
            .contains("updateStrategy")),
        "{:?}",
        v.patch
    );
    let after = patched(&new, &v);
    assert!(after.is_on_delete());
    assert_eq!(record(&after).partition, None);
    for warnings in [&v.warnings, &v.patch_warnings] {
        assert!(
            warnings.iter().any(|w| w.starts_with("upgrade-guard: StatefulSet shop/db uses updateStrategy OnDelete, which upgrade-guard leaves as it is")),
            "{warnings:?}"
        );
    }
    refused(
        &update(
            &old,
            &workload("generated/db-ondelete-1.9.0.yaml"),
            &policies(),
        ),
        Rule::SkipVersion,
    );
}
