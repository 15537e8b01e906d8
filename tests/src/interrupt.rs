//! Ctrl-C / SIGTERM for long-running drivers: the signal only sets a flag, and the next wait
//! loop that checks it panics, so the stack unwinds and every Drop guard (netns, daemons,
//! temp dirs) cleans up. Daemons run in their own process group and do not see the terminal's
//! SIGINT; children in ours (iperf3, ping) die with it and their callers fail the same way.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Panics (unwinding through the Drop guards) when a signal arrived.
pub fn check() {
    assert!(!interrupted(), "interrupted by a signal; cleaning up");
}
