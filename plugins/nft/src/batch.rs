//! Transactions: a batch of nf_tables messages framed by
//! NFNL_MSG_BATCH_BEGIN/END, each with NLM_F_ACK, sent with one `send` and
//! answered by one receive loop that collects every ACK or error. The
//! kernel applies all messages or none.

use cni_netlink::nl::frame;

use crate::attr::AttrWriter;
use crate::error::{Error, Failure, Result};
use crate::expr::{encode_list, Verdict};
use crate::msg::{self, nft_type};
use crate::socket::NftSocket;
use crate::sys::*;
use crate::types::*;
use crate::udata;

/// Whether an add fails if the object exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// NLM_F_CREATE: succeed (no-op, or update for base chains) if present.
    IfMissing,
    /// NLM_F_CREATE | NLM_F_EXCL: fail with EEXIST if present.
    Exclusive,
}

impl Create {
    fn flags(self) -> u16 {
        match self {
            Create::IfMissing => NLM_F_CREATE,
            Create::Exclusive => NLM_F_CREATE | NLM_F_EXCL,
        }
    }
}

/// Builder for one transaction. Operations are numbered from 0 in call
/// order; [`Failure::index`] refers to that number.
#[derive(Default)]
pub struct Batch {
    buf: Vec<u8>,
    /// (offset of the message in `buf`, description).
    ops: Vec<(usize, String)>,
    genid: Option<u32>,
    next_set_id: u32,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Description of operation `i` (as used in errors).
    pub fn op(&self, i: usize) -> Option<&str> {
        self.ops.get(i).map(|(_, d)| d.as_str())
    }

    /// Makes the kernel reject the whole batch with ERESTART if the ruleset
    /// changed since generation `genid` (see [`crate::query::generation`]):
    /// optimistic concurrency for read-check-write sequences.
    pub fn with_genid(mut self, genid: u32) -> Self {
        self.genid = Some(genid);
        self
    }

    fn push(
        &mut self,
        op: u16,
        flags: u16,
        family: Family,
        what: String,
        body: impl FnOnce(&mut AttrWriter<'_>),
    ) -> usize {
        let at = msg::begin(
            &mut self.buf,
            nft_type(op),
            NLM_F_REQUEST | NLM_F_ACK | flags,
            0,
            family.raw(),
            0,
        );
        body(&mut AttrWriter::new(&mut self.buf));
        msg::end(&mut self.buf, at);
        self.ops.push((at, what));
        self.ops.len() - 1
    }

    pub fn add_table(&mut self, family: Family, name: &str, create: Create) -> usize {
        self.push(
            NFT_MSG_NEWTABLE,
            create.flags(),
            family,
            format!("add table {family} {name}"),
            |w| {
                w.put_str(NFTA_TABLE_NAME, name);
            },
        )
    }

    pub fn del_table(&mut self, family: Family, name: &str) -> usize {
        self.push(
            NFT_MSG_DELTABLE,
            0,
            family,
            format!("delete table {family} {name}"),
            |w| {
                w.put_str(NFTA_TABLE_NAME, name);
            },
        )
    }

    pub fn add_chain(&mut self, spec: &ChainSpec, create: Create) -> usize {
        let what = format!("add chain {} {} {}", spec.family, spec.table, spec.name);
        self.push(NFT_MSG_NEWCHAIN, create.flags(), spec.family, what, |w| {
            w.put_str(NFTA_CHAIN_TABLE, &spec.table);
            w.put_str(NFTA_CHAIN_NAME, &spec.name);
            if let Some(b) = &spec.base {
                w.nest(NFTA_CHAIN_HOOK, |w| {
                    w.put_be32(NFTA_HOOK_HOOKNUM, b.hook.raw());
                    w.put_be32(NFTA_HOOK_PRIORITY, b.priority as u32);
                });
                w.put_str(NFTA_CHAIN_TYPE, b.chain_type.name());
                match b.policy {
                    Some(Verdict::Drop) => w.put_be32(NFTA_CHAIN_POLICY, NF_DROP as u32),
                    Some(_) => w.put_be32(NFTA_CHAIN_POLICY, NF_ACCEPT as u32),
                    None => {}
                }
            }
            if let Some(c) = spec.comment.as_deref().and_then(udata::encode_comment) {
                w.put(NFTA_CHAIN_USERDATA, &c);
            }
        })
    }

    pub fn del_chain(&mut self, family: Family, table: &str, name: &str) -> usize {
        self.push(
            NFT_MSG_DELCHAIN,
            0,
            family,
            format!("delete chain {family} {table} {name}"),
            |w| {
                w.put_str(NFTA_CHAIN_TABLE, table);
                w.put_str(NFTA_CHAIN_NAME, name);
            },
        )
    }

    pub fn add_set(&mut self, spec: &SetSpec, create: Create) -> usize {
        let kind = if spec.verdict_map { "map" } else { "set" };
        let what = format!("add {kind} {} {} {}", spec.family, spec.table, spec.name);
        self.next_set_id += 1;
        let id = self.next_set_id;
        self.push(NFT_MSG_NEWSET, create.flags(), spec.family, what, |w| {
            let (key_type, key_len) = spec.key.raw();
            w.put_str(NFTA_SET_TABLE, &spec.table);
            w.put_str(NFTA_SET_NAME, &spec.name);
            w.put_be32(NFTA_SET_FLAGS, spec.kernel_flags());
            w.put_be32(NFTA_SET_KEY_TYPE, key_type);
            w.put_be32(NFTA_SET_KEY_LEN, key_len);
            if spec.verdict_map {
                w.put_be32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
                w.put_be32(NFTA_SET_DATA_LEN, 0);
            } else if let Some(d) = &spec.data {
                let (data_type, data_len) = d.raw();
                w.put_be32(NFTA_SET_DATA_TYPE, data_type);
                w.put_be32(NFTA_SET_DATA_LEN, data_len);
            }
            w.put_be32(NFTA_SET_ID, id);
            let mut ud = udata::set_key_byteorder(spec.key.nft_byteorder());
            if let Some(d) = &spec.data {
                ud.extend(udata::set_data_byteorder(d.nft_byteorder()));
            }
            w.put(NFTA_SET_USERDATA, &ud);
        })
    }

    pub fn del_set(&mut self, family: Family, table: &str, name: &str) -> usize {
        self.push(
            NFT_MSG_DELSET,
            0,
            family,
            format!("delete set {family} {table} {name}"),
            |w| {
                w.put_str(NFTA_SET_TABLE, table);
                w.put_str(NFTA_SET_NAME, name);
            },
        )
    }

    /// Adds one element (one message, so a failure names this element).
    /// With `Create::IfMissing` an identical element is a no-op, but an
    /// element with the same key and different verdict fails with EBUSY,
    /// and a differing comment is silently kept as it was.
    pub fn add_element(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        el: &Element,
        create: Create,
    ) -> usize {
        let what = format!(
            "add element {} to set {family} {table} {set}",
            el.key_label()
        );
        self.push(NFT_MSG_NEWSETELEM, create.flags(), family, what, |w| {
            w.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
            w.put_str(NFTA_SET_ELEM_LIST_SET, set);
            w.nest(NFTA_SET_ELEM_LIST_ELEMENTS, |w| {
                w.nest(NFTA_LIST_ELEM, |w| {
                    w.nest(NFTA_SET_ELEM_KEY, |w| w.put(NFTA_DATA_VALUE, &el.key));
                    if let Some(v) = &el.verdict {
                        w.nest(NFTA_SET_ELEM_DATA, |w| v.encode(w));
                    } else if let Some(d) = &el.data {
                        w.nest(NFTA_SET_ELEM_DATA, |w| w.put(NFTA_DATA_VALUE, d));
                    }
                    if let Some(c) = el.comment.as_deref().and_then(udata::encode_comment) {
                        w.put(NFTA_SET_ELEM_USERDATA, &c);
                    }
                });
            });
        })
    }

    /// Deletes one element by key (ENOENT if it does not exist).
    pub fn del_element(&mut self, family: Family, table: &str, set: &str, el: &Element) -> usize {
        let what = format!(
            "delete element {} from set {family} {table} {set}",
            el.key_label()
        );
        self.push(NFT_MSG_DELSETELEM, 0, family, what, |w| {
            w.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
            w.put_str(NFTA_SET_ELEM_LIST_SET, set);
            w.nest(NFTA_SET_ELEM_LIST_ELEMENTS, |w| {
                w.nest(NFTA_LIST_ELEM, |w| {
                    w.nest(NFTA_SET_ELEM_KEY, |w| w.put(NFTA_DATA_VALUE, &el.key));
                });
            });
        })
    }

    /// Adds a rule (rules are never idempotent: adding twice gives two).
    pub fn add_rule(&mut self, spec: &RuleSpec) -> usize {
        let what = format!(
            "add rule to chain {} {} {}",
            spec.family, spec.table, spec.chain
        );
        let flags = NLM_F_CREATE | if spec.append { NLM_F_APPEND } else { 0 };
        self.push(NFT_MSG_NEWRULE, flags, spec.family, what, |w| {
            w.put_str(NFTA_RULE_TABLE, &spec.table);
            w.put_str(NFTA_RULE_CHAIN, &spec.chain);
            w.nest(NFTA_RULE_EXPRESSIONS, |w| encode_list(w, &spec.exprs));
            if let Some(c) = spec.comment.as_deref().and_then(udata::encode_comment) {
                w.put(NFTA_RULE_USERDATA, &c);
            }
        })
    }

    pub fn del_rule(&mut self, family: Family, table: &str, chain: &str, handle: u64) -> usize {
        let what = format!("delete rule handle {handle} from chain {family} {table} {chain}");
        self.push(NFT_MSG_DELRULE, 0, family, what, |w| {
            w.put_str(NFTA_RULE_TABLE, table);
            w.put_str(NFTA_RULE_CHAIN, chain);
            w.put_be64(NFTA_RULE_HANDLE, handle);
        })
    }

    /// [`Batch::commit`] for callers that react to rejected operations: `Ok(None)` when the
    /// batch is applied, `Ok(Some(error))` when the kernel rejected operations
    /// ([`Error::Kernel`], see [`Error::failures`]), `Err` for anything else.
    pub fn try_commit(self, sock: &mut NftSocket) -> Result<Option<Error>> {
        match self.commit(sock) {
            Ok(()) => Ok(None),
            Err(e @ Error::Kernel(_)) => Ok(Some(e)),
            Err(e) => Err(e),
        }
    }

    /// Sends the batch and waits for every ACK. On failure the kernel has
    /// applied nothing, and the error lists every rejected operation.
    pub fn commit(mut self, sock: &mut NftSocket) -> Result<()> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let n = self.ops.len() as u32;
        let begin_seq = sock.alloc_seq(n + 2);
        let first_op_seq = begin_seq.wrapping_add(1);
        for (i, (at, _)) in self.ops.iter().enumerate() {
            let seq = first_op_seq.wrapping_add(i as u32);
            frame::set_seq(&mut self.buf, *at, seq);
        }
        let mut out = Vec::with_capacity(self.buf.len() + 64);
        let b = msg::begin(
            &mut out,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            begin_seq,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
        );
        if let Some(g) = self.genid {
            AttrWriter::new(&mut out).put_be32(NFNL_BATCH_GENID, g);
        }
        msg::end(&mut out, b);
        out.extend_from_slice(&self.buf);
        let e = msg::begin(
            &mut out,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            first_op_seq.wrapping_add(n),
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
        );
        msg::end(&mut out, e);

        let first_op = self.ops.first().map(|(_, d)| d.clone()).unwrap_or_default();
        sock.reserve_acks(self.ops.len() + 2);
        sock.send(&out, &first_op)?;

        let mut answered = vec![false; self.ops.len()];
        let mut remaining = self.ops.len();
        let mut failures = Vec::new();
        sock.recv_until(&first_op, |m| {
            let Some(err) = m.error() else {
                return Ok(false);
            };
            if err.seq == begin_seq {
                if err.errno != 0 {
                    let op = if err.errno == libc::ERESTART {
                        "commit transaction (ruleset changed since it was read)".to_string()
                    } else {
                        format!("begin transaction ({first_op}, ...)")
                    };
                    failures.push(Failure {
                        index: usize::MAX,
                        errno: err.errno,
                        op,
                        detail: err.ext_msg,
                    });
                    return Ok(true);
                }
                return Ok(false);
            }
            let i = err.seq.wrapping_sub(first_op_seq) as usize;
            if i >= answered.len() || answered[i] {
                return Ok(false); // stale or duplicate
            }
            answered[i] = true;
            remaining -= 1;
            if err.errno != 0 {
                failures.push(Failure {
                    index: i,
                    errno: err.errno,
                    op: self.ops[i].1.clone(),
                    detail: err.ext_msg,
                });
            }
            Ok(remaining == 0)
        })?;
        if failures.is_empty() {
            Ok(())
        } else {
            failures.sort_by_key(|f| f.index);
            Err(Error::Kernel(failures))
        }
    }
}

/// What each operation of a batch stands for, by op index (as the `add_*`/`del_*` methods
/// return it), to map the kernel's failures back; `other` for untagged operations.
pub(crate) struct OpTags<T> {
    tags: Vec<T>,
    other: T,
}

impl<T: Copy> OpTags<T> {
    pub(crate) fn new(other: T) -> Self {
        OpTags {
            tags: Vec::new(),
            other,
        }
    }

    pub(crate) fn set(&mut self, op: usize, tag: T) {
        if self.tags.len() <= op {
            self.tags.resize(op + 1, self.other);
        }
        self.tags[op] = tag;
    }

    pub(crate) fn get(&self, op: usize) -> T {
        self.tags.get(op).copied().unwrap_or(self.other)
    }
}

/// Element deletions per transaction when a delete is split: one transaction is one netlink
/// message, so a bulk delete (a GC of thousands) stays under the socket buffer limit (EMSGSIZE
/// at ~2000 elements otherwise).
pub(crate) const DELETE_CHUNK: usize = 512;

/// How [`delete_elements`] splits its victims into transactions.
#[derive(Clone, Copy)]
pub(crate) enum Split<'a> {
    /// One transaction: all or nothing (an attachment's DEL).
    Never,
    /// Transactions of at most [`DELETE_CHUNK`] elements (GC).
    Chunks,
    /// As `Chunks`, but neighbours for which the function holds stay in one transaction (a
    /// chunk grows past the limit for them); the caller sorts so that they are adjacent.
    ChunksKeeping(&'a dyn Fn(&Element, &Element) -> bool),
}

/// Attempts per deletion transaction (each retries without the elements that vanished).
const DELETE_ATTEMPTS: usize = 16;

/// Deletes `victims` of `table`, split into transactions as `split` says. In each transaction
/// elements that vanished meanwhile (ENOENT: a concurrent DEL or GC) are dropped from the
/// batch and it is retried, up to [`DELETE_ATTEMPTS`] times; `what` names the operation in the final
/// error.
pub(crate) fn delete_elements(
    sock: &mut NftSocket,
    family: Family,
    table: &str,
    mut victims: Vec<SetElement>,
    split: Split<'_>,
    what: &str,
) -> Result<()> {
    while !victims.is_empty() {
        let mut end = match split {
            Split::Never => victims.len(),
            Split::Chunks | Split::ChunksKeeping(_) => victims.len().min(DELETE_CHUNK),
        };
        if let Split::ChunksKeeping(together) = split {
            while end < victims.len() && together(&victims[end - 1].element, &victims[end].element)
            {
                end += 1;
            }
        }
        let rest = victims.split_off(end);
        delete_elements_tolerant(sock, family, table, victims, what)?;
        victims = rest;
    }
    Ok(())
}

/// One transaction deleting `victims`, retried without those that vanished.
fn delete_elements_tolerant(
    sock: &mut NftSocket,
    family: Family,
    table: &str,
    mut victims: Vec<SetElement>,
    what: &str,
) -> Result<()> {
    for _ in 0..DELETE_ATTEMPTS {
        if victims.is_empty() {
            return Ok(());
        }
        let mut b = Batch::new();
        for v in &victims {
            b.del_element(family, table, &v.set, &v.element);
        }
        let Some(err) = b.try_commit(sock)? else {
            return Ok(());
        };
        let mut gone = std::collections::HashSet::new();
        for f in err.failures() {
            if f.errno == libc::ENOENT && f.index < victims.len() {
                gone.insert(f.index);
            } else {
                return Err(err);
            }
        }
        let mut i = 0;
        victims.retain(|_| {
            i += 1;
            !gone.contains(&(i - 1))
        });
    }
    Err(Error::Protocol(format!(
        "{what}: elements kept changing; gave up"
    )))
}
