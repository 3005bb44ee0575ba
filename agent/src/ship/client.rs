//! The gRPC side of shipping: connect (TLS and bearer token when
//! configured), `Hello` → `Welcome`, send buffered batches in order with at
//! most `max_in_flight` unacknowledged, apply cumulative acks to the buffer,
//! and on any failure reconnect with exponential backoff and full jitter,
//! retransmitting everything not yet acknowledged.
//!
//! With several collectors (`--collector` repeated) the list is an order of
//! preference: a failure moves the stream at once to the next collector
//! (failover; after a whole round of failures, the backoff); while on any
//! but the first, the ones before it are probed every
//! `collector_failback_interval` and the stream moves back to the first that
//! answers (failback) — after the batches in flight were acknowledged, so a
//! planned move sends nothing twice. Why the buffer and the sequences stay
//! right across collectors is in `proto/vigil/v1/ingest.proto`.

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
use super::batch::legacy_to_table;
use super::buffer::Buffer;
use super::table::SeriesTable;
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
    pub table: Arc<Mutex<SeriesTable>>,
}

enum End {
    Shutdown,
    Retry(String),
    /// Move to the collector at this index (a preferred one answers again).
    Switch(usize),
}

/// How long a failback waits for the acks of what is in flight before it
/// moves anyway (what is unacknowledged then is sent again, to the new one).
const FAILBACK_DRAIN: Duration = Duration::from_secs(10);

/// Which collector to try after the one at `index` failed, and whether a
/// whole round failed (then the caller backs off): the next in the list,
/// wrapping to the first.
fn after_failure(index: usize, failed_in_a_row: usize, collectors: usize) -> (usize, bool) {
    let round_over = failed_in_a_row.is_multiple_of(collectors.max(1));
    let next = if round_over {
        0
    } else {
        (index + 1) % collectors.max(1)
    };
    (next, round_over)
}

impl Client {
    fn endpoint(&self, url: &str) -> Result<Endpoint, String> {
        let mut ep = Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("collector URL {url}: {e}"))?
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
        let n = self.config.collectors.len();
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
        let mut index = 0usize;
        let mut failed_in_a_row = 0usize;
        self.telemetry.collector_index.store(-1, Ordering::Relaxed);
        loop {
            if drain.is_cancelled() && self.buffer.lock().is_empty() {
                return;
            }
            let url = self.config.collectors[index].clone();
            let started = Instant::now();
            let end = match self.endpoint(&url) {
                Ok(ep) => self.session(ep, index, &drain, &mut rejections).await,
                Err(e) => End::Retry(e),
            };
            self.telemetry.connected.store(0, Ordering::Relaxed);
            self.telemetry.collector_index.store(-1, Ordering::Relaxed);
            let why = match end {
                End::Shutdown => return,
                End::Switch(to) => {
                    tracing::info!(from = %url, to = %self.config.collectors[to], "moving back to a preferred collector");
                    self.telemetry
                        .collector_failbacks
                        .fetch_add(1, Ordering::Relaxed);
                    index = to;
                    failed_in_a_row = 0;
                    continue;
                }
                End::Retry(why) => why,
            };
            if started.elapsed() > Duration::from_secs(30) {
                // it worked for a while: this is a fresh failure
                backoff = delays();
                failed_in_a_row = 0;
            }
            failed_in_a_row += 1;
            let (next, round_over) = after_failure(index, failed_in_a_row, n);
            if !round_over {
                tracing::warn!(error = %why, collector = %url, next = %self.config.collectors[next], "collector failed; trying the next one");
                self.telemetry
                    .collector_failovers
                    .fetch_add(1, Ordering::Relaxed);
                index = next;
                continue;
            }
            let pause = backoff.next().unwrap_or(Duration::from_secs(30));
            tracing::warn!(error = %why, collector = %url, retry_in_ms = pause.as_millis() as u64, "collector stream ended");
            if wait_or(&drain, pause).await && self.buffer.lock().is_empty() {
                return;
            }
            if next != index && n > 1 {
                self.telemetry
                    .collector_failovers
                    .fetch_add(1, Ordering::Relaxed);
            }
            index = next;
        }
    }

    /// Tries the collectors before `index`, in order; the first that
    /// accepts a connection (TCP, TLS and HTTP/2 handshakes) wins.
    async fn probe_preferred(&self, index: usize) -> Option<usize> {
        for i in 0..index {
            let Ok(ep) = self.endpoint(&self.config.collectors[i]) else {
                continue;
            };
            if ep.connect().await.is_ok() {
                return Some(i);
            }
        }
        None
    }

    async fn session(
        &self,
        ep: Endpoint,
        index: usize,
        drain: &CancellationToken,
        rejections: &mut HashMap<u64, u32>,
    ) -> End {
        let url = &self.config.collectors[index];
        let channel: Channel = match tokio::select! {
            c = ep.connect() => c,
            _ = drain.cancelled() => return End::Shutdown,
        } {
            Ok(c) => c,
            Err(e) => {
                self.telemetry
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                return End::Retry(format!("connect {url}: {e}"));
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
        // batches are compressed once, in the disk buffer: gRPC's own
        // compression would only compress them again
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(self.config.max_message_bytes)
        .max_encoding_message_size(self.config.max_message_bytes);

        let (tx, rx) = mpsc::channel::<pb::AgentMessage>(self.config.max_in_flight + 2);
        let mut stream_epoch = self.table.lock().epoch();
        let hello = pb::AgentMessage {
            kind: Some(pb::agent_message::Kind::Hello(pb::Hello {
                agent_id: self.agent_id.clone(),
                node_name: self.config.node_name.clone(),
                agent_version: crate::VERSION.into(),
                protocol: vigil_proto::PROTOCOL_REVISION,
                series_epoch: stream_epoch,
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
        self.telemetry
            .collector_index
            .store(index as i64, Ordering::Relaxed);
        tracing::info!(collector = %url, durable_seq = welcome.durable_seq,
            version = %welcome.collector_version, "connected to the collector");
        // what the collector already holds is acknowledged
        self.apply_ack(welcome.durable_seq, None);
        self.buffer.lock().bump_seq(welcome.durable_seq);

        // the series refs this collector holds definitions for (1..=known)
        let mut known = {
            let t = self.table.lock();
            if t.epoch() != stream_epoch || welcome.series_known > u64::from(t.len()) {
                // the table started over since the Hello, or the collector
                // claims more than there is: define from the start
                stream_epoch = t.epoch();
                0
            } else {
                welcome.series_known as u32
            }
        };
        tracing::debug!(series_known = known, "series refs the collector holds");
        let metadata: Vec<pb::MetricMetadata> = self.metadata.lock().values().cloned().collect();
        if !metadata.is_empty() {
            let msg = pb::AgentMessage {
                kind: Some(pb::agent_message::Kind::Defs(pb::SeriesDefs {
                    epoch: stream_epoch,
                    series: Vec::new(),
                    metadata,
                })),
            };
            if tx.send(msg).await.is_err() {
                return End::Retry("stream closed while sending".into());
            }
        }
        let mut in_flight: VecDeque<(u64, Instant, usize)> = VecDeque::new();
        let mut in_flight_bytes = 0usize;
        let mut cursor = welcome.durable_seq;
        let mut drain_seen = false;
        // failback: while not on the first collector, probe the preferred
        // ones now and then; once one answers, stop sending, let what is in
        // flight be acknowledged, and move
        let mut failback_tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.config.failback_interval,
            self.config.failback_interval,
        );
        failback_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probe: Option<
            std::pin::Pin<Box<dyn std::future::Future<Output = Option<usize>> + Send + '_>>,
        > = None;
        let mut moving: Option<(usize, tokio::time::Instant)> = None;
        loop {
            if let Some((to, since)) = moving
                && (in_flight.is_empty() || since.elapsed() >= FAILBACK_DRAIN)
            {
                return End::Switch(to);
            }
            // send what fits in the window
            // bounded by count and by bytes: a log backlog must not pile up
            // encoded batches in memory faster than the collector acks them
            while moving.is_none()
                && in_flight.len() < self.config.max_in_flight
                && (in_flight.is_empty() || in_flight_bytes < MAX_IN_FLIGHT_BYTES)
            {
                let next = self.buffer.lock().seqs_after(cursor, 1).first().copied();
                let Some(seq) = next else { break };
                let payload = match self.payload(seq) {
                    Ok(Some(p)) => p,
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
                let (payload, max_ref) = payload;
                let size = payload.len();
                if size > self.config.max_message_bytes {
                    tracing::error!(seq, size, "batch exceeds max_message_bytes; dropping it");
                    let _ = self.buffer.lock().discard(seq);
                    self.telemetry
                        .rejected_batches
                        .fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                // the definitions the collector lacks, in ref order, first
                let defs = {
                    let t = self.table.lock();
                    if t.epoch() != stream_epoch {
                        stream_epoch = t.epoch();
                        known = 0;
                    }
                    if max_ref > known {
                        let chunks = def_messages(
                            t.defs(known, max_ref),
                            stream_epoch,
                            self.config.max_message_bytes / 2,
                        );
                        known = max_ref.min(t.len());
                        chunks
                    } else {
                        Vec::new()
                    }
                };
                for (msg, n) in defs {
                    if tx.send(msg).await.is_err() {
                        return End::Retry("stream closed while sending".into());
                    }
                    self.telemetry
                        .series_defs_sent
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                let msg = pb::AgentMessage {
                    kind: Some(pb::agent_message::Kind::BatchZstd(payload)),
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
                _ = failback_tick.tick(), if index > 0 && probe.is_none() && moving.is_none() && !drain_seen => {
                    probe = Some(Box::pin(self.probe_preferred(index)));
                }
                found = async { match probe.as_mut() { Some(p) => p.await, None => std::future::pending().await } } => {
                    probe = None;
                    if let Some(to) = found {
                        moving = Some((to, tokio::time::Instant::now()));
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(200)), if moving.is_some() => {}
            }
        }
    }

    /// A buffered batch as it goes on the wire (its zstd payload) and the
    /// highest series ref it uses. A batch an older agent buffered is moved
    /// onto the series table first (and compressed again, once).
    fn payload(&self, seq: u64) -> Result<Option<(Vec<u8>, u32)>, String> {
        let buffer = self.buffer.lock();
        let Some(entry) = buffer.entry(seq) else {
            return Ok(None);
        };
        let (legacy, max_ref) = (entry.legacy, entry.max_ref);
        if !legacy {
            return Ok(buffer
                .read_payload(seq)
                .map_err(|e| e.to_string())?
                .map(|p| (p, max_ref)));
        }
        let Some(old) = buffer.read(seq).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        drop(buffer);
        let mut t = self.table.lock();
        let b = legacy_to_table(&old, &mut t);
        t.persist().map_err(|e| e.to_string())?;
        Ok(Some((
            super::buffer::encode_payload(&b),
            super::batch::max_ref(&b),
        )))
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

/// `SeriesDefs` messages carrying `defs` (consecutive, in ref order), each
/// about `max_bytes` at most, with how many definitions each holds.
fn def_messages(
    defs: &[pb::SeriesDef],
    epoch: u64,
    max_bytes: usize,
) -> Vec<(pb::AgentMessage, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < defs.len() {
        let mut bytes = 0;
        let mut end = at;
        while end < defs.len() && (end == at || bytes < max_bytes) {
            bytes += prost::Message::encoded_len(&defs[end]) + 8;
            end += 1;
        }
        out.push((
            pb::AgentMessage {
                kind: Some(pb::agent_message::Kind::Defs(pb::SeriesDefs {
                    epoch,
                    series: defs[at..end].to_vec(),
                    metadata: Vec::new(),
                })),
            },
            end - at,
        ));
        at = end;
    }
    out
}

/// Sleeps `d`; true if `token` was cancelled meanwhile.
async fn wait_or(token: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = token.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::after_failure;

    #[test]
    fn a_failure_moves_to_the_next_and_a_failed_round_backs_off_from_the_first() {
        // three collectors, the first fails: try the second, then the third,
        // then (a whole round failed) back off and start again at the first
        assert_eq!(after_failure(0, 1, 3), (1, false));
        assert_eq!(after_failure(1, 2, 3), (2, false));
        assert_eq!(after_failure(2, 3, 3), (0, true));
        // a failure on the third after it worked: the first is next
        assert_eq!(after_failure(2, 1, 3), (0, false));
        // one collector: every failure is a whole round
        assert_eq!(after_failure(0, 1, 1), (0, true));
        assert_eq!(after_failure(0, 2, 1), (0, true));
    }
}
