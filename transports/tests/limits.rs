//! A master under idle, garbage and unwanted peers, on every driver: a connection limit keeps
//! its threads and memory bounded under a flood of idle sockets, peers outside the allow list
//! are closed before a byte is read, connections that never report are closed at the
//! first-report deadline, and through all of it a good slave replicates on.
//!
//! The tests count this process's threads, so they run one at a time (`SERIAL`).

mod common;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use common::{loopback, pattern, MIB};
use rocketmq_ha::{Admission, Config, IpNet, MasterError, MemoryLog, Refusal, StartPosition};
use rocketmq_ha_transports::{Error, MasterHandle, Running, SlaveHandle, Transport};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Generous: the machine is shared, and a hung test should fail, not stall CI.
const PATIENCE: Duration = Duration::from_secs(60);

fn deadline() -> Instant {
    Instant::now() + PATIENCE
}

/// A field of `/proc/self/status` (`Threads`, `VmRSS` in KiB).
fn status_field(name: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
}

fn threads() -> u64 {
    status_field("Threads")
}

fn rss_kib() -> u64 {
    status_field("VmRSS")
}

/// A master serving `len` bytes of pattern over `transport`, with a slave replicating them.
struct Pair {
    master: MasterHandle<MemoryLog>,
    server: Running,
    addr: SocketAddr,
    slave: SlaveHandle<MemoryLog>,
    client: Running,
}

impl Pair {
    fn start(transport: Transport, config: Config, admission: Admission, len: u64) -> Pair {
        let mut log = MemoryLog::new(16 * MIB);
        log.push(pattern(0, len));
        let master = MasterHandle::new(log, config);
        master.set_admission(admission);
        let server = transport
            .spawn_master(loopback(), master.clone())
            .expect("master starts");
        let addr = server.local_addr().expect("a master listens");
        let slave = SlaveHandle::new(addr, MemoryLog::new(16 * MIB), config);
        let client = transport.spawn_slave(slave.clone()).expect("slave starts");
        let pair = Pair {
            master,
            server,
            addr,
            slave,
            client,
        };
        pair.assert_replicates(len);
        pair
    }

    /// Appends up to `end` and waits until the slave has it, byte for byte.
    fn assert_replicates(&self, end: u64) {
        let max = self.master.log().max_offset();
        if end > max {
            self.master.append(pattern(max, end - max)).expect("append");
        }
        let reached = self
            .slave
            .wait_until_blocking(deadline(), |s| s.log().max_offset() >= end);
        assert!(
            reached,
            "the slave stopped at {} of {end}; its errors: {:?}",
            self.slave.log().max_offset(),
            self.slave.take_errors()
        );
        let theirs = self.slave.log().read().copy_range(0, end).expect("range");
        assert!(theirs == pattern(0, end), "the slave's bytes differ");
        assert_eq!(
            self.slave.status().connections,
            1,
            "the slave never lost its connection"
        );
    }

    fn stop(self) {
        self.client.shutdown().expect("slave stops");
        self.server.shutdown().expect("master stops");
    }
}

fn config() -> Config {
    Config::builder()
        .start_position(StartPosition::OldestRetained)
        .build()
        .expect("valid test config")
}

/// Waits until the master closed `stream`: EOF or a reset. Returns how long that took.
fn closed_within(mut stream: &TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).expect("read timeout");
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => panic!("the master sent bytes to a peer that never reported"),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(_) => return Some(started.elapsed()),
        }
    }
}

#[test]
fn a_thousand_idle_connections_against_a_limit_of_100_keep_threads_and_memory_bounded() {
    let _serial = serial();
    const LIMIT: usize = 100;
    const IDLE: usize = 1_000;
    // Long deadlines, so the admitted idle connections stay while the figures are taken.
    let config = Config::builder()
        .start_position(StartPosition::OldestRetained)
        .housekeeping_interval(Duration::from_secs(300))
        .first_report_timeout(Duration::from_secs(200))
        .build()
        .expect("valid test config");
    for &transport in Transport::ALL {
        let admission = Admission::new().max_connections(Some(LIMIT));
        let pair = Pair::start(transport, config, admission, MIB);
        let (threads_before, rss_before) = (threads(), rss_kib());

        let idle: Vec<TcpStream> = (0..IDLE)
            .map(|_| TcpStream::connect(pair.addr).expect("connect"))
            .collect();
        // The slave holds one place; every idle socket beyond the other 99 is refused.
        let refused = (IDLE - (LIMIT - 1)) as u64;
        let all_seen = pair
            .master
            .wait_until_blocking(deadline(), |m| m.refused_count() >= refused);
        assert!(
            all_seen && pair.master.refused_count() == refused,
            "{transport}: {} refused, {} connections served",
            pair.master.refused_count(),
            pair.master.slaves().len()
        );
        assert_eq!(pair.master.slaves().len(), LIMIT);
        // The last socket was over the limit: the master closed it without a word.
        let last = idle.last().expect("sockets");
        let closed = closed_within(last, Duration::from_secs(10));
        assert!(
            closed.is_some(),
            "{transport}: a refused socket stayed open"
        );
        // Logged once, not 901 times.
        let reported = pair.master.take_refused();
        assert_eq!(reported.len(), 1, "{transport}: {reported:?}");
        assert_eq!(
            reported[0].reason,
            Refusal::TooManyConnections { limit: LIMIT }
        );

        let (threads_during, rss_during) = (threads(), rss_kib());
        // The blocking driver spends two threads on each connection it serves; the async
        // drivers none. Either way the limit, not the flood, bounds them.
        let per_connection = if transport == Transport::Blocking {
            2
        } else {
            0
        };
        let most = per_connection * (LIMIT as u64 - 1) + 8;
        assert!(
            threads_during <= threads_before + most,
            "{transport}: {threads_before} threads before the flood, {threads_during} during"
        );
        let grown_mib = rss_during.saturating_sub(rss_before) / 1024;
        assert!(
            grown_mib <= 64,
            "{transport}: resident memory grew by {grown_mib} MiB under the flood"
        );
        // The good slave goes on replicating with the idle sockets still open.
        pair.assert_replicates(6 * MIB);
        println!(
            "{transport}: {IDLE} idle sockets against a limit of {LIMIT}: threads \
             {threads_before} -> {threads_during}, resident {} -> {} MiB",
            rss_before / 1024,
            rss_during / 1024
        );
        drop(idle);
        pair.stop();
    }
}

#[test]
fn idle_and_garbage_peers_are_closed_and_a_slave_replicates_on() {
    let _serial = serial();
    let first_report = Duration::from_millis(1_500);
    let config = Config::builder()
        .start_position(StartPosition::OldestRetained)
        .heartbeat_interval(Duration::from_millis(500))
        .first_report_timeout(first_report)
        .build()
        .expect("valid test config");
    for &transport in Transport::ALL {
        let pair = Pair::start(transport, config, Admission::new(), MIB);
        pair.master.take_closed();
        let opened = Instant::now();
        // Sends nothing at all.
        let idle = TcpStream::connect(pair.addr).expect("connect");
        // Sends seven bytes, one short of a report, and waits.
        let mut short = TcpStream::connect(pair.addr).expect("connect");
        short.write_all(&[1; 7]).expect("write");
        // A negative offset: not a report at all.
        let mut garbage = TcpStream::connect(pair.addr).expect("connect");
        garbage.write_all(&[0xFF; 64]).expect("write");
        // Asks for far more than the master has.
        let mut ahead = TcpStream::connect(pair.addr).expect("connect");
        ahead.write_all(&(1u64 << 40).to_be_bytes()).expect("write");
        // Trickles a byte now and then: it keeps housekeeping quiet, not the first-report
        // deadline.
        let trickle = TcpStream::connect(pair.addr).expect("connect");
        let trickler = {
            let mut trickle = trickle.try_clone().expect("clone");
            thread::spawn(move || {
                for _ in 0..6 {
                    if trickle.write_all(&[0]).is_err() {
                        return;
                    }
                    thread::sleep(Duration::from_millis(300));
                }
            })
        };

        for (name, stream) in [("garbage", &garbage), ("ahead", &ahead)] {
            let took = closed_within(stream, first_report / 2);
            assert!(took.is_some(), "{transport}: the {name} peer stayed open");
        }
        for (name, stream) in [("idle", &idle), ("short", &short), ("trickle", &trickle)] {
            let took = closed_within(stream, PATIENCE);
            let since = opened.elapsed();
            assert!(took.is_some(), "{transport}: the {name} peer stayed open");
            // Not before the deadline (less a little for the sockets opened just before),
            // and well before housekeeping.
            assert!(
                since >= first_report - Duration::from_millis(100)
                    && since < config.housekeeping_interval(),
                "{transport}: the {name} peer was closed after {since:?}"
            );
        }
        trickler.join().expect("trickler");

        let reasons: Vec<String> = {
            let mut closed = Vec::new();
            pair.master.wait_until_blocking(deadline(), |m| {
                closed.extend(m.take_closed());
                closed.len() >= 5
            });
            closed
                .iter()
                .map(|c| match &c.error {
                    Some(Error::Master(MasterError::NoFirstReport { .. })) => "no report".into(),
                    Some(Error::Master(MasterError::Wire(_))) => "wire".into(),
                    Some(Error::Master(MasterError::RequestAboveMax { .. })) => "ahead".into(),
                    other => format!("{other:?}"),
                })
                .collect()
        };
        let count = |reason: &str| reasons.iter().filter(|r| *r == reason).count();
        assert_eq!(
            (count("no report"), count("wire"), count("ahead")),
            (3, 1, 1),
            "{transport}: {reasons:?}"
        );
        pair.assert_replicates(3 * MIB);
        pair.stop();
    }
}

/// A socket to `addr` from `source`, one of the loopback addresses (all of 127.0.0.0/8 is
/// local on Linux).
fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .expect("bind the source address");
    socket.connect(&addr.into()).expect("connect");
    socket.into()
}

#[test]
fn peers_outside_the_allow_list_are_closed_unread_and_reported_once_each() {
    let _serial = serial();
    let allow = ["127.0.0.1/32", "10.0.0.0/8"].map(|s| s.parse::<IpNet>().expect("a block"));
    for &transport in Transport::ALL {
        let pair = Pair::start(transport, config(), Admission::new().allow(allow), MIB);
        for source in [
            [127, 0, 0, 2],
            [127, 0, 0, 2],
            [127, 0, 0, 3],
            [127, 0, 0, 2],
        ] {
            let mut stranger = connect_from(source, pair.addr);
            // A valid report: were it read, the stranger would be served as a slave.
            let _ = stranger.write_all(&0u64.to_be_bytes());
            let took = closed_within(&stranger, Duration::from_secs(10));
            assert!(took.is_some(), "{transport}: a stranger stayed connected");
        }
        assert_eq!(pair.master.refused_count(), 4);
        let reported = pair.master.take_refused();
        let peers: Vec<_> = reported.iter().map(|r| r.peer.ip().to_string()).collect();
        assert_eq!(
            peers,
            ["127.0.0.2", "127.0.0.3"],
            "{transport}: once per peer"
        );
        assert!(reported.iter().all(|r| r.reason == Refusal::NotAllowed));
        // Never served: the only connection the master knows is the slave's.
        assert_eq!(pair.master.slaves().len(), 1);
        assert!(pair.master.take_closed().is_empty(), "{transport}");
        pair.assert_replicates(2 * MIB);
        pair.stop();
    }
}

#[test]
fn a_slave_arriving_after_a_flood_is_served_once_the_silent_peers_time_out() {
    let _serial = serial();
    const LIMIT: usize = 100;
    let config = Config::builder()
        .start_position(StartPosition::OldestRetained)
        .heartbeat_interval(Duration::from_millis(500))
        .first_report_timeout(Duration::from_millis(1_500))
        .reconnect_backoff_initial(Duration::from_millis(10))
        .reconnect_backoff_max(Duration::from_millis(200))
        .build()
        .expect("valid test config");
    for &transport in Transport::ALL {
        let mut log = MemoryLog::new(16 * MIB);
        log.push(pattern(0, MIB));
        let master = MasterHandle::new(log, config);
        master.set_admission(Admission::new().max_connections(Some(LIMIT)));
        let server = transport
            .spawn_master(loopback(), master.clone())
            .expect("master starts");
        let addr = server.local_addr().expect("a master listens");
        // Silent sockets take every place...
        let idle: Vec<TcpStream> = (0..LIMIT + 50)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        assert!(master.wait_until_blocking(deadline(), |m| m.refused_count() >= 50));
        assert_eq!(master.slaves().len(), LIMIT, "{transport}");
        // ... so the slave is refused at first, and served once the deadline frees them.
        let slave = SlaveHandle::new(addr, MemoryLog::new(16 * MIB), config);
        let client = transport.spawn_slave(slave.clone()).expect("slave starts");
        let reached = slave.wait_until_blocking(deadline(), |s| s.log().max_offset() >= MIB);
        assert!(
            reached,
            "{transport}: the slave stopped at {}; its errors: {:?}",
            slave.log().max_offset(),
            slave.take_errors()
        );
        assert!(
            master.refused_count() > 50,
            "{transport}: the slave was never refused, so the test proved nothing"
        );
        assert!(
            idle.iter()
                .all(|s| closed_within(s, Duration::from_secs(10)).is_some()),
            "{transport}: a silent socket outlived its deadline"
        );
        drop(idle);
        client.shutdown().expect("slave stops");
        server.shutdown().expect("master stops");
    }
}
