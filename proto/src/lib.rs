//! The `vigil.v1` wire contract, generated from `proto/vigil/v1/ingest.proto`.
//!
//! Read that file for the delivery rules (sequence numbers, cumulative acks,
//! per-stream interning); this crate only carries the generated types.
#![allow(missing_docs, clippy::all)]

pub mod v1 {
    tonic::include_proto!("vigil.v1");
}

/// The protocol revision described by `ingest.proto`.
pub const PROTOCOL_REVISION: u32 = 2;
