//! `rocketmq-ha`: serve a commit log store as a RocketMQ HA master, replicate one as a slave, or
//! run both over loopback with generated data (`demo`, no set-up needed).

mod access;
mod bench;
mod broker_conf;
mod inspect;
mod listen;
mod logging;
mod metrics;
mod policy;
mod produce;
mod progress;
mod protocol;
mod records;
mod seconds;
mod signals;
mod size;
mod status;
mod tls;

use std::fmt::Display;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use rocketmq_ha::flow::RateLimit;
use rocketmq_ha::{Config, LogSource, StartPosition};
use rocketmq_ha_transports::file_log::{compare_logs, FileLog, FlushMode, Flusher, StoreFormat};
use rocketmq_ha_transports::{
    CloseReason, MasterHandle, Running, SharedLog, SlaveHandle, Transport,
};

use broker_conf::BrokerConf;
use policy::Policy;
use progress::{Progress, Rate};
use seconds::Seconds;
use size::{mb_per_s, Human, SegmentSize, Size};
use status::{MasterStatus, StatusFormat, SyncCounts};

/// Apache RocketMQ master/slave commit log replication (HA), wire-compatible with RocketMQ's
/// classic HA protocol (4.x, and 5.x outside controller mode).
#[derive(Parser)]
#[command(name = "rocketmq-ha", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log detail: -v debug, -vv trace (frames and acks). Without -v or -q, RUST_LOG
    /// (e.g. RUST_LOG=rocketmq_ha_transports=trace) applies when set; the default is info.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less log detail: -q warnings and errors only, -qq errors only.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    quiet: u8,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a commit log store to slaves (RocketMQ's HA master).
    Master(MasterArgs),
    /// Replicate a master's commit log into a local store (RocketMQ's HA slave).
    Slave(SlaveArgs),
    /// Replicate generated data from a master to a slave over loopback in this process, verify
    /// the two stores are byte-identical, print the throughput, and clean up. Needs no set-up.
    Demo(DemoArgs),
    /// Measure replication on loopback beside a plain-TCP reference: throughput per transport
    /// and batch size, sync-replication latency, fan-out, memory per idle connection, CPU per
    /// GiB. Prints a table (or one JSON object with --json).
    Bench(bench::BenchArgs),
    /// Write generated RocketMQ messages into a store (created in RocketMQ's format if
    /// missing), to fill or grow a master's store before serving it. The store must not be in
    /// use (it is locked while open).
    Produce(produce::ProduceArgs),
    /// Describe a store: its format (ours or RocketMQ's), segments, offsets, what is synced,
    /// and for a RocketMQ-format store the records its recovery walk found and the first bad
    /// one. The store must not be in use (it is locked while open).
    Inspect(inspect::InspectArgs),
    /// The benchmark's ping-pong partner (internal): answers each length-prefixed message with
    /// 8 bytes.
    #[command(hide = true)]
    Echo {
        /// The benchmark's address.
        #[arg(long)]
        connect: SocketAddr,
    },
    /// The link benchmark's TCP reference partner (internal): reads until EOF, answers the
    /// byte count.
    #[command(hide = true)]
    Sink {
        /// The benchmark's address.
        #[arg(long)]
        connect: SocketAddr,
    },
}

/// Which driver moves the bytes.
#[derive(Clone, Copy, Default, ValueEnum)]
enum TransportArg {
    /// std sockets and threads
    #[default]
    Blocking,
    /// async-io (smol), no tokio
    Smol,
    /// tokio
    Tokio,
}

/// How a new store keeps the log (an existing one is opened in its own format, which must be
/// this one if given).
#[derive(Clone, Copy, ValueEnum)]
enum StoreFormatArg {
    /// Ours: segment files hold the log bytes and end where the log ends; any bytes.
    Raw,
    /// RocketMQ's: full-size segment files of CommitLog records, with RocketMQ's checkpoint,
    /// lock and abort files; a RocketMQ broker starts on it.
    Rocketmq,
}

impl From<StoreFormatArg> for StoreFormat {
    fn from(arg: StoreFormatArg) -> StoreFormat {
        match arg {
            StoreFormatArg::Raw => StoreFormat::Raw,
            StoreFormatArg::Rocketmq => StoreFormat::RocketMq,
        }
    }
}

impl From<TransportArg> for Transport {
    fn from(arg: TransportArg) -> Transport {
        match arg {
            TransportArg::Blocking => Transport::Blocking,
            TransportArg::Smol => Transport::Smol,
            TransportArg::Tokio => Transport::Tokio,
        }
    }
}

#[derive(clap::Args)]
struct MasterArgs {
    /// Address to listen on for slaves, HOST:PORT (a name or an address; RocketMQ's HA port is
    /// the broker's port + 1, haListenPort of --config).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:10912")]
    listen: String,
    /// Store directory, holding `commitlog/` (or storePathRootDir / storePathCommitLog of
    /// --config); created empty if missing.
    #[arg(long, value_name = "DIR", required_unless_present = "broker_conf")]
    store: Option<PathBuf>,
    /// Segment (mapped file) size of the store, 4KiB to 64GiB; slaves must use the same.
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    segment_size: SegmentSize,
    /// Format of a new store (default raw); an existing store must be in this format.
    #[arg(long, value_enum, value_name = "FORMAT")]
    store_format: Option<StoreFormatArg>,
    /// Driver to use.
    #[arg(long, value_enum, default_value_t)]
    transport: TransportArg,
    /// Append generated data at this rate (e.g. 10MiB), to test a growing log: RocketMQ
    /// messages of --message-size bodies in a RocketMQ-format store, random bytes in a raw one.
    #[arg(long, value_name = "BYTES_PER_SEC")]
    append_rate: Option<Size>,
    /// Body size of the messages --append-rate writes into a RocketMQ-format store.
    #[arg(long, value_name = "SIZE", default_value = "1KiB")]
    message_size: Size,
    /// Most log bytes per transfer frame (RocketMQ's haTransferBatchSize, 32 KiB in RocketMQ;
    /// a Java slave accepts up to 4194292, so the larger default suits it as well).
    #[arg(long, value_name = "SIZE", default_value = "1MiB")]
    batch_size: Size,
    /// Most log bytes in the first frame of a connection; each next frame may carry twice as
    /// much, up to --batch-size.
    #[arg(long, value_name = "SIZE", default_value = "32KiB")]
    first_batch_size: Size,
    /// Start an empty slave at the oldest byte of the store instead of at the start of the last
    /// segment (RocketMQ's rule).
    #[arg(long)]
    from_oldest: bool,
    /// Flow control: the most bytes a second (headers and bodies) sent to each slave
    /// (RocketMQ's haFlowControlEnable + maxHaTransferByteInSecond, 100MiB when on). Off by
    /// default.
    #[arg(long, value_name = "BYTES_PER_SEC")]
    rate_limit: Option<Size>,
    /// With --rate-limit: one limit for all slaves together, split evenly among them.
    #[arg(long, requires = "rate_limit")]
    rate_limit_shared: bool,
    /// Send frame bodies of 64 KiB or more from the segment files (`sendfile`, plain TCP):
    /// spares the master its copy into the socket. Off by default: on loopback the slave paid
    /// more than the master saved (see the README's Performance section).
    #[arg(long)]
    sendfile: bool,
    /// Make --append-rate's appends synchronous, like SYNC_MASTER puts: each waits for the
    /// slaves --sync-policy asks for (by default one) for up to 3 s (slaveTimeout) and counts
    /// as failed otherwise.
    #[arg(long, requires = "append_rate")]
    sync: bool,
    /// Which slaves a synchronous append waits for: slaves:N (the default, slaves:1: a
    /// SYNC_MASTER always waits for a slave), slave-ok (RocketMQ 4.9: fail at once unless a
    /// slave is connected and close), in-sync:N[,min=M][,auto] (RocketMQ 5's inSyncReplicas,
    /// minInSyncReplicas, enableAutoInSyncReplicas; N counts the master, so RocketMQ 5's
    /// default in-sync:1 waits for no slave at all), all-in-sync (allAckInSyncStateSet).
    #[arg(long, value_name = "POLICY", default_value = "slaves:1")]
    sync_policy: Policy,
    /// Read the HA and store keys of a RocketMQ broker.conf (brokerRole, storePathRootDir,
    /// storePathCommitLog, flushDiskType, haListenPort, mappedFileSizeCommitLog,
    /// haSendHeartbeatInterval, haHousekeepingInterval, haTransferBatchSize, haMaxGapNotInSync,
    /// slaveTimeout, haFlowControlEnable, maxHaTransferByteInSecond, inSyncReplicas,
    /// minInSyncReplicas, enableAutoInSyncReplicas, allAckInSyncStateSet); flags given here win
    /// over the file, other keys are ignored.
    #[arg(long = "config", visible_alias = "broker-conf", value_name = "FILE")]
    broker_conf: Option<PathBuf>,
    /// Seconds between status reports (more than 0, at most a day; below 0.1, reports come
    /// every 0.1 s).
    #[arg(
        long,
        value_name = "SECS",
        default_value = "1",
        allow_hyphen_values = true
    )]
    status_interval: Seconds,
    #[command(flatten)]
    access: access::AccessArgs,
    #[command(flatten)]
    tls: tls::MasterTlsArgs,
    /// Status output on stdout: one summary line per interval (text), or one JSON object per
    /// line for scripts (json: a "status" object per interval, "connected", "started" and
    /// "closed" objects as they happen).
    #[arg(long, value_enum, default_value_t)]
    status: StatusFormat,
    /// Serve Prometheus metrics on this address (GET /metrics), e.g. 127.0.0.1:9712.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    #[command(flatten)]
    protocol: protocol::ProtocolArgs,
}

#[derive(clap::Args)]
struct SlaveArgs {
    /// The master's HA address, HOST:PORT (or haMasterAddress of --config); a host name is
    /// resolved again before every reconnect.
    #[arg(long, value_name = "ADDR", required_unless_present = "broker_conf")]
    master: Option<String>,
    /// Read the HA and store keys of a RocketMQ broker.conf (brokerRole, haMasterAddress,
    /// storePathRootDir, storePathCommitLog, flushDiskType, mappedFileSizeCommitLog,
    /// haSendHeartbeatInterval, haHousekeepingInterval); flags given here win over the file,
    /// other keys are ignored.
    #[arg(long = "config", visible_alias = "broker-conf", value_name = "FILE")]
    broker_conf: Option<PathBuf>,
    /// Store directory, holding `commitlog/` (or storePathRootDir / storePathCommitLog of
    /// --config); created empty if missing.
    #[arg(long, value_name = "DIR", required_unless_present = "broker_conf")]
    store: Option<PathBuf>,
    /// Segment (mapped file) size of the store, 4KiB to 64GiB; must equal the master's (an
    /// existing store of another size is refused, and a master whose frames show another size
    /// is refused as soon as they do).
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    segment_size: SegmentSize,
    /// Format of a new store (default raw); an existing store must be in this format. With
    /// rocketmq, a RocketMQ broker can start on the store (give it the same
    /// mappedFileSizeCommitLog).
    #[arg(long, value_enum, value_name = "FORMAT")]
    store_format: Option<StoreFormatArg>,
    /// Check every record the master sends (RocketMQ's recovery checks: sizes, magic code,
    /// field lengths, body CRC) before storing it; a record that fails is not stored and the
    /// slave retries after a back-off. The master's log must be RocketMQ messages.
    #[arg(long)]
    verify: bool,
    /// Driver to use.
    #[arg(long, value_enum, default_value_t)]
    transport: TransportArg,
    /// Exit successfully once the local log reaches this offset (sizes like 512MiB work too).
    #[arg(long, value_name = "OFFSET")]
    until: Option<Size>,
    /// Make received data durable (fdatasync, checkpoint) before acknowledging it, so that an
    /// ack means "on the slave's disk", which RocketMQ never promises. Without it the store is
    /// flushed as RocketMQ flushes (every 0.5 s if 16 KiB are new, at least every 10 s), and an
    /// ack means "in the slave's page cache": it survives the slave being killed, not a power
    /// loss.
    #[arg(long)]
    flush_before_ack: bool,
    /// Progress on stderr (text), or one JSON object per line on stdout for scripts (json: a
    /// "status" object each second, "connected" and "closed" objects as they happen).
    #[arg(long, value_enum, default_value_t)]
    status: StatusFormat,
    /// Serve Prometheus metrics on this address (GET /metrics), e.g. 127.0.0.1:9713.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    #[command(flatten)]
    protocol: protocol::ProtocolArgs,
    #[command(flatten)]
    tls: tls::SlaveTlsArgs,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// How much data to generate and replicate.
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    bytes: Size,
    /// Segment size of both stores, 4KiB to 64GiB (small, so replication crosses segments).
    #[arg(long, value_name = "SIZE", default_value = "64MiB")]
    segment_size: SegmentSize,
    /// Driver to use.
    #[arg(long, value_enum, default_value_t)]
    transport: TransportArg,
    /// Most log bytes per transfer frame.
    #[arg(long, value_name = "SIZE", default_value = "1MiB")]
    batch_size: Size,
    /// Replicate RocketMQ messages (1 KiB bodies) between RocketMQ-format stores instead of
    /// random bytes between raw ones, the slave checking each record as it arrives.
    #[arg(long)]
    records: bool,
    /// Keep the temporary stores (their path is printed) instead of deleting them.
    #[arg(long)]
    keep: bool,
}

/// A failure shown to the user: what we were doing, and why it failed.
#[derive(Debug)]
struct Failure(String);

trait Context<T> {
    fn context(self, doing: impl Display) -> Result<T, Failure>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn context(self, doing: impl Display) -> Result<T, Failure> {
        self.map_err(|e| Failure(format!("{doing}: {e}")))
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    logging::init(cli.verbose, cli.quiet);
    let sub = matches.subcommand().map(|(_, m)| m);
    let given = Given(sub);
    let result = match cli.command {
        Command::Master(args) => master(args, &given),
        Command::Slave(args) => slave(args, &given),
        Command::Demo(args) => demo(args),
        Command::Bench(args) => bench::bench(args),
        Command::Echo { connect } => bench::echo(connect),
        Command::Sink { connect } => bench::sink(connect),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Produce(args) => produce::produce(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("rocketmq-ha: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Which options were given on the command line (they win over `--broker-conf`).
struct Given<'a>(Option<&'a ArgMatches>);

impl Given<'_> {
    fn flag(&self, id: &str) -> bool {
        self.0
            .is_some_and(|m| m.value_source(id) == Some(ValueSource::CommandLine))
    }
}

/// Reads `--config`, or nothing; checks its role against the command and says which keys it
/// uses.
fn broker_conf(path: Option<&Path>, master: bool) -> Result<BrokerConf, Failure> {
    let conf = path.map_or(Ok(BrokerConf::default()), BrokerConf::load)?;
    conf.check_role(master)?;
    if let Some(summary) = conf.summary() {
        eprintln!("{summary}");
    }
    Ok(conf)
}

/// `--store`, else the store directory of `--config`.
fn store_dir(flag: Option<PathBuf>, conf: &BrokerConf) -> Result<PathBuf, Failure> {
    match flag {
        Some(store) => Ok(store),
        None => conf.store_dir()?.ok_or_else(|| {
            Failure("give --store, or storePathRootDir or storePathCommitLog in --config".into())
        }),
    }
}

/// A segment size from a broker.conf, checked as `--segment-size` is.
fn conf_segment_size(conf: &BrokerConf, flag: SegmentSize) -> Result<SegmentSize, Failure> {
    match conf.segment_size()? {
        Some(size) => size
            .to_string()
            .parse()
            .map_err(|e| Failure(format!("mappedFileSizeCommitLog={size}: {e}"))),
        None => Ok(flag),
    }
}

/// The most log bytes in the first frame of a connection (doubling per frame up to the batch
/// size): a connecting slave stores its first bytes without waiting for a whole large batch.
const FIRST_BATCH: u64 = 32 * 1024;

fn config(batch: Size, first: Size, start: StartPosition) -> Result<Config, Failure> {
    config_with(Config::builder(), batch, first, start)
}

fn config_with(
    builder: rocketmq_ha::ConfigBuilder,
    batch: Size,
    first: Size,
    start: StartPosition,
) -> Result<Config, Failure> {
    // The core's errors name its settings; a user typed options.
    let size = |s: Size, option: &str| match u32::try_from(s.0) {
        Ok(0) => Err(Failure(format!("{option} 0: must be at least 1 byte"))),
        Ok(n) if n > MAX_BATCH => Err(Failure(format!(
            "{option} {}: at most {MAX_BATCH} bytes (a frame, its 12-byte header included, \
             must fit the 4 MiB a slave accepts)",
            s.0
        ))),
        Ok(n) => Ok(n),
        Err(_) => Err(Failure(format!(
            "{option} {}: at most {MAX_BATCH} bytes",
            s.0
        ))),
    };
    builder
        .transfer_batch_size(size(batch, "--batch-size")?)
        .first_batch_size(Some(size(first, "--first-batch-size")?))
        .start_position(start)
        .build()
        .context("invalid settings")
}

/// The largest batch whose frame fits a Java slave's 4 MiB read buffer (§2.2).
const MAX_BATCH: u32 =
    rocketmq_ha::wire::JAVA_MAX_FRAME_SIZE - rocketmq_ha::wire::TRANSFER_HEADER_LEN as u32;

fn open_store(
    path: &Path,
    segment_size: SegmentSize,
    format: Option<StoreFormatArg>,
) -> Result<FileLog, Failure> {
    let log = match format {
        Some(format) => FileLog::open_or_create_in(path, segment_size.0, format.into()),
        None => FileLog::open_or_create(path, segment_size.0),
    }
    .context(format_args!("opening store {}", path.display()))?;
    // Which format was found decides where the log ends (file lengths, or the last record):
    // say so, with what the record walk found.
    match log.record_walk() {
        Some(walk) => eprintln!(
            "store {}: RocketMQ format, end found by walking {} records from offset {}{}",
            path.display(),
            walk.records,
            walk.start,
            walk.first_bad
                .as_ref()
                .map(|e| format!("; the log ends at a bad record ({e})"))
                .unwrap_or_default()
        ),
        None => eprintln!("store {}: {} format", path.display(), log.mode()),
    }
    Ok(log)
}

fn master(mut args: MasterArgs, given: &Given<'_>) -> Result<(), Failure> {
    if let Some(rate) = args.append_rate {
        bench::positive("--append-rate", rate.0)?;
    }
    if let Some(rate) = args.rate_limit {
        bench::at_least("--rate-limit", rate.0, rocketmq_ha::flow::MIN_RATE)?;
    }
    let role = args.protocol.role()?;
    let conf = broker_conf(args.broker_conf.as_deref(), true)?;
    let port = match given.flag("listen") {
        true => None,
        false => conf.listen_port()?,
    };
    let listen = listen::listen_address(&args.listen, port)?;
    let store = store_dir(args.store.take(), &conf)?;
    if !given.flag("segment_size") {
        args.segment_size = conf_segment_size(&conf, args.segment_size)?;
    }
    if !given.flag("batch_size") {
        if let Some(batch) = conf.batch_size()? {
            args.batch_size = Size(batch);
        }
    }
    if !given.flag("rate_limit") {
        args.rate_limit = conf.rate_limit()?.map(Size).or(args.rate_limit);
    }
    if !given.flag("sync_policy") {
        if let Some(policy) = conf.ack_policy()? {
            args.sync_policy = Policy(policy);
        }
    }
    if conf.role().as_deref() == Some("SYNC_MASTER") && args.append_rate.is_some() {
        args.sync = true;
    }
    if given.flag("sync_policy") && !args.sync {
        return Err(Failure(
            "--sync-policy needs --sync (or brokerRole=SYNC_MASTER in --config)".into(),
        ));
    }
    let start = match args.from_oldest {
        true => StartPosition::OldestRetained,
        false => StartPosition::LastSegment,
    };
    let config = config_with(
        args.access.apply(conf.apply(Config::builder())?),
        args.batch_size,
        args.first_batch_size,
        start,
    )?;
    let mut log = open_store(&store, args.segment_size, args.store_format)?;
    if conf.sync_flush()? == Some(true) {
        // flushDiskType=SYNC_FLUSH: an append is on disk before it counts.
        log.set_flush_mode(FlushMode::EveryAppend)
            .context("syncing the store")?;
    }
    let mut payload = Payload::for_store(&log, args.message_size);
    eprintln!(
        "store {}: offsets {}..{} ({})",
        store.display(),
        log.min_offset(),
        log.max_offset(),
        Human(log.max_offset() - log.min_offset())
    );
    let transport = Transport::from(args.transport);
    let master = match role {
        None => MasterHandle::new(log, config),
        Some(role) => {
            let master = MasterHandle::autoswitch(log, config, role.master(&store))
                .context("taking the master role")?;
            eprintln!(
                "AutoSwitch master: broker {}, epoch {}; epochs {}",
                role.broker_id,
                role.epoch,
                master
                    .epochs()
                    .map(|e| describe_epochs(&e))
                    .unwrap_or_default()
            );
            master
        }
    };
    master.set_admission(args.access.admission());
    args.tls.apply(&master, transport)?;
    master.set_send_from_files(args.sendfile);
    if let Some(rate) = args.rate_limit {
        let rate = std::num::NonZeroU64::new(rate.0.max(rocketmq_ha::flow::MIN_RATE))
            .unwrap_or(std::num::NonZeroU64::MIN);
        master.set_rate_limit(Some(if args.rate_limit_shared {
            RateLimit::Shared(rate)
        } else {
            RateLimit::PerConnection(rate)
        }));
    }
    let policy = args.sync.then_some(args.sync_policy.0);
    let mut sync = SyncCounts::default();
    // RocketMQ's flush service: the store is made durable every 0.5 s (FlushPolicy::ROCKETMQ).
    let flusher = Flusher::spawn(master.log().clone()).context("starting the flusher")?;
    signals::install();
    // At once, not at the loop's next turn: a synchronous append blocked in its wait fails
    // with `Shutdown` now, and no new slave is accepted.
    let stopping = master.clone();
    signals::on_stop(move |_| stopping.shutdown());
    let metrics = match args.metrics {
        Some(addr) => {
            let metrics = std::sync::Arc::new(metrics::MasterMetrics::new());
            let (m, handle) = (metrics.clone(), master.clone());
            let bound = metrics::serve(addr, move || m.render(&handle))
                .context(format_args!("serving metrics on {addr}"))?;
            eprintln!("metrics on http://{bound}/metrics");
            Some(metrics)
        }
        None => None,
    };
    let server = transport
        .spawn_master(listen, master.clone())
        .context(format_args!("listening on {listen}"))?;
    if let Some(addr) = server.local_addr() {
        let tls = if master.is_tls() { ", TLS" } else { "" };
        eprintln!("master listening on {addr} ({transport} transport{tls})");
    }
    let interval = args.status_interval.0.max(Duration::from_millis(100));
    let started = Instant::now();
    let mut appended = 0u64;
    let mut next_status = started + interval;
    let mut status = MasterStatus::new(args.status);
    loop {
        if let Some(rate) = args.append_rate {
            let due = (rate.0 as f64 * started.elapsed().as_secs_f64()) as u64;
            while appended < due && !master.is_shut_down() {
                let data = payload.bytes((due - appended).min(1 << 20))?;
                let n = data.len() as u64;
                match policy {
                    None => {
                        master.append(data).context("appending")?;
                    }
                    Some(policy) => {
                        let end = master.append(data).context("appending")?;
                        let began = Instant::now();
                        let deadline = began + config.slave_timeout();
                        let result = master.wait_replicated_blocking(end, policy, deadline);
                        if let Some(metrics) = &metrics {
                            metrics.observe_sync(&result, began.elapsed());
                        }
                        match result {
                            Ok(()) => sync.ok += 1,
                            Err(rocketmq_ha::SyncError::Shutdown) => {
                                sync.failed += 1;
                                tracing::info!("synchronous append failed: the master is stopping");
                            }
                            Err(e) => {
                                sync.failed += 1;
                                tracing::warn!("synchronous append not acknowledged: {e}");
                            }
                        }
                    }
                }
                appended += n;
            }
        }
        for refused in master.take_refused() {
            tracing::warn!("{}", access::describe(&refused));
        }
        // The library logged each close with its reason; JSON status repeats them for scripts.
        status.changes(&master, &master.take_closed());
        if Instant::now() >= next_status {
            next_status += interval;
            status.report(&master, policy.map(|_| sync));
        }
        if flusher.is_finished() {
            let error = flusher.stop().err();
            let _ = server.shutdown();
            return Err(Failure(match error {
                Some(e) => format!("flushing the store: {e}"),
                None => "the flusher stopped".into(),
            }));
        }
        if let Some(signal) = signals::stop_requested() {
            tracing::info!("{signal}: stopping");
            server.shutdown().context("stopping the master")?;
            break;
        }
        if server.is_finished() {
            let result = server.shutdown().context("the master stopped");
            let flushed = stop_and_sync(flusher, master.log());
            return result.and(flushed.map(|_| ()));
        }
        thread::sleep(Duration::from_millis(50));
    }
    let synced = stop_and_sync(flusher, master.log())?;
    eprintln!("store synced up to offset {synced}");
    Ok(())
}

/// An epoch history as `epoch@start` entries, for the operator.
fn describe_epochs(epochs: &rocketmq_ha::autoswitch::EpochList) -> String {
    let entries: Vec<String> = epochs
        .entries()
        .iter()
        .map(|e| format!("{}@{}", e.epoch, e.start))
        .collect();
    match entries.is_empty() {
        true => "none yet".into(),
        false => entries.join(", "),
    }
}

/// Stops the flusher and syncs the store, for a clean stop: afterwards a machine crash loses
/// nothing. Returns the synced offset.
fn stop_and_sync(flusher: Flusher, log: &SharedLog<FileLog>) -> Result<u64, Failure> {
    flusher.stop().context("flushing the store")?;
    log.update(|log| log.sync().map(|()| log.synced_offset()))
        .context("syncing the store")
}

fn slave(mut args: SlaveArgs, given: &Given<'_>) -> Result<(), Failure> {
    let role = args.protocol.role()?;
    if role.is_some() {
        // The AutoSwitch client has neither check yet.
        protocol::unsupported(args.verify, "--verify")?;
    }
    let conf = broker_conf(args.broker_conf.as_deref(), false)?;
    let store = store_dir(args.store.take(), &conf)?;
    // flushDiskType=SYNC_FLUSH: what is acked is on disk.
    args.flush_before_ack |= conf.sync_flush()? == Some(true);
    if !given.flag("segment_size") {
        args.segment_size = conf_segment_size(&conf, args.segment_size)?;
    }
    let master = match (&args.master, conf.master_address()) {
        (Some(master), _) => master.clone(),
        (None, Some(master)) => master.to_owned(),
        (None, None) => {
            return Err(Failure(
                "give --master, or haMasterAddress in --config".into(),
            ))
        }
    };
    // Resolved now to refuse a typo before the store is created; the driver resolves the name
    // again before every dial.
    let addr = master
        .to_socket_addrs()
        .context(format_args!("resolving {master}"))?
        .next()
        .ok_or_else(|| Failure(format!("{master} resolves to no address")))?;
    // The slave refuses frames that show the master's segment size is another (they would
    // give the store another layout than the master's).
    let slave_config = conf
        .apply(Config::builder())?
        .local_segment_size(std::num::NonZeroU64::new(args.segment_size.0))
        .verify_records(args.verify)
        .build()
        .context("invalid settings")?;
    let mut log = open_store(&store, args.segment_size, args.store_format)?;
    if args.flush_before_ack {
        log.set_flush_mode(FlushMode::EveryAppend)
            .context("syncing the store")?;
    }
    let transport = Transport::from(args.transport);
    eprintln!(
        "store {}: ends at {}, synced up to {}; replicating from {master} ({addr}; {transport} \
         transport{}{}{})",
        store.display(),
        log.max_offset(),
        log.synced_offset(),
        if args.tls.tls_ca.is_some() {
            ", TLS"
        } else {
            ""
        },
        if args.flush_before_ack {
            ", acking only what is on disk"
        } else {
            ""
        },
        if args.verify {
            ", checking every record"
        } else {
            ""
        }
    );
    let slave = match role {
        None => SlaveHandle::with_host(&master, log, slave_config)
            .context(format_args!("resolving {master}"))?,
        Some(role) => {
            let slave = SlaveHandle::autoswitch(&master, log, slave_config, role.slave(&store))
                .context("taking the slave role")?;
            eprintln!(
                "AutoSwitch slave: broker {}, following the master of epoch {}; epochs {}",
                role.broker_id,
                role.epoch,
                slave
                    .epochs()
                    .map(|e| describe_epochs(&e))
                    .unwrap_or_default()
            );
            slave
        }
    };
    args.tls.apply(&slave, transport, &master)?;
    // With --flush-before-ack every append syncs and the flusher finds nothing to do.
    let flusher = Flusher::spawn(slave.log().clone()).context("starting the flusher")?;
    signals::install();
    let metrics = match args.metrics {
        Some(addr) => {
            let metrics = std::sync::Arc::new(metrics::SlaveMetrics::new());
            let (m, handle) = (metrics.clone(), slave.clone());
            let bound = metrics::serve(addr, move || m.render(&handle))
                .context(format_args!("serving metrics on {addr}"))?;
            eprintln!("metrics on http://{bound}/metrics");
            Some(metrics)
        }
        None => None,
    };
    let running = transport
        .spawn_slave(slave.clone())
        .context("starting the slave")?;
    let until = args.until.map(|u| u.0);
    let watch = Watch {
        flusher: Some(&flusher),
        json: (args.status == StatusFormat::Json).then(status::SlaveStatusJson::new),
        metrics: metrics.as_deref(),
    };
    let outcome = follow(&slave, &running, until, "slave", watch);
    let stopped = running.shutdown().context("stopping the slave");
    let synced = stop_and_sync(flusher, slave.log());
    // A failed flush is the first thing to report: the flusher's end is only its symptom.
    let synced = synced?;
    let outcome = outcome?;
    stopped?;
    let max = slave.log().max_offset();
    match (outcome, until) {
        (Followed::FlusherEnded, _) => Err(Failure("the flusher stopped".into())),
        (Followed::Reached, _) => {
            println!("reached offset {max}; synced up to {synced}");
            Ok(())
        }
        (Followed::Stopped(signal), Some(until)) => Err(Failure(format!(
            "stopped by {signal} at offset {max} before reaching {until}; synced up to {synced}"
        ))),
        (Followed::Stopped(signal), None) => {
            println!("stopped by {signal} at offset {max}; synced up to {synced}");
            Ok(())
        }
    }
}

/// How [`follow`] ended.
enum Followed {
    /// The log reached the offset asked for.
    Reached,
    /// A signal asked the program to stop.
    Stopped(&'static str),
    /// The flusher ended: a flush failed (stopping it returns the error).
    FlusherEnded,
}

/// What [`follow`] watches besides the slave, and where it reports.
#[derive(Default)]
struct Watch<'a> {
    /// The store's flusher, whose end stops the slave.
    flusher: Option<&'a Flusher>,
    /// JSON status on stdout instead of the progress line.
    json: Option<status::SlaveStatusJson>,
    /// Counts closes by reason (the handle keeps errors only until taken).
    metrics: Option<&'a metrics::SlaveMetrics>,
}

/// Shows progress until the slave's log reaches `until` (forever without it), a signal asks to
/// stop, or the driver or the watched flusher fails.
fn follow(
    slave: &SlaveHandle<FileLog>,
    running: &Running,
    until: Option<u64>,
    label: &'static str,
    mut watch: Watch<'_>,
) -> Result<Followed, Failure> {
    let flusher = watch.flusher;
    let mut next_json = Instant::now();
    let mut progress = Progress::new(label, until);
    let mut rate = Rate::new(Duration::from_secs(3), slave.log().max_offset());
    loop {
        let tick = Instant::now() + Duration::from_millis(200);
        let reached =
            slave.wait_until_blocking(tick, |s| until.is_some_and(|u| s.log().max_offset() >= u));
        // The library logged each error with its reason; here they are counted, and one that
        // retrying cannot cure ends the slave.
        let mut errors: Vec<(String, &'static str)> = Vec::new();
        for error in slave.take_errors() {
            if let rocketmq_ha_transports::Error::Client(
                e @ rocketmq_ha::ClientError::SegmentSizeMismatch { .. },
            ) = &error
            {
                // Retrying cannot help: the two sides must be configured alike.
                progress.finish();
                return Err(Failure(format!(
                    "{e}. Give --segment-size (mappedFileSizeCommitLog) the master's value"
                )));
            }
            let reason = CloseReason::classify(Some(&error), false);
            if let Some(metrics) = watch.metrics {
                metrics.closed(reason);
            }
            errors.push((error.to_string(), reason.label()));
        }
        if let Some(json) = &mut watch.json {
            json.changes(slave, &errors);
        }
        let max = slave.log().max_offset();
        let status = slave.status();
        // The reasons were printed as they happened; the state says which one still holds.
        let state = if status.connected {
            format!("connected ({})", status.state)
        } else if status.local_failures > 0 {
            format!(
                "cannot store locally ({} failures in a row), retrying",
                status.local_failures
            )
        } else if status.rejected {
            "rejected by the master, retrying".to_owned()
        } else {
            "connecting".to_owned()
        };
        let state = match status.epoch {
            Some(epoch) => {
                let confirm = status
                    .confirm_offset
                    .map_or_else(|| "none yet".to_owned(), |c| c.to_string());
                format!("{state}, epoch {epoch}, confirm offset {confirm}")
            }
            None => state,
        };
        let note = match until {
            Some(u) => format!("lag {}  {state}", Human(u.saturating_sub(max))),
            None => format!("at offset {max}  {state}"),
        };
        let mb_per_s = rate.sample(max);
        match &watch.json {
            Some(json) if Instant::now() >= next_json => {
                next_json += Duration::from_secs(1);
                json.report(slave, mb_per_s, &state);
            }
            Some(_) => {}
            None => progress.show(max, mb_per_s, &note),
        }
        if reached {
            progress.finish();
            return Ok(Followed::Reached);
        }
        if let Some(signal) = signals::stop_requested() {
            progress.finish();
            return Ok(Followed::Stopped(signal));
        }
        if running.is_finished() {
            progress.finish();
            return Err(Failure("the slave driver stopped unexpectedly".into()));
        }
        if flusher.is_some_and(Flusher::is_finished) {
            progress.finish();
            return Ok(Followed::FlusherEnded);
        }
    }
}

fn demo(args: DemoArgs) -> Result<(), Failure> {
    bench::positive("--bytes", args.bytes.0)?;
    let transport = Transport::from(args.transport);
    let dir = TempDir::new("demo", args.keep)?;
    let (master_store, slave_store) = (dir.0.join("master"), dir.0.join("slave"));
    let total = args.bytes.0;

    // Ctrl-C must not leave gigabytes of temporary stores behind: stop, and let `dir` go.
    signals::install();
    let interrupted = |progress: &mut Progress| {
        signals::stop_requested().map(|signal| {
            progress.finish();
            Failure(format!(
                "stopped by {signal}; {}",
                match args.keep {
                    true => "keeping the temporary stores (--keep)",
                    false => "removing the temporary stores",
                }
            ))
        })
    };
    let format = if args.records {
        StoreFormat::RocketMq
    } else {
        StoreFormat::Raw
    };
    let mut log = FileLog::create_in(&master_store, args.segment_size.0, format)
        .context(format_args!("creating {}", master_store.display()))?;
    let mut payload = Payload::for_store(&log, Size(1024));
    let mut progress = Progress::new("generate", Some(total));
    let mut rate = Rate::new(Duration::from_secs(3), 0);
    while log.max_offset() < total {
        if let Some(stopped) = interrupted(&mut progress) {
            return Err(stopped);
        }
        let data = payload.bytes((total - log.max_offset()).min(4 << 20))?;
        log.append_at_end(&data)
            .context("writing the master store")?;
        progress.show(log.max_offset(), rate.sample(log.max_offset()), "");
    }
    progress.finish();

    // The whole store, not just its last segment, so the two stores can be compared.
    let config = config(
        args.batch_size,
        Size(FIRST_BATCH),
        StartPosition::OldestRetained,
    )?;
    let master = MasterHandle::new(log, config);
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = transport
        .spawn_master(loopback, master.clone())
        .context("starting the master")?;
    let addr = server
        .local_addr()
        .ok_or_else(|| Failure("the master has no address".into()))?;
    let total = master.log().max_offset();
    let slave_log = FileLog::create_in(&slave_store, args.segment_size.0, format)
        .context(format_args!("creating {}", slave_store.display()))?;
    let slave_config = config
        .to_builder()
        .local_segment_size(std::num::NonZeroU64::new(args.segment_size.0))
        .verify_records(args.records)
        .build()
        .context("invalid settings")?;
    let slave = SlaveHandle::new(addr, slave_log, slave_config);
    eprintln!(
        "replicating {} from a master on {addr} to a slave ({transport} transport, {} segments)",
        Human(total),
        Human(args.segment_size.0)
    );
    let started = Instant::now();
    let client = transport
        .spawn_slave(slave.clone())
        .context("starting the slave")?;
    if let Followed::Stopped(_) =
        follow(&slave, &client, Some(total), "replicate", Watch::default())?
    {
        return Err(interrupted(&mut Progress::new("replicate", None))
            .unwrap_or_else(|| Failure("stopped".into())));
    }
    let elapsed = started.elapsed().as_secs_f64();
    client.shutdown().context("stopping the slave")?;
    server.shutdown().context("stopping the master")?;

    let (ours, theirs) = (master.log().read(), slave.log().read());
    let comparison = compare_logs(&*ours, &*theirs).context("comparing the stores")?;
    if !comparison.identical() || ours.segment_starts() != theirs.segment_starts() {
        return Err(Failure(format!(
            "the stores differ: master {:?}, slave {:?}, first difference at {:?}",
            comparison.a, comparison.b, comparison.first_difference
        )));
    }
    println!(
        "verified: {} in {} segment files, byte-identical on master and slave{}",
        Human(total),
        ours.segment_starts().len(),
        match &payload {
            Payload::Records(records) => format!(
                "; {} RocketMQ messages, each checked by the slave as it arrived",
                records.count()
            ),
            Payload::Raw(_) => String::new(),
        }
    );
    println!(
        "replicated {} in {elapsed:.2} s: {:.1} MB/s ({transport} transport)",
        Human(total),
        mb_per_s(total, elapsed)
    );
    Ok(())
}

/// A fresh directory under the system's temporary directory, removed on drop unless kept.
struct TempDir(PathBuf, bool);

impl TempDir {
    fn new(purpose: &str, keep: bool) -> Result<TempDir, Failure> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "rocketmq-ha-{purpose}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir(&path).context(format_args!("creating {}", path.display()))?;
        Ok(TempDir(path, keep))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.1 {
            eprintln!("kept the stores in {}", self.0.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("could not remove {}: {e}", self.0.display());
        }
    }
}

/// What generated appends hold: RocketMQ messages in a RocketMQ-format store, random bytes in
/// a raw one.
enum Payload {
    Raw(Generator),
    Records(records::Records),
}

impl Payload {
    /// Appends for `log`, continuing at its end; messages get `message_size`-byte bodies.
    fn for_store(log: &FileLog, message_size: Size) -> Payload {
        match log.mode() {
            StoreFormat::RocketMq => Payload::Records(records::Records::new(
                log.segment_size(),
                log.max_offset(),
                message_size.0 as usize,
            )),
            StoreFormat::Raw => Payload::Raw(Generator::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0x5EED, |d| d.as_nanos() as u64),
            )),
        }
    }

    /// About `len` bytes to append (whole records, so perhaps a little more).
    fn bytes(&mut self, len: u64) -> Result<Bytes, Failure> {
        match self {
            Payload::Raw(generator) => Ok(generator.bytes(len)),
            Payload::Records(records) => records.bytes(len).map_err(Failure),
        }
    }
}

/// Fast pseudo-random bytes (xorshift64*) for generated log data.
struct Generator(u64);

impl Generator {
    fn new(seed: u64) -> Generator {
        Generator(seed | 1)
    }

    fn bytes(&mut self, len: u64) -> Bytes {
        let mut out = Vec::with_capacity(len as usize + 8);
        while (out.len() as u64) < len {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            out.extend_from_slice(&self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        out.truncate(len as usize);
        out.into()
    }
}
