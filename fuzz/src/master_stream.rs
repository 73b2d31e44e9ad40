//! `master_stream`: a hostile or broken slave's bytes into a real [`MasterConnection`].
//!
//! The harness is a master driver over a [`MemoryLog`] whose segment size, base, contents and
//! retention come from the input, and which grows and loses old segments while the connection
//! runs. The program interleaves the slave's bytes (raw, or reports of chosen values in chosen
//! splits) with `poll_transmit`, partial and complete writes, `on_transmitted`, time steps and
//! timeouts.
//!
//! The machine is checked against a model of §3 after every step:
//! * report parsing: the last complete 8-byte value of each read is used, the first is the
//!   request, and the same typed errors, events (`Started`, strictly increasing `Acked`) and
//!   getters as the model (§3.2, §3.3, §8 invariants 4, 18, 19);
//! * nothing is sent before the first report (§8 invariant 5); the first frame starts where the
//!   first-transfer rule says (invariant 6);
//! * frames are contiguous, carry exactly the log's bytes, are as large as allowed but at most
//!   `transfer_batch_size`, never cross a segment, never pass the log's end, and a heartbeat is
//!   sent exactly when caught up and `heartbeat_interval` passed since the last write
//!   (invariants 7, 8, 11);
//! * one frame in flight at a time, and the [`Transmit`](rocketmq_ha::Transmit) yields exactly
//!   header plus body however it is written (invariant 10);
//! * `poll_timeout` is exactly the earlier of housekeeping and the heartbeat, and housekeeping
//!   fires exactly when `housekeeping_interval` passed without a read (invariant 17);
//! * after an `Err` the connection is closed: every input is refused and nothing is emitted.

use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::Buf;
use rocketmq_ha::wire::{encode_report, TRANSFER_HEADER_LEN};
use rocketmq_ha::{
    segment_start, Config, LogSource, MasterConnection, MasterError, MasterEvent, MemoryLog,
    StartPosition, Transmit, WireError,
};

use super::input::Input;

/// The largest log a program may build, to keep executions fast.
const MAX_LOG: usize = 1 << 20;

/// Runs one `master_stream` program; panics on a violated property.
pub fn master_stream(data: &[u8]) {
    let mut input = Input::new(data);
    let mut h = Harness::new(&mut input);
    let mut steps = 0;
    while !input.is_empty() && steps < 2_000 {
        steps += 1;
        h.step(&mut input);
        h.check();
    }
}

fn config(input: &mut Input) -> Config {
    let batch = match input.u8() % 3 {
        0 => input.small(1, 64),
        1 => input.medium(1, 1 << 16),
        _ => 32 * 1024,
    } as u32;
    let heartbeat = Duration::from_millis(input.medium(1, 8_000));
    let housekeeping = heartbeat + Duration::from_millis(input.medium(1, 30_000));
    let start = if input.bool() {
        StartPosition::LastSegment
    } else {
        StartPosition::OldestRetained
    };
    Config::builder()
        .transfer_batch_size(batch)
        .max_frame_size(batch + TRANSFER_HEADER_LEN as u32 + input.small(0, 3) as u32)
        .heartbeat_interval(heartbeat)
        .housekeeping_interval(housekeeping)
        // Derived, not drawn, so the corpus keeps its meaning; twice the heartbeat falls both
        // before and after housekeeping across the drawn ranges.
        .first_report_timeout(heartbeat * 2)
        .start_position(start)
        .reject_ack_above_max(!input.u8().is_multiple_of(4))
        .reject_ack_above_sent(input.u8().is_multiple_of(4))
        .build()
        .expect("the harness builds valid configurations")
}

/// The master's log and a copy of every byte ever pushed, to check frame bodies against.
struct Log {
    log: MemoryLog,
    base: u64,
    bytes: Vec<u8>,
    salt: u8,
}

impl Log {
    fn new(input: &mut Input) -> Self {
        let segment = match input.u8() % 3 {
            0 => input.small(1, 16),
            1 => input.medium(1, 4096),
            _ => 1 << 30,
        };
        let base = match input.u8() % 4 {
            0 => 0,
            1 => input.small(0, 8) * segment,
            2 => input.medium(0, 1 << 16),
            _ => (1 << 40) + input.medium(0, 1 << 16),
        };
        let mut log = Log {
            log: MemoryLog::with_base(segment, base),
            base,
            bytes: Vec::new(),
            salt: input.u8(),
        };
        for _ in 0..input.small(0, 4) {
            log.grow(input);
        }
        if input.bool() {
            log.retain(input);
        }
        log
    }

    fn grow(&mut self, input: &mut Input) {
        let len = match input.u8() % 4 {
            0 => input.small(1, 16),
            1 => input.small(1, 255),
            2 => input.medium(1, 1 << 14),
            _ => self.log.segment_size().min(1 << 14),
        } as usize;
        if self.bytes.len() + len > MAX_LOG {
            return;
        }
        let start = self.log.max_offset();
        let piece: Vec<u8> = (start..start + len as u64)
            .map(|o| (o as u8).wrapping_mul(29) ^ (o >> 8) as u8 ^ self.salt)
            .collect();
        self.bytes.extend_from_slice(&piece);
        let max = self.log.push(piece);
        assert_eq!(max, self.base + self.bytes.len() as u64);
    }

    fn retain(&mut self, input: &mut Input) {
        let f = self.log.segment_size();
        let to = match input.u8() % 3 {
            0 => self.log.min_offset() + f * input.small(1, 3),
            1 => self.log.max_offset(),
            _ => self.base + input.medium(0, self.bytes.len() as u64),
        };
        self.log.delete_segments_before(to);
    }

    fn range(&self, start: u64, len: usize) -> &[u8] {
        let at = (start - self.base) as usize;
        &self.bytes[at..at + len]
    }
}

/// The frame being written, and the model's view of it.
struct InFlight {
    transmit: Transmit,
    expected: Vec<u8>,
    written: Vec<u8>,
    /// When it was handed out or last made progress: the stall limit counts from here.
    progress_at: Instant,
}

struct Harness {
    config: Config,
    /// Where an empty slave starts on this connection (the model of `set_start_position`).
    start: StartPosition,
    conn: MasterConnection,
    log: Log,
    now: Instant,
    /// Every byte the slave sent.
    fed: Vec<u8>,
    request: Option<u64>,
    ack: Option<u64>,
    /// The next offset the model expects a frame at.
    next: Option<u64>,
    in_flight: Option<InFlight>,
    /// When the last frame was reported written (or the connection accepted).
    last_write: Instant,
    last_read: Instant,
    /// When the connection was accepted (the first-report deadline runs from here).
    accepted: Instant,
    closed: bool,
}

impl Harness {
    fn new(input: &mut Input) -> Self {
        let config = config(input);
        let log = Log::new(input);
        let now = Instant::now();
        let mut conn = MasterConnection::new(config, now);
        // Half the connections get the other start rule, as a driver does for a peer the
        // admission grants a full copy (`set_start_position`). Derived, not drawn, so the corpus
        // keeps its meaning.
        let start = if config.heartbeat_interval().as_millis() % 2 == 1 {
            match config.start_position() {
                StartPosition::LastSegment => StartPosition::OldestRetained,
                _ => StartPosition::LastSegment,
            }
        } else {
            config.start_position()
        };
        conn.set_start_position(start)
            .expect("a new connection takes a start position");
        Harness {
            config,
            start,
            conn,
            log,
            now,
            fed: Vec::new(),
            request: None,
            ack: None,
            next: None,
            in_flight: None,
            last_write: now,
            last_read: now,
            accepted: now,
            closed: false,
        }
    }

    fn step(&mut self, input: &mut Input) {
        match input.u8() % 16 {
            0 | 1 => {
                let bytes = input.bytes(40).to_vec();
                self.feed(&bytes);
            }
            2..=4 => {
                let value = self.report_value(input);
                // Values above `i64::MAX` are negative on the wire.
                let report = (value as i64).to_be_bytes();
                if value <= i64::MAX as u64 {
                    assert_eq!(encode_report(value), report);
                }
                let split = input.small(0, 8) as usize;
                self.feed(&report[..split]);
                self.feed(&report[split..]);
            }
            5 | 6 => self.poll_transmit(),
            7 => {
                let n = input.small(1, 40) as usize;
                self.write(n);
            }
            8 => {
                self.write(usize::MAX);
                self.transmitted();
            }
            9 => {
                if input.u8() == 0 || self.in_flight.is_some() {
                    self.write(usize::MAX);
                    self.transmitted();
                }
            }
            10 => {
                self.now += Duration::from_millis(input.medium(0, 40_000));
                if input.bool() {
                    self.timeout();
                }
            }
            11 => {
                if let Some(deadline) = self.conn.poll_timeout() {
                    self.now = self.now.max(deadline);
                }
                self.timeout();
            }
            12 | 13 => self.log.grow(input),
            14 => self.log.retain(input),
            _ => {
                // The driver's loop at the current instant: write out, refill, until idle.
                for _ in 0..64 {
                    self.poll_transmit();
                    if self.in_flight.is_none() {
                        break;
                    }
                    self.write(usize::MAX);
                    self.transmitted();
                }
            }
        }
    }

    /// A report value near something that matters.
    fn report_value(&self, input: &mut Input) -> u64 {
        let log = &self.log.log;
        let base = match input.u8() % 8 {
            0 => 0,
            1 => log.min_offset(),
            2 => log.max_offset(),
            3 => self.next.unwrap_or(0),
            4 => self.ack.unwrap_or(0),
            5 => segment_start(log.max_offset(), log.segment_size()),
            6 => return input.u64(),
            _ => return input.u64() | 1 << 63,
        };
        base.wrapping_add(input.small(0, 4)).wrapping_sub(2)
    }

    fn feed(&mut self, data: &[u8]) {
        let result = self.conn.handle_input(self.now, data, &self.log.log);
        if self.closed {
            assert!(matches!(result, Err(MasterError::Misuse(_))), "{result:?}");
            assert!(self.conn.poll_event().is_none());
            return;
        }
        let mut events = Vec::new();
        while let Some(e) = self.conn.poll_event() {
            events.push(e);
        }
        if data.is_empty() {
            assert!(
                result.is_ok() && events.is_empty(),
                "an empty read changes nothing"
            );
            return;
        }
        self.last_read = self.now;
        let before = self.fed.len() / 8;
        self.fed.extend_from_slice(data);
        let after = self.fed.len() / 8;
        let (expected, expected_events) = if after > before {
            let at = (after - 1) * 8;
            let raw: [u8; 8] = self.fed[at..at + 8].try_into().expect("8 bytes");
            self.on_report(i64::from_be_bytes(raw))
        } else {
            (Ok(()), Vec::new())
        };
        assert_eq!(events, expected_events, "events");
        match (result, expected) {
            (Ok(()), Ok(())) => {
                assert_eq!(self.conn.buffered_len(), self.fed.len() % 8);
            }
            (Err(got), Err(expected)) => {
                assert!(
                    same_error(&got, &expected),
                    "error {got:?}, model {expected:?}"
                );
                self.close();
            }
            (got, expected) => panic!("machine {got:?}, model {expected:?}"),
        }
    }

    /// The model of §3.2 and §3.3 for one report value.
    fn on_report(&mut self, value: i64) -> (Result<(), Model>, Vec<MasterEvent>) {
        if value < 0 {
            return (Err(Model::Negative(value)), Vec::new());
        }
        let value = value as u64;
        let log = &self.log.log;
        let (min, max) = (log.min_offset(), log.max_offset());
        let Some(previous) = self.ack else {
            let start = if value == 0 {
                match self.start {
                    // An empty slave's first frame starts on a segment boundary (§3.3).
                    StartPosition::OldestRetained => min.next_multiple_of(log.segment_size()),
                    _ => segment_start(max, log.segment_size())
                        .max(min.next_multiple_of(log.segment_size())),
                }
            } else if value < min {
                return (Err(Model::BelowRetained(value, min)), Vec::new());
            } else if value > max {
                return (Err(Model::AboveMax(value, max)), Vec::new());
            } else {
                value
            };
            self.request = Some(value);
            self.ack = Some(value);
            self.next = Some(start);
            return (
                Ok(()),
                vec![
                    MasterEvent::Started {
                        requested: value,
                        start,
                    },
                    MasterEvent::Acked { offset: value },
                ],
            );
        };
        if value < previous {
            return (Err(Model::Backwards(previous, value)), Vec::new());
        }
        if self.config.reject_ack_above_max() && value > max {
            return (Err(Model::AckAboveMax(value, max)), Vec::new());
        }
        let sent = self.next.expect("known with the request");
        if self.config.reject_ack_above_sent() && value > sent {
            return (Err(Model::AckAboveSent(value, sent)), Vec::new());
        }
        if value == previous {
            return (Ok(()), Vec::new());
        }
        self.ack = Some(value);
        (Ok(()), vec![MasterEvent::Acked { offset: value }])
    }

    fn poll_transmit(&mut self) {
        let result = self.conn.poll_transmit(self.now, &self.log.log);
        if self.closed || self.in_flight.is_some() {
            assert!(matches!(result, Ok(None)), "{result:?}");
            return;
        }
        let Some(next) = self.next else {
            assert!(matches!(result, Ok(None)), "sent before the first report");
            return;
        };
        let log = &self.log.log;
        let (min, max, f) = (log.min_offset(), log.max_offset(), log.segment_size());
        if next < min {
            assert!(
                matches!(result, Err(MasterError::Log(_))),
                "next {next} below the retained {min}: {result:?}"
            );
            self.close();
            return;
        }
        let transmit = match result {
            Ok(Some(t)) => t,
            Ok(None) => {
                assert!(next >= max, "data available but nothing sent");
                assert!(
                    self.now < self.last_write + self.config.heartbeat_interval(),
                    "heartbeat due but not sent"
                );
                return;
            }
            Err(e) => panic!("poll_transmit failed: {e:?}"),
        };
        let header = transmit.header();
        assert_eq!(header.offset, next, "frames are contiguous");
        let len = u64::from(header.body_len);
        if next >= max {
            assert_eq!(len, 0, "data beyond the log's end");
            assert!(
                self.now >= self.last_write + self.config.heartbeat_interval(),
                "heartbeat before it was due"
            );
            assert!(transmit.is_heartbeat());
        } else {
            let segment_left = segment_start(next, f) + f - next;
            let allowed = segment_left
                .min(u64::from(self.config.transfer_batch_size()))
                .min(max - next);
            assert_eq!(
                len, allowed,
                "a frame is as large as allowed, and no larger"
            );
            assert_eq!(
                segment_start(next, f),
                segment_start(next + len - 1, f),
                "frame crosses a segment"
            );
        }
        let mut expected = header.encode().to_vec();
        if len > 0 {
            // A heartbeat may announce an offset past the log's end: an empty slave's start
            // rounded up to the next segment (§3.3).
            expected.extend_from_slice(self.log.range(next, len as usize));
        }
        assert_eq!(&transmit.body()[..], &expected[TRANSFER_HEADER_LEN..]);
        assert_eq!(transmit.remaining(), expected.len());
        self.next = Some(next + len);
        self.in_flight = Some(InFlight {
            transmit,
            expected,
            written: Vec::new(),
            progress_at: self.now,
        });
    }

    /// The socket takes up to `n` bytes of the frame in flight; the driver reports progress.
    fn write(&mut self, mut n: usize) {
        let Some(flight) = self.in_flight.as_mut() else {
            return;
        };
        if n > 0 && flight.transmit.has_remaining() {
            self.conn.handle_write_progress(self.now);
            flight.progress_at = self.now;
        }
        while n > 0 && flight.transmit.has_remaining() {
            let mut slices = [IoSlice::new(&[]); 4];
            let count = flight.transmit.chunks_vectored(&mut slices);
            let vectored: Vec<u8> = slices[..count]
                .iter()
                .flat_map(|s| s.iter().copied())
                .collect();
            assert_eq!(
                &vectored[..],
                &flight.expected[flight.written.len()..],
                "vectored chunks are the unwritten rest"
            );
            let chunk = flight.transmit.chunk();
            assert!(!chunk.is_empty());
            let take = chunk.len().min(n);
            flight.written.extend_from_slice(&chunk[..take]);
            flight.transmit.advance(take);
            n -= take;
            assert_eq!(
                flight.transmit.remaining(),
                flight.expected.len() - flight.written.len()
            );
        }
    }

    fn transmitted(&mut self) {
        let result = self.conn.on_transmitted(self.now);
        if self.closed {
            assert!(matches!(result, Err(MasterError::Misuse(_))), "{result:?}");
            return;
        }
        match self.in_flight.take() {
            Some(flight) => {
                assert!(!flight.transmit.has_remaining());
                assert_eq!(flight.written, flight.expected, "bytes on the wire");
                assert!(result.is_ok(), "{result:?}");
                self.last_write = self.now;
            }
            None => {
                assert!(matches!(result, Err(MasterError::Misuse(_))), "{result:?}");
                self.close();
            }
        }
    }

    fn timeout(&mut self) {
        let result = self.conn.handle_timeout(self.now);
        if self.closed {
            assert!(matches!(result, Err(MasterError::Misuse(_))), "{result:?}");
            return;
        }
        let silent = self.now >= self.last_read + self.config.housekeeping_interval();
        let unreported = self.request.is_none()
            && self.now >= self.accepted + self.config.first_report_timeout();
        let stalled = self.in_flight.as_ref().and_then(|f| {
            (self.now >= f.progress_at + self.config.write_stall_timeout())
                .then_some(self.now - f.progress_at)
        });
        match result {
            Err(MasterError::WriteStalled { stalled: got }) => {
                assert_eq!(Some(got), stalled, "write stall");
                self.close();
            }
            _ if stalled.is_some() => panic!("a stalled write was not closed: {result:?}"),
            Err(MasterError::NoFirstReport { waited }) => {
                assert!(unreported, "the first-report deadline fired early");
                assert_eq!(waited, self.now - self.accepted);
                self.close();
            }
            _ if unreported => panic!("a peer that never reported was not closed: {result:?}"),
            Ok(()) => assert!(!silent, "housekeeping did not fire"),
            Err(MasterError::HousekeepingTimeout { idle }) => {
                assert!(silent, "housekeeping fired early");
                assert_eq!(idle, self.now - self.last_read);
                self.close();
            }
            Err(e) => panic!("unexpected timeout error {e:?}"),
        }
    }

    fn close(&mut self) {
        self.closed = true;
        self.in_flight = None;
        assert!(self.conn.is_closed());
    }

    fn check(&mut self) {
        let c = &self.conn;
        assert_eq!(c.is_closed(), self.closed);
        if self.closed {
            assert_eq!(c.poll_timeout(), None);
            assert!(
                self.conn.poll_event().is_none(),
                "a closed connection emits nothing"
            );
            return;
        }
        assert_eq!(c.request_offset(), self.request);
        assert_eq!(c.start_position(), self.start);
        if self.request.is_some() {
            // The start is decided: a change now is refused and changes nothing.
            assert!(matches!(
                self.conn.set_start_position(StartPosition::LastSegment),
                Err(MasterError::Misuse(_))
            ));
        }
        let c = &self.conn;
        assert_eq!(c.ack_offset(), self.ack);
        assert_eq!(c.next_offset(), self.next);
        assert_eq!(c.is_transmitting(), self.in_flight.is_some());
        assert!(c.buffered_len() < 8);
        let housekeeping = self.last_read + self.config.housekeeping_interval();
        let expected = match (self.next, &self.in_flight) {
            (Some(_), None) => housekeeping.min(self.last_write + self.config.heartbeat_interval()),
            (_, Some(flight)) => {
                housekeeping.min(flight.progress_at + self.config.write_stall_timeout())
            }
            (None, None) => housekeeping.min(self.accepted + self.config.first_report_timeout()),
        };
        assert_eq!(c.poll_timeout(), Some(expected), "next deadline");
    }
}

/// The model's errors, compared by kind and values with the machine's.
#[derive(Debug)]
enum Model {
    Negative(i64),
    BelowRetained(u64, u64),
    AboveMax(u64, u64),
    Backwards(u64, u64),
    AckAboveMax(u64, u64),
    AckAboveSent(u64, u64),
}

fn same_error(got: &MasterError, expected: &Model) -> bool {
    match (got, expected) {
        (MasterError::Wire(WireError::NegativeOffset(a)), Model::Negative(b)) => a == b,
        (MasterError::RequestBelowRetained { requested, min }, Model::BelowRetained(r, m)) => {
            requested == r && min == m
        }
        (MasterError::RequestAboveMax { requested, max }, Model::AboveMax(r, m)) => {
            requested == r && max == m
        }
        (MasterError::AckWentBackwards { previous, ack }, Model::Backwards(p, a)) => {
            previous == p && ack == a
        }
        (MasterError::AckAboveMax { ack, max }, Model::AckAboveMax(a, m)) => ack == a && max == m,
        (MasterError::AckAboveSent { ack, sent }, Model::AckAboveSent(a, s)) => {
            ack == a && sent == s
        }
        _ => false,
    }
}
