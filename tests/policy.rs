//! Policy documents: the shipped examples load, and every malformed or
//! contradictory document is refused with its file, document and field.

mod common;

use common::*;
use upgrade_guard::policy::{PolicySet, Track};

const HEAD: &str =
    "apiVersion: upgradeguard.io/v1alpha1\nkind: UpgradePolicy\nmetadata: {name: p}\n";

fn error(spec: &str) -> String {
    let text = format!("{HEAD}spec:\n  selector: {{}}\n{spec}");
    PolicySet::parse(&text, "policies/p.yaml")
        .unwrap_err()
        .to_string()
}

#[test]
fn the_example_policies_load_one_per_system() {
    let set = policies();
    let mut names: Vec<&str> = set.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["fate", "kyuubi", "postgresql", "protocol-db", "semver-db"]
    );
    let kyuubi = set.iter().find(|p| p.name == "kyuubi").unwrap();
    assert_eq!(kyuubi.track, Track::MajorMinor);
    assert_eq!(
        kyuubi.source,
        format!("{}/policies/kyuubi.yaml: document 1", root().display())
    );
}

#[test]
fn an_unknown_value_names_file_document_and_field() {
    let text = format!(
        "{HEAD}spec: {{selector: {{}}}}\n---\n{HEAD}spec:\n  selector: {{}}\n  step: minr\n"
    );
    let err = PolicySet::parse(&text, "policies/fate.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("policies/fate.yaml: document 2: spec.step: unknown value `minr`, expected one of `major`, `minor`, `patch`, `none`"),
        "{err}"
    );
}

#[test]
fn malformed_documents_are_refused_with_what_is_wrong() {
    let cases = [
        (
            "  stepp: minor\n",
            "document 1: spec: unknown field `stepp`",
        ),
        (
            "  releases: \"1.0\"\n",
            "spec.releases: invalid type: string \"1.0\", expected a sequence",
        ),
        (
            "  releases: [1.2, nope]\n",
            "spec.releases[1]: \"nope\" is not a version",
        ),
        (
            "  releases: [1.10, 1.10.0]\n",
            "spec.releases[1]: 1.10.0 is listed twice",
        ),
        ("  kinds: []\n", "spec.kinds: selects no kind"),
        ("  kinds: [DaemonSet]\n", "unknown value `DaemonSet`"),
        (
            "  version: {source: label}\n",
            "spec.version.label: source: label needs the name",
        ),
        (
            "  version: {label: v}\n",
            "spec.version.label: applies only to source: label",
        ),
        (
            "  version: {pattern: '^v?([0-9.]+)'}\n",
            "spec.version.pattern: needs a named group (?P<version>...)",
        ),
        (
            "  version: {pattern: '(?P<version>[0-9'}\n",
            "spec.version.pattern: regex parse error",
        ),
        (
            "  version: {digests: {\"sha256:a\": latest}}\n",
            "spec.version.digests[sha256:a]: \"latest\" is not a version",
        ),
        (
            "  matrix: [{from: '', to: '*', allow: true}]\n",
            "spec.matrix[0].from: must not be empty",
        ),
        (
            "  matrix: [{from: '1.*', to: '*'}]\n",
            "missing field `allow`",
        ),
        (
            "  refresh: {health: {readyTimeoutSeconds: 0}}\n",
            "spec.refresh.health.readyTimeoutSeconds: must be at least 1",
        ),
        (
            "  refresh: {pauseAfter: sometimes}\n",
            "spec.refresh.pauseAfter: unknown value `sometimes`",
        ),
        (
            "  downgrade: never\n",
            "spec.downgrade: unknown value `never`",
        ),
    ];
    for (spec, expect) in cases {
        let err = error(spec);
        assert!(err.starts_with("policies/p.yaml: document 1: "), "{err}");
        assert!(err.contains(expect), "{spec:?}: {err}");
    }
}

#[test]
fn selector_expressions_need_values_exactly_when_the_operator_does() {
    let err = error_with_selector("{matchExpressions: [{key: a, operator: In}]}");
    assert!(
        err.contains("spec.selector.matchExpressions[0].values: operator In needs values"),
        "{err}"
    );
    let err = error_with_selector("{matchExpressions: [{key: a, operator: Exists, values: [x]}]}");
    assert!(err.contains("operator Exists takes no values"), "{err}");
}

fn error_with_selector(selector: &str) -> String {
    let text = format!("{HEAD}spec:\n  selector: {selector}\n");
    PolicySet::parse(&text, "policies/p.yaml")
        .unwrap_err()
        .to_string()
}

#[test]
fn header_and_required_fields_are_checked() {
    let wrong_version = "apiVersion: upgradeguard.io/v2\nkind: UpgradePolicy\nmetadata: {name: p}\nspec: {selector: {}}\n";
    assert!(
        PolicySet::parse(wrong_version, "f")
            .unwrap_err()
            .to_string()
            .contains("apiVersion: \"upgradeguard.io/v2\" is not supported")
    );
    let wrong_kind = "apiVersion: upgradeguard.io/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec: {selector: {}}\n";
    assert!(
        PolicySet::parse(wrong_kind, "f")
            .unwrap_err()
            .to_string()
            .contains("kind: \"Policy\" is not UpgradePolicy")
    );
    let no_selector = format!("{HEAD}spec: {{track: major}}\n");
    assert!(
        PolicySet::parse(&no_selector, "f")
            .unwrap_err()
            .to_string()
            .contains("missing field `selector`")
    );
    let not_yaml = "spec: [\n";
    assert!(
        PolicySet::parse(not_yaml, "f")
            .unwrap_err()
            .to_string()
            .starts_with("f: document 1: ")
    );
}

#[test]
fn unquoted_versions_keep_their_text() {
    // YAML would read 1.10 as the float 1.1; the version must stay 1.10.
    let set = PolicySet::parse(
        &format!("{HEAD}spec:\n  selector: {{}}\n  releases: [1.9, 1.10]\n"),
        "f",
    )
    .unwrap();
    let releases: Vec<String> = set[0].releases.iter().map(|v| v.to_string()).collect();
    assert_eq!(releases, ["1.9", "1.10"]);
}

#[test]
fn a_policy_name_defined_twice_is_refused() {
    let one = PolicySet::parse(&format!("{HEAD}spec: {{selector: {{}}}}\n"), "a.yaml").unwrap();
    let two = PolicySet::parse(&format!("{HEAD}spec: {{selector: {{}}}}\n"), "b.yaml").unwrap();
    let err = PolicySet::new([one, two].concat()).unwrap_err().to_string();
    assert_eq!(
        err,
        "b.yaml: document 1: metadata.name: policy p is also defined in a.yaml: document 1"
    );
}

#[test]
fn policies_in_subdirectories_are_read_like_manifests() {
    let dir = TempDir::new("policy-tree");
    std::fs::create_dir_all(dir.join("team-a")).unwrap();
    std::fs::write(
        dir.join("team-a/p.yaml"),
        format!("{HEAD}spec: {{selector: {{}}}}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("README.md"), "not a policy").unwrap();
    let set = PolicySet::load(&dir).unwrap();
    let names: Vec<(&str, &str)> = set
        .iter()
        .map(|p| (p.name.as_str(), p.source.as_str()))
        .collect();
    let source = format!("{}: document 1", dir.join("team-a/p.yaml").display());
    assert_eq!(names, [("p", source.as_str())]);
    let err = PolicySet::load(&dir.join("missing"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "{}: cannot read policies: No such file or directory (os error 2)",
            dir.join("missing").display()
        )
    );
}

#[test]
fn a_namespaced_policy_wins_over_a_cluster_wide_one() {
    let text = format!(
        "{HEAD}spec: {{selector: {{}}}}\n---\napiVersion: upgradeguard.io/v1alpha1\nkind: UpgradePolicy\nmetadata: {{name: z, namespace: shop}}\nspec: {{selector: {{}}, step: none}}\n"
    );
    let set = PolicySet::new(PolicySet::parse(&text, "f").unwrap()).unwrap();
    let db = workload("manifests/db.yaml");
    assert_eq!(set.select(&db).unwrap().name, "z");
    let kyuubi = workload("manifests/kyuubi.yaml");
    assert_eq!(
        set.select(&kyuubi).unwrap().name,
        "p",
        "other namespaces get the cluster-wide one"
    );
}

#[test]
fn selection_follows_label_selector_semantics() {
    let select = |selector: &str| {
        let set = PolicySet::new(
            PolicySet::parse(&format!("{HEAD}spec:\n  selector: {selector}\n"), "f").unwrap(),
        )
        .unwrap();
        set.select(&workload("manifests/db.yaml")).is_some()
    };
    assert!(select("{}"));
    assert!(select("{matchLabels: {app.kubernetes.io/name: db}}"));
    assert!(!select("{matchLabels: {app.kubernetes.io/name: web}}"));
    assert!(select(
        "{matchExpressions: [{key: app.kubernetes.io/name, operator: In, values: [db, cache]}]}"
    ));
    assert!(!select(
        "{matchExpressions: [{key: app.kubernetes.io/name, operator: NotIn, values: [db]}]}"
    ));
    assert!(select(
        "{matchExpressions: [{key: tier, operator: DoesNotExist}]}"
    ));
    assert!(!select(
        "{matchExpressions: [{key: tier, operator: Exists}]}"
    ));
    let kinds = PolicySet::new(
        PolicySet::parse(
            &format!("{HEAD}spec: {{selector: {{}}, kinds: [Deployment]}}\n"),
            "f",
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        kinds.select(&workload("manifests/db.yaml")).is_none(),
        "a StatefulSet is not a selected kind"
    );
}

#[test]
fn versions_are_read_from_tags_patterns_and_digests() {
    let fate = policies();
    let fate = fate.iter().find(|p| p.name == "fate").unwrap();
    assert_eq!(
        fate.version_of_image("federatedai/mysql:1.7.0-release")
            .unwrap()
            .to_string(),
        "1.7.0"
    );
    assert_eq!(
        fate.version_of_image("federatedai/mysql:nightly")
            .unwrap_err(),
        "tag nightly does not match spec.version.pattern"
    );
    let semver = policies();
    let semver = semver.iter().find(|p| p.name == "semver-db").unwrap();
    assert_eq!(
        semver
            .version_of_image("r:5000/db:v1.2.3-rc.1@sha256:x")
            .unwrap()
            .to_string(),
        "v1.2.3-rc.1"
    );
    assert_eq!(
        semver.version_of_image("r:5000/db").unwrap_err(),
        "image r:5000/db has no tag"
    );
    assert_eq!(
        semver.version_of_image("db@sha256:abc").unwrap_err(),
        "image db@sha256:abc has no tag and digest sha256:abc is not in spec.version.digests"
    );
}
