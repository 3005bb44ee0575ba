//! The process's one rustls crypto provider (ring). reqwest is built without
//! a provider and tonic's TLS uses ring too, so every outgoing client
//! (Alertmanager, webhooks, Kubernetes, the Docker API over TCP) and the gRPC
//! server share it; installing it is the first thing each of them does.
//!
//! Not here: TLS configuration of the servers (`run`).

/// Installs rustls' ring provider as the process default, once.
pub fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
