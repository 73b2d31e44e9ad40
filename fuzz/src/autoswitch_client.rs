//! `autoswitch_client`: a hostile or broken AutoSwitch master's bytes into a real
//! [`autoswitch::Client`](rocketmq_ha::autoswitch::Client).
//!
//! The harness is a slave driver following the crate's run loop, with a local [`MemoryLog`]
//! and epoch list, a socket (a byte queue read in pieces) and virtual time. The input chooses
//! the local history, then a program: raw bytes, well-formed handshake answers (any epoch
//! list), well-formed transfer frames at the expected offset with any epoch label, reads,
//! applying events, time steps, writes and disconnects.
//!
//! Properties checked after every step:
//! * every `Append` continues the local log (the log refuses nothing), and every `Truncate`
//!   cuts strictly below the log's end and only before any append of the connection;
//! * the epoch list stays strictly ascending, and when it changes an `EpochsChanged` says so;
//! * the confirm offset never exceeds what is stored;
//! * the first frame of a connection is the 16-byte handshake, and every report is the
//!   stored offset;
//! * after an `Err` the connection is gone (state `READY`) and input is refused.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rocketmq_ha::autoswitch::wire::{MasterHandshake, TransferHeader};
use rocketmq_ha::autoswitch::{Client, ClientEvent, EpochEntry, EpochList, SlaveIdentity};
use rocketmq_ha::{Config, ConnectionState, LogSink, LogSource, LogTruncate, MemoryLog};

use super::input::Input;

fn epochs(input: &mut Input, max_entries: u64, span: u64) -> EpochList {
    let mut list = EpochList::new();
    let (mut epoch, mut start) = (0i32, 0u64);
    for i in 0..input.small(0, max_entries) {
        epoch += input.small(1, 3) as i32;
        if i > 0 {
            start += input.medium(1, span);
        }
        list.append(EpochEntry::new(epoch, start))
            .expect("ascending");
    }
    list
}

/// The driver around the client: its log, socket and bookkeeping.
struct Harness {
    client: Client,
    log: MemoryLog,
    now: Instant,
    socket: VecDeque<u8>,
    buf: BytesMut,
    connected: bool,
    appended_this_connection: bool,
    handshake_seen: bool,
    /// Where a well-formed frame continues the stream.
    next_offset: u64,
    /// The epoch list as last announced by `EpochsChanged`.
    announced: EpochList,
}

impl Harness {
    /// Applies every pending event as a driver does; `dial_ok` decides a `Connect`.
    fn apply_events(&mut self, dial_ok: bool) {
        while let Some(event) = self.client.poll_event() {
            match event {
                // A dial the client gave up on already is stale: drivers check `is_dialing`.
                ClientEvent::Connect if !self.client.is_dialing() => {}
                ClientEvent::Connect => {
                    if dial_ok {
                        self.client
                            .handle_connected(self.now, self.log.max_offset());
                        self.connected = true;
                        self.appended_this_connection = false;
                        self.handshake_seen = false;
                        self.next_offset = self.log.max_offset();
                        self.socket.clear();
                        self.buf.clear();
                    } else {
                        self.client.handle_connect_failed(self.now);
                    }
                }
                ClientEvent::Truncate { offset } => {
                    assert!(offset < self.log.max_offset(), "a cut below the end");
                    assert!(!self.appended_this_connection, "a cut after appends");
                    let max = self.log.truncate_to(offset).expect("memory log cuts");
                    self.next_offset = max;
                    let result = self.client.handle_truncated(self.now, max);
                    assert!(
                        result.is_ok(),
                        "the cut is where the client asked: {result:?}"
                    );
                }
                ClientEvent::Append { offset, data } => {
                    let max = self
                        .log
                        .append(offset, data)
                        .expect("appends continue the local log");
                    self.appended_this_connection = true;
                    self.client.handle_appended(max);
                }
                ClientEvent::EpochsChanged => self.announced = self.client.epochs().clone(),
                other => panic!("unexpected event {other:?}"),
            }
        }
    }

    fn lost_connection(&mut self) {
        assert_eq!(self.client.connection_state(), ConnectionState::Ready);
        self.connected = false;
        self.socket.clear();
        self.buf.clear();
    }

    fn step(&mut self, input: &mut Input) {
        match input.u8() % 9 {
            0 => self.socket.extend(input.bytes(64)),
            1 => {
                let answer = MasterHandshake {
                    max_offset: input.medium(0, 2_000),
                    epochs: epochs(input, 5, 300),
                };
                self.socket.extend(answer.encode());
            }
            2 => {
                let body = input.bytes(48).to_vec();
                let offset = match input.u8() % 4 {
                    0 => None,
                    1 => Some(input.medium(0, 2_000)),
                    _ => Some(self.next_offset),
                };
                if offset == Some(self.next_offset) {
                    self.next_offset += body.len() as u64;
                }
                let header = TransferHeader {
                    body_len: body.len() as u32,
                    offset,
                    epoch: input.small(0, 12) as i32,
                    epoch_start: input.medium(0, 2_000),
                    confirm_offset: input.bool().then(|| input.medium(0, 2_000)),
                };
                self.socket.extend(header.encode());
                self.socket.extend(body);
            }
            3 => {
                let n = input.small(1, 200) as usize;
                let chunk: Vec<u8> = self.socket.drain(..n.min(self.socket.len())).collect();
                self.buf.extend_from_slice(&chunk);
                if !self.connected {
                    assert!(self.client.handle_input(self.now, &mut self.buf).is_err());
                    self.buf.clear();
                    return;
                }
                if self.client.handle_input(self.now, &mut self.buf).is_err() {
                    assert!(self.client.handle_input(self.now, &mut self.buf).is_err());
                    self.lost_connection();
                }
                // A read that changed the epoch list announced it: apply what it produced.
                if self.client.epochs() != &self.announced {
                    self.apply_events(false);
                    assert_eq!(self.client.epochs(), &self.announced, "unannounced epochs");
                }
            }
            4 => {
                let dial_ok = input.bool();
                self.apply_events(dial_ok);
            }
            5 => {
                self.now += Duration::from_millis(input.medium(0, 30_000));
                if self.client.handle_timeout(self.now).is_err() {
                    self.lost_connection();
                }
            }
            6 => {
                if let Some(out) = self.client.poll_transmit(self.now) {
                    let bytes = out.as_bytes();
                    if !self.handshake_seen {
                        assert_eq!(bytes.len(), 16, "the handshake comes first");
                        assert_eq!(&bytes[..4], &[0, 0, 0, 1]);
                        self.handshake_seen = true;
                    } else {
                        assert_eq!(bytes.len(), 12);
                        let mut v = [0u8; 8];
                        v.copy_from_slice(&bytes[4..]);
                        assert_eq!(i64::from_be_bytes(v) as u64, self.client.stored_offset());
                    }
                    self.client
                        .handle_written(self.now, bytes.len())
                        .expect("whole write");
                }
            }
            7 => {
                self.client.handle_disconnected(self.now);
                if self.connected {
                    self.lost_connection();
                }
            }
            _ => {
                // A stray second answer during transfer is a state mismatch, never a panic.
                let answer = MasterHandshake {
                    max_offset: 0,
                    epochs: EpochList::new(),
                };
                self.socket.extend(answer.encode());
            }
        }
    }

    fn check(&self) {
        let entries = self.client.epochs().entries().to_vec();
        assert!(EpochList::from_entries(entries).is_ok(), "ascending epochs");
        if let Some(c) = self.client.confirm_offset() {
            assert!(c <= self.client.stored_offset(), "confirm {c} above stored");
        }
        assert!(self.client.stored_offset() <= self.log.max_offset());
    }
}

/// Runs one `autoswitch_client` program; panics on a violated property.
pub fn autoswitch_client(data: &[u8]) {
    let mut input = Input::new(data);
    let t0 = Instant::now();
    let max_frame = match input.u8() % 3 {
        0 => 64 + input.small(0, 255) as u32,
        1 => 1 << 16,
        _ => 4 << 20,
    };
    let config = Config::builder()
        .max_frame_size(max_frame)
        .transfer_batch_size(1)
        .build()
        .expect("valid configuration");
    let identity = SlaveIdentity {
        broker_id: i64::from(input.u8()),
        sync_from_last_file: input.bool(),
        async_learner: input.bool(),
    };
    let local = epochs(&mut input, 4, 200);
    let mut log = MemoryLog::new(1 << 20);
    if let Some(last) = local.last() {
        let len = last.start + input.medium(0, 400);
        log.push(vec![0xA5; len as usize]);
    }
    let client = Client::new(config, identity, local.clone(), input.u64(), t0);
    let mut h = Harness {
        client,
        log,
        now: t0,
        socket: VecDeque::new(),
        buf: BytesMut::new(),
        connected: false,
        appended_this_connection: false,
        handshake_seen: false,
        next_offset: 0,
        announced: local,
    };
    let mut steps = 0;
    while !input.is_empty() && steps < 2_000 {
        steps += 1;
        h.step(&mut input);
        h.check();
    }
}
