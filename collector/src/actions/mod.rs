//! Closing the loop: autoscale and restart actions triggered by alerts and
//! metrics, carried out by executors (signed webhooks, the Docker/Podman
//! Engine API, Kubernetes), remembered in a persistent audit log.
//!
//! - [`hpa`]: the Kubernetes HPA algorithm (pure, clock passed in).
//! - [`webhook`]: Standard Webhooks signing and delivery with retries.

pub mod hpa;
pub mod webhook;
