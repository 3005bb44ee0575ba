//! Dashboard query latency, vigil against the real Prometheus, on the same
//! 100,000 series pushed to both through remote write. Both are queried over
//! HTTP the way Grafana does (form-encoded POST). Skips when
//! `/usr/bin/prometheus` is missing. Run with
//! `cargo bench -p vigil-collector --bench promql_vs_prometheus`.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_collector::http::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use vigil_collector::http::{AppState, router};
use vigil_collector::store::{Store, StoreOptions};

const SERIES: usize = 100_000;
const SAMPLES: i64 = 61;
const STEP_MS: i64 = 10_000;
const RUNS: usize = 15;

fn series(i: usize, t_end: i64) -> TimeSeries {
    let pod = i / 4;
    let l = |n: &str, v: String| Label {
        name: n.to_string(),
        value: v,
    };
    let rate = 0.01 + (i % 97) as f64 * 0.003;
    TimeSeries {
        labels: vec![
            l("__name__", "container_cpu_usage_seconds_total".into()),
            l("container", format!("c{}", i % 4)),
            l("namespace", format!("ns-{}", pod % 50)),
            l("node", format!("node-{}", pod % 100)),
            l("pod", format!("pod-{pod}")),
        ],
        samples: (0..SAMPLES)
            .map(|k| Sample {
                value: 1000.0 + rate * (k * 10) as f64,
                timestamp: t_end - (SAMPLES - 1 - k) * STEP_MS,
            })
            .collect(),
    }
}

async fn push(client: &reqwest::Client, url: &str, t_end: i64) -> anyhow::Result<()> {
    for chunk in (0..SERIES).collect::<Vec<_>>().chunks(2_000) {
        let req = WriteRequest {
            timeseries: chunk.iter().map(|&i| series(i, t_end)).collect(),
            metadata: vec![],
        };
        let body = snap::raw::Encoder::new().compress_vec(&prost::Message::encode_to_vec(&req))?;
        let r = client
            .post(url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "{url}: {} {}",
            r.status(),
            r.text().await?
        );
    }
    Ok(())
}

async fn time_query(
    client: &reqwest::Client,
    base: &str,
    params: &[(&str, String)],
) -> anyhow::Result<Duration> {
    let path = if params.iter().any(|(k, _)| *k == "step") {
        "query_range"
    } else {
        "query"
    };
    let t = Instant::now();
    let r = client
        .post(format!("{base}/api/v1/{path}"))
        .form(params)
        .send()
        .await?;
    let status = r.status();
    let body = r.text().await?;
    let el = t.elapsed();
    anyhow::ensure!(
        status.is_success() && body.contains("\"success\""),
        "{base}: {status} {body}"
    );
    Ok(el)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let bin = std::path::Path::new("/usr/bin/prometheus");
    if !bin.exists() {
        println!("SKIP: /usr/bin/prometheus not installed");
        return Ok(());
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;

    let store = Arc::new(Store::new(StoreOptions::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ours = format!("http://{}", listener.local_addr()?);
    let app = router(AppState::new(store));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    std::fs::write(dir.path().join("p.yml"), "global:\n  scrape_interval: 1m\n")?;
    let mut child = Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.path().join("p.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let theirs = format!("http://127.0.0.1:{port}");
    let result = run(&client, &ours, &theirs).await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

async fn run(client: &reqwest::Client, ours: &str, theirs: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("{theirs}/-/ready"))
        .send()
        .await
        .map(|r| r.status().is_success())
        .ok()
        != Some(true)
    {
        anyhow::ensure!(Instant::now() < deadline, "prometheus not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = vigil_common::time::now_ms();
    let t_end = now / STEP_MS * STEP_MS - STEP_MS;
    let t = Instant::now();
    push(client, &format!("{ours}/api/v1/write"), t_end).await?;
    let ours_push = t.elapsed();
    let t = Instant::now();
    push(client, &format!("{theirs}/api/v1/write"), t_end).await?;
    let theirs_push = t.elapsed();
    let total = (SERIES as i64 * SAMPLES) as f64;
    println!(
        "remote-write ingest of {SERIES} series x {SAMPLES} samples: vigil {:.2}s ({:.0} samples/s), prometheus {:.2}s ({:.0} samples/s)",
        ours_push.as_secs_f64(),
        total / ours_push.as_secs_f64(),
        theirs_push.as_secs_f64(),
        total / theirs_push.as_secs_f64()
    );
    let eval = format!("{}.500", t_end / 1000);
    let start = format!("{}.500", (t_end - 600_000) / 1000);
    let qs = [
        "sum by (namespace) (rate(container_cpu_usage_seconds_total[5m]))",
        "topk(10, sum by (pod) (rate(container_cpu_usage_seconds_total[5m])))",
        "count(container_cpu_usage_seconds_total{namespace=\"ns-7\"})",
        "sum(container_cpu_usage_seconds_total{namespace=~\"ns-1.*\"}) by (node)",
        "histogram_quantile(0.9, sum by (le) (rate(container_cpu_usage_seconds_total{pod=\"pod-1\"}[5m])))",
    ];
    println!(
        "{:<100} {:>12} {:>12}",
        "query (median of 15, HTTP)", "vigil", "prometheus"
    );
    for q in qs {
        for range in [false, true] {
            let mut params = vec![("query", q.to_string())];
            if range {
                params.push(("start", start.clone()));
                params.push(("end", eval.clone()));
                params.push(("step", "30".into()));
            } else {
                params.push(("time", eval.clone()));
            }
            // warm-up, also checks both answer
            time_query(client, ours, &params).await?;
            time_query(client, theirs, &params).await?;
            let mut a = Vec::new();
            let mut b = Vec::new();
            for _ in 0..RUNS {
                a.push(time_query(client, ours, &params).await?);
                b.push(time_query(client, theirs, &params).await?);
            }
            let label = format!("{} {q}", if range { "range 10m/30s" } else { "instant" });
            println!(
                "{label:<100} {:>10.2}ms {:>10.2}ms",
                median(a).as_secs_f64() * 1e3,
                median(b).as_secs_f64() * 1e3
            );
        }
    }
    Ok(())
}
