//! The AutoSwitch slave's connection loop as a value: everything a driver does between its
//! socket, its disk (log and epoch file) and the [`Client`], except the system calls.
//!
//! The same shape as the classic [`SlaveLoop`](crate::SlaveLoop), plus the two disk operations
//! AutoSwitch adds: cutting the log and saving the epoch file. They are handed out in the order
//! the machine asked for them, so the epoch file never runs ahead of a cut, and appends never
//! run ahead of the epoch that labels them.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::client::{Client, ClientEvent, Outbound};
use super::epoch::EpochList;
use super::error::ClientError;
use super::wire::{HANDSHAKE_HEADER_LEN, TRANSFER_HEADER_LEN};
use crate::read_buffer::ReadBuffer;

/// A disk operation for the driver, from [`SlaveLoop::poll_disk`].
#[derive(Debug, PartialEq, Eq)]
pub enum DiskOp<'a> {
    /// Cut the log to end at `offset`, durably (see [`LogTruncate`](crate::LogTruncate)); then
    /// [`SlaveLoop::handle_truncated`].
    Truncate {
        /// Where the log must end.
        offset: u64,
    },
    /// Write the epoch file with `epochs`; then [`SlaveLoop::handle_epochs_saved`].
    SaveEpochs(&'a EpochList),
    /// Append `pieces` one after the other from `offset` (one vectored append); then
    /// [`SlaveLoop::handle_stored`].
    Store {
        /// Where the first piece goes: the end of the log.
        offset: u64,
        /// The bytes.
        pieces: &'a [Bytes],
    },
}

#[derive(Debug)]
enum Queued {
    Truncate(u64),
    SaveEpochs,
    Store { offset: u64, pieces: Vec<Bytes> },
}

/// The AutoSwitch slave's connection loop (see the crate's [run loop](crate#the-run-loop)).
///
/// A driver owns a socket (or none), a disk and a clock, and repeats:
/// 1. [`poll_disk`](Self::poll_disk): perform the operation, then answer with
///    [`handle_truncated`](Self::handle_truncated), [`handle_epochs_saved`](Self::handle_epochs_saved),
///    [`handle_stored`](Self::handle_stored), or [`handle_disk_failed`](Self::handle_disk_failed).
///    One operation is out at a time; the loop goes on meanwhile.
/// 2. Without a socket, if [`poll_dial`](Self::poll_dial): dial, then
///    [`handle_connected`](Self::handle_connected) with the log's max, or
///    [`handle_connect_failed`](Self::handle_connect_failed).
/// 3. With a socket: read into [`read_buf`](Self::read_buf) when
///    [`wants_read`](Self::wants_read) (then [`handle_read`](Self::handle_read); EOF or an error:
///    [`handle_closed`](Self::handle_closed)); write [`poll_write`](Self::poll_write)'s bytes
///    (then [`handle_written`](Self::handle_written)); at [`poll_timeout`](Self::poll_timeout)
///    call [`handle_timeout`](Self::handle_timeout).
/// 4. Whenever [`is_connected`](Self::is_connected) turns false, close the socket.
#[derive(Debug)]
pub struct SlaveLoop {
    client: Client,
    /// Where reads land; the bytes of an incomplete frame wait there.
    buf: ReadBuffer,
    connected: bool,
    queue: VecDeque<Queued>,
    /// The operation handed out and not answered.
    out: Option<Queued>,
    dial_wanted: bool,
    write: Option<(Outbound, usize)>,
    backlog_limit: usize,
    max_frame_size: usize,
}

impl SlaveLoop {
    /// A loop around `client` (which asks to dial at once).
    pub fn new(client: Client, max_frame_size: u32) -> Self {
        SlaveLoop {
            client,
            buf: ReadBuffer::default(),
            connected: false,
            queue: VecDeque::new(),
            out: None,
            dial_wanted: false,
            write: None,
            backlog_limit: (max_frame_size as usize).max(64 * 1024) * 2,
            max_frame_size: max_frame_size as usize,
        }
    }

    /// The machine.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether a connection is up; when this turns false, close the socket.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Bytes received and not yet stored.
    pub fn unstored_len(&self) -> usize {
        self.queue
            .iter()
            .chain(self.out.as_ref())
            .map(|q| match q {
                Queued::Store { pieces, .. } => pieces.iter().map(Bytes::len).sum(),
                _ => 0,
            })
            .sum()
    }

    // --- the disk ---

    /// The next disk operation, in the order the machine asked for them; `None` while one is
    /// out or none is waiting.
    pub fn poll_disk(&mut self) -> Option<DiskOp<'_>> {
        self.pump();
        if self.out.is_none() {
            self.out = self.queue.pop_front();
        }
        Some(match self.out.as_ref()? {
            Queued::Truncate(offset) => DiskOp::Truncate { offset: *offset },
            Queued::SaveEpochs => DiskOp::SaveEpochs(self.client.epochs()),
            Queued::Store { offset, pieces } => DiskOp::Store {
                offset: *offset,
                pieces,
            },
        })
    }

    /// The log was cut; it ends at `stored_max`.
    pub fn handle_truncated(&mut self, now: Instant, stored_max: u64) -> Result<(), ClientError> {
        self.out = None;
        let result = self.client.handle_truncated(now, stored_max);
        self.pump();
        result
    }

    /// The epoch file was written.
    pub fn handle_epochs_saved(&mut self) {
        self.out = None;
        self.pump();
    }

    /// The batch was appended; the log ends at `stored_max`.
    pub fn handle_stored(&mut self, stored_max: u64) {
        self.out = None;
        self.client.handle_appended(stored_max);
        self.pump();
    }

    /// The disk operation failed (the driver keeps the error to show): the connection closes,
    /// queued appends are dropped (the next connection starts from the log's end), and the
    /// machine retries after a back-off. Cuts and epoch saves still queued stay: the log or
    /// the epoch list already changed in memory for them.
    pub fn handle_disk_failed(&mut self, now: Instant) {
        self.out = None;
        self.queue.retain(|q| !matches!(q, Queued::Store { .. }));
        self.client.handle_local_failure(now);
        self.pump();
    }

    // --- dialing ---

    /// Whether to dial now; true once per dial, and only once the disk has everything.
    pub fn poll_dial(&mut self) -> bool {
        self.pump();
        self.dial_wanted &= self.client.is_dialing();
        if !self.dial_wanted || self.out.is_some() || !self.queue.is_empty() {
            return false;
        }
        self.dial_wanted = false;
        true
    }

    /// The dial connected; `stored_max` is the log's max now.
    pub fn handle_connected(&mut self, now: Instant, stored_max: u64) {
        self.buf = ReadBuffer::default();
        self.write = None;
        self.client.handle_connected(now, stored_max);
        self.pump();
    }

    /// The dial failed.
    pub fn handle_connect_failed(&mut self, now: Instant) {
        self.client.handle_connect_failed(now);
        self.pump();
    }

    // --- the socket ---

    /// Whether to read now: connected, and the disk keeps up.
    pub fn wants_read(&self) -> bool {
        self.connected && self.unstored_len() <= self.backlog_limit
    }

    /// Space to read into; say how much was read with [`handle_read`](Self::handle_read).
    pub fn read_buf(&mut self) -> &mut [u8] {
        // Room for the whole frame at once, but never more than a valid frame can need: the
        // size field is the peer's say-so until the machine has checked it.
        let wanted = frame_len(self.buf.buffered())
            .unwrap_or(0)
            .min(self.max_frame_size);
        self.buf.lend(wanted)
    }

    /// `n` bytes were read into [`read_buf`](Self::read_buf). An error closes the connection.
    pub fn handle_read(&mut self, now: Instant, n: usize) -> Result<(), ClientError> {
        let client = &mut self.client;
        let (_, result) = self.buf.fill(n, |data| client.handle_input(now, data));
        self.pump();
        result
    }

    /// The bytes to write now, if any; write them and call
    /// [`handle_written`](Self::handle_written).
    pub fn poll_write(&mut self, now: Instant) -> Option<&[u8]> {
        if !self.connected {
            self.write = None;
            return None;
        }
        if self.write.is_none() {
            self.write = self.client.poll_transmit(now).map(|o| (o, 0));
        }
        self.write.as_ref().map(|(o, at)| &o.as_bytes()[*at..])
    }

    /// `n` bytes of [`poll_write`](Self::poll_write)'s were written.
    pub fn handle_written(&mut self, now: Instant, n: usize) -> Result<(), ClientError> {
        let result = self.client.handle_written(now, n);
        if let Some((out, at)) = self.write.as_mut() {
            *at += n.min(out.as_bytes().len() - *at);
            if *at == out.as_bytes().len() || result.is_err() {
                self.write = None;
            }
        }
        self.pump();
        result
    }

    /// The connection ended (EOF, a read or write error).
    pub fn handle_closed(&mut self, now: Instant) {
        self.client.handle_disconnected(now);
        self.pump();
    }

    // --- time ---

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    /// The deadline passed (calling early does no harm). An error closes the connection.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ClientError> {
        let result = self.client.handle_timeout(now);
        self.pump();
        result
    }

    /// Stops for good.
    pub fn shutdown(&mut self) {
        self.client.shutdown();
        self.queue.clear();
        self.connected = false;
        self.write = None;
    }

    /// Moves the machine's events into the disk queue, batching consecutive appends.
    fn pump(&mut self) {
        while let Some(event) = self.client.poll_event() {
            match event {
                ClientEvent::Connect => self.dial_wanted = true,
                ClientEvent::Truncate { offset } => self.queue.push_back(Queued::Truncate(offset)),
                ClientEvent::EpochsChanged => {
                    if !matches!(self.queue.back(), Some(Queued::SaveEpochs)) {
                        self.queue.push_back(Queued::SaveEpochs);
                    }
                }
                ClientEvent::Append { offset, data } => match self.queue.back_mut() {
                    Some(Queued::Store { pieces, .. }) => pieces.push(data),
                    _ => self.queue.push_back(Queued::Store {
                        offset,
                        pieces: vec![data],
                    }),
                },
            }
        }
        self.connected = matches!(
            self.client.connection_state(),
            crate::ConnectionState::Handshake | crate::ConnectionState::Transfer
        );
    }
}

/// The whole length of the frame at the front of `buf`, once its size field is in.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let head = buf.get(..8)?;
    let state = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let size = u32::try_from(i32::from_be_bytes([head[4], head[5], head[6], head[7]])).ok()?;
    let header = if state == 1 {
        HANDSHAKE_HEADER_LEN
    } else {
        TRANSFER_HEADER_LEN
    };
    Some(header + size as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoswitch::epoch::EpochEntry;
    use crate::autoswitch::wire::{MasterHandshake, TransferHeader};
    use crate::autoswitch::SlaveIdentity;
    use crate::config::Config;

    fn epochs(entries: &[(i32, u64)]) -> EpochList {
        EpochList::from_entries(entries.iter().map(|&(e, s)| EpochEntry::new(e, s))).unwrap()
    }

    fn read(l: &mut SlaveLoop, now: Instant, bytes: &[u8]) -> Result<(), ClientError> {
        let buf = l.read_buf();
        buf[..bytes.len()].copy_from_slice(bytes);
        l.handle_read(now, bytes.len())
    }

    #[test]
    fn disk_operations_come_in_order_cut_then_epochs_then_appends() {
        let t0 = Instant::now();
        let me = SlaveIdentity {
            broker_id: 2,
            sync_from_last_file: false,
            async_learner: false,
        };
        let client = Client::new(Config::default(), me, epochs(&[(1, 0), (2, 100)]), 1, t0);
        let mut l = SlaveLoop::new(client, 1 << 22);
        assert!(l.poll_dial());
        assert!(!l.poll_dial(), "once per dial");
        l.handle_connected(t0, 150);
        assert!(l.is_connected());
        let hs = l.poll_write(t0).unwrap().to_vec();
        assert_eq!(hs.len(), 16);
        l.handle_written(t0, 16).unwrap();
        let answer = MasterHandshake {
            max_offset: 200,
            epochs: epochs(&[(1, 0), (3, 120)]),
        }
        .encode();
        let mut wire = answer.to_vec();
        // The master answers and, in the same read, nothing else (it waits for a report).
        read(&mut l, t0, &wire).unwrap();
        assert_eq!(l.poll_disk(), Some(DiskOp::Truncate { offset: 100 }));
        assert_eq!(
            l.poll_disk(),
            Some(DiskOp::Truncate { offset: 100 }),
            "until answered"
        );
        l.handle_truncated(t0, 100).unwrap();
        assert_eq!(l.poll_disk(), Some(DiskOp::SaveEpochs(&epochs(&[(1, 0)]))));
        l.handle_epochs_saved();
        assert_eq!(l.poll_disk(), None);
        assert_eq!(l.poll_write(t0).map(<[u8]>::len), Some(12));
        l.handle_written(t0, 12).unwrap();
        // Two frames: the first records epoch 3 (at 120) after 20 bytes of epoch 1.
        wire.clear();
        for (offset, epoch, start, len) in [(100u64, 1, 0u64, 20usize), (120, 3, 120, 5)] {
            let h = TransferHeader {
                body_len: len as u32,
                offset: Some(offset),
                epoch,
                epoch_start: start,
                confirm_offset: None,
            };
            wire.extend_from_slice(&h.encode());
            wire.extend_from_slice(&vec![epoch as u8; len]);
        }
        read(&mut l, t0, &wire).unwrap();
        let DiskOp::Store { offset, pieces } = l.poll_disk().unwrap() else {
            panic!("the epoch-1 bytes first")
        };
        assert_eq!((offset, pieces.len()), (100, 1));
        l.handle_stored(120);
        assert_eq!(
            l.poll_disk(),
            Some(DiskOp::SaveEpochs(&epochs(&[(1, 0), (3, 120)])))
        );
        l.handle_epochs_saved();
        let DiskOp::Store { offset, .. } = l.poll_disk().unwrap() else {
            panic!("then epoch 3's")
        };
        assert_eq!(offset, 120);
        l.handle_stored(125);
        assert_eq!(l.client().stored_offset(), 125);
    }

    #[test]
    fn a_hostile_size_field_does_not_make_the_loop_allocate() {
        let t0 = Instant::now();
        let me = SlaveIdentity {
            broker_id: 2,
            sync_from_last_file: false,
            async_learner: false,
        };
        let client = Client::new(Config::default(), me, EpochList::new(), 1, t0);
        let mut l = SlaveLoop::new(client, 64 * 1024);
        assert!(l.poll_dial());
        l.handle_connected(t0, 0);
        l.poll_write(t0);
        l.handle_written(t0, 16).unwrap();
        // 8 bytes of a transfer header announcing 2 GiB.
        read(&mut l, t0, &[0, 0, 0, 2, 0x7f, 0xff, 0xff, 0xff]).unwrap();
        l.read_buf();
        let held = l.buf.capacity();
        assert!(
            held <= 64 * 1024 + 4 * crate::read_buffer::READ_MAX,
            "holds {held} bytes"
        );
    }
}
