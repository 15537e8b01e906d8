//! Log timestamps, the same rule as cnm-shim's log: RFC 3339 UTC with milliseconds
//! (`2026-12-02T05:58:14.123Z`), none when stderr goes to journald (`JOURNAL_STREAM` set by
//! systemd), which stamps every line itself.

use std::time::SystemTime;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Whether stderr goes to the journal.
pub fn to_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// tracing-subscriber's default timer prints microseconds; this one prints what cnm-shim does.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rfc3339Millis;

pub fn format(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl FormatTime for Rfc3339Millis {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        w.write_str(&format(SystemTime::now()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn hs_rfc3339_utc_millis() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_185_623_707);
        assert_eq!(super::format(t), "2026-12-02T04:27:03.707Z");
        assert_eq!(super::format(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
