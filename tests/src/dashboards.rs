//! The shipped Grafana dashboards as the tests read them: every panel's
//! queries, and the template variables substituted as Grafana substitutes
//! them when "All" is selected.
//!
//! Grafana's rule for a multi-value variable with "All": its `allValue`
//! when the dashboard sets one, else every value of the variable's query
//! joined as a regular expression `(a|b|…)` (regex-escaped; one value
//! alone, unparenthesised). Text boxes and custom variables take their
//! current value. `$__rate_interval`, `$__interval` and `$__range` take the
//! values given by the caller.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// One query of one panel.
#[derive(Clone, Debug)]
pub struct PanelQuery {
    pub dashboard: String,
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
    /// A LogQL query (the Loki data source), else PromQL.
    pub loki: bool,
}

/// The repository's `dashboards/` folder.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .join("dashboards")
}

/// Every dashboard (file name, JSON), sorted by file name.
pub fn load_all() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir()).expect("dashboards/") {
        let p = e.expect("entry").path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).expect("read"))
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        out.push((p.file_name().unwrap().to_string_lossy().into_owned(), v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The queries of every panel of a dashboard.
pub fn queries(name: &str, d: &Value) -> Vec<PanelQuery> {
    let mut out = Vec::new();
    for panel in d["panels"].as_array().into_iter().flatten() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = t["expr"].as_str() else {
                continue;
            };
            let loki = t["datasource"]["type"] == "loki" || panel["datasource"]["type"] == "loki";
            out.push(PanelQuery {
                dashboard: name.to_string(),
                panel: panel["title"].as_str().unwrap_or("").to_string(),
                ref_id: t["refId"].as_str().unwrap_or("").to_string(),
                expr: expr.to_string(),
                loki,
            });
        }
    }
    out
}

/// Escapes a value for a regular expression, as Grafana's Prometheus data
/// source does for multi-value variables.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The values of every template variable with "All" selected. `values_of`
/// answers a variable's query (`label_values(selector, label)`, with the
/// variables before it already substituted) for variables without
/// `allValue`.
pub fn all_values(
    d: &Value,
    builtins: &[(&str, &str)],
    mut values_of: impl FnMut(&str) -> Vec<String>,
) -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> = builtins
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or("").to_string();
        let value = match v["type"].as_str() {
            Some("datasource") => continue,
            Some("query") if v["includeAll"] == true => match v["allValue"].as_str() {
                Some(a) => a.to_string(),
                None => {
                    let q = v["query"]["query"]
                        .as_str()
                        .or(v["query"].as_str())
                        .unwrap_or("");
                    let vals = values_of(&substitute(q, &vars));
                    match vals.len() {
                        1 => regex_escape(&vals[0]),
                        _ => format!(
                            "({})",
                            vals.iter()
                                .map(|s| regex_escape(s))
                                .collect::<Vec<_>>()
                                .join("|")
                        ),
                    }
                }
            },
            _ => v["current"]["value"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap_or("")
                .to_string(),
        };
        vars.insert(name, value);
    }
    vars
}

/// Replaces `$name` and `${name}` by their values (longest names first, so
/// `$pod` never eats `$pods`); unknown variables stay as they are, as in
/// Grafana.
pub fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = expr.to_string();
    for n in names {
        out = out.replace(&format!("${{{n}}}"), &vars[n]);
        out = out.replace(&format!("${n}"), &vars[n]);
    }
    out
}

/// `label_values(selector, label)` → (selector, label); `label_values(label)`
/// → ("", label).
pub fn parse_label_values(q: &str) -> Option<(String, String)> {
    let inner = q.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    match inner.rsplit_once(',') {
        Some((sel, label)) => Some((sel.trim().to_string(), label.trim().to_string())),
        None => Some((String::new(), inner.trim().to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grafana_all_expansion() {
        let d: Value = serde_json::json!({"templating": {"list": [
            {"name": "datasource", "type": "datasource"},
            {"name": "node", "type": "query", "includeAll": true, "allValue": ".*", "query": {"query": "label_values(up, node)"}},
            {"name": "pod", "type": "query", "includeAll": true, "query": {"query": "label_values(x{node=~\"$node\"}, pod)"}},
            {"name": "search", "type": "textbox", "query": "error"},
        ]}});
        let mut asked = Vec::new();
        let v = all_values(&d, &[("__rate_interval", "1m")], |q| {
            asked.push(q.to_string());
            vec!["a.b".into(), "c".into()]
        });
        assert_eq!(asked, ["label_values(x{node=~\".*\"}, pod)"]);
        assert_eq!(v["pod"], "(a\\.b|c)");
        assert_eq!(v["search"], "error");
        assert_eq!(
            substitute(
                "rate(x{pod=~\"$pod\", n=~\"${node}\"}[$__rate_interval]) $1",
                &v
            ),
            "rate(x{pod=~\"(a\\.b|c)\", n=~\".*\"}[1m]) $1"
        );
        assert_eq!(
            parse_label_values("label_values(up{job=~\"$job\"}, instance)"),
            Some(("up{job=~\"$job\"}".into(), "instance".into()))
        );
    }
}
