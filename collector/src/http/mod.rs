//! The HTTP side: `/metrics`, health, and the Prometheus HTTP API.
