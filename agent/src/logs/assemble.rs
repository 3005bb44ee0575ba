//! Joins pieces into records and decides each record's offsets.
//!
//! Partial pieces (CRI `P`, Docker's 16 KiB splits) of one stream are joined
//! until the stream's last piece; the two streams of a file interleave, so a
//! stderr line can complete while a stdout message is still open. Records are
//! emitted in the order they *start*, so the offsets handed over grow strictly,
//! and each record's `end_offset` is the position from which reading may
//! resume once the record is stored: the start of the next record not yet
//! emitted, else the end of the raw line just consumed. That makes
//! "highest acknowledged `end_offset`" an exact prefix of what was read.
//!
//! When an emitted record's later pieces lie beyond its `end_offset` (the
//! interleaved case), resuming there would re-read them as a new record; the
//! record therefore also reports, per stream, up to which raw offset pieces
//! belong to records already emitted ([`Record::skip_until`]); a reader
//! resuming at `end_offset` drops those pieces. Not here: reading, decoding,
//! labels.

use std::collections::VecDeque;

use super::parse::{Piece, Stream};

/// Appended to a message cut at `max_line_bytes`.
pub const TRUNCATION_MARKER: &[u8] = b" [truncated by vigil]";

/// Held records (behind an open partial one) beyond this many bytes force the
/// open one out, so a stream that never finishes its message cannot make the
/// other stream's lines pile up.
const HOLD_BYTES: usize = 4 << 20;
const HOLD_RECORDS: usize = 4096;

/// One assembled record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub offset: u64,
    pub end_offset: u64,
    pub stream: Stream,
    pub timestamp_ns: i64,
    pub msg: Vec<u8>,
    /// Cut at `max_line_bytes` (the marker is already appended).
    pub truncated: bool,
    /// Pieces of stream `i` starting before `skip_until[i]` (and at or after
    /// `end_offset`) belong to records emitted up to this one.
    pub skip_until: [u64; 2],
}

#[derive(Debug)]
struct Pending {
    offset: u64,
    stream: Stream,
    timestamp_ns: i64,
    msg: Vec<u8>,
    complete: bool,
    truncated: bool,
    raw_end: u64,
}

/// Per-source assembly state.
#[derive(Debug)]
pub struct Assembler {
    max_line: usize,
    queue: VecDeque<Pending>,
    held_bytes: usize,
    /// Highest raw end of any emitted record's pieces, per stream.
    emitted_tail: [u64; 2],
    /// Drop pieces starting before these (set when resuming, see module docs).
    skip_until: [u64; 2],
    /// Partial records emitted early because too much, or for too long, was
    /// held behind them.
    pub forced_out: u64,
    /// Since when a complete record waits behind an open one.
    blocked_since: Option<std::time::Instant>,
}

impl Assembler {
    pub fn new(max_line: usize, skip_until: [u64; 2]) -> Self {
        Assembler {
            max_line: max_line.max(1),
            queue: VecDeque::new(),
            held_bytes: 0,
            // Pieces up to `skip_until` belong to records emitted before the
            // resume point: count them as emitted for later records' marks.
            emitted_tail: skip_until,
            skip_until,
            forced_out: 0,
            blocked_since: None,
        }
    }

    /// Skip marks for a record ending (resumable) at `end_offset`.
    fn marks(&self, end_offset: u64) -> [u64; 2] {
        self.emitted_tail
            .map(|t| if t > end_offset { t } else { 0 })
    }

    /// Nothing held: the next record starts at the next raw line.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Takes one decoded raw line `[start, end)`. `cut` says the reader already
    /// cut the raw line (it was longer than it buffers).
    pub fn push(
        &mut self,
        start: u64,
        end: u64,
        piece: Piece<'_>,
        cut: bool,
        out: &mut impl FnMut(Record),
    ) {
        let si = piece.stream.index();
        if start < self.skip_until[si] {
            return;
        }
        let open = self
            .queue
            .iter()
            .rposition(|p| p.stream == piece.stream && !p.complete);
        match open {
            Some(i) => {
                let p = &mut self.queue[i];
                let before = p.msg.len();
                // Once cut, the rest of the message is dropped (not appended
                // after a gap).
                if !p.truncated {
                    p.truncated = append_capped(&mut p.msg, &piece.msg, self.max_line) | cut;
                }
                self.held_bytes += p.msg.len() - before;
                p.complete = !piece.partial;
                p.raw_end = end;
            }
            None if self.queue.is_empty() && !piece.partial => {
                // The common case: a whole line and nothing held.
                let mut msg = Vec::with_capacity(piece.msg.len().min(self.max_line));
                let truncated = append_capped(&mut msg, &piece.msg, self.max_line) | cut;
                self.emitted_tail[si] = self.emitted_tail[si].max(end);
                out(finish(Record {
                    offset: start,
                    end_offset: end,
                    stream: piece.stream,
                    timestamp_ns: piece.timestamp_ns,
                    msg,
                    truncated,
                    skip_until: self.marks(end),
                }));
                return;
            }
            None => {
                let mut msg = Vec::new();
                let truncated = append_capped(&mut msg, &piece.msg, self.max_line) | cut;
                self.held_bytes += msg.len();
                self.queue.push_back(Pending {
                    offset: start,
                    stream: piece.stream,
                    timestamp_ns: piece.timestamp_ns,
                    msg,
                    complete: !piece.partial,
                    truncated,
                    raw_end: end,
                });
            }
        }
        if (self.held_bytes > HOLD_BYTES || self.queue.len() > HOLD_RECORDS)
            && let Some(front) = self.queue.front_mut()
            && !front.complete
        {
            front.complete = true;
            self.forced_out += 1;
        }
        self.drain(end, out);
        if self.blocked_since.is_none() && self.queue.iter().any(|p| p.complete) {
            self.blocked_since = Some(std::time::Instant::now());
        }
    }

    /// When complete records have waited behind an open partial message for
    /// `max_wait` (a stream that printed without a newline and went quiet),
    /// hands the open message over as it is; its later pieces become a
    /// record of their own. `raw_pos`: where the consumed raw lines end.
    pub fn flush_blocked(
        &mut self,
        max_wait: std::time::Duration,
        raw_pos: u64,
        out: &mut impl FnMut(Record),
    ) {
        while let Some(since) = self.blocked_since {
            if since.elapsed() < max_wait {
                return;
            }
            match self.queue.front_mut() {
                Some(front) if !front.complete => {
                    front.complete = true;
                    self.forced_out += 1;
                }
                _ => {}
            }
            self.drain(raw_pos, out);
            self.blocked_since = self.queue.iter().any(|p| p.complete).then_some(since);
        }
    }

    /// The file is finished: emits everything held, open messages as they are.
    pub fn finish(&mut self, end: u64, out: &mut impl FnMut(Record)) {
        for p in &mut self.queue {
            p.complete = true;
        }
        self.drain(end, out);
    }

    fn drain(&mut self, raw_pos: u64, out: &mut impl FnMut(Record)) {
        if self.queue.front().is_some_and(|p| p.complete) {
            self.blocked_since = None;
        }
        while self.queue.front().is_some_and(|p| p.complete) {
            let Some(p) = self.queue.pop_front() else {
                break;
            };
            self.held_bytes -= p.msg.len();
            let si = p.stream.index();
            self.emitted_tail[si] = self.emitted_tail[si].max(p.raw_end);
            let end_offset = self.queue.front().map_or(raw_pos, |n| n.offset);
            let skip_until = self.marks(end_offset);
            out(finish(Record {
                offset: p.offset,
                end_offset,
                stream: p.stream,
                timestamp_ns: p.timestamp_ns,
                msg: p.msg,
                truncated: p.truncated,
                skip_until,
            }));
        }
    }
}

fn finish(mut r: Record) -> Record {
    if r.truncated {
        r.msg.extend_from_slice(TRUNCATION_MARKER);
    }
    r
}

/// Appends `add` to `msg` keeping `msg` at most `max` bytes, cutting at a
/// UTF-8 character boundary (so a cut does not also read as invalid UTF-8).
/// Returns whether anything was cut.
fn append_capped(msg: &mut Vec<u8>, add: &[u8], max: usize) -> bool {
    let room = max.saturating_sub(msg.len());
    if add.len() <= room {
        msg.extend_from_slice(add);
        return false;
    }
    let mut cut = room;
    // Back off over continuation bytes (at most three) to a character start.
    let mut back = 0;
    while cut > 0 && back < 3 && (add[cut] & 0xC0) == 0x80 {
        cut -= 1;
        back += 1;
    }
    if (add[cut] & 0xC0) == 0x80 {
        cut = room; // not UTF-8 anyway: cut where the bytes run out
    }
    msg.extend_from_slice(&add[..cut]);
    true
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn piece(stream: Stream, partial: bool, msg: &str) -> Piece<'_> {
        Piece {
            timestamp_ns: 7,
            stream,
            partial,
            msg: Cow::Borrowed(msg.as_bytes()),
        }
    }

    fn run(a: &mut Assembler, lines: &[(u64, u64, Stream, bool, &str)]) -> Vec<Record> {
        let mut out = Vec::new();
        for &(s, e, st, partial, m) in lines {
            a.push(s, e, piece(st, partial, m), false, &mut |r| out.push(r));
        }
        out
    }

    #[test]
    fn whole_lines_pass_through() {
        let mut a = Assembler::new(100, [0; 2]);
        let out = run(
            &mut a,
            &[
                (0, 10, Stream::Stdout, false, "a"),
                (10, 20, Stream::Stderr, false, "b"),
            ],
        );
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].offset, out[0].end_offset), (0, 10));
        assert_eq!(
            (out[1].offset, out[1].end_offset, out[1].stream),
            (10, 20, Stream::Stderr)
        );
        assert!(a.is_empty());
    }

    #[test]
    fn partials_join_and_interleave_in_start_order() {
        let mut a = Assembler::new(100, [0; 2]);
        let out = run(
            &mut a,
            &[
                (0, 10, Stream::Stdout, true, "he"),
                (10, 20, Stream::Stderr, false, "err"),
                (20, 30, Stream::Stdout, true, "ll"),
                (30, 40, Stream::Stdout, false, "o"),
                (40, 50, Stream::Stdout, false, "next"),
            ],
        );
        let got: Vec<_> = out
            .iter()
            .map(|r| {
                (
                    r.offset,
                    r.end_offset,
                    std::str::from_utf8(&r.msg).unwrap(),
                    r.skip_until,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 10, "hello", [40, 0]),
                (10, 40, "err", [0, 0]),
                (40, 50, "next", [0, 0]),
            ]
        );
        // Resuming at the first record's end with its skip marks re-reads
        // exactly the records that start there.
        let mut b = Assembler::new(100, out[0].skip_until);
        let again = run(
            &mut b,
            &[
                (10, 20, Stream::Stderr, false, "err"),
                (20, 30, Stream::Stdout, true, "ll"),
                (30, 40, Stream::Stdout, false, "o"),
                (40, 50, Stream::Stdout, false, "next"),
            ],
        );
        let key = |r: &Record| (r.offset, r.msg.clone());
        assert_eq!(
            again.iter().map(key).collect::<Vec<_>>(),
            out[1..].iter().map(key).collect::<Vec<_>>()
        );
        // ... and a second resume from the re-read stderr record still skips.
        assert_eq!(again[0].end_offset, 20);
        assert_eq!(again[0].skip_until, [40, 0]);
    }

    #[test]
    fn long_messages_are_cut_at_a_char_boundary() {
        let mut a = Assembler::new(4, [0; 2]);
        let out = run(
            &mut a,
            &[
                (0, 10, Stream::Stdout, true, "abcé"),
                (10, 20, Stream::Stdout, false, "zz"),
            ],
        );
        assert_eq!(out.len(), 1);
        assert!(out[0].truncated);
        let want = [&b"abc"[..], TRUNCATION_MARKER].concat();
        assert_eq!(out[0].msg, want);
        assert_eq!(out[0].end_offset, 20);
    }

    #[test]
    fn a_quiet_open_message_stops_blocking_the_other_stream() {
        let mut a = Assembler::new(100, [0; 2]);
        let mut out = run(
            &mut a,
            &[
                (0, 10, Stream::Stdout, true, "no newline"),
                (10, 20, Stream::Stderr, false, "oops"),
            ],
        );
        assert!(out.is_empty());
        a.flush_blocked(std::time::Duration::from_secs(60), 20, &mut |r| out.push(r));
        assert!(out.is_empty());
        a.flush_blocked(std::time::Duration::ZERO, 20, &mut |r| out.push(r));
        let got: Vec<_> = out
            .iter()
            .map(|r| (r.offset, r.end_offset, r.msg.clone()))
            .collect();
        assert_eq!(
            got,
            vec![(0, 10, b"no newline".to_vec()), (10, 20, b"oops".to_vec())]
        );
        assert_eq!(a.forced_out, 1);
        // The rest of the message is a record of its own.
        let more = run(&mut a, &[(20, 30, Stream::Stdout, false, " after all")]);
        assert_eq!(
            (more[0].offset, more[0].msg.as_slice()),
            (20, &b" after all"[..])
        );
    }

    #[test]
    fn finish_flushes_open_messages() {
        let mut a = Assembler::new(100, [0; 2]);
        let mut out = run(&mut a, &[(0, 10, Stream::Stdout, true, "open")]);
        assert!(out.is_empty());
        a.finish(10, &mut |r| out.push(r));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].offset, out[0].end_offset), (0, 10));
    }
}
