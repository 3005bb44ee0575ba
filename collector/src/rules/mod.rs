//! Alerting and recording rules in Prometheus' format.
//!
//! - [`file`]: rule files, parsed and validated like `promtool check rules`.
//! - [`template`]: Go templates in alert labels and annotations.
//! - [`alerting`]: the alert state machine.
//! - [`group`]: a group's evaluation (rules in order, one timestamp).

pub mod alerting;
pub mod file;
pub mod gofmt;
pub mod group;
pub mod template;
