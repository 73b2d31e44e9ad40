//! Every byte the master ever wrote, as a function instead of a copy.
//!
//! The byte at offset `o` written by *version* `g` of the master's log is `byte(o, g)`, a hash.
//! Version 0 is the log as first written. A master restart that loses its unflushed tail at `T`
//! starts version `g + 1`: the log as of version `g + 1` keeps version `g`'s bytes below `T` and
//! has new, different bytes from `T` on. So the log as of version `h` holds, at offset `o`,
//! `byte(o, gen(h, o))` where `gen(h, o)` is the newest version `g <= h` that started at or below
//! `o`, and it ends at `end(h)`, the furthest version `h` ever got.
//!
//! This is the reference the slave-prefix invariant checks against (see `check.rs`).

use bytes::Bytes;

#[derive(Debug, Clone, Copy)]
struct Version {
    /// The truncation point this version started from (0 for version 0).
    start: u64,
    /// One past the last byte this version wrote; final once a newer version exists.
    end: u64,
}

/// The master's log history: which bytes were ever at which offset, per version.
#[derive(Debug, Clone)]
pub struct History {
    salt: u64,
    versions: Vec<Version>,
}

impl History {
    /// An empty history whose first byte will be at `base`; `salt` makes each run's bytes
    /// different.
    pub fn new(salt: u64, base: u64) -> Self {
        History {
            salt,
            versions: vec![Version {
                start: 0,
                end: base,
            }],
        }
    }

    /// The byte version `generation` wrote at `offset`.
    pub fn byte(&self, offset: u64, generation: usize) -> u8 {
        let mut x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (generation as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)
            ^ self.salt;
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 32;
        (x >> 24) as u8
    }

    /// The current (newest) version.
    pub fn current(&self) -> usize {
        self.versions.len() - 1
    }

    /// How far the log as of `version` ever got.
    pub fn end(&self, version: usize) -> u64 {
        self.versions[version].end
    }

    /// The version whose byte the log as of `version` holds at `offset`.
    fn generation_at(&self, version: usize, offset: u64) -> usize {
        (0..=version)
            .rev()
            .find(|&g| self.versions[g].start <= offset)
            .unwrap_or(0)
    }

    /// The log as of `version` over `[start, end)`; `end` must not exceed `self.end(version)`.
    pub fn content(&self, version: usize, start: u64, end: u64) -> Vec<u8> {
        debug_assert!(end <= self.end(version));
        (start..end)
            .map(|o| self.byte(o, self.generation_at(version, o)))
            .collect()
    }

    /// Appends `len` new bytes to the current version and returns them (the master's producer).
    pub fn extend(&mut self, len: usize) -> Bytes {
        let version = self.current();
        let start = self.versions[version].end;
        let data = self.content_unchecked(version, start, start + len as u64);
        self.versions[version].end += len as u64;
        Bytes::from(data)
    }

    fn content_unchecked(&self, version: usize, start: u64, end: u64) -> Vec<u8> {
        (start..end)
            .map(|o| self.byte(o, self.generation_at(version, o)))
            .collect()
    }

    /// The master lost everything from `at` on: a new version starts there (if anything was
    /// lost at all). Returns whether a new version began.
    pub fn truncate(&mut self, at: u64) -> bool {
        let version = self.current();
        if at >= self.versions[version].end {
            return false;
        }
        self.versions.push(Version { start: at, end: at });
        true
    }

    /// The first offset in `[offset, offset + data.len())` where `data` differs from the log as
    /// of `version`, or `None` if it matches byte for byte (and lies within that version).
    pub fn mismatch(&self, version: usize, offset: u64, data: &[u8]) -> Option<u64> {
        let end = offset + data.len() as u64;
        if end > self.end(version) {
            return Some(self.end(version).max(offset));
        }
        let mut at = offset;
        while at < end {
            let generation = self.generation_at(version, at);
            // The same generation holds until a newer version's start (all such are above `at`).
            let run_end = self.versions[generation + 1..=version]
                .iter()
                .map(|v| v.start)
                .min()
                .unwrap_or(u64::MAX)
                .min(end);
            for o in at..run_end {
                if data[(o - offset) as usize] != self.byte(o, generation) {
                    return Some(o);
                }
            }
            at = run_end;
        }
        None
    }

    /// The oldest version `>= from` whose log holds exactly `data` at `offset`.
    pub fn matching_version(&self, from: usize, offset: u64, data: &[u8]) -> Option<usize> {
        (from..=self.current()).find(|&v| self.mismatch(v, offset, data).is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_share_the_prefix_and_differ_after_truncation() {
        let mut h = History::new(7, 0);
        let v0 = h.extend(100).to_vec();
        assert!(h.truncate(60));
        let v1 = h.extend(50).to_vec();
        assert_eq!(h.content(1, 0, 60), v0[..60].to_vec());
        assert_eq!(h.content(1, 60, 110), v1);
        assert_ne!(
            v0[60..100],
            v1[..40],
            "a new version writes different bytes"
        );
        assert_eq!(h.matching_version(0, 0, &v0), Some(0));
        assert_eq!(h.matching_version(0, 60, &v1), Some(1));
        assert_eq!(h.matching_version(1, 60, &v0[60..]), None);
        assert_eq!(h.mismatch(0, 0, &v0[..100]), None);
        assert_eq!(h.mismatch(0, 0, &[0; 101]), Some(100));
    }
}
