//! The shim down for longer than docker's retries (~15 s per driver call, so ~60 s for a
//! `docker rm`), against a real dockerd: kept out of `restart.rs` for its run time.

mod checks;
mod common;

use checks::*;
use common::World;

/// The shim down for longer than docker retries (~15 s per call) while a container is removed:
/// docker gives up on the driver calls; the network stays usable, and what the lost calls left
/// behind goes at the latest with the network.
#[test]
fn shim_down_longer_than_docker_retries() {
    common::require();
    let mut w = World::new("o");
    create_net(&w, "on", "10.213.219.0/24");
    run_sleeper(&w, "o1", "on");
    run_sleeper(&w, "o2", "on");
    let ip2 = checked_ip(&w, "o2", "on");
    w.mark("shim down during docker rm");
    w.kill9_shim();
    let t = std::time::Instant::now();
    let rm = w.docker_bg(&["rm", "-f", "o1"]);
    let o = join_bg(&w, "rm o1 with the shim down", rm, 150);
    eprintln!(
        "rm with the shim down: {:?} after {:?}: {}",
        o.status,
        t.elapsed(),
        stderr(&o)
    );
    w.start_shim();
    if exists(&w, "o1") {
        w.docker_ok(&["rm", "-f", "o1"]);
    }
    run_sleeper(&w, "o3", "on");
    let ip3 = checked_ip(&w, "o3", "on");
    assert_ne!(ip2, ip3);
    assert!(w.ping("o3", &ip2) && w.ping("o2", &ip3));
    remove_all(&w, &["on"]);
    check_all_clean(&w, &["10.213.219."]);
}
