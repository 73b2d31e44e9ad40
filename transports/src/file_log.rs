//! A segmented commit log on disk in RocketMQ's layout, serving zero-copy reads from memory
//! maps: the [`LogSource`] a master reads and the [`LogSink`] a slave appends to.
//!
//! # Layout
//! ```text
//! <store>/commitlog/00000000000000000000   log bytes [0, F)
//! <store>/commitlog/00000000001073741824   log bytes [F, 2F)    (F = segment size, 1 GiB default)
//! <store>/ha-checkpoint                    ours: segment size, start offset, last synced offset
//! ```
//! Segment files are named by their 20-digit zero-padded start offset and hold the raw log bytes
//! and nothing else, exactly like RocketMQ's mapped files (§0.3): byte *k* of file *S* is the log
//! byte at offset *S + k*. Every segment but the last is exactly *F* bytes long; the last may be
//! shorter, and its length is where the log ends. So a store made with
//! `head -c N /dev/urandom > commitlog/00000000000000000000` is servable, with max offset *N*.
//! `commitlog/` must hold nothing but segments: anything else is reported, never skipped.
//!
//! A slave that starts empty in the middle of the master's log (§4.4, §4.5) creates the segment
//! holding its first offset *X* and writes at *X mod F*; the bytes before *X* in that file are a
//! hole, not log bytes, and the checkpoint records *X* as the start.
//!
//! # Reading and appending
//! A [`FileLog`] is the single writer. Reads ([`LogSource::read`]) are slices of a read-only
//! mapping of the whole segment, wrapped in [`Bytes`]: no copy, no system call, and the slice
//! stays valid after the segment is deleted. Reads never cross a segment (§3.3) and never go past
//! the max offset, even in the growing last segment. [`FileLog::reader`] hands out
//! [`FileLogReader`]s, cheap clonable read handles for other threads (e.g. one per slave
//! connection) that see every append as soon as it returns; they share only a read-write lock
//! around the segment table and the offsets, held for a map lookup per read. Sharing the
//! `FileLog` itself behind an `RwLock` works as well.
//!
//! Appends are positioned writes (`pwrite`, or `pwritev` for several pieces at once) into the
//! segment files, not stores into a writable mapping: the writer never page-faults, and files are not preallocated, so a file's length is
//! exactly the end of what was written to it. That is the basis of crash safety.
//!
//! # Crash safety
//! *Process crash (`kill -9`).* Data a write system call has put into the page cache survives
//! the process. A write interrupted by the kill leaves a prefix of its bytes, at their offsets,
//! and the file's length covers no more than what was written. A segment file is only created
//! once its predecessor holds all *F* bytes, and a failed write is cut off again before the next
//! one (or the log refuses further appends, [`FileLogError::Poisoned`]). Hence after a process
//! crash, the files' lengths are a prefix point of the log and every byte below it is what was
//! appended: reopening recovers the max offset from them, and a slave resumes byte-identical.
//!
//! *Machine crash (power loss, kernel panic).* The page cache is gone, and some file systems
//! leave files longer than the data that reached the disk. Only what was flushed is trusted
//! then. A flush fdatasyncs the tail segment, fsyncs `commitlog/` if files were created, and
//! only then records the synced offset in the checkpoint; the checkpoint is replaced atomically
//! (temporary file, fsync, rename, directory fsync). It therefore never claims bytes that are
//! not on disk. The checkpoint also records the kernel's boot id (Linux:
//! `/proc/sys/kernel/random/boot_id`). On open, a boot id other than the running kernel's means
//! the machine went down since: the max offset is then `min(synced offset, end of the files)`,
//! and the files are cut back to it. With the same boot id (or none known, as on other systems
//! or for a store without our checkpoint), the file lengths are trusted as above, and whatever
//! an earlier process left unsynced is fsynced at once, so that a later checkpoint may claim it.
//!
//! # Durability: when appends are flushed
//! The [`FlushMode`] says when (see its variants); in every mode, [`FileLog::sync`],
//! [`FileLog::close`], dropping the log (best effort) and the roll to a new segment flush.
//! - [`FlushMode::Periodic`] (the default, RocketMQ's `ASYNC_FLUSH`): a [`FlushPolicy`] (500 ms,
//!   4 pages, 10 s by default) decides at the times the caller hands to
//!   [`FileLog::maybe_flush`] or [`FileLog::prepare_flush`]; [`FileLog::flush_due`] says when to
//!   call next. The log reads no clock itself. [`Flusher`] is a thread that does this for a log
//!   shared as a [`SharedLog`](crate::SharedLog), flushing outside the log's lock
//!   ([`PendingFlush`]) so appends are not held up by the disk.
//! - [`FlushMode::EveryAppend`]: every append returns only once it is durable and checkpointed.
//! - [`FlushMode::Manual`]: only the explicit calls above.
//!
//! [`FileLog::synced_offset`] is what a machine crash cannot take away.
//!
//! # Open files
//! Only the tail segment (the one appended to) is open for writing. When the tail moves on to a
//! new segment, the sealed one is flushed and its file closed, so a log holds two descriptors
//! (the tail and the store lock) however many segments it has; reads go through memory
//! mappings, which keep no descriptor open.
//!
//! *Empty store moving its start.* A store holding no bytes accepts an append at any offset: its
//! leftover file (at most one, holding no log bytes) is deleted, the deletion made durable, then
//! the checkpoint names the new start, and only then is the new segment created. A crash between
//! any two steps leaves an empty store.
//!
//! # RocketMQ-format stores
//! Stores written by RocketMQ itself preallocate every segment to *F* bytes and find the end of
//! the log by parsing messages. [`FileLog::open`] recognises such a store ([`StoreFormat`],
//! [`FileLog::mode`]): RocketMQ's `checkpoint` file, or full-size segment files whose first
//! bytes are a record. Its max offset is then the end of the last valid record, found by
//! walking the records of the last [`RECOVERY_SEGMENTS`] segments as RocketMQ's normal recovery
//! does ([`FileLog::record_walk`]); the zeros after it are not log. Appending to such a store
//! creates full-size (sparse) segment files, and first cuts away what recovery did not accept:
//! segment files after the end are deleted and, if a bad record ended the walk, the rest of its
//! segment is zeroed (RocketMQ deletes and overwrites them as well). A failed write in this mode
//! poisons the log ([`FileLogError::Poisoned`]): a preallocated file cannot be cut back.
//!
//! A RocketMQ broker holds an `fcntl` lock on the store's `lock` file while it runs; a store
//! whose `lock` is held is refused ([`FileLogError::BrokerLocked`]), and while a [`FileLog`]
//! has a store open it holds the same lock (creating the file in RocketMQ format), so a broker
//! refuses to start on it.
//!
//! [`FileLog::create_in`] makes a new store in this format, one a broker starts on: full-size
//! segment files, RocketMQ's `checkpoint` (all zeros, as a new broker's; see
//! [`ROCKETMQ_CHECKPOINT_FILE`]) and `lock`. Such a store starts only on a segment boundary
//! ([`FileLogError::UnalignedStart`]): a broker reads each file from its first byte. Before its
//! first write a process creates RocketMQ's `abort` marker, and a clean close removes it once
//! everything is synced, so a broker started after our crash recovers the store as after its
//! own (walking every record and rebuilding its consume queues), and after a clean stop quickly.
//! A store has no `consumequeue/` of ours: a broker that finds none dispatches every message of
//! the commit log again at start (from its min offset) before it serves, and then has them all.

mod checkpoint;
mod error;
mod flush;
mod flusher;
mod rocketmq;
mod segments;
mod truncate;

pub use rocketmq::{
    RecordWalk, StoreFormat, RECOVERY_SEGMENTS, ROCKETMQ_ABORT_FILE, ROCKETMQ_CHECKPOINT_FILE,
    ROCKETMQ_CHECKPOINT_LEN, ROCKETMQ_LOCK_FILE,
};

pub use checkpoint::CHECKPOINT_FILE;
pub use flush::{FlushDone, FlushMode, FlushPolicy, PendingFlush, FLUSH_PAGE_SIZE};
pub use flusher::Flusher;

/// The file in the store root that a [`FileLog`] locks exclusively while it has the store open.
pub const LOCK_FILE: &str = "ha-lock";

/// Takes the store's exclusive lock, so a second writer fails fast instead of corrupting it.
fn lock_store(root: &Path) -> Result<File, FileLogError> {
    let path = root.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| FileLogError::io("open", &path, e))?;
    // The lock belongs to the open file, which a child process forked by another thread of
    // this process shares until it execs: for that moment a store just closed still looks
    // locked (the file_log tests hit this while the SIGKILL test spawns children). A real
    // second writer holds the lock far longer than the short retry below.
    let give_up = std::time::Instant::now() + std::time::Duration::from_millis(200);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < give_up => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(fs::TryLockError::WouldBlock) => return Err(FileLogError::Locked { path }),
            Err(fs::TryLockError::Error(e)) => return Err(FileLogError::io("lock", path, e)),
        }
    }
}
pub use error::FileLogError;
pub use segments::segment_file_name;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use bytes::Bytes;
use rocketmq_ha::{segment_start, FileRegion, LogError, LogSink, LogSource};

use checkpoint::{current_boot_id, sync_dir, Checkpoint};
use flush::{flush_warranted, Schedule};
use segments::{check_chain, map_segment, scan};

/// The directory inside a store that holds the segment files, as in RocketMQ.
pub const COMMITLOG_DIR: &str = "commitlog";

/// RocketMQ's default `mappedFileSizeCommitLog`: 1 GiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 1 << 30;

/// The smallest segment size accepted: one page. Smaller segments only multiply files, maps
/// and flushes (RocketMQ's own default is 1 GiB).
pub const MIN_SEGMENT_SIZE: u64 = 4096;

/// The largest segment size accepted: 64 GiB (on 64-bit systems; on smaller address spaces,
/// what one mapping can hold). Every segment is mapped whole, and a store holds several; far
/// larger sizes exhaust the address space or the kernel's overcommit and fail as `ENOMEM`.
pub const MAX_SEGMENT_SIZE: u64 = if (isize::MAX as u64) < (64 << 30) {
    isize::MAX as u64
} else {
    64 << 30
};

/// Offsets travel as `i64` on the wire (§0.3); the log never grows past what they can carry.
const MAX_LOG_OFFSET: u64 = i64::MAX as u64;

/// What readers see; replaced piecewise by the writer under the lock.
struct View {
    min: u64,
    max: u64,
    /// Every segment file's whole mapping, by start offset.
    segments: BTreeMap<u64, Bytes>,
}

/// The state a [`FileLog`] shares with its [`FileLogReader`]s.
struct Shared {
    segment_size: u64,
    view: RwLock<View>,
    /// The store's `commitlog/` directory, to open segment files for [`LogSource::file_region`].
    commitlog: PathBuf,
    /// The file behind the last [`LogSource::file_region`] answer.
    region_file: Mutex<Option<RegionFile>>,
}

/// The segment file last named in a [`LogSource::file_region`] answer, kept open for the next
/// frames (one open per segment, not per frame).
struct RegionFile {
    start: u64,
    /// The segment's mapping when the file was opened: while this clone lives, no other mapping
    /// can take its address, so an equal address in the view means the same segment file.
    map: Bytes,
    file: Arc<File>,
}

impl Shared {
    // Nothing in this module panics while holding the lock and every update leaves the view
    // consistent, so even a poisoned lock holds a good view.
    fn view(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn view_mut(&self) -> RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self, offset: u64, max_len: usize) -> Result<Bytes, FileLogError> {
        let view = self.view();
        if offset < view.min {
            return Err(FileLogError::BelowRetained {
                offset,
                min: view.min,
            });
        }
        if offset > view.max {
            return Err(FileLogError::AboveMax {
                offset,
                max: view.max,
            });
        }
        let start = segment_start(offset, self.segment_size);
        let len = (max_len as u64)
            .min(start + self.segment_size - offset)
            .min(view.max - offset);
        if len == 0 {
            return Ok(Bytes::new());
        }
        match view.segments.get(&start) {
            Some(map) => {
                // Both fit in usize: they are below the segment size, which was mapped.
                let at = (offset - start) as usize;
                Ok(map.slice(at..at + len as usize))
            }
            // [min, max) is always covered by mapped segments; reaching this is a bug.
            None => Err(FileLogError::MissingSegment { offset }),
        }
    }

    /// The segment file and the position in it of `len` bytes at `offset`: the bytes of a
    /// segment file at `p` are the log's at the segment's start plus `p`, in both store
    /// formats. `None` when the range is not wholly inside one segment below the max offset,
    /// or the file cannot be opened (the driver then sends the mapped bytes).
    ///
    /// Under the view's lock the file at the segment's path is the one mapped in the view:
    /// writers unlink a file before they take its mapping out of the view, and map a new file
    /// before they put it in (a file just unlinked fails to open: `None`).
    fn file_region(&self, offset: u64, len: usize) -> Option<FileRegion> {
        let start = segment_start(offset, self.segment_size);
        let end = offset.checked_add(len as u64)?;
        let view = self.view();
        if len == 0 || offset < view.min || end > view.max || end > start + self.segment_size {
            return None;
        }
        let map = view.segments.get(&start)?;
        let mut cached = self
            .region_file
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let file = match &*cached {
            Some(c) if c.start == start && c.map.as_ptr() == map.as_ptr() => Arc::clone(&c.file),
            _ => {
                let file =
                    Arc::new(File::open(self.commitlog.join(segment_file_name(start))).ok()?);
                *cached = Some(RegionFile {
                    start,
                    map: map.clone(),
                    file: Arc::clone(&file),
                });
                file
            }
        };
        Some(FileRegion::new(file, offset - start))
    }
}

/// The segment file currently appended to: the only segment a log keeps open.
struct OpenSegment {
    start: u64,
    path: PathBuf,
    file: File,
}

/// A segmented commit log in a store directory, in RocketMQ's on-disk layout (see the
/// [module docs](crate::file_log) for the layout and the crash-safety argument).
///
/// Methods by group:
/// - opening: [`open`](Self::open), [`create`](Self::create),
///   [`open_or_create`](Self::open_or_create);
/// - reading: [`LogSource`] (zero-copy), [`reader`](Self::reader) for other threads,
///   [`copy_range`](Self::copy_range), and [`compare_logs`] for two stores;
/// - appending: [`LogSink::append`] (the slave, at the offset the master sent),
///   [`append_at`](Self::append_at) (the same with a slice and the typed error),
///   [`append_at_end`](Self::append_at_end) (a producer on the master);
/// - durability (module docs, "Durability"): [`set_flush_mode`](Self::set_flush_mode),
///   [`flush_due`](Self::flush_due), [`maybe_flush`](Self::maybe_flush),
///   [`prepare_flush`](Self::prepare_flush) and [`finish_flush`](Self::finish_flush) (or a
///   [`Flusher`]), [`sync`](Self::sync), [`close`](Self::close),
///   [`synced_offset`](Self::synced_offset);
/// - retention: [`delete_segments_before`](Self::delete_segments_before).
pub struct FileLog {
    root: PathBuf,
    commitlog: PathBuf,
    segment_size: u64,
    /// The writer's copy of the offsets; readers see them through `shared`.
    min: u64,
    max: u64,
    shared: Arc<Shared>,
    tail: Option<OpenSegment>,
    /// Every byte below this is fdatasynced (perhaps not yet claimed by the checkpoint). Never
    /// below the tail's start: earlier segments are flushed when the tail leaves them.
    data_synced: u64,
    /// What the checkpoint claims as durable: the offset a machine crash cannot take away.
    synced: u64,
    /// Counts files created in `commitlog/`; `dir_synced` is the count its last fsync covered.
    dir_generation: u64,
    dir_synced: u64,
    /// `(base, synced_max)` as last written to the checkpoint.
    checkpointed: Option<(u64, u64)>,
    boot_id: Option<String>,
    poisoned: bool,
    mode: FlushMode,
    schedule: Schedule,
    /// Changes when an empty store moves its start, so that a flush prepared before cannot
    /// claim offsets of the old start.
    epoch: u64,
    /// Set by [`close`](Self::close), so that drop does not sync again.
    closed: bool,
    /// Held for the log's lifetime: an exclusive lock on [`LOCK_FILE`], released on drop (or
    /// by the kernel when the process dies, so a killed slave never leaves a stale lock).
    _lock: File,
    /// RocketMQ's `lock` file with our `fcntl` lock on it, if the store has one (always in
    /// RocketMQ format): keeps a broker off the store while we have it open.
    _broker_lock: Option<File>,
    /// How the segment files hold the log.
    format: StoreFormat,
    /// What the recovery walk found, in RocketMQ format.
    walk: Option<RecordWalk>,
    /// RocketMQ format: segments after the end, or garbage after a bad record, are still on
    /// disk; the first append removes them.
    tail_dirty: bool,
    /// RocketMQ's `abort` marker, set before this process first writes.
    abort: Abort,
}

/// What a recovery found, for [`FileLog::recovered`].
struct Recovered<'a> {
    root: &'a Path,
    commitlog: PathBuf,
    segment_size: u64,
    segments: BTreeMap<u64, Bytes>,
    min: u64,
    max: u64,
    synced: u64,
    checkpoint: Option<&'a Checkpoint>,
    boot_id: Option<String>,
    /// Our store lock, and RocketMQ's `lock` if the store has one.
    locks: (File, Option<File>),
    format: StoreFormat,
    walk: Option<RecordWalk>,
    tail_dirty: bool,
}

/// Who made the `abort` marker of a RocketMQ-format store (see [`rocketmq::mark_abort`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abort {
    /// Not checked yet: nothing written by this process.
    Unmarked,
    /// We created it, and remove it on a clean close.
    Ours,
    /// It was there before us (a broker crashed): left for the broker.
    Theirs,
}

impl FileLog {
    /// Opens the store at `root` (the directory holding `commitlog/`), checks its layout and
    /// recovers its offsets (module docs, "Crash safety").
    ///
    /// Recovery after a machine crash cuts unsynced bytes off the segment files. Errors name
    /// the offending file: a missing `commitlog/`, a file name that is not a 20-digit offset, a
    /// start not aligned to `segment_size`, a gap between segments, a segment of the wrong
    /// length, a checkpoint that is malformed, records another segment size or contradicts the
    /// files.
    pub fn open(root: impl AsRef<Path>, segment_size: u64) -> Result<FileLog, FileLogError> {
        FileLog::open_with_boot_id(root.as_ref(), segment_size, current_boot_id())
    }

    /// Makes a new, empty store at `root` (creating the directories) starting at offset 0, and
    /// opens it. Fails with [`FileLogError::StoreExists`] if `root/commitlog` exists. The store
    /// is in [`StoreFormat::Raw`]; [`create_in`](Self::create_in) chooses.
    pub fn create(root: impl AsRef<Path>, segment_size: u64) -> Result<FileLog, FileLogError> {
        FileLog::create_in(root, segment_size, StoreFormat::Raw)
    }

    /// [`create`](Self::create) in the given format. A [`StoreFormat::RocketMq`] store is one a
    /// RocketMQ broker starts on (module docs, "RocketMQ-format stores"): it gets RocketMQ's
    /// `checkpoint` and `lock` files beside ours, and full-size segment files.
    pub fn create_in(
        root: impl AsRef<Path>,
        segment_size: u64,
        format: StoreFormat,
    ) -> Result<FileLog, FileLogError> {
        let root = root.as_ref();
        check_segment_size(segment_size)?;
        let commitlog = root.join(COMMITLOG_DIR);
        if has_store(root)? {
            return Err(FileLogError::StoreExists { path: commitlog });
        }
        fs::create_dir_all(&commitlog).map_err(|e| FileLogError::io("create", &commitlog, e))?;
        let rocketmq = format == StoreFormat::RocketMq;
        if rocketmq {
            rocketmq::write_checkpoint_if_missing(root)?;
        }
        // Records the segment size, so reopening with another one is refused rather than
        // misread. Storing it also fsyncs `root`, which makes `commitlog/` durable.
        Checkpoint {
            segment_size,
            base: 0,
            synced_max: 0,
            boot_id: current_boot_id(),
            rocketmq,
        }
        .store(root)?;
        FileLog::open(root, segment_size)
    }

    /// Opens the store at `root`, or creates it if there is no `commitlog/` yet.
    pub fn open_or_create(
        root: impl AsRef<Path>,
        segment_size: u64,
    ) -> Result<FileLog, FileLogError> {
        let root = root.as_ref();
        if has_store(root)? {
            FileLog::open(root, segment_size)
        } else {
            FileLog::create(root, segment_size)
        }
    }

    /// Opens the store at `root` if it exists and is in `format` (else
    /// [`FileLogError::FormatMismatch`]), or creates it in `format`.
    pub fn open_or_create_in(
        root: impl AsRef<Path>,
        segment_size: u64,
        format: StoreFormat,
    ) -> Result<FileLog, FileLogError> {
        let root = root.as_ref();
        if !has_store(root)? {
            return FileLog::create_in(root, segment_size, format);
        }
        let log = FileLog::open(root, segment_size)?;
        if log.mode() != format {
            return Err(FileLogError::FormatMismatch {
                root: root.to_path_buf(),
                found: log.mode(),
                requested: format,
            });
        }
        Ok(log)
    }

    /// Drops the log as if its process had been killed: no sync. The writes it made are in the
    /// page cache, as they would be after `kill -9`.
    #[cfg(test)]
    fn crash(mut self) {
        self.closed = true;
    }

    /// [`open`](Self::open) as if running under the kernel boot `boot_id`, so tests can play a
    /// machine restart.
    fn open_with_boot_id(
        root: &Path,
        segment_size: u64,
        boot_id: Option<String>,
    ) -> Result<FileLog, FileLogError> {
        check_segment_size(segment_size)?;
        let commitlog = root.join(COMMITLOG_DIR);
        match fs::metadata(&commitlog) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(FileLogError::NotAFile { path: commitlog }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(FileLogError::NoStore {
                    root: root.to_path_buf(),
                    commitlog,
                })
            }
            Err(e) => return Err(FileLogError::io("stat", commitlog, e)),
        }
        let lock = lock_store(root)?;
        let checkpoint = Checkpoint::load(root)?;
        let checkpoint_path = Checkpoint::path(root);
        if let Some(cp) = &checkpoint {
            if cp.segment_size != segment_size {
                return Err(FileLogError::SegmentSizeMismatch {
                    path: checkpoint_path,
                    recorded: cp.segment_size,
                    requested: segment_size,
                });
            }
        }
        let mut files = scan(&commitlog, segment_size)?;
        let format = rocketmq::detect(root, &files, segment_size, checkpoint.as_ref())?;
        let broker_lock = rocketmq::lock_broker(root, format == StoreFormat::RocketMq)?;
        if format == StoreFormat::RocketMq {
            return FileLog::open_rocketmq(
                root,
                commitlog,
                segment_size,
                files,
                checkpoint,
                boot_id,
                lock,
                broker_lock,
            );
        }

        // After a machine restart only synced bytes are trusted (module docs, "Crash safety").
        let trusted_end = checkpoint
            .as_ref()
            .filter(|cp| !same_boot(cp.boot_id.as_deref(), boot_id.as_deref()))
            .map(|cp| cp.synced_max);
        let mut dropped = Vec::new();
        let mut cut = None;
        if let Some(limit) = trusted_end {
            let keep = files.partition_point(|f| f.start < limit);
            dropped = files.split_off(keep);
            if let Some(last) = files.last_mut() {
                if last.start + last.len > limit {
                    last.len = limit - last.start;
                    cut = Some(last.clone());
                }
            }
        }
        check_chain(&files, segment_size)?;

        let (min, max) = match (files.first(), files.last()) {
            (Some(first), Some(last)) => {
                let min = match &checkpoint {
                    // A mid-log start inside the first file; a base below the first file means
                    // retention deleted the file holding it.
                    Some(cp) if cp.base >= first.start => {
                        if cp.base - first.start >= segment_size {
                            return Err(FileLogError::CheckpointMismatch {
                                path: checkpoint_path,
                                reason: format!(
                                    "the log starts at {} but the first segment {} ends at {}",
                                    cp.base,
                                    first.path.display(),
                                    first.start + segment_size
                                ),
                            });
                        }
                        cp.base
                    }
                    _ => first.start,
                };
                // A first file shorter than the start (a crash before the first byte) holds
                // nothing yet.
                (min, (last.start + last.len).max(min))
            }
            _ => {
                let at = match (&checkpoint, trusted_end) {
                    (_, Some(limit)) => limit,
                    (Some(cp), None) => cp.base,
                    (None, None) => 0,
                };
                (at, at)
            }
        };

        // The store checked out; only now apply what recovery decided.
        for file in &dropped {
            remove_file(&file.path)?;
        }
        if let Some(file) = &cut {
            OpenOptions::new()
                .write(true)
                .open(&file.path)
                .and_then(|f| f.set_len(file.len).and_then(|()| f.sync_all()))
                .map_err(|e| FileLogError::io("truncate", &file.path, e))?;
        }
        if !dropped.is_empty() {
            sync_dir(&commitlog)?;
        }

        // What the checkpoint claims durable. Without a checkpoint (a store written by hand or
        // by RocketMQ) nothing is claimed yet.
        let synced = match (&checkpoint, trusted_end) {
            (_, Some(_)) => max,
            (Some(cp), None) => cp.synced_max.clamp(min, max),
            (None, None) => min,
        };
        let mut segments = BTreeMap::new();
        for file in &files {
            let handle =
                File::open(&file.path).map_err(|e| FileLogError::io("open", &file.path, e))?;
            segments.insert(file.start, map_segment(&handle, &file.path, segment_size)?);
            // The same boot, and an earlier process left bytes the checkpoint does not claim:
            // they are in the page cache, perhaps not on disk. Flush them now (an fsync through
            // any descriptor flushes the file), so the next checkpoint may claim them and the
            // tail invariant holds: everything below the tail's start is durable.
            if file.start + file.len > synced {
                handle
                    .sync_data()
                    .map_err(|e| FileLogError::io("fsync", &file.path, e))?;
            }
            // `handle` closes here: the mapping does not need it.
        }
        if max > synced {
            // Their directory entries too, for the files that process created.
            sync_dir(&commitlog)?;
        }
        let mut log = FileLog::recovered(Recovered {
            root,
            commitlog,
            segment_size,
            segments,
            min,
            max,
            synced,
            checkpoint: checkpoint.as_ref(),
            boot_id,
            locks: (lock, broker_lock),
            format,
            walk: None,
            tail_dirty: false,
        });
        if trusted_end.is_some() {
            // Everything left is synced; recording this boot lets a later process crash trust
            // the files again instead of falling back to this old synced offset.
            log.write_checkpoint(min, max)?;
        }
        Ok(log)
    }

    /// Opens a store in RocketMQ's format (module docs, "RocketMQ-format stores"): the end
    /// is found by walking records, not from file lengths.
    #[allow(clippy::too_many_arguments)]
    fn open_rocketmq(
        root: &Path,
        commitlog: PathBuf,
        segment_size: u64,
        files: Vec<segments::SegmentFile>,
        checkpoint: Option<Checkpoint>,
        boot_id: Option<String>,
        lock: File,
        broker_lock: Option<File>,
    ) -> Result<FileLog, FileLogError> {
        rocketmq::check_lengths(&files, segment_size)?;
        check_chain(&files, segment_size)?;
        let mut segments = BTreeMap::new();
        for file in &files {
            let handle =
                File::open(&file.path).map_err(|e| FileLogError::io("open", &file.path, e))?;
            segments.insert(file.start, map_segment(&handle, &file.path, segment_size)?);
        }
        let walk = rocketmq::walk(&segments, segment_size);
        let (min, max) = match files.first() {
            Some(first) => (first.start, walk.end.max(first.start)),
            None => {
                let at = checkpoint.as_ref().map_or(0, |cp| cp.base);
                (at, at)
            }
        };
        let synced = checkpoint
            .as_ref()
            .map_or(min, |cp| cp.synced_max.clamp(min, max));
        // As in raw format: bytes an earlier process left unsynced are flushed now, so the next
        // checkpoint may claim them.
        for file in files
            .iter()
            .filter(|f| f.start < max && f.start + segment_size > synced)
        {
            File::open(&file.path)
                .and_then(|f| f.sync_data())
                .map_err(|e| FileLogError::io("fsync", &file.path, e))?;
        }
        let tail_dirty = walk.first_bad.is_some()
            || segments
                .keys()
                .any(|&start| start > segment_start(max, segment_size));
        Ok(FileLog::recovered(Recovered {
            root,
            commitlog,
            segment_size,
            segments,
            min,
            max,
            synced,
            checkpoint: checkpoint.as_ref(),
            boot_id,
            locks: (lock, broker_lock),
            format: StoreFormat::RocketMq,
            walk: Some(walk),
            tail_dirty,
        }))
    }

    /// The log as recovery left it: everything below `max` on disk (synced up to `synced`), no
    /// tail open, nothing written yet by this process. Both formats' recoveries end here.
    fn recovered(r: Recovered<'_>) -> FileLog {
        let (min, max) = (r.min, r.max);
        FileLog {
            _lock: r.locks.0,
            _broker_lock: r.locks.1,
            format: r.format,
            walk: r.walk,
            tail_dirty: r.tail_dirty,
            root: r.root.to_path_buf(),
            commitlog: r.commitlog.clone(),
            segment_size: r.segment_size,
            min,
            max,
            shared: Arc::new(Shared {
                segment_size: r.segment_size,
                view: RwLock::new(View {
                    min,
                    max,
                    segments: r.segments,
                }),
                commitlog: r.commitlog,
                region_file: Mutex::new(None),
            }),
            tail: None,
            data_synced: max,
            synced: r.synced,
            dir_generation: 0,
            dir_synced: 0,
            checkpointed: r.checkpoint.map(|cp| (cp.base, cp.synced_max)),
            boot_id: r.boot_id,
            poisoned: false,
            mode: FlushMode::default(),
            schedule: Schedule::default(),
            epoch: 0,
            closed: false,
            abort: Abort::Unmarked,
        }
    }

    /// The store's format: [`StoreFormat::Raw`] (ours) or [`StoreFormat::RocketMq`], as found
    /// when it was opened (module docs, "RocketMQ-format stores").
    pub fn mode(&self) -> StoreFormat {
        self.format
    }

    /// In RocketMQ format, what the recovery walk found when the store was opened: where it
    /// started, the end, the records passed, and the bad record that ended it, if any.
    pub fn record_walk(&self) -> Option<&RecordWalk> {
        self.walk.as_ref()
    }

    /// RocketMQ format, before this process first changes the store: leaves RocketMQ's
    /// `abort` marker, so that a crash before the clean close makes a broker walk every
    /// record (its abnormal recovery). A marker someone else left stays theirs.
    pub(crate) fn mark_abort(&mut self) -> Result<(), FileLogError> {
        if self.format == StoreFormat::RocketMq && self.abort == Abort::Unmarked {
            self.abort = if rocketmq::mark_abort(&self.root)? {
                Abort::Ours
            } else {
                Abort::Theirs
            };
        }
        Ok(())
    }

    /// RocketMQ format, before the first append: deletes the segment files after the one
    /// holding the end and, if a bad record ended the recovery walk, zeroes the rest of that
    /// segment, so that nothing recovery rejected can pass for records after new ones.
    fn clean_rocketmq_tail(&mut self) -> Result<(), FileLogError> {
        let tail_start = segment_start(self.max, self.segment_size);
        let later: Vec<u64> = self
            .shared
            .view()
            .segments
            .range(tail_start + 1..)
            .map(|(&start, _)| start)
            .collect();
        // Newest first: a crash part-way leaves a contiguous store.
        for &start in later.iter().rev() {
            remove_file(&self.segment_path(start))?;
            self.shared.view_mut().segments.remove(&start);
        }
        if !later.is_empty() {
            sync_dir(&self.commitlog)?;
        }
        if self.walk.as_ref().is_some_and(|w| w.first_bad.is_some())
            && self.shared.view().segments.contains_key(&tail_start)
        {
            let path = self.segment_path(tail_start);
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| FileLogError::io("open", &path, e))?;
            let zeros = vec![0u8; 1 << 20];
            let mut at = self.max - tail_start;
            while at < self.segment_size {
                let n = (self.segment_size - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at)
                    .map_err(|e| FileLogError::io("zero", &path, e))?;
                at += n as u64;
            }
            file.sync_data()
                .map_err(|e| FileLogError::io("fsync", &path, e))?;
        }
        self.tail_dirty = false;
        Ok(())
    }

    /// The store directory (the one holding `commitlog/`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `commitlog/` directory holding the segment files.
    pub fn commitlog_dir(&self) -> &Path {
        &self.commitlog
    }

    /// The path of the segment file starting at `start` (whether or not it exists).
    pub fn segment_path(&self, start: u64) -> PathBuf {
        self.commitlog.join(segment_file_name(start))
    }

    /// Start offsets of the segment files present, oldest first.
    pub fn segment_starts(&self) -> Vec<u64> {
        self.shared.view().segments.keys().copied().collect()
    }

    /// A read handle for other threads; it sees every append once the append returns.
    pub fn reader(&self) -> FileLogReader {
        FileLogReader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Appends `data` at exactly `offset` and returns the new max offset: the typed form of
    /// [`LogSink::append`].
    ///
    /// `offset` must be the max offset, except that a store holding no bytes accepts any offset
    /// and starts there (§4.4); anything else is [`FileLogError::NotContiguous`] and writes
    /// nothing. The data is split at segment boundaries and a new segment file is created at
    /// each. On an I/O error the bytes appended before it stay, the max offset says how far.
    pub fn append_at(&mut self, offset: u64, data: &[u8]) -> Result<u64, FileLogError> {
        self.append_all_at(offset, &[data])
    }

    /// Appends `pieces`, one after the other, at exactly `offset` and returns the new max
    /// offset: [`append_at`](Self::append_at) of their concatenation, written with one
    /// vectored write (`pwritev`) per segment touched rather than one write per piece.
    ///
    /// A slave receives many frames per socket read; writing them together costs one system
    /// call, and the kernel sees one larger write (larger page-cache folios).
    ///
    /// In [`FlushMode::EveryAppend`] it returns only once the bytes are durable.
    pub fn append_all_at(&mut self, offset: u64, pieces: &[&[u8]]) -> Result<u64, FileLogError> {
        self.write_pieces(offset, pieces)?;
        self.sync_if_every_append()
    }

    /// In [`FlushMode::EveryAppend`], what an append does before returning: [`sync`].
    ///
    /// [`sync`]: Self::sync
    fn sync_if_every_append(&mut self) -> Result<u64, FileLogError> {
        if self.mode == FlushMode::EveryAppend {
            self.sync()?;
        }
        Ok(self.max)
    }

    /// [`append_all_at`](Self::append_all_at) without the flush of
    /// [`FlushMode::EveryAppend`].
    fn write_pieces(&mut self, offset: u64, pieces: &[&[u8]]) -> Result<u64, FileLogError> {
        if self.poisoned {
            return Err(FileLogError::Poisoned);
        }
        if self.tail_dirty {
            self.clean_rocketmq_tail()?;
        }
        self.mark_abort()?;
        let total = pieces.iter().map(|p| p.len() as u64).sum::<u64>();
        match offset.checked_add(total) {
            Some(end) if end <= MAX_LOG_OFFSET => {}
            _ => {
                return Err(FileLogError::OffsetOverflow { offset, len: total });
            }
        }
        if self.min == self.max && offset != self.max {
            self.restart_at(offset)?;
        }
        if offset != self.max {
            return Err(FileLogError::NotContiguous {
                offset,
                max: self.max,
            });
        }
        // The unwritten rest of the pieces: the current piece's remainder, then those after it.
        let mut current: &[u8] = &[];
        let mut later = pieces.iter();
        let mut left = total;
        while left > 0 {
            let start = segment_start(self.max, self.segment_size);
            let at = self.max - start;
            // What goes into this segment: the rest, up to the segment's end.
            let mut room = (self.segment_size - at).min(left);
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
            let mut count = 0;
            let mut len = 0u64;
            while room > 0 && count < WRITE_SLICES {
                if current.is_empty() {
                    match later.next() {
                        Some(next) => current = next,
                        None => break,
                    }
                    continue;
                }
                // Below `room`, which is below the segment size, so it fits in usize.
                let take = (current.len() as u64).min(room) as usize;
                let (piece, rest) = current.split_at(take);
                slices[count] = IoSlice::new(piece);
                count += 1;
                len += take as u64;
                room -= take as u64;
                current = rest;
            }
            let tail = self.tail_at(start)?;
            let result = match write_all_vectored_at(&tail.file, &mut slices[..count], at) {
                Ok(()) => Ok(()),
                Err(e) => {
                    // Part of the bytes may be on disk now; cut them off so that the file's
                    // length is the log's end again, which recovery relies on. A preallocated
                    // (RocketMQ-format) file cannot be cut back: the log stops taking appends.
                    if self.format == StoreFormat::RocketMq || tail.file.set_len(at).is_err() {
                        self.poisoned = true;
                    }
                    Err(FileLogError::io("write to", &tail.path, e))
                }
            };
            self.tail = Some(tail);
            result?;
            self.max += len;
            left -= len;
            self.shared.view_mut().max = self.max;
        }
        Ok(self.max)
    }

    /// Appends `data` at the end of the log (a producer on the master side); returns the new
    /// max offset.
    pub fn append_at_end(&mut self, data: &[u8]) -> Result<u64, FileLogError> {
        self.append_at(self.max, data)
    }

    /// Makes every byte appended so far durable, then records that in the checkpoint (module
    /// docs, "Crash safety").
    ///
    /// Appends alone already survive a crash of the process; `sync` is what survives a crash of
    /// the machine. It costs a few disk flushes, so on a busy log let the [`FlushMode`] decide
    /// ([`maybe_flush`](Self::maybe_flush), a [`Flusher`]) rather than calling it per append. If
    /// flushing the data fails, the log refuses further appends and syncs
    /// ([`FileLogError::Poisoned`]): after a failed fsync the kernel may have dropped the data
    /// while a retry would report success.
    pub fn sync(&mut self) -> Result<(), FileLogError> {
        if self.poisoned {
            return Err(FileLogError::Poisoned);
        }
        let target = self.max;
        if self.data_synced < target {
            // Only the tail can hold unsynced bytes: segments are flushed when the tail leaves
            // them, and open flushes what an earlier process left.
            if let Some(tail) = &self.tail {
                if let Err(e) = tail.file.sync_data() {
                    self.poisoned = true;
                    return Err(FileLogError::io("fsync", &tail.path, e));
                }
            }
            self.data_synced = target;
        }
        if self.dir_synced < self.dir_generation {
            let generation = self.dir_generation;
            sync_dir(&self.commitlog)?;
            self.dir_synced = generation;
        }
        if self.checkpointed != Some((self.min, target)) {
            self.write_checkpoint(self.min, target)?;
        }
        Ok(())
    }

    /// Syncs (see [`sync`](Self::sync)) and closes the store.
    pub fn close(mut self) -> Result<(), FileLogError> {
        // Whatever the outcome, drop must not try again.
        self.closed = true;
        self.sync()?;
        self.clear_abort()
    }

    /// A clean close in RocketMQ format, everything synced: the `abort` marker this process
    /// created goes, so a broker starting next takes its normal recovery.
    fn clear_abort(&mut self) -> Result<(), FileLogError> {
        if self.abort == Abort::Ours {
            rocketmq::clear_abort(&self.root)?;
            self.abort = Abort::Unmarked;
        }
        Ok(())
    }

    /// The offset below which every byte is on disk and claimed by the checkpoint: what the
    /// store keeps after a machine crash (module docs, "Crash safety").
    pub fn synced_offset(&self) -> u64 {
        self.synced
    }

    /// When appends are made durable (module docs, "Durability").
    pub fn flush_mode(&self) -> FlushMode {
        self.mode
    }

    /// Changes when appends are made durable. Switching to [`FlushMode::EveryAppend`] syncs at
    /// once, so that from then on every byte of the log is durable; a new
    /// [`FlushMode::Periodic`] policy starts its schedule afresh.
    pub fn set_flush_mode(&mut self, mode: FlushMode) -> Result<(), FileLogError> {
        self.mode = mode;
        self.schedule = Schedule::default();
        if mode == FlushMode::EveryAppend {
            self.sync()?;
        }
        Ok(())
    }

    /// When [`maybe_flush`](Self::maybe_flush) (or [`prepare_flush`](Self::prepare_flush))
    /// should next be called, given that it is `now`: a time at or after `now` (`now` if a
    /// decision is overdue, or none was taken yet). `None` unless the mode is
    /// [`FlushMode::Periodic`].
    pub fn flush_due(&self, now: Instant) -> Option<Instant> {
        match self.mode {
            FlushMode::Periodic(_) => Some(self.schedule.due(now)),
            FlushMode::EveryAppend | FlushMode::Manual => None,
        }
    }

    /// Takes the flush decision due at `now` (the [`FlushPolicy`]) and, if it says so, flushes
    /// and advances the checkpoint: [`prepare_flush`](Self::prepare_flush), run,
    /// [`finish_flush`](Self::finish_flush) in one call, holding `&mut self` throughout.
    /// Returns whether it flushed.
    pub fn maybe_flush(&mut self, now: Instant) -> Result<bool, FileLogError> {
        match self.prepare_flush(now)? {
            Some(flush) => self.finish_flush(flush.run()),
            None => Ok(false),
        }
    }

    /// Takes the flush decision due at `now`; if the [`FlushPolicy`] calls for a flush, returns
    /// it prepared, to be [run](PendingFlush::run) without holding the log (appends may go on
    /// meanwhile) and handed back to [`finish_flush`](Self::finish_flush).
    ///
    /// `None` if no decision is due yet, the policy finds too little new data, or the mode is
    /// not [`FlushMode::Periodic`].
    pub fn prepare_flush(&mut self, now: Instant) -> Result<Option<PendingFlush>, FileLogError> {
        let FlushMode::Periodic(policy) = self.mode else {
            return Ok(None);
        };
        if self.poisoned {
            return Err(FileLogError::Poisoned);
        }
        match self.schedule.tick(&policy, now) {
            Some(least) if flush_warranted(self.synced, self.max, least) => {
                self.pending_flush().map(Some)
            }
            _ => Ok(None),
        }
    }

    /// A flush of everything appended so far.
    fn pending_flush(&mut self) -> Result<PendingFlush, FileLogError> {
        let file = match &self.tail {
            Some(tail) if self.data_synced < self.max => {
                let dup = tail
                    .file
                    .try_clone()
                    .map_err(|e| FileLogError::io("duplicate the handle of", &tail.path, e))?;
                Some((tail.path.clone(), dup))
            }
            _ => None,
        };
        let dir = (self.dir_synced < self.dir_generation)
            .then(|| (self.commitlog.clone(), self.dir_generation));
        Ok(PendingFlush {
            epoch: self.epoch,
            target: self.max,
            file,
            dir,
        })
    }

    /// Records a flush that was [run](PendingFlush::run): the checkpoint claims its bytes.
    /// Returns whether the checkpoint advanced (not if a newer sync already covered it, or the
    /// empty store moved its start meanwhile).
    ///
    /// A failed data flush poisons the log, as in [`sync`](Self::sync), and is returned.
    pub fn finish_flush(&mut self, done: FlushDone) -> Result<bool, FileLogError> {
        if done.epoch != self.epoch {
            return Ok(false);
        }
        if let Err(e) = done.result {
            if done.data_failed {
                self.poisoned = true;
            }
            return Err(e);
        }
        if self.poisoned {
            return Err(FileLogError::Poisoned);
        }
        self.data_synced = self.data_synced.max(done.target);
        if let Some(generation) = done.dir_generation {
            self.dir_synced = self.dir_synced.max(generation);
        }
        // The files holding bytes below the target existed when the flush was prepared, and
        // its directory fsync (or an earlier one) covered them; files created since start at
        // or above the target.
        if done.target <= self.synced {
            return Ok(false);
        }
        self.write_checkpoint(self.min, done.target)?;
        Ok(true)
    }

    /// Deletes whole segment files that lie entirely below `offset` (RocketMQ's retention: files
    /// are deleted, never trimmed) and returns the new min offset: the oldest remaining file's
    /// start, or the recorded start if that file is still the first.
    ///
    /// Like RocketMQ, the last segment file is never deleted, so the store keeps its end
    /// offset. Syncs first, because recovery after a reboot keeps only synced bytes and they
    /// must still reach the new min offset.
    pub fn delete_segments_before(&mut self, offset: u64) -> Result<u64, FileLogError> {
        let limit = segment_start(offset.min(self.max), self.segment_size);
        let doomed: Vec<u64> = {
            let view = self.shared.view();
            let last = view.segments.keys().next_back().copied();
            view.segments
                .range(..limit)
                .map(|(&start, _)| start)
                .filter(|&start| Some(start) != last)
                .collect()
        };
        if doomed.is_empty() {
            return Ok(self.min);
        }
        self.sync()?;
        for start in doomed {
            // Oldest first: a crash part-way leaves a contiguous store whose first file
            // gives the min offset.
            remove_file(&self.segment_path(start))?;
            self.min = self.min.max(start + self.segment_size);
            let mut view = self.shared.view_mut();
            view.segments.remove(&start);
            view.min = self.min;
        }
        Ok(self.min)
    }

    /// A copy of the log bytes `[start, end)`, for checks and tests.
    pub fn copy_range(&self, start: u64, end: u64) -> Result<Vec<u8>, FileLogError> {
        copy_range(&self.shared, start, end)
    }

    /// Makes `offset` the start of a store that holds no bytes (§4.4: an empty slave starts
    /// where the master says). Crash ordering in the module docs.
    fn restart_at(&mut self, offset: u64) -> Result<(), FileLogError> {
        debug_assert_eq!(self.min, self.max, "only an empty store may move its start");
        if self.format == StoreFormat::RocketMq && !offset.is_multiple_of(self.segment_size) {
            return Err(FileLogError::UnalignedStart {
                offset,
                segment_size: self.segment_size,
            });
        }
        self.tail = None;
        self.epoch += 1;
        // An empty store has at most one file, shorter than its start: it holds no log bytes.
        let leftovers = self.segment_starts();
        for &start in &leftovers {
            remove_file(&self.segment_path(start))?;
            self.shared.view_mut().segments.remove(&start);
        }
        if !leftovers.is_empty() {
            // Durable before the checkpoint moves: a resurrected leftover below a new start
            // would pass for log bytes after a reboot.
            sync_dir(&self.commitlog)?;
        }
        // The checkpoint names the start before any file exists at it: on its own, a segment
        // file would make its first byte the log's start.
        self.write_checkpoint(offset, offset)?;
        self.min = offset;
        self.max = offset;
        self.data_synced = offset;
        let mut view = self.shared.view_mut();
        view.min = offset;
        view.max = offset;
        Ok(())
    }

    /// The open segment file starting at `start`, creating and mapping it if it is new. The
    /// caller puts it back into `self.tail`.
    ///
    /// A tail that is left behind is flushed and closed first: the log keeps one segment open,
    /// however many it writes between flushes, and everything below the tail is durable.
    fn tail_at(&mut self, start: u64) -> Result<OpenSegment, FileLogError> {
        match self.tail.take() {
            Some(tail) if tail.start == start => Ok(tail),
            previous => {
                if let Some(sealed) = &previous {
                    if self.data_synced < self.max {
                        if let Err(e) = sealed.file.sync_data() {
                            let err = FileLogError::io("fsync", &sealed.path, e);
                            self.poisoned = true;
                            self.tail = previous;
                            return Err(err);
                        }
                        // Appends are contiguous: the sealed segment ends at the max offset.
                        self.data_synced = self.max;
                    }
                }
                match self.open_segment(start) {
                    // `previous` is dropped here, closing its file.
                    Ok(tail) => Ok(tail),
                    Err(e) => {
                        self.tail = previous;
                        Err(e)
                    }
                }
            }
        }
    }

    fn open_segment(&mut self, start: u64) -> Result<OpenSegment, FileLogError> {
        let path = self.segment_path(start);
        if self.shared.view().segments.contains_key(&start) {
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| FileLogError::io("open", &path, e))?;
            return Ok(OpenSegment { start, path, file });
        }
        // `create_new`: a file we do not know about must not be written over.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| FileLogError::io("create", &path, e))?;
        self.dir_generation += 1;
        // RocketMQ format: full-size files from the start (sparse: the zeros cost no disk).
        let prealloc = if self.format == StoreFormat::RocketMq {
            file.set_len(self.segment_size)
                .map_err(|e| FileLogError::io("preallocate", &path, e))
        } else {
            Ok(())
        };
        let map = match prealloc.and_then(|()| map_segment(&file, &path, self.segment_size)) {
            Ok(map) => map,
            Err(e) => {
                // An empty last file would be harmless, but the next attempt must be able to
                // create it again.
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        };
        self.shared.view_mut().segments.insert(start, map);
        Ok(OpenSegment { start, path, file })
    }

    fn write_checkpoint(&mut self, base: u64, synced_max: u64) -> Result<(), FileLogError> {
        Checkpoint {
            segment_size: self.segment_size,
            base,
            synced_max,
            boot_id: self.boot_id.clone(),
            rocketmq: self.format == StoreFormat::RocketMq,
        }
        .store(&self.root)?;
        self.checkpointed = Some((base, synced_max));
        self.synced = synced_max;
        Ok(())
    }
}

impl fmt::Debug for FileLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileLog")
            .field("root", &self.root)
            .field("segment_size", &self.segment_size)
            .field("min", &self.min)
            .field("max", &self.max)
            .field("segments", &self.shared.view().segments.len())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl Drop for FileLog {
    /// Syncs, best effort: a log dropped without [`close`](FileLog::close) (a panic unwinding,
    /// a handle released at the end of `main`) still flushes what it holds. Errors cannot be
    /// reported here; call `close` to see them.
    fn drop(&mut self) {
        if !self.closed && !self.poisoned && self.sync().is_ok() {
            let _ = self.clear_abort();
        }
    }
}

impl LogSource for FileLog {
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
        Ok(self.shared.read(offset, max_len)?)
    }

    fn file_region(&self, offset: u64, len: usize) -> Option<FileRegion> {
        self.shared.file_region(offset, len)
    }
}

impl LogSink for FileLog {
    fn append(&mut self, offset: u64, data: Bytes) -> Result<u64, LogError> {
        Ok(self.append_at(offset, &data)?)
    }

    fn append_all(&mut self, offset: u64, pieces: &[Bytes]) -> Result<u64, LogError> {
        let mut slices = [&[][..]; WRITE_SLICES];
        let mut at = offset;
        for group in pieces.chunks(WRITE_SLICES) {
            for (slot, piece) in slices.iter_mut().zip(group) {
                *slot = piece;
            }
            at = self.write_pieces(at, &slices[..group.len()])?;
        }
        // One flush for the whole batch in `FlushMode::EveryAppend`, not one per group.
        Ok(self.sync_if_every_append()?)
    }
}

/// The most slices one vectored write takes (Linux accepts 1024); more pieces take more writes.
const WRITE_SLICES: usize = 64;

/// Writes every byte of `slices` at `offset`, retrying short writes (`pwritev`).
fn write_all_vectored_at(
    file: &File,
    mut slices: &mut [IoSlice<'_>],
    mut offset: u64,
) -> io::Result<()> {
    while !slices.is_empty() {
        match rustix::io::pwritev(file, slices, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                offset += n as u64;
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A read handle on a [`FileLog`] for other threads: clonable, `Send + Sync`, zero-copy reads.
///
/// It sees the log as the writer last published it: the offsets and segments of the moment of
/// each call. Its [`LogSource::min_offset`] and [`LogSource::max_offset`] are read under a
/// short shared lock.
#[derive(Clone)]
pub struct FileLogReader {
    shared: Arc<Shared>,
}

impl FileLogReader {
    /// A copy of the log bytes `[start, end)`, for checks and tests.
    pub fn copy_range(&self, start: u64, end: u64) -> Result<Vec<u8>, FileLogError> {
        copy_range(&self.shared, start, end)
    }
}

impl fmt::Debug for FileLogReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let view = self.shared.view();
        f.debug_struct("FileLogReader")
            .field("segment_size", &self.shared.segment_size)
            .field("min", &view.min)
            .field("max", &view.max)
            .finish()
    }
}

impl LogSource for FileLogReader {
    fn min_offset(&self) -> u64 {
        self.shared.view().min
    }

    fn max_offset(&self) -> u64 {
        self.shared.view().max
    }

    fn segment_size(&self) -> u64 {
        self.shared.segment_size
    }

    fn read(&self, offset: u64, max_len: usize) -> Result<Bytes, LogError> {
        Ok(self.shared.read(offset, max_len)?)
    }

    fn file_region(&self, offset: u64, len: usize) -> Option<FileRegion> {
        self.shared.file_region(offset, len)
    }
}

fn copy_range(shared: &Shared, start: u64, end: u64) -> Result<Vec<u8>, FileLogError> {
    let mut out = Vec::with_capacity(usize::try_from(end.saturating_sub(start)).unwrap_or(0));
    let mut at = start;
    while at < end {
        let want = usize::try_from(end - at).unwrap_or(usize::MAX);
        let piece = shared.read(at, want)?;
        if piece.is_empty() {
            return Err(FileLogError::AboveMax {
                offset: end,
                max: at,
            });
        }
        at += piece.len() as u64;
        out.extend_from_slice(&piece);
    }
    Ok(out)
}

/// How two logs relate, from [`compare_logs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogComparison {
    /// The first log's retained range `[min, max)`.
    pub a: Range<u64>,
    /// The second log's retained range.
    pub b: Range<u64>,
    /// The first offset, within both ranges, at which the bytes differ; `None` if the logs
    /// agree wherever both hold bytes.
    pub first_difference: Option<u64>,
}

impl LogComparison {
    /// Both logs hold the same range and the same bytes.
    pub fn identical(&self) -> bool {
        self.a == self.b && self.first_difference.is_none()
    }

    /// The logs agree wherever both hold bytes, and `a` ends no later than `b`: what a slave's
    /// log (`a`) must be to its master's (`b`) (§8).
    pub fn a_is_prefix_of_b(&self) -> bool {
        self.first_difference.is_none() && self.a.end <= self.b.end
    }
}

/// Compares two logs byte for byte where their retained ranges overlap, e.g. a slave's store
/// with its master's, or a [`FileLog`] with a [`MemoryLog`](rocketmq_ha::MemoryLog).
pub fn compare_logs<A, B>(a: &A, b: &B) -> Result<LogComparison, LogError>
where
    A: LogSource + ?Sized,
    B: LogSource + ?Sized,
{
    const CHUNK: usize = 1 << 20;
    let range_a = a.min_offset()..a.max_offset();
    let range_b = b.min_offset()..b.max_offset();
    let end = range_a.end.min(range_b.end);
    let mut at = range_a.start.max(range_b.start);
    let mut first_difference = None;
    while at < end {
        let want = usize::try_from(end - at).map_or(CHUNK, |n| n.min(CHUNK));
        let left = a.read(at, want)?;
        let right = b.read(at, left.len())?;
        let n = left.len().min(right.len());
        if n == 0 {
            // Both promise at least one byte below their max; a log that breaks it is broken.
            return Err(LogError::AboveMax {
                offset: at,
                max: at,
            });
        }
        if let Some(i) = left[..n].iter().zip(&right[..n]).position(|(x, y)| x != y) {
            first_difference = Some(at + i as u64);
            break;
        }
        at += n as u64;
    }
    Ok(LogComparison {
        a: range_a,
        b: range_b,
        first_difference,
    })
}

/// Whether `root` holds a store: a `commitlog/` entry of any kind (opening says if it is not a
/// directory).
fn has_store(root: &Path) -> Result<bool, FileLogError> {
    let commitlog = root.join(COMMITLOG_DIR);
    match fs::symlink_metadata(&commitlog) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FileLogError::io("stat", commitlog, e)),
    }
}

fn check_segment_size(segment_size: u64) -> Result<(), FileLogError> {
    if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
        return Err(FileLogError::InvalidSegmentSize {
            size: segment_size,
            min: MIN_SEGMENT_SIZE,
            max: MAX_SEGMENT_SIZE,
        });
    }
    Ok(())
}

/// Whether a checkpoint written under boot `recorded` may trust the page cache of boot `now`:
/// yes if they are the same boot, and, lacking a way to tell, yes as well (module docs).
fn same_boot(recorded: Option<&str>, now: Option<&str>) -> bool {
    match (recorded, now) {
        (Some(recorded), Some(now)) => recorded == now,
        _ => true,
    }
}

fn remove_file(path: &Path) -> Result<(), FileLogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        // Already gone (a crash part-way through an earlier deletion): the goal is reached.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FileLogError::io("delete", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch store directory, removed again when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "rocketmq-ha-file-log-unit-{name}-{}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const F: u64 = 4096;

    fn pattern(start: u64, len: u64) -> Vec<u8> {
        (start..start + len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn after_a_reboot_only_synced_bytes_are_trusted() {
        let store = Scratch::new("reboot");
        let mut log = FileLog::create(&store.0, F).unwrap();
        log.append_at_end(&pattern(0, 2 * F + 100)).unwrap();
        log.sync().unwrap();
        let synced = log.max_offset();
        // Unsynced: fills the third segment and starts two more.
        log.append_at_end(&pattern(synced, 3 * F)).unwrap();
        assert_eq!(log.segment_starts(), vec![0, F, 2 * F, 3 * F, 4 * F, 5 * F]);
        log.crash();

        // The same boot: only the process died, the files are trusted.
        let same = FileLog::open_with_boot_id(&store.0, F, current_boot_id()).unwrap();
        assert_eq!(same.max_offset(), synced + 3 * F);
        // Open flushed what the dead process left, but the checkpoint does not claim it yet.
        assert_eq!(same.synced_offset(), synced);
        same.crash();

        let rebooted = FileLog::open_with_boot_id(&store.0, F, Some("next-boot".into())).unwrap();
        assert_eq!(rebooted.max_offset(), synced);
        assert_eq!(rebooted.segment_starts(), vec![0, F, 2 * F]);
        assert_eq!(
            fs::metadata(rebooted.segment_path(2 * F)).unwrap().len(),
            synced - 2 * F
        );
        assert!(!rebooted.segment_path(3 * F).exists());
        assert_eq!(rebooted.copy_range(0, synced).unwrap(), pattern(0, synced));
        drop(rebooted);

        // Recovery recorded the new boot, so its own files are trusted from now on.
        let mut again = FileLog::open_with_boot_id(&store.0, F, Some("next-boot".into())).unwrap();
        assert_eq!(again.max_offset(), synced);
        again.append_at_end(&pattern(synced, 10)).unwrap();
        drop(again);
        let again = FileLog::open_with_boot_id(&store.0, F, Some("next-boot".into())).unwrap();
        assert_eq!(again.max_offset(), synced + 10);
        assert_eq!(
            again.copy_range(0, synced + 10).unwrap(),
            pattern(0, synced + 10)
        );
    }

    #[test]
    fn a_reboot_before_any_sync_leaves_a_mid_log_slave_empty_at_its_start() {
        let store = Scratch::new("reboot-mid-log");
        let start = 3 * F + 100;
        let mut log = FileLog::create(&store.0, F).unwrap();
        log.append(start, Bytes::from(pattern(start, F))).unwrap();
        assert_eq!(log.segment_starts(), vec![3 * F, 4 * F]);
        log.crash();

        let rebooted = FileLog::open_with_boot_id(&store.0, F, Some("next-boot".into())).unwrap();
        assert_eq!(
            (rebooted.min_offset(), rebooted.max_offset()),
            (start, start)
        );
        assert_eq!(rebooted.segment_starts(), vec![3 * F]);
        assert_eq!(
            fs::metadata(rebooted.segment_path(3 * F)).unwrap().len(),
            100
        );
        drop(rebooted);

        // Still empty, so the slave may start anywhere again.
        let mut log = FileLog::open_with_boot_id(&store.0, F, Some("next-boot".into())).unwrap();
        assert_eq!(log.append_at(7 * F, &pattern(7 * F, 5)).unwrap(), 7 * F + 5);
        assert_eq!(log.segment_starts(), vec![7 * F]);
        assert!(!log.segment_path(3 * F).exists());
    }

    /// Descriptors of this process open on files under `dir`.
    fn open_files_under(dir: &Path) -> usize {
        fs::read_dir("/proc/self/fd")
            .map(|entries| {
                entries
                    .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                    .filter(|target| target.starts_with(dir))
                    .count()
            })
            .unwrap_or(0)
    }

    #[test]
    fn only_the_tail_stays_open_and_sealed_segments_are_flushed() {
        let store = Scratch::new("tail-only");
        let mut log = FileLog::create(&store.0, F).unwrap();
        log.set_flush_mode(FlushMode::Manual).unwrap();
        let commitlog = log.commitlog_dir().to_path_buf();
        for i in 0..20 {
            log.append_at_end(&pattern(i * F, F)).unwrap();
            // The tail, nothing else, under commitlog/ (the lock file is in the root).
            if cfg!(target_os = "linux") {
                assert_eq!(open_files_under(&commitlog), 1, "after {} segments", i + 1);
            }
        }
        // The roll flushed every sealed segment; the checkpoint is the flush's to advance.
        assert_eq!(log.data_synced, 19 * F);
        assert_eq!(log.synced_offset(), 0);
        log.sync().unwrap();
        assert_eq!(log.synced_offset(), 20 * F);
        log.close().unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(open_files_under(&store.0), 0);
        }
    }

    #[test]
    fn the_policy_decides_from_the_times_handed_in() {
        let store = Scratch::new("policy");
        let mut log = FileLog::create(&store.0, 1 << 20).unwrap();
        assert_eq!(log.flush_mode(), FlushMode::Periodic(FlushPolicy::ROCKETMQ));
        let t0 = Instant::now();
        let ms = std::time::Duration::from_millis;
        assert_eq!(log.flush_due(t0), Some(t0));

        // The first tick is thorough: one byte is enough.
        log.append_at_end(b"x").unwrap();
        assert!(log.maybe_flush(t0).unwrap());
        assert_eq!(log.synced_offset(), 1);
        assert_eq!(log.flush_due(t0), Some(t0 + ms(500)));
        // Not due before the interval.
        log.append_at_end(&pattern(1, 8 * F)).unwrap();
        assert!(!log.maybe_flush(t0 + ms(499)).unwrap());
        assert_eq!(log.synced_offset(), 1);
        // Due, and 8 pages are enough.
        assert!(log.maybe_flush(t0 + ms(500)).unwrap());
        assert_eq!(log.synced_offset(), 8 * F + 1);
        // 3 new pages are not, tick after tick, until the thorough tick 10 s after the first.
        log.append_at_end(&pattern(8 * F + 1, 3 * F)).unwrap();
        for i in 2..20 {
            assert!(!log.maybe_flush(t0 + ms(500) * i).unwrap(), "tick {i}");
        }
        assert!(log.maybe_flush(t0 + ms(10_000)).unwrap());
        assert_eq!(log.synced_offset(), log.max_offset());
        // Nothing new: no flush, even on a thorough tick.
        assert!(!log.maybe_flush(t0 + ms(20_000)).unwrap());

        // Other modes have no schedule.
        log.set_flush_mode(FlushMode::Manual).unwrap();
        assert_eq!(log.flush_due(t0), None);
        log.append_at_end(&pattern(11 * F + 1, 8 * F)).unwrap();
        assert!(!log.maybe_flush(t0 + ms(60_000)).unwrap());
        assert_eq!(log.synced_offset(), 11 * F + 1);
    }

    #[test]
    fn a_flush_run_outside_the_log_claims_what_was_there_when_prepared() {
        let store = Scratch::new("prepared");
        let mut log = FileLog::create(&store.0, F).unwrap();
        let t0 = Instant::now();
        log.append_at_end(&pattern(0, F + 10)).unwrap();
        let pending = log
            .prepare_flush(t0)
            .unwrap()
            .expect("the first tick flushes");
        assert_eq!(pending.target(), F + 10);
        // Appends go on (and roll over) while the flush runs.
        log.append_at_end(&pattern(F + 10, 2 * F)).unwrap();
        let done = pending.run();
        assert!(log.finish_flush(done).unwrap());
        assert_eq!(log.synced_offset(), F + 10);
        assert_eq!(
            Checkpoint::load(&store.0).unwrap().unwrap().synced_max,
            F + 10
        );

        // A flush that a full sync overtook claims nothing more.
        let pending = log
            .prepare_flush(t0 + std::time::Duration::from_secs(10))
            .unwrap();
        let pending = pending.expect("a thorough tick with 2 new segments");
        log.sync().unwrap();
        assert!(!log.finish_flush(pending.run()).unwrap());
        assert_eq!(log.synced_offset(), 3 * F + 10);
    }

    #[test]
    fn a_flush_prepared_before_an_empty_store_moved_its_start_claims_nothing() {
        let store = Scratch::new("epoch");
        let mut log = FileLog::create(&store.0, F).unwrap();
        log.set_flush_mode(FlushMode::Periodic(FlushPolicy::new(
            std::time::Duration::ZERO,
            0,
            std::time::Duration::ZERO,
        )))
        .unwrap();
        // An empty store at 7F (as a slave whose first append went there, then rebooted).
        log.restart_at(7 * F).unwrap();
        let stale = log.pending_flush().unwrap();
        assert_eq!(stale.target(), 7 * F);
        // The master sends an earlier start: the empty store moves back to 2F.
        log.append_at(2 * F, b"abc").unwrap();
        // The stale flush must not claim up to 7F, far past the 3 bytes the store holds.
        assert!(!log.finish_flush(stale.run()).unwrap());
        assert_eq!(log.synced_offset(), 2 * F);
        let checkpoint = Checkpoint::load(&store.0).unwrap().unwrap();
        assert_eq!((checkpoint.base, checkpoint.synced_max), (2 * F, 2 * F));
    }

    #[test]
    fn every_append_mode_returns_only_durable_appends() {
        let store = Scratch::new("every-append");
        let mut log = FileLog::create(&store.0, F).unwrap();
        log.set_flush_mode(FlushMode::EveryAppend).unwrap();
        assert_eq!(log.flush_due(Instant::now()), None);
        for i in 0..5u64 {
            let end = log.append_at_end(&pattern(i * 3000, 3000)).unwrap();
            assert_eq!(log.synced_offset(), end);
            assert_eq!(Checkpoint::load(&store.0).unwrap().unwrap().synced_max, end);
        }
        let pieces = [
            Bytes::from(pattern(15_000, 100)),
            Bytes::from(pattern(15_100, 9000)),
        ];
        let end = log.append_all(15_000, &pieces).unwrap();
        assert_eq!(log.synced_offset(), end);
        log.crash();
        // So a reboot keeps every append that returned.
        let rebooted = FileLog::open_with_boot_id(&store.0, F, Some("next-boot".into())).unwrap();
        assert_eq!(rebooted.max_offset(), 24_100);
        assert_eq!(rebooted.copy_range(0, 24_100).unwrap(), pattern(0, 24_100));
    }

    #[test]
    fn drop_syncs_and_close_reports() {
        let store = Scratch::new("drop-syncs");
        let mut log = FileLog::create(&store.0, F).unwrap();
        log.append_at_end(&pattern(0, 2 * F + 5)).unwrap();
        drop(log);
        let rebooted = FileLog::open_with_boot_id(&store.0, F, Some("next-boot".into())).unwrap();
        assert_eq!(rebooted.max_offset(), 2 * F + 5);
    }

    #[test]
    fn boot_ids_are_compared_only_when_both_are_known() {
        assert!(same_boot(Some("a"), Some("a")));
        assert!(!same_boot(Some("a"), Some("b")));
        assert!(same_boot(None, Some("b")));
        assert!(same_boot(Some("a"), None));
    }
}
