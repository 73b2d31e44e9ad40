//! The machines' timers in one small table, so one place answers "what is the next deadline",
//! and a clock that never runs backwards.

use std::time::Instant;

/// Every timer any machine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Send a keep-alive: a master heartbeat frame (§3.4) or a slave re-report (§4.2).
    Heartbeat = 0,
    /// Close a connection that has read nothing for `housekeeping_interval` (§3.2, §4.6).
    Housekeeping = 1,
    /// Dial the master again after a back-off (slave only, §1.4).
    Reconnect = 2,
    /// Give up on a dial that has not connected (slave only, §1.4).
    Connect = 3,
    /// Close a connection whose pending write made no progress (a report or a frame).
    WriteStall = 4,
    /// Close a master connection whose first report has not arrived (master only).
    FirstReport = 5,
}

const TIMER_COUNT: usize = 6;

/// Deadlines indexed by [`Timer`]; `None` means stopped.
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; TIMER_COUNT],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, deadline: Instant) {
        self.deadlines[timer as usize] = Some(deadline);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    pub(crate) fn stop_all(&mut self) {
        self.deadlines = [None; TIMER_COUNT];
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer as usize]
    }

    /// Whether `timer` is running and its deadline is at or before `now`.
    pub(crate) fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|deadline| deadline <= now)
    }

    /// The earliest running deadline.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }
}

/// The latest `now` a machine has been given. Time passed in that is earlier is clamped to it,
/// so a caller's clock going backwards can never make a deadline fire twice or panic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    latest: Instant,
}

impl Clock {
    pub(crate) fn new(now: Instant) -> Self {
        Clock { latest: now }
    }

    /// The latest time given so far.
    pub(crate) fn latest(&self) -> Instant {
        self.latest
    }

    pub(crate) fn advance(&mut self, now: Instant) -> Instant {
        if now > self.latest {
            self.latest = now;
        }
        self.latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn next_timeout_is_earliest_running() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::Housekeeping, t0 + Duration::from_secs(20));
        t.set(Timer::Heartbeat, t0 + Duration::from_secs(5));
        assert_eq!(t.next_timeout(), Some(t0 + Duration::from_secs(5)));
        assert!(!t.is_expired(Timer::Heartbeat, t0));
        assert!(t.is_expired(Timer::Heartbeat, t0 + Duration::from_secs(5)));
        t.stop(Timer::Heartbeat);
        assert_eq!(t.next_timeout(), Some(t0 + Duration::from_secs(20)));
        t.stop_all();
        assert_eq!(t.next_timeout(), None);
    }

    #[test]
    fn clock_clamps_backwards_time() {
        let t0 = Instant::now();
        let mut c = Clock::new(t0 + Duration::from_secs(1));
        assert_eq!(c.advance(t0), t0 + Duration::from_secs(1));
        assert_eq!(
            c.advance(t0 + Duration::from_secs(2)),
            t0 + Duration::from_secs(2)
        );
    }
}
