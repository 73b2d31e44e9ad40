//! `--listen HOST:PORT`: a host name or an address, like `--master` takes, resolved once when
//! the master starts (a listening socket is bound once).

use std::net::{SocketAddr, ToSocketAddrs};

use crate::Failure;

/// The address to bind for `text` (`HOST:PORT`, `[V6]:PORT` or `ADDR:PORT`); `port`, when
/// given (from haListenPort), replaces the port. A name that resolves to several addresses
/// binds the first, as the resolver orders them.
pub fn listen_address(text: &str, port: Option<u16>) -> Result<SocketAddr, Failure> {
    let bad = |why: String| Failure(format!("--listen {text}: {why}"));
    let mut addr = text
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))?;
    if let Some(port) = port {
        addr.set_port(port);
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_are_taken_and_the_port_can_be_replaced() {
        assert_eq!(
            listen_address("0.0.0.0:10912", None).unwrap(),
            "0.0.0.0:10912".parse().unwrap()
        );
        assert_eq!(
            listen_address("[::]:1", Some(10912)).unwrap(),
            "[::]:10912".parse().unwrap()
        );
        let local = listen_address("localhost:0", Some(7)).unwrap();
        assert!(local.ip().is_loopback() && local.port() == 7, "{local}");
        let err = listen_address("localhost", None).unwrap_err().0;
        assert!(err.starts_with("--listen localhost:"), "{err}");
    }
}
