//! What every driver shares: the commit log handle with its growth notification, the master's
//! shared state (log + [`MasterService`](rocketmq_ha::MasterService) + sync waiters), the slave's handle and its append loop,
//! and shutdown.
//!
//! Nothing here knows about sockets beyond closing them, and nothing here makes a protocol
//! decision: the machines do. This module only moves their outputs to where they are needed.

mod dial;
mod log;
mod master;
mod master_protocol;
mod slave;
mod slave_protocol;
mod stop;

pub(crate) use dial::resolve_on_thread;
pub use log::SharedLog;
pub(crate) use master::{Accepted, ConnectionGuard, DirectWrite, SharedLoop};
pub use master::{ClosedConnection, MasterHandle, MasterTotals, RefusedConnection, SlaveInfo};
pub use master_protocol::AutoSwitchMaster;
pub(crate) use master_protocol::Frame;
pub(crate) use slave::SlaveDriver;
pub use slave::{SlaveHandle, SlaveStatus};
pub use slave_protocol::AutoSwitchSlave;
pub(crate) use stop::Stop;

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use event_listener::{Event, Listener};

/// How many closed connections or slave errors a handle keeps for inspection; older ones are
/// dropped so a flapping peer cannot grow memory without bound.
const HISTORY: usize = 64;

/// The send buffer of a master's connection (`SO_SNDBUF`; Linux doubles it for bookkeeping).
///
/// Left to autotuning, every connection's buffer grows to `tcp_wmem`'s maximum (4 MiB here),
/// and with many slaves the data in flight outgrows the CPU caches: `bench` measured 64 slaves
/// on one master at 480-610 MB/s aggregate with autotuning and 880-1120 MB/s with 1 MiB, with
/// one slave unchanged within noise. 1 MiB still covers the bandwidth-delay product of
/// 10 Gbit/s at 1.6 ms round trip (RocketMQ's Java master uses 64 KiB).
const MASTER_SEND_BUFFER: usize = 1 << 20;

/// Socket options of a master's accepted connection: no Nagle delay for frames (§1.2) and a
/// bounded send buffer ([`MASTER_SEND_BUFFER`]). A failure of the latter only costs speed.
pub(crate) fn tune_master_socket<S: std::os::fd::AsFd>(socket: &S) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(socket);
    let _ = socket.set_send_buffer_size(MASTER_SEND_BUFFER);
    socket.set_tcp_nodelay(true)
}

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
