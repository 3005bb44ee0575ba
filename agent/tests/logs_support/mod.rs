//! Shared by the `logs_*` integration tests: a tailer running against a temp
//! host root with a fake shipper that records what it gets and acknowledges
//! it (all of it, or what a policy allows), and numbered CRI lines.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vigil_agent::config::LogsConfig;
use vigil_agent::logs::{LogMetrics, Tailer};
use vigil_agent::ship::{LogAck, LogRecord, SourceKey};

pub fn logs_config(paths: &[&str]) -> LogsConfig {
    LogsConfig {
        paths: paths.iter().map(|s| s.to_string()).collect(),
        excludes: vec![],
        default_paths: false,
        read_from_start: true,
        max_line_bytes: 256 << 10,
        max_open_files: 1024,
    }
}

/// Which received entries the fake shipper acknowledges.
pub type AckPolicy = Arc<dyn Fn(&LogRecord) -> bool + Send + Sync>;

pub fn ack_all() -> AckPolicy {
    Arc::new(|_| true)
}

/// A running tailer and the fake shipper around it.
pub struct Running {
    pub received: Arc<Mutex<Vec<LogRecord>>>,
    /// Distinct `seq=` numbers received so far (kept by the consumer, so
    /// waiting on them costs nothing).
    pub seqs: Arc<Mutex<std::collections::HashSet<u64>>>,
    pub metrics: Arc<LogMetrics>,
    pub shutdown: CancellationToken,
    pub paused: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    consumer: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn start(cfg: &LogsConfig, host_root: &Path, state_dir: &Path, policy: AckPolicy) -> Self {
        let tailer = Tailer::new(cfg, host_root, state_dir).expect("tailer");
        let metrics = tailer.metrics();
        // A small channel, so a paused consumer stops the tailer quickly.
        let (tx, mut rx) = mpsc::channel::<Vec<LogRecord>>(2);
        let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Vec<LogAck>>();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                if let Err(e) = tailer.run(tx, ack_rx, shutdown).await {
                    panic!("tailer failed: {e}");
                }
            }
        });
        let received = Arc::new(Mutex::new(Vec::new()));
        let seqs = Arc::new(Mutex::new(std::collections::HashSet::new()));
        let paused = Arc::new(AtomicBool::new(false));
        let consumer = tokio::spawn({
            let received = received.clone();
            let seqs = seqs.clone();
            let paused = paused.clone();
            async move {
                // Acks must be a prefix per source: stop acking a source at
                // the first entry the policy refuses.
                let mut refused: std::collections::HashSet<SourceKey> = Default::default();
                loop {
                    while paused.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let Some(batch) = rx.recv().await else { break };
                    let mut acks: HashMap<SourceKey, u64> = HashMap::new();
                    for e in &batch {
                        if refused.contains(&*e.source) || !policy(e) {
                            refused.insert((*e.source).clone());
                            continue;
                        }
                        let a = acks.entry((*e.source).clone()).or_default();
                        *a = (*a).max(e.end_offset);
                    }
                    {
                        let mut s = seqs.lock();
                        for e in &batch {
                            if let Some(n) = seq_of(&e.line) {
                                s.insert(n);
                            }
                        }
                    }
                    received.lock().extend(batch);
                    let acks: Vec<LogAck> = acks
                        .into_iter()
                        .map(|(source, end_offset)| LogAck { source, end_offset })
                        .collect();
                    if !acks.is_empty() && ack_tx.send(acks).is_err() {
                        break;
                    }
                }
            }
        });
        Running {
            received,
            seqs,
            metrics,
            shutdown,
            paused,
            task,
            consumer,
        }
    }

    /// Waits until `done(received)` or the deadline; returns whether it held.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&[LogRecord]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if done(&self.received.lock()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        done(&self.received.lock())
    }

    /// Waits until `done(distinct seqs)` or the deadline.
    pub async fn wait_seqs(
        &self,
        timeout: Duration,
        done: impl Fn(&std::collections::HashSet<u64>) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if done(&self.seqs.lock()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        done(&self.seqs.lock())
    }

    /// Graceful stop: the tailer applies the acks it has and saves.
    pub async fn stop(self) -> Vec<LogRecord> {
        self.shutdown.cancel();
        let _ = self.task.await;
        self.consumer.abort();
        let _ = self.consumer.await;
        std::mem::take(&mut *self.received.lock())
    }

    /// Crash: the task is dropped mid-flight (only what it saved survives).
    pub async fn kill(self) -> Vec<LogRecord> {
        self.task.abort();
        let _ = self.task.await;
        self.consumer.abort();
        let _ = self.consumer.await;
        std::mem::take(&mut *self.received.lock())
    }
}

/// The CRI timestamp [`cri_line`] gives `seq` (unique per line).
pub fn ts(seq: u64) -> String {
    let ns = seq * 1000;
    let secs = ns / 1_000_000_000;
    format!(
        "2026-11-22T{:02}:{:02}:{:02}.{:09}Z",
        10 + secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        ns % 1_000_000_000
    )
}

/// A ~200-byte CRI line carrying `seq`.
pub fn cri_line(seq: u64, stream: &str) -> String {
    let mut b = Vec::with_capacity(208);
    push_cri_line(&mut b, seq, stream);
    String::from_utf8(b).expect("ascii")
}

const LINE_LEN: usize = 200;

/// Appends [`cri_line`] to `out` without formatting machinery (the writer
/// threads must reach 20+ MiB/s even in debug builds on a busy machine).
pub fn push_cri_line(out: &mut Vec<u8>, seq: u64, stream: &str) {
    let ns = seq * 1000;
    let secs = ns / 1_000_000_000;
    let start = out.len();
    out.extend_from_slice(b"2026-11-22T00:00:00.000000000Z ");
    let t = &mut out[start..];
    put_digits(&mut t[11..13], 10 + secs / 3600);
    put_digits(&mut t[14..16], (secs / 60) % 60);
    put_digits(&mut t[17..19], secs % 60);
    put_digits(&mut t[20..29], ns % 1_000_000_000);
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(b" F seq=000000000 ");
    let n = out.len();
    put_digits(&mut out[n - 10..n - 1], seq);
    let pad = LINE_LEN - 1 - (out.len() - start);
    let p = pads();
    out.extend_from_slice(&p[(seq % 26) as usize][..pad]);
    out.push(b'\n');
}

fn put_digits(dst: &mut [u8], mut v: u64) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// `pads()[k]` = the letters `a + (k + i) % 26` for i in 0..200.
fn pads() -> &'static [Vec<u8>; 26] {
    static P: std::sync::OnceLock<[Vec<u8>; 26]> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        std::array::from_fn(|k| (0..LINE_LEN).map(|i| b'a' + ((k + i) % 26) as u8).collect())
    })
}

/// Heavy tests (a writer at 20+ MiB/s plus a tailer) run one at a time: the
/// machine has two cores.
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    static M: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    M.lock().await
}

/// The number in a `seq=NNNNNNNNN` message, checking the padding is intact.
pub fn seq_of(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("seq=")?;
    let (n, pad) = rest.split_once(' ')?;
    let seq: u64 = n.parse().ok()?;
    let ok = pad
        .bytes()
        .enumerate()
        .all(|(i, c)| c == b'a' + ((seq as usize + i) % 26) as u8);
    ok.then_some(seq)
}

/// Counts of each sequence number received (panics on a mangled line).
pub fn seq_counts(entries: &[LogRecord]) -> HashMap<u64, usize> {
    let mut m = HashMap::new();
    for e in entries {
        let seq = seq_of(&e.line).unwrap_or_else(|| panic!("mangled line {:?}", e.line));
        *m.entry(seq).or_default() += 1;
    }
    m
}

/// `<root>/var/log/pods/<ns>_<pod>_<uid>/<container>/`, created.
pub fn pod_dir(root: &Path, ns: &str, pod: &str, container: &str) -> PathBuf {
    let d = root
        .join("var/log/pods")
        .join(format!("{ns}_{pod}_0a1b2c3d-0000-4000-8000-000000000001"))
        .join(container);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

/// The glob (a host path) for every pod log under a fake host root.
pub const POD_GLOB: &str = "/var/log/pods/*/*/*.log";
