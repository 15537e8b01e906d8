//! `conditionsV4` / `conditionsV6` of portmap: extra matches a packet must
//! pass before it is port-mapped, and the [`Lane`] they make in the
//! published-ports table. The reference pastes them verbatim into an nft
//! rule (nftables backend) or an iptables rule (iptables backend); we
//! translate the subset that maps onto nftables expressions and refuse the
//! rest naming the condition:
//!
//! - nft style: `ip saddr|daddr [==|!=] CIDR` (`ip6` for v6),
//!   `iifname|oifname [==|!=] NAME` (`NAME*` matches a prefix);
//! - iptables style: `[!] -s|--source|-d|--destination CIDR`,
//!   `[!] -i|--in-interface|-o|--out-interface NAME` (`NAME+` a prefix),
//!   the `!` also accepted after the option.
//!
//! The list's strings are joined with spaces and split into words, so both
//! `["ip saddr 10.0.0.0/8"]` and `["-s", "10.0.0.0/8"]` work. The lane's
//! canonical text (nft style) parses back to the same lane: the table keeps
//! it in the lane chain's comment, so a lane whose rules were flushed can be
//! rebuilt by any caller ([`Lane::from_comment`]).

use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::expr::{match_addr_prefix, match_ifname, CmpOp, Expr};
use crate::hostport::sfx;
use crate::udata::MAX_COMMENT;

/// `conditionsV4`/`conditionsV6` of a network: packets must match `exprs`
/// to be mapped by this lane's maps. A lane is its own chain and pair of
/// maps (named by a hash of `text`), jumped to from `dnat` before the
/// default maps; created on first use, shared by every attachment with the
/// same conditions, never per mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    pub v6: bool,
    /// The matches (without the `meta nfproto` dependency).
    pub exprs: Vec<Expr>,
    /// Canonical text of the conditions (names the lane; the comment of its
    /// chain and of its jump rule).
    pub text: String,
}

impl Lane {
    /// `-<12 hex digits>`: the suffix of the lane's maps and chain.
    pub(crate) fn suffix(&self) -> String {
        use sha2::{Digest, Sha256};
        let h = Sha256::digest(format!("{} {}", self.v6, self.text).as_bytes());
        let hex: String = h[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("-{hex}")
    }

    /// `lane4-<hex>` / `lane6-<hex>`.
    pub(crate) fn chain(&self) -> String {
        format!("lane{}{}", sfx(self.v6), self.suffix())
    }

    /// `conditionsV4: <text>`: the comment of the lane's chain and jump rule.
    pub(crate) fn comment(&self) -> String {
        format!("{}{}", comment_prefix(self.v6), self.text)
    }

    /// The lane whose chain `chain` carries `comment`; `None` when the
    /// comment is not a lane's or names another chain (edited by hand).
    pub(crate) fn from_comment(chain: &str, comment: &str) -> Option<Lane> {
        let v6 = [false, true]
            .into_iter()
            .find(|&v6| comment.starts_with(&comment_prefix(v6)))?;
        let text = &comment[comment_prefix(v6).len()..];
        let lane = parse(&[text.to_string()], v6).ok()??;
        (lane.chain() == chain).then_some(lane)
    }
}

fn comment_prefix(v6: bool) -> String {
    format!("conditionsV{}: ", sfx(v6))
}

/// The lane of `conds` for one family; `None` when there are no conditions.
/// Conditions it cannot translate are [`Error::Invalid`] naming them.
pub fn parse(conds: &[String], v6: bool) -> Result<Option<Lane>> {
    let key = format!("conditionsV{}", sfx(v6));
    let words: Vec<&str> = conds.iter().flat_map(|c| c.split_whitespace()).collect();
    if words.is_empty() {
        return Ok(None);
    }
    let mut exprs = Vec::new();
    let mut canon = Vec::new();
    let mut i = 0;
    let bad = |from: usize, to: usize, why: &str| {
        Error::Invalid(format!(
            "{key}: condition {:?} {why}; supported: `ip[6] saddr|daddr [!=] CIDR`, `iifname|oifname [!=] NAME`, `[!] -s|-d CIDR`, `[!] -i|-o NAME`",
            words[from..to.min(words.len())].join(" ")
        ))
    };
    while i < words.len() {
        let start = i;
        let mut neg = false;
        if words[i] == "!" {
            neg = true;
            i += 1;
        }
        let Some(&w) = words.get(i) else {
            return Err(bad(start, i, "is incomplete"));
        };
        i += 1;
        // (is address, is destination / output)
        let what = match w {
            "ip" | "ip6" => {
                if (w == "ip6") != v6 {
                    return Err(bad(start, i + 2, "is for the other IP family"));
                }
                let dir = words.get(i).copied();
                i += 1;
                match dir {
                    Some("saddr") => (true, false),
                    Some("daddr") => (true, true),
                    _ => return Err(bad(start, i, "is not translatable to nftables")),
                }
            }
            "iifname" => (false, false),
            "oifname" => (false, true),
            "-s" | "--source" => (true, false),
            "-d" | "--destination" => (true, true),
            "-i" | "--in-interface" => (false, false),
            "-o" | "--out-interface" => (false, true),
            _ => return Err(bad(start, i, "is not translatable to nftables")),
        };
        match words.get(i).copied() {
            Some("!") | Some("!=") => {
                neg = !neg;
                i += 1;
            }
            Some("==") => i += 1,
            _ => {}
        }
        let Some(&value) = words.get(i) else {
            return Err(bad(start, i, "has no value"));
        };
        i += 1;
        let mut e = if what.0 {
            let (ip, prefix) =
                parse_cidr(value).ok_or_else(|| bad(start, i, "has no valid address"))?;
            if ip.is_ipv6() != v6 {
                return Err(bad(start, i, "is for the other IP family"));
            }
            canon.push(format!(
                "ip{} {} {}{}/{prefix}",
                if v6 { "6" } else { "" },
                if what.1 { "daddr" } else { "saddr" },
                if neg { "!= " } else { "" },
                ip
            ));
            match_addr_prefix(what.1, ip, prefix)
        } else {
            let name = value.trim_matches('"');
            let (name, wildcard) = match name.strip_suffix(['*', '+']) {
                Some(p) => (p, true),
                None => (name, false),
            };
            if name.is_empty() || name.len() > 15 || name.contains('/') {
                return Err(bad(start, i, "has no valid interface name"));
            }
            canon.push(format!(
                "{} {}\"{name}{}\"",
                if what.1 { "oifname" } else { "iifname" },
                if neg { "!= " } else { "" },
                if wildcard { "*" } else { "" }
            ));
            let mut e: Vec<Expr> = match_ifname(what.1, name).into();
            if wildcard {
                if let Some(Expr::Cmp { data, .. }) = e.last_mut() {
                    data.pop(); // no NUL: a prefix match
                }
            }
            e
        };
        if neg {
            if let Some(Expr::Cmp { op, .. }) = e.last_mut() {
                *op = CmpOp::Neq;
            }
        }
        exprs.append(&mut e);
    }
    let lane = Lane {
        v6,
        exprs,
        text: canon.join(" "),
    };
    // The comment is the lane's only copy of its conditions once its rules are flushed.
    let max = MAX_COMMENT - comment_prefix(v6).len();
    if lane.text.len() > max {
        return Err(Error::Invalid(format!(
            "{key}: the conditions are {} characters long once written as `{}`; at most {max} fit the nftables comment that keeps them; use fewer conditions",
            lane.text.len(),
            lane.text
        )));
    }
    Ok(Some(lane))
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, p)) => (ip.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
        None => {
            let ip = s.parse::<IpAddr>().ok()?;
            (ip, if ip.is_ipv6() { 128 } else { 32 })
        }
    };
    let max = if ip.is_ipv6() { 128 } else { 32 };
    (prefix <= max).then_some((ip, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn both_styles_translate_to_the_same_lane() {
        let a = parse(&s(&["ip saddr != 10.0.0.0/8", "iifname eth0"]), false)
            .unwrap()
            .unwrap();
        let b = parse(&s(&["!", "-s", "10.0.0.0/8", "-i", "eth0"]), false)
            .unwrap()
            .unwrap();
        assert_eq!(a.text, "ip saddr != 10.0.0.0/8 iifname \"eth0\"");
        assert_eq!((a.text.as_str(), &a.exprs), (b.text.as_str(), &b.exprs));
        let c = parse(
            &s(&["-s", "!", "10.0.0.0/8", "--in-interface", "eth0"]),
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.exprs, a.exprs);
        let w = parse(&s(&["-o", "br+"]), false).unwrap().unwrap();
        assert_eq!(w.text, "oifname \"br*\"");
        assert!(parse(&[], false).unwrap().is_none());
        let v6 = parse(&s(&["ip6 daddr fd00::/64"]), true).unwrap().unwrap();
        assert!(v6.v6);
    }

    #[test]
    fn the_comment_gives_the_lane_back() {
        for (c, v6) in [
            (&["!", "-s", "10.0.0.0/8", "-i", "eth0"][..], false),
            (&["-o", "br+", "-d", "10.1.2.3"][..], false),
            (&["ip6 saddr != fd00::/8", "oifname != \"x*\""][..], true),
        ] {
            let lane = parse(&s(c), v6).unwrap().unwrap();
            let back = Lane::from_comment(&lane.chain(), &lane.comment());
            assert_eq!(back.as_ref(), Some(&lane), "{c:?}");
        }
        let lane = parse(&s(&["-s", "10.0.0.0/8"]), false).unwrap().unwrap();
        // Another lane's chain, a comment edited by hand, another family: not this lane.
        let other = parse(&s(&["-s", "10.0.0.0/9"]), false).unwrap().unwrap();
        assert_eq!(Lane::from_comment(&other.chain(), &lane.comment()), None);
        assert_eq!(
            Lane::from_comment(&lane.chain(), "ip saddr 10.0.0.0/8"),
            None
        );
        assert_eq!(
            Lane::from_comment(&lane.chain(), "conditionsV6: ip saddr 10.0.0.0/8"),
            None
        );
    }

    #[test]
    fn refuses_what_it_cannot_translate_or_keep() {
        for (c, v6) in [
            (&["-m", "comment"][..], false),
            (&["ip saddr 10.0.0.0/8 counter"][..], false),
            (&["tcp dport 80"][..], false),
            (&["ip6 saddr fd00::/8"][..], false),
            (&["-s", "fd00::/8"][..], false),
            (&["-s"][..], false),
            (&["-s", "10.0.0.0/33"][..], false),
        ] {
            let e = parse(&s(c), v6).unwrap_err().to_string();
            assert!(e.contains("condition"), "{c:?}: {e}");
        }
        let many: Vec<String> = (0..12).map(|i| format!("-s 10.0.{i}.0/24")).collect();
        let e = parse(&many, false).unwrap_err().to_string();
        assert!(e.contains("at most 239"), "{e}");
    }
}
