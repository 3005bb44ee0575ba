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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use vigil_common::Labels;
use vigil_common::relabel;

use super::cursor::{self, Tracker};
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

/// Items of one record for one shard.
struct Chunk {
    record: u64,
    items: Items,
    room: OwnedSemaphorePermit,
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
}

struct Shard {
    tx: mpsc::UnboundedSender<Chunk>,
    room: Arc<Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn_shards(sh: &Arc<Shared>, n: usize) -> Vec<Shard> {
    (0..n)
        .map(|_| {
            let (tx, rx) = mpsc::unbounded_channel();
            let room = Arc::new(Semaphore::new(sh.ep.queue.capacity));
            let task = tokio::spawn(run_shard(sh.clone(), rx));
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

async fn run_shard(sh: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Chunk>) {
    let q = &sh.ep.queue;
    let max = q.max_samples_per_send;
    let mut batch = Items::empty(sh.ep.kind);
    let mut owed: Vec<(u64, usize)> = Vec::new();
    let mut rooms: Vec<OwnedSemaphorePermit> = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let flush = tokio::select! {
            biased;
            _ = sh.stop.cancelled() => return,
            c = rx.recv() => match c {
                Some(c) => {
                    if batch.is_empty() {
                        deadline = Some(tokio::time::Instant::now() + q.batch_send_deadline.as_std());
                    }
                    owed.push((c.record, c.items.len()));
                    batch.append(c.items);
                    rooms.push(c.room);
                    batch.len() >= max
                }
                None => {
                    if !batch.is_empty() {
                        deliver_all(&sh, &mut batch).await;
                        finish(&sh, &mut owed);
                    }
                    return;
                }
            },
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => true,
        };
        if flush {
            if !deliver_all(&sh, &mut batch).await {
                return;
            }
            finish(&sh, &mut owed);
            rooms.clear();
            deadline = None;
        }
    }
}

fn finish(sh: &Shared, owed: &mut Vec<(u64, usize)>) {
    let mut t = sh.tracker.lock();
    for (rec, n) in owed.drain(..) {
        t.done(rec, n);
    }
    sh.ep.metrics.pending.set(t.pending() as i64);
}

/// Sends `batch` in requests of at most `max_samples_per_send`; false when
/// stopped before it was all delivered or refused.
async fn deliver_all(sh: &Shared, batch: &mut Items) -> bool {
    let max = sh.ep.queue.max_samples_per_send;
    let all = std::mem::replace(batch, Items::empty(sh.ep.kind));
    for part in all.split(max) {
        if !deliver(sh, &part).await {
            return false;
        }
    }
    true
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
        /// (series id, items) per series.
        items: Vec<(u64, Items)>,
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
                    let mut per: HashMap<u64, Items, IdHash> = HashMap::with_hasher(IdHash);
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
                                            per.entry(*id)
                                                .or_insert_with(|| Items::empty(Kind::Samples))
                                                .push_sample(SampleItem {
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
                                        per.entry(l.stream_id)
                                            .or_insert_with(|| Items::empty(Kind::Logs))
                                            .push_log(LogItem {
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
                        items: per.into_iter().collect(),
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
    pub start: Position,
    pub cursor_file: PathBuf,
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
        } = self;
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
        });
        let sh = Arc::new(Shared {
            ep: ep.clone(),
            tracker: Mutex::new(Tracker::new(start)),
            interval: Mutex::new(Interval::default()),
            stop: stop.clone(),
        });
        let q = ep.queue.clone();
        let mut shards = spawn_shards(&sh, q.min_shards);
        ep.metrics.shards.set(shards.len() as i64);
        ep.metrics.shards_desired.set(shards.len() as i64);
        let mut durable = wal.durable();
        let mut saved = start;
        let mut last_save = Instant::now();
        let mut last_reshard = Instant::now();
        let mut read_pos = start;
        let (mut bytes_read, mut items_read) = (0u64, 0u64);
        let mut backlog_before = bytes_between(&dir, start, *durable.borrow());
        let dropped_relabel = ep.metrics.dropped("relabel");
        let dropped_unknown = ep.metrics.dropped("unknown_series");
        let dropped_budget = ep.metrics.dropped("wal_budget");
        loop {
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
                        let total: usize = items.iter().map(|(_, i)| i.len()).sum();
                        bytes_read += bytes;
                        items_read += total as u64;
                        read_pos = next;
                        super::telemetry::EndpointMetrics::raise(
                            &ep.metrics.highest_in,
                            newest_secs,
                        );
                        let no = {
                            let mut t = sh.tracker.lock();
                            let no = t.read(start, next, total);
                            ep.metrics.pending.set(t.pending() as i64);
                            no
                        };
                        // per shard, in record order
                        let n = shards.len();
                        let mut per_shard: Vec<Items> =
                            (0..n).map(|_| Items::empty(ep.kind)).collect();
                        for (id, its) in items {
                            per_shard[(id % n as u64) as usize].append(its);
                        }
                        for (i, its) in per_shard.into_iter().enumerate() {
                            for part in its.split(q.capacity) {
                                let room = tokio::select! {
                                    _ = stop.cancelled() => None,
                                    p = shards[i].room.clone().acquire_many_owned(part.len() as u32) => p.ok(),
                                };
                                let Some(room) = room else { break };
                                let _ = shards[i].tx.send(Chunk {
                                    record: no,
                                    items: part,
                                    room,
                                });
                            }
                        }
                    }
                }
            }
            // the cursor
            if last_save.elapsed() >= CURSOR_EVERY {
                let wm = sh.tracker.lock().watermark();
                if wm != saved {
                    match cursor::save(&cursor_file, wm) {
                        Ok(()) => {
                            saved = wm;
                            hold.set_needed(wm.segment);
                        }
                        Err(e) => {
                            tracing::warn!(endpoint = %ep.name, error = %e, "cannot save the cursor")
                        }
                    }
                }
                last_save = Instant::now();
                let dropped = match ep.kind {
                    Kind::Samples => hold
                        .dropped_samples
                        .load(std::sync::atomic::Ordering::Relaxed),
                    Kind::Logs => hold
                        .dropped_log_records
                        .load(std::sync::atomic::Ordering::Relaxed),
                };
                follow(&dropped_budget, dropped);
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
                    shards = spawn_shards(&sh, want);
                    ep.metrics.shards.set(shards.len() as i64);
                }
                backlog_before = backlog;
                bytes_read = 0;
                items_read = 0;
                last_reshard = Instant::now();
            }
            if idle {
                let wait = CURSOR_EVERY.min(RESHARD_EVERY);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = durable.changed() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        // stop: shards end (what they had stays in the WAL), then the cursor
        drain(shards).await;
        let wm = sh.tracker.lock().watermark();
        if wm != saved
            && let Err(e) = cursor::save(&cursor_file, wm)
        {
            tracing::warn!(endpoint = %ep.name, error = %e, "cannot save the cursor at shutdown");
        }
        hold.set_needed(wm.segment);
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
