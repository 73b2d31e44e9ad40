use std::time::Duration;

use rocketmq_ha::{Config, LogSource, SyncError};

use crate::harness::{pattern, Pair};

#[test]
fn a_sync_write_completes_when_the_slave_acks_it() {
    let mut pair = Pair::caught_up_on(Config::default(), 100);

    let put_where = pair.master_log.push(pattern(100, 50));
    let deadline = pair.now + Duration::from_secs(3);
    let ticket = pair.service.wait_for(pair.now, put_where, 1, deadline);
    pair.settle();
    let done: Vec<_> = pair
        .completions
        .iter()
        .filter(|c| c.ticket == ticket)
        .collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].result, Ok(()));
    assert!(pair.now < deadline);

    // Nothing completes it again, however long we wait.
    pair.advance(Duration::from_secs(10));
    assert_eq!(
        pair.completions
            .iter()
            .filter(|c| c.ticket == ticket)
            .count(),
        1
    );
}

#[test]
fn a_sync_write_times_out_when_the_slave_cannot_ack() {
    let mut pair = Pair::caught_up_on(Config::default(), 100);

    pair.drop_to_slave = true;
    let put_where = pair.master_log.push(pattern(100, 50));
    let start = pair.now;
    let ticket = pair
        .service
        .wait_for(pair.now, put_where, 1, start + Duration::from_secs(3));
    pair.run_until(Duration::from_secs(5), |p| !p.completions.is_empty());
    assert_eq!(pair.completions.len(), 1);
    assert_eq!(pair.completions[0].ticket, ticket);
    assert_eq!(pair.completions[0].result, Err(SyncError::Timeout));
    assert_eq!(
        pair.now - start,
        Duration::from_secs(3),
        "exactly at the deadline"
    );

    // The path heals and the slave acks, but the ticket is already done.
    pair.drop_to_slave = false;
    pair.advance(Duration::from_secs(30));
    assert_eq!(pair.slave_log.max_offset(), put_where);
    assert_eq!(pair.completions.len(), 1);
}
