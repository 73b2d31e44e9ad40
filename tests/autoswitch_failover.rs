//! AutoSwitch in memory, scripted: the end-to-end story through the real replicas and
//! connection loops. A is master at epoch 1 and replicates to B; A writes a tail B never gets
//! and dies; B becomes master at epoch 2 and takes writes; A comes back as B's slave, is cut to
//! the common point and ends byte-identical to B, with the same epoch file.

mod autoswitch_harness;

use autoswitch_harness::World;
use rocketmq_ha::autoswitch::{EpochEntry, Role};
use rocketmq_ha::LogSource;

const A: usize = 0;
const B: usize = 1;

#[test]
fn a_master_switch_truncates_the_old_masters_tail_and_logs_converge() {
    let mut w = World::new(7, 2);
    w.elect_node(A);
    w.write(300);
    for _ in 0..100 {
        w.step();
    }
    assert_eq!(w.nodes[B].log.max_offset(), 300);
    assert!(w.members.contains(&2), "B joined the sync-state set");
    let Role::Slave { slave, .. } = w.nodes[B].replica.role() else {
        panic!("B follows A")
    };
    assert_eq!(slave.client().confirm_offset(), Some(300));

    // A writes a tail B never gets, then dies; the controller elects B.
    w.drop_links(None);
    w.write(77);
    w.crash(A);
    w.elect_node(B);
    w.write(150);
    assert_eq!(
        w.nodes[B].epoch_file.entries(),
        &[EpochEntry::new(1, 0), EpochEntry::new(2, 300)]
    );

    // A comes back as B's slave: its tail [300, 377) is cut, then it follows B.
    w.restart(A);
    let before = w.stats.truncations;
    for _ in 0..100 {
        w.step();
    }
    assert_eq!(w.stats.truncations, before + 1, "A was cut once");
    assert_eq!(w.nodes[A].log.max_offset(), 450);
    w.assert_converged("failover");
    let Role::Slave { slave, .. } = w.nodes[A].replica.role() else {
        panic!("A follows B")
    };
    assert_eq!(slave.client().confirm_offset(), Some(450));
}

#[test]
fn two_masters_that_never_replicated_converge_on_the_newer() {
    // Both wrote from offset 0 in epochs of their own: no byte is shared, and the follower is
    // cut to 0 (Java finds no consistent point and retries forever).
    let mut w = World::new(8, 2);
    w.elect_node(A);
    w.drop_links(None);
    w.crash(B);
    w.write(10);
    w.crash(A);
    w.restart(B);
    w.elect_node(B);
    w.write(20);
    w.restart(A);
    for _ in 0..100 {
        w.step();
    }
    assert_eq!(w.stats.truncations, 1);
    w.assert_converged("two masters");
}
