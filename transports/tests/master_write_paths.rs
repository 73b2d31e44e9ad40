//! The master's ways of writing a frame give the slave the same bytes: bodies sent from their
//! segment files (`sendfile`), frames copied from memory, and frames a producer writes on its
//! own thread (the blocking driver), all through a proxy that forwards slowly, so writes stop
//! part-way and resume. Every driver.

mod common;
mod proxy;

use std::time::{Duration, Instant};

use common::{loopback, pattern, Scratch, MIB};
use proxy::{Dir, FaultProxy};
use rocketmq_ha::{Config, StartPosition};
use rocketmq_ha_transports::file_log::{compare_logs, FileLog};
use rocketmq_ha_transports::{MasterHandle, SlaveHandle, Transport};

const SEGMENT: u64 = MIB;
/// Generous: the machine is shared, and a hung test should fail, not stall CI.
const PATIENCE: Duration = Duration::from_secs(60);

/// Frames from 32 KiB (copied) doubling to 256 KiB (from the file). Heartbeats and
/// housekeeping wait far longer than the test's patience: a driver that misses a wake-up is
/// not rescued by the next heartbeat's turn, and the test fails instead of taking seconds.
fn config() -> Config {
    Config::builder()
        .heartbeat_interval(Duration::from_secs(600))
        .housekeeping_interval(Duration::from_secs(1200))
        .transfer_batch_size(256 * 1024)
        .first_batch_size(Some(32 * 1024))
        .start_position(StartPosition::OldestRetained)
        .build()
        .expect("valid test config")
}

fn deadline() -> Instant {
    Instant::now() + PATIENCE
}

/// A master with `len` bytes in file segments, a fresh file slave behind a proxy that
/// forwards `chunk` bytes at a time; returns once the slave holds `len` bytes.
struct Pair {
    master: MasterHandle<FileLog>,
    slave: SlaveHandle<FileLog>,
    proxy: FaultProxy,
    server: rocketmq_ha_transports::Running,
    client: rocketmq_ha_transports::Running,
    _dir: Scratch,
}

impl Pair {
    fn start(transport: Transport, len: u64, chunk: usize) -> Pair {
        let dir = Scratch::new(&format!("write-paths-{transport}"));
        let mut log = FileLog::create(dir.path().join("master"), SEGMENT).unwrap();
        if len > 0 {
            log.append_at_end(&pattern(0, len)).unwrap();
        }
        let master = MasterHandle::new(log, config());
        master.set_send_from_files(true);
        let server = transport.spawn_master(loopback(), master.clone()).unwrap();
        let proxy = FaultProxy::start(server.local_addr().unwrap());
        proxy.trickle(Dir::ToSlave, chunk, Duration::from_micros(200));
        let slave_log = FileLog::create(dir.path().join("slave"), SEGMENT).unwrap();
        let slave = SlaveHandle::new(proxy.addr(), slave_log, config());
        let client = transport.spawn_slave(slave.clone()).unwrap();
        assert!(slave.wait_until_blocking(deadline(), |s| s.log().max_offset() == len));
        Pair {
            master,
            slave,
            proxy,
            server,
            client,
            _dir: dir,
        }
    }

    fn assert_identical(&self) {
        let end = self.master.log().max_offset();
        assert!(
            self.slave
                .wait_until_blocking(deadline(), |s| s.log().max_offset() == end),
            "the slave stopped at {} of {end}",
            self.slave.log().max_offset()
        );
        let comparison =
            compare_logs(&*self.master.log().read(), &*self.slave.log().read()).unwrap();
        assert!(comparison.identical(), "{comparison:?}");
        // All on the first connection: a torn or repeated frame would close it (the slave
        // then resumes from what it stored, and the logs would agree all the same).
        let status = self.slave.status();
        assert_eq!((status.connections, status.failures), (1, 0), "{status:?}");
        assert!(self.master.take_closed().is_empty());
    }

    fn stop(self) {
        assert!(self.proxy.forwarded(Dir::ToSlave) > 0);
        self.client.shutdown().unwrap();
        self.server.shutdown().unwrap();
    }
}

/// 5.5 MiB over six segments: the first frames are copied, the rest go from the files, each
/// stopping part-way again and again while the proxy holds the master's socket full.
fn a_catching_up_slave_gets_every_byte_sent_from_the_files(transport: Transport) {
    let pair = Pair::start(transport, 5 * MIB + MIB / 2, 64 * 1024);
    pair.assert_identical();
    pair.stop();
}

/// Two producers append messages of 1 byte to 300 KiB at the same time as the connection
/// writes (small ones the blocking driver's producers write themselves when the connection
/// is idle, large ones from the file), half of them waiting for the slave's ack.
fn producers_and_the_connection_writing_by_turns_keep_frames_whole(transport: Transport) {
    let pair = Pair::start(transport, 0, 16 * 1024);
    std::thread::scope(|s| {
        for seed in [1u64, 2] {
            let master = &pair.master;
            s.spawn(move || {
                let mut x = seed;
                for i in 0..150u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let len = match x % 4 {
                        0 => 1 + x % 64,
                        1 => 500 + x % 4000,
                        2 => 40_000 + x % 60_000,
                        _ => 150_000 + x % 150_000,
                    };
                    let message = pattern(x, len);
                    if i % 2 == 0 {
                        master
                            .append_replicated_blocking(message, 1, PATIENCE)
                            .unwrap();
                    } else {
                        master.append(message).unwrap();
                    }
                }
            });
        }
    });
    pair.assert_identical();
    pair.stop();
}

macro_rules! suite {
    ($($driver:ident => $transport:expr;)*) => {$(
        mod $driver {
            use super::*;

            #[test]
            fn a_catching_up_slave_gets_every_byte_sent_from_the_files() {
                super::a_catching_up_slave_gets_every_byte_sent_from_the_files($transport);
            }

            #[test]
            fn producers_and_the_connection_writing_by_turns_keep_frames_whole() {
                super::producers_and_the_connection_writing_by_turns_keep_frames_whole(
                    $transport,
                );
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
