//! The loopback reference: plain TCP on this kernel's loopback, the ceiling for any
//! replication over it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Instant;

use rocketmq_ha::LogSource;
use rocketmq_ha_transports::file_log::FileLogReader;

use super::loopback_addr;
use crate::size::mb_per_s;
use crate::{Context, Failure};

/// Plain TCP over loopback: the store's first `total` bytes written in `write`-byte pieces
/// (slices of the memory-mapped store, as the master writes them) and read in 256 KiB reads.
pub(super) fn loopback(source: &FileLogReader, total: u64, write: usize) -> Result<f64, Failure> {
    let listener = TcpListener::bind(loopback_addr()).context("binding a loopback socket")?;
    let addr = listener.local_addr().context("loopback address")?;
    let receiver = thread::Builder::new()
        .name("bench-receive".into())
        .spawn(move || -> std::io::Result<u64> {
            let (mut socket, _) = listener.accept()?;
            socket.set_nodelay(true)?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut received = 0u64;
            loop {
                match socket.read(&mut buf)? {
                    0 => return Ok(received),
                    n => received += n as u64,
                }
            }
        })
        .context("starting the loopback receiver")?;
    let mut socket = TcpStream::connect(addr).context("connecting over loopback")?;
    socket.set_nodelay(true).context("setting TCP_NODELAY")?;
    let started = Instant::now();
    let mut at = source.min_offset();
    let end = at + total;
    while at < end {
        let want = usize::try_from(end - at).map_or(write, |left| left.min(write));
        let piece = source.read(at, want).context("reading the master store")?;
        socket.write_all(&piece).context("loopback write")?;
        at += piece.len() as u64;
    }
    socket
        .shutdown(Shutdown::Write)
        .context("loopback shutdown")?;
    let received = receiver
        .join()
        .map_err(|_| Failure("the loopback receiver panicked".into()))?
        .context("loopback read")?;
    let elapsed = started.elapsed().as_secs_f64();
    if received != total {
        return Err(Failure(format!(
            "loopback moved {received} of {total} bytes"
        )));
    }
    Ok(mb_per_s(total, elapsed))
}
