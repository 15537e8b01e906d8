//! cnm-shim against a real dockerd 20.10 and the real `bridge` and `host-local` binaries.
//! Each test runs its own dockerd + shim inside a private network namespace (see `common`).
//! Set CNM_KEEP_LOGS=1 to keep the daemon logs of a failed run under /tmp/<name>-logs.

mod checks;
mod common;

use common::{World, IMAGE};

/// Address prefixes of every network these tests create: none may be left in nftables.
const TEST_ADDRS: &[&str] = &["10.213.", "fd00:213"];
use serde_json::Value;

/// What docker says about container `c` on network `net`: (ip/len, gateway, mac).
fn docker_view(w: &World, c: &str, net: &str) -> (String, String, String) {
    let v = w.inspect(c);
    let n = &v["NetworkSettings"]["Networks"][net];
    (
        format!("{}/{}", n["IPAddress"].as_str().unwrap(), n["IPPrefixLen"]),
        n["Gateway"].as_str().unwrap_or("").to_string(),
        n["MacAddress"].as_str().unwrap_or("").to_string(),
    )
}

/// The interface of `c` carrying `ip` (without prefix): (name, "ip/len" list, mac).
fn real_iface(w: &World, c: &str, ip: &str) -> (String, Vec<String>, String) {
    let (ok, out) = w.exec(c, &["ip", "-o", "addr", "show"]);
    assert!(ok);
    let line = out
        .lines()
        .find(|l| l.contains(&format!(" {ip}/")))
        .unwrap_or_else(|| panic!("{c} has no interface with {ip}:\n{out}"));
    let dev = line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    let addrs: Vec<String> = out
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(&dev))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            it.position(|t| t == "inet" || t == "inet6")?;
            it.next().map(str::to_string)
        })
        .collect();
    let (_, mac) = w.exec(c, &["cat", &format!("/sys/class/net/{dev}/address")]);
    (dev, addrs, mac.trim().to_string())
}

/// The IPv4 default gateway of `c` ("" without a default route). busybox `ip route` ignores
/// the `default` selector, so the lines are filtered here.
fn default_gw(w: &World, c: &str) -> String {
    let (_, out) = w.exec(c, &["ip", "route"]);
    out.lines()
        .find(|l| l.starts_with("default via "))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("")
        .to_string()
}

/// docker inspect agrees with the interface inside the container.
fn check_inspect_matches(w: &World, c: &str, net: &str) -> String {
    let (cidr, gw, mac) = docker_view(w, c, net);
    let ip = cidr.split('/').next().unwrap().to_string();
    let (dev, addrs, real_mac) = real_iface(w, c, &ip);
    assert!(
        addrs.contains(&cidr),
        "{c}/{dev}: docker says {cidr}, interface has {addrs:?}"
    );
    assert_eq!(
        mac, real_mac,
        "{c}/{dev}: MAC in docker inspect vs interface"
    );
    if dev == "eth0" {
        assert_eq!(
            gw,
            default_gw(w, c),
            "{c}: gateway in docker inspect vs default route"
        );
    }
    assert!(!gw.is_empty(), "{c}: no gateway in docker inspect");
    ip
}

fn run_sleeper(w: &World, name: &str, net: &str, extra: &[&str]) {
    let mut a = vec!["run", "-d", "--name", name, "--network", net];
    a.extend_from_slice(extra);
    a.extend_from_slice(&[IMAGE, "sleep", "600"]);
    w.docker_ok(&a);
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Nothing of the shim's is left: links, reservations, state, firewall.
/// The host-local store holds exactly `want` (DeleteEndpoint finishes off the request path,
/// so give it a moment).
fn assert_store(w: &World, want: Vec<String>) {
    eventually(|| w.store() == want);
    assert_eq!(w.store(), want, "host-local store\n{}", w.shim_log_tail(30));
}

/// Polls `f` for up to 3 s.
fn eventually(f: impl Fn() -> bool) {
    eventually_for(3, f)
}

/// Polls `f` for up to `secs` seconds, until it holds (the caller asserts afterwards).
fn eventually_for(secs: u64, f: impl Fn() -> bool) {
    cni_tests::poll_until(std::time::Duration::from_secs(secs), f);
}

/// `docker <args>` while a shim started with `CNM_SHIM_CRASH_AT=<point>` crashes there; the
/// shim is started again (within docker's retry window) and docker's answer logged.
fn crash_during(w: &mut World, point: &str, args: &[&str]) {
    w.kill9_shim();
    w.start_shim_env(&[("CNM_SHIM_CRASH_AT", point)]);
    let docker = w.docker_bg(args);
    assert!(
        w.wait_shim_exit(std::time::Duration::from_secs(30)),
        "{point}: the shim did not crash"
    );
    w.start_shim();
    let out = docker.join().unwrap();
    eprintln!(
        "{point}: docker {} -> {:?} {}",
        args[0],
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn create_net(w: &World, name: &str, extra: &[&str]) {
    w.docker_ok(&w.net_create_args(name, extra));
}

#[test]
fn lifecycle_connectivity_and_cleanup() {
    common::require();
    let w = World::new("l");
    create_net(&w, "n1", &["--subnet", "10.213.1.0/24"]);
    create_net(&w, "n2", &["--subnet", "10.213.2.0/24"]);
    let ls = w.docker_ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(
        ls.contains(&format!("n1 {}", w.name)) && ls.contains(&format!("n2 {}", w.name)),
        "{ls}"
    );
    let n1 = w.inspect("n1");
    assert_eq!(n1["Driver"], Value::from(w.name.clone()));
    assert_eq!(n1["IPAM"]["Config"][0]["Subnet"], "10.213.1.0/24");

    run_sleeper(&w, "c1", "n1", &[]);
    run_sleeper(&w, "c2", "n1", &[]);
    run_sleeper(&w, "c3", "n2", &[]);
    let ip1 = check_inspect_matches(&w, "c1", "n1");
    let ip2 = check_inspect_matches(&w, "c2", "n1");
    let ip3 = check_inspect_matches(&w, "c3", "n2");
    assert_eq!(docker_view(&w, "c1", "n1").1, "10.213.1.1");
    assert_store(&w, sorted(vec![ip1.clone(), ip2.clone(), ip3.clone()]));

    // Same network: by IP and by name (docker's embedded DNS).
    assert!(
        w.ping("c1", &ip2) && w.ping("c2", &ip1),
        "{}",
        w.shim_log_tail(30)
    );
    assert!(w.ping("c1", "c2") && w.ping("c2", "c1"));
    assert!(w.ping("c1", "10.213.1.1"), "gateway unreachable");
    // Different networks: isolated.
    assert!(!w.ping("c1", &ip3), "c1 reached c3 on another network");
    assert!(!w.ping("c3", &ip1), "c3 reached c1 on another network");

    // connect / disconnect a running container.
    w.docker_ok(&["network", "connect", "n2", "c1"]);
    let ip1b = check_inspect_matches(&w, "c1", "n2");
    assert_eq!(real_iface(&w, "c1", &ip1b).0, "eth1");
    assert!(w.ping("c1", &ip3) && w.ping("c3", "c1"));
    assert_store(
        &w,
        sorted(vec![ip1.clone(), ip1b.clone(), ip2.clone(), ip3.clone()]),
    );
    w.docker_ok(&["network", "disconnect", "n2", "c1"]);
    let (_, out) = w.exec("c1", &["ip", "-o", "link"]);
    assert!(!out.contains("eth1"), "{out}");
    assert!(!w.ping("c1", &ip3));
    assert_store(&w, sorted(vec![ip1.clone(), ip2.clone(), ip3.clone()]));

    // stop / start: a new endpoint each time.
    w.docker_ok(&["stop", "-t", "1", "c2"]);
    assert_store(&w, sorted(vec![ip1.clone(), ip3.clone()]));
    w.docker_ok(&["start", "c2"]);
    let ip2b = check_inspect_matches(&w, "c2", "n1");
    assert!(w.ping("c1", "c2") && w.ping("c2", &ip1));
    assert_store(&w, sorted(vec![ip1.clone(), ip2b, ip3.clone()]));

    // A network in use cannot be removed; errors reach the CLI readably.
    let e = w.docker_err(&["network", "rm", "n1"]);
    assert!(e.contains("active endpoints"), "{e}");
    let e = w.docker_err(&w.net_create_args("dup", &["--subnet", "10.213.1.0/25"]));
    assert!(
        e.contains("10.213.1.0/25") && e.contains("cnm network"),
        "{e}"
    );
    let e =
        w.docker_err(&w.net_create_args("bad", &["--subnet", "10.213.9.0/24", "-o", "bogus=1"]));
    assert!(e.contains("unknown network option \"bogus\""), "{e}");

    w.docker_ok(&["rm", "-f", "c1", "c2", "c3"]);
    assert_store(&w, vec![]);
    w.docker_ok(&["network", "rm", "n1", "n2"]);
    checks::check_all_clean(&w, TEST_ADDRS);

    // The driver with docker's own IPAM: host-local still records the endpoint (the bridge's
    // IPAM call), and releases it with the endpoint, since docker's releases go elsewhere.
    w.docker_ok(&[
        "network",
        "create",
        "-d",
        &w.name,
        "--subnet",
        "10.213.8.0/24",
        "nd",
    ]);
    run_sleeper(&w, "d1", "nd", &[]);
    let ipd = check_inspect_matches(&w, "d1", "nd");
    assert!(w.ping("d1", "10.213.8.1"));
    assert_store(&w, vec![ipd]);
    w.docker_ok(&["rm", "-f", "d1"]);
    assert_store(&w, vec![]);
    w.docker_ok(&["network", "rm", "nd"]);
    checks::check_all_clean(&w, TEST_ADDRS);
}

/// A network namespace "outside" the docker host, linked to it by a veth:
/// host side 10.213.100.1/24 (`cnmout0`), outside side 10.213.100.2/24.
fn outside(w: &World) -> cni_tests::Netns {
    let o = cni_tests::Netns::new("cnmo");
    w.ns.ip(&[
        "link", "add", "cnmout0", "type", "veth", "peer", "name", "eth0", "netns", &o.name,
    ]);
    w.ns.ip(&["addr", "add", "10.213.100.1/24", "dev", "cnmout0"]);
    w.ns.ip(&["link", "set", "cnmout0", "up"]);
    o.ip(&["addr", "add", "10.213.100.2/24", "dev", "eth0"]);
    o.ip(&["link", "set", "eth0", "up"]);
    o
}

fn wget(ns: &cni_tests::Netns, url: &str) -> Option<String> {
    // curl, not busybox wget (busybox-static's wget crashes on some hosts).
    let out = ns.exec(&["curl", "-sg", "-m", "3", url]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn publish_ipv6_options_internal() {
    common::require();
    let w = World::new("p");
    let out = outside(&w);
    create_net(
        &w,
        "n6",
        &[
            "--ipv6",
            "--subnet",
            "10.213.3.0/24",
            "--ip-range",
            "10.213.3.128/25",
            "--gateway",
            "10.213.3.254",
            "--aux-address",
            "router=10.213.3.200",
            "--subnet",
            "fd00:213:3::/64",
            "-o",
            "mtu=1400",
            "-o",
            "hairpinMode=true",
            "-o",
            "com.docker.network.bridge.name=cnm-t6br",
        ],
    );
    let web_cmd =
        "mkdir -p /www && echo hello > /www/index.html && exec busybox httpd -f -p 80 -h /www";
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "n6",
        "-p",
        "18080:80",
        "-p",
        "127.0.0.1:18081:80",
        "--ip",
        "10.213.3.50",
        "--ip6",
        "fd00:213:3::50",
        "--mac-address",
        "02:42:aa:bb:cc:dd",
        IMAGE,
        "sh",
        "-c",
        web_cmd,
    ]);
    run_sleeper(&w, "c2", "n6", &[]);

    // What was asked is what docker shows is what the interface has.
    let (cidr, gw, mac) = docker_view(&w, "web", "n6");
    assert_eq!(
        (cidr.as_str(), gw.as_str(), mac.as_str()),
        ("10.213.3.50/24", "10.213.3.254", "02:42:aa:bb:cc:dd")
    );
    check_inspect_matches(&w, "web", "n6");
    let v = w.inspect("web");
    let n = &v["NetworkSettings"]["Networks"]["n6"];
    assert_eq!(n["GlobalIPv6Address"], "fd00:213:3::50");
    assert_eq!(n["IPv6Gateway"], "fd00:213:3::1");
    let (_, addrs, _) = real_iface(&w, "web", "10.213.3.50");
    assert!(
        addrs.contains(&"fd00:213:3::50/64".to_string()),
        "{addrs:?}"
    );
    let (_, r6) = w.exec("web", &["ip", "-6", "route"]);
    assert!(r6.contains("default via fd00:213:3::1"), "{r6}");
    let (_, mtu) = w.exec("web", &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1400");
    let ip2 = check_inspect_matches(&w, "c2", "n6");
    let last: u8 = ip2.rsplit('.').next().unwrap().parse().unwrap();
    assert!(
        (128..254).contains(&last) && last != 200,
        "{ip2} outside --ip-range or aux/gateway"
    );
    let c2v6 = w.inspect("c2")["NetworkSettings"]["Networks"]["n6"]["GlobalIPv6Address"]
        .as_str()
        .unwrap()
        .to_string();
    // Store: both endpoints' v4 and v6 plus the aux address; never the gateway.
    assert_store(
        &w,
        sorted(vec![
            "10.213.3.50".into(),
            ip2.clone(),
            "10.213.3.200".into(),
            "fd00:213:3::50".into(),
            c2v6.clone(),
        ]),
    );
    assert!(w.ping("c2", "10.213.3.50"));
    assert!(
        w.exec(
            "c2",
            &["busybox", "ping6", "-c", "1", "-W", "2", "fd00:213:3::50"]
        )
        .0
    );
    assert!(
        w.exec("web", &["busybox", "ping6", "-c", "1", "-W", "2", &c2v6])
            .0
    );

    // -p: from the host itself (loopback, the bridge's and another host address, IPv6) and
    // from outside through the host's address; 127.0.0.1-only port not from outside.
    for url in [
        "http://127.0.0.1:18080/",
        "http://127.0.0.1:18081/",
        "http://10.213.3.254:18080/",
        "http://10.213.100.1:18080/",
        "http://[fd00:213:3::1]:18080/",
    ] {
        assert_eq!(
            wget(&w.ns, url).as_deref(),
            Some("hello"),
            "{url} from the host\n{}",
            w.ruleset()
        );
    }
    assert_eq!(
        wget(&out, "http://10.213.100.1:18080/").as_deref(),
        Some("hello"),
        "from outside"
    );
    assert_eq!(
        wget(&out, "http://10.213.100.1:18081/"),
        None,
        "127.0.0.1-only port reached from outside"
    );
    // Outbound through masquerade (the outside has no route back to 10.213.3.0/24).
    assert!(w.ping("c2", "10.213.100.2"));
    // A second container cannot take the same host port.
    let e = w.docker_err(&[
        "run",
        "-d",
        "--name",
        "web2",
        "--network",
        "n6",
        "-p",
        "18080:80",
        IMAGE,
        "sleep",
        "600",
    ]);
    assert!(
        e.contains("18080") && e.contains("already published"),
        "{e}"
    );
    let _ = w.docker(&["rm", "-f", "web2"]);
    // A host port range gets its first port no container holds (18080 and 18081 are web's).
    let web4_cmd =
        "mkdir -p /www && echo hello4 > /www/index.html && exec busybox httpd -f -p 80 -h /www";
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web4",
        "--network",
        "n6",
        "-p",
        "18080-18082:80",
        IMAGE,
        "sh",
        "-c",
        web4_cmd,
    ]);
    let range_url = "http://10.213.100.1:18082/";
    eventually_for(10, || wget(&out, range_url).as_deref() == Some("hello4"));
    assert_eq!(
        wget(&out, range_url).as_deref(),
        Some("hello4"),
        "-p 18080-18082:80\n{}",
        w.ruleset()
    );
    w.docker_ok(&["rm", "-f", "web4"]);
    // Host ports are claimed in one table shared with CNI containers (the portmap plugin):
    // a port docker published is refused to a CNI container and vice versa.
    let portmap = |cmd: &str, port: u16| {
        let conf = serde_json::json!({
            "cniVersion": "1.0.0", "name": "cninet", "type": "portmap",
            "runtimeConfig": {"portMappings": [{"hostPort": port, "containerPort": 80}]},
            "prevResult": {"cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "sandbox": "/run/netns/cnictr"}],
                "ips": [{"address": "10.213.9.9/24", "interface": 0}]},
        });
        let bin = cni_tests::bin("portmap");
        let call = cni_tests::Call {
            container_id: "cnictr",
            netns: "/run/netns/cnictr",
            ifname: "eth0",
            cni_path: "/nonexistent",
            host: Some(&w.ns),
            ..cni_tests::Call::new(&bin, cmd)
        };
        cni_tests::run(&call, &conf.to_string())
    };
    let (code, msg) = portmap("ADD", 18080).err();
    assert!(
        code == 7 && msg.contains("18080/tcp is already published by cnm-"),
        "{code} {msg}"
    );
    portmap("ADD", 18085).expect_ok();
    let e = w.docker_err(&[
        "run",
        "-d",
        "--name",
        "web3",
        "--network",
        "n6",
        "-p",
        "18085:80",
        IMAGE,
        "sleep",
        "600",
    ]);
    assert!(
        e.contains("18085/tcp is already published by cninet/cnictr/eth0"),
        "{e}"
    );
    let _ = w.docker(&["rm", "-f", "web3"]);
    portmap("DEL", 18085).expect_ok();
    // Ports go away with the container.
    w.docker_ok(&["rm", "-f", "web"]);
    assert_eq!(wget(&w.ns, "http://127.0.0.1:18080/"), None);
    assert!(!w.ruleset().contains(". 18080"), "{}", w.ruleset());

    // --internal: peers yes, outside no (even with a hand-made default route).
    create_net(&w, "ni", &["--internal", "--subnet", "10.213.4.0/24"]);
    run_sleeper(&w, "i1", "ni", &["--cap-add", "NET_ADMIN"]);
    run_sleeper(&w, "i2", "ni", &[]);
    let i2 = check_inspect_ip(&w, "i2", "ni");
    assert!(w.ping("i1", &i2) && w.ping("i1", "i2"));
    assert_eq!(
        default_gw(&w, "i1"),
        "",
        "internal network got a default route"
    );
    assert!(
        w.exec(
            "i1",
            &["ip", "route", "add", "default", "via", "10.213.4.1"]
        )
        .0
    );
    assert!(
        !w.ping("i1", "10.213.100.2"),
        "internal network reached the outside"
    );

    w.docker_ok(&["rm", "-f", "c2", "i1", "i2"]);
    w.docker_ok(&["network", "rm", "n6", "ni"]);
    drop(out);
    checks::check_all_clean(&w, TEST_ADDRS);
}

/// IP of `c` on `net` per docker inspect, checked against the interface (no gateway check).
fn check_inspect_ip(w: &World, c: &str, net: &str) -> String {
    let (cidr, _, mac) = docker_view(w, c, net);
    let ip = cidr.split('/').next().unwrap().to_string();
    let (_, addrs, real_mac) = real_iface(w, c, &ip);
    assert!(addrs.contains(&cidr), "{addrs:?}");
    assert_eq!(mac, real_mac);
    ip
}

/// Every running container attached to one of the shim's networks, with its IPs there.
fn live_attachments(w: &World) -> Vec<(String, Vec<String>)> {
    let ids = w.docker_ok(&["ps", "-q"]);
    let mut out = Vec::new();
    for id in ids.split_whitespace() {
        let v = w.inspect(id);
        let name = v["Name"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string();
        for (net, n) in v["NetworkSettings"]["Networks"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let driver = w.inspect(net)["Driver"].as_str().unwrap_or("").to_string();
            if driver != w.name {
                continue;
            }
            let mut ips = vec![n["IPAddress"].as_str().unwrap_or("").to_string()];
            if let Some(v6) = n["GlobalIPv6Address"].as_str().filter(|s| !s.is_empty()) {
                ips.push(v6.to_string());
            }
            out.push((name.clone(), ips));
        }
    }
    out
}

/// The shim's view agrees with docker's: the store holds exactly the live attachments'
/// addresses, the state has exactly one endpoint per attachment, and no endpoint link is
/// lying around in the host netns.
fn check_consistent(w: &World, what: &str) {
    let live = live_attachments(w);
    let want = sorted(live.iter().flat_map(|(_, ips)| ips.clone()).collect());
    let n_eps = || w.state()["endpoints"].as_object().map_or(0, |o| o.len());
    // Within the shim's unclaimed-reservation grace (20 s, swept every 2 s): an address whose
    // RequestAddress reply a crash cut off is held until then.
    eventually_for(30, || w.store() == want && n_eps() == live.len());
    assert_eq!(
        w.store(),
        want,
        "{what}: store vs live containers {live:?}\n{}",
        w.shim_log_tail(60)
    );
    let st = w.state();
    let eps = st["endpoints"].as_object().map_or(0, |o| o.len());
    assert_eq!(
        eps,
        live.len(),
        "{what}: endpoints in state vs live attachments\n{st}"
    );
    let stray: Vec<String> = w
        .links()
        .into_iter()
        .filter(|l| l.len() == 15 && l.starts_with("cnm") && !l.starts_with("cnm-"))
        .collect();
    assert!(
        stray.is_empty(),
        "{what}: endpoint links left in the host netns: {stray:?}"
    );
}

#[test]
fn restarts_and_crashes() {
    common::require();
    let mut w = World::new("r");
    create_net(&w, "n1", &["--subnet", "10.213.5.0/24"]);
    run_sleeper(&w, "c1", "n1", &[]);

    // kill -9 between operations: running containers keep working, new ones too.
    w.kill9_shim();
    assert!(w.ping("c1", "10.213.5.1"));
    w.start_shim();
    run_sleeper(&w, "c2", "n1", &[]);
    assert!(w.ping("c1", "c2") && w.ping("c2", "c1"));
    check_consistent(&w, "after kill -9 between operations");

    // Crashes at each point of `docker run` where state and effects diverge; the shim comes
    // back within docker's retry window.
    for point in [
        "request-address:reserved",
        "request-address:saved",
        "create-endpoint:released",
        "create-endpoint:added",
        "create-endpoint:moved",
    ] {
        w.mark(point);
        crash_during(&mut w, point, &checks::run_args("cx", "n1"));
        check_consistent(&w, point);
        let _ = w.docker(&["rm", "-f", "cx"]);
        check_consistent(&w, &format!("{point}, container removed"));
        // And the network is fully usable again.
        run_sleeper(&w, "cy", "n1", &[]);
        assert!(w.ping("cy", "c1"), "{point}: new container cannot reach c1");
        w.docker_ok(&["rm", "-f", "cy"]);
    }
    // Crashes while a container is removed.
    for point in [
        "delete-endpoint:recorded",
        "delete-endpoint:deleted",
        "release-address:received",
        "release-address:marked",
    ] {
        w.mark(point);
        run_sleeper(&w, "cx", "n1", &[]);
        crash_during(&mut w, point, &["rm", "-f", "cx"]);
        let _ = w.docker(&["rm", "-f", "cx"]);
        check_consistent(&w, point);
    }

    // dockerd restart (SIGTERM): containers are stopped (endpoints deleted), the one with a
    // restart policy comes back with a fresh endpoint.
    run_sleeper(&w, "c3", "n1", &["--restart", "always"]);
    w.mark("dockerd restart");
    w.stop_dockerd();
    w.start_dockerd();
    wait_running(&w, "c3");
    check_inspect_matches(&w, "c3", "n1");
    w.docker_ok(&["start", "c1", "c2"]);
    assert!(w.ping("c3", "c1") && w.ping("c1", "c3"));
    check_consistent(&w, "after dockerd restart");

    // dockerd SIGKILL: at restart it kills the orphaned containers and cleans their sandboxes.
    w.mark("dockerd kill -9");
    w.kill9_dockerd();
    w.start_dockerd();
    wait_running(&w, "c3");
    check_inspect_matches(&w, "c3", "n1");
    check_consistent(&w, "after dockerd kill -9");

    // Shim killed while dockerd restarts.
    w.mark("both");
    w.kill9_shim();
    w.stop_dockerd();
    w.start_shim();
    w.start_dockerd();
    wait_running(&w, "c3");
    check_consistent(&w, "after shim + dockerd restart");

    w.docker_ok(&["rm", "-f", "c1", "c2", "c3"]);
    w.docker_ok(&["network", "rm", "n1"]);
    checks::check_all_clean(&w, TEST_ADDRS);
}

fn wait_running(w: &World, c: &str) {
    for _ in 0..100 {
        let s = w.docker(&["inspect", "-f", "{{.State.Running}}", c]);
        if String::from_utf8_lossy(&s.stdout).trim() == "true" {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("{c} is not running\n{}", w.shim_log_tail(40));
}

#[test]
fn twenty_parallel_runs() {
    common::require();
    let w = World::new("x");
    create_net(&w, "np", &["--subnet", "10.213.6.0/24"]);
    let runs: Vec<_> = (0..20)
        .map(|i| {
            let name = format!("par{i}");
            w.docker_bg(&[
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                "np",
                IMAGE,
                "sleep",
                "600",
            ])
        })
        .collect();
    let failures: Vec<String> = runs
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|o| !o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert!(
        failures.is_empty(),
        "failed runs: {failures:#?}\n{}",
        w.shim_log_tail(40)
    );
    let mut ips: Vec<String> = (0..20)
        .map(|i| check_inspect_ip(&w, &format!("par{i}"), "np"))
        .collect();
    ips.sort();
    let n = ips.len();
    ips.dedup();
    assert_eq!(ips.len(), n, "duplicate addresses: {ips:?}");
    assert_store(&w, sorted(ips.clone()));
    check_consistent(&w, "20 parallel runs");
    assert!(w.ping("par0", "par19") && w.ping("par19", &ips[0]));
    // Parallel removal too.
    let rms: Vec<_> = (0..20)
        .map(|i| w.docker_bg(&["rm", "-f", &format!("par{i}")]))
        .collect();
    for h in rms {
        assert!(h.join().unwrap().status.success());
    }
    assert_store(&w, vec![]);
    w.docker_ok(&["network", "rm", "np"]);
    checks::check_all_clean(&w, TEST_ADDRS);
}

/// The shim inherits its socket from a socket-activation manager (what cnm-shim.socket does):
/// the socket exists before the shim runs, dockerd's first call starts it.
#[test]
fn socket_activation() {
    common::require();
    assert!(
        std::path::Path::new("/usr/bin/systemd-socket-activate").exists(),
        "systemd-socket-activate is not installed: apt-get install systemd (scripts/test.sh does)"
    );
    let mut w = World::without_shim("a");
    w.start_shim_activated();
    create_net(&w, "na", &["--subnet", "10.213.7.0/24"]);
    assert!(
        std::fs::read_to_string(w.path("shim.log"))
            .unwrap()
            .contains("(socket-activated)"),
        "{}",
        w.shim_log_tail(10)
    );
    run_sleeper(&w, "ca", "na", &[]);
    check_inspect_matches(&w, "ca", "na");
    assert!(w.ping("ca", "10.213.7.1"));
    w.docker_ok(&["rm", "-f", "ca"]);
    w.docker_ok(&["network", "rm", "na"]);
    checks::check_all_clean(&w, TEST_ADDRS);
}
