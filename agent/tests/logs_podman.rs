//! A real Podman container (k8s-file log driver, CRI format) writing numbered
//! lines: discovered by its layout, parsed, labelled with its full id and
//! name. Skips (with a reason) where podman or the test image is missing.

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod logs_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use logs_support::*;
use vigil_agent::logs::discovery::Identity;
use vigil_agent::logs::parse::Stream;

/// Removes the container however the test ends.
struct Container {
    name: String,
    cwd: tempfile::TempDir,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .current_dir(self.cwd.path())
            .args(["rm", "-f", "-t", "0", &self.name])
            .output();
    }
}

fn podman_ready() -> Option<String> {
    let out = Command::new("podman")
        .args(["image", "exists", "localhost/bb:1"])
        .output();
    match out {
        Err(e) => Some(format!("podman not runnable: {e}")),
        Ok(o) if !o.status.success() => {
            Some("image localhost/bb:1 missing (see testbed set-up)".into())
        }
        Ok(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_container_logs_are_tailed_with_id_and_name() {
    if let Some(why) = podman_ready() {
        println!("skipping: {why}");
        return;
    }
    // conmon drops files into the folder podman starts from: a scratch one.
    let c = Container {
        name: format!("vigil-logs-test-{}", std::process::id()),
        cwd: tempfile::tempdir().unwrap(),
    };
    let script = "i=0; while [ $i -lt 3000 ]; do echo \"line $i\"; i=$((i+1)); done; \
                  echo oops >&2; printf 'no newline'; sleep 30";
    let out = Command::new("podman")
        .current_dir(c.cwd.path())
        .args([
            "run",
            "-d",
            "--name",
            &c.name,
            "--log-driver",
            "k8s-file",
            "localhost/bb:1",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("podman run");
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(id.len(), 64, "full container id, got {id:?}");
    let log = format!("/var/lib/containers/storage/overlay-containers/{id}/userdata/ctr.log");
    for _ in 0..100 {
        if Path::new(&log).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let state = tempfile::tempdir().unwrap();
    // Only this container's log (other containers on the machine are not ours
    // to read); its identity comes from the path's shape, as with the defaults.
    let cfg = logs_config(&[&format!(
        "/var/lib/containers/storage/overlay-containers/{id}/userdata/*.log"
    )]);
    let run = Running::start(&cfg, Path::new("/"), state.path(), ack_all());
    let want = 3000 + 1;
    let ok = run
        .wait_for(Duration::from_secs(30), |r| r.len() >= want)
        .await;
    let metrics = run.metrics.clone();
    let got = run.stop().await;
    assert!(ok, "got {} of {want} lines", got.len());

    let stdout: Vec<_> = got
        .iter()
        .filter(|e| e.stream.get("stream") == Some("stdout"))
        .collect();
    let stderr: Vec<_> = got
        .iter()
        .filter(|e| e.stream.get("stream") == Some("stderr"))
        .collect();
    let lines: Vec<&str> = stdout.iter().map(|e| e.line.as_str()).collect();
    let want_lines: Vec<String> = (0..3000).map(|i| format!("line {i}")).collect();
    assert_eq!(
        lines[..3000],
        want_lines.iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
    // conmon writes the unterminated tail as a partial (`P`) line. If it
    // lands before the stderr line, it is handed over unfinished after a
    // second so that it does not hold stderr back; else it waits for its end.
    assert!(
        lines.len() == 3000 || lines[3000..] == ["no newline"],
        "{:?}",
        &lines[3000..]
    );
    assert_eq!(stderr.len(), 1);
    assert_eq!(stderr[0].line, "oops");
    for e in &got {
        assert_eq!(e.stream.get("container_id"), Some(id.as_str()));
        assert_eq!(e.stream.get("container_name"), Some(c.name.as_str()));
        assert!(
            e.timestamp_ns > 1_700_000_000_000_000_000,
            "timestamp from the line"
        );
    }
    let identity = Identity {
        container_id: id.clone(),
        container_name: c.name.clone(),
        ..Identity::default()
    };
    assert_eq!(
        metrics.lines_of(&identity, Stream::Stdout),
        lines.len() as u64
    );
    assert_eq!(metrics.lines_of(&identity, Stream::Stderr), 1);
}
