//! The Grafana dashboard and the Prometheus alert rules shipped in `helm/resizeq/files/` may
//! only query metrics the worker exports: a renamed metric must fail here, not blank a panel
//! or silence an alert in production.

use std::collections::BTreeSet;
use std::path::Path;

use resizeq::telemetry::catalogue::{series_names, ALL};
use yaml_rust2::{Yaml, YamlLoader};

fn files_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/resizeq/files")
}

/// Every `resizeq_…` identifier in a PromQL expression.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(at) = rest.find("resizeq_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        into.insert(name);
    }
}

fn exported() -> BTreeSet<String> {
    ALL.iter().flat_map(|m| series_names(m)).collect()
}

fn unknown(names: &BTreeSet<String>) -> Vec<&String> {
    let exported = exported();
    names.iter().filter(|n| !exported.contains(*n)).collect()
}

fn json_queries(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(q)) => {
                        into.push(q.clone())
                    }
                    _ => json_queries(v, into),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_queries(v, into)),
        _ => {}
    }
}

#[test]
fn the_dashboard_queries_only_exported_metrics() {
    let path = files_dir().join("resizeq-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let mut queries = Vec::new();
    json_queries(&dashboard, &mut queries);
    let mut names = BTreeSet::new();
    queries.iter().for_each(|q| metric_names(q, &mut names));
    assert!(
        names.len() >= 8,
        "the dashboard should chart the worker's metrics; found {names:?}"
    );
    assert_eq!(
        unknown(&names),
        Vec::<&String>::new(),
        "not in the catalogue"
    );
    // Quantiles need real histograms.
    assert!(names.contains("resizeq_stage_duration_seconds_bucket"));
}

#[test]
fn the_alert_rules_query_only_exported_metrics() {
    let path = files_dir().join("prometheus-rules.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let docs = YamlLoader::load_from_str(&text).expect("valid YAML");
    let mut names = BTreeSet::new();
    let mut alerts = 0;
    for doc in &docs {
        for group in doc["groups"].as_vec().expect("a `groups` list") {
            for rule in group["rules"].as_vec().expect("a `rules` list") {
                let Yaml::String(expr) = &rule["expr"] else {
                    panic!("rule without expr: {rule:?}")
                };
                if !rule["alert"].is_badvalue() {
                    alerts += 1;
                }
                metric_names(expr, &mut names);
            }
        }
    }
    assert!(
        alerts >= 5,
        "DLQ, age, error rate, stalled, readiness: {alerts} alerts"
    );
    assert_eq!(
        unknown(&names),
        Vec::<&String>::new(),
        "not in the catalogue"
    );
}

#[test]
fn the_name_scanner_sees_renames() {
    let mut names = BTreeSet::new();
    metric_names(
        "sum(rate(resizeq_messages_total{outcome=\"processed\"}[5m])) / resizeq_mesages_total",
        &mut names,
    );
    assert_eq!(unknown(&names), ["resizeq_mesages_total"]);
}
