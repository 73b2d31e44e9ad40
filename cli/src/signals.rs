//! SIGINT (Ctrl-C) and SIGTERM ask the master and the slave to stop cleanly: the program notices
//! within a tick, stops its driver and syncs its store, so a machine crash after a stop loses
//! nothing. A second signal of the same kind kills the process as by default.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that asked us to stop; 0 while none has.
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only an atomic store: nothing else is async-signal-safe here.
    STOP.store(signal, Ordering::SeqCst);
}

/// Installs the handlers. Failing to is not fatal (the signals then kill the process as
/// before, and periodic flushing bounds what a later crash can lose), so it is only reported.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `sigaction` with a zeroed struct, an empty mask and a handler that only
        // stores to an atomic. SA_RESETHAND restores the default action after the first
        // signal, so a second Ctrl-C ends a stop that hangs.
        let installed = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut()) == 0
        };
        if !installed {
            eprintln!(
                "rocketmq-ha: cannot handle signal {signal}: {}",
                std::io::Error::last_os_error()
            );
        }
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
