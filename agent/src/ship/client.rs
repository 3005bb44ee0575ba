//! The gRPC side of shipping: connect (TLS and bearer token when
//! configured), `Hello` → `Welcome`, send buffered batches in order with at
//! most `max_in_flight` unacknowledged, apply cumulative acks to the buffer,
//! and on any failure reconnect with exponential backoff and full jitter,
//! retransmitting everything not yet acknowledged.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use backon::BackoffBuilder as _;

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use vigil_proto::v1 as pb;

/// Most encoded bytes sent and not yet acknowledged (besides the count limit
/// `max_in_flight`): 4 MiB keeps a loopback or LAN link full.
const MAX_IN_FLIGHT_BYTES: usize = 4 << 20;

use super::LogAck;
use super::batch::StreamInterner;
use super::buffer::Buffer;
use crate::config::Config;
use crate::telemetry::Telemetry;

/// After this many INVALID_ARGUMENT answers to the same batch it is dropped.
const MAX_REJECTIONS: u32 = 3;

pub struct Client {
    pub config: Config,
    pub agent_id: String,
    pub buffer: Arc<Mutex<Buffer>>,
    pub telemetry: Arc<Telemetry>,
    /// Woken when a batch is sealed.
    pub sealed: Arc<Notify>,
    pub log_acks: mpsc::UnboundedSender<Vec<LogAck>>,
    pub metadata: Arc<Mutex<HashMap<String, pb::MetricMetadata>>>,
}

enum End {
    Shutdown,
    Retry(String),
}

impl Client {
    fn endpoint(&self) -> Result<Endpoint, String> {
        let mut ep = Endpoint::from_shared(self.config.collector.clone())
            .map_err(|e| format!("collector URL {}: {e}", self.config.collector))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        if let Some(ca) = &self.config.tls_ca {
            let pem = std::fs::read(ca).map_err(|e| format!("tls_ca {}: {e}", ca.display()))?;
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            if let Some(n) = &self.config.tls_server_name {
                tls = tls.domain_name(n.clone());
            }
            if let Some((cert, key)) = &self.config.tls_identity {
                let c =
                    std::fs::read(cert).map_err(|e| format!("tls_cert {}: {e}", cert.display()))?;
                let k =
                    std::fs::read(key).map_err(|e| format!("tls_key {}: {e}", key.display()))?;
                tls = tls.identity(tonic::transport::Identity::from_pem(c, k));
            }
            ep = ep.tls_config(tls).map_err(|e| format!("TLS: {e}"))?;
        }
        Ok(ep)
    }

    /// Runs until `drain` is cancelled and everything buffered is
    /// acknowledged; the shipper bounds that wait with `shutdown_timeout`.
    pub async fn run(self, drain: CancellationToken) {
        // reconnect delays: 50 ms doubling to 30 s, each with up to as much
        // again of jitter; reset after a session that lasted 30 s
        let delays = || {
            backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_secs(30))
                .with_jitter()
                .without_max_times()
                .build()
        };
        let mut backoff = delays();
        let mut rejections: HashMap<u64, u32> = HashMap::new();
        loop {
            if drain.is_cancelled() && self.buffer.lock().is_empty() {
                return;
            }
            let ep = match self.endpoint() {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "cannot reach the collector");
                    if wait_or(&drain, Duration::from_secs(5)).await {
                        return;
                    }
                    continue;
                }
            };
            let started = Instant::now();
            match self.session(ep, &drain, &mut rejections).await {
                End::Shutdown => return,
                End::Retry(why) => {
                    self.telemetry.connected.store(0, Ordering::Relaxed);
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = delays();
                    }
                    let pause = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(error = %why, retry_in_ms = pause.as_millis() as u64, "collector stream ended");
                    if wait_or(&drain, pause).await && self.buffer.lock().is_empty() {
                        return;
                    }
                }
            }
        }
    }

    async fn session(
        &self,
        ep: Endpoint,
        drain: &CancellationToken,
        rejections: &mut HashMap<u64, u32>,
    ) -> End {
        let channel: Channel = match tokio::select! {
            c = ep.connect() => c,
            _ = drain.cancelled() => return End::Shutdown,
        } {
            Ok(c) => c,
            Err(e) => {
                self.telemetry
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                return End::Retry(format!("connect {}: {e}", self.config.collector));
            }
        };
        let token = self.config.token.clone();
        let mut client = pb::ingest_client::IngestClient::with_interceptor(
            channel,
            move |mut req: tonic::Request<()>| {
                if let Some(t) = &token
                    && let Ok(v) = format!("Bearer {t}").parse()
                {
                    req.metadata_mut().insert("authorization", v);
                }
                Ok(req)
            },
        )
        .send_compressed(CompressionEncoding::Zstd)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(self.config.max_message_bytes)
        .max_encoding_message_size(self.config.max_message_bytes);

        let (tx, rx) = mpsc::channel::<pb::AgentMessage>(self.config.max_in_flight + 2);
        let hello = pb::AgentMessage {
            kind: Some(pb::agent_message::Kind::Hello(pb::Hello {
                agent_id: self.agent_id.clone(),
                node_name: self.config.node_name.clone(),
                agent_version: crate::VERSION.into(),
                protocol: vigil_proto::PROTOCOL_REVISION,
            })),
        };
        if tx.send(hello).await.is_err() {
            return End::Retry("stream closed".into());
        }
        let resp = match client
            .ship(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(r) => r,
            Err(s) => return self.failed(s, None, rejections),
        };
        let mut inbound = resp.into_inner();
        let welcome = match tokio::time::timeout(Duration::from_secs(15), inbound.message()).await {
            Ok(Ok(Some(pb::CollectorMessage {
                kind: Some(pb::collector_message::Kind::Welcome(w)),
            }))) => w,
            Ok(Err(s)) => return self.failed(s, None, rejections),
            other => return End::Retry(format!("no Welcome from the collector: {other:?}")),
        };
        self.telemetry.connects.fetch_add(1, Ordering::Relaxed);
        self.telemetry.connected.store(1, Ordering::Relaxed);
        tracing::info!(collector = %self.config.collector, durable_seq = welcome.durable_seq,
            version = %welcome.collector_version, "connected to the collector");
        // what the collector already holds is acknowledged
        self.apply_ack(welcome.durable_seq, None);
        self.buffer.lock().bump_seq(welcome.durable_seq);

        let mut interner = StreamInterner::default();
        let mut in_flight: VecDeque<(u64, Instant, usize)> = VecDeque::new();
        let mut in_flight_bytes = 0usize;
        let mut cursor = welcome.durable_seq;
        let mut drain_seen = false;
        loop {
            // send what fits in the window
            // bounded by count and by bytes: a log backlog must not pile up
            // encoded batches in memory faster than the collector acks them
            while in_flight.len() < self.config.max_in_flight
                && (in_flight.is_empty() || in_flight_bytes < MAX_IN_FLIGHT_BYTES)
            {
                let next = self.buffer.lock().seqs_after(cursor, 1).first().copied();
                let Some(seq) = next else { break };
                let batch = match self.buffer.lock().read(seq) {
                    Ok(Some(b)) => b,
                    Ok(None) => {
                        cursor = seq;
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "unreadable batch in the disk buffer; dropping it");
                        let _ = self.buffer.lock().discard(seq);
                        self.telemetry
                            .buffer_corrupt_records
                            .fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                let md = self.metadata.lock().clone();
                let wire = interner.translate(&batch, &md);
                let size = prost::Message::encoded_len(&wire);
                if size > self.config.max_message_bytes {
                    tracing::error!(seq, size, "batch exceeds max_message_bytes; dropping it");
                    let _ = self.buffer.lock().discard(seq);
                    self.telemetry
                        .rejected_batches
                        .fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let msg = pb::AgentMessage {
                    kind: Some(pb::agent_message::Kind::Batch(wire)),
                };
                if tx.send(msg).await.is_err() {
                    return End::Retry("stream closed while sending".into());
                }
                self.telemetry.batches_sent.fetch_add(1, Ordering::Relaxed);
                self.telemetry
                    .bytes_sent
                    .fetch_add(size as u64, Ordering::Relaxed);
                in_flight.push_back((seq, Instant::now(), size));
                in_flight_bytes += size;
                cursor = seq;
            }
            if drain.is_cancelled() && in_flight.is_empty() && self.buffer.lock().is_empty() {
                return End::Shutdown;
            }
            tokio::select! {
                m = inbound.message() => match m {
                    Ok(Some(pb::CollectorMessage { kind: Some(pb::collector_message::Kind::Ack(a)) })) => {
                        while in_flight.front().map(|(s, _, _)| *s <= a.seq).unwrap_or(false) {
                            if let Some((_, t, size)) = in_flight.pop_front() {
                                in_flight_bytes -= size;
                                self.telemetry.ack_latency_micros_sum.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                                self.telemetry.ack_latency_count.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        self.apply_ack(a.seq, Some(rejections));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return End::Retry("the collector closed the stream".into()),
                    Err(s) => return self.failed(s, in_flight.front().map(|(s, _, _)| *s), rejections),
                },
                _ = self.sealed.notified() => {}
                _ = drain.cancelled(), if !drain_seen => drain_seen = true,
            }
        }
    }

    fn failed(
        &self,
        s: tonic::Status,
        first_in_flight: Option<u64>,
        rejections: &mut HashMap<u64, u32>,
    ) -> End {
        match s.code() {
            tonic::Code::Unauthenticated => {
                self.telemetry.auth_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "the collector refused our token (UNAUTHENTICATED); check --token-file"
                );
            }
            tonic::Code::InvalidArgument
            | tonic::Code::OutOfRange
            | tonic::Code::ResourceExhausted => {
                if let Some(seq) = first_in_flight {
                    let n = rejections.entry(seq).or_insert(0);
                    *n += 1;
                    if *n >= MAX_REJECTIONS {
                        tracing::error!(seq, error = %s.message(), "the collector keeps refusing this batch; dropping it");
                        let _ = self.buffer.lock().discard(seq);
                        self.telemetry
                            .rejected_batches
                            .fetch_add(1, Ordering::Relaxed);
                        rejections.remove(&seq);
                    }
                }
            }
            _ => {}
        }
        End::Retry(format!("{:?}: {}", s.code(), s.message()))
    }

    fn apply_ack(&self, seq: u64, rejections: Option<&mut HashMap<u64, u32>>) {
        let acked = match self.buffer.lock().ack(seq) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "disk buffer ack failed");
                return;
            }
        };
        if let Some(r) = rejections {
            r.retain(|s, _| *s > seq);
        }
        if acked.is_empty() {
            return;
        }
        let t = &self.telemetry;
        t.batches_acked
            .fetch_add(acked.len() as u64, Ordering::Relaxed);
        t.samples_acked
            .fetch_add(acked.iter().map(|e| e.samples).sum(), Ordering::Relaxed);
        t.log_records_acked
            .fetch_add(acked.iter().map(|e| e.logs).sum(), Ordering::Relaxed);
        t.last_acked_seq.fetch_max(seq, Ordering::Relaxed);
        let mut positions: HashMap<super::SourceKey, u64> = HashMap::new();
        for e in acked {
            for (k, off) in e.log_positions {
                let slot = positions.entry(k).or_insert(0);
                *slot = (*slot).max(off);
            }
        }
        if !positions.is_empty() {
            let _ = self.log_acks.send(
                positions
                    .into_iter()
                    .map(|(source, end_offset)| LogAck { source, end_offset })
                    .collect(),
            );
        }
    }
}

/// Sleeps `d`; true if `token` was cancelled meanwhile.
async fn wait_or(token: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = token.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
