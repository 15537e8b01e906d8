use std::time::{Duration, Instant};

/// Polls `f` until it holds or `timeout` passes; whether it held. The interval grows from
/// 10 ms to 100 ms: quick conditions are seen quickly, slow ones (that spawn `docker`, `ctr`,
/// `ip` to look) don't load the machine.
pub fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Like `poll_until`, but a timeout fails the test, naming what was awaited; how long it took.
pub fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    assert!(
        poll_until(timeout, f),
        "timed out after {timeout:?} waiting for {what}"
    );
    t0.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_until_true_or_deadline() {
        let mut n = 0;
        assert!(poll_until(Duration::from_secs(2), || {
            n += 1;
            n == 3
        }));
        assert!(!poll_until(Duration::from_millis(50), || false));
    }
}
