//! The slave's shared state ([`SlaveHandle`]) and the part of its run loop every driver shares
//! ([`SlaveDriver`]: the append loop and the read buffer).

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rocketmq_ha::autoswitch::EpochList;
use rocketmq_ha::{
    ClientError, ClientEvent, Config, ConnectionState, LogSink, LogTruncate, SlaveLoop, Traffic,
    REJECTIONS_TO_REPORT,
};
use tracing::Span;

use super::dial::resolve_blocking;
use super::slave_protocol::{AutoSwitchSetup, AutoSwitchSlave, Outgoing, SlaveProtocol, Stored};
use super::{block_until, lock, until, SharedLog, Stop, HISTORY};
use crate::observe::CloseReason;
use crate::stream::Dialer;
use crate::Error;

/// What a slave driver has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive] // more counters will come (bytes, frames, epochs)
pub struct SlaveStatus {
    /// Whether a connection to the master is up.
    pub connected: bool,
    /// Connections established so far.
    pub connections: u64,
    /// Connections or dials that ended with an error (see [`SlaveHandle::take_errors`]).
    pub failures: u64,
    /// When the current (or last) connection was established: the TCP connect had returned.
    pub connected_at: Option<Instant>,
    /// When that connection first stored bytes in the local log (`None` until it has).
    pub first_stored_at: Option<Instant>,
    /// Failures to store received data locally since the last successful store (a full
    /// disk, ...). Each one waits longer before the next attempt, up to
    /// [`Config::local_failure_backoff_max`](rocketmq_ha::Config::local_failure_backoff_max).
    pub local_failures: u32,
    /// Whether the master is rejecting this slave: it closed the last few connections right
    /// after the slave's report without sending anything ([`Error::Rejected`] says why).
    pub rejected: bool,
    /// The connection's state (§3.10): `Ready`, `Transfer` while connected, `Shutdown` once
    /// the handle was shut down.
    pub state: ConnectionState,
    /// Connections the master ended cleanly (EOF): not counted in `failures`.
    pub closed_by_master: u64,
    /// Bytes and frames moved so far, over every connection (an AutoSwitch slave counts
    /// bytes only).
    pub traffic: Traffic,
    /// AutoSwitch: the last epoch in the slave's history (`None` for a classic slave).
    pub epoch: Option<i32>,
    /// AutoSwitch: the confirm offset the master last sent, capped at what this slave stored
    /// (`None` for a classic slave, or before the first transfer frame).
    pub confirm_offset: Option<u64>,
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
    /// The master as `HOST:PORT`, resolved again before every dial; `None`: dial `master`.
    host: Option<String>,
    /// The address of the last dial (`master` until the first).
    dialed: Mutex<SocketAddr>,
    seed: u64,
    /// `Some` for an AutoSwitch slave.
    autoswitch: Option<AutoSwitchSetup<L>>,
    state: Mutex<SlaveState>,
    stop: Stop,
    /// Plain TCP or TLS, for dials from now on.
    dialer: Mutex<Dialer>,
}

#[derive(Default)]
struct SlaveState {
    status: SlaveStatus,
    errors: VecDeque<Error>,
    /// AutoSwitch: the history as last saved.
    epochs: Option<EpochList>,
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

    /// A slave replicating from the master at `host` (`HOST:PORT`, a name or an address) into
    /// `log`. The name is resolved now, so that a typo fails at once, and again before every
    /// dial, so that a master that moved (a DNS name re-pointed after a fail-over) is found at
    /// the next reconnect; each dial tries the addresses in the resolver's order.
    pub fn with_host(host: &str, log: L, config: Config) -> Result<Self, Error> {
        let first = resolve_blocking(host)?[0];
        let seed = RandomState::new().hash_one(host);
        let host = Some(host.to_owned());
        Ok(Self::build(
            first,
            host,
            SharedLog::new(log),
            config,
            seed,
            None,
        ))
    }

    /// An AutoSwitch slave (RocketMQ 5's controller mode, §5) of the master at `host`
    /// (`HOST:PORT`, resolved now and before every dial, as in
    /// [`with_host`](Self::with_host)), replicating into `log`. It loads its epoch history
    /// from the options' epoch file, refuses an epoch older than that history
    /// ([`Error::Role`]), and on its first connection cuts `log` back to the last point its
    /// history shares with the master's.
    pub fn autoswitch(
        host: &str,
        log: L,
        config: Config,
        options: AutoSwitchSlave,
    ) -> Result<Self, Error>
    where
        L: LogTruncate,
    {
        Self::autoswitch_with_shared_log(host, SharedLog::new(log), config, options)
    }

    /// [`autoswitch`](Self::autoswitch) into an already shared log.
    pub fn autoswitch_with_shared_log(
        host: &str,
        log: SharedLog<L>,
        config: Config,
        options: AutoSwitchSlave,
    ) -> Result<Self, Error>
    where
        L: LogTruncate,
    {
        let first = resolve_blocking(host)?[0];
        let setup = AutoSwitchSetup::new(options, config, first)?;
        let seed = RandomState::new().hash_one(host);
        let host = Some(host.to_owned());
        Ok(Self::build(first, host, log, config, seed, Some(setup)))
    }

    /// A slave replicating into an already shared log, with a fixed reconnect jitter `seed`.
    pub fn with_seed(master: SocketAddr, log: SharedLog<L>, config: Config, seed: u64) -> Self {
        Self::build(master, None, log, config, seed, None)
    }

    fn build(
        master: SocketAddr,
        host: Option<String>,
        log: SharedLog<L>,
        config: Config,
        seed: u64,
        autoswitch: Option<AutoSwitchSetup<L>>,
    ) -> Self {
        let mut state = SlaveState::default();
        if let Some(setup) = &autoswitch {
            state.status.epoch = setup.epochs.last().map(|e| e.epoch);
            state.epochs = Some(setup.epochs.clone());
        }
        SlaveHandle {
            inner: Arc::new(SlaveInner {
                log,
                config,
                master,
                host,
                dialed: Mutex::new(master),
                seed,
                autoswitch,
                state: Mutex::new(state),
                stop: Stop::default(),
                dialer: Mutex::default(),
            }),
        }
    }

    /// AutoSwitch: the slave's epoch history as last saved (`None` for a classic slave).
    pub fn epochs(&self) -> Option<EpochList> {
        lock(&self.inner.state).epochs.clone()
    }

    /// Whether this slave speaks AutoSwitch.
    pub fn is_autoswitch(&self) -> bool {
        self.inner.autoswitch.is_some()
    }

    /// The local commit log.
    pub fn log(&self) -> &SharedLog<L> {
        &self.inner.log
    }

    /// The configuration the slave uses.
    pub fn config(&self) -> Config {
        self.inner.config
    }

    /// The master's address: the one last dialed (a host name may resolve to another at
    /// each dial, see [`with_host`](Self::with_host)).
    pub fn master(&self) -> SocketAddr {
        *lock(&self.inner.dialed)
    }

    /// The master's `HOST:PORT` when the slave resolves it before each dial.
    pub fn master_host(&self) -> Option<&str> {
        self.inner.host.as_deref()
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
        block_until(self.inner.log.changed(), Some(deadline), || {
            pred(self).then_some(())
        })
        .is_some()
    }

    /// Stops the slave: closes its connection and makes its driver return. Idempotent.
    pub fn shutdown(&self) {
        {
            let mut state = lock(&self.inner.state);
            state.status.connected = false;
            state.status.state = ConnectionState::Shutdown;
        }
        self.inner.stop.trigger();
        self.inner.log.notify();
    }

    /// Blocks until the slave's connection reaches `state`, or `deadline` passes; returns
    /// whether it did (Java's `HAConnectionStateNotificationService`, §3.10).
    pub fn wait_for_state_blocking(&self, state: ConnectionState, deadline: Instant) -> bool {
        self.wait_until_blocking(deadline, |s| s.status().state == state)
    }

    /// The async form of [`wait_for_state_blocking`](Self::wait_for_state_blocking), without
    /// a deadline (race it with a timer).
    pub async fn wait_for_state(&self, state: ConnectionState) {
        until(self.inner.log.changed(), || {
            (self.status().state == state).then_some(())
        })
        .await
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.stop.is_set()
    }

    /// Dials over TLS (`Some`) or plain TCP (`None`, the default) from the next dial on. Only
    /// the `smol` and `tokio` drivers speak TLS; see [`crate::tls`].
    #[cfg(feature = "tls")]
    pub fn set_tls(&self, tls: Option<crate::tls::ClientTls>) {
        lock(&self.inner.dialer).tls = tls;
    }

    /// Whether the slave dials over TLS.
    pub fn is_tls(&self) -> bool {
        lock(&self.inner.dialer).is_tls()
    }

    pub(crate) fn stop(&self) -> &Stop {
        &self.inner.stop
    }
}

/// The slave side every driver shares: the core's [`SlaveLoop`] (which decides), the log
/// (which it stores to), and the handle (where status and errors go). A driver only dials,
/// reads, writes and sleeps, calling these at each step.
pub(crate) struct SlaveDriver<L> {
    handle: SlaveHandle<L>,
    lp: SlaveProtocol<L>,
    /// Whether the current connection has not stored anything yet (for
    /// [`SlaveStatus::first_stored_at`]).
    first_store_pending: bool,
    /// The current connection's span (the dial's, between connections).
    span: Span,
    /// The span of dials: `master{addr}`.
    dial_span: Span,
    /// Dials failed in a row: only the first is a warning, so a master that is down for an
    /// hour does not fill the log (the status line says "connecting" meanwhile).
    failed_dials: u32,
    /// Frames received as last logged, for `trace` events of the frames since.
    logged_frames: u64,
}

impl<L: LogSink> SlaveDriver<L> {
    pub(crate) fn new(handle: SlaveHandle<L>) -> Self {
        let (config, seed, now) = (handle.inner.config, handle.inner.seed, Instant::now());
        let lp = match &handle.inner.autoswitch {
            None => SlaveProtocol::Classic(SlaveLoop::new(config, seed, now)),
            Some(setup) => match setup.slave_loop(config, handle.inner.master, seed, now) {
                Ok(lp) => SlaveProtocol::AutoSwitch {
                    lp,
                    truncate: setup.truncate,
                    epoch_file: setup.options.epoch_file.clone(),
                    traffic: Traffic::default(),
                },
                // The handle's constructor made the same loop from the same history.
                Err(_) => unreachable!("the AutoSwitch setup was checked when the handle was made"),
            },
        };
        let span = tracing::info_span!("replicating", master = %handle.inner.master);
        SlaveDriver {
            handle,
            lp,
            first_store_pending: false,
            dial_span: span.clone(),
            span,
            failed_dials: 0,
            logged_frames: 0,
        }
    }

    /// Stores every batch the loop has queued (the frames of a read, each starting where the
    /// previous ended, in one vectored append), and passes the loop's events on.
    pub(crate) fn store(&mut self) {
        while let Some(step) = self.lp.store_next(&self.handle.inner.log) {
            match step {
                Stored::Appended => {
                    if self.first_store_pending {
                        self.first_store_pending = false;
                        lock(&self.handle.inner.state).status.first_stored_at =
                            Some(Instant::now());
                    }
                    self.sync_status(None);
                }
                Stored::History => {
                    if let Some(client) = self.lp.autoswitch() {
                        let epochs = client.epochs().clone();
                        tracing::info!(parent: &self.span, epochs = ?epochs.entries(), "epoch history saved");
                        lock(&self.handle.inner.state).epochs = Some(epochs);
                    }
                    self.sync_status(None);
                }
                Stored::Failed(e) => self.sync_status(Some(e)),
            }
        }
        let Some(lp) = self.lp.classic_mut() else {
            return;
        };
        let mut rejected = None;
        while let Some(event) = lp.poll_event() {
            if let ClientEvent::Rejected { offset, closes } = event {
                rejected = Some((offset, closes));
            }
        }
        if let Some((offset, closes)) = rejected {
            let addr = self.handle.master();
            self.sync_status(Some(Error::Rejected {
                addr,
                offset,
                closes,
            }));
        }
    }

    /// The addresses to dial now, in order: the host name resolved again, or the address.
    pub(crate) fn dial_addresses_blocking(&self) -> Result<Vec<SocketAddr>, Error> {
        match &self.handle.inner.host {
            Some(host) => resolve_blocking(host),
            None => Ok(vec![self.handle.inner.master]),
        }
    }

    /// How to wrap the next dialed socket.
    pub(crate) fn dialer(&self) -> Dialer {
        lock(&self.handle.inner.dialer).clone()
    }

    /// The host to resolve before dialing, if any (async drivers resolve off their thread).
    pub(crate) fn dial_host(&self) -> Option<String> {
        self.handle.inner.host.clone()
    }

    /// The address the dial is trying now (for status and error messages).
    pub(crate) fn dialing(&self, addr: SocketAddr) {
        *lock(&self.handle.inner.dialed) = addr;
    }

    /// Whether to dial now (see [`SlaveLoop::poll_dial`]).
    pub(crate) fn poll_dial(&mut self) -> bool {
        self.store();
        self.lp.poll_dial()
    }

    /// The dial succeeded: start a connection from the local log's max offset.
    pub(crate) fn connected(&mut self) {
        self.first_store_pending = true;
        self.failed_dials = 0;
        let max = self.handle.inner.log.max_offset();
        let connection = lock(&self.handle.inner.state).status.connections + 1;
        self.span =
            tracing::info_span!("replicating", master = %self.handle.inner.master, connection);
        tracing::info!(parent: &self.span, "connected; reporting offset {max}");
        self.lp.handle_connected(Instant::now(), max);
        self.sync_status(None);
    }

    /// The dial failed.
    pub(crate) fn connect_failed(&mut self, error: Error) {
        self.span = self.dial_span.clone();
        self.failed_dials = self.failed_dials.saturating_add(1);
        self.lp.handle_connect_failed(Instant::now());
        self.sync_status(Some(error));
    }

    /// The connection ended: EOF (`None`) or an I/O error.
    pub(crate) fn closed(&mut self, error: Option<Error>) {
        self.lp.handle_closed(Instant::now());
        if error.is_none() && !self.handle.is_shut_down() {
            lock(&self.handle.inner.state).status.closed_by_master += 1;
            tracing::info!(parent: &self.span, "the master closed the connection");
        }
        self.sync_status(error);
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.lp.is_connected()
    }

    /// The loop's next deadline.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.lp.poll_timeout()
    }

    /// The report bytes to write now.
    pub(crate) fn poll_write(&mut self) -> Option<Outgoing> {
        self.lp.poll_write(Instant::now())
    }

    /// `n` bytes of the report were written.
    pub(crate) fn wrote(&mut self, n: usize) {
        let result = self.lp.handle_written(Instant::now(), n);
        self.check(result);
    }

    /// Whether to read now.
    pub(crate) fn wants_read(&self) -> bool {
        self.lp.wants_read()
    }

    /// Space to read into; report what was read with [`on_read`](Self::on_read).
    pub(crate) fn read_buf(&mut self) -> &mut [u8] {
        self.lp.read_buf()
    }

    /// `n` (> 0) bytes were read into [`read_buf`](Self::read_buf); the frames they complete
    /// are stored at once.
    pub(crate) fn on_read(&mut self, n: usize) {
        let result = self.lp.handle_read(Instant::now(), n);
        self.check(result);
        self.store();
        if tracing::enabled!(tracing::Level::TRACE) {
            let frames = self.lp.traffic().frames_in;
            if frames > self.logged_frames {
                let stored = self.lp.stored_offset();
                tracing::trace!(parent: &self.span, frames = frames - self.logged_frames, bytes = n, stored, "received");
                self.logged_frames = frames;
            }
        }
    }

    /// Handles the deadline if it has passed. Drivers call this on every turn of their loop, not
    /// only when their timer wins the race: a socket that is always readable must not keep the
    /// write-stall limit, heartbeats or housekeeping from firing.
    pub(crate) fn on_due(&mut self) {
        if self.lp.poll_timeout().is_some_and(|d| d <= Instant::now()) {
            self.on_timeout();
        }
    }

    /// The deadline passed (or the driver woke early).
    pub(crate) fn on_timeout(&mut self) {
        let result = self.lp.handle_timeout(Instant::now());
        let addr = self.handle.master();
        match result {
            Err(Error::Client(ClientError::ConnectTimeout { after })) => {
                self.span = self.dial_span.clone();
                self.failed_dials = self.failed_dials.saturating_add(1);
                self.sync_status(Some(Error::ConnectTimeout { addr, after }))
            }
            other => self.check(other),
        }
    }

    fn check(&mut self, result: Result<(), Error>) {
        self.sync_status(result.err());
    }

    /// Copies the loop's state into the handle's status and records `error`; wakes waiters
    /// when anything changed.
    fn sync_status(&self, error: Option<Error>) {
        let connected = self.lp.is_connected();
        let traffic = self.lp.traffic();
        let connection_state = self.lp.connection_state();
        let (local_failures, rejected) = match self.lp.classic() {
            Some(lp) => (
                lp.client().local_failures(),
                lp.client().rejections() >= REJECTIONS_TO_REPORT,
            ),
            None => (0, false),
        };
        let (epoch, confirm_offset) = match self.lp.autoswitch() {
            Some(client) => (
                client.epochs().last().map(|e| e.epoch),
                client.confirm_offset(),
            ),
            None => (None, None),
        };
        let changed = {
            let mut state = lock(&self.handle.inner.state);
            let status = &mut state.status;
            let before = *status;
            if connected && !status.connected {
                status.connections += 1;
                status.connected_at = Some(Instant::now());
                status.first_stored_at = None;
            }
            status.connected = connected;
            status.traffic = traffic;
            status.local_failures = local_failures;
            status.rejected = rejected;
            status.epoch = epoch;
            status.confirm_offset = confirm_offset;
            if status.state != ConnectionState::Shutdown {
                status.state = connection_state;
            }
            let recorded = error.is_some();
            if let Some(error) = error {
                let reason =
                    CloseReason::classify(Some(&error), status.state == ConnectionState::Shutdown);
                if reason == CloseReason::Shutdown {
                    // Whatever the socket said after our own stop is no news.
                    tracing::info!(parent: &self.span, "connection closed: the slave is stopping");
                    tracing::debug!(parent: &self.span, "{error}");
                } else if reason.is_error() && self.failed_dials > 1 {
                    tracing::debug!(
                        parent: &self.span,
                        reason = reason.label(),
                        failed_dials = self.failed_dials,
                        "{error}"
                    );
                } else if reason.is_error() {
                    tracing::warn!(parent: &self.span, reason = reason.label(), "{error}");
                } else {
                    tracing::info!(parent: &self.span, reason = reason.label(), "{error}");
                }
                status.failures += 1;
                if state.errors.len() == HISTORY {
                    state.errors.pop_front();
                }
                state.errors.push_back(error);
            }
            // Traffic alone is no change worth waking waiters for: the log's growth wakes them.
            let mut compared = state.status;
            compared.traffic = before.traffic;
            recorded || compared != before
        };
        if changed {
            self.handle.inner.log.notify();
        }
    }
}
