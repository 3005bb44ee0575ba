//! The durable path of pushes (OTLP, Loki push): a push is answered 2xx only
//! once what it carries is in the write-ahead log, fsync'd — exactly as
//! remote write and agent batches — so a `kill -9` after the answer loses
//! nothing. Samples go through [`IngestCore::write_external`]; log lines
//! through one writer task described below.
//!
//! # Pushed log lines: ordering and exactly-once
//! The log store drops repeats by a watermark per (source, stream): a record
//! whose position is not above the highest one stored for its source and
//! stream is a repeat (that is how agent retransmissions and WAL replay are
//! made harmless). Pushed lines have no file and no position, so the writer
//! gives them one:
//!
//! - the source is this collector process's push source, an id drawn at
//!   random at start (so a restart never reuses positions: its lines are a
//!   new source, and the old source's lines, replayed from the WAL, still
//!   meet their own watermarks);
//! - the position is a counter the writer task advances line by line.
//!
//! The writer is a single task that takes whatever pushes are waiting,
//! numbers their lines, writes them as one WAL record (one fsync for all of
//! them), applies them to the log store, and answers each push. Because
//! one task numbers, writes and applies, positions rise in WAL order and in
//! store order for every stream — the property the watermark needs; two
//! concurrent tasks could apply a later position first and make the earlier
//! one look like a repeat. A push cancelled by its client after it was
//! queued is still written (the answer is dropped), so no position is
//! skipped out of order and nothing half-done is left.
//!
//! What this does not give: a client that retries a push whose 2xx it
//! never saw sends new lines as far as the store can tell, and they are
//! stored again (at-least-once from the client's side, as with Loki; Loki
//! also drops a line identical to the stream's previous one, which this
//! store does not).
//!
//! The watermarks of old push sources stay while their streams hold data:
//! one entry per stream per collector start.

use std::collections::HashMap;
use std::sync::Arc;

use vigil_common::Labels;
use vigil_proto::v1 as pb;

use super::IngestedLog;
use super::core::{ExternalOutcome, IngestCore};
use crate::push::{Protocol, PushLimits, PushMetrics};
use crate::wal::{Append, SeriesUse, WalLog, WalRecord};

/// A log line from a push, before it has a position.
#[derive(Clone, Debug, PartialEq)]
pub struct PushedLog {
    pub stream: Labels,
    pub timestamp_ns: i64,
    pub line: String,
}

/// Why a push could not be made durable; the sender should retry.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PushError {
    #[error("cannot make the push durable: {0}")]
    Unavailable(String),
}

/// The `source_path` pushed lines carry in the WAL.
const PUSH_SOURCE_PATH: &str = "push";
/// Most lines the writer puts in one WAL record.
const MAX_LINES_PER_RECORD: usize = 100_000;
/// Pushes that may wait for the writer.
const QUEUE: usize = 1024;

struct LogJob {
    logs: Vec<PushedLog>,
    done: tokio::sync::oneshot::Sender<Result<(), PushError>>,
}

/// The push receivers' way into the WAL and the stores.
pub struct PushIngest {
    core: Arc<IngestCore>,
    pub limits: PushLimits,
    pub metrics: Arc<PushMetrics>,
    logs: tokio::sync::mpsc::Sender<LogJob>,
}

impl PushIngest {
    /// Starts the log writer task (call inside a tokio runtime).
    pub fn start(
        core: Arc<IngestCore>,
        limits: PushLimits,
        metrics: Arc<PushMetrics>,
    ) -> Arc<PushIngest> {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let source =
            xxhash_rust::xxh3::xxh3_64(format!("vigil-push-{}", uuid::Uuid::new_v4()).as_bytes());
        let writer = LogWriter {
            core: core.clone(),
            source,
            next: 0,
        };
        tokio::spawn(writer.run(rx));
        Arc::new(PushIngest {
            core,
            limits,
            metrics,
            logs: tx,
        })
    }

    /// Refuses (retryable) while the disk is full (see [`crate::space`]).
    fn admit(&self, protocol: Protocol) -> Result<(), PushError> {
        let source = match protocol {
            Protocol::Loki => crate::space::Source::LokiPush,
            Protocol::OtlpGrpc | Protocol::OtlpHttp => crate::space::Source::Otlp,
        };
        match self.core.space.refuse(source) {
            Some(full) => Err(PushError::Unavailable(full.to_string())),
            None => Ok(()),
        }
    }

    /// Makes samples (and their families' metadata) durable, then stores
    /// them.
    pub async fn write_samples(
        &self,
        protocol: Protocol,
        series: Vec<(Labels, Vec<(i64, f64)>)>,
        metadata: Vec<pb::MetricMetadata>,
    ) -> Result<ExternalOutcome, PushError> {
        self.admit(protocol)?;
        let n: u64 = series.iter().map(|(_, s)| s.len() as u64).sum();
        let out = self
            .core
            .write_external(series, metadata, "otlp")
            .await
            .map_err(|e| PushError::Unavailable(e.to_string()))?;
        self.metrics.samples(protocol, n);
        // new series refused under memory pressure: the sender retries
        // (what was stored is a no-op the second time)
        if out.refused.iter().any(|(r, _)| *r == "memory_pressure") {
            return Err(PushError::Unavailable(
                out.first_error.unwrap_or_else(|| "memory pressure".into()),
            ));
        }
        Ok(out)
    }

    /// Makes log lines durable, then stores them.
    pub async fn write_logs(
        &self,
        protocol: Protocol,
        logs: Vec<PushedLog>,
    ) -> Result<(), PushError> {
        self.admit(protocol)?;
        let n = logs.len() as u64;
        let (done, wait) = tokio::sync::oneshot::channel();
        self.logs
            .send(LogJob { logs, done })
            .await
            .map_err(|_| PushError::Unavailable("the log writer has stopped".into()))?;
        wait.await
            .map_err(|_| PushError::Unavailable("the log writer has stopped".into()))??;
        self.metrics.log_records(protocol, n);
        Ok(())
    }
}

/// The one task that numbers, writes and applies pushed lines.
struct LogWriter {
    core: Arc<IngestCore>,
    source: u64,
    next: u64,
}

impl LogWriter {
    async fn run(mut self, mut rx: tokio::sync::mpsc::Receiver<LogJob>) {
        while let Some(first) = rx.recv().await {
            let mut lines = first.logs.len();
            let mut jobs = vec![first];
            while lines < MAX_LINES_PER_RECORD {
                match rx.try_recv() {
                    Ok(j) => {
                        lines += j.logs.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            let result = self.write(&jobs).await;
            for j in jobs {
                let _ = j.done.send(result.clone());
            }
        }
    }

    async fn write(&mut self, jobs: &[LogJob]) -> Result<(), PushError> {
        let mut uses: HashMap<u64, SeriesUse> = HashMap::new();
        let mut wal_logs = Vec::new();
        let mut applied = Vec::new();
        for l in jobs.iter().flat_map(|j| &j.logs) {
            let stream_id = l.stream.stable_hash();
            uses.entry(stream_id).or_insert_with(|| SeriesUse {
                id: stream_id,
                labels: Arc::new(l.stream.clone()),
            });
            let offset = self.next;
            self.next += 1;
            wal_logs.push(WalLog {
                stream_id,
                source_id: self.source,
                source_path: PUSH_SOURCE_PATH.into(),
                offset,
                end_offset: offset + 1,
                timestamp_ns: l.timestamp_ns,
                line: l.line.clone(),
            });
            applied.push(IngestedLog {
                stream: l.stream.clone(),
                source_id: self.source,
                source_path: PUSH_SOURCE_PATH.into(),
                offset,
                end_offset: offset + 1,
                timestamp_ns: l.timestamp_ns,
                line: l.line.clone(),
            });
        }
        let gate = self.core.gate.read().await;
        self.core
            .append_wal(Append {
                record: WalRecord {
                    agent_id: String::new(),
                    seq: 0,
                    series: Vec::new(),
                    blocks: Vec::new(),
                    logs: wal_logs,
                    events: Vec::new(),
                    metadata: Vec::new(),
                    tenant: String::new(),
                    cut: false,
                },
                uses: uses.into_values().collect(),
            })
            .await
            .map_err(|e| PushError::Unavailable(e.to_string()))?;
        if let Some(sink) = &self.core.logs {
            sink.append(&applied);
        }
        drop(gate);
        Ok(())
    }
}
