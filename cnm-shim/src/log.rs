//! Minimal logging to stderr. Lines start with an RFC 3339 UTC timestamp with milliseconds
//! (`2026-12-02T05:58:14.123Z`), so test logs read and correlate with dockerd's; under
//! systemd (`JOURNAL_STREAM` set: stderr goes to journald, which stamps every line itself)
//! the timestamp is left out. cnm-agent follows the same rule.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::SystemTime;

static DEBUG: AtomicBool = AtomicBool::new(false);

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Whether stderr goes to journald (systemd sets `JOURNAL_STREAM` for services whose output
/// it connects to the journal). Looked up once.
fn to_journal() -> bool {
    static J: OnceLock<bool> = OnceLock::new();
    *J.get_or_init(|| std::env::var_os("JOURNAL_STREAM").is_some())
}

/// One log line, newline included.
fn line(at: Option<SystemTime>, level: &str, msg: std::fmt::Arguments<'_>) -> String {
    match at {
        Some(t) => format!(
            "{} cnm-shim {level}: {msg}\n",
            humantime::format_rfc3339_millis(t)
        ),
        None => format!("cnm-shim {level}: {msg}\n"),
    }
}

pub fn write(level: &str, msg: std::fmt::Arguments<'_>) {
    let at = (!to_journal()).then(SystemTime::now);
    let line = line(at, level, msg);
    // One write call per line, so lines of concurrent threads do not interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write("info", format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::write("warn", format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::debug_enabled() {
            $crate::log::write("debug", format_args!($($arg)*))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn hs_lines_carry_rfc3339_utc_millis_or_nothing() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_185_623_707);
        assert_eq!(
            line(Some(t), "info", format_args!("x {}", 1)),
            "2026-12-02T04:27:03.707Z cnm-shim info: x 1\n"
        );
        // Whole seconds keep their three digits.
        let t = UNIX_EPOCH + Duration::from_secs(1_796_185_623);
        assert!(line(Some(t), "warn", format_args!("y")).starts_with("2026-12-02T04:27:03.000Z "));
        assert_eq!(line(None, "warn", format_args!("y")), "cnm-shim warn: y\n");
    }
}
