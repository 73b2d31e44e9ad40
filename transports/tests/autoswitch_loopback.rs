//! The end-to-end story over real loopback sockets, with real stores (`FileLog`) and
//! epoch files, driven through the AutoSwitch connection loops by a minimal single-threaded
//! non-blocking driver written here (the transports do not run AutoSwitch yet):
//! A is master at epoch 1 and replicates to B; A writes a tail B never gets and stops; B
//! becomes master at epoch 2 and takes writes; A comes back from its store as B's slave, is cut
//! to the common point and ends byte-identical to B, and the two epoch files agree.

use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Buf;
use rocketmq_ha::autoswitch::{
    DiskOp, EpochEntry, EpochList, MasterEvent, MasterLoop, Replica, Role, SlaveIdentity,
};
use rocketmq_ha::{Config, LogSource};
use rocketmq_ha_transports::epoch_file::EpochFile;
use rocketmq_ha_transports::file_log::{compare_logs, FileLog};

const F: u64 = 64 * 1024;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "autoswitch_loopback-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A broker: its replica, store and epoch file.
struct Broker {
    replica: Replica,
    log: FileLog,
    epoch_file: EpochFile,
}

impl Broker {
    fn open(id: i64, dir: &Path, config: Config) -> Broker {
        let epoch_file = EpochFile::in_store(dir);
        let epochs = epoch_file.load().unwrap();
        Broker {
            replica: Replica::new(config, id, epochs),
            log: FileLog::open_or_create(dir, F).unwrap(),
            epoch_file,
        }
    }

    fn become_master(&mut self, epoch: i32) {
        self.replica
            .become_master(
                epoch,
                self.log.max_offset(),
                [self.replica.broker_id()],
                true,
            )
            .unwrap();
        self.epoch_file.store(self.replica.epochs()).unwrap();
    }

    fn write(&mut self, n: usize, tag: u8) {
        let at = self.log.max_offset();
        let bytes: Vec<u8> = (0..n as u64).map(|i| tag ^ ((at + i) as u8)).collect();
        self.log.append_at_end(&bytes).unwrap();
    }
}

/// The master side: a listener and one connection loop per accepted socket.
struct MasterSide {
    listener: TcpListener,
    conns: Vec<(TcpStream, MasterLoop)>,
}

impl MasterSide {
    fn new() -> MasterSide {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        MasterSide {
            listener,
            conns: Vec::new(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    fn step(&mut self, broker: &mut Broker, config: Config) {
        let now = Instant::now();
        if let Ok((stream, _)) = self.listener.accept() {
            stream.set_nonblocking(true).unwrap();
            self.conns.push((stream, MasterLoop::new(config, now)));
        }
        let Role::Master {
            epochs, sync_state, ..
        } = broker.replica.role_mut()
        else {
            panic!("not a master")
        };
        let log = &broker.log;
        self.conns.retain_mut(|(stream, conn)| {
            let mut buf = [0u8; 4096];
            let alive = match stream.read(&mut buf) {
                Ok(0) => false,
                Ok(n) => conn.handle_read(now, &buf[..n]).is_ok(),
                Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                Err(_) => false,
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
                        now,
                        broker_id,
                        offset,
                        learner,
                        last_transfer,
                        log.max_offset(),
                        epochs.last().unwrap().start,
                    ),
                    MasterEvent::CaughtUp { broker_id } => {
                        sync_state.handle_caught_up(broker_id, now)
                    }
                    _ => {}
                }
            }
            if let Some(proposal) = sync_state.poll_proposal() {
                sync_state.apply(proposal, log.max_offset());
            }
            if !alive || conn.handle_timeout(now).is_err() {
                return false;
            }
            let confirm = sync_state.confirm_offset(log.max_offset());
            loop {
                let frame = match conn.poll_write(now, log, epochs, confirm) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return true,
                    Err(_) => return false,
                };
                let mut slices = [IoSlice::new(&[]); 2];
                let count = frame.chunks_vectored(&mut slices);
                match stream.write_vectored(&slices[..count]) {
                    Ok(n) => {
                        if conn.handle_written(now, n).is_err() {
                            return false;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    Err(_) => return false,
                }
            }
        });
    }
}

/// The slave side: the broker's slave loop, its socket, its disk.
fn slave_step(broker: &mut Broker, master: SocketAddr, stream: &mut Option<TcpStream>) {
    let now = Instant::now();
    let Role::Slave { slave, .. } = broker.replica.role_mut() else {
        panic!("not a slave")
    };
    while let Some(op) = slave.poll_disk() {
        match op {
            DiskOp::Truncate { offset } => {
                let max = broker.log.truncate_to(offset).unwrap();
                slave.handle_truncated(now, max).unwrap();
            }
            DiskOp::SaveEpochs(epochs) => {
                broker.epoch_file.store(epochs).unwrap();
                slave.handle_epochs_saved();
            }
            DiskOp::Store { offset, pieces } => {
                let pieces: Vec<&[u8]> = pieces.iter().map(|p| &p[..]).collect();
                let max = broker.log.append_all_at(offset, &pieces).unwrap();
                slave.handle_stored(max);
            }
        }
    }
    if stream.is_none() && slave.poll_dial() {
        match TcpStream::connect(master) {
            Ok(s) => {
                s.set_nonblocking(true).unwrap();
                *stream = Some(s);
                slave.handle_connected(now, broker.log.max_offset());
            }
            Err(_) => slave.handle_connect_failed(now),
        }
    }
    if let Some(s) = stream.as_mut() {
        if slave.wants_read() {
            let buf = slave.read_buf();
            match s.read(buf) {
                Ok(0) => slave.handle_closed(now),
                Ok(n) => {
                    let _ = slave.handle_read(now, n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => slave.handle_closed(now),
            }
        }
        while let Some(bytes) = slave.poll_write(now) {
            match s.write(bytes) {
                Ok(n) => {
                    if slave.handle_written(now, n).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    slave.handle_closed(now);
                    break;
                }
            }
        }
    }
    let _ = slave.handle_timeout(now);
    if !slave.is_connected() {
        *stream = None;
    }
}

fn follow(broker: &mut Broker, master: SocketAddr, epoch: i32) {
    let identity = SlaveIdentity {
        broker_id: broker.replica.broker_id(),
        sync_from_last_file: false,
        async_learner: false,
    };
    broker
        .replica
        .become_slave(master, epoch, identity, 7, Instant::now())
        .unwrap();
}

/// Runs master and slave until `done` or a deadline.
fn run_until(
    master: &mut Broker,
    side: &mut MasterSide,
    slave: &mut Broker,
    config: Config,
    done: impl Fn(&Broker, &Broker) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = None;
    while !done(master, slave) {
        assert!(Instant::now() < deadline, "no progress over loopback");
        side.step(master, config);
        slave_step(slave, side.addr(), &mut stream);
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn a_switched_master_rejoins_as_slave_is_cut_and_converges_over_sockets() {
    let config = Config::builder()
        .transfer_batch_size(32 * 1024)
        .build()
        .unwrap();
    let (dir_a, dir_b) = (Scratch::new("a"), Scratch::new("b"));
    let mut a = Broker::open(1, &dir_a.0, config);
    let mut b = Broker::open(2, &dir_b.0, config);

    // Epoch 1: A is master and replicates 100 KiB to B.
    a.become_master(1);
    a.write(100 * 1024, 0x11);
    let mut side = MasterSide::new();
    follow(&mut b, side.addr(), 1);
    run_until(&mut a, &mut side, &mut b, config, |_, b| {
        b.log.max_offset() == 100 * 1024
    });
    drop(side);

    // A writes a 7 KiB tail B never gets, and stops.
    a.write(7 * 1024, 0x22);
    a.log.sync().unwrap();
    let tail_end = a.log.max_offset();
    drop(a);

    // Epoch 2: B is master and takes 50 KiB of writes.
    b.become_master(2);
    b.write(50 * 1024, 0x33);

    // A comes back from its store and epoch file as B's slave.
    let mut a = Broker::open(1, &dir_a.0, config);
    assert_eq!(a.log.max_offset(), tail_end);
    assert_eq!(a.replica.epochs().entries(), &[EpochEntry::new(1, 0)]);
    let mut side = MasterSide::new();
    follow(&mut a, side.addr(), 2);
    let end = b.log.max_offset();
    run_until(&mut b, &mut side, &mut a, config, |_, a| {
        a.log.max_offset() == end && a.replica.epochs().len() == 2
    });

    // Byte-identical, and the epoch files agree (as written on disk).
    let comparison = compare_logs(&a.log, &b.log).unwrap();
    assert!(comparison.identical(), "{comparison:?}");
    let (ea, eb) = (a.epoch_file.load().unwrap(), b.epoch_file.load().unwrap());
    assert_eq!(ea, eb);
    assert_eq!(
        eb,
        EpochList::from_entries([EpochEntry::new(1, 0), EpochEntry::new(2, 100 * 1024)]).unwrap()
    );
}
