//! libcni's `pkg/version` comparisons (`ParseVersion`, `GreaterThan`, `GreaterThanOrEqualTo`).

/// The spec version libcni 1.3 implements (`version.Current()`).
pub const CURRENT: &str = "1.1.0";

/// `ParseVersion`: "" is 0.1.0, missing minor/micro parts are 0, at most three parts.
pub fn parse(v: &str) -> Result<(u64, u64, u64), String> {
    if v.is_empty() {
        return Ok((0, 1, 0));
    }
    let parts: Vec<&str> = v.split('.').collect();
    if parts.len() >= 4 {
        return Err(format!("invalid version {v:?}: too many parts"));
    }
    let num = |i: usize, what: &str| -> Result<u64, String> {
        match parts.get(i) {
            None => Ok(0),
            Some(p) => p
                .parse()
                .map_err(|e| format!("failed to convert {what} version part {p:?}: {e}")),
        }
    };
    Ok((num(0, "major")?, num(1, "minor")?, num(2, "micro")?))
}

pub fn greater_than(a: &str, b: &str) -> Result<bool, String> {
    Ok(parse(a)? > parse(b)?)
}

pub fn at_least(a: &str, b: &str) -> Result<bool, String> {
    Ok(parse(a)? >= parse(b)?)
}
