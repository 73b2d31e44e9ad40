//! A simulated network of TCP-like byte streams, itself sans-IO: the simulator asks it to read,
//! write, close and inject faults at a virtual time, and asks when something happens next.
//!
//! A link is one TCP connection between a slave and the master, with one pipe per direction.
//! A pipe keeps TCP's promises and nothing more: bytes arrive in order, without loss or
//! duplication, in whatever pieces the reader's reads return, at most `window` bytes are
//! unacknowledged (written and not yet read, plus window updates still travelling back), and
//! a close is seen by the peer after every byte written before it. Faults break exactly the
//! promises real networks break: delays (latency, jitter, holds, partitions), resets that lose
//! everything in flight, an EOF after an arbitrary prefix, and closes that never reach the peer
//! (a host that vanished, leaving a half-open connection).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use super::entropy::Entropy;
use super::scenario::Fault;
use super::trace::Trace;

/// One side of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum End {
    /// The slave's socket.
    Slave = 0,
    /// The master's accepted socket.
    Master = 1,
}

impl End {
    fn idx(self) -> usize {
        self as usize
    }

    fn other(self) -> End {
        match self {
            End::Slave => End::Master,
            End::Master => End::Slave,
        }
    }
}

/// The pipe a slave writes into.
pub const UP: usize = 0;
/// The pipe the master writes into.
pub const DOWN: usize = 1;

/// What a read returned.
#[derive(Debug)]
pub enum Read {
    /// Some bytes (never empty).
    Data(Bytes),
    /// Nothing now; try again after the next event.
    WouldBlock,
    /// The peer closed (or a middlebox faked it) and every byte before was read.
    Eof,
    /// The connection was reset.
    Reset,
}

/// What a write returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    /// This many bytes (at least 1) were accepted.
    Written(usize),
    /// The window is full or the socket is not writable yet.
    WouldBlock,
    /// Reset, or the peer closed: the connection is finished.
    Broken,
}

/// The network's fixed characteristics for a run.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// One-way base latency.
    pub latency: Duration,
    /// Extra random latency per write, up to this much (order is still preserved).
    pub jitter: Duration,
    /// The most bytes unacknowledged per direction (socket buffers plus the wire).
    pub window: usize,
    /// The most bytes one read returns.
    pub max_read: usize,
    /// Reads return an arbitrary number of the available bytes.
    pub short_reads: bool,
    /// Writes accept an arbitrary prefix and then block briefly.
    pub short_writes: bool,
}

#[derive(Debug, Clone, Copy)]
struct Fin {
    at: Duration,
    /// The peer really closed (writes back to it then fail), as opposed to a faked EOF.
    real: bool,
}

#[derive(Debug, Default)]
struct Pipe {
    segments: VecDeque<(Duration, Bytes)>,
    segment_bytes: usize,
    received: VecDeque<Bytes>,
    received_bytes: usize,
    /// Window updates travelling back to the writer: (arrival, bytes).
    unacked: VecDeque<(Duration, usize)>,
    unacked_bytes: usize,
    last_at: Duration,
    held_until: Duration,
    fin: Option<Fin>,
    /// Nothing is ever delivered again (the reader is gone, or the link was reset).
    dead: bool,
}

impl Pipe {
    fn deliver(&mut self, now: Duration, blocked_until: Duration) {
        if self.dead || now < self.held_until || now < blocked_until {
            return;
        }
        while let Some((at, _)) = self.segments.front() {
            if *at > now {
                break;
            }
            let (_, data) = self.segments.pop_front().expect("front exists");
            self.segment_bytes -= data.len();
            self.received_bytes += data.len();
            self.received.push_back(data);
        }
    }

    fn take_acks(&mut self, now: Duration) {
        while let Some(&(at, n)) = self.unacked.front() {
            if at > now {
                break;
            }
            self.unacked.pop_front();
            self.unacked_bytes -= n;
        }
    }

    fn used(&self) -> usize {
        self.segment_bytes + self.received_bytes + self.unacked_bytes
    }

    fn clear(&mut self) {
        self.segments.clear();
        self.segment_bytes = 0;
        self.received.clear();
        self.received_bytes = 0;
        self.unacked.clear();
        self.unacked_bytes = 0;
    }

    fn next_event(&self, now: Duration, blocked_until: Duration) -> Option<Duration> {
        if self.dead {
            return None;
        }
        let gate = self.held_until.max(blocked_until);
        let delivery = match self.segments.front() {
            Some((at, _)) => Some((*at).max(gate)),
            None => self.fin.map(|f| f.at.max(gate)),
        };
        let ack = self.unacked.front().map(|(at, _)| *at);
        delivery.into_iter().chain(ack).filter(|t| *t > now).min()
    }
}

#[derive(Debug, Default)]
struct EndState {
    closed: bool,
    reset_at: Option<Duration>,
    write_ready_at: Duration,
}

/// One TCP connection between slave `slave` and master instance `instance`.
#[derive(Debug)]
pub struct Link {
    /// Unique for the run.
    pub id: u64,
    /// The slave's index.
    pub slave: usize,
    /// Which incarnation of the master accepted it.
    pub instance: u64,
    /// The node on the master's end, when masters change (the switch runs): a partition of
    /// that node blocks the link too. `None` in the classic runs, whose master is never cut.
    pub master_node: Option<usize>,
    pipes: [Pipe; 2],
    ends: [EndState; 2],
}

/// All links, plus partitions between the master and each slave (in the switch runs: of each
/// node from every other).
#[derive(Debug)]
pub struct Net {
    config: NetConfig,
    links: BTreeMap<u64, Link>,
    next_id: u64,
    /// Per node, per pipe: nothing crosses before this time (a partition). `[UP]` holds what
    /// the node sends, `[DOWN]` what it receives (as a slave's pipes are named); see
    /// [`gate`].
    blocked: Vec<[Duration; 2]>,
}

impl Net {
    /// Injects the network fault `kind` (a held pipe, a partition, a reset, an EOF), drawn the
    /// same way in classic and switch runs, on `link` or on one of `nodes`' links; `hold_max`
    /// bounds how long a pipe holds, `long` a partition. Returns whether `kind` was a network
    /// fault (others are the caller's).
    #[allow(clippy::too_many_arguments)] // each is one of the fault's inputs
    pub fn inject_fault(
        &mut self,
        kind: Fault,
        link: Option<u64>,
        nodes: u64,
        hold_max: Duration,
        long: Duration,
        now: Duration,
        entropy: &mut Entropy,
        trace: &mut Trace,
    ) -> bool {
        match kind {
            Fault::Burst => {
                if let Some(link) = link {
                    let pipe = entropy.below(2) as usize;
                    let d = entropy.log_duration(Duration::from_millis(1), hold_max);
                    trace.line(
                        now,
                        format_args!("fault: link {link} pipe {pipe} holds for {d:?}"),
                    );
                    self.hold(link, pipe, now + d);
                }
            }
            Fault::PartitionOneWay | Fault::PartitionTwoWay => {
                let node = entropy.below(nodes) as usize;
                let d = entropy.log_duration(Duration::from_millis(1), long);
                let pipes: &[usize] = if kind == Fault::PartitionTwoWay {
                    &[UP, DOWN]
                } else if entropy.chance(500) {
                    &[DOWN]
                } else {
                    &[UP]
                };
                trace.line(
                    now,
                    format_args!("fault: partition node {node} pipes {pipes:?} for {d:?}"),
                );
                for &pipe in pipes {
                    self.partition(node, pipe, now + d);
                }
            }
            Fault::Reset => {
                if let Some(link) = link {
                    trace.line(now, format_args!("fault: reset link {link}"));
                    self.reset(link, now, entropy);
                }
            }
            Fault::Eof => {
                if let Some(link) = link {
                    let pipe = entropy.below(2) as usize;
                    let kept = self.inject_eof(link, pipe, now, entropy);
                    trace.line(
                        now,
                        format_args!(
                            "fault: EOF on link {link} pipe {pipe} after (kept, in flight) {kept:?}"
                        ),
                    );
                }
            }
            _ => return false,
        }
        true
    }

    /// A network for `slaves` slaves.
    pub fn new(config: NetConfig, slaves: usize) -> Self {
        Net {
            config,
            links: BTreeMap::new(),
            next_id: 0,
            blocked: vec![[Duration::ZERO; 2]; slaves],
        }
    }

    /// The network's characteristics.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// Opens a link (the connect succeeded at both ends).
    pub fn open(&mut self, slave: usize, instance: u64) -> u64 {
        self.open_between(slave, None, instance)
    }

    /// Opens a link from node `slave` to the master on node `master_node` (`None`: the classic
    /// runs' master, which no partition cuts).
    pub fn open_between(&mut self, slave: usize, master_node: Option<usize>, instance: u64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.links.insert(
            id,
            Link {
                id,
                slave,
                instance,
                master_node,
                pipes: Default::default(),
                ends: Default::default(),
            },
        );
        id
    }

    /// Whether `end` of link `id` is closed (or the link is gone).
    pub fn is_closed(&self, id: u64, end: End) -> bool {
        self.links.get(&id).is_none_or(|l| l.ends[end.idx()].closed)
    }

    /// Every link, in id order.
    pub fn links(&self) -> impl Iterator<Item = &Link> {
        self.links.values()
    }

    fn latency(&self, entropy: &mut Entropy) -> Duration {
        self.config.latency + entropy.duration(Duration::ZERO, self.config.jitter)
    }

    /// Reads at most `room` bytes (the reader's buffer) from link `id` at `end`.
    pub fn read(
        &mut self,
        id: u64,
        end: End,
        now: Duration,
        entropy: &mut Entropy,
        room: usize,
    ) -> Read {
        let latency = self.latency(entropy);
        let (max_read, short) = (
            self.config.max_read.min(room.max(1)),
            self.config.short_reads,
        );
        let Some(link) = self.links.get_mut(&id) else {
            return Read::Reset;
        };
        let blocked = gate(&self.blocked, link, end.other().idx());
        let state = &link.ends[end.idx()];
        if state.closed || state.reset_at.is_some_and(|t| t <= now) {
            return Read::Reset;
        }
        let pipe = &mut link.pipes[end.other().idx()];
        pipe.deliver(now, blocked);
        if pipe.received_bytes > 0 {
            let limit = max_read.min(pipe.received_bytes);
            // A zero draw reads everything available: short reads are the fault, not the norm.
            let n = if short {
                limit - entropy.below(limit as u64) as usize
            } else {
                limit
            };
            let data = take(&mut pipe.received, n);
            pipe.received_bytes -= n;
            pipe.unacked.push_back((now + latency, n));
            pipe.unacked_bytes += n;
            return Read::Data(data);
        }
        let gate = pipe.held_until.max(blocked);
        match pipe.fin {
            Some(fin) if pipe.segments.is_empty() && fin.at <= now && gate <= now => Read::Eof,
            _ => Read::WouldBlock,
        }
    }

    /// Writes a prefix of `data` to link `id` from `end`.
    pub fn write(
        &mut self,
        id: u64,
        end: End,
        now: Duration,
        data: &[u8],
        entropy: &mut Entropy,
    ) -> Write {
        debug_assert!(!data.is_empty());
        let latency = self.latency(entropy);
        let (window, short) = (self.config.window, self.config.short_writes);
        let Some(link) = self.links.get_mut(&id) else {
            return Write::Broken;
        };
        let state = &link.ends[end.idx()];
        if state.closed || state.reset_at.is_some_and(|t| t <= now) {
            return Write::Broken;
        }
        // The peer really closed and we have seen it: writing now gets EPIPE.
        let incoming = &link.pipes[end.other().idx()];
        if incoming
            .fin
            .is_some_and(|f| f.real && f.at <= now && incoming.segments.is_empty())
        {
            return Write::Broken;
        }
        if now < state.write_ready_at {
            return Write::WouldBlock;
        }
        let pipe = &mut link.pipes[end.idx()];
        pipe.take_acks(now);
        let room = window.saturating_sub(pipe.used());
        if room == 0 {
            return Write::WouldBlock;
        }
        let mut n = data.len().min(room);
        if short {
            n -= entropy.below(n as u64) as usize;
            if n < data.len() {
                link.ends[end.idx()].write_ready_at =
                    now + entropy.duration(Duration::ZERO, Duration::from_micros(300));
            }
        }
        let pipe = &mut link.pipes[end.idx()];
        if pipe.fin.is_some() {
            // After a faked EOF the middlebox swallows everything.
            return Write::Written(n);
        }
        let at = pipe.last_at.max(now + latency);
        pipe.last_at = at;
        pipe.segments
            .push_back((at, Bytes::copy_from_slice(&data[..n])));
        pipe.segment_bytes += n;
        Write::Written(n)
    }

    /// `end` closes its socket. Unless `lost`, the peer reads EOF after everything written
    /// before; if `lost` (the host vanished) the peer never hears of it.
    pub fn close(&mut self, id: u64, end: End, now: Duration, lost: bool, entropy: &mut Entropy) {
        let latency = self.latency(entropy);
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        link.ends[end.idx()].closed = true;
        // Bytes towards a closed socket are discarded; the peer's window fills or it gets EPIPE.
        let incoming = &mut link.pipes[end.other().idx()];
        incoming.clear();
        incoming.dead = true;
        let outgoing = &mut link.pipes[end.idx()];
        if !lost && outgoing.fin.is_none() {
            outgoing.fin = Some(Fin {
                at: outgoing.last_at.max(now + latency),
                real: true,
            });
        }
        if link.ends.iter().all(|e| e.closed) {
            self.links.remove(&id);
        }
    }

    /// The connection is reset: everything in flight is lost and both ends see an error after
    /// a latency.
    pub fn reset(&mut self, id: u64, now: Duration, entropy: &mut Entropy) {
        let at = [self.latency(entropy), self.latency(entropy)];
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        for pipe in &mut link.pipes {
            pipe.clear();
            pipe.dead = true;
        }
        for (end, delay) in link.ends.iter_mut().zip(at) {
            if end.reset_at.is_none() {
                end.reset_at = Some(now + delay);
            }
        }
    }

    /// The pipe `pipe` of link `id` delivers a random prefix of what is in flight and then an
    /// EOF; later writes into it vanish. Returns how many in-flight bytes were kept.
    pub fn inject_eof(
        &mut self,
        id: u64,
        pipe: usize,
        now: Duration,
        entropy: &mut Entropy,
    ) -> Option<(usize, usize)> {
        let latency = self.latency(entropy);
        let link = self.links.get_mut(&id)?;
        let p = &mut link.pipes[pipe];
        if p.dead || p.fin.is_some() {
            return None;
        }
        let total = p.segment_bytes;
        let mut keep = entropy.below(total as u64 + 1) as usize;
        let kept = keep;
        let mut segments = VecDeque::new();
        for (at, mut data) in p.segments.drain(..) {
            if keep == 0 {
                break;
            }
            data.truncate(keep);
            keep -= data.len();
            segments.push_back((at, data));
        }
        p.segments = segments;
        p.segment_bytes = kept;
        let last = p.segments.back().map_or(now, |(at, _)| *at);
        p.fin = Some(Fin {
            at: last.max(now + latency),
            real: false,
        });
        Some((kept, total))
    }

    /// Pipe `pipe` of link `id` holds everything until `until`, then delivers it at once.
    pub fn hold(&mut self, id: u64, pipe: usize, until: Duration) {
        if let Some(link) = self.links.get_mut(&id) {
            let p = &mut link.pipes[pipe];
            p.held_until = p.held_until.max(until);
        }
    }

    /// Nothing crosses pipe `pipe` between the master and `slave` before `until`; connects
    /// between them are lost meanwhile.
    pub fn partition(&mut self, slave: usize, pipe: usize, until: Duration) {
        let b = &mut self.blocked[slave][pipe];
        *b = (*b).max(until);
    }

    /// Whether a partition separates `slave` from the master (in either direction) at `now`.
    pub fn is_partitioned(&self, slave: usize, now: Duration) -> bool {
        self.blocked[slave].iter().any(|&until| until > now)
    }

    /// Whether node `node` is cut off in both directions at `now` (nothing it sends or should
    /// receive crosses).
    pub fn is_isolated(&self, node: usize, now: Duration) -> bool {
        self.blocked[node].iter().all(|&until| until > now)
    }

    /// Faults stop: holds and partitions end now, short reads and writes stop. Latency and
    /// jitter stay (they are the network, not a fault of it).
    pub fn heal(&mut self) {
        self.config.short_reads = false;
        self.config.short_writes = false;
        for b in &mut self.blocked {
            *b = [Duration::ZERO; 2];
        }
        for link in self.links.values_mut() {
            for p in &mut link.pipes {
                p.held_until = Duration::ZERO;
            }
            for e in &mut link.ends {
                e.write_ready_at = Duration::ZERO;
            }
        }
    }

    /// The next time anything happens on the network after `now`.
    pub fn next_event(&self, now: Duration) -> Option<Duration> {
        let mut next: Option<Duration> = None;
        let mut consider = |t: Option<Duration>| {
            if let Some(t) = t.filter(|t| *t > now) {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for link in self.links.values() {
            for (i, pipe) in link.pipes.iter().enumerate() {
                consider(pipe.next_event(now, gate(&self.blocked, link, i)));
            }
            for end in &link.ends {
                if !end.closed {
                    consider(end.reset_at);
                    consider(Some(end.write_ready_at));
                }
            }
        }
        next
    }

    /// Bytes written into pipe `pipe` of link `id` and not yet read.
    pub fn unread(&self, id: u64, pipe: usize) -> usize {
        self.links.get(&id).map_or(0, |l| {
            l.pipes[pipe].segment_bytes + l.pipes[pipe].received_bytes
        })
    }
}

/// When pipe `pipe` of `link` may deliver again: the slave's side of the partition, and in the
/// switch runs the master node's (what the slave sends is what the master receives).
fn gate(blocked: &[[Duration; 2]], link: &Link, pipe: usize) -> Duration {
    let slave_side = blocked[link.slave][pipe];
    match link.master_node {
        Some(m) => slave_side.max(blocked[m][1 - pipe]),
        None => slave_side,
    }
}

/// Takes exactly `n` bytes off the front of `queue` (zero-copy when one chunk suffices).
fn take(queue: &mut VecDeque<Bytes>, n: usize) -> Bytes {
    let front = queue.front_mut().expect("enough bytes queued");
    if front.len() > n {
        return front.split_to(n);
    }
    if front.len() == n {
        return queue.pop_front().expect("front exists");
    }
    let mut out = BytesMut::with_capacity(n);
    while out.len() < n {
        let front = queue.front_mut().expect("enough bytes queued");
        let want = n - out.len();
        if front.len() > want {
            out.extend_from_slice(&front[..want]);
            front.advance(want);
        } else {
            out.extend_from_slice(front);
            queue.pop_front();
        }
    }
    out.freeze()
}
