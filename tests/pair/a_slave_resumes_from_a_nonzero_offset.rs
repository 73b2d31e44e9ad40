use std::time::Duration;

use bytes::Bytes;
use rocketmq_ha::{Config, LogSink, LogSource, MemoryLog};

use crate::harness::{frames, pattern, reports, Pair};

const F: u64 = 32 * 1024;

#[test]
fn the_slave_resumes_exactly_where_its_log_ends() {
    let total = 5 * F + 123;
    let resume = 2 * F + 4_321; // deliberately not segment-aligned
    let mut master = MemoryLog::new(F);
    master.push(pattern(0, total as usize));
    let mut slave = MemoryLog::new(F);
    slave
        .append(0, Bytes::from(pattern(0, resume as usize)))
        .unwrap();

    let mut pair = Pair::new(Config::default(), master, slave);
    pair.run_until(Duration::from_secs(1), Pair::caught_up);

    assert_eq!(reports(&pair.slave_wire)[0], resume);
    assert_eq!(frames(&pair.master_wire)[0].offset, resume);
    assert_eq!(pair.slave_log.max_offset(), total);
    assert_eq!(
        pair.slave_log.copy_range(0, total).unwrap(),
        pattern(0, total as usize)
    );
}

#[test]
fn a_dropped_connection_resumes_without_gap_or_duplicate() {
    let total = 4 * F + 20_000;
    let mut master = MemoryLog::new(F);
    master.push(pattern(0, total as usize));
    let config = Config::builder().transfer_batch_size(1000).build().unwrap();
    let mut pair = Pair::new(config, master, MemoryLog::new(F));
    // Lose the socket mid-stream: the master has written frames the slave never read.
    pair.read_size = 700;
    pair.drop_to_slave = true;
    pair.settle();
    let sent_before_drop = crate::harness::frames(&pair.master_wire).len();
    assert!(sent_before_drop > 0);
    pair.drop_connection();
    pair.client.handle_disconnected(pair.now);
    pair.drop_to_slave = false;
    pair.run_until(Duration::from_secs(10), Pair::caught_up);

    assert_eq!(pair.connects, 2);
    let start = pair.slave_log.min_offset();
    assert_eq!(start, 4 * F, "the empty slave started at the last segment");
    assert_eq!(
        pair.slave_log.copy_range(start, total).unwrap(),
        pattern(start, (total - start) as usize)
    );
}

#[test]
fn a_master_whose_log_ends_on_a_segment_boundary_starts_at_the_next_segment() {
    // §3.3: `M - M mod F` is the boundary itself, so an empty slave gets only new data.
    let mut master = MemoryLog::new(F);
    master.push(pattern(0, (2 * F) as usize));
    let mut pair = Pair::new(Config::default(), master, MemoryLog::new(F));
    pair.settle();
    assert_eq!(pair.slave_log.max_offset(), 0);
    pair.master_log.push(pattern(2 * F, 10));
    pair.run_until(Duration::from_secs(1), Pair::caught_up);
    assert_eq!(pair.slave_log.min_offset(), 2 * F);
    assert_eq!(
        pair.slave_log.copy_range(2 * F, 2 * F + 10).unwrap(),
        pattern(2 * F, 10)
    );
}
