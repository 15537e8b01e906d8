//! The suite's plugins as a runtime finds them in one CNI_PATH directory, and traffic checks
//! shared by the conf/ and cnitool tests.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, Netns, PluginDir};

/// Every plugin binary of the suite, under the names conflists use.
pub const SUITE_PLUGINS: &[&str] = &[
    "loopback",
    "bridge",
    "host-local",
    "portmap",
    "firewall",
    "tuning",
];

/// A CNI_PATH directory with every plugin of the suite, all ours (fails when one was not built).
pub fn suite_plugin_dir() -> PluginDir {
    let ours: Vec<(&str, std::path::PathBuf)> =
        SUITE_PLUGINS.iter().map(|n| (*n, bin(n))).collect();
    let links: Vec<(&str, &Path)> = ours.iter().map(|(n, p)| (*n, p.as_path())).collect();
    PluginDir::new(&links)
}

/// Sends a line over TCP from `client` to `addr:port` and returns true when `server` (a
/// `busybox nc -l -p <listen_port>` started inside it) received it: proves a port mapping (or
/// plain reachability) end to end.
pub fn tcp_delivers(
    server: &Netns,
    listen_port: u16,
    client: &Netns,
    addr: &str,
    port: u16,
) -> bool {
    let mut srv = Command::new("ip")
        .args(["netns", "exec", &server.name, "busybox", "nc", "-l", "-p"])
        .arg(listen_port.to_string())
        // A stdin that stays open: busybox nc exits on stdin EOF, which with /dev/null could
        // happen between accept and the client's data arriving (a flake seen in CI).
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nc -l");
    let _keep_open = srv.stdin.take();
    // Wait until it listens (ss inside the server's netns).
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let o = server.exec(&["ss", "-Htln", &format!("sport = :{listen_port}")]);
        if !String::from_utf8_lossy(&o.stdout).trim().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let msg = "cni-rs-hello";
    let _ = client.exec(&[
        "sh",
        "-c",
        &format!("echo {msg} | busybox nc -w 2 {addr} {port}"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline && matches!(srv.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = srv.kill();
    let _ = srv.wait();
    let mut got = String::new();
    if let Some(mut o) = srv.stdout.take() {
        let _ = o.read_to_string(&mut got);
    }
    got.contains(msg)
}
