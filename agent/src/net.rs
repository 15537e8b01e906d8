//! One cluster network on this host: the block leases in etcd, the published files for the
//! CNI plugin, and the data plane, driven by one task (watch + keep-alive + resync ticks).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use cni_cluster::model::{self, Health, HostBlocks, LocalNetwork, LostBlock, NetConfig};
use etcd_client::{
    Compare, CompareOp, EventType, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp,
    WatchStream,
};
use ipnetwork::Ipv4Network;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::dataplane::{self, Desired, Peer};
use crate::keys::{self, BlockValue, ReleasedValue};
use crate::obs;
use crate::state::{self, LocalState};
use crate::store::{self, Etcd};
use cnm_agent::values;

/// Settings shared by every network of the agent.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub underlay: String,
    pub vtep: Ipv4Addr,
    pub underlay_mtu: u32,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub block_ttl: i64,
    pub quarantine: i64,
    pub resync: Duration,
    pub max_blocks: usize,
    pub guard: bool,
}

/// A block as seen in etcd.
#[derive(Debug, Clone)]
struct Seen {
    value: BlockValue,
    mod_rev: i64,
    /// The lease the key is attached to (to tell an expiry from a deliberate release).
    lease: i64,
}

pub struct Net {
    name: String,
    s: Settings,
    etcd: Etcd,
    config: NetConfig,
    lease: Option<i64>,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    /// Our blocks and the mod revision of their keys.
    mine: BTreeMap<Ipv4Network, i64>,
    lost: Vec<LostBlock>,
    all: BTreeMap<Ipv4Network, Seen>,
    released: BTreeMap<Ipv4Network, (ReleasedValue, i64)>,
    tunnel_ip: Option<Ipv4Addr>,
    preferred: Vec<Ipv4Network>,
    etcd_ok: bool,
    etcd_err: String,
    watch: Option<WatchStream>,
    revision: i64,
    published: Option<HostBlocks>,
    desired: Option<Desired>,
    /// Set when our lease or one of our keys vanished: recover on the next tick.
    recover: bool,
    /// When etcd last told us our lease's TTL, and that TTL: past it without contact the
    /// lease is presumed expired (peers withdraw our blocks).
    lease_seen: Option<(Instant, i64)>,
    /// Start of the last keep-alive round.
    last_ka: Instant,
    /// Remote blocks with their route on the VXLAN link after the last reconcile.
    programmed: std::collections::BTreeSet<Ipv4Network>,
    status_written: Option<crate::obs::NetStatus>,
}

fn key_str(k: &[u8]) -> &str {
    std::str::from_utf8(k).unwrap_or("")
}

/// The config to create or to compare with: from `--network NAME=SUBNET,...`, or None when
/// the network is only named (the config must already be in etcd).
pub async fn ensure_config(etcd: &Etcd, net: &str, want: Option<&NetConfig>) -> Result<NetConfig> {
    let key = keys::config(net);
    if let Some(w) = want {
        w.validate().map_err(|e| anyhow!("network {net}: {e}"))?;
    }
    loop {
        // Ok(Err(_)): a definitive answer (mismatch, bad value); Err(_): etcd trouble, retry.
        let res: Result<Result<NetConfig>> = async {
            if let Some(w) = want {
                if etcd.create(&key, &serde_json::to_vec(w)?, None).await? {
                    info!(network = net, config = ?w, "created network config in etcd");
                    return Ok(Ok(w.clone()));
                }
            }
            let Some(kv) = etcd.get(&key).await? else {
                return Err(anyhow!(
                    "no config at {key} yet; create it with --network {net}=SUBNET[,block=N,vni=N]"
                ));
            };
            let have = match values::decode_config(&key, kv.value()) {
                Ok(h) => h,
                Err(e) => return Ok(Err(anyhow!("network {net}: {e}"))),
            };
            if let Some(d) = want.and_then(|w| have.difference(w)) {
                return Ok(Err(anyhow!(
                    "network {net}: config differs from etcd's {key}: {d}"
                )));
            }
            Ok(Ok(have))
        }
        .await;
        match res {
            Ok(r) => return r,
            Err(e) => {
                warn!(network = net, "waiting for etcd: {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

impl Net {
    pub fn new(name: String, s: Settings, etcd: Etcd, config: NetConfig) -> Net {
        Net {
            name,
            s,
            etcd,
            config,
            lease: None,
            keeper: None,
            mine: BTreeMap::new(),
            lost: Vec::new(),
            all: BTreeMap::new(),
            released: BTreeMap::new(),
            tunnel_ip: None,
            preferred: Vec::new(),
            etcd_ok: false,
            etcd_err: String::new(),
            watch: None,
            revision: 0,
            published: None,
            desired: None,
            recover: false,
            lease_seen: None,
            last_ka: Instant::now(),
            programmed: Default::default(),
            status_written: None,
        }
    }

    fn mac(&self) -> [u8; 6] {
        dataplane::vtep_mac(&self.s.host, self.config.vni)
    }

    fn block_value(&self) -> BlockValue {
        BlockValue {
            host: self.s.host.clone(),
            vtep: self.s.vtep,
            mac: cni_netlink::fmt_mac(&self.mac()),
            tunnel_ip: self.tunnel_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
        }
    }

    fn etcd_failed(&mut self, what: &str, e: &anyhow::Error) {
        if store::lease_gone(e) {
            return self.lease_gone(what);
        }
        if self.etcd_ok || self.etcd_err.is_empty() {
            warn!(network = %self.name, "etcd unreachable ({what}): {e:#}; keeping the data plane and lease ID");
        }
        self.etcd_ok = false;
        self.etcd_err = format!("{e:#}");
        let err = self.etcd_err.clone();
        obs::update(&self.name, |o| {
            o.etcd.errors += 1;
            o.etcd.reachable = false;
            o.etcd.error = err;
        });
    }

    /// etcd says our lease no longer exists (it expired while we were cut off): peers have
    /// withdrawn our blocks. Not an outage: the next keep-alive round grants a new lease and
    /// re-claims what nobody else took.
    fn lease_gone(&mut self, what: &str) {
        let id = self.lease.map(|l| format!("{l:x}")).unwrap_or_default();
        warn!(network = %self.name, lease = id, "etcd: requested lease not found ({what}); re-claiming our blocks on a new lease");
        self.etcd_back();
        self.keeper = None;
        self.lease = None;
        self.recover = true;
    }

    /// Records a TTL etcd reported for our lease.
    fn lease_ttl_seen(&mut self, ttl: i64) {
        self.lease_seen = Some((Instant::now(), ttl));
        let id = self.lease.map(|l| format!("{l:x}")).unwrap_or_default();
        let granted = self.s.block_ttl;
        obs::update(&self.name, |o| {
            o.lease.id = id;
            o.lease.granted_ttl = granted;
            o.lease.ttl = ttl;
            o.lease.checked = obs::now();
        });
    }

    /// Not renewed for longer than its TTL and etcd out of reach: as far as the peers know,
    /// this host is gone.
    fn lease_presumed_expired(&self) -> bool {
        !self.etcd_ok
            && self
                .lease_seen
                .is_some_and(|(t, ttl)| t.elapsed() >= Duration::from_secs(ttl.max(0) as u64))
    }

    fn etcd_back(&mut self) {
        if !self.etcd_ok {
            info!(network = %self.name, "etcd reachable");
        }
        self.etcd_ok = true;
        self.etcd_err.clear();
        obs::update(&self.name, |o| {
            o.etcd.reachable = true;
            o.etcd.error.clear();
            o.etcd.last_contact = obs::now();
        });
    }

    /// Runs until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let net_file = LocalNetwork {
            network: self.name.clone(),
            host: self.s.host.clone(),
            config: self.config.clone(),
            mtu: self.s.underlay_mtu.saturating_sub(50),
        };
        model::write_atomic(
            &model::network_path(&self.s.run_dir, &self.name),
            &serde_json::to_vec_pretty(&net_file)?,
        )?;
        let st_path = state::path(&self.s.state_dir, &self.name);
        let saved = LocalState::load(&st_path).unwrap_or_else(|e| {
            warn!(network = %self.name, "ignoring local state: {e}");
            LocalState::default()
        });
        self.preferred = saved.blocks.clone();
        self.tunnel_ip = saved.tunnel_ip;
        self.lease = saved.lease;
        // Adopt what the kernel has before touching etcd: a restart must not flap.
        self.start().await;
        self.apply_dataplane().await;
        self.publish(&st_path);

        let ka_every =
            Duration::from_millis((self.s.block_ttl as u64 * 1000 / 3).clamp(500, 60_000));
        let mut ka = tokio::time::interval(ka_every);
        let mut usage = tokio::time::interval(Duration::from_millis(500));
        let mut resync = tokio::time::interval(self.s.resync);
        for t in [&mut ka, &mut usage, &mut resync] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                msg = next_watch(&mut self.watch) => self.on_watch(msg).await,
                _ = ka.tick() => self.keep_alive().await,
                _ = usage.tick() => {
                    // Out of touch with etcd: probe every second rather than every TTL/3, so
                    // a healed partition is noticed before the lease runs out.
                    // Likewise when the lease is gone (found by a claim or an update).
                    if (!self.etcd_ok || self.recover) && self.last_ka.elapsed() >= Duration::from_secs(1) {
                        self.keep_alive().await;
                    }
                    self.check_usage().await
                }
                _ = resync.tick() => self.resync().await,
            }
            self.apply_dataplane().await;
            self.publish(&st_path);
        }
        self.shutdown(&st_path).await;
        Ok(())
    }

    /// First contact: lease (reused when alive), adoption of our keys, at least one block.
    async fn start(&mut self) {
        if let Err(e) = self.relist().await {
            self.etcd_failed("list", &e);
            return;
        }
        if let Err(e) = self.ensure_lease().await {
            self.etcd_failed("lease", &e);
            return;
        }
        self.adopt().await;
        self.check_usage().await;
    }

    async fn relist(&mut self) -> Result<()> {
        let l = self.etcd.list(&keys::net_prefix(&self.name)).await?;
        self.etcd_back();
        let before = std::mem::take(&mut self.all);
        self.released.clear();
        let (bp, rp) = (
            keys::blocks_prefix(&self.name),
            keys::released_prefix(&self.name),
        );
        for kv in &l.kvs {
            let k = key_str(kv.key());
            if let (true, Some(b)) = (k.starts_with(&bp), keys::parse_block(k)) {
                match values::decode_block(k, kv.value()) {
                    Ok(v) => {
                        self.all.insert(
                            b,
                            Seen {
                                value: v,
                                mod_rev: kv.mod_revision(),
                                lease: kv.lease(),
                            },
                        );
                    }
                    Err(e) => warn!(network = %self.name, "{e}; key ignored"),
                }
            } else if let (true, Some(b)) = (k.starts_with(&rp), keys::parse_block(k)) {
                match values::decode_released(k, kv.value()) {
                    Ok(v) => {
                        self.released.insert(b, (v, kv.mod_revision()));
                    }
                    Err(e) => warn!(network = %self.name, "{e}; key ignored"),
                }
            }
        }
        // Our view of our own blocks follows etcd.
        let me = self.s.host.clone();
        let gone: Vec<Ipv4Network> = self
            .mine
            .keys()
            .filter(|b| self.all.get(b).is_none_or(|s| s.value.host != me))
            .copied()
            .collect();
        for b in gone {
            match self.all.get(&b) {
                Some(s) => self.lose(b, format!("now leased to host {}", s.value.host)),
                None => self.recover = true,
            }
        }
        for (b, s) in &self.all {
            if s.value.host == me {
                if let Some(r) = self.mine.get_mut(b) {
                    *r = s.mod_rev;
                }
            }
        }
        self.revision = l.revision;
        self.watch = match self
            .etcd
            .watch(&keys::net_prefix(&self.name), l.revision + 1)
            .await
        {
            Ok(w) => Some(w),
            Err(e) => {
                self.etcd_failed("watch", &e);
                None
            }
        };
        // Peer blocks that vanished between two listings: their DELETE event went with the
        // replaced watch, so handle them as the watch would (quarantine after an expiry).
        let me = self.s.host.clone();
        for (b, seen) in before {
            if seen.value.host != me && !self.all.contains_key(&b) {
                self.quarantine(b, seen.lease, Some(seen.value.host)).await;
            }
        }
        Ok(())
    }

    fn lose(&mut self, b: Ipv4Network, reason: String) {
        if self.mine.remove(&b).is_some() {
            error!(network = %self.name, block = %b, "lost block: {reason}");
            self.lost.retain(|l| l.cidr != b);
            self.lost.push(LostBlock { cidr: b, reason });
        }
    }

    /// Reuses the saved lease while etcd still knows it; grants a new one only when the old
    /// one is certainly gone.
    async fn ensure_lease(&mut self) -> Result<()> {
        if let Some(id) = self.lease {
            let ttl = self.etcd.ttl(id).await?;
            if ttl > 0 {
                info!(network = %self.name, lease = format!("{id:x}"), ttl, "reusing lease");
                self.lease_ttl_seen(ttl);
                return Ok(());
            }
            info!(network = %self.name, lease = format!("{id:x}"), "saved lease expired");
            self.lease = None;
        }
        let id = self.etcd.grant(self.s.block_ttl).await?;
        info!(network = %self.name, lease = format!("{id:x}"), ttl = self.s.block_ttl, "granted lease");
        self.lease = Some(id);
        self.keeper = None;
        self.lease_ttl_seen(self.s.block_ttl);
        Ok(())
    }

    /// Takes over blocks etcd lists as ours (after a restart or a lost lease): keys on our
    /// lease are ours as they are; others are re-attached by CAS.
    async fn adopt(&mut self) {
        let Some(lease) = self.lease else { return };
        let mut val = self.block_value();
        let ours: Vec<(Ipv4Network, i64)> = self
            .all
            .iter()
            .filter(|(_, s)| s.value.host == self.s.host)
            .map(|(b, s)| (*b, s.mod_rev))
            .collect();
        if self
            .tunnel_ip
            .is_none_or(|t| !ours.iter().any(|(b, _)| b.contains(t)))
        {
            self.tunnel_ip = ours.first().map(|(b, _)| b.network());
            val.tunnel_ip = self.tunnel_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        }
        for (b, rev) in ours {
            let key = keys::block(&self.name, &b);
            let value = serde_json::to_vec(&val).unwrap_or_default();
            match self.etcd.put_if_rev(&key, rev, value, lease).await {
                Ok(true) => {
                    info!(network = %self.name, block = %b, "adopted block");
                    self.mine.insert(b, rev);
                }
                Ok(false) => {
                    warn!(network = %self.name, block = %b, "block changed while adopting it")
                }
                Err(e) => self.etcd_failed("adopt", &e),
            }
        }
    }

    /// Claims one block: our previous ones first, then a random one among the first free.
    async fn claim(&mut self) -> Result<Option<Ipv4Network>> {
        let Some(lease) = self.lease else {
            bail!("no lease")
        };
        for attempt in 0..10 {
            let cands = self.candidates(attempt);
            let Some(b) = cands.first().copied() else {
                return Ok(None);
            };
            if self.try_claim(b, lease).await? {
                return Ok(Some(b));
            }
            debug!(network = %self.name, block = %b, "lost the race for a block, re-listing");
            self.relist().await?;
        }
        Ok(None)
    }

    fn free(&self, b: &Ipv4Network) -> bool {
        self.config.claimable(b)
            && !self.all.contains_key(b)
            && !self.mine.contains_key(b)
            && self
                .released
                .get(b)
                .is_none_or(|(r, _)| r.host == self.s.host)
    }

    fn candidates(&self, attempt: u64) -> Vec<Ipv4Network> {
        let pref: Vec<Ipv4Network> = self
            .preferred
            .iter()
            .filter(|b| self.free(b))
            .copied()
            .collect();
        if !pref.is_empty() {
            return pref;
        }
        let free: Vec<Ipv4Network> = self
            .config
            .blocks()
            .filter(|b| self.free(b))
            .take(100)
            .collect();
        if free.is_empty() {
            return free;
        }
        // Hosts racing for blocks start at different places (seeded by the host name).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.s.host.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        let i = (h.wrapping_add(attempt.wrapping_mul(7919)) % free.len() as u64) as usize;
        vec![free[i]]
    }

    /// One claim txn: the block key must be absent, and its quarantine marker absent or ours.
    async fn try_claim(&mut self, b: Ipv4Network, lease: i64) -> Result<bool> {
        if self.tunnel_ip.is_none() {
            self.tunnel_ip = Some(b.network());
        }
        let key = keys::block(&self.name, &b);
        let rkey = keys::released(&self.name, &b);
        let mut when = vec![Compare::version(key.as_str(), CompareOp::Equal, 0)];
        let mut then = vec![TxnOp::put(
            key.as_str(),
            serde_json::to_vec(&self.block_value())?,
            Some(PutOptions::new().with_lease(lease)),
        )];
        match self.released.get(&b) {
            Some((_, rev)) => {
                when.push(Compare::mod_revision(rkey.as_str(), CompareOp::Equal, *rev));
                then.push(TxnOp::delete(rkey.as_str(), None));
            }
            None => when.push(Compare::version(rkey.as_str(), CompareOp::Equal, 0)),
        }
        let ok = self
            .etcd
            .txn(Txn::new().when(when).and_then(then), &key)
            .await?;
        if ok {
            info!(network = %self.name, block = %b, "claimed block");
            self.mine.insert(b, 0);
            self.lost.retain(|l| l.cidr != b);
        } else if self.mine.is_empty() {
            self.tunnel_ip = None;
        }
        Ok(ok)
    }

    /// Claims blocks while free addresses run low (watermark: a quarter of a block), up to
    /// the maximum; forgets lost blocks nobody uses any more.
    async fn check_usage(&mut self) {
        let reserved = model::reserved_ips(&self.s.run_dir, &self.name);
        self.lost
            .retain(|l| reserved.iter().any(|ip| l.cidr.contains(*ip)));
        let free: usize = self.mine.keys().map(|b| model::free_in(b, &reserved)).sum();
        let used = reserved
            .iter()
            .filter(|ip| self.mine.keys().any(|b| b.contains(**ip)))
            .count();
        obs::update(&self.name, |o| (o.used, o.free) = (used, free));
        if !self.etcd_ok || self.lease.is_none() || self.recover {
            return;
        }
        let per_block = self
            .config
            .blocks()
            .nth(1)
            .map(|b| model::block_capacity(&b))
            .unwrap_or(1);
        let low = (per_block / 4).max(1);
        if !self.mine.is_empty() && (free >= low || self.mine.len() >= self.s.max_blocks) {
            return;
        }
        match self.claim().await {
            Ok(Some(_)) => {}
            Ok(None) => {
                warn!(network = %self.name, free, "no free block left in {}", self.config.subnet)
            }
            Err(e) => self.etcd_failed("claim", &e),
        }
    }

    /// Renews the lease with the same ID; through an outage it keeps trying the same ID, and
    /// only a "lease not found" answer from etcd makes it re-claim.
    async fn keep_alive(&mut self) {
        self.last_ka = Instant::now();
        if self.lease.is_none() || self.recover {
            self.recover_lease().await;
            return;
        }
        let id = self.lease.unwrap_or_default();
        if self.keeper.is_none() {
            match self.etcd.keep_alive_stream(id).await {
                Ok(k) => self.keeper = Some(k),
                // The opener reads the first answer itself: an expired lease shows up here.
                Err(e) if store::lease_gone(&e) => {
                    self.lease_gone("keep-alive");
                    return self.recover_lease().await;
                }
                Err(e) => {
                    obs::update(&self.name, |o| o.lease.keepalive_failures += 1);
                    return self.etcd_failed("keep-alive", &e);
                }
            }
        }
        let t = self.etcd.timeout();
        let Some((keeper, stream)) = self.keeper.as_mut() else {
            return;
        };
        match store::keep_alive_once(t, keeper, stream).await {
            Ok(ttl) if ttl > 0 => {
                let was_down = !self.etcd_ok;
                self.etcd_back();
                self.lease_ttl_seen(ttl);
                if was_down {
                    // Missed events while down: re-read everything.
                    self.resync().await;
                }
            }
            Ok(_) => {
                self.lease_gone("keep-alive");
                self.recover_lease().await;
            }
            Err(e) => {
                self.keeper = None;
                obs::update(&self.name, |o| o.lease.keepalive_failures += 1);
                self.etcd_failed("keep-alive", &e);
            }
        }
    }

    /// After the lease or a key of ours vanished: a fresh lease, the same blocks again where
    /// nobody else took them (quarantine markers naming us do not stop us), conflicts reported.
    async fn recover_lease(&mut self) {
        if self.lease.is_some() {
            match self.etcd.ttl(self.lease.unwrap_or_default()).await {
                Ok(t) if t > 0 => {}
                Ok(_) => self.lease = None,
                Err(e) => return self.etcd_failed("lease timetolive", &e),
            }
        }
        if let Err(e) = self.relist().await {
            return self.etcd_failed("list", &e);
        }
        if self.lease.is_none() {
            if let Err(e) = self.ensure_lease().await {
                return self.etcd_failed("lease", &e);
            }
        }
        let lease = self.lease.unwrap_or_default();
        let wanted: Vec<Ipv4Network> = self
            .preferred
            .iter()
            .chain(self.mine.keys())
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        self.adopt().await;
        for b in wanted {
            // Adopted (our key on our lease) or kept: nothing to do. A block we still list
            // whose key is gone (expired during a partition) must be claimed again.
            let me = &self.s.host;
            if self.mine.contains_key(&b) && self.all.get(&b).is_some_and(|s| s.value.host == *me) {
                continue;
            }
            let listed = !self.all.contains_key(&b) && self.mine.remove(&b).is_some();
            if let Some(s) = self.all.get(&b) {
                let reason = format!(
                    "leased to host {} while this host's lease was gone",
                    s.value.host
                );
                self.mine.insert(b, 0);
                self.lose(b, reason);
                continue;
            }
            match self.try_claim(b, lease).await {
                Ok(true) => info!(network = %self.name, block = %b, "re-claimed block"),
                Ok(false) => {
                    self.mine.insert(b, 0);
                    let who = self
                        .released
                        .get(&b)
                        .map(|(r, _)| r.host.clone())
                        .unwrap_or_default();
                    self.lose(b, format!("could not re-claim it (quarantined for {who})"));
                }
                Err(e) => {
                    if listed {
                        // Still ours to re-claim on the next round.
                        self.mine.insert(b, 0);
                    }
                    return self.etcd_failed("re-claim", &e);
                }
            }
        }
        self.recover = false;
        let _ = self.relist().await;
    }

    async fn resync(&mut self) {
        if let Err(e) = self.relist().await {
            self.etcd_failed("resync", &e);
        } else {
            self.fix_own_values().await;
            match self.etcd.status().await {
                Ok(st) => obs::update(&self.name, |o| {
                    o.etcd.member = format!("{:x}", st.member);
                    o.etcd.leader = format!("{:x}", st.leader);
                    o.etcd.version = st.version;
                }),
                Err(e) => self.etcd_failed("status", &e),
            }
        }
    }

    /// Our block values must carry the current tunnel IP, VTEP and MAC.
    async fn fix_own_values(&mut self) {
        let Some(lease) = self.lease else { return };
        let want = self.block_value();
        let stale: Vec<(Ipv4Network, i64)> = self
            .all
            .iter()
            .filter(|(b, s)| self.mine.contains_key(b) && s.value != want)
            .map(|(b, s)| (*b, s.mod_rev))
            .collect();
        for (b, rev) in stale {
            let key = keys::block(&self.name, &b);
            let value = serde_json::to_vec(&want).unwrap_or_default();
            if let Err(e) = self.etcd.put_if_rev(&key, rev, value, lease).await {
                self.etcd_failed("update block", &e);
            }
        }
    }

    async fn on_watch(
        &mut self,
        msg: Result<Option<etcd_client::WatchResponse>, etcd_client::Error>,
    ) {
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => {
                // Stream ended (etcd restarted, connection lost): re-list when reachable.
                self.watch = None;
                if let Err(e) = self.relist().await {
                    self.etcd_failed("watch", &e);
                }
                return;
            }
        };
        if resp.compact_revision() > 0 || resp.canceled() {
            info!(network = %self.name, compact = resp.compact_revision(), "watch compacted or cancelled; re-listing");
            self.watch = None;
            if let Err(e) = self.relist().await {
                self.etcd_failed("re-list", &e);
            }
            return;
        }
        self.etcd_back();
        let (bp, rp) = (
            keys::blocks_prefix(&self.name),
            keys::released_prefix(&self.name),
        );
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let k = key_str(kv.key()).to_string();
            self.revision = self.revision.max(kv.mod_revision());
            let Some(b) = keys::parse_block(&k) else {
                continue;
            };
            if k.starts_with(&bp) {
                match ev.event_type() {
                    EventType::Put => {
                        let v = match values::decode_block(&k, kv.value()) {
                            Ok(v) => v,
                            Err(e) => {
                                warn!(network = %self.name, "{e}; key ignored");
                                continue;
                            }
                        };
                        if self.mine.contains_key(&b) {
                            if v.host == self.s.host {
                                self.mine.insert(b, kv.mod_revision());
                            } else {
                                self.lose(b, format!("now leased to host {}", v.host));
                            }
                        }
                        self.all.insert(
                            b,
                            Seen {
                                value: v,
                                mod_rev: kv.mod_revision(),
                                lease: kv.lease(),
                            },
                        );
                    }
                    EventType::Delete => {
                        let prev = self.all.remove(&b);
                        if self.mine.contains_key(&b) {
                            warn!(network = %self.name, block = %b, "our block key vanished");
                            self.recover = true;
                        } else if let Some(p) = ev.prev_kv() {
                            self.quarantine(b, p.lease(), prev.map(|s| s.value.host))
                                .await;
                        }
                    }
                }
            } else if k.starts_with(&rp) {
                match ev.event_type() {
                    EventType::Put => match values::decode_released(&k, kv.value()) {
                        Ok(v) => {
                            self.released.insert(b, (v, kv.mod_revision()));
                        }
                        Err(e) => warn!(network = %self.name, "{e}; key ignored"),
                    },
                    EventType::Delete => {
                        self.released.remove(&b);
                    }
                }
            }
        }
    }

    /// A peer's block disappeared. If its lease expired (host dead or cut off), mark the block
    /// as released with its own lease: nobody but that host may claim it before the
    /// quarantine ends. A block its owner deleted on purpose (lease alive) needs none.
    async fn quarantine(&mut self, b: Ipv4Network, lease: i64, host: Option<String>) {
        let Some(host) = host else { return };
        info!(network = %self.name, block = %b, %host, "peer block withdrawn");
        if lease != 0 {
            match self.etcd.ttl(lease).await {
                Ok(t) if t > 0 => return,
                Ok(_) => {}
                Err(e) => return self.etcd_failed("lease timetolive", &e),
            }
        }
        let q = match self.etcd.grant(self.s.quarantine).await {
            Ok(q) => q,
            Err(e) => return self.etcd_failed("quarantine lease", &e),
        };
        let v = ReleasedValue {
            host: host.clone(),
            at: keys::now(),
        };
        let key = keys::released(&self.name, &b);
        let bkey = keys::block(&self.name, &b);
        // Only while the block is still unclaimed; one peer wins, the others' txns fail.
        let txn = Txn::new()
            .when(vec![
                Compare::version(key.as_str(), CompareOp::Equal, 0),
                Compare::version(bkey.as_str(), CompareOp::Equal, 0),
            ])
            .and_then(vec![TxnOp::put(
                key.as_str(),
                serde_json::to_vec(&v).unwrap_or_default(),
                Some(PutOptions::new().with_lease(q)),
            )]);
        match self.etcd.txn(txn, &key).await {
            Ok(true) => {
                info!(network = %self.name, block = %b, %host, secs = self.s.quarantine, "block quarantined")
            }
            Ok(false) => {
                let _ = self.etcd.revoke(q).await;
            }
            Err(e) => self.etcd_failed("quarantine", &e),
        }
    }

    fn desired(&self) -> Desired {
        let mut peers: Vec<Peer> = self
            .all
            .iter()
            .filter(|(_, s)| s.value.host != self.s.host && !s.value.tunnel_ip.is_unspecified())
            .filter_map(|(b, s)| {
                Some(Peer {
                    block: *b,
                    tunnel_ip: s.value.tunnel_ip,
                    mac: dataplane::parse_mac(&s.value.mac)?,
                    vtep: s.value.vtep,
                })
            })
            .collect();
        peers.sort();
        Desired {
            link: self.config.vxlan_name(),
            vni: self.config.vni,
            port: self.config.port,
            vtep: self.s.vtep,
            underlay: self.s.underlay.clone(),
            mtu: self.s.underlay_mtu.saturating_sub(50),
            mac: self.mac(),
            tunnel_ip: self
                .tunnel_ip
                .filter(|t| self.mine.keys().any(|b| b.contains(*t))),
            peers,
        }
    }

    /// Reconciles when the desired state changed, and on every resync (drift repair).
    async fn apply_dataplane(&mut self) {
        let d = self.desired();
        let d2 = d.clone();
        let guard = self.s.guard;
        let vteps: Vec<Ipv4Addr> = d.peers.iter().map(|p| p.vtep).collect();
        let t0 = Instant::now();
        let res = tokio::task::spawn_blocking(move || -> Result<_> {
            let res = dataplane::reconcile(&d2).and_then(|c| {
                if guard {
                    crate::guard::sync(d2.vni, d2.port, &vteps)?;
                }
                Ok(c)
            });
            // What is on the link, also after a failed pass (for status and metrics).
            let programmed = dataplane::programmed(&d2.link).unwrap_or_default();
            Ok((res, programmed))
        })
        .await;
        let secs = t0.elapsed().as_secs_f64();
        let (res, programmed) = match res {
            Ok(Ok((r, p))) => (r, p),
            Ok(Err(e)) => (Err(e), Default::default()),
            Err(e) => (Err(anyhow!("data plane task: {e}")), Default::default()),
        };
        let (mut added, mut removed, mut err) = (0, 0, String::new());
        match res {
            Ok(c) if c != dataplane::Changes::default() => {
                (added, removed) = (c.added as u64, c.removed as u64);
                info!(network = %self.name, peers = d.peers.len(), added = c.added, removed = c.removed, link_created = c.link_created, "data plane updated")
            }
            Ok(_) => {}
            Err(e) => {
                err = format!("{e:#}");
                error!(network = %self.name, "data plane: {err}");
            }
        }
        obs::update(&self.name, |o| {
            let r = &mut o.reconcile;
            r.count += 1;
            r.seconds_sum += secs;
            r.last_seconds = secs;
            r.last_at = obs::now();
            r.routes_added += added;
            r.routes_removed += removed;
            if !err.is_empty() {
                r.errors += 1;
                r.last_error = err;
            }
        });
        self.programmed = programmed;
        self.desired = Some(d);
    }

    fn publish(&mut self, st_path: &std::path::Path) {
        let expired = self.lease_presumed_expired();
        if expired && self.published.as_ref().is_some_and(|p| !p.lease_expired) {
            warn!(network = %self.name, "lease not renewed for longer than its TTL: peers have probably withdrawn this host's blocks (STATUS 51 until etcd answers)");
        }
        self.publish_status(expired);
        let state = if !self.lost.is_empty() {
            Health::Lost
        } else if !self.etcd_ok {
            Health::Degraded
        } else {
            Health::Ok
        };
        let mut hb = HostBlocks {
            network: self.name.clone(),
            host: self.s.host.clone(),
            state,
            etcd_reachable: self.etcd_ok,
            etcd_error: self.etcd_err.clone(),
            blocks: self.mine.keys().copied().collect(),
            lost: self.lost.clone(),
            lease_expired: expired,
            updated: 0,
        };
        if self.published.as_ref() == Some(&hb) {
            return;
        }
        let cmp = hb.clone();
        hb.updated = keys::now();
        let path = model::blocks_path(&self.s.run_dir, &self.name);
        match serde_json::to_vec_pretty(&hb)
            .map_err(std::io::Error::other)
            .and_then(|b| model::write_atomic(&path, &b))
        {
            Ok(()) => {
                info!(network = %self.name, state = ?hb.state, blocks = ?hb.blocks, lost = hb.lost.len(), "published blocks.json");
                self.published = Some(cmp);
            }
            Err(e) => error!(network = %self.name, "write {}: {e}", path.display()),
        }
        if !self.mine.is_empty() {
            self.preferred = self.mine.keys().copied().collect();
        }
        let st = LocalState {
            lease: self.lease,
            tunnel_ip: self.tunnel_ip,
            blocks: self.preferred.clone(),
        };
        if let Err(e) = st.save(st_path) {
            error!(network = %self.name, "save {}: {e}", st_path.display());
        }
    }

    /// Writes `status.json` when anything in it changed (see `obs`).
    fn publish_status(&mut self, expired: bool) {
        let mut hosts: BTreeMap<String, obs::HostView> = BTreeMap::new();
        for (b, seen) in &self.all {
            let h = hosts
                .entry(seen.value.host.clone())
                .or_insert_with(|| obs::HostView {
                    host: seen.value.host.clone(),
                    vtep: Some(seen.value.vtep),
                    this_host: seen.value.host == self.s.host,
                    ..Default::default()
                });
            h.blocks.push(*b);
            if !h.this_host && self.programmed.contains(b) {
                h.programmed += 1;
            }
        }
        let state = if !self.lost.is_empty() {
            "lost"
        } else if expired {
            "expired"
        } else if !self.etcd_ok {
            "degraded"
        } else {
            "ok"
        };
        let st = obs::update(&self.name, |o| {
            o.host = self.s.host.clone();
            o.vtep = Some(self.s.vtep);
            o.subnet = Some(self.config.subnet);
            o.block_len = self.config.block;
            o.vni = self.config.vni;
            o.state = state.to_string();
            o.blocks = self.mine.keys().copied().collect();
            o.lost = self.lost.clone();
            o.hosts = hosts.into_values().collect();
            o.lease.presumed_expired = expired;
            if self.lease.is_none() {
                o.lease.id.clear();
            }
            o.clone()
        });
        if self.status_written.as_ref() == Some(&st) {
            return;
        }
        let path = obs::status_path(&self.s.run_dir, &self.name);
        match serde_json::to_vec_pretty(&st)
            .map_err(std::io::Error::other)
            .and_then(|b| model::write_atomic(&path, &b))
        {
            Ok(()) => self.status_written = Some(st),
            Err(e) => error!(network = %self.name, "write {}: {e}", path.display()),
        }
    }

    /// With no container left on the network, the host leaves it cleanly: keys deleted (the
    /// lease revoked), VXLAN link and published files removed. With containers, everything
    /// stays (a restarted agent renews the same lease and adopts the data plane).
    async fn shutdown(&mut self, st_path: &std::path::Path) {
        let in_use = model::reserved_ips(&self.s.run_dir, &self.name)
            .iter()
            .any(|ip| self.mine.keys().any(|b| b.contains(*ip)));
        if in_use {
            info!(network = %self.name, "containers still attached: keeping lease, blocks and data plane");
            return;
        }
        // Delete our keys while the lease still lives, so peers see a deliberate release (no
        // quarantine) rather than an expiry; revoke the emptied lease after they had time to look.
        let mine: Vec<(Ipv4Network, i64)> = self.mine.iter().map(|(b, r)| (*b, *r)).collect();
        for (b, rev) in mine {
            let key = keys::block(&self.name, &b);
            match self.etcd.delete_if_rev(&key, rev).await {
                Ok(true) => info!(network = %self.name, block = %b, "released block"),
                Ok(false) => {
                    warn!(network = %self.name, block = %b, "block changed under us; not deleting it")
                }
                Err(e) => {
                    warn!(network = %self.name, "could not release blocks: {e:#}; they expire after the TTL");
                    return;
                }
            }
        }
        if let Some(id) = self.lease {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Err(e) = self.etcd.revoke(id).await {
                warn!(network = %self.name, "revoke lease: {e:#}");
            }
        }
        let link = self.config.vxlan_name();
        let vni = self.config.vni;
        let guard = self.s.guard;
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = dataplane::remove(&link) {
                error!("remove {link}: {e:#}");
            }
            // The DOCKER-USER accept rules the plugin/shim added for the link (finish_add).
            if let Err(e) = cni_nft::forward::remove_bridge_forwarding(&link) {
                warn!("remove forwarding rules of {link}: {e}");
            }
            if guard {
                let _ = crate::guard::remove(vni);
            }
        })
        .await;
        for p in [
            model::blocks_path(&self.s.run_dir, &self.name),
            model::network_path(&self.s.run_dir, &self.name),
            obs::status_path(&self.s.run_dir, &self.name),
        ] {
            let _ = std::fs::remove_file(p);
        }
        let st = LocalState {
            lease: None,
            tunnel_ip: self.tunnel_ip,
            blocks: self.preferred.clone(),
        };
        let _ = st.save(st_path);
    }
}

/// The next watch message, or never when no watch is open.
async fn next_watch(
    w: &mut Option<WatchStream>,
) -> Result<Option<etcd_client::WatchResponse>, etcd_client::Error> {
    match w {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}
