//! The switch runs: 2-4 AutoSwitch replicas (`replica_node.rs`) behind a test-only controller
//! (`controller.rs`) that elects masters, over the same faulty network as the classic runs.
//!
//! The controller elects a new master at a higher epoch when the master crashes or is cut off
//! (after a detection delay), and, when the run has planned switches, at random moments. It
//! elects from its sync-state set (clean); in runs flagged unclean it sometimes elects outside
//! it, and does whenever no member is reachable. Meanwhile producers write to whoever acts as
//! master (a master the controller cannot reach goes on writing: a stale master), nodes crash
//! (a machine crash loses the master's unflushed tail) and restart, partitions cut nodes off,
//! connections reset, disks fill up.
//!
//! Checked after every step: the confirm-offset checkers (`switch_check.rs`), and at every cut
//! of a slave's log that it is exactly the consistent point of the two epoch lists and exactly
//! where the two logs stop sharing bytes (`replica_node.rs`). After the heal every node must
//! follow the last master with a byte-identical log and an equal epoch file, the master must
//! confirm its whole log, within a bound.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use rocketmq_ha::autoswitch::Role;
use rocketmq_ha::{Config, LogSource};

use super::check::{fail, Check};
use super::controller::{id_of, Controller, Order, Proposal};
use super::entropy::Entropy;
use super::net::{Net, NetConfig};
use super::node::{tr, Clocks};
use super::replica_node::{shared_prefix, Answer, Cx, Dial, ReplicaNode};
use super::scenario::{goodput, Fault, Faults};
use super::switch_check::{Confirmed, View};
use super::trace::Trace;
use super::{Failure, Options};

/// The fault kinds a switch run draws from (the others concern the classic master only).
pub const SWITCH_FAULTS: [Fault; 14] = [
    Fault::Latency,
    Fault::ShortReads,
    Fault::ShortWrites,
    Fault::Burst,
    Fault::PartitionOneWay,
    Fault::PartitionTwoWay,
    Fault::Reset,
    Fault::Eof,
    Fault::RefuseConnect,
    Fault::SlaveCrash,
    Fault::SlowAppend,
    Fault::Zombie,
    Fault::MasterRestart,
    Fault::LoseTail,
];

/// What happens at scheduled moments: faults, or (`None`) a planned switch.
const SCHEDULED: [Option<Fault>; 9] = [
    Some(Fault::Burst),
    Some(Fault::PartitionOneWay),
    Some(Fault::PartitionTwoWay),
    Some(Fault::Reset),
    Some(Fault::Eof),
    Some(Fault::SlaveCrash),
    Some(Fault::MasterRestart),
    Some(Fault::DiskFull),
    None,
];

/// Epoch numbers stay below this, so that every epoch writes its own bytes (see `byte`).
const MAX_EPOCH: i32 = 250;

/// Everything decided at the start of a switch run.
#[derive(Debug, Clone)]
pub struct SwitchParams {
    /// The configuration of every replica.
    pub config: Config,
    /// The commit log's segment size.
    pub segment_size: u64,
    /// How many replicas.
    pub nodes: usize,
    /// The fault kinds switched on (from [`SWITCH_FAULTS`], and `DiskFull`).
    pub faults: Faults,
    /// The controller switches masters at random moments too.
    pub planned_switches: bool,
    /// The controller may elect outside the sync-state set.
    pub unclean: bool,
    /// How long faults and the workload go on before the heal.
    pub fault_phase: Duration,
    /// Mean gap between scheduled faults and planned switches.
    pub fault_interval: Duration,
    /// Mean gap between producer writes.
    pub append_interval: Duration,
    /// Largest single write.
    pub append_max: u64,
    /// One-way network latency.
    pub latency: Duration,
    /// Extra random latency per write.
    pub jitter: Duration,
    /// Bytes in flight per direction.
    pub window: usize,
    /// Largest read.
    pub max_read: usize,
    /// Slowest disk operation on a slow disk (zero: instant).
    pub disk_latency: Duration,
    /// One way to or from the controller.
    pub controller_latency: Duration,
    /// How long the controller takes to notice a master is gone.
    pub detection: Duration,
    /// Makes each run's bytes different.
    pub salt: u8,
}

impl SwitchParams {
    /// Draws a run. `forced` replaces the drawn fault set.
    pub fn draw(e: &mut Entropy, forced: Option<Faults>) -> Self {
        let mut faults = Faults::NONE;
        for fault in SWITCH_FAULTS {
            if e.chance(500) {
                faults = faults.with(fault);
            }
        }
        if e.chance(300) {
            faults = faults.with(Fault::DiskFull);
        }
        let faults = forced.unwrap_or(faults);
        let planned_switches = e.chance(700);
        let unclean = e.chance(300);
        let nodes = e.range(2, 4) as usize;
        let segment_size = e.log_range(256, 64 * 1024);
        let latency = if faults.has(Fault::Latency) {
            e.log_duration(Duration::from_micros(50), Duration::from_millis(20))
        } else {
            Duration::from_micros(50)
        };
        let jitter = if faults.has(Fault::Latency) {
            e.duration(Duration::ZERO, latency)
        } else {
            Duration::ZERO
        };
        let one_way = latency + jitter;
        let floor = one_way * 4 + Duration::from_millis(10);
        let heartbeat =
            e.log_duration(Duration::from_millis(50).max(floor), Duration::from_secs(1));
        let housekeeping = heartbeat * e.range(3, 6) as u32;
        let batch = e.log_range(16, 32 * 1024);
        let initial = e.log_duration(Duration::from_millis(1), Duration::from_millis(300));
        let config = Config::builder()
            .heartbeat_interval(heartbeat)
            .housekeeping_interval(housekeeping)
            .transfer_batch_size(batch as u32)
            .connect_timeout(
                e.log_duration(floor.max(Duration::from_millis(20)), Duration::from_secs(1)),
            )
            .reconnect_backoff_initial(initial)
            .reconnect_backoff_max(initial + e.duration(Duration::ZERO, Duration::from_secs(1)))
            .local_failure_backoff_initial(initial)
            .local_failure_backoff_max(initial + e.duration(Duration::ZERO, Duration::from_secs(1)))
            .write_stall_timeout(e.log_duration(floor * 2, housekeeping * 2))
            .build()
            .expect("drawn configuration is valid");
        let fault_phase = e.duration(Duration::from_secs(2), Duration::from_secs(12));
        let fault_interval = e.log_duration(Duration::from_millis(50), Duration::from_secs(2));
        let append_interval = e.log_duration(Duration::from_millis(1), Duration::from_millis(100));
        // Variety finds more than volume: a few hundred KiB and some thousand frames per run.
        let mean_appends = (fault_phase.as_micros() / append_interval.as_micros().max(1)) as u64;
        let budget = (batch * 5_000).min(256 * 1024);
        let append_max = e.log_range(1, (budget / mean_appends.max(1)).clamp(1, 2048));
        let window = e.log_range(64, 1 << 20) as usize;
        let max_read = e.log_range(1, 64 * 1024) as usize;
        let disk_latency = if faults.has(Fault::SlowAppend) {
            e.log_duration(Duration::from_micros(10), Duration::from_millis(100))
        } else {
            Duration::ZERO
        };
        let controller_latency =
            e.log_duration(Duration::from_micros(10), Duration::from_millis(50));
        let detection = e.log_duration(Duration::from_millis(1), heartbeat * 3);
        let salt = e.below(256) as u8;
        SwitchParams {
            config,
            segment_size,
            nodes,
            faults,
            planned_switches,
            unclean,
            fault_phase,
            fault_interval,
            append_interval,
            append_max,
            latency,
            jitter,
            window,
            max_read,
            disk_latency,
            controller_latency,
            detection,
            salt,
        }
    }
}

/// What a passing switch run did.
#[derive(Debug, Clone, Default)]
pub struct SwitchOutcome {
    /// Hash of the whole trace: equal for equal inputs.
    pub trace_hash: u64,
    /// Steps (distinct virtual instants processed).
    pub steps: u64,
    /// Virtual time at the end.
    pub virtual_time: Duration,
    /// Number of replicas.
    pub nodes: usize,
    /// The run's fault set.
    pub faults: Faults,
    /// Whether the controller could elect outside the sync-state set.
    pub unclean_allowed: bool,
    /// Elections.
    pub elections: u64,
    /// Elections outside the sync-state set.
    pub unclean_elections: u64,
    /// Unclean elections plus machine crashes that lost confirmed bytes.
    pub unclean_events: u64,
    /// Cuts of diverged slave logs.
    pub truncations: u64,
    /// Process crashes.
    pub crashes: u64,
    /// Crashes that lost the end of a log.
    pub lost_tails: u64,
    /// Replicas the operator rebuilt (no consistent point after an unclean history).
    pub wiped: u64,
    /// Bytes producers wrote.
    pub bytes: u64,
    /// Bytes confirmed at the end (since the last unclean event).
    pub confirmed: u64,
    /// From the heal until every log converged.
    pub catch_up: Duration,
}

impl fmt::Display for SwitchOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} nodes, faults [{}], unclean allowed {}, {} elections ({} unclean), {} unclean events, {} cuts, {} crashes ({} lost tails), {} wiped, {} bytes ({} confirmed), catch-up {:?}, {} steps",
            self.nodes,
            self.faults,
            self.unclean_allowed,
            self.elections,
            self.unclean_elections,
            self.unclean_events,
            self.truncations,
            self.crashes,
            self.lost_tails,
            self.wiped,
            self.bytes,
            self.confirmed,
            self.catch_up,
            self.steps
        )
    }
}

/// Runs one switch simulation from a seed; a failure carries the seed.
pub fn run_switch_seed(seed: u64, options: &Options) -> Result<SwitchOutcome, Failure> {
    run_switch(Entropy::from_seed(seed), options).map_err(|mut f| {
        f.seed = Some(seed);
        f
    })
}

/// Runs one switch simulation. A panic becomes a [`Failure`] with checker `panic`.
pub fn run_switch(entropy: Entropy, options: &Options) -> Result<SwitchOutcome, Failure> {
    let mut sim = SwitchSim::new(entropy, options);
    let Err(fail) = super::caught(|| sim.run()) else {
        return Ok(sim.outcome());
    };
    Err(Failure {
        seed: None,
        checker: fail.checker.to_string(),
        message: fail.message,
        at: sim.now,
        trace_tail: sim.trace.tail(),
        trace_hash: sim.trace.hash(),
        switch_run: true,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Faults,
    Heal,
    Done,
}

const MAX_STEPS: u64 = 5_000_000;

struct SwitchSim {
    entropy: Entropy,
    p: SwitchParams,
    now: Duration,
    trace: Trace,
    clocks: Clocks,
    net: Net,
    nodes: Vec<ReplicaNode>,
    controller: Controller,
    confirmed: Confirmed,
    dials: Vec<Dial>,
    next_dial: u64,
    answers: BTreeMap<u64, Answer>,
    proposals: Vec<Proposal>,
    /// Restarts: (when, node).
    restarts: BTreeMap<(Duration, usize), ()>,
    /// Role generations handed out.
    gens: u64,
    phase: Phase,
    heal_at: Duration,
    bound: Duration,
    next_append: Duration,
    next_fault: Duration,
    steps: u64,
    bytes: u64,
    crashes: u64,
    lost_tails: u64,
    wiped: u64,
}

impl SwitchSim {
    fn new(mut entropy: Entropy, options: &Options) -> Self {
        let p = SwitchParams::draw(&mut entropy, options.faults);
        let mut trace = Trace::new(options.trace_tail, options.echo_trace);
        trace.line(
            Duration::ZERO,
            format_args!(
                "switch run: {} nodes, F {}, faults [{}], planned switches {}, unclean {}, {:?}, phase {:?}, latency {:?}+{:?}, window {}, read {}, controller {:?}, detection {:?}",
                p.nodes,
                p.segment_size,
                p.faults,
                p.planned_switches,
                p.unclean,
                p.config,
                p.fault_phase,
                p.latency,
                p.jitter,
                p.window,
                p.max_read,
                p.controller_latency,
                p.detection
            ),
        );
        let net = Net::new(
            NetConfig {
                latency: p.latency,
                jitter: p.jitter,
                window: p.window,
                max_read: p.max_read,
                short_reads: p.faults.has(Fault::ShortReads),
                short_writes: p.faults.has(Fault::ShortWrites),
            },
            p.nodes,
        );
        let nodes = (0..p.nodes)
            .map(|i| ReplicaNode::new(i, p.config, p.segment_size))
            .collect();
        let mut sim = SwitchSim {
            clocks: Clocks::new(Instant::now(), p.nodes),
            net,
            nodes,
            controller: Controller::new(p.nodes),
            confirmed: Confirmed::new(p.nodes),
            dials: Vec::new(),
            next_dial: 0,
            answers: BTreeMap::new(),
            proposals: Vec::new(),
            restarts: BTreeMap::new(),
            gens: 0,
            phase: Phase::Faults,
            heal_at: p.fault_phase,
            bound: Duration::MAX,
            next_append: Duration::ZERO,
            next_fault: Duration::ZERO,
            steps: 0,
            bytes: 0,
            crashes: 0,
            lost_tails: 0,
            wiped: 0,
            entropy,
            p,
            now: Duration::ZERO,
            trace,
        };
        sim.next_fault = sim.gap(sim.p.fault_interval);
        sim
    }

    fn gap(&mut self, mean: Duration) -> Duration {
        let draw = self.entropy.below(1000);
        let factor = if draw == 0 { 1000 } else { draw * 2 };
        self.now + (mean * factor as u32) / 1000 + Duration::from_micros(1)
    }

    fn cx(&mut self) -> (Cx<'_>, &mut Vec<ReplicaNode>) {
        let faulty = self.phase == Phase::Faults;
        (
            Cx {
                now: self.now,
                entropy: &mut self.entropy,
                net: &mut self.net,
                trace: &mut self.trace,
                clocks: &self.clocks,
                dials: &mut self.dials,
                next_dial: &mut self.next_dial,
                answers: &mut self.answers,
                proposals: &mut self.proposals,
                controller_latency: self.p.controller_latency,
                disk_latency: self.p.disk_latency,
                zombie: self.p.faults.has(Fault::Zombie),
                faulty,
            },
            &mut self.nodes,
        )
    }

    fn run(&mut self) -> Check {
        while self.phase != Phase::Done {
            self.step()?;
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Err(fail("simulation_progresses", "too many steps"));
            }
            let next = self.next_time();
            if next <= self.now {
                return Err(fail(
                    "simulation_progresses",
                    format!("next event {next:?} is not after now"),
                ));
            }
            self.now = next;
        }
        Ok(())
    }

    fn next_time(&self) -> Duration {
        let now = self.now;
        let mut candidates: Vec<Option<Duration>> = vec![
            self.restarts.keys().next().map(|k| k.0),
            self.net.next_event(now),
            self.controller.next_event(),
            self.proposals.iter().map(|p| p.at).min(),
            self.controller
                .master_lost_since
                .map(|t| t + self.p.detection),
        ];
        match self.phase {
            Phase::Faults => {
                candidates.push(Some(self.heal_at));
                candidates.push(Some(self.next_append));
                candidates.push(Some(self.next_fault));
            }
            Phase::Heal => candidates.push(Some(self.heal_at + self.bound)),
            Phase::Done => {}
        }
        candidates.extend(self.dials.iter().map(|d| Some(d.at)));
        candidates.extend(self.nodes.iter().map(|n| n.next_event(&self.clocks, now)));
        candidates
            .into_iter()
            .flatten()
            .filter(|t| *t > now && *t != Duration::MAX)
            .min()
            .unwrap_or(now + Duration::from_millis(100))
    }

    fn step(&mut self) -> Check {
        let now = self.now;
        while let Some((&(at, i), _)) = self.restarts.iter().next() {
            if at > now {
                break;
            }
            self.restarts.remove(&(at, i));
            if !self.nodes[i].up {
                self.restart(i);
            }
        }
        if self.phase == Phase::Faults && now >= self.heal_at {
            self.heal();
        }
        if self.phase == Phase::Faults && now >= self.next_append {
            self.workload();
            self.next_append = self.gap(self.p.append_interval);
        }
        if self.phase == Phase::Faults && now >= self.next_fault {
            self.inject()?;
            self.next_fault = self.gap(self.p.fault_interval);
        }
        self.control()?;
        self.complete_dials()?;
        {
            let (mut cx, nodes) = self.cx();
            for n in nodes.iter_mut() {
                n.poll(&mut cx)?;
            }
        }
        self.check()?;
        self.progress()
    }

    fn reachable(&self, i: usize) -> bool {
        self.nodes[i].up && !self.net.is_isolated(i, self.now)
    }

    fn next_gen(&mut self) -> u64 {
        self.gens += 1;
        self.gens
    }

    // --- the controller ---

    fn control(&mut self) -> Check {
        let now = self.now;
        self.controller.inbox.append(&mut self.proposals);
        // A proposal from a master the controller cannot reach is lost.
        let reach: Vec<bool> = (0..self.p.nodes).map(|i| self.reachable(i)).collect();
        self.controller
            .inbox
            .retain(|p| p.at > now || reach[p.node]);
        self.controller.decide(now, self.p.controller_latency);
        for answer in self.controller.answers_due(now) {
            let n = &self.nodes[answer.node];
            if reach[answer.node] && n.is_master() && n.replica.epoch() == Some(answer.epoch) {
                let (mut cx, nodes) = self.cx();
                nodes[answer.node].apply_set(&mut cx, &answer.set, answer.version);
            }
        }
        if let Some(m) = self.controller.master {
            let lost = !reach[m] || self.controller.assigned[m].is_none();
            if lost {
                self.controller.master_lost_since.get_or_insert(now);
            } else {
                self.controller.master_lost_since = None;
            }
        }
        let due = match self.controller.master {
            None => true,
            Some(_) => self
                .controller
                .master_lost_since
                .is_some_and(|t| now >= t + self.p.detection),
        };
        if due {
            self.elect(false)?;
        }
        for (i, &reachable) in reach.iter().enumerate() {
            let order = self.controller.assigned[i];
            if !reachable || order.is_none() || self.controller.delivered[i] == order {
                continue;
            }
            let gen = self.next_gen();
            let version = self.controller.version;
            let (mut cx, nodes) = self.cx();
            match order.expect("checked") {
                Order::Master { epoch } => nodes[i].become_master(&mut cx, epoch, version, gen)?,
                Order::Slave { epoch, master } => {
                    nodes[i].become_slave(&mut cx, epoch, master, gen)?
                }
            }
            self.controller.delivered[i] = order;
        }
        Ok(())
    }

    /// An election: from the reachable members (not the current master on a planned switch,
    /// nor a master that is lost); outside the set only in runs that allow it (sometimes on a
    /// planned switch, always when no member is there).
    fn elect(&mut self, planned: bool) -> Check {
        if self.controller.epoch >= MAX_EPOCH {
            return Ok(());
        }
        let master = self.controller.master;
        let lost = self.controller.master_lost_since.is_some();
        let eligible = |s: &Self, i: usize| {
            s.reachable(i)
                && !(Some(i) == master && (planned || (lost && s.controller.assigned[i].is_some())))
        };
        let members: Vec<usize> = (0..self.p.nodes)
            .filter(|&i| {
                eligible(self, i)
                    && (self.controller.members.is_empty()
                        || self.controller.members.contains(&id_of(i)))
            })
            .collect();
        let others: Vec<usize> = (0..self.p.nodes)
            .filter(|&i| eligible(self, i) && !members.contains(&i))
            .collect();
        let outside = self.p.unclean
            && !others.is_empty()
            && (members.is_empty() || (planned && self.entropy.chance(300)));
        let pool = if outside { others } else { members };
        if pool.is_empty() {
            return Ok(());
        }
        let new = pool[self.entropy.below(pool.len() as u64) as usize];
        let unclean = outside && master.is_some();
        let was = std::mem::take(&mut self.controller.members);
        let epoch = self.controller.elect(new, unclean);
        tr!(
            self,
            "controller elects node {new} master of epoch {epoch}{} (set was {was:?}, log {}, confirmed {})",
            if unclean { ", UNCLEAN" } else { "" },
            self.nodes[new].log.max_offset(),
            self.confirmed.len()
        );
        if unclean {
            self.confirmed.unclean(self.gens);
        }
        Ok(())
    }

    // --- faults ---

    fn workload(&mut self) {
        let salt = self.p.salt;
        let len = self.entropy.range(1, self.p.append_max);
        let masters: Vec<usize> = (0..self.p.nodes)
            .filter(|&i| self.nodes[i].up && self.nodes[i].is_master())
            .collect();
        for i in masters {
            let (mut cx, nodes) = self.cx();
            nodes[i].append(&mut cx, salt, len);
            self.bytes += len;
        }
    }

    fn crash(&mut self, i: usize, lose_tail: bool) {
        let (mut cx, nodes) = self.cx();
        let lost = cx.faulty && cx.zombie && cx.entropy.chance(300);
        let before = nodes[i].log.max_offset();
        let end = nodes[i].crash(&mut cx, lost, lose_tail);
        self.crashes += 1;
        if end < before {
            self.lost_tails += 1;
        }
        self.controller.delivered[i] = None;
        if self.controller.master == Some(i) {
            // Its controller session ends: it is not made master of this epoch again.
            self.controller.assigned[i] = None;
            self.controller.master_lost_since.get_or_insert(self.now);
        }
        // Whatever the node's role: a master given its role before the last unclean event is
        // not checked itself, but the slaves it feeds since are, and their confirm offsets
        // come from it.
        if end < before && end < self.confirmed.len() {
            tr!(
                self,
                "node {i} lost confirmed bytes [{end}, {}): unclean from here",
                self.confirmed.len()
            );
            self.confirmed.unclean(self.gens);
        }
        let long = self.p.config.housekeeping_interval() * 2;
        let d = self.entropy.log_duration(Duration::from_millis(1), long);
        self.restarts.insert((self.now + d, i), ());
    }

    fn restart(&mut self, i: usize) {
        let gen = self.next_gen();
        let (mut cx, nodes) = self.cx();
        nodes[i].restart(&mut cx, gen);
    }

    fn inject(&mut self) -> Check {
        let kinds: Vec<Option<Fault>> = SCHEDULED
            .iter()
            .copied()
            .filter(|&k| k.map_or(self.p.planned_switches, |k| self.p.faults.has(k)))
            .collect();
        if kinds.is_empty() {
            return Ok(());
        }
        let kind = kinds[self.entropy.below(kinds.len() as u64) as usize];
        let long = self.p.config.housekeeping_interval() * 2;
        let now = self.now;
        let n = self.p.nodes as u64;
        let links: Vec<u64> = self.net.links().map(|l| l.id).collect();
        let link =
            (!links.is_empty()).then(|| links[self.entropy.below(links.len() as u64) as usize]);
        let Some(kind) = kind else {
            tr!(self, "controller: planned switch");
            return self.elect(true);
        };
        match kind {
            Fault::SlaveCrash => {
                let i = self.entropy.below(n) as usize;
                if self.nodes[i].up && self.controller.master != Some(i) {
                    self.crash(i, false);
                }
            }
            Fault::MasterRestart => {
                if let Some(m) = self.controller.master {
                    if self.nodes[m].up {
                        let lose = self.p.faults.has(Fault::LoseTail) && self.entropy.chance(600);
                        self.crash(m, lose);
                    }
                }
            }
            Fault::DiskFull => {
                let i = self.entropy.below(n) as usize;
                let d = self.entropy.log_duration(Duration::from_millis(1), long);
                tr!(self, "fault: node {i} disk full for {d:?}");
                let node = &mut self.nodes[i];
                node.disk_full_until = node.disk_full_until.max(now + d);
            }
            other => {
                let hold_max = self.p.config.housekeeping_interval();
                let (e, t) = (&mut self.entropy, &mut self.trace);
                if !self
                    .net
                    .inject_fault(other, link, n, hold_max, long, now, e, t)
                {
                    return Err(fail("simulator", format!("{other:?} is not scheduled")));
                }
            }
        }
        Ok(())
    }

    fn complete_dials(&mut self) -> Check {
        let now = self.now;
        let (due, rest): (Vec<Dial>, Vec<Dial>) = std::mem::take(&mut self.dials)
            .into_iter()
            .partition(|d| d.at <= now);
        self.dials = rest;
        for dial in due {
            let (from, to) = (dial.from, dial.to);
            if !self.nodes[from].up || self.nodes[from].dialing != Some(dial.id) {
                continue;
            }
            if self.net.is_partitioned(from, now) || self.net.is_partitioned(to, now) {
                tr!(self, "node {from} dial {} lost in a partition", dial.id);
                continue;
            }
            let refused = self.p.faults.has(Fault::RefuseConnect)
                && self.phase == Phase::Faults
                && self.entropy.chance(300);
            let instance = self.nodes[to].role_gen;
            let (mut cx, nodes) = self.cx();
            if refused || !nodes[to].up || !nodes[to].is_master() {
                tr!(cx, "node {from} dial {} refused", dial.id);
                nodes[from].connect_failed(&mut cx)?;
                continue;
            }
            let link = cx.net.open_between(from, Some(to), instance);
            nodes[to].accept(&mut cx, link, from);
            nodes[from].connected(&mut cx, link)?;
        }
        Ok(())
    }

    // --- checks and phases ---

    fn check(&mut self) -> Check {
        for i in 0..self.p.nodes {
            let cut_to = self.nodes[i].cut_to.take();
            let n = &self.nodes[i];
            if !n.up {
                if let Some(at) = cut_to {
                    self.confirmed.note_cut(i, at);
                }
                continue;
            }
            let current = self.controller.master == Some(i)
                && n.is_master()
                && n.replica.epoch() == Some(self.controller.epoch);
            self.confirmed.check(
                View {
                    index: i,
                    log: &n.log,
                    role_gen: n.role_gen,
                    confirm: n.confirm_offset(),
                    cut_to,
                },
                current,
            )?;
            if n.no_consistent_point && self.confirmed.unclean_events == 0 {
                return Err(fail(
                    "consistent_point_exists",
                    format!(
                        "node {i} found no consistent point with its master in a clean history (epochs {:?})",
                        n.replica.epochs().entries()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn heal(&mut self) {
        self.phase = Phase::Heal;
        self.net.heal();
        tr!(self, "heal: faults stop");
        for i in 0..self.p.nodes {
            self.nodes[i].disk_full_until = Duration::ZERO;
            if !self.nodes[i].up {
                self.restart(i);
            }
        }
        self.restarts.clear();
        let c = self.p.config;
        let round_trip = (self.p.latency + self.p.jitter) * 2 + Duration::from_millis(1);
        let longest = self
            .nodes
            .iter()
            .map(|n| n.log.max_offset())
            .max()
            .unwrap_or(0);
        let windows = longest / goodput(self.p.window, u64::from(c.transfer_batch_size())) + 2;
        let transfer = round_trip * windows.min(u64::from(u32::MAX)) as u32;
        self.bound = self.p.detection * 2
            + self.p.controller_latency * 8
            + (c.housekeeping_interval() + c.heartbeat_interval()) * 4
            + (c.reconnect_backoff_max() + c.connect_timeout()) * 4
            + c.local_failure_backoff_max() * 2
            + c.write_stall_timeout() * 2
            + super::replica_node::SHRINK_PERIOD * 2
            + transfer * 8
            + Duration::from_secs(1);
    }

    /// Whether every node follows the controller's master with all of its log, and the master
    /// confirms all of it.
    fn converged(&self) -> Option<usize> {
        let m = self.controller.master?;
        let master = &self.nodes[m];
        let max = master.log.max_offset();
        let ready = master.up
            && master.is_master()
            && master.replica.epoch() == Some(self.controller.epoch)
            && master.master_confirm == Some(max)
            && self.nodes.iter().enumerate().all(|(i, n)| {
                i == m
                    || (n.up
                        && self.controller.delivered[i] == self.controller.assigned[i]
                        && n.slave().is_some_and(|s| s.is_connected())
                        && !n.pending_disk()
                        && n.log.max_offset() == max
                        && n.epoch_file == master.epoch_file)
            });
        ready.then_some(m)
    }

    fn progress(&mut self) -> Check {
        if self.phase != Phase::Heal {
            return Ok(());
        }
        // The operator rebuilds replicas that can never follow after an unclean history.
        let stuck: Vec<usize> = (0..self.p.nodes)
            .filter(|&i| self.nodes[i].no_consistent_point)
            .collect();
        for i in stuck {
            self.wiped += 1;
            let gen = self.next_gen();
            let (mut cx, nodes) = self.cx();
            nodes[i].wipe(&mut cx, gen);
            self.controller.delivered[i] = None;
        }
        if let Some(m) = self.converged() {
            let master = &self.nodes[m];
            for (i, n) in self.nodes.iter().enumerate() {
                let shared = shared_prefix(&n.log, &master.log);
                if shared != master.log.max_offset() {
                    return Err(fail(
                        "logs_converge_after_heal",
                        format!("node {i} differs from master node {m} at {shared}"),
                    ));
                }
            }
            tr!(
                self,
                "converged {:?} after the heal: {} bytes on {} nodes, master node {m}, epochs {:?}",
                self.now - self.heal_at,
                master.log.max_offset(),
                self.p.nodes,
                master.epoch_file.entries()
            );
            self.bound = self.now - self.heal_at;
            self.phase = Phase::Done;
        } else if self.now >= self.heal_at + self.bound {
            return Err(fail("logs_converge_after_heal", self.lag_report()));
        }
        Ok(())
    }

    fn lag_report(&self) -> String {
        let mut s = format!(
            "not converged {:?} after the heal (bound {:?}); controller: master {:?} epoch {} set {:?};",
            self.now - self.heal_at,
            self.bound,
            self.controller.master,
            self.controller.epoch,
            self.controller.members
        );
        for (i, n) in self.nodes.iter().enumerate() {
            s += &format!(
                " node {i}: up {} role {} epoch {:?} log {} epoch file {:?} confirm {:?} connected {:?} pending disk {};",
                n.up,
                match n.replica.role() {
                    Role::Master { .. } => "master",
                    Role::Slave { .. } => "slave",
                    _ => "none",
                },
                n.replica.epoch(),
                n.log.max_offset(),
                n.epoch_file.entries(),
                n.confirm_offset(),
                n.slave().map(|s| s.is_connected()),
                n.pending_disk()
            );
        }
        s
    }

    fn outcome(&self) -> SwitchOutcome {
        SwitchOutcome {
            trace_hash: self.trace.hash(),
            steps: self.steps,
            virtual_time: self.now,
            nodes: self.p.nodes,
            faults: self.p.faults,
            unclean_allowed: self.p.unclean,
            elections: self.controller.elections,
            unclean_elections: self.controller.unclean_elections,
            unclean_events: self.confirmed.unclean_events,
            truncations: self.nodes.iter().map(|n| n.truncations).sum(),
            crashes: self.crashes,
            lost_tails: self.lost_tails,
            wiped: self.wiped,
            bytes: self.bytes,
            confirmed: self.confirmed.len(),
            catch_up: self.bound,
        }
    }
}
