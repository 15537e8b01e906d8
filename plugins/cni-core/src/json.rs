//! JSON decoding with the leniency of Go's `encoding/json`, which every reference plugin and
//! runtime uses: object keys match field names case-insensitively, the last duplicate wins,
//! unknown keys are ignored, and a value of the wrong type is an error.
//!
//! We get there in two steps: parse into a `Value` (serde_json keeps the last duplicate), then
//! fold every object key to lower case (later keys overwrite earlier case variants, as Go's
//! field-by-field assignment does). Typed structs then name their fields in lower case
//! (`#[serde(rename(deserialize = "rangestart"))]`) and leave out `deny_unknown_fields`.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{CniError, Code};

/// Parses raw stdin bytes; syntax errors are the skel's code 6.
pub fn parse(bytes: &[u8]) -> Result<Value, CniError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(CniError::new(
            Code::Decoding,
            "error unmarshall network config: unexpected end of JSON input",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        CniError::new(
            Code::Decoding,
            format!("error unmarshall network config: {e}"),
        )
    })
}

/// Returns a copy of `v` with every object key folded to lower case, recursively.
pub fn fold_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::with_capacity(m.len());
            for (k, val) in m {
                let folded = fold_keys(val);
                let key = k.to_lowercase();
                // Remove first so the last case variant also takes the last position.
                out.shift_remove(&key);
                out.insert(key, folded);
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(fold_keys).collect()),
        other => other.clone(),
    }
}

/// Decodes an already-folded value into `T`; a type error names the offending key path and
/// the object being loaded (`what`, e.g. "netconf").
pub fn decode<T: DeserializeOwned>(folded: &Value, what: &str) -> Result<T, CniError> {
    serde_path_to_error::deserialize(folded).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            CniError::config(format!("failed to load {what}: {inner}"))
        } else {
            CniError::config(format!("failed to load {what}: key {path:?}: {inner}"))
        }
    })
}

/// Case-insensitive lookup of `key` in a folded object.
pub fn get<'a>(folded: &'a Value, key: &str) -> Option<&'a Value> {
    folded.as_object()?.get(&key.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    struct Conf {
        #[serde(rename = "rangestart")]
        range_start: String,
        subnet: String,
        flag: bool,
        nested: Option<Nested>,
    }

    #[derive(Deserialize, Debug, Default)]
    struct Nested {
        #[serde(rename = "type")]
        kind: String,
    }

    #[test]
    fn keys_fold_and_last_duplicate_wins() {
        let v = parse(
            br#"{"SUBNET":"a","RangeStart":"x","subnet":"b","unknown":1,"Nested":{"TYPE":"t"}}"#,
        )
        .unwrap();
        let c: Conf = decode(&fold_keys(&v), "netconf").unwrap();
        assert_eq!(c.subnet, "b");
        assert_eq!(c.range_start, "x");
        assert_eq!(c.nested.unwrap().kind, "t");

        let v = parse(br#"{"subnet":"a","SUBNET":"b"}"#).unwrap();
        let c: Conf = decode(&fold_keys(&v), "netconf").unwrap();
        assert_eq!(c.subnet, "b");
    }

    #[test]
    fn wrong_type_is_a_named_error() {
        let v = parse(br#"{"flag":"true"}"#).unwrap();
        let e = decode::<Conf>(&fold_keys(&v), "netconf").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("\"flag\""), "{}", e.msg);
        assert!(e.msg.contains("expected a boolean"), "{}", e.msg);
    }

    #[test]
    fn syntax_errors_are_code_6() {
        assert_eq!(parse(b"").unwrap_err().code, 6);
        assert_eq!(
            parse(b"  ").unwrap_err().msg,
            "error unmarshall network config: unexpected end of JSON input"
        );
        assert_eq!(parse(b"{nope").unwrap_err().code, 6);
    }
}
