//! The classic autoscaling scenario on real podman containers: a 2-replica
//! `web` service burns CPU under a 0.5-CPU quota; the agent scrapes its
//! cgroups every second, the collector's autoscaler (HPA algorithm, target
//! 40% of the quota) scales it to 4 through podman's Docker-compatible API,
//! and back to 2 once the load stops and the (shortened) scale-down
//! stabilization window has passed — with no step in between.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use vigil_e2e::podman::{self, Service};
use vigil_e2e::{args, free_port, get, start_agent, start_collector, wait_for};

#[test]
fn web_scales_from_2_to_4_under_load_and_back_to_2_without_flapping() {
    if !podman::usable() {
        eprintln!(
            "skipped: needs root and podman with localhost/bb:1 (scripts/install-test-deps.sh)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let svc = format!("vigilweb{}", podman::tag());
    let label = format!("com.docker.compose.service={svc}");
    let service = Service::start(d, &label);
    let sock = service.socket.clone();
    for i in 0..2 {
        service.run(&[
            "--name",
            &format!("{svc}-{i}"),
            "--cpus",
            "0.5",
            podman::IMAGE,
            "sh",
            "-c",
            "while [ ! -e /stop ]; do :; done; sleep 3600",
        ]);
    }
    std::fs::write(
        d.join("actions.yml"),
        format!(
            "executors:\n  podman: {{type: docker, socket: {sock}}}\n\
             autoscale:\n  - name: web\n    executor: podman\n    workload: {{service: {svc}}}\n    \
             query: '100 * avg(rate(container_cpu_usage_seconds_total{{name=~\"{svc}-.*\"}}[5s])) / 0.5'\n    \
             target: 40\n    min_replicas: 2\n    max_replicas: 4\n    interval: 1s\n    \
             behavior:\n      scale_down: {{stabilization_window: 15s}}\n",
            sock = sock.display()
        ),
    )
    .unwrap();
    let (hp, gp) = (free_port(), free_port());
    let http = format!("127.0.0.1:{hp}");
    let actions = d.join("actions.yml").display().to_string();
    let _collector = start_collector(d, hp, gp, &args(&["--actions", &actions]));
    let _agent = start_agent(d, gp, &args(&["--log-default-paths", "false"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while service.containers(false).len() != 4 {
        if std::time::Instant::now() > deadline {
            let q = format!(
                "/api/v1/query?query=container_cpu_usage_seconds_total%7Bname%3D~%22{svc}-.%2A%22%7D"
            );
            panic!(
                "no scale-up to 4 ({} replicas)\nactions: {:?}\nseries: {:?}\ncollector: {}",
                service.containers(false).len(),
                get(&http, "/api/v1/actions"),
                get(&http, &q),
                _collector.stderr_text()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // the load stops in every replica, clones included
    for id in service.containers(false) {
        let out = Command::new("podman")
            .args(["exec", &id, "sh", "-c", ": > /stop"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "podman exec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while service.containers(false).len() != 2 {
        if std::time::Instant::now() > deadline {
            let (_, a) = get(&http, "/api/v1/actions?limit=3").unwrap_or_default();
            panic!(
                "no scale-down to 2 ({} replicas)\nactions: {a}",
                service.containers(false).len()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // the executor audits after the containers are gone: wait for it
    let (steps, body) = wait_for(
        Duration::from_secs(30),
        "the scale-down in the audit log",
        || {
            let (_, body) = get(&http, "/api/v1/actions?limit=1000")?;
            let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            let mut steps: Vec<(u64, u64)> = v["data"]["actions"]
                .as_array()
                .ok_or("no actions")?
                .iter()
                .filter(|e| e["action"] == "scale" && e["result"] == "delivered")
                .filter_map(|e| Some((e["from_replicas"].as_u64()?, e["to_replicas"].as_u64()?)))
                .collect();
            steps.reverse();
            if steps.last().map(|s| s.1) == Some(2) {
                Ok((steps, body))
            } else {
                Err(format!("{steps:?}"))
            }
        },
    );
    // up to 4 (one step, or more while the load was still ramping up), then
    // down to 2: no reversal at any point — no flapping
    let peak = steps
        .iter()
        .position(|s| s.1 == 4)
        .unwrap_or_else(|| panic!("never reached 4: {body}"));
    assert_eq!(steps[0].0, 2, "{body}");
    for w in steps.windows(2) {
        assert_eq!(w[0].1, w[1].0, "steps do not chain: {steps:?}");
    }
    assert!(
        steps[..=peak].iter().all(|s| s.1 > s.0),
        "not monotonic up: {steps:?}"
    );
    assert!(
        steps[peak + 1..].iter().all(|s| s.1 < s.0),
        "not monotonic down: {steps:?}"
    );
    assert_eq!(steps.last().unwrap().1, 2);
}
