//! `deploy/monitoring/`: the Prometheus rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`), and every metric the rules and the Grafana dashboard query is one
//! a running controller (`twinsite run`, embedded default) exports at `/metrics`: the list
//! comes from its real output, never from a hand-written one.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::controller::ControllerProcess;
use support::prometheus::binary;

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring")
}

fn files_ending(suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(monitoring_dir())
        .expect("deploy/monitoring exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

fn promtool(args: &[&str], files: &[PathBuf]) {
    let output = Command::new(binary("promtool"))
        .args(args)
        .args(files)
        .current_dir(monitoring_dir())
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let rules = files_ending("-rules.yml");
    let tests = files_ending("-test.yml");
    assert!(
        !rules.is_empty() && !tests.is_empty(),
        "no rules or rule tests in deploy/monitoring"
    );
    promtool(&["check", "rules"], &rules);
    promtool(&["test", "rules"], &tests);
}

/// The metric names a PromQL expression reads: identifiers that are not functions,
/// keywords, label names (in `{…}` matchers or `by (…)` lists), durations or numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let strings = regex::Regex::new(r#""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`"#).unwrap();
    let matchers = regex::Regex::new(r"\{[^}]*\}").unwrap();
    let ranges = regex::Regex::new(r"\[[^\]]*\]").unwrap();
    let grouping =
        regex::Regex::new(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
            .unwrap();
    // `label_values(metric, label)`: only the first argument is a metric.
    let label_values = regex::Regex::new(r"label_values\(\s*([^,)]+)(?:,[^)]*)?\)").unwrap();
    let variables = regex::Regex::new(r"\$\{?\w+\}?").unwrap();
    let offsets = regex::Regex::new(r"\boffset\s+\S+").unwrap();
    let numbers = regex::Regex::new(r"(^|[^\w:.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?").unwrap();
    let identifier = regex::Regex::new(r"[A-Za-z_:][A-Za-z0-9_:]*").unwrap();
    let keywords = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
        "Inf",
        "NaN",
    ];
    let mut text = strings.replace_all(expr, " ").to_string();
    text = label_values.replace_all(&text, " $1 ").to_string();
    text = matchers.replace_all(&text, " ").to_string();
    text = ranges.replace_all(&text, " ").to_string();
    text = grouping.replace_all(&text, " ").to_string();
    text = variables.replace_all(&text, " ").to_string();
    text = offsets.replace_all(&text, " ").to_string();
    text = numbers.replace_all(&text, "${1} ").to_string();
    let mut names = BTreeSet::new();
    for m in identifier.find_iter(&text) {
        let rest = text[m.end()..].trim_start();
        if rest.starts_with('(') || keywords.contains(&m.as_str()) {
            continue;
        }
        names.insert(m.as_str().to_string());
    }
    names
}

#[test]
fn the_metric_name_extractor_reads_metrics_and_skips_functions_labels_and_keywords() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{le="+Inf", x=~"$site"}[5m]))) > 10
           and on (streamjob) (b_total offset 1h == 1) or label_values(c, site) unless 2 * d:rec"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["a_bucket", "b_total", "c", "d:rec"]
    );
}

/// Every expression of the rules (`expr`) and of the dashboard (panel targets and template
/// variables), with where it is.
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for file in files_ending("-rules.yml") {
        let rules: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for group in rules["groups"].as_array().unwrap() {
            for rule in group["rules"].as_array().unwrap() {
                let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap();
                out.push((
                    format!("{}: {name}", file.display()),
                    rule["expr"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    let dashboards = files_ending("-dashboard.json");
    assert!(
        !dashboards.is_empty(),
        "no Grafana dashboard in deploy/monitoring"
    );
    for file in dashboards {
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", file.display()));
        let mut panels: Vec<&serde_json::Value> =
            dashboard["panels"].as_array().unwrap().iter().collect();
        let mut queries = 0;
        while let Some(panel) = panels.pop() {
            if let Some(nested) = panel["panels"].as_array() {
                panels.extend(nested);
            }
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{}: a target without expr", file.display()));
                queries += 1;
                out.push((
                    format!("{}: panel {:?}", file.display(), panel["title"]),
                    expr.to_string(),
                ));
            }
        }
        assert!(queries > 0, "{}: no queries", file.display());
        for variable in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if variable["type"] == "query" {
                let query = variable["query"]["query"]
                    .as_str()
                    .or(variable["query"].as_str())
                    .unwrap();
                out.push((
                    format!("{}: variable {:?}", file.display(), variable["name"]),
                    query.to_string(),
                ));
            }
        }
    }
    out
}

/// Metric names in an exposition: every sample's name, and for families without samples
/// yet the names their `# TYPE` line promises (`_total` for counters, `_bucket`, `_sum`,
/// `_count` for histograms).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    names.insert(name.to_string());
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_the_dashboard_query_is_one_a_running_controller_exports() {
    let controller = ControllerProcess::start("", &[]).await;
    // The engine's view and the exposure of the sample jobs appear after the first passes.
    controller
        .wait_for(
            "/metrics",
            Duration::from_secs(60),
            "exposure and site status exported",
            |m| {
                m.contains("twinsite_replication_rpo_seconds{")
                    && m.contains("twinsite_site_status{")
            },
        )
        .await;
    // An operation and its relaunches: what only exists once something moved.
    let (status, body) = controller
        .admin(
            reqwest::Method::POST,
            "/api/v1/failover",
            r#"{"from": "dc-a", "to": "dc-b", "mode": "planned"}"#,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let exposition = controller
        .wait_for(
            "/metrics",
            Duration::from_secs(60),
            "the operation and its relaunches exported",
            |m| {
                m.contains("twinsite_failover_operation_jobs{")
                    && m.contains("twinsite_failover_relaunches_total{")
            },
        )
        .await;
    let exported = exported_names(&exposition);
    for name in [
        "twinsite_leader",
        "twinsite_replication_rpo_seconds",
        "twinsite_replication_lag_breaches_total",
        "twinsite_failover_operation_active",
    ] {
        assert!(exported.contains(name), "{name} missing from {exported:?}");
    }
    // Recording rules' names are metrics too, once Prometheus has the rules.
    let mut recorded = BTreeSet::new();
    for file in files_ending("-rules.yml") {
        let rules: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for group in rules["groups"].as_array().unwrap() {
            for rule in group["rules"].as_array().unwrap() {
                if let Some(name) = rule["record"].as_str() {
                    recorded.insert(name.to_string());
                }
            }
        }
    }
    let mut unknown = Vec::new();
    for (place, expr) in expressions() {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{place}: names no metric: {expr}");
        for name in names {
            if !exported.contains(&name) && !recorded.contains(&name) {
                unknown.push(format!("{place}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics no controller exports:\n{}\nexported: {exported:?}",
        unknown.join("\n")
    );
}
