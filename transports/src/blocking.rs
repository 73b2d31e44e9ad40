//! The blocking driver: std [`TcpListener`] / [`TcpStream`] and threads, the read timeout set to
//! the machine's next deadline.
//!
//! * [`serve`] runs a master on the calling thread: an accept loop plus, per connection, a reader
//!   thread (reports in, timeouts) and a writer thread (frames out, sleeping on log growth), the
//!   two sharing the connection's machine behind a mutex — Java's `HAConnection` split, because
//!   a blocked `write` must not stop acks from being read. A producer appending through
//!   [`MasterHandle::append`] writes the new frame itself when the writer is idle and the
//!   socket takes it at once, sparing the writer's wake-up on a sync put; the writer sends
//!   large bodies from their segment files (`sendfile`) when the log says where they lie.
//! * [`run_slave`] runs a slave on the calling thread.
//!
//! Both return once their handle is shut down; shutdown closes the sockets, which is what wakes
//! a thread blocked in `read`, `write` or `accept`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Buf;
use event_listener::Listener;
use rocketmq_ha::{LogSink, LogSource};
use rustix::io::Errno;
use rustix::net::SendFlags;

use crate::frame_write::{self, Step};
use crate::shared::{
    read_timeout, Accepted, ConnectionGuard, DirectWrite, SharedLoop, SlaveDriver,
};
use crate::{Error, MasterHandle, SharedLog, SlaveHandle};

/// Serves slaves on `listener` until `master` is shut down, one pair of threads per connection;
/// returns after every connection thread has finished. A master with TLS is refused
/// ([`io::ErrorKind::Unsupported`]): this driver speaks plain TCP only.
pub fn serve<L>(listener: TcpListener, master: MasterHandle<L>) -> io::Result<()>
where
    L: LogSource + Send + Sync + 'static,
{
    if master.is_tls() {
        return Err(crate::transport::no_tls(crate::Transport::Blocking));
    }
    master.stop().register_wake(listener.local_addr()?);
    let mut connections: Vec<thread::JoinHandle<()>> = Vec::new();
    while !master.is_shut_down() {
        match listener.accept() {
            Ok((stream, peer)) => {
                let conn = match master.register_accepted(peer) {
                    Accepted::Serve(conn) => conn,
                    // Dropping the stream closes it before a byte is read.
                    Accepted::Refuse => continue,
                    Accepted::ShutDown => break,
                };
                connections.retain(|t| !t.is_finished());
                let spawned = thread::Builder::new()
                    .name(format!("ha-master-{peer}"))
                    .spawn(move || serve_connection(conn, stream));
                connections.extend(spawned.ok());
            }
            // Accept errors are about one connection or momentary; pause briefly so a
            // persistent one (out of descriptors) cannot spin.
            Err(_) => master
                .stop()
                .sleep_blocking(Some(Instant::now() + Duration::from_millis(50))),
        }
    }
    for connection in connections {
        let _ = connection.join();
    }
    Ok(())
}

/// One accepted connection, shared by its reader and writer threads and, through
/// [`DirectWrite`], by producers appending to the log.
struct Connection<L> {
    conn: ConnectionGuard<L>,
    machine: Mutex<SharedLoop>,
    stream: TcpStream,
    /// Set when either thread ends: the other stops too.
    done: AtomicBool,
}

impl<L: LogSource> Connection<L> {
    /// Locks the connection's loop (a panicking peer thread leaves it consistent: every method
    /// call is atomic under the lock).
    fn lock(&self) -> std::sync::MutexGuard<'_, SharedLoop> {
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the connection: records the error, and makes the other side end too: the reader
    /// through the closed socket, the writer through the flag and a wake-up.
    fn finish(&self, result: Result<(), Error>) {
        if let Err(e) = result {
            self.conn.fail(e);
        }
        self.done.store(true, Ordering::SeqCst);
        let _ = self.stream.shutdown(Shutdown::Both);
        self.conn.master().log().notify();
    }
}

impl<L: LogSource + Send + Sync> DirectWrite<L> for Connection<L> {
    /// Writes with one non-blocking `sendmsg` ([`frame_write::send_now`]); the writer
    /// thread, woken after, sends what the socket did not take.
    fn write_now(&self, log: &SharedLog<L>) -> bool {
        if self.done.load(Ordering::SeqCst) {
            return false;
        }
        let result = self.conn.write_directly(&mut self.lock(), log, |slices| {
            frame_write::send_now(&self.stream, slices)
        });
        match result {
            Ok(wake) => wake,
            Err(e) => {
                self.finish(Err(e));
                false
            }
        }
    }
}

fn serve_connection<L: LogSource + Send + Sync + 'static>(
    conn: ConnectionGuard<L>,
    stream: TcpStream,
) {
    let master = conn.master().clone();
    let stop = master.stop();
    let Ok(key) = stop.register(&stream) else {
        return;
    };
    match crate::shared::tune_master_socket(&stream) {
        Ok(()) => {
            let connection = Arc::new(Connection {
                machine: Mutex::new(SharedLoop::new(conn.machine())),
                conn,
                stream,
                done: AtomicBool::new(false),
            });
            let c = &*connection;
            let direct: Weak<Connection<L>> = Arc::downgrade(&connection);
            c.conn.allow_direct_writes(direct);
            thread::scope(|s| {
                s.spawn(|| c.finish(writer(c)));
                c.finish(reader(c));
            });
            // No producer writes to the connection after this (one that still holds it drops
            // it, and with it the guard, in a moment).
            c.conn.stop_direct_writes();
        }
        Err(e) => conn.fail(e.into()),
    }
    stop.unregister(key);
}

/// The reading side: reports in, deadlines (including the writer's stall limit: closing the
/// socket is what frees a writer blocked in `write`), events to the service.
fn reader<L: LogSource>(c: &Connection<L>) -> Result<(), Error> {
    let (conn, mut stream) = (&c.conn, &c.stream);
    let log = conn.master().log();
    let mut reports = [0u8; 1024];
    while !c.done.load(Ordering::SeqCst) {
        let deadline = {
            // Deadlines first, every turn: a slave that floods reports keeps `read` from ever
            // timing out.
            let m = &mut c.lock().lp;
            let now = Instant::now();
            if m.poll_timeout().is_some_and(|d| d <= now) {
                m.handle_timeout(now)?;
            }
            m.poll_timeout()
        };
        stream.set_read_timeout(read_timeout(deadline))?;
        let read = stream.read(&mut reports);
        let mut guard = c.lock();
        let m = &mut guard.lp;
        match read {
            Ok(0) => return Ok(()),
            Ok(n) => {
                let stage = m.stage();
                m.handle_read(Instant::now(), &reports[..n], &*log.read())?;
                conn.forward(m);
                // The handshake and the first report are the only inputs that give the writer
                // work.
                if m.stage() > stage {
                    log.notify();
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                m.handle_timeout(Instant::now())?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The writing side: one frame at a time, each write reported to the loop, then sleep on log
/// growth until the loop's next deadline.
fn writer<L: LogSource>(c: &Connection<L>) -> Result<(), Error> {
    let (conn, mut stream) = (&c.conn, &c.stream);
    let log = conn.master().log();
    // The frame is cloned out of the loop (a reference count, not the bytes) so the lock is
    // not held while the socket blocks; `writing` keeps producers off it meanwhile.
    let poll = || -> Result<_, Error> {
        let mut m = c.lock();
        let SharedLoop {
            lp,
            writing,
            rate_seen,
        } = &mut *m;
        conn.apply_rate_limit(lp, rate_seen);
        let transmit = lp.poll_write(Instant::now(), &*log.read())?;
        *writing = transmit.is_some();
        Ok((transmit, lp.poll_timeout()))
    };
    while !c.done.load(Ordering::SeqCst) && !conn.master().is_shut_down() {
        let mut transmit = poll()?.0;
        if transmit.is_none() {
            // Listen, then look again: growth between the two wakes the listener.
            let listener = log.listen_as_driver();
            // The reader sets `done` before its wake-up: seen here, or the listener hears it.
            // Without this, a writer that woke at the same deadline as the reader closed the
            // machine (the first report's, housekeeping) could miss the wake-up and wait for
            // ever, the connection never unregistered.
            if c.done.load(Ordering::SeqCst) {
                break;
            }
            let deadline;
            (transmit, deadline) = poll()?;
            if transmit.is_none() {
                match deadline {
                    Some(deadline) => drop(listener.wait_deadline(deadline)),
                    None => listener.wait(),
                }
                continue;
            }
        }
        if let Some(mut transmit) = transmit {
            while transmit.has_remaining() {
                // A std `TcpStream` is plain TCP: the body may go from its file.
                let from_files = conn.master().send_from_files();
                let wrote = match frame_write::next_step(&transmit, from_files) {
                    Step::Copy(slices, n) => stream.write_vectored(&slices[..n]),
                    Step::File(step) => step.run(stream),
                };
                match wrote {
                    Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                    Ok(written) => {
                        transmit.advance(written);
                        let mut m = c.lock();
                        m.writing = transmit.has_remaining();
                        m.lp.handle_written(Instant::now(), written)?;
                        conn.forward(&mut m.lp);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}

/// How often a slave retries a report the socket would not take, between reads: only while
/// the master is not reading, which the loop's stall limit ends.
const REPORT_RETRY: Duration = Duration::from_millis(10);

/// Runs a slave on the calling thread until `slave` is shut down. A slave with TLS returns at
/// once with an error logged: this driver speaks plain TCP only ([`Transport::spawn_slave`]
/// refuses it beforehand).
///
/// [`Transport::spawn_slave`]: crate::Transport::spawn_slave
pub fn run_slave<L: LogSink>(slave: SlaveHandle<L>) {
    if slave.is_tls() {
        tracing::error!("{}", crate::transport::no_tls(crate::Transport::Blocking));
        return;
    }
    let mut driver = SlaveDriver::new(slave.clone());
    let stop = slave.stop();
    while !stop.is_set() {
        if !driver.poll_dial() {
            stop.sleep_blocking(driver.deadline());
            driver.on_timeout();
            continue;
        }
        // The loop's deadline is the dial's: the machine gives up on it then. A host name is
        // resolved again at each dial (the system resolver's own time limits apply to that
        // step).
        let deadline = driver.deadline();
        let dialed = driver
            .dial_addresses_blocking()
            .and_then(|addrs| dial_first(&mut driver, &addrs, deadline).map_err(Error::from));
        match dialed {
            Ok(stream) => {
                let Ok(key) = stop.register(&stream) else {
                    break;
                };
                driver.connected();
                slave_connection(&mut driver, &stream);
                stop.unregister(key);
            }
            Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => driver.on_timeout(),
            Err(e) => driver.connect_failed(e),
        }
    }
}

/// Connects to the first of `addrs` that answers before `deadline`; the last error otherwise.
fn dial_first<L: LogSink>(
    driver: &mut SlaveDriver<L>,
    addrs: &[SocketAddr],
    deadline: Option<Instant>,
) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to dial");
    for &addr in addrs {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        driver.dialing(addr);
        match TcpStream::connect_timeout(&addr, read_timeout(deadline).unwrap_or(Duration::MAX)) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// One connection on one thread: reports go out with non-blocking sends, so a master that
/// stops reading never blocks the reads and timers that the stall limit and housekeeping
/// need.
fn slave_connection<L: LogSink>(driver: &mut SlaveDriver<L>, mut stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        return driver.closed(Some(e.into()));
    }
    while driver.is_connected() {
        // Every turn, not only when a read times out: a master that keeps the socket readable
        // must not hold off the write-stall limit or housekeeping.
        driver.on_due();
        if !driver.is_connected() {
            return;
        }
        let mut write_blocked = false;
        if let Some(report) = driver.poll_write() {
            match rustix::net::send(stream, report.as_bytes(), SendFlags::DONTWAIT) {
                Ok(0) => {
                    return driver.closed(Some(io::Error::from(io::ErrorKind::WriteZero).into()))
                }
                Ok(n) => {
                    driver.wrote(n);
                    continue;
                }
                Err(Errno::AGAIN) => write_blocked = true,
                Err(Errno::INTR) => continue,
                Err(e) => return driver.closed(Some(io::Error::from(e).into())),
            }
        }
        let mut deadline = driver.deadline();
        if write_blocked {
            let retry = Instant::now() + REPORT_RETRY;
            deadline = Some(deadline.map_or(retry, |d| d.min(retry)));
        }
        if let Err(e) = stream.set_read_timeout(read_timeout(deadline)) {
            return driver.closed(Some(e.into()));
        }
        match stream.read(driver.read_buf()) {
            Ok(0) => driver.closed(None),
            Ok(n) => driver.on_read(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                driver.on_timeout()
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => driver.closed(Some(e.into())),
        }
    }
}
