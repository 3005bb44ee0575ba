//! A fleet of collectors in front of a distributed engine, end to end.
//!
//! Three agents (the real binary) ship to two gateway collectors (no local
//! store; rules evaluated against the engine's query API; leader election
//! on a lock file) that forward to the real VictoriaMetrics. The leader is
//! `kill -9`ed for 60 s and restarted. Checked:
//! - every scrape of every agent reaches VictoriaMetrics: each agent's own
//!   `vigil_agent_scrapes_total` (one more per scrape) has every value from
//!   its first to its last, none missing (duplicates across the failover
//!   are allowed: the promise across collectors is at least once, with any
//!   duplicate identical, and VictoriaMetrics's deduplication drops it);
//! - rules run on exactly one collector throughout: at no poll do both
//!   collectors say they lead, a collector's rule evaluations never grow
//!   while it says it does not lead, and the survivor takes over.
//!
//! Skips (saying so) where VictoriaMetrics is not installed; CI installs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use vigil_e2e::{Proc, args, free_port, get, start_agent, start_collector, wait_for};

fn have(bin: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The sum of a metric's samples on `/metrics`, `None` when the collector
/// does not answer or has no such metric.
fn metric(addr: &str, name: &str) -> Option<f64> {
    let (code, text) = get(addr, "/metrics").ok()?;
    if code != 200 {
        return None;
    }
    let s: Vec<_> = vigil_e2e::parse_text(&text)
        .into_iter()
        .filter(|s| s.name == name)
        .collect();
    (!s.is_empty()).then(|| s.iter().map(|s| s.value).sum())
}

/// What one poll of a collector saw: (leader gauge, rule evaluations).
type Seen = Option<(f64, f64)>;

fn poll(addr: &str) -> Seen {
    let leader = metric(addr, "vigil_collector_leader")?;
    let evals = metric(addr, "vigil_collector_rule_evaluations_total").unwrap_or(0.0);
    Some((leader, evals))
}

/// Every `vigil_agent_scrapes_total` value VictoriaMetrics holds, by node.
fn scrape_counters(vm: &str) -> BTreeMap<String, Vec<(i64, f64)>> {
    let _ = get(vm, "/internal/force_flush");
    let (code, body) = get(
        vm,
        "/api/v1/export?match%5B%5D=vigil_agent_scrapes_total&start=0",
    )
    .expect("export");
    assert_eq!(code, 200, "{body}");
    let mut out: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("export line");
        let node = v["metric"]["node"].as_str().unwrap_or_default().to_string();
        let ts = v["timestamps"].as_array().cloned().unwrap_or_default();
        let vals = v["values"].as_array().cloned().unwrap_or_default();
        let e = out.entry(node).or_default();
        for (t, x) in ts.iter().zip(vals.iter()) {
            e.push((t.as_i64().unwrap_or(0), x.as_f64().unwrap_or(f64::NAN)));
        }
    }
    out
}

fn start_vm(dir: &Path, port: u16) -> Proc {
    let a = args(&[
        &format!("-storageDataPath={}", dir.join("vm").display()),
        &format!("-httpListenAddr=127.0.0.1:{port}"),
        "-dedup.minScrapeInterval=1ms",
        "-search.latencyOffset=0s",
        "-loggerLevel=WARN",
    ]);
    let p = Proc::start(
        "victoria-metrics",
        Path::new("victoria-metrics"),
        &a,
        &dir.join("logs"),
    );
    let addr = format!("127.0.0.1:{port}");
    wait_for(
        Duration::from_secs(30),
        "VictoriaMetrics ready",
        || match get(&addr, "/health") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    p
}

/// Whether every node's scrape counters run from 1 with none missing and
/// any duplicate identical; the number of scrapes per node when so.
fn complete(
    counters: &BTreeMap<String, Vec<(i64, f64)>>,
    nodes: &[String],
) -> Result<Vec<(String, u64)>, String> {
    let mut out = Vec::new();
    for node in nodes {
        let got = counters
            .get(node)
            .ok_or_else(|| format!("no vigil_agent_scrapes_total for {node}"))?;
        let values: BTreeSet<u64> = got.iter().map(|(_, v)| *v as u64).collect();
        let (Some(&lo), Some(&hi)) = (values.first(), values.last()) else {
            return Err(format!("{node}: no samples"));
        };
        if lo > 1 {
            return Err(format!(
                "{node}: the first scrape is missing (lowest counter {lo})"
            ));
        }
        let missing: Vec<u64> = (lo..=hi).filter(|v| !values.contains(v)).collect();
        if !missing.is_empty() {
            return Err(format!(
                "{node}: scrapes {missing:?} not in VictoriaMetrics ({} of {})",
                missing.len(),
                hi - lo + 1
            ));
        }
        // a duplicate (the same scrape through both collectors) is identical
        let mut at: BTreeMap<u64, BTreeSet<i64>> = BTreeMap::new();
        for (t, v) in got {
            at.entry(*v as u64).or_default().insert(*t);
        }
        if let Some((v, ts)) = at.iter().find(|(_, ts)| ts.len() > 1) {
            return Err(format!(
                "{node}: scrape {v} stored at several timestamps {ts:?}"
            ));
        }
        out.push((node.clone(), hi));
    }
    Ok(out)
}

#[test]
fn three_agents_two_gateways_leader_killed_for_a_minute() {
    if !have("victoria-metrics") {
        eprintln!(
            "SKIP: victoria-metrics is not installed (scripts/install-test-deps.sh installs it)"
        );
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let vm_port = free_port();
    let vm_addr = format!("127.0.0.1:{vm_port}");
    let mut vm = start_vm(dir, vm_port);

    let rules = dir.join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: fleet\n    interval: 1s\n    rules:\n      - record: fleet:agent_scrapes:count\n        expr: count(vigil_agent_scrapes_total)\n",
    )
    .expect("rules");
    let lock = dir.join("fleet.lock");
    let gateway = |name: &str| {
        args(&[
            "--remote-write-url",
            &format!("http://{vm_addr}/api/v1/write"),
            "--local-store",
            "false",
            "--query-url",
            &format!("http://{vm_addr}"),
            "--leader-election",
            "lock-file",
            "--leader-election-lock-file",
            &lock.display().to_string(),
            "--leader-election-identity",
            name,
            "--leader-election-retry-period",
            "500ms",
            "--rules",
            &rules.display().to_string(),
        ])
    };
    let (h1, g1, h2, g2) = (free_port(), free_port(), free_port(), free_port());
    let (a1, a2) = (format!("127.0.0.1:{h1}"), format!("127.0.0.1:{h2}"));
    let c1_dir = dir.join("c1");
    let mut c1 = start_collector(&c1_dir, h1, g1, &gateway("c1"));
    wait_for(Duration::from_secs(20), "c1 leads", || match poll(&a1) {
        Some((1.0, _)) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    let mut c2 = start_collector(&dir.join("c2"), h2, g2, &gateway("c2"));

    // agents 1 and 2 prefer c1, agent 3 prefers c2
    let mut agents = Vec::new();
    for (i, (first, second)) in [(g1, g2), (g1, g2), (g2, g1)].into_iter().enumerate() {
        let node = format!("fleet-agent-{}", i + 1);
        let agent_dir = dir.join(&node);
        let extra = args(&[
            "--collector",
            &format!("http://127.0.0.1:{second}"),
            "--node-name",
            &node,
            "--log-default-paths",
            "false",
            "--app-discovery",
            "false",
        ]);
        agents.push((node, start_agent(&agent_dir, first, &extra)));
    }

    // a poller: both collectors' leadership and rule evaluations, 4 times a second
    let stop = Arc::new(AtomicBool::new(false));
    let polls: Arc<Mutex<Vec<(Seen, Seen)>>> = Arc::default();
    let poller = {
        let (stop, polls, a1, a2) = (stop.clone(), polls.clone(), a1.clone(), a2.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let s = (poll(&a1), poll(&a2));
                polls.lock().push(s);
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };

    std::thread::sleep(Duration::from_secs(15));
    // the leader dies mid-stream and stays away for a minute
    c1.kill9();
    wait_for(Duration::from_secs(30), "c2 takes over", || {
        match poll(&a2) {
            Some((1.0, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    std::thread::sleep(Duration::from_secs(60));
    let mut c1 = start_collector(&c1_dir, h1, g1, &gateway("c1"));
    std::thread::sleep(Duration::from_secs(20));

    // the agents stop by themselves: they seal the last scrape and wait for
    // its acknowledgement
    for (node, a) in &mut agents {
        let status = a.terminate(Duration::from_secs(60));
        assert!(
            status.is_some_and(|s| s.success()),
            "{node} did not stop cleanly: {}",
            a.stderr_text()
        );
    }
    stop.store(true, Ordering::SeqCst);
    poller.join().expect("poller");

    // everything acknowledged is forwarded, by whichever collector took it:
    // every scrape of every agent reaches VictoriaMetrics
    let nodes: Vec<String> = agents.iter().map(|(n, _)| n.clone()).collect();
    let summary = wait_for(
        Duration::from_secs(90),
        "every scrape of every agent in VictoriaMetrics",
        || complete(&scrape_counters(&vm_addr), &nodes),
    );
    eprintln!("scrapes per agent in VictoriaMetrics: {summary:?}");
    for (node, n) in &summary {
        // shipping ran before, during and after the minute c1 was away
        assert!(*n >= 30, "{node}: only {n} scrapes over ~100 s at 1 s");
    }

    // rules ran on exactly one collector throughout
    let polls = polls.lock().clone();
    assert!(polls.len() > 200, "only {} polls", polls.len());
    for (i, (s1, s2)) in polls.iter().enumerate() {
        if let (Some((l1, _)), Some((l2, _))) = (s1, s2) {
            assert!(
                !(*l1 == 1.0 && *l2 == 1.0),
                "poll {i}: both collectors lead"
            );
        }
    }
    for which in 0..2 {
        let seen: Vec<Seen> = polls
            .iter()
            .map(|p| if which == 0 { p.0 } else { p.1 })
            .collect();
        for w in seen.windows(2) {
            if let (Some((0.0, e0)), Some((0.0, e1))) = (w[0], w[1]) {
                assert!(
                    e1 <= e0,
                    "collector {} evaluated rules ({e0} → {e1}) while not leading",
                    which + 1
                );
            }
        }
    }
    let c2_evals: Vec<f64> = polls.iter().filter_map(|p| p.1.map(|(_, e)| e)).collect();
    assert!(
        c2_evals.last().copied().unwrap_or(0.0) >= 30.0,
        "c2 took over but evaluated only {:?} times",
        c2_evals.last()
    );
    // the restarted c1 stays a follower while c2 lives
    assert_eq!(poll(&a1).map(|s| s.0), Some(0.0));
    // and the rules' output reached the engine
    let (_, rec) = get(
        &vm_addr,
        "/api/v1/export?match%5B%5D=fleet%3Aagent_scrapes%3Acount&start=0",
    )
    .expect("export");
    assert!(
        rec.contains("fleet:agent_scrapes:count"),
        "no recording-rule output in VictoriaMetrics"
    );

    c1.terminate(Duration::from_secs(30));
    c2.terminate(Duration::from_secs(30));
    vm.terminate(Duration::from_secs(30));
}
