//! The master's shared state: [`MasterHandle`], its sync waits, and one [`ConnectionGuard`] per
//! accepted slave.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event;
use futures_lite::FutureExt;
use rocketmq_ha::autoswitch::{self, BrokerId, EpochList};
use rocketmq_ha::flow::RateLimit;
use rocketmq_ha::{
    AckPolicy, Admission, Config, ConnectionId, ConnectionState, Decision, LogError, LogSink,
    LogSource, MasterEvent, MasterLoop, MasterService, Refusal, StartPosition, SyncError, Ticket,
    Traffic,
};
use tracing::Span;

use super::master_protocol::{AutoSwitchMaster, AutoSwitchState, MasterProtocol, SharedAutoSwitch};
use super::{block_until, lock, maybe, until, SharedLog, Stop, HISTORY};
use crate::frame_write::{self, Step};
use crate::observe::{CloseReason, TrafficCell};
use crate::stream::Acceptor;
use crate::Error;

/// One connected slave, as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive] // more per-slave figures will come (bytes, frames, lag)
pub struct SlaveInfo {
    /// The connection's id in the [`MasterService`].
    pub id: ConnectionId,
    /// The slave's address.
    pub peer: SocketAddr,
    /// The offset the slave asked for in its first report, once it arrived.
    pub requested: Option<u64>,
    /// Where the master's transfer to it starts, as its machine decided from the request
    /// (§3.3: an empty slave starts at the master's last segment); nothing is sent until the
    /// log passes it.
    pub start: Option<u64>,
    /// The slave's last acknowledged offset, once it reported.
    pub acked: Option<u64>,
    /// The connection's state (§3.10): `Transfer` while it is listed.
    pub state: ConnectionState,
    /// When the connection was accepted.
    pub connected_at: Instant,
    /// Bytes and frames moved so far on this connection.
    pub traffic: Traffic,
    /// AutoSwitch: the broker id the slave gave in its handshake (`None` for a classic
    /// slave, or before its handshake).
    pub broker_id: Option<BrokerId>,
}

/// A slave connection that ended, and why.
#[derive(Debug)]
#[non_exhaustive] // e.g. how long it lived, bytes sent
pub struct ClosedConnection {
    /// The connection's id.
    pub id: ConnectionId,
    /// The slave's address.
    pub peer: SocketAddr,
    /// `None` when the slave closed cleanly (EOF) or the master shut down.
    pub error: Option<Error>,
    /// The kind of end: a slave that exits is [`CloseReason::PeerClosed`], not an error, even
    /// when its exit reached the master as a broken pipe.
    pub reason: CloseReason,
    /// The offset the slave asked for, if it ever reported.
    pub requested: Option<u64>,
    /// What the connection moved over its life.
    pub traffic: Traffic,
}

/// Counts over the master's life, closed connections included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive] // e.g. refused before a byte was read, once access control comes
pub struct MasterTotals {
    /// Connections accepted.
    pub accepted: u64,
    /// Closed connections by reason.
    pub closes: BTreeMap<CloseReason, u64>,
    /// Bytes and frames of every connection, live and closed.
    pub traffic: Traffic,
}

/// One live connection, as the master's shared state keeps it.
struct Peer {
    addr: SocketAddr,
    requested: Option<u64>,
    start: Option<u64>,
    connected_at: Instant,
    traffic: Arc<TrafficCell>,
    broker_id: Option<BrokerId>,
}

/// A connection the master closed as it arrived, without reading from it (see
/// [`MasterHandle::set_admission`]). Only the refusals the [`Admission`] policy deems worth
/// reporting are kept: the first from each peer not allowed, the first each time the
/// connection limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive] // e.g. when it happened
pub struct RefusedConnection {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Why it was refused.
    pub reason: Refusal,
}

/// What a driver does with a socket it accepted.
// Made once per accepted socket and unpacked at once: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Accepted<L> {
    /// Serve it; dropping the guard unregisters it.
    Serve(ConnectionGuard<L>),
    /// Close it now, unread.
    Refuse,
    /// The master is shutting down.
    ShutDown,
}

/// The master's shared state, given to a driver and kept by the user: the commit log, the
/// [`MasterService`] all connections report to, and synchronous-replication waits.
///
/// Cloning is cheap (an `Arc`). Connection drivers forward every [`MasterEvent`] here; users
/// append with [`append`](Self::append) and wait for slaves with
/// [`wait_replicated_blocking`](Self::wait_replicated_blocking) (or the async `wait_replicated`
/// of the `smol` and `tokio` modules).
pub struct MasterHandle<L> {
    inner: Arc<MasterInner<L>>,
}

struct MasterInner<L> {
    log: SharedLog<L>,
    config: Config,
    state: Mutex<MasterState>,
    /// Fires on acks, completed waits, and connections opening or closing.
    changed: Event,
    stop: Stop,
    /// Plain TCP or TLS, for connections accepted from now on.
    acceptor: Mutex<Acceptor>,
    /// Changes whenever the rate limit or the number of connections does (a shared limit is
    /// split among them): connection loops compare it without taking the lock.
    rate_generation: AtomicU64,
    /// `Some` for an AutoSwitch master: the epochs it serves and its sync-state set.
    autoswitch: Option<SharedAutoSwitch>,
    /// Connections whose frames a producer may write itself, by id (see [`DirectWrite`]).
    direct: Mutex<Vec<DirectEntry<L>>>,
    /// Whether drivers send large bodies from their files (see
    /// [`MasterHandle::set_send_from_files`]).
    send_from_files: AtomicBool,
}

/// A connection producers may write to, by id (held weakly: the driver owns it).
type DirectEntry<L> = (ConnectionId, Weak<dyn DirectWrite<L>>);

/// A connection whose next frame the producer that appended it may write on its own thread,
/// sparing the wake-up of the connection's writer (a sync put then waits for three wake-ups
/// in turn, not four: slave, master reader, producer).
///
/// The driver keeps the exclusion: the producer writes only when the connection's own writer
/// is not in the middle of a frame, without blocking, and a frame the socket takes only in
/// part is finished by the writer, which the producer wakes after.
pub(crate) trait DirectWrite<L>: Send + Sync {
    /// Writes the connection's next frame now if nobody is writing it and the socket takes it
    /// without blocking. Returns whether the driver must be woken: `false` when nothing is
    /// left for it (the frame went out whole, there was none, or the driver is in the middle
    /// of a frame and looks at the log again after it); `true` when it must send what this
    /// did not.
    fn write_now(&self, log: &SharedLog<L>) -> bool;
}

/// A connection's loop as its driver and producers share it (behind the driver's mutex).
pub(crate) struct SharedLoop {
    pub(crate) lp: MasterProtocol,
    /// The driver is writing a frame (or may be, in an async race) outside the lock: nobody
    /// else may write now.
    pub(crate) writing: bool,
    /// The rate-limit generation the loop last took (see
    /// [`ConnectionGuard::apply_rate_limit`]).
    pub(crate) rate_seen: Option<u64>,
}

impl SharedLoop {
    pub(crate) fn new(lp: MasterProtocol) -> Self {
        SharedLoop {
            lp,
            writing: false,
            rate_seen: None,
        }
    }
}

struct MasterState {
    service: MasterService,
    /// The flow-control setting.
    rate_limit: Option<RateLimit>,
    peers: BTreeMap<ConnectionId, Peer>,
    /// Completed waits not yet collected by their waiter.
    done: HashMap<Ticket, Result<(), SyncError>>,
    /// Waits whose waiter went away (a cancelled future); their completion is dropped.
    abandoned: HashSet<Ticket>,
    closed: VecDeque<ClosedConnection>,
    /// Who may connect, and how many at once.
    admission: Admission,
    /// Refusals to report, oldest first.
    refused: VecDeque<RefusedConnection>,
    /// Counts of connections that closed; live ones are added when asked.
    totals: MasterTotals,
}

impl MasterState {
    /// Moves the service's completions to where waiters collect them.
    fn settle(&mut self) {
        while let Some(completion) = self.service.poll_completion() {
            if !self.abandoned.remove(&completion.ticket) {
                self.done.insert(completion.ticket, completion.result);
            }
        }
    }
}

impl<L> Clone for MasterHandle<L> {
    fn clone(&self) -> Self {
        MasterHandle {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<L> std::fmt::Debug for MasterHandle<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterHandle")
            .field("slaves", &self.slaves())
            .finish_non_exhaustive()
    }
}

impl<L> MasterHandle<L> {
    /// A master serving `log` with `config`.
    pub fn new(log: L, config: Config) -> Self {
        Self::with_shared_log(SharedLog::new(log), config)
    }

    /// A master serving an already shared log.
    pub fn with_shared_log(log: SharedLog<L>, config: Config) -> Self {
        Self::build(log, config, None)
    }

    fn build(log: SharedLog<L>, config: Config, autoswitch: Option<AutoSwitchState>) -> Self {
        MasterHandle {
            inner: Arc::new(MasterInner {
                log,
                config,
                state: Mutex::new(MasterState {
                    service: MasterService::new(config, Instant::now()),
                    rate_limit: config.rate_limit().map(RateLimit::PerConnection),
                    peers: BTreeMap::new(),
                    done: HashMap::new(),
                    abandoned: HashSet::new(),
                    closed: VecDeque::new(),
                    admission: Admission::new(),
                    refused: VecDeque::new(),
                    totals: MasterTotals::default(),
                }),
                changed: Event::new(),
                stop: Stop::default(),
                acceptor: Mutex::default(),
                rate_generation: AtomicU64::new(0),
                autoswitch: autoswitch.map(|state| Arc::new(Mutex::new(state))),
                direct: Mutex::new(Vec::new()),
                send_from_files: AtomicBool::new(false),
            }),
        }
    }

    /// Whether this master speaks AutoSwitch.
    pub fn is_autoswitch(&self) -> bool {
        self.inner.autoswitch.is_some()
    }

    /// AutoSwitch: the epoch this broker is master of.
    pub fn epoch(&self) -> Option<i32> {
        Some(lock(self.inner.autoswitch.as_ref()?).epoch)
    }

    /// AutoSwitch: the epoch history served to slaves (it ends with this master's epoch).
    pub fn epochs(&self) -> Option<EpochList> {
        Some(lock(self.inner.autoswitch.as_ref()?).epochs.clone())
    }

    /// AutoSwitch: the sync-state set in force (this broker included).
    pub fn sync_state_members(&self) -> Option<std::collections::BTreeSet<BrokerId>> {
        Some(
            lock(self.inner.autoswitch.as_ref()?)
                .sync_state
                .applied()
                .clone(),
        )
    }

    /// The commit log being served.
    pub fn log(&self) -> &SharedLog<L> {
        &self.inner.log
    }

    /// The configuration every connection uses.
    pub fn config(&self) -> Config {
        self.inner.config
    }

    /// The connected slaves, in connection order.
    pub fn slaves(&self) -> Vec<SlaveInfo> {
        let state = lock(&self.inner.state);
        state
            .peers
            .iter()
            .map(|(&id, peer)| SlaveInfo {
                id,
                peer: peer.addr,
                requested: peer.requested,
                start: peer.start,
                acked: state.service.ack_of(id),
                state: ConnectionState::Transfer,
                connected_at: peer.connected_at,
                traffic: peer.traffic.load(),
                broker_id: peer.broker_id,
            })
            .collect()
    }

    /// Counts over the master's life: connections accepted, closes by reason, and the traffic
    /// of every connection, closed and live.
    pub fn totals(&self) -> MasterTotals {
        let state = lock(&self.inner.state);
        let mut totals = state.totals.clone();
        for peer in state.peers.values() {
            totals.traffic = totals.traffic.saturating_add(peer.traffic.load());
        }
        totals
    }

    /// The highest offset any slave ever acknowledged (`push2SlaveMaxOffset`).
    pub fn ack_frontier(&self) -> u64 {
        lock(&self.inner.state).service.ack_frontier()
    }

    /// Sync waits not yet completed.
    pub fn pending_waits(&self) -> usize {
        lock(&self.inner.state).service.pending_waits()
    }

    /// Takes the record of connections that ended since the last call (at most the last 64).
    pub fn take_closed(&self) -> Vec<ClosedConnection> {
        lock(&self.inner.state).closed.drain(..).collect()
    }

    /// Sets who may connect and how many connections are served at once; it applies to
    /// connections accepted from now on (the ones being served stay). Every driver asks it
    /// before reading a byte from a new socket, and closes the socket at once when refused.
    /// The default admits everyone, as RocketMQ does.
    pub fn set_admission(&self, admission: Admission) {
        lock(&self.inner.state).admission = admission;
    }

    /// How many connections were refused since the last [`set_admission`](Self::set_admission).
    pub fn refused_count(&self) -> u64 {
        lock(&self.inner.state).admission.refused()
    }

    /// Takes the refusals worth reporting since the last call (at most the last 64; see
    /// [`RefusedConnection`]).
    pub fn take_refused(&self) -> Vec<RefusedConnection> {
        lock(&self.inner.state).refused.drain(..).collect()
    }

    /// Blocks until `pred` holds or `deadline` passes; `pred` is re-checked whenever a slave
    /// acknowledges, connects or disconnects, and whenever a connection is refused. Returns whether it held.
    pub fn wait_until_blocking(
        &self,
        deadline: Instant,
        mut pred: impl FnMut(&Self) -> bool,
    ) -> bool {
        block_until(&self.inner.changed, Some(deadline), || {
            pred(self).then_some(())
        })
        .is_some()
    }

    /// Blocks until the slaves `acks` asks for acknowledged `offset` (`Ok`), `deadline` passed
    /// ([`SyncError::Timeout`]), the policy failed the write at once
    /// ([`SyncError::SlaveNotAvailable`], [`SyncError::NotEnoughInSync`]) or the master shut
    /// down ([`SyncError::Shutdown`]). `acks` is an [`AckPolicy`], or a number of slaves.
    ///
    /// Every answer comes from the [`MasterService`]: a waiting thread sleeps until the
    /// service's next deadline ([`MasterService::poll_timeout`], which may be another wait's)
    /// and lets the service expire what is due, so no timer thread is needed and no waiter
    /// decides a timeout on its own.
    pub fn wait_replicated_blocking(
        &self,
        offset: u64,
        acks: impl Into<AckPolicy>,
        deadline: Instant,
    ) -> Result<(), SyncError> {
        let mut wait = self.start_wait(offset, acks.into(), deadline);
        loop {
            let next = wait.service_deadline();
            if let Some(result) = block_until(&self.inner.changed, next, || wait.poll()) {
                return result;
            }
            wait.expire();
        }
    }

    /// The async form of [`wait_replicated_blocking`](Self::wait_replicated_blocking);
    /// `sleep_until` makes a timer that completes at the given instant (the `smol` and `tokio`
    /// modules pass theirs). Dropping the future abandons the wait cleanly.
    pub async fn wait_replicated_with<F: Future<Output = ()>>(
        &self,
        offset: u64,
        acks: impl Into<AckPolicy>,
        deadline: Instant,
        sleep_until: impl Fn(Instant) -> F,
    ) -> Result<(), SyncError> {
        let mut wait = self.start_wait(offset, acks.into(), deadline);
        loop {
            let next = wait.service_deadline();
            let completed = async { Some(until(&self.inner.changed, || wait.poll()).await) }
                .or(async {
                    maybe(next.map(&sleep_until)).await;
                    None
                })
                .await;
            match completed {
                Some(result) => return result,
                None => wait.expire(),
            }
        }
    }

    fn start_wait(&self, offset: u64, policy: AckPolicy, deadline: Instant) -> Wait<'_, L> {
        let mut state = lock(&self.inner.state);
        let ticket = state
            .service
            .wait_with(Instant::now(), offset, &policy, deadline);
        state.settle();
        drop(state);
        self.inner.changed.notify(usize::MAX);
        Wait {
            master: self,
            ticket,
            collected: false,
        }
    }

    /// Sets or lifts flow control (§3.9) on every connection, including the running ones: an
    /// operator raises the limit while a slave catches up. A [`RateLimit::Shared`] limit is
    /// split evenly among the live connections, again whenever one opens or closes.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        let mut state = lock(&self.inner.state);
        state.rate_limit = limit;
        self.inner.rate_generation.fetch_add(1, Ordering::SeqCst);
        drop(state);
        // Idle connection loops wait on the log; wake them to take the new limit.
        self.inner.log.notify();
    }

    /// Makes drivers send frame bodies of 64 KiB or more from the log's files (`sendfile`), on
    /// plain TCP sockets, when the log says where they lie ([`LogSource::file_region`], which
    /// `FileLog` answers); off by default, and applied from each connection's next frame.
    ///
    /// It spares the master its copy into the socket, but on loopback the slave's copy out of
    /// the page-cache pages cost more than the master saved (issue 13 in the README: the
    /// slave's CPU per GiB rose by about a third), so it is for links to other machines, where
    /// it is yet to be measured.
    pub fn set_send_from_files(&self, on: bool) {
        self.inner.send_from_files.store(on, Ordering::Relaxed);
    }

    /// Whether drivers send large bodies from the log's files (see
    /// [`set_send_from_files`](Self::set_send_from_files)).
    pub fn send_from_files(&self) -> bool {
        self.inner.send_from_files.load(Ordering::Relaxed)
    }

    /// The flow-control setting in force.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        lock(&self.inner.state).rate_limit
    }

    /// Blocks until a connection from `ip` reaches `state`, or `deadline` passes (Java's
    /// `HAConnectionStateNotificationService`): [`ConnectionState::Transfer`] once one is
    /// connected, [`ConnectionState::Shutdown`] once none is. Returns whether it did.
    pub fn wait_for_connection_state_blocking(
        &self,
        ip: IpAddr,
        state: ConnectionState,
        deadline: Instant,
    ) -> bool {
        self.wait_until_blocking(deadline, |m| m.connection_state_of(ip) == state)
    }

    /// The async form of
    /// [`wait_for_connection_state_blocking`](Self::wait_for_connection_state_blocking),
    /// without a deadline (race it with a timer).
    pub async fn wait_for_connection_state(&self, ip: IpAddr, state: ConnectionState) {
        until(&self.inner.changed, || {
            (self.connection_state_of(ip) == state).then_some(())
        })
        .await
    }

    /// The state of the connections from `ip`: `Transfer` if one is live, else `Shutdown`.
    pub fn connection_state_of(&self, ip: IpAddr) -> ConnectionState {
        let state = lock(&self.inner.state);
        if state.peers.values().any(|peer| peer.addr.ip() == ip) {
            ConnectionState::Transfer
        } else {
            ConnectionState::Shutdown
        }
    }

    /// Stops the master: completes every pending wait with [`SyncError::Shutdown`], closes
    /// every connection and makes the accept loop return. Idempotent.
    pub fn shutdown(&self) {
        {
            let mut state = lock(&self.inner.state);
            state.service.shutdown(Instant::now());
            state.settle();
        }
        self.inner.stop.trigger();
        self.inner.changed.notify(usize::MAX);
        // Idle connection drivers wait on the log; wake them to see the stop.
        self.inner.log.notify();
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.stop.is_set()
    }

    pub(crate) fn stop(&self) -> &Stop {
        &self.inner.stop
    }

    /// Serves connections accepted from now on over TLS (`Some`) or plain TCP (`None`, the
    /// default). Only the `smol` and `tokio` drivers speak TLS; see [`crate::tls`].
    #[cfg(feature = "tls")]
    pub fn set_tls(&self, tls: Option<crate::tls::ServerTls>) {
        lock(&self.inner.acceptor).tls = tls;
    }

    /// Whether connections are served over TLS.
    pub fn is_tls(&self) -> bool {
        lock(&self.inner.acceptor).is_tls()
    }

    /// How to wrap the next accepted socket.
    pub(crate) fn acceptor(&self) -> Acceptor {
        lock(&self.inner.acceptor).clone()
    }

    /// Registers a socket the driver accepted from `peer` with the service, if the admission
    /// policy lets it in. Dropping the guard unregisters it.
    pub(crate) fn register_accepted(&self, peer: SocketAddr) -> Accepted<L> {
        let traffic = Arc::new(TrafficCell::default());
        let (id, start_position) = {
            let mut state = lock(&self.inner.state);
            if self.is_shut_down() {
                return Accepted::ShutDown;
            }
            let live = state.peers.len();
            if let Decision::Refuse { reason, report } = state.admission.decide(peer.ip(), live) {
                if report {
                    if state.refused.len() == HISTORY {
                        state.refused.pop_front();
                    }
                    state.refused.push_back(RefusedConnection { peer, reason });
                }
                drop(state);
                // Waiters may be counting refusals.
                self.inner.changed.notify(usize::MAX);
                return Accepted::Refuse;
            }
            let start_position = state
                .admission
                .start_position(peer.ip(), self.inner.config.start_position());
            let now = Instant::now();
            let id = state.service.register(now);
            state.peers.insert(
                id,
                Peer {
                    addr: peer,
                    requested: None,
                    start: None,
                    connected_at: now,
                    traffic: Arc::clone(&traffic),
                    broker_id: None,
                },
            );
            state.totals.accepted += 1;
            self.inner.rate_generation.fetch_add(1, Ordering::SeqCst);
            (id, start_position)
        };
        self.inner.changed.notify(usize::MAX);
        let span = tracing::info_span!("serving", peer = %peer, id = id.get());
        tracing::info!(parent: &span, "slave connected");
        Accepted::Serve(ConnectionGuard {
            master: self.clone(),
            id,
            peer,
            start_position,
            error: Mutex::new(None),
            span,
            traffic,
            published: Mutex::new(Traffic::default()),
            broker_id: Mutex::new(None),
        })
    }
}

impl<L: LogSource> MasterHandle<L> {
    /// An AutoSwitch master (RocketMQ 5's controller mode, §5) serving `log`: it takes the
    /// role the options give at the log's end, saving the epoch history first when the epoch
    /// is new to it, and refuses an epoch older than that history ([`Error::Role`]).
    ///
    /// No controller stands between this master and its sync-state set: it applies its own
    /// proposals (expand and shrink) at once, as a controller that always agrees would.
    pub fn autoswitch(log: L, config: Config, options: AutoSwitchMaster) -> Result<Self, Error> {
        Self::autoswitch_with_shared_log(SharedLog::new(log), config, options)
    }

    /// [`autoswitch`](Self::autoswitch) over an already shared log.
    pub fn autoswitch_with_shared_log(
        log: SharedLog<L>,
        config: Config,
        options: AutoSwitchMaster,
    ) -> Result<Self, Error> {
        let state = AutoSwitchState::become_master(config, &options, log.max_offset())?;
        Ok(Self::build(log, config, Some(state)))
    }

    /// AutoSwitch: the confirm offset, the end of what every member of the sync-state set
    /// has (§5.7).
    pub fn confirm_offset(&self) -> Option<u64> {
        let max = self.inner.log.max_offset();
        lock(self.inner.autoswitch.as_ref()?)
            .sync_state
            .confirm_offset(max)
    }

    /// Slaves in sync now: live connections whose ack is less than `max_gap_not_in_sync`
    /// behind the log's end (RocketMQ 5's in-sync replicas, less the master itself).
    pub fn in_sync_count(&self) -> usize {
        let end = self.inner.log.max_offset();
        lock(&self.inner.state).service.in_sync_count(end)
    }
}

impl<L: LogSink> MasterHandle<L> {
    /// Appends `data` at the end of the log and wakes the connection drivers; returns the new
    /// max offset.
    ///
    /// On connections whose driver allows it (the blocking one) and that are idle, this thread
    /// writes the new frame itself before waking anyone (see [`DirectWrite`]).
    pub fn append(&self, data: impl Into<Bytes>) -> Result<u64, LogError> {
        let end = self.inner.log.append_quietly(data);
        let mut wake_drivers = end.is_err();
        // Dropped after the registry's lock: the last holder of a connection whose task was
        // cancelled meanwhile drops its guard, which takes that lock.
        let mut held = Vec::new();
        if end.is_ok() {
            let direct = lock(&self.inner.direct);
            held.reserve(direct.len());
            // A connection going away is woken by its own end.
            for connection in direct.iter().filter_map(|(_, d)| d.upgrade()) {
                wake_drivers |= connection.write_now(&self.inner.log);
                held.push(connection);
            }
        }
        drop(held);
        // Drivers that listen with `listen_as_driver` registered here; any other waiter hears
        // every append.
        if wake_drivers {
            self.inner.log.notify();
        } else {
            self.inner.log.notify_all_but_drivers();
        }
        end
    }

    /// Appends `data`, then blocks until `acks` slaves acknowledged it or `timeout` passed:
    /// a `SYNC_MASTER` put (§3.5). Returns the new max offset.
    pub fn append_replicated_blocking(
        &self,
        data: impl Into<Bytes>,
        acks: impl Into<AckPolicy>,
        timeout: Duration,
    ) -> Result<u64, Error> {
        let end = self.append(data)?;
        self.wait_replicated_blocking(end, acks, Instant::now() + timeout)?;
        Ok(end)
    }
}

/// One pending sync wait; abandons the ticket if dropped before collecting it.
struct Wait<'a, L> {
    master: &'a MasterHandle<L>,
    ticket: Ticket,
    collected: bool,
}

impl<L> Wait<'_, L> {
    /// The ticket's result, once the service completed it.
    fn poll(&mut self) -> Option<Result<(), SyncError>> {
        let mut state = lock(&self.master.inner.state);
        let result = state.done.remove(&self.ticket);
        self.collected |= result.is_some();
        result
    }

    /// When the service next has a wait to expire (this one's or an earlier one's).
    fn service_deadline(&self) -> Option<Instant> {
        lock(&self.master.inner.state).service.poll_timeout()
    }

    /// The service's deadline passed: it expires every wait that is due, and their waiters
    /// wake.
    fn expire(&self) {
        {
            let mut state = lock(&self.master.inner.state);
            state.service.handle_timeout(Instant::now());
            state.settle();
        }
        self.master.inner.changed.notify(usize::MAX);
    }
}

impl<L> Drop for Wait<'_, L> {
    fn drop(&mut self) {
        if !self.collected {
            let mut state = lock(&self.master.inner.state);
            if state.done.remove(&self.ticket).is_none() {
                state.abandoned.insert(self.ticket);
            }
        }
    }
}

/// One registered slave connection; dropping it removes the connection from the service and
/// records why it closed.
pub(crate) struct ConnectionGuard<L> {
    master: MasterHandle<L>,
    id: ConnectionId,
    peer: SocketAddr,
    /// Where an empty slave starts on this connection (the admission's full-copy blocks).
    start_position: StartPosition,
    error: Mutex<Option<Error>>,
    /// The connection's span: the explicit parent of its events.
    span: Span,
    traffic: Arc<TrafficCell>,
    /// The traffic last published, to tell frames sent since (for `trace` events).
    published: Mutex<Traffic>,
    /// AutoSwitch: the slave's broker id, once its handshake arrived.
    broker_id: Mutex<Option<BrokerId>>,
}

impl<L> ConnectionGuard<L> {
    pub(crate) fn master(&self) -> &MasterHandle<L> {
        &self.master
    }

    /// A fresh connection loop for this connection, of the master's protocol. A classic loop
    /// starts an empty slave where the admission policy says (a full copy for some); an
    /// AutoSwitch slave says itself where it starts (`syncFromLastFile`, §5.5).
    pub(crate) fn machine(&self) -> MasterProtocol {
        let (config, now) = (self.master.inner.config, Instant::now());
        match &self.master.inner.autoswitch {
            None => {
                let mut machine = MasterLoop::new(config, now);
                let fresh = machine.set_start_position(self.start_position);
                debug_assert!(fresh.is_ok(), "a new loop has had no report");
                MasterProtocol::Classic(machine)
            }
            Some(shared) => MasterProtocol::AutoSwitch {
                lp: autoswitch::MasterLoop::new(config, now),
                shared: Arc::clone(shared),
                traffic: Traffic::default(),
                unsent: 0,
            },
        }
    }

    /// Gives the loop the rate limit in force when it changed since `seen` (a generation);
    /// the split of a shared limit is the core's [`RateLimit::per_connection`].
    pub(crate) fn apply_rate_limit(&self, machine: &mut MasterProtocol, seen: &mut Option<u64>) {
        let generation = self.master.inner.rate_generation.load(Ordering::SeqCst);
        if *seen == Some(generation) {
            return;
        }
        *seen = Some(generation);
        let state = lock(&self.master.inner.state);
        let rate = state
            .rate_limit
            .map(|limit| limit.per_connection(state.peers.len()));
        drop(state);
        machine.set_rate_limit(Instant::now(), rate);
    }

    /// Publishes the loop's traffic, forwards its events to the service (and an AutoSwitch
    /// master's sync-state set) and wakes waiters (run-loop step 2). Drivers call it after
    /// every read and every write.
    pub(crate) fn forward(&self, machine: &mut MasterProtocol)
    where
        L: LogSource,
    {
        self.publish(machine.traffic());
        match machine {
            MasterProtocol::Classic(lp) => self.forward_classic(lp),
            MasterProtocol::AutoSwitch { lp, shared, .. } => self.forward_autoswitch(lp, shared),
        }
    }

    fn forward_classic(&self, machine: &mut MasterLoop) {
        let Some(mut event) = machine.poll_event() else {
            return;
        };
        {
            let now = Instant::now();
            let mut state = lock(&self.master.inner.state);
            loop {
                match event {
                    MasterEvent::Started { requested, start } => {
                        if let Some(peer) = state.peers.get_mut(&self.id) {
                            peer.requested = Some(requested);
                            peer.start = Some(start);
                        }
                        if requested == 0
                            && self.start_position != self.master.inner.config.start_position()
                        {
                            tracing::info!(parent: &self.span, requested, start, "transfer starts: a full copy, granted to this address");
                        } else {
                            tracing::info!(parent: &self.span, requested, start, "transfer starts");
                        }
                    }
                    MasterEvent::Acked { offset } => {
                        tracing::trace!(parent: &self.span, offset, "ack");
                    }
                    _ => {}
                }
                state.service.handle_event(self.id, now, &event);
                match machine.poll_event() {
                    Some(next) => event = next,
                    None => break,
                }
            }
            state.settle();
        }
        self.master.inner.changed.notify(usize::MAX);
    }

    /// An AutoSwitch connection's events go to the sync-state set; its acks also go to the
    /// service, so acks, lag and sync waits read the same as for a classic slave.
    fn forward_autoswitch(&self, machine: &mut autoswitch::MasterLoop, shared: &SharedAutoSwitch)
    where
        L: LogSource,
    {
        let Some(mut event) = machine.poll_event() else {
            return;
        };
        let now = Instant::now();
        let max = self.master.inner.log.max_offset();
        let mut introduced = None;
        let mut acks = Vec::new();
        {
            let mut sync = lock(shared);
            loop {
                if let autoswitch::MasterEvent::Acked { offset, .. } = event {
                    tracing::trace!(parent: &self.span, offset, "ack");
                    acks.push(offset);
                }
                if let Some(id) = sync.handle_event(now, &event, max) {
                    tracing::info!(parent: &self.span, broker_id = id, "slave introduced itself");
                    introduced = Some(id);
                }
                match machine.poll_event() {
                    Some(next) => event = next,
                    None => break,
                }
            }
        }
        {
            let mut state = lock(&self.master.inner.state);
            if let Some(id) = introduced {
                *lock(&self.broker_id) = Some(id);
                if let Some(peer) = state.peers.get_mut(&self.id) {
                    peer.broker_id = Some(id);
                }
            }
            for offset in acks {
                if let Some(peer) = state.peers.get_mut(&self.id) {
                    peer.requested.get_or_insert(offset);
                }
                state
                    .service
                    .handle_event(self.id, now, &MasterEvent::Acked { offset });
            }
            state.settle();
        }
        self.master.inner.changed.notify(usize::MAX);
    }

    /// Makes `traffic` visible to [`MasterHandle::slaves`]; frames sent since the last call are
    /// `trace` events.
    fn publish(&self, traffic: Traffic) {
        self.traffic.store(traffic);
        if tracing::enabled!(tracing::Level::TRACE) {
            let mut published = lock(&self.published);
            if traffic.frames_out > published.frames_out {
                tracing::trace!(
                    parent: &self.span,
                    frames = traffic.frames_out - published.frames_out,
                    bytes = traffic.bytes_out - published.bytes_out,
                    "sent"
                );
            }
            *published = traffic;
        }
    }

    /// A producer's write (see [`DirectWrite`]): the loop's next frame, if the driver is not
    /// writing one and it is copied, not sent from its file (`sendfile` cannot be asked not
    /// to block), goes out through `try_send`, which must not block (`WouldBlock` leaves the
    /// frame to the driver). Returns whether the driver must be woken to send the rest (see
    /// [`DirectWrite::write_now`]); an error closes the connection.
    pub(crate) fn write_directly(
        &self,
        shared: &mut SharedLoop,
        log: &SharedLog<L>,
        try_send: impl FnOnce(&[std::io::IoSlice<'_>]) -> std::io::Result<usize>,
    ) -> Result<bool, Error>
    where
        L: LogSource,
    {
        if shared.writing {
            return Ok(false);
        }
        let SharedLoop { lp, rate_seen, .. } = shared;
        self.apply_rate_limit(lp, rate_seen);
        let Some(transmit) = lp.poll_write(Instant::now(), &*log.read())? else {
            return Ok(false);
        };
        let Step::Copy(slices, n) = frame_write::next_step(&transmit, true) else {
            return Ok(true);
        };
        match try_send(&slices[..n]) {
            Ok(written) => {
                lp.handle_written(Instant::now(), written)?;
                self.forward(lp);
                // Part of it, or the log holds more than one frame.
                Ok(lp.poll_write(Instant::now(), &*log.read())?.is_some())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                Ok(true)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Lets producers write this connection's frames through `direct` until
    /// [`stop_direct_writes`](Self::stop_direct_writes) (or the guard's drop).
    pub(crate) fn allow_direct_writes(&self, direct: Weak<dyn DirectWrite<L>>) {
        lock(&self.master.inner.direct).push((self.id, direct));
    }

    /// Producers no longer write this connection's frames; returns once none is writing (one
    /// may still hold the connection for a moment, and drop it last).
    pub(crate) fn stop_direct_writes(&self) {
        lock(&self.master.inner.direct).retain(|(id, _)| *id != self.id);
    }

    /// Records why the connection is closing; the first reason wins.
    pub(crate) fn fail(&self, error: Error) {
        lock(&self.error).get_or_insert(error);
    }
}

impl<L> Drop for ConnectionGuard<L> {
    fn drop(&mut self) {
        let error = lock(&self.error).take();
        let reason = CloseReason::classify(error.as_ref(), self.master.is_shut_down());
        let traffic = self.traffic.load();
        let (sent, received) = (traffic.bytes_out, traffic.bytes_in);
        let span = &self.span;
        let label = reason.label();
        match (&error, reason) {
            (_, CloseReason::Shutdown) => {
                tracing::info!(parent: span, reason = label, sent, received,
                    "slave connection closed: the master is stopping");
                // Whatever the socket said after our own stop is no news.
                if let Some(e) = &error {
                    tracing::debug!(parent: span, "{e}");
                }
            }
            (Some(e), _) if reason.is_error() => tracing::warn!(parent: span, reason = label,
                sent, received, "slave connection closed: {e}"),
            // A slave's exit may reach us as a broken pipe or a reset: say so, at info.
            (Some(e), _) => tracing::info!(parent: span, reason = label, sent, received,
                "slave connection {reason} ({e})"),
            (None, _) => tracing::info!(parent: span, reason = label, sent, received,
                "slave connection {reason}"),
        }
        if let (Some(shared), Some(id)) = (&self.master.inner.autoswitch, *lock(&self.broker_id)) {
            lock(shared).handle_disconnected(Instant::now(), id);
        }
        self.stop_direct_writes();
        {
            let mut state = lock(&self.master.inner.state);
            state.service.remove(self.id, Instant::now());
            let requested = state.peers.remove(&self.id).and_then(|p| p.requested);
            self.master
                .inner
                .rate_generation
                .fetch_add(1, Ordering::SeqCst);
            if state.closed.len() == HISTORY {
                state.closed.pop_front();
            }
            *state.totals.closes.entry(reason).or_insert(0) += 1;
            state.totals.traffic = state.totals.traffic.saturating_add(traffic);
            state.closed.push_back(ClosedConnection {
                id: self.id,
                peer: self.peer,
                error,
                reason,
                requested,
                traffic,
            });
        }
        self.master.inner.changed.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, IoSlice};

    use bytes::Buf;
    use rocketmq_ha::wire::encode_report;
    use rocketmq_ha::{MemoryLog, StartPosition};

    use super::*;

    /// A connection whose slave asked for everything from offset 0 of a log holding `len`
    /// bytes (frames of at most 128 KiB).
    fn connection(
        len: usize,
    ) -> (
        MasterHandle<MemoryLog>,
        ConnectionGuard<MemoryLog>,
        SharedLoop,
    ) {
        let config = Config::builder()
            .transfer_batch_size(128 * 1024)
            .start_position(StartPosition::OldestRetained)
            .build()
            .unwrap();
        let mut log = MemoryLog::new(1 << 30);
        if len > 0 {
            log.push(vec![7u8; len]);
        }
        let master = MasterHandle::new(log, config);
        let Accepted::Serve(guard) = master.register_accepted("127.0.0.1:1".parse().unwrap())
        else {
            panic!("not admitted");
        };
        let mut shared = SharedLoop::new(guard.machine());
        shared
            .lp
            .handle_read(Instant::now(), &encode_report(0), &*master.log().read())
            .unwrap();
        (master, guard, shared)
    }

    fn total(slices: &[IoSlice<'_>]) -> usize {
        slices.iter().map(|s| s.len()).sum()
    }

    /// Whether the driver is woken after a producer's write: only when something is left for
    /// it. A missed wake-up would leave a frame unsent until the next deadline.
    #[test]
    fn the_driver_is_woken_only_when_a_producer_leaves_it_something() {
        // Nothing to send: no wake-up, no write.
        let (master, guard, mut shared) = connection(0);
        let woken = guard.write_directly(&mut shared, master.log(), |_| panic!("wrote nothing"));
        assert!(!woken.unwrap());

        // One small frame, taken whole: nothing left.
        let (master, guard, mut shared) = connection(1000);
        let woken = guard.write_directly(&mut shared, master.log(), |s| Ok(total(s)));
        assert!(!woken.unwrap());
        assert!(!shared.lp.is_transmitting());

        // Taken in part, or not at all: the driver sends the rest.
        let (master, guard, mut shared) = connection(1000);
        let woken = guard.write_directly(&mut shared, master.log(), |s| Ok(total(s) - 1));
        assert!(woken.unwrap());
        assert_eq!(
            shared
                .lp
                .poll_write(Instant::now(), &*master.log().read())
                .unwrap()
                .unwrap()
                .remaining(),
            1
        );
        for kind in [io::ErrorKind::WouldBlock, io::ErrorKind::Interrupted] {
            let (master, guard, mut shared) = connection(1000);
            let woken = guard.write_directly(&mut shared, master.log(), |_| Err(kind.into()));
            assert!(woken.unwrap());
        }

        // A whole frame, and more in the log than it held: the driver sends the next.
        let (master, guard, mut shared) = connection(128 * 1024 + 1);
        let woken = guard.write_directly(&mut shared, master.log(), |s| Ok(total(s)));
        assert!(woken.unwrap());

        // The driver is mid-frame: the producer keeps off, and the driver looks again after.
        let (master, guard, mut shared) = connection(1000);
        shared.writing = true;
        let woken = guard.write_directly(&mut shared, master.log(), |_| {
            panic!("wrote beside the driver")
        });
        assert!(!woken.unwrap());

        // A broken socket closes the connection.
        let (master, guard, mut shared) = connection(1000);
        let broken = guard.write_directly(&mut shared, master.log(), |_| {
            Err(io::ErrorKind::BrokenPipe.into())
        });
        assert!(broken.is_err());
    }
}
