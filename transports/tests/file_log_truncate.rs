//! `FileLog::truncate_to`: an AutoSwitch slave's diverged tail is cut durably, the store
//! reopens at the cut, and readers' slices above it stay valid.

use std::fs;
use std::path::Path;

use rocketmq_ha::{LogSource, LogTruncate};
use rocketmq_ha_transports::file_log::{FileLog, CHECKPOINT_FILE, COMMITLOG_DIR};

const F: u64 = 4096;

mod common;

use common::Scratch;

fn pattern(start: u64, len: u64) -> Vec<u8> {
    (start..start + len)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect()
}

fn segment_files(store: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<_> = fs::read_dir(store.join(COMMITLOG_DIR))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    files.sort();
    files
}

fn checkpoint_field(store: &Path, key: &str) -> String {
    let text = fs::read_to_string(store.join(CHECKPOINT_FILE)).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .to_owned()
}

/// A store with `len` pattern bytes, synced.
fn store_with(dir: &Path, len: u64) -> FileLog {
    let mut log = FileLog::create(dir, F).unwrap();
    log.append_at(0, &pattern(0, len)).unwrap();
    log.sync().unwrap();
    log
}

#[test]
fn a_cut_inside_a_segment_drops_later_segments_and_survives_reopen() {
    let dir = Scratch::new("inside");
    let mut log = store_with(&dir.0, 3 * F + 500);
    assert_eq!(log.truncate_to(F + 904).unwrap(), F + 904);
    assert_eq!(log.max_offset(), F + 904);
    assert_eq!(
        segment_files(&dir.0),
        vec![(format!("{:020}", 0), F), (format!("{:020}", F), 904)]
    );
    assert_eq!(log.copy_range(0, F + 904).unwrap(), pattern(0, F + 904));
    // Appends continue at the cut, with other bytes than before.
    log.append_at(F + 904, &[0xAB; 10]).unwrap();
    log.close().unwrap();
    let log = FileLog::open(&dir.0, F).unwrap();
    assert_eq!(log.max_offset(), F + 914);
    assert_eq!(log.copy_range(0, F + 904).unwrap(), pattern(0, F + 904));
    assert_eq!(log.copy_range(F + 904, F + 914).unwrap(), vec![0xAB; 10]);
    // No scratch file is left in `commitlog/` (which must hold only segments).
    assert_eq!(segment_files(&dir.0).len(), 2);
}

#[test]
fn a_cut_at_a_segment_boundary_removes_that_segment() {
    let dir = Scratch::new("boundary");
    let mut log = store_with(&dir.0, 2 * F + 7);
    assert_eq!(LogTruncate::truncate_to(&mut log, 2 * F).unwrap(), 2 * F);
    assert_eq!(segment_files(&dir.0).len(), 2);
    log.append_at(2 * F, &pattern(2 * F, 100)).unwrap();
    drop(log);
    let log = FileLog::open(&dir.0, F).unwrap();
    assert_eq!(
        log.copy_range(0, 2 * F + 100).unwrap(),
        pattern(0, 2 * F + 100)
    );
}

#[test]
fn the_checkpoint_never_claims_cut_bytes_so_a_reboot_keeps_only_the_prefix() {
    let dir = Scratch::new("reboot");
    let mut log = store_with(&dir.0, 2 * F + 300);
    assert_eq!(
        checkpoint_field(&dir.0, "synced_max"),
        (2 * F + 300).to_string()
    );
    log.truncate_to(F + 10).unwrap();
    assert_eq!(checkpoint_field(&dir.0, "synced_max"), (F + 10).to_string());
    // New bytes after the cut, never synced; then the machine goes down: what is on disk is
    // copied before the log's drop could sync it, and the copy claims another boot.
    log.append_at(F + 10, &[0xEE; 3000]).unwrap();
    let crashed = Scratch::new("reboot-copy");
    fs::create_dir_all(crashed.0.join(COMMITLOG_DIR)).unwrap();
    for (name, _) in segment_files(&dir.0) {
        let at = Path::new(COMMITLOG_DIR).join(name);
        fs::copy(dir.0.join(&at), crashed.0.join(&at)).unwrap();
    }
    let text = fs::read_to_string(dir.0.join(CHECKPOINT_FILE)).unwrap();
    let boot = checkpoint_field(&dir.0, "boot_id");
    fs::write(
        crashed.0.join(CHECKPOINT_FILE),
        text.replace(&format!("boot_id {boot}"), "boot_id simulated-reboot"),
    )
    .unwrap();
    drop(log);
    let log = FileLog::open(&crashed.0, F).unwrap();
    assert_eq!(log.max_offset(), F + 10);
    assert_eq!(log.copy_range(0, F + 10).unwrap(), pattern(0, F + 10));
}

#[test]
fn a_readers_slice_above_the_cut_stays_valid_and_unchanged() {
    let dir = Scratch::new("reader");
    let mut log = store_with(&dir.0, 2 * F);
    let reader = log.reader();
    let held_cut_segment = reader.read(F + 100, 200).unwrap();
    let held_dropped_segment = log.read(100, 50).unwrap();
    log.truncate_to(F + 50).unwrap();
    log.append_at(F + 50, &[0x11; 1000]).unwrap();
    log.sync().unwrap();
    assert_eq!(&held_cut_segment[..], &pattern(F + 100, 200)[..]);
    assert_eq!(&held_dropped_segment[..], &pattern(100, 50)[..]);
    // New readers see the new bytes.
    assert_eq!(&reader.read(F + 100, 10).unwrap()[..], &[0x11; 10][..]);
}

#[test]
fn cuts_at_or_above_the_end_change_nothing() {
    let dir = Scratch::new("noop");
    let mut log = store_with(&dir.0, 1000);
    assert_eq!(log.truncate_to(1000).unwrap(), 1000);
    assert_eq!(log.truncate_to(5000).unwrap(), 1000);
    assert_eq!(log.copy_range(0, 1000).unwrap(), pattern(0, 1000));
}

#[test]
fn a_cut_to_the_start_empties_the_store_durably() {
    // Two histories from offset 0 without a shared epoch share no byte: the slave's log goes.
    let dir = Scratch::new("empty");
    let mut log = store_with(&dir.0, 2 * F + 10);
    assert_eq!(log.truncate_to(0).unwrap(), 0);
    assert_eq!((log.min_offset(), log.max_offset()), (0, 0));
    assert!(segment_files(&dir.0).is_empty());
    assert_eq!(checkpoint_field(&dir.0, "synced_max"), "0");
    log.append_at(0, &[0x42; 100]).unwrap();
    log.close().unwrap();
    let log = FileLog::open(&dir.0, F).unwrap();
    assert_eq!(log.copy_range(0, 100).unwrap(), vec![0x42; 100]);
    assert_eq!(log.max_offset(), 100);
}
