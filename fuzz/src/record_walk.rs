//! `record_walk`: the CommitLog record walker (`rocketmq_ha::record`) over any segment bytes.
//!
//! The input's first byte picks a mode:
//! * raw (`mode % 2 == 0`): the rest of the input is a segment's bytes, walked as they are;
//! * encoded: a program builds messages (topic, body, properties, hosts, v1/v2) with the
//!   encoder and lays them out with `LogWriter` in one segment, then appends a suffix: nothing,
//!   zeros, a torn copy of one more record (alone or followed by zeros past its body), a blank
//!   record, or arbitrary bytes.
//!
//! Properties:
//! * the walk never panics (every slice access is checked, so no read out of bounds either);
//! * the records it yields are contiguous from the base, each at least `MIN_RECORD_LEN` long,
//!   inside the bytes, and the end offset is where the last one ends;
//! * a bad record's error names the end offset; each yielded record decodes again, alone, to
//!   the same record;
//! * for encoder-made bytes, the walk yields exactly the encoded records first (same offsets,
//!   fields, bodies), and with the suffixes that cannot form a record (nothing, zeros, a tear
//!   that cuts the body or earlier, a blank) exactly those and nothing more, ending where they
//!   end, for the reason the suffix dictates.

use std::net::SocketAddr;

use rocketmq_ha::record::{
    decode, Entry, LogWriter, Message, WalkEnd, Walker, BLANK_MAGIC, MIN_RECORD_LEN,
};

use super::input::Input;

/// Runs one `record_walk` input; panics on a violated property.
pub fn record_walk(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let base = input.u64() & (i64::MAX as u64 >> 1);
    let check_crc = mode & 2 == 0;
    if mode.is_multiple_of(2) {
        check_walk(input.rest(), base, check_crc);
        return;
    }

    // Encoded records, in one segment large enough for all of them.
    let mut messages = Vec::new();
    let count = input.small(0, 12) as usize;
    for _ in 0..count {
        messages.push(message(&mut input));
    }
    let segment_size = 1u64 << 22;
    // The walk starts at a record boundary; the base need not be a segment start.
    let base = base - base % segment_size;
    let mut writer = LogWriter::new(segment_size, base);
    let mut bytes = Vec::new();
    let mut offsets = Vec::new();
    for m in &messages {
        offsets.push(writer.push(m, &mut bytes).expect("small messages fit"));
    }
    let end = writer.offset();
    let mut extra = message(&mut input);
    // A torn copy of it must differ from the whole one in a byte the checks see: the last
    // byte of a non-empty body, which the body CRC covers (see suffix 3).
    if extra.body.last().is_none_or(|&b| b == 0) {
        extra.body.push(0x5A);
    }
    let suffix = input.u8() % 6;
    // Whether the suffix can never add a record, and the end it makes the walk report.
    let exact: Option<WalkEnd> = match suffix {
        0 => Some(WalkEnd::EndOfBytes),
        1 => {
            bytes.resize(bytes.len() + input.small(1, 64) as usize, 0);
            Some(WalkEnd::Zeros)
        }
        2 | 3 => {
            let mut record = Vec::new();
            extra.encode(end, &mut record).expect("small message");
            let len = record.len();
            // Torn before its last byte; with zeros after it (a preallocated file) only a cut
            // through the header or the body is sure to be seen (the CRC covers the body).
            let body_end = len - 2 - extra.properties.len() - extra.topic.len() - topic_len(&extra);
            let cut = if suffix == 2 {
                input.medium(1, len as u64 - 1) as usize
            } else {
                input.medium(1, body_end as u64 - 1) as usize
            };
            bytes.extend_from_slice(&record[..cut]);
            if suffix == 3 {
                bytes.resize(bytes.len() + len - cut + input.small(0, 32) as usize, 0);
            }
            // A tear that wrote only zero bytes is zeros, not a bad record.
            None
        }
        4 => {
            bytes.extend_from_slice(&input.u32().to_be_bytes());
            bytes.extend_from_slice(&BLANK_MAGIC.to_be_bytes());
            bytes.extend_from_slice(input.bytes(32));
            Some(WalkEnd::Blank)
        }
        _ => {
            bytes.extend_from_slice(input.rest());
            None
        }
    };

    let walked = check_walk(&bytes, base, check_crc);
    assert!(walked.len() >= messages.len(), "lost encoded records");
    for ((at, record), (m, &expected)) in walked.iter().zip(messages.iter().zip(&offsets)) {
        assert_eq!(*at, expected);
        let Entry::Message(r) = decode(&bytes[(at - base) as usize..], *at, check_crc)
            .expect("an encoded record decodes")
        else {
            panic!("an encoded record decoded as a blank");
        };
        assert_eq!(&r, record);
        assert_eq!(r.physical_offset, *at as i64);
        assert_eq!(r.topic, &m.topic[..]);
        assert_eq!(r.body, &m.body[..]);
        assert_eq!(r.properties, &m.properties[..]);
        assert_eq!(r.queue_id, m.queue_id);
        assert_eq!(r.queue_offset, m.queue_offset);
        assert_eq!(r.store_timestamp, m.store_timestamp);
        assert_eq!(r.version, m.version());
    }
    // A tear followed by zeros is only sure to be seen through the body CRC, if it is checked.
    let torn_is_exact = suffix == 2 || (suffix == 3 && check_crc);
    if exact.is_some() || torn_is_exact {
        assert_eq!(
            walked.len(),
            messages.len(),
            "suffix {suffix} added a record"
        );
        let walker_end = Walker::new(&bytes, base, check_crc).finish();
        assert_eq!(walker_end.1, end, "suffix {suffix}");
        match (exact, walker_end.2) {
            (Some(want), got) => assert_eq!(got, want),
            (None, WalkEnd::Bad(e)) => assert_eq!(e.offset, end),
            (None, WalkEnd::Zeros) => {}
            (None, other) => panic!("a torn record ended the walk as {other:?}"),
        }
    }
}

/// Walks `bytes` and checks the structural properties; returns what it yielded.
fn check_walk(
    bytes: &[u8],
    base: u64,
    check_crc: bool,
) -> Vec<(u64, rocketmq_ha::record::Record<'_>)> {
    let mut walker = Walker::new(bytes, base, check_crc);
    let mut at = base;
    let mut out = Vec::new();
    for (offset, record) in walker.by_ref() {
        assert_eq!(offset, at, "records are contiguous");
        let size = u64::from(record.total_size);
        assert!(size >= MIN_RECORD_LEN);
        at += size;
        assert!(at - base <= bytes.len() as u64, "a record past the bytes");
        out.push((offset, record));
    }
    assert_eq!(walker.offset(), at);
    match walker.end() {
        Some(WalkEnd::EndOfBytes) => assert_eq!(at - base, bytes.len() as u64),
        Some(WalkEnd::Zeros) => {
            let rest = &bytes[(at - base) as usize..];
            assert!(rest[..rest.len().min(8)].iter().all(|&b| b == 0));
            assert!(!rest.is_empty());
        }
        Some(WalkEnd::Blank) => {
            let rest = &bytes[(at - base) as usize..];
            assert_eq!(&rest[4..8], &BLANK_MAGIC.to_be_bytes());
        }
        Some(WalkEnd::Bad(e)) => {
            assert_eq!(e.offset, at);
            assert!(decode(&bytes[(at - base) as usize..], at, check_crc).is_err());
        }
        None => panic!("the walk ended without a reason"),
    }
    out
}

fn topic_len(m: &Message) -> usize {
    match m.version() {
        rocketmq_ha::record::Version::V1 => 1,
        rocketmq_ha::record::Version::V2 => 2,
    }
}

/// A message from the input: short fields, so many fit; v2 and IPv6 hosts reachable.
pub(crate) fn message(input: &mut Input) -> Message {
    let flags = input.u8();
    let topic_len = if flags & 1 != 0 {
        input.small(120, 300) as usize
    } else {
        input.small(0, 20) as usize
    };
    let topic = vec![b'a' + (flags % 26); topic_len];
    let mut m = Message::new(topic, input.bytes(200));
    m.properties = input.bytes(40).to_vec();
    m.queue_id = i32::from(input.u8());
    m.queue_offset = input.u32().into();
    m.store_timestamp = input.u32().into();
    m.force_v2 = flags & 2 != 0;
    if flags & 4 != 0 {
        m.born_host = SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], 9876));
    }
    if flags & 8 != 0 {
        m.store_host = SocketAddr::from(([0xfe80u16, 0, 0, 0, 0, 0, 0, 2], 10911));
    }
    m
}
