//! `rocketmq-ha inspect --store DIR`: what a store holds, for operators: its format, segments,
//! offsets, what is synced, and for a RocketMQ-format store what the recovery walk found.

use std::path::PathBuf;

use rocketmq_ha::LogSource;
use rocketmq_ha_transports::file_log::{FileLog, StoreFormat};

use crate::bench::Json;
use crate::size::{Human, SegmentSize};
use crate::{Context, Failure};

/// Options of `rocketmq-ha inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// Store directory, holding `commitlog/`.
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
    /// Segment (mapped file) size the store was written with.
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    segment_size: SegmentSize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn inspect(args: InspectArgs) -> Result<(), Failure> {
    if !args.store.join("commitlog").is_dir() {
        return Err(Failure(format!(
            "{}: no commitlog/ directory: not a store",
            args.store.display()
        )));
    }
    let log = FileLog::open(&args.store, args.segment_size.0)
        .context(format_args!("opening store {}", args.store.display()))?;
    let segments = log.segment_starts();
    let walk = log.record_walk().cloned();
    let format = match log.mode() {
        StoreFormat::Raw => "raw",
        StoreFormat::RocketMq => "rocketmq",
    };
    if args.json {
        let mut fields = vec![
            ("store", args.store.display().to_string().as_str().into()),
            ("format", format.into()),
            ("segment_size", args.segment_size.0.into()),
            ("segments", (segments.len() as u64).into()),
            ("min_offset", log.min_offset().into()),
            ("max_offset", log.max_offset().into()),
            ("synced_offset", log.synced_offset().into()),
        ];
        if let Some(walk) = &walk {
            fields.push(("records_walked", walk.records.into()));
            fields.push(("walk_start", walk.start.into()));
            if let Some(e) = &walk.first_bad {
                fields.push(("first_bad_record", e.to_string().as_str().into()));
            }
        }
        println!("{}", Json::obj(fields));
        return Ok(());
    }
    println!("store           {}", args.store.display());
    println!("format          {format}");
    println!(
        "segments        {} of {}{}",
        segments.len(),
        Human(args.segment_size.0),
        match (segments.first(), segments.last()) {
            (Some(first), Some(last)) => format!(" (files {first:020} .. {last:020})"),
            _ => String::new(),
        }
    );
    println!(
        "offsets         {} .. {} ({})",
        log.min_offset(),
        log.max_offset(),
        Human(log.max_offset() - log.min_offset())
    );
    println!(
        "synced up to    {} ({} not yet synced)",
        log.synced_offset(),
        Human(log.max_offset().saturating_sub(log.synced_offset()))
    );
    if let Some(walk) = walk {
        println!(
            "record walk     {} message records from {} to the end",
            walk.records, walk.start
        );
        match walk.first_bad {
            Some(e) => println!("first bad record {e}"),
            None => println!("first bad record none (the walk ended at zeros or a blank record)"),
        }
    }
    Ok(())
}
