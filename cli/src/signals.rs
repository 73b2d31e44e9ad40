//! SIGINT (Ctrl-C) and SIGTERM ask the master and the slave to stop cleanly: the program notices
//! within a tick, stops its driver and syncs its store, so a machine crash after a stop loses
//! nothing. A second signal of the same kind kills the process as by default.
//!
//! A thread blocked in a synchronous append cannot look at a flag, so the handler also writes a
//! byte to a pipe (`write` is async-signal-safe) that a watcher thread reads: [`on_stop`] runs
//! its action there at once, e.g. shutting the master down, which fails pending sync waits
//! with `Shutdown` instead of letting them run into their timeout.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that asked us to stop; 0 while none has.
static STOP: AtomicI32 = AtomicI32::new(0);

/// The write end of the watcher's pipe; -1 until [`install`] made it.
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// The read end of the watcher's pipe; -1 until [`install`] made it.
static PIPE_READ: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only an atomic store and a `write`: nothing else is async-signal-safe here.
    STOP.store(signal, Ordering::SeqCst);
    let fd = PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: writing one byte from a static to a descriptor we own; a full pipe (a byte is
        // already waiting) is fine to ignore.
        unsafe {
            libc::write(fd, [1u8].as_ptr().cast(), 1);
        }
    }
}

/// Installs the handlers. Failing to is not fatal (the signals then kill the process as
/// before, and periodic flushing bounds what a later crash can lose), so it is only reported.
pub fn install() {
    if PIPE_WRITE.load(Ordering::SeqCst) < 0 {
        let mut fds = [-1; 2];
        // SAFETY: `pipe2` fills the two descriptors of a fresh pipe; close-on-exec keeps them
        // out of child processes, non-blocking keeps the handler from ever blocking.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == 0 {
            PIPE_READ.store(fds[0], Ordering::SeqCst);
            PIPE_WRITE.store(fds[1], Ordering::SeqCst);
        }
    }
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `sigaction` with a zeroed struct, an empty mask and a handler that only
        // stores to an atomic and writes to a pipe. SA_RESETHAND restores the default action
        // after the first signal, so a second Ctrl-C ends a stop that hangs.
        let installed = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut()) == 0
        };
        if !installed {
            tracing::warn!(
                "cannot handle signal {signal}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Runs `action` on a thread of its own as soon as a stop signal arrives (after [`install`]).
/// Without the pipe (it could not be made), nothing runs: the main loop's polling of
/// [`stop_requested`] still stops the program, only later.
pub fn on_stop(action: impl FnOnce(&'static str) + Send + 'static) {
    let fd = PIPE_READ.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("signal-watch".into())
        .spawn(move || loop {
            if let Some(signal) = stop_requested() {
                return action(signal);
            }
            let mut poll = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let mut byte = 0u8;
            // SAFETY: `poll` on one descriptor we own, then a one-byte read into a local; the
            // pipe is non-blocking, so the read never waits.
            unsafe {
                libc::poll(&mut poll, 1, -1);
                libc::read(fd, (&mut byte as *mut u8).cast(), 1);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch for signals: {e}");
    }
}

/// The name of the signal that asked us to stop, if one did.
pub fn stop_requested() -> Option<&'static str> {
    match STOP.load(Ordering::SeqCst) {
        0 => None,
        libc::SIGINT => Some("SIGINT"),
        libc::SIGTERM => Some("SIGTERM"),
        _ => Some("a signal"),
    }
}
