//! What `vigil-agent` and `vigil-collector` share and nothing else: duration
//! values as users write them (`10s`, `5m`), label sets, Prometheus's relabeling
//! and Go regex syntax, the config-file layer, logging set-up and the shutdown
//! signal. Pipeline code lives in the two binaries' crates.

pub mod config;
pub mod disk;
pub mod duration;
pub mod exposition;
pub mod labels;
pub mod logging;
pub mod re2;
pub mod relabel;
pub mod shutdown;
pub mod size;

pub use duration::Duration;
pub use labels::{Labels, LabelsBuilder};
pub use size::ByteSize;
