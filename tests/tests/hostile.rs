//! The findings of a hostile user against the collector, each reproduced on
//! the real binary, and the collector still up and serving afterwards:
//! deep PromQL/LogQL queries (once a stack overflow that aborted the process),
//! idle and slow connections on both ports (once every file descriptor),
//! unbounded labels and forged timestamps in remote write, an empty token
//! file that opened the Alertmanager webhook, and queries that ran on for
//! clients that had gone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use vigil_collector::http::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use vigil_e2e::{args, free_port, get, http, start_agent, start_collector, wait_for};

fn encode(req: &WriteRequest) -> Vec<u8> {
    let raw = prost::Message::encode_to_vec(req);
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy")
}

fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| Sample { value, timestamp })
            .collect(),
    }
}

fn write(addr: &str, ts: Vec<TimeSeries>) -> (u16, String) {
    let body = encode(&WriteRequest {
        timeseries: ts,
        metadata: vec![],
    });
    let (code, b) = http(
        "POST",
        addr,
        "/api/v1/write",
        Some("application/x-protobuf"),
        &body,
    )
    .expect("remote write");
    (code, String::from_utf8_lossy(&b).to_string())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn form(q: &str) -> Vec<u8> {
    let mut out = String::from("query=");
    for b in q.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out.into_bytes()
}

/// POSTs a query; a failed exchange stops the test with what the collector
/// said (a crash shows up as its last words, not just a reset connection).
fn post_query(c: &vigil_e2e::Proc, addr: &str, path: &str, q: &str) -> (u16, String) {
    match http(
        "POST",
        addr,
        path,
        Some("application/x-www-form-urlencoded"),
        &form(q),
    ) {
        Ok((code, b)) => (code, String::from_utf8_lossy(&b).to_string()),
        Err(e) => panic!(
            "query {} bytes to {path}: {e}; collector stderr:\n{}",
            q.len(),
            c.stderr_text()
        ),
    }
}

fn metric(addr: &str, line_prefix: &str) -> f64 {
    let (_, m) = get(addr, "/metrics").expect("metrics");
    m.lines()
        .filter(|l| l.starts_with(line_prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn deep_queries_are_refused_and_the_collector_stays_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hp, gp) = (free_port(), free_port());
    let mut c = start_collector(dir.path(), hp, gp, &[]);
    let addr = format!("127.0.0.1:{hp}");
    let terms = vec!["1"; 4000].join("+");
    let parens = format!("{}1{}", "(".repeat(8000), ")".repeat(8000));
    for q in [&terms, &parens] {
        let (code, body) = post_query(&c, &addr, "/api/v1/query", q);
        assert_eq!(code, 400, "{body}");
        assert!(body.contains("too deeply nested"), "{body}");
    }
    let logql = format!(
        "{}count_over_time({{job=\"x\"}}[1m]){}",
        "sum(".repeat(5000),
        ")".repeat(5000)
    );
    let (code, body) = post_query(&c, &addr, "/loki/api/v1/query_range", &logql);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("too deeply nested"), "{body}");
    // still alive and answering
    assert!(
        c.try_wait().is_none(),
        "collector exited: {}",
        c.stderr_text()
    );
    let (code, body) = post_query(&c, &addr, "/api/v1/query", "1+1");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"2\""), "{body}");
}

#[test]
fn idle_and_slow_connections_cannot_take_every_descriptor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hp, gp) = (free_port(), free_port());
    let c = start_collector(
        dir.path(),
        hp,
        gp,
        &args(&[
            "--http-max-connections",
            "20",
            "--grpc-max-connections",
            "20",
            "--header-timeout",
            "1s",
            "--connection-idle-timeout",
            "3s",
        ]),
    );
    let addr = format!("127.0.0.1:{hp}");
    let grpc = format!("127.0.0.1:{gp}");
    let base = open_fds(c.pid());
    // 300 silent connections on each port, plus slowloris senders
    let mut held = Vec::new();
    for _ in 0..300 {
        held.push(TcpStream::connect(&addr).expect("connect http"));
        held.push(TcpStream::connect(&grpc).expect("connect grpc"));
    }
    let mut slow: Vec<TcpStream> = (0..30)
        .map(|_| TcpStream::connect(&addr).expect("connect http"))
        .collect();
    for s in &mut slow {
        let _ = s.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n");
    }
    // the collector holds at most its limits, whatever the clients do
    let peak = (0..20)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            open_fds(c.pid())
        })
        .max()
        .unwrap_or(0);
    assert!(
        peak <= base + 20 + 20 + 10,
        "open descriptors grew from {base} to {peak}"
    );
    // health answers, once the silent ones are cut, though the clients keep them
    wait_for(
        Duration::from_secs(60),
        "health while flooded",
        || match get(&addr, "/-/healthy") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // a slowloris connection was closed by the server (reads EOF or reset)
    let s = &mut slow[0];
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = [0u8; 64];
    let closed =
        matches!(s.read(&mut buf), Ok(0) | Err(_)) || s.write_all(b"X-More: 1\r\n\r\n").is_err();
    assert!(closed, "a slow header sender was never cut off");
    // the silent gRPC connections are all cut (the clients still hold them)
    wait_for(
        Duration::from_secs(90),
        "silent gRPC connections cut",
        || {
            let n = metric(
                &addr,
                "vigil_collector_connections_timed_out_total{listener=\"grpc\"",
            );
            if n >= 300.0 {
                Ok(())
            } else {
                Err(format!("{n}"))
            }
        },
    );
    // and an agent connects and ships through the port they flooded
    let agent = start_agent(dir.path(), gp, &[]);
    wait_for(Duration::from_secs(60), "agent data", || {
        let (code, body) = get(&addr, "/api/v1/query?query=node_load1")?;
        if code == 200 && body.contains("\"node_load1\"") {
            Ok(())
        } else {
            Err(format!("{body} {}", agent.stderr_text()))
        }
    });
    drop(held);
}

#[test]
fn remote_write_limits_refuse_big_labels_forged_times_and_rewrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hp, gp) = (free_port(), free_port());
    let mut c = start_collector(dir.path(), hp, gp, &[]);
    let addr = format!("127.0.0.1:{hp}");
    let now = now_ms();
    // a 60 MiB label value is refused by the request size already; a value
    // over the label limit is refused while the rest of the request is stored
    let big = "v".repeat(64 << 10);
    let (code, body) = write(
        &addr,
        vec![
            series(&[("__name__", "big_label"), ("x", &big)], &[(now, 1.0)]),
            series(&[("__name__", "fine"), ("job", "rw")], &[(now, 1.0)]),
        ],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("label_value_length_limit"), "{body}");
    let many: Vec<(String, String)> = (0..100_000)
        .map(|i| (format!("l{i}"), "x".to_string()))
        .collect();
    let mut labels: Vec<(&str, &str)> = vec![("__name__", "many_labels")];
    labels.extend(many.iter().map(|(a, b)| (a.as_str(), b.as_str())));
    let (code, body) = write(&addr, vec![series(&labels, &[(now, 1.0)])]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("label_count_limit"), "{body}");
    // a forged future sample is refused and does not freeze the series
    let ten_years = now + 10 * 365 * 86_400_000;
    let (code, body) = write(
        &addr,
        vec![series(
            &[("__name__", "node_load1"), ("node", "n1")],
            &[(ten_years, 99.0)],
        )],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("too_far_in_future"), "{body}");
    let (code, body) = write(
        &addr,
        vec![series(
            &[("__name__", "node_load1"), ("node", "n1")],
            &[(now, 1.5)],
        )],
    );
    assert_eq!(code, 204, "{body}");
    // the same sample again is fine (a retry); a new value at it is refused
    let (code, _) = write(
        &addr,
        vec![series(
            &[("__name__", "node_load1"), ("node", "n1")],
            &[(now, 1.5)],
        )],
    );
    assert_eq!(code, 204);
    let (code, body) = write(
        &addr,
        vec![series(
            &[("__name__", "node_load1"), ("node", "n1")],
            &[(now, 7.0)],
        )],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("duplicate"), "{body}");
    let (_, q) = get(
        &addr,
        &format!("/api/v1/query?query=node_load1&time={}", now / 1000 + 1),
    )
    .expect("query");
    assert!(q.contains("\"1.5\""), "{q}");
    let (_, q) = get(&addr, "/api/v1/query?query=fine").expect("query");
    assert!(
        q.contains("\"rw\""),
        "the valid series of a partly refused request is stored: {q}"
    );
    let (_, q) = get(&addr, "/api/v1/series?match[]=big_label").expect("series");
    assert!(!q.contains("big_label"), "{q}");
    // too many series in one request
    let lots: Vec<TimeSeries> = (0..50_001)
        .map(|i| series(&[("__name__", "s"), ("i", &i.to_string())], &[(now, 1.0)]))
        .collect();
    let (code, body) = write(&addr, lots);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("remote_write_max_series_per_request"),
        "{body}"
    );
    // every refusal was counted
    for reason in [
        "label_value_length_limit",
        "label_count_limit",
        "too_far_in_future",
        "duplicate",
    ] {
        assert!(
            metric(
                &addr,
                &format!("vigil_collector_samples_refused_total{{reason=\"{reason}\"}}")
            ) >= 1.0,
            "{reason} not counted"
        );
    }
    assert!(c.try_wait().is_none());
    // the receiver can be switched off
    drop(c);
    let dir = tempfile::tempdir().expect("tempdir");
    let (hp, gp) = (free_port(), free_port());
    let _c = start_collector(
        dir.path(),
        hp,
        gp,
        &args(&["--remote-write-receiver", "false"]),
    );
    let (code, body) = write(
        &format!("127.0.0.1:{hp}"),
        vec![series(&[("__name__", "x")], &[(now, 1.0)])],
    );
    assert_eq!(code, 404, "{body}");
}

#[test]
fn an_empty_alertmanager_token_file_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tok"), "\n").expect("token");
    let actions = dir.path().join("actions.yml");
    std::fs::write(
        &actions,
        "global: {alertmanager_token_file: tok}\nexecutors: {w: {type: webhook, url: \"http://127.0.0.1:9/\"}}\n",
    )
    .expect("actions");
    let out = std::process::Command::new(vigil_e2e::bin("vigil-collector"))
        .args([
            "--http-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--grpc-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--actions",
            &actions.display().to_string(),
        ])
        .output()
        .expect("run collector");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("alertmanager_token_file") && err.contains("empty"),
        "{err}"
    );
}

#[test]
fn queries_wait_for_a_slot_and_stop_when_their_client_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hp, gp) = (free_port(), free_port());
    let _c = start_collector(dir.path(), hp, gp, &args(&["--query-max-concurrency", "1"]));
    let addr = format!("127.0.0.1:{hp}");
    // a query that runs for many seconds
    let heavy = "count_over_time(vector(1)[60d:1s])";
    let mut s = TcpStream::connect(&addr).expect("connect");
    let body = form(heavy);
    let req = format!(
        "POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    s.write_all(&body).expect("send");
    wait_for(Duration::from_secs(10), "the heavy query running", || {
        let n = metric(&addr, "vigil_collector_queries_running");
        if n >= 1.0 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    });
    // the only slot is taken: a query with a short timeout waits, then fails
    let (code, body) = get(&addr, "/api/v1/query?query=1&timeout=200ms").expect("query");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("query slots"), "{body}");
    // the client goes: the heavy query stops and frees its slot
    drop(s);
    wait_for(Duration::from_secs(10), "the heavy query canceled", || {
        let n = metric(
            &addr,
            "vigil_collector_queries_total{language=\"promql\",outcome=\"canceled\"}",
        );
        if n >= 1.0 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    });
    let (code, body) = get(&addr, "/api/v1/query?query=1%2B1").expect("query");
    assert_eq!(code, 200, "{body}");
}
