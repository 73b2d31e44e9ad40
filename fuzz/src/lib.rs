//! Fuzz harnesses for `rocketmq-ha`: every byte read from the network, any bytes.
//!
//! Each harness is a plain function from the fuzzer's bytes to `()` that drives the real state
//! machines with no I/O and panics when a property is violated. The cargo-fuzz targets in
//! `fuzz_targets/` call them, and the main workspace's `tests/fuzz_corpus.rs` includes this file
//! with `#[path]` and replays the checked-in corpus through the same functions on stable Rust.
//!
//! | target | machine | input |
//! |---|---|---|
//! | [`autoswitch_client`] | `autoswitch::Client` | an AutoSwitch master's bytes, reads, events, time, local history |
//! | [`autoswitch_master`] | `autoswitch::MasterConnection` over a `MemoryLog` | an AutoSwitch slave's bytes, writes, time, log growth, new epochs, retention |
//! | [`client_stream`] | `HaClient` | a master's bytes, read splits, time, appends, dials |
//! | [`master_stream`] | `MasterConnection` over a `MemoryLog` | a slave's bytes, writes, time, log growth and retention |
//! | [`waiters`] | `MasterService` | connections, acks, waits, time, shutdown |
//! | [`wire_decode`] | the `wire` codecs | headers, reports and streams in any split |
//! | [`record_walk`] | the CommitLog record walker (`record`) | segment bytes, raw or encoder-made with a suffix |
//! | [`sim_schedule`] | the simulator (`tests/sim`) | every decision of a faulty run |

#![forbid(unsafe_code)]
#![allow(clippy::new_without_default)]

pub mod autoswitch_client;
pub mod autoswitch_master;
pub mod client_stream;
pub mod input;
pub mod master_stream;
pub mod record_check;
pub mod record_walk;
pub mod sim_schedule;
pub mod waiters;
pub mod wire_decode;

pub use autoswitch_client::autoswitch_client;
pub use autoswitch_master::autoswitch_master;
pub use client_stream::client_stream;
pub use master_stream::master_stream;
pub use record_check::record_check;
pub use record_walk::record_walk;
pub use sim_schedule::sim_schedule;
pub use waiters::waiters;
pub use wire_decode::wire_decode;

/// A harness: the fuzzer's bytes in, a panic on a violated property.
pub type Harness = fn(&[u8]);

/// Every target by name, for replaying a corpus directory.
pub const TARGETS: &[(&str, Harness)] = &[
    ("autoswitch_client", autoswitch_client),
    ("autoswitch_master", autoswitch_master),
    ("client_stream", client_stream),
    ("master_stream", master_stream),
    ("record_check", record_check),
    ("record_walk", record_walk),
    ("sim_schedule", sim_schedule),
    ("waiters", waiters),
    ("wire_decode", wire_decode),
];
