//! The drivers' error type: why a connection closed or an operation failed.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use rocketmq_ha::autoswitch;
use rocketmq_ha::{ClientError, LogError, MasterError, SyncError};

use crate::epoch_file::EpochFileError;
use crate::TlsError;

/// Why a driver closed a connection, or why a replication call failed.
///
/// Protocol violations keep the core's typed error (`Master`, `Client`), so a caller can tell a
/// peer sending garbage from a network failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive] // new transports (TLS, AutoSwitch) bring new failure kinds
pub enum Error {
    /// A socket operation failed.
    #[error("network I/O failed: {0}")]
    Io(io::Error),
    /// TLS failed, or one peer speaks TLS and the other plain TCP (see [`crate::tls`]).
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// Dialing the master did not finish within `connect_timeout` (§1.4).
    #[error("connecting to {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// The master's address.
        addr: SocketAddr,
        /// The configured connect timeout.
        after: Duration,
    },
    /// The master's host name did not resolve to an address (it is resolved again before
    /// every dial).
    #[error("resolving {host}: {source}")]
    Resolve {
        /// The name as given, `HOST:PORT`.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The master keeps closing this slave's connections right after its first report,
    /// without sending a frame ([`ClientEvent::Rejected`](rocketmq_ha::ClientEvent::Rejected)).
    #[error(
        "master {addr} closed {closes} connections in a row right after this slave reported \
         offset {offset}, sending nothing: the offset is likely below what the master still \
         retains, above its max offset (this slave is ahead, or the master lost an unflushed \
         tail), or the master refuses this peer; the master's log says which"
    )]
    Rejected {
        /// The master's address.
        addr: SocketAddr,
        /// The offset this slave reported.
        offset: u64,
        /// Connections in a row that ended this way.
        closes: u32,
    },
    /// The slave broke the protocol or went silent; the master closed its connection.
    #[error("slave connection closed: {0}")]
    Master(#[from] MasterError),
    /// The master broke the protocol or went silent; the slave closed its connection.
    #[error("master connection closed: {0}")]
    Client(#[from] ClientError),
    /// Reading or appending the local commit log failed.
    #[error("commit log: {0}")]
    Log(#[from] LogError),
    /// A synchronous-replication wait did not succeed.
    #[error("replication: {0}")]
    Sync(#[from] SyncError),
    /// An AutoSwitch slave broke the protocol or went silent; the master closed its
    /// connection.
    #[error("slave connection closed: {0}")]
    AutoSwitchMaster(#[from] autoswitch::MasterError),
    /// An AutoSwitch master broke the protocol or went silent; the slave closed its
    /// connection.
    #[error("master connection closed: {0}")]
    AutoSwitchClient(#[from] autoswitch::ClientError),
    /// The role asked for is from an epoch older than the broker's history.
    #[error("role change refused: {0}")]
    Role(#[from] autoswitch::RoleError),
    /// Reading or writing the epoch file failed.
    #[error("epoch file: {0}")]
    EpochFile(#[from] EpochFileError),
}

impl From<io::Error> for Error {
    /// A [`TlsError`] the socket wrapped in an `io::Error` (the async read and write return
    /// those) comes out as [`Error::Tls`].
    fn from(e: io::Error) -> Error {
        if !e.get_ref().is_some_and(|inner| inner.is::<TlsError>()) {
            return Error::Io(e);
        }
        let kind = e.kind();
        match e.into_inner().map(|inner| inner.downcast::<TlsError>()) {
            Some(Ok(tls)) => Error::Tls(*tls),
            Some(Err(inner)) => Error::Io(io::Error::new(kind, inner)),
            None => Error::Io(kind.into()),
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            Error::Tls(e) => e.into(),
            Error::ConnectTimeout { .. } => io::Error::new(io::ErrorKind::TimedOut, e),
            Error::Resolve { source, .. } => source,
            Error::Rejected { .. } => io::Error::new(io::ErrorKind::ConnectionRefused, e),
            Error::Master(e) => e.into(),
            Error::Client(e) => e.into(),
            Error::Log(e) => e.into(),
            Error::Sync(e) => e.into(),
            Error::AutoSwitchMaster(e) => e.into(),
            Error::AutoSwitchClient(e) => e.into(),
            Error::Role(e) => e.into(),
            Error::EpochFile(e) => e.into(),
        }
    }
}
