//! A minimal blocking etcd v3 client over etcd's JSON gateway (`POST /v3/...`, keys and values
//! base64), for drivers that must write many keys fast (an `etcdctl` exec per key costs
//! ~10-30 ms). One keep-alive HTTP/1.1 connection, opened inside a given netns; no new
//! dependencies (std + serde_json).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use serde_json::{json, Value};

pub struct EtcdHttp {
    netns: String,
    addr: String,
    conn: Option<BufReader<TcpStream>>,
}

impl EtcdHttp {
    /// `netns`: path of the netns to connect from; `addr`: `host:port` of etcd's client URL.
    pub fn new(netns: &str, addr: &str) -> EtcdHttp {
        EtcdHttp {
            netns: netns.to_string(),
            addr: addr.to_string(),
            conn: None,
        }
    }

    fn connect(&mut self) -> std::io::Result<&mut BufReader<TcpStream>> {
        if self.conn.is_none() {
            let addr = self.addr.clone();
            let s = crate::in_netns(&self.netns, move || TcpStream::connect(addr))?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::new(s));
        }
        Ok(self.conn.as_mut().expect("connected"))
    }

    fn once(&mut self, path: &str, body: &[u8]) -> std::io::Result<Value> {
        let host = self.addr.clone();
        let c = self.connect()?;
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        c.get_mut().write_all(&req)?;
        let mut status = String::new();
        c.read_line(&mut status)?;
        let (mut len, mut chunked) = (None, false);
        loop {
            let mut h = String::new();
            if c.read_line(&mut h)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
                chunked = true;
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                let mut line = String::new();
                c.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim(), 16)
                    .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
                let mut chunk = vec![0; n + 2];
                c.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..n]);
            }
        } else {
            let n = len.ok_or_else(|| std::io::Error::other("response without length"))?;
            out.resize(n, 0);
            c.read_exact(&mut out)?;
        }
        if !status.contains(" 200 ") {
            return Err(std::io::Error::other(format!(
                "etcd {path}: {} {}",
                status.trim(),
                String::from_utf8_lossy(&out)
            )));
        }
        serde_json::from_slice(&out).map_err(std::io::Error::other)
    }

    /// One gateway call; reconnects once when the kept-alive connection was closed.
    pub fn call(&mut self, path: &str, body: &Value) -> Value {
        let b = body.to_string().into_bytes();
        match self.once(path, &b) {
            Ok(v) => v,
            Err(_) => {
                self.conn = None;
                self.once(path, &b)
                    .unwrap_or_else(|e| panic!("etcd gateway {path} at {}: {e}", self.addr))
            }
        }
    }

    /// A lease of `ttl` seconds; its ID.
    pub fn grant(&mut self, ttl: i64) -> i64 {
        let v = self.call("/v3/lease/grant", &json!({"TTL": ttl}));
        id(&v["ID"]).unwrap_or_else(|| panic!("lease grant: {v}"))
    }

    pub fn revoke(&mut self, lease: i64) {
        self.call("/v3/lease/revoke", &json!({"ID": lease.to_string()}));
    }

    /// `Txn(If(Version(key) = 0)).Then(Put(key, value, lease))`: a create, as the agent claims
    /// a block. True when it was created.
    pub fn create(&mut self, key: &str, value: &str, lease: i64) -> bool {
        let v = self.call(
            "/v3/kv/txn",
            &json!({
                "compare": [{"key": b64(key.as_bytes()), "target": "VERSION", "result": "EQUAL", "version": "0"}],
                "success": [{"request_put": {"key": b64(key.as_bytes()), "value": b64(value.as_bytes()), "lease": lease.to_string()}}],
            }),
        );
        v["succeeded"] == true
    }

    /// Deletes one key; true when it existed.
    pub fn delete(&mut self, key: &str) -> bool {
        let v = self.call("/v3/kv/deleterange", &json!({"key": b64(key.as_bytes())}));
        id(&v["deleted"]).unwrap_or(0) > 0
    }
}

/// int64 fields come as JSON strings from the gateway.
fn id(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
}

/// Standard base64 with padding (what the gateway expects for bytes fields).
pub fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn b64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::b64(i.as_bytes()), o);
        }
    }
}
