//! Where a slave dials: the master's address resolved again before every dial, so a master
//! that moves (a DNS name re-pointed after a fail-over, a container given a new address) is
//! found at the next reconnect. When to dial is the core's decision ([`SlaveLoop`]); turning a
//! name into addresses is I/O, so it happens here, in the driver, at each dial.
//!
//! [`SlaveLoop`]: rocketmq_ha::SlaveLoop

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use event_listener::Event;

use super::{lock, until};
use crate::Error;

/// The addresses `host` (`HOST:PORT`) resolves to, in the resolver's order.
pub(crate) fn resolve_blocking(host: &str) -> Result<Vec<SocketAddr>, Error> {
    let resolved = host.to_socket_addrs().map(Vec::from_iter);
    match resolved {
        Ok(addrs) if addrs.is_empty() => Err(Error::Resolve {
            host: host.to_owned(),
            source: io::Error::new(io::ErrorKind::NotFound, "no address"),
        }),
        Ok(addrs) => Ok(addrs),
        Err(source) => Err(Error::Resolve {
            host: host.to_owned(),
            source,
        }),
    }
}

/// [`resolve_blocking`] on a thread of its own, for async drivers: the system resolver
/// blocks, and an executor thread must not. A dial that gives up (its deadline passed) drops
/// this future; the thread then finishes alone and its answer is dropped.
pub(crate) async fn resolve_on_thread(host: String) -> Result<Vec<SocketAddr>, Error> {
    type Slot = (Mutex<Option<Result<Vec<SocketAddr>, Error>>>, Event);
    let slot: Arc<Slot> = Arc::new((Mutex::new(None), Event::new()));
    let answer = Arc::clone(&slot);
    let name = host.clone();
    let spawned = std::thread::Builder::new()
        .name("ha-resolve".into())
        .spawn(move || {
            let resolved = resolve_blocking(&name);
            *lock(&answer.0) = Some(resolved);
            answer.1.notify(usize::MAX);
        });
    if let Err(source) = spawned {
        return Err(Error::Resolve { host, source });
    }
    until(&slot.1, || lock(&slot.0).take()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_and_failures_name_the_host() {
        let addrs = resolve_blocking("localhost:10912").unwrap();
        assert!(addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 10912));
        let err = resolve_blocking("no port here").unwrap_err();
        assert!(err.to_string().contains("no port here"), "{err}");
        let on_thread = futures_lite::future::block_on(resolve_on_thread("127.0.0.1:1".into()));
        assert_eq!(on_thread.unwrap(), [SocketAddr::from(([127, 0, 0, 1], 1))]);
    }
}
