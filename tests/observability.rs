//! The alerts and the Grafana dashboard the chart ships: promtool checks the
//! rules and runs their unit tests, the dashboard is well formed, and every
//! metric either of them names is one the real server exports (a misspelt
//! name makes an alert that never fires, or, inside `absent()`, one that
//! always does).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Bytes;
use common::tls_client::Client;
use common::*;
use http_body_util::{BodyExt, Empty};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tower::ServiceExt;
use upgrade_guard::decide::Snapshot;
use upgrade_guard::webhook::metrics::Metrics;
use upgrade_guard::webhook::server::{self, App};

const RULES: &str = "charts/upgrade-guard/files/prometheus-rules.yaml";
const RULES_TEST: &str = "tests/data/prometheus/rules-test.yaml";
const DASHBOARD: &str = "charts/upgrade-guard/files/grafana-dashboard.json";

/// What Prometheus 2.x sends: OpenMetrics first, the 0.0.4 text as fallback.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

fn promtool() -> Option<PathBuf> {
    common::tools::tool("promtool", "apt-get install -y prometheus")
}

fn run(tool: &Path, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn rules() -> Value {
    yaml(&root().join(RULES))
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(root().join(DASHBOARD)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every rule of a rules file, alerts and recording rules alike.
fn each_rule(rules: &Value) -> Vec<&Value> {
    rules["groups"]
        .as_array()
        .expect("a rules file has groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("a group has rules"))
        .collect()
}

/// Every panel, those nested in rows too.
fn each_panel(panels: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in panels.as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(each_panel(&panel["panels"]));
    }
    all
}

/// `(where, expr)` for each query of the rules and the dashboard.
fn queries(rules: &Value, dashboard: &Value) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for rule in each_rule(rules) {
        let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap();
        all.push((
            format!("rule {name}"),
            rule["expr"].as_str().unwrap().to_string(),
        ));
    }
    for panel in each_panel(&dashboard["panels"]) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                all.push((
                    format!("panel {} ({})", panel["id"], panel["title"]),
                    expr.to_string(),
                ));
            }
        }
    }
    all
}

// ---- promtool ----

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let Some(promtool) = promtool() else { return };
    let checked = run(&promtool, &["check", "rules", RULES]);
    assert!(checked.status.success(), "{}", said(&checked));
    let alerts = each_rule(&rules()).len();
    assert!(
        said(&checked).contains(&format!("SUCCESS: {alerts} rules found")),
        "{}",
        said(&checked)
    );
    let tested = run(&promtool, &["test", "rules", RULES_TEST]);
    assert!(tested.status.success(), "{}", said(&tested));
}

/// The same harness fails a broken rule and an alert expected where it
/// should not fire, so the passing runs above mean something.
#[test]
fn promtool_fails_a_broken_rule_and_a_wrong_expectation() {
    let Some(promtool) = promtool() else { return };
    let dir = TempDir::new("promtool");
    let broken = dir.join("broken.yaml");
    std::fs::write(
        &broken,
        "groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: sum by (rule (rate(upgrade_guard_refusals_total[5m]))\n",
    )
    .unwrap();
    let checked = run(&promtool, &["check", "rules", broken.to_str().unwrap()]);
    assert!(!checked.status.success(), "{}", said(&checked));
    assert!(said(&checked).contains("FAILED"), "{}", said(&checked));

    let rules_path = root().join(RULES);
    let case = |expected: Value| {
        json!({
            "rule_files": [rules_path.to_str().unwrap()],
            "evaluation_interval": "1m",
            "tests": [{
                "interval": "1m",
                "input_series": [{
                    "series": "upgrade_guard_refresh_held_seconds{namespace=\"shop\",kind=\"StatefulSet\",name=\"db\",state=\"RollingOut\"}",
                    "values": "0+60x30",
                }],
                "alert_rule_test": [{
                    "eval_time": "20m",
                    "alertname": "UpgradeGuardRefreshFailed",
                    "exp_alerts": expected,
                }],
            }],
        })
    };
    // JSON is YAML: promtool reads either.
    let silent = dir.join("silent.yaml");
    std::fs::write(&silent, case(json!([])).to_string()).unwrap();
    let tested = run(&promtool, &["test", "rules", silent.to_str().unwrap()]);
    assert!(tested.status.success(), "{}", said(&tested));
    let wrong = dir.join("wrong.yaml");
    std::fs::write(
        &wrong,
        case(json!([{"exp_labels": {"severity": "critical", "namespace": "shop", "kind": "StatefulSet", "name": "db"}}]))
            .to_string(),
    )
    .unwrap();
    let tested = run(&promtool, &["test", "rules", wrong.to_str().unwrap()]);
    assert!(!tested.status.success(), "{}", said(&tested));
    assert!(
        said(&tested).contains("UpgradeGuardRefreshFailed"),
        "{}",
        said(&tested)
    );
}

/// Grafana's interval variables replaced, each panel query is an expression
/// promtool parses (as a recording rule).
#[test]
fn the_dashboard_queries_are_valid_promql() {
    let Some(promtool) = promtool() else { return };
    let dashboard = dashboard();
    let mut rules = Vec::new();
    for (i, (_, expr)) in queries(&json!({"groups": []}), &dashboard)
        .into_iter()
        .enumerate()
    {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$__range", "1h");
        rules.push(json!({"record": format!("dashboard:query_{i}"), "expr": expr}));
    }
    assert!(!rules.is_empty());
    let dir = TempDir::new("dashboard-promql");
    let file = dir.join("dashboard-queries.yaml");
    let count = rules.len();
    std::fs::write(
        &file,
        json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    let checked = run(&promtool, &["check", "rules", file.to_str().unwrap()]);
    assert!(checked.status.success(), "{}", said(&checked));
    assert!(
        said(&checked).contains(&format!("SUCCESS: {count} rules found")),
        "{}",
        said(&checked)
    );
}

// ---- the alerts' shape ----

/// What is wrong with the alerts: a severity, a summary and a description
/// that says what to run, and unit tests where each alert fires and where
/// it stays silent.
fn alert_problems(rules: &Value, tests: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for test in tests["tests"].as_array().into_iter().flatten() {
        for case in test["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap_or_default().to_string();
            match case["exp_alerts"].as_array() {
                Some(alerts) if !alerts.is_empty() => firing.insert(name),
                _ => silent.insert(name),
            };
        }
    }
    for rule in each_rule(rules) {
        let Some(name) = rule["alert"].as_str() else {
            continue;
        };
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        if !["critical", "warning", "info"].contains(&severity) {
            problems.push(format!("{name}: severity {severity:?}"));
        }
        for key in ["summary", "description"] {
            if rule["annotations"][key].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{name}: no {key}"));
            }
        }
        let description = rule["annotations"]["description"]
            .as_str()
            .unwrap_or_default();
        if !description.contains('`') {
            problems.push(format!("{name}: the description names nothing to run"));
        }
        if !firing.contains(name) {
            problems.push(format!("{name}: no unit test where it fires"));
        }
        if !silent.contains(name) {
            problems.push(format!("{name}: no unit test where it stays silent"));
        }
    }
    problems
}

#[test]
fn every_alert_has_a_severity_a_runbook_and_unit_tests_both_ways() {
    let tests = yaml(&root().join(RULES_TEST));
    let problems = alert_problems(&rules(), &tests);
    assert!(problems.is_empty(), "{problems:#?}");
    // The file is read by name from the test file, relative to it.
    let listed: Vec<PathBuf> = tests["rule_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            root()
                .join(RULES_TEST)
                .parent()
                .unwrap()
                .join(f.as_str().unwrap())
        })
        .collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        std::fs::canonicalize(&listed[0]).unwrap(),
        std::fs::canonicalize(root().join(RULES)).unwrap()
    );
}

#[test]
fn the_alert_checks_catch_a_missing_severity_runbook_and_test() {
    let mut rules = rules();
    let tests = yaml(&root().join(RULES_TEST));
    let first = &mut rules["groups"][0]["rules"][0];
    let name = first["alert"].as_str().unwrap().to_string();
    first["labels"]["severity"] = json!("page-someone");
    first["annotations"]["description"] = json!("Something is wrong.");
    first["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("summary");
    rules["groups"][0]["rules"].as_array_mut().unwrap().push(
        json!({"alert": "Untested", "expr": "vector(1)", "labels": {"severity": "info"},
            "annotations": {"summary": "s", "description": "run `true`"}}),
    );
    let problems = alert_problems(&rules, &tests);
    assert_eq!(
        problems,
        [
            format!("{name}: severity \"page-someone\""),
            format!("{name}: no summary"),
            format!("{name}: the description names nothing to run"),
            "Untested: no unit test where it fires".to_string(),
            "Untested: no unit test where it stays silent".to_string(),
        ]
    );
}

// ---- the dashboard's shape ----

fn dashboard_problems(dashboard: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let variable = json!({"type": "prometheus", "uid": "${datasource}"});
    let schema = dashboard["schemaVersion"].as_u64().unwrap_or_default();
    if !(36..=41).contains(&schema) {
        problems.push(format!("schemaVersion {schema}"));
    }
    let templated = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| {
            v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"
        });
    if !templated {
        problems.push("no `datasource` variable of Prometheus data sources".into());
    }
    let mut ids = BTreeSet::new();
    let mut placed: Vec<(String, [u64; 4])> = Vec::new();
    for panel in each_panel(&dashboard["panels"]) {
        let title = panel["title"].as_str().unwrap_or_default();
        let Some(id) = panel["id"].as_u64() else {
            problems.push(format!("{title}: no id"));
            continue;
        };
        let here = format!("panel {id} ({title})");
        if !ids.insert(id) {
            problems.push(format!("{here}: id used twice"));
        }
        if panel["datasource"] != variable {
            problems.push(format!("{here}: datasource {}", panel["datasource"]));
        }
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{here}: no query"));
        }
        let mut refs = BTreeSet::new();
        for target in &targets {
            if target["datasource"] != variable {
                problems.push(format!(
                    "{here}: query {} datasource {}",
                    target["refId"], target["datasource"]
                ));
            }
            if target["expr"].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{here}: query {} has no expr", target["refId"]));
            }
            if !refs.insert(target["refId"].to_string()) {
                problems.push(format!("{here}: refId {} used twice", target["refId"]));
            }
        }
        let g = &panel["gridPos"];
        let rect = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap_or_default());
        if rect[2] == 0 || rect[3] == 0 || rect[0] + rect[2] > 24 {
            problems.push(format!("{here}: gridPos {g}"));
        }
        for (other, r) in &placed {
            let apart = rect[0] + rect[2] <= r[0]
                || r[0] + r[2] <= rect[0]
                || rect[1] + rect[3] <= r[1]
                || r[1] + r[3] <= rect[1];
            if !apart {
                problems.push(format!("{here}: overlaps {other}"));
            }
        }
        placed.push((here, rect));
    }
    problems
}

#[test]
fn the_dashboard_parses_has_unique_panel_ids_and_every_panel_uses_the_datasource_variable() {
    let dashboard = dashboard();
    let problems = dashboard_problems(&dashboard);
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(each_panel(&dashboard["panels"]).len() >= 10);
}

#[test]
fn the_dashboard_checks_catch_a_repeated_id_a_fixed_datasource_and_an_overlap() {
    let mut dashboard = dashboard();
    let panels = dashboard["panels"].as_array_mut().unwrap();
    panels[1]["id"] = panels[0]["id"].clone();
    panels[2]["datasource"] = json!({"type": "prometheus", "uid": "prometheus"});
    panels[3]["targets"][0]
        .as_object_mut()
        .unwrap()
        .remove("datasource");
    panels[4]["gridPos"] = panels[5]["gridPos"].clone();
    let titles: Vec<String> = panels
        .iter()
        .map(|p| format!("panel {} ({})", p["id"], p["title"].as_str().unwrap()))
        .collect();
    dashboard["templating"]["list"] = json!([]);
    let problems = dashboard_problems(&dashboard);
    assert_eq!(
        problems,
        [
            "no `datasource` variable of Prometheus data sources".to_string(),
            format!("{}: id used twice", titles[1]),
            format!(
                "{}: datasource {{\"type\":\"prometheus\",\"uid\":\"prometheus\"}}",
                titles[2]
            ),
            format!("{}: query \"A\" datasource null", titles[3]),
            format!("{}: overlaps {}", titles[5], titles[4]),
        ]
    );
    assert!(dashboard_problems(&json!({"panels": []}))[0].starts_with("schemaVersion"));
}

// ---- metric names ----

/// A metric selector in a PromQL expression: its name, and its matchers as
/// `(label, operator, value)`.
#[derive(Debug, PartialEq)]
struct Selector {
    name: String,
    matchers: Vec<(String, String, String)>,
}

/// Words after which a parenthesised list holds label names, not metrics.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Operators and aggregations: words that are not metrics even when no `(`
/// follows them at once (`sum by (x) (...)`, `a and b`).
const KEYWORDS: [&str; 19] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index after the string literal opened at `at`, and its value.
fn string_at(chars: &[char], at: usize) -> (usize, String) {
    let quote = chars[at];
    let mut value = String::new();
    let mut i = at + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' && i + 1 < chars.len() {
            i += 1;
        }
        value.push(chars[i]);
        i += 1;
    }
    (i + 1, value)
}

/// The index after the bracket closing the one at `at`, strings skipped.
fn after_closing(chars: &[char], at: usize) -> usize {
    let (open, close) = (chars[at], if chars[at] == '(' { ')' } else { ']' });
    let mut depth = 0;
    let mut i = at;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = string_at(chars, i).0;
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

fn skip_space(chars: &[char], mut i: usize) -> usize {
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    i
}

/// The matchers of the `{...}` at `at`, and the index after it.
fn matchers_at(chars: &[char], at: usize) -> (Vec<(String, String, String)>, usize) {
    let mut found = Vec::new();
    let mut i = at + 1;
    loop {
        i = skip_space(chars, i);
        match chars.get(i) {
            None => return (found, i),
            Some('}') => return (found, i + 1),
            Some(',') => i += 1,
            Some(c) if is_name_start(*c) => {
                let start = i;
                while chars.get(i).is_some_and(|c| is_name(*c)) {
                    i += 1;
                }
                let label: String = chars[start..i].iter().collect();
                i = skip_space(chars, i);
                let op_start = i;
                while chars.get(i).is_some_and(|c| "=!~".contains(*c)) {
                    i += 1;
                }
                let op: String = chars[op_start..i].iter().collect();
                i = skip_space(chars, i);
                if !chars.get(i).is_some_and(|c| "\"'`".contains(*c)) {
                    return (found, i);
                }
                let (next, value) = string_at(chars, i);
                found.push((label, op, value));
                i = next;
            }
            Some(_) => i += 1,
        }
    }
}

/// The metric selectors of a PromQL expression: names that are neither
/// functions, aggregations, operators, label lists nor Grafana variables.
fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = string_at(&chars, i).0,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            // Ranges and subqueries: durations or `$__rate_interval`.
            '[' => i = after_closing(&chars, i),
            // Grafana variables, `$name` or `${name}`.
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    while i < chars.len() && chars[i] != '}' {
                        i += 1;
                    }
                }
                while chars.get(i).is_some_and(|c| is_name(*c)) {
                    i += 1;
                }
            }
            // Numbers: 0.5, 1e-5, 0x1f, 86400.
            c if c.is_ascii_digit() || c == '.' => {
                while chars.get(i).is_some_and(|c| is_name(*c) || *c == '.') {
                    i += 1;
                }
            }
            // A selector by matchers alone.
            '{' => i = matchers_at(&chars, i).1,
            c if is_name_start(c) => {
                let start = i;
                while chars.get(i).is_some_and(|c| is_name(*c)) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = skip_space(&chars, i);
                if LABEL_LISTS.contains(&word.as_str()) {
                    if chars.get(next) == Some(&'(') {
                        i = after_closing(&chars, next);
                    }
                } else if KEYWORDS.contains(&word.as_str()) || chars.get(next) == Some(&'(') {
                    // An operator, or a function's or aggregation's name.
                } else {
                    let mut selector = Selector {
                        name: word,
                        matchers: Vec::new(),
                    };
                    if chars.get(next) == Some(&'{') {
                        (selector.matchers, i) = matchers_at(&chars, next);
                    }
                    found.push(selector);
                }
            }
            _ => i += 1,
        }
    }
    found
}

/// What an exposition shows: the sample names its `# TYPE` lines declare,
/// and the label pairs of each sample name's series.
#[derive(Debug, Default)]
struct Exposition {
    declared: BTreeSet<String>,
    series: BTreeMap<String, BTreeSet<(String, String)>>,
}

impl Exposition {
    /// Reads the OpenMetrics or the 0.0.4 text format.
    fn parse(text: &str) -> Exposition {
        let mut exposition = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (family, kind) = rest.split_once(' ').unwrap();
                // OpenMetrics names a counter's family without `_total`;
                // the 0.0.4 text names it by its sample.
                let samples: Vec<String> = match kind {
                    "counter" if family.ends_with("_total") => vec![family.into()],
                    "counter" => vec![format!("{family}_total"), format!("{family}_created")],
                    "histogram" | "gaugehistogram" => ["_bucket", "_sum", "_count", "_created"]
                        .iter()
                        .map(|s| format!("{family}{s}"))
                        .collect(),
                    "summary" => ["", "_sum", "_count", "_created"]
                        .iter()
                        .map(|s| format!("{family}{s}"))
                        .collect(),
                    "info" => vec![format!("{family}_info")],
                    _ => vec![family.into()],
                };
                exposition.declared.extend(samples);
            } else if !line.starts_with('#') && !line.is_empty() {
                let chars: Vec<char> = line.chars().collect();
                let end = chars
                    .iter()
                    .position(|c| !is_name(*c))
                    .unwrap_or(chars.len());
                let name: String = chars[..end].iter().collect();
                let labels = if chars.get(end) == Some(&'{') {
                    matchers_at(&chars, end).0
                } else {
                    Vec::new()
                };
                exposition
                    .series
                    .entry(name)
                    .or_default()
                    .extend(labels.into_iter().map(|(l, _, v)| (l, v)));
            }
        }
        exposition
    }

    fn merge(mut self, other: Exposition) -> Exposition {
        self.declared.extend(other.declared);
        for (name, labels) in other.series {
            self.series.entry(name).or_default().extend(labels);
        }
        self
    }
}

/// Labels Prometheus attaches to every series of a target.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// The names (and `label="value"` matchers) that the queries use and the
/// exposition does not have. `up` is made by Prometheus for each target, so
/// it is never exported; any other metric must be upgrade-guard's.
fn missing(queries: &[(String, String)], exposition: &Exposition) -> BTreeSet<String> {
    let mut missing = BTreeSet::new();
    for (at, expr) in queries {
        for selector in selectors(expr) {
            let name = &selector.name;
            if name == "up" {
                continue;
            }
            if !name.starts_with("upgrade_guard_") {
                missing.insert(format!("{name} (in {at}): not an upgrade-guard metric"));
                continue;
            }
            if !exposition.declared.contains(name) {
                missing.insert(format!("{name} (in {at})"));
                continue;
            }
            for (label, op, value) in &selector.matchers {
                let checkable =
                    op == "=" && !TARGET_LABELS.contains(&label.as_str()) && !value.contains('$');
                let seen = exposition
                    .series
                    .get(name)
                    .is_some_and(|s| s.contains(&(label.clone(), value.clone())));
                if checkable && !seen {
                    missing.insert(format!("{name}{{{label}=\"{value}\"}} (in {at})"));
                }
            }
        }
    }
    missing
}

#[test]
fn selectors_are_the_metrics_an_expression_reads() {
    let names =
        |expr: &str| -> Vec<String> { selectors(expr).into_iter().map(|s| s.name).collect() };
    assert_eq!(
        names(
            r#"sum by (rule) (rate(upgrade_guard_refusals_total{rule="a,b}"}[$__rate_interval])) > 0.05"#
        ),
        ["upgrade_guard_refusals_total"]
    );
    assert_eq!(
        names(
            "histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) / sum(rate(x_sum[1h:5m])) * 1e-3"
        ),
        ["x_bucket", "x_sum"]
    );
    assert_eq!(
        names("up == 0 and on (job) group_left (pod) count by (job) (last_over_time(ready[1h]))"),
        ["up", "ready"]
    );
    assert_eq!(names("absent(ready == 1) or vector(0)"), ["ready"]);
    assert_eq!(
        names("sum(a) without (instance) unless ignoring (x) b offset 5m"),
        ["a", "b"]
    );
    assert_eq!(
        names(r#"label_replace(held{state!="Failed"}, "namespace", "$1", "exported", "(.+)")"#),
        ["held"]
    );
    let matchers = &selectors(r#"m{a="x", b=~'y|z', c!="\"q\""}"#)[0].matchers;
    let expected: Vec<(String, String, String)> =
        [("a", "=", "x"), ("b", "=~", "y|z"), ("c", "!=", "\"q\"")]
            .iter()
            .map(|(l, o, v)| (l.to_string(), o.to_string(), v.to_string()))
            .collect();
    assert_eq!(matchers, &expected);
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `upgrade-guard serve` with its plain-HTTP metrics port, no cluster.
struct Serving {
    child: Child,
    addr: SocketAddr,
    metrics_addr: SocketAddr,
    dir: TempDir,
}

impl Serving {
    async fn start() -> Serving {
        let dir = TempDir::new("observability");
        let (addr, metrics_addr) = (free_port(), free_port());
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_upgrade-guard"));
        for (key, _) in std::env::vars() {
            if key.starts_with("UPGRADE_GUARD_") || key.starts_with("KUBERNETES_") {
                command.env_remove(key);
            }
        }
        let child = command
            .current_dir(root())
            .args(["serve", "--log-format", "json", "--addr", &addr.to_string()])
            .args(["--metrics-addr", &metrics_addr.to_string(), "--dev-ca"])
            .arg(dir.join("ca.crt"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let serving = Serving {
            child,
            addr,
            metrics_addr,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = get(metrics_addr, "/readyz", None).await {
                return serving;
            }
            let log = std::fs::read_to_string(serving.dir.join("serve.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "serve never got ready:\n{log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain HTTP/1.1 GET: the status and the body.
async fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> Result<(u16, String), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request = hyper::Request::get(path).header("host", "localhost");
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = send
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A StatefulSet `name` in `shop` whose refresh is in `state`.
fn refreshing(name: &str, state: &str) -> upgrade_guard::workload::Workload {
    let record = json!({"from": "1.7.0", "to": "1.8.0", "started": "2026-11-21T19:00:00Z",
        "state": state, "partition": 2, "unitStarted": "2026-11-21T19:30:00Z"});
    of(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "shop", "generation": 2,
            "annotations": {"upgradeguard.io/refresh": record.to_string()}},
        "spec": {"replicas": 3, "serviceName": name, "selector": {},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
            "template": {"spec": {"containers": [{"name": "db", "image": "db:1.8.0"}]}}},
        "status": {"replicas": 3, "observedGeneration": 2, "currentRevision": "old", "updateRevision": "new"},
    }))
}

/// The server's router in-process over a cluster view with refreshes in
/// progress, one of them Failed: the per-refresh series only exist then (an
/// empty labelled family has no `# TYPE` line: prometheus-client ≥ 0.24.1
/// leaves it out, as the Go client does), and a process with no cluster has
/// no refresh.
async fn exposition_during_refreshes(accept: &str) -> String {
    let mut cluster = Snapshot::default();
    cluster.insert_workload(refreshing("db", "RollingOut"));
    cluster.insert_workload(refreshing("cache", "Failed"));
    let mut registry = Registry::with_prefix("upgrade_guard");
    let metrics = Arc::new(Metrics::register(&mut registry));
    let app = Arc::new(App {
        policies: Arc::new(ArcSwap::from_pointee(policies())),
        cluster: Arc::new(cluster),
        metrics,
        registry: Arc::new(registry),
        ready: Arc::new(AtomicBool::new(true)),
        clock: now,
        caller: Default::default(),
        rbac: None,
        events: None,
    });
    let response = server::probes(app)
        .oneshot(
            hyper::Request::get("/metrics")
                .header("accept", accept)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// The real binary's `/metrics` in both formats, once every labelled family
/// it can fill without a cluster has a series: a refusal and a 404.
async fn served_expositions() -> [(&'static str, Exposition); 2] {
    let serving = Serving::start().await;
    let ca = std::fs::read_to_string(serving.dir.join("ca.crt")).unwrap();
    let mut client = Client::connect(serving.addr, &[&ca], "h2", None)
        .await
        .unwrap();
    let body =
        std::fs::read(samples_dir().join("sts-update-server-side-apply-dry-run.json")).unwrap();
    let (status, _, reply) = client.post("/validate", body).await;
    assert_eq!(status, 200);
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["response"]["allowed"], false, "{reply}");
    let (status, _) = get(serving.metrics_addr, "/no-such-path", None)
        .await
        .unwrap();
    assert_eq!(status, 404);

    let mut expositions = Vec::new();
    for (format, accept) in [("OpenMetrics", PROMETHEUS_ACCEPT), ("text 0.0.4", "*/*")] {
        let (status, served) = get(serving.metrics_addr, "/metrics", Some(accept))
            .await
            .unwrap();
        assert_eq!(status, 200, "{served}");
        // Prometheus reads the TYPE lines of the format it was given.
        assert_eq!(
            served.contains("# EOF"),
            format == "OpenMetrics",
            "{format}: {served}"
        );
        let during = exposition_during_refreshes(accept).await;
        expositions.push((
            format,
            Exposition::parse(&served).merge(Exposition::parse(&during)),
        ));
    }
    expositions.try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_the_dashboard_name_is_exported_by_the_server() {
    let queries = queries(&rules(), &dashboard());
    let used: BTreeSet<String> = queries
        .iter()
        .flat_map(|(_, expr)| selectors(expr))
        .map(|s| s.name)
        .collect();
    // The extraction found the metrics, or this test checks nothing.
    for name in [
        "upgrade_guard_ready",
        "upgrade_guard_refresh_held_seconds",
        "upgrade_guard_decision_duration_seconds_bucket",
        "upgrade_guard_refusals_total",
        "up",
    ] {
        assert!(used.contains(name), "{name} not found in {used:?}");
    }
    let mut report = Vec::new();
    for (format, exposition) in served_expositions().await {
        let missing = missing(&queries, &exposition);
        if !missing.is_empty() {
            report.push(format!(
                "{format}: {} name(s) the server does not export:\n  {}",
                missing.len(),
                missing.into_iter().collect::<Vec<_>>().join("\n  ")
            ));
        }
    }
    assert!(
        report.is_empty(),
        "the rules ({RULES}) or the dashboard ({DASHBOARD}) use metrics with no `# TYPE` line \
         in the server's /metrics (a labelled family has one only once it has a series):\n{}",
        report.join("\n")
    );
}

/// The same check, on names the server does not export: a typo, a
/// histogram's and a counter's family names (not series), a label value
/// that never occurs, and another exporter's metric.
#[tokio::test]
async fn the_metric_check_reports_names_the_server_does_not_export() {
    let exposition = Exposition::parse(&exposition_during_refreshes(PROMETHEUS_ACCEPT).await);
    let queries: Vec<(String, String)> = [
        "rate(upgrade_guard_refusal_total[5m])",
        "upgrade_guard_decision_duration_seconds",
        "upgrade_guard_overrides",
        r#"upgrade_guard_refreshes{state="failed"}"#,
        "node_cpu_seconds_total",
        // All of these are there: nothing to report.
        r#"upgrade_guard_refreshes{state="Failed", job="upgrade-guard"}"#,
        r#"upgrade_guard_refresh_held_seconds{state="Failed",namespace="shop"}"#,
        "upgrade_guard_decision_duration_seconds_count + upgrade_guard_overrides_total",
        "up",
    ]
    .iter()
    .enumerate()
    .map(|(i, e)| (format!("q{i}"), e.to_string()))
    .collect();
    let reported: Vec<String> = missing(&queries, &exposition).into_iter().collect();
    assert_eq!(
        reported,
        [
            "node_cpu_seconds_total (in q4): not an upgrade-guard metric",
            "upgrade_guard_decision_duration_seconds (in q1)",
            "upgrade_guard_overrides (in q2)",
            "upgrade_guard_refreshes{state=\"failed\"} (in q3)",
            "upgrade_guard_refusal_total (in q0)",
        ]
    );
}
