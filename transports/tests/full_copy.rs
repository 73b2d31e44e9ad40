//! A master grants a full copy by address: an empty slave from a block given to
//! `Admission::full_copy_for` gets the whole retained log, while an empty slave from elsewhere
//! starts at the master's last segment (RocketMQ's rule, §3.3). On every driver.

mod common;

use std::time::{Duration, Instant};

use common::{loopback, pattern, MIB};
use rocketmq_ha::{Admission, Config, LogSource, MemoryLog};
use rocketmq_ha_transports::{MasterHandle, SlaveHandle, Transport};

const PATIENCE: Duration = Duration::from_secs(60);

/// Three segments of 1 MiB, the last one partly written.
const END: u64 = 2 * MIB + 4096;

fn config() -> Config {
    Config::builder()
        .reconnect_backoff_initial(Duration::from_millis(10))
        .reconnect_backoff_max(Duration::from_millis(100))
        .build()
        .expect("valid test config")
}

/// Replicates into an empty slave on loopback from a master that grants a full copy to
/// `full_copy_for`; returns the slave's log and where the master started it.
fn replicate(transport: Transport, full_copy_for: &str) -> (MemoryLog, u64) {
    let mut log = MemoryLog::new(MIB);
    log.push(pattern(0, END));
    let master = MasterHandle::new(log, config());
    master.set_admission(Admission::new().full_copy_for([full_copy_for.parse().unwrap()]));
    let server = transport.spawn_master(loopback(), master.clone()).unwrap();
    let slave = SlaveHandle::new(server.local_addr().unwrap(), MemoryLog::new(MIB), config());
    let client = transport.spawn_slave(slave.clone()).unwrap();
    let deadline = Instant::now() + PATIENCE;
    assert!(
        slave.wait_until_blocking(deadline, |s| s.log().max_offset() >= END),
        "{transport}: the slave stopped at {}; errors: {:?}",
        slave.log().max_offset(),
        slave.take_errors()
    );
    let start = master.slaves()[0].start.expect("started");
    client.shutdown().unwrap();
    server.shutdown().unwrap();
    let log = slave.log().read().clone();
    (log, start)
}

#[test]
fn an_empty_slave_from_a_full_copy_address_gets_the_whole_log() {
    for &transport in Transport::ALL {
        let (log, start) = replicate(transport, "127.0.0.0/8");
        assert_eq!(start, 0, "{transport}");
        assert_eq!(log.min_offset(), 0, "{transport}");
        let theirs = log.copy_range(0, END).expect("range");
        assert!(theirs == pattern(0, END), "{transport}: bytes differ");
    }
}

#[test]
fn an_empty_slave_from_elsewhere_starts_at_the_last_segment() {
    for &transport in Transport::ALL {
        let (log, start) = replicate(transport, "192.0.2.1");
        assert_eq!(start, 2 * MIB, "{transport}");
        assert_eq!(log.min_offset(), 2 * MIB, "{transport}");
        let theirs = log.copy_range(2 * MIB, END).expect("range");
        assert!(
            theirs == pattern(2 * MIB, END - 2 * MIB),
            "{transport}: bytes differ"
        );
    }
}
