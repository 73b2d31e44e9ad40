//! Typed errors of the AutoSwitch machines (§5), one enum per boundary.

use std::io;

use crate::connection_state::ConnectionState;

/// A frame on the AutoSwitch wire that can never be valid (§5.1, §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive] // a future wire variant (§5.9) may add cases
pub enum WireError {
    /// The state field is not one of `HAConnectionState`'s five ordinals; Java throws and
    /// closes the connection.
    #[error("unknown connection state ordinal {0} on the wire")]
    UnknownState(i32),
    /// A known state that this direction never carries (`READY`, `SUSPEND`, `SHUTDOWN`): Java's
    /// master logs "Current state illegal" and closes.
    #[error("state {} is not a frame state", .0.name())]
    IllegalState(ConnectionState),
    /// An offset field was negative (other than the −1 that means "none" where Java sends it).
    #[error("negative offset {0} on the wire")]
    NegativeOffset(i64),
    /// A body size was negative.
    #[error("negative body size {0}")]
    NegativeBodySize(i32),
    /// A frame (header and body) is larger than the receiver accepts.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Header plus body size announced by the header.
        size: u64,
        /// The receiver's limit.
        max: u64,
    },
    /// The master's handshake body is not a whole number of 12-byte epoch entries.
    #[error("handshake body of {0} bytes is not a whole number of 12-byte epoch entries")]
    RaggedEpochEntries(u32),
    /// The master's epoch entries are not strictly ascending in both epoch and start offset,
    /// which an epoch file can never hold (§5.6).
    #[error("epoch entry ({epoch}, {start}) does not follow the previous one in order")]
    EpochEntriesOutOfOrder {
        /// The offending entry's epoch.
        epoch: i32,
        /// The offending entry's start offset.
        start: u64,
    },
    /// A data frame would end past `i64::MAX`; no commit log holds such bytes.
    #[error("frame at offset {offset} with {body_len} body bytes ends past i64::MAX")]
    OffsetOverflow {
        /// The frame's offset.
        offset: u64,
        /// The frame's body size.
        body_len: u32,
    },
    /// A data frame without an offset (−1): only heartbeats of an empty master carry −1.
    #[error("data frame of {0} bytes without an offset")]
    DataWithoutOffset(u32),
}

/// Why an epoch entry could not be added (§5.6 `appendEntry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive] // more list rules may come
pub enum EpochError {
    /// The entry is not strictly after the last one in both epoch and start offset.
    #[error(
        "epoch entry ({epoch}, {start}) is not after the last entry ({last_epoch}, {last_start})"
    )]
    NotAfterLast {
        /// The rejected entry's epoch.
        epoch: i32,
        /// The rejected entry's start offset.
        start: u64,
        /// The last entry's epoch.
        last_epoch: i32,
        /// The last entry's start offset.
        last_start: u64,
    },
    /// A negative epoch: epochs come from the controller and start at 1; −1 means "none".
    #[error("epoch {0} is negative")]
    NegativeEpoch(i32),
}

/// Why a role change was refused (§5.6 `changeToMaster` / `changeToSlave`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive] // the controller may bring more preconditions
pub enum RoleError {
    /// The new epoch is below the last one this replica knows: the order is stale.
    #[error("epoch {epoch} is below the last known epoch {last}")]
    StaleEpoch {
        /// The epoch asked for.
        epoch: i32,
        /// The last epoch in the local epoch list.
        last: i32,
    },
    /// The epoch list refused the new entry.
    #[error(transparent)]
    Epoch(#[from] EpochError),
}

/// Why an AutoSwitch slave closed its connection (§5.4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive] // more checks will bring more reasons
pub enum ClientError {
    /// The master sent bytes that are not a valid frame.
    #[error("invalid frame from master: {0}")]
    Wire(#[from] WireError),
    /// The master's frame carried another state than the slave's ("State not matched"): a
    /// second handshake answer, or data before the handshake.
    #[error("master sent a {} frame while the slave is in {}", .got.name(), .expected.name())]
    StateMismatch {
        /// The state the frame carried.
        got: ConnectionState,
        /// The slave's state.
        expected: ConnectionState,
    },
    /// The master answered a handshake this slave has not finished sending.
    #[error("handshake answer before the slave's handshake was written")]
    AnswerBeforeHandshake,
    /// No epoch the two lists share with the same start offset: the logs cannot be reconciled
    /// automatically (§5.6 `findConsistentPoint` returned −1).
    #[error("no consistent point between the local and the master's epoch lists")]
    NoConsistentPoint,
    /// A frame's offset is not where the slave's log ends (§5.4 step 5a).
    #[error("master sent offset {offset} but the slave's log ends at {stored}")]
    OffsetMismatch {
        /// The frame's offset.
        offset: u64,
        /// The slave's max offset.
        stored: u64,
    },
    /// A data frame's epoch starts after the frame ends: the frame cannot belong to it, not
    /// even as Java's "last chunk of the previous epoch" (§5.5).
    #[error(
        "data frame [{offset}, {end}) is labelled with epoch {epoch} starting at {epoch_start}"
    )]
    EpochStartAfterFrame {
        /// The frame's offset.
        offset: u64,
        /// One past the frame's last byte.
        end: u64,
        /// The header's epoch.
        epoch: i32,
        /// The header's epoch start offset.
        epoch_start: u64,
    },
    /// Nothing was read for the housekeeping interval (§5.4 step 4).
    #[error("no byte from the master for {0:?}")]
    Silent(std::time::Duration),
    /// The report being written made no progress for the write-stall timeout.
    #[error("report write made no progress for {0:?}")]
    WriteStalled(std::time::Duration),
    /// The machine was used out of order (a driver bug), e.g. input while not connected.
    #[error("{0}")]
    Misuse(&'static str),
}

/// Why an AutoSwitch master connection closed (§5.5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive] // more checks will bring more reasons
pub enum MasterError {
    /// The slave sent bytes that are not a valid frame.
    #[error("invalid frame from slave: {0}")]
    Wire(#[from] WireError),
    /// A report before any handshake: the slave's broker id is unknown, so the ack could not be
    /// attributed to a member of the sync-state set.
    #[error("transfer report before the handshake")]
    ReportBeforeHandshake,
    /// The slave asked for an offset the master cannot serve: below its oldest retained byte or
    /// above its max (Java logs and heartbeats forever).
    #[error("slave requested offset {offset}, outside the master's range [{min}, {max}]")]
    RequestOutOfRange {
        /// The requested offset.
        offset: u64,
        /// The oldest retained offset.
        min: u64,
        /// The master's max offset.
        max: u64,
    },
    /// No epoch entry covers the next offset to send, so no frame can be labelled (Java logs
    /// "Failed to find an epochEntry" and heartbeats forever).
    #[error("no epoch entry covers offset {0}")]
    NoEpochFor(u64),
    /// Nothing was read for the housekeeping interval (§5.5, as classic §3.7).
    #[error("no byte from the slave for {0:?}")]
    Silent(std::time::Duration),
    /// A frame being written made no progress for the write-stall timeout.
    #[error("frame write made no progress for {0:?}")]
    WriteStalled(std::time::Duration),
    /// The log could not be read.
    #[error("log read failed: {0}")]
    Log(String),
    /// The machine was used out of order (a driver bug).
    #[error("{0}")]
    Misuse(&'static str),
}

macro_rules! into_io {
    ($($ty:ty => $kind:expr),* $(,)?) => {$(
        impl From<$ty> for io::Error {
            fn from(e: $ty) -> Self {
                io::Error::new($kind, e)
            }
        }
    )*};
}

into_io! {
    WireError => io::ErrorKind::InvalidData,
    EpochError => io::ErrorKind::InvalidInput,
    RoleError => io::ErrorKind::InvalidInput,
    ClientError => io::ErrorKind::InvalidData,
    MasterError => io::ErrorKind::InvalidData,
}
