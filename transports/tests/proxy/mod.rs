//! A loopback TCP proxy that puts network faults between a slave and its master, for tests over
//! real sockets (`mod proxy;` in a test file).
//!
//! [`FaultProxy::start`] listens on 127.0.0.1 and, for each client it accepts, dials the target
//! and pumps bytes both ways on plain threads (std only). Faults are set per direction at any
//! time and apply to live and future connections:
//!
//! | fault | effect |
//! |---|---|
//! | [`stall`](FaultProxy::stall) / [`resume`](FaultProxy::resume) | stop reading from the sender, so TCP back-pressure builds up on it |
//! | [`delay`](FaultProxy::delay) | hold each chunk that long before forwarding it |
//! | [`trickle`](FaultProxy::trickle) | forward at most N bytes, then pause |
//! | [`black_hole`](FaultProxy::black_hole) | keep reading, drop the bytes; the connection stays open |
//! | [`cut_rst`](FaultProxy::cut_rst) / [`cut_fin`](FaultProxy::cut_fin) | reset / cleanly close every live connection, both sides |
//! | [`refuse_new`](FaultProxy::refuse_new) | reset accepted clients at once instead of forwarding |
//! | [`heal`](FaultProxy::heal) | clear all of the above |
//!
//! The proxy never panics on I/O errors (a failed connection is closed, that is all), and
//! dropping it ends every one of its threads: it closes all sockets, wakes every waiting pump
//! and joins them.
//!
//! Two listeners complete the kit: [`hanging_listener`], an address where `connect` hangs, and
//! [`narrow_listener`], whose accepted sockets make a peer's writes block soon once they are no
//! longer read.

// Each test file uses a different part of the module.
#![allow(dead_code)]

use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};

/// A direction through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client to target: the slave's reports.
    ToMaster,
    /// Target to client: the master's frames.
    ToSlave,
}

impl Dir {
    fn index(self) -> usize {
        self as usize
    }
}

/// The faults of one direction.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    stalled: bool,
    black_hole: bool,
    delay: Option<Duration>,
    /// At most this many bytes per write, then this pause.
    trickle: Option<(usize, Duration)>,
}

/// What the test sets and the pumps wait on, behind one mutex with one condvar.
#[derive(Default)]
struct State {
    faults: [Faults; 2],
    refuse_new: bool,
    /// The proxy is being dropped.
    closing: bool,
    /// Live connections (the pumps hold the only strong references, so a connection whose
    /// pumps ended closes its sockets).
    conns: Vec<Weak<Conn>>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    state: Mutex<State>,
    changed: Condvar,
    accepted: AtomicU64,
    refused: AtomicU64,
    forwarded: [AtomicU64; 2],
}

/// How a connection was cut, if it was.
const LIVE: u8 = 0;
const CUT_RST: u8 = 1;
const CUT_FIN: u8 = 2;

/// One proxied connection: the accepted client socket and the socket dialed to the target.
struct Conn {
    client: TcpStream,
    target: TcpStream,
    cut: AtomicU8,
}

impl Conn {
    /// (source, destination) of `dir`.
    fn ends(&self, dir: Dir) -> (&TcpStream, &TcpStream) {
        match dir {
            Dir::ToMaster => (&self.client, &self.target),
            Dir::ToSlave => (&self.target, &self.client),
        }
    }

    fn cut(&self) -> u8 {
        self.cut.load(Ordering::SeqCst)
    }

    /// Closes both sockets for reading and writing: wakes every pump blocked on them.
    fn shut_down(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.target.shutdown(Shutdown::Both);
    }
}

/// How long a blocked write waits before looking at the cut and closing flags again: a pump
/// writing to a peer that does not read must still notice them.
const WRITE_POLL: Duration = Duration::from_millis(50);
/// How long a connection thread waits for the target to accept.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// A fault-injecting TCP proxy on 127.0.0.1; see the module documentation.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy to `target`, listening on 127.0.0.1 on a free port.
    pub fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy's listener");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            target,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            forwarded: [AtomicU64::new(0), AtomicU64::new(0)],
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("proxy-accept".into())
                .spawn(move || accept_loop(&shared, listener))
                .expect("spawn the proxy's acceptor")
        };
        FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Client connections accepted so far (refused ones included).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Client connections reset at once because of [`refuse_new`](Self::refuse_new).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Bytes forwarded in `dir` so far (black-holed bytes are not forwarded).
    pub fn forwarded(&self, dir: Dir) -> u64 {
        self.shared.forwarded[dir.index()].load(Ordering::SeqCst)
    }

    /// Connections whose pumps are still running.
    pub fn live_connections(&self) -> usize {
        let mut state = self.shared.lock();
        state.conns.retain(|c| c.strong_count() > 0);
        state.conns.len()
    }

    /// Stops reading from the sender of `dir` (a chunk already read is held back too).
    pub fn stall(&self, dir: Dir) {
        self.shared.set(|s| s.faults[dir.index()].stalled = true);
    }

    /// Undoes [`stall`](Self::stall).
    pub fn resume(&self, dir: Dir) {
        self.shared.set(|s| s.faults[dir.index()].stalled = false);
    }

    /// Holds each chunk read in `dir` for `delay` before forwarding it.
    pub fn delay(&self, dir: Dir, delay: Duration) {
        self.shared
            .set(|s| s.faults[dir.index()].delay = Some(delay));
    }

    /// Forwards at most `bytes_per_chunk` bytes in `dir`, then pauses for `pause`.
    pub fn trickle(&self, dir: Dir, bytes_per_chunk: usize, pause: Duration) {
        assert!(bytes_per_chunk > 0, "a trickle forwards at least one byte");
        self.shared
            .set(|s| s.faults[dir.index()].trickle = Some((bytes_per_chunk, pause)));
    }

    /// Keeps reading in `dir` but drops the bytes; the connection stays open.
    pub fn black_hole(&self, dir: Dir) {
        self.shared.set(|s| s.faults[dir.index()].black_hole = true);
    }

    /// Accepted clients are reset at once (`true`) or forwarded again (`false`).
    pub fn refuse_new(&self, refuse: bool) {
        self.shared.set(|s| s.refuse_new = refuse);
    }

    /// Clears every fault (live connections continue, stalled ones resume).
    pub fn heal(&self) {
        self.shared.set(|s| {
            s.faults = Default::default();
            s.refuse_new = false;
        });
    }

    /// Resets every live connection on both sides: `SO_LINGER` 0, then close, so both peers
    /// get an RST (`ECONNRESET`) rather than an EOF.
    pub fn cut_rst(&self) {
        self.cut(CUT_RST, |conn| {
            for socket in [&conn.client, &conn.target] {
                let _ = SockRef::from(socket).set_linger(Some(Duration::ZERO));
                // Wakes a pump blocked in `read` without sending anything; the close happens
                // when the pumps drop the connection, and the zero linger makes it an RST.
                let _ = socket.shutdown(Shutdown::Read);
            }
        });
    }

    /// Closes every live connection cleanly on both sides: a FIN to each peer, then the pumps
    /// read (and drop) what the peers still send until they close too.
    pub fn cut_fin(&self) {
        self.cut(CUT_FIN, |conn| {
            let _ = conn.client.shutdown(Shutdown::Write);
            let _ = conn.target.shutdown(Shutdown::Write);
        });
    }

    fn cut(&self, how: u8, close: impl Fn(&Conn)) {
        let conns: Vec<Arc<Conn>> = {
            let state = self.shared.lock();
            let conns: Vec<_> = state.conns.iter().filter_map(Weak::upgrade).collect();
            // Set under the lock the pumps wait with, so none misses it.
            for conn in &conns {
                let _ = conn
                    .cut
                    .compare_exchange(LIVE, how, Ordering::SeqCst, Ordering::SeqCst);
            }
            self.shared.changed.notify_all();
            conns
        };
        for conn in &conns {
            close(conn);
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let conns: Vec<Arc<Conn>> = {
            let mut state = self.shared.lock();
            state.closing = true;
            self.shared.changed.notify_all();
            state.conns.iter().filter_map(Weak::upgrade).collect()
        };
        // Every blocked read and write returns; every waiting pump sees `closing`.
        for conn in &conns {
            conn.shut_down();
        }
        drop(conns);
        // Wake the acceptor's blocking `accept`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // Connection threads register pumps while they start; join until none is left (no
        // new ones start once `closing` is set, and each ends within `DIAL_TIMEOUT`).
        loop {
            let threads = std::mem::take(&mut self.shared.lock().threads);
            if threads.is_empty() {
                break;
            }
            for thread in threads {
                let _ = thread.join();
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }

    /// Spawns a proxy thread and keeps its handle for the drop to join; `None` once closing.
    fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> Option<()> {
        let mut state = self.lock();
        if state.closing {
            return None;
        }
        state.threads.retain(|t| !t.is_finished());
        let thread = thread::Builder::new().name(name.into()).spawn(f).ok()?;
        state.threads.push(thread);
        Some(())
    }

    /// Waits until `dir` is not stalled and returns its faults; `None` when the connection
    /// was cut or the proxy is closing.
    fn wait_unstalled(&self, conn: &Conn, dir: Dir) -> Option<Faults> {
        let mut state = self.lock();
        loop {
            if state.closing || conn.cut() != LIVE {
                return None;
            }
            let faults = state.faults[dir.index()];
            if !faults.stalled {
                return Some(faults);
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Sleeps until `until`; `false` if the connection was cut or the proxy is closing first.
    fn sleep_until(&self, conn: &Conn, until: Instant) -> bool {
        let mut state = self.lock();
        loop {
            if state.closing || conn.cut() != LIVE {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            state = self
                .changed
                .wait_timeout(state, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn is_live(&self, conn: &Conn) -> bool {
        conn.cut() == LIVE && !self.lock().closing
    }
}

/// A listener for a peer that stops reading, made so that the other side's writes block after
/// a few hundred KB of 8-byte reports rather than megabytes (for write-stall tests).
///
/// Linux sizes a connection's send buffer as 3 × max(cwnd, reordering + 1) segments of about
/// 1.3 KB per 88 bytes of MSS, which is about 4 MB on loopback's 64 KB MSS. So this listener
/// (its accepted sockets inherit the options)
/// * advertises the smallest MSS, 88 bytes: a segment then costs about 1.3 KB, not 128 KB;
/// * has the smallest receive buffer, about 2 KB: its window closes after some 1152 bytes, so
///   the dialer's congestion window grows only to about 10 + 1152 / 8 segments;
/// * listens on a random address in 127/8 (all loopback on Linux) rather than 127.0.0.1: the
///   kernel caches TCP metrics per destination, and a reordering of 300 cached for 127.0.0.1
///   (seen on the machine this was written on) would make that 300 segments from the start.
///
/// Measured on Linux 6.18: a slave reporting into it blocks after 231 KB of reports.
pub fn narrow_listener() -> TcpListener {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    // Linux raises these to its minimums (about 2 KB and 88 bytes).
    socket.set_recv_buffer_size(1).expect("SO_RCVBUF");
    socket.set_tcp_mss(88).expect("TCP_MAXSEG");
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    let [a, b, c, ..] = random.to_le_bytes();
    // 127.1.0.1 ..= 127.254.255.254
    let ip = [127, a % 254 + 1, b, c % 254 + 1];
    socket
        .bind(&SocketAddr::from((ip, 0)).into())
        .expect("bind an address in 127/8");
    socket.listen(128).expect("listen");
    socket.into()
}

fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = listener.accept();
        if shared.lock().closing {
            return;
        }
        let Ok((client, _)) = accepted else {
            // Momentary (a client that reset before accept); do not spin on a persistent one.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.lock().refuse_new {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            reset(&client);
            continue;
        }
        let for_thread = Arc::clone(shared);
        let spawned = shared.spawn("proxy-conn", move || connect(&for_thread, client));
        if spawned.is_none() {
            return;
        }
    }
}

/// Closes `socket` with an RST.
fn reset(socket: &TcpStream) {
    let _ = SockRef::from(socket).set_linger(Some(Duration::ZERO));
}

/// A connection thread: dials the target, then pumps target to client itself and client to
/// target on a second thread.
fn connect(shared: &Arc<Shared>, client: TcpStream) {
    let Ok(target) = TcpStream::connect_timeout(&shared.target, DIAL_TIMEOUT) else {
        // The target is down: the client sees its connection reset.
        reset(&client);
        return;
    };
    for socket in [&client, &target] {
        // Reports and heartbeats are tiny: no Nagle delay on top of the faults.
        let _ = socket.set_nodelay(true);
        let _ = socket.set_write_timeout(Some(WRITE_POLL));
    }
    let conn = Arc::new(Conn {
        client,
        target,
        cut: AtomicU8::new(LIVE),
    });
    {
        // Registered under the lock the drop sets `closing` with: a connection is either
        // registered before the drop's sweep (and closed by it) or not started at all.
        let mut state = shared.lock();
        if state.closing {
            return;
        }
        state.conns.retain(|c| c.strong_count() > 0);
        state.conns.push(Arc::downgrade(&conn));
    }
    let (for_thread, shared_for_thread) = (Arc::clone(&conn), Arc::clone(shared));
    let spawned = shared.spawn("proxy-to-master", move || {
        pump(&shared_for_thread, &for_thread, Dir::ToMaster)
    });
    if spawned.is_none() {
        return;
    }
    pump(shared, &conn, Dir::ToSlave);
}

/// Copies one direction of `conn`, applying its faults, until EOF, an error or a cut.
fn pump(shared: &Shared, conn: &Conn, dir: Dir) {
    let (from, to) = conn.ends(dir);
    let mut buf = vec![0u8; 64 * 1024];
    let ended = loop {
        // Stalled: do not read at all, so the sender's window closes.
        let Some(faults) = shared.wait_unstalled(conn, dir) else {
            break End::Cut;
        };
        let max = faults.trickle.map_or(buf.len(), |(n, _)| n.min(buf.len()));
        let n = match (&*from).read(&mut buf[..max]) {
            Ok(0) => break End::Eof,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break End::Error,
        };
        let read_at = Instant::now();
        // Faults set while the read was blocked apply to what it read: a stall holds it back.
        let Some(faults) = shared.wait_unstalled(conn, dir) else {
            break End::Cut;
        };
        if faults.black_hole {
            continue;
        }
        if let Some(delay) = faults.delay {
            if !shared.sleep_until(conn, read_at + delay) {
                break End::Cut;
            }
        }
        let piece = faults.trickle.map_or(n, |(bytes, _)| bytes);
        let forwarded = buf[..n].chunks(piece).try_for_each(|chunk| {
            write_all(shared, conn, to, chunk, dir)?;
            match faults.trickle {
                Some((_, pause)) if !shared.sleep_until(conn, Instant::now() + pause) => {
                    Err(End::Cut)
                }
                _ => Ok(()),
            }
        });
        if let Err(end) = forwarded {
            break end;
        }
    };
    // A read that returned because of a cut (EOF after `cut_rst`'s read shutdown, or the
    // peer's answer to `cut_fin`'s FIN) is the cut, not the peer's doing.
    let ended = if conn.cut() != LIVE { End::Cut } else { ended };
    match ended {
        // Pass the half-close on; the other direction keeps going until its own end.
        End::Eof => {
            let _ = to.shutdown(Shutdown::Write);
        }
        // Take the whole connection down, so the other pump ends too.
        End::Error => conn.shut_down(),
        End::Cut if conn.cut() == CUT_FIN => {
            // Both peers got a FIN; read (and drop) what they still send until they close,
            // so closing our sockets afterwards does not turn into an RST.
            while matches!((&*from).read(&mut buf), Ok(n) if n > 0) {}
        }
        // Reset: return, dropping our reference; the last one closes with linger 0. Closing
        // (the proxy's drop): the sockets are already shut down.
        End::Cut => {}
    }
}

enum End {
    Eof,
    Error,
    Cut,
}

/// Writes `bytes` to `to`, counting them; a write blocked by a peer that does not read checks
/// for a cut or the proxy's drop every [`WRITE_POLL`].
fn write_all(
    shared: &Shared,
    conn: &Conn,
    to: &TcpStream,
    mut bytes: &[u8],
    dir: Dir,
) -> Result<(), End> {
    while !bytes.is_empty() {
        match (&*to).write(bytes) {
            Ok(0) => return Err(End::Error),
            Ok(n) => {
                bytes = &bytes[n..];
                shared.forwarded[dir.index()].fetch_add(n as u64, Ordering::SeqCst);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if !shared.is_live(conn) {
                    return Err(End::Cut);
                }
            }
            Err(_) => return Err(End::Error),
        }
    }
    Ok(())
}

/// A loopback address where `connect` hangs: see [`hanging_listener`].
pub struct HangingListener {
    addr: SocketAddr,
    _listener: Socket,
    /// The connections filling the accept queue; kept open so it stays full.
    _queued: Vec<TcpStream>,
}

impl HangingListener {
    /// The address to dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A listener on 127.0.0.1 that is never accepted from, with backlog 0 and its accept queue
/// already full, so Linux drops the SYN of any further dial and that `connect` hangs (until
/// its caller's timeout) instead of failing fast. Loopback only.
///
/// The queue is filled by dialing until a dial does time out, so the trick is verified rather
/// than assumed; if it never fills (another kernel), this panics and says so.
pub fn hanging_listener() -> HangingListener {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind 127.0.0.1:0");
    socket.listen(0).expect("listen with backlog 0");
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("the listener's address");
    let mut queued = Vec::new();
    for _ in 0..4 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => queued.push(stream),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return HangingListener {
                    addr,
                    _listener: socket,
                    _queued: queued,
                };
            }
            Err(e) => panic!("filling the accept queue of {addr}: {e}"),
        }
    }
    panic!(
        "{} dials to a backlog-0 listener all connected: this kernel does not drop SYNs on a \
         full accept queue, so hanging_listener cannot work here",
        queued.len()
    );
}
