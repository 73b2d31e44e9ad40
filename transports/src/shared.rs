//! What every driver shares: the commit log handle with its growth notification, the master's
//! shared state (log + [`MasterService`] + sync waiters), the slave's handle and its append loop,
//! and shutdown.
//!
//! Nothing here knows about sockets beyond closing them, and nothing here makes a protocol
//! decision: the machines do. This module only moves their outputs to where they are needed.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::BuildHasher;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use event_listener::{Event, EventListener, Listener};
use futures_lite::FutureExt;
use rocketmq_ha::{
    ClientEvent, Config, ConnectionId, HaClient, LogError, LogSink, LogSource, MasterConnection,
    MasterEvent, MasterService, SyncError, Ticket,
};

use crate::Error;

/// How many closed connections or slave errors a handle keeps for inspection; older ones are
/// dropped so a flapping peer cannot grow memory without bound.
const HISTORY: usize = 64;

/// The smallest read a slave driver asks the socket for: big enough to carry many frames per
/// system call.
const READ_CHUNK: usize = 256 * 1024;

/// Locks a mutex; a panic in another thread leaves state that is still consistent here, because
/// every critical section below leaves it valid at each step.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Blocks until `ready` yields a value, re-checking whenever `event` fires; gives up (after one
/// last check) at `deadline`.
fn block_until<T>(
    event: &Event,
    deadline: Option<Instant>,
    mut ready: impl FnMut() -> Option<T>,
) -> Option<T> {
    loop {
        if let Some(value) = ready() {
            return Some(value);
        }
        // Listen before the second check, so a notification between the two is not lost.
        let listener = event.listen();
        if let Some(value) = ready() {
            return Some(value);
        }
        match deadline {
            None => listener.wait(),
            Some(deadline) => {
                if listener.wait_deadline(deadline).is_none() {
                    return ready();
                }
            }
        }
    }
}

/// The async form of [`block_until`], without a deadline (callers race it with their timer).
async fn until<T>(event: &Event, mut ready: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(value) = ready() {
            return value;
        }
        let listener = event.listen();
        if let Some(value) = ready() {
            return value;
        }
        listener.await;
    }
}

/// Waits for `future` when there is one, else forever: an optional branch of a race.
pub(crate) async fn maybe<F: Future>(future: Option<F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// A socket read timeout that expires at `deadline` (`None`: block until data arrives).
pub(crate) fn read_timeout(deadline: Option<Instant>) -> Option<Duration> {
    // A zero timeout is an error for `set_read_timeout`; a past deadline becomes 1 ms.
    deadline.map(|d| {
        d.saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    })
}

// ---------------------------------------------------------------------------------------------
// The shared commit log
// ---------------------------------------------------------------------------------------------

/// A commit log shared between drivers and their user, with a notification whenever it grows.
///
/// It is an `Arc` of an `RwLock<L>` plus an [`event_listener::Event`], so threads and async
/// tasks alike can wait for growth. On a master, connection drivers wait on it when they have
/// sent everything; a producer appending through [`append`](Self::append) or
/// [`update`](Self::update) wakes them. On a slave, it lets the user wait for replication to
/// reach an offset. The event also fires at shutdown and when a connection's state changes, so
/// a wake-up may find nothing new: waiters re-check.
pub struct SharedLog<L> {
    inner: Arc<LogInner<L>>,
}

struct LogInner<L> {
    log: RwLock<L>,
    changed: Event,
}

impl<L> Clone for SharedLog<L> {
    fn clone(&self) -> Self {
        SharedLog {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<L> std::fmt::Debug for SharedLog<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLog").finish_non_exhaustive()
    }
}

impl<L> SharedLog<L> {
    /// Shares `log`.
    pub fn new(log: L) -> Self {
        SharedLog {
            inner: Arc::new(LogInner {
                log: RwLock::new(log),
                changed: Event::new(),
            }),
        }
    }

    /// Read access; hold it briefly, appends wait for it.
    pub fn read(&self) -> RwLockReadGuard<'_, L> {
        self.inner
            .log
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with write access, then wakes everyone waiting for growth.
    pub fn update<R>(&self, f: impl FnOnce(&mut L) -> R) -> R {
        let result = {
            let mut log = self
                .inner
                .log
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            f(&mut log)
        };
        self.notify();
        result
    }

    /// A listener that fires at the next [`update`](Self::update) (or other wake-up). Create it
    /// *before* checking the log, then wait on it, so no growth is missed in between.
    pub fn listen(&self) -> EventListener {
        self.inner.changed.listen()
    }

    /// Wakes every waiter without changing the log.
    pub(crate) fn notify(&self) {
        self.inner.changed.notify(usize::MAX);
    }

    /// Blocks until `pred` holds for the log or `deadline` passes; returns whether it held.
    pub fn wait_until_blocking(&self, deadline: Instant, mut pred: impl FnMut(&L) -> bool) -> bool {
        block_until(&self.inner.changed, Some(deadline), || {
            pred(&self.read()).then_some(())
        })
        .is_some()
    }

    /// Waits until `pred` holds for the log (race it with a timer for a deadline).
    pub async fn wait_until(&self, mut pred: impl FnMut(&L) -> bool) {
        until(&self.inner.changed, || pred(&self.read()).then_some(())).await
    }
}

impl<L: LogSource> SharedLog<L> {
    /// The log's max offset now.
    pub fn max_offset(&self) -> u64 {
        self.read().max_offset()
    }
}

impl<L: LogSink> SharedLog<L> {
    /// Appends `data` at the end of the log (the producer's path on a master) and wakes the
    /// connection drivers; returns the new max offset.
    pub fn append(&self, data: impl Into<Bytes>) -> Result<u64, LogError> {
        let data = data.into();
        self.update(|log| {
            let end = log.max_offset();
            log.append(end, data)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

/// A one-way stop signal that also closes the blocking driver's sockets and wakes its accept
/// loop, since a thread blocked in `read` or `accept` cannot see a flag.
#[derive(Default)]
pub(crate) struct Stop {
    set: AtomicBool,
    event: Event,
    sockets: Mutex<Sockets>,
}

#[derive(Default)]
struct Sockets {
    next: u64,
    open: HashMap<u64, TcpStream>,
    /// Listening addresses to connect to once, so a blocking `accept` returns.
    wake: Vec<SocketAddr>,
}

/// A socket registered with [`Stop::register`].
pub(crate) struct SocketKey(u64);

impl Stop {
    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Sets the signal, shuts every registered socket down and wakes every waiter.
    fn trigger(&self) {
        if self.set.swap(true, Ordering::SeqCst) {
            return;
        }
        let sockets = std::mem::take(&mut *lock(&self.sockets));
        for stream in sockets.open.values() {
            // Errors mean the socket is already gone, which is what we want.
            let _ = stream.shutdown(Shutdown::Both);
        }
        for addr in sockets.wake {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
        self.event.notify(usize::MAX);
    }

    /// Registers a clone of `stream` to shut down at stop; fails if the stop already happened,
    /// so the caller never serves a connection the stop missed.
    pub(crate) fn register(&self, stream: &TcpStream) -> io::Result<SocketKey> {
        let clone = stream.try_clone()?;
        let mut sockets = lock(&self.sockets);
        if self.is_set() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "shutting down"));
        }
        let key = sockets.next;
        sockets.next += 1;
        sockets.open.insert(key, clone);
        Ok(SocketKey(key))
    }

    pub(crate) fn unregister(&self, key: SocketKey) {
        lock(&self.sockets).open.remove(&key.0);
    }

    /// Asks the stop to connect to `listening` once, waking a blocking `accept` on it.
    pub(crate) fn register_wake(&self, listening: SocketAddr) {
        let mut addr = listening;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        lock(&self.sockets).wake.push(addr);
    }

    /// Completes once the stop is set.
    pub(crate) async fn wait(&self) {
        until(&self.event, || self.is_set().then_some(())).await
    }

    /// Sleeps until `deadline` (forever for `None`) or until the stop is set.
    pub(crate) fn sleep_blocking(&self, deadline: Option<Instant>) {
        block_until(&self.event, deadline, || self.is_set().then_some(()));
    }
}

// ---------------------------------------------------------------------------------------------
// The master
// ---------------------------------------------------------------------------------------------

/// One connected slave, as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaveInfo {
    /// The connection's id in the [`MasterService`].
    pub id: ConnectionId,
    /// The slave's address.
    pub peer: SocketAddr,
    /// The offset the slave asked for in its first report, once it arrived.
    pub requested: Option<u64>,
    /// The slave's last acknowledged offset, once it reported.
    pub acked: Option<u64>,
}

/// A slave connection that ended, and why.
#[derive(Debug)]
pub struct ClosedConnection {
    /// The connection's id.
    pub id: ConnectionId,
    /// The slave's address.
    pub peer: SocketAddr,
    /// `None` when the slave closed cleanly (EOF) or the master shut down.
    pub error: Option<Error>,
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
}

struct MasterState {
    service: MasterService,
    peers: BTreeMap<ConnectionId, (SocketAddr, Option<u64>)>,
    /// Completed waits not yet collected by their waiter.
    done: HashMap<Ticket, Result<(), SyncError>>,
    /// Waits whose waiter went away (a cancelled future); their completion is dropped.
    abandoned: HashSet<Ticket>,
    closed: VecDeque<ClosedConnection>,
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
        MasterHandle {
            inner: Arc::new(MasterInner {
                log,
                config,
                state: Mutex::new(MasterState {
                    service: MasterService::new(config, Instant::now()),
                    peers: BTreeMap::new(),
                    done: HashMap::new(),
                    abandoned: HashSet::new(),
                    closed: VecDeque::new(),
                }),
                changed: Event::new(),
                stop: Stop::default(),
            }),
        }
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
            .map(|(&id, &(peer, requested))| SlaveInfo {
                id,
                peer,
                requested,
                acked: state.service.ack_of(id),
            })
            .collect()
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

    /// Blocks until `pred` holds or `deadline` passes; `pred` is re-checked whenever a slave
    /// acknowledges, connects or disconnects. Returns whether it held.
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

    /// Blocks until `acks` slaves acknowledged `offset` (`Ok`), `deadline` passed
    /// ([`SyncError::Timeout`]) or the master shut down ([`SyncError::Shutdown`]).
    ///
    /// The waiting thread drives the wait's own deadline, so no timer thread is needed.
    pub fn wait_replicated_blocking(
        &self,
        offset: u64,
        acks: usize,
        deadline: Instant,
    ) -> Result<(), SyncError> {
        let mut wait = self.start_wait(offset, acks, deadline);
        let result = block_until(&self.inner.changed, Some(deadline), || wait.poll());
        wait.finish(result)
    }

    /// The async form of [`wait_replicated_blocking`](Self::wait_replicated_blocking); `sleep`
    /// must complete at `deadline` (the `smol` and `tokio` modules pass their timers).
    /// Dropping the future abandons the wait cleanly.
    pub async fn wait_replicated_with(
        &self,
        offset: u64,
        acks: usize,
        deadline: Instant,
        sleep: impl Future<Output = ()>,
    ) -> Result<(), SyncError> {
        let mut wait = self.start_wait(offset, acks, deadline);
        let completed = async { Some(until(&self.inner.changed, || wait.poll()).await) };
        let result = completed.or(async {
            sleep.await;
            None
        });
        let result = result.await;
        let result = result.or_else(|| wait.poll());
        wait.finish(result)
    }

    fn start_wait(&self, offset: u64, acks: usize, deadline: Instant) -> Wait<'_, L> {
        let mut state = lock(&self.inner.state);
        let ticket = state
            .service
            .wait_for(Instant::now(), offset, acks, deadline);
        state.settle();
        drop(state);
        self.inner.changed.notify(usize::MAX);
        Wait {
            master: self,
            ticket,
            deadline,
            collected: false,
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

    /// Registers a new connection from `peer`; `None` once shut down.
    pub(crate) fn connect(&self, peer: SocketAddr) -> Option<ConnectionGuard<L>> {
        let id = {
            let mut state = lock(&self.inner.state);
            if self.is_shut_down() {
                return None;
            }
            let id = state.service.register(Instant::now());
            state.peers.insert(id, (peer, None));
            id
        };
        self.inner.changed.notify(usize::MAX);
        Some(ConnectionGuard {
            master: self.clone(),
            id,
            peer,
            error: Mutex::new(None),
        })
    }
}

impl<L: LogSink> MasterHandle<L> {
    /// Appends `data` at the end of the log and wakes the connection drivers; returns the new
    /// max offset.
    pub fn append(&self, data: impl Into<Bytes>) -> Result<u64, LogError> {
        self.inner.log.append(data)
    }

    /// Appends `data`, then blocks until `acks` slaves acknowledged it or `timeout` passed:
    /// a `SYNC_MASTER` put (§3.5). Returns the new max offset.
    pub fn append_replicated_blocking(
        &self,
        data: impl Into<Bytes>,
        acks: usize,
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
    deadline: Instant,
    collected: bool,
}

impl<L> Wait<'_, L> {
    fn poll(&mut self) -> Option<Result<(), SyncError>> {
        let mut state = lock(&self.master.inner.state);
        let now = Instant::now();
        if now >= self.deadline {
            // The waiter drives its own deadline: this expires it in the service.
            state.service.handle_timeout(now);
            state.settle();
        }
        let result = state.done.remove(&self.ticket);
        self.collected |= result.is_some();
        result
    }

    fn finish(self, result: Option<Result<(), SyncError>>) -> Result<(), SyncError> {
        // The service completes every ticket by its deadline; `None` cannot happen after it,
        // and reporting a timeout is the truthful answer if it ever did.
        result.unwrap_or(Err(SyncError::Timeout))
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
    error: Mutex<Option<Error>>,
}

impl<L> ConnectionGuard<L> {
    pub(crate) fn master(&self) -> &MasterHandle<L> {
        &self.master
    }

    /// A fresh machine for this connection.
    pub(crate) fn machine(&self) -> MasterConnection {
        MasterConnection::new(self.master.inner.config, Instant::now())
    }

    /// Forwards the machine's events to the service and wakes waiters (run-loop step 2).
    pub(crate) fn forward(&self, machine: &mut MasterConnection) {
        let Some(mut event) = machine.poll_event() else {
            return;
        };
        {
            let now = Instant::now();
            let mut state = lock(&self.master.inner.state);
            loop {
                if let MasterEvent::Started { requested, .. } = event {
                    if let Some(peer) = state.peers.get_mut(&self.id) {
                        peer.1 = Some(requested);
                    }
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

    /// Records why the connection is closing; the first reason wins.
    pub(crate) fn fail(&self, error: Error) {
        lock(&self.error).get_or_insert(error);
    }
}

impl<L> Drop for ConnectionGuard<L> {
    fn drop(&mut self) {
        let error = lock(&self.error).take();
        {
            let mut state = lock(&self.master.inner.state);
            state.service.remove(self.id, Instant::now());
            state.peers.remove(&self.id);
            if state.closed.len() == HISTORY {
                state.closed.pop_front();
            }
            state.closed.push_back(ClosedConnection {
                id: self.id,
                peer: self.peer,
                error,
            });
        }
        self.master.inner.changed.notify(usize::MAX);
    }
}

// ---------------------------------------------------------------------------------------------
// The slave
// ---------------------------------------------------------------------------------------------

/// What a slave driver has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlaveStatus {
    /// Whether a connection to the master is up.
    pub connected: bool,
    /// Connections established so far.
    pub connections: u64,
    /// Connections or dials that ended with an error (see [`SlaveHandle::take_errors`]).
    pub failures: u64,
}

/// The slave's shared state, given to a driver and kept by the user: the local commit log, the
/// master's address, and what happened so far.
///
/// Cloning is cheap (an `Arc`). [`wait_until_blocking`](Self::wait_until_blocking) re-checks its
/// condition whenever the log grows or the connection state changes.
pub struct SlaveHandle<L> {
    inner: Arc<SlaveInner<L>>,
}

struct SlaveInner<L> {
    log: SharedLog<L>,
    config: Config,
    master: SocketAddr,
    seed: u64,
    state: Mutex<SlaveState>,
    stop: Stop,
}

#[derive(Default)]
struct SlaveState {
    status: SlaveStatus,
    errors: VecDeque<Error>,
}

impl<L> Clone for SlaveHandle<L> {
    fn clone(&self) -> Self {
        SlaveHandle {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<L> std::fmt::Debug for SlaveHandle<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlaveHandle")
            .field("master", &self.inner.master)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl<L> SlaveHandle<L> {
    /// A slave replicating from `master` into `log`. The reconnect jitter seed is random.
    pub fn new(master: SocketAddr, log: L, config: Config) -> Self {
        // A per-process random seed: slaves started together must not reconnect in lockstep.
        let seed = RandomState::new().hash_one(master);
        Self::with_seed(master, SharedLog::new(log), config, seed)
    }

    /// A slave replicating into an already shared log, with a fixed reconnect jitter `seed`.
    pub fn with_seed(master: SocketAddr, log: SharedLog<L>, config: Config, seed: u64) -> Self {
        SlaveHandle {
            inner: Arc::new(SlaveInner {
                log,
                config,
                master,
                seed,
                state: Mutex::new(SlaveState::default()),
                stop: Stop::default(),
            }),
        }
    }

    /// The local commit log.
    pub fn log(&self) -> &SharedLog<L> {
        &self.inner.log
    }

    /// The configuration the slave uses.
    pub fn config(&self) -> Config {
        self.inner.config
    }

    /// The master's address.
    pub fn master(&self) -> SocketAddr {
        self.inner.master
    }

    /// Connection state and counters.
    pub fn status(&self) -> SlaveStatus {
        lock(&self.inner.state).status
    }

    /// Takes the errors that ended connections or dials since the last call (at most the last
    /// 64).
    pub fn take_errors(&self) -> Vec<Error> {
        lock(&self.inner.state).errors.drain(..).collect()
    }

    /// Blocks until `pred` holds or `deadline` passes; re-checked whenever the log grows or the
    /// connection state changes. Returns whether it held.
    pub fn wait_until_blocking(
        &self,
        deadline: Instant,
        mut pred: impl FnMut(&Self) -> bool,
    ) -> bool {
        block_until(&self.inner.log.inner.changed, Some(deadline), || {
            pred(self).then_some(())
        })
        .is_some()
    }

    /// Stops the slave: closes its connection and makes its driver return. Idempotent.
    pub fn shutdown(&self) {
        self.inner.stop.trigger();
        self.inner.log.notify();
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.stop.is_set()
    }

    pub(crate) fn stop(&self) -> &Stop {
        &self.inner.stop
    }

    fn record(&self, connected: bool, error: Option<Error>) {
        {
            let mut state = lock(&self.inner.state);
            let status = &mut state.status;
            if connected && !status.connected {
                status.connections += 1;
            }
            status.connected = connected;
            if let Some(error) = error {
                status.failures += 1;
                if state.errors.len() == HISTORY {
                    state.errors.pop_front();
                }
                state.errors.push_back(error);
            }
        }
        self.inner.log.notify();
    }
}

/// The slave side every driver shares: the [`HaClient`], its read buffer, and the append loop.
/// A driver only dials, reads, writes reports and sleeps, calling these at each step.
pub(crate) struct SlaveDriver<L> {
    handle: SlaveHandle<L>,
    client: HaClient,
    buf: BytesMut,
    /// Zero bytes at the end of `buf` lent to a read that has not reported back.
    scratch: usize,
}

impl<L: LogSink> SlaveDriver<L> {
    pub(crate) fn new(handle: SlaveHandle<L>) -> Self {
        let client = HaClient::new(handle.inner.config, handle.inner.seed, Instant::now());
        SlaveDriver {
            handle,
            client,
            buf: BytesMut::new(),
            scratch: 0,
        }
    }

    /// Run-loop step 2: applies every pending append and returns whether the machine asked to
    /// dial. A failed append closes the connection (the rest of the batch is dropped, as it
    /// could not be contiguous).
    pub(crate) fn apply(&mut self) -> bool {
        let Some(mut event) = self.client.poll_event() else {
            return false;
        };
        let client = &mut self.client;
        let mut dial = false;
        let mut failed = None;
        self.handle.inner.log.update(|log| loop {
            match event {
                ClientEvent::Connect => dial = true,
                ClientEvent::Append { offset, data } if failed.is_none() => {
                    match log.append(offset, data) {
                        Ok(max) => client.handle_appended(max),
                        Err(e) => failed = Some(e),
                    }
                }
                _ => {}
            }
            match client.poll_event() {
                Some(next) => event = next,
                None => break,
            }
        });
        if let Some(error) = failed {
            self.disconnected(Some(error.into()));
        }
        dial
    }

    /// The dial succeeded: start a connection from the local log's max offset.
    pub(crate) fn connected(&mut self) {
        // Bytes of the previous connection are meaningless on the new one.
        self.buf.clear();
        self.scratch = 0;
        let max = self.handle.inner.log.max_offset();
        self.client.handle_connected(Instant::now(), max);
        self.handle.record(true, None);
    }

    /// The dial failed.
    pub(crate) fn connect_failed(&mut self, error: Error) {
        self.client.handle_connect_failed(Instant::now());
        self.handle.record(false, Some(error));
    }

    /// The connection ended: EOF (`None`) or an error.
    pub(crate) fn disconnected(&mut self, error: Option<Error>) {
        self.client.handle_disconnected(Instant::now());
        self.handle.record(false, error);
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Run-loop step 3: the next report to write whole.
    pub(crate) fn poll_report(&mut self) -> Option<[u8; 8]> {
        self.client.poll_transmit(Instant::now())
    }

    /// The machine's next deadline.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    /// Space to read into; report what was read with [`on_read`](Self::on_read).
    pub(crate) fn read_buf(&mut self) -> &mut [u8] {
        let filled = self.buf.len() - self.scratch;
        let max_frame = self.handle.inner.config.max_frame_size() as usize;
        let want = self
            .client
            .bytes_wanted(&self.buf[..filled])
            .clamp(READ_CHUNK, max_frame.max(READ_CHUNK));
        self.buf.resize(filled + want, 0);
        self.scratch = want;
        &mut self.buf[filled..]
    }

    /// `n` bytes were read into [`read_buf`](Self::read_buf): run-loop step 1. An error is
    /// recorded and leaves the machine disconnected; the driver then closes the socket.
    pub(crate) fn on_read(&mut self, n: usize) {
        let filled = self.buf.len() - self.scratch;
        self.buf.truncate(filled + n.min(self.scratch));
        self.scratch = 0;
        if let Err(e) = self.client.handle_input(Instant::now(), &mut self.buf) {
            self.handle.record(false, Some(e.into()));
        }
    }

    /// The deadline passed. A housekeeping error is recorded like [`on_read`](Self::on_read)'s.
    pub(crate) fn on_timeout(&mut self) {
        let was_connected = self.client.is_connected();
        if let Err(e) = self.client.handle_timeout(Instant::now()) {
            self.handle.record(false, Some(e.into()));
        } else if was_connected && !self.client.is_connected() {
            self.handle.record(false, None);
        }
    }
}
