//! The web UI in a real browser (Debian's headless Chromium over WebDriver)
//! against a running pipeline: the collector and agent binaries, a podman
//! container the test starts, an autoscaler whose webhook a local receiver
//! answers.
//!
//! Every page loads without console errors, at 1280×800 and at a phone's
//! 390×844 (no sideways scrolling), with readable contrast; a query draws
//! a graph whose points are those of `/api/v1/query_range`; the logs page
//! shows the container's lines (reached in one click from the overview); the
//! actions page shows the scale decision made during the test; completion
//! works from the keyboard. Screenshots of every page are kept under
//! `$VIGIL_TEST_ARTIFACTS/ui/` (default `target/ui-artifacts/ui/`), with the
//! page weight and the time to the first graph in `metrics.txt`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use vigil_e2e::browser::{self, Browser, CONTRAST_CHECK};
use vigil_e2e::podman::{self, Service};
use vigil_e2e::{args, free_port, get, start_agent, start_collector, url_encode, wait_for};

const DESKTOP: (u32, u32) = (1280, 800);
const PHONE: (u32, u32) = (390, 844);

/// A webhook receiver on 127.0.0.1 that answers 200 and counts requests.
fn webhook_receiver() -> (u16, Arc<AtomicUsize>) {
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
            let app = axum::Router::new().route(
                "/hook",
                axum::routing::post(move || {
                    let h = h.clone();
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        "ok"
                    }
                }),
            );
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(l, app).await;
        });
    });
    (port, hits)
}

fn api(http: &str, path: &str) -> Value {
    let (code, body) = get(http, path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Loads the UI afresh at `hash` (a new document, not a hash change) and
/// waits for the page's first load.
fn open(b: &Browser, base: &str, hash: &str) {
    b.goto("about:blank");
    b.goto(&format!("{base}/#/{hash}"));
    b.wait_ready();
}

fn no_console_errors(b: &Browser, page: &str) {
    let errors = b.console_errors();
    assert!(errors.is_empty(), "{page}: console errors: {errors:?}");
}

fn shoot(b: &Browser, name: &str, size: (u32, u32)) {
    let p = browser::artifacts_dir().join(format!("{name}-{}x{}.png", size.0, size.1));
    b.screenshot(&p);
}

#[test]
fn every_page_works_on_a_podman_pipeline() {
    if !podman::usable() || !browser::usable() {
        eprintln!(
            "skipped: needs root, podman with localhost/bb:1 and chromium + chromium-driver (scripts/install-test-deps.sh)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tag = podman::tag();
    let svc = format!("vigilui{tag}");
    let cname = format!("{svc}-0");
    let token = format!("vigil-ui-{tag}");
    let service = Service::start(d, &format!("com.docker.compose.service={svc}"));
    // a busy container that also writes lines
    service.run(&[
        "--name",
        &cname,
        "--cpus",
        "0.5",
        podman::IMAGE,
        "sh",
        "-c",
        &format!(
            "i=0; while :; do i=$((i+1)); echo \"{token} line $i\"; j=0; while [ $j -lt 20000 ]; do j=$((j+1)); done; done"
        ),
    ]);
    let (hook_port, hits) = webhook_receiver();
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    );
    std::fs::write(d.join("whsec"), secret).unwrap();
    std::fs::write(
        d.join("actions.yml"),
        format!(
            "executors:\n  hook: {{type: webhook, url: \"http://127.0.0.1:{hook_port}/hook\", secret_file: {whsec}, max_attempts: 2, timeout: 5s}}\n\
             restart:\n  - {{name: oom, match: {{event: oom_kill, name: {cname}}}, executor: hook, cooldown: 2m, max_restarts: 3, window: 1h}}\n\
             autoscale:\n  - name: web\n    executor: hook\n    workload: {{service: {svc}}}\n    \
             query: '100 * avg(rate(container_cpu_usage_seconds_total{{name=\"{cname}\"}}[5s])) / 0.5'\n    \
             replicas_query: 'count(count by (name) (container_cpu_usage_seconds_total{{name=~\"{svc}-.*\"}}))'\n    \
             target: 10\n    min_replicas: 1\n    max_replicas: 3\n    interval: 1s\n",
            whsec = d.join("whsec").display()
        ),
    )
    .unwrap();
    let (hp, gp) = (free_port(), free_port());
    let http = format!("127.0.0.1:{hp}");
    let base = format!("http://{http}");
    let rules = format!("{}/../alerts/*.yml", env!("CARGO_MANIFEST_DIR"));
    let _collector = start_collector(
        d,
        hp,
        gp,
        &args(&[
            "--actions",
            &d.join("actions.yml").display().to_string(),
            "--rules",
            &rules,
            "--self-scrape-interval",
            "1s",
        ]),
    );
    let _agent = start_agent(d, gp, &[]);

    // the pipeline has what the pages will show: the container's lines, its
    // metrics, and a scale decision delivered to the webhook
    let logq = format!("{{container_name=\"{cname}\"}}");
    wait_for(Duration::from_secs(60), "the container's lines", || {
        let v = api(
            &http,
            &format!(
                "/loki/api/v1/query_range?limit=5&query={}",
                url_encode(&logq)
            ),
        );
        let s = v.to_string();
        if s.contains(&token) { Ok(()) } else { Err(s) }
    });
    wait_for(
        Duration::from_secs(90),
        "a delivered scale decision",
        || {
            let v = api(&http, "/api/v1/actions?limit=100");
            let delivered = v["data"]["actions"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|e| e["action"] == "scale" && e["result"] == "delivered")
            });
            if delivered && hits.load(Ordering::SeqCst) > 0 {
                Ok(())
            } else {
                Err(v.to_string())
            }
        },
    );

    // enough scrapes for a graph worth comparing point by point
    let q = url_encode(&format!(
        "count_over_time(container_cpu_usage_seconds_total{{name=\"{cname}\"}}[5m]) >= 12"
    ));
    wait_for(
        Duration::from_secs(60),
        "12 scrapes of the container",
        || {
            let v = api(&http, &format!("/api/v1/query?query={q}"));
            if v["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                Ok(())
            } else {
                Err(v.to_string())
            }
        },
    );

    let b = Browser::start(DESKTOP.0, DESKTOP.1);
    let mut metrics = String::new();

    // ---- overview: the container, with a link to its logs
    open(&b, &base, "overview");
    b.wait_js(
        Duration::from_secs(30),
        "the container in the overview",
        &format!("return document.querySelector('a[aria-label=\"logs of {cname}\"]') !== null"),
    );
    // page weight of a first visit (fresh profile: nothing cached)
    let weight = b.js(
        "const r = performance.getEntriesByType('resource').filter(e => e.name.includes('/ui/'));\
         const n = performance.getEntriesByType('navigation')[0];\
         return {files: r.length + 1, transfer: r.reduce((s, e) => s + e.transferSize, 0) + n.transferSize,\
                 decoded: r.reduce((s, e) => s + e.decodedBodySize, 0) + n.decodedBodySize};",
        vec![],
    );
    metrics.push_str(&format!(
        "first visit: {} files, {} bytes transferred ({} bytes uncompressed)\n",
        weight["files"], weight["transfer"], weight["decoded"]
    ));
    no_console_errors(&b, "overview");

    // ---- one click from the container to its logs
    b.click(&format!("a[aria-label=\"logs of {cname}\"]"));
    b.wait_js(
        Duration::from_secs(30),
        "the container's lines on the logs page",
        &format!(
            "const m = document.querySelector('main'); const l = document.querySelector('#lines');\
             return m.dataset.page === 'logs' && m.dataset.ready === '1' && l && l.innerText.includes('{token} line')"
        ),
    );
    no_console_errors(&b, "logs from the overview");

    // ---- query: the graph's points are query_range's
    let now_ms = api(&http, "/api/v1/query?query=time()")["data"]["result"][1]
        .as_str()
        .unwrap()
        .parse::<f64>()
        .unwrap()
        * 1000.0;
    let expr = format!(
        "label_replace(sum by (name) (rate(container_cpu_usage_seconds_total{{name=\"{cname}\"}}[5s])), \"what\", \"cpu\", \"\", \"\") \
         or label_replace(sum by (name) (container_memory_working_set_bytes{{name=\"{cname}\"}}), \"what\", \"memory\", \"\", \"\")"
    );
    open(
        &b,
        &base,
        &format!(
            "query?expr={}&range=5m&end={}&step=2",
            url_encode(&expr),
            now_ms as i64
        ),
    );
    let drawn = b.wait_js(
        Duration::from_secs(30),
        "the graph",
        "const g = document.querySelector('#graph'); if (!g || !g.__uplot) return null;\
         const u = g.__uplot;\
         return {start: g.dataset.start, end: g.dataset.end, step: g.dataset.step, data: u.data,\
                 labels: u.series.slice(1).map(s => s.label), firstChartMs: V.state.firstChartMs};",
    );
    metrics.push_str(&format!(
        "query page: first chart drawn {:.0} ms after navigation\n",
        drawn["firstChartMs"].as_f64().unwrap_or(-1.0)
    ));
    let api_range = api(
        &http,
        &format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={}",
            url_encode(&expr),
            drawn["start"].as_str().unwrap(),
            drawn["end"].as_str().unwrap(),
            drawn["step"].as_str().unwrap()
        ),
    );
    let result = api_range["data"]["result"].as_array().unwrap();
    let labels = drawn["labels"].as_array().unwrap();
    assert_eq!(result.len(), 2, "{api_range}");
    assert_eq!(labels.len(), 2, "{drawn}");
    let xs = drawn["data"][0].as_array().unwrap();
    for s in result {
        let what = s["metric"]["what"].as_str().unwrap();
        let i = labels
            .iter()
            .position(|l| l.as_str().unwrap().contains(&format!("what=\"{what}\"")))
            .unwrap_or_else(|| panic!("no drawn series for {what}: {labels:?}"));
        let ys = drawn["data"][i + 1].as_array().unwrap();
        let mut drawn_points: Vec<(f64, f64)> = xs
            .iter()
            .zip(ys)
            .filter(|(_, y)| !y.is_null())
            .map(|(x, y)| (x.as_f64().unwrap(), y.as_f64().unwrap()))
            .collect();
        drawn_points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let want: Vec<(f64, f64)> = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_f64().unwrap(),
                    p[1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect();
        assert!(want.len() > 3, "too few points to compare: {want:?}");
        // the same timestamps, and the same values up to the last bit or two
        // (numbers cross chromedriver's JSON as doubles printed anew)
        let same = drawn_points.len() == want.len()
            && drawn_points.iter().zip(&want).all(|(a, b)| {
                a.0 == b.0 && (a.1 - b.1).abs() <= 1e-12 * a.1.abs().max(b.1.abs()).max(1e-300)
            });
        assert!(
            same,
            "series {what}: drawn ≠ /api/v1/query_range\ndrawn: {drawn_points:?}\napi:   {want:?}"
        );
    }
    no_console_errors(&b, "query");

    // ---- completion from the keyboard: type, Tab takes the first suggestion
    open(&b, &base, "query");
    b.type_into("#expr", "container_cpu_usage_sec");
    b.wait_js(
        Duration::from_secs(20),
        "metric suggestions",
        "const l = document.querySelector('#expr-suggest'); return l && !l.hidden && l.innerText.includes('container_cpu_usage_seconds_total');",
    );
    b.type_into("#expr", "\u{E004}"); // Tab
    let v = b.js("return document.querySelector('#expr').value", vec![]);
    assert_eq!(
        v,
        json!("container_cpu_usage_seconds_total"),
        "Tab took {v}"
    );
    b.type_into("#expr", &format!("{{name=\"{svc}"));
    b.wait_js(
        Duration::from_secs(20),
        "label value suggestions",
        &format!("const l = document.querySelector('#expr-suggest'); return l && !l.hidden && l.innerText.includes('{cname}');"),
    );
    // an engine error is shown at its position
    open(
        &b,
        &base,
        &format!("query?expr={}&view=table", url_encode("sum(rate(x[5m])")),
    );
    b.wait_js(
        Duration::from_secs(20),
        "the error position",
        "const m = document.querySelector('.error mark'); return m && document.querySelector('.error').innerText.includes('column');",
    );
    b.console(); // the 400 of the broken query is expected

    // ---- actions: the scale decision of this test
    open(&b, &base, "actions");
    b.wait_js(
        Duration::from_secs(30),
        "the scale decision on the actions page",
        "const e = document.querySelector('.timeline li[data-rule=\"web\"].scale'); return e && e.innerText.includes('→') && e.innerText.includes('delivered');",
    );
    b.wait_js(
        Duration::from_secs(30),
        "the autoscaler's charts",
        "const r = document.querySelector('[data-scaler=\"web\"][data-kind=\"replicas\"]'); const m = document.querySelector('[data-scaler=\"web\"][data-kind=\"metric\"]'); return r && r.__uplot && m && m.__uplot;",
    );
    no_console_errors(&b, "actions");

    // ---- every page at both sizes: no console error, no sideways scroll,
    // readable contrast, a screenshot
    let pages = [
        ("overview", "overview".to_string()),
        (
            "query",
            format!(
                "query?expr={}&range=15m",
                url_encode(&format!(
                    "sum by (name) (rate(container_cpu_usage_seconds_total{{name=~\"{svc}-.*\"}}[10s]))"
                ))
            ),
        ),
        (
            "logs",
            format!("logs?query={}&range=15m", url_encode(&logq)),
        ),
        ("alerts", "alerts".to_string()),
        ("actions", "actions?range=15m".to_string()),
        ("status", "status".to_string()),
    ];
    for size in [DESKTOP, PHONE] {
        b.window(size.0, size.1);
        for (name, hash) in &pages {
            open(&b, &base, hash);
            // charts and tables settle after the first load
            std::thread::sleep(Duration::from_millis(500));
            let overflow = b.js(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                vec![],
            );
            assert!(
                overflow.as_f64().unwrap_or(0.0) <= 1.0,
                "{name} at {size:?} scrolls sideways by {overflow} px"
            );
            let bad = b.js(CONTRAST_CHECK, vec![]);
            assert_eq!(
                bad,
                json!([]),
                "{name} at {size:?}: text below WCAG AA contrast"
            );
            shoot(&b, name, size);
            no_console_errors(&b, name);
        }
    }
    std::fs::write(browser::artifacts_dir().join("metrics.txt"), &metrics).unwrap();
    eprintln!("{metrics}");
}

fn htpasswd(user: &str, pw: &str) -> String {
    let out = std::process::Command::new("htpasswd")
        .args(["-nbB", user, pw])
        .output()
        .expect("htpasswd (apache2-utils)");
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    line.split_once(':').expect("user:hash").1.to_string()
}

/// 100,000 series of one metric (`instance` has 100,000 values), one sample
/// each, in remote-write requests of 25,000 series.
fn write_100k(http: &str, token: &str) {
    use vigil_collector::http::remote_write::{Label, Sample, TimeSeries, WriteRequest};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let client = reqwest::blocking::Client::new();
    for chunk in 0..4 {
        let req = WriteRequest {
            timeseries: (chunk * 25_000..(chunk + 1) * 25_000)
                .map(|i| TimeSeries {
                    labels: vec![
                        Label {
                            name: "__name__".into(),
                            value: "ui_load_series".into(),
                        },
                        Label {
                            name: "instance".into(),
                            value: format!("i-{i:06}"),
                        },
                        Label {
                            name: "job".into(),
                            value: format!("job-{}", i % 20),
                        },
                    ],
                    samples: vec![Sample {
                        value: i as f64,
                        timestamp: now,
                    }],
                })
                .collect(),
            metadata: vec![],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&prost::Message::encode_to_vec(&req))
            .unwrap();
        let r = client
            .post(format!("http://{http}/api/v1/write"))
            .bearer_auth(token)
            .header("content-encoding", "snappy")
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "remote write: {}", r.status());
    }
}

/// With basic auth on (a read-only user) and 100,000 series of one metric,
/// the pages load through the browser's credentials, the cardinality view
/// and completion ask for bounded answers (`limit`), and every answer the
/// page received stays small.
#[test]
fn with_basic_auth_and_100k_series_requests_stay_bounded() {
    if !browser::usable() {
        eprintln!("skipped: needs chromium + chromium-driver (scripts/install-test-deps.sh)");
        return;
    }
    vigil_collector::tls::ensure_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("web.yml"),
        format!(
            "basic_auth_users:\n  viewer: {}\n",
            htpasswd("viewer", "s3cret")
        ),
    )
    .unwrap();
    std::fs::write(d.join("write-token"), "w-token-123\n").unwrap();
    let (hp, gp) = (free_port(), free_port());
    let http = format!("127.0.0.1:{hp}");
    let _collector = start_collector(
        d,
        hp,
        gp,
        &args(&[
            "--web-config",
            &d.join("web.yml").display().to_string(),
            "--basic-auth-role",
            "viewer=read",
            "--write-token-file",
            &d.join("write-token").display().to_string(),
        ]),
    );
    // the page itself needs the read role: the browser is asked to sign in
    let r = reqwest::blocking::get(format!("http://{http}/")).unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    write_100k(&http, "w-token-123");

    let b = Browser::start(DESKTOP.0, DESKTOP.1);
    // credentials in the URL: the browser signs in with them and sends them
    // with the page's own requests (the UI builds its URLs from the origin)
    let base = format!("http://viewer:s3cret@{http}");
    open(&b, &base, "status");
    let text = b.wait_js(
        Duration::from_secs(30),
        "the cardinality view",
        "const c = document.querySelector('#cardinality'); return c && c.querySelector('table') && c.innerText;",
    );
    let text = text.as_str().unwrap();
    assert!(text.contains("100,0"), "series count not shown: {text}");
    assert!(text.contains("ui_load_series"), "{text}");
    no_console_errors(&b, "status with auth");

    // completion of a metric name, then of values of a 100,000-value label
    open(&b, &base, "query");
    b.type_into("#expr", "ui_load");
    b.wait_js(
        Duration::from_secs(20),
        "metric suggestions",
        "const l = document.querySelector('#expr-suggest'); return l && !l.hidden && l.innerText.includes('ui_load_series');",
    );
    b.type_into("#expr", "\u{E004}{instance=\"i-0123");
    b.wait_js(
        Duration::from_secs(20),
        "instance suggestions",
        "const l = document.querySelector('#expr-suggest'); return l && !l.hidden && l.innerText.includes('i-012345');",
    );
    no_console_errors(&b, "query with auth");
    // every request the page made is bounded, and so is every answer
    let entries = b.js(
        "return performance.getEntriesByType('resource').filter(e => e.name.includes('/api/'))\
           .map(e => ({url: e.name, size: e.decodedBodySize}));",
        vec![],
    );
    let entries = entries.as_array().unwrap();
    assert!(!entries.is_empty());
    for e in entries {
        let url = e["url"].as_str().unwrap();
        let size = e["size"].as_u64().unwrap();
        assert!(size < 16 * 1024, "{url} answered {size} bytes");
        if url.contains("/label/") || url.contains("/labels") || url.contains("/series") {
            assert!(url.contains("limit="), "unbounded request {url}");
        }
    }
    // the bounds as the APIs keep them: top lists cut to `limit`, values to theirs
    let client = reqwest::blocking::Client::new();
    let read = |path: &str| -> Value {
        let r = client
            .get(format!("http://{http}{path}"))
            .basic_auth("viewer", Some("s3cret"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().unwrap()
    };
    let tsdb = read("/api/v1/status/tsdb?limit=10");
    assert!(tsdb["data"]["headStats"]["numSeries"].as_u64().unwrap() >= 100_000);
    for list in [
        "seriesCountByMetricName",
        "labelValueCountByLabelName",
        "seriesCountByLabelValuePair",
    ] {
        let n = tsdb["data"][list].as_array().unwrap().len();
        assert!((1..=10).contains(&n), "{list}: {n} entries");
    }
    assert_eq!(
        tsdb["data"]["seriesCountByLabelValuePair"][0]["name"],
        "__name__=ui_load_series"
    );
    let values = read("/api/v1/label/instance/values?limit=50");
    assert_eq!(values["data"].as_array().unwrap().len(), 50);

    // the actions page without the admin role says so instead of failing
    open(&b, &base, "actions");
    b.wait_js(
        Duration::from_secs(20),
        "the admin-role note",
        "return document.querySelector('main').innerText.includes('without the admin role')",
    );
    shoot(&b, "actions-read-role", DESKTOP);
}
