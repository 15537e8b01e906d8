//! Unit tests of what ADD and DEL decide, run against the recording fake (no root): the order
//! of the steps, what a failure rolls back, what DEL removes, and the check-then-set decisions.

use cni_core::{Command, Env, IpConfig, Request};
use serde_json::{json, Value};

use crate::fake::Fake;
use crate::{add, del};

/// The calling process's own netns: openable without root, never entered by the fake.
const NETNS: &str = "/proc/self/ns/net";

fn request(cmd: Command, conf: &Value) -> Request {
    Request {
        env: Env {
            command_raw: format!("{cmd:?}").to_uppercase(),
            command: Some(cmd),
            container_id: "ctr1".into(),
            netns: NETNS.into(),
            ifname: "eth0".into(),
            ..Default::default()
        },
        command: cmd,
        stdin: conf.to_string().into_bytes(),
        conf: cni_core::json::fold_keys(conf),
        cni_version: "1.0.0".into(),
        name: "net1".into(),
    }
}

fn conf(extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": "net1",
        "type": "bridge",
        "bridge": "hpbr0",
        "isGateway": true,
        "ipMasq": true,
        "ipam": {"type": "host-local", "subnet": "10.88.0.0/16"}
    });
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    c
}

fn fake() -> Fake {
    let f = Fake::default();
    f.state().ipam = vec![IpConfig {
        interface: None,
        address: "10.88.0.5/16".parse().unwrap(),
        gateway: Some("10.88.0.1".parse().unwrap()),
    }];
    f
}

fn steps(f: &Fake) -> Vec<String> {
    f.log()
}

fn pos(log: &[String], prefix: &str) -> usize {
    log.iter()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no step {prefix:?} in {log:#?}"))
}

#[test]
fn add_on_a_fresh_host_builds_everything_in_order() {
    let mut f = fake();
    let req = request(Command::Add, &conf(json!({})));
    let res = add::add_with(&mut f, &req).expect("ADD");
    let log = steps(&f);
    // IPAM first (its failures cost nothing to undo), the firewall last.
    assert_eq!(log[0], "ipam ADD");
    let order = [
        "ipam ADD",
        "host: create_bridge hpbr0",
        "sysctl net/ipv6/conf/hpbr0/accept_ra=0",
        "host: create_veth peer=eth0",
        "enter container eth0 v6=false",
        "container: add_address",
        // arp_notify in its own request before the link goes up: the kernel applies it after
        // a request's flags, and the gratuitous ARP is sent at up.
        "container: update_link 2 up=None promisc=None mac=false master=None arp_notify=Some(true)",
        "container: set_up",
        "host: add_address",
        "sysctl net/ipv4/ip_forward=1",
        "firewall setup bridge=hpbr0 ips=10.88.0.5/16",
    ];
    let at: Vec<usize> = order.iter().map(|p| pos(&log, p)).collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "order {order:#?} in {log:#?}"
    );
    // The new bridge is brought up with its pinned MAC already set at creation.
    assert!(log
        .iter()
        .any(|l| l.starts_with("host: update_link") && l.contains("up=Some(true)")));
    assert!(!log.iter().any(|l| l.contains("delete_link")), "{log:#?}");
    // Bridge, host veth, container interface; the gateway on the bridge.
    assert_eq!(res.interfaces.len(), 3);
    assert_eq!(res.interfaces[0].name, "hpbr0");
    assert_eq!(res.interfaces[2].sandbox, NETNS);
    assert!(log.contains(&format!(
        "host: add_address {} 10.88.0.1/16",
        f.0.borrow().links["host"][0].index
    )));
}

#[test]
fn add_on_a_ready_host_writes_nothing_twice() {
    let mut f = fake();
    let br = f
        .state()
        .host_link("hpbr0", "bridge", true, Some([2, 0, 0, 0, 0, 1]));
    f.state()
        .host_addr(br.index, "10.88.0.1".parse().unwrap(), 16);
    for (k, v) in [
        ("net/ipv4/ip_forward", "1"),
        ("net/ipv6/conf/hpbr0/accept_ra", "0"),
    ] {
        f.state().sysctls.insert(k.into(), v.into());
    }
    let req = request(Command::Add, &conf(json!({})));
    add::add_with(&mut f, &req).expect("ADD");
    let log = steps(&f);
    for absent in [
        "host: create_bridge",
        "host: update_link",
        "host: add_address",
        "sysctl net/ipv4/ip_forward",
    ] {
        assert!(
            !log.iter().any(|l| l.starts_with(absent)),
            "{absent:?} should be skipped on a ready host: {log:#?}"
        );
    }
    // Only the per-attachment host sysctl is written.
    assert_eq!(
        log.iter().filter(|l| l.starts_with("sysctl")).count(),
        1,
        "{log:#?}"
    );
}

#[test]
fn add_fixes_only_what_differs_on_an_existing_bridge() {
    let mut f = fake();
    // Down, no MAC (as left by another tool): one update with both.
    f.state().host_link("hpbr0", "bridge", false, None);
    let req = request(Command::Add, &conf(json!({})));
    add::add_with(&mut f, &req).expect("ADD");
    let updates: Vec<String> = steps(&f)
        .into_iter()
        .filter(|l| l.starts_with("host: update_link"))
        .collect();
    assert_eq!(updates.len(), 1, "{updates:#?}");
    assert!(updates[0].contains("up=Some(true)") && updates[0].contains("mac=true"));
    assert!(updates[0].contains("promisc=None"));
}

#[test]
fn add_rejects_a_non_bridge_before_touching_anything() {
    let mut f = fake();
    f.state().host_link("hpbr0", "dummy", true, None);
    let req = request(Command::Add, &conf(json!({})));
    let e = add::add_with(&mut f, &req).unwrap_err();
    assert!(e.to_string().contains("not a bridge"), "{e}");
    assert!(f.log().is_empty(), "nothing may run: {:#?}", f.log());
}

#[test]
fn add_rolls_back_in_reverse_when_the_firewall_fails() {
    let mut f = fake();
    f.state().fail_cni.push("firewall setup".into());
    let req = request(Command::Add, &conf(json!({})));
    add::add_with(&mut f, &req).unwrap_err();
    let log = steps(&f);
    let tail: Vec<String> = log[pos(&log, "firewall setup")..]
        .iter()
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        tail,
        [
            "firewall setup",
            "firewall teardown",
            "host: delete_link",
            "ipam Del"
        ],
        "{log:#?}"
    );
    // Deleting the host end took the container end with it.
    assert!(f.0.borrow().links["container"].is_empty());
}

#[test]
fn add_undoes_only_ipam_when_the_veth_cannot_be_made() {
    let mut f = fake();
    f.state()
        .fail
        .push(("host: create_veth".into(), libc::ENOMEM));
    let req = request(Command::Add, &conf(json!({})));
    let e = add::add_with(&mut f, &req).unwrap_err();
    assert!(e.to_string().contains("failed to create veth pair"), "{e}");
    let log = steps(&f);
    assert_eq!(log.last().map(String::as_str), Some("ipam Del"), "{log:#?}");
    assert!(!log
        .iter()
        .any(|l| l.contains("delete_link") || l.contains("teardown")));
}

#[test]
fn add_failing_in_ipam_leaves_nothing_to_undo() {
    let mut f = fake();
    f.state().fail_cni.push("ipam ADD".into());
    let req = request(Command::Add, &conf(json!({})));
    add::add_with(&mut f, &req).unwrap_err();
    assert_eq!(f.log(), ["ipam ADD"]);
}

#[test]
fn gateway_conflict_needs_force_address() {
    for force in [false, true] {
        let mut f = fake();
        let br = f
            .state()
            .host_link("hpbr0", "bridge", true, Some([2, 0, 0, 0, 0, 1]));
        f.state()
            .host_addr(br.index, "10.88.0.254".parse().unwrap(), 16);
        let req = request(Command::Add, &conf(json!({"forceAddress": force})));
        let r = add::add_with(&mut f, &req);
        let log = steps(&f);
        if force {
            r.expect("ADD with forceAddress");
            let del = pos(
                &log,
                &format!("host: del_address {} 10.88.0.254/16", br.index),
            );
            let add = pos(
                &log,
                &format!("host: add_address {} 10.88.0.1/16", br.index),
            );
            assert!(del < add, "{log:#?}");
        } else {
            let e = r.unwrap_err();
            assert!(e.to_string().contains("forceAddress"), "{e}");
            // Rolled back: the veth and the IP are released again.
            assert!(log.iter().any(|l| l.starts_with("host: delete_link")));
            assert_eq!(log.last().map(String::as_str), Some("ipam Del"));
        }
    }
}

#[test]
fn l2_only_add_sets_the_link_up_without_ipam_or_addresses() {
    let mut f = fake();
    let mut c = conf(json!({"isGateway": false, "ipMasq": false}));
    c.as_object_mut().unwrap().remove("ipam");
    let req = request(Command::Add, &c);
    add::add_with(&mut f, &req).expect("ADD");
    let log = steps(&f);
    assert!(!log
        .iter()
        .any(|l| l.starts_with("ipam") || l.contains("add_address")));
    pos(&log, "container: set_up");
}

#[test]
fn del_removes_firewall_state_then_ips_then_the_veth() {
    let mut f = fake();
    let add_req = request(Command::Add, &conf(json!({})));
    let res = add::add_with(&mut f, &add_req).expect("ADD");
    f.state().log.clear();
    let mut c = conf(json!({}));
    c["prevResult"] = cni_core::result::to_version(&res, "1.0.0").unwrap();
    let req = request(Command::Del, &c);
    del::del_with(&mut f, &req).expect("DEL");
    let log = steps(&f);
    assert_eq!(log.len(), 3, "{log:#?}");
    assert!(log[0].starts_with("firewall teardown ips=Some([10.88.0.5])"));
    assert_eq!(log[1], "ipam Del");
    assert!(log[2].starts_with("container: delete_link"));
    assert!(f.0.borrow().links["host"].iter().all(|l| !l.is_veth()));
    // The bridge stays (other attachments may use it).
    assert!(f.0.borrow().links["host"].iter().any(|l| l.is_bridge()));

    // Again: idempotent, nothing left to delete, still releases by attachment.
    f.state().log.clear();
    del::del_with(&mut f, &req).expect("second DEL");
    let log = steps(&f);
    assert_eq!(log, ["firewall teardown ips=Some([10.88.0.5])", "ipam Del"]);
}

#[test]
fn del_keeps_going_when_the_firewall_fails() {
    let mut f = fake();
    f.state().fail_cni.push("firewall teardown".into());
    let req = request(Command::Del, &conf(json!({})));
    let e = del::del_with(&mut f, &req).unwrap_err();
    assert!(e.to_string().contains("firewall teardown"), "{e}");
    assert_eq!(f.log(), ["firewall teardown ips=None", "ipam Del"]);
}
