use std::time::Duration;

use bytes::Bytes;
use rocketmq_ha::{Config, LogSink, LogSource, MemoryLog};

use crate::harness::{pattern, Pair};

const F: u64 = 4096;

/// Runs a whole replication with reads of at most `read_size` bytes and returns everything
/// observable: the slave's log, the master's wire bytes, and the final ack.
fn replicate(read_size: usize) -> (Vec<u8>, Vec<u8>, Option<u64>, u64) {
    let mut master = MemoryLog::new(F);
    master.push(pattern(0, (2 * F + 300) as usize));
    let mut slave = MemoryLog::new(F);
    slave.append(0, Bytes::from(pattern(0, 1000))).unwrap();
    let config = Config::builder().transfer_batch_size(700).build().unwrap();
    let mut pair = Pair::new(config, master, slave);
    pair.read_size = read_size;
    pair.run_until(Duration::from_secs(5), Pair::caught_up);
    // Grow the log while connected, so frames also arrive after the first batch.
    pair.master_log.push(pattern(2 * F + 300, 1234));
    pair.run_until(Duration::from_secs(5), Pair::caught_up);
    let max = pair.slave_log.max_offset();
    let id = pair.service.connections().next().unwrap();
    (
        pair.slave_log.copy_range(0, max).unwrap(),
        pair.master_wire.clone(),
        pair.service.ack_of(id),
        pair.service.ack_frontier(),
    )
}

#[test]
fn byte_by_byte_delivery_matches_whole_delivery() {
    let whole = replicate(usize::MAX);
    assert_eq!(whole.0, pattern(0, (2 * F + 300 + 1234) as usize));
    for read_size in [1, 2, 3, 7, 8, 11, 12, 13, 700, 711, 712, 713] {
        let split = replicate(read_size);
        assert_eq!(
            split.0, whole.0,
            "slave log differs with reads of {read_size}"
        );
        assert_eq!(
            split.1, whole.1,
            "master wire differs with reads of {read_size}"
        );
        assert_eq!(
            split.2, whole.2,
            "final ack differs with reads of {read_size}"
        );
        assert_eq!(
            split.3, whole.3,
            "frontier differs with reads of {read_size}"
        );
    }
}

#[test]
fn every_split_of_one_frame_gives_the_same_append() {
    use bytes::BytesMut;
    use rocketmq_ha::wire::TransferHeader;
    use rocketmq_ha::{ClientEvent, HaClient};
    use std::time::Instant;

    let body = pattern(500, 40);
    let mut frame = TransferHeader::new(500, 40).encode().to_vec();
    frame.extend_from_slice(&body);
    for split in 0..=frame.len() {
        let now = Instant::now();
        let mut c = HaClient::new(Config::default(), 1, now);
        c.poll_event();
        c.handle_connected(now, 500);
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for part in [&frame[..split], &frame[split..]] {
            buf.extend_from_slice(part);
            c.handle_input(now, &mut buf).unwrap();
            events.extend(std::iter::from_fn(|| c.poll_event()));
        }
        assert_eq!(
            events,
            vec![ClientEvent::Append {
                offset: 500,
                data: Bytes::from(body.clone())
            }],
            "split at {split}"
        );
        assert!(buf.is_empty());
    }
}
