//! Short versions of the soak runs of `scripts/soak.sh` (whose long figures
//! are in docs/reliability.md): simulated agents (`vigil-loadgen`) over the
//! real gRPC protocol with a token, then every series checked through the
//! query API — every counter value stored exactly once.
//! - an outage: the collector stopped (SIGTERM) while 10 agents keep
//!   generating, then restarted; the agents resend their backlog;
//! - a load: 20 agents × 200 series every second with dashboard queries
//!   running against the collector.
//!
//! No timing assertions: only "nothing lost, nothing twice".

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use vigil_e2e::*;

fn loadgen(dir: &Path, grpc: u16, http: u16, extra: &[&str]) -> Proc {
    let mut a = args(&[
        "--collector",
        &format!("http://127.0.0.1:{grpc}"),
        "--token-file",
        &dir.join("token").display().to_string(),
        "--verify-url",
        &format!("http://127.0.0.1:{http}"),
        "--status-file",
        &dir.join("status.json").display().to_string(),
        "--summary",
        &dir.join("summary.json").display().to_string(),
        "--report-every",
        "5s",
        "--drain-timeout",
        "2m",
    ]);
    a.extend(args(extra));
    Proc::start("loadgen", &bin("vigil-loadgen"), &a, &dir.join("logs"))
}

fn status(dir: &Path) -> serde_json::Value {
    std::fs::read_to_string(dir.join("status.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Waits for the loadgen to exit by itself (it stops after --duration or on
/// SIGTERM, drains and checks) and returns its summary.
fn finish(dir: &Path, lg: &mut Proc, stop: bool) -> serde_json::Value {
    let code = if stop {
        lg.terminate(Duration::from_secs(240))
    } else {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            if let Some(st) = lg.try_wait() {
                break Some(st);
            }
            assert!(Instant::now() < deadline, "loadgen did not finish");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("summary.json"))
            .unwrap_or_else(|e| panic!("no summary ({e}): {}", lg.stderr_text())),
    )
    .unwrap();
    assert_eq!(
        code.and_then(|c| c.code()),
        Some(0),
        "loadgen failed: {summary:#}\n{}",
        lg.stderr_text()
    );
    summary
}

fn assert_nothing_lost(summary: &serde_json::Value, agents: u64, series: u64) {
    let v = &summary["verify"];
    assert_eq!(summary["drained"], true, "{summary:#}");
    assert_eq!(
        v["series_expected"].as_u64(),
        Some(agents * series),
        "{summary:#}"
    );
    assert_eq!(v["series_ok"], v["series_expected"], "{summary:#}");
    assert_eq!(v["samples_missing"], 0, "{summary:#}");
    assert_eq!(v["samples_extra"], 0, "{summary:#}");
    let expected = v["samples_expected"].as_u64().unwrap();
    assert!(expected > 0, "{summary:#}");
    assert_eq!(v["samples_found"].as_u64(), Some(expected), "{summary:#}");
    assert_eq!(
        summary["status"]["samples_acked"].as_u64(),
        Some(expected),
        "{summary:#}"
    );
}

#[test]
fn outage_short_10_agents_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("token"), "soak-test-token\n").unwrap();
    let (http, grpc) = (free_port(), free_port());
    let token = args(&["--token-file", &d.join("token").display().to_string()]);
    let mut collector = start_collector(d, http, grpc, &token);
    let mut lg = loadgen(
        d,
        grpc,
        http,
        &[
            "--agents",
            "10",
            "--series",
            "20",
            "--interval",
            "1s",
            "--max-backoff",
            "2s",
        ],
    );
    // a few batches acknowledged before the outage
    wait_for(Duration::from_secs(60), "first acks", || {
        let s = status(d);
        match s["batches_acked"].as_u64() {
            Some(n) if n >= 30 => Ok(()),
            _ => Err(format!("{s} {}", lg.stderr_text())),
        }
    });
    assert!(collector.terminate(Duration::from_secs(30)).is_some());
    // the agents buffer meanwhile
    wait_for(
        Duration::from_secs(60),
        "a backlog during the outage",
        || {
            let s = status(d);
            match s["unacked_batches"].as_u64() {
                Some(n) if n >= 100 => Ok(()),
                _ => Err(s.to_string()),
            }
        },
    );
    std::thread::sleep(Duration::from_secs(10));
    let backlog = status(d)["unacked_batches"].as_u64().unwrap();
    let _collector = start_collector(d, http, grpc, &token);
    // drained: nothing older than two intervals waits
    wait_for(Duration::from_secs(120), "the backlog drained", || {
        let s = status(d);
        match s["oldest_unacked_age_ms"].as_i64() {
            Some(ms) if ms < 2000 && s["connected_agents"] == 10 => Ok(()),
            _ => Err(s.to_string()),
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    let summary = finish(d, &mut lg, true);
    assert!(backlog >= 100, "{backlog}");
    assert!(
        summary["status"]["reconnects"].as_u64().unwrap() >= 10,
        "every agent reconnected: {summary:#}"
    );
    assert_nothing_lost(&summary, 10, 20);
}

#[test]
fn load_short_20_agents_with_queries_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("token"), "soak-test-token\n").unwrap();
    let (http, grpc) = (free_port(), free_port());
    let token = args(&["--token-file", &d.join("token").display().to_string()]);
    let _collector = start_collector(d, http, grpc, &token);
    let mut lg = loadgen(
        d,
        grpc,
        http,
        &[
            "--agents",
            "20",
            "--series",
            "200",
            "--interval",
            "1s",
            "--duration",
            "20s",
        ],
    );
    // dashboard-like queries while the load runs; each must answer
    let addr = format!("127.0.0.1:{http}");
    let queries = [
        "sum(rate(vigil_loadgen_counter_total[10s]))",
        "sum by (node) (rate(vigil_loadgen_counter_total{node=~\"loadgen-1.?\"}[10s]))",
        "topk(5, vigil_loadgen_counter_total{node=\"loadgen-7\"})",
        "count(vigil_loadgen_counter_total)",
    ];
    let mut answered = 0;
    while lg.try_wait().is_none() {
        for q in queries {
            let end = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let path = format!(
                "/api/v1/query_range?query={}&start={}&end={end}&step=2",
                url_encode(q),
                end - 60
            );
            let (code, body) = get(&addr, &path).unwrap();
            assert_eq!(code, 200, "{q}: {body}");
            answered += 1;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(answered >= 4);
    let summary = finish(d, &mut lg, false);
    assert_nothing_lost(&summary, 20, 200);
    assert!(summary["ack_latency"]["count"].as_u64().unwrap() > 0);
}
