//! The `sim` test target: runs the deterministic simulator over many seeds, replays the
//! regression seeds, and checks that a seed always produces the same trace.
//!
//! * `HA_SIM_SEED=<seed>` runs that one seed (add `-- --nocapture` to see its trace hash;
//!   `HA_SIM_TRACE=1` also prints every trace line).
//! * `HA_SIM_RUNS=<n>` sets how many seeds the default run covers (from `HA_SIM_FIRST_SEED`,
//!   default 0); the switch runs cover a tenth as many (they are longer).
//! * `HA_SIM_SWITCH_SEED=<seed>` runs that one seed of the switch runs (AutoSwitch replicas
//!   behind a test controller that switches masters, see `switch.rs`).
//!
//! The simulator itself lives in `lib.rs` (shared with the fuzz target `sim_schedule`).

#[path = "lib.rs"]
mod sim;

use std::time::{Duration, Instant};

use sim::{Entropy, Fault, Faults, Options, Outcome, SwitchOutcome, ALL_FAULTS};

/// Seeds the default run covers: sized for about two to four minutes on two cores in the test
/// profile (opt-level 2 with debug assertions).
const DEFAULT_RUNS: u64 = 3_000;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={value}: {e}")))
}

fn options() -> Options {
    Options {
        echo_trace: std::env::var_os("HA_SIM_TRACE").is_some(),
        ..Options::default()
    }
}

/// Switch runs per classic run in the default sweep (`HA_SIM_RUNS` scales both).
const SWITCH_RUNS_PER_RUN: u64 = 20;

/// The checked-in seeds that once failed.
fn regressions() -> Vec<u64> {
    seeds_in(include_str!("regressions.txt"), "regressions.txt")
}

/// The checked-in switch seeds that once failed.
fn switch_regressions() -> Vec<u64> {
    seeds_in(
        include_str!("switch_regressions.txt"),
        "switch_regressions.txt",
    )
}

fn seeds_in(text: &str, file: &str) -> Vec<u64> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or_else(|e| panic!("{file}: {s:?}: {e}")))
        .collect()
}

/// A seed and its outcome with the wall time it took, or its failure report.
type SeedResult = (u64, Result<(Outcome, Duration), String>);

/// Runs `seeds` on a few threads (each run is single-threaded and deterministic) and returns
/// the outcomes in seed order, or the failures.
fn run_all(seeds: &[u64], options: &Options) -> Result<Vec<(u64, Outcome, Duration)>, Vec<String>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let chunks: Vec<Vec<u64>> = (0..workers)
        .map(|w| seeds.iter().copied().skip(w).step_by(workers).collect())
        .collect();
    let results: Vec<Vec<SeedResult>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|&seed| {
                            let started = Instant::now();
                            let result = sim::run_seed(seed, options).map_err(|f| f.to_string());
                            (seed, result.map(|o| (o, started.elapsed())))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker thread"))
            .collect()
    });
    let mut all: Vec<SeedResult> = results.into_iter().flatten().collect();
    all.sort_by_key(|(seed, _)| *seed);
    let failures: Vec<String> = all
        .iter()
        .filter_map(|(_, r)| r.as_ref().err().cloned())
        .collect();
    if failures.is_empty() {
        Ok(all
            .into_iter()
            .map(|(s, r)| {
                let (o, t) = r.expect("no failures");
                (s, o, t)
            })
            .collect())
    } else {
        Err(failures)
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() - 1) * p / 100]
}

fn summarize(outcomes: &[(u64, Outcome, Duration)]) {
    let n = outcomes.len();
    let mut catch_up: Vec<Duration> = outcomes.iter().map(|(_, o, _)| o.catch_up).collect();
    catch_up.sort();
    let mut after_partition: Vec<Duration> = outcomes
        .iter()
        .filter(|(_, o, _)| o.partitioned_at_heal)
        .map(|(_, o, _)| o.catch_up)
        .collect();
    after_partition.sort();
    let slack = outcomes
        .iter()
        .map(|(_, o, _)| o.catch_up.as_secs_f64() / o.catch_up_bound.as_secs_f64())
        .fold(0.0f64, f64::max);
    let steps: u64 = outcomes.iter().map(|(_, o, _)| o.steps).sum();
    let bytes: u64 = outcomes.iter().map(|(_, o, _)| o.bytes_written).sum();
    let (ok, timeout, shutdown) = outcomes.iter().fold((0, 0, 0), |a, (_, o, _)| {
        (a.0 + o.tickets.0, a.1 + o.tickets.1, a.2 + o.tickets.2)
    });
    println!("{n} runs, {steps} steps, {bytes} bytes written, sync waits ok/timeout/shutdown {ok}/{timeout}/{shutdown}");
    println!(
        "catch-up after heal: p50 {:?} p90 {:?} p99 {:?} max {:?} (max fraction of bound {slack:.3})",
        percentile(&catch_up, 50),
        percentile(&catch_up, 90),
        percentile(&catch_up, 99),
        catch_up.last().copied().unwrap_or_default()
    );
    println!(
        "catch-up with a partition in force at heal ({} runs): p50 {:?} p90 {:?} p99 {:?} max {:?}",
        after_partition.len(),
        percentile(&after_partition, 50),
        percentile(&after_partition, 90),
        percentile(&after_partition, 99),
        after_partition.last().copied().unwrap_or_default()
    );
    let divergent: usize = outcomes.iter().map(|(_, o, _)| o.divergent_slaves).sum();
    let wiped: usize = outcomes.iter().map(|(_, o, _)| o.wiped_slaves).sum();
    println!(
        "slaves left divergent by a lost master tail: {divergent}; wiped below retention: {wiped}"
    );
    let coverage: Vec<String> = ALL_FAULTS
        .iter()
        .map(|&f| {
            let on = outcomes.iter().filter(|(_, o, _)| o.faults.has(f)).count();
            format!("{f:?} {on}")
        })
        .collect();
    println!("fault kinds on (runs): {}", coverage.join(", "));
    let mut slowest: Vec<(Duration, u64, u64)> =
        outcomes.iter().map(|(s, o, t)| (*t, *s, o.steps)).collect();
    slowest.sort();
    slowest.reverse();
    let shown: Vec<String> = slowest
        .iter()
        .take(3)
        .map(|(t, s, steps)| format!("seed {s} {t:?} ({steps} steps)"))
        .collect();
    println!("slowest: {}", shown.join(", "));
}

/// The default run: the regression seeds, then `HA_SIM_RUNS` seeds; or just `HA_SIM_SEED`.
#[test]
fn simulated_seeds_keep_every_invariant() {
    let options = options();
    if let Some(seed) = env_u64("HA_SIM_SEED") {
        match sim::run_seed(seed, &options) {
            Ok(o) => {
                println!(
                    "seed {seed}: faults [{}], {} slaves, {} steps, virtual {:?}, catch-up {:?} (bound {:?})",
                    o.faults, o.slaves, o.steps, o.virtual_time, o.catch_up, o.catch_up_bound
                );
                println!("trace hash: {:016x}", o.trace_hash);
            }
            Err(f) => panic!("{f}"),
        }
        return;
    }
    let runs = env_u64("HA_SIM_RUNS").unwrap_or(DEFAULT_RUNS);
    let first = env_u64("HA_SIM_FIRST_SEED").unwrap_or(0);
    let mut seeds = regressions();
    seeds.extend(first..first + runs);
    let started = Instant::now();
    match run_all(&seeds, &options) {
        Ok(outcomes) => {
            summarize(&outcomes);
            println!("{} seeds in {:?}", seeds.len(), started.elapsed());
        }
        Err(failures) => {
            for f in failures.iter().take(3) {
                eprintln!("{f}");
            }
            panic!(
                "{} of {} seeds failed (first shown above)",
                failures.len(),
                seeds.len()
            );
        }
    }
}

/// A seed is a complete description of a run: running it twice gives the same trace.
#[test]
fn same_seed_gives_same_trace_hash() {
    let options = Options::default();
    let mut hashes = Vec::new();
    for seed in [1u64, 7, 12_345, u64::MAX] {
        let a = sim::run_seed(seed, &options).unwrap_or_else(|f| panic!("{f}"));
        let b = sim::run_seed(seed, &options).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(
            a.trace_hash, b.trace_hash,
            "seed {seed} is not deterministic"
        );
        assert_eq!(a.steps, b.steps);
        hashes.push(a.trace_hash);
    }
    hashes.sort();
    hashes.dedup();
    assert_eq!(
        hashes.len(),
        4,
        "different seeds should give different traces"
    );
}

/// An empty (or exhausted) byte input is the calm run: no faults, and it passes.
#[test]
fn exhausted_entropy_runs_calmly() {
    let o = sim::run(Entropy::from_bytes(&[])).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(o.faults, Faults::NONE);
    assert!(o.bytes_written > 0);
    assert_eq!(o.divergent_slaves, 0);
}

/// Catch-up time after a partition heals, over seeds where only partitions (and latency)
/// are injected.
#[test]
fn slaves_catch_up_after_a_partition_heals() {
    let faults = Faults::NONE
        .with(Fault::PartitionOneWay)
        .with(Fault::PartitionTwoWay)
        .with(Fault::Latency);
    let options = Options {
        faults: Some(faults),
        ..options()
    };
    let seeds: Vec<u64> = (1_000_000..1_000_200).collect();
    let outcomes = run_all(&seeds, &options).unwrap_or_else(|f| panic!("{}", f[0]));
    let partitioned = outcomes
        .iter()
        .filter(|(_, o, _)| o.partitioned_at_heal)
        .count();
    assert!(
        partitioned > 0,
        "no run had a partition in force at the heal"
    );
    summarize(&outcomes);
}

/// The stuck-report scenario: the master stops reading a connection (a hung reader) while its
/// writer still sends; the slave's reports fill the window and wait. The slave must go on
/// reading and running its timers, close at the write-stall limit (checked after every step
/// by `stalled_report_closes`), and resume to a byte-identical log once the master reads again.
#[test]
fn a_slave_whose_master_stops_reading_closes_at_the_stall_limit_and_resumes() {
    let faults = Faults::NONE.with(Fault::DeafMaster).with(Fault::Latency);
    let options = Options {
        faults: Some(faults),
        ..options()
    };
    let seeds: Vec<u64> = (2_000_000..2_000_150).collect();
    let outcomes = run_all(&seeds, &options).unwrap_or_else(|f| panic!("{}", f[0]));
    let stalls: u64 = outcomes.iter().map(|(_, o, _)| o.report_stall_closes).sum();
    assert!(stalls > 0, "no run had a report stall to close");
    assert!(outcomes.iter().all(|(_, o, _)| o.divergent_slaves == 0));
    eprintln!(
        "stuck-report scenario: {} runs, {stalls} connections closed at the stall limit",
        outcomes.len()
    );
}

/// A slave's disk fills up for a while: stores fail, the slave backs off on the slow
/// local-failure schedule (checked by `reconnect_is_backed_off`), and once space is back it
/// resumes to a byte-identical log.
#[test]
fn a_slave_on_a_full_disk_backs_off_and_resumes() {
    let faults = Faults::NONE.with(Fault::DiskFull).with(Fault::SlowAppend);
    let options = Options {
        faults: Some(faults),
        ..options()
    };
    let seeds: Vec<u64> = (3_000_000..3_000_100).collect();
    let outcomes = run_all(&seeds, &options).unwrap_or_else(|f| panic!("{}", f[0]));
    let failures: u64 = outcomes.iter().map(|(_, o, _)| o.local_failures).sum();
    assert!(failures > 0, "no run had a failed store");
    assert!(outcomes.iter().all(|(_, o, _)| o.divergent_slaves == 0));
}

/// Runs switch `seeds` on a few threads; the outcomes in seed order, or the failures.
fn run_switch_all(
    seeds: &[u64],
    options: &Options,
) -> Result<Vec<(u64, SwitchOutcome, Duration)>, Vec<String>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    type Run = (u64, Result<(SwitchOutcome, Duration), String>);
    let results: Vec<Run> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let chunk: Vec<u64> = seeds.iter().copied().skip(w).step_by(workers).collect();
                scope.spawn(move || {
                    chunk
                        .into_iter()
                        .map(|seed| {
                            let started = Instant::now();
                            let r = sim::run_switch_seed(seed, options)
                                .map(|o| (o, started.elapsed()))
                                .map_err(|f| f.to_string());
                            (seed, r)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker thread"))
            .collect()
    });
    let mut ok = Vec::new();
    let mut failures = Vec::new();
    for (seed, r) in results {
        match r {
            Ok((o, t)) => ok.push((seed, o, t)),
            Err(f) => failures.push(f),
        }
    }
    ok.sort_by_key(|(s, ..)| *s);
    if failures.is_empty() {
        Ok(ok)
    } else {
        Err(failures)
    }
}

/// The switch runs: AutoSwitch replicas over the faulty network while a test controller
/// switches masters (clean, and in some runs unclean), with the regression seeds first; or
/// just `HA_SIM_SWITCH_SEED`. The sweep must have gone through what it claims to test.
#[test]
fn master_switches_keep_every_invariant() {
    let options = options();
    if let Some(seed) = env_u64("HA_SIM_SWITCH_SEED") {
        match sim::run_switch_seed(seed, &options) {
            Ok(o) => {
                println!("switch seed {seed}: {o}");
                println!("trace hash: {:016x}", o.trace_hash);
            }
            Err(f) => panic!("{f}"),
        }
        return;
    }
    let runs = env_u64("HA_SIM_RUNS").map_or(DEFAULT_RUNS, |n| n) / SWITCH_RUNS_PER_RUN;
    let first = env_u64("HA_SIM_FIRST_SEED").unwrap_or(0);
    let mut seeds = switch_regressions();
    seeds.extend(first..first + runs.max(1));
    let started = Instant::now();
    let outcomes = match run_switch_all(&seeds, &options) {
        Ok(o) => o,
        Err(failures) => {
            for f in failures.iter().take(3) {
                eprintln!("{f}");
            }
            panic!(
                "{} of {} switch seeds failed (first shown above)",
                failures.len(),
                seeds.len()
            );
        }
    };
    let sum = |f: fn(&SwitchOutcome) -> u64| outcomes.iter().map(|(_, o, _)| f(o)).sum::<u64>();
    let (elections, unclean, cuts, crashes, lost, wiped) = (
        sum(|o| o.elections),
        sum(|o| o.unclean_elections),
        sum(|o| o.truncations),
        sum(|o| o.crashes),
        sum(|o| o.lost_tails),
        sum(|o| o.wiped),
    );
    let clean_runs = outcomes
        .iter()
        .filter(|(_, o, _)| o.unclean_events == 0)
        .count();
    let mut slowest: Vec<(Duration, u64, u64)> =
        outcomes.iter().map(|(s, o, t)| (*t, *s, o.steps)).collect();
    slowest.sort();
    slowest.reverse();
    let shown: Vec<String> = slowest
        .iter()
        .take(5)
        .map(|(t, s, steps)| format!("seed {s} {t:?} ({steps} steps)"))
        .collect();
    println!("slowest switch runs: {}", shown.join(", "));
    println!(
        "{} switch runs ({clean_runs} clean throughout) in {:?}: {elections} elections ({unclean} unclean), {cuts} cuts, {crashes} crashes ({lost} lost tails), {wiped} wiped, {} bytes confirmed",
        outcomes.len(),
        started.elapsed(),
        sum(|o| o.confirmed)
    );
    let n = outcomes.len() as u64;
    if n >= 100 {
        assert!(elections >= 2 * n, "too few elections: {elections}");
        assert!(cuts >= n / 10, "too few diverged slaves cut: {cuts}");
        assert!(
            unclean > 0 && lost > 0 && crashes >= n,
            "unclean {unclean}, lost tails {lost}, crashes {crashes}"
        );
        assert!(
            clean_runs as u64 >= n / 2,
            "only {clean_runs} runs stayed clean"
        );
    }
}

/// An empty (or exhausted) byte input is the calm switch run: no faults, one election, and the
/// logs converge.
#[test]
fn exhausted_entropy_gives_a_calm_switch_run() {
    let o = sim::run_switch(Entropy::from_bytes(&[]), &Options::default())
        .unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(o.faults, Faults::NONE);
    assert_eq!((o.elections, o.crashes, o.truncations), (1, 0, 0));
    assert!(o.confirmed > 0 && o.confirmed == o.bytes, "{o}");
}

/// A switch seed is a complete description of its run.
#[test]
fn same_switch_seed_gives_same_trace_hash() {
    let options = Options::default();
    let mut hashes = Vec::new();
    for seed in [3u64, 99, u64::MAX] {
        let a = sim::run_switch_seed(seed, &options).unwrap_or_else(|f| panic!("{f}"));
        let b = sim::run_switch_seed(seed, &options).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(
            a.trace_hash, b.trace_hash,
            "switch seed {seed} is not deterministic"
        );
        hashes.push(a.trace_hash);
    }
    hashes.sort();
    hashes.dedup();
    assert_eq!(hashes.len(), 3);
}
