use std::time::Duration;

use rocketmq_ha::wire::TransferHeader;
use rocketmq_ha::{ClientError, Config, LogSource};

use crate::harness::{pattern, Pair};

#[test]
fn a_frame_at_the_wrong_offset_closes_and_appends_nothing() {
    let mut pair = Pair::caught_up_on(Config::default(), 0x1000);

    // V6: the slave ends at 0x1000 and a header for 0x2000 arrives (body not even sent).
    let header = TransferHeader::new(0x2000, 0x10);
    pair.inject_to_slave(&header.encode());
    pair.settle();

    assert!(matches!(
        pair.client_errors.as_slice(),
        [ClientError::OffsetMismatch {
            expected: 0x1000,
            received: 0x2000
        }]
    ));
    assert_eq!(pair.slave_log.max_offset(), 0x1000, "nothing appended");
    assert_eq!(pair.service.ack_frontier(), 0x1000, "nothing acknowledged");

    // The slave reconnects and the real master resumes exactly at 0x1000.
    pair.master_log.push(pattern(0x1000, 10));
    pair.run_until(Duration::from_secs(10), Pair::caught_up);
    assert_eq!(
        pair.slave_log.copy_range(0, 0x100a).unwrap(),
        pattern(0, 0x100a)
    );
}
