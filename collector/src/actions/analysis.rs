//! Rollout analysis: does the new version of a workload do worse than the
//! old? Each check of a rollback rule is a PromQL template evaluated once for
//! the new image and (for ratios) once for the old, over the analysis window;
//! `$image`, `$window`, `$ids` (a regex of the version's container ids) and
//! `$names` (of its container names) are filled in, as is `$<label>` for each
//! of the workload's labels (`$service`). Built-in checks:
//!
//! | `metric` | query |
//! |---|---|
//! | `restarts` | `sum(changes(container_start_time_seconds{name=~"$names"}[$window]))` |
//! | `oom_kills` | `sum(increase(container_oom_events_total{name=~"$names"}[$window]))` |
//! | `probe_failures` | `sum(max_over_time(vigil_probe_failures_total{container_id=~"$ids"}[$window]))` |
//! | `error_logs_per_second` | `sum(rate(vigil_log_lines_total{level=~"error\|fatal\|critical",container_id=~"$ids"}[$window]))` |
//!
//! A check fails when the new version's value is above `max`, or above
//! `max_ratio` × the old version's. **Missing data is never a pass**: a query
//! with no samples (or containers of the version not known) is `NoData`,
//! which keeps the analysis open and, when the window ends, makes it
//! inconclusive — never a promotion. Pure but for the [`MetricSource`].

use std::fmt::Write as _;

use vigil_common::Labels;

use super::source::MetricSource;

/// One check of a rollback rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub name: String,
    /// PromQL with the placeholders above.
    pub query: String,
    pub max: Option<f64>,
    pub max_ratio: Option<f64>,
}

/// The built-in check templates.
pub fn builtin(metric: &str) -> Option<&'static str> {
    Some(match metric {
        "restarts" => r#"sum(changes(container_start_time_seconds{name=~"$names"}[$window]))"#,
        "oom_kills" => r#"sum(increase(container_oom_events_total{name=~"$names"}[$window]))"#,
        "probe_failures" => {
            r#"sum(max_over_time(vigil_probe_failures_total{container_id=~"$ids"}[$window]))"#
        }
        "error_logs_per_second" => {
            r#"sum(rate(vigil_log_lines_total{level=~"error|fatal|critical",container_id=~"$ids"}[$window]))"#
        }
        _ => return None,
    })
}

/// A check's verdict, with the values measured.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Pass { new: f64, old: Option<f64> },
    Fail { new: f64, old: Option<f64> },
    NoData { why: String },
}

/// What a version is: its image and the containers known to run it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Version {
    pub image: String,
    pub container_ids: Vec<String>,
    pub names: Vec<String>,
}

fn regex_escape_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| regex::escape(s))
        .collect::<Vec<_>>()
        .join("|")
}

/// `s` inside a PromQL double-quoted string.
fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The query of `template` for `v` of `workload` over `window_s`.
pub fn render(template: &str, workload: &Labels, v: &Version, window_s: u64) -> String {
    let mut q = template
        .replace("$image", &quote(&v.image))
        .replace("$window", &format!("{window_s}s"))
        .replace("$ids", &quote(&regex_escape_list(&v.container_ids)))
        .replace("$names", &quote(&regex_escape_list(&v.names)));
    for (k, val) in workload.iter() {
        q = q.replace(&format!("${k}"), &quote(val));
    }
    q
}

fn value(source: &dyn MetricSource, q: &str, now: i64) -> Result<f64, String> {
    let s = source.query(q, now).map_err(|e| format!("{q}: {e}"))?;
    let vals: Vec<f64> = s
        .iter()
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite())
        .collect();
    if vals.is_empty() {
        return Err(format!("{q}: no data"));
    }
    Ok(vals.iter().sum())
}

/// Evaluates `c` for the new version against the old at `now`.
pub fn evaluate(
    c: &Check,
    source: &dyn MetricSource,
    workload: &Labels,
    new: &Version,
    old: &Version,
    window_s: u64,
    now: i64,
) -> Verdict {
    let per_container = c.query.contains("$ids") || c.query.contains("$names");
    if per_container && new.container_ids.is_empty() {
        return Verdict::NoData {
            why: format!("no container of {} known", new.image),
        };
    }
    let n = match value(source, &render(&c.query, workload, new, window_s), now) {
        Ok(v) => v,
        Err(why) => return Verdict::NoData { why },
    };
    let mut fail = c.max.is_some_and(|m| n > m);
    let mut o = None;
    if let Some(r) = c.max_ratio {
        if per_container && old.container_ids.is_empty() {
            return Verdict::NoData {
                why: format!("no container of {} known", old.image),
            };
        }
        let ov = match value(source, &render(&c.query, workload, old, window_s), now) {
            Ok(v) => v,
            Err(why) => return Verdict::NoData { why },
        };
        o = Some(ov);
        // old at 0: any new occurrence is infinitely worse
        if (ov > 0.0 && n / ov > r) || (ov <= 0.0 && n > 0.0) {
            fail = true;
        }
    }
    if fail {
        Verdict::Fail { new: n, old: o }
    } else {
        Verdict::Pass { new: n, old: o }
    }
}

/// A line per check for the audit log: `name: new 3 > max 0 (old 0)`.
pub fn describe(results: &[(Check, Verdict)]) -> String {
    let mut out = String::new();
    for (c, v) in results {
        if !out.is_empty() {
            out.push_str("; ");
        }
        let limit = match (c.max, c.max_ratio) {
            (Some(m), Some(r)) => format!("max {m}, max_ratio {r}"),
            (Some(m), None) => format!("max {m}"),
            (None, Some(r)) => format!("max_ratio {r}"),
            (None, None) => String::new(),
        };
        let _ = match v {
            Verdict::Pass { new, old } => write!(
                out,
                "{}: passed, new {new}{} ({limit})",
                c.name,
                old.map(|o| format!(", old {o}")).unwrap_or_default()
            ),
            Verdict::Fail { new, old } => write!(
                out,
                "{}: FAILED, new {new}{} ({limit})",
                c.name,
                old.map(|o| format!(", old {o}")).unwrap_or_default()
            ),
            Verdict::NoData { why } => write!(out, "{}: no data ({why})", c.name),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::source::QueryResult;

    struct Answers(Vec<(&'static str, Option<f64>)>);
    impl MetricSource for Answers {
        fn query(&self, expr: &str, _at: i64) -> QueryResult {
            for (needle, v) in &self.0 {
                if expr.contains(needle) {
                    return Ok(v.map(|v| vec![(Labels::default(), v)]).unwrap_or_default());
                }
            }
            Ok(Vec::new())
        }
    }

    fn version(image: &str, id: &str) -> Version {
        Version {
            image: image.into(),
            container_ids: vec![id.into()],
            names: vec![format!("n-{id}")],
        }
    }

    fn check(max: Option<f64>, ratio: Option<f64>) -> Check {
        Check {
            name: "c".into(),
            query: builtin("probe_failures").unwrap().into(),
            max,
            max_ratio: ratio,
        }
    }

    #[test]
    fn placeholders_are_filled_and_quoted() {
        let w = Labels::new([("service", "we\"b")]);
        let q = render(
            r#"x{service="$service",image="$image",id=~"$ids"}[$window]"#,
            &w,
            &Version {
                image: "r/web:2".into(),
                container_ids: vec!["a1".into(), "b.2".into()],
                names: vec![],
            },
            60,
        );
        assert_eq!(
            q,
            r#"x{service="we\"b",image="r/web:2",id=~"a1|b\\.2"}[60s]"#
        );
        promql_parser::parser::parse(&q).unwrap();
        for m in [
            "restarts",
            "oom_kills",
            "probe_failures",
            "error_logs_per_second",
        ] {
            let q = render(builtin(m).unwrap(), &w, &version("i", "a"), 30);
            promql_parser::parser::parse(&q).unwrap_or_else(|e| panic!("{m}: {q}: {e}"));
        }
    }

    #[test]
    fn thresholds_ratios_and_missing_data() {
        let w = Labels::new([("service", "web")]);
        let (new, old) = (version("web:2", "new1"), version("web:1", "old1"));
        let src = Answers(vec![("new1", Some(4.0)), ("old1", Some(1.0))]);
        let v = |c: Check, s: &Answers| evaluate(&c, s, &w, &new, &old, 60, 0);
        assert_eq!(
            v(check(Some(3.0), None), &src),
            Verdict::Fail {
                new: 4.0,
                old: None
            }
        );
        assert_eq!(
            v(check(Some(5.0), None), &src),
            Verdict::Pass {
                new: 4.0,
                old: None
            }
        );
        assert_eq!(
            v(check(None, Some(2.0)), &src),
            Verdict::Fail {
                new: 4.0,
                old: Some(1.0)
            }
        );
        assert!(matches!(
            v(check(None, Some(5.0)), &src),
            Verdict::Pass { .. }
        ));
        // the old version at zero: any occurrence is worse
        let zero = Answers(vec![("new1", Some(1.0)), ("old1", Some(0.0))]);
        assert!(matches!(
            v(check(None, Some(100.0)), &zero),
            Verdict::Fail { .. }
        ));
        // no data is never a pass
        let none = Answers(vec![("old1", Some(0.0))]);
        assert!(matches!(
            v(check(Some(1.0), None), &none),
            Verdict::NoData { .. }
        ));
        let no_old = Answers(vec![("new1", Some(0.0))]);
        assert!(matches!(
            v(check(None, Some(1.0)), &no_old),
            Verdict::NoData { .. }
        ));
        let unknown = Version {
            image: "web:3".into(),
            ..Default::default()
        };
        assert!(matches!(
            evaluate(&check(Some(1.0), None), &src, &w, &unknown, &old, 60, 0),
            Verdict::NoData { .. }
        ));
        let d = describe(&[(check(Some(3.0), None), v(check(Some(3.0), None), &src))]);
        assert_eq!(d, "c: FAILED, new 4 (max 3)");
    }
}
