//! OTLP/HTTP out (protobuf, `opentelemetry-proto`'s messages): samples as
//! `ExportMetricsServiceRequest`, log records as `ExportLogsServiceRequest`.
//!
//! Mapping, the inverse of Prometheus's OTLP translator where one exists:
//! a series' `job` and `instance` become the resource's `service.name` and
//! `service.instance.id`; the metric name is `__name__`; the other labels
//! are data point attributes; a family whose metadata says counter is a
//! cumulative monotonic Sum, everything else a Gauge (vigil stores floats
//! only: no histograms); a staleness marker is a point with the
//! `NO_RECORDED_VALUE` flag. A log stream's labels become resource
//! attributes under the Kubernetes semantic conventions where they have one
//! (`k8s.namespace.name`, `k8s.pod.name`, `k8s.container.name`,
//! `k8s.node.name`, `container.id`, `container.name`); `stream` becomes the
//! record attribute `log.iostream`. Not here: queueing or retries.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use vigil_common::Labels;

use super::{LogItem, SampleItem};
use crate::metadata::Metadata;
use crate::store::STALE_NAN;

pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
const NO_RECORDED_VALUE: u32 = 1;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        }),
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "vigil-collector".into(),
        version: crate::VERSION.into(),
        ..Default::default()
    }
}

/// Encodes samples as an `ExportMetricsServiceRequest`.
pub fn encode_metrics(items: &[SampleItem], md: &Metadata) -> Vec<u8> {
    // resource (job, instance) → metric name → points
    type ByResource = ((String, String), Vec<Metric>, HashMap<String, usize>);
    let mut resources: Vec<ByResource> = Vec::new();
    let mut res_index: HashMap<(String, String), usize> = HashMap::new();
    let mut counter_cache: HashMap<String, bool> = HashMap::new();
    for it in items {
        let l: &Labels = &it.series;
        let job = l.get("job").unwrap_or_default().to_string();
        let instance = l.get("instance").unwrap_or_default().to_string();
        let name = l.metric_name().unwrap_or_default().to_string();
        let ri = *res_index
            .entry((job.clone(), instance.clone()))
            .or_insert_with(|| {
                resources.push(((job, instance), Vec::new(), HashMap::new()));
                resources.len() - 1
            });
        let (_, metrics, by_name) = &mut resources[ri];
        let is_counter = *counter_cache.entry(name.clone()).or_insert_with(|| {
            let family = name.strip_suffix("_total").unwrap_or(&name);
            md.get(family)
                .or_else(|| md.get(&name))
                .is_some_and(|m| Metadata::type_name(&m) == "counter")
        });
        let mi = *by_name.entry(name.clone()).or_insert_with(|| {
            let meta = md.get(name.strip_suffix("_total").unwrap_or(&name));
            metrics.push(Metric {
                name: name.clone(),
                description: meta.as_ref().map(|m| m.help.clone()).unwrap_or_default(),
                unit: meta.as_ref().map(|m| m.unit.clone()).unwrap_or_default(),
                data: Some(if is_counter {
                    metric::Data::Sum(Sum {
                        data_points: Vec::new(),
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })
                } else {
                    metric::Data::Gauge(Gauge {
                        data_points: Vec::new(),
                    })
                }),
                ..Default::default()
            });
            metrics.len() - 1
        });
        let stale = it.v.to_bits() == STALE_NAN.to_bits();
        let point = NumberDataPoint {
            attributes: l
                .iter()
                .filter(|(k, _)| !matches!(*k, "__name__" | "job" | "instance"))
                .map(|(k, v)| kv(k, v))
                .collect(),
            time_unix_nano: (it.t.max(0) as u64).saturating_mul(1_000_000),
            flags: if stale { NO_RECORDED_VALUE } else { 0 },
            value: (!stale).then_some(number_data_point::Value::AsDouble(it.v)),
            ..Default::default()
        };
        match &mut metrics[mi].data {
            Some(metric::Data::Sum(s)) => s.data_points.push(point),
            Some(metric::Data::Gauge(g)) => g.data_points.push(point),
            _ => {}
        }
    }
    ExportMetricsServiceRequest {
        resource_metrics: resources
            .into_iter()
            .map(|((job, instance), metrics, _)| {
                let mut attrs = Vec::new();
                if !job.is_empty() {
                    attrs.push(kv("service.name", &job));
                }
                if !instance.is_empty() {
                    attrs.push(kv("service.instance.id", &instance));
                }
                ResourceMetrics {
                    resource: Some(Resource {
                        attributes: attrs,
                        ..Default::default()
                    }),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(scope()),
                        metrics,
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            })
            .collect(),
    }
    .encode_to_vec()
}

/// The resource attribute name of a stream label.
fn resource_key(label: &str) -> &str {
    match label {
        "namespace" => "k8s.namespace.name",
        "pod" => "k8s.pod.name",
        "container" => "k8s.container.name",
        "node" => "k8s.node.name",
        "container_id" => "container.id",
        "container_name" => "container.name",
        other => other,
    }
}

/// Encodes log records as an `ExportLogsServiceRequest`.
pub fn encode_logs(items: &[LogItem]) -> Vec<u8> {
    let mut index: HashMap<*const Labels, usize> = HashMap::new();
    let mut out: Vec<ResourceLogs> = Vec::new();
    for it in items {
        let i = *index.entry(Arc::as_ptr(&it.stream)).or_insert_with(|| {
            out.push(ResourceLogs {
                resource: Some(Resource {
                    attributes: it
                        .stream
                        .iter()
                        .filter(|(k, _)| *k != "stream")
                        .map(|(k, v)| kv(resource_key(k), v))
                        .collect(),
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope()),
                    ..Default::default()
                }],
                ..Default::default()
            });
            out.len() - 1
        });
        let t = it.t_ns.max(0) as u64;
        out[i].scope_logs[0].log_records.push(LogRecord {
            time_unix_nano: t,
            observed_time_unix_nano: t,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(it.line.to_string())),
            }),
            attributes: it
                .stream
                .get("stream")
                .map(|s| vec![kv("log.iostream", s)])
                .unwrap_or_default(),
            ..Default::default()
        });
    }
    ExportLogsServiceRequest { resource_logs: out }.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_decode_with_the_protocol_schema() {
        let md = Metadata::default();
        md.update(&[vigil_proto::v1::MetricMetadata {
            family: "req".into(),
            r#type: vigil_proto::v1::MetricType::Counter as i32,
            help: "Requests.".into(),
            unit: String::new(),
        }]);
        let a = Arc::new(Labels::new([
            ("__name__", "req_total"),
            ("job", "api"),
            ("instance", "h:1"),
            ("code", "200"),
        ]));
        let b = Arc::new(Labels::new([
            ("__name__", "temp"),
            ("job", "api"),
            ("instance", "h:1"),
        ]));
        let items = vec![
            SampleItem {
                series: a.clone(),
                t: 1_000,
                v: 5.0,
            },
            SampleItem {
                series: b,
                t: 1_000,
                v: 20.5,
            },
            SampleItem {
                series: a,
                t: 2_000,
                v: STALE_NAN,
            },
        ];
        let r =
            ExportMetricsServiceRequest::decode(encode_metrics(&items, &md).as_slice()).unwrap();
        assert_eq!(r.resource_metrics.len(), 1);
        let rm = &r.resource_metrics[0];
        let attrs: Vec<(&str, String)> = rm
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|k| (k.key.as_str(), format!("{:?}", k.value)))
            .collect();
        assert_eq!(attrs[0].0, "service.name");
        let metrics = &rm.scope_metrics[0].metrics;
        assert_eq!(metrics[0].name, "req_total");
        assert_eq!(metrics[0].description, "Requests.");
        let Some(metric::Data::Sum(s)) = &metrics[0].data else {
            panic!("not a sum")
        };
        assert!(s.is_monotonic);
        assert_eq!(s.data_points.len(), 2);
        assert_eq!(s.data_points[0].time_unix_nano, 1_000_000_000);
        assert_eq!(
            s.data_points[0].value,
            Some(number_data_point::Value::AsDouble(5.0))
        );
        assert_eq!(s.data_points[0].attributes[0].key, "code");
        assert_eq!(s.data_points[1].flags, NO_RECORDED_VALUE);
        assert_eq!(s.data_points[1].value, None);
        assert!(matches!(metrics[1].data, Some(metric::Data::Gauge(_))));
    }

    #[test]
    fn logs_decode_with_the_protocol_schema() {
        let s = Arc::new(Labels::new([
            ("namespace", "ns"),
            ("pod", "p"),
            ("stream", "stderr"),
            ("node", "n"),
        ]));
        let items = vec![LogItem {
            stream: s,
            t_ns: 1_700_000_000_000_000_001,
            line: "boom".into(),
        }];
        let r = ExportLogsServiceRequest::decode(encode_logs(&items).as_slice()).unwrap();
        let rl = &r.resource_logs[0];
        let keys: Vec<&str> = rl
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|k| k.key.as_str())
            .collect();
        assert_eq!(
            keys,
            vec!["k8s.namespace.name", "k8s.node.name", "k8s.pod.name"]
        );
        let rec = &rl.scope_logs[0].log_records[0];
        assert_eq!(rec.time_unix_nano, 1_700_000_000_000_000_001);
        assert_eq!(rec.attributes[0].key, "log.iostream");
        assert_eq!(
            rec.body.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("boom".into()))
        );
    }
}
