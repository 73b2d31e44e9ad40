//! One AutoSwitch slave connection's loop on the master: the frame being written, write
//! progress and completion, reports into the machine. The same shape as the classic
//! [`MasterLoop`](crate::MasterLoop).

use std::time::Instant;

use bytes::Buf;

use super::epoch::EpochList;
use super::error::MasterError;
use super::master::{MasterConnection, MasterEvent, Transmit};
use crate::config::Config;
use crate::log::LogSource;

/// One slave connection's loop on the master (see the crate's [run loop](crate#the-run-loop)).
///
/// A driver waits for whichever comes first: a read ([`handle_read`](Self::handle_read); EOF
/// ends the connection), a write of [`poll_write`](Self::poll_write)'s frame (then
/// [`handle_written`](Self::handle_written)), the log growing or the epoch list changing, or
/// [`poll_timeout`](Self::poll_timeout) ([`handle_timeout`](Self::handle_timeout)). After each,
/// it forwards [`poll_event`](Self::poll_event) to the
/// [`SyncStateSet`](super::SyncStateSet). Any `Err` means: close the socket.
#[derive(Debug)]
pub struct MasterLoop {
    conn: MasterConnection,
    out: Option<Transmit>,
}

impl MasterLoop {
    /// A loop for a connection accepted at `now`.
    pub fn new(config: Config, now: Instant) -> Self {
        MasterLoop {
            conn: MasterConnection::new(config, now),
            out: None,
        }
    }

    /// The machine.
    pub fn connection(&self) -> &MasterConnection {
        &self.conn
    }

    /// Bytes read from the slave.
    pub fn handle_read(&mut self, now: Instant, data: &[u8]) -> Result<(), MasterError> {
        self.conn.handle_input(now, data)
    }

    /// The frame to write now: the one being written, else the machine's next, built from the
    /// log, the master's epoch list and its confirm offset.
    pub fn poll_write<L: LogSource + ?Sized>(
        &mut self,
        now: Instant,
        log: &L,
        epochs: &EpochList,
        confirm_offset: Option<u64>,
    ) -> Result<Option<&Transmit>, MasterError> {
        if self.out.is_none() {
            self.out = self.conn.poll_transmit(now, log, epochs, confirm_offset)?;
        }
        Ok(self.out.as_ref())
    }

    /// `n` bytes of [`poll_write`](Self::poll_write)'s frame were written.
    pub fn handle_written(&mut self, now: Instant, n: usize) -> Result<(), MasterError> {
        let Some(out) = self.out.as_mut() else {
            return Err(MasterError::Misuse("handle_written without a frame"));
        };
        if n > out.remaining() {
            return Err(MasterError::Misuse("handle_written past the frame's end"));
        }
        out.advance(n);
        if out.has_remaining() {
            if n > 0 {
                self.conn.handle_write_progress(now);
            }
            return Ok(());
        }
        self.out = None;
        self.conn.on_transmitted(now)
    }

    /// Sets or lifts the rate limit (see
    /// [`MasterConnection::set_rate_limit`]).
    pub fn set_rate_limit(&mut self, now: Instant, rate: Option<std::num::NonZeroU64>) {
        self.conn.set_rate_limit(now, rate);
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    /// The deadline passed (calling early does no harm).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), MasterError> {
        self.conn.handle_timeout(now)
    }

    /// The next event for the sync-state set.
    pub fn poll_event(&mut self) -> Option<MasterEvent> {
        self.conn.poll_event()
    }
}
