//! Apache RocketMQ master/slave CommitLog replication ("HA") as deterministic state machines
//! that do no I/O: no sockets, no threads, no files, and no clock reads.
//!
//! Every input is passed in — bytes read from a peer, the current [`Instant`](std::time::Instant),
//! the commit log — and every output is pulled out: frames to write, events, and the next
//! deadline. The same machines therefore run under blocking sockets, any async runtime, a fuzzer
//! or a seeded network simulator, and given the same inputs they always produce the same
//! outputs. The wire format is byte-for-byte RocketMQ's classic HA protocol (4.x, and 5.x
//! outside controller mode), so a Java slave can replicate from a master driven by this crate and
//! the other way round.
//!
//! # The pieces
//! | RocketMQ | here | role |
//! |---|---|---|
//! | `HAConnection` | [`MasterConnection`] | master side of one slave connection (§3) |
//! | `HAClient` | [`HaClient`] | the slave (§4) |
//! | `HAConnection`'s two socket threads | [`MasterLoop`] | one connection's loop on the master: the frame being written, write progress |
//! | `HAClient`'s socket loop | [`SlaveLoop`] | the slave's loop: read buffer, batches for the disk, the report being written, the dial |
//! | `HAService`, `GroupTransferService` | [`MasterService`] | acks, in-sync count, sync waiters (§3.5, §3.6) |
//! | frames | [`wire`] | 8-byte reports, 12-byte transfer headers (§2) |
//! | `CommitLog` | [`LogSource`], [`LogSink`], [`MemoryLog`] | what the machines read and append |
//! | `MessageStoreConfig` | [`Config`] | timers and sizes with RocketMQ's defaults (§6) |
//! | (none: Java admits anyone) | [`Admission`] | who may connect to a master, and how many at once |
//! | controller mode (`AutoSwitchHA*`, `EpochFileCache`) | [`autoswitch`] | RocketMQ 5's AutoSwitch replication: epochs, truncation, sync-state set (§5) |
//!
//! Section numbers (§) refer to the protocol as this crate implements it: the [`protocol`]
//! page (`docs/protocol.md` in the repository).
//!
//! # The run loop
//! This is the one contract every type's docs point to. A driver owns the sockets, the disk
//! and the clock; the machines own every decision. The connection loops [`SlaveLoop`] and
//! [`MasterLoop`] already follow it: a driver that uses them (as every driver in
//! `rocketmq-ha-transports` and the simulator in `tests/sim` do) only performs the I/O they ask
//! for. Used directly, the machines need the same steps:
//!
//! 1. **Input.** Hand every read to `handle_input` / `handle_read` as soon as it arrives; a
//!    write that made progress to `handle_written` (and, on the master, a completed frame to
//!    `on_transmitted`); EOF or an I/O error to `handle_disconnected` / `handle_closed`.
//! 2. **Time.** When the deadline from `poll_timeout` passes, call `handle_timeout`. Calling it
//!    early is harmless; never calling it breaks heartbeats, housekeeping, the write-stall limit
//!    and the dial deadline.
//! 3. **Events.** Drain `poll_event`: acks go to the [`MasterService`], appends to the disk
//!    (then `handle_appended` / `handle_stored`, or the failure), a dial request to the dialer.
//! 4. **Output.** Take `poll_transmit` / `poll_write` and write it. At most one report or frame
//!    is in flight; a write that cannot proceed must never stop reads or timers, so wait for
//!    writability *together with* readability and the deadline.
//! 5. **Sleep** until a socket is readable, the pending write can proceed, the log grows (master)
//!    or `poll_timeout` passes; then go to 1.
//! 6. **Errors.** Any `Err` from a machine means: close that connection now. The machine has
//!    already decided what comes next (a reconnect after a back-off, a removal from the
//!    service).
//!
//! Time is always passed in and may go backwards: machines clamp it.
//!
//! # Example: one frame from master to slave, in memory
//! ```
//! use std::time::Instant;
//! use bytes::{Buf, BytesMut};
//! use rocketmq_ha::{ClientEvent, Config, HaClient, LogSink, LogSource, MasterConnection, MemoryLog};
//!
//! let now = Instant::now();
//! let config = Config::default();
//! let mut master_log = MemoryLog::new(1 << 30);
//! master_log.push(&b"hello, slave"[..]);
//! let mut slave_log = MemoryLog::new(1 << 30);
//!
//! let mut master = MasterConnection::new(config, now);
//! let mut client = HaClient::new(config, 7, now);
//! assert_eq!(client.poll_event(), Some(ClientEvent::Connect));
//! client.handle_connected(now, slave_log.max_offset());
//!
//! // The slave reports its offset (0: empty) at once ...
//! let report = client.poll_transmit(now).expect("first report");
//! client.handle_written(now, report.len())?; // the socket took all 8 bytes
//! master.handle_input(now, &report, &master_log)?;
//!
//! // ... and the master answers with a frame, written header and body together.
//! let mut frame = master.poll_transmit(now, &master_log)?.expect("data");
//! let mut wire = BytesMut::new();
//! while frame.has_remaining() {
//!     let chunk = frame.chunk().len();
//!     wire.extend_from_slice(frame.chunk());
//!     frame.advance(chunk);
//! }
//! master.on_transmitted(now)?;
//!
//! client.handle_input(now, &mut wire)?;
//! while let Some(event) = client.poll_event() {
//!     if let ClientEvent::Append { offset, data } = event {
//!         let max = slave_log.append(offset, data)?;
//!         client.handle_appended(max);
//!     }
//! }
//! assert_eq!(slave_log.copy_range(0, 12)?, b"hello, slave");
//! // The ack reports exactly what is stored.
//! assert_eq!(client.poll_transmit(now), Some(12u64.to_be_bytes()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod ack_policy;
pub mod admission;
pub mod autoswitch;
mod backoff;
mod client;
mod config;
mod connection_state;
mod error;
pub mod flow;
mod log;
mod master;
mod master_loop;
mod read_buffer;
pub mod record;
pub mod record_check;
mod service;
mod slave_loop;
mod timer;
mod traffic;
pub mod wire;

#[doc = include_str!("../docs/protocol.md")]
pub mod protocol {}

pub use ack_policy::AckPolicy;
pub use admission::{Admission, Decision, IpNet, Refusal};
pub use client::{ClientEvent, HaClient, REJECTIONS_TO_REPORT};
pub use config::{Config, ConfigBuilder, StartPosition};
pub use connection_state::ConnectionState;
pub use error::{ClientError, ConfigError, LogError, MasterError, SyncError, WireError};
pub use log::{segment_start, FileRegion, LogSink, LogSource, LogTruncate, MemoryLog};
pub use master::{MasterConnection, MasterEvent, Transmit};
pub use master_loop::MasterLoop;
pub use service::{ConnectionId, MasterService, SyncCompletion, Ticket};
pub use slave_loop::{PendingReport, SlaveLoop};
pub use traffic::Traffic;
