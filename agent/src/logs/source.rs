//! One log file being read: its handle (plain or gzip'd), the bytes of a
//! line not yet complete, the assembly state, and what was handed over and
//! acknowledged. Turns bytes into [`LogRecord`]s; the tailer decides when to
//! read, when the file is rotated, and when it is done.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::assemble::{Assembler, Record};
use super::discovery::SourceMeta;
use super::identity::{self, Fingerprint, head_matches};
use super::level;
use super::metrics::LineCounts;
use super::parse::{Format, Piece, Stream, cri, docker};
use crate::ship::{LogRecord, SourceKey};

/// Bytes read per read call.
pub const CHUNK: usize = 256 << 10;

/// Where the bytes come from.
pub enum Input {
    /// Not open (waiting for a slot, or released).
    Closed,
    File(File),
    /// A gzip'd rotation; offsets are positions in the decompressed bytes.
    Gz(Box<flate2::read::MultiGzDecoder<File>>),
}

/// Where a source stands relative to its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The file at its path: it may grow, be truncated, be rotated.
    Live,
    /// No longer at its path (renamed, deleted, a copy or a .gz being
    /// drained): read to the end, then released after a quiet moment.
    Rotated,
    /// Read to the end and closed; waits for the last acknowledgement.
    Finished,
}

/// Outcome of one read.
#[derive(Debug, PartialEq, Eq)]
pub enum Read1 {
    Data(usize),
    Eof,
    /// The file no longer starts with the fingerprinted head (truncated and
    /// rewritten, or its inode reused); nothing of this read was used.
    Truncated,
}

/// Problems met while decoding, merged into the metrics by the tailer.
#[derive(Debug, Default)]
pub struct Tally {
    pub read_bytes: u64,
    pub truncated: u64,
    pub invalid_utf8: u64,
    pub garbage: u64,
}

/// A raw line longer than the reader buffers: its decoded head, waiting for
/// the line's end (everything up to it is skipped).
struct Oversized {
    start: u64,
    piece: Option<(i64, Stream, bool, Vec<u8>)>,
}

/// Where the entries of a read go.
pub struct Sink<'a> {
    pub entries: &'a mut Vec<LogRecord>,
    pub bytes: &'a mut usize,
}

pub struct Source {
    pub key: Arc<SourceKey>,
    pub meta: Arc<SourceMeta>,
    /// Where the bytes are read from now (the live path, or where it went).
    pub path: PathBuf,
    pub fp: Fingerprint,
    pub input: Input,
    /// Device and inode of the open file (a copy or .gz differs from the key).
    pub file_id: Option<(u64, u64)>,
    pub format: Option<Format>,
    pub state: State,
    /// Next byte to read.
    pub pos: u64,
    /// Unconsumed bytes (an incomplete line) starting at `buf_off`.
    buf: Vec<u8>,
    buf_off: u64,
    max_raw: usize,
    oversized: Option<Oversized>,
    asm: Assembler,
    /// End offset of the last entry handed over.
    pub emitted_end: u64,
    /// Highest acknowledged end offset.
    pub acked: u64,
    /// Skip marks of handed-over entries that have any, by end offset.
    pub skips: VecDeque<(u64, [u64; 2])>,
    pub counts: LineCounts,
    pub tally: Tally,
    pub at_eof: bool,
    pub last_data: Instant,
}

impl Source {
    /// A source positioned at `offset` (a record boundary), not yet open.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: SourceKey,
        meta: Arc<SourceMeta>,
        path: PathBuf,
        fp: Fingerprint,
        state: State,
        offset: u64,
        skip_until: [u64; 2],
        max_line: usize,
    ) -> Self {
        Source {
            format: meta.format,
            key: Arc::new(key),
            meta,
            path,
            fp,
            input: Input::Closed,
            file_id: None,
            state,
            pos: offset,
            buf: Vec::new(),
            buf_off: offset,
            max_raw: max_line.saturating_mul(2).saturating_add(64 << 10),
            oversized: None,
            asm: Assembler::new(max_line, skip_until),
            emitted_end: offset,
            acked: offset,
            skips: VecDeque::new(),
            counts: LineCounts::default(),
            tally: Tally::default(),
            at_eof: false,
            last_data: Instant::now(),
        }
    }

    pub fn is_open(&self) -> bool {
        !matches!(self.input, Input::Closed)
    }

    /// Opens `path` (plain), positioned at `pos`.
    pub fn open_file(&mut self, f: File, path: &Path) {
        self.file_id = f.metadata().ok().map(|m| identity::dev_ino(&m));
        self.input = Input::File(f);
        self.path = path.to_path_buf();
    }

    /// Opens a gzip'd file and skips the decompressed bytes before `pos`.
    pub fn open_gz(&mut self, path: &Path) -> io::Result<()> {
        let f = File::open(path)?;
        self.file_id = f.metadata().ok().map(|m| identity::dev_ino(&m));
        let mut d = flate2::read::MultiGzDecoder::new(f);
        let skipped = io::copy(&mut (&mut d).take(self.pos), &mut io::sink())?;
        if skipped < self.pos {
            // The .gz holds less than was already read: nothing left.
            self.pos = skipped.max(self.pos);
        }
        self.input = Input::Gz(Box::new(d));
        self.path = path.to_path_buf();
        Ok(())
    }

    /// Switches a truncated live file over to its copy (copytruncate): the
    /// copy holds the same bytes at the same offsets.
    pub fn switch_to_copy(&mut self, f: File, path: &Path) {
        self.file_id = f.metadata().ok().map(|m| identity::dev_ino(&m));
        self.input = Input::File(f);
        self.path = path.to_path_buf();
        self.state = State::Rotated;
        self.at_eof = false;
        self.last_data = Instant::now();
    }

    pub fn close(&mut self) {
        self.input = Input::Closed;
        self.file_id = None;
    }

    /// Nothing held between reads: safe to close and reopen at `pos`.
    pub fn is_quiescent(&self) -> bool {
        self.buf.is_empty() && self.oversized.is_none() && self.asm.is_empty()
    }

    /// Partial messages forced out since the last call.
    pub fn take_forced_partials(&mut self) -> u64 {
        std::mem::take(&mut self.asm.forced_out)
    }

    /// Reads one chunk and hands over the records it completes.
    pub fn read_chunk(&mut self, sink: &mut Sink<'_>) -> io::Result<Read1> {
        let len = self.buf.len();
        self.buf.resize(len + CHUNK, 0);
        let n = loop {
            let r = match &mut self.input {
                Input::Closed => Ok(0),
                Input::File(f) => f.read_at(&mut self.buf[len..], self.pos),
                Input::Gz(d) => d.read(&mut self.buf[len..]),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(e);
                }
                Ok(n) => break n,
            }
        };
        self.buf.truncate(len + n);
        if n == 0 {
            self.at_eof = true;
            return Ok(Read1::Eof);
        }
        // A live file truncated and rewritten past our position would hand
        // us someone else's bytes: check the head after reading, so what was
        // read is known to come from the file we think it does.
        if let (Input::File(f), State::Live) = (&self.input, self.state)
            && !head_matches(f, self.fp)?
        {
            self.buf.truncate(len);
            return Ok(Read1::Truncated);
        }
        self.pos += n as u64;
        self.tally.read_bytes += n as u64;
        self.at_eof = false;
        self.last_data = Instant::now();
        self.process(sink, false);
        Ok(Read1::Data(n))
    }

    /// Hands over an open partial message that has kept complete records of
    /// the other stream waiting for `max_wait`.
    pub fn flush_blocked(&mut self, sink: &mut Sink<'_>, max_wait: std::time::Duration) {
        // Resume positions must not pass a raw line not yet assembled.
        let raw_pos = match &self.oversized {
            Some(ov) => ov.start.min(self.buf_off),
            None => self.buf_off,
        };
        let mut out = Vec::new();
        self.asm
            .flush_blocked(max_wait, raw_pos, &mut |r| out.push(r));
        for r in out {
            self.emit(r, sink);
        }
    }

    /// Turns a record into an entry (shared by every path that emits).
    fn emit(&mut self, r: Record, sink: &mut Sink<'_>) {
        emit_record(
            r,
            &self.key,
            &self.meta,
            &mut self.tally,
            &mut self.counts,
            &mut self.skips,
            &mut self.emitted_end,
            sink,
        );
    }

    /// The file is done (released or lost its data): hands over what is held.
    /// A trailing fragment without `\n` is a line of a plain file, garbage in
    /// a runtime format (the runtime always ends its lines).
    pub fn finish(&mut self, sink: &mut Sink<'_>) {
        self.process(sink, true);
        self.state = State::Finished;
        self.close();
    }

    fn process(&mut self, sink: &mut Sink<'_>, at_end: bool) {
        let Source {
            key,
            meta,
            format,
            buf,
            buf_off,
            max_raw,
            oversized,
            asm,
            emitted_end,
            skips,
            counts,
            tally,
            pos,
            ..
        } = self;
        let now_ns = vigil_common::time::now_ns();
        let mut garbage = 0u64;
        let mut emit = |r: Record| {
            emit_record(r, key, meta, tally, counts, skips, emitted_end, sink);
        };
        let mut start = 0usize;
        if let Some(ov) = oversized.as_ref() {
            match memchr::memchr(b'\n', buf) {
                None => {
                    *buf_off += buf.len() as u64;
                    buf.clear();
                    if !at_end {
                        return;
                    }
                }
                Some(i) => start = i + 1,
            }
            let end = *buf_off + start as u64;
            match &ov.piece {
                Some((ts, stream, partial, msg)) => asm.push(
                    ov.start,
                    end,
                    Piece {
                        timestamp_ns: *ts,
                        stream: *stream,
                        partial: *partial,
                        msg: msg.as_slice().into(),
                    },
                    true,
                    &mut emit,
                ),
                None => garbage += 1,
            }
            *oversized = None;
        }
        while let Some(i) = memchr::memchr(b'\n', &buf[start..]) {
            let line_start = *buf_off + start as u64;
            let line_end = line_start + i as u64 + 1;
            decode(
                &buf[start..start + i],
                line_start,
                line_end,
                format,
                now_ns,
                asm,
                &mut garbage,
                &mut emit,
            );
            start += i + 1;
        }
        let rest = buf.len() - start;
        if at_end && rest > 0 {
            if *format == Some(Format::Plain) || format.is_none() {
                let line_start = *buf_off + start as u64;
                decode(
                    &buf[start..],
                    line_start,
                    *pos,
                    &mut Some(Format::Plain),
                    now_ns,
                    asm,
                    &mut garbage,
                    &mut emit,
                );
            } else {
                garbage += 1;
            }
            start = buf.len();
        } else if rest > *max_raw {
            let line = &buf[start..start + *max_raw];
            let fmt = *format.get_or_insert_with(|| Format::detect(line));
            let piece = match fmt {
                Format::Cri => cri::parse(line).ok(),
                Format::Docker => docker::parse(line).ok(),
                Format::Plain => Some(plain(line, now_ns)),
            };
            *oversized = Some(Oversized {
                start: *buf_off + start as u64,
                piece: piece.map(|p| (p.timestamp_ns, p.stream, p.partial, p.msg.into_owned())),
            });
            start = buf.len();
        }
        if start > 0 {
            buf.copy_within(start.., 0);
            buf.truncate(buf.len() - start);
            *buf_off += start as u64;
        }
        if at_end {
            asm.finish(*pos, &mut emit);
        }
        tally.garbage += garbage;
    }
}

#[allow(clippy::too_many_arguments)]
fn emit_record(
    r: Record,
    key: &Arc<SourceKey>,
    meta: &SourceMeta,
    tally: &mut Tally,
    counts: &mut LineCounts,
    skips: &mut VecDeque<(u64, [u64; 2])>,
    emitted_end: &mut u64,
    sink: &mut Sink<'_>,
) {
    let level = level::detect(&r.msg);
    let len = r.msg.len();
    let line = match String::from_utf8(r.msg) {
        Ok(s) => s,
        Err(e) => {
            tally.invalid_utf8 += 1;
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        }
    };
    if r.truncated {
        tally.truncated += 1;
    }
    counts.add(r.stream, level, len);
    if r.skip_until != [0; 2] {
        skips.push_back((r.end_offset, r.skip_until));
    }
    *emitted_end = r.end_offset;
    *sink.bytes += len + ENTRY_OVERHEAD;
    sink.entries.push(LogRecord {
        stream: meta.labels[r.stream.index()].clone(),
        source: key.clone(),
        offset: r.offset,
        end_offset: r.end_offset,
        timestamp_ns: r.timestamp_ns,
        line,
    });
}

/// Rough per-entry memory beyond the message (labels, key, the entry), used
/// to size batches.
pub const ENTRY_OVERHEAD: usize = 160;

fn plain(line: &[u8], now_ns: i64) -> Piece<'_> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Piece {
        timestamp_ns: now_ns,
        stream: Stream::Stdout,
        partial: false,
        msg: line.into(),
    }
}

#[allow(clippy::too_many_arguments)]
fn decode(
    line: &[u8],
    start: u64,
    end: u64,
    format: &mut Option<Format>,
    now_ns: i64,
    asm: &mut Assembler,
    garbage: &mut u64,
    emit: &mut impl FnMut(Record),
) {
    let fmt = *format.get_or_insert_with(|| Format::detect(line));
    let piece = match fmt {
        Format::Cri => cri::parse(line),
        Format::Docker => docker::parse(line),
        Format::Plain => Ok(plain(line, now_ns)),
    };
    match piece {
        Ok(p) => asm.push(start, end, p, false, emit),
        Err(_) => *garbage += 1,
    }
}
