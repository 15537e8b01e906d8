//! Reading what `nft -j list ruleset` prints.

use serde_json::Value;

/// The elements of set `family table set` in an `nft -j` ruleset, each as (its key as nft
/// renders it, `"a . b"` for a concatenation; its comment, "" without one), sorted; empty when
/// there is no such set.
pub fn nft_set_members(
    ruleset: &Value,
    family: &str,
    table: &str,
    set: &str,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for o in ruleset["nftables"].as_array().into_iter().flatten() {
        let s = &o["set"];
        if s["family"] != family || s["table"] != table || s["name"] != set {
            continue;
        }
        for e in s["elem"].as_array().into_iter().flatten() {
            let val = &e["elem"]["val"];
            let key = match val.get("concat") {
                Some(parts) => parts
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
                    .join(" . "),
                None => val.as_str().unwrap().to_string(),
            };
            let comment = e["elem"]["comment"].as_str().unwrap_or("").to_string();
            out.push((key, comment));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_comments_of_one_set() {
        let rs = serde_json::json!({"nftables": [
            {"metainfo": {}},
            {"set": {"family": "bridge", "table": "t", "name": "s", "elem": [
                {"elem": {"val": {"concat": ["veth1", "02:00:00:00:00:01"]}, "comment": "n c eth0"}},
                {"elem": {"val": "a", "comment": "x"}},
            ]}},
            {"set": {"family": "inet", "table": "t", "name": "s", "elem": [
                {"elem": {"val": "other", "comment": "y"}},
            ]}},
        ]});
        assert_eq!(
            nft_set_members(&rs, "bridge", "t", "s"),
            [
                ("a".to_string(), "x".to_string()),
                (
                    "veth1 . 02:00:00:00:00:01".to_string(),
                    "n c eth0".to_string()
                ),
            ]
        );
        assert!(nft_set_members(&rs, "bridge", "t", "missing").is_empty());
    }
}
