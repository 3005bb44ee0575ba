//! # vigil-collector
//!
//! Receives what agents ship, makes it durable, stores it, and serves it the
//! way Prometheus does; evaluates rules, notifies Alertmanager and acts.
//!
//! # Layout
//! The tree follows the data, from the wire to the user:
//! - [`config`]: settings (YAML, `VIGIL_*`, flags) validated into [`config::Config`].
//! - [`ingest`]: the `vigil.v1` gRPC service — authentication, per-stream
//!   interning, deduplication by sequence, ack after durability — and the
//!   checkpoints that bound WAL replay.
//! - [`otlp`], [`push`]: pushes — OpenTelemetry (OTLP) metrics and logs,
//!   Loki push — translated and made durable like agent batches.
//! - [`wal`]: the write-ahead log in `--data-dir`, replayed at start.
//! - [`forward`]: the WAL tailed per endpoint and sent on — remote write,
//!   Loki push, OTLP — each with a persisted cursor.
//! - [`store`]: series and samples in memory (Gorilla head chunks, pco
//!   blocks), as the queries need them; [`metadata`]: `# HELP`/`# TYPE`;
//!   [`memory`]: the memory limit and the guard that refuses new series
//!   under memory pressure.
//! - [`logs`]: the log store (zstd chunks in segment files) and LogQL.
//! - [`promql`]: the PromQL engine over the store.
//! - [`space`]: the write guard — free disk space, and refusing new data
//!   while the disk is full.
//! - [`net`]: accepting connections on both listeners, within limits.
//! - [`http`]: `/metrics`, `/federate`, health, the Prometheus and Loki HTTP
//!   APIs, remote write, pushes, the rules and actions APIs, authentication.
//! - [`ui`]: the web UI at `/` (its files compiled in).
//! - [`rules`]: alerting and recording rules (Prometheus' format), the
//!   alert state machine, templates, `check rules` / `test rules`.
//! - [`notify`]: sending alerts to Alertmanager.
//! - [`actions`]: restart and autoscale actions — triggers, decisions,
//!   executors (webhook, Docker, Kubernetes), the audit log.
//! - [`gofmt`]: Go's text formats, so output matches Prometheus and promtool.
//! - [`tls`]: the process's one rustls crypto provider.
//! - [`incluster`]: Kubernetes in-cluster settings (API server, service
//!   account files, a client trusting the cluster CA).
//! - [`telemetry`]: the collector's self-metrics (`vigil_collector_*`);
//!   [`selfscrape`] writes them into the store for rules.
//! - [`run`]: wires the above together for the `run` command.
//!
//! Shared with the agent (`vigil_common`): time and RFC 3339, crash-safe
//! state files, the framed-record format of the WAL and log segments,
//! durations, label sets.

pub mod actions;
pub mod config;
pub mod fleet;
pub mod forward;
pub mod gofmt;
pub mod http;
pub mod incluster;
pub mod ingest;
pub mod limits;
pub mod logs;
pub mod memory;
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
pub mod tls;
pub mod ui;
pub mod wal;

/// The collector's version, reported in `Welcome` and buildinfo.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
