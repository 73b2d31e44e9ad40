//! RocketMQ 5's AutoSwitch replication (controller mode, §5), as sans-IO machines beside the
//! classic ones.
//!
//! | RocketMQ | here | role |
//! |---|---|---|
//! | frames | [`wire`] | 16-byte handshake, 12-byte reports, 20- and 36-byte master headers (§5.1, §5.2) |
//! | `AutoSwitchHAClient` | [`Client`] | the slave: handshake, truncation, transfer (§5.4) |
//! | `AutoSwitchHAConnection` | [`MasterConnection`] | the master's side of one slave (§5.5) |
//! | `AutoSwitchHAService`'s role changes | [`Replica`] | become master at epoch E, become slave of an address at epoch E (§5.6) |
//! | `AutoSwitchHAService`'s sets | [`SyncStateSet`] | sync-state set, expand and shrink, confirm offset (§5.7) |
//! | `EpochFileCache` | [`EpochList`], [`consistent_point`] | epoch history and the truncation decision (§5.6) |
//!
//! The wire is RocketMQ 5.1.1's and later's (a 16-byte slave handshake carrying `brokerId`);
//! 5.0.0 and 5.1.0 spoke incompatible variants (§5.9).

mod client;
mod epoch;
mod error;
mod master;
mod replica;
mod sync_state;
pub mod wire;

pub use client::{Client, ClientEvent, Outbound, SlaveIdentity};
pub use epoch::{consistent_point, EpochEntry, EpochList};
pub use error::{ClientError, EpochError, MasterError, RoleError, WireError};
pub use master::{MasterConnection, MasterEvent, Transmit, CAUGHT_UP_REFRESH};
pub use replica::{Replica, Role};
pub use sync_state::{BrokerId, SyncStateSet};
