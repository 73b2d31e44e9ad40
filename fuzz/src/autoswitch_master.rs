//! `autoswitch_master`: a hostile or broken AutoSwitch slave's bytes into a real
//! [`autoswitch::MasterConnection`](rocketmq_ha::autoswitch::MasterConnection) over a
//! [`MemoryLog`] whose epochs change while it serves.
//!
//! The input chooses the configuration and segment size, then a program: raw bytes,
//! well-formed handshakes and reports, log growth, new epochs, retention, time steps, and
//! writes of what the connection hands out (whole or in pieces).
//!
//! Properties checked on every frame handed out:
//! * it decodes, through the slave's own decoder, to what [`Transmit::header`] says;
//! * the handshake answer carries the epoch list and max offset of that moment, and goes out
//!   only after a handshake;
//! * no transfer frame goes out between a handshake and the first report after it;
//! * a data frame holds exactly the log's bytes at its offset, at most `transfer_batch_size`
//!   of them, within one segment and **within one epoch**, labelled with that epoch; data
//!   frames of one exchange are contiguous;
//! * a heartbeat is labelled with the epoch holding its offset.
//!
//! After an `Err` the connection stays closed: no deadline, no frame, input refused.

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use rocketmq_ha::autoswitch::wire::{
    decode_master_frame, encode_report, MasterFrame, MasterHandshake, SlaveHandshake,
};
use rocketmq_ha::autoswitch::{EpochList, MasterConnection, Transmit};
use rocketmq_ha::{segment_start, Config, LogSource, MemoryLog};

use super::input::Input;

/// Runs one `autoswitch_master` program; panics on a violated property.
pub fn autoswitch_master(data: &[u8]) {
    let mut input = Input::new(data);
    let t0 = Instant::now();
    let mut now = t0;
    let batch = input.small(1, 255) as u32 * input.small(1, 16) as u32;
    let config = Config::builder()
        .transfer_batch_size(batch)
        .build()
        .expect("valid configuration");
    let segment = 1 << input.small(6, 12);
    let mut log = MemoryLog::new(segment);
    let mut epochs = EpochList::new();
    let mut epoch = 1;
    epochs.begin(epoch, 0).expect("first epoch");
    log.push(vec![0x11; input.medium(0, 3000) as usize]);
    let mut conn = MasterConnection::new(config, now);
    // Whether a handshake arrived and whether a report followed it.
    let (mut handshaken, mut reported) = (false, false);
    let mut next_data: Option<u64> = None;
    let mut in_flight: Option<Transmit> = None;
    let mut steps = 0;
    while !input.is_empty() && steps < 2_000 {
        steps += 1;
        let mut bytes_in: Vec<u8> = Vec::new();
        match input.u8() % 9 {
            0 => bytes_in.extend_from_slice(input.bytes(40)),
            1 => bytes_in.extend_from_slice(
                &SlaveHandshake {
                    sync_from_last_file: input.bool(),
                    async_learner: input.bool(),
                    broker_id: i64::from(input.u8()),
                }
                .encode(),
            ),
            2 => {
                let offset = match input.u8() % 3 {
                    0 => 0,
                    1 => input.medium(0, 4000).min(log.max_offset()),
                    _ => input.medium(0, 8000),
                };
                bytes_in.extend_from_slice(&encode_report(offset));
            }
            3 => {
                let n = input.medium(0, 2000) as usize;
                log.push(vec![input.u8(); n]);
            }
            4 => {
                epoch += input.small(1, 3) as i32;
                epochs.begin(epoch, log.max_offset()).expect("newer epoch");
            }
            5 => {
                let upto = input.medium(0, 8000);
                log.delete_segments_before(upto);
            }
            6 => {
                now += Duration::from_millis(input.medium(0, 30_000));
                if conn.handle_timeout(now).is_err() {
                    break;
                }
            }
            7 => {
                // Choices are read whatever the state, so a program's bytes keep their meaning.
                let confirm = input.bool().then(|| input.medium(0, 8000));
                if in_flight.is_none() {
                    match conn.poll_transmit(now, &log, &epochs, confirm) {
                        Ok(Some(t)) => {
                            check_frame(
                                &t,
                                &log,
                                &epochs,
                                batch,
                                handshaken,
                                reported,
                                &mut next_data,
                            );
                            in_flight = Some(t);
                        }
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
            }
            _ => {
                let n = input.medium(1, 4000) as usize;
                if let Some(mut t) = in_flight.take() {
                    let n = n.min(t.remaining());
                    t.advance(n);
                    if t.has_remaining() {
                        conn.handle_write_progress(now);
                        in_flight = Some(t);
                    } else {
                        conn.on_transmitted(now).expect("a frame was in flight");
                    }
                }
            }
        }
        if !bytes_in.is_empty() {
            let before = conn.slave();
            match conn.handle_input(now, &bytes_in) {
                Ok(()) => {
                    if conn.slave() != before || bytes_in.len() == 16 && bytes_in[3] == 1 {
                        // A handshake restarts the exchange.
                        if conn.request_offset().is_none() {
                            handshaken = true;
                            reported = false;
                            next_data = None;
                        }
                    }
                    if conn.request_offset().is_some() {
                        reported = true;
                    }
                }
                Err(_) => break,
            }
        }
    }
    if conn.is_closed() {
        assert_eq!(conn.poll_timeout(), None);
        assert!(conn.handle_input(now, &[0, 0, 0, 2]).is_err());
        assert!(matches!(
            conn.poll_transmit(now, &log, &epochs, None),
            Ok(None)
        ));
    }
}

fn check_frame(
    t: &Transmit,
    log: &MemoryLog,
    epochs: &EpochList,
    batch: u32,
    handshaken: bool,
    reported: bool,
    next_data: &mut Option<u64>,
) {
    let mut copy = t.clone();
    let mut wire = BytesMut::new();
    while copy.has_remaining() {
        let n = copy.chunk().len();
        wire.extend_from_slice(copy.chunk());
        copy.advance(n);
    }
    let frame = decode_master_frame(&mut wire, u32::MAX)
        .expect("our frames decode")
        .expect("our frames are whole");
    assert!(wire.is_empty());
    match frame {
        MasterFrame::Handshake(answer) => {
            assert!(handshaken, "an answer without a handshake");
            assert_eq!(t.header(), None);
            assert_eq!(
                answer,
                MasterHandshake {
                    max_offset: log.max_offset(),
                    epochs: epochs.clone()
                }
            );
        }
        MasterFrame::Transfer { header, body } => {
            assert!(reported, "a transfer frame before the first report");
            assert_eq!(t.header(), Some(header));
            let offset = header.offset.expect("our frames carry an offset");
            let (entry, end) = epochs.find_by_offset(offset).expect("an epoch holds it");
            assert_eq!(
                (header.epoch, header.epoch_start),
                (entry.epoch, entry.start)
            );
            if header.body_len == 0 {
                return;
            }
            let frame_end = offset + u64::from(header.body_len);
            assert!(
                end.is_none_or(|e| frame_end <= e),
                "a frame crosses an epoch"
            );
            assert!(header.body_len <= batch);
            assert_eq!(
                segment_start(offset, log.segment_size()),
                segment_start(frame_end - 1, log.segment_size()),
                "a frame crosses a segment"
            );
            assert_eq!(
                &body[..],
                &log.read(offset, body.len()).expect("in the log")[..]
            );
            if let Some(expected) = *next_data {
                assert_eq!(offset, expected, "data frames are contiguous");
            }
            *next_data = Some(frame_end);
        }
    }
}
