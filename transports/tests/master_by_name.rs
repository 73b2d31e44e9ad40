//! A slave given its master's host name resolves it again before every dial, and tries each
//! address the name resolves to: on every driver it replicates from `localhost:PORT` (which
//! may resolve to `::1` first, where nothing listens), and finds the master again after it
//! restarts.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{pattern, MIB};
use rocketmq_ha::{Config, MemoryLog, StartPosition};
use rocketmq_ha_transports::{Error, MasterHandle, SlaveHandle, Transport};

const PATIENCE: Duration = Duration::from_secs(60);

fn config() -> Config {
    Config::builder()
        .start_position(StartPosition::OldestRetained)
        .reconnect_backoff_initial(Duration::from_millis(10))
        .reconnect_backoff_max(Duration::from_millis(200))
        .build()
        .expect("valid test config")
}

fn master_with(len: u64) -> MasterHandle<MemoryLog> {
    let mut log = MemoryLog::new(16 * MIB);
    log.push(pattern(0, len));
    MasterHandle::new(log, config())
}

#[test]
fn a_slave_dials_its_master_by_name_and_finds_it_again_after_a_restart() {
    for &transport in Transport::ALL {
        let master = master_with(MIB);
        let server = transport
            .spawn_master(SocketAddr::from(([127, 0, 0, 1], 0)), master.clone())
            .expect("master starts");
        let addr = server.local_addr().expect("a master listens");
        let host = format!("localhost:{}", addr.port());
        let slave =
            SlaveHandle::with_host(&host, MemoryLog::new(16 * MIB), config()).expect("resolves");
        assert_eq!(slave.master_host(), Some(host.as_str()));
        let client = transport.spawn_slave(slave.clone()).expect("slave starts");
        let deadline = Instant::now() + PATIENCE;
        assert!(
            slave.wait_until_blocking(deadline, |s| s.log().max_offset() >= MIB),
            "{transport}: the slave stopped at {}; errors: {:?}",
            slave.log().max_offset(),
            slave.take_errors()
        );
        assert_eq!(
            slave.master(),
            addr,
            "{transport}: the address that answered"
        );

        // The master goes away and comes back on the same port, with more data.
        server.shutdown().expect("master stops");
        let master = master_with(2 * MIB);
        let server = transport
            .spawn_master(addr, master.clone())
            .expect("master restarts on its port");
        let deadline = Instant::now() + PATIENCE;
        assert!(
            slave.wait_until_blocking(deadline, |s| s.log().max_offset() >= 2 * MIB),
            "{transport}: the slave stopped at {}; errors: {:?}",
            slave.log().max_offset(),
            slave.take_errors()
        );
        assert!(slave.status().connections >= 2, "{transport}");
        let theirs = slave.log().read().copy_range(0, 2 * MIB).expect("range");
        assert!(theirs == pattern(0, 2 * MIB), "{transport}: bytes differ");
        client.shutdown().expect("slave stops");
        server.shutdown().expect("master stops");
    }
}

#[test]
fn a_name_that_does_not_resolve_fails_at_once_naming_it() {
    let err = SlaveHandle::with_host("localhost", MemoryLog::new(MIB), config()).unwrap_err();
    assert!(
        matches!(&err, Error::Resolve { host, .. } if host == "localhost"),
        "{err:?}"
    );
    assert!(err.to_string().contains("resolving localhost"), "{err}");
}
