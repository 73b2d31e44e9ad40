//! Connection states (RocketMQ 5's `HAConnectionState`) on both handles, and waiting for one,
//! for every driver.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rocketmq_ha::{Config, ConnectionState, MemoryLog};
use rocketmq_ha_transports::{MasterHandle, SlaveHandle, Transport};

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

#[test]
fn states_are_reached_and_waited_for_on_both_sides() {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for &transport in Transport::ALL {
        let master = MasterHandle::new(MemoryLog::new(1 << 20), Config::default());
        assert_eq!(
            master.connection_state_of(loopback),
            ConnectionState::Shutdown
        );
        let server = transport
            .spawn_master(SocketAddr::from((loopback, 0)), master.clone())
            .unwrap();
        let slave = SlaveHandle::new(
            server.local_addr().unwrap(),
            MemoryLog::new(1 << 20),
            Config::default(),
        );
        assert_eq!(slave.status().state, ConnectionState::Ready);
        let client = transport.spawn_slave(slave.clone()).unwrap();
        assert!(
            slave.wait_for_state_blocking(ConnectionState::Transfer, soon()),
            "{transport}: slave never connected"
        );
        assert!(
            master.wait_for_connection_state_blocking(loopback, ConnectionState::Transfer, soon()),
            "{transport}: master never saw the slave"
        );
        assert!(master
            .slaves()
            .iter()
            .all(|s| s.state == ConnectionState::Transfer));
        client.shutdown().unwrap();
        assert_eq!(slave.status().state, ConnectionState::Shutdown);
        assert!(
            master.wait_for_connection_state_blocking(loopback, ConnectionState::Shutdown, soon()),
            "{transport}: the connection was never closed"
        );
        // A state that is never reached times out.
        assert!(!slave.wait_for_state_blocking(
            ConnectionState::Transfer,
            Instant::now() + Duration::from_millis(50)
        ));
        server.shutdown().unwrap();
    }
}

#[test]
fn the_async_waits_for_a_state_honour_their_deadline() {
    let slave = SlaveHandle::new(
        SocketAddr::from(([127, 0, 0, 1], 9)),
        MemoryLog::new(1 << 20),
        Config::default(),
    );
    let soon = || Instant::now() + Duration::from_millis(50);
    // Nothing drives this slave: it never leaves `Ready`, and the waits end at the deadline.
    assert!(smol::block_on(
        rocketmq_ha_transports::smol::wait_for_state(&slave, ConnectionState::Ready, soon())
    ));
    assert!(!smol::block_on(
        rocketmq_ha_transports::smol::wait_for_state(&slave, ConnectionState::Transfer, soon())
    ));
    #[cfg(feature = "tokio")]
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(
            !runtime.block_on(rocketmq_ha_transports::tokio::wait_for_state(
                &slave,
                ConnectionState::Transfer,
                soon()
            ))
        );
    }
    slave.shutdown();
    assert!(smol::block_on(
        rocketmq_ha_transports::smol::wait_for_state(&slave, ConnectionState::Shutdown, soon())
    ));
}
