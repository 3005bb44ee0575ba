//! Shipping: batches, the on-disk buffer in `--state-dir`, and the gRPC stream
//! to the collector (sequence numbers, cumulative acks, retransmission).
//!
//! Producers hand their output to a [`ShipHandle`]: metric scrapes (never
//! blocking: scraping must not wait on the network) and log entries (which may
//! wait for room: the log file itself is the buffer). Once the collector has
//! acknowledged durable storage of a batch, the shipper reports the log
//! positions it held as [`LogAck`]s, so the tailer may advance its checkpoints.

/// Identity of a log file: a rotated or reused file is a different source.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    pub path: String,
    pub device: u64,
    pub inode: u64,
    /// Hash of the file's first bytes (see the tailer for how many).
    pub fingerprint: u64,
}

/// One log record as the tailer hands it over.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    /// Stream labels (`stream`, container identity); the shipper adds `node`.
    /// Shared by every record of the stream (no copy per line).
    pub stream: Arc<vigil_common::Labels>,
    pub source: Arc<SourceKey>,
    /// Byte range of the record in the source, `[offset, end_offset)`.
    pub offset: u64,
    pub end_offset: u64,
    pub timestamp_ns: i64,
    pub line: String,
}

/// "Everything of `source` before `end_offset` is durably stored by the collector."
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogAck {
    pub source: SourceKey,
    pub end_offset: u64,
}

// The shipper's producer interface (implemented in this module):
// - `ShipHandle::submit_scrape(Scrape)` and `submit_target(TargetScrape)` never
//   block (scraping must not wait);
// - `ShipHandle::log_sender() -> tokio::sync::mpsc::Sender<Vec<LogRecord>>` is
//   bounded: the tailer waits for room (backpressure on logs only);
// - `ShipHandle::take_log_acks() -> tokio::sync::mpsc::UnboundedReceiver<Vec<LogAck>>`
//   delivers the positions the collector has durably stored.

pub mod batch;
pub mod buffer;
pub mod client;
pub mod table;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::model::{Scrape, TargetScrape};
use crate::telemetry::Telemetry;

/// How many scrapes may wait for the batcher before new ones are dropped
/// (and counted): scraping never waits for shipping.
const SCRAPE_QUEUE: usize = 16;
/// Application target scrapes waiting for the batcher (one per target per
/// interval: room for a burst of every target of a large node at once).
const TARGET_QUEUE: usize = 1024;
/// Batches of log entries (each up to 1 MiB of lines) waiting for the batcher.
const LOG_QUEUE: usize = 4;

/// What producers use.
#[derive(Clone)]
pub struct ShipHandle {
    scrapes: mpsc::Sender<Arc<Scrape>>,
    targets: mpsc::Sender<TargetScrape>,
    logs: mpsc::Sender<Vec<LogRecord>>,
    log_acks: Arc<Mutex<Option<mpsc::UnboundedReceiver<Vec<LogAck>>>>>,
    telemetry: Arc<Telemetry>,
}

impl ShipHandle {
    /// Hands a scrape over without waiting; if the shipper is behind, the
    /// scrape is dropped and counted.
    pub fn submit_scrape(&self, s: impl Into<Arc<Scrape>>) {
        let s = s.into();
        let n = s.sample_count() as u64;
        if self.scrapes.try_send(s).is_err() {
            self.telemetry
                .dropped_scrapes
                .fetch_add(1, Ordering::Relaxed);
            self.telemetry
                .dropped_samples
                .fetch_add(n, Ordering::Relaxed);
            tracing::warn!(samples = n, "shipper is behind: scrape dropped");
        }
    }

    /// Hands an application target's scrape over without waiting; if the
    /// shipper is behind, it is dropped and counted like a node scrape.
    pub fn submit_target(&self, s: TargetScrape) {
        let n = s.samples.len() as u64;
        if self.targets.try_send(s).is_err() {
            self.telemetry
                .dropped_scrapes
                .fetch_add(1, Ordering::Relaxed);
            self.telemetry
                .dropped_samples
                .fetch_add(n, Ordering::Relaxed);
            tracing::warn!(samples = n, "shipper is behind: target scrape dropped");
        }
    }

    /// The bounded channel for log entries (the tailer waits for room).
    pub fn log_sender(&self) -> mpsc::Sender<Vec<LogRecord>> {
        self.logs.clone()
    }

    /// Positions the collector has durably stored (once; later calls get None).
    pub fn take_log_acks(&self) -> Option<mpsc::UnboundedReceiver<Vec<LogAck>>> {
        self.log_acks.lock().take()
    }
}

/// The agent id in `<state_dir>/agent-id`, created once.
pub fn agent_id(state_dir: &std::path::Path) -> anyhow::Result<String> {
    let p = state_dir.join("agent-id");
    match std::fs::read_to_string(&p) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot read {}: {e}", p.display()),
    }
    let id = uuid::Uuid::new_v4().to_string();
    // through the crash-safe helper: an id lost to a power cut would make
    // the collector take the buffered batches a second time
    vigil_common::fs::write_atomic(&p, id.as_bytes())?;
    Ok(id)
}

/// Starts the batcher and the client; returns the producers' handle and a
/// task that ends once shipping has stopped (after `shutdown`, when
/// everything is acknowledged or `shutdown_timeout` passed).
pub fn start(
    config: &Config,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) -> anyhow::Result<(ShipHandle, tokio::task::JoinHandle<()>)> {
    std::fs::create_dir_all(&config.state_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create state dir {}: {e}",
            config.state_dir.display()
        )
    })?;
    let id = agent_id(&config.state_dir)?;
    let buffer_dir = config.state_dir.join("buffer");
    let mut buffer = buffer::Buffer::open(&buffer_dir, config.buffer_max_bytes)?;
    if buffer.corrupt > 0 {
        telemetry
            .buffer_corrupt_records
            .fetch_add(buffer.corrupt, Ordering::Relaxed);
    }
    // the series table outlives the process: after a restart the collector
    // still holds its definitions (the table starts over only for churn)
    let (table, opened) = table::SeriesTable::open(&buffer_dir, &config.node_name, true)?;
    if opened.torn {
        telemetry
            .buffer_corrupt_records
            .fetch_add(1, Ordering::Relaxed);
    }
    let lost = buffer.drop_beyond(table.len())?;
    if lost.batches > 0 {
        telemetry
            .dropped_batches
            .fetch_add(lost.batches, Ordering::Relaxed);
        telemetry
            .dropped_samples
            .fetch_add(lost.samples, Ordering::Relaxed);
        telemetry
            .dropped_log_records
            .fetch_add(lost.logs, Ordering::Relaxed);
    }
    telemetry
        .series_table_refs
        .store(u64::from(table.len()), Ordering::Relaxed);
    tracing::info!(agent_id = %id, buffered = buffer.len(), next_seq = buffer.next_seq(),
        series_refs = table.len(), "disk buffer opened");
    let table = Arc::new(Mutex::new(table));
    telemetry
        .buffer_max_bytes
        .store(config.buffer_max_bytes, Ordering::Relaxed);
    let buffer = Arc::new(Mutex::new(buffer));
    let sealed = Arc::new(Notify::new());
    let (scrape_tx, mut scrape_rx) = mpsc::channel::<Arc<Scrape>>(SCRAPE_QUEUE);
    let (target_tx, mut target_rx) = mpsc::channel::<TargetScrape>(TARGET_QUEUE);
    // the tailer's batches are up to 1 MiB of lines: a short queue keeps the
    // pipeline busy without holding a backlog in memory (it stays in the files)
    let (log_tx, mut log_rx) = mpsc::channel::<Vec<LogRecord>>(LOG_QUEUE);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let metadata = Arc::new(Mutex::new(HashMap::new()));

    let client = client::Client {
        config: config.clone(),
        agent_id: id,
        buffer: buffer.clone(),
        telemetry: telemetry.clone(),
        sealed: sealed.clone(),
        log_acks: ack_tx,
        metadata: metadata.clone(),
        table: table.clone(),
    };
    let drain = CancellationToken::new();
    let client_task = tokio::spawn(client.run(drain.clone()));

    let cfg = config.clone();
    let tel = telemetry.clone();
    let task = tokio::spawn(async move {
        let mut builder = batch::Builder::new(table.clone());
        let max = cfg.batch_max_bytes as usize;
        let mut first_item: Option<tokio::time::Instant> = None;
        // a new batch starts: the moment a churned table may start over
        // (nothing in the builder uses it, and nothing in the buffer if empty)
        let starting = |builder: &batch::Builder| {
            if !builder.is_empty() {
                return;
            }
            let empty = buffer.lock().is_empty();
            let mut t = table.lock();
            if let Err(e) = t.maybe_rotate(empty) {
                tracing::error!(error = %e, "series table: cannot start a new table");
            }
            tel.series_table_refs
                .store(u64::from(t.len()), Ordering::Relaxed);
        };
        let seal = |builder: &mut batch::Builder| {
            if builder.is_empty() {
                return;
            }
            let mut buf = buffer.lock();
            let seq = buf.next_seq();
            let now = vigil_common::time::now_ms();
            let b = builder.seal(seq, now);
            // the definitions first: a buffered batch never uses a ref the
            // table file lacks
            let persisted = {
                let mut t = table.lock();
                tel.series_table_refs
                    .store(u64::from(t.len()), Ordering::Relaxed);
                t.persist()
            };
            if let Err(e) = persisted {
                let (samples, logs, _) = buffer::summarize(&b);
                tel.dropped_batches.fetch_add(1, Ordering::Relaxed);
                tel.dropped_samples.fetch_add(samples, Ordering::Relaxed);
                tel.dropped_log_records.fetch_add(logs, Ordering::Relaxed);
                tracing::error!(error = %e, "cannot write the series table; batch dropped");
                return;
            }
            {
                let mut md = metadata.lock();
                for m in &b.metadata {
                    md.insert(m.family.clone(), m.clone());
                }
            }
            match buf.append(&b) {
                Ok(d) => {
                    tel.batches_sealed.fetch_add(1, Ordering::Relaxed);
                    tel.buffer_disk_full
                        .fetch_add(d.disk_full, Ordering::Relaxed);
                    if d.batches > 0 {
                        tel.dropped_batches.fetch_add(d.batches, Ordering::Relaxed);
                        tel.dropped_samples.fetch_add(d.samples, Ordering::Relaxed);
                        tel.dropped_log_records.fetch_add(d.logs, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    let (samples, logs, _) = buffer::summarize(&b);
                    tel.dropped_batches.fetch_add(1, Ordering::Relaxed);
                    tel.dropped_samples.fetch_add(samples, Ordering::Relaxed);
                    tel.dropped_log_records.fetch_add(logs, Ordering::Relaxed);
                    tracing::error!(error = %e, "cannot write the disk buffer; batch dropped");
                }
            }
            tel.buffer_bytes.store(buf.bytes(), Ordering::Relaxed);
            tel.buffer_batches
                .store(buf.len() as u64, Ordering::Relaxed);
            drop(buf);
            sealed.notify_one();
        };
        loop {
            let deadline = first_item.map(|t| t + cfg.batch_max_wait);
            tokio::select! {
                s = scrape_rx.recv() => match s {
                    Some(s) => {
                        let mut from = 0;
                        while from < s.families.len() {
                            starting(&builder);
                            first_item.get_or_insert_with(tokio::time::Instant::now);
                            from = builder.add_scrape(&s, from, max);
                            if builder.bytes() >= max {
                                seal(&mut builder);
                                first_item = None;
                            }
                        }
                        if !s.events.is_empty() {
                            // events (OOM kills) trigger actions: sealed at once
                            starting(&builder);
                            builder.add_events(&s.events);
                            seal(&mut builder);
                            first_item = None;
                        }
                    }
                    None => break,
                },
                t = target_rx.recv() => if let Some(t) = t {
                    let mut from = 0;
                    loop {
                        starting(&builder);
                        first_item.get_or_insert_with(tokio::time::Instant::now);
                        from = builder.add_target(&t, from, max);
                        if builder.bytes() >= max {
                            seal(&mut builder);
                            first_item = None;
                        }
                        if from >= t.samples.len() {
                            break;
                        }
                    }
                },
                l = log_rx.recv() => if let Some(entries) = l {
                    for e in entries {
                        starting(&builder);
                        first_item.get_or_insert_with(tokio::time::Instant::now);
                        builder.add_log(e);
                        if builder.bytes() >= max {
                            seal(&mut builder);
                            first_item = None;
                        }
                    }
                },
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    seal(&mut builder);
                    first_item = None;
                }
                _ = shutdown.cancelled() => break,
            }
        }
        // final: take what is still queued, seal, and let the client drain
        while let Ok(s) = scrape_rx.try_recv() {
            let mut from = 0;
            while from < s.families.len() {
                from = builder.add_scrape(&s, from, max);
                if builder.bytes() >= max {
                    seal(&mut builder);
                }
            }
            builder.add_events(&s.events);
        }
        while let Ok(t) = target_rx.try_recv() {
            let mut from = 0;
            loop {
                from = builder.add_target(&t, from, max);
                if builder.bytes() >= max {
                    seal(&mut builder);
                }
                if from >= t.samples.len() {
                    break;
                }
            }
        }
        while let Ok(entries) = log_rx.try_recv() {
            for e in entries {
                builder.add_log(e);
            }
        }
        seal(&mut builder);
        drain.cancel();
        let abort = client_task.abort_handle();
        if tokio::time::timeout(cfg.shutdown_timeout, client_task)
            .await
            .is_err()
        {
            abort.abort();
            let left = buffer.lock().len();
            tracing::warn!(
                unacknowledged = left,
                "shutdown timeout: unacknowledged batches stay in the disk buffer for the next start"
            );
        } else {
            tracing::info!("all batches acknowledged");
        }
    });
    Ok((
        ShipHandle {
            scrapes: scrape_tx,
            targets: target_tx,
            logs: log_tx,
            log_acks: Arc::new(Mutex::new(Some(ack_rx))),
            telemetry,
        },
        task,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent id goes through the crash-safe helper: created once, whole,
    /// kept across starts, and a temporary left by a crash mid-write is
    /// never taken for it.
    #[test]
    fn the_agent_id_is_written_crash_safely_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let id = agent_id(d.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("agent-id")).unwrap(),
            id
        );
        std::fs::write(d.path().join(".agent-id.tmp"), "half-writ").unwrap();
        assert_eq!(agent_id(d.path()).unwrap(), id);
        // an empty file (a crash on a file system without the helper's
        // fsyncs) is replaced by a fresh id
        std::fs::write(d.path().join("agent-id"), "").unwrap();
        let again = agent_id(d.path()).unwrap();
        assert!(!again.is_empty() && again != id);
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("agent-id"))
            .collect();
        assert_eq!(names, vec!["agent-id".to_string()]);
    }
}
