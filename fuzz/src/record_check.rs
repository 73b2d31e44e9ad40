//! `record_check`: the streaming record check a verifying slave runs
//! (`rocketmq_ha::record_check`) over frames that cut records anywhere.
//!
//! The input's first byte picks a mode:
//! * raw (`mode % 2 == 0`): arbitrary bytes fed in arbitrary chunks at arbitrary offsets, with
//!   arbitrary rewinds and settles, to a check with a small segment size;
//! * encoded: messages laid out by `LogWriter` across several small segments (blank records
//!   at their ends), fed from offset 0 in input-chosen chunks, with at most one byte flipped in
//!   one record's total size, magic code or body.
//!
//! Properties:
//! * the check never panics, and holds at most one record ([`MAX_RECORD_LEN`]) of bytes;
//! * an untouched log passes in any chunking, and every record is counted once;
//! * a flipped byte is caught, and the error names exactly the record that holds it (or, when
//!   the stream ends first, that record is still waiting for bytes).

use rocketmq_ha::record::{decode, Entry, LogWriter};
use rocketmq_ha::record_check::{RecordCheck, MAX_RECORD_LEN};

use super::input::Input;
use super::record_walk::message;

/// Runs one `record_check` input; panics on a violated property.
pub fn record_check(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    if mode.is_multiple_of(2) {
        raw(&mut input);
    } else {
        encoded(&mut input);
    }
}

fn raw(input: &mut Input) {
    let segment_size = 4096 * input.small(1, 4);
    let mut check = RecordCheck::new(segment_size);
    let mut at = input.u64() >> 4;
    while !input.is_empty() {
        match input.u8() % 8 {
            0 => at = at.saturating_sub(input.small(0, 5000)),
            1 => check.settle(at),
            _ => {
                let chunk = input.bytes(600);
                let _ = check.check(at, chunk);
                at += chunk.len() as u64;
            }
        }
    }
    let _ = MAX_RECORD_LEN;
}

fn encoded(input: &mut Input) {
    let segment_size = 4096;
    let mut writer = LogWriter::new(segment_size, 0);
    let mut log = Vec::new();
    let mut offsets = Vec::new();
    for _ in 0..input.small(1, 40) {
        let m = message(input);
        if m.encoded_len() > segment_size {
            continue;
        }
        offsets.push(writer.push(&m, &mut log).expect("fits a segment"));
    }
    // Which record to damage, if any, and where in it.
    let target = match input.u8() % 3 {
        0 => None,
        _ => Some(input.small(0, offsets.len() as u64 - 1) as usize),
    };
    let mut flipped = None;
    if let Some(k) = target {
        let record = offsets[k] as usize;
        let Ok(Entry::Message(r)) = decode(&log[record..], record as u64, true) else {
            panic!("the writer's record {k} does not decode");
        };
        let body_at = r.body.as_ptr() as usize - log.as_ptr() as usize;
        let choice = input.u8() % 3;
        let at = match choice {
            0 => record + 3,
            1 => record + 4 + (input.u8() % 4) as usize,
            _ if !r.body.is_empty() => body_at + input.small(0, r.body.len() as u64 - 1) as usize,
            _ => record + 4,
        };
        log[at] ^= 1 << (input.u8() % 8);
        flipped = Some(record as u64);
    }

    let mut check = RecordCheck::new(segment_size);
    let mut at = 0usize;
    let mut result = Ok(());
    while at < log.len() {
        let len = (input.small(1, 5000) as usize).min(log.len() - at);
        result = check.check(at as u64, &log[at..at + len]);
        if result.is_err() {
            break;
        }
        at += len;
    }
    match (flipped, result) {
        (None, Ok(())) => assert_eq!(check.records(), offsets.len() as u64),
        (None, Err(e)) => panic!("an untouched log failed: {e}"),
        (Some(record), Err(e)) => assert_eq!(e.offset, record, "{e}"),
        // A total size made larger can leave the record waiting for bytes that a longer
        // stream would bring: not an error yet, but it is not passed either.
        (Some(record), Ok(())) => assert_eq!(
            check.incomplete(),
            Some(record),
            "a flipped byte in the record at {record} passed"
        ),
    }
}
