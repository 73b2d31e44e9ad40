//! `client_stream`: a hostile or broken master's bytes into a real [`HaClient`].
//!
//! The harness is a slave driver written the way the README's run loop says, with a local
//! [`MemoryLog`], a socket (a byte queue read in pieces of at most `read_size`) and virtual
//! time. The input chooses the configuration, the initial stored offset, and then a program:
//! bytes the master writes (raw, or well-formed frames at the expected offset, or frames with
//! chosen header fields), reads of chosen sizes, applying and acknowledging appends, time steps,
//! timeouts, EOF, dial outcomes and shutdown.
//!
//! Properties checked after every step:
//! * the appends equal those of a byte-level reference parser of the connection's stream
//!   (§4.3, §4.4), errors included: same kind, on the read that completed the bad header;
//! * each [`ClientEvent::Append`] starts where the previous ended (or at the local log's end), or
//!   anywhere for an empty slave's first, and the local log accepts it (§8 invariant 13);
//! * after a successful read the buffer holds less than `max_frame_size` bytes, so it never has
//!   to grow beyond `max_frame_size + read_size`, and `bytes_wanted` stays within the frame;
//! * reports are whole, only while connected, equal to what the driver said is stored,
//!   non-decreasing, first at once on connect, and due exactly when something new is stored or
//!   the heartbeat interval passed (§4.2, §8 invariant 15);
//! * housekeeping fires exactly when `housekeeping_interval` passed without a read (§4.6);
//! * after an `Err` the connection is gone: input is refused, nothing is reported, no new
//!   append appears, and a reconnect is scheduled within the back-off bounds (§1.4).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rocketmq_ha::wire::{JAVA_MAX_FRAME_SIZE, TRANSFER_HEADER_LEN};
use rocketmq_ha::{
    ClientError, ClientEvent, Config, HaClient, LogSink, LogSource, MemoryLog, WireError,
};

use super::input::Input;

/// Runs one `client_stream` program; panics on a violated property.
pub fn client_stream(data: &[u8]) {
    let mut input = Input::new(data);
    let mut h = Harness::new(&mut input);
    let mut steps = 0;
    while !input.is_empty() && steps < 2_000 {
        steps += 1;
        h.step(&mut input);
        h.check();
    }
}

/// Offsets the slave may start from: zero (empty), small, segment-aligned, or near the top of
/// the wire's range.
fn offset(input: &mut Input) -> u64 {
    match input.u8() % 5 {
        0 => 0,
        1 => input.medium(1, 1 << 16),
        2 => input.small(1, 255) << 30,
        3 => i64::MAX as u64 - input.medium(0, 1 << 16),
        _ => input.u64() & i64::MAX as u64,
    }
}

fn config(input: &mut Input) -> Config {
    let max_frame = match input.u8() % 4 {
        0 => 13 + input.small(0, 255) as u32,
        1 => 13 + input.u16() as u32,
        2 => JAVA_MAX_FRAME_SIZE,
        _ => u32::MAX,
    };
    let batch = 1 + (input.u32() % (max_frame - TRANSFER_HEADER_LEN as u32));
    let heartbeat = Duration::from_millis(input.medium(1, 8_000));
    let housekeeping = heartbeat + Duration::from_millis(input.medium(1, 30_000));
    let backoff = Duration::from_millis(input.medium(1, 2_000));
    let backoff_max = backoff + Duration::from_millis(input.medium(0, 10_000));
    Config::builder()
        .max_frame_size(max_frame)
        .transfer_batch_size(batch)
        .heartbeat_interval(heartbeat)
        .housekeeping_interval(housekeeping)
        .reconnect_backoff_initial(backoff)
        .reconnect_backoff_max(backoff_max)
        .build()
        .expect("the harness builds valid configurations")
}

/// One connection as the reference parser and the report rules see it.
struct Connection {
    /// Every byte the slave read on this connection.
    stream: Vec<u8>,
    /// How much of `stream` the reference parser consumed as whole frames.
    consumed: usize,
    /// Where the next frame must start; `None` for an empty slave (§4.4).
    expected: Option<u64>,
    /// The log's max offset announced at connect time.
    stored_at_connect: u64,
    reports: Vec<u64>,
    last_report_at: Option<Instant>,
    last_read: Instant,
}

struct Harness {
    config: Config,
    client: HaClient,
    now: Instant,
    /// The slave's local log.
    log: MemoryLog,
    /// Appends handed out and not yet applied.
    pending: VecDeque<(u64, Bytes)>,
    /// The last value given to `handle_appended` or `handle_connected`.
    announced: u64,
    /// Bytes the master wrote and the slave has not read.
    socket: VecDeque<u8>,
    buf: BytesMut,
    read_size: usize,
    conn: Option<Connection>,
    /// A `Connect` was issued and not yet answered.
    dialing: bool,
    /// When the current dial was issued (it is given up `connect_timeout` later).
    dial_started: Instant,
    /// When the connection last failed, while waiting to reconnect.
    failed_at: Option<Instant>,
    shut_down: bool,
}

impl Harness {
    fn new(input: &mut Input) -> Self {
        let config = config(input);
        let seed = input.u64();
        let stored = offset(input);
        let read_size = match input.u8() % 3 {
            0 => input.small(1, 16) as usize,
            1 => input.medium(1, 1 << 16) as usize,
            _ => usize::MAX,
        };
        let now = Instant::now();
        let mut client = HaClient::new(config, seed, now);
        assert_eq!(
            client.poll_event(),
            Some(ClientEvent::Connect),
            "dials first"
        );
        assert_eq!(
            client.poll_timeout(),
            Some(now + config.connect_timeout()),
            "a dial has a deadline"
        );
        Harness {
            config,
            client,
            now,
            // The slave never looks at segments: one large segment keeps appends cheap.
            log: MemoryLog::with_base(1 << 30, stored),
            pending: VecDeque::new(),
            announced: 0,
            socket: VecDeque::new(),
            buf: BytesMut::new(),
            read_size,
            conn: None,
            dialing: true,
            dial_started: now,
            failed_at: None,
            shut_down: false,
        }
    }

    fn max_frame(&self) -> u32 {
        self.config.max_frame_size()
    }

    fn step(&mut self, input: &mut Input) {
        match input.u8() % 16 {
            // The master writes raw bytes.
            0 | 1 => {
                let bytes = input.bytes(255);
                self.socket.extend(bytes);
            }
            // The master writes a well-formed frame where the slave expects it.
            2 | 3 => {
                let at = match self.conn.as_ref().and_then(|c| c.expected) {
                    Some(expected) if !input.u8().is_multiple_of(8) => expected,
                    _ => offset(input),
                };
                let room = u64::from(self.max_frame()) - TRANSFER_HEADER_LEN as u64;
                let len = match input.u8() % 4 {
                    0 => 0,
                    1 => input.small(1, 64),
                    2 => input.medium(1, room.min(4096)),
                    // At the limit and one past it, where that is cheap to build.
                    _ if room <= 1 << 16 => room + u64::from(input.bool()),
                    _ => input.medium(1, 4096),
                };
                self.write_frame(at, len as i32, input);
            }
            // A frame whose header fields are chosen near the interesting values.
            4 => {
                let base = self.conn.as_ref().and_then(|c| c.expected).unwrap_or(0);
                let at = base.wrapping_add(input.small(0, 4)).wrapping_sub(2);
                let size = match input.u8() % 4 {
                    0 => -(input.small(1, 255) as i32),
                    1 => i32::MAX - input.small(0, 3) as i32,
                    2 => self.max_frame().saturating_sub(TRANSFER_HEADER_LEN as u32) as i32,
                    _ => input.small(0, 32) as i32,
                };
                self.socket
                    .extend((at as i64).to_be_bytes().iter().chain(&size.to_be_bytes()));
                let body = input.bytes(32);
                self.socket.extend(body);
            }
            // Reads: one of a chosen size, or everything in `read_size` pieces.
            5 | 6 => {
                let n = input.medium(1, 1 << 16) as usize;
                self.read(n.min(self.read_size));
            }
            7 => {
                let mut guard = 0;
                while !self.socket.is_empty() && guard < 10_000 {
                    guard += 1;
                    self.read(self.read_size);
                }
            }
            // Apply some pending appends; acknowledge now or later.
            8 | 9 => {
                let count = input.small(0, 4) as usize;
                let count = if count == 0 {
                    self.pending.len()
                } else {
                    count
                };
                let ack = !input.u8().is_multiple_of(4);
                for _ in 0..count {
                    self.apply_one();
                    if ack {
                        self.announce();
                    }
                }
            }
            10 => {
                self.announce();
                // A stale value must change nothing.
                let stale = self.announced.saturating_sub(input.small(0, 3));
                self.client.handle_appended(stale);
            }
            11 => self.poll_transmit(),
            // Time passes; the driver calls `handle_timeout` only when a deadline passed, or
            // early, which must be harmless.
            12 => {
                self.now += Duration::from_millis(input.medium(0, 40_000));
                if input.bool() {
                    self.timeout();
                }
            }
            13 => {
                if let Some(deadline) = self.client.poll_timeout() {
                    self.now = self.now.max(deadline);
                }
                self.timeout();
            }
            14 => self.answer_dial(input),
            _ => match input.u8() {
                0 => self.shutdown(),
                1..=127 => self.disconnect(),
                _ => {
                    // The driver's whole loop, at the current instant.
                    let mut guard = 0;
                    while !self.socket.is_empty() && guard < 10_000 {
                        guard += 1;
                        self.read(self.read_size);
                    }
                    while !self.pending.is_empty() {
                        self.apply_one();
                        self.announce();
                    }
                    self.poll_transmit();
                }
            },
        }
        self.drain_events();
    }

    fn write_frame(&mut self, at: u64, len: i32, input: &mut Input) {
        let header = (at as i64)
            .to_be_bytes()
            .into_iter()
            .chain(len.to_be_bytes())
            .collect::<Vec<u8>>();
        self.socket.extend(header);
        if len > 0 {
            let fill = input.u8();
            // A deterministic body: byte i of the log is a function of its offset and `fill`.
            self.socket.extend(
                (0..len as u64).map(|i| (at.wrapping_add(i) as u8).wrapping_mul(31) ^ fill),
            );
        }
    }

    /// The driver reads up to `n` bytes and hands them to the machine.
    fn read(&mut self, n: usize) {
        let n = n.min(self.socket.len());
        if self.shut_down {
            return;
        }
        if self.conn.is_none() {
            // No socket: the machine refuses input and the buffer is untouched.
            let mut buf = BytesMut::from(&[1u8, 2, 3][..]);
            let result = self.client.handle_input(self.now, &mut buf);
            assert!(
                matches!(result, Err(ClientError::Misuse(_))),
                "input while not connected gave {result:?}"
            );
            assert_eq!(&buf[..], &[1, 2, 3]);
            assert!(
                self.client.poll_event().is_none(),
                "refused input emits nothing"
            );
            return;
        }
        assert!(
            self.buf.len() < self.max_frame() as usize,
            "buffer held {} bytes before a read",
            self.buf.len()
        );
        let chunk: Vec<u8> = self.socket.drain(..n).collect();
        self.buf.extend_from_slice(&chunk);
        let pending_before = self.pending.len();
        let result = self.client.handle_input(self.now, &mut self.buf);
        assert_eq!(self.pending.len(), pending_before);
        let got = self.collect_appends();

        let max_frame = self.max_frame();
        let conn = self.conn.as_mut().expect("connected");
        conn.stream.extend_from_slice(&chunk);
        if !chunk.is_empty() {
            conn.last_read = self.now;
        }
        let (expected, error) = reference_parse(conn, max_frame);
        assert_eq!(
            got.len(),
            expected.len(),
            "appends: machine {got:?}, reference {expected:?}"
        );
        for ((offset, data), (e_offset, e_data)) in got.iter().zip(&expected) {
            assert_eq!(*offset, *e_offset, "append offset");
            assert_eq!(&data[..], &e_data[..], "append data at {offset}");
        }
        match (result, error) {
            (Ok(()), None) => {
                let conn = self.conn.as_ref().expect("connected");
                let rest = &conn.stream[conn.consumed..];
                assert_eq!(
                    self.buf.len(),
                    rest.len(),
                    "the buffer holds the incomplete frame"
                );
                // Byte for byte at both ends: comparing all of a large partial frame after every
                // one-byte read would make the harness quadratic.
                let edge = self.buf.len().min(32);
                assert_eq!(&self.buf[..edge], &rest[..edge]);
                assert_eq!(
                    &self.buf[self.buf.len() - edge..],
                    &rest[rest.len() - edge..]
                );
                assert!(
                    self.buf.len() < max_frame as usize,
                    "after a read the buffer holds {} bytes, limit {max_frame}",
                    self.buf.len()
                );
                let wanted = self.client.bytes_wanted(&self.buf);
                assert!(wanted >= 1, "an incomplete frame wants more bytes");
                assert!(
                    self.buf.len() + wanted <= (max_frame as usize).max(TRANSFER_HEADER_LEN),
                    "bytes_wanted {wanted} beyond the frame limit"
                );
                assert!(self.client.is_connected());
            }
            (Err(e), Some(expected)) => {
                assert!(
                    same_error(&e, &expected),
                    "error {e:?}, reference {expected:?}"
                );
                if let Expected::Wire(_) = expected {
                    // A header that can never be valid wants no more bytes.
                    assert_eq!(self.client.bytes_wanted(&self.buf), 0);
                }
                self.closed();
            }
            (result, error) => panic!("machine {result:?}, reference {error:?}"),
        }
        for (offset, data) in got {
            self.accept_append(offset, data);
        }
    }

    /// Appends emitted by the last call, in order; a `Connect` there is a bug.
    fn collect_appends(&mut self) -> Vec<(u64, Bytes)> {
        let mut out = Vec::new();
        while let Some(event) = self.client.poll_event() {
            match event {
                ClientEvent::Append { offset, data } => out.push((offset, data)),
                other => panic!("unexpected {other:?} from handle_input"),
            }
        }
        out
    }

    fn accept_append(&mut self, offset: u64, data: Bytes) {
        assert!(!data.is_empty(), "empty append");
        let tail = match self.pending.back() {
            Some((at, d)) => Some(at + d.len() as u64),
            None => (self.log.max_offset() != 0).then(|| self.log.max_offset()),
        };
        if let Some(tail) = tail {
            assert_eq!(offset, tail, "append not at the end of the slave's log");
        }
        self.pending.push_back((offset, data));
    }

    fn apply_one(&mut self) {
        if let Some((offset, data)) = self.pending.pop_front() {
            let end = offset + data.len() as u64;
            let max = self
                .log
                .append(offset, data)
                .expect("every append fits the local log");
            assert_eq!(max, end);
        }
    }

    fn announce(&mut self) {
        let max = self.log.max_offset();
        self.client.handle_appended(max);
        self.announced = self.announced.max(max);
    }

    fn poll_transmit(&mut self) {
        let got = self.client.poll_transmit(self.now);
        let Some(conn) = self.conn.as_mut() else {
            assert_eq!(got, None, "report without a connection");
            return;
        };
        let heartbeat_due = conn
            .last_report_at
            .is_some_and(|at| self.now >= at + self.config.heartbeat_interval());
        let last = conn.reports.last().copied();
        match got {
            Some(bytes) => {
                // This driver's socket takes a report whole at once.
                self.client
                    .handle_written(self.now, bytes.len())
                    .expect("a report in flight");
                let value = i64::from_be_bytes(bytes);
                assert!(value >= 0, "negative report {value}");
                let value = value as u64;
                assert_eq!(value, self.announced, "reports only what is stored");
                assert!(value <= self.log.max_offset());
                match last {
                    // The first report is due at once; it carries whatever is stored by the
                    // time it is written, at least what was stored at connect.
                    None => assert!(value >= conn.stored_at_connect, "first report"),
                    Some(last) => assert!(
                        value > last || heartbeat_due,
                        "report {value} after {last} with nothing new and no heartbeat due"
                    ),
                }
                conn.reports.push(value);
                conn.last_report_at = Some(self.now);
            }
            None => {
                assert!(last.is_some(), "the first report is due at once");
                assert_eq!(
                    last,
                    Some(self.announced),
                    "a stored offset goes unreported"
                );
                assert!(!heartbeat_due, "heartbeat overdue");
            }
        }
    }

    fn timeout(&mut self) {
        let result = self.client.handle_timeout(self.now);
        if self.shut_down {
            assert!(result.is_ok());
            return;
        }
        match &self.conn {
            Some(conn) => {
                let silent = self.now >= conn.last_read + self.config.housekeeping_interval();
                match result {
                    Err(ClientError::HousekeepingTimeout { idle }) => {
                        assert!(silent, "housekeeping fired early");
                        assert_eq!(idle, self.now - conn.last_read);
                        self.closed();
                    }
                    Ok(()) => assert!(!silent, "housekeeping did not fire"),
                    Err(e) => panic!("unexpected timeout error {e:?}"),
                }
            }
            None if self.dialing => {
                let given_up = self.now >= self.dial_started + self.config.connect_timeout();
                match result {
                    Err(ClientError::ConnectTimeout { after }) => {
                        assert!(given_up, "dial given up early");
                        assert_eq!(after, self.config.connect_timeout());
                        self.dialing = false;
                        self.failed_at = Some(self.now);
                    }
                    Ok(()) => assert!(!given_up, "dial not given up at its deadline"),
                    Err(e) => panic!("unexpected timeout error while dialing {e:?}"),
                }
            }
            None => {
                assert!(result.is_ok(), "timeout while disconnected: {result:?}");
            }
        }
    }

    fn answer_dial(&mut self, input: &mut Input) {
        if !self.dialing {
            return;
        }
        self.dialing = false;
        if input.bool() {
            self.client.handle_connect_failed(self.now);
            self.failed_at = Some(self.now);
            return;
        }
        // The contract: apply or drop every pending append before announcing the log.
        if input.bool() {
            while !self.pending.is_empty() {
                self.apply_one();
            }
        } else {
            self.pending.clear();
        }
        let stored = self.log.max_offset();
        self.client.handle_connected(self.now, stored);
        self.announced = stored;
        self.socket.clear();
        self.buf.clear();
        self.failed_at = None;
        self.conn = Some(Connection {
            stream: Vec::new(),
            consumed: 0,
            expected: (stored != 0).then_some(stored),
            stored_at_connect: stored,
            reports: Vec::new(),
            last_report_at: None,
            last_read: self.now,
        });
        assert!(self.client.is_connected());
    }

    /// EOF or an I/O error on the socket.
    fn disconnect(&mut self) {
        self.client.handle_disconnected(self.now);
        if self.conn.is_some() || self.dialing {
            self.dialing = false;
            self.closed();
        }
    }

    /// The connection is gone (an `Err`, EOF, or a failed dial).
    fn closed(&mut self) {
        self.conn = None;
        self.socket.clear();
        self.buf.clear();
        self.failed_at = Some(self.now);
        assert!(!self.client.is_connected());
    }

    fn shutdown(&mut self) {
        self.client.shutdown();
        self.shut_down = true;
        self.conn = None;
        self.dialing = false;
        self.pending.clear();
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.client.poll_event() {
            match event {
                ClientEvent::Connect => {
                    assert!(!self.shut_down, "dial after shutdown");
                    assert!(self.conn.is_none() && !self.dialing, "dial while busy");
                    let failed_at = self.failed_at.expect("a dial follows a failure");
                    assert!(
                        self.now >= failed_at + self.config.reconnect_backoff_initial() / 2,
                        "reconnected before the back-off"
                    );
                    self.dialing = true;
                    self.dial_started = self.now;
                    self.failed_at = None;
                }
                ClientEvent::Append { .. } => panic!("append outside handle_input"),
                ClientEvent::Rejected { closes, .. } => {
                    assert_eq!(closes, rocketmq_ha::REJECTIONS_TO_REPORT);
                    assert!(self.conn.is_none(), "rejected while connected");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn check(&mut self) {
        let timeout = self.client.poll_timeout();
        if self.shut_down {
            assert!(self.client.is_shutdown());
            assert_eq!(timeout, None);
            // A late dial answer does not bring a shut-down client back.
            self.client
                .handle_connected(self.now, self.log.max_offset());
            assert_eq!(self.client.poll_transmit(self.now), None);
            assert!(!self.client.is_connected());
            return;
        }
        assert_eq!(self.client.is_connected(), self.conn.is_some());
        assert_eq!(self.client.stored_offset(), self.announced, "stored offset");
        match (&self.conn, self.failed_at) {
            (Some(conn), _) => {
                let deadline = timeout.expect("a connection has deadlines");
                assert!(deadline <= conn.last_read + self.config.housekeeping_interval());
                assert_eq!(self.client.reported_offset(), conn.reports.last().copied());
            }
            (None, Some(failed_at)) if !self.dialing => {
                let at = timeout.expect("a reconnect is scheduled");
                assert!(at >= failed_at + self.config.reconnect_backoff_initial() / 2);
                assert!(at <= failed_at + self.config.reconnect_backoff_max());
                assert_eq!(self.client.poll_transmit(self.now), None);
            }
            _ if self.dialing => assert_eq!(
                timeout,
                Some(self.dial_started + self.config.connect_timeout()),
                "a dial's deadline"
            ),
            _ => assert_eq!(timeout, None, "nothing scheduled before the first failure"),
        }
    }
}

enum Expected {
    Wire(WireError),
    Mismatch { expected: u64, received: u64 },
}

impl std::fmt::Debug for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::Wire(e) => write!(f, "Wire({e:?})"),
            Expected::Mismatch { expected, received } => {
                write!(
                    f,
                    "Mismatch {{ expected: {expected}, received: {received} }}"
                )
            }
        }
    }
}

fn same_error(got: &ClientError, expected: &Expected) -> bool {
    match (got, expected) {
        (ClientError::Wire(a), Expected::Wire(b)) => a == b,
        (
            ClientError::OffsetMismatch { expected, received },
            Expected::Mismatch {
                expected: e,
                received: r,
            },
        ) => expected == e && received == r,
        _ => false,
    }
}

/// The slave's framing rules (§4.3, §4.4) over the connection's stream, from where the last
/// call stopped: the complete frames' appends, and the error if a header is bad.
fn reference_parse(
    conn: &mut Connection,
    max_frame: u32,
) -> (Vec<(u64, Vec<u8>)>, Option<Expected>) {
    let mut appends = Vec::new();
    loop {
        let rest = &conn.stream[conn.consumed..];
        if rest.len() < TRANSFER_HEADER_LEN {
            return (appends, None);
        }
        let mut raw = [0u8; TRANSFER_HEADER_LEN];
        raw.copy_from_slice(&rest[..TRANSFER_HEADER_LEN]);
        let offset = i64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        let size = i32::from_be_bytes(raw[8..].try_into().expect("4 bytes"));
        if offset < 0 {
            return (
                appends,
                Some(Expected::Wire(WireError::NegativeOffset(offset))),
            );
        }
        if size < 0 {
            return (
                appends,
                Some(Expected::Wire(WireError::NegativeBodySize(size))),
            );
        }
        let frame_len = TRANSFER_HEADER_LEN as u64 + size as u64;
        if frame_len > u64::from(max_frame) {
            return (
                appends,
                Some(Expected::Wire(WireError::FrameTooLarge {
                    size: frame_len,
                    max: u64::from(max_frame),
                })),
            );
        }
        let offset = offset as u64;
        if offset + size as u64 > i64::MAX as u64 {
            let body_len = size as u32;
            return (
                appends,
                Some(Expected::Wire(WireError::OffsetOverflow {
                    offset,
                    body_len,
                })),
            );
        }
        if let Some(expected) = conn.expected {
            if offset != expected {
                return (
                    appends,
                    Some(Expected::Mismatch {
                        expected,
                        received: offset,
                    }),
                );
            }
        }
        if (rest.len() as u64) < frame_len {
            return (appends, None);
        }
        let body = rest[TRANSFER_HEADER_LEN..frame_len as usize].to_vec();
        conn.consumed += frame_len as usize;
        if !body.is_empty() {
            conn.expected = Some(offset + body.len() as u64);
            appends.push((offset, body));
        }
    }
}
