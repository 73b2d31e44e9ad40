//! The slave's side of AutoSwitch replication (Java's `AutoSwitchHAClient`, §5.4).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::epoch::{consistent_point, EpochEntry, EpochList};
use super::error::ClientError;
use super::sync_state::BrokerId;
use super::wire::{
    decode_master_frame, encode_report, MasterFrame, SlaveHandshake, TransferHeader, HANDSHAKE_LEN,
    REPORT_LEN,
};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::connection_state::ConnectionState;
use crate::timer::{Clock, Timer, TimerTable};

/// Who this slave is, as its handshake tells the master (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlaveIdentity {
    /// The controller-assigned broker id.
    pub broker_id: BrokerId,
    /// `syncFromLastFile`: an empty slave starts at the master's last segment.
    pub sync_from_last_file: bool,
    /// `asyncLearner`: replicate without ever joining the sync-state set.
    pub async_learner: bool,
}

/// What a [`Client`] asks of its driver, or tells it. Apply them in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive] // more driver actions may come
pub enum ClientEvent {
    /// Dial the master; then [`Client::handle_connected`] or [`Client::handle_connect_failed`].
    Connect,
    /// Cut the local log to end exactly at `offset` (durably: the bytes above must not come
    /// back after a crash), then call [`Client::handle_truncated`] with the new max offset, or
    /// [`Client::handle_local_failure`]. The epoch list is cut after the log, so a crash in
    /// between leaves epochs that still describe the log correctly (§5.4 step 3).
    Truncate {
        /// The consistent point with the master's log.
        offset: u64,
    },
    /// Append `data` at exactly `offset`, then [`Client::handle_appended`] with the log's new
    /// max offset, or [`Client::handle_local_failure`].
    Append {
        /// Where the data goes: the end of the log once earlier appends are applied.
        offset: u64,
        /// The bytes, sharing the input buffer's memory.
        data: Bytes,
    },
    /// The epoch list changed: write [`Client::epochs`] to the epoch file before applying
    /// later events.
    EpochsChanged,
}

/// A frame for the master: the 16-byte handshake or a 12-byte report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outbound {
    bytes: [u8; HANDSHAKE_LEN],
    len: usize,
}

impl Outbound {
    fn handshake(hs: SlaveHandshake) -> Self {
        Outbound {
            bytes: hs.encode(),
            len: HANDSHAKE_LEN,
        }
    }

    fn report(offset: u64) -> Self {
        let mut bytes = [0u8; HANDSHAKE_LEN];
        bytes[..REPORT_LEN].copy_from_slice(&encode_report(offset));
        Outbound {
            bytes,
            len: REPORT_LEN,
        }
    }

    /// The bytes to write.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the reconnect timer.
    Waiting,
    /// A dial is in progress.
    Dialing,
    /// Connected; the handshake is sent or being sent, the answer awaited.
    Handshake,
    /// The log is being cut to the consistent point.
    Truncating(u64),
    /// Replicating.
    Transfer,
    /// Stopped for good (a role change replaces the client).
    Shutdown,
}

/// The AutoSwitch slave's state machine (Java's `AutoSwitchHAClient`, §5.4).
///
/// It owns the slave's epoch list (load it from the epoch file; persist it on
/// [`ClientEvent::EpochsChanged`]). The crate's [run loop](crate#the-run-loop) applies:
/// drain [`poll_event`](Self::poll_event) and perform each event in order; write what
/// [`poll_transmit`](Self::poll_transmit) returns and report it with
/// [`handle_written`](Self::handle_written); feed reads to [`handle_input`](Self::handle_input);
/// call [`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout). Any
/// `Err` means: close the socket; the machine has already scheduled the reconnect.
///
/// # Rules implemented
/// * §5.4 HANDSHAKE: exactly one 16-byte handshake per connection (Java may send several and
///   then fail on the extra answers). On the answer, a slave with an empty epoch list takes
///   everything from the master; otherwise the log is cut to the consistent point of the two
///   epoch lists (§5.6), the epoch list after it, and no consistent point is an error.
/// * After the handshake the slave reports its max offset at once (Java waits for a heartbeat,
///   up to 5 s, §5.10), after stored appends, and every `heartbeat_interval`.
/// * §5.4 TRANSFER: a frame's offset must be where the log ends (an empty log accepts any);
///   an epoch change in a header adds `(epoch, epochStart)` (ignored unless newer, as Java's
///   `appendEntry`); a data frame's epoch must start at or before its offset, or exactly at its
///   end (Java's label for the chunk that closes an epoch, §5.5); size-0 frames append
///   nothing; the confirm offset is `min(header's, stored max)` and never goes backwards
///   except when the log is cut.
/// * A frame whose state differs from the client's closes the connection ("State not
///   matched"); so does silence for `housekeeping_interval` or a stalled write.
#[derive(Debug)]
pub struct Client {
    config: Config,
    identity: SlaveIdentity,
    clock: Clock,
    timers: TimerTable,
    backoff: Backoff,
    state: State,
    epochs: EpochList,
    /// The local log's max offset as the driver last said.
    stored: u64,
    /// Where the next frame must start: `stored` plus appends handed out and not yet stored.
    expected: u64,
    reported: Option<u64>,
    report_due: bool,
    handshake_sent: bool,
    outgoing: Option<(Outbound, usize)>,
    /// A [`ClientEvent::Truncate`] handed out and not yet reported done.
    pending_cut: Option<u64>,
    /// The confirm offset in the master's last header.
    master_confirm: Option<u64>,
    confirm: Option<u64>,
    last_read: Instant,
    last_write_progress: Instant,
    events: VecDeque<ClientEvent>,
}

impl Client {
    /// A slave `identity` with the epoch list `epochs` (from its epoch file). It asks to dial at
    /// once.
    pub fn new(
        config: Config,
        identity: SlaveIdentity,
        epochs: EpochList,
        seed: u64,
        now: Instant,
    ) -> Self {
        let mut client = Client {
            backoff: Backoff::new(
                config.reconnect_backoff_initial(),
                config.reconnect_backoff_max(),
                seed,
            ),
            config,
            identity,
            clock: Clock::new(now),
            timers: TimerTable::default(),
            state: State::Waiting,
            epochs,
            stored: 0,
            expected: 0,
            reported: None,
            report_due: false,
            handshake_sent: false,
            outgoing: None,
            pending_cut: None,
            master_confirm: None,
            confirm: None,
            last_read: now,
            last_write_progress: now,
            events: VecDeque::new(),
        };
        client.dial(now);
        client
    }

    // --- getters ---

    /// The slave's identity.
    pub fn identity(&self) -> SlaveIdentity {
        self.identity
    }

    /// The epoch list, to be persisted on [`ClientEvent::EpochsChanged`].
    pub fn epochs(&self) -> &EpochList {
        &self.epochs
    }

    /// The confirm offset: bytes below it are on every member of the sync-state set (§5.7).
    pub fn confirm_offset(&self) -> Option<u64> {
        self.confirm
    }

    /// The local log's max offset as last stored.
    pub fn stored_offset(&self) -> u64 {
        self.stored
    }

    /// The last offset reported to the master on this connection.
    pub fn reported_offset(&self) -> Option<u64> {
        self.reported
    }

    /// RocketMQ's name for where the client is.
    pub fn connection_state(&self) -> ConnectionState {
        match self.state {
            State::Waiting | State::Dialing => ConnectionState::Ready,
            State::Handshake | State::Truncating(_) => ConnectionState::Handshake,
            State::Transfer => ConnectionState::Transfer,
            State::Shutdown => ConnectionState::Shutdown,
        }
    }

    /// Whether a dial is in progress.
    pub fn is_dialing(&self) -> bool {
        self.state == State::Dialing
    }

    // --- input ---

    /// The dial succeeded; `stored_max` is the local log's max offset. The handshake goes out.
    pub fn handle_connected(&mut self, now: Instant, stored_max: u64) {
        let now = self.clock.advance(now);
        if self.state != State::Dialing {
            return;
        }
        self.state = State::Handshake;
        self.stored = stored_max;
        self.expected = stored_max;
        self.reported = None;
        self.report_due = false;
        self.handshake_sent = false;
        self.outgoing = None;
        // A new connection may lead to a new master: its headers bring their own value.
        self.master_confirm = None;
        self.last_read = now;
        self.timers.stop_all();
        self.timers.set(
            Timer::Housekeeping,
            now + self.config.housekeeping_interval(),
        );
    }

    /// The dial failed; another follows after a back-off.
    pub fn handle_connect_failed(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        if self.state == State::Dialing {
            self.wait_to_reconnect(now);
        }
    }

    /// The connection ended (EOF or an I/O error); a reconnect follows after a back-off.
    pub fn handle_disconnected(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        if !matches!(self.state, State::Waiting | State::Shutdown) {
            self.wait_to_reconnect(now);
        }
    }

    /// Bytes from the master appended by the driver to `buf`; complete frames are split off the
    /// front (zero-copy), an incomplete one stays for the next read.
    pub fn handle_input(&mut self, now: Instant, buf: &mut BytesMut) -> Result<(), ClientError> {
        let now = self.clock.advance(now);
        if !matches!(
            self.state,
            State::Handshake | State::Truncating(_) | State::Transfer
        ) {
            return Err(ClientError::Misuse("input while not connected"));
        }
        if !buf.is_empty() {
            self.last_read = now;
            self.timers.set(
                Timer::Housekeeping,
                now + self.config.housekeeping_interval(),
            );
        }
        loop {
            let frame = match decode_master_frame(buf, self.config.max_frame_size()) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => return self.fail(now, e.into()),
            };
            let result = match (self.state, frame) {
                // An answer proves the master has the whole handshake, even if the driver has
                // not reported the write done yet; before it was handed out, none can come.
                (State::Handshake, MasterFrame::Handshake(_)) if !self.handshake_sent => {
                    Err(ClientError::AnswerBeforeHandshake)
                }
                (State::Handshake, MasterFrame::Handshake(answer)) => {
                    self.on_answer(answer.epochs, answer.max_offset)
                }
                (State::Transfer, MasterFrame::Transfer { header, body }) => {
                    self.on_transfer(header, body)
                }
                (_, frame) => Err(ClientError::StateMismatch {
                    got: match frame {
                        MasterFrame::Handshake(_) => ConnectionState::Handshake,
                        MasterFrame::Transfer { .. } => ConnectionState::Transfer,
                    },
                    expected: self.connection_state(),
                }),
            };
            if let Err(e) = result {
                return self.fail(now, e);
            }
        }
    }

    /// The log now ends at `stored_max` after a [`ClientEvent::Truncate`]; the epoch list is
    /// cut to match and transfer starts. A cut requested by a connection that has failed since
    /// still cuts the epoch list (the log was cut), and the next connection starts afresh.
    pub fn handle_truncated(&mut self, now: Instant, stored_max: u64) -> Result<(), ClientError> {
        let now = self.clock.advance(now);
        let Some(point) = self.pending_cut.take() else {
            return Err(ClientError::Misuse("handle_truncated without a truncation"));
        };
        if stored_max > point {
            return self.fail(now, ClientError::Misuse("the log was not cut to the point"));
        }
        self.confirm = self.confirm.map(|c| c.min(stored_max));
        self.stored = self.stored.min(stored_max);
        self.expected = self.expected.min(stored_max);
        if self.epochs.truncate_suffix_by_offset(point) {
            self.events.push_back(ClientEvent::EpochsChanged);
        }
        if self.state == State::Truncating(point) {
            self.stored = stored_max;
            self.expected = stored_max;
            self.start_transfer();
        }
        Ok(())
    }

    /// The log now ends at `stored_max` after an [`ClientEvent::Append`].
    pub fn handle_appended(&mut self, stored_max: u64) {
        if self.state == State::Transfer && stored_max > self.stored {
            self.stored = stored_max;
            self.report_due = true;
            self.update_confirm();
        }
    }

    /// A truncation or append failed: close the connection and retry after a back-off.
    pub fn handle_local_failure(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        if !matches!(self.state, State::Waiting | State::Shutdown) {
            self.wait_to_reconnect(now);
        }
    }

    /// Time passed: a reconnect, a stalled write, housekeeping or a heartbeat report.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ClientError> {
        let now = self.clock.advance(now);
        match self.state {
            State::Waiting if self.timers.is_expired(Timer::Reconnect, now) => self.dial(now),
            State::Dialing if self.timers.is_expired(Timer::Connect, now) => {
                self.wait_to_reconnect(now);
            }
            State::Handshake | State::Truncating(_) | State::Transfer => {
                if self.timers.is_expired(Timer::WriteStall, now) {
                    let stalled = now - self.last_write_progress;
                    return self.fail(now, ClientError::WriteStalled(stalled));
                }
                if self.timers.is_expired(Timer::Housekeeping, now) {
                    let idle = now - self.last_read;
                    return self.fail(now, ClientError::Silent(idle));
                }
                if self.state == State::Transfer && self.timers.is_expired(Timer::Heartbeat, now) {
                    self.report_due = true;
                    self.timers.stop(Timer::Heartbeat);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `n` more bytes of the frame from [`poll_transmit`](Self::poll_transmit) were written.
    pub fn handle_written(&mut self, now: Instant, n: usize) -> Result<(), ClientError> {
        let now = self.clock.advance(now);
        let Some((out, written)) = self.outgoing.as_mut() else {
            return Err(ClientError::Misuse(
                "handle_written without a frame in flight",
            ));
        };
        if n == 0 || n > out.len - *written {
            return Err(ClientError::Misuse(
                "handle_written with a wrong byte count",
            ));
        }
        *written += n;
        self.last_write_progress = now;
        if *written == out.len {
            self.outgoing = None;
            self.timers.stop(Timer::WriteStall);
            if self.state == State::Transfer {
                self.timers
                    .set(Timer::Heartbeat, now + self.config.heartbeat_interval());
            }
        } else {
            self.timers
                .set(Timer::WriteStall, now + self.config.write_stall_timeout());
        }
        Ok(())
    }

    /// Stops for good (the role changes): no more dialing, frames or events.
    pub fn shutdown(&mut self) {
        self.state = State::Shutdown;
        self.events.clear();
        self.timers.stop_all();
        self.outgoing = None;
        self.report_due = false;
    }

    // --- output ---

    /// The frame to write now, if any: the handshake once per connection, then reports. One is
    /// in flight at a time; write it whole.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Outbound> {
        let now = self.clock.advance(now);
        if self.outgoing.is_some() {
            return None;
        }
        let out = match self.state {
            State::Handshake if !self.handshake_sent => {
                self.handshake_sent = true;
                Outbound::handshake(SlaveHandshake {
                    sync_from_last_file: self.identity.sync_from_last_file,
                    async_learner: self.identity.async_learner,
                    broker_id: self.identity.broker_id,
                })
            }
            State::Transfer if self.report_due => {
                self.report_due = false;
                self.reported = Some(self.stored);
                Outbound::report(self.stored)
            }
            _ => return None,
        };
        self.outgoing = Some((out, 0));
        self.last_write_progress = now;
        self.timers.stop(Timer::Heartbeat);
        self.timers
            .set(Timer::WriteStall, now + self.config.write_stall_timeout());
        Some(out)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// The next deadline for [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Shutdown => None,
            _ => self.timers.next_timeout(),
        }
    }

    // --- rules ---

    /// §5.4 step 3: the master's answer decides where this log and the master's agree.
    fn on_answer(&mut self, master: EpochList, master_max: u64) -> Result<(), ClientError> {
        // A master that answers is reachable and speaks the protocol.
        self.backoff.reset();
        if self.epochs.is_empty() {
            // A new replica: take everything the master has, from where the log ends.
            self.start_transfer();
            return Ok(());
        }
        let point = consistent_point(&self.epochs, self.stored, &master, master_max)
            .ok_or(ClientError::NoConsistentPoint)?;
        if point < self.stored {
            self.state = State::Truncating(point);
            self.pending_cut = Some(point);
            self.events
                .push_back(ClientEvent::Truncate { offset: point });
            return Ok(());
        }
        // Nothing to cut from the log; epochs recorded beyond the point go (as in Java).
        if self.epochs.truncate_suffix_by_offset(point) {
            self.events.push_back(ClientEvent::EpochsChanged);
        }
        self.start_transfer();
        Ok(())
    }

    fn start_transfer(&mut self) {
        self.state = State::Transfer;
        // Report at once: the master sends nothing before it knows where this log ends.
        self.report_due = true;
    }

    /// §5.4 step 5: one transfer frame.
    fn on_transfer(&mut self, header: TransferHeader, body: Bytes) -> Result<(), ClientError> {
        // 5a: the frame must continue this log (an empty log starts anywhere). An empty
        // master's −1 heartbeat carries no position to check.
        if let Some(offset) = header.offset {
            if self.expected != 0 && offset != self.expected {
                return Err(ClientError::OffsetMismatch {
                    offset,
                    stored: self.expected,
                });
            }
            let end = offset + u64::from(header.body_len);
            if header.body_len > 0 && header.epoch_start > offset && header.epoch_start != end {
                return Err(ClientError::EpochStartAfterFrame {
                    offset,
                    end,
                    epoch: header.epoch,
                    epoch_start: header.epoch_start,
                });
            }
        }
        // 5b: a new epoch label is recorded before the bytes it labels. Every frame's label is
        // offered, not only one that differs from the previous frame's as in Java
        // (`currentReceivedEpoch`): after a handshake drops that epoch from the list (it
        // started at the consistent point), Java never records it again and files its bytes
        // under the epoch before, so a later consistent point can keep diverged bytes.
        let entry = EpochEntry::new(header.epoch, header.epoch_start);
        if self.epochs.observe(entry, self.expected) {
            self.events.push_back(ClientEvent::EpochsChanged);
        }
        // 5c: size-0 frames append nothing.
        if let (Some(offset), false) = (header.offset, body.is_empty()) {
            self.expected = offset + body.len() as u64;
            self.events
                .push_back(ClientEvent::Append { offset, data: body });
        }
        // 5d: applied as the bytes are stored.
        if header.confirm_offset.is_some() {
            self.master_confirm = header.confirm_offset;
            self.update_confirm();
        }
        Ok(())
    }

    /// The confirm offset is never more than this log holds, and never goes backwards except
    /// when the log is cut.
    fn update_confirm(&mut self) {
        if let Some(master) = self.master_confirm {
            let confirmed = master.min(self.stored);
            self.confirm = Some(self.confirm.map_or(confirmed, |c| c.max(confirmed)));
        }
    }

    fn dial(&mut self, now: Instant) {
        self.state = State::Dialing;
        self.timers.stop_all();
        self.timers
            .set(Timer::Connect, now + self.config.connect_timeout());
        self.events.push_back(ClientEvent::Connect);
    }

    fn wait_to_reconnect(&mut self, now: Instant) {
        self.state = State::Waiting;
        self.outgoing = None;
        self.report_due = false;
        self.timers.stop_all();
        let delay = self.backoff.next_delay();
        self.timers.set(Timer::Reconnect, now + delay);
    }

    fn fail<T>(&mut self, now: Instant, e: ClientError) -> Result<T, ClientError> {
        self.wait_to_reconnect(now);
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoswitch::wire::{MasterHandshake, TRANSFER_HEADER_LEN};
    use std::time::Duration;

    const ME: SlaveIdentity = SlaveIdentity {
        broker_id: 2,
        sync_from_last_file: false,
        async_learner: false,
    };

    fn epochs(entries: &[(i32, u64)]) -> EpochList {
        EpochList::from_entries(entries.iter().map(|&(e, s)| EpochEntry::new(e, s))).unwrap()
    }

    /// A client connected at `t0` with a log ending at `stored`, its handshake written.
    fn connected(local: EpochList, stored: u64) -> (Client, Instant) {
        let t0 = Instant::now();
        let mut c = Client::new(Config::default(), ME, local, 7, t0);
        assert_eq!(c.poll_event(), Some(ClientEvent::Connect));
        c.handle_connected(t0, stored);
        let hs = c.poll_transmit(t0).expect("handshake");
        assert_eq!(
            hs.as_bytes(),
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2][..]
        );
        c.handle_written(t0, hs.len).unwrap();
        (c, t0)
    }

    fn answer(master: &[(i32, u64)], max: u64) -> BytesMut {
        BytesMut::from(
            &MasterHandshake {
                max_offset: max,
                epochs: epochs(master),
            }
            .encode()[..],
        )
    }

    fn frame(
        offset: Option<u64>,
        epoch: i32,
        start: u64,
        confirm: Option<u64>,
        body: &[u8],
    ) -> BytesMut {
        let header = TransferHeader {
            body_len: body.len() as u32,
            offset,
            epoch,
            epoch_start: start,
            confirm_offset: confirm,
        };
        let mut b = BytesMut::with_capacity(TRANSFER_HEADER_LEN + body.len());
        b.extend_from_slice(&header.encode());
        b.extend_from_slice(body);
        b
    }

    fn report(c: &mut Client, now: Instant) -> Option<u64> {
        let out = c.poll_transmit(now)?;
        assert_eq!(out.as_bytes().len(), REPORT_LEN);
        c.handle_written(now, REPORT_LEN).unwrap();
        let mut v = [0u8; 8];
        v.copy_from_slice(&out.as_bytes()[4..]);
        Some(i64::from_be_bytes(v) as u64)
    }

    fn events(c: &mut Client) -> Vec<ClientEvent> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    #[test]
    fn exactly_one_handshake_per_connection() {
        let (mut c, t0) = connected(EpochList::new(), 0);
        assert_eq!(c.connection_state(), ConnectionState::Handshake);
        for s in [1, 6, 12] {
            let later = t0 + Duration::from_secs(s);
            c.handle_timeout(later).unwrap();
            assert_eq!(c.poll_transmit(later), None);
        }
    }

    #[test]
    fn a_new_replica_takes_everything_and_reports_at_once() {
        let (mut c, t0) = connected(EpochList::new(), 0);
        c.handle_input(t0, &mut answer(&[(1, 0)], 500)).unwrap();
        assert_eq!(c.connection_state(), ConnectionState::Transfer);
        assert_eq!(report(&mut c, t0), Some(0));
        assert!(events(&mut c).is_empty());
        // An empty master's heartbeat (offset −1) is accepted and records its epoch.
        c.handle_input(t0, &mut frame(None, 1, 0, Some(0), &[]))
            .unwrap();
        assert_eq!(events(&mut c), vec![ClientEvent::EpochsChanged]);
        assert_eq!(c.epochs(), &epochs(&[(1, 0)]));
    }

    #[test]
    fn a_diverged_log_is_cut_to_the_consistent_point_before_transfer() {
        // Captured from Java 5.3.3: slave 1-0, 2-100000 with 105000 bytes; master 1-0, 3-100000,
        // 130000 bytes.
        let (mut c, t0) = connected(epochs(&[(1, 0), (2, 100_000)]), 105_000);
        c.handle_input(t0, &mut answer(&[(1, 0), (3, 100_000)], 130_000))
            .unwrap();
        assert_eq!(
            events(&mut c),
            vec![ClientEvent::Truncate { offset: 100_000 }]
        );
        // Nothing is reported while the log is being cut.
        assert_eq!(c.poll_transmit(t0), None);
        // The epoch list is cut only after the log.
        assert_eq!(c.epochs(), &epochs(&[(1, 0), (2, 100_000)]));
        c.handle_truncated(t0, 100_000).unwrap();
        assert_eq!(events(&mut c), vec![ClientEvent::EpochsChanged]);
        assert_eq!(c.epochs(), &epochs(&[(1, 0)]));
        assert_eq!(report(&mut c, t0), Some(100_000));
        c.handle_input(
            t0,
            &mut frame(Some(100_000), 3, 100_000, Some(100_000), b"xyz"),
        )
        .unwrap();
        assert_eq!(
            events(&mut c),
            vec![
                ClientEvent::EpochsChanged,
                ClientEvent::Append {
                    offset: 100_000,
                    data: Bytes::from_static(b"xyz")
                }
            ]
        );
        assert_eq!(c.epochs(), &epochs(&[(1, 0), (3, 100_000)]));
        c.handle_appended(100_003);
        assert_eq!(report(&mut c, t0), Some(100_003));
    }

    #[test]
    fn a_cut_finished_after_the_connection_failed_still_cuts_the_epochs() {
        let (mut c, t0) = connected(epochs(&[(1, 0), (2, 100)]), 150);
        c.handle_input(t0, &mut answer(&[(1, 0), (3, 120)], 200))
            .unwrap();
        assert_eq!(events(&mut c), vec![ClientEvent::Truncate { offset: 100 }]);
        c.handle_disconnected(t0);
        c.handle_truncated(t0, 100).unwrap();
        assert_eq!(events(&mut c), vec![ClientEvent::EpochsChanged]);
        assert_eq!(c.epochs(), &epochs(&[(1, 0)]));
        assert_eq!(c.connection_state(), ConnectionState::Ready);
        assert!(c.handle_truncated(t0, 100).is_err());
    }

    #[test]
    fn an_epoch_dropped_at_the_handshake_is_recorded_again_by_the_next_frame() {
        // Found by the switch simulation (then `tests/autoswitch_switches.rs`).
        let (mut c, t0) = connected(epochs(&[(1, 0), (5, 50)]), 100);
        let master = [(1, 0), (5, 50), (6, 100)];
        c.handle_input(t0, &mut answer(&master, 300)).unwrap();
        c.handle_input(t0, &mut frame(Some(100), 6, 100, None, &[]))
            .unwrap();
        assert_eq!(c.epochs(), &epochs(&master));
        // Reconnect: the local log ends where epoch 6 starts, so the handshake drops (6, 100)
        // from the list, as Java does ...
        c.handle_disconnected(t0);
        let at = c.poll_timeout().unwrap();
        c.handle_timeout(at).unwrap();
        events(&mut c);
        c.handle_connected(at, 100);
        let hs = c.poll_transmit(at).unwrap();
        c.handle_written(at, hs.as_bytes().len()).unwrap();
        c.handle_input(at, &mut answer(&master, 300)).unwrap();
        assert_eq!(events(&mut c), vec![ClientEvent::EpochsChanged]);
        assert_eq!(c.epochs(), &epochs(&[(1, 0), (5, 50)]));
        // ... and the next frame of epoch 6 records it again before its bytes (Java would not:
        // its last received epoch is still 6).
        c.handle_input(at, &mut frame(Some(100), 6, 100, None, b"abc"))
            .unwrap();
        assert_eq!(events(&mut c)[0], ClientEvent::EpochsChanged);
        assert_eq!(c.epochs(), &epochs(&master));
    }

    #[test]
    fn a_log_behind_the_point_is_not_cut() {
        let (mut c, t0) = connected(epochs(&[(1, 0)]), 50);
        c.handle_input(t0, &mut answer(&[(1, 0), (2, 80)], 100))
            .unwrap();
        assert!(events(&mut c).is_empty());
        assert_eq!(report(&mut c, t0), Some(50));
    }

    #[test]
    fn no_consistent_point_closes_and_redials_after_a_back_off() {
        let (mut c, t0) = connected(epochs(&[(1, 100), (2, 300)]), 400);
        assert_eq!(
            c.handle_input(t0, &mut answer(&[(1, 200), (2, 500)], 600)),
            Err(ClientError::NoConsistentPoint)
        );
        assert_eq!(c.connection_state(), ConnectionState::Ready);
        let at = c.poll_timeout().expect("reconnect deadline");
        assert!(at > t0);
        c.handle_timeout(at).unwrap();
        assert_eq!(c.poll_event(), Some(ClientEvent::Connect));
    }

    #[test]
    fn frames_must_continue_the_log() {
        let (mut c, t0) = connected(epochs(&[(1, 0)]), 10);
        c.handle_input(t0, &mut answer(&[(1, 0)], 20)).unwrap();
        assert_eq!(
            c.handle_input(t0, &mut frame(Some(11), 1, 0, None, b"a")),
            Err(ClientError::OffsetMismatch {
                offset: 11,
                stored: 10
            })
        );
    }

    #[test]
    fn an_answer_before_the_handshake_is_written_closes() {
        let t0 = Instant::now();
        let mut c = Client::new(Config::default(), ME, EpochList::new(), 7, t0);
        c.poll_event();
        c.handle_connected(t0, 0);
        assert_eq!(
            c.handle_input(t0, &mut answer(&[(1, 0)], 0)),
            Err(ClientError::AnswerBeforeHandshake)
        );
        c.handle_disconnected(t0);
        let at = c.poll_timeout().unwrap();
        c.handle_timeout(at).unwrap();
        c.poll_event();
        c.handle_connected(at, 0);
        // Once handed out, an answer may overtake the driver's report that it was written.
        let hs = c.poll_transmit(at).unwrap();
        c.handle_written(at, 8).unwrap();
        c.handle_input(at, &mut answer(&[(1, 0)], 0)).unwrap();
        assert_eq!(hs.as_bytes().len(), 16);
        c.handle_written(at, 8).unwrap();
        assert_eq!(report(&mut c, at), Some(0));
    }

    #[test]
    fn an_answer_during_transfer_is_a_state_mismatch() {
        let (mut c, t0) = connected(EpochList::new(), 0);
        c.handle_input(t0, &mut answer(&[(1, 0)], 0)).unwrap();
        assert_eq!(
            c.handle_input(t0, &mut answer(&[(1, 0)], 0)),
            Err(ClientError::StateMismatch {
                got: ConnectionState::Handshake,
                expected: ConnectionState::Transfer
            })
        );
    }

    #[test]
    fn javas_label_for_the_chunk_closing_an_epoch_is_accepted() {
        // §5.5, as captured from Java 5.3.3: epochs 1-0, 2-50000; the frame at 32768 of 17232 bytes is labelled
        // epoch 2, start 50000.
        let (mut c, t0) = connected(epochs(&[(1, 0)]), 32_768);
        c.handle_input(t0, &mut answer(&[(1, 0), (2, 50_000)], 60_000))
            .unwrap();
        let body = vec![7u8; 17_232];
        c.handle_input(t0, &mut frame(Some(32_768), 2, 50_000, None, &body))
            .unwrap();
        assert_eq!(c.epochs(), &epochs(&[(1, 0), (2, 50_000)]));
        // A label starting anywhere else past the frame cannot be right.
        let (mut c, t0) = connected(epochs(&[(1, 0)]), 32_768);
        c.handle_input(t0, &mut answer(&[(1, 0), (2, 50_000)], 60_000))
            .unwrap();
        assert!(matches!(
            c.handle_input(t0, &mut frame(Some(32_768), 2, 50_001, None, &body)),
            Err(ClientError::EpochStartAfterFrame { .. })
        ));
    }

    #[test]
    fn the_confirm_offset_follows_stored_bytes_and_never_goes_back() {
        let (mut c, t0) = connected(epochs(&[(1, 0)]), 0);
        c.handle_input(t0, &mut answer(&[(1, 0)], 10)).unwrap();
        c.handle_input(t0, &mut frame(Some(0), 1, 0, Some(8), b"0123456789"))
            .unwrap();
        // Not stored yet: nothing confirmed here.
        assert_eq!(c.confirm_offset(), Some(0));
        c.handle_appended(4);
        assert_eq!(c.confirm_offset(), Some(4));
        c.handle_appended(10);
        assert_eq!(c.confirm_offset(), Some(8));
        c.handle_input(t0, &mut frame(Some(10), 1, 0, Some(5), &[]))
            .unwrap();
        assert_eq!(c.confirm_offset(), Some(8));
    }

    #[test]
    fn reports_repeat_every_heartbeat_interval() {
        let (mut c, t0) = connected(EpochList::new(), 0);
        c.handle_input(t0, &mut answer(&[(1, 0)], 0)).unwrap();
        assert_eq!(report(&mut c, t0), Some(0));
        let t1 = t0 + Duration::from_secs(1);
        c.handle_timeout(t1).unwrap();
        assert_eq!(report(&mut c, t1), None);
        let beat = c.poll_timeout().unwrap();
        assert_eq!(beat, t0 + Config::default().heartbeat_interval());
        c.handle_timeout(beat).unwrap();
        assert_eq!(report(&mut c, beat), Some(0));
    }

    #[test]
    fn silence_closes() {
        let (mut c, t0) = connected(EpochList::new(), 0);
        let late = t0 + Config::default().housekeeping_interval();
        assert!(matches!(
            c.handle_timeout(late),
            Err(ClientError::Silent(_))
        ));
        assert_eq!(c.connection_state(), ConnectionState::Ready);
    }
}
