//! The program's log: `tracing` events from the library and the program, one line each on
//! stderr with a UTC timestamp, the level and the connection's span (`serving{peer=.. id=..}` on
//! the master, `replicating{master=.. connection=..}` on the slave).
//!
//! The level is `info` unless `-v` (debug; `-vv` trace) or `-q` (warn; `-qq` error) says
//! otherwise; without either flag, `RUST_LOG` (an `EnvFilter`, e.g.
//! `RUST_LOG=rocketmq_ha_transports=trace`) decides when it is set.

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::EnvFilter;

/// The filter for `-v` given `verbose` times and `-q` given `quiet` times.
fn level(verbose: u8, quiet: u8) -> &'static str {
    match i16::from(verbose) - i16::from(quiet) {
        ..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    }
}

/// Installs the subscriber. Call once, before anything logs.
pub fn init(verbose: u8, quiet: u8) {
    let flags = verbose > 0 || quiet > 0;
    let env = std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty());
    let (filter, bad) = match env {
        Some(directives) if !flags => match EnvFilter::try_new(&directives) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new(level(0, 0)), Some((directives, e))),
        },
        _ => (EnvFilter::new(level(verbose, quiet)), None),
    };
    let tty = io::stderr().is_terminal();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(tty)
        // On a terminal the progress line is redrawn with `\r` and no newline: clear it first,
        // so an event gets a line of its own (the next redraw brings the progress back).
        .with_writer(move || {
            let mut stderr = io::stderr();
            if tty {
                let _ = stderr.write_all(b"\r\x1b[K");
            }
            stderr
        })
        .init();
    if let Some((directives, e)) = bad {
        tracing::warn!("ignoring RUST_LOG={directives:?}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::level;

    #[test]
    fn each_v_is_one_level_more_and_each_q_one_less() {
        assert_eq!(level(0, 0), "info");
        assert_eq!(level(1, 0), "debug");
        assert_eq!(level(2, 0), "trace");
        assert_eq!(level(9, 0), "trace");
        assert_eq!(level(0, 1), "warn");
        assert_eq!(level(0, 2), "error");
        assert_eq!(level(1, 1), "info");
    }
}
