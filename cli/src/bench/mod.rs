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
//! - **ping-pong**: the latency reference, a plain TCP request/response of each message size
//!   with the same process layout (a child process answers 8 bytes), so each sync-latency row
//!   also reads as a ratio to the network's round trip.
//! - **fan-out**: one master and N slaves (tasks of one executor per thread, one thread per CPU
//!   at most), each into its own fresh store, the case's bytes divided among them.
//! - **memory**: the growth of this process's resident memory from N to 2N idle connections,
//!   divided by N, on the master side (against raw sockets that sent their first report) and on
//!   the slave side (against a raw listener that sends nothing).
//!
//! One module per measurement (`loopback`, `throughput`, `latency`, `fanout`, `memory`); this
//! one holds the options, runs the parts in order and keeps what they share; `report` prints
//! the figures.

mod fanout;
mod flow;
mod json;
mod latency;
mod link;
mod loopback;
mod memory;
mod pingpong;
mod probe;
mod report;
mod throughput;

use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketmq_ha::{Config, LogError, LogSource, StartPosition};
use rocketmq_ha_transports::file_log::{FileLog, FileLogReader, StoreFormat};
use rocketmq_ha_transports::{Running, SlaveHandle, Transport};

use crate::size::{Human, SegmentSize, Size};
use crate::{Context, Failure, TempDir, TransportArg};
use fanout::{fanout, Fanout};
use flow::flow;
pub use json::Json;
use latency::sync_latency;
pub use link::sink;
use loopback::loopback;
use memory::idle_memory;
pub use pingpong::echo;
use pingpong::ping_pong;
use probe::Machine;
use report::Results;
use throughput::{median_row, replicate, Throughput};

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
    segment_size: SegmentSize,
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
    /// Replicate RocketMQ messages (1 KiB bodies) instead of random bytes in the throughput
    /// test, its slaves checking every record as it arrives (`slave --verify`): the check's
    /// cost, against a run without this flag.
    #[arg(long)]
    records: bool,
    /// Replication protocol of the throughput and sync-latency tests: classic, or RocketMQ 5's
    /// AutoSwitch (master broker 1 at epoch 1, slave broker 2).
    #[arg(long, value_enum, default_value_t)]
    protocol: crate::protocol::ProtocolArg,
    /// Let the throughput test's master send frame bodies of 64 KiB or more from its segment
    /// files (`sendfile`), as `MasterHandle::set_send_from_files` does; off by default.
    #[arg(long)]
    sendfile: bool,
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
    /// The flow-control limit to hold (RocketMQ's maxHaTransferByteInSecond).
    #[arg(long, value_name = "BYTES_PER_SEC", default_value = "100MiB")]
    flow_rate: Size,
    /// Seconds over which the flow-control rate is measured.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    flow_seconds: u64,
    /// Measure only these parts, comma-separated (default: all).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "throughput,latency,fanout,memory,flow"
    )]
    only: Vec<Part>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Instead of loopback, measure across a link of this rate (e.g. 1gbit, 10gbit): two
    /// network namespaces joined by a veth pair, `tc tbf` limiting each way (root only). Runs
    /// a plain TCP stream, replication (the first --transport and --batch-size), ping-pong and
    /// sync latency across it; the other parts are skipped.
    #[arg(long, value_name = "RATE")]
    link: Option<link::LinkRate>,
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
    /// A flow-control limit held over a window.
    Flow,
}

/// Refuses 0 for `option`, naming it: a size or count of nothing gives no figure.
pub(crate) fn positive(option: &str, value: u64) -> Result<(), Failure> {
    match value {
        0 => Err(Failure(format!("{option} 0: must be more than 0"))),
        _ => Ok(()),
    }
}

/// Refuses a rate below `least` bytes a second for `option`, naming it, rather than raising
/// it silently.
pub(crate) fn at_least(option: &str, value: u64, least: u64) -> Result<(), Failure> {
    match value < least {
        true => Err(Failure(format!(
            "{option} {value}: must be at least {least} bytes a second"
        ))),
        false => Ok(()),
    }
}

/// Refuses options that would measure nothing or print nonsense (a rate over zero bytes, a
/// part with no transport to run on), naming the option, before anything is generated.
fn check(args: &BenchArgs) -> Result<(), Failure> {
    if args.batch_size.is_empty() || args.transport.is_empty() {
        return Err(Failure("give at least one transport and batch size".into()));
    }
    positive("--bytes", args.bytes.0)?;
    positive("--fanout-bytes", args.fanout_bytes.0)?;
    positive("--runs", args.runs as u64)?;
    positive("--messages", args.messages as u64)?;
    positive("--idle-connections", args.idle_connections as u64)?;
    positive("--flow-seconds", args.flow_seconds)?;
    for size in &args.message_sizes {
        positive("--message-sizes", size.0)?;
    }
    for &slaves in &args.fanout {
        positive("--fanout", slaves as u64)?;
    }
    at_least("--flow-rate", args.flow_rate.0, rocketmq_ha::flow::MIN_RATE)?;
    let async_transport = args
        .transport
        .iter()
        .any(|&t| Transport::from(t) != Transport::Blocking);
    if args.only.contains(&Part::Fanout) && !async_transport {
        let message = "the fan-out test runs on the async transports only (smol, tokio), and \
                       --transport names none";
        if args.only.iter().all(|&p| p == Part::Fanout) {
            return Err(Failure(format!("--only fanout: {message}")));
        }
        eprintln!("note: skipping fan-out: {message}");
    }
    Ok(())
}

pub fn bench(args: BenchArgs) -> Result<(), Failure> {
    check(&args)?;
    let part = |p: Part| args.only.contains(&p);
    let transports: Vec<Transport> = args.transport.iter().map(|&t| t.into()).collect();
    let machine = Machine::describe();
    let dir = TempDir::new("bench", false)?;
    let total = args.bytes.0.max(1);
    let segment = args.segment_size.0;
    if let Some(rate) = args.link {
        return link::run(link::LinkArgs {
            rate,
            transport: transports[0],
            batch: args.batch_size[0],
            total,
            segment,
            messages: args.messages.max(1),
            sizes: &args.message_sizes,
            dir: &dir,
        });
    }
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
        Some(generate(
            &dir.0.join("master"),
            total,
            segment,
            args.records,
        )?)
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
                let config = if args.records {
                    config
                        .to_builder()
                        .local_segment_size(std::num::NonZeroU64::new(segment))
                        .verify_records(true)
                        .build()
                        .context("invalid settings")?
                } else {
                    config
                };
                let sample = replicate(
                    transport,
                    config,
                    args.protocol,
                    reader,
                    total,
                    &dir.0,
                    slot,
                    args.sendfile,
                )?;
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
    let mut ping_pongs = Vec::new();
    if part(Part::Latency) {
        note(format_args!("ping-pong reference"));
        ping_pongs = ping_pong(
            &args.message_sizes,
            args.messages.max(1),
            &Peers::loopback(),
        )?;
        for &transport in &transports {
            note(format_args!("sync latency, {transport}"));
            latencies.extend(sync_latency(
                transport,
                configs[0],
                args.protocol,
                &args.message_sizes,
                args.messages.max(1),
                segment,
                &dir.0,
                &Peers::loopback(),
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

    let mut flows = Vec::new();
    if part(Part::Flow) {
        for &transport in &transports {
            note(format_args!(
                "flow control, {transport}, {}/s for {} s",
                Human(args.flow_rate.0),
                args.flow_seconds
            ));
            flows.push(flow(
                transport,
                configs[0],
                args.flow_rate.0,
                Duration::from_secs(args.flow_seconds.max(1)),
            )?);
        }
    }

    let results = Results {
        machine,
        args: &args,
        loopbacks,
        reference,
        replication,
        latencies,
        ping_pongs,
        fanouts,
        memory,
        flows,
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

/// The master's store: `total` bytes of random data, or with `records` of RocketMQ messages
/// in a RocketMQ-format store.
fn generate(path: &Path, total: u64, segment: u64, records: bool) -> Result<FileLog, Failure> {
    let format = if records {
        StoreFormat::RocketMq
    } else {
        StoreFormat::Raw
    };
    let mut log = FileLog::create_in(path, segment, format)
        .context(format_args!("creating {}", path.display()))?;
    let mut payload = crate::Payload::for_store(&log, Size(1024));
    while log.max_offset() < total {
        let data = payload.bytes((total - log.max_offset()).min(4 << 20))?;
        log.append_at_end(&data)
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

    fn file_region(&self, offset: u64, len: usize) -> Option<rocketmq_ha::FileRegion> {
        self.log.file_region(offset, len)
    }
}

fn loopback_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Where a benchmark's child processes run and what the benchmark binds to reach them: this
/// network namespace over loopback (the default), or the far end of a link (`--link`).
#[derive(Clone, Debug)]
pub(super) struct Peers {
    bind: std::net::IpAddr,
    netns: Option<String>,
}

impl Peers {
    pub(super) fn loopback() -> Peers {
        Peers {
            bind: loopback_addr().ip(),
            netns: None,
        }
    }

    /// Listeners bind here (any port).
    pub(super) fn bind_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, 0)
    }

    /// A command running this program where the peers run.
    pub(super) fn command(&self) -> Result<std::process::Command, Failure> {
        let exe = std::env::current_exe().context("finding this program")?;
        Ok(match &self.netns {
            None => std::process::Command::new(exe),
            Some(ns) => {
                let mut command = std::process::Command::new("ip");
                command.args(["netns", "exec", ns]).arg(exe);
                command
            }
        })
    }
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
