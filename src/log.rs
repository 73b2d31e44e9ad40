//! The commit log as the machines see it: [`LogSource`] for the master to read, [`LogSink`] for
//! the slave to append, and [`MemoryLog`], an in-memory segmented log for tests and simulation.
//!
//! A RocketMQ CommitLog is a sequence of fixed-size segments (mapped files of
//! `mappedFileSizeCommitLog` bytes); segment *k* covers `[k·F, (k+1)·F)` (§0.3). Replication never
//! lets a frame cross a segment boundary (§3.3), so reads here never do either.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::error::LogError;

/// What the master reads from: a segmented log with a retained range `[min_offset, max_offset)`.
pub trait LogSource {
    /// The oldest retained offset (older segments were deleted).
    fn min_offset(&self) -> u64;

    /// One past the last byte in the log.
    fn max_offset(&self) -> u64;

    /// The fixed segment size `F` (`mappedFileSizeCommitLog`, 1 GiB by default).
    fn segment_size(&self) -> u64;

    /// Up to `max_len` bytes starting at `offset`, never crossing a segment boundary.
    ///
    /// May return fewer bytes than available (e.g. at an internal chunk boundary) but at least
    /// one byte whenever `offset < max_offset()`. Returns an empty buffer at `max_offset()`,
    /// [`LogError::BelowRetained`] below `min_offset()` and [`LogError::AboveMax`] above the end.
    fn read(&self, offset: u64, max_len: usize) -> Result<Bytes, LogError>;

    /// Where the `len` bytes at `offset` (as [`read`](Self::read) just returned them) lie in a
    /// file, if they do: a hint that lets a driver send a body from the file (`sendfile`)
    /// instead of copying it from memory. `None` (the default) means: send what `read`
    /// returned. A log that answers must answer for exactly those bytes.
    fn file_region(&self, offset: u64, len: usize) -> Option<FileRegion> {
        let _ = (offset, len);
        None
    }
}

/// Where a frame's body lies in a file: a handle the log and the driver agree on, and the
/// position of the body's first byte in it (see [`LogSource::file_region`]).
///
/// The core never looks inside the handle; it only carries it from the log to the driver with
/// the frame, so the handle keeps the file open while the frame is written. A driver that does
/// not know the handle's type (or whose socket cannot send from files, e.g. TLS) writes the
/// frame's bytes as usual.
#[derive(Clone)]
pub struct FileRegion {
    file: Arc<dyn Any + Send + Sync>,
    position: u64,
}

impl FileRegion {
    /// The bytes at `position` in `file`.
    pub fn new(file: Arc<dyn Any + Send + Sync>, position: u64) -> Self {
        FileRegion { file, position }
    }

    /// The file handle, for the driver to downcast to the type its log uses.
    pub fn file(&self) -> &(dyn Any + Send + Sync) {
        &*self.file
    }

    /// The position of the body's first byte in the file.
    pub fn position(&self) -> u64 {
        self.position
    }
}

impl fmt::Debug for FileRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileRegion")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

/// What the slave appends to; the slave's log must stay a byte-exact prefix of the master's.
pub trait LogSink: LogSource {
    /// Appends `data` at exactly `offset` and returns the new max offset.
    ///
    /// `offset` must equal [`LogSource::max_offset`], except that a log holding no bytes at all
    /// accepts any start offset (an empty slave starts where the master says, §4.4). Anything
    /// else is [`LogError::NotContiguous`] and writes nothing.
    fn append(&mut self, offset: u64, data: Bytes) -> Result<u64, LogError>;

    /// Appends `pieces` one after the other starting at `offset`, as if by one
    /// [`append`](Self::append) each, and returns the new max offset. On an error the pieces
    /// before the failing one may be appended; [`LogSource::max_offset`] says how far.
    ///
    /// A slave's driver hands over all the frames of one read at once, so a log that can write
    /// them in one system call (a vectored write) overrides this; the default appends each.
    fn append_all(&mut self, offset: u64, pieces: &[Bytes]) -> Result<u64, LogError> {
        let (mut at, mut end) = (offset, self.max_offset());
        for piece in pieces {
            end = self.append(at, piece.clone())?;
            at = end;
        }
        Ok(end)
    }
}

impl<T: LogSource + ?Sized> LogSource for &T {
    fn min_offset(&self) -> u64 {
        (**self).min_offset()
    }
    fn max_offset(&self) -> u64 {
        (**self).max_offset()
    }
    fn segment_size(&self) -> u64 {
        (**self).segment_size()
    }
    fn read(&self, offset: u64, max_len: usize) -> Result<Bytes, LogError> {
        (**self).read(offset, max_len)
    }
    fn file_region(&self, offset: u64, len: usize) -> Option<FileRegion> {
        (**self).file_region(offset, len)
    }
}

impl<T: LogSource + ?Sized> LogSource for Arc<T> {
    fn min_offset(&self) -> u64 {
        (**self).min_offset()
    }
    fn max_offset(&self) -> u64 {
        (**self).max_offset()
    }
    fn segment_size(&self) -> u64 {
        (**self).segment_size()
    }
    fn read(&self, offset: u64, max_len: usize) -> Result<Bytes, LogError> {
        (**self).read(offset, max_len)
    }
    fn file_region(&self, offset: u64, len: usize) -> Option<FileRegion> {
        (**self).file_region(offset, len)
    }
}

/// Start of the segment holding `offset`.
pub fn segment_start(offset: u64, segment_size: u64) -> u64 {
    offset - offset % segment_size
}

/// An in-memory segmented commit log.
///
/// Appended buffers are kept as shared [`Bytes`] chunks (split at segment boundaries), so reads
/// within one chunk are zero-copy; a read spanning chunks copies once.
#[derive(Debug, Clone)]
pub struct MemoryLog {
    segment_size: u64,
    min: u64,
    max: u64,
    /// Chunks keyed by start offset; contiguous, covering `[min, max)`, none crossing a segment.
    chunks: BTreeMap<u64, Bytes>,
}

impl MemoryLog {
    /// An empty log at offset 0 with segments of `segment_size` bytes.
    ///
    /// # Panics
    /// If `segment_size` is 0 (a programming error, not input from the network).
    pub fn new(segment_size: u64) -> Self {
        Self::with_base(segment_size, 0)
    }

    /// An empty log whose first byte will be at `base`, as if everything before had been
    /// deleted.
    ///
    /// # Panics
    /// If `segment_size` is 0.
    pub fn with_base(segment_size: u64, base: u64) -> Self {
        assert!(segment_size > 0, "segment size must be positive");
        MemoryLog {
            segment_size,
            min: base,
            max: base,
            chunks: BTreeMap::new(),
        }
    }

    /// Number of bytes held.
    pub fn len(&self) -> u64 {
        self.max - self.min
    }

    /// Whether the log holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.max == self.min
    }

    /// Appends at the end of the log (the master's producer path); returns the new max offset.
    pub fn push(&mut self, data: impl Into<Bytes>) -> u64 {
        let mut data: Bytes = data.into();
        while !data.is_empty() {
            let room = self.segment_size - self.max % self.segment_size;
            let piece = data.split_to(data.len().min(room as usize));
            let len = piece.len() as u64;
            self.chunks.insert(self.max, piece);
            self.max += len;
        }
        self.max
    }

    /// Deletes whole segments that lie entirely below `offset` (RocketMQ's retention: files are
    /// deleted, never partially trimmed). Returns the new min offset.
    pub fn delete_segments_before(&mut self, offset: u64) -> u64 {
        let new_min = segment_start(offset.min(self.max), self.segment_size).max(self.min);
        if new_min == self.min {
            return self.min;
        }
        // A chunk never crosses a segment, and `new_min` is a segment start, so chunks split
        // cleanly at it.
        self.chunks = self.chunks.split_off(&new_min);
        self.min = new_min;
        self.min
    }

    /// Drops every byte at or above `offset`, as a master that lost its unflushed tail in a
    /// restart (§7.2 #10). Returns the new max offset.
    pub fn truncate(&mut self, offset: u64) -> u64 {
        if offset >= self.max {
            return self.max;
        }
        let offset = offset.max(self.min);
        let mut tail = self.chunks.split_off(&offset);
        if let Some((&start, chunk)) = self.chunks.iter_mut().next_back() {
            let end = start + chunk.len() as u64;
            if end > offset {
                chunk.truncate((offset - start) as usize);
            }
        }
        tail.clear();
        self.max = offset;
        self.max
    }

    /// A copy of `[start, end)`, for comparing logs in tests.
    pub fn copy_range(&self, start: u64, end: u64) -> Result<Vec<u8>, LogError> {
        let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
        let mut at = start;
        while at < end {
            let piece = self.read(at, (end - at) as usize)?;
            if piece.is_empty() {
                return Err(LogError::AboveMax {
                    offset: end,
                    max: self.max,
                });
            }
            at += piece.len() as u64;
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }
}

impl LogSource for MemoryLog {
    fn min_offset(&self) -> u64 {
        self.min
    }

    fn max_offset(&self) -> u64 {
        self.max
    }

    fn segment_size(&self) -> u64 {
        self.segment_size
    }

    fn read(&self, offset: u64, max_len: usize) -> Result<Bytes, LogError> {
        if offset < self.min {
            return Err(LogError::BelowRetained {
                offset,
                min: self.min,
            });
        }
        if offset > self.max {
            return Err(LogError::AboveMax {
                offset,
                max: self.max,
            });
        }
        let segment_end = segment_start(offset, self.segment_size) + self.segment_size;
        let want = (max_len as u64)
            .min(segment_end - offset)
            .min(self.max - offset) as usize;
        if want == 0 {
            return Ok(Bytes::new());
        }
        let mut chunks =
            self.chunks
                .range(..=offset)
                .next_back()
                .into_iter()
                .chain(self.chunks.range((
                    std::ops::Bound::Excluded(offset),
                    std::ops::Bound::Unbounded,
                )));
        let Some((&start, first)) = chunks.next() else {
            return Ok(Bytes::new());
        };
        let skip = (offset - start) as usize;
        if first.len() - skip >= want {
            return Ok(first.slice(skip..skip + want));
        }
        let mut out = BytesMut::with_capacity(want);
        out.extend_from_slice(&first[skip..]);
        for (_, chunk) in chunks {
            let take = (want - out.len()).min(chunk.len());
            out.extend_from_slice(&chunk[..take]);
            if out.len() == want {
                break;
            }
        }
        Ok(out.freeze())
    }
}

/// A log that can be cut back: an AutoSwitch slave whose log diverged from its new master's
/// is truncated to the last point their epoch lists share (§5.4 step 3).
pub trait LogTruncate: LogSink {
    /// Drops every byte at or above `offset` and returns the new max offset; an `offset` at or
    /// above the max changes nothing. A durable log must not bring the dropped bytes back after
    /// a crash.
    fn truncate_to(&mut self, offset: u64) -> Result<u64, LogError>;
}

impl LogTruncate for MemoryLog {
    /// A cut below the oldest retained byte drops every byte, and the empty log then ends at
    /// `offset` (an empty log accepts its next append anywhere).
    fn truncate_to(&mut self, offset: u64) -> Result<u64, LogError> {
        if offset < self.min {
            self.chunks.clear();
            self.min = offset;
            self.max = offset;
            return Ok(offset);
        }
        Ok(self.truncate(offset))
    }
}

impl LogSink for MemoryLog {
    fn append(&mut self, offset: u64, data: Bytes) -> Result<u64, LogError> {
        if self.is_empty() {
            self.min = offset;
            self.max = offset;
        }
        if offset != self.max {
            return Err(LogError::NotContiguous {
                offset,
                max: self.max,
            });
        }
        Ok(self.push(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(start: u64, len: usize) -> Vec<u8> {
        (start..start + len as u64)
            .map(|i| (i % 251) as u8)
            .collect()
    }

    #[test]
    fn reads_never_cross_segments() {
        let mut log = MemoryLog::new(100);
        log.push(pattern(0, 250));
        assert_eq!(log.max_offset(), 250);
        let r = log.read(90, 1000).unwrap();
        assert_eq!(r.len(), 10);
        assert_eq!(&r[..], &pattern(90, 10)[..]);
        assert_eq!(log.read(200, 1000).unwrap().len(), 50);
        assert!(log.read(250, 10).unwrap().is_empty());
        assert!(matches!(log.read(251, 1), Err(LogError::AboveMax { .. })));
    }

    #[test]
    fn read_spanning_chunks_copies_exactly() {
        let mut log = MemoryLog::new(1000);
        for i in 0..10 {
            log.push(pattern(i * 7, 7));
        }
        assert_eq!(&log.read(3, 50).unwrap()[..], &pattern(3, 50)[..]);
        assert_eq!(log.copy_range(0, 70).unwrap(), pattern(0, 70));
    }

    #[test]
    fn retention_deletes_whole_segments() {
        let mut log = MemoryLog::new(100);
        log.push(pattern(0, 350));
        assert_eq!(log.delete_segments_before(250), 200);
        assert_eq!(log.min_offset(), 200);
        assert!(matches!(
            log.read(199, 1),
            Err(LogError::BelowRetained { min: 200, .. })
        ));
        assert_eq!(&log.read(200, 10).unwrap()[..], &pattern(200, 10)[..]);
    }

    #[test]
    fn truncate_drops_tail() {
        let mut log = MemoryLog::new(100);
        log.push(pattern(0, 50));
        log.push(pattern(50, 50));
        assert_eq!(log.truncate(70), 70);
        assert_eq!(log.copy_range(0, 70).unwrap(), pattern(0, 70));
        assert!(log.read(70, 10).unwrap().is_empty());
        log.push(pattern(70, 5));
        assert_eq!(log.copy_range(0, 75).unwrap(), pattern(0, 75));
    }

    #[test]
    fn truncate_to_cuts_inside_a_chunk_and_at_a_segment_boundary() {
        let mut log = MemoryLog::new(100);
        log.push(pattern(0, 250));
        assert_eq!(log.truncate_to(300).unwrap(), 250);
        assert_eq!(log.truncate_to(137).unwrap(), 137);
        assert!(matches!(log.read(137, 1), Ok(b) if b.is_empty()));
        assert_eq!(log.truncate_to(100).unwrap(), 100);
        assert_eq!(log.copy_range(0, 100).unwrap(), pattern(0, 100));
        // The next append continues exactly there, with new bytes.
        assert_eq!(log.append(100, Bytes::from(vec![7u8; 5])).unwrap(), 105);
        assert_eq!(log.copy_range(100, 105).unwrap(), vec![7u8; 5]);
        // Below the oldest byte: nothing is left, and the log ends at the cut.
        log.delete_segments_before(100);
        assert_eq!(log.truncate_to(40).unwrap(), 40);
        assert!(log.is_empty());
        assert_eq!((log.min_offset(), log.max_offset()), (40, 40));
    }

    #[test]
    fn append_all_appends_each_piece_in_order() {
        let mut log = MemoryLog::new(8);
        let pieces = [
            Bytes::from(pattern(100, 5)),
            Bytes::new(),
            Bytes::from(pattern(105, 7)),
        ];
        assert_eq!(log.append_all(100, &pieces).unwrap(), 112);
        assert_eq!(log.copy_range(100, 112).unwrap(), pattern(100, 12));
        assert_eq!(log.append_all(112, &[]).unwrap(), 112);
        // A gap is refused as by `append`, and nothing after it is written.
        assert!(matches!(
            log.append_all(113, &pieces),
            Err(LogError::NotContiguous {
                offset: 113,
                max: 112
            })
        ));
        assert_eq!(log.max_offset(), 112);
    }

    #[test]
    fn sink_is_contiguous_and_empty_log_starts_anywhere() {
        let mut log = MemoryLog::new(100);
        assert_eq!(log.append(300, Bytes::from(pattern(300, 10))).unwrap(), 310);
        assert_eq!(log.min_offset(), 300);
        assert!(matches!(
            log.append(311, Bytes::from_static(b"x")),
            Err(LogError::NotContiguous {
                offset: 311,
                max: 310
            })
        ));
        assert_eq!(log.max_offset(), 310);
        assert_eq!(log.append(310, Bytes::from(pattern(310, 5))).unwrap(), 315);
    }
}
