//! `rocketmq-ha bench`: replication figures on loopback, each beside a plain-TCP reference
//! measured in the same run.
//!
//! What is measured, and how:
//! - **loopback**: one thread writes the master store's bytes to a plain TCP socket in pieces of
//!   the batch size, another reads them (256 KiB reads, as the slave driver) and discards them.
//!   It is the ceiling for any replication over this kernel's loopback, so every throughput is
//!   also given as a ratio of it.
//! - **replication**: a master serving a generated store ([`FileLog`], read through its memory
//!   maps) and a slave replicating into a fresh [`FileLog`] in a temporary directory, both in
//!   this process on their drivers' threads. Timed from starting the slave until its log holds
//!   every byte; then the slave's store is compared byte for byte with the master's. The same
//!   run gives the time from the slave's TCP connect to its first stored byte (and from starting
//!   its driver, thread and dial included), and the CPU time of the master's and the slave's
//!   threads (`/proc/self/task`, see `probe`).
//! - **sync latency**: a producer thread appends one message at a time to the master's store
//!   and waits until the slave acknowledged it (`append_replicated_blocking`, a `SYNC_MASTER`
//!   put); the latency of each put is recorded. The slave runs as a child process
//!   (`rocketmq-ha slave`), as in a deployment.
//! - **fan-out**: one master and N slaves (tasks of one executor per thread, one thread per CPU
//!   at most), each into its own fresh store, the case's bytes divided among them.
//! - **memory**: the growth of this process's resident memory from N to 2N idle connections,
//!   divided by N, on the master side (against raw sockets that sent their first report) and on
//!   the slave side (against a raw listener that sends nothing).

mod json;
mod probe;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketmq_ha::{Config, LogError, LogSource, MemoryLog, StartPosition};
use rocketmq_ha_transports::file_log::{compare_logs, FileLog, FileLogReader};
use rocketmq_ha_transports::{MasterHandle, Running, SlaveHandle, Transport};

use crate::size::{mb_per_s, Human, Size};
use crate::{Context, Failure, Generator, TempDir, TransportArg};
use json::Json;
use probe::{resident_bytes, Machine, ThreadTimes};

const GIB: f64 = (1u64 << 30) as f64;

/// Longest any single phase may take before the benchmark gives up (a hang is a failure, not a
/// figure).
const PHASE_LIMIT: Duration = Duration::from_secs(300);

/// Options of `rocketmq-ha bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Bytes per replication run (and moved by the loopback reference).
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    bytes: Size,
    /// Segment size of every store.
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    segment_size: Size,
    /// Transports to measure, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "blocking,smol,tokio"
    )]
    transport: Vec<TransportArg>,
    /// Transfer batch sizes (most log bytes per frame), comma-separated. The first is the
    /// reference: the loopback reference writes pieces of its size.
    #[arg(
        long,
        value_name = "SIZES",
        value_delimiter = ',',
        default_value = "1MiB,32KiB"
    )]
    batch_size: Vec<Size>,
    /// Repeat each throughput and fan-out measurement this many times (interleaved) and report
    /// medians.
    #[arg(long, value_name = "N", default_value_t = 1)]
    runs: usize,
    /// Messages per size in the sync-latency test.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    messages: usize,
    /// Message sizes for the sync-latency test, comma-separated.
    #[arg(
        long,
        value_name = "SIZES",
        value_delimiter = ',',
        default_value = "128,1KiB,4KiB,64KiB"
    )]
    message_sizes: Vec<Size>,
    /// Slave counts for the fan-out test (async transports only), comma-separated.
    #[arg(
        long,
        value_name = "COUNTS",
        value_delimiter = ',',
        default_value = "1,8,64"
    )]
    fanout: Vec<usize>,
    /// Total bytes per fan-out case, divided among its slaves (at most --bytes). Large enough
    /// that each of 64 slaves' one-time costs (connect, segment file, read buffer) are small
    /// beside its share.
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    fanout_bytes: Size,
    /// Idle connections per step of the memory test (N, then 2N).
    #[arg(long, value_name = "N", default_value_t = 256)]
    idle_connections: usize,
    /// Measure only these parts, comma-separated (default: all).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "throughput,latency,fanout,memory"
    )]
    only: Vec<Part>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

/// The parts of the benchmark.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// Loopback reference and replication throughput (with first-byte time and CPU).
    Throughput,
    /// Sync-replication latency.
    Latency,
    /// One master, many slaves.
    Fanout,
    /// Resident memory per idle connection.
    Memory,
}

/// One replication row.
struct Throughput {
    transport: Transport,
    batch: u64,
    mbps: f64,
    /// From the slave's TCP connect returning to its first stored byte.
    first_byte: Duration,
    /// From starting the slave's driver (thread, runtime, dial) to its first stored byte.
    start_to_first_byte: Duration,
    cpu_master: f64,
    cpu_slave: f64,
}

struct Latency {
    transport: Transport,
    size: u64,
    /// p50, p90, p99, p99.9 in microseconds.
    percentiles: [f64; 4],
}

struct Fanout {
    transport: Transport,
    slaves: usize,
    /// CPU seconds per GiB moved (all slaves' bytes) of the master's and the slaves' threads.
    cpu_master: f64,
    cpu_slaves: f64,
    aggregate: f64,
    per_slave_median: f64,
    per_slave_min: f64,
}

struct Memory {
    transport: Transport,
    master: f64,
    slave: f64,
}

pub fn bench(args: BenchArgs) -> Result<(), Failure> {
    if args.batch_size.is_empty() || args.transport.is_empty() {
        return Err(Failure("give at least one transport and batch size".into()));
    }
    let part = |p: Part| args.only.contains(&p);
    let transports: Vec<Transport> = args.transport.iter().map(|&t| t.into()).collect();
    let machine = Machine::describe();
    let dir = TempDir::new("bench", false)?;
    let total = args.bytes.0.max(1);
    let segment = args.segment_size.0;
    let configs = args
        .batch_size
        .iter()
        .map(|&b| config(b))
        .collect::<Result<Vec<_>, _>>()?;

    // First, while the heap is fresh: later phases free memory that idle connections would
    // otherwise reuse without growing the resident set.
    let mut memory = Vec::new();
    if part(Part::Memory) {
        for &transport in &transports {
            note(format_args!("idle memory, {transport}"));
            memory.push(idle_memory(
                transport,
                configs[0],
                args.idle_connections.max(1),
            )?);
        }
    }

    let needs_store = part(Part::Throughput) || part(Part::Fanout);
    let source = if needs_store {
        note(format_args!(
            "generating a {} master store (load average {})",
            Human(total),
            machine.load
        ));
        Some(generate(&dir.0.join("master"), total, segment)?)
    } else {
        None
    };
    let reader = source.as_ref().map(FileLog::reader);

    // Throughput: loopback references and replication rows, interleaved over the runs so that
    // a slow moment of the machine affects all rows alike.
    let writes: Vec<u64> = dedup(args.batch_size.iter().map(|b| b.0));
    let mut loopback_runs = vec![Vec::new(); writes.len()];
    let mut replication_runs: Vec<Vec<Throughput>> = Vec::new();
    let mut slot = 0;
    let runs = if part(Part::Throughput) {
        args.runs.max(1)
    } else {
        0
    };
    for run in 0..runs {
        note(format_args!("run {} of {runs}", run + 1));
        for (i, &write) in writes.iter().enumerate() {
            let reader = reader.as_ref().expect("generated for throughput");
            let mbps = loopback(reader, total, write as usize)?;
            note(format_args!(
                "  loopback, {} writes: {mbps:.0} MB/s",
                Human(write)
            ));
            loopback_runs[i].push(mbps);
        }
        let mut row = 0;
        for &config in &configs {
            for &transport in &transports {
                slot += 1;
                let reader = reader.as_ref().expect("generated for throughput");
                let sample = replicate(transport, config, reader, total, &dir.0, slot)?;
                note(format_args!(
                    "  {transport}, batch {}: {:.0} MB/s, first byte {:.0} us after connecting",
                    Human(sample.batch),
                    sample.mbps,
                    sample.first_byte.as_secs_f64() * 1e6
                ));
                if replication_runs.len() <= row {
                    replication_runs.push(Vec::new());
                }
                replication_runs[row].push(sample);
                row += 1;
            }
        }
    }
    let loopbacks: Vec<(u64, f64)> = if runs > 0 {
        writes
            .iter()
            .zip(&mut loopback_runs)
            .map(|(&w, runs)| (w, median(runs)))
            .collect()
    } else {
        Vec::new()
    };
    let reference = loopbacks.first().map_or(f64::NAN, |l| l.1);
    let replication: Vec<Throughput> = replication_runs.into_iter().map(median_row).collect();

    let mut latencies = Vec::new();
    if part(Part::Latency) {
        for &transport in &transports {
            note(format_args!("sync latency, {transport}"));
            latencies.extend(sync_latency(
                transport,
                configs[0],
                &args.message_sizes,
                args.messages.max(1),
                segment,
                &dir.0,
            )?);
        }
    }

    let mut fanouts = Vec::new();
    if part(Part::Fanout) {
        // Repeated like the throughput rows (interleaved), keeping the median case.
        let cases: Vec<(Transport, usize)> = transports
            .iter()
            .filter(|t| **t != Transport::Blocking)
            .flat_map(|&t| args.fanout.iter().map(move |&n| (t, n.max(1))))
            .collect();
        let mut samples: Vec<Vec<Fanout>> = cases.iter().map(|_| Vec::new()).collect();
        let reader = reader.as_ref().expect("generated for fan-out");
        for _ in 0..args.runs.max(1) {
            for (&(transport, slaves), runs) in cases.iter().zip(&mut samples) {
                note(format_args!("fan-out, {transport}, {slaves} slave(s)"));
                runs.push(fanout(
                    transport,
                    configs[0],
                    slaves,
                    reader,
                    args.fanout_bytes.0.min(total),
                    &dir.0,
                )?);
            }
        }
        for mut runs in samples {
            runs.sort_by(|a, b| a.aggregate.total_cmp(&b.aggregate));
            let mid = runs.len() / 2;
            fanouts.push(runs.swap_remove(mid));
        }
    }
    drop(source);

    let results = Results {
        machine,
        args: &args,
        loopbacks,
        reference,
        replication,
        latencies,
        fanouts,
        memory,
    };
    if args.json {
        println!("{}", results.json());
    } else {
        results.print();
    }
    Ok(())
}

fn note(message: std::fmt::Arguments<'_>) {
    eprintln!("bench: {message}");
}

/// The replication configuration for one batch size, as the `master` command uses it (the
/// first frame of a connection at most 32 KiB, doubling up to the batch), except that the whole
/// store is replicated (`OldestRetained`) so the stores can be compared.
fn config(batch: Size) -> Result<Config, Failure> {
    crate::config(
        batch,
        Size(crate::FIRST_BATCH),
        StartPosition::OldestRetained,
    )
}

fn dedup(values: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The row of the run with the median throughput, its other figures kept with it.
fn median_row(mut runs: Vec<Throughput>) -> Throughput {
    runs.sort_by(|a, b| a.mbps.total_cmp(&b.mbps));
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

fn generate(path: &Path, total: u64, segment: u64) -> Result<FileLog, Failure> {
    let mut log =
        FileLog::create(path, segment).context(format_args!("creating {}", path.display()))?;
    let mut generator = Generator::new(0xBE7C);
    while log.max_offset() < total {
        let n = (total - log.max_offset()).min(4 << 20);
        log.append_at_end(&generator.bytes(n))
            .context("writing the master store")?;
    }
    Ok(log)
}

/// A log seen only up to `end`: lets one generated store serve runs of any smaller size.
#[derive(Clone)]
struct Prefix {
    log: FileLogReader,
    end: u64,
}

impl LogSource for Prefix {
    fn min_offset(&self) -> u64 {
        self.log.min_offset()
    }

    fn max_offset(&self) -> u64 {
        self.end.min(self.log.max_offset())
    }

    fn segment_size(&self) -> u64 {
        self.log.segment_size()
    }

    fn read(&self, offset: u64, max_len: usize) -> Result<Bytes, LogError> {
        let max = self.max_offset();
        if offset > max {
            return Err(LogError::AboveMax { offset, max });
        }
        let room = usize::try_from(max - offset).unwrap_or(usize::MAX);
        self.log.read(offset, max_len.min(room))
    }
}

fn loopback_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Plain TCP over loopback: the store's first `total` bytes written in `write`-byte pieces
/// (slices of the memory-mapped store, as the master writes them) and read in 256 KiB reads.
fn loopback(source: &FileLogReader, total: u64, write: usize) -> Result<f64, Failure> {
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

/// Polls `done` every millisecond until it holds; fails after [`PHASE_LIMIT`] or when a driver
/// stopped. Polling (rather than waiting on the log's notification) keeps the measuring thread
/// from waking at every append of the slave it measures.
fn poll_until(
    what: &str,
    drivers: &[&Running],
    mut done: impl FnMut() -> bool,
) -> Result<(), Failure> {
    let limit = Instant::now() + PHASE_LIMIT;
    while !done() {
        if drivers.iter().any(|d| d.is_finished()) {
            return Err(Failure(format!("{what}: a driver stopped unexpectedly")));
        }
        if Instant::now() > limit {
            return Err(Failure(format!("{what}: no progress for {PHASE_LIMIT:?}")));
        }
        thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn replicate(
    transport: Transport,
    config: Config,
    source: &FileLogReader,
    total: u64,
    dir: &Path,
    slot: usize,
) -> Result<Throughput, Failure> {
    let what = format!("replication over {transport}");
    let prefix = Prefix {
        log: source.clone(),
        end: source.min_offset() + total,
    };
    let master = MasterHandle::new(prefix.clone(), config);
    let server = transport
        .spawn_master(loopback_addr(), master.clone())
        .context("starting the master")?;
    let addr = server
        .local_addr()
        .ok_or_else(|| Failure("the master has no address".into()))?;
    let store = dir.join(format!("slave-{slot}"));
    let slave_log = FileLog::create(&store, source.segment_size())
        .context(format_args!("creating {}", store.display()))?;
    let slave = SlaveHandle::new(addr, slave_log, config);

    let cpu_before = ThreadTimes::now();
    let started = Instant::now();
    let client = transport
        .spawn_slave(slave.clone())
        .context("starting the slave")?;
    let end = prefix.max_offset();
    // The slave's driver stamps both instants itself: this thread may wake late while master
    // and slave keep both CPUs busy.
    slave.wait_until_blocking(started + PHASE_LIMIT, |s| {
        s.status().first_stored_at.is_some()
    });
    let status = slave.status();
    let stored_first = status.first_stored_at.unwrap_or_else(Instant::now);
    let start_to_first_byte = stored_first.saturating_duration_since(started);
    let first_byte = status.connected_at.map_or(start_to_first_byte, |at| {
        stored_first.saturating_duration_since(at)
    });
    poll_until(&what, &[&server, &client], || {
        slave.log().max_offset() >= end
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = ThreadTimes::now().since(&cpu_before);
    client.shutdown().context("stopping the slave")?;
    server.shutdown().context("stopping the master")?;

    let comparison = compare_logs(&prefix, &*slave.log().read()).context("comparing the stores")?;
    if !comparison.identical() {
        return Err(Failure(format!(
            "{what}: the slave's store differs from the master's: {comparison:?}"
        )));
    }
    drop(slave);
    let _ = std::fs::remove_dir_all(&store);
    let gib = total as f64 / GIB;
    Ok(Throughput {
        transport,
        batch: u64::from(config.transfer_batch_size()),
        mbps: mb_per_s(total, elapsed),
        first_byte,
        start_to_first_byte,
        cpu_master: cpu.master_ns as f64 / 1e9 / gib,
        cpu_slave: cpu.slave_ns as f64 / 1e9 / gib,
    })
}

fn sync_latency(
    transport: Transport,
    config: Config,
    sizes: &[Size],
    messages: usize,
    segment: u64,
    dir: &Path,
) -> Result<Vec<Latency>, Failure> {
    let stores = (
        dir.join(format!("sync-master-{transport}")),
        dir.join(format!("sync-slave-{transport}")),
    );
    let log = FileLog::create(&stores.0, segment).context("creating the sync master store")?;
    let master = MasterHandle::new(log, config);
    let server = transport
        .spawn_master(loopback_addr(), master.clone())
        .context("starting the master")?;
    let addr = server
        .local_addr()
        .ok_or_else(|| Failure("the master has no address".into()))?;
    // The slave is another process, as in a deployment: the two sides share no allocator, no
    // locks and no async reactor (async-io's is per process), and the slave's thread competes
    // with the master's only for the CPU.
    let mut child = Child(
        std::process::Command::new(std::env::current_exe().context("finding this program")?)
            .args(["slave", "--master", &addr.to_string(), "--transport"])
            .arg(transport.name())
            .arg("--store")
            .arg(&stores.1)
            .args(["--segment-size", &segment.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting the slave process")?,
    );
    let timeout = Duration::from_secs(10);
    let what = format!("sync latency over {transport}");
    poll_until(&what, &[&server], || {
        master.slaves().iter().any(|s| s.acked.is_some()) || child.exited()
    })?;
    if child.exited() {
        return Err(Failure(format!("{what}: the slave process exited")));
    }

    let mut generator = Generator::new(0x5_1A7E);
    let put = |message: &Bytes| -> Result<Duration, Failure> {
        let started = Instant::now();
        master
            .append_replicated_blocking(message.clone(), 1, timeout)
            .context(format_args!("{what}: a sync put"))?;
        Ok(started.elapsed())
    };
    // Warm up the connection, the page cache and the branch predictors.
    let warm = generator.bytes(1024);
    for _ in 0..messages.clamp(10, 500) {
        put(&warm)?;
    }
    let mut rows = Vec::new();
    for size in sizes {
        let message = generator.bytes(size.0.max(1));
        let mut micros: Vec<f64> = (0..messages)
            .map(|_| put(&message).map(|d| d.as_secs_f64() * 1e6))
            .collect::<Result<_, _>>()?;
        micros.sort_by(f64::total_cmp);
        let at = |q: f64| micros[((micros.len() as f64 * q) as usize).min(micros.len() - 1)];
        rows.push(Latency {
            transport,
            size: size.0.max(1),
            percentiles: [at(0.50), at(0.90), at(0.99), at(0.999)],
        });
    }
    drop(child);
    server.shutdown().context("stopping the master")?;
    // The killed slave's bytes are in its files (the page cache survives the process).
    let slave_log = FileLog::open(&stores.1, segment).context("opening the slave's store")?;
    let comparison = compare_logs(&slave_log, &*master.log().read()).context("comparing")?;
    if !comparison.identical() {
        return Err(Failure(format!("{what}: stores differ: {comparison:?}")));
    }
    drop((master, slave_log));
    let _ = std::fs::remove_dir_all(&stores.0);
    let _ = std::fs::remove_dir_all(&stores.1);
    Ok(rows)
}

/// A child process, killed (and reaped) when dropped.
struct Child(std::process::Child);

impl Child {
    fn exited(&mut self) -> bool {
        !matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs every slave in `slaves` as a task of one executor on one new thread named
/// `ha-slave-host`, until each is shut down.
fn host_slaves<L>(
    transport: Transport,
    slaves: Vec<SlaveHandle<L>>,
) -> Result<thread::JoinHandle<()>, Failure>
where
    L: rocketmq_ha::LogSink + Send + Sync + 'static,
{
    use rocketmq_ha_transports::{smol as smol_driver, tokio as tokio_driver};
    let host = thread::Builder::new().name("ha-slave-host".into());
    let spawned = match transport {
        Transport::Smol => host.spawn(move || {
            let executor = async_executor::Executor::new();
            let tasks: Vec<_> = slaves
                .into_iter()
                .map(|s| executor.spawn(smol_driver::run_slave(s)))
                .collect();
            async_io::block_on(executor.run(async {
                for task in tasks {
                    task.await;
                }
            }));
        }),
        _ => host.spawn(move || {
            let Ok(runtime) = ::tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let mut set = ::tokio::task::JoinSet::new();
                for slave in slaves {
                    set.spawn(tokio_driver::run_slave(slave));
                }
                while set.join_next().await.is_some() {}
            });
        }),
    };
    spawned.context("starting the slaves' thread")
}

fn fanout(
    transport: Transport,
    config: Config,
    count: usize,
    source: &FileLogReader,
    total: u64,
    dir: &Path,
) -> Result<Fanout, Failure> {
    let what = format!("fan-out to {count} slaves over {transport}");
    let per_slave = (total / count as u64).max(1);
    let prefix = Prefix {
        log: source.clone(),
        end: source.min_offset() + per_slave,
    };
    let end = prefix.max_offset();
    let master = MasterHandle::new(prefix.clone(), config);
    let server = transport
        .spawn_master(loopback_addr(), master.clone())
        .context("starting the master")?;
    let addr = server
        .local_addr()
        .ok_or_else(|| Failure("the master has no address".into()))?;
    let mut slaves = Vec::with_capacity(count);
    for i in 0..count {
        let store = dir.join(format!("fanout-{transport}-{count}-{i}"));
        let log = FileLog::create(&store, source.segment_size())
            .context(format_args!("creating {}", store.display()))?;
        slaves.push(SlaveHandle::new(addr, log, config));
    }
    let cpu_before = ThreadTimes::now();
    let started = Instant::now();
    // The slaves are spread over one thread per CPU (round robin), standing in for slaves on
    // machines of their own: on one thread they, not the master, were the limit.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut groups: Vec<Vec<SlaveHandle<FileLog>>> = vec![Vec::new(); cpus.min(count)];
    let threads = groups.len();
    for (i, slave) in slaves.iter().enumerate() {
        groups[i % threads].push(slave.clone());
    }
    let hosts = groups
        .into_iter()
        .map(|group| host_slaves(transport, group))
        .collect::<Result<Vec<_>, _>>()?;
    let mut done: Vec<Option<f64>> = vec![None; count];
    let limit = started + PHASE_LIMIT;
    while done.iter().any(Option::is_none) {
        for (slave, at) in slaves.iter().zip(&mut done) {
            if at.is_none() && slave.log().max_offset() >= end {
                *at = Some(started.elapsed().as_secs_f64());
            }
        }
        if hosts.iter().any(|h| h.is_finished()) || server.is_finished() || Instant::now() > limit {
            return Err(Failure(format!("{what}: did not complete")));
        }
        thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = ThreadTimes::now().since(&cpu_before);
    for slave in &slaves {
        slave.shutdown();
    }
    for host in hosts {
        host.join()
            .map_err(|_| Failure("a slaves' thread panicked".into()))?;
    }
    server.shutdown().context("stopping the master")?;
    for slave in &slaves {
        let comparison =
            compare_logs(&prefix, &*slave.log().read()).context("comparing the stores")?;
        if !comparison.identical() {
            return Err(Failure(format!("{what}: a store differs: {comparison:?}")));
        }
    }
    drop(slaves);
    for i in 0..count {
        let _ = std::fs::remove_dir_all(dir.join(format!("fanout-{transport}-{count}-{i}")));
    }
    let mut per: Vec<f64> = done
        .iter()
        .map(|t| mb_per_s(per_slave, t.unwrap_or(elapsed)))
        .collect();
    let min = per.iter().copied().fold(f64::INFINITY, f64::min);
    let gib = (per_slave * count as u64) as f64 / GIB;
    Ok(Fanout {
        transport,
        slaves: count,
        cpu_master: cpu.master_ns as f64 / 1e9 / gib,
        cpu_slaves: cpu.slave_ns as f64 / 1e9 / gib,
        aggregate: mb_per_s(per_slave * count as u64, elapsed),
        per_slave_median: median(&mut per),
        per_slave_min: min,
    })
}

/// Resident memory per idle connection on each side: the growth of this process's RSS from
/// `n` to `2n` connections, divided by `n`. Taking the difference of two steps leaves out what
/// the first connection costs once (a runtime's thread, its arena).
fn idle_memory(transport: Transport, config: Config, n: usize) -> Result<Memory, Failure> {
    let rss = || resident_bytes().ok_or_else(|| Failure("cannot read /proc/self/status".into()));
    let settle = || thread::sleep(Duration::from_millis(50));

    // Master side: raw sockets play slaves that sent their first report (an empty slave's 0)
    // and then stay silent; the master's connections are then started and idle.
    let master = MasterHandle::new(MemoryLog::new(1 << 30), config);
    let server = transport
        .spawn_master(loopback_addr(), master.clone())
        .context("starting the master")?;
    let addr = server
        .local_addr()
        .ok_or_else(|| Failure("the master has no address".into()))?;
    let mut peers = Vec::with_capacity(2 * n);
    let what = format!("idle master connections over {transport}");
    let open_peers = |peers: &mut Vec<TcpStream>| -> Result<(), Failure> {
        for _ in 0..n {
            let mut socket = TcpStream::connect(addr).context("connecting to the master")?;
            socket.write_all(&[0; 8]).context("reporting")?;
            peers.push(socket);
        }
        let want = peers.len();
        poll_until(&what, &[&server], || {
            let slaves = master.slaves();
            slaves.len() == want && slaves.iter().all(|s| s.requested.is_some())
        })?;
        settle();
        Ok(())
    };
    open_peers(&mut peers)?;
    let one = rss()?;
    open_peers(&mut peers)?;
    let two = rss()?;
    let master_bytes = two.saturating_sub(one) as f64 / n as f64;
    drop(peers);
    server.shutdown().context("stopping the master")?;

    // Slave side: a raw listener plays a master that takes each report and sends nothing.
    let listener = TcpListener::bind(loopback_addr()).context("binding a loopback socket")?;
    let addr = listener.local_addr().context("listener address")?;
    let reported = Arc::new(AtomicUsize::new(0));
    let (release, released) = mpsc::channel::<()>();
    let acceptor = {
        let reported = Arc::clone(&reported);
        thread::Builder::new()
            .name("bench-acceptor".into())
            .spawn(move || {
                let mut held = Vec::with_capacity(2 * n);
                for _ in 0..2 * n {
                    let Ok((mut socket, _)) = listener.accept() else {
                        break;
                    };
                    let mut report = [0u8; 8];
                    if socket.read_exact(&mut report).is_ok() {
                        reported.fetch_add(1, Ordering::SeqCst);
                    }
                    held.push(socket);
                }
                let _ = released.recv();
            })
            .context("starting the acceptor")?
    };
    let mut handles = Vec::with_capacity(2 * n);
    let mut runners: Vec<Running> = Vec::new();
    let mut hosts = Vec::new();
    let mut open_slaves = |count: usize| -> Result<(), Failure> {
        let batch: Vec<SlaveHandle<MemoryLog>> = (0..n)
            .map(|_| SlaveHandle::new(addr, MemoryLog::new(1 << 30), config))
            .collect();
        handles.extend(batch.iter().cloned());
        match transport {
            Transport::Blocking => {
                for slave in batch {
                    runners.push(transport.spawn_slave(slave).context("starting a slave")?);
                }
            }
            _ => hosts.push(host_slaves(transport, batch)?),
        }
        let limit = Instant::now() + PHASE_LIMIT;
        while reported.load(Ordering::SeqCst) < count {
            if Instant::now() > limit {
                return Err(Failure(format!(
                    "idle slave connections over {transport}: only {} of {count} reported",
                    reported.load(Ordering::SeqCst)
                )));
            }
            thread::sleep(Duration::from_millis(1));
        }
        settle();
        Ok(())
    };
    // The async transports run each step's slaves on one thread; the first step's thread is
    // the fixed cost the difference leaves out, the second step's is spread over n slaves.
    open_slaves(n)?;
    let one = rss()?;
    open_slaves(2 * n)?;
    let two = rss()?;
    let slave_bytes = two.saturating_sub(one) as f64 / n as f64;
    for slave in &handles {
        slave.shutdown();
    }
    drop(runners);
    for host in hosts {
        let _ = host.join();
    }
    let _ = release.send(());
    let _ = acceptor.join();
    Ok(Memory {
        transport,
        master: master_bytes,
        slave: slave_bytes,
    })
}

/// Everything measured, for printing.
struct Results<'a> {
    machine: Machine,
    args: &'a BenchArgs,
    loopbacks: Vec<(u64, f64)>,
    reference: f64,
    replication: Vec<Throughput>,
    latencies: Vec<Latency>,
    fanouts: Vec<Fanout>,
    memory: Vec<Memory>,
}

impl Results<'_> {
    /// The headline CPU figures: the first row (first batch size, first transport).
    fn cpu(&self) -> (f64, f64) {
        self.replication
            .first()
            .map_or((f64::NAN, f64::NAN), |r| (r.cpu_master, r.cpu_slave))
    }

    /// The headline memory figures: the worst over the transports measured.
    fn worst_memory(&self) -> (f64, f64) {
        self.memory.iter().fold((0.0, 0.0), |(m, s), row| {
            (f64::max(m, row.master), f64::max(s, row.slave))
        })
    }

    fn first_byte_median(&self) -> f64 {
        let mut us: Vec<f64> = self
            .replication
            .iter()
            .map(|r| r.first_byte.as_secs_f64() * 1e6)
            .collect();
        median(&mut us)
    }

    fn print(&self) {
        let m = &self.machine;
        let a = self.args;
        println!(
            "rocketmq-ha bench: {} per run, {} segments, median of {} run(s)",
            Human(a.bytes.0),
            Human(a.segment_size.0),
            a.runs.max(1)
        );
        println!(
            "machine: {} CPUs, {}, Linux {}; load average at start {}",
            m.cpus, m.model, m.kernel, m.load
        );
        println!();
        if let Some(&(reference_write, _)) = self.loopbacks.first() {
            self.print_throughput(reference_write);
        }
        self.print_rest();
    }

    fn print_throughput(&self, reference_write: u64) {
        println!("loopback reference (plain TCP, 127.0.0.1, 256 KiB reads)");
        println!("  {:<12} {:>9}", "write size", "MB/s");
        for &(write, mbps) in &self.loopbacks {
            println!("  {:<12} {mbps:>9.0}", Human(write).to_string());
        }
        println!();
        println!(
            "replication master -> slave (fresh FileLog slave store, bytes verified); ratio to \
             the {} loopback row",
            Human(reference_write)
        );
        println!(
            "  {:<9} {:>9} {:>8} {:>8} {:>12} {:>15} {:>14}",
            "transport",
            "batch",
            "MB/s",
            "ratio",
            "first byte",
            "CPU master s/GiB",
            "CPU slave s/GiB"
        );
        for r in &self.replication {
            println!(
                "  {:<9} {:>9} {:>8.0} {:>7.0}% {:>9.0} us {:>15.3} {:>14.3}",
                r.transport.name(),
                Human(r.batch).to_string(),
                r.mbps,
                100.0 * r.mbps / self.reference,
                r.first_byte.as_secs_f64() * 1e6,
                r.cpu_master,
                r.cpu_slave
            );
        }
        println!();
    }

    fn print_rest(&self) {
        if !self.latencies.is_empty() {
            self.print_latency();
        }
        if !self.fanouts.is_empty() {
            self.print_fanout();
        }
        if !self.memory.is_empty() {
            self.print_memory();
        }
        if !self.replication.is_empty() {
            println!();
            println!(
                "time from a slave's connect to its first stored byte (median over the \
                 replication rows): {:.0} us",
                self.first_byte_median()
            );
        }
    }

    fn print_latency(&self) {
        println!(
            "sync replication latency (append, then wait for the slave's ack; {} messages per \
             size)",
            self.args.messages.max(1)
        );
        println!(
            "  {:<9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "transport", "message", "p50 us", "p90 us", "p99 us", "p99.9 us"
        );
        for l in &self.latencies {
            let [p50, p90, p99, p999] = l.percentiles;
            println!(
                "  {:<9} {:>9} {p50:>9.0} {p90:>9.0} {p99:>9.0} {p999:>9.0}",
                l.transport.name(),
                Human(l.size).to_string()
            );
        }
        println!();
    }

    fn print_fanout(&self) {
        let a = self.args;
        println!(
            "fan-out (one master; the slaves spread over one thread per CPU; {} per case divided \
             among the slaves; median of {} run(s))",
            Human(a.fanout_bytes.0.min(a.bytes.0)),
            a.runs.max(1)
        );
        println!(
            "  {:<9} {:>7} {:>15} {:>22} {:>17} {:>16}",
            "transport",
            "slaves",
            "aggregate MB/s",
            "per slave MB/s med/min",
            "CPU master s/GiB",
            "CPU slaves s/GiB"
        );
        for f in &self.fanouts {
            println!(
                "  {:<9} {:>7} {:>15.0} {:>14.0} / {:<6.0} {:>17.3} {:>16.3}",
                f.transport.name(),
                f.slaves,
                f.aggregate,
                f.per_slave_median,
                f.per_slave_min,
                f.cpu_master,
                f.cpu_slaves
            );
        }
        println!();
    }

    fn print_memory(&self) {
        let n = self.args.idle_connections.max(1);
        println!(
            "memory per idle connection (VmRSS growth from {n} to {} connections, / {n})",
            2 * n
        );
        println!("  {:<9} {:>12} {:>12}", "transport", "master", "slave");
        for m in &self.memory {
            println!(
                "  {:<9} {:>12} {:>12}",
                m.transport.name(),
                Human(m.master as u64).to_string(),
                Human(m.slave as u64).to_string()
            );
        }
    }

    fn json(&self) -> Json {
        let (cpu_master, cpu_slave) = self.cpu();
        let (mem_master, mem_slave) = self.worst_memory();
        let m = &self.machine;
        Json::obj([
            ("loopback_mbps", self.reference.into()),
            (
                "loopback",
                Json::List(
                    self.loopbacks
                        .iter()
                        .map(|&(write, mbps)| {
                            Json::obj([("write_size", write.into()), ("mbps", mbps.into())])
                        })
                        .collect(),
                ),
            ),
            (
                "replication",
                Json::List(
                    self.replication
                        .iter()
                        .map(|r| {
                            Json::obj([
                                ("transport", r.transport.name().into()),
                                ("batch_size", r.batch.into()),
                                ("mbps", r.mbps.into()),
                                ("ratio_to_loopback", (r.mbps / self.reference).into()),
                                ("first_byte_us", (r.first_byte.as_secs_f64() * 1e6).into()),
                                (
                                    "start_to_first_byte_us",
                                    (r.start_to_first_byte.as_secs_f64() * 1e6).into(),
                                ),
                                ("cpu_master_s_per_gib", r.cpu_master.into()),
                                ("cpu_slave_s_per_gib", r.cpu_slave.into()),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "sync_latency_us",
                Json::List(
                    self.latencies
                        .iter()
                        .map(|l| {
                            let [p50, p90, p99, p999] = l.percentiles;
                            Json::obj([
                                ("transport", l.transport.name().into()),
                                ("message_size", l.size.into()),
                                ("p50", p50.into()),
                                ("p90", p90.into()),
                                ("p99", p99.into()),
                                ("p999", p999.into()),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "fanout",
                Json::List(
                    self.fanouts
                        .iter()
                        .map(|f| {
                            Json::obj([
                                ("transport", f.transport.name().into()),
                                ("slaves", f.slaves.into()),
                                ("aggregate_mbps", f.aggregate.into()),
                                ("per_slave_mbps_median", f.per_slave_median.into()),
                                ("per_slave_mbps_min", f.per_slave_min.into()),
                                ("cpu_master_s_per_gib", f.cpu_master.into()),
                                ("cpu_slaves_s_per_gib", f.cpu_slaves.into()),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "memory_per_connection_bytes",
                Json::obj([
                    ("master", mem_master.into()),
                    ("slave", mem_slave.into()),
                    (
                        "by_transport",
                        Json::List(
                            self.memory
                                .iter()
                                .map(|m| {
                                    Json::obj([
                                        ("transport", m.transport.name().into()),
                                        ("master", m.master.into()),
                                        ("slave", m.slave.into()),
                                    ])
                                })
                                .collect(),
                        ),
                    ),
                ]),
            ),
            (
                "cpu_seconds_per_gib",
                Json::obj([("master", cpu_master.into()), ("slave", cpu_slave.into())]),
            ),
            ("first_data_byte_us", self.first_byte_median().into()),
            (
                "machine",
                Json::obj([
                    ("cpus", m.cpus.into()),
                    ("cpu_model", m.model.as_str().into()),
                    ("kernel", m.kernel.as_str().into()),
                    ("load_average", m.load.as_str().into()),
                ]),
            ),
        ])
    }
}
