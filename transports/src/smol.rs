//! The `smol` driver: `async-io`'s [`Async`]`<TcpStream>` and [`Timer`]. It runs under smol or
//! any other executor (`async_io::block_on`, `futures_lite::future::block_on`, ...) and never
//! pulls tokio in.
//!
//! * [`serve`] runs a master: an accept loop plus one task per connection, all on the future's
//!   own [`Executor`], sharing one [`MasterHandle`].
//! * [`run_slave`] runs a slave: dial, replicate, reconnect as the machine says.
//! * [`wait_replicated`] waits for slaves to acknowledge an offset.
//!
//! The run loops themselves are in the crate's shared `runtime` module.

use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_executor::{Executor, Task};
use async_io::{Async, Timer};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use rocketmq_ha::{AckPolicy, ConnectionState, LogSink, LogSource, SyncError};

use crate::frame_write::{self, FileStep};
use crate::runtime::{self, Runtime};
use crate::shared::Accepted;
use crate::stream::{Dialer, Io, Stream};
use crate::{MasterHandle, SlaveHandle};

struct Smol;

impl Io for Async<TcpStream> {
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        AsyncReadExt::read(&mut &*self, buf).await
    }

    async fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        AsyncWriteExt::write_vectored(&mut &*self, bufs).await
    }

    #[cfg(feature = "tls")]
    async fn readable(&self) -> io::Result<()> {
        Async::readable(self).await
    }

    #[cfg(feature = "tls")]
    async fn writable(&self) -> io::Result<()> {
        Async::writable(self).await
    }

    #[cfg(feature = "tls")]
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // The socket is non-blocking (`Async` made it so).
        std::io::Read::read(&mut self.get_ref(), buf)
    }

    #[cfg(feature = "tls")]
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        std::io::Write::write_vectored(&mut self.get_ref(), bufs)
    }
}

impl Runtime for Smol {
    type Socket = Stream<Async<TcpStream>>;

    async fn connect(addr: SocketAddr, dialer: &Dialer) -> io::Result<Self::Socket> {
        let socket = Async::<TcpStream>::connect(addr).await?;
        socket.get_ref().set_nodelay(true)?;
        dialer.wrap(socket)
    }

    async fn read(socket: &Self::Socket, buf: &mut [u8]) -> io::Result<usize> {
        socket.read(buf).await
    }

    async fn write_vectored(socket: &Self::Socket, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        socket.write_vectored(bufs).await
    }

    async fn sleep_until(deadline: Instant) {
        Timer::at(deadline).await;
    }

    fn plain_tcp(socket: &Self::Socket) -> bool {
        socket.as_plain().is_some()
    }

    fn try_send_now(socket: &Self::Socket, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // The socket is non-blocking; a `WouldBlock` here leaves async-io's interest as it was.
        // A TLS stream's bytes go through its task.
        match socket.as_plain() {
            Some(tcp) => frame_write::send_now(tcp, bufs),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    async fn write_file_step(socket: &Self::Socket, step: FileStep<'_>) -> io::Result<usize> {
        match socket.as_plain() {
            Some(tcp) => tcp.write_with(|s| step.run(s)).await,
            None => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "sendfile on a TLS stream",
            )),
        }
    }
}

/// Serves slaves on `listener` until `master` is shut down.
///
/// Each connection runs as a task on an executor owned by this future, so all of them run on
/// the thread polling it (the future is `Send`: spawn it wherever you like); when the future
/// returns or is dropped, every connection is closed.
pub async fn serve<L>(listener: Async<TcpListener>, master: MasterHandle<L>) -> io::Result<()>
where
    L: LogSource + Send + Sync + 'static,
{
    let executor = Arc::new(Executor::new());
    // The accept loop is a task of its own, polled only when the listener or the stop signal
    // wakes it: as the future `run` drives, it would be polled (and try to accept) whenever any
    // connection's task woke. It holds the executor weakly, so dropping this future drops the
    // executor and with it every task.
    let accept = executor.spawn(accept_loop(Arc::downgrade(&executor), listener, master));
    executor.run(accept).await
}

async fn accept_loop<L>(
    executor: Weak<Executor<'static>>,
    listener: Async<TcpListener>,
    master: MasterHandle<L>,
) -> io::Result<()>
where
    L: LogSource + Send + Sync + 'static,
{
    // Dropping a task cancels it, which closes its socket and unregisters the connection; these
    // go when the loop returns.
    let mut tasks: Vec<Task<()>> = Vec::new();
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                master.stop().wait().await;
                None
            })
            .await;
        match accepted {
            None => return Ok(()),
            Some(Ok((socket, peer))) => {
                let conn = match master.register_accepted(peer) {
                    Accepted::Serve(conn) => conn,
                    // Dropping the socket closes it before a byte is read.
                    Accepted::Refuse => continue,
                    Accepted::ShutDown => return Ok(()),
                };
                let Some(executor) = executor.upgrade() else {
                    return Ok(());
                };
                // Without TCP_NODELAY small reports wait for delayed ACKs (§1.2).
                if crate::shared::tune_master_socket(socket.get_ref()).is_ok() {
                    match master.acceptor().wrap(socket) {
                        Ok(socket) => {
                            tasks.retain(|task| !task.is_finished());
                            let serve = runtime::serve_connection::<Smol, L>(conn, socket);
                            tasks.push(executor.spawn(serve));
                        }
                        Err(e) => conn.fail(e.into()),
                    }
                }
            }
            // Accept errors (a peer that reset before accept, out of descriptors) are about
            // one connection or momentary; pause briefly so a persistent one cannot spin.
            Some(Err(_)) => {
                Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Runs a slave until `slave` is shut down.
pub async fn run_slave<L: LogSink>(slave: SlaveHandle<L>) {
    runtime::run_slave::<Smol, L>(slave).await
}

/// Waits until the slaves `acks` asks for (an [`AckPolicy`], or a number of slaves) acknowledged
/// `offset`, `deadline` passed ([`SyncError::Timeout`]), the policy failed the write at once,
/// or the master shut down ([`SyncError::Shutdown`]).
pub async fn wait_replicated<L>(
    master: &MasterHandle<L>,
    offset: u64,
    acks: impl Into<AckPolicy>,
    deadline: Instant,
) -> Result<(), SyncError> {
    master
        .wait_replicated_with(offset, acks, deadline, |at| async move {
            Timer::at(at).await;
        })
        .await
}

/// Waits until `slave`'s connection reaches `state` (§3.10) or `deadline` passes; returns
/// whether it did.
pub async fn wait_for_state<L>(
    slave: &SlaveHandle<L>,
    state: ConnectionState,
    deadline: Instant,
) -> bool {
    async {
        slave.wait_for_state(state).await;
        true
    }
    .or(async {
        Timer::at(deadline).await;
        false
    })
    .await
}
