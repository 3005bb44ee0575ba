//! The LogQL subset Grafana's Loki data source sends: stream selectors
//! (`=`, `!=`, `=~`, `!~`, regexes fully anchored), line filters (`|=`, `!=`,
//! `|~`, `!~`, chained), and metric queries — `count_over_time`, `rate`,
//! `bytes_over_time`, `bytes_rate` over a `[range]`, inside `sum`, `avg`,
//! `min`, `max`, `count`, `topk`, `bottomk` with `by`/`without`. Anything
//! else (parsers such as `| json`, label filters, binary operators) is a
//! parse error naming the position, never a wrong answer.
//!
//! Why about 850 lines in one file: lexer, parser, the AST and its evaluation
//! over the log store are one small language, kept together as `promql/` is
//! not (PromQL is far larger).

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;
use vigil_common::Labels;

use super::LogStore;
use crate::store::Matcher;

/// A parse error with the byte position in the query.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("parse error at position {pos}: {msg}")]
pub struct ParseError {
    pub pos: usize,
    pub msg: String,
}

/// A line filter.
#[derive(Debug, Clone)]
pub enum LineFilter {
    Contains(String),
    NotContains(String),
    Matches(Regex),
    NotMatches(Regex),
}

impl LineFilter {
    pub fn keep(&self, line: &str) -> bool {
        match self {
            LineFilter::Contains(s) => {
                memchr::memmem::find(line.as_bytes(), s.as_bytes()).is_some()
            }
            LineFilter::NotContains(s) => {
                memchr::memmem::find(line.as_bytes(), s.as_bytes()).is_none()
            }
            LineFilter::Matches(r) => r.is_match(line),
            LineFilter::NotMatches(r) => !r.is_match(line),
        }
    }
}

/// `{selector} |= "…" …`
#[derive(Debug, Clone)]
pub struct LogSelector {
    pub matchers: Vec<Matcher>,
    pub filters: Vec<LineFilter>,
}

impl LogSelector {
    pub fn keep(&self, line: &str) -> bool {
        self.filters.iter().all(|f| f.keep(line))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeFn {
    CountOverTime,
    Rate,
    BytesOverTime,
    BytesRate,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Topk,
    Bottomk,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Grouping {
    By(Vec<String>),
    Without(Vec<String>),
}

#[derive(Debug, Clone)]
pub enum MetricExpr {
    Range {
        func: RangeFn,
        selector: LogSelector,
        range_ns: i64,
    },
    Agg {
        op: AggOp,
        param: Option<f64>,
        grouping: Option<Grouping>,
        inner: Box<MetricExpr>,
    },
}

#[derive(Debug, Clone)]
pub enum Query {
    Log(LogSelector),
    Metric(MetricExpr),
}

impl Query {
    pub fn is_log(&self) -> bool {
        matches!(self, Query::Log(_))
    }
}

/// The deepest nesting of aggregations and parentheses a metric query may
/// have. The parser recurses once per level; bounding it keeps a hostile
/// query (thousands of nested `sum(`) from overflowing the stack. Real
/// LogQL nests a handful of levels.
pub const MAX_DEPTH: usize = 64;

struct P<'a> {
    s: &'a str,
    pos: usize,
    depth: usize,
}

impl<'a> P<'a> {
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            pos: self.pos,
            msg: msg.into(),
        })
    }
    fn ws(&mut self) {
        while let Some(c) = self.s[self.pos..].chars().next() {
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
    }
    fn peek(&mut self) -> Option<char> {
        self.ws();
        self.s[self.pos..].chars().next()
    }
    fn eat(&mut self, t: &str) -> bool {
        self.ws();
        if self.s[self.pos..].starts_with(t) {
            self.pos += t.len();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, t: &str) -> Result<(), ParseError> {
        if self.eat(t) {
            Ok(())
        } else {
            self.err(format!("expected {t:?}"))
        }
    }
    fn ident(&mut self) -> Result<String, ParseError> {
        self.ws();
        let start = self.pos;
        for (i, c) in self.s[start..].char_indices() {
            let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
            if !ok {
                break;
            }
            self.pos = start + i + c.len_utf8();
        }
        if self.pos == start {
            return self.err("expected an identifier");
        }
        Ok(self.s[start..self.pos].to_string())
    }
    fn string(&mut self) -> Result<String, ParseError> {
        self.ws();
        let start = self.pos;
        let mut chars = self.s[start..].char_indices();
        let quote = match chars.next() {
            Some((_, q @ ('"' | '`'))) => q,
            _ => return self.err("expected a string"),
        };
        let mut out = String::new();
        while let Some((i, c)) = chars.next() {
            if c == quote {
                self.pos = start + i + 1;
                return Ok(out);
            }
            if c == '\\' && quote == '"' {
                match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, o)) => out.push(o),
                    None => break,
                }
            } else {
                out.push(c);
            }
        }
        self.pos = start;
        self.err("unterminated string")
    }
    fn number(&mut self) -> Result<f64, ParseError> {
        self.ws();
        let start = self.pos;
        let end = self.s[start..]
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .map(|e| start + e)
            .unwrap_or(self.s.len());
        match self.s[start..end].parse() {
            Ok(v) => {
                self.pos = end;
                Ok(v)
            }
            Err(_) => self.err("expected a number"),
        }
    }
    fn duration(&mut self) -> Result<i64, ParseError> {
        self.ws();
        let start = self.pos;
        let end = self.s[start..].find(']').map(|e| start + e);
        let Some(end) = end else {
            return self.err("expected a duration and ']'");
        };
        let text = self.s[start..end].trim();
        match parse_duration_ns(text) {
            Some(d) if d > 0 => {
                self.pos = end;
                Ok(d)
            }
            _ => self.err(format!("bad duration {text:?}")),
        }
    }

    fn selector(&mut self) -> Result<LogSelector, ParseError> {
        self.expect("{")?;
        let mut matchers = Vec::new();
        if !self.eat("}") {
            loop {
                let at = self.pos;
                let name = self.ident()?;
                let op = if self.eat("=~") {
                    "=~"
                } else if self.eat("!~") {
                    "!~"
                } else if self.eat("!=") {
                    "!="
                } else if self.eat("=") {
                    "="
                } else {
                    return self.err("expected =, !=, =~ or !~");
                };
                let value = self.string()?;
                let m = match op {
                    "=" => Ok(Matcher::equal(name, value)),
                    "!=" => Ok(Matcher {
                        name,
                        op: crate::store::MatchOp::NotEqual(value),
                    }),
                    "=~" => Matcher::regex(name, &value, false),
                    _ => Matcher::regex(name, &value, true),
                };
                matchers.push(m.map_err(|e| ParseError {
                    pos: at,
                    msg: format!("bad regex: {e}"),
                })?);
                if self.eat(",") {
                    continue;
                }
                self.expect("}")?;
                break;
            }
        }
        if !matchers.iter().any(|m| !m.matches("")) {
            return Err(ParseError {
                pos: 0,
                msg: "queries require at least one matcher that does not match the empty string"
                    .into(),
            });
        }
        let mut filters = Vec::new();
        loop {
            let at = self.pos;
            let f = if self.eat("|=") {
                LineFilter::Contains(self.string()?)
            } else if self.eat("!=") {
                LineFilter::NotContains(self.string()?)
            } else if self.eat("|~") {
                let r = self.string()?;
                LineFilter::Matches(line_regex(&r).map_err(|m| ParseError { pos: at, msg: m })?)
            } else if self.eat("!~") {
                let r = self.string()?;
                LineFilter::NotMatches(line_regex(&r).map_err(|m| ParseError { pos: at, msg: m })?)
            } else if self.peek() == Some('|') {
                return self.err(
                    "only line filters (|=, !=, |~, !~) are supported after a stream selector",
                );
            } else {
                break;
            };
            filters.push(f);
        }
        Ok(LogSelector { matchers, filters })
    }

    fn grouping(&mut self) -> Result<Option<Grouping>, ParseError> {
        let save = self.pos;
        let kind = match self.ident() {
            Ok(k) if k == "by" || k == "without" => k,
            _ => {
                self.pos = save;
                return Ok(None);
            }
        };
        self.expect("(")?;
        let mut labels = Vec::new();
        if !self.eat(")") {
            loop {
                labels.push(self.ident()?);
                if self.eat(",") {
                    continue;
                }
                self.expect(")")?;
                break;
            }
        }
        Ok(Some(if kind == "by" {
            Grouping::By(labels)
        } else {
            Grouping::Without(labels)
        }))
    }

    fn metric(&mut self) -> Result<MetricExpr, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err(format!(
                "query is too deeply nested (more than {MAX_DEPTH} levels of parentheses or aggregations)"
            ));
        }
        let e = self.metric_inner();
        self.depth -= 1;
        e
    }

    fn metric_inner(&mut self) -> Result<MetricExpr, ParseError> {
        if self.eat("(") {
            let e = self.metric()?;
            self.expect(")")?;
            return Ok(e);
        }
        let at = self.pos;
        let name = self.ident()?;
        let range_fn = match name.as_str() {
            "count_over_time" => Some(RangeFn::CountOverTime),
            "rate" => Some(RangeFn::Rate),
            "bytes_over_time" => Some(RangeFn::BytesOverTime),
            "bytes_rate" => Some(RangeFn::BytesRate),
            _ => None,
        };
        if let Some(func) = range_fn {
            self.expect("(")?;
            let paren = self.eat("(");
            let selector = self.selector()?;
            if paren {
                self.expect(")")?;
            }
            self.expect("[")?;
            let range_ns = self.duration()?;
            self.expect("]")?;
            self.expect(")")?;
            return Ok(MetricExpr::Range {
                func,
                selector,
                range_ns,
            });
        }
        let op = match name.as_str() {
            "sum" => AggOp::Sum,
            "avg" => AggOp::Avg,
            "min" => AggOp::Min,
            "max" => AggOp::Max,
            "count" => AggOp::Count,
            "topk" => AggOp::Topk,
            "bottomk" => AggOp::Bottomk,
            other => {
                self.pos = at;
                return self.err(format!(
                    "unsupported function or aggregation {other:?} (supported: count_over_time, rate, bytes_over_time, bytes_rate, sum, avg, min, max, count, topk, bottomk)"
                ));
            }
        };
        let mut grouping = self.grouping()?;
        self.expect("(")?;
        let param = if matches!(op, AggOp::Topk | AggOp::Bottomk) {
            let k = self.number()?;
            if k < 1.0 || k.fract() != 0.0 {
                return self.err("topk/bottomk need a positive integer");
            }
            self.expect(",")?;
            Some(k)
        } else {
            None
        };
        let inner = self.metric()?;
        self.expect(")")?;
        if grouping.is_none() {
            grouping = self.grouping()?;
        }
        Ok(MetricExpr::Agg {
            op,
            param,
            grouping,
            inner: Box::new(inner),
        })
    }
}

fn line_regex(r: &str) -> Result<Regex, String> {
    // line filters match anywhere in the line (RE2 semantics, unanchored)
    Regex::new(r).map_err(|e| format!("bad regex: {e}"))
}

/// `1h30m`, `5m`, `10s`, `250ms` (`vigil_common::Duration`, Prometheus'
/// notation) in ns.
pub fn parse_duration_ns(s: &str) -> Option<i64> {
    let d = s.parse::<vigil_common::Duration>().ok()?;
    d.as_millis_i64().checked_mul(1_000_000)
}

/// Parses a query.
pub fn parse(q: &str) -> Result<Query, ParseError> {
    let mut p = P {
        s: q,
        pos: 0,
        depth: 0,
    };
    let out = if p.peek() == Some('{') {
        Query::Log(p.selector()?)
    } else {
        Query::Metric(p.metric()?)
    };
    p.ws();
    if p.pos != q.len() {
        return p.err("unexpected text after the query");
    }
    Ok(out)
}

/// Why a query could not run.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("{0}")]
    Bad(String),
    #[error("reading the log store: {0}")]
    Io(#[from] std::io::Error),
    #[error("the query would return more than {0} points; use a larger step")]
    TooManyPoints(usize),
    #[error("query timed out")]
    Timeout,
    #[error("query was canceled")]
    Canceled,
}

/// When a query must stop: its deadline, and a flag the caller sets when
/// nobody waits for the answer any more (the client went away).
#[derive(Clone, Debug)]
pub struct Control {
    pub deadline: std::time::Instant,
    pub cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Control {
    /// No deadline to speak of, no cancellation (tests, benchmarks).
    pub fn unbounded() -> Self {
        Control {
            deadline: std::time::Instant::now() + std::time::Duration::from_secs(365 * 86_400),
            cancel: None,
        }
    }

    fn check(&self) -> Result<(), QueryError> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        {
            return Err(QueryError::Canceled);
        }
        if std::time::Instant::now() > self.deadline {
            return Err(QueryError::Timeout);
        }
        Ok(())
    }
}

/// Lines between two looks at the [`Control`] while scanning.
const CHECK_EVERY: u64 = 4096;

/// A stream and its entries, in the requested direction.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamResult {
    pub labels: Arc<Labels>,
    pub entries: Vec<(i64, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Direction {
    Forward,
    Backward,
}

/// Statistics of one query (Loki's `stats.summary`).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub lines_processed: u64,
    pub bytes_processed: u64,
}

/// Log query: at most `limit` entries in `[start, end)`, the newest
/// (backward) or oldest (forward) ones, grouped by stream. Memory is bounded
/// by `limit` entries whatever the range holds: a heap keeps the best
/// `limit` seen so far.
pub fn select_logs(
    store: &LogStore,
    sel: &LogSelector,
    (start_ns, end_ns): (i64, i64),
    limit: usize,
    direction: Direction,
    stats: &mut Stats,
    ctl: &Control,
) -> Result<Vec<StreamResult>, QueryError> {
    use std::collections::BinaryHeap;
    use std::ops::ControlFlow;
    // ordered so that the heap's top is the entry to evict first
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct Kept {
        key: (i64, usize, u64),
        line: String,
    }
    let rank = |t: i64| match direction {
        // forward keeps the oldest: evict the newest first
        Direction::Forward => t,
        // backward keeps the newest: evict the oldest first
        Direction::Backward => t.saturating_neg(),
    };
    let mut kept: BinaryHeap<Kept> = BinaryHeap::new();
    let streams = store.matching_streams(&sel.matchers);
    let mut seq = 0u64;
    let mut stopped = Ok(());
    for (i, (h, _)) in streams.iter().enumerate() {
        ctl.check()?;
        store.scan(*h, start_ns, end_ns, &mut |t, line| {
            stats.lines_processed += 1;
            stats.bytes_processed += line.len() as u64;
            if stats.lines_processed.is_multiple_of(CHECK_EVERY)
                && let Err(e) = ctl.check()
            {
                stopped = Err(e);
                return ControlFlow::Break(());
            }
            if limit == 0 || !sel.keep(line) {
                return ControlFlow::Continue(());
            }
            seq += 1;
            let key = (rank(t), i, seq);
            if kept.len() < limit {
                kept.push(Kept {
                    key,
                    line: line.to_string(),
                });
            } else if kept.peek().is_some_and(|top| key < top.key) {
                kept.pop();
                kept.push(Kept {
                    key,
                    line: line.to_string(),
                });
            }
            ControlFlow::Continue(())
        })?;
        stopped?;
        stopped = Ok(());
    }
    let mut all: Vec<(i64, usize, String)> = kept
        .into_sorted_vec()
        .into_iter()
        .map(|k| {
            let t = match direction {
                Direction::Forward => k.key.0,
                Direction::Backward => k.key.0.saturating_neg(),
            };
            (t, k.key.1, k.line)
        })
        .collect();
    match direction {
        Direction::Forward => all.sort_by_key(|e| (e.0, e.1)),
        Direction::Backward => all.sort_by_key(|e| (std::cmp::Reverse(e.0), e.1)),
    }
    let mut by_stream: BTreeMap<usize, Vec<(i64, String)>> = BTreeMap::new();
    for (t, i, l) in all {
        by_stream.entry(i).or_default().push((t, l));
    }
    Ok(by_stream
        .into_iter()
        .map(|(i, entries)| StreamResult {
            labels: streams[i].1.clone(),
            entries,
        })
        .collect())
}

/// A metric series: labels and (timestamp ns, value) points.
pub type Series = (Labels, Vec<(i64, f64)>);

/// Evaluates a metric query at `start, start+step, …, end`.
pub fn eval_metric(
    store: &LogStore,
    e: &MetricExpr,
    start_ns: i64,
    end_ns: i64,
    step_ns: i64,
    stats: &mut Stats,
    ctl: &Control,
) -> Result<Vec<Series>, QueryError> {
    if step_ns <= 0 {
        return Err(QueryError::Bad(
            "zero or negative query resolution step widths are not accepted".into(),
        ));
    }
    if end_ns < start_ns {
        return Err(QueryError::Bad(
            "end timestamp must not be before start time".into(),
        ));
    }
    let points = ((end_ns - start_ns) / step_ns + 1) as usize;
    if points > 11_000 {
        return Err(QueryError::TooManyPoints(11_000));
    }
    let steps: Vec<i64> = (0..points as i64).map(|i| start_ns + i * step_ns).collect();
    eval(store, e, &steps, stats, ctl)
}

fn eval(
    store: &LogStore,
    e: &MetricExpr,
    steps: &[i64],
    stats: &mut Stats,
    ctl: &Control,
) -> Result<Vec<Series>, QueryError> {
    match e {
        MetricExpr::Range {
            func,
            selector,
            range_ns,
        } => {
            let (Some(first), Some(last)) = (steps.first(), steps.last()) else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for (h, labels) in store.matching_streams(&selector.matchers) {
                // (timestamp, bytes) of the kept lines, sorted
                let mut pts: Vec<(i64, u64)> = Vec::new();
                let mut stopped = Ok(());
                ctl.check()?;
                store.scan(h, first - range_ns + 1, last + 1, &mut |t, line| {
                    stats.lines_processed += 1;
                    stats.bytes_processed += line.len() as u64;
                    if stats.lines_processed.is_multiple_of(CHECK_EVERY)
                        && let Err(e) = ctl.check()
                    {
                        stopped = Err(e);
                        return std::ops::ControlFlow::Break(());
                    }
                    if selector.keep(line) {
                        pts.push((t, line.len() as u64));
                    }
                    std::ops::ControlFlow::Continue(())
                })?;
                stopped?;
                if pts.is_empty() {
                    continue;
                }
                pts.sort_unstable();
                let mut prefix = Vec::with_capacity(pts.len() + 1);
                prefix.push(0u64);
                for p in &pts {
                    prefix.push(prefix.last().copied().unwrap_or(0) + p.1);
                }
                let secs = *range_ns as f64 / 1e9;
                let mut values = Vec::new();
                for &t in steps {
                    // the window (t - range, t]
                    let lo = pts.partition_point(|p| p.0 <= t - range_ns);
                    let hi = pts.partition_point(|p| p.0 <= t);
                    if hi <= lo {
                        continue;
                    }
                    let n = (hi - lo) as f64;
                    let bytes = (prefix[hi] - prefix[lo]) as f64;
                    let v = match func {
                        RangeFn::CountOverTime => n,
                        RangeFn::Rate => n / secs,
                        RangeFn::BytesOverTime => bytes,
                        RangeFn::BytesRate => bytes / secs,
                    };
                    values.push((t, v));
                }
                if !values.is_empty() {
                    out.push(((*labels).clone(), values));
                }
            }
            Ok(out)
        }
        MetricExpr::Agg {
            op,
            param,
            grouping,
            inner,
        } => {
            let input = eval(store, inner, steps, stats, ctl)?;
            Ok(aggregate(*op, *param, grouping.as_ref(), input, steps))
        }
    }
}

fn group_labels(l: &Labels, g: Option<&Grouping>) -> Labels {
    match g {
        None => Labels::default(),
        Some(Grouping::By(keep)) => Labels::new(
            l.iter()
                .filter(|(k, _)| keep.iter().any(|x| x == k))
                .map(|(k, v)| (k.to_string(), v.to_string())),
        ),
        Some(Grouping::Without(drop)) => Labels::new(
            l.iter()
                .filter(|(k, _)| !drop.iter().any(|x| x == k))
                .map(|(k, v)| (k.to_string(), v.to_string())),
        ),
    }
}

fn aggregate(
    op: AggOp,
    param: Option<f64>,
    g: Option<&Grouping>,
    input: Vec<Series>,
    steps: &[i64],
) -> Vec<Series> {
    // per series, its value at each step (None: no point)
    let idx: BTreeMap<i64, usize> = steps.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut grid: Vec<(Labels, Vec<Option<f64>>)> = input
        .into_iter()
        .map(|(l, pts)| {
            let mut v = vec![None; steps.len()];
            for (t, x) in pts {
                if let Some(i) = idx.get(&t) {
                    v[*i] = Some(x);
                }
            }
            (l, v)
        })
        .collect();
    if matches!(op, AggOp::Topk | AggOp::Bottomk) {
        let k = param.unwrap_or(1.0) as usize;
        // per group and step, keep the k largest/smallest; series keep their labels
        let mut groups: BTreeMap<Labels, Vec<usize>> = BTreeMap::new();
        for (i, (l, _)) in grid.iter().enumerate() {
            groups.entry(group_labels(l, g)).or_default().push(i);
        }
        let mut keep = vec![vec![false; steps.len()]; grid.len()];
        // indexes: steps × members of a group
        #[allow(clippy::needless_range_loop)]
        for members in groups.values() {
            for s in 0..steps.len() {
                let mut vals: Vec<(f64, usize)> = members
                    .iter()
                    .filter_map(|&m| grid[m].1[s].map(|v| (v, m)))
                    .collect();
                vals.sort_by(|a, b| {
                    let o = a.0.total_cmp(&b.0);
                    if op == AggOp::Topk { o.reverse() } else { o }
                });
                for (_, m) in vals.into_iter().take(k) {
                    keep[m][s] = true;
                }
            }
        }
        return grid
            .iter_mut()
            .enumerate()
            .filter_map(|(i, (l, v))| {
                let pts: Vec<(i64, f64)> = v
                    .iter()
                    .enumerate()
                    .filter(|(s, x)| keep[i][*s] && x.is_some())
                    .filter_map(|(s, x)| x.map(|x| (steps[s], x)))
                    .collect();
                (!pts.is_empty()).then(|| (l.clone(), pts))
            })
            .collect();
    }
    let mut groups: BTreeMap<Labels, Vec<Vec<f64>>> = BTreeMap::new();
    for (l, v) in grid {
        let acc = groups
            .entry(group_labels(&l, g))
            .or_insert_with(|| vec![Vec::new(); steps.len()]);
        for (s, x) in v.into_iter().enumerate() {
            if let Some(x) = x {
                acc[s].push(x);
            }
        }
    }
    groups
        .into_iter()
        .filter_map(|(l, per_step)| {
            let pts: Vec<(i64, f64)> = per_step
                .into_iter()
                .enumerate()
                .filter(|(_, xs)| !xs.is_empty())
                .map(|(s, xs)| {
                    let n = xs.len() as f64;
                    let v = match op {
                        AggOp::Sum => xs.iter().sum(),
                        AggOp::Avg => xs.iter().sum::<f64>() / n,
                        AggOp::Min => xs.iter().cloned().fold(f64::INFINITY, f64::min),
                        AggOp::Max => xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                        AggOp::Count => n,
                        AggOp::Topk | AggOp::Bottomk => f64::NAN,
                    };
                    (steps[s], v)
                })
                .collect();
            (!pts.is_empty()).then_some((l, pts))
        })
        .collect()
}
