//! Prometheus remote write out: 1.0 (`prometheus.WriteRequest`, encoded by
//! hand from shared label sets — no copy per sample) and 2.0
//! (`io.prometheus.write.v2.Request` with its symbols table, `symbols[0]`
//! empty, metadata per series), snappy block compressed, with the headers
//! each spec requires.
//!
//! Negotiation: an endpoint configured for 2.0 sends 2.0 until the receiver
//! shows it does not take it — a 415, or a 2xx without
//! `X-Prometheus-Remote-Write-Samples-Written` (a 1.x receiver decodes a 2.0
//! body as an empty 1.0 request and says 204) — then it sends 1.0 from then
//! on and resends that batch as 1.0. Not here: queueing or retries.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use vigil_common::Labels;

use super::SampleItem;
use crate::metadata::Metadata;

pub const CONTENT_TYPE_V1: &str = "application/x-protobuf";
pub const CONTENT_TYPE_V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
pub const VERSION_V1: &str = "0.1.0";
pub const VERSION_V2: &str = "2.0.0";
pub const SAMPLES_WRITTEN: &str = "x-prometheus-remote-write-samples-written";

/// `io.prometheus.write.v2.Request`.
#[derive(Clone, PartialEq, Message)]
pub struct RequestV2 {
    #[prost(string, repeated, tag = "4")]
    pub symbols: Vec<String>,
    #[prost(message, repeated, tag = "5")]
    pub timeseries: Vec<TimeSeriesV2>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TimeSeriesV2 {
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<SampleV2>,
    #[prost(message, optional, tag = "5")]
    pub metadata: Option<MetadataV2>,
    #[prost(int64, tag = "6")]
    pub created_timestamp: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct SampleV2 {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct MetadataV2 {
    /// 0 unspecified, 1 counter, 2 gauge, 3 histogram, 4 gaugehistogram,
    /// 5 summary, 6 info, 7 stateset.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(uint32, tag = "3")]
    pub help_ref: u32,
    #[prost(uint32, tag = "4")]
    pub unit_ref: u32,
}

/// A series and its samples (timestamp, value) in a batch.
type SeriesSamples<'a> = (&'a Arc<Labels>, Vec<(i64, f64)>);

/// Samples grouped by series, first-seen order, samples in arrival order.
fn by_series(items: &[SampleItem]) -> Vec<SeriesSamples<'_>> {
    let mut index: HashMap<*const Labels, usize> = HashMap::with_capacity(items.len());
    let mut out: Vec<SeriesSamples<'_>> = Vec::new();
    for it in items {
        let i = *index.entry(Arc::as_ptr(&it.series)).or_insert_with(|| {
            out.push((&it.series, Vec::new()));
            out.len() - 1
        });
        out[i].1.push((it.t, it.v));
    }
    out
}

fn str_field_len(tag: u32, s: &str) -> usize {
    prost::encoding::key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
}

fn put_str(tag: u32, s: &str, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(s.len() as u64, buf);
    buf.extend_from_slice(s.as_bytes());
}

fn sample_len(t: i64, v: f64) -> usize {
    let mut n = 0;
    if v.to_bits() != 0 {
        n += 1 + 8;
    }
    if t != 0 {
        n += 1 + encoded_len_varint(t as u64);
    }
    n
}

/// Encodes a remote write 1.0 `WriteRequest` (uncompressed).
pub fn encode_v1(items: &[SampleItem], buf: &mut Vec<u8>) {
    for (labels, samples) in by_series(items) {
        let mut ts_len = 0;
        for (k, v) in labels.iter() {
            let l = str_field_len(1, k) + str_field_len(2, v);
            ts_len += 1 + encoded_len_varint(l as u64) + l;
        }
        for (t, v) in &samples {
            let l = sample_len(*t, *v);
            ts_len += 1 + encoded_len_varint(l as u64) + l;
        }
        encode_key(1, WireType::LengthDelimited, buf);
        encode_varint(ts_len as u64, buf);
        for (k, v) in labels.iter() {
            let l = str_field_len(1, k) + str_field_len(2, v);
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(l as u64, buf);
            put_str(1, k, buf);
            put_str(2, v, buf);
        }
        for (t, v) in &samples {
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(sample_len(*t, *v) as u64, buf);
            if v.to_bits() != 0 {
                encode_key(1, WireType::SixtyFourBit, buf);
                buf.extend_from_slice(&v.to_le_bytes());
            }
            if *t != 0 {
                encode_key(2, WireType::Varint, buf);
                encode_varint(*t as u64, buf);
            }
        }
    }
}

/// The family a series' metric name belongs to, for metadata.
fn family_of(name: &str, md: &Metadata) -> Option<vigil_proto::v1::MetricMetadata> {
    if let Some(m) = md.get(name) {
        return Some(m);
    }
    for suffix in ["_total", "_bucket", "_sum", "_count", "_created", "_info"] {
        if let Some(f) = name.strip_suffix(suffix)
            && let Some(m) = md.get(f)
        {
            return Some(m);
        }
    }
    None
}

/// The remote write type number of our metadata type.
pub fn type_number(m: &vigil_proto::v1::MetricMetadata) -> i32 {
    match Metadata::type_name(m) {
        "counter" => 1,
        "gauge" => 2,
        "histogram" => 3,
        "summary" => 5,
        "info" => 6,
        "stateset" => 7,
        _ => 0,
    }
}

/// Encodes a remote write 2.0 `Request` (uncompressed).
pub fn encode_v2(items: &[SampleItem], md: &Metadata) -> Vec<u8> {
    let mut symbols: Vec<String> = vec![String::new()];
    let mut index: HashMap<String, u32> = HashMap::new();
    index.insert(String::new(), 0);
    let mut sym = |s: &str, symbols: &mut Vec<String>| -> u32 {
        if let Some(i) = index.get(s) {
            return *i;
        }
        let i = symbols.len() as u32;
        symbols.push(s.to_string());
        index.insert(s.to_string(), i);
        i
    };
    let mut timeseries = Vec::new();
    for (labels, samples) in by_series(items) {
        let mut refs = Vec::with_capacity(labels.len() * 2);
        for (k, v) in labels.iter() {
            refs.push(sym(k, &mut symbols));
            refs.push(sym(v, &mut symbols));
        }
        let metadata = labels
            .metric_name()
            .and_then(|n| family_of(n, md))
            .map(|m| MetadataV2 {
                r#type: type_number(&m),
                help_ref: sym(&m.help, &mut symbols),
                unit_ref: sym(&m.unit, &mut symbols),
            });
        timeseries.push(TimeSeriesV2 {
            labels_refs: refs,
            samples: samples
                .into_iter()
                .map(|(timestamp, value)| SampleV2 { value, timestamp })
                .collect(),
            metadata,
            created_timestamp: 0,
        });
    }
    RequestV2 {
        symbols,
        timeseries,
    }
    .encode_to_vec()
}

/// Metadata as a 1.0 request (metadata only).
pub fn encode_metadata_v1(md: &[vigil_proto::v1::MetricMetadata]) -> Vec<u8> {
    crate::http::rw_wire::WriteRequest {
        timeseries: Vec::new(),
        metadata: md
            .iter()
            .map(|m| crate::http::rw_wire::MetricMetadata {
                r#type: type_number(m),
                metric_family_name: m.family.clone(),
                help: m.help.clone(),
                unit: m.unit.clone(),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// Which message an endpoint sends now.
#[derive(Debug)]
pub struct Negotiation {
    v2: AtomicBool,
}

impl Negotiation {
    pub fn new(v2: bool) -> Self {
        Negotiation {
            v2: AtomicBool::new(v2),
        }
    }

    pub fn v2(&self) -> bool {
        self.v2.load(Ordering::Relaxed)
    }

    /// The receiver does not take 2.0: send 1.0 from now on. True when this
    /// call made the change.
    pub fn downgrade(&self) -> bool {
        self.v2.swap(false, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::rw_wire::WriteRequest;

    fn items() -> Vec<SampleItem> {
        let a = Arc::new(Labels::new([("__name__", "up"), ("job", "x")]));
        let b = Arc::new(Labels::new([("__name__", "req_total"), ("code", "")]));
        vec![
            SampleItem {
                series: a.clone(),
                t: 1000,
                v: 1.0,
            },
            SampleItem {
                series: b.clone(),
                t: 1000,
                v: 0.0,
            },
            SampleItem {
                series: a,
                t: 2000,
                v: f64::from_bits(0x7ff0000000000002),
            },
            SampleItem {
                series: b,
                t: -5,
                v: -2.5,
            },
        ]
    }

    #[test]
    fn v1_decodes_with_the_schema() {
        let mut buf = Vec::new();
        encode_v1(&items(), &mut buf);
        let r = WriteRequest::decode(buf.as_slice()).unwrap();
        assert_eq!(r.timeseries.len(), 2);
        let a = &r.timeseries[0];
        assert_eq!(
            a.labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str()))
                .collect::<Vec<_>>(),
            vec![("__name__", "up"), ("job", "x")]
        );
        assert_eq!(a.samples[0].timestamp, 1000);
        assert_eq!(a.samples[0].value, 1.0);
        assert_eq!(a.samples[1].value.to_bits(), 0x7ff0000000000002);
        let b = &r.timeseries[1];
        assert_eq!(b.labels[0].name, "__name__");
        assert_eq!(b.labels[1].value, "");
        assert_eq!((b.samples[0].timestamp, b.samples[0].value), (1000, 0.0));
        assert_eq!((b.samples[1].timestamp, b.samples[1].value), (-5, -2.5));
    }

    #[test]
    fn v2_has_an_empty_first_symbol_and_metadata() {
        let md = Metadata::default();
        md.update(&[vigil_proto::v1::MetricMetadata {
            family: "req".into(),
            r#type: vigil_proto::v1::MetricType::Counter as i32,
            help: "Requests.".into(),
            unit: String::new(),
        }]);
        let r = RequestV2::decode(encode_v2(&items(), &md).as_slice()).unwrap();
        assert_eq!(r.symbols[0], "");
        let name = |ts: &TimeSeriesV2| {
            let l: Vec<&str> = ts
                .labels_refs
                .iter()
                .map(|i| r.symbols[*i as usize].as_str())
                .collect();
            l.join(",")
        };
        assert_eq!(name(&r.timeseries[0]), "__name__,up,job,x");
        assert_eq!(name(&r.timeseries[1]), "__name__,req_total,code,");
        let m = r.timeseries[1].metadata.as_ref().unwrap();
        assert_eq!(m.r#type, 1);
        assert_eq!(r.symbols[m.help_ref as usize], "Requests.");
        assert_eq!(r.timeseries[0].metadata, None);
        assert_eq!(r.timeseries[1].samples.len(), 2);
    }

    proptest::proptest! {
        #[test]
        fn v1_round_trips(samples in proptest::collection::vec((0u8..4, proptest::prelude::any::<i64>(), proptest::prelude::any::<f64>()), 0..40)) {
            let series: Vec<Arc<Labels>> = (0..4).map(|i| Arc::new(Labels::new([("__name__", format!("m{i}"))]))).collect();
            let items: Vec<SampleItem> = samples.iter().map(|(s, t, v)| SampleItem { series: series[*s as usize].clone(), t: *t, v: *v }).collect();
            let mut buf = Vec::new();
            encode_v1(&items, &mut buf);
            let r = WriteRequest::decode(buf.as_slice()).unwrap();
            let n: usize = r.timeseries.iter().map(|t| t.samples.len()).sum();
            proptest::prop_assert_eq!(n, items.len());
            for ts in &r.timeseries {
                let name = &ts.labels[0].value;
                let want: Vec<(i64, u64)> = items.iter().filter(|i| i.series.metric_name() == Some(name)).map(|i| (i.t, i.v.to_bits())).collect();
                let got: Vec<(i64, u64)> = ts.samples.iter().map(|s| (s.timestamp, s.value.to_bits())).collect();
                proptest::prop_assert_eq!(got, want);
            }
        }
    }
}
