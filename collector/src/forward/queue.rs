//! One endpoint's pipeline: a WAL reader, shards that send, and the cursor.
//!
//! The reader (WAL reads on a blocking thread) resolves each record's
//! series, applies `write_relabel_configs` once per series, and hands the
//! items to shards by series id, so one series always goes through the same
//! shard and its samples arrive in order. Each shard buffers at most
//! `capacity` items (the reader waits for room: memory is bounded, the WAL
//! is the buffer), sends batches of up to `max_samples_per_send` (or what it
//! has after `batch_send_deadline`), one request at a time, retrying 5xx,
//! 429 (if enabled) and network errors with exponential backoff between
//! `min_backoff` and `max_backoff` — or after `Retry-After` when the
//! receiver says — and dropping (counted) what a 4xx refuses. The number of
//! shards follows the backlog ([`desired_shards`]), between `min_shards`
//! and `max_shards`; resharding drains the shards first, so order holds.
//!
//! The [`Tracker`] gives the cursor: persisted about once a second and at
//! the end, and told to the WAL hold so the segments behind it can go.
//! Nothing here blocks ingest: the reader only reads files the writer has
//! made durable. Not here: encodings (sibling modules).
//!
//! Why about 950 lines: the reader, the shards, the backoff and the cursor
//! share one endpoint's state and its ordering promise (a series always
//! through the same shard); the protocol encodings and configuration are in
//! their own files.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use vigil_common::Labels;
use vigil_common::relabel;

use super::cursor::{CursorFile, Frontier, ItemPos, Saved, Tracker};
use super::send::{Endpoint, Verdict};
use super::{Items, Kind, LogItem, SampleItem};
use crate::wal::reader::{Reader, Step, bytes_between};
use crate::wal::{Hold, IdHash, Position, Wal};

/// How often the shard count is reconsidered.
const RESHARD_EVERY: Duration = Duration::from_secs(10);
/// How often the cursor is persisted (when it moved).
const CURSOR_EVERY: Duration = Duration::from_secs(1);
/// A backlog should drain within about this long.
const DRAIN_TARGET_SECS: f64 = 60.0;
/// Most records read per trip to the blocking pool.
const READ_RECORDS: usize = 256;

/// What the shard count decision looks at, over one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ShardInputs {
    pub interval_secs: f64,
    /// Items delivered, and the time successful requests took (summed over
    /// shards).
    pub items_out: u64,
    pub send_secs: f64,
    /// A request failed or was retried in the interval.
    pub failures: bool,
    /// WAL bytes read in the interval, and items they held.
    pub bytes_read: u64,
    pub items_read: u64,
    /// WAL bytes not read yet, now and at the interval's start.
    pub backlog_bytes: u64,
    pub backlog_bytes_before: u64,
}

/// Prometheus's idea, in WAL bytes: enough shards to send what arrives plus
/// the backlog within [`DRAIN_TARGET_SECS`], given the time one item takes;
/// no change while failing (more shards do not help a failing receiver), or
/// when within 30% of the current count.
pub fn desired_shards(current: usize, min: usize, max: usize, i: ShardInputs) -> usize {
    if i.failures || i.items_out == 0 || i.interval_secs <= 0.0 {
        // nothing to learn from; an idle endpoint with no backlog shrinks
        if !i.failures && i.backlog_bytes == 0 && i.items_read == 0 {
            return min.max(1).min(max);
        }
        return current.clamp(min, max);
    }
    let secs_per_item = i.send_secs / i.items_out as f64;
    let items_per_byte = if i.bytes_read > 0 {
        i.items_read as f64 / i.bytes_read as f64
    } else {
        0.0
    };
    let arrived = i.bytes_read as f64 + i.backlog_bytes as f64 - i.backlog_bytes_before as f64;
    let in_items_per_sec = arrived.max(0.0) * items_per_byte / i.interval_secs;
    let backlog_items_per_sec = i.backlog_bytes as f64 * items_per_byte / DRAIN_TARGET_SECS;
    let want = (secs_per_item * (in_items_per_sec + backlog_items_per_sec) * 1.2).ceil() as usize;
    let want = want.clamp(min, max);
    let cur = current.max(1) as f64;
    if ((want as f64 - cur) / cur).abs() < 0.3 {
        current.clamp(min, max)
    } else {
        want
    }
}

/// Items `first..first + len` of one record's part for one shard.
struct Chunk {
    record: u64,
    start: Position,
    first: u64,
    items: Items,
}

/// Per-interval figures the shards add to.
#[derive(Default)]
struct Interval {
    items_out: u64,
    send_secs: f64,
    failures: bool,
}

struct Shared {
    ep: Arc<Endpoint>,
    tracker: Mutex<Tracker>,
    interval: Mutex<Interval>,
    stop: CancellationToken,
    /// Wakes the cursor writer.
    dirty: Notify,
    /// The tracker version last made durable.
    durable: watch::Receiver<u64>,
}

struct Shard {
    tx: mpsc::UnboundedSender<Chunk>,
    room: Arc<Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts `n` shards; `cuts[i]`: shard i first sends exactly up to there
/// (the request it had in flight before a restart).
fn spawn_shards(sh: &Arc<Shared>, n: usize, cuts: Vec<Option<ItemPos>>) -> Vec<Shard> {
    (0..n)
        .map(|i| {
            let (tx, rx) = mpsc::unbounded_channel();
            let room = Arc::new(Semaphore::new(sh.ep.queue.capacity));
            let cut = cuts.get(i).copied().flatten();
            let task = tokio::spawn(run_shard(sh.clone(), i, rx, room.clone(), cut));
            Shard { tx, room, task }
        })
        .collect()
}

/// Closes the shards' queues and waits until they sent what they hold (or
/// stopped).
async fn drain(shards: Vec<Shard>) {
    let tasks: Vec<_> = shards
        .into_iter()
        .map(|s| {
            drop(s.tx);
            s.task
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// A run of held items from one chunk.
struct Run {
    record: u64,
    start: Position,
    first: u64,
    n: usize,
}

/// What a shard holds, in order, with where each item came from.
struct Held {
    items: Items,
    runs: VecDeque<Run>,
}

impl Held {
    fn push(&mut self, c: Chunk) {
        self.runs.push_back(Run {
            record: c.record,
            start: c.start,
            first: c.first,
            n: c.items.len(),
        });
        self.items.append(c.items);
    }

    /// The position of the item after the first `m`.
    fn pos_after(&self, m: usize) -> ItemPos {
        let mut acc = 0;
        for r in &self.runs {
            if m < acc + r.n {
                return ItemPos {
                    record: r.start,
                    index: r.first + (m - acc) as u64,
                };
            }
            acc += r.n;
        }
        self.runs
            .back()
            .map(|r| ItemPos {
                record: r.start,
                index: r.first + r.n as u64,
            })
            .unwrap_or_default()
    }

    /// How many held items come before `p`.
    fn count_before(&self, p: ItemPos) -> usize {
        let mut acc = 0;
        for r in &self.runs {
            let (a, b) = (
                ItemPos {
                    record: r.start,
                    index: r.first,
                },
                ItemPos {
                    record: r.start,
                    index: r.first + r.n as u64,
                },
            );
            if p <= a {
                return acc;
            }
            if p < b {
                return acc + (p.index - r.first) as usize;
            }
            acc += r.n;
        }
        acc
    }

    /// Takes the first `m` items; their runs are reported to `t` as done.
    fn take(&mut self, m: usize, kind: Kind) -> (Items, Vec<(u64, usize)>) {
        let all = std::mem::replace(&mut self.items, Items::empty(kind));
        let mut parts = all.split_at(m);
        self.items = parts.pop().unwrap_or_else(|| Items::empty(kind));
        let front = parts.pop().unwrap_or_else(|| Items::empty(kind));
        let mut done = Vec::new();
        let mut left = m;
        while left > 0 {
            let Some(r) = self.runs.front_mut() else {
                break;
            };
            let k = left.min(r.n);
            done.push((r.record, k));
            r.n -= k;
            r.first += k as u64;
            left -= k;
            if r.n == 0 {
                self.runs.pop_front();
            }
        }
        (front, done)
    }
}

async fn run_shard(
    sh: Arc<Shared>,
    index: usize,
    mut rx: mpsc::UnboundedReceiver<Chunk>,
    room: Arc<Semaphore>,
    mut cut: Option<ItemPos>,
) {
    let q = &sh.ep.queue;
    let kind = sh.ep.kind;
    let mut held = Held {
        items: Items::empty(kind),
        runs: VecDeque::new(),
    };
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        // how many to send now (0: keep collecting)
        let send = tokio::select! {
            biased;
            _ = sh.stop.cancelled() => return,
            c = rx.recv() => match c {
                Some(c) => {
                    if held.items.is_empty() {
                        deadline = Some(tokio::time::Instant::now() + q.batch_send_deadline.as_std());
                    }
                    held.push(c);
                    match cut {
                        // after a restart the request that was in flight
                        // goes alone, exactly as before
                        Some(e) if held.pos_after(held.items.len()) >= e => {
                            cut = None;
                            held.count_before(e)
                        }
                        Some(_) => 0,
                        None if held.items.len() >= q.max_samples_per_send => held.items.len(),
                        None => 0,
                    }
                }
                None => held.items.len(),
            },
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => {
                cut = None;
                held.items.len()
            }
        };
        if send > 0 && !flush(&sh, index, &mut held, send, &room).await {
            return;
        }
        if send > 0 && held.items.is_empty() {
            deadline = None;
        }
        if rx.is_closed() && rx.is_empty() && held.items.is_empty() {
            return;
        }
    }
}

/// Sends the first `n` held items in requests of at most
/// `max_samples_per_send`, each announced in the cursor first; false when
/// stopped.
async fn flush(sh: &Shared, index: usize, held: &mut Held, n: usize, room: &Semaphore) -> bool {
    let max = sh.ep.queue.max_samples_per_send;
    let mut left = n;
    while left > 0 {
        let m = left.min(max);
        let at = held.pos_after(0);
        let end = held.pos_after(m);
        let v = sh.tracker.lock().intent(index, at, end);
        sh.dirty.notify_one();
        let mut durable = sh.durable.clone();
        tokio::select! {
            _ = sh.stop.cancelled() => return false,
            r = durable.wait_for(|d| *d >= v) => if r.is_err() { return false; },
        }
        let (items, done) = held.take(m, sh.ep.kind);
        if !deliver(sh, &items).await {
            return false;
        }
        {
            let mut t = sh.tracker.lock();
            for (rec, k) in done {
                t.done(rec, k);
            }
            t.delivered(index, end);
            sh.ep.metrics.pending.set(t.pending() as i64);
        }
        // written soon, not waited for: a crash before it resends this
        // request, which the receiver already has (at least once)
        sh.dirty.notify_one();
        room.add_permits(m);
        left -= m;
    }
    true
}

/// Writes the cursor whenever a shard announces a request (and once a
/// second when the watermark moved), telling the shards what is durable.
async fn write_cursor(
    sh: Arc<Shared>,
    mut file: CursorFile,
    durable: watch::Sender<u64>,
    hold: Arc<Hold>,
) -> CursorFile {
    let mut last = 0u64;
    loop {
        tokio::select! {
            _ = sh.stop.cancelled() => return file,
            _ = sh.dirty.notified() => {}
            _ = tokio::time::sleep(CURSOR_EVERY) => {}
        }
        let (v, snap) = {
            let t = sh.tracker.lock();
            (t.version, t.snapshot())
        };
        if v == last {
            continue;
        }
        let (f, r) = match tokio::task::spawn_blocking(move || {
            let r = file.save(&snap);
            (file, r.map(|_| snap.watermark))
        })
        .await
        {
            Ok(x) => x,
            Err(_) => {
                tracing::error!(endpoint = %sh.ep.name, "cursor writer failed");
                std::future::pending::<()>().await;
                unreachable!()
            }
        };
        file = f;
        match r {
            Ok(wm) => {
                last = v;
                durable.send_replace(v);
                hold.set_needed(wm.segment);
            }
            Err(e) => {
                tracing::warn!(endpoint = %sh.ep.name, error = %e, "cannot save the cursor; sending waits");
                tokio::select! {
                    _ = sh.stop.cancelled() => return file,
                    _ = tokio::time::sleep(CURSOR_EVERY) => {}
                }
                sh.dirty.notify_one();
            }
        }
    }
}

fn backoff(q: &super::config::QueueConfig) -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder as _;
    backon::ExponentialBuilder::default()
        .with_min_delay(q.min_backoff.as_std())
        .with_max_delay(q.max_backoff.as_std())
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

async fn deliver(sh: &Shared, items: &Items) -> bool {
    let ep = &sh.ep;
    let m = &ep.metrics;
    let n = items.len() as u64;
    let mut wait = backoff(&ep.queue);
    let mut attempt = 0u32;
    loop {
        let t0 = Instant::now();
        let verdict = tokio::select! {
            _ = sh.stop.cancelled() => return false,
            v = ep.send(items) => v,
        };
        match verdict {
            Verdict::Delivered => {
                let secs = t0.elapsed().as_secs_f64();
                m.sent.inc_by(n);
                m.send_seconds.observe(secs);
                super::telemetry::EndpointMetrics::raise(&m.highest_sent, items.newest_secs());
                let mut i = sh.interval.lock();
                i.items_out += n;
                i.send_secs += secs;
                if attempt > 0 {
                    tracing::info!(endpoint = %ep.name, attempts = attempt + 1, "delivered after retries");
                }
                return true;
            }
            Verdict::Resend => continue,
            Verdict::Reject(reason) => {
                m.failed.inc_by(n);
                sh.interval.lock().failures = true;
                tracing::warn!(endpoint = %ep.name, items = n, %reason, "endpoint refused a batch for good (4xx): dropped");
                return true;
            }
            Verdict::Retry { after, reason } => {
                m.retried.inc_by(n);
                sh.interval.lock().failures = true;
                let d = match after {
                    Some(a) => a.min(MAX_RETRY_AFTER),
                    None => wait.next().unwrap_or(ep.queue.max_backoff.as_std()),
                };
                if attempt == 0 || attempt.is_power_of_two() {
                    tracing::warn!(endpoint = %ep.name, items = n, attempt = attempt + 1, retry_in_ms = d.as_millis() as u64, %reason, "send failed; retrying");
                }
                attempt += 1;
                tokio::select! {
                    _ = sh.stop.cancelled() => return false,
                    _ = tokio::time::sleep(d) => {}
                }
            }
        }
    }
}

/// What one WAL record gave this pipeline.
enum Read {
    Record {
        start: Position,
        next: Position,
        bytes: u64,
        /// Items per shard (series id modulo the shard count), in WAL order.
        items: Vec<Items>,
        newest_secs: f64,
        relabel_dropped: u64,
        unknown: u64,
    },
    Gap(Position, Position),
    Corrupt(Position, String, Position),
}

/// The reader and its per-series cache (labels after relabeling; `None`:
/// dropped), moved to the blocking pool for each read.
struct ReadState {
    reader: Reader,
    cache: HashMap<u64, Option<Arc<Labels>>, IdHash>,
    relabel: Arc<Vec<relabel::Relabel>>,
    kind: Kind,
    /// Items are split over this many shards.
    shards: usize,
}

impl ReadState {
    fn resolve(&mut self, id: u64) -> Option<Option<Arc<Labels>>> {
        if let Some(c) = self.cache.get(&id) {
            return Some(c.clone());
        }
        let l = self.reader.labels(id)?.clone();
        // an empty value is no label (Prometheus's data model)
        let l = if l.iter().any(|(_, v)| v.is_empty()) {
            Arc::new(Labels::new(l.iter().filter(|(_, v)| !v.is_empty())))
        } else {
            l
        };
        let out = if self.relabel.is_empty() {
            Some(l)
        } else {
            relabel::process(&self.relabel, (*l).clone()).map(Arc::new)
        };
        let out = out.filter(|l| self.kind == Kind::Logs || l.metric_name().is_some());
        if self.cache.len() > 2 * self.reader.series_count() + 10_000 {
            self.cache.clear();
        }
        self.cache.insert(id, out.clone());
        Some(out)
    }

    fn read(&mut self) -> Result<(Vec<Read>, bool), crate::wal::WalError> {
        let mut out = Vec::new();
        for _ in 0..READ_RECORDS {
            let start = self.reader.position();
            match self.reader.step()? {
                Step::Idle => return Ok((out, true)),
                Step::Gap { from, to } => out.push(Read::Gap(from, to)),
                Step::Corrupt { at, reason } => {
                    out.push(Read::Corrupt(at, reason, self.reader.position()))
                }
                Step::Record(rec, next) => {
                    let bytes = if next.segment == start.segment {
                        next.offset - start.offset
                    } else {
                        next.offset
                    };
                    // per shard, in WAL order (deterministic: a restart
                    // must split a record the same way)
                    let n = self.shards.max(1) as u64;
                    let mut per: Vec<Items> = (0..n).map(|_| Items::empty(self.kind)).collect();
                    let (mut dropped, mut unknown, mut newest) = (0u64, 0u64, i64::MIN);
                    match self.kind {
                        Kind::Samples => {
                            for b in &rec.blocks {
                                for (id, v) in b.ids.iter().zip(&b.values) {
                                    match self.resolve(*id) {
                                        None => unknown += 1,
                                        Some(None) => dropped += 1,
                                        Some(Some(series)) => {
                                            newest = newest.max(b.timestamp_ms);
                                            per[(*id % n) as usize].push_sample(SampleItem {
                                                series,
                                                t: b.timestamp_ms,
                                                v: *v,
                                            });
                                        }
                                    }
                                }
                            }
                        }
                        Kind::Logs => {
                            let rec = *rec;
                            for l in rec.logs {
                                match self.resolve(l.stream_id) {
                                    None => unknown += 1,
                                    Some(None) => dropped += 1,
                                    Some(Some(stream)) => {
                                        newest = newest.max(l.timestamp_ns / 1_000_000);
                                        per[(l.stream_id % n) as usize].push_log(LogItem {
                                            stream,
                                            t_ns: l.timestamp_ns,
                                            line: l.line,
                                        });
                                    }
                                }
                            }
                        }
                    }
                    out.push(Read::Record {
                        start,
                        next,
                        bytes,
                        items: per,
                        newest_secs: if newest == i64::MIN {
                            0.0
                        } else {
                            newest as f64 / 1000.0
                        },
                        relabel_dropped: dropped,
                        unknown,
                    });
                }
            }
        }
        Ok((out, false))
    }
}

/// Follows a cumulative figure kept elsewhere into a counter.
fn follow(c: &Counter, to: u64) {
    let have = c.get();
    if to > have {
        c.inc_by(to - have);
    }
}

/// What a pipeline needs to run.
pub struct Pipeline {
    pub ep: Arc<Endpoint>,
    pub wal: Wal,
    pub hold: Arc<Hold>,
    /// Where reading starts when there is no saved cursor.
    pub start: Position,
    pub cursor_file: CursorFile,
    pub saved: Option<Saved>,
}

/// Identifies a shard layout: a restart reuses saved frontiers only for the
/// same shard count, relabeling and kind (else it resends from the
/// watermark).
fn fingerprint(ep: &Endpoint, shards: usize) -> u64 {
    let rules: Vec<_> = ep.relabel.iter().map(|r| r.config().clone()).collect();
    let text = format!(
        "{shards}|{:?}|{}",
        ep.kind,
        serde_json::to_string(&rules).unwrap_or_default()
    );
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

impl Pipeline {
    /// Runs until `stop`, then persists the cursor.
    pub async fn run(self, stop: CancellationToken) {
        let Pipeline {
            ep,
            wal,
            hold,
            start,
            cursor_file,
            saved,
        } = self;
        let q = ep.queue.clone();
        // a saved cursor for this layout: its frontiers and in-flight
        // requests; else everything from the watermark
        let (start, n, frontiers) = match saved {
            Some(s)
                if (q.min_shards..=q.max_shards).contains(&s.frontiers.len())
                    && s.fingerprint == fingerprint(&ep, s.frontiers.len()) =>
            {
                let n = s.frontiers.len();
                (s.watermark, n, s.frontiers)
            }
            Some(s) => {
                let at = ItemPos {
                    record: s.watermark,
                    index: 0,
                };
                let f = Frontier {
                    at,
                    inflight_end: at,
                };
                (s.watermark, q.min_shards, vec![f; q.min_shards])
            }
            None => {
                let at = ItemPos {
                    record: start,
                    index: 0,
                };
                let f = Frontier {
                    at,
                    inflight_end: at,
                };
                (start, q.min_shards, vec![f; q.min_shards])
            }
        };
        hold.set_needed(start.segment);
        let dir = wal.dir().to_path_buf();
        let (d, dur, h) = (dir.clone(), wal.durable(), hold.clone());
        let reader = match tokio::task::spawn_blocking(move || {
            Reader::open(&d, dur, Some(h), start)
        })
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!(endpoint = %ep.name, error = %e, "cannot open the WAL; this endpoint does not forward");
                return;
            }
            Err(_) => return,
        };
        let mut state = Some(ReadState {
            reader,
            cache: HashMap::with_hasher(IdHash),
            relabel: ep.relabel.clone(),
            kind: ep.kind,
            shards: n,
        });
        let (durable_tx, durable_rx) = watch::channel(0u64);
        let sh = Arc::new(Shared {
            ep: ep.clone(),
            tracker: Mutex::new(Tracker::new(start, fingerprint(&ep, n), frontiers.clone())),
            interval: Mutex::new(Interval::default()),
            stop: stop.clone(),
            dirty: Notify::new(),
            durable: durable_rx,
        });
        let writer = tokio::spawn(write_cursor(
            sh.clone(),
            cursor_file,
            durable_tx,
            hold.clone(),
        ));
        // items a shard delivered before the restart are skipped once more
        let skip: Vec<ItemPos> = frontiers.iter().map(|f| f.at).collect();
        let skip_until = skip.iter().max().copied().unwrap_or_default();
        let cuts = frontiers
            .iter()
            .map(|f| (f.inflight_end > f.at).then_some(f.inflight_end))
            .collect();
        let mut shards = spawn_shards(&sh, n, cuts);
        ep.metrics.shards.set(shards.len() as i64);
        ep.metrics.shards_desired.set(shards.len() as i64);
        let mut durable = wal.durable();
        let mut last_tick = Instant::now();
        let mut last_reshard = Instant::now();
        let mut read_pos = start;
        let (mut bytes_read, mut items_read) = (0u64, 0u64);
        let mut backlog_before = bytes_between(&dir, start, *durable.borrow());
        let dropped_relabel = ep.metrics.dropped("relabel");
        let dropped_unknown = ep.metrics.dropped("unknown_series");
        let dropped_budget = ep.metrics.dropped("wal_budget");
        'read: loop {
            if stop.is_cancelled() {
                break;
            }
            // read on the blocking pool
            let Some(mut st) = state.take() else { break };
            let (st, res) = match tokio::task::spawn_blocking(move || {
                let r = st.read();
                (st, r)
            })
            .await
            {
                Ok(x) => x,
                Err(_) => break,
            };
            state = Some(st);
            let (reads, idle) = match res {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(endpoint = %ep.name, error = %e, "WAL read failed; retrying in 1s");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            };
            for r in reads {
                match r {
                    Read::Gap(from, to) => {
                        tracing::warn!(endpoint = %ep.name, ?from, ?to, "WAL segments gone before this endpoint read them (past forward_wal_max_bytes, or lost)");
                        sh.tracker.lock().skip_to(to);
                        read_pos = to;
                    }
                    Read::Corrupt(at, reason, next) => {
                        tracing::error!(endpoint = %ep.name, ?at, %reason, "damaged WAL record; the rest of the segment is skipped");
                        sh.tracker.lock().skip_to(next);
                        read_pos = next;
                    }
                    Read::Record {
                        start,
                        next,
                        bytes,
                        items,
                        newest_secs,
                        relabel_dropped,
                        unknown,
                    } => {
                        dropped_relabel.inc_by(relabel_dropped);
                        dropped_unknown.inc_by(unknown);
                        if unknown > 0 {
                            tracing::warn!(endpoint = %ep.name, items = unknown, "WAL items of a series without definition: dropped");
                        }
                        bytes_read += bytes;
                        read_pos = next;
                        super::telemetry::EndpointMetrics::raise(
                            &ep.metrics.highest_in,
                            newest_secs,
                        );
                        // per shard, in record order, minus what was
                        // delivered before a restart
                        let n = shards.len();
                        let mut parts = items;
                        let mut firsts = vec![0u64; n];
                        if start <= skip_until.record {
                            for (i, part) in parts.iter_mut().enumerate() {
                                let Some(s) = skip.get(i) else { continue };
                                let k = if start < s.record {
                                    part.len()
                                } else if start == s.record {
                                    (s.index as usize).min(part.len())
                                } else {
                                    0
                                };
                                if k > 0 {
                                    let p = std::mem::replace(part, Items::empty(ep.kind));
                                    let mut halves = p.split_at(k);
                                    *part = halves.pop().unwrap_or_else(|| Items::empty(ep.kind));
                                    firsts[i] = k as u64;
                                }
                            }
                        }
                        let total: usize = parts.iter().map(Items::len).sum();
                        items_read += total as u64;
                        let no = {
                            let mut t = sh.tracker.lock();
                            let no = t.read(start, next, total);
                            ep.metrics.pending.set(t.pending() as i64);
                            no
                        };
                        for (i, its) in parts.into_iter().enumerate() {
                            let mut first = firsts[i];
                            for part in its.split(q.capacity) {
                                if part.is_empty() {
                                    continue;
                                }
                                let len = part.len();
                                let ok = tokio::select! {
                                    _ = stop.cancelled() => false,
                                    p = shards[i].room.acquire_many(len as u32) => match p {
                                        Ok(p) => { p.forget(); true }
                                        Err(_) => false,
                                    },
                                };
                                if !ok {
                                    break 'read;
                                }
                                let _ = shards[i].tx.send(Chunk {
                                    record: no,
                                    start,
                                    first,
                                    items: part,
                                });
                                first += len as u64;
                            }
                        }
                    }
                }
            }
            if last_tick.elapsed() >= CURSOR_EVERY {
                let dropped = match ep.kind {
                    Kind::Samples => hold
                        .dropped_samples
                        .load(std::sync::atomic::Ordering::Relaxed),
                    Kind::Logs => hold
                        .dropped_log_records
                        .load(std::sync::atomic::Ordering::Relaxed),
                };
                follow(&dropped_budget, dropped);
                last_tick = Instant::now();
            }
            // the shard count
            if last_reshard.elapsed() >= RESHARD_EVERY {
                let backlog = bytes_between(&dir, read_pos, *durable.borrow());
                ep.metrics.backlog_bytes.set(backlog as i64);
                let iv = std::mem::take(&mut *sh.interval.lock());
                let inputs = ShardInputs {
                    interval_secs: last_reshard.elapsed().as_secs_f64(),
                    items_out: iv.items_out,
                    send_secs: iv.send_secs,
                    failures: iv.failures,
                    bytes_read,
                    items_read,
                    backlog_bytes: backlog,
                    backlog_bytes_before: backlog_before,
                };
                let want = desired_shards(shards.len(), q.min_shards, q.max_shards, inputs);
                ep.metrics.shards_desired.set(want as i64);
                if want != shards.len() {
                    tracing::info!(endpoint = %ep.name, from = shards.len(), to = want, backlog_bytes = backlog, "resharding");
                    drain(std::mem::take(&mut shards)).await;
                    if stop.is_cancelled() {
                        break;
                    }
                    // everything read is delivered: every shard starts here
                    let at = ItemPos {
                        record: read_pos,
                        index: 0,
                    };
                    {
                        let mut t = sh.tracker.lock();
                        t.frontiers = vec![
                            Frontier {
                                at,
                                inflight_end: at,
                            };
                            want
                        ];
                        t.fingerprint = fingerprint(&ep, want);
                        t.version += 1;
                    }
                    sh.dirty.notify_one();
                    shards = spawn_shards(&sh, want, Vec::new());
                    if let Some(st) = state.as_mut() {
                        st.shards = want;
                    }
                    ep.metrics.shards.set(shards.len() as i64);
                }
                backlog_before = backlog;
                bytes_read = 0;
                items_read = 0;
                last_reshard = Instant::now();
            }
            if idle {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = durable.changed() => {}
                    _ = tokio::time::sleep(CURSOR_EVERY) => {}
                }
            }
        }
        // stop: shards end (what they had stays in the WAL), then the cursor
        drain(shards).await;
        let mut file = match writer.await {
            Ok(f) => f,
            Err(_) => return,
        };
        let snap = sh.tracker.lock().snapshot();
        if let Err(e) = file.save(&snap) {
            tracing::warn!(endpoint = %ep.name, error = %e, "cannot save the cursor at shutdown");
        }
        hold.set_needed(snap.watermark.segment);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> ShardInputs {
        ShardInputs {
            interval_secs: 10.0,
            items_out: 10_000,
            send_secs: 10.0,
            failures: false,
            bytes_read: 100_000,
            items_read: 10_000,
            backlog_bytes: 0,
            backlog_bytes_before: 0,
        }
    }

    #[test]
    fn shards_follow_the_backlog() {
        // 1 ms per item, 1,000 items/s arriving: one shard is busy all the time
        let i = inputs();
        assert_eq!(desired_shards(1, 1, 50, i), 2, "20% headroom");
        assert_eq!(desired_shards(2, 1, 50, i), 2);
        // a backlog of 600,000 items (6 MB) to drain in a minute: 10,000/s more
        let b = ShardInputs {
            backlog_bytes: 6_000_000,
            backlog_bytes_before: 6_000_000,
            ..i
        };
        assert_eq!(desired_shards(2, 1, 50, b), 14);
        assert_eq!(desired_shards(2, 1, 8, b), 8, "capped by max_shards");
        // a failing receiver does not get more shards
        let f = ShardInputs {
            failures: true,
            ..b
        };
        assert_eq!(desired_shards(3, 1, 50, f), 3);
        // within 30%: no change
        assert_eq!(desired_shards(12, 1, 50, b), 12);
        // idle, nothing behind: back to min
        let idle = ShardInputs {
            items_out: 0,
            items_read: 0,
            bytes_read: 0,
            send_secs: 0.0,
            ..i
        };
        assert_eq!(desired_shards(7, 2, 50, idle), 2);
        // no measurement yet but a backlog: keep
        let unknown = ShardInputs {
            backlog_bytes: 10,
            ..idle
        };
        assert_eq!(desired_shards(7, 2, 50, unknown), 7);
    }
}
