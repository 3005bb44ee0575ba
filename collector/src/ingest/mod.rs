//! The `vigil.v1` Ingest gRPC service.
