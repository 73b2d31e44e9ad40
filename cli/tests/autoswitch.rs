//! The AutoSwitch story with our own processes over real sockets (the done-when):
//! master A at epoch 1 replicates to B; A is killed after writing a tail B never got; B becomes
//! master at epoch 2 and takes writes; A comes back as B's slave, is cut back to the common
//! point and ends byte-identical to B, and the two epoch files agree.
//!
//! There is no controller: each role change is a restart with the new `--epoch`, as an
//! operator (or a script standing in for RocketMQ's controller) would do it.

mod common;

use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use rocketmq_ha::autoswitch::{EpochEntry, EpochList};
use rocketmq_ha::LogSource;
use rocketmq_ha_transports::epoch_file::EpochFile;
use rocketmq_ha_transports::file_log::{compare_logs, FileLog};

use common::{start_master, KillOnDrop, TempStore, BIN};

const SEGMENT: &str = "1MiB";

/// The store's options, the same for every process.
fn store(dir: &TempStore) -> [&str; 6] {
    [
        "--store",
        dir.path(),
        "--segment-size",
        SEGMENT,
        "--store-format",
        "raw",
    ]
}

/// AutoSwitch flags for broker `id` at `epoch`.
fn role(id: &'static str, epoch: &'static str) -> [&'static str; 6] {
    [
        "--protocol",
        "autoswitch",
        "--broker-id",
        id,
        "--epoch",
        epoch,
    ]
}

fn end_of(dir: &TempStore) -> u64 {
    FileLog::open_or_create(&dir.0, 1 << 20)
        .unwrap()
        .max_offset()
}

fn epochs_of(dir: &TempStore) -> EpochList {
    EpochFile::in_store(&dir.0).load().unwrap()
}

/// Runs `slave ... --until until` to its end; asserts it reached the offset.
fn replicate(slave: &TempStore, id: &'static str, epoch: &'static str, master: &str, until: u64) {
    let out = Command::new(BIN)
        .arg("slave")
        .args(store(slave))
        .args(role(id, epoch))
        .args(["--master", master, "--until", &until.to_string()])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "slave failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reached offset"));
}

/// Starts `dir` as master of `epoch`, appending at 256 KiB/s.
fn writing_master(dir: &TempStore, id: &'static str, epoch: &'static str) -> (KillOnDrop, String) {
    let (master, addr) = start_master(
        &store(dir),
        &[&role(id, epoch)[..], &["--append-rate", "256KiB"]].concat(),
        Stdio::null(),
    );
    (master, addr.to_string())
}

/// Stops `master` with `signal` (`-TERM`: a clean stop, `-KILL`: a crash).
fn stop(mut master: KillOnDrop, signal: &str) {
    let pid = master.0.id().to_string();
    let sent = Command::new("kill").args([signal, &pid]).status().unwrap();
    assert!(sent.success());
    let status = master.0.wait().unwrap();
    if signal == "-TERM" {
        assert!(status.success(), "{status}");
    }
}

#[test]
fn a_master_killed_with_a_tail_rejoins_the_new_master_is_cut_and_converges() {
    let (a, b) = (TempStore::new("as-a"), TempStore::new("as-b"));

    // Epoch 1: A is master and takes writes; B follows until it has 128 KiB and stops.
    let (master_a, addr_a) = writing_master(&a, "1", "1");
    replicate(&b, "2", "1", &addr_a, 128 * 1024);
    let shared = end_of(&b);
    // A writes on, a tail B never gets, and is killed.
    thread::sleep(Duration::from_millis(300));
    stop(master_a, "-KILL");
    let tail_end = end_of(&a);
    assert!(tail_end > shared, "A wrote no tail: {tail_end} <= {shared}");
    let a_tail = FileLog::open_or_create(&a.0, 1 << 20)
        .unwrap()
        .copy_range(shared, tail_end)
        .unwrap();
    assert_eq!(epochs_of(&a).entries(), &[EpochEntry::new(1, 0)]);
    assert_eq!(epochs_of(&a), epochs_of(&b));

    // Epoch 2: B becomes master and takes writes; then it serves them, writing no more.
    let (master_b, _) = writing_master(&b, "2", "2");
    thread::sleep(Duration::from_millis(500));
    stop(master_b, "-TERM");
    let b_end = end_of(&b);
    assert!(b_end > shared, "B took no writes");
    assert_eq!(
        epochs_of(&b).entries(),
        &[EpochEntry::new(1, 0), EpochEntry::new(2, shared)]
    );
    let (master_b, addr_b) = start_master(&store(&b), &role("2", "2"), Stdio::null());

    // A comes back as B's slave: cut back to where epoch 2 starts, then B's bytes.
    replicate(&a, "1", "2", &addr_b.to_string(), b_end);
    stop(master_b, "-TERM");
    let (log_a, log_b) = (
        FileLog::open_or_create(&a.0, 1 << 20).unwrap(),
        FileLog::open_or_create(&b.0, 1 << 20).unwrap(),
    );
    // A's tail and B's epoch 2 differ (random bytes from two seeds), so equal logs prove A
    // was cut.
    let overlap = a_tail.len().min((b_end - shared) as usize);
    let b_part = log_b.copy_range(shared, shared + overlap as u64).unwrap();
    assert_ne!(a_tail[..overlap], b_part[..]);
    let comparison = compare_logs(&log_a, &log_b).unwrap();
    assert!(comparison.identical(), "{comparison:?}");
    assert_eq!(epochs_of(&a), epochs_of(&b));
}

#[test]
fn autoswitch_flags_are_checked_with_their_names() {
    let dir = TempStore::new("as-flags");
    let cases: [(&[&str], &str); 4] = [
        (
            &["master", "--epoch", "1"],
            "--epoch and --broker-id need --protocol autoswitch",
        ),
        (
            &["master", "--protocol", "autoswitch", "--epoch", "1"],
            "needs --epoch and --broker-id",
        ),
        (
            &[
                "slave",
                "--master",
                "127.0.0.1:1",
                "--protocol",
                "autoswitch",
                "--epoch",
                "0",
                "--broker-id",
                "2",
            ],
            "--epoch 0: must be at least 1",
        ),
        (
            &[
                "slave",
                "--master",
                "127.0.0.1:1",
                "--protocol",
                "autoswitch",
                "--epoch",
                "1",
                "--broker-id",
                "2",
                "--verify",
            ],
            "--verify is not supported with --protocol autoswitch",
        ),
    ];
    for (args, expected) in cases {
        let out = Command::new(BIN)
            .args(args)
            .args(["--store", dir.path()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn bench_measures_autoswitch_replication_and_sync_puts() {
    let out = Command::new(BIN)
        .args([
            "bench",
            "--protocol",
            "autoswitch",
            "--only",
            "throughput,latency",
        ])
        .args([
            "--bytes",
            "4MiB",
            "--segment-size",
            "1MiB",
            "--batch-size",
            "256KiB",
        ])
        .args([
            "--messages",
            "20",
            "--message-sizes",
            "1KiB",
            "--transport",
            "blocking,smol",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // One replication row and one sync row per transport (the slave's bytes were verified).
    for transport in ["blocking", "smol"] {
        let rows = stdout
            .lines()
            .filter(|l| l.trim_start().starts_with(transport))
            .count();
        assert_eq!(rows, 2, "{transport}:\n{stdout}");
    }
}
