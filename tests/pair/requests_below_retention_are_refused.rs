use std::time::Duration;

use bytes::Bytes;
use rocketmq_ha::{Config, LogSink, LogSource, MasterError, MemoryLog};

use crate::harness::{pattern, Pair};

const F: u64 = 8192;

#[test]
fn a_slave_behind_the_retained_range_gets_a_typed_error_not_heartbeats() {
    let mut master = MemoryLog::new(F);
    master.push(pattern(0, (4 * F) as usize));
    master.delete_segments_before(2 * F);
    let mut slave = MemoryLog::new(F);
    slave.append(0, Bytes::from(pattern(0, 100))).unwrap();
    let mut pair = Pair::new(Config::default(), master, slave);
    pair.settle();
    // Issue #3388: Java sends heartbeats forever; we close and say why.
    assert!(matches!(
        pair.master_errors.first(),
        Some(MasterError::RequestBelowRetained { requested: 100, min }) if *min == 2 * F
    ));
    assert_eq!(pair.slave_log.max_offset(), 100);
    // It keeps failing on every reconnect, with growing back-off: never a silent stall.
    pair.advance(Duration::from_secs(30));
    assert!(pair.master_errors.len() >= 5);
    assert!(
        pair.master_errors.len() < 40,
        "back-off limits the reconnect rate"
    );
    assert_eq!(pair.slave_log.max_offset(), 100);
    // The slave says so itself, once, with the offset it keeps reporting.
    assert_eq!(
        pair.rejections,
        vec![(100, rocketmq_ha::REJECTIONS_TO_REPORT)]
    );
}

#[test]
fn a_slave_ahead_of_the_master_is_refused() {
    let mut master = MemoryLog::new(F);
    master.push(pattern(0, 500));
    let mut slave = MemoryLog::new(F);
    slave.append(0, Bytes::from(pattern(0, 600))).unwrap();
    let mut pair = Pair::new(Config::default(), master, slave);
    pair.settle();
    assert!(matches!(
        pair.master_errors.first(),
        Some(MasterError::RequestAboveMax {
            requested: 600,
            max: 500
        })
    ));
    pair.advance(Duration::from_secs(10));
    assert_eq!(
        pair.rejections.first(),
        Some(&(600, rocketmq_ha::REJECTIONS_TO_REPORT))
    );
}
