//! OTLP/HTTP export requests as `POST /v1/metrics` and `POST /v1/logs`
//! take them: the body (gzip or none) decoded as protobuf or JSON, then
//! translated to series and log lines (names and units, attributes to
//! labels, histograms and summaries to buckets, temporality, limits and the
//! timestamp window). The first byte picks the signal, the format and
//! whether the target gzips the rest (so mutations reach the decoders).
//! Properties: no panic; every translated series has a metric name and
//! valid label names, and every log line a non-empty stream.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_collector::http::otlp::{Format, decode};
use vigil_collector::push::{PushLimits, decode_body};
use vigil_common::labels::valid_label_name;
use vigil_fuzz::T0_MS;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let format = if sel & 2 == 0 {
        Format::Protobuf
    } else {
        Format::Json
    };
    let mut body = rest.to_vec();
    let encoding = if sel & 4 != 0 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&body).expect("gzip");
        body = gz.finish().expect("gzip");
        Some("gzip")
    } else {
        None
    };
    let limits = PushLimits {
        max_body_bytes: 1 << 20,
        max_line_bytes: 256,
        ..Default::default()
    };
    let Ok(raw) = decode_body(body.into(), encoding, limits.max_body_bytes) else {
        return;
    };
    let now_ns = T0_MS * 1_000_000;
    if sel & 1 == 0 {
        let Ok(req) = decode::<ExportMetricsServiceRequest>(format, &raw) else {
            return;
        };
        let t = vigil_collector::otlp::metrics::translate(req, &limits, now_ns);
        for (labels, _) in &t.series {
            assert!(
                labels.metric_name().is_some_and(|n| !n.is_empty()),
                "no name: {labels}"
            );
            assert!(
                labels.iter().all(|(k, _)| valid_label_name(k)),
                "label name: {labels}"
            );
        }
    } else {
        let Ok(req) = decode::<ExportLogsServiceRequest>(format, &raw) else {
            return;
        };
        let t = vigil_collector::otlp::logs::translate(req, &limits, now_ns);
        for l in &t.logs {
            assert!(!l.stream.is_empty());
        }
    }
});
