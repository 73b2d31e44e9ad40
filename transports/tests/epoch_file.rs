//! The epoch file on disk: RocketMQ's place and format, the `.bak` fallback, crash-safe
//! replacement.

use std::fs;

use rocketmq_ha::autoswitch::{EpochEntry, EpochList};
use rocketmq_ha_transports::epoch_file::{EpochFile, EpochFileError, EPOCH_FILE_NAME};

mod common;

use common::Scratch;

fn list(entries: &[(i32, u64)]) -> EpochList {
    EpochList::from_entries(entries.iter().map(|&(e, s)| EpochEntry::new(e, s))).unwrap()
}

#[test]
fn it_lives_in_the_store_root_under_rocketmqs_name_and_format() {
    let dir = Scratch::new("place");
    let file = EpochFile::in_store(&dir.0);
    assert_eq!(file.path(), dir.0.join(EPOCH_FILE_NAME));
    assert_eq!(EPOCH_FILE_NAME, "epochFileCheckpoint");
    assert_eq!(file.load().unwrap(), EpochList::new());
    file.store(&list(&[(7, 7000), (8, 8000)])).unwrap();
    assert_eq!(
        fs::read_to_string(file.path()).unwrap(),
        "2\n773307083\n7-7000\n8-8000\n"
    );
    assert_eq!(file.load().unwrap(), list(&[(7, 7000), (8, 8000)]));
    // No temporary file is left behind.
    let names: Vec<_> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec![EPOCH_FILE_NAME.to_string()]);
}

#[test]
fn each_write_keeps_the_previous_content_as_bak() {
    let dir = Scratch::new("bak");
    let file = EpochFile::in_store(&dir.0);
    file.store(&list(&[(1, 0)])).unwrap();
    file.store(&list(&[(1, 0), (2, 100)])).unwrap();
    assert_eq!(
        fs::read_to_string(file.backup_path()).unwrap(),
        fs::read_to_string(dir.0.join("epochFileCheckpoint.bak")).unwrap()
    );
    assert!(fs::read_to_string(file.backup_path())
        .unwrap()
        .ends_with("\n1-0\n"));
    assert_eq!(file.load().unwrap(), list(&[(1, 0), (2, 100)]));
}

#[test]
fn a_torn_or_empty_file_falls_back_to_bak() {
    let dir = Scratch::new("torn");
    let file = EpochFile::in_store(&dir.0);
    file.store(&list(&[(1, 0)])).unwrap();
    file.store(&list(&[(1, 0), (2, 100)])).unwrap();
    // What Java's in-place rewrite can leave after a crash.
    fs::write(file.path(), "2\n12345\n1-0\n").unwrap();
    assert_eq!(file.load().unwrap(), list(&[(1, 0)]));
    fs::write(file.path(), "").unwrap();
    assert_eq!(file.load().unwrap(), list(&[(1, 0)]));
    // Without a backup the error surfaces.
    fs::remove_file(file.backup_path()).unwrap();
    fs::write(file.path(), "2\n12345\n1-0\n").unwrap();
    assert!(matches!(file.load(), Err(EpochFileError::Format { .. })));
}

#[test]
fn an_empty_history_removes_both_files() {
    let dir = Scratch::new("empty");
    let file = EpochFile::in_store(&dir.0);
    file.store(&list(&[(1, 0)])).unwrap();
    file.store(&list(&[(1, 0), (2, 5)])).unwrap();
    file.store(&EpochList::new()).unwrap();
    assert!(!file.path().exists());
    assert!(!file.backup_path().exists());
    assert_eq!(file.load().unwrap(), EpochList::new());
}

#[test]
fn a_file_written_by_java_is_read() {
    // EpochFileCacheTest's cache after its set-up: 1-100, 2-300, 3-500, in the text Java writes
    // (the CRC computed with zlib, whose CRC-32 is java.util.zip.CRC32's).
    let dir = Scratch::new("java");
    let file = EpochFile::at(dir.0.join("EpochCheckpoint"));
    fs::write(file.path(), "3\n453994644\n1-100\n2-300\n3-500\n").unwrap();
    assert_eq!(file.load().unwrap(), list(&[(1, 100), (2, 300), (3, 500)]));
}
