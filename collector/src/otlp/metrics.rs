//! OTLP metrics to series and samples, as Prometheus's OTLP receiver
//! translates them (`storage/remote/otlptranslator`, default settings):
//!
//! - a data point's labels are its attributes (names by
//!   [`names::label_name`]; attributes whose names collide after
//!   normalisation are joined with `;` in key order), then `job` from the
//!   resource's `service.namespace` + `/` + `service.name` (or
//!   `service.name` alone) and `instance` from `service.instance.id`, which
//!   win over attributes of those names;
//! - a resource with other attributes also yields `target_info` (value 1,
//!   those attributes as labels, plus `job`/`instance`), sampled every
//!   2.5 minutes (half the lookback) from the earliest to the latest data
//!   point the request carried for it, so it joins in PromQL like
//!   Prometheus's; a resource without `job` or `instance` has none;
//! - gauges and sums give one sample per point; monotonic sums are
//!   counters (`_total`), non-monotonic ones gauges; integer values become
//!   floats; a point without a value is 0;
//! - explicit-bucket histograms give `_bucket{le}` (cumulative counts, the
//!   `+Inf` bucket = `count`), `_sum` (when set) and `_count`;
//! - summaries give `{quantile}`, `_sum` and `_count`;
//! - a point flagged "no recorded value" gives Prometheus's staleness marker;
//! - timestamps are truncated from nanoseconds to milliseconds;
//! - metadata (HELP from the description, TYPE, the unit as a Prometheus
//!   word) per metric family.
//!
//! Refused (counted by reason, reported as OTLP partial success; the rest
//! of the request is kept): delta or unspecified temporality (Prometheus
//! refuses delta unless told to convert, and converting here would need
//! per-series state that a restart loses — the SDK can export cumulative
//! instead), exponential histograms (vigil stores floats; their buckets
//! change with the scale, so classic `le` series would not hold still),
//! metrics without points or data, names that normalise to nothing, points
//! outside the time window, label sets over the limits.
//!
//! Not here: exemplars and `_created` series (Prometheus's defaults do not
//! write them either), scope labels (off by default in Prometheus too).

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, metric::Data, number_data_point,
};
use vigil_common::Labels;
use vigil_proto::v1 as pb;

use super::names::{self, Kind};
use super::{attribute, value_string};
use crate::push::{PushLimits, Reason, Refusals, Window, check_labels};
use crate::store::STALE_NAN;

/// Resource attributes that name the target rather than describe it.
const SERVICE_NAME: &str = "service.name";
const SERVICE_NAMESPACE: &str = "service.namespace";
const SERVICE_INSTANCE_ID: &str = "service.instance.id";

/// `target_info` is sampled this often between a resource's first and last
/// point (half of PromQL's 5 minute lookback).
const TARGET_INFO_STEP_NS: i64 = 150 * 1_000_000_000;

/// The flag bit of a point that has no recorded value.
const NO_RECORDED_VALUE: u32 = 1;

/// What a request translated into.
#[derive(Debug, Default)]
pub struct Translated {
    /// Samples by series, in the order the series first appeared.
    pub series: Vec<(Labels, Vec<(i64, f64)>)>,
    pub metadata: Vec<pb::MetricMetadata>,
    /// Data points accepted.
    pub points: u64,
    pub samples: u64,
    /// Data points refused, by reason.
    pub refusals: Refusals,
}

impl Translated {
    fn add(&mut self, index: &mut HashMap<Labels, usize>, labels: Labels, t_ms: i64, v: f64) {
        self.samples += 1;
        match index.get(&labels) {
            Some(&i) => self.series[i].1.push((t_ms, v)),
            None => {
                index.insert(labels.clone(), self.series.len());
                self.series.push((labels, vec![(t_ms, v)]));
            }
        }
    }
}

/// `job` and `instance` of a resource, and its attributes.
struct Resource<'a> {
    job: Option<String>,
    instance: Option<String>,
    attributes: &'a [KeyValue],
}

impl<'a> Resource<'a> {
    fn new(attributes: &'a [KeyValue]) -> Self {
        let name = attribute(attributes, SERVICE_NAME).map(|kv| value_string(kv.value.as_ref()));
        let job = name.map(|n| match attribute(attributes, SERVICE_NAMESPACE) {
            Some(ns) => format!("{}/{n}", value_string(ns.value.as_ref())),
            None => n,
        });
        let instance =
            attribute(attributes, SERVICE_INSTANCE_ID).map(|kv| value_string(kv.value.as_ref()));
        Resource {
            job,
            instance,
            attributes,
        }
    }
}

/// The labels every sample of a point shares (no `__name__` yet).
fn base_labels(
    res: &Resource<'_>,
    attrs: &[KeyValue],
    skip: &[&str],
) -> Result<Vec<(String, String)>, (Reason, String)> {
    let mut kvs: Vec<&KeyValue> = attrs
        .iter()
        .filter(|kv| !skip.contains(&kv.key.as_str()))
        .collect();
    kvs.sort_by(|a, b| a.key.cmp(&b.key));
    let mut out: Vec<(String, String)> = Vec::with_capacity(kvs.len() + 3);
    for kv in kvs {
        let Some(name) = names::label_name(&kv.key) else {
            return Err((
                Reason::InvalidName,
                format!("attribute {:?} does not make a label name", kv.key),
            ));
        };
        let value = value_string(kv.value.as_ref());
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push(';');
                v.push_str(&value);
            }
            None => out.push((name, value)),
        }
    }
    for (name, value) in [("job", &res.job), ("instance", &res.instance)] {
        if let Some(value) = value {
            out.retain(|(n, _)| n != name);
            out.push((name.to_string(), value.clone()));
        }
    }
    Ok(out)
}

fn labels_with(base: &[(String, String)], name: &str, extra: Option<(&str, String)>) -> Labels {
    let mut pairs = Vec::with_capacity(base.len() + 2);
    pairs.extend(base.iter().cloned());
    if let Some((k, v)) = extra {
        pairs.retain(|(n, _)| n != k);
        pairs.push((k.to_string(), v));
    }
    pairs.push(("__name__".to_string(), name.to_string()));
    Labels::new(pairs)
}

/// `le` and `quantile` values as Prometheus writes them.
fn float_label(f: f64) -> String {
    if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else if f.is_nan() {
        "NaN".into()
    } else {
        format!("{f}")
    }
}

fn kind_of(m: &Metric) -> Option<Kind> {
    Some(match m.data.as_ref()? {
        Data::Gauge(_) => Kind::Gauge,
        Data::Sum(s) if s.is_monotonic => Kind::MonotonicSum,
        Data::Sum(_) => Kind::NonMonotonicSum,
        Data::Histogram(_) => Kind::Histogram,
        Data::ExponentialHistogram(_) => Kind::ExponentialHistogram,
        Data::Summary(_) => Kind::Summary,
    })
}

fn metric_type(kind: Kind) -> pb::MetricType {
    match kind {
        Kind::Gauge | Kind::NonMonotonicSum => pb::MetricType::Gauge,
        Kind::MonotonicSum => pb::MetricType::Counter,
        Kind::Histogram | Kind::ExponentialHistogram => pb::MetricType::Histogram,
        Kind::Summary => pb::MetricType::Summary,
    }
}

fn point_count(m: &Metric) -> u64 {
    (match m.data.as_ref() {
        None => 0,
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
    }) as u64
}

/// A point's common fields, whatever its type.
struct Point<'a> {
    attributes: &'a [KeyValue],
    time_unix_nano: u64,
    flags: u32,
}

/// Translates a request; never fails as a whole (what cannot be translated
/// is in [`Translated::refusals`]).
pub fn translate(req: ExportMetricsServiceRequest, limits: &PushLimits, now_ns: i64) -> Translated {
    let window = Window::at(limits, now_ns, false);
    let mut out = Translated::default();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for rm in &req.resource_metrics {
        let attrs: &[KeyValue] = rm
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let res = Resource::new(attrs);
        // earliest and latest accepted point, for target_info
        let mut span: Option<(i64, i64)> = None;
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                translate_metric(m, &res, limits, &window, &mut out, &mut index, &mut span);
            }
        }
        if let Some((first, last)) = span {
            target_info(&res, limits, first, last, &mut out, &mut index);
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn translate_metric(
    m: &Metric,
    res: &Resource<'_>,
    limits: &PushLimits,
    window: &Window,
    out: &mut Translated,
    index: &mut HashMap<Labels, usize>,
    span: &mut Option<(i64, i64)>,
) {
    let points = point_count(m);
    let Some(kind) = kind_of(m) else {
        out.refusals.add(Reason::EmptyMetric, 1, || {
            format!("metric {:?} has no data", m.name)
        });
        return;
    };
    if points == 0 {
        out.refusals.add(Reason::EmptyMetric, 1, || {
            format!("metric {:?} has no data points", m.name)
        });
        return;
    }
    let temporality = match m.data.as_ref() {
        Some(Data::Sum(s)) => Some(s.aggregation_temporality),
        Some(Data::Histogram(h)) => Some(h.aggregation_temporality),
        Some(Data::ExponentialHistogram(h)) => Some(h.aggregation_temporality),
        _ => None,
    };
    if kind == Kind::ExponentialHistogram {
        out.refusals.add(Reason::ExponentialHistogram, points, || {
            format!(
                "metric {:?}: exponential histograms are not accepted (vigil stores float samples); export explicit-bucket histograms",
                m.name
            )
        });
        return;
    }
    match temporality.map(AggregationTemporality::try_from) {
        None | Some(Ok(AggregationTemporality::Cumulative)) => {}
        Some(Ok(AggregationTemporality::Delta)) => {
            out.refusals.add(Reason::DeltaTemporality, points, || {
                format!(
                    "metric {:?}: delta temporality is not accepted; export cumulative temporality (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=cumulative)",
                    m.name
                )
            });
            return;
        }
        Some(_) => {
            out.refusals
                .add(Reason::UnspecifiedTemporality, points, || {
                    format!("metric {:?}: invalid aggregation temporality", m.name)
                });
            return;
        }
    }
    let Some(name) = names::metric_name(&m.name, &m.unit, kind) else {
        out.refusals.add(Reason::InvalidName, points, || {
            format!("metric name {:?} does not make a Prometheus name", m.name)
        });
        return;
    };
    out.metadata.push(pb::MetricMetadata {
        family: name.clone(),
        r#type: metric_type(kind) as i32,
        help: m.description.clone(),
        unit: names::unit_name(&m.unit),
    });

    // checks a point; on success its timestamp (ms) and base labels
    let mut admit = |p: Point<'_>, refusals: &mut Refusals| -> Option<Admitted> {
        let ts_ns = i64::try_from(p.time_unix_nano).unwrap_or(i64::MAX);
        if let Err(r) = window.check(ts_ns) {
            refusals.add(r, 1, || {
                format!(
                    "metric {:?}: a point at {} ns is outside the accepted window (retention, max_future_skew)",
                    m.name, p.time_unix_nano
                )
            });
            return None;
        }
        let base = match base_labels(res, p.attributes, &[]) {
            Ok(b) => b,
            Err((r, msg)) => {
                refusals.add(r, 1, || format!("metric {:?}: {msg}", m.name));
                return None;
            }
        };
        // the largest label set this point makes: name plus le/quantile
        let probe = labels_with(&base, &name, Some(("le", "+Inf".into())));
        if let Err((r, msg)) = check_labels(&probe, limits) {
            refusals.add(r, 1, || msg);
            return None;
        }
        *span = Some(match *span {
            None => (ts_ns, ts_ns),
            Some((a, b)) => (a.min(ts_ns), b.max(ts_ns)),
        });
        Some((ts_ns / 1_000_000, base, p.flags & NO_RECORDED_VALUE != 0))
    };

    match m.data.as_ref() {
        Some(Data::Gauge(g)) => number_points(&g.data_points, &name, &mut admit, out, index),
        Some(Data::Sum(s)) => number_points(&s.data_points, &name, &mut admit, out, index),
        Some(Data::Histogram(h)) => {
            for p in &h.data_points {
                let point = Point {
                    attributes: &p.attributes,
                    time_unix_nano: p.time_unix_nano,
                    flags: p.flags,
                };
                let Some((t, base, stale)) = admit(point, &mut out.refusals) else {
                    continue;
                };
                let val = |v: f64| if stale { STALE_NAN } else { v };
                out.points += 1;
                if let Some(sum) = p.sum {
                    let l = labels_with(&base, &format!("{name}_sum"), None);
                    out.add(index, l, t, val(sum));
                }
                let l = labels_with(&base, &format!("{name}_count"), None);
                out.add(index, l, t, val(p.count as f64));
                let bucket = format!("{name}_bucket");
                let mut cumulative = 0u64;
                for (bound, count) in p.explicit_bounds.iter().zip(&p.bucket_counts) {
                    cumulative = cumulative.saturating_add(*count);
                    let l = labels_with(&base, &bucket, Some(("le", float_label(*bound))));
                    out.add(index, l, t, val(cumulative as f64));
                }
                let l = labels_with(&base, &bucket, Some(("le", "+Inf".into())));
                out.add(index, l, t, val(p.count as f64));
            }
        }
        Some(Data::Summary(s)) => {
            for p in &s.data_points {
                let point = Point {
                    attributes: &p.attributes,
                    time_unix_nano: p.time_unix_nano,
                    flags: p.flags,
                };
                let Some((t, base, stale)) = admit(point, &mut out.refusals) else {
                    continue;
                };
                let val = |v: f64| if stale { STALE_NAN } else { v };
                out.points += 1;
                let l = labels_with(&base, &format!("{name}_sum"), None);
                out.add(index, l, t, val(p.sum));
                let l = labels_with(&base, &format!("{name}_count"), None);
                out.add(index, l, t, val(p.count as f64));
                for q in &p.quantile_values {
                    let l = labels_with(&base, &name, Some(("quantile", float_label(q.quantile))));
                    out.add(index, l, t, val(q.value));
                }
            }
        }
        Some(Data::ExponentialHistogram(_)) | None => {}
    }
}

/// An admitted point: its timestamp (ms), base labels and staleness.
type Admitted = (i64, Vec<(String, String)>, bool);

type Admit<'a> = dyn FnMut(Point<'_>, &mut Refusals) -> Option<Admitted> + 'a;

fn number_points(
    points: &[opentelemetry_proto::tonic::metrics::v1::NumberDataPoint],
    name: &str,
    admit: &mut Admit<'_>,
    out: &mut Translated,
    index: &mut HashMap<Labels, usize>,
) {
    for p in points {
        let point = Point {
            attributes: &p.attributes,
            time_unix_nano: p.time_unix_nano,
            flags: p.flags,
        };
        let Some((t, base, stale)) = admit(point, &mut out.refusals) else {
            continue;
        };
        let v = if stale {
            STALE_NAN
        } else {
            match p.value {
                Some(number_data_point::Value::AsDouble(d)) => d,
                Some(number_data_point::Value::AsInt(i)) => i as f64,
                None => 0.0,
            }
        };
        out.points += 1;
        out.add(index, labels_with(&base, name, None), t, v);
    }
}

/// `target_info` for a resource whose points spanned `[first, last]` ns.
fn target_info(
    res: &Resource<'_>,
    limits: &PushLimits,
    first: i64,
    last: i64,
    out: &mut Translated,
    index: &mut HashMap<Labels, usize>,
) {
    let identifying = [SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_INSTANCE_ID];
    let described = res
        .attributes
        .iter()
        .any(|kv| !identifying.contains(&kv.key.as_str()));
    if !described || (res.job.is_none() && res.instance.is_none()) {
        return;
    }
    let base = match base_labels(res, res.attributes, &identifying) {
        Ok(b) => b,
        Err((r, msg)) => {
            out.refusals.add(r, 1, || format!("target_info: {msg}"));
            return;
        }
    };
    let labels = labels_with(&base, "target_info", None);
    if let Err((r, msg)) = check_labels(&labels, limits) {
        out.refusals.add(r, 1, || msg);
        return;
    }
    let mut t = first;
    let mut last_ms = None;
    while t < last {
        out.add(index, labels.clone(), t / 1_000_000, 1.0);
        last_ms = Some(t / 1_000_000);
        t = t.saturating_add(TARGET_INFO_STEP_NS);
    }
    if last_ms.is_none_or(|m| m < last / 1_000_000) {
        out.add(index, labels, last / 1_000_000, 1.0);
    }
}

#[cfg(test)]
mod tests;
