//! [`FileLogError`]: everything that can go wrong with a store on disk.

use std::io;
use std::path::PathBuf;

use rocketmq_ha::LogError;

/// A failure of a [`FileLog`](super::FileLog): an I/O error, a store that does not have
/// RocketMQ's layout, or a request outside the log.
///
/// Every variant about the store's contents names the offending file, so an operator can find
/// it; nothing in a bad store is skipped silently.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive] // new checks (e.g. message-level recovery of Java stores) will add variants
pub enum FileLogError {
    /// A system call on a file or directory of the store failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done ("open", "write to", "fsync", ...).
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Another `FileLog` (in this or another process) has the store open: two writers would
    /// interleave appends and corrupt it.
    #[error("the store is in use: {} is locked by another process or handle", path.display())]
    Locked {
        /// The store's lock file.
        path: PathBuf,
    },
    /// A RocketMQ broker (or another program taking RocketMQ's lock) holds the store: its
    /// `lock` file carries an `fcntl` record lock. Serving or writing the store while the
    /// broker recovers, truncates and appends to it would be unsafe.
    #[error("the store is held by a running RocketMQ broker: {} is locked", path.display())]
    BrokerLocked {
        /// The store's RocketMQ `lock` file.
        path: PathBuf,
    },
    /// The segment size is below one page or too large to map sensibly
    /// ([`MIN_SEGMENT_SIZE`](super::MIN_SEGMENT_SIZE), [`MAX_SEGMENT_SIZE`](super::MAX_SEGMENT_SIZE)).
    #[error("{}", describe_segment_size(*size, *min, *max))]
    InvalidSegmentSize {
        /// The size asked for.
        size: u64,
        /// The smallest size accepted (one page).
        min: u64,
        /// The largest size accepted.
        max: u64,
    },
    /// There is no store here: the `commitlog/` directory is missing.
    #[error("no commit log store at {}: {} does not exist", root.display(), commitlog.display())]
    NoStore {
        /// The store directory that was given.
        root: PathBuf,
        /// The `commitlog/` directory that was expected in it.
        commitlog: PathBuf,
    },
    /// [`FileLog::create`](super::FileLog::create) found a store already in place.
    #[error("a commit log store already exists at {}", path.display())]
    StoreExists {
        /// The existing `commitlog/` directory.
        path: PathBuf,
    },
    /// A file in `commitlog/` is not named by a 20-digit offset, the only names RocketMQ uses.
    #[error("{}: not a segment file name (expected a 20-digit start offset)", path.display())]
    BadFileName {
        /// The file.
        path: PathBuf,
    },
    /// An entry of `commitlog/` is a directory or another non-file.
    #[error("{}: not a regular file", path.display())]
    NotAFile {
        /// The entry.
        path: PathBuf,
    },
    /// A segment's start offset is not a multiple of the segment size (wrong size configured,
    /// or a stray file).
    #[error(
        "{}: segment start {start} is not a multiple of the segment size {segment_size}",
        path.display()
    )]
    UnalignedSegment {
        /// The segment file.
        path: PathBuf,
        /// The start offset from its name.
        start: u64,
        /// The segment size the store was opened with.
        segment_size: u64,
    },
    /// Segments are missing between two files: the log would have a hole.
    #[error("{}: segments are missing before this file: expected the segment starting at {expected}", path.display())]
    Gap {
        /// The first file after the hole.
        path: PathBuf,
        /// The start offset the file after its predecessor should have.
        expected: u64,
    },
    /// A segment other than the last one is not exactly one segment long.
    #[error(
        "{}: segment holds {len} bytes but every segment except the last must hold exactly {segment_size}",
        path.display()
    )]
    WrongSegmentLength {
        /// The segment file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The segment size.
        segment_size: u64,
    },
    /// The last segment is longer than a segment.
    #[error("{}: segment holds {len} bytes, more than the segment size {segment_size}", path.display())]
    SegmentTooLong {
        /// The segment file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The segment size.
        segment_size: u64,
    },
    /// Our checkpoint file cannot be parsed.
    #[error("{}: invalid checkpoint: {reason}", path.display())]
    BadCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The store was written with another segment size than the one it is opened with: its
    /// checkpoint records another, or (in a store without one) its segment files are spaced
    /// and sized for another.
    #[error(
        "{}: the store was written with segment size {recorded}, not {requested}",
        path.display()
    )]
    SegmentSizeMismatch {
        /// The checkpoint file that records the size, or the first segment file that shows it.
        path: PathBuf,
        /// The size recorded there.
        recorded: u64,
        /// The size asked for.
        requested: u64,
    },
    /// The checkpoint contradicts the segment files.
    #[error("{}: checkpoint does not match the segment files: {reason}", path.display())]
    CheckpointMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The contradiction.
        reason: String,
    },
    /// A read below the oldest retained offset.
    #[error("offset {offset} is below the oldest retained offset {min}")]
    BelowRetained {
        /// The offset asked for.
        offset: u64,
        /// The oldest retained offset.
        min: u64,
    },
    /// A read above the end of the log.
    #[error("offset {offset} is above the log's max offset {max}")]
    AboveMax {
        /// The offset asked for.
        offset: u64,
        /// The log's max offset.
        max: u64,
    },
    /// An append that does not start at the end of a non-empty log; nothing was written.
    #[error("append at offset {offset} but the log ends at {max}")]
    NotContiguous {
        /// The offset the append asked for.
        offset: u64,
        /// The log's max offset.
        max: u64,
    },
    /// The append would take the log past the largest offset the wire can carry (`i64::MAX`).
    #[error("appending {len} bytes at offset {offset} would pass the largest log offset")]
    OffsetOverflow {
        /// Where the append started.
        offset: u64,
        /// How many bytes it had.
        len: u64,
    },
    /// No mapped segment holds an offset inside the log's range: a bug in this module, reported
    /// rather than panicking in a reader.
    #[error("no mapped segment holds offset {offset}, which is inside the log")]
    MissingSegment {
        /// The offset read.
        offset: u64,
    },
    /// An earlier write failed and its partial bytes could not be cut off again; appending more
    /// could leave bytes on disk that were never part of the log, so the store refuses.
    #[error("an earlier failed write could not be rolled back; reopen the store to recover")]
    Poisoned,
    /// An empty RocketMQ-format store was asked to start inside a segment. A broker reads every
    /// segment file from its first byte and takes the zeros of such a hole for the end of the
    /// log, dropping all that follows, so this format only starts on a segment boundary.
    #[error(
        "a RocketMQ-format store can only start on a segment boundary: {offset} is not a \
         multiple of the segment size {segment_size} (is the master's segment size another?)"
    )]
    UnalignedStart {
        /// The offset asked for.
        offset: u64,
        /// The store's segment size.
        segment_size: u64,
    },
    /// The store exists in one format and was asked for in the other.
    #[error("{}: the store is in {found} format, not {requested}", root.display())]
    FormatMismatch {
        /// The store directory.
        root: PathBuf,
        /// The format found on disk.
        found: super::StoreFormat,
        /// The format asked for.
        requested: super::StoreFormat,
    },
}

/// The reason a segment size is refused, for [`FileLogError::InvalidSegmentSize`].
fn describe_segment_size(size: u64, min: u64, max: u64) -> String {
    if size < min {
        format!("segment size {size} is too small: it must be at least one page ({min} bytes)")
    } else {
        format!(
            "segment size {size} is too large: at most {max} bytes, since every segment is \
             mapped into memory whole (RocketMQ's default is 1 GiB)"
        )
    }
}

impl FileLogError {
    pub(super) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        FileLogError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl From<FileLogError> for LogError {
    /// Range errors keep their meaning for the machines (a master turns
    /// [`LogError::BelowRetained`] into a typed error for the operator); everything else is a
    /// storage failure.
    fn from(e: FileLogError) -> LogError {
        match e {
            FileLogError::BelowRetained { offset, min } => LogError::BelowRetained { offset, min },
            FileLogError::AboveMax { offset, max } => LogError::AboveMax { offset, max },
            FileLogError::NotContiguous { offset, max } => LogError::NotContiguous { offset, max },
            other => LogError::Storage(Box::new(other)),
        }
    }
}

impl From<FileLogError> for io::Error {
    fn from(e: FileLogError) -> io::Error {
        let kind = match &e {
            FileLogError::Io { source, .. } => source.kind(),
            FileLogError::NoStore { .. } => io::ErrorKind::NotFound,
            FileLogError::StoreExists { .. } => io::ErrorKind::AlreadyExists,
            FileLogError::InvalidSegmentSize { .. }
            | FileLogError::BelowRetained { .. }
            | FileLogError::AboveMax { .. }
            | FileLogError::NotContiguous { .. }
            | FileLogError::OffsetOverflow { .. }
            | FileLogError::UnalignedStart { .. } => io::ErrorKind::InvalidInput,
            FileLogError::Poisoned => io::ErrorKind::Other,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}
