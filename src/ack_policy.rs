//! How many slaves a synchronous (`SYNC_MASTER`) write waits for, named after RocketMQ's
//! settings (§3.5, §3.6).
//!
//! RocketMQ changed the meaning between 4.9 and 5.x, and 5.x's default surprises operators:
//!
//! | RocketMQ | here | a write ending at `put_where`... |
//! |---|---|---|
//! | 4.9 `SYNC_MASTER` | [`AckPolicy::SlaveOk`] | fails at once with `SLAVE_NOT_AVAILABLE` unless a slave is connected and the highest ack is less than `haSlaveFallbehindMax` behind; then waits for one ack |
//! | 5.x `inSyncReplicas = n` (default 1) | [`AckPolicy::InSyncReplicas`] `{ replicas: n, .. }` | waits for `n − 1` slaves (the count includes the master): **with the default 1 it waits for none**, like `ASYNC_MASTER` |
//! | 5.x `minInSyncReplicas = m` | `min: m` | fails at once with `IN_SYNC_REPLICAS_NOT_ENOUGH` when fewer than `m` replicas are in sync |
//! | 5.x `enableAutoInSyncReplicas` | `auto: true` | waits for `min(n, replicas in sync)` but at least `m`: the count adapts to the slaves that are keeping up |
//! | 5.x `allAckInSyncStateSet` | [`AckPolicy::AllInSync`] | waits for every slave in sync at the time of the write |
//! | (ours) | [`AckPolicy::Slaves`]`(k)` | waits for `k` slaves, whatever their lag |
//!
//! "In sync" is 5.x's rule: a live connection whose ack is less than `max_gap_not_in_sync`
//! behind the write (§3.6). Connections are counted, as in Java. The program's `SYNC_MASTER`
//! default is [`AckPolicy::Slaves`]`(1)`, so a synchronous write always waits for a slave unless
//! the operator asks for 5.x's behaviour.

use crate::error::SyncError;
use crate::service::MasterService;

/// How many slave acknowledgements a synchronous write needs; see the module docs for the
/// RocketMQ setting each one stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive] // AutoSwitch adds "the sync-state set" (§5)
pub enum AckPolicy {
    /// Wait for this many slaves (live connections) to acknowledge.
    Slaves(usize),
    /// RocketMQ 4.9's `SYNC_MASTER`: fail at once with [`SyncError::SlaveNotAvailable`] unless
    /// [`MasterService::is_slave_ok`] holds, then wait for one slave.
    SlaveOk,
    /// RocketMQ 5.x's quorum: `inSyncReplicas`, `minInSyncReplicas`, `enableAutoInSyncReplicas`.
    /// Replica counts include the master.
    InSyncReplicas {
        /// `inSyncReplicas` (5.x default 1: no slave is waited for).
        replicas: usize,
        /// `minInSyncReplicas` (default 1): fewer replicas in sync fail at once.
        min: usize,
        /// `enableAutoInSyncReplicas`: wait for `min(replicas, in sync)`, at least `min`.
        auto: bool,
    },
    /// RocketMQ 5.x's `allAckInSyncStateSet`: every slave in sync at the time of the write.
    AllInSync,
}

impl Default for AckPolicy {
    /// One slave: what an operator expects of a `SYNC_MASTER`.
    fn default() -> Self {
        AckPolicy::Slaves(1)
    }
}

impl From<usize> for AckPolicy {
    fn from(slaves: usize) -> Self {
        AckPolicy::Slaves(slaves)
    }
}

impl AckPolicy {
    /// How many slaves must acknowledge a write ending at `put_where`, as the service stands
    /// now, or why the write fails without waiting.
    pub fn slaves_needed(
        &self,
        service: &MasterService,
        put_where: u64,
    ) -> Result<usize, SyncError> {
        match *self {
            AckPolicy::Slaves(k) => Ok(k),
            AckPolicy::SlaveOk => {
                if service.is_slave_ok(put_where) {
                    Ok(1)
                } else {
                    Err(SyncError::SlaveNotAvailable)
                }
            }
            AckPolicy::InSyncReplicas {
                replicas,
                min,
                auto,
            } => {
                let in_sync = 1 + service.in_sync_count(put_where);
                let needed = if auto {
                    replicas.min(in_sync).max(min)
                } else {
                    replicas
                };
                if in_sync < min {
                    return Err(SyncError::NotEnoughInSync { needed, in_sync });
                }
                // The master is one of the replicas: `needed ≤ 1` waits for no slave.
                Ok(needed.saturating_sub(1))
            }
            AckPolicy::AllInSync => Ok(service.in_sync_count(put_where)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::error::SyncError::*;
    use std::time::{Duration, Instant};

    const GAP: u64 = 1000;
    const PUT: u64 = 10_000;

    /// A service with `slaves` connections: the first acks the write, the second lags beyond
    /// `max_gap_not_in_sync` and never catches up.
    fn service(slaves: usize, t0: Instant) -> MasterService {
        let config = Config::builder().max_gap_not_in_sync(GAP).build().unwrap();
        let mut s = MasterService::new(config, t0);
        let ids: Vec<_> = (0..slaves).map(|_| s.register(t0)).collect();
        if let Some(&lagging) = ids.get(1) {
            s.handle_ack(lagging, t0, PUT - 2 * GAP);
        }
        s
    }

    /// The outcome of one write under `policy` with `slaves` slaves.
    fn outcome(policy: AckPolicy, slaves: usize) -> Result<(), SyncError> {
        let t0 = Instant::now();
        let mut s = service(slaves, t0);
        // Before the write is acknowledged, the in-sync slave is close behind.
        if slaves >= 1 {
            let ids: Vec<_> = s.connections().collect();
            s.handle_ack(ids[0], t0, PUT - 10);
        }
        let deadline = t0 + Duration::from_secs(3);
        let ticket = s.wait_with(t0, PUT, &policy, deadline);
        if slaves >= 1 {
            let first = s.connections().next().unwrap();
            s.handle_ack(first, t0 + Duration::from_millis(1), PUT);
        }
        s.handle_timeout(deadline);
        let done = s.poll_completion().expect("completed");
        assert_eq!(done.ticket, ticket);
        assert!(s.poll_completion().is_none(), "exactly once");
        done.result
    }

    #[test]
    fn each_policy_against_zero_one_and_two_slaves() {
        let is = |replicas, min, auto| AckPolicy::InSyncReplicas {
            replicas,
            min,
            auto,
        };
        let n = |needed, in_sync| NotEnoughInSync { needed, in_sync };
        #[rustfmt::skip]
        let table: &[(AckPolicy, [Result<(), SyncError>; 3])] = &[
            // policy                          0 slaves                 1 slave   1 + 1 lagging
            (AckPolicy::Slaves(0),             [Ok(()),                 Ok(()),   Ok(())]),
            (AckPolicy::Slaves(1),             [Err(Timeout),           Ok(()),   Ok(())]),
            (AckPolicy::Slaves(2),             [Err(Timeout),           Err(Timeout), Err(Timeout)]),
            (AckPolicy::SlaveOk,               [Err(SlaveNotAvailable), Ok(()),   Ok(())]),
            // 5.x's default waits for nobody: the write is acknowledged with no slave at all.
            (is(1, 1, false),                  [Ok(()),                 Ok(()),   Ok(())]),
            (is(2, 1, false),                  [Err(Timeout),           Ok(()),   Ok(())]),
            (is(3, 1, false),                  [Err(Timeout),           Err(Timeout), Err(Timeout)]),
            (is(3, 1, true),                   [Ok(()),                 Ok(()),   Ok(())]),
            (is(3, 2, true),                   [Err(n(2, 1)),           Ok(()),   Ok(())]),
            (is(3, 3, true),                   [Err(n(3, 1)),           Err(n(3, 2)), Err(n(3, 2))]),
            (AckPolicy::AllInSync,             [Ok(()),                 Ok(()),   Ok(())]),
        ];
        for (policy, expected) in table {
            for (slaves, want) in expected.iter().enumerate() {
                assert_eq!(
                    &outcome(*policy, slaves),
                    want,
                    "{policy:?} with {slaves} slave(s)"
                );
            }
        }
    }

    #[test]
    fn all_in_sync_waits_for_every_slave_in_sync_at_the_write() {
        let t0 = Instant::now();
        let config = Config::builder().max_gap_not_in_sync(GAP).build().unwrap();
        let mut s = MasterService::new(config, t0);
        let (a, b) = (s.register(t0), s.register(t0));
        s.handle_ack(a, t0, PUT - 1);
        s.handle_ack(b, t0, PUT - 1);
        let deadline = t0 + Duration::from_secs(3);
        s.wait_with(t0, PUT, &AckPolicy::AllInSync, deadline);
        s.handle_ack(a, t0, PUT);
        assert!(
            s.poll_completion().is_none(),
            "one of two in-sync slaves is not enough"
        );
        s.handle_ack(b, t0, PUT);
        assert_eq!(s.poll_completion().map(|c| c.result), Some(Ok(())));
    }

    #[test]
    fn the_default_waits_for_one_slave() {
        assert_eq!(AckPolicy::default(), AckPolicy::Slaves(1));
        assert_eq!(AckPolicy::from(2), AckPolicy::Slaves(2));
    }
}
