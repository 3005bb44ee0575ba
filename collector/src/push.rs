//! What the push receivers share — OTLP metrics and logs ([`crate::otlp`],
//! `http::otlp`) and Loki push (`http::loki_push`): the limits a push is
//! held to ([`PushLimits`]), the refusal vocabulary ([`Reason`]) and its
//! counters ([`PushMetrics`]), request bodies (size limit, gzip, snappy) and
//! the label checks.
//!
//! The contract: a push, or the part of it that breaks a limit, is refused
//! with a message that names the limit and the offending series or stream,
//! and every refusal is counted by protocol, signal and reason. Refusing
//! part of a push never refuses the rest.
//!
//! Not here: translation (in `otlp`), durability (`ingest::push`), HTTP or
//! gRPC framing (the handlers).

use std::collections::BTreeMap;
use std::io::Read;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use vigil_common::Labels;

use crate::limits::SeriesLimits;

/// Limits every push is held to (see `docs/push.md`): the series limits
/// every sender shares, and the push receivers' own.
#[derive(Clone, Debug, PartialEq)]
pub struct PushLimits {
    /// Largest body, as sent and once decompressed.
    pub max_body_bytes: usize,
    /// Longest log line.
    pub max_line_bytes: usize,
    /// Label count and lengths, how far in the future a timestamp may lie;
    /// applied to log stream labels too.
    pub series: SeriesLimits,
    /// Samples older than this are refused (the store would drop them).
    pub retention: std::time::Duration,
    /// Log lines older than this are refused (the log store would drop them).
    pub log_retention: std::time::Duration,
}

impl Default for PushLimits {
    fn default() -> Self {
        PushLimits {
            max_body_bytes: 32 << 20,
            max_line_bytes: 256 << 10,
            series: SeriesLimits::default(),
            retention: std::time::Duration::from_secs(24 * 3600),
            log_retention: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

/// The window of acceptable timestamps at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub oldest_ns: i64,
    pub newest_ns: i64,
}

impl Window {
    /// Timestamps allowed now for samples (`logs` false) or log lines.
    pub fn at(limits: &PushLimits, now_ns: i64, logs: bool) -> Window {
        let keep = if logs {
            limits.log_retention
        } else {
            limits.retention
        };
        Window {
            oldest_ns: now_ns.saturating_sub(nanos(keep)),
            newest_ns: now_ns.saturating_add(limits.series.max_future_ms.saturating_mul(1_000_000)),
        }
    }

    /// `Ok` or the reason a timestamp falls outside.
    pub fn check(&self, ts_ns: i64) -> Result<(), Reason> {
        if ts_ns < self.oldest_ns {
            Err(Reason::TooOld)
        } else if ts_ns > self.newest_ns {
            Err(Reason::TooNew)
        } else {
            Ok(())
        }
    }
}

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Unix time in nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(nanos)
        .unwrap_or(0)
}

/// Which receiver took a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    OtlpGrpc,
    OtlpHttp,
    Loki,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::OtlpGrpc => "otlp_grpc",
            Protocol::OtlpHttp => "otlp_http",
            Protocol::Loki => "loki",
        }
    }
}

/// What a push carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    Metrics,
    Logs,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
}

/// Why a push, or part of it, was refused: the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The body does not decode (protobuf, JSON, gzip, snappy).
    Malformed,
    /// The body is over `push_max_body_bytes`.
    TooLarge,
    /// A `Content-Type` the endpoint does not speak.
    UnsupportedMediaType,
    /// A `Content-Encoding` the endpoint does not speak.
    UnsupportedEncoding,
    /// The write-ahead log could not make the data durable (retryable).
    Unavailable,
    /// A sum or histogram with delta temporality.
    DeltaTemporality,
    /// A sum or histogram without a temporality.
    UnspecifiedTemporality,
    /// An exponential histogram (vigil stores floats only).
    ExponentialHistogram,
    /// A metric without data points, or without a data type.
    EmptyMetric,
    /// A metric or label name that normalises to nothing usable.
    InvalidName,
    /// A stream label set that does not parse or is empty.
    InvalidLabels,
    TooManyLabels,
    LabelNameTooLong,
    LabelValueTooLong,
    TooOld,
    TooNew,
    LineTooLong,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::TooLarge => "too_large",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::UnsupportedEncoding => "unsupported_encoding",
            Reason::Unavailable => "unavailable",
            Reason::DeltaTemporality => "delta_temporality",
            Reason::UnspecifiedTemporality => "unspecified_temporality",
            Reason::ExponentialHistogram => "exponential_histogram",
            Reason::EmptyMetric => "empty_metric",
            Reason::InvalidName => "invalid_name",
            Reason::InvalidLabels => "invalid_labels",
            Reason::TooManyLabels => "too_many_labels",
            Reason::LabelNameTooLong => "label_name_too_long",
            Reason::LabelValueTooLong => "label_value_too_long",
            Reason::TooOld => "too_old",
            Reason::TooNew => "too_new",
            Reason::LineTooLong => "line_too_long",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub protocol: String,
    pub signal: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: String,
}

/// The push receivers' self-metrics.
#[derive(Default)]
pub struct PushMetrics {
    refused_requests: Family<RefusedLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    samples: Family<ProtocolLabels, Counter>,
    log_records: Family<ProtocolLabels, Counter>,
}

impl PushMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "vigil_collector_push_refused_requests",
            "Push requests refused whole (4xx/5xx), by protocol, signal and reason",
            self.refused_requests.clone(),
        );
        r.register(
            "vigil_collector_push_refused",
            "Parts of accepted pushes refused, by protocol, signal and reason: OTLP data points, OTLP log records, Loki entries",
            self.refused.clone(),
        );
        r.register(
            "vigil_collector_push_samples_received",
            "Samples from pushes made durable, by protocol",
            self.samples.clone(),
        );
        r.register(
            "vigil_collector_push_log_records_received",
            "Log records from pushes made durable, by protocol",
            self.log_records.clone(),
        );
    }

    fn labels(p: Protocol, s: Signal, r: Reason) -> RefusedLabels {
        RefusedLabels {
            protocol: p.as_str().into(),
            signal: s.as_str().into(),
            reason: r.as_str().into(),
        }
    }

    /// Counts a request refused whole.
    pub fn refuse_request(&self, p: Protocol, s: Signal, r: Reason) {
        self.refused_requests
            .get_or_create(&Self::labels(p, s, r))
            .inc();
    }

    /// Counts what [`Refusals`] collected for one request.
    pub fn refuse(&self, p: Protocol, s: Signal, refusals: &Refusals) {
        for (r, n) in &refusals.counts {
            self.refused
                .get_or_create(&Self::labels(p, s, *r))
                .inc_by(*n);
        }
    }

    pub fn samples(&self, p: Protocol, n: u64) {
        self.samples
            .get_or_create(&ProtocolLabels {
                protocol: p.as_str().into(),
            })
            .inc_by(n);
    }

    pub fn log_records(&self, p: Protocol, n: u64) {
        self.log_records
            .get_or_create(&ProtocolLabels {
                protocol: p.as_str().into(),
            })
            .inc_by(n);
    }

    /// Refused so far for one label set (tests).
    pub fn refused_count(&self, p: Protocol, s: Signal, r: Reason) -> u64 {
        self.refused.get_or_create(&Self::labels(p, s, r)).get()
    }

    /// Requests refused so far for one label set (tests).
    pub fn refused_request_count(&self, p: Protocol, s: Signal, r: Reason) -> u64 {
        self.refused_requests
            .get_or_create(&Self::labels(p, s, r))
            .get()
    }
}

/// Most distinct messages one response carries; the rest are counted.
const MAX_MESSAGES: usize = 10;

/// The parts of one push that were refused: counts by reason and the first
/// few messages (for the response).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Refusals {
    pub counts: BTreeMap<Reason, u64>,
    messages: Vec<String>,
    dropped_messages: usize,
}

impl Refusals {
    /// Records `n` refused items for `reason`, with a message.
    pub fn add(&mut self, reason: Reason, n: u64, message: impl FnOnce() -> String) {
        if n == 0 {
            return;
        }
        *self.counts.entry(reason).or_default() += n;
        if self.messages.len() < MAX_MESSAGES {
            let m = message();
            if !self.messages.contains(&m) {
                self.messages.push(m);
            }
        } else {
            self.dropped_messages += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The messages joined with `; `, and how many more there were.
    pub fn message(&self) -> String {
        let mut m = self.messages.join("; ");
        if self.dropped_messages > 0 {
            m.push_str(&format!(" (and {} more)", self.dropped_messages));
        }
        m
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("body exceeds the limit of {limit} bytes (push_max_body_bytes)")]
    TooLarge { limit: usize },
    #[error("{encoding} body does not decode: {reason}")]
    Corrupt {
        encoding: &'static str,
        reason: String,
    },
    #[error("content encoding {0:?} is not supported (use gzip or none)")]
    UnsupportedEncoding(String),
}

impl BodyError {
    pub fn reason(&self) -> Reason {
        match self {
            BodyError::TooLarge { .. } => Reason::TooLarge,
            BodyError::Corrupt { .. } => Reason::Malformed,
            BodyError::UnsupportedEncoding(_) => Reason::UnsupportedEncoding,
        }
    }
}

/// Decodes a body by its `Content-Encoding` (none, `identity` or `gzip`),
/// holding the result to `limit` bytes.
pub fn decode_body(
    body: bytes::Bytes,
    encoding: Option<&str>,
    limit: usize,
) -> Result<bytes::Bytes, BodyError> {
    if body.len() > limit {
        return Err(BodyError::TooLarge { limit });
    }
    match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("identity") => Ok(body),
        Some("gzip") | Some("x-gzip") => gunzip(&body, limit).map(bytes::Bytes::from),
        Some(other) => Err(BodyError::UnsupportedEncoding(other.to_string())),
    }
}

/// Decompresses gzip, refusing output past `limit` bytes.
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    flate2::read::MultiGzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Corrupt {
            encoding: "gzip",
            reason: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(out)
}

/// Decompresses a snappy block (not framed), refusing output past `limit`.
pub fn unsnappy(body: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let corrupt = |e: snap::Error| BodyError::Corrupt {
        encoding: "snappy",
        reason: e.to_string(),
    };
    let len = snap::raw::decompress_len(body).map_err(corrupt)?;
    if len > limit {
        return Err(BodyError::TooLarge { limit });
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(corrupt)
}

/// Checks a label set against the count and length limits; the error says
/// which limit and which label.
pub fn check_labels(labels: &Labels, limits: &PushLimits) -> Result<(), (Reason, String)> {
    let limits = &limits.series;
    if labels.len() > limits.max_label_names {
        return Err((
            Reason::TooManyLabels,
            format!(
                "{} has {} labels, more than the limit of {} (max_label_names_per_series)",
                brief(labels),
                labels.len(),
                limits.max_label_names
            ),
        ));
    }
    for (k, v) in labels.iter() {
        if k.len() > limits.max_name_length {
            return Err((
                Reason::LabelNameTooLong,
                format!(
                    "{}: label name {:?}… is {} bytes, longer than the limit of {} (max_label_name_length)",
                    brief(labels),
                    head(k),
                    k.len(),
                    limits.max_name_length
                ),
            ));
        }
        if v.len() > limits.max_value_length {
            return Err((
                Reason::LabelValueTooLong,
                format!(
                    "{}: the value of label {:?} is {} bytes, longer than the limit of {} (max_label_value_length)",
                    brief(labels),
                    head(k),
                    v.len(),
                    limits.max_value_length
                ),
            ));
        }
    }
    Ok(())
}

/// A label set shortened for a message.
pub fn brief(labels: &Labels) -> String {
    let s = labels.to_string();
    if s.len() <= 160 {
        s
    } else {
        format!("{}…", head_n(&s, 160))
    }
}

fn head(s: &str) -> &str {
    head_n(s, 40)
}

fn head_n(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut i = n;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn bodies_decode_within_the_limit() {
        let raw = vec![b'a'; 10_000];
        let z = bytes::Bytes::from(gz(&raw));
        assert_eq!(
            decode_body(z.clone(), Some("gzip"), 10_000).unwrap(),
            raw.as_slice()
        );
        // a small gzip body that inflates past the limit
        assert_eq!(
            decode_body(z, Some("gzip"), 9_999),
            Err(BodyError::TooLarge { limit: 9_999 })
        );
        assert!(matches!(
            decode_body(bytes::Bytes::from_static(b"nope"), Some("gzip"), 100),
            Err(BodyError::Corrupt { .. })
        ));
        assert_eq!(
            decode_body(bytes::Bytes::from_static(b"x"), Some("br"), 100),
            Err(BodyError::UnsupportedEncoding("br".into()))
        );
        assert_eq!(
            decode_body(bytes::Bytes::from(vec![0u8; 101]), None, 100),
            Err(BodyError::TooLarge { limit: 100 })
        );
        let s = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        assert_eq!(unsnappy(&s, 10_000).unwrap(), raw);
        assert_eq!(
            unsnappy(&s, 9_999),
            Err(BodyError::TooLarge { limit: 9_999 })
        );
    }

    #[test]
    fn label_limits_name_the_limit() {
        let limits = PushLimits {
            series: SeriesLimits {
                max_label_names: 2,
                max_name_length: 5,
                max_value_length: 3,
                ..Default::default()
            },
            ..Default::default()
        };
        let l = Labels::new([("a", "1"), ("b", "2"), ("c", "3")]);
        let (r, m) = check_labels(&l, &limits).unwrap_err();
        assert_eq!(r, Reason::TooManyLabels);
        assert!(m.contains("max_label_names_per_series"), "{m}");
        let l = Labels::new([("abcdef", "1")]);
        assert_eq!(
            check_labels(&l, &limits).unwrap_err().0,
            Reason::LabelNameTooLong
        );
        let l = Labels::new([("a", "1234")]);
        assert_eq!(
            check_labels(&l, &limits).unwrap_err().0,
            Reason::LabelValueTooLong
        );
        assert!(check_labels(&Labels::new([("a", "123")]), &limits).is_ok());
    }

    #[test]
    fn window_and_refusals() {
        let limits = PushLimits {
            retention: std::time::Duration::from_secs(10),
            series: SeriesLimits {
                max_future_ms: 5_000,
                ..Default::default()
            },
            ..Default::default()
        };
        let w = Window::at(&limits, 100_000_000_000, false);
        assert_eq!(w.check(90_000_000_000), Ok(()));
        assert_eq!(w.check(89_999_999_999), Err(Reason::TooOld));
        assert_eq!(w.check(105_000_000_001), Err(Reason::TooNew));
        let mut r = Refusals::default();
        for i in 0..15 {
            r.add(Reason::TooOld, 2, || format!("m{i}"));
        }
        assert_eq!(r.total(), 30);
        assert!(r.message().ends_with("(and 5 more)"), "{}", r.message());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let b = bytes::Bytes::from(body.clone());
            let _ = decode_body(b, Some("gzip"), 4096);
            let _ = unsnappy(&body, 4096);
        }
    }
}
