use std::time::Duration;

use rocketmq_ha::{Config, LogSource, MemoryLog, StartPosition};

use crate::harness::{frames, pattern, reports, Pair};

const F: u64 = 64 * 1024;

#[test]
fn an_empty_slave_starts_at_the_masters_last_segment() {
    let mut master = MemoryLog::new(F);
    let len = 3 * F + 5_000;
    master.push(pattern(0, len as usize));
    let mut pair = Pair::new(Config::default(), master, MemoryLog::new(F));
    pair.run_until(Duration::from_secs(1), Pair::caught_up);

    assert_eq!(
        pair.slave_log.min_offset(),
        3 * F,
        "history before the last segment is not sent"
    );
    assert_eq!(pair.slave_log.max_offset(), len);
    assert_eq!(
        pair.slave_log.copy_range(3 * F, len).unwrap(),
        pattern(3 * F, (len - 3 * F) as usize)
    );
    let sent = frames(&pair.master_wire);
    assert_eq!(sent[0].offset, 3 * F);
    assert_eq!(
        reports(&pair.slave_wire)[0],
        0,
        "V1: an empty slave reports 0"
    );
    // It all happened without waiting for a heartbeat interval.
    assert_eq!(pair.elapsed(), Duration::ZERO);
}

#[test]
fn frames_are_contiguous_bounded_and_never_cross_a_segment() {
    let mut master = MemoryLog::new(F);
    master.push(pattern(0, (2 * F + 777) as usize));
    let config = Config::builder()
        .transfer_batch_size(10_000)
        .start_position(StartPosition::OldestRetained)
        .build()
        .unwrap();
    let mut pair = Pair::new(config, master, MemoryLog::new(F));
    pair.run_until(Duration::from_secs(1), Pair::caught_up);

    let sent = frames(&pair.master_wire);
    let mut next = 0;
    for h in &sent {
        assert_eq!(h.offset, next, "frames are contiguous");
        assert!(h.body_len <= 10_000);
        if h.body_len > 0 {
            assert_eq!(
                h.offset / F,
                (h.end_offset() - 1) / F,
                "{h:?} crosses a segment"
            );
        }
        next = h.end_offset();
    }
    assert_eq!(next, 2 * F + 777);
    assert_eq!(
        pair.slave_log.copy_range(0, next).unwrap(),
        pattern(0, next as usize)
    );
}
