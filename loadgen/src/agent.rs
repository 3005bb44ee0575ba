//! One simulated agent: a generator that seals one batch per interval (every
//! series a counter one higher than in the previous batch) into an in-memory
//! buffer, and a shipper that speaks `vigil.v1` exactly as `vigil-agent`
//! does — `Hello`, `Welcome` (drop what the collector already holds),
//! batches in sequence order with a bounded window, cumulative acks,
//! reconnection with exponential backoff and full jitter, and retransmission
//! of everything unacknowledged on a new stream with a new interning table.
//!
//! Not here: a disk buffer (the buffer lives in memory for the run; an
//! outage of minutes for hundreds of agents fits) or log records.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::time::{Duration, Instant};
use vigil_common::time::now_ms;

use backon::BackoffBuilder as _;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::Endpoint;
use vigil_proto::v1 as pb;

use crate::stats::Stats;

/// The metric every simulated series belongs to.
pub const METRIC: &str = "vigil_loadgen_counter_total";

/// What every simulated agent shares.
pub struct Shared {
    pub collector: String,
    pub token: Option<String>,
    /// Value of the `run` label on every series (tells runs apart).
    pub run: String,
    pub series: u32,
    pub interval: Duration,
    pub max_in_flight: usize,
    pub max_backoff: Duration,
    pub stats: Arc<Stats>,
}

/// A sealed, not yet acknowledged batch: tick `seq` at `timestamp_ms`
/// (every series has the value `seq`).
#[derive(Clone, Copy, Debug)]
struct Pending {
    seq: u64,
    timestamp_ms: i64,
}

/// One agent's state, visible to the reporter.
pub struct Agent {
    pub index: usize,
    pub agent_id: String,
    pub node: String,
    buffer: Mutex<VecDeque<Pending>>,
    sealed: Notify,
    /// Highest sequence generated (= ticks = the last counter value).
    pub generated: AtomicU64,
    /// Highest sequence the collector acknowledged.
    pub acked: AtomicU64,
    pub connected: AtomicBool,
    /// Successful `Hello`/`Welcome` exchanges of this agent.
    pub connects: AtomicU64,
}

impl Agent {
    pub fn new(index: usize, prefix: &str, run: &str) -> Self {
        Agent {
            index,
            agent_id: format!("{prefix}-{run}-{index}"),
            node: format!("{prefix}-{index}"),
            buffer: Mutex::new(VecDeque::new()),
            sealed: Notify::new(),
            generated: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            connects: AtomicU64::new(0),
        }
    }

    /// Batches sealed and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.buffer.lock().len()
    }

    /// Age of the oldest unacknowledged batch, in milliseconds (0: none).
    pub fn oldest_unacked_age_ms(&self, now_ms: i64) -> i64 {
        self.buffer
            .lock()
            .front()
            .map(|p| (now_ms - p.timestamp_ms).max(0))
            .unwrap_or(0)
    }

    /// Seals one batch per interval until `stop` is cancelled. The first
    /// tick comes after `offset` (agents are spread over the interval, as a
    /// fleet's scrapes are).
    pub async fn generate(
        self: Arc<Self>,
        sh: Arc<Shared>,
        offset: Duration,
        stop: CancellationToken,
    ) {
        tokio::select! {
            _ = tokio::time::sleep(offset) => {}
            _ = stop.cancelled() => return,
        }
        let mut ticker = tokio::time::interval(sh.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.cancelled() => return,
            }
            let seq = self.generated.load(Ordering::Relaxed) + 1;
            self.buffer.lock().push_back(Pending {
                seq,
                timestamp_ms: now_ms(),
            });
            self.generated.store(seq, Ordering::Relaxed);
            sh.stats.batches_generated.fetch_add(1, Ordering::Relaxed);
            self.sealed.notify_one();
        }
    }

    /// Ships until `done` is cancelled (the caller cancels it once every
    /// agent's buffer is empty, or the drain timeout passed).
    pub async fn ship(self: Arc<Self>, sh: Arc<Shared>, done: CancellationToken) {
        // the agent's reconnect policy: 50 ms doubling to the maximum, each
        // with up to as much again of jitter; reset after a session of 30 s
        let delays = || {
            backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_delay(sh.max_backoff)
                .with_jitter()
                .without_max_times()
                .build()
        };
        let mut backoff = delays();
        loop {
            let started = Instant::now();
            let why = tokio::select! {
                w = self.session(&sh) => w,
                _ = done.cancelled() => return,
            };
            self.connected.store(false, Ordering::Relaxed);
            sh.stats.stream_failures.fetch_add(1, Ordering::Relaxed);
            if started.elapsed() > Duration::from_secs(30) {
                backoff = delays();
            }
            let pause = backoff.next().unwrap_or(sh.max_backoff);
            tracing::debug!(agent = %self.agent_id, error = %why, retry_in_ms = pause.as_millis() as u64, "stream ended");
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = done.cancelled() => return,
            }
        }
    }

    /// One stream: returns why it ended.
    async fn session(&self, sh: &Shared) -> String {
        let ep = match Endpoint::from_shared(sh.collector.clone()) {
            Ok(e) => e
                .connect_timeout(Duration::from_secs(5))
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(20)),
            Err(e) => return format!("collector URL {}: {e}", sh.collector),
        };
        let channel = match ep.connect().await {
            Ok(c) => c,
            Err(e) => {
                sh.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                return format!("connect {}: {e}", sh.collector);
            }
        };
        let token = sh.token.clone();
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
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);

        let (tx, rx) = mpsc::channel::<pb::AgentMessage>(sh.max_in_flight + 2);
        let hello = pb::AgentMessage {
            kind: Some(pb::agent_message::Kind::Hello(pb::Hello {
                agent_id: self.agent_id.clone(),
                node_name: self.node.clone(),
                agent_version: format!("loadgen-{}", env!("CARGO_PKG_VERSION")),
                // revision 1 (batches define their series per stream): still
                // accepted, and the simplest to generate at scale
                protocol: 1,
                series_epoch: 0,
            })),
        };
        if tx.send(hello).await.is_err() {
            return "stream closed".into();
        }
        let mut inbound = match client
            .ship(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => return status_text(sh, &s),
        };
        let welcome = match tokio::time::timeout(Duration::from_secs(15), inbound.message()).await {
            Ok(Ok(Some(pb::CollectorMessage {
                kind: Some(pb::collector_message::Kind::Welcome(w)),
            }))) => w,
            Ok(Err(s)) => return status_text(sh, &s),
            other => return format!("no Welcome from the collector: {other:?}"),
        };
        sh.stats.connects.fetch_add(1, Ordering::Relaxed);
        self.connects.fetch_add(1, Ordering::Relaxed);
        self.connected.store(true, Ordering::Relaxed);
        // what the collector already holds is acknowledged
        self.apply_ack(sh, welcome.durable_seq, &mut VecDeque::new());

        let mut defined = false;
        let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::new();
        let mut cursor = welcome.durable_seq;
        loop {
            while in_flight.len() < sh.max_in_flight {
                let next = self.buffer.lock().iter().find(|p| p.seq > cursor).copied();
                let Some(p) = next else { break };
                let batch = self.encode(sh, p, !defined);
                defined = true;
                let msg = pb::AgentMessage {
                    kind: Some(pb::agent_message::Kind::Batch(batch)),
                };
                if tx.send(msg).await.is_err() {
                    return "stream closed while sending".into();
                }
                sh.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                sh.stats
                    .samples_sent
                    .fetch_add(u64::from(sh.series), Ordering::Relaxed);
                in_flight.push_back((p.seq, Instant::now()));
                cursor = p.seq;
            }
            tokio::select! {
                m = inbound.message() => match m {
                    Ok(Some(pb::CollectorMessage { kind: Some(pb::collector_message::Kind::Ack(a)) })) => {
                        if a.duplicates > 0 {
                            sh.stats.duplicates_reported.fetch_add(u64::from(a.duplicates), Ordering::Relaxed);
                        }
                        self.apply_ack(sh, a.seq, &mut in_flight);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return "the collector closed the stream".into(),
                    Err(s) => return status_text(sh, &s),
                },
                _ = self.sealed.notified() => {}
            }
        }
    }

    /// The wire form of tick `p`: one sample block, every series at `p.seq`;
    /// the first batch of a stream defines the series (interning is per
    /// stream).
    fn encode(&self, sh: &Shared, p: Pending, define: bool) -> pb::Batch {
        let series = if define {
            (0..sh.series)
                .map(|i| pb::SeriesDef {
                    r#ref: i,
                    labels: vec![
                        label("__name__", METRIC),
                        label("node", &self.node),
                        label("run", &sh.run),
                        label("series", &i.to_string()),
                    ],
                })
                .collect()
        } else {
            Vec::new()
        };
        pb::Batch {
            seq: p.seq,
            created_ms: p.timestamp_ms,
            series,
            samples: vec![pb::SampleBlock {
                timestamp_ms: p.timestamp_ms,
                refs: (0..sh.series).collect(),
                values: vec![p.seq as f64; sh.series as usize],
            }],
            ..Default::default()
        }
    }

    /// Cumulative ack: everything at or below `seq` is durable.
    fn apply_ack(&self, sh: &Shared, seq: u64, in_flight: &mut VecDeque<(u64, Instant)>) {
        while in_flight.front().is_some_and(|(s, _)| *s <= seq) {
            if let Some((_, t)) = in_flight.pop_front() {
                sh.stats.record_latency(t.elapsed());
            }
        }
        let mut buf = self.buffer.lock();
        let mut n = 0u64;
        while buf.front().is_some_and(|p| p.seq <= seq) {
            buf.pop_front();
            n += 1;
        }
        drop(buf);
        if n > 0 {
            sh.stats.batches_acked.fetch_add(n, Ordering::Relaxed);
            sh.stats
                .samples_acked
                .fetch_add(n * u64::from(sh.series), Ordering::Relaxed);
        }
        self.acked.fetch_max(seq, Ordering::Relaxed);
    }
}

fn status_text(sh: &Shared, s: &tonic::Status) -> String {
    if s.code() == tonic::Code::Unauthenticated {
        sh.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!("the collector refused the token (UNAUTHENTICATED); check --token-file");
    }
    format!("{:?}: {}", s.code(), s.message())
}

fn label(name: &str, value: &str) -> pb::Label {
    pb::Label {
        name: name.into(),
        value: value.into(),
    }
}
