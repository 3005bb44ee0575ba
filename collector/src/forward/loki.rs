//! Loki's push API out: `logproto.PushRequest` (declared here from Loki's
//! `pkg/push/push.proto`), snappy block compressed, one stream per label
//! set with its entries in WAL order, the tenant in `X-Scope-OrgID`.
//! Not here: queueing or retries.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;
use vigil_common::Labels;

use super::LogItem;

pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
    /// "loki" or "otlp" (Loki's own use; left empty by clients).
    #[prost(string, tag = "2")]
    pub format: String,
}

/// `logproto.StreamAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct StreamAdapter {
    /// The label set in Prometheus's text form: `{a="b", c="d"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    pub fn from_nanos(ns: i64) -> Self {
        Timestamp {
            seconds: ns.div_euclid(1_000_000_000),
            nanos: ns.rem_euclid(1_000_000_000) as i32,
        }
    }

    pub fn as_nanos(&self) -> i64 {
        self.seconds * 1_000_000_000 + i64::from(self.nanos)
    }
}

/// `{a="b", c="d"}` with Go's string escaping, as Loki parses it.
pub fn label_string(l: &Labels) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in l.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

/// Encodes a batch (uncompressed).
pub fn encode(items: &[LogItem]) -> Vec<u8> {
    let mut index: HashMap<*const Labels, usize> = HashMap::new();
    let mut streams: Vec<StreamAdapter> = Vec::new();
    for it in items {
        let i = *index.entry(Arc::as_ptr(&it.stream)).or_insert_with(|| {
            streams.push(StreamAdapter {
                labels: label_string(&it.stream),
                entries: Vec::new(),
                hash: 0,
            });
            streams.len() - 1
        });
        streams[i].entries.push(EntryAdapter {
            timestamp: Some(Timestamp::from_nanos(it.t_ns)),
            line: it.line.to_string(),
            structured_metadata: Vec::new(),
        });
    }
    PushRequest {
        streams,
        format: String::new(),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_group_entries_in_order_and_decode() {
        let a = Arc::new(Labels::new([("node", "n1"), ("pod", "p\"q")]));
        let b = Arc::new(Labels::new([("node", "n2")]));
        let items = vec![
            LogItem {
                stream: a.clone(),
                t_ns: 1_700_000_000_123_456_789,
                line: "one".into(),
            },
            LogItem {
                stream: b,
                t_ns: -1,
                line: "two".into(),
            },
            LogItem {
                stream: a,
                t_ns: 1_700_000_001_000_000_000,
                line: "three".into(),
            },
        ];
        let r = PushRequest::decode(encode(&items).as_slice()).unwrap();
        assert_eq!(r.streams.len(), 2);
        assert_eq!(r.streams[0].labels, r#"{node="n1", pod="p\"q"}"#);
        let lines: Vec<&str> = r.streams[0]
            .entries
            .iter()
            .map(|e| e.line.as_str())
            .collect();
        assert_eq!(lines, vec!["one", "three"]);
        let ts = r.streams[0].entries[0].timestamp.unwrap();
        assert_eq!(ts.as_nanos(), 1_700_000_000_123_456_789);
        assert_eq!(r.streams[1].entries[0].timestamp.unwrap().as_nanos(), -1);
    }
}
