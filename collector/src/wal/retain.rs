//! Which WAL segments to delete. Segments at or above the last checkpoint
//! are recovery's and always stay. Below it, a segment stays while a
//! [`Hold`] needs it; the bytes kept that way are capped by a budget, and
//! past it the oldest segments go even though a hold needs them — that is
//! counted per hold (segments, bytes, samples, log records it had not read
//! yet) and logged.
//!
//! Deleting the first segments of a cut group would leave the group's later
//! segments with ids whose definitions are gone; so before such a deletion
//! the definitions are written to `<first kept>.defs`, which
//! [`super::reader`] reads. Not here: deciding when to run (the checkpoint
//! loop) or what a hold is for (forwarding).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::reader::{defs_path, read_defs};
use super::{
    Frame, Hold, IdHash, WalError, WalRecord, WalSeries, frame, io_err, read_frame, segment_path,
    segments,
};

/// A segment deleted past the budget while a hold still needed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub segment: u64,
    pub bytes: u64,
    pub samples: u64,
    pub log_records: u64,
    /// Holds that had not read it.
    pub holds: Vec<String>,
}

/// What [`release`] did.
#[derive(Debug, Default)]
pub struct Released {
    pub deleted: u64,
    pub freed_bytes: u64,
    /// Bytes still kept below the checkpoint for holds.
    pub held_bytes: u64,
    pub dropped: Vec<Dropped>,
}

fn size(dir: &Path, s: u64) -> u64 {
    std::fs::metadata(segment_path(dir, s))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Definitions of the group a deleted prefix ends in.
#[derive(Default)]
struct Scan {
    defs: HashMap<u64, Vec<String>, IdHash>,
}

impl Scan {
    fn segment(&mut self, dir: &Path, s: u64) -> Result<(u64, u64), WalError> {
        let p = segment_path(dir, s);
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(io_err(&p)(e)),
        };
        let mut sidecar = Vec::new();
        read_defs(dir, s, |id, l| sidecar.push((id, l.to_vec())))?;
        self.defs.extend(sidecar);
        let mut r = BufReader::with_capacity(1 << 20, f);
        let mut buf = Vec::new();
        let (mut samples, mut logs) = (0u64, 0u64);
        while let Frame::Record(rec, _) =
            read_frame(&mut r, u64::MAX, &mut buf).map_err(io_err(&p))?
        {
            if rec.cut {
                self.defs.clear();
            }
            for d in rec.series {
                self.defs.insert(d.id, d.labels);
            }
            samples += rec.blocks.iter().map(|b| b.ids.len() as u64).sum::<u64>();
            logs += rec.logs.len() as u64;
        }
        Ok((samples, logs))
    }
}

/// Whether segment `s` starts a cut group (its first record is a marker).
fn starts_group(dir: &Path, s: u64) -> Result<bool, WalError> {
    let p = segment_path(dir, s);
    let f = match File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(io_err(&p)(e)),
    };
    let mut buf = Vec::new();
    match read_frame(&mut BufReader::new(f), u64::MAX, &mut buf).map_err(io_err(&p))? {
        Frame::Record(rec, _) => Ok(rec.cut),
        // an empty segment defines nothing; what follows it starts afresh
        _ => Ok(true),
    }
}

/// Writes `<segment>.defs` atomically (temp file, fsync, rename, folder fsync).
fn write_defs(
    dir: &Path,
    segment: u64,
    defs: HashMap<u64, Vec<String>, IdHash>,
) -> Result<(), WalError> {
    let path = defs_path(dir, segment);
    let rec = WalRecord {
        series: defs
            .into_iter()
            .map(|(id, labels)| WalSeries { id, labels })
            .collect(),
        ..Default::default()
    };
    let mut out = Vec::new();
    frame(&prost::Message::encode_to_vec(&rec), &mut out);
    vigil_common::fs::write_atomic(&path, &out).map_err(|e| {
        io_err(&path)(io::Error::new(
            e.source.kind(),
            format!("{}: {}", e.step, e.source),
        ))
    })
}

fn delete(dir: &Path, s: u64) -> Result<u64, WalError> {
    let p = segment_path(dir, s);
    let n = size(dir, s);
    match std::fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(&p)(e)),
    }
    let _ = std::fs::remove_file(defs_path(dir, s));
    Ok(n)
}

/// Deletes segments below `checkpointed` that no hold needs, then, while
/// the rest below `checkpointed` is over `budget` bytes, the oldest of them.
pub fn release(
    dir: &Path,
    checkpointed: u64,
    budget: u64,
    holds: &[Arc<Hold>],
) -> Result<Released, WalError> {
    let mut out = Released::default();
    let segs: Vec<u64> = segments(dir)
        .map_err(io_err(dir))?
        .into_iter()
        .filter(|s| *s < checkpointed)
        .collect();
    if segs.is_empty() {
        return Ok(out);
    }
    let needed = holds.iter().map(|h| h.needed()).min().unwrap_or(u64::MAX);
    let mut held_bytes: u64 = segs
        .iter()
        .filter(|s| **s >= needed)
        .map(|s| size(dir, *s))
        .sum();
    // how many of the oldest go: those no hold needs, then more past the budget
    let mut cut_at = segs.iter().position(|s| *s >= needed).unwrap_or(segs.len());
    while cut_at < segs.len() && held_bytes > budget {
        held_bytes -= size(dir, segs[cut_at]);
        cut_at += 1;
    }
    if cut_at == 0 {
        out.held_bytes = held_bytes;
        return Ok(out);
    }
    // the first kept segment: recovery's (a cut, never needs definitions)
    // or a held one, which may
    let first_kept = segs.get(cut_at).copied().unwrap_or(checkpointed);
    let needs_defs = !holds.is_empty() && !starts_group(dir, first_kept)?;
    // the segments a hold still needed: deleted past the budget
    let first_dropped = segs[..cut_at]
        .iter()
        .position(|s| *s >= needed)
        .unwrap_or(cut_at);
    // definitions come from the first kept segment's group start on
    let mut scan_from = first_dropped;
    if needs_defs {
        scan_from = cut_at;
        while scan_from > 0 {
            scan_from -= 1;
            if starts_group(dir, segs[scan_from])? {
                break;
            }
        }
        scan_from = scan_from.min(first_dropped);
    }
    let mut scan = Scan::default();
    // lock every hold's reading slot: a reader does not open a segment
    // while we decide whether deleting it takes data from it
    let guards: Vec<_> = holds
        .iter()
        .map(|h| (h.clone(), h.reading.lock()))
        .collect();
    for (i, &s) in segs.iter().enumerate().take(cut_at).skip(scan_from) {
        let (samples, log_records) = scan.segment(dir, s)?;
        if i < first_dropped {
            continue;
        }
        let bytes = size(dir, s);
        let mut names = Vec::new();
        for (h, reading) in &guards {
            if s > **reading {
                h.dropped_samples.fetch_add(samples, Ordering::Relaxed);
                h.dropped_log_records
                    .fetch_add(log_records, Ordering::Relaxed);
                h.dropped_bytes.fetch_add(bytes, Ordering::Relaxed);
                names.push(h.name.clone());
            }
        }
        if !names.is_empty() {
            tracing::warn!(
                segment = s,
                bytes,
                samples,
                log_records,
                holds = ?names,
                "WAL past its forwarding budget: deleting a segment not yet forwarded"
            );
            out.dropped.push(Dropped {
                segment: s,
                bytes,
                samples,
                log_records,
                holds: names,
            });
        }
    }
    if needs_defs {
        write_defs(dir, first_kept, std::mem::take(&mut scan.defs))?;
    }
    for &s in &segs[..cut_at] {
        out.freed_bytes += delete(dir, s)?;
        out.deleted += 1;
    }
    drop(guards);
    out.held_bytes = held_bytes;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::reader::{Reader, Step};
    use crate::wal::{Append, Position, SeriesUse, Wal, WalBlock};
    use vigil_common::Labels;

    fn rec(seq: u64, name: &str, pad: usize) -> Append {
        let l = Labels::new([("__name__", name), ("pad", &"x".repeat(pad))]);
        let id = l.stable_hash();
        Append {
            record: WalRecord {
                agent_id: "a".into(),
                seq,
                blocks: vec![WalBlock {
                    timestamp_ms: seq as i64,
                    ids: vec![id],
                    values: vec![seq as f64],
                }],
                ..Default::default()
            },
            uses: vec![SeriesUse {
                id,
                labels: Arc::new(l),
            }],
        }
    }

    #[tokio::test]
    async fn holds_keep_segments_and_the_budget_drops_the_oldest_counted() {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::start(d.path()).unwrap();
        let hold = wal.hold("rw", 1);
        for i in 1..=4 {
            wal.append(rec(i, "m", 10)).await.unwrap();
            wal.cut().await.unwrap();
        }
        // segments 1..=4 written, 5 is the writer's
        wal.set_checkpointed(5);
        wal.set_hold_budget(u64::MAX);
        let r = wal.release().unwrap();
        assert_eq!(r.deleted, 0, "the hold needs them all");
        hold.set_needed(3);
        let r = wal.release().unwrap();
        assert_eq!((r.deleted, r.dropped.len()), (2, 0));
        assert_eq!(segments(d.path()).unwrap(), vec![3, 4, 5]);
        // a budget of one segment: 3 goes, counted for the hold
        let one = size(d.path(), 4);
        wal.set_hold_budget(one);
        let r = wal.release().unwrap();
        assert_eq!(r.dropped.len(), 1);
        assert_eq!(r.dropped[0].segment, 3);
        assert_eq!(r.dropped[0].samples, 1);
        assert_eq!(hold.dropped_samples.load(Ordering::Relaxed), 1);
        assert_eq!(segments(d.path()).unwrap(), vec![4, 5]);
        assert_eq!(r.held_bytes, one);
        assert_eq!(wal.stats.dropped_segments.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn deleting_a_groups_start_keeps_its_definitions_for_readers() {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::start(d.path()).unwrap();
        wal.append(rec(1, "a", 0)).await.unwrap();
        // a size rotation, not a cut: segment 2 relies on 1's definitions
        wal.append(rec(2, "a", crate::wal::SEGMENT_BYTES as usize))
            .await
            .unwrap();
        wal.append(rec(3, "a", 0)).await.unwrap();
        let p3 = wal.append(rec(4, "a", 0)).await.unwrap();
        assert!(p3.segment >= 2, "{p3:?}");
        let cut = wal.cut().await.unwrap();
        let hold = wal.hold("rw", p3.segment);
        wal.set_checkpointed(cut);
        wal.set_hold_budget(u64::MAX);
        let r = wal.release().unwrap();
        assert!(r.deleted >= 1);
        assert!(defs_path(d.path(), p3.segment).exists());
        let mut reader = Reader::open(
            d.path(),
            wal.durable(),
            Some(hold),
            Position {
                segment: p3.segment,
                offset: 0,
            },
        )
        .unwrap();
        let mut names = Vec::new();
        while let Step::Record(rec, _) = reader.step().unwrap() {
            for id in &rec.blocks[0].ids {
                names.push(
                    reader
                        .labels(*id)
                        .and_then(|l| l.metric_name().map(str::to_string)),
                );
            }
        }
        assert!(!names.is_empty());
        assert!(names.iter().all(|n| n.as_deref() == Some("a")), "{names:?}");
    }
}
