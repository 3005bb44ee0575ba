//! Alert label and annotation templates: Go `text/template` (the `gotmpl`
//! crate) with Prometheus' data (`$labels`, `$value`, `$externalLabels`,
//! `$externalURL`) and template functions (`humanize`, `query`, `first`, …).
//! A failing expansion reads `<error expanding template: …>`, as in Prometheus.
//!
//! Two Go behaviours `gotmpl` does not give on its own are restored here:
//! - printing a float: Go prints `1e+06` where Rust prints `1000000`, so every
//!   printing action gets a final `__goprint` command that formats floats
//!   with Go's `%v`;
//! - a missing label: Prometheus' `.Labels` is a `map[string]string`, so
//!   `$labels.absent` is `""` (not `<no value>`); the label names a template
//!   names are collected at compile time and filled with `""` when absent.
//!
//! Not here: which alert gets which labels (see [`super::alerting`]).
//!
//! Over 800 lines with its tests, which are a fifth of it: each pins
//! Prometheus' exact output for one template function.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use gotmpl::Value;
use gotmpl::parse::{BranchNode, CommandNode, Expr, ListNode, Node, Parser, PipeNode, SmolStr};
use vigil_common::Labels;

use crate::gofmt;

/// Prepended to every label and annotation template, as Prometheus does.
pub const PREAMBLE: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";

/// Runs a PromQL instant query at the evaluation time, for `query`.
pub type QueryFn = Arc<dyn Fn(&str) -> Result<Vec<(Labels, f64)>, String> + Send + Sync>;

/// A template that failed to parse or to execute.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// What a template sees.
pub struct AlertData<'a> {
    pub labels: &'a Labels,
    pub external_labels: &'a Labels,
    pub external_url: &'a str,
    pub value: f64,
}

/// The per-expansion context the template functions read: the query
/// function and external URL (functions are registered once, so they reach
/// these through a thread-local set around each execution).
struct Ctx {
    query: Option<QueryFn>,
    external_url: String,
}

thread_local! {
    static CTX: RefCell<Option<Ctx>> = const { RefCell::new(None) };
}

/// A parsed template, ready to expand many times.
pub struct Template {
    name: String,
    /// `None`: the text has no action and expands to itself.
    tmpl: Option<gotmpl::Template>,
    text: String,
    label_refs: Vec<String>,
    external_label_refs: Vec<String>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("name", &self.name)
            .field("text", &self.text)
            .finish()
    }
}

impl Template {
    /// Parses `text` (with the preamble) as template `name`
    /// (`__alert_<AlertName>` for alert rules). Errors read like Go's.
    pub fn new(name: &str, text: &str) -> Result<Self, TemplateError> {
        if !text.contains("{{") {
            return Ok(Template {
                name: name.to_string(),
                tmpl: None,
                text: text.to_string(),
                label_refs: Vec::new(),
                external_label_refs: Vec::new(),
            });
        }
        let src = format!("{PREAMBLE}{text}");
        let parse_err =
            |e: gotmpl::TemplateError| TemplateError(format!("error parsing template {name}: {e}"));
        let parser = Parser::with_name(Some(name), &src, "{{", "}}").map_err(parse_err)?;
        let (mut tree, mut defines) = parser.parse().map_err(parse_err)?;
        let funcs = functions();
        let mut w = Walker {
            funcs: &funcs,
            src: &src,
            name,
            label_refs: Vec::new(),
            external_label_refs: Vec::new(),
            undefined: None,
        };
        w.list(&mut tree);
        for d in &mut defines {
            w.list(&mut d.body);
        }
        if let Some(e) = w.undefined {
            return Err(TemplateError(format!("error parsing template {name}: {e}")));
        }
        let (mut label_refs, mut external_label_refs) = (w.label_refs, w.external_label_refs);
        label_refs.sort();
        label_refs.dedup();
        external_label_refs.sort();
        external_label_refs.dedup();
        let mut t = gotmpl::Template::new(name)
            .funcs(funcs)
            .max_range_iters(1_000_000)
            .add_parse_tree(name, tree);
        for d in defines {
            t = t.add_parse_tree(&d.name, d.body);
        }
        Ok(Template {
            name: name.to_string(),
            tmpl: Some(t),
            text: text.to_string(),
            label_refs,
            external_label_refs,
        })
    }

    /// The text as written in the rule.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Expands the template; `query` serves the `query` function.
    pub fn expand(
        &self,
        data: &AlertData<'_>,
        query: Option<QueryFn>,
    ) -> Result<String, TemplateError> {
        let Some(t) = &self.tmpl else {
            return Ok(self.text.clone());
        };
        let value = Value::from_entries([
            (
                "Labels".to_string(),
                label_map(data.labels, &self.label_refs),
            ),
            (
                "ExternalLabels".to_string(),
                label_map(data.external_labels, &self.external_label_refs),
            ),
            (
                "ExternalURL".to_string(),
                Value::String(data.external_url.into()),
            ),
            ("Value".to_string(), Value::Float(data.value)),
        ]);
        let prev = CTX.with(|c| {
            c.borrow_mut().replace(Ctx {
                query,
                external_url: data.external_url.to_string(),
            })
        });
        let mut out = String::new();
        let r = t.execute_template_fmt(&mut out, &self.name, &value);
        CTX.with(|c| *c.borrow_mut() = prev);
        match r {
            Ok(()) => Ok(out),
            Err(e) => Err(TemplateError(format!(
                "error executing template {}: {e}",
                self.name
            ))),
        }
    }

    /// [`Template::expand`], with a failure written the way Prometheus writes it.
    pub fn expand_or_error(&self, data: &AlertData<'_>, query: Option<QueryFn>) -> String {
        match self.expand(data, query) {
            Ok(s) => s,
            Err(e) => format!("<error expanding template: {e}>"),
        }
    }
}

fn label_map(l: &Labels, refs: &[String]) -> Value {
    let mut m: BTreeMap<Arc<str>, Value> = l
        .iter()
        .map(|(k, v)| (Arc::from(k), Value::String(v.into())))
        .collect();
    for r in refs {
        m.entry(Arc::from(r.as_str()))
            .or_insert_with(|| Value::String("".into()));
    }
    Value::Map(Arc::new(m))
}

/// Walks the parsed tree: appends `__goprint` to printing actions, collects
/// the label names the template reads, finds undefined functions.
struct Walker<'a> {
    funcs: &'a gotmpl::FuncMap,
    src: &'a str,
    name: &'a str,
    label_refs: Vec<String>,
    external_label_refs: Vec<String>,
    undefined: Option<String>,
}

const GO_BUILTINS: &[&str] = &[
    "and", "or", "not", "len", "index", "slice", "print", "printf", "println", "html", "js",
    "urlquery", "eq", "ne", "lt", "le", "gt", "ge", "call",
];

impl Walker<'_> {
    fn list(&mut self, l: &mut ListNode) {
        for n in &mut l.nodes {
            self.node(n);
        }
    }

    fn node(&mut self, n: &mut Node) {
        match n {
            Node::List(l) => self.list(l),
            Node::Action(a) => {
                self.pipe(&mut a.pipe);
                if a.pipe.decl.is_empty() {
                    a.pipe.commands.push(CommandNode {
                        pos: a.pipe.pos,
                        args: vec![Expr::Identifier(a.pipe.pos, SmolStr::new("__goprint"))],
                    });
                }
            }
            Node::If(b) | Node::Range(b) | Node::With(b) => self.branch(b),
            Node::Template(t) => {
                if let Some(p) = &mut t.pipe {
                    self.pipe(p);
                }
            }
            Node::Define(d) => self.list(&mut d.body),
            Node::Text(_) | Node::Break(_) | Node::Continue(_) => {}
        }
    }

    fn branch(&mut self, b: &mut BranchNode) {
        self.pipe(&mut b.pipe);
        self.list(&mut b.body);
        if let Some(e) = &mut b.else_body {
            self.list(e);
        }
    }

    fn pipe(&mut self, p: &mut PipeNode) {
        for c in &mut p.commands {
            // `index $labels "name"`
            if let [Expr::Identifier(_, f), target, Expr::String(_, key), ..] = c.args.as_slice()
                && f == "index"
            {
                match label_target(target) {
                    Some(true) => self.label_refs.push(key.to_string()),
                    Some(false) => self.external_label_refs.push(key.to_string()),
                    None => {}
                }
            }
            for a in &mut c.args {
                self.expr(a);
            }
        }
    }

    fn expr(&mut self, e: &mut Expr) {
        match e {
            Expr::Variable(_, var, fields) => {
                if let Some(f) = fields.first() {
                    match var.as_str() {
                        "$labels" => self.label_refs.push(f.to_string()),
                        "$externalLabels" => self.external_label_refs.push(f.to_string()),
                        _ => {}
                    }
                }
            }
            Expr::Field(_, fields) if fields.len() >= 2 => match fields[0].as_str() {
                "Labels" => self.label_refs.push(fields[1].to_string()),
                "ExternalLabels" => self.external_label_refs.push(fields[1].to_string()),
                _ => {}
            },
            Expr::Identifier(pos, name)
                if self.undefined.is_none()
                    && !self.funcs.contains_key(name.as_str())
                    && !GO_BUILTINS.contains(&name.as_str()) =>
            {
                let before = &self.src[..pos.offset.min(self.src.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                self.undefined = Some(format!(
                    "template: {}:{line}:{col}: function {:?} not defined",
                    self.name,
                    name.as_str()
                ));
            }
            Expr::Pipe(_, p) => self.pipe(p),
            Expr::Chain(_, inner, _) => self.expr(inner),
            _ => {}
        }
    }
}

/// `Some(true)` for `$labels`/`.Labels`, `Some(false)` for the external ones.
fn label_target(e: &Expr) -> Option<bool> {
    match e {
        Expr::Variable(_, v, f) if f.is_empty() && v == "$labels" => Some(true),
        Expr::Variable(_, v, f) if f.is_empty() && v == "$externalLabels" => Some(false),
        Expr::Field(_, f) if f.len() == 1 && f[0] == "Labels" => Some(true),
        Expr::Field(_, f) if f.len() == 1 && f[0] == "ExternalLabels" => Some(false),
        _ => None,
    }
}

fn err(msg: impl Into<String>) -> gotmpl::TemplateError {
    gotmpl::TemplateError::Exec(msg.into())
}

fn s(v: impl Into<Arc<str>>) -> Value {
    Value::String(v.into())
}

fn arg<'a>(name: &str, args: &'a [Value], n: usize) -> gotmpl::Result<&'a Value> {
    if args.len() != n {
        return Err(err(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        )));
    }
    Ok(&args[0])
}

fn string_arg(v: &Value) -> gotmpl::Result<&str> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(err(format!(
            "wrong type for value; expected string; got {}",
            other.type_name()
        ))),
    }
}

/// Prometheus' `convertToFloat`.
fn to_float(v: &Value) -> gotmpl::Result<f64> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        Value::Uint(u) => Ok(*u as f64),
        Value::String(s) => parse_go_float(s).ok_or_else(|| {
            err(format!(
                "strconv.ParseFloat: parsing {}: invalid syntax",
                gofmt::go_quote(s)
            ))
        }),
        other => Err(err(format!("can't convert {} to float", other.type_name()))),
    }
}

fn parse_go_float(s: &str) -> Option<f64> {
    let t = s.trim_start_matches(['+', '-']);
    let lower = t.to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity" | "nan") {
        let v = if lower == "nan" {
            f64::NAN
        } else {
            f64::INFINITY
        };
        return Some(if s.starts_with('-') { -v } else { v });
    }
    if t.chars()
        .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
    {
        return None;
    }
    s.parse().ok()
}

fn sample_map(v: &Value) -> gotmpl::Result<(&BTreeMap<Arc<str>, Value>, f64)> {
    let Value::Map(m) = v else {
        return Err(err(format!(
            "wrong type for value; expected *template.sample; got {}",
            v.type_name()
        )));
    };
    let labels = match m.get("Labels") {
        Some(Value::Map(l)) => l,
        _ => {
            return Err(err(
                "wrong type for value; expected *template.sample; got map",
            ));
        }
    };
    let value = match m.get("Value") {
        Some(Value::Float(f)) => *f,
        _ => 0.0,
    };
    Ok((labels, value))
}

/// Prometheus' `humanize`.
pub fn humanize(mut v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return gofmt::format_g(v, Some(4));
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", gofmt::format_g(v, Some(4)))
}

/// Prometheus' `humanize1024`.
pub fn humanize1024(mut v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return gofmt::format_g(v, Some(4));
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", gofmt::format_g(v, Some(4)))
}

/// Prometheus' `humanizeDuration` (seconds in).
pub fn humanize_duration(mut v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return gofmt::format_g(v, Some(4));
    }
    if v == 0.0 {
        return format!("{}s", gofmt::format_g(v, Some(4)));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        v = v.abs();
        let d = v as i64;
        let (secs, mins, hours, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        if days != 0 {
            return format!("{sign}{days}d {hours}h {mins}m {secs}s");
        }
        if hours != 0 {
            return format!("{sign}{hours}h {mins}m {secs}s");
        }
        if mins != 0 {
            return format!("{sign}{mins}m {secs}s");
        }
        return format!("{sign}{}s", gofmt::format_g(v, Some(4)));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", gofmt::format_g(v, Some(4)))
}

/// Go's `fmt.Sprint(time.Time)` in UTC for Unix seconds
/// (`1970-01-01 00:00:01.5 +0000 UTC`).
pub fn go_time(secs: f64) -> Result<String, String> {
    let ns = secs * 1e9;
    if !(i64::MIN as f64..=i64::MAX as f64).contains(&ns) {
        return Err(format!(
            "{} cannot be represented as a nanoseconds timestamp since it overflows int64",
            gofmt::format_g(secs, None)
        ));
    }
    let c = vigil_common::time::Civil::from_unix_ns(ns as i64);
    let mut out = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    );
    if c.nanosecond > 0 {
        let f = format!("{:09}", c.nanosecond);
        let _ = write!(out, ".{}", f.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    Ok(out)
}

/// Go's `strings.Title`: upper-cases the first letter of each word.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_sep = true;
    for c in s.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = if c.is_ascii() {
            !(c.is_ascii_alphanumeric() || c == '_')
        } else if c.is_alphanumeric() {
            false
        } else {
            c.is_whitespace()
        };
    }
    out
}

fn compile_go_regex(re: &str) -> gotmpl::Result<regex::Regex> {
    regex::Regex::new(re).map_err(|e| {
        err(format!(
            "regexp: Compile({}): error parsing regexp: {}",
            gofmt::go_quote(re),
            e.to_string().lines().last().unwrap_or("invalid")
        ))
    })
}

fn query_result(rows: Vec<(Labels, f64)>) -> Value {
    Value::List(
        rows.into_iter()
            .map(|(l, v)| {
                let lm: BTreeMap<Arc<str>, Value> =
                    l.iter().map(|(k, v)| (Arc::from(k), s(v))).collect();
                Value::from_entries([
                    ("Labels".to_string(), Value::Map(Arc::new(lm))),
                    ("Value".to_string(), Value::Float(v)),
                ])
            })
            .collect::<Vec<_>>()
            .into(),
    )
}

type F = fn(&[Value]) -> gotmpl::Result<Value>;

/// Prometheus' template functions, plus `__goprint`.
pub fn functions() -> gotmpl::FuncMap {
    let mut m = gotmpl::FuncMap::new();
    let mut add = |name: &str, f: F| {
        m.insert(name.to_string(), Arc::new(f));
    };
    add("__goprint", |a| {
        Ok(match a.last() {
            Some(Value::Float(f)) => s(gofmt::format_g(*f, None)),
            Some(v) => v.clone(),
            None => Value::Nil,
        })
    });
    add("query", |a| {
        let q = string_arg(arg("query", a, 1)?)?;
        let f = CTX.with(|c| c.borrow().as_ref().and_then(|c| c.query.clone()));
        let Some(f) = f else {
            return Err(err("query: no query engine in this context"));
        };
        f(q).map(query_result).map_err(err)
    });
    add("first", |a| match arg("first", a, 1)? {
        Value::List(l) => l
            .first()
            .cloned()
            .ok_or_else(|| err("first() called on vector with no elements")),
        other => Err(err(format!(
            "wrong type for value; expected template.queryResult; got {}",
            other.type_name()
        ))),
    });
    add("label", |a| {
        if a.len() != 2 {
            return Err(err("wrong number of args for label: want 2"));
        }
        let name = string_arg(&a[0])?;
        let (labels, _) = sample_map(&a[1])?;
        Ok(labels.get(name).cloned().unwrap_or_else(|| s("")))
    });
    add("value", |a| {
        Ok(Value::Float(sample_map(arg("value", a, 1)?)?.1))
    });
    add("strvalue", |a| {
        let (labels, _) = sample_map(arg("strvalue", a, 1)?)?;
        Ok(labels.get("__value__").cloned().unwrap_or_else(|| s("")))
    });
    add("args", |a| {
        let m: BTreeMap<Arc<str>, Value> = a
            .iter()
            .enumerate()
            .map(|(i, v)| (Arc::from(format!("arg{i}").as_str()), v.clone()))
            .collect();
        Ok(Value::Map(Arc::new(m)))
    });
    add("reReplaceAll", |a| {
        if a.len() != 3 {
            return Err(err("wrong number of args for reReplaceAll: want 3"));
        }
        let re = compile_go_regex(string_arg(&a[0])?)?;
        let repl = string_arg(&a[1])?;
        Ok(s(re.replace_all(string_arg(&a[2])?, repl).as_ref()))
    });
    add("safeHtml", |a| Ok(s(string_arg(arg("safeHtml", a, 1)?)?)));
    add("match", |a| {
        if a.len() != 2 {
            return Err(err("wrong number of args for match: want 2"));
        }
        let re = compile_go_regex(string_arg(&a[0])?)?;
        Ok(Value::Bool(re.is_match(string_arg(&a[1])?)))
    });
    add("title", |a| Ok(s(title(string_arg(arg("title", a, 1)?)?))));
    add("toUpper", |a| {
        Ok(s(string_arg(arg("toUpper", a, 1)?)?.to_uppercase()))
    });
    add("toLower", |a| {
        Ok(s(string_arg(arg("toLower", a, 1)?)?.to_lowercase()))
    });
    add("graphLink", |a| {
        let e = string_arg(arg("graphLink", a, 1)?)?;
        Ok(s(format!(
            "/graph?g0.expr={}&g0.tab=0",
            gofmt::query_escape(e)
        )))
    });
    add("tableLink", |a| {
        let e = string_arg(arg("tableLink", a, 1)?)?;
        Ok(s(format!(
            "/graph?g0.expr={}&g0.tab=1",
            gofmt::query_escape(e)
        )))
    });
    add("sortByLabel", |a| {
        if a.len() != 2 {
            return Err(err("wrong number of args for sortByLabel: want 2"));
        }
        let label = string_arg(&a[0])?;
        let Value::List(l) = &a[1] else {
            return Err(err("wrong type for value; expected template.queryResult"));
        };
        let mut v: Vec<Value> = l.to_vec();
        let key = |x: &Value| -> String {
            sample_map(x)
                .ok()
                .and_then(|(l, _)| l.get(label).and_then(|v| v.as_str().map(str::to_string)))
                .unwrap_or_default()
        };
        v.sort_by_key(key);
        Ok(Value::List(v.into()))
    });
    add("stripPort", |a| {
        let hp = string_arg(arg("stripPort", a, 1)?)?;
        Ok(s(split_host_port(hp).map_or(hp, |(h, _)| h)))
    });
    add("stripDomain", |a| {
        let hp = string_arg(arg("stripDomain", a, 1)?)?;
        let (host, port) = split_host_port(hp).unwrap_or((hp, ""));
        if host.parse::<std::net::IpAddr>().is_ok() {
            return Ok(s(hp));
        }
        let host = host.split('.').next().unwrap_or("");
        if port.is_empty() {
            Ok(s(host))
        } else if host.contains(':') {
            Ok(s(format!("[{host}]:{port}")))
        } else {
            Ok(s(format!("{host}:{port}")))
        }
    });
    add("humanize", |a| {
        Ok(s(humanize(to_float(arg("humanize", a, 1)?)?)))
    });
    add("humanize1024", |a| {
        Ok(s(humanize1024(to_float(arg("humanize1024", a, 1)?)?)))
    });
    add("humanizeDuration", |a| {
        Ok(s(humanize_duration(to_float(arg(
            "humanizeDuration",
            a,
            1,
        )?)?)))
    });
    add("humanizePercentage", |a| {
        let v = to_float(arg("humanizePercentage", a, 1)?)?;
        Ok(s(format!("{}%", gofmt::format_g(v * 100.0, Some(4)))))
    });
    add("humanizeTimestamp", |a| {
        let v = to_float(arg("humanizeTimestamp", a, 1)?)?;
        if v.is_nan() || v.is_infinite() {
            return Ok(s(gofmt::format_g(v, Some(4))));
        }
        go_time(v).map(s).map_err(err)
    });
    add("toTime", |a| {
        let v = to_float(arg("toTime", a, 1)?)?;
        if v.is_nan() || v.is_infinite() {
            return Err(err("time value is NaN or Inf"));
        }
        go_time(v).map(s).map_err(err)
    });
    add("pathPrefix", |_| {
        let u = CTX.with(|c| c.borrow().as_ref().map(|c| c.external_url.clone()));
        Ok(s(url_path(&u.unwrap_or_default())))
    });
    add("externalURL", |_| {
        let u = CTX.with(|c| c.borrow().as_ref().map(|c| c.external_url.clone()));
        Ok(s(u.unwrap_or_default()))
    });
    add("parseDuration", |a| {
        let d = string_arg(arg("parseDuration", a, 1)?)?;
        gofmt::parse_model_duration(d)
            .map(|ms| Value::Float(ms as f64 / 1000.0))
            .map_err(|e| err(e.to_string()))
    });
    m
}

/// The path of a URL (`http://h:9090/prefix` → `/prefix`).
fn url_path(u: &str) -> String {
    let rest = u.split_once("://").map_or(u, |(_, r)| r);
    match rest.find('/') {
        Some(i) => rest[i..].split(['?', '#']).next().unwrap_or("").to_string(),
        None => String::new(),
    }
}

/// Go's `net.SplitHostPort` (enough of it for `stripPort`).
fn split_host_port(hp: &str) -> Option<(&str, &str)> {
    if let Some(rest) = hp.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host, port));
    }
    let (host, port) = hp.rsplit_once(':')?;
    if host.contains(':') {
        return None; // too many colons
    }
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(text: &str, labels: &[(&str, &str)], value: f64) -> String {
        let t = match Template::new("__alert_Test", text) {
            Ok(t) => t,
            Err(e) => return format!("PARSE: {e}"),
        };
        let l = Labels::new(labels.iter().copied());
        let ext = Labels::new([("cluster", "prod")]);
        let q: QueryFn = Arc::new(|q: &str| {
            if q == "up" {
                Ok(vec![
                    (
                        Labels::new([("__name__", "up"), ("instance", "b:9100")]),
                        0.0,
                    ),
                    (
                        Labels::new([("__name__", "up"), ("instance", "a:9100")]),
                        1.0,
                    ),
                ])
            } else if q == "none" {
                Ok(vec![])
            } else {
                Err(format!("bad query {q}"))
            }
        });
        t.expand_or_error(
            &AlertData {
                labels: &l,
                external_labels: &ext,
                external_url: "http://vigil:9490/x",
                value,
            },
            Some(q),
        )
    }

    #[test]
    fn preamble_variables_and_go_printing() {
        assert_eq!(
            expand(
                "{{ $labels.pod }} is at {{ $value }}",
                &[("pod", "p1")],
                1e6
            ),
            "p1 is at 1e+06"
        );
        assert_eq!(expand("{{ $value }}", &[], 0.5), "0.5");
        assert_eq!(expand("[{{ $labels.missing }}]", &[], 1.0), "[]");
        assert_eq!(expand("[{{ index $labels \"nope\" }}]", &[], 1.0), "[]");
        assert_eq!(
            expand("{{ if eq $labels.severity \"\" }}none{{ end }}", &[], 1.0),
            "none"
        );
        assert_eq!(
            expand("{{ $externalLabels.cluster }} {{ $externalURL }}", &[], 1.0),
            "prod http://vigil:9490/x"
        );
        assert_eq!(expand("plain text", &[], 1.0), "plain text");
        assert_eq!(
            expand("{{ .Value | printf \"%.2f\" }}", &[], 2.0 / 3.0),
            "0.67"
        );
    }

    #[test]
    fn prometheus_functions() {
        assert_eq!(expand("{{ humanize 1234567.0 }}", &[], 0.0), "1.235M");
        assert_eq!(expand("{{ humanize 0.0012 }}", &[], 0.0), "1.2m");
        assert_eq!(expand("{{ humanize \"2048\" }}", &[], 0.0), "2.048k");
        assert_eq!(expand("{{ humanize1024 1048576.0 }}", &[], 0.0), "1Mi");
        assert_eq!(
            expand("{{ humanizeDuration 3725.0 }}", &[], 0.0),
            "1h 2m 5s"
        );
        assert_eq!(
            expand("{{ humanizeDuration 90061.0 }}", &[], 0.0),
            "1d 1h 1m 1s"
        );
        assert_eq!(expand("{{ humanizeDuration 0.05 }}", &[], 0.0), "50ms");
        assert_eq!(expand("{{ humanizeDuration 1.5 }}", &[], 0.0), "1.5s");
        assert_eq!(
            expand("{{ $value | humanizePercentage }}", &[], 0.4567),
            "45.67%"
        );
        assert_eq!(
            expand("{{ humanizeTimestamp 1435065584.128 }}", &[], 0.0),
            "2015-06-23 13:19:44.128 +0000 UTC"
        );
        assert_eq!(
            expand(
                "{{ toUpper \"ab\" }}{{ toLower \"CD\" }}{{ title \"hello wor-ld\" }}",
                &[],
                0.0
            ),
            "ABcdHello Wor-Ld"
        );
        assert_eq!(
            expand("{{ reReplaceAll \"(a)b\" \"x$1\" \"abab\" }}", &[], 0.0),
            "xaxa"
        );
        assert_eq!(expand("{{ match \"^a\" \"abc\" }}", &[], 0.0), "true");
        assert_eq!(
            expand(
                "{{ stripPort \"host:9100\" }} {{ stripPort \"[::1]:80\" }} {{ stripPort \"h\" }}",
                &[],
                0.0
            ),
            "host ::1 h"
        );
        assert_eq!(expand("{{ stripDomain \"a.b.c:80\" }}", &[], 0.0), "a:80");
        assert_eq!(expand("{{ parseDuration \"1m30s\" }}", &[], 0.0), "90");
        assert_eq!(expand("{{ pathPrefix }}", &[], 0.0), "/x");
        assert_eq!(
            expand("{{ graphLink \"up == 0\" }}", &[], 0.0),
            "/graph?g0.expr=up+%3D%3D+0&g0.tab=0"
        );
    }

    #[test]
    fn query_first_label_value() {
        assert_eq!(
            expand(
                "{{ with query \"up\" }}{{ . | first | label \"instance\" }}={{ . | first | value }}{{ end }}",
                &[],
                0.0
            ),
            "b:9100=0"
        );
        assert_eq!(
            expand(
                "{{ range query \"up\" | sortByLabel \"instance\" }}{{ .Labels.instance }} {{ end }}",
                &[],
                0.0
            ),
            "a:9100 b:9100 "
        );
        let e = expand("{{ query \"none\" | first | value }}", &[], 0.0);
        assert!(
            e.starts_with("<error expanding template: error executing template __alert_Test:"),
            "{e}"
        );
        assert!(
            e.contains("first() called on vector with no elements"),
            "{e}"
        );
    }

    #[test]
    fn errors() {
        let e = expand("{{ nosuchfunc 1 }}", &[], 0.0);
        assert!(
            e.starts_with("PARSE: error parsing template __alert_Test: template: __alert_Test:1:"),
            "{e}"
        );
        assert!(e.contains("function \"nosuchfunc\" not defined"), "{e}");
        let e = expand("{{ .Labels", &[], 0.0);
        assert!(e.starts_with("PARSE: error parsing template"), "{e}");
        let e = expand("{{ humanize true }}", &[], 0.0);
        assert!(e.contains("can't convert bool to float"), "{e}");
        let e = expand("{{ reReplaceAll \"(\" \"\" \"x\" }}", &[], 0.0);
        assert!(e.starts_with("<error expanding template:"), "{e}");
    }
}
