//! Auto healing on real podman containers: a container that leaks memory
//! under a 32 MiB limit is OOM-killed by the kernel; the agent reads the kill
//! from `/dev/kmsg` and ships it as an event; the collector's restart rule
//! restarts the container through podman's Docker-compatible API — once per
//! cooldown: the restarted container leaks and dies again at once, and is
//! left alone. After a collector restart the cooldown still holds.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use vigil_e2e::podman::{self, Service};
use vigil_e2e::{Proc, args, free_port, get, start_agent, start_collector, wait_for};

/// Doubles a shell string until the memory limit kills the shell.
const LEAK: &str = "sleep 2; x=0123456789abcdef; while :; do x=$x$x; done";

fn collector(d: &std::path::Path, hp: u16, gp: u16) -> Proc {
    let actions = d.join("actions.yml").display().to_string();
    start_collector(d, hp, gp, &args(&["--actions", &actions]))
}

/// Restart audit entries for `name`, oldest first: (result, time_ms).
fn restarts(http: &str, name: &str) -> Result<Vec<(String, i64)>, String> {
    let (_, body) = get(http, "/api/v1/actions?limit=1000")?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let mut out: Vec<(String, i64)> = v["data"]["actions"]
        .as_array()
        .ok_or_else(|| body.clone())?
        .iter()
        .filter(|e| e["action"] == "restart" && e["target"]["name"] == name)
        .map(|e| {
            (
                e["result"].as_str().unwrap_or("").to_string(),
                e["time_ms"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    out.reverse();
    Ok(out)
}

fn count(r: &[(String, i64)], result: &str) -> usize {
    r.iter().filter(|(x, _)| x == result).count()
}

#[test]
fn an_oom_killed_container_is_restarted_once_per_cooldown_across_collector_restarts() {
    if !podman::usable() {
        eprintln!(
            "skipped: needs root and podman with localhost/bb:1 (scripts/install-test-deps.sh)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tag = podman::tag();
    let name = format!("vigilleak{tag}");
    let service = Service::start(d, &format!("vigil.test={name}"));
    std::fs::write(
        d.join("actions.yml"),
        format!(
            "executors:\n  podman: {{type: docker, socket: {}}}\n\
             restart:\n  - name: oom\n    match: {{event: oom_kill, name: {name}}}\n    \
             executor: podman\n    cooldown: 10m\n    max_restarts: 5\n    window: 1h\n",
            service.socket.display()
        ),
    )
    .unwrap();
    let (hp, gp) = (free_port(), free_port());
    let http = format!("127.0.0.1:{hp}");
    let mut c = collector(d, hp, gp);
    let _agent = start_agent(d, gp, &args(&["--log-default-paths", "false"]));
    // the agent is up and shipping before the first kill
    wait_for(Duration::from_secs(30), "agent samples", || {
        let (_, b) = get(&http, "/api/v1/query?query=vigil_agent_scrapes_total")?;
        if b.contains("\"result\":[{") {
            Ok(())
        } else {
            Err(b)
        }
    });
    let id = service.run(&[
        "--name",
        &name,
        "--memory",
        "32m",
        "--memory-swap",
        "32m",
        podman::IMAGE,
        "sh",
        "-c",
        LEAK,
    ]);
    let started_first = service.inspect(&id, "{{.State.StartedAt}}");

    // killed, restarted by vigil (a new start), killed again, left alone
    let r = wait_for(
        Duration::from_secs(60),
        "a restart and then a cooldown skip",
        || {
            let r = restarts(&http, &name)?;
            if count(&r, "delivered") >= 1 && count(&r, "skipped_cooldown") >= 1 {
                Ok(r)
            } else {
                Err(format!("{r:?}\n{}", c.stderr_text()))
            }
        },
    );
    assert_eq!(count(&r, "delivered"), 1, "{r:?}");
    assert_eq!(
        r.first().map(|x| x.0.as_str()),
        Some("decided"),
        "decided first: {r:?}"
    );
    let started_second = service.inspect(&id, "{{.State.StartedAt}}");
    assert_ne!(started_first, started_second, "vigil started it again");
    let oom = service.inspect(&id, "{{.State.OOMKilled}}");
    wait_for(
        Duration::from_secs(20),
        "the restarted container to die",
        || {
            let running = service.inspect(&id, "{{.State.Running}}");
            if running == "false" {
                Ok(())
            } else {
                Err(running)
            }
        },
    );
    // the collector's /metrics counts the kills the agent saw
    let (_, m) = get(&http, "/metrics").unwrap();
    assert!(m.contains("vigil_actions_total"), "{m}");

    // collector restart (kill -9): the cooldown holds
    c.kill9();
    let c2 = collector(d, hp, gp);
    let before = restarts(&http, &name).unwrap();
    let out = service.podman(&["start", &id]);
    assert!(out.status.success(), "podman start");
    let after = wait_for(
        Duration::from_secs(60),
        "the kill after the collector restart to be judged",
        || {
            let r = restarts(&http, &name)?;
            if count(&r, "skipped_cooldown") > count(&before, "skipped_cooldown") {
                Ok(r)
            } else {
                Err(format!("{r:?}\n{}", c2.stderr_text()))
            }
        },
    );
    assert_eq!(
        count(&after, "delivered"),
        1,
        "no second restart within the cooldown, even after a collector restart: {after:?} (OOMKilled={oom})"
    );
}
