//! The master's view of all its slaves (RocketMQ's `HAService` / `GroupTransferService`, §3.5,
//! §3.6): the connection registry, the ack frontier, in-sync counting, is-slave-OK, and
//! synchronous-replication waiters.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use crate::ack_policy::AckPolicy;
use crate::config::Config;
use crate::error::SyncError;
use crate::master::MasterEvent;
use crate::timer::Clock;

/// Identifies one registered slave connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(u64);

impl ConnectionId {
    /// The raw number, unique for the service's lifetime (for logs and maps).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Identifies one synchronous-replication wait from [`MasterService::wait_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

impl Ticket {
    /// The raw number, unique for the service's lifetime.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// The outcome of one wait; each [`Ticket`] gets exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive] // e.g. the acks that completed it
pub struct SyncCompletion {
    /// The wait this completes.
    pub ticket: Ticket,
    /// `Ok` (`PUT_OK`) when enough slaves acknowledged the offset before the deadline, else
    /// [`SyncError::Timeout`] (`FLUSH_SLAVE_TIMEOUT`) or [`SyncError::Shutdown`].
    pub result: Result<(), SyncError>,
}

#[derive(Debug, Clone, Copy)]
struct Waiter {
    offset: u64,
    acks_needed: usize,
    deadline: Instant,
}

/// The master's service: all connections, acknowledgements and sync waiters (§3.5, §3.6).
///
/// Like the connections it is a plain state machine: acks and time go in, completions and the
/// next deadline come out. It is shared by all connection drivers of a master.
///
/// # Sync waiters
/// [`wait_for`](Self::wait_for)`(now, offset, acks_needed, deadline)` registers a wait that
/// completes exactly once: `Ok` as soon as `acks_needed` live connections have acknowledged
/// `offset` or more, [`SyncError::Timeout`] when `now` reaches the deadline first. There is no
/// polling loop: waiters are indexed by offset (per ack count) and by deadline, so an ack costs
/// `O(log n)` per completed waiter plus `O(log n)` per distinct `acks_needed` in use.
///
/// `acks_needed = 1` is 4.9's `SYNC_MASTER` (any one slave); 5.x's `inSyncReplicas = n` counts
/// the master itself, so it is `acks_needed = n - 1` here; connections are counted, as in 5.x
/// (§3.5).
///
/// # The driver's loop
/// The crate's [run loop](crate#the-run-loop), applied to the service:
/// 1. [`register`](Self::register) each accepted connection and [`remove`](Self::remove) it when
///    it closes; forward its events with [`handle_event`](Self::handle_event).
/// 2. Call [`handle_timeout`](Self::handle_timeout) when [`poll_timeout`](Self::poll_timeout)
///    passes. Every wait's outcome comes from here: a waiter does not decide its own timeout.
/// 3. After any call, drain [`poll_completion`](Self::poll_completion) and wake the waiters.
#[derive(Debug)]
pub struct MasterService {
    config: Config,
    clock: Clock,
    next_connection: u64,
    /// Every live connection and its last ack (`None` until its first report).
    connections: BTreeMap<ConnectionId, Option<u64>>,
    /// Multiset of the live connections' acks: ack → how many connections are at it.
    live_acks: BTreeMap<u64, usize>,
    /// `push2SlaveMaxOffset`: the highest ack ever accepted; never decreases (§3.5).
    frontier: u64,
    next_ticket: u64,
    waiters: BTreeMap<Ticket, Waiter>,
    /// Pending waiters by ack count needed, then by (offset, ticket).
    by_offset: BTreeMap<usize, BTreeSet<(u64, Ticket)>>,
    by_deadline: BTreeSet<(Instant, Ticket)>,
    completions: VecDeque<SyncCompletion>,
    shut_down: bool,
}

impl MasterService {
    /// An empty service at `now`.
    pub fn new(config: Config, now: Instant) -> Self {
        MasterService {
            config,
            clock: Clock::new(now),
            next_connection: 0,
            connections: BTreeMap::new(),
            live_acks: BTreeMap::new(),
            frontier: 0,
            next_ticket: 0,
            waiters: BTreeMap::new(),
            by_offset: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
            completions: VecDeque::new(),
            shut_down: false,
        }
    }

    /// The configuration the service was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // --- getters ---

    /// Live connections (`connectionCount`).
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// The live connections in registration order.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionId> + '_ {
        self.connections.keys().copied()
    }

    /// `push2SlaveMaxOffset`: the highest offset any slave ever acknowledged; never decreases,
    /// not even when that slave disconnects (§3.5).
    pub fn ack_frontier(&self) -> u64 {
        self.frontier
    }

    /// The last offset acknowledged on `id`, if it is live and has reported.
    pub fn ack_of(&self, id: ConnectionId) -> Option<u64> {
        self.connections.get(&id).copied().flatten()
    }

    /// Slaves in sync for a write ending at `put_where`: live connections whose ack is less than
    /// `max_gap_not_in_sync` behind it (5.x `inSyncReplicasNums` minus the master itself, §3.6).
    pub fn in_sync_count(&self, put_where: u64) -> usize {
        let gap = self.config.max_gap_not_in_sync();
        // `put_where - ack < gap` means `ack > put_where - gap` (every ack when `put_where < gap`);
        // the multiset makes this a range count.
        let lowest_in_sync = put_where.checked_sub(gap).map_or(0, |floor| floor + 1);
        self.live_acks.range(lowest_in_sync..).map(|(_, n)| n).sum()
    }

    /// `isSlaveOK(putWhere)`: some slave is connected and the frontier is less than
    /// `max_gap_not_in_sync` behind `put_where` (§3.6). When false, a 4.9 `SYNC_MASTER` answers
    /// `SLAVE_NOT_AVAILABLE` without waiting.
    pub fn is_slave_ok(&self, put_where: u64) -> bool {
        !self.connections.is_empty()
            && put_where.saturating_sub(self.frontier) < self.config.max_gap_not_in_sync()
    }

    /// Sync waits not yet completed.
    pub fn pending_waits(&self) -> usize {
        self.waiters.len()
    }

    // --- input ---

    /// Registers a newly accepted connection.
    pub fn register(&mut self, now: Instant) -> ConnectionId {
        self.clock.advance(now);
        let id = ConnectionId(self.next_connection);
        self.next_connection += 1;
        self.connections.insert(id, None);
        id
    }

    /// Removes a closed connection. Its acks stop counting towards waiters; the frontier keeps
    /// them (§3.5). Unknown ids are ignored.
    pub fn remove(&mut self, id: ConnectionId, now: Instant) {
        self.clock.advance(now);
        if let Some(Some(ack)) = self.connections.remove(&id) {
            self.forget_ack(ack);
        }
    }

    /// Applies an event from connection `id`'s [`MasterConnection`](crate::MasterConnection).
    pub fn handle_event(&mut self, id: ConnectionId, now: Instant, event: &MasterEvent) {
        match *event {
            MasterEvent::Acked { offset } => self.handle_ack(id, now, offset),
            MasterEvent::Started { .. } => {
                self.clock.advance(now);
            }
        }
    }

    /// Connection `id` acknowledged `offset` (`notifyTransferSome`). Waiters whose deadline is
    /// at or before `now` time out first, so an ack never rescues a late waiter. Acks that do not
    /// raise the connection's last ack, and unknown ids, change nothing.
    pub fn handle_ack(&mut self, id: ConnectionId, now: Instant, offset: u64) {
        let now = self.clock.advance(now);
        self.expire(now);
        let Some(slot) = self.connections.get_mut(&id) else {
            return;
        };
        let previous = *slot;
        if previous.is_some_and(|p| p >= offset) {
            return;
        }
        *slot = Some(offset);
        if let Some(p) = previous {
            self.forget_ack(p);
        }
        *self.live_acks.entry(offset).or_insert(0) += 1;
        self.frontier = self.frontier.max(offset);
        self.complete_satisfied();
    }

    /// Registers a wait for `acks_needed` connections to acknowledge `offset` (usually the end of
    /// a just-written message, `putWhere`) before `deadline`. It may complete within this call
    /// (already acknowledged, `acks_needed == 0`, deadline already passed, or shut down); the
    /// completion is then the next from [`poll_completion`](Self::poll_completion).
    pub fn wait_for(
        &mut self,
        now: Instant,
        offset: u64,
        acks_needed: usize,
        deadline: Instant,
    ) -> Ticket {
        let now = self.clock.advance(now);
        self.expire(now);
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        let result = if self.shut_down {
            Some(Err(SyncError::Shutdown))
        } else if self.acked_by(acks_needed) >= Some(offset) || acks_needed == 0 {
            Some(Ok(()))
        } else if deadline <= now {
            Some(Err(SyncError::Timeout))
        } else {
            None
        };
        match result {
            Some(result) => self
                .completions
                .push_back(SyncCompletion { ticket, result }),
            None => {
                self.waiters.insert(
                    ticket,
                    Waiter {
                        offset,
                        acks_needed,
                        deadline,
                    },
                );
                self.by_offset
                    .entry(acks_needed)
                    .or_default()
                    .insert((offset, ticket));
                self.by_deadline.insert((deadline, ticket));
            }
        }
        ticket
    }

    /// Registers a wait for a write ending at `offset` under `policy` (§3.5): the policy says
    /// how many slaves must acknowledge it, as the connections stand now, or fails it at once
    /// ([`SyncError::SlaveNotAvailable`], [`SyncError::NotEnoughInSync`]); either way the
    /// ticket completes exactly once, like [`wait_for`](Self::wait_for)'s.
    pub fn wait_with(
        &mut self,
        now: Instant,
        offset: u64,
        policy: &AckPolicy,
        deadline: Instant,
    ) -> Ticket {
        self.clock.advance(now);
        match policy.slaves_needed(self, offset) {
            Ok(slaves) => self.wait_for(now, offset, slaves, deadline),
            Err(e) if !self.shut_down => {
                let ticket = Ticket(self.next_ticket);
                self.next_ticket += 1;
                self.completions.push_back(SyncCompletion {
                    ticket,
                    result: Err(e),
                });
                ticket
            }
            // After shutdown every wait fails with `Shutdown`, whatever the policy says.
            Err(_) => self.wait_for(now, offset, 0, deadline),
        }
    }

    /// Time passed: waiters whose deadline is at or before `now` complete with
    /// [`SyncError::Timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        self.expire(now);
    }

    // --- commands ---

    /// Completes every pending wait with [`SyncError::Shutdown`], forgets all connections, and
    /// refuses later waits the same way.
    pub fn shutdown(&mut self, now: Instant) {
        self.clock.advance(now);
        self.shut_down = true;
        let tickets: Vec<Ticket> = self.waiters.keys().copied().collect();
        for ticket in tickets {
            self.complete(ticket, Err(SyncError::Shutdown));
        }
        self.connections.clear();
        self.live_acks.clear();
    }

    // --- output ---

    /// The next completed wait, if any.
    pub fn poll_completion(&mut self) -> Option<SyncCompletion> {
        self.completions.pop_front()
    }

    /// The earliest pending deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(deadline, _)| *deadline)
    }

    // --- internals ---

    /// The highest offset that at least `k` live connections have acknowledged: the k-th
    /// largest live ack.
    fn acked_by(&self, k: usize) -> Option<u64> {
        if k == 0 {
            return None;
        }
        let mut seen = 0;
        for (&ack, &count) in self.live_acks.iter().rev() {
            seen += count;
            if seen >= k {
                return Some(ack);
            }
        }
        None
    }

    fn forget_ack(&mut self, ack: u64) {
        if let Some(count) = self.live_acks.get_mut(&ack) {
            *count -= 1;
            if *count == 0 {
                self.live_acks.remove(&ack);
            }
        }
    }

    fn complete_satisfied(&mut self) {
        // Walk the groups by key rather than collecting them: completing a waiter may remove
        // its group, and an ack must not allocate.
        // `None` once the group `usize::MAX` was visited: `k + 1` would overflow (found by the
        // `waiters` fuzz target; wrapping to 0 in release builds looped forever).
        let mut from = Some(0);
        while let Some(k) = from.and_then(|f| self.by_offset.range(f..).next().map(|(k, _)| *k)) {
            from = k.checked_add(1);
            let Some(reached) = self.acked_by(k) else {
                continue;
            };
            loop {
                let first = self.by_offset.get(&k).and_then(|set| set.first().copied());
                match first {
                    Some((offset, ticket)) if offset <= reached => self.complete(ticket, Ok(())),
                    _ => break,
                }
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, ticket)) = self.by_deadline.first() {
            if deadline > now {
                break;
            }
            self.complete(ticket, Err(SyncError::Timeout));
        }
    }

    fn complete(&mut self, ticket: Ticket, result: Result<(), SyncError>) {
        let Some(waiter) = self.waiters.remove(&ticket) else {
            debug_assert!(false, "ticket {ticket:?} completed twice");
            return;
        };
        if let Some(set) = self.by_offset.get_mut(&waiter.acks_needed) {
            set.remove(&(waiter.offset, ticket));
            if set.is_empty() {
                self.by_offset.remove(&waiter.acks_needed);
            }
        }
        self.by_deadline.remove(&(waiter.deadline, ticket));
        self.completions
            .push_back(SyncCompletion { ticket, result });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn svc() -> (MasterService, Instant) {
        let t0 = Instant::now();
        (MasterService::new(Config::default(), t0), t0)
    }

    fn drain(s: &mut MasterService) -> Vec<SyncCompletion> {
        std::iter::from_fn(|| s.poll_completion()).collect()
    }

    #[test]
    fn frontier_is_monotonic_and_survives_removal() {
        let (mut s, t0) = svc();
        let a = s.register(t0);
        let b = s.register(t0);
        s.handle_ack(a, t0, 100);
        s.handle_ack(b, t0, 50);
        s.handle_ack(a, t0, 90); // lower: ignored
        assert_eq!(s.ack_of(a), Some(100));
        assert_eq!(s.ack_frontier(), 100);
        s.remove(a, t0);
        assert_eq!(s.ack_frontier(), 100);
        assert_eq!(s.connection_count(), 1);
        assert_eq!(s.ack_of(a), None);
    }

    #[test]
    fn waiter_completes_on_ack() {
        let (mut s, t0) = svc();
        let a = s.register(t0);
        let deadline = t0 + Duration::from_secs(3);
        let t = s.wait_for(t0, 500, 1, deadline);
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.poll_timeout(), Some(deadline));
        s.handle_ack(a, t0, 499);
        assert!(drain(&mut s).is_empty());
        s.handle_ack(a, t0, 500);
        assert_eq!(
            drain(&mut s),
            vec![SyncCompletion {
                ticket: t,
                result: Ok(())
            }]
        );
        // Never twice: later acks and timeouts find nothing.
        s.handle_ack(a, t0, 900);
        s.handle_timeout(deadline + Duration::from_secs(1));
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn waiter_times_out_at_deadline_and_late_ack_does_not_rescue() {
        let (mut s, t0) = svc();
        let a = s.register(t0);
        let deadline = t0 + Duration::from_secs(3);
        let t = s.wait_for(t0, 500, 1, deadline);
        s.handle_timeout(deadline - Duration::from_millis(1));
        assert!(drain(&mut s).is_empty());
        // The ack arrives exactly at the deadline: too late.
        s.handle_ack(a, deadline, 500);
        assert_eq!(
            drain(&mut s),
            vec![SyncCompletion {
                ticket: t,
                result: Err(SyncError::Timeout)
            }]
        );
        assert_eq!(s.pending_waits(), 0);
    }

    #[test]
    fn quorum_counts_connections() {
        let (mut s, t0) = svc();
        let ids: Vec<_> = (0..3).map(|_| s.register(t0)).collect();
        let d = t0 + Duration::from_secs(3);
        let two = s.wait_for(t0, 100, 2, d);
        let three = s.wait_for(t0, 100, 3, d);
        s.handle_ack(ids[0], t0, 100);
        assert!(drain(&mut s).is_empty());
        s.handle_ack(ids[1], t0, 150);
        assert_eq!(drain(&mut s)[0].ticket, two);
        s.remove(ids[0], t0);
        s.handle_ack(ids[2], t0, 100);
        assert!(
            drain(&mut s).is_empty(),
            "removed connection no longer counts"
        );
        s.handle_timeout(d);
        assert_eq!(
            drain(&mut s),
            vec![SyncCompletion {
                ticket: three,
                result: Err(SyncError::Timeout)
            }]
        );
    }

    #[test]
    fn immediate_completions() {
        let (mut s, t0) = svc();
        let a = s.register(t0);
        s.handle_ack(a, t0, 1000);
        let d = t0 + Duration::from_secs(1);
        let already = s.wait_for(t0, 1000, 1, d);
        let none_needed = s.wait_for(t0, 5000, 0, d);
        let past = s.wait_for(t0, 5000, 1, t0);
        let got = drain(&mut s);
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            SyncCompletion {
                ticket: already,
                result: Ok(())
            }
        );
        assert_eq!(
            got[1],
            SyncCompletion {
                ticket: none_needed,
                result: Ok(())
            }
        );
        assert_eq!(
            got[2],
            SyncCompletion {
                ticket: past,
                result: Err(SyncError::Timeout)
            }
        );
    }

    #[test]
    fn shutdown_completes_pending_with_error() {
        let (mut s, t0) = svc();
        s.register(t0);
        let d = t0 + Duration::from_secs(1);
        let t = s.wait_for(t0, 10, 1, d);
        s.shutdown(t0);
        assert_eq!(
            drain(&mut s),
            vec![SyncCompletion {
                ticket: t,
                result: Err(SyncError::Shutdown)
            }]
        );
        let late = s.wait_for(t0, 10, 1, d);
        assert_eq!(
            drain(&mut s)[0],
            SyncCompletion {
                ticket: late,
                result: Err(SyncError::Shutdown)
            }
        );
        s.handle_timeout(d);
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn is_slave_ok_and_in_sync_count() {
        let t0 = Instant::now();
        let cfg = Config::builder().max_gap_not_in_sync(100).build().unwrap();
        let mut s = MasterService::new(cfg, t0);
        assert!(!s.is_slave_ok(0), "no connections");
        let a = s.register(t0);
        let b = s.register(t0);
        assert!(s.is_slave_ok(99));
        assert!(!s.is_slave_ok(100));
        s.handle_ack(a, t0, 1000);
        s.handle_ack(b, t0, 950);
        assert!(s.is_slave_ok(1099));
        assert!(!s.is_slave_ok(1100));
        assert_eq!(s.in_sync_count(1000), 2);
        assert_eq!(s.in_sync_count(1050), 1, "950 is exactly 100 behind");
        assert_eq!(s.in_sync_count(1100), 0);
        assert_eq!(s.in_sync_count(10), 2);
    }

    #[test]
    fn a_wait_for_usize_max_acks_never_completes_early_nor_hangs() {
        let (mut s, t0) = svc();
        let a = s.register(t0);
        let d = t0 + Duration::from_secs(1);
        let never = s.wait_for(t0, 1, usize::MAX, d);
        let one = s.wait_for(t0, 1, 1, d);
        s.handle_ack(a, t0, 5);
        assert_eq!(
            drain(&mut s),
            vec![SyncCompletion {
                ticket: one,
                result: Ok(())
            }]
        );
        s.handle_timeout(d);
        assert_eq!(
            drain(&mut s),
            vec![SyncCompletion {
                ticket: never,
                result: Err(SyncError::Timeout)
            }]
        );
    }

    #[test]
    fn many_waiters_complete_in_offset_order() {
        let (mut s, t0) = svc();
        let a = s.register(t0);
        let d = t0 + Duration::from_secs(3);
        let tickets: Vec<_> = (0..1000u64)
            .rev()
            .map(|i| (i, s.wait_for(t0, i * 10, 1, d)))
            .collect();
        s.handle_ack(a, t0, 4995);
        let done = drain(&mut s);
        assert_eq!(done.len(), 500);
        assert!(done.iter().all(|c| c.result.is_ok()));
        assert_eq!(s.pending_waits(), 500);
        let _ = tickets;
    }
}
