//! `prevResult` / a delegated plugin's output of any spec version, and the conversion between
//! versions (`cni_core::result`).
//!
//! The first byte picks the default version (the config's, used when the result names none);
//! the rest is the result JSON. Invariants: errors are config errors (7) or the parse failure
//! (999); an accepted result prints in every supported version, and printing is a fixed point
//! (print → parse → print gives the same bytes); a 1.x round trip keeps every field.
#![no_main]

use cni_core::{json, result, version, CniError, CniResult};
use cni_fuzz::check_cni_error;
use libfuzzer_sys::fuzz_target;

const DEFAULTS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "", "9.9.9", "0.3",
];

fn with_version(r: &CniResult, v: &str) -> CniResult {
    CniResult {
        cni_version: v.to_string(),
        ..r.clone()
    }
}

fn check_conversions(r: &CniResult) {
    for v in version::SUPPORTED {
        let printed = match result::print(r, v) {
            Ok(p) => p,
            Err(e) => {
                check_cni_error(&e, &[999], "result print");
                assert!(
                    version::family(v) == version::ResultFamily::V02 && r.ips.is_empty(),
                    "{v}: {e:?}"
                );
                continue;
            }
        };
        let back = result::parse_bytes(printed.as_bytes(), "0.0.0")
            .unwrap_or_else(|e| panic!("{v}: our own output does not parse: {e:?}\n{printed}"));
        assert_eq!(back.cni_version, *v);
        let again = result::print(&back, v).expect("printed once, prints again");
        assert_eq!(printed, again, "{v}: print is not a fixed point");
        if version::family(v) == version::ResultFamily::V1 {
            assert_eq!(back, with_version(r, v), "{v}: 1.x round trip lost data");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let default = DEFAULTS[sel as usize % DEFAULTS.len()];
    match result::parse_bytes(body, default) {
        Ok(r) => check_conversions(&r),
        Err(e) => check_cni_error(&e, &[7, 999], "result parse"),
    }
    // The same bytes as a prevResult inside a config (already folded, as the skel does).
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let folded = json::fold_keys(&v);
        let parsed: Result<CniResult, CniError> = result::parse(&folded, default);
        if let Err(e) = parsed {
            check_cni_error(&e, &[7], "prevResult parse");
        }
    }
});
