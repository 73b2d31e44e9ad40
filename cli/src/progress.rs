//! A hand-written progress display: one line redrawn with `\r` on a terminal, plain lines (at
//! most one a second) otherwise, so logs and pipes stay readable.

use std::collections::VecDeque;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::size::{mb_per_s, Human};

/// Throughput over a sliding window of recent samples, so the rate follows changes.
pub struct Rate {
    samples: VecDeque<(Instant, u64)>,
    window: Duration,
}

impl Rate {
    /// A rate whose count stood at `initial` now.
    pub fn new(window: Duration, initial: u64) -> Self {
        Rate {
            samples: VecDeque::from([(Instant::now(), initial)]),
            window,
        }
    }

    /// Records `value` (a monotonic byte count) now and returns MB/s over the window.
    pub fn sample(&mut self, value: u64) -> f64 {
        let now = Instant::now();
        self.samples.push_back((now, value));
        // Keep one sample at or beyond the window's start, so the rate spans the whole window.
        while self.samples.len() > 2 && now.duration_since(self.samples[1].0) >= self.window {
            self.samples.pop_front();
        }
        let (first_at, first) = self.samples[0];
        mb_per_s(
            value.saturating_sub(first),
            now.duration_since(first_at).as_secs_f64(),
        )
    }
}

/// A progress line towards `total` bytes (or open-ended).
pub struct Progress {
    tty: bool,
    label: &'static str,
    total: Option<u64>,
    last_plain: Option<Instant>,
    /// A line not yet printed (plain mode only): the final state must always be shown.
    unprinted: Option<String>,
    drawn: bool,
}

impl Progress {
    pub fn new(label: &'static str, total: Option<u64>) -> Self {
        Progress {
            tty: io::stderr().is_terminal(),
            label,
            total,
            last_plain: None,
            unprinted: None,
            drawn: false,
        }
    }

    /// Shows `done` bytes at `rate` MB/s, with `note` (connection state, lag) appended.
    pub fn show(&mut self, done: u64, rate: f64, note: &str) {
        let line = match self.total {
            Some(total) if total > 0 => {
                let fraction = (done as f64 / total as f64).clamp(0.0, 1.0);
                let filled = (fraction * 30.0).round() as usize;
                format!(
                    "{} [{}{}] {:5.1}% {} / {}  {:7.1} MB/s  {}",
                    self.label,
                    "#".repeat(filled),
                    " ".repeat(30 - filled),
                    fraction * 100.0,
                    Human(done),
                    Human(total),
                    rate,
                    note
                )
            }
            _ => format!(
                "{} {}  {:7.1} MB/s  {}",
                self.label,
                Human(done),
                rate,
                note
            ),
        };
        let mut err = io::stderr().lock();
        if self.tty {
            // Clear to the end of the line: the new text may be shorter than the old.
            let _ = write!(err, "\r{line}\x1b[K");
            self.drawn = true;
        } else if self
            .last_plain
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            let _ = writeln!(err, "{line}");
            self.last_plain = Some(Instant::now());
            self.unprinted = None;
        } else {
            self.unprinted = Some(line);
        }
        let _ = err.flush();
    }

    /// Ends the redrawn line so later output starts on a fresh one.
    pub fn finish(&mut self) {
        if let Some(line) = self.unprinted.take() {
            eprintln!("{line}");
        }
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_of_a_constant_value_is_zero_and_of_growth_is_positive() {
        let mut rate = Rate::new(Duration::from_secs(5), 100);
        assert_eq!(rate.sample(100), 0.0);
        std::thread::sleep(Duration::from_millis(20));
        assert!(rate.sample(10_000_100) > 0.0);
    }
}
