//! # vigil-collector
//!
//! Receives what agents ship, makes it durable, stores it, and serves it the
//! way Prometheus does; evaluates rules, notifies Alertmanager and acts.
//!
//! # Layout
//! The tree follows the data, from the wire to the user:
//! - [`config`]: settings (YAML, `VIGIL_*`, flags) validated into [`config::Config`].
//! - [`ingest`]: the `vigil.v1` gRPC service — authentication, per-stream
//!   interning, deduplication by sequence, ack after durability.
//! - [`otlp`], [`push`]: pushes — OpenTelemetry (OTLP) metrics and logs,
//!   Loki push — translated and made durable like agent batches.
//! - [`wal`]: the write-ahead log in `--data-dir`, replayed at start.
//! - [`forward`]: the WAL tailed per endpoint and sent on — remote write,
//!   Loki push, OTLP — each with a persisted cursor.
//! - [`store`]: series and samples in memory, as the queries need them.
//! - [`space`]: the write guard — free disk space, and refusing new data
//!   while the disk is full.
//! - [`net`]: accepting connections on both listeners, within limits.
//! - [`http`]: `/metrics`, health, and the Prometheus HTTP API.
//! - [`rules`]: alerting and recording rules (Prometheus' format), the
//!   alert state machine, `check rules` / `test rules`.
//! - [`notify`]: sending alerts to Alertmanager.
//! - [`telemetry`]: the collector's self-metrics (`vigil_collector_*`);
//!   [`selfscrape`] writes them into the store for rules.
//! - [`run`]: wires the above together for the `run` command.

pub mod actions;
pub mod config;
pub mod forward;
pub mod http;
pub mod ingest;
pub mod logs;
pub mod metadata;
pub mod net;
pub mod notify;
pub mod otlp;
pub mod promql;
pub mod push;
pub mod rules;
pub mod run;
pub mod selfscrape;
pub mod space;
pub mod store;
pub mod telemetry;
pub mod wal;

/// The collector's version, reported in `Welcome` and buildinfo.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
