//! The remote-write 1.0 wire format (`prometheus.WriteRequest` after snappy)
//! and its two readers.
//!
//! [`decode`] builds the owned messages ([`WriteRequest`]: every label a
//! `String`), for the store-only setup, the forwarder's tests and the fuzz
//! target. [`parse`] is the receiver's steady state: a sender repeats the same
//! series request after request, so the receiver should pay for a series'
//! labels once, not on every sample. It walks the protobuf without building
//! strings: for each `TimeSeries` it records the label fields exactly as they
//! came on the wire (tag, length and bytes — the key of
//! [`crate::ingest::series_cache`]), where each label's bytes are (to decode
//! them only for a series the cache does not know: [`RawRequest::labels`]),
//! and the samples. Both readers accept exactly the same bodies and share
//! [`check_labels`]. The rules are `prometheus.WriteRequest`'s and prost's:
//! unknown fields (groups too) are skipped, a field repeated as a scalar keeps
//! its last value, a missing field is its default; anything malformed is a
//! [`DecodeError`], never a panic.
//!
//! Not here: the HTTP endpoint (`super::remote_write`), what the receiver does
//! with a series (`crate::ingest`).

use std::ops::Range;

/// Largest decompressed request accepted (Prometheus' default is 32 MiB).
pub const MAX_DECODED_BYTES: usize = 64 << 20;
/// `prometheus.WriteRequest` (remote write 1.0), the fields we read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// Why a remote-write body was rejected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("snappy decode error: {0}")]
    Snappy(String),
    #[error("decompressed body of {0} bytes exceeds the limit of {MAX_DECODED_BYTES}")]
    TooLarge(usize),
    #[error("protobuf decode error: {0}")]
    Protobuf(String),
    #[error("series {index}: {reason}")]
    InvalidSeries { index: usize, reason: String },
}

/// Decodes a snappy-block protobuf `WriteRequest` and checks its label sets.
pub fn decode(body: &[u8]) -> Result<WriteRequest, DecodeError> {
    let raw = decompress(body)?;
    let req = <WriteRequest as prost::Message>::decode(&raw[..])
        .map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    for (index, ts) in req.timeseries.iter().enumerate() {
        check_labels(
            index,
            ts.labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str())),
        )?;
    }
    Ok(req)
}

/// Undoes the snappy block compression, within [`MAX_DECODED_BYTES`], into
/// a buffer taken from a small pool ([`Decompressed`]).
pub fn decompress(body: &[u8]) -> Result<Decompressed, DecodeError> {
    let len = snap::raw::decompress_len(body).map_err(|e| DecodeError::Snappy(e.to_string()))?;
    if len > MAX_DECODED_BYTES {
        return Err(DecodeError::TooLarge(len));
    }
    let mut buf = BODIES.take();
    // only a buffer's new bytes are zeroed; the decoder writes all `len`
    if buf.len() < len {
        buf.resize(len, 0);
    } else {
        buf.truncate(len);
    }
    let mut out = Decompressed { buf };
    let n = snap::raw::Decoder::new()
        .decompress(body, &mut out.buf)
        .map_err(|e| DecodeError::Snappy(e.to_string()))?;
    out.buf.truncate(n);
    Ok(out)
}

/// Memory kept from one request for the next: a steady sender's requests
/// are the same size every time, and fresh memory per request cost a page
/// fault per 4 KiB of it (a tenth of a forwarding gateway's CPU) once the
/// allocator gives freed memory back at once (`collector/src/main.rs`).
/// At most [`Pool::MAX_ITEMS`] items of at most `max_bytes` each.
struct Pool<T> {
    items: parking_lot::Mutex<Vec<T>>,
    max_bytes: usize,
}

impl<T: Default> Pool<T> {
    const MAX_ITEMS: usize = 4;

    const fn new(max_bytes: usize) -> Self {
        Pool {
            items: parking_lot::Mutex::new(Vec::new()),
            max_bytes,
        }
    }

    fn take(&self) -> T {
        self.items.lock().pop().unwrap_or_default()
    }

    /// Keeps `item` for a later `take` if it is small enough and there is room.
    fn give(&self, item: T, bytes: usize) {
        if bytes <= self.max_bytes {
            let mut items = self.items.lock();
            if items.len() < Self::MAX_ITEMS {
                items.push(item);
            }
        }
    }
}

/// Decompressed bodies.
static BODIES: Pool<Vec<u8>> = Pool::new(2 << 20);

/// A decompressed request body; its buffer goes back to the pool when dropped.
#[derive(Debug)]
pub struct Decompressed {
    buf: Vec<u8>,
}

impl std::ops::Deref for Decompressed {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Decompressed {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let bytes = buf.capacity();
        BODIES.give(buf, bytes);
    }
}

/// One `TimeSeries` of a request, as ranges into [`RawRequest`]'s tables.
#[derive(Debug, Clone)]
pub struct RawSeries {
    /// Into `RawRequest::keys`: the label fields as they came on the wire.
    pub key: Range<usize>,
    /// Into `RawRequest::label_spans`: one `Label` message each.
    pub labels: Range<usize>,
    /// Into `RawRequest::samples`.
    pub samples: Range<usize>,
}

/// A parsed request borrowing the decompressed body. Its tables come from
/// a small pool and go back to it when it is dropped (see [`Pool`]).
#[derive(Debug, Default)]
pub struct RawRequest<'a> {
    body: &'a [u8],
    pub series: Vec<RawSeries>,
    /// Every series' label fields, back to back.
    pub keys: Vec<u8>,
    /// Where each `Label` message is in `body`.
    label_spans: Vec<(u32, u32)>,
    /// (timestamp ms, value), per series in the order sent.
    pub samples: Vec<(i64, f64)>,
    pub metadata: Vec<MetricMetadata>,
}

/// The tables of a [`RawRequest`], kept between requests.
#[derive(Default)]
struct Tables {
    series: Vec<RawSeries>,
    keys: Vec<u8>,
    label_spans: Vec<(u32, u32)>,
    samples: Vec<(i64, f64)>,
}

impl Tables {
    fn bytes(&self) -> usize {
        self.series.capacity() * std::mem::size_of::<RawSeries>()
            + self.keys.capacity()
            + self.label_spans.capacity() * std::mem::size_of::<(u32, u32)>()
            + self.samples.capacity() * std::mem::size_of::<(i64, f64)>()
    }
}

/// Parsed requests' tables; a request of 10,000 series needs about 2.6 MB.
static TABLES: Pool<Tables> = Pool::new(4 << 20);

impl Drop for RawRequest<'_> {
    fn drop(&mut self) {
        let mut t = Tables {
            series: std::mem::take(&mut self.series),
            keys: std::mem::take(&mut self.keys),
            label_spans: std::mem::take(&mut self.label_spans),
            samples: std::mem::take(&mut self.samples),
        };
        t.series.clear();
        t.keys.clear();
        t.label_spans.clear();
        t.samples.clear();
        let bytes = t.bytes();
        TABLES.give(t, bytes);
    }
}

impl<'a> RawRequest<'a> {
    fn label_span(&self, i: usize) -> &'a [u8] {
        let (a, b) = self.label_spans[i];
        &self.body[a as usize..b as usize]
    }

    /// The wire key of `s` (its label fields, tag and length included).
    pub fn key(&self, s: &RawSeries) -> &[u8] {
        &self.keys[s.key.clone()]
    }

    pub fn samples_of(&self, s: &RawSeries) -> &[(i64, f64)] {
        &self.samples[s.samples.clone()]
    }

    /// Decodes and checks the labels of `s` (the `index`th series), empty
    /// values dropped as absent labels — what the owned decoder and
    /// [`vigil_common::Labels::new`] make of the same series.
    pub fn labels(
        &self,
        index: usize,
        s: &RawSeries,
    ) -> Result<Vec<(String, String)>, DecodeError> {
        let mut pairs = Vec::with_capacity(s.labels.len());
        for i in s.labels.clone() {
            let (name, value) = label(self.label_span(i)).map_err(DecodeError::Protobuf)?;
            pairs.push((name, value));
        }
        check_labels(index, pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())))?;
        pairs.retain(|(_, v)| !v.is_empty());
        Ok(pairs)
    }
}

/// The checks every series of a request must pass (else the request is a
/// 400): non-empty label names, each name once, a non-empty `__name__`.
pub fn check_labels<'s>(
    index: usize,
    labels: impl Iterator<Item = (&'s str, &'s str)> + Clone,
) -> Result<(), DecodeError> {
    let mut names: Vec<&str> = Vec::with_capacity(8);
    let mut has_name = false;
    for (n, v) in labels {
        if n.is_empty() {
            return Err(DecodeError::InvalidSeries {
                index,
                reason: "empty label name".into(),
            });
        }
        has_name |= n == "__name__" && !v.is_empty();
        names.push(n);
    }
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(DecodeError::InvalidSeries {
            index,
            reason: format!("duplicate label name {:?}", w[0]),
        });
    }
    if !has_name {
        return Err(DecodeError::InvalidSeries {
            index,
            reason: "no metric name (__name__)".into(),
        });
    }
    Ok(())
}

/// A field's value.
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Bytes(&'a [u8]),
    /// A (deprecated) group, skipped whole.
    Group,
    EndGroup,
}

/// Nesting of groups allowed (prost's recursion limit).
const MAX_DEPTH: u32 = 100;

/// Reads one field from `buf`: (field number, value, the whole field's bytes).
fn field<'a>(buf: &mut &'a [u8]) -> Result<(u32, Value<'a>, &'a [u8]), String> {
    let f = field_at(buf, 0)?;
    if let Value::EndGroup = f.1 {
        return Err(format!("field {}: an end of group without its start", f.0));
    }
    Ok(f)
}

fn field_at<'a>(buf: &mut &'a [u8], depth: u32) -> Result<(u32, Value<'a>, &'a [u8]), String> {
    let start = *buf;
    let key = varint(buf)?;
    if key >> 3 == 0 || key >> 3 > u64::from(u32::MAX >> 3) {
        return Err(format!("invalid field number {}", key >> 3));
    }
    let number = (key >> 3) as u32;
    let value = match key & 7 {
        0 => Value::Varint(varint(buf)?),
        1 => {
            let (b, rest) = buf
                .split_first_chunk::<8>()
                .ok_or("truncated fixed64 field")?;
            *buf = rest;
            Value::Fixed64(u64::from_le_bytes(*b))
        }
        2 => {
            let len = varint(buf)?;
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= buf.len())
                .ok_or_else(|| format!("field {number}: length {len} past the end"))?;
            let (b, rest) = buf.split_at(len);
            *buf = rest;
            Value::Bytes(b)
        }
        3 => {
            if depth >= MAX_DEPTH {
                return Err("groups nested too deeply".into());
            }
            loop {
                if buf.is_empty() {
                    return Err(format!("field {number}: a group without its end"));
                }
                let (n, v, _) = field_at(buf, depth + 1)?;
                if let Value::EndGroup = v {
                    if n != number {
                        return Err(format!("field {number}: a group ended by field {n}"));
                    }
                    break;
                }
            }
            Value::Group
        }
        4 => Value::EndGroup,
        5 => {
            let (_, rest) = buf
                .split_first_chunk::<4>()
                .ok_or("truncated fixed32 field")?;
            *buf = rest;
            Value::Fixed32
        }
        w => return Err(format!("field {number}: invalid wire type {w}")),
    };
    let used = start.len() - buf.len();
    Ok((number, value, &start[..used]))
}

fn varint(buf: &mut &[u8]) -> Result<u64, String> {
    prost::encoding::decode_varint(buf).map_err(|e| e.to_string())
}

fn bytes<'a>(number: u32, v: Value<'a>, what: &str) -> Result<&'a [u8], String> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(format!("{what}: field {number} has the wrong wire type")),
    }
}

fn string(number: u32, v: Value<'_>, what: &str) -> Result<String, String> {
    let b = bytes(number, v, what)?;
    std::str::from_utf8(b)
        .map(str::to_string)
        .map_err(|_| format!("{what}: invalid UTF-8"))
}

/// A `Label` message: (name, value).
fn label(mut buf: &[u8]) -> Result<(String, String), String> {
    let (mut name, mut value) = (String::new(), String::new());
    while !buf.is_empty() {
        let (n, v, _) = field(&mut buf)?;
        match n {
            1 => name = string(n, v, "Label.name")?,
            2 => value = string(n, v, "Label.value")?,
            _ => {}
        }
    }
    Ok((name, value))
}

/// A `Sample` message.
fn sample(mut buf: &[u8]) -> Result<(i64, f64), String> {
    let (mut t, mut value) = (0i64, 0f64);
    while !buf.is_empty() {
        let (n, v, _) = field(&mut buf)?;
        match (n, v) {
            (1, Value::Fixed64(bits)) => value = f64::from_bits(bits),
            (2, Value::Varint(x)) => t = x as i64,
            (1 | 2, _) => return Err(format!("Sample: field {n} has the wrong wire type")),
            _ => {}
        }
    }
    Ok((t, value))
}

fn metadata(mut buf: &[u8]) -> Result<MetricMetadata, String> {
    let mut m = MetricMetadata::default();
    while !buf.is_empty() {
        let (n, v, _) = field(&mut buf)?;
        match (n, v) {
            (1, Value::Varint(x)) => m.r#type = x as i32,
            (1, _) => return Err("MetricMetadata.type has the wrong wire type".into()),
            (2, v) => m.metric_family_name = string(n, v, "MetricMetadata.metric_family_name")?,
            (4, v) => m.help = string(n, v, "MetricMetadata.help")?,
            (5, v) => m.unit = string(n, v, "MetricMetadata.unit")?,
            _ => {}
        }
    }
    Ok(m)
}

/// Parses a decompressed `WriteRequest`. Label bytes are checked (UTF-8,
/// names) only when [`RawRequest::labels`] decodes them.
pub fn parse(body: &[u8]) -> Result<RawRequest<'_>, DecodeError> {
    parse_inner(body).map_err(DecodeError::Protobuf)
}

fn parse_inner(mut buf: &[u8]) -> Result<RawRequest<'_>, String> {
    if u32::try_from(buf.len()).is_err() {
        return Err(format!("{} bytes: too large a request", buf.len()));
    }
    let t = TABLES.take();
    let mut req = RawRequest {
        body: buf,
        series: t.series,
        keys: t.keys,
        label_spans: t.label_spans,
        samples: t.samples,
        metadata: Vec::new(),
    };
    while !buf.is_empty() {
        let (n, v, _) = field(&mut buf)?;
        match n {
            1 => {
                let ts = bytes(n, v, "WriteRequest.timeseries")?;
                time_series(&mut req, ts)?;
            }
            3 => {
                let m = bytes(n, v, "WriteRequest.metadata")?;
                req.metadata.push(metadata(m)?);
            }
            _ => {}
        }
    }
    Ok(req)
}

fn time_series<'a>(req: &mut RawRequest<'a>, mut buf: &'a [u8]) -> Result<(), String> {
    let base = req.body.as_ptr() as usize;
    let key_start = req.keys.len();
    let labels_start = req.label_spans.len();
    let samples_start = req.samples.len();
    while !buf.is_empty() {
        let (n, v, whole) = field(&mut buf)?;
        match n {
            1 => {
                let span = bytes(n, v, "TimeSeries.labels")?;
                // within the body, whose length fits in u32 (checked above)
                let a = (span.as_ptr() as usize - base) as u32;
                req.label_spans.push((a, a + span.len() as u32));
                req.keys.extend_from_slice(whole);
            }
            2 => {
                let s = bytes(n, v, "TimeSeries.samples")?;
                req.samples.push(sample(s)?);
            }
            _ => {}
        }
    }
    req.series.push(RawSeries {
        key: key_start..req.keys.len(),
        labels: labels_start..req.label_spans.len(),
        samples: samples_start..req.samples.len(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    fn ts(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| Sample { value, timestamp })
                .collect(),
        }
    }

    /// What the owned (prost) decoder makes of a body, in the same shape.
    type Series = (Vec<(String, String)>, Vec<(i64, f64)>);
    fn owned(body: &[u8]) -> Result<Vec<Series>, ()> {
        let req = WriteRequest::decode(body).map_err(|_| ())?;
        Ok(req
            .timeseries
            .into_iter()
            .map(|t| {
                (
                    t.labels.into_iter().map(|l| (l.name, l.value)).collect(),
                    t.samples
                        .into_iter()
                        .map(|s| (s.timestamp, s.value))
                        .collect(),
                )
            })
            .collect())
    }

    fn borrowed(body: &[u8]) -> Result<Vec<Series>, ()> {
        let req = parse(body).map_err(|_| ())?;
        let mut out = Vec::new();
        for s in &req.series {
            let mut labels = Vec::new();
            for i in s.labels.clone() {
                labels.push(label(req.label_span(i)).map_err(|_| ())?);
            }
            out.push((labels, req.samples_of(s).to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn reads_what_prost_writes_and_keys_by_label_bytes() {
        let req = WriteRequest {
            timeseries: vec![
                ts(
                    &[("__name__", "up"), ("job", "a")],
                    &[(1000, 1.0), (2000, 0.0)],
                ),
                ts(&[("__name__", "up"), ("job", "b")], &[(1000, f64::NAN)]),
                ts(&[("__name__", "up"), ("job", "a")], &[(3000, 2.5)]),
            ],
            metadata: vec![MetricMetadata {
                r#type: 1,
                metric_family_name: "up".into(),
                help: "Up.".into(),
                unit: String::new(),
            }],
        };
        let body = req.encode_to_vec();
        let raw = parse(&body).unwrap();
        assert_eq!(raw.series.len(), 3);
        assert_eq!(raw.key(&raw.series[0]), raw.key(&raw.series[2]));
        assert_ne!(raw.key(&raw.series[0]), raw.key(&raw.series[1]));
        assert_eq!(raw.samples_of(&raw.series[0]), &[(1000, 1.0), (2000, 0.0)]);
        assert!(raw.samples_of(&raw.series[1])[0].1.is_nan());
        assert_eq!(raw.metadata, req.metadata);
        assert_eq!(
            raw.labels(0, &raw.series[0]).unwrap(),
            vec![
                ("__name__".to_string(), "up".to_string()),
                ("job".to_string(), "a".to_string())
            ]
        );
    }

    #[test]
    fn label_checks_match_the_owned_decoder() {
        for (labels, want) in [
            (vec![("job", "a")], "no metric name"),
            (vec![("__name__", "")], "no metric name"),
            (vec![("__name__", "x"), ("", "v")], "empty label name"),
            (
                vec![("__name__", "x"), ("a", "1"), ("a", "2")],
                "duplicate label name",
            ),
        ] {
            let body = WriteRequest {
                timeseries: vec![ts(&labels, &[(1, 1.0)])],
                metadata: vec![],
            }
            .encode_to_vec();
            let raw = parse(&body).unwrap();
            let e = raw.labels(0, &raw.series[0]).unwrap_err().to_string();
            assert!(e.contains(want), "{labels:?}: {e}");
            let snappy = snap::raw::Encoder::new().compress_vec(&body).unwrap();
            let e2 = decode(&snappy).unwrap_err().to_string();
            assert!(e2.contains(want), "owned decoder: {e2}");
        }
        // empty values are absent labels
        let body = WriteRequest {
            timeseries: vec![ts(&[("__name__", "x"), ("e", "")], &[(1, 1.0)])],
            metadata: vec![],
        }
        .encode_to_vec();
        let raw = parse(&body).unwrap();
        assert_eq!(raw.labels(0, &raw.series[0]).unwrap().len(), 1);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let good = WriteRequest {
            timeseries: vec![ts(&[("__name__", "up")], &[(1, 1.0)])],
            metadata: vec![],
        }
        .encode_to_vec();
        for cut in 1..good.len() {
            // a truncated body fails as prost fails, or parses the same
            assert_eq!(borrowed(&good[..cut]).is_ok(), owned(&good[..cut]).is_ok());
        }
        assert!(
            parse(&[
                0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
            ])
            .is_err()
        );
        assert!(parse(&[0x0b]).is_err(), "a group without its end");
        assert!(parse(&[0x0c]).is_err(), "an end without a start");
        // an unknown field as a group is skipped, as prost does
        let mut grouped = vec![0x2b, 0x08, 0x01, 0x2c];
        grouped.extend_from_slice(&good);
        assert_eq!(borrowed(&grouped), owned(&grouped));
        assert!(borrowed(&grouped).is_ok());
        let deep: Vec<u8> = std::iter::repeat_n(0x2b, 200)
            .chain(std::iter::repeat_n(0x2c, 200))
            .collect();
        assert!(parse(&deep).is_err());
        // invalid UTF-8 in a label: found when the labels are decoded
        let bad = [0x0a, 0x07, 0x0a, 0x05, 0x0a, 0x03, 0xff, 0xfe, 0xfd];
        let raw = parse(&bad).unwrap();
        assert!(raw.labels(0, &raw.series[0]).is_err());
    }

    #[test]
    fn pooled_buffers_carry_nothing_from_the_last_request() {
        let z = |b: &[u8]| snap::raw::Encoder::new().compress_vec(b).unwrap();
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let small = b"a short body".to_vec();
        for _ in 0..3 {
            assert_eq!(&decompress(&z(&big)).unwrap()[..], &big[..]);
            assert_eq!(&decompress(&z(&small)).unwrap()[..], &small[..]);
            // a body the decoder refuses hands its buffer back, and the next is whole
            assert!(decompress(&[0x05, 0x00]).is_err());
            assert_eq!(&decompress(&z(b"")).unwrap()[..], b"");
        }
        assert!(BODIES.items.lock().len() <= Pool::<Vec<u8>>::MAX_ITEMS);
    }

    proptest! {
        #[test]
        fn agrees_with_prost_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            // never panics; whatever both accept, both read the same
            if let (Ok(a), Ok(b)) = (borrowed(&body), owned(&body)) {
                prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
            }
        }

        #[test]
        fn agrees_with_prost_on_valid_requests(
            series in proptest::collection::vec(
                (proptest::collection::vec(("[a-z_]{0,4}", "[a-z0-9]{0,4}"), 0..4),
                 proptest::collection::vec((any::<i64>(), any::<f64>()), 0..3)),
                0..5)
        ) {
            let req = WriteRequest {
                timeseries: series.iter().map(|(l, s)| TimeSeries {
                    labels: l.iter().map(|(n, v)| Label { name: n.clone(), value: v.clone() }).collect(),
                    samples: s.iter().map(|&(timestamp, value)| Sample { value, timestamp }).collect(),
                }).collect(),
                metadata: vec![],
            };
            let body = req.encode_to_vec();
            let a = borrowed(&body).unwrap();
            let b = owned(&body).unwrap();
            prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }
    }
}
