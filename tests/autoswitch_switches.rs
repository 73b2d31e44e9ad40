//! Seeded runs of three AutoSwitch replicas through master switches: a test-only controller
//! elects masters (from the sync-state set; outside it, flagged unclean, only when no member
//! is alive), and the run crashes and restarts replicas (every third run, crashes may lose the
//! end of the log), cuts connections and keeps writing.
//! The invariants checked after every step are listed in `autoswitch_harness`. After the
//! faults stop and every replica is back, all logs converge to the master's, byte for byte,
//! and every epoch file equals the master's.
//!
//! One `u64` seed drives a run: `HA_AUTOSWITCH_SEED=<seed> cargo test --test autoswitch_switches`
//! reruns one; `HA_AUTOSWITCH_SEEDS=<n>` runs more.

mod autoswitch_harness;

use autoswitch_harness::{Stats, World};
use rocketmq_ha::LogSource;

fn run(seed: u64) -> Stats {
    let mut w = World::new(seed, 3);
    // Every third run, crashes may lose the end of the log (machine crashes).
    w.lost_tails = seed.is_multiple_of(3);
    for _ in 0..1500 {
        w.step(true);
    }
    // Heal: everyone back, no more faults.
    for i in 0..w.nodes.len() {
        if !w.nodes[i].alive {
            w.restart(i);
        }
    }
    if w.master.is_none() {
        w.elect();
    }
    for _ in 0..600 {
        w.step(false);
    }
    w.assert_converged(&format!("seed {seed}"));
    assert!(
        w.unclean || w.nodes.iter().all(|n| !n.no_consistent_point),
        "seed {seed}: a clean history left a replica without a consistent point"
    );
    w.stats.bytes = w.nodes[w.master.unwrap()].log.max_offset();
    w.stats
}

#[test]
fn master_switches_lose_no_confirmed_byte_and_logs_converge() {
    if let Some(seed) = std::env::var("HA_AUTOSWITCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        eprintln!("{:?}", run(seed));
        return;
    }
    let seeds = std::env::var("HA_AUTOSWITCH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40u64);
    let mut total = Stats::default();
    for seed in 0..seeds {
        let Ok(stats) = std::panic::catch_unwind(|| run(seed)) else {
            panic!(
                "reproduce with: HA_AUTOSWITCH_SEED={seed} cargo test --test autoswitch_switches"
            );
        };
        total.elections += stats.elections;
        total.truncations += stats.truncations;
        total.crashes += stats.crashes;
        total.unclean += stats.unclean;
        total.lost_tails += stats.lost_tails;
        total.bytes += stats.bytes;
    }
    eprintln!("{seeds} runs: {total:?}");
    // The runs must have gone through what they claim to test.
    assert!(total.elections >= 2 * seeds, "{total:?}");
    assert!(total.truncations >= seeds / 4, "{total:?}");
    assert!(total.crashes >= seeds, "{total:?}");
    assert!(seeds < 3 || total.lost_tails > 0, "{total:?}");
}
