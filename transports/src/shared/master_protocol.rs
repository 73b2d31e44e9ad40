//! Which protocol a master speaks: the classic one or RocketMQ 5's AutoSwitch. Every driver
//! runs one connection loop shape for both; this is where a connection picks the core machine,
//! and where an AutoSwitch master keeps what its connections share: the epoch history it
//! serves and the sync-state set their acks move.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Buf;
use rocketmq_ha::autoswitch::{
    self, BrokerId, EpochList, MasterEvent, Replica, Role, SyncStateSet, MAX_TIME_NOT_CAUGHT_UP,
    SHRINK_PERIOD,
};
use rocketmq_ha::{Config, LogSource, MasterLoop, Traffic, Transmit};

use super::lock;
use crate::epoch_file::EpochFile;
use crate::Error;

/// An AutoSwitch master's role as the controller gave it (RocketMQ 5's controller mode, §5).
/// Give it to [`MasterHandle::autoswitch`](super::MasterHandle::autoswitch).
#[derive(Debug, Clone)]
#[non_exhaustive] // `allAckInSyncStateSet` and the like may come
pub struct AutoSwitchMaster {
    /// This broker's id.
    pub broker_id: BrokerId,
    /// The epoch this broker is master of; it starts at the log's end unless the history
    /// already has it. An epoch older than the history's last is refused.
    pub epoch: i32,
    /// The sync-state set the controller gave with the role (this broker is always in it).
    pub members: BTreeSet<BrokerId>,
    /// The epoch file (`epochFileCheckpoint`); `None` keeps the history in memory only.
    pub epoch_file: Option<EpochFile>,
    /// The history to start from instead of the epoch file's (a broker changing roles in
    /// memory).
    pub(crate) history: Option<EpochList>,
}

impl AutoSwitchMaster {
    /// Broker `broker_id` as master of `epoch`, alone in its sync-state set, with no epoch
    /// file.
    pub fn new(broker_id: BrokerId, epoch: i32) -> Self {
        AutoSwitchMaster {
            broker_id,
            epoch,
            members: BTreeSet::from([broker_id]),
            epoch_file: None,
            history: None,
        }
    }

    /// Keeps the history in `file`.
    pub fn epoch_file(mut self, file: EpochFile) -> Self {
        self.epoch_file = Some(file);
        self
    }

    /// Starts from `history` instead of the epoch file's: for a log whose bytes already belong
    /// to known epochs (a store copied with its history, a benchmark's generated log). The
    /// epoch file, if any, is written when the new epoch changes that history.
    pub fn history(mut self, history: EpochList) -> Self {
        self.history = Some(history);
        self
    }

    /// Starts with `members` in the sync-state set (besides this broker).
    pub fn members(mut self, members: impl IntoIterator<Item = BrokerId>) -> Self {
        self.members.extend(members);
        self
    }
}

/// What an AutoSwitch master's connections share.
#[derive(Debug)]
pub(crate) struct AutoSwitchState {
    pub(crate) epoch: i32,
    pub(crate) epochs: EpochList,
    pub(crate) sync_state: SyncStateSet,
    /// The log's end as last seen, for changes that come without one (a disconnect).
    pub(crate) last_max: u64,
    /// When the shrink check runs next (every [`SHRINK_PERIOD`], at the next event after).
    next_shrink: Option<Instant>,
}

/// The shared state behind a lock, as connections hold it.
pub(crate) type SharedAutoSwitch = Arc<Mutex<AutoSwitchState>>;

impl AutoSwitchState {
    /// Takes the master role at the log's end `log_max`: the replica decides (the epoch
    /// check, the new epoch's entry), and a changed history is saved before anything is
    /// served under it.
    pub(crate) fn become_master(
        config: Config,
        options: &AutoSwitchMaster,
        log_max: u64,
    ) -> Result<AutoSwitchState, Error> {
        let epochs = match (&options.history, &options.epoch_file) {
            (Some(history), _) => history.clone(),
            (None, Some(file)) => file.load()?,
            (None, None) => EpochList::new(),
        };
        let mut replica = Replica::new(config, options.broker_id, epochs);
        let changed = replica.become_master(
            options.epoch,
            log_max,
            options.members.iter().copied(),
            true,
        )?;
        if changed {
            if let Some(file) = &options.epoch_file {
                file.store(replica.epochs())?;
            }
        }
        match replica.into_role() {
            Role::Master {
                epoch,
                epochs,
                sync_state,
            } => Ok(AutoSwitchState {
                epoch,
                epochs,
                sync_state,
                last_max: log_max,
                next_shrink: None,
            }),
            _ => unreachable!("become_master makes a master"),
        }
    }

    /// Hands one connection's events to the sync-state set; applies what it proposes (no
    /// controller stands between: the master applies its own proposals, as a controller
    /// that always agrees would). Returns the slave's broker id when it introduced itself.
    pub(crate) fn handle_event(
        &mut self,
        now: Instant,
        event: &MasterEvent,
        master_max: u64,
    ) -> Option<BrokerId> {
        self.last_max = self.last_max.max(master_max);
        let epoch_start = self.epochs.last().map_or(0, |e| e.start);
        self.sync_state
            .handle_event(now, event, master_max, epoch_start);
        let introduced = match *event {
            MasterEvent::Handshake(hs) => Some(hs.broker_id),
            _ => None,
        };
        self.settle(now, master_max);
        introduced
    }

    /// Slave `id` disconnected.
    pub(crate) fn handle_disconnected(&mut self, now: Instant, id: BrokerId) {
        self.sync_state.handle_disconnected(id);
        self.settle(now, self.last_max);
    }

    fn settle(&mut self, now: Instant, master_max: u64) {
        if self.next_shrink.is_none_or(|at| now >= at) {
            self.sync_state.shrink(now, MAX_TIME_NOT_CAUGHT_UP);
            self.next_shrink = Some(now + SHRINK_PERIOD);
        }
        if let Some(proposal) = self.sync_state.poll_proposal() {
            tracing::info!(members = ?proposal, "sync-state set changes");
            self.sync_state.apply(proposal, master_max);
        }
    }
}

/// One frame to write, of either protocol; both are a header and a zero-copy body.
#[derive(Debug, Clone)]
pub(crate) enum Frame {
    Classic(Transmit),
    AutoSwitch(autoswitch::Transmit),
}

impl Buf for Frame {
    fn remaining(&self) -> usize {
        match self {
            Frame::Classic(t) => t.remaining(),
            Frame::AutoSwitch(t) => t.remaining(),
        }
    }

    fn chunk(&self) -> &[u8] {
        match self {
            Frame::Classic(t) => t.chunk(),
            Frame::AutoSwitch(t) => t.chunk(),
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        match self {
            Frame::Classic(t) => t.chunks_vectored(dst),
            Frame::AutoSwitch(t) => t.chunks_vectored(dst),
        }
    }

    fn advance(&mut self, n: usize) {
        match self {
            Frame::Classic(t) => t.advance(n),
            Frame::AutoSwitch(t) => t.advance(n),
        }
    }
}

/// One connection's loop on the master, classic or AutoSwitch; each call goes to the core's
/// loop of that protocol.
pub(crate) enum MasterProtocol {
    Classic(MasterLoop),
    AutoSwitch {
        lp: autoswitch::MasterLoop,
        shared: SharedAutoSwitch,
        /// Bytes and frames moved: the AutoSwitch loop does not count them itself.
        traffic: Traffic,
        /// What is left to write of the frame being written.
        unsent: usize,
    },
}

impl MasterProtocol {
    /// The frame to write now (the one being written, else the machine's next), cloned out
    /// (a reference count, not the bytes) so no lock is held while the socket blocks.
    pub(crate) fn poll_write<L: LogSource + ?Sized>(
        &mut self,
        now: Instant,
        log: &L,
    ) -> Result<Option<Frame>, Error> {
        match self {
            MasterProtocol::Classic(lp) => {
                Ok(lp.poll_write(now, log)?.cloned().map(Frame::Classic))
            }
            MasterProtocol::AutoSwitch {
                lp, shared, unsent, ..
            } => {
                let mut state = lock(shared);
                let confirm = state.sync_state.confirm_offset(log.max_offset());
                let frame = lp.poll_write(now, log, &state.epochs, confirm)?;
                if *unsent == 0 {
                    *unsent = frame.map_or(0, Buf::remaining);
                }
                Ok(frame.cloned().map(Frame::AutoSwitch))
            }
        }
    }

    /// Bytes read from the slave.
    pub(crate) fn handle_read<L: LogSource + ?Sized>(
        &mut self,
        now: Instant,
        data: &[u8],
        log: &L,
    ) -> Result<(), Error> {
        match self {
            MasterProtocol::Classic(lp) => Ok(lp.handle_read(now, data, log)?),
            MasterProtocol::AutoSwitch { lp, traffic, .. } => {
                traffic.bytes_in += data.len() as u64;
                Ok(lp.handle_read(now, data)?)
            }
        }
    }

    /// `n` bytes of the frame were written.
    pub(crate) fn handle_written(&mut self, now: Instant, n: usize) -> Result<(), Error> {
        match self {
            MasterProtocol::Classic(lp) => Ok(lp.handle_written(now, n)?),
            MasterProtocol::AutoSwitch {
                lp,
                traffic,
                unsent,
                ..
            } => {
                traffic.bytes_out += n as u64;
                *unsent = unsent.saturating_sub(n);
                if *unsent == 0 {
                    traffic.frames_out += 1;
                }
                Ok(lp.handle_written(now, n)?)
            }
        }
    }

    /// Whether a frame is out and not yet all written.
    #[cfg(test)]
    pub(crate) fn is_transmitting(&self) -> bool {
        match self {
            MasterProtocol::Classic(lp) => lp.connection().is_transmitting(),
            MasterProtocol::AutoSwitch { lp, .. } => lp.connection().is_transmitting(),
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match self {
            MasterProtocol::Classic(lp) => lp.poll_timeout(),
            MasterProtocol::AutoSwitch { lp, .. } => lp.poll_timeout(),
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        match self {
            MasterProtocol::Classic(lp) => Ok(lp.handle_timeout(now)?),
            MasterProtocol::AutoSwitch { lp, .. } => Ok(lp.handle_timeout(now)?),
        }
    }

    /// How far the slave's input has taken the connection: 0 before any, then 1 once an
    /// AutoSwitch slave introduced itself (the master owes it an answer), 2 once the slave
    /// said where to start. A reader that sees this grow wakes the writer, which otherwise
    /// sleeps until the log grows.
    pub(crate) fn stage(&self) -> u8 {
        match self {
            MasterProtocol::Classic(lp) => 2 * u8::from(lp.connection().next_offset().is_some()),
            MasterProtocol::AutoSwitch { lp, .. } => {
                let conn = lp.connection();
                if conn.connection_state() == rocketmq_ha::ConnectionState::Transfer {
                    2
                } else {
                    u8::from(conn.slave().is_some())
                }
            }
        }
    }

    pub(crate) fn traffic(&self) -> Traffic {
        match self {
            MasterProtocol::Classic(lp) => lp.traffic(),
            MasterProtocol::AutoSwitch { traffic, .. } => *traffic,
        }
    }

    /// Sets or lifts the rate limit (§3.9), the same for both protocols.
    pub(crate) fn set_rate_limit(&mut self, now: Instant, rate: Option<std::num::NonZeroU64>) {
        match self {
            MasterProtocol::Classic(lp) => lp.set_rate_limit(now, rate),
            MasterProtocol::AutoSwitch { lp, .. } => lp.set_rate_limit(now, rate),
        }
    }
}
