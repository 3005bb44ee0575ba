//! What the fuzz targets share: one tokio runtime built like the collector's
//! (query threads with the collector's stack size), a tiny store and log
//! store with a few realistic series and streams, and a way to send one
//! HTTP request through the collector's real router.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use http::{Request, StatusCode};
use tower::ServiceExt;
use vigil_collector::ingest::{IngestedLog, LogSink};
use vigil_collector::logs::{LogStore, LogStoreOptions};
use vigil_collector::store::{Store, StoreOptions};
use vigil_common::Labels;

/// The store's sample times: every 15 s for 10 minutes from here (ms).
pub const T0_MS: i64 = 1_700_000_000_000;
pub const STEP_MS: i64 = 15_000;
pub const POINTS: i64 = 40;

/// The runtime every target that needs one uses: current-thread (so a run is
/// repeatable), blocking threads (where queries evaluate) with the stack the
/// collector gives its runtime threads.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_stack_size(vigil_collector::promql::THREAD_STACK_BYTES)
            .build()
            .expect("tokio runtime")
    })
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

/// A store with counters, gauges and a histogram of two jobs.
pub fn tiny_store() -> Arc<Store> {
    let store = Arc::new(Store::new(StoreOptions::default()));
    let series: Vec<(Labels, Box<dyn Fn(i64) -> f64>)> = vec![
        (
            labels(&[("__name__", "up"), ("job", "api"), ("instance", "a:9100")]),
            Box::new(|_| 1.0),
        ),
        (
            labels(&[("__name__", "up"), ("job", "db"), ("instance", "b:9100")]),
            Box::new(|i| if i % 7 == 0 { 0.0 } else { 1.0 }),
        ),
        (
            labels(&[
                ("__name__", "http_requests_total"),
                ("job", "api"),
                ("code", "200"),
                ("method", "get"),
            ]),
            Box::new(|i| (i * 10) as f64),
        ),
        (
            labels(&[
                ("__name__", "http_requests_total"),
                ("job", "api"),
                ("code", "500"),
                ("method", "post"),
            ]),
            // a counter reset half way
            Box::new(|i| ((i % 20) * 3) as f64),
        ),
        (
            labels(&[("__name__", "node_load1"), ("node", "n1")]),
            Box::new(|i| 0.5 + (i as f64).sin()),
        ),
        (
            labels(&[
                ("__name__", "container_memory_working_set_bytes"),
                ("namespace", "prod"),
                ("pod", "web-1"),
                ("container", "nginx"),
            ]),
            Box::new(|i| 1e6 + (i * 4096) as f64),
        ),
    ];
    let mut all = series;
    for le in ["0.1", "0.5", "1", "+Inf"] {
        let f: f64 = if le == "+Inf" {
            4.0
        } else {
            le.parse().unwrap_or(1.0)
        };
        all.push((
            labels(&[
                ("__name__", "req_duration_seconds_bucket"),
                ("job", "api"),
                ("le", le),
            ]),
            Box::new(move |i| (i as f64) * f.min(2.0)),
        ));
    }
    for (l, f) in all {
        let r = store.get_or_create(&l).expect("series");
        for i in 0..POINTS {
            store.append(r, T0_MS + i * STEP_MS, f(i)).expect("append");
        }
    }
    store
}

/// A log store in a temporary folder with two streams of mixed lines.
pub fn tiny_log_store() -> Arc<LogStore> {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"));
    let st = LogStore::open(dir.path(), LogStoreOptions::default()).expect("log store");
    let lines = [
        r#"level=info msg="request served" status=200 duration=12ms path=/api"#,
        r#"{"level":"error","msg":"upstream timeout","status":504,"latency_ms":3012}"#,
        "GET /index.html 200 512",
        "panic: runtime error: index out of range",
        r#"level=warn msg="slow query" took=2.5s"#,
    ];
    let mut logs = Vec::new();
    for (s, (ns, pod, stream)) in [("prod", "web-1", "stdout"), ("dev", "db-0", "stderr")]
        .into_iter()
        .enumerate()
    {
        for i in 0..40u64 {
            let line = lines[(i as usize + s) % lines.len()];
            logs.push(IngestedLog {
                stream: labels(&[
                    ("namespace", ns),
                    ("pod", pod),
                    ("stream", stream),
                    ("node", "n1"),
                ]),
                source_id: s as u64 + 1,
                source_path: format!("/var/log/pods/{pod}/0.log"),
                offset: i * 100,
                end_offset: i * 100 + 99,
                timestamp_ns: (T0_MS + i as i64 * STEP_MS) * 1_000_000,
                line: line.to_string(),
            });
        }
    }
    st.append(&logs);
    st
}

/// The collector's HTTP app over the tiny stores (no authentication, no
/// WAL: remote write appends to the store directly, as without ingest).
pub fn router() -> axum::Router {
    static APP: OnceLock<axum::Router> = OnceLock::new();
    APP.get_or_init(|| {
        let mut state = vigil_collector::http::AppState::new(tiny_store());
        state.logs = Some(tiny_log_store());
        state
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        vigil_collector::http::router(state)
    })
    .clone()
}

/// Sends `req` through the router; the status and body of the answer.
pub fn send(req: Request<Body>) -> (StatusCode, Vec<u8>) {
    runtime().block_on(async {
        let resp = router().oneshot(req).await.expect("router is infallible");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, body.to_vec())
    })
}

/// `application/x-www-form-urlencoded` / query-string encoding of arbitrary bytes.
pub fn form_encode(raw: &[u8]) -> String {
    percent_encoding::percent_encode(raw, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A 5xx is a bug for requests the client alone controls (the store is
/// healthy); the API answers bad input with 4xx.
pub fn assert_not_server_error(what: &str, status: StatusCode, body: &[u8]) {
    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {status}: {}",
        String::from_utf8_lossy(body)
    );
}
