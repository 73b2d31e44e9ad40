//! The slave's side: dialing the master, receiving frames, reporting offsets (RocketMQ's
//! `HAClient`, §4).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::backoff::Backoff;
use crate::config::Config;
use crate::error::ClientError;
use crate::log::segment_start;
use crate::record_check::RecordCheck;
use crate::timer::{Clock, Timer, TimerTable};
use crate::wire::{decode_transfer, encode_report, TransferHeader, REPORT_LEN};

/// What an [`HaClient`] asks of its driver, or tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive] // AutoSwitch (§5) adds truncation and epoch events
pub enum ClientEvent {
    /// Dial the master now; then call [`HaClient::handle_connected`] or
    /// [`HaClient::handle_connect_failed`]. The dial's deadline is
    /// [`HaClient::poll_timeout`]: at that time [`HaClient::handle_timeout`] gives up on it.
    Connect,
    /// Append `data` to the local log at exactly `offset`, then call
    /// [`HaClient::handle_appended`] with the log's new max offset, or
    /// [`HaClient::handle_append_failed`]. Appends come in log order; each starts where the
    /// previous one ended.
    Append {
        /// Where the data goes: always the end of the local log once earlier appends are applied.
        offset: u64,
        /// The bytes, sharing the input buffer's memory.
        data: Bytes,
    },
    /// The master closed [`REJECTIONS_TO_REPORT`] connections in a row right after this slave
    /// reported `offset`, without sending a single frame. A Java master logs why and closes
    /// silently; this is the slave's own diagnosis. Likely causes: `offset` is below what the
    /// master still retains, above the master's max offset (the slave is ahead, or the master
    /// lost an unflushed tail), or the master refuses this peer. Emitted once per run of
    /// rejections; a frame ends the run.
    Rejected {
        /// The offset the slave reported each time.
        offset: u64,
        /// How many connections in a row ended this way.
        closes: u32,
    },
}

/// How many consecutive connections the master must close without a frame before the slave
/// reports [`ClientEvent::Rejected`]: one could be a restart; three in a row is a refusal.
pub const REJECTIONS_TO_REPORT: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the reconnect timer.
    Waiting,
    /// A [`ClientEvent::Connect`] was issued; the driver is dialing until the connect timer.
    Dialing,
    /// Connected and replicating.
    Connected,
    /// Shut down for good.
    Shutdown,
}

/// The report being written: at most one at a time, so the master never sees two reports
/// interleaved and a blocked socket holds at most 8 bytes of ours.
#[derive(Debug, Clone, Copy)]
struct Outgoing {
    value: u64,
    written: usize,
}

/// The slave's state machine (RocketMQ's `HAClient`, §4).
///
/// It does no I/O and reads no clock. It decides when to dial and when to give up on a dial,
/// checks and splits the master's frames into appends, says what to report and when, and how
/// long to wait after a failure. Most drivers use it through [`SlaveLoop`](crate::SlaveLoop),
/// which adds the buffers; the contract is the crate's [run loop](crate#the-run-loop).
///
/// # The driver's loop
/// 1. Drain [`poll_event`](Self::poll_event):
///    * [`ClientEvent::Connect`]: dial; then [`handle_connected`](Self::handle_connected) with
///      the local log's max offset, or [`handle_connect_failed`](Self::handle_connect_failed).
///      If [`poll_timeout`](Self::poll_timeout) passes first, call
///      [`handle_timeout`](Self::handle_timeout), which gives up on the dial.
///    * [`ClientEvent::Append`]: append to the local log, then
///      [`handle_appended`](Self::handle_appended) with its new max offset, or
///      [`handle_append_failed`](Self::handle_append_failed).
/// 2. Write the report from [`poll_transmit`](Self::poll_transmit) and report each write that
///    made progress with [`handle_written`](Self::handle_written). A later `poll_transmit` may
///    replace a report none of whose bytes were written yet; reads and timeouts go on while it
///    waits for the socket.
/// 3. Sleep until bytes arrive, the socket takes the report, or
///    [`poll_timeout`](Self::poll_timeout) passes.
/// 4. Feed reads to [`handle_input`](Self::handle_input), which splits complete frames off the
///    front of the buffer; call [`handle_timeout`](Self::handle_timeout) at the deadline. On EOF
///    or an I/O error call [`handle_disconnected`](Self::handle_disconnected). Go to 1.
///
/// Any `Err` from a method means: close the socket now. The machine has already scheduled the
/// reconnect. Apply (or drop) every pending append before reporting the next connection,
/// because [`handle_connected`](Self::handle_connected) takes the log's max.
///
/// # Rules implemented
/// * §4.2 reports: the max offset at once on connect (4.9 waits ~5 s), after appended data (one
///   report per batch of input, however many frames it held), and as a heartbeat after
///   `heartbeat_interval` without writing. Only what the driver says is stored is reported.
///   One report is written at a time; a newer value replaces one not yet started; a report
///   that makes no progress for `write_stall_timeout` closes the connection.
/// * §4.3 framing: frames are split off zero-copy; a negative size or a frame above
///   `max_frame_size` is an error as soon as its header arrives.
/// * §4.4 a header whose offset differs from the end of the slave's log closes the connection
///   before any byte is appended; an empty slave (max offset 0) accepts any offset.
/// * §4.6 housekeeping: close after `housekeeping_interval` without reading (the 5.x rule).
/// * §1.4 reconnect: a dial gives up after `connect_timeout`; exponential back-off with jitter
///   from the injected seed; a connection that received a valid frame resets it. A failed
///   local append waits on a slower back-off of its own, reset only by a stored append.
#[derive(Debug)]
pub struct HaClient {
    config: Config,
    clock: Clock,
    timers: TimerTable,
    backoff: Backoff,
    /// The back-off after local failures (appends the driver could not store).
    local_backoff: Backoff,
    /// Local failures since the last stored append.
    local_failures: u32,
    state: State,
    events: VecDeque<ClientEvent>,
    /// The local log's max offset, as last told by the driver.
    stored: u64,
    /// Where the next frame must start: the end of the log plus appends handed out. `None` for
    /// an empty slave, which accepts any offset (§4.4).
    expected: Option<u64>,
    /// The last offset reported on this connection (`currentReportedOffset`).
    reported: Option<u64>,
    report_due: bool,
    /// The report being written.
    outgoing: Option<Outgoing>,
    last_read: Instant,
    /// When the pending write last made progress (for the stall error).
    last_write_progress: Instant,
    /// Bytes the driver's buffer held after the last dispatch (an incomplete frame): only bytes
    /// beyond these are newly read.
    leftover: usize,
    /// Whether the current connection delivered a whole, valid frame.
    had_frame: bool,
    /// Connections in a row that the master closed after our report without any frame.
    rejections: u32,
    /// Whole frames received, heartbeats included, over every connection.
    frames_received: u64,
    /// The record check, with [`Config::verify_records`].
    records: Option<RecordCheck>,
}

impl HaClient {
    /// A client at `now` whose first action is to dial ([`ClientEvent::Connect`]). `seed` drives
    /// the reconnect jitter, so equal seeds give equal schedules.
    pub fn new(config: Config, seed: u64, now: Instant) -> Self {
        let backoff = Backoff::new(
            config.reconnect_backoff_initial(),
            config.reconnect_backoff_max(),
            seed,
        );
        let local_backoff = Backoff::new(
            config.local_failure_backoff_initial(),
            config.local_failure_backoff_max(),
            seed.rotate_left(32),
        );
        let mut client = HaClient {
            config,
            clock: Clock::new(now),
            timers: TimerTable::default(),
            backoff,
            local_backoff,
            local_failures: 0,
            state: State::Waiting,
            events: VecDeque::new(),
            stored: 0,
            expected: None,
            reported: None,
            report_due: false,
            outgoing: None,
            last_read: now,
            last_write_progress: now,
            leftover: 0,
            had_frame: false,
            rejections: 0,
            frames_received: 0,
            records: config
                .verify_records()
                .then(|| config.local_segment_size())
                .flatten()
                .map(|size| RecordCheck::new(size.get())),
        };
        client.dial(now);
        client
    }

    // --- getters ---

    /// Whole frames received so far, heartbeats included, over every connection.
    pub fn frames_received(&self) -> u64 {
        self.frames_received
    }

    /// Whether a connection to the master is up.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// The connection's state, as RocketMQ 5 names it (§3.10): `Ready` without a connection,
    /// `Transfer` while connected, `Shutdown` for good.
    pub fn connection_state(&self) -> crate::ConnectionState {
        match self.state {
            State::Waiting | State::Dialing => crate::ConnectionState::Ready,
            State::Connected => crate::ConnectionState::Transfer,
            State::Shutdown => crate::ConnectionState::Shutdown,
        }
    }

    /// Whether a dial is in progress (a [`ClientEvent::Connect`] was issued and neither
    /// answered nor given up).
    pub fn is_dialing(&self) -> bool {
        self.state == State::Dialing
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutdown(&self) -> bool {
        self.state == State::Shutdown
    }

    /// The local log's max offset as last reported by the driver.
    pub fn stored_offset(&self) -> u64 {
        self.stored
    }

    /// The last offset reported to the master on this connection.
    pub fn reported_offset(&self) -> Option<u64> {
        self.reported
    }

    /// Whether a report was handed out by [`poll_transmit`](Self::poll_transmit) and not yet
    /// fully written.
    pub fn is_transmitting(&self) -> bool {
        self.outgoing.is_some()
    }

    /// Connections in a row that the master closed right after this slave's report, before
    /// any frame (see [`ClientEvent::Rejected`]).
    pub fn rejections(&self) -> u32 {
        self.rejections
    }

    /// Local failures ([`handle_append_failed`](Self::handle_append_failed)) since the last
    /// append that was stored.
    pub fn local_failures(&self) -> u32 {
        self.local_failures
    }

    /// How many more bytes complete the frame at the front of `buf`: a read-size hint for
    /// drivers (at least 1 while a frame is incomplete, 0 when a whole frame is buffered).
    pub fn bytes_wanted(&self, buf: &[u8]) -> usize {
        match TransferHeader::peek(buf, self.config.max_frame_size()) {
            Ok(Some(header)) => header.frame_len().saturating_sub(buf.len()),
            Ok(None) => crate::wire::TRANSFER_HEADER_LEN - buf.len(),
            Err(_) => 0,
        }
    }

    // --- input ---

    /// The driver connected to the master; `stored_max` is the local log's max offset now.
    /// Ignored unless a dial is in progress (it may have been given up on already).
    pub fn handle_connected(&mut self, now: Instant, stored_max: u64) {
        let now = self.clock.advance(now);
        if self.state != State::Dialing {
            return;
        }
        self.state = State::Connected;
        self.stored = stored_max;
        self.expected = (stored_max != 0).then_some(stored_max);
        self.reported = None;
        self.outgoing = None;
        self.had_frame = false;
        // §4.2: report at once; the master sends nothing until it has our offset.
        self.report_due = true;
        self.last_read = now;
        self.leftover = 0;
        self.timers.stop_all();
        self.timers.set(
            Timer::Housekeeping,
            now + self.config.housekeeping_interval(),
        );
        self.timers
            .set(Timer::Heartbeat, now + self.config.heartbeat_interval());
    }

    /// The dial failed; the machine schedules another attempt after a back-off.
    pub fn handle_connect_failed(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        if self.state == State::Dialing {
            self.wait_to_reconnect(now);
        }
    }

    /// The connection ended (EOF or an I/O error); the machine schedules a reconnect.
    pub fn handle_disconnected(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        match self.state {
            State::Connected => {
                self.note_rejection();
                self.wait_to_reconnect(now);
            }
            State::Dialing => self.wait_to_reconnect(now),
            State::Waiting | State::Shutdown => {}
        }
    }

    /// A connection the master closed after our report and before any frame counts towards
    /// [`ClientEvent::Rejected`].
    fn note_rejection(&mut self) {
        if self.had_frame || self.reported.is_none() {
            return;
        }
        self.rejections = self.rejections.saturating_add(1);
        if self.rejections == REJECTIONS_TO_REPORT {
            self.events.push_back(ClientEvent::Rejected {
                offset: self.stored,
                closes: self.rejections,
            });
        }
    }

    /// Bytes from the master, appended by the driver to `buf`. Complete frames are split off
    /// the front (zero-copy) and turned into [`ClientEvent::Append`]s; an incomplete frame stays
    /// in `buf` for the next read.
    pub fn handle_input(&mut self, now: Instant, buf: &mut BytesMut) -> Result<(), ClientError> {
        let now = self.clock.advance(now);
        if self.state != State::Connected {
            return Err(ClientError::Misuse("input while not connected"));
        }
        // §4.6 measures time since the last byte *read*: a call that brings no new bytes (the
        // same incomplete frame handed in again) must not keep a silent master alive. Found by
        // the `client_stream` fuzz target.
        if buf.len() > self.leftover {
            self.last_read = now;
            self.timers.set(
                Timer::Housekeeping,
                now + self.config.housekeeping_interval(),
            );
        }
        let result = self.dispatch(buf);
        self.leftover = buf.len();
        match &result {
            // The master's log will not be different in a moment: wait as after a local
            // failure, not the network's short back-off.
            Err(e) if e.is_incompatible() => {
                let delay = self.local_backoff.next_delay();
                self.enter_waiting(now, delay);
            }
            Err(_) => self.wait_to_reconnect(now),
            Ok(()) => {}
        }
        result
    }

    /// §4.3 dispatch loop: header check first, then the whole frame.
    fn dispatch(&mut self, buf: &mut BytesMut) -> Result<(), ClientError> {
        let max_frame = self.config.max_frame_size();
        loop {
            let Some(header) = TransferHeader::peek(buf, max_frame)? else {
                return Ok(());
            };
            // §4.4: checked as soon as the header is here, before waiting for the body.
            if let Some(expected) = self.expected {
                if header.offset != expected {
                    return Err(ClientError::OffsetMismatch {
                        expected,
                        received: header.offset,
                    });
                }
            }
            self.check_segment_layout(&header)?;
            let Some(frame) = decode_transfer(buf, max_frame)? else {
                return Ok(());
            };
            if let Some(records) = &mut self.records {
                if !frame.body.is_empty() {
                    records
                        .check(frame.header.offset, &frame.body)
                        .map_err(ClientError::BadRecord)?;
                }
            }
            // A valid frame is network progress: the next network failure starts its back-off
            // afresh. (Local failures have their own back-off, reset only by a stored append.)
            self.backoff.reset();
            self.frames_received += 1;
            self.had_frame = true;
            self.rejections = 0;
            if !frame.body.is_empty() {
                self.expected = Some(frame.header.end_offset());
                self.events.push_back(ClientEvent::Append {
                    offset: frame.header.offset,
                    data: frame.body,
                });
            }
        }
    }

    /// [`Config::local_segment_size`]: a frame must fit the slave's segments as the master's
    /// frames fit its own (see [`ClientError::SegmentSizeMismatch`]).
    fn check_segment_layout(&self, header: &TransferHeader) -> Result<(), ClientError> {
        let Some(size) = self.config.local_segment_size() else {
            return Ok(());
        };
        let size = size.get();
        if header.body_len == 0 {
            return Ok(());
        }
        let last = header.end_offset() - 1;
        let crosses = segment_start(header.offset, size) != segment_start(last, size);
        let off_boundary = self.expected.is_none() && !header.offset.is_multiple_of(size);
        if crosses || off_boundary {
            return Err(ClientError::SegmentSizeMismatch {
                offset: header.offset,
                len: header.body_len,
                segment_size: size,
                crosses,
            });
        }
        Ok(())
    }

    /// The driver's local log now ends at `stored_max` (after applying appends). Reports are
    /// only ever made of this value, so the master never hears of bytes not yet stored.
    pub fn handle_appended(&mut self, stored_max: u64) {
        if stored_max <= self.stored {
            return;
        }
        self.stored = stored_max;
        if let Some(records) = &mut self.records {
            records.settle(stored_max);
        }
        self.local_failures = 0;
        self.local_backoff.reset();
        if self.state == State::Connected && self.reported.is_none_or(|r| r < stored_max) {
            self.report_due = true;
        }
    }

    /// The driver could not store an append (disk full, permission denied, too many open
    /// files, ...). This is not the network's fault, so the machine does not redial quickly:
    /// it closes the connection (the remaining appends could not be contiguous and are
    /// dropped) and waits [`Config::local_failure_backoff_initial`], doubling per consecutive
    /// local failure up to [`Config::local_failure_backoff_max`]. The driver reports the error
    /// itself; [`local_failures`](Self::local_failures) counts them.
    pub fn handle_append_failed(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        if self.state == State::Shutdown {
            return;
        }
        self.local_failures = self.local_failures.saturating_add(1);
        self.events
            .retain(|event| !matches!(event, ClientEvent::Append { .. }));
        let delay = self.local_backoff.next_delay();
        self.enter_waiting(now, delay);
    }

    /// Time passed; call when the deadline from [`poll_timeout`](Self::poll_timeout) is reached.
    /// Fails with [`ClientError::ConnectTimeout`] when a dial took too long (abandon it),
    /// [`ClientError::WriteStalled`] when a report could not be written, and
    /// [`ClientError::HousekeepingTimeout`] when the master has been silent too long.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ClientError> {
        let now = self.clock.advance(now);
        match self.state {
            State::Waiting if self.timers.is_expired(Timer::Reconnect, now) => self.dial(now),
            State::Dialing if self.timers.is_expired(Timer::Connect, now) => {
                self.wait_to_reconnect(now);
                return Err(ClientError::ConnectTimeout {
                    after: self.config.connect_timeout(),
                });
            }
            State::Connected => {
                if self.timers.is_expired(Timer::WriteStall, now) {
                    let stalled = now - self.last_write_progress;
                    self.wait_to_reconnect(now);
                    return Err(ClientError::WriteStalled { stalled });
                }
                if self.timers.is_expired(Timer::Housekeeping, now) {
                    let idle = now - self.last_read;
                    self.wait_to_reconnect(now);
                    return Err(ClientError::HousekeepingTimeout { idle });
                }
                if self.timers.is_expired(Timer::Heartbeat, now) {
                    self.report_due = true;
                    if self.outgoing.is_some() {
                        // A report is on its way already; the next heartbeat counts from
                        // when it is written.
                        self.timers.stop(Timer::Heartbeat);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `n` more bytes of the report from [`poll_transmit`](Self::poll_transmit) were written.
    /// Progress restarts the stall limit; once all 8 bytes are out the next report may follow.
    pub fn handle_written(&mut self, now: Instant, n: usize) -> Result<(), ClientError> {
        let now = self.clock.advance(now);
        let Some(out) = self.outgoing.as_mut() else {
            return Err(ClientError::Misuse(
                "handle_written without a report in flight",
            ));
        };
        if n == 0 || n > REPORT_LEN - out.written {
            return Err(ClientError::Misuse(
                "handle_written with a wrong byte count",
            ));
        }
        out.written += n;
        self.last_write_progress = now;
        if out.written == REPORT_LEN {
            self.outgoing = None;
            self.timers.stop(Timer::WriteStall);
            // §4.2: the heartbeat measures time since the last write.
            self.timers
                .set(Timer::Heartbeat, now + self.config.heartbeat_interval());
        } else {
            self.timers
                .set(Timer::WriteStall, now + self.config.write_stall_timeout());
        }
        Ok(())
    }

    // --- commands ---

    /// Stops for good: no more dialing, reports or events. The driver closes its socket.
    pub fn shutdown(&mut self) {
        self.state = State::Shutdown;
        self.events.clear();
        self.timers.stop_all();
        self.report_due = false;
        self.outgoing = None;
    }

    // --- output ---

    /// The report to write now (8 bytes, §2.1), if one is due: after connecting, after new data
    /// was stored, or as a heartbeat.
    ///
    /// One report is in flight at a time: until [`handle_written`](Self::handle_written) says
    /// all of it is written, this returns `None` — except when none of its bytes went out yet
    /// and a newer offset is due, which replaces it (reports are absolute offsets: the newest
    /// says everything the older one did). A report must be written whole (§4.2 rule 4).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<[u8; REPORT_LEN]> {
        let now = self.clock.advance(now);
        if self.state != State::Connected {
            return None;
        }
        if let Some(out) = self.outgoing {
            if out.written == 0 && self.report_due && out.value != self.stored {
                self.report_due = false;
                self.reported = Some(self.stored);
                self.outgoing = Some(Outgoing {
                    value: self.stored,
                    written: 0,
                });
                return Some(encode_report(self.stored));
            }
            return None;
        }
        if !self.report_due && !self.timers.is_expired(Timer::Heartbeat, now) {
            return None;
        }
        self.report_due = false;
        self.reported = Some(self.stored);
        self.outgoing = Some(Outgoing {
            value: self.stored,
            written: 0,
        });
        self.last_write_progress = now;
        self.timers.stop(Timer::Heartbeat);
        self.timers
            .set(Timer::WriteStall, now + self.config.write_stall_timeout());
        Some(encode_report(self.stored))
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// The next deadline at which [`handle_timeout`](Self::handle_timeout) or
    /// [`poll_transmit`](Self::poll_transmit) has work to do: a reconnect, a dial to give up, a
    /// heartbeat, a stalled write or housekeeping.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting | State::Dialing | State::Connected => self.timers.next_timeout(),
            State::Shutdown => None,
        }
    }

    fn dial(&mut self, now: Instant) {
        self.state = State::Dialing;
        self.timers.stop_all();
        self.timers
            .set(Timer::Connect, now + self.config.connect_timeout());
        self.events.push_back(ClientEvent::Connect);
    }

    fn wait_to_reconnect(&mut self, now: Instant) {
        let delay = self.backoff.next_delay();
        self.enter_waiting(now, delay);
    }

    fn enter_waiting(&mut self, now: Instant, delay: std::time::Duration) {
        // A local failure's longer wait is not shortened by a disconnect that follows it.
        let at = now + delay;
        let at = match (self.state, self.timers.get(Timer::Reconnect)) {
            (State::Waiting, Some(scheduled)) => scheduled.max(at),
            _ => at,
        };
        self.state = State::Waiting;
        self.report_due = false;
        self.reported = None;
        self.outgoing = None;
        // Appends already handed out stay queued: they passed the offset check and are valid
        // master data; the driver applies them before the next `handle_connected`.
        self.expected = None;
        self.timers.stop_all();
        self.timers.set(Timer::Reconnect, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::TRANSFER_HEADER_LEN;
    use std::time::Duration;

    use crate::wire::test_frame as frame;

    fn connected(stored: u64) -> (HaClient, Instant) {
        let t0 = Instant::now();
        let mut c = HaClient::new(Config::default(), 1, t0);
        assert_eq!(c.poll_event(), Some(ClientEvent::Connect));
        c.handle_connected(t0, stored);
        (c, t0)
    }

    /// Polls a report and writes it whole at `now`.
    fn send(c: &mut HaClient, now: Instant) -> Option<u64> {
        let report = c.poll_transmit(now)?;
        c.handle_written(now, REPORT_LEN).unwrap();
        Some(u64::from_be_bytes(report))
    }

    /// A connected client with `config`, its first report written.
    fn connected_with(config: Config, stored: u64) -> (HaClient, Instant) {
        let t0 = Instant::now();
        let mut c = HaClient::new(config, 1, t0);
        assert_eq!(c.poll_event(), Some(ClientEvent::Connect));
        c.handle_connected(t0, stored);
        send(&mut c, t0);
        (c, t0)
    }

    fn with_segments(size: u64, verify: bool) -> Config {
        Config::builder()
            .local_segment_size(std::num::NonZeroU64::new(size))
            .verify_records(verify)
            .build()
            .unwrap()
    }

    #[test]
    fn a_frame_crossing_a_local_segment_shows_another_segment_size() {
        let (mut c, t0) = connected_with(with_segments(4096, false), 4000);
        let mut buf = BytesMut::from(&frame(4000, &[7; 97])[..TRANSFER_HEADER_LEN]);
        match c.handle_input(t0, &mut buf) {
            Err(ClientError::SegmentSizeMismatch {
                offset: 4000,
                len: 97,
                segment_size: 4096,
                crosses: true,
            }) => {}
            other => panic!("expected a crossing mismatch, got {other:?}"),
        }
        assert!(!c.is_connected());
        assert_eq!(c.poll_event(), None, "nothing of it is stored");
        // The wait is the local back-off (1 s), not the network's (100 ms).
        assert!(c.poll_timeout().unwrap() >= t0 + Duration::from_millis(500));

        // Up to the boundary is fine; so is a frame starting on it.
        let (mut c, t0) = connected_with(with_segments(4096, false), 4000);
        let mut buf = BytesMut::from(&frame(4000, &[7; 96])[..]);
        buf.extend_from_slice(&frame(4096, &[8; 4096]));
        c.handle_input(t0, &mut buf).unwrap();
        assert!(matches!(
            c.poll_event(),
            Some(ClientEvent::Append { offset: 4000, .. })
        ));
        assert!(matches!(
            c.poll_event(),
            Some(ClientEvent::Append { offset: 4096, .. })
        ));
    }

    #[test]
    fn an_empty_slaves_first_frame_must_start_on_a_local_segment() {
        let (mut c, t0) = connected_with(with_segments(1 << 20, false), 0);
        let mut buf = BytesMut::from(&frame(3 << 19, b"abc")[..]);
        assert!(matches!(
            c.handle_input(t0, &mut buf),
            Err(ClientError::SegmentSizeMismatch { crosses: false, .. })
        ));
        let (mut c, t0) = connected_with(with_segments(1 << 20, false), 0);
        let mut buf = BytesMut::from(&frame(3 << 20, b"abc")[..]);
        c.handle_input(t0, &mut buf).unwrap();
        // Without the setting, any layout passes (a Java slave's behaviour).
        let (mut c, t0) = connected_with(Config::default(), 0);
        let mut buf = BytesMut::from(&frame(3 << 19, &[1; 1 << 20])[..]);
        c.handle_input(t0, &mut buf).unwrap();
    }

    #[test]
    fn with_verify_records_a_bad_record_closes_and_nothing_of_it_is_stored() {
        use crate::record::{LogWriter, Message};
        let mut writer = LogWriter::new(4096, 0);
        let mut log = Vec::new();
        for i in 0..3u8 {
            writer
                .push(&Message::new("t", vec![i; 200]), &mut log)
                .unwrap();
        }
        let (mut c, t0) = connected_with(with_segments(4096, true), 0);
        let mut buf = BytesMut::from(&frame(0, &log)[..]);
        c.handle_input(t0, &mut buf).unwrap();
        assert!(matches!(
            c.poll_event(),
            Some(ClientEvent::Append { offset: 0, .. })
        ));
        c.handle_appended(log.len() as u64);

        // The next frame's body flipped inside: a CRC failure.
        let mut bad = log.clone();
        let last = bad.len() - 10;
        bad[last] ^= 1;
        let (mut c, t0) = connected_with(with_segments(4096, true), 0);
        let mut buf = BytesMut::from(&frame(0, &bad)[..]);
        let err = c.handle_input(t0, &mut buf).unwrap_err();
        assert!(matches!(err, ClientError::BadRecord(_)), "{err}");
        assert!(err.is_incompatible());
        assert_eq!(c.poll_event(), None);
        assert!(!c.is_connected());
    }

    #[test]
    fn reports_immediately_on_connect() {
        let (mut c, t0) = connected(4096);
        assert_eq!(c.poll_transmit(t0), Some(4096u64.to_be_bytes()));
        assert_eq!(c.poll_transmit(t0), None);
    }

    #[test]
    fn appends_then_one_coalesced_report() {
        let (mut c, t0) = connected(100);
        c.poll_transmit(t0);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(100, b"abc"));
        buf.extend_from_slice(&frame(103, b"defg"));
        buf.extend_from_slice(&frame(107, b"h")[..7]);
        c.handle_input(t0, &mut buf).unwrap();
        assert_eq!(buf.len(), 7, "the partial frame stays buffered");
        let mut stored = 100;
        while let Some(ev) = c.poll_event() {
            let ClientEvent::Append { offset, data } = ev else {
                panic!("unexpected {ev:?}")
            };
            assert_eq!(offset, stored);
            stored += data.len() as u64;
            c.handle_appended(stored);
        }
        assert_eq!(stored, 107);
        // Two frames, one report.
        assert_eq!(c.poll_transmit(t0), Some(107u64.to_be_bytes()));
        assert_eq!(c.poll_transmit(t0), None);
    }

    #[test]
    fn nothing_reported_before_driver_stores_it() {
        let (mut c, t0) = connected(0);
        c.poll_transmit(t0);
        let mut buf = BytesMut::from(&frame(0, b"xyz")[..]);
        c.handle_input(t0, &mut buf).unwrap();
        assert!(matches!(c.poll_event(), Some(ClientEvent::Append { .. })));
        assert_eq!(c.poll_transmit(t0), None);
    }

    #[test]
    fn offset_mismatch_closes_before_body() {
        let (mut c, t0) = connected(0x1000);
        // V6: header only, body not yet arrived.
        let mut buf = BytesMut::from(&frame(0x2000, &[0; 16])[..TRANSFER_HEADER_LEN]);
        let err = c.handle_input(t0, &mut buf).unwrap_err();
        assert!(matches!(
            err,
            ClientError::OffsetMismatch {
                expected: 0x1000,
                received: 0x2000
            }
        ));
        assert!(!c.is_connected());
        assert_eq!(c.poll_event(), None, "nothing appended");
    }

    #[test]
    fn empty_slave_accepts_any_offset() {
        let (mut c, t0) = connected(0);
        let mut buf = BytesMut::from(&frame(0xC000_0000, b"hello")[..]);
        c.handle_input(t0, &mut buf).unwrap();
        assert_eq!(
            c.poll_event(),
            Some(ClientEvent::Append {
                offset: 0xC000_0000,
                data: Bytes::from_static(b"hello")
            })
        );
    }

    #[test]
    fn negative_and_oversize_frames_are_errors() {
        let (mut c, t0) = connected(0);
        let mut bad = frame(0, b"");
        bad[8..12].copy_from_slice(&(-1i32).to_be_bytes());
        let mut buf = BytesMut::from(&bad[..]);
        assert!(matches!(
            c.handle_input(t0, &mut buf),
            Err(ClientError::Wire(crate::WireError::NegativeBodySize(-1)))
        ));
        let (mut c, t0) = connected(0);
        let mut big = frame(0, b"");
        big[8..12].copy_from_slice(&(4 * 1024 * 1024i32).to_be_bytes());
        let mut buf = BytesMut::from(&big[..]);
        assert!(matches!(
            c.handle_input(t0, &mut buf),
            Err(ClientError::Wire(crate::WireError::FrameTooLarge { .. }))
        ));
    }

    #[test]
    fn heartbeat_report_and_housekeeping() {
        let (mut c, t0) = connected(8);
        send(&mut c, t0);
        let hb = t0 + Duration::from_secs(5);
        assert_eq!(c.poll_timeout(), Some(hb));
        c.handle_timeout(hb).unwrap();
        assert_eq!(send(&mut c, hb), Some(8));
        // Reads keep the connection alive ...
        let mut buf = BytesMut::from(&frame(8, b"")[..]);
        c.handle_input(t0 + Duration::from_secs(15), &mut buf)
            .unwrap();
        c.handle_timeout(t0 + Duration::from_secs(34)).unwrap();
        send(&mut c, t0 + Duration::from_secs(34));
        // ... silence does not.
        let err = c.handle_timeout(t0 + Duration::from_secs(35)).unwrap_err();
        assert!(matches!(err, ClientError::HousekeepingTimeout { .. }));
        assert!(!c.is_connected());
    }

    #[test]
    fn an_incomplete_frame_handed_in_again_is_not_a_read() {
        let (mut c, t0) = connected(8);
        let mut buf = BytesMut::from(&frame(8, b"abc")[..5]);
        c.handle_input(t0, &mut buf).unwrap();
        assert_eq!(buf.len(), 5);
        // The driver dispatches again without reading anything new: no bytes, no keep-alive.
        let later = t0 + Duration::from_secs(10);
        c.handle_input(later, &mut buf).unwrap();
        let housekeeping = t0 + Duration::from_secs(20);
        let err = c.handle_timeout(housekeeping).unwrap_err();
        assert!(matches!(
            err,
            ClientError::HousekeepingTimeout { idle } if idle == Duration::from_secs(20)
        ));
        // A byte that completes nothing is still a read.
        let (mut c, t0) = connected(8);
        let mut buf = BytesMut::from(&frame(8, b"abc")[..5]);
        c.handle_input(t0, &mut buf).unwrap();
        buf.extend_from_slice(&frame(8, b"abc")[5..6]);
        c.handle_input(later, &mut buf).unwrap();
        c.handle_timeout(housekeeping).unwrap();
        assert!(c.is_connected());
    }

    #[test]
    fn reconnects_after_backoff() {
        let (mut c, t0) = connected(0);
        c.handle_disconnected(t0);
        let at = c.poll_timeout().expect("reconnect timer");
        assert!(at > t0 && at <= t0 + Duration::from_millis(100));
        c.handle_timeout(at).unwrap();
        assert_eq!(c.poll_event(), Some(ClientEvent::Connect));
        assert_eq!(
            c.poll_timeout(),
            Some(at + Duration::from_secs(5)),
            "dialing: the machine gives up at the connect timeout"
        );
        c.handle_connect_failed(at);
        let again = c.poll_timeout().unwrap();
        assert!(again > at && again <= at + Duration::from_millis(200));
    }

    #[test]
    fn input_while_disconnected_is_misuse() {
        let t0 = Instant::now();
        let mut c = HaClient::new(Config::default(), 1, t0);
        let mut buf = BytesMut::from(&b"x"[..]);
        assert!(matches!(
            c.handle_input(t0, &mut buf),
            Err(ClientError::Misuse(_))
        ));
    }

    #[test]
    fn shutdown_stops_everything() {
        let (mut c, t0) = connected(0);
        c.shutdown();
        assert_eq!(c.poll_transmit(t0), None);
        assert_eq!(c.poll_timeout(), None);
        c.handle_disconnected(t0);
        assert_eq!(c.poll_event(), None);
        assert!(c.is_shutdown());
    }

    #[test]
    fn a_dial_is_given_up_at_the_connect_timeout() {
        let t0 = Instant::now();
        let mut c = HaClient::new(Config::default(), 1, t0);
        assert_eq!(c.poll_event(), Some(ClientEvent::Connect));
        assert!(c.is_dialing());
        let deadline = c.poll_timeout().expect("connect deadline");
        assert_eq!(deadline, t0 + Config::default().connect_timeout());
        // Early wake-ups change nothing.
        c.handle_timeout(deadline - Duration::from_millis(1))
            .unwrap();
        assert!(c.is_dialing());
        let err = c.handle_timeout(deadline).unwrap_err();
        assert!(matches!(err, ClientError::ConnectTimeout { .. }));
        assert!(!c.is_dialing() && !c.is_connected());
        // A connect that completes after the machine gave up is ignored.
        c.handle_connected(deadline, 0);
        assert!(!c.is_connected());
        let again = c.poll_timeout().expect("reconnect");
        assert!(again > deadline);
        c.handle_timeout(again).unwrap();
        assert_eq!(c.poll_event(), Some(ClientEvent::Connect));
    }

    #[test]
    fn one_report_in_flight_and_the_newest_replaces_an_unsent_one() {
        let (mut c, t0) = connected(100);
        assert_eq!(c.poll_transmit(t0), Some(100u64.to_be_bytes()));
        assert!(c.is_transmitting());
        // Nothing written yet: a newer offset replaces it.
        c.handle_appended(200);
        assert_eq!(c.poll_transmit(t0), Some(200u64.to_be_bytes()));
        assert_eq!(c.poll_transmit(t0), None);
        // Part of it written: it must be finished first, however new the data.
        c.handle_written(t0, 3).unwrap();
        c.handle_appended(300);
        assert_eq!(c.poll_transmit(t0), None);
        c.handle_written(t0, 5).unwrap();
        assert!(!c.is_transmitting());
        assert_eq!(send(&mut c, t0), Some(300));
        assert!(matches!(
            c.handle_written(t0, 1),
            Err(ClientError::Misuse(_))
        ));
    }

    #[test]
    fn reads_and_housekeeping_go_on_while_a_report_waits() {
        let (mut c, t0) = connected(8);
        assert!(c.poll_transmit(t0).is_some());
        // The socket takes nothing, but frames still arrive and are appended.
        let mut buf = BytesMut::from(&frame(8, b"abc")[..]);
        c.handle_input(t0 + Duration::from_secs(1), &mut buf)
            .unwrap();
        assert!(matches!(
            c.poll_event(),
            Some(ClientEvent::Append { offset: 8, .. })
        ));
        c.handle_appended(11);
        // The newer offset replaced the unsent report.
        assert_eq!(
            c.poll_transmit(t0 + Duration::from_secs(1)),
            Some(11u64.to_be_bytes())
        );
        // Heartbeats do not pile up behind it.
        c.handle_timeout(t0 + Duration::from_secs(6)).unwrap();
        assert_eq!(c.poll_transmit(t0 + Duration::from_secs(6)), None);
        // No progress for `write_stall_timeout` (20 s) since the report was first handed out.
        let stall = t0 + Config::default().write_stall_timeout();
        assert_eq!(c.poll_timeout(), Some(stall));
        let err = c.handle_timeout(stall).unwrap_err();
        assert!(
            matches!(err, ClientError::WriteStalled { stalled } if stalled == Duration::from_secs(20))
        );
        assert!(!c.is_connected());
    }

    #[test]
    fn write_progress_restarts_the_stall_limit() {
        let (mut c, t0) = connected(8);
        c.poll_transmit(t0).unwrap();
        let later = t0 + Duration::from_secs(15);
        c.handle_written(later, 4).unwrap();
        let mut buf = BytesMut::from(&frame(8, b"")[..]);
        c.handle_input(t0 + Duration::from_secs(19), &mut buf)
            .unwrap();
        c.handle_timeout(t0 + Duration::from_secs(21)).unwrap();
        assert!(c.is_connected());
        assert!(matches!(
            c.handle_timeout(later + Config::default().write_stall_timeout()),
            Err(ClientError::WriteStalled { .. })
        ));
    }

    #[test]
    fn local_failures_back_off_slowly_and_reset_only_on_a_stored_append() {
        let config = Config::default();
        let (mut c, t0) = connected(0);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            send(&mut c, now);
            let mut buf = BytesMut::from(&frame(0, b"data")[..]);
            c.handle_input(now, &mut buf).unwrap();
            assert!(matches!(c.poll_event(), Some(ClientEvent::Append { .. })));
            // The valid frame reset the network back-off; the disk is full all the same.
            c.handle_append_failed(now);
            assert!(!c.is_connected());
            let at = c.poll_timeout().unwrap();
            delays.push(at - now);
            now = at;
            c.handle_timeout(now).unwrap();
            assert_eq!(c.poll_event(), Some(ClientEvent::Connect));
            c.handle_connected(now, 0);
        }
        assert_eq!(c.local_failures(), 8);
        assert!(delays[0] >= config.local_failure_backoff_initial() / 2);
        assert!(delays
            .iter()
            .all(|d| *d <= config.local_failure_backoff_max()));
        assert!(delays[7] >= config.local_failure_backoff_max() / 2);
        // Attempts a minute once the ceiling is reached: at most 60 s / (30 s / 2).
        assert!(60 / (delays[7].as_secs().max(1)) <= 4);
        // A stored append resets it.
        send(&mut c, now);
        let mut buf = BytesMut::from(&frame(0, b"data")[..]);
        c.handle_input(now, &mut buf).unwrap();
        c.poll_event();
        c.handle_appended(4);
        assert_eq!(c.local_failures(), 0);
        c.handle_append_failed(now);
        assert!(c.poll_timeout().unwrap() - now <= config.local_failure_backoff_initial());
    }

    #[test]
    fn a_master_that_closes_after_every_report_is_reported_as_rejecting() {
        let (mut c, mut now) = connected(4096);
        for attempt in 1..=5u32 {
            send(&mut c, now);
            c.handle_disconnected(now);
            let event = c.poll_event();
            if attempt == REJECTIONS_TO_REPORT {
                assert_eq!(
                    event,
                    Some(ClientEvent::Rejected {
                        offset: 4096,
                        closes: REJECTIONS_TO_REPORT
                    })
                );
            } else {
                assert_eq!(event, None, "attempt {attempt}");
            }
            now = c.poll_timeout().unwrap();
            c.handle_timeout(now).unwrap();
            assert_eq!(c.poll_event(), Some(ClientEvent::Connect));
            c.handle_connected(now, 4096);
        }
        // A frame ends the run: closes after it are ordinary.
        send(&mut c, now);
        let mut buf = BytesMut::from(&frame(4096, b"")[..]);
        c.handle_input(now, &mut buf).unwrap();
        c.handle_disconnected(now);
        assert_eq!(c.poll_event(), None);
    }
}
