//! The Docker Engine API executor against a real peer: Podman's
//! Docker-compatible service on a unix socket, with real containers.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vigil_collector::actions::docker::DockerClient;

struct Service {
    child: Child,
    label: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        // remove every container the test (or the executor) made
        if let Ok(out) = Command::new("podman")
            .args(["ps", "-aq", "--filter", &format!("label={}", self.label)])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("podman")
                    .args(["rm", "-f", "-t", "0", id])
                    .output();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn podman_usable() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    root && Command::new("podman")
        .args(["image", "exists", "localhost/bb:1"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn podman(scratch: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(args)
        .current_dir(scratch)
        .output()
        .expect("podman");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn restarts_and_scales_real_podman_containers() {
    if !podman_usable() {
        eprintln!(
            "skipped: needs root and podman with localhost/bb:1 (scripts/install-test-deps.sh)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("podman.sock");
    let tag = vigil_collector::actions::audit_id_suffix();
    let label_value = format!("vigiltest{tag}");
    let child = Command::new("podman")
        .args([
            "system",
            "service",
            "--time=0",
            &format!("unix://{}", sock.display()),
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("podman system service");
    let _svc = Service {
        child,
        label: format!("com.docker.compose.service={label_value}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "podman service socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..2 {
        podman(
            dir.path(),
            &[
                "run",
                "-d",
                "--name",
                &format!("{label_value}-{i}"),
                "--label",
                &format!("com.docker.compose.service={label_value}"),
                "--memory",
                "32m",
                "localhost/bb:1",
                "sleep",
                "600",
            ],
        );
    }
    let c = DockerClient::new(&sock, Duration::from_secs(30));
    let label = "com.docker.compose.service";
    assert_eq!(c.list_service(label, &label_value).await.unwrap().len(), 2);

    // scale up by cloning: the clone runs with the template's limits
    assert_eq!(c.scale_service(label, &label_value, 3).await.unwrap(), 3);
    let list = c.list_service(label, &label_value).await.unwrap();
    assert_eq!(list.len(), 3);
    let newest = &list[0].id;
    let mem = podman(
        dir.path(),
        &["inspect", newest, "--format", "{{.HostConfig.Memory}}"],
    );
    assert_eq!(mem, "33554432", "clone lost the memory limit");

    // scale down removes the newest
    assert_eq!(c.scale_service(label, &label_value, 1).await.unwrap(), 1);
    let list = c.list_service(label, &label_value).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        podman(
            dir.path(),
            &["inspect", &list[0].id, "--format", "{{.Name}}"]
        ),
        format!("{label_value}-0")
    );

    // restart: the container starts again
    let before = podman(
        dir.path(),
        &["inspect", &list[0].id, "--format", "{{.State.StartedAt}}"],
    );
    c.restart(&list[0].id, 1).await.unwrap();
    let after = podman(
        dir.path(),
        &["inspect", &list[0].id, "--format", "{{.State.StartedAt}}"],
    );
    assert_ne!(before, after, "restart did not restart");

    // an unknown container is an error with the status
    let e = c
        .restart("0000000000000000", 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("404"), "{e}");
}
