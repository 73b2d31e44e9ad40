//! What the drivers tell an operator: why a connection closed ([`CloseReason`]), what it moved
//! (published from the connection loop's [`Traffic`] without a lock), and the `tracing` events
//! of each connection.
//!
//! Every connection gets a span (`serving{peer, id}` on the master, `replicating{master,
//! connection}` on the slave) that is the explicit parent of its events, so the events carry it
//! on every driver, threads and tasks alike, without the drivers entering it. Levels: connects, the
//! start offset and normal closes at `info`; closes for an error at `warn`; frames and acks at
//! `trace`.

use std::sync::atomic::{AtomicU64, Ordering};

use rocketmq_ha::autoswitch;
use rocketmq_ha::{ClientError, MasterError, Traffic};

use crate::Error;

/// Why a connection ended, in a few kinds an operator acts on differently (and metrics count
/// by [`label`](Self::label)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive] // TLS and access control will bring kinds of their own
pub enum CloseReason {
    /// The peer closed its end: EOF, or a reset or broken pipe as its process exited. Normal
    /// (a slave stopped, a master restarted), not an error.
    PeerClosed,
    /// This side was shut down.
    Shutdown,
    /// The master refused the slave's start offset (below what it retains, above its end).
    Refused,
    /// The peer went silent: housekeeping, a stalled write, or a dial that took too long.
    Timeout,
    /// The peer broke the protocol (a bad frame, an offset mismatch, an ack out of range).
    Protocol,
    /// Any other network failure (refused dial, unreachable host, ...).
    Network,
    /// Reading or storing the local commit log failed (a full disk, ...).
    Storage,
    /// Anything else.
    Other,
}

impl CloseReason {
    /// Every kind, in order (for metrics that list each one from the start).
    pub const ALL: [CloseReason; 8] = [
        CloseReason::PeerClosed,
        CloseReason::Shutdown,
        CloseReason::Refused,
        CloseReason::Timeout,
        CloseReason::Protocol,
        CloseReason::Network,
        CloseReason::Storage,
        CloseReason::Other,
    ];

    /// Classifies a connection's end: `error` as recorded (`None`: a clean EOF), and whether
    /// this side had been shut down by then (which explains any error that followed).
    pub fn classify(error: Option<&Error>, shut_down: bool) -> CloseReason {
        if shut_down {
            return CloseReason::Shutdown;
        }
        let Some(error) = error else {
            return CloseReason::PeerClosed;
        };
        match error {
            Error::Io(e) => match e.kind() {
                // What a peer's exit looks like from here, depending on what was in flight.
                std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::UnexpectedEof => CloseReason::PeerClosed,
                std::io::ErrorKind::TimedOut => CloseReason::Timeout,
                _ => CloseReason::Network,
            },
            Error::ConnectTimeout { .. } => CloseReason::Timeout,
            Error::Rejected { .. } => CloseReason::Refused,
            Error::Master(e) => match e {
                MasterError::RequestBelowRetained { .. } | MasterError::RequestAboveMax { .. } => {
                    CloseReason::Refused
                }
                MasterError::HousekeepingTimeout { .. } | MasterError::WriteStalled { .. } => {
                    CloseReason::Timeout
                }
                MasterError::Log(_) => CloseReason::Storage,
                MasterError::Misuse(_) => CloseReason::Other,
                _ => CloseReason::Protocol,
            },
            Error::Client(e) => match e {
                ClientError::HousekeepingTimeout { .. }
                | ClientError::WriteStalled { .. }
                | ClientError::ConnectTimeout { .. } => CloseReason::Timeout,
                ClientError::Misuse(_) => CloseReason::Other,
                _ => CloseReason::Protocol,
            },
            Error::AutoSwitchMaster(e) => match e {
                autoswitch::MasterError::Silent(_) | autoswitch::MasterError::WriteStalled(_) => {
                    CloseReason::Timeout
                }
                autoswitch::MasterError::RequestOutOfRange { .. }
                | autoswitch::MasterError::NoEpochFor(_) => CloseReason::Refused,
                autoswitch::MasterError::Log(_) => CloseReason::Storage,
                autoswitch::MasterError::Misuse(_) => CloseReason::Other,
                _ => CloseReason::Protocol,
            },
            Error::AutoSwitchClient(e) => match e {
                autoswitch::ClientError::Silent(_) | autoswitch::ClientError::WriteStalled(_) => {
                    CloseReason::Timeout
                }
                autoswitch::ClientError::Misuse(_) => CloseReason::Other,
                _ => CloseReason::Protocol,
            },
            Error::Log(_) | Error::EpochFile(_) => CloseReason::Storage,
            Error::Tls(_) => CloseReason::Protocol,
            _ => CloseReason::Other,
        }
    }

    /// A short `snake_case` name, for metrics labels and JSON.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Refused => "refused",
            CloseReason::Timeout => "timeout",
            CloseReason::Protocol => "protocol",
            CloseReason::Network => "network",
            CloseReason::Storage => "storage",
            CloseReason::Other => "other",
        }
    }

    /// Whether the close deserves an operator's attention (logged at `warn`); a peer closing
    /// and a shutdown are normal.
    pub fn is_error(self) -> bool {
        !matches!(self, CloseReason::PeerClosed | CloseReason::Shutdown)
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloseReason::PeerClosed => "closed by the peer",
            CloseReason::Shutdown => "shut down",
            CloseReason::Refused => "refused",
            CloseReason::Timeout => "timed out",
            CloseReason::Protocol => "protocol error",
            CloseReason::Network => "network error",
            CloseReason::Storage => "storage error",
            CloseReason::Other => "error",
        })
    }
}

/// A loop's [`Traffic`], published by the thread or task that runs it and read by anyone: plain
/// atomics, so a writer publishing after each frame never waits for a reader.
#[derive(Debug, Default)]
pub(crate) struct TrafficCell([AtomicU64; 4]);

impl TrafficCell {
    pub(crate) fn store(&self, t: Traffic) {
        for (cell, value) in self
            .0
            .iter()
            .zip([t.bytes_in, t.bytes_out, t.frames_in, t.frames_out])
        {
            cell.store(value, Ordering::Relaxed);
        }
    }

    pub(crate) fn load(&self) -> Traffic {
        let [a, b, c, d] = &self.0;
        Traffic::new(
            a.load(Ordering::Relaxed),
            b.load(Ordering::Relaxed),
            c.load(Ordering::Relaxed),
            d.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn a_peer_exit_is_a_normal_close_and_a_timeout_is_not() {
        let pipe = Error::Io(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(
            CloseReason::classify(Some(&pipe), false),
            CloseReason::PeerClosed
        );
        assert!(!CloseReason::PeerClosed.is_error());
        assert_eq!(CloseReason::classify(None, false), CloseReason::PeerClosed);
        assert_eq!(
            CloseReason::classify(Some(&pipe), true),
            CloseReason::Shutdown
        );
        let silent = Error::Master(MasterError::HousekeepingTimeout {
            idle: std::time::Duration::from_secs(20),
        });
        let reason = CloseReason::classify(Some(&silent), false);
        assert_eq!(reason, CloseReason::Timeout);
        assert!(reason.is_error());
        let refused = Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(
            CloseReason::classify(Some(&refused), false),
            CloseReason::Network
        );
    }

    #[test]
    fn traffic_round_trips_through_the_cell() {
        let cell = TrafficCell::default();
        let t = Traffic::new(1, 2, 3, 4);
        cell.store(t);
        assert_eq!(cell.load(), t);
    }
}
