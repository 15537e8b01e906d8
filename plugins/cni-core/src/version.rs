//! CNI spec versions: the list we speak, parsing and the per-verb feature gates.

use crate::error::{CniError, Code};

/// Every spec version this suite speaks, oldest first (VERSION prints them in this order).
pub const SUPPORTED: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The newest version: what VERSION reports as `cniVersion`.
pub const CURRENT: &str = "1.1.0";

/// Parses `major[.minor[.patch]]` into a comparable triple, as libcni's `version.ParseVersion`.
pub fn parse(v: &str) -> Option<(u64, u64, u64)> {
    let parts: Vec<&str> = v.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    let mut out = [0u64; 3];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        out[i] = p.parse().ok()?;
    }
    Some((out[0], out[1], out[2]))
}

/// `a >= b` for two version strings; an unparsable version compares as lower.
pub fn at_least(a: &str, b: &str) -> bool {
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => a >= b,
        _ => false,
    }
}

/// Result shapes differ by version family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFamily {
    /// 0.1.0 / 0.2.0: `ip4` / `ip6` objects.
    V02,
    /// 0.3.0 / 0.3.1 / 0.4.0: `ips` with `version`.
    V04,
    /// 1.0.0 / 1.1.0.
    V1,
}

pub fn family(v: &str) -> ResultFamily {
    if at_least(v, "1.0.0") {
        ResultFamily::V1
    } else if at_least(v, "0.3.0") {
        ResultFamily::V04
    } else {
        ResultFamily::V02
    }
}

/// ADD and DEL need the config version to be exactly one we speak.
pub fn check_supported(config_version: &str) -> Result<(), CniError> {
    check_supported_in(SUPPORTED, config_version)
}

/// [`check_supported`] for a plugin that speaks only `supported` (e.g. `firewall`: 0.4.0 on).
pub fn check_supported_in(supported: &[&str], config_version: &str) -> Result<(), CniError> {
    if supported.contains(&config_version) {
        return Ok(());
    }
    let list: Vec<String> = supported.iter().map(|v| format!("{v:?}")).collect();
    Err(
        CniError::new(Code::IncompatibleVersion, "incompatible CNI versions").with_details(
            format!(
                "config is {config_version:?}, plugin supports [{}]",
                list.join(" ")
            ),
        ),
    )
}

/// CHECK needs 0.4.0, GC and STATUS need 1.1.0 (the skel's feature gates).
pub fn check_verb_allowed(config_version: &str, verb: &str, min: &str) -> Result<(), CniError> {
    if parse(config_version).is_none() {
        return check_supported(config_version);
    }
    if !at_least(config_version, min) {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            format!("config version does not allow {verb}"),
        ));
    }
    if !at_least(CURRENT, config_version) {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            format!("plugin version does not allow {verb}"),
        ));
    }
    Ok(())
}

/// The VERSION reply, with Go's trailing newline.
pub fn version_reply() -> String {
    version_reply_for(SUPPORTED)
}

/// The VERSION reply of a plugin that speaks only `supported`.
pub fn version_reply_for(supported: &[&str]) -> String {
    let list: Vec<String> = supported.iter().map(|v| format!("{v:?}")).collect();
    format!(
        "{{\"cniVersion\":\"{CURRENT}\",\"supportedVersions\":[{}]}}\n",
        list.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_compares() {
        assert_eq!(parse("1.1.0"), Some((1, 1, 0)));
        assert_eq!(parse("0.4"), Some((0, 4, 0)));
        assert_eq!(parse("1"), Some((1, 0, 0)));
        assert_eq!(parse("1.x"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("1.2.3.4"), None);
        assert!(at_least("0.10.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
    }

    #[test]
    fn families() {
        assert_eq!(family("0.1.0"), ResultFamily::V02);
        assert_eq!(family("0.2.0"), ResultFamily::V02);
        assert_eq!(family("0.3.1"), ResultFamily::V04);
        assert_eq!(family("0.4.0"), ResultFamily::V04);
        assert_eq!(family("1.1.0"), ResultFamily::V1);
    }

    #[test]
    fn incompatible_message_matches_reference() {
        let e = check_supported("9.9.9").unwrap_err();
        assert_eq!(e.code, 1);
        assert_eq!(e.msg, "incompatible CNI versions");
        assert!(e
            .details
            .starts_with("config is \"9.9.9\", plugin supports [\"0.1.0\" \"0.2.0\""));
    }

    #[test]
    fn gates() {
        assert!(check_verb_allowed("0.3.1", "CHECK", "0.4.0").is_err());
        assert!(check_verb_allowed("0.4.0", "CHECK", "0.4.0").is_ok());
        let e = check_verb_allowed("1.0.0", "GC", "1.1.0").unwrap_err();
        assert_eq!(e.msg, "config version does not allow GC");
        let e = check_verb_allowed("2.0.0", "GC", "1.1.0").unwrap_err();
        assert_eq!(e.msg, "plugin version does not allow GC");
    }

    #[test]
    fn version_reply_lists_all() {
        let v: serde_json::Value = serde_json::from_str(&version_reply()).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 7);
    }
}
