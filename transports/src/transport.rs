//! Any driver on a background thread, chosen at run time: what the `rocketmq-ha` command and the
//! end-to-end tests use.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::str::FromStr;
use std::thread::{self, JoinHandle};

use rocketmq_ha::{LogSink, LogSource};

use crate::{blocking, smol, MasterHandle, SlaveHandle};

/// Which driver runs the machines.
///
/// The enum has the same variants whatever the cargo features: [`Transport::Tokio`] exists
/// without the `tokio` feature too, and spawning it then fails with
/// [`io::ErrorKind::Unsupported`] ([`is_available`](Self::is_available) says so beforehand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive] // more drivers (io_uring) may come
pub enum Transport {
    /// [`blocking`]: std sockets, threads.
    Blocking,
    /// [`smol`]: `async-io` on a thread running `async_io::block_on`.
    Smol,
    /// `tokio`: a current-thread tokio runtime (needs the cargo feature `tokio`).
    Tokio,
}

impl Transport {
    /// Every transport compiled in.
    pub const ALL: &'static [Transport] = &[
        Transport::Blocking,
        Transport::Smol,
        #[cfg(feature = "tokio")]
        Transport::Tokio,
    ];

    /// The transport's name as accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            Transport::Blocking => "blocking",
            Transport::Smol => "smol",
            Transport::Tokio => "tokio",
        }
    }

    /// Whether this driver is compiled in (tokio needs the cargo feature `tokio`).
    pub fn is_available(self) -> bool {
        Transport::ALL.contains(&self)
    }

    /// Whether this driver can speak TLS (the async ones; see [`crate::tls`]).
    pub fn has_tls(self) -> bool {
        !matches!(self, Transport::Blocking)
    }

    /// Binds `addr` and serves `master` on a new thread until it is shut down.
    pub fn spawn_master<L>(self, addr: SocketAddr, master: MasterHandle<L>) -> io::Result<Running>
    where
        L: LogSource + Send + Sync + 'static,
    {
        if master.is_tls() && !self.has_tls() {
            return Err(no_tls(self));
        }
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let stop = master.clone();
        let thread = match self {
            Transport::Blocking => spawn("ha-master", move || blocking::serve(listener, master)),
            Transport::Smol => {
                let listener = async_io::Async::new(listener)?;
                spawn("ha-master", move || {
                    async_io::block_on(smol::serve(listener, master))
                })
            }
            #[cfg(feature = "tokio")]
            Transport::Tokio => spawn("ha-master", move || {
                listener.set_nonblocking(true)?;
                tokio_runtime()?.block_on(async move {
                    let listener = ::tokio::net::TcpListener::from_std(listener)?;
                    crate::tokio::serve(listener, master).await
                })
            }),
            #[cfg(not(feature = "tokio"))]
            Transport::Tokio => Err(not_compiled_in(self)),
        }?;
        Ok(Running {
            local_addr: Some(local_addr),
            stop: Box::new(move || stop.shutdown()),
            thread: Some(thread),
        })
    }

    /// Runs `slave` on a new thread until it is shut down.
    pub fn spawn_slave<L>(self, slave: SlaveHandle<L>) -> io::Result<Running>
    where
        L: LogSink + Send + Sync + 'static,
    {
        if slave.is_tls() && !self.has_tls() {
            return Err(no_tls(self));
        }
        let stop = slave.clone();
        let thread = match self {
            Transport::Blocking => spawn("ha-slave", move || {
                blocking::run_slave(slave);
                Ok(())
            }),
            Transport::Smol => spawn("ha-slave", move || {
                async_io::block_on(smol::run_slave(slave));
                Ok(())
            }),
            #[cfg(feature = "tokio")]
            Transport::Tokio => spawn("ha-slave", move || {
                tokio_runtime()?.block_on(crate::tokio::run_slave(slave));
                Ok(())
            }),
            #[cfg(not(feature = "tokio"))]
            Transport::Tokio => Err(not_compiled_in(self)),
        }?;
        Ok(Running {
            local_addr: None,
            stop: Box::new(move || stop.shutdown()),
            thread: Some(thread),
        })
    }
}

/// The error for a handle with TLS given to a driver without it.
pub(crate) fn no_tls(transport: Transport) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("the {transport} transport has no TLS: use smol or tokio"),
    )
}

#[cfg(not(feature = "tokio"))]
fn not_compiled_in(transport: Transport) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("the {transport} transport needs the cargo feature `{transport}`"),
    )
}

#[cfg(feature = "tokio")]
fn tokio_runtime() -> io::Result<::tokio::runtime::Runtime> {
    ::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn spawn(
    name: &str,
    f: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> io::Result<JoinHandle<io::Result<()>>> {
    thread::Builder::new().name(name.into()).spawn(f)
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A transport name that is not compiled in or does not exist.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown transport {0:?} (available: {list})", list = available())]
pub struct UnknownTransport(pub String);

fn available() -> String {
    let names: Vec<_> = Transport::ALL.iter().map(|t| t.name()).collect();
    names.join(", ")
}

impl FromStr for Transport {
    type Err = UnknownTransport;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Transport::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownTransport(s.to_owned()))
    }
}

/// A driver running on its own thread. Dropping it shuts the driver down and joins the thread.
pub struct Running {
    local_addr: Option<SocketAddr>,
    stop: Box<dyn Fn() + Send + Sync>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// The address a master listens on (`None` for a slave).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Whether the driver's thread has ended (on its own only after an error).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Shuts the driver down (closing its sockets, failing pending sync waits) and waits for
    /// its thread; returns the driver's error, if it ended with one.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> io::Result<()> {
        (self.stop)();
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| io::Error::other("driver thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
