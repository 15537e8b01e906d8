//! Random bytes from the kernel's CSPRNG (getrandom(2)): the one reader of
//! the workspace (handles, veth names, MACs).

use std::io;

/// Fills `buf`; retries when interrupted and after short reads (a request
/// over 256 bytes may return fewer).
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid, writable slice of `rest.len()` bytes for the whole call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn fills_everything() {
        let mut a = [0u8; 600];
        let mut b = [0u8; 600];
        super::fill(&mut a).unwrap();
        super::fill(&mut b).unwrap();
        assert_ne!(a, b);
        // 600 random bytes without a zero in the last 64 would be a miracle.
        assert!(a[536..].iter().any(|&x| x != 0));
        super::fill(&mut []).unwrap();
    }
}
