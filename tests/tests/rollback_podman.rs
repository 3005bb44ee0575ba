//! The rolling-update demonstration on a plain podman host: a service `web`
//! of two busybox `httpd` replicas with an HTTP liveness probe is updated to
//! a version whose health check fails (an image with a `/bad` marker: no
//! `/healthz`). vigil sees the rollout, its rollback rule's analysis finds
//! the new version's probe failures above the threshold, and the docker
//! executor puts the service back on the previous image one replica at a
//! time; release tracking sees the rollout reverted. The audit log explains
//! the decision with the measured values, and the rollback is not repeated:
//! the same image rolled out again by a person is left alone. Prints the
//! reaction times (rollout seen → rollback decided → previous version only).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vigil_e2e::podman::{self, Service};
use vigil_e2e::{args, free_port, get, start_agent, start_collector, wait_for};

/// A web replica: healthy unless the image carries `/bad`; stops on TERM.
const WEB: &str = "trap 'exit 0' TERM; busybox mkdir -p /www; [ -f /bad ] || echo ok > /www/healthz; busybox httpd -f -p 8080 -h /www & wait";

/// Audit entries of `service` for rollouts and rollbacks, oldest first:
/// (action, result, time_ms, detail).
fn audit(http: &str, service: &str) -> Result<Vec<(String, String, i64, String)>, String> {
    let (_, body) = get(http, "/api/v1/actions?limit=1000")?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let mut out: Vec<_> = v["data"]["actions"]
        .as_array()
        .ok_or_else(|| body.clone())?
        .iter()
        .filter(|e| e["target"]["service"] == service)
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_string(),
                e["result"].as_str().unwrap_or("").to_string(),
                e["time_ms"].as_i64().unwrap_or(0),
                e["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.reverse();
    Ok(out)
}

fn first(r: &[(String, String, i64, String)], result: &str) -> Option<(i64, String)> {
    r.iter().find(|x| x.1 == result).map(|x| (x.2, x.3.clone()))
}

/// One round of the traffic loop: when it started (Unix ms), replicas that
/// answered `/healthz` with 200, and those that did not.
#[derive(Debug, Clone, Copy)]
struct Round {
    at_ms: i64,
    ok: u32,
    errors: u32,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The addresses of the service's running containers, from the Engine API.
fn replica_ips(socket: &std::path::Path, label: &str) -> Vec<String> {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return Vec::new();
    };
    let filters = format!("{{\"label\":[\"{label}\"],\"status\":[\"running\"]}}");
    let req = format!(
        "GET /containers/json?filters={} HTTP/1.0\r\nHost: d\r\n\r\n",
        vigil_e2e::url_encode(&filters)
    );
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(req.as_bytes()).is_err() {
        return Vec::new();
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    let Some((_, json)) = body.split_once("\r\n\r\n") else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            c["NetworkSettings"]["Networks"]
                .as_object()?
                .values()
                .find_map(|n| n["IPAddress"].as_str().filter(|i| !i.is_empty()))
                .map(str::to_string)
        })
        .collect()
}

/// `GET /healthz` on ip:8080: 200 or not.
fn healthy(ip: &str) -> bool {
    let Ok(addr) = format!("{ip}:8080").parse::<std::net::SocketAddr>() else {
        return false;
    };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut b = [0u8; 32];
    let n = s.read(&mut b).unwrap_or(0);
    String::from_utf8_lossy(&b[..n]).starts_with("HTTP/1.0 200")
        || String::from_utf8_lossy(&b[..n]).starts_with("HTTP/1.1 200")
}

/// Steady traffic: every 50 ms, `/healthz` on every running replica.
fn traffic(
    socket: std::path::PathBuf,
    label: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Round>> {
    std::thread::spawn(move || {
        let mut rounds = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let at_ms = now_ms();
            let t0 = Instant::now();
            let (mut ok, mut errors) = (0, 0);
            for ip in replica_ips(&socket, &label) {
                if healthy(&ip) {
                    ok += 1;
                } else {
                    errors += 1;
                }
            }
            rounds.push(Round { at_ms, ok, errors });
            std::thread::sleep(Duration::from_millis(50).saturating_sub(t0.elapsed()));
        }
        rounds
    })
}

/// Untags the test's healthy second name (that name only).
struct Tag(String);
impl Drop for Tag {
    fn drop(&mut self) {
        let _ = std::process::Command::new("podman")
            .args(["untag", &self.0, &self.0])
            .output();
    }
}

/// Removes the test's bad image when the test ends (it has only this name).
struct Image(String);
impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::process::Command::new("podman")
            .args(["rmi", "-f", &self.0])
            .output();
    }
}

#[test]
fn a_bad_version_is_rolled_back_to_the_previous_image_once() {
    if !podman::usable() {
        eprintln!(
            "skipped: needs root and podman with localhost/bb:1 (scripts/install-test-deps.sh)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tag = podman::tag();
    let web = format!("web{tag}");
    let service = Service::start(d, &format!("vigil.test={web}"));
    // the bad version: the same busybox with a /bad marker
    let bad = format!("localhost/bb:bad{tag}");
    let maker = format!("{web}-maker");
    service.run(&["--name", &maker, podman::IMAGE, "sh", "-c", "echo > /bad"]);
    wait_for(Duration::from_secs(20), "the maker to exit", || {
        let s = service.inspect(&maker, "{{.State.Running}}");
        if s == "false" { Ok(()) } else { Err(s) }
    });
    let out = service.podman(&["commit", &maker, &bad]);
    assert!(
        out.status.success(),
        "podman commit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _bad_image = Image(bad.clone());
    // a healthy new version for the other service: the same image, another name
    let calm = format!("calm{tag}");
    let good = format!("localhost/bb:ok{tag}");
    assert!(
        service
            .podman(&["tag", podman::IMAGE, &good])
            .status
            .success()
    );
    let _good_name = Tag(good.clone());
    std::fs::write(
        d.join("actions.yml"),
        format!(
            "executors:\n  podman: {{type: docker, socket: {socket}, service_label: vigil.service}}\n\
             rollouts: {{interval: 500ms}}\n\
             rollback:\n  - name: web\n    match: {{service: {web}}}\n    executor: podman\n    \
             window: 60s\n    cooldown: 10m\n    checks:\n      - {{name: liveness, metric: probe_failures, max: 1}}\n  \
             - name: calm\n    match: {{service: {calm}}}\n    executor: podman\n    \
             window: 6s\n    checks:\n      - {{name: liveness, metric: probe_failures, max: 1}}\n",
            socket = service.socket.display()
        ),
    )
    .unwrap();
    let (hp, gp) = (free_port(), free_port());
    let http = format!("127.0.0.1:{hp}");
    let actions = d.join("actions.yml").display().to_string();
    let c = start_collector(d, hp, gp, &args(&["--actions", &actions]));
    let socket = service.socket.display().to_string();
    let _agent = start_agent(
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
            "500ms",
        ]),
    );
    let replica_of = |svc: &str, name: &str, image: &str| {
        service.run(&[
            "--name",
            name,
            "--label",
            &format!("vigil.service={svc}"),
            "--label",
            "vigil.probe.liveness.http.port=8080",
            "--label",
            "vigil.probe.liveness.http.path=/healthz",
            "--label",
            "vigil.probe.liveness.period=1s",
            "--label",
            "vigil.probe.liveness.failure-threshold=2",
            image,
            "sh",
            "-c",
            WEB,
        ])
    };
    let replica = |name: &str, image: &str| replica_of(&web, name, image);
    replica(&format!("{web}-1"), podman::IMAGE);
    replica(&format!("{web}-2"), podman::IMAGE);
    replica_of(&calm, &format!("{calm}-1"), podman::IMAGE);
    let q = format!("/api/v1/query?query=vigil_container_info%7Bservice%3D%22{web}%22%7D");
    wait_for(Duration::from_secs(30), "both replicas known", || {
        let (_, b) = get(&http, &q)?;
        if b.matches("container_id").count() == 2 {
            Ok(())
        } else {
            Err(format!("{b}\n{}", c.stderr_text()))
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(
        service.socket.clone(),
        format!("vigil.service={web}"),
        stop.clone(),
    );
    std::thread::sleep(Duration::from_secs(1));

    // the healthy update of the other service
    replica_of(&calm, &format!("{calm}-2"), &good);
    service.podman(&["rm", "-f", "-t", "0", &format!("{calm}-1")]);

    // the rolling update: a bad replica comes, an old one goes
    replica(&format!("{web}-3"), &bad);
    service.podman(&["rm", "-f", "-t", "0", &format!("{web}-1")]);
    let r = wait_for(
        Duration::from_secs(90),
        "the rollback to be delivered and the rollout reverted",
        || {
            let r = audit(&http, &web)?;
            if first(&r, "rollout_reverted").is_some() && first(&r, "delivered").is_some() {
                Ok(r)
            } else {
                Err(format!("{r:#?}\n{}", c.stderr_text()))
            }
        },
    );
    let started = first(&r, "rollout_started").unwrap();
    let decided = first(&r, "decided").unwrap();
    let delivered = first(&r, "delivered").unwrap();
    let reverted = first(&r, "rollout_reverted").unwrap();
    assert!(
        decided.1.contains("liveness: FAILED") && decided.1.contains(&bad),
        "the decision names the check, its values and the image: {}",
        decided.1
    );
    assert!(delivered.1.contains("replaced by"), "{}", delivered.1);
    // only the previous image serves now, with as many replicas as before
    let web_images = || -> Vec<String> {
        let out = service.podman(&[
            "ps",
            "--filter",
            &format!("label=vigil.service={web}"),
            "--format",
            "{{.Image}}",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let images = web_images();
    assert_eq!(images.len(), 2, "{images:?}");
    assert!(images.iter().all(|i| i == podman::IMAGE), "{images:?}");
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let rounds = load.join().unwrap();
    let errors: u32 = rounds.iter().map(|r| r.errors).sum();
    let requests: u32 = rounds.iter().map(|r| r.ok + r.errors).sum();
    let after: u32 = rounds
        .iter()
        .filter(|r| r.at_ms > delivered.0)
        .map(|r| r.errors)
        .sum();
    eprintln!(
        "traffic: {} rounds, {requests} requests, {errors} failed ({after} after the rollback was delivered)",
        rounds.len()
    );
    // a replica served in every round: the update and the rollback never
    // took the service down
    let empty: Vec<&Round> = rounds.iter().filter(|r| r.ok == 0).collect();
    assert!(
        empty.is_empty(),
        "rounds with no replica serving: {empty:?}"
    );
    eprintln!("decision: {}\ndelivery: {}", decided.1, delivered.1);
    eprintln!(
        "reaction: rollout seen → rollback decided {} ms; decided → delivered {} ms; \
         decided → only the previous image seen {} ms; rollout seen → reverted {} ms",
        decided.0 - started.0,
        delivered.0 - decided.0,
        reverted.0 - decided.0,
        reverted.0 - started.0
    );

    // the healthy update was judged and left alone
    let calm_audit = wait_for(Duration::from_secs(40), "the healthy update judged", || {
        let r = audit(&http, &calm)?;
        if first(&r, "analysis_passed").is_some() {
            Ok(r)
        } else {
            Err(format!("{r:#?}"))
        }
    });
    assert!(
        calm_audit
            .iter()
            .all(|x| x.1 != "decided" && x.1 != "delivered"),
        "{calm_audit:#?}"
    );
    eprintln!(
        "healthy update: {}",
        first(&calm_audit, "analysis_passed").unwrap().1
    );

    // a person rolls the bad image out again: vigil does not fight
    replica(&format!("{web}-4"), &bad);
    let r = wait_for(Duration::from_secs(60), "the re-rollout judged", || {
        let r = audit(&http, &web)?;
        if first(&r, "skipped_rerollout").is_some() {
            Ok(r)
        } else {
            Err(format!("{r:#?}"))
        }
    });
    assert_eq!(
        r.iter().filter(|x| x.1 == "decided").count(),
        1,
        "one rollback only: {r:#?}"
    );
    assert!(
        service
            .containers(false)
            .iter()
            .any(|id| service.inspect(id, "{{.ImageName}}") == bad)
    );
}
