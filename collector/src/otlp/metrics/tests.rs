use super::*;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
    summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource as PbResource;
use proptest::prelude::*;

const NOW: i64 = 1_700_000_000_000_000_000;
const T: u64 = (NOW - 60_000_000_000) as u64;
const T_MS: i64 = (NOW - 60_000_000_000) / 1_000_000;

fn s(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn resource() -> Vec<KeyValue> {
    vec![
        s("service.name", "shop"),
        s("service.namespace", "prod"),
        s("service.instance.id", "i-1"),
        s("host.name", "h1"),
    ]
}

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(PbResource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        description: format!("about {name}"),
        data: Some(data),
        ..Default::default()
    }
}

fn number(t: u64, attrs: Vec<KeyValue>, v: number_data_point::Value) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        time_unix_nano: t,
        value: Some(v),
        ..Default::default()
    }
}

fn sum(monotonic: bool, temporality: AggregationTemporality, points: Vec<NumberDataPoint>) -> Data {
    Data::Sum(Sum {
        data_points: points,
        aggregation_temporality: temporality as i32,
        is_monotonic: monotonic,
    })
}

/// The translated series as `labels => [(t, v)]` strings, sorted.
fn render(t: &Translated) -> Vec<String> {
    let mut v: Vec<String> = t.series.iter().map(|(l, s)| format!("{l} {s:?}")).collect();
    v.sort();
    v
}

#[test]
fn counters_gauges_and_target_info() {
    let req = request(
        resource(),
        vec![
            metric(
                "http.requests",
                "{request}",
                sum(
                    true,
                    AggregationTemporality::Cumulative,
                    vec![number(
                        T,
                        vec![s("http.method", "GET")],
                        number_data_point::Value::AsInt(7),
                    )],
                ),
            ),
            metric(
                "cpu.utilization",
                "1",
                Data::Gauge(Gauge {
                    data_points: vec![number(T, vec![], number_data_point::Value::AsDouble(0.25))],
                }),
            ),
            metric(
                "queue.depth",
                "By",
                sum(
                    false,
                    AggregationTemporality::Cumulative,
                    vec![number(T, vec![], number_data_point::Value::AsInt(-3))],
                ),
            ),
        ],
    );
    let out = translate(req, &PushLimits::default(), NOW);
    assert!(out.refusals.is_empty(), "{:?}", out.refusals);
    assert_eq!(out.points, 3);
    let id = r#"instance="i-1",job="prod/shop""#;
    assert_eq!(
        render(&out),
        vec![
            format!(r#"cpu_utilization_ratio{{{id}}} [({T_MS}, 0.25)]"#),
            format!(r#"http_requests_total{{http_method="GET",{id}}} [({T_MS}, 7.0)]"#),
            format!(r#"queue_depth_bytes{{{id}}} [({T_MS}, -3.0)]"#),
            format!(r#"target_info{{host_name="h1",{id}}} [({T_MS}, 1.0)]"#),
        ]
    );
    let md: Vec<(String, i32, String, String)> = out
        .metadata
        .iter()
        .map(|m| (m.family.clone(), m.r#type, m.help.clone(), m.unit.clone()))
        .collect();
    assert_eq!(
        md,
        vec![
            (
                "http_requests_total".into(),
                pb::MetricType::Counter as i32,
                "about http.requests".into(),
                "".into()
            ),
            (
                "cpu_utilization_ratio".into(),
                pb::MetricType::Gauge as i32,
                "about cpu.utilization".into(),
                "".into()
            ),
            (
                "queue_depth_bytes".into(),
                pb::MetricType::Gauge as i32,
                "about queue.depth".into(),
                "bytes".into()
            ),
        ]
    );
}

#[test]
fn histograms_become_cumulative_buckets() {
    let h = Data::Histogram(Histogram {
        data_points: vec![HistogramDataPoint {
            attributes: vec![s("route", "/a")],
            time_unix_nano: T,
            count: 10,
            sum: Some(4.5),
            bucket_counts: vec![2, 3, 4, 1],
            explicit_bounds: vec![0.1, 0.5, 1.0],
            ..Default::default()
        }],
        aggregation_temporality: AggregationTemporality::Cumulative as i32,
    });
    let out = translate(
        request(
            vec![s("service.name", "api")],
            vec![metric("rpc.duration", "s", h)],
        ),
        &PushLimits::default(),
        NOW,
    );
    assert!(out.refusals.is_empty(), "{:?}", out.refusals);
    let b = |le: &str, v: f64| {
        format!(
            r#"rpc_duration_seconds_bucket{{job="api",le="{le}",route="/a"}} [({T_MS}, {v:?})]"#
        )
    };
    assert_eq!(
        render(&out),
        vec![
            b("+Inf", 10.0),
            b("0.1", 2.0),
            b("0.5", 5.0),
            b("1", 9.0),
            format!(r#"rpc_duration_seconds_count{{job="api",route="/a"}} [({T_MS}, 10.0)]"#),
            format!(r#"rpc_duration_seconds_sum{{job="api",route="/a"}} [({T_MS}, 4.5)]"#),
        ]
    );
    // only service.name: no target_info
    assert_eq!(out.metadata[0].family, "rpc_duration_seconds");
    assert_eq!(out.metadata[0].r#type, pb::MetricType::Histogram as i32);
}

#[test]
fn summaries_and_staleness() {
    let q = |quantile, value| ValueAtQuantile { quantile, value };
    let data = Data::Summary(Summary {
        data_points: vec![SummaryDataPoint {
            time_unix_nano: T,
            count: 4,
            sum: 2.0,
            quantile_values: vec![q(0.5, 0.4), q(0.99, 0.9)],
            ..Default::default()
        }],
    });
    let stale = Data::Gauge(Gauge {
        data_points: vec![NumberDataPoint {
            time_unix_nano: T,
            flags: 1,
            value: Some(number_data_point::Value::AsDouble(5.0)),
            ..Default::default()
        }],
    });
    let out = translate(
        request(
            vec![s("service.name", "x")],
            vec![metric("gc.pause", "ms", data), metric("g", "", stale)],
        ),
        &PushLimits::default(),
        NOW,
    );
    let names: Vec<String> = render(&out)
        .into_iter()
        .map(|l| l.split(' ').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        names,
        vec![
            r#"gc_pause_milliseconds_count{job="x"}"#,
            r#"gc_pause_milliseconds_sum{job="x"}"#,
            r#"gc_pause_milliseconds{job="x",quantile="0.5"}"#,
            r#"gc_pause_milliseconds{job="x",quantile="0.99"}"#,
            r#"g{job="x"}"#,
        ]
    );
    let g = out
        .series
        .iter()
        .find(|(l, _)| l.metric_name() == Some("g"))
        .unwrap();
    assert!(crate::store::is_stale(g.1[0].1));
    let q99 = out
        .series
        .iter()
        .find(|(l, _)| l.get("quantile") == Some("0.99"))
        .unwrap();
    assert_eq!(q99.1, vec![(T_MS, 0.9)]);
}

#[test]
fn refusals_are_counted_per_point_and_the_rest_is_kept() {
    let ok = metric(
        "ok",
        "",
        Data::Gauge(Gauge {
            data_points: vec![number(T, vec![], number_data_point::Value::AsInt(1))],
        }),
    );
    let delta = metric(
        "d",
        "",
        sum(
            true,
            AggregationTemporality::Delta,
            vec![
                number(T, vec![], number_data_point::Value::AsInt(1)),
                number(T, vec![], number_data_point::Value::AsInt(2)),
            ],
        ),
    );
    let unspecified = metric(
        "u",
        "",
        sum(
            true,
            AggregationTemporality::Unspecified,
            vec![number(T, vec![], number_data_point::Value::AsInt(1))],
        ),
    );
    let exp = metric(
        "e",
        "",
        Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint::default()],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
    );
    let empty = Metric {
        name: "empty".into(),
        ..Default::default()
    };
    let bad_name = metric(
        "...",
        "",
        Data::Gauge(Gauge {
            data_points: vec![number(T, vec![], number_data_point::Value::AsInt(1))],
        }),
    );
    let window = metric(
        "w",
        "",
        Data::Gauge(Gauge {
            data_points: vec![
                number(1, vec![], number_data_point::Value::AsInt(1)),
                number(
                    (NOW + 3_600_000_000_000) as u64,
                    vec![],
                    number_data_point::Value::AsInt(1),
                ),
                number(
                    T,
                    vec![s("", "no name")],
                    number_data_point::Value::AsInt(1),
                ),
                number(
                    T,
                    vec![s("a", &"x".repeat(5000))],
                    number_data_point::Value::AsInt(1),
                ),
            ],
        }),
    );
    let out = translate(
        request(
            vec![s("service.name", "x")],
            vec![ok, delta, unspecified, exp, empty, bad_name, window],
        ),
        &PushLimits::default(),
        NOW,
    );
    let c = &out.refusals.counts;
    assert_eq!(c[&Reason::DeltaTemporality], 2);
    assert_eq!(c[&Reason::UnspecifiedTemporality], 1);
    assert_eq!(c[&Reason::ExponentialHistogram], 1);
    assert_eq!(c[&Reason::EmptyMetric], 1);
    assert_eq!(c[&Reason::InvalidName], 2);
    assert_eq!(c[&Reason::TooOld], 1);
    assert_eq!(c[&Reason::TooNew], 1);
    assert_eq!(c[&Reason::LabelValueTooLong], 1);
    assert_eq!(out.refusals.total(), 10);
    assert!(
        out.refusals
            .message()
            .contains("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=cumulative"),
        "{}",
        out.refusals.message()
    );
    assert_eq!(
        render(&out),
        vec![format!(r#"ok{{job="x"}} [({T_MS}, 1.0)]"#)]
    );
    assert_eq!(out.points, 1);
}

#[test]
fn colliding_attributes_join_and_job_wins() {
    let g = metric(
        "g",
        "",
        Data::Gauge(Gauge {
            data_points: vec![number(
                T,
                vec![s("a.b", "1"), s("a_b", "2"), s("job", "mine")],
                number_data_point::Value::AsInt(1),
            )],
        }),
    );
    let out = translate(
        request(vec![s("service.name", "svc")], vec![g]),
        &PushLimits::default(),
        NOW,
    );
    assert_eq!(
        render(&out),
        vec![format!(r#"g{{a_b="1;2",job="svc"}} [({T_MS}, 1.0)]"#)]
    );
    // without service.name the attribute stays
    let g = metric(
        "g",
        "",
        Data::Gauge(Gauge {
            data_points: vec![number(
                T,
                vec![s("job", "mine")],
                number_data_point::Value::AsInt(1),
            )],
        }),
    );
    let out = translate(request(vec![], vec![g]), &PushLimits::default(), NOW);
    assert_eq!(
        render(&out),
        vec![format!(r#"g{{job="mine"}} [({T_MS}, 1.0)]"#)]
    );
}

#[test]
fn target_info_covers_the_span_of_points() {
    let pts = [0u64, 400, 600]
        .iter()
        .map(|s| {
            number(
                T + s * 1_000_000_000,
                vec![],
                number_data_point::Value::AsInt(1),
            )
        })
        .collect();
    let out = translate(
        request(
            resource(),
            vec![metric("g", "", Data::Gauge(Gauge { data_points: pts }))],
        ),
        &PushLimits::default(),
        NOW,
    );
    let ti = out
        .series
        .iter()
        .find(|(l, _)| l.metric_name() == Some("target_info"))
        .unwrap();
    let ts: Vec<i64> = ti.1.iter().map(|p| (p.0 - T_MS) / 1000).collect();
    assert_eq!(ts, vec![0, 150, 300, 450, 600]);
}

#[test]
fn label_limits_apply_to_the_largest_series() {
    let limits = PushLimits {
        series: crate::limits::SeriesLimits {
            max_label_names: 3,
            ..Default::default()
        },
        ..Default::default()
    };
    let h = Data::Histogram(Histogram {
        data_points: vec![HistogramDataPoint {
            attributes: vec![s("a", "1")],
            time_unix_nano: T,
            count: 1,
            ..Default::default()
        }],
        aggregation_temporality: AggregationTemporality::Cumulative as i32,
    });
    // job + a + __name__ + le = 4 > 3
    let out = translate(
        request(vec![s("service.name", "x")], vec![metric("h", "", h)]),
        &limits,
        NOW,
    );
    assert_eq!(out.refusals.counts[&Reason::TooManyLabels], 1);
    assert!(out.series.is_empty());
}

proptest! {
    #[test]
    fn arbitrary_requests_never_panic(body in proptest::collection::vec(any::<u8>(), 0..1024)) {
        if let Ok(r) = <ExportMetricsServiceRequest as prost::Message>::decode(body.as_slice()) {
            let _ = translate(r, &PushLimits::default(), NOW);
        }
        let _ = serde_json::from_slice::<ExportMetricsServiceRequest>(&body);
    }

    #[test]
    fn arbitrary_points_never_panic(
        t in any::<u64>(),
        bounds in proptest::collection::vec(any::<f64>(), 0..6),
        counts in proptest::collection::vec(any::<u64>(), 0..8),
        count in any::<u64>(),
        name in ".{0,20}",
        unit in ".{0,6}",
        key in ".{0,10}",
    ) {
        let h = Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: vec![s(&key, "v")],
                time_unix_nano: t,
                count,
                sum: Some(1.0),
                bucket_counts: counts,
                explicit_bounds: bounds,
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        });
        let out = translate(request(resource(), vec![metric(&name, &unit, h)]), &PushLimits::default(), NOW);
        for (l, _) in &out.series {
            prop_assert!(l.iter().all(|(k, _)| vigil_common::labels::valid_label_name(k)), "{}",l);
        }
    }
}
