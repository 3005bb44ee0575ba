//! Metric family metadata (type, help, unit) as agents sent it: `/metrics`
//! prints `# HELP`/`# TYPE` from it and `/api/v1/metadata` serves it. Kept in
//! checkpoints with the rest of the collector's state.

use std::collections::BTreeMap;

use parking_lot::RwLock;
use prost::Message;
use vigil_proto::v1::MetricMetadata;

/// Most families kept; more are ignored (a bound against label-like names).
const MAX_FAMILIES: usize = 100_000;

#[derive(Default)]
pub struct Metadata {
    map: RwLock<BTreeMap<String, MetricMetadata>>,
}

#[derive(Clone, PartialEq, Message)]
struct MetadataList {
    #[prost(message, repeated, tag = "1")]
    items: Vec<MetricMetadata>,
}

impl Metadata {
    pub fn update(&self, items: &[MetricMetadata]) {
        if items.is_empty() {
            return;
        }
        let mut m = self.map.write();
        for i in items {
            if i.family.is_empty() || (m.len() >= MAX_FAMILIES && !m.contains_key(&i.family)) {
                continue;
            }
            if m.get(&i.family) != Some(i) {
                m.insert(i.family.clone(), i.clone());
            }
        }
    }

    pub fn get(&self, family: &str) -> Option<MetricMetadata> {
        self.map.read().get(family).cloned()
    }

    pub fn all(&self) -> Vec<MetricMetadata> {
        self.map.read().values().cloned().collect()
    }

    /// The Prometheus type name (`counter`, `gauge`, …) of a family.
    pub fn type_name(m: &MetricMetadata) -> &'static str {
        use vigil_proto::v1::MetricType as T;
        match T::try_from(m.r#type).unwrap_or(T::Unknown) {
            T::Counter => "counter",
            T::Gauge => "gauge",
            T::Info => "info",
            T::Histogram => "histogram",
            T::Summary => "summary",
            T::Stateset => "stateset",
            T::Unknown => "unknown",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        MetadataList { items: self.all() }.encode_to_vec()
    }

    pub fn decode_into(&self, bytes: &[u8]) -> Result<(), prost::DecodeError> {
        let l = MetadataList::decode(bytes)?;
        self.update(&l.items);
        Ok(())
    }
}
