//! PromQL compliance: the real Prometheus scrapes a deterministic exporter
//! and remote-writes every sample to an in-process vigil collector; the same
//! queries, instant and range, then run against both HTTP APIs and must give
//! the same results (values within 1e-6 relative).
//!
//! Evaluation times are kept away from sample timestamps (Prometheus 2.42
//! closes range windows on the left, 3.x — and vigil — leave them open).

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use vigil_collector::http::{AppState, router};
use vigil_collector::store::{Store, StoreOptions};
use vigil_e2e::prom::{
    Prometheus, api_get, diff_data, prometheus_binary, start_exporter, wait_ready,
};

/// Query templates; `{AT}` is replaced by an evaluation time in seconds.
const QUERIES: &[&str] = &[
    // selectors, offsets, @
    "vt_temperature_celsius",
    r#"vt_temperature_celsius{room="kitchen"}"#,
    r#"vt_temperature_celsius{room!="kitchen"}"#,
    r#"vt_temperature_celsius{room=~"k.*|g.*"}"#,
    r#"vt_temperature_celsius{room!~"k.*"}"#,
    r#"{__name__=~"vt_temp.*", floor="2"}"#,
    r#"vt_http_requests_total{code="500"}"#,
    "vt_flappy",
    "vt_temperature_celsius offset 20s",
    "vt_temperature_celsius offset -10s",
    "vt_temperature_celsius @ {AT}",
    "vt_temperature_celsius @ start()",
    "vt_temperature_celsius @ end() offset 10s",
    "up",
    "vt_negative",
    "vt_temperature_celsius[10s]",
    r#"vt_http_requests_total{method="GET"}[5s] offset 3s"#,
    "rate(vt_http_requests_total[30s])[20s:5s]",
    "vt_flappy[20s]",
    // arithmetic
    "vt_temperature_celsius + 1",
    "vt_temperature_celsius - vt_temperature_celsius offset 10s",
    "vt_temperature_celsius * 2 / 3",
    "vt_temperature_celsius % 7",
    "vt_temperature_celsius ^ 2",
    "2 ^ vt_negative",
    "-vt_temperature_celsius",
    "vt_negative / 0",
    "0 / vt_negative",
    r#"vt_temperature_celsius atan2 on() group_left vt_negative{sign="pos"}"#,
    "1 + 2 * 3 - 4 / 2",
    "2 ^ 3 ^ 2",
    "(1 + 2) % 2",
    "10 atan2 3",
    "time()",
    "pi() * 2",
    "-(-1)",
    // comparisons
    "vt_temperature_celsius > 22",
    "vt_temperature_celsius > bool 22",
    "22 < vt_temperature_celsius",
    "22 < bool vt_temperature_celsius",
    "vt_temperature_celsius == vt_temperature_celsius",
    "vt_temperature_celsius != bool 21",
    "vt_temperature_celsius >= 20 <= 25",
    "1 == bool 1",
    "2 < bool 1",
    "vt_negative <= 0",
    r#"vt_temperature_celsius{floor="1"} > on(room) vt_temperature_celsius{floor="2"}"#,
    r#"vt_temperature_celsius{floor="1"} < bool ignoring(floor) vt_temperature_celsius{floor="2"}"#,
    // vector matching
    r#"vt_temperature_celsius{floor="1"} - on(room) vt_temperature_celsius{floor="2"}"#,
    r#"vt_temperature_celsius{floor="1"} - ignoring(floor) vt_temperature_celsius{floor="2"}"#,
    "vt_http_requests_total / on(method, code, path) vt_http_requests_total offset 10s",
    r#"vt_http_requests_total * on() group_left vt_negative{sign="pos"}"#,
    "vt_request_duration_seconds_bucket / on(path) group_left vt_request_duration_seconds_count",
    "vt_request_duration_seconds_count / on(path) group_right vt_request_duration_seconds_bucket",
    "sum by (path) (rate(vt_http_requests_total[30s])) / on(path) group_right vt_http_requests_total",
    "vt_http_requests_total * on() group_left(version, build) vt_info",
    "container_memory_working_set_bytes * on(namespace, pod, container) group_left rate(container_cpu_usage_seconds_total[30s])",
    "vt_dup + on(a) vt_dup",
    "vt_dup * on() group_left vt_dup",
    "vt_temperature_celsius - on(floor) sum by (floor) (vt_temperature_celsius)",
    "vt_temperature_celsius - on(floor) group_left sum by (floor) (vt_temperature_celsius)",
    "sum by (floor) (vt_temperature_celsius) - on(floor) group_right vt_temperature_celsius",
    "vt_temperature_celsius + vt_negative",
    // set operators
    r#"vt_temperature_celsius and vt_temperature_celsius{floor="1"}"#,
    r#"vt_temperature_celsius and on(room) vt_temperature_celsius{floor="1",room="kitchen"}"#,
    "vt_temperature_celsius or vt_negative",
    r#"vt_temperature_celsius{floor="1"} or on(room) vt_temperature_celsius{floor="2"}"#,
    r#"vt_temperature_celsius unless vt_temperature_celsius{room="attic"}"#,
    r#"vt_temperature_celsius unless on(floor) vt_temperature_celsius{room="attic",floor="2"}"#,
    "vt_temperature_celsius > 22 or vt_temperature_celsius < 18",
    "vt_flappy or vector(0)",
    "vt_flappy and ignoring(id) vector(1)",
    // aggregations
    "sum(vt_temperature_celsius)",
    "sum by (floor) (vt_temperature_celsius)",
    "sum without (room) (vt_temperature_celsius)",
    "avg by (floor) (vt_temperature_celsius)",
    "min by (floor) (vt_temperature_celsius)",
    "max without (floor) (vt_temperature_celsius)",
    "count(vt_http_requests_total)",
    "count by (method) (vt_http_requests_total)",
    "group by (code) (vt_http_requests_total)",
    "group(vt_http_requests_total)",
    "stddev(vt_temperature_celsius)",
    "stdvar by (floor) (vt_temperature_celsius)",
    "topk(3, vt_temperature_celsius)",
    "bottomk by (floor) (2, vt_temperature_celsius)",
    "topk by (method) (1, rate(vt_http_requests_total[30s]))",
    "topk(0, vt_temperature_celsius)",
    "quantile(0.9, vt_temperature_celsius)",
    "quantile by (floor) (0.25, vt_temperature_celsius)",
    "quantile(0, vt_temperature_celsius)",
    "quantile(1.5, vt_temperature_celsius)",
    r#"count_values("value", vt_info)"#,
    r#"count_values by (floor) ("t", round(vt_temperature_celsius))"#,
    "sum(rate(vt_http_requests_total[30s])) by (code)",
    "avg(vt_negative)",
    "sum by (namespace) (rate(container_cpu_usage_seconds_total[1m]))",
    "topk(5, sum by (pod) (container_memory_working_set_bytes))",
    r#"sum by (__name__) ({__name__=~"vt_temperature_celsius|vt_negative"})"#,
    "count(count by (floor) (vt_temperature_celsius))",
    "max(vt_flappy)",
    "sum(vt_dup) by (a)",
    "stddev by (namespace) (container_memory_working_set_bytes)",
    "sum(vt_temperature_celsius) / count(vt_temperature_celsius)",
    // rate family and range functions
    "rate(vt_http_requests_total[30s])",
    "rate(vt_http_requests_total[5m])",
    r#"rate(vt_http_requests_total{method="PUT",code="500"}[45s])"#,
    "increase(vt_http_requests_total[1m])",
    "irate(vt_http_requests_total[10s])",
    r#"irate(vt_http_requests_total{method="PUT"}[5s])"#,
    "delta(vt_temperature_celsius[30s])",
    "idelta(vt_temperature_celsius[10s])",
    r#"increase(vt_http_requests_total{code="500"}[20s] offset 5s)"#,
    "rate(container_cpu_usage_seconds_total[5m])",
    "deriv(vt_temperature_celsius[30s])",
    "predict_linear(vt_temperature_celsius[30s], 60)",
    "changes(vt_temperature_celsius[30s])",
    "resets(vt_http_requests_total[1m])",
    "avg_over_time(vt_temperature_celsius[30s])",
    "sum_over_time(vt_temperature_celsius[20s])",
    "count_over_time(vt_flappy[1m])",
    "min_over_time(vt_temperature_celsius[30s])",
    "max_over_time(vt_temperature_celsius[30s])",
    "last_over_time(vt_flappy[1m])",
    "present_over_time(vt_flappy[30s])",
    "absent_over_time(vt_flappy[10s])",
    r#"absent_over_time(nonexistent{job="x"}[1m])"#,
    "quantile_over_time(0.75, vt_temperature_celsius[30s])",
    "stddev_over_time(vt_temperature_celsius[30s])",
    "stdvar_over_time(vt_temperature_celsius[30s])",
    "histogram_quantile(0.9, rate(vt_request_duration_seconds_bucket[30s]))",
    "histogram_quantile(0.5, sum by (le) (rate(vt_request_duration_seconds_bucket[1m])))",
    "histogram_quantile(0.99, vt_request_duration_seconds_bucket)",
    "histogram_quantile(0, vt_request_duration_seconds_bucket)",
    "histogram_quantile(1.5, vt_request_duration_seconds_bucket)",
    "histogram_quantile(0.3, vt_temperature_celsius)",
    // math
    "abs(vt_negative)",
    "ceil(vt_temperature_celsius)",
    "floor(vt_temperature_celsius)",
    "round(vt_temperature_celsius)",
    "round(vt_temperature_celsius, 0.5)",
    "exp(vt_negative)",
    "ln(vt_temperature_celsius)",
    "log2(vt_temperature_celsius)",
    "log10(vt_temperature_celsius)",
    "sqrt(vt_temperature_celsius)",
    "sgn(vt_negative)",
    "clamp(vt_temperature_celsius, 19, 23)",
    "clamp_min(vt_temperature_celsius, 21)",
    "clamp_max(vt_temperature_celsius, 21)",
    "clamp(vt_temperature_celsius, 23, 19)",
    "sin(vt_negative)",
    "cos(vt_negative)",
    "tan(vt_negative)",
    r#"asin(vt_negative{sign="zero"})"#,
    r#"acos(vt_negative{sign="pos"})"#,
    "atan(vt_temperature_celsius)",
    "sinh(vt_negative)",
    "cosh(vt_negative)",
    "tanh(vt_negative)",
    "asinh(vt_negative)",
    "acosh(vt_temperature_celsius)",
    r#"atanh(vt_negative{sign="pos"})"#,
    "deg(vt_negative)",
    "rad(vt_temperature_celsius)",
    "ln(vt_negative)",
    // time and date
    "timestamp(vt_temperature_celsius)",
    "timestamp(vt_flappy)",
    "timestamp(vt_temperature_celsius offset 10s)",
    "time() - timestamp(up)",
    "day_of_month()",
    "day_of_week()",
    "day_of_year()",
    "days_in_month()",
    "hour()",
    "minute()",
    "month()",
    "year()",
    "hour(vector(1700000000))",
    "month(timestamp(up))",
    "year(vector(0))",
    "day_of_week(vector(259200))",
    "days_in_month(vector(1706745600))",
    "day_of_year(vector(1735603200))",
    // labels
    r#"label_replace(vt_temperature_celsius, "r2", "$1-x", "room", "(.*)en")"#,
    r#"label_replace(vt_temperature_celsius, "room", "", "room", "k.*")"#,
    r#"label_replace(up, "foo", "bar", "nonexistent", "")"#,
    r#"label_replace(vt_temperature_celsius, "room", "x", "floor", ".*")"#,
    r#"label_join(vt_temperature_celsius, "fr", "/", "floor", "room")"#,
    r#"label_join(vt_info, "vb", "", "version", "build")"#,
    // misc
    "absent(vt_temperature_celsius)",
    r#"absent(nonexistent{job="x", env="y"})"#,
    r#"absent(nonexistent{job=~"x"})"#,
    "sort(vt_temperature_celsius)",
    "sort_desc(vt_temperature_celsius)",
    "sort_desc(sum by (namespace) (rate(container_cpu_usage_seconds_total[1m])))",
    r#"scalar(vt_negative{sign="pos"})"#,
    "scalar(vt_temperature_celsius)",
    "vector(1)",
    "vector(time())",
    r#"vt_temperature_celsius * scalar(vt_negative{sign="pos"})"#,
    // subqueries
    "max_over_time(rate(vt_http_requests_total[10s])[30s:5s])",
    "avg_over_time(vt_temperature_celsius[1m:10s])",
    "rate(sum(vt_http_requests_total)[30s:3s])",
    "min_over_time(vt_temperature_celsius[20s:])",
    "sum_over_time(vt_flappy[1m:2s])",
    "deriv(vt_temperature_celsius[30s:2s] offset 5s)",
    "max_over_time(vt_temperature_celsius[30s:5s] @ {AT})",
    "count_over_time((vt_temperature_celsius > 22)[1m:5s])",
    "max_over_time(deriv(vt_temperature_celsius[20s])[40s:4s])",
    // bad input
    "sum(",
    "rate(vt_temperature_celsius)",
    r#""hello""#,
    "42",
];

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// Distance between two millisecond phases on the 1-second circle.
fn phase_dist(a: i64, b: i64) -> i64 {
    let d = (a - b).rem_euclid(1000);
    d.min(1000 - d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_matches_prometheus() -> anyhow::Result<()> {
    let Some(bin) = prometheus_binary() else {
        eprintln!("SKIP: /usr/bin/prometheus not installed");
        return Ok(());
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    // vigil, in process
    let store = Arc::new(Store::new(StoreOptions::default()));
    let state = AppState::new(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ours = format!("http://{}", listener.local_addr()?);
    let app = router(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let (exporter, scrapes) = start_exporter().await?;
    let prom = Prometheus::start(&bin, exporter, &format!("{ours}/api/v1/write"))?;
    let theirs = format!("http://{}", prom.addr);
    if let Err(e) = wait_ready(
        &client,
        &format!("{theirs}/-/ready"),
        Duration::from_secs(30),
    )
    .await
    {
        panic!("{e}\n{}", prom.log());
    }

    // Collect data: ~85 scrapes at 1s.
    let collect = Duration::from_secs(85);
    tokio::time::sleep(collect).await;
    let n = scrapes.load(std::sync::atomic::Ordering::SeqCst);
    assert!(n > 50, "only {n} scrapes happened\n{}", prom.log());

    // Scrape phase from Prometheus' own sample timestamps.
    let (_, j) = api_get(
        &client,
        &theirs,
        "/api/v1/query",
        &[("query", "timestamp(up)".into())],
    )
    .await?;
    let ts = j["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no up sample: {j}"))?;
    let phase = ((ts * 1000.0).round() as i64).rem_euclid(1000);
    let offset = [250, 500, 750]
        .into_iter()
        .max_by_key(|e| phase_dist(*e, phase).min(phase_dist(*e, 0)))
        .unwrap_or(500);
    // 20 s back, so that `offset -10s` still reads delivered data.
    let eval = (now_ms() / 1000 - 20) * 1000 + offset;
    eprintln!(
        "scrapes={n} phase={phase}ms eval offset={offset}ms eval={}",
        secs(eval)
    );

    // Wait until remote write has delivered everything up to `eval`.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, j) = api_get(
            &client,
            &ours,
            "/api/v1/query",
            &[("query", "max(timestamp(up))".into())],
        )
        .await?;
        let latest = j["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
        if latest * 1000.0 > eval as f64 + 12_000.0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "remote write did not catch up: latest {latest}\n{}",
                prom.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let at = secs(eval - 30_000);
    let (start, end, step) = (eval - 60_000, eval, "5");
    let mut failures = Vec::new();
    let mut compared = 0;
    for tpl in QUERIES {
        let q = tpl.replace("{AT}", &at);
        let ordered = q.starts_with("sort");
        let reqs: [(&str, Vec<(&str, String)>); 2] = [
            (
                "/api/v1/query",
                vec![("query", q.clone()), ("time", secs(eval))],
            ),
            (
                "/api/v1/query_range",
                vec![
                    ("query", q.clone()),
                    ("start", secs(start)),
                    ("end", secs(end)),
                    ("step", step.to_string()),
                ],
            ),
        ];
        for (path, params) in reqs {
            let (sa, ja) = api_get(&client, &ours, path, &params).await?;
            let (sb, jb) = api_get(&client, &theirs, path, &params).await?;
            compared += 1;
            let kind = if path.ends_with("range") {
                "range"
            } else {
                "instant"
            };
            if ja["status"] != jb["status"] || sa != sb {
                failures.push(format!(
                    "{kind} {q}\n  status {sa} {} vs Prometheus {sb} {}\n  ours:   {}\n  theirs: {}",
                    ja["status"], jb["status"], ja, jb
                ));
                continue;
            }
            if jb["status"] == "error" {
                if ja["errorType"] != jb["errorType"] {
                    failures.push(format!(
                        "{kind} {q}\n  errorType {} vs {}\n  ours:   {}\n  theirs: {}",
                        ja["errorType"], jb["errorType"], ja["error"], jb["error"]
                    ));
                } else if jb["errorType"] == "execution" && ja["error"] != jb["error"] {
                    failures.push(format!(
                        "{kind} {q}\n  error message differs\n  ours:   {}\n  theirs: {}",
                        ja["error"], jb["error"]
                    ));
                }
                continue;
            }
            let d = diff_data(&ja["data"], &jb["data"], ordered);
            if !d.is_empty() {
                failures.push(format!("{kind} {q}\n  {}", d.join("\n  ")));
            }
        }
    }
    eprintln!("compared {compared} responses ({} queries)", QUERIES.len());
    drop(prom);
    assert!(
        failures.is_empty(),
        "{} of {compared} comparisons differ from Prometheus:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    Ok(())
}
