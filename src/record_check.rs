//! Checking the log a master sends, record by record, as it arrives
//! ([`Config::verify_records`](crate::Config::verify_records)).
//!
//! A RocketMQ broker checks records only when it recovers its own store; a slave stores whatever
//! bytes its master sends. A slave that checks each record before storing it gets end-to-end
//! integrity, and notices a master whose log diverged from its own: the first bytes after the
//! slave's end are then, in all likelihood, not the start of a record.
//!
//! The bytes come in frames that cut records anywhere, so a [`RecordCheck`] keeps the part of a
//! record seen so far. Records never span segments (§0.3): a segment ends with a record, or with
//! a blank record after which the rest of the segment is padding.
//!
//! # Where checking starts
//! Only from a record boundary. Every segment start is one. When the bytes resume at any other
//! offset, as after a restart inside a record, checking resumes at the next boundary it knows
//! (one it passed before the stream went back, else the next segment start); the bytes before
//! it are counted in [`RecordCheck::unchecked`].

use std::collections::VecDeque;

use crate::log::segment_start;
use crate::record::{decode, Entry, RecordError, RecordFault, BLANK_LEN, BLANK_MAGIC};
use crate::record::{MESSAGE_MAGIC_V1, MESSAGE_MAGIC_V2, MIN_RECORD_LEN};

/// The longest record a [`RecordCheck`] accepts: it holds up to one record in memory while the
/// record arrives. RocketMQ's `maxMessageSize` is 4 MiB of body by default; four times that
/// leaves room for brokers configured higher and for the record's other fields.
pub const MAX_RECORD_LEN: u64 = 16 << 20;

/// How many record starts a check remembers for resuming after the stream goes back. Only
/// starts above what the slave has stored matter, and [`RecordCheck::settle`] drops the others;
/// this bounds the memory if nobody settles.
const REMEMBERED_BOUNDARIES: usize = 1 << 16;

/// What the next byte is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// The start of a record, or more of the record in `partial`.
    Record,
    /// Bytes up to this offset pass unchecked: a blank record's padding, or bytes before the
    /// first boundary known after resuming mid-record.
    SkipTo(u64),
}

/// What the bytes at a record boundary hold so far.
enum Step {
    /// A message record of this many bytes.
    Message(u64),
    /// A blank record: the rest of the segment is padding.
    Blank,
    /// The record needs this many bytes before it can be checked.
    NeedMore(u64),
}

/// A streaming check of RocketMQ CommitLog records (module docs).
#[derive(Debug, Clone)]
pub struct RecordCheck {
    segment_size: u64,
    /// Where the bytes fed so far end; `None` before the first.
    end: Option<u64>,
    position: Position,
    /// The bytes of the record in progress, which started at `end - partial.len()`.
    partial: Vec<u8>,
    /// Record starts passed, oldest first (see [`settle`](Self::settle)).
    boundaries: VecDeque<u64>,
    records: u64,
    unchecked: u64,
}

impl RecordCheck {
    /// A check for a log with segments of `segment_size` bytes (at least 1).
    pub fn new(segment_size: u64) -> Self {
        RecordCheck {
            segment_size: segment_size.max(1),
            end: None,
            position: Position::Record,
            partial: Vec::new(),
            boundaries: VecDeque::new(),
            records: 0,
            unchecked: 0,
        }
    }

    /// Message records checked so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes passed without a check because checking could not start inside them (module
    /// docs); a blank record's padding is not counted.
    pub fn unchecked(&self) -> u64 {
        self.unchecked
    }

    /// Where the record that has started and not yet ended starts, if one has.
    pub fn incomplete(&self) -> Option<u64> {
        match (self.end, self.partial.len() as u64) {
            (Some(end), len) if len > 0 => Some(end - len),
            _ => None,
        }
    }

    /// Where the bytes fed so far end.
    pub fn end(&self) -> Option<u64> {
        self.end
    }

    /// The slave has stored everything below `stored`: the stream never goes back further,
    /// so record starts below the last one at or under it are forgotten.
    pub fn settle(&mut self, stored: u64) {
        while self.boundaries.len() >= 2 && self.boundaries[1] <= stored {
            self.boundaries.pop_front();
        }
    }

    /// Checks `data`, the log bytes at `offset`. Bytes that do not follow the last ones fed
    /// (a new connection resuming from what is stored) restart the check there.
    ///
    /// Fails with the first record that is not valid: its offset and what is wrong. After an
    /// error the check restarts with the next call, like after a reconnect.
    pub fn check(&mut self, offset: u64, data: &[u8]) -> Result<(), RecordError> {
        if self.end != Some(offset) {
            self.restart(offset);
        }
        let result = self.feed(offset, data);
        match result {
            Ok(()) => self.end = Some(offset + data.len() as u64),
            Err(_) => {
                self.end = None;
                self.partial = Vec::new();
            }
        }
        result
    }

    fn feed(&mut self, offset: u64, mut data: &[u8]) -> Result<(), RecordError> {
        let mut at = offset;
        while !data.is_empty() {
            let segment_end = segment_start(at, self.segment_size) + self.segment_size;
            let room = usize::try_from(segment_end - at).unwrap_or(usize::MAX);
            let (here, rest) = data.split_at(room.min(data.len()));
            self.feed_segment(at, segment_end, here)?;
            at += here.len() as u64;
            data = rest;
            if at == segment_end {
                if !self.partial.is_empty() {
                    // A record that would run into the next segment: impossible in RocketMQ.
                    let len = self.partial.len() as u64;
                    return Err(RecordError {
                        offset: at - len,
                        fault: RecordFault::Truncated {
                            needed: self.needed().unwrap_or(len + 1),
                            available: len,
                        },
                    });
                }
                self.position = Position::Record;
            }
        }
        Ok(())
    }

    /// Feeds `bytes` at `at`, all inside the segment ending at `segment_end`.
    fn feed_segment(&mut self, at: u64, segment_end: u64, bytes: &[u8]) -> Result<(), RecordError> {
        let mut i = 0;
        while i < bytes.len() {
            let pos = at + i as u64;
            if let Position::SkipTo(target) = self.position {
                if pos >= target {
                    self.position = Position::Record;
                } else {
                    let n = (target - pos).min((bytes.len() - i) as u64) as usize;
                    i += n;
                    continue;
                }
            }
            if self.partial.is_empty() {
                match step(pos, segment_end, &bytes[i..])? {
                    Step::Message(len) => {
                        self.passed(pos);
                        self.records += 1;
                        i += len as usize;
                    }
                    Step::Blank => {
                        self.passed(pos);
                        self.position = Position::SkipTo(segment_end);
                    }
                    Step::NeedMore(_) => {
                        self.partial.extend_from_slice(&bytes[i..]);
                        i = bytes.len();
                    }
                }
            } else {
                let start = pos - self.partial.len() as u64;
                let need = match step(start, segment_end, &self.partial)? {
                    Step::NeedMore(need) => need,
                    // `partial` only ever holds an incomplete record.
                    Step::Message(_) | Step::Blank => self.partial.len() as u64,
                };
                let take = (need - self.partial.len() as u64).min((bytes.len() - i) as u64);
                self.partial.extend_from_slice(&bytes[i..i + take as usize]);
                i += take as usize;
                match step(start, segment_end, &self.partial)? {
                    Step::Message(_) => {
                        self.passed(start);
                        self.records += 1;
                        self.partial.clear();
                    }
                    Step::Blank => {
                        self.passed(start);
                        self.partial.clear();
                        self.position = Position::SkipTo(segment_end);
                    }
                    Step::NeedMore(_) => {}
                }
            }
        }
        Ok(())
    }

    /// How many bytes the record in `partial` needs, if its header says.
    fn needed(&self) -> Option<u64> {
        let size: [u8; 4] = self.partial.get(..4)?.try_into().ok()?;
        Some(u64::from(u32::from_be_bytes(size)))
    }

    fn passed(&mut self, start: u64) {
        if self.boundaries.len() == REMEMBERED_BOUNDARIES {
            self.boundaries.pop_front();
        }
        self.boundaries.push_back(start);
    }

    /// The bytes resume at `offset`: from a record boundary if it is one we know, else from
    /// the next one we know (module docs).
    fn restart(&mut self, offset: u64) {
        let segment_end = segment_start(offset, self.segment_size) + self.segment_size;
        let partial_start = self.end.map(|end| end - self.partial.len() as u64);
        match partial_start {
            // Back inside the record in progress: keep what came before `offset`.
            Some(start)
                if self.position == Position::Record
                    && !self.partial.is_empty()
                    && start <= offset
                    && Some(offset) < self.end =>
            {
                self.partial.truncate((offset - start) as usize);
                return;
            }
            _ => self.partial.clear(),
        }
        if offset.is_multiple_of(self.segment_size) || self.boundaries.contains(&offset) {
            self.position = Position::Record;
            return;
        }
        let next = self
            .boundaries
            .iter()
            .copied()
            .find(|&b| b > offset && b < segment_end)
            .unwrap_or(segment_end);
        self.unchecked += next - offset;
        self.position = Position::SkipTo(next);
    }
}

/// What `bytes` (from the record boundary `start`, in the segment ending at `segment_end`)
/// hold so far.
fn step(start: u64, segment_end: u64, bytes: &[u8]) -> Result<Step, RecordError> {
    let fail = |fault| RecordError {
        offset: start,
        fault,
    };
    if (bytes.len() as u64) < BLANK_LEN {
        return Ok(Step::NeedMore(BLANK_LEN));
    }
    let size = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let magic = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    match magic {
        BLANK_MAGIC => return Ok(Step::Blank),
        MESSAGE_MAGIC_V1 | MESSAGE_MAGIC_V2 => {}
        other => return Err(fail(RecordFault::BadMagic(other))),
    }
    let size = u64::from(size);
    if !(MIN_RECORD_LEN..=MAX_RECORD_LEN).contains(&size) {
        return Err(fail(RecordFault::BadTotalSize(size as i32)));
    }
    if start + size > segment_end {
        return Err(fail(RecordFault::Truncated {
            needed: size,
            available: segment_end - start,
        }));
    }
    if (bytes.len() as u64) < size {
        return Ok(Step::NeedMore(size));
    }
    match decode(&bytes[..size as usize], start, true)? {
        Entry::Message(_) => Ok(Step::Message(size)),
        Entry::Blank { .. } => Ok(Step::Blank),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{LogWriter, Message};

    const F: u64 = 64 * 1024;

    /// `count` records laid out from `start` as a broker does (blank records at segment ends),
    /// and each record's offset.
    fn log(start: u64, count: u64) -> (Vec<u8>, Vec<u64>) {
        let mut writer = LogWriter::new(F, start);
        let mut out = Vec::new();
        let offsets = (0..count)
            .map(|i| {
                let mut m = Message::new(
                    "t",
                    vec![(i % 200) as u8 + 1; 300 + (i * 37 % 900) as usize],
                );
                m.queue_offset = i as i64;
                writer.push(&m, &mut out).unwrap()
            })
            .collect();
        (out, offsets)
    }

    /// The index in `bytes` of the middle of the body of the record at `record`: a byte only
    /// the body CRC covers.
    fn body_byte(bytes: &[u8], record: u64) -> u64 {
        match decode(&bytes[record as usize..], record, true).unwrap() {
            Entry::Message(r) => {
                let body = r.body.as_ptr() as usize - bytes.as_ptr() as usize;
                (body + r.body.len() / 2) as u64
            }
            Entry::Blank { .. } => panic!("not a message"),
        }
    }

    fn feed_in_chunks(
        check: &mut RecordCheck,
        start: u64,
        bytes: &[u8],
        chunk: usize,
    ) -> Result<(), RecordError> {
        let mut at = start;
        for piece in bytes.chunks(chunk) {
            check.check(at, piece)?;
            at += piece.len() as u64;
        }
        Ok(())
    }

    #[test]
    fn a_valid_log_passes_in_any_chunking_and_every_record_is_counted() {
        let (bytes, offsets) = log(0, 600);
        assert!(
            bytes.len() as u64 > 3 * F,
            "crosses segments and blank records"
        );
        for chunk in [1, 7, 100, 4096, 32 * 1024, bytes.len()] {
            let mut check = RecordCheck::new(F);
            feed_in_chunks(&mut check, 0, &bytes, chunk).unwrap();
            assert_eq!(check.records(), offsets.len() as u64, "chunk {chunk}");
            assert_eq!(check.unchecked(), 0);
        }
    }

    #[test]
    fn a_flipped_size_magic_or_body_byte_is_caught_at_that_record() {
        let (bytes, offsets) = log(0, 40);
        for &record in offsets.iter().step_by(7) {
            // The total size, the magic code, the body (through its CRC).
            for at in [record + 3, record + 4, body_byte(&bytes, record)] {
                let mut bad = bytes.clone();
                bad[at as usize] ^= 0x40;
                let mut check = RecordCheck::new(F);
                let err = feed_in_chunks(&mut check, 0, &bad, 1000).unwrap_err();
                assert_eq!(err.offset, record, "flip at {at}");
            }
        }
    }

    #[test]
    fn bytes_that_are_not_records_after_the_end_are_caught_at_once() {
        // A diverged master: the slave's log ends at a record boundary, the master's next bytes
        // are the middle of some other record.
        let (bytes, offsets) = log(0, 50);
        let mut check = RecordCheck::new(F);
        check.check(0, &bytes[..offsets[20] as usize]).unwrap();
        let err = check
            .check(offsets[20], &bytes[offsets[30] as usize + 13..])
            .unwrap_err();
        assert_eq!(err.offset, offsets[20]);
    }

    #[test]
    fn zeros_and_a_record_running_past_its_segment_are_refused() {
        let mut check = RecordCheck::new(F);
        let err = check.check(0, &[0u8; 64]).unwrap_err();
        assert_eq!(err.fault, RecordFault::BadMagic(0));

        // Two records where the segment has room for one and a half.
        let (one, _) = log(0, 1);
        let len = one.len() as u64;
        let mut check = RecordCheck::new(len * 3 / 2);
        let twice = [one.clone(), one].concat();
        let err = check.check(0, &twice).unwrap_err();
        assert_eq!(err.offset, len);
        assert!(matches!(err.fault, RecordFault::Truncated { .. }), "{err}");
    }

    #[test]
    fn a_huge_total_size_is_refused_before_anything_is_buffered() {
        let mut header = Vec::new();
        header.extend_from_slice(&(MAX_RECORD_LEN as u32 + 1).to_be_bytes());
        header.extend_from_slice(&MESSAGE_MAGIC_V1.to_be_bytes());
        let mut check = RecordCheck::new(1 << 30);
        let err = check.check(0, &header).unwrap_err();
        assert!(matches!(err.fault, RecordFault::BadTotalSize(_)));
    }

    #[test]
    fn a_stream_that_goes_back_resumes_at_known_boundaries() {
        let (bytes, offsets) = log(0, 300);
        let mut check = RecordCheck::new(F);
        feed_in_chunks(&mut check, 0, &bytes[..offsets[200] as usize + 50], 3000).unwrap();
        let before = check.records();
        // Back to a record start it passed (the slave stored up to there).
        check.settle(offsets[150]);
        feed_in_chunks(
            &mut check,
            offsets[150],
            &bytes[offsets[150] as usize..],
            3000,
        )
        .unwrap();
        // Records 150.. are checked again as they come again.
        assert_eq!(check.records(), before + (offsets.len() - 150) as u64);
        assert_eq!(check.unchecked(), 0);

        // Back into the middle of a record: unchecked up to the next boundary it knows.
        let mut check = RecordCheck::new(F);
        check.check(0, &bytes[..offsets[120] as usize]).unwrap();
        let mid = offsets[100] + 10;
        check
            .check(mid, &bytes[mid as usize..offsets[120] as usize])
            .unwrap();
        assert_eq!(check.unchecked(), offsets[101] - mid);
        // A corrupt record after the resume point is still caught.
        let mut bad = bytes[mid as usize..].to_vec();
        let flip = (body_byte(&bytes, offsets[110]) - mid) as usize;
        bad[flip] ^= 1;
        let mut check2 = RecordCheck::new(F);
        check2.check(0, &bytes[..offsets[120] as usize]).unwrap();
        let err = check2.check(mid, &bad).unwrap_err();
        assert_eq!(err.offset, offsets[110]);
    }

    #[test]
    fn a_fresh_check_starting_mid_segment_waits_for_the_next_segment() {
        let (bytes, offsets) = log(0, 400);
        let start = offsets[5] + 3;
        let mut check = RecordCheck::new(F);
        check.check(start, &bytes[start as usize..]).unwrap();
        assert_eq!(check.unchecked(), F - start);
        let in_later_segments = offsets.iter().filter(|&&o| o >= F).count() as u64;
        assert_eq!(check.records(), in_later_segments);
    }
}
