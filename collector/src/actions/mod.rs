//! Closing the loop: autoscale and restart actions triggered by alerts and
//! metrics, carried out by executors (signed webhooks, the Docker/Podman
//! Engine API, Kubernetes), remembered in a persistent audit log.
//!
//! - [`engine`]: decides (restart rules, autoscalers), runs and audits actions.
//! - [`executor`]: [`executor::Action`], [`executor::Outcome`], the
//!   [`executor::Executor`] trait; [`webhook`], [`docker`] and [`kubernetes`]
//!   implement it.
//! - [`triggers`]: alerts and agent events that may start a restart.
//! - [`source`]: the autoscalers' metric queries.
//! - [`hpa`]: the Kubernetes HPA algorithm (pure, clock passed in).
//! - [`restart`]: cooldowns, crash-looping, global rate limit.
//! - [`rollout`]: releases as data — a workload's image changes, tracked.
//! - [`analysis`]: a rollout's new version against the old (rollback rules).
//! - [`audit`]: the persistent audit log and state.
//! - [`alertmanager`]: Alertmanager webhook payloads as triggers.
//! - [`webhook`]: Standard Webhooks signing and delivery with retries.

pub mod alertmanager;
pub mod analysis;
pub mod audit;
pub mod config;
pub mod docker;
pub mod engine;
pub mod executor;
pub mod hpa;
pub mod kubernetes;
pub mod restart;
pub mod rollout;
pub mod source;
pub mod triggers;
pub mod webhook;

#[cfg(test)]
mod tests;

/// `s` as one URL path segment: everything but `A-Z a-z 0-9 - _ . ~`
/// percent-escaped (names from alert labels go into API paths through it).
pub fn path_segment(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// A fresh random id (a v4 UUID as 32 hex digits) for actions and deliveries.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A short random suffix for names of things vigil creates.
pub fn audit_id_suffix() -> String {
    let mut id = new_id();
    id.truncate(8);
    id
}
