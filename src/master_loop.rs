//! The master's connection loop as a value: everything a driver does between one slave's
//! socket and its [`MasterConnection`], except the system calls themselves.
//!
//! Every master driver and the simulator in `tests/sim` run this same value: it keeps the frame
//! being written, tells the machine about write progress (for the stall limit) and completion
//! (back-pressure, heartbeats), and hands reports to the machine.

use std::time::Instant;

use bytes::Buf;

use crate::error::MasterError;
use crate::log::LogSource;
use crate::master::{MasterConnection, MasterEvent, Transmit};
use crate::traffic::Traffic;
use crate::wire::REPORT_LEN;
use crate::{Config, StartPosition};

/// One slave connection's loop on the master (see the crate's [run loop](crate#the-run-loop)).
///
/// A driver owns the socket and a clock, and waits for whichever comes first:
/// 1. a read: hand the bytes to [`handle_read`](Self::handle_read) (EOF or an error: the
///    connection is over; drop the loop);
/// 2. a write of [`poll_write`](Self::poll_write)'s frame (vectored: header and body), then
///    [`handle_written`](Self::handle_written) with the bytes written;
/// 3. the log growing, when [`poll_write`](Self::poll_write) had nothing to send;
/// 4. [`poll_timeout`](Self::poll_timeout), then [`handle_timeout`](Self::handle_timeout).
///
/// After each, forward [`poll_event`](Self::poll_event) to the
/// [`MasterService`](crate::MasterService). Any `Err` means: close the socket. A read and a
/// write may be pending at once; reads come first, so acks are never starved by a socket that
/// always has room.
#[derive(Debug)]
pub struct MasterLoop {
    conn: MasterConnection,
    /// The frame being written.
    out: Option<Transmit>,
    traffic: Traffic,
}

impl MasterLoop {
    /// A loop for a connection accepted at `now`.
    pub fn new(config: Config, now: Instant) -> Self {
        MasterLoop {
            conn: MasterConnection::new(config, now),
            out: None,
            traffic: Traffic::default(),
        }
    }

    /// The machine.
    pub fn connection(&self) -> &MasterConnection {
        &self.conn
    }

    /// Where this connection starts a slave that reports offset 0; see
    /// [`MasterConnection::set_start_position`].
    pub fn set_start_position(&mut self, start: StartPosition) -> Result<(), MasterError> {
        self.conn.set_start_position(start)
    }

    /// Bytes and frames moved so far on this connection (frames in: whole reports).
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// Bytes read from the slave (`data` non-empty; EOF ends the connection instead).
    pub fn handle_read<L: LogSource + ?Sized>(
        &mut self,
        now: Instant,
        data: &[u8],
        log: &L,
    ) -> Result<(), MasterError> {
        self.traffic.bytes_in += data.len() as u64;
        // Reports are fixed-size and back to back, so whole ones follow from the byte count.
        self.traffic.frames_in = self.traffic.bytes_in / REPORT_LEN as u64;
        self.conn.handle_input(now, data, log)
    }

    /// The frame to write now: the one being written, else the machine's next. `None` when
    /// there is nothing to send: wait for the log to grow, a read, or the deadline.
    pub fn poll_write<L: LogSource + ?Sized>(
        &mut self,
        now: Instant,
        log: &L,
    ) -> Result<Option<&Transmit>, MasterError> {
        if self.out.is_none() {
            self.out = self.conn.poll_transmit(now, log)?;
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
        self.traffic.bytes_out += n as u64;
        if out.has_remaining() {
            if n > 0 {
                self.conn.handle_write_progress(now);
            }
            return Ok(());
        }
        self.out = None;
        self.traffic.frames_out += 1;
        self.conn.on_transmitted(now)
    }

    /// Sets or lifts the connection's rate limit (see
    /// [`MasterConnection::set_rate_limit`]).
    pub fn set_rate_limit(&mut self, now: Instant, rate: Option<std::num::NonZeroU64>) {
        self.conn.set_rate_limit(now, rate);
    }

    /// The next deadline: heartbeat, housekeeping, a stalled write, or the flow-control budget.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    /// The deadline from [`poll_timeout`](Self::poll_timeout) passed (calling early does no
    /// harm).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), MasterError> {
        self.conn.handle_timeout(now)
    }

    /// The next event for the [`MasterService`](crate::MasterService).
    pub fn poll_event(&mut self) -> Option<MasterEvent> {
        self.conn.poll_event()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::MemoryLog;
    use crate::wire::encode_report;
    use std::time::Duration;

    #[test]
    fn partial_writes_progress_then_complete() {
        let t0 = Instant::now();
        let mut log = MemoryLog::new(1 << 20);
        log.push(vec![5u8; 1000]);
        let mut lp = MasterLoop::new(Config::default(), t0);
        assert!(lp.poll_write(t0, &log).unwrap().is_none());
        lp.handle_read(t0, &encode_report(0), &log).unwrap();
        let len = lp.poll_write(t0, &log).unwrap().unwrap().remaining();
        assert_eq!(len, 1012);
        let stall = Config::default().write_stall_timeout();
        let t1 = t0 + stall - Duration::from_secs(1);
        lp.handle_written(t1, 500).unwrap();
        // The same frame, minus what went out.
        assert_eq!(lp.poll_write(t1, &log).unwrap().unwrap().remaining(), 512);
        lp.handle_read(t0 + stall, &encode_report(0), &log).unwrap();
        lp.handle_timeout(t0 + stall).unwrap();
        lp.handle_written(t1, 512).unwrap();
        assert!(lp.poll_write(t1, &log).unwrap().is_none());
        assert!(!lp.connection().is_transmitting());
        assert_eq!(lp.traffic(), Traffic::new(16, 1012, 2, 1));
        assert!(matches!(
            lp.handle_written(t1, 1),
            Err(MasterError::Misuse(_))
        ));
    }

    #[test]
    fn a_write_without_progress_closes() {
        let t0 = Instant::now();
        let mut log = MemoryLog::new(1 << 20);
        log.push(vec![5u8; 1000]);
        let mut lp = MasterLoop::new(Config::default(), t0);
        lp.handle_read(t0, &encode_report(0), &log).unwrap();
        lp.poll_write(t0, &log).unwrap().unwrap();
        lp.handle_written(t0, 0).unwrap();
        let at = lp.poll_timeout().unwrap();
        assert_eq!(at, t0 + Config::default().write_stall_timeout());
        assert!(matches!(
            lp.handle_timeout(at),
            Err(MasterError::WriteStalled { .. })
        ));
    }
}
