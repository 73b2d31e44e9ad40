//! The write-stall limit (`Config::write_stall_timeout`) over real sockets, once per driver (see
//! `suite!` at the bottom): a report or frame write that makes no progress for that long closes
//! the connection, even while the peer keeps sending, so neither housekeeping (the peer is not
//! silent) nor anything else would ever close it.
//!
//! * The slave: a fake master reads the slave's first report and never again, while streaming
//!   small frames so that the slave reports after every read. The slave's send buffer fills, its
//!   report write blocks, and the limit must close the connection. The fake then makes way for
//!   a real master on the same address with the same bytes, and the slave must resume there.
//! * The master: a fake slave sends reports but never reads the frames.
//!
//! Filling a send buffer with 8-byte reports on loopback takes care: see
//! [`proxy::narrow_listener`] for what the fake master's listener does, and why.

mod common;

mod proxy;

use common::{pattern, MIB};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rocketmq_ha::{ClientError, Config, ConfigBuilder, MasterError, MemoryLog, StartPosition};
use rocketmq_ha_transports::{Error, MasterHandle, SlaveHandle, Transport};

const SEGMENT: u64 = 64 * MIB;
/// Generous: the machine is shared, and a hung test should fail, not stall CI.
const PATIENCE: Duration = Duration::from_secs(20);
const WRITE_STALL: Duration = Duration::from_millis(300);
/// Far longer than the test: the write-stall limit must be what closes the connection.
const HOUSEKEEPING: Duration = Duration::from_secs(120);
/// The fake master's frames: small, so the slave reads (and reports) often.
const FRAME_BODY: u64 = 64;
/// The most the fake master sends. The async slaves block after some 2-4 MB (measured); the
/// blocking slave reads bigger batches, so it reports less often and needs more.
const FLOOD_LIMIT: u64 = 256 * MIB;

fn deadline() -> Instant {
    Instant::now() + PATIENCE
}

fn config() -> ConfigBuilder {
    Config::builder()
        .start_position(StartPosition::OldestRetained)
        .housekeeping_interval(HOUSEKEEPING)
        .reconnect_backoff_initial(Duration::from_millis(20))
        .reconnect_backoff_max(Duration::from_millis(300))
        .write_stall_timeout(WRITE_STALL)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A master that reads the slave's first report (it must ask for 0) and then never reads
/// again, streaming frames of [`pattern`] from offset 0 as fast as the slave takes them, until
/// `stop`, [`FLOOD_LIMIT`] or the slave closes the connection. `sent` counts whole frames'
/// bytes.
fn flood(mut stream: TcpStream, stop: &AtomicBool, sent: &AtomicU64) {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut report = [0u8; 8];
    stream.read_exact(&mut report).unwrap();
    assert_eq!(u64::from_be_bytes(report), 0, "an empty slave asks for 0");
    // A write the slave does not take within 10 ms is retried after a look at `stop`.
    stream
        .set_write_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let (mut offset, mut pending) = (0u64, Vec::new());
    while !stop.load(Ordering::SeqCst) && offset < FLOOD_LIMIT {
        if pending.is_empty() {
            pending.extend_from_slice(&offset.to_be_bytes());
            pending.extend_from_slice(&(FRAME_BODY as u32).to_be_bytes());
            pending.extend(pattern(offset, FRAME_BODY));
        }
        match stream.write(&pending) {
            Ok(n) => {
                pending.drain(..n);
                if pending.is_empty() {
                    offset += FRAME_BODY;
                    sent.store(offset, Ordering::SeqCst);
                }
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            // The slave closed the connection.
            Err(_) => return,
        }
        // One frame per write, paced, so each read of the slave finds one or a few: many
        // reads, many reports (a slave that reads in big batches reports rarely).
        thread::sleep(Duration::from_micros(50));
    }
}

/// A master that floods heartbeats as fast as the socket takes them keeps the slave busy
/// reading. The slave's timers must fire all the same: its own heartbeat reports (every
/// millisecond here) keep coming. (The drivers handle a passed deadline on every turn of their
/// loop, not only when a read has nothing to return; on this machine the slave parses fast
/// enough that its socket is not always readable, so this test passes without that too.)
fn a_slave_flooded_with_heartbeats_still_sends_its_own(transport: Transport) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let slave_config = config()
        .heartbeat_interval(Duration::from_millis(1))
        .build()
        .unwrap();
    let slave = SlaveHandle::new(addr, MemoryLog::new(SEGMENT), slave_config);
    let client = transport.spawn_slave(slave.clone()).unwrap();
    let stop = AtomicBool::new(false);
    let reports = AtomicU64::new(0);
    let (stream, _) = listener.accept().unwrap();
    let flood_for = Duration::from_secs(2);
    thread::scope(|s| {
        let (stop, reports) = (&stop, &reports);
        let mut writer = stream.try_clone().unwrap();
        s.spawn(move || {
            writer
                .set_write_timeout(Some(Duration::from_millis(10)))
                .unwrap();
            // Heartbeats at offset 0, which an empty slave accepts; many per write.
            let batch = vec![0u8; 12 << 16];
            while !stop.load(Ordering::SeqCst) {
                match writer.write(&batch) {
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        });
        let mut reader = stream;
        s.spawn(move || {
            reader
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let mut report = [0u8; 8];
            while !stop.load(Ordering::SeqCst) {
                match reader.read_exact(&mut report) {
                    Ok(()) => {
                        reports.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => return,
                }
            }
        });
        thread::sleep(flood_for);
        stop.store(true, Ordering::SeqCst);
    });
    let reports = reports.load(Ordering::SeqCst);
    assert!(
        reports >= 100,
        "{transport}: {reports} reports in {flood_for:?} of 1 ms heartbeats while flooded"
    );
    assert_eq!(slave.status().failures, 0, "{:?}", slave.take_errors());
    client.shutdown().unwrap();
}

fn a_slave_whose_reports_stall_closes_the_connection_and_resumes(transport: Transport) {
    let listener = proxy::narrow_listener();
    let addr = listener.local_addr().unwrap();
    // Heartbeats every millisecond as well: reports keep coming even between frames.
    let slave_config = config()
        .heartbeat_interval(Duration::from_millis(1))
        .build()
        .unwrap();
    let slave = SlaveHandle::new(addr, MemoryLog::new(SEGMENT), slave_config);
    let client = transport.spawn_slave(slave.clone()).unwrap();

    let (stop, sent) = (AtomicBool::new(false), AtomicU64::new(0));
    let mut errors = Vec::new();
    let started = Instant::now();
    thread::scope(|s| {
        let (stream, _) = listener.accept().unwrap();
        s.spawn(|| flood(stream, &stop, &sent));
        // The slave stores frames until its report write blocks; then the limit must close
        // the connection (the fake master never will, and housekeeping is two minutes).
        let closed = slave.wait_until_blocking(deadline(), |s| {
            errors.extend(s.take_errors());
            s.status().failures >= 1
        });
        stop.store(true, Ordering::SeqCst);
        assert!(
            closed,
            "the slave kept a stalled connection for {:?}: status {:?}, stored {} of {} sent",
            started.elapsed(),
            slave.status(),
            slave.log().max_offset(),
            sent.load(Ordering::SeqCst)
        );
    });
    errors.extend(slave.take_errors());
    let took = started.elapsed();
    assert!(took >= WRITE_STALL, "{took:?}");
    assert!(
        matches!(
            errors.first(),
            Some(Error::Client(ClientError::WriteStalled { stalled })) if *stalled >= WRITE_STALL
        ),
        "{errors:?}"
    );
    assert!(
        sent.load(Ordering::SeqCst) < FLOOD_LIMIT,
        "the flood ran out before the slave stalled"
    );
    let stored = slave.log().max_offset();
    assert!(
        stored > 0 && stored.is_multiple_of(FRAME_BODY),
        "stored {stored}"
    );

    // A real master with the same bytes and more takes the fake's address; the slave, failing
    // its dials meanwhile, resumes there from what it stored.
    drop(listener);
    let end = sent.load(Ordering::SeqCst) + MIB;
    let mut log = MemoryLog::new(SEGMENT);
    log.push(pattern(0, end));
    let master = MasterHandle::new(log, config().build().unwrap());
    let server = transport.spawn_master(addr, master.clone()).unwrap();
    let reached = slave.wait_until_blocking(deadline(), |s| s.log().max_offset() >= end);
    assert!(
        reached,
        "slave stopped at {} of {end}; status {:?}; errors {:?}",
        slave.log().max_offset(),
        slave.status(),
        slave.take_errors()
    );
    let theirs = slave.log().read().copy_range(0, end).unwrap();
    let ours = master.log().read().copy_range(0, end).unwrap();
    assert!(theirs == ours, "slave bytes differ from the master's");
    // It resumed from what it stored (frames it had read but not yet appended at the close
    // may have been appended since), not from 0.
    let requested: Vec<_> = master.slaves().iter().map(|s| s.requested).collect();
    let sent = sent.load(Ordering::SeqCst);
    assert!(
        matches!(requested[..], [Some(r)] if (stored..=sent).contains(&r) && r.is_multiple_of(FRAME_BODY)),
        "requested {requested:?}; stored {stored} at the close, {sent} sent"
    );
    client.shutdown().unwrap();
    server.shutdown().unwrap();
}

fn a_master_whose_frames_stall_closes_the_connection(transport: Transport) {
    let end = 16 * MIB;
    let mut log = MemoryLog::new(SEGMENT);
    log.push(pattern(0, end));
    let master = MasterHandle::new(log, config().build().unwrap());
    let server = transport
        .spawn_master(SocketAddr::from(([127, 0, 0, 1], 0)), master.clone())
        .unwrap();
    let addr = server.local_addr().unwrap();

    // A slave that asks for everything and keeps acknowledging 0 every 50 ms, but never reads:
    // the master is never without reports, so only the limit can close the connection.
    let fake = TcpStream::connect(addr).unwrap();
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                if (&fake).write_all(&0u64.to_be_bytes()).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        let mut closed = Vec::new();
        let seen = master.wait_until_blocking(deadline(), |m| {
            closed.extend(m.take_closed());
            !closed.is_empty()
        });
        stop.store(true, Ordering::SeqCst);
        assert!(
            seen,
            "the master kept a stalled connection for {:?}; slaves {:?}",
            started.elapsed(),
            master.slaves()
        );
        let took = started.elapsed();
        assert!(took >= WRITE_STALL, "{took:?}");
        assert!(
            closed.iter().all(|c| matches!(
                c.error,
                Some(Error::Master(MasterError::WriteStalled { stalled })) if stalled >= WRITE_STALL
            )),
            "{closed:?}"
        );
    });
    drop(fake);

    // The master is fine otherwise: a real slave replicates everything.
    let slave = SlaveHandle::new(addr, MemoryLog::new(SEGMENT), config().build().unwrap());
    let client = transport.spawn_slave(slave.clone()).unwrap();
    assert!(slave.wait_until_blocking(deadline(), |s| s.log().max_offset() >= end));
    let theirs = slave.log().read().copy_range(0, end).unwrap();
    let ours = master.log().read().copy_range(0, end).unwrap();
    assert!(theirs == ours, "slave bytes differ from the master's");
    client.shutdown().unwrap();
    server.shutdown().unwrap();
}

macro_rules! suite {
    ($($driver:ident => $transport:expr;)*) => {$(
        mod $driver {
            use super::*;

            #[test]
            fn a_slave_whose_reports_stall_closes_the_connection_and_resumes() {
                super::a_slave_whose_reports_stall_closes_the_connection_and_resumes(
                    $transport,
                );
            }

            #[test]
            fn a_slave_flooded_with_heartbeats_still_sends_its_own() {
                super::a_slave_flooded_with_heartbeats_still_sends_its_own($transport);
            }

            #[test]
            fn a_master_whose_frames_stall_closes_the_connection() {
                super::a_master_whose_frames_stall_closes_the_connection($transport);
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
