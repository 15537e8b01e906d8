//! CNI_ARGS: `K=V;K=V`, matched against the keys a plugin knows, like libcni's `LoadArgs`.

use std::collections::BTreeMap;

use crate::error::CniError;

/// Parses CNI_ARGS. Keys are case-sensitive (Go struct field names). A key outside `known` is an
/// error unless `IgnoreUnknown` is `1`/`true` (any case), exactly as the reference.
pub fn parse(raw: &str, known: &[&str]) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    if raw.is_empty() {
        return Ok(out);
    }
    let mut unknown = Vec::new();
    let mut ignore_unknown = false;
    for pair in raw.split(';') {
        let kv: Vec<&str> = pair.split('=').collect();
        if kv.len() != 2 {
            return Err(CniError::internal(format!(
                "ARGS: invalid pair {pair:?}: expected KEY=VALUE"
            )));
        }
        let (k, v) = (kv[0], kv[1]);
        if k == "IgnoreUnknown" {
            ignore_unknown = match v.to_ascii_lowercase().as_str() {
                "1" | "true" => true,
                "0" | "false" => false,
                _ => {
                    return Err(CniError::internal(format!(
                        "ARGS: boolean unmarshal error: invalid input {v}"
                    )))
                }
            };
        } else if known.contains(&k) {
            out.insert(k.to_string(), v.to_string());
        } else {
            unknown.push(format!("{pair:?}"));
        }
    }
    if !unknown.is_empty() && !ignore_unknown {
        return Err(CniError::internal(format!(
            "ARGS: unknown args [{}]",
            unknown.join(" ")
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_cases() {
        let m = parse("IP=10.1.2.3", &["IP"]).unwrap();
        assert_eq!(m["IP"], "10.1.2.3");
        let e = parse("IP=10.1.2.3;K8S_POD_NAME=foo", &["IP"]).unwrap_err();
        assert_eq!(e.msg, "ARGS: unknown args [\"K8S_POD_NAME=foo\"]");
        let m = parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;IP=10.0.0.9",
            &["IP"],
        )
        .unwrap();
        assert_eq!(m.len(), 1);
        assert!(parse("ignoreunknown=1;ip=1.2.3.4", &["IP"]).is_err());
        assert!(parse("IgnoreUnknown=TRUE;x=y", &[]).is_ok());
        assert!(parse("novalue", &["IP"]).is_err());
        assert!(parse("a=b=c", &["a"]).is_err());
        assert!(parse("", &[]).unwrap().is_empty());
    }
}
