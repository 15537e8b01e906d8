//! The CNI_* environment, validated with the reference skel's rules, codes and messages.

use crate::error::{CniError, Code};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }

    /// Whether the verb acts on one attachment (and so needs container ID and ifname).
    fn per_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

/// The validated environment of one plugin call.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// The raw CNI_COMMAND (may be an unknown verb; the skel reports that after reading stdin).
    pub command_raw: String,
    pub command: Option<Command>,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
    pub netns_override: bool,
}

/// Where the environment comes from: the process, or a map in tests.
pub trait Getenv {
    fn get(&self, key: &str) -> String;
}

pub struct ProcessEnv;

impl Getenv for ProcessEnv {
    fn get(&self, key: &str) -> String {
        std::env::var(key).unwrap_or_default()
    }
}

impl<F: Fn(&str) -> Option<String>> Getenv for F {
    fn get(&self, key: &str) -> String {
        self(key).unwrap_or_default()
    }
}

impl Env {
    /// Reads and validates, like the skel's `getCmdArgsFromEnv`: missing required variables are
    /// collected into one code-4 error; present ones are validated only when the verb needs them.
    pub fn load(g: &dyn Getenv) -> Result<Env, CniError> {
        let command_raw = g.get("CNI_COMMAND");
        let command = Command::parse(&command_raw);
        let per = command.map(Command::per_attachment).unwrap_or(false);
        let known = command.is_some() && command != Some(Command::Version);
        let env = Env {
            command_raw: command_raw.clone(),
            command,
            container_id: g.get("CNI_CONTAINERID"),
            netns: g.get("CNI_NETNS"),
            ifname: g.get("CNI_IFNAME"),
            args: g.get("CNI_ARGS"),
            path: g.get("CNI_PATH"),
            netns_override: matches!(
                g.get("CNI_NETNS_OVERRIDE").to_ascii_lowercase().as_str(),
                "1" | "true"
            ),
        };
        let mut missing = Vec::new();
        if command_raw.is_empty() {
            missing.push("CNI_COMMAND");
        }
        if per && env.container_id.is_empty() {
            missing.push("CNI_CONTAINERID");
        } else if per {
            validate_container_id(&env.container_id)?;
        }
        let netns_required = matches!(command, Some(Command::Add | Command::Check));
        if netns_required && env.netns.is_empty() {
            missing.push("CNI_NETNS");
        }
        if per && env.ifname.is_empty() {
            missing.push("CNI_IFNAME");
        } else if per {
            validate_ifname(&env.ifname)?;
        }
        if known && env.path.is_empty() {
            missing.push("CNI_PATH");
        }
        if !missing.is_empty() {
            return Err(CniError::new(
                Code::InvalidEnv,
                format!("required env variables [{}] missing", missing.join(",")),
            ));
        }
        Ok(env)
    }
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, the rule for container IDs and network names.
pub fn valid_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if id.is_empty() {
        return Err(CniError::new(Code::UnknownContainer, "missing containerID"));
    }
    if !valid_id(id) {
        return Err(
            CniError::new(Code::InvalidEnv, "invalid characters in containerID").with_details(id),
        );
    }
    Ok(())
}

/// Linux interface-name rules (IFNAMSIZ and `dev_valid_name`), with the skel's messages.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let err = |m: &str| CniError::new(Code::InvalidEnv, m);
    if name.is_empty() {
        return Err(err("interface name is empty"));
    }
    if name.len() > 15 {
        return Err(err("interface name is too long")
            .with_details("interface name should be less than 16 characters"));
    }
    if name == "." || name == ".." {
        return Err(err("interface name is . or .."));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(err(
            "interface name contains / or : or whitespace characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::load(&move |k: &str| m.get(k).cloned())
    }

    #[test]
    fn add_requires_everything() {
        let e = load(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        assert_eq!(e.code, 4);
        assert_eq!(
            e.msg,
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"
        );
    }

    #[test]
    fn del_netns_optional_gc_needs_only_path() {
        let env = load(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ])
        .unwrap();
        assert_eq!(env.command, Some(Command::Del));
        assert!(load(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")]).is_ok());
        assert_eq!(
            load(&[("CNI_COMMAND", "STATUS")]).unwrap_err().msg,
            "required env variables [CNI_PATH] missing"
        );
        assert!(load(&[("CNI_COMMAND", "VERSION")]).is_ok());
    }

    #[test]
    fn bad_container_id_and_ifname() {
        let base = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_NETNS", "/x"),
            ("CNI_PATH", "/x"),
        ];
        let mut v = base.to_vec();
        v.extend([("CNI_CONTAINERID", "-bad"), ("CNI_IFNAME", "eth0")]);
        let e = load(&v).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (4, "invalid characters in containerID")
        );
        assert_eq!(e.details, "-bad");
        for (name, msg) in [
            ("0123456789abcdef", "interface name is too long"),
            ("..", "interface name is . or .."),
            (
                "a/b",
                "interface name contains / or : or whitespace characters",
            ),
            (
                "a b",
                "interface name contains / or : or whitespace characters",
            ),
        ] {
            let mut v = base.to_vec();
            v.extend([("CNI_CONTAINERID", "ABC-def_1.2"), ("CNI_IFNAME", name)]);
            assert_eq!(load(&v).unwrap_err().msg, msg, "{name}");
        }
        let mut v = base.to_vec();
        v.extend([
            ("CNI_CONTAINERID", "ABC"),
            ("CNI_IFNAME", "0123456789abcde"),
        ]);
        assert!(load(&v).is_ok());
    }

    #[test]
    fn ids() {
        assert!(valid_id("a"));
        assert!(valid_id("Abc-1_2.3"));
        assert!(!valid_id("_a"));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(""));
    }
}
