//! A small HTTP/1.1 server for Docker's plugin protocol over a unix socket: one thread per
//! connection (dockerd keeps a few keep-alive connections and issues concurrent calls on
//! separate ones), `Content-Length` and chunked request bodies, keep-alive, and a JSON body on
//! every reply, including protocol errors. The Host header is never looked at (dockerd sends
//! it empty).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

/// Media type of every reply (dockerd ignores it; it is what the protocol names).
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";
const MAX_HEADER_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// An idle keep-alive connection is closed after this long (Go's client drops idle
/// connections after 90 s and reconnects transparently).
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        Response {
            status,
            body: serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec()),
        }
    }
}

/// A request that could not be read; answered with `status` and then the connection closes.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Bad { status: u16, msg: String },
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

fn bad(status: u16, msg: impl Into<String>) -> ReadError {
    ReadError::Bad {
        status,
        msg: msg.into(),
    }
}

/// Reads one line (without CRLF), bounded by the remaining header budget.
fn read_line<R: BufRead>(r: &mut R, budget: &mut usize) -> Result<Option<String>, ReadError> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if n > *budget {
        return Err(bad(431, "request headers too large"));
    }
    *budget -= n;
    if buf.last() != Some(&b'\n') {
        return Err(bad(400, "connection closed in the middle of a request"));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| bad(400, "request header is not UTF-8"))
}

/// Reads the next request; `Ok(None)` at a clean end of stream between requests.
pub fn read_request<R: BufRead>(r: &mut R) -> Result<Option<Request>, ReadError> {
    let mut budget = MAX_HEADER_BYTES;
    // Tolerate stray empty lines between requests (RFC 9112 §2.2).
    let line = loop {
        match read_line(r, &mut budget)? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(400, format!("malformed request line {line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad(505, format!("unsupported protocol {version:?}")));
    }
    let mut headers = Vec::new();
    loop {
        let Some(h) = read_line(r, &mut budget)? else {
            return Err(bad(400, "connection closed inside the request headers"));
        };
        if h.is_empty() {
            break;
        }
        let Some((k, v)) = h.split_once(':') else {
            return Err(bad(400, format!("malformed header line {h:?}")));
        };
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or("").to_string(),
        headers,
        body: Vec::new(),
    };
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        req.body = read_chunked(r)?;
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(400, format!("invalid Content-Length {len:?}")))?;
        if len > MAX_BODY_BYTES {
            return Err(bad(
                413,
                format!("request body of {len} bytes is too large"),
            ));
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        req.body = body;
    }
    Ok(Some(req))
}

fn read_chunked<R: BufRead>(r: &mut R) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let mut budget = 1024;
        let line = read_line(r, &mut budget)?.ok_or_else(|| bad(400, "truncated chunk"))?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| bad(400, format!("invalid chunk size {size_hex:?}")))?;
        if size == 0 {
            // Trailer section up to the empty line.
            let mut budget = MAX_HEADER_BYTES;
            while let Some(l) = read_line(r, &mut budget)? {
                if l.is_empty() {
                    break;
                }
            }
            return Ok(body);
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(bad(413, "request body is too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut budget = 2;
        read_line(r, &mut budget)?; // CRLF after the chunk
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

pub fn write_response<W: Write>(w: &mut W, resp: &Response, close: bool) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.body.len()
    )
    .into_bytes();
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&resp.body);
    w.write_all(&out)?;
    w.flush()
}

pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Serves one connection until the peer closes it, asks to, or sends garbage.
pub fn serve_conn(stream: UnixStream, handler: &Handler) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        match read_request(&mut reader) {
            Ok(None) => return Ok(()),
            Ok(Some(req)) => {
                let resp = handler(&req);
                let close = req.wants_close();
                write_response(&mut writer, &resp, close)?;
                if close {
                    return Ok(());
                }
            }
            Err(ReadError::Io(e)) => return Err(e),
            Err(ReadError::Bad { status, msg }) => {
                let body = serde_json::json!({ "Err": format!("cnm-shim: {msg}") });
                write_response(&mut writer, &Response::json(status, &body), true)?;
                return Ok(());
            }
        }
    }
}

/// Accepts connections forever, one thread each.
pub fn serve(listener: UnixListener, handler: Handler) -> ! {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let h = handler.clone();
                let spawned = std::thread::Builder::new()
                    .name("conn".into())
                    .spawn(move || {
                        if let Err(e) = serve_conn(stream, &h) {
                            if !matches!(
                                e.kind(),
                                io::ErrorKind::BrokenPipe
                                    | io::ErrorKind::ConnectionReset
                                    | io::ErrorKind::WouldBlock
                                    | io::ErrorKind::TimedOut
                            ) {
                                crate::warn!("connection: {e}");
                            }
                        }
                    });
                if let Err(e) = spawned {
                    crate::warn!("cannot start a connection thread: {e}");
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                crate::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn parse(raw: &str) -> Result<Option<Request>, ReadError> {
        read_request(&mut Cursor::new(raw.as_bytes().to_vec()))
    }

    #[test]
    fn docker_style_requests() {
        // What dockerd sends: empty Host, no Content-Type, sometimes no body at all.
        let raw = "POST /Plugin.Activate HTTP/1.1\r\nHost: \r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: 0\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nAccept-Encoding: gzip\r\n\r\n";
        let r = parse(raw).unwrap().unwrap();
        assert_eq!(r.path, "/Plugin.Activate");
        assert!(r.body.is_empty());
        let raw = "POST /NetworkDriver.Join HTTP/1.1\r\nHost: \r\nContent-Length: 3\r\n\r\n{}\n";
        let r = parse(raw).unwrap().unwrap();
        assert_eq!(r.body, b"{}\n");
        assert_eq!(r.header("host"), Some(""));
    }

    #[test]
    fn keep_alive_and_chunked() {
        let raw = "POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{\"\r\n3\r\na\":\r\n2\r\n1}\r\n0\r\n\r\n";
        let mut c = Cursor::new(raw.as_bytes().to_vec());
        let a = read_request(&mut c).unwrap().unwrap();
        assert_eq!((a.path.as_str(), a.body.as_slice()), ("/a", &b"{}"[..]));
        let b = read_request(&mut c).unwrap().unwrap();
        assert_eq!(b.body, b"{\"a\":1}");
        assert!(read_request(&mut c).unwrap().is_none());
    }

    #[test]
    fn garbage_is_rejected_with_status() {
        for (raw, status) in [
            ("NONSENSE\r\n\r\n", 400),
            ("POST /a SPDY/3\r\n\r\n", 505),
            ("POST /a HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            (
                "POST /a HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n",
                413,
            ),
            ("POST /a HTTP/1.1\r\nbad header\r\n\r\n", 400),
        ] {
            match parse(raw) {
                Err(ReadError::Bad { status: s, .. }) => assert_eq!(s, status, "{raw:?}"),
                other => panic!("{raw:?}: {other:?}"),
            }
        }
        assert!(matches!(
            parse("POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}"),
            Err(ReadError::Io(_))
        ));
    }

    #[test]
    fn response_is_json_with_length() {
        let mut out = Vec::new();
        let r = Response::json(500, &serde_json::json!({"Err": "x"}));
        write_response(&mut out, &r, false).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
        assert!(s.contains("Content-Length: 11\r\n"));
        assert!(s.ends_with("\r\n\r\n{\"Err\":\"x\"}"));
    }
}
