//! A `FileLog` keeps one segment file open however many segments it writes between flushes:
//! appending 128 segments works under a descriptor limit far below 128.
//!
//! This binary holds this one test, because it lowers its own process's `RLIMIT_NOFILE`, which
//! would starve tests running beside it.

use std::fs;
use std::path::Path;

use rocketmq_ha::LogSource;
use rocketmq_ha_transports::file_log::{FileLog, FlushMode, MIN_SEGMENT_SIZE};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Descriptors this process has open.
fn open_descriptors() -> usize {
    fs::read_dir("/proc/self/fd").map_or(0, |entries| entries.count())
}

fn pattern(start: u64, len: u64) -> Vec<u8> {
    (start..start + len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn appending_128_segments_needs_no_descriptor_per_segment() {
    const SEGMENT: u64 = 64 * 1024;
    const SEGMENTS: u64 = 128;
    const LIMIT: u64 = 24;
    const { assert!(SEGMENT >= MIN_SEGMENT_SIZE) };
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("file_handles-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);

    let before = open_descriptors();
    let old = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(LIMIT),
            maximum: old.maximum,
        },
    )
    .unwrap();
    // A slave between two flushes: nothing syncs but the roll to each new segment.
    let mut log = FileLog::create(&dir, SEGMENT).unwrap();
    log.set_flush_mode(FlushMode::Manual).unwrap();
    let total = SEGMENTS * SEGMENT;
    let mut most = 0;
    let mut at = 0;
    while at < total {
        // Odd sizes, so appends straddle segment boundaries.
        let len = (total - at).min(40_000);
        at = log.append_at_end(&pattern(at, len)).unwrap();
        most = most.max(open_descriptors());
    }
    assert_eq!(log.segment_starts().len(), SEGMENTS as usize);
    println!(
        "{SEGMENTS} segments under a limit of {LIMIT} descriptors: at most {most} open, \
         {before} before the store was opened"
    );
    // The store lock and the tail, nothing per segment.
    assert!(
        most <= before + 2,
        "{most} descriptors open, {before} before"
    );
    log.close().unwrap();

    let log = FileLog::open(&dir, SEGMENT).unwrap();
    assert_eq!(log.max_offset(), total);
    assert_eq!(log.copy_range(0, total).unwrap(), pattern(0, total));
    drop(log);
    let _ = fs::remove_dir_all(&dir);
}
