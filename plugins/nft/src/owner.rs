//! The owner tag every per-attachment element carries as its comment:
//! `<network> <containerID> <ifname>`, so DEL without state and GC find an
//! attachment's elements (masquerade, spoofchk, published ports).

use crate::batch::{self, Split};
use crate::error::{Error, Result};
use crate::query;
use crate::socket::NftSocket;
use crate::types::{Family, SetElement};

/// Where an engine (ipMasq, firewall, macspoofchk, published ports) keeps its owner-tagged
/// elements, and what its deletions are called in errors: the one way they are all dumped
/// (DEL without state, GC, listing) and deleted.
pub(crate) struct OwnedElements {
    pub family: Family,
    pub table: &'static str,
    /// Names a deletion in its final error (e.g. "ipMasq delete").
    pub op: &'static str,
}

impl OwnedElements {
    /// Every element of `sets` with the set holding it (none for a missing table or set).
    pub fn dump<S: AsRef<str>>(&self, sock: &mut NftSocket, sets: &[S]) -> Result<Vec<SetElement>> {
        query::dump_elements(sock, self.family, self.table, sets)
    }

    /// Deletes `victims` in transactions as `split` says; elements that vanished in the
    /// meantime (a concurrent DEL or GC) are skipped.
    pub fn delete(
        &self,
        sock: &mut NftSocket,
        victims: Vec<SetElement>,
        split: Split<'_>,
    ) -> Result<()> {
        batch::delete_elements(sock, self.family, self.table, victims, split, self.op)
    }
}

/// Owner of an element. None of the three may contain whitespace (CNI
/// restricts network names and container IDs to `[A-Za-z0-9_.-]`, the kernel
/// forbids whitespace in ifnames).
pub(crate) fn owner_comment(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{network} {container_id} {ifname}")
}

/// The three parts of an owner tag.
pub fn parse_owner(comment: &str) -> Option<(&str, &str, &str)> {
    let mut it = comment.split(' ');
    let r = (it.next()?, it.next()?, it.next()?);
    it.next().is_none().then_some(r)
}

/// The owner tag, or an error naming `what` (the feature recording it) and the fix.
pub fn validate_owner(
    what: &str,
    network: &str,
    container_id: &str,
    ifname: &str,
) -> Result<String> {
    for (name, v) in [
        ("network name", network),
        ("container ID", container_id),
        ("interface name", ifname),
    ] {
        if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == '\0') {
            return Err(Error::Invalid(format!(
                "{what}: {name} {v:?} is empty or contains whitespace; it cannot be recorded in nftables"
            )));
        }
    }
    let c = owner_comment(network, container_id, ifname);
    if c.len() > crate::MAX_COMMENT {
        return Err(Error::Invalid(format!(
            "{what}: network name + container ID + ifname are {} bytes, more than the {} an nftables comment holds; shorten the network name",
            c.len(),
            crate::MAX_COMMENT
        )));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_roundtrip_and_validation() {
        let c = validate_owner("x", "net", "abc", "eth0").unwrap();
        assert_eq!(parse_owner(&c), Some(("net", "abc", "eth0")));
        assert!(validate_owner("x", "n et", "abc", "eth0").is_err());
        assert!(validate_owner("x", "net", "", "eth0").is_err());
        assert!(validate_owner("x", &"n".repeat(200), &"c".repeat(64), "eth0").is_err());
        assert_eq!(parse_owner("a b"), None);
        assert_eq!(parse_owner("a b c d"), None);
    }
}
