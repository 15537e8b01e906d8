//! etcd with client-certificate authentication (`--client-cert-auth`): the agent connects with
//! `--etcd-cacert/--etcd-cert/--etcd-key`, and is refused without a client certificate. The CA
//! and certificates are made in the test with the openssl CLI. Also checks `cnm-agent status`
//! and `/metrics` on a TLS agent.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cni_tests::{bin, Daemon, Netns, TempDir};

use crate::harness::{wait_for, NET};

const PORT: u16 = 23795;
const PEER: u16 = 23805;

fn url() -> String {
    format!("https://127.0.0.1:{PORT}")
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl CLI");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// ca.crt, server.crt/key (SAN 127.0.0.1), client.crt/key (CN=h1, clientAuth).
fn make_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=cnm-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    for (name, cn, ext) in [
        ("server", "etcd", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"),
        ("client", "h1", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (key, csr, crt, extf) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        let subj = format!("/CN={cn}");
        let mut req = vec!["req"];
        req.extend_from_slice(&ec);
        req.extend_from_slice(&["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", &crt, "-days", "2", "-extfile", &extf,
            ],
        );
    }
}

fn agent(
    ns: &Netns,
    host: &str,
    run: &TempDir,
    state: &TempDir,
    log: &Path,
    tls: &[String],
) -> Daemon {
    let f = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name])
        .arg(bin("cnm-agent"))
        .args(["--etcd", &url(), "--host", host, "--underlay", "ul0"])
        .args(["--state-dir", state.str(), "--run-dir", run.str()])
        .args(["--block-ttl", "4", "--resync", "2", "--no-guard"])
        .args(["--network", "n1=10.253.0.0/16,block=26,vni=4100"])
        .args(["--metrics-listen", "127.0.0.1:9477"])
        .args(tls)
        .stdout(Stdio::from(f.try_clone().unwrap()))
        .stderr(Stdio::from(f));
    Daemon::spawn(cmd).expect("spawn cnm-agent")
}

#[test]
fn etcd_client_cert_auth() {
    let pki = TempDir::new("mhpki");
    make_pki(pki.path());
    let p = |f: &str| pki.path().join(f).to_string_lossy().into_owned();
    let ns = Netns::new("mhtls");
    ns.ip(&["link", "set", "lo", "up"]);
    // The underlay: one end of a veth pair (no dummy module on every kernel).
    ns.ip(&["link", "add", "ul0", "type", "veth", "peer", "name", "ul0p"]);
    ns.ip(&["link", "set", "ul0p", "up"]);
    ns.ip(&["addr", "add", "192.168.79.1/24", "dev", "ul0"]);
    ns.ip(&["link", "set", "ul0", "up"]);
    let data = TempDir::new("mhetcdtls");
    let logs = TempDir::new("mhtlslogs");
    let elog = std::fs::File::create(logs.path().join("etcd.log")).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, "etcd", "--name", "e"])
        .args(["--data-dir", data.str()])
        .args([
            "--listen-client-urls",
            &url(),
            "--advertise-client-urls",
            &url(),
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{PEER}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{PEER}"),
        ])
        .args(["--initial-cluster", &format!("e=http://127.0.0.1:{PEER}")])
        .args(["--client-cert-auth", "--trusted-ca-file", &p("ca.crt")])
        .args([
            "--cert-file",
            &p("server.crt"),
            "--key-file",
            &p("server.key"),
        ])
        .stdout(Stdio::from(elog.try_clone().unwrap()))
        .stderr(Stdio::from(elog));
    let _etcd = Daemon::spawn(cmd).expect("spawn etcd");
    let etcdctl = |with_cert: bool, args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns.name, "etcdctl", "--endpoints", &url()])
            .args(["--cacert", &p("ca.crt"), "--dial-timeout", "2s"]);
        if with_cert {
            c.args(["--cert", &p("client.crt"), "--key", &p("client.key")]);
        }
        c.args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .expect("etcdctl")
    };
    wait_for("etcd (TLS) healthy", Duration::from_secs(15), || {
        etcdctl(true, &["endpoint", "health"]).status.success()
    });
    // The server really demands a client certificate.
    assert!(!etcdctl(false, &["get", "/x"]).status.success());

    // Without a client certificate the agent is refused: no key, no blocks, a clear log.
    let (run2, st2) = (TempDir::new("mhrun"), TempDir::new("mhstate"));
    let log2 = logs.path().join("h2.log");
    let a2 = agent(
        &ns,
        "h2",
        &run2,
        &st2,
        &log2,
        &["--etcd-cacert".into(), p("ca.crt")],
    );
    std::thread::sleep(Duration::from_secs(4));
    let text = std::fs::read_to_string(&log2).unwrap();
    assert!(text.contains("waiting for etcd"), "{text}");
    assert!(!run2.path().join(NET).join("blocks.json").exists());
    drop(a2);
    let keys = etcdctl(true, &["get", "--prefix", "/cnm/", "--keys-only"]);
    assert!(String::from_utf8_lossy(&keys.stdout).trim().is_empty());

    // TLS options with an http:// endpoint: refused at start, naming the fix.
    let o = Command::new(bin("cnm-agent"))
        .args([
            "--etcd",
            "http://127.0.0.1:1",
            "--host",
            "x",
            "--underlay",
            "lo",
        ])
        .args(["--etcd-cacert", &p("ca.crt"), "--network", "n1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("need https:// endpoints"), "{err}");

    // etcd RBAC with certificate identities (docs/cluster-ops.md recipe): the CN is the user;
    // user h1 may only touch /cnm/v1/nets/.
    for args in [
        &["user", "add", "root", "--new-user-password", "rootpw"][..],
        &["role", "add", "cnm-host"],
        &[
            "role",
            "grant-permission",
            "cnm-host",
            "--prefix=true",
            "readwrite",
            "/cnm/v1/nets/",
        ],
        &["user", "add", "h1", "--no-password"],
        &["user", "grant-role", "h1", "cnm-host"],
        &["auth", "enable"],
    ] {
        let o = etcdctl(true, args);
        assert!(
            o.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let denied = etcdctl(true, &["put", "/elsewhere", "x"]);
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("permission denied"),
        "{denied:?}"
    );

    // With the client certificate (CN h1): a block is leased and published.
    let (run, st) = (TempDir::new("mhrun"), TempDir::new("mhstate"));
    let log = logs.path().join("h1.log");
    let tls = [
        "--etcd-cacert",
        &p("ca.crt"),
        "--etcd-cert",
        &p("client.crt"),
        "--etcd-key",
        &p("client.key"),
    ];
    let tls: Vec<String> = tls.iter().map(|s| s.to_string()).collect();
    let a1 = agent(&ns, "h1", &run, &st, &log, &tls);
    let bpath = run.path().join(NET).join("blocks.json");
    wait_for("h1's block over TLS", Duration::from_secs(15), || {
        std::fs::read(&bpath)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| {
                v["state"] == "ok" && v["blocks"].as_array().is_some_and(|a| a.len() == 1)
            })
    });
    let got = etcdctl(true, &["get", "--prefix", "/cnm/v1/nets/n1/blocks/"]);
    assert!(
        String::from_utf8_lossy(&got.stdout).contains("\"host\":\"h1\""),
        "{got:?}"
    );

    // status and metrics of the TLS agent (leader and version come with the first resync).
    wait_for(
        "status with the etcd leader",
        Duration::from_secs(6),
        || {
            let o = Command::new(bin("cnm-agent"))
                .args(["status", "--run-dir", run.str()])
                .output()
                .unwrap();
            let t = String::from_utf8_lossy(&o.stdout);
            o.status.success() && t.contains("(tls): reachable") && !t.contains("leader -")
        },
    );
    let o = Command::new(bin("cnm-agent"))
        .args(["status", "--run-dir", run.str()])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    eprintln!("{t}");
    assert!(
        t.contains("host h1") && t.contains("state OK") && t.contains("used    0  free   62"),
        "{t}"
    );
    let m = crate::harness::http_get(ns.path_str(), 9477, "/metrics");
    assert_eq!(crate::harness::sample(&m, "cnm_agent_blocks_owned"), 1.0);
    assert_eq!(crate::harness::sample(&m, "cnm_agent_addresses_free"), 62.0);
    assert_eq!(crate::harness::sample(&m, "cnm_agent_etcd_reachable"), 1.0);
    assert!(crate::harness::sample(&m, "cnm_agent_reconcile_total") >= 1.0);
    assert!(crate::harness::sample(&m, "cnm_agent_lease_ttl_seconds") > 0.0);
    assert!(m.contains("# TYPE cnm_agent_etcd_errors_total counter"));

    // A clean leave under RBAC: keys deleted and the lease revoked without a permission error.
    drop(a1);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("released block") && !text.contains("revoke lease"),
        "{text}"
    );
    let left = etcdctl(
        true,
        &["get", "--prefix", "/cnm/v1/nets/n1/blocks/", "--keys-only"],
    );
    assert!(left.status.success() && String::from_utf8_lossy(&left.stdout).trim().is_empty());
}
