//! The slave's read buffer, shared by the classic and the AutoSwitch slave loops: where reads
//! land, how much a read is lent, and how the bytes reach the machine without a copy.

use bytes::BytesMut;

/// The smallest read lent; also what an idle connection keeps allocated.
pub(crate) const READ_MIN: usize = 8 * 1024;
/// The largest read lent.
pub(crate) const READ_MAX: usize = 256 * 1024;

/// A buffer reads fill and the machine drains.
///
/// It holds the bytes of an incomplete frame (the first `filled`), then initialized room that
/// reads fill. Room left over after a read is lent again as it is, so bytes are zero-filled
/// once per pass through the buffer rather than once per read.
#[derive(Debug)]
pub(crate) struct ReadBuffer {
    buf: BytesMut,
    /// How many bytes at the front of `buf` are data from the peer.
    filled: usize,
    /// How much to lend a read: grows while reads fill what they are lent (a bulk transfer),
    /// shrinks while they do not (an idle connection), between [`READ_MIN`] and [`READ_MAX`].
    chunk: usize,
}

impl Default for ReadBuffer {
    fn default() -> Self {
        ReadBuffer {
            buf: BytesMut::new(),
            filled: 0,
            chunk: READ_MIN,
        }
    }
}

impl ReadBuffer {
    /// Bytes of an incomplete frame held.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf[..self.filled]
    }

    /// Bytes allocated (for tests of bounded memory).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Room to read into. `wanted` is how long the frame being assembled is, as far as the
    /// machine knows it (already bounded by the largest valid frame): room for all of it is
    /// reserved at once, so a large frame is not copied as the buffer grows. Twice the read
    /// size is initialized, so the next few reads reuse it without zero-filling.
    pub(crate) fn lend(&mut self, wanted: usize) -> &mut [u8] {
        if self.buf.len() - self.filled < self.chunk {
            self.buf.truncate(self.filled);
            self.buf.reserve(wanted.max(2 * self.chunk));
            self.buf.resize(self.filled + 2 * self.chunk, 0);
        }
        &mut self.buf[self.filled..]
    }

    /// `n` bytes were read into [`lend`](Self::lend)'s room (more than it lent is clamped);
    /// `consume` gets the data and takes the whole frames from its front. Returns `n` as
    /// clamped, and what `consume` returned.
    pub(crate) fn fill<R>(
        &mut self,
        n: usize,
        consume: impl FnOnce(&mut BytesMut) -> R,
    ) -> (usize, R) {
        let lent = self.buf.len() - self.filled;
        let n = n.min(lent);
        // A read that filled what it was lent suggests more is waiting: read more at once. A
        // read far smaller than that suggests an idle connection: lend less.
        if n == lent {
            self.chunk = (2 * self.chunk).min(READ_MAX);
        } else if n < self.chunk / 4 {
            self.chunk = (self.chunk / 2).max(READ_MIN);
        }
        // Hand over only the data; the room after it stays in `self.buf`.
        let mut data = self.buf.split_to(self.filled + n);
        let result = consume(&mut data);
        self.filled = data.len();
        // `data` ends where the room begins, so this joins them without copying.
        data.unsplit(std::mem::take(&mut self.buf));
        self.buf = data;
        if self.filled == 0 && self.chunk == READ_MIN && self.buf.capacity() > 4 * READ_MIN {
            // Idle with nothing pending: give a burst's large buffer back rather than hold it
            // for the life of the connection.
            self.buf = BytesMut::new();
        }
        (n, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grow_while_full_shrink_while_idle_and_keep_a_partial_frame() {
        let mut b = ReadBuffer::default();
        let lent = b.lend(0).len();
        assert_eq!(lent, 2 * READ_MIN);
        // A full read: the next is lent more.
        let (n, ()) = b.fill(lent, |data| {
            assert_eq!(data.len(), lent);
            // Keep 10 bytes of a frame that is not complete yet.
            let _ = data.split_to(lent - 10);
        });
        assert_eq!(n, lent);
        assert_eq!(b.buffered().len(), 10);
        assert!(b.lend(0).len() >= 2 * READ_MIN);
        // A read claiming more than lent is clamped.
        let room = b.lend(0).len();
        let (n, ()) = b.fill(room + 5, |data| {
            data.clear();
        });
        assert_eq!(n, room);
        // Small reads shrink the loan back, and an idle buffer gives its memory back.
        for _ in 0..8 {
            b.lend(0);
            b.fill(1, |data| data.clear());
        }
        assert!(b.capacity() <= 4 * READ_MIN, "holds {}", b.capacity());
    }

    #[test]
    fn room_for_a_large_frame_is_reserved_at_once() {
        let mut b = ReadBuffer::default();
        b.lend(1 << 20);
        assert!(b.capacity() >= 1 << 20);
    }
}
