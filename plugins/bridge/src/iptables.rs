//! The `iptables` masquerade backend (`"ipMasqBackend": "iptables"`), for hosts whose NAT must
//! live in iptables (e.g. iptables-legacy). It reproduces the reference's per-container chains
//! (`CNI-<24 hex of sha512(name+id)>`), so rules made by the Go plugin are cleaned up by ours
//! and vice versa, and it can tear down without knowing the IPs (DEL with an empty netns).

use std::net::IpAddr;
use std::process::Command;

use ipnetwork::IpNetwork;
use sha2::{Digest, Sha512};

use cni_core::CniError;

fn chain_name(network: &str, id: &str) -> String {
    let h = Sha512::digest(format!("{network}{id}").as_bytes());
    let hex: String = h.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("CNI-{hex}")
}

fn comment(network: &str, id: &str) -> String {
    format!("name: {network:?} id: {id:?}")
}

fn tool(v6: bool) -> &'static str {
    if v6 {
        "ip6tables"
    } else {
        "iptables"
    }
}

fn ipt(v6: bool, args: &[&str]) -> Result<String, String> {
    let out = Command::new(tool(v6))
        .arg("--wait")
        .args(["-t", "nat"])
        .args(args)
        .output()
        .map_err(|e| {
            format!(
                "cannot run {}: {e}; install iptables or use \"ipMasqBackend\": \"nftables\"",
                tool(v6)
            )
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} -t nat {}: {}",
            tool(v6),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Appends a rule unless an identical one exists (`-C` then `-A`).
fn append_unique(v6: bool, chain: &str, rule: &[&str]) -> Result<(), String> {
    let mut check = vec!["-C", chain];
    check.extend_from_slice(rule);
    if ipt(v6, &check).is_ok() {
        return Ok(());
    }
    let mut add = vec!["-A", chain];
    add.extend_from_slice(rule);
    ipt(v6, &add).map(|_| ())
}

pub fn setup(network: &str, id: &str, ips: &[IpNetwork]) -> Result<(), CniError> {
    let chain = chain_name(network, id);
    let c = comment(network, id);
    for ipn in ips {
        let v6 = ipn.is_ipv6();
        let run = || -> Result<(), String> {
            if let Err(e) = ipt(v6, &["-N", &chain]) {
                if !e.contains("exists") {
                    return Err(e);
                }
            }
            let subnet = IpNetwork::new(ipn.network(), ipn.prefix())
                .map(|n| n.to_string())
                .unwrap_or_default();
            append_unique(
                v6,
                &chain,
                &[
                    "-d",
                    &subnet,
                    "-j",
                    "ACCEPT",
                    "-m",
                    "comment",
                    "--comment",
                    &c,
                ],
            )?;
            let mcast = if v6 { "ff00::/8" } else { "224.0.0.0/4" };
            append_unique(
                v6,
                &chain,
                &[
                    "!",
                    "-d",
                    mcast,
                    "-j",
                    "MASQUERADE",
                    "-m",
                    "comment",
                    "--comment",
                    &c,
                ],
            )?;
            let src = ipn.ip().to_string();
            append_unique(
                v6,
                "POSTROUTING",
                &["-s", &src, "-j", &chain, "-m", "comment", "--comment", &c],
            )
        };
        run().map_err(|e| {
            CniError::internal(format!("failed to set up masquerade for {ipn}: {e}"))
        })?;
    }
    Ok(())
}

/// Removes the POSTROUTING jumps to this attachment's chain (found by listing, so the IPs are
/// not needed), then the chain. Missing rules and chains are success.
pub fn teardown(network: &str, id: &str, _ips: Option<&[IpAddr]>) -> Result<(), CniError> {
    let chain = chain_name(network, id);
    let mut errs = Vec::new();
    for v6 in [false, true] {
        let Ok(rules) = ipt(v6, &["-S", "POSTROUTING"]) else {
            continue; // no such table/tool for this family: nothing of ours there
        };
        for line in rules.lines() {
            let Some(rest) = line.strip_prefix("-A POSTROUTING ") else {
                continue;
            };
            if !rest.split_whitespace().any(|w| w == chain) {
                continue;
            }
            let args = shell_words(rest);
            let mut del = vec!["-D".to_string(), "POSTROUTING".to_string()];
            del.extend(args);
            let refs: Vec<&str> = del.iter().map(String::as_str).collect();
            if let Err(e) = ipt(v6, &refs) {
                errs.push(e);
            }
        }
        if ipt(v6, &["-F", &chain]).is_ok() {
            if let Err(e) = ipt(v6, &["-X", &chain]) {
                errs.push(e);
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(CniError::internal(format!(
            "failed to remove masquerade rules: {}",
            errs.join("; ")
        )))
    }
}

/// Splits an `iptables -S` rule into arguments, honouring its double quotes and `\"` escapes.
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_matches_reference() {
        // Observed with the Go plugin: network "rsnet", container "c1".
        assert_eq!(chain_name("rsnet", "c1"), "CNI-35385d7c7123eaedcb0f658f");
        assert_eq!(comment("rsnet", "c1"), "name: \"rsnet\" id: \"c1\"");
    }

    #[test]
    fn words() {
        assert_eq!(
            shell_words(r#"-s 10.1.0.2/32 -m comment --comment "name: \"n\" id: \"c\"" -j CNI-x"#),
            vec![
                "-s",
                "10.1.0.2/32",
                "-m",
                "comment",
                "--comment",
                "name: \"n\" id: \"c\"",
                "-j",
                "CNI-x"
            ]
        );
    }
}
