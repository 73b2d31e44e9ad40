//! The slave's side: dialing the master, receiving frames, reporting offsets (RocketMQ's
//! `HAClient`, §4).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::backoff::Backoff;
use crate::config::Config;
use crate::error::ClientError;
use crate::timer::{Clock, Timer, TimerTable};
use crate::wire::{decode_transfer, encode_report, TransferHeader, REPORT_LEN};

/// What an [`HaClient`] asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive] // AutoSwitch (§5) adds truncation and epoch events
pub enum ClientEvent {
    /// Dial the master now; then call [`HaClient::handle_connected`] or
    /// [`HaClient::handle_connect_failed`].
    Connect,
    /// Append `data` to the local log at exactly `offset`, then call
    /// [`HaClient::handle_appended`] with the log's new max offset. Appends come in log order;
    /// each starts where the previous one ended.
    Append {
        /// Where the data goes: always the end of the local log once earlier appends are applied.
        offset: u64,
        /// The bytes, sharing the input buffer's memory.
        data: Bytes,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the reconnect timer.
    Waiting,
    /// A [`ClientEvent::Connect`] was issued; the driver is dialing.
    Dialing,
    /// Connected and replicating.
    Connected,
    /// Shut down for good.
    Shutdown,
}

/// The slave's state machine (RocketMQ's `HAClient`, §4).
///
/// It does no I/O and reads no clock. It decides when to dial, checks and splits the master's
/// frames into appends, and says what to report and when.
///
/// # The driver's loop
/// 1. Drain [`poll_event`](Self::poll_event):
///    * [`ClientEvent::Connect`]: dial, then [`handle_connected`](Self::handle_connected) with
///      the local log's max offset, or [`handle_connect_failed`](Self::handle_connect_failed).
///    * [`ClientEvent::Append`]: append to the local log, then
///      [`handle_appended`](Self::handle_appended) with its new max offset.
/// 2. Write every report from [`poll_transmit`](Self::poll_transmit), whole (8 bytes).
/// 3. Sleep until bytes arrive or [`poll_timeout`](Self::poll_timeout) passes.
/// 4. Feed reads to [`handle_input`](Self::handle_input), which splits complete frames off the
///    front of the buffer; call [`handle_timeout`](Self::handle_timeout) at the deadline. On EOF
///    or an I/O error call [`handle_disconnected`](Self::handle_disconnected). Go to 1.
///
/// Any `Err` from `handle_input` or `handle_timeout` means: close the socket now. The machine has
/// already scheduled the reconnect. Apply (or drop) every pending append before reporting the
/// next connection, because [`handle_connected`](Self::handle_connected) takes the log's max.
///
/// # Rules implemented
/// * §4.2 reports: the max offset at once on connect (4.9 waits ~5 s), after appended data (one
///   report per batch of input, however many frames it held), and as a heartbeat after
///   `heartbeat_interval` without writing. Only what the driver says is stored is reported.
/// * §4.3 framing: frames are split off zero-copy; a negative size or a frame above
///   `max_frame_size` is an error as soon as its header arrives.
/// * §4.4 a header whose offset differs from the end of the slave's log closes the connection
///   before any byte is appended; an empty slave (max offset 0) accepts any offset.
/// * §4.6 housekeeping: close after `housekeeping_interval` without reading (the 5.x rule).
/// * §1.4 reconnect: exponential back-off with jitter from the injected seed; a connection that
///   received a valid frame resets it.
#[derive(Debug)]
pub struct HaClient {
    config: Config,
    clock: Clock,
    timers: TimerTable,
    backoff: Backoff,
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
    last_read: Instant,
    /// Bytes the driver's buffer held after the last dispatch (an incomplete frame): only bytes
    /// beyond these are newly read.
    leftover: usize,
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
        HaClient {
            config,
            clock: Clock::new(now),
            timers: TimerTable::default(),
            backoff,
            state: State::Dialing,
            events: VecDeque::from([ClientEvent::Connect]),
            stored: 0,
            expected: None,
            reported: None,
            report_due: false,
            last_read: now,
            leftover: 0,
        }
    }

    // --- getters ---

    /// Whether a connection to the master is up.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
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
    pub fn handle_connected(&mut self, now: Instant, stored_max: u64) {
        let now = self.clock.advance(now);
        if self.state == State::Shutdown {
            return;
        }
        self.state = State::Connected;
        self.stored = stored_max;
        self.expected = (stored_max != 0).then_some(stored_max);
        self.reported = None;
        // §4.2: report at once; the master sends nothing until it has our offset.
        self.report_due = true;
        self.last_read = now;
        self.leftover = 0;
        self.timers.stop(Timer::Reconnect);
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
        if self.state == State::Dialing || self.state == State::Connected {
            self.wait_to_reconnect(now);
        }
    }

    /// The connection ended (EOF or an I/O error); the machine schedules a reconnect.
    pub fn handle_disconnected(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        if self.state == State::Connected || self.state == State::Dialing {
            self.wait_to_reconnect(now);
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
        if result.is_err() {
            self.wait_to_reconnect(now);
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
            let Some(frame) = decode_transfer(buf, max_frame)? else {
                return Ok(());
            };
            // A valid frame is progress: the next failure starts its back-off afresh.
            self.backoff.reset();
            if !frame.body.is_empty() {
                self.expected = Some(frame.header.end_offset());
                self.events.push_back(ClientEvent::Append {
                    offset: frame.header.offset,
                    data: frame.body,
                });
            }
        }
    }

    /// The driver's local log now ends at `stored_max` (after applying appends). Reports are
    /// only ever made of this value, so the master never hears of bytes not yet stored.
    pub fn handle_appended(&mut self, stored_max: u64) {
        if stored_max <= self.stored {
            return;
        }
        self.stored = stored_max;
        if self.state == State::Connected && self.reported.is_none_or(|r| r < stored_max) {
            self.report_due = true;
        }
    }

    /// Time passed; call when the deadline from [`poll_timeout`](Self::poll_timeout) is reached.
    /// Fails with [`ClientError::HousekeepingTimeout`] when the master has been silent too long.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ClientError> {
        let now = self.clock.advance(now);
        match self.state {
            State::Waiting if self.timers.is_expired(Timer::Reconnect, now) => {
                self.timers.stop(Timer::Reconnect);
                self.state = State::Dialing;
                self.events.push_back(ClientEvent::Connect);
            }
            State::Connected if self.timers.is_expired(Timer::Housekeeping, now) => {
                let idle = now - self.last_read;
                self.wait_to_reconnect(now);
                return Err(ClientError::HousekeepingTimeout { idle });
            }
            State::Connected if self.timers.is_expired(Timer::Heartbeat, now) => {
                self.report_due = true;
            }
            _ => {}
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
    }

    // --- output ---

    /// The next report to write (8 bytes, §2.1), if one is due: after connecting, after new data
    /// was stored, or as a heartbeat. A report must be written whole or the connection closed
    /// (§4.2 rule 4).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<[u8; REPORT_LEN]> {
        let now = self.clock.advance(now);
        if self.state != State::Connected {
            return None;
        }
        if !self.report_due && !self.timers.is_expired(Timer::Heartbeat, now) {
            return None;
        }
        self.report_due = false;
        self.reported = Some(self.stored);
        self.timers
            .set(Timer::Heartbeat, now + self.config.heartbeat_interval());
        Some(encode_report(self.stored))
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// The next deadline at which [`handle_timeout`](Self::handle_timeout) or
    /// [`poll_transmit`](Self::poll_transmit) has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting | State::Connected => self.timers.next_timeout(),
            State::Dialing | State::Shutdown => None,
        }
    }

    fn wait_to_reconnect(&mut self, now: Instant) {
        self.state = State::Waiting;
        self.report_due = false;
        self.reported = None;
        // Appends already handed out stay queued: they passed the offset check and are valid
        // master data; the driver applies them before the next `handle_connected`.
        self.expected = None;
        self.timers.stop_all();
        self.timers
            .set(Timer::Reconnect, now + self.backoff.next_delay());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::TRANSFER_HEADER_LEN;
    use std::time::Duration;

    fn frame(offset: u64, body: &[u8]) -> Vec<u8> {
        let mut v = TransferHeader {
            offset,
            body_len: body.len() as u32,
        }
        .encode()
        .to_vec();
        v.extend_from_slice(body);
        v
    }

    fn connected(stored: u64) -> (HaClient, Instant) {
        let t0 = Instant::now();
        let mut c = HaClient::new(Config::default(), 1, t0);
        assert_eq!(c.poll_event(), Some(ClientEvent::Connect));
        c.handle_connected(t0, stored);
        (c, t0)
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
        c.poll_transmit(t0);
        let hb = t0 + Duration::from_secs(5);
        assert_eq!(c.poll_timeout(), Some(hb));
        c.handle_timeout(hb).unwrap();
        assert_eq!(c.poll_transmit(hb), Some(8u64.to_be_bytes()));
        // Reads keep the connection alive ...
        let mut buf = BytesMut::from(&frame(8, b"")[..]);
        c.handle_input(t0 + Duration::from_secs(15), &mut buf)
            .unwrap();
        c.handle_timeout(t0 + Duration::from_secs(34)).unwrap();
        c.poll_transmit(t0 + Duration::from_secs(34));
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
            None,
            "dialing: the driver owns the connect timeout"
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
}
