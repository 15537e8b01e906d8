//! Control-plane partitions of one host (multihost.md §4.2 checks 7 and 10, §2.7): the host's
//! port on the control-plane bridge goes down while VXLAN (the underlay bridge) keeps working.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{wait_for, Cluster, METRICS_PORT, NET};

const SPEC: &str = "n1=10.252.0.0/16,block=26,vni=4099";

fn metrics_flag() -> String {
    format!("127.0.0.1:{METRICS_PORT}")
}

fn blocks_of(c: &Cluster, i: usize) -> Vec<String> {
    c.blocks(i)["blocks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn lease_of(c: &Cluster, i: usize) -> Value {
    let st = std::fs::read(c.hosts[i].state.path().join(NET).join("state.json")).unwrap();
    serde_json::from_slice::<Value>(&st).unwrap()["lease"].clone()
}

fn key_of(b: &str) -> String {
    format!("/cnm/v1/nets/{NET}/blocks/{}", b.replace('/', "-"))
}

/// Shorter than the TTL (8 s here; the cut lasts until h3 notices it, 2-5 s): no route
/// withdrawn anywhere, no block or lease changed, and the host is back to `ok`.
#[test]
fn partition_shorter_than_ttl_changes_nothing() {
    let m = metrics_flag();
    let c = Cluster::with_ttl(3, SPEC, &["--metrics-listen", &m], 8);
    c.converge();
    let keys_before = c.block_keys();
    let lease_before = lease_of(&c, 2);
    let h3_blocks = blocks_of(&c, 2);
    let routes_before: Vec<Vec<String>> = (0..3).map(|i| c.vx_routes(i)).collect();
    let ka_failures = c.metric(2, "cnm_agent_lease_keepalive_failures_total");

    // Cut right after a renewal (lease at its full TTL), and heal as soon as h3 noticed.
    wait_for("a fresh renewal on h3", Duration::from_secs(6), || {
        c.metric(2, "cnm_agent_lease_ttl_seconds") >= 8.0
    });
    c.partition(2, true);
    let t0 = Instant::now();
    while c.blocks(2)["etcd_reachable"] != false {
        assert!(
            t0.elapsed() < Duration::from_secs(6),
            "h3 never noticed the cut"
        );
        for i in 0..2 {
            for b in &h3_blocks {
                assert!(
                    c.vx_routes(i).contains(b),
                    "h{} withdrew h3's {b} after {:?} of a short partition",
                    i + 1,
                    t0.elapsed()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (rc, text) = c.status_cmd(2);
    assert_eq!(rc, 2, "{text}");
    assert!(
        text.contains("UNREACHABLE") && text.contains("state DEGRADED"),
        "{text}"
    );
    eprintln!("short partition: h3 noticed after {:?}", t0.elapsed());
    c.partition(2, false);
    let healed = wait_for("h3 back to ok", Duration::from_secs(8), || {
        c.blocks(2)["state"] == "ok" && c.status_cmd(2).0 == 0
    });
    eprintln!("short partition: h3 ok again {healed:?} after heal");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.block_keys(), keys_before, "block keys changed");
    assert_eq!(lease_of(&c, 2), lease_before, "h3's lease ID changed");
    for (i, before) in routes_before.iter().enumerate() {
        assert_eq!(&c.vx_routes(i), before, "routes of h{} changed", i + 1);
        let log = c.agent_log(i);
        for bad in ["peer block withdrawn", "lost block", "lease not found"] {
            assert!(!log.contains(bad), "h{} logged {bad:?}:\n{log}", i + 1);
        }
    }
    // The partition was felt (so this test can fail): keep-alives failed and were counted.
    assert!(
        c.metric(2, "cnm_agent_lease_keepalive_failures_total") > ka_failures,
        "{}",
        c.scrape(2)
    );
    assert!(c.metric(2, "cnm_agent_etcd_errors_total") > 0.0);
    assert_eq!(c.metric(2, "cnm_agent_etcd_reachable"), 1.0);
    assert_eq!(c.metric(2, "cnm_agent_lease_presumed_expired"), 0.0);
}

/// Longer than the TTL (4 s): peers withdraw h3, h3's STATUS says 51; after heal h3 takes its
/// own blocks back and cross-host pings return within seconds. Then check 10: DEL and stop
/// leave only the config key and no VXLAN link.
#[test]
fn partition_longer_than_ttl_withdraws_then_reclaims() {
    let m = metrics_flag();
    let mut c = Cluster::new(3, SPEC, &["--metrics-listen", &m]);
    c.converge();
    let (a, _) = c.add_container(0);
    let (b, ip3) = c.add_container(2);
    assert!(c.containers[a].ping(&ip3));
    let h3_blocks = blocks_of(&c, 2);
    let keys_before = c.block_keys();

    c.partition(2, true);
    let t0 = Instant::now();
    let withdrawn = wait_for("h1/h2 to withdraw h3", Duration::from_secs(10), || {
        (0..2).all(|i| {
            let r = c.vx_routes(i);
            h3_blocks.iter().all(|b| !r.contains(b))
        })
    });
    eprintln!("long partition: peers withdrew h3 after {withdrawn:?}");
    // h3 cannot hear about it, but its lease was not renewed for a TTL: STATUS 51.
    wait_for(
        "h3's lease presumed expired",
        Duration::from_secs(4),
        || c.blocks(2)["lease_expired"] == true,
    );
    let (code, msg) = c.cni(2, "STATUS", "", "", &c.conf(2)).err();
    assert_eq!(code, 51, "{msg}");
    assert!(msg.contains("could not renew its block lease"), "{msg}");
    let (rc, text) = c.status_cmd(2);
    assert_eq!(rc, 2, "{text}");
    assert!(
        text.contains("state EXPIRED") && text.contains("UNREACHABLE"),
        "{text}"
    );
    assert_eq!(c.metric(2, "cnm_agent_lease_presumed_expired"), 1.0);
    assert!(
        !c.containers[a].ping(&ip3),
        "ping crossed a withdrawn route"
    );
    // h3's own data plane and blocks are untouched meanwhile.
    assert_eq!(blocks_of(&c, 2), h3_blocks);

    c.partition(2, false);
    let t1 = Instant::now();
    wait_for("h3 to re-claim its blocks", Duration::from_secs(10), || {
        c.blocks(2)["state"] == "ok" && c.block_keys() == keys_before
    });
    let reclaimed = t1.elapsed();
    wait_for("routes to h3 back on h1/h2", Duration::from_secs(5), || {
        (0..2).all(|i| {
            let r = c.vx_routes(i);
            h3_blocks.iter().all(|b| r.contains(b))
        })
    });
    let routes_back = t1.elapsed();
    wait_for("ping h1 -> h3 again", Duration::from_secs(5), || {
        c.containers[a].ping(&ip3)
    });
    eprintln!(
        "after heal: blocks re-claimed {reclaimed:?}, routes back {routes_back:?}, ping ok {:?} (partition lasted {:?})",
        t1.elapsed(),
        t1 - t0
    );
    assert!(t1.elapsed() < Duration::from_secs(8), "{:?}", t1.elapsed());
    assert_eq!(blocks_of(&c, 2), h3_blocks, "h3 holds other blocks now");
    c.cni(2, "STATUS", "", "", &c.conf(2)).expect_ok();
    let (rc, text) = c.status_cmd(2);
    assert_eq!(rc, 0, "{text}");
    assert!(c.agent_log(2).contains("re-claimed block"));

    // Check 10: everything DEL'd and agents stopped leave nothing behind.
    for (h, k) in [(0, a), (2, b)] {
        c.del_container(h, k).expect_ok();
    }
    c.stop_agents_leaving_nothing();
}

/// During h2's partition its expired block is claimed by a newly started h3 (after the
/// quarantine). After heal h2 reports the conflict (STATUS 51, CHECK fails for its container
/// in that block) and does not own the block a second time.
#[test]
fn partition_conflict_is_reported_not_double_owned() {
    let m = metrics_flag();
    let mut c = Cluster::new(2, SPEC, &["--metrics-listen", &m]);
    c.converge();
    let (k, _, res) = c.add_container_res(1);
    let block = blocks_of(&c, 1)[0].clone();
    let rkey = format!("/cnm/v1/nets/{NET}/released/{}", block.replace('/', "-"));

    c.partition(1, true);
    wait_for("h2's block key to expire", Duration::from_secs(10), || {
        !c.keys().contains(&key_of(&block))
    });
    wait_for("quarantine marker by h1", Duration::from_secs(3), || {
        c.keys().contains(&rkey)
    });
    wait_for("quarantine to end", Duration::from_secs(8), || {
        !c.keys().contains(&rkey)
    });
    // h3 joins, preferring h2's old block (as if it had held it before).
    let h = c.add_host("h3", &["--metrics-listen", &m]);
    let st = serde_json::json!({"lease": null, "tunnel_ip": null, "blocks": [block]});
    let p = c.hosts[h].state.path().join(NET).join("state.json");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, st.to_string()).unwrap();
    c.start_agent(h);
    wait_for(
        "h3 to claim h2's old block",
        Duration::from_secs(10),
        || {
            c.block_keys()
                .iter()
                .any(|(key, host)| host == "h3" && *key == key_of(&block))
        },
    );

    c.partition(1, false);
    let t1 = Instant::now();
    wait_for(
        "h2 to report the lost block",
        Duration::from_secs(10),
        || {
            c.blocks(1)["lost"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x["cidr"] == block.as_str()))
        },
    );
    eprintln!("conflict reported {:?} after heal", t1.elapsed());
    let (code, msg) = c.cni(1, "STATUS", "", "", &c.conf(1)).err();
    assert_eq!(code, 51, "{msg}");
    assert!(msg.contains(&block) && msg.contains("h3"), "{msg}");
    let ns = &c.containers[k];
    let conf: Value = serde_json::from_str(&c.conf(1)).unwrap();
    let check = cni_tests::with_prev_result(&conf, &res).to_string();
    let (_, cmsg) = c.cni(1, "CHECK", &ns.name, ns.path_str(), &check).err();
    assert!(cmsg.contains(&block) && cmsg.contains("lost"), "{cmsg}");
    // One owner in etcd (h3); h2 does not list it, and routes it to h3 like any peer block.
    let owners: Vec<(String, String)> = c
        .block_keys()
        .into_iter()
        .filter(|(key, _)| *key == key_of(&block))
        .collect();
    assert_eq!(owners, vec![(key_of(&block), "h3".to_string())]);
    assert!(!blocks_of(&c, 1).contains(&block), "{}", c.blocks(1));
    wait_for("h2 routing the block to h3", Duration::from_secs(5), || {
        c.vx_routes(1).contains(&block)
    });
    let (rc, text) = c.status_cmd(1);
    assert_eq!(rc, 2, "{text}");
    assert!(text.contains("LOST") && text.contains(&block), "{text}");
    assert_eq!(c.metric(1, "cnm_agent_blocks_lost"), 1.0);
    // Once the container is gone, the conflict is over: h2 works again on a new lease (its
    // old one expired in the partition) and holds a fresh block of its own in etcd.
    c.cni(1, "DEL", &ns.name, ns.path_str(), &c.conf(1))
        .expect_ok();
    wait_for(
        "h2 to forget the lost block and claim a fresh one",
        Duration::from_secs(8),
        || {
            let b = c.blocks(1);
            b["state"] == "ok" && b["blocks"].as_array().is_some_and(|l| !l.is_empty())
        },
    );
    let fresh = blocks_of(&c, 1);
    assert!(!fresh.contains(&block), "{fresh:?}");
    assert!(
        c.block_keys()
            .iter()
            .any(|(key, host)| host == "h2" && *key == key_of(&fresh[0])),
        "h2's fresh block {} is not in etcd: {:?}",
        fresh[0],
        c.block_keys()
    );
    c.stop_agents_leaving_nothing();
}
