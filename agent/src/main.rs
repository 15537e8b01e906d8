//! `cnm-agent`: the per-host daemon of cluster networks. It is the host's only etcd client:
//! it leases address blocks per network, publishes them for the `cluster` CNI plugin
//! (`<run-dir>/<net>/blocks.json`), and keeps the kernel VXLAN data plane in line with the
//! blocks of the other hosts.

mod dataplane;
mod guard;
mod metrics_http;
mod net;
mod obs;
mod served;
mod sock;
mod state;
mod status_cmd;
mod store;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use cni_cluster::model::NetConfig;
use cnm_agent::{keys, logtime};
use tracing::{error, info};

use crate::net::Settings;
use crate::served::{Origin, Served};
use crate::store::Etcd;

#[derive(Parser, Debug)]
#[command(
    name = "cnm-agent",
    version,
    about = "Node agent of cluster networks (etcd block leases + kernel VXLAN)",
    after_help = "Status of a running agent: cnm-agent status [--run-dir DIR] [--network NAME] [--json]"
)]
struct Args {
    /// etcd endpoints, comma-separated (http://host:port).
    #[arg(long, value_delimiter = ',', required = true)]
    etcd: Vec<String>,
    /// This host's name (unique in the cluster).
    #[arg(long)]
    host: String,
    /// Underlay interface; its first IPv4 address is the VTEP, its MTU - 50 the network MTU.
    #[arg(long)]
    underlay: String,
    /// Persistent state: <dir>/<net>/state.json (lease ID, preferred blocks, tunnel IP).
    #[arg(long, default_value = "/var/lib/cnm")]
    state_dir: PathBuf,
    /// Published files: <dir>/<net>/{network,blocks,status}.json and ipam/ (host-local).
    #[arg(long, default_value = cni_cluster::model::DEFAULT_RUN_DIR)]
    run_dir: PathBuf,
    /// TTL of the block lease in seconds (renewed every third of it, with the same lease ID).
    #[arg(long, default_value_t = 3600)]
    block_ttl: i64,
    /// Seconds an expired block stays quarantined before another host may claim it
    /// (default: the block TTL).
    #[arg(long)]
    quarantine: Option<i64>,
    /// Seconds between full resyncs (etcd re-list + data plane diff).
    #[arg(long, default_value_t = 30)]
    resync: u64,
    /// Most blocks one host may hold per network.
    #[arg(long, default_value_t = 20)]
    max_blocks: usize,
    /// Per-call etcd deadline in seconds.
    #[arg(long, default_value_t = 2)]
    etcd_timeout: u64,
    /// Do not install the nftables VXLAN guard (UDP from unregistered VTEPs dropped).
    #[arg(long)]
    no_guard: bool,
    /// A network to serve: NAME (config read from etcd) or
    /// NAME=SUBNET[,block=26][,vni=N][,gateway=IP][,port=4789] (created if absent, else must
    /// match). Repeatable; without it every network configured in etcd is served.
    #[arg(long = "network")]
    networks: Vec<String>,
    /// Local API socket for cnm-shim (default: <run-dir>/agent.sock; "" disables it).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9476).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// CA certificate (PEM) that signed etcd's server certificate; needs https:// endpoints.
    #[arg(long, value_name = "FILE")]
    etcd_cacert: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's --client-cert-auth (its CN is the etcd user).
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// Private key (PEM) of --etcd-cert.
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
}

/// Parses `NAME[=SUBNET,key=value...]`.
fn parse_network(s: &str) -> Result<(String, Option<NetConfig>)> {
    let name = s.split_once('=').map_or(s, |(n, _)| n);
    if !keys::valid_net_name(name) {
        return Err(anyhow!(
            "--network {s:?}: the network name must be 1-64 characters [A-Za-z0-9_.-], not starting with '.'"
        ));
    }
    let Some((name, spec)) = s.split_once('=') else {
        return Ok((s.to_string(), None));
    };
    let mut parts = spec.split(',');
    let subnet: ipnetwork::Ipv4Network = parts
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|e| anyhow!("--network {s}: subnet: {e}"))?;
    let mut c = NetConfig {
        subnet,
        block: 26.max(subnet.prefix()),
        vni: 0,
        gateway: subnet
            .nth(1)
            .ok_or_else(|| anyhow!("--network {s}: subnet too small"))?,
        port: 4789,
        mode: "blocks".into(),
    };
    for p in parts {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("--network {s}: {p:?} is not key=value"))?;
        let bad = |e: &dyn std::fmt::Display| anyhow!("--network {s}: {k}: {e}");
        match k {
            "block" => c.block = v.trim_start_matches('/').parse().map_err(|e| bad(&e))?,
            "vni" => c.vni = v.parse().map_err(|e| bad(&e))?,
            "gateway" => c.gateway = v.parse().map_err(|e| bad(&e))?,
            "port" => c.port = v.parse().map_err(|e| bad(&e))?,
            _ => bail!("--network {s}: unknown key {k:?} (block, vni, gateway, port)"),
        }
    }
    if c.vni == 0 {
        // Stable default from the name, in 4096..2^24.
        let mut h: u32 = 2_166_136_261;
        for b in name.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(16_777_619);
        }
        c.vni = 4096 + h % (0xff_ffff - 4096);
    }
    c.validate().map_err(|e| anyhow!("--network {s}: {e}"))?;
    Ok((name.to_string(), Some(c)))
}

async fn discover(etcd: &Etcd) -> Result<Vec<(String, Option<NetConfig>)>> {
    let l = etcd.list(&keys::nets_prefix()).await?;
    let mut out = Vec::new();
    for kv in l.kvs {
        let k = String::from_utf8_lossy(kv.key()).into_owned();
        if let Some(rest) = k.strip_prefix(&keys::nets_prefix()) {
            if let Some(name) = rest.strip_suffix("/config") {
                out.push((name.to_string(), None));
            }
        }
    }
    Ok(out)
}

async fn run(args: Args) -> Result<()> {
    let nets: Vec<(String, Option<NetConfig>)> = args
        .networks
        .iter()
        .map(|s| parse_network(s))
        .collect::<Result<_>>()?;
    let (vtep, mtu) = {
        let u = args.underlay.clone();
        tokio::task::spawn_blocking(move || dataplane::underlay(&u)).await??
    };
    info!(host = %args.host, underlay = %args.underlay, %vtep, mtu, "starting");
    let tls = store::Tls {
        cacert: args.etcd_cacert.clone(),
        cert: args.etcd_cert.clone(),
        key: args.etcd_key.clone(),
    };
    let etcd = Etcd::new(&args.etcd, Duration::from_secs(args.etcd_timeout), &tls).await?;
    obs::set_etcd(&args.etcd, tls.enabled());
    if let Some(addr) = args.metrics_listen {
        metrics_http::spawn(addr).await?;
    }
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| args.run_dir.join("agent.sock"));
    let listener = if socket.as_os_str().is_empty() {
        None
    } else {
        Some(sock::bind(&socket)?)
    };
    let nets = if nets.is_empty() {
        loop {
            match discover(&etcd).await {
                // With the socket, networks may also come later (joined by cnm-shim).
                Ok(n) if !n.is_empty() || listener.is_some() => break n,
                Ok(_) => info!("no network configured in etcd yet"),
                Err(e) => info!("waiting for etcd: {e:#}"),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    } else {
        nets
    };
    let settings = Settings {
        host: args.host.clone(),
        underlay: args.underlay.clone(),
        vtep,
        underlay_mtu: mtu,
        state_dir: args.state_dir.clone(),
        run_dir: args.run_dir.clone(),
        block_ttl: args.block_ttl,
        quarantine: args.quarantine.unwrap_or(args.block_ttl),
        resync: Duration::from_secs(args.resync.max(1)),
        max_blocks: args.max_blocks.max(1),
        guard: !args.no_guard,
    };
    let served = std::sync::Arc::new(Served::new(settings, etcd.clone()));
    for (name, want) in nets {
        let config = net::ensure_config(&etcd, &name, want.as_ref()).await?;
        served.start(&name, config, Origin::Flag).await;
    }
    for name in served::joined(&args.state_dir) {
        let (sv, e) = (served.clone(), etcd.clone());
        tokio::spawn(async move {
            match net::ensure_config(&e, &name, None).await {
                Ok(c) => {
                    sv.start(&name, c, Origin::Join).await;
                }
                Err(err) => error!(network = %name, "joined network: {err:#}"),
            }
        });
    }
    if let Some(l) = listener {
        tokio::spawn(sock::serve(l, served.clone()));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: stopping"),
        _ = term.recv() => info!("SIGTERM: stopping"),
    }
    served.stop_all().await;
    if !socket.as_os_str().is_empty() {
        let _ = std::fs::remove_file(&socket);
    }
    info!("stopped");
    Ok(())
}

fn main() {
    let log = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // The same timestamps as cnm-shim's log; none under journald, which adds its own.
    if logtime::to_journal() {
        log.without_time().init();
    } else {
        log.with_timer(logtime::Rfc3339Millis).init();
    }
    // `cnm-agent status ...` reads what a running agent published; no daemon flags needed.
    if std::env::args().nth(1).as_deref() == Some("status") {
        std::process::exit(status_cmd::main(std::env::args().skip(1)));
    }
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cnm-agent: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(args)).context("cnm-agent") {
        error!("{e:#}");
        std::process::exit(1);
    }
}
