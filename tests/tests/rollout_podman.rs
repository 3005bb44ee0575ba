//! Releases as data, on real podman containers: a service (`vigil.service`
//! label) of two replicas is updated one replica at a time to another image;
//! the agent ships each container's image and service
//! (`vigil_container_info`), and the collector's release tracking sees the
//! rollout start (both images running) and complete (only the new one),
//! keeps the previous version, exposes `vigil_rollout_*` and audits both
//! changes with the images. A service whose image does not change has no
//! rollout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use vigil_e2e::podman::{self, Service};
use vigil_e2e::{args, free_port, get, start_agent, start_collector, wait_for};

/// Rollout audit entries of `service`, oldest first: (result, from, to).
fn rollouts(http: &str, service: &str) -> Result<Vec<(String, String, String)>, String> {
    let (_, body) = get(http, "/api/v1/actions?limit=1000")?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let mut out: Vec<_> = v["data"]["actions"]
        .as_array()
        .ok_or_else(|| body.clone())?
        .iter()
        .filter(|e| e["action"] == "rollout" && e["target"]["service"] == service)
        .map(|e| {
            (
                e["result"].as_str().unwrap_or("").to_string(),
                e["from_image"].as_str().unwrap_or("").to_string(),
                e["to_image"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// Removes the test's second name of the image when the test ends — that
/// name only (`podman untag IMAGE` without a name would remove every name,
/// the shared test image's included).
struct Tag(String);
impl Drop for Tag {
    fn drop(&mut self) {
        let _ = std::process::Command::new("podman")
            .args(["untag", &self.0, &self.0])
            .output();
    }
}

#[test]
fn a_rolling_update_is_seen_as_a_rollout_with_its_previous_version() {
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
    let calm = format!("calm{tag}");
    let v2 = format!("localhost/bb:rel{tag}");
    let service = Service::start(d, &format!("vigil.test={web}"));
    let out = service.podman(&["tag", podman::IMAGE, &v2]);
    assert!(out.status.success(), "podman tag");
    let _untag = Tag(v2.clone());
    std::fs::write(
        d.join("actions.yml"),
        format!(
            "executors:\n  podman: {{type: docker, socket: {}}}\nrollouts: {{interval: 500ms}}\n",
            service.socket.display()
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
    let replica = |name: &str, svc: &str, image: &str| {
        service.run(&[
            "--name",
            name,
            "--label",
            &format!("vigil.service={svc}"),
            image,
            "sleep",
            "600",
        ])
    };
    let old1 = replica(&format!("{web}-1"), &web, podman::IMAGE);
    replica(&format!("{web}-2"), &web, podman::IMAGE);
    replica(&format!("{calm}-1"), &calm, podman::IMAGE);
    // the baseline is taken before the update starts
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
    assert!(rollouts(&http, &web).unwrap().is_empty());

    // one replica of the new version next to the old ones: started
    replica(&format!("{web}-3"), &web, &v2);
    let r = wait_for(Duration::from_secs(30), "the rollout to start", || {
        let r = rollouts(&http, &web)?;
        if r.iter().any(|x| x.0 == "rollout_started") {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    });
    assert_eq!(
        r[0],
        (
            "rollout_started".to_string(),
            podman::IMAGE.to_string(),
            v2.clone()
        )
    );
    let (_, m) = get(&http, "/metrics").unwrap();
    assert!(
        m.contains(&format!(
            "vigil_rollout_info{{service=\"{web}\",old_image=\"{}\",new_image=\"{v2}\",state=\"progressing\"}} 1",
            podman::IMAGE
        )),
        "{m}"
    );

    // the old replicas go, a second new one comes: complete
    service.podman(&["rm", "-f", "-t", "0", &old1]);
    replica(&format!("{web}-4"), &web, &v2);
    service.podman(&["rm", "-f", "-t", "0", &format!("{web}-2")]);
    let r = wait_for(Duration::from_secs(30), "the rollout to complete", || {
        let r = rollouts(&http, &web)?;
        if r.iter().any(|x| x.0 == "rollout_completed") {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    });
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[1].1, podman::IMAGE, "the previous version is kept");
    assert_eq!(r[1].2, v2);
    let (_, m) = get(&http, "/metrics").unwrap();
    assert!(
        m.contains(&format!("vigil_rollout_progressing{{service=\"{web}\"}} 0")),
        "{m}"
    );
    // a service that was not updated has no rollout
    assert!(rollouts(&http, &calm).unwrap().is_empty());
    assert!(
        !m.lines()
            .any(|l| l.starts_with("vigil_rollout") && l.contains(&calm)),
        "{m}"
    );
}
