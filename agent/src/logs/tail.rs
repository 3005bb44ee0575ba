//! The tailer's synchronous core: which files are read, from where, and when
//! they are rotated, truncated, released and forgotten. One [`Core::step`]
//! reads a bounded amount and returns batches; the async loop in `mod.rs`
//! hands them to the shipper and feeds acknowledgements back in.
//!
//! Rotation, by what is seen at the live path and next to it (its
//! "siblings": `<name>.<suffix>`, `<name>-<suffix>`, `….gz`):
//! - rename-and-create: the old file keeps its identity (device, inode,
//!   head fingerprint) and is read on through its handle until it has been
//!   quiet for [`LINGER`]; the new one is a new source read from 0;
//! - kubelet's `0.log` → `0.log.<ts>` → `.gz`: the handle keeps the renamed
//!   file readable after it is compressed and removed; a `.gz` whose head
//!   matches a known file is that file (skipped, or read from its
//!   checkpoint after a restart);
//! - a sibling nobody has seen (rotated twice between two reads, or while
//!   the agent was down) is read from its start;
//! - truncation (size below our position, or a different head): the unread
//!   rest is taken from a copy with the same head if one exists
//!   (copytruncate), then the file is a new source from 0;
//! - deletion: read to the end, then released.
//!
//! Why about 830 lines: every rotation case reads and writes the same per-
//! source state (identity, position, linger, acknowledgements), and the cases
//! are only safe together (one state machine over one table of open
//! sources); discovery, parsing, reassembly and checkpoints are in their own
//! files.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::checkpoint::{Checkpoints, Position};
use super::discovery::{Discovery, SourceMeta};
use super::identity::{self, Fingerprint, fingerprint};
use super::metrics::{LogMetrics, RotationKind};
use super::source::{Read1, Sink, Source, State};
use crate::ship::{LogAck, LogRecord, SourceKey};

/// A rotated or deleted file is released after this long without new bytes.
pub const LINGER: Duration = Duration::from_millis(1000);
/// An unfinished message (a stream printed without a newline) may keep the
/// other stream's complete lines waiting this long, then goes out as it is.
pub const HOLD_PARTIAL: Duration = Duration::from_millis(1000);
/// Full rescans at least this often (inotify only brings them forward).
pub const RESCAN: Duration = Duration::from_millis(1000);
/// A new file without a complete first line is looked at again this soon.
const RETRY_FP: Duration = Duration::from_millis(50);
/// Checkpoints are written at most this often (and at shutdown).
const SAVE_EVERY: Duration = Duration::from_millis(1000);
/// Bytes one step reads at most (about what it hands over: what it holds
/// in memory is bounded by this and the shipper's channel), and the size of
/// one batch (messages plus [`super::source::ENTRY_OVERHEAD`] per entry).
pub const STEP_BYTES: usize = 1 << 20;
pub const BATCH_BYTES: usize = 1 << 20;
/// An idle live file is closed (when others wait for a slot) after this long.
const PARK_AFTER: Duration = Duration::from_secs(5);

/// Tailer settings the core uses.
#[derive(Clone, Debug)]
pub struct Opts {
    pub max_line_bytes: usize,
    pub max_open_files: usize,
    pub read_from_start: bool,
}

/// What one step produced.
#[derive(Default)]
pub struct StepOut {
    pub batches: Vec<Vec<LogRecord>>,
    /// Nothing was read: wait for a wake-up before the next step.
    pub idle: bool,
    /// Folders to watch (the async side skips those it already watches).
    pub dirs: Vec<PathBuf>,
}

/// One file found by a rescan, live or sibling.
struct Found {
    path: PathBuf,
    group: String,
    meta: Arc<SourceMeta>,
    live: bool,
    gz: bool,
    dev: u64,
    ino: u64,
    size: u64,
    fp: Option<Fingerprint>,
}

pub struct Core {
    opts: Opts,
    discovery: Discovery,
    pub ckpt: Checkpoints,
    pub sources: Vec<Source>,
    metrics: Arc<LogMetrics>,
    first_start: bool,
    scans: u64,
    next_rescan: Instant,
    last_save: Instant,
    rr: usize,
    /// Head fingerprints by (dev, ino, size, mtime), so unchanged siblings
    /// are not re-read every rescan.
    fp_cache: HashMap<(u64, u64, u64, i64), Fingerprint>,
    out: Vec<LogRecord>,
    out_bytes: usize,
    batches: Vec<Vec<LogRecord>>,
}

impl Core {
    pub fn new(
        opts: Opts,
        discovery: Discovery,
        ckpt: Checkpoints,
        first_start: bool,
        metrics: Arc<LogMetrics>,
    ) -> Self {
        Core {
            opts,
            discovery,
            ckpt,
            sources: Vec::new(),
            metrics,
            first_start,
            scans: 0,
            next_rescan: Instant::now(),
            last_save: Instant::now(),
            rr: 0,
            fp_cache: HashMap::new(),
            out: Vec::new(),
            out_bytes: 0,
            batches: Vec::new(),
        }
    }

    /// Brings the next rescan forward (a folder changed).
    pub fn hint_rescan(&mut self) {
        self.next_rescan = Instant::now();
    }

    /// Reads what there is (bounded), checks rotations, releases finished
    /// files. `woken`: something may have changed (re-read files at EOF).
    pub fn step(&mut self, woken: bool) -> StepOut {
        let now = Instant::now();
        let mut out = StepOut::default();
        if now >= self.next_rescan {
            out.dirs = self.rescan();
        }
        if woken {
            for s in &mut self.sources {
                s.at_eof = false;
            }
        }
        let mut read = 0usize;
        let n = self.sources.len();
        loop {
            let mut progressed = false;
            for k in 0..n {
                let i = (self.rr + k) % n;
                if read >= STEP_BYTES {
                    break;
                }
                let s = &mut self.sources[i];
                if !s.is_open() || s.at_eof {
                    continue;
                }
                let mut sink = Sink {
                    entries: &mut self.out,
                    bytes: &mut self.out_bytes,
                };
                match s.read_chunk(&mut sink) {
                    Ok(Read1::Data(m)) => {
                        read += m;
                        progressed = true;
                    }
                    Ok(Read1::Eof) => {}
                    Ok(Read1::Truncated) => self.on_truncated(i),
                    Err(e) => {
                        self.metrics.read_errors.fetch_add(1, Relaxed);
                        tracing::warn!(path = %s.path.display(), error = %e, "log read failed; releasing the file");
                        s.finish(&mut sink);
                    }
                }
                self.cut_batch(false);
            }
            if !progressed || read >= STEP_BYTES {
                break;
            }
        }
        self.rr = self.rr.wrapping_add(1);
        self.check_eof(now);
        self.cut_batch(true);
        self.flush_metrics();
        self.maybe_save(false);
        out.batches = std::mem::take(&mut self.batches);
        out.idle = read == 0;
        out
    }

    fn cut_batch(&mut self, all: bool) {
        if self.out_bytes >= BATCH_BYTES || (all && !self.out.is_empty()) {
            self.batches.push(std::mem::take(&mut self.out));
            self.out_bytes = 0;
        }
    }

    /// Looks at files that reached their end: truncated, deleted, quiet
    /// enough to release, finished and fully acknowledged.
    fn check_eof(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.sources.len() {
            let s = &mut self.sources[i];
            if s.at_eof
                && s.state == State::Live
                && let super::source::Input::File(f) = &s.input
                && let Ok(m) = f.metadata()
            {
                if m.len() < s.pos {
                    self.on_truncated(i);
                } else if m.nlink() == 0 {
                    s.state = State::Rotated;
                    self.metrics.rotation(RotationKind::Delete);
                    self.next_rescan = now;
                }
            }
            let s = &mut self.sources[i];
            if s.at_eof && s.state != State::Finished {
                let mut sink = Sink {
                    entries: &mut self.out,
                    bytes: &mut self.out_bytes,
                };
                s.flush_blocked(&mut sink, HOLD_PARTIAL);
            }
            if s.at_eof && s.state == State::Rotated && s.last_data.elapsed() >= LINGER {
                let mut sink = Sink {
                    entries: &mut self.out,
                    bytes: &mut self.out_bytes,
                };
                s.finish(&mut sink);
            }
            let s = &self.sources[i];
            if s.state == State::Finished && s.acked >= s.emitted_end {
                if let Some(p) = self.ckpt.records.get_mut(&s.key) {
                    p.done = true;
                    p.offset = p.offset.max(s.acked);
                    self.ckpt.mark_dirty();
                }
                let s = self.sources.swap_remove(i);
                self.metrics.add_lines(&s.meta.identity, &s.counts);
                continue;
            }
            i += 1;
        }
    }

    /// A live file lost its content: drain the rest from a copy if there is
    /// one (copytruncate), else hand over what is held and let the rescan
    /// start the new content as a new source.
    fn on_truncated(&mut self, i: usize) {
        let s = &mut self.sources[i];
        let copy = find_copy(&self.discovery.real_path(&s.key.path), s);
        match copy {
            Some((f, path)) => {
                tracing::info!(path = %s.key.path, copy = %path.display(), offset = s.pos, "log truncated; reading the rest from its copy");
                self.metrics.rotation(RotationKind::CopyTruncate);
                s.switch_to_copy(f, &path);
            }
            None => {
                tracing::info!(path = %s.key.path, offset = s.pos, "log truncated");
                self.metrics.rotation(RotationKind::Truncate);
                let mut sink = Sink {
                    entries: &mut self.out,
                    bytes: &mut self.out_bytes,
                };
                s.finish(&mut sink);
            }
        }
        self.next_rescan = Instant::now();
    }

    /// Acknowledgements from the shipper: raise the checkpoints.
    pub fn apply_acks(&mut self, acks: Vec<LogAck>) {
        let index: HashMap<&SourceKey, usize> = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| (&*s.key, i))
            .collect();
        let mut updates = Vec::with_capacity(acks.len());
        for a in acks {
            match index.get(&a.source) {
                Some(&i) => updates.push((Some(i), a)),
                None => updates.push((None, a)),
            }
        }
        for (i, a) in updates {
            let mut marks = [0u64; 2];
            if let Some(i) = i {
                let s = &mut self.sources[i];
                if a.end_offset <= s.acked {
                    continue;
                }
                s.acked = a.end_offset;
                while let Some(&(e, m)) = s.skips.front() {
                    if e > a.end_offset {
                        break;
                    }
                    s.skips.pop_front();
                    if e == a.end_offset {
                        marks = m;
                    }
                }
            }
            self.ckpt.ack(&a.source, a.end_offset, marks);
        }
        let unacked: u64 = self
            .sources
            .iter()
            .map(|s| s.emitted_end.saturating_sub(s.acked))
            .sum();
        self.metrics.unacked_bytes.store(unacked as i64, Relaxed);
    }

    /// Writes checkpoints if they changed (at most every [`SAVE_EVERY`]
    /// unless `force`).
    pub fn maybe_save(&mut self, force: bool) {
        if !self.ckpt.is_dirty() || (!force && self.last_save.elapsed() < SAVE_EVERY) {
            return;
        }
        self.last_save = Instant::now();
        match self.ckpt.save() {
            Ok(()) => {
                self.metrics.checkpoint_writes.fetch_add(1, Relaxed);
            }
            Err(e) => {
                self.metrics.checkpoint_errors.fetch_add(1, Relaxed);
                tracing::error!(error = %e, "cannot write log checkpoints");
            }
        }
    }

    fn flush_metrics(&mut self) {
        let m = &self.metrics;
        let mut open = 0;
        for s in &mut self.sources {
            if s.is_open() {
                open += 1;
            }
            m.add_lines(&s.meta.identity, &s.counts);
            s.counts = Default::default();
            let t = std::mem::take(&mut s.tally);
            m.read_bytes.fetch_add(t.read_bytes, Relaxed);
            m.truncated_lines.fetch_add(t.truncated, Relaxed);
            m.invalid_utf8_lines.fetch_add(t.invalid_utf8, Relaxed);
            m.garbage_lines.fetch_add(t.garbage, Relaxed);
            m.forced_partials
                .fetch_add(s.take_forced_partials(), Relaxed);
        }
        m.files_open.store(open, Relaxed);
    }

    fn open_count(&self) -> usize {
        self.sources.iter().filter(|s| s.is_open()).count()
    }

    /// Finds files, notices rotations, opens what should be read.
    fn rescan(&mut self) -> Vec<PathBuf> {
        let first_scan = self.scans == 0;
        self.scans += 1;
        self.next_rescan = Instant::now() + RESCAN;
        let scan = self.discovery.scan();
        for e in &scan.errors {
            tracing::debug!(error = %e, "log discovery");
        }
        let mut found = self.find_files(&scan.files);
        if found.iter().any(|f| f.fp.is_none()) {
            self.next_rescan = Instant::now() + RETRY_FP;
        }
        found.retain(|f| f.fp.is_some());

        // Live sources whose path now holds something else, or nothing.
        let live_at: HashMap<&str, (u64, u64)> = found
            .iter()
            .filter(|f| f.live)
            .map(|f| (f.group.as_str(), (f.dev, f.ino)))
            .collect();
        for s in &mut self.sources {
            if s.state != State::Live {
                continue;
            }
            let here = live_at.get(s.key.path.as_str());
            if here == Some(&(s.key.device, s.key.inode)) {
                continue;
            }
            let moved = found
                .iter()
                .find(|f| !f.live && !f.gz && (f.dev, f.ino) == (s.key.device, s.key.inode));
            let kind = match moved {
                Some(f) => {
                    s.path = f.path.clone();
                    RotationKind::Rename
                }
                None => RotationKind::Delete,
            };
            tracing::debug!(path = %s.key.path, ?kind, "log rotated");
            self.metrics.rotation(kind);
            s.state = State::Rotated;
            s.at_eof = false;
        }

        // Decide, for every file, whether it is being read, should be, or is
        // known and finished.
        let by_file: HashSet<(u64, u64, u64)> = self
            .sources
            .iter()
            .map(|s| (s.key.device, s.key.inode, s.fp.hash))
            .collect();
        let by_fp: HashSet<(&str, u64)> = self
            .sources
            .iter()
            .map(|s| (s.key.path.as_str(), s.fp.hash))
            .collect();
        let rec_by_fp: HashMap<(&str, u64), &SourceKey> = self
            .ckpt
            .records
            .keys()
            .map(|k| ((k.path.as_str(), k.fingerprint), k))
            .collect();
        let originals: HashSet<(u64, u64, u64)> = found
            .iter()
            .filter(|f| !f.gz)
            .filter_map(|f| f.fp.map(|fp| (f.dev, f.ino, fp.hash)))
            .collect();
        let at_first_start = first_scan && self.first_start;
        let mut plans: Vec<Plan<'_>> = Vec::new();
        let mut done_now: Vec<SourceKey> = Vec::new();
        let mut history: Vec<(SourceKey, u64)> = Vec::new();
        // A file nobody has seen may show up twice in one scan: as itself
        // and as its .gz (between the compressor's rename and its removal of
        // the original), or as a live file and the copy copytruncate made
        // before truncating it. One of them is read: the live file, else a
        // plain one, else the .gz.
        let mut order: Vec<&Found> = found.iter().collect();
        order.sort_by_key(|f| (!f.live, f.gz));
        for f in order {
            let Some(fp) = f.fp else { continue };
            if (!f.gz && by_file.contains(&(f.dev, f.ino, fp.hash)))
                || by_fp.contains(&(f.group.as_str(), fp.hash))
            {
                continue; // being read (the file itself, its .gz or its copy)
            }
            if plans
                .iter()
                .any(|p| p.f.group == f.group && p.fp.hash == fp.hash)
            {
                continue; // the same file under another name is planned
            }
            let exact = SourceKey {
                path: f.group.clone(),
                device: f.dev,
                inode: f.ino,
                fingerprint: fp.hash,
            };
            let known = if self.ckpt.records.contains_key(&exact) {
                Some(exact.clone())
            } else {
                rec_by_fp
                    .get(&(f.group.as_str(), fp.hash))
                    .map(|k| (*k).clone())
            };
            match known {
                Some(k) => {
                    let Some(p) = self.ckpt.records.get(&k) else {
                        continue;
                    };
                    let own_file = k == exact;
                    if !own_file {
                        // A .gz or copy of a known file: of use only when the
                        // file itself is gone and was not finished.
                        if p.done || originals.contains(&(k.device, k.inode, k.fingerprint)) {
                            continue;
                        }
                    } else if p.done && !f.live {
                        continue;
                    }
                    let idle = !f.gz && f.size <= p.offset;
                    if idle && !f.live {
                        if !p.done {
                            done_now.push(k); // a rotated file read to its end
                        }
                        continue;
                    }
                    let state = if f.live && own_file {
                        State::Live
                    } else {
                        State::Rotated
                    };
                    plans.push(Plan {
                        f,
                        fp,
                        pos: p.clone(),
                        key: k,
                        state,
                        missed: false,
                        idle,
                    });
                }
                None if f.live => {
                    let offset = if at_first_start && !self.opts.read_from_start {
                        line_end_before(&f.path, f.size)
                    } else {
                        0
                    };
                    plans.push(Plan {
                        f,
                        fp,
                        pos: pos_at(offset),
                        key: exact,
                        state: State::Live,
                        missed: false,
                        idle: false,
                    });
                }
                // History that predates the agent: remember it, skip it.
                None if at_first_start => history.push((exact, f.size)),
                None => plans.push(Plan {
                    f,
                    fp,
                    pos: pos_at(0),
                    key: exact,
                    state: State::Rotated,
                    missed: true,
                    idle: false,
                }),
            }
        }
        for k in done_now {
            if let Some(p) = self.ckpt.records.get_mut(&k) {
                p.done = true;
                self.ckpt.mark_dirty();
            }
        }
        for (k, size) in history {
            self.ckpt.records.insert(
                k,
                Position {
                    offset: size,
                    skip_until: [0; 2],
                    done: true,
                },
            );
            self.ckpt.mark_dirty();
        }
        // Files with something to read get open slots first.
        plans.sort_by_key(|p| p.idle);
        let mut open = self.open_count();
        let mut waiting = 0i64;
        for plan in plans {
            if !self.ckpt.records.contains_key(&plan.key) {
                self.ckpt.records.insert(plan.key.clone(), plan.pos.clone());
                self.ckpt.mark_dirty();
            }
            if open >= self.opts.max_open_files {
                if !plan.idle {
                    waiting += 1;
                }
                continue;
            }
            let f = plan.f;
            if plan.missed {
                tracing::info!(path = %f.path.display(), "log rotation missed between reads; reading the rotated file from its start");
                self.metrics.rotation(RotationKind::Missed);
            }
            let mut s = Source::new(
                plan.key,
                f.meta.clone(),
                f.path.clone(),
                plan.fp,
                plan.state,
                plan.pos.offset,
                plan.pos.skip_until,
                self.opts.max_line_bytes,
            );
            let opened = if f.gz {
                s.open_gz(&f.path)
            } else {
                File::open(&f.path).map(|h| s.open_file(h, &f.path))
            };
            match opened {
                Ok(()) => {
                    open += 1;
                    self.sources.push(s);
                }
                Err(e) => {
                    self.metrics.read_errors.fetch_add(1, Relaxed);
                    tracing::debug!(path = %f.path.display(), error = %e, "cannot open log file");
                }
            }
        }

        // Records nobody reads and no file matches: forget them (a record
        // with unread data is a file lost while we were not looking).
        let mut present: HashSet<(&str, u64)> = HashSet::new();
        for f in &found {
            if let Some(fp) = f.fp {
                present.insert((f.group.as_str(), fp.hash));
            }
        }
        let active: HashSet<&SourceKey> = self.sources.iter().map(|s| &*s.key).collect();
        let mut lost = 0u64;
        let before = self.ckpt.records.len();
        self.ckpt.records.retain(|k, p| {
            let keep = active.contains(k) || present.contains(&(k.path.as_str(), k.fingerprint));
            if !keep && !p.done {
                tracing::warn!(path = %k.path, inode = k.inode, offset = p.offset, "log file gone before it was read to its end");
                lost += 1;
            }
            keep
        });
        if lost > 0 {
            self.metrics.lost_files.fetch_add(lost, Relaxed);
        }
        if self.ckpt.records.len() != before {
            self.ckpt.mark_dirty();
        }
        self.metrics.files_waiting.store(waiting, Relaxed);
        if waiting > 0 {
            self.park_idle();
        }
        if first_scan {
            // The first start's choices (start at the end, skipped history)
            // must survive a crash before the first acknowledgement.
            self.maybe_save(true);
        }
        scan.dirs
    }

    /// Closes idle, fully acknowledged live files so waiting ones get a slot;
    /// their checkpoint brings them back when they grow.
    fn park_idle(&mut self) {
        let mut i = 0;
        while i < self.sources.len() {
            let s = &self.sources[i];
            if s.state == State::Live
                && s.at_eof
                && s.is_quiescent()
                && s.acked >= s.emitted_end
                && s.emitted_end == s.pos
                && s.last_data.elapsed() >= PARK_AFTER
            {
                let s = self.sources.swap_remove(i);
                self.metrics.add_lines(&s.meta.identity, &s.counts);
                continue;
            }
            i += 1;
        }
    }

    /// Stats the candidates and their siblings and fingerprints them.
    fn find_files(&mut self, candidates: &[super::discovery::Candidate]) -> Vec<Found> {
        let mut found = Vec::new();
        let mut by_dir: HashMap<PathBuf, Vec<&super::discovery::Candidate>> = HashMap::new();
        for c in candidates {
            if let Some(d) = c.path.parent() {
                by_dir.entry(d.to_path_buf()).or_default().push(c);
            }
        }
        let mut seen_ids = HashSet::new();
        for (dir, cands) in by_dir {
            let names: Vec<String> = cands
                .iter()
                .filter_map(|c| c.path.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            // A candidate that is a sibling of another (a glob like `app.log*`)
            // is treated as that one's rotation.
            let is_sibling_of = |name: &str| -> Option<usize> {
                names.iter().position(|live| {
                    live != name
                        && name.len() > live.len() + 1
                        && name.starts_with(live.as_str())
                        && matches!(name.as_bytes()[live.len()], b'.' | b'-')
                })
            };
            let mut lives = Vec::new();
            for (c, name) in cands.iter().zip(&names) {
                if is_sibling_of(name).is_none() {
                    lives.push((*c, name.clone()));
                }
            }
            for (c, _) in &lives {
                if let Some(f) = self.found(&c.path, c, true, &mut seen_ids) {
                    found.push(f);
                }
            }
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tmp") {
                    continue;
                }
                let Some((c, _)) = lives.iter().find(|(_, live)| {
                    name.len() > live.len() + 1
                        && name.starts_with(live.as_str())
                        && matches!(name.as_bytes()[live.len()], b'.' | b'-')
                }) else {
                    continue;
                };
                if let Some(f) = self.found(&e.path(), c, false, &mut seen_ids) {
                    found.push(f);
                }
            }
        }
        found
    }

    fn found(
        &mut self,
        path: &Path,
        c: &super::discovery::Candidate,
        live: bool,
        seen_ids: &mut HashSet<(u64, u64)>,
    ) -> Option<Found> {
        let m = std::fs::metadata(path).ok()?;
        if !m.is_file() || !seen_ids.insert((m.dev(), m.ino())) {
            return None;
        }
        let gz = identity::is_gz(path);
        let (dev, ino) = identity::dev_ino(&m);
        let fp = match self
            .sources
            .iter()
            .find(|s| !gz && s.file_id == Some((dev, ino)))
        {
            // Trust the reader's own check of the head for files being read.
            Some(s) => Some(s.fp),
            None => {
                let ck = (
                    dev,
                    ino,
                    m.len(),
                    m.mtime_nsec() + m.mtime() * 1_000_000_000,
                );
                match self.fp_cache.get(&ck) {
                    Some(fp) => Some(*fp),
                    None => {
                        let head = if gz {
                            identity::read_gz_head(path).ok()?
                        } else {
                            identity::read_head(&File::open(path).ok()?).ok()?
                        };
                        let fp = fingerprint(&head);
                        if let Some(fp) = fp {
                            if self.fp_cache.len() > 65_536 {
                                self.fp_cache.clear();
                            }
                            self.fp_cache.insert(ck, fp);
                        }
                        fp
                    }
                }
            }
        };
        Some(Found {
            path: path.to_path_buf(),
            group: c.host_path.clone(),
            meta: c.meta.clone(),
            live,
            gz,
            dev,
            ino,
            size: m.len(),
            fp,
        })
    }
}

/// A file the rescan decided to open.
struct Plan<'a> {
    f: &'a Found,
    fp: Fingerprint,
    key: SourceKey,
    pos: Position,
    state: State,
    /// A rotation nobody saw: read from its start.
    missed: bool,
    /// Nothing to read yet (opened only if slots are left).
    idle: bool,
}

fn pos_at(offset: u64) -> Position {
    Position {
        offset,
        skip_until: [0; 2],
        done: false,
    }
}

/// The offset just after the last `\n` in the file's last 64 KiB (where
/// reading "from the end" starts without cutting a line), else its size.
fn line_end_before(path: &Path, size: u64) -> u64 {
    const TAIL: u64 = 64 << 10;
    let Ok(f) = File::open(path) else { return size };
    let from = size.saturating_sub(TAIL);
    let mut buf = vec![0u8; (size - from) as usize];
    match f.read_exact_at(&mut buf, from) {
        Ok(()) => memchr::memrchr(b'\n', &buf).map_or(size, |i| from + i as u64 + 1),
        Err(_) => size,
    }
}

/// A file next to `live` (not gzip'd, another inode) with the same head as
/// `s` and more bytes than `s` has read: the copy copytruncate made.
fn find_copy(live: &Path, s: &Source) -> Option<(File, PathBuf)> {
    let dir = live.parent()?;
    let name = live.file_name()?.to_string_lossy().into_owned();
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.len() <= name.len() + 1
            || !n.starts_with(&name)
            || !matches!(n.as_bytes()[name.len()], b'.' | b'-')
            || n.ends_with(".gz")
            || n.ends_with(".tmp")
        {
            continue;
        }
        let path = e.path();
        let Ok(f) = File::open(&path) else { continue };
        let Ok(m) = f.metadata() else { continue };
        if (m.dev(), m.ino()) == (s.key.device, s.key.inode) || m.len() <= s.pos {
            continue;
        }
        if identity::head_matches(&f, s.fp).unwrap_or(false) {
            return Some((f, path));
        }
    }
    None
}
