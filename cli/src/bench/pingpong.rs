//! The request/response reference for the sync-latency rows: a plain TCP ping-pong with the
//! same process layout. This process writes a message of each size to a child process (this
//! program's hidden `echo` command), which reads it whole and answers 8 bytes, as a slave
//! answers a frame with a report. One round trip and no store: the physical limit of a sync
//! put on this machine, measured in the same run as the puts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::latency::Child;
use super::Peers;
use crate::size::Size;
use crate::{Context, Failure, Generator};

/// One reference row: percentiles of the round trip, in microseconds.
pub(super) struct PingPong {
    pub(super) size: u64,
    /// p50, p90, p99, p99.9.
    pub(super) percentiles: [f64; 4],
}

pub(super) fn ping_pong(
    sizes: &[Size],
    messages: usize,
    peers: &Peers,
) -> Result<Vec<PingPong>, Failure> {
    let listener =
        TcpListener::bind(peers.bind_addr()).context("binding the ping-pong listener")?;
    let addr = listener.local_addr().context("the ping-pong address")?;
    let _child = Child(
        peers
            .command()?
            .args(["echo", "--connect", &addr.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting the echo process")?,
    );
    let (mut stream, _) = listener.accept().context("accepting the echo process")?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let mut generator = Generator::new(0x9196);
    let mut answer = [0u8; 8];
    let mut round = |message: &[u8]| -> Result<Duration, Failure> {
        let started = Instant::now();
        stream
            .write_all(&(message.len() as u32).to_be_bytes())
            .and_then(|()| stream.write_all(message))
            .and_then(|()| stream.read_exact(&mut answer))
            .context("ping-pong round trip")?;
        Ok(started.elapsed())
    };
    let warm = generator.bytes(1024);
    for _ in 0..messages.clamp(10, 500) {
        round(&warm)?;
    }
    let mut rows = Vec::new();
    for size in sizes {
        let message = generator.bytes(size.0.max(1));
        let mut micros: Vec<f64> = (0..messages)
            .map(|_| round(&message).map(|d| d.as_secs_f64() * 1e6))
            .collect::<Result<_, _>>()?;
        micros.sort_by(f64::total_cmp);
        let at = |q: f64| micros[((micros.len() as f64 * q) as usize).min(micros.len() - 1)];
        rows.push(PingPong {
            size: size.0.max(1),
            percentiles: [at(0.50), at(0.90), at(0.99), at(0.999)],
        });
    }
    Ok(rows)
}

/// The child's side (`rocketmq-ha echo --connect ADDR`): read each length-prefixed message
/// whole, answer 8 bytes, until the other side closes.
pub fn echo(connect: SocketAddr) -> Result<(), Failure> {
    let mut stream = TcpStream::connect(connect).context("connecting to the benchmark")?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let mut body = Vec::new();
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).is_err() {
            return Ok(());
        }
        body.resize(u32::from_be_bytes(len) as usize, 0);
        stream.read_exact(&mut body).context("reading a message")?;
        stream
            .write_all(&(body.len() as u64).to_be_bytes())
            .context("answering")?;
    }
}
