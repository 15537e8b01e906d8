//! Sysctl keys: resolving a configured name to a path under `/proc/sys/net`, refusing anything
//! else, and the reference's allow-list file.

use std::io::ErrorKind;

use cni_core::CniError;

/// The reference's allow-list. Deliberately a constant, not configurable: the file is the
/// node administrator's restriction on what network configs may set, so a config (or an
/// environment a runtime passes through) must not be able to point it elsewhere. Tests write
/// the real path inside a private mount namespace.
pub const ALLOWLIST: &str = "/etc/cni/tuning/allowlist.conf";

/// One configured sysctl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlKey {
    /// As written in the config (what the allow-list is matched against, and what errors name).
    pub raw: String,
    /// Slash-separated, relative to `/proc/sys`, `IFNAME` substituted; always `net/...`.
    pub path: String,
}

impl SysctlKey {
    /// Resolves `raw` like the reference: `.` or `/` separators (the first one found decides;
    /// with `.`, any `/` in it stands for a literal dot, as in `net.ipv4.conf.eth0/100.rp_filter`),
    /// then the first `IFNAME` becomes the container interface. Only keys inside `/proc/sys/net`
    /// are accepted: no empty, `.` or `..` component can walk out of it.
    pub fn parse(raw: &str, ifname: &str) -> Result<SysctlKey, CniError> {
        let path = to_slashes(raw).replacen("IFNAME", ifname, 1);
        let comps: Vec<&str> = path.split('/').collect();
        let ok = comps.len() >= 2
            && comps[0] == "net"
            && !path.contains('\0')
            && comps
                .iter()
                .all(|c| !c.is_empty() && *c != "." && *c != "..");
        if !ok {
            return Err(CniError::config(format!(
                "invalid net sysctl key: {raw:?}: only sysctls of the network namespace \
                 (net.*, e.g. \"net.ipv4.conf.IFNAME.arp_notify\") can be set"
            )));
        }
        Ok(SysctlKey {
            raw: raw.to_string(),
            path,
        })
    }

    /// `/proc/sys/<path>`, for messages.
    pub fn file(&self) -> String {
        format!("/proc/sys/{}", self.path)
    }
}

/// The separator rule of the reference's `sysctl` package (`toNormalName`).
fn to_slashes(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'.' => name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// The allow-list patterns, or None when the file does not exist (then every net sysctl is
/// allowed, as the reference).
pub fn read_allowlist(path: &str) -> Result<Option<Vec<(String, regex_lite::Regex)>>, CniError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CniError::internal(format!(
                "failed to read the sysctl allow-list {path}: {e}"
            )))
        }
    };
    text.lines()
        .enumerate()
        .map(|(i, l)| (i, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            regex_lite::Regex::new(l)
                .map(|re| (l.to_string(), re))
                .map_err(|e| {
                    CniError::config(format!(
                        "invalid regular expression {l:?} on line {} of {path}: {e}; fix the allow-list",
                        i + 1
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Refuses a sysctl no allow-list pattern matches (unanchored, as Go's `regexp.MatchString`),
/// with the reference's message.
pub fn check_allowed(keys: &[SysctlKey], path: &str) -> Result<(), CniError> {
    let Some(list) = read_allowlist(path)? else {
        return Ok(());
    };
    for k in keys {
        if !list.iter().any(|(_, re)| re.is_match(&k.raw)) {
            let pats: Vec<&str> = list.iter().map(|(p, _)| p.as_str()).collect();
            return Err(CniError::config(format!(
                "Sysctl {} is not allowed. Only the following sysctls are allowed: [{}]",
                k.raw,
                pats.join(" ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_separators_and_ifname() {
        let k = |s: &str| SysctlKey::parse(s, "eth0.100").map(|k| k.path);
        assert_eq!(
            k("net.ipv4.conf.IFNAME.arp_notify").unwrap(),
            "net/ipv4/conf/eth0.100/arp_notify"
        );
        assert_eq!(
            k("net/ipv4/conf/IFNAME/arp_notify").unwrap(),
            "net/ipv4/conf/eth0.100/arp_notify"
        );
        assert_eq!(
            k("net.ipv4.conf.eth1/5.rp_filter").unwrap(),
            "net/ipv4/conf/eth1.5/rp_filter"
        );
        assert_eq!(k("net.core.somaxconn").unwrap(), "net/core/somaxconn");
    }

    #[test]
    fn refuses_outside_net() {
        for bad in [
            "kernel.pid_max",
            "kernel/pid_max",
            "net",
            "net.",
            "net..ipv4",
            "net/../kernel/pid_max",
            "net.ipv4.conf/../../../kernel.x",
            "/net/ipv4/ip_forward",
            "vm.swappiness",
            "",
            "netx.a",
        ] {
            let e = SysctlKey::parse(bad, "eth0").unwrap_err();
            assert_eq!(e.code, 7, "{bad}");
            assert!(e.msg.starts_with("invalid net sysctl key: "), "{}", e.msg);
        }
        // An interface name cannot smuggle a `..` in: it is one component.
        assert!(SysctlKey::parse("net.ipv4.conf.IFNAME.x", "..").is_err());
    }

    #[test]
    fn allowlist_semantics() {
        let dir = std::env::temp_dir().join(format!("tuning-allow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("allowlist.conf");
        let key = |s: &str| SysctlKey::parse(s, "eth0").unwrap();
        let fs = f.to_str().unwrap();
        assert!(check_allowed(&[key("net.core.somaxconn")], fs).is_ok());
        std::fs::write(
            &f,
            "^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]*$\n\n  ^net\\.core\\.somaxconn$ \n",
        )
        .unwrap();
        assert!(check_allowed(&[key("net.core.somaxconn")], fs).is_ok());
        assert!(check_allowed(&[key("net.ipv4.conf.IFNAME.arp_notify")], fs).is_ok());
        let e = check_allowed(&[key("net.ipv4.ip_forward")], fs).unwrap_err();
        assert_eq!(e.code, 7);
        assert_eq!(
            e.msg,
            "Sysctl net.ipv4.ip_forward is not allowed. Only the following sysctls are allowed: \
             [^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]*$ ^net\\.core\\.somaxconn$]"
        );
        std::fs::write(&f, "net.(\n").unwrap();
        let e = check_allowed(&[key("net.core.somaxconn")], fs).unwrap_err();
        assert!(e.msg.contains("line 1"), "{}", e.msg);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
