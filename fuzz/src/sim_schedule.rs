//! `sim_schedule`: a whole simulated run in which every decision comes from the fuzzer's bytes.
//!
//! The simulator (`tests/sim`, shared with the `sim` test target) takes its workload, topology,
//! configuration, fault schedule and every read and write size from one entropy source; here
//! that source is the input, so the fuzzer searches schedules instead of a PRNG sampling them.
//! The simulator checks all of its invariants after every step (slave logs are byte-exact
//! prefixes of the master's, acks monotonic and stored, frames contiguous and bounded, every
//! sync ticket completes exactly once and on time, liveness once faults heal); a broken one is a
//! `Failure`, which this harness turns into a panic with the simulator's trace tail.
//!
//! One property is this harness's own: the same bytes give the same run (equal trace hash, step
//! count and virtual time), so every failure the fuzzer finds can be replayed. It is checked on
//! the inputs whose length is a multiple of 4, since a run costs tens of milliseconds.

// The simulator is linted where it is owned, as the `sim` test target; here it is only used, and
// it re-exports items that its own target needs and this harness does not.
#[allow(unused_imports, clippy::all)]
#[path = "../../tests/sim/lib.rs"]
mod sim;

/// Runs one `sim_schedule` input; panics on a failed invariant or a non-deterministic run.
pub fn sim_schedule(data: &[u8]) {
    let first = match sim::run(sim::Entropy::from_bytes(data)) {
        Ok(outcome) => outcome,
        Err(failure) => panic!("simulation failed:\n{failure}"),
    };
    if !data.len().is_multiple_of(4) {
        return;
    }
    let second = match sim::run(sim::Entropy::from_bytes(data)) {
        Ok(outcome) => outcome,
        Err(failure) => panic!("the same input failed only on its second run:\n{failure}"),
    };
    assert_eq!(
        (first.trace_hash, first.steps, first.virtual_time),
        (second.trace_hash, second.steps, second.virtual_time),
        "the same input gave two different runs"
    );
}
