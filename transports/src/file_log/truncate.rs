//! Cutting the log back: an AutoSwitch slave whose log diverged from its new master's is
//! truncated to the last point the two epoch lists share (§5.4 step 3, §5.6).
//!
//! Java only resets in-memory positions, so stale bytes can be "recovered" after a crash
//! (#10666). Here the cut is durable, and sound for readers holding slices: the segment that
//! holds the cut point is never shrunk in place (a reader's mapped slice past the new end
//! would fault, and later appends would change bytes under it); its prefix is copied to a new
//! file that is renamed over it, so the old file lives on, unchanged, for as long as it is
//! mapped. Segments after the cut are unlinked, which leaves their mappings valid as well.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;

use rocketmq_ha::{segment_start, LogError, LogTruncate};

use super::checkpoint::sync_dir;
use super::segments::map_segment;
use super::{remove_file, FileLog, FileLogError, StoreFormat};

/// The scratch file for the copied prefix, in the store root: `commitlog/` must hold nothing
/// but segments, and a leftover here after a crash is harmless (it is overwritten next time).
const TRUNCATE_TMP: &str = "ha-truncate.tmp";

impl FileLog {
    /// Cuts the log so it ends at `offset`, durably, and returns the new max offset; an
    /// `offset` at or above the max changes nothing (as in RocketMQ).
    ///
    /// The checkpoint is lowered first, so a machine crash at any point keeps at most
    /// `offset` bytes; a process crash part-way may leave the old tail, which the slave's next
    /// handshake cuts again (its epoch list still describes that tail, because the epoch file
    /// is cut only after the log). Costs a copy of at most one segment.
    ///
    /// A cut at or below the oldest retained byte leaves no byte: the store becomes empty,
    /// starting and ending at `offset` (the next append may start anywhere, as in a new
    /// store).
    ///
    /// A RocketMQ-format store keeps its segment files full-size: the rest of the segment that
    /// holds the cut is zeros, where RocketMQ's recovery walk stops. The cut must fall on a
    /// record boundary for a broker to recover up to it (an epoch's start is one); a cut inside
    /// a record makes recovery end at the record before, a shorter prefix of the same log. An
    /// empty RocketMQ-format store starts only on a segment boundary, so a cut below the
    /// oldest byte that is not on one is refused first ([`FileLogError::UnalignedStart`]),
    /// changing nothing.
    pub fn truncate_to(&mut self, offset: u64) -> Result<u64, FileLogError> {
        if self.poisoned {
            return Err(FileLogError::Poisoned);
        }
        if offset >= self.max {
            return Ok(self.max);
        }
        if self.format == StoreFormat::RocketMq {
            if offset <= self.min && !offset.is_multiple_of(self.segment_size) {
                return Err(FileLogError::UnalignedStart {
                    offset,
                    segment_size: self.segment_size,
                });
            }
            self.mark_abort()?;
            // Everything after the cut goes: nothing recovery rejected is left to clean.
            self.tail_dirty = false;
        }
        if offset <= self.min {
            return self.empty_at(offset);
        }
        if self.synced > offset {
            self.write_checkpoint(self.min, offset)?;
        }
        // The tail's descriptor may point at the file about to be replaced.
        self.tail = None;
        let keep = segment_start(offset, self.segment_size);
        let doomed: Vec<u64> = {
            let view = self.shared.view();
            let cut = if keep == offset { keep } else { keep + 1 };
            view.segments.range(cut..).map(|(&s, _)| s).rev().collect()
        };
        // Newest first: a crash part-way leaves contiguous segments.
        for start in doomed {
            remove_file(&self.segment_path(start))?;
            self.shared.view_mut().segments.remove(&start);
        }
        if keep < offset {
            self.replace_with_prefix(keep, offset)?;
        }
        sync_dir(&self.commitlog)?;
        self.max = offset;
        self.data_synced = self.data_synced.min(offset);
        self.shared.view_mut().max = offset;
        Ok(offset)
    }

    /// Drops every byte: the checkpoint first claims nothing, the segment files go newest
    /// first (a crash part-way leaves a contiguous store), then the empty store moves its start
    /// to `offset` as an empty store does before its first append.
    fn empty_at(&mut self, offset: u64) -> Result<u64, FileLogError> {
        if self.synced > self.min {
            self.write_checkpoint(self.min, self.min)?;
        }
        self.tail = None;
        let all: Vec<u64> = self.shared.view().segments.keys().rev().copied().collect();
        for start in all {
            remove_file(&self.segment_path(start))?;
            self.shared.view_mut().segments.remove(&start);
        }
        sync_dir(&self.commitlog)?;
        self.max = self.min;
        self.data_synced = self.data_synced.min(self.min);
        self.shared.view_mut().max = self.min;
        self.restart_at(offset)?;
        Ok(offset)
    }

    /// Replaces segment `start` by a new file holding its bytes below `end` (a hole stays a
    /// hole below the store's start).
    fn replace_with_prefix(&mut self, start: u64, end: u64) -> Result<(), FileLogError> {
        let path = self.segment_path(start);
        let tmp = self.root.join(TRUNCATE_TMP);
        let from = self.min.max(start);
        let prefix = self.shared.read(from, (end - from) as usize)?;
        debug_assert_eq!(prefix.len() as u64, end - from);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| FileLogError::io("create", &tmp, e))?;
        // RocketMQ's segments are full-size, zeros after the log's end.
        let len = match self.format {
            StoreFormat::RocketMq => self.segment_size,
            StoreFormat::Raw => end - start,
        };
        file.set_len(len)
            .and_then(|()| file.write_all_at(&prefix, from - start))
            .and_then(|()| file.sync_all())
            .map_err(|e| FileLogError::io("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| FileLogError::io("rename", &path, e))?;
        sync_dir(&self.root)?;
        let map = map_segment(&file, &path, self.segment_size)?;
        self.shared.view_mut().segments.insert(start, map);
        Ok(())
    }
}

impl LogTruncate for FileLog {
    fn truncate_to(&mut self, offset: u64) -> Result<u64, LogError> {
        FileLog::truncate_to(self, offset).map_err(LogError::from)
    }
}
