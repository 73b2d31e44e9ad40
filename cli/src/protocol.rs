//! `--protocol`, `--epoch`, `--broker-id`: which replication protocol master and slave speak.
//!
//! The classic protocol is RocketMQ's master/slave HA (4.x, and 5.x without a controller).
//! AutoSwitch is RocketMQ 5's controller mode: a handshake with the slave's broker id, epochs,
//! truncation of a slave whose log diverged, a confirm offset and a sync-state set. There is
//! no controller here: the operator (or a script) gives each process its role and epoch, and a
//! role change is a restart with the new one.

use std::path::Path;

use clap::ValueEnum;
use rocketmq_ha::autoswitch::BrokerId;
use rocketmq_ha_transports::epoch_file::EpochFile;
use rocketmq_ha_transports::{AutoSwitchMaster, AutoSwitchSlave};

use crate::Failure;

/// The replication protocol.
#[derive(Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    /// RocketMQ's master/slave HA (4.x; 5.x without a controller).
    #[default]
    Classic,
    /// RocketMQ 5's controller mode (5.1.1 and later on the wire): epochs, truncation of a
    /// diverged slave, confirm offset; needs --epoch and --broker-id.
    Autoswitch,
}

/// The protocol flags master and slave share.
#[derive(clap::Args)]
pub struct ProtocolArgs {
    /// Replication protocol.
    #[arg(long, value_enum, default_value_t)]
    pub protocol: ProtocolArg,
    /// AutoSwitch: the epoch of the master's term, as the controller would give it (at least
    /// 1). A master starts that epoch at its log's end unless its history has it; a slave
    /// follows the master of that epoch. An epoch older than the store's history is refused.
    #[arg(long, value_name = "N")]
    pub epoch: Option<i32>,
    /// AutoSwitch: this broker's id (at least 1), as the controller would give it; a slave
    /// sends it in its handshake and the master's sync-state set counts it.
    #[arg(long, value_name = "ID")]
    pub broker_id: Option<BrokerId>,
}

/// What an AutoSwitch process was told.
#[derive(Clone, Copy)]
pub struct AutoSwitchRole {
    pub epoch: i32,
    pub broker_id: BrokerId,
}

impl ProtocolArgs {
    /// The AutoSwitch role, `None` for the classic protocol; refuses flags that do not fit
    /// together, naming them.
    pub fn role(&self) -> Result<Option<AutoSwitchRole>, Failure> {
        match (self.protocol, self.epoch, self.broker_id) {
            (ProtocolArg::Classic, None, None) => Ok(None),
            (ProtocolArg::Classic, _, _) => Err(Failure(
                "--epoch and --broker-id need --protocol autoswitch".into(),
            )),
            (ProtocolArg::Autoswitch, Some(epoch), Some(broker_id)) => {
                if epoch < 1 {
                    return Err(Failure(format!("--epoch {epoch}: must be at least 1")));
                }
                if broker_id < 1 {
                    return Err(Failure(format!(
                        "--broker-id {broker_id}: must be at least 1"
                    )));
                }
                Ok(Some(AutoSwitchRole { epoch, broker_id }))
            }
            (ProtocolArg::Autoswitch, _, _) => Err(Failure(
                "--protocol autoswitch needs --epoch and --broker-id".into(),
            )),
        }
    }
}

impl AutoSwitchRole {
    /// The master's options, its history in the store's epoch file.
    pub fn master(self, store: &Path) -> AutoSwitchMaster {
        AutoSwitchMaster::new(self.broker_id, self.epoch).epoch_file(EpochFile::in_store(store))
    }

    /// The slave's options, its history in the store's epoch file.
    pub fn slave(self, store: &Path) -> AutoSwitchSlave {
        AutoSwitchSlave::new(self.broker_id, self.epoch).epoch_file(EpochFile::in_store(store))
    }
}

/// Refuses an option the AutoSwitch side does not have yet.
pub fn unsupported(given: bool, option: &str) -> Result<(), Failure> {
    match given {
        true => Err(Failure(format!(
            "{option} is not supported with --protocol autoswitch"
        ))),
        false => Ok(()),
    }
}
