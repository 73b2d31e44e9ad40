//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/*`) through the same harness
//! functions the cargo-fuzz targets use, on stable Rust, so CI exercises every seed and every
//! minimised crash without nightly or libFuzzer. A few thousand generated inputs per target
//! follow, as a cheap smoke test of the harnesses themselves.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::Path;

use harness::input::SplitMix64;
use harness::TARGETS;

fn corpus_files(target: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let run = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, run)| *run)
        .expect("a known target");
    let files = corpus_files(target);
    assert!(
        files.len() >= 3,
        "fuzz/corpus/{target} holds {} files; keep a few meaningful seeds",
        files.len()
    );
    for file in files {
        let data = std::fs::read(&file).expect("readable corpus file");
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(
            outcome.is_ok(),
            "{} violates a property; reproduce with: cargo +nightly fuzz run {target} {}",
            file.display(),
            file.display()
        );
    }
}

/// Inputs from a fixed generator: short and long, so both the configuration prefix and long
/// programs are exercised.
fn smoke(target: &str, count: usize) {
    let run = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, run)| *run)
        .expect("a known target");
    let mut rng = SplitMix64(0x5EED ^ target.len() as u64);
    for i in 0..count {
        let len = (rng.next_u64() % if i % 10 == 0 { 4096 } else { 256 }) as usize;
        let data = rng.bytes(len);
        let outcome = std::panic::catch_unwind(|| run(&data));
        if outcome.is_err() {
            let path = std::env::temp_dir().join(format!("fuzz-smoke-{target}-{i}.bin"));
            std::fs::write(&path, &data).expect("write the failing input");
            panic!(
                "generated input #{i} of {target} violates a property; saved to {}; \
                 reproduce with: cargo +nightly fuzz run {target} {}",
                path.display(),
                path.display()
            );
        }
    }
}

#[test]
fn autoswitch_client_corpus() {
    replay("autoswitch_client");
}

#[test]
fn autoswitch_master_corpus() {
    replay("autoswitch_master");
}

#[test]
fn client_stream_corpus() {
    replay("client_stream");
}

#[test]
fn master_stream_corpus() {
    replay("master_stream");
}

#[test]
fn record_check_corpus() {
    replay("record_check");
}

#[test]
fn record_walk_corpus() {
    replay("record_walk");
}

#[test]
fn sim_schedule_corpus() {
    replay("sim_schedule");
}

#[test]
fn waiters_corpus() {
    replay("waiters");
}

#[test]
fn wire_decode_corpus() {
    replay("wire_decode");
}

#[test]
fn generated_inputs_hold_every_property() {
    for (name, _) in TARGETS {
        // A simulated run costs tens of milliseconds; the machine-level harnesses microseconds.
        let count = if *name == "sim_schedule" { 16 } else { 2_000 };
        smoke(name, count);
    }
}
