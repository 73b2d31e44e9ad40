//! An AutoSwitch broker whose role changes at run time (RocketMQ 5's `changeToMaster` and
//! `changeToSlave`), over one commit log and one driver.
//!
//! The controller that decides roles is not here: RocketMQ's controller, an operator or a test
//! calls [`AutoSwitchBroker::become_master`] and [`AutoSwitchBroker::become_slave`]. Each
//! change stops the previous role's driver first (its connections close, a slave's last store
//! completes), then starts the new one on the same log: the core's
//! [`Replica`](rocketmq_ha::autoswitch::Replica) decides what a role change does to the epoch
//! history.

use std::net::SocketAddr;
use std::time::Instant;

use rocketmq_ha::autoswitch::{BrokerId, EpochList, Replica, SlaveIdentity};
use rocketmq_ha::{Config, LogTruncate};

use crate::epoch_file::EpochFile;
use crate::{
    AutoSwitchMaster, AutoSwitchSlave, Error, MasterHandle, Running, SharedLog, SlaveHandle,
    Transport,
};

/// The role an [`AutoSwitchBroker`] plays now, with its handle.
#[derive(Debug)]
#[non_exhaustive] // a learner-only role may come
pub enum BrokerRole<L> {
    /// No role yet, or the last change was refused after the previous role stopped.
    Idle,
    /// Master: serves slaves.
    Master(MasterHandle<L>),
    /// Slave: follows a master.
    Slave(SlaveHandle<L>),
}

/// One AutoSwitch broker: a commit log, an epoch history, a broker id, and the role the
/// controller gave it last, served by one [`Transport`].
pub struct AutoSwitchBroker<L> {
    log: SharedLog<L>,
    config: Config,
    broker_id: BrokerId,
    epoch_file: Option<EpochFile>,
    /// The history as the last role left it (the epoch file's, when there is one).
    history: EpochList,
    transport: Transport,
    role: BrokerRole<L>,
    running: Option<Running>,
}

impl<L> std::fmt::Debug for AutoSwitchBroker<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoSwitchBroker")
            .field("broker_id", &self.broker_id)
            .field("history", &self.history)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl<L: LogTruncate + Send + Sync + 'static> AutoSwitchBroker<L> {
    /// Broker `broker_id` over `log`, in no role yet; its history comes from `epoch_file`
    /// (`None`: kept in memory, starting empty).
    pub fn new(
        log: L,
        config: Config,
        broker_id: BrokerId,
        epoch_file: Option<EpochFile>,
        transport: Transport,
    ) -> Result<Self, Error> {
        let history = match &epoch_file {
            Some(file) => file.load()?,
            None => EpochList::new(),
        };
        Ok(AutoSwitchBroker {
            log: SharedLog::new(log),
            config,
            broker_id,
            epoch_file,
            history,
            transport,
            role: BrokerRole::Idle,
            running: None,
        })
    }

    /// The commit log, shared with whichever role runs.
    pub fn log(&self) -> &SharedLog<L> {
        &self.log
    }

    /// The role now.
    pub fn role(&self) -> &BrokerRole<L> {
        &self.role
    }

    /// The epoch history now: the running role's (a slave's grows as it learns its master's
    /// epochs), else as the last role left it.
    pub fn history(&self) -> EpochList {
        let live = match &self.role {
            BrokerRole::Master(master) => master.epochs(),
            BrokerRole::Slave(slave) => slave.epochs(),
            BrokerRole::Idle => None,
        };
        live.unwrap_or_else(|| self.history.clone())
    }

    /// Becomes master of `epoch` listening on `listen`, with the sync-state set `members`
    /// (this broker is always in it). An epoch below the history's last is refused before
    /// anything stops ([`Error::Role`]).
    pub fn become_master(
        &mut self,
        epoch: i32,
        listen: SocketAddr,
        members: impl IntoIterator<Item = BrokerId>,
    ) -> Result<&MasterHandle<L>, Error> {
        self.check_epoch(epoch, true)?;
        self.stop()?;
        let mut options = AutoSwitchMaster::new(self.broker_id, epoch).members(members);
        options.epoch_file = self.epoch_file.clone();
        options.history = Some(self.history.clone());
        let master =
            MasterHandle::autoswitch_with_shared_log(self.log.clone(), self.config, options)?;
        self.running = Some(self.transport.spawn_master(listen, master.clone())?);
        self.history = master.epochs().unwrap_or_default();
        self.role = BrokerRole::Master(master);
        match &self.role {
            BrokerRole::Master(master) => Ok(master),
            _ => unreachable!("just set"),
        }
    }

    /// Becomes a slave of the master at `master` (`HOST:PORT`) in `epoch`. An epoch below the
    /// history's last is refused before anything stops ([`Error::Role`]).
    pub fn become_slave(&mut self, master: &str, epoch: i32) -> Result<&SlaveHandle<L>, Error> {
        self.check_epoch(epoch, false)?;
        self.stop()?;
        let mut options = AutoSwitchSlave::new(self.broker_id, epoch);
        options.epoch_file = self.epoch_file.clone();
        options.history = Some(self.history.clone());
        let slave = SlaveHandle::autoswitch_with_shared_log(
            master,
            self.log.clone(),
            self.config,
            options,
        )?;
        self.running = Some(self.transport.spawn_slave(slave.clone())?);
        self.role = BrokerRole::Slave(slave);
        match &self.role {
            BrokerRole::Slave(slave) => Ok(slave),
            _ => unreachable!("just set"),
        }
    }

    /// The address the master role listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.running.as_ref().and_then(Running::local_addr)
    }

    /// Stops the role's driver and keeps the history it leaves; the broker is idle after.
    pub fn stop(&mut self) -> Result<(), Error> {
        let stopped = self.running.take().map(Running::shutdown);
        match std::mem::replace(&mut self.role, BrokerRole::Idle) {
            BrokerRole::Master(master) => self.history = master.epochs().unwrap_or_default(),
            BrokerRole::Slave(slave) => self.history = slave.epochs().unwrap_or_default(),
            BrokerRole::Idle => {}
        }
        stopped.transpose()?;
        Ok(())
    }

    /// Refuses an order from an epoch older than the history before anything stops (Java's
    /// `changeToMaster` and `changeToSlave` return false then): the replica decides, on a copy
    /// of the history.
    fn check_epoch(&self, epoch: i32, as_master: bool) -> Result<(), Error> {
        let history = self.history();
        let end = history.last().map_or(0, |e| e.start);
        let mut replica = Replica::new(self.config, self.broker_id, history);
        match as_master {
            true => {
                replica.become_master(epoch, end, [self.broker_id], true)?;
            }
            false => {
                let identity = SlaveIdentity {
                    broker_id: self.broker_id,
                    sync_from_last_file: false,
                    async_learner: false,
                };
                let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
                replica.become_slave(nowhere, epoch, identity, 0, Instant::now())?;
            }
        }
        Ok(())
    }
}
