//! What `vigil-agent` and `vigil-collector` share and nothing else: time and
//! RFC 3339 ([`time`]), crash-safe state files ([`fs`]), the record framing of
//! the append-only files ([`framed`]), durations and sizes as users write them
//! (`10s`, `5m`, `64MiB`), label sets, Prometheus's relabeling and exposition
//! formats and Go regex syntax, mountinfo, the config-file layer, logging set-up and the
//! shutdown signal. Pipeline code lives in the two binaries' crates.

pub mod alloc;
pub mod config;
pub mod disk;
pub mod duration;
pub mod exposition;
pub mod framed;
pub mod fs;
pub mod labels;
pub mod logging;
pub mod mountinfo;
pub mod re2;
pub mod relabel;
pub mod shutdown;
pub mod size;
pub mod time;

pub use duration::Duration;
pub use labels::{Labels, LabelsBuilder};
pub use size::ByteSize;
