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
pub struct LogEntry {
    /// Stream labels (`stream`, container identity); the shipper adds `node`.
    pub stream: vigil_common::Labels,
    pub source: SourceKey,
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
// - `ShipHandle::submit_scrape(Scrape)` never blocks (scraping must not wait);
// - `ShipHandle::log_sender() -> tokio::sync::mpsc::Sender<Vec<LogEntry>>` is
//   bounded: the tailer waits for room (backpressure on logs only);
// - `ShipHandle::take_log_acks() -> tokio::sync::mpsc::UnboundedReceiver<Vec<LogAck>>`
//   delivers the positions the collector has durably stored.
