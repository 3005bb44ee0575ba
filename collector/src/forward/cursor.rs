//! An endpoint's place in the WAL. The [`Tracker`] knows, for every record
//! read and not yet fully delivered, how many of its items are still out;
//! its low watermark — the start of the oldest record with something
//! outstanding — is the position from which nothing has been lost. That
//! watermark is persisted in `<data_dir>/forward/<name>.cursor` (JSON,
//! written atomically) about once a second and at shutdown, and a start
//! resumes there: what was delivered after it is delivered again (at least
//! once), nothing before it is needed. Not here: reading or sending.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::wal::Position;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct CursorFile {
    segment: u64,
    offset: u64,
}

pub fn cursor_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.cursor"))
}

/// The saved cursor, if there is one (a corrupt file is an error: the
/// caller decides, and says so).
pub fn load(path: &Path) -> io::Result<Option<Position>> {
    match std::fs::read(path) {
        Ok(b) => {
            let c: CursorFile = serde_json::from_slice(&b).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?;
            Ok(Some(Position {
                segment: c.segment,
                offset: c.offset,
            }))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the cursor atomically: temp file, fsync, rename, folder fsync.
/// (A stopgap until `vigil_common::fs` lands with the shared helper.)
pub fn save(path: &Path, p: Position) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("cursor.tmp");
    let body = serde_json::to_vec(&CursorFile {
        segment: p.segment,
        offset: p.offset,
    })
    .map_err(io::Error::other)?;
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Records read and not yet delivered, oldest first.
#[derive(Debug)]
pub struct Tracker {
    /// Where reading started (the watermark while nothing is outstanding
    /// before the first record).
    base: Position,
    /// (record number, where the record starts, items outstanding)
    records: VecDeque<(u64, Position, usize)>,
    first_no: u64,
    next_no: u64,
    /// Where the record after the last one read starts.
    read_to: Position,
    pending: usize,
}

impl Tracker {
    pub fn new(at: Position) -> Self {
        Tracker {
            base: at,
            records: VecDeque::new(),
            first_no: 0,
            next_no: 0,
            read_to: at,
            pending: 0,
        }
    }

    /// A record starting at `start` and ending at `next` was read with
    /// `items` items to deliver; returns its number.
    pub fn read(&mut self, start: Position, next: Position, items: usize) -> u64 {
        let no = self.next_no;
        self.next_no += 1;
        self.records.push_back((no, start, items));
        self.read_to = next;
        self.pending += items;
        self.pop_done();
        no
    }

    /// Reading jumped (a gap, a skipped corrupt tail): nothing between is
    /// owed.
    pub fn skip_to(&mut self, next: Position) {
        self.read_to = next;
        self.pop_done();
    }

    /// `n` items of record `no` were delivered (or dropped for good).
    pub fn done(&mut self, no: u64, n: usize) {
        if no < self.first_no {
            return;
        }
        if let Some(e) = self.records.get_mut((no - self.first_no) as usize) {
            let n = n.min(e.2);
            e.2 -= n;
            self.pending -= n;
        }
        self.pop_done();
    }

    fn pop_done(&mut self) {
        while let Some(&(_, _, 0)) = self.records.front() {
            self.records.pop_front();
            self.first_no += 1;
        }
        self.base = match self.records.front() {
            Some(&(_, start, _)) => start,
            None => self.read_to,
        };
    }

    /// Everything before this is delivered.
    pub fn watermark(&self) -> Position {
        self.base
    }

    /// Items read and not yet delivered.
    pub fn pending(&self) -> usize {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(o: u64) -> Position {
        Position {
            segment: 1,
            offset: o,
        }
    }

    #[test]
    fn the_watermark_waits_for_the_oldest_record() {
        let mut t = Tracker::new(p(0));
        let a = t.read(p(0), p(10), 2);
        let b = t.read(p(10), p(20), 1);
        let _empty = t.read(p(20), p(30), 0);
        assert_eq!(t.watermark(), p(0));
        t.done(b, 1);
        assert_eq!(t.watermark(), p(0), "a is still out");
        t.done(a, 1);
        assert_eq!(t.watermark(), p(0));
        t.done(a, 1);
        assert_eq!(t.watermark(), p(30));
        assert_eq!(t.pending(), 0);
        t.skip_to(Position {
            segment: 3,
            offset: 0,
        });
        assert_eq!(t.watermark().segment, 3);
    }

    #[test]
    fn saved_cursors_load_back() {
        let d = tempfile::tempdir().unwrap();
        let f = cursor_path(d.path(), "rw");
        assert_eq!(load(&f).unwrap(), None);
        save(&f, p(42)).unwrap();
        assert_eq!(load(&f).unwrap(), Some(p(42)));
        std::fs::write(&f, "garbage").unwrap();
        assert!(load(&f).is_err());
    }
}
