//! RocketMQ 5's AutoSwitch replication (controller mode, §5), as sans-IO machines beside the
//! classic ones.
//!
//! | RocketMQ | here | role |
//! |---|---|---|
//! | frames | [`wire`] | 16-byte handshake, 12-byte reports, 20- and 36-byte master headers (§5.1, §5.2) |
//! | `AutoSwitchHAClient` | [`Client`] | the slave: handshake, truncation, transfer (§5.4) |
//! | `AutoSwitchHAClient`'s socket loop | [`SlaveLoop`] | read buffer, disk operations in order (cut, epoch file, appends), the dial, the frame being written |
//! | `AutoSwitchHAConnection` | [`MasterConnection`] | the master's side of one slave (§5.5) |
//! | `AutoSwitchHAConnection`'s socket threads | [`MasterLoop`] | one connection's loop on the master: the frame being written |
//! | `AutoSwitchHAService`'s role changes | [`Replica`] | become master at epoch E, become slave of an address at epoch E (§5.6) |
//! | `AutoSwitchHAService`'s sets | [`SyncStateSet`] | sync-state set, expand and shrink, confirm offset (§5.7) |
//! | `EpochFileCache` | [`EpochList`], [`consistent_point`] | epoch history and the truncation decision (§5.6) |
//!
//! The wire is RocketMQ 5.1.1's and later's (a 16-byte slave handshake carrying `brokerId`,
//! unchanged through 5.3.3); 5.0.0 and 5.1.0 spoke incompatible variants (§5.9).
//!
//! # How the pieces fit
//! A broker is a [`Replica`]. Whoever decides roles (RocketMQ's controller, an operator, a test)
//! calls [`Replica::become_master`] or [`Replica::become_slave`]; the driver closes the previous
//! role's connections and persists [`Replica::epochs`] (the epoch file) whenever it changes.
//!
//! * **Master:** one [`MasterConnection`] per accepted socket, polled with the master's
//!   [`EpochList`] and the confirm offset from its [`SyncStateSet`]; the connection's
//!   [`MasterEvent`]s go to that set, and its proposals to the controller.
//! * **Slave:** the [`Client`] asks for dials, cuts of the log ([`ClientEvent::Truncate`], see
//!   [`LogTruncate`](crate::LogTruncate)) and appends, and says when the epoch list changed.
//!
//! Both follow the crate's [run loop](crate#the-run-loop). Where these machines deliberately
//! differ from Java, the protocol page says so (§5.10).

mod client;
mod epoch;
mod error;
mod master;
mod master_loop;
mod replica;
mod slave_loop;
mod sync_state;
pub mod wire;

pub use client::{Client, ClientEvent, Outbound, SlaveIdentity};
pub use epoch::{consistent_point, EpochEntry, EpochList};
pub use error::{ClientError, EpochError, MasterError, RoleError, WireError};
pub use master::{MasterConnection, MasterEvent, Transmit, CAUGHT_UP_REFRESH};
pub use master_loop::MasterLoop;
pub use replica::{Replica, Role};
pub use slave_loop::{DiskOp, SlaveLoop};
pub use sync_state::{BrokerId, SyncStateSet, MAX_TIME_NOT_CAUGHT_UP, SHRINK_PERIOD};
