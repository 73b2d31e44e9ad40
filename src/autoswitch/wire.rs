//! The AutoSwitch frames (§5.1, §5.2) as RocketMQ 5.1.1 and later put them on the wire.
//!
//! Every frame starts with an `i32` state, `HAConnectionState`'s ordinal (`HANDSHAKE` = 1,
//! `TRANSFER` = 2); all integers are big-endian (§0.3).
//!
//! * slave → master: the 16-byte **handshake** `[state=1][i16 syncFromLastFile]
//!   [i16 asyncLearner][i64 brokerId]` and the 12-byte **report** `[state=2][i64 maxOffset]`.
//! * master → slave: the **handshake answer**, a 20-byte header `[state=1][i32 bodySize]
//!   [i64 maxOffset][i32 lastEpoch]` and `bodySize / 12` epoch entries `[i32 epoch][i64 start]`;
//!   and the **transfer** frame, a 36-byte header `[state=2][i32 bodySize][i64 offset]
//!   [i32 epoch][i64 epochStart][i64 confirmOffset]` and `bodySize` commit log bytes.
//!
//! 5.0.0 and 5.1.0 spoke other, incompatible handshakes (§5.9); they are not supported.
//! Decoding never panics, validates a header before awaiting its body, and allocates at most
//! what the receiver's frame limit allows.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::epoch::{EpochEntry, EpochList};
use super::error::WireError;
use crate::connection_state::ConnectionState;

/// Length of the slave's handshake (§5.1, 5.1.1+).
pub const HANDSHAKE_LEN: usize = 16;
/// Length of the slave's transfer report (§5.1).
pub const REPORT_LEN: usize = 12;
/// Length of the header of the master's handshake answer (§5.2, 5.1.0+).
pub const HANDSHAKE_HEADER_LEN: usize = 20;
/// Length of the master's transfer header (§5.2).
pub const TRANSFER_HEADER_LEN: usize = 36;
/// Length of one epoch entry in the handshake answer (§5.2).
pub const EPOCH_ENTRY_LEN: usize = 12;
/// The most epoch entries a Java master can send: its handshake body buffer holds 1000 (§5.2).
pub const JAVA_MAX_EPOCH_ENTRIES: usize = 1000;

/// The state ordinal a frame starts with, decoded.
pub fn state_from_ordinal(ordinal: i32) -> Result<ConnectionState, WireError> {
    Ok(match ordinal {
        0 => ConnectionState::Ready,
        1 => ConnectionState::Handshake,
        2 => ConnectionState::Transfer,
        3 => ConnectionState::Suspend,
        4 => ConnectionState::Shutdown,
        other => return Err(WireError::UnknownState(other)),
    })
}

fn ordinal(state: ConnectionState) -> i32 {
    i32::from(state.ordinal())
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(x)
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

fn offset(value: i64) -> Result<u64, WireError> {
    u64::try_from(value).map_err(|_| WireError::NegativeOffset(value))
}

/// An offset where Java sends −1 for "none" (an empty master's heartbeat, a confirm offset not
/// yet computed); any other negative value is an error.
fn optional_offset(value: i64) -> Result<Option<u64>, WireError> {
    match value {
        -1 => Ok(None),
        v => offset(v).map(Some),
    }
}

fn encode_optional(value: Option<u64>) -> i64 {
    value.map_or(-1, |v| {
        debug_assert!(v <= i64::MAX as u64);
        v as i64
    })
}

/// The slave's handshake (§5.1, 5.1.1+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlaveHandshake {
    /// `syncFromLastFile`: an empty slave starts at the master's last segment, not its oldest
    /// retained byte.
    pub sync_from_last_file: bool,
    /// `asyncLearner`: the slave replicates but never joins the sync-state set.
    pub async_learner: bool,
    /// The controller-assigned broker id.
    pub broker_id: i64,
}

impl SlaveHandshake {
    /// Encodes the 16 bytes.
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[..4].copy_from_slice(&ordinal(ConnectionState::Handshake).to_be_bytes());
        out[4..6].copy_from_slice(&i16::from(self.sync_from_last_file).to_be_bytes());
        out[6..8].copy_from_slice(&i16::from(self.async_learner).to_be_bytes());
        out[8..].copy_from_slice(&self.broker_id.to_be_bytes());
        out
    }

    /// Decodes the 16 bytes after the state. A flag is true only if it is exactly 1, as in
    /// Java's master.
    fn decode(b: &[u8; HANDSHAKE_LEN]) -> Self {
        SlaveHandshake {
            sync_from_last_file: be_i16(b, 4) == 1,
            async_learner: be_i16(b, 6) == 1,
            broker_id: be_i64(b, 8),
        }
    }
}

/// Encodes the slave's 12-byte report of its max offset (§5.1). The state is always
/// `TRANSFER`, as since 5.1.1 (#6306).
pub fn encode_report(max_offset: u64) -> [u8; REPORT_LEN] {
    debug_assert!(max_offset <= i64::MAX as u64);
    let mut out = [0u8; REPORT_LEN];
    out[..4].copy_from_slice(&ordinal(ConnectionState::Transfer).to_be_bytes());
    out[4..].copy_from_slice(&(max_offset as i64).to_be_bytes());
    out
}

/// A frame from the slave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlaveFrame {
    /// The handshake that opens a connection.
    Handshake(SlaveHandshake),
    /// A report: the slave's log ends at this offset.
    Report(u64),
}

/// Incremental decoder of the slave → master stream, holding at most 15 bytes between calls.
///
/// Unlike Java's master, which decides after 12 bytes and would read a handshake split after
/// its 12th byte from stale buffer bytes (§5.1), it waits for all 16 bytes of a handshake.
#[derive(Debug, Clone, Default)]
pub struct SlaveFrameDecoder {
    partial: [u8; HANDSHAKE_LEN],
    len: usize,
}

impl SlaveFrameDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of an incomplete frame held from earlier input.
    pub fn pending_len(&self) -> usize {
        self.len
    }

    /// Takes bytes from the front of `input` and returns the next complete frame, or `None`
    /// once `input` is used up without completing one.
    pub fn next_frame(&mut self, input: &mut &[u8]) -> Result<Option<SlaveFrame>, WireError> {
        loop {
            let need = if self.len < 4 {
                4
            } else {
                match state_from_ordinal(be_i32(&self.partial, 0))? {
                    ConnectionState::Handshake => HANDSHAKE_LEN,
                    ConnectionState::Transfer => REPORT_LEN,
                    other => return Err(WireError::IllegalState(other)),
                }
            };
            if self.len == need {
                self.len = 0;
                return Ok(Some(if need == HANDSHAKE_LEN {
                    SlaveFrame::Handshake(SlaveHandshake::decode(&self.partial))
                } else {
                    SlaveFrame::Report(offset(be_i64(&self.partial, 4))?)
                }));
            }
            if input.is_empty() {
                return Ok(None);
            }
            let take = (need - self.len).min(input.len());
            self.partial[self.len..self.len + take].copy_from_slice(&input[..take]);
            self.len += take;
            *input = &input[take..];
        }
    }
}

/// The master's answer to a handshake (§5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterHandshake {
    /// The master's max offset (its last epoch ends here).
    pub max_offset: u64,
    /// The master's epoch history.
    pub epochs: EpochList,
}

impl MasterHandshake {
    /// The header and the entries in one buffer, to be written in one piece: a Java slave that
    /// reads the header alone resends its handshake and then drops the connection (§5.2).
    pub fn encode(&self) -> Bytes {
        let entries = self.epochs.entries();
        let mut out =
            BytesMut::with_capacity(HANDSHAKE_HEADER_LEN + EPOCH_ENTRY_LEN * entries.len());
        out.put_i32(ordinal(ConnectionState::Handshake));
        debug_assert!(entries.len() * EPOCH_ENTRY_LEN <= i32::MAX as usize);
        out.put_i32((entries.len() * EPOCH_ENTRY_LEN) as i32);
        out.put_i64(encode_optional(Some(self.max_offset)));
        out.put_i32(self.epochs.last_epoch());
        for entry in entries {
            out.put_i32(entry.epoch);
            out.put_i64(encode_optional(Some(entry.start)));
        }
        out.freeze()
    }
}

/// The master's 36-byte transfer header (§5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransferHeader {
    /// Body bytes that follow; 0 for a heartbeat.
    pub body_len: u32,
    /// Offset of the first body byte, or for a heartbeat the next offset to be sent; `None` is
    /// the −1 of an empty master's heartbeat.
    pub offset: Option<u64>,
    /// The epoch the frame is labelled with.
    pub epoch: i32,
    /// Where that epoch starts.
    pub epoch_start: u64,
    /// The master's confirm offset; `None` is the −1 of a master that has not computed one.
    pub confirm_offset: Option<u64>,
}

impl TransferHeader {
    /// Encodes the 36 bytes.
    pub fn encode(&self) -> [u8; TRANSFER_HEADER_LEN] {
        debug_assert!(self.body_len <= i32::MAX as u32);
        let mut out = [0u8; TRANSFER_HEADER_LEN];
        let mut w = &mut out[..];
        w.put_i32(ordinal(ConnectionState::Transfer));
        w.put_i32(self.body_len as i32);
        w.put_i64(encode_optional(self.offset));
        w.put_i32(self.epoch);
        w.put_i64(encode_optional(Some(self.epoch_start)));
        w.put_i64(encode_optional(self.confirm_offset));
        out
    }

    /// Header plus body length.
    pub fn frame_len(&self) -> usize {
        TRANSFER_HEADER_LEN + self.body_len as usize
    }
}

/// A complete frame from the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterFrame {
    /// The handshake answer.
    Handshake(MasterHandshake),
    /// A transfer frame; the body shares the input buffer's memory.
    Transfer {
        /// The header.
        header: TransferHeader,
        /// The body (empty for a heartbeat).
        body: Bytes,
    },
}

/// Splits one complete master frame off the front of `buf`, zero-copy for transfer bodies.
///
/// Returns `Ok(None)` and leaves `buf` untouched while the frame is incomplete. The header is
/// validated as soon as it is complete: a negative size, a frame above `max_frame_size`
/// (header and body) or a ragged handshake body is an error before any body byte is awaited.
pub fn decode_master_frame(
    buf: &mut BytesMut,
    max_frame_size: u32,
) -> Result<Option<MasterFrame>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let state = state_from_ordinal(be_i32(buf, 0))?;
    let header_len = match state {
        ConnectionState::Handshake => HANDSHAKE_HEADER_LEN,
        ConnectionState::Transfer => TRANSFER_HEADER_LEN,
        other => return Err(WireError::IllegalState(other)),
    };
    if buf.len() < header_len {
        return Ok(None);
    }
    let size = be_i32(buf, 4);
    let body_len = u32::try_from(size).map_err(|_| WireError::NegativeBodySize(size))?;
    let frame_len = header_len as u64 + u64::from(body_len);
    if frame_len > u64::from(max_frame_size) {
        return Err(WireError::FrameTooLarge {
            size: frame_len,
            max: u64::from(max_frame_size),
        });
    }
    if state == ConnectionState::Handshake {
        if !(body_len as usize).is_multiple_of(EPOCH_ENTRY_LEN) {
            return Err(WireError::RaggedEpochEntries(body_len));
        }
        let max_offset = offset(be_i64(buf, 8))?;
        if (buf.len() as u64) < frame_len {
            return Ok(None);
        }
        // The header's last epoch is redundant with the entries; Java's slave ignores it too.
        let frame = buf.split_to(frame_len as usize);
        let mut epochs = EpochList::new();
        for raw in frame[HANDSHAKE_HEADER_LEN..].chunks_exact(EPOCH_ENTRY_LEN) {
            let entry = EpochEntry::new(be_i32(raw, 0), offset(be_i64(raw, 4))?);
            epochs
                .append(entry)
                .map_err(|_| WireError::EpochEntriesOutOfOrder {
                    epoch: entry.epoch,
                    start: entry.start,
                })?;
        }
        return Ok(Some(MasterFrame::Handshake(MasterHandshake {
            max_offset,
            epochs,
        })));
    }
    let header = TransferHeader {
        body_len,
        offset: optional_offset(be_i64(buf, 8))?,
        epoch: be_i32(buf, 16),
        epoch_start: offset(be_i64(buf, 20))?,
        confirm_offset: optional_offset(be_i64(buf, 28))?,
    };
    match header.offset {
        None if body_len > 0 => return Err(WireError::DataWithoutOffset(body_len)),
        Some(at)
            if at
                .checked_add(u64::from(body_len))
                .is_none_or(|end| end > i64::MAX as u64) =>
        {
            return Err(WireError::OffsetOverflow {
                offset: at,
                body_len,
            })
        }
        _ => {}
    }
    if (buf.len() as u64) < frame_len {
        return Ok(None);
    }
    buf.advance(TRANSFER_HEADER_LEN);
    let body = buf.split_to(body_len as usize).freeze();
    Ok(Some(MasterFrame::Transfer { header, body }))
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

    fn decode_slave(bytes: &[u8]) -> Result<Vec<SlaveFrame>, WireError> {
        let mut d = SlaveFrameDecoder::new();
        let mut input = bytes;
        let mut out = Vec::new();
        while let Some(frame) = d.next_frame(&mut input)? {
            out.push(frame);
        }
        Ok(out)
    }

    fn epochs(entries: &[(i32, u64)]) -> EpochList {
        EpochList::from_entries(entries.iter().map(|&(e, s)| EpochEntry::new(e, s))).unwrap()
    }

    // §5.3 A1
    #[test]
    fn vector_a1_slave_handshake() {
        let hs = SlaveHandshake {
            sync_from_last_file: false,
            async_learner: false,
            broker_id: 2,
        };
        let wire = hex("00 00 00 01 | 00 00 | 00 00 | 00 00 00 00 00 00 00 02");
        assert_eq!(hs.encode().to_vec(), wire);
        assert_eq!(decode_slave(&wire), Ok(vec![SlaveFrame::Handshake(hs)]));
    }

    // §5.3 A2
    #[test]
    fn vector_a2_slave_handshake_sync_from_last_file() {
        let hs = SlaveHandshake {
            sync_from_last_file: true,
            async_learner: false,
            broker_id: 3,
        };
        let wire = hex("00 00 00 01 | 00 01 | 00 00 | 00 00 00 00 00 00 00 03");
        assert_eq!(hs.encode().to_vec(), wire);
        assert_eq!(decode_slave(&wire), Ok(vec![SlaveFrame::Handshake(hs)]));
    }

    // §5.3 A3
    #[test]
    fn vector_a3_slave_report() {
        let wire = hex("00 00 00 02 | 00 00 00 00 00 00 10 00");
        assert_eq!(encode_report(0x1000).to_vec(), wire);
        assert_eq!(decode_slave(&wire), Ok(vec![SlaveFrame::Report(0x1000)]));
    }

    // §5.3 A4
    #[test]
    fn vector_a4_master_handshake_answer() {
        let hs = MasterHandshake {
            max_offset: 0x2000,
            epochs: epochs(&[(1, 0), (2, 0x1000)]),
        };
        let wire = hex(
            "00 00 00 01 | 00 00 00 18 | 00 00 00 00 00 00 20 00 | 00 00 00 02 |
             00 00 00 01 00 00 00 00 00 00 00 00 | 00 00 00 02 00 00 00 00 00 00 10 00",
        );
        assert_eq!(wire.len(), 44);
        assert_eq!(hs.encode().to_vec(), wire);
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            decode_master_frame(&mut buf, 1 << 22),
            Ok(Some(MasterFrame::Handshake(hs)))
        );
        assert!(buf.is_empty());
    }

    // §5.3 A5
    #[test]
    fn vector_a5_master_transfer_frame() {
        let header = TransferHeader {
            body_len: 4,
            offset: Some(0x1000),
            epoch: 2,
            epoch_start: 0x1000,
            confirm_offset: Some(0x0ff0),
        };
        let wire = hex(
            "00 00 00 02 | 00 00 00 04 | 00 00 00 00 00 00 10 00 | 00 00 00 02 |
             00 00 00 00 00 00 10 00 | 00 00 00 00 00 00 0f f0 | de ad be ef",
        );
        assert_eq!(wire.len(), 40);
        let mut encoded = header.encode().to_vec();
        encoded.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(encoded, wire);
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            decode_master_frame(&mut buf, 1 << 22),
            Ok(Some(MasterFrame::Transfer {
                header,
                body: Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef])
            }))
        );
    }

    // §5.3 A6
    #[test]
    fn vector_a6_master_heartbeat() {
        let header = TransferHeader {
            body_len: 0,
            offset: Some(0x1004),
            epoch: 2,
            epoch_start: 0x1000,
            confirm_offset: Some(0x1004),
        };
        let wire = hex(
            "00 00 00 02 | 00 00 00 00 | 00 00 00 00 00 00 10 04 | 00 00 00 02 |
             00 00 00 00 00 00 10 00 | 00 00 00 00 00 00 10 04",
        );
        assert_eq!(header.encode().to_vec(), wire);
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            decode_master_frame(&mut buf, 1 << 22),
            Ok(Some(MasterFrame::Transfer {
                header,
                body: Bytes::new()
            }))
        );
    }

    // §5.3: the captured answer of an empty master and its heartbeat at offset −1.
    #[test]
    fn captured_empty_master_answer_and_heartbeat() {
        let answer = hex("00000001 0000000c 0000000000000000 00000001 | 00000001 0000000000000000");
        let hs = MasterHandshake {
            max_offset: 0,
            epochs: epochs(&[(1, 0)]),
        };
        assert_eq!(hs.encode().to_vec(), answer);
        let beat =
            hex("00000002 00000000 ffffffffffffffff 00000001 0000000000000000 0000000000000000");
        let header = TransferHeader {
            body_len: 0,
            offset: None,
            epoch: 1,
            epoch_start: 0,
            confirm_offset: Some(0),
        };
        assert_eq!(header.encode().to_vec(), beat);
        let mut buf = BytesMut::from(&beat[..]);
        assert_eq!(
            decode_master_frame(&mut buf, 1 << 22),
            Ok(Some(MasterFrame::Transfer {
                header,
                body: Bytes::new()
            }))
        );
    }

    #[test]
    fn slave_frames_decode_across_any_split() {
        let mut wire = SlaveHandshake {
            sync_from_last_file: false,
            async_learner: true,
            broker_id: -7,
        }
        .encode()
        .to_vec();
        wire.extend_from_slice(&encode_report(5));
        wire.extend_from_slice(&encode_report(9));
        let whole = decode_slave(&wire).unwrap();
        assert_eq!(whole.len(), 3);
        for cut in 0..=wire.len() {
            let mut d = SlaveFrameDecoder::new();
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                let mut input = part;
                while let Some(f) = d.next_frame(&mut input).unwrap() {
                    got.push(f);
                }
                assert!(input.is_empty());
            }
            assert_eq!(got, whole, "split at {cut}");
            assert_eq!(d.pending_len(), 0);
        }
    }

    #[test]
    fn a_handshake_flag_is_true_only_when_it_is_one() {
        let wire = hex("00 00 00 01 | 00 02 | ff ff | 00 00 00 00 00 00 00 02");
        assert_eq!(
            decode_slave(&wire),
            Ok(vec![SlaveFrame::Handshake(SlaveHandshake {
                sync_from_last_file: false,
                async_learner: false,
                broker_id: 2
            })])
        );
    }

    #[test]
    fn slave_stream_rejects_illegal_states_and_negative_reports() {
        assert_eq!(
            decode_slave(&hex("00 00 00 00")),
            Err(WireError::IllegalState(ConnectionState::Ready))
        );
        assert_eq!(
            decode_slave(&hex("00 00 00 04")),
            Err(WireError::IllegalState(ConnectionState::Shutdown))
        );
        assert_eq!(
            decode_slave(&hex("00 00 00 05")),
            Err(WireError::UnknownState(5))
        );
        assert_eq!(
            decode_slave(&hex("00 00 00 02 ff ff ff ff ff ff ff ff")),
            Err(WireError::NegativeOffset(-1))
        );
    }

    #[test]
    fn master_frames_wait_for_all_their_bytes() {
        let mut wire = MasterHandshake {
            max_offset: 10,
            epochs: epochs(&[(1, 0), (3, 4)]),
        }
        .encode()
        .to_vec();
        wire.extend_from_slice(
            &TransferHeader {
                body_len: 3,
                offset: Some(10),
                epoch: 3,
                epoch_start: 4,
                confirm_offset: None,
            }
            .encode(),
        );
        wire.extend_from_slice(b"abc");
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut frames = 0;
            while let Some(_f) = decode_master_frame(&mut buf, 1 << 22).unwrap() {
                frames += 1;
            }
            let expect = if cut >= 44 + 39 {
                2
            } else if cut >= 44 {
                1
            } else {
                0
            };
            assert_eq!(frames, expect, "cut {cut}");
        }
    }

    #[test]
    fn master_headers_are_validated_before_the_body() {
        // Negative size.
        let mut buf = BytesMut::from(
            &hex("00000002 ffffffff 0000000000000000 00000001 0000000000000000 0000000000000000")[..],
        );
        assert_eq!(
            decode_master_frame(&mut buf, 1 << 22),
            Err(WireError::NegativeBodySize(-1))
        );
        // Larger than the limit, with no body byte present yet.
        let mut buf = BytesMut::from(
            &hex("00000002 00400000 0000000000000000 00000001 0000000000000000 0000000000000000")[..],
        );
        assert!(matches!(
            decode_master_frame(&mut buf, 1 << 22),
            Err(WireError::FrameTooLarge { size, .. }) if size == (1 << 22) + 36
        ));
        // A handshake body that is not whole entries.
        let mut buf = BytesMut::from(&hex("00000001 0000000d 0000000000000000 00000001")[..]);
        assert_eq!(
            decode_master_frame(&mut buf, 1 << 22),
            Err(WireError::RaggedEpochEntries(13))
        );
        // Data without an offset.
        let mut buf = BytesMut::from(
            &hex("00000002 00000001 ffffffffffffffff 00000001 0000000000000000 0000000000000000")[..],
        );
        assert_eq!(
            decode_master_frame(&mut buf, 1 << 22),
            Err(WireError::DataWithoutOffset(1))
        );
        // Other negative offsets.
        let mut buf = BytesMut::from(
            &hex("00000002 00000000 fffffffffffffffe 00000001 0000000000000000 0000000000000000")[..],
        );
        assert_eq!(
            decode_master_frame(&mut buf, 1 << 22),
            Err(WireError::NegativeOffset(-2))
        );
        // A body that would end past i64::MAX.
        let mut buf = BytesMut::from(
            &hex("00000002 00000002 7fffffffffffffff 00000001 0000000000000000 0000000000000000")[..],
        );
        assert!(matches!(
            decode_master_frame(&mut buf, 1 << 22),
            Err(WireError::OffsetOverflow { .. })
        ));
        // Illegal and unknown states.
        let mut buf = BytesMut::from(&hex("00000003")[..]);
        assert_eq!(
            decode_master_frame(&mut buf, 1 << 22),
            Err(WireError::IllegalState(ConnectionState::Suspend))
        );
        let mut buf = BytesMut::from(&hex("80000000")[..]);
        assert_eq!(
            decode_master_frame(&mut buf, 1 << 22),
            Err(WireError::UnknownState(i32::MIN))
        );
    }

    #[test]
    fn out_of_order_epoch_entries_are_refused() {
        let wire = hex("00000001 00000018 0000000000002000 00000002 |
             00000002 0000000000000000 | 00000001 0000000000001000");
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            decode_master_frame(&mut buf, 1 << 22),
            Err(WireError::EpochEntriesOutOfOrder {
                epoch: 1,
                start: 0x1000
            })
        );
    }
}
