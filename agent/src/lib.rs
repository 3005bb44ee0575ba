//! # vigil-agent
//!
//! One agent per node. It reads the node's metrics and ships them to
//! `vigil-collector` over the `vigil.v1` gRPC stream (see
//! `proto/vigil/v1/ingest.proto`), which also carries log records and events.
//!
//! # Layout
//! The tree follows the pipeline, from what is read to what is sent:
//! - [`config`]: settings (YAML file, `VIGIL_*` environment, flags) validated
//!   once into [`config::Config`].
//! - [`model`]: what a scrape produces — metric families, samples, events —
//!   and their Prometheus text encoding.
//! - [`node`]: node-level metrics from `/proc` and `/sys` under `--host-root`
//!   (node_exporter's names).
//! - [`cgroup`]: container metrics from cgroups v1/v2 (cAdvisor's names),
//!   OOM kills from the kernel log.
//! - [`procs`]: process metrics with bounded cardinality.
//! - [`logs`]: container log discovery, parsing, tailing and checkpoints.
//! - [`scrape`]: one scrape of every reader; state kept between scrapes.
//! - [`targets`]: application scraping — this node's workloads discovered
//!   (containers, pods, static and file_sd targets) and scraped with
//!   Prometheus's semantics; `/api/v1/targets`.
//! - [`probes`]: health probes that Docker/Podman containers declare by
//!   labels (HTTP, TCP, command; Kubernetes's semantics), results shipped as
//!   series and events.
//! - [`ship`]: batching, the on-disk buffer in `--state-dir`, and the gRPC
//!   stream with sequence numbers, acks and retransmission.
//! - [`http`]: the agent's own `/metrics`, `/-/healthy`, `/-/ready`.
//! - [`telemetry`]: the agent's self-metrics (`vigil_agent_*`).
//! - [`run`]: wires the above together for the `run` command; nothing
//!   imports it.
//!
//! Shared with the collector (`vigil_common`): time and RFC 3339, crash-safe
//! state files, the framed-record format of the disk buffer, durations,
//! label sets.

pub mod cgroup;
pub mod config;
pub mod http;
pub mod logs;
pub mod model;
pub mod node;
pub mod probes;
pub mod procs;
pub mod run;
pub mod scrape;
pub mod ship;
pub mod targets;
pub mod telemetry;

/// The agent's version, reported in `Hello` and in `vigil_agent_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
