//! The classic HA frames (§2), byte-exact with RocketMQ 4.x and 5.x in non-controller mode.
//!
//! Two frames exist, both big-endian with no magic, version or checksum (§0.3):
//!
//! * slave → master, an 8-byte **report**: `[i64 slaveMaxOffset]` (§2.1). The first report on a
//!   connection is the request offset; every report is an acknowledgement.
//! * master → slave, a **transfer** frame: `[i64 offset][i32 bodySize]` then `bodySize` raw
//!   CommitLog bytes (§2.2). `bodySize == 0` is a heartbeat announcing the next offset.
//!
//! Encoding writes into fixed arrays. Decoding is incremental, never panics, and never allocates
//! on the say-so of a size field: a header is validated against the receiver's frame limit
//! before a single body byte is awaited.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::WireError;

/// Length of a slave → master report (§2.1).
pub const REPORT_LEN: usize = 8;

/// Length of the master → slave transfer header (§2.2).
pub const TRANSFER_HEADER_LEN: usize = 12;

/// The largest frame (header + body) a Java slave can receive: its read buffer is 4 MiB and must
/// hold one whole frame (§2.2, §4.3).
pub const JAVA_MAX_FRAME_SIZE: u32 = 4 * 1024 * 1024;

/// Encodes a report: the slave's max offset as an 8-byte big-endian `i64` (§2.1).
///
/// Offsets above `i64::MAX` cannot be expressed on the wire; no commit log reaches them.
pub fn encode_report(offset: u64) -> [u8; REPORT_LEN] {
    debug_assert!(
        offset <= i64::MAX as u64,
        "offset {offset} does not fit the wire"
    );
    (offset as i64).to_be_bytes()
}

/// Decodes one complete report, rejecting negative offsets.
pub fn decode_report(bytes: [u8; REPORT_LEN]) -> Result<u64, WireError> {
    let value = i64::from_be_bytes(bytes);
    u64::try_from(value).map_err(|_| WireError::NegativeOffset(value))
}

/// Incremental decoder for the report stream, applying the master's "last complete value" rule
/// (§3.2).
///
/// Java's reader looks only at the last complete 8-byte value of each read pass and skips the
/// earlier ones; since every report is an absolute offset, the last one carries all the
/// information. At most 7 bytes of an incomplete report are kept between calls, so memory is
/// bounded whatever the peer sends.
#[derive(Debug, Clone, Default)]
pub struct ReportDecoder {
    partial: [u8; REPORT_LEN],
    partial_len: usize,
}

impl ReportDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of an incomplete report held from earlier input (0..=7).
    pub fn pending_len(&self) -> usize {
        self.partial_len
    }

    /// Consumes `input` and returns the last report it completed, if any (§3.2, vector V5).
    ///
    /// A negative offset in that last report is a [`WireError::NegativeOffset`]; the decoder's
    /// state is then unspecified and the connection must close.
    pub fn feed(&mut self, input: &[u8]) -> Result<Option<u64>, WireError> {
        let total = self.partial_len + input.len();
        if total < REPORT_LEN {
            self.partial[self.partial_len..total].copy_from_slice(input);
            self.partial_len = total;
            return Ok(None);
        }
        // Position of the last complete value in the concatenation `partial ++ input`.
        let last_start = (total / REPORT_LEN - 1) * REPORT_LEN;
        let mut value = [0u8; REPORT_LEN];
        if last_start < self.partial_len {
            // Only possible when the partial bytes begin the first (and last) complete value.
            let from_partial = self.partial_len;
            value[..from_partial].copy_from_slice(&self.partial[..from_partial]);
            value[from_partial..].copy_from_slice(&input[..REPORT_LEN - from_partial]);
        } else {
            let at = last_start - self.partial_len;
            value.copy_from_slice(&input[at..at + REPORT_LEN]);
        }
        let rest = total % REPORT_LEN;
        self.partial[..rest].copy_from_slice(&input[input.len() - rest..]);
        self.partial_len = rest;
        decode_report(value).map(Some)
    }
}

/// The 12-byte header of a master → slave transfer frame (§2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive] // AutoSwitch's longer header (§5) may add fields
pub struct TransferHeader {
    /// CommitLog offset of the first body byte; for a heartbeat, the next offset to be sent.
    pub offset: u64,
    /// Number of body bytes that follow; 0 for a heartbeat.
    pub body_len: u32,
}

impl TransferHeader {
    /// A header for `body_len` bytes starting at `offset`.
    pub fn new(offset: u64, body_len: u32) -> Self {
        TransferHeader { offset, body_len }
    }

    /// A heartbeat header: no body, announcing `offset` as the next offset (§2.2).
    pub fn heartbeat(offset: u64) -> Self {
        TransferHeader {
            offset,
            body_len: 0,
        }
    }

    /// Encodes the header: `[i64 offset][i32 bodySize]`, big-endian.
    pub fn encode(&self) -> [u8; TRANSFER_HEADER_LEN] {
        debug_assert!(self.offset <= i64::MAX as u64);
        debug_assert!(self.body_len <= i32::MAX as u32);
        let mut out = [0u8; TRANSFER_HEADER_LEN];
        out[..8].copy_from_slice(&(self.offset as i64).to_be_bytes());
        out[8..].copy_from_slice(&(self.body_len as i32).to_be_bytes());
        out
    }

    /// Decodes and validates a header against the receiver's `max_frame_size` (header + body).
    pub fn decode(
        bytes: [u8; TRANSFER_HEADER_LEN],
        max_frame_size: u32,
    ) -> Result<Self, WireError> {
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&bytes[..8]);
        let offset = i64::from_be_bytes(offset);
        let mut size = [0u8; 4];
        size.copy_from_slice(&bytes[8..]);
        let size = i32::from_be_bytes(size);
        let offset = u64::try_from(offset).map_err(|_| WireError::NegativeOffset(offset))?;
        let body_len = u32::try_from(size).map_err(|_| WireError::NegativeBodySize(size))?;
        let frame_len = TRANSFER_HEADER_LEN as u64 + u64::from(body_len);
        if frame_len > u64::from(max_frame_size) {
            return Err(WireError::FrameTooLarge {
                size: frame_len,
                max: u64::from(max_frame_size),
            });
        }
        // A slave that appended such a frame could not encode its next report (found by the
        // `client_stream` fuzz target).
        if offset + u64::from(body_len) > i64::MAX as u64 {
            return Err(WireError::OffsetOverflow { offset, body_len });
        }
        Ok(TransferHeader { offset, body_len })
    }

    /// Decodes the header at the front of `buf` without consuming anything; `Ok(None)` if fewer
    /// than 12 bytes are present.
    pub fn peek(buf: &[u8], max_frame_size: u32) -> Result<Option<Self>, WireError> {
        match buf.get(..TRANSFER_HEADER_LEN) {
            None => Ok(None),
            Some(head) => {
                let mut bytes = [0u8; TRANSFER_HEADER_LEN];
                bytes.copy_from_slice(head);
                Self::decode(bytes, max_frame_size).map(Some)
            }
        }
    }

    /// Header plus body length.
    pub fn frame_len(&self) -> usize {
        TRANSFER_HEADER_LEN + self.body_len as usize
    }

    /// One past the last body byte: where the next frame starts.
    pub fn end_offset(&self) -> u64 {
        self.offset + u64::from(self.body_len)
    }
}

/// A complete transfer frame split off an input buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferFrame {
    /// The frame's header.
    pub header: TransferHeader,
    /// The body, sharing the input buffer's memory (no copy).
    pub body: Bytes,
}

/// Splits one complete transfer frame off the front of `buf`, zero-copy.
///
/// Returns `Ok(None)` and leaves `buf` untouched while the frame is incomplete. The header is
/// validated as soon as its 12 bytes are present, so an oversized or negative size is an error
/// before any body byte is buffered.
pub fn decode_transfer(
    buf: &mut BytesMut,
    max_frame_size: u32,
) -> Result<Option<TransferFrame>, WireError> {
    let Some(header) = TransferHeader::peek(buf, max_frame_size)? else {
        return Ok(None);
    };
    if buf.len() < header.frame_len() {
        return Ok(None);
    }
    buf.advance(TRANSFER_HEADER_LEN);
    let body = buf.split_to(header.body_len as usize).freeze();
    Ok(Some(TransferFrame { header, body }))
}

/// A whole transfer frame (header and body) as bytes: what a master writes, for tests.
#[cfg(test)]
pub(crate) fn test_frame(offset: u64, body: &[u8]) -> Vec<u8> {
    let mut v = TransferHeader::new(offset, body.len() as u32)
        .encode()
        .to_vec();
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let digits: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn v1_empty_slave_report() {
        assert_eq!(encode_report(0).to_vec(), hex("00 00 00 00 00 00 00 00"));
        assert_eq!(decode_report([0; 8]), Ok(0));
    }

    #[test]
    fn v2_slave_report() {
        let bytes = hex("00 00 00 00 40 00 12 34");
        assert_eq!(encode_report(0x4000_1234).to_vec(), bytes);
        let mut d = ReportDecoder::new();
        assert_eq!(d.feed(&bytes), Ok(Some(0x4000_1234)));
        assert_eq!(d.pending_len(), 0);
    }

    #[test]
    fn v3_master_heartbeat() {
        let bytes = hex("00 00 00 00 40 00 00 00 | 00 00 00 00");
        let h = TransferHeader::heartbeat(0x4000_0000);
        assert_eq!(h.encode().to_vec(), bytes);
        let mut buf = BytesMut::from(&bytes[..]);
        let frame = decode_transfer(&mut buf, JAVA_MAX_FRAME_SIZE)
            .unwrap()
            .unwrap();
        assert_eq!(frame.header, h);
        assert!(frame.body.is_empty());
        assert!(buf.is_empty());
    }

    #[test]
    fn v4_master_data_frame() {
        let bytes = hex("00 00 00 00 c0 00 00 00 | 00 00 00 05 | 68 65 6c 6c 6f");
        let h = TransferHeader {
            offset: 0xC000_0000,
            body_len: 5,
        };
        let mut encoded = h.encode().to_vec();
        encoded.extend_from_slice(b"hello");
        assert_eq!(encoded, bytes);
        let mut buf = BytesMut::from(&bytes[..]);
        let frame = decode_transfer(&mut buf, JAVA_MAX_FRAME_SIZE)
            .unwrap()
            .unwrap();
        assert_eq!(frame.header, h);
        assert_eq!(&frame.body[..], b"hello");
    }

    #[test]
    fn v5_report_stream_last_complete_value() {
        let mut d = ReportDecoder::new();
        let first = hex("00 00 00 00 00 00 10 00  00 00 00 00 00 00 20 00  00 00 00");
        assert_eq!(d.feed(&first), Ok(Some(0x2000)));
        assert_eq!(d.pending_len(), 3);
        assert_eq!(d.feed(&hex("00 00 00 30 00")), Ok(Some(0x3000)));
        assert_eq!(d.pending_len(), 0);
    }

    #[test]
    fn v6_mismatch_header_decodes() {
        // The mismatch itself is the client's rule (§4.4); the header must decode exactly.
        let bytes = hex("00 00 00 00 00 00 20 00 | 00 00 00 10");
        let h = TransferHeader::peek(&bytes, JAVA_MAX_FRAME_SIZE)
            .unwrap()
            .unwrap();
        assert_eq!(h.offset, 0x2000);
        assert_eq!(h.body_len, 0x10);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(decode_transfer(&mut buf, JAVA_MAX_FRAME_SIZE), Ok(None));
        assert_eq!(buf.len(), 12, "an incomplete frame is not consumed");
    }

    #[test]
    fn report_split_across_feeds() {
        let bytes = encode_report(0x0102_0304_0506_0708);
        for split in 0..=8 {
            let mut d = ReportDecoder::new();
            let a = d.feed(&bytes[..split]).unwrap();
            let b = d.feed(&bytes[split..]).unwrap();
            assert_eq!(a.or(b), Some(0x0102_0304_0506_0708), "split {split}");
            assert_eq!(d.pending_len(), 0);
        }
    }

    #[test]
    fn report_partial_completes_with_later_value() {
        // 5 pending bytes, then 3 completing them plus a full second value: the second wins.
        let mut stream = encode_report(1).to_vec();
        stream.extend_from_slice(&encode_report(2));
        let mut d = ReportDecoder::new();
        assert_eq!(d.feed(&stream[..5]), Ok(None));
        assert_eq!(d.feed(&stream[5..]), Ok(Some(2)));
        let mut d = ReportDecoder::new();
        assert_eq!(d.feed(&stream[..5]), Ok(None));
        assert_eq!(d.feed(&stream[5..12]), Ok(Some(1)));
        assert_eq!(d.feed(&stream[12..]), Ok(Some(2)));
    }

    #[test]
    fn negative_report_is_error() {
        let mut d = ReportDecoder::new();
        assert_eq!(
            d.feed(&(-1i64).to_be_bytes()),
            Err(WireError::NegativeOffset(-1))
        );
    }

    #[test]
    fn header_limits() {
        let mut bytes = [0u8; 12];
        bytes[8..].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(
            TransferHeader::decode(bytes, JAVA_MAX_FRAME_SIZE),
            Err(WireError::NegativeBodySize(-5))
        );
        bytes[8..].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            TransferHeader::decode(bytes, JAVA_MAX_FRAME_SIZE),
            Err(WireError::FrameTooLarge { .. })
        ));
        // Exactly at the limit is accepted; one more byte is not.
        let at_limit = (JAVA_MAX_FRAME_SIZE - 12) as i32;
        bytes[8..].copy_from_slice(&at_limit.to_be_bytes());
        assert!(TransferHeader::decode(bytes, JAVA_MAX_FRAME_SIZE).is_ok());
        bytes[8..].copy_from_slice(&(at_limit + 1).to_be_bytes());
        assert!(TransferHeader::decode(bytes, JAVA_MAX_FRAME_SIZE).is_err());
        bytes[..8].copy_from_slice(&i64::MIN.to_be_bytes());
        assert_eq!(
            TransferHeader::decode(bytes, JAVA_MAX_FRAME_SIZE),
            Err(WireError::NegativeOffset(i64::MIN))
        );
    }

    #[test]
    fn frame_ending_past_the_largest_offset_is_rejected() {
        let mut bytes = [0u8; 12];
        bytes[..8].copy_from_slice(&(i64::MAX - 4).to_be_bytes());
        bytes[8..].copy_from_slice(&4i32.to_be_bytes());
        assert!(TransferHeader::decode(bytes, JAVA_MAX_FRAME_SIZE).is_ok());
        bytes[8..].copy_from_slice(&5i32.to_be_bytes());
        assert_eq!(
            TransferHeader::decode(bytes, JAVA_MAX_FRAME_SIZE),
            Err(WireError::OffsetOverflow {
                offset: i64::MAX as u64 - 4,
                body_len: 5
            })
        );
        // A heartbeat at the very top is fine: it names no byte.
        bytes[..8].copy_from_slice(&i64::MAX.to_be_bytes());
        bytes[8..].copy_from_slice(&0i32.to_be_bytes());
        assert!(TransferHeader::decode(bytes, JAVA_MAX_FRAME_SIZE).is_ok());
    }

    #[test]
    fn oversize_header_is_rejected_before_body_arrives() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&0i64.to_be_bytes());
        buf.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_transfer(&mut buf, 1 << 20).is_err());
    }
}
