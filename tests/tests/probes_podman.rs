//! Container health probes declared by labels, on real podman containers:
//! - a failing HTTP liveness probe (busybox `httpd` without the path: 404)
//!   makes the agent ship `probe_failed`, and the collector's restart rule
//!   restarts the container through podman's Docker-compatible API — once per
//!   cooldown: the failures of the restarted container inside the cooldown
//!   are audited as skipped, the next restart comes after the cooldown;
//! - probes reach a container with no network address (`--network none`) on
//!   its unpublished port, inside its network namespace (HTTP and TCP), and a
//!   command probe runs inside the container (Engine API exec); their results
//!   are series at the collector, readiness included.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use vigil_e2e::podman::{self, Service};
use vigil_e2e::{Proc, args, free_port, get, start_agent, start_collector, url_encode, wait_for};

/// busybox httpd on :8080 serving /www, with /www/healthz when `healthy`.
fn httpd(healthy: bool) -> String {
    let file = if healthy {
        "echo ok > /www/healthz && "
    } else {
        ""
    };
    format!("busybox mkdir -p /www && {file}exec busybox httpd -f -p 8080 -h /www")
}

/// One series of a query result: labels and value.
type Row = (BTreeMap<String, String>, f64);

/// (labels, value) of each series an instant query returns.
fn query(http: &str, q: &str) -> Result<Vec<Row>, String> {
    let (code, body) = get(http, &format!("/api/v1/query?query={}", url_encode(q)))?;
    if code != 200 {
        return Err(format!("{code}: {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok(v["data"]["result"]
        .as_array()
        .ok_or_else(|| body.clone())?
        .iter()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            let value = r["value"][1].as_str().unwrap().parse().unwrap();
            (labels, value)
        })
        .collect())
}

/// Restart audit entries for `name`, oldest first: (result, time_ms, detail).
fn restarts(http: &str, name: &str) -> Result<Vec<(String, i64, String)>, String> {
    let (_, body) = get(http, "/api/v1/actions?limit=1000")?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let mut out: Vec<(String, i64, String)> = v["data"]["actions"]
        .as_array()
        .ok_or_else(|| body.clone())?
        .iter()
        .filter(|e| e["action"] == "restart" && e["target"]["name"] == name)
        .map(|e| {
            (
                e["result"].as_str().unwrap_or("").to_string(),
                e["time_ms"].as_i64().unwrap_or(0),
                e["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.reverse();
    Ok(out)
}

fn count(r: &[(String, i64, String)], result: &str) -> usize {
    r.iter().filter(|(x, _, _)| x == result).count()
}

fn pipeline(d: &std::path::Path, service: &Service, actions: Option<&str>) -> (Proc, Proc, String) {
    let (hp, gp) = (free_port(), free_port());
    let mut extra = Vec::new();
    if let Some(a) = actions {
        std::fs::write(d.join("actions.yml"), a).unwrap();
        extra = args(&["--actions", &d.join("actions.yml").display().to_string()]);
    }
    let c = start_collector(d, hp, gp, &extra);
    let socket = service.socket.display().to_string();
    let a = start_agent(
        d,
        gp,
        &args(&[
            "--log-default-paths",
            "false",
            "--app-discovery",
            "false",
            "--container-socket",
            &socket,
            "--discovery-refresh-interval",
            "1s",
        ]),
    );
    (c, a, format!("127.0.0.1:{hp}"))
}

#[test]
fn a_failing_liveness_probe_restarts_its_container_once_per_cooldown() {
    if !podman::usable() {
        eprintln!(
            "skipped: needs root and podman with localhost/bb:1 (scripts/install-test-deps.sh)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tag = podman::tag();
    let name = format!("vigilprobe{tag}");
    let service = Service::start(d, &format!("vigil.test={name}"));
    let cooldown_s = 12;
    let actions = format!(
        "executors:\n  podman: {{type: docker, socket: {}, stop_timeout: 2s}}\n\
         restart:\n  - name: liveness\n    match: {{event: probe_failed, probe: liveness, name: {name}}}\n    \
         executor: podman\n    cooldown: {cooldown_s}s\n    max_restarts: 10\n    window: 1h\n",
        service.socket.display()
    );
    let (c, _agent, http) = pipeline(d, &service, Some(&actions));
    let id = service.run(&[
        "--name",
        &name,
        "--label",
        "vigil.probe.liveness.http.port=8080",
        "--label",
        "vigil.probe.liveness.http.path=/healthz",
        "--label",
        "vigil.probe.liveness.period=1s",
        "--label",
        "vigil.probe.liveness.failure-threshold=2",
        podman::IMAGE,
        "sh",
        "-c",
        &httpd(false),
    ]);
    let started_first = service.inspect(&id, "{{.State.StartedAt}}");

    // restarted once, then the restarted container's failures fall in the
    // cooldown, then the cooldown ends and it is restarted again
    let r = wait_for(
        Duration::from_secs(90),
        "two restarts with a cooldown skip between them",
        || {
            let r = restarts(&http, &name)?;
            if count(&r, "delivered") >= 2 {
                Ok(r)
            } else {
                Err(format!("{r:?}\n{}", c.stderr_text()))
            }
        },
    );
    let delivered: Vec<i64> = r
        .iter()
        .filter(|x| x.0 == "delivered")
        .map(|x| x.1)
        .collect();
    let first_skip = r
        .iter()
        .position(|x| x.0 == "skipped_cooldown")
        .unwrap_or_else(|| panic!("a skip within the cooldown: {r:?}"));
    let second_delivery = r
        .iter()
        .enumerate()
        .filter(|(_, x)| x.0 == "delivered")
        .nth(1)
        .unwrap()
        .0;
    assert!(
        first_skip < second_delivery,
        "the restarted container failed again inside the cooldown and was left alone: {r:?}"
    );
    // "decided" entries mark the decisions; two deliveries a cooldown apart
    let decided: Vec<i64> = r.iter().filter(|x| x.0 == "decided").map(|x| x.1).collect();
    assert!(decided.len() >= 2, "{r:?}");
    assert!(
        decided[1] - decided[0] >= cooldown_s * 1000,
        "restart decisions a cooldown apart: {decided:?} ({delivered:?})"
    );
    assert_ne!(
        started_first,
        service.inspect(&id, "{{.State.StartedAt}}"),
        "vigil restarted it"
    );
    // the failures are series too (the restarted container's probe starts
    // over: its series come back within a discovery refresh)
    let q = format!("vigil_probe_failures_total{{name=\"{name}\",probe=\"liveness\"}}");
    wait_for(Duration::from_secs(20), &q, || {
        let fails = query(&http, &q)?;
        if fails
            .iter()
            .any(|(l, v)| *v >= 1.0 && l["container_id"] == id)
        {
            Ok(())
        } else {
            Err(format!("{fails:?}"))
        }
    });
}

#[test]
fn probes_reach_unpublished_ports_and_run_commands_in_the_container() {
    if !podman::usable() {
        eprintln!(
            "skipped: needs root and podman with localhost/bb:1 (scripts/install-test-deps.sh)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tag = podman::tag();
    let service = Service::start(d, &format!("vigil.test=probes{tag}"));
    let (c, agent, http) = pipeline(d, &service, None);
    // no network address at all: only its own loopback
    let lonely = format!("vigillonely{tag}");
    service.run(&[
        "--name",
        &lonely,
        "--network",
        "none",
        "--label",
        "vigil.service=lonely",
        "--label",
        "vigil.probe.readiness.http.port=8080",
        "--label",
        "vigil.probe.readiness.http.path=/healthz",
        "--label",
        "vigil.probe.readiness.period=1s",
        "--label",
        "vigil.probe.liveness.tcp.port=9999",
        "--label",
        "vigil.probe.liveness.period=1s",
        podman::IMAGE,
        "sh",
        "-c",
        &httpd(true),
    ]);
    // a command probe that passes and one that fails
    let cmd = format!("vigilexec{tag}");
    service.run(&[
        "--name",
        &cmd,
        "--label",
        "vigil.probe.readiness.exec=cat /www/healthz",
        "--label",
        "vigil.probe.readiness.period=1s",
        "--label",
        "vigil.probe.liveness.exec=[\"cat\", \"/nonexistent\"]",
        "--label",
        "vigil.probe.liveness.period=1s",
        "--label",
        "vigil.probe.liveness.failure-threshold=1",
        podman::IMAGE,
        "sh",
        "-c",
        &httpd(true),
    ]);
    // a probe with a mistake: reported, not run
    let bad = format!("vigilbad{tag}");
    service.run(&[
        "--name",
        &bad,
        "--label",
        "vigil.probe.liveness.http.port=http",
        podman::IMAGE,
        "sleep",
        "600",
    ]);
    let want = |name: &str, probe: &str, metric: &str, v: f64| {
        let q = format!("{metric}{{name=\"{name}\",probe=\"{probe}\"}}");
        wait_for(Duration::from_secs(40), &q, || {
            let r = query(&http, &q)?;
            if r.iter().any(|(_, x)| *x == v) {
                Ok(r)
            } else {
                Err(format!("{r:?}\n{}", c.stderr_text()))
            }
        })
    };
    let r = want(&lonely, "readiness", "vigil_probe_passing", 1.0);
    assert_eq!(r[0].0["service"], "lonely");
    assert!(r[0].0["image"].contains("bb"), "{r:?}");
    want(&lonely, "readiness", "vigil_probe_success", 1.0);
    // nothing listens on 9999: the TCP liveness probe fails there
    want(&lonely, "liveness", "vigil_probe_success", 0.0);
    want(&cmd, "readiness", "vigil_probe_passing", 1.0);
    want(&cmd, "liveness", "vigil_probe_passing", 0.0);
    // the threshold crossings and the mistake are events at the collector
    // (the restart path takes them: no rule matches here, so nothing acts)
    let r = query(&http, &format!("vigil_probe_success{{name=\"{bad}\"}}")).unwrap();
    assert!(r.is_empty(), "a probe with a mistake is not run: {r:?}");
    let agent_log = wait_for(
        Duration::from_secs(10),
        "the mistake in the agent's log",
        || {
            let t = agent.stderr_text();
            if t.contains("probe labels not understood") {
                Ok(t)
            } else {
                Err(t)
            }
        },
    );
    assert!(
        agent_log.contains("probe labels not understood") && agent_log.contains("http.port"),
        "the mistake is reported: {agent_log}"
    );
}
