//! Closing the loop: autoscale and restart actions triggered by alerts and
//! metrics, carried out by executors (signed webhooks, the Docker/Podman
//! Engine API, Kubernetes), remembered in a persistent audit log.
//!
//! - [`hpa`]: the Kubernetes HPA algorithm (pure, clock passed in).
//! - [`restart`]: cooldowns, crash-looping, global rate limit.
//! - [`audit`]: the persistent audit log and state.
//! - [`alertmanager`]: Alertmanager webhook payloads as triggers.
//! - [`webhook`]: Standard Webhooks signing and delivery with retries.

pub mod alertmanager;
pub mod audit;
pub mod hpa;
pub mod restart;
pub mod webhook;
