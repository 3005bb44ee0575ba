//! Container logs end to end on a real podman container: it writes numbered
//! lines while the test SIGKILLs the agent and restarts it, then SIGKILLs
//! the collector and restarts it. Every line is in the collector exactly
//! once, in order, read back through the Loki API, and `count_over_time`
//! agrees.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use vigil_e2e::podman::{self, Service};
use vigil_e2e::{Proc, args, free_port, get, start_agent, start_collector, wait_for};

const LINES: usize = 4000;

fn collector(d: &Path, hp: u16, gp: u16) -> Proc {
    start_collector(d, hp, gp, &[])
}

fn agent(d: &Path, gp: u16, log_glob: &str) -> Proc {
    start_agent(
        d,
        gp,
        &args(&["--log-default-paths", "false", "--log-path", log_glob]),
    )
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The stdout lines the collector holds for `id`, oldest first.
fn stored(http: &str, id: &str, start_ns: i64) -> Result<Vec<String>, String> {
    let q = enc(&format!(r#"{{container_id="{id}", stream="stdout"}}"#));
    let (code, body) = get(
        http,
        &format!(
            "/loki/api/v1/query_range?query={q}&start={start_ns}&limit=50000&direction=forward"
        ),
    )?;
    if code != 200 {
        return Err(format!("{code}: {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    if v["data"]["resultType"] != "streams" {
        return Err(body);
    }
    let mut out = Vec::new();
    for s in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        for e in s["values"].as_array().cloned().unwrap_or_default() {
            out.push(e[1].as_str().unwrap_or("").to_string());
        }
    }
    Ok(out)
}

#[test]
fn every_line_once_in_order_through_agent_and_collector_kill_9() {
    if !podman::usable() {
        eprintln!(
            "skipped: needs root and podman with localhost/bb:1 (scripts/install-test-deps.sh)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let name = format!("vigillogs{}", podman::tag());
    let service = Service::start(d, &format!("vigil.test={name}"));
    let start_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
        - 60_000_000_000;
    let (hp, gp) = (free_port(), free_port());
    let http = format!("127.0.0.1:{hp}");
    let mut c = collector(d, hp, gp);
    // the container writes for ~8 s: 40 bursts of 100 lines
    let script = format!(
        "sleep 1; i=0; while [ $i -lt {LINES} ]; do i=$((i+1)); echo \"line $i\"; \
         if [ $((i % 100)) = 0 ]; then sleep 0.2; fi; done; sleep 3600"
    );
    let id = service.run(&[
        "--name",
        &name,
        "--log-driver",
        "k8s-file",
        podman::IMAGE,
        "sh",
        "-c",
        &script,
    ]);
    let glob = format!("/var/lib/containers/storage/overlay-containers/{id}/userdata/ctr.log");
    let mut a = agent(d, gp, &glob);

    // the agent dies mid-stream and comes back
    wait_for(Duration::from_secs(30), "the first lines", || {
        let n = stored(&http, &id, start_ns)?.len();
        if n >= 500 {
            Ok(())
        } else {
            Err(format!("{n} lines"))
        }
    });
    a.kill9();
    std::thread::sleep(Duration::from_millis(700));
    let _a = agent(d, gp, &glob);

    // then the collector
    wait_for(Duration::from_secs(30), "more lines", || {
        let n = stored(&http, &id, start_ns)?.len();
        if n >= 2000 {
            Ok(())
        } else {
            Err(format!("{n} lines"))
        }
    });
    c.kill9();
    std::thread::sleep(Duration::from_millis(700));
    let _c = collector(d, hp, gp);

    let got = wait_for(Duration::from_secs(60), "every line", || {
        let got = stored(&http, &id, start_ns)?;
        if got.len() >= LINES {
            Ok(got)
        } else {
            Err(format!("{} lines", got.len()))
        }
    });
    // exactly once and in order
    let want: Vec<String> = (1..=LINES).map(|i| format!("line {i}")).collect();
    assert_eq!(got.len(), LINES, "duplicates or extra lines");
    assert!(got == want, "lines out of order or missing");

    // count_over_time agrees
    let q = enc(&format!(
        r#"sum(count_over_time({{container_id="{id}", stream="stdout"}}[10m]))"#
    ));
    let (code, body) = get(&http, &format!("/loki/api/v1/query?query={q}")).unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["resultType"], "vector", "{body}");
    assert_eq!(
        v["data"]["result"][0]["value"][1],
        LINES.to_string(),
        "{body}"
    );

    // labels and series look-ups (what Grafana's log browser calls)
    let (_, body) = get(&http, "/loki/api/v1/labels").unwrap();
    assert!(
        body.contains("container_id") && body.contains("stream"),
        "{body}"
    );
    let (_, body) = get(&http, "/loki/api/v1/label/container_name/values").unwrap();
    assert!(body.contains(&name), "{body}");
    let (_, body) = get(
        &http,
        &format!(
            "/loki/api/v1/series?match[]={}",
            enc(&format!(r#"{{container_name="{name}"}}"#))
        ),
    )
    .unwrap();
    assert!(body.contains(&id), "{body}");
    // a malformed query is a 400 naming the position
    let (code, body) = get(
        &http,
        &format!("/loki/api/v1/query_range?query={}", enc("{a=\"b\"} | json")),
    )
    .unwrap();
    assert_eq!(code, 400);
    assert!(body.contains("position"), "{body}");
}
