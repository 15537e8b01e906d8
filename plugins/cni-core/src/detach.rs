//! Work a plugin hands to a detached process so the runtime does not wait for it.
//!
//! Some kernel work blocks the caller for an RCU grace period (10-30 ms) although its result
//! is already final: deleting a veth, or closing an nf_tables socket whose transaction deleted
//! elements (the close flushes the kernel's deferred cleanup). A detached grandchild (double
//! fork, so no zombie is left to the runtime) inherits the open sockets and pays for that;
//! the plugin exits at once.

/// Runs `f` in a detached grandchild; the caller continues at once. On fork failure `f` runs
/// inline. Must only be called while the process is single-threaded.
pub fn detached(f: impl FnOnce()) {
    // SAFETY: callers are single-threaded here (documented contract), so the child may keep
    // running Rust code after fork.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => f(),
        0 => {
            // SAFETY: same single-threaded child; the grandchild is re-parented to init (or the
            // nearest subreaper), which reaps it.
            if unsafe { libc::fork() } == 0 {
                detach_stdio();
                f();
            }
            // SAFETY: _exit skips atexit handlers and stdio flushing, which belong to the parent.
            unsafe { libc::_exit(0) }
        }
        child => {
            let mut status = 0;
            // SAFETY: waiting for our own direct child, which exits right after its fork.
            unsafe { libc::waitpid(child, &mut status, 0) };
        }
    }
}

/// Keeps `obj` (e.g. an nf_tables socket after a delete) open in a detached process for a
/// moment, so the last close — and its wait — happens there, after the caller's copy is gone.
pub fn linger_detached<T>(obj: T) {
    detached(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(obj);
    });
}

/// The runtime reads our stdout/stderr until EOF: the grandchild must not keep them open, and
/// leaves the runtime's session.
fn detach_stdio() {
    // SAFETY: plain syscalls on fds we own; /dev/null is opened read-write and dup'ed onto 0-2.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            if null > 2 {
                libc::close(null);
            }
        }
    }
}
