//! The retry loops of the nf_tables writers, in one place. Writers are
//! optimistic: they build a transaction from what they expect, and when the
//! kernel rejects it (a concurrent ADD/DEL/GC, a table made or removed
//! meanwhile) they learn from the failures and try again.

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::query;
use crate::socket::NftSocket;

/// Attempts of a transaction whose rejections are repaired and retried.
pub(crate) const ATTEMPTS: usize = 16;

/// Runs `attempt` until it is done: `Ok(Ok(v))` is the result; `Ok(Err(e))`
/// a rejected transaction the attempt has learned from (tried again; after
/// [`ATTEMPTS`] the last rejection is the error); `Err` is final.
pub(crate) fn rejected<T>(
    what: &str,
    mut attempt: impl FnMut() -> Result<std::result::Result<T, Error>>,
) -> Result<T> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match attempt()? {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Protocol(format!("{what}: no attempt made"))))
}

/// What one look at the ruleset decided.
pub(crate) enum Plan<T> {
    /// Nothing (more) to write.
    Done(T),
    /// Commit this batch; `T` is the result when it is applied.
    Commit(Batch, T),
}

/// Read-check-write under the ruleset generation: `plan` reads what it needs
/// and builds a batch, which is committed with the generation read before
/// `plan` ran, so the kernel rejects it (ERESTART) if anything changed in
/// between; then, as when a table or chain vanished (ENOENT), `plan` runs
/// again, up to `attempts` times. `gave_up` is the error after that.
pub(crate) fn at_generation<T>(
    sock: &mut NftSocket,
    attempts: usize,
    gave_up: impl FnOnce() -> String,
    mut plan: impl FnMut(&mut NftSocket) -> Result<Plan<T>>,
) -> Result<T> {
    for _ in 0..attempts {
        let genid = query::generation(sock)?;
        match plan(sock)? {
            Plan::Done(v) => return Ok(v),
            Plan::Commit(b, v) => match b.with_genid(genid).commit(sock) {
                Ok(()) => return Ok(v),
                Err(e) if e.errno() == Some(libc::ERESTART) || e.is_not_found() => continue,
                Err(e) => return Err(e),
            },
        }
    }
    Err(Error::Protocol(gave_up()))
}
