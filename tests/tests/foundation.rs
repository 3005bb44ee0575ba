//! The foundation, end to end with the real binaries on loopback: what the
//! agent scrapes reaches the collector labelled with its node; nothing is
//! lost or doubled through a collector outage (kill -9) or an agent crash;
//! bad tokens and bad messages are refused while the collector keeps serving.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use vigil_e2e::{Proc, bin, find, free_port, get, parse_text, wait_for};
use vigil_proto::v1 as pb;

struct Collector {
    proc: Proc,
    http: String,
    grpc: u16,
}

fn start_collector(dir: &Path, http_port: u16, grpc_port: u16, extra: &[&str]) -> Collector {
    let mut args: Vec<String> = vec![
        "--http-listen".into(),
        format!("127.0.0.1:{http_port}"),
        "--grpc-listen".into(),
        format!("127.0.0.1:{grpc_port}"),
        "--data-dir".into(),
        dir.join("collector").display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let proc = Proc::start(
        "collector",
        &bin("vigil-collector"),
        &args,
        &dir.join("logs"),
    );
    let http = format!("127.0.0.1:{http_port}");
    wait_for(Duration::from_secs(30), "collector ready", || {
        match get(&http, "/-/ready") {
            Ok((200, _)) => Ok(()),
            Ok((s, b)) => Err(format!("{s} {b}")),
            Err(e) => Err(e),
        }
    });
    Collector {
        proc,
        http,
        grpc: grpc_port,
    }
}

fn start_agent(dir: &Path, node: &str, grpc_port: u16, http_port: u16, extra: &[&str]) -> Proc {
    let mut args: Vec<String> = vec![
        "--collector".into(),
        format!("http://127.0.0.1:{grpc_port}"),
        "--node-name".into(),
        node.into(),
        "--interval".into(),
        "1s".into(),
        "--batch-max-wait".into(),
        "200ms".into(),
        "--http-listen".into(),
        format!("127.0.0.1:{http_port}"),
        "--state-dir".into(),
        dir.join(format!("agent-{node}")).display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::start(
        &format!("agent-{node}"),
        &bin("vigil-agent"),
        &args,
        &dir.join("logs"),
    )
}

/// Raw samples `(timestamp_ms, value)` of a series over the last `range`,
/// read through the collector's Prometheus API.
fn raw_samples(http: &str, selector: &str, range: &str) -> Result<Vec<(i64, f64)>, String> {
    let q = format!("{selector}[{range}]");
    let path = format!("/api/v1/query?query={}", urlencode(&q));
    let (status, body) = get(http, &path)?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for series in v["data"]["result"].as_array().into_iter().flatten() {
        for p in series["values"].as_array().into_iter().flatten() {
            let t = p[0].as_f64().unwrap_or(0.0);
            let val: f64 = p[1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN);
            out.push(((t * 1000.0).round() as i64, val));
        }
    }
    out.sort_by_key(|p| p.0);
    Ok(out)
}

fn urlencode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                o.push(b as char)
            }
            _ => o.push_str(&format!("%{b:02X}")),
        }
    }
    o
}

fn metric(addr: &str, name: &str, labels: &[(&str, &str)]) -> Result<f64, String> {
    let (_, body) = get(addr, "/metrics")?;
    let s = parse_text(&body);
    find(&s, name, labels)
        .first()
        .map(|s| s.value)
        .ok_or_else(|| format!("{name}{labels:?} not in /metrics"))
}

#[test]
fn a_scraped_sample_reaches_the_collector_with_its_node_label() {
    let dir = tempfile::tempdir().unwrap();
    let (hp, gp, ap) = (free_port(), free_port(), free_port());
    let mut c = start_collector(dir.path(), hp, gp, &[]);
    let mut agent = start_agent(dir.path(), "e2e-node", c.grpc, ap, &[]);
    let agent_http = format!("127.0.0.1:{ap}");
    wait_for(
        Duration::from_secs(30),
        "node_load1 at the collector",
        || metric(&c.http, "node_load1", &[("node", "e2e-node")]).map(|_| ()),
    );
    let total = metric(
        &c.http,
        "node_memory_MemTotal_bytes",
        &[("node", "e2e-node")],
    )
    .unwrap();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: f64 = meminfo
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(total, kb * 1024.0);
    // the agent serves its own scrape and self-metrics, and health
    assert!(metric(&agent_http, "node_load1", &[]).is_ok());
    assert_eq!(get(&agent_http, "/-/healthy").unwrap().0, 200);
    wait_for(Duration::from_secs(10), "agent ready", || {
        match get(&agent_http, "/-/ready") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let (_, agent_metrics) = get(&agent_http, "/metrics").unwrap();
    assert!(
        agent_metrics.contains("vigil_agent_"),
        "no self-metrics on the agent"
    );
    // the collector's own metrics
    let (_, cm) = get(&c.http, "/metrics").unwrap();
    for m in [
        "vigil_collector_batches_received_total",
        "vigil_collector_samples_received_total",
    ] {
        assert!(cm.contains(m), "collector /metrics lacks {m}");
    }
    // graceful stop: both exit 0 on SIGTERM
    let st = agent
        .terminate(Duration::from_secs(20))
        .expect("agent did not stop on SIGTERM");
    assert!(st.success(), "agent exit {st:?}: {}", agent.stderr_text());
    let st = c
        .proc
        .terminate(Duration::from_secs(20))
        .expect("collector did not stop on SIGTERM");
    assert!(
        st.success(),
        "collector exit {st:?}: {}",
        c.proc.stderr_text()
    );
}

/// Checks that the agent's scrape counter arrived as consecutive values:
/// no scrape missing (a gap) and none twice (a repeat).
fn assert_consecutive(samples: &[(i64, f64)], what: &str) {
    assert!(!samples.is_empty(), "{what}: no samples");
    for w in samples.windows(2) {
        assert!(w[1].0 > w[0].0, "{what}: timestamps not increasing: {w:?}");
        assert_eq!(
            w[1].1 - w[0].1,
            1.0,
            "{what}: scrape counter jumps from {} to {} (lost or doubled)",
            w[0].1,
            w[1].1
        );
    }
}

#[test]
fn a_collector_outage_of_30s_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (hp, gp, ap) = (free_port(), free_port(), free_port());
    let mut c = start_collector(dir.path(), hp, gp, &[]);
    let _agent = start_agent(dir.path(), "outage", gp, ap, &[]);
    let sel = r#"vigil_agent_scrapes_total{node="outage"}"#;
    wait_for(
        Duration::from_secs(30),
        "first scrapes at the collector",
        || {
            let s = raw_samples(&c.http, sel, "10m")?;
            if s.len() >= 3 {
                Ok(())
            } else {
                Err(format!("{} samples", s.len()))
            }
        },
    );
    c.proc.kill9();
    let down_at = std::time::SystemTime::now();
    std::thread::sleep(Duration::from_secs(30));
    let c = start_collector(dir.path(), hp, gp, &[]);
    let down_ms = down_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // the agent scraped every second during the outage: all of it arrives
    let samples = wait_for(Duration::from_secs(60), "the outage's scrapes", || {
        let s = raw_samples(&c.http, sel, "10m")?;
        let during = s
            .iter()
            .filter(|(t, _)| *t > down_ms && *t < down_ms + 30_000)
            .count();
        let after = s.iter().filter(|(t, _)| *t > down_ms + 32_000).count();
        if during >= 27 && after >= 2 {
            Ok(s)
        } else {
            Err(format!("{during} during, {after} after"))
        }
    });
    assert_consecutive(&samples, "across the outage");
    assert_eq!(
        samples[0].1, 1.0,
        "the first scrapes before the outage are missing"
    );
}

/// Protocol revision 2: a label set is defined once per collector for the
/// life of the agent's series table. An agent restart sends (almost) no
/// definitions again — only label sets new since — and a collector that
/// lost its copy (a restart) gets all of them again, and no sample is lost.
#[test]
fn series_are_defined_once_across_agent_restarts_and_again_after_a_collector_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (hp, gp, ap) = (free_port(), free_port(), free_port());
    let agent_http = format!("127.0.0.1:{ap}");
    let mut c = start_collector(dir.path(), hp, gp, &[]);
    let mut agent = start_agent(dir.path(), "defs", gp, ap, &[]);
    let sel = r#"vigil_agent_scrapes_total{node="defs"}"#;
    let scrapes_at = |c: &Collector, n: usize| {
        wait_for(Duration::from_secs(60), "scrapes at the collector", || {
            let s = raw_samples(&c.http, sel, "10m")?;
            if s.len() >= n {
                Ok(())
            } else {
                Err(format!("{} samples", s.len()))
            }
        })
    };
    scrapes_at(&c, 3);
    let refs = metric(&agent_http, "vigil_agent_series_table_refs", &[]).unwrap();
    let first = metric(&c.http, "vigil_collector_series_definitions_total", &[]).unwrap();
    assert!(
        refs > 100.0 && first >= refs,
        "refs {refs}, defined {first}"
    );
    let st = agent.terminate(Duration::from_secs(20)).unwrap();
    assert!(st.success(), "{}", agent.stderr_text());
    let mut agent = start_agent(dir.path(), "defs", gp, ap, &[]);
    let n = raw_samples(&c.http, sel, "10m").unwrap().len();
    scrapes_at(&c, n + 3);
    let sent = metric(
        &agent_http,
        "vigil_agent_series_definitions_sent_total",
        &[],
    )
    .unwrap();
    let again = metric(&c.http, "vigil_collector_series_definitions_total", &[]).unwrap();
    // only what is new since (the agent's own process series, say)
    assert!(
        sent < refs / 4.0 && again - first == sent,
        "after an agent restart: {sent} definitions sent of {refs} refs; collector {first} -> {again}"
    );
    // the collector restarts: it knows nothing, the agent defines all again
    c.proc.kill9();
    let c = start_collector(dir.path(), hp, gp, &[]);
    let n = raw_samples(&c.http, sel, "10m").unwrap().len();
    scrapes_at(&c, n + 3);
    let refs = metric(&agent_http, "vigil_agent_series_table_refs", &[]).unwrap();
    let fresh = metric(&c.http, "vigil_collector_series_definitions_total", &[]).unwrap();
    assert!(
        fresh >= refs * 0.9,
        "after a collector restart: {fresh} definitions of {refs}"
    );
    // the counter starts over with the agent; each run's scrapes are whole
    let samples = raw_samples(&c.http, sel, "10m").unwrap();
    let cut = samples
        .windows(2)
        .position(|w| w[1].1 < w[0].1)
        .map(|i| i + 1)
        .expect("the agent restart");
    assert_consecutive(&samples[..cut], "the first agent run");
    assert_consecutive(
        &samples[cut..],
        "the second run, across the collector restart",
    );
    assert_eq!((samples[0].1, samples[cut].1), (1.0, 1.0));
    let st = agent.terminate(Duration::from_secs(20)).unwrap();
    assert!(st.success(), "{}", agent.stderr_text());
}

#[test]
fn an_agent_killed_with_sigkill_loses_nothing_it_had_spilled() {
    let dir = tempfile::tempdir().unwrap();
    let (hp, gp, ap) = (free_port(), free_port(), free_port());
    // no collector yet: everything spills to the agent's disk buffer
    let mut agent = start_agent(dir.path(), "spill", gp, ap, &[]);
    let agent_http = format!("127.0.0.1:{ap}");
    let scraped = wait_for(Duration::from_secs(30), "eight scrapes", || {
        let v = metric(&agent_http, "vigil_agent_scrapes_total", &[])?;
        if v >= 8.0 { Ok(v) } else { Err(format!("{v}")) }
    });
    std::thread::sleep(Duration::from_millis(600)); // let the last batch seal
    agent.kill9();
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let _agent = start_agent(dir.path(), "spill", gp, ap, &[]);
    let c = start_collector(dir.path(), hp, gp, &[]);
    let sel = r#"vigil_agent_scrapes_total{node="spill"}"#;
    let first_life = wait_for(Duration::from_secs(60), "the first life's scrapes", || {
        let s = raw_samples(&c.http, sel, "10m")?;
        let first: Vec<_> = s.into_iter().filter(|(t, _)| *t < killed_ms).collect();
        if first.len() as f64 >= scraped {
            Ok(first)
        } else {
            Err(format!("{} of {scraped}", first.len()))
        }
    });
    assert_consecutive(&first_life, "before the kill");
    assert_eq!(first_life[0].1, 1.0);
}

#[test]
fn a_wrong_token_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "right-token\n").unwrap();
    std::fs::write(dir.path().join("wrong"), "wrong-token\n").unwrap();
    let tok = dir.path().join("token").display().to_string();
    let wrong = dir.path().join("wrong").display().to_string();
    let (hp, gp) = (free_port(), free_port());
    let c = start_collector(dir.path(), hp, gp, &["--token-file", &tok]);
    let _bad = start_agent(
        dir.path(),
        "intruder",
        gp,
        free_port(),
        &["--token-file", &wrong],
    );
    let _good = start_agent(
        dir.path(),
        "friend",
        gp,
        free_port(),
        &["--token-file", &tok],
    );
    wait_for(Duration::from_secs(30), "the good agent's data", || {
        metric(&c.http, "node_load1", &[("node", "friend")]).map(|_| ())
    });
    wait_for(Duration::from_secs(30), "auth failures counted", || {
        let v = metric(&c.http, "vigil_collector_auth_failures_total", &[])?;
        if v >= 1.0 {
            Ok(())
        } else {
            Err(format!("{v}"))
        }
    });
    assert!(
        metric(&c.http, "node_load1", &[("node", "intruder")]).is_err(),
        "the intruder's data was stored"
    );
}

fn hello(id: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Hello(pb::Hello {
            agent_id: id.into(),
            node_name: id.into(),
            agent_version: "test".into(),
            protocol: 1,
            series_epoch: 0,
        })),
    }
}

fn batch(seq: u64, defs: Vec<pb::SeriesDef>, refs: Vec<u32>, values: Vec<f64>) -> pb::AgentMessage {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Batch(pb::Batch {
            seq,
            created_ms: ts,
            series: defs,
            samples: vec![pb::SampleBlock {
                timestamp_ms: ts,
                refs,
                values,
            }],
            ..Default::default()
        })),
    }
}

fn def(r: u32, labels: &[(&str, &str)]) -> pb::SeriesDef {
    pb::SeriesDef {
        r#ref: r,
        labels: labels
            .iter()
            .map(|(k, v)| pb::Label {
                name: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
    }
}

/// Sends `msgs` on one stream and returns the collector's answers until the
/// stream ends or `want_acks` acks came, or the error status.
async fn exchange(
    grpc: u16,
    msgs: Vec<pb::AgentMessage>,
    want_acks: usize,
) -> Result<Vec<pb::CollectorMessage>, tonic::Status> {
    let mut client = pb::ingest_client::IngestClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?
        .max_encoding_message_size(64 << 20);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    for m in msgs {
        tx.send(m).await.unwrap();
    }
    let resp = client
        .ship(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?;
    let mut stream = resp.into_inner();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(m))) => {
                out.push(m);
                let acks = out
                    .iter()
                    .filter(|m| matches!(m.kind, Some(pb::collector_message::Kind::Ack(_))))
                    .count();
                if acks >= want_acks {
                    break;
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(status)) => return Err(status),
            Err(_) => break,
        }
    }
    drop(tx);
    Ok(out)
}

#[test]
fn garbage_and_oversized_messages_get_errors_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (hp, gp) = (free_port(), free_port());
    let c = start_collector(dir.path(), hp, gp, &["--max-message-bytes", "64KiB"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // an undefined series reference
    let r = rt.block_on(exchange(
        gp,
        vec![hello("garbage"), batch(1, vec![], vec![7], vec![1.0])],
        1,
    ));
    let st = r.expect_err("a batch with an undefined ref was accepted");
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    // a batch before Hello
    let r = rt.block_on(exchange(gp, vec![batch(1, vec![], vec![], vec![])], 1));
    assert_eq!(
        r.expect_err("batch before hello").code(),
        tonic::Code::InvalidArgument
    );
    // a message over the limit
    let big: Vec<pb::SeriesDef> = (0..4000)
        .map(|i| {
            def(
                i,
                &[
                    ("__name__", "big_metric"),
                    ("padding", &"x".repeat(40)),
                    ("i", &i.to_string()),
                ],
            )
        })
        .collect();
    let refs: Vec<u32> = (0..4000).collect();
    let r = rt.block_on(exchange(
        gp,
        vec![hello("big"), batch(1, big, refs, vec![1.0; 4000])],
        1,
    ));
    let st = r.expect_err("an oversized message was accepted");
    assert!(
        matches!(
            st.code(),
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange | tonic::Code::InvalidArgument
        ),
        "{st:?}"
    );
    // a good stream is still served, acked, and its sample exposed
    let good = rt
        .block_on(exchange(
            gp,
            vec![
                hello("good"),
                batch(
                    1,
                    vec![def(1, &[("__name__", "good_metric"), ("node", "good")])],
                    vec![1],
                    vec![42.0],
                ),
            ],
            1,
        ))
        .expect("good stream");
    let acked: Vec<u64> = good
        .iter()
        .filter_map(|m| match &m.kind {
            Some(pb::collector_message::Kind::Ack(a)) => Some(a.seq),
            _ => None,
        })
        .collect();
    assert_eq!(acked, vec![1]);
    assert_eq!(
        metric(&c.http, "good_metric", &[("node", "good")]).unwrap(),
        42.0
    );
    // the same batch again is a duplicate: acked, counted, not applied twice
    let again = rt
        .block_on(exchange(
            gp,
            vec![
                hello("good"),
                batch(
                    1,
                    vec![def(1, &[("__name__", "good_metric"), ("node", "good")])],
                    vec![1],
                    vec![99.0],
                ),
            ],
            1,
        ))
        .expect("duplicate stream");
    let welcome = again.iter().find_map(|m| match &m.kind {
        Some(pb::collector_message::Kind::Welcome(w)) => Some(w.durable_seq),
        _ => None,
    });
    assert_eq!(welcome, Some(1));
    assert_eq!(
        metric(&c.http, "good_metric", &[("node", "good")]).unwrap(),
        42.0
    );
    let dup = metric(&c.http, "vigil_collector_duplicate_batches_total", &[]).unwrap();
    assert!(dup >= 1.0, "duplicates not counted: {dup}");
}

#[test]
fn tls_between_agent_and_collector() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    vigil_e2e::tls::make(d).expect("openssl makes the test certificates");
    let (hp, gp) = (free_port(), free_port());
    let cert = d.join("server.pem").display().to_string();
    let key = d.join("server.key").display().to_string();
    let ca = d.join("ca.pem").display().to_string();
    let c = start_collector(d, hp, gp, &["--tls-cert", &cert, "--tls-key", &key]);
    let mut args: Vec<String> = vec![
        "--collector".into(),
        format!("https://127.0.0.1:{gp}"),
        "--tls-ca".into(),
        ca,
        "--node-name".into(),
        "tls-node".into(),
        "--interval".into(),
        "1s".into(),
        "--http-listen".into(),
        "off".into(),
        "--state-dir".into(),
        d.join("agent-tls").display().to_string(),
    ];
    let _agent = Proc::start("agent-tls", &bin("vigil-agent"), &args, &d.join("logs"));
    wait_for(Duration::from_secs(30), "data over TLS", || {
        metric(&c.http, "node_load1", &[("node", "tls-node")]).map(|_| ())
    });
    // a plaintext agent cannot talk to the TLS listener
    args[1] = format!("http://127.0.0.1:{gp}");
    args[5] = "plain-node".into();
    args[11] = d.join("agent-plain").display().to_string();
    args.drain(2..4);
    let _plain = Proc::start("agent-plain", &bin("vigil-agent"), &args, &d.join("logs"));
    std::thread::sleep(Duration::from_secs(4));
    assert!(metric(&c.http, "node_load1", &[("node", "plain-node")]).is_err());
}
