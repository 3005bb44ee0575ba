//! Full disks, end to end, on small tmpfs mounts the tests make themselves
//! (root only; skipped otherwise, and unmounted in every case):
//!
//! - the collector's data directory fills up while an agent ships numbered
//!   log lines and its scrape counter: the collector stops acknowledging
//!   (the agent keeps buffering), answers remote write and pushes 503,
//!   keeps answering queries and says so in `/-/ready` and `/metrics`; once
//!   the test frees space it resumes by itself, and every line and every
//!   scrape arrives exactly once;
//! - the agent's state directory fills up while the collector is away: the
//!   agent drops its oldest batches, counted, keeps scraping, and what it
//!   kept arrives once the collector is back — the newest lines, each once,
//!   and the dropped ones counted to the line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use vigil_e2e::{
    Proc, Tmpfs, bin, find, free_port, get, http_with_headers, parse_text, url_encode, wait_for,
};

/// A numbered line, padded with hex noise (compresses like real logs, not
/// like zeros).
fn line(i: usize) -> String {
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut pad = String::with_capacity(480);
    while pad.len() < 480 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pad.push_str(&format!("{x:016x}"));
    }
    format!("dfline-{i:06} {pad}")
}

fn write_lines(path: &Path, n: usize) {
    let mut f = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("log file"),
    );
    for i in 0..n {
        writeln!(f, "{}", line(i)).expect("write");
    }
    f.flush().expect("flush");
}

fn metrics_of(addr: &str) -> Result<Vec<vigil_e2e::TextSample>, String> {
    let (code, body) = get(addr, "/metrics")?;
    if code != 200 {
        return Err(format!("/metrics: {code}"));
    }
    Ok(parse_text(&body))
}

/// The sum of every sample of `name` with `labels` (0 when absent).
fn metric(addr: &str, name: &str, labels: &[(&str, &str)]) -> Result<f64, String> {
    Ok(find(&metrics_of(addr)?, name, labels)
        .iter()
        .map(|s| s.value)
        .sum())
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The numbered lines of `node` the collector holds, oldest first.
fn stored_lines(http: &str, node: &str, start_ns: i64) -> Result<Vec<String>, String> {
    let q = url_encode(&format!(r#"{{node="{node}"}} |= "dfline-""#));
    let end = now_ns() + 60_000_000_000;
    let (code, body) = get(
        http,
        &format!(
            "/loki/api/v1/query_range?query={q}&start={start_ns}&end={end}&limit=50000&direction=forward"
        ),
    )?;
    if code != 200 {
        return Err(format!("{code}: {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let mut out: Vec<(i64, String)> = Vec::new();
    for s in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        for e in s["values"].as_array().cloned().unwrap_or_default() {
            let t = e[0].as_str().and_then(|t| t.parse().ok()).unwrap_or(0);
            out.push((t, e[1].as_str().unwrap_or("").to_string()));
        }
    }
    out.sort();
    Ok(out.into_iter().map(|(_, l)| l).collect())
}

/// The values of the agent's scrape counter at the collector, by time.
fn scrape_counter(http: &str, node: &str) -> Result<Vec<f64>, String> {
    let q = url_encode(&format!(
        r#"vigil_agent_scrapes_total{{node="{node}"}}[15m]"#
    ));
    let (code, body) = get(http, &format!("/api/v1/query?query={q}"))?;
    if code != 200 {
        return Err(format!("{code}: {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for s in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        for p in s["values"].as_array().cloned().unwrap_or_default() {
            out.push((
                p[0].as_f64().unwrap_or(0.0),
                p[1].as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN),
            ));
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(out.into_iter().map(|p| p.1).collect())
}

fn start_collector(data: &Path, logs: &Path, hp: u16, gp: u16, extra: &[&str]) -> Proc {
    let mut args: Vec<String> = [
        "--http-listen",
        &format!("127.0.0.1:{hp}"),
        "--grpc-listen",
        &format!("127.0.0.1:{gp}"),
        "--data-dir",
        &data.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let p = Proc::start("collector", &bin("vigil-collector"), &args, logs);
    let http = format!("127.0.0.1:{hp}");
    wait_for(Duration::from_secs(30), "collector ready", || {
        match get(&http, "/-/ready") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?} {}", p.stderr_text())),
        }
    });
    p
}

fn start_agent(state: &Path, logs: &Path, node: &str, gp: u16, ap: u16, log_glob: &str) -> Proc {
    let args: Vec<String> = [
        "--collector",
        &format!("http://127.0.0.1:{gp}"),
        "--node-name",
        node,
        "--interval",
        "1s",
        "--batch-max-wait",
        "100ms",
        "--http-listen",
        &format!("127.0.0.1:{ap}"),
        "--state-dir",
        &state.display().to_string(),
        "--log-default-paths",
        "false",
        "--log-path",
        log_glob,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Proc::start(&format!("agent-{node}"), &bin("vigil-agent"), &args, logs)
}

/// Values go up by exactly one: nothing lost, nothing twice.
fn assert_consecutive(values: &[f64], what: &str) {
    assert!(!values.is_empty(), "{what}: nothing arrived");
    for w in values.windows(2) {
        assert_eq!(
            w[1] - w[0],
            1.0,
            "{what}: the scrape counter jumps from {} to {} (lost or doubled)",
            w[0],
            w[1]
        );
    }
}

#[test]
fn a_full_collector_disk_stops_acks_then_resumes_and_everything_arrives_once() {
    const LINES: usize = 16_000;
    // declared first: dropped last, after the processes are gone
    let fs = match Tmpfs::mount("40m") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let d = tempfile::tempdir().expect("tempdir");
    let logs = d.path().join("logs");
    let app = d.path().join("app");
    std::fs::create_dir_all(&app).expect("app dir");
    let (hp, gp, ap) = (free_port(), free_port(), free_port());
    let http = format!("127.0.0.1:{hp}");
    let agent_http = format!("127.0.0.1:{ap}");
    let start_ns = now_ns() - 60_000_000_000;
    let mut collector = start_collector(
        &fs.path().join("data"),
        &logs,
        hp,
        gp,
        &["--min-free-disk", "6MiB"],
    );
    let glob = format!("{}/*.log", app.display());
    let mut agent = start_agent(&d.path().join("agent"), &logs, "diskfull", gp, ap, &glob);
    wait_for(Duration::from_secs(30), "the first scrapes", || {
        let n = scrape_counter(&http, "diskfull")?.len();
        if n >= 2 { Ok(()) } else { Err(format!("{n}")) }
    });

    // leave the collector 4 MiB above its threshold, then ship ~8 MB of lines
    let ballast = fs.fill("ballast", 10 << 20);
    write_lines(&app.join("app.log"), LINES);
    wait_for(
        Duration::from_secs(60),
        "the collector's disk full",
        || match metric(&http, "vigil_collector_disk_full", &[])? {
            1.0 => Ok(()),
            v => Err(format!("disk_full {v}, {} bytes free", fs.available())),
        },
    );

    // acknowledgements stop; the agent keeps sealing into its buffer
    let unacked = || -> Result<f64, String> {
        Ok(
            metric(&agent_http, "vigil_agent_batches_sealed_total", &[])?
                - metric(&agent_http, "vigil_agent_batches_acked_total", &[])?,
        )
    };
    wait_for(Duration::from_secs(30), "the agent buffering", || {
        let u = unacked()?;
        if u >= 3.0 {
            Ok(())
        } else {
            Err(format!("{u} unacked"))
        }
    });
    let received = metric(&http, "vigil_collector_batches_received_total", &[]).unwrap();
    let sealed = metric(&agent_http, "vigil_agent_batches_sealed_total", &[]).unwrap();
    wait_for(Duration::from_secs(30), "two more batches sealed", || {
        let s = metric(&agent_http, "vigil_agent_batches_sealed_total", &[])?;
        if s >= sealed + 2.0 {
            Ok(())
        } else {
            Err(format!("{s}"))
        }
    });
    assert_eq!(
        metric(&http, "vigil_collector_batches_received_total", &[]).unwrap(),
        received,
        "batches were acknowledged while the disk was full"
    );
    assert!(
        metric(
            &http,
            "vigil_collector_disk_full_refusals_total",
            &[("source", "agent")]
        )
        .unwrap()
            >= 1.0
    );
    // writes get 503 (retryable), queries are answered, /-/ready says so
    let (code, body) = http_with_headers(
        "POST",
        &http,
        "/api/v1/write",
        &[("Content-Type", "application/x-protobuf")],
        b"not even snappy",
    )
    .unwrap();
    assert_eq!(code, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("disk full"));
    let push = format!(
        r#"{{"streams":[{{"stream":{{"job":"x"}},"values":[["{}","refused"]]}}]}}"#,
        now_ns()
    );
    let (code, body) = http_with_headers(
        "POST",
        &http,
        "/loki/api/v1/push",
        &[("Content-Type", "application/json")],
        push.as_bytes(),
    )
    .unwrap();
    assert_eq!(code, 503, "{}", String::from_utf8_lossy(&body));
    assert!(!scrape_counter(&http, "diskfull").unwrap().is_empty());
    let (code, ready) = get(&http, "/-/ready").unwrap();
    assert_eq!(code, 200);
    assert!(ready.contains("not for writes"), "{ready}");

    // space returns: the collector resumes by itself
    std::fs::remove_file(&ballast).expect("remove ballast");
    wait_for(Duration::from_secs(30), "writes resumed", || match metric(
        &http,
        "vigil_collector_disk_full",
        &[],
    )? {
        0.0 => Ok(()),
        v => Err(format!("disk_full {v}")),
    });
    let lines = wait_for(Duration::from_secs(120), "every line", || {
        let l = stored_lines(&http, "diskfull", start_ns)?;
        if l.len() >= LINES {
            Ok(l)
        } else {
            Err(format!("{} of {LINES} lines", l.len()))
        }
    });
    let want: Vec<String> = (0..LINES).map(line).collect();
    assert_eq!(lines.len(), LINES, "lines doubled");
    assert!(lines == want, "lines lost, doubled or out of order");
    let after = metric(&agent_http, "vigil_agent_scrapes_total", &[]).unwrap();
    let counter = wait_for(Duration::from_secs(60), "the scrapes since", || {
        let c = scrape_counter(&http, "diskfull")?;
        match c.last() {
            Some(v) if *v >= after => Ok(c),
            last => Err(format!("last {last:?}, want {after}")),
        }
    });
    assert_eq!(counter[0], 1.0, "the first scrapes are missing");
    assert_consecutive(&counter, "through the full disk");
    assert_eq!(
        metric(&agent_http, "vigil_agent_dropped_batches_total", &[]).unwrap(),
        0.0
    );
    let log = collector.stderr_text();
    assert!(log.contains("disk full"), "not logged: {log}");
    assert!(log.contains("disk space is back"), "not logged: {log}");
    agent.kill9();
    collector.kill9();
}

#[test]
fn a_full_agent_disk_drops_the_oldest_counted_and_keeps_scraping() {
    const LINES: usize = 20_000;
    let fs = match Tmpfs::mount("4m") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let d = tempfile::tempdir().expect("tempdir");
    let logs = d.path().join("logs");
    let app = d.path().join("app");
    std::fs::create_dir_all(&app).expect("app dir");
    let (hp, gp, ap) = (free_port(), free_port(), free_port());
    let http = format!("127.0.0.1:{hp}");
    let agent_http = format!("127.0.0.1:{ap}");
    let start_ns = now_ns() - 60_000_000_000;
    // no collector yet: everything goes to the agent's buffer on the tmpfs
    write_lines(&app.join("app.log"), LINES);
    let glob = format!("{}/*.log", app.display());
    let mut agent = start_agent(&fs.path().join("state"), &logs, "agentfull", gp, ap, &glob);
    wait_for(Duration::from_secs(60), "every line read", || {
        let n = metric(&agent_http, "vigil_log_lines_total", &[])?;
        if n >= LINES as f64 {
            Ok(())
        } else {
            Err(format!("{n} lines read"))
        }
    });
    let full = metric(&agent_http, "vigil_agent_buffer_disk_full_total", &[]).unwrap();
    assert!(full >= 1.0, "the agent's disk never filled");
    // it keeps scraping with a full disk (and seals what it read last)
    let scrapes = metric(&agent_http, "vigil_agent_scrapes_total", &[]).unwrap();
    wait_for(Duration::from_secs(30), "more scrapes", || {
        let s = metric(&agent_http, "vigil_agent_scrapes_total", &[])?;
        if s >= scrapes + 3.0 {
            Ok(())
        } else {
            Err(format!("{s}"))
        }
    });
    assert!(fs.available() >= 512 << 10, "the reserve was eaten");

    let mut collector = start_collector(&d.path().join("collector"), &logs, hp, gp, &[]);
    let dropped = metric(&agent_http, "vigil_agent_dropped_log_records_total", &[]).unwrap();
    assert!(dropped > 0.0, "nothing dropped");
    let lines = wait_for(Duration::from_secs(60), "the kept lines", || {
        let l = stored_lines(&http, "agentfull", start_ns)?;
        if l.len() as f64 + dropped >= LINES as f64 {
            Ok(l)
        } else {
            Err(format!("{} lines + {dropped} dropped", l.len()))
        }
    });
    // the oldest were dropped: what arrived is the newest, each once, and the
    // drop counter accounts for every other line
    let first = LINES - lines.len();
    assert_eq!(first as f64, dropped, "dropped lines miscounted");
    let want: Vec<String> = (first..LINES).map(line).collect();
    assert!(lines == want, "kept lines lost, doubled or out of order");
    let counter = scrape_counter(&http, "agentfull").unwrap();
    assert!(
        counter.windows(2).all(|w| w[1] > w[0]),
        "scrapes doubled: {counter:?}"
    );
    agent.kill9();
    collector.kill9();
}
