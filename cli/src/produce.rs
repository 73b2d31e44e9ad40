//! `rocketmq-ha produce`: generated RocketMQ messages into a store, to fill a master's store
//! before serving it (a store is locked while open, so not while a master serves it: for a
//! growing log, `master --append-rate`).

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use rocketmq_ha::LogSource;
use rocketmq_ha_transports::file_log::{FileLog, StoreFormat};

use crate::progress::{Progress, Rate};
use crate::records::{Records, TOPIC};
use crate::size::{Human, SegmentSize, Size};
use crate::{signals, Context, Failure, StoreFormatArg};

/// Options of `rocketmq-ha produce`.
#[derive(Args)]
pub struct ProduceArgs {
    /// Store directory, holding `commitlog/`; created if missing.
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
    /// How much log to write (whole messages, so a little more).
    #[arg(long, value_name = "SIZE")]
    bytes: Size,
    /// Body size of each message.
    #[arg(long, value_name = "SIZE", default_value = "1KiB")]
    message_size: Size,
    /// Write at most this many bytes a second (default: as fast as the disk takes them).
    #[arg(long, value_name = "BYTES_PER_SEC")]
    rate: Option<Size>,
    /// Segment (mapped file) size of the store, 4KiB to 64GiB.
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    segment_size: SegmentSize,
    /// Format of a new store; an existing store must be in this format.
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "rocketmq")]
    store_format: StoreFormatArg,
}

/// Runs `produce`.
pub fn produce(args: ProduceArgs) -> Result<(), Failure> {
    if args.bytes.0 == 0 {
        return Err(Failure("--bytes must be more than 0".into()));
    }
    if args.rate.is_some_and(|r| r.0 == 0) {
        return Err(Failure("--rate must be more than 0 bytes a second".into()));
    }
    let format = StoreFormat::from(args.store_format);
    let mut log = FileLog::open_or_create_in(&args.store, args.segment_size.0, format)
        .context(format_args!("opening store {}", args.store.display()))?;
    let start = log.max_offset();
    let mut records = Records::new(log.segment_size(), start, args.message_size.0 as usize);
    eprintln!(
        "store {} ({format} format): appending {} of messages to topic {TOPIC} from offset {start}",
        args.store.display(),
        Human(args.bytes.0)
    );
    signals::install();
    let started = Instant::now();
    let mut progress = Progress::new("produce", Some(args.bytes.0));
    let mut rate = Rate::new(Duration::from_secs(3), 0);
    let mut written = 0u64;
    while written < args.bytes.0 {
        if let Some(signal) = signals::stop_requested() {
            progress.finish();
            eprintln!("{signal}: stopping");
            break;
        }
        let mut want = (args.bytes.0 - written).min(1 << 20);
        if let Some(limit) = args.rate {
            let due = (limit.0 as f64 * started.elapsed().as_secs_f64()) as u64;
            if due <= written {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            want = want.min(due - written);
        }
        // A message that does not fit a segment (with room for a blank record, as in RocketMQ)
        // fails here, before anything is written.
        let data = records
            .bytes(want)
            .map_err(|e| Failure(format!("--message-size {}: {e}", args.message_size.0)))?;
        log.append_at_end(&data).context("appending")?;
        written += data.len() as u64;
        progress.show(written, rate.sample(written), "");
    }
    progress.finish();
    let (min, end) = (log.min_offset(), log.max_offset());
    log.close().context("syncing the store")?;
    println!(
        "appended {} messages ({}); the store's log is now offsets {}..{end}, synced",
        records.count(),
        Human(end - start),
        min
    );
    Ok(())
}
