//! Reconnect back-off with jitter, drawn from an injected seed so runs are reproducible.

use std::time::Duration;

/// SplitMix64: tiny, portable, and good enough for jitter; its output depends only on the seed.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Exponential back-off with "equal jitter": attempt *n* waits between half and all of
/// `min(initial · 2ⁿ, max)`, so a fleet of slaves that lost the same master spreads out.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
    rng: SplitMix64,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            initial,
            max,
            failures: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// The delay before the next attempt; each call counts one more failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.failures.min(20);
        let base = self.initial.saturating_mul(factor).min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = base / 2;
        let spread = (base - half).as_nanos() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            self.rng.next_u64() % (spread + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// Forget past failures after the connection made progress.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_bounds_and_reset() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        let mut b = Backoff::new(initial, max, 7);
        let mut ceiling = initial;
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(max);
        }
        b.reset();
        assert!(b.next_delay() <= initial);
    }

    #[test]
    fn same_seed_same_delays() {
        let mk = || Backoff::new(Duration::from_millis(10), Duration::from_secs(1), 42);
        let (mut a, mut b) = (mk(), mk());
        for _ in 0..10 {
            assert_eq!(a.next_delay(), b.next_delay());
        }
        let mut c = Backoff::new(Duration::from_millis(10), Duration::from_secs(1), 43);
        let mut a = mk();
        assert!((0..10).any(|_| a.next_delay() != c.next_delay()));
    }
}
