//! OpenTelemetry (OTLP) in: metrics and logs exported by OpenTelemetry SDKs
//! and collectors, over gRPC ([`grpc`], on the collector's gRPC port) and
//! HTTP (`http::otlp`, `POST /v1/metrics` and `POST /v1/logs`).
//!
//! - [`metrics`] translates metrics as Prometheus's OTLP receiver does
//!   (names by [`names`], resource attributes to `job`/`instance` and
//!   `target_info`, histograms to classic buckets); delta temporality and
//!   exponential histograms are refused, per data point, with a reason.
//! - [`logs`] turns log records into log lines of the log store, with
//!   resource attributes as stream labels the way Loki's OTLP endpoint does.
//! - [`export_metrics`] / [`export_logs`] are what both transports call: translate,
//!   make durable ([`crate::ingest::push`]), count, and say what was refused
//!   (OTLP's partial success).
//!
//! Not here: the HTTP/gRPC framing, and traces (not accepted).

pub mod grpc;
pub mod logs;
pub mod metrics;
pub mod names;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

use crate::ingest::push::{PushError, PushIngest};
use crate::push::{Protocol, Signal, now_ns};

/// What a push refused while the rest was accepted (OTLP's
/// `partial_success`); `rejected == 0` means everything was accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartialSuccess {
    pub rejected: i64,
    pub message: String,
}

/// Translates, makes durable and counts an OTLP metrics export.
pub async fn export_metrics(
    push: &PushIngest,
    protocol: Protocol,
    req: ExportMetricsServiceRequest,
) -> Result<PartialSuccess, PushError> {
    let limits = push.limits.clone();
    let out = tokio::task::spawn_blocking(move || metrics::translate(req, &limits, now_ns()))
        .await
        .map_err(|e| PushError::Unavailable(format!("translation task: {e}")))?;
    push.metrics
        .refuse(protocol, Signal::Metrics, &out.refusals);
    if (!out.series.is_empty() || !out.metadata.is_empty())
        && let Err(e) = push.write_samples(protocol, out.series, out.metadata).await
    {
        push.metrics
            .refuse_request(protocol, Signal::Metrics, crate::push::Reason::Unavailable);
        return Err(e);
    }
    Ok(PartialSuccess {
        rejected: out.refusals.total() as i64,
        message: out.refusals.message(),
    })
}

/// Translates, makes durable and counts an OTLP logs export.
pub async fn export_logs(
    push: &PushIngest,
    protocol: Protocol,
    req: ExportLogsServiceRequest,
) -> Result<PartialSuccess, PushError> {
    let limits = push.limits.clone();
    let out = tokio::task::spawn_blocking(move || logs::translate(req, &limits, now_ns()))
        .await
        .map_err(|e| PushError::Unavailable(format!("translation task: {e}")))?;
    push.metrics.refuse(protocol, Signal::Logs, &out.refusals);
    if !out.logs.is_empty()
        && let Err(e) = push.write_logs(protocol, out.logs).await
    {
        push.metrics
            .refuse_request(protocol, Signal::Logs, crate::push::Reason::Unavailable);
        return Err(e);
    }
    Ok(PartialSuccess {
        rejected: out.refusals.total() as i64,
        message: out.refusals.message(),
    })
}

/// An attribute value as a string, as the OpenTelemetry collector's
/// `pcommon.Value.AsString` writes it (which Prometheus and Loki use):
/// numbers in JavaScript notation, bytes in base64, arrays and maps as JSON.
pub fn value_string(v: Option<&AnyValue>) -> String {
    use any_value::Value as V;
    match v.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(V::StringValue(s)) => s.clone(),
        Some(V::BoolValue(b)) => b.to_string(),
        Some(V::IntValue(i)) => i.to_string(),
        Some(V::DoubleValue(f)) => float_string(*f),
        Some(V::BytesValue(b)) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(b)
        }
        Some(V::ArrayValue(_)) | Some(V::KvlistValue(_)) => {
            json_value(v.and_then(|v| v.value.as_ref())).to_string()
        }
        // a reference into a dictionary only profiles use
        Some(V::StringValueStrindex(_)) => String::new(),
    }
}

/// ES6 number notation: shortest round-trip digits, exponent form below
/// 1e-6 and from 1e21 (`1e+21`, `1e-7`).
fn float_string(f: f64) -> String {
    if f.is_nan() {
        return "json: unsupported value: NaN".into();
    }
    if f.is_infinite() {
        return format!(
            "json: unsupported value: {}",
            if f > 0.0 { "+Inf" } else { "-Inf" }
        );
    }
    let a = f.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    } else {
        format!("{f}")
    }
}

fn json_value(v: Option<&any_value::Value>) -> serde_json::Value {
    use any_value::Value as V;
    use serde_json::Value as J;
    match v {
        None | Some(V::StringValueStrindex(_)) => J::Null,
        Some(V::StringValue(s)) => J::String(s.clone()),
        Some(V::BoolValue(b)) => J::Bool(*b),
        Some(V::IntValue(i)) => J::from(*i),
        Some(V::DoubleValue(f)) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or(J::Null),
        Some(V::BytesValue(b)) => {
            use base64::Engine as _;
            J::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(V::ArrayValue(a)) => J::Array(
            a.values
                .iter()
                .map(|x| json_value(x.value.as_ref()))
                .collect(),
        ),
        Some(V::KvlistValue(kv)) => {
            let mut pairs: Vec<(&str, serde_json::Value)> = kv
                .values
                .iter()
                .map(|p| {
                    (
                        p.key.as_str(),
                        json_value(p.value.as_ref().and_then(|v| v.value.as_ref())),
                    )
                })
                .collect();
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            let mut m = serde_json::Map::new();
            for (k, v) in pairs {
                m.insert(k.to_string(), v);
            }
            J::Object(m)
        }
    }
}

/// The value of attribute `key`, if present.
pub fn attribute<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a KeyValue> {
    attrs.iter().find(|kv| kv.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: any_value::Value) -> AnyValue {
        AnyValue { value: Some(x) }
    }

    #[test]
    fn values_print_as_the_collector_does() {
        use any_value::Value as V;
        assert_eq!(value_string(Some(&v(V::StringValue("a b".into())))), "a b");
        assert_eq!(value_string(Some(&v(V::IntValue(-42)))), "-42");
        assert_eq!(value_string(Some(&v(V::BoolValue(true)))), "true");
        assert_eq!(value_string(Some(&v(V::DoubleValue(0.5)))), "0.5");
        assert_eq!(value_string(Some(&v(V::DoubleValue(3.0)))), "3");
        assert_eq!(value_string(Some(&v(V::DoubleValue(1e21)))), "1e+21");
        assert_eq!(value_string(Some(&v(V::DoubleValue(1.5e-7)))), "1.5e-7");
        assert_eq!(
            value_string(Some(&v(V::DoubleValue(123456789.0)))),
            "123456789"
        );
        assert_eq!(value_string(Some(&v(V::BytesValue(vec![1, 2, 3])))), "AQID");
        let kv = |k: &str, x| KeyValue {
            key: k.into(),
            value: Some(v(x)),
            ..Default::default()
        };
        let map = V::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList {
            values: vec![kv("z", V::IntValue(1)), kv("a", V::StringValue("x".into()))],
        });
        assert_eq!(value_string(Some(&v(map))), r#"{"a":"x","z":1}"#);
        assert_eq!(value_string(None), "");
    }
}
