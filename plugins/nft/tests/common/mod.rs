//! Test helpers: run code in a private network namespace (nftables state
//! is per netns, so tests never touch the host's ruleset), and run `nft`
//! inside it to verify.
#![allow(dead_code)]

use std::process::Command;
use std::sync::mpsc;

#[allow(unused_imports)]
pub use test_support::{
    concurrently, current_netns, enter_netns, in_private_netns as in_netns, unshare_net,
};

/// Runs a command from the calling thread (so it inherits that thread's
/// netns) and returns stdout; panics with stderr on failure.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("exec {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn nft(args: &[&str]) -> String {
    run("nft", args)
}

/// `nft list table inet cni_rs`, or "" if the table does not exist.
pub fn list_table() -> String {
    let out = Command::new("nft")
        .args(["list", "table", "inet", "cni_rs"])
        .output()
        .expect("exec nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Number of rules in the table (from `nft -j`).
pub fn rule_count() -> usize {
    let out = Command::new("nft")
        .args(["-j", "list", "table", "inet", "cni_rs"])
        .output()
        .expect("exec nft");
    String::from_utf8_lossy(&out.stdout)
        .matches("\"rule\":")
        .count()
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread living in its own network namespace, running jobs on request.
pub struct NsThread {
    tx: Option<mpsc::Sender<Job>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl NsThread {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let (up_tx, up_rx) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            unshare_net();
            run("ip", &["link", "set", "lo", "up"]);
            up_tx.send(()).unwrap();
            for job in rx {
                job();
            }
        });
        up_rx.recv().unwrap();
        NsThread {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        self.tx
            .as_ref()
            .unwrap()
            .send(Box::new(move || {
                let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
            }))
            .unwrap();
        match rx.recv().unwrap() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Queues `f` on the thread without waiting for it (e.g. a receiver that must be ready
    /// before the sender runs).
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        self.tx.as_ref().unwrap().send(Box::new(f)).unwrap();
    }

    /// Runs a command inside the thread's netns, panicking on failure.
    pub fn sh(&self, args: &'static [&'static str]) {
        self.run(move || {
            run(args[0], &args[1..]);
        });
    }
}

impl Drop for NsThread {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Sends UDP from `from` to `dst` (bound in `to`); the source address it arrived with, if it
/// arrived within 1 s.
pub fn udp(from: &NsThread, to: &NsThread, dst: &'static str) -> Option<std::net::SocketAddr> {
    use std::net::UdpSocket;
    use std::time::Duration;
    let (ready_tx, ready_rx) = mpsc::channel();
    let (seen_tx, seen_rx) = mpsc::channel();
    let port: u16 = dst.rsplit(':').next().unwrap().parse().unwrap();
    to.spawn(move || {
        let s = UdpSocket::bind(("0.0.0.0", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1000)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 16];
        let _ = seen_tx.send(s.recv_from(&mut buf).ok().map(|(_, a)| a));
    });
    ready_rx.recv().unwrap();
    from.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..3 {
            let _ = s.send_to(b"hi", dst);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    seen_rx.recv().unwrap()
}
