//! The agent's local API for cnm-shim (Docker networks that span hosts): a Unix socket, mode
//! 0600, root peers only, one JSON object per line in each direction. The shim never talks
//! to etcd; it asks here.
//!
//! ```text
//! {"op":"join","network":"n1","subnet":"10.250.0.0/16","gateway":"10.250.0.1","block":26,"vni":4097,"port":4789}
//!   -> {"ok":true,"network":"n1","config":{...},"run_dir":"/run/cnm"}      (after blocks.json has a block)
//! {"op":"lookup","subnet":"10.250.0.0/16"} -> {"ok":true,"network":"n1"|null,"config":{...}|null}
//! {"op":"leave","network":"n1"}            -> {"ok":true,"message":"left network n1"}
//! any error                                 -> {"ok":false,"error":"..."}
//! ```
//!
//! `join`: fields left out are taken from etcd's config when it exists (else the defaults of
//! `--network`); the first host creates the config (txn create), later hosts must match it,
//! else the error names the field. Then the network is served like a `--network` one.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cni_cluster::model::{self, HostBlocks, NetConfig};
use ipnetwork::Ipv4Network;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

use crate::keys;
use crate::served::{self, Origin, Served};

/// Longest request line accepted.
const MAX_LINE: u64 = 64 * 1024;
/// How long a join waits for etcd (config) and then for the first block.
const JOIN_ETCD: Duration = Duration::from_secs(10);
const JOIN_BLOCK: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Request {
    Join {
        network: String,
        subnet: Ipv4Network,
        #[serde(default)]
        gateway: Option<Ipv4Addr>,
        #[serde(default)]
        block: Option<u8>,
        #[serde(default)]
        vni: Option<u32>,
        #[serde(default)]
        port: Option<u16>,
    },
    Lookup {
        subnet: Ipv4Network,
    },
    Leave {
        network: String,
    },
}

/// Binds the socket (a stale one is replaced, a live one refused) with mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "{} is in use by another cnm-agent; stop it or pass another --socket",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("remove stale {}", path.display()))?;
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    info!(socket = %path.display(), "listening");
    Ok(l)
}

/// Accepts connections until the task is dropped.
pub async fn serve(l: UnixListener, served: Arc<Served>) {
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                let sv = served.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(s, sv).await {
                        warn!("socket client: {e:#}");
                    }
                });
            }
            Err(e) => {
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(s: UnixStream, served: Arc<Served>) -> Result<()> {
    // The socket mode already keeps others out; the credential check also covers a socket
    // file whose mode someone relaxed.
    let uid = s.peer_cred().context("peer credentials")?.uid();
    let (r, mut w) = s.into_split();
    if uid != 0 {
        let e = json!({"ok": false, "error": format!("uid {uid} refused: the cnm-agent socket is for root only")});
        w.write_all(format!("{e}\n").as_bytes()).await?;
        return Ok(());
    }
    let mut r = BufReader::new(r.take(MAX_LINE));
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') {
            bail!("request without newline or longer than {MAX_LINE} bytes");
        }
        let reply = match serde_json::from_str::<Request>(line.trim()) {
            Ok(req) => match handle(&served, req).await {
                Ok(mut v) => {
                    v["ok"] = json!(true);
                    v
                }
                Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
            },
            Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
        };
        w.write_all(format!("{reply}\n").as_bytes()).await?;
        // The limit is per connection: a new request line gets a fresh budget.
        r.get_mut().set_limit(MAX_LINE);
    }
}

async fn handle(served: &Served, req: Request) -> Result<Value> {
    match req {
        Request::Join {
            network,
            subnet,
            gateway,
            block,
            vni,
            port,
        } => join(served, &network, subnet, gateway, block, vni, port).await,
        Request::Lookup { subnet } => {
            let found = configs(served)
                .await?
                .into_iter()
                .find(|(_, c)| c.subnet == subnet);
            Ok(match found {
                Some((n, c)) => json!({"network": n, "config": c}),
                None => json!({"network": null, "config": null}),
            })
        }
        Request::Leave { network } => {
            let m = served.leave(&network).await;
            info!("{m}");
            Ok(json!({ "message": m }))
        }
    }
}

/// Every network config in etcd.
async fn configs(served: &Served) -> Result<Vec<(String, NetConfig)>> {
    let l = served.etcd.list(&keys::nets_prefix()).await?;
    Ok(l.kvs
        .iter()
        .filter_map(|kv| {
            let k = std::str::from_utf8(kv.key()).ok()?;
            let name = k
                .strip_prefix(&keys::nets_prefix())?
                .strip_suffix("/config")?;
            Some((name.to_string(), NetConfig::decode(kv.value()).ok()?))
        })
        .collect())
}

async fn join(
    served: &Served,
    name: &str,
    subnet: Ipv4Network,
    gateway: Option<Ipv4Addr>,
    block: Option<u8>,
    vni: Option<u32>,
    port: Option<u16>,
) -> Result<Value> {
    if !keys::valid_net_name(name) {
        bail!("cluster network name {name:?}: use 1-64 characters from [A-Za-z0-9_.-], not starting with '.'");
    }
    let key = keys::config(name);
    let have: Option<NetConfig> = match tokio::time::timeout(JOIN_ETCD, served.etcd.get(&key)).await
    {
        Ok(Ok(kv)) => kv.and_then(|kv| serde_json::from_slice(kv.value()).ok()),
        Ok(Err(e)) => return Err(e.context("cannot join: etcd unreachable")),
        Err(_) => bail!("cannot join: etcd unreachable (no answer within {JOIN_ETCD:?})"),
    };
    // The same spec syntax as --network, so defaults (block, VNI from the name, gateway) are
    // computed in one place; what the caller leaves out comes from etcd's config.
    let mut spec = format!("{name}={subnet}");
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            spec.push_str(&format!(",{k}={v}"));
        }
    };
    add(
        "block",
        block
            .or(have.as_ref().map(|h| h.block))
            .map(|v| v.to_string()),
    );
    add(
        "vni",
        vni.or(have.as_ref().map(|h| h.vni)).map(|v| v.to_string()),
    );
    add(
        "gateway",
        gateway
            .or(have.as_ref().map(|h| h.gateway))
            .map(|v| v.to_string()),
    );
    add(
        "port",
        port.or(have.as_ref().map(|h| h.port))
            .map(|v| v.to_string()),
    );
    let (_, want) = crate::parse_network(&spec)?;
    let want = want.ok_or_else(|| anyhow!("network {name}: no subnet"))?;
    let config = tokio::time::timeout(
        JOIN_ETCD,
        crate::net::ensure_config(&served.etcd, name, Some(&want)),
    )
    .await
    .map_err(|_| anyhow!("cannot join network {name}: etcd unreachable"))??;
    let m = served::marker(&served.settings.state_dir, name);
    if let Some(d) = m.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    std::fs::write(&m, b"").with_context(|| format!("write {}", m.display()))?;
    let config = served.start(name, config, Origin::Join).await;
    let run_dir = served.settings.run_dir.clone();
    let t0 = Instant::now();
    loop {
        let b: Option<HostBlocks> = model::read_json(&model::blocks_path(&run_dir, name)).ok();
        if b.is_some_and(|b| !b.blocks.is_empty()) {
            break;
        }
        if t0.elapsed() > JOIN_BLOCK {
            bail!(
                "joined network {name} but no block was leased within {JOIN_BLOCK:?} (subnet full or etcd trouble; see the cnm-agent log)"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(json!({"network": name, "config": config, "run_dir": run_dir}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_strictly() {
        let r: Request = serde_json::from_str(
            r#"{"op":"join","network":"n1","subnet":"10.250.0.0/16","vni":7}"#,
        )
        .unwrap();
        assert!(matches!(
            r,
            Request::Join {
                vni: Some(7),
                block: None,
                ..
            }
        ));
        let r: Request = serde_json::from_str(r#"{"op":"lookup","subnet":"10.1.0.0/16"}"#).unwrap();
        assert!(matches!(r, Request::Lookup { .. }));
        for bad in [
            r#"{"op":"join","network":"n1"}"#,
            r#"{"op":"join","network":"n1","subnet":"10.250.0.0/16","mtu":1400}"#,
            r#"{"op":"drop"}"#,
            r#"{"op":"leave","network":"n1","subnet":"x"}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }
}
