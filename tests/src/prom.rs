//! Helpers for comparing vigil with the real Prometheus: a deterministic test
//! exporter, a Prometheus process scraping it with `remote_write` to vigil,
//! and a tolerant comparison of Prometheus API JSON results.
//!
//! Not here: the query corpus (in `tests/promql_compliance.rs`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value as Json;

/// Text exposition of scrape number `n` (0-based). Every value is a pure
/// function of `n`, so both databases receive the same data.
pub fn exposition(n: u64) -> String {
    let nf = n as f64;
    let mut o = String::new();
    o.push_str("# TYPE vt_http_requests_total counter\n");
    let mut idx = 0u64;
    for method in ["GET", "POST", "PUT"] {
        for code in ["200", "500"] {
            for path in ["/a", "/b"] {
                idx += 1;
                let inc = 1.0 + idx as f64 * 0.731;
                let v = if method == "PUT" && code == "500" {
                    // resets every 20 scrapes
                    (n % 20) as f64 * inc * 3.0
                } else {
                    10_000.0 * idx as f64 + nf * inc + (nf * 0.37 + idx as f64).sin().abs()
                };
                let _ = writeln!(
                    o,
                    "vt_http_requests_total{{method=\"{method}\",code=\"{code}\",path=\"{path}\"}} {v}"
                );
            }
        }
    }
    o.push_str("# TYPE vt_temperature_celsius gauge\n");
    let mut i = 0.0;
    for floor in ["1", "2"] {
        for room in ["kitchen", "bedroom", "garage", "attic"] {
            i += 1.0;
            let v = 20.0 + 5.0 * (nf / 7.0 + i).sin() + i * 0.37;
            let _ = writeln!(
                o,
                "vt_temperature_celsius{{floor=\"{floor}\",room=\"{room}\"}} {v}"
            );
        }
    }
    o.push_str("# TYPE vt_negative gauge\n");
    let _ = writeln!(o, "vt_negative{{sign=\"neg\"}} {}", -3.5 - (nf / 5.0).cos());
    let _ = writeln!(o, "vt_negative{{sign=\"zero\"}} 0");
    let _ = writeln!(o, "vt_negative{{sign=\"pos\"}} {}", 0.25 + nf * 0.01);
    o.push_str("# TYPE vt_request_duration_seconds histogram\n");
    for (pi, path) in ["/a", "/b"].iter().enumerate() {
        let les = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"];
        let base = [3.0, 7.0, 15.0, 24.0, 30.0, 33.0, 34.0];
        let mut cum = 0.0;
        for (j, le) in les.iter().enumerate() {
            let inc = if j == 0 {
                base[0]
            } else {
                base[j] - base[j - 1]
            };
            // A large start keeps rate()'s zero-point clamp out of play
            // (2.42 and 3.x order that clamp differently).
            let start = if j == 0 { 100_000.0 } else { 0.0 };
            cum += start
                + inc * (nf + 1.0) * (1.0 + pi as f64 * 0.5)
                + if j == 3 { (nf * 0.5).floor() } else { 0.0 };
            let _ = writeln!(
                o,
                "vt_request_duration_seconds_bucket{{path=\"{path}\",le=\"{le}\"}} {cum}"
            );
        }
        let _ = writeln!(
            o,
            "vt_request_duration_seconds_sum{{path=\"{path}\"}} {}",
            cum * 0.31
        );
        let _ = writeln!(
            o,
            "vt_request_duration_seconds_count{{path=\"{path}\"}} {cum}"
        );
    }
    o.push_str("# TYPE container_cpu_usage_seconds_total counter\n");
    let mut k = 0.0;
    for ns in ["ns1", "ns2", "ns3"] {
        for pod in 0..3 {
            for c in ["app", "sidecar"] {
                k += 1.0;
                let v = 5_000.0 + k * 13.0 + nf * (0.05 * k + 0.01);
                let _ = writeln!(
                    o,
                    "container_cpu_usage_seconds_total{{namespace=\"{ns}\",pod=\"{ns}-pod-{pod}\",container=\"{c}\"}} {v}"
                );
            }
        }
    }
    o.push_str("# TYPE container_memory_working_set_bytes gauge\n");
    let mut k = 0.0;
    for ns in ["ns1", "ns2", "ns3"] {
        for pod in 0..3 {
            for c in ["app", "sidecar"] {
                k += 1.0;
                let v = (1_000_000.0 * k + 50_000.0 * (nf / 9.0 + k).sin()).round();
                let _ = writeln!(
                    o,
                    "container_memory_working_set_bytes{{namespace=\"{ns}\",pod=\"{ns}-pod-{pod}\",container=\"{c}\"}} {v}"
                );
            }
        }
    }
    if (n / 15).is_multiple_of(2) {
        o.push_str("# TYPE vt_flappy gauge\n");
        let _ = writeln!(o, "vt_flappy{{id=\"1\"}} {}", nf * 2.0);
    }
    o.push_str("# TYPE vt_info gauge\n");
    o.push_str("vt_info{version=\"v1.2.3\",build=\"abc-def\"} 1\n");
    o.push_str("# TYPE vt_dup gauge\n");
    o.push_str("vt_dup{a=\"1\",b=\"x\"} 1\n");
    o.push_str("vt_dup{a=\"1\",b=\"y\"} 2\n");
    o
}

/// Serves [`exposition`] at `/metrics` on `127.0.0.1:0`; each request is the
/// next scrape. Returns the address and the scrape counter.
pub async fn start_exporter() -> anyhow::Result<(SocketAddr, Arc<AtomicU64>)> {
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let n = n2.clone();
            async move {
                let i = n.fetch_add(1, Ordering::SeqCst);
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    exposition(i),
                )
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Ok((addr, n))
}

/// A free loopback port (bound then released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A running Prometheus; killed and reaped on drop.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn prometheus_binary() -> Option<PathBuf> {
    let p = Path::new("/usr/bin/prometheus");
    p.exists().then(|| p.to_path_buf())
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second and remote-writing to
    /// `write_url`.
    pub fn start(bin: &Path, target: SocketAddr, write_url: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let cfg = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1m\n\
             scrape_configs:\n  - job_name: vt\n    static_configs:\n      - targets: ['{target}']\n\
             remote_write:\n  - url: {write_url}\n    queue_config:\n      batch_send_deadline: 500ms\n      min_backoff: 50ms\n      max_backoff: 500ms\n"
        );
        let cfg_path = dir.path().join("prometheus.yml");
        std::fs::write(&cfg_path, cfg)?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawning prometheus")?;
        Ok(Prometheus {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

/// Calls a Prometheus-style API; returns the HTTP status and parsed body.
pub async fn api_get(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    params: &[(&str, String)],
) -> anyhow::Result<(u16, Json)> {
    let resp = client
        .post(format!("{base}{path}"))
        .form(params)
        .send()
        .await
        .with_context(|| format!("POST {base}{path}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    let j =
        serde_json::from_str(&text).with_context(|| format!("{base}{path}: not JSON: {text}"))?;
    Ok((status, j))
}

fn parse_val(s: &Json) -> Option<f64> {
    match s.as_str()? {
        "NaN" => Some(f64::NAN),
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        v => v.parse().ok(),
    }
}

fn close(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    diff <= 1e-6 * a.abs().max(b.abs()) || diff < 1e-12
}

fn point_diff(a: &Json, b: &Json) -> Option<String> {
    let (ta, tb) = (a.get(0)?.as_f64()?, b.get(0)?.as_f64()?);
    let (va, vb) = (parse_val(a.get(1)?)?, parse_val(b.get(1)?)?);
    if (ta - tb).abs() > 1e-9 || !close(va, vb) {
        return Some(format!("[{ta}, {va}] vs [{tb}, {vb}]"));
    }
    None
}

/// Compares two successful `data` objects; `ordered` keeps vector order.
/// Returns a readable description of every difference.
pub fn diff_data(ours: &Json, theirs: &Json, ordered: bool) -> Vec<String> {
    let mut d = Vec::new();
    let (rt_a, rt_b) = (&ours["resultType"], &theirs["resultType"]);
    if rt_a != rt_b {
        d.push(format!("resultType {rt_a} vs {rt_b}"));
        return d;
    }
    let (ra, rb) = (&ours["result"], &theirs["result"]);
    match rt_a.as_str() {
        Some("scalar") | Some("string") => {
            if rt_a == "string" {
                if ra != rb {
                    d.push(format!("{ra} vs {rb}"));
                }
            } else if let Some(x) = point_diff(ra, rb) {
                d.push(x);
            }
        }
        Some("vector") | Some("matrix") => {
            let mut a: Vec<&Json> = ra
                .as_array()
                .map(|v| v.iter().collect())
                .unwrap_or_default();
            let mut b: Vec<&Json> = rb
                .as_array()
                .map(|v| v.iter().collect())
                .unwrap_or_default();
            let key = |j: &&Json| j["metric"].to_string();
            if !ordered || rt_a == "matrix" {
                a.sort_by_key(key);
                b.sort_by_key(key);
            }
            if a.len() != b.len() {
                d.push(format!(
                    "{} series vs {} series\n    ours:   {:?}\n    theirs: {:?}",
                    a.len(),
                    b.len(),
                    a.iter().map(key).collect::<Vec<_>>(),
                    b.iter().map(key).collect::<Vec<_>>()
                ));
                return d;
            }
            for (x, y) in a.iter().zip(b.iter()) {
                if x["metric"] != y["metric"] {
                    d.push(format!("labels {} vs {}", x["metric"], y["metric"]));
                    continue;
                }
                if rt_a == "vector" {
                    if let Some(p) = point_diff(&x["value"], &y["value"]) {
                        d.push(format!("{}: {p}", x["metric"]));
                    }
                } else {
                    let pa = x["values"].as_array().cloned().unwrap_or_default();
                    let pb = y["values"].as_array().cloned().unwrap_or_default();
                    if pa.len() != pb.len() {
                        d.push(format!(
                            "{}: {} points vs {} points\n    ours:   {}\n    theirs: {}",
                            x["metric"],
                            pa.len(),
                            pb.len(),
                            x["values"],
                            y["values"]
                        ));
                        continue;
                    }
                    for (p, q) in pa.iter().zip(pb.iter()) {
                        if let Some(e) = point_diff(p, q) {
                            d.push(format!("{}: {e}", x["metric"]));
                            break;
                        }
                    }
                }
            }
        }
        other => d.push(format!("unexpected resultType {other:?}")),
    }
    d
}

/// Waits until `url` answers 200.
pub async fn wait_ready(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{url} not ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
