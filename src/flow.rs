//! Flow control: a byte budget per second for what a master sends to one slave (RocketMQ 5's
//! `haFlowControlEnable` / `maxHaTransferByteInSecond`, §3.9), so a slave catching up a large
//! backlog does not saturate the link that producers and other slaves share.
//!
//! Java's classic master counts only the 12-byte headers, so its limit almost never engages,
//! and when it does it sends a zero-size frame that looks like a heartbeat. Ours counts every
//! byte (header and body), and when the budget is spent the master waits for it to refill (a
//! deadline) instead of sending anything.
//!
//! The budget is a token bucket that refills continuously at the rate and holds at most one full
//! frame. The master sends as soon as half a frame is saved up, a frame of what the budget
//! holds: a timer that wakes late (every runtime's does, by up to a millisecond) then finds more
//! saved up, not a full bucket that lost what it could not hold. Waiting for whole frames lost
//! about 10% of a 100 MiB/s limit that way. So over **any** window of `T` seconds (not just aligned one-second windows, where a
//! reset-every-second counter allows twice the rate across a boundary) the bytes sent are at most
//! `rate × T` plus one frame, plus one 12-byte heartbeat that may be sent on credit (heartbeats
//! keep the slave's housekeeping quiet even while data waits).

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

const NANOS: i128 = 1_000_000_000;

/// A master's flow-control setting: the same limit for each connection, or one limit shared by
/// all of them (split evenly among the live connections, so together they never exceed it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RateLimit {
    /// Each connection may send this many bytes a second (RocketMQ's
    /// `maxHaTransferByteInSecond`, which is per connection).
    PerConnection(NonZeroU64),
    /// All connections together may send this many bytes a second.
    Shared(NonZeroU64),
}

impl RateLimit {
    /// The limit for one of `connections` live connections (never below [`MIN_RATE`]).
    pub fn per_connection(&self, connections: usize) -> NonZeroU64 {
        let rate = match *self {
            RateLimit::PerConnection(rate) => rate.get(),
            RateLimit::Shared(total) => total.get() / (connections.max(1) as u64),
        };
        NonZeroU64::new(rate.max(MIN_RATE)).unwrap_or(NonZeroU64::MIN)
    }
}

/// The lowest rate accepted: at a few bytes a second even heartbeats would outrun it.
pub const MIN_RATE: u64 = 1024;

/// A continuously refilling byte budget (a token bucket), in nano-bytes so no fraction of a
/// byte is lost between refills.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    /// Bytes per second.
    rate: u64,
    /// The most bytes that can be saved up (one full frame).
    capacity: u64,
    /// Bytes available times 10⁹; negative after a heartbeat on credit.
    tokens: i128,
    last: Instant,
}

impl Budget {
    /// A full budget of `capacity` bytes refilling at `rate` bytes a second.
    pub(crate) fn new(rate: NonZeroU64, capacity: u64, now: Instant) -> Self {
        Budget {
            rate: rate.get().max(MIN_RATE),
            capacity,
            tokens: i128::from(capacity) * NANOS,
            last: now,
        }
    }

    /// Changes the rate (an operator raising it while a slave catches up); what was saved up
    /// stays, within the capacity.
    pub(crate) fn set_rate(&mut self, rate: NonZeroU64, now: Instant) {
        self.refill(now);
        self.rate = rate.get().max(MIN_RATE);
    }

    /// The rate in bytes a second.
    pub(crate) fn rate(&self) -> u64 {
        self.rate
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos() as i128;
        self.last = self.last.max(now);
        let cap = i128::from(self.capacity) * NANOS;
        self.tokens = (self.tokens + elapsed * i128::from(self.rate)).min(cap);
    }

    /// Whether `bytes` can be sent at `now`.
    pub(crate) fn allows(&mut self, bytes: u64, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= i128::from(bytes) * NANOS
    }

    /// Whole bytes available now (0 while repaying credit).
    pub(crate) fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        u64::try_from(self.tokens / NANOS).unwrap_or(0)
    }

    /// The most bytes that can be saved up.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Spends `bytes` (possibly on credit, for a heartbeat).
    pub(crate) fn spend(&mut self, bytes: u64, now: Instant) {
        self.refill(now);
        self.tokens -= i128::from(bytes) * NANOS;
    }

    /// Sets, changes or lifts the rate limit in `slot` at run time (an operator raising it
    /// while a slave catches up): what a budget had saved up stays; a new one holds
    /// `capacity` bytes at most.
    pub(crate) fn update(
        slot: &mut Option<Budget>,
        rate: Option<NonZeroU64>,
        capacity: u64,
        now: Instant,
    ) {
        match (rate, slot.as_mut()) {
            (None, _) => *slot = None,
            (Some(rate), Some(budget)) => budget.set_rate(rate, now),
            (Some(rate), None) => *slot = Some(Budget::new(rate, capacity, now)),
        }
    }

    /// A frame of a `header_len`-byte header and up to `body_len` bytes of body, as §3.9 lets
    /// it go: once the budget holds half a frame (or all of a smaller one), it carries what the
    /// budget allows (`Ok`: the body bytes, already spent, never 0 for a body); before that,
    /// `Err` says when to look again. Never an empty data frame.
    pub(crate) fn admit(
        &mut self,
        header_len: u64,
        body_len: u64,
        now: Instant,
    ) -> Result<u64, Instant> {
        let frame_len = header_len + body_len;
        let threshold = frame_len.min((self.capacity() / 2).max(header_len + 1));
        if !self.allows(threshold, now) {
            return Err(self.ready_at(threshold));
        }
        let room = self.available(now).saturating_sub(header_len);
        let body = room.min(body_len);
        self.spend(header_len + body, now);
        Ok(body)
    }

    /// When `bytes` (at most the capacity) will be available.
    pub(crate) fn ready_at(&self, bytes: u64) -> Instant {
        let need = i128::from(bytes.min(self.capacity)) * NANOS - self.tokens;
        if need <= 0 {
            return self.last;
        }
        let rate = i128::from(self.rate);
        // Rounded up, so at the deadline the bytes really are there.
        let nanos = (need + rate - 1) / rate;
        self.last + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(r: u64) -> NonZeroU64 {
        NonZeroU64::new(r).unwrap()
    }

    #[test]
    fn a_full_budget_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Budget::new(rate(1_000_000), 10_000, t0);
        assert!(b.allows(10_000, t0));
        b.spend(10_000, t0);
        assert!(!b.allows(1, t0));
        // 1 MB/s: 5 000 bytes take 5 ms.
        assert_eq!(b.ready_at(5_000), t0 + Duration::from_millis(5));
        assert!(!b.allows(5_000, t0 + Duration::from_micros(4_999)));
        assert!(b.allows(5_000, t0 + Duration::from_millis(5)));
        // Never more than the capacity, however long it waits.
        assert!(!b.allows(10_001, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn credit_is_repaid_before_more_is_sent() {
        let t0 = Instant::now();
        let mut b = Budget::new(rate(2048), 100, t0);
        b.spend(100, t0);
        b.spend(12, t0);
        assert_eq!(
            b.ready_at(1),
            t0 + Duration::from_nanos(13 * NANOS as u64 / 2048 + 1)
        );
    }

    #[test]
    fn a_shared_limit_is_split_among_the_connections() {
        let shared = RateLimit::Shared(rate(100 << 20));
        assert_eq!(shared.per_connection(0).get(), 100 << 20);
        assert_eq!(shared.per_connection(4).get(), 25 << 20);
        assert_eq!(
            RateLimit::Shared(rate(2048)).per_connection(1000).get(),
            MIN_RATE
        );
        assert_eq!(
            RateLimit::PerConnection(rate(5000)).per_connection(9).get(),
            5000
        );
    }

    #[test]
    fn changing_the_rate_keeps_what_was_saved() {
        let t0 = Instant::now();
        let mut b = Budget::new(rate(1024), 4096, t0);
        b.spend(4096, t0);
        let t1 = t0 + Duration::from_secs(1);
        b.set_rate(rate(1_048_576), t1);
        assert!(b.allows(1024, t1));
        assert!(!b.allows(1025, t1));
        assert!(b.allows(4096, t1 + Duration::from_millis(3)));
        assert_eq!(b.rate(), 1_048_576);
    }
}
