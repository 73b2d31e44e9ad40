use rocketmq_ha::{ClientError, Config, LogSource, WireError};

use crate::harness::Pair;

fn header(offset: i64, size: i32) -> Vec<u8> {
    let mut v = offset.to_be_bytes().to_vec();
    v.extend_from_slice(&size.to_be_bytes());
    v
}

#[test]
fn a_2gib_size_field_is_refused_before_any_body_is_buffered() {
    let mut pair = Pair::caught_up_on(Config::default(), 100);
    pair.inject_to_slave(&header(100, i32::MAX));
    pair.settle();
    assert!(matches!(
        pair.client_errors.as_slice(),
        [ClientError::Wire(WireError::FrameTooLarge {
            max: 4_194_304,
            ..
        })]
    ));
    assert!(
        pair.slave_buf.capacity() < 1 << 20,
        "no allocation on the size field's say-so"
    );
    assert_eq!(pair.slave_log.max_offset(), 100);
}

#[test]
fn a_frame_one_byte_over_the_limit_is_refused_and_at_the_limit_is_not() {
    let config = Config::builder()
        .max_frame_size(1000)
        .transfer_batch_size(988)
        .build()
        .unwrap();
    let mut pair = Pair::caught_up_on(config, 5000);
    assert!(
        pair.client_errors.is_empty(),
        "988-byte bodies fit a 1000-byte frame"
    );
    pair.inject_to_slave(&header(5000, 989));
    pair.settle();
    assert!(matches!(
        pair.client_errors.as_slice(),
        [ClientError::Wire(WireError::FrameTooLarge {
            size: 1001,
            max: 1000
        })]
    ));
}

#[test]
fn a_negative_size_is_refused() {
    let mut pair = Pair::caught_up_on(Config::default(), 100);
    pair.inject_to_slave(&header(100, -12));
    pair.settle();
    assert!(matches!(
        pair.client_errors.as_slice(),
        [ClientError::Wire(WireError::NegativeBodySize(-12))]
    ));
    assert_eq!(pair.slave_log.max_offset(), 100);
}

#[test]
fn a_negative_offset_is_refused() {
    let mut pair = Pair::caught_up_on(Config::default(), 100);
    pair.inject_to_slave(&header(-1, 0));
    pair.settle();
    assert!(matches!(
        pair.client_errors.as_slice(),
        [ClientError::Wire(WireError::NegativeOffset(-1))]
    ));
}
