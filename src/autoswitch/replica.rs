//! A broker's replication role and how it changes at run time (§5.6 `changeToMaster`,
//! `changeToSlave`; Java's `AutoSwitchHAService`).
//!
//! The controller that decides roles is not here: RocketMQ's controller, an operator or a
//! simulator calls [`Replica::become_master`] and [`Replica::become_slave`]. The replica keeps
//! the epoch list across roles and refuses orders from an older epoch.

use core::net::SocketAddr;
use std::time::Instant;

use super::client::{Client, SlaveIdentity};
use super::epoch::EpochList;
use super::error::RoleError;
use super::slave_loop::SlaveLoop;
use super::sync_state::{BrokerId, SyncStateSet};
use crate::config::Config;

/// The role a [`Replica`] plays now.
#[derive(Debug)]
#[non_exhaustive] // a fenced or learner-only role may come
pub enum Role {
    /// Neither master nor slave yet (a broker that has not heard from its controller).
    Idle {
        /// The epoch history, from the epoch file.
        epochs: EpochList,
    },
    /// Master of `epoch`; serves [`MasterConnection`](super::MasterConnection)s.
    Master {
        /// The epoch this broker is master of.
        epoch: i32,
        /// The epoch history, ending with `epoch`.
        epochs: EpochList,
        /// The sync-state set and confirm offset.
        sync_state: SyncStateSet,
    },
    /// Slave of `master` in `epoch`.
    Slave {
        /// The master's HA address.
        master: SocketAddr,
        /// The epoch the controller named.
        epoch: i32,
        /// The connection loop around the [`Client`], which owns the epoch history while this
        /// broker is a slave.
        slave: Box<SlaveLoop>,
    },
}

/// One broker's replication state across role changes.
#[derive(Debug)]
pub struct Replica {
    config: Config,
    broker_id: BrokerId,
    role: Role,
}

impl Replica {
    /// Broker `broker_id` with the epoch history from its epoch file, in no role yet.
    pub fn new(config: Config, broker_id: BrokerId, epochs: EpochList) -> Self {
        Replica {
            config,
            broker_id,
            role: Role::Idle { epochs },
        }
    }

    /// The broker id.
    pub fn broker_id(&self) -> BrokerId {
        self.broker_id
    }

    /// The current role.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// The current role, to drive its machines.
    pub fn role_mut(&mut self) -> &mut Role {
        &mut self.role
    }

    /// The role, taken out: for a driver that runs a slave's loop on its own thread or task,
    /// where a lock around the whole replica would be held across socket reads.
    pub fn into_role(self) -> Role {
        self.role
    }

    /// The epoch history, whoever holds it now; persist it when it changes.
    pub fn epochs(&self) -> &EpochList {
        match &self.role {
            Role::Idle { epochs } | Role::Master { epochs, .. } => epochs,
            Role::Slave { slave, .. } => slave.client().epochs(),
        }
    }

    /// The epoch this broker acts in, if it has a role.
    pub fn epoch(&self) -> Option<i32> {
        match &self.role {
            Role::Idle { .. } => None,
            Role::Master { epoch, .. } | Role::Slave { epoch, .. } => Some(*epoch),
        }
    }

    /// Becomes master of `epoch` with the local log ending at `log_max` and the controller's
    /// sync-state set `members` (`changeToMaster`). Returns whether the epoch list changed
    /// (then persist it).
    ///
    /// The driver closes every connection of the previous role first: a slave client stops,
    /// and a master's old connections must not keep serving under the old epoch. An epoch
    /// below the last one in the history is refused and changes nothing.
    pub fn become_master(
        &mut self,
        epoch: i32,
        log_max: u64,
        members: impl IntoIterator<Item = BrokerId>,
        all_ack_in_sync_state_set: bool,
    ) -> Result<bool, RoleError> {
        let mut epochs = self.epochs().clone();
        let changed = epochs.begin(epoch, log_max)?;
        let mut sync_state = SyncStateSet::new(self.broker_id, members, all_ack_in_sync_state_set);
        sync_state.apply(sync_state.members(), log_max);
        self.role = Role::Master {
            epoch,
            epochs,
            sync_state,
        };
        Ok(changed)
    }

    /// Becomes a slave of `master` in `epoch` (`changeToSlave`): a new [`Client`] in a
    /// [`SlaveLoop`] dials at once with this broker's id and the epoch history. An epoch below
    /// the last one in the history is refused and changes nothing.
    pub fn become_slave(
        &mut self,
        master: SocketAddr,
        epoch: i32,
        identity: SlaveIdentity,
        seed: u64,
        now: Instant,
    ) -> Result<(), RoleError> {
        let last = self.epochs().last_epoch();
        if epoch < last {
            return Err(RoleError::StaleEpoch { epoch, last });
        }
        self.broker_id = identity.broker_id;
        let epochs = self.epochs().clone();
        let client = Client::new(self.config, identity, epochs, seed, now);
        self.role = Role::Slave {
            master,
            epoch,
            slave: Box::new(SlaveLoop::new(client, self.config.max_frame_size())),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoswitch::epoch::EpochEntry;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 10912))
    }

    fn me(id: BrokerId) -> SlaveIdentity {
        SlaveIdentity {
            broker_id: id,
            sync_from_last_file: false,
            async_learner: false,
        }
    }

    #[test]
    fn roles_change_at_run_time_and_keep_the_history() {
        let t0 = Instant::now();
        let mut r = Replica::new(Config::default(), 1, EpochList::new());
        assert_eq!(r.epoch(), None);
        assert_eq!(r.become_master(1, 0, [1], true), Ok(true));
        assert_eq!(r.epochs().entries(), &[EpochEntry::new(1, 0)]);
        r.become_slave(addr(), 2, me(1), 0, t0).unwrap();
        let Role::Slave { slave, .. } = r.role_mut() else {
            panic!("not a slave")
        };
        assert!(slave.poll_dial());
        assert_eq!(r.epochs().entries(), &[EpochEntry::new(1, 0)]);
        assert_eq!(r.become_master(3, 500, [1, 2], true), Ok(true));
        assert_eq!(
            r.epochs().entries(),
            &[EpochEntry::new(1, 0), EpochEntry::new(3, 500)]
        );
        let Role::Master { sync_state, .. } = r.role() else {
            panic!("not a master")
        };
        assert_eq!(sync_state.applied().len(), 2);
    }

    #[test]
    fn orders_from_an_older_epoch_change_nothing() {
        let t0 = Instant::now();
        let mut r = Replica::new(Config::default(), 1, EpochList::new());
        r.become_master(5, 100, [1], true).unwrap();
        assert_eq!(
            r.become_slave(addr(), 4, me(1), 0, t0),
            Err(RoleError::StaleEpoch { epoch: 4, last: 5 })
        );
        assert_eq!(
            r.become_master(3, 100, [1], true),
            Err(RoleError::StaleEpoch { epoch: 3, last: 5 })
        );
        assert_eq!(r.epoch(), Some(5));
        assert!(matches!(r.role(), Role::Master { .. }));
    }
}
