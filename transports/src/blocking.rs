//! The blocking driver: std [`TcpListener`] / [`TcpStream`] and threads, the read timeout set to
//! the machine's next deadline.
//!
//! * [`serve`] runs a master on the calling thread: an accept loop plus, per connection, a reader
//!   thread (reports in, timeouts) and a writer thread (frames out, sleeping on log growth), the
//!   two sharing the connection's machine behind a mutex — Java's `HAConnection` split, because
//!   a blocked `write` must not stop acks from being read.
//! * [`run_slave`] runs a slave on the calling thread.
//!
//! Both return once their handle is shut down; shutdown closes the sockets, which is what wakes
//! a thread blocked in `read`, `write` or `accept`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Buf;
use event_listener::Listener;
use rocketmq_ha::{LogSink, LogSource, MasterConnection, Transmit};

use crate::runtime::io_slices;
use crate::shared::{read_timeout, ConnectionGuard, SlaveDriver};
use crate::{Error, MasterHandle, SlaveHandle};

/// Serves slaves on `listener` until `master` is shut down, one pair of threads per connection;
/// returns after every connection thread has finished.
pub fn serve<L>(listener: TcpListener, master: MasterHandle<L>) -> io::Result<()>
where
    L: LogSource + Send + Sync + 'static,
{
    master.stop().register_wake(listener.local_addr()?);
    let mut connections: Vec<thread::JoinHandle<()>> = Vec::new();
    while !master.is_shut_down() {
        match listener.accept() {
            Ok((stream, peer)) => {
                let Some(conn) = master.connect(peer) else {
                    break;
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

fn serve_connection<L: LogSource + Send + Sync>(conn: ConnectionGuard<L>, stream: TcpStream) {
    let stop = conn.master().stop();
    let Ok(key) = stop.register(&stream) else {
        return;
    };
    match crate::shared::tune_master_socket(&stream) {
        Ok(()) => {
            let machine = Mutex::new(conn.machine());
            let done = AtomicBool::new(false);
            let finish = |result: Result<(), Error>| {
                if let Err(e) = result {
                    conn.fail(e);
                }
                // Whichever side ends first ends the other: the reader through the closed
                // socket, the writer through the flag and a wake-up.
                done.store(true, Ordering::SeqCst);
                let _ = stream.shutdown(Shutdown::Both);
                conn.master().log().notify();
            };
            thread::scope(|s| {
                s.spawn(|| finish(writer(&conn, &machine, &stream, &done)));
                finish(reader(&conn, &machine, &stream, &done));
            });
        }
        Err(e) => conn.fail(e.into()),
    }
    stop.unregister(key);
}

/// Locks the connection's machine (a panicking peer thread leaves it consistent: every method
/// call is atomic under the lock).
fn lock(machine: &Mutex<MasterConnection>) -> std::sync::MutexGuard<'_, MasterConnection> {
    machine.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Run-loop steps 1, 2 and 4 (reading side): reports in, deadlines, events to the service.
fn reader<L: LogSource>(
    conn: &ConnectionGuard<L>,
    machine: &Mutex<MasterConnection>,
    mut stream: &TcpStream,
    done: &AtomicBool,
) -> Result<(), Error> {
    let log = conn.master().log();
    let mut reports = [0u8; 1024];
    while !done.load(Ordering::SeqCst) {
        let deadline = lock(machine).poll_timeout();
        stream.set_read_timeout(read_timeout(deadline))?;
        let read = stream.read(&mut reports);
        let mut m = lock(machine);
        match read {
            Ok(0) => return Ok(()),
            Ok(n) => {
                let started = m.next_offset().is_some();
                m.handle_input(Instant::now(), &reports[..n], &*log.read())?;
                conn.forward(&mut m);
                // The first report is the only input that gives the writer work.
                if !started && m.next_offset().is_some() {
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

/// Run-loop steps 3 and 4 (writing side): one frame at a time, then sleep on log growth until
/// the machine's next deadline.
fn writer<L: LogSource>(
    conn: &ConnectionGuard<L>,
    machine: &Mutex<MasterConnection>,
    mut stream: &TcpStream,
    done: &AtomicBool,
) -> Result<(), Error> {
    let log = conn.master().log();
    let poll = || -> Result<_, Error> {
        let mut m = lock(machine);
        Ok((
            m.poll_transmit(Instant::now(), &*log.read())?,
            m.poll_timeout(),
        ))
    };
    while !done.load(Ordering::SeqCst) && !conn.master().is_shut_down() {
        let mut transmit = poll()?.0;
        if transmit.is_none() {
            // Listen, then look again: growth between the two wakes the listener.
            let listener = log.listen();
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
            write_transmit(&mut stream, &mut transmit)?;
            lock(machine).on_transmitted(Instant::now())?;
        }
    }
    Ok(())
}

/// Writes a whole frame, header and body in one `writev` per attempt.
fn write_transmit(stream: &mut &TcpStream, transmit: &mut Transmit) -> io::Result<()> {
    while transmit.has_remaining() {
        let (slices, n) = io_slices(transmit);
        match stream.write_vectored(&slices[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => transmit.advance(written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs a slave on the calling thread until `slave` is shut down.
pub fn run_slave<L: LogSink>(slave: SlaveHandle<L>) {
    let mut driver = SlaveDriver::new(slave.clone());
    let stop = slave.stop();
    while !stop.is_set() {
        if !driver.apply() {
            stop.sleep_blocking(driver.deadline());
            driver.on_timeout();
            continue;
        }
        let (addr, after) = (slave.master(), slave.config().connect_timeout());
        match TcpStream::connect_timeout(&addr, after) {
            Ok(stream) => {
                let Ok(key) = stop.register(&stream) else {
                    break;
                };
                driver.connected();
                slave_connection(&mut driver, &stream);
                stop.unregister(key);
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                driver.connect_failed(Error::ConnectTimeout { addr, after })
            }
            Err(e) => driver.connect_failed(e.into()),
        }
    }
}

fn slave_connection<L: LogSink>(driver: &mut SlaveDriver<L>, mut stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        return driver.disconnected(Some(e.into()));
    }
    loop {
        driver.apply();
        while let Some(report) = driver.poll_report() {
            if let Err(e) = stream.write_all(&report) {
                return driver.disconnected(Some(e.into()));
            }
        }
        if !driver.is_connected() {
            return;
        }
        if let Err(e) = stream.set_read_timeout(read_timeout(driver.deadline())) {
            return driver.disconnected(Some(e.into()));
        }
        match stream.read(driver.read_buf()) {
            Ok(0) => return driver.disconnected(None),
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
            Err(e) => return driver.disconnected(Some(e.into())),
        }
    }
}
