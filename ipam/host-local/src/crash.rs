//! Test hook: `CNI_HOST_LOCAL_CRASH_AT=<point>` SIGKILLs the process at that point, so a test
//! gets exactly the state a `kill -9` there leaves, without racing a timer. Compiled into debug
//! builds only (the ones the tests run); a no-op in release builds, which do not contain the
//! variable's name (`check_release_binaries` in scripts/lib.sh).

/// Points: `reserve`: the inode of a new reservation file exists, its content is not written.
#[cfg(debug_assertions)]
pub fn point(name: &str) {
    if std::env::var("CNI_HOST_LOCAL_CRASH_AT").is_ok_and(|v| v == name) {
        // SAFETY: raise(2) with a valid signal number; SIGKILL ends the process here.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn point(_name: &str) {}
