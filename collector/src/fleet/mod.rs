//! Collectors as a fleet: several gateway collectors behind one address,
//! exactly one of which evaluates rules and acts, all of which forward to a
//! distributed engine and may query it.
//!
//! - [`leader`]: who acts ([`leader::Leadership`]) — always, never, a
//!   Kubernetes Lease or a lock file — and the wrappers that gate actions.
//! - [`lease`]: client-go's lease election as pure decisions, clock passed in.
//! - [`kube_lease`]: the `coordination.k8s.io/v1` Lease over HTTP.
//! - [`remote_query`]: gateway mode's queries to a Prometheus-compatible API.
//!
//! The agents' side (several collectors, failover and failback) is in the
//! agent's `ship` module; the delivery promise across collectors is stated
//! in `proto/vigil/v1/ingest.proto` and docs/fleet.md.

pub mod kube_lease;
pub mod leader;
pub mod lease;
pub mod remote_query;
