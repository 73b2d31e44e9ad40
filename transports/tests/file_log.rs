//! The file-backed commit log: layout, zero-copy reads, recovery, bad stores, and a slave killed
//! with SIGKILL in the middle of appending.

use std::env;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use rocketmq_ha::{LogError, LogSink, LogSource, MemoryLog};
use rocketmq_ha_transports::file_log::{
    compare_logs, segment_file_name, FileLog, FileLogError, FlushMode, FlushPolicy, Flusher,
    CHECKPOINT_FILE, COMMITLOG_DIR, DEFAULT_SEGMENT_SIZE, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE,
};
use rocketmq_ha_transports::SharedLog;

const F: u64 = 4096;

mod common;

use common::Scratch;

impl Scratch {
    fn commitlog(&self) -> PathBuf {
        self.0.join(COMMITLOG_DIR)
    }

    /// Writes a segment file by hand, as RocketMQ or an operator would.
    fn put_segment(&self, name: &str, contents: &[u8]) -> PathBuf {
        fs::create_dir_all(self.commitlog()).unwrap();
        let path = self.commitlog().join(name);
        fs::write(&path, contents).unwrap();
        path
    }
}

/// The log byte at `offset`: depends on the offset in a way that shows any shift or reorder.
fn pattern_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ offset as u8
}

fn pattern(start: u64, len: u64) -> Vec<u8> {
    (start..start + len).map(pattern_byte).collect()
}

/// Deterministic noise for a store "made with /dev/urandom".
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Checks every byte of `[min, max)` against the pattern, reading with the zero-copy path.
fn assert_pattern(log: &impl LogSource) {
    let (min, max) = (log.min_offset(), log.max_offset());
    let mut at = min;
    while at < max {
        let piece = log.read(at, 64 * 1024).unwrap();
        assert!(!piece.is_empty(), "empty read at {at} below max {max}");
        if let Some(i) = piece
            .iter()
            .enumerate()
            .position(|(i, &b)| b != pattern_byte(at + i as u64))
        {
            panic!("byte at offset {} differs from the pattern", at + i as u64);
        }
        at += piece.len() as u64;
    }
}

#[test]
fn appends_roll_over_into_new_segments_and_reads_stop_at_each_boundary() {
    let store = Scratch::new("roll");
    let mut log = FileLog::create(store.path(), F).unwrap();
    let mut at = 0;
    for len in [1000, 3000, 5000, 10_000, 1, 96, 4096, 777] {
        at = log.append_at_end(&pattern(at, len)).unwrap();
    }
    assert_eq!(at, 23_970);
    assert_eq!(log.max_offset(), at);
    assert_eq!(log.min_offset(), 0);
    let starts: Vec<u64> = (0..=at / F).map(|k| k * F).collect();
    assert_eq!(log.segment_starts(), starts);

    // RocketMQ's layout: 20-digit names, raw bytes, every file full but the last.
    for &start in &starts {
        let path = store.commitlog().join(segment_file_name(start));
        assert_eq!(path, log.segment_path(start));
        let on_disk = fs::read(&path).unwrap();
        assert_eq!(on_disk, pattern(start, F.min(at - start)), "{path:?}");
    }
    assert!(store.commitlog().join("00000000000000004096").is_file());

    // A read never crosses a segment, however much is asked for.
    assert_eq!(log.read(4000, 1000).unwrap().len(), 96);
    assert_eq!(log.read(4096, 100_000).unwrap().len(), 4096);
    assert_eq!(log.read(0, 10).unwrap(), pattern(0, 10));
    for offset in (0..at).step_by(331) {
        let piece = log.read(offset, 5000).unwrap();
        let segment_end = (offset / F + 1) * F;
        assert_eq!(piece.len() as u64, (segment_end.min(at)) - offset);
        assert_eq!(piece, pattern(offset, piece.len() as u64));
    }
    // The growing last segment is served only up to the max offset.
    let last = *starts.last().unwrap();
    assert_eq!(log.read(last, usize::MAX).unwrap().len() as u64, at - last);
    assert!(log.read(at, 10).unwrap().is_empty());
    assert!(matches!(
        log.read(at + 1, 10),
        Err(LogError::AboveMax { offset, max }) if offset == at + 1 && max == at
    ));
    assert_eq!(log.copy_range(0, at).unwrap(), pattern(0, at));
}

#[test]
fn reads_are_slices_of_the_mapping_that_outlive_retention() {
    let store = Scratch::new("zero-copy");
    let mut log = FileLog::create(store.path(), F).unwrap();
    log.append_at_end(&pattern(0, 3 * F + 10)).unwrap();

    let first = log.read(100, 50).unwrap();
    let again = log.read(100, 50).unwrap();
    let later = log.read(110, 50).unwrap();
    // A copy would land somewhere new each time; a slice of the mapping does not move.
    assert_eq!(first.as_ptr(), again.as_ptr());
    assert_eq!(later.as_ptr(), first.as_ptr().wrapping_add(10));
    let reader = log.reader();
    assert_eq!(reader.read(100, 50).unwrap().as_ptr(), first.as_ptr());

    // Deleting the segment unlinks the file; the slice still holds its bytes.
    assert_eq!(log.delete_segments_before(2 * F).unwrap(), 2 * F);
    assert!(!log.segment_path(0).exists());
    assert_eq!(first, pattern(100, 50));
    assert!(matches!(
        reader.read(100, 50),
        Err(LogError::BelowRetained { offset: 100, min }) if min == 2 * F
    ));
}

#[test]
fn a_reader_on_another_thread_sees_appends_as_they_return() {
    // Drivers share the writer behind a lock or hand readers to other threads.
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<FileLog>();
    shareable::<rocketmq_ha_transports::file_log::FileLogReader>();

    let store = Scratch::new("reader-thread");
    let mut log = FileLog::create(store.path(), F).unwrap();
    let reader = log.reader();
    let total = 40 * F + 123;
    let checker = thread::spawn(move || {
        let mut at = 0;
        let mut last_max = 0;
        while at < total {
            let piece = reader.read(at, 10_000).unwrap();
            // The max only grows, so reading it after the read bounds what the read returned.
            let max = reader.max_offset();
            assert!(
                max >= last_max,
                "max offset went back from {last_max} to {max}"
            );
            last_max = max;
            assert!(piece.len() as u64 <= max - at);
            assert_eq!(piece, pattern(at, piece.len() as u64), "at {at}");
            at += piece.len() as u64;
        }
        at
    });
    let mut at = 0;
    let mut len = 1;
    while at < total {
        let n = len.min(total - at);
        at = log.append_at_end(&pattern(at, n)).unwrap();
        len = len * 7 % 5003 + 1;
    }
    assert_eq!(checker.join().unwrap(), total);
}

/// Several pieces written at once (one `pwritev` per segment) land exactly as the same pieces
/// appended one by one: across segment boundaries, with empty pieces, and with more pieces than
/// one vectored write takes.
#[test]
fn vectored_appends_match_single_appends_across_segments() {
    let store = Scratch::new("vectored");
    let mut log = FileLog::create(store.path(), F).unwrap();
    let mut memory = MemoryLog::new(F);
    let mut at = 0;
    for (round, sizes) in [
        vec![100, 0, 3000, 2000],
        vec![F, F + 1, 7],
        vec![1; 200],
        vec![0],
        vec![],
        vec![4095, 1, 4096, 12],
    ]
    .into_iter()
    .enumerate()
    {
        let mut pieces = Vec::new();
        let mut end = at;
        for size in sizes {
            pieces.push(Bytes::from(pattern(end, size)));
            end += size;
        }
        assert_eq!(log.append_all(at, &pieces).unwrap(), end, "round {round}");
        assert_eq!(
            memory.append_all(at, &pieces).unwrap(),
            end,
            "round {round}"
        );
        at = end;
    }
    assert_eq!(log.max_offset(), at);
    assert_pattern(&log);
    assert!(compare_logs(&log, &memory).unwrap().identical());
    // A gap is refused before anything is written.
    let gap = [Bytes::from(pattern(at + 1, 10))];
    assert!(matches!(
        log.append_all(at + 1, &gap),
        Err(LogError::NotContiguous { .. })
    ));
    drop(log);
    let log = FileLog::open(store.path(), F).unwrap();
    assert_eq!(log.max_offset(), at);
    assert_pattern(&log);
}

#[test]
fn reopening_recovers_the_max_offset_and_the_bytes() {
    let store = Scratch::new("reopen");
    let mut log = FileLog::create(store.path(), F).unwrap();
    log.append_at_end(&pattern(0, 5 * F + 1234)).unwrap();
    drop(log);

    let mut log = FileLog::open(store.path(), F).unwrap();
    assert_eq!((log.min_offset(), log.max_offset()), (0, 5 * F + 1234));
    assert_eq!(log.segment_size(), F);
    assert_pattern(&log);
    // Appends continue in the last, partly filled, segment and then roll over.
    assert!(matches!(
        log.append_at(5 * F + 1233, b"x"),
        Err(FileLogError::NotContiguous { offset, max }) if offset == 5 * F + 1233 && max == 5 * F + 1234
    ));
    log.append_at_end(&pattern(5 * F + 1234, 2 * F)).unwrap();
    log.close().unwrap();

    let log = FileLog::open_or_create(store.path(), F).unwrap();
    assert_eq!(log.max_offset(), 7 * F + 1234);
    assert_eq!(log.segment_starts().len(), 8);
    assert_pattern(&log);
}

#[test]
fn an_empty_slave_starts_mid_log_in_the_aligned_segment() {
    let store = Scratch::new("mid-log");
    let start = 3 * F + 100;
    let mut log = FileLog::create(store.path(), F).unwrap();
    assert_eq!((log.min_offset(), log.max_offset()), (0, 0));

    // §4.4: an empty slave takes whatever offset the master pushes.
    let max = log.append(start, Bytes::from(pattern(start, 50))).unwrap();
    assert_eq!(max, start + 50);
    assert_eq!(log.segment_starts(), vec![3 * F]);
    let file = log.segment_path(3 * F);
    assert_eq!(fs::metadata(&file).unwrap().len(), 150);
    assert_eq!(&fs::read(&file).unwrap()[100..], &pattern(start, 50)[..]);
    assert_eq!(log.min_offset(), start);
    assert!(matches!(
        log.read(start - 1, 1),
        Err(LogError::BelowRetained { min, .. }) if min == start
    ));

    // Once it holds bytes, only the end is accepted, and a refused append writes nothing.
    assert!(matches!(
        log.append(start + 51, Bytes::from_static(b"x")),
        Err(LogError::NotContiguous { .. })
    ));
    assert_eq!(log.max_offset(), start + 50);
    assert_eq!(fs::metadata(&file).unwrap().len(), 150);

    log.append(start + 50, Bytes::from(pattern(start + 50, 2 * F)))
        .unwrap();
    drop(log);

    let mut log = FileLog::open(store.path(), F).unwrap();
    assert_eq!(log.min_offset(), start);
    assert_eq!(log.max_offset(), start + 50 + 2 * F);
    assert_eq!(log.segment_starts(), vec![3 * F, 4 * F, 5 * F]);
    assert_pattern(&log);
    log.append_at_end(&pattern(start + 50 + 2 * F, 10)).unwrap();
    assert_pattern(&log);

    // Retention keeps the recorded start while its segment is the oldest, then moves on.
    assert_eq!(log.delete_segments_before(3 * F + 500).unwrap(), start);
    assert_eq!(log.delete_segments_before(4 * F + 1).unwrap(), 4 * F);
    drop(log);
    assert_eq!(FileLog::open(store.path(), F).unwrap().min_offset(), 4 * F);
}

#[test]
fn an_empty_store_moves_its_start_until_the_first_byte_lands() {
    let store = Scratch::new("empty-start");
    let mut log = FileLog::create(store.path(), F).unwrap();
    // Even an empty append moves it, as for the in-memory log.
    assert_eq!(log.append_at(10 * F + 7, b"").unwrap(), 10 * F + 7);
    assert_eq!(log.min_offset(), 10 * F + 7);
    assert_eq!(log.append_at(3 * F, &pattern(3 * F, 1)).unwrap(), 3 * F + 1);
    assert_eq!(log.segment_starts(), vec![3 * F]);
    let err = log.append_at(10 * F + 7, b"").unwrap_err();
    assert_eq!(
        err.to_string(),
        "append at offset 40967 but the log ends at 12289"
    );
    drop(log);
    let log = FileLog::open(store.path(), F).unwrap();
    assert_eq!((log.min_offset(), log.max_offset()), (3 * F, 3 * F + 1));
    drop(log);

    // A crash after the checkpoint named a start but before the first byte: a store holding
    // nothing, that still takes any offset.
    let crashed = Scratch::new("empty-start-crash");
    FileLog::create(crashed.path(), F).unwrap();
    fs::write(
        crashed.path().join(CHECKPOINT_FILE),
        format!(
            "rocketmq-ha file_log checkpoint v1\nsegment_size {F}\nbase {}\nsynced_max {}\nboot_id -\n",
            2 * F + 5,
            2 * F + 5
        ),
    )
    .unwrap();
    crashed.put_segment(&segment_file_name(2 * F), b"");
    let mut log = FileLog::open(crashed.path(), F).unwrap();
    assert_eq!((log.min_offset(), log.max_offset()), (2 * F + 5, 2 * F + 5));
    assert!(log.read(2 * F + 5, 10).unwrap().is_empty());
    assert_eq!(log.append_at(F, &pattern(F, 3)).unwrap(), F + 3);
    assert_eq!(log.segment_starts(), vec![F]);
    assert!(!log.segment_path(2 * F).exists());
    drop(log);
    let log = FileLog::open(crashed.path(), F).unwrap();
    assert_eq!((log.min_offset(), log.max_offset()), (F, F + 3));
}

#[test]
fn a_store_written_by_head_c_from_urandom_is_servable() {
    // head -c 10000 /dev/urandom > commitlog/00000000000000000000
    let store = Scratch::new("head-c");
    let bytes = noise(42, 10_000);
    store.put_segment("00000000000000000000", &bytes);
    let log = FileLog::open(store.path(), DEFAULT_SEGMENT_SIZE).unwrap();
    assert_eq!((log.min_offset(), log.max_offset()), (0, 10_000));
    assert_eq!(log.read(0, usize::MAX).unwrap(), bytes);
    assert_eq!(log.read(9_990, 100).unwrap(), bytes[9_990..]);
    drop(log);

    // Several hand-made segments with small files: full ones, then a short last one.
    let store = Scratch::new("head-c-multi");
    let bytes = noise(7, (2 * F + 99) as usize);
    for (k, chunk) in bytes.chunks(F as usize).enumerate() {
        store.put_segment(&segment_file_name(k as u64 * F), chunk);
    }
    let mut log = FileLog::open(store.path(), F).unwrap();
    assert_eq!(log.max_offset(), 2 * F + 99);
    assert_eq!(log.copy_range(0, 2 * F + 99).unwrap(), bytes);
    // Our own appends continue it, without a checkpoint, like any store.
    assert_eq!(log.append_at_end(b"tail").unwrap(), 2 * F + 103);
    drop(log);
    let log = FileLog::open(store.path(), F).unwrap();
    assert_eq!(log.copy_range(2 * F + 97, 2 * F + 103).unwrap(), {
        let mut v = bytes[(2 * F + 97) as usize..].to_vec();
        v.extend_from_slice(b"tail");
        v
    });
}

/// Opens `store` with segment size `f`, expecting an error whose message names `file`.
fn open_err(store: &Scratch, f: u64, file: &str) -> FileLogError {
    let err = FileLog::open(store.path(), f).unwrap_err();
    assert!(
        err.to_string().contains(file),
        "error {err} does not name {file}"
    );
    err
}

#[test]
fn bad_stores_are_errors_that_name_the_file() {
    let full = noise(1, F as usize);

    let store = Scratch::new("gap");
    store.put_segment("00000000000000000000", &full);
    store.put_segment("00000000000000008192", b"abc");
    let err = open_err(&store, F, "00000000000000008192");
    assert!(
        matches!(err, FileLogError::Gap { expected: 4096, .. }),
        "{err}"
    );

    let store = Scratch::new("short-middle");
    store.put_segment("00000000000000000000", &full[..100]);
    store.put_segment("00000000000000004096", b"abc");
    let err = open_err(&store, F, "00000000000000000000");
    assert!(
        matches!(err, FileLogError::WrongSegmentLength { len: 100, .. }),
        "{err}"
    );

    let store = Scratch::new("too-long");
    store.put_segment("00000000000000000000", &noise(2, F as usize + 1));
    let err = open_err(&store, F, "00000000000000000000");
    assert!(matches!(err, FileLogError::SegmentTooLong { .. }), "{err}");

    for name in [
        "foo",
        "0000000000000000000",
        "000000000000000000000",
        "00000000000000000000.tmp",
        "99999999999999999999",
    ] {
        let store = Scratch::new("bad-name");
        store.put_segment("00000000000000000000", b"ok");
        store.put_segment(name, b"");
        let err = open_err(&store, F, name);
        assert!(matches!(err, FileLogError::BadFileName { .. }), "{err}");
    }

    let store = Scratch::new("unaligned");
    store.put_segment("00000000000000001000", b"abc");
    let err = open_err(&store, F, "00000000000000001000");
    assert!(
        matches!(
            err,
            FileLogError::UnalignedSegment {
                start: 1000,
                segment_size: F,
                ..
            }
        ),
        "{err}"
    );

    let store = Scratch::new("directory");
    fs::create_dir_all(store.commitlog().join("00000000000000000000")).unwrap();
    let err = open_err(&store, F, "00000000000000000000");
    assert!(matches!(err, FileLogError::NotAFile { .. }), "{err}");

    let store = Scratch::new("missing");
    let err = open_err(&store, F, COMMITLOG_DIR);
    assert!(matches!(err, FileLogError::NoStore { .. }), "{err}");

    let store = Scratch::new("exists");
    FileLog::create(store.path(), F).unwrap();
    let err = FileLog::create(store.path(), F).unwrap_err();
    assert!(matches!(err, FileLogError::StoreExists { .. }), "{err}");
    assert!(err.to_string().contains(COMMITLOG_DIR), "{err}");
    let err = open_err(&store, 2 * F, CHECKPOINT_FILE);
    assert!(
        matches!(
            err,
            FileLogError::SegmentSizeMismatch {
                recorded: F,
                requested: 8192,
                ..
            }
        ),
        "{err}"
    );

    fs::write(store.path().join(CHECKPOINT_FILE), "garbage\n").unwrap();
    let err = open_err(&store, F, CHECKPOINT_FILE);
    assert!(matches!(err, FileLogError::BadCheckpoint { .. }), "{err}");

    // The checkpoint says the log starts beyond the end of its first file.
    let store = Scratch::new("checkpoint-ahead");
    FileLog::create(store.path(), F).unwrap();
    fs::write(
        store.path().join(CHECKPOINT_FILE),
        format!("rocketmq-ha file_log checkpoint v1\nsegment_size {F}\nbase 5000\nsynced_max 5000\nboot_id -\n"),
    )
    .unwrap();
    store.put_segment("00000000000000000000", b"abc");
    let err = open_err(&store, F, CHECKPOINT_FILE);
    assert!(
        matches!(err, FileLogError::CheckpointMismatch { .. }),
        "{err}"
    );

    for size in [0, u64::MAX] {
        let store = Scratch::new("segment-size");
        let err = FileLog::create(store.path(), size).unwrap_err();
        assert!(
            matches!(err, FileLogError::InvalidSegmentSize { .. }),
            "{err}"
        );
    }

    // Through the core's trait, a bad store is a storage error that still names the file.
    let err = LogError::from(FileLogError::Gap {
        path: PathBuf::from("commitlog/00000000000000008192"),
        expected: 4096,
    });
    assert!(matches!(err, LogError::Storage(_)));
    assert!(err.to_string().contains("00000000000000008192"));
}

#[test]
fn retention_deletes_whole_old_segments_but_never_the_last() {
    let store = Scratch::new("retention");
    let mut log = FileLog::create(store.path(), F).unwrap();
    log.append_at_end(&pattern(0, 5 * F + 10)).unwrap();

    assert_eq!(log.delete_segments_before(F - 1).unwrap(), 0);
    assert_eq!(log.delete_segments_before(2 * F + 10).unwrap(), 2 * F);
    assert_eq!(log.segment_starts(), vec![2 * F, 3 * F, 4 * F, 5 * F]);
    assert!(!log.segment_path(0).exists() && !log.segment_path(F).exists());
    assert!(matches!(
        log.read(2 * F - 1, 1),
        Err(LogError::BelowRetained { min, .. }) if min == 2 * F
    ));
    assert_pattern(&log);
    drop(log);

    let mut log = FileLog::open(store.path(), F).unwrap();
    assert_eq!(log.min_offset(), 2 * F);
    assert_pattern(&log);
    // The end sits exactly on a boundary: everything but the last (full) file goes.
    log.append_at_end(&pattern(5 * F + 10, F - 10)).unwrap();
    assert_eq!(log.delete_segments_before(u64::MAX).unwrap(), 5 * F);
    assert_eq!(log.segment_starts(), vec![5 * F]);
    assert_eq!((log.min_offset(), log.max_offset()), (5 * F, 6 * F));
    log.append_at_end(&pattern(6 * F, 1)).unwrap();
    assert_pattern(&log);
    drop(log);
    let log = FileLog::open(store.path(), F).unwrap();
    assert_eq!((log.min_offset(), log.max_offset()), (5 * F, 6 * F + 1));
}

#[test]
fn comparing_stores_finds_the_first_differing_byte() {
    let a = Scratch::new("compare-a");
    let b = Scratch::new("compare-b");
    let mut master = FileLog::create(a.path(), F).unwrap();
    let mut slave = FileLog::create(b.path(), F).unwrap();
    master.append_at_end(&pattern(0, 3 * F)).unwrap();
    slave.append_at_end(&pattern(0, 3 * F)).unwrap();
    assert!(compare_logs(&master, &slave).unwrap().identical());

    master.append_at_end(&pattern(3 * F, 10)).unwrap();
    let cmp = compare_logs(&slave, &master).unwrap();
    assert!(!cmp.identical());
    assert!(cmp.a_is_prefix_of_b());
    assert!(!compare_logs(&master, &slave).unwrap().a_is_prefix_of_b());

    // The same bytes in memory compare equal to the store.
    let mut memory = MemoryLog::new(F);
    memory.push(pattern(0, 3 * F + 10));
    assert!(compare_logs(&memory, &master).unwrap().identical());

    // One flipped byte on disk, found after reopening.
    drop(slave);
    let victim = b.commitlog().join(segment_file_name(F));
    let mut bytes = fs::read(&victim).unwrap();
    bytes[1234] ^= 0x40;
    fs::write(&victim, bytes).unwrap();
    let slave = FileLog::open(b.path(), F).unwrap();
    let cmp = compare_logs(&slave, &master).unwrap();
    assert_eq!(cmp.first_difference, Some(F + 1234));
    assert!(!cmp.a_is_prefix_of_b());
}

#[test]
fn appends_past_the_largest_wire_offset_are_refused() {
    let store = Scratch::new("overflow");
    let mut log = FileLog::create(store.path(), F).unwrap();
    let top = (i64::MAX as u64) / F * F;
    assert_eq!(log.append_at(top, b"a").unwrap(), top + 1);
    let err = log.append_at_end(&vec![0; F as usize]).unwrap_err();
    assert!(matches!(err, FileLogError::OffsetOverflow { .. }), "{err}");
    assert_eq!(log.max_offset(), top + 1);
}

// ---- SIGKILL in the middle of appending -------------------------------------------------------

/// Set in the child: the store directory (it appends until killed).
const CRASH_CHILD: &str = "FILE_LOG_CRASH_CHILD";
/// Set in the child that should sync now and then (then the kill mostly lands in an fsync).
const CRASH_CHILD_SYNCS: &str = "FILE_LOG_CRASH_CHILD_SYNCS";
const CRASH_SEGMENT: u64 = 64 * 1024;
const CRASH_START: u64 = 3 * CRASH_SEGMENT + 4321;
/// The child stops appending after this many bytes per run, so the store stays small.
const CRASH_RUN_CAP: u64 = 48 << 20;

/// The child's append sizes when it starts at `first`: deterministic, so the parent can tell
/// whether a kill cut an append in half.
fn crash_chunk_lengths(first: u64) -> impl Iterator<Item = u64> {
    let mut seed = first;
    std::iter::repeat_with(move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % 40_000 + 1
    })
}

/// Whether `max` falls inside one of the child's appends rather than between two.
fn inside_an_append(first: u64, max: u64) -> bool {
    let mut end = first;
    for len in crash_chunk_lengths(first) {
        if end >= max {
            return false;
        }
        end += len;
        if end > max {
            return true;
        }
    }
    false
}

/// The child: appends the pattern in odd-sized chunks as a slave would, syncing now and then,
/// and reports on stdout once it has appended, until the parent kills it.
fn crash_child(dir: &str) -> ! {
    let mut log = FileLog::open_or_create(dir, CRASH_SEGMENT).unwrap();
    let first = if log.max_offset() == log.min_offset() {
        CRASH_START
    } else {
        log.max_offset()
    };
    let mut at = first;
    let mut lengths = crash_chunk_lengths(first);
    let mut appends = 0u64;
    let syncs = env::var_os(CRASH_CHILD_SYNCS).is_some();
    loop {
        if at - first < CRASH_RUN_CAP {
            let len = lengths.next().unwrap_or(1);
            let data = Bytes::from(pattern(at, len));
            at = if appends.is_multiple_of(2) {
                log.append(at, data).unwrap()
            } else {
                // As a slave's driver does with the frames of one read: one vectored write.
                let third = data.len() / 3;
                let pieces = [
                    data.slice(..third),
                    data.slice(third..2 * third),
                    data.slice(2 * third..),
                ];
                log.append_all(at, &pieces).unwrap()
            };
            appends += 1;
            if syncs && appends.is_multiple_of(128) {
                log.sync().unwrap();
            }
            if appends == 1 {
                println!("appended {at}");
            }
        } else {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn a_slave_killed_mid_append_reopens_to_a_prefix_and_resumes_byte_identical() {
    if let Ok(dir) = env::var(CRASH_CHILD) {
        crash_child(&dir);
    }
    let store = Scratch::new("sigkill");
    let exe = env::current_exe().unwrap();
    let mut previous_max = 0;
    let mut cut_appends = 0;
    for round in 0..8u64 {
        let mut command = Command::new(&exe);
        command
            .args([
                "--exact",
                "a_slave_killed_mid_append_reopens_to_a_prefix_and_resumes_byte_identical",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD, store.path())
            .env_remove(CRASH_CHILD_SYNCS)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if round % 2 == 1 {
            command.env(CRASH_CHILD_SYNCS, "1");
        }
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let reported: u64 = loop {
            let line = lines
                .next()
                .expect("child exited before appending")
                .unwrap();
            // The harness prints "test <name> ... " without a newline just before.
            if let Some((_, n)) = line.split_once("appended ") {
                break n.parse().unwrap();
            }
        };
        thread::sleep(Duration::from_millis(1 + 7 * round));
        // SIGKILL: no destructor, no sync, possibly in the middle of a write.
        child.kill().unwrap();
        child.wait().unwrap();

        let log = FileLog::open(store.path(), CRASH_SEGMENT).unwrap();
        assert_eq!(log.min_offset(), CRASH_START);
        assert!(
            log.max_offset() >= reported && log.max_offset() > previous_max,
            "round {round}: max {} after the child reported {reported}",
            log.max_offset()
        );
        assert_pattern(&log);
        let first = previous_max.max(CRASH_START);
        let cut = inside_an_append(first, log.max_offset());
        cut_appends += u32::from(cut);
        println!(
            "round {round}: killed after {} bytes{}",
            log.max_offset() - first,
            if cut {
                ", in the middle of an append"
            } else {
                ""
            }
        );
        previous_max = log.max_offset();
    }
    // Whether a kill lands inside a write is up to the scheduler, so this is reported, not
    // asserted; the checks above hold either way.
    println!("{cut_appends} of 8 kills cut an append in half");

    // The parent resumes as the restarted slave would, across a segment boundary.
    let mut log = FileLog::open(store.path(), CRASH_SEGMENT).unwrap();
    let mut at = log.max_offset();
    let end = at + 2 * CRASH_SEGMENT + 17;
    while at < end {
        let len = (end - at).min(9_999);
        at = log.append(at, Bytes::from(pattern(at, len))).unwrap();
    }
    log.close().unwrap();
    let log = FileLog::open(store.path(), CRASH_SEGMENT).unwrap();
    assert_eq!((log.min_offset(), log.max_offset()), (CRASH_START, end));
    assert_pattern(&log);
}

#[test]
fn a_store_open_in_one_handle_is_locked_against_a_second_until_dropped() {
    let store = Scratch::new("lock");
    let first = FileLog::create(store.path(), F).unwrap();
    match FileLog::open(store.path(), F) {
        Err(FileLogError::Locked { path }) => {
            assert!(path.ends_with(rocketmq_ha_transports::file_log::LOCK_FILE))
        }
        other => panic!("a second writer must be refused, got {other:?}"),
    }
    drop(first);
    FileLog::open(store.path(), F).expect("the lock is released on drop");
}

// ---- Segment sizes ------------------------------------------------------------------------------

#[test]
fn segment_sizes_below_a_page_or_above_64_gib_are_refused_with_the_reason() {
    for (size, reason) in [
        (0, "at least one page"),
        (1000, "at least one page"),
        (MIN_SEGMENT_SIZE - 1, "at least one page"),
        (MAX_SEGMENT_SIZE + 1, "too large"),
        (100 << 40, "too large"),
    ] {
        let store = Scratch::new("segment-size-range");
        let err = FileLog::create(store.path(), size).unwrap_err();
        assert!(
            matches!(err, FileLogError::InvalidSegmentSize { size: s, .. } if s == size),
            "{err}"
        );
        assert!(err.to_string().contains(reason), "{size}: {err}");
        let err = FileLog::open_or_create(store.path(), size).unwrap_err();
        assert!(
            matches!(err, FileLogError::InvalidSegmentSize { .. }),
            "{err}"
        );
        assert!(
            !store.commitlog().exists(),
            "a refused size created a store"
        );
    }
    assert_eq!(MAX_SEGMENT_SIZE, 64 << 30);
    let store = Scratch::new("segment-size-one-page");
    let mut log = FileLog::create(store.path(), MIN_SEGMENT_SIZE).unwrap();
    log.append_at_end(&pattern(0, 3 * MIN_SEGMENT_SIZE + 1))
        .unwrap();
    assert_eq!(log.segment_starts().len(), 4);
}

#[test]
fn a_store_opened_with_another_segment_size_says_which_it_has() {
    // Our own store: the checkpoint records the size.
    let store = Scratch::new("size-checkpoint");
    let mut log = FileLog::create(store.path(), 2 * F).unwrap();
    log.append_at_end(&pattern(0, 5 * F)).unwrap();
    log.close().unwrap();
    for other in [F, 4 * F] {
        let err = FileLog::open_or_create(store.path(), other).unwrap_err();
        assert!(
            matches!(err, FileLogError::SegmentSizeMismatch { recorded, requested, .. }
                if recorded == 2 * F && requested == other),
            "{err}"
        );
        assert!(err.to_string().contains("segment size 8192, not"), "{err}");
    }

    // A store without our checkpoint (written by RocketMQ or by hand): the files show it.
    fs::remove_file(store.path().join(CHECKPOINT_FILE)).unwrap();
    for other in [F, 4 * F] {
        let err = open_err(&store, other, &segment_file_name(0));
        assert!(
            matches!(
                err,
                FileLogError::SegmentSizeMismatch { recorded: 8192, .. }
            ),
            "{err}"
        );
    }
    let log = FileLog::open(store.path(), 2 * F).unwrap();
    assert_eq!(log.max_offset(), 5 * F);
}

// ---- Durability -------------------------------------------------------------------------------

#[test]
fn a_flusher_thread_advances_the_checkpoint_while_appends_go_on() {
    let store = Scratch::new("flusher");
    let mut log = FileLog::create(store.path(), 64 * 1024).unwrap();
    log.set_flush_mode(FlushMode::Periodic(FlushPolicy::new(
        Duration::from_millis(10),
        4,
        Duration::from_millis(100),
    )))
    .unwrap();
    let shared = SharedLog::new(log);
    let flusher = Flusher::spawn(shared.clone()).unwrap();
    let mut at = 0;
    for _ in 0..50 {
        at = shared.append(pattern(at, 7_000)).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    // The last bytes are less than 4 pages: only a thorough tick (100 ms) takes them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while shared.read().synced_offset() < at {
        assert!(std::time::Instant::now() < deadline, "never synced {at}");
        thread::sleep(Duration::from_millis(5));
    }
    assert!(!flusher.is_finished());
    flusher.stop().unwrap();
    assert_eq!(checkpoint_synced_max(store.path()), at);
}

/// The `synced_max` of the store's checkpoint file.
fn checkpoint_synced_max(store: &Path) -> u64 {
    checkpoint_field(store, "synced_max").parse().unwrap()
}

fn checkpoint_field(store: &Path, key: &str) -> String {
    let text = fs::read_to_string(store.join(CHECKPOINT_FILE)).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .to_owned()
}

/// Copies a store directory (the files of a stopped process), e.g. to try two recoveries.
fn copy_store(from: &Path, to: &Path) {
    fs::create_dir_all(to.join(COMMITLOG_DIR)).unwrap();
    fs::copy(from.join(CHECKPOINT_FILE), to.join(CHECKPOINT_FILE)).unwrap();
    for entry in fs::read_dir(from.join(COMMITLOG_DIR)).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(COMMITLOG_DIR).join(entry.file_name())).unwrap();
    }
}

/// Plays a power loss on a store whose process is gone: everything after the checkpoint's
/// synced offset is lost. The file holding that offset keeps its length but holds garbage
/// after it, and gains a page of garbage (file systems may leave a file longer than the data
/// that reached the disk); the next file holds only garbage; later files are gone. The
/// checkpoint's boot id changes: the machine restarted. Returns the synced offset.
fn simulate_power_loss(store: &Path, segment: u64) -> u64 {
    let synced = checkpoint_synced_max(store);
    let commitlog = store.join(COMMITLOG_DIR);
    let mut files: Vec<(u64, PathBuf)> = fs::read_dir(&commitlog)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_str().unwrap().parse().unwrap(), e.path())
        })
        .collect();
    files.sort();
    let mut garbage_files = 0;
    for (start, path) in files {
        let len = fs::metadata(&path).unwrap().len();
        if start + len <= synced {
            continue;
        }
        if start <= synced {
            let keep = (synced - start) as usize;
            let mut bytes = fs::read(&path).unwrap();
            let longer = (bytes.len() + 4096).min(segment as usize);
            bytes.resize(longer, 0);
            bytes[keep..].copy_from_slice(&noise(synced, longer - keep));
            fs::write(&path, bytes).unwrap();
        } else if garbage_files == 0 {
            garbage_files += 1;
            fs::write(&path, noise(start, len as usize)).unwrap();
        } else {
            fs::remove_file(&path).unwrap();
        }
    }
    let text = fs::read_to_string(store.join(CHECKPOINT_FILE)).unwrap();
    let boot = checkpoint_field(store, "boot_id");
    fs::write(
        store.join(CHECKPOINT_FILE),
        text.replace(&format!("boot_id {boot}"), "boot_id simulated-reboot"),
    )
    .unwrap();
    synced
}

/// Set in the child of the power-loss test: the store directory.
const FLUSH_CHILD: &str = "FILE_LOG_FLUSH_CHILD";
const FLUSH_SEGMENT: u64 = 64 * 1024;

/// The child: appends the pattern as a slave would, with a `Flusher` on a fast policy, and
/// prints each synced offset it sees, until killed.
fn flush_child(dir: &str) -> ! {
    let mut log = FileLog::create(dir, FLUSH_SEGMENT).unwrap();
    log.set_flush_mode(FlushMode::Periodic(FlushPolicy::new(
        Duration::from_millis(5),
        4,
        Duration::from_millis(50),
    )))
    .unwrap();
    let shared = SharedLog::new(log);
    let _flusher = Flusher::spawn(shared.clone()).unwrap();
    let mut at = 0;
    let mut reported = 0;
    let mut lengths = crash_chunk_lengths(1);
    loop {
        if at < 16 << 20 {
            let len = lengths.next().unwrap_or(1);
            at = shared.append(pattern(at, len)).unwrap();
        }
        let synced = shared.read().synced_offset();
        if synced > reported {
            reported = synced;
            println!("synced {synced}");
        }
        thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn after_sigkill_and_a_power_loss_the_store_keeps_everything_it_synced() {
    if let Ok(dir) = env::var(FLUSH_CHILD) {
        flush_child(&dir);
    }
    let store = Scratch::new("power-loss");
    let mut child = Command::new(env::current_exe().unwrap())
        .args([
            "--exact",
            "after_sigkill_and_a_power_loss_the_store_keeps_everything_it_synced",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FLUSH_CHILD, store.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Wait until the flusher has synced across a few segments, then kill mid-run.
    let reported: u64 = loop {
        let line = lines.next().expect("child exited").unwrap();
        // The harness prints "test <name> ... " without a newline just before; the name
        // holds "synced" too.
        if let Some((_, n)) = line.rsplit_once("synced ") {
            let n: u64 = n.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
            if n > 3 * FLUSH_SEGMENT {
                break n;
            }
        }
    };
    thread::sleep(Duration::from_millis(30));
    child.kill().unwrap();
    child.wait().unwrap();
    let written = {
        let log_dir = store.commitlog();
        let mut ends: Vec<u64> = fs::read_dir(&log_dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let start: u64 = e.file_name().to_str().unwrap().parse().unwrap();
                start + e.metadata().unwrap().len()
            })
            .collect();
        ends.sort();
        *ends.last().unwrap()
    };
    let synced = checkpoint_synced_max(store.path());
    assert!(
        synced >= reported,
        "checkpoint {synced} < reported {reported}"
    );
    println!("killed with {written} bytes written, {synced} synced");

    // The same boot (only the process died): the files are trusted, every byte written stays.
    let same_boot = Scratch::new("power-loss-same-boot");
    copy_store(store.path(), same_boot.path());
    let log = FileLog::open(same_boot.path(), FLUSH_SEGMENT).unwrap();
    assert_eq!(log.max_offset(), written);
    assert!(log.max_offset() >= synced);
    assert_pattern(&log);
    drop(log);

    // The machine restarted and lost what was not synced: only the checkpoint is trusted.
    let synced = simulate_power_loss(store.path(), FLUSH_SEGMENT);
    let log = FileLog::open(store.path(), FLUSH_SEGMENT).unwrap();
    assert!(log.max_offset() >= reported, "lost synced bytes");
    assert_eq!(
        log.max_offset(),
        synced,
        "kept bytes past the synced offset"
    );
    assert!(log.max_offset() <= written);
    assert_pattern(&log);
    assert_eq!(log.synced_offset(), synced);
    drop(log);
    // Recovery cut the garbage off for good: a second open agrees.
    let log = FileLog::open(store.path(), FLUSH_SEGMENT).unwrap();
    assert_eq!(log.max_offset(), synced);
    assert_pattern(&log);
}
