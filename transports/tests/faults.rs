//! Timers over real sockets, once per driver (see `suite!` at the bottom): heartbeats,
//! housekeeping, reconnect back-off and the connect deadline, with network faults injected by
//! the loopback [`FaultProxy`] between slave and master. The proxy's own tests come first.
//!
//! Timers are small (heartbeat 100 ms, housekeeping 800 ms, back-off 20-300 ms) so a fault is
//! noticed within a second, and every wait is on a condition with a deadline: a failure fails,
//! it does not hang.

mod proxy;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use proxy::{hanging_listener, Dir, FaultProxy};

const MIB: u64 = 1024 * 1024;
/// Generous: the machine is shared, and a hung test should fail, not stall CI.
const PATIENCE: Duration = Duration::from_secs(20);

fn deadline() -> Instant {
    Instant::now() + PATIENCE
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Deterministic, offset-dependent bytes, so a misplaced byte is caught by comparison.
fn pattern(start: u64, len: u64) -> Vec<u8> {
    (start..start + len)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect()
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
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => false,
        Err(e) => panic!("reading: {e}"),
    };
    from.set_read_timeout(Some(PATIENCE)).unwrap();
    arrived
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
    assert_eq!(proxy.forwarded(Dir::ToMaster), 3 * MIB);
    assert_eq!(proxy.forwarded(Dir::ToSlave), 2 * MIB);
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
    (&server).write_all(b"down").unwrap();
    assert_eq!(read_exactly(&client_blocking(&client), 4), b"down");

    proxy.resume(Dir::ToMaster);
    let got = read_exactly(&server, sent as usize);
    let expected: Vec<u8> = (0..sent)
        .step_by(64 * 1024)
        .flat_map(|at| pattern(at, 64 * 1024))
        .take(sent as usize)
        .collect();
    assert!(got == expected, "bytes held by the stall came out changed");
}

/// `stream` switched back to blocking reads and writes.
fn client_blocking(stream: &TcpStream) -> &TcpStream {
    stream.set_nonblocking(false).unwrap();
    stream
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
        assert!((1..=3).contains(&n), "a read of {n} bytes through a 3-byte trickle");
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
    assert!(cut.elapsed() < Duration::from_secs(1), "{:?}", cut.elapsed());
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
    assert!(cut.elapsed() < Duration::from_secs(1), "{:?}", cut.elapsed());
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
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // And every peer sees its connection closed (an EOF, or a reset where the proxy left
    // bytes unread), not a read that times out.
    for end in pairs.iter().flat_map(|(client, server)| [client, server]) {
        let closed = read_until_closed(end);
        assert!(
            !matches!(&closed, Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)),
            "{closed:?}"
        );
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
