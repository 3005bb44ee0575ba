//! Evaluation time of the `alerts/` rule pack over ~100,000 series, in the
//! same run for vigil's rule engine, Prometheus 2.42 (its own
//! `prometheus_rule_group_last_duration_seconds`) and vmalert against
//! VictoriaMetrics (`vmalert_iteration_duration_seconds`), on the same data.
//!
//! `cargo bench -p vigil-collector --bench rules_vs_prometheus`
//! Environment: `VIGIL_BENCH_SERIES` (default 100000), `VIGIL_BENCH_MINUTES`
//! of history at a 30 s step (default 35). Prometheus and VictoriaMetrics get
//! the data by remote write; a tool that is not installed is skipped.
//!
//! Each system evaluates every group of the pack at "now" over the same
//! series; the figure is the time of one evaluation of each group (median
//! of several), summed over the groups.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use vigil_collector::http::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use vigil_collector::promql::{Engine, EngineOptions};
use vigil_collector::rules::file;
use vigil_collector::rules::group::{EvalEnv, Group};
use vigil_collector::store::{Store, StoreOptions};
use vigil_common::Labels;

const STEP_MS: i64 = 30_000;

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

use vigil_common::time::now_ms;

type Data = Vec<(Labels, Vec<(i64, f64)>)>;

/// Deterministic series shaped like what vigil's agents ship: per node,
/// node_exporter and agent series; per container, cAdvisor series and log
/// line counters. Some containers and nodes are unhealthy so alerts fire.
fn generate(target: usize, minutes: usize, end: i64) -> Data {
    let nodes = 100usize;
    let per_node = 22usize;
    let per_container = 12usize;
    let containers = target.saturating_sub(nodes * per_node) / per_container;
    let steps = (minutes as i64 * 60_000 / STEP_MS) as usize;
    let start = end - steps as i64 * STEP_MS;
    let times: Vec<i64> = (0..=steps).map(|k| start + k as i64 * STEP_MS).collect();
    let mut out: Data = Vec::with_capacity(target + 1000);
    let series = |out: &mut Data, pairs: Vec<(&str, String)>, f: &dyn Fn(f64) -> f64| {
        let labels = Labels::new(pairs);
        let samples = times
            .iter()
            .map(|t| (*t, f((*t - start) as f64 / 1000.0)))
            .collect();
        out.push((labels, samples));
    };
    for n in 0..nodes {
        let node = format!("node-{n:03}");
        let nl = |name: &str| vec![("__name__", name.to_string()), ("node", node.clone())];
        let mem_total = 68_719_476_736.0;
        let avail = if n % 17 == 0 {
            0.05
        } else {
            0.4 + (n % 5) as f64 * 0.1
        };
        series(&mut out, nl("node_memory_MemTotal_bytes"), &|_| mem_total);
        series(&mut out, nl("node_memory_MemAvailable_bytes"), &|s| {
            mem_total * avail - s * 1000.0 * (n % 3) as f64
        });
        series(
            &mut out,
            nl("node_pressure_memory_waiting_seconds_total"),
            &|s| s * 0.02 * (n % 9) as f64,
        );
        series(
            &mut out,
            nl("node_pressure_io_waiting_seconds_total"),
            &|s| s * 0.05 * (n % 11) as f64,
        );
        series(&mut out, nl("node_vmstat_oom_kill"), &|s| {
            if n % 23 == 0 && s > 600.0 { 1.0 } else { 0.0 }
        });
        for (fs, mp) in [("/dev/sda1", "/"), ("/dev/sdb1", "/var/lib/containers")] {
            let fl = |name: &str| {
                let mut l = nl(name);
                l.extend([
                    ("device", fs.to_string()),
                    ("fstype", "ext4".to_string()),
                    ("mountpoint", mp.to_string()),
                ]);
                l
            };
            let size = 500e9;
            let free = if n % 13 == 0 { 0.04 } else { 0.3 };
            series(&mut out, fl("node_filesystem_size_bytes"), &|_| size);
            series(&mut out, fl("node_filesystem_avail_bytes"), &|s| {
                size * free - s * 10_000.0 * (n % 4) as f64
            });
            series(&mut out, fl("node_filesystem_readonly"), &|_| 0.0);
        }
        let mut al = nl("vigil_agent_build_info");
        al.push(("version", "0.1.0".into()));
        series(&mut out, al, &|_| 1.0);
        series(&mut out, nl("vigil_agent_samples_scraped_total"), &|s| {
            s * 400.0
        });
        series(&mut out, nl("vigil_agent_scrape_errors_total"), &|s| {
            if n % 29 == 0 { s * 0.1 } else { 0.0 }
        });
        for d in ["batches", "samples", "log_records", "scrapes"] {
            series(
                &mut out,
                nl(&format!("vigil_agent_dropped_{d}_total")),
                &|s| {
                    if n % 31 == 0 && d == "batches" {
                        (s / 60.0).floor()
                    } else {
                        0.0
                    }
                },
            );
        }
        series(&mut out, nl("vigil_agent_buffer_bytes"), &|_| {
            if n % 37 == 0 { 9e8 } else { 1e6 }
        });
        series(&mut out, nl("vigil_agent_buffer_max_bytes"), &|_| 1e9);
        series(&mut out, nl("vigil_agent_rejected_batches_total"), &|_| 0.0);
        series(&mut out, nl("vigil_agent_auth_failures_total"), &|_| 0.0);
    }
    for i in 0..containers {
        let node = format!("node-{:03}", i % nodes);
        let k8s = i % 2 == 0;
        let hex = format!(
            "{:016x}{:016x}{:016x}{:016x}",
            i * 7919,
            i * 104_729,
            i,
            i * 31
        );
        let mut base: Vec<(&str, String)> = vec![
            ("node", node.clone()),
            ("image", format!("registry/app{}:1.{}", i % 30, i % 7)),
        ];
        if k8s {
            base.extend([
                (
                    "id",
                    format!("/kubepods/burstable/pod{:08x}-{:04x}/{hex}", i, i % 65536),
                ),
                (
                    "name",
                    format!("k8s_c{}_app-{}_ns-{}_{i}", i % 5, i / 10, i % 20),
                ),
                ("namespace", format!("ns-{}", i % 20)),
                ("pod", format!("app-{}-{}", i / 10, i % 10)),
                ("container", format!("c{}", i % 5)),
            ]);
        } else {
            base.extend([
                ("id", format!("/machine.slice/libpod-{hex}.scope")),
                ("name", format!("ctr-{i}")),
            ]);
        }
        let cl = |name: &str| {
            let mut l = base.clone();
            l.push(("__name__", name.to_string()));
            l
        };
        let cores = 0.05 + (i % 13) as f64 * 0.05;
        let limit_cores = 1.0 + (i % 4) as f64;
        series(&mut out, cl("container_cpu_usage_seconds_total"), &|s| {
            1000.0 + s * cores
        });
        series(&mut out, cl("container_spec_cpu_quota"), &|_| {
            100_000.0 * limit_cores
        });
        series(&mut out, cl("container_spec_cpu_period"), &|_| 100_000.0);
        series(&mut out, cl("container_spec_cpu_shares"), &|_| {
            if k8s { 512.0 * limit_cores } else { 1024.0 }
        });
        let mem_limit = 1e9 * (1 + i % 3) as f64;
        let leaky = i % 20 == 0;
        let ws0 = mem_limit * (0.3 + 0.05 * (i % 14) as f64);
        series(&mut out, cl("container_memory_working_set_bytes"), &|s| {
            if leaky { ws0 + s * 200_000.0 } else { ws0 }
        });
        series(&mut out, cl("container_spec_memory_limit_bytes"), &|_| {
            mem_limit
        });
        series(&mut out, cl("container_oom_events_total"), &|s| {
            if i % 50 == 0 && s > 900.0 { 1.0 } else { 0.0 }
        });
        series(&mut out, cl("container_start_time_seconds"), &|s| {
            if i % 40 == 0 {
                1.7e9 + (s / 300.0).floor() * 300.0
            } else {
                1.7e9
            }
        });
        series(&mut out, cl("container_cpu_cfs_periods_total"), &|s| {
            s * 10.0
        });
        series(
            &mut out,
            cl("container_cpu_cfs_throttled_periods_total"),
            &|s| s * (i % 7) as f64,
        );
        let mut ll: Vec<(&str, String)> = vec![
            ("__name__", "vigil_log_lines_total".into()),
            ("node", node.clone()),
            ("stream", "stderr".into()),
        ];
        if k8s {
            ll.extend([
                ("namespace", format!("ns-{}", i % 20)),
                ("pod", format!("app-{}-{}", i / 10, i % 10)),
                ("container", format!("c{}", i % 5)),
            ]);
        } else {
            ll.push(("container_name", format!("ctr-{i}")));
        }
        let mut err = ll.clone();
        err.push(("level", "error".into()));
        series(&mut out, err, &|s| s * 0.01 * (i % 200) as f64);
        let mut info = ll;
        info.push(("level", "info".into()));
        series(&mut out, info, &|s| s * 5.0);
    }
    out
}

fn pack_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../alerts");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("alerts/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    v.sort();
    v.into_iter()
        .map(|p| p.canonicalize().unwrap_or(p))
        .collect()
}

/// group name → seconds per evaluation
type Figures = BTreeMap<String, f64>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn bench_vigil(data: &Data, end: i64) -> Figures {
    let store = Arc::new(Store::new(StoreOptions::default()));
    for (l, samples) in data {
        let Ok(r) = store.get_or_create(l) else {
            continue;
        };
        for (t, v) in samples {
            let _ = store.append(r, *t, *v);
        }
    }
    let engine = Engine::new(EngineOptions::default());
    let ext = Labels::default();
    let env = EvalEnv {
        engine: &engine,
        store: &store,
        remote: None,
        external_labels: &ext,
        external_url: "",
        resend_delay_ms: 60_000,
    };
    let mut out = Figures::new();
    for f in pack_files() {
        let rf = file::load_file(&f).expect("pack loads");
        for spec in &rf.groups {
            let mut g = Group::from_spec(spec, 10_000).expect("group");
            let mut times = Vec::new();
            for k in 0..7 {
                let t0 = Instant::now();
                let o = g.eval(end, &env);
                let dt = t0.elapsed().as_secs_f64();
                if k == 0 {
                    eprintln!(
                        "  vigil {}: {} samples, {} failed rules",
                        spec.name, o.samples, o.failures
                    );
                } else {
                    times.push(dt);
                }
            }
            out.insert(spec.name.clone(), median(times));
        }
    }
    out
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &str, args: &[String], log: &Path) -> Option<Proc> {
    let f = std::fs::File::create(log).ok()?;
    let f2 = f.try_clone().ok()?;
    Command::new(program)
        .args(args)
        .stdout(Stdio::from(f))
        .stderr(Stdio::from(f2))
        .spawn()
        .ok()
        .map(Proc)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn have(p: &str) -> bool {
    Command::new(p).arg("--version").output().is_ok()
}

async fn wait_ready(client: &reqwest::Client, url: &str) -> bool {
    for _ in 0..300 {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Remote-writes `data` to `url`, 500 series a request, two at a time.
async fn push(client: &reqwest::Client, url: &str, data: &Data) -> Result<Duration, String> {
    let t0 = Instant::now();
    let bodies: Vec<Vec<u8>> = data
        .chunks(500)
        .map(|chunk| {
            let req = WriteRequest {
                timeseries: chunk
                    .iter()
                    .map(|(l, s)| TimeSeries {
                        labels: l
                            .iter()
                            .map(|(k, v)| Label {
                                name: k.to_string(),
                                value: v.to_string(),
                            })
                            .collect(),
                        samples: s
                            .iter()
                            .map(|(t, v)| Sample {
                                value: *v,
                                timestamp: *t,
                            })
                            .collect(),
                    })
                    .collect(),
                metadata: Vec::new(),
            };
            snap::raw::Encoder::new()
                .compress_vec(&req.encode_to_vec())
                .unwrap_or_default()
        })
        .collect();
    let mut pending = futures::stream::iter(bodies.into_iter().map(|b| {
        let c = client.clone();
        let url = url.to_string();
        async move {
            let r = c
                .post(&url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .body(b)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status().is_success() {
                Ok(())
            } else {
                Err(format!(
                    "{}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ))
            }
        }
    }))
    .buffer_unordered(2);
    use futures::StreamExt;
    while let Some(r) = pending.next().await {
        r?;
    }
    Ok(t0.elapsed())
}

fn metric_values(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if !line.starts_with(name) || !line[name.len()..].starts_with('{') {
            continue;
        }
        let Some((lbls, v)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = v.parse::<f64>() else { continue };
        let key = format!("{label}=\"");
        let Some(i) = lbls.find(&key) else { continue };
        let rest = &lbls[i + key.len()..];
        let Some(j) = rest.find('"') else { continue };
        out.insert(rest[..j].to_string(), v);
    }
    out
}

async fn bench_prometheus(series: usize, minutes: usize, dir: &Path) -> Result<Figures, String> {
    let port = free_port();
    let cfg = dir.join("prometheus.yml");
    let rules: Vec<String> = pack_files()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    std::fs::write(
        &cfg,
        format!(
            "global:\n  evaluation_interval: 10s\nrule_files:\n{}",
            rules
                .iter()
                .map(|r| format!("  - {r}\n"))
                .collect::<String>()
        ),
    )
    .map_err(|e| e.to_string())?;
    let _p = spawn(
        "prometheus",
        &[
            format!("--config.file={}", cfg.display()),
            format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-remote-write-receiver".into(),
        ],
        &dir.join("prometheus.log"),
    )
    .ok_or("cannot start prometheus")?;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    if !wait_ready(&client, &format!("{base}/-/ready")).await {
        return Err("prometheus not ready".into());
    }
    let data = generate(series, minutes, now_ms());
    let took = push(&client, &format!("{base}/api/v1/write"), &data).await?;
    eprintln!(
        "  prometheus: pushed {} series in {:.1}s",
        data.len(),
        took.as_secs_f64()
    );
    drop(data);
    tokio::time::sleep(Duration::from_secs(22)).await;
    let mut readings: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..4 {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        for (g, v) in metric_values(
            &text,
            "prometheus_rule_group_last_duration_seconds",
            "rule_group",
        ) {
            let name = g.rsplit(';').next().unwrap_or(&g).to_string();
            readings.entry(name).or_default().push(v);
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    Ok(readings.into_iter().map(|(k, v)| (k, median(v))).collect())
}

async fn bench_vmalert(series: usize, minutes: usize, dir: &Path) -> Result<Figures, String> {
    let vm_port = free_port();
    let _vm = spawn(
        "victoria-metrics",
        &[
            format!("-storageDataPath={}", dir.join("vm-data").display()),
            format!("-httpListenAddr=127.0.0.1:{vm_port}"),
            "-retentionPeriod=1".into(),
        ],
        &dir.join("vm.log"),
    )
    .ok_or("cannot start victoria-metrics")?;
    let client = reqwest::Client::new();
    let vm = format!("http://127.0.0.1:{vm_port}");
    if !wait_ready(&client, &format!("{vm}/health")).await {
        return Err("victoria-metrics not ready".into());
    }
    let data = generate(series, minutes, now_ms());
    let took = push(&client, &format!("{vm}/api/v1/write"), &data).await?;
    eprintln!(
        "  victoria-metrics: pushed {} series in {:.1}s",
        data.len(),
        took.as_secs_f64()
    );
    drop(data);
    // an Alertmanager stand-in for vmalert's notifier
    let am = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let am_url = format!("http://{}", am.local_addr().map_err(|e| e.to_string())?);
    let app = axum::Router::new().route("/api/v2/alerts", axum::routing::post(|| async { "" }));
    tokio::spawn(async move {
        let _ = axum::serve(am, app).await;
    });
    let va_port = free_port();
    let mut args = vec![
        format!("-datasource.url={vm}"),
        format!("-remoteWrite.url={vm}"),
        format!("-notifier.url={am_url}"),
        "-evaluationInterval=10s".into(),
        format!("-httpListenAddr=127.0.0.1:{va_port}"),
    ];
    for f in pack_files() {
        args.push(format!("-rule={}", f.display()));
    }
    let _va = spawn("vmalert", &args, &dir.join("vmalert.log")).ok_or("cannot start vmalert")?;
    let va = format!("http://127.0.0.1:{va_port}");
    if !wait_ready(&client, &format!("{va}/health")).await {
        return Err(format!(
            "vmalert not ready: {}",
            std::fs::read_to_string(dir.join("vmalert.log"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    tokio::time::sleep(Duration::from_secs(22)).await;
    type SumCount = (BTreeMap<String, f64>, BTreeMap<String, f64>);
    let read = async || -> Result<SumCount, String> {
        let text = client
            .get(format!("{va}/metrics"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            metric_values(&text, "vmalert_iteration_duration_seconds_sum", "group"),
            metric_values(&text, "vmalert_iteration_duration_seconds_count", "group"),
        ))
    };
    let (s0, c0) = read().await?;
    tokio::time::sleep(Duration::from_secs(40)).await;
    let (s1, c1) = read().await?;
    let mut out = Figures::new();
    for (g, s) in &s1 {
        let dc = c1.get(g).copied().unwrap_or(0.0) - c0.get(g).copied().unwrap_or(0.0);
        let ds = s - s0.get(g).copied().unwrap_or(0.0);
        if dc > 0.0 {
            out.insert(g.clone(), ds / dc);
        }
    }
    Ok(out)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("rules_vs_prometheus: bench");
        return;
    }
    let series = env_usize("VIGIL_BENCH_SERIES", 100_000);
    let minutes = env_usize("VIGIL_BENCH_MINUTES", 35);
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    vigil_collector::tls::ensure_crypto_provider();

    let mut columns: Vec<(&str, Result<Figures, String>)> = Vec::new();
    if have("prometheus") {
        eprintln!("prometheus …");
        columns.push((
            "prometheus 2.42",
            rt.block_on(bench_prometheus(series, minutes, tmp.path())),
        ));
    }
    if have("victoria-metrics") && have("vmalert") {
        eprintln!("vmalert + victoria-metrics …");
        columns.push((
            "vmalert 1.79",
            rt.block_on(bench_vmalert(series, minutes, tmp.path())),
        ));
    }
    eprintln!("vigil …");
    let end = now_ms() / STEP_MS * STEP_MS;
    let data = generate(series, minutes, end);
    let n = data.len();
    let samples: usize = data.iter().map(|d| d.1.len()).sum();
    columns.insert(0, ("vigil", Ok(bench_vigil(&data, end))));
    drop(data);

    println!("\nrule pack evaluation: {n} series, {samples} samples ({minutes} min at 30 s)");
    let groups: Vec<String> = match &columns[0].1 {
        Ok(f) => f.keys().cloned().collect(),
        Err(_) => Vec::new(),
    };
    print!("{:<26}", "group");
    for (name, _) in &columns {
        print!("{name:>18}");
    }
    println!();
    for g in groups.iter().map(Some).chain([None]) {
        print!("{:<26}", g.map_or("total", |g| g.as_str()));
        for (_, f) in &columns {
            match f {
                Ok(f) => {
                    let v = match g {
                        Some(g) => f.get(g).copied(),
                        None => Some(groups.iter().filter_map(|g| f.get(g)).sum()),
                    };
                    match v {
                        Some(v) => print!("{:>15.2} ms", v * 1000.0),
                        None => print!("{:>18}", "-"),
                    }
                }
                Err(_) => print!("{:>18}", "error"),
            }
        }
        println!();
    }
    for (name, f) in &columns {
        if let Err(e) = f {
            println!("{name}: {e}");
        }
    }
}
