//! [`Flusher`]: a thread that applies a shared [`FileLog`]'s flush policy, RocketMQ's flush
//! service. When to flush is decided by the log ([`FileLog::prepare_flush`]); this thread only
//! reads the clock, sleeps until [`FileLog::flush_due`], and runs the disk flush outside the
//! log's lock.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{FileLog, FileLogError};
use crate::SharedLog;

/// How long the thread sleeps when the log's mode has no schedule ([`FlushMode::EveryAppend`],
/// [`FlushMode::Manual`]) before it looks again, in case the mode changed.
///
/// [`FlushMode::EveryAppend`]: super::FlushMode::EveryAppend
/// [`FlushMode::Manual`]: super::FlushMode::Manual
const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// A background thread flushing a [`FileLog`] shared as a [`SharedLog`] on the log's
/// [`FlushPolicy`](super::FlushPolicy), the way RocketMQ's `FlushRealTimeService` runs beside
/// its writers.
///
/// Each flush takes the log's write lock twice, briefly: to prepare it (which also decides
/// whether one is due) and to record it in the checkpoint. The `fdatasync` in between runs
/// without the lock, so appends (a slave storing what it received, a producer on the master) are
/// not held up by the disk. A failed flush poisons the log and ends the thread with the error;
/// [`is_finished`](Self::is_finished) tells, [`stop`](Self::stop) returns it.
///
/// Stopping does not sync; close the log (or drop its last handle) for that.
#[derive(Debug)]
pub struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<Result<(), FileLogError>>>,
}

impl Flusher {
    /// Starts a thread named `ha-flusher` flushing `log`.
    pub fn spawn(log: SharedLog<FileLog>) -> std::io::Result<Flusher> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = thread::Builder::new().name("ha-flusher".into()).spawn({
            let stop = Arc::clone(&stop);
            move || run(&log, &stop)
        })?;
        Ok(Flusher {
            stop,
            thread: Some(thread),
        })
    }

    /// Whether the thread has ended (only a failed flush ends it before [`stop`](Self::stop)).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the thread (a flush under way completes first) and returns the error that ended
    /// it, if one did.
    pub fn stop(mut self) -> Result<(), FileLogError> {
        self.halt()
    }

    fn halt(&mut self) -> Result<(), FileLogError> {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            // The thread itself does not panic; a panic would come from a bug in the log, and
            // the log's own lock already recovers from it.
            Some(Err(_)) | None => Ok(()),
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// The thread: sleep until the log's next flush decision (or a stop), take it, repeat.
fn run(log: &SharedLog<FileLog>, stop: &(Mutex<bool>, Condvar)) -> Result<(), FileLogError> {
    let (flag, wake) = stop;
    loop {
        let now = Instant::now();
        let wait = match log.read().flush_due(now) {
            Some(due) => due.saturating_duration_since(now),
            None => IDLE_RECHECK,
        };
        if !wait.is_zero() {
            let stopped = flag.lock().unwrap_or_else(PoisonError::into_inner);
            let (stopped, _) = wake
                .wait_timeout_while(stopped, wait, |stopped| !*stopped)
                .unwrap_or_else(PoisonError::into_inner);
            if *stopped {
                return Ok(());
            }
            continue;
        }
        if *flag.lock().unwrap_or_else(PoisonError::into_inner) {
            return Ok(());
        }
        if let Some(pending) = log.update(|log| log.prepare_flush(now))? {
            let done = pending.run();
            log.update(|log| log.finish_flush(done))?;
        }
    }
}
