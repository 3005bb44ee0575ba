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
pub mod config;
pub mod docker;
pub mod engine;
pub mod hpa;
pub mod kubernetes;
pub mod restart;
pub mod webhook;

/// A fresh random id (32 hex digits) for actions and deliveries.
pub fn new_id() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// A short random suffix for names of things vigil creates.
pub fn audit_id_suffix() -> String {
    new_id()[..8].to_string()
}

/// Installs rustls' ring provider as the process default once (reqwest is
/// built without a provider so the whole binary uses exactly one).
pub fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
