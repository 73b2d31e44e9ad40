//! `wire_decode`: the frame codecs alone, against a byte-level reference and with round trips.
//!
//! The input is a program of operations, each taking its operands from the following bytes:
//! single reports and headers decoded and re-encoded, a report stream and a transfer stream fed
//! in arbitrary splits. Properties (§8 invariants 1-4):
//! * decoding never panics, and what decodes re-encodes to the same bytes;
//! * `ReportDecoder` yields exactly the last complete 8-byte value of each feed, keeps
//!   `total % 8` bytes pending, and rejects negative values;
//! * `TransferHeader::decode` accepts exactly the headers with a non-negative offset and size
//!   and `12 + size <= max_frame_size` whose end fits an `i64`; `peek` agrees with it;
//! * `decode_transfer` never consumes a partial frame or anything on error, consumes exactly one
//!   frame otherwise, never grows the buffer, and any split of a stream yields the same frames
//!   as the whole stream at once.

use bytes::BytesMut;
use rocketmq_ha::wire::{
    decode_report, decode_transfer, encode_report, ReportDecoder, TransferHeader,
    JAVA_MAX_FRAME_SIZE, REPORT_LEN, TRANSFER_HEADER_LEN,
};
use rocketmq_ha::WireError;

use super::input::Input;

/// Runs one `wire_decode` program; panics on a violated property.
pub fn wire_decode(data: &[u8]) {
    let mut input = Input::new(data);
    let max_frame = frame_limit(&mut input);
    let mut reports = ReportStream::default();
    let mut transfers = TransferStream::new(max_frame);
    while !input.is_empty() {
        match input.u8() % 6 {
            0 => check_header(input.take(TRANSFER_HEADER_LEN), max_frame),
            1 => check_report(input.take(REPORT_LEN)),
            2 => reports.feed(input.bytes(40)),
            3 => transfers.feed(input.bytes(64)),
            4 => {
                // A well-formed frame, so that long valid streams are easy to reach.
                let offset = input.u64() & i64::MAX as u64;
                let body = input.bytes(48);
                let header = TransferHeader::new(offset, body.len() as u32);
                let mut frame = header.encode().to_vec();
                frame.extend_from_slice(body);
                let split = usize::from(input.u8()) % (frame.len() + 1);
                transfers.feed(&frame[..split]);
                transfers.feed(&frame[split..]);
            }
            _ => {
                transfers.finish();
                reports = ReportStream::default();
            }
        }
    }
    transfers.finish();
}

/// The receiver's frame limit: small ones make "too large" reachable, the Java one is the
/// default, and `u32::MAX` checks the arithmetic at the top of the range.
fn frame_limit(input: &mut Input) -> u32 {
    match input.u8() % 4 {
        0 => TRANSFER_HEADER_LEN as u32 + input.small(0, 64) as u32,
        1 => JAVA_MAX_FRAME_SIZE,
        2 => u32::MAX,
        _ => input.u32(),
    }
}

fn check_report(bytes: &[u8]) {
    let mut raw = [0u8; REPORT_LEN];
    raw[..bytes.len()].copy_from_slice(bytes);
    let signed = i64::from_be_bytes(raw);
    match decode_report(raw) {
        Ok(value) => {
            assert!(signed >= 0, "negative report {signed} decoded as {value}");
            assert_eq!(value, signed as u64);
            assert_eq!(encode_report(value), raw, "report round trip");
        }
        Err(e) => {
            assert!(signed < 0, "valid report {signed} rejected: {e}");
            assert_eq!(e, WireError::NegativeOffset(signed));
        }
    }
}

/// The reference header rule, written independently of the codec.
fn reference_header(raw: &[u8], max_frame: u32) -> Result<(u64, u32), WireError> {
    let offset = raw[..8]
        .iter()
        .fold(0u64, |acc, &b| acc << 8 | u64::from(b));
    let size = raw[8..12]
        .iter()
        .fold(0u32, |acc, &b| acc << 8 | u32::from(b));
    if offset >> 63 == 1 {
        return Err(WireError::NegativeOffset(offset as i64));
    }
    if size >> 31 == 1 {
        return Err(WireError::NegativeBodySize(size as i32));
    }
    if 12 + u64::from(size) > u64::from(max_frame) {
        return Err(WireError::FrameTooLarge {
            size: 12 + u64::from(size),
            max: u64::from(max_frame),
        });
    }
    if offset + u64::from(size) > i64::MAX as u64 {
        return Err(WireError::OffsetOverflow {
            offset,
            body_len: size,
        });
    }
    Ok((offset, size))
}

fn check_header(bytes: &[u8], max_frame: u32) {
    let mut raw = [0u8; TRANSFER_HEADER_LEN];
    raw[..bytes.len()].copy_from_slice(bytes);
    let decoded = TransferHeader::decode(raw, max_frame);
    let expected = reference_header(&raw, max_frame);
    match (&decoded, &expected) {
        (Ok(h), Ok((offset, size))) => {
            assert_eq!((h.offset, h.body_len), (*offset, *size));
            assert_eq!(h.encode(), raw, "header round trip");
            assert_eq!(h.frame_len(), TRANSFER_HEADER_LEN + *size as usize);
            assert_eq!(h.end_offset(), offset + u64::from(*size));
            assert!(h.frame_len() as u64 <= u64::from(max_frame));
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("decode {decoded:?} but the reference says {expected:?} for {raw:02x?}"),
    }
    // `peek` is `decode` on the first 12 bytes, and `None` below 12.
    for len in [bytes.len(), TRANSFER_HEADER_LEN] {
        let peeked = TransferHeader::peek(&raw[..len], max_frame);
        if len < TRANSFER_HEADER_LEN {
            assert_eq!(peeked, Ok(None));
        } else {
            assert_eq!(peeked, decoded.map(Some));
        }
    }
}

/// A report stream: the decoder against a model that keeps every byte.
#[derive(Default)]
struct ReportStream {
    decoder: ReportDecoder,
    stream: Vec<u8>,
    failed: bool,
}

impl ReportStream {
    fn feed(&mut self, chunk: &[u8]) {
        if self.failed {
            // After an error the decoder's state is unspecified: the connection is closed.
            *self = ReportStream::default();
        }
        let before = self.stream.len() / REPORT_LEN;
        self.stream.extend_from_slice(chunk);
        let after = self.stream.len() / REPORT_LEN;
        let expected = (after > before).then(|| {
            let at = (after - 1) * REPORT_LEN;
            let mut raw = [0u8; REPORT_LEN];
            raw.copy_from_slice(&self.stream[at..at + REPORT_LEN]);
            i64::from_be_bytes(raw)
        });
        let got = self.decoder.feed(chunk);
        match (got, expected) {
            (Ok(None), None) => {}
            (Ok(Some(v)), Some(e)) if e >= 0 => assert_eq!(v, e as u64, "last complete value"),
            (Err(WireError::NegativeOffset(v)), Some(e)) if e < 0 => {
                assert_eq!(v, e);
                self.failed = true;
                return;
            }
            (got, expected) => panic!("report decoder gave {got:?}, model {expected:?}"),
        }
        assert_eq!(
            self.decoder.pending_len(),
            self.stream.len() % REPORT_LEN,
            "pending bytes"
        );
    }
}

/// A transfer stream fed in pieces, against a reference and against one-shot decoding.
struct TransferStream {
    max_frame: u32,
    buf: BytesMut,
    /// Every byte fed since the stream began.
    whole: Vec<u8>,
    /// Frames decoded so far: (offset, body).
    frames: Vec<(u64, Vec<u8>)>,
    error: Option<WireError>,
}

impl TransferStream {
    fn new(max_frame: u32) -> Self {
        TransferStream {
            max_frame,
            buf: BytesMut::new(),
            whole: Vec::new(),
            frames: Vec::new(),
            error: None,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        if self.error.is_some() {
            return;
        }
        self.whole.extend_from_slice(chunk);
        self.buf.extend_from_slice(chunk);
        loop {
            let before = self.buf.clone();
            let capacity = self.buf.capacity();
            let result = decode_transfer(&mut self.buf, self.max_frame);
            assert!(
                self.buf.capacity() <= capacity,
                "decoding grew the buffer from {capacity} to {}",
                self.buf.capacity()
            );
            if before.len() < TRANSFER_HEADER_LEN {
                assert!(
                    matches!(result, Ok(None)),
                    "{result:?} from a partial header"
                );
                assert_eq!(self.buf, before, "a partial header is not consumed");
                return;
            }
            let expected = reference_header(&before[..TRANSFER_HEADER_LEN], self.max_frame);
            match result {
                Ok(None) => {
                    assert_eq!(self.buf, before, "an incomplete frame is not consumed");
                    let (_, size) = expected.expect("a valid header");
                    assert!(before.len() < TRANSFER_HEADER_LEN + size as usize);
                    return;
                }
                Ok(Some(frame)) => {
                    let (offset, size) = expected.expect("only valid headers decode");
                    let len = TRANSFER_HEADER_LEN + size as usize;
                    assert_eq!((frame.header.offset, frame.header.body_len), (offset, size));
                    assert_eq!(&frame.body[..], &before[TRANSFER_HEADER_LEN..len]);
                    assert_eq!(&self.buf[..], &before[len..], "exactly one frame consumed");
                    self.frames.push((offset, frame.body.to_vec()));
                }
                Err(e) => {
                    assert_eq!(Err(e), expected, "error matches the reference");
                    assert_eq!(self.buf, before, "nothing consumed on error");
                    self.error = Some(e);
                    return;
                }
            }
        }
    }

    /// Ends the stream: the whole stream decoded at once gives the same frames and error.
    fn finish(&mut self) {
        let mut buf = BytesMut::from(&self.whole[..]);
        let mut frames = Vec::new();
        let error = loop {
            match decode_transfer(&mut buf, self.max_frame) {
                Ok(Some(f)) => frames.push((f.header.offset, f.body.to_vec())),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        assert_eq!(frames, self.frames, "chunking changed the frames");
        assert_eq!(error, self.error, "chunking changed the error");
        assert_eq!(buf, self.buf, "chunking changed what is left");
        *self = TransferStream::new(self.max_frame);
    }
}
