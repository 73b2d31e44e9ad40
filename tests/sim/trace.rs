//! The run's trace: a hash over every line (the determinism fingerprint) and a bounded ring of
//! the last lines (printed on failure).
//!
//! Lines carry virtual durations only, never raw `Instant`s, so two runs of one seed hash alike.

use std::collections::VecDeque;
use std::fmt::{self, Write};
use std::time::Duration;

/// FNV-1a, 64-bit: tiny, portable and stable across platforms and Rust versions.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Trace lines: a running hash of all of them and the last `capacity` kept as text.
#[derive(Debug)]
pub struct Trace {
    ring: VecDeque<String>,
    capacity: usize,
    hash: u64,
    lines: u64,
    echo: bool,
}

impl Trace {
    /// Keeps the last `capacity` lines; `echo` also prints every line to stderr.
    pub fn new(capacity: usize, echo: bool) -> Self {
        Trace {
            ring: VecDeque::with_capacity(capacity),
            capacity,
            hash: FNV_OFFSET,
            lines: 0,
            echo,
        }
    }

    /// Records one line stamped with the virtual time `at`.
    pub fn line(&mut self, at: Duration, args: fmt::Arguments<'_>) {
        let mut text = if self.capacity > 0 && self.ring.len() >= self.capacity {
            self.ring.pop_front().unwrap_or_default()
        } else {
            String::new()
        };
        text.clear();
        // Writing into a String cannot fail.
        let _ = write!(
            text,
            "{:>6}.{:06} {}",
            at.as_secs(),
            at.subsec_micros(),
            args
        );
        for byte in text.bytes().chain(std::iter::once(b'\n')) {
            self.hash = (self.hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
        self.lines += 1;
        if self.echo {
            eprintln!("{text}");
        }
        if self.capacity > 0 {
            self.ring.push_back(text);
        }
    }

    /// The hash of every line so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// How many lines were recorded.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// The last lines, oldest first.
    pub fn tail(&self) -> Vec<String> {
        self.ring.iter().cloned().collect()
    }
}
