//! Stores in RocketMQ's own format: which format a store is in, the broker's `lock`, and the
//! recovery walk that finds where a preallocated log ends.
//!
//! A broker preallocates every segment file to the full segment size and leaves zeros after
//! the last record, so a file's length says nothing about the log's end; the end is where the
//! records stop ([`rocketmq_ha::record`]). RocketMQ's normal recovery checks the last three
//! segment files record by record (body CRC included) and ends the log at the first record
//! that fails; its abnormal recovery starts further back, at a segment picked by the
//! checkpoint's timestamps. We walk the last [`RECOVERY_SEGMENTS`] like the normal recovery:
//! the end is always in the last segment or, when the broker had already preallocated the next
//! file, in the one before, so three is more than enough to find it, and the walk stays bounded
//! by three segments however large the store. Older segments are served as they are.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;
use rocketmq_ha::record::{
    RecordError, WalkEnd, Walker, BLANK_MAGIC, MESSAGE_MAGIC_V1, MESSAGE_MAGIC_V2,
};
use rustix::fs::{fcntl_lock, FlockOperation};

use super::checkpoint::Checkpoint;
use super::error::FileLogError;
use super::segments::SegmentFile;

/// RocketMQ's store lock, in the store root: a broker holds an `fcntl` lock on it while it runs.
pub const ROCKETMQ_LOCK_FILE: &str = "lock";

/// RocketMQ's checkpoint file, in the store root (4 KiB of big-endian timestamps and offsets).
pub const ROCKETMQ_CHECKPOINT_FILE: &str = "checkpoint";

/// RocketMQ's crash marker, in the store root: a broker creates it when it starts and deletes it
/// when it shuts down cleanly, and one that finds it at start recovers "abnormally" (walking the
/// records from a segment its checkpoint picks rather than only the last three).
pub const ROCKETMQ_ABORT_FILE: &str = "abort";

/// The size of RocketMQ's `checkpoint` file: one page, mapped whole by the broker.
pub const ROCKETMQ_CHECKPOINT_LEN: usize = 4096;

/// How many of the last segment files the recovery walk checks (RocketMQ's normal recovery).
pub const RECOVERY_SEGMENTS: usize = 3;

/// How a store's segment files hold the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFormat {
    /// Ours: segment files hold the log bytes and end where the log ends (the last file may be
    /// short); no record parsing.
    Raw,
    /// RocketMQ's: every segment file is the full segment size, and the log ends after its
    /// last valid record.
    RocketMq,
}

impl std::fmt::Display for StoreFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreFormat::Raw => "raw",
            StoreFormat::RocketMq => "rocketmq",
        })
    }
}

/// Decides an existing store's format. Our checkpoint records it for stores we wrote; a store
/// without ours is RocketMQ's if it has RocketMQ's `checkpoint` file, or if its segment files
/// are all full size and the first one starts with a record (message or blank magic) where a
/// raw store would hold arbitrary bytes.
pub(super) fn detect(
    root: &Path,
    files: &[SegmentFile],
    segment_size: u64,
    ours: Option<&Checkpoint>,
) -> Result<StoreFormat, FileLogError> {
    if let Some(cp) = ours {
        return Ok(if cp.rocketmq {
            StoreFormat::RocketMq
        } else {
            StoreFormat::Raw
        });
    }
    if root.join(ROCKETMQ_CHECKPOINT_FILE).exists() {
        return Ok(StoreFormat::RocketMq);
    }
    let Some(first) = files.first() else {
        return Ok(StoreFormat::Raw);
    };
    if files.iter().any(|f| f.len != segment_size) {
        return Ok(StoreFormat::Raw);
    }
    let mut magic = [0u8; 4];
    File::open(&first.path)
        .and_then(|f| f.read_exact_at(&mut magic, 4))
        .map_err(|e| FileLogError::io("read", &first.path, e))?;
    let magic = u32::from_be_bytes(magic);
    Ok(
        if [MESSAGE_MAGIC_V1, MESSAGE_MAGIC_V2, BLANK_MAGIC].contains(&magic) {
            StoreFormat::RocketMq
        } else {
            StoreFormat::Raw
        },
    )
}

/// Takes RocketMQ's store lock as a broker does (an exclusive, non-blocking `fcntl` record
/// lock; a broker locks byte 0, we lock the whole file, which overlaps it), so that neither
/// runs on a store the other has open. With `create`, a missing `lock` file is created (as a
/// broker's constructor does); without, a store that has none is not locked (`None`).
///
/// `fcntl` locks belong to the process and go when any descriptor of the file closes: the
/// file is opened once, here, and kept open for the log's lifetime.
pub(super) fn lock_broker(root: &Path, create: bool) -> Result<Option<File>, FileLogError> {
    let path = root.join(ROCKETMQ_LOCK_FILE);
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
        Err(e) => return Err(FileLogError::io("open", &path, e)),
    };
    match fcntl_lock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::ACCESS => {
            Err(FileLogError::BrokerLocked { path })
        }
        Err(e) => Err(FileLogError::io("lock", &path, e.into())),
    }
}

/// Checks the RocketMQ-format rules the walk relies on: every segment file is full size.
pub(super) fn check_lengths(files: &[SegmentFile], segment_size: u64) -> Result<(), FileLogError> {
    match files.iter().find(|f| f.len != segment_size) {
        Some(f) => Err(FileLogError::WrongSegmentLength {
            path: f.path.clone(),
            len: f.len,
            segment_size,
        }),
        None => Ok(()),
    }
}

/// What the recovery walk of a RocketMQ-format store found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordWalk {
    /// The log offset the walk started at: the start of the third-last segment (or the first).
    pub start: u64,
    /// The log's end: after the last valid record (the start of a blank record that ends the
    /// last segment, as in RocketMQ).
    pub end: u64,
    /// Message records passed.
    pub records: u64,
    /// The record that ended the walk by failing a check, if one did (rather than zeros).
    pub first_bad: Option<RecordError>,
}

/// Walks the last [`RECOVERY_SEGMENTS`] segments' records (module docs). `segments` are the
/// mappings of contiguous, full-size segment files.
pub(super) fn walk(segments: &BTreeMap<u64, Bytes>, segment_size: u64) -> RecordWalk {
    let starts: Vec<u64> = segments.keys().copied().collect();
    let from = starts.len().saturating_sub(RECOVERY_SEGMENTS);
    let mut result = RecordWalk {
        start: starts.get(from).copied().unwrap_or(0),
        end: starts.get(from).copied().unwrap_or(0),
        records: 0,
        first_bad: None,
    };
    for (i, start) in starts.iter().enumerate().skip(from) {
        let map = &segments[start];
        // The mapping is the segment size long and the file is full size: all readable.
        let len = usize::try_from(segment_size).map_or(map.len(), |n| n.min(map.len()));
        let mut walker = Walker::new(&map[..len], *start, true);
        result.records += walker.by_ref().count() as u64;
        result.end = walker.offset();
        match walker.end() {
            // The segment is complete; the next one continues the log, if there is one.
            Some(WalkEnd::Blank | WalkEnd::EndOfBytes) if i + 1 < starts.len() => {
                result.end = starts[i + 1];
            }
            Some(WalkEnd::Bad(e)) => {
                result.first_bad = Some(e.clone());
                return result;
            }
            _ => return result,
        }
    }
    result
}

/// Writes RocketMQ's `checkpoint` for a store we create, unless one exists (a broker's own is
/// kept as it is).
///
/// Every field is zero: `physicMsgTimestamp`, `logicsMsgTimestamp`, `indexMsgTimestamp`, and
/// 5.x's `masterFlushedOffset` and `confirmPhyOffset`. That is what a new broker has, and it is
/// the safe choice for a store without consume queues: after a crash (an `abort` file) the
/// broker picks the first segment whose first message is older than the smaller of the first
/// two timestamps, less three seconds; with zeros none is, so it walks and dispatches the log
/// from its first segment. Without `abort` it checks the last three segments, as we do.
pub(super) fn write_checkpoint_if_missing(root: &Path) -> Result<(), FileLogError> {
    let path = root.join(ROCKETMQ_CHECKPOINT_FILE);
    if path.exists() {
        return Ok(());
    }
    let tmp = root.join("checkpoint.ha-tmp");
    let write = || -> io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(&[0u8; ROCKETMQ_CHECKPOINT_LEN])?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(root)?.sync_all()
    };
    write().map_err(|e| FileLogError::io("write", &path, e))
}

/// Creates RocketMQ's `abort` marker before the first write of this process, so that a broker
/// started on the store after we crash recovers it as after its own crash. Returns whether we
/// created it: a marker that was there already (a broker crashed before us) is not ours to
/// remove.
pub(super) fn mark_abort(root: &Path) -> Result<bool, FileLogError> {
    let path = root.join(ROCKETMQ_ABORT_FILE);
    match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(_) => {
            File::open(root)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| FileLogError::io("fsync", root, e))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(FileLogError::io("create", &path, e)),
    }
}

/// Removes the `abort` marker we created, once everything is synced: the store was closed
/// cleanly, so a broker may take the quick (normal) recovery.
pub(super) fn clear_abort(root: &Path) -> Result<(), FileLogError> {
    let path = root.join(ROCKETMQ_ABORT_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(FileLogError::io("delete", &path, e)),
    }
    File::open(root)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| FileLogError::io("fsync", root, e))
}
