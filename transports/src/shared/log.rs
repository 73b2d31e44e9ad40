//! [`SharedLog`]: the commit log shared by drivers and their user, with a growth notification.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::Instant;

use bytes::Bytes;
use event_listener::{Event, EventListener};
use rocketmq_ha::{LogError, LogSink, LogSource};

use super::{block_until, until};

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
    /// Fires with `changed`, except after an append whose frames producers wrote themselves:
    /// master connection drivers wait on this one, so that such an append does not wake them
    /// for nothing.
    drivers: Event,
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
                drivers: Event::new(),
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
        let result = self.update_quietly(f);
        self.notify();
        result
    }

    /// Runs `f` with write access and wakes no one: the caller calls [`notify`](Self::notify)
    /// when it is done (a master's producer first writes frames itself).
    pub(crate) fn update_quietly<R>(&self, f: impl FnOnce(&mut L) -> R) -> R {
        let mut log = self
            .inner
            .log
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut log)
    }

    /// A listener that fires at the next [`update`](Self::update) (or other wake-up). Create it
    /// *before* checking the log, then wait on it, so no growth is missed in between.
    pub fn listen(&self) -> EventListener {
        self.inner.changed.listen()
    }

    /// The event behind [`listen`](Self::listen), for waiters elsewhere in the crate.
    pub(crate) fn changed(&self) -> &Event {
        &self.inner.changed
    }

    /// Like [`listen`](Self::listen), for a master connection's driver: it also misses the
    /// wake-ups [`notify_all_but_drivers`](Self::notify_all_but_drivers) leaves out.
    pub(crate) fn listen_as_driver(&self) -> EventListener {
        self.inner.drivers.listen()
    }

    /// Wakes every waiter without changing the log.
    pub(crate) fn notify(&self) {
        self.inner.changed.notify(usize::MAX);
        self.inner.drivers.notify(usize::MAX);
    }

    /// Wakes every waiter but the master connections' drivers: after an append whose frames
    /// producers wrote themselves, or that a driver busy with a frame will see when it looks
    /// next (see `DirectWrite`).
    pub(crate) fn notify_all_but_drivers(&self) {
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
        let end = self.append_quietly(data);
        self.notify();
        end
    }

    /// [`append`](Self::append) without the wake-up (see [`update_quietly`](Self::update_quietly)).
    pub(crate) fn append_quietly(&self, data: impl Into<Bytes>) -> Result<u64, LogError> {
        let data = data.into();
        self.update_quietly(|log| {
            let end = log.max_offset();
            log.append(end, data)
        })
    }
}
