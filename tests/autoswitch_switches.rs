//! Seeded runs of three AutoSwitch replicas through master switches: a test-only controller
//! elects masters (from the sync-state set; outside it, flagged unclean, only when no member
//! is alive), and the run crashes and restarts replicas, cuts connections and keeps writing.
//! Every machine is the real one; bytes pass through the wire codecs in random read splits.
//!
//! Invariants, checked after every step:
//! * below its confirm offset, every slave's log agrees with the current master's (until an
//!   unclean election);
//! * a confirm offset never goes backwards (per slave connection and per master term);
//! * a diverged slave is cut exactly to the longest prefix its log shares with the master's;
//! * appends always continue the slave's log.
//!
//! After the faults stop and every replica is back, all logs converge to the master's, byte
//! for byte, and every epoch file equals the master's.
//!
//! One `u64` seed drives a run: `HA_AUTOSWITCH_SEED=<seed> cargo test --test autoswitch_switches`
//! reruns one; `HA_AUTOSWITCH_SEEDS=<n>` runs more.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use rocketmq_ha::autoswitch::{
    BrokerId, ClientError, ClientEvent, EpochList, MasterConnection, MasterEvent, Replica, Role,
    SlaveIdentity,
};
use rocketmq_ha::{Config, LogSink, LogSource, LogTruncate, MemoryLog};

const NODES: usize = 3;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `per_mille` / 1000.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

struct Node {
    replica: Replica,
    log: MemoryLog,
    alive: bool,
    /// The epoch file: what the driver persisted on each change.
    epoch_file: EpochList,
    /// The slave client's last confirm offset (reset with each new client).
    last_confirm: Option<u64>,
    /// The client reported that no consistent point exists.
    no_consistent_point: bool,
}

struct Link {
    slave: usize,
    conn: MasterConnection,
    to_slave: BytesMut,
}

struct World {
    rng: Rng,
    now: Instant,
    config: Config,
    nodes: Vec<Node>,
    links: Vec<Link>,
    master: Option<usize>,
    epoch: i32,
    /// The controller's sync-state set for the current epoch.
    members: BTreeSet<BrokerId>,
    unclean: bool,
    master_confirm: Option<u64>,
    next_shrink: Instant,
    stats: Stats,
}

/// What a run went through, so the test can tell it exercised something.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    elections: u64,
    truncations: u64,
    crashes: u64,
    unclean: u64,
    bytes: u64,
}

fn addr() -> core::net::SocketAddr {
    core::net::SocketAddr::from(([127, 0, 0, 1], 10912))
}

fn id_of(i: usize) -> BrokerId {
    i as BrokerId + 1
}

/// The byte an epoch's master writes at an offset: replicas agree on a byte exactly when the
/// same epoch wrote it.
fn byte(epoch: i32, offset: u64) -> u8 {
    (epoch as u8).wrapping_mul(31) ^ (offset as u8)
}

fn shared_prefix(a: &MemoryLog, b: &MemoryLog) -> u64 {
    let n = a.max_offset().min(b.max_offset());
    let (x, y) = (a.copy_range(0, n).unwrap(), b.copy_range(0, n).unwrap());
    x.iter().zip(&y).take_while(|(p, q)| p == q).count() as u64
}

impl World {
    fn new(seed: u64) -> World {
        let config = Config::builder()
            .transfer_batch_size(256)
            .heartbeat_interval(Duration::from_secs(1))
            .housekeeping_interval(Duration::from_secs(4))
            .reconnect_backoff_initial(Duration::from_millis(100))
            .reconnect_backoff_max(Duration::from_millis(800))
            .build()
            .unwrap();
        let now = Instant::now();
        let nodes = (0..NODES)
            .map(|i| Node {
                replica: Replica::new(config, id_of(i), EpochList::new()),
                log: MemoryLog::new(4096),
                alive: true,
                epoch_file: EpochList::new(),
                last_confirm: None,
                no_consistent_point: false,
            })
            .collect();
        World {
            rng: Rng(seed),
            now,
            config,
            nodes,
            links: Vec::new(),
            master: None,
            epoch: 0,
            members: BTreeSet::new(),
            unclean: false,
            master_confirm: None,
            next_shrink: now,
            stats: Stats::default(),
        }
    }

    fn drop_links(&mut self, slave: Option<usize>) {
        let master = self.master;
        let now = self.now;
        let (gone, kept): (Vec<Link>, Vec<Link>) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|l| slave.is_none_or(|s| s == l.slave));
        self.links = kept;
        for link in gone {
            if let Role::Slave { client, .. } = self.nodes[link.slave].replica.role_mut() {
                client.handle_disconnected(now);
            }
            if let Some(m) = master {
                if let Role::Master { sync_state, .. } = self.nodes[m].replica.role_mut() {
                    sync_state.handle_disconnected(id_of(link.slave));
                }
            }
        }
    }

    /// The test controller: the alive member with the highest (last epoch, max offset), as
    /// RocketMQ's default elect policy; outside the set only when no member is alive.
    fn elect(&mut self) {
        let rank = |w: &World, i: usize| {
            (
                w.nodes[i].replica.epochs().last_epoch(),
                w.nodes[i].log.max_offset(),
            )
        };
        let alive: Vec<usize> = (0..NODES).filter(|&i| self.nodes[i].alive).collect();
        let in_set: Vec<usize> = alive
            .iter()
            .copied()
            .filter(|&i| self.members.is_empty() || self.members.contains(&id_of(i)))
            .collect();
        let pool = if in_set.is_empty() {
            if alive.is_empty() {
                return;
            }
            self.unclean = true;
            self.stats.unclean += 1;
            alive
        } else {
            in_set
        };
        let new = pool.into_iter().max_by_key(|&i| rank(self, i)).unwrap();
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
        for i in 0..NODES {
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

    fn faults(&mut self) {
        if let Some(m) = self.master {
            if self.rng.chance(300) {
                let n = 1 + self.rng.below(300);
                let log = &mut self.nodes[m].log;
                let start = log.max_offset();
                let bytes: Vec<u8> = (start..start + n).map(|o| byte(self.epoch, o)).collect();
                log.push(bytes);
            }
        }
        if !self.links.is_empty() && self.rng.chance(15) {
            let victim = self.links[self.rng.below(self.links.len() as u64) as usize].slave;
            self.drop_links(Some(victim));
        }
        if self.rng.chance(8) {
            let i = self.rng.below(NODES as u64) as usize;
            if self.nodes[i].alive {
                self.crash(i);
            }
        }
        if self.rng.chance(30) {
            let i = self.rng.below(NODES as u64) as usize;
            if !self.nodes[i].alive {
                self.restart(i);
            }
        }
        if self.master.is_none() || self.rng.chance(4) {
            self.elect();
        }
    }

    fn crash(&mut self, i: usize) {
        self.drop_links(Some(i));
        if self.master == Some(i) {
            self.drop_links(None);
            self.master = None;
        }
        self.nodes[i].alive = false;
        self.stats.crashes += 1;
    }

    fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.alive = true;
        node.replica = Replica::new(self.config, id_of(i), node.epoch_file.clone());
        if self.master.is_some() {
            self.follow(i);
        }
    }

    /// One slave's driver step: events, timers, reports.
    fn drive_slave(&mut self, i: usize) {
        let now = self.now;
        let Some(m) = self.master else { return };
        loop {
            let node = &mut self.nodes[i];
            let Role::Slave { client, .. } = node.replica.role_mut() else {
                return;
            };
            let Some(event) = client.poll_event() else {
                break;
            };
            match event {
                ClientEvent::Connect => {
                    if !client.is_dialing() {
                        continue;
                    }
                    if self.rng.chance(900) {
                        client.handle_connected(now, node.log.max_offset());
                        self.links.push(Link {
                            slave: i,
                            conn: MasterConnection::new(self.config, now),
                            to_slave: BytesMut::new(),
                        });
                    } else {
                        client.handle_connect_failed(now);
                    }
                }
                ClientEvent::Truncate { offset } => {
                    let shared = shared_prefix(&self.nodes[i].log, &self.nodes[m].log);
                    assert_eq!(
                        offset,
                        shared,
                        "the cut keeps exactly the shared prefix: slave {i} {:?}, master {m} {:?}",
                        self.nodes[i].replica.epochs(),
                        self.nodes[m].replica.epochs()
                    );
                    self.stats.truncations += 1;
                    let node = &mut self.nodes[i];
                    let max = node.log.truncate_to(offset).unwrap();
                    let Role::Slave { client, .. } = node.replica.role_mut() else {
                        unreachable!()
                    };
                    client.handle_truncated(now, max).unwrap();
                }
                ClientEvent::Append { offset, data } => {
                    let node = &mut self.nodes[i];
                    let max = node
                        .log
                        .append(offset, data)
                        .expect("appends continue the log");
                    let Role::Slave { client, .. } = node.replica.role_mut() else {
                        unreachable!()
                    };
                    client.handle_appended(max);
                }
                ClientEvent::EpochsChanged => {
                    self.nodes[i].epoch_file = self.nodes[i].replica.epochs().clone();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let Role::Slave { client, .. } = self.nodes[i].replica.role_mut() else {
            return;
        };
        if client.handle_timeout(now).is_err() {
            self.drop_links(Some(i));
            return;
        }
        let Some(link) = self.links.iter_mut().find(|l| l.slave == i) else {
            return;
        };
        let Role::Slave { client, .. } = self.nodes[i].replica.role_mut() else {
            return;
        };
        while let Some(out) = client.poll_transmit(now) {
            client.handle_written(now, out.as_bytes().len()).unwrap();
            if link.conn.handle_input(now, out.as_bytes()).is_err() {
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
            while let Some(event) = link.conn.poll_event() {
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
            if link.conn.handle_timeout(now).is_err() {
                failed.push(link.slave);
                continue;
            }
            loop {
                match link.conn.poll_transmit(now, log, epochs, confirm) {
                    Ok(Some(mut t)) => {
                        while t.has_remaining() {
                            let n = t.chunk().len();
                            link.to_slave.extend_from_slice(t.chunk());
                            t.advance(n);
                        }
                        link.conn.on_transmitted(now).unwrap();
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
            let take = (self.rng.below(4096) as usize + 1).min(link.to_slave.len());
            if take == 0 {
                continue;
            }
            let mut piece = link.to_slave.split_to(take);
            let Role::Slave { client, .. } = self.nodes[link.slave].replica.role_mut() else {
                continue;
            };
            // The piece joins what the client kept of earlier reads.
            let mut buf = std::mem::take(&mut piece);
            match client.handle_input(now, &mut buf) {
                Ok(()) => {
                    // An incomplete frame waits for more bytes: put it back in front.
                    let rest = std::mem::replace(&mut link.to_slave, buf);
                    link.to_slave.extend_from_slice(&rest);
                }
                Err(ClientError::NoConsistentPoint) => {
                    self.nodes[link.slave].no_consistent_point = true;
                    failed.push(link.slave);
                }
                Err(e) => panic!("seed {}: slave {} failed: {e}", self.rng.0, link.slave),
            }
        }
        for s in failed {
            self.drop_links(Some(s));
        }
    }

    fn check(&mut self) {
        let Some(m) = self.master else { return };
        for i in 0..NODES {
            if i == m || !self.nodes[i].alive {
                continue;
            }
            let Role::Slave { client, .. } = self.nodes[i].replica.role() else {
                continue;
            };
            let Some(c) = client.confirm_offset() else {
                continue;
            };
            if let Some(last) = self.nodes[i].last_confirm {
                assert!(
                    c >= last,
                    "slave {i}'s confirm offset went back: {last} -> {c}"
                );
            }
            self.nodes[i].last_confirm = Some(c);
            if !self.unclean {
                assert!(
                    shared_prefix(&self.nodes[i].log, &self.nodes[m].log) >= c,
                    "slave {i} confirmed {c} bytes the master {m} does not have"
                );
            }
        }
    }

    fn step(&mut self, faults: bool) {
        if faults {
            self.faults();
        }
        for i in 0..NODES {
            if self.nodes[i].alive && Some(i) != self.master {
                self.drive_slave(i);
            }
        }
        self.drive_master();
        self.deliver();
        self.check();
        self.now += Duration::from_millis(10 + self.rng.below(190));
    }
}

fn run(seed: u64) -> Stats {
    let mut w = World::new(seed);
    for _ in 0..1500 {
        w.step(true);
    }
    // Heal: everyone back, no more faults.
    for i in 0..NODES {
        if !w.nodes[i].alive {
            w.restart(i);
        }
    }
    if w.master.is_none() {
        w.elect();
    }
    for _ in 0..600 {
        w.step(false);
    }
    let m = w.master.expect("a master after healing");
    for i in 0..NODES {
        if i == m || w.nodes[i].no_consistent_point {
            continue;
        }
        assert_eq!(
            w.nodes[i].log.max_offset(),
            w.nodes[m].log.max_offset(),
            "seed {seed}: replica {i} did not converge"
        );
        assert_eq!(
            shared_prefix(&w.nodes[i].log, &w.nodes[m].log),
            w.nodes[m].log.max_offset()
        );
        assert_eq!(
            w.nodes[i].epoch_file, w.nodes[m].epoch_file,
            "seed {seed}: replica {i}'s epoch file differs"
        );
    }
    assert!(
        w.unclean || (0..NODES).all(|i| !w.nodes[i].no_consistent_point),
        "seed {seed}: a clean history left a replica without a consistent point"
    );
    w.stats.bytes = w.nodes[m].log.max_offset();
    w.stats
}

#[test]
fn master_switches_lose_no_confirmed_byte_and_logs_converge() {
    if let Some(seed) = std::env::var("HA_AUTOSWITCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        eprintln!("{:?}", run(seed));
        return;
    }
    let seeds = std::env::var("HA_AUTOSWITCH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40u64);
    let mut total = Stats::default();
    for seed in 0..seeds {
        let outcome = std::panic::catch_unwind(|| run(seed));
        let Ok(stats) = outcome else {
            panic!(
                "reproduce with: HA_AUTOSWITCH_SEED={seed} cargo test --test autoswitch_switches"
            );
        };
        total.elections += stats.elections;
        total.truncations += stats.truncations;
        total.crashes += stats.crashes;
        total.unclean += stats.unclean;
        total.bytes += stats.bytes;
    }
    eprintln!("{seeds} runs: {total:?}");
    // The runs must have gone through what they claim to test.
    assert!(total.elections >= 2 * seeds, "{total:?}");
    assert!(total.truncations >= seeds / 4, "{total:?}");
    assert!(total.crashes >= seeds, "{total:?}");
}
