//! Building an [`Error`] from outside the crate: for code that stands in for the kernel (the
//! recording fakes of unit tests) and must fail the way a request would.

use crate::error::Error;

impl Error {
    /// An error carrying `errno` (positive, e.g. `libc::EEXIST`), as a failed request gives.
    pub fn from_errno(errno: i32, context: impl Into<String>) -> Self {
        Error::os(errno, context)
    }
}
