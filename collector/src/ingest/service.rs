//! The gRPC face of ingest: one task per agent stream. It insists on `Hello`
//! first, answers `Welcome` with the agent's durable sequence, then for every
//! batch: drop and ack a duplicate, or resolve → WAL (fsync) → apply → ack.
//! While the disk is full (`crate::space`) a new batch waits, unacknowledged,
//! until space returns.
//! A malformed batch ends that stream with INVALID_ARGUMENT; other streams go on.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status, Streaming};
use vigil_common::time::now_ms;
use vigil_proto::v1 as pb;
use vigil_proto::v1::ingest_server::{Ingest, IngestServer};

use super::core::{IngestCore, StreamRefs};
use crate::telemetry::ReasonLabels;

/// The service.
#[derive(Clone)]
pub struct IngestService {
    core: Arc<IngestCore>,
    max_message_bytes: usize,
}

impl IngestService {
    pub fn new(core: Arc<IngestCore>, max_message_bytes: usize) -> Self {
        IngestService {
            core,
            max_message_bytes,
        }
    }

    /// The tonic server with compression, size limits and, when `token` is
    /// set, bearer-token authentication.
    pub fn into_server(
        self,
        token: Option<String>,
    ) -> tonic::service::interceptor::InterceptedService<
        IngestServer<IngestService>,
        impl tonic::service::Interceptor + Clone,
    > {
        let max = self.max_message_bytes;
        let telemetry = self.core.telemetry.clone();
        let server = IngestServer::new(self)
            .accept_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        tonic::service::interceptor::InterceptedService::new(server, bearer(token, telemetry))
    }
}

/// The interceptor that checks `authorization: Bearer <token>` when a
/// token is configured (every service on the gRPC port uses it).
pub fn bearer(
    token: Option<String>,
    telemetry: Arc<crate::telemetry::Telemetry>,
) -> impl tonic::service::Interceptor + Clone {
    let expected = token.map(|t| format!("Bearer {t}"));
    move |req: Request<()>| {
        let Some(expected) = &expected else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        if ct_eq(given, expected.as_bytes()) {
            Ok(req)
        } else {
            telemetry.auth_failures.inc();
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type ShipStream = Pin<Box<dyn Stream<Item = Result<pb::CollectorMessage, Status>> + Send>>;

fn ack(seq: u64, duplicates: u32) -> pb::CollectorMessage {
    pb::CollectorMessage {
        kind: Some(pb::collector_message::Kind::Ack(pb::Ack {
            seq,
            duplicates,
        })),
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type ShipStream = ShipStream;

    async fn ship(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<ShipStream>, Status> {
        let peer: Option<SocketAddr> = req.remote_addr();
        let mut inbound = req.into_inner();
        let core = self.core.clone();
        let max = self.max_message_bytes as u64;
        core.telemetry.streams.inc();
        let hello = match inbound.message().await? {
            Some(pb::AgentMessage {
                kind: Some(pb::agent_message::Kind::Hello(h)),
            }) => h,
            _ => {
                core.telemetry
                    .invalid_batches
                    .get_or_create(&ReasonLabels {
                        reason: "no_hello".into(),
                    })
                    .inc();
                return Err(Status::invalid_argument(
                    "the first message of a stream must be Hello",
                ));
            }
        };
        if hello.agent_id.is_empty() || hello.agent_id.len() > 256 {
            return Err(Status::invalid_argument(
                "Hello.agent_id must be 1 to 256 bytes",
            ));
        }
        let agent = core.agent(&hello.agent_id);
        let durable = *agent.lock().await;
        // revision 2: the agent's series table as its last stream left it
        let mut refs = if hello.protocol >= 2 {
            core.take_table(&hello.agent_id, hello.series_epoch)
        } else {
            StreamRefs::default()
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::CollectorMessage, Status>>(256);
        let welcome = pb::CollectorMessage {
            kind: Some(pb::collector_message::Kind::Welcome(pb::Welcome {
                durable_seq: durable,
                collector_version: crate::VERSION.into(),
                max_message_bytes: max,
                series_known: u64::from(refs.defined()),
            })),
        };
        let _ = tx.send(Ok(welcome)).await;
        tracing::info!(agent = %hello.agent_id, node = %hello.node_name, version = %hello.agent_version,
            peer = ?peer, durable_seq = durable, protocol = hello.protocol,
            series_known = refs.defined(), "agent connected");
        tokio::spawn(async move {
            core.telemetry.agents_connected.inc();
            core.roster.connected(
                &hello.agent_id,
                &hello.node_name,
                &hello.agent_version,
                peer,
                now_ms(),
            );
            let result =
                stream_loop(&core, &hello, &mut refs, max as usize, &mut inbound, &tx).await;
            if hello.protocol >= 2 {
                core.put_table(&hello.agent_id, refs);
            }
            core.telemetry.agents_connected.dec();
            let error = result.as_ref().err().map(|s| s.message().to_string());
            core.roster
                .disconnected(&hello.agent_id, error.as_deref().unwrap_or(""), now_ms());
            match result {
                Ok(()) => tracing::info!(agent = %hello.agent_id, "agent stream closed"),
                Err(status) => {
                    tracing::warn!(agent = %hello.agent_id, code = ?status.code(), error = %status.message(), "agent stream ended");
                    let _ = tx.send(Err(status)).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn stream_loop(
    core: &Arc<IngestCore>,
    hello: &pb::Hello,
    refs: &mut StreamRefs,
    max: usize,
    inbound: &mut Streaming<pb::AgentMessage>,
    tx: &tokio::sync::mpsc::Sender<Result<pb::CollectorMessage, Status>>,
) -> Result<(), Status> {
    let agent = core.agent(&hello.agent_id);
    loop {
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(status) => {
                if matches!(
                    status.code(),
                    tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
                ) {
                    core.telemetry
                        .invalid_batches
                        .get_or_create(&ReasonLabels {
                            reason: "too_large".into(),
                        })
                        .inc();
                }
                return Err(status);
            }
        };
        let batch = match msg.kind {
            Some(pb::agent_message::Kind::Batch(b)) => b,
            Some(pb::agent_message::Kind::BatchZstd(data)) => {
                match super::core::decode_batch_zstd(&data, max) {
                    Ok(b) => b,
                    Err(e) => return Err(invalid(core, e)),
                }
            }
            Some(pb::agent_message::Kind::Defs(d)) => {
                if let Err(e) = core.define(&hello.agent_id, refs, &d) {
                    return Err(invalid(core, e));
                }
                continue;
            }
            Some(pb::agent_message::Kind::Hello(_)) => {
                return Err(Status::invalid_argument("Hello sent twice on one stream"));
            }
            None => return Err(Status::invalid_argument("empty AgentMessage")),
        };
        let arrived = Instant::now();
        let mut durable = agent.lock().await;
        if batch.seq <= *durable {
            // interning still applies: later batches may use what it defined
            if let Err(e) = core.resolve(&hello.agent_id, &hello.node_name, refs, &batch) {
                return Err(invalid(core, e));
            }
            core.telemetry.duplicate_batches.inc();
            let seq = batch.seq;
            drop(durable);
            core.roster
                .batch(&hello.agent_id, seq, batch.created_ms, 0, 0, now_ms());
            if tx.send(Ok(ack(seq, 1))).await.is_err() {
                return Ok(());
            }
            continue;
        }
        let resolved = match core.resolve(&hello.agent_id, &hello.node_name, refs, &batch) {
            Ok(r) => r,
            Err(e) => return Err(invalid(core, e)),
        };
        // a full disk: the batch waits here, unacknowledged, until space
        // returns; the agent stops at its in-flight window and buffers
        if core.space.full().is_some() {
            core.space.count(crate::space::Source::Agent);
            if let Err(e) = core.space.wait_writable().await {
                return Err(Status::unavailable(e.to_string()));
            }
        }
        let gate = core.gate.read().await;
        if let Err(e) = core.append_wal(resolved.append).await {
            // the agent retransmits after reconnecting (a full disk found
            // here makes its next batch wait above)
            tracing::error!(error = %e, "WAL append failed; the batch is not acknowledged");
            return Err(Status::unavailable(format!(
                "collector cannot make data durable: {e}"
            )));
        }
        core.apply(
            &resolved.samples,
            &resolved.logs,
            &resolved.events,
            &batch.metadata,
        );
        drop(gate);
        *durable = batch.seq;
        core.set_durable(&hello.agent_id, batch.seq);
        drop(durable);
        core.roster.batch(
            &hello.agent_id,
            batch.seq,
            batch.created_ms,
            resolved.sample_count,
            resolved.logs.len() as u64,
            now_ms(),
        );
        let t = &core.telemetry;
        t.batches.inc();
        t.samples.inc_by(resolved.sample_count);
        t.log_records.inc_by(resolved.logs.len() as u64);
        t.events.inc_by(resolved.events.len() as u64);
        for (reason, n) in &resolved.refused_samples {
            t.samples_refused
                .get_or_create(&ReasonLabels {
                    reason: (*reason).into(),
                })
                .inc_by(*n);
        }
        t.ack_latency.observe(arrived.elapsed().as_secs_f64());
        if tx.send(Ok(ack(batch.seq, 0))).await.is_err() {
            return Ok(());
        }
    }
}

fn invalid(core: &IngestCore, e: super::core::BatchError) -> Status {
    core.telemetry
        .invalid_batches
        .get_or_create(&ReasonLabels {
            reason: e.reason().into(),
        })
        .inc();
    Status::invalid_argument(e.to_string())
}
