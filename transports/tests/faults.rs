//! Timers over real sockets, once per driver (see `suite!` at the bottom): heartbeats,
//! housekeeping, reconnect back-off and the connect deadline, with network faults injected by
//! the loopback [`FaultProxy`] between slave and master. The proxy's own tests come first.
//!
//! Timers are small (heartbeat 100 ms, housekeeping 800 ms, back-off 20-300 ms) so a fault is
//! noticed within a second, and every wait is on a condition with a deadline: a failure fails,
//! it does not hang.

mod common;

mod proxy;

use common::{loopback, pattern, MIB};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use proxy::{hanging_listener, Dir, FaultProxy};
use rocketmq_ha::{ClientError, Config, ConfigBuilder, MasterError, MemoryLog, StartPosition};
use rocketmq_ha_transports::{Error, MasterHandle, Running, SlaveHandle, Transport};

/// Generous: the machine is shared, and a hung test should fail, not stall CI.
const PATIENCE: Duration = Duration::from_secs(20);

fn deadline() -> Instant {
    Instant::now() + PATIENCE
}

// --- the proxy itself -----------------------------------------------------------------------

/// A client connected through a proxy to a plain listener, and the target's end of it.
fn proxied_pair(proxy: &FaultProxy, target: &TcpListener) -> (TcpStream, TcpStream) {
    let client = TcpStream::connect(proxy.addr()).unwrap();
    let (server, _) = target.accept().unwrap();
    for s in [&client, &server] {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
    }
    (client, server)
}

fn read_exactly(mut from: &TcpStream, len: usize) -> Vec<u8> {
    let mut got = vec![0; len];
    from.read_exact(&mut got).unwrap();
    got
}

/// Whether anything arrives on `from` within `window`; for checking that a fault holds bytes
/// back, where only waiting can tell.
fn arrives_within(mut from: &TcpStream, window: Duration) -> bool {
    from.set_read_timeout(Some(window)).unwrap();
    let mut byte = [0u8; 1];
    let arrived = match from.read(&mut byte) {
        Ok(n) => n > 0,
        Err(e) if is_timeout(&e) => false,
        Err(e) => panic!("reading: {e}"),
    };
    from.set_read_timeout(Some(PATIENCE)).unwrap();
    arrived
}

/// Whether a read with a timeout ran out of time (Unix says `WouldBlock`).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads until the peer's close shows: `Ok(())` for EOF, the error for a reset.
fn read_until_closed(mut from: &TcpStream) -> io::Result<()> {
    let mut sink = [0u8; 64 * 1024];
    loop {
        match from.read(&mut sink) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e),
        }
    }
}

#[test]
fn proxy_passes_bytes_through_both_ways_unchanged() {
    let target = TcpListener::bind(loopback()).unwrap();
    let proxy = FaultProxy::start(target.local_addr().unwrap());
    let (client, server) = proxied_pair(&proxy, &target);
    let up = pattern(0, 3 * MIB);
    let down = pattern(7, 2 * MIB);
    thread::scope(|s| {
        s.spawn(|| (&client).write_all(&up).unwrap());
        s.spawn(|| (&server).write_all(&down).unwrap());
        assert!(read_exactly(&server, up.len()) == up);
        assert!(read_exactly(&client, down.len()) == down);
    });
    assert_eq!(proxy.accepted(), 1);
    // A pump counts after its write returns, which may be after the reader got the bytes.
    assert!(wait_for(|| proxy.forwarded(Dir::ToMaster) == 3 * MIB));
    assert!(wait_for(|| proxy.forwarded(Dir::ToSlave) == 2 * MIB));
}

#[test]
fn proxy_stall_stops_delivery_and_resume_restarts_it() {
    let target = TcpListener::bind(loopback()).unwrap();
    let proxy = FaultProxy::start(target.local_addr().unwrap());
    let (client, server) = proxied_pair(&proxy, &target);
    (&client).write_all(b"before").unwrap();
    assert_eq!(read_exactly(&server, 6), b"before");

    proxy.stall(Dir::ToMaster);
    // The proxy stops reading, so the sender's buffers fill and its writes stop: a
    // non-blocking writer sees WouldBlock after a few MB (loopback buffers), not never.
    client.set_nonblocking(true).unwrap();
    let mut sent = 0u64;
    while sent < 64 * MIB {
        match (&client).write(&pattern(sent, 64 * 1024)) {
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("writing through a stalled proxy: {e}"),
        }
    }
    assert!(sent < 64 * MIB, "back-pressure never reached the sender");
    assert!(!arrives_within(&server, Duration::from_millis(300)));
    // The other direction is not stalled.
    client.set_nonblocking(false).unwrap();
    (&server).write_all(b"down").unwrap();
    assert_eq!(read_exactly(&client, 4), b"down");

    proxy.resume(Dir::ToMaster);
    let got = read_exactly(&server, sent as usize);
    let expected: Vec<u8> = (0..sent)
        .step_by(64 * 1024)
        .flat_map(|at| pattern(at, 64 * 1024))
        .take(sent as usize)
        .collect();
    assert!(got == expected, "bytes held by the stall came out changed");
}

#[test]
fn proxy_black_hole_drops_bytes_and_keeps_the_connection_open() {
    let target = TcpListener::bind(loopback()).unwrap();
    let proxy = FaultProxy::start(target.local_addr().unwrap());
    let (client, server) = proxied_pair(&proxy, &target);
    proxy.black_hole(Dir::ToSlave);
    (&server).write_all(&pattern(0, MIB)).unwrap();
    assert!(!arrives_within(&client, Duration::from_millis(300)));
    assert_eq!(proxy.forwarded(Dir::ToSlave), 0);
    // Still open both ways: reports pass, and frames do again once healed.
    (&client).write_all(b"ack").unwrap();
    assert_eq!(read_exactly(&server, 3), b"ack");
    proxy.heal();
    (&server).write_all(b"after").unwrap();
    assert_eq!(read_exactly(&client, 5), b"after");
}

#[test]
fn proxy_trickle_splits_writes_and_delay_holds_them() {
    let target = TcpListener::bind(loopback()).unwrap();
    let proxy = FaultProxy::start(target.local_addr().unwrap());
    let (client, mut server) = proxied_pair(&proxy, &target);
    // A trickle of 3 bytes cuts an 8-byte report in pieces: the reader sees no read above 3.
    proxy.trickle(Dir::ToMaster, 3, Duration::from_millis(5));
    (&client).write_all(&pattern(0, 64)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < 64 {
        let n = server.read(&mut buf).unwrap();
        assert!(
            (1..=3).contains(&n),
            "a read of {n} bytes through a 3-byte trickle"
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, pattern(0, 64));

    proxy.heal();
    proxy.delay(Dir::ToSlave, Duration::from_millis(200));
    let sent = Instant::now();
    (&server).write_all(b"late").unwrap();
    assert_eq!(read_exactly(&client, 4), b"late");
    assert!(sent.elapsed() >= Duration::from_millis(200));
}

#[test]
fn proxy_cut_rst_resets_both_peers_promptly() {
    let target = TcpListener::bind(loopback()).unwrap();
    let proxy = FaultProxy::start(target.local_addr().unwrap());
    let (client, server) = proxied_pair(&proxy, &target);
    // A stalled direction and a peer with unread bytes: the reset must not wait for either.
    proxy.stall(Dir::ToSlave);
    (&server).write_all(b"held").unwrap();
    (&client).write_all(b"ping").unwrap();
    assert_eq!(read_exactly(&server, 4), b"ping");
    let cut = Instant::now();
    proxy.cut_rst();
    for end in [&client, &server] {
        let closed = read_until_closed(end);
        assert!(
            matches!(&closed, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "expected ECONNRESET, got {closed:?}"
        );
    }
    assert!(
        cut.elapsed() < Duration::from_secs(1),
        "{:?}",
        cut.elapsed()
    );
    assert!(wait_for(|| proxy.live_connections() == 0));
}

#[test]
fn proxy_cut_fin_closes_both_peers_cleanly() {
    let target = TcpListener::bind(loopback()).unwrap();
    let proxy = FaultProxy::start(target.local_addr().unwrap());
    let (client, server) = proxied_pair(&proxy, &target);
    (&client).write_all(b"ping").unwrap();
    assert_eq!(read_exactly(&server, 4), b"ping");
    let cut = Instant::now();
    proxy.cut_fin();
    for end in [&client, &server] {
        assert!(read_until_closed(end).is_ok(), "expected an EOF");
    }
    assert!(
        cut.elapsed() < Duration::from_secs(1),
        "{:?}",
        cut.elapsed()
    );
    // The peers close in turn; then the proxy's pumps end.
    drop((client, server));
    assert!(wait_for(|| proxy.live_connections() == 0));
}

#[test]
fn proxy_refuses_new_connections_while_told_to() {
    let target = TcpListener::bind(loopback()).unwrap();
    let proxy = FaultProxy::start(target.local_addr().unwrap());
    proxy.refuse_new(true);
    let refused = TcpStream::connect(proxy.addr()).unwrap();
    refused.set_read_timeout(Some(PATIENCE)).unwrap();
    let closed = read_until_closed(&refused);
    assert!(
        matches!(&closed, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
        "{closed:?}"
    );
    assert_eq!((proxy.accepted(), proxy.refused()), (1, 1));
    proxy.refuse_new(false);
    let (client, server) = proxied_pair(&proxy, &target);
    (&client).write_all(b"in").unwrap();
    assert_eq!(read_exactly(&server, 2), b"in");
}

#[test]
fn dropping_the_proxy_ends_its_threads_promptly() {
    let target = TcpListener::bind(loopback()).unwrap();
    let proxy = FaultProxy::start(target.local_addr().unwrap());
    // One connection stalled with a full sender, one black-holed, one delayed mid-chunk.
    let pairs: Vec<_> = (0..3).map(|_| proxied_pair(&proxy, &target)).collect();
    proxy.stall(Dir::ToMaster);
    proxy.black_hole(Dir::ToSlave);
    (&pairs[0].1).write_all(&pattern(0, MIB)).unwrap();
    (&pairs[1].0).write_all(b"stalled").unwrap();
    let started = Instant::now();
    // The drop joins every thread of the proxy: returning at all is the check.
    drop(proxy);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // And every peer sees its connection closed (an EOF, or a reset where the proxy left
    // bytes unread), not a read that times out.
    for end in pairs.iter().flat_map(|(client, server)| [client, server]) {
        let closed = read_until_closed(end);
        assert!(!matches!(&closed, Err(e) if is_timeout(e)), "{closed:?}");
    }
}

#[test]
fn hanging_listener_makes_connect_time_out() {
    let hanging = hanging_listener();
    let started = Instant::now();
    let dialed = TcpStream::connect_timeout(&hanging.addr(), Duration::from_millis(300));
    assert!(
        matches!(&dialed, Err(e) if e.kind() == io::ErrorKind::TimedOut),
        "{dialed:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}

/// Polls `cond` until it holds or [`PATIENCE`] passes; for proxy state, which has no
/// notification to wait on.
fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let end = deadline();
    while Instant::now() < end {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    cond()
}

// --- replication through faults, every driver -----------------------------------------------

const SEGMENT: u64 = 64 * MIB;
const HEARTBEAT: Duration = Duration::from_millis(100);
const HOUSEKEEPING: Duration = Duration::from_millis(800);
const BACKOFF_INITIAL: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(300);

/// Small timers: a silent peer is closed within a second, a failed dial retried within 300 ms.
fn timers() -> ConfigBuilder {
    Config::builder()
        .start_position(StartPosition::OldestRetained)
        .heartbeat_interval(HEARTBEAT)
        .housekeeping_interval(HOUSEKEEPING)
        .connect_timeout(Duration::from_secs(1))
        .reconnect_backoff_initial(BACKOFF_INITIAL)
        .reconnect_backoff_max(BACKOFF_MAX)
}

fn config() -> Config {
    timers().build().expect("valid test config")
}

/// A master and a slave of one transport with a [`FaultProxy`] between them. Dropping it
/// stops the slave, then the proxy, then the master (the fields' order).
struct Pair {
    slave: SlaveHandle<MemoryLog>,
    client: Running,
    proxy: FaultProxy,
    master: MasterHandle<MemoryLog>,
    server: Running,
}

impl Pair {
    /// A master holding `len` bytes, and a slave dialing it through a proxy.
    fn with(transport: Transport, len: u64) -> Pair {
        let mut log = MemoryLog::new(SEGMENT);
        log.push(pattern(0, len));
        let master = MasterHandle::new(log, config());
        let server = transport.spawn_master(loopback(), master.clone()).unwrap();
        let proxy = FaultProxy::start(server.local_addr().unwrap());
        let slave = SlaveHandle::new(proxy.addr(), MemoryLog::new(SEGMENT), config());
        let client = transport.spawn_slave(slave.clone()).unwrap();
        Pair {
            slave,
            client,
            proxy,
            master,
            server,
        }
    }

    /// Appends `len` bytes of the pattern at the master's end; returns the new end.
    fn grow(&self, len: u64) -> u64 {
        let at = self.master.log().max_offset();
        self.master.append(pattern(at, len)).unwrap()
    }

    /// Waits until the slave stores `end` and the master heard its ack, then checks the
    /// slave's bytes against the master's.
    fn assert_replicated(&self, end: u64) {
        let reached = self
            .slave
            .wait_until_blocking(deadline(), |s| s.log().max_offset() >= end);
        assert!(
            reached,
            "slave stopped at {} of {end}; status {:?}; errors {:?}",
            self.slave.log().max_offset(),
            self.slave.status(),
            self.slave.take_errors()
        );
        let theirs = self.slave.log().read().copy_range(0, end).unwrap();
        let ours = self.master.log().read().copy_range(0, end).unwrap();
        assert!(theirs == ours, "slave bytes differ from the master's");
        let acked = self
            .master
            .wait_until_blocking(deadline(), |m| m.ack_frontier() >= end);
        assert!(
            acked,
            "master heard acks up to {}",
            self.master.ack_frontier()
        );
    }

    /// Waits until the slave has recorded an error matching `wanted`.
    fn wait_for_slave_error(&self, wanted: impl Fn(&Error) -> bool) {
        let mut errors = Vec::new();
        let seen = self.slave.wait_until_blocking(deadline(), |s| {
            errors.extend(s.take_errors());
            errors.iter().any(&wanted)
        });
        assert!(seen, "status {:?}; errors {errors:?}", self.slave.status());
    }

    /// Waits until the master has closed a connection for a reason matching `wanted`.
    fn wait_for_master_close(&self, wanted: impl Fn(&Error) -> bool) {
        let mut closed = Vec::new();
        let seen = self.master.wait_until_blocking(deadline(), |m| {
            closed.extend(m.take_closed());
            closed.iter().filter_map(|c| c.error.as_ref()).any(&wanted)
        });
        assert!(seen, "closed connections: {closed:?}");
    }

    fn finish(self) {
        let Pair {
            slave,
            client,
            proxy,
            master,
            server,
        } = self;
        client.shutdown().unwrap();
        drop((slave, proxy));
        server.shutdown().unwrap();
        drop(master);
    }
}

fn is_slave_housekeeping(e: &Error) -> bool {
    matches!(e, Error::Client(ClientError::HousekeepingTimeout { .. }))
}

fn is_master_housekeeping(e: &Error) -> bool {
    matches!(e, Error::Master(MasterError::HousekeepingTimeout { .. }))
}

fn heartbeats_keep_an_idle_caught_up_connection_up(transport: Transport) {
    let pair = Pair::with(transport, MIB);
    pair.assert_replicated(MIB);
    // Three housekeeping intervals with nothing to send but heartbeats, both ways. Neither
    // side may give up on the other: waiting for a reconnect must time out.
    let before = [Dir::ToMaster, Dir::ToSlave].map(|dir| pair.proxy.forwarded(dir));
    let quiet = Instant::now() + 3 * HOUSEKEEPING;
    let restarted = pair.slave.wait_until_blocking(quiet, |s| {
        let status = s.status();
        !status.connected || status.connections > 1 || status.failures > 0
    });
    assert!(!restarted, "status {:?}", pair.slave.status());
    assert!(pair.slave.take_errors().is_empty());
    let closed = pair.master.take_closed();
    assert!(closed.is_empty(), "the master closed {closed:?}");
    assert_eq!(pair.master.slaves().len(), 1);
    assert_eq!(pair.proxy.accepted(), 1);
    // Heartbeats did flow both ways: 8-byte reports and 12-byte empty frames, at least one
    // per two heartbeat intervals (the machine is shared).
    let intervals = ((3 * HOUSEKEEPING).as_millis() / HEARTBEAT.as_millis()) as u64;
    let during = [Dir::ToMaster, Dir::ToSlave].map(|dir| pair.proxy.forwarded(dir));
    assert!(
        during[0] - before[0] >= 8 * intervals / 2,
        "{before:?} {during:?}"
    );
    assert!(
        during[1] - before[1] >= 12 * intervals / 2,
        "{before:?} {during:?}"
    );
    pair.finish();
}

fn a_black_hole_towards_the_slave_is_closed_by_slave_housekeeping(transport: Transport) {
    let pair = Pair::with(transport, 2 * MIB);
    pair.assert_replicated(2 * MIB);
    pair.proxy.black_hole(Dir::ToSlave);
    let end = pair.grow(MIB);
    // Frames and heartbeats vanish; the master still hears reports, so only the slave notices.
    pair.wait_for_slave_error(is_slave_housekeeping);
    assert!(pair.slave.log().max_offset() < end);
    pair.proxy.heal();
    pair.assert_replicated(end);
    assert!(pair.slave.status().connections >= 2);
    pair.finish();
}

fn a_black_hole_towards_the_master_is_closed_by_master_housekeeping(transport: Transport) {
    let pair = Pair::with(transport, 2 * MIB);
    pair.assert_replicated(2 * MIB);
    pair.proxy.black_hole(Dir::ToMaster);
    let end = pair.grow(MIB);
    // Reports vanish: the master closes the silent connection; its FIN reaches the slave.
    pair.wait_for_master_close(is_master_housekeeping);
    assert!(
        pair.master.ack_frontier() < end,
        "an ack passed the black hole"
    );
    pair.proxy.heal();
    pair.assert_replicated(end);
    assert!(pair.slave.status().connections >= 2);
    pair.finish();
}

/// A master with 8 MiB, sent to the slave through a 32 KiB / 5 ms trickle (about 6 MB/s), so
/// a cut after the first MiB lands mid-stream; `cut` runs then, the proxy heals, and the slave
/// must come back and end byte-identical.
fn cut_mid_transfer(transport: Transport, cut: impl FnOnce(&FaultProxy)) -> Pair {
    let end = 8 * MIB;
    let pair = Pair::with(transport, end);
    pair.proxy
        .trickle(Dir::ToSlave, 32 * 1024, Duration::from_millis(5));
    let started = pair
        .slave
        .wait_until_blocking(deadline(), |s| s.log().max_offset() >= MIB);
    assert!(started, "status {:?}", pair.slave.status());
    cut(&pair.proxy);
    assert!(pair.slave.log().max_offset() < end, "the cut came too late");
    pair.proxy.heal();
    pair.assert_replicated(end);
    assert!(pair.slave.status().connections >= 2);
    assert!(pair.proxy.accepted() >= 2);
    pair
}

fn a_reset_mid_transfer_is_survived_byte_identical(transport: Transport) {
    let pair = cut_mid_transfer(transport, FaultProxy::cut_rst);
    // An RST is an error on both sides, not an orderly close.
    assert!(pair.slave.status().failures >= 1);
    pair.wait_for_master_close(|e| matches!(e, Error::Io(_)));
    pair.finish();
}

fn a_clean_close_mid_transfer_is_survived_byte_identical(transport: Transport) {
    let pair = cut_mid_transfer(transport, FaultProxy::cut_fin);
    // A FIN is an orderly close: the slave reconnects without recording an error.
    let errors = pair.slave.take_errors();
    assert!(errors.is_empty(), "{errors:?}");
    pair.finish();
}

fn trickled_frames_and_delayed_reports_replicate_byte_identical(transport: Transport) {
    let pair = Pair::with(transport, MIB);
    // 4999 bytes at a time split headers and bodies at every possible place.
    pair.proxy
        .trickle(Dir::ToSlave, 4999, Duration::from_millis(1));
    pair.proxy.delay(Dir::ToMaster, Duration::from_millis(20));
    let mut end = MIB;
    for _ in 0..4 {
        end = pair.grow(256 * 1024);
    }
    pair.assert_replicated(end);
    assert_eq!(pair.slave.status().connections, 1);
    pair.finish();
}

fn delayed_frames_and_trickled_reports_replicate_byte_identical(transport: Transport) {
    let pair = Pair::with(transport, MIB);
    // 3 bytes at a time: every 8-byte report reaches the master in pieces.
    pair.proxy
        .trickle(Dir::ToMaster, 3, Duration::from_millis(1));
    pair.proxy.delay(Dir::ToSlave, Duration::from_millis(10));
    let mut end = MIB;
    for _ in 0..4 {
        end = pair.grow(256 * 1024);
    }
    pair.assert_replicated(end);
    assert_eq!(pair.slave.status().connections, 1);
    pair.finish();
}

/// The most dials a slave can make in `window` when every back-off delay is as short as the
/// jitter allows: half of `min(initial · 2ⁿ, max)` before dial n + 1.
fn most_dials_within(window: Duration, initial: Duration, max: Duration) -> u64 {
    let (mut dials, mut spent, mut factor) = (1, Duration::ZERO, 1u32);
    loop {
        spent += initial.saturating_mul(factor).min(max) / 2;
        if spent > window {
            return dials;
        }
        dials += 1;
        factor = factor.saturating_mul(2);
    }
}

fn back_off_bounds_redials_while_connections_are_refused(transport: Transport) {
    let mut log = MemoryLog::new(SEGMENT);
    log.push(pattern(0, MIB));
    let master = MasterHandle::new(log, config());
    let server = transport.spawn_master(loopback(), master.clone()).unwrap();
    let proxy = FaultProxy::start(server.local_addr().unwrap());
    // Every dial connects and is reset at once, before a frame: nothing resets the back-off.
    proxy.refuse_new(true);
    let slave = SlaveHandle::new(proxy.addr(), MemoryLog::new(SEGMENT), config());
    let started = Instant::now();
    let client = transport.spawn_slave(slave.clone()).unwrap();
    // The window of the experiment, not an assertion: redials happen on the slave's own timer.
    thread::sleep(Duration::from_secs(1));
    let failures = slave.status().failures;
    let window = started.elapsed();
    let most = most_dials_within(window, BACKOFF_INITIAL, BACKOFF_MAX);
    assert!(
        (3..=most).contains(&failures),
        "{failures} failed dials in {window:?}; back-off allows 3..={most}"
    );
    assert!(proxy.refused() <= most);
    proxy.refuse_new(false);
    // Back in at most one maximal back-off, then it catches up.
    let connected = slave.wait_until_blocking(deadline(), |s| s.log().max_offset() >= MIB);
    assert!(connected, "status {:?}", slave.status());
    client.shutdown().unwrap();
    drop(proxy);
    server.shutdown().unwrap();
}

fn a_dial_to_a_hanging_listener_fails_at_the_connect_timeout(transport: Transport) {
    let hanging = hanging_listener();
    let connect_timeout = Duration::from_millis(300);
    let config = timers()
        .connect_timeout(connect_timeout)
        .reconnect_backoff_max(Duration::from_millis(50))
        .build()
        .unwrap();
    let slave = SlaveHandle::new(hanging.addr(), MemoryLog::new(SEGMENT), config);
    let started = Instant::now();
    let client = transport.spawn_slave(slave.clone()).unwrap();
    let mut errors = Vec::new();
    let failed = slave.wait_until_blocking(deadline(), |s| {
        errors.extend(s.take_errors());
        errors.len() >= 3
    });
    let took = started.elapsed();
    assert!(failed, "status {:?}; errors {errors:?}", slave.status());
    // Three dials, each given up at the timeout: not sooner (they did hang), not much later.
    assert!(took >= 3 * connect_timeout, "{took:?}");
    assert!(
        took < 3 * (connect_timeout + Duration::from_millis(500)),
        "{took:?}"
    );
    assert!(
        errors.iter().all(
            |e| matches!(e, Error::ConnectTimeout { after, .. } if *after == connect_timeout)
                && e.to_string().contains("timed out")
        ),
        "{errors:?}"
    );
    assert_eq!(slave.status().connections, 0);
    client.shutdown().unwrap();
}

macro_rules! suite {
    ($($driver:ident => $transport:expr;)*) => {$(
        mod $driver {
            use super::*;

            #[test]
            fn heartbeats_keep_an_idle_caught_up_connection_up() {
                super::heartbeats_keep_an_idle_caught_up_connection_up($transport);
            }

            #[test]
            fn a_black_hole_towards_the_slave_is_closed_by_slave_housekeeping() {
                super::a_black_hole_towards_the_slave_is_closed_by_slave_housekeeping(
                    $transport,
                );
            }

            #[test]
            fn a_black_hole_towards_the_master_is_closed_by_master_housekeeping() {
                super::a_black_hole_towards_the_master_is_closed_by_master_housekeeping(
                    $transport,
                );
            }

            #[test]
            fn a_reset_mid_transfer_is_survived_byte_identical() {
                super::a_reset_mid_transfer_is_survived_byte_identical($transport);
            }

            #[test]
            fn a_clean_close_mid_transfer_is_survived_byte_identical() {
                super::a_clean_close_mid_transfer_is_survived_byte_identical($transport);
            }

            #[test]
            fn trickled_frames_and_delayed_reports_replicate_byte_identical() {
                super::trickled_frames_and_delayed_reports_replicate_byte_identical($transport);
            }

            #[test]
            fn delayed_frames_and_trickled_reports_replicate_byte_identical() {
                super::delayed_frames_and_trickled_reports_replicate_byte_identical($transport);
            }

            #[test]
            fn back_off_bounds_redials_while_connections_are_refused() {
                super::back_off_bounds_redials_while_connections_are_refused($transport);
            }

            #[test]
            fn a_dial_to_a_hanging_listener_fails_at_the_connect_timeout() {
                super::a_dial_to_a_hanging_listener_fails_at_the_connect_timeout($transport);
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
