//! What a run is: topology, configuration, workload and which faults are on, all drawn from the
//! entropy. Faults are "swarm" style: each kind is switched on or off per run, so a run with few
//! kinds can push each one hard, and across runs every combination shows up.

use std::fmt;
use std::time::Duration;

use rocketmq_ha::{Config, StartPosition};

use super::entropy::Entropy;

/// The kinds of fault the simulator can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Higher latency and per-write jitter.
    Latency,
    /// Reads return any split of the pending bytes.
    ShortReads,
    /// Writes accept any prefix.
    ShortWrites,
    /// A node freezes (GC or VM pause): no reads, writes or timers, then it catches up late.
    Stall,
    /// A direction of a link holds its bytes, then delivers them in one burst.
    Burst,
    /// One direction between the master and a slave is cut for a while; connects fail.
    PartitionOneWay,
    /// Both directions are cut.
    PartitionTwoWay,
    /// A connection is reset; everything in flight is lost.
    Reset,
    /// A direction delivers an arbitrary prefix of what is in flight, then EOF.
    Eof,
    /// Connects are refused.
    RefuseConnect,
    /// Connects take long, sometimes beyond the connect timeout.
    SlowConnect,
    /// A slave crashes and restarts from its stored log.
    SlaveCrash,
    /// The slave's disk is slow: appends (and so acks) lag.
    SlowAppend,
    /// Node clocks are skewed and jump (forwards, and backwards a little).
    Clock,
    /// A close never reaches the peer: a half-open (zombie) connection lingers.
    Zombie,
    /// A slave starts with an old log, possibly below the master's retained range.
    BehindRetained,
    /// The master deletes old segments while running.
    Retention,
    /// The master restarts: a new service, all connections dropped.
    MasterRestart,
    /// A master restart loses an unflushed tail of the log (slaves may then be ahead).
    LoseTail,
    /// A slave's disk is full for a while: its appends fail.
    DiskFull,
    /// The master stops reading one connection (and running its timers) while it still
    /// writes: a hung reader. The slave's reports fill the window and wait; the slave must
    /// keep reading and close at the write-stall limit (the stuck-report scenario).
    DeafMaster,
}

/// Every fault kind, in a fixed order.
pub const ALL_FAULTS: [Fault; 21] = [
    Fault::Latency,
    Fault::ShortReads,
    Fault::ShortWrites,
    Fault::Stall,
    Fault::Burst,
    Fault::PartitionOneWay,
    Fault::PartitionTwoWay,
    Fault::Reset,
    Fault::Eof,
    Fault::RefuseConnect,
    Fault::SlowConnect,
    Fault::SlaveCrash,
    Fault::SlowAppend,
    Fault::Clock,
    Fault::Zombie,
    Fault::BehindRetained,
    Fault::Retention,
    Fault::MasterRestart,
    Fault::LoseTail,
    Fault::DiskFull,
    Fault::DeafMaster,
];

/// Faults injected at scheduled moments (the others are properties of every operation).
pub const SCHEDULED_FAULTS: [Fault; 13] = [
    Fault::Stall,
    Fault::Burst,
    Fault::PartitionOneWay,
    Fault::PartitionTwoWay,
    Fault::Reset,
    Fault::Eof,
    Fault::SlaveCrash,
    Fault::Clock,
    Fault::Retention,
    Fault::MasterRestart,
    Fault::Zombie,
    Fault::DiskFull,
    Fault::DeafMaster,
];

/// A set of fault kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults(u32);

impl Faults {
    /// No faults.
    pub const NONE: Faults = Faults(0);

    /// Every fault.
    pub fn all() -> Faults {
        ALL_FAULTS.iter().fold(Faults::NONE, |f, &k| f.with(k))
    }

    /// This set plus `fault`.
    pub fn with(self, fault: Fault) -> Faults {
        Faults(self.0 | 1 << fault as u32)
    }

    /// Whether `fault` is on.
    pub fn has(self, fault: Fault) -> bool {
        self.0 & (1 << fault as u32) != 0
    }

    /// The kinds that are on, in order.
    pub fn iter(self) -> impl Iterator<Item = Fault> {
        ALL_FAULTS.into_iter().filter(move |&f| self.has(f))
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.iter().map(|k| format!("{k:?}")).collect();
        if names.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", names.join(","))
        }
    }
}

/// Everything decided at the start of a run.
#[derive(Debug, Clone)]
pub struct Params {
    /// The configuration shared by all machines.
    pub config: Config,
    /// The commit log's segment size `F` (small, so growth crosses segments often).
    pub segment_size: u64,
    /// How many slaves.
    pub slaves: usize,
    /// The faults switched on.
    pub faults: Faults,
    /// How long faults are injected before the network heals.
    pub fault_phase: Duration,
    /// Mean gap between scheduled faults.
    pub fault_interval: Duration,
    /// Mean gap between master appends.
    pub append_interval: Duration,
    /// Largest single append.
    pub append_max: u64,
    /// Chance (per mille) that an append is followed by a sync-replication wait.
    pub sync_per_mille: u64,
    /// Where the master's log starts: usually 0, sometimes far up, up to just below the
    /// largest offset the wire carries (`i64::MAX`), to shake out overflows.
    pub base: u64,
    /// Bytes in the master's log before the run starts.
    pub initial_len: u64,
    /// One-way latency and jitter.
    pub latency: Duration,
    /// Extra random latency per write.
    pub jitter: Duration,
    /// Bytes in flight per direction.
    pub window: usize,
    /// Largest read.
    pub max_read: usize,
    /// Slowest append on a slow slave disk.
    pub disk_latency: Duration,
}

impl Params {
    /// Draws a run. `forced` replaces the drawn fault set (for focused tests).
    pub fn draw(e: &mut Entropy, forced: Option<Faults>) -> Params {
        let mut faults = Faults::NONE;
        for fault in ALL_FAULTS {
            if e.chance(500) {
                faults = faults.with(fault);
            }
        }
        let faults = forced.unwrap_or(faults);
        let slaves = e.range(1, 4) as usize;
        let segment_size = e.log_range(64, 64 * 1024);

        let latency = if faults.has(Fault::Latency) {
            e.log_duration(Duration::from_micros(50), Duration::from_millis(100))
        } else {
            Duration::from_micros(50)
        };
        let jitter = if faults.has(Fault::Latency) {
            e.duration(Duration::ZERO, latency * 2)
        } else {
            Duration::ZERO
        };
        // Timers must leave room for the network: a connect takes a round trip, and a connection
        // whose heartbeats take longer than housekeeping to arrive can never stay up.
        let one_way = latency + jitter;
        let timer_floor = one_way * 4 + Duration::from_millis(10);

        // Configuration: RocketMQ's defaults on a zero draw, otherwise anything valid.
        let mut b = Config::builder();
        let heartbeat = if e.chance(600) {
            e.log_duration(
                Duration::from_millis(50).max(timer_floor),
                Duration::from_secs(5),
            )
        } else {
            Duration::from_secs(5)
        };
        b = b.heartbeat_interval(heartbeat);
        let housekeeping = if e.chance(600) {
            heartbeat * e.range(2, 6) as u32 + e.duration(Duration::ZERO, heartbeat)
        } else {
            (heartbeat * 4).max(Duration::from_secs(20))
        };
        b = b.housekeeping_interval(housekeeping);
        // The first-report deadline fires before housekeeping only when housekeeping is above
        // the default: derived rather than drawn, so the seeds in regressions.txt keep their
        // meaning, and between the two timers so it is reached on drawn configurations.
        if housekeeping < Config::default().first_report_timeout() * 2 {
            b = b.first_report_timeout((heartbeat + housekeeping) / 2);
        }
        // Tiny batches make many frames; keep them for small workloads only (see below).
        let batch = match e.below(4) {
            0 => 32 * 1024,
            1 => e.log_range(1, 256),
            2 => e.log_range(256, 8 * 1024),
            _ => e.log_range(8 * 1024, 256 * 1024),
        };
        b = b.transfer_batch_size(batch as u32);
        let frame_floor = batch + 12;
        let max_frame = if e.chance(500) {
            frame_floor + e.log_range(1, 4 * 1024 * 1024 - frame_floor) - 1
        } else if e.chance(500) {
            frame_floor
        } else {
            4 * 1024 * 1024
        };
        b = b.max_frame_size(max_frame as u32);
        if e.chance(300) {
            // A smaller first frame per connection, doubling up to the batch.
            b = b.first_batch_size(Some(e.log_range(1, batch) as u32));
        }
        if e.chance(500) {
            b = b.start_position(StartPosition::OldestRetained);
        }
        if e.chance(300) {
            b = b.reject_ack_above_max(false);
        }
        if e.chance(500) {
            b = b.reject_ack_above_sent(true);
        }
        if e.chance(500) {
            b = b.max_gap_not_in_sync(e.log_range(1, 1 << 22));
        }
        let slave_timeout = if e.chance(500) {
            e.log_duration(Duration::from_millis(5), Duration::from_secs(5))
        } else {
            Duration::from_secs(3)
        };
        b = b.slave_timeout(slave_timeout);
        if e.chance(500) {
            b = b.connect_timeout(e.log_duration(
                Duration::from_millis(20).max(timer_floor),
                Duration::from_secs(5),
            ));
        }
        if e.chance(500) {
            let initial = e.log_duration(Duration::from_millis(1), Duration::from_secs(1));
            let max = initial + e.duration(Duration::ZERO, Duration::from_secs(5));
            b = b
                .reconnect_backoff_initial(initial)
                .reconnect_backoff_max(max);
        }
        if e.chance(500) {
            b = b.write_stall_timeout(e.log_duration(timer_floor * 2, housekeeping * 2));
        }
        if e.chance(500) || faults.has(Fault::DiskFull) {
            let initial = e.log_duration(Duration::from_millis(1), Duration::from_secs(1));
            let max = initial + e.duration(Duration::ZERO, Duration::from_secs(5));
            b = b
                .local_failure_backoff_initial(initial)
                .local_failure_backoff_max(max);
        }
        if e.chance(300) {
            // Flow control (§3.9): from a trickle to more than the workload needs.
            b = b.rate_limit(std::num::NonZeroU64::new(e.log_range(1024, 64 << 20)));
        }
        let config = b.build().expect("drawn configuration is valid");

        let fault_phase = e.duration(Duration::from_secs(5), Duration::from_secs(60));
        let fault_interval = e.log_duration(Duration::from_millis(50), Duration::from_secs(5));
        // At most a few thousand appends per run: volume finds fewer bugs than variety does.
        let append_floor = (fault_phase / 3_000).max(Duration::from_millis(1));
        let append_interval =
            e.log_duration(append_floor, Duration::from_millis(300).max(append_floor));
        let window = e.log_range(16, 1 << 20) as usize;
        // Keep every run to about ten thousand frames (small batches get small appends) and
        // within a quarter of what one connection carries (a window per round trip), so that
        // slaves can keep up between faults.
        let frames_budget = 10_000u64;
        let round_trip = one_way * 2 + Duration::from_millis(1);
        let carried =
            goodput(window, batch) * (fault_phase.as_micros() / round_trip.as_micros()) as u64;
        let mean_appends = (fault_phase.as_micros() / append_interval.as_micros().max(1)) as u64;
        let byte_budget = (batch * frames_budget).min(4 << 20).min(carried / 4);
        let append_cap = (byte_budget / mean_appends.max(1)).clamp(1, 64 * 1024);
        let append_max = e.log_range(1, append_cap);
        let sync_per_mille = if e.chance(700) { e.range(0, 1000) } else { 0 };
        let base = match e.below(8) {
            0 => e.range(1 << 32, 1 << 40),
            1 => i64::MAX as u64 - (64 << 20) - e.below(1 << 30),
            _ => 0,
        };
        // Real logs begin at a segment file's start (file names are start offsets).
        let base = base - base % segment_size;
        let initial_len = if e.chance(500) {
            e.below((segment_size * 4).min(byte_budget + 1))
        } else {
            0
        };

        let max_read = e.log_range(1, 64 * 1024) as usize;
        let disk_latency = e.log_duration(Duration::from_micros(10), Duration::from_millis(200));
        Params {
            config,
            segment_size,
            slaves,
            faults,
            fault_phase,
            fault_interval,
            append_interval,
            append_max,
            sync_per_mille,
            base,
            initial_len,
            latency,
            jitter,
            window: window.max(1),
            max_read: max_read.max(1),
            disk_latency,
        }
    }
}

/// Payload bytes a window of `window` bytes carries in frames of at most `batch` body bytes
/// (each with a 12-byte header): what one round trip moves at best.
pub fn goodput(window: usize, batch: u64) -> u64 {
    (window as u64 * batch / (batch + 12)).max(1)
}
