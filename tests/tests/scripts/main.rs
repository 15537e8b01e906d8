//! scripts/install.sh and scripts/uninstall.sh against test-owned directories (every target
//! is overridable by an environment variable), with uninstall.sh run inside a throwaway netns
//! so the bridges and nftables tables it removes are the test's own.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cni_tests::{Netns, TempDir};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name)
}

struct Dirs {
    root: TempDir,
}

impl Dirs {
    fn new() -> Dirs {
        Dirs {
            root: TempDir::new("scr"),
        }
    }
    fn p(&self, sub: &str) -> PathBuf {
        self.root.path().join(sub)
    }
    fn env(&self, cmd: &mut Command) {
        cmd.env("CNI_BIN_DIR", self.p("opt/cni/bin"))
            .env("SHIM_DIR", self.p("usr/local/bin"))
            .env("CNI_CONF_DIR", self.p("etc/cni/net.d"))
            .env("SYSTEMD_DIR", self.p("etc/systemd/system"))
            .env("CNI_RS_STATE_DIR", self.p("var/lib/cni-rs"))
            .env("TUNING_DIR", self.p("run/cni/tuning"))
            .env("CNM_STATE_DIR", self.p("var/lib/cnm-shim"))
            .env("CNI_RS_PREBUILT", self.p("build"))
            .stdin(Stdio::null());
    }
    fn install(&self) -> Output {
        let mut c = Command::new("bash");
        c.arg(script("install.sh"));
        self.env(&mut c);
        c.output().expect("run install.sh")
    }
    fn uninstall(&self, ns: &Netns, args: &[&str]) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns.name, "bash"])
            .arg(script("uninstall.sh"))
            .args(args);
        self.env(&mut c);
        c.output().expect("run uninstall.sh")
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fake build output: small executables for every binary but `tuning`.
fn fake_build(d: &Dirs, tag: &str) {
    let b = d.p("build");
    std::fs::create_dir_all(&b).unwrap();
    for n in [
        "loopback",
        "bridge",
        "host-local",
        "portmap",
        "firewall",
        "cnm-shim",
    ] {
        let p = b.join(n);
        std::fs::write(&p, format!("#!/bin/sh\necho {n} {tag}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn install_is_atomic_idempotent_and_loud_about_missing_binaries() {
    let d = Dirs::new();
    fake_build(&d, "v1");
    let o = d.install();
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("WARNING: tuning was not built"),
        "no loud warning for the missing binary: {err}"
    );
    let bin = d.p("opt/cni/bin");
    for n in ["loopback", "bridge", "host-local", "portmap", "firewall"] {
        let m = std::fs::metadata(bin.join(n)).unwrap_or_else(|_| panic!("{n} not installed"));
        assert_eq!(m.permissions().mode() & 0o777, 0o755);
        assert_eq!(
            std::fs::read(bin.join(n)).unwrap(),
            std::fs::read(d.p("build").join(n)).unwrap()
        );
    }
    assert!(!bin.join("tuning").exists());
    assert!(d.p("usr/local/bin/cnm-shim").exists());
    let inode = std::fs::metadata(bin.join("bridge")).unwrap().ino();

    // Again: nothing changes.
    let o = d.install();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&format!("unchanged {}", bin.join("bridge").display())));
    assert_eq!(std::fs::metadata(bin.join("bridge")).unwrap().ino(), inode);

    // A new build replaces by rename (a new inode), never in place, and leaves no temp file.
    fake_build(&d, "v2");
    let o = d.install();
    assert!(o.status.success(), "{}", text(&o));
    assert_ne!(std::fs::metadata(bin.join("bridge")).unwrap().ino(), inode);
    assert!(
        String::from_utf8(std::fs::read(bin.join("bridge")).unwrap())
            .unwrap()
            .contains("v2")
    );
    let stray: Vec<_> = std::fs::read_dir(&bin)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "temp files left: {stray:?}");
    let manifest = std::fs::read_to_string(d.p("var/lib/cni-rs/installed")).unwrap();
    assert_eq!(manifest.lines().count(), 6, "{manifest}");
}

#[test]
fn uninstall_prints_refuses_without_tty_and_removes_only_ours() {
    let d = Dirs::new();
    fake_build(&d, "v1");
    assert!(d.install().status.success());
    let ns = Netns::new("scrns");

    // What the quick start and the suite leave: our conflist (dataDir in the test dir), its
    // bridge, host-local store and index, nftables tables, tuning and cnm-shim state, units.
    let conf_dir = d.p("etc/cni/net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let data = d.p("networks");
    let ours = serde_json::json!({
        "cniVersion": "1.0.0", "name": "scrnet",
        "plugins": [{"type": "bridge", "bridge": "scrbr0",
                     "ipam": {"type": "host-local", "dataDir": data,
                              "ranges": [[{"subnet": "10.250.0.0/24"}]]}}]
    });
    std::fs::write(conf_dir.join("10-scr.conflist"), ours.to_string()).unwrap();
    // Recorded as quickstart.sh records its file.
    std::fs::OpenOptions::new()
        .append(true)
        .open(d.p("var/lib/cni-rs/installed"))
        .and_then(|mut f| {
            use std::io::Write;
            writeln!(f, "{}", conf_dir.join("10-scr.conflist").display())
        })
        .unwrap();
    // A copy of a conf/ file installed by hand also counts as ours.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/20-containerd.conflist"),
        conf_dir.join("20-containerd.conflist"),
    )
    .unwrap();
    // Not ours: stays.
    std::fs::write(
        conf_dir.join("99-other.conflist"),
        r#"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"bridge","bridge":"otherbr0"}]}"#,
    )
    .unwrap();
    std::fs::write(d.p("opt/cni/bin/macvlan"), "foreign").unwrap();
    for sub in [
        "networks/scrnet",
        "networks/other",
        "run/cni/tuning",
        "var/lib/cnm-shim",
    ] {
        std::fs::create_dir_all(d.p(sub)).unwrap();
    }
    std::fs::write(d.p("networks/scrnet/10.250.0.2"), "x\r\neth0").unwrap();
    std::fs::write(d.p("networks/.scrnet.rsindex"), "").unwrap();
    std::fs::write(d.p("networks/.scrnet.rsboot"), "boot\n").unwrap();
    std::fs::create_dir_all(d.p("etc/systemd/system")).unwrap();
    for u in ["cnm-shim.socket", "cnm-shim.service"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../conf")
                .join(u),
            d.p("etc/systemd/system").join(u),
        )
        .unwrap();
    }
    for br in ["scrbr0", "otherbr0", "cni0"] {
        ns.ip(&["link", "add", br, "type", "bridge"]);
    }
    for t in [
        "inet cni_rs",
        "bridge cni_rs",
        "ip cni_rs_extra",
        "inet cnm_cnm",
        "inet keepme",
    ] {
        let mut v = vec!["nft", "add", "table"];
        v.extend(t.split(' '));
        ns.sh(&v);
    }

    // No tty, no --yes: prints the plan and refuses; nothing removed.
    let o = d.uninstall(&ns, &[]);
    assert!(!o.status.success(), "must refuse: {}", text(&o));
    let t = text(&o);
    for want in [
        "opt/cni/bin/bridge",
        "usr/local/bin/cnm-shim",
        "10-scr.conflist",
        "20-containerd.conflist",
        "cnm-shim.socket",
        "scrbr0",
        "cni0",
        "inet cni_rs",
        "bridge cni_rs",
        "ip cni_rs_extra",
        "inet cnm_cnm",
        "networks/scrnet",
        ".scrnet.rsindex",
        "run/cni/tuning",
        "var/lib/cnm-shim",
        "--yes",
    ] {
        assert!(t.contains(want), "plan does not mention {want}:\n{t}");
    }
    assert!(!t.contains("99-other") && !t.contains("otherbr0") && !t.contains("keepme"));
    assert!(d.p("opt/cni/bin/bridge").exists());
    assert!(ns.link("scrbr0").is_some());

    let o = d.uninstall(&ns, &["--yes"]);
    assert!(o.status.success(), "{}", text(&o));
    for gone in [
        "opt/cni/bin/bridge",
        "opt/cni/bin/loopback",
        "usr/local/bin/cnm-shim",
        "etc/cni/net.d/10-scr.conflist",
        "etc/cni/net.d/20-containerd.conflist",
        "etc/systemd/system/cnm-shim.socket",
        "etc/systemd/system/cnm-shim.service",
        "networks/scrnet",
        "networks/.scrnet.rsindex",
        "networks/.scrnet.rsboot",
        "run/cni/tuning",
        "var/lib/cnm-shim",
        "var/lib/cni-rs",
    ] {
        assert!(!d.p(gone).exists(), "{gone} survived uninstall");
    }
    for kept in [
        "opt/cni/bin/macvlan",
        "etc/cni/net.d/99-other.conflist",
        "networks/other",
    ] {
        assert!(d.p(kept).exists(), "{kept} is not ours but was removed");
    }
    assert!(ns.link("scrbr0").is_none() && ns.link("cni0").is_none());
    assert!(ns.link("otherbr0").is_some());
    let tables = ns.sh(&["nft", "list", "tables"]);
    assert_eq!(tables.trim(), "table inet keepme", "{tables}");

    // Nothing left: a second run has nothing to do and needs no confirmation.
    let o = d.uninstall(&ns, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("nothing"));
}

/// `check_release_binaries <dir>` (scripts/lib.sh, run by `build_release`): exit status and
/// output.
fn check_release(dir: &Path) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(r#"source "$0" && check_release_binaries "$1""#)
        .arg(script("lib.sh"))
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run check_release_binaries")
}

/// The test-only switches (cnm-shim's CNM_SHIM_CRASH_AT, bridge's CNI_BRIDGE_SYNC_DELETE) are
/// compiled into debug builds only; the check that `build_release` (so install.sh) runs finds
/// them in the debug binaries the tests use, and passes binaries without them.
#[test]
fn hs_release_check_finds_test_switches_in_debug_binaries_only() {
    let d = TempDir::new("hsrel");
    for n in ["cnm-shim", "bridge"] {
        std::fs::copy(cni_tests::bin(n), d.path().join(n)).unwrap();
    }
    let o = check_release(d.path());
    let t = text(&o);
    assert!(!o.status.success(), "debug binaries passed: {t}");
    for (bin, switch) in [
        ("cnm-shim", "CNM_SHIM_CRASH_AT"),
        ("bridge", "CNI_BRIDGE_SYNC_DELETE"),
    ] {
        assert!(
            t.contains(&format!(
                "{}/{bin} contains the test-only switch {switch}",
                d.str()
            )),
            "{t}"
        );
    }
    // Binaries without the names pass; non-executables (cargo's .d files) are not looked at.
    for n in ["cnm-shim", "bridge"] {
        std::fs::write(d.path().join(n), b"\x7fELF clean").unwrap();
    }
    std::fs::write(d.path().join("bridge.d"), b"CNI_BRIDGE_SYNC_DELETE").unwrap();
    let o = check_release(d.path());
    assert!(o.status.success(), "{}", text(&o));
}
