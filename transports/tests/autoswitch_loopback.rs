//! The AutoSwitch issue's end-to-end story over real loopback sockets, through the shipped
//! drivers (each one: blocking, smol, tokio), with real stores (`FileLog`) and epoch files:
//! A is master at epoch 1 and replicates to B; A writes a tail B never gets and stops; B
//! becomes master at epoch 2 and takes writes; A comes back from its store as B's slave, is cut
//! to the common point and ends byte-identical to B, and the two epoch files agree.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{loopback, pattern, Scratch};
use rocketmq_ha::autoswitch::{EpochEntry, EpochList};
use rocketmq_ha::{Config, ConnectionState, MemoryLog};
use rocketmq_ha_transports::epoch_file::EpochFile;
use rocketmq_ha_transports::file_log::{compare_logs, FileLog};
use rocketmq_ha_transports::{
    AutoSwitchBroker, AutoSwitchMaster, AutoSwitchSlave, BrokerRole, Error, MasterHandle,
    SlaveHandle, Transport,
};

const F: u64 = 64 * 1024;
const PATIENCE: Duration = Duration::from_secs(60);

/// Timers far beyond [`PATIENCE`]: a driver that misses a wake-up (the master's answer to the
/// handshake, its first frame after the report) would otherwise be rescued by a heartbeat or
/// housekeeping and pass, slowly; here it fails.
fn config() -> Config {
    Config::builder()
        .heartbeat_interval(Duration::from_secs(120))
        .housekeeping_interval(Duration::from_secs(300))
        .first_report_timeout(Duration::from_secs(300))
        .transfer_batch_size(32 * 1024)
        .reconnect_backoff_initial(Duration::from_millis(10))
        .reconnect_backoff_max(Duration::from_millis(200))
        .build()
        .unwrap()
}

fn deadline() -> Instant {
    Instant::now() + PATIENCE
}

fn master(dir: &Path, id: i64, epoch: i32) -> MasterHandle<FileLog> {
    let log = FileLog::open_or_create(dir, F).unwrap();
    let options = AutoSwitchMaster::new(id, epoch).epoch_file(EpochFile::in_store(dir));
    MasterHandle::autoswitch(log, config(), options).unwrap()
}

fn slave(dir: &Path, id: i64, epoch: i32, master: &str) -> SlaveHandle<FileLog> {
    let log = FileLog::open_or_create(dir, F).unwrap();
    let options = AutoSwitchSlave::new(id, epoch).epoch_file(EpochFile::in_store(dir));
    SlaveHandle::autoswitch(master, log, config(), options).unwrap()
}

fn append(master: &MasterHandle<FileLog>, len: u64, tag: u8) {
    let at = master.log().max_offset();
    let mut bytes = pattern(at, len);
    bytes.iter_mut().for_each(|b| *b ^= tag);
    master.append(bytes).unwrap();
}

fn a_switched_master_rejoins_as_slave_is_cut_and_converges(transport: Transport) {
    let (dir_a, dir_b) = (Scratch::new("a"), Scratch::new("b"));

    // Epoch 1: A is master and replicates 100 KiB to B, which joins its sync-state set.
    let a = master(dir_a.path(), 1, 1);
    append(&a, 100 * 1024, 0x11);
    let running_a = transport.spawn_master(loopback(), a.clone()).unwrap();
    let addr_a = running_a.local_addr().unwrap().to_string();
    let b = slave(dir_b.path(), 2, 1, &addr_a);
    let running_b = transport.spawn_slave(b.clone()).unwrap();
    let joined = |m: &MasterHandle<FileLog>| m.sync_state_members().is_some_and(|s| s.len() == 2);
    assert!(
        a.wait_until_blocking(deadline(), joined),
        "confirm offset {:?}, set {:?}, slave errors {:?}",
        a.confirm_offset(),
        a.sync_state_members(),
        b.take_errors()
    );
    assert_eq!(a.confirm_offset(), Some(100 * 1024));
    assert_eq!(a.slaves()[0].broker_id, Some(2));
    assert!(
        b.wait_until_blocking(deadline(), |s| s.status().confirm_offset
            == Some(100 * 1024))
    );
    assert_eq!(b.status().epoch, Some(1));
    assert_eq!(b.status().state, ConnectionState::Transfer);

    // B stops; A writes a 7 KiB tail B never gets, and stops.
    running_b.shutdown().unwrap();
    drop(b);
    append(&a, 7 * 1024, 0x22);
    a.log().update(|log| log.sync()).unwrap();
    let tail_end = a.log().max_offset();
    running_a.shutdown().unwrap();
    drop(a);

    // Epoch 2: B is master and takes 50 KiB of writes.
    let b = master(dir_b.path(), 2, 2);
    assert_eq!(b.log().max_offset(), 100 * 1024);
    append(&b, 50 * 1024, 0x33);
    let end = b.log().max_offset();
    let running_b = transport.spawn_master(loopback(), b.clone()).unwrap();
    let addr_b = running_b.local_addr().unwrap().to_string();

    // A comes back from its store and epoch file as B's slave, and is cut back first.
    let a = slave(dir_a.path(), 1, 2, &addr_b);
    assert_eq!(a.log().max_offset(), tail_end);
    assert_eq!(a.epochs().unwrap().entries(), &[EpochEntry::new(1, 0)]);
    let running_a = transport.spawn_slave(a.clone()).unwrap();
    assert!(
        a.wait_until_blocking(deadline(), |s| s.log().max_offset() == end
            && s.epochs().is_some_and(|e| e.len() == 2)),
        "slave at {} with {:?}; errors {:?}",
        a.log().max_offset(),
        a.epochs(),
        a.take_errors()
    );
    assert!(b.wait_until_blocking(deadline(), |m| m.confirm_offset() == Some(end)));
    running_a.shutdown().unwrap();
    running_b.shutdown().unwrap();

    // Byte-identical, and the epoch files agree (as written on disk).
    let comparison = compare_logs(&*a.log().read(), &*b.log().read()).unwrap();
    assert!(comparison.identical(), "{comparison:?}");
    let on_disk = |dir: &Scratch| EpochFile::in_store(dir.path()).load().unwrap();
    assert_eq!(on_disk(&dir_a), on_disk(&dir_b));
    assert_eq!(
        on_disk(&dir_b),
        EpochList::from_entries([EpochEntry::new(1, 0), EpochEntry::new(2, 100 * 1024)]).unwrap()
    );
}

/// The same story inside one process, through [`AutoSwitchBroker`]: roles change at run time
/// over the same in-memory logs, and a stale order changes nothing.
fn roles_change_at_run_time(transport: Transport) {
    let memory = || MemoryLog::new(F);
    let broker = |id| AutoSwitchBroker::new(memory(), config(), id, None, transport).unwrap();
    let (mut a, mut b) = (broker(1), broker(2));

    let master = a.become_master(1, loopback(), []).unwrap().clone();
    master.append(pattern(0, 100 * 1024)).unwrap();
    let addr_a = a.local_addr().unwrap().to_string();
    let slave = b.become_slave(&addr_a, 1).unwrap().clone();
    assert!(slave.wait_until_blocking(deadline(), |s| s.log().max_offset() == 100 * 1024));

    // B stops following; A takes a tail B never gets; B becomes master of epoch 2.
    b.stop().unwrap();
    master.append(vec![0xAA; 7 * 1024]).unwrap();
    let new_master = b.become_master(2, loopback(), [1]).unwrap().clone();
    new_master.append(vec![0xBB; 50 * 1024]).unwrap();
    let end = new_master.log().max_offset();
    let addr_b = b.local_addr().unwrap().to_string();

    // A, still master of epoch 1, is told to follow B: its tail is cut.
    let follower = a.become_slave(&addr_b, 2).unwrap().clone();
    assert!(
        follower.wait_until_blocking(deadline(), |s| s.log().max_offset() == end
            && s.epochs().is_some_and(|e| e.len() == 2)),
        "A at {}; errors {:?}",
        follower.log().max_offset(),
        follower.take_errors()
    );
    let bytes =
        |log: &rocketmq_ha_transports::SharedLog<MemoryLog>| log.read().copy_range(0, end).unwrap();
    assert!(bytes(a.log()) == bytes(b.log()), "A differs from B");

    // An order from epoch 1 now is stale: refused, and A keeps following B.
    let refused = a.become_master(1, loopback(), []).unwrap_err();
    assert!(matches!(refused, Error::Role(_)), "{refused}");
    assert!(matches!(a.role(), BrokerRole::Slave(_)));
    a.stop().unwrap();
    assert_eq!(a.history().len(), 2);
    b.stop().unwrap();
}

/// A master refuses an epoch older than its history, before it serves anything; so does a
/// slave.
fn an_older_epoch_is_refused(_transport: Transport) {
    let dir = Scratch::new("stale");
    drop(master(dir.path(), 1, 5));
    let log = FileLog::open_or_create(dir.path(), F).unwrap();
    let options = AutoSwitchMaster::new(1, 4).epoch_file(EpochFile::in_store(dir.path()));
    let refused = MasterHandle::autoswitch(log, config(), options).unwrap_err();
    assert!(matches!(refused, Error::Role(_)), "{refused}");
    let log = FileLog::open_or_create(dir.path(), F).unwrap();
    let options = AutoSwitchSlave::new(1, 3).epoch_file(EpochFile::in_store(dir.path()));
    let refused = SlaveHandle::autoswitch("127.0.0.1:1", log, config(), options).unwrap_err();
    assert!(matches!(refused, Error::Role(_)), "{refused}");
}

macro_rules! suite {
    ($($driver:ident => $transport:expr;)*) => {$(
        mod $driver {
            use super::*;

            #[test]
            fn a_switched_master_rejoins_as_slave_is_cut_and_converges() {
                super::a_switched_master_rejoins_as_slave_is_cut_and_converges($transport);
            }

            #[test]
            fn roles_change_at_run_time() {
                super::roles_change_at_run_time($transport);
            }

            #[test]
            fn an_older_epoch_is_refused() {
                super::an_older_epoch_is_refused($transport);
            }
        }
    )*};
}

suite! {
    blocking => Transport::Blocking;
    smol => Transport::Smol;
}

#[cfg(feature = "tokio")]
suite! {
    tokio => Transport::Tokio;
}
