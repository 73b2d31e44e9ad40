//! The one source of every decision the simulator makes.
//!
//! It is backed either by a seeded PRNG (xoshiro256**, seeded through SplitMix64: portable and
//! independent of any crate) or by a byte slice, which is how a fuzzer or quickcheck drives the
//! simulator. An exhausted slice answers zero forever; every draw in the simulator is arranged so
//! that zero is the calm choice (no fault, the smallest delay, the default value), so a short
//! input ends in a quiet run instead of an error.

use std::time::Duration;

/// Every random choice of a run comes from here.
#[derive(Debug, Clone)]
pub struct Entropy {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Prng([u64; 4]),
    Bytes { data: Vec<u8>, at: usize },
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn xoshiro256ss(s: &mut [u64; 4]) -> u64 {
    let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
    let t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s[3].rotate_left(45);
    result
}

impl Entropy {
    /// A PRNG-backed source: the same seed always gives the same run.
    pub fn from_seed(seed: u64) -> Self {
        let mut sm = seed;
        let state = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Entropy {
            source: Source::Prng(state),
        }
    }

    /// A source reading choices from `data` (fuzzer or quickcheck input); zeros once it runs out.
    pub fn from_bytes(data: &[u8]) -> Self {
        Entropy {
            source: Source::Bytes {
                data: data.to_vec(),
                at: 0,
            },
        }
    }

    /// Whether a byte-backed source has run out (a PRNG never does).
    pub fn is_exhausted(&self) -> bool {
        match &self.source {
            Source::Prng(_) => false,
            Source::Bytes { data, at } => *at >= data.len(),
        }
    }

    /// A value in `0..n`; 0 when `n <= 1`. A byte source spends only as many bytes as `n` needs.
    pub fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            return 0;
        }
        match &mut self.source {
            Source::Prng(state) => {
                let x = xoshiro256ss(state);
                ((u128::from(x) * u128::from(n)) >> 64) as u64
            }
            Source::Bytes { data, at } => {
                let bits = 64 - (n - 1).leading_zeros();
                let need = bits.div_ceil(8);
                let mut value = 0u64;
                for _ in 0..need {
                    let byte = data.get(*at).copied().unwrap_or(0);
                    *at = (*at + 1).min(data.len());
                    value = (value << 8) | u64::from(byte);
                }
                value % n
            }
        }
    }

    /// A value in `lo..=hi`; `lo` on a zero draw.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        lo + self.below((hi - lo).saturating_add(1))
    }

    /// A value in `lo..=hi`, log-uniformly spread so that small values are as likely as large
    /// ones; `lo` on a zero draw.
    pub fn log_range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo >= 1 && lo <= hi, "bad log range {lo}..={hi}");
        let lo_bits = 63 - lo.leading_zeros();
        let hi_bits = 63 - hi.leading_zeros();
        let bits = self.range(u64::from(lo_bits), u64::from(hi_bits));
        let from = (1u64 << bits).max(lo);
        let to = if bits >= 63 {
            hi
        } else {
            ((1u64 << (bits + 1)) - 1).min(hi)
        };
        self.range(from, to)
    }

    /// True with probability `per_mille`/1000; false on a zero draw (unless `per_mille` is 1000).
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) >= 1000u64.saturating_sub(per_mille)
    }

    /// A duration in `lo..=hi` at microsecond resolution; `lo` on a zero draw.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo_us, hi_us) = (lo.as_micros() as u64, hi.as_micros() as u64);
        Duration::from_micros(self.range(lo_us, hi_us.max(lo_us)))
    }

    /// A duration in `lo..=hi`, log-uniform over microseconds; `lo` on a zero draw.
    pub fn log_duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        let lo_us = (lo.as_micros() as u64).max(1);
        let hi_us = (hi.as_micros() as u64).max(lo_us);
        Duration::from_micros(self.log_range(lo_us, hi_us))
    }

    /// A seed for a machine's own jitter.
    pub fn seed(&mut self) -> u64 {
        self.below(1 << 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausted_bytes_give_zeros() {
        let mut e = Entropy::from_bytes(&[0xff]);
        assert_eq!(e.below(256), 255);
        assert!(e.is_exhausted());
        assert_eq!(e.below(1000), 0);
        assert!(!e.chance(999));
        assert_eq!(e.range(5, 9), 5);
    }
}
