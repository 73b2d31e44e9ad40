//! When a [`FileLog`](super::FileLog) makes its appends durable: the flush policy (RocketMQ's
//! asynchronous flush service, `FlushRealTimeService`), the schedule that applies it to the
//! times it is handed, and a flush prepared under the log's lock but run outside it.
//!
//! The decision is a pure function of the time passed in and the log's offsets, so it is tested
//! here without clocks or disks; the system calls happen in [`PendingFlush::run`].

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::checkpoint::sync_dir;
use super::error::FileLogError;

/// RocketMQ counts dirty data in pages of 4096 bytes, whatever the machine's page size
/// (`MappedFile.OS_PAGE_SIZE`); so do we, so that `min_dirty_pages` means the same.
pub const FLUSH_PAGE_SIZE: u64 = 4096;

/// How often, and for how little new data, a [`FileLog`](super::FileLog) in
/// [`FlushMode::Periodic`] makes its appends durable: RocketMQ's asynchronous flush
/// (`flushDiskType=ASYNC_FLUSH`).
///
/// Every `interval` the log looks at what was appended since the last flush. If that spans at
/// least `min_dirty_pages` 4 KiB pages (counted as RocketMQ does: page of the end minus page of
/// the last flushed offset), it flushes. At the first tick, and then at the first tick at least
/// `full_interval` after the last such "thorough" tick, any unflushed byte is enough. So with
/// the defaults at most about 0.5 s of a busy log is unsynced, and at most 10 s of a trickle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Time between two flush decisions (`flushIntervalCommitLog`, 500 ms).
    pub interval: Duration,
    /// Fewest new 4 KiB pages worth an ordinary flush (`flushCommitLogLeastPages`, 4); 0 flushes
    /// whenever anything is new.
    pub min_dirty_pages: u64,
    /// Time after which a tick flushes even a single new byte
    /// (`flushCommitLogThoroughInterval`, 10 s).
    pub full_interval: Duration,
}

impl FlushPolicy {
    /// RocketMQ's defaults: 500 ms, 4 pages, 10 s.
    pub const ROCKETMQ: FlushPolicy = FlushPolicy {
        interval: Duration::from_millis(500),
        min_dirty_pages: 4,
        full_interval: Duration::from_secs(10),
    };

    /// A policy with these values (see the fields).
    pub fn new(interval: Duration, min_dirty_pages: u64, full_interval: Duration) -> FlushPolicy {
        FlushPolicy {
            interval,
            min_dirty_pages,
            full_interval,
        }
    }
}

impl Default for FlushPolicy {
    /// [`FlushPolicy::ROCKETMQ`].
    fn default() -> FlushPolicy {
        FlushPolicy::ROCKETMQ
    }
}

/// When a [`FileLog`](super::FileLog) makes appends durable (it always does on
/// [`sync`](super::FileLog::sync), [`close`](super::FileLog::close) and, best effort, on drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive] // e.g. RocketMQ's group commit could come
pub enum FlushMode {
    /// Flush on the schedule of a [`FlushPolicy`], driven by whoever calls
    /// [`maybe_flush`](super::FileLog::maybe_flush) (or runs a [`Flusher`](super::Flusher)):
    /// RocketMQ's default. An append returns once its bytes are in the page cache, so a slave's
    /// ack means "survives the slave process being killed", not "survives a power loss".
    Periodic(FlushPolicy),
    /// Every append returns only once its bytes are on disk and recorded in the checkpoint: a
    /// slave's ack then means "on the slave's disk" (RocketMQ never promises that; its slave
    /// acks what it has written). Costs a few disk flushes per append.
    EveryAppend,
    /// Only explicit [`sync`](super::FileLog::sync) and [`close`](super::FileLog::close) (and
    /// the roll to a new segment) flush.
    Manual,
}

impl Default for FlushMode {
    /// `Periodic(FlushPolicy::ROCKETMQ)`.
    fn default() -> FlushMode {
        FlushMode::Periodic(FlushPolicy::ROCKETMQ)
    }
}

/// The ticks of a [`FlushPolicy`] over the times handed in.
#[derive(Debug, Default, Clone)]
pub(super) struct Schedule {
    /// When the next decision is due; `None` before the first, which is due at once.
    next_tick: Option<Instant>,
    /// When the last thorough tick happened; `None` makes the next tick thorough, as RocketMQ's
    /// first round is (its `lastFlushTimestamp` starts at 0).
    last_full: Option<Instant>,
}

impl Schedule {
    /// When the next decision is due: `now` if it is overdue or none was taken yet.
    pub(super) fn due(&self, now: Instant) -> Instant {
        self.next_tick.map_or(now, |t| t.max(now))
    }

    /// Takes the decision due at `now`: `None` if it is not due yet, else the fewest dirty pages
    /// that warrant a flush at this tick (0: any byte).
    pub(super) fn tick(&mut self, policy: &FlushPolicy, now: Instant) -> Option<u64> {
        if self.next_tick.is_some_and(|t| now < t) {
            return None;
        }
        let full = self
            .last_full
            .is_none_or(|last| now.saturating_duration_since(last) >= policy.full_interval);
        if full {
            self.last_full = Some(now);
        }
        // From now, not from the missed tick: a caller that was late gets one flush, not a
        // burst of catch-up ticks.
        self.next_tick = Some(now.checked_add(policy.interval).unwrap_or(now));
        Some(if full { 0 } else { policy.min_dirty_pages })
    }
}

/// Whether a log whose durable end is `synced` and whose end is `max` holds enough new data for
/// a flush that needs `least` dirty pages (RocketMQ's `MappedFile.isAbleToFlush`).
pub(super) fn flush_warranted(synced: u64, max: u64, least: u64) -> bool {
    if max <= synced {
        return false;
    }
    least == 0 || max / FLUSH_PAGE_SIZE - synced / FLUSH_PAGE_SIZE >= least
}

/// A flush taken from a [`FileLog`](super::FileLog) by
/// [`prepare_flush`](super::FileLog::prepare_flush): the disk flushes to do, on handles of its
/// own, so that they can run without the log's lock while appends go on.
///
/// Run it, then hand the result back with [`finish_flush`](super::FileLog::finish_flush), which
/// records the new durable offset in the checkpoint.
#[derive(Debug)]
#[must_use = "a prepared flush does nothing until it is run and finished"]
pub struct PendingFlush {
    pub(super) epoch: u64,
    pub(super) target: u64,
    /// The tail segment, duplicated (`dup`): the writer may close its own handle meanwhile.
    pub(super) file: Option<(PathBuf, File)>,
    /// `commitlog/` with the directory generation it covers, if files were created since its
    /// last fsync.
    pub(super) dir: Option<(PathBuf, u64)>,
}

impl PendingFlush {
    /// The offset everything below which is durable once this flush succeeds.
    pub fn target(&self) -> u64 {
        self.target
    }

    /// Flushes the data (`fdatasync`) and then the directory. Takes as long as the disk needs;
    /// call it without holding the log's lock.
    pub fn run(self) -> FlushDone {
        let mut done = FlushDone {
            epoch: self.epoch,
            target: self.target,
            dir_generation: None,
            result: Ok(()),
            data_failed: false,
        };
        if let Some((path, file)) = &self.file {
            if let Err(e) = file.sync_data() {
                done.data_failed = true;
                done.result = Err(FileLogError::io("fsync", path, e));
                return done;
            }
        }
        if let Some((dir, generation)) = &self.dir {
            if let Err(e) = sync_dir(dir) {
                done.result = Err(e);
                return done;
            }
            done.dir_generation = Some(*generation);
        }
        done
    }
}

/// The outcome of [`PendingFlush::run`], for [`finish_flush`](super::FileLog::finish_flush).
#[derive(Debug)]
#[must_use = "only finish_flush records a flush in the checkpoint"]
pub struct FlushDone {
    pub(super) epoch: u64,
    pub(super) target: u64,
    pub(super) dir_generation: Option<u64>,
    pub(super) result: Result<(), FileLogError>,
    /// Whether flushing data failed: the kernel may then have dropped the dirty pages and a
    /// retry would report success, so the log must stop (module docs of `FileLog::sync`).
    pub(super) data_failed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_first_tick_is_due_at_once_and_thorough() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        assert_eq!(s.due(t0), t0);
        assert_eq!(s.tick(&FlushPolicy::ROCKETMQ, t0), Some(0));
        assert_eq!(s.due(t0), t0 + 500 * MS);
    }

    #[test]
    fn ticks_come_every_interval_and_thorough_ones_every_full_interval() {
        let p = FlushPolicy::ROCKETMQ;
        let t0 = Instant::now();
        let mut s = Schedule::default();
        assert_eq!(s.tick(&p, t0), Some(0));
        // Not due before the interval has passed.
        assert_eq!(s.tick(&p, t0 + 499 * MS), None);
        let mut thorough = Vec::new();
        for i in 1..=40u32 {
            let now = t0 + 500 * MS * i;
            match s.tick(&p, now) {
                Some(0) => thorough.push(i),
                Some(4) => {}
                other => panic!("tick {i}: {other:?}"),
            }
        }
        // 10 s / 500 ms: every 20th tick.
        assert_eq!(thorough, vec![20, 40]);
    }

    #[test]
    fn a_late_caller_gets_one_tick_not_a_burst() {
        let p = FlushPolicy::ROCKETMQ;
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.tick(&p, t0);
        let late = t0 + 3 * p.interval + 7 * MS;
        assert!(s.tick(&p, late).is_some());
        assert_eq!(s.tick(&p, late), None);
        assert_eq!(s.due(late), late + p.interval);
    }

    #[test]
    fn dirty_pages_are_counted_like_rocketmq() {
        // Nothing new: never.
        assert!(!flush_warranted(8192, 8192, 0));
        // A thorough tick takes a single byte.
        assert!(flush_warranted(8192, 8193, 0));
        // 3 pages crossed is not 4...
        assert!(!flush_warranted(4095, 3 * 4096 + 100, 4));
        // ...page numbers, not byte counts: 4 page boundaries crossed with fewer than 4 pages
        // of bytes is enough, as in `MappedFile.isAbleToFlush`.
        assert!(flush_warranted(4095, 4 * 4096, 4));
        assert!(!flush_warranted(0, 4 * 4096 - 1, 4));
        assert!(flush_warranted(0, 4 * 4096, 4));
        // min_dirty_pages 0 flushes whatever is new at every tick.
        assert!(flush_warranted(10, 11, 0));
    }
}
