//! The test-only controller of the switch runs: it names the master of each epoch and owns the
//! sync-state set, as RocketMQ's controller does (§5.7), with none of its Raft.
//!
//! It reaches a node only while the node is up and not cut off from everyone (a node isolated
//! by a partition is one the controller cannot reach either); an order for a node it cannot
//! reach waits, so a master that is cut off keeps acting on its old epoch (a stale master).
//! Proposals are answered after a delay, as over a network, and carry the version of the set
//! they were built from (Java's `syncStateSetEpoch`): one built from an older set is refused
//! and answered with the current set, so two proposals in flight cannot undo each other.

use std::collections::BTreeSet;
use std::time::Duration;

use rocketmq_ha::autoswitch::BrokerId;

/// The broker id of node `index` (ids start at 1, as the controller assigns them).
pub fn id_of(index: usize) -> BrokerId {
    index as BrokerId + 1
}

/// The role the controller wants a node in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Master of `epoch`.
    Master { epoch: i32 },
    /// Slave of node `master` in `epoch`.
    Slave { epoch: i32, master: usize },
}

/// A proposal on its way to the controller, or its answer on the way back.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// When it arrives.
    pub at: Duration,
    /// The proposing master.
    pub node: usize,
    /// The master's epoch.
    pub epoch: i32,
    /// The set version it was built from (or, in an answer, the version of `set`).
    pub version: u64,
    /// The set.
    pub set: BTreeSet<BrokerId>,
}

/// The controller's state.
#[derive(Debug)]
pub struct Controller {
    /// The newest epoch it handed out (0: none yet).
    pub epoch: i32,
    /// The master of `epoch`.
    pub master: Option<usize>,
    /// The sync-state set of `epoch` as the controller applied it.
    pub members: BTreeSet<BrokerId>,
    /// Incremented by every change of `members`.
    pub version: u64,
    /// The role each node should be in.
    pub assigned: Vec<Option<Order>>,
    /// The order each node last received (`None` after it crashed: it starts without a role).
    pub delivered: Vec<Option<Order>>,
    /// Since when the master has been down or out of reach.
    pub master_lost_since: Option<Duration>,
    /// Proposals travelling to the controller.
    pub inbox: Vec<Proposal>,
    /// Answers travelling to masters.
    pub outbox: Vec<Proposal>,
    /// Elections so far.
    pub elections: u64,
    /// Elections outside the sync-state set.
    pub unclean_elections: u64,
}

impl Controller {
    /// A controller for `nodes` nodes, before any election.
    pub fn new(nodes: usize) -> Self {
        Controller {
            epoch: 0,
            master: None,
            members: BTreeSet::new(),
            version: 0,
            assigned: vec![None; nodes],
            delivered: vec![None; nodes],
            master_lost_since: None,
            inbox: Vec::new(),
            outbox: Vec::new(),
            elections: 0,
            unclean_elections: 0,
        }
    }

    /// Makes `new` master of the next epoch with the sync-state set `{new}` (Java's
    /// `electMaster`), and every other node its slave. Answers still in flight belong to the
    /// old epoch and are dropped.
    pub fn elect(&mut self, new: usize, unclean: bool) -> i32 {
        self.epoch += 1;
        self.master = Some(new);
        self.members = [id_of(new)].into();
        self.version += 1;
        self.master_lost_since = None;
        self.elections += 1;
        if unclean {
            self.unclean_elections += 1;
        }
        for (i, order) in self.assigned.iter_mut().enumerate() {
            *order = Some(if i == new {
                Order::Master { epoch: self.epoch }
            } else {
                Order::Slave {
                    epoch: self.epoch,
                    master: new,
                }
            });
        }
        self.inbox.clear();
        self.outbox.clear();
        self.epoch
    }

    /// The proposals due at `now` are decided (`alterSyncStateSet`) and answered after
    /// `latency`: accepted if they come from the current master, in the current epoch, built
    /// from the current set; otherwise the answer is the current set (a refresh). Proposals of
    /// a stale master get no answer.
    pub fn decide(&mut self, now: Duration, latency: Duration) {
        let (due, later): (Vec<Proposal>, Vec<Proposal>) = std::mem::take(&mut self.inbox)
            .into_iter()
            .partition(|p| p.at <= now);
        self.inbox = later;
        for p in due {
            if Some(p.node) != self.master || p.epoch != self.epoch {
                continue;
            }
            if p.version == self.version && p.set.contains(&id_of(p.node)) {
                self.members = p.set;
                self.version += 1;
            }
            self.outbox.push(Proposal {
                at: now + latency,
                node: p.node,
                epoch: self.epoch,
                version: self.version,
                set: self.members.clone(),
            });
        }
    }

    /// The answers due at `now`.
    pub fn answers_due(&mut self, now: Duration) -> Vec<Proposal> {
        let (due, later): (Vec<Proposal>, Vec<Proposal>) = std::mem::take(&mut self.outbox)
            .into_iter()
            .partition(|p| p.at <= now);
        self.outbox = later;
        due
    }

    /// The next time a proposal or answer arrives.
    pub fn next_event(&self) -> Option<Duration> {
        self.inbox.iter().chain(&self.outbox).map(|p| p.at).min()
    }
}
