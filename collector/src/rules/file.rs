//! Rule files in Prometheus' format: parsing (strict: unknown fields and
//! duplicate keys are errors) and validation as `promtool check rules` does
//! it, with every error naming `file:line:column`, the group and the rule.
//!
//! Not here: evaluation ([`super::group`]) or which files to load
//! ([`super::manager`]).

use std::collections::BTreeMap;
use std::path::Path;
use vigil_common::labels::{valid_label_name, valid_metric_name};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::template::Template;
use crate::gofmt::{self, parse_model_duration};
use crate::promql::Expr;

/// A parsed, validated rule file.
#[derive(Debug, Clone)]
pub struct RuleFile {
    pub path: String,
    pub groups: Vec<GroupSpec>,
}

/// One `groups:` entry.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub name: String,
    pub file: String,
    /// `None`: the manager's default interval.
    pub interval_ms: Option<i64>,
    /// 0 = no limit.
    pub limit: usize,
    pub query_offset_ms: Option<i64>,
    /// Added to every rule's result (rule labels win).
    pub labels: BTreeMap<String, String>,
    pub rules: Vec<RuleSpec>,
}

/// One rule of a group.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    pub kind: RuleKind,
    /// The expression as written.
    pub expr_text: String,
    pub expr: Expr,
    /// Sorted by name (group labels merged in, rule labels win).
    pub labels: BTreeMap<String, String>,
    /// Where the rule starts in its file.
    pub line: u64,
    pub column: u64,
}

#[derive(Debug, Clone)]
pub enum RuleKind {
    Recording {
        record: String,
    },
    Alerting {
        alert: String,
        for_ms: i64,
        keep_firing_for_ms: i64,
        /// Sorted by name.
        annotations: BTreeMap<String, String>,
    },
}

impl RuleSpec {
    /// The alert name or the recorded metric name.
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Recording { record } => record,
            RuleKind::Alerting { alert, .. } => alert,
        }
    }
}

/// Everything wrong with one file, each entry already prefixed with
/// `file:line:column:` where the position is known.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .errors.join("\n"))]
pub struct RuleFileError {
    pub file: String,
    pub errors: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    groups: Vec<Spanned<RawGroup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    interval: Option<Spanned<String>>,
    #[serde(default)]
    limit: Option<Spanned<i64>>,
    #[serde(default)]
    query_offset: Option<Spanned<String>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    record: Option<Spanned<String>>,
    #[serde(default)]
    alert: Option<Spanned<String>>,
    #[serde(default)]
    expr: Option<Spanned<String>>,
    #[serde(default, rename = "for")]
    for_: Option<Spanned<String>>,
    #[serde(default)]
    keep_firing_for: Option<Spanned<String>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

/// The first line of a YAML error, as `line:column: message`.
fn yaml_error(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("").trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // "line 3 column 3: msg" → "3:3: msg"
    if let Some(rest) = first.strip_prefix("line ")
        && let Some((line, rest)) = rest.split_once(" column ")
        && let Some((col, msg)) = rest.split_once(": ")
    {
        return format!("{line}:{col}: {msg}");
    }
    match e.location() {
        Some(l) => format!("{}:{}: {first}", l.line(), l.column()),
        None => first.to_string(),
    }
}

/// Reads and validates a rule file.
pub fn load_file(path: &Path) -> Result<RuleFile, RuleFileError> {
    let name = path.display().to_string();
    let content = std::fs::read_to_string(path).map_err(|e| RuleFileError {
        file: name.clone(),
        errors: vec![format!("{name}: {e}")],
    })?;
    parse(&name, &content)
}

/// Parses and validates rule file `content`; `name` prefixes every error.
pub fn parse(name: &str, content: &str) -> Result<RuleFile, RuleFileError> {
    let fail = |errors: Vec<String>| RuleFileError {
        file: name.to_string(),
        errors: errors.into_iter().map(|e| format!("{name}:{e}")).collect(),
    };
    let raw: Option<RawFile> = if content.trim().is_empty() {
        None
    } else {
        serde_saphyr::from_str(content).map_err(|e| fail(vec![yaml_error(&e)]))?
    };
    let raw = raw.unwrap_or(RawFile { groups: Vec::new() });
    let mut errs = Vec::new();
    let mut groups = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for g in raw.groups {
        let (gl, gc) = (g.referenced.line(), g.referenced.column());
        let g = g.value;
        let gname = g.name.as_ref().map(|n| n.value.clone()).unwrap_or_default();
        if gname.is_empty() {
            errs.push(format!("{gl}:{gc}: Groupname must not be empty"));
        }
        if !seen.insert(gname.clone()) {
            errs.push(format!(
                "{gl}:{gc}: groupname: \"{gname}\" is repeated in the same file"
            ));
        }
        let dur =
            |f: &Option<Spanned<String>>, what: &str, errs: &mut Vec<String>| -> Option<i64> {
                let f = f.as_ref()?;
                match parse_model_duration(&f.value) {
                    Ok(ms) => Some(ms),
                    Err(e) => {
                        errs.push(format!(
                            "{}:{}: group \"{gname}\": {what}: {e}",
                            f.referenced.line(),
                            f.referenced.column()
                        ));
                        None
                    }
                }
            };
        let interval_ms = dur(&g.interval, "interval", &mut errs).filter(|ms| *ms > 0);
        let query_offset_ms = dur(&g.query_offset, "query_offset", &mut errs);
        let group_labels = g.labels.unwrap_or_default();
        for k in group_labels.keys() {
            if !valid_label_name(k) || k == "__name__" {
                errs.push(format!(
                    "{gl}:{gc}: group \"{gname}\": invalid label name: {k}"
                ));
            }
        }
        let mut rules = Vec::new();
        for (i, r) in g.rules.into_iter().enumerate() {
            let (rl, rc) = (r.referenced.line(), r.referenced.column());
            let r = r.value;
            let rule_name = r
                .alert
                .as_ref()
                .filter(|a| !a.value.is_empty())
                .or(r.record.as_ref())
                .map(|n| n.value.clone())
                .unwrap_or_default();
            let mut rerr = |pos: Option<(u64, u64)>, msg: String| {
                let prefix = match pos {
                    Some((l, c)) => format!("{l}:{c}: "),
                    None => format!("{rl}:{rc}: "),
                };
                errs.push(format!(
                    "{prefix}group \"{gname}\", rule {}, \"{rule_name}\": {msg}",
                    i + 1
                ));
            };
            let pos = |s: &Option<Spanned<String>>| {
                s.as_ref()
                    .map(|s| (s.referenced.line(), s.referenced.column()))
            };
            let record = r.record.as_ref().map(|s| s.value.as_str()).unwrap_or("");
            let alert = r.alert.as_ref().map(|s| s.value.as_str()).unwrap_or("");
            if !record.is_empty() && !alert.is_empty() {
                rerr(
                    pos(&r.record),
                    "only one of 'record' and 'alert' must be set".into(),
                );
            }
            if record.is_empty() && alert.is_empty() {
                rerr(
                    pos(&r.record).or(pos(&r.alert)),
                    "one of 'record' or 'alert' must be set".into(),
                );
            }
            let expr_text = r.expr.as_ref().map(|e| e.value.clone()).unwrap_or_default();
            let mut expr = None;
            if expr_text.is_empty() {
                rerr(pos(&r.expr), "field 'expr' must be set in rule".into());
            } else {
                match crate::promql::parse(&expr_text) {
                    Ok(e) => expr = Some(e),
                    Err(e) => rerr(pos(&r.expr), format!("could not parse expression: {e}")),
                }
            }
            let for_ms = dur(&r.for_, "for", &mut Vec::new());
            if let (Some(f), None) = (&r.for_, for_ms) {
                rerr(
                    pos(&r.for_),
                    format!(
                        "for: {}",
                        parse_model_duration(&f.value)
                            .err()
                            .map(|e| e.to_string())
                            .unwrap_or_default()
                    ),
                );
            }
            let kff_ms = dur(&r.keep_firing_for, "keep_firing_for", &mut Vec::new());
            if let (Some(f), None) = (&r.keep_firing_for, kff_ms) {
                rerr(
                    pos(&r.keep_firing_for),
                    format!(
                        "keep_firing_for: {}",
                        parse_model_duration(&f.value)
                            .err()
                            .map(|e| e.to_string())
                            .unwrap_or_default()
                    ),
                );
            }
            let annotations = r.annotations.unwrap_or_default();
            if !record.is_empty() {
                if !annotations.is_empty() {
                    rerr(
                        pos(&r.record),
                        "invalid field 'annotations' in recording rule".into(),
                    );
                }
                if for_ms.unwrap_or(0) != 0 {
                    rerr(
                        pos(&r.record),
                        "invalid field 'for' in recording rule".into(),
                    );
                }
                if kff_ms.unwrap_or(0) != 0 {
                    rerr(
                        pos(&r.record),
                        "invalid field 'keep_firing_for' in recording rule".into(),
                    );
                }
                if !valid_metric_name(record) {
                    rerr(
                        pos(&r.record),
                        format!("invalid recording rule name: {record}"),
                    );
                }
            }
            let rule_labels = r.labels.unwrap_or_default();
            for k in rule_labels.keys() {
                if !valid_label_name(k) || k == "__name__" {
                    rerr(None, format!("invalid label name: {k}"));
                }
            }
            for k in annotations.keys() {
                if !valid_label_name(k) {
                    rerr(None, format!("invalid annotation name: {k}"));
                }
            }
            if !alert.is_empty() {
                let tname = format!("__alert_{alert}");
                for (k, v) in &rule_labels {
                    if let Err(e) = Template::new(&tname, v) {
                        rerr(None, format!("label {}: {e}", gofmt::go_quote(k)));
                    }
                }
                for (k, v) in &annotations {
                    if let Err(e) = Template::new(&tname, v) {
                        rerr(None, format!("annotation {}: {e}", gofmt::go_quote(k)));
                    }
                }
            }
            let Some(expr) = expr else { continue };
            let mut labels = group_labels.clone();
            labels.extend(rule_labels);
            let kind = if !alert.is_empty() {
                RuleKind::Alerting {
                    alert: alert.to_string(),
                    for_ms: for_ms.unwrap_or(0),
                    keep_firing_for_ms: kff_ms.unwrap_or(0),
                    annotations,
                }
            } else {
                RuleKind::Recording {
                    record: record.to_string(),
                }
            };
            rules.push(RuleSpec {
                kind,
                expr_text,
                expr,
                labels,
                line: rl,
                column: rc,
            });
        }
        groups.push(GroupSpec {
            name: gname,
            file: name.to_string(),
            interval_ms,
            limit: g
                .limit
                .map(|l| l.value)
                .filter(|l| *l > 0)
                .map_or(0, |l| l as usize),
            query_offset_ms,
            labels: group_labels,
            rules,
        });
    }
    if !errs.is_empty() {
        return Err(fail(errs));
    }
    Ok(RuleFile {
        path: name.to_string(),
        groups,
    })
}

/// Expands rule path patterns (globs) into files, in order, without
/// repeats. A pattern that is a plain path must exist; a glob may match
/// nothing.
pub fn expand_patterns(patterns: &[String]) -> Result<Vec<std::path::PathBuf>, String> {
    let mut out: Vec<std::path::PathBuf> = Vec::new();
    for p in patterns {
        let is_glob = p.contains(['*', '?', '[']);
        if !is_glob {
            let pb = std::path::PathBuf::from(p);
            if !pb.exists() {
                return Err(format!("rule file {p}: no such file"));
            }
            if !out.contains(&pb) {
                out.push(pb);
            }
            continue;
        }
        let paths = glob::glob(p).map_err(|e| format!("rule file pattern {p:?}: {e}"))?;
        let mut matched: Vec<_> = paths.filter_map(Result::ok).collect();
        matched.sort();
        for m in matched {
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    Ok(out)
}

/// Duplicate rules (same name and labels), as promtool's lint reports them:
/// `(name, labels)` of each duplicated rule.
pub fn duplicates(f: &RuleFile) -> Vec<(String, BTreeMap<String, String>)> {
    let mut all: Vec<(String, BTreeMap<String, String>)> = f
        .groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .map(|r| (r.name().to_string(), r.labels.clone()))
        .collect();
    all.sort();
    let mut dups: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for w in all.windows(2) {
        if w[0] == w[1] && dups.last() != Some(&w[1]) {
            dups.push(w[1].clone());
        }
    }
    dups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_groups_and_rules() {
        let f = parse(
            "r.yml",
            "groups:\n- name: g\n  interval: 30s\n  limit: 10\n  labels: {team: a}\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n  - alert: Down\n    expr: up == 0\n    for: 5m\n    keep_firing_for: 1m\n    labels: {severity: critical}\n    annotations:\n      summary: '{{ $labels.job }} down'\n",
        )
        .unwrap();
        let g = &f.groups[0];
        assert_eq!(g.interval_ms, Some(30_000));
        assert_eq!(g.limit, 10);
        assert_eq!(g.rules.len(), 2);
        assert_eq!(g.rules[0].name(), "job:up:sum");
        assert_eq!(g.rules[0].labels.get("team").map(String::as_str), Some("a"));
        match &g.rules[1].kind {
            RuleKind::Alerting {
                for_ms,
                keep_firing_for_ms,
                annotations,
                ..
            } => {
                assert_eq!(*for_ms, 300_000);
                assert_eq!(*keep_firing_for_ms, 60_000);
                assert!(annotations.contains_key("summary"));
            }
            _ => panic!("not an alert"),
        }
        assert_eq!((g.rules[1].line, g.rules[1].column), (9, 5));
        assert!(parse("e.yml", "").unwrap().groups.is_empty());
        assert!(
            parse("e.yml", "# only a comment\n")
                .unwrap()
                .groups
                .is_empty()
        );
    }

    #[test]
    fn errors_name_file_line_column_group_and_rule() {
        let e = parse(
            "r.yml",
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up ==\n",
        )
        .unwrap_err();
        assert_eq!(e.errors.len(), 1);
        assert!(
            e.errors[0]
                .starts_with("r.yml:5:11: group \"g\", rule 1, \"A\": could not parse expression:"),
            "{}",
            e.errors[0]
        );
        let e = parse(
            "r.yml",
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    bogus: 1\n",
        )
        .unwrap_err();
        assert!(
            e.errors[0].starts_with("r.yml:6:5: unknown field `bogus`"),
            "{}",
            e.errors[0]
        );
        let e = parse(
            "r.yml",
            "groups:\n- name: g\n  rules:\n  - record: 'a b'\n    expr: up\n    for: 1m\n",
        )
        .unwrap_err();
        assert_eq!(e.errors.len(), 2, "{e}");
        assert!(
            e.errors
                .iter()
                .any(|m| m.contains("invalid field 'for' in recording rule"))
        );
        assert!(
            e.errors
                .iter()
                .any(|m| m.contains("invalid recording rule name: a b"))
        );
        let e = parse(
            "r.yml",
            "groups:\n- name: g\n  rules: []\n- name: g\n  rules: []\n",
        )
        .unwrap_err();
        assert!(
            e.errors[0].contains("4:3: groupname: \"g\" is repeated in the same file"),
            "{e}"
        );
        let e = parse("r.yml", "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    annotations: {s: '{{ nope }}'}\n").unwrap_err();
        assert!(
            e.errors[0].contains("annotation \"s\": error parsing template __alert_A"),
            "{e}"
        );
        let e = parse(
            "r.yml",
            "groups:\n- name: g\n  rules:\n  - alert: A\n    record: b\n    expr: up\n",
        )
        .unwrap_err();
        assert!(
            e.errors[0].contains("only one of 'record' and 'alert' must be set"),
            "{e}"
        );
        let e = parse(
            "r.yml",
            "groups:\n- name: g\n  rules:\n  - expr: up\n    for: 5x\n",
        )
        .unwrap_err();
        assert_eq!(e.errors.len(), 2, "{e}");
        let e = parse("r.yml", "groups: [\n").unwrap_err();
        assert!(e.errors[0].starts_with("r.yml:1:9:"), "{e}");
        let e = parse("r.yml", "groups:\n- name: g\n  name: h\n").unwrap_err();
        assert!(e.errors[0].starts_with("r.yml:"), "{e}");
    }

    #[test]
    fn duplicates_like_promtool() {
        let f = parse(
            "r.yml",
            "groups:\n- name: a\n  rules:\n  - alert: X\n    expr: up\n- name: b\n  rules:\n  - alert: X\n    expr: up == 0\n  - alert: X\n    expr: up\n    labels: {s: w}\n",
        )
        .unwrap();
        assert_eq!(duplicates(&f).len(), 1);
    }
}
