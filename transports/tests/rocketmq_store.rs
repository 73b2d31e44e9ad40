//! `FileLog` on stores in RocketMQ's own format: preallocated segment files whose end is found
//! by walking records, and RocketMQ's `lock` file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rocketmq_ha::record::{LogWriter, Message, RecordFault};
use rocketmq_ha::{LogSink, LogSource};
use rocketmq_ha_transports::file_log::{
    segment_file_name, FileLog, FileLogError, StoreFormat, COMMITLOG_DIR, ROCKETMQ_ABORT_FILE,
    ROCKETMQ_CHECKPOINT_FILE, ROCKETMQ_CHECKPOINT_LEN, ROCKETMQ_LOCK_FILE,
};

const F: u64 = 64 * 1024;

/// A scratch store directory, removed again when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "rocketmq-ha-rocketmq-store-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join(COMMITLOG_DIR)).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn message(i: u64) -> Message {
    let mut m = Message::new(
        format!("topic-{}", i % 3),
        vec![(i % 251) as u8 + 1; 500 + (i % 700) as usize],
    );
    m.queue_offset = i as i64;
    m.store_timestamp = 1_700_000_000_000 + i as i64;
    m
}

/// Encodes `count` messages as a broker lays them out from offset 0, returning the log bytes
/// and each record's offset.
fn encode(count: u64) -> (Vec<u8>, Vec<u64>) {
    let mut writer = LogWriter::new(F, 0);
    let mut log = Vec::new();
    let offsets = (0..count)
        .map(|i| writer.push(&message(i), &mut log).unwrap())
        .collect();
    (log, offsets)
}

/// Writes `log` into preallocated, zero-filled segment files, as a broker leaves them, plus
/// `spare` all-zero segment files after them (the broker allocates the next file ahead).
fn write_store(root: &Path, log: &[u8], spare: u64) {
    let segments = (log.len() as u64).div_ceil(F).max(1) + spare;
    for k in 0..segments {
        let mut bytes = log
            .get((k * F) as usize..)
            .map(|rest| rest[..rest.len().min(F as usize)].to_vec())
            .unwrap_or_default();
        bytes.resize(F as usize, 0);
        fs::write(
            root.join(COMMITLOG_DIR).join(segment_file_name(k * F)),
            bytes,
        )
        .unwrap();
    }
}

#[test]
fn a_preallocated_store_ends_after_its_last_record() {
    let store = Scratch::new("prealloc");
    let (log, offsets) = encode(300);
    assert!(
        log.len() as u64 > 3 * F,
        "the test wants more than three segments"
    );
    write_store(&store.0, &log, 1);
    let opened = FileLog::open(&store.0, F).unwrap();
    assert_eq!(opened.mode(), StoreFormat::RocketMq);
    assert_eq!(
        (opened.min_offset(), opened.max_offset()),
        (0, log.len() as u64)
    );
    let walk = opened.record_walk().unwrap();
    assert_eq!(walk.first_bad, None);
    // The last three of five files: the walk starts at the third-last.
    assert_eq!(walk.start, 2 * F);
    let walked = offsets.iter().filter(|&&o| o >= 2 * F).count() as u64;
    assert_eq!(walk.records, walked);
    assert_eq!(opened.copy_range(0, log.len() as u64).unwrap(), log);
    // Nothing above the last record is served.
    assert!(opened.read(log.len() as u64, 100).unwrap().is_empty());
}

#[test]
fn rocketmqs_checkpoint_file_marks_a_store_whose_first_file_is_empty() {
    let store = Scratch::new("checkpoint");
    write_store(&store.0, &[], 0);
    fs::write(store.0.join(ROCKETMQ_CHECKPOINT_FILE), [0u8; 4096]).unwrap();
    let opened = FileLog::open(&store.0, F).unwrap();
    assert_eq!(opened.mode(), StoreFormat::RocketMq);
    assert_eq!((opened.min_offset(), opened.max_offset()), (0, 0));
    drop(opened);

    // Without it, a zero-filled file is no evidence: the file's length is the end (raw).
    let raw = Scratch::new("zero-raw");
    write_store(&raw.0, &[], 0);
    let opened = FileLog::open(&raw.0, F).unwrap();
    assert_eq!(opened.mode(), StoreFormat::Raw);
    assert_eq!(opened.max_offset(), F);
}

#[test]
fn a_torn_last_record_ends_the_log_at_the_one_before() {
    let store = Scratch::new("torn");
    let (mut log, offsets) = encode(100);
    let last = *offsets.last().unwrap();
    // The last record lost its second half: zeros there, as a crash leaves a preallocated file.
    let cut = (last as usize + log.len()) / 2;
    log.truncate(cut);
    write_store(&store.0, &log, 0);
    let mut opened = FileLog::open(&store.0, F).unwrap();
    assert_eq!(opened.max_offset(), last);
    let bad = opened.record_walk().unwrap().first_bad.clone().unwrap();
    assert_eq!(bad.offset, last);
    // Zeros in place of the topic length make the fields fall short of the total size.
    assert!(
        matches!(
            bad.fault,
            RecordFault::LengthMismatch { .. } | RecordFault::BodyCrc { .. }
        ),
        "{bad}"
    );

    // Appending overwrites the torn record, and the rest of its segment is zeroed first, so
    // the store walks cleanly to the new end.
    let mut writer = LogWriter::new(F, last);
    let mut more = Vec::new();
    for i in 100..160 {
        writer.push(&message(i), &mut more).unwrap();
    }
    opened.append_at(last, &more).unwrap();
    assert_eq!(opened.max_offset(), writer.offset());
    opened.close().unwrap();
    let reopened = FileLog::open(&store.0, F).unwrap();
    assert_eq!(reopened.mode(), StoreFormat::RocketMq);
    assert_eq!(reopened.max_offset(), writer.offset());
    assert_eq!(reopened.record_walk().unwrap().first_bad, None);
    // New segment files are full size, as a broker needs them.
    for start in reopened.segment_starts() {
        assert_eq!(fs::metadata(reopened.segment_path(start)).unwrap().len(), F);
    }
}

#[test]
fn a_bad_record_in_the_middle_ends_the_log_there() {
    let store = Scratch::new("corrupt");
    let (mut log, offsets) = encode(300);
    let victim = offsets[offsets.len() - 20];
    log[victim as usize + 100] ^= 0xFF;
    write_store(&store.0, &log, 0);
    let opened = FileLog::open(&store.0, F).unwrap();
    assert_eq!(opened.max_offset(), victim);
    assert_eq!(
        opened
            .record_walk()
            .unwrap()
            .first_bad
            .as_ref()
            .unwrap()
            .offset,
        victim
    );
}

/// When run as a child with `HA_TRY_LOCK=<file>`: takes an `fcntl` write lock on the file as
/// a RocketMQ broker does, reports the outcome through the exit code (0 locked, 3 refused),
/// and with `HA_HOLD=1` keeps it until its stdin closes. A normal run does nothing.
#[test]
fn lock_child() {
    let Some(path) = std::env::var_os("HA_TRY_LOCK") else {
        return;
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    if rustix::fs::fcntl_lock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err()
    {
        std::process::exit(3);
    }
    if std::env::var_os("HA_HOLD").is_some() {
        println!("locked");
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    }
    std::process::exit(0);
}

/// Helper process for the crash test: with `HA_CRASH_STORE` set, creates a RocketMQ-format
/// store there, appends the first `HA_CRASH_CUT` bytes of the test log and aborts without
/// closing it. A normal run does nothing.
#[test]
fn crash_child() {
    let Some(root) = std::env::var_os("HA_CRASH_STORE") else {
        return;
    };
    let cut: usize = std::env::var("HA_CRASH_CUT").unwrap().parse().unwrap();
    let (log, _) = encode(200);
    let mut file_log = FileLog::create_in(&root, F, StoreFormat::RocketMq).unwrap();
    file_log.append_at_end(&log[..cut]).unwrap();
    std::process::abort();
}

fn lock_child_command(lock: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "lock_child", "--nocapture", "--test-threads=1"])
        .env("HA_TRY_LOCK", lock);
    cmd
}

#[test]
fn a_store_a_broker_holds_is_refused_and_ours_keeps_a_broker_out() {
    let store = Scratch::new("lock");
    let (log, _) = encode(10);
    write_store(&store.0, &log, 0);
    let lock = store.0.join(ROCKETMQ_LOCK_FILE);

    // A "broker" holds the lock: we refuse the store.
    let mut broker = lock_child_command(&lock)
        .env("HA_HOLD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The test harness prints its own lines first.
    let mut reader = std::io::BufReader::new(broker.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("locked") {
        line.clear();
        if std::io::BufRead::read_line(&mut reader, &mut line).unwrap() == 0 {
            break;
        }
    }
    assert!(line.contains("locked"), "{line:?}");
    match FileLog::open(&store.0, F) {
        Err(FileLogError::BrokerLocked { path }) => assert_eq!(path, lock),
        other => panic!("opened a store a broker holds: {other:?}"),
    }
    drop(broker.stdin.take());
    assert!(broker.wait().unwrap().success());

    // The broker is gone: we open it, and now a broker cannot take the lock.
    let opened = FileLog::open(&store.0, F).unwrap();
    let status = lock_child_command(&lock)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(3),
        "a broker took the lock of an open store"
    );
    drop(opened);
    let status = lock_child_command(&lock)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0), "the lock outlived the store");
}

/// A scratch directory with nothing in it (for stores `FileLog` creates).
fn empty_scratch(name: &str) -> Scratch {
    let store = Scratch::new(name);
    fs::remove_dir_all(&store.0).unwrap();
    store
}

#[test]
fn a_new_rocketmq_store_has_what_a_broker_expects_and_full_size_files() {
    let store = empty_scratch("create");
    let (log, offsets) = encode(400);
    assert!(log.len() as u64 > 2 * F, "the test wants several segments");
    let mut file_log = FileLog::create_in(&store.0, F, StoreFormat::RocketMq).unwrap();
    assert_eq!(file_log.mode(), StoreFormat::RocketMq);
    let checkpoint = fs::read(store.0.join(ROCKETMQ_CHECKPOINT_FILE)).unwrap();
    assert_eq!(checkpoint.len(), ROCKETMQ_CHECKPOINT_LEN);
    assert!(checkpoint.iter().all(|&b| b == 0));
    assert!(store.0.join(ROCKETMQ_LOCK_FILE).exists());
    assert!(
        !store.0.join(ROCKETMQ_ABORT_FILE).exists(),
        "no write yet: nothing to recover"
    );

    // Appended as a slave does: in pieces that cut records anywhere.
    for chunk in log.chunks(10_007) {
        file_log.append_at_end(chunk).unwrap();
    }
    assert!(
        store.0.join(ROCKETMQ_ABORT_FILE).exists(),
        "written and not closed: a broker must recover as after a crash"
    );
    file_log.close().unwrap();
    assert!(
        !store.0.join(ROCKETMQ_ABORT_FILE).exists(),
        "closed cleanly"
    );
    for entry in fs::read_dir(store.0.join(COMMITLOG_DIR)).unwrap() {
        let len = entry.unwrap().metadata().unwrap().len();
        assert_eq!(len, F, "a broker refuses a segment file of another length");
    }

    // Reopened, as a broker's recovery would: the end is after the last record.
    let reopened = FileLog::open(&store.0, F).unwrap();
    assert_eq!(reopened.mode(), StoreFormat::RocketMq);
    assert_eq!(reopened.max_offset(), log.len() as u64);
    let walk = reopened.record_walk().unwrap();
    assert_eq!(walk.first_bad, None);
    assert!(walk.records > 0 && walk.records <= offsets.len() as u64);
    assert_eq!(reopened.copy_range(0, log.len() as u64).unwrap(), log);
}

#[test]
fn a_rocketmq_store_killed_mid_record_keeps_its_abort_marker_and_ends_at_a_record() {
    let store = empty_scratch("killed");
    let (log, offsets) = encode(200);
    let cut = offsets[150] + 77; // inside record 150
                                 // Written by a child process that then dies without closing, as by `kill -9`.
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("HA_CRASH_STORE", &store.0)
        .env("HA_CRASH_CUT", cut.to_string())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child aborts: {status:?}");
    assert!(store.0.join(ROCKETMQ_ABORT_FILE).exists());

    let mut reopened = FileLog::open(&store.0, F).unwrap();
    assert_eq!(
        reopened.max_offset(),
        offsets[150],
        "the torn record is not log"
    );
    // A slave resumes from there and the store ends complete.
    reopened
        .append_at(offsets[150], &log[offsets[150] as usize..])
        .unwrap();
    reopened.close().unwrap();
    assert!(
        store.0.join(ROCKETMQ_ABORT_FILE).exists(),
        "a marker left by an earlier crash is the broker's to clear"
    );
    let again = FileLog::open(&store.0, F).unwrap();
    assert_eq!(again.max_offset(), log.len() as u64);
    assert_eq!(again.copy_range(0, log.len() as u64).unwrap(), log);
}

#[test]
fn a_rocketmq_store_only_starts_on_a_segment_boundary() {
    let store = empty_scratch("unaligned");
    let mut file_log = FileLog::create_in(&store.0, F, StoreFormat::RocketMq).unwrap();
    match file_log.append_at(F / 2, b"x") {
        Err(FileLogError::UnalignedStart {
            offset,
            segment_size,
        }) => assert_eq!((offset, segment_size), (F / 2, F)),
        other => panic!("expected UnalignedStart, got {other:?}"),
    }
    let (log, _) = encode(10);
    file_log.append_at(3 * F, &log).unwrap();
    assert_eq!(file_log.min_offset(), 3 * F);
    assert_eq!(file_log.max_offset(), 3 * F + log.len() as u64);
}

#[test]
fn a_store_asked_for_in_the_other_format_is_refused_naming_both() {
    let store = empty_scratch("mismatch");
    FileLog::create_in(&store.0, F, StoreFormat::Raw)
        .unwrap()
        .close()
        .unwrap();
    match FileLog::open_or_create_in(&store.0, F, StoreFormat::RocketMq) {
        Err(e @ FileLogError::FormatMismatch { .. }) => {
            let text = e.to_string();
            assert!(text.contains("raw") && text.contains("rocketmq"), "{text}");
        }
        other => panic!("expected FormatMismatch, got {other:?}"),
    }
    let log = FileLog::open_or_create_in(&store.0, F, StoreFormat::Raw).unwrap();
    assert_eq!(log.mode(), StoreFormat::Raw);
}

#[test]
fn a_rocketmq_store_is_cut_on_a_record_boundary_keeping_full_size_files() {
    let store = empty_scratch("cut");
    let (log, offsets) = encode(400);
    let mut file_log = FileLog::create_in(&store.0, F, StoreFormat::RocketMq).unwrap();
    file_log.append_at_end(&log).unwrap();
    file_log.close().unwrap();

    // Cut at a record in the middle of the second segment, as an AutoSwitch slave is cut to
    // the start of its new master's epoch.
    let cut = *offsets.iter().find(|&&o| o > F + F / 2).unwrap();
    let mut file_log = FileLog::open(&store.0, F).unwrap();
    assert_eq!(file_log.truncate_to(cut).unwrap(), cut);
    assert_eq!(file_log.max_offset(), cut);
    assert!(
        store.0.join(ROCKETMQ_ABORT_FILE).exists(),
        "changed and not closed: a broker must recover as after a crash"
    );
    file_log.close().unwrap();
    for entry in fs::read_dir(store.0.join(COMMITLOG_DIR)).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(entry.metadata().unwrap().len(), F, "{entry:?}");
        assert!(entry.file_name() <= *segment_file_name(segment_start(cut)).as_str());
    }

    // Recovery (ours walks records as RocketMQ's does) ends exactly at the cut.
    let reopened = FileLog::open(&store.0, F).unwrap();
    assert_eq!(reopened.max_offset(), cut);
    assert_eq!(reopened.record_walk().unwrap().first_bad, None);
    assert_eq!(reopened.copy_range(0, cut).unwrap(), log[..cut as usize]);
    drop(reopened);

    // An empty RocketMQ store starts only on a segment boundary: a cut below the oldest byte
    // that is not on one is refused and changes nothing; one that is empties the store.
    let later = empty_scratch("cut-later");
    let mut file_log = FileLog::create_in(&later.0, F, StoreFormat::RocketMq).unwrap();
    file_log.append(2 * F, log[..1000].to_vec().into()).unwrap();
    assert!(matches!(
        file_log.truncate_to(100),
        Err(FileLogError::UnalignedStart { offset: 100, .. })
    ));
    assert_eq!(
        (file_log.min_offset(), file_log.max_offset()),
        (2 * F, 2 * F + 1000)
    );
    assert_eq!(file_log.truncate_to(F).unwrap(), F);
    assert_eq!((file_log.min_offset(), file_log.max_offset()), (F, F));
}

fn segment_start(offset: u64) -> u64 {
    offset - offset % F
}
