//! The slave's shared state ([`SlaveHandle`]) and the part of its run loop every driver shares
//! ([`SlaveDriver`]: the append loop and the read buffer).

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rocketmq_ha::{ClientEvent, Config, HaClient, LogSink};

use super::{block_until, lock, SharedLog, Stop, HISTORY, READ_CHUNK};
use crate::Error;

/// What a slave driver has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
        block_until(self.inner.log.changed(), Some(deadline), || {
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
                status.connected_at = Some(Instant::now());
                status.first_stored_at = None;
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
    /// The bytes of an incomplete frame (the first `filled`), then initialized room that reads
    /// fill. Room left over after a read is lent again as it is, so bytes are zero-filled once
    /// per pass through the buffer rather than once per read.
    buf: BytesMut,
    /// How many bytes at the front of `buf` are data from the master.
    filled: usize,
    /// Appends taken from the machine and not yet written; kept to reuse its allocation.
    batch: Vec<Bytes>,
    /// Whether the current connection has not stored anything yet (for
    /// [`SlaveStatus::first_stored_at`]).
    first_store_pending: bool,
    /// The size of the next read: it grows while reads fill it (a stream is flowing) and
    /// shrinks while they do not (an idle connection), between [`READ_MIN`] and [`READ_CHUNK`].
    chunk: usize,
}

/// The smallest read a slave driver lends; also what an idle connection keeps allocated.
const READ_MIN: usize = 8 * 1024;

impl<L: LogSink> SlaveDriver<L> {
    pub(crate) fn new(handle: SlaveHandle<L>) -> Self {
        let client = HaClient::new(handle.inner.config, handle.inner.seed, Instant::now());
        SlaveDriver {
            handle,
            client,
            buf: BytesMut::new(),
            filled: 0,
            batch: Vec::new(),
            first_store_pending: false,
            chunk: READ_MIN,
        }
    }

    /// Run-loop step 2: applies every pending append and returns whether the machine asked to
    /// dial. A failed append closes the connection (the rest of the batch is dropped, as it
    /// could not be contiguous).
    pub(crate) fn apply(&mut self) -> bool {
        let Some(first) = self.client.poll_event() else {
            return false;
        };
        let client = &mut self.client;
        let batch = &mut self.batch;
        let mut dial = false;
        let mut failed = None;
        let mut stored = false;
        self.handle.inner.log.update(|log| {
            // The appends (the frames of a read, each starting where the previous ended) go to
            // the log together: a file log writes them with one system call. A dial request
            // among them is answered after they are all applied, as the machine requires.
            let mut from = 0;
            let mut next = Some(first);
            while let Some(event) = next {
                match event {
                    ClientEvent::Append { offset, data } => {
                        if batch.is_empty() {
                            from = offset;
                        }
                        batch.push(data);
                    }
                    ClientEvent::Connect => dial = true,
                    _ => {}
                }
                next = client.poll_event();
            }
            if !batch.is_empty() {
                match log.append_all(from, batch) {
                    Ok(max) => {
                        client.handle_appended(max);
                        stored = true;
                    }
                    Err(e) => failed = Some(e),
                }
                batch.clear();
            }
        });
        if stored && self.first_store_pending {
            self.first_store_pending = false;
            lock(&self.handle.inner.state).status.first_stored_at = Some(Instant::now());
        }
        if let Some(error) = failed {
            self.disconnected(Some(error.into()));
        }
        dial
    }

    /// The dial succeeded: start a connection from the local log's max offset.
    pub(crate) fn connected(&mut self) {
        // Bytes of the previous connection are meaningless on the new one.
        self.buf = BytesMut::new();
        self.filled = 0;
        self.chunk = READ_MIN;
        self.first_store_pending = true;
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
        if self.buf.len() - self.filled < self.chunk {
            // Room for the rest of the frame at once (the machine bounds it by
            // `max_frame_size`), so a large frame is not copied as the buffer grows. Twice the
            // read size is initialized, so the next few reads reuse it without zero-filling.
            let wanted = self.client.bytes_wanted(&self.buf[..self.filled]);
            self.buf.truncate(self.filled);
            self.buf.reserve(wanted.max(2 * self.chunk));
            self.buf.resize(self.filled + 2 * self.chunk, 0);
        }
        &mut self.buf[self.filled..]
    }

    /// `n` bytes were read into [`read_buf`](Self::read_buf): run-loop step 1. An error is
    /// recorded and leaves the machine disconnected; the driver then closes the socket.
    pub(crate) fn on_read(&mut self, n: usize) {
        let lent = self.buf.len() - self.filled;
        let n = n.min(lent);
        // A read that filled what it was lent suggests more is waiting: read more at once. A
        // read far smaller than that suggests an idle connection: lend less.
        if n == lent {
            self.chunk = (2 * self.chunk).min(READ_CHUNK);
        } else if n < self.chunk / 4 {
            self.chunk = (self.chunk / 2).max(READ_MIN);
        }
        // Hand the machine only the data; the room after it stays in `self.buf`.
        let mut data = self.buf.split_to(self.filled + n);
        let result = self.client.handle_input(Instant::now(), &mut data);
        self.filled = data.len();
        // `data` ends where the room begins, so this joins them without copying.
        data.unsplit(std::mem::take(&mut self.buf));
        self.buf = data;
        if self.filled == 0 && self.chunk == READ_MIN && self.buf.capacity() > 4 * READ_MIN {
            // Idle with nothing pending: give a burst's large buffer back rather than hold it
            // for the life of the connection.
            self.buf = BytesMut::new();
        }
        if let Err(e) = result {
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
