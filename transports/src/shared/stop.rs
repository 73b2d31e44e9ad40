//! A one-way stop signal for a master or slave handle.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use event_listener::Event;

use super::{block_until, lock, until};

/// A one-way stop signal that also closes the blocking driver's sockets and wakes its accept
/// loop, since a thread blocked in `read` or `accept` cannot see a flag.
#[derive(Default)]
pub(crate) struct Stop {
    set: AtomicBool,
    event: Event,
    sockets: Mutex<Sockets>,
}

#[derive(Default)]
struct Sockets {
    next: u64,
    open: HashMap<u64, TcpStream>,
    /// Listening addresses to connect to once, so a blocking `accept` returns.
    wake: Vec<SocketAddr>,
}

/// A socket registered with [`Stop::register`].
pub(crate) struct SocketKey(u64);

impl Stop {
    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Sets the signal, shuts every registered socket down and wakes every waiter.
    pub(crate) fn trigger(&self) {
        if self.set.swap(true, Ordering::SeqCst) {
            return;
        }
        let sockets = std::mem::take(&mut *lock(&self.sockets));
        for stream in sockets.open.values() {
            // Errors mean the socket is already gone, which is what we want.
            let _ = stream.shutdown(Shutdown::Both);
        }
        for addr in sockets.wake {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
        self.event.notify(usize::MAX);
    }

    /// Registers a clone of `stream` to shut down at stop; fails if the stop already happened,
    /// so the caller never serves a connection the stop missed.
    pub(crate) fn register(&self, stream: &TcpStream) -> io::Result<SocketKey> {
        let clone = stream.try_clone()?;
        let mut sockets = lock(&self.sockets);
        if self.is_set() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "shutting down"));
        }
        let key = sockets.next;
        sockets.next += 1;
        sockets.open.insert(key, clone);
        Ok(SocketKey(key))
    }

    pub(crate) fn unregister(&self, key: SocketKey) {
        lock(&self.sockets).open.remove(&key.0);
    }

    /// Asks the stop to connect to `listening` once, waking a blocking `accept` on it.
    pub(crate) fn register_wake(&self, listening: SocketAddr) {
        let mut addr = listening;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        lock(&self.sockets).wake.push(addr);
    }

    /// Completes once the stop is set.
    pub(crate) async fn wait(&self) {
        until(&self.event, || self.is_set().then_some(())).await
    }

    /// Sleeps until `deadline` (forever for `None`) or until the stop is set.
    pub(crate) fn sleep_blocking(&self, deadline: Option<Instant>) {
        block_until(&self.event, deadline, || self.is_set().then_some(()));
    }
}
