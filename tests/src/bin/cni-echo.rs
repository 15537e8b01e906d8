//! Tiny TCP/UDP/SCTP echo for the portmap tests: the server answers each
//! message with `<message> from <peer address>`, so a test sees both that a
//! published port reaches the container and which source address (masqueraded
//! or not) arrived there.
//!
//! Usage: cni-echo serve tcp|udp|sctp PORT
//!        cni-echo send tcp|udp|sctp ADDR PORT MESSAGE   (prints the answer; exit 1 without)
//!
//! SCTP uses one-to-one (SOCK_STREAM) sockets, made with libc and then driven
//! through std's TCP types, whose read/write/accept calls work unchanged.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::FromRawFd;
use std::time::Duration;

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let r = match a.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["serve", proto, port] => serve(proto, port.parse().expect("port")),
        ["send", proto, addr, port, msg] => send(
            proto,
            SocketAddr::new(addr.parse().expect("address"), port.parse().expect("port")),
            msg,
        )
        .map(|reply| println!("{reply}")),
        _ => {
            eprintln!("usage: cni-echo serve PROTO PORT | send PROTO ADDR PORT MESSAGE");
            std::process::exit(2)
        }
    };
    if let Err(e) = r {
        eprintln!("cni-echo: {e}");
        std::process::exit(1);
    }
}

fn peer(a: SocketAddr) -> IpAddr {
    match a.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn serve(proto: &str, port: u16) -> std::io::Result<()> {
    let any = SocketAddr::from(([0u16; 8], port));
    if proto == "udp" {
        let s = UdpSocket::bind(any)?;
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = s.recv_from(&mut buf)?;
            let msg = String::from_utf8_lossy(&buf[..n]).trim().to_string();
            s.send_to(format!("{msg} from {}\n", peer(from)).as_bytes(), from)?;
        }
    }
    let l = match proto {
        "tcp" => TcpListener::bind(any)?,
        "sctp" => sctp_listener(any)?,
        p => return Err(std::io::Error::other(format!("unknown protocol {p}"))),
    };
    for c in l.incoming() {
        let Ok(mut c) = c else { continue };
        std::thread::spawn(move || {
            let from = c.peer_addr().map(peer).ok();
            let mut line = String::new();
            if BufReader::new(&c).read_line(&mut line).is_ok() {
                let from = from.map(|f| f.to_string()).unwrap_or_default();
                let _ = writeln!(c, "{} from {from}", line.trim());
            }
        });
    }
    Ok(())
}

fn send(proto: &str, to: SocketAddr, msg: &str) -> std::io::Result<String> {
    let t = Duration::from_secs(2);
    if proto == "udp" {
        let local: SocketAddr = if to.is_ipv6() {
            ([0u16; 8], 0).into()
        } else {
            ([0u8; 4], 0).into()
        };
        let s = UdpSocket::bind(local)?;
        s.set_read_timeout(Some(Duration::from_millis(700)))?;
        let mut buf = [0u8; 2048];
        for _ in 0..3 {
            s.send_to(format!("{msg}\n").as_bytes(), to)?;
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string());
            }
        }
        return Err(std::io::Error::other("no UDP answer"));
    }
    let mut c = match proto {
        "tcp" => TcpStream::connect_timeout(&to, t)?,
        "sctp" => sctp_connect(to)?,
        p => return Err(std::io::Error::other(format!("unknown protocol {p}"))),
    };
    c.set_read_timeout(Some(t))?;
    writeln!(c, "{msg}")?;
    let mut line = String::new();
    BufReader::new(&c).read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::other("connection closed without an answer"));
    }
    Ok(line.trim().to_string())
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn sctp_socket(a: SocketAddr) -> std::io::Result<i32> {
    let fam = if a.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: plain socket(2) call; the fd is owned by the caller.
    let fd = unsafe {
        libc::socket(
            fam,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            libc::IPPROTO_SCTP,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn sctp_listener(a: SocketAddr) -> std::io::Result<TcpListener> {
    let fd = sctp_socket(a)?;
    // SAFETY: `fd` is a fresh socket we own; TcpListener takes ownership (closes it on drop).
    let l = unsafe { TcpListener::from_raw_fd(fd) };
    let (ss, len) = sockaddr(a);
    // SAFETY: `ss` is a valid sockaddr of `len` bytes for the socket's family.
    if unsafe { libc::bind(fd, &ss as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: listen(2) on our socket.
    if unsafe { libc::listen(fd, 16) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(l)
}

fn sctp_connect(a: SocketAddr) -> std::io::Result<TcpStream> {
    let fd = sctp_socket(a)?;
    // SAFETY: `fd` is a fresh socket we own; TcpStream takes ownership.
    let s = unsafe { TcpStream::from_raw_fd(fd) };
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let (ss, len) = sockaddr(a);
    // SAFETY: `ss` is a valid sockaddr of `len` bytes for the socket's family.
    if unsafe { libc::connect(fd, &ss as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s)
}
