//! Shipping: batches, the on-disk buffer in `--state-dir`, and the gRPC stream.
