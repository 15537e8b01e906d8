//! Scaling check: time of one masquerade ADD with N containers present.
//! Must stay flat. Run as root in a throwaway netns:
//! `unshare -n target/release/examples/scale`

use std::net::IpAddr;
use std::time::{Duration, Instant};

fn ip(i: u32) -> IpAddr {
    IpAddr::from((0x0a40_0000u32 + i).to_be_bytes())
}

fn main() -> Result<(), cni_nft::Error> {
    let mut m = cni_nft::masq::MasqSetup::new()?;
    let mut n = 0u32;
    for target in [1u32, 100, 1000, 5000, 20000] {
        while n < target {
            n += 1;
            m.add("net", &format!("c{n}"), "eth0", &[(ip(n), 10)])?;
        }
        let mut v: Vec<Duration> = Vec::new();
        for i in 0..200u32 {
            let a = ip(100_000 + i);
            let t = Instant::now();
            m.add("net", "b", "eth0", &[(a, 10)])?;
            v.push(t.elapsed());
            m.del("net", "b", "eth0", Some(&[a]))?;
        }
        v.sort();
        println!("N={target:>6} add median {:?}", v[v.len() / 2]);
    }
    Ok(())
}
