//! GC (spec 1.1.0), which the reference lacks: release every reservation whose
//! (containerID, ifname) is not in `cni.dev/valid-attachments` (libcni also sends the list as
//! `cni.dev/attachments`, the spec's first name; both are accepted). An empty list releases
//! everything. Only reservation files are considered (never `lock`, `last_reserved_ip.*` or the
//! index). A legacy id-only file is kept if any valid attachment has its container ID, so the
//! first GC after an upgrade does not wipe pre-upgrade reservations that DEL would still find.
//! GC is rare, so it scans the directory, and then rebuilds the index from that scan.

use std::collections::HashSet;

use cni_core::{CniError, Code, Request};
use serde_json::Value;

use crate::config::IpamConfig;
use crate::index::Index;
use crate::store::{go_trim, NetDir};

/// One valid attachment; `ifname: None` keeps every interface of the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: Vec<u8>,
    pub ifname: Option<Vec<u8>>,
}

/// The valid attachments from the (folded) request config.
pub fn valid_attachments(conf: &Value) -> Result<Vec<Attachment>, CniError> {
    let list = ["cni.dev/valid-attachments", "cni.dev/attachments"]
        .iter()
        .find_map(|k| conf.get(*k).map(|v| (*k, v)));
    let Some((key, list)) = list else {
        return Err(CniError::config(
            "GC needs \"cni.dev/valid-attachments\": the list of attachments to keep \
             ([] releases every reservation)",
        ));
    };
    let items: &[Value] = match list {
        Value::Null => &[],
        Value::Array(a) => a,
        _ => {
            return Err(CniError::config(format!(
                "{key} must be a list of {{\"containerID\": …, \"ifname\": …}} objects"
            )))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let bad = |what: &str| CniError::config(format!("{key}[{i}]: {what}"));
            let o = v.as_object().ok_or_else(|| bad("must be an object"))?;
            let id = match o.get("containerid") {
                Some(Value::String(s)) if !s.is_empty() => s,
                _ => return Err(bad("needs a non-empty string \"containerID\"")),
            };
            let ifname = match o.get("ifname") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(s.as_bytes().to_vec()),
                Some(_) => return Err(bad("\"ifname\" must be a string")),
            };
            Ok(Attachment {
                container_id: go_trim(id.as_bytes()).to_vec(),
                ifname,
            })
        })
        .collect()
}

/// Runs GC on the network directory of `conf`.
pub fn run(req: &Request, conf: &IpamConfig) -> Result<(), CniError> {
    let valid = valid_attachments(&req.conf)?;
    let ids: HashSet<&[u8]> = valid.iter().map(|a| a.container_id.as_slice()).collect();
    let dir = NetDir::open(&conf.data_dir, &conf.name)?;
    let all = dir.scan().map_err(|e| {
        CniError::new(
            Code::Io,
            format!("cannot read {}: {e}", dir.path().display()),
        )
    })?;
    let mut kept = Vec::with_capacity(all.len());
    let mut errors = Vec::new();
    for (ip, owner) in all {
        let keep = match owner.split() {
            (id, Some(ifname)) => valid
                .iter()
                .any(|a| a.container_id == id && a.ifname.as_deref().is_none_or(|v| v == ifname)),
            (id, None) => ids.contains(id),
        };
        if keep {
            kept.push((ip, owner));
        } else if let Err(e) = dir.release(ip) {
            errors.push(e.msg);
            kept.push((ip, owner));
        }
    }
    Index::detached(&conf.data_dir, &conf.name).reset(&dir, kept);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(Code::Io, errors.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<Attachment>, CniError> {
        let v: Value = serde_json::from_str(s).unwrap();
        valid_attachments(&cni_core::json::fold_keys(&v))
    }

    #[test]
    fn list_forms() {
        let a = parse(r#"{"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"},{"ContainerID":"c2"}]}"#)
            .unwrap();
        assert_eq!(
            a,
            vec![
                Attachment {
                    container_id: b"c1".to_vec(),
                    ifname: Some(b"eth0".to_vec())
                },
                Attachment {
                    container_id: b"c2".to_vec(),
                    ifname: None
                },
            ]
        );
        let a = parse(r#"{"cni.dev/attachments":[{"containerID":"c3","ifname":"net1"}]}"#).unwrap();
        assert_eq!(a[0].container_id, b"c3");
        assert!(parse(r#"{"cni.dev/valid-attachments":[]}"#)
            .unwrap()
            .is_empty());
        assert!(parse(r#"{"cni.dev/valid-attachments":null}"#)
            .unwrap()
            .is_empty());
        // valid-attachments wins when both are there.
        let a = parse(
            r#"{"cni.dev/attachments":[],"cni.dev/valid-attachments":[{"containerID":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn bad_lists_are_config_errors() {
        for s in [
            r#"{}"#,
            r#"{"cni.dev/valid-attachments":{}}"#,
            r#"{"cni.dev/valid-attachments":["c1"]}"#,
            r#"{"cni.dev/valid-attachments":[{"ifname":"eth0"}]}"#,
            r#"{"cni.dev/valid-attachments":[{"containerID":1}]}"#,
            r#"{"cni.dev/valid-attachments":[{"containerID":"c","ifname":5}]}"#,
        ] {
            assert_eq!(parse(s).unwrap_err().code, 7, "{s}");
        }
    }
}
