//! Deterministic network-fault simulation of rocketmq-ha replication.
//!
//! One master (a `MasterService` and a `MasterConnection` per connection) and 1-4 slaves
//! (`HaClient`), with in-memory logs, a virtual clock and a simulated network of TCP-like byte
//! streams. No threads, sockets or real time: the real machines run under drivers that do
//! exactly what a transport does. One [`Entropy`] decides everything: workload, topology,
//! configuration, faults and every read and write size.
//!
//! This file is the simulator's entry module and is shared: the `sim` test target includes it
//! from `tests/sim/main.rs`, and the cargo-fuzz target `sim_schedule` includes it with
//! `#[path = "../../tests/sim/lib.rs"] mod sim;` and drives [`run`] with
//! `Entropy::from_bytes(data)`. Keep it free of test-harness code (no `#[test]`, no environment
//! variables), depending only on `rocketmq-ha`, `bytes` and std, and keep [`run`],
//! [`run_with`], [`run_seed`], [`Entropy`], [`Options`], [`Outcome`] and [`Failure`] stable.
//!
//! The **switch runs** (`switch.rs`) put RocketMQ 5's AutoSwitch on the same network: 2-4
//! replicas (`replica_node.rs`, each a `Replica` driven as a broker drives it) behind a
//! test-only controller (`controller.rs`) that elects masters at higher epochs when the master
//! crashes or is cut off, and at random, from its sync-state set (and, in runs flagged unclean,
//! outside it). Their checkers are in `switch_check.rs` and at every cut in `replica_node.rs`;
//! [`run_switch_seed`] runs one.
//!
//! A classic run has three phases: *faults* (workload and fault injection), *heal* (faults stop,
//! the workload stops after one last append, and every slave must catch up within a bound
//! computed from the configuration), and *idle* (longer than the housekeeping interval:
//! heartbeats alone must keep every healthy connection up). Invariants are checked after every
//! step; see `check.rs`. A switch run has the first two: after the heal every replica must
//! follow the last master with a byte-identical log and epoch file within a bound.
#![allow(dead_code)]

mod check;
mod controller;
mod entropy;
mod history;
mod net;
mod node;
mod replica_node;
mod scenario;
mod switch;
mod switch_check;
mod trace;

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rocketmq_ha::{LogSink, LogSource, MemoryLog};

pub use entropy::Entropy;
pub use scenario::{Fault, Faults, Params, ALL_FAULTS};
pub use switch::{run_switch, run_switch_seed, SwitchOutcome};

use check::{fail, Check, Fail};
use history::History;
use net::{Net, NetConfig};
use node::{tr, Clocks, Ctx, Dial, MasterNode, SlaveNode};
use scenario::SCHEDULED_FAULTS;
use trace::Trace;

/// How a run is observed (none of this changes what happens in it).
#[derive(Debug, Clone)]
pub struct Options {
    /// How many trace lines a failure shows.
    pub trace_tail: usize,
    /// Print every trace line to stderr as it happens.
    pub echo_trace: bool,
    /// Use this fault set instead of drawing one (the draw still consumes the same entropy).
    pub faults: Option<Faults>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            trace_tail: 60,
            echo_trace: false,
            faults: None,
        }
    }
}

/// What a passing run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Hash of the whole trace: equal for equal inputs.
    pub trace_hash: u64,
    /// Trace lines.
    pub trace_lines: u64,
    /// Steps (distinct virtual instants processed).
    pub steps: u64,
    /// Virtual time at the end.
    pub virtual_time: Duration,
    /// The run's fault set.
    pub faults: Faults,
    /// Number of slaves.
    pub slaves: usize,
    /// When faults stopped.
    pub heal_at: Duration,
    /// From the heal until every slave had caught up.
    pub catch_up: Duration,
    /// The bound `catch_up` was checked against.
    pub catch_up_bound: Duration,
    /// Whether a partition was still in force when the network healed.
    pub partitioned_at_heal: bool,
    /// Bytes the master wrote.
    pub bytes_written: u64,
    /// Connections the master accepted.
    pub connections: u64,
    /// Sync waits completed Ok / timed out / shut down.
    pub tickets: (u64, u64, u64),
    /// Slaves that ended holding bytes from an older version (a lost master tail; §7.2 #10).
    pub divergent_slaves: usize,
    /// Slaves the operator had to wipe (stranded below the retained range).
    pub wiped_slaves: usize,
    /// Connections slaves closed because a report made no progress (the write-stall limit).
    pub report_stall_closes: u64,
    /// Failed local stores (a full disk).
    pub local_failures: u64,
}

/// A broken invariant (or a panic), with what is needed to reproduce and understand it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed, when the run came from one.
    pub seed: Option<u64>,
    /// The checker that failed ("panic" for a panic).
    pub checker: String,
    /// What it saw.
    pub message: String,
    /// Virtual time of the failure.
    pub at: Duration,
    /// The last trace lines.
    pub trace_tail: Vec<String>,
    /// Hash of the trace up to the failure.
    pub trace_hash: u64,
    /// Whether it was a switch run (they replay with their own variable).
    pub switch_run: bool,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invariant `{}` failed at {:?} (virtual): {}",
            self.checker, self.at, self.message
        )?;
        writeln!(f, "last {} trace lines:", self.trace_tail.len())?;
        for line in &self.trace_tail {
            writeln!(f, "  {line}")?;
        }
        if let Some(seed) = self.seed {
            let (var, file) = if self.switch_run {
                ("HA_SIM_SWITCH_SEED", "switch_regressions.txt")
            } else {
                ("HA_SIM_SEED", "regressions.txt")
            };
            writeln!(
                f,
                "reproduce with: {var}={seed} cargo test --release --test sim -- --nocapture"
            )?;
            writeln!(f, "and once fixed, add {seed} to tests/sim/{file}")?;
        }
        Ok(())
    }
}

/// Runs one simulation driven by `entropy` with default options.
pub fn run(entropy: Entropy) -> Result<Outcome, Failure> {
    run_with(entropy, &Options::default())
}

/// Runs `run`, a panic inside it (a machine's or the simulator's) becoming a [`Fail`] with
/// checker `panic`.
pub(crate) fn caught(run: impl FnOnce() -> Result<(), Fail>) -> Result<(), Fail> {
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            Err(Fail {
                checker: "panic",
                message,
            })
        }
    }
}

/// Runs one simulation from a seed; a failure carries the seed.
pub fn run_seed(seed: u64, options: &Options) -> Result<Outcome, Failure> {
    run_with(Entropy::from_seed(seed), options).map_err(|mut f| {
        f.seed = Some(seed);
        f
    })
}

/// Runs one simulation. Never panics: a panic inside (a machine's or the simulator's) becomes a
/// [`Failure`] with checker `panic`.
pub fn run_with(entropy: Entropy, options: &Options) -> Result<Outcome, Failure> {
    let mut sim = Sim::new(entropy, options);
    let Err(fail) = caught(|| sim.run()) else {
        return Ok(sim.outcome());
    };
    Err(Failure {
        seed: None,
        checker: fail.checker.to_string(),
        message: fail.message,
        at: sim.now,
        trace_tail: sim.trace.tail(),
        trace_hash: sim.trace.hash(),
        switch_run: false,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Faults,
    Heal,
    Idle,
    Done,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Resume,
    RestartSlave(usize),
    MasterUp,
}

/// Guards against a simulator bug that would loop forever at one instant.
const MAX_STEPS: u64 = 20_000_000;

struct Sim {
    entropy: Entropy,
    p: Params,
    now: Duration,
    trace: Trace,
    history: History,
    clocks: Clocks,
    net: Net,
    master: MasterNode,
    slaves: Vec<SlaveNode>,
    dials: Vec<Dial>,
    next_dial: u64,
    queue: BTreeMap<(Duration, u64), Action>,
    queue_seq: u64,
    phase: Phase,
    heal_at: Duration,
    next_append: Duration,
    next_fault: Duration,
    bound: Duration,
    caught_up_at: Option<Duration>,
    /// Clocks that jumped back are repaid by then; only then can connections be judged idle.
    quiet_from: Duration,
    idle_until: Duration,
    steps: u64,
    bytes_written: u64,
    partitioned_at_heal: bool,
    wiped: usize,
}

impl Sim {
    fn new(mut entropy: Entropy, options: &Options) -> Sim {
        let epoch = Instant::now();
        let p = Params::draw(&mut entropy, options.faults);
        let mut trace = Trace::new(options.trace_tail, options.echo_trace);
        let mut history = History::new(entropy.seed(), p.base);
        let mut clocks = Clocks::new(epoch, p.slaves + 1);
        if p.faults.has(Fault::Clock) {
            // Every node's clock is off by up to ±2 s from the start.
            for node in 0..=p.slaves {
                let skew = entropy.range(0, 4_000_000_000) as i64 - 2_000_000_000;
                clocks.jump(node, skew);
            }
        }
        let f = p.segment_size;

        // The master's log before the run, maybe with old segments already deleted.
        let mut log = MemoryLog::with_base(f, p.base);
        if p.initial_len > 0 {
            log.push(history.extend(p.initial_len as usize));
        }
        let behind = p.faults.has(Fault::BehindRetained);
        let mut slave_logs = Vec::new();
        for _ in 0..p.slaves {
            // A slave starting "behind" holds an old prefix of the master's log.
            let mut slave_log = MemoryLog::new(f);
            if behind && !log.is_empty() && entropy.chance(600) {
                let (min, max) = (log.min_offset(), log.max_offset());
                let end = entropy.range(min + 1, max);
                let start = if entropy.chance(500) {
                    min
                } else {
                    rocketmq_ha::segment_start(entropy.range(min, end - 1), f).max(min)
                };
                slave_log
                    .append(start, bytes::Bytes::from(history.content(0, start, end)))
                    .expect("an empty log accepts any start");
            }
            slave_logs.push(slave_log);
        }
        if behind && !log.is_empty() && entropy.chance(500) {
            let upto = entropy.range(log.min_offset(), log.max_offset());
            log.delete_segments_before(upto);
        }

        let start = clocks.instant(0, Duration::ZERO);
        let mut master = MasterNode::new(p.config, log, start);
        // With several slaves the last one is granted a full copy (`Admission::full_copy_for`),
        // so runs mix both start rules. Derived from the drawn parameters, not drawn: a new
        // draw would shift every later one and change what the recorded seeds replay.
        if p.slaves > 1 {
            master.grant_full_copy(p.slaves - 1);
        }
        // Every slave checks the frames' layout against its own segments (the same size as the
        // master's here): under every fault, the check must never fire
        // (`client_error_is_expected`).
        let slave_config = p
            .config
            .to_builder()
            .local_segment_size(std::num::NonZeroU64::new(f))
            .build()
            .expect("a valid configuration stays valid");
        let slaves: Vec<SlaveNode> = slave_logs
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                SlaveNode::new(
                    i,
                    l,
                    slave_config,
                    entropy.seed(),
                    clocks.instant(i + 1, Duration::ZERO),
                )
            })
            .collect();
        let net = Net::new(
            NetConfig {
                latency: p.latency,
                jitter: p.jitter,
                window: p.window,
                max_read: p.max_read,
                short_reads: p.faults.has(Fault::ShortReads),
                short_writes: p.faults.has(Fault::ShortWrites),
            },
            p.slaves,
        );
        trace.line(
            Duration::ZERO,
            format_args!(
                "start: {} slaves, F {}, faults [{}], {:?}, phase {:?}, latency {:?}+{:?}, window {}, read {}",
                p.slaves, f, p.faults, p.config, p.fault_phase, p.latency, p.jitter, p.window, p.max_read
            ),
        );
        trace.line(
            Duration::ZERO,
            format_args!(
                "master log [{}, {}); slave logs {:?}",
                master.log.min_offset(),
                master.log.max_offset(),
                slaves
                    .iter()
                    .map(|s| (s.log.min_offset(), s.log.max_offset()))
                    .collect::<Vec<_>>()
            ),
        );
        let mut sim = Sim {
            heal_at: p.fault_phase,
            next_append: Duration::ZERO,
            next_fault: Duration::MAX,
            entropy,
            p,
            now: Duration::ZERO,
            trace,
            history,
            clocks,
            net,
            master,
            slaves,
            dials: Vec::new(),
            next_dial: 0,
            queue: BTreeMap::new(),
            queue_seq: 0,
            phase: Phase::Faults,
            bound: Duration::ZERO,
            caught_up_at: None,
            quiet_from: Duration::ZERO,
            idle_until: Duration::ZERO,
            steps: 0,
            bytes_written: 0,
            partitioned_at_heal: false,
            wiped: 0,
        };
        if SCHEDULED_FAULTS.iter().any(|&k| sim.p.faults.has(k)) {
            sim.next_fault = sim.gap(sim.p.fault_interval);
        }
        sim
    }

    /// An exponential-ish gap with the given mean (zero draw: the mean).
    fn gap(&mut self, mean: Duration) -> Duration {
        let draw = self.entropy.below(1000);
        let factor = if draw == 0 { 1000 } else { draw * 2 };
        self.now + (mean * factor as u32) / 1000 + Duration::from_micros(1)
    }

    fn schedule(&mut self, at: Duration, action: Action) {
        self.queue_seq += 1;
        self.queue.insert((at, self.queue_seq), action);
    }

    fn ctx(&mut self) -> (Ctx<'_>, &mut MasterNode, &mut Vec<SlaveNode>) {
        let faulty = self.phase == Phase::Faults;
        let idle = self.phase == Phase::Idle;
        (
            Ctx {
                now: self.now,
                p: &self.p,
                entropy: &mut self.entropy,
                net: &mut self.net,
                trace: &mut self.trace,
                history: &self.history,
                clocks: &self.clocks,
                dials: &mut self.dials,
                next_dial: &mut self.next_dial,
                faulty,
                idle,
            },
            &mut self.master,
            &mut self.slaves,
        )
    }

    fn run(&mut self) -> Check {
        // The slaves' first action is to dial.
        {
            let (mut cx, _, slaves) = self.ctx();
            for s in slaves.iter_mut() {
                s.start(&mut cx)?;
            }
        }
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
            self.queue.keys().next().map(|k| k.0),
            self.net.next_event(now),
            self.master.next_event(&self.clocks, now),
        ];
        match self.phase {
            Phase::Faults => {
                candidates.push(Some(self.heal_at));
                candidates.push(Some(self.next_append));
                candidates.push(Some(self.next_fault));
            }
            Phase::Heal => {
                candidates.push(Some(self.heal_at + self.bound));
                candidates.push(Some(self.quiet_from));
            }
            Phase::Idle => candidates.push(Some(self.idle_until)),
            Phase::Done => {}
        }
        candidates.extend(self.dials.iter().map(|d| Some(d.at)));
        candidates.extend(self.slaves.iter().map(|s| s.next_event(&self.clocks, now)));
        candidates
            .into_iter()
            .flatten()
            .filter(|t| *t > now && *t != Duration::MAX)
            .min()
            .unwrap_or(now + Duration::from_secs(1))
    }

    fn step(&mut self) -> Check {
        let now = self.now;
        // Timed actions: ends of stalls, restarts.
        while let Some((&key, &action)) = self.queue.iter().next() {
            if key.0 > now {
                break;
            }
            self.queue.remove(&key);
            self.act(action)?;
        }
        if self.phase == Phase::Faults && now >= self.heal_at {
            self.heal()?;
        }
        if self.phase == Phase::Faults && now >= self.next_append {
            self.workload()?;
            self.next_append = self.gap(self.p.append_interval);
        }
        if self.phase == Phase::Faults && now >= self.next_fault {
            self.inject_fault()?;
            self.next_fault = self.gap(self.p.fault_interval);
        }
        self.complete_dials()?;
        let stored_ever: Vec<u64> = self.slaves.iter().map(|s| s.stored_ever).collect();
        {
            let (mut cx, master, slaves) = self.ctx();
            master.poll(&mut cx, &stored_ever)?;
            for s in slaves.iter_mut() {
                s.poll(&mut cx)?;
            }
        }
        self.check_global()?;
        self.progress()
    }

    fn act(&mut self, action: Action) -> Check {
        let (mut cx, master, slaves) = self.ctx();
        match action {
            Action::Resume => {}
            Action::RestartSlave(i) => {
                if slaves[i].crashed {
                    slaves[i].restart(&mut cx)?;
                }
            }
            Action::MasterUp => {
                if !master.up {
                    master.restart(&mut cx);
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
            let slave = dial.slave;
            let partitioned = self.net.is_partitioned(slave, now);
            let (mut cx, master, slaves) = self.ctx();
            let s = &mut slaves[slave];
            if s.crashed || s.dialing != Some(dial.id) {
                // The driver gave up (or the process died): the late SYN finds nobody.
                continue;
            }
            if partitioned {
                // Lost in the partition; the driver's connect timeout will fire.
                tr!(cx, "slave {slave} dial {} lost in a partition", dial.id);
                continue;
            }
            if !dial.accept || !master.up {
                tr!(cx, "slave {slave} dial {} refused", dial.id);
                s.connect_failed(&mut cx)?;
                continue;
            }
            let link = cx.net.open(slave, master.instance);
            master.accept(&mut cx, link, slave)?;
            s.connected(&mut cx, link)?;
        }
        Ok(())
    }

    fn workload(&mut self) -> Check {
        if !self.master.up {
            return Ok(());
        }
        let len = self.entropy.range(1, self.p.append_max) as usize;
        let data = self.history.extend(len);
        self.bytes_written += len as u64;
        let (mut cx, master, _) = self.ctx();
        master.append(&mut cx, data)
    }

    fn inject_fault(&mut self) -> Check {
        let kinds: Vec<Fault> = SCHEDULED_FAULTS
            .iter()
            .copied()
            .filter(|&k| self.p.faults.has(k))
            .collect();
        let kind = kinds[self.entropy.below(kinds.len() as u64) as usize];
        let c = self.p.config;
        let long = c.housekeeping_interval() * 2;
        let now = self.now;
        let n = self.p.slaves;
        let links: Vec<u64> = self.net.links().map(|l| l.id).collect();
        let link =
            (!links.is_empty()).then(|| links[self.entropy.below(links.len() as u64) as usize]);
        match kind {
            Fault::Stall => {
                let node = self.entropy.below(n as u64 + 1) as usize;
                let d = self.entropy.log_duration(Duration::from_millis(1), long);
                tr!(self, "fault: node {node} stalls for {d:?}");
                if node == 0 {
                    self.master.paused_until = self.master.paused_until.max(now + d);
                } else {
                    let s = &mut self.slaves[node - 1];
                    s.paused_until = s.paused_until.max(now + d);
                }
                self.schedule(now + d, Action::Resume);
            }
            Fault::SlaveCrash => {
                let i = self.entropy.below(n as u64) as usize;
                if !self.slaves[i].crashed {
                    let d = self.entropy.log_duration(Duration::from_millis(1), long);
                    let (mut cx, _, slaves) = self.ctx();
                    let lost = cx.lose_close(500);
                    slaves[i].crash(&mut cx, lost);
                    self.schedule(now + d, Action::RestartSlave(i));
                }
            }
            Fault::Clock => {
                let node = self.entropy.below(n as u64 + 1) as usize;
                let delta = if self.entropy.chance(300) {
                    -(self.entropy.range(1, 5_000_000) as i64) * 1000
                } else {
                    self.entropy
                        .log_duration(Duration::from_millis(1), long)
                        .as_nanos() as i64
                };
                self.clocks.jump(node, delta);
                tr!(
                    self,
                    "fault: node {node} clock jumps {:+.3}ms",
                    delta as f64 / 1e6
                );
            }
            Fault::Retention => {
                if self.master.up {
                    let log = &mut self.master.log;
                    let keep = self.entropy.below(log.segment_size() * 4);
                    let before = log.max_offset().saturating_sub(keep);
                    let min = log.delete_segments_before(before);
                    tr!(
                        self,
                        "fault: master deletes segments before {before}: min {min}"
                    );
                }
            }
            Fault::MasterRestart => {
                if self.master.up {
                    let d = self
                        .entropy
                        .log_duration(Duration::from_millis(1), c.heartbeat_interval() * 2);
                    if self.p.faults.has(Fault::LoseTail) && self.entropy.chance(600) {
                        let log = &self.master.log;
                        let floor = log
                            .min_offset()
                            .max(log.max_offset().saturating_sub(self.p.segment_size * 2));
                        let at = self.entropy.range(floor, log.max_offset());
                        self.master.truncate_on_restart = Some(at);
                        if self.history.truncate(at) {
                            tr!(
                                self,
                                "fault: master will lose its tail from {at} (history version {})",
                                self.history.current()
                            );
                        }
                    }
                    let (mut cx, master, _) = self.ctx();
                    let lost = cx.lose_close(300);
                    master.crash(&mut cx, lost)?;
                    self.schedule(now + d, Action::MasterUp);
                }
            }
            Fault::Zombie => {
                let i = self.entropy.below(n as u64) as usize;
                let (mut cx, _, slaves) = self.ctx();
                slaves[i].abandon(&mut cx)?;
            }
            Fault::DiskFull => {
                let i = self.entropy.below(n as u64) as usize;
                let d = self.entropy.log_duration(Duration::from_millis(1), long);
                tr!(self, "fault: slave {i} disk full for {d:?}");
                let s = &mut self.slaves[i];
                s.disk_full_until = s.disk_full_until.max(now + d);
            }
            Fault::DeafMaster => {
                if let Some(link) = link {
                    let d = self.entropy.log_duration(Duration::from_millis(1), long);
                    tr!(self, "fault: master stops reading link {link} for {d:?}");
                    let until = self.master.deaf.entry(link).or_default();
                    *until = (*until).max(now + d);
                }
            }
            other => {
                let hold_max = c.housekeeping_interval();
                let (e, t) = (&mut self.entropy, &mut self.trace);
                if !self
                    .net
                    .inject_fault(other, link, n as u64, hold_max, long, now, e, t)
                {
                    return Err(fail("simulator", format!("{other:?} is not scheduled")));
                }
            }
        }
        Ok(())
    }

    /// Faults stop. Everything frozen or down resumes; the workload makes one last append
    /// that takes the master past every slave (so a slave left ahead by a lost tail is behind
    /// again, and an empty slave has a non-empty last segment to fetch).
    fn heal(&mut self) -> Check {
        self.phase = Phase::Heal;
        let now = self.now;
        self.partitioned_at_heal = (0..self.p.slaves).any(|i| self.net.is_partitioned(i, now));
        self.net.heal();
        self.queue.clear();
        tr!(
            self,
            "heal: faults stop (partition in force: {})",
            self.partitioned_at_heal
        );
        {
            let (mut cx, master, slaves) = self.ctx();
            master.paused_until = Duration::ZERO;
            master.deaf.clear();
            if !master.up {
                master.restart(&mut cx);
            }
            for s in slaves.iter_mut() {
                s.paused_until = Duration::ZERO;
                if s.crashed {
                    s.restart(&mut cx)?;
                }
                // What a stalled slave still had queued for its disk lands now, so the check
                // for stranded slaves below sees its real log.
                s.flush_appends(&mut cx)?;
            }
        }
        self.wipe_stranded()?;
        self.top_up_past(self.master.log.max_offset())?;
        let debt = (0..=self.p.slaves)
            .map(|node| self.clocks.debt(node, self.now))
            .max()
            .unwrap_or_default();
        // A clock that jumped back silences its node until the debt is repaid, which may doom
        // connections (the peer's housekeeping runs meanwhile): allow them to close and come
        // back before judging connections idle.
        let settle = if debt.is_zero() {
            Duration::ZERO
        } else {
            debt + self.p.config.housekeeping_interval() + self.p.config.heartbeat_interval()
        };
        self.quiet_from = self.now + settle;
        self.bound = self.catch_up_bound() + settle;
        tr!(
            self,
            "heal: master at {}, clock debt {debt:?}, catch-up bound {:?}",
            self.master.log.max_offset(),
            self.bound
        );
        Ok(())
    }

    /// The workload writes once more whenever a slave is ahead of the master (a lost tail,
    /// §7.2 #10); bytes from before the loss may still arrive after the heal.
    fn top_up(&mut self) -> Check {
        let max = self.master.log.max_offset();
        if self.slaves.iter().any(|s| s.log.max_offset() > max) {
            self.top_up_past(max)?;
        }
        Ok(())
    }

    /// Appends until the master is past every slave and past `at`, ending inside a segment (so
    /// an empty slave starting at the last segment has something to fetch).
    fn top_up_past(&mut self, at: u64) -> Check {
        let f = self.p.segment_size;
        let highest = self
            .slaves
            .iter()
            .map(|s| s.log.max_offset())
            .chain([at])
            .max()
            .unwrap_or(0);
        let mut target = highest + 1 + self.entropy.below(f);
        if target.is_multiple_of(f) {
            target += 1;
        }
        let len = (target - self.master.log.max_offset()) as usize;
        let data = self.history.extend(len);
        self.bytes_written += len as u64;
        let (mut cx, master, _) = self.ctx();
        master.append(&mut cx, data)
    }

    /// Operator action: a slave whose log ends below the master's retained range is refused
    /// forever (§3.3, issue #3388), so it is rebuilt empty. This can happen after the heal too:
    /// bytes sent before the master deleted those segments may still be in flight.
    fn wipe_stranded(&mut self) -> Check {
        let min = self.master.log.min_offset();
        let stranded: Vec<usize> = self
            .slaves
            .iter()
            .filter(|s| !s.log.is_empty() && s.log.max_offset() < min)
            .map(|s| s.index)
            .collect();
        for i in stranded {
            self.wiped += 1;
            let (mut cx, _, slaves) = self.ctx();
            slaves[i].wipe(&mut cx)?;
        }
        Ok(())
    }

    /// How long slaves may take to catch up after the heal, from the configuration: a dead
    /// connection is noticed within a housekeeping interval, a redial waits at most the
    /// back-off ceiling plus a connect timeout, open waits end within their deadline, and the data moves at least a window per
    /// round trip.
    fn catch_up_bound(&self) -> Duration {
        let c = self.p.config;
        let behind = self.master.log.max_offset() - self.master.log.min_offset();
        let round_trip = (self.p.latency + self.p.jitter) * 2 + Duration::from_millis(1);
        let per_round_trip = scenario::goodput(self.p.window, u64::from(c.transfer_batch_size()));
        let windows = behind / per_round_trip + 2;
        let mut transfer = round_trip * windows.min(u64::from(u32::MAX)) as u32;
        if let Some(rate) = c.rate_limit() {
            // Every slave may fetch the whole log, headers included, at the limit.
            let batch = u64::from(c.transfer_batch_size());
            let bytes = behind + behind / batch * 12 + batch + 24;
            transfer += Duration::from_secs_f64(bytes as f64 / rate.get() as f64);
        }
        c.housekeeping_interval() * 2
            + (c.reconnect_backoff_max() + c.connect_timeout()) * 2
            + c.heartbeat_interval() * 2
            + c.slave_timeout() * 2
            + self.p.disk_latency
            + c.local_failure_backoff_max()
            + c.write_stall_timeout()
            + Duration::from_secs(1)
            + transfer * 4
    }

    fn caught_up(&self) -> bool {
        let max = self.master.log.max_offset();
        self.master.up
            && self.master.model.pending() == 0
            && self.slaves.iter().all(|s| {
                !s.crashed
                    && s.lp.is_connected()
                    && s.pending_appends() == 0
                    && s.log.max_offset() == max
                    && self.master.has_caught_up(s.index)
            })
    }

    fn progress(&mut self) -> Check {
        match self.phase {
            Phase::Heal => {
                self.wipe_stranded()?;
                self.top_up()?;
                let caught_up = self.caught_up();
                if caught_up && self.caught_up_at.is_none() {
                    self.caught_up_at = Some(self.now);
                }
                if caught_up && self.now >= self.quiet_from {
                    let c = self.p.config;
                    let quiet = (c.housekeeping_interval() * 3 / 2).max(c.heartbeat_interval() * 3);
                    self.idle_until = self.now + quiet;
                    self.phase = Phase::Idle;
                    tr!(
                        self,
                        "caught up {:?} after the heal; idle for {quiet:?}",
                        self.now - self.heal_at
                    );
                } else if self.now >= self.heal_at + self.bound {
                    return Err(fail("slaves_catch_up_after_heal", self.lag_report()));
                }
            }
            Phase::Idle => {
                if self.now >= self.idle_until {
                    if !self.caught_up() {
                        return Err(fail(
                            "idle_connections_stay_up",
                            format!(
                                "not caught up at the end of the idle phase: {}",
                                self.lag_report()
                            ),
                        ));
                    }
                    self.phase = Phase::Done;
                    tr!(self, "done");
                }
            }
            Phase::Faults | Phase::Done => {}
        }
        Ok(())
    }

    fn lag_report(&self) -> String {
        let mut s = format!(
            "not caught up {:?} after the heal (bound {:?}); master up {} log [{}, {}) pending waits {};",
            self.now - self.heal_at,
            self.bound,
            self.master.up,
            self.master.log.min_offset(),
            self.master.log.max_offset(),
            self.master.model.pending()
        );
        for sl in &self.slaves {
            s += &format!(
                " slave {}: log [{}, {}) connected {} link {:?} dialing {:?} pending appends {};",
                sl.index,
                sl.log.min_offset(),
                sl.log.max_offset(),
                sl.lp.is_connected(),
                sl.link,
                sl.dialing,
                sl.pending_appends()
            );
        }
        s + &self.master.describe()
    }

    /// Checks that span nodes, after every step.
    fn check_global(&self) -> Check {
        for s in &self.slaves {
            // The slave's log lies within the history version it matched (§8 #13).
            if s.log.max_offset() > self.history.end(s.version) && !s.log.is_empty() {
                return Err(fail(
                    "slave_log_is_history_prefix",
                    format!(
                        "slave {} ends at {} beyond version {} (ends {})",
                        s.index,
                        s.log.max_offset(),
                        s.version,
                        self.history.end(s.version)
                    ),
                ));
            }
        }
        // The master's own log is its history's current version.
        if self.history.end(self.history.current()) != self.master.log.max_offset()
            && self.master.up
        {
            return Err(fail(
                "master_log_matches_history",
                format!(
                    "master log ends at {} but history at {}",
                    self.master.log.max_offset(),
                    self.history.end(self.history.current())
                ),
            ));
        }
        Ok(())
    }

    fn outcome(&self) -> Outcome {
        let stats = self.master.model.stats;
        Outcome {
            trace_hash: self.trace.hash(),
            trace_lines: self.trace.lines(),
            steps: self.steps,
            virtual_time: self.now,
            faults: self.p.faults,
            slaves: self.p.slaves,
            heal_at: self.heal_at,
            catch_up: self
                .caught_up_at
                .map_or(Duration::ZERO, |t| t - self.heal_at),
            catch_up_bound: self.bound,
            partitioned_at_heal: self.partitioned_at_heal,
            bytes_written: self.bytes_written,
            connections: self.master.accepted,
            tickets: (stats.ok, stats.timeout, stats.shutdown),
            divergent_slaves: self
                .slaves
                .iter()
                .filter(|s| {
                    let (min, max) = (s.log.min_offset(), s.log.max_offset());
                    let bytes = s.log.copy_range(min, max).unwrap_or_default();
                    self.history
                        .mismatch(self.history.current(), min, &bytes)
                        .is_some()
                })
                .count(),
            wiped_slaves: self.wiped,
            report_stall_closes: self.slaves.iter().map(|s| s.stall_closes).sum(),
            local_failures: self.slaves.iter().map(|s| s.local_failures).sum(),
        }
    }
}
