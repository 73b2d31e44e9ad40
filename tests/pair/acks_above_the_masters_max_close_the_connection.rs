use std::time::Duration;

use rocketmq_ha::wire::encode_report;
use rocketmq_ha::{Config, LogSource, MasterError};

use crate::harness::{pattern, Pair};

#[test]
fn a_bogus_ack_is_refused_and_never_reaches_the_frontier() {
    let mut pair = Pair::caught_up_on(Config::default(), 10_000);
    assert_eq!(pair.service.ack_frontier(), 10_000);

    // #3015: any peer could inject a huge ack and make every later sync write "succeed".
    pair.inject_to_master(&encode_report(1 << 40));
    pair.settle();

    assert!(matches!(
        pair.master_errors.as_slice(),
        [MasterError::AckAboveMax { ack, max: 10_000 }] if *ack == 1 << 40
    ));
    assert_eq!(
        pair.service.ack_frontier(),
        10_000,
        "the bogus ack was never applied"
    );
    assert_eq!(pair.service.connection_count(), 0);
    // The honest slave reconnects and carries on.
    pair.master_log.push(pattern(10_000, 500));
    pair.run_until(Duration::from_secs(10), Pair::caught_up);
    assert_eq!(pair.slave_log.max_offset(), 10_500);
}

#[test]
fn an_ack_that_goes_backwards_is_refused() {
    let mut pair = Pair::caught_up_on(Config::default(), 10_000);
    pair.inject_to_master(&encode_report(5));
    pair.settle();
    assert!(matches!(
        pair.master_errors.as_slice(),
        [MasterError::AckWentBackwards {
            previous: 10_000,
            ack: 5
        }]
    ));
}
