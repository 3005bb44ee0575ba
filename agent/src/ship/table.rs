//! The agent's series table (protocol revision 2, see
//! `proto/vigil/v1/ingest.proto`): every label set the agent ships gets a
//! small dense ref (1, 2, 3, …) the first time it is seen and keeps it for as
//! long as the table lives — across batches, reconnects, agent restarts and
//! collectors — so a steady scrape ships refs and values only, and the disk
//! buffer holds no label strings after the first batch that used them.
//!
//! # On disk
//! `<state_dir>/buffer/series.tbl`: framed records (`vigil_common::framed`,
//! magic `VST1`, no prefix), each a `vigil.v1.SeriesDefs` holding the table's
//! epoch and the next consecutive definitions. New definitions are appended
//! before the batch that uses them is written to the buffer, so a buffered
//! batch never refers to a ref the file does not define (after a crash the
//! reader finds the file at least as far as the buffer). A torn tail is cut
//! like the buffer's; a buffered batch whose refs go past what survived is
//! dropped and counted by the caller.
//!
//! # Epochs
//! A table is named by a random epoch and kept across agent restarts (the
//! collectors still hold its definitions). The agent starts a new table (new
//! epoch, empty file) when the table grew well past the label sets still in
//! use (churn: pods come and go) or near the ref limit, and then only when
//! its disk buffer is empty and a new batch starts, so no batch ever refers
//! to a table that is gone.
//!
//! Not here: which refs a collector already holds (the client's, per stream),
//! log sources (local to each batch).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::path::{Path, PathBuf};

use prost::Message;
use vigil_common::framed;
use vigil_proto::v1 as pb;

use crate::model::TargetSeries;

const FORMAT: framed::Format = framed::Format {
    magic: Some(u32::from_le_bytes(*b"VST1")),
    prefix: 0,
    max_len: 64 << 20,
};
/// Refs stay below the collector's limit on refs (`MAX_REF`, 2^24): a table
/// this large starts over at the next chance (an empty buffer).
pub const MAX_REFS: u32 = 1 << 23;
/// Below this many refs a table is never rotated for churn.
const ROTATE_MIN: usize = 100_000;
/// How many seals make one round of the churn check.
const ROUND: u32 = 600;

/// Keys that are hashes already.
#[derive(Default)]
pub struct IdHasher(u64);
impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// What opening the table found.
#[derive(Debug, Default)]
pub struct Opened {
    /// Definitions read back from the file (0 for a new table).
    pub loaded: u32,
    /// A torn tail was cut.
    pub torn: bool,
}

pub struct SeriesTable {
    path: PathBuf,
    file: File,
    size: u64,
    epoch: u64,
    node: String,
    /// `defs[r - 1]` defines ref `r`; labels sorted by name, unique.
    defs: Vec<pb::SeriesDef>,
    /// Canonical labels' hash → ref; collisions go to `more`.
    index: IdMap<u32>,
    more: IdMap<Vec<u32>>,
    /// A scrape sample's (family, labels as given) hash → ref (verified on use).
    fast: IdMap<u32>,
    /// Application targets' series (`TargetSeries::id`) → ref.
    targets: IdMap<u32>,
    /// `defs[..persisted]` are in the file.
    persisted: usize,
    /// The round in which each ref was last used (churn check).
    last_used: Vec<u32>,
    round: u32,
    seals: u32,
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("series table {}: {e}", path.display()))
}

fn canonical_hash(labels: &[pb::Label]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for l in labels {
        h.update(l.name.as_bytes());
        h.update(&[0xff]);
        h.update(l.value.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}

impl SeriesTable {
    /// Opens the table in `dir`: read back when `keep` (the buffer still
    /// holds batches that use it), otherwise a new table with a new epoch.
    pub fn open(dir: &Path, node: &str, keep: bool) -> io::Result<(SeriesTable, Opened)> {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        let path = dir.join("series.tbl");
        let mut opened = Opened::default();
        let mut epoch = 0u64;
        let mut defs: Vec<pb::SeriesDef> = Vec::new();
        let mut size = 0u64;
        if keep {
            match File::open(&path) {
                Ok(f) => {
                    let tail = framed::read(&FORMAT, f, |rec| {
                        let d = pb::SeriesDefs::decode(rec.payload).map_err(|e| e.to_string())?;
                        if epoch != 0 && d.epoch != epoch {
                            return Err(format!("epoch {} after {epoch}", d.epoch));
                        }
                        for (i, s) in d.series.iter().enumerate() {
                            if s.r#ref as usize != defs.len() + 1 + i {
                                return Err(format!("ref {} after {}", s.r#ref, defs.len() + i));
                            }
                        }
                        epoch = d.epoch;
                        defs.extend(d.series);
                        Ok(())
                    })
                    .map_err(io_at(&path))?;
                    if let framed::Tail::Torn { offset, reason } = tail {
                        tracing::warn!(path = %path.display(), offset, %reason,
                            "series table: torn tail cut");
                        framed::truncate(&path, offset).map_err(io_at(&path))?;
                        opened.torn = true;
                    }
                    size = std::fs::metadata(&path).map_err(io_at(&path))?.len();
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&path)(e)),
            }
        }
        if epoch == 0 {
            // a new table: an empty file, and refs from 1
            defs.clear();
            epoch = new_epoch();
            vigil_common::fs::write_atomic(&path, b"")
                .map_err(|e| io::Error::other(format!("series table {}: {e}", path.display())))?;
            size = 0;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_at(&path))?;
        opened.loaded = defs.len() as u32;
        let mut t = SeriesTable {
            path,
            file,
            size,
            epoch,
            node: node.to_string(),
            last_used: vec![0; defs.len()],
            persisted: defs.len(),
            defs: Vec::new(),
            index: IdMap::default(),
            more: IdMap::default(),
            fast: IdMap::default(),
            targets: IdMap::default(),
            round: 0,
            seals: 0,
        };
        for d in defs {
            t.index_def(&d);
            t.defs.push(d);
        }
        Ok((t, opened))
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// How many refs are defined (the highest ref).
    pub fn len(&self) -> u32 {
        self.defs.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// The definitions of refs `from + 1 ..= to`.
    pub fn defs(&self, from: u32, to: u32) -> &[pb::SeriesDef] {
        let to = (to as usize).min(self.defs.len());
        let from = (from as usize).min(to);
        &self.defs[from..to]
    }

    fn index_def(&mut self, d: &pb::SeriesDef) {
        let h = canonical_hash(&d.labels);
        if let Some(prev) = self.index.insert(h, d.r#ref) {
            self.index.insert(h, prev);
            self.more.entry(h).or_default().push(d.r#ref);
        }
    }

    fn lookup(&self, h: u64, labels: &[pb::Label]) -> Option<u32> {
        let hit = |r: &u32| self.defs[*r as usize - 1].labels == labels;
        if let Some(r) = self.index.get(&h).filter(|r| hit(r)) {
            return Some(*r);
        }
        self.more.get(&h)?.iter().find(|r| hit(r)).copied()
    }

    fn touch(&mut self, r: u32) -> u32 {
        if let Some(u) = self.last_used.get_mut(r as usize - 1) {
            *u = self.round;
        }
        r
    }

    /// The ref of a canonical label set (sorted by name, unique), defining it
    /// if new.
    fn intern_canonical(&mut self, labels: Vec<pb::Label>) -> u32 {
        let h = canonical_hash(&labels);
        if let Some(r) = self.lookup(h, &labels) {
            return self.touch(r);
        }
        let r = self.defs.len() as u32 + 1;
        let d = pb::SeriesDef { r#ref: r, labels };
        self.index_def(&d);
        self.defs.push(d);
        self.last_used.push(self.round);
        r
    }

    /// The ref of `labels` plus `node` (the labels win over `node` when they
    /// carry it; of two pairs with one name the first wins).
    pub fn intern_pairs(&mut self, mut labels: Vec<(String, String)>) -> u32 {
        labels.push(("node".to_string(), self.node.clone()));
        self.intern_labels(labels)
    }

    /// The ref of `labels` as they are (of two pairs with one name the first
    /// wins).
    pub fn intern_labels(&mut self, mut labels: Vec<(String, String)>) -> u32 {
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels.dedup_by(|a, b| a.0 == b.0);
        self.intern_canonical(
            labels
                .into_iter()
                .map(|(name, value)| pb::Label { name, value })
                .collect(),
        )
    }

    /// The ref of a node scrape's sample: family `name`, its `labels`, and
    /// `node`. A steady scrape is a hash and a check, no allocation.
    pub fn intern_sample(&mut self, name: &str, labels: &[(String, String)]) -> u32 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(name.as_bytes());
        for (k, v) in labels {
            h.update(&[0xfe]);
            h.update(k.as_bytes());
            h.update(&[0xff]);
            h.update(v.as_bytes());
        }
        let fh = h.digest();
        if let Some(&r) = self.fast.get(&fh)
            && self.matches(r, name, labels)
        {
            return self.touch(r);
        }
        let mut pairs = Vec::with_capacity(labels.len() + 1);
        pairs.extend(labels.iter().cloned());
        pairs.push(("__name__".to_string(), name.to_string()));
        let r = self.intern_pairs(pairs);
        self.fast.insert(fh, r);
        r
    }

    /// Whether ref `r` is exactly `labels` + `__name__` + `node` (all names
    /// distinct): every pair present with its value and nothing else.
    fn matches(&self, r: u32, name: &str, labels: &[(String, String)]) -> bool {
        let def = &self.defs[r as usize - 1].labels;
        if def.len() != labels.len() + 2 {
            return false;
        }
        let has = |k: &str, v: &str| {
            def.binary_search_by(|l| l.name.as_str().cmp(k))
                .map(|i| def[i].value == v)
                .unwrap_or(false)
        };
        has("__name__", name) && has("node", &self.node) && labels.iter().all(|(k, v)| has(k, v))
    }

    /// The ref of an application target's series (its labels as they are;
    /// the scraper already added what it adds).
    pub fn intern_target(&mut self, s: &TargetSeries) -> u32 {
        if let Some(&r) = self.targets.get(&s.id) {
            return self.touch(r);
        }
        let mut labels: Vec<pb::Label> = s
            .labels
            .iter()
            .map(|(k, v)| pb::Label {
                name: k.to_string(),
                value: v.to_string(),
            })
            .collect();
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        labels.dedup_by(|a, b| a.name == b.name);
        let r = self.intern_canonical(labels);
        if self.targets.len() >= MAX_REFS as usize {
            // ids of series gone long ago; the labels find their ref again
            self.targets.clear();
        }
        self.targets.insert(s.id, r);
        r
    }

    /// Appends the definitions made since the last call to the file (before
    /// the batch that uses them goes to the buffer).
    pub fn persist(&mut self) -> io::Result<()> {
        if self.persisted >= self.defs.len() {
            return Ok(());
        }
        let mut frames = Vec::new();
        let mut at = self.persisted;
        while at < self.defs.len() {
            // records of at most ~1 MiB of definitions
            let mut bytes = 0;
            let mut end = at;
            while end < self.defs.len() && bytes < 1 << 20 {
                bytes += self.defs[end].encoded_len() + 4;
                end += 1;
            }
            let payload = pb::SeriesDefs {
                epoch: self.epoch,
                series: self.defs[at..end].to_vec(),
                metadata: Vec::new(),
            }
            .encode_to_vec();
            framed::encode(&FORMAT, &[], &payload, &mut frames);
            at = end;
        }
        framed::append(&mut self.file, self.size, &frames).map_err(io_at(&self.path))?;
        self.size += frames.len() as u64;
        self.persisted = self.defs.len();
        Ok(())
    }

    /// Called at every seal: when the buffer is empty and the table is full,
    /// or grew to more than twice the label sets used in the last round,
    /// starts a new table (new epoch). True if it did.
    pub fn maybe_rotate(&mut self, buffer_empty: bool) -> io::Result<bool> {
        self.seals += 1;
        let round_over = self.seals >= ROUND;
        let mut rotate = self.defs.len() >= MAX_REFS as usize;
        if round_over {
            self.seals = 0;
            let live = self.last_used.iter().filter(|u| **u == self.round).count();
            rotate |= self.defs.len() >= ROTATE_MIN && self.defs.len() > 2 * live;
            self.round = self.round.wrapping_add(1);
        }
        if !rotate || !buffer_empty {
            return Ok(false);
        }
        tracing::info!(refs = self.defs.len(), "series table: starting a new table");
        vigil_common::fs::write_atomic(&self.path, b"")
            .map_err(|e| io::Error::other(format!("series table {}: {e}", self.path.display())))?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io_at(&self.path))?;
        self.size = 0;
        self.epoch = new_epoch();
        self.defs.clear();
        self.index.clear();
        self.more.clear();
        self.fast.clear();
        self.targets.clear();
        self.last_used.clear();
        self.persisted = 0;
        Ok(true)
    }
}

fn new_epoch() -> u64 {
    loop {
        let e = uuid::Uuid::new_v4().as_u64_pair().0;
        if e != 0 {
            return e;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn refs_are_dense_stable_and_survive_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let (mut t, o) = SeriesTable::open(d.path(), "n1", true).unwrap();
        assert_eq!(o.loaded, 0);
        let a = t.intern_sample("up", &pairs(&[("job", "a")]));
        let b = t.intern_sample("up", &pairs(&[("job", "b")]));
        assert_eq!((a, b), (1, 2));
        assert_eq!(t.intern_sample("up", &pairs(&[("job", "a")])), 1);
        // the same set reached another way is the same ref
        assert_eq!(
            t.intern_pairs(pairs(&[("job", "b"), ("__name__", "up")])),
            2
        );
        let def = &t.defs(0, 1)[0];
        let names: Vec<_> = def.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "job", "node"]);
        t.persist().unwrap();
        let epoch = t.epoch();
        drop(t);
        let (mut t, o) = SeriesTable::open(d.path(), "n1", true).unwrap();
        assert_eq!((o.loaded, o.torn, t.epoch()), (2, false, epoch));
        assert_eq!(t.intern_sample("up", &pairs(&[("job", "b")])), 2);
        assert_eq!(t.intern_sample("up", &pairs(&[("job", "c")])), 3);
        // not kept (an empty buffer): a new table
        drop(t);
        let (t, o) = SeriesTable::open(d.path(), "n1", false).unwrap();
        assert_eq!(o.loaded, 0);
        assert!(t.is_empty());
        assert_ne!(t.epoch(), epoch);
    }

    #[test]
    fn the_fast_path_never_confuses_label_sets() {
        let d = tempfile::tempdir().unwrap();
        let (mut t, _) = SeriesTable::open(d.path(), "n1", false).unwrap();
        // a sample that carries `node` itself wins over the agent's
        let a = t.intern_sample("m", &pairs(&[("node", "other")]));
        let b = t.intern_sample("m", &pairs(&[]));
        assert_ne!(a, b);
        assert_eq!(t.intern_sample("m", &pairs(&[("node", "other")])), a);
        let v: Vec<_> = t.defs(a - 1, a)[0]
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(v, [("__name__", "m"), ("node", "other")]);
        // duplicates in a sample: the first wins, as in the canonical form
        let c = t.intern_sample("m", &pairs(&[("x", "1"), ("x", "2")]));
        assert_eq!(t.intern_sample("m", &pairs(&[("x", "1")])), c);
    }

    #[test]
    fn a_torn_tail_is_cut_and_what_is_whole_stays() {
        let d = tempfile::tempdir().unwrap();
        let (mut t, _) = SeriesTable::open(d.path(), "n1", true).unwrap();
        t.intern_sample("a", &[]);
        t.persist().unwrap();
        t.intern_sample("b", &[]);
        t.persist().unwrap();
        drop(t);
        let p = d.path().join("series.tbl");
        let len = std::fs::metadata(&p).unwrap().len();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 3).unwrap();
        let (mut t, o) = SeriesTable::open(d.path(), "n1", true).unwrap();
        assert_eq!((o.loaded, o.torn), (1, true));
        // appends go on after the cut
        assert_eq!(t.intern_sample("c", &[]), 2);
        t.persist().unwrap();
        drop(t);
        let (t, o) = SeriesTable::open(d.path(), "n1", true).unwrap();
        assert_eq!((o.loaded, o.torn), (2, false));
        assert_eq!(t.defs(1, 2)[0].labels[0].value, "c");
    }

    #[test]
    fn churn_starts_a_new_table_only_with_an_empty_buffer() {
        let d = tempfile::tempdir().unwrap();
        let (mut t, _) = SeriesTable::open(d.path(), "n1", false).unwrap();
        for i in 0..ROTATE_MIN + 10 {
            t.intern_sample("gone", &pairs(&[("i", &i.to_string())]));
        }
        let epoch = t.epoch();
        // one round in which only one series is used
        for _ in 0..ROUND {
            t.intern_sample("live", &[]);
            assert!(!t.maybe_rotate(false).unwrap());
        }
        // the next round ends with the buffer empty
        for _ in 0..ROUND - 1 {
            t.intern_sample("live", &[]);
            assert!(!t.maybe_rotate(true).unwrap());
        }
        assert!(t.maybe_rotate(true).unwrap());
        let rotated = t.epoch();
        assert_ne!(rotated, epoch);
        assert!(t.is_empty());
        assert_eq!(t.intern_sample("live", &[]), 1);
        t.persist().unwrap();
        drop(t);
        let (t, o) = SeriesTable::open(d.path(), "n1", true).unwrap();
        assert_eq!((o.loaded, t.epoch()), (1, rotated));
    }
}
