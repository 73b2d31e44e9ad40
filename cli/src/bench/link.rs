//! `bench --link RATE`: replication across a rate-limited link instead of loopback.
//!
//! Loopback has no wire: its "rate" is a memory copy, and its round trip a pair of context
//! switches. To see how close replication gets to a real link, this mode (root only) makes two
//! network namespaces joined by a veth pair, limits each direction with `tc tbf` to RATE (say
//! `1gbit` or `10gbit`), and runs the master in one namespace (this process) and every child
//! (the slave, the ping-pong partner, the TCP sink) in the other. It reports:
//! - a plain TCP stream over the link, and replication over it, as MB/s and shares of the
//!   link's rate;
//! - sync-put latency against a ping-pong over the same link.
//!
//! The namespaces are removed when the run ends (and a leftover of an interrupted run with the
//! same name is removed first).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use rocketmq_ha::LogSource;
use rocketmq_ha_transports::{MasterHandle, Transport};

use super::latency::{sync_latency, Child};
use super::pingpong::ping_pong;
use super::{config, generate, Peers, PHASE_LIMIT};
use crate::size::{Human, Size};
use crate::{Context, Failure, TempDir};

/// Namespace and device names: short (devices take 15 bytes), fixed so a leftover is found.
const MASTER_NS: &str = "rmqha-m";
const SLAVE_NS: &str = "rmqha-s";
const MASTER_DEV: &str = "rmqha-vm";
const SLAVE_DEV: &str = "rmqha-vs";
const MASTER_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 1);
const SLAVE_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 2);

/// A link rate as `tc` takes it: a number and `kbit`, `mbit` or `gbit`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkRate {
    bits_per_sec: u64,
}

impl LinkRate {
    fn bytes_per_sec(self) -> f64 {
        self.bits_per_sec as f64 / 8.0
    }

    /// The rate in `tc`'s syntax.
    fn tc(self) -> String {
        format!("{}bit", self.bits_per_sec)
    }
}

impl std::str::FromStr for LinkRate {
    type Err = String;

    fn from_str(text: &str) -> Result<LinkRate, String> {
        let lower = text.trim().to_ascii_lowercase();
        let (number, scale) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)]
            .iter()
            .find_map(|(unit, scale)| lower.strip_suffix(unit).map(|n| (n, *scale)))
            .ok_or_else(|| format!("{text:?}: give a rate like 1gbit, 10gbit or 500mbit"))?;
        let value: f64 = number
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: {number:?} is not a number"))?;
        let bits = value * scale;
        if !(1e6..=1e12).contains(&bits) {
            return Err(format!(
                "{text:?}: a link rate is between 1mbit and 1000gbit"
            ));
        }
        Ok(LinkRate {
            bits_per_sec: bits as u64,
        })
    }
}

/// The two namespaces and the veth pair between them; removed on drop.
struct Link;

impl Link {
    fn create(rate: LinkRate) -> Result<Link, Failure> {
        Link::remove();
        let link = Link;
        // A burst of 10 ms at the rate (at least 64 KiB): tbf needs at least one timer tick's
        // worth to reach the rate, and no more, or it lets bursts far above it through.
        let burst = ((rate.bytes_per_sec() / 100.0) as u64).max(64 * 1024);
        let master_cidr = format!("{MASTER_IP}/24");
        let slave_cidr = format!("{SLAVE_IP}/24");
        let tc_rate = rate.tc();
        let burst = burst.to_string();
        let steps: Vec<Vec<&str>> = vec![
            vec!["ip", "netns", "add", MASTER_NS],
            vec!["ip", "netns", "add", SLAVE_NS],
            vec![
                "ip", "link", "add", MASTER_DEV, "type", "veth", "peer", "name", SLAVE_DEV,
            ],
            vec!["ip", "link", "set", MASTER_DEV, "netns", MASTER_NS],
            vec!["ip", "link", "set", SLAVE_DEV, "netns", SLAVE_NS],
            vec![
                "ip",
                "-n",
                MASTER_NS,
                "addr",
                "add",
                &master_cidr,
                "dev",
                MASTER_DEV,
            ],
            vec![
                "ip",
                "-n",
                SLAVE_NS,
                "addr",
                "add",
                &slave_cidr,
                "dev",
                SLAVE_DEV,
            ],
            vec!["ip", "-n", MASTER_NS, "link", "set", "lo", "up"],
            vec!["ip", "-n", SLAVE_NS, "link", "set", "lo", "up"],
            vec!["ip", "-n", MASTER_NS, "link", "set", MASTER_DEV, "up"],
            vec!["ip", "-n", SLAVE_NS, "link", "set", SLAVE_DEV, "up"],
            vec![
                "tc", "-n", MASTER_NS, "qdisc", "add", "dev", MASTER_DEV, "root", "tbf", "rate",
                &tc_rate, "burst", &burst, "latency", "50ms",
            ],
            vec![
                "tc", "-n", SLAVE_NS, "qdisc", "add", "dev", SLAVE_DEV, "root", "tbf", "rate",
                &tc_rate, "burst", &burst, "latency", "50ms",
            ],
        ];
        for step in steps {
            let output = Command::new(step[0])
                .args(&step[1..])
                .output()
                .context(format_args!("running {}", step.join(" ")))?;
            if !output.status.success() {
                return Err(Failure(format!(
                    "{}: {}",
                    step.join(" "),
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
        }
        Ok(link)
    }

    fn remove() {
        for ns in [MASTER_NS, SLAVE_NS] {
            // Removing a namespace removes its end of the veth pair, and with it the pair.
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        Link::remove();
    }
}

/// Moves this thread, and every thread it starts from now on, into network namespace `name`.
fn enter_namespace(name: &str) -> Result<(), Failure> {
    let path = format!("/var/run/netns/{name}");
    let file = std::fs::File::open(&path).context(format_args!("opening {path}"))?;
    // SAFETY: `setns` with a valid descriptor of a network namespace file and the matching
    // type; it changes only this thread's namespace and touches no memory of ours.
    let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if result != 0 {
        return Err(Failure(format!(
            "entering network namespace {name}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// What `bench --link` takes from the benchmark's options.
pub(super) struct LinkArgs<'a> {
    pub rate: LinkRate,
    pub transport: Transport,
    pub batch: Size,
    pub total: u64,
    pub segment: u64,
    pub messages: usize,
    pub sizes: &'a [Size],
    pub dir: &'a TempDir,
}

/// Runs the link benchmark and prints its table.
pub(super) fn run(args: LinkArgs<'_>) -> Result<(), Failure> {
    // SAFETY: `geteuid` has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Failure(
            "--link needs root: it creates network namespaces and a veth pair".into(),
        ));
    }
    let rate = args.rate;
    eprintln!(
        "link: veth pair between namespaces {MASTER_NS} and {SLAVE_NS}, tc tbf {} each way ({:.0} MB/s)",
        rate.tc(),
        rate.bytes_per_sec() / 1e6
    );
    let _link = Link::create(rate)?;
    enter_namespace(MASTER_NS)?;
    let peers = Peers {
        bind: IpAddr::V4(MASTER_IP),
        netns: Some(SLAVE_NS.to_owned()),
    };

    let tcp = tcp_stream(&peers, args.total)?;
    eprintln!("  TCP stream: {:.0} MB/s", tcp / 1e6);
    let replication = replicate(&peers, &args)?;
    eprintln!(
        "  replication ({}, batch {}): {:.0} MB/s",
        args.transport,
        Human(args.batch.0),
        replication / 1e6
    );
    let pings = ping_pong(args.sizes, args.messages, &peers)?;
    let config = config(args.batch)?;
    let puts = sync_latency(
        args.transport,
        config,
        crate::protocol::ProtocolArg::Classic,
        args.sizes,
        args.messages,
        args.segment,
        &args.dir.0,
        &peers,
    )?;

    println!(
        "link {} ({:.0} MB/s): veth between two network namespaces, tc tbf each way",
        rate.tc(),
        rate.bytes_per_sec() / 1e6
    );
    println!(
        "  {:<34} {:>8} {:>9} {:>8}",
        "throughput", "MB/s", "of link", "of TCP"
    );
    println!(
        "  {:<34} {:>8.0} {:>8.0}% {:>8}",
        "plain TCP stream",
        tcp / 1e6,
        100.0 * tcp / rate.bytes_per_sec(),
        "-"
    );
    println!(
        "  {:<34} {:>8.0} {:>8.0}% {:>7.0}%",
        format!(
            "replication, {}, batch {}",
            args.transport,
            Human(args.batch.0)
        ),
        replication / 1e6,
        100.0 * replication / rate.bytes_per_sec(),
        100.0 * replication / tcp
    );
    println!(
        "  {:<10} {:>10} {:>10} {:>12} {:>12} {:>8} {:>8}",
        "sync put", "p50 us", "p99 us", "ping p50 us", "ping p99 us", "x p50", "x p99"
    );
    for (put, ping) in puts.iter().zip(&pings) {
        println!(
            "  {:<10} {:>10.0} {:>10.0} {:>12.0} {:>12.0} {:>8.2} {:>8.2}",
            Human(put.size).to_string(),
            put.percentiles[0],
            put.percentiles[2],
            ping.percentiles[0],
            ping.percentiles[2],
            put.percentiles[0] / ping.percentiles[0],
            put.percentiles[2] / ping.percentiles[2]
        );
    }
    Ok(())
}

/// A plain TCP stream of `total` bytes to a child across the link (`sink`): bytes per second
/// from the first write to the child's answer that it has them all.
fn tcp_stream(peers: &Peers, total: u64) -> Result<f64, Failure> {
    let listener = TcpListener::bind(peers.bind_addr()).context("binding the TCP reference")?;
    let addr = listener
        .local_addr()
        .context("the TCP reference's address")?;
    let _child = Child(
        peers
            .command()?
            .args(["sink", "--connect", &addr.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting the sink process")?,
    );
    let (mut stream, _) = listener.accept().context("accepting the sink")?;
    let chunk = vec![0x5Au8; 1 << 20];
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(chunk.len() as u64) as usize;
        stream
            .write_all(&chunk[..n])
            .context("writing to the sink")?;
        sent += n as u64;
    }
    stream
        .shutdown(std::net::Shutdown::Write)
        .context("ending the stream")?;
    let mut answer = [0u8; 8];
    stream
        .read_exact(&mut answer)
        .context("reading the sink's count")?;
    let elapsed = started.elapsed().as_secs_f64();
    let received = u64::from_be_bytes(answer);
    if received != total {
        return Err(Failure(format!("the sink got {received} of {total} bytes")));
    }
    Ok(total as f64 / elapsed)
}

/// Replication of `total` generated bytes to a slave process across the link: bytes per second
/// from the slave's connection to its ack of the last byte.
fn replicate(peers: &Peers, args: &LinkArgs<'_>) -> Result<f64, Failure> {
    let store = args.dir.0.join("link-master");
    let log = generate(&store, args.total, args.segment, false)?;
    let total = log.max_offset();
    let master = MasterHandle::new(log, config(args.batch)?);
    let server = args
        .transport
        .spawn_master(peers.bind_addr(), master.clone())
        .context("starting the master")?;
    let addr = server
        .local_addr()
        .ok_or_else(|| Failure("the master has no address".into()))?;
    let slave_store = args.dir.0.join("link-slave");
    let mut child = Child(
        peers
            .command()?
            .args(["slave", "--master", &addr.to_string(), "--transport"])
            .arg(args.transport.name())
            .arg("--store")
            .arg(&slave_store)
            .args(["--segment-size", &args.segment.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting the slave process")?,
    );
    let deadline = Instant::now() + PHASE_LIMIT;
    let acked = || master.slaves().iter().filter_map(|s| s.acked).max();
    while acked().is_none() {
        if Instant::now() > deadline || child.exited() {
            return Err(Failure("the slave across the link never connected".into()));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let started = Instant::now();
    while acked().unwrap_or(0) < total {
        if Instant::now() > deadline {
            return Err(Failure("replication across the link did not finish".into()));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(child);
    server.shutdown().context("stopping the master")?;
    let _ = std::fs::remove_dir_all(&store);
    let _ = std::fs::remove_dir_all(&slave_store);
    Ok(total as f64 / elapsed)
}

/// The TCP reference's far side (`rocketmq-ha sink --connect ADDR`): reads until EOF, then
/// answers the byte count (8 bytes, big-endian).
pub fn sink(connect: SocketAddr) -> Result<(), Failure> {
    let mut stream = TcpStream::connect(connect).context("connecting to the benchmark")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading"),
        }
    }
    stream
        .write_all(&total.to_be_bytes())
        .context("answering the count")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_tc_writes_them_and_nonsense_is_refused() {
        assert_eq!(
            "1gbit".parse::<LinkRate>().unwrap().bits_per_sec,
            1_000_000_000
        );
        assert_eq!("10Gbit".parse::<LinkRate>().unwrap().tc(), "10000000000bit");
        assert_eq!(
            "2.5gbit".parse::<LinkRate>().unwrap().bits_per_sec,
            2_500_000_000
        );
        assert_eq!(
            "500mbit".parse::<LinkRate>().unwrap().bytes_per_sec(),
            62_500_000.0
        );
        for bad in ["", "1gb", "fast", "0gbit", "5000gbit", "-1mbit"] {
            assert!(bad.parse::<LinkRate>().is_err(), "{bad}");
        }
    }
}
