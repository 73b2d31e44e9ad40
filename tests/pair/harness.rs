//! A master and one slave wired back to back in memory: the real machines, virtual time, no
//! sockets. Each direction is a byte pipe delivered in reads of at most `read_size` bytes, so a
//! test can choose any chunking, drop a direction (a partition) or inject a hostile peer's bytes.

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use rocketmq_ha::wire::{TransferHeader, TRANSFER_HEADER_LEN};
use rocketmq_ha::{
    ClientError, ClientEvent, Config, ConnectionId, HaClient, LogSink, LogSource, MasterConnection,
    MasterError, MasterService, MemoryLog, SyncCompletion,
};

/// Deterministic filler: byte `i` of the log is a function of `i` alone, so any two logs can be
/// compared by offset.
pub fn pattern(start: u64, len: usize) -> Vec<u8> {
    (start..start + len as u64)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 7)) as u8)
        .collect()
}

pub struct Pair {
    pub t0: Instant,
    pub now: Instant,
    pub config: Config,
    pub master_log: MemoryLog,
    pub slave_log: MemoryLog,
    pub service: MasterService,
    pub conn: Option<(ConnectionId, MasterConnection)>,
    pub client: HaClient,
    /// Bytes written by the master, not yet read by the slave.
    pub to_slave: Vec<u8>,
    /// Bytes written by the slave, not yet read by the master.
    pub to_master: Vec<u8>,
    /// The slave driver's input buffer.
    pub slave_buf: BytesMut,
    /// Largest read either side performs.
    pub read_size: usize,
    /// Drop everything the master writes (a one-way partition).
    pub drop_to_slave: bool,
    /// Drop everything the slave writes.
    pub drop_to_master: bool,
    /// Every byte the master ever wrote, across connections.
    pub master_wire: Vec<u8>,
    /// Every byte the slave ever wrote, across connections.
    pub slave_wire: Vec<u8>,
    pub master_errors: Vec<MasterError>,
    pub client_errors: Vec<ClientError>,
    pub completions: Vec<SyncCompletion>,
    pub connects: usize,
    /// What the slave said of a master that keeps closing it: (offset, closes in a row).
    pub rejections: Vec<(u64, u32)>,
}

impl Pair {
    pub fn new(config: Config, master_log: MemoryLog, slave_log: MemoryLog) -> Self {
        let t0 = Instant::now();
        Pair {
            t0,
            now: t0,
            config,
            master_log,
            slave_log,
            service: MasterService::new(config, t0),
            conn: None,
            client: HaClient::new(config, 42, t0),
            to_slave: Vec::new(),
            to_master: Vec::new(),
            slave_buf: BytesMut::new(),
            read_size: usize::MAX,
            drop_to_slave: false,
            drop_to_master: false,
            master_wire: Vec::new(),
            slave_wire: Vec::new(),
            master_errors: Vec::new(),
            client_errors: Vec::new(),
            completions: Vec::new(),
            connects: 0,
            rejections: Vec::new(),
        }
    }

    /// A pair whose master holds `len` pattern bytes in 1 MiB segments, run until the empty
    /// slave has all of them and acknowledged them: the starting point of most scenarios.
    pub fn caught_up_on(config: Config, len: usize) -> Self {
        let mut master = MemoryLog::new(1 << 20);
        master.push(pattern(0, len));
        let mut pair = Pair::new(config, master, MemoryLog::new(1 << 20));
        pair.run_until(Duration::from_secs(1), Pair::caught_up);
        pair
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Runs every machine until nothing moves at the current instant.
    pub fn settle(&mut self) {
        for _ in 0..1_000_000 {
            if !self.step() {
                return;
            }
        }
        panic!("no quiescence after a million steps");
    }

    /// Advances virtual time by `d` in increments that never skip a deadline, settling at each.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        self.settle();
        loop {
            let next = self.next_deadline().filter(|t| *t <= end).unwrap_or(end);
            self.now = next.max(self.now);
            self.fire_timers();
            self.settle();
            if self.now >= end {
                return;
            }
        }
    }

    /// Runs until `cond` holds, failing after `limit` of virtual time.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&Pair) -> bool) {
        let end = self.now + limit;
        self.settle();
        while !cond(self) {
            assert!(self.now < end, "condition not met within {limit:?}");
            let step = self
                .next_deadline()
                .filter(|t| *t <= end)
                .unwrap_or(end)
                .max(self.now + Duration::from_millis(1));
            self.now = step.min(end);
            self.fire_timers();
            self.settle();
        }
    }

    pub fn caught_up(&self) -> bool {
        self.slave_log.max_offset() == self.master_log.max_offset()
            && self
                .service
                .connections()
                .any(|id| self.service.ack_of(id) == Some(self.master_log.max_offset()))
    }

    fn next_deadline(&self) -> Option<Instant> {
        let conn = self.conn.as_ref().and_then(|(_, c)| c.poll_timeout());
        [
            conn,
            self.client.poll_timeout(),
            self.service.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        if let Some((_, conn)) = self.conn.as_mut() {
            if conn.poll_timeout().is_some_and(|t| t <= now) {
                if let Err(e) = conn.handle_timeout(now) {
                    self.master_closed(e);
                }
            }
        }
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            if let Err(e) = self.client.handle_timeout(now) {
                self.client_closed(e);
            }
        }
        self.service.handle_timeout(now);
    }

    /// The master side closed the connection: the socket goes away for both ends.
    fn master_closed(&mut self, e: MasterError) {
        self.master_errors.push(e);
        self.drop_connection();
        self.client.handle_disconnected(self.now);
    }

    fn client_closed(&mut self, e: ClientError) {
        self.client_errors.push(e);
        self.drop_connection();
    }

    /// Both ends of the socket are gone: in-flight bytes are lost, the master forgets the
    /// connection.
    pub fn drop_connection(&mut self) {
        if let Some((id, _)) = self.conn.take() {
            self.service.remove(id, self.now);
        }
        self.to_slave.clear();
        self.to_master.clear();
        self.slave_buf.clear();
    }

    /// One round of the drivers' loops; returns whether anything happened.
    fn step(&mut self) -> bool {
        let now = self.now;
        let mut progress = false;

        // Slave driver: events, then reports.
        while let Some(event) = self.client.poll_event() {
            progress = true;
            match event {
                ClientEvent::Connect => {
                    self.connects += 1;
                    let conn = MasterConnection::new(self.config, now);
                    let id = self.service.register(now);
                    // A connection starts clean: nothing of an older socket survives.
                    self.to_slave.clear();
                    self.to_master.clear();
                    self.slave_buf.clear();
                    self.conn = Some((id, conn));
                    self.client
                        .handle_connected(now, self.slave_log.max_offset());
                }
                ClientEvent::Append { offset, data } => {
                    let max = self
                        .slave_log
                        .append(offset, data)
                        .expect("the client only emits contiguous appends");
                    self.client.handle_appended(max);
                }
                ClientEvent::Rejected { offset, closes } => self.rejections.push((offset, closes)),
                other => panic!("unexpected client event {other:?}"),
            }
        }
        while let Some(report) = self.client.poll_transmit(now) {
            // The wire takes reports whole at once.
            self.client
                .handle_written(now, report.len())
                .expect("a report in flight");
            progress = true;
            self.slave_wire.extend_from_slice(&report);
            if !self.drop_to_master && self.conn.is_some() {
                self.to_master.extend_from_slice(&report);
            }
        }

        // Master driver: one read, events, transmits.
        if let Some((id, conn)) = self.conn.as_mut() {
            let id = *id;
            if !self.to_master.is_empty() {
                progress = true;
                let n = self.to_master.len().min(self.read_size);
                let chunk: Vec<u8> = self.to_master.drain(..n).collect();
                if let Err(e) = conn.handle_input(now, &chunk, &self.master_log) {
                    self.master_closed(e);
                    return true;
                }
            }
            let (_, conn) = self.conn.as_mut().expect("still connected");
            while let Some(event) = conn.poll_event() {
                progress = true;
                self.service.handle_event(id, now, &event);
            }
            match conn.poll_transmit(now, &self.master_log) {
                Err(e) => {
                    self.master_closed(e);
                    return true;
                }
                Ok(Some(mut transmit)) => {
                    progress = true;
                    while transmit.has_remaining() {
                        let chunk = transmit.chunk();
                        self.master_wire.extend_from_slice(chunk);
                        if !self.drop_to_slave {
                            self.to_slave.extend_from_slice(chunk);
                        }
                        let n = chunk.len();
                        transmit.advance(n);
                    }
                    conn.on_transmitted(now).expect("frame was in flight");
                }
                Ok(None) => {}
            }
        }
        while let Some(c) = self.service.poll_completion() {
            self.completions.push(c);
        }

        // Slave driver: one read.
        if self.client.is_connected() && !self.to_slave.is_empty() {
            progress = true;
            let n = self.to_slave.len().min(self.read_size);
            self.slave_buf.extend_from_slice(&self.to_slave[..n]);
            self.to_slave.drain(..n);
            if let Err(e) = self.client.handle_input(now, &mut self.slave_buf) {
                self.client_closed(e);
            }
        }
        progress
    }

    /// Bytes a hostile master would send, delivered to the slave as if from the socket.
    pub fn inject_to_slave(&mut self, bytes: &[u8]) {
        self.to_slave.extend_from_slice(bytes);
    }

    /// Bytes a hostile slave would send, delivered to the master as if from the socket.
    pub fn inject_to_master(&mut self, bytes: &[u8]) {
        self.to_master.extend_from_slice(bytes);
    }
}

/// Splits a master→slave byte stream into frame headers (for assertions on what was sent).
pub fn frames(wire: &[u8]) -> Vec<TransferHeader> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(Some(h)) = TransferHeader::peek(&wire[at..], u32::MAX) {
        out.push(h);
        at += TRANSFER_HEADER_LEN + h.body_len as usize;
        if at > wire.len() {
            break;
        }
    }
    out
}

/// Splits a slave→master byte stream into reports.
pub fn reports(mut wire: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    while wire.len() >= 8 {
        out.push(wire.get_u64());
    }
    out
}
