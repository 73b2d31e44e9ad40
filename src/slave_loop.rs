//! The slave's connection loop as a value: everything a driver does between its socket, its
//! disk and the [`HaClient`], except the system calls themselves.
//!
//! Every slave driver — blocking, smol, tokio — and the simulator in `tests/sim` run this same
//! value, so what they decide is decided here, where the simulator and the fuzzers reach it:
//! the read buffer and its sizing, batching appends for the disk, holding the dial until the
//! last append is stored, the report being written, and back-pressure from a slow disk.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use crate::client::{ClientEvent, HaClient};
use crate::config::Config;
use crate::error::ClientError;
use crate::read_buffer::ReadBuffer;
use crate::traffic::Traffic;
use crate::wire::REPORT_LEN;

/// The unwritten part of a report: write [`as_bytes`](Self::as_bytes), then tell the loop how
/// much went out with [`SlaveLoop::handle_written`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingReport {
    bytes: [u8; REPORT_LEN],
    written: usize,
}

impl PendingReport {
    /// The bytes still to write.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[self.written..]
    }
}

/// The slave's connection loop (see the crate's [run loop](crate#the-run-loop)).
///
/// A driver owns a socket (or none), a disk and a clock, and repeats:
/// 1. [`poll_store`](Self::poll_store): store the batch it returns in the local log (one
///    vectored append), then [`handle_stored`](Self::handle_stored) with the log's new max or
///    [`handle_store_failed`](Self::handle_store_failed). The answer may come later (a slow
///    disk); the loop goes on meanwhile.
/// 2. If there is no socket and [`poll_dial`](Self::poll_dial) is true: dial, racing
///    [`poll_timeout`](Self::poll_timeout), then [`handle_connected`](Self::handle_connected)
///    with the log's max, [`handle_connect_failed`](Self::handle_connect_failed), or
///    [`handle_timeout`](Self::handle_timeout) when the deadline wins.
/// 3. With a socket, wait for whichever comes first: a read into
///    [`read_buf`](Self::read_buf) when [`wants_read`](Self::wants_read) (then
///    [`handle_read`](Self::handle_read); EOF or an error:
///    [`handle_closed`](Self::handle_closed)), a write of [`poll_write`](Self::poll_write)'s
///    bytes (then [`handle_written`](Self::handle_written)), or
///    [`poll_timeout`](Self::poll_timeout) (then [`handle_timeout`](Self::handle_timeout)).
///    A read and a write may be pending at once; a write that cannot proceed never stops reads
///    or timers. Without a socket, sleep until [`poll_timeout`](Self::poll_timeout).
/// 4. Whenever [`is_connected`](Self::is_connected) turns false, close the socket. Errors
///    returned by the `handle_*` methods say why; the reconnect is already scheduled.
/// 5. [`poll_event`](Self::poll_event) gives what the user should hear of
///    ([`ClientEvent::Rejected`]).
#[derive(Debug)]
pub struct SlaveLoop {
    client: HaClient,
    /// Where reads land; the bytes of an incomplete frame wait there.
    buf: ReadBuffer,
    /// Appends taken from the machine, waiting for the disk: their first offset and bytes.
    queued: Vec<Bytes>,
    queued_from: u64,
    queued_len: usize,
    /// The batch handed to the driver by [`poll_store`](Self::poll_store) and not answered.
    storing: Vec<Bytes>,
    storing_len: usize,
    in_store: bool,
    /// The machine asked to dial; held until every append is stored.
    dial_wanted: bool,
    /// The report being written.
    report: Option<PendingReport>,
    /// Events for the user.
    events: VecDeque<ClientEvent>,
    /// Bytes read and not yet stored above which reads pause: a slow disk pushes back.
    backlog_limit: usize,
    /// Bytes and whole reports; frames in come from the machine, which decodes them.
    traffic: Traffic,
}

impl SlaveLoop {
    /// A loop whose first action is to dial. `seed` drives the reconnect jitter.
    pub fn new(config: Config, seed: u64, now: Instant) -> Self {
        SlaveLoop {
            client: HaClient::new(config, seed, now),
            buf: ReadBuffer::default(),
            queued: Vec::new(),
            queued_from: 0,
            queued_len: 0,
            storing: Vec::new(),
            storing_len: 0,
            in_store: false,
            dial_wanted: false,
            report: None,
            events: VecDeque::new(),
            backlog_limit: (config.max_frame_size() as usize).max(64 * 1024) * 2,
            traffic: Traffic::default(),
        }
    }

    // --- getters ---

    /// The machine.
    pub fn client(&self) -> &HaClient {
        &self.client
    }

    /// Whether a connection is up; when this turns false, close the socket.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Whether a batch handed out by [`poll_store`](Self::poll_store) awaits its answer.
    pub fn is_storing(&self) -> bool {
        self.in_store
    }

    /// Bytes received and not yet stored (queued, or with the disk).
    pub fn unstored_len(&self) -> usize {
        self.queued_len + self.storing_len
    }

    /// Bytes and frames moved so far, over every connection (frames out: whole reports).
    pub fn traffic(&self) -> Traffic {
        Traffic {
            frames_in: self.client.frames_received(),
            ..self.traffic
        }
    }

    /// Bytes of an incomplete frame held in the read buffer.
    pub fn buffered_len(&self) -> usize {
        self.buf.buffered().len()
    }

    // --- the disk ---

    /// The next batch to store: appends that start at the returned offset, each where the
    /// previous ended. `None` while nothing is queued or a batch is with the disk.
    pub fn poll_store(&mut self) -> Option<(u64, &[Bytes])> {
        self.pump();
        if self.in_store || self.queued.is_empty() {
            return None;
        }
        std::mem::swap(&mut self.storing, &mut self.queued);
        self.storing_len = std::mem::take(&mut self.queued_len);
        self.in_store = true;
        Some((self.queued_from, &self.storing))
    }

    /// The batch from [`poll_store`](Self::poll_store) is stored; the local log now ends at
    /// `stored_max`.
    pub fn handle_stored(&mut self, stored_max: u64) {
        self.finish_store();
        self.client.handle_appended(stored_max);
        self.pump();
    }

    /// Storing the batch from [`poll_store`](Self::poll_store) failed (the driver keeps the
    /// error to show). The machine closes the connection and waits before the next attempt:
    /// see [`HaClient::handle_append_failed`].
    pub fn handle_store_failed(&mut self, now: Instant) {
        self.finish_store();
        self.queued.clear();
        self.queued_len = 0;
        self.client.handle_append_failed(now);
        self.pump();
    }

    fn finish_store(&mut self) {
        self.in_store = false;
        self.storing.clear();
        self.storing_len = 0;
    }

    // --- dialing ---

    /// Whether to dial now; true once per dial. The dial's deadline is
    /// [`poll_timeout`](Self::poll_timeout). Held back while appends wait for the disk, since
    /// a new connection starts from the log's max offset.
    pub fn poll_dial(&mut self) -> bool {
        self.pump();
        // A failed store may have sent the machine back to waiting: it asks again later.
        self.dial_wanted &= self.client.is_dialing();
        if !self.dial_wanted || self.in_store || !self.queued.is_empty() {
            return false;
        }
        self.dial_wanted = false;
        true
    }

    /// The dial connected; `stored_max` is the local log's max offset now.
    pub fn handle_connected(&mut self, now: Instant, stored_max: u64) {
        // Bytes of the previous connection mean nothing on this one.
        self.buf = ReadBuffer::default();
        self.report = None;
        self.client.handle_connected(now, stored_max);
    }

    /// The dial failed.
    pub fn handle_connect_failed(&mut self, now: Instant) {
        self.client.handle_connect_failed(now);
        self.pump();
    }

    // --- the socket ---

    /// Whether to read now: connected, and the disk is keeping up.
    pub fn wants_read(&self) -> bool {
        self.client.is_connected() && self.unstored_len() <= self.backlog_limit
    }

    /// Space to read into; say what was read with [`handle_read`](Self::handle_read).
    pub fn read_buf(&mut self) -> &mut [u8] {
        // Room for the rest of the frame at once (the machine bounds it by `max_frame_size`).
        let wanted = self.client.bytes_wanted(self.buf.buffered());
        self.buf.lend(wanted)
    }

    /// `n` bytes were read into [`read_buf`](Self::read_buf) (`n` > 0; a read of 0 is EOF:
    /// call [`handle_closed`](Self::handle_closed)). An error closes the connection.
    pub fn handle_read(&mut self, now: Instant, n: usize) -> Result<(), ClientError> {
        let client = &mut self.client;
        let (n, result) = self.buf.fill(n, |data| client.handle_input(now, data));
        self.traffic.bytes_in += n as u64;
        self.pump();
        result
    }

    /// The report bytes to write now, if any. Write them (a partial write is fine) and call
    /// [`handle_written`](Self::handle_written). A later call may return a newer report in
    /// place of one none of whose bytes went out.
    pub fn poll_write(&mut self, now: Instant) -> Option<PendingReport> {
        if !self.client.is_connected() {
            // A report of a closed connection is never written.
            self.report = None;
            return None;
        }
        if let Some(bytes) = self.client.poll_transmit(now) {
            self.report = Some(PendingReport { bytes, written: 0 });
        }
        self.report
    }

    /// `n` bytes of [`poll_write`](Self::poll_write)'s report were written. An error closes the
    /// connection.
    pub fn handle_written(&mut self, now: Instant, n: usize) -> Result<(), ClientError> {
        let result = self.client.handle_written(now, n);
        if let Some(report) = self.report.as_mut() {
            let n = n.min(REPORT_LEN - report.written);
            report.written += n;
            self.traffic.bytes_out += n as u64;
            if report.written == REPORT_LEN {
                self.traffic.frames_out += 1;
            }
            if report.written == REPORT_LEN || result.is_err() {
                self.report = None;
            }
        }
        result
    }

    /// The connection ended: EOF, or a read or write error (which the driver keeps to show).
    pub fn handle_closed(&mut self, now: Instant) {
        self.client.handle_disconnected(now);
        self.pump();
    }

    // --- time ---

    /// The next deadline: a reconnect, a dial to give up, a heartbeat, a stalled report or
    /// housekeeping.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    /// The deadline from [`poll_timeout`](Self::poll_timeout) passed (calling early does no
    /// harm). An error closes the connection, or abandons the dial in progress.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ClientError> {
        self.pump();
        let held = self.dial_wanted;
        let result = self.client.handle_timeout(now);
        self.pump();
        match result {
            // The dial was never handed out (a slow disk held it the whole connect timeout):
            // no connect failed, the machine just asks again after its back-off.
            Err(ClientError::ConnectTimeout { .. }) if held => Ok(()),
            other => other,
        }
    }

    // --- output ---

    /// The next event for the user ([`ClientEvent::Rejected`]).
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.pump();
        self.events.pop_front()
    }

    /// Stops for good: no more dialing, reads, reports or stores.
    pub fn shutdown(&mut self) {
        self.client.shutdown();
        self.queued.clear();
        self.queued_len = 0;
        self.dial_wanted = false;
        self.report = None;
    }

    /// Takes the machine's events: appends join the queue for the disk, a dial request is held
    /// until the disk has everything, the rest is for the user.
    fn pump(&mut self) {
        while let Some(event) = self.client.poll_event() {
            match event {
                ClientEvent::Append { offset, data } => {
                    if self.queued.is_empty() {
                        self.queued_from = offset;
                    }
                    self.queued_len += data.len();
                    self.queued.push(data);
                }
                ClientEvent::Connect => self.dial_wanted = true,
                other => self.events.push_back(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{LogSink, LogSource, MemoryLog};
    use std::time::Duration;

    use crate::wire::test_frame as frame;

    /// Reads `bytes` as the socket would: as much as each lent buffer holds.
    fn read(lp: &mut SlaveLoop, now: Instant, mut bytes: &[u8]) -> Result<(), ClientError> {
        while !bytes.is_empty() {
            let buf = lp.read_buf();
            let n = buf.len().min(bytes.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            lp.handle_read(now, n)?;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    fn store(lp: &mut SlaveLoop, log: &mut MemoryLog) {
        while let Some((from, batch)) = lp.poll_store() {
            let max = log.append_all(from, batch).unwrap();
            lp.handle_stored(max);
        }
    }

    fn connected() -> (SlaveLoop, MemoryLog, Instant) {
        let t0 = Instant::now();
        let mut lp = SlaveLoop::new(Config::default(), 1, t0);
        assert!(lp.poll_dial());
        assert!(!lp.poll_dial(), "one dial per request");
        let log = MemoryLog::new(1 << 20);
        lp.handle_connected(t0, log.max_offset());
        (lp, log, t0)
    }

    #[test]
    fn frames_become_one_batch_and_one_report() {
        let (mut lp, mut log, t0) = connected();
        let first = lp.poll_write(t0).unwrap();
        assert_eq!(first.as_bytes(), 0u64.to_be_bytes());
        lp.handle_written(t0, 8).unwrap();
        let mut wire = frame(0, b"abc");
        wire.extend_from_slice(&frame(3, b"defg"));
        read(&mut lp, t0, &wire).unwrap();
        let (from, batch) = lp.poll_store().unwrap();
        assert_eq!((from, batch.len()), (0, 2));
        let max = log.append_all(from, batch).unwrap();
        lp.handle_stored(max);
        assert_eq!(lp.poll_write(t0).unwrap().as_bytes(), 7u64.to_be_bytes());
        assert_eq!(lp.traffic(), Traffic::new(wire.len() as u64, 8, 2, 1));
    }

    #[test]
    fn a_partial_report_write_is_finished_and_reads_go_on() {
        let (mut lp, mut log, t0) = connected();
        let r = lp.poll_write(t0).unwrap();
        lp.handle_written(t0, 3).unwrap();
        let rest = lp.poll_write(t0).unwrap();
        assert_eq!(rest.as_bytes(), &r.as_bytes()[3..]);
        // The socket is stuck, but frames keep arriving and are stored.
        read(&mut lp, t0, &frame(0, b"xyz")).unwrap();
        store(&mut lp, &mut log);
        assert_eq!(log.max_offset(), 3);
        assert_eq!(lp.poll_write(t0).unwrap().as_bytes(), rest.as_bytes());
        lp.handle_written(t0, 5).unwrap();
        assert_eq!(lp.poll_write(t0).unwrap().as_bytes(), 3u64.to_be_bytes());
    }

    #[test]
    fn the_dial_waits_for_the_disk() {
        let (mut lp, mut log, t0) = connected();
        lp.poll_write(t0);
        lp.handle_written(t0, 8).unwrap();
        read(&mut lp, t0, &frame(0, b"abc")).unwrap();
        let (from, batch) = lp.poll_store().unwrap();
        let batch: Vec<Bytes> = batch.to_vec();
        // The disk is slow; meanwhile the connection drops and the back-off passes.
        lp.handle_closed(t0);
        let at = lp.poll_timeout().unwrap();
        lp.handle_timeout(at).unwrap();
        assert!(!lp.poll_dial(), "an append is still with the disk");
        let max = log.append_all(from, &batch).unwrap();
        lp.handle_stored(max);
        assert!(lp.poll_dial());
        lp.handle_connected(at, log.max_offset());
        assert_eq!(lp.poll_write(at).unwrap().as_bytes(), 3u64.to_be_bytes());
    }

    #[test]
    fn a_dial_held_for_the_disk_past_its_deadline_is_no_connect_failure() {
        let (mut lp, _log, t0) = connected();
        lp.poll_write(t0);
        lp.handle_written(t0, 8).unwrap();
        read(&mut lp, t0, &frame(0, b"abc")).unwrap();
        assert!(lp.poll_store().is_some());
        lp.handle_closed(t0);
        let at = lp.poll_timeout().unwrap();
        lp.handle_timeout(at).unwrap();
        assert!(!lp.poll_dial());
        // The disk takes longer than the connect timeout.
        let late = lp.poll_timeout().unwrap();
        assert_eq!(late, at + Config::default().connect_timeout());
        lp.handle_timeout(late).unwrap();
        lp.handle_stored(3);
        assert!(!lp.poll_dial(), "the machine waits its back-off first");
        let again = lp.poll_timeout().unwrap();
        lp.handle_timeout(again).unwrap();
        assert!(lp.poll_dial());
    }

    #[test]
    fn a_slow_disk_pauses_reads() {
        let t0 = Instant::now();
        let config = Config::builder().max_frame_size(64 * 1024).build().unwrap();
        let mut lp = SlaveLoop::new(config, 1, t0);
        assert!(lp.poll_dial());
        lp.handle_connected(t0, 0);
        let body = vec![1u8; 60 * 1024];
        let mut offset = 0;
        while lp.wants_read() {
            read(&mut lp, t0, &frame(offset, &body)).unwrap();
            offset += body.len() as u64;
        }
        assert!(lp.unstored_len() > 128 * 1024);
        let mut log = MemoryLog::new(1 << 30);
        store(&mut lp, &mut log);
        assert!(lp.wants_read());
    }

    #[test]
    fn a_failed_store_closes_and_backs_off() {
        let (mut lp, _log, t0) = connected();
        lp.poll_write(t0);
        lp.handle_written(t0, 8).unwrap();
        read(&mut lp, t0, &frame(0, b"abc")).unwrap();
        assert!(lp.poll_store().is_some());
        lp.handle_store_failed(t0);
        assert!(!lp.is_connected());
        assert!(
            lp.poll_store().is_none(),
            "the rest could not be contiguous"
        );
        let at = lp.poll_timeout().unwrap();
        assert!(at - t0 >= Config::default().local_failure_backoff_initial() / 2);
        lp.handle_timeout(at).unwrap();
        assert!(lp.poll_dial());
        assert!(lp.poll_timeout().unwrap() > at, "the dial has a deadline");
        let _ = Duration::ZERO;
    }
}
