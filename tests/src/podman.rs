//! Real podman containers for end-to-end tests: whether podman can be used
//! here, a private `podman system service` (the Docker-compatible API the
//! collector's docker executor talks to), containers tagged with a per-test
//! label and removed when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The test image (static busybox: sh, echo, seq, sleep, cat, yes, dd, head),
/// made by `scripts/install-test-deps.sh`.
pub const IMAGE: &str = "localhost/bb:1";

/// Root and podman with [`IMAGE`]; tests skip (with a printed reason) otherwise.
pub fn usable() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    root && Command::new("podman")
        .args(["image", "exists", IMAGE])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A unique tag for names and labels of one test run.
pub fn tag() -> String {
    let n = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    format!("{n:x}")
}

/// A `podman system service` on a unix socket in `dir`; on drop, every
/// container carrying `label` (running or not) is removed and the service
/// stopped.
pub struct Service {
    child: Option<Child>,
    pub socket: PathBuf,
    pub label: String,
    dir: PathBuf,
}

impl Service {
    /// Starts the service (podman runs from `dir`: conmon writes files into
    /// the current folder) and waits for its socket.
    pub fn start(dir: &Path, label: &str) -> Service {
        let socket = dir.join("podman.sock");
        let child = Command::new("podman")
            .args([
                "system",
                "service",
                "--time=0",
                &format!("unix://{}", socket.display()),
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("podman system service");
        let s = Service {
            child: Some(child),
            socket,
            label: label.to_string(),
            dir: dir.to_path_buf(),
        };
        crate::wait_for(Duration::from_secs(20), "podman API socket", || {
            if s.socket.exists() {
                Ok(())
            } else {
                Err("no socket".into())
            }
        });
        s
    }

    /// `podman run -d --label <label> <args…>`; returns the container id.
    pub fn run(&self, args: &[&str]) -> String {
        let mut a = vec!["run", "-d", "--label", &self.label];
        a.extend_from_slice(args);
        let out = self.podman(&a);
        assert!(
            out.status.success(),
            "podman run {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs a podman command from the service's folder.
    pub fn podman(&self, args: &[&str]) -> std::process::Output {
        Command::new("podman")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("podman")
    }

    /// Ids of the labelled containers (`all`: stopped ones too).
    pub fn containers(&self, all: bool) -> Vec<String> {
        let filter = format!("label={}", self.label);
        let mut a = vec!["ps", "-q", "--no-trunc", "--filter", &filter];
        if all {
            a.push("-a");
        }
        String::from_utf8_lossy(&self.podman(&a).stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// `podman inspect --format <format> <id>`, trimmed.
    pub fn inspect(&self, id: &str, format: &str) -> String {
        String::from_utf8_lossy(&self.podman(&["inspect", "--format", format, id]).stdout)
            .trim()
            .to_string()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // a container the API service is still creating (an executor's clone)
        // shows up a moment later: sweep until a sweep finds nothing
        for sweep in 0..10 {
            let ids = self.containers(true);
            if ids.is_empty() && sweep > 0 {
                break;
            }
            for id in ids {
                let _ = self.podman(&["rm", "-f", "-t", "0", &id]);
            }
            std::thread::sleep(Duration::from_millis(700));
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
