//! Harness for end-to-end tests: finds the built binaries, picks free
//! loopback ports, starts and kills processes, reads HTTP endpoints and parses
//! Prometheus text. Not a test itself; `tests/*.rs` use it.
//!
//! The binaries must be built first (`cargo build --workspace --bins`; the
//! project's test script does this before `cargo test`).

// Tests and benchmarks stop loudly on what they did not expect: they may
// unwrap, expect and panic (the workspace denies it everywhere else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;
pub mod dashboards;
pub mod podman;
pub mod prom;
pub mod tls;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary in the same profile as the running test.
pub fn bin(name: &str) -> PathBuf {
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the end-to-end tests",
        p.display()
    );
    p
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A child process whose output goes to files in `log_dir`; killed on drop.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    /// Starts `program` with `args`, environment cleared of `VIGIL_*`.
    pub fn start(name: &str, program: &Path, args: &[String], log_dir: &Path) -> Proc {
        Self::start_env(name, program, args, &[], log_dir)
    }

    pub fn start_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> Proc {
        std::fs::create_dir_all(log_dir).expect("log dir");
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let stdout = log_dir.join(format!("{name}-{n}.out"));
        let stderr = log_dir.join(format!("{name}-{n}.err"));
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        for (k, _) in std::env::vars() {
            if k.starts_with("VIGIL_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        Proc {
            name: name.to_string(),
            child: Some(child),
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `timeout` for the exit status (SIGKILL after).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Whether the process has exited (and its status).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// What the process wrote on stderr so far (for failure messages).
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts the built collector on 127.0.0.1 (`http_port`, `grpc_port`), data
/// in `<dir>/collector`, logs in `<dir>/logs`, plus `extra` arguments, and
/// waits until it is ready.
pub fn start_collector(dir: &Path, http_port: u16, grpc_port: u16, extra: &[String]) -> Proc {
    let http = format!("127.0.0.1:{http_port}");
    let mut args = vec![
        "--http-listen".to_string(),
        http.clone(),
        "--grpc-listen".into(),
        format!("127.0.0.1:{grpc_port}"),
        "--data-dir".into(),
        dir.join("collector").display().to_string(),
    ];
    args.extend_from_slice(extra);
    let p = Proc::start(
        "collector",
        &bin("vigil-collector"),
        &args,
        &dir.join("logs"),
    );
    wait_for(Duration::from_secs(30), "collector ready", || {
        match get(&http, "/-/ready") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?} {}", p.stderr_text())),
        }
    });
    p
}

/// Starts the built agent shipping to 127.0.0.1:`grpc_port` every second
/// (no HTTP endpoint, state in `<dir>/agent`), plus `extra` arguments.
pub fn start_agent(dir: &Path, grpc_port: u16, extra: &[String]) -> Proc {
    let mut args = vec![
        "--collector".to_string(),
        format!("http://127.0.0.1:{grpc_port}"),
        "--interval".into(),
        "1s".into(),
        "--batch-max-wait".into(),
        "100ms".into(),
        "--http-listen".into(),
        "off".into(),
        "--state-dir".into(),
        dir.join("agent").display().to_string(),
    ];
    args.extend_from_slice(extra);
    Proc::start("agent", &bin("vigil-agent"), &args, &dir.join("logs"))
}

/// A tmpfs of a given size that the test mounts on a fresh directory
/// (root only) and unmounts on drop — declare it before the processes that
/// use it, so they are killed first.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `32m`); `Err` says
    /// why not (not root, no `mount`).
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes available on it now.
    pub fn available(&self) -> u64 {
        vigil_common::disk::space(self.dir.path())
            .map(|s| s.available)
            .unwrap_or(0)
    }

    /// Fills it with `name` until only `leave` bytes are available; returns
    /// the file's path (delete it to give the space back).
    pub fn fill(&self, name: &str, leave: u64) -> PathBuf {
        let p = self.dir.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .expect("ballast file");
        let chunk = vec![0x5au8; 64 << 10];
        while self.available() > leave {
            let n = (self.available() - leave).min(chunk.len() as u64) as usize;
            if f.write_all(&chunk[..n.max(1)]).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let p = self.dir.path();
        let ok = Command::new("umount")
            .arg(p)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            // a process still holds a file open: detach it now, the kernel
            // frees it when the last user goes
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
}

/// Converts `&str` arguments for [`start_collector`] and [`start_agent`].
pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `timeout`
/// with `what` and the last state description.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match f() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A minimal HTTP/1.0 client (no chunked encoding to deal with): returns
/// (status, body).
pub fn http(
    method: &str,
    addr: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    let headers: Vec<(&str, &str)> = content_type
        .map(|ct| ("Content-Type", ct))
        .into_iter()
        .collect();
    http_with_headers(method, addr, path, &headers, body)
}

/// Like [`http`], with any request headers.
pub fn http_with_headers(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(body).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .map_err(|e| format!("read {addr}{path}: {e}"))?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no header end in response from {addr}{path}"))?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {head:?}"))?;
    Ok((status, buf[split + 4..].to_vec()))
}

/// Percent-encodes a query parameter value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET returning (status, body as text).
pub fn get(addr: &str, path: &str) -> Result<(u16, String), String> {
    http("GET", addr, path, None, b"").map(|(s, b)| (s, String::from_utf8_lossy(&b).to_string()))
}

/// One sample line of a Prometheus text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct TextSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the sample lines of a Prometheus text exposition (comments skipped).
pub fn parse_text(text: &str) -> Vec<TextSample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, rest) = match line.find('{') {
            Some(_) => {
                let close = match line.rfind('}') {
                    Some(c) => c,
                    None => continue,
                };
                (&line[..close + 1], line[close + 1..].trim())
            }
            None => match line.split_once(' ') {
                Some((n, r)) => (n, r.trim()),
                None => continue,
            },
        };
        let value = rest.split_whitespace().next().unwrap_or("");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => match v.parse() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        let (name, labels) = match series.find('{') {
            Some(i) => (&series[..i], parse_labels(&series[i + 1..series.len() - 1])),
            None => (series, BTreeMap::new()),
        };
        out.push(TextSample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let Some(eq) = s[i..].find('=') else { break };
        let name = s[i..i + eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_string();
        i += eq + 1;
        if i >= b.len() || b[i] != b'"' {
            break;
        }
        i += 1;
        let mut v = String::new();
        while i < b.len() && b[i] != b'"' {
            if b[i] == b'\\' && i + 1 < b.len() {
                i += 1;
                v.push(match b[i] {
                    b'n' => '\n',
                    c => c as char,
                });
            } else {
                // multi-byte UTF-8: copy the whole char
                let ch = s[i..].chars().next().unwrap_or('?');
                v.push(ch);
                i += ch.len_utf8() - 1;
            }
            i += 1;
        }
        i += 1;
        out.insert(name, v);
    }
    out
}

/// The samples of `name` whose labels include all of `want`.
pub fn find<'a>(
    samples: &'a [TextSample],
    name: &str,
    want: &[(&str, &str)],
) -> Vec<&'a TextSample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_exposition() {
        let t = "# HELP x y\nx_total{a=\"1\",b=\"q\\\"é\"} 3.5\nup 1\nz{} NaN\n";
        let s = parse_text(t);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].labels["b"], "q\"é");
        assert_eq!(s[0].value, 3.5);
        assert_eq!(s[1].name, "up");
        assert!(s[2].value.is_nan());
        assert_eq!(find(&s, "x_total", &[("a", "1")]).len(), 1);
    }
}
