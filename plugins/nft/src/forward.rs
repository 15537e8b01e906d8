//! FORWARD acceptance and inter-bridge isolation for our bridges.
//!
//! What we found (kernel 6.x, iptables 1.8.9 nf_tables backend, dockerd):
//!
//! * dockerd sets the iptables FORWARD policy to DROP and loads
//!   `br_netfilter` (`bridge-nf-call-iptables=1`), so even traffic between
//!   two ports of the same Linux bridge traverses the IPv4/IPv6 FORWARD
//!   hook, with `iifname` = `oifname` = the bridge.
//! * In nf_tables every base chain on a hook is evaluated: `accept` only
//!   ends the current base chain, while `drop` anywhere is final. So an
//!   accept in our own `inet cni_rs` table cannot override the DROP policy
//!   of iptables-nft's `table ip filter` chain `FORWARD`; the accept must be
//!   inside that chain. dockerd's documented hook for this is the chain
//!   `DOCKER-USER`, jumped to first from `FORWARD` and never flushed by
//!   dockerd. We insert at its top (old dockerd appends `-j RETURN`):
//!   `-i <br> -j ACCEPT` (containers to each other and out) and
//!   `-o <br> -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`
//!   (replies), in `ip` and `ip6` `filter`, only if the chain exists.
//! * The rules must stay readable by iptables-nft or dockerd's own
//!   `iptables` calls fail ("chain ... is incompatible, use 'nft' tool"):
//!   a native `ct state` expression triggers exactly that. So the rules use
//!   iptables-nft's exact layout: `meta iifname` + `cmp` of name+NUL,
//!   xtables-compat `match conntrack rev 3`, `counter`, `immediate accept`;
//!   the userdata comment shows as `-m comment --comment ...`.
//!   `iptables -S DOCKER-USER` prints
//!   `-A DOCKER-USER -i br0 -m comment --comment "cni-rs bridge br0" -j ACCEPT`.
//! * The DOCKER-USER accept also lets traffic from our bridge to *other*
//!   bridges pass `ip filter`; isolation between our bridges is therefore
//!   a `drop` in our own table, which wins whatever ip filter says:
//!   `iifname @fwd_isolated oifname @fwd_isolated iifname . oifname !=
//!   @fwd_isolated_self drop` - one static rule, two set elements per
//!   bridge (`"br0"` and `"br0" . "br0"`), so adding a bridge never adds a
//!   rule.
//! * Not covered: hosts whose docker uses iptables-legacy (its rules are
//!   not in nf_tables; nothing in-process can edit them), dockerd's
//!   experimental nftables firewall backend, and firewalld's own forward
//!   policy.
//!
//! Concurrency: our table part uses the create-chain-with-NLM_F_EXCL
//! pattern of [`crate::masq`]; DOCKER-USER is not ours, so its
//! check-then-insert runs under the ruleset generation id
//! ([`Batch::with_genid`]): if anything changed since the check, the
//! kernel rejects the batch with ERESTART and we check again. Two parallel
//! ADDs therefore never insert duplicates.

use crate::batch::{Batch, Create};
use crate::error::{Error, Result};
use crate::expr::{
    match_ifname, xt_conntrack_state, CmpOp, Expr, MetaKey, Verdict, XT_CTSTATE_DNAT,
    XT_CTSTATE_RELATED_ESTABLISHED,
};
use crate::masq::{FAMILY, TABLE};
use crate::query;
use crate::retry::{self, Plan};
use crate::socket::NftSocket;
use crate::sys::{NFT_REG_1, NFT_REG_2};
use crate::types::*;

pub const FORWARD_CHAIN: &str = "forward";
pub const ISOLATED_SET: &str = "fwd_isolated";
pub const ISOLATED_SELF_SET: &str = "fwd_isolated_self";
pub const DOCKER_USER: &str = "DOCKER-USER";
/// iptables' built-in forward chain in `filter` (iptables-nft's name for it).
pub const FILTER_FORWARD: &str = "FORWARD";
const MAX_ATTEMPTS: usize = 32;

/// What [`ensure_bridge_forwarding`] found or did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardStatus {
    /// Families (`ip`, `ip6`) whose `filter DOCKER-USER` chain exists and now
    /// accepts the bridge's traffic.
    pub docker_user: Vec<Family>,
    /// True if anything was written (false on the fast path).
    pub changed: bool,
}

/// Makes forwarded traffic of `bridge` pass a dockerd-managed FORWARD
/// chain, and (with `isolate`) drops traffic between it and every other
/// isolated bridge. Idempotent; in the steady state it only reads (one
/// element lookup and, per family, one chain lookup and a rule dump of
/// DOCKER-USER).
pub fn ensure_bridge_forwarding(bridge: &str, isolate: bool) -> Result<ForwardStatus> {
    ensure_bridge_forwarding_with(&mut NftSocket::new()?, bridge, isolate)
}

pub fn ensure_bridge_forwarding_with(
    sock: &mut NftSocket,
    bridge: &str,
    isolate: bool,
) -> Result<ForwardStatus> {
    if bridge.is_empty()
        || bridge.len() >= crate::sys::IFNAMSIZ
        || bridge.contains(['/', ':', ' ', '\0'])
    {
        return Err(Error::Invalid(format!(
            "bridge name {bridge:?} is not a valid interface name"
        )));
    }
    let mut status = ForwardStatus {
        changed: ensure_isolation(sock, bridge, isolate)?,
        ..Default::default()
    };
    for fam in [Family::Ip, Family::Ip6] {
        match ensure_accept_rules(sock, fam, DOCKER_USER, bridge)? {
            None => {}
            Some(changed) => {
                status.docker_user.push(fam);
                status.changed |= changed;
            }
        }
    }
    Ok(status)
}

/// Undoes [`ensure_bridge_forwarding`] for a bridge that is going away:
/// removes its isolation elements and its DOCKER-USER rules (those with
/// our comment). Missing pieces are not an error.
pub fn remove_bridge_forwarding(bridge: &str) -> Result<()> {
    let sock = &mut NftSocket::new()?;
    ensure_isolation(sock, bridge, false)?;
    let comment = docker_comment(bridge);
    delete_docker_user_rules(sock, &comment)?;
    // Written by ensure_iface_accept on hosts without dockerd.
    delete_filter_rules(sock, FILTER_FORWARD, &comment)
}

/// Deletes the rules carrying `comment` from `filter DOCKER-USER` in `ip` and `ip6` (a missing
/// table or chain is fine; rules deleted meanwhile are retried).
pub(crate) fn delete_docker_user_rules(sock: &mut NftSocket, comment: &str) -> Result<()> {
    delete_filter_rules(sock, DOCKER_USER, comment)
}

/// Deletes the rules carrying `comment` from `<fam> filter <chain>` for `ip` and `ip6`.
fn delete_filter_rules(sock: &mut NftSocket, chain: &str, comment: &str) -> Result<()> {
    for fam in [Family::Ip, Family::Ip6] {
        for _ in 0..MAX_ATTEMPTS {
            let Some(rules) = query::list_rules(sock, fam, "filter", chain)? else {
                break;
            };
            let mut b = Batch::new();
            for r in rules
                .iter()
                .filter(|r| r.comment.as_deref() == Some(comment))
            {
                b.del_rule(fam, "filter", chain, r.handle);
            }
            match b.commit(sock) {
                Ok(()) => break,
                Err(e) if e.is_not_found() => continue, // deleted meanwhile
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

// ---- our table: isolation -------------------------------------------------

fn isolation_elements(bridge: &str) -> [(&'static str, Element); 2] {
    [
        (ISOLATED_SET, Element::ifname(bridge)),
        (ISOLATED_SELF_SET, Element::ifname_pair(bridge, bridge)),
    ]
}

fn push_forward_chain(b: &mut Batch) -> usize {
    let i = b.add_chain(
        &ChainSpec {
            family: FAMILY,
            table: TABLE.into(),
            name: FORWARD_CHAIN.into(),
            base: Some(BaseChain {
                hook: Hook::Forward,
                priority: priority::FILTER,
                chain_type: ChainType::Filter,
                policy: Some(Verdict::Accept),
            }),
            comment: Some("cni-rs: isolation between bridges".into()),
        },
        Create::Exclusive,
    );
    let load = |key, dreg| Expr::Meta { key, dreg };
    let lookup = |set: &str, invert| Expr::Lookup {
        set: set.into(),
        sreg: NFT_REG_1,
        dreg: None,
        invert,
    };
    b.add_rule(&RuleSpec {
        family: FAMILY,
        table: TABLE.into(),
        chain: FORWARD_CHAIN.into(),
        exprs: vec![
            load(MetaKey::IifName, NFT_REG_1),
            lookup(ISOLATED_SET, false),
            load(MetaKey::OifName, NFT_REG_1),
            lookup(ISOLATED_SET, false),
            load(MetaKey::IifName, NFT_REG_1),
            load(MetaKey::OifName, NFT_REG_2),
            lookup(ISOLATED_SELF_SET, true),
            Expr::Counter,
            Expr::Immediate(Verdict::Drop),
        ],
        comment: Some("cni-rs: no traffic between two isolated bridges".into()),
        append: true,
    });
    i
}

/// Adds (or, with `isolate == false`, removes) the bridge's isolation
/// elements. Returns whether anything changed.
fn ensure_isolation(sock: &mut NftSocket, bridge: &str, isolate: bool) -> Result<bool> {
    let [(set_a, el_a), (set_b, el_b)] = isolation_elements(bridge);
    let present = query::get_element(sock, FAMILY, TABLE, set_b, &el_b)?.is_some();
    if present == isolate {
        return Ok(false);
    }
    if !isolate {
        let mut todo = vec![(set_a, el_a), (set_b, el_b)];
        for _ in 0..MAX_ATTEMPTS {
            let mut b = Batch::new();
            for (s, e) in &todo {
                b.del_element(FAMILY, TABLE, s, e);
            }
            match b.commit(sock) {
                Ok(()) => return Ok(true),
                Err(e) if e.failures().iter().all(|f| f.errno == libc::ENOENT) => {
                    let gone: Vec<usize> = e.failures().iter().map(|f| f.index).collect();
                    todo = todo
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| !gone.contains(i))
                        .map(|(_, x)| x)
                        .collect();
                    if todo.is_empty() {
                        return Ok(true);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        return Err(Error::Protocol(format!(
            "remove isolation of bridge {bridge}: kept changing"
        )));
    }
    let mut chain_exists = false;
    let mut last = None;
    for _ in 0..MAX_ATTEMPTS {
        let mut b = Batch::new();
        b.add_table(FAMILY, TABLE, Create::IfMissing);
        let sets = [
            (ISOLATED_SET, KeyType::IfName),
            (ISOLATED_SELF_SET, KeyType::Concat(vec![KeyType::IfName; 2])),
        ];
        for (name, key) in sets {
            b.add_set(&SetSpec::new(FAMILY, TABLE, name, key), Create::IfMissing);
        }
        let chain_op = (!chain_exists).then(|| push_forward_chain(&mut b));
        b.add_element(FAMILY, TABLE, set_a, &el_a, Create::IfMissing);
        b.add_element(FAMILY, TABLE, set_b, &el_b, Create::IfMissing);
        match b.commit(sock) {
            Ok(()) => return Ok(true),
            Err(e) => {
                let only_chain_exists = e
                    .failures()
                    .iter()
                    .all(|f| Some(f.index) == chain_op && f.errno == libc::EEXIST);
                if !only_chain_exists {
                    return Err(e);
                }
                chain_exists = true;
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::Protocol("isolation: no attempt made".into())))
}

// ---- DOCKER-USER ----------------------------------------------------------

fn docker_comment(bridge: &str) -> String {
    format!("cni-rs bridge {bridge}")
}

fn docker_rules(fam: Family, chain: &str, bridge: &str) -> [RuleSpec; 2] {
    let mk = |exprs: Vec<Expr>| RuleSpec {
        family: fam,
        table: "filter".into(),
        chain: chain.into(),
        exprs,
        comment: Some(docker_comment(bridge)),
        append: false,
    };
    let mut inbound: Vec<Expr> = match_ifname(false, bridge).into();
    inbound.extend([Expr::Counter, Expr::Immediate(Verdict::Accept)]);
    let mut replies: Vec<Expr> = match_ifname(true, bridge).into();
    replies.extend([
        xt_conntrack_state(XT_CTSTATE_RELATED_ESTABLISHED),
        Expr::Counter,
        Expr::Immediate(Verdict::Accept),
    ]);
    [mk(inbound), mk(replies)]
}

/// True if `r` is `-i|-o <bridge> [-m conntrack ...] [-m comment ...] -j
/// ACCEPT` (ours, or an equivalent one written by the admin or restored by
/// iptables-restore).
fn accepts_bridge(r: &Rule, out: bool, bridge: &str) -> bool {
    let key = if out {
        MetaKey::OifName
    } else {
        MetaKey::IifName
    };
    let core: Vec<&Expr> = r
        .exprs
        .iter()
        .filter(|e| {
            !matches!(e, Expr::Counter)
                && !matches!(e, Expr::Match { name, .. } if name == "comment")
        })
        .collect();
    let name_ok = |data: &[u8]| {
        let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
        &data[..end] == bridge.as_bytes() && end < data.len()
    };
    match core.as_slice() {
        [Expr::Meta { key: k, dreg: d }, Expr::Cmp {
            sreg,
            op: CmpOp::Eq,
            data,
        }, rest @ ..]
            if *k == key && d == sreg && name_ok(data) =>
        {
            match rest {
                [Expr::Immediate(Verdict::Accept)] => true,
                [Expr::Match { name, .. }, Expr::Immediate(Verdict::Accept)] => {
                    out && name == "conntrack"
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// The iptables-nft chain of `<fam> filter` where forwarded traffic must be accepted: dockerd's
/// `DOCKER-USER` when it exists, otherwise (with `forward_fallback`) the base chain `FORWARD` when
/// its policy is drop (`iptables -P FORWARD DROP`), otherwise none.
fn filter_accept_chain(
    sock: &mut NftSocket,
    fam: Family,
    forward_fallback: bool,
) -> Result<Option<&'static str>> {
    if query::chain_exists(sock, fam, "filter", DOCKER_USER)? {
        return Ok(Some(DOCKER_USER));
    }
    if !forward_fallback {
        return Ok(None);
    }
    let fwd = query::get_chain(sock, fam, "filter", FILTER_FORWARD)?;
    Ok(fwd
        .filter(|c| c.is_base && c.policy_drop == Some(true))
        .map(|_| FILTER_FORWARD))
}

/// Whether `<fam> filter <chain>` has the `-i <iface>` and the `-o <iface> ... ESTABLISHED`
/// accept rules; `None` if the chain does not exist.
fn accept_rules_present(
    sock: &mut NftSocket,
    fam: Family,
    chain: &str,
    iface: &str,
) -> Result<Option<(bool, bool)>> {
    Ok(query::list_rules(sock, fam, "filter", chain)?.map(|rules| {
        (
            rules.iter().any(|r| accepts_bridge(r, false, iface)),
            rules.iter().any(|r| accepts_bridge(r, true, iface)),
        )
    }))
}

/// Ensures the two accept rules for `iface` at the top of `<fam> filter <chain>`. `None` if
/// that chain does not exist; `Some(changed)` otherwise.
fn ensure_accept_rules(
    sock: &mut NftSocket,
    fam: Family,
    chain: &str,
    iface: &str,
) -> Result<Option<bool>> {
    // Fast path: one rule dump, no generation read.
    match accept_rules_present(sock, fam, chain, iface)? {
        None => return Ok(None),
        Some((true, true)) => return Ok(Some(false)),
        Some(_) => {}
    }
    let gave_up = || {
        format!("{fam} filter {chain}: ruleset kept changing during {MAX_ATTEMPTS} attempts to add the rules for interface {iface}; retry")
    };
    retry::at_generation(sock, MAX_ATTEMPTS, gave_up, |sock| {
        let (have_in, have_out) = match accept_rules_present(sock, fam, chain, iface)? {
            None => return Ok(Plan::Done(None)),
            Some((true, true)) => return Ok(Plan::Done(Some(false))),
            Some(h) => h,
        };
        let [inbound, replies] = docker_rules(fam, chain, iface);
        let mut b = Batch::new();
        if !have_out {
            b.add_rule(&replies);
        }
        if !have_in {
            b.add_rule(&inbound);
        }
        Ok(Plan::Commit(b, Some(true)))
    })
}

fn validate_iface(iface: &str) -> Result<()> {
    if iface.is_empty()
        || iface.len() >= crate::sys::IFNAMSIZ
        || iface.contains(['/', ':', ' ', '\0'])
    {
        return Err(Error::Invalid(format!(
            "interface name {iface:?} is not a valid interface name"
        )));
    }
    Ok(())
}

/// Makes forwarded traffic from and (established) to `iface` pass iptables-nft's `filter`
/// table, which nothing in another table can override: `DOCKER-USER` when dockerd made it,
/// otherwise `FORWARD` when its policy is drop. The rules are the bridge's (same comment, so
/// [`remove_bridge_forwarding`] removes them). Returns the families written to (or already
/// accepting); empty when neither chain exists.
pub fn ensure_iface_accept(iface: &str) -> Result<ForwardStatus> {
    validate_iface(iface)?;
    let sock = &mut NftSocket::new()?;
    let mut status = ForwardStatus::default();
    for fam in [Family::Ip, Family::Ip6] {
        let Some(chain) = filter_accept_chain(sock, fam, true)? else {
            continue;
        };
        if let Some(changed) = ensure_accept_rules(sock, fam, chain, iface)? {
            status.docker_user.push(fam);
            status.changed |= changed;
        }
    }
    Ok(status)
}

/// What [`ensure_iface_accept`] would still have to add, e.g. `["ip filter FORWARD: -i br0
/// -j ACCEPT"]`; empty when nothing is missing (read-only, for CHECK).
pub fn iface_accept_missing(iface: &str) -> Result<Vec<String>> {
    validate_iface(iface)?;
    let sock = &mut NftSocket::new()?;
    let mut missing = Vec::new();
    for fam in [Family::Ip, Family::Ip6] {
        let Some(chain) = filter_accept_chain(sock, fam, true)? else {
            continue;
        };
        if let Some((have_in, have_out)) = accept_rules_present(sock, fam, chain, iface)? {
            if !have_in {
                missing.push(format!("{fam} filter {chain}: -i {iface} -j ACCEPT"));
            }
            if !have_out {
                missing.push(format!(
                    "{fam} filter {chain}: -o {iface} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
                ));
            }
        }
    }
    Ok(missing)
}

// ---- DOCKER-USER: accept DNAT-ed connections into a bridge ----------------

fn dnat_comment(bridge: &str) -> String {
    format!("cnm-shim dnat {bridge}")
}

fn dnat_accept_rule(fam: Family, bridge: &str) -> RuleSpec {
    let mut exprs: Vec<Expr> = match_ifname(true, bridge).into();
    exprs.extend([
        xt_conntrack_state(XT_CTSTATE_DNAT),
        Expr::Counter,
        Expr::Immediate(Verdict::Accept),
    ]);
    RuleSpec {
        family: fam,
        table: "filter".into(),
        chain: DOCKER_USER.into(),
        exprs,
        comment: Some(dnat_comment(bridge)),
        append: false,
    }
}

/// For published ports (cnm-shim): dockerd's `filter FORWARD` (policy DROP
/// when dockerd enabled forwarding) would drop a DNAT-ed connection.
/// Inserts `-o <bridge> -m conntrack --ctstate DNAT -j ACCEPT` at the top of
/// `ip`/`ip6 filter DOCKER-USER`, where that chain exists (dockerd with
/// iptables). Idempotent (found by its comment); runs under the ruleset
/// generation id so a concurrent change by dockerd makes it look again.
pub fn ensure_dnat_accept(bridge: &str) -> Result<()> {
    let sock = &mut NftSocket::new()?;
    let comment = dnat_comment(bridge);
    for fam in [Family::Ip, Family::Ip6] {
        let gave_up = || {
            format!("{fam} filter {DOCKER_USER}: ruleset kept changing while adding the DNAT accept for {bridge}; retry")
        };
        retry::at_generation(sock, MAX_ATTEMPTS, gave_up, |sock| {
            let Some(rules) = query::list_rules(sock, fam, "filter", DOCKER_USER)? else {
                return Ok(Plan::Done(()));
            };
            if rules
                .iter()
                .any(|r| r.comment.as_deref() == Some(comment.as_str()))
            {
                return Ok(Plan::Done(()));
            }
            let mut b = Batch::new();
            b.add_rule(&dnat_accept_rule(fam, bridge));
            Ok(Plan::Commit(b, ()))
        })?;
    }
    Ok(())
}

/// Removes what [`ensure_dnat_accept`] added for `bridge` (missing is fine).
pub fn remove_dnat_accept(bridge: &str) -> Result<()> {
    delete_docker_user_rules(&mut NftSocket::new()?, &dnat_comment(bridge))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_equivalent_rules() {
        let [i, o] = docker_rules(Family::Ip, DOCKER_USER, "br0");
        let rule = |s: &RuleSpec| Rule {
            handle: 1,
            exprs: s.exprs.clone(),
            comment: None,
        };
        assert!(accepts_bridge(&rule(&i), false, "br0"));
        assert!(!accepts_bridge(&rule(&i), true, "br0"));
        assert!(accepts_bridge(&rule(&o), true, "br0"));
        assert!(!accepts_bridge(&rule(&i), false, "br01"));
        assert!(!accepts_bridge(&rule(&i), false, "br"));
        // `iifname <data> accept` as nft writes it: no counter.
        let iif_accept = |handle, data| Rule {
            handle,
            exprs: vec![
                Expr::Meta {
                    key: MetaKey::IifName,
                    dreg: 1,
                },
                Expr::Cmp {
                    sreg: 1,
                    op: CmpOp::Eq,
                    data,
                },
                Expr::Immediate(Verdict::Accept),
            ],
            comment: None,
        };
        // nft-style 16-byte padded name
        let nft_style = iif_accept(2, crate::expr::ifname_key("br0"));
        assert!(accepts_bridge(&nft_style, false, "br0"));
        // prefix match `-i br+` (no NUL) is not ours
        let wildcard = iif_accept(3, b"br0".to_vec());
        assert!(!accepts_bridge(&wildcard, false, "br0"));
    }
}
