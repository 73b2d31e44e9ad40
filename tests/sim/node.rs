//! The drivers: each node runs the connection loops every transport ships ([`SlaveLoop`],
//! [`MasterLoop`]) exactly as a transport does: read, write, store and time out as the loop
//! asks, and sleep until the next deadline or I/O. Only the socket, the disk and the clock are
//! simulated.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use rocketmq_ha::{
    ClientError, ClientEvent, Config, ConnectionId, LogError, LogSink, LogSource, MasterError,
    MasterEvent, MasterLoop, MasterService, MemoryLog, SlaveLoop, StartPosition, Ticket,
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

/// A slave: the shipped [`SlaveLoop`] (what every transport runs), its log, and the socket and
/// disk a transport would own, here simulated.
#[derive(Debug)]
pub struct SlaveNode {
    /// The slave's index.
    pub index: usize,
    /// Its durable log (survives crashes).
    pub log: MemoryLog,
    /// The connection loop (replaced on restart).
    pub lp: SlaveLoop,
    /// The current connection.
    pub link: Option<u64>,
    /// The dial in progress; the loop's deadline gives up on it.
    pub dialing: Option<u64>,
    /// The batch with the disk: (done at, offset, pieces).
    disk: Option<(Duration, u64, Vec<Bytes>)>,
    /// The disk refuses writes until then (full).
    pub disk_full_until: Duration,
    /// The oldest history version consistent with this log (see `check.rs`).
    pub version: usize,
    /// The highest max offset this slave ever stored.
    pub stored_ever: u64,
    last_report: Option<u64>,
    /// When the report being written was handed out or last made progress (client clock).
    report_progress_at: Option<Instant>,
    /// Whether the current connection delivered a whole, valid frame (the back-off resets).
    link_had_frame: bool,
    /// Whether the last close came from a failed store (the slow back-off applies).
    local_failure: bool,
    /// The latest time handed to the current loop.
    client_clock: Cell<Instant>,
    /// Connections this slave lost or closed.
    pub disconnects: u64,
    /// Connections closed at the write-stall limit.
    pub stall_closes: u64,
    /// Stores that failed (a full disk).
    pub local_failures: u64,
    /// Crashed and not yet restarted.
    pub crashed: bool,
    /// Frozen until then (a stall).
    pub paused_until: Duration,
    config: Config,
}

impl SlaveNode {
    /// A slave with `log`, whose loop starts at virtual time `now`.
    pub fn new(index: usize, log: MemoryLog, config: Config, seed: u64, now: Instant) -> Self {
        let stored_ever = log.max_offset();
        SlaveNode {
            index,
            log,
            lp: SlaveLoop::new(config, seed, now),
            link: None,
            dialing: None,
            disk: None,
            disk_full_until: Duration::ZERO,
            version: 0,
            stored_ever,
            last_report: None,
            report_progress_at: None,
            link_had_frame: false,
            local_failure: false,
            client_clock: Cell::new(now),
            disconnects: 0,
            stall_closes: 0,
            local_failures: 0,
            crashed: false,
            paused_until: Duration::ZERO,
            config,
        }
    }

    fn node(&self) -> usize {
        self.index + 1
    }

    /// The node's time now; every time handed to the loop comes from here, so
    /// `client_clock` is the loop's own (clamped) clock.
    fn now(&self, cx: &Ctx<'_>) -> Instant {
        let now = cx.clocks.instant(self.node(), cx.now);
        self.client_clock.set(self.client_clock.get().max(now));
        now
    }

    /// Whether received bytes still wait for the disk.
    pub fn pending_appends(&self) -> usize {
        usize::from(self.disk.is_some()) + self.lp.unstored_len()
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
            .lp
            .poll_timeout()
            .map(|t| clocks.to_virtual(self.node(), t));
        let disk = self.disk.as_ref().map(|d| d.0);
        [timer, disk]
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
        self.drive(cx)?;
        self.read(cx)?;
        let now = self.now(cx);
        if self.lp.poll_timeout().is_some_and(|t| t <= now) || cx.spurious_wakeup() {
            self.timeout(cx)?;
        }
        self.drive(cx)?;
        let now = self.now(cx);
        self.check_report_stall(self.client_clock.get())?;
        check::deadline_in_future(
            &format!("slave {} loop", self.index),
            self.lp.poll_timeout(),
            now,
        )
    }

    /// A report the master does not read must not hold a connection up past the stall limit
    /// (the loop reads, and runs its timers, while the report waits).
    fn check_report_stall(&self, now: Instant) -> Check {
        if let (Some(since), Some(_)) = (self.report_progress_at, self.link) {
            let limit = self.config.write_stall_timeout();
            if self.lp.is_connected() && now >= since + limit {
                return Err(fail(
                    "stalled_report_closes",
                    format!(
                        "slave {}: a report made no progress for {:?} (limit {limit:?}) and the \
                         connection is still up",
                        self.index,
                        now - since
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Everything that follows from an input, until nothing changes: the disk, a dial, the
    /// loop's events, a close the loop decided, and report writes.
    fn drive(&mut self, cx: &mut Ctx<'_>) -> Check {
        for _ in 0..OUTPUT_BOUND {
            let mut progressed = self.disk_step(cx)?;
            while let Some(event) = self.lp.poll_event() {
                match event {
                    ClientEvent::Rejected { offset, closes } => {
                        tr!(
                            cx,
                            "slave {}: master rejected offset {offset} {closes} times",
                            self.index
                        );
                    }
                    other => {
                        return Err(fail(
                            "client_event_is_known",
                            format!("unexpected {other:?}"),
                        ))
                    }
                }
            }
            if self.link.is_some() && !self.lp.is_connected() {
                // The loop closed the connection (a failed store).
                self.close(cx, false)?;
                progressed = true;
            }
            if self.link.is_none() && self.dialing.is_none() && self.lp.poll_dial() {
                self.dial(cx);
                progressed = true;
            }
            progressed |= self.flush(cx)?;
            if !progressed {
                return Ok(());
            }
        }
        Err(fail(
            "machine_output_is_finite",
            format!("slave {} keeps producing output", self.index),
        ))
    }

    /// Finishes the disk's write when it is due, or hands it the next batch; returns whether
    /// anything happened.
    fn disk_step(&mut self, cx: &mut Ctx<'_>) -> Result<bool, super::check::Fail> {
        if let Some((at, ..)) = self.disk {
            if at > cx.now {
                return Ok(false);
            }
            self.complete_store(cx)?;
            return Ok(true);
        }
        let Some((offset, batch)) = self.lp.poll_store() else {
            return Ok(false);
        };
        let batch = batch.to_vec();
        let delay = if cx.fault(super::scenario::Fault::SlowAppend) {
            cx.entropy
                .log_duration(Duration::from_micros(1), cx.p.disk_latency)
        } else {
            Duration::ZERO
        };
        self.disk = Some((cx.now + delay, offset, batch));
        if delay.is_zero() {
            self.complete_store(cx)?;
        }
        Ok(true)
    }

    fn complete_store(&mut self, cx: &mut Ctx<'_>) -> Check {
        let Some((_, mut offset, batch)) = self.disk.take() else {
            return Ok(());
        };
        if cx.now < self.disk_full_until {
            tr!(
                cx,
                "slave {} disk full: store at {offset} fails",
                self.index
            );
            let now = self.now(cx);
            let connected = self.lp.is_connected();
            self.lp.handle_store_failed(now);
            self.local_failure = true;
            self.local_failures += 1;
            let checked = if connected {
                self.close(cx, false)
            } else {
                self.check_backoff(now)
            };
            // Later failures are the network's again.
            self.local_failure = false;
            return checked;
        }
        for data in batch {
            self.apply(cx, offset, &data)?;
            offset += data.len() as u64;
        }
        self.lp.handle_stored(self.log.max_offset());
        Ok(())
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
        self.dialing = Some(id);
        tr!(cx, "slave {} dials ({id})", self.index);
    }

    /// The loop's first action (a dial) is taken at the start of the run.
    pub fn start(&mut self, cx: &mut Ctx<'_>) -> Check {
        self.drive(cx)
    }

    /// The dial `id` connected as link `link`.
    pub fn connected(&mut self, cx: &mut Ctx<'_>, link: u64) -> Check {
        self.dialing = None;
        self.link = Some(link);
        self.last_report = None;
        self.report_progress_at = None;
        self.link_had_frame = false;
        self.local_failure = false;
        let stored = self.log.max_offset();
        tr!(
            cx,
            "slave {} connected link {link}, stored {stored}",
            self.index
        );
        let now = self.now(cx);
        self.lp.handle_connected(now, stored);
        if !self.lp.is_connected() {
            return Err(fail(
                "dial_is_answered",
                format!(
                    "slave {}: the loop refused a connect it asked for",
                    self.index
                ),
            ));
        }
        self.drive(cx)
    }

    /// The dial failed (refused).
    pub fn connect_failed(&mut self, cx: &mut Ctx<'_>) -> Check {
        self.dialing = None;
        let now = self.now(cx);
        self.lp.handle_connect_failed(now);
        self.link_had_frame = false;
        self.check_backoff(now)?;
        self.drive(cx)
    }

    fn apply(&mut self, cx: &mut Ctx<'_>, offset: u64, data: &Bytes) -> Check {
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
            data,
        )?;
        tr!(cx, "slave {} appended [{offset}, {max})", self.index);
        self.stored_ever = self.stored_ever.max(max);
        Ok(())
    }

    fn timeout(&mut self, cx: &mut Ctx<'_>) -> Check {
        let now = self.now(cx);
        match self.lp.handle_timeout(now) {
            Ok(()) => Ok(()),
            Err(ClientError::ConnectTimeout { .. }) => {
                tr!(
                    cx,
                    "slave {} gives up dial {:?} (connect timeout)",
                    self.index,
                    self.dialing
                );
                if self.dialing.take().is_none() {
                    return Err(fail(
                        "dial_is_answered",
                        format!("slave {}: connect timeout without a dial", self.index),
                    ));
                }
                self.link_had_frame = false;
                self.check_backoff(now)
            }
            Err(e) => self.client_error(cx, e),
        }
    }

    fn read(&mut self, cx: &mut Ctx<'_>) -> Check {
        let max_frame = self.config.max_frame_size();
        while let Some(link) = self.link {
            // A slow disk pushes back: the loop stops reading while much waits for it.
            if !self.lp.wants_read() {
                break;
            }
            let room = self.lp.read_buf().len();
            match cx.net.read(link, End::Slave, cx.now, cx.entropy, room) {
                Read::Data(bytes) => {
                    let n = bytes.len();
                    self.lp.read_buf()[..n].copy_from_slice(&bytes);
                    let before = self.lp.buffered_len();
                    check::slave_buffer_bounded(
                        self.index,
                        before + n,
                        max_frame,
                        cx.p.max_read.max(room),
                        false,
                    )?;
                    let now = self.now(cx);
                    let result = self.lp.handle_read(now, n);
                    match result {
                        Ok(()) => {
                            // Bytes that left the buffer were whole, valid frames.
                            self.link_had_frame |= self.lp.buffered_len() < before + n;
                            check::slave_buffer_bounded(
                                self.index,
                                self.lp.buffered_len(),
                                max_frame,
                                cx.p.max_read,
                                true,
                            )?
                        }
                        Err(e) => self.client_error(cx, e)?,
                    }
                    self.drive(cx)?;
                }
                Read::WouldBlock => break,
                Read::Eof | Read::Reset => {
                    tr!(cx, "slave {} link {link} ended by peer", self.index);
                    let now = self.now(cx);
                    self.lp.handle_closed(now);
                    self.close(cx, false)?;
                    self.drive(cx)?;
                }
            }
        }
        Ok(())
    }

    fn client_error(&mut self, cx: &mut Ctx<'_>, e: ClientError) -> Check {
        tr!(cx, "slave {} closes: {e}", self.index);
        match e {
            ClientError::HousekeepingTimeout { .. } => {}
            ClientError::WriteStalled { .. } => self.stall_closes += 1,
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
        let now = self.now(cx);
        self.check_backoff(now)?;
        if let Some(link) = self.link.take() {
            let lost = may_lose && cx.lose_close(200);
            cx.net.close(link, End::Slave, cx.now, lost, cx.entropy);
            if lost {
                tr!(cx, "slave {} close of link {link} is lost", self.index);
            }
        }
        self.report_progress_at = None;
        self.disconnects += 1;
        Ok(())
    }

    /// §1.4: after a connection ends (or a dial fails) the loop waits before dialing again:
    /// at most the back-off ceiling, at most the initial delay if the connection delivered a
    /// valid frame (progress resets the back-off), and after a failed store at least half the
    /// local-failure delay and at most its ceiling (a local error is no network fault).
    ///
    /// `now` is the time handed to the loop with the event; the loop's clock may be ahead of it
    /// (after a backward jump), but never beyond `client_clock`.
    fn check_backoff(&self, now: Instant) -> Check {
        let Some(deadline) = self.lp.poll_timeout() else {
            return Err(fail(
                "reconnect_is_backed_off",
                format!(
                    "slave {} has no reconnect deadline after a disconnect",
                    self.index
                ),
            ));
        };
        let (shortest, longest) = (
            deadline.saturating_duration_since(self.client_clock.get()),
            deadline.saturating_duration_since(now),
        );
        let c = &self.config;
        let (floor, bound) = if self.local_failure {
            // A network back-off already running may be the longer wait.
            (
                c.local_failure_backoff_initial() / 2,
                c.local_failure_backoff_max().max(c.reconnect_backoff_max()),
            )
        } else if self.link_had_frame {
            (Duration::ZERO, c.reconnect_backoff_initial())
        } else {
            (Duration::ZERO, c.reconnect_backoff_max())
        };
        if longest.is_zero() || longest < floor || shortest > bound {
            return Err(fail(
                "reconnect_is_backed_off",
                format!(
                    "slave {} redials after {shortest:?}..{longest:?}, allowed [{floor:?}, {bound:?}] (frame: {}, local failure: {})",
                    self.index, self.link_had_frame, self.local_failure
                ),
            ));
        }
        Ok(())
    }

    /// Writes the loop's report as far as the socket takes it; returns whether any byte went.
    fn flush(&mut self, cx: &mut Ctx<'_>) -> Result<bool, super::check::Fail> {
        let mut progressed = false;
        while let Some(link) = self.link {
            let now = self.now(cx);
            let Some(report) = self.lp.poll_write(now) else {
                self.report_progress_at = None;
                break;
            };
            let bytes = report.as_bytes();
            if bytes.len() == 8 {
                // A report not yet started (new, or replacing an unsent one).
                let value = u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
                check::report_is_monotonic_and_stored(
                    self.index,
                    self.last_report,
                    value,
                    self.log.max_offset(),
                )?;
                self.last_report = Some(value);
                self.report_progress_at
                    .get_or_insert(self.client_clock.get());
            }
            match cx.net.write(link, End::Slave, cx.now, bytes, cx.entropy) {
                Write::Written(n) => {
                    progressed = true;
                    self.report_progress_at = Some(self.client_clock.get());
                    if let Err(e) = self.lp.handle_written(now, n) {
                        return Err(fail("loop_is_used_correctly", format!("{e}")));
                    }
                }
                Write::WouldBlock => break,
                Write::Broken => {
                    tr!(cx, "slave {} write on link {link} failed", self.index);
                    self.lp.handle_closed(now);
                    self.close(cx, false)?;
                    progressed = true;
                }
            }
        }
        Ok(progressed)
    }

    /// The slave's process dies: loop state, the disk's pending write and buffers are lost,
    /// the log stays. If `lost`, its host vanished and the master never hears the close.
    pub fn crash(&mut self, cx: &mut Ctx<'_>, lost: bool) {
        tr!(cx, "slave {} crashes (close lost: {lost})", self.index);
        if let Some(link) = self.link.take() {
            cx.net.close(link, End::Slave, cx.now, lost, cx.entropy);
        }
        self.crashed = true;
        self.disk = None;
        self.dialing = None;
        self.report_progress_at = None;
        self.disconnects += 1;
    }

    /// The disk finishes its pending write now (and is no longer full).
    pub fn flush_appends(&mut self, cx: &mut Ctx<'_>) -> Check {
        self.disk_full_until = Duration::ZERO;
        if let Some(disk) = self.disk.as_mut() {
            disk.0 = cx.now;
        }
        self.drive(cx)
    }

    /// The slave restarts from its stored log with a fresh loop.
    pub fn restart(&mut self, cx: &mut Ctx<'_>) -> Check {
        let seed = cx.entropy.seed();
        let now = cx.clocks.instant(self.node(), cx.now);
        self.client_clock.set(now);
        self.lp = SlaveLoop::new(self.config, seed, now);
        self.crashed = false;
        self.paused_until = Duration::ZERO;
        self.last_report = None;
        self.local_failure = false;
        tr!(
            cx,
            "slave {} restarts with log [{}, {})",
            self.index,
            self.log.min_offset(),
            self.log.max_offset()
        );
        self.drive(cx)
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
            self.report_progress_at = None;
            self.disconnects += 1;
            let now = self.now(cx);
            self.lp.handle_closed(now);
            self.check_backoff(now)?;
            self.drive(cx)?;
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
    /// The shipped connection loop (what every transport runs).
    pub lp: MasterLoop,
    /// Whether the frame being written was checked already (frames are checked once, whole).
    out_checked: bool,
    /// Bytes handed out over time, for the flow-control check.
    flow: check::FlowWindow,
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
    /// Links the master does not read (nor run timers for) until then: a hung reader, as
    /// when Java's read thread is stuck while its write thread still sends heartbeats.
    pub deaf: BTreeMap<u64, Duration>,
    /// Slaves whose connections the master grants a full copy (the admission's full-copy
    /// blocks): an empty one starts at the oldest segment whatever the configuration says.
    full_copy: Vec<usize>,
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
            deaf: BTreeMap::new(),
            full_copy: Vec::new(),
            config,
        }
    }

    /// Grants slave `slave`'s connections a full copy from now on.
    pub fn grant_full_copy(&mut self, slave: usize) {
        self.full_copy.push(slave);
    }

    fn now(cx: &Ctx<'_>) -> Instant {
        cx.clocks.instant(0, cx.now)
    }

    /// Whether the master ignores what link `link` brings, and its timers, at `now`.
    pub fn is_deaf(&self, link: u64, now: Duration) -> bool {
        self.deaf.get(&link).is_some_and(|until| now < *until)
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
            .iter()
            .filter(|(link, _)| !self.is_deaf(**link, now))
            .filter_map(|(_, c)| c.lp.poll_timeout())
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
        let mut lp = MasterLoop::new(self.config, now);
        if self.full_copy.contains(&slave) {
            lp.set_start_position(StartPosition::OldestRetained)
                .expect("a new connection has had no report");
        }
        self.conns.insert(
            link,
            MasterConn {
                id,
                slave,
                lp,
                out_checked: false,
                flow: check::FlowWindow::new(now),
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
            check::master_buffer_bounded(conn.lp.connection().buffered_len())?;
            if self.is_deaf(*link, cx.now) {
                continue;
            }
            check::deadline_in_future(
                &format!("master connection {} (link {link})", conn.id.get()),
                conn.lp.poll_timeout(),
                now,
            )?;
        }
        check::deadline_in_future("master service", self.service.poll_timeout(), now)?;
        check::no_overdue_waiter(&self.model, now)
    }

    fn poll_conn(&mut self, cx: &mut Ctx<'_>, link: u64, stored_ever: &[u64]) -> Check {
        if self.is_deaf(link, cx.now) {
            // The reader hangs; the writer goes on.
            return self.transmit(cx, link);
        }
        loop {
            match cx
                .net
                .read(link, End::Master, cx.now, cx.entropy, usize::MAX)
            {
                Read::Data(bytes) => {
                    let now = Self::now(cx);
                    let conn = self.conns.get_mut(&link).expect("live connection");
                    conn.flow.saw(now);
                    let result = conn.lp.handle_read(now, &bytes, &self.log);
                    check::master_buffer_bounded(conn.lp.connection().buffered_len())?;
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
        if conn.lp.poll_timeout().is_some_and(|t| t <= now) || cx.entropy.chance(20) {
            conn.flow.saw(now);
            if let Err(e) = conn.lp.handle_timeout(now) {
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
            let Some(event) = conn.lp.poll_event() else {
                break;
            };
            let (id, slave) = (conn.id, conn.slave);
            match event {
                MasterEvent::Started { requested, start } => {
                    tr!(
                        cx,
                        "master link {link}: slave {slave} requests {requested}, start {start}"
                    );
                    // Where an empty slave starts on this slave's connections (§3.3).
                    let position = if self.full_copy.contains(&slave) {
                        StartPosition::OldestRetained
                    } else {
                        self.config.start_position()
                    };
                    check::start_follows_first_transfer_rule(
                        position, requested, start, &self.log,
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
            // The machine is handed the time only when it is asked for a new frame.
            if !conn.lp.connection().is_transmitting() {
                conn.flow.saw(now);
            }
            let t = match conn.lp.poll_write(now, &self.log) {
                Ok(None) => return Ok(()),
                Ok(Some(t)) => t,
                Err(e) => return self.conn_error(cx, link, e),
            };
            if !conn.out_checked {
                conn.out_checked = true;
                let header = t.header();
                let burst = u64::from(self.config.transfer_batch_size()) + 24;
                let rate = self.config.rate_limit().map(|r| r.get());
                conn.flow.frame(rate, burst, now, t.remaining() as u64)?;
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
                    tr!(
                        cx,
                        "master link {link}: frame [{}, {})",
                        header.offset,
                        header.end_offset()
                    );
                } else {
                    tr!(cx, "master link {link}: heartbeat at {}", header.offset);
                }
            }
            let written = cx
                .net
                .write(link, End::Master, cx.now, t.chunk(), cx.entropy);
            match written {
                Write::Written(n) => {
                    conn.flow.saw(now);
                    let result = conn.lp.handle_written(now, n);
                    if !conn.lp.connection().is_transmitting() {
                        conn.out_checked = false;
                    }
                    if let Err(e) = result {
                        return self.conn_error(cx, link, e);
                    }
                }
                Write::WouldBlock => return Ok(()),
                Write::Broken => {
                    tr!(cx, "master: write on link {link} failed");
                    return self.close_conn(cx, link, false);
                }
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
            MasterError::HousekeepingTimeout { .. }
            | MasterError::WriteStalled { .. }
            | MasterError::NoFirstReport { .. } => {
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
            .any(|c| c.slave == slave && c.lp.connection().ack_offset() == Some(max))
    }

    /// A one-line summary of the connections, for failure messages.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (link, c) in &self.conns {
            let _ = write!(
                s,
                " [link {link} slave {} ack {:?} next {:?} in flight {}]",
                c.slave,
                c.lp.connection().ack_offset(),
                c.lp.connection().next_offset(),
                c.lp.connection().is_transmitting()
            );
        }
        s
    }
}
