//! The drivers: each node runs the real machines exactly as a transport would (the loops in the
//! crate's docs): feed an input, drain events and transmits, and sleep until the next deadline
//! or I/O. Only the socket is simulated.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use rocketmq_ha::{
    ClientError, ClientEvent, Config, ConnectionId, HaClient, LogError, LogSink, LogSource,
    MasterConnection, MasterError, MasterEvent, MasterService, MemoryLog, Ticket, Transmit,
};

use super::check::{self, fail, Check, ServiceModel};
use super::entropy::Entropy;
use super::history::History;
use super::net::{End, Net, Read, Write};
use super::scenario::Params;
use super::trace::Trace;

/// More output than this from one input means a machine is stuck producing it.
const OUTPUT_BOUND: usize = 1000;

/// Node times sit this far after the epoch, so skews and backward jumps never underflow.
const BASE: Duration = Duration::from_secs(1_000_000);

/// Each node's clock: virtual time plus a per-node offset (skew and jumps).
#[derive(Debug, Clone)]
pub struct Clocks {
    epoch: Instant,
    /// Nanoseconds added to virtual time, per node (0 = master, 1.. = slaves).
    offsets: Vec<i64>,
    /// The latest time each node's machines were given: they clamp to it, so after a backward
    /// jump they see no time pass (and fire nothing) until the node's clock is back there.
    latest: Vec<Cell<Duration>>,
}

impl Clocks {
    /// Clocks for `nodes` nodes, all in step.
    pub fn new(epoch: Instant, nodes: usize) -> Self {
        Clocks {
            epoch,
            offsets: vec![0; nodes],
            latest: vec![Cell::new(Duration::ZERO); nodes],
        }
    }

    /// Node `node`'s time at virtual time `now`, as a duration since the epoch.
    pub fn node_time(&self, node: usize, now: Duration) -> Duration {
        let t = (BASE + now).as_nanos() as i128 + i128::from(self.offsets[node]);
        Duration::from_nanos(t.max(0) as u64)
    }

    /// Node `node`'s `Instant` at virtual time `now`.
    pub fn instant(&self, node: usize, now: Duration) -> Instant {
        let t = self.node_time(node, now);
        let latest = &self.latest[node];
        latest.set(latest.get().max(t));
        self.epoch + t
    }

    /// The epoch all node instants count from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The latest time node `node`'s machines were given, since the epoch.
    pub fn latest(&self, node: usize) -> Duration {
        self.latest[node].get()
    }

    /// How far node `node`'s machines are ahead of its clock at `now` (after backward jumps).
    pub fn debt(&self, node: usize, now: Duration) -> Duration {
        self.latest[node]
            .get()
            .saturating_sub(self.node_time(node, now))
    }

    /// The virtual time at which node `node`'s clock shows `at`.
    pub fn to_virtual(&self, node: usize, at: Instant) -> Duration {
        let since = at.saturating_duration_since(self.epoch).as_nanos() as i128;
        let v = since - i128::from(self.offsets[node]) - BASE.as_nanos() as i128;
        Duration::from_nanos(v.max(0) as u64)
    }

    /// Shifts node `node`'s clock by `delta` nanoseconds (a jump; negative goes backwards).
    pub fn jump(&mut self, node: usize, delta: i64) {
        self.offsets[node] += delta;
    }

    /// Node `node`'s offset in nanoseconds.
    pub fn offset(&self, node: usize) -> i64 {
        self.offsets[node]
    }
}

/// A connect in progress: it completes (or is refused) at `at`.
#[derive(Debug, Clone)]
pub struct Dial {
    /// Unique for the run.
    pub id: u64,
    /// Who dials.
    pub slave: usize,
    /// When the outcome is known.
    pub at: Duration,
    /// Whether the master's side accepts (if it is up and reachable then).
    pub accept: bool,
}

/// What the drivers borrow from the simulator for one step.
pub struct Ctx<'a> {
    /// Virtual time.
    pub now: Duration,
    /// The run's parameters.
    pub p: &'a Params,
    /// Every decision.
    pub entropy: &'a mut Entropy,
    /// The network.
    pub net: &'a mut Net,
    /// The trace.
    pub trace: &'a mut Trace,
    /// The master's history, for the prefix check.
    pub history: &'a History,
    /// Node clocks.
    pub clocks: &'a Clocks,
    /// Connects in progress.
    pub dials: &'a mut Vec<Dial>,
    /// The next dial id.
    pub next_dial: &'a mut u64,
    /// Faults are on (before the heal).
    pub faulty: bool,
    /// The quiet phase after catch-up: live connections must stay up.
    pub idle: bool,
}

macro_rules! tr {
    ($cx:expr, $($fmt:tt)+) => {
        $cx.trace.line($cx.now, format_args!($($fmt)+))
    };
}
pub(crate) use tr;

impl Ctx<'_> {
    fn fault(&self, fault: super::scenario::Fault) -> bool {
        self.faulty && self.p.faults.has(fault)
    }

    /// Event loops wake up spuriously: now and then a driver calls `handle_timeout` before
    /// any deadline, which must change nothing.
    pub fn spurious_wakeup(&mut self) -> bool {
        self.entropy.chance(20)
    }

    /// Whether a close is lost on the way (the Zombie fault).
    pub fn lose_close(&mut self, per_mille: u64) -> bool {
        self.fault(super::scenario::Fault::Zombie) && self.entropy.chance(per_mille)
    }
}

// ---------------------------------------------------------------------------------------------
// Slave
// ---------------------------------------------------------------------------------------------

/// A slave: an [`HaClient`], its log, and the driver state a transport would keep.
#[derive(Debug)]
pub struct SlaveNode {
    /// The slave's index.
    pub index: usize,
    /// Its durable log (survives crashes).
    pub log: MemoryLog,
    /// The machine (replaced on restart).
    pub client: HaClient,
    /// The current connection.
    pub link: Option<u64>,
    inbuf: BytesMut,
    /// The report being written (partially, on short writes).
    out: Vec<u8>,
    /// The newest report not yet started: reports are absolute offsets, so a newer one replaces
    /// an older one still waiting for the socket.
    queued: Option<[u8; 8]>,
    /// The dial in progress and when the driver gives up on it.
    pub dialing: Option<(u64, Duration)>,
    /// Appends waiting for a slow disk: (done at, offset, data).
    appends: VecDeque<(Duration, u64, Bytes)>,
    append_bytes: usize,
    /// The oldest history version consistent with this log (see `check.rs`).
    pub version: usize,
    /// The highest max offset this slave ever stored.
    pub stored_ever: u64,
    last_report: Option<u64>,
    /// Whether the current connection delivered a whole, valid frame (the back-off resets).
    link_had_frame: bool,
    /// The latest time handed to the current client.
    client_clock: Cell<Instant>,
    /// Connections this slave lost or closed.
    pub disconnects: u64,
    /// Crashed and not yet restarted.
    pub crashed: bool,
    /// Frozen until then (a stall).
    pub paused_until: Duration,
    config: Config,
}

impl SlaveNode {
    /// A slave with `log`, whose machine starts at virtual time `now`.
    pub fn new(index: usize, log: MemoryLog, config: Config, seed: u64, now: Instant) -> Self {
        let stored_ever = log.max_offset();
        SlaveNode {
            index,
            log,
            client: HaClient::new(config, seed, now),
            link: None,
            inbuf: BytesMut::new(),
            out: Vec::new(),
            queued: None,
            dialing: None,
            appends: VecDeque::new(),
            append_bytes: 0,
            version: 0,
            stored_ever,
            last_report: None,
            link_had_frame: false,
            client_clock: Cell::new(now),
            disconnects: 0,
            crashed: false,
            paused_until: Duration::ZERO,
            config,
        }
    }

    fn node(&self) -> usize {
        self.index + 1
    }

    /// The node's time now; every time handed to the client comes from here, so
    /// `client_clock` is the client's own (clamped) clock.
    fn now(&self, cx: &Ctx<'_>) -> Instant {
        let now = cx.clocks.instant(self.node(), cx.now);
        self.client_clock.set(self.client_clock.get().max(now));
        now
    }

    /// Bytes of appends waiting for the disk.
    pub fn pending_appends(&self) -> usize {
        self.appends.len()
    }

    /// The next virtual time this slave has something to do.
    pub fn next_event(&self, clocks: &Clocks, now: Duration) -> Option<Duration> {
        if self.crashed {
            return None;
        }
        if self.paused_until > now {
            return Some(self.paused_until);
        }
        let timer = self
            .client
            .poll_timeout()
            .map(|t| clocks.to_virtual(self.node(), t));
        let append = self.appends.front().map(|a| a.0);
        let give_up = self.dialing.map(|d| d.1);
        [timer, append, give_up]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min()
    }

    /// One turn of the driver loop.
    pub fn poll(&mut self, cx: &mut Ctx<'_>) -> Check {
        if self.crashed || cx.now < self.paused_until {
            return Ok(());
        }
        self.drain(cx)?;
        if let Some((id, give_up)) = self.dialing {
            if give_up <= cx.now {
                tr!(
                    cx,
                    "slave {} gives up dial {id} (connect timeout)",
                    self.index
                );
                self.connect_failed(cx)?;
            }
        }
        self.read(cx)?;
        let now = self.now(cx);
        if self.client.poll_timeout().is_some_and(|t| t <= now) || cx.spurious_wakeup() {
            if let Err(e) = self.client.handle_timeout(now) {
                self.client_error(cx, e)?;
            }
            self.drain(cx)?;
        }
        self.flush(cx)?;
        check::deadline_in_future(
            &format!("slave {} client", self.index),
            self.client.poll_timeout(),
            self.now(cx),
        )
    }

    /// Drains events and reports after an input (steps 1-2 of the client's loop).
    fn drain(&mut self, cx: &mut Ctx<'_>) -> Check {
        for rounds in 0.. {
            if rounds > OUTPUT_BOUND * 1000 {
                return Err(fail(
                    "machine_output_is_finite",
                    format!("slave {} keeps producing output", self.index),
                ));
            }
            let mut progressed = false;
            while let Some(event) = self.client.poll_event() {
                progressed = true;
                match event {
                    ClientEvent::Connect => self.dial(cx),
                    ClientEvent::Append { offset, data } => {
                        // Every append goes through the disk queue, so they stay in order; a
                        // slow disk makes them wait.
                        let delay = if cx.fault(super::scenario::Fault::SlowAppend) {
                            cx.entropy
                                .log_duration(Duration::from_micros(1), cx.p.disk_latency)
                        } else {
                            Duration::ZERO
                        };
                        let last = self.appends.back().map_or(Duration::ZERO, |a| a.0);
                        self.append_bytes += data.len();
                        self.appends
                            .push_back((last.max(cx.now + delay), offset, data));
                    }
                    other => {
                        return Err(fail(
                            "client_event_is_known",
                            format!("unexpected {other:?}"),
                        ))
                    }
                }
            }
            progressed |= self.apply_appends(cx, false)?;
            let now = self.now(cx);
            let mut reports = 0;
            while let Some(report) = self.client.poll_transmit(now) {
                progressed = true;
                reports += 1;
                if reports > OUTPUT_BOUND {
                    return Err(fail(
                        "machine_output_is_finite",
                        format!(
                            "slave {} keeps producing reports at one instant",
                            self.index
                        ),
                    ));
                }
                let value = u64::from_be_bytes(report);
                check::report_is_monotonic_and_stored(
                    self.index,
                    self.last_report,
                    value,
                    self.log.max_offset(),
                )?;
                self.last_report = Some(value);
                self.queued = Some(report);
            }
            if !progressed {
                break;
            }
        }
        self.flush(cx)
    }

    fn dial(&mut self, cx: &mut Ctx<'_>) {
        debug_assert!(self.link.is_none(), "dialing while connected");
        let id = *cx.next_dial;
        *cx.next_dial += 1;
        let net = cx.net.config();
        let mut at = cx.now + (net.latency + cx.entropy.duration(Duration::ZERO, net.jitter)) * 2;
        if cx.fault(super::scenario::Fault::SlowConnect) && cx.entropy.chance(500) {
            at += cx
                .entropy
                .log_duration(Duration::from_millis(1), self.config.connect_timeout() * 2);
        }
        let accept = !(cx.fault(super::scenario::Fault::RefuseConnect) && cx.entropy.chance(500));
        cx.dials.push(Dial {
            id,
            slave: self.index,
            at,
            accept,
        });
        self.dialing = Some((id, cx.now + self.config.connect_timeout()));
        tr!(cx, "slave {} dials ({id})", self.index);
    }

    /// The machine's first action (a dial) is drained at the start of the run.
    pub fn start(&mut self, cx: &mut Ctx<'_>) -> Check {
        self.drain(cx)
    }

    /// The dial `id` connected as link `link` (step 1 of the loop: `handle_connected`).
    pub fn connected(&mut self, cx: &mut Ctx<'_>, link: u64) -> Check {
        // The client's contract: apply or drop pending appends before `handle_connected`, which
        // takes the log's max offset.
        if !self.appends.is_empty() {
            if cx.entropy.chance(500) {
                tr!(
                    cx,
                    "slave {} drops {} pending appends",
                    self.index,
                    self.appends.len()
                );
                self.appends.clear();
                self.append_bytes = 0;
            } else {
                self.apply_appends(cx, true)?;
            }
        }
        self.dialing = None;
        self.link = Some(link);
        self.inbuf.clear();
        self.out.clear();
        self.queued = None;
        self.last_report = None;
        self.link_had_frame = false;
        let stored = self.log.max_offset();
        tr!(
            cx,
            "slave {} connected link {link}, stored {stored}",
            self.index
        );
        self.client.handle_connected(self.now(cx), stored);
        self.drain(cx)
    }

    /// The dial failed (refused, or the driver's connect timeout passed).
    pub fn connect_failed(&mut self, cx: &mut Ctx<'_>) -> Check {
        self.dialing = None;
        self.client.handle_connect_failed(self.now(cx));
        self.link_had_frame = false;
        self.check_backoff()?;
        self.drain(cx)
    }

    fn apply(&mut self, cx: &mut Ctx<'_>, offset: u64, data: Bytes) -> Check {
        check::append_is_contiguous(self.index, &self.log, offset)?;
        let max = self
            .log
            .append(offset, data.clone())
            .map_err(|e| fail("append_is_contiguous", format!("slave {}: {e}", self.index)))?;
        check::slave_log_is_history_prefix(
            cx.history,
            self.index,
            &mut self.version,
            offset,
            &data,
        )?;
        tr!(cx, "slave {} appended [{offset}, {max})", self.index);
        self.stored_ever = self.stored_ever.max(max);
        self.client.handle_appended(max);
        Ok(())
    }

    /// Applies the appends the disk has finished (all of them if `all`); returns whether any
    /// was applied. The caller drains the machine afterwards.
    fn apply_appends(&mut self, cx: &mut Ctx<'_>, all: bool) -> Result<bool, super::check::Fail> {
        let mut applied = false;
        while let Some(front) = self.appends.front() {
            if !all && front.0 > cx.now {
                break;
            }
            let (_, offset, data) = self.appends.pop_front().expect("front exists");
            self.append_bytes -= data.len();
            self.apply(cx, offset, data)?;
            applied = true;
        }
        Ok(applied)
    }

    fn read(&mut self, cx: &mut Ctx<'_>) -> Check {
        let max_frame = self.config.max_frame_size();
        // A slow disk pushes back: stop reading while much is waiting to be appended.
        let backlog_limit = (max_frame as usize).max(64 * 1024) * 2;
        while let Some(link) = self.link {
            if self.append_bytes > backlog_limit {
                break;
            }
            match cx.net.read(link, End::Slave, cx.now, cx.entropy) {
                Read::Data(bytes) => {
                    self.inbuf.extend_from_slice(&bytes);
                    check::slave_buffer_bounded(
                        self.index,
                        self.inbuf.len(),
                        max_frame,
                        cx.p.max_read,
                        false,
                    )?;
                    let now = self.now(cx);
                    let before = self.inbuf.len();
                    let result = self.client.handle_input(now, &mut self.inbuf);
                    // Bytes split off the front are whole, valid frames.
                    self.link_had_frame |= self.inbuf.len() < before;
                    match result {
                        Ok(()) => check::slave_buffer_bounded(
                            self.index,
                            self.inbuf.len(),
                            max_frame,
                            cx.p.max_read,
                            true,
                        )?,
                        Err(e) => self.client_error(cx, e)?,
                    }
                    self.drain(cx)?;
                }
                Read::WouldBlock => break,
                Read::Eof | Read::Reset => {
                    tr!(cx, "slave {} link {link} ended by peer", self.index);
                    self.client.handle_disconnected(self.now(cx));
                    self.close(cx, false)?;
                    self.drain(cx)?;
                }
            }
        }
        Ok(())
    }

    fn client_error(&mut self, cx: &mut Ctx<'_>, e: ClientError) -> Check {
        tr!(cx, "slave {} closes: {e}", self.index);
        match e {
            ClientError::HousekeepingTimeout { .. } => {}
            other => {
                return Err(fail(
                    "client_error_is_expected",
                    format!("slave {}: {other}", self.index),
                ))
            }
        }
        self.close(cx, true)
    }

    fn close(&mut self, cx: &mut Ctx<'_>, may_lose: bool) -> Check {
        if cx.idle {
            return Err(fail(
                "idle_connections_stay_up",
                format!(
                    "slave {} lost its connection while idle and healthy",
                    self.index
                ),
            ));
        }
        self.check_backoff()?;
        if let Some(link) = self.link.take() {
            let lost = may_lose && cx.lose_close(200);
            cx.net.close(link, End::Slave, cx.now, lost, cx.entropy);
            if lost {
                tr!(cx, "slave {} close of link {link} is lost", self.index);
            }
        }
        self.inbuf.clear();
        self.out.clear();
        self.queued = None;
        self.disconnects += 1;
        Ok(())
    }

    /// §1.4: after a connection ends (or a dial fails) the machine waits before dialing again,
    /// at most the back-off ceiling, and at most the initial delay if the connection delivered
    /// a valid frame (progress resets the back-off).
    fn check_backoff(&self) -> Check {
        let Some(deadline) = self.client.poll_timeout() else {
            return Err(fail(
                "reconnect_is_backed_off",
                format!(
                    "slave {} has no reconnect deadline after a disconnect",
                    self.index
                ),
            ));
        };
        let delay = deadline.saturating_duration_since(self.client_clock.get());
        let bound = if self.link_had_frame {
            self.config.reconnect_backoff_initial()
        } else {
            self.config.reconnect_backoff_max()
        };
        if delay.is_zero() || delay > bound {
            return Err(fail(
                "reconnect_is_backed_off",
                format!(
                    "slave {} redials after {delay:?}, bound {bound:?} (connection delivered a frame: {})",
                    self.index, self.link_had_frame
                ),
            ));
        }
        Ok(())
    }

    fn flush(&mut self, cx: &mut Ctx<'_>) -> Check {
        while let Some(link) = self.link {
            if self.out.is_empty() {
                match self.queued.take() {
                    Some(report) => self.out.extend_from_slice(&report),
                    None => break,
                }
            }
            match cx
                .net
                .write(link, End::Slave, cx.now, &self.out, cx.entropy)
            {
                Write::Written(n) => {
                    self.out.drain(..n);
                }
                Write::WouldBlock => break,
                Write::Broken => {
                    tr!(cx, "slave {} write on link {link} failed", self.index);
                    self.client.handle_disconnected(self.now(cx));
                    self.close(cx, false)?;
                }
            }
        }
        Ok(())
    }

    /// The slave's process dies: machine state, pending appends and buffers are lost, the log
    /// stays. If `lost`, its host vanished and the master never hears the close.
    pub fn crash(&mut self, cx: &mut Ctx<'_>, lost: bool) {
        tr!(cx, "slave {} crashes (close lost: {lost})", self.index);
        if let Some(link) = self.link.take() {
            cx.net.close(link, End::Slave, cx.now, lost, cx.entropy);
        }
        self.crashed = true;
        self.appends.clear();
        self.append_bytes = 0;
        self.inbuf.clear();
        self.out.clear();
        self.queued = None;
        self.dialing = None;
        self.disconnects += 1;
    }

    /// The disk finishes every pending append now.
    pub fn flush_appends(&mut self, cx: &mut Ctx<'_>) -> Check {
        if self.apply_appends(cx, true)? {
            self.drain(cx)?;
        }
        Ok(())
    }

    /// The slave restarts from its stored log with a fresh machine.
    pub fn restart(&mut self, cx: &mut Ctx<'_>) -> Check {
        let seed = cx.entropy.seed();
        let now = cx.clocks.instant(self.node(), cx.now);
        self.client_clock.set(now);
        self.client = HaClient::new(self.config, seed, now);
        self.crashed = false;
        self.paused_until = Duration::ZERO;
        self.last_report = None;
        tr!(
            cx,
            "slave {} restarts with log [{}, {})",
            self.index,
            self.log.min_offset(),
            self.log.max_offset()
        );
        self.drain(cx)
    }

    /// The operator replaces a slave stranded below the master's retained range with an empty
    /// one (it can never catch up otherwise: the master refuses its request, §3.3).
    pub fn wipe(&mut self, cx: &mut Ctx<'_>) -> Check {
        tr!(
            cx,
            "operator wipes slave {} (log [{}, {}))",
            self.index,
            self.log.min_offset(),
            self.log.max_offset()
        );
        if !self.crashed {
            self.crash(cx, false);
        }
        self.log = MemoryLog::new(cx.p.segment_size);
        self.version = 0;
        self.restart(cx)
    }

    /// The connection broke from the slave's point of view (a local error) but the close never
    /// reaches the master: the master keeps a zombie connection while the slave dials again.
    pub fn abandon(&mut self, cx: &mut Ctx<'_>) -> Check {
        if let Some(link) = self.link.take() {
            tr!(cx, "slave {} abandons link {link} silently", self.index);
            cx.net.close(link, End::Slave, cx.now, true, cx.entropy);
            self.inbuf.clear();
            self.out.clear();
            self.queued = None;
            self.disconnects += 1;
            self.client.handle_disconnected(self.now(cx));
            self.check_backoff()?;
            self.drain(cx)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Master
// ---------------------------------------------------------------------------------------------

/// One accepted connection on the master.
#[derive(Debug)]
pub struct MasterConn {
    /// Its id in the service.
    pub id: ConnectionId,
    /// Which slave dialed it.
    pub slave: usize,
    /// The machine.
    pub machine: MasterConnection,
    /// The frame being written.
    out: Option<Transmit>,
    /// Where the next frame must start (from `Started`, then each frame's end).
    next: Option<u64>,
    /// The most body bytes the next data frame may carry (`first_batch_size`, doubling per
    /// data frame up to the batch).
    frame_limit: u32,
    last_ack: Option<u64>,
}

/// The master: its log, the service, a machine per connection, and a reference model of the
/// service.
#[derive(Debug)]
pub struct MasterNode {
    /// Whether the process is running.
    pub up: bool,
    /// Incremented on every restart.
    pub instance: u64,
    /// The commit log (survives restarts, minus a lost tail).
    pub log: MemoryLog,
    /// The service.
    pub service: MasterService,
    /// The reference model of the service.
    pub model: ServiceModel,
    /// Connections by link id.
    pub conns: BTreeMap<u64, MasterConn>,
    /// Frozen until then (a stall).
    pub paused_until: Duration,
    /// Where a pending restart truncates the log.
    pub truncate_on_restart: Option<u64>,
    /// Connections ever accepted.
    pub accepted: u64,
    config: Config,
}

impl MasterNode {
    /// A master with `log`, started at `now`.
    pub fn new(config: Config, log: MemoryLog, now: Instant) -> Self {
        MasterNode {
            up: true,
            instance: 0,
            log,
            service: MasterService::new(config, now),
            model: ServiceModel::new(now),
            conns: BTreeMap::new(),
            paused_until: Duration::ZERO,
            truncate_on_restart: None,
            accepted: 0,
            config,
        }
    }

    fn now(cx: &Ctx<'_>) -> Instant {
        cx.clocks.instant(0, cx.now)
    }

    /// The next virtual time the master has something to do.
    pub fn next_event(&self, clocks: &Clocks, now: Duration) -> Option<Duration> {
        if !self.up {
            return None;
        }
        if self.paused_until > now {
            return Some(self.paused_until);
        }
        self.conns
            .values()
            .filter_map(|c| c.machine.poll_timeout())
            .chain(self.service.poll_timeout())
            .map(|t| clocks.to_virtual(0, t))
            .filter(|t| *t > now)
            .min()
    }

    /// A slave's connect arrived as link `link`.
    pub fn accept(&mut self, cx: &mut Ctx<'_>, link: u64, slave: usize) -> Check {
        let now = Self::now(cx);
        self.model.advance(now);
        let id = self.service.register(now);
        self.model.register(id)?;
        self.accepted += 1;
        tr!(
            cx,
            "master accepts link {link} from slave {slave} as {}",
            id.get()
        );
        self.conns.insert(
            link,
            MasterConn {
                id,
                slave,
                machine: MasterConnection::new(self.config, now),
                out: None,
                next: None,
                frame_limit: self
                    .config
                    .first_batch_size()
                    .map_or(self.config.transfer_batch_size(), |first| {
                        first.min(self.config.transfer_batch_size())
                    }),
                last_ack: None,
            },
        );
        self.after_service_call(cx, None, false)
    }

    /// One turn of the driver loop for every connection and the service.
    pub fn poll(&mut self, cx: &mut Ctx<'_>, stored_ever: &[u64]) -> Check {
        if !self.up || cx.now < self.paused_until {
            return Ok(());
        }
        let links: Vec<u64> = self.conns.keys().copied().collect();
        for link in links {
            self.poll_conn(cx, link, stored_ever)?;
        }
        let now = Self::now(cx);
        if self.service.poll_timeout().is_some_and(|t| t <= now) || cx.spurious_wakeup() {
            self.model.advance(now);
            self.service.handle_timeout(now);
            self.after_service_call(cx, None, false)?;
        }
        for (link, conn) in &self.conns {
            check::master_buffer_bounded(conn.machine.buffered_len())?;
            check::deadline_in_future(
                &format!("master connection {} (link {link})", conn.id.get()),
                conn.machine.poll_timeout(),
                now,
            )?;
        }
        check::deadline_in_future("master service", self.service.poll_timeout(), now)?;
        check::no_overdue_waiter(&self.model, now)
    }

    fn poll_conn(&mut self, cx: &mut Ctx<'_>, link: u64, stored_ever: &[u64]) -> Check {
        loop {
            match cx.net.read(link, End::Master, cx.now, cx.entropy) {
                Read::Data(bytes) => {
                    let now = Self::now(cx);
                    let conn = self.conns.get_mut(&link).expect("live connection");
                    let result = conn.machine.handle_input(now, &bytes, &self.log);
                    check::master_buffer_bounded(conn.machine.buffered_len())?;
                    if let Err(e) = result {
                        return self.conn_error(cx, link, e);
                    }
                    self.drain_events(cx, link, stored_ever)?;
                    if !self.conns.contains_key(&link) {
                        // Writing the answer failed and closed the connection.
                        return Ok(());
                    }
                }
                Read::WouldBlock => break,
                Read::Eof | Read::Reset => {
                    tr!(cx, "master: link {link} ended by peer");
                    return self.close_conn(cx, link, false);
                }
            }
        }
        let now = Self::now(cx);
        let conn = self.conns.get_mut(&link).expect("live connection");
        if conn.machine.poll_timeout().is_some_and(|t| t <= now) || cx.entropy.chance(20) {
            if let Err(e) = conn.machine.handle_timeout(now) {
                return self.conn_error(cx, link, e);
            }
        }
        self.transmit(cx, link)
    }

    fn drain_events(&mut self, cx: &mut Ctx<'_>, link: u64, stored_ever: &[u64]) -> Check {
        let now = Self::now(cx);
        for events in 0.. {
            if events > OUTPUT_BOUND {
                return Err(fail(
                    "machine_output_is_finite",
                    format!("master link {link} keeps producing events"),
                ));
            }
            let conn = self.conns.get_mut(&link).expect("live connection");
            let Some(event) = conn.machine.poll_event() else {
                break;
            };
            let (id, slave) = (conn.id, conn.slave);
            match event {
                MasterEvent::Started { requested, start } => {
                    tr!(
                        cx,
                        "master link {link}: slave {slave} requests {requested}, start {start}"
                    );
                    check::start_follows_first_transfer_rule(
                        self.config.start_position(),
                        requested,
                        start,
                        &self.log,
                    )?;
                    conn.next = Some(start);
                }
                MasterEvent::Acked { offset } => {
                    check::ack_is_monotonic_and_stored(
                        slave,
                        conn.last_ack,
                        offset,
                        stored_ever[slave],
                    )?;
                    conn.last_ack = Some(offset);
                    tr!(cx, "master link {link}: ack {offset}");
                    self.model.ack(id, offset);
                }
                other => {
                    return Err(fail(
                        "master_event_is_known",
                        format!("unexpected {other:?}"),
                    ))
                }
            }
            self.model.advance(now);
            self.service.handle_event(id, now, &event);
            self.after_service_call(cx, None, false)?;
        }
        self.transmit(cx, link)
    }

    fn transmit(&mut self, cx: &mut Ctx<'_>, link: u64) -> Check {
        for _ in 0..OUTPUT_BOUND * 1000 {
            let now = Self::now(cx);
            let Some(conn) = self.conns.get_mut(&link) else {
                return Ok(());
            };
            if conn.out.is_none() {
                match conn.machine.poll_transmit(now, &self.log) {
                    Ok(None) => return Ok(()),
                    Ok(Some(t)) => {
                        let header = t.header();
                        check::frame_is_contiguous_and_bounded(
                            cx.history,
                            &self.log,
                            conn.frame_limit,
                            conn.next,
                            header.offset,
                            t.body(),
                        )?;
                        conn.next = Some(header.end_offset());
                        if header.body_len > 0 {
                            conn.frame_limit = conn
                                .frame_limit
                                .saturating_mul(2)
                                .min(self.config.transfer_batch_size());
                        }
                        if header.body_len > 0 {
                            tr!(
                                cx,
                                "master link {link}: frame [{}, {})",
                                header.offset,
                                header.end_offset()
                            );
                        } else {
                            tr!(cx, "master link {link}: heartbeat at {}", header.offset);
                        }
                        conn.out = Some(t);
                    }
                    Err(e) => return self.conn_error(cx, link, e),
                }
            }
            let t = conn.out.as_mut().expect("a frame to write");
            while t.has_remaining() {
                match cx
                    .net
                    .write(link, End::Master, cx.now, t.chunk(), cx.entropy)
                {
                    Write::Written(n) => t.advance(n),
                    Write::WouldBlock => return Ok(()),
                    Write::Broken => {
                        tr!(cx, "master: write on link {link} failed");
                        return self.close_conn(cx, link, false);
                    }
                }
            }
            conn.out = None;
            if let Err(e) = conn.machine.on_transmitted(now) {
                return self.conn_error(cx, link, e);
            }
        }
        Err(fail(
            "machine_output_is_finite",
            format!("master link {link} keeps producing frames at one instant"),
        ))
    }

    fn conn_error(&mut self, cx: &mut Ctx<'_>, link: u64, e: MasterError) -> Check {
        tr!(cx, "master closes link {link}: {e}");
        let (min, max) = (self.log.min_offset(), self.log.max_offset());
        let expected = match &e {
            MasterError::HousekeepingTimeout { .. } => {
                // While idle, only a zombie (whose slave end is gone) may time out.
                !cx.idle || cx.net.is_closed(link, End::Slave)
            }
            MasterError::RequestBelowRetained { requested, .. } => {
                *requested != 0 && *requested < min
            }
            MasterError::RequestAboveMax { requested, .. } => *requested > max,
            MasterError::Log(LogError::BelowRetained { offset, .. }) => *offset < min,
            _ => false,
        };
        if !expected {
            return Err(fail(
                if cx.idle {
                    "idle_connections_stay_up"
                } else {
                    "master_error_is_expected"
                },
                format!("link {link}: {e} (log [{min}, {max}))"),
            ));
        }
        self.close_conn(cx, link, true)
    }

    fn close_conn(&mut self, cx: &mut Ctx<'_>, link: u64, may_lose: bool) -> Check {
        let conn = self.conns.remove(&link).expect("live connection");
        let lost = may_lose && cx.lose_close(200);
        cx.net.close(link, End::Master, cx.now, lost, cx.entropy);
        let now = Self::now(cx);
        self.model.advance(now);
        self.service.remove(conn.id, now);
        self.model.remove(conn.id);
        tr!(
            cx,
            "master removed {} (link {link}, close lost: {lost})",
            conn.id.get()
        );
        self.after_service_call(cx, None, false)
    }

    /// Drains completions after a service call and compares service and model.
    fn after_service_call(
        &mut self,
        cx: &mut Ctx<'_>,
        issued: Option<Ticket>,
        shutting_down: bool,
    ) -> Check {
        while let Some(c) = self.service.poll_completion() {
            tr!(cx, "master: ticket {} -> {:?}", c.ticket.get(), c.result);
            self.model.complete(c, issued, shutting_down)?;
        }
        if let Some(ticket) = issued {
            if self.model.is_pending(ticket) {
                tr!(cx, "master: ticket {} pending", ticket.get());
            }
        }
        check::service_matches_model(&self.service, &self.model)
    }

    /// The producer wrote `data` (already in the history) to the log; maybe wait for slaves.
    pub fn append(&mut self, cx: &mut Ctx<'_>, data: Bytes) -> Check {
        let len = data.len();
        let max = self.log.push(data);
        tr!(cx, "master appends {len} bytes, max {max}");
        let now = Self::now(cx);
        check::in_sync_matches_model(
            &self.service,
            &self.model,
            max,
            self.config.max_gap_not_in_sync(),
        )?;
        if cx.entropy.chance(cx.p.sync_per_mille) {
            let acks_needed = cx.entropy.below(cx.p.slaves as u64 + 2) as usize;
            let wait = cx
                .entropy
                .duration(Duration::ZERO, self.config.slave_timeout() * 2);
            let deadline = now + wait;
            // Usually the end of the write just made; sometimes an older offset, as when the
            // wait is registered after acks already arrived.
            let offset = if cx.entropy.chance(300) {
                cx.entropy.range(self.log.min_offset(), max)
            } else {
                max
            };
            self.model.advance(now);
            let ticket = self.service.wait_for(now, offset, acks_needed, deadline);
            self.model.issue(ticket, offset, acks_needed, deadline)?;
            tr!(
                cx,
                "master waits ({}) for {acks_needed} acks of {offset} within {wait:?}",
                ticket.get()
            );
            self.after_service_call(cx, Some(ticket), false)?;
        }
        Ok(())
    }

    /// The master process dies: its sockets close (or, if `lost`, the host vanished and nobody
    /// hears), pending waits complete with `Shutdown`.
    pub fn crash(&mut self, cx: &mut Ctx<'_>, lost: bool) -> Check {
        tr!(cx, "master crashes (closes lost: {lost})");
        let links: Vec<u64> = self.conns.keys().copied().collect();
        for link in links {
            cx.net.close(link, End::Master, cx.now, lost, cx.entropy);
        }
        self.conns.clear();
        let now = Self::now(cx);
        self.model.advance(now);
        self.service.shutdown(now);
        self.model.shutdown();
        self.after_service_call(cx, None, true)?;
        if self.model.pending() != 0 {
            return Err(fail(
                "ticket_completes_once_and_correctly",
                format!(
                    "{} waits still pending after shutdown",
                    self.model.pending()
                ),
            ));
        }
        self.up = false;
        Ok(())
    }

    /// The master starts again with a new service (and, maybe, a log that lost its tail).
    pub fn restart(&mut self, cx: &mut Ctx<'_>) {
        let now = Self::now(cx);
        if let Some(at) = self.truncate_on_restart.take() {
            let before = self.log.max_offset();
            self.log.truncate(at);
            tr!(
                cx,
                "master lost its tail [{}, {before})",
                self.log.max_offset()
            );
        }
        let stats = self.model.stats;
        self.service = MasterService::new(self.config, now);
        self.model = ServiceModel::new(now);
        self.model.stats = stats;
        self.instance += 1;
        self.up = true;
        self.paused_until = Duration::ZERO;
        tr!(
            cx,
            "master restarts (instance {}), log [{}, {})",
            self.instance,
            self.log.min_offset(),
            self.log.max_offset()
        );
    }

    /// Whether some live connection from `slave` has acknowledged the whole log.
    pub fn has_caught_up(&self, slave: usize) -> bool {
        let max = self.log.max_offset();
        self.conns
            .values()
            .any(|c| c.slave == slave && c.machine.ack_offset() == Some(max))
    }

    /// A one-line summary of the connections, for failure messages.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (link, c) in &self.conns {
            let _ = write!(
                s,
                " [link {link} slave {} ack {:?} next {:?} in flight {}]",
                c.slave,
                c.machine.ack_offset(),
                c.machine.next_offset(),
                c.machine.is_transmitting()
            );
        }
        s
    }
}
