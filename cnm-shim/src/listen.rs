//! The listening socket: inherited from systemd (socket activation, `LISTEN_FDS`/`LISTEN_PID`,
//! fd 3), so the plugin socket exists before dockerd starts and dockerd's calls wait in the
//! backlog while the shim starts; or bound by the shim itself at the configured path.

use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::err;
use crate::error::{Ctx, Result};

/// `SD_LISTEN_FDS_START`.
const LISTEN_FDS_START: RawFd = 3;

/// The inherited socket if this process was socket-activated. Clears the activation variables
/// so children (the CNI plugins) do not see them.
fn activation_fd() -> Result<Option<RawFd>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim() != std::process::id().to_string() {
        return Ok(None);
    }
    let n: u32 = fds
        .trim()
        .parse()
        .map_err(|_| err!("LISTEN_FDS={fds:?} is not a number"))?;
    if n != 1 {
        return Err(err!(
            "socket activation passed {n} sockets; the cnm-shim .socket unit must have exactly one ListenStream="
        ));
    }
    let fd = LISTEN_FDS_START;
    // SAFETY: fstat/getsockopt only read the fd's metadata; fd 3 is ours by the activation
    // protocol (checked: LISTEN_PID is this process).
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return Err(err!(
                "socket activation: fd 3 is not a socket; check the ListenStream= of the .socket unit"
            ));
        }
        let mut listening: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            &mut listening as *mut _ as *mut libc::c_void,
            &mut len,
        );
        if rc != 0 || listening == 0 {
            return Err(err!(
                "socket activation: fd 3 is not a listening stream socket; use ListenStream= (not Accept=yes)"
            ));
        }
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    Ok(Some(fd))
}

/// Binds `path`, replacing a stale socket file but refusing to steal the socket of a running
/// process.
fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(err!(
                    "{} is in use by another process (another cnm-shim with this name?); stop it or choose another --name",
                    path.display()
                ))
            }
            Err(_) => std::fs::remove_file(path)
                .ctx(|| format!("remove stale socket {}", path.display()))?,
        },
        Ok(_) => {
            return Err(err!(
                "{} exists and is not a socket; remove it or choose another --socket",
                path.display()
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err!("stat {}: {e}", path.display())),
    }
    let l = UnixListener::bind(path).ctx(|| format!("bind {}", path.display()))?;
    // dockerd runs as root; nobody else needs to talk to a network driver.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .ctx(|| format!("chmod {}", path.display()))?;
    Ok(l)
}

/// The socket to serve on, and whether it came from socket activation.
pub fn listener(path: &Path) -> Result<(UnixListener, bool)> {
    if let Some(fd) = activation_fd()? {
        // SAFETY: fd 3 is an open listening socket handed to us by systemd (checked above)
        // and nothing else in this process owns it.
        return Ok((unsafe { UnixListener::from_raw_fd(fd) }, true));
    }
    Ok((bind(path)?, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_replaces_stale_and_refuses_live() {
        let dir = std::env::temp_dir().join(format!("cnm-listen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("x.sock");
        let l = bind(&path).unwrap();
        let e = bind(&path).unwrap_err();
        assert!(e.0.contains("in use"), "{e}");
        drop(l);
        std::fs::remove_file(&path).unwrap();
        // A stale file: bound by a socket that no longer listens. Not made by dropping a
        // listener: a sibling test's fork between its bind and our drop keeps a copy of the
        // listening fd until the child execs, and the socket would still answer.
        let stale = stale_socket(&path);
        assert!(path.exists());
        let _l2 = bind(&path).unwrap();
        drop(stale);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A stream socket bound to `path` that never listens: connecting gets ECONNREFUSED, as
    /// it would after the process that bound it died.
    fn stale_socket(path: &Path) -> std::os::fd::OwnedFd {
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: plain socket(2); the fd is owned by the returned OwnedFd.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        // SAFETY: fd is a fresh socket nothing else owns.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_bytes();
        assert!(bytes.len() < addr.sun_path.len());
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        // SAFETY: addr is a valid sockaddr_un and its size is passed.
        let rc = unsafe {
            libc::bind(
                fd,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        assert_eq!(
            rc,
            0,
            "bind {}: {}",
            path.display(),
            io::Error::last_os_error()
        );
        owned
    }

    #[test]
    fn refuses_non_socket() {
        let dir = std::env::temp_dir().join(format!("cnm-listen2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.sock");
        std::fs::write(&path, b"x").unwrap();
        assert!(bind(&path).unwrap_err().0.contains("not a socket"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
