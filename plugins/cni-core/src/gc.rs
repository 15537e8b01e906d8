//! GC input (spec 1.1.0): `cni.dev/valid-attachments`, the attachments a plugin must keep;
//! everything else of the network may go. Every plugin of the suite reads it here, the same way.
//!
//! libcni omits the key when nothing is valid any more (it only injects a non-empty list), so a
//! missing key or `null` means "keep nothing". The spec's first name `cni.dev/attachments` is
//! accepted too; `cni.dev/valid-attachments` wins when both are there.

use serde_json::Value;

use crate::error::CniError;

/// One attachment to keep; `ifname: None` keeps every interface of the container (an entry
/// without `ifname`, or a legacy store entry that recorded only the container ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: Option<String>,
}

/// The parsed list, with the questions GC asks of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidAttachments(pub Vec<Attachment>);

impl ValidAttachments {
    /// Whether the attachment (container ID, ifname) is still valid.
    pub fn keeps(&self, container_id: &str, ifname: &str) -> bool {
        let id = container_id.trim();
        self.0
            .iter()
            .any(|a| a.container_id == id && a.ifname.as_deref().is_none_or(|f| f == ifname))
    }

    /// Whether any attachment of `container_id` is valid (for state that recorded no ifname).
    pub fn keeps_container(&self, container_id: &str) -> bool {
        let id = container_id.trim();
        self.0.iter().any(|a| a.container_id == id)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The end of a GC that went on after errors (the spec says it should): `Ok` without errors,
/// else one internal error naming them all.
pub fn outcome(errs: Vec<String>) -> Result<(), CniError> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(CniError::internal(errs.join("; ")))
    }
}

/// Reads the list from the (key-folded) request config.
pub fn valid_attachments(conf: &Value) -> Result<ValidAttachments, CniError> {
    let found = ["cni.dev/valid-attachments", "cni.dev/attachments"]
        .iter()
        .find_map(|k| crate::json::get(conf, k).map(|v| (*k, v)));
    let items: &[Value] = match found {
        None | Some((_, Value::Null)) => &[],
        Some((_, Value::Array(a))) => a,
        Some((key, _)) => {
            return Err(CniError::config(format!(
                "{key} must be a list of {{\"containerID\": ..., \"ifname\": ...}} objects"
            )))
        }
    };
    let key = found.map(|(k, _)| k).unwrap_or("cni.dev/valid-attachments");
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let bad = |what: &str| CniError::config(format!("{key}[{i}]: {what}"));
            v.as_object().ok_or_else(|| bad("must be an object"))?;
            let id = match crate::json::get(v, "containerID") {
                Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
                _ => return Err(bad("needs a non-empty string \"containerID\"")),
            };
            let ifname = match crate::json::get(v, "ifname") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(bad("\"ifname\" must be a string")),
            };
            Ok(Attachment {
                container_id: id,
                ifname,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(ValidAttachments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ValidAttachments, CniError> {
        let v: Value = serde_json::from_str(s).unwrap();
        valid_attachments(&crate::json::fold_keys(&v))
    }

    #[test]
    fn outcome_joins_errors() {
        assert!(outcome(Vec::new()).is_ok());
        let e = outcome(vec!["a failed".into(), "b failed".into()]).unwrap_err();
        assert_eq!(e.code, crate::error::Code::Internal as u32);
        assert_eq!(e.msg, "a failed; b failed");
    }

    #[test]
    fn list_forms() {
        let a = parse(
            r#"{"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"},{"ContainerID":"c2"}]}"#,
        )
        .unwrap();
        assert!(a.keeps("c1", "eth0"));
        assert!(!a.keeps("c1", "eth1"));
        assert!(a.keeps("c2", "anything"));
        assert!(a.keeps_container("c1"));
        assert!(!a.keeps("c3", "eth0"));
        let a = parse(r#"{"cni.dev/attachments":[{"containerID":"c3","ifname":"net1"}]}"#).unwrap();
        assert!(a.keeps("c3", "net1"));
        // valid-attachments wins when both are there.
        let a = parse(
            r#"{"cni.dev/attachments":[],"cni.dev/valid-attachments":[{"containerID":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(a.0.len(), 1);
    }

    /// libcni sends GC without the key when no attachment is valid any more.
    #[test]
    fn missing_or_null_or_empty_keeps_nothing() {
        for s in [
            r#"{}"#,
            r#"{"cni.dev/valid-attachments":null}"#,
            r#"{"cni.dev/valid-attachments":[]}"#,
        ] {
            let a = parse(s).unwrap();
            assert!(a.is_empty(), "{s}");
            assert!(!a.keeps("c1", "eth0"), "{s}");
        }
    }

    #[test]
    fn bad_lists_are_config_errors() {
        for s in [
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
