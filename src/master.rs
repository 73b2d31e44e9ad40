//! The master's side of one slave connection (RocketMQ's `HAConnection`, §3).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::Instant;

use bytes::{Buf, Bytes};

use crate::config::{Config, StartPosition};
use crate::error::MasterError;
use crate::flow::Budget;
use crate::log::{segment_start, FileRegion, LogSource};
use crate::timer::{Clock, Timer, TimerTable};
use crate::wire::{ReportDecoder, TransferHeader, TRANSFER_HEADER_LEN};

/// What a [`MasterConnection`] tells its driver and the [`MasterService`](crate::MasterService).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive] // AutoSwitch (§5) adds handshake events
pub enum MasterEvent {
    /// The slave's first report arrived: it asked for `requested`, and transfer starts at
    /// `start` (§3.3).
    Started {
        /// The first reported offset (0 for an empty slave).
        requested: u64,
        /// Where the first frame starts.
        start: u64,
    },
    /// The slave acknowledged a higher offset: its log now ends at `offset` (§2.1). Forward it
    /// to [`MasterService::handle_ack`](crate::MasterService::handle_ack).
    Acked {
        /// The slave's max offset.
        offset: u64,
    },
}

/// One transfer frame to write: a 12-byte header and a zero-copy body (§2.2).
///
/// It implements [`Buf`]; a driver writes it with `write_vectored` over
/// [`Buf::chunks_vectored`] (header and body in one system call), calls [`Buf::advance`] by what
/// was written, and when [`Buf::has_remaining`] is false reports
/// [`MasterConnection::on_transmitted`].
#[derive(Debug, Clone)]
pub struct Transmit {
    header: TransferHeader,
    encoded: [u8; TRANSFER_HEADER_LEN],
    header_written: usize,
    body: Bytes,
    /// Where the body lies in a file, if the log said (see [`LogSource::file_region`]).
    region: Option<FileRegion>,
}

impl Transmit {
    fn new(header: TransferHeader, body: Bytes) -> Self {
        Transmit {
            encoded: header.encode(),
            header,
            header_written: 0,
            body,
            region: None,
        }
    }

    /// The frame's header.
    pub fn header(&self) -> TransferHeader {
        self.header
    }

    /// Whether this is a heartbeat (no body, §2.2).
    pub fn is_heartbeat(&self) -> bool {
        self.header.body_len == 0
    }

    /// The unwritten part of the body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Whether the header is written and the body is not: what is left can be sent from
    /// [`body_file`](Self::body_file) instead of [`body`](Self::body).
    pub fn header_written(&self) -> bool {
        self.header_written == TRANSFER_HEADER_LEN
    }

    /// Where the unwritten part of the body lies in a file, when the log gave a
    /// [`FileRegion`]: the file, and the position of the first unwritten byte (the length is
    /// [`body`](Self::body)'s). A driver may send those bytes from the file instead of from
    /// `body`; either way it reports what was written with [`Buf::advance`] (or
    /// [`MasterLoop::handle_written`](crate::MasterLoop::handle_written)).
    pub fn body_file(&self) -> Option<(&FileRegion, u64)> {
        let region = self.region.as_ref()?;
        if self.body.is_empty() {
            return None;
        }
        let sent = u64::from(self.header.body_len) - self.body.len() as u64;
        Some((region, region.position() + sent))
    }
}

impl Buf for Transmit {
    fn remaining(&self) -> usize {
        TRANSFER_HEADER_LEN - self.header_written + self.body.len()
    }

    fn chunk(&self) -> &[u8] {
        if self.header_written < TRANSFER_HEADER_LEN {
            &self.encoded[self.header_written..]
        } else {
            &self.body
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        if self.header_written < TRANSFER_HEADER_LEN && n < dst.len() {
            dst[n] = IoSlice::new(&self.encoded[self.header_written..]);
            n += 1;
        }
        if !self.body.is_empty() && n < dst.len() {
            dst[n] = IoSlice::new(&self.body);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        let header_left = TRANSFER_HEADER_LEN - self.header_written;
        let from_header = cnt.min(header_left);
        self.header_written += from_header;
        cnt -= from_header;
        assert!(
            cnt <= self.body.len(),
            "advanced past the end of a Transmit"
        );
        self.body.advance(cnt);
    }
}

/// The master's state machine for one connected slave (RocketMQ's `HAConnection`, §3).
///
/// It does no I/O and reads no clock: bytes from the slave, the time and the commit log go in;
/// frames to send, events and the next deadline come out. Most drivers use it through
/// [`MasterLoop`](crate::MasterLoop), which keeps the frame being written; the contract is the
/// crate's [run loop](crate#the-run-loop), applied here as follows.
///
/// # The driver's loop
/// 1. Feed every read from the socket to [`handle_input`](Self::handle_input) (EOF or a read
///    error: drop the machine and remove it from the service).
/// 2. When the deadline from [`poll_timeout`](Self::poll_timeout) passes, call
///    [`handle_timeout`](Self::handle_timeout).
/// 3. Drain [`poll_event`](Self::poll_event), forwarding [`MasterEvent::Acked`] to the
///    [`MasterService`](crate::MasterService).
/// 4. Call [`poll_transmit`](Self::poll_transmit); write the [`Transmit`] it returns (the socket
///    may take several writes; report each that wrote something but not all with
///    [`handle_write_progress`](Self::handle_write_progress)) and then call
///    [`on_transmitted`](Self::on_transmitted). Only one frame is in flight at a time (Java's
///    `lastWriteOver`): this is the back-pressure. A frame that makes no progress for
///    `write_stall_timeout` closes the connection at the next
///    [`handle_timeout`](Self::handle_timeout).
/// 5. Sleep until bytes arrive, the frame is written, the log grows, or
///    [`poll_timeout`](Self::poll_timeout) passes; then go to 1.
///
/// Any `Err` from a method means the connection is finished: close the socket.
///
/// # Rules implemented
/// * §3.2 report parsing: the last complete 8-byte value of a read is used; the first value is
///   the request offset; every value is an ack; acks above the master's max close the
///   connection (4.9.3+), as do acks that go backwards.
/// * §3.3 first-transfer rule: request 0 starts at the master's last segment (or the oldest
///   retained offset, [`StartPosition::OldestRetained`], for every connection by
///   [`Config::start_position`] or for one by [`set_start_position`](Self::set_start_position));
///   a request below the retained range or above the max is an error instead of Java's silent
///   heartbeat loop.
/// * §3.4 writer: nothing, not even a heartbeat, before the first report; a frame carries at most
///   `transfer_batch_size` bytes (with [`Config::first_batch_size`], the first frame less and
///   each next one at most twice as much) and never crosses a segment; a heartbeat (size 0 at
///   the next offset) when `heartbeat_interval` passed since the last write.
/// * §3.2 housekeeping: close after `housekeeping_interval` without reading a byte.
/// * §3.7 first report (ours; Java waits forever): close a connection that has not completed
///   its first report [`Config::first_report_timeout`] after it was accepted, however many
///   bytes short of one it sent.
#[derive(Debug)]
pub struct MasterConnection {
    config: Config,
    clock: Clock,
    timers: TimerTable,
    reports: ReportDecoder,
    /// `slaveRequestOffset`: the first reported value.
    request: Option<u64>,
    /// `slaveAckOffset`: the last reported value.
    ack: Option<u64>,
    /// `nextTransferFromWhere`: the next offset to send; known once the request arrived.
    next: Option<u64>,
    /// Whether a [`Transmit`] was handed out and not yet reported written (`!lastWriteOver`).
    in_flight: bool,
    /// The most body bytes the next data frame may carry: [`Config::first_batch_size`] at
    /// first, doubling per frame up to the batch size.
    frame_limit: u32,
    last_read: Instant,
    /// When the connection was accepted (for the first-report error).
    accepted: Instant,
    /// When the frame in flight last made progress (for the stall error).
    last_write_progress: Instant,
    /// The flow-control budget (§3.9), when a rate limit is set.
    budget: Option<Budget>,
    /// When the budget allows the frame that is waiting for it.
    flow_ready: Option<Instant>,
    closed: bool,
    events: VecDeque<MasterEvent>,
    /// Where request 0 starts: [`Config::start_position`] unless the driver set this
    /// connection's own ([`set_start_position`](MasterConnection::set_start_position)).
    start_position: StartPosition,
}

impl MasterConnection {
    /// A connection accepted at `now`. Heartbeat and housekeeping clocks start now (§3.1).
    pub fn new(config: Config, now: Instant) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Housekeeping, now + config.housekeeping_interval());
        timers.set(Timer::Heartbeat, now + config.heartbeat_interval());
        timers.set(Timer::FirstReport, now + config.first_report_timeout());
        MasterConnection {
            config,
            clock: Clock::new(now),
            timers,
            reports: ReportDecoder::new(),
            request: None,
            ack: None,
            next: None,
            in_flight: false,
            frame_limit: config
                .first_batch_size()
                .map_or(config.transfer_batch_size(), |first| {
                    first.min(config.transfer_batch_size())
                }),
            last_read: now,
            accepted: now,
            last_write_progress: now,
            budget: config
                .rate_limit()
                .map(|rate| Budget::new(rate, Self::budget_capacity(&config), now)),
            flow_ready: None,
            closed: false,
            events: VecDeque::new(),
            start_position: config.start_position(),
        }
    }

    /// The flow-control budget holds one full frame.
    fn budget_capacity(config: &Config) -> u64 {
        u64::from(config.transfer_batch_size()) + TRANSFER_HEADER_LEN as u64
    }

    // --- getters ---

    /// The rate limit in force, in bytes a second (§3.9).
    pub fn rate_limit(&self) -> Option<u64> {
        self.budget.as_ref().map(Budget::rate)
    }

    /// Whether data is waiting for the flow-control budget, and until when.
    pub fn flow_ready_at(&self) -> Option<Instant> {
        self.flow_ready
    }

    /// The slave's first reported offset, once known.
    pub fn request_offset(&self) -> Option<u64> {
        self.request
    }

    /// The slave's last acknowledged offset, once known.
    pub fn ack_offset(&self) -> Option<u64> {
        self.ack
    }

    /// The next offset the master will send (the end of everything sent so far), once the
    /// request is known.
    pub fn next_offset(&self) -> Option<u64> {
        self.next
    }

    /// Where this connection starts a slave that reports offset 0 (§3.3).
    pub fn start_position(&self) -> StartPosition {
        self.start_position
    }

    /// Whether a frame is handed out and not yet reported written.
    pub fn is_transmitting(&self) -> bool {
        self.in_flight
    }

    /// The connection's state, as RocketMQ 5 names it (§3.10): `Transfer` from accept until
    /// it closes, then `Shutdown` (Java's classic master).
    pub fn connection_state(&self) -> crate::ConnectionState {
        if self.closed {
            crate::ConnectionState::Shutdown
        } else {
            crate::ConnectionState::Transfer
        }
    }

    /// Whether the connection ended with an error; every later call is refused.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Bytes of an incomplete report buffered (at most 7): this machine's whole input buffer.
    pub fn buffered_len(&self) -> usize {
        self.reports.pending_len()
    }

    // --- input ---

    /// Bytes read from the slave. `log` is the master's commit log, consulted for the
    /// first-transfer rule and the ack checks.
    pub fn handle_input<L: LogSource + ?Sized>(
        &mut self,
        now: Instant,
        data: &[u8],
        log: &L,
    ) -> Result<(), MasterError> {
        self.ensure_open()?;
        let now = self.clock.advance(now);
        if data.is_empty() {
            return Ok(());
        }
        self.last_read = now;
        self.timers.set(
            Timer::Housekeeping,
            now + self.config.housekeeping_interval(),
        );
        let report = self.reports.feed(data);
        let result = match report {
            Err(e) => Err(e.into()),
            Ok(None) => Ok(()),
            Ok(Some(value)) => self.on_report(value, log),
        };
        self.close_on_error(result)
    }

    fn on_report<L: LogSource + ?Sized>(&mut self, value: u64, log: &L) -> Result<(), MasterError> {
        let Some(previous) = self.ack else {
            // §3.3: the first report is the request; decide the start offset once.
            let start = self.first_transfer_offset(value, log)?;
            self.timers.stop(Timer::FirstReport);
            self.request = Some(value);
            self.ack = Some(value);
            self.next = Some(start);
            self.events.push_back(MasterEvent::Started {
                requested: value,
                start,
            });
            self.events.push_back(MasterEvent::Acked { offset: value });
            return Ok(());
        };
        if value < previous {
            return Err(MasterError::AckWentBackwards {
                previous,
                ack: value,
            });
        }
        let max = log.max_offset();
        if self.config.reject_ack_above_max() && value > max {
            return Err(MasterError::AckAboveMax { ack: value, max });
        }
        let sent = self.next.unwrap_or(0);
        if self.config.reject_ack_above_sent() && value > sent {
            return Err(MasterError::AckAboveSent { ack: value, sent });
        }
        if value > previous {
            self.ack = Some(value);
            self.events.push_back(MasterEvent::Acked { offset: value });
        }
        Ok(())
    }

    /// §3.3 first-transfer rule.
    fn first_transfer_offset<L: LogSource + ?Sized>(
        &self,
        requested: u64,
        log: &L,
    ) -> Result<u64, MasterError> {
        let (min, max) = (log.min_offset(), log.max_offset());
        if requested == 0 {
            // An empty slave stores the first frame at the start of a segment file of its own
            // (a Java slave creates the file named after the segment and writes from its
            // beginning), so the first frame must start on a segment boundary: a start inside a
            // partly retained oldest segment rounds up to the next boundary, and transfer waits
            // until the log reaches it.
            let first_whole = min.next_multiple_of(log.segment_size());
            return Ok(match self.start_position {
                StartPosition::LastSegment => {
                    segment_start(max, log.segment_size()).max(first_whole)
                }
                StartPosition::OldestRetained => first_whole,
            });
        }
        if requested < min {
            return Err(MasterError::RequestBelowRetained { requested, min });
        }
        if requested > max {
            return Err(MasterError::RequestAboveMax { requested, max });
        }
        Ok(requested)
    }

    /// Time passed; call when the deadline from [`poll_timeout`](Self::poll_timeout) is reached.
    /// Fails with [`MasterError::HousekeepingTimeout`] when the slave has been silent too long,
    /// and with [`MasterError::NoFirstReport`] when it connected and never reported.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), MasterError> {
        self.ensure_open()?;
        let now = self.clock.advance(now);
        if self.in_flight && self.timers.is_expired(Timer::WriteStall, now) {
            let stalled = now - self.last_write_progress;
            return self.close_on_error(Err(MasterError::WriteStalled { stalled }));
        }
        // Before housekeeping: when both are due, a peer that never reported is the more
        // telling reason.
        if self.request.is_none() && self.timers.is_expired(Timer::FirstReport, now) {
            let waited = now - self.accepted;
            return self.close_on_error(Err(MasterError::NoFirstReport { waited }));
        }
        if self.timers.is_expired(Timer::Housekeeping, now) {
            let idle = now - self.last_read;
            return self.close_on_error(Err(MasterError::HousekeepingTimeout { idle }));
        }
        Ok(())
    }

    /// Sets where this connection starts a slave that reports offset 0, instead of
    /// [`Config::start_position`]: a driver gives [`StartPosition::OldestRetained`] to the
    /// peers an [`Admission`](crate::Admission) grants a full copy
    /// ([`Admission::start_position`](crate::Admission::start_position)), and RocketMQ's rule
    /// to the others.
    ///
    /// The start is decided once, at the first report; setting it afterwards would change
    /// nothing, so it is refused with [`MasterError::Misuse`] and changes nothing.
    pub fn set_start_position(&mut self, start: StartPosition) -> Result<(), MasterError> {
        if self.request.is_some() {
            return Err(MasterError::Misuse(
                "set_start_position after the first report: the start is already decided",
            ));
        }
        self.start_position = start;
        Ok(())
    }

    /// Sets or lifts the rate limit at run time (an operator raising it while a slave catches
    /// up). What the budget had saved up stays.
    pub fn set_rate_limit(&mut self, now: Instant, rate: Option<std::num::NonZeroU64>) {
        let now = self.clock.advance(now);
        let capacity = Self::budget_capacity(&self.config);
        Budget::update(&mut self.budget, rate, capacity, now);
        self.flow_ready = None;
    }

    /// Part of the [`Transmit`] in flight was written (but not all of it): the slave is
    /// reading, so the write-stall limit starts again.
    pub fn handle_write_progress(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        if self.in_flight && !self.closed {
            self.last_write_progress = now;
            self.timers
                .set(Timer::WriteStall, now + self.config.write_stall_timeout());
        }
    }

    /// The [`Transmit`] from [`poll_transmit`](Self::poll_transmit) has been fully written.
    pub fn on_transmitted(&mut self, now: Instant) -> Result<(), MasterError> {
        self.ensure_open()?;
        let now = self.clock.advance(now);
        if !self.in_flight {
            return self.close_on_error(Err(MasterError::Misuse(
                "on_transmitted without a frame in flight",
            )));
        }
        self.in_flight = false;
        self.timers.stop(Timer::WriteStall);
        // §3.1: the heartbeat clock measures time since the last write.
        self.timers
            .set(Timer::Heartbeat, now + self.config.heartbeat_interval());
        Ok(())
    }

    // --- output ---

    /// The next frame to send, if any: log data at the next offset, else a heartbeat when due.
    ///
    /// Returns `Ok(None)` before the first report, while a frame is in flight, or when caught up
    /// and no heartbeat is due. Call it again whenever the log grows.
    pub fn poll_transmit<L: LogSource + ?Sized>(
        &mut self,
        now: Instant,
        log: &L,
    ) -> Result<Option<Transmit>, MasterError> {
        if self.closed || self.in_flight {
            return Ok(None);
        }
        let now = self.clock.advance(now);
        let Some(next) = self.next else {
            // §3.4 step 1: not even heartbeats before the first report.
            return Ok(None);
        };
        let segment_size = log.segment_size();
        let segment_left = segment_start(next, segment_size) + segment_size - next;
        let max_len = segment_left.min(u64::from(self.frame_limit)) as usize;
        // `next` is above the max only while an empty slave waits for the log to reach its
        // segment-aligned start (§3.3).
        let read = if next > log.max_offset() {
            Ok(Bytes::new())
        } else {
            log.read(next, max_len)
        };
        let mut body = match read {
            Ok(body) => body,
            Err(e) => return self.close_on_error(Err(e.into())),
        };
        if !body.is_empty() {
            // A log returning more than asked must not make a frame cross a segment.
            body.truncate(max_len);
            // §3.9: the frame waits until the budget holds half a frame (or all of a smaller
            // one), then carries what the budget allows; never an empty frame.
            if let Some(budget) = self.budget.as_mut() {
                match budget.admit(TRANSFER_HEADER_LEN as u64, body.len() as u64, now) {
                    Ok(allowed) => body.truncate(allowed as usize),
                    Err(ready) => {
                        self.flow_ready = Some(ready);
                        return self.heartbeat_if_due(now, next);
                    }
                }
            }
            self.flow_ready = None;
            let header = TransferHeader {
                offset: next,
                body_len: body.len() as u32,
            };
            self.next = Some(header.end_offset());
            self.frame_limit = self
                .frame_limit
                .saturating_mul(2)
                .min(self.config.transfer_batch_size());
            let mut transmit = Transmit::new(header, body);
            transmit.region = log.file_region(header.offset, transmit.body.len());
            return Ok(Some(self.hand_out(now, transmit)));
        }
        self.flow_ready = None;
        self.heartbeat_if_due(now, next)
    }

    /// A heartbeat at `next` when one is due (§3.4). It is sent even on an exhausted budget
    /// (on credit): the slave's housekeeping must not close a connection that is only being
    /// held back.
    fn heartbeat_if_due(
        &mut self,
        now: Instant,
        next: u64,
    ) -> Result<Option<Transmit>, MasterError> {
        if !self.timers.is_expired(Timer::Heartbeat, now) {
            return Ok(None);
        }
        if let Some(budget) = self.budget.as_mut() {
            budget.spend(TRANSFER_HEADER_LEN as u64, now);
        }
        let transmit = Transmit::new(TransferHeader::heartbeat(next), Bytes::new());
        Ok(Some(self.hand_out(now, transmit)))
    }

    fn hand_out(&mut self, now: Instant, transmit: Transmit) -> Transmit {
        self.in_flight = true;
        self.last_write_progress = now;
        self.timers.stop(Timer::Heartbeat);
        self.timers
            .set(Timer::WriteStall, now + self.config.write_stall_timeout());
        transmit
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<MasterEvent> {
        self.events.pop_front()
    }

    /// The next deadline at which [`handle_timeout`](Self::handle_timeout) or
    /// [`poll_transmit`](Self::poll_transmit) has work to do (housekeeping, the first report,
    /// a heartbeat, a stalled write, the flow budget); `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let housekeeping = self.timers.get(Timer::Housekeeping);
        // Stopped once the first report arrived.
        let first_report = self.timers.get(Timer::FirstReport);
        let (heartbeat, stall, flow) = if self.in_flight {
            (None, self.timers.get(Timer::WriteStall), None)
        } else if self.next.is_some() {
            (self.timers.get(Timer::Heartbeat), None, self.flow_ready)
        } else {
            (None, None, None)
        };
        [housekeeping, first_report, heartbeat, stall, flow]
            .into_iter()
            .flatten()
            .min()
    }

    fn ensure_open(&self) -> Result<(), MasterError> {
        if self.closed {
            Err(MasterError::Misuse("connection already closed"))
        } else {
            Ok(())
        }
    }

    fn close_on_error<T>(&mut self, result: Result<T, MasterError>) -> Result<T, MasterError> {
        if result.is_err() {
            self.closed = true;
            self.in_flight = false;
            self.timers.stop_all();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::LogError;
    use crate::log::MemoryLog;
    use crate::wire::encode_report;
    use std::time::Duration;

    const F: u64 = 1024;

    fn log_with(len: usize) -> MemoryLog {
        let mut log = MemoryLog::new(F);
        log.push((0..len).map(|i| i as u8).collect::<Vec<u8>>());
        log
    }

    fn config() -> Config {
        Config::builder().transfer_batch_size(100).build().unwrap()
    }

    fn drain(t: &mut Transmit) -> Vec<u8> {
        let mut out = Vec::new();
        while t.has_remaining() {
            let c = t.chunk();
            out.extend_from_slice(c);
            let n = c.len();
            t.advance(n);
        }
        out
    }

    #[test]
    fn nothing_before_first_report() {
        let t0 = Instant::now();
        let log = log_with(500);
        let mut c = MasterConnection::new(config(), t0);
        assert!(c.poll_transmit(t0, &log).unwrap().is_none());
        // Not even a heartbeat, however long we wait.
        let later = t0 + Duration::from_secs(10);
        assert!(c.poll_transmit(later, &log).unwrap().is_none());
        // The only deadline is the first report's.
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn request_zero_starts_at_last_segment() {
        let t0 = Instant::now();
        let log = log_with(2 * F as usize + 50);
        let mut c = MasterConnection::new(config(), t0);
        c.handle_input(t0, &encode_report(0), &log).unwrap();
        assert_eq!(
            c.poll_event(),
            Some(MasterEvent::Started {
                requested: 0,
                start: 2 * F
            })
        );
        assert_eq!(c.poll_event(), Some(MasterEvent::Acked { offset: 0 }));
        let t = c.poll_transmit(t0, &log).unwrap().unwrap();
        assert_eq!(t.header().offset, 2 * F);
        assert_eq!(t.header().body_len, 50);
    }

    #[test]
    fn a_connection_granted_a_full_copy_starts_an_empty_slave_at_the_oldest_segment() {
        let t0 = Instant::now();
        let log = log_with(2 * F as usize + 50);
        let mut c = MasterConnection::new(config(), t0);
        assert_eq!(c.start_position(), StartPosition::LastSegment);
        c.set_start_position(StartPosition::OldestRetained).unwrap();
        c.handle_input(t0, &encode_report(0), &log).unwrap();
        assert_eq!(
            c.poll_event(),
            Some(MasterEvent::Started {
                requested: 0,
                start: 0
            })
        );
        let t = c.poll_transmit(t0, &log).unwrap().unwrap();
        assert_eq!(t.header().offset, 0);
        // Decided at the first report: a later change is misuse and changes nothing.
        assert!(matches!(
            c.set_start_position(StartPosition::LastSegment),
            Err(MasterError::Misuse(_))
        ));
        assert_eq!(c.start_position(), StartPosition::OldestRetained);
    }

    #[test]
    fn a_full_copy_does_not_change_where_a_slave_with_data_resumes() {
        let t0 = Instant::now();
        let log = log_with(2 * F as usize + 50);
        let mut c = MasterConnection::new(config(), t0);
        c.set_start_position(StartPosition::OldestRetained).unwrap();
        c.handle_input(t0, &encode_report(F + 7), &log).unwrap();
        assert_eq!(c.next_offset(), Some(F + 7));
    }

    #[test]
    fn an_empty_slave_starts_on_a_segment_boundary() {
        let t0 = Instant::now();
        // The oldest segment is retained from 100 only: the first frame may not start there.
        let mut log = MemoryLog::with_base(F, 100);
        log.push(vec![7u8; 500]);
        let mut c = MasterConnection::new(config(), t0);
        c.handle_input(t0, &encode_report(0), &log).unwrap();
        assert_eq!(c.next_offset(), Some(F), "rounded up to the next segment");
        // Nothing to send until the log reaches it; heartbeats carry the aligned offset.
        assert!(c.poll_transmit(t0, &log).unwrap().is_none());
        let hb = c
            .poll_transmit(t0 + Duration::from_secs(5), &log)
            .unwrap()
            .expect("heartbeat");
        assert_eq!(hb.header().offset, F);
        c.on_transmitted(t0 + Duration::from_secs(5)).unwrap();
        log.push(vec![8u8; F as usize]);
        let t = c
            .poll_transmit(t0 + Duration::from_secs(5), &log)
            .unwrap()
            .unwrap();
        assert_eq!((t.header().offset, t.body()[0]), (F, 8));
    }

    #[test]
    fn a_frame_the_slave_does_not_read_closes_at_the_stall_limit() {
        let t0 = Instant::now();
        let log = log_with(500);
        let mut c = MasterConnection::new(config(), t0);
        c.handle_input(t0, &encode_report(0), &log).unwrap();
        let _frame = c.poll_transmit(t0, &log).unwrap().unwrap();
        let stall = Config::default().write_stall_timeout();
        // Progress restarts the limit; reports keep housekeeping quiet.
        let t1 = t0 + stall / 2;
        c.handle_write_progress(t1);
        c.handle_input(t1, &encode_report(0), &log).unwrap();
        assert_eq!(c.poll_timeout(), Some(t1 + stall));
        c.handle_timeout(t0 + stall).unwrap();
        c.handle_input(t0 + stall, &encode_report(0), &log).unwrap();
        let err = c.handle_timeout(t1 + stall).unwrap_err();
        assert!(matches!(err, MasterError::WriteStalled { stalled } if stalled == stall));
        assert!(c.is_closed());
    }

    /// A connection limited to `rate` bytes a second with batches of `batch`, serving `len`
    /// bytes of log, whose slave already asked for offset 1.
    fn limited(batch: u32, rate: u64, len: usize, t0: Instant) -> (MasterConnection, MemoryLog) {
        let config = Config::builder()
            .transfer_batch_size(batch)
            .rate_limit(std::num::NonZeroU64::new(rate))
            .build()
            .unwrap();
        let mut log = MemoryLog::new(1 << 30);
        log.push(vec![1u8; len]);
        let mut c = MasterConnection::new(config, t0);
        c.handle_input(t0, &encode_report(1), &log).unwrap();
        (c, log)
    }

    /// Runs `c` against `log` in virtual time for `secs`, writing every frame at once and
    /// sleeping until `poll_timeout`; returns (time since start, frame bytes) per frame.
    fn run_limited(
        c: &mut MasterConnection,
        log: &MemoryLog,
        t0: Instant,
        secs: u64,
    ) -> Vec<(Duration, u64, bool)> {
        let mut now = t0;
        let mut frames = Vec::new();
        let end = t0 + Duration::from_secs(secs);
        while now < end {
            while let Some(t) = c.poll_transmit(now, log).unwrap() {
                frames.push((now - t0, t.remaining() as u64, t.is_heartbeat()));
                c.on_transmitted(now).unwrap();
            }
            // The slave acks what it got, which keeps housekeeping quiet.
            c.handle_input(now, &encode_report(c.ack_offset().unwrap()), log)
                .unwrap();
            now = c
                .poll_timeout()
                .unwrap()
                .max(now + Duration::from_micros(1));
        }
        frames
    }

    #[test]
    fn a_rate_limit_holds_over_every_window_and_sends_no_empty_frames() {
        let t0 = Instant::now();
        let rate = 100_000u64;
        let (mut c, log) = limited(4096, rate, 4 << 20, t0);
        let frames = run_limited(&mut c, &log, t0, 10);
        assert!(
            frames.iter().all(|f| !f.2),
            "data waits; it is never replaced by empty frames"
        );
        let burst = 4096 + 12 + 12;
        for i in 0..frames.len() {
            let mut sum = 0;
            for f in &frames[i..] {
                sum += f.1;
                let window = (f.0 - frames[i].0).as_nanos() as u64;
                assert!(
                    sum <= rate * window / 1_000_000_000 + burst,
                    "{sum} bytes in {window} ns"
                );
            }
        }
        // And it is not slower than the limit: within 1% over 10 s.
        let total: u64 = frames.iter().map(|f| f.1).sum();
        assert!(total >= rate * 10 * 99 / 100, "{total} bytes in 10 s");
    }

    #[test]
    fn a_large_batch_at_a_high_rate_is_held_too() {
        let t0 = Instant::now();
        let rate = 100 << 20;
        let config = Config::builder()
            .transfer_batch_size(1 << 20)
            .first_batch_size(Some(32 << 10))
            .rate_limit(std::num::NonZeroU64::new(rate))
            .build()
            .unwrap();
        // 1.1 GiB of log, all of it one shared 1 MiB buffer.
        let mut log = MemoryLog::new(1 << 30);
        let chunk = Bytes::from(vec![1u8; 1 << 20]);
        for _ in 0..1100 {
            log.push(chunk.clone());
        }
        let mut c = MasterConnection::new(config, t0);
        c.handle_input(t0, &encode_report(1 << 20), &log).unwrap();
        let total: u64 = run_limited(&mut c, &log, t0, 10).iter().map(|f| f.1).sum();
        assert!(
            total >= rate * 10 * 99 / 100,
            "{total} bytes in 10 s, {} MiB/s",
            total >> 20
        );
    }

    #[test]
    fn a_rate_limit_can_be_raised_on_a_running_connection() {
        let t0 = Instant::now();
        let (mut c, log) = limited(1000, 10_000, 1 << 20, t0);
        let slow: u64 = run_limited(&mut c, &log, t0, 2).iter().map(|f| f.1).sum();
        let t2 = t0 + Duration::from_secs(2);
        c.set_rate_limit(t2, std::num::NonZeroU64::new(100_000));
        assert_eq!(c.rate_limit(), Some(100_000));
        let fast: u64 = run_limited(&mut c, &log, t2, 2).iter().map(|f| f.1).sum();
        assert!(
            slow <= 2 * 10_000 + 2024 && fast >= 2 * 100_000 * 98 / 100,
            "{slow} then {fast}"
        );
        c.set_rate_limit(t2, None);
        assert_eq!(c.rate_limit(), None);
    }

    #[test]
    fn a_held_back_connection_still_sends_heartbeats() {
        let t0 = Instant::now();
        let (mut c, log) = limited(100_000, 1024, 1 << 20, t0);
        // The first full frame spends the budget; the next waits for half a frame, ~49 s.
        let first = c.poll_transmit(t0, &log).unwrap().unwrap();
        assert_eq!(first.header().body_len, 100_000);
        c.on_transmitted(t0).unwrap();
        assert!(c.poll_transmit(t0, &log).unwrap().is_none());
        assert!(c.flow_ready_at().unwrap() > t0 + Duration::from_secs(45));
        let hb = t0 + Duration::from_secs(5);
        assert_eq!(c.poll_timeout(), Some(hb));
        let t = c.poll_transmit(hb, &log).unwrap().unwrap();
        assert!(t.is_heartbeat());
    }

    #[test]
    fn oldest_retained_option() {
        let t0 = Instant::now();
        let mut log = log_with(3 * F as usize);
        log.delete_segments_before(F);
        let cfg = Config::builder()
            .start_position(StartPosition::OldestRetained)
            .build()
            .unwrap();
        let mut c = MasterConnection::new(cfg, t0);
        c.handle_input(t0, &encode_report(0), &log).unwrap();
        assert_eq!(c.next_offset(), Some(F));
    }

    #[test]
    fn first_batch_size_ramps_up_to_the_batch() {
        let t0 = Instant::now();
        let log = log_with(F as usize);
        let cfg = Config::builder()
            .transfer_batch_size(100)
            .first_batch_size(Some(15))
            .build()
            .unwrap();
        let mut c = MasterConnection::new(cfg, t0);
        c.handle_input(t0, &encode_report(1), &log).unwrap();
        let mut sizes = Vec::new();
        while let Some(t) = c.poll_transmit(t0, &log).unwrap() {
            sizes.push(t.header().body_len);
            c.on_transmitted(t0).unwrap();
            if sizes.len() == 7 {
                break;
            }
        }
        assert_eq!(sizes, [15, 30, 60, 100, 100, 100, 100]);
        // A first size above the batch is the batch.
        let cfg = Config::builder()
            .transfer_batch_size(100)
            .first_batch_size(Some(1000))
            .build()
            .unwrap();
        let mut c = MasterConnection::new(cfg, t0);
        c.handle_input(t0, &encode_report(1), &log).unwrap();
        assert_eq!(
            c.poll_transmit(t0, &log)
                .unwrap()
                .unwrap()
                .header()
                .body_len,
            100
        );
    }

    #[test]
    fn frames_respect_batch_and_segment_and_one_in_flight() {
        let t0 = Instant::now();
        let log = log_with(F as usize + 10);
        let mut c = MasterConnection::new(config(), t0);
        c.handle_input(t0, &encode_report(950), &log).unwrap();
        let mut t = c.poll_transmit(t0, &log).unwrap().unwrap();
        assert_eq!((t.header().offset, t.header().body_len), (950, 74));
        assert!(
            c.poll_transmit(t0, &log).unwrap().is_none(),
            "one in flight"
        );
        let bytes = drain(&mut t);
        assert_eq!(bytes.len(), 12 + 74);
        assert_eq!(&bytes[12..], &log.copy_range(950, F).unwrap()[..]);
        c.on_transmitted(t0).unwrap();
        let t = c.poll_transmit(t0, &log).unwrap().unwrap();
        assert_eq!((t.header().offset, t.header().body_len), (F, 10));
    }

    #[test]
    fn vectored_chunks_hold_header_and_body() {
        let t0 = Instant::now();
        let log = log_with(30);
        let mut c = MasterConnection::new(config(), t0);
        c.handle_input(t0, &encode_report(0), &log).unwrap();
        let mut t = c.poll_transmit(t0, &log).unwrap().unwrap();
        {
            let mut slices = [IoSlice::new(&[]), IoSlice::new(&[])];
            assert_eq!(t.chunks_vectored(&mut slices), 2);
            assert_eq!(slices[0].len() + slices[1].len(), 42);
        }
        t.advance(5);
        assert_eq!(t.remaining(), 37);
        t.advance(20);
        let mut slices = [IoSlice::new(&[]), IoSlice::new(&[])];
        assert_eq!(t.chunks_vectored(&mut slices), 1);
        assert_eq!(slices[0].len(), 17);
    }

    /// A log whose bytes "lie in a file" at twice their offset, to see the hint carried.
    struct Mapped(MemoryLog);

    impl LogSource for Mapped {
        fn min_offset(&self) -> u64 {
            self.0.min_offset()
        }
        fn max_offset(&self) -> u64 {
            self.0.max_offset()
        }
        fn segment_size(&self) -> u64 {
            self.0.segment_size()
        }
        fn read(&self, offset: u64, max_len: usize) -> Result<Bytes, LogError> {
            self.0.read(offset, max_len)
        }
        fn file_region(&self, offset: u64, len: usize) -> Option<FileRegion> {
            assert!(len > 0, "asked for the region of an empty body");
            Some(FileRegion::new(std::sync::Arc::new("segment"), 2 * offset))
        }
    }

    #[test]
    fn a_body_from_a_file_region_tracks_what_was_written() {
        let t0 = Instant::now();
        let log = Mapped(log_with(300));
        let mut c = MasterConnection::new(config(), t0);
        c.handle_input(t0, &encode_report(40), &log).unwrap();
        let mut t = c.poll_transmit(t0, &log).unwrap().unwrap();
        assert_eq!((t.header().offset, t.header().body_len), (40, 100));
        let (region, at) = t.body_file().unwrap();
        assert_eq!((region.position(), at), (80, 80));
        assert_eq!(region.file().downcast_ref::<&str>(), Some(&"segment"));
        assert!(!t.header_written());
        // Part of the header: the body has not moved.
        t.advance(7);
        assert_eq!(t.body_file().unwrap().1, 80);
        assert!(!t.header_written());
        // The rest of the header and 30 body bytes: the unwritten body starts 30 further.
        t.advance(5 + 30);
        assert!(t.header_written());
        assert_eq!(t.body_file().unwrap().1, 110);
        assert_eq!(t.body().len(), 70);
        t.advance(70);
        assert!(t.body_file().is_none(), "nothing left to send");
        // A heartbeat has no body, so no region.
        c.on_transmitted(t0).unwrap();
        let beat = t0 + Config::default().heartbeat_interval() * 2;
        let log = Mapped(log_with(140));
        let t = c.poll_transmit(beat, &log).unwrap().unwrap();
        assert!(t.is_heartbeat());
        assert!(t.body_file().is_none());
    }

    #[test]
    fn a_plain_log_gives_no_file_region() {
        let t0 = Instant::now();
        let log = log_with(30);
        let mut c = MasterConnection::new(config(), t0);
        c.handle_input(t0, &encode_report(0), &log).unwrap();
        let t = c.poll_transmit(t0, &log).unwrap().unwrap();
        assert!(t.body_file().is_none());
    }

    #[test]
    fn heartbeat_after_interval_without_write() {
        let t0 = Instant::now();
        let log = log_with(10);
        let mut c = MasterConnection::new(config(), t0);
        c.handle_input(t0, &encode_report(10), &log).unwrap();
        assert!(c.poll_transmit(t0, &log).unwrap().is_none());
        let hb_at = t0 + Duration::from_secs(5);
        assert_eq!(c.poll_timeout(), Some(hb_at));
        assert!(c
            .poll_transmit(hb_at - Duration::from_millis(1), &log)
            .unwrap()
            .is_none());
        let t = c.poll_transmit(hb_at, &log).unwrap().unwrap();
        assert!(t.is_heartbeat());
        assert_eq!(t.header().offset, 10);
        c.on_transmitted(hb_at).unwrap();
        assert_eq!(c.poll_timeout(), Some(hb_at + Duration::from_secs(5)));
    }

    #[test]
    fn housekeeping_closes_after_silence() {
        let t0 = Instant::now();
        let log = log_with(0);
        let mut c = MasterConnection::new(config(), t0);
        c.handle_input(t0 + Duration::from_secs(10), &encode_report(0), &log)
            .unwrap();
        c.handle_timeout(t0 + Duration::from_secs(29)).unwrap();
        let err = c.handle_timeout(t0 + Duration::from_secs(30)).unwrap_err();
        assert!(matches!(err, MasterError::HousekeepingTimeout { .. }));
        assert!(c.is_closed());
        assert_eq!(c.poll_timeout(), None);
        assert!(matches!(
            c.handle_input(t0, &[0], &log),
            Err(MasterError::Misuse(_))
        ));
    }

    #[test]
    fn a_peer_that_never_reports_is_closed_at_the_first_report_deadline() {
        let t0 = Instant::now();
        let log = log_with(100);
        let first = Config::default().first_report_timeout();
        let mut c = MasterConnection::new(config(), t0);
        assert_eq!(c.poll_timeout(), Some(t0 + first));
        // Bytes short of a report keep housekeeping quiet but do not move the deadline.
        let t1 = t0 + first / 2;
        c.handle_input(t1, &[0, 0, 0], &log).unwrap();
        c.handle_input(t1, &[0, 0, 0, 0], &log).unwrap();
        c.handle_timeout(t0 + first - Duration::from_millis(1))
            .unwrap();
        assert_eq!(c.poll_timeout(), Some(t0 + first));
        let err = c.handle_timeout(t0 + first).unwrap_err();
        assert!(matches!(err, MasterError::NoFirstReport { waited } if waited == first));
        assert!(c.is_closed());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn the_first_report_stops_the_first_report_deadline() {
        let t0 = Instant::now();
        let log = log_with(100);
        let first = Config::default().first_report_timeout();
        let mut c = MasterConnection::new(config(), t0);
        // The report arrives split, completed just before the deadline.
        let report = encode_report(100);
        c.handle_input(t0, &report[..5], &log).unwrap();
        c.handle_input(t0 + first - Duration::from_millis(1), &report[5..], &log)
            .unwrap();
        assert!(matches!(
            c.poll_event(),
            Some(MasterEvent::Started { requested: 100, .. })
        ));
        // Heartbeats keep the writer busy; the slave's reports keep housekeeping quiet.
        let mut now = t0;
        while now < t0 + first * 3 {
            now = c.poll_timeout().unwrap();
            c.handle_timeout(now).unwrap();
            if let Some(t) = c.poll_transmit(now, &log).unwrap() {
                assert!(t.is_heartbeat());
                c.on_transmitted(now).unwrap();
            }
            c.handle_input(now, &report, &log).unwrap();
        }
        assert!(!c.is_closed());
    }

    #[test]
    fn a_first_report_deadline_past_housekeeping_leaves_housekeeping_to_close() {
        let t0 = Instant::now();
        let cfg = Config::builder()
            .first_report_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut c = MasterConnection::new(cfg, t0);
        let at = c.poll_timeout().unwrap();
        assert_eq!(at, t0 + cfg.housekeeping_interval());
        assert!(matches!(
            c.handle_timeout(at),
            Err(MasterError::HousekeepingTimeout { .. })
        ));
    }

    #[test]
    fn ack_checks() {
        let t0 = Instant::now();
        let log = log_with(100);
        let mut c = MasterConnection::new(config(), t0);
        c.handle_input(t0, &encode_report(50), &log).unwrap();
        c.handle_input(t0, &encode_report(60), &log).unwrap();
        assert_eq!(c.ack_offset(), Some(60));
        let err = c.handle_input(t0, &encode_report(101), &log).unwrap_err();
        assert!(matches!(
            err,
            MasterError::AckAboveMax { ack: 101, max: 100 }
        ));

        let mut c = MasterConnection::new(config(), t0);
        c.handle_input(t0, &encode_report(50), &log).unwrap();
        let err = c.handle_input(t0, &encode_report(49), &log).unwrap_err();
        assert!(matches!(err, MasterError::AckWentBackwards { .. }));

        let strict = Config::builder()
            .reject_ack_above_sent(true)
            .build()
            .unwrap();
        let mut c = MasterConnection::new(strict, t0);
        c.handle_input(t0, &encode_report(50), &log).unwrap();
        let err = c.handle_input(t0, &encode_report(51), &log).unwrap_err();
        assert!(matches!(
            err,
            MasterError::AckAboveSent { ack: 51, sent: 50 }
        ));
    }

    #[test]
    fn request_outside_retained_range() {
        let t0 = Instant::now();
        let mut log = log_with(3 * F as usize);
        log.delete_segments_before(2 * F);
        let mut c = MasterConnection::new(config(), t0);
        let err = c.handle_input(t0, &encode_report(5), &log).unwrap_err();
        assert!(matches!(
            err,
            MasterError::RequestBelowRetained {
                requested: 5,
                min
            } if min == 2 * F
        ));
        let mut c = MasterConnection::new(config(), t0);
        let err = c
            .handle_input(t0, &encode_report(3 * F + 1), &log)
            .unwrap_err();
        assert!(matches!(err, MasterError::RequestAboveMax { .. }));
    }

    #[test]
    fn lagging_slave_whose_segment_is_deleted_is_closed() {
        let t0 = Instant::now();
        let mut log = log_with(3 * F as usize);
        let mut c = MasterConnection::new(config(), t0);
        c.handle_input(t0, &encode_report(10), &log).unwrap();
        log.delete_segments_before(F);
        let err = c.poll_transmit(t0, &log).unwrap_err();
        assert!(matches!(
            err,
            MasterError::Log(LogError::BelowRetained { .. })
        ));
        assert!(c.is_closed());
    }

    #[test]
    fn misuse_is_typed() {
        let t0 = Instant::now();
        let mut c = MasterConnection::new(config(), t0);
        assert!(matches!(c.on_transmitted(t0), Err(MasterError::Misuse(_))));
    }

    #[test]
    fn time_going_backwards_is_clamped() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let log = log_with(10);
        let mut c = MasterConnection::new(config(), t0);
        c.handle_input(t0, &encode_report(10), &log).unwrap();
        // An earlier instant neither panics nor fires anything.
        let early = t0 - Duration::from_secs(50);
        assert!(c.poll_transmit(early, &log).unwrap().is_none());
        c.handle_timeout(early).unwrap();
    }
}
