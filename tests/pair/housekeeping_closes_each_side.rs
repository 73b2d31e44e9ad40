use std::time::Duration;

use rocketmq_ha::{ClientError, Config, MasterError};

use crate::harness::{pattern, Pair};

#[test]
fn the_master_closes_a_slave_it_has_not_heard_for_20s() {
    let mut pair = Pair::caught_up_on(Config::default(), 1000);
    let silent_since = pair.now;
    pair.drop_to_master = true;
    pair.run_until(Duration::from_secs(30), |p| !p.master_errors.is_empty());
    assert!(matches!(
        pair.master_errors[0],
        MasterError::HousekeepingTimeout { idle } if idle == Duration::from_secs(20)
    ));
    assert_eq!(pair.now - silent_since, Duration::from_secs(20));
    assert!(
        pair.client_errors.is_empty(),
        "the slave kept hearing heartbeats"
    );
}

#[test]
fn the_slave_closes_a_master_it_has_not_heard_for_20s() {
    let mut pair = Pair::caught_up_on(Config::default(), 1000);
    let silent_since = pair.now;
    pair.drop_to_slave = true;
    pair.run_until(Duration::from_secs(30), |p| !p.client_errors.is_empty());
    assert!(matches!(
        pair.client_errors[0],
        ClientError::HousekeepingTimeout { idle } if idle == Duration::from_secs(20)
    ));
    assert_eq!(pair.now - silent_since, Duration::from_secs(20));
    // It then dials again by itself, and replication resumes once the path heals.
    pair.drop_to_slave = false;
    pair.master_log.push(pattern(1000, 10));
    pair.run_until(Duration::from_secs(10), Pair::caught_up);
    assert_eq!(pair.connects, 2);
}
