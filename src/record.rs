//! RocketMQ's CommitLog message records: decoding, walking a segment's bytes, and encoding.
//!
//! Replication itself never looks inside the log: it copies bytes. But a store that a RocketMQ
//! broker wrote is preallocated (every segment file is the full segment size, zeros after the
//! last message), so its end cannot be taken from file lengths; it is where the records stop,
//! and finding it means parsing them. This module does that without any I/O, on byte slices,
//! so it can be fuzzed and used by any store.
//!
//! # Format (all integers big-endian)
//! A record is `TOTALSIZE i32, MAGICCODE i32, BODYCRC i32, QUEUEID i32, FLAG i32,
//! QUEUEOFFSET i64, PHYSICALOFFSET i64, SYSFLAG i32, BORNTIMESTAMP i64, BORNHOST (8 or 20),
//! STORETIMESTAMP i64, STOREHOST (8 or 20), RECONSUMETIMES i32, PREPAREDTXOFFSET i64,
//! BODYLEN i32, BODY, TOPICLEN (i8 in v1, i16 in v2), TOPIC, PROPLEN i16, PROPERTIES`.
//! SYSFLAG bit `0x10` makes BORNHOST an IPv6 address (20 bytes), bit `0x20` STOREHOST.
//! BODYCRC is CRC-32 (zlib's) of the body with the top bit cleared.
//!
//! A segment that has no room for the next record ends with a *blank* record: its size (the
//! rest of the segment) and [`BLANK_MAGIC`]; the bytes after those 8 are not data and are
//! never read. A segment's unwritten space is zeros.
//!
//! # Walking
//! [`Walker`] reads records front to back from one segment's bytes and stops where RocketMQ's
//! recovery would: at a blank record (the segment is complete), at zeros (the end of data), at
//! the end of the bytes, or at the first record that fails a check ([`RecordError`] says where
//! and why). The checks are RocketMQ's (magic, field lengths adding up to TOTALSIZE, body CRC)
//! plus bounds on every field, so no input can make it read out of the slice or panic.
//!
//! What the checks cannot see: the CRC covers only the body, so a torn write whose missing
//! tail reads as zeros (a preallocated file) is found if it cuts the record before the end of
//! its body, but one that zeroes only topic or properties bytes passes, in RocketMQ as here.

use std::fmt;
// Addresses as plain data (`core::net`): the core opens no sockets.
use core::net::{IpAddr, SocketAddr};

/// The magic code of a v1 message record (RocketMQ 4.x and 5.x): one-byte topic length.
pub const MESSAGE_MAGIC_V1: u32 = 0xDAA3_20A7;

/// The magic code of a v2 message record (RocketMQ 5.1+, topics over 127 bytes): two-byte
/// topic length.
pub const MESSAGE_MAGIC_V2: u32 = 0xDAA3_20AB;

/// The magic code of the blank record that fills the end of a complete segment.
pub const BLANK_MAGIC: u32 = 0xCBD4_3194;

/// The size of a blank record's header, and the room RocketMQ always leaves after a record so
/// that a blank fits (`END_FILE_MIN_BLANK_LENGTH`).
pub const BLANK_LEN: u64 = 8;

/// SYSFLAG bit: BORNHOST is an IPv6 address and port (20 bytes instead of 8).
pub const SYSFLAG_BORNHOST_V6: i32 = 0x10;

/// SYSFLAG bit: STOREHOSTADDRESS is an IPv6 address and port (20 bytes instead of 8).
pub const SYSFLAG_STOREHOST_V6: i32 = 0x20;

/// The largest properties length the i16 field carries.
pub const MAX_PROPERTIES_LEN: usize = i16::MAX as usize;

/// The smallest record: v1, IPv4 hosts, empty body, topic and properties.
pub const MIN_RECORD_LEN: u64 = 91;

/// CRC-32 (zlib, IEEE 802.3, reflected) lookup tables for slicing by 8, built at compile time:
/// `CRC_TABLES[0]` is the classic byte table, and `CRC_TABLES[k][b]` is the CRC of byte `b`
/// followed by `k` zero bytes, so eight bytes are folded in with eight independent lookups.
/// A verifying slave computes this over every body byte it receives; byte at a time it cost
/// about 1.7 s of CPU per GiB (`bench --records`), slicing by 8 several times less.
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        tables[0][i] = c;
        i += 1;
    }
    let mut t = 1;
    while t < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[t - 1][i];
            tables[t][i] = (prev >> 8) ^ tables[0][(prev & 0xFF) as usize];
            i += 1;
        }
        t += 1;
    }
    tables
};

/// The body CRC as RocketMQ stores it: zlib's CRC-32 of `bytes` with the top bit cleared
/// (Java keeps it in an `int` and masks it to stay non-negative). 0 for an empty body.
pub fn body_crc(bytes: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut c = 0xFFFF_FFFFu32;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let lo = c ^ u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let hi = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        c = t[7][(lo & 0xFF) as usize]
            ^ t[6][((lo >> 8) & 0xFF) as usize]
            ^ t[5][((lo >> 16) & 0xFF) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xFF) as usize]
            ^ t[2][((hi >> 8) & 0xFF) as usize]
            ^ t[1][((hi >> 16) & 0xFF) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        c = t[0][((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    (c ^ 0xFFFF_FFFF) & 0x7FFF_FFFF
}

/// Which message layout a record has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// [`MESSAGE_MAGIC_V1`]: topic length in one signed byte (at most 127).
    V1,
    /// [`MESSAGE_MAGIC_V2`]: topic length in two signed bytes (at most 32 767).
    V2,
}

impl Version {
    /// The magic code that marks this layout.
    pub fn magic(self) -> u32 {
        match self {
            Version::V1 => MESSAGE_MAGIC_V1,
            Version::V2 => MESSAGE_MAGIC_V2,
        }
    }

    fn topic_len_size(self) -> usize {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }

    fn max_topic_len(self) -> usize {
        match self {
            Version::V1 => i8::MAX as usize,
            Version::V2 => i16::MAX as usize,
        }
    }
}

/// One decoded message record, borrowing its variable fields from the segment bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// The layout (magic code).
    pub version: Version,
    /// TOTALSIZE: the record's length in bytes, this field included.
    pub total_size: u32,
    /// BODYCRC as stored.
    pub body_crc: u32,
    /// QUEUEID.
    pub queue_id: i32,
    /// FLAG, the producer's opaque flag.
    pub flag: i32,
    /// QUEUEOFFSET: the message's index in its queue.
    pub queue_offset: i64,
    /// PHYSICALOFFSET as stored: the writer's offset of the record (not checked, as in
    /// RocketMQ).
    pub physical_offset: i64,
    /// SYSFLAG.
    pub sys_flag: i32,
    /// BORNTIMESTAMP, ms.
    pub born_timestamp: i64,
    /// BORNHOST: address bytes then a 4-byte port (8 or 20 bytes).
    pub born_host: &'a [u8],
    /// STORETIMESTAMP, ms.
    pub store_timestamp: i64,
    /// STOREHOSTADDRESS: address bytes then a 4-byte port (8 or 20 bytes).
    pub store_host: &'a [u8],
    /// RECONSUMETIMES.
    pub reconsume_times: i32,
    /// PREPARED TRANSACTION OFFSET.
    pub prepared_transaction_offset: i64,
    /// The body, as stored (compressed if SYSFLAG says so).
    pub body: &'a [u8],
    /// The topic's bytes.
    pub topic: &'a [u8],
    /// The properties string's bytes.
    pub properties: &'a [u8],
}

/// What one position of a segment holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A message record.
    Message(Record<'a>),
    /// A blank record: the segment is complete from here on. `declared_len` is its TOTALSIZE,
    /// which RocketMQ never checks, so neither does this.
    Blank {
        /// The TOTALSIZE field as stored.
        declared_len: u32,
    },
}

/// Why the bytes at [`RecordError::offset`] are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordFault {
    /// Fewer bytes are left than the header (8 bytes) or the declared TOTALSIZE needs: a torn
    /// write, or a record that would run past the segment.
    Truncated {
        /// Bytes the record needs.
        needed: u64,
        /// Bytes left in the segment.
        available: u64,
    },
    /// MAGICCODE is none of the three known codes.
    BadMagic(u32),
    /// TOTALSIZE is below the smallest record or above what the segment can hold.
    BadTotalSize(i32),
    /// A length field is negative.
    NegativeLength {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: i32,
    },
    /// A field reaches past TOTALSIZE.
    FieldOverrun {
        /// Which field.
        field: &'static str,
    },
    /// The fields end before TOTALSIZE.
    LengthMismatch {
        /// TOTALSIZE.
        declared: u32,
        /// Where the last field ends.
        fields_end: u32,
    },
    /// BODYCRC differs from the CRC of the body.
    BodyCrc {
        /// BODYCRC as stored.
        stored: u32,
        /// What the body gives.
        computed: u32,
    },
}

/// A record that fails a check: where (log offset) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad record at offset {offset}: {fault}")]
pub struct RecordError {
    /// The log offset of the record's first byte.
    pub offset: u64,
    /// What is wrong with it.
    pub fault: RecordFault,
}

impl fmt::Display for RecordFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordFault::Truncated { needed, available } => write!(
                f,
                "truncated: needs {needed} bytes, {available} left in the segment"
            ),
            RecordFault::BadMagic(m) => write!(f, "unknown magic code {m:#010x}"),
            RecordFault::BadTotalSize(s) => write!(f, "impossible total size {s}"),
            RecordFault::NegativeLength { field, value } => {
                write!(f, "negative {field} length {value}")
            }
            RecordFault::FieldOverrun { field } => {
                write!(f, "{field} runs past the record's total size")
            }
            RecordFault::LengthMismatch {
                declared,
                fields_end,
            } => write!(
                f,
                "fields end at {fields_end} but the total size is {declared}"
            ),
            RecordFault::BodyCrc { stored, computed } => write!(
                f,
                "body CRC {stored:#010x} stored, {computed:#010x} computed"
            ),
        }
    }
}

/// A bounds-checked big-endian reader over one record's bytes.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], RecordFault> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(RecordFault::FieldOverrun { field })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], RecordFault> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, RecordFault> {
        Ok(i16::from_be_bytes(self.array(field)?))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, RecordFault> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, RecordFault> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    /// A length field's value: never negative.
    fn len(value: i32, field: &'static str) -> Result<usize, RecordFault> {
        usize::try_from(value).map_err(|_| RecordFault::NegativeLength { field, value })
    }
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let four: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(four))
}

/// Decodes the record at the start of `bytes` (the rest of a segment from a record boundary),
/// whose first byte is at log offset `offset` (only used to say where an error is).
///
/// With `check_crc` the body CRC is verified for non-empty bodies, as RocketMQ's recovery does
/// (`checkCRCOnRecover`, on by default). Zeros decode as [`RecordFault::BadMagic`] with magic 0;
/// [`Walker`] tells them apart as the end of data.
pub fn decode(bytes: &[u8], offset: u64, check_crc: bool) -> Result<Entry<'_>, RecordError> {
    decode_inner(bytes, check_crc).map_err(|fault| RecordError { offset, fault })
}

fn decode_inner(bytes: &[u8], check_crc: bool) -> Result<Entry<'_>, RecordFault> {
    let available = bytes.len() as u64;
    let (Some(size), Some(magic)) = (be_u32(bytes, 0), be_u32(bytes, 4)) else {
        return Err(RecordFault::Truncated {
            needed: BLANK_LEN,
            available,
        });
    };
    let version = match magic {
        BLANK_MAGIC => return Ok(Entry::Blank { declared_len: size }),
        MESSAGE_MAGIC_V1 => Version::V1,
        MESSAGE_MAGIC_V2 => Version::V2,
        other => return Err(RecordFault::BadMagic(other)),
    };
    let total = size as i32;
    if total < MIN_RECORD_LEN as i32 {
        return Err(RecordFault::BadTotalSize(total));
    }
    if u64::from(size) > available {
        return Err(RecordFault::Truncated {
            needed: u64::from(size),
            available,
        });
    }
    // Within bounds: size <= bytes.len().
    let mut f = Fields {
        bytes: &bytes[..size as usize],
        at: 8,
    };
    let stored_crc = f.i32("body CRC")? as u32;
    let queue_id = f.i32("queue id")?;
    let flag = f.i32("flag")?;
    let queue_offset = f.i64("queue offset")?;
    let physical_offset = f.i64("physical offset")?;
    let sys_flag = f.i32("sys flag")?;
    let born_timestamp = f.i64("born timestamp")?;
    let born_host = f.take(host_len(sys_flag & SYSFLAG_BORNHOST_V6 != 0), "born host")?;
    let store_timestamp = f.i64("store timestamp")?;
    let store_host = f.take(host_len(sys_flag & SYSFLAG_STOREHOST_V6 != 0), "store host")?;
    let reconsume_times = f.i32("reconsume times")?;
    let prepared_transaction_offset = f.i64("prepared transaction offset")?;
    let body_len = Fields::len(f.i32("body length")?, "body")?;
    let body = f.take(body_len, "body")?;
    let topic_len = match version {
        Version::V1 => i32::from(f.array::<1>("topic length")?[0] as i8),
        Version::V2 => i32::from(f.i16("topic length")?),
    };
    let topic = f.take(Fields::len(topic_len, "topic")?, "topic")?;
    let props_len = Fields::len(i32::from(f.i16("properties length")?), "properties")?;
    let properties = f.take(props_len, "properties")?;
    if f.at != size as usize {
        return Err(RecordFault::LengthMismatch {
            declared: size,
            fields_end: f.at as u32,
        });
    }
    if check_crc && !body.is_empty() {
        let computed = body_crc(body);
        if computed != stored_crc {
            return Err(RecordFault::BodyCrc {
                stored: stored_crc,
                computed,
            });
        }
    }
    Ok(Entry::Message(Record {
        version,
        total_size: size,
        body_crc: stored_crc,
        queue_id,
        flag,
        queue_offset,
        physical_offset,
        sys_flag,
        born_timestamp,
        born_host,
        store_timestamp,
        store_host,
        reconsume_times,
        prepared_transaction_offset,
        body,
        topic,
        properties,
    }))
}

fn host_len(v6: bool) -> usize {
    if v6 {
        20
    } else {
        8
    }
}

/// Where and why a [`Walker`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkEnd {
    /// The bytes ran out exactly at a record boundary.
    EndOfBytes,
    /// Zeros follow the last record (at least its header, or all that is left): unwritten,
    /// preallocated space, the normal end of a RocketMQ log.
    Zeros,
    /// A blank record: the segment is complete, the walk continues in the next segment. Its
    /// header starts at the walk's end offset.
    Blank,
    /// A record fails a check; everything from it on is not log data (RocketMQ's recovery
    /// truncates here).
    Bad(RecordError),
}

/// Walks the records of one segment's bytes from a record boundary: an iterator over
/// `(offset, record)`, then [`end`](Self::end) says why it stopped and
/// [`offset`](Self::offset) where valid data ends.
#[derive(Debug, Clone)]
pub struct Walker<'a> {
    bytes: &'a [u8],
    base: u64,
    pos: usize,
    check_crc: bool,
    end: Option<WalkEnd>,
}

impl<'a> Walker<'a> {
    /// A walk over `bytes`, whose first byte is at log offset `base` and starts a record (the
    /// start of a segment, or a known record boundary).
    pub fn new(bytes: &'a [u8], base: u64, check_crc: bool) -> Self {
        Walker {
            bytes,
            base,
            pos: 0,
            check_crc,
            end: None,
        }
    }

    /// The log offset after the last valid record so far: once the walk has ended, the end of
    /// valid data (for [`WalkEnd::Blank`], where the blank record starts).
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Why the walk stopped, once it has (`None` while records may follow).
    pub fn end(&self) -> Option<&WalkEnd> {
        self.end.as_ref()
    }

    /// Walks to the end and returns the number of records passed, the end of valid data, and
    /// why it stopped.
    pub fn finish(mut self) -> (u64, u64, WalkEnd) {
        let mut count = 0;
        for _ in self.by_ref() {
            count += 1;
        }
        let end = self.end.take().unwrap_or(WalkEnd::EndOfBytes);
        (count, self.offset(), end)
    }
}

impl<'a> Iterator for Walker<'a> {
    type Item = (u64, Record<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.end.is_some() {
            return None;
        }
        let rest = &self.bytes[self.pos..];
        if rest.is_empty() {
            self.end = Some(WalkEnd::EndOfBytes);
            return None;
        }
        // Zeros in the header (or in all that is left) are unwritten space, not a corrupt
        // record: the way a preallocated RocketMQ segment ends.
        let header = &rest[..rest.len().min(BLANK_LEN as usize)];
        if header.iter().all(|&b| b == 0) {
            self.end = Some(WalkEnd::Zeros);
            return None;
        }
        let offset = self.offset();
        match decode(rest, offset, self.check_crc) {
            Ok(Entry::Message(record)) => {
                // decode checked total_size <= rest.len().
                self.pos += record.total_size as usize;
                Some((offset, record))
            }
            Ok(Entry::Blank { .. }) => {
                self.end = Some(WalkEnd::Blank);
                None
            }
            Err(e) => {
                self.end = Some(WalkEnd::Bad(e));
                None
            }
        }
    }
}

/// A message to encode: every field a producer or the broker sets, with RocketMQ's defaults
/// from [`Message::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic; ASCII in practice (RocketMQ validates names).
    pub topic: Vec<u8>,
    /// The body.
    pub body: Vec<u8>,
    /// The properties string (`name 0x01 value 0x02` pairs).
    pub properties: Vec<u8>,
    /// QUEUEID.
    pub queue_id: i32,
    /// QUEUEOFFSET.
    pub queue_offset: i64,
    /// FLAG.
    pub flag: i32,
    /// SYSFLAG without the host bits, which [`encode`](Self::encode) sets from the addresses.
    pub sys_flag: i32,
    /// BORNTIMESTAMP, ms.
    pub born_timestamp: i64,
    /// The producer's address.
    pub born_host: SocketAddr,
    /// STORETIMESTAMP, ms.
    pub store_timestamp: i64,
    /// The broker's address.
    pub store_host: SocketAddr,
    /// RECONSUMETIMES.
    pub reconsume_times: i32,
    /// PREPARED TRANSACTION OFFSET.
    pub prepared_transaction_offset: i64,
    /// Force the v2 layout even for a short topic (RocketMQ picks v2 only for topics over 127
    /// bytes).
    pub force_v2: bool,
}

/// A message that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The topic is longer than even the v2 layout carries (32 767 bytes).
    #[error("topic of {0} bytes is longer than a record can carry")]
    TopicTooLong(usize),
    /// The properties are longer than 32 767 bytes.
    #[error("properties of {0} bytes are longer than a record can carry")]
    PropertiesTooLong(usize),
    /// The record would be larger than a segment can hold (its size plus a blank record's 8
    /// bytes), or than TOTALSIZE can carry.
    #[error("a record of {len} bytes does not fit a segment of {segment_size} bytes")]
    TooLarge {
        /// The record's size.
        len: u64,
        /// The segment size.
        segment_size: u64,
    },
}

impl Message {
    /// A message with `topic` and `body`, no properties, queue 0, IPv4 loopback hosts and
    /// zero timestamps.
    pub fn new(topic: impl Into<Vec<u8>>, body: impl Into<Vec<u8>>) -> Self {
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        Message {
            topic: topic.into(),
            body: body.into(),
            properties: Vec::new(),
            queue_id: 0,
            queue_offset: 0,
            flag: 0,
            sys_flag: 0,
            born_timestamp: 0,
            born_host: local,
            store_timestamp: 0,
            store_host: local,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            force_v2: false,
        }
    }

    /// The layout the message is encoded in: v1 unless the topic needs two length bytes (as
    /// RocketMQ 5's `autoMessageVersionOnTopicLen`) or `force_v2` is set.
    pub fn version(&self) -> Version {
        if self.force_v2 || self.topic.len() > Version::V1.max_topic_len() {
            Version::V2
        } else {
            Version::V1
        }
    }

    /// The encoded record's length.
    pub fn encoded_len(&self) -> u64 {
        90 + host_len(self.born_host.is_ipv6()) as u64 - 8
            + host_len(self.store_host.is_ipv6()) as u64
            - 8
            + self.body.len() as u64
            + self.version().topic_len_size() as u64
            + self.topic.len() as u64
            + self.properties.len() as u64
    }

    /// Appends the record to `out` as a broker writes it at log offset `physical_offset`
    /// (stored in PHYSICALOFFSET), with the body CRC and the host bits of SYSFLAG computed.
    /// Returns its length.
    pub fn encode(&self, physical_offset: u64, out: &mut Vec<u8>) -> Result<u64, EncodeError> {
        let version = self.version();
        if self.topic.len() > version.max_topic_len() {
            return Err(EncodeError::TopicTooLong(self.topic.len()));
        }
        if self.properties.len() > MAX_PROPERTIES_LEN {
            return Err(EncodeError::PropertiesTooLong(self.properties.len()));
        }
        let len = self.encoded_len();
        let total = i32::try_from(len).map_err(|_| EncodeError::TooLarge {
            len,
            segment_size: i32::MAX as u64,
        })?;
        let mut sys_flag = self.sys_flag & !(SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6);
        if self.born_host.is_ipv6() {
            sys_flag |= SYSFLAG_BORNHOST_V6;
        }
        if self.store_host.is_ipv6() {
            sys_flag |= SYSFLAG_STOREHOST_V6;
        }
        let start = out.len();
        out.reserve(len as usize);
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&version.magic().to_be_bytes());
        out.extend_from_slice(&body_crc(&self.body).to_be_bytes());
        out.extend_from_slice(&self.queue_id.to_be_bytes());
        out.extend_from_slice(&self.flag.to_be_bytes());
        out.extend_from_slice(&self.queue_offset.to_be_bytes());
        out.extend_from_slice(&(physical_offset as i64).to_be_bytes());
        out.extend_from_slice(&sys_flag.to_be_bytes());
        out.extend_from_slice(&self.born_timestamp.to_be_bytes());
        put_host(out, self.born_host);
        out.extend_from_slice(&self.store_timestamp.to_be_bytes());
        put_host(out, self.store_host);
        out.extend_from_slice(&self.reconsume_times.to_be_bytes());
        out.extend_from_slice(&self.prepared_transaction_offset.to_be_bytes());
        // Below i32::MAX: the whole record is.
        out.extend_from_slice(&(self.body.len() as i32).to_be_bytes());
        out.extend_from_slice(&self.body);
        match version {
            Version::V1 => out.push(self.topic.len() as u8),
            Version::V2 => out.extend_from_slice(&(self.topic.len() as u16).to_be_bytes()),
        }
        out.extend_from_slice(&self.topic);
        out.extend_from_slice(&(self.properties.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.properties);
        debug_assert_eq!((out.len() - start) as u64, len);
        Ok(len)
    }
}

fn put_host(out: &mut Vec<u8>, host: SocketAddr) {
    match host.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&i32::from(host.port()).to_be_bytes());
}

/// Appends a blank record header for the `len` bytes left in a segment (`len >= 8`; the rest
/// of those bytes is not written here: they are zeros in a preallocated file, and never read).
pub fn encode_blank(len: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&BLANK_MAGIC.to_be_bytes());
}

/// Lays out messages in a log the way a broker appends them: each record at the log's end,
/// unless fewer than its size plus [`BLANK_LEN`] bytes are left in the segment; then a blank
/// record fills the segment and the message goes at the start of the next one.
#[derive(Debug, Clone)]
pub struct LogWriter {
    segment_size: u64,
    offset: u64,
}

impl LogWriter {
    /// A writer for a log of `segment_size`-byte segments whose end is `offset`.
    pub fn new(segment_size: u64, offset: u64) -> Self {
        LogWriter {
            segment_size,
            offset,
        }
    }

    /// The log's end after what was written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends `message`'s record to `out` (log bytes from the current offset on), with a full
    /// blank record (header and zero filling) first if the segment has no room. Returns the
    /// record's log offset.
    pub fn push(&mut self, message: &Message, out: &mut Vec<u8>) -> Result<u64, EncodeError> {
        let len = message.encoded_len();
        if len + BLANK_LEN > self.segment_size {
            return Err(EncodeError::TooLarge {
                len,
                segment_size: self.segment_size,
            });
        }
        let left = self.segment_size - self.offset % self.segment_size;
        if len + BLANK_LEN > left {
            // `left` is below the segment size, and segments are below 2 GiB in RocketMQ;
            // larger ones (ours allow 64 GiB) cannot declare it, and readers ignore it anyway.
            encode_blank(u32::try_from(left).unwrap_or(u32::MAX), out);
            out.resize(out.len() + (left - BLANK_LEN) as usize, 0);
            self.offset += left;
        }
        let at = self.offset;
        self.offset += message.encode(at, out)?;
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(i: usize) -> Message {
        let mut m = Message::new(format!("topic-{}", i % 7), vec![i as u8; i % 300]);
        m.queue_id = (i % 4) as i32;
        m.queue_offset = i as i64;
        m.store_timestamp = 1_700_000_000_000 + i as i64;
        if i.is_multiple_of(5) {
            m.properties = b"KEYS\x01k\x02TAGS\x01t".to_vec();
        }
        if i.is_multiple_of(11) {
            m.born_host = "[::1]:5000".parse().unwrap();
        }
        if i.is_multiple_of(13) {
            m.force_v2 = true;
        }
        m
    }

    #[test]
    fn the_worked_example_of_the_store_format() {
        let mut m = Message::new("T", "hello");
        m.born_timestamp = 1_700_000_000_000;
        m.born_host = "127.0.0.1:50000".parse().unwrap();
        m.store_timestamp = 1_700_000_000_123;
        m.store_host = "192.168.0.10:10911".parse().unwrap();
        let mut out = Vec::new();
        assert_eq!(m.encode(0, &mut out).unwrap(), 97);
        // The dump in store-format.md §3.8, row by row.
        let expected = concat!(
            "00000061daa320a73610a68600000000",
            "00000000000000000000000000000000",
            "00000000000000000000018bcfe56800",
            "7f0000010000c3500000018bcfe5687b",
            "c0a8000a00002a9f0000000000000000",
            "000000000000000568656c6c6f015400",
            "00",
        );
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
        m.force_v2 = true;
        out.clear();
        assert_eq!(m.encode(0, &mut out).unwrap(), 98);
        assert_eq!(&out[4..8], &[0xda, 0xa3, 0x20, 0xab]);
        assert_eq!(&out[0x5d..], &[0, 1, b'T', 0, 0]);
    }

    #[test]
    fn crc_matches_zlib() {
        assert_eq!(body_crc(b"hello"), 0x3610_A686);
        assert_eq!(body_crc(b""), 0);
        // zlib's crc32("123456789") is 0xCBF43926; the top bit is cleared.
        assert_eq!(body_crc(b"123456789"), 0xCBF4_3926 & 0x7FFF_FFFF);
    }

    #[test]
    fn sliced_crc_equals_the_bitwise_definition_at_every_length_and_alignment() {
        fn bitwise(bytes: &[u8]) -> u32 {
            let mut c = 0xFFFF_FFFFu32;
            for &b in bytes {
                c ^= u32::from(b);
                for _ in 0..8 {
                    c = if c & 1 != 0 {
                        0xEDB8_8320 ^ (c >> 1)
                    } else {
                        c >> 1
                    };
                }
            }
            (c ^ 0xFFFF_FFFF) & 0x7FFF_FFFF
        }
        let data: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..8 {
            for len in 0..(data.len() - start) {
                let bytes = &data[start..start + len];
                assert_eq!(body_crc(bytes), bitwise(bytes), "start {start} len {len}");
            }
        }
    }

    #[test]
    fn encoded_records_walk_back_identically() {
        let mut out = Vec::new();
        let mut writer = LogWriter::new(1 << 20, 0);
        let messages: Vec<Message> = (0..200).map(message).collect();
        let mut offsets = Vec::new();
        for m in &messages {
            offsets.push(writer.push(m, &mut out).unwrap());
        }
        let mut walker = Walker::new(&out, 0, true);
        let mut seen = 0;
        for ((offset, record), (m, &at)) in walker.by_ref().zip(messages.iter().zip(&offsets)) {
            assert_eq!(offset, at);
            assert_eq!(record.physical_offset, at as i64);
            assert_eq!(record.topic, &m.topic[..]);
            assert_eq!(record.body, &m.body[..]);
            assert_eq!(record.properties, &m.properties[..]);
            assert_eq!(record.queue_offset, m.queue_offset);
            assert_eq!(record.version, m.version());
            assert_eq!(record.born_host.len(), host_len(m.born_host.is_ipv6()));
            seen += 1;
        }
        assert_eq!(seen, messages.len());
        assert_eq!(walker.end(), Some(&WalkEnd::EndOfBytes));
        assert_eq!(walker.offset(), out.len() as u64);
    }

    #[test]
    fn a_long_topic_takes_the_v2_layout_and_a_huge_one_is_refused() {
        let m = Message::new(vec![b'a'; 200], "x");
        assert_eq!(m.version(), Version::V2);
        let mut out = Vec::new();
        m.encode(0, &mut out).unwrap();
        let (count, end, how) = Walker::new(&out, 0, true).finish();
        assert_eq!(
            (count, end, how),
            (1, out.len() as u64, WalkEnd::EndOfBytes)
        );
        let huge = Message::new(vec![b'a'; 40_000], "x");
        assert_eq!(
            huge.encode(0, &mut out),
            Err(EncodeError::TopicTooLong(40_000))
        );
    }

    #[test]
    fn a_torn_last_record_ends_the_walk_at_the_previous_one() {
        let mut out = Vec::new();
        let mut writer = LogWriter::new(1 << 20, 0);
        for i in 0..3 {
            writer.push(&message(i + 1), &mut out).unwrap();
        }
        let last = writer.push(&message(40), &mut out).unwrap() as usize;
        // message(40): IPv4 hosts, a 40-byte body, then topic and properties.
        let body_end = last + 88 + 40;
        for cut in last..out.len() {
            // A torn write followed by nothing (a short file) is always found.
            let (count, end, how) = Walker::new(&out[..cut], 0, true).finish();
            assert_eq!((count, end), (3, last as u64), "cut at {cut}");
            if cut == last {
                assert_eq!(how, WalkEnd::EndOfBytes);
            } else {
                // A tear that left only zero bytes (the high bytes of TOTALSIZE) is zeros.
                let only_zeros = out[last..cut].iter().all(|&b| b == 0);
                assert!(
                    matches!(how, WalkEnd::Bad(RecordError { offset, .. }) if offset == last as u64)
                        || (only_zeros && how == WalkEnd::Zeros),
                    "cut at {cut}: {how:?}"
                );
            }
            // Followed by zeros (a preallocated file): found up to the end of the body, which
            // the CRC covers. Zeros in place of the topic or properties still add up and
            // carry no checksum, so RocketMQ's check (and this one) takes such a record.
            let mut zeroed = out[..cut].to_vec();
            zeroed.resize(out.len() + 4096, 0);
            let (count, end, how) = Walker::new(&zeroed, 0, true).finish();
            if cut <= body_end {
                assert_eq!((count, end), (3, last as u64), "cut at {cut}, zeros");
                assert!(
                    how == WalkEnd::Zeros || matches!(how, WalkEnd::Bad(_)),
                    "cut at {cut}: {how:?}"
                );
            } else {
                assert!(count == 3 || count == 4, "cut at {cut}");
            }
        }
    }

    #[test]
    fn a_blank_record_completes_a_segment() {
        let f = 4096u64;
        let mut log = Vec::new();
        let mut writer = LogWriter::new(f, 0);
        let mut offsets = Vec::new();
        for i in 0..80 {
            offsets.push(writer.push(&message(i * 3 + 1), &mut log).unwrap());
        }
        assert!(log.len() as u64 > 2 * f, "the test needs three segments");
        let mut total = 0;
        let mut start = 0u64;
        while start < log.len() as u64 {
            let end = (start + f).min(log.len() as u64);
            let mut walker = Walker::new(&log[start as usize..end as usize], start, true);
            let found: Vec<u64> = walker.by_ref().map(|(at, _)| at).collect();
            for at in &found {
                assert_eq!(offsets[total], *at);
                total += 1;
            }
            if end == start + f {
                assert_eq!(walker.end(), Some(&WalkEnd::Blank));
                // The blank's header, then zeros to the segment end.
                let blank = walker.offset() as usize;
                assert_eq!(be_u32(&log, blank), Some((start + f - blank as u64) as u32));
            }
            start += f;
        }
        assert_eq!(total, offsets.len());
    }

    #[test]
    fn preallocated_zeros_end_the_walk() {
        let mut bytes = Vec::new();
        Message::new("T", "a").encode(0, &mut bytes).unwrap();
        let one = bytes.len() as u64;
        bytes.resize(1 << 16, 0);
        assert_eq!(
            Walker::new(&bytes, 0, true).finish(),
            (1, one, WalkEnd::Zeros)
        );
        // Even fewer zero bytes than a header.
        bytes.truncate(one as usize + 3);
        assert_eq!(
            Walker::new(&bytes, 0, true).finish(),
            (1, one, WalkEnd::Zeros)
        );
        assert_eq!(
            Walker::new(&[0; 100], 77, true).finish(),
            (0, 77, WalkEnd::Zeros)
        );
    }

    #[test]
    fn a_corrupt_body_fails_its_crc_unless_unchecked() {
        let mut bytes = Vec::new();
        let mut writer = LogWriter::new(1 << 20, 1000);
        writer
            .push(&Message::new("T", "first"), &mut bytes)
            .unwrap();
        let second = writer
            .push(&Message::new("T", "second"), &mut bytes)
            .unwrap();
        let body_at = (second - 1000) as usize + 88;
        bytes[body_at] ^= 0x01;
        let (count, end, how) = Walker::new(&bytes, 1000, true).finish();
        assert_eq!((count, end), (1, second));
        let WalkEnd::Bad(e) = how else {
            panic!("{how:?}")
        };
        assert_eq!(e.offset, second);
        assert!(matches!(e.fault, RecordFault::BodyCrc { .. }), "{e}");
        // RocketMQ's reput reads without the check.
        assert_eq!(Walker::new(&bytes, 1000, false).finish().0, 2);
    }

    #[test]
    fn bad_fields_are_named() {
        let mut good = Vec::new();
        Message::new("T", "body").encode(0, &mut good).unwrap();
        let fault = |bytes: &[u8]| decode(bytes, 5, true).unwrap_err().fault;
        let mut b = good.clone();
        b[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        assert_eq!(fault(&b), RecordFault::BadMagic(0x1234_5678));
        let mut b = good.clone();
        b[0..4].copy_from_slice(&10i32.to_be_bytes());
        assert_eq!(fault(&b), RecordFault::BadTotalSize(10));
        let mut b = good.clone();
        b[0..4].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(fault(&b), RecordFault::BadTotalSize(-5));
        let mut b = good.clone();
        b[84..88].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            fault(&b),
            RecordFault::NegativeLength {
                field: "body",
                value: -1
            }
        );
        let mut b = good.clone();
        b[84..88].copy_from_slice(&1000i32.to_be_bytes());
        assert_eq!(fault(&b), RecordFault::FieldOverrun { field: "body" });
        let mut b = good.clone();
        b[92] = 0x80; // topic length -128 in v1
        assert_eq!(
            fault(&b),
            RecordFault::NegativeLength {
                field: "topic",
                value: -128
            }
        );
        // Three spare bytes inside TOTALSIZE.
        let mut b = good.clone();
        b.extend_from_slice(&[0, 0, 0]);
        let size = b.len() as u32;
        b[0..4].copy_from_slice(&size.to_be_bytes());
        assert_eq!(
            fault(&b),
            RecordFault::LengthMismatch {
                declared: size,
                fields_end: size - 3
            }
        );
        assert_eq!(
            fault(&good[..50]),
            RecordFault::Truncated {
                needed: good.len() as u64,
                available: 50
            }
        );
        assert_eq!(decode(&b, 5, true).unwrap_err().offset, 5);
    }

    #[test]
    fn a_record_too_large_for_a_segment_is_refused() {
        let mut w = LogWriter::new(4096, 0);
        let err = w.push(&Message::new("T", vec![0; 4096]), &mut Vec::new());
        assert!(matches!(err, Err(EncodeError::TooLarge { .. })));
        // Exactly the largest that fits leaves room for the blank.
        let fit = Message::new("T", vec![0; 4096 - 8 - 92]);
        assert_eq!(fit.encoded_len(), 4096 - 8);
        let mut out = Vec::new();
        assert_eq!(w.push(&fit, &mut out).unwrap(), 0);
        assert_eq!(w.push(&fit, &mut out).unwrap(), 4096);
        assert_eq!(out.len(), 4096 * 2 - 8);
    }
}
