//! The `vigil.v1` Ingest gRPC service: authentication, per-stream interning,
//! deduplication by sequence, and acks only after the WAL made a batch durable.
//!
//! What a batch holds goes to the metric [`crate::store::Store`], and its log
//! records and events to the [`LogSink`] and [`EventSink`] the collector was
//! built with (the log store, the actions engine).

use vigil_common::Labels;

pub mod checkpoint;
pub mod core;
pub mod push;
pub mod roster;
pub mod series_cache;
pub mod service;

/// A log record as ingest resolved it (interned refs replaced by values).
#[derive(Clone, Debug, PartialEq)]
pub struct IngestedLog {
    /// Stream labels, including `node`.
    pub stream: Labels,
    /// Stable identity of the source file (hash of path, device, inode and
    /// fingerprint); with `offset` it identifies the record for deduplication.
    pub source_id: u64,
    /// The file's path on the agent's node (for people, not identity).
    pub source_path: String,
    pub offset: u64,
    pub end_offset: u64,
    pub timestamp_ns: i64,
    pub line: String,
}

/// An event as ingest resolved it.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestedEvent {
    pub timestamp_ms: i64,
    pub kind: String,
    /// The subject's labels, including `node`.
    pub subject: Labels,
    pub attributes: Vec<(String, String)>,
}

/// Where log records go. Appending must be idempotent: a record whose
/// `(source_id, offset)` is already held is dropped (and counted by the sink),
/// because WAL replay and agent retransmission both re-deliver records.
pub trait LogSink: Send + Sync {
    /// Appends records; returns how many were new.
    fn append(&self, logs: &[IngestedLog]) -> usize;
    /// Makes everything appended so far durable in the sink's own files; called
    /// before WAL segments that hold these records are deleted.
    fn checkpoint(&self) -> std::io::Result<()>;
}

/// Where events go (e.g. OOM kills, which trigger restart actions).
pub trait EventSink: Send + Sync {
    fn publish(&self, events: &[IngestedEvent]);
}
