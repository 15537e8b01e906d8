//! The CNI error object (`code`, `msg`, `details`) and the spec's well-known codes.

use std::fmt;

/// Well-known error codes (SPEC.md "Error" table, plus libcni's 8 and Go's 999).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnv = 4,
    Io = 5,
    Decoding = 6,
    InvalidConfig = 7,
    InvalidNetns = 8,
    TryAgainLater = 11,
    NotAvailable = 50,
    LimitedConnectivity = 51,
    Internal = 999,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self {
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// An error with a raw numeric code, e.g. one relayed from a delegated plugin.
    pub fn with_code(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(Code::Internal, msg)
    }

    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(Code::InvalidConfig, msg)
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Prefixes the message with context, keeping the code.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }

    /// The JSON printed on stdout; `cniVersion` is included when known, as the spec shows.
    pub fn to_json(&self, cni_version: Option<&str>) -> String {
        let mut m = serde_json::Map::new();
        if let Some(v) = cni_version.filter(|v| !v.is_empty()) {
            m.insert("cniVersion".into(), v.into());
        }
        m.insert("code".into(), self.code.into());
        m.insert("msg".into(), self.msg.clone().into());
        if !self.details.is_empty() {
            m.insert("details".into(), self.details.clone().into());
        }
        crate::result::to_go_json(&serde_json::Value::Object(m))
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}; {}", self.msg, self.details)
        }
    }
}

impl std::error::Error for CniError {}

impl From<std::io::Error> for CniError {
    fn from(e: std::io::Error) -> Self {
        CniError::new(Code::Io, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let e = CniError::new(Code::InvalidEnv, "bad").with_details("why");
        let v: serde_json::Value = serde_json::from_str(&e.to_json(Some("1.1.0"))).unwrap();
        assert_eq!(v["code"], 4);
        assert_eq!(v["msg"], "bad");
        assert_eq!(v["details"], "why");
        assert_eq!(v["cniVersion"], "1.1.0");
        let v: serde_json::Value =
            serde_json::from_str(&CniError::internal("x").to_json(None)).unwrap();
        assert!(v.get("details").is_none());
        assert!(v.get("cniVersion").is_none());
        assert_eq!(v["code"], 999);
    }
}
