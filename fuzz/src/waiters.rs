//! `waiters`: [`MasterService`]'s connections, acks and sync waiters against a linear model.
//!
//! The model is what §3.5 says, written the slowest obvious way: a `Vec` of waiters scanned in
//! full after every call, acks kept per connection and sorted when counted. The program
//! registers and removes connections, acks (directly or as events), waits with chosen offsets,
//! ack counts and deadlines (past ones too), passes time (sometimes an earlier instant, which
//! the service must clamp), calls `handle_timeout`, and shuts down.
//!
//! Properties (§8 invariants 18, 20, 21):
//! * every ticket completes exactly once, in the call the model says, with the model's result:
//!   `Ok` iff `acks_needed` live connections acknowledged the offset before the deadline,
//!   `Timeout` exactly when the deadline is reached first (an ack at the deadline is too late),
//!   `Shutdown` for waits pending at or made after shutdown;
//! * the frontier is the highest ack ever accepted and never decreases; the connection registry,
//!   per-connection acks, in-sync count and is-slave-OK equal the model's;
//! * `poll_timeout` is the earliest pending deadline and `pending_waits` the pending count;
//! * at the end, passing every deadline completes every remaining ticket.

use std::time::{Duration, Instant};

use rocketmq_ha::{
    Config, ConnectionId, MasterEvent, MasterService, SyncCompletion, SyncError, Ticket,
};

use super::input::Input;

/// Runs one `waiters` program; panics on a violated property.
pub fn waiters(data: &[u8]) {
    let mut input = Input::new(data);
    let gap = match input.u8() % 3 {
        0 => input.small(1, 64),
        1 => input.u64().max(1),
        _ => Config::default().max_gap_not_in_sync(),
    };
    let config = Config::builder()
        .max_gap_not_in_sync(gap)
        .build()
        .expect("valid gap");
    let mut h = Harness::new(config);
    let mut steps = 0;
    while !input.is_empty() && steps < 4_000 {
        steps += 1;
        h.step(&mut input);
        h.check();
    }
    h.finish();
}

struct Conn {
    id: ConnectionId,
    ack: Option<u64>,
    live: bool,
}

struct Waiter {
    ticket: Ticket,
    offset: u64,
    acks_needed: usize,
    deadline: Instant,
    done: bool,
}

struct Harness {
    service: MasterService,
    /// The instant the harness is at; calls may pass an earlier one.
    now: Instant,
    /// The latest instant passed to the service: its clock.
    clock: Instant,
    conns: Vec<Conn>,
    waiters: Vec<Waiter>,
    frontier: u64,
    shut_down: bool,
    gap: u64,
    /// Completions the model expects from the current call.
    /// Completions the model expects from the current call: (ticket, result).
    expected: Vec<(Ticket, Result<(), SyncError>)>,
}

impl Harness {
    fn new(config: Config) -> Self {
        // Far enough from the process start that "earlier" instants are representable.
        let t0 = Instant::now() + Duration::from_secs(3_600);
        Harness {
            service: MasterService::new(config, t0),
            now: t0,
            clock: t0,
            conns: Vec::new(),
            waiters: Vec::new(),
            frontier: 0,
            shut_down: false,
            gap: config.max_gap_not_in_sync(),
            expected: Vec::new(),
        }
    }

    /// The instant passed to the next call: usually now, sometimes a little earlier.
    fn at(&mut self, input: &mut Input) -> Instant {
        let t = if input.u8().is_multiple_of(8) {
            self.now - Duration::from_millis(input.small(1, 200))
        } else {
            self.now
        };
        self.clock = self.clock.max(t);
        t
    }

    fn step(&mut self, input: &mut Input) {
        match input.u8() % 12 {
            0 => {
                let t = self.at(input);
                let id = self.service.register(t);
                assert_eq!(id.get(), self.conns.len() as u64, "ids are sequential");
                self.conns.push(Conn {
                    id,
                    ack: None,
                    live: true,
                });
            }
            1..=3 => {
                let Some(index) = self.pick_conn(input) else {
                    return;
                };
                let offset = self.ack_value(index, input);
                let t = self.at(input);
                let id = self.conns[index].id;
                if input.bool() {
                    self.service.handle_ack(id, t, offset);
                } else {
                    self.service
                        .handle_event(id, t, &MasterEvent::Acked { offset });
                }
                self.model_expire();
                let conn = &mut self.conns[index];
                if conn.live && conn.ack.is_none_or(|a| a < offset) {
                    conn.ack = Some(offset);
                    self.frontier = self.frontier.max(offset);
                    self.model_complete_satisfied();
                }
            }
            4 => {
                let Some(index) = self.pick_conn(input) else {
                    return;
                };
                let t = self.at(input);
                self.service.remove(self.conns[index].id, t);
                // Removal completes nothing: fewer acks can satisfy no one.
                self.conns[index].live = false;
            }
            5..=7 => self.wait(input),
            8 => {
                let t = self.at(input);
                self.service.handle_timeout(t);
                self.model_expire();
            }
            9 => {
                self.now += Duration::from_millis(match input.u8() % 3 {
                    0 => input.small(0, 10),
                    1 => input.medium(0, 5_000),
                    _ => self
                        .waiters
                        .iter()
                        .filter(|w| !w.done)
                        .map(|w| w.deadline.saturating_duration_since(self.now).as_millis() as u64)
                        .min()
                        .unwrap_or(0),
                });
            }
            10 => {
                if input.u8().is_multiple_of(4) {
                    let t = self.at(input);
                    self.service.shutdown(t);
                    self.shut_down = true;
                    for w in self.waiters.iter_mut().filter(|w| !w.done) {
                        w.done = true;
                        self.expected.push((w.ticket, Err(SyncError::Shutdown)));
                    }
                    for c in &mut self.conns {
                        c.live = false;
                    }
                } else if let Some(index) = self.pick_conn(input) {
                    let t = self.at(input);
                    let event = MasterEvent::Started {
                        requested: 0,
                        start: input.u64(),
                    };
                    self.service.handle_event(self.conns[index].id, t, &event);
                }
            }
            _ => {
                let put_where = match input.u8() % 3 {
                    0 => self.frontier.saturating_add(input.medium(0, 200)),
                    1 => self.frontier.saturating_sub(input.medium(0, 200)),
                    _ => input.u64(),
                };
                let live: Vec<u64> = self.live_acks();
                let in_sync = live
                    .iter()
                    .filter(|&&a| put_where.saturating_sub(a) < self.gap)
                    .count();
                assert_eq!(
                    self.service.in_sync_count(put_where),
                    in_sync,
                    "in-sync count"
                );
                let ok = self.conns.iter().any(|c| c.live)
                    && put_where.saturating_sub(self.frontier) < self.gap;
                assert_eq!(self.service.is_slave_ok(put_where), ok, "is-slave-OK");
            }
        }
        self.compare_completions();
    }

    fn pick_conn(&self, input: &mut Input) -> Option<usize> {
        if self.conns.is_empty() {
            None
        } else {
            Some(usize::from(input.u8()) % self.conns.len())
        }
    }

    fn ack_value(&self, index: usize, input: &mut Input) -> u64 {
        let previous = self.conns[index].ack.unwrap_or(0);
        match input.u8() % 4 {
            0 => previous.saturating_add(input.small(0, 16)),
            1 => previous.saturating_sub(input.small(0, 4)),
            2 => self.frontier.saturating_add(input.small(0, 8)),
            _ => input.u64(),
        }
    }

    fn wait(&mut self, input: &mut Input) {
        let offset = match input.u8() % 4 {
            0 => self.frontier.saturating_add(input.small(0, 16)),
            1 => self.frontier.saturating_sub(input.small(0, 16)),
            2 => input.small(0, 64),
            _ => input.u64(),
        };
        let acks_needed = match input.u8() {
            0 => usize::MAX,
            b => usize::from(b % 5),
        };
        let t = self.at(input);
        let deadline = match input.u8() % 4 {
            0 => t,
            1 => t - Duration::from_millis(input.small(0, 100)),
            _ => t + Duration::from_millis(input.medium(1, 5_000)),
        };
        let ticket = self.service.wait_for(t, offset, acks_needed, deadline);
        assert_eq!(
            ticket.get(),
            self.waiters.len() as u64,
            "tickets are sequential"
        );
        self.model_expire();
        let mut waiter = Waiter {
            ticket,
            offset,
            acks_needed,
            deadline,
            done: false,
        };
        let result = if self.shut_down {
            Some(Err(SyncError::Shutdown))
        } else if self.satisfied(&waiter) {
            Some(Ok(()))
        } else if deadline <= self.clock {
            Some(Err(SyncError::Timeout))
        } else {
            None
        };
        if let Some(result) = result {
            waiter.done = true;
            self.expected.push((ticket, result));
        }
        self.waiters.push(waiter);
    }

    fn live_acks(&self) -> Vec<u64> {
        self.conns
            .iter()
            .filter(|c| c.live)
            .filter_map(|c| c.ack)
            .collect()
    }

    fn satisfied(&self, w: &Waiter) -> bool {
        if w.acks_needed == 0 {
            return true;
        }
        let mut acks = self.live_acks();
        acks.sort_unstable_by(|a, b| b.cmp(a));
        acks.get(w.acks_needed - 1).is_some_and(|&a| a >= w.offset)
    }

    fn model_expire(&mut self) {
        let clock = self.clock;
        for w in self.waiters.iter_mut().filter(|w| !w.done) {
            if w.deadline <= clock {
                w.done = true;
                self.expected.push((w.ticket, Err(SyncError::Timeout)));
            }
        }
    }

    fn model_complete_satisfied(&mut self) {
        let done: Vec<usize> = (0..self.waiters.len())
            .filter(|&i| !self.waiters[i].done && self.satisfied(&self.waiters[i]))
            .collect();
        for i in done {
            self.waiters[i].done = true;
            self.expected.push((self.waiters[i].ticket, Ok(())));
        }
    }

    fn compare_completions(&mut self) {
        let mut got: Vec<(Ticket, Result<(), SyncError>)> =
            std::iter::from_fn(|| self.service.poll_completion())
                .map(|c: SyncCompletion| (c.ticket, c.result))
                .collect();
        let mut expected = std::mem::take(&mut self.expected);
        got.sort_by_key(|c| c.0);
        expected.sort_by_key(|c| c.0);
        assert_eq!(got, expected, "completions of this call");
    }

    fn check(&self) {
        let s = &self.service;
        let pending: Vec<&Waiter> = self.waiters.iter().filter(|w| !w.done).collect();
        assert_eq!(s.pending_waits(), pending.len(), "pending waits");
        assert_eq!(
            s.poll_timeout(),
            pending.iter().map(|w| w.deadline).min(),
            "earliest deadline"
        );
        assert_eq!(s.ack_frontier(), self.frontier, "frontier");
        let live: Vec<ConnectionId> = self.conns.iter().filter(|c| c.live).map(|c| c.id).collect();
        assert_eq!(s.connections().collect::<Vec<_>>(), live, "registry");
        assert_eq!(s.connection_count(), live.len());
        for c in &self.conns {
            let expected = if c.live { c.ack } else { None };
            assert_eq!(s.ack_of(c.id), expected, "ack of {:?}", c.id);
        }
    }

    /// Every remaining wait completes once its deadline passes.
    fn finish(mut self) {
        if let Some(last) = self.waiters.iter().map(|w| w.deadline).max() {
            self.now = self.now.max(last);
            self.clock = self.clock.max(last);
            self.service.handle_timeout(last);
            self.model_expire();
            self.compare_completions();
        }
        assert_eq!(self.service.pending_waits(), 0);
        assert_eq!(self.service.poll_timeout(), None);
        assert!(
            self.waiters.iter().all(|w| w.done),
            "every ticket completed"
        );
        // Never twice: more time and acks produce nothing.
        self.service
            .handle_timeout(self.clock + Duration::from_secs(60));
        for c in &self.conns {
            self.service.handle_ack(c.id, self.clock, u64::MAX);
        }
        assert_eq!(
            self.service.poll_completion(),
            None,
            "a ticket completed twice"
        );
    }
}
