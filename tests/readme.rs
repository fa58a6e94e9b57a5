//! The policies the README shows parse, so the documentation cannot drift
//! from the parser.

mod common;

use common::root;
use upgrade_guard::policy::PolicySet;

/// The YAML block after each `<!-- README policy: … -->` marker.
fn readme_policies() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    text.split("<!-- README policy: ")
        .skip(1)
        .map(|part| {
            let (name, rest) = part.split_once(" -->").unwrap();
            let body = rest.split_once("```yaml\n").unwrap().1;
            let yaml = body.split_once("```").unwrap().0;
            (name.to_string(), yaml.to_string())
        })
        .collect()
}

#[test]
fn the_readmes_hook_policy_parses_with_every_hook_and_rollback() {
    let all = readme_policies();
    assert!(!all.is_empty(), "the README marks its policies");
    for (name, yaml) in &all {
        let parsed =
            PolicySet::parse(yaml, &format!("README ({name})")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.len(), 1);
    }
    let (_, yaml) = all.iter().find(|(n, _)| n.starts_with("hooks")).unwrap();
    let p = PolicySet::parse(yaml, "README").unwrap().remove(0);
    assert!(p.hooks.named().iter().all(|(_, h)| h.is_some()));
    assert_eq!(p.on_failure, upgrade_guard::policy::OnFailure::Rollback);
    assert_eq!(p.hooks.timeout_seconds, 900);
}
