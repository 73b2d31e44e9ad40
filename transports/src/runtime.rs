//! The async run loops, written once for any runtime (quinn's `runtime` pattern): a driver
//! module supplies sockets and a timer through [`Runtime`], and this module runs the machines.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use futures_lite::FutureExt;
use rocketmq_ha::{LogSink, LogSource};

use crate::frame_write::{self, FileStep, Step};
use crate::shared::{
    maybe, resolve_on_thread, ConnectionGuard, DirectWrite, Frame, SharedLog, SharedLoop,
    SlaveDriver, SlaveHandle,
};
use crate::stream::Dialer;
use crate::Error;

/// What an async driver provides: a connected socket type, dialing, and a timer.
pub(crate) trait Runtime {
    /// A connected socket (plain TCP or TLS over it), usable from several futures at once
    /// through `&`.
    type Socket: Send + Sync;

    /// Dials `addr` with TCP_NODELAY on (§1.2), wrapping the socket as `dialer` says.
    fn connect(
        addr: SocketAddr,
        dialer: &Dialer,
    ) -> impl Future<Output = io::Result<Self::Socket>> + Send;

    /// Reads once into `buf`; `Ok(0)` is EOF. Dropping the future before it completes reads
    /// nothing.
    fn read<'a>(
        socket: &'a Self::Socket,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;

    /// Writes once from `bufs` (one `writev`). Dropping the future before it completes writes
    /// nothing.
    fn write_vectored<'a>(
        socket: &'a Self::Socket,
        bufs: &'a [IoSlice<'a>],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;

    /// Completes at `deadline`.
    fn sleep_until(deadline: Instant) -> impl Future<Output = ()> + Send;

    /// Whether `socket` is plain TCP, so that a frame's body may go from its file
    /// ([`frame_write`]; TLS, for one, cannot). The default says no: frames are copied.
    fn plain_tcp(socket: &Self::Socket) -> bool {
        let _ = socket;
        false
    }

    /// Writes `bufs` now from any thread, without waiting and without blocking: a producer
    /// writing a frame itself (see `DirectWrite`). The default says `WouldBlock`, which
    /// leaves every frame to the connection's task (a TLS session cannot be written from
    /// beside its task).
    fn try_send_now(socket: &Self::Socket, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let _ = (socket, bufs);
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// Does `step` once when the socket is writable (only asked when
    /// [`plain_tcp`](Self::plain_tcp) said yes). Dropping the future before it completes
    /// sends nothing.
    fn write_file_step<'a>(
        socket: &'a Self::Socket,
        step: FileStep<'a>,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        let _ = (socket, step);
        async { Err(io::ErrorKind::Unsupported.into()) }
    }
}

/// Writes once from the rest of `transmit`, copying it or sending its body from its file
/// (when `from_files` and the socket allow), as [`frame_write::next_step`] says.
async fn write_frame<R: Runtime>(
    socket: &R::Socket,
    transmit: &Frame,
    from_files: bool,
) -> io::Result<usize> {
    match frame_write::next_step(transmit, from_files && R::plain_tcp(socket)) {
        Step::Copy(slices, n) => R::write_vectored(socket, &slices[..n]).await,
        Step::File(step) => R::write_file_step(socket, step).await,
    }
}

/// A timer kept across run-loop iterations: the deadline it rings at, and its sleep.
type Alarm<F> = Option<(Instant, Pin<Box<F>>)>;

/// Makes `alarm` ring no later than `deadline`. An alarm already set for that instant or an
/// earlier one is kept: ringing early only makes the loop ask the machine, which finds nothing
/// due. So the timer is replaced only when a deadline comes sooner or the alarm rang, not on
/// every iteration, where deadlines move a little later with each read and write; re-arming
/// each time cost async-io a timer update and a reactor wake-up per frame.
fn rearm<F>(alarm: &mut Alarm<F>, deadline: Option<Instant>, sleep: impl FnOnce(Instant) -> F) {
    match (deadline, &*alarm) {
        (None, _) => *alarm = None,
        (Some(deadline), Some((at, _))) if *at <= deadline => {}
        (Some(deadline), _) => *alarm = Some((deadline, Box::pin(sleep(deadline)))),
    }
}

/// Completes when `alarm` rings; never without one.
async fn ring<F: Future>(alarm: &mut Alarm<F>) {
    match alarm {
        Some((_, sleep)) => sleep.as_mut().await,
        None => std::future::pending().await,
    };
}

/// Room for reports: they are 8 bytes, and the machine uses only the last one of a read (§3.2).
type Reports = Box<[u8; 1024]>;

/// Reads once from `socket` into `reports` and hands the buffer back with the result.
async fn read_reports<R: Runtime>(
    socket: &R::Socket,
    mut reports: Reports,
) -> (Reports, io::Result<usize>) {
    let read = R::read(socket, &mut reports[..]).await;
    (reports, read)
}

/// What woke a master connection.
enum Wake {
    Read((Reports, io::Result<usize>)),
    Wrote(io::Result<usize>),
    Grew,
    Deadline,
}

/// One accepted connection, shared by its task and, through [`DirectWrite`], by producers
/// appending to the log.
struct Connection<R: Runtime, L> {
    conn: ConnectionGuard<L>,
    socket: R::Socket,
    machine: Mutex<SharedLoop>,
    /// Why a producer's write closed the connection, for the task to return.
    failed: Mutex<Option<Error>>,
}

impl<R: Runtime, L> Connection<R, L> {
    fn lock(&self) -> MutexGuard<'_, SharedLoop> {
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<R: Runtime, L: LogSource + Send + Sync> DirectWrite<L> for Connection<R, L> {
    /// Writes through [`Runtime::try_send_now`]; the task, woken after when needed, sends
    /// what the socket did not take, and returns the error if the write failed.
    fn write_now(&self, log: &SharedLog<L>) -> bool {
        let result = self.conn.write_directly(&mut self.lock(), log, |slices| {
            R::try_send_now(&self.socket, slices)
        });
        result.unwrap_or_else(|e| {
            self.failed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert(e);
            true
        })
    }
}

/// Drives one accepted slave connection until it closes; the guard records why.
pub(crate) async fn serve_connection<R, L>(conn: ConnectionGuard<L>, socket: R::Socket)
where
    R: Runtime + 'static,
    R::Socket: 'static,
    L: LogSource + Send + Sync + 'static,
{
    let connection = Arc::new(Connection::<R, L> {
        machine: Mutex::new(SharedLoop::new(conn.machine())),
        conn,
        socket,
        failed: Mutex::new(None),
    });
    let direct: Weak<Connection<R, L>> = Arc::downgrade(&connection);
    connection.conn.allow_direct_writes(direct);
    if let Err(e) = master_loop::<R, L>(&connection).await {
        connection.conn.fail(e);
    }
    // No producer writes to the connection after this (one that still holds it drops it, and
    // with it the guard, in a moment). A cancelled task does not get here: the guard's drop
    // stops the direct writes then.
    connection.conn.stop_direct_writes();
}

async fn master_loop<R: Runtime, L: LogSource>(c: &Connection<R, L>) -> Result<(), Error> {
    let (conn, socket) = (&c.conn, &c.socket);
    let log = conn.master().log();
    // The read of reports outlives loop iterations: a new one per iteration would try the
    // socket (async-io reads eagerly) and re-arm its interest at every frame written.
    let mut reading = std::pin::pin!(None);
    let mut spare: Option<Reports> = Some(Box::new([0; 1024]));
    let mut alarm = None;
    loop {
        if let Some(e) = c
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(e);
        }
        let mut grew = None;
        let pending = {
            let mut m = c.lock();
            let SharedLoop {
                lp,
                writing,
                rate_seen,
            } = &mut *m;
            conn.apply_rate_limit(lp, rate_seen);
            // Deadlines are handled on every turn, not only when the alarm wins the race: a
            // slave that floods reports (always readable) must not hold off housekeeping or
            // the write-stall limit.
            let now = Instant::now();
            if lp.poll_timeout().is_some_and(|d| d <= now) {
                lp.handle_timeout(now)?;
            }
            let mut pending = lp.poll_write(Instant::now(), &*log.read())?;
            if pending.is_none() {
                // Listen, then look again: growth between the two wakes the listener (unless a
                // producer wrote all of it itself: see `DirectWrite`).
                let listener = log.listen_as_driver();
                pending = lp.poll_write(Instant::now(), &*log.read())?;
                grew = pending.is_none().then_some(listener);
            }
            // Until the race below is over, its write may be under way: producers keep off.
            *writing = pending.is_some();
            rearm(&mut alarm, lp.poll_timeout(), R::sleep_until);
            pending
        };
        if reading.is_none() {
            let reports = spare.take().unwrap_or_else(|| Box::new([0; 1024]));
            reading.set(Some(read_reports::<R>(socket, reports)));
        }
        // Reads first: with writes first, a socket that always has room would starve acks.
        let wake = async {
            match reading.as_mut().as_pin_mut() {
                Some(read) => Wake::Read(read.await),
                None => std::future::pending().await,
            }
        }
        .or(async {
            match &pending {
                Some(transmit) => {
                    let from_files = conn.master().send_from_files();
                    Wake::Wrote(write_frame::<R>(socket, transmit, from_files).await)
                }
                None => std::future::pending().await,
            }
        })
        .or(async {
            maybe(grew).await;
            Wake::Grew
        })
        .or(async {
            ring(&mut alarm).await;
            Wake::Deadline
        })
        .await;
        let now = Instant::now();
        if matches!(wake, Wake::Read(_)) {
            reading.set(None);
        }
        let mut m = c.lock();
        m.writing = false;
        let lp = &mut m.lp;
        match wake {
            Wake::Read((_, Ok(0))) => return Ok(()),
            Wake::Read((reports, Ok(n))) => {
                let input = lp.handle_read(now, &reports[..n], &*log.read());
                spare = Some(reports);
                input?
            }
            Wake::Wrote(Ok(0)) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
            Wake::Wrote(Ok(n)) => lp.handle_written(now, n)?,
            Wake::Read((_, Err(e))) | Wake::Wrote(Err(e)) => return Err(e.into()),
            Wake::Grew => {}
            Wake::Deadline => {
                alarm = None;
                lp.handle_timeout(now)?
            }
        }
        conn.forward(lp);
    }
}

/// Runs a slave until its handle is shut down: dial, replicate, reconnect as the loop says.
pub(crate) async fn run_slave<R: Runtime, L: LogSink>(handle: SlaveHandle<L>) {
    let work = async {
        let mut slave = SlaveDriver::new(handle.clone());
        let mut alarm = None;
        loop {
            if slave.poll_dial() {
                // The loop's deadline is the dial's, name resolution included: the machine
                // gives up on it then.
                let deadline = slave.deadline();
                let dialed = async { Some(dial::<R, L>(&mut slave).await) }
                    .or(async {
                        maybe(deadline.map(R::sleep_until)).await;
                        None
                    })
                    .await;
                match dialed {
                    Some(Ok(socket)) => {
                        slave.connected();
                        slave_connection::<R, L>(&mut slave, &socket).await;
                    }
                    Some(Err(e)) => slave.connect_failed(e),
                    None => slave.on_timeout(),
                }
            } else {
                rearm(&mut alarm, slave.deadline(), R::sleep_until);
                ring(&mut alarm).await;
                alarm = None;
                slave.on_timeout();
            }
        }
    };
    work.or(handle.stop().wait()).await
}

/// Resolves the master's name again (when it has one) and connects to the first of its
/// addresses that answers.
async fn dial<R: Runtime, L: LogSink>(slave: &mut SlaveDriver<L>) -> Result<R::Socket, Error> {
    let addrs = match slave.dial_host() {
        Some(host) => resolve_on_thread(host).await?,
        None => slave.dial_addresses_blocking()?,
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to dial");
    let dialer = slave.dialer();
    for addr in addrs {
        slave.dialing(addr);
        match R::connect(addr, &dialer).await {
            Ok(socket) => return Ok(socket),
            Err(e) => last = e,
        }
    }
    Err(last.into())
}

/// What woke a slave connection.
enum SlaveWake {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Deadline,
}

/// One connection: reads, the report write and the deadline race each other, so a report the
/// master does not read never stops reads or timers (the loop's stall limit ends it).
async fn slave_connection<R: Runtime, L: LogSink>(slave: &mut SlaveDriver<L>, socket: &R::Socket) {
    let mut alarm = None;
    while slave.is_connected() {
        slave.on_due();
        if !slave.is_connected() {
            return;
        }
        let report = slave.poll_write();
        rearm(&mut alarm, slave.deadline(), R::sleep_until);
        let wants_read = slave.wants_read();
        // The report first: it is at most 8 bytes and pending only after new data was stored,
        // so it cannot starve reads; with reads first, a master that outpaces the slave (data
        // always readable) would starve the acks until the write-stall limit closed the
        // connection. A report the socket does not take stays pending while reads go on.
        let wake = async {
            let Some(report) = &report else {
                return std::future::pending().await;
            };
            let slices = [IoSlice::new(report.as_bytes())];
            SlaveWake::Wrote(R::write_vectored(socket, &slices).await)
        }
        .or(async {
            if !wants_read {
                std::future::pending::<()>().await;
            }
            SlaveWake::Read(R::read(socket, slave.read_buf()).await)
        })
        .or(async {
            ring(&mut alarm).await;
            SlaveWake::Deadline
        })
        .await;
        match wake {
            SlaveWake::Read(Ok(0)) => slave.closed(None),
            SlaveWake::Read(Ok(n)) => slave.on_read(n),
            SlaveWake::Wrote(Ok(0)) => {
                slave.closed(Some(io::Error::from(io::ErrorKind::WriteZero).into()))
            }
            SlaveWake::Wrote(Ok(n)) => slave.wrote(n),
            SlaveWake::Read(Err(e)) | SlaveWake::Wrote(Err(e)) => slave.closed(Some(e.into())),
            SlaveWake::Deadline => {
                alarm = None;
                slave.on_timeout();
            }
        }
    }
}
