//! End-to-end suite over real sockets on 127.0.0.1, run once per driver (see `suite!` at the
//! bottom): replication across segment boundaries, resumption after a dropped connection, sync
//! waits, and peers sending garbage.
//!
//! Every wait is on a condition with a deadline (the handles' `wait_until_blocking`), never a
//! sleep.

mod common;

use common::{loopback, pattern, MIB};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rocketmq_ha::{
    ClientError, Config, MasterError, MemoryLog, StartPosition, SyncError, WireError,
};
use rocketmq_ha_transports::file_log::{compare_logs, FileLog};
use rocketmq_ha_transports::{Error, MasterHandle, SlaveHandle, Transport};

const SEGMENT: u64 = 16 * MIB;
/// Generous: the machine is shared, and a hung test should fail, not stall CI.
const PATIENCE: Duration = Duration::from_secs(60);

fn config() -> Config {
    Config::builder()
        .start_position(StartPosition::OldestRetained)
        .reconnect_backoff_initial(Duration::from_millis(10))
        .reconnect_backoff_max(Duration::from_millis(200))
        .build()
        .expect("valid test config")
}

fn deadline() -> Instant {
    Instant::now() + PATIENCE
}

/// A small deterministic generator for garbage.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn master_with(len: u64) -> MasterHandle<MemoryLog> {
    let mut log = MemoryLog::new(SEGMENT);
    log.push(pattern(0, len));
    MasterHandle::new(log, config())
}

fn slave_of(addr: SocketAddr) -> SlaveHandle<MemoryLog> {
    SlaveHandle::new(addr, MemoryLog::new(SEGMENT), config())
}

/// Waits until the slave stores `end`, then checks its bytes against the master's.
fn assert_replicated(master: &MasterHandle<MemoryLog>, slave: &SlaveHandle<MemoryLog>, end: u64) {
    let reached = slave.wait_until_blocking(deadline(), |s| s.log().max_offset() >= end);
    assert!(
        reached,
        "slave stopped at {} of {end}; errors: {:?}",
        slave.log().max_offset(),
        slave.take_errors()
    );
    let theirs = slave.log().read().copy_range(0, end).expect("slave range");
    let ours = master
        .log()
        .read()
        .copy_range(0, end)
        .expect("master range");
    assert!(theirs == ours, "slave bytes differ from the master's");
    // And the master heard about it.
    assert!(master.wait_until_blocking(deadline(), |m| m.ack_frontier() >= end));
}

/// The sync-wait API each driver offers, used from a plain thread.
type WaitFn = fn(&MasterHandle<MemoryLog>, u64, usize, Instant) -> Result<(), SyncError>;

fn wait_blocking(
    m: &MasterHandle<MemoryLog>,
    o: u64,
    n: usize,
    d: Instant,
) -> Result<(), SyncError> {
    m.wait_replicated_blocking(o, n, d)
}

fn wait_smol(m: &MasterHandle<MemoryLog>, o: u64, n: usize, d: Instant) -> Result<(), SyncError> {
    async_io::block_on(rocketmq_ha_transports::smol::wait_replicated(m, o, n, d))
}

#[cfg(feature = "tokio")]
fn wait_tokio(m: &MasterHandle<MemoryLog>, o: u64, n: usize, d: Instant) -> Result<(), SyncError> {
    ::tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
        .block_on(rocketmq_ha_transports::tokio::wait_replicated(m, o, n, d))
}

fn replicates_64_mib_across_segment_boundaries(transport: Transport) {
    // 40 MiB before the slave exists, 24 MiB while it replicates: three segment boundaries,
    // and the growth notification must wake the master for the second part.
    let master = master_with(40 * MIB);
    let server = transport.spawn_master(loopback(), master.clone()).unwrap();
    let slave = slave_of(server.local_addr().unwrap());
    let client = transport.spawn_slave(slave.clone()).unwrap();
    for chunk in 0..24 {
        let at = 40 * MIB + chunk * MIB;
        assert_eq!(master.append(pattern(at, MIB)).unwrap(), at + MIB);
    }
    assert_replicated(&master, &slave, 64 * MIB);
    let status = slave.status();
    assert_eq!(status.connections, 1, "no reconnects on a clean run");
    // The driver stamps when the connection came up and when it first stored bytes.
    let (connected, stored) = (
        status.connected_at.unwrap(),
        status.first_stored_at.unwrap(),
    );
    assert!(connected <= stored, "{connected:?} {stored:?}");
    assert!(slave.take_errors().is_empty());
    client.shutdown().unwrap();
    server.shutdown().unwrap();
}

/// A TCP proxy that cuts its first connection after `cut` bytes from the master and passes later
/// ones through; it records the first report (the requested offset) of every connection.
struct CuttingProxy {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<u64>>>,
}

fn cutting_proxy(master: SocketAddr, cut: u64) -> CuttingProxy {
    let listener = TcpListener::bind(loopback()).unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    thread::spawn(move || {
        for (n, slave) in listener.incoming().enumerate() {
            let Ok(mut slave) = slave else { return };
            let Ok(mut upstream) = TcpStream::connect(master) else {
                return;
            };
            let mut report = [0u8; 8];
            if slave.read_exact(&mut report).is_err() || upstream.write_all(&report).is_err() {
                continue;
            }
            seen.lock().unwrap().push(u64::from_be_bytes(report));
            let limit = if n == 0 { cut } else { u64::MAX };
            let (s2, u2) = (slave.try_clone().unwrap(), upstream.try_clone().unwrap());
            thread::spawn(move || pump(s2, u2, u64::MAX));
            thread::spawn(move || pump(upstream, slave, limit));
        }
    });
    CuttingProxy { addr, requests }
}

/// Copies `from` to `to` until EOF or `limit` bytes, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream, limit: u64) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut copied = 0u64;
    while copied < limit {
        let want = buf.len().min((limit - copied) as usize);
        match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                copied += n as u64;
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

fn dropped_connection_resumes_where_it_stopped(transport: Transport) {
    let end = 32 * MIB;
    let master = master_with(end);
    let server = transport.spawn_master(loopback(), master.clone()).unwrap();
    // The cut lands mid-frame: 10 MiB is not a multiple of a 12-byte header plus 32 KiB.
    let proxy = cutting_proxy(server.local_addr().unwrap(), 10 * MIB);
    let slave = slave_of(proxy.addr);
    let client = transport.spawn_slave(slave.clone()).unwrap();
    assert_replicated(&master, &slave, end);
    let requests = proxy.requests.lock().unwrap().clone();
    assert!(requests.len() >= 2, "the slave reconnected: {requests:?}");
    assert_eq!(requests[0], 0, "an empty slave asks for 0");
    // It resumed from what it had stored, not from scratch, and did not skip anything.
    assert!(
        requests[1] > 0 && requests[1] < 10 * MIB,
        "second request {} should resume below the cut",
        requests[1]
    );
    assert!(slave.status().connections >= 2);
    client.shutdown().unwrap();
    server.shutdown().unwrap();
}

fn sync_wait_completes_when_the_slave_acks(transport: Transport, wait: WaitFn) {
    let master = master_with(0);
    let server = transport.spawn_master(loopback(), master.clone()).unwrap();
    let slave = slave_of(server.local_addr().unwrap());
    let client = transport.spawn_slave(slave.clone()).unwrap();
    assert!(
        master.wait_until_blocking(deadline(), |m| m.slaves().iter().any(|s| s.acked.is_some()))
    );

    // One slave acks: the wait succeeds, and the slave really stores the bytes.
    let end = master.append(pattern(0, 1000)).unwrap();
    assert_eq!(wait(&master, end, 1, deadline()), Ok(()));
    assert!(slave.log().max_offset() >= end);
    let end = master
        .append_replicated_blocking(pattern(end, 5000), 1, PATIENCE)
        .unwrap();
    assert_eq!(end, 6000);

    // Two acks from one slave never come: a timeout, not before the deadline.
    let started = Instant::now();
    let short = started + Duration::from_millis(200);
    assert_eq!(wait(&master, end, 2, short), Err(SyncError::Timeout));
    assert!(Instant::now() >= short);

    // A pending wait completes with an error when the master shuts down.
    let waiter = {
        let master = master.clone();
        thread::spawn(move || wait(&master, end + 1, 1, Instant::now() + PATIENCE))
    };
    assert!(master.wait_until_blocking(deadline(), |m| m.pending_waits() == 1));
    let started = Instant::now();
    server.shutdown().unwrap();
    assert_eq!(waiter.join().unwrap(), Err(SyncError::Shutdown));
    assert!(started.elapsed() < PATIENCE / 2);
    assert_eq!(wait(&master, 1, 1, deadline()), Err(SyncError::Shutdown));
    // The master closed its sockets: the slave sees its connection end (and keeps redialing a
    // master that is gone, until it is shut down too).
    assert!(slave.wait_until_blocking(deadline(), |s| !s.status().connected));
    assert!(master.slaves().is_empty());
    client.shutdown().unwrap();
}

/// Connects a raw peer to the master, sends `bytes`, and returns once the master closed it.
fn send_to_master_until_closed(addr: SocketAddr, bytes: &[u8]) {
    send_to_master_until_closed_on(TcpStream::connect(addr).unwrap(), bytes);
}

fn send_to_master_until_closed_on(mut peer: TcpStream, bytes: &[u8]) {
    peer.set_read_timeout(Some(PATIENCE)).unwrap();
    peer.write_all(bytes).unwrap();
    let mut sink = [0u8; 64 * 1024];
    loop {
        match peer.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the master did not close a garbage peer: {e}"),
        }
    }
}

fn garbage_reports_close_only_that_connection(transport: Transport) {
    let master = master_with(8 * MIB);
    let server = transport.spawn_master(loopback(), master.clone()).unwrap();
    let addr = server.local_addr().unwrap();
    let slave = slave_of(addr);
    let client = transport.spawn_slave(slave.clone()).unwrap();

    // A negative offset, and random bytes.
    send_to_master_until_closed(addr, &[0xFF; 8]);
    send_to_master_until_closed(addr, &garbage(7, 1024));
    // A valid request, then an acknowledgement below it once data flows.
    let mut peer = TcpStream::connect(addr).unwrap();
    peer.write_all(&4096u64.to_be_bytes()).unwrap();
    let mut header = [0u8; 12];
    peer.read_exact(&mut header).unwrap();
    assert_eq!(&header[..8], &4096u64.to_be_bytes());
    send_to_master_until_closed_on(peer, &0u64.to_be_bytes());

    let mut closed = Vec::new();
    let typed = master.wait_until_blocking(deadline(), |m| {
        closed.extend(m.take_closed());
        closed.iter().filter(|c| c.error.is_some()).count() >= 3
    });
    assert!(typed, "closed connections: {closed:?}");
    assert!(closed.iter().any(|c| matches!(
        c.error,
        Some(Error::Master(MasterError::Wire(WireError::NegativeOffset(
            -1
        ))))
    )));
    assert!(closed.iter().any(|c| matches!(
        c.error,
        Some(Error::Master(MasterError::AckWentBackwards {
            previous: 4096,
            ack: 0
        }))
    )));
    assert!(closed
        .iter()
        .filter_map(|c| c.error.as_ref())
        .all(|e| matches!(e, Error::Master(_) | Error::Io(_))));

    // The real slave kept replicating through all of it, including data appended afterwards.
    master.append(pattern(8 * MIB, 3 * MIB)).unwrap();
    assert_replicated(&master, &slave, 11 * MIB);
    assert_eq!(slave.status().connections, 1);
    client.shutdown().unwrap();
    server.shutdown().unwrap();
}

/// A fake master: accepts a connection, reads the slave's first report, then runs `script`.
fn fake_master_connection(listener: &TcpListener) -> (TcpStream, u64) {
    let (mut stream, _) = listener.accept().unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut report = [0u8; 8];
    stream.read_exact(&mut report).unwrap();
    (stream, u64::from_be_bytes(report))
}

/// Reads until the slave closes the connection.
fn expect_closed_by_slave(mut stream: TcpStream) {
    let mut sink = [0u8; 64];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the slave did not close a garbage master: {e}"),
        }
    }
}

fn garbage_from_the_master_is_a_typed_error_and_the_slave_recovers(transport: Transport) {
    let listener = TcpListener::bind(loopback()).unwrap();
    let slave = slave_of(listener.local_addr().unwrap());
    let client = transport.spawn_slave(slave.clone()).unwrap();

    // A 2 GiB size field: refused from the header alone, nothing allocated.
    let (mut stream, request) = fake_master_connection(&listener);
    assert_eq!(request, 0);
    let mut header = 0u64.to_be_bytes().to_vec();
    header.extend_from_slice(&i32::MAX.to_be_bytes());
    stream.write_all(&header).unwrap();
    expect_closed_by_slave(stream);

    // Random bytes.
    let (mut stream, _) = fake_master_connection(&listener);
    stream.write_all(&garbage(11, 4096)).unwrap();
    expect_closed_by_slave(stream);

    // Then a well-behaved master: the slave appends and acknowledges.
    let (mut stream, request) = fake_master_connection(&listener);
    assert_eq!(request, 0, "nothing was stored from the garbage");
    let mut frame = (3 * SEGMENT).to_be_bytes().to_vec();
    frame.extend_from_slice(&5i32.to_be_bytes());
    frame.extend_from_slice(b"hello");
    stream.write_all(&frame).unwrap();
    let mut ack = [0u8; 8];
    stream.read_exact(&mut ack).unwrap();
    assert_eq!(u64::from_be_bytes(ack), 3 * SEGMENT + 5);
    assert_eq!(
        slave
            .log()
            .read()
            .copy_range(3 * SEGMENT, 3 * SEGMENT + 5)
            .unwrap(),
        b"hello"
    );

    let errors = slave.take_errors();
    assert!(
        matches!(
            errors.first(),
            Some(Error::Client(ClientError::Wire(WireError::FrameTooLarge { size, .. })))
                if *size == 12 + i32::MAX as u64
        ),
        "{errors:?}"
    );
    assert!(
        matches!(errors.get(1), Some(Error::Client(_))),
        "{errors:?}"
    );
    client.shutdown().unwrap();
}

/// A directory under the target directory for one test's stores, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn file_stores_replicate_and_a_restarted_slave_resumes(transport: Transport) {
    let dir = TempDir::new(&format!("file-{transport}"));
    let (master_dir, slave_dir) = (dir.0.join("master"), dir.0.join("slave"));
    let segment = 8 * MIB;
    let mut log = FileLog::create(&master_dir, segment).unwrap();
    log.append_at_end(&pattern(0, 20 * MIB)).unwrap();
    let master = MasterHandle::new(log, config());
    let server = transport.spawn_master(loopback(), master.clone()).unwrap();
    let addr = server.local_addr().unwrap();

    let start_slave = |log: FileLog| {
        let slave = SlaveHandle::new(addr, log, config());
        (transport.spawn_slave(slave.clone()).unwrap(), slave)
    };
    let same = |slave: &SlaveHandle<FileLog>| {
        compare_logs(&*master.log().read(), &*slave.log().read()).unwrap()
    };
    let (client, slave) = start_slave(FileLog::create(&slave_dir, segment).unwrap());
    assert!(slave.wait_until_blocking(deadline(), |s| s.log().max_offset() == 20 * MIB));
    assert!(same(&slave).identical());

    // Stop the slave, grow the master, restart the slave from its store on disk.
    client.shutdown().unwrap();
    slave.log().update(FileLog::sync).unwrap();
    drop(slave);
    master.append(pattern(20 * MIB, 7 * MIB)).unwrap();
    let (client, slave) = start_slave(FileLog::open(&slave_dir, segment).unwrap());
    assert!(slave.wait_until_blocking(deadline(), |s| s.log().max_offset() == 27 * MIB));
    let comparison = same(&slave);
    assert!(comparison.identical(), "{comparison:?}");
    // The first connection's end is seen by the master once its EOF arrives.
    assert!(master.wait_until_blocking(deadline(), |m| m.slaves().len() == 1));
    let requested: Vec<_> = master.slaves().iter().map(|s| s.requested).collect();
    assert_eq!(
        requested,
        [Some(20 * MIB)],
        "the restarted slave resumed from its store"
    );
    client.shutdown().unwrap();
    server.shutdown().unwrap();
}

/// The async entry points are `Send`, so they can be spawned on multi-threaded executors.
#[test]
fn async_drivers_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let master = master_with(0);
    let slave = slave_of(loopback());
    let listener = async_io::Async::<TcpListener>::bind(loopback()).unwrap();
    assert_send(&rocketmq_ha_transports::smol::serve(
        listener,
        master.clone(),
    ));
    assert_send(&rocketmq_ha_transports::smol::run_slave(slave.clone()));
    assert_send(&rocketmq_ha_transports::smol::wait_replicated(
        &master,
        1,
        1,
        deadline(),
    ));
    #[cfg(feature = "tokio")]
    {
        use rocketmq_ha_transports::tokio as driver;
        let runtime = ::tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let listener = std::net::TcpListener::bind(loopback()).unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = ::tokio::net::TcpListener::from_std(listener).unwrap();
        assert_send(&driver::serve(listener, master.clone()));
        assert_send(&driver::run_slave(slave));
        assert_send(&driver::wait_replicated(&master, 1, 1, deadline()));
    }
}

macro_rules! suite {
    ($($driver:ident => $transport:expr, $wait:expr;)*) => {$(
        mod $driver {
            use super::*;

            #[test]
            fn replicates_64_mib_across_segment_boundaries() {
                super::replicates_64_mib_across_segment_boundaries($transport);
            }

            #[test]
            fn dropped_connection_resumes_where_it_stopped() {
                super::dropped_connection_resumes_where_it_stopped($transport);
            }

            #[test]
            fn sync_wait_completes_when_the_slave_acks() {
                super::sync_wait_completes_when_the_slave_acks($transport, $wait);
            }

            #[test]
            fn file_stores_replicate_and_a_restarted_slave_resumes() {
                super::file_stores_replicate_and_a_restarted_slave_resumes($transport);
            }

            #[test]
            fn garbage_reports_close_only_that_connection() {
                super::garbage_reports_close_only_that_connection($transport);
            }

            #[test]
            fn garbage_from_the_master_is_a_typed_error_and_the_slave_recovers() {
                super::garbage_from_the_master_is_a_typed_error_and_the_slave_recovers(
                    $transport,
                );
            }
        }
    )*};
}

suite! {
    blocking => Transport::Blocking, wait_blocking;
    smol => Transport::Smol, wait_smol;
}

#[cfg(feature = "tokio")]
suite! {
    tokio => Transport::Tokio, wait_tokio;
}
