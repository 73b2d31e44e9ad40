//! The master's side of one AutoSwitch slave connection (Java's `AutoSwitchHAConnection`, §5.5).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};

use super::epoch::EpochList;
use super::error::MasterError;
use super::sync_state::BrokerId;
use super::wire::{
    MasterHandshake, SlaveFrame, SlaveFrameDecoder, SlaveHandshake, TransferHeader,
    TRANSFER_HEADER_LEN,
};
use crate::config::Config;
use crate::connection_state::ConnectionState;
use crate::flow::Budget;
use crate::log::{segment_start, LogSource};
use crate::timer::{Clock, Timer, TimerTable};

/// How often a slave that stays caught up is reported as such: often enough for the
/// sync-state set's 15-second shrink rule, rarely enough not to flood the event queue (Java
/// refreshes every 100 ms loop).
pub const CAUGHT_UP_REFRESH: Duration = Duration::from_secs(1);

/// What a [`MasterConnection`] tells its driver and the [`SyncStateSet`](super::SyncStateSet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive] // more connection facts may be surfaced
pub enum MasterEvent {
    /// The slave introduced itself; register it with
    /// [`SyncStateSet::handle_connected`](super::SyncStateSet::handle_connected).
    Handshake(SlaveHandshake),
    /// The slave's log ends at `offset`. Forward to
    /// [`SyncStateSet::handle_ack`](super::SyncStateSet::handle_ack) with `learner` and
    /// `last_transfer` as given.
    Acked {
        /// The slave's broker id.
        broker_id: BrokerId,
        /// The slave's max offset.
        offset: u64,
        /// Whether the slave is an async learner.
        learner: bool,
        /// The master's max offset and the time when this connection last sent data.
        last_transfer: Option<(u64, Instant)>,
    },
    /// Nothing is left to send the slave: it is caught up now. Forward to
    /// [`SyncStateSet::handle_caught_up`](super::SyncStateSet::handle_caught_up).
    CaughtUp {
        /// The slave's broker id.
        broker_id: BrokerId,
    },
}

/// One frame to write: the handshake answer, or a 36-byte transfer header and a zero-copy body.
///
/// It implements [`Buf`]: write it (vectored), [`Buf::advance`] by what was written, and when
/// nothing remains call [`MasterConnection::on_transmitted`].
#[derive(Debug, Clone)]
pub struct Transmit {
    header: Option<TransferHeader>,
    head: [u8; TRANSFER_HEADER_LEN],
    head_len: usize,
    head_written: usize,
    body: Bytes,
}

impl Transmit {
    fn transfer(header: TransferHeader, body: Bytes) -> Self {
        Transmit {
            header: Some(header),
            head: header.encode(),
            head_len: TRANSFER_HEADER_LEN,
            head_written: 0,
            body,
        }
    }

    /// The handshake answer travels as one buffer, so a driver writes it in one piece
    /// whenever the socket takes it (§5.2).
    fn handshake(answer: Bytes) -> Self {
        Transmit {
            header: None,
            head: [0; TRANSFER_HEADER_LEN],
            head_len: 0,
            head_written: 0,
            body: answer,
        }
    }

    /// The transfer header, or `None` for the handshake answer.
    pub fn header(&self) -> Option<TransferHeader> {
        self.header
    }

    /// Whether this is a heartbeat (a transfer frame without body).
    pub fn is_heartbeat(&self) -> bool {
        self.header.is_some_and(|h| h.body_len == 0)
    }
}

impl Buf for Transmit {
    fn remaining(&self) -> usize {
        self.head_len - self.head_written + self.body.len()
    }

    fn chunk(&self) -> &[u8] {
        if self.head_written < self.head_len {
            &self.head[self.head_written..self.head_len]
        } else {
            &self.body
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        if self.head_written < self.head_len && n < dst.len() {
            dst[n] = IoSlice::new(&self.head[self.head_written..self.head_len]);
            n += 1;
        }
        if !self.body.is_empty() && n < dst.len() {
            dst[n] = IoSlice::new(&self.body);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        let from_head = cnt.min(self.head_len - self.head_written);
        self.head_written += from_head;
        cnt -= from_head;
        assert!(
            cnt <= self.body.len(),
            "advanced past the end of a Transmit"
        );
        self.body.advance(cnt);
    }
}

/// The master's state machine for one AutoSwitch slave (Java's `AutoSwitchHAConnection`, §5.5).
///
/// It does no I/O and reads no clock. The crate's [run loop](crate#the-run-loop) applies:
/// 1. Feed reads to [`handle_input`](Self::handle_input); on EOF drop the machine and tell the
///    [`SyncStateSet`](super::SyncStateSet) (`handle_disconnected`).
/// 2. At [`poll_timeout`](Self::poll_timeout) call [`handle_timeout`](Self::handle_timeout).
/// 3. Drain [`poll_event`](Self::poll_event) into the sync-state set.
/// 4. Call [`poll_transmit`](Self::poll_transmit) with the log, the master's epoch list and its
///    current confirm offset; write the [`Transmit`], then call
///    [`on_transmitted`](Self::on_transmitted). One frame is in flight at a time.
/// 5. Sleep until bytes arrive, the frame is written, the log grows or the deadline passes.
///
/// Any `Err` means: close the connection.
///
/// # Rules implemented
/// * §5.1 the slave's handshake (broker id, learner and last-file flags) comes first; a report
///   before it is an error. Another handshake later restarts the exchange.
/// * §5.5 HANDSHAKE: the answer carries the master's epoch list and max offset at the time it
///   is built; no heartbeats are sent until the slave's first report.
/// * §5.5 TRANSFER: request 0 starts at the oldest retained offset, or at the last segment for
///   a `syncFromLastFile` slave; a request outside `[min, max]` is an error (Java heartbeats
///   forever). A frame carries at most `transfer_batch_size` bytes, never crosses a segment
///   and **never crosses an epoch**: it is cut at the epoch's end and labelled with the epoch
///   its bytes belong to (Java labels the closing chunk with the next epoch, §5.5;
///   the Java slave accepts both). The epoch is looked up per frame in the current list, so an
///   epoch begun while the connection is open is honoured (Java's #9689 is not).
/// * Heartbeats (size 0 at the next offset, labelled with that offset's epoch) after
///   `heartbeat_interval` without a write; housekeeping closes after `housekeeping_interval`
///   without a read; a frame stalled for `write_stall_timeout` closes.
#[derive(Debug)]
pub struct MasterConnection {
    config: Config,
    clock: Clock,
    timers: TimerTable,
    frames: SlaveFrameDecoder,
    state: ConnectionState,
    slave: Option<SlaveHandshake>,
    /// The handshake answer is owed to the slave.
    answer_due: bool,
    request: Option<u64>,
    ack: Option<u64>,
    next: Option<u64>,
    in_flight: bool,
    /// `(master max, time)` when data was last sent (`lastMasterMaxOffset`, `lastTransferTimeMs`).
    last_transfer: Option<(u64, Instant)>,
    last_read: Instant,
    last_write_progress: Instant,
    last_caught_up_event: Option<Instant>,
    events: VecDeque<MasterEvent>,
    /// The flow-control budget (§3.9, as for the classic master), when a rate limit is set.
    budget: Option<Budget>,
    /// When the budget will let the waiting data go.
    flow_ready: Option<Instant>,
}

impl MasterConnection {
    /// A connection accepted at `now`; housekeeping starts now.
    pub fn new(config: Config, now: Instant) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Housekeeping, now + config.housekeeping_interval());
        MasterConnection {
            config,
            clock: Clock::new(now),
            timers,
            frames: SlaveFrameDecoder::new(),
            state: ConnectionState::Handshake,
            slave: None,
            answer_due: false,
            request: None,
            ack: None,
            next: None,
            in_flight: false,
            last_transfer: None,
            last_read: now,
            last_write_progress: now,
            last_caught_up_event: None,
            events: VecDeque::new(),
            budget: config
                .rate_limit()
                .map(|rate| Budget::new(rate, Self::budget_capacity(&config), now)),
            flow_ready: None,
        }
    }

    /// The flow-control budget holds one full frame.
    fn budget_capacity(config: &Config) -> u64 {
        u64::from(config.transfer_batch_size()) + TRANSFER_HEADER_LEN as u64
    }

    /// Sets or lifts the rate limit at run time (§3.9): the bytes a second, headers and bodies,
    /// this connection may send. RocketMQ's AutoSwitch master has no flow control; ours limits
    /// as the classic master does.
    pub fn set_rate_limit(&mut self, now: Instant, rate: Option<std::num::NonZeroU64>) {
        let now = self.clock.advance(now);
        let capacity = Self::budget_capacity(&self.config);
        Budget::update(&mut self.budget, rate, capacity, now);
        self.flow_ready = None;
    }

    /// The rate limit in force, in bytes a second.
    pub fn rate_limit(&self) -> Option<u64> {
        self.budget.as_ref().map(Budget::rate)
    }

    // --- getters ---

    /// `HANDSHAKE` until the slave's first report, then `TRANSFER`; `SHUTDOWN` once closed.
    pub fn connection_state(&self) -> ConnectionState {
        self.state
    }

    /// The slave's handshake, once received.
    pub fn slave(&self) -> Option<SlaveHandshake> {
        self.slave
    }

    /// The slave's first report after the handshake.
    pub fn request_offset(&self) -> Option<u64> {
        self.request
    }

    /// The slave's last report.
    pub fn ack_offset(&self) -> Option<u64> {
        self.ack
    }

    /// The next offset to send, once known.
    pub fn next_offset(&self) -> Option<u64> {
        self.next
    }

    /// Whether a [`Transmit`] is out and not yet reported written.
    pub fn is_transmitting(&self) -> bool {
        self.in_flight
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.state == ConnectionState::Shutdown
    }

    // --- input ---

    /// Bytes read from the slave.
    pub fn handle_input(&mut self, now: Instant, mut input: &[u8]) -> Result<(), MasterError> {
        self.ensure_open()?;
        let now = self.clock.advance(now);
        if !input.is_empty() {
            self.last_read = now;
            self.timers.set(
                Timer::Housekeeping,
                now + self.config.housekeeping_interval(),
            );
        }
        loop {
            let frame = match self.frames.next_frame(&mut input) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => return self.fail(e.into()),
            };
            match frame {
                SlaveFrame::Handshake(hs) => {
                    // A new handshake (re)starts the exchange: the slave may have truncated
                    // since, so nothing about its log is assumed.
                    self.slave = Some(hs);
                    self.state = ConnectionState::Handshake;
                    self.answer_due = true;
                    self.request = None;
                    self.ack = None;
                    self.next = None;
                    self.last_transfer = None;
                    self.events.push_back(MasterEvent::Handshake(hs));
                }
                SlaveFrame::Report(offset) => {
                    let Some(slave) = self.slave else {
                        return self.fail(MasterError::ReportBeforeHandshake);
                    };
                    if self.request.is_none() {
                        self.request = Some(offset);
                        self.state = ConnectionState::Transfer;
                        // The first frame goes out at once, a heartbeat if there is no data,
                        // so the slave learns the epoch and confirm offset without waiting.
                        self.timers.stop(Timer::Heartbeat);
                    }
                    self.ack = Some(offset);
                    self.events.push_back(MasterEvent::Acked {
                        broker_id: slave.broker_id,
                        offset,
                        learner: slave.async_learner,
                        last_transfer: self.last_transfer,
                    });
                }
            }
        }
    }

    /// Time passed; fails when the slave has been silent or a write stalled too long.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), MasterError> {
        self.ensure_open()?;
        let now = self.clock.advance(now);
        if self.in_flight && self.timers.is_expired(Timer::WriteStall, now) {
            let stalled = now - self.last_write_progress;
            return self.fail(MasterError::WriteStalled(stalled));
        }
        if self.timers.is_expired(Timer::Housekeeping, now) {
            let idle = now - self.last_read;
            return self.fail(MasterError::Silent(idle));
        }
        Ok(())
    }

    /// Part of the frame in flight was written: the write-stall limit starts again.
    pub fn handle_write_progress(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        if self.in_flight && !self.is_closed() {
            self.last_write_progress = now;
            self.timers
                .set(Timer::WriteStall, now + self.config.write_stall_timeout());
        }
    }

    /// The [`Transmit`] from [`poll_transmit`](Self::poll_transmit) is fully written.
    pub fn on_transmitted(&mut self, now: Instant) -> Result<(), MasterError> {
        self.ensure_open()?;
        let now = self.clock.advance(now);
        if !self.in_flight {
            return self.fail(MasterError::Misuse(
                "on_transmitted without a frame in flight",
            ));
        }
        self.in_flight = false;
        self.timers.stop(Timer::WriteStall);
        self.timers
            .set(Timer::Heartbeat, now + self.config.heartbeat_interval());
        Ok(())
    }

    // --- output ---

    /// The next frame: the handshake answer when owed, else log data at the next offset, else a
    /// heartbeat when due. `epochs` is the master's epoch list and `confirm_offset` its current
    /// confirm offset ([`SyncStateSet::confirm_offset`](super::SyncStateSet::confirm_offset)).
    pub fn poll_transmit<L: LogSource + ?Sized>(
        &mut self,
        now: Instant,
        log: &L,
        epochs: &EpochList,
        confirm_offset: Option<u64>,
    ) -> Result<Option<Transmit>, MasterError> {
        if self.is_closed() || self.in_flight {
            return Ok(None);
        }
        let now = self.clock.advance(now);
        if self.answer_due {
            self.answer_due = false;
            let answer = MasterHandshake {
                max_offset: log.max_offset(),
                epochs: epochs.clone(),
            };
            return Ok(Some(
                self.hand_out(now, Transmit::handshake(answer.encode())),
            ));
        }
        if self.state != ConnectionState::Transfer {
            return Ok(None);
        }
        let next = match self.next {
            Some(next) => next,
            None => match self.first_offset(log) {
                Ok(next) => *self.next.insert(next),
                Err(e) => return self.fail(e),
            },
        };
        let Some((epoch, epoch_end)) = epochs.find_by_offset(next) else {
            return self.fail(MasterError::NoEpochFor(next));
        };
        let segment_size = log.segment_size();
        let segment_left = segment_start(next, segment_size) + segment_size - next;
        let epoch_left = epoch_end.map_or(u64::MAX, |end| end - next);
        let max_len = segment_left
            .min(epoch_left)
            .min(u64::from(self.config.transfer_batch_size())) as usize;
        let mut body = match log.read(next, max_len) {
            Ok(body) => body,
            Err(e) => return self.fail(MasterError::Log(e.to_string())),
        };
        let header = |body_len: u32| TransferHeader {
            body_len,
            offset: Some(next),
            epoch: epoch.epoch,
            epoch_start: epoch.start,
            confirm_offset,
        };
        if !body.is_empty() {
            // A log returning more than asked must not make a frame cross an epoch.
            body.truncate(max_len);
            if let Some(budget) = self.budget.as_mut() {
                let header_len = TRANSFER_HEADER_LEN as u64;
                match budget.admit(header_len, body.len() as u64, now) {
                    Ok(allowed) => body.truncate(allowed as usize),
                    Err(ready) => {
                        self.flow_ready = Some(ready);
                        return Ok(self.heartbeat_if_due(now, header(0)));
                    }
                }
            }
            self.flow_ready = None;
            let h = header(body.len() as u32);
            self.next = Some(next + u64::from(h.body_len));
            self.last_transfer = Some((log.max_offset(), now));
            return Ok(Some(self.hand_out(now, Transmit::transfer(h, body))));
        }
        if let Some(broker_id) = self.slave.map(|s| s.broker_id) {
            let refresh_due = self
                .last_caught_up_event
                .is_none_or(|at| now.saturating_duration_since(at) >= CAUGHT_UP_REFRESH);
            if refresh_due {
                self.last_caught_up_event = Some(now);
                self.events.push_back(MasterEvent::CaughtUp { broker_id });
            }
        }
        self.flow_ready = None;
        Ok(self.heartbeat_if_due(now, header(0)))
    }

    /// A heartbeat when one is due. It goes even on a spent budget (on credit): the slave's
    /// housekeeping must not close a connection that is only being held back.
    fn heartbeat_if_due(&mut self, now: Instant, header: TransferHeader) -> Option<Transmit> {
        if !self.heartbeat_due(now) {
            return None;
        }
        if let Some(budget) = self.budget.as_mut() {
            budget.spend(TRANSFER_HEADER_LEN as u64, now);
        }
        Some(self.hand_out(now, Transmit::transfer(header, Bytes::new())))
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<MasterEvent> {
        self.events.pop_front()
    }

    /// The next deadline: housekeeping, the write-stall limit, and in `TRANSFER` the heartbeat
    /// and the caught-up refresh; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let now = self.clock.latest();
        let (work, refresh) = if self.in_flight {
            (self.timers.get(Timer::WriteStall), None)
        } else if self.answer_due {
            (Some(now), None)
        } else if self.state == ConnectionState::Transfer {
            let heartbeat = self.timers.get(Timer::Heartbeat).unwrap_or(now);
            let refresh = self.last_caught_up_event.map(|at| at + CAUGHT_UP_REFRESH);
            let work = self
                .flow_ready
                .map_or(heartbeat, |ready| ready.min(heartbeat));
            (Some(work), refresh)
        } else {
            (None, None)
        };
        [self.timers.get(Timer::Housekeeping), work, refresh]
            .into_iter()
            .flatten()
            .min()
    }

    // --- rules ---

    /// §5.5 where transfer starts, from the slave's first report.
    fn first_offset<L: LogSource + ?Sized>(&self, log: &L) -> Result<u64, MasterError> {
        let request = self.request.unwrap_or(0);
        let (min, max) = (log.min_offset(), log.max_offset());
        if request == 0 {
            let last_file = self.slave.is_some_and(|s| s.sync_from_last_file);
            return Ok(if last_file {
                segment_start(max, log.segment_size()).max(min)
            } else {
                min
            });
        }
        if request < min || request > max {
            return Err(MasterError::RequestOutOfRange {
                offset: request,
                min,
                max,
            });
        }
        Ok(request)
    }

    fn heartbeat_due(&self, now: Instant) -> bool {
        // Stopped while a frame is out and after the first report: due at once.
        self.timers
            .get(Timer::Heartbeat)
            .is_none_or(|deadline| deadline <= now)
    }

    fn hand_out(&mut self, now: Instant, transmit: Transmit) -> Transmit {
        self.in_flight = true;
        self.last_write_progress = now;
        self.timers.stop(Timer::Heartbeat);
        self.timers
            .set(Timer::WriteStall, now + self.config.write_stall_timeout());
        transmit
    }

    fn ensure_open(&self) -> Result<(), MasterError> {
        if self.is_closed() {
            return Err(MasterError::Misuse("the connection is closed"));
        }
        Ok(())
    }

    fn fail<T>(&mut self, e: MasterError) -> Result<T, MasterError> {
        self.state = ConnectionState::Shutdown;
        self.timers.stop_all();
        self.in_flight = false;
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoswitch::epoch::EpochEntry;
    use crate::autoswitch::wire::{decode_master_frame, encode_report, MasterFrame};
    use crate::autoswitch::WireError;
    use crate::MemoryLog;
    use bytes::BytesMut;

    fn epochs(entries: &[(i32, u64)]) -> EpochList {
        EpochList::from_entries(entries.iter().map(|&(e, s)| EpochEntry::new(e, s))).unwrap()
    }

    fn log(len: usize, segment: u64) -> MemoryLog {
        let mut log = MemoryLog::new(segment);
        log.push((0..len).map(|i| i as u8).collect::<Vec<u8>>());
        log
    }

    fn handshake(id: BrokerId, last_file: bool, learner: bool) -> [u8; 16] {
        SlaveHandshake {
            sync_from_last_file: last_file,
            async_learner: learner,
            broker_id: id,
        }
        .encode()
    }

    fn config(batch: u32) -> Config {
        Config::builder()
            .transfer_batch_size(batch)
            .build()
            .unwrap()
    }

    /// Sends the transmit through the wire codec and decodes it as the slave would.
    fn deliver(m: &mut MasterConnection, now: Instant, mut t: Transmit) -> MasterFrame {
        let mut wire = BytesMut::new();
        while t.has_remaining() {
            let n = t.chunk().len();
            wire.extend_from_slice(t.chunk());
            t.advance(n);
        }
        m.on_transmitted(now).unwrap();
        let frame = decode_master_frame(&mut wire, 1 << 22).unwrap().unwrap();
        assert!(wire.is_empty());
        frame
    }

    fn send(
        m: &mut MasterConnection,
        now: Instant,
        log: &MemoryLog,
        list: &EpochList,
        confirm: Option<u64>,
    ) -> (TransferHeader, Bytes) {
        let t = m.poll_transmit(now, log, list, confirm).unwrap().unwrap();
        transfer(deliver(m, now, t))
    }

    fn transfer(frame: MasterFrame) -> (TransferHeader, Bytes) {
        match frame {
            MasterFrame::Transfer { header, body } => (header, body),
            other => panic!("expected a transfer frame, got {other:?}"),
        }
    }

    #[test]
    fn the_answer_carries_the_epoch_list_and_nothing_precedes_the_handshake() {
        let t0 = Instant::now();
        let log = log(100, 1 << 20);
        let list = epochs(&[(1, 0), (2, 40)]);
        let mut m = MasterConnection::new(Config::default(), t0);
        assert!(m.poll_transmit(t0, &log, &list, Some(0)).unwrap().is_none());
        m.handle_input(t0, &handshake(7, false, false)).unwrap();
        assert_eq!(
            m.poll_event(),
            Some(MasterEvent::Handshake(SlaveHandshake {
                sync_from_last_file: false,
                async_learner: false,
                broker_id: 7
            }))
        );
        let t = m.poll_transmit(t0, &log, &list, Some(0)).unwrap().unwrap();
        assert_eq!(t.header(), None);
        let frame = deliver(&mut m, t0, t);
        assert_eq!(
            frame,
            MasterFrame::Handshake(MasterHandshake {
                max_offset: 100,
                epochs: list.clone()
            })
        );
        // No heartbeat while waiting for the first report, however long.
        let later = t0 + Duration::from_secs(10);
        assert!(m
            .poll_transmit(later, &log, &list, Some(0))
            .unwrap()
            .is_none());
        assert_eq!(m.connection_state(), ConnectionState::Handshake);
    }

    #[test]
    fn a_rate_limit_holds_over_every_window() {
        let t0 = Instant::now();
        let rate = 64 * 1024;
        let batch = 16 * 1024;
        let data = log(1 << 20, 1 << 30);
        let list = epochs(&[(1, 0)]);
        let mut m = MasterConnection::new(config(batch), t0);
        m.set_rate_limit(t0, std::num::NonZeroU64::new(rate));
        assert_eq!(m.rate_limit(), Some(rate));
        m.handle_input(t0, &handshake(2, false, false)).unwrap();
        let answer = m.poll_transmit(t0, &data, &list, None).unwrap().unwrap();
        deliver(&mut m, t0, answer);
        m.handle_input(t0, &encode_report(0)).unwrap();
        // Ten seconds of a driver that sends whenever it may and otherwise sleeps until the
        // machine's deadline; the slave keeps reporting so housekeeping stays quiet.
        let mut now = t0;
        let mut sent: Vec<(Instant, u64)> = Vec::new();
        let mut next = 0;
        while now < t0 + Duration::from_secs(10) {
            match m.poll_transmit(now, &data, &list, None).unwrap() {
                Some(t) => {
                    let len = t.remaining() as u64;
                    let (header, body) = transfer(deliver(&mut m, now, t));
                    assert_eq!(header.offset, Some(next), "frames follow each other");
                    next += body.len() as u64;
                    sent.push((now, len));
                    m.handle_input(now, &encode_report(next)).unwrap();
                }
                None => {
                    let deadline = m.poll_timeout().unwrap();
                    assert!(deadline > now, "a deadline in the past would spin");
                    now = deadline;
                    m.handle_timeout(now).unwrap();
                }
            }
        }
        assert!(next > 0);
        // Over any window, at most the rate, one frame and one heartbeat on credit.
        let frame = u64::from(batch) + TRANSFER_HEADER_LEN as u64;
        for (i, &(start, _)) in sent.iter().enumerate() {
            let mut bytes = 0;
            for &(at, len) in &sent[i..] {
                bytes += len;
                let window = (at - start).as_secs_f64();
                let allowed = rate as f64 * window + (frame + TRANSFER_HEADER_LEN as u64) as f64;
                assert!(bytes as f64 <= allowed, "{bytes} bytes in {window} s");
            }
        }
        // And the limit is used: nine of the ten seconds' worth at least.
        assert!(next >= 9 * rate, "only {next} bytes in 10 s");
    }

    #[test]
    fn a_report_before_the_handshake_closes() {
        let t0 = Instant::now();
        let mut m = MasterConnection::new(Config::default(), t0);
        assert_eq!(
            m.handle_input(t0, &encode_report(0)),
            Err(MasterError::ReportBeforeHandshake)
        );
        assert!(m.is_closed());
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn illegal_states_from_the_slave_close() {
        let t0 = Instant::now();
        let mut m = MasterConnection::new(Config::default(), t0);
        assert_eq!(
            m.handle_input(t0, &[0, 0, 0, 3]),
            Err(MasterError::Wire(WireError::IllegalState(
                ConnectionState::Suspend
            )))
        );
    }

    fn started(
        batch: u32,
        log: &MemoryLog,
        list: &EpochList,
        hs: [u8; 16],
        request: u64,
    ) -> (MasterConnection, Instant) {
        let t0 = Instant::now();
        let mut m = MasterConnection::new(config(batch), t0);
        m.handle_input(t0, &hs).unwrap();
        let t = m.poll_transmit(t0, log, list, Some(0)).unwrap().unwrap();
        deliver(&mut m, t0, t);
        m.handle_input(t0, &encode_report(request)).unwrap();
        (m, t0)
    }

    #[test]
    fn frames_never_cross_an_epoch_and_carry_its_own_label() {
        let log = log(100, 1 << 20);
        let list = epochs(&[(1, 0), (2, 50)]);
        let (mut m, t0) = started(1000, &log, &list, handshake(2, false, false), 0);
        let (h, body) = send(&mut m, t0, &log, &list, Some(10));
        assert_eq!(
            (h.offset, h.body_len, h.epoch, h.epoch_start),
            (Some(0), 50, 1, 0)
        );
        assert_eq!(h.confirm_offset, Some(10));
        assert_eq!(&body[..], &log.copy_range(0, 50).unwrap()[..]);
        let (h, _) = send(&mut m, t0, &log, &list, Some(10));
        assert_eq!(
            (h.offset, h.body_len, h.epoch, h.epoch_start),
            (Some(50), 50, 2, 50)
        );
        assert_eq!(m.next_offset(), Some(100));
    }

    #[test]
    fn an_epoch_begun_mid_connection_bounds_the_next_frame() {
        let mut log = log(30, 1 << 20);
        let mut list = epochs(&[(1, 0)]);
        let (mut m, t0) = started(1000, &log, &list, handshake(2, false, false), 0);
        let (h, _) = send(&mut m, t0, &log, &list, None);
        assert_eq!((h.body_len, h.epoch), (30, 1));
        // The master is re-elected at epoch 3 after appending 10 more bytes in epoch 1.
        log.push(vec![1u8; 10]);
        list.begin(3, 40).unwrap();
        log.push(vec![3u8; 10]);
        let (h, _) = send(&mut m, t0, &log, &list, None);
        assert_eq!((h.offset, h.body_len, h.epoch), (Some(30), 10, 1));
        let (h, _) = send(&mut m, t0, &log, &list, None);
        assert_eq!(
            (h.offset, h.body_len, h.epoch, h.epoch_start),
            (Some(40), 10, 3, 40)
        );
    }

    #[test]
    fn request_zero_starts_at_the_oldest_byte_or_the_last_segment() {
        let mut log = log(250, 100);
        log.delete_segments_before(100);
        let list = epochs(&[(1, 0)]);
        let (mut m, t0) = started(1000, &log, &list, handshake(2, false, false), 0);
        let t = m.poll_transmit(t0, &log, &list, None).unwrap().unwrap();
        assert_eq!(t.header().unwrap().offset, Some(100));
        // A frame never crosses a segment either.
        assert_eq!(t.header().unwrap().body_len, 100);
        let (mut m, t0) = started(1000, &log, &list, handshake(2, true, false), 0);
        let t = m.poll_transmit(t0, &log, &list, None).unwrap().unwrap();
        assert_eq!(t.header().unwrap().offset, Some(200));
        assert_eq!(t.header().unwrap().body_len, 50);
    }

    #[test]
    fn a_request_outside_the_log_closes() {
        let log = log(100, 1 << 20);
        let list = epochs(&[(1, 0)]);
        let (mut m, t0) = started(1000, &log, &list, handshake(2, false, false), 101);
        assert!(matches!(
            m.poll_transmit(t0, &log, &list, None),
            Err(MasterError::RequestOutOfRange {
                offset: 101,
                min: 0,
                max: 100
            })
        ));
    }

    #[test]
    fn an_offset_before_every_epoch_closes() {
        let log = log(100, 1 << 20);
        let list = epochs(&[(1, 20)]);
        let (mut m, t0) = started(1000, &log, &list, handshake(2, false, false), 0);
        assert_eq!(
            m.poll_transmit(t0, &log, &list, None).err(),
            Some(MasterError::NoEpochFor(0))
        );
    }

    #[test]
    fn a_caught_up_slave_gets_one_heartbeat_at_once_then_one_per_interval() {
        let log = log(100, 1 << 20);
        let list = epochs(&[(1, 0), (4, 100)]);
        let (mut m, t0) = started(1000, &log, &list, handshake(2, false, false), 100);
        let (h, body) = send(&mut m, t0, &log, &list, Some(100));
        assert!(body.is_empty());
        assert_eq!(
            h,
            TransferHeader {
                body_len: 0,
                offset: Some(100),
                epoch: 4,
                epoch_start: 100,
                confirm_offset: Some(100)
            }
        );
        let t1 = t0 + Duration::from_secs(1);
        assert!(m
            .poll_transmit(t1, &log, &list, Some(100))
            .unwrap()
            .is_none());
        let due = m.poll_timeout().unwrap();
        assert!(due <= t0 + Config::default().heartbeat_interval());
        let t5 = t0 + Config::default().heartbeat_interval();
        assert!(m
            .poll_transmit(t5, &log, &list, Some(100))
            .unwrap()
            .unwrap()
            .is_heartbeat());
    }

    #[test]
    fn acks_carry_the_last_transfer_and_caught_up_is_reported() {
        let log = log(100, 1 << 20);
        let list = epochs(&[(1, 0)]);
        let (mut m, t0) = started(1000, &log, &list, handshake(9, false, true), 0);
        m.poll_event();
        assert_eq!(
            m.poll_event(),
            Some(MasterEvent::Acked {
                broker_id: 9,
                offset: 0,
                learner: true,
                last_transfer: None
            })
        );
        let t = m.poll_transmit(t0, &log, &list, None).unwrap().unwrap();
        deliver(&mut m, t0, t);
        m.handle_input(t0, &encode_report(100)).unwrap();
        assert_eq!(
            m.poll_event(),
            Some(MasterEvent::Acked {
                broker_id: 9,
                offset: 100,
                learner: true,
                last_transfer: Some((100, t0))
            })
        );
        assert!(m.poll_transmit(t0, &log, &list, None).unwrap().is_none());
        assert_eq!(m.poll_event(), Some(MasterEvent::CaughtUp { broker_id: 9 }));
        assert_eq!(m.poll_event(), None);
    }

    #[test]
    fn a_second_handshake_restarts_the_exchange() {
        let log = log(100, 1 << 20);
        let list = epochs(&[(1, 0)]);
        let (mut m, t0) = started(10, &log, &list, handshake(2, false, false), 0);
        let t = m.poll_transmit(t0, &log, &list, None).unwrap().unwrap();
        deliver(&mut m, t0, t);
        m.handle_input(t0, &handshake(2, false, false)).unwrap();
        assert_eq!(m.next_offset(), None);
        let t = m.poll_transmit(t0, &log, &list, None).unwrap().unwrap();
        assert_eq!(t.header(), None);
    }

    #[test]
    fn silence_and_stalled_writes_close() {
        let log = log(100, 1 << 20);
        let list = epochs(&[(1, 0)]);
        let (mut m, t0) = started(10, &log, &list, handshake(2, false, false), 0);
        let _t = m.poll_transmit(t0, &log, &list, None).unwrap().unwrap();
        let stall = t0 + Config::default().write_stall_timeout();
        assert!(matches!(
            m.handle_timeout(stall),
            Err(MasterError::WriteStalled(_))
        ));
        let (mut m, t0) = started(10, &log, &list, handshake(2, false, false), 0);
        let late = t0 + Config::default().housekeeping_interval();
        assert!(matches!(
            m.handle_timeout(late),
            Err(MasterError::Silent(_))
        ));
    }
}
