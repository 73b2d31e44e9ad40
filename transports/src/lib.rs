//! Everything of `rocketmq-ha` that touches the operating system: socket drivers for the sans-IO
//! machines and a file-backed commit log in RocketMQ's on-disk layout.
//!
//! The machines of the core crate decide everything about the protocol; a driver here only moves
//! bytes and time between the OS and them. Every driver runs the core's connection loops,
//! [`SlaveLoop`](rocketmq_ha::SlaveLoop) and [`MasterLoop`](rocketmq_ha::MasterLoop) (the same
//! values the simulator in `tests/sim` runs), following the contract in the core crate's
//! [run loop](rocketmq_ha#the-run-loop): they read, write, store, sleep and dial as the loops
//! ask, and decide nothing about offsets, frames or timeouts.
//!
//! | module | sockets and timers | master | slave |
//! |---|---|---|---|
//! | [`blocking`] | std `TcpStream`, read timeout = next deadline | [`blocking::serve`] | [`blocking::run_slave`] |
//! | [`smol`] | `async-io` `Async<TcpStream>`, `Timer` (no tokio) | [`smol::serve`] | [`smol::run_slave`] |
//! | `tokio` (feature `tokio`) | `tokio::net`, `sleep_until` | `tokio::serve` | `tokio::run_slave` |
//!
//! The `tokio` driver needs the feature `tokio` (off by default, so this crate alone pulls no tokio
//! in). TLS between our own masters and slaves, on the `smol` and `tokio` drivers, is the feature
//! `tls` ([`tls`]: `MasterHandle::set_tls`, `SlaveHandle::set_tls`); RocketMQ's Java brokers
//! speak plain TCP only. The `rocketmq-ha` command-line program built on these drivers is the crate
//! `rocketmq-ha-cli`.
//!
//! All three are generic over the core's [`LogSource`](rocketmq_ha::LogSource) /
//! [`LogSink`](rocketmq_ha::LogSink) and share the same state:
//!
//! * [`SharedLog`]: the commit log behind an `RwLock`, with a growth notification that threads
//!   and async tasks can wait on. A producer appending to a master's log wakes its connections.
//! * [`MasterHandle`]: the log, the [`MasterService`](rocketmq_ha::MasterService) every
//!   connection reports acks to, and synchronous replication
//!   ([`MasterHandle::append_replicated_blocking`], [`smol::wait_replicated`], ...), and who
//!   may connect ([`MasterHandle::set_admission`]: a connection limit and an allow list, decided
//!   by the core's [`Admission`](rocketmq_ha::Admission); refused sockets are closed unread).
//! * [`SlaveHandle`]: the slave's log, status and errors; a master given by host name
//!   ([`SlaveHandle::with_host`]) is resolved again before every dial.
//!
//! Each connection logs through `tracing` (a span per connection; connects, start offsets and
//! closes with their [`CloseReason`] at `info` or `warn`, frames at `trace`) and counts its
//! bytes and frames ([`SlaveInfo::traffic`], [`SlaveStatus::traffic`], [`MasterTotals`]).
//!
//! Shutting a handle down closes its sockets, ends its driver, and completes pending sync waits
//! with [`SyncError::Shutdown`](rocketmq_ha::SyncError::Shutdown). [`Transport`] runs any driver
//! on a background thread, chosen at run time.
//!
//! [`file_log::FileLog`] is a commit log on disk in RocketMQ's layout for either side. It
//! decides itself when its appends are flushed ([`file_log::FlushMode`]: RocketMQ's periodic
//! [`file_log::FlushPolicy`], every append before it returns, or only on request), from the
//! times it is handed; a [`file_log::Flusher`] thread applies that to a log shared as a
//! [`SharedLog`], flushing outside its lock. With [`file_log::FlushMode::EveryAppend`] a
//! slave acks only what is on its disk (see the module docs, "Durability").
//!
//! # Example: replicate on loopback with the blocking driver
//! ```
//! use std::time::{Duration, Instant};
//! use rocketmq_ha::{Config, LogSource, MemoryLog};
//! use rocketmq_ha_transports::{MasterHandle, SlaveHandle, Transport};
//!
//! let config = Config::default();
//! let master = MasterHandle::new(MemoryLog::new(1 << 20), config);
//! let server = Transport::Blocking.spawn_master("127.0.0.1:0".parse()?, master.clone())?;
//! let addr = server.local_addr().expect("a master listens");
//! let slave = SlaveHandle::new(addr, MemoryLog::new(1 << 20), config);
//! let client = Transport::Blocking.spawn_slave(slave.clone())?;
//!
//! // A SYNC_MASTER put: returns once one slave acknowledged it.
//! let end = master.append_replicated_blocking(&b"hello"[..], 1, Duration::from_secs(10))?;
//! assert_eq!(slave.log().max_offset(), end);
//! client.shutdown()?;
//! server.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod blocking;
mod broker;
pub mod epoch_file;
mod error;
pub mod file_log;
mod frame_write;
mod observe;
mod runtime;
mod shared;
pub mod smol;
mod stream;
pub mod tls;
#[cfg(feature = "tokio")]
pub mod tokio;
mod transport;

pub use broker::{AutoSwitchBroker, BrokerRole};
pub use error::Error;
pub use observe::CloseReason;
pub use shared::{
    AutoSwitchMaster, AutoSwitchSlave, ClosedConnection, MasterHandle, MasterTotals,
    RefusedConnection, SharedLog, SlaveHandle, SlaveInfo, SlaveStatus,
};
pub use tls::TlsError;
pub use transport::{Running, Transport, UnknownTransport};
