//! Read-only requests: existence checks, set-element and rule dumps, the
//! ruleset generation. Each is one request and one receive loop.

use crate::attr::{self, AttrWriter, Attrs};
use crate::error::{Error, Failure, Result};
use crate::expr::{decode_list, Verdict};
use crate::msg::{self, nft_type};
use crate::socket::NftSocket;
use crate::sys::*;
use crate::types::*;
use crate::udata;
use cni_netlink::nl::Msg;

/// A dump is retried this often if the ruleset changed while it ran.
const DUMP_ATTEMPTS: usize = 8;

/// Sends one GET request and returns the nf_tables attribute payloads of
/// the reply messages. A kernel error becomes `Error::Kernel` naming `what`.
/// A dump the kernel flags as interrupted (NLM_F_DUMP_INTR: the ruleset
/// changed between its parts) is repeated, so callers see a consistent
/// snapshot.
fn request(
    sock: &mut NftSocket,
    op: u16,
    dump: bool,
    family: Family,
    what: &str,
    body: impl Fn(&mut AttrWriter<'_>),
) -> Result<Vec<Vec<u8>>> {
    for _ in 0..DUMP_ATTEMPTS {
        let (out, interrupted) = request_once(sock, op, dump, family, what, &body)?;
        if !interrupted {
            return Ok(out);
        }
    }
    Err(Error::Protocol(format!(
        "{what}: the ruleset kept changing during {DUMP_ATTEMPTS} dumps; retry"
    )))
}

fn request_once(
    sock: &mut NftSocket,
    op: u16,
    dump: bool,
    family: Family,
    what: &str,
    body: &dyn Fn(&mut AttrWriter<'_>),
) -> Result<(Vec<Vec<u8>>, bool)> {
    let seq = sock.alloc_seq(1);
    // Dumps end with NLMSG_DONE; single GETs end with the ACK we ask for.
    let flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
    let mut buf = Vec::with_capacity(128);
    let at = msg::begin(&mut buf, nft_type(op), flags, seq, family.raw(), 0);
    body(&mut AttrWriter::new(&mut buf));
    msg::end(&mut buf, at);
    sock.send(&buf, what)?;
    let mut out = Vec::new();
    let mut failure = None;
    let mut interrupted = false;
    sock.recv_until(what, |m: Msg<'_>| {
        if m.seq != seq {
            return Ok(false);
        }
        interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
        match m.ty {
            NLMSG_ERROR | NLMSG_DONE => {
                // An ACK or error; for a dump, its end with its status.
                let e = m
                    .error()
                    .or_else(|| m.done())
                    .ok_or_else(|| Error::Protocol(format!("malformed error reply to {what}")))?;
                if e.errno != 0 {
                    failure = Some(Failure {
                        index: 0,
                        errno: e.errno,
                        op: what.to_string(),
                        detail: e.ext_msg,
                    });
                }
                Ok(true)
            }
            _ => {
                out.push(msg::nft_attrs(&m).to_vec());
                Ok(false)
            }
        }
    })?;
    match failure {
        Some(f) => Err(Error::Kernel(vec![f])),
        None => Ok((out, interrupted)),
    }
}

/// Maps ENOENT to `Ok(None)`.
fn optional<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn table_exists(sock: &mut NftSocket, family: Family, table: &str) -> Result<bool> {
    let what = format!("get table {family} {table}");
    let r = request(sock, NFT_MSG_GETTABLE, false, family, &what, |w| {
        w.put_str(NFTA_TABLE_NAME, table)
    });
    Ok(optional(r)?.is_some())
}

fn parse_chain(a: &[u8]) -> Option<ChainInfo> {
    Some(ChainInfo {
        name: attr::find_str(a, NFTA_CHAIN_NAME)?,
        handle: attr::find(a, NFTA_CHAIN_HANDLE)
            .and_then(attr::be64)
            .unwrap_or(0),
        use_count: attr::find_be32(a, NFTA_CHAIN_USE).unwrap_or(0),
        is_base: attr::find(a, NFTA_CHAIN_HOOK).is_some(),
        policy_drop: attr::find_be32(a, NFTA_CHAIN_POLICY).map(|p| p == NF_DROP as u32),
        comment: attr::find(a, NFTA_CHAIN_USERDATA).and_then(udata::decode_comment),
    })
}

/// The chain, or `None` if it (or its table) does not exist.
pub fn get_chain(
    sock: &mut NftSocket,
    family: Family,
    table: &str,
    chain: &str,
) -> Result<Option<ChainInfo>> {
    let what = format!("get chain {family} {table} {chain}");
    let r = request(sock, NFT_MSG_GETCHAIN, false, family, &what, |w| {
        w.put_str(NFTA_CHAIN_TABLE, table);
        w.put_str(NFTA_CHAIN_NAME, chain);
    });
    Ok(optional(r)?.and_then(|msgs| msgs.first().and_then(|a| parse_chain(a))))
}

pub fn chain_exists(
    sock: &mut NftSocket,
    family: Family,
    table: &str,
    chain: &str,
) -> Result<bool> {
    Ok(get_chain(sock, family, table, chain)?.is_some())
}

/// All chains of a table (empty if the table does not exist).
pub fn list_chains(sock: &mut NftSocket, family: Family, table: &str) -> Result<Vec<ChainInfo>> {
    let what = format!("list chains of table {family} {table}");
    let r = request(sock, NFT_MSG_GETCHAIN, true, family, &what, |w| {
        w.put_str(NFTA_CHAIN_TABLE, table)
    });
    let msgs = optional(r)?.unwrap_or_default();
    Ok(msgs
        .iter()
        .filter(|a| attr::find_str(a, NFTA_CHAIN_TABLE).as_deref() == Some(table))
        .filter_map(|a| parse_chain(a))
        .collect())
}

pub fn set_exists(sock: &mut NftSocket, family: Family, table: &str, set: &str) -> Result<bool> {
    let what = format!("get set {family} {table} {set}");
    let r = request(sock, NFT_MSG_GETSET, false, family, &what, |w| {
        w.put_str(NFTA_SET_TABLE, table);
        w.put_str(NFTA_SET_NAME, set);
    });
    Ok(optional(r)?.is_some())
}

/// Names of all sets and maps of a table (empty if the table is missing).
pub fn list_sets(sock: &mut NftSocket, family: Family, table: &str) -> Result<Vec<String>> {
    let what = format!("list sets of table {family} {table}");
    let r = request(sock, NFT_MSG_GETSET, true, family, &what, |w| {
        w.put_str(NFTA_SET_TABLE, table)
    });
    let msgs = optional(r)?.unwrap_or_default();
    Ok(msgs
        .iter()
        .filter(|a| attr::find_str(a, NFTA_SET_TABLE).as_deref() == Some(table))
        .filter_map(|a| attr::find_str(a, NFTA_SET_NAME))
        .collect())
}

fn parse_elements(a: &[u8], out: &mut Vec<Element>) {
    let Some(list) = attr::find(a, NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return;
    };
    for (ty, el) in Attrs::new(list) {
        if ty != NFTA_LIST_ELEM {
            continue;
        }
        let Some(key) =
            attr::find(el, NFTA_SET_ELEM_KEY).and_then(|k| attr::find(k, NFTA_DATA_VALUE))
        else {
            continue;
        };
        out.push(Element {
            key: key.to_vec(),
            verdict: attr::find(el, NFTA_SET_ELEM_DATA).and_then(Verdict::decode),
            data: attr::find(el, NFTA_SET_ELEM_DATA)
                .and_then(|d| attr::find(d, NFTA_DATA_VALUE))
                .map(<[u8]>::to_vec),
            comment: attr::find(el, NFTA_SET_ELEM_USERDATA).and_then(udata::decode_comment),
        });
    }
}

/// All elements of a set with their verdicts and comments. `None` if the
/// set or table does not exist.
pub fn list_elements(
    sock: &mut NftSocket,
    family: Family,
    table: &str,
    set: &str,
) -> Result<Option<Vec<Element>>> {
    let what = format!("list elements of set {family} {table} {set}");
    let r = request(sock, NFT_MSG_GETSETELEM, true, family, &what, |w| {
        w.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
        w.put_str(NFTA_SET_ELEM_LIST_SET, set);
    });
    Ok(optional(r)?.map(|msgs| {
        let mut out = Vec::new();
        for a in &msgs {
            parse_elements(a, &mut out);
        }
        out
    }))
}

/// Every element of `sets` with the set holding it (none for a missing table or set).
pub fn dump_elements<S: AsRef<str>>(
    sock: &mut NftSocket,
    family: Family,
    table: &str,
    sets: &[S],
) -> Result<Vec<SetElement>> {
    let mut all = Vec::new();
    for set in sets {
        let set = set.as_ref();
        for element in list_elements(sock, family, table, set)?.unwrap_or_default() {
            all.push(SetElement {
                set: set.to_string(),
                element,
            });
        }
    }
    Ok(all)
}

/// One element looked up by key; `None` if it, the set or the table is
/// missing.
pub fn get_element(
    sock: &mut NftSocket,
    family: Family,
    table: &str,
    set: &str,
    key: &Element,
) -> Result<Option<Element>> {
    let what = format!(
        "get element {} from set {family} {table} {set}",
        key.key_label()
    );
    let r = request(sock, NFT_MSG_GETSETELEM, false, family, &what, |w| {
        w.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
        w.put_str(NFTA_SET_ELEM_LIST_SET, set);
        w.nest(NFTA_SET_ELEM_LIST_ELEMENTS, |w| {
            w.nest(NFTA_LIST_ELEM, |w| {
                w.nest(NFTA_SET_ELEM_KEY, |w| w.put(NFTA_DATA_VALUE, &key.key));
            });
        });
    });
    Ok(optional(r)?.and_then(|msgs| {
        let mut out = Vec::new();
        for a in &msgs {
            parse_elements(a, &mut out);
        }
        out.into_iter().find(|e| e.key == key.key)
    }))
}

/// Rules of a chain in order, with handles and comments. `None` if the
/// chain or table does not exist.
pub fn list_rules(
    sock: &mut NftSocket,
    family: Family,
    table: &str,
    chain: &str,
) -> Result<Option<Vec<Rule>>> {
    let what = format!("list rules of chain {family} {table} {chain}");
    let r = request(sock, NFT_MSG_GETRULE, true, family, &what, |w| {
        w.put_str(NFTA_RULE_TABLE, table);
        w.put_str(NFTA_RULE_CHAIN, chain);
    });
    let Some(msgs) = optional(r)? else {
        return Ok(None);
    };
    // A filtered rule dump of a missing table or chain is just empty.
    if msgs.is_empty() && !chain_exists(sock, family, table, chain)? {
        return Ok(None);
    }
    Ok(Some(
        msgs.iter()
            .filter(|a| {
                attr::find_str(a, NFTA_RULE_TABLE).as_deref() == Some(table)
                    && attr::find_str(a, NFTA_RULE_CHAIN).as_deref() == Some(chain)
            })
            .filter_map(|a| {
                Some(Rule {
                    handle: attr::find(a, NFTA_RULE_HANDLE).and_then(attr::be64)?,
                    exprs: attr::find(a, NFTA_RULE_EXPRESSIONS)
                        .map(decode_list)
                        .unwrap_or_default(),
                    comment: attr::find(a, NFTA_RULE_USERDATA).and_then(udata::decode_comment),
                })
            })
            .collect(),
    ))
}

/// Current ruleset generation, for [`crate::Batch::with_genid`].
pub fn generation(sock: &mut NftSocket) -> Result<u32> {
    const NFTA_GEN_ID: u16 = 1;
    let msgs = request(
        sock,
        NFT_MSG_GETGEN,
        false,
        Family::Inet,
        "get ruleset generation",
        |_| {},
    )?;
    msgs.iter()
        .find_map(|a| attr::find_be32(a, NFTA_GEN_ID))
        .ok_or_else(|| Error::Protocol("no generation id in NEWGEN reply".into()))
}
