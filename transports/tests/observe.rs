//! What an operator sees of a connection on every transport: its bytes and frames each way while
//! it runs, and, once the slave leaves, a close that is counted as the slave's doing, not as an
//! error.

mod common;

use std::time::{Duration, Instant};

use common::{loopback, pattern, MIB};
use rocketmq_ha::{Config, MemoryLog, StartPosition};
use rocketmq_ha_transports::{CloseReason, MasterHandle, SlaveHandle, Transport};

#[test]
fn traffic_is_counted_both_ways_and_a_slave_that_leaves_is_a_normal_close() {
    for &transport in Transport::ALL {
        let config = Config::builder()
            .start_position(StartPosition::OldestRetained)
            .transfer_batch_size(64 * 1024)
            .build()
            .unwrap();
        let mut log = MemoryLog::new(1 << 30);
        log.push(pattern(0, 2 * MIB));
        let master = MasterHandle::new(log, config);
        let server = transport.spawn_master(loopback(), master.clone()).unwrap();
        let slave = SlaveHandle::new(
            server.local_addr().unwrap(),
            MemoryLog::new(1 << 30),
            config,
        );
        let client = transport.spawn_slave(slave.clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        assert!(
            master.wait_until_blocking(deadline, |m| m.ack_frontier() == 2 * MIB),
            "{transport}: never replicated"
        );
        let live = master.slaves();
        assert_eq!(live.len(), 1, "{transport}");
        let t = live[0].traffic;
        // Headers come on top of the 2 MiB of log; at least 32 frames of 64 KiB.
        assert!(
            t.bytes_out > 2 * MIB && t.frames_out >= 32,
            "{transport}: {t:?}"
        );
        assert!(
            t.frames_in >= 1 && t.bytes_in == 8 * t.frames_in,
            "{transport}: {t:?}"
        );
        let s = slave.status().traffic;
        assert_eq!(s.bytes_in, t.bytes_out, "{transport}: {s:?} vs {t:?}");
        assert!(
            s.frames_in >= 32 && s.bytes_out == 8 * s.frames_out,
            "{transport}: {s:?}"
        );
        assert_eq!(slave.log().max_offset(), 2 * MIB);

        client.shutdown().unwrap();
        assert!(
            master.wait_until_blocking(deadline, |m| m.slaves().is_empty()),
            "{transport}: the master never saw the slave leave"
        );
        let closed = master.take_closed();
        assert_eq!(closed.len(), 1, "{transport}");
        assert_eq!(
            closed[0].reason,
            CloseReason::PeerClosed,
            "{transport}: {:?}",
            closed[0].error
        );
        assert_eq!(closed[0].requested, Some(0));
        let totals = master.totals();
        assert_eq!(totals.accepted, 1);
        assert_eq!(totals.closes.get(&CloseReason::PeerClosed), Some(&1));
        assert!(totals.traffic.bytes_out >= t.bytes_out, "{transport}");
        server.shutdown().unwrap();
    }
}
