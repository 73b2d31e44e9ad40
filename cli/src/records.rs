//! Generated RocketMQ messages, laid out as a broker lays them out, for stores in RocketMQ's
//! format: `produce`, the master's `--append-rate` on such a store, and `demo --records`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rocketmq_ha::record::{LogWriter, Message};

/// The topic generated messages go to.
pub const TOPIC: &str = "rocketmq-ha-generated";

/// Queues the generated messages are spread over, as a producer spreads them.
const QUEUES: u64 = 4;

/// A stream of generated messages continuing a log at a given end.
pub struct Records {
    writer: LogWriter,
    body_len: usize,
    /// Messages generated so far (their queue offsets follow from it).
    sent: u64,
}

impl Records {
    /// Messages with `body_len`-byte bodies, for a log of `segment_size`-byte segments that
    /// ends at `end` (a record boundary: a RocketMQ-format store's end always is).
    pub fn new(segment_size: u64, end: u64, body_len: usize) -> Records {
        Records {
            writer: LogWriter::new(segment_size, end),
            body_len,
            sent: 0,
        }
    }

    /// Messages generated so far.
    pub fn count(&self) -> u64 {
        self.sent
    }

    /// Whole records (at least one) for about `len` bytes of log, with a blank record first
    /// where a segment has no room left, as a broker writes them.
    pub fn bytes(&mut self, len: u64) -> Result<Bytes, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut out = Vec::with_capacity(len as usize + self.body_len + 256);
        while out.is_empty() || (out.len() as u64) < len {
            let seq = self.sent;
            // A body that differs per message, so a record shifted or swapped fails its CRC.
            let mut body = format!("message {seq} ").into_bytes();
            body.resize(self.body_len.max(body.len()), b'a' + (seq % 26) as u8);
            let mut message = Message::new(TOPIC, body);
            message.queue_id = (seq % QUEUES) as i32;
            message.queue_offset = (seq / QUEUES) as i64;
            message.born_timestamp = now;
            message.store_timestamp = now;
            self.writer
                .push(&message, &mut out)
                .map_err(|e| format!("encoding message {seq}: {e}"))?;
            self.sent += 1;
        }
        Ok(out.into())
    }
}
