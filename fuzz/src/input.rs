//! A cursor over the fuzzer's bytes that turns them into choices.
//!
//! Every read succeeds: once the bytes run out, numbers read as zero and byte runs as empty, so
//! any input, including the empty one, is a valid program for a harness. Numbers are read
//! big-endian from as few bytes as they need, which keeps the fuzzer's mutations local: changing
//! one byte changes one choice.

/// The fuzzer's bytes, consumed front to back.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// Whether every byte has been used.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Bytes not yet used.
    pub fn remaining(&self) -> usize {
        self.data.len()
    }

    /// One byte, or 0 at the end.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// Two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from(self.u8()) << 8 | u16::from(self.u8())
    }

    /// Four bytes, big-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from(self.u16()) << 16 | u32::from(self.u16())
    }

    /// Eight bytes, big-endian.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) << 32 | u64::from(self.u32())
    }

    /// A coin: the low bit of one byte.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A number in `lo..=hi` from one byte (ranges up to 256 values are uniform).
    pub fn small(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(lo <= hi);
        lo + u64::from(self.u8()) % (hi - lo + 1)
    }

    /// A number in `lo..=hi` from two bytes.
    pub fn medium(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(lo <= hi);
        lo + u64::from(self.u16()) % (hi - lo + 1)
    }

    /// Up to `max` bytes (fewer at the end of the input), the length taken from one byte
    /// scaled to `max`.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let len = if max == 0 {
            0
        } else {
            usize::from(self.u8()) % (max + 1)
        };
        self.take(len)
    }

    /// Exactly `len` bytes, or all that is left.
    pub fn take(&mut self, len: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }
}

/// SplitMix64: a tiny deterministic generator, used by the stable tests to make inputs.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_zero() {
        let mut i = Input::new(&[1, 2, 3]);
        assert_eq!(i.u16(), 0x0102);
        assert_eq!(i.u16(), 0x0300);
        assert_eq!(i.u64(), 0);
        assert!(i.take(5).is_empty());
        assert!(i.is_empty());
    }
}
