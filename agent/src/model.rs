//! What one scrape produces: metric families with their samples, and events
//! (e.g. OOM kills). Readers (`node`, cgroups, processes) fill a [`Scrape`];
//! the shipper turns it into `vigil.v1` batches and `/metrics` encodes it as
//! Prometheus text. Not here: how anything is read or sent.

use std::fmt::Write as _;
use std::sync::Arc;

/// A series' labels, shared: readers build a container's label set once and
/// every sample of that container points at it (no copy per sample).
pub type LabelSet = Arc<[(String, String)]>;

/// Builds a [`LabelSet`] from `(name, value)` pairs.
pub fn label_set<K: Into<String>, V: Into<String>>(
    labels: impl IntoIterator<Item = (K, V)>,
) -> LabelSet {
    labels
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

/// The kind of a metric family, as in the Prometheus/OpenMetrics type line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Gauge,
    Untyped,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Untyped => "untyped",
        }
    }

    pub fn to_proto(self) -> vigil_proto::v1::MetricType {
        match self {
            MetricKind::Counter => vigil_proto::v1::MetricType::Counter,
            MetricKind::Gauge => vigil_proto::v1::MetricType::Gauge,
            MetricKind::Untyped => vigil_proto::v1::MetricType::Unknown,
        }
    }
}

/// One series' value. `labels` exclude `__name__` and `node` (the shipper adds
/// both); names are unique within a sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: LabelSet,
    pub value: f64,
}

/// A metric family: one name, one help text, one kind, many samples.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricFamily {
    pub name: String,
    pub help: String,
    pub kind: MetricKind,
    pub samples: Vec<Sample>,
}

impl MetricFamily {
    pub fn new(name: impl Into<String>, help: impl Into<String>, kind: MetricKind) -> Self {
        MetricFamily {
            name: name.into(),
            help: help.into(),
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a sample; labels given as `(name, value)` pairs.
    pub fn push<K: Into<String>, V: Into<String>>(
        &mut self,
        labels: impl IntoIterator<Item = (K, V)>,
        value: f64,
    ) {
        self.samples.push(Sample {
            labels: label_set(labels),
            value,
        });
    }

    /// Adds a sample whose label set is shared with other samples.
    pub fn push_shared(&mut self, labels: &LabelSet, value: f64) {
        self.samples.push(Sample {
            labels: Arc::clone(labels),
            value,
        });
    }
}

/// A discrete happening shipped as a `vigil.v1.Event`.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub timestamp_ms: i64,
    pub kind: String,
    /// The subject's identity labels (e.g. the container's `id`, `name`, …).
    pub subject: Vec<(String, String)>,
    pub attributes: Vec<(String, String)>,
}

/// A series an application target exposed, with its final label set
/// (`__name__`, target labels, `node`), made once and shared by every sample
/// of it; `id` is unique in this agent's run, so a batch interns it by number.
#[derive(Debug, PartialEq, Eq)]
pub struct TargetSeries {
    pub id: u64,
    pub labels: vigil_common::Labels,
}

impl TargetSeries {
    pub fn new(labels: vigil_common::Labels) -> Arc<Self> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Arc::new(TargetSeries {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            labels,
        })
    }
}

/// A family's `# HELP` / `# TYPE` / `# UNIT` as a target exposed them.
#[derive(Clone, Debug, PartialEq)]
pub struct FamilyMetadata {
    pub family: String,
    pub kind: vigil_proto::v1::MetricType,
    pub help: String,
    pub unit: String,
}

/// What one scrape of one application target produced: samples (each with
/// its own timestamp: exposed ones are honoured) and the families' metadata.
#[derive(Clone, Debug, Default)]
pub struct TargetScrape {
    pub samples: Vec<(Arc<TargetSeries>, i64, f64)>,
    pub metadata: Vec<FamilyMetadata>,
}

/// Everything one scrape read, stamped with one timestamp.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    pub timestamp_ms: i64,
    pub families: Vec<MetricFamily>,
    pub events: Vec<Event>,
}

impl Scrape {
    pub fn new(timestamp_ms: i64) -> Self {
        Scrape {
            timestamp_ms,
            ..Default::default()
        }
    }

    pub fn sample_count(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }

    /// Prometheus text exposition (format 0.0.4), `node` added to every sample
    /// when given. Families with no samples are left out.
    pub fn encode_text(&self, node: Option<&str>) -> String {
        let mut out = String::with_capacity(self.sample_count() * 96);
        for f in &self.families {
            if f.samples.is_empty() {
                continue;
            }
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
            for s in &f.samples {
                out.push_str(&f.name);
                let mut first = true;
                let mut label = |out: &mut String, k: &str, v: &str| {
                    out.push(if first { '{' } else { ',' });
                    first = false;
                    out.push_str(k);
                    out.push_str("=\"");
                    escape_value(out, v);
                    out.push('"');
                };
                for (k, v) in s.labels.iter() {
                    label(&mut out, k, v);
                }
                if let Some(n) = node {
                    label(&mut out, "node", n);
                }
                if !first {
                    out.push('}');
                }
                out.push(' ');
                write_value(&mut out, s.value);
                out.push('\n');
            }
        }
        out
    }
}

fn escape_help(h: &str) -> String {
    h.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes a float the way Prometheus does (`NaN`, `+Inf`, `-Inf`, shortest form).
pub fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_encoding_escapes_and_adds_node() {
        let mut s = Scrape::new(1);
        let mut f = MetricFamily::new("x_total", "help \\ me", MetricKind::Counter);
        f.push([("a", "q\"\n")], 1.5);
        f.push(Vec::<(String, String)>::new(), f64::INFINITY);
        s.families.push(f);
        let t = s.encode_text(Some("n1"));
        assert_eq!(
            t,
            "# HELP x_total help \\\\ me\n# TYPE x_total counter\nx_total{a=\"q\\\"\\n\",node=\"n1\"} 1.5\nx_total{node=\"n1\"} +Inf\n"
        );
    }
}
