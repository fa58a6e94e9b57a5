//! The policies the documentation shows parse, so it cannot drift from the
//! parser, and every link between its pages and to the repository's files
//! leads somewhere.

mod common;

use common::root;
use upgrade_guard::policy::PolicySet;

/// The README and every page under docs/.
fn pages() -> Vec<(std::path::PathBuf, String)> {
    let mut paths = vec![root().join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    paths.extend(docs);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// The YAML block after each `<!-- policy: … -->` marker of the docs.
fn readme_policies() -> Vec<(String, String)> {
    let text: String = pages().into_iter().map(|(_, t)| t).collect();
    text.split("<!-- policy: ")
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

#[test]
fn every_relative_link_of_the_docs_leads_to_a_file_and_every_anchor_to_a_heading() {
    let anchor_of = |heading: &str| -> String {
        heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect()
    };
    let anchors = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| {
                l.trim_start_matches('#')
                    .strip_prefix(' ')
                    .filter(|_| l.starts_with('#'))
            })
            .map(anchor_of)
            .collect()
    };
    let mut checked = 0;
    for (page, text) in pages() {
        let dir = page.parent().unwrap().to_path_buf();
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap();
            if target.starts_with("http") || target.contains(' ') {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let path = if file.is_empty() {
                page.clone()
            } else {
                dir.join(file)
            };
            assert!(path.exists(), "{}: {target} leads nowhere", page.display());
            if !anchor.is_empty() {
                let there = std::fs::read_to_string(&path).unwrap();
                assert!(
                    anchors(&there).iter().any(|a| a == anchor),
                    "{}: no heading for #{anchor} in {}",
                    page.display(),
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} links found");
}
