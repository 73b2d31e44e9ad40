//! AutoSwitch in memory: a master switch with a diverged tail, end to end through the wire
//! codecs, the slave client, the master connection, the sync-state set and `MemoryLog`.

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use rocketmq_ha::autoswitch::{
    Client, ClientEvent, EpochEntry, EpochList, MasterConnection, MasterEvent, Replica, Role,
    SlaveIdentity,
};
use rocketmq_ha::{Config, LogSink, LogSource, MemoryLog};

const SEGMENT: u64 = 1 << 20;

fn identity(id: i64) -> SlaveIdentity {
    SlaveIdentity {
        broker_id: id,
        sync_from_last_file: false,
        async_learner: false,
    }
}

fn addr() -> core::net::SocketAddr {
    core::net::SocketAddr::from(([127, 0, 0, 1], 10912))
}

/// Runs one slave replica against one master replica until nothing moves, stepping the clock
/// by 100 ms each round. Returns the master connection for inspection.
fn replicate(
    master: &mut Replica,
    master_log: &MemoryLog,
    slave: &mut Replica,
    slave_log: &mut MemoryLog,
    now: &mut Instant,
    rounds: usize,
) -> MasterConnection {
    let config = Config::builder().transfer_batch_size(64).build().unwrap();
    let mut conn = MasterConnection::new(config, *now);
    let mut to_slave = BytesMut::new();
    for _ in 0..rounds {
        let Role::Slave { client, .. } = slave.role_mut() else {
            panic!("slave is not a slave")
        };
        let client: &mut Client = client;
        client.handle_timeout(*now).unwrap();
        while let Some(event) = client.poll_event() {
            match event {
                ClientEvent::Connect => client.handle_connected(*now, slave_log.max_offset()),
                ClientEvent::Truncate { offset } => {
                    let max = slave_log.truncate(offset);
                    client.handle_truncated(*now, max).unwrap();
                }
                ClientEvent::Append { offset, data } => {
                    let max = slave_log.append(offset, data).unwrap();
                    client.handle_appended(max);
                }
                ClientEvent::EpochsChanged => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        while let Some(out) = client.poll_transmit(*now) {
            conn.handle_input(*now, out.as_bytes()).unwrap();
            client.handle_written(*now, out.as_bytes().len()).unwrap();
        }
        let Role::Master {
            epochs, sync_state, ..
        } = master.role_mut()
        else {
            panic!("master is not a master")
        };
        while let Some(event) = conn.poll_event() {
            match event {
                MasterEvent::Handshake(hs) => sync_state.handle_connected(hs.broker_id),
                MasterEvent::Acked {
                    broker_id,
                    offset,
                    learner,
                    last_transfer,
                } => sync_state.handle_ack(
                    *now,
                    broker_id,
                    offset,
                    learner,
                    last_transfer,
                    master_log.max_offset(),
                    epochs.last().unwrap().start,
                ),
                MasterEvent::CaughtUp { broker_id } => sync_state.handle_caught_up(broker_id, *now),
                other => panic!("unexpected {other:?}"),
            }
        }
        if let Some(proposal) = sync_state.poll_proposal() {
            // The test's controller accepts every proposal.
            sync_state.apply(proposal, master_log.max_offset());
        }
        let confirm = sync_state.confirm_offset(master_log.max_offset());
        conn.handle_timeout(*now).unwrap();
        while let Some(mut t) = conn
            .poll_transmit(*now, master_log, epochs, confirm)
            .unwrap()
        {
            while t.has_remaining() {
                let n = t.chunk().len();
                to_slave.extend_from_slice(t.chunk());
                t.advance(n);
            }
            conn.on_transmitted(*now).unwrap();
        }
        let Role::Slave { client, .. } = slave.role_mut() else {
            unreachable!()
        };
        client.handle_input(*now, &mut to_slave).unwrap();
        *now += Duration::from_millis(100);
    }
    conn
}

fn bytes(tag: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| tag.wrapping_add(i as u8)).collect()
}

#[test]
fn a_master_switch_truncates_the_old_masters_tail_and_logs_converge() {
    let mut now = Instant::now();
    let config = Config::default();
    let (mut a_log, mut b_log) = (MemoryLog::new(SEGMENT), MemoryLog::new(SEGMENT));
    let mut a = Replica::new(config, 1, EpochList::new());
    let mut b = Replica::new(config, 2, EpochList::new());

    // Epoch 1: A is master and replicates 300 bytes to B.
    a.become_master(1, a_log.max_offset(), [1], true).unwrap();
    a_log.push(bytes(1, 300));
    b.become_slave(addr(), 1, identity(2), 11, now).unwrap();
    replicate(&mut a, &a_log, &mut b, &mut b_log, &mut now, 30);
    assert_eq!(
        b_log.copy_range(0, 300).unwrap(),
        a_log.copy_range(0, 300).unwrap()
    );
    assert_eq!(b.epochs(), a.epochs());
    let Role::Master { sync_state, .. } = a.role_mut() else {
        unreachable!()
    };
    assert!(
        sync_state.members().contains(&2),
        "B joined the sync-state set"
    );
    assert_eq!(sync_state.confirm_offset(300), Some(300));

    // A writes a tail B never gets, then dies.
    a_log.push(bytes(9, 77));

    // Epoch 2: B is master and takes writes.
    b.become_master(2, b_log.max_offset(), [2], true).unwrap();
    b_log.push(bytes(2, 150));
    assert_eq!(
        b.epochs().entries(),
        &[EpochEntry::new(1, 0), EpochEntry::new(2, 300)]
    );

    // A comes back as B's slave: its tail [300, 377) is cut, then it follows B.
    a.become_slave(addr(), 2, identity(1), 12, now).unwrap();
    replicate(&mut b, &b_log, &mut a, &mut a_log, &mut now, 30);
    assert_eq!(a_log.max_offset(), 450);
    assert_eq!(
        a_log.copy_range(0, 450).unwrap(),
        b_log.copy_range(0, 450).unwrap()
    );
    assert_eq!(a.epochs(), b.epochs());
    let Role::Slave { client, .. } = a.role() else {
        unreachable!()
    };
    assert_eq!(client.confirm_offset(), Some(450));
}

#[test]
fn an_unclean_master_without_a_shared_epoch_is_refused() {
    let mut now = Instant::now();
    let config = Config::default();
    let (mut a_log, mut b_log) = (MemoryLog::new(SEGMENT), MemoryLog::new(SEGMENT));
    let mut a = Replica::new(config, 1, EpochList::new());
    let mut b = Replica::new(config, 2, EpochList::new());
    // Both were masters of their own epochs from offset 0 without ever replicating.
    a.become_master(1, 0, [1], true).unwrap();
    a_log.push(bytes(1, 10));
    b.become_master(2, 0, [2], true).unwrap();
    b_log.push(bytes(2, 10));
    a.become_slave(addr(), 2, identity(1), 3, now).unwrap();
    let config = Config::default();
    let mut conn = MasterConnection::new(config, now);
    let Role::Slave { client, .. } = a.role_mut() else {
        unreachable!()
    };
    assert_eq!(client.poll_event(), Some(ClientEvent::Connect));
    client.handle_connected(now, a_log.max_offset());
    let hs = client.poll_transmit(now).unwrap();
    conn.handle_input(now, hs.as_bytes()).unwrap();
    client.handle_written(now, 16).unwrap();
    let mut answer = conn
        .poll_transmit(now, &b_log, b.epochs(), None)
        .unwrap()
        .unwrap();
    let mut wire = BytesMut::new();
    wire.extend_from_slice(&answer.copy_to_bytes(answer.remaining()));
    now += Duration::from_millis(1);
    assert_eq!(
        client.handle_input(now, &mut wire),
        Err(rocketmq_ha::autoswitch::ClientError::NoConsistentPoint)
    );
    // Nothing of A's log was touched.
    assert_eq!(a_log.max_offset(), 10);
}
