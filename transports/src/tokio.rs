//! The tokio driver (cargo feature `tokio`): `tokio::net` sockets and `tokio::time` timers.
//!
//! * [`serve`] runs a master: an accept loop plus one spawned task per connection (a
//!   [`JoinSet`], so they stop with it), sharing one [`MasterHandle`].
//! * [`run_slave`] runs a slave: dial, replicate, reconnect as the machine says.
//! * [`wait_replicated`] waits for slaves to acknowledge an offset.
//!
//! All must run inside a tokio runtime with time and I/O enabled. The run loops themselves are
//! in the crate's shared `runtime` module.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rocketmq_ha::{AckPolicy, ConnectionState, LogSink, LogSource, SyncError};
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::frame_write::{self, FileStep};
use crate::runtime::{self, Runtime};
use crate::shared::Accepted;
use crate::stream::{Dialer, Io, Stream};
use crate::{MasterHandle, SlaveHandle};

struct Tokio;

impl Io for TcpStream {
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // `readable` + `try_read` works through `&TcpStream`, so a read and a write can be
        // pending at once without splitting the socket.
        loop {
            TcpStream::readable(self).await?;
            match TcpStream::try_read(self, buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }

    async fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            TcpStream::writable(self).await?;
            match TcpStream::try_write_vectored(self, bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }

    #[cfg(feature = "tls")]
    async fn readable(&self) -> io::Result<()> {
        TcpStream::readable(self).await
    }

    #[cfg(feature = "tls")]
    async fn writable(&self) -> io::Result<()> {
        TcpStream::writable(self).await
    }

    #[cfg(feature = "tls")]
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }

    #[cfg(feature = "tls")]
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TcpStream::try_write_vectored(self, bufs)
    }
}

impl Runtime for Tokio {
    type Socket = Stream<TcpStream>;

    async fn connect(addr: SocketAddr, dialer: &Dialer) -> io::Result<Self::Socket> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        dialer.wrap(socket)
    }

    async fn read(socket: &Self::Socket, buf: &mut [u8]) -> io::Result<usize> {
        socket.read(buf).await
    }

    async fn write_vectored(socket: &Self::Socket, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        socket.write_vectored(bufs).await
    }

    async fn sleep_until(deadline: Instant) {
        tokio::time::sleep_until(deadline.into()).await;
    }

    fn plain_tcp(socket: &Self::Socket) -> bool {
        socket.as_plain().is_some()
    }

    fn try_send_now(socket: &Self::Socket, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Through `try_io`, so a full socket clears tokio's readiness as its own writes would.
        // A TLS stream's bytes go through its task.
        match socket.as_plain() {
            Some(tcp) => tcp.try_io(Interest::WRITABLE, || frame_write::send_now(tcp, bufs)),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    async fn write_file_step(socket: &Self::Socket, step: FileStep<'_>) -> io::Result<usize> {
        let Some(tcp) = socket.as_plain() else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "sendfile on a TLS stream",
            ));
        };
        loop {
            tcp.writable().await?;
            match tcp.try_io(Interest::WRITABLE, || step.run(tcp)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }
}

/// Serves slaves on `listener` until `master` is shut down; every connection task is aborted
/// (closing its socket) when this returns or is dropped.
pub async fn serve<L>(listener: TcpListener, master: MasterHandle<L>) -> io::Result<()>
where
    L: LogSource + Send + Sync + 'static,
{
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = master.stop().wait() => return Ok(()),
            // Reap finished connections so the set does not grow with every reconnect.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        match accepted {
            Ok((socket, peer)) => {
                let conn = match master.register_accepted(peer) {
                    Accepted::Serve(conn) => conn,
                    // Dropping the socket closes it before a byte is read.
                    Accepted::Refuse => continue,
                    Accepted::ShutDown => return Ok(()),
                };
                // Without TCP_NODELAY small reports wait for delayed ACKs (§1.2).
                if crate::shared::tune_master_socket(&socket).is_ok() {
                    match master.acceptor().wrap(socket) {
                        Ok(socket) => {
                            tasks.spawn(runtime::serve_connection::<Tokio, L>(conn, socket));
                        }
                        Err(e) => conn.fail(e.into()),
                    }
                }
            }
            // Accept errors are about one connection or momentary; pause briefly so a
            // persistent one (out of descriptors) cannot spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Runs a slave until `slave` is shut down.
pub async fn run_slave<L: LogSink>(slave: SlaveHandle<L>) {
    runtime::run_slave::<Tokio, L>(slave).await
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
        .wait_replicated_with(offset, acks, deadline, |at| {
            tokio::time::sleep_until(at.into())
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
    tokio::time::timeout_at(deadline.into(), slave.wait_for_state(state))
        .await
        .is_ok()
}
