//! Typed errors, one enum per boundary.
//!
//! Every error that can be caused by a peer's bytes is a value here, never a panic. Each enum
//! converts into [`std::io::Error`] so that async drivers can surface it through the usual
//! `io::Result` plumbing.

use std::io;
use std::time::Duration;

/// A frame on the wire that can never be valid (§2.1, §2.2, §8 invariant 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive] // new wire variants (AutoSwitch, §5) will add cases
pub enum WireError {
    /// An offset field was negative; CommitLog offsets are never below zero.
    #[error("negative offset {0} on the wire")]
    NegativeOffset(i64),
    /// A transfer header carried a negative body size.
    #[error("negative body size {0} in transfer header")]
    NegativeBodySize(i32),
    /// A transfer frame (header + body) is larger than the receiver accepts.
    #[error("transfer frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Header plus body size announced by the header.
        size: u64,
        /// The configured `max_frame_size`.
        max: u64,
    },
    /// A transfer frame would end past `i64::MAX`, the largest offset the wire can carry: no
    /// commit log holds such bytes, and the receiver could never report their end.
    #[error("transfer frame at offset {offset} with {body_len} body bytes ends past i64::MAX")]
    OffsetOverflow {
        /// The frame's offset.
        offset: u64,
        /// The frame's body size.
        body_len: u32,
    },
}

/// A configuration value that is out of range; returned when a [`Config`](crate::Config) is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive] // more knobs will bring more checks
pub enum ConfigError {
    /// `transfer_batch_size` was zero, so no data could ever be sent.
    #[error("transfer_batch_size must be at least 1 byte")]
    ZeroBatchSize,
    /// A frame of `transfer_batch_size` bytes would exceed `max_frame_size` (§2.2: a Java slave
    /// livelocks on such a frame).
    #[error("transfer_batch_size {batch} + 12-byte header exceeds max_frame_size {max_frame}")]
    BatchExceedsFrameLimit {
        /// The configured batch size.
        batch: u32,
        /// The configured frame limit.
        max_frame: u32,
    },
    /// `max_frame_size` cannot even hold a transfer header.
    #[error("max_frame_size {0} is smaller than the 12-byte transfer header")]
    FrameLimitTooSmall(u32),
    /// A timer that must be positive was zero.
    #[error("{0} must be greater than zero")]
    ZeroDuration(&'static str),
    /// Housekeeping at or below the heartbeat interval would close healthy idle connections.
    #[error("housekeeping_interval {housekeeping:?} must exceed heartbeat_interval {heartbeat:?}")]
    HousekeepingNotAboveHeartbeat {
        /// The configured housekeeping interval.
        housekeeping: Duration,
        /// The configured heartbeat interval.
        heartbeat: Duration,
    },
    /// A back-off ceiling (reconnect, or after local failures) is below its starting value.
    #[error("back-off ceiling {max:?} is below its initial delay {initial:?}")]
    BackoffRange {
        /// The configured initial delay.
        initial: Duration,
        /// The configured ceiling.
        max: Duration,
    },
    /// A duration above [`Config::MAX_DURATION`](crate::Config::MAX_DURATION): deadlines
    /// computed from it would overflow `Instant`.
    #[error("{name} {value:?} is longer than the most allowed, {max:?}")]
    DurationTooLong {
        /// The setting's name.
        name: &'static str,
        /// The configured value.
        value: Duration,
        /// The longest allowed.
        max: Duration,
    },
    /// A rate limit below [`flow::MIN_RATE`](crate::flow::MIN_RATE) bytes a second: heartbeats
    /// alone would outrun it.
    #[error("rate_limit {0} B/s is below the least allowed, 1024 B/s")]
    RateTooLow(u64),
    /// `max_gap_not_in_sync` was zero, so no slave could ever be in sync.
    #[error("max_gap_not_in_sync must be at least 1 byte")]
    ZeroGap,
    /// `verify_records` was set without `local_segment_size`: records are checked segment by
    /// segment (a blank record pads to the segment's end).
    #[error("verify_records needs local_segment_size")]
    VerifyNeedsSegmentSize,
}

/// A failure of a commit log, as reported by a [`LogSource`](crate::LogSource) or
/// [`LogSink`](crate::LogSink) implementation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive] // storage back-ends bring their own failure kinds
pub enum LogError {
    /// The offset lies below the oldest retained byte (its segment was deleted).
    #[error("offset {offset} is below the oldest retained offset {min}")]
    BelowRetained {
        /// The offset asked for.
        offset: u64,
        /// The log's oldest retained offset.
        min: u64,
    },
    /// The offset lies above the end of the log.
    #[error("offset {offset} is above the log's max offset {max}")]
    AboveMax {
        /// The offset asked for.
        offset: u64,
        /// The log's max offset.
        max: u64,
    },
    /// An append did not start at the end of the log; the slave's log must stay a prefix of the
    /// master's, so such an append is refused and nothing is written.
    #[error("append at offset {offset} but the log ends at {max}")]
    NotContiguous {
        /// The offset the append asked for.
        offset: u64,
        /// The log's max offset.
        max: u64,
    },
    /// A storage failure of the back-end (I/O, a bad segment file, ...).
    #[error("storage error: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why a [`MasterConnection`](crate::MasterConnection) closed (§3.7).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive] // future checks (AutoSwitch states, §5) will add reasons
pub enum MasterError {
    /// The slave sent bytes that are not a valid report.
    #[error("invalid report from slave: {0}")]
    Wire(#[from] WireError),
    /// The slave acknowledged more than the master has (§3.2, the 4.9.3+ check of #3015).
    #[error("slave acknowledged offset {ack} above the master's max offset {max}")]
    AckAboveMax {
        /// The acknowledged offset.
        ack: u64,
        /// The master's max offset when the ack arrived.
        max: u64,
    },
    /// The slave acknowledged bytes that were never sent on this connection (§8 invariant 19,
    /// only when `reject_ack_above_sent` is on).
    #[error("slave acknowledged offset {ack} but only {sent} was sent on this connection")]
    AckAboveSent {
        /// The acknowledged offset.
        ack: u64,
        /// The end of the last byte sent on this connection.
        sent: u64,
    },
    /// An acknowledgement went below an earlier one on the same connection; a slave's log only
    /// grows while it is connected, so the peer is broken.
    #[error("slave acknowledgement went backwards from {previous} to {ack}")]
    AckWentBackwards {
        /// The previous acknowledgement.
        previous: u64,
        /// The new, lower one.
        ack: u64,
    },
    /// The slave asked to resume below the master's retained range; it can never catch up
    /// (issue #3388: Java loops on heartbeats forever, we report it).
    #[error("slave requested offset {requested} but the master only retains from {min}")]
    RequestBelowRetained {
        /// The requested offset.
        requested: u64,
        /// The master's oldest retained offset.
        min: u64,
    },
    /// The slave asked to resume above the master's max offset: the slave is ahead (§7.2 #10).
    #[error("slave requested offset {requested} above the master's max offset {max}")]
    RequestAboveMax {
        /// The requested offset.
        requested: u64,
        /// The master's max offset.
        max: u64,
    },
    /// Nothing was read from the slave for longer than `housekeeping_interval` (§3.2).
    #[error("no bytes from slave for {idle:?} (housekeeping)")]
    HousekeepingTimeout {
        /// How long the connection had been silent.
        idle: Duration,
    },
    /// A frame write made no progress for `write_stall_timeout`: the slave stopped reading.
    #[error("frame write made no progress for {stalled:?}: the slave is not reading")]
    WriteStalled {
        /// How long the write had made no progress.
        stalled: Duration,
    },
    /// The peer sent no complete report within `first_report_timeout` of connecting: it is not
    /// a slave, or not a working one (§3.7).
    #[error("no report from the peer {waited:?} after it connected: not a slave, or a stuck one")]
    NoFirstReport {
        /// How long the connection had been open.
        waited: Duration,
    },
    /// Reading the log for the next frame failed.
    #[error("reading the commit log failed: {0}")]
    Log(#[from] LogError),
    /// The machine was used out of order (e.g. `on_transmitted` with nothing in flight); a bug in
    /// the driver, reported instead of silently ignored.
    #[error("driver misuse: {0}")]
    Misuse(&'static str),
}

/// Why an [`HaClient`](crate::HaClient) closed its connection (§4.6).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive] // future checks (AutoSwitch states, §5) will add reasons
pub enum ClientError {
    /// The master sent a frame that can never be valid (negative size, too large, ...).
    #[error("invalid frame from master: {0}")]
    Wire(#[from] WireError),
    /// The master pushed an offset other than the end of the slave's log (§4.4).
    #[error("master pushed offset {received} but the slave's log ends at {expected}")]
    OffsetMismatch {
        /// The offset the slave expected (its max offset plus what is in flight).
        expected: u64,
        /// The offset in the master's header.
        received: u64,
    },
    /// Nothing was read from the master for longer than `housekeeping_interval` (§4.6, 5.x rule).
    #[error("no bytes from master for {idle:?} (housekeeping)")]
    HousekeepingTimeout {
        /// How long the connection had been silent.
        idle: Duration,
    },
    /// A report write made no progress for `write_stall_timeout`: the master stopped reading
    /// (Java gives up after three attempts that write nothing, §4.2).
    #[error("report write made no progress for {stalled:?}: the master is not reading")]
    WriteStalled {
        /// How long the write had made no progress.
        stalled: Duration,
    },
    /// The TCP connect to the master did not complete within `connect_timeout` (§1.4).
    #[error("connect to the master timed out after {after:?}")]
    ConnectTimeout {
        /// The connect timeout.
        after: Duration,
    },
    /// A frame shows that the master's segment size is not the slave's
    /// ([`Config::local_segment_size`](crate::Config::local_segment_size)): it crosses a
    /// boundary of the slave's segments, which a master's frames never do of its own, or it is
    /// an empty slave's first frame and starts off a boundary. Nothing of it is stored.
    #[error(
        "the master's segment size is not ours ({segment_size} bytes): its frame of {len} bytes \
         at offset {offset} {}",
        if *crosses { "crosses one of our segment boundaries" } else { "starts an empty store off a segment boundary" }
    )]
    SegmentSizeMismatch {
        /// The frame's offset.
        offset: u64,
        /// The frame's body length.
        len: u32,
        /// The slave's segment size.
        segment_size: u64,
        /// Whether the frame crosses a boundary (else: the first frame is off one).
        crosses: bool,
    },
    /// With [`Config::verify_records`](crate::Config::verify_records), the master's log is not
    /// valid RocketMQ records at this point (a diverged or corrupt master log, or one that is
    /// not RocketMQ messages at all). Nothing from the bad record on is stored.
    #[error("the master's log fails the record check: {0}")]
    BadRecord(crate::record::RecordError),
    /// The machine was used out of order (e.g. input while not connected); a driver bug.
    #[error("driver misuse: {0}")]
    Misuse(&'static str),
}

impl ClientError {
    /// Whether the error says the master's log cannot be taken as it is (a segment size
    /// mismatch, a bad record) rather than that the network failed: retrying soon would only
    /// fail again, so the slave waits the local back-off.
    pub fn is_incompatible(&self) -> bool {
        matches!(
            self,
            ClientError::SegmentSizeMismatch { .. } | ClientError::BadRecord(_)
        )
    }
}

/// Why a synchronous-replication wait did not succeed (§3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive] // e.g. "not enough in-sync replicas" for 5.x quorum modes
pub enum SyncError {
    /// Not enough slaves acknowledged the offset before the deadline (`FLUSH_SLAVE_TIMEOUT`).
    #[error("replication timed out before enough slaves acknowledged")]
    Timeout,
    /// The service shut down while the request was pending.
    #[error("replication service shut down")]
    Shutdown,
    /// No slave is connected, or the slaves are too far behind (`max_gap_not_in_sync`): a 4.9
    /// `SYNC_MASTER` answers `SLAVE_NOT_AVAILABLE` at once instead of waiting
    /// ([`AckPolicy::SlaveOk`](crate::AckPolicy::SlaveOk)).
    #[error("no slave is available (none connected, or too far behind)")]
    SlaveNotAvailable,
    /// Fewer replicas are in sync than the policy needs: 5.x's `IN_SYNC_REPLICAS_NOT_ENOUGH`,
    /// answered at once ([`AckPolicy::InSyncReplicas`](crate::AckPolicy::InSyncReplicas)).
    #[error("{in_sync} replica(s) in sync (the master included), {needed} needed")]
    NotEnoughInSync {
        /// Replicas the write needs, the master included.
        needed: usize,
        /// Replicas in sync, the master included.
        in_sync: usize,
    },
}

/// Maps each error to the `io::ErrorKind` a network user would expect.
trait IoKind {
    fn io_kind(&self) -> io::ErrorKind;
}

impl IoKind for WireError {
    fn io_kind(&self) -> io::ErrorKind {
        io::ErrorKind::InvalidData
    }
}

impl IoKind for ConfigError {
    fn io_kind(&self) -> io::ErrorKind {
        io::ErrorKind::InvalidInput
    }
}

impl IoKind for LogError {
    fn io_kind(&self) -> io::ErrorKind {
        io::ErrorKind::Other
    }
}

impl IoKind for SyncError {
    fn io_kind(&self) -> io::ErrorKind {
        match self {
            SyncError::Timeout => io::ErrorKind::TimedOut,
            SyncError::Shutdown => io::ErrorKind::Interrupted,
            SyncError::SlaveNotAvailable | SyncError::NotEnoughInSync { .. } => {
                io::ErrorKind::NotConnected
            }
        }
    }
}

impl IoKind for MasterError {
    fn io_kind(&self) -> io::ErrorKind {
        match self {
            MasterError::HousekeepingTimeout { .. } | MasterError::WriteStalled { .. } => {
                io::ErrorKind::TimedOut
            }
            MasterError::Log(_) | MasterError::Misuse(_) => io::ErrorKind::Other,
            _ => io::ErrorKind::InvalidData,
        }
    }
}

impl IoKind for ClientError {
    fn io_kind(&self) -> io::ErrorKind {
        match self {
            ClientError::HousekeepingTimeout { .. }
            | ClientError::WriteStalled { .. }
            | ClientError::ConnectTimeout { .. } => io::ErrorKind::TimedOut,
            ClientError::Misuse(_) => io::ErrorKind::Other,
            _ => io::ErrorKind::InvalidData,
        }
    }
}

macro_rules! into_io {
    ($($ty:ty),*) => {$(
        impl From<$ty> for io::Error {
            fn from(e: $ty) -> io::Error {
                io::Error::new(e.io_kind(), e)
            }
        }
    )*};
}

into_io!(
    WireError,
    ConfigError,
    LogError,
    SyncError,
    MasterError,
    ClientError
);
