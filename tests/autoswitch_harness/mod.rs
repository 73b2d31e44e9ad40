//! A small in-memory cluster of AutoSwitch replicas for scripted stories (`autoswitch_failover`):
//! every replica is the real [`Replica`] with its real connection loops ([`SlaveLoop`],
//! [`MasterLoop`]), bytes pass through the wire codecs in seeded random read splits, and the
//! test names the masters. Seeded runs through random switches, crashes, partitions and lost
//! tails live in the simulator (`tests/sim`, its switch runs), over its faulty network.
//!
//! Invariants checked after every step (panics name the replica):
//! * below its confirm offset, every slave's log agrees with the current master's;
//! * a confirm offset never goes backwards (per slave connection and per master term);
//! * a diverged slave is cut exactly to the longest prefix its log shares with the master's;
//! * appends always continue the slave's log.

// Each test binary uses part of this.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use rocketmq_ha::autoswitch::{
    BrokerId, ClientError, DiskOp, EpochList, MasterEvent, MasterLoop, Replica, Role, SlaveIdentity,
};
use rocketmq_ha::{Config, LogSink, LogSource, LogTruncate, MemoryLog};

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

pub struct Node {
    pub replica: Replica,
    pub log: MemoryLog,
    pub alive: bool,
    /// The epoch file: what the driver persisted on each change.
    pub epoch_file: EpochList,
    /// The slave client's last confirm offset (reset with each new client).
    pub last_confirm: Option<u64>,
    /// The client found no consistent point with its master.
    pub no_consistent_point: bool,
}

pub struct Link {
    pub slave: usize,
    pub master: MasterLoop,
    pub to_slave: BytesMut,
}

/// What a run went through, so a test can tell it exercised something.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub elections: u64,
    pub truncations: u64,
    pub crashes: u64,
}

pub struct World {
    pub rng: Rng,
    pub now: Instant,
    pub config: Config,
    pub nodes: Vec<Node>,
    pub links: Vec<Link>,
    pub master: Option<usize>,
    pub epoch: i32,
    /// The controller's sync-state set for the current epoch.
    pub members: BTreeSet<BrokerId>,
    master_confirm: Option<u64>,
    next_shrink: Instant,
    pub stats: Stats,
}

fn addr() -> core::net::SocketAddr {
    core::net::SocketAddr::from(([127, 0, 0, 1], 10912))
}

pub fn id_of(i: usize) -> BrokerId {
    i as BrokerId + 1
}

/// The byte an epoch's master writes at an offset: replicas agree on a byte exactly when the
/// same epoch wrote it.
pub fn byte(epoch: i32, offset: u64) -> u8 {
    (epoch as u8).wrapping_mul(31) ^ (offset as u8)
}

pub fn shared_prefix(a: &MemoryLog, b: &MemoryLog) -> u64 {
    let n = a.max_offset().min(b.max_offset());
    let (x, y) = (a.copy_range(0, n).unwrap(), b.copy_range(0, n).unwrap());
    x.iter().zip(&y).take_while(|(p, q)| p == q).count() as u64
}

/// A disk operation copied out of the loop, so the loop can be answered.
enum Op {
    Truncate(u64),
    Save(EpochList),
    Store(u64, Vec<Bytes>),
}

impl World {
    pub fn new(seed: u64, nodes: usize) -> World {
        let config = Config::builder()
            .transfer_batch_size(256)
            .heartbeat_interval(Duration::from_secs(1))
            .housekeeping_interval(Duration::from_secs(4))
            .reconnect_backoff_initial(Duration::from_millis(100))
            .reconnect_backoff_max(Duration::from_millis(800))
            .build()
            .unwrap();
        let now = Instant::now();
        World {
            rng: Rng(seed),
            now,
            config,
            nodes: (0..nodes)
                .map(|i| Node {
                    replica: Replica::new(config, id_of(i), EpochList::new()),
                    log: MemoryLog::new(4096),
                    alive: true,
                    epoch_file: EpochList::new(),
                    last_confirm: None,
                    no_consistent_point: false,
                })
                .collect(),
            links: Vec::new(),
            master: None,
            epoch: 0,
            members: BTreeSet::new(),
            master_confirm: None,
            next_shrink: now,
            stats: Stats::default(),
        }
    }

    /// Closes the links of `slave` (all links with `None`), on both ends.
    pub fn drop_links(&mut self, slave: Option<usize>) {
        let now = self.now;
        let (gone, kept): (Vec<Link>, Vec<Link>) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|l| slave.is_none_or(|s| s == l.slave));
        self.links = kept;
        for link in gone {
            if let Role::Slave { slave, .. } = self.nodes[link.slave].replica.role_mut() {
                slave.handle_closed(now);
            }
            if let Some(m) = self.master {
                if let Role::Master { sync_state, .. } = self.nodes[m].replica.role_mut() {
                    sync_state.handle_disconnected(id_of(link.slave));
                }
            }
        }
    }

    /// The controller makes `new` master of the next epoch; every other alive replica follows.
    pub fn elect_node(&mut self, new: usize) {
        self.drop_links(None);
        self.epoch += 1;
        self.stats.elections += 1;
        let node = &mut self.nodes[new];
        let max = node.log.max_offset();
        node.replica
            .become_master(self.epoch, max, [id_of(new)], true)
            .expect("the controller's epoch is the newest");
        node.epoch_file = node.replica.epochs().clone();
        self.master = Some(new);
        self.members = [id_of(new)].into();
        self.master_confirm = None;
        for i in 0..self.nodes.len() {
            if i != new && self.nodes[i].alive {
                self.follow(i);
            }
        }
    }

    fn follow(&mut self, i: usize) {
        let seed = self.rng.next();
        let node = &mut self.nodes[i];
        let identity = SlaveIdentity {
            broker_id: id_of(i),
            sync_from_last_file: false,
            async_learner: false,
        };
        node.replica
            .become_slave(addr(), self.epoch, identity, seed, self.now)
            .expect("the controller's epoch is the newest");
        node.last_confirm = None;
        node.no_consistent_point = false;
    }

    /// The master appends `n` bytes of its epoch.
    pub fn write(&mut self, n: u64) {
        if let Some(m) = self.master {
            let log = &mut self.nodes[m].log;
            let start = log.max_offset();
            let bytes: Vec<u8> = (start..start + n).map(|o| byte(self.epoch, o)).collect();
            log.push(bytes);
        }
    }

    /// The replica's process dies; its log survives (a process crash), and so does its epoch
    /// file.
    pub fn crash(&mut self, i: usize) {
        self.drop_links(Some(i));
        if self.master == Some(i) {
            self.drop_links(None);
            self.master = None;
        }
        self.nodes[i].alive = false;
        self.stats.crashes += 1;
    }

    /// The replica starts again from its log and epoch file, following the current master.
    pub fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.alive = true;
        node.replica = Replica::new(self.config, id_of(i), node.epoch_file.clone());
        if self.master.is_some() {
            self.follow(i);
        }
    }

    /// One slave's driver: the disk, the dial, timers and the report being written.
    fn drive_slave(&mut self, i: usize) {
        let now = self.now;
        let Some(m) = self.master else { return };
        loop {
            let node = &mut self.nodes[i];
            let Role::Slave { slave, .. } = node.replica.role_mut() else {
                return;
            };
            let op = match slave.poll_disk() {
                Some(DiskOp::Truncate { offset }) => Op::Truncate(offset),
                Some(DiskOp::SaveEpochs(epochs)) => Op::Save(epochs.clone()),
                Some(DiskOp::Store { offset, pieces }) => Op::Store(offset, pieces.to_vec()),
                None => break,
            };
            match op {
                Op::Truncate(offset) => {
                    let (this, master) = if i < m {
                        let (a, b) = self.nodes.split_at_mut(m);
                        (&mut a[i], &b[0])
                    } else {
                        let (a, b) = self.nodes.split_at_mut(i);
                        (&mut b[0], &a[m])
                    };
                    let shared = shared_prefix(&this.log, &master.log);
                    assert_eq!(
                        offset,
                        shared,
                        "the cut keeps exactly the shared prefix: slave {i} {:?}, master {m} {:?}",
                        this.replica.epochs(),
                        master.replica.epochs()
                    );
                    self.stats.truncations += 1;
                    let max = this.log.truncate_to(offset).unwrap();
                    let Role::Slave { slave, .. } = this.replica.role_mut() else {
                        unreachable!()
                    };
                    slave.handle_truncated(now, max).unwrap();
                }
                Op::Save(epochs) => {
                    node_slave(&mut self.nodes[i]).handle_epochs_saved();
                    self.nodes[i].epoch_file = epochs;
                }
                Op::Store(offset, pieces) => {
                    let node = &mut self.nodes[i];
                    let max = node
                        .log
                        .append_all(offset, &pieces)
                        .expect("appends continue the log");
                    node_slave(node).handle_stored(max);
                }
            }
        }
        let has_link = self.links.iter().any(|l| l.slave == i);
        let node = &mut self.nodes[i];
        let log_max = node.log.max_offset();
        let slave = node_slave(node);
        if !has_link && slave.poll_dial() {
            if self.rng.chance(900) {
                slave.handle_connected(now, log_max);
                self.links.push(Link {
                    slave: i,
                    master: MasterLoop::new(self.config, now),
                    to_slave: BytesMut::new(),
                });
            } else {
                slave.handle_connect_failed(now);
            }
        }
        let slave = node_slave(&mut self.nodes[i]);
        let timed_out = slave.handle_timeout(now).is_err();
        if timed_out || !slave.is_connected() {
            if self.links.iter().any(|l| l.slave == i) {
                self.drop_links(Some(i));
            }
            return;
        }
        let Some(link) = self.links.iter_mut().find(|l| l.slave == i) else {
            return;
        };
        let slave = node_slave(&mut self.nodes[i]);
        while let Some(bytes) = slave.poll_write(now) {
            let bytes = bytes.to_vec();
            slave.handle_written(now, bytes.len()).unwrap();
            if link.master.handle_read(now, &bytes).is_err() {
                self.drop_links(Some(i));
                return;
            }
        }
    }

    /// The master's side of every link: events into the sync-state set, frames out.
    fn drive_master(&mut self) {
        let now = self.now;
        let Some(m) = self.master else { return };
        let mut failed = Vec::new();
        let (master_node, links) = (&mut self.nodes[m], &mut self.links);
        let Role::Master {
            epochs, sync_state, ..
        } = master_node.replica.role_mut()
        else {
            unreachable!()
        };
        let log = &master_node.log;
        for link in links.iter_mut() {
            while let Some(event) = link.master.poll_event() {
                match event {
                    MasterEvent::Handshake(hs) => sync_state.handle_connected(hs.broker_id),
                    MasterEvent::Acked {
                        broker_id,
                        offset,
                        learner,
                        last_transfer,
                    } => sync_state.handle_ack(
                        now,
                        broker_id,
                        offset,
                        learner,
                        last_transfer,
                        log.max_offset(),
                        epochs.last().unwrap().start,
                    ),
                    MasterEvent::CaughtUp { broker_id } => {
                        sync_state.handle_caught_up(broker_id, now)
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            if let Some(proposal) = sync_state.poll_proposal() {
                // The controller accepts every proposal of the current master.
                self.members = proposal.clone();
                sync_state.apply(proposal, log.max_offset());
            }
            let confirm = sync_state.confirm_offset(log.max_offset());
            if let (Some(c), Some(last)) = (confirm, self.master_confirm) {
                assert!(
                    c >= last,
                    "the master's confirm offset went back: {last} -> {c}"
                );
            }
            self.master_confirm = confirm.or(self.master_confirm);
            if link.master.handle_timeout(now).is_err() {
                failed.push(link.slave);
                continue;
            }
            loop {
                match link.master.poll_write(now, log, epochs, confirm) {
                    Ok(Some(t)) => {
                        let mut t = t.clone();
                        let len = t.remaining();
                        while t.has_remaining() {
                            let n = t.chunk().len();
                            link.to_slave.extend_from_slice(t.chunk());
                            t.advance(n);
                        }
                        link.master.handle_written(now, len).unwrap();
                    }
                    Ok(None) => break,
                    Err(_) => {
                        failed.push(link.slave);
                        break;
                    }
                }
            }
        }
        if now >= self.next_shrink {
            sync_state.shrink(now, Duration::from_secs(15));
            self.next_shrink = now + Duration::from_secs(5);
        }
        for s in failed {
            self.drop_links(Some(s));
        }
    }

    /// Bytes in flight reach the slaves in random pieces.
    fn deliver(&mut self) {
        let now = self.now;
        let mut failed = Vec::new();
        for link in self.links.iter_mut() {
            let Role::Slave { slave, .. } = self.nodes[link.slave].replica.role_mut() else {
                continue;
            };
            if link.to_slave.is_empty() || !slave.wants_read() {
                continue;
            }
            let want = self.rng.below(4096) as usize + 1;
            let buf = slave.read_buf();
            let n = want.min(buf.len()).min(link.to_slave.len());
            buf[..n].copy_from_slice(&link.to_slave[..n]);
            link.to_slave.advance(n);
            match slave.handle_read(now, n) {
                Ok(()) => {}
                Err(ClientError::NoConsistentPoint) => {
                    self.nodes[link.slave].no_consistent_point = true;
                    failed.push(link.slave);
                }
                Err(e) => panic!("slave {} failed: {e}", link.slave),
            }
        }
        for s in failed {
            self.drop_links(Some(s));
        }
    }

    fn check(&mut self) {
        let Some(m) = self.master else { return };
        for i in 0..self.nodes.len() {
            if i == m || !self.nodes[i].alive {
                continue;
            }
            let Role::Slave { slave, .. } = self.nodes[i].replica.role() else {
                continue;
            };
            let Some(c) = slave.client().confirm_offset() else {
                continue;
            };
            if let Some(last) = self.nodes[i].last_confirm {
                assert!(
                    c >= last,
                    "slave {i}'s confirm offset went back: {last} -> {c}"
                );
            }
            self.nodes[i].last_confirm = Some(c);
            assert!(
                shared_prefix(&self.nodes[i].log, &self.nodes[m].log) >= c,
                "slave {i} confirmed {c} bytes the master {m} does not have"
            );
        }
    }

    /// One step of every replica.
    pub fn step(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].alive && Some(i) != self.master {
                self.drive_slave(i);
            }
        }
        self.drive_master();
        self.deliver();
        self.check();
        self.now += Duration::from_millis(10 + self.rng.below(190));
    }

    /// Asserts that every replica but those without a consistent point holds the master's log
    /// and epoch file.
    pub fn assert_converged(&self, context: &str) {
        let m = self.master.expect("a master");
        for (i, node) in self.nodes.iter().enumerate() {
            if i == m || node.no_consistent_point {
                continue;
            }
            let master = &self.nodes[m];
            assert_eq!(
                node.log.max_offset(),
                master.log.max_offset(),
                "{context}: replica {i} did not converge"
            );
            assert_eq!(
                shared_prefix(&node.log, &master.log),
                master.log.max_offset(),
                "{context}: replica {i} differs from the master"
            );
            assert_eq!(
                node.epoch_file, master.epoch_file,
                "{context}: replica {i}'s epoch file differs"
            );
        }
    }
}

fn node_slave(node: &mut Node) -> &mut rocketmq_ha::autoswitch::SlaveLoop {
    match node.replica.role_mut() {
        Role::Slave { slave, .. } => slave,
        _ => panic!("not a slave"),
    }
}
