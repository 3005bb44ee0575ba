//! Prometheus's exposition formats read as Prometheus 2.42 reads them
//! (model/textparse): the text format 0.0.4 and OpenMetrics 1.0.
//!
//! A pure function over bytes: [`Parser::new`] takes a response body and its
//! format ([`Format::from_content_type`] picks it as Prometheus does), and
//! [`Parser::next`] yields one [`Entry`] at a time — a sample, `# HELP`,
//! `# TYPE`, `# UNIT` or a comment — until the end or the first error. A
//! sample comes with its series text exactly as exposed (the key a scraper
//! caches label sets by, so a known series is never re-parsed); its label set
//! is built on demand with [`Parser::labels`].
//!
//! What each format accepts (and refuses) follows Prometheus's lexers; the
//! differences between the two are Prometheus's: the text format skips spaces
//! and tabs between tokens, allows a trailing comma (and even a missing one)
//! between labels, blank lines, free comments and label values spanning
//! lines, and takes integer millisecond timestamps; OpenMetrics allows single
//! spaces only, needs `# EOF` at the very end, takes float second timestamps
//! and exemplars (read and discarded). Values are Go floats (`NaN`, `+Inf`,
//! `-Inf`, `1e3`, no `_`, no hex). Not here: what a scraper does with the
//! samples (relabeling, limits, staleness).

mod openmetrics;
mod text;

use std::borrow::Cow;

use crate::labels::Labels;

/// Which grammar a body is read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4` — also the fallback for any other content type.
    Text,
    /// `application/openmetrics-text`.
    OpenMetrics,
}

impl Format {
    /// As Prometheus's `textparse.New`: OpenMetrics when the media type is
    /// `application/openmetrics-text`, the text format otherwise (also when
    /// the header is missing or malformed).
    pub fn from_content_type(content_type: &str) -> Format {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// The `Accept` header Prometheus scrapes with: OpenMetrics first.
pub const ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A metric family's type, as a `# TYPE` line declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Unknown,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Unknown => "unknown",
        }
    }
}

/// One item of a body.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    Help {
        name: &'a str,
        text: Cow<'a, str>,
    },
    Type {
        name: &'a str,
        kind: MetricType,
    },
    Unit {
        name: &'a str,
        unit: &'a str,
    },
    Comment,
    Sample {
        /// The series exactly as exposed (name and label block, without the value).
        series: &'a [u8],
        value: f64,
        /// Milliseconds since the epoch, when the line carries a timestamp.
        timestamp_ms: Option<i64>,
    },
}

/// Why a body was refused: the line (from 1) and what was wrong, in
/// Prometheus's words where it has them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Go's canonical NaN (`value.NormalNaN`), which Prometheus stores for a `NaN` value.
pub const NORMAL_NAN: u64 = 0x7ff8_0000_0000_0001;
/// Prometheus's staleness marker.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// Reads one body; see the module documentation.
pub struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    line: usize,
    format: Format,
    done: bool,
    /// The current sample: where its name ends, and its label pairs as
    /// (name, raw value) byte ranges.
    name: (usize, usize),
    pairs: Vec<(usize, usize, usize, usize)>,
}

impl<'a> Parser<'a> {
    pub fn new(body: &'a [u8], format: Format) -> Self {
        Parser {
            b: body,
            i: 0,
            line: 1,
            format,
            done: false,
            name: (0, 0),
            pairs: Vec::with_capacity(16),
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The next entry; `Ok(None)` at the end (for OpenMetrics: after `# EOF`).
    /// After an error the parser stays at its end.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Entry<'a>>, ParseError> {
        if self.done {
            return Ok(None);
        }
        let r = match self.format {
            Format::Text => self.next_text(),
            Format::OpenMetrics => self.next_openmetrics(),
        };
        match r {
            Ok(None) | Err(_) => self.done = true,
            Ok(Some(_)) => {}
        }
        r
    }

    /// The label set of the sample [`next`](Self::next) last returned, with
    /// `__name__`; an error when a label name repeats (Prometheus refuses such
    /// a series).
    pub fn labels(&self) -> Result<Labels, ParseError> {
        let mut v: Vec<(String, String)> = Vec::with_capacity(self.pairs.len() + 1);
        let name = &self.b[self.name.0..self.name.1];
        v.push(("__name__".to_string(), lossless(name)));
        for &(ns, ne, vs, ve) in &self.pairs {
            v.push((lossless(&self.b[ns..ne]), unescape_value(&self.b[vs..ve])));
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = v.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ParseError {
                line: self.line.saturating_sub(1).max(1),
                message: format!("label name {:?} is not unique", w[0].0),
            });
        }
        Ok(Labels::from_sorted_unchecked(v))
    }

    /// The metric name of the current sample, as exposed.
    pub fn metric_name(&self) -> &'a [u8] {
        &self.b[self.name.0..self.name.1]
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
}

/// Everything in a body, for tests and one-shot callers: samples with their
/// label sets, plus the metadata lines.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    pub samples: Vec<(Labels, f64, Option<i64>)>,
    pub types: Vec<(String, MetricType)>,
    pub helps: Vec<(String, String)>,
    pub units: Vec<(String, String)>,
}

/// Parses a whole body.
pub fn parse(body: &[u8], format: Format) -> Result<Parsed, ParseError> {
    let mut p = Parser::new(body, format);
    let mut out = Parsed::default();
    while let Some(e) = p.next()? {
        match e {
            Entry::Sample {
                value,
                timestamp_ms,
                ..
            } => out.samples.push((p.labels()?, value, timestamp_ms)),
            Entry::Help { name, text } => out.helps.push((name.to_string(), text.into_owned())),
            Entry::Type { name, kind } => out.types.push((name.to_string(), kind)),
            Entry::Unit { name, unit } => out.units.push((name.to_string(), unit.to_string())),
            Entry::Comment => {}
        }
    }
    Ok(out)
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}
fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}
fn is_label_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}
fn is_label_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Names are ASCII by construction (the lexer checked them).
fn lossless(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Prometheus's `lvalReplacer`: `\"`, `\\`, `\n`; any other escape stays as
/// written. The bytes were checked to be UTF-8.
fn unescape_value(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    if !raw.contains(&b'\\') {
        return s.into_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.peek() {
                Some('"') => {
                    out.push('"');
                    it.next();
                }
                Some('\\') => {
                    out.push('\\');
                    it.next();
                }
                Some('n') => {
                    out.push('\n');
                    it.next();
                }
                _ => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `# HELP` text of the text format: `\\` and `\n` only (`helpReplacer`).
fn unescape_help(s: &str) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.peek() {
                Some('\\') => {
                    out.push('\\');
                    it.next();
                }
                Some('n') => {
                    out.push('\n');
                    it.next();
                }
                _ => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Go's `strconv.ParseFloat(s, 64)` as Prometheus calls it: no `_`, no hex
/// (`p`), `inf`/`infinity`/`nan` in any case (a sign only before `inf`),
/// out-of-range values refused. `NaN` is Go's canonical NaN.
pub fn parse_go_float(s: &[u8]) -> Result<f64, String> {
    let text = std::str::from_utf8(s).map_err(|_| "invalid UTF-8 in float".to_string())?;
    if s.iter().any(|c| matches!(c, b'p' | b'P' | b'_')) {
        return Err("unsupported character in float".into());
    }
    let invalid = || format!("strconv.ParseFloat: parsing {text:?}: invalid syntax");
    let (unsigned, neg) = match s.first() {
        Some(b'+') => (&s[1..], false),
        Some(b'-') => (&s[1..], true),
        _ => (s, false),
    };
    let lower = unsigned.to_ascii_lowercase();
    if lower == b"inf" || lower == b"infinity" {
        return Ok(if neg {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if lower == b"nan" {
        if unsigned.len() != s.len() {
            return Err(invalid());
        }
        return Ok(f64::from_bits(NORMAL_NAN));
    }
    // What is left must be a decimal number: digits, one dot, an exponent.
    let mut digits = 0;
    let mut seen_dot = false;
    let mut k = 0;
    while k < unsigned.len() {
        match unsigned[k] {
            b'0'..=b'9' => digits += 1,
            b'.' if !seen_dot => seen_dot = true,
            b'e' | b'E' if digits > 0 => break,
            _ => return Err(invalid()),
        }
        k += 1;
    }
    if digits == 0 {
        return Err(invalid());
    }
    if k < unsigned.len() {
        let mut e = &unsigned[k + 1..];
        if let Some(rest) = e.strip_prefix(b"+").or_else(|| e.strip_prefix(b"-")) {
            e = rest;
        }
        if e.is_empty() || !e.iter().all(u8::is_ascii_digit) {
            return Err(invalid());
        }
    }
    let v: f64 = text.parse().map_err(|_| invalid())?;
    if v.is_infinite() {
        return Err(format!(
            "strconv.ParseFloat: parsing {text:?}: value out of range"
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests;
