//! Every timer and size of the protocol, with RocketMQ's defaults (§6), validated once when built.

use std::num::NonZeroU64;
use std::time::Duration;

use crate::error::ConfigError;
use crate::wire::{JAVA_MAX_FRAME_SIZE, TRANSFER_HEADER_LEN};

/// Where a master starts sending to a slave whose first report is 0, i.e. an empty slave (§3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive] // AutoSwitch's `syncFromLastFile` choice (§5.5) may add a variant
pub enum StartPosition {
    /// The start of the master's last segment: RocketMQ's classic rule (issue #3661).
    #[default]
    LastSegment,
    /// The oldest retained offset: the whole log, as AutoSwitch does by default (§5.5).
    OldestRetained,
}

/// Validated configuration shared by the master and slave machines and the master service.
///
/// Build one with [`Config::builder`]; [`Config::default`] is RocketMQ's defaults. Names map to
/// RocketMQ's `MessageStoreConfig` keys as noted on each getter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    heartbeat_interval: Duration,
    housekeeping_interval: Duration,
    first_report_timeout: Duration,
    transfer_batch_size: u32,
    first_batch_size: Option<u32>,
    max_frame_size: u32,
    start_position: StartPosition,
    reject_ack_above_max: bool,
    reject_ack_above_sent: bool,
    max_gap_not_in_sync: u64,
    slave_timeout: Duration,
    connect_timeout: Duration,
    reconnect_backoff_initial: Duration,
    reconnect_backoff_max: Duration,
    write_stall_timeout: Duration,
    local_failure_backoff_initial: Duration,
    local_failure_backoff_max: Duration,
    rate_limit: Option<NonZeroU64>,
    local_segment_size: Option<NonZeroU64>,
    verify_records: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_interval: Duration::from_millis(5_000),
            housekeeping_interval: Duration::from_millis(20_000),
            first_report_timeout: Duration::from_millis(10_000),
            transfer_batch_size: 32 * 1024,
            first_batch_size: None,
            max_frame_size: JAVA_MAX_FRAME_SIZE,
            start_position: StartPosition::LastSegment,
            reject_ack_above_max: true,
            reject_ack_above_sent: false,
            max_gap_not_in_sync: 256 * 1024 * 1024,
            slave_timeout: Duration::from_millis(3_000),
            connect_timeout: Duration::from_millis(5_000),
            reconnect_backoff_initial: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_millis(5_000),
            write_stall_timeout: Duration::from_millis(20_000),
            local_failure_backoff_initial: Duration::from_millis(1_000),
            local_failure_backoff_max: Duration::from_millis(30_000),
            rate_limit: None,
            local_segment_size: None,
            verify_records: false,
        }
    }
}

impl Config {
    /// A builder starting from RocketMQ's defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config::default(),
        }
    }

    /// `haSendHeartbeatInterval` (5 s): both sides send a keep-alive after this long without
    /// writing (§3.4, §4.2).
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// `haHousekeepingInterval` (20 s): either side closes after this long without reading
    /// (§3.2, §4.6, 5.x rule).
    pub fn housekeeping_interval(&self) -> Duration {
        self.housekeeping_interval
    }

    /// How long the master waits for a new connection's first report before closing it (10 s;
    /// not in RocketMQ, whose master waits for it forever, §3.7).
    ///
    /// A peer that connects and never reports (a port scanner, a stuck client, a flood of idle
    /// sockets) would otherwise hold a connection for the whole
    /// [`housekeeping_interval`](Self::housekeeping_interval), and a peer that trickles a byte
    /// now and then forever; this deadline runs from the accept and is not reset by bytes that
    /// do not complete a report. Our slaves report at once on connect, but a Java 4.9 slave
    /// holds its first report back by about `haSendHeartbeatInterval` (5 s, §4.2), hence the
    /// default. A value at or above the housekeeping interval leaves housekeeping to act first.
    pub fn first_report_timeout(&self) -> Duration {
        self.first_report_timeout
    }

    /// `haTransferBatchSize` (32 KiB): the most body bytes the master puts in one frame (§3.4).
    pub fn transfer_batch_size(&self) -> u32 {
        self.transfer_batch_size
    }

    /// The most body bytes in the first data frame of a connection, or `None` (the default,
    /// RocketMQ's behaviour): every frame may carry [`transfer_batch_size`](Self::transfer_batch_size).
    ///
    /// With a limit, each later frame may carry twice the previous one's limit until it reaches
    /// the batch size. A slave stores nothing of a frame before all of it arrived, so with large
    /// batches this is what lets a (re)connecting slave store and acknowledge its first bytes
    /// within a fraction of a millisecond instead of after a whole batch.
    pub fn first_batch_size(&self) -> Option<u32> {
        self.first_batch_size
    }

    /// The largest frame, header included, the slave accepts (4 MiB, a Java slave's buffer, §4.3).
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Where to start an empty slave (§3.3); RocketMQ's rule is [`StartPosition::LastSegment`].
    pub fn start_position(&self) -> StartPosition {
        self.start_position
    }

    /// Close a connection whose ack exceeds the master's max offset (on, the 4.9.3+ check, §3.2).
    pub fn reject_ack_above_max(&self) -> bool {
        self.reject_ack_above_max
    }

    /// Close a connection whose ack exceeds what was sent on it (off; stricter than Java, §8
    /// invariant 19).
    pub fn reject_ack_above_sent(&self) -> bool {
        self.reject_ack_above_sent
    }

    /// `haMaxGapNotInSync` / `haSlaveFallbehindMax` (256 MiB): how far behind a slave may be and
    /// still count as in sync (§3.6).
    pub fn max_gap_not_in_sync(&self) -> u64 {
        self.max_gap_not_in_sync
    }

    /// `slaveTimeout` (3 s): the usual deadline of a synchronous-replication wait (§3.5).
    pub fn slave_timeout(&self) -> Duration {
        self.slave_timeout
    }

    /// How long a driver waits for a TCP connect to the master (5 s, §1.4).
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// First reconnect delay after a failure (100 ms); it doubles per failure with jitter.
    /// Java waits a fixed 5 s (5.x) or not at all (4.9, §1.4); back-off with jitter avoids both
    /// the idle gap and reconnect storms.
    pub fn reconnect_backoff_initial(&self) -> Duration {
        self.reconnect_backoff_initial
    }

    /// Ceiling of the reconnect delay (5 s, Java's fixed wait).
    pub fn reconnect_backoff_max(&self) -> Duration {
        self.reconnect_backoff_max
    }

    /// How long a write may make no progress before the connection is closed (20 s, like
    /// housekeeping): a slave's report (§4.2) or a master's frame (§3.4) that the peer does not
    /// read. Java gives up on a report after three write attempts that write nothing; a time
    /// limit does the same without depending on how often a driver retries.
    pub fn write_stall_timeout(&self) -> Duration {
        self.write_stall_timeout
    }

    /// First wait after the slave failed to store received data locally (1 s): a full disk, a
    /// permission error, too many open files. It doubles per consecutive local failure up to
    /// [`local_failure_backoff_max`](Self::local_failure_backoff_max) and resets only once an
    /// append succeeds. A local error is not a network fault: reconnecting quickly would only
    /// download the same frame again and fail again.
    pub fn local_failure_backoff_initial(&self) -> Duration {
        self.local_failure_backoff_initial
    }

    /// Ceiling of the wait after local failures (30 s: two attempts a minute).
    pub fn local_failure_backoff_max(&self) -> Duration {
        self.local_failure_backoff_max
    }

    /// A builder starting from this configuration, to change a few settings of it.
    pub fn to_builder(self) -> ConfigBuilder {
        ConfigBuilder { config: self }
    }

    /// `haFlowControlEnable` + `maxHaTransferByteInSecond` (off; RocketMQ's value when on is
    /// 100 MiB/s): the most bytes a second, headers and bodies, the master sends to one slave
    /// (§3.9). When the budget is spent the master waits for it to refill rather than send
    /// anything; over any window of `T` seconds it sends at most `rate × T` plus one frame
    /// (and one heartbeat sent on credit). It can be changed on a running connection with
    /// [`MasterConnection::set_rate_limit`](crate::MasterConnection::set_rate_limit). At least
    /// [`flow::MIN_RATE`](crate::flow::MIN_RATE).
    pub fn rate_limit(&self) -> Option<NonZeroU64> {
        self.rate_limit
    }

    /// Slave: the segment size (`mappedFileSizeCommitLog`) of the slave's own log (none by
    /// default). A master never sends a frame that crosses one of its segments, and starts an
    /// empty slave on a segment boundary, so a frame that crosses one of the slave's segments,
    /// or an empty slave's first frame off a boundary, shows that the master's segment size is
    /// another: the slave closes with [`ClientError::SegmentSizeMismatch`](crate::ClientError)
    /// and retries only after the local back-off. Without it the slave accepts any layout. Not
    /// every mismatch shows (a master's size that is a multiple of the slave's may not cross a
    /// boundary for a long time); what shows is refused at the first frame.
    pub fn local_segment_size(&self) -> Option<NonZeroU64> {
        self.local_segment_size
    }

    /// Slave: check every record the master sends before storing it (off by default; needs
    /// [`local_segment_size`](Self::local_segment_size)). The log must be RocketMQ CommitLog
    /// records; a record that fails RocketMQ's recovery checks (size, magic code, field
    /// lengths, body CRC) closes the connection with
    /// [`ClientError::BadRecord`](crate::ClientError) before any of it is stored, and the
    /// slave retries only after the local back-off. See [`record_check`](crate::record_check).
    pub fn verify_records(&self) -> bool {
        self.verify_records
    }

    /// The longest duration any setting may have. Deadlines are `now + setting`; a setting
    /// near `Duration::MAX` would overflow `Instant` and panic the machines.
    pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

    fn validate(self) -> Result<Self, ConfigError> {
        if self.transfer_batch_size == 0 || self.first_batch_size == Some(0) {
            return Err(ConfigError::ZeroBatchSize);
        }
        if (self.max_frame_size as usize) < TRANSFER_HEADER_LEN {
            return Err(ConfigError::FrameLimitTooSmall(self.max_frame_size));
        }
        if u64::from(self.transfer_batch_size) + TRANSFER_HEADER_LEN as u64
            > u64::from(self.max_frame_size)
        {
            return Err(ConfigError::BatchExceedsFrameLimit {
                batch: self.transfer_batch_size,
                max_frame: self.max_frame_size,
            });
        }
        for (name, value) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("housekeeping_interval", self.housekeeping_interval),
            ("first_report_timeout", self.first_report_timeout),
            ("slave_timeout", self.slave_timeout),
            ("connect_timeout", self.connect_timeout),
            ("reconnect_backoff_initial", self.reconnect_backoff_initial),
            ("reconnect_backoff_max", self.reconnect_backoff_max),
            ("write_stall_timeout", self.write_stall_timeout),
            (
                "local_failure_backoff_initial",
                self.local_failure_backoff_initial,
            ),
            ("local_failure_backoff_max", self.local_failure_backoff_max),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
            if value > Self::MAX_DURATION {
                return Err(ConfigError::DurationTooLong {
                    name,
                    value,
                    max: Self::MAX_DURATION,
                });
            }
        }
        if self.housekeeping_interval <= self.heartbeat_interval {
            return Err(ConfigError::HousekeepingNotAboveHeartbeat {
                housekeeping: self.housekeeping_interval,
                heartbeat: self.heartbeat_interval,
            });
        }
        if self.reconnect_backoff_max < self.reconnect_backoff_initial {
            return Err(ConfigError::BackoffRange {
                initial: self.reconnect_backoff_initial,
                max: self.reconnect_backoff_max,
            });
        }
        if self.local_failure_backoff_max < self.local_failure_backoff_initial {
            return Err(ConfigError::BackoffRange {
                initial: self.local_failure_backoff_initial,
                max: self.local_failure_backoff_max,
            });
        }
        if let Some(rate) = self.rate_limit {
            if rate.get() < crate::flow::MIN_RATE {
                return Err(ConfigError::RateTooLow(rate.get()));
            }
        }
        if self.max_gap_not_in_sync == 0 {
            return Err(ConfigError::ZeroGap);
        }
        if self.verify_records && self.local_segment_size.is_none() {
            return Err(ConfigError::VerifyNeedsSegmentSize);
        }
        Ok(self)
    }
}

/// Builder for [`Config`]; every setter has the meaning of the getter of the same name.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: Config,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    )*};
}

impl ConfigBuilder {
    setters! {
        /// See [`Config::heartbeat_interval`].
        heartbeat_interval: Duration;
        /// See [`Config::housekeeping_interval`].
        housekeeping_interval: Duration;
        /// See [`Config::first_report_timeout`].
        first_report_timeout: Duration;
        /// See [`Config::transfer_batch_size`].
        transfer_batch_size: u32;
        /// See [`Config::first_batch_size`].
        first_batch_size: Option<u32>;
        /// See [`Config::max_frame_size`].
        max_frame_size: u32;
        /// See [`Config::start_position`].
        start_position: StartPosition;
        /// See [`Config::reject_ack_above_max`].
        reject_ack_above_max: bool;
        /// See [`Config::reject_ack_above_sent`].
        reject_ack_above_sent: bool;
        /// See [`Config::max_gap_not_in_sync`].
        max_gap_not_in_sync: u64;
        /// See [`Config::slave_timeout`].
        slave_timeout: Duration;
        /// See [`Config::connect_timeout`].
        connect_timeout: Duration;
        /// See [`Config::reconnect_backoff_initial`].
        reconnect_backoff_initial: Duration;
        /// See [`Config::reconnect_backoff_max`].
        reconnect_backoff_max: Duration;
        /// See [`Config::write_stall_timeout`].
        write_stall_timeout: Duration;
        /// See [`Config::local_failure_backoff_initial`].
        local_failure_backoff_initial: Duration;
        /// See [`Config::local_failure_backoff_max`].
        local_failure_backoff_max: Duration;
        /// See [`Config::rate_limit`].
        rate_limit: Option<NonZeroU64>;
        /// See [`Config::local_segment_size`].
        local_segment_size: Option<NonZeroU64>;
        /// See [`Config::verify_records`].
        verify_records: bool;
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        self.config.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_rocketmq_and_valid() {
        let c = Config::builder().build().unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.heartbeat_interval(), Duration::from_secs(5));
        assert_eq!(c.housekeeping_interval(), Duration::from_secs(20));
        assert_eq!(c.transfer_batch_size(), 32768);
        assert_eq!(c.max_frame_size(), 4_194_304);
        assert_eq!(c.max_gap_not_in_sync(), 268_435_456);
        assert_eq!(c.slave_timeout(), Duration::from_secs(3));
        // Above a Java 4.9 slave's delayed first report (§4.2), below housekeeping.
        assert!(c.first_report_timeout() > c.heartbeat_interval() + Duration::from_secs(1));
        assert!(c.first_report_timeout() < c.housekeeping_interval());
    }

    #[test]
    fn invalid_values_are_typed_errors() {
        assert_eq!(
            Config::builder().transfer_batch_size(0).build(),
            Err(ConfigError::ZeroBatchSize)
        );
        assert_eq!(
            Config::builder().transfer_batch_size(4_194_293).build(),
            Err(ConfigError::BatchExceedsFrameLimit {
                batch: 4_194_293,
                max_frame: 4_194_304
            })
        );
        assert!(Config::builder()
            .transfer_batch_size(4_194_292)
            .build()
            .is_ok());
        assert_eq!(
            Config::builder().first_batch_size(Some(0)).build(),
            Err(ConfigError::ZeroBatchSize)
        );
        assert_eq!(
            Config::builder().max_frame_size(11).build(),
            Err(ConfigError::FrameLimitTooSmall(11))
        );
        assert_eq!(
            Config::builder().heartbeat_interval(Duration::ZERO).build(),
            Err(ConfigError::ZeroDuration("heartbeat_interval"))
        );
        assert!(matches!(
            Config::builder()
                .housekeeping_interval(Duration::from_secs(5))
                .build(),
            Err(ConfigError::HousekeepingNotAboveHeartbeat { .. })
        ));
        assert!(matches!(
            Config::builder()
                .reconnect_backoff_max(Duration::from_millis(1))
                .build(),
            Err(ConfigError::BackoffRange { .. })
        ));
        assert_eq!(
            Config::builder().max_gap_not_in_sync(0).build(),
            Err(ConfigError::ZeroGap)
        );
        assert_eq!(
            Config::builder().verify_records(true).build(),
            Err(ConfigError::VerifyNeedsSegmentSize)
        );
        assert!(Config::builder()
            .verify_records(true)
            .local_segment_size(NonZeroU64::new(4096))
            .build()
            .is_ok());
        assert_eq!(
            Config::builder()
                .first_report_timeout(Duration::ZERO)
                .build(),
            Err(ConfigError::ZeroDuration("first_report_timeout"))
        );
        assert!(matches!(
            Config::builder()
                .first_report_timeout(Duration::MAX)
                .build(),
            Err(ConfigError::DurationTooLong {
                name: "first_report_timeout",
                ..
            })
        ));
    }

    #[test]
    fn durations_that_would_overflow_instant_are_rejected() {
        let now = std::time::Instant::now();
        assert!(matches!(
            Config::builder()
                .housekeeping_interval(Duration::MAX)
                .build(),
            Err(ConfigError::DurationTooLong {
                name: "housekeeping_interval",
                ..
            })
        ));
        assert!(matches!(
            Config::builder()
                .reconnect_backoff_max(Duration::MAX)
                .build(),
            Err(ConfigError::DurationTooLong { .. })
        ));
        assert!(matches!(
            Config::builder()
                .write_stall_timeout(Duration::from_secs(u64::MAX))
                .build(),
            Err(ConfigError::DurationTooLong { .. })
        ));
        // The longest accepted value still gives a deadline.
        let c = Config::builder()
            .housekeeping_interval(Config::MAX_DURATION)
            .reconnect_backoff_max(Config::MAX_DURATION)
            .local_failure_backoff_max(Config::MAX_DURATION)
            .build()
            .unwrap();
        let _ = now + c.housekeeping_interval() + c.reconnect_backoff_max();
        assert!(matches!(
            Config::builder()
                .local_failure_backoff_initial(Duration::from_secs(60))
                .build(),
            Err(ConfigError::BackoffRange { .. })
        ));
    }
}
