//! etcd values the agent must not trust: an oversized value (valid JSON that would otherwise
//! decode) and a malformed one are logged with their key and ignored, while a well-formed
//! foreign block written the same way is programmed (the control), and the agents keep
//! serving: ADD and cross-host ping still work.

use std::time::Duration;

use crate::harness::{wait_for, Cluster, NET};

const SPEC: &str = "n1=10.254.0.0/16,block=26,vni=4102";
const CAP: usize = 64 * 1024;

fn block_value(host: &str, vtep: &str, pad: usize) -> String {
    let v = format!(
        r#"{{"host":"{host}","vtep":"{vtep}","mac":"02:00:00:00:00:99","tunnel_ip":"10.254.255.1","pad":""#
    );
    format!("{v}{}\"}}", "x".repeat(pad.saturating_sub(v.len() + 2)))
}

#[test]
fn hs_oversized_and_malformed_etcd_values_are_logged_and_ignored() {
    let mut c = Cluster::new(2, SPEC, &[]);
    c.converge();
    let big_key = format!("/cnm/v1/nets/{NET}/blocks/10.254.200.0-26");
    let bad_key = format!("/cnm/v1/nets/{NET}/released/10.254.201.0-26");
    let ok_key = format!("/cnm/v1/nets/{NET}/blocks/10.254.202.0-26");
    let big = block_value("ghost1", "192.168.77.251", CAP + 1000);
    assert_eq!(big.len(), CAP + 1000);
    c.etcdctl(&["put", &big_key, &big]);
    c.etcdctl(&["put", &bad_key, "not json"]);
    c.etcdctl(&["put", &ok_key, &block_value("ghost2", "192.168.77.252", 0)]);
    // Each agent names the refused keys (seen through the watch, and again at every re-list).
    for i in 0..2 {
        wait_for(
            "the refusals in the agent log",
            Duration::from_secs(15),
            || {
                let log = c.agent_log(i);
                log.contains(&format!(
                    "etcd value at {big_key}: {} bytes, more than the {CAP}-byte cap",
                    CAP + 1000
                )) && log.contains(&format!(
                    "etcd value at {bad_key}: not a valid released-block marker"
                ))
            },
        );
        // The control block is routed, the oversized one is not.
        wait_for(
            "the route to the control block",
            Duration::from_secs(15),
            || c.vx_routes(i).contains(&"10.254.202.0/26".to_string()),
        );
        let routes = c.vx_routes(i);
        assert!(
            !routes.contains(&"10.254.200.0/26".to_string()),
            "{routes:?}"
        );
    }
    // Nothing stalled: both agents alive, new containers on both hosts reach each other.
    for h in &mut c.hosts {
        assert!(h.agent.as_mut().unwrap().alive(), "agent {} died", h.name);
    }
    let (a, _) = c.add_container(0);
    let (_, ip_b) = c.add_container(1);
    if !c.containers[a].ping(&ip_b) {
        c.dump_logs();
        panic!("no ping from host 1 to {ip_b}");
    }
    eprintln!(
        "agent log line: {}",
        c.agent_log(0)
            .lines()
            .find(|l| l.contains(&big_key))
            .unwrap_or_default()
    );
}
