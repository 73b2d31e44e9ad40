//! A slave whose disk is full, over real sockets, for every driver: it makes a few attempts and
//! then only a handful a minute (the local-failure back-off, not the network's), says why at
//! each, and resumes to a byte-identical log once space is freed.
//!
//! The full disk is a log wrapper whose appends fail with `ENOSPC` while a flag is set, so the
//! test needs no privileges and runs the drivers' real store path.

mod common;

use common::{pattern, MIB};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketmq_ha::{Config, LogError, LogSink, LogSource, MemoryLog, StartPosition};
use rocketmq_ha_transports::{Error, MasterHandle, SharedLog, SlaveHandle, Transport};

/// A log whose appends fail with "no space left on device" while `full` is set.
struct FullableLog {
    log: MemoryLog,
    full: Arc<AtomicBool>,
}

impl FullableLog {
    fn check(&self) -> Result<(), LogError> {
        if self.full.load(Ordering::SeqCst) {
            let enospc = io::Error::from_raw_os_error(28);
            return Err(LogError::Storage(Box::new(enospc)));
        }
        Ok(())
    }
}

impl LogSource for FullableLog {
    fn min_offset(&self) -> u64 {
        self.log.min_offset()
    }
    fn max_offset(&self) -> u64 {
        self.log.max_offset()
    }
    fn segment_size(&self) -> u64 {
        self.log.segment_size()
    }
    fn read(&self, offset: u64, max_len: usize) -> Result<Bytes, LogError> {
        self.log.read(offset, max_len)
    }
}

impl LogSink for FullableLog {
    fn append(&mut self, offset: u64, data: Bytes) -> Result<u64, LogError> {
        self.check()?;
        self.log.append(offset, data)
    }
}

fn config() -> Config {
    Config::builder()
        .start_position(StartPosition::OldestRetained)
        .reconnect_backoff_initial(Duration::from_millis(10))
        .reconnect_backoff_max(Duration::from_millis(100))
        .local_failure_backoff_initial(Duration::from_millis(100))
        .local_failure_backoff_max(Duration::from_millis(400))
        .build()
        .expect("valid test config")
}

fn a_full_disk_backs_off_says_why_and_resumes(transport: Transport) {
    let c = config();
    let mut master_log = MemoryLog::new(16 * MIB);
    master_log.push(pattern(0, 4 * MIB));
    let master = MasterHandle::new(master_log, c);
    let server = transport
        .spawn_master(SocketAddr::from(([127, 0, 0, 1], 0)), master.clone())
        .expect("master starts");
    let addr = server.local_addr().expect("a master listens");

    let full = Arc::new(AtomicBool::new(true));
    let log = FullableLog {
        log: MemoryLog::new(16 * MIB),
        full: Arc::clone(&full),
    };
    let slave = SlaveHandle::with_seed(addr, SharedLog::new(log), c, 7);
    let client = transport.spawn_slave(slave.clone()).expect("slave starts");

    // Two seconds of a full disk. The network back-off alone (10 ms to 100 ms) would allow
    // some 30 attempts; the local one (100 ms doubling to 400 ms, half to all of it) allows
    // at most 0.1 + 0.2 + 0.4 ... : about 7, and never fewer than 2.
    let window = Duration::from_secs(2);
    let started = Instant::now();
    slave.wait_until_blocking(started + window, |_| false);
    let status = slave.status();
    let errors = slave.take_errors();
    let local: Vec<&Error> = errors
        .iter()
        .filter(|e| matches!(e, Error::Log(LogError::Storage(_))))
        .collect();
    assert!(
        (2..=12).contains(&local.len()),
        "{transport}: {} failed stores in {window:?}, status {status:?}, errors {errors:?}",
        local.len()
    );
    assert!(status.local_failures >= 2, "{status:?}");
    assert!(
        local[0].to_string().contains("No space left on device"),
        "the reason is said: {}",
        local[0]
    );
    assert_eq!(slave.log().max_offset(), 0, "nothing was stored");

    // Space is back: the next attempt (within the 400 ms ceiling) replicates everything.
    full.store(false, Ordering::SeqCst);
    let end = master.log().max_offset();
    let reached = slave.wait_until_blocking(Instant::now() + Duration::from_secs(30), |s| {
        s.log().max_offset() >= end
    });
    assert!(
        reached,
        "{transport}: stopped at {} of {end}; errors {:?}",
        slave.log().max_offset(),
        slave.take_errors()
    );
    let master_bytes = master
        .log()
        .read()
        .copy_range(0, end)
        .expect("master bytes");
    let slave_bytes = slave
        .log()
        .read()
        .log
        .copy_range(0, end)
        .expect("slave bytes");
    assert!(master_bytes == slave_bytes, "{transport}: logs differ");
    assert_eq!(slave.status().local_failures, 0);
    client.shutdown().expect("slave stops");
    server.shutdown().expect("master stops");
}

#[test]
fn blocking_slave_on_a_full_disk_backs_off_and_resumes() {
    a_full_disk_backs_off_says_why_and_resumes(Transport::Blocking);
}

#[test]
fn smol_slave_on_a_full_disk_backs_off_and_resumes() {
    a_full_disk_backs_off_says_why_and_resumes(Transport::Smol);
}

#[cfg(feature = "tokio")]
#[test]
fn tokio_slave_on_a_full_disk_backs_off_and_resumes() {
    a_full_disk_backs_off_says_why_and_resumes(Transport::Tokio);
}
