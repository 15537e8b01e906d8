//! The suite's plugins as a runtime finds them in one CNI_PATH directory, and traffic checks
//! shared by the conf/ and cnitool tests.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, Netns, PluginDir, REFERENCE_DIR};

/// Every plugin binary of the suite, under the names conflists use.
pub const SUITE_PLUGINS: &[&str] = &[
    "loopback",
    "bridge",
    "host-local",
    "portmap",
    "firewall",
    "tuning",
];

// =============================================================================================
// TEMPORARY STAND-INS: plugins of the suite that are not merged yet and are run from Debian's
// reference binaries (/usr/lib/cni, v1.1.1, spec <= 1.0.0) instead. When ours are merged,
// empty this list: every plugin is then ours (`cni_tests::bin`, which fails when a binary was
// not built).
// =============================================================================================
pub const REFERENCE_STAND_INS: &[&str] = &["portmap"];

/// A CNI_PATH directory with every plugin of the suite: ours, except the
/// [`REFERENCE_STAND_INS`]. A stand-in is wrapped so a spec 1.1.0 config reaches the 1.0.0
/// reference binary as 1.0.0 (the result is relabelled 1.1.0), and GC/STATUS, which the
/// reference does not know, succeed without doing anything (as does the reference portmap's
/// CHECK, broken upstream: containernetworking/plugins#819).
pub fn suite_plugin_dir() -> PluginDir {
    let ours: Vec<(&str, std::path::PathBuf)> = SUITE_PLUGINS
        .iter()
        .filter(|n| !REFERENCE_STAND_INS.contains(n))
        .map(|n| (*n, bin(n)))
        .collect();
    let links: Vec<(&str, &Path)> = ours.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let dir = PluginDir::new(&links);
    for name in REFERENCE_STAND_INS {
        let reference = Path::new(REFERENCE_DIR).join(name);
        assert!(
            reference.exists(),
            "{} missing: install containernetworking-plugins (scripts/test.sh does)",
            reference.display()
        );
        let script = format!(
            r#"#!/bin/sh
# TEMPORARY stand-in for our {name}: the reference binary, spoken to at spec <= 1.0.0.
in=$(cat)
{known_bug}
if [ "$CNI_COMMAND" = VERSION ]; then
    printf '%s' "$in" | {reference} | sed 's/"supportedVersions":\[/"supportedVersions":["1.1.0",/'
    exit
fi
case "$in" in
*'"cniVersion":"1.1.0"'*) ;;
*) printf '%s' "$in" | {reference}; exit ;;
esac
case "$CNI_COMMAND" in GC|STATUS) exit 0 ;; esac
out=$(printf '%s' "$in" | sed 's/"cniVersion":"1.1.0"/"cniVersion":"1.0.0"/g' | {reference})
rc=$?
printf '%s' "$out" | sed 's/"cniVersion": *"1.0.0"/"cniVersion": "1.1.0"/g'
exit $rc
"#,
            reference = reference.display(),
            known_bug = if *name == "portmap" {
                // containernetworking/plugins#819: v1.1.1's CHECK looks for ip6tables rules
                // that ADD never made and fails every IPv4 container.
                "[ \"$CNI_COMMAND\" = CHECK ] && exit 0"
            } else {
                ""
            }
        );
        let p = dir.0.path().join(name);
        std::fs::write(&p, script).expect("write stand-in");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
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
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nc -l");
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
