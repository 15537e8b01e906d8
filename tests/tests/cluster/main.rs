//! Cluster networks end to end: real etcd, real `cnm-agent` processes in netns "hosts", the
//! `cluster` CNI plugin exec'd inside them. Needs root, etcd and etcdctl.

use cni_tests::cluster as harness;

mod partition;
mod tls;
mod values;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use cni_tests::in_netns;
use harness::{wait_for, Cluster, NET, VNI};

/// Sends one UDP datagram of `len` payload bytes with DF set; the send error, if any.
fn send_df(from: &str, to: std::net::Ipv4Addr, len: usize) -> Result<(), std::io::Error> {
    in_netns(from, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        let v: libc::c_int = libc::IP_PMTUDISC_DO;
        // SAFETY: setsockopt on our own socket with a pointer to a live c_int of the right size.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                &v as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        s.send_to(&vec![7u8; len], (to, 9999)).map(drop)
    })
}

/// Binds a UDP receiver in `ns` and returns the socket (it stays in that netns).
fn udp_receiver(ns: &str) -> std::net::UdpSocket {
    in_netns(ns, || {
        let s = std::net::UdpSocket::bind("0.0.0.0:9999").expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    })
}

#[test]
fn three_hosts_ping_mtu_and_clean_leave() {
    let mut c = Cluster::new(3, "n1=10.250.0.0/16,block=26,vni=4097", &[]);
    let conv = c.converge();
    eprintln!("convergence after the last claim: {conv:?}");
    let mut ips = Vec::new();
    for h in 0..3 {
        for _ in 0..2 {
            let (k, ip) = c.add_container(h);
            ips.push((h, k, ip));
        }
    }
    let t0 = Instant::now();
    let mut fails = Vec::new();
    for (ha, a, _) in &ips {
        for (hb, b, ipb) in &ips {
            if a != b && !c.containers[*a].ping(ipb) {
                fails.push(format!("c{a}@h{ha} -> c{b}@h{hb} ({ipb})"));
            }
        }
    }
    assert!(fails.is_empty(), "failed pings: {fails:?}");
    eprintln!("30 ordered pairs pinged in {:?}", t0.elapsed());

    // MTU = underlay 1500 - 50: 1422 payload bytes + 28 of headers pass with DF, 1423 fail
    // locally with EMSGSIZE.
    let (_, a, _) = ips[0];
    let (_, b, ref ipb) = ips[4];
    let rx = udp_receiver(c.containers[b].path_str());
    let dst: std::net::Ipv4Addr = ipb.parse().unwrap();
    send_df(c.containers[a].path_str(), dst, 1422).expect("1422-byte DF datagram");
    let mut buf = [0u8; 2000];
    let (n, _) = rx
        .recv_from(&mut buf)
        .expect("1422-byte datagram arrives across hosts");
    assert_eq!(n, 1422);
    let e = send_df(c.containers[a].path_str(), dst, 1423).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE), "{e}");

    // The VXLAN guard lists exactly the two peers' VTEPs on each host.
    let set = c.hosts[0].ns.sh(&[
        "nft",
        "-j",
        "list",
        "set",
        "ip",
        "cnm_vxlan",
        &format!("vteps_{VNI}"),
    ]);
    assert!(
        set.contains("192.168.77.12")
            && set.contains("192.168.77.13")
            && !set.contains("192.168.77.11"),
        "{set}"
    );

    // DEL everything, stop the agents: nothing left but the config key.
    for (h, k, _) in &ips {
        c.del_container(*h, *k).expect_ok();
    }
    c.stop_agents_leaving_nothing();
}

#[test]
fn parallel_adds_with_kills_no_duplicates_no_leaks() {
    let c = Cluster::new(3, "n1=10.250.0.0/16,block=26,vni=4097", &[]);
    let mut nss = Vec::new();
    for _ in 0..120 {
        nss.push(cni_tests::Netns::new("mhp"));
    }
    let plugin = c.plugins.0.path().join("cluster");
    // 3 hosts x 40 ADDs at once; every 4th is killed with SIGKILL after a few ms.
    let mut children = Vec::new();
    for (k, ns) in nss.iter().enumerate() {
        let h = k % 3;
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &c.hosts[h].ns.name])
            .arg(&plugin)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", &ns.name)
            .env("CNI_NETNS", ns.path_str())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", c.plugins.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut ch = cmd.spawn().expect("spawn");
        use std::io::Write;
        ch.stdin
            .take()
            .unwrap()
            .write_all(c.conf(h).as_bytes())
            .unwrap();
        children.push((k, h, ch));
    }
    for (k, _, ch) in children.iter_mut() {
        if *k % 4 == 0 {
            std::thread::sleep(Duration::from_millis(3));
            let _ = ch.kill();
        }
    }
    let mut ips = std::collections::BTreeMap::new();
    let mut killed = 0;
    for (k, h, ch) in children {
        let out = ch.wait_with_output().unwrap();
        if k % 4 == 0 && !out.status.success() {
            killed += 1;
            continue;
        }
        assert!(
            out.status.success(),
            "ADD {k} on h{h}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ip: std::net::Ipv4Addr = v["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(ips.insert(ip, (k, h)).is_none(), "duplicate address {ip}");
    }
    eprintln!("{} ADDs succeeded, {killed} killed mid-call", ips.len());
    // Blocks never overlap (one key per block, all of one size) and each IP lies in its host's blocks.
    let keys = c.block_keys();
    let mut seen = std::collections::BTreeSet::new();
    for (k, _) in &keys {
        assert!(seen.insert(k.clone()), "block {k} twice");
    }
    for (ip, (_, h)) in &ips {
        let blocks = c.blocks(*h);
        let held = blocks["blocks"].as_array().unwrap();
        assert!(
            held.iter().any(|b| b
                .as_str()
                .unwrap()
                .parse::<ipnetwork::Ipv4Network>()
                .unwrap()
                .contains(*ip)),
            "{ip} of h{} not in its blocks {held:?}",
            h + 1
        );
    }
    // DEL all (the killed ones too): no reservation left on any host.
    for (k, ns) in nss.iter().enumerate() {
        let h = k % 3;
        c.cni(h, "DEL", &ns.name, ns.path_str(), &c.conf(h))
            .expect_ok();
    }
    for h in &c.hosts {
        let left = cni_tests::host_local_reservations(&h.run.path().join(NET).join("ipam"), NET);
        assert!(left.is_empty(), "{}: {left:?}", h.name);
        // DEL deletes the veth in a detached process: the port goes shortly after.
        let br = format!("cnm-{VNI}");
        wait_for(
            &format!("{}: no port left on {br}", h.name),
            Duration::from_secs(5),
            || h.ns.ip(&["link", "show", "master", &br]).trim().is_empty(),
        );
    }
}

#[test]
fn host_death_withdraws_routes_and_quarantines() {
    let mut c = Cluster::new(3, "n1=10.250.0.0/16,block=26,vni=4097", &[]);
    c.converge();
    let (a, _) = c.add_container(0);
    let (_, ip2) = c.add_container(1);
    assert!(c.containers[a].ping(&ip2));
    let h2_block = c.blocks(1)["blocks"][0].as_str().unwrap().to_string();
    // kill -9 the agent of h2 (and cut its control plane).
    if let Some(mut d) = c.hosts[1].agent.take() {
        d.grace = Duration::ZERO;
        // SAFETY: kill(2) on our own child process.
        unsafe { libc::kill(d.child.id() as i32, libc::SIGKILL) };
    }
    let t0 = Instant::now();
    wait_for("h2's block key to expire", Duration::from_secs(10), || {
        !c.block_keys().iter().any(|(_, h)| h == "h2")
    });
    let expired = t0.elapsed();
    wait_for(
        "peers to withdraw h2's route",
        Duration::from_secs(5),
        || !c.vx_routes(0).contains(&h2_block) && !c.vx_routes(2).contains(&h2_block),
    );
    eprintln!(
        "h2 killed: key gone after {expired:?}, routes withdrawn after {:?}",
        t0.elapsed()
    );
    assert!(!c.containers[a].ping(&ip2));
    let rkey = format!("/cnm/v1/nets/{NET}/released/{}", h2_block.replace('/', "-"));
    wait_for("quarantine marker", Duration::from_secs(3), || {
        c.keys().contains(&rkey)
    });
    let q = c.etcdctl(&["get", &rkey]);
    assert!(q.contains("\"host\":\"h2\""), "{q}");
    // After the quarantine, another host (h2b, given h2's preferred block) may claim it.
    wait_for("quarantine to end", Duration::from_secs(10), || {
        !c.keys().contains(&rkey)
    });
    std::fs::copy(
        c.hosts[1].state.path().join(NET).join("state.json"),
        c.hosts[1].state.path().join("h2.json"),
    )
    .unwrap();
    let st: serde_json::Value = serde_json::from_slice(
        &std::fs::read(c.hosts[1].state.path().join(NET).join("state.json")).unwrap(),
    )
    .unwrap();
    let st = serde_json::json!({"lease": null, "tunnel_ip": null, "blocks": st["blocks"]});
    std::fs::write(
        c.hosts[1].state.path().join(NET).join("state.json"),
        st.to_string(),
    )
    .unwrap();
    c.hosts[1].name = "h2b".into();
    c.start_agent(1);
    wait_for(
        "h2b to claim h2's old block",
        Duration::from_secs(10),
        || {
            c.block_keys()
                .iter()
                .any(|(k, h)| h == "h2b" && k.ends_with(&h2_block.replace('/', "-")))
        },
    );
}

#[test]
fn etcd_outage_longer_than_ttl() {
    let mut c = Cluster::new(
        2,
        "n1=10.251.0.0/16,block=28,vni=4098",
        &["--max-blocks", "1"],
    );
    c.converge();
    let (a, _) = c.add_container(0);
    let (_, ip2) = c.add_container(1);
    assert!(c.containers[a].ping(&ip2));
    let lease_before: Vec<String> = (0..2)
        .map(|i| {
            std::fs::read_to_string(c.hosts[i].state.path().join(NET).join("state.json")).unwrap()
        })
        .collect();
    let keys_before = c.block_keys();
    c.stop_etcd();
    let down = Instant::now();
    wait_for(
        "agents to notice etcd is down",
        Duration::from_secs(8),
        || {
            (0..2).all(|i| {
                c.blocks(i)["etcd_reachable"] == false && c.blocks(i)["state"] == "degraded"
            })
        },
    );
    // ADD works while the block has room (14 addresses per /28; one used).
    let mut n = 1;
    while n < 14 {
        c.add_container(0);
        n += 1;
    }
    // Full and etcd down: fast, clear try-later error.
    let ns = cni_tests::Netns::new("mhf");
    let t = Instant::now();
    let r = c.cni(0, "ADD", &ns.name, ns.path_str(), &c.conf(0));
    let (code, msg) = r.err();
    assert_eq!(code, 11, "{msg}");
    assert!(msg.contains("etcd unreachable"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // STATUS says the host cannot serve ADD.
    let st = c.cni(0, "STATUS", "", "", &c.conf(0));
    assert_eq!(st.err().0, 50);
    // Pings keep working for longer than the TTL.
    while down.elapsed() < Duration::from_secs(7) {
        assert!(
            c.containers[a].ping(&ip2),
            "ping during the outage at {:?}",
            down.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    c.start_etcd();
    wait_for("agents to reconnect", Duration::from_secs(15), || {
        (0..2).all(|i| c.blocks(i)["state"] == "ok")
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        c.block_keys(),
        keys_before,
        "blocks changed across the outage"
    );
    for (i, before) in lease_before.iter().enumerate() {
        let now =
            std::fs::read_to_string(c.hosts[i].state.path().join(NET).join("state.json")).unwrap();
        let l = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["lease"].clone();
        assert_eq!(l(&now), l(before), "lease ID of h{} changed", i + 1);
        let log = c.agent_log(i);
        assert!(
            !log.contains("peer block withdrawn") && !log.contains("lost block"),
            "{log}"
        );
    }
    assert!(c.containers[a].ping(&ip2));
}
