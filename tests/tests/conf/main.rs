//! Every file in conf/ is used here, so none can rot: each network configuration is run through
//! a runtime that calls the plugins exactly as libcni does (`cni_tests::libcni`) inside a
//! throwaway host netns (two containers, ping, port mapping, CHECK, STATUS, GC, DEL, nothing
//! left), the other files are checked against what they describe, and a file no test covers
//! fails the test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cni_tests::libcni::{self, cri, Cni, GcArgs, GcAttachment, NetworkConfigList, RuntimeConf};
use cni_tests::suite::{suite_plugin_dir, tcp_delivers};
use cni_tests::{
    bin, host_local_reservations, poll_until, sh, Netns, TempDir, DETACHED_DELETE_GRACE,
};
use serde_json::{json, Value};

fn conf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf")
}

fn conf_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(conf_dir())
        .expect("read conf/")
        .map(|e| e.expect("dir entry").path())
        .collect();
    v.sort();
    v
}

fn is_network(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("conflist" | "conf" | "json")
    )
}

/// Files checked by their own test below (everything else must be a network config).
const CHECKED_HERE: &[&str] = &[
    "README.md",
    "docker-cnm.md",
    "cnm-shim.socket",
    "cnm-shim.service",
];

#[test]
fn every_file_in_conf_is_covered() {
    let mut uncovered = Vec::new();
    for f in conf_files() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if !is_network(&f) && !CHECKED_HERE.contains(&name.as_str()) {
            uncovered.push(name);
        }
    }
    assert!(
        uncovered.is_empty(),
        "conf/ files no test covers: {uncovered:?}. A network config must end in .conflist/.conf/.json \
         (then every_network_config_works runs it); anything else needs a check in tests/tests/conf/main.rs \
         and an entry in CHECKED_HERE"
    );
    assert!(
        conf_files().iter().filter(|f| is_network(f)).count() >= 4,
        "the network configs went missing"
    );
}

#[test]
fn readme_describes_every_file() {
    let readme = std::fs::read_to_string(conf_dir().join("README.md")).unwrap();
    for f in conf_files() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name != "README.md" {
            assert!(
                readme.contains(&format!("`{name}`")),
                "conf/README.md does not describe {name}"
            );
        }
    }
}

/// Every `-o` key of the Docker examples is accepted by cnm-shim today: its option parser, or
/// the CNI binding (`cni.network`).
#[test]
fn docker_examples_use_only_options_cnm_shim_accepts() {
    let md = std::fs::read_to_string(conf_dir().join("docker-cnm.md")).unwrap();
    let src = |f: &str| {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../cnm-shim/src")
                .join(f),
        )
        .unwrap()
        .to_ascii_lowercase()
    };
    let parser = src("netopts.rs") + &src("bind.rs");
    let now = md.as_str();
    let mut n = 0;
    for cmd in now.lines().filter(|l| l.contains("docker network create")) {
        assert!(cmd.contains("-d cnm"), "not a cnm network: {cmd}");
    }
    for w in now.split_whitespace().collect::<Vec<_>>().windows(2) {
        if w[0] == "-o" {
            let key = w[1].split('=').next().unwrap().to_ascii_lowercase();
            assert!(
                parser.contains(&format!("\"{key}\"")),
                "docker-cnm.md uses -o {key}, which cnm-shim does not accept"
            );
            n += 1;
        }
    }
    assert!(n >= 9, "the examples lost their -o options");
    assert!(
        now.contains("-o cni.network="),
        "the two-runtimes binding example is gone"
    );
}

/// The systemd units are valid (systemd-analyze verify, with ExecStart pointed at the built
/// binary) and agree on the plugin name: socket `<name>.sock` <-> `--name <name>`.
#[test]
fn systemd_units_verify_and_agree() {
    let dir = TempDir::new("cfunits");
    let shim = bin("cnm-shim");
    let service = std::fs::read_to_string(conf_dir().join("cnm-shim.service")).unwrap();
    let socket = std::fs::read_to_string(conf_dir().join("cnm-shim.socket")).unwrap();
    let exec = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let name = exec
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[0] == "--name")
        .map(|w| w[1].to_string())
        .expect("--name in ExecStart");
    assert!(
        socket.contains(&format!("ListenStream=/run/docker/plugins/{name}.sock")),
        "cnm-shim.socket must listen on /run/docker/plugins/{name}.sock"
    );
    let exe = exec.split_whitespace().next().unwrap();
    std::fs::write(
        dir.path().join("cnm-shim.service"),
        service.replace(exe, shim.to_str().unwrap()),
    )
    .unwrap();
    std::fs::write(dir.path().join("cnm-shim.socket"), &socket).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("cnm-shim.socket"))
        .arg(dir.path().join("cnm-shim.service"))
        .output()
        .expect("systemd-analyze (package systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    // Only complaints about our two units count (the host's own units may be odd).
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("cnm-shim")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Network configs.
// ---------------------------------------------------------------------------------------------

/// The file as the test runs it: only what would touch the real host is redirected (the
/// host-local dataDir into the test's directory); plugin list and keys stay as written. Bridges,
/// nftables and sysctls stay in the throwaway host netns anyway.
fn rewritten(src: &Path, data_dir: &Path, out_dir: &Path) -> PathBuf {
    let mut v: Value = serde_json::from_slice(&std::fs::read(src).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let plugins: Vec<&mut Value> = match v.get("plugins").is_some() {
        true => v["plugins"].as_array_mut().unwrap().iter_mut().collect(),
        false => vec![&mut v],
    };
    for p in plugins {
        if p["ipam"]["type"] == "host-local" {
            p["ipam"]["dataDir"] = json!(data_dir);
        }
    }
    let dst = out_dir.join(src.file_name().unwrap());
    std::fs::write(&dst, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    dst
}

fn result_ip4(r: &Value) -> String {
    r["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["address"].as_str())
        .find(|a| !a.contains(':'))
        .map(|a| a.split('/').next().unwrap().to_string())
        .unwrap_or_else(|| panic!("no IPv4 address in {r}"))
}

/// The gateway (the bridge's address) of the IPv4 config of a result.
fn result_gw4(r: &Value) -> String {
    r["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| !i["address"].as_str().unwrap_or(":").contains(':'))
        .find_map(|i| i["gateway"].as_str())
        .unwrap_or_else(|| panic!("no IPv4 gateway in {r}"))
        .to_string()
}

struct Ctr {
    ns: Netns,
    rt: RuntimeConf,
    /// Set when the container was made the CRI way (loopback network first).
    pod: Option<cri::Pod>,
    result: Value,
}

fn has_plugin(list: &NetworkConfigList, t: &str) -> bool {
    list.plugins.iter().any(|p| p.type_ == t)
}

const HOST_PORT: u16 = 18080;

fn add(cni: &Cni, list: &NetworkConfigList, crio: bool, ports: bool, tag: &str) -> Ctr {
    let mappings = if ports {
        vec![json!({"hostPort": HOST_PORT, "containerPort": 80, "protocol": "tcp", "hostIP": ""})]
    } else {
        vec![]
    };
    if crio {
        // containerd CRI: netns /var/run/netns/cni-<uuid>, loopback network first.
        let ns = Netns::named(&format!("cni-{}", cri::uuid()));
        let mut pod = cri::pod(tag, &format!("/var/run/netns/{}", ns.name));
        pod.port_mappings = mappings;
        let result = cri::setup(cni, list, &pod).unwrap_or_else(|e| panic!("CRI setup {tag}: {e}"));
        let rt = pod.runtime_conf("eth0");
        let lo = ns.ip_json(&["addr", "show", "dev", "lo"]);
        assert!(
            lo.to_string().contains("127.0.0.1"),
            "loopback plugin did not set up lo: {lo}"
        );
        return Ctr {
            ns,
            rt,
            pod: Some(pod),
            result,
        };
    }
    let ns = Netns::new("cfc");
    let mut caps = serde_json::Map::new();
    caps.insert("portMappings".into(), Value::Array(mappings));
    let rt = RuntimeConf {
        container_id: format!("cnirs-conf-{}-{tag}", ns.name),
        netns: ns.path_str().into(),
        ifname: "eth0".into(),
        args: vec![],
        capability_args: caps,
    };
    let result = cni
        .add_network_list(list, &rt)
        .unwrap_or_else(|e| panic!("ADD {tag}: {e}"));
    Ctr {
        ns,
        rt,
        pod: None,
        result,
    }
}

fn del(cni: &Cni, list: &NetworkConfigList, c: &Ctr) {
    match &c.pod {
        Some(pod) => cri::remove(cni, list, pod),
        None => cni.del_network_list(list, &c.rt),
    }
    .unwrap_or_else(|e| panic!("DEL {}: {e}", c.rt.container_id));
}

fn host_links(host: &Netns) -> BTreeSet<String> {
    host.ip_json(&["-d", "link", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["linkinfo"]["info_kind"] == "veth")
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

fn exercise(file: &Path) {
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let host = Netns::new("cfh");
    let data = TempDir::new("cfdata");
    let cache = TempDir::new("cfcache");
    let netdir = TempDir::new("cfnet");
    let plugins = suite_plugin_dir();
    let path = rewritten(file, data.path(), netdir.path());
    let list = libcni::load_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let cni = Cni::new(vec![plugins.0.path().to_path_buf()], cache.path()).in_netns(&host.path);
    // Every plugin exists and speaks the file's version (libcni's ValidateNetworkList).
    cni.validate_network_list(&list)
        .unwrap_or_else(|e| panic!("{name}: {e}"));

    let crio = name.contains("containerd");
    let ports = has_plugin(&list, "portmap");
    let a = add(&cni, &list, crio, false, "a");
    let b = add(&cni, &list, crio, ports, "b");
    let (ip_a, ip_b) = (result_ip4(&a.result), result_ip4(&b.result));
    for (c, ip) in [(&a, &ip_a), (&b, &ip_b)] {
        assert!(
            c.ns.addrs("eth0")
                .iter()
                .any(|x| x.starts_with(&format!("{ip}/"))),
            "{name}: {ip} not on eth0 of {}",
            c.rt.container_id
        );
    }
    assert!(a.ns.ping(&ip_b), "{name}: a cannot ping b ({ip_b})");
    assert!(b.ns.ping(&ip_a), "{name}: b cannot ping a ({ip_a})");
    if ports {
        // The host reaches b's port 80 through the mapping on the bridge's address.
        let gw = result_gw4(&b.result);
        assert!(
            tcp_delivers(&b.ns, 80, &host, &gw, HOST_PORT),
            "{name}: {gw}:{HOST_PORT} does not reach b:80"
        );
    }
    if libcni::version::at_least(&list.cni_version, "0.4.0").unwrap() {
        for c in [&a, &b] {
            cni.check_network_list(&list, &c.rt)
                .unwrap_or_else(|e| panic!("{name}: CHECK {}: {e}", c.rt.container_id));
        }
    }
    cni.status_network_list(&list)
        .unwrap_or_else(|e| panic!("{name}: STATUS: {e}"));

    // GC with both attachments valid keeps them.
    let valid: Vec<GcAttachment> = [&a, &b]
        .iter()
        .map(|c| GcAttachment {
            container_id: c.rt.container_id.clone(),
            ifname: c.rt.ifname.clone(),
        })
        .collect();
    cni.gc_network_list(&list, GcArgs::List(&valid))
        .unwrap_or_else(|e| panic!("{name}: GC: {e}"));
    assert!(a.ns.ping(&ip_b), "{name}: GC with both valid broke a -> b");
    let n_ips = |r: &Value| r["ips"].as_array().map_or(0, |a| a.len());
    assert_eq!(
        host_local_reservations(data.path(), &list.name).len(),
        n_ips(&a.result) + n_ips(&b.result),
        "{name}: GC with both attachments valid released something"
    );

    // a leaves by DEL; b is garbage-collected.
    del(&cni, &list, &a);
    assert!(!host_local_reservations(data.path(), &list.name).contains(&ip_a));
    if libcni::version::at_least(&list.cni_version, "1.1.0").unwrap() {
        // The runtime lost b's cache entry: only the plugins' own GC can find b's state.
        std::fs::remove_file(cni.cache_file(&list.name, &b.rt).unwrap()).unwrap();
        cni.gc_network_list(&list, GcArgs::NilList)
            .unwrap_or_else(|e| panic!("{name}: GC: {e}"));
        assert!(
            host_local_reservations(data.path(), &list.name).is_empty(),
            "{name}: GC left reservations"
        );
        assert!(
            !cni_tests::nft_set_elements(&host.nft_ruleset()).contains(&ip_b),
            "{name}: GC left nftables elements of {ip_b}"
        );
        // What GC cannot know without a prevResult (b's veth, stand-ins' state) goes by DEL.
        del(&cni, &list, &b);
    } else {
        // Nothing valid: libcni DELs b from its cache.
        cni.gc_network_list(&list, GcArgs::NilList)
            .unwrap_or_else(|e| panic!("{name}: GC: {e}"));
        if let Some(pod) = &b.pod {
            // CRI also removes the loopback attachment of the pod.
            let lo = libcni::conf_list_from_bytes(cri::LOOPBACK_CONFLIST.as_bytes()).unwrap();
            cni.del_network_list(&lo, &pod.runtime_conf("lo")).unwrap();
        }
    }
    assert!(
        b.ns.link_gone_after_del("eth0"),
        "{name}: eth0 of b survived GC ({DETACHED_DELETE_GRACE:?} after)"
    );

    // Nothing left: reservations, cache entries, veths, nftables/iptables state naming the IPs.
    assert!(
        host_local_reservations(data.path(), &list.name).is_empty(),
        "{name}: reservations left"
    );
    assert!(
        cni.cached_attachments("").is_empty(),
        "{name}: cache entries left"
    );
    // DEL deletes veths in a detached process: give the kernel a moment.
    assert!(
        poll_until(DETACHED_DELETE_GRACE, || host_links(&host).is_empty()),
        "{name}: veths left {DETACHED_DELETE_GRACE:?} after DEL: {:?}",
        host_links(&host)
    );
    let rules = host.sh(&["nft", "list", "ruleset"]);
    for ip in [&ip_a, &ip_b] {
        assert!(
            !rules.contains(ip.as_str()),
            "{name}: firewall state of {ip} left:\n{rules}"
        );
    }
    for c in [&a, &b] {
        if let Ok(rd) = std::fs::read_dir("/run/cni/tuning") {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                assert!(
                    !n.contains(&c.rt.container_id),
                    "{name}: tuning state {n} left"
                );
            }
        }
    }
    drop(plugins);
    let _ = sh(&["true"]);
}

#[test]
fn every_network_config_works() {
    let files: Vec<PathBuf> = conf_files().into_iter().filter(|f| is_network(f)).collect();
    // One thread per file: each has its own throwaway host netns, data and cache dirs.
    let handles: Vec<_> = files
        .into_iter()
        .map(|f| {
            std::thread::spawn(move || {
                exercise(&f);
                f
            })
        })
        .collect();
    let mut failed = Vec::new();
    for h in handles {
        if let Err(e) = h.join() {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(msg);
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
