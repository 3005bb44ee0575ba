//! Every query of every shipped dashboard, with the template variables set
//! as Grafana sets them for "All", run against real data:
//!
//! - a pipeline on this host (collector and agent binaries) with podman
//!   containers the test starts — a busy one writing log lines, an
//!   application the agent scrapes, an autoscaler and a restart rule acting
//!   through a webhook, forwarding to a remote-write receiver;
//! - Kubernetes-shaped series (kubelet/cAdvisor label sets: containers,
//!   the pods' own cgroups, pause containers, per-pod network) written with
//!   remote write.
//!
//! Every panel that should have data there has it; the few that cannot on
//! this host are listed with the reason, decided from the host itself
//! (cgroup v1 has no per-container pressure figures).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use vigil_e2e::dashboards::{self, PanelQuery};
use vigil_e2e::podman::{self, Service};
use vigil_e2e::{args, free_port, get, http, start_agent, start_collector, url_encode, wait_for};

/// A receiver for the webhook executor (`/hook`) and for forwarding
/// (`/api/v1/write`): answers 200/204 and counts.
fn receiver() -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new()
                .route(
                    "/hook",
                    axum::routing::post(move || {
                        let h = h.clone();
                        async move {
                            h.fetch_add(1, Ordering::SeqCst);
                            "ok"
                        }
                    }),
                )
                .route(
                    "/api/v1/write",
                    axum::routing::post(|| async { axum::http::StatusCode::NO_CONTENT }),
                );
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(l, app).await;
        });
    });
    (port, hits)
}

fn api(addr: &str, path: &str) -> Value {
    let (code, body) = get(addr, path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Runs one panel query over the last `window` seconds as Grafana does
/// (a range query); returns the result series.
fn run(addr: &str, q: &PanelQuery, expr: &str, window: f64) -> Vec<Value> {
    let end = now_s();
    let start = end - window;
    let path = if q.loki {
        format!(
            "/loki/api/v1/query_range?query={}&start={:.0}&end={:.0}&step=5&limit=100",
            url_encode(expr),
            start * 1e9,
            end * 1e9
        )
    } else {
        format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step=5",
            url_encode(expr)
        )
    };
    let v = api(addr, &path);
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Runs every query of the named dashboards (all when empty); returns the
/// panels whose queries came back empty, as "dashboard: panel [ref]".
fn empty_panels(
    addr: &str,
    only: &[&str],
    out: &mut Vec<(PanelQuery, Vec<Value>)>,
) -> BTreeSet<String> {
    let mut empty = BTreeSet::new();
    for (file, d) in dashboards::load_all() {
        if !only.is_empty() && !only.contains(&file.as_str()) {
            continue;
        }
        let vars = dashboards::all_values(
            &d,
            &[
                ("__rate_interval", "30s"),
                ("__interval", "5s"),
                ("__range", "5m"),
            ],
            |q| {
                let (sel, label) = dashboards::parse_label_values(q).expect("label_values(…)");
                let path = if sel.is_empty() {
                    format!("/api/v1/label/{label}/values")
                } else {
                    format!("/api/v1/label/{label}/values?match[]={}", url_encode(&sel))
                };
                api(addr, &path)["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            },
        );
        for q in dashboards::queries(&file, &d) {
            let expr = dashboards::substitute(&q.expr, &vars);
            let res = run(addr, &q, &expr, 300.0);
            if res.is_empty() {
                empty.insert(format!("{}: {} [{}]", q.dashboard, q.panel, q.ref_id));
            }
            out.push((q, res));
        }
    }
    empty
}

#[test]
fn every_panel_has_data_on_a_podman_host() {
    if !podman::usable() {
        eprintln!(
            "skipped: needs root and podman with localhost/bb:1 (scripts/install-test-deps.sh)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tag = podman::tag();
    let svc = format!("vigildash{tag}");
    let busy = format!("{svc}-0");
    let service = Service::start(d, &format!("com.docker.compose.service={svc}"));
    service.run(&[
        "--name", &busy, "--cpus", "0.5", "--memory", "64m", podman::IMAGE, "sh", "-c",
        "i=0; while :; do i=$((i+1)); echo \"request $i served\"; echo \"level=error request $i failed\" >&2; \
         dd if=/dev/zero of=/tmp/f bs=64k count=4 2>/dev/null; j=0; while [ $j -lt 20000 ]; do j=$((j+1)); done; done",
    ]);
    service.run(&[
        "--name", &format!("{svc}-app"),
        "--label", "prometheus.io/scrape=true",
        "--label", "prometheus.io/port=8080",
        "--label", "prometheus.io/interval=1s",
        podman::IMAGE, "sh", "-c",
        "mkdir -p /www && printf '# TYPE app_requests_total counter\\napp_requests_total{code=\"200\"} 42\\napp_requests_total{code=\"500\"} 1\\n# TYPE app_queue_depth gauge\\napp_queue_depth 3\\n' > /www/metrics && exec busybox httpd -f -p 8080 -h /www",
    ]);
    let (rport, hits) = receiver();
    std::fs::write(
        d.join("whsec"),
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([9u8; 32])
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("actions.yml"),
        format!(
            "executors:\n  hook: {{type: webhook, url: \"http://127.0.0.1:{rport}/hook\", secret_file: {whsec}, max_attempts: 2, timeout: 5s}}\n\
             restart:\n  - {{name: dash, match: {{alertname: DashTestRestart}}, executor: hook, cooldown: 10m, max_restarts: 3, window: 1h}}\n\
             autoscale:\n  - name: web\n    executor: hook\n    workload: {{service: {svc}}}\n    \
             query: '100 * avg(rate(container_cpu_usage_seconds_total{{name=\"{busy}\"}}[5s])) / 0.5'\n    \
             replicas_query: 'count(count by (name) (container_cpu_usage_seconds_total{{name=\"{busy}\"}}))'\n    \
             target: 10\n    min_replicas: 1\n    max_replicas: 3\n    interval: 1s\n",
            whsec = d.join("whsec").display()
        ),
    )
    .unwrap();
    let (hp, gp) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{hp}");
    let _collector = start_collector(
        d,
        hp,
        gp,
        &args(&[
            "--actions",
            &d.join("actions.yml").display().to_string(),
            "--self-scrape-interval",
            "1s",
            "--remote-write-url",
            &format!("http://127.0.0.1:{rport}/api/v1/write"),
        ]),
    );
    let _agent = start_agent(
        d,
        gp,
        &args(&["--container-socket", &service.socket.display().to_string()]),
    );
    // a restart through the Alertmanager webhook (loopback: no credential needed)
    let am = format!(
        r#"{{"version":"4","groupKey":"g","status":"firing","receiver":"vigil","alerts":[{{"status":"firing","labels":{{"alertname":"DashTestRestart","name":"{busy}"}},"annotations":{{}},"startsAt":"2026-01-01T00:00:00Z","fingerprint":"f{tag}"}}]}}"#
    );
    let (code, body) = http(
        "POST",
        &addr,
        "/api/v1/alertmanager/webhook",
        Some("application/json"),
        am.as_bytes(),
    )
    .unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));

    // wait for what the panels show: scrapes of the containers and the
    // application, a scale and a restart delivered, forwarding under way
    wait_for(Duration::from_secs(90), "the pipeline's data", || {
        let has = |q: &str| {
            api(&addr, &format!("/api/v1/query?query={}", url_encode(q)))["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        };
        let acts = api(&addr, "/api/v1/actions?limit=100").to_string();
        let missing: Vec<&str> = [
            (
                "scrapes",
                has(&format!(
                    "count_over_time(container_cpu_usage_seconds_total{{name=\"{busy}\"}}[1m]) > 8"
                )),
            ),
            ("app", has("up{job=\"containers\"} == 1")),
            (
                "forwarding",
                has("vigil_collector_forward_samples_sent_total > 0"),
            ),
            ("error lines", has("vigil_log_lines_total{level=\"error\"}")),
            (
                "scale",
                acts.contains("\"action\":\"scale\"") && acts.contains("delivered"),
            ),
            ("restart", acts.contains("\"action\":\"restart\"")),
            ("webhook", hits.load(Ordering::SeqCst) >= 2),
        ]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| n)
        .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?}"))
        }
    });
    // counters need two self-scrapes after the actions to show an increase
    std::thread::sleep(Duration::from_secs(3));

    let mut results = Vec::new();
    let empty = empty_panels(&addr, &[], &mut results);
    // what this host cannot show, from the host itself
    let mut expected_empty = BTreeSet::new();
    let cgroup_v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if !cgroup_v2 {
        // cgroup v1 has no per-container pressure (PSI) files
        expected_empty
            .insert("vigil-containers.json: Memory pressure (stalled seconds/s) [A]".to_string());
    }
    if !std::path::Path::new("/proc/pressure/cpu").exists() {
        for r in "ABC".chars() {
            expected_empty.insert(format!(
                "vigil-nodes.json: Pressure (some, seconds/s) [{r}]"
            ));
        }
    }
    let unexpected: Vec<&String> = empty.difference(&expected_empty).collect();
    assert!(
        unexpected.is_empty(),
        "{} panel queries without data on a podman host:\n{}",
        unexpected.len(),
        unexpected
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let total = results.len();
    assert!(total >= 55, "only {total} queries ran");
    // the containers appear by name where Kubernetes would show the pod
    let cpu = results
        .iter()
        .find(|(q, _)| q.dashboard == "vigil-containers.json" && q.panel.starts_with("CPU usage"))
        .expect("the CPU panel");
    assert!(
        cpu.1.iter().any(|s| s["metric"]["pod"] == busy.as_str()),
        "the CPU panel does not show {busy}: {:?}",
        cpu.1.iter().map(|s| &s["metric"]).collect::<Vec<_>>()
    );
    eprintln!(
        "{} of {total} panel queries have data on this host; empty as expected here: {expected_empty:?}",
        total - empty.len()
    );
}

/// Kubernetes-shaped series as the kubelet's cAdvisor endpoint labels them:
/// two pods of two containers each (plus each pod's own cgroup with
/// `container=""` and its pause container), per-pod network, a node.
fn write_kubernetes_series(addr: &str) {
    use vigil_collector::http::remote_write::{Label, Sample, TimeSeries, WriteRequest};
    let now = (now_s() * 1000.0) as i64;
    let mut series = Vec::new();
    let mut add = |labels: &[(&str, &str)], per_s: f64, base: f64| {
        series.push(TimeSeries {
            labels: labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| Label {
                    name: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            // every 10 s over the last 3 minutes
            samples: (0..19)
                .map(|i| {
                    let t = now - (18 - i) * 10_000;
                    Sample {
                        value: base + per_s * (i as f64 * 10.0),
                        timestamp: t,
                    }
                })
                .collect(),
        });
    };
    let node = "k8s-node-1";
    for (ns, pod, uid) in [
        ("shop", "web-7d9f8-abcde", "0d3f"),
        ("shop", "db-0", "9a1c"),
    ] {
        let pod_cg =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice");
        let sandbox = format!("{uid}{}", "e".repeat(60));
        // the pod's own cgroup and its pause container: never shown as a container
        for (id, name, image, container) in [
            (pod_cg.clone(), String::new(), "", ""),
            (
                format!("{pod_cg}/cri-containerd-{sandbox}.scope"),
                sandbox.clone(),
                "registry.k8s.io/pause:3.9",
                "",
            ),
        ] {
            let l = |m: &'static str| {
                vec![
                    ("__name__", m),
                    ("id", id.as_str()),
                    ("name", name.as_str()),
                    ("image", image),
                    ("namespace", ns),
                    ("pod", pod),
                    ("container", container),
                    ("node", node),
                ]
            };
            add(&l("container_cpu_usage_seconds_total"), 0.9, 100.0);
            add(&l("container_memory_working_set_bytes"), 0.0, 5e8);
        }
        // network: per pod (the pod's cgroup, no name or container)
        for m in [
            "container_network_receive_bytes_total",
            "container_network_transmit_bytes_total",
        ] {
            add(
                &[
                    ("__name__", m),
                    ("id", &pod_cg),
                    ("namespace", ns),
                    ("pod", pod),
                    ("interface", "eth0"),
                    ("node", node),
                ],
                1000.0,
                0.0,
            );
        }
        for c in ["app", "sidecar"] {
            let cid = format!("{pod_cg}/cri-containerd-{uid}{c}{}.scope", "0".repeat(50));
            let image = format!("registry.example/{c}:1");
            let l = |m: &'static str| {
                vec![
                    ("__name__", m),
                    ("id", cid.as_str()),
                    ("name", ""),
                    ("image", image.as_str()),
                    ("namespace", ns),
                    ("pod", pod),
                    ("container", c),
                    ("node", node),
                ]
            };
            add(&l("container_cpu_usage_seconds_total"), 0.25, 10.0);
            add(&l("container_memory_working_set_bytes"), 0.0, 1e8);
            add(&l("container_spec_memory_limit_bytes"), 0.0, 2.5e8);
            add(&l("container_cpu_cfs_periods_total"), 10.0, 0.0);
            add(&l("container_cpu_cfs_throttled_periods_total"), 1.0, 0.0);
            add(&l("container_oom_events_total"), 0.0, 0.0);
            add(&l("container_fs_reads_bytes_total"), 4096.0, 0.0);
            add(&l("container_fs_writes_bytes_total"), 8192.0, 0.0);
            add(
                &l("container_pressure_memory_stalled_seconds_total"),
                0.01,
                0.0,
            );
        }
    }
    let req = WriteRequest {
        timeseries: series,
        metadata: vec![],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&prost::Message::encode_to_vec(&req))
        .unwrap();
    let (code, resp) = http(
        "POST",
        addr,
        "/api/v1/write",
        Some("application/x-protobuf"),
        &body,
    )
    .unwrap();
    assert!(
        code == 204 || code == 200,
        "{code} {}",
        String::from_utf8_lossy(&resp)
    );
}

#[test]
fn container_panels_have_data_on_kubernetes_shaped_series() {
    let dir = tempfile::tempdir().unwrap();
    let (hp, gp) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{hp}");
    let _collector = start_collector(dir.path(), hp, gp, &args(&["--self-scrape-interval", "0s"]));
    write_kubernetes_series(&addr);
    let mut results = Vec::new();
    let empty = empty_panels(&addr, &["vigil-containers.json"], &mut results);
    assert!(
        empty.is_empty(),
        "container panels without data on Kubernetes series: {empty:?}"
    );
    // pods, not their cgroups or sandboxes, and each pod's CPU is its two
    // containers' (0.25 + 0.25 cores), not the pod cgroup's or the pause's
    let cpu = &results
        .iter()
        .find(|(q, _)| q.panel.starts_with("CPU usage"))
        .expect("CPU panel")
        .1;
    let pods: BTreeSet<String> = cpu
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s["metric"]["namespace"].as_str().unwrap_or(""),
                s["metric"]["pod"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        pods,
        BTreeSet::from(["shop/db-0".to_string(), "shop/web-7d9f8-abcde".to_string()])
    );
    for s in cpu {
        let last: f64 = s["values"].as_array().unwrap().last().unwrap()[1]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (last - 0.5).abs() < 1e-6,
            "{}: {last} cores, want 0.5",
            s["metric"]
        );
    }
    let net = &results
        .iter()
        .find(|(q, _)| q.panel.starts_with("Network") && q.ref_id == "A")
        .expect("network panel")
        .1;
    assert_eq!(net.len(), 2, "{net:?}");
}
