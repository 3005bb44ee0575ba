//! Bit-level writer and reader for the Gorilla chunk encoding.
//!
//! Bits are written most significant first. The reader never panics: reading
//! past the end yields `None`, which the chunk decoder turns into an error.
//! Not here: what the bits mean (see [`super::chunk`]).

/// An append-only bit buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct BitWriter {
    bytes: Vec<u8>,
    /// Number of bits in use; the unused low bits of the last byte are zero.
    bit_len: u64,
}

/// Bytes the buffer grows by. Small steps keep the slack of 100,000 open
/// chunks low; a chunk of 120 samples grows a handful of times.
const GROW_STEP: usize = 16;

impl BitWriter {
    pub(crate) fn bit_len(&self) -> u64 {
        self.bit_len
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Heap bytes held (what memory accounting charges).
    pub(crate) fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    pub(crate) fn into_boxed(self) -> Box<[u8]> {
        self.bytes.into_boxed_slice()
    }

    /// Appends the low `n` bits of `value` (`n` ≤ 64), most significant first.
    pub(crate) fn write(&mut self, value: u64, n: u32) {
        debug_assert!(n <= 64);
        let mut left = n;
        while left > 0 {
            let used = (self.bit_len % 8) as u32;
            if used == 0 {
                if self.bytes.len() == self.bytes.capacity() {
                    self.bytes.reserve_exact(GROW_STEP);
                }
                self.bytes.push(0);
            }
            let free = 8 - used;
            let take = free.min(left);
            // the `take` bits of value just below bit `left`
            let chunk = ((value >> (left - take)) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.len() - 1;
            self.bytes[last] |= chunk << (free - take);
            left -= take;
            self.bit_len += u64::from(take);
        }
    }

    pub(crate) fn write_bit(&mut self, bit: bool) {
        self.write(u64::from(bit), 1);
    }
}

/// A reader over `bit_len` bits of `bytes`.
pub(crate) struct BitReader<'a> {
    bytes: &'a [u8],
    pos: u64,
    end: u64,
}

impl<'a> BitReader<'a> {
    /// Reads at most `bit_len` bits (clamped to the bytes present).
    pub(crate) fn new(bytes: &'a [u8], bit_len: u64) -> Self {
        BitReader {
            bytes,
            pos: 0,
            end: bit_len.min(bytes.len() as u64 * 8),
        }
    }

    /// Reads `n` bits (`n` ≤ 64); `None` past the end.
    pub(crate) fn read(&mut self, n: u32) -> Option<u64> {
        if n > 64 || self.pos + u64::from(n) > self.end {
            return None;
        }
        let mut out: u64 = 0;
        let mut left = n;
        while left > 0 {
            let byte = *self.bytes.get((self.pos / 8) as usize)?;
            let used = (self.pos % 8) as u32;
            let avail = 8 - used;
            let take = avail.min(left);
            let bits = (u64::from(byte) >> (avail - take)) & ((1u64 << take) - 1);
            out = (out << take) | bits;
            left -= take;
            self.pos += u64::from(take);
        }
        Some(out)
    }

    pub(crate) fn read_bit(&mut self) -> Option<bool> {
        self.read(1).map(|b| b == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back_mixed_widths() {
        let mut w = BitWriter::default();
        let items: Vec<(u64, u32)> = vec![
            (1, 1),
            (0, 1),
            (0x3, 2),
            (0x1234, 14),
            (u64::MAX, 64),
            (0, 64),
            (0x5a5a_5a5a_5a5a_5a5a, 64),
            (7, 3),
            (0, 0),
        ];
        for (v, n) in &items {
            w.write(*v, *n);
        }
        let total: u32 = items.iter().map(|(_, n)| n).sum();
        assert_eq!(w.bit_len(), u64::from(total));
        let mut r = BitReader::new(w.bytes(), w.bit_len());
        for (v, n) in &items {
            assert_eq!(r.read(*n), Some(*v), "width {n}");
        }
        assert_eq!(r.read(1), None);
    }

    #[test]
    fn reader_stops_at_the_end_without_panicking() {
        let mut r = BitReader::new(&[0xff], 100);
        assert_eq!(r.read(8), Some(0xff));
        assert_eq!(r.read(1), None);
        let mut r = BitReader::new(&[], 0);
        assert_eq!(r.read_bit(), None);
        let mut r = BitReader::new(&[1, 2], 16);
        assert_eq!(r.read(65), None);
    }
}
