//! Invariant checkers: separate, named functions run after every step (TigerBeetle style).
//!
//! Each returns `Err(Fail)` naming itself, so a failure says which promise broke. Section
//! numbers refer to `docs/protocol.md`, invariant numbers to its §8.
//!
//! # The slave-prefix invariant, precisely
//! Classic HA has no divergence detection (§4.4, §7.2 #10): if the master restarts and loses an
//! unflushed tail, a slave may hold bytes the master no longer has, and once the master has
//! grown past the slave again, the slave is accepted and continues from its own offset. So
//! "the slave's log is a prefix of the master's log" cannot hold literally across such a
//! restart. What must hold, and what [`slave_log_is_history_prefix`] checks on every append, is:
//!
//! > The slave's log, over its whole retained range, is a concatenation of runs, each run a
//! > byte-exact copy of the master's log *as of some version* (see `history.rs`) at the same
//! > offsets, with versions non-decreasing along the log. Without lost tails there is a single
//! > version, and this is exactly "a byte-exact prefix of the master's log".
//!
//! Together with [`start_follows_first_transfer_rule`] (a slave ahead of the master is refused
//! with `RequestAboveMax`, never accepted) this pins down the documented classic behaviour.

use std::collections::BTreeMap;
use std::time::Instant;

use rocketmq_ha::{
    segment_start, ConnectionId, LogSource, MasterService, MemoryLog, StartPosition,
    SyncCompletion, SyncError, Ticket,
};

use super::history::History;

/// A broken invariant: which checker, and what it saw.
#[derive(Debug, Clone)]
pub struct Fail {
    /// The checker's name.
    pub checker: &'static str,
    /// What went wrong.
    pub message: String,
}

/// The result of a checker.
pub type Check = Result<(), Fail>;

/// Builds a [`Fail`].
pub fn fail(checker: &'static str, message: impl Into<String>) -> Fail {
    Fail {
        checker,
        message: message.into(),
    }
}

macro_rules! ensure {
    ($checker:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(fail($checker, format!($($fmt)+)));
        }
    };
}

/// §8 #13, #22: every byte a slave appends equals the master's history at that offset (see the
/// module docs), and versions never go backwards along the slave's log.
pub fn slave_log_is_history_prefix(
    history: &History,
    slave: usize,
    version: &mut usize,
    offset: u64,
    data: &[u8],
) -> Check {
    match history.matching_version(*version, offset, data) {
        Some(v) => {
            *version = v;
            Ok(())
        }
        None => {
            let at = history.mismatch(*version, offset, data).unwrap_or(offset);
            Err(fail(
                "slave_log_is_history_prefix",
                format!(
                    "slave {slave} appended {} bytes at {offset} that the master never had \
                     (first difference at {at}, versions {}..={})",
                    data.len(),
                    *version,
                    history.current()
                ),
            ))
        }
    }
}

/// §8 #13: appends come in log order: each at the end of the log (or anywhere in an empty log).
pub fn append_is_contiguous(slave: usize, log: &MemoryLog, offset: u64) -> Check {
    ensure!(
        "append_is_contiguous",
        log.is_empty() || offset == log.max_offset(),
        "slave {slave} was told to append at {offset} but its log ends at {}",
        log.max_offset()
    );
    Ok(())
}

/// §8 #15: reports on one connection never decrease and never exceed what the slave stored.
pub fn report_is_monotonic_and_stored(
    slave: usize,
    previous: Option<u64>,
    report: u64,
    stored: u64,
) -> Check {
    ensure!(
        "report_is_monotonic_and_stored",
        report <= stored,
        "slave {slave} reported {report} but stored only up to {stored}"
    );
    ensure!(
        "report_is_monotonic_and_stored",
        previous.is_none_or(|p| p <= report),
        "slave {slave} reported {report} after {previous:?} on the same connection"
    );
    Ok(())
}

/// §8 #15, #18-19: acks the master accepts rise strictly per connection and never exceed what
/// that slave ever stored.
pub fn ack_is_monotonic_and_stored(
    slave: usize,
    previous: Option<u64>,
    ack: u64,
    stored_ever: u64,
) -> Check {
    ensure!(
        "ack_is_monotonic_and_stored",
        ack <= stored_ever,
        "master accepted ack {ack} from slave {slave}, which never stored beyond {stored_ever}"
    );
    ensure!(
        "ack_is_monotonic_and_stored",
        previous.is_none_or(|p| p < ack),
        "ack {ack} from slave {slave} does not rise above the previous {previous:?}"
    );
    Ok(())
}

/// §8 #6 and §3.3: the first transfer starts where the rule says, and only for a request
/// inside the master's range (a slave ahead or below the retained range is refused).
pub fn start_follows_first_transfer_rule(
    position: StartPosition,
    requested: u64,
    start: u64,
    log: &MemoryLog,
) -> Check {
    let (min, max) = (log.min_offset(), log.max_offset());
    let expected = if requested == 0 {
        // An empty slave starts on a segment boundary (§3.3).
        let first_whole = min.next_multiple_of(log.segment_size());
        match position {
            StartPosition::OldestRetained => first_whole,
            _ => segment_start(max, log.segment_size()).max(first_whole),
        }
    } else {
        ensure!(
            "start_follows_first_transfer_rule",
            (min..=max).contains(&requested),
            "request {requested} outside the master's range [{min}, {max}] was accepted"
        );
        requested
    };
    ensure!(
        "start_follows_first_transfer_rule",
        start == expected,
        "request {requested} started at {start}, expected {expected} (log [{min}, {max}))"
    );
    Ok(())
}

/// §8 #7-8: frames on one connection are contiguous, data frames hold 1..=`limit` bytes (the
/// batch, or less while a `first_batch_size` ramps up) from one segment that the log really
/// has, and a heartbeat announces the next offset.
pub fn frame_is_contiguous_and_bounded(
    history: &History,
    log: &MemoryLog,
    limit: u32,
    expected: Option<u64>,
    offset: u64,
    body: &[u8],
) -> Check {
    const NAME: &str = "frame_is_contiguous_and_bounded";
    ensure!(
        NAME,
        expected == Some(offset),
        "frame at {offset} but the connection's next offset is {expected:?}"
    );
    if body.is_empty() {
        return Ok(());
    }
    let end = offset + body.len() as u64;
    let f = log.segment_size();
    ensure!(
        NAME,
        body.len() as u64 <= u64::from(limit),
        "frame of {} bytes > limit {limit}",
        body.len()
    );
    ensure!(
        NAME,
        segment_start(offset, f) == segment_start(end - 1, f),
        "frame [{offset}, {end}) crosses a segment boundary (F = {f})"
    );
    ensure!(
        NAME,
        end <= log.max_offset(),
        "frame [{offset}, {end}) beyond max {}",
        log.max_offset()
    );
    if let Some(at) = history.mismatch(history.current(), offset, body) {
        return Err(fail(
            NAME,
            format!("frame [{offset}, {end}) body differs from the master's log at {at}"),
        ));
    }
    Ok(())
}

/// The master's whole input buffer is at most one incomplete report (7 bytes).
pub fn master_buffer_bounded(buffered: usize) -> Check {
    ensure!(
        "master_buffer_bounded",
        buffered <= 7,
        "master connection buffers {buffered} bytes"
    );
    Ok(())
}

/// The slave driver's input buffer: at most one incomplete frame plus one read before input,
/// and less than one whole frame after the machine took what it could.
pub fn slave_buffer_bounded(
    slave: usize,
    len: usize,
    max_frame: u32,
    max_read: usize,
    after_input: bool,
) -> Check {
    let bound = if after_input {
        (max_frame as usize).max(12) - 1
    } else {
        max_frame as usize + max_read
    };
    ensure!(
        "slave_buffer_bounded",
        len <= bound,
        "slave {slave} input buffer holds {len} bytes, bound {bound} (after input: {after_input})"
    );
    Ok(())
}

/// After a machine's output is drained, its next deadline lies in the future.
pub fn deadline_in_future(who: &str, deadline: Option<Instant>, now: Instant) -> Check {
    ensure!(
        "deadline_in_future",
        deadline.is_none_or(|d| d > now),
        "{who}: poll_timeout is {:?} in the past after draining",
        now - deadline.unwrap_or(now)
    );
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct TicketModel {
    offset: u64,
    acks_needed: usize,
    deadline: Instant,
}

/// Counts of completed sync waits by outcome.
#[derive(Debug, Clone, Copy, Default)]
pub struct TicketStats {
    /// Completed `Ok`.
    pub ok: u64,
    /// Completed with `Timeout`.
    pub timeout: u64,
    /// Completed with `Shutdown`.
    pub shutdown: u64,
}

/// An independent, linear model of [`MasterService`]: live connections and their acks, the
/// frontier, and pending tickets. Connections are counted, as the service documents (5.x).
#[derive(Debug, Clone)]
pub struct ServiceModel {
    clock: Instant,
    conns: BTreeMap<ConnectionId, Option<u64>>,
    frontier: u64,
    tickets: BTreeMap<Ticket, TicketModel>,
    /// Completions seen so far.
    pub stats: TicketStats,
}

impl ServiceModel {
    /// A model of a service created at `now`.
    pub fn new(now: Instant) -> Self {
        ServiceModel {
            clock: now,
            conns: BTreeMap::new(),
            frontier: 0,
            tickets: BTreeMap::new(),
            stats: TicketStats::default(),
        }
    }

    /// Time passed to the service (which clamps it like this).
    pub fn advance(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
    }

    /// Live connections whose ack reached `offset`.
    pub fn acked(&self, offset: u64) -> usize {
        self.conns
            .values()
            .filter(|a| a.is_some_and(|a| a >= offset))
            .count()
    }

    fn satisfied(&self, t: &TicketModel) -> bool {
        t.acks_needed == 0 || self.acked(t.offset) >= t.acks_needed
    }

    /// A connection was registered.
    pub fn register(&mut self, id: ConnectionId) -> Check {
        ensure!(
            "service_matches_model",
            self.conns.insert(id, None).is_none(),
            "connection id {id:?} handed out twice"
        );
        Ok(())
    }

    /// A connection was removed.
    pub fn remove(&mut self, id: ConnectionId) {
        self.conns.remove(&id);
    }

    /// An ack was forwarded for `id`.
    pub fn ack(&mut self, id: ConnectionId, offset: u64) {
        if let Some(slot) = self.conns.get_mut(&id) {
            if slot.is_none_or(|a| a < offset) {
                *slot = Some(offset);
            }
            self.frontier = self.frontier.max(offset);
        }
    }

    /// A wait was registered.
    pub fn issue(
        &mut self,
        ticket: Ticket,
        offset: u64,
        acks_needed: usize,
        deadline: Instant,
    ) -> Check {
        let fresh = self
            .tickets
            .insert(
                ticket,
                TicketModel {
                    offset,
                    acks_needed,
                    deadline,
                },
            )
            .is_none();
        ensure!(
            "ticket_completes_once",
            fresh,
            "ticket {ticket:?} handed out twice"
        );
        Ok(())
    }

    /// Whether `ticket` is pending.
    pub fn is_pending(&self, ticket: Ticket) -> bool {
        self.tickets.contains_key(&ticket)
    }

    /// Pending waits.
    pub fn pending(&self) -> usize {
        self.tickets.len()
    }

    /// Checks one completion against the model. `issued_now` is the ticket registered by the
    /// call that produced it (an already-satisfied wait completes `Ok` even past its deadline);
    /// `shutting_down` is whether the call was `shutdown`.
    pub fn complete(
        &mut self,
        c: SyncCompletion,
        issued_now: Option<Ticket>,
        shutting_down: bool,
    ) -> Check {
        const NAME: &str = "ticket_completes_once_and_correctly";
        let Some(t) = self.tickets.remove(&c.ticket) else {
            return Err(fail(
                NAME,
                format!("{:?} completed but was not pending", c.ticket),
            ));
        };
        match c.result {
            Ok(()) => {
                self.stats.ok += 1;
                ensure!(
                    NAME,
                    self.satisfied(&t),
                    "{:?} Ok but only {} live connections acked {} (needed {})",
                    c.ticket,
                    self.acked(t.offset),
                    t.offset,
                    t.acks_needed
                );
                ensure!(
                    NAME,
                    self.clock < t.deadline || issued_now == Some(c.ticket),
                    "{:?} Ok at or after its deadline ({:?} late)",
                    c.ticket,
                    self.clock - t.deadline
                );
            }
            Err(SyncError::Timeout) => {
                self.stats.timeout += 1;
                ensure!(
                    NAME,
                    t.deadline <= self.clock,
                    "{:?} timed out {:?} before its deadline",
                    c.ticket,
                    t.deadline - self.clock
                );
            }
            Err(SyncError::Shutdown) => {
                self.stats.shutdown += 1;
                ensure!(
                    NAME,
                    shutting_down,
                    "{:?} shut down outside shutdown",
                    c.ticket
                );
            }
            Err(e) => return Err(fail(NAME, format!("{:?} unexpected {e:?}", c.ticket))),
        }
        Ok(())
    }

    /// The service was shut down: it forgets its connections.
    pub fn shutdown(&mut self) {
        self.conns.clear();
    }
}

/// §8 #18, #20: the service agrees with the model: same connections and acks, the frontier is
/// the max of every ack ever accepted (removed connections included), the same pending waits,
/// none of which is already satisfied, and the next deadline is the earliest pending one.
pub fn service_matches_model(service: &MasterService, model: &ServiceModel) -> Check {
    const NAME: &str = "service_matches_model";
    ensure!(
        "ack_frontier_is_max_of_accepted_acks",
        service.ack_frontier() == model.frontier,
        "frontier {} but the max accepted ack is {}",
        service.ack_frontier(),
        model.frontier
    );
    ensure!(
        NAME,
        service.connection_count() == model.conns.len(),
        "{} connections, model has {}",
        service.connection_count(),
        model.conns.len()
    );
    for (&id, &ack) in &model.conns {
        ensure!(
            NAME,
            service.ack_of(id) == ack,
            "ack of {id:?} is {:?}, model says {ack:?}",
            service.ack_of(id)
        );
    }
    ensure!(
        NAME,
        service.pending_waits() == model.tickets.len(),
        "{} pending waits, model has {}",
        service.pending_waits(),
        model.tickets.len()
    );
    for (ticket, t) in &model.tickets {
        ensure!(
            "satisfied_waiter_completes_at_once",
            !model.satisfied(t),
            "{ticket:?} for {} with {} acks needed is satisfied ({} live acks) but pending",
            t.offset,
            t.acks_needed,
            model.acked(t.offset)
        );
    }
    let earliest = model.tickets.values().map(|t| t.deadline).min();
    ensure!(
        NAME,
        service.poll_timeout() == earliest,
        "service deadline {:?} is not the earliest pending deadline",
        service
            .poll_timeout()
            .map(|d| d.saturating_duration_since(model.clock))
    );
    Ok(())
}

/// §3.6: in-sync counting and is-slave-OK agree with the model.
pub fn in_sync_matches_model(
    service: &MasterService,
    model: &ServiceModel,
    put_where: u64,
    gap: u64,
) -> Check {
    let in_sync = model
        .conns
        .values()
        .filter(|a| a.is_some_and(|a| put_where.saturating_sub(a) < gap))
        .count();
    ensure!(
        "in_sync_matches_model",
        service.in_sync_count(put_where) == in_sync,
        "in_sync_count({put_where}) = {}, model {in_sync}",
        service.in_sync_count(put_where)
    );
    let ok = !model.conns.is_empty() && put_where.saturating_sub(model.frontier) < gap;
    ensure!(
        "in_sync_matches_model",
        service.is_slave_ok(put_where) == ok,
        "is_slave_ok({put_where}) = {}, model {ok}",
        service.is_slave_ok(put_where)
    );
    Ok(())
}

/// After a service call, every pending wait's deadline is still ahead of the master's clock:
/// timeouts fire no later than one step after their deadline.
pub fn no_overdue_waiter(model: &ServiceModel, now: Instant) -> Check {
    for (ticket, t) in &model.tickets {
        ensure!(
            "no_overdue_waiter",
            t.deadline > now,
            "{ticket:?} still pending {:?} after its deadline",
            now - t.deadline
        );
    }
    Ok(())
}

/// §3.9 flow control, checked independently of the machine's token bucket: over **any** window
/// of a rate-limited connection (not only aligned seconds), the bytes handed out, headers and
/// heartbeats included, are at most `rate × window` plus one full frame plus one heartbeat sent
/// on credit. Kept as the least value of `sent_before(t) − rate·t` over the frames so far, so
/// each frame is checked against every earlier start in O(1).
#[derive(Debug, Clone)]
pub struct FlowWindow {
    start: Instant,
    /// The latest time the connection was given (its clock clamps backward jumps).
    clock: Instant,
    sent: u64,
    least: i128,
}

impl FlowWindow {
    /// A connection accepted at `start`.
    pub fn new(start: Instant) -> Self {
        FlowWindow {
            start,
            clock: start,
            sent: 0,
            least: i128::MAX,
        }
    }

    /// The connection's machine was given `now` (its clock is the latest of these).
    pub fn saw(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
    }

    /// A frame of `len` bytes (header included) handed out at `now`.
    pub fn frame(&mut self, rate: Option<u64>, burst: u64, now: Instant, len: u64) -> Check {
        self.clock = self.clock.max(now);
        if let Some(rate) = rate {
            let t = (self.clock - self.start).as_nanos() as i128;
            let rate = i128::from(rate);
            let before = i128::from(self.sent) * 1_000_000_000 - rate * t;
            self.least = self.least.min(before);
            let after = before + i128::from(len) * 1_000_000_000;
            let excess = after - self.least;
            ensure!(
                "flow_limit_holds_over_every_window",
                excess <= i128::from(burst) * 1_000_000_000,
                "a window ending at {:?} carried {} bytes more than rate {rate} B/s allows (burst {burst})",
                self.clock - self.start,
                (excess / 1_000_000_000) - i128::from(burst)
            );
        }
        self.sent += len;
        Ok(())
    }
}
