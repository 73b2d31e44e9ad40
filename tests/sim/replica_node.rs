//! The AutoSwitch driver of the switch runs: one node is a [`Replica`] with its log and epoch
//! file, driven exactly as a broker drives it. As a slave it runs the shipped
//! [`SlaveLoop`](rocketmq_ha::autoswitch::SlaveLoop) (disk operations one at a time and in the
//! order handed out: cut, save the epoch file, store); as a master a shipped [`MasterLoop`] per
//! accepted connection, their events into the [`SyncStateSet`] and its proposals to the
//! controller. Only the socket, the disk and the clock are simulated.
//!
//! What survives a crash: the log up to what was flushed (a slave flushes before it reports,
//! a master now and then), and the epoch file as far as it was saved. A disk operation in
//! progress is lost with the process.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketmq_ha::autoswitch::{
    consistent_point, BrokerId, ClientError, DiskOp, EpochList, MasterError, MasterEvent,
    MasterLoop, Replica, Role, SlaveIdentity, SlaveLoop, SyncStateSet, MAX_TIME_NOT_CAUGHT_UP,
};
use rocketmq_ha::{Config, LogSink, LogSource, LogTruncate, MemoryLog};

use super::check::{fail, Check};
use super::controller::{id_of, Proposal};
use super::entropy::Entropy;
use super::net::{End, Net, Read, Write};
use super::node::{tr, Clocks};
use super::trace::Trace;

/// More output than this from one input means a machine is stuck producing it.
const OUTPUT_BOUND: usize = 1_000_000;

pub use rocketmq_ha::autoswitch::SHRINK_PERIOD;

/// The port node `i`'s HA server listens on; a slave finds its master's node from it.
const BASE_PORT: u16 = 10_912;

/// Node `i`'s HA address.
pub fn addr_of(i: usize) -> core::net::SocketAddr {
    core::net::SocketAddr::from(([127, 0, 0, 1], BASE_PORT + i as u16))
}

/// The byte epoch `epoch`'s master writes at `offset`: two logs hold the same byte at an
/// offset exactly when the same epoch wrote it (for epochs below 256), so a shared byte prefix
/// is a shared history.
pub fn byte(salt: u8, epoch: i32, offset: u64) -> u8 {
    (epoch as u8).wrapping_mul(31) ^ (offset as u8) ^ salt
}

/// The length of the longest common prefix of two logs that start at 0.
pub fn shared_prefix(a: &MemoryLog, b: &MemoryLog) -> u64 {
    let n = a.max_offset().min(b.max_offset());
    let (x, y) = (
        a.copy_range(0, n).unwrap_or_default(),
        b.copy_range(0, n).unwrap_or_default(),
    );
    x.iter().zip(&y).take_while(|(p, q)| p == q).count() as u64
}

/// A connect in progress from node `from` to node `to`.
#[derive(Debug, Clone)]
pub struct Dial {
    /// Unique for the run.
    pub id: u64,
    /// The dialing slave.
    pub from: usize,
    /// The master it was told about.
    pub to: usize,
    /// When the outcome is known.
    pub at: Duration,
}

/// What a master said in a handshake answer, kept so the slave's cut can be checked against
/// it: the master's epoch list and its log as they were.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The answering node.
    pub master: usize,
    /// Its epoch list in the answer.
    pub epochs: EpochList,
    /// Its log then (cheap: shared chunks).
    pub log: MemoryLog,
}

/// What the drivers borrow from the simulator for one step.
pub struct Cx<'a> {
    /// Virtual time.
    pub now: Duration,
    /// Every decision.
    pub entropy: &'a mut Entropy,
    /// The network.
    pub net: &'a mut Net,
    /// The trace.
    pub trace: &'a mut Trace,
    /// Node clocks.
    pub clocks: &'a Clocks,
    /// Connects in progress.
    pub dials: &'a mut Vec<Dial>,
    /// The next dial id.
    pub next_dial: &'a mut u64,
    /// Handshake answers by link.
    pub answers: &'a mut BTreeMap<u64, Answer>,
    /// Proposals on their way to the controller.
    pub proposals: &'a mut Vec<Proposal>,
    /// How long a message to the controller takes.
    pub controller_latency: Duration,
    /// Slowest disk operation (zero: the disk is instant).
    pub disk_latency: Duration,
    /// Closes may be lost (half-open connections).
    pub zombie: bool,
    /// Faults are on.
    pub faulty: bool,
}

impl Cx<'_> {
    fn lose_close(&mut self, per_mille: u64) -> bool {
        self.faulty && self.zombie && self.entropy.chance(per_mille)
    }
}

/// A disk operation copied out of the loop, in progress.
#[derive(Debug)]
enum DiskWork {
    Truncate(u64),
    Save(EpochList),
    Store(u64, Vec<Bytes>),
}

/// One accepted connection on a master.
#[derive(Debug)]
pub struct Conn {
    /// The shipped connection loop.
    pub lp: MasterLoop,
    /// The slave's broker id, once its handshake came.
    pub broker: Option<BrokerId>,
    /// The dialing node.
    pub slave: usize,
}

/// One broker: replica, log, epoch file, and the sockets and disk a driver would own.
#[derive(Debug)]
pub struct ReplicaNode {
    /// The node's index.
    pub index: usize,
    /// Its replication role and machines.
    pub replica: Replica,
    /// The commit log.
    pub log: MemoryLog,
    /// The epoch file: what was saved.
    pub epoch_file: EpochList,
    /// Whether the process runs.
    pub up: bool,
    /// A number given with each role (and restart), unique in the run.
    pub role_gen: u64,
    /// The log up to here survives a machine crash.
    pub flushed: u64,
    /// Stores fail until then (a full disk).
    pub disk_full_until: Duration,
    /// The slave's connection.
    pub link: Option<u64>,
    /// The slave's dial in progress.
    pub dialing: Option<u64>,
    disk: Option<(Duration, DiskWork)>,
    /// The slave's epoch list and log end when it connected, and the link: what its handshake
    /// answer is compared with.
    at_connect: Option<(EpochList, u64, u64)>,
    /// The slave found no consistent point with its master.
    pub no_consistent_point: bool,
    /// The lowest offset the log was cut to (or lost its tail at) since the checkers last
    /// looked.
    pub cut_to: Option<u64>,
    /// The master's connections by link.
    pub conns: BTreeMap<u64, Conn>,
    /// The version of the sync-state set the master applied last.
    pub set_version: u64,
    /// The confirm offset the master last sent.
    pub master_confirm: Option<u64>,
    next_shrink: Duration,
    /// Cuts performed.
    pub truncations: u64,
    /// Failed stores.
    pub disk_failures: u64,
    config: Config,
}

impl ReplicaNode {
    /// Node `index` with an empty log and epoch file, up, without a role.
    pub fn new(index: usize, config: Config, segment_size: u64) -> Self {
        ReplicaNode {
            index,
            replica: Replica::new(config, id_of(index), EpochList::new()),
            log: MemoryLog::new(segment_size),
            epoch_file: EpochList::new(),
            up: true,
            role_gen: 0,
            flushed: 0,
            disk_full_until: Duration::ZERO,
            link: None,
            dialing: None,
            disk: None,
            at_connect: None,
            no_consistent_point: false,
            cut_to: None,
            conns: BTreeMap::new(),
            set_version: 0,
            master_confirm: None,
            next_shrink: Duration::MAX,
            truncations: 0,
            disk_failures: 0,
            config,
        }
    }

    fn now(&self, cx: &Cx<'_>) -> Instant {
        cx.clocks.instant(self.index, cx.now)
    }

    /// Whether this node acts as a master.
    pub fn is_master(&self) -> bool {
        matches!(self.replica.role(), Role::Master { .. })
    }

    /// The slave's loop, if it is one.
    pub fn slave(&self) -> Option<&SlaveLoop> {
        match self.replica.role() {
            Role::Slave { slave, .. } => Some(slave),
            _ => None,
        }
    }

    /// The node whose HA address this slave was given.
    pub fn master_node(&self) -> Option<usize> {
        match self.replica.role() {
            Role::Slave { master, .. } => Some((master.port() - BASE_PORT) as usize),
            _ => None,
        }
    }

    /// The confirm offset this node holds: a master's as last sent, a slave client's.
    pub fn confirm_offset(&self) -> Option<u64> {
        match self.replica.role() {
            Role::Master { .. } => self.master_confirm,
            Role::Slave { slave, .. } => slave.client().confirm_offset(),
            _ => None,
        }
    }

    /// Received bytes and disk operations not yet done.
    pub fn pending_disk(&self) -> bool {
        self.disk.is_some() || self.slave().is_some_and(|s| s.unstored_len() > 0)
    }

    /// The next virtual time this node has something to do.
    pub fn next_event(&self, clocks: &Clocks, now: Duration) -> Option<Duration> {
        if !self.up {
            return None;
        }
        let timers = match self.replica.role() {
            Role::Slave { slave, .. } => slave.poll_timeout().into_iter().collect::<Vec<_>>(),
            Role::Master { .. } => self
                .conns
                .values()
                .filter_map(|c| c.lp.poll_timeout())
                .collect(),
            _ => Vec::new(),
        };
        timers
            .into_iter()
            .map(|t| clocks.to_virtual(self.index, t))
            .chain(self.disk.as_ref().map(|d| d.0))
            .chain(self.is_master().then_some(self.next_shrink))
            .filter(|t| *t > now)
            .min()
    }

    // --- roles ---

    /// Closes what the previous role had open: the slave's connection (its last disk
    /// operation lands first, the rest are dropped with the loop) and the master's
    /// connections.
    fn leave_role(&mut self, cx: &mut Cx<'_>) -> Check {
        if self.disk.is_some() {
            self.complete_disk(cx)?;
        }
        if let Some(link) = self.link.take() {
            cx.net.close(link, End::Slave, cx.now, false, cx.entropy);
        }
        self.dialing = None;
        self.at_connect = None;
        for (link, _) in std::mem::take(&mut self.conns) {
            cx.net.close(link, End::Master, cx.now, false, cx.entropy);
        }
        self.master_confirm = None;
        self.next_shrink = Duration::MAX;
        Ok(())
    }

    /// The controller made this node master of `epoch` with the set `{self}` at `version`.
    pub fn become_master(&mut self, cx: &mut Cx<'_>, epoch: i32, version: u64, gen: u64) -> Check {
        self.leave_role(cx)?;
        let max = self.log.max_offset();
        let changed = self
            .replica
            .become_master(epoch, max, [id_of(self.index)], true)
            .map_err(|e| {
                fail(
                    "controller_orders_are_accepted",
                    format!("node {}: {e}", self.index),
                )
            })?;
        if changed {
            // The epoch file is written before the first byte of the epoch.
            self.epoch_file = self.replica.epochs().clone();
        }
        self.set_version = version;
        self.role_gen = gen;
        self.no_consistent_point = false;
        self.next_shrink = cx.now + SHRINK_PERIOD;
        tr!(
            cx,
            "node {} becomes master of epoch {epoch} at {max}, epochs {:?}",
            self.index,
            self.replica.epochs().entries()
        );
        Ok(())
    }

    /// The controller made this node a slave of node `master` in `epoch`.
    pub fn become_slave(&mut self, cx: &mut Cx<'_>, epoch: i32, master: usize, gen: u64) -> Check {
        self.leave_role(cx)?;
        let identity = SlaveIdentity {
            broker_id: id_of(self.index),
            sync_from_last_file: false,
            async_learner: false,
        };
        let seed = cx.entropy.seed();
        let now = self.now(cx);
        self.replica
            .become_slave(addr_of(master), epoch, identity, seed, now)
            .map_err(|e| {
                fail(
                    "controller_orders_are_accepted",
                    format!("node {}: {e}", self.index),
                )
            })?;
        self.role_gen = gen;
        self.no_consistent_point = false;
        tr!(
            cx,
            "node {} becomes slave of node {master} in epoch {epoch}, log {}, epochs {:?}",
            self.index,
            self.log.max_offset(),
            self.replica.epochs().entries()
        );
        self.drive_slave(cx)
    }

    // --- crashes ---

    /// The process dies. Its connections close (or, if `lost`, nobody hears); the disk
    /// operation in progress never happens; a machine crash (`lose_tail`) also loses the log
    /// above a point at or above what was flushed. Returns where the log now ends.
    pub fn crash(&mut self, cx: &mut Cx<'_>, lost: bool, lose_tail: bool) -> u64 {
        if let Some(link) = self.link.take() {
            cx.net.close(link, End::Slave, cx.now, lost, cx.entropy);
        }
        for (link, _) in std::mem::take(&mut self.conns) {
            cx.net.close(link, End::Master, cx.now, lost, cx.entropy);
        }
        self.disk = None;
        self.dialing = None;
        self.at_connect = None;
        self.master_confirm = None;
        self.up = false;
        let max = self.log.max_offset();
        if lose_tail && self.flushed < max {
            let at = cx.entropy.range(self.flushed, max);
            self.log.truncate(at);
            self.note_cut(at);
        }
        tr!(
            cx,
            "node {} crashes (closes lost: {lost}), log [{}, {max}) kept to {}",
            self.index,
            self.log.min_offset(),
            self.log.max_offset()
        );
        self.log.max_offset()
    }

    /// The process starts again from its log and epoch file, without a role until the
    /// controller reaches it.
    pub fn restart(&mut self, cx: &mut Cx<'_>, gen: u64) {
        self.replica = Replica::new(self.config, id_of(self.index), self.epoch_file.clone());
        self.up = true;
        self.role_gen = gen;
        self.flushed = self.log.max_offset();
        tr!(
            cx,
            "node {} restarts: log {}, epoch file {:?}",
            self.index,
            self.log.max_offset(),
            self.epoch_file.entries()
        );
    }

    /// The operator rebuilds a replica that can never follow (no consistent point after an
    /// unclean election): empty log, empty epoch file.
    pub fn wipe(&mut self, cx: &mut Cx<'_>, gen: u64) {
        tr!(cx, "operator wipes node {}", self.index);
        if self.up {
            self.crash(cx, false, false);
        }
        self.log = MemoryLog::new(self.log.segment_size());
        self.epoch_file = EpochList::new();
        self.note_cut(0);
        self.restart(cx, gen);
    }

    fn note_cut(&mut self, at: u64) {
        self.cut_to = Some(self.cut_to.map_or(at, |c| c.min(at)));
    }

    // --- the producer ---

    /// A producer writes `len` bytes to this master; now and then the log is flushed.
    pub fn append(&mut self, cx: &mut Cx<'_>, salt: u8, len: u64) -> u64 {
        let Some(epoch) = self.replica.epoch() else {
            return 0;
        };
        let start = self.log.max_offset();
        let data: Vec<u8> = (start..start + len).map(|o| byte(salt, epoch, o)).collect();
        let max = self.log.push(data);
        if cx.entropy.chance(500) {
            self.flushed = max;
        }
        tr!(
            cx,
            "node {} (master of {epoch}) appends to {max}",
            self.index
        );
        max
    }

    // --- the slave's driver ---

    /// The dial `id` connected as `link`.
    pub fn connected(&mut self, cx: &mut Cx<'_>, link: u64) -> Check {
        self.dialing = None;
        self.link = Some(link);
        let now = self.now(cx);
        let stored = self.log.max_offset();
        let epochs = self.replica.epochs().clone();
        self.at_connect = Some((epochs, stored, link));
        tr!(
            cx,
            "node {} connected link {link}, stored {stored}",
            self.index
        );
        let Role::Slave { slave, .. } = self.replica.role_mut() else {
            return Err(fail(
                "dial_is_answered",
                "a connect for a node that is no slave",
            ));
        };
        slave.handle_connected(now, stored);
        self.drive_slave(cx)
    }

    /// The dial failed.
    pub fn connect_failed(&mut self, cx: &mut Cx<'_>) -> Check {
        self.dialing = None;
        let now = self.now(cx);
        if let Role::Slave { slave, .. } = self.replica.role_mut() {
            slave.handle_connect_failed(now);
        }
        self.drive_slave(cx)
    }

    /// One turn of the slave's driver loop.
    fn poll_slave(&mut self, cx: &mut Cx<'_>) -> Check {
        self.drive_slave(cx)?;
        self.read(cx)?;
        let now = self.now(cx);
        let Role::Slave { slave, .. } = self.replica.role_mut() else {
            return Ok(());
        };
        if slave.poll_timeout().is_some_and(|t| t <= now) {
            if let Err(e) = slave.handle_timeout(now) {
                self.client_error(cx, e)?;
            }
        }
        self.drive_slave(cx)
    }

    /// Everything that follows from an input until nothing changes: the disk, a close the loop
    /// decided, a dial, the frame being written.
    fn drive_slave(&mut self, cx: &mut Cx<'_>) -> Check {
        for _ in 0..OUTPUT_BOUND {
            if !matches!(self.replica.role(), Role::Slave { .. }) {
                return Ok(());
            }
            let mut progressed = self.disk_step(cx)?;
            let Role::Slave { slave, .. } = self.replica.role_mut() else {
                return Ok(());
            };
            if self.link.is_some() && !slave.is_connected() {
                let link = self.link.take().expect("checked");
                let lost = cx.lose_close(200);
                cx.net.close(link, End::Slave, cx.now, lost, cx.entropy);
                tr!(
                    cx,
                    "node {} closes link {link} (close lost: {lost})",
                    self.index
                );
                progressed = true;
            }
            let Role::Slave { slave, master, .. } = self.replica.role_mut() else {
                return Ok(());
            };
            if self.dialing.is_some() && !slave.client().is_dialing() {
                // The connect timed out: the driver drops the half-open socket.
                tr!(cx, "node {} gives up dial {:?}", self.index, self.dialing);
                self.dialing = None;
            }
            if self.link.is_none() && self.dialing.is_none() && slave.poll_dial() {
                let id = *cx.next_dial;
                *cx.next_dial += 1;
                let to = (master.port() - BASE_PORT) as usize;
                let config = cx.net.config().clone();
                let at = cx.now
                    + (config.latency + cx.entropy.duration(Duration::ZERO, config.jitter)) * 2;
                cx.dials.push(Dial {
                    id,
                    from: self.index,
                    to,
                    at,
                });
                self.dialing = Some(id);
                tr!(cx, "node {} dials node {to} ({id})", self.index);
                progressed = true;
            }
            progressed |= self.flush(cx)?;
            if !progressed {
                return Ok(());
            }
        }
        Err(fail(
            "machine_output_is_finite",
            format!("node {} keeps producing output", self.index),
        ))
    }

    /// Finishes the disk's operation when due, or takes the next one; whether anything
    /// happened.
    fn disk_step(&mut self, cx: &mut Cx<'_>) -> Result<bool, super::check::Fail> {
        if let Some((at, _)) = &self.disk {
            if *at > cx.now {
                return Ok(false);
            }
            self.complete_disk(cx)?;
            return Ok(true);
        }
        let Role::Slave { slave, .. } = self.replica.role_mut() else {
            return Ok(false);
        };
        let work = match slave.poll_disk() {
            Some(DiskOp::Truncate { offset }) => DiskWork::Truncate(offset),
            Some(DiskOp::SaveEpochs(epochs)) => DiskWork::Save(epochs.clone()),
            Some(DiskOp::Store { offset, pieces }) => DiskWork::Store(offset, pieces.to_vec()),
            None => return Ok(false),
        };
        let delay = if cx.disk_latency.is_zero() || !cx.faulty {
            Duration::ZERO
        } else {
            cx.entropy
                .log_duration(Duration::from_micros(1), cx.disk_latency)
        };
        self.disk = Some((cx.now + delay, work));
        if delay.is_zero() {
            self.complete_disk(cx)?;
        }
        Ok(true)
    }

    fn complete_disk(&mut self, cx: &mut Cx<'_>) -> Check {
        let Some((_, work)) = self.disk.take() else {
            return Ok(());
        };
        let now = self.now(cx);
        match work {
            DiskWork::Truncate(offset) => {
                self.check_cut(cx, offset)?;
                let max = self.log.truncate_to(offset).map_err(|e| {
                    fail(
                        "cut_is_the_consistent_point",
                        format!("node {}: {e}", self.index),
                    )
                })?;
                self.flushed = self.flushed.min(max);
                self.note_cut(max);
                self.truncations += 1;
                tr!(cx, "node {} cut its log to {max}", self.index);
                if let Role::Slave { slave, .. } = self.replica.role_mut() {
                    if let Err(e) = slave.handle_truncated(now, max) {
                        return Err(fail(
                            "loop_is_used_correctly",
                            format!("node {}: {e}", self.index),
                        ));
                    }
                }
            }
            DiskWork::Save(epochs) => {
                tr!(
                    cx,
                    "node {} saves epochs {:?}",
                    self.index,
                    epochs.entries()
                );
                self.epoch_file = epochs;
                if let Role::Slave { slave, .. } = self.replica.role_mut() {
                    slave.handle_epochs_saved();
                }
            }
            DiskWork::Store(offset, pieces) => {
                if cx.now < self.disk_full_until {
                    self.disk_failures += 1;
                    tr!(cx, "node {} disk full: store at {offset} fails", self.index);
                    if let Role::Slave { slave, .. } = self.replica.role_mut() {
                        slave.handle_disk_failed(now);
                    }
                    return Ok(());
                }
                if offset != self.log.max_offset() && !self.log.is_empty() {
                    return Err(fail(
                        "append_is_contiguous",
                        format!(
                            "node {}: store at {offset}, log ends at {}",
                            self.index,
                            self.log.max_offset()
                        ),
                    ));
                }
                let max = self.log.append_all(offset, &pieces).map_err(|e| {
                    fail("append_is_contiguous", format!("node {}: {e}", self.index))
                })?;
                // A slave flushes before it reports: what it acknowledged survives a crash.
                self.flushed = max;
                if let Role::Slave { slave, .. } = self.replica.role_mut() {
                    slave.handle_stored(max);
                }
            }
        }
        Ok(())
    }

    /// §5.6: a diverged slave is cut exactly to the consistent point of its epoch list (as it
    /// was when it connected) and the master's (as in the answer), and that is exactly where
    /// the two logs stop sharing bytes.
    fn check_cut(&self, cx: &Cx<'_>, offset: u64) -> Check {
        let Some((local, end, link)) = &self.at_connect else {
            // The connection that asked for the cut is gone and another began (it asks
            // again if needed); nothing to compare with.
            return Ok(());
        };
        let Some(answer) = cx.answers.get(link) else {
            return Err(fail(
                "cut_is_the_consistent_point",
                format!(
                    "node {}: a cut without a handshake answer on link {link}",
                    self.index
                ),
            ));
        };
        let point = consistent_point(local, *end, &answer.epochs, answer.log.max_offset());
        if point != Some(offset) {
            return Err(fail(
                "cut_is_the_consistent_point",
                format!(
                    "node {} cuts to {offset}; consistent point {point:?} of its epochs {:?} (log end {end}) and node {}'s {:?} (log end {})",
                    self.index,
                    local.entries(),
                    answer.master,
                    answer.epochs.entries(),
                    answer.log.max_offset()
                ),
            ));
        }
        let shared = shared_prefix(&self.log, &answer.log);
        if shared != offset {
            return Err(fail(
                "cut_keeps_exactly_the_shared_bytes",
                format!(
                    "node {} cuts to {offset} but shares {shared} bytes with node {} (epochs {:?} / {:?})",
                    self.index,
                    answer.master,
                    local.entries(),
                    answer.epochs.entries()
                ),
            ));
        }
        Ok(())
    }

    fn read(&mut self, cx: &mut Cx<'_>) -> Check {
        while let Some(link) = self.link {
            let now = self.now(cx);
            let Role::Slave { slave, .. } = self.replica.role_mut() else {
                return Ok(());
            };
            if !slave.wants_read() {
                break;
            }
            let room = slave.read_buf().len();
            match cx.net.read(link, End::Slave, cx.now, cx.entropy, room) {
                Read::Data(bytes) => {
                    let n = bytes.len();
                    slave.read_buf()[..n].copy_from_slice(&bytes);
                    if let Err(e) = slave.handle_read(now, n) {
                        self.client_error(cx, e)?;
                    }
                    self.drive_slave(cx)?;
                }
                Read::WouldBlock => break,
                Read::Eof | Read::Reset => {
                    tr!(cx, "node {} link {link} ended by peer", self.index);
                    slave.handle_closed(now);
                    self.drive_slave(cx)?;
                }
            }
        }
        Ok(())
    }

    fn client_error(&mut self, cx: &mut Cx<'_>, e: ClientError) -> Check {
        tr!(cx, "node {} closes: {e}", self.index);
        match e {
            ClientError::Silent(_) | ClientError::WriteStalled(_) => Ok(()),
            ClientError::NoConsistentPoint => {
                self.no_consistent_point = true;
                Ok(())
            }
            other => Err(fail(
                "client_error_is_expected",
                format!("node {}: {other}", self.index),
            )),
        }
    }

    /// Writes the loop's frame as far as the socket takes it; whether any byte went.
    fn flush(&mut self, cx: &mut Cx<'_>) -> Result<bool, super::check::Fail> {
        let mut progressed = false;
        while let Some(link) = self.link {
            let now = self.now(cx);
            let Role::Slave { slave, .. } = self.replica.role_mut() else {
                break;
            };
            let Some(bytes) = slave.poll_write(now) else {
                break;
            };
            match cx.net.write(link, End::Slave, cx.now, bytes, cx.entropy) {
                Write::Written(n) => {
                    progressed = true;
                    if let Err(e) = slave.handle_written(now, n) {
                        return Err(fail("loop_is_used_correctly", format!("{e}")));
                    }
                }
                Write::WouldBlock => break,
                Write::Broken => {
                    tr!(cx, "node {} write on link {link} failed", self.index);
                    slave.handle_closed(now);
                    progressed = true;
                    break;
                }
            }
        }
        Ok(progressed)
    }

    // --- the master's driver ---

    /// Node `slave`'s connect arrived as `link`.
    pub fn accept(&mut self, cx: &mut Cx<'_>, link: u64, slave: usize) {
        let now = self.now(cx);
        tr!(
            cx,
            "node {} accepts link {link} from node {slave}",
            self.index
        );
        self.conns.insert(
            link,
            Conn {
                lp: MasterLoop::new(self.config, now),
                broker: None,
                slave,
            },
        );
    }

    /// The controller answered a proposal with the set `set` at `version`. An answer that
    /// brings no newer set (a refusal of a proposal built from an older one) is ignored: the
    /// proposal pending now may still be accepted, and applying would forget it.
    pub fn apply_set(
        &mut self,
        cx: &mut Cx<'_>,
        set: &std::collections::BTreeSet<BrokerId>,
        version: u64,
    ) {
        if version <= self.set_version {
            return;
        }
        let max = self.log.max_offset();
        if let Role::Master { sync_state, .. } = self.replica.role_mut() {
            sync_state.apply(set.iter().copied(), max);
            self.set_version = version;
            tr!(
                cx,
                "node {} applies set {set:?} (version {version})",
                self.index
            );
        }
    }

    /// One turn of every connection's loop on a master.
    fn poll_master(&mut self, cx: &mut Cx<'_>) -> Check {
        let links: Vec<u64> = self.conns.keys().copied().collect();
        for link in links {
            self.poll_conn(cx, link)?;
        }
        let now = self.now(cx);
        let index = self.index;
        let max = self.log.max_offset();
        let version = self.set_version;
        let Role::Master {
            epoch, sync_state, ..
        } = self.replica.role_mut()
        else {
            return Ok(());
        };
        if cx.now >= self.next_shrink {
            sync_state.shrink(now, MAX_TIME_NOT_CAUGHT_UP);
            self.next_shrink = cx.now + SHRINK_PERIOD;
        }
        propose(cx, index, *epoch, version, sync_state);
        self.master_confirm = sync_state.confirm_offset(max).or(self.master_confirm);
        Ok(())
    }

    fn poll_conn(&mut self, cx: &mut Cx<'_>, link: u64) -> Check {
        loop {
            match cx
                .net
                .read(link, End::Master, cx.now, cx.entropy, usize::MAX)
            {
                Read::Data(bytes) => {
                    let now = self.now(cx);
                    let conn = self.conns.get_mut(&link).expect("live connection");
                    if let Err(e) = conn.lp.handle_read(now, &bytes) {
                        return self.conn_error(cx, link, e);
                    }
                    self.drain_events(cx, link);
                }
                Read::WouldBlock => break,
                Read::Eof | Read::Reset => {
                    tr!(cx, "node {} link {link} ended by peer", self.index);
                    self.close_conn(cx, link, false);
                    return Ok(());
                }
            }
        }
        let now = self.now(cx);
        let conn = self.conns.get_mut(&link).expect("live connection");
        if conn.lp.poll_timeout().is_some_and(|t| t <= now) {
            if let Err(e) = conn.lp.handle_timeout(now) {
                return self.conn_error(cx, link, e);
            }
        }
        self.transmit(cx, link)
    }

    /// The connection's events go to the sync-state set.
    fn drain_events(&mut self, cx: &mut Cx<'_>, link: u64) {
        let now = self.now(cx);
        let max = self.log.max_offset();
        let Role::Master {
            epochs, sync_state, ..
        } = self.replica.role_mut()
        else {
            return;
        };
        let start = epochs.last().map_or(0, |e| e.start);
        let conn = self.conns.get_mut(&link).expect("live connection");
        while let Some(event) = conn.lp.poll_event() {
            match event {
                MasterEvent::Handshake(hs) => conn.broker = Some(hs.broker_id),
                MasterEvent::Acked { offset, .. } => {
                    tr!(cx, "node {} link {link}: ack {offset}", self.index)
                }
                _ => {}
            }
            sync_state.handle_event(now, &event, max, start);
        }
    }

    fn transmit(&mut self, cx: &mut Cx<'_>, link: u64) -> Check {
        for _ in 0..OUTPUT_BOUND {
            let now = self.now(cx);
            let max = self.log.max_offset();
            let index = self.index;
            let Role::Master {
                epochs, sync_state, ..
            } = self.replica.role_mut()
            else {
                return Ok(());
            };
            let Some(conn) = self.conns.get_mut(&link) else {
                return Ok(());
            };
            let confirm = sync_state.confirm_offset(max);
            if confirm.is_some() {
                self.master_confirm = confirm;
            }
            let fresh = !conn.lp.connection().is_transmitting();
            let t = match conn.lp.poll_write(now, &self.log, epochs, confirm) {
                Ok(None) => return Ok(()),
                Ok(Some(t)) => t,
                Err(e) => return self.conn_error(cx, link, e),
            };
            if fresh && t.header().is_none() {
                cx.answers.insert(
                    link,
                    Answer {
                        master: index,
                        epochs: epochs.clone(),
                        log: self.log.clone(),
                    },
                );
            }
            match cx
                .net
                .write(link, End::Master, cx.now, bytes::Buf::chunk(t), cx.entropy)
            {
                Write::Written(n) => {
                    if let Err(e) = conn.lp.handle_written(now, n) {
                        return self.conn_error(cx, link, e);
                    }
                }
                Write::WouldBlock => return Ok(()),
                Write::Broken => {
                    tr!(cx, "node {} write on link {link} failed", self.index);
                    self.close_conn(cx, link, false);
                    return Ok(());
                }
            }
        }
        Err(fail(
            "machine_output_is_finite",
            format!(
                "node {} link {link} keeps producing frames at one instant",
                self.index
            ),
        ))
    }

    fn conn_error(&mut self, cx: &mut Cx<'_>, link: u64, e: MasterError) -> Check {
        tr!(cx, "node {} closes link {link}: {e}", self.index);
        match e {
            MasterError::Silent(_) | MasterError::WriteStalled(_) => {
                self.close_conn(cx, link, true);
                Ok(())
            }
            other => Err(fail(
                "master_error_is_expected",
                format!("node {} link {link}: {other}", self.index),
            )),
        }
    }

    fn close_conn(&mut self, cx: &mut Cx<'_>, link: u64, may_lose: bool) {
        let Some(conn) = self.conns.remove(&link) else {
            return;
        };
        let lost = may_lose && cx.lose_close(200);
        cx.net.close(link, End::Master, cx.now, lost, cx.entropy);
        if let (Some(id), Role::Master { sync_state, .. }) = (conn.broker, self.replica.role_mut())
        {
            // A second connection of the same broker replaced this one in the set already.
            if !self.conns.values().any(|c| c.broker == Some(id)) {
                sync_state.handle_disconnected(id);
            }
        }
    }

    /// One turn of this node's driver.
    pub fn poll(&mut self, cx: &mut Cx<'_>) -> Check {
        if !self.up {
            return Ok(());
        }
        match self.replica.role() {
            Role::Slave { .. } => self.poll_slave(cx),
            Role::Master { .. } => self.poll_master(cx),
            _ => Ok(()),
        }
    }
}

/// The master sends its set's proposal to the controller, with the version it was built from.
fn propose(cx: &mut Cx<'_>, node: usize, epoch: i32, version: u64, sync_state: &mut SyncStateSet) {
    if let Some(set) = sync_state.poll_proposal() {
        tr!(cx, "node {node} proposes {set:?} (from version {version})");
        cx.proposals.push(Proposal {
            at: cx.now + cx.controller_latency,
            node,
            epoch,
            version,
            set,
        });
    }
}
