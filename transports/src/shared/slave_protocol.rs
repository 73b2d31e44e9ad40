//! Which protocol a slave speaks: the classic one or RocketMQ 5's AutoSwitch. The drivers run
//! one loop shape for both; this is where the slave side picks the core machine and where the
//! AutoSwitch slave's two extra disk operations (cutting the log, saving the epoch file) are
//! carried out.

use std::net::SocketAddr;
use std::time::Instant;

use rocketmq_ha::autoswitch::{self, BrokerId, DiskOp, EpochList, Replica, Role, SlaveIdentity};
use rocketmq_ha::{Config, LogError, LogSink, LogTruncate, SlaveLoop, Traffic};

use super::SharedLog;
use crate::epoch_file::EpochFile;
use crate::Error;

/// How an AutoSwitch slave introduces itself to its master, and where it keeps its epochs
/// (RocketMQ 5's controller mode, §5). Give it to
/// [`SlaveHandle::autoswitch`](super::SlaveHandle::autoswitch).
#[derive(Debug, Clone)]
#[non_exhaustive] // `syncFromLastFile` and other handshake flags may come
pub struct AutoSwitchSlave {
    /// The broker id the controller gave this broker; sent in the handshake, so the master
    /// counts this slave in its sync-state set.
    pub broker_id: BrokerId,
    /// The epoch the controller named for the master this slave follows. An epoch older than
    /// the last one in the slave's history is refused.
    pub epoch: i32,
    /// The epoch file (`epochFileCheckpoint` in the store's root); `None` keeps the history in
    /// memory only (tests, a store that is thrown away).
    pub epoch_file: Option<EpochFile>,
    /// Replicate without ever joining the sync-state set (`asyncLearner`).
    pub async_learner: bool,
    /// The history to start from instead of the epoch file's (a broker changing roles in
    /// memory).
    pub(crate) history: Option<EpochList>,
}

impl AutoSwitchSlave {
    /// Broker `broker_id` following the master of `epoch`, with no epoch file and not a
    /// learner.
    pub fn new(broker_id: BrokerId, epoch: i32) -> Self {
        AutoSwitchSlave {
            broker_id,
            epoch,
            epoch_file: None,
            async_learner: false,
            history: None,
        }
    }

    /// Keeps the history in `file`.
    pub fn epoch_file(mut self, file: EpochFile) -> Self {
        self.epoch_file = Some(file);
        self
    }

    /// Sets `asyncLearner`.
    pub fn async_learner(mut self, learner: bool) -> Self {
        self.async_learner = learner;
        self
    }

    fn identity(&self) -> SlaveIdentity {
        SlaveIdentity {
            broker_id: self.broker_id,
            sync_from_last_file: false,
            async_learner: self.async_learner,
        }
    }
}

/// Cuts a log; a plain function so a handle over any [`LogSink`] can carry it, and only the
/// AutoSwitch constructor (which needs [`LogTruncate`]) fills it in.
pub(crate) type Truncate<L> = fn(&mut L, u64) -> Result<u64, LogError>;

/// What an AutoSwitch slave handle keeps to build its loop: the options, the history loaded
/// from the epoch file, and how to cut the log.
pub(crate) struct AutoSwitchSetup<L> {
    pub(crate) options: AutoSwitchSlave,
    pub(crate) epochs: EpochList,
    pub(crate) truncate: Truncate<L>,
}

impl<L: LogTruncate> AutoSwitchSetup<L> {
    /// Loads the history and checks the epoch against it, so that a refused role fails when
    /// the handle is made, not in the driver.
    pub(crate) fn new(
        options: AutoSwitchSlave,
        config: Config,
        master: SocketAddr,
    ) -> Result<Self, Error> {
        let epochs = match (&options.history, &options.epoch_file) {
            (Some(history), _) => history.clone(),
            (None, Some(file)) => file.load()?,
            (None, None) => EpochList::new(),
        };
        let setup = AutoSwitchSetup {
            options,
            epochs,
            truncate: <L as LogTruncate>::truncate_to,
        };
        setup.slave_loop(config, master, 0, Instant::now())?;
        Ok(setup)
    }
}

impl<L> AutoSwitchSetup<L> {
    /// The core's loop for this slave: the replica's role change decides (the epoch check).
    pub(crate) fn slave_loop(
        &self,
        config: Config,
        master: SocketAddr,
        seed: u64,
        now: Instant,
    ) -> Result<Box<autoswitch::SlaveLoop>, Error> {
        let mut replica = Replica::new(config, self.options.broker_id, self.epochs.clone());
        replica.become_slave(
            master,
            self.options.epoch,
            self.options.identity(),
            seed,
            now,
        )?;
        match replica.into_role() {
            Role::Slave { slave, .. } => Ok(slave),
            _ => unreachable!("become_slave makes a slave"),
        }
    }
}

/// The bytes a slave writes next, copied out of its loop (at most a 16-byte handshake), so
/// that a driver can race the write against a read into the loop's buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing {
    bytes: [u8; 16],
    len: u8,
}

impl Outgoing {
    fn new(bytes: &[u8]) -> Self {
        let mut out = Outgoing {
            bytes: [0; 16],
            len: bytes.len().min(16) as u8,
        };
        out.bytes[..out.len as usize].copy_from_slice(&bytes[..out.len as usize]);
        out
    }

    /// The bytes to write.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// The slave's connection loop, classic or AutoSwitch; each call goes to the core's loop of
/// that protocol.
// One per slave driver, for its whole life; the classic loop stays inline, where the hot
// path reads it.
#[allow(clippy::large_enum_variant)]
pub(crate) enum SlaveProtocol<L> {
    Classic(SlaveLoop),
    AutoSwitch {
        lp: Box<autoswitch::SlaveLoop>,
        truncate: Truncate<L>,
        epoch_file: Option<EpochFile>,
        /// Bytes moved: the AutoSwitch loop does not count them itself.
        traffic: Traffic,
    },
}

/// What a disk step did, for the handle's status.
pub(crate) enum Stored {
    /// Bytes were appended; the log ends at this offset.
    Appended,
    /// The log was cut or the epoch file written: the history may have changed.
    History,
    /// The operation failed.
    Failed(Error),
}

impl<L: LogSink> SlaveProtocol<L> {
    /// Runs the next disk operation the loop has queued (they come in order), and says what
    /// it did; `None` when none is waiting.
    pub(crate) fn store_next(&mut self, log: &SharedLog<L>) -> Option<Stored> {
        match self {
            SlaveProtocol::Classic(lp) => {
                let (from, batch) = lp.poll_store()?;
                Some(match log.update(|log| log.append_all(from, batch)) {
                    Ok(max) => {
                        lp.handle_stored(max);
                        Stored::Appended
                    }
                    Err(e) => {
                        lp.handle_store_failed(Instant::now());
                        Stored::Failed(e.into())
                    }
                })
            }
            SlaveProtocol::AutoSwitch {
                lp,
                truncate,
                epoch_file,
                ..
            } => {
                let now = Instant::now();
                let result: Result<Stored, Error> = match lp.poll_disk()? {
                    DiskOp::Truncate { offset } => match log.update(|log| truncate(log, offset)) {
                        // A protocol error after a good cut is no disk failure.
                        Ok(max) => {
                            return Some(match lp.handle_truncated(now, max) {
                                Ok(()) => Stored::History,
                                Err(e) => Stored::Failed(e.into()),
                            })
                        }
                        Err(e) => Err(e.into()),
                    },
                    DiskOp::SaveEpochs(epochs) => {
                        match epoch_file.as_ref().map(|f| f.store(epochs)) {
                            Some(Err(e)) => Err(e.into()),
                            _ => {
                                lp.handle_epochs_saved();
                                Ok(Stored::History)
                            }
                        }
                    }
                    DiskOp::Store { offset, pieces } => {
                        match log.update(|log| log.append_all(offset, pieces)) {
                            Ok(max) => {
                                lp.handle_stored(max);
                                Ok(Stored::Appended)
                            }
                            Err(e) => Err(e.into()),
                        }
                    }
                };
                Some(result.unwrap_or_else(|e| {
                    lp.handle_disk_failed(now);
                    Stored::Failed(e)
                }))
            }
        }
    }
}

impl<L> SlaveProtocol<L> {
    pub(crate) fn poll_dial(&mut self) -> bool {
        match self {
            SlaveProtocol::Classic(lp) => lp.poll_dial(),
            SlaveProtocol::AutoSwitch { lp, .. } => lp.poll_dial(),
        }
    }

    pub(crate) fn handle_connected(&mut self, now: Instant, max: u64) {
        match self {
            SlaveProtocol::Classic(lp) => lp.handle_connected(now, max),
            SlaveProtocol::AutoSwitch { lp, .. } => lp.handle_connected(now, max),
        }
    }

    pub(crate) fn handle_connect_failed(&mut self, now: Instant) {
        match self {
            SlaveProtocol::Classic(lp) => lp.handle_connect_failed(now),
            SlaveProtocol::AutoSwitch { lp, .. } => lp.handle_connect_failed(now),
        }
    }

    pub(crate) fn handle_closed(&mut self, now: Instant) {
        match self {
            SlaveProtocol::Classic(lp) => lp.handle_closed(now),
            SlaveProtocol::AutoSwitch { lp, .. } => lp.handle_closed(now),
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        match self {
            SlaveProtocol::Classic(lp) => lp.is_connected(),
            SlaveProtocol::AutoSwitch { lp, .. } => lp.is_connected(),
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match self {
            SlaveProtocol::Classic(lp) => lp.poll_timeout(),
            SlaveProtocol::AutoSwitch { lp, .. } => lp.poll_timeout(),
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        match self {
            SlaveProtocol::Classic(lp) => Ok(lp.handle_timeout(now)?),
            SlaveProtocol::AutoSwitch { lp, .. } => Ok(lp.handle_timeout(now)?),
        }
    }

    pub(crate) fn poll_write(&mut self, now: Instant) -> Option<Outgoing> {
        match self {
            SlaveProtocol::Classic(lp) => lp.poll_write(now).map(|r| Outgoing::new(r.as_bytes())),
            SlaveProtocol::AutoSwitch { lp, .. } => lp.poll_write(now).map(Outgoing::new),
        }
    }

    pub(crate) fn handle_written(&mut self, now: Instant, n: usize) -> Result<(), Error> {
        match self {
            SlaveProtocol::Classic(lp) => Ok(lp.handle_written(now, n)?),
            SlaveProtocol::AutoSwitch { lp, traffic, .. } => {
                traffic.bytes_out += n as u64;
                Ok(lp.handle_written(now, n)?)
            }
        }
    }

    pub(crate) fn wants_read(&self) -> bool {
        match self {
            SlaveProtocol::Classic(lp) => lp.wants_read(),
            SlaveProtocol::AutoSwitch { lp, .. } => lp.wants_read(),
        }
    }

    pub(crate) fn read_buf(&mut self) -> &mut [u8] {
        match self {
            SlaveProtocol::Classic(lp) => lp.read_buf(),
            SlaveProtocol::AutoSwitch { lp, .. } => lp.read_buf(),
        }
    }

    pub(crate) fn handle_read(&mut self, now: Instant, n: usize) -> Result<(), Error> {
        match self {
            SlaveProtocol::Classic(lp) => Ok(lp.handle_read(now, n)?),
            SlaveProtocol::AutoSwitch { lp, traffic, .. } => {
                traffic.bytes_in += n as u64;
                Ok(lp.handle_read(now, n)?)
            }
        }
    }

    pub(crate) fn traffic(&self) -> Traffic {
        match self {
            SlaveProtocol::Classic(lp) => lp.traffic(),
            SlaveProtocol::AutoSwitch { traffic, .. } => *traffic,
        }
    }

    /// The classic loop, for what only it reports (rejections, local failures, the start).
    pub(crate) fn classic(&self) -> Option<&SlaveLoop> {
        match self {
            SlaveProtocol::Classic(lp) => Some(lp),
            SlaveProtocol::AutoSwitch { .. } => None,
        }
    }

    pub(crate) fn classic_mut(&mut self) -> Option<&mut SlaveLoop> {
        match self {
            SlaveProtocol::Classic(lp) => Some(lp),
            SlaveProtocol::AutoSwitch { .. } => None,
        }
    }

    /// The AutoSwitch client, for its epochs and confirm offset.
    pub(crate) fn autoswitch(&self) -> Option<&autoswitch::Client> {
        match self {
            SlaveProtocol::Classic(_) => None,
            SlaveProtocol::AutoSwitch { lp, .. } => Some(lp.client()),
        }
    }

    pub(crate) fn connection_state(&self) -> rocketmq_ha::ConnectionState {
        match self {
            SlaveProtocol::Classic(lp) => lp.client().connection_state(),
            SlaveProtocol::AutoSwitch { lp, .. } => lp.client().connection_state(),
        }
    }

    pub(crate) fn stored_offset(&self) -> u64 {
        match self {
            SlaveProtocol::Classic(lp) => lp.client().stored_offset(),
            SlaveProtocol::AutoSwitch { lp, .. } => lp.client().stored_offset(),
        }
    }
}
