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
//! | `HAService`, `GroupTransferService` | [`MasterService`] | acks, in-sync count, sync waiters (§3.5, §3.6) |
//! | frames | [`wire`] | 8-byte reports, 12-byte transfer headers (§2) |
//! | `CommitLog` | [`LogSource`], [`LogSink`], [`MemoryLog`] | what the machines read and append |
//! | `MessageStoreConfig` | [`Config`] | timers and sizes with RocketMQ's defaults (§6) |
//!
//! Section numbers (§) refer to the protocol description `ha-protocol.md`.
//!
//! # The run loop
//! A driver owns the sockets and the clock. After **any** input it drains the machine's output,
//! then sleeps until a socket is ready or the machine's deadline passes:
//!
//! 1. Feed input: `handle_input` with bytes read, `handle_timeout` when the deadline passed.
//! 2. Drain `poll_event` (acks to forward, appends to apply, dials to make).
//! 3. Drain `poll_transmit` and write what it returns.
//! 4. Sleep until readable, writable (if a write is pending) or `poll_timeout`.
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

mod backoff;
mod client;
mod config;
mod error;
mod log;
mod master;
mod master_loop;
mod service;
mod slave_loop;
mod timer;
pub mod wire;

pub use client::{ClientEvent, HaClient, REJECTIONS_TO_REPORT};
pub use config::{Config, ConfigBuilder, StartPosition};
pub use error::{ClientError, ConfigError, LogError, MasterError, SyncError, WireError};
pub use log::{segment_start, LogSink, LogSource, MemoryLog};
pub use master::{MasterConnection, MasterEvent, Transmit};
pub use master_loop::MasterLoop;
pub use service::{ConnectionId, MasterService, SyncCompletion, Ticket};
pub use slave_loop::{PendingReport, SlaveLoop};
