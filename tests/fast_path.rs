//! The quick read of a review never answers differently from the full one:
//! on the recorded API-server reviews, on reviews of kubectl-made objects,
//! and on generated ones (keys reordered, strings escaped, unicode, numbers
//! as the API server writes them). Wherever the quick way answers, its
//! answer (verdict, rule, reason, patch, warnings, response bytes, audit
//! facts) must equal the full way's, and the full way must not have failed.

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use upgrade_guard::decide::{ClusterView, NoCluster, Overrides};
use upgrade_guard::manifest;
use upgrade_guard::policy::PolicySet;
use upgrade_guard::webhook::{Caller, Endpoint, ReviewError, Reviewed, review, review_in_full};

/// Who asks: anyone; upgrade-guard itself; someone RBAC denies overrides.
fn callers() -> [Caller; 3] {
    [
        Caller::default(),
        Caller {
            self_user: Some("cluster-admin".into()),
            ..Default::default()
        },
        Caller {
            self_user: None,
            overrides: Overrides::Denied {
                user: "cluster-admin".into(),
                namespace: "shop".into(),
            },
        },
    ]
}

/// Both ways on one body, every endpoint and caller: whether the quick way
/// answered. Panics on a difference.
fn same_answers(body: &[u8], policies: &PolicySet, what: &str) -> bool {
    let mut quick_answered = None;
    for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
        for caller in callers() {
            let quick = review_quick(body, endpoint, policies, &caller);
            let full = review_in_full(body, endpoint, policies, &NoCluster, now(), &caller);
            if let Some(quick) = &quick {
                match &full {
                    Ok(full) => assert_eq!(
                        quick,
                        full,
                        "{what}: {endpoint:?} for {caller:?}: the quick way answered {} but the full way {}",
                        String::from_utf8_lossy(&quick.body),
                        String::from_utf8_lossy(&full.body)
                    ),
                    Err(e) => {
                        panic!("{what}: the quick way answered, the full way refused the body: {e}")
                    }
                }
            }
            // Whether it answers depends on the body alone.
            let answered = quick.is_some();
            assert_eq!(*quick_answered.get_or_insert(answered), answered, "{what}");
        }
    }
    quick_answered.unwrap_or(false)
}

fn compact(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

#[test]
fn every_recorded_review_is_answered_alike_and_the_updates_the_quick_way() {
    let policies = policies();
    let mut quick = Vec::new();
    for entry in std::fs::read_dir(samples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let review: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        // As recorded (indented) and as the API server sends it (compact).
        let indented = std::fs::read(&path).unwrap();
        let answered = same_answers(&compact(&review), &policies, &name);
        assert_eq!(same_answers(&indented, &policies, &name), answered);
        if answered {
            quick.push(name);
        }
    }
    quick.sort();
    // Updates of the workloads themselves; creates, deletes, scale
    // subresources and dry-run creates go the full way.
    assert_eq!(
        quick,
        [
            "deploy-update-set-image.json",
            "sts-update-annotate.json",
            "sts-update-client-side-apply.json",
            "sts-update-patch-partition.json",
            "sts-update-rollout-undo.json",
            "sts-update-server-side-apply-dry-run.json",
            "sts-update-set-image.json",
        ]
    );
}

/// The recorded set-image review with `old` and `new` as its objects.
fn update_of(old: &Value, new: &Value) -> Value {
    let kind = new["kind"].as_str().unwrap_or_default();
    let mut review = sample(if kind == "Deployment" {
        "deploy-update-set-image.json"
    } else {
        "sts-update-set-image.json"
    });
    let request = &mut review["request"];
    request["name"] = new["metadata"]["name"].clone();
    request["namespace"] = new["metadata"]["namespace"].clone();
    request["oldObject"] = old.clone();
    request["object"] = new.clone();
    review
}

/// Every workload the kubectl-made fixtures hold (tests/fixtures/generate.sh).
fn kubectl_made() -> Vec<(String, Value)> {
    let mut all = Vec::new();
    for dir in ["manifests", "generated"] {
        for entry in std::fs::read_dir(fixture(dir)).unwrap() {
            let path = entry.unwrap().path();
            if !path.is_file() {
                continue;
            }
            let Ok(objects) = manifest::read(path.to_str().unwrap()) else {
                continue;
            };
            for object in objects {
                let v = object.value;
                if v["apiVersion"] == "apps/v1"
                    && matches!(v["kind"].as_str(), Some("StatefulSet" | "Deployment"))
                {
                    all.push((path.file_name().unwrap().to_string_lossy().into(), v));
                }
            }
        }
    }
    all
}

#[test]
fn every_pair_of_kubectl_made_objects_is_answered_alike() {
    let policies = policies();
    let objects = kubectl_made();
    let (mut pairs, mut quick, mut same_rest) = (0, 0, 0);
    for (old_name, old) in &objects {
        for (new_name, new) in &objects {
            let same_workload = old["kind"] == new["kind"]
                && old["metadata"]["name"] == new["metadata"]["name"]
                && old["metadata"]["namespace"] == new["metadata"]["namespace"];
            if !same_workload {
                continue;
            }
            pairs += 1;
            let what = format!("{old_name} → {new_name}");
            let review = update_of(old, new);
            let answered = same_answers(&compact(&review), &policies, &what);
            // Read in place too, as twins, in either order: answered alike,
            // and the quick way where the texts read apart were.
            for twins in [false, true].map(|old_first| objects_last(&review, old_first)) {
                assert_eq!(same_answers(&twins, &policies, &what), answered, "{what}");
            }
            if answered {
                quick += 1;
            }
            // A template whose dropped fields are unchanged is read quickly.
            if dropped(&old["spec"]["template"]) == dropped(&new["spec"]["template"]) {
                same_rest += 1;
                assert!(answered, "{what}: not answered the quick way");
            }
        }
    }
    assert!(pairs > 100, "{pairs} pairs");
    assert!(same_rest * 4 > pairs, "{same_rest} of {pairs} pairs");
    assert!(
        quick >= same_rest,
        "{quick} of {pairs} answered the quick way"
    );
}

/// A template less what the quick read builds: what it keeps as text.
fn dropped(template: &Value) -> Value {
    let mut rest = template.clone();
    if let Some(meta) = rest.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("labels");
    }
    for (list, kept) in [
        ("containers", ["name", "image"]),
        ("volumes", ["name", "persistentVolumeClaim"]),
    ] {
        let items = rest.pointer_mut(&format!("/spec/{list}"));
        for item in items.and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(item) = item.as_object_mut() {
                for key in kept {
                    item.remove(key);
                }
            }
        }
    }
    rest
}

#[test]
fn a_template_that_differs_only_in_what_the_quick_read_drops_goes_the_full_way() {
    let policies = policies();
    let review = sample("sts-update-set-image.json");
    let mut env_only = review.clone();
    let template = "/request/object/spec/template/spec/containers/0";
    *env_only.pointer_mut(&format!("{template}/image")).unwrap() =
        review["request"]["oldObject"]["spec"]["template"]["spec"]["containers"][0]["image"]
            .clone();
    *env_only.pointer_mut(&format!("{template}/env")).unwrap() =
        json!([{"name": "DB_MODE", "value": "standalone"}]);
    assert!(!same_answers(&compact(&env_only), &policies, "env only"));
    // With the image changed too: a decision that compares templates (a
    // rollback must put back the template as it was) would see only the
    // image.
    let mut image_and_env = review.clone();
    *image_and_env
        .pointer_mut(&format!("{template}/env"))
        .unwrap() = json!([{"name": "DB_MODE", "value": "standalone"}]);
    assert!(!same_answers(
        &compact(&image_and_env),
        &policies,
        "image and env"
    ));
    // The same text in both: answered the quick way, as no change.
    let mut unchanged = env_only.clone();
    unchanged["request"]["object"]["spec"]["template"] =
        review["request"]["oldObject"]["spec"]["template"].clone();
    assert!(same_answers(&compact(&unchanged), &policies, "unchanged"));
}

/// An object no policy selects keeps its spec unread, until the other
/// object of the review turns out to be selected: then it is read, and
/// read as the full way reads it.
#[test]
fn a_spec_left_unread_is_read_when_the_other_object_is_governed() {
    let policies = policies();
    let review = sample("sts-update-set-image.json");
    let ungoverned = json!({"app.kubernetes.io/name": "web"});
    // Labels that no policy selects on the old object, the recorded ones on
    // the new: governed, both specs read.
    let mut relabelled = review.clone();
    relabelled["request"]["oldObject"]["metadata"]["labels"] = ungoverned.clone();
    assert!(same_answers(&compact(&relabelled), &policies, "relabelled"));
    let quick = quick_way(&compact(&relabelled), &policies).unwrap();
    assert!(quick.verdict.policy.is_some(), "{quick:?}");
    // The unread spec unreadable: the full way refuses, the quick way does
    // not answer.
    let mut broken = relabelled.clone();
    broken["request"]["oldObject"]["spec"]["replicas"] = json!("three");
    assert!(!same_answers(&compact(&broken), &policies, "broken"));
    assert!(full_way(&compact(&broken), &policies).is_err());
    // Neither selected: answered from the metadata, the broken spec unread,
    // both ways alike.
    broken["request"]["object"]["metadata"]["labels"] = ungoverned;
    assert!(same_answers(&compact(&broken), &policies, "neither"));
}

/// What an independent review found the quick way answering alone, each
/// now answered alike or declined: an object or a spec written as an array
/// (serde's derived readers take one, k8s-openapi's do not), a template key
/// given twice (the first value went unchecked), and init containers, which
/// a policy governs too (the quick read's template had none).
#[test]
fn arrays_repeated_keys_and_init_containers_are_read_as_the_full_way_reads_them() {
    let policies = policies();
    let review = sample("sts-update-set-image.json");
    let mut pod = pod_review("CREATE", &pod_file("pod-web.json"), None);
    pod["request"]["object"] = json!([null, null]);
    let body = compact(&pod);
    assert!(!same_answers(&body, &policies, "a pod as an array"));
    assert!(full_way(&body, &policies).is_err());

    let mut array_spec = review.clone();
    let spec = array_spec["request"]["object"]["spec"].clone();
    array_spec["request"]["object"]["spec"] =
        json!([spec["template"], spec["replicas"], spec["selector"]]);
    let body = compact(&array_spec);
    assert!(!same_answers(&body, &policies, "a spec as an array"));
    assert!(full_way(&body, &policies).is_err());

    // The template's spec twice, the first with an env that is no list.
    let text = String::from_utf8(compact(&review)).unwrap();
    let template = r#""template":{"#;
    let at = text.rfind(template).unwrap() + template.len();
    let twice = format!(
        "{}\"spec\":{{\"containers\":[{{\"name\":\"db\",\"env\":\"bad\"}}]}},{}",
        &text[..at],
        &text[at..]
    );
    assert!(!same_answers(twice.as_bytes(), &policies, "a key twice"));
    assert!(full_way(twice.as_bytes(), &policies).is_err());

    // An init container of the governed image, unchanged: governed too.
    let mut init = review.clone();
    for object in ["object", "oldObject"] {
        init["request"][object]["spec"]["template"]["spec"]["initContainers"] =
            json!([{"name": "init-db", "image": "registry.example.com/shop/db:1.7.0"}]);
    }
    assert!(same_answers(
        &compact(&init),
        &policies,
        "an init container"
    ));
    // Moved two minor versions on: judged, and refused, the quick way.
    init["request"]["object"]["spec"]["template"]["spec"]["initContainers"][0]["image"] =
        json!("registry.example.com/shop/db:1.9.0");
    assert!(same_answers(
        &compact(&init),
        &policies,
        "an init container skips"
    ));
    let quick = quick_way(&compact(&init), &policies).unwrap();
    assert!(
        !quick.verdict.allowed,
        "{}",
        String::from_utf8_lossy(&quick.body)
    );
}

/// The quick way types the old object's status and claim templates as a
/// copy of the new one's where they are the same text: where they differ,
/// each object is judged by its own.
#[test]
fn each_objects_status_and_claim_templates_are_its_own() {
    let policies = policies();
    let mut review = sample("sts-update-set-image.json");
    let old_image =
        review["request"]["oldObject"]["spec"]["template"]["spec"]["containers"][0]["image"]
            .clone();
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] = old_image;
    fn moving(review: &mut Value, object: &str) {
        review["request"][object]["status"]["updateRevision"] = json!("db-5c8d9f7b4");
    }
    fn scaled(review: &mut Value) {
        review["request"]["object"]["spec"]["replicas"] = json!(5);
    }
    fn claims_grown(review: &mut Value) {
        let storage = "/request/object/spec/volumeClaimTemplates/0/spec/resources/requests/storage";
        *review.pointer_mut(storage).unwrap() = json!("2Gi");
    }
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit, bool); 4] = [
        (
            "scaled, the old object mid-rollout",
            |r| {
                moving(r, "oldObject");
                scaled(r);
            },
            false,
        ),
        (
            "scaled, the new object mid-rollout",
            |r| {
                moving(r, "object");
                scaled(r);
            },
            true,
        ),
        (
            "claims grown, the old object mid-rollout",
            |r| {
                moving(r, "oldObject");
                claims_grown(r);
            },
            false,
        ),
        (
            "claims grown, both settled",
            |r| {
                claims_grown(r);
            },
            true,
        ),
    ];
    for (what, edit, allowed) in cases {
        let mut edited = review.clone();
        edit(&mut edited);
        let body = compact(&edited);
        assert!(
            same_answers(&body, &policies, what),
            "{what}: not answered the quick way"
        );
        let quick = quick_way(&body, &policies).unwrap();
        assert_eq!(
            quick.verdict.allowed,
            allowed,
            "{what}: {}",
            String::from_utf8_lossy(&quick.body)
        );
    }
}

#[test]
fn what_is_present_in_a_template_and_in_which_list_is_read_alike() {
    // Each pair differs only in what is there, or in which list a
    // container is, never in a name or an image: both ways must see that
    // the template changed (a restart of the same version, which starts a
    // refresh) or both not. The quick way answers each: what differs is
    // in what it reads.
    let policies = policies();
    let base = sample("sts-update-set-image.json");
    let template =
        |review: &Value, object: &str| review["request"][object]["spec"]["template"].clone();
    let db = template(&base, "oldObject")["spec"]["containers"][0].clone();
    let side = json!({"name": "side", "image": "side:1"});
    let claim = |read_only: bool| json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0", "readOnly": read_only}}]);
    let pairs: [(&str, Value, Value); 6] = [
        (
            "a container moved to the init containers",
            json!({"containers": [db, side]}),
            json!({"containers": [db], "initContainers": [side]}),
        ),
        (
            "no init containers, then an empty list",
            json!({"containers": [db]}),
            json!({"containers": [db], "initContainers": []}),
        ),
        (
            "a volume of a name alone added",
            json!({"containers": [db]}),
            json!({"containers": [db], "volumes": [{"name": "v"}]}),
        ),
        (
            "a claim mounted read-only, then not",
            json!({"containers": [db], "volumes": claim(true)}),
            json!({"containers": [db], "volumes": claim(false)}),
        ),
        (
            "the same spec",
            json!({"containers": [db]}),
            json!({"containers": [db]}),
        ),
        (
            "the same claim",
            json!({"containers": [db], "volumes": claim(true)}),
            json!({"containers": [db], "volumes": claim(true)}),
        ),
    ];
    for (what, old, new) in pairs {
        let mut review = base.clone();
        let changed = old != new;
        review["request"]["oldObject"]["spec"]["template"]["spec"] = old;
        review["request"]["object"]["spec"]["template"]["spec"] = new;
        let body = compact(&review);
        assert!(same_answers(&body, &policies, what), "{what}");
        // Read in place too, as twins: the containers that are the same
        // bytes in both objects are taken as the first object's.
        for twins in [false, true].map(|old_first| objects_last(&review, old_first)) {
            assert!(same_answers(&twins, &policies, what), "{what}");
        }
        let mutated = review_in_full(
            &body,
            Endpoint::Mutate,
            &policies,
            &NoCluster,
            now(),
            &Caller::default(),
        )
        .unwrap();
        assert_eq!(!mutated.verdict.patch.is_empty(), changed, "{what}");
    }
    // The template's metadata there, empty, or not there.
    let metadata = template(&base, "oldObject")["metadata"].clone();
    for (what, old, new) in [
        ("labels added", Some(json!({})), Some(metadata)),
        ("metadata gone", Some(json!({})), None),
        ("metadata empty", None, Some(json!({}))),
    ] {
        let mut review = base.clone();
        review["request"]["object"]["spec"]["template"] = template(&base, "oldObject");
        for (object, metadata) in [("oldObject", old), ("object", new)] {
            let template = review["request"][object]["spec"]["template"]
                .as_object_mut()
                .unwrap();
            match metadata {
                Some(m) => template.insert("metadata".into(), m),
                None => template.remove("metadata"),
            };
        }
        assert!(same_answers(&compact(&review), &policies, what), "{what}");
    }
    // A spec on one side only: its template has nothing to be compared
    // with, and goes the full way, which refuses it if it is broken.
    let mut review = base.clone();
    review["request"]["object"]["metadata"]["labels"]["app.kubernetes.io/name"] = json!("other");
    review["request"]["oldObject"]
        .as_object_mut()
        .unwrap()
        .remove("spec");
    assert!(!same_answers(&compact(&review), &policies, "one spec"));
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!(5);
    assert!(!same_answers(
        &compact(&review),
        &policies,
        "one broken spec"
    ));
    assert!(full_way(&compact(&review), &policies).is_err());
}

/// `review`'s body with its objects last in the request, as the API
/// server writes them (so that they are read in place, as twins), the
/// old one first if `old_first`. [`compact`] writes the keys in order:
/// the objects before the request's kind, which are then read as texts.
fn objects_last(review: &Value, old_first: bool) -> Vec<u8> {
    // An object with `last`, the members `keys`, written after its others.
    fn with_last(object: &Value, keys: &[&str], last: &str) -> Option<String> {
        let mut rest = object.as_object()?.clone();
        rest.retain(|key, _| !keys.contains(&key.as_str()));
        let rest = serde_json::to_string(&rest).ok()?;
        let members = &rest[1..rest.len() - 1];
        let comma = if members.is_empty() { "" } else { "," };
        Some(format!("{{{members}{comma}{last}}}"))
    }
    let objects = || {
        let request = review.get("request")?;
        let (old, new) = (request.get("oldObject")?, request.get("object")?);
        let (old, new) = (
            format!(r#""oldObject":{old}"#),
            format!(r#""object":{new}"#),
        );
        let last = if old_first {
            format!("{old},{new}")
        } else {
            format!("{new},{old}")
        };
        let request = with_last(request, &["oldObject", "object"], &last)?;
        with_last(review, &["request"], &format!(r#""request":{request}"#))
    };
    // Without both objects, as written in order.
    objects().map_or_else(|| compact(review), String::into_bytes)
}

#[test]
fn containers_and_volumes_the_same_in_both_objects_are_read_alike() {
    // The old object's containers and volumes that are the new one's
    // bytes are copied from the new one's, not read again (or the new
    // one's from the old one's, when the old one comes first).
    let policies = policies();
    let base = sample("sts-update-set-image.json");
    let pod = |object: &str| base["request"][object]["spec"]["template"]["spec"].clone();
    let sidecar = |i: usize| json!({"name": format!("side-{i}"), "image": format!("side:{i}"), "env": [{"name": "N", "value": i.to_string()}]});
    let volumes = json!([
        {"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}},
        {"name": "cache", "emptyDir": {}}
    ]);
    let mut review = base.clone();
    for object in ["oldObject", "object"] {
        let mut spec = pod(object);
        let containers = spec["containers"].as_array_mut().unwrap();
        containers.extend((1..5).map(sidecar));
        spec["initContainers"] = json!([sidecar(9)]);
        spec["volumes"] = volumes.clone();
        review["request"][object]["spec"]["template"]["spec"] = spec;
    }
    let bodies = |review: &Value| [false, true].map(|old_first| objects_last(review, old_first));
    for (body, what) in bodies(&review).iter().zip(["new first", "old first"]) {
        assert!(same_answers(body, &policies, what), "{what}");
        let quick = quick_way(body, &policies).unwrap();
        assert_eq!(
            quick,
            full_way(&compact(&review), &policies).unwrap(),
            "{what}"
        );
        let mutated = review_quick(body, Endpoint::Mutate, &policies, &Caller::default());
        let patch = mutated.unwrap().verdict.patch;
        assert!(
            !patch.is_empty(),
            "{what}: the image change starts a refresh"
        );
    }
    // A sidecar changed as well: a template whose other fields changed
    // goes the full way, whichever object comes first.
    let mut changed = review.clone();
    let env = "/request/oldObject/spec/template/spec/containers/2/env/0/value";
    *changed.pointer_mut(env).unwrap() = json!("other");
    for body in bodies(&changed) {
        assert!(!same_answers(&body, &policies, "changed"));
    }
    // A volume that is the same bytes as a container of the other object,
    // at the same count: not copied from a container; the full way
    // answers. (A quick read that read such a volume instead would be
    // right too; this declining shows the item was taken, then refused.)
    let mut odd = base.clone();
    let mut new = pod("object");
    new["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "cache"}));
    let mut old = pod("oldObject");
    old["volumes"] = json!([{"name": "cache"}]);
    odd["request"]["object"]["spec"]["template"]["spec"] = new;
    odd["request"]["oldObject"]["spec"]["template"]["spec"] = old;
    for body in bodies(&odd) {
        assert!(!same_answers(&body, &policies, "a volume as a container"));
        assert!(full_way(&body, &policies).is_ok());
    }
}

#[test]
fn an_ephemeral_container_in_a_template_is_governed_alike() {
    // The API server refuses ephemeral containers in a template, but a
    // review from anyone else may carry them: a policy governs them as it
    // governs the others (their image is the governed repository).
    let policies = policies();
    let mut review = sample("sts-update-set-image.json");
    for object in ["object", "oldObject"] {
        review["request"][object]["spec"]["template"]["spec"]["ephemeralContainers"] =
            json!([{"name": "debug", "image": "registry.example.com/shop/db:1.7.0"}]);
    }
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("registry.example.com/shop/db:1.9.0");
    let body = compact(&review);
    assert!(!same_answers(&body, &policies, "an ephemeral container"));
    let full = full_way(&body, &policies).unwrap();
    assert!(!full.verdict.allowed);
    // Two governed containers: the refusal names the one that skips.
    assert!(
        full.verdict
            .reason
            .contains(": container db: 1.7.0 → 1.9.0 skips"),
        "{}",
        full.verdict.reason
    );
}

/// The quick read checks a template's other fields once per text, and not
/// again for the very same text lately checked on this thread. A text one
/// value apart from one that passed is checked again; a text that failed
/// fails every time, whatever passed before or after it.
#[test]
fn a_template_checked_before_is_checked_again_when_any_value_differs() {
    let policies = policies();
    let review = sample("sts-update-set-image.json");
    let with = |place: &str, value: Value| {
        let mut edited = review.clone();
        for object in ["object", "oldObject"] {
            *edited["request"][object].pointer_mut(place).unwrap() = value.clone();
        }
        compact(&edited)
    };
    let passes = compact(&review);
    let message = "/spec/template/spec/containers/0/terminationMessagePath";
    // Each the length of the value it replaces ("/dev/termination-log",
    // "ClusterFirst", 30): the same size of text, not the same text.
    let fails = [
        with(message, json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])),
        with(message, json!({"a": "0123456789abcd"})),
        with(
            "/spec/template/spec/dnsPolicy",
            json!(12_345_678_901_234_u64),
        ),
        with(
            "/spec/template/spec/terminationGracePeriodSeconds",
            json!([]),
        ),
    ];
    for body in &fails {
        assert_eq!(body.len(), passes.len());
    }
    let other_text = with(message, json!("/dev/other-log"));
    for round in 0..3 {
        assert!(same_answers(&passes, &policies, "the recorded review"));
        for (i, body) in fails.iter().enumerate() {
            assert!(
                quick_way(body, &policies).is_none(),
                "round {round}, edit {i}: answered the quick way"
            );
            assert!(full_way(body, &policies).is_err(), "edit {i}");
        }
        assert!(same_answers(&other_text, &policies, "another message path"));
    }
}

/// The same text under the same key is checked by the type it sits in: a
/// pod's securityContext has no capabilities (ignored, as k8s-openapi
/// ignores unknown fields), a container's has, and 5 is not one. What
/// passed at the pod's level must not let the container's through.
#[test]
fn the_same_text_in_another_type_is_checked_again() {
    let policies = policies();
    let review = sample("sts-update-set-image.json");
    let with_spec = |spec_of: &dyn Fn(&Value) -> Value| {
        let mut edited = review.clone();
        for object in ["object", "oldObject"] {
            let spec = &mut edited["request"][object]["spec"]["template"]["spec"];
            let image = spec["containers"][0]["image"].clone();
            *spec = spec_of(&image);
        }
        compact(&edited)
    };
    let in_the_pod = with_spec(
        &|image| json!({"containers": [{"name": "db", "image": image}], "securityContext": {"capabilities": 5}}),
    );
    let in_the_container = with_spec(
        &|image| json!({"containers": [{"name": "db", "image": image, "securityContext": {"capabilities": 5}}]}),
    );
    assert!(full_way(&in_the_pod, &policies).is_ok());
    assert!(full_way(&in_the_container, &policies).is_err());
    for _ in 0..2 {
        assert!(same_answers(&in_the_pod, &policies, "in the pod"));
        assert!(
            quick_way(&in_the_container, &policies).is_none(),
            "in the container: answered the quick way"
        );
    }
}

fn pod_file(name: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pods/");
    serde_json::from_str(&std::fs::read_to_string(format!("{path}{name}")).unwrap()).unwrap()
}

/// A pod that mounts no claim is answered from its metadata the quick way,
/// its spec unread; one that mounts a claim goes the full way. Either way,
/// written any way, broken anywhere, alike.
#[test]
fn pod_reviews_are_answered_alike_and_without_claims_the_quick_way() {
    let policies = policies();
    let (web, db) = (pod_file("pod-web.json"), pod_file("pod-db-0.json"));
    for (what, review, quick) in [
        ("web CREATE", pod_review("CREATE", &web, None), true),
        ("web UPDATE", pod_review("UPDATE", &web, Some(&web)), true),
        ("db-0 CREATE", pod_review("CREATE", &db, None), false),
        ("db-0 UPDATE", pod_review("UPDATE", &db, Some(&db)), false),
        // The new pod decides: an old one with a claim, a new one without.
        ("claim dropped", pod_review("UPDATE", &web, Some(&db)), true),
        (
            "web DELETE",
            pod_review("DELETE", &Value::Null, Some(&web)),
            false,
        ),
    ] {
        assert_eq!(
            same_answers(&compact(&review), &policies, what),
            quick,
            "{what}"
        );
        let mut rng = 7;
        let mut shuffled = String::new();
        write_shuffled(&review, &mut rng, &mut shuffled);
        assert_eq!(
            same_answers(shuffled.as_bytes(), &policies, what),
            quick,
            "{what}"
        );
    }
    // Not a pod, or unreadable where the full read reads: the full way.
    for (what, edit) in [
        ("another kind", json!({"kind": "Secret"})),
        (
            "labels of numbers",
            json!({"metadata": {"labels": {"a": 1}}}),
        ),
        ("an unreadable uid", json!({"metadata": {"uid": 7}})),
        ("volumes not a list", json!({"spec": {"volumes": "data"}})),
    ] {
        let mut pod = web.clone();
        merge(&mut pod, &edit);
        let body = compact(&pod_review("CREATE", &pod, None));
        assert!(!same_answers(&body, &policies, what), "{what}");
        assert!(full_way(&body, &policies).is_err(), "{what}");
    }
    // Its spec is unread: a field of the wrong type is not looked at.
    let mut odd = web.clone();
    odd["spec"]["containers"] = json!("web");
    let body = compact(&pod_review("CREATE", &odd, None));
    assert!(same_answers(&body, &policies, "containers not a list"));
    // Every one-byte edit: answered the quick way only where the full way
    // answers it too, alike.
    let body = compact(&pod_review("CREATE", &web, None));
    let mut answered = 0;
    for at in 0..body.len() {
        for byte in [b',', b'"', b'}', b'\\'] {
            let mut edited = body.clone();
            edited[at] = byte;
            if same_answers(&edited, &policies, &String::from_utf8_lossy(&edited)) {
                answered += 1;
            }
        }
    }
    assert!(answered > 100, "{answered} answered");
}

/// `patch` written into `target`, object by object.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// What the quick read cannot vouch for goes the full way: objects missing a
/// field it relies on (the full read takes them as the API server's Go
/// decoder would, the field empty) and objects the full read refuses (it
/// names what is wrong). The odd but valid ones are answered alike.
#[test]
fn objects_missing_or_breaking_what_the_quick_read_relies_on_go_the_full_way() {
    let policies = policies();
    let (object, pod) = ("/request/object", "/request/object/spec/template/spec");
    let edited = |sample_name: &str, path: &str, value: Option<Value>| {
        let mut review = sample(sample_name);
        let (parent, key) = path.rsplit_once('/').unwrap();
        let parent = review.pointer_mut(parent).unwrap().as_object_mut().unwrap();
        match value {
            Some(v) => parent.insert(key.to_string(), v),
            None => parent.remove(key),
        };
        compact(&review)
    };
    let (sts, deploy) = ("sts-update-set-image.json", "deploy-update-set-image.json");
    let missing = [
        (
            "no template",
            edited(sts, &format!("{object}/spec/template"), None),
        ),
        (
            "no selector",
            edited(sts, &format!("{object}/spec/selector"), None),
        ),
        (
            "a pod without containers",
            edited(sts, &format!("{pod}/containers"), None),
        ),
        (
            "a container without a name",
            edited(
                sts,
                &format!("{pod}/containers"),
                Some(json!([{"image": "db:1"}])),
            ),
        ),
        (
            "a volume without a name",
            edited(
                sts,
                &format!("{pod}/volumes"),
                Some(json!([{"persistentVolumeClaim": {"claimName": "data"}}])),
            ),
        ),
        (
            "a deleted object without a template",
            edited("sts-delete.json", "/request/oldObject/spec/template", None),
        ),
    ];
    for (what, body) in &missing {
        assert!(
            !same_answers(body, &policies, what),
            "{what}: answered the quick way"
        );
    }
    let unreadable = [
        (
            "an unreadable status",
            edited(
                sts,
                &format!("{object}/status"),
                Some(json!({"replicas": "three"})),
            ),
            "request.object.status.replicas",
        ),
        (
            "another kind",
            edited(sts, &format!("{object}/kind"), Some(json!("Deployment"))),
            "request.object",
        ),
        (
            "a fractional replica count",
            edited(sts, &format!("{object}/spec/replicas"), Some(json!(2.5))),
            "request.object.spec.replicas",
        ),
    ];
    for (what, body, path) in &unreadable {
        assert!(
            !same_answers(body, &policies, what),
            "{what}: answered the quick way"
        );
        let full = review_in_full(
            body,
            Endpoint::Validate,
            &policies,
            &NoCluster,
            now(),
            &Caller::default(),
        );
        assert!(
            matches!(&full, Err(ReviewError::Malformed { path: p, .. }) if p == path),
            "{what}: {full:?}"
        );
    }
    let odd = [
        // No policy selects the recorded Deployment: answered from its
        // metadata, the spec unread, both ways.
        (
            "a Deployment without a selector",
            edited(deploy, &format!("{object}/spec/selector"), None),
        ),
        (
            "a template without metadata",
            edited(sts, &format!("{object}/spec/template/metadata"), None),
        ),
        // A Deployment has no claim templates: its spec's type ignores
        // them, whatever they are, and so does the quick way.
        ("a Deployment with claim templates of another type", {
            let mut review = sample(deploy);
            for object in ["object", "oldObject"] {
                review["request"][object]["spec"]["volumeClaimTemplates"] = json!([1]);
            }
            review["request"]["object"]["metadata"]["labels"] =
                json!({"app.kubernetes.io/name": "db"});
            compact(&review)
        }),
        // In both objects: a template whose dropped fields changed (the
        // containers' ports and env gone) is beyond the quick read.
        ("an empty list of containers", {
            let mut review = sample(sts);
            for object in ["object", "oldObject"] {
                review["request"][object]["spec"]["template"]["spec"]["containers"] = json!([]);
            }
            compact(&review)
        }),
    ];
    for (what, body) in &odd {
        assert!(
            same_answers(body, &policies, what),
            "{what}: not answered the quick way"
        );
    }
}

/// Every place in a recorded review, each given a value of another type:
/// the quick way answers only where the full way reads the body too, and
/// then alike. The full way reads every field of both objects into its
/// type; the quick way builds only a few, so it must still check the rest.
#[test]
fn a_value_of_the_wrong_type_anywhere_is_never_answered_the_quick_way_alone() {
    let policies = policies();
    // What a `Value` cannot hold is put into the text: a lone surrogate, a
    // number beyond f64, nesting past serde_json's limit of 128.
    const LONE: &str = "LONE-SURROGATE";
    const HUGE: &str = "HUGE-NUMBER";
    const DEEP: &str = "DEEP-NESTING";
    let in_text = |body: Vec<u8>| {
        String::from_utf8(body)
            .unwrap()
            .replace(LONE, "\\ud800")
            .replace(&format!("\"{HUGE}\""), "1e400")
            .replace(
                &format!("\"{DEEP}\""),
                &format!("{}{}", "[".repeat(130), "]".repeat(130)),
            )
    };
    let wrong = [
        json!("x"),
        json!(LONE),
        json!(HUGE),
        json!(DEEP),
        json!(7),
        json!(-1),
        json!(2.5),
        json!(4_294_967_296_u64),
        json!(true),
        json!(null),
        json!([]),
        json!({}),
        json!({"a": 1}),
    ];
    let mut refused = 0;
    for name in ["sts-update-set-image.json", "deploy-update-set-image.json"] {
        let review = sample(name);
        let mut places = Vec::new();
        pointers(&review["request"], "/request", &mut places);
        // A key the review does not have, at the top and in the request.
        places.extend(["/x".to_string(), "/request/x".to_string()]);
        assert!(places.len() > 100, "{name}: {} places", places.len());
        for place in &places {
            for value in &wrong {
                let mut edited = review.clone();
                match edited.pointer_mut(place) {
                    Some(at) => *at = value.clone(),
                    None => {
                        let (parent, key) = place.rsplit_once('/').unwrap();
                        let parent = edited.pointer_mut(parent).unwrap();
                        parent[key] = value.clone();
                    }
                }
                let what = format!("{name}: {place} = {value}");
                // The objects read apart, and read in place as twins.
                let bodies = [
                    compact(&edited),
                    objects_last(&edited, false),
                    objects_last(&edited, true),
                ];
                for body in bodies.map(in_text) {
                    let (quick, full) = (
                        quick_way(body.as_bytes(), &policies),
                        full_way(body.as_bytes(), &policies),
                    );
                    match (&quick, &full) {
                        (Some(quick), Ok(full)) => assert_eq!(quick, full, "{what}"),
                        (Some(_), Err(e)) => {
                            panic!("{what}: the quick way answered, the full way refused: {e}")
                        }
                        (None, Err(_)) => refused += 1,
                        (None, Ok(_)) => {}
                    }
                }
            }
        }
    }
    // Most of these edits are refused: the test reaches what it means to.
    assert!(refused > 3000, "{refused} refused");
}

/// serde_json refuses a body nesting 128 containers deep. The quick read
/// checks the fields of a template it does not build by their traced shapes
/// (any JSON, in managedFields' fieldsV1), so it must fail where serde_json
/// does: what it reads and what the full read refuses are one level apart.
#[test]
fn nesting_in_a_template_is_read_alike_up_to_serde_jsons_limit_and_refused_past_it() {
    let policies = policies();
    let review = sample("sts-update-set-image.json");
    // The review, request, object, spec, template, its metadata, the
    // managedFields list and its entry: fieldsV1's own list is the 9th.
    const LIMIT: usize = 128;
    let deep = |n: usize| {
        let mut edited = review.clone();
        for object in ["object", "oldObject"] {
            edited["request"][object]["spec"]["template"]["metadata"]["managedFields"] =
                json!([{"manager": "m", "fieldsV1": "NESTED"}]);
        }
        String::from_utf8(compact(&edited))
            .unwrap()
            .replace("\"NESTED\"", &format!("{}{}", "[".repeat(n), "]".repeat(n)))
    };
    let deeper = deep(LIMIT - 9);
    let quick = quick_way(deeper.as_bytes(), &policies).expect("answered the quick way");
    assert_eq!(quick, full_way(deeper.as_bytes(), &policies).unwrap());
    let deepest = deep(LIMIT - 8);
    assert!(quick_way(deepest.as_bytes(), &policies).is_none());
    let full = full_way(deepest.as_bytes(), &policies);
    assert!(
        matches!(&full, Err(ReviewError::Malformed { message, .. }) if message.contains("recursion limit")),
        "{full:?}"
    );
}

/// Every one-byte edit of a recorded review (a byte dropped, a comma, a
/// quote or a brace put in or over another) is answered the quick way only
/// where the full way answers it too, alike: a broken body, or one whose
/// edit lands in a field the quick read does not build, goes the full way.
#[test]
fn a_body_broken_anywhere_is_never_answered_the_quick_way_alone() {
    let policies = policies();
    let body = compact(&sample("sts-update-set-image.json"));
    let mut answered = 0;
    for at in 0..body.len() {
        let mut removed = body.clone();
        removed.remove(at);
        let mut variants = vec![removed];
        for byte in [b',', b'"', b'}'] {
            let mut inserted = body.clone();
            inserted.insert(at, byte);
            let mut replaced = body.clone();
            replaced[at] = byte;
            variants.extend([inserted, replaced]);
        }
        for edited in variants {
            let Some(quick) = quick_way(&edited, &policies) else {
                continue;
            };
            answered += 1;
            match full_way(&edited, &policies) {
                Ok(full) => assert_eq!(quick, full, "{}", String::from_utf8_lossy(&edited)),
                Err(e) => panic!(
                    "answered the quick way, refused the full way ({e}): {}",
                    String::from_utf8_lossy(&edited)
                ),
            }
        }
    }
    // Some edits leave a well-formed review (a byte inside a string): the
    // quick way still answers those.
    assert!(answered > 1000, "{answered} answered");
}

/// [`review`]'s answer when it answered the quick way, marked as the full
/// way's would be.
fn review_quick(
    body: &[u8],
    endpoint: Endpoint,
    policies: &PolicySet,
    caller: &Caller,
) -> Option<Reviewed> {
    let reviewed = review(body, endpoint, policies, &NoCluster, now(), caller).ok()?;
    reviewed.quick.then_some(Reviewed {
        quick: false,
        ..reviewed
    })
}

/// The quick way's answer to `body` at /validate, if it answers.
fn quick_way(body: &[u8], policies: &PolicySet) -> Option<Reviewed> {
    review_quick(body, Endpoint::Validate, policies, &Caller::default())
}

/// The full way's answer to `body` at /validate.
fn full_way(body: &[u8], policies: &PolicySet) -> Result<Reviewed, ReviewError> {
    at_validate(review_in_full, body, policies)
}

type Way<T> = fn(&[u8], Endpoint, &PolicySet, &dyn ClusterView, jiff::Timestamp, &Caller) -> T;

fn at_validate<T>(way: Way<T>, body: &[u8], policies: &PolicySet) -> T {
    way(
        body,
        Endpoint::Validate,
        policies,
        &NoCluster,
        now(),
        &Caller::default(),
    )
}

/// The JSON pointer of every value under `v`, `v` itself included.
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    out.push(at.to_string());
    let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                pointers(child, &format!("{at}/{}", escape(k)), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                pointers(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

// Generated reviews.

fn version() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..3, 5u64..11, 0u64..3).prop_map(|(a, b, c)| format!("{a}.{b}.{c}")),
        (1u64..3, 5u64..11).prop_map(|(a, b)| format!("v{a}.{b}")),
        Just("latest".to_string()),
        Just("1.8.0-rc.1".to_string()),
        "[a-z0-9.é_-]{0,8}",
    ]
}

/// A record as upgrade-guard writes it, or a forged or broken one.
fn record() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        (
            version(),
            version(),
            0i32..4,
            prop_oneof![
                Just("RollingOut"),
                Just("Paused"),
                Just("Completed"),
                Just("RollingBack")
            ]
        )
            .prop_map(|(from, to, partition, state)| json!({
                "from": from, "to": to, "started": "2026-11-21T19:00:00Z",
                "state": state, "partition": partition,
            })
            .to_string()),
        Just("{not json".to_string()),
    ])
}

#[derive(Debug, Clone)]
struct Edits {
    deployment: bool,
    delete: bool,
    old_image: String,
    new_image: String,
    labels: u8,
    old_record: Option<String>,
    new_record: Option<String>,
    force: Option<(String, String)>,
    replicas: (i64, i64),
    partition: Option<i64>,
    status: (i64, i64, i64),
    unicode: String,
    rename: bool,
    env_changes: bool,
    seed: u64,
}

fn edits() -> impl Strategy<Value = Edits> {
    (
        (
            any::<bool>(),
            prop::bool::weighted(0.1),
            version(),
            version(),
            0u8..4,
        ),
        (
            record(),
            record(),
            prop::option::of((version(), "[ -~é☃]{0,12}")),
        ),
        (
            (0i64..6, 0i64..6),
            prop::option::of(0i64..6),
            (0i64..6, 0i64..6, 0i64..(1 << 53)),
        ),
        (
            "[ -~éü☃\u{1F600}\\\\\"/<>&]{0,16}",
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.2),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (deployment, delete, old_version, new_version, labels),
                (old_record, new_record, force),
                (replicas, partition, status),
                (unicode, rename, env_changes, seed),
            )| Edits {
                deployment,
                delete,
                old_image: format!("registry.example.com/shop/db:{old_version}"),
                new_image: format!("registry.example.com/shop/db:{new_version}"),
                labels,
                old_record,
                new_record,
                force,
                replicas,
                partition,
                status,
                unicode,
                rename,
                env_changes,
                seed,
            },
        )
}

/// The recorded review of `edits`' kind, edited.
fn generated(e: &Edits) -> Value {
    let mut review = sample(if e.deployment {
        "deploy-update-set-image.json"
    } else {
        "sts-update-set-image.json"
    });
    let request = &mut review["request"];
    for (key, image, record, replicas) in [
        ("oldObject", &e.old_image, &e.old_record, e.replicas.0),
        ("object", &e.new_image, &e.new_record, e.replicas.1),
    ] {
        let object = &mut request[key];
        let container = &mut object["spec"]["template"]["spec"]["containers"][0];
        container["image"] = json!(image);
        if key == "object" && e.rename {
            container["name"] = json!("database");
        }
        if key == "object" && e.env_changes {
            container["env"] = json!([{"name": "MODE", "value": e.unicode}]);
        }
        object["spec"]["replicas"] = json!(replicas);
        let metadata = &mut object["metadata"];
        metadata["labels"]["note"] = json!(
            e.unicode
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
        );
        metadata["annotations"]["example.com/note"] = json!(e.unicode);
        match e.labels {
            0 => {}
            1 => metadata["labels"] = json!({}),
            2 => metadata["labels"] = json!({"app.kubernetes.io/name": "postgresql"}),
            _ => metadata["labels"]["app.kubernetes.io/name"] = json!("db"),
        }
        if let Some(record) = record {
            metadata["annotations"]["upgradeguard.io/refresh"] = json!(record);
        }
        if key == "object"
            && let Some((to, reason)) = &e.force
        {
            metadata["annotations"]["upgradeguard.io/force-to"] = json!(to);
            metadata["annotations"]["upgradeguard.io/force-reason"] = json!(reason);
        }
        if !e.deployment
            && let Some(p) = e.partition
        {
            object["spec"]["updateStrategy"] =
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": p}});
        }
        object["metadata"]["generation"] = json!(e.status.2 + 1);
        object["status"]["replicas"] = json!(e.status.0);
        object["status"]["updatedReplicas"] = json!(e.status.1);
        object["status"]["observedGeneration"] = json!(e.status.2);
    }
    if e.delete {
        request["operation"] = json!("DELETE");
        request["object"] = Value::Null;
    }
    review
}

/// JSON text of `v` as another writer might produce it: object keys in a
/// shuffled order, and some characters of strings (keys too) escaped.
fn write_shuffled(v: &Value, rng: &mut u64, out: &mut String) {
    fn next(rng: &mut u64) -> u64 {
        // xorshift64
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    }
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            for i in (1..entries.len()).rev() {
                entries.swap(i, (next(rng) % (i as u64 + 1)) as usize);
            }
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, next(rng), out);
                out.push(':');
                write_shuffled(value, rng, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_shuffled(item, rng, out);
            }
            out.push(']');
        }
        Value::String(s) => write_string(s, next(rng), out),
        other => out.push_str(&other.to_string()),
    }
}

/// A JSON string; with one chance in four, its characters escaped as
/// `\uXXXX` (Go escapes `<`, `>` and `&` that way) or `\/`.
fn write_string(s: &str, dice: u64, out: &mut String) {
    if !dice.is_multiple_of(4) {
        out.push_str(&Value::String(s.to_string()).to_string());
        return;
    }
    out.push('"');
    for (i, c) in s.chars().enumerate() {
        match c {
            '/' if i % 2 == 0 => out.push_str("\\/"),
            c if (i as u64 + dice).is_multiple_of(3) || c == '"' || c == '\\' || c < ' ' => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn generated_reviews_are_answered_alike(e in edits()) {
        let policies = policies();
        let review = generated(&e);
        same_answers(&compact(&review), &policies, &format!("{e:?}"));
        let mut rng = e.seed | 1;
        let mut shuffled = String::new();
        write_shuffled(&review, &mut rng, &mut shuffled);
        // Still the same review, only written differently.
        prop_assert_eq!(serde_json::from_str::<Value>(&shuffled).unwrap(), review);
        same_answers(shuffled.as_bytes(), &policies, &format!("shuffled {e:?}"));
    }
}

#[test]
fn most_generated_reviews_are_answered_the_quick_way() {
    // The property above would pass if the quick way always declined.
    let policies = policies();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut quick, total) = (0, 200);
    for _ in 0..total {
        let e = proptest::strategy::ValueTree::current(&edits().new_tree(&mut runner).unwrap());
        if same_answers(&compact(&generated(&e)), &policies, &format!("{e:?}")) {
            quick += 1;
        }
    }
    assert!(quick * 10 > total * 7, "{quick} of {total}");
}

/// The request's `options`, which no answer reads, are still checked as
/// the full read's `RawExtension` checks them: any JSON value, its numbers
/// in range and its strings (keys too) decodable. Spliced in as text, since
/// serde_json writes neither a lone surrogate nor 1e400.
#[test]
fn the_options_are_checked_as_the_full_read_checks_them() {
    let policies = policies();
    let with_options = |name: &str, options: &str| {
        let mut review = sample(name);
        review["request"]["options"] = json!("@options@");
        String::from_utf8(compact(&review))
            .unwrap()
            .replace(r#""@options@""#, options)
            .into_bytes()
    };
    let taken = [
        "null",
        "{}",
        r#"{"apiVersion":"meta.k8s.io/v1","kind":"UpdateOptions","fieldManager":"kubectl-set"}"#,
        r#"{"a":[1,-2,3.5e10,true,false,null,{"b":"c\u00e9\n\ud83d\ude00"}],"a":2}"#,
        r#"{"\u00e9\ud83d\ude00":"x"}"#,
        r#""text""#,
        "[]",
        "123456789012345678901234567890",
        "-1e300",
    ];
    let refused = [
        r#"{"a":1e400}"#,
        "-1e400",
        r#"{"a":"\ud800"}"#,
        r#"{"\ud800":1}"#,
        r#"["\udc00"]"#,
        r#"{"a":"\ud800\u0041"}"#,
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
    ];
    for name in ["sts-update-set-image.json", "sts-create-apply.json"] {
        for options in taken {
            let body = with_options(name, options);
            assert!(
                full_way(&body, &policies).is_ok(),
                "{name}: {options}: the full way takes it"
            );
            assert_eq!(
                same_answers(&body, &policies, options),
                quick_way(&with_options(name, "null"), &policies).is_some(),
                "{name}: {options}: answered the quick way as with no options"
            );
        }
        for options in refused {
            let body = with_options(name, options);
            assert!(
                full_way(&body, &policies).is_err(),
                "{name}: {options}: the full way refuses it"
            );
            assert!(
                quick_way(&body, &policies).is_none(),
                "{name}: {options}: the quick way did not answer"
            );
        }
    }
}
