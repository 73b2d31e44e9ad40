//! Synchronous writes under each ack policy, over real sockets, against 0, 1 and 2 slaves (the
//! second one lagging beyond `max_gap_not_in_sync`): each gets the outcome the policy documents
//! (see `rocketmq_ha::AckPolicy`).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rocketmq_ha::{AckPolicy, Config, MemoryLog, StartPosition, SyncError};
use rocketmq_ha_transports::{Error, MasterHandle, SlaveHandle, Transport};

const GAP: u64 = 64 * 1024;

fn config() -> Config {
    Config::builder()
        .start_position(StartPosition::OldestRetained)
        .max_gap_not_in_sync(GAP)
        .reconnect_backoff_initial(Duration::from_millis(10))
        .reconnect_backoff_max(Duration::from_millis(100))
        .build()
        .unwrap()
}

/// A write of 1 KiB under `policy`, waiting at most 300 ms.
fn put(master: &MasterHandle<MemoryLog>, policy: AckPolicy) -> Result<(), SyncError> {
    match master.append_replicated_blocking(vec![7u8; 1024], policy, Duration::from_millis(300)) {
        Ok(_) => Ok(()),
        Err(Error::Sync(e)) => Err(e),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn each_policy_against_zero_one_and_two_slaves() {
    let mut log = MemoryLog::new(1 << 20);
    log.push(vec![1u8; 4 * GAP as usize]);
    let master = MasterHandle::new(log, config());
    let server = Transport::Blocking
        .spawn_master(SocketAddr::from(([127, 0, 0, 1], 0)), master.clone())
        .unwrap();
    let addr = server.local_addr().unwrap();
    let is = |replicas, min, auto| AckPolicy::InSyncReplicas {
        replicas,
        min,
        auto,
    };
    use SyncError::*;
    let policies: [(AckPolicy, [Result<(), SyncError>; 3]); 7] = [
        (AckPolicy::Slaves(1), [Err(Timeout), Ok(()), Ok(())]),
        (
            AckPolicy::Slaves(2),
            [Err(Timeout), Err(Timeout), Err(Timeout)],
        ),
        (AckPolicy::SlaveOk, [Err(SlaveNotAvailable), Ok(()), Ok(())]),
        // RocketMQ 5's default: acknowledged with no slave at all.
        (is(1, 1, false), [Ok(()), Ok(()), Ok(())]),
        (is(2, 1, false), [Err(Timeout), Ok(()), Ok(())]),
        (
            is(3, 2, true),
            [
                Err(NotEnoughInSync {
                    needed: 2,
                    in_sync: 1,
                }),
                Ok(()),
                Ok(()),
            ],
        ),
        (AckPolicy::AllInSync, [Ok(()), Ok(()), Ok(())]),
    ];
    let check = |slaves: usize| {
        for (policy, expected) in &policies {
            assert_eq!(
                put(&master, *policy),
                expected[slaves],
                "{policy:?} with {slaves} slave(s)"
            );
        }
    };

    check(0);

    let slave = SlaveHandle::new(addr, MemoryLog::new(1 << 20), config());
    let client = Transport::Blocking.spawn_slave(slave.clone()).unwrap();
    let end = master.log().max_offset();
    assert!(
        slave.wait_until_blocking(Instant::now() + Duration::from_secs(20), |s| {
            s.log().max_offset() >= end
        })
    );
    check(1);

    // A second "slave" that reports offset 1 and never reads: far behind, never in sync.
    let mut lagging = TcpStream::connect(addr).unwrap();
    lagging.write_all(&1u64.to_be_bytes()).unwrap();
    assert!(
        master.wait_until_blocking(Instant::now() + Duration::from_secs(5), |m| {
            m.slaves().iter().filter(|s| s.acked.is_some()).count() == 2
        })
    );
    check(2);

    drop(lagging);
    client.shutdown().unwrap();
    server.shutdown().unwrap();
}
