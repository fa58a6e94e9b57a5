//! `upgrade-guard review` and `check` end to end, through the binary, on
//! AdmissionReviews recorded from a real API server and manifests edited by
//! real kubectl.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use common::*;
use serde_json::{Value, json};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_upgrade-guard"))
        .args(args)
        .current_dir(root())
        .env_remove("UPGRADE_GUARD_POLICIES")
        .env("UPGRADE_GUARD_NOW", NOW)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn response(run: &Run) -> Value {
    let review: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    review["response"].clone()
}

fn sample_path(name: &str) -> String {
    samples_dir().join(name).display().to_string()
}

/// A bad input: exit 2, one line on stderr, nothing on stdout.
fn bad_input(run: &Run, says: &str) {
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.starts_with("upgrade-guard: "), "{}", run.stderr);
    assert!(
        run.stderr.contains(says),
        "expected {says:?} in {}",
        run.stderr
    );
}

#[test]
fn every_recorded_kubectl_action_gets_its_verdict() {
    // (sample, allowed, rule)
    let table = [
        ("sts-create-apply.json", true, None),
        ("sts-update-set-image.json", true, None),
        ("sts-scale-subresource.json", true, None),
        ("sts-update-annotate.json", true, None),
        ("sts-update-patch-partition.json", true, None),
        ("sts-update-rollout-undo.json", false, Some("downgrade")),
        (
            "sts-update-client-side-apply.json",
            false,
            Some("skip-version"),
        ),
        (
            "sts-update-server-side-apply-dry-run.json",
            false,
            Some("skip-version"),
        ),
        ("sts-delete.json", true, None),
        ("deploy-create.json", true, None),
        ("deploy-update-set-image.json", true, None),
        ("deploy-scale-subresource.json", true, None),
    ];
    for (name, allowed, rule) in table {
        let out = run(&["review", &sample_path(name)], b"");
        // Read whole, never the quick way: the same bytes and exit code.
        let full = run(&["review", "--full", &sample_path(name)], b"");
        assert_eq!(
            (&full.stdout, full.code),
            (&out.stdout, out.code),
            "{name}: --full"
        );
        let resp = response(&out);
        assert_eq!(
            resp["uid"],
            sample(name)["request"]["uid"],
            "{name}: uid echoed"
        );
        assert_eq!(resp["allowed"], allowed, "{name}: {resp}");
        assert_eq!(out.code, if allowed { 0 } else { 1 }, "{name}");
        assert!(
            resp.get("patch").is_none(),
            "{name}: /validate never patches"
        );
        match rule {
            Some(rule) => {
                assert_eq!(resp["status"]["code"], 403, "{name}");
                assert_eq!(resp["auditAnnotations"]["rule"], rule, "{name}");
                let message = resp["status"]["message"].as_str().unwrap();
                assert!(
                    message.starts_with("StatefulSet shop/db: "),
                    "{name}: {message}"
                );
            }
            None => assert!(resp.get("auditAnnotations").is_none(), "{name}"),
        }
    }
}

#[test]
fn mutate_returns_the_patch_that_starts_a_one_pod_refresh() {
    let out = run(
        &[
            "review",
            "--mutate",
            &sample_path("sts-update-set-image.json"),
        ],
        b"",
    );
    assert_eq!(out.code, 0);
    let resp = response(&out);
    assert_eq!(resp["allowed"], true);
    assert_eq!(resp["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(resp["patch"].as_str().unwrap())
        .unwrap();
    let patch: Value = serde_json::from_slice(&patch).unwrap();
    let record = format!(
        r#"{{"from":"1.7.0","to":"1.8.0","started":"{NOW}","state":"RollingOut","partition":2,"images":{{"db":"registry.example.com/shop/db:1.7.0"}}}}"#
    );
    assert_eq!(
        patch,
        json!([
            {"op": "add", "path": "/spec/updateStrategy/rollingUpdate/partition", "value": 2},
            {"op": "add", "path": "/metadata/annotations/upgradeguard.io~1refresh", "value": record},
        ])
    );
    // The patched object, reviewed again as the API server re-invokes, needs nothing more.
    let mut review = sample("sts-update-set-image.json");
    let ops: json_patch::Patch = serde_json::from_value(patch).unwrap();
    json_patch::patch(&mut review["request"]["object"], &ops).unwrap();
    let again = run(&["review", "--mutate", "-"], review.to_string().as_bytes());
    assert!(response(&again).get("patch").is_none(), "{}", again.stdout);
    // And the validating webhook admits what was mutated.
    let validated = run(&["review", "-"], review.to_string().as_bytes());
    assert_eq!(response(&validated)["allowed"], true);
}

#[test]
fn mutate_never_refuses_and_leaves_a_refused_change_unpatched() {
    let out = run(
        &[
            "review",
            "--mutate",
            &sample_path("sts-update-client-side-apply.json"),
        ],
        b"",
    );
    assert_eq!(out.code, 0);
    let resp = response(&out);
    assert_eq!(resp["allowed"], true);
    assert!(resp.get("patch").is_none());
}

#[test]
fn a_kubectl_edit_of_the_live_object_is_judged_like_the_recording() {
    // The recorded set-image envelope, carrying `kubectl set image --local` output.
    let mut review = sample("sts-update-set-image.json");
    review["request"]["oldObject"] = value("generated/live-db-1.8.0.json");
    review["request"]["object"] = value("generated/live-db-1.9.0.yaml");
    let out = run(&["review"], review.to_string().as_bytes());
    let resp = response(&out);
    assert_eq!(resp["allowed"], true, "1.8 → 1.9 is the next minor: {resp}");
    review["request"]["oldObject"] = value("generated/live-db-1.8.0.json");
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("registry.example.com/shop/db:2.0.0");
    let resp = response(&run(&["review"], review.to_string().as_bytes()));
    assert_eq!(resp["auditAnnotations"]["rule"], "cross-track");
}

#[test]
fn scale_is_judged_against_the_objects_the_cache_would_hold() {
    let scale = sample_path("sts-scale-subresource.json");
    let blind = response(&run(&["review", &scale], b""));
    assert_eq!(blind["allowed"], true);
    assert!(
        blind["warnings"][0]
            .as_str()
            .unwrap()
            .contains("a Scale carries no refresh state")
    );

    let live = root().join("tests/fixtures/generated/live-db-refreshing.json");
    let out = run(
        &["review", &scale, "--objects", live.to_str().unwrap()],
        b"",
    );
    assert_eq!(out.code, 1);
    let resp = response(&out);
    assert_eq!(resp["status"]["code"], 403);
    assert!(
        resp["status"]["message"]
            .as_str()
            .unwrap()
            .contains("scaling from 3 to 5 is refused while a rollout is in progress")
    );

    // `kubectl get -o yaml` prints a List: it is unwrapped.
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [value("generated/live-db-refreshing.json")]});
    let dir = TempDir::new("cli");
    let path = dir.join("objects.yaml");
    std::fs::write(&path, serde_json::to_string(&list).unwrap()).unwrap();
    assert_eq!(
        run(
            &["review", &scale, "--objects", path.to_str().unwrap()],
            b""
        )
        .code,
        1
    );
}

/// `kubectl delete sts db --cascade=orphan`, then a CREATE at a skipped
/// version: the new StatefulSet adopts the old claims and pods, so it is
/// judged as an upgrade from what those pods run.
#[test]
fn a_statefulset_created_again_over_old_claims_is_judged_from_its_pods() {
    let create = sample_path("sts-create-apply.json"); // shop/db at 1.7.0, 3 replicas
    let dir = TempDir::new("recreate");
    let objects = |pod_version: Option<&str>| {
        let mut docs = Vec::new();
        for i in 0..3 {
            docs.push(format!(
                "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data-db-{i}, namespace: shop}}\nspec: {{accessModes: [ReadWriteOnce]}}\n"
            ));
            if let Some(v) = pod_version {
                docs.push(format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: db-{i}, namespace: shop, labels: {{app.kubernetes.io/name: db}}}}\nspec:\n  containers: [{{name: db, image: 'registry.example.com/shop/db:{v}'}}]\n"
                ));
            }
        }
        let path = dir.join(format!("objects-{}.yaml", pod_version.unwrap_or("none")));
        std::fs::write(&path, docs.join("---\n")).unwrap();
        path.display().to_string()
    };
    let context = "upgrade-guard: StatefulSet shop/db is created over the claims an earlier one left (data-db-0, data-db-1, data-db-2): judged as an upgrade from what its pods db-0, db-1, db-2 still run";

    let skipped = run(
        &["review", &create, "--objects", &objects(Some("1.5.0"))],
        b"",
    );
    assert_eq!(skipped.code, 1, "{}", skipped.stderr);
    let refused = response(&skipped);
    assert_eq!(
        refused["status"]["message"],
        "StatefulSet shop/db: 1.5.0 → 1.7.0 skips 1.6.x: upgrade to 1.6.x first (rule skip-version, policy semver-db); to accept the risk, set upgradeguard.io/force-to: \"1.7.0\" and upgradeguard.io/force-reason"
    );
    assert_eq!(refused["warnings"][0], context);

    let next = response(&run(
        &["review", &create, "--objects", &objects(Some("1.6.2"))],
        b"",
    ));
    assert_eq!(next["allowed"], true);
    assert_eq!(next["warnings"][0], context);

    let unknown = response(&run(&["review", &create, "--objects", &objects(None)], b""));
    assert_eq!(unknown["allowed"], true);
    assert_eq!(
        unknown["warnings"][0],
        "upgrade-guard: StatefulSet shop/db is created over the claims an earlier one left (data-db-0, data-db-1, data-db-2), and no pod of it is left to tell which version they last served: the upgrade path to this version cannot be checked"
    );

    // Without claims left behind, a create is a create.
    let fresh = response(&run(&["review", &create], b""));
    assert_eq!(
        (fresh["allowed"].clone(), fresh.get("warnings")),
        (json!(true), None)
    );
}

/// A megabyte-long image tag made a 5 MB response and a 3 MB audit line:
/// every echo of it is cut, with a marker.
#[test]
fn a_long_tag_is_echoed_cut_in_the_refusal() {
    let mut review = sample("sts-update-set-image.json");
    let tail = "a".repeat(1_000_000);
    let dir = TempDir::new("long-tag");
    for (tag, marker) in [
        (format!("1.9.0-{tail}"), "…[cut: 1000006 bytes]"),
        (format!("x{tail}"), "…[cut: 1000001 bytes]"),
    ] {
        review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!(format!("registry.example.com/shop/db:{tag}"));
        let path = dir.join("review.json");
        std::fs::write(&path, review.to_string()).unwrap();
        let out = run(&["review", path.to_str().unwrap()], b"");
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert!(out.stdout.len() < 4096, "{} bytes", out.stdout.len());
        let refused = response(&out);
        let message = refused["status"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("{}{marker}", &tag[..200])),
            "{message}"
        );
        assert!(refused["auditAnnotations"]["to"].as_str().unwrap().len() < 250);
    }
    // A parser's error quotes the bad value: cut too.
    let mut bad = sample("sts-update-set-image.json");
    bad["request"]["object"]["spec"]["replicas"] = json!(tail);
    let path = dir.join("bad.json");
    std::fs::write(&path, bad.to_string()).unwrap();
    let out = run(&["review", path.to_str().unwrap()], b"");
    bad_input(
        &out,
        "request.object.spec.replicas: invalid type: string \"aaaa",
    );
    assert!(
        out.stderr.len() < 1300 && out.stderr.contains("…[cut: "),
        "{}",
        out.stderr.len()
    );
    let version = json!({"apiVersion": tail, "kind": "AdmissionReview"});
    std::fs::write(&path, version.to_string()).unwrap();
    let out = run(&["review", path.to_str().unwrap()], b"");
    bad_input(&out, "…[cut: 1000000 bytes]\" is not supported");
}

#[test]
fn dry_run_requests_get_the_same_verdict() {
    let dry = response(&run(
        &[
            "review",
            &sample_path("sts-update-server-side-apply-dry-run.json"),
        ],
        b"",
    ));
    let mut live = sample("sts-update-server-side-apply-dry-run.json");
    live["request"]["dryRun"] = json!(false);
    let real = response(&run(&["review"], live.to_string().as_bytes()));
    assert_eq!(dry["status"], real["status"]);
    assert_eq!(dry["auditAnnotations"], real["auditAnnotations"]);
}

#[test]
fn bad_reviews_exit_2_with_one_line() {
    bad_input(&run(&["review"], b""), "standard input: the body is empty");
    bad_input(
        &run(&["review"], b"{\"apiVersion\": "),
        "the body is not an AdmissionReview: apiVersion: EOF while parsing",
    );
    bad_input(
        &run(&["review"], b"[1, 2]"),
        "invalid type: sequence, expected struct AdmissionReview",
    );
    bad_input(
        &run(
            &["review"],
            br#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}"#,
        ),
        "apiVersion \"v1\" is not supported: send admission.k8s.io/v1",
    );
    let mut old = sample("sts-update-set-image.json");
    old["apiVersion"] = json!("admission.k8s.io/v1beta1");
    bad_input(
        &run(&["review"], old.to_string().as_bytes()),
        "apiVersion \"admission.k8s.io/v1beta1\" is not supported",
    );
    bad_input(
        &run(
            &["review"],
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#,
        ),
        "the AdmissionReview has no request",
    );
    let mut wrong = sample("sts-update-set-image.json");
    wrong["request"]["object"]["spec"]["replicas"] = json!("three");
    bad_input(
        &run(&["review"], wrong.to_string().as_bytes()),
        "request.object.spec.replicas: invalid type: string \"three\", expected i32",
    );
    let mut missing = sample("sts-update-set-image.json");
    missing["request"]["oldObject"] = Value::Null;
    bad_input(
        &run(&["review"], missing.to_string().as_bytes()),
        "request.oldObject is missing for a UPDATE request",
    );
    bad_input(
        &run(&["review", "no/such/file.json"], b""),
        "no/such/file.json: No such file or directory",
    );
}

#[test]
fn a_bad_policy_stops_every_command_with_exit_2() {
    let dir = TempDir::new("cli");
    std::fs::write(
        dir.join("p.yaml"),
        "apiVersion: upgradeguard.io/v1alpha1\nkind: UpgradePolicy\nmetadata: {name: p}\nspec:\n  selector: {}\n  tarck: major\n",
    )
    .unwrap();
    let policies = dir.display().to_string();
    let sample = sample_path("sts-update-set-image.json");
    bad_input(
        &run(&["--policies", &policies, "review", &sample], b""),
        "p.yaml: document 1: spec: unknown field `tarck`",
    );
    bad_input(
        &check("allowed", &["--policies", &policies]),
        "unknown field `tarck`",
    );
}

#[test]
fn check_and_review_say_when_no_policy_was_loaded() {
    let empty = TempDir::new("no-policies");
    let policies = empty.display().to_string();
    let warning = format!(
        "upgrade-guard: warning: no policy loaded from {policies} (no UpgradePolicy in its .yaml, .yml or .json files): nothing is governed, every change is allowed\n"
    );
    let checked = check("refused", &["--policies", &policies]);
    assert_eq!(
        (checked.code, checked.stderr.as_str()),
        (0, warning.as_str())
    );
    let sample = sample_path("sts-update-set-image.json");
    let reviewed = run(&["--policies", &policies, "review", &sample], b"");
    assert_eq!(
        (reviewed.code, reviewed.stderr.as_str()),
        (0, warning.as_str())
    );
    assert_eq!(response(&reviewed)["allowed"], true);
}

/// 100,000 nested flow collections took libyaml 16 to 31 seconds to scan
/// before the recursion limit refused them; the pre-scan refuses them at
/// level 129.
#[test]
fn deeply_nested_yaml_is_refused_where_the_nesting_passes_the_limit() {
    let dir = TempDir::new("cli");
    let deep = |open: &str, close: &str| {
        format!(
            "kind: ConfigMap\ndata: {}{}\n",
            open.repeat(100_000),
            close.repeat(100_000)
        )
    };
    let good = fixture("manifests/db.yaml");
    for (name, text, column) in [
        ("lists.yaml", deep("[", "]"), 7 + 128),
        ("maps.yaml", deep("{a: ", "}"), 7 + 4 * 128),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
        let path = dir.join(name).display().to_string();
        bad_input(
            &run(
                &["check", "--old", good.to_str().unwrap(), "--new", &path],
                b"",
            ),
            &format!(
                "{name}: flow collections ([ or {{) nested more than 128 levels deep at line 2 column {column}"
            ),
        );
    }
    std::fs::write(
        dir.join("p.yaml"),
        format!(
            "apiVersion: upgradeguard.io/v1alpha1\nkind: UpgradePolicy\nmetadata: {{name: p}}\nspec: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    )
    .unwrap();
    let sample = sample_path("sts-update-set-image.json");
    bad_input(
        &run(
            &[
                "--policies",
                dir.join("p.yaml").to_str().unwrap(),
                "review",
                &sample,
            ],
            b"",
        ),
        "p.yaml: flow collections ([ or {) nested more than 128 levels deep at line 4 column 135",
    );
}

fn check(case: &str, extra: &[&str]) -> Run {
    let dir = root().join("tests/fixtures/check").join(case);
    let (old, new) = (dir.join("old"), dir.join("new"));
    let mut args = vec![
        "check",
        "--old",
        old.to_str().unwrap(),
        "--new",
        new.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args, b"")
}

#[test]
fn check_passes_a_repository_whose_changes_are_all_allowed() {
    let out = check("allowed", &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("OBJECT"), "{}", out.stdout);
    assert!(out.stdout.contains("StatefulSet shop/db"), "{}", out.stdout);
    assert!(
        lines.iter().any(|l| l.contains("analytics/kyuubi")
            && l.contains("3.4.1 → 3.4.3")
            && l.contains("allowed")),
        "{}",
        out.stdout
    );
}

#[test]
fn check_refuses_a_repository_with_an_unsafe_upgrade() {
    let out = check("refused", &["--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["allowed"], false);
    let verdict = |name: &str| {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {report}"))
            .clone()
    };
    assert_eq!(verdict("db")["verdict"], "allowed");
    assert_eq!(verdict("kyuubi")["rule"], "cross-track");
    assert_eq!(verdict("clusterdb")["rule"], "skip-version");
    assert!(
        verdict("clusterdb")["reason"]
            .as_str()
            .unwrap()
            .contains("v1 → v3 skips v2: upgrade to v2 first")
    );
    // Both FATE Deployments came from a List in the old set.
    assert_eq!(verdict("mysql")["rule"], "matrix");
    assert_eq!(verdict("fateboard")["rule"], "matrix");
    assert_eq!(verdict("fateboard")["operation"], "UPDATE");

    let table = check("refused", &[]);
    assert_eq!(table.code, 1);
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains("StatefulSet data/clusterdb")
                && l.contains("v1 → v3")
                && l.contains("refused")
                && l.contains("skip-version")),
        "{}",
        table.stdout
    );
}

/// Every row names its policy (bare, in JSON) and the versions it judged:
/// DELETE rows, require-statefulset refusals, a downgrade out of the track,
/// and a variant tag read by the example postgresql policy's pattern.
#[test]
fn check_rows_name_their_policy_and_versions() {
    let dir = TempDir::new("rows");
    let (old, new) = (dir.join("old"), dir.join("new"));
    std::fs::create_dir_all(&old).unwrap();
    std::fs::create_dir_all(&new).unwrap();
    let mysql = |v: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: mysql, namespace: fate, labels: {{app.kubernetes.io/part-of: fate}}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: mysql}}}}\n  template:\n    metadata: {{labels: {{app: mysql, app.kubernetes.io/part-of: fate}}}}\n    spec:\n      containers: [{{name: mysql, image: 'federatedai/mysql:{v}'}}]\n      volumes: [{{name: data, persistentVolumeClaim: {{claimName: mysql-data}}}}]\n"
        )
    };
    let postgres = |name: &str, tag: &str| {
        format!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: {name}, namespace: shop, labels: {{app.kubernetes.io/name: postgresql}}}}\nspec:\n  replicas: 3\n  serviceName: {name}\n  selector: {{matchLabels: {{app.kubernetes.io/name: postgresql}}}}\n  template:\n    metadata: {{labels: {{app.kubernetes.io/name: postgresql}}}}\n    spec:\n      containers: [{{name: postgres, image: 'postgres:{tag}'}}]\n"
        )
    };
    for (dir, files) in [
        (
            &old,
            vec![
                ("mysql.yaml", mysql("1.9.0-release")),
                ("pg.yaml", postgres("pg", "15.6")),
                ("pg16.yaml", postgres("pg16", "16.1")),
                (
                    "db.yaml",
                    std::fs::read_to_string(fixture("manifests/db.yaml")).unwrap(),
                ),
            ],
        ),
        (
            &new,
            vec![
                ("mysql.yaml", mysql("1.9.1-release")),
                ("pg.yaml", postgres("pg", "15.6-bookworm")),
                ("pg16.yaml", postgres("pg16", "15.4")),
            ],
        ),
    ] {
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
    let args = [
        "check",
        "--old",
        old.to_str().unwrap(),
        "--new",
        new.to_str().unwrap(),
    ];
    let out = run(&[&args[..], &["--output", "json"]].concat(), b"");
    assert_eq!(out.code, 1, "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    let rows: Vec<Value> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            json!([
                r["name"],
                r["operation"],
                r["from"],
                r["to"],
                r["verdict"],
                r["rule"],
                r["policy"],
                r["reason"]
            ])
        })
        .collect();
    assert_eq!(
        rows,
        [
            json!([
                "mysql",
                "UPDATE",
                "1.9.0",
                "1.9.1",
                "refused",
                "require-statefulset",
                "fate",
                "Deployment fate/mysql: 1.9.0 → 1.9.1 of a Deployment that mounts PersistentVolumeClaims: a Deployment cannot keep a volume per replica: convert it to a StatefulSet first (`upgrade-guard convert` offline, `upgrade-guard migrate fate/mysql` live) (rule require-statefulset, policy fate)"
            ]),
            json!([
                "pg",
                "UPDATE",
                "15.6",
                "15.6",
                "allowed",
                null,
                "postgresql",
                ""
            ]),
            json!([
                "pg16",
                "UPDATE",
                "16.1",
                "15.4",
                "refused",
                "downgrade",
                "postgresql",
                "StatefulSet shop/pg16: 16.1 → 15.4 is a downgrade out of release track 16.x: only a rollback to the version a running refresh started from is allowed, and none is running (rule downgrade, policy postgresql)"
            ]),
            json!([
                "db",
                "DELETE",
                null,
                null,
                "allowed",
                null,
                "semver-db",
                "StatefulSet shop/db: deleting changes no version; its claims stay, and a StatefulSet created over them again is judged from the pods still running on them"
            ]),
        ]
    );
    let table = run(&args, b"");
    assert!(
        table.stdout.lines().any(
            |l| l.starts_with("StatefulSet shop/pg    UPDATE     15.6 (same version)  allowed")
        ),
        "{}",
        table.stdout
    );
}

#[test]
fn check_reads_standard_input_and_treats_new_objects_as_creates() {
    let new = std::fs::read(fixture("manifests/db.yaml")).unwrap();
    let empty = TempDir::new("cli-empty");
    let out = run(
        &[
            "check",
            "--old",
            empty.to_str().unwrap(),
            "--new",
            "-",
            "--output",
            "json",
        ],
        &new,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["results"][0]["operation"], "CREATE");
}

#[test]
fn check_reads_a_kubectl_json_stream() {
    let stream = format!(
        "{}\n{}",
        value("generated/db-1.8.0.yaml"),
        value("generated/kyuubi-3.4.3.yaml")
    );
    let old = root().join("tests/fixtures/check/allowed/old");
    let out = run(
        &["check", "--old", old.to_str().unwrap(), "--new", "-"],
        stream.as_bytes(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.contains(" UPDATE "))
            .count(),
        2,
        "{}",
        out.stdout
    );
}

#[test]
fn check_refuses_bad_manifests_with_exit_2() {
    let dir = TempDir::new("cli");
    let good = fixture("manifests/db.yaml");
    let good = good.to_str().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let broken = write(
        "broken.yaml",
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db\n",
    );
    bad_input(
        &run(&["check", "--old", good, "--new", &broken], b""),
        "broken.yaml: document 1: ",
    );
    let scalar = write("scalar.yaml", "kind: ConfigMap\n---\njust text\n");
    bad_input(
        &run(&["check", "--old", good, "--new", &scalar], b""),
        "scalar.yaml: document 2: expected a Kubernetes object, found a string",
    );
    // kubectl --local -o yaml glues objects together without `---`.
    let glued = write(
        "glued.yaml",
        "apiVersion: v1\nkind: ConfigMap\napiVersion: apps/v1\nkind: Deployment\n",
    );
    bad_input(
        &run(&["check", "--old", good, "--new", &glued], b""),
        "glued.yaml: document 1: duplicate entry with key \"apiVersion\"",
    );
    // The same in JSON, whose own map would keep the last silently.
    let glued_json = write(
        "glued.json",
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "kind": "StatefulSet"}"#,
    );
    bad_input(
        &run(&["check", "--old", good, "--new", &glued_json], b""),
        "glued.json: document 1: duplicate entry with key \"kind\" at line 1 column",
    );
    let typed = write(
        "typed.yaml",
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: shop}\nspec: {replicas: many}\n",
    );
    bad_input(
        &run(&["check", "--old", good, "--new", &typed], b""),
        "typed.yaml: document 1: StatefulSet db: spec.replicas: invalid type",
    );
    let twice = write(
        "twice.yaml",
        &format!(
            "{}---\n{}",
            std::fs::read_to_string(good).unwrap(),
            std::fs::read_to_string(good).unwrap()
        ),
    );
    bad_input(
        &run(&["check", "--old", good, "--new", &twice], b""),
        "StatefulSet shop/db is also defined at",
    );
    bad_input(
        &run(&["check", "--old", good, "--new", "no/such/dir"], b""),
        "no/such/dir: No such file or directory",
    );
    bad_input(
        &run(&["check", "--old", "-", "--new", "-"], b""),
        "cannot both read standard input",
    );
    let empty = TempDir::new("cli-empty");
    bad_input(
        &run(&["check", "--old", good, "--new", "-"], b""),
        "--new -: no Kubernetes objects",
    );
    bad_input(
        &run(
            &["check", "--old", good, "--new", empty.to_str().unwrap()],
            b"",
        ),
        "no Kubernetes objects",
    );
}

#[test]
fn an_object_of_another_kind_than_its_resource_is_refused() {
    let mut review = sample("sts-update-set-image.json");
    review["request"]["object"]["kind"] = json!("Deployment");
    bad_input(
        &run(&["review"], review.to_string().as_bytes()),
        "request.object",
    );
}
