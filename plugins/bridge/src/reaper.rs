//! Deleting a link without making the caller wait for the kernel.
//!
//! `RTM_DELLINK` of a veth blocks the sender until the kernel has dropped every reference to
//! the device (an RCU barrier: 10-30 ms here, against ~1 ms for the rest of a DEL). The
//! deletion itself is synchronous inside `sendmsg`, so it cannot be made asynchronous on one
//! socket; instead a detached grandchild process (double fork, so no zombie is left to the
//! runtime) sends it on the already-open socket, and the plugin exits at once. The netns stays
//! alive while the grandchild holds the socket, so a runtime deleting the netns right after DEL
//! is fine. If fork fails the link is deleted synchronously.

use std::any::Any;
use std::sync::Mutex;

use cni_core::detach::detached;
use cni_netlink::Netlink;

/// Objects whose drop is slow (an nf_tables socket that just deleted elements: its close waits
/// ~10 ms for the kernel's deferred cleanup). They are kept open until [`finish`], so that the
/// detached process, which inherits them, pays for the close instead of the caller.
static LINGER: Mutex<Vec<Box<dyn Any + Send>>> = Mutex::new(Vec::new());

pub fn linger<T: Any + Send>(obj: T) {
    if let Ok(mut l) = LINGER.lock() {
        l.push(Box::new(obj));
    }
}

/// Ends a DEL: deletes `link` (if any) and closes lingering objects in a detached process.
/// The parent forgets its copies of the lingering objects: their fds are closed by the exit
/// without blocking, because the detached process still holds them.
pub fn finish(link: Option<(Netlink, u32)>) {
    let lingering: Vec<Box<dyn Any + Send>> = LINGER
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    match link {
        Some((sock, index)) => delete_link_detached(sock, index, lingering),
        None if !lingering.is_empty() => detached(|| drop(lingering)),
        None => {}
    }
}

fn delete_link_detached(mut sock: Netlink, index: u32, lingering: Vec<Box<dyn Any + Send>>) {
    // Test switch: delete in the caller. Compiled into debug builds only (the ones the tests
    // exec), so an installed release binary cannot be switched (scripts/lib.sh checks).
    #[cfg(debug_assertions)]
    if std::env::var_os("CNI_BRIDGE_SYNC_DELETE").is_some() {
        delete(&mut sock, index);
        return;
    }
    detached(move || {
        delete(&mut sock, index);
        drop(lingering);
    });
}

fn delete(sock: &mut Netlink, index: u32) {
    if let Err(e) = sock.delete_link(index) {
        if !e.is_not_found() {
            eprintln!("bridge: DEL: delete link {index}: {e}");
        }
    }
}
