//! Command-line configuration.

use std::path::PathBuf;
use std::time::Duration;

use ipnetwork::IpNetwork;

use crate::err;
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct Config {
    /// The plugin name users type in `-d` and `--ipam-driver`.
    pub name: String,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// Where `bridge` and `host-local` are looked up (`:`-separated, like CNI_PATH).
    pub cni_path: String,
    /// Upper bound for every plugin exec.
    pub exec_timeout: Duration,
    /// Pools handed out when a network is created without `--subnet`.
    pub default_pool: IpNetwork,
    pub default_pool_size: u8,
    /// Where `-o cni.network=<name>` / `--ipam-opt cni.network=<name>` look the network up.
    pub cni_conf_dir: PathBuf,
    /// cnm-agent's local socket (`-o cluster=<name>` networks).
    pub agent_socket: PathBuf,
    pub debug: bool,
}

pub const USAGE: &str = "\
cnm-shim: Docker remote network + IPAM driver built on the CNI bridge and host-local plugins

Usage: cnm-shim [options]
  --name NAME            plugin name for `docker network create -d NAME --ipam-driver NAME`
                         (default: cnm)
  --socket PATH          plugin socket (default: /run/docker/plugins/NAME.sock); ignored when
                         socket-activated by systemd
  --state-dir DIR        persistent state and the host-local store (default: /var/lib/cnm-shim)
  --cni-path DIRS        where the bridge and host-local binaries are (default: /opt/cni/bin)
  --exec-timeout SECS    limit for every plugin exec (default: 30)
  --default-pool CIDR    pools for networks created without --subnet (default: 172.30.0.0/16)
  --default-pool-size N  prefix length of those pools (default: 24)
  --cni-conf-dir DIR     CNI network configurations for `-o cni.network=NAME` (networks
                         shared with containerd & co.; default: /etc/cni/net.d)
  --agent-socket PATH    cnm-agent's socket, for `-o cluster=NAME` networks that span hosts
                         (default: /run/cnm/agent.sock)
  --debug                log every request
  -h, --help             this text
  -V, --version          print the version
";

impl Config {
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Option<Config>> {
        let mut name = "cnm".to_string();
        let mut socket = None;
        let mut state_dir = PathBuf::from("/var/lib/cnm-shim");
        let mut cni_path = "/opt/cni/bin".to_string();
        let mut timeout = 30u64;
        let mut default_pool: IpNetwork = "172.30.0.0/16".parse().expect("valid CIDR");
        let mut default_pool_size = 24u8;
        let mut cni_conf_dir = PathBuf::from("/etc/cni/net.d");
        let mut debug = false;
        let mut agent_socket = PathBuf::from("/run/cnm/agent.sock");
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (a.clone(), None),
            };
            let mut value = |what: &str| -> Result<String> {
                inline
                    .clone()
                    .or_else(|| it.next())
                    .ok_or_else(|| err!("{flag} needs a value ({what}); see --help"))
            };
            match flag.as_str() {
                "-h" | "--help" => {
                    print!("{USAGE}");
                    return Ok(None);
                }
                "-V" | "--version" => {
                    println!("cnm-shim {}", env!("CARGO_PKG_VERSION"));
                    return Ok(None);
                }
                "--name" => name = value("a plugin name")?,
                "--socket" => socket = Some(PathBuf::from(value("a path")?)),
                "--state-dir" => state_dir = PathBuf::from(value("a directory")?),
                "--cni-path" => cni_path = value("directories separated by ':'")?,
                "--exec-timeout" => {
                    let v = value("seconds")?;
                    timeout = v.parse().ok().filter(|t| *t > 0).ok_or_else(|| {
                        err!("--exec-timeout {v:?}: give a positive number of seconds")
                    })?;
                }
                "--default-pool" => {
                    let v = value("a CIDR")?;
                    default_pool = v.parse().map_err(|e| err!("--default-pool {v:?}: {e}"))?;
                }
                "--default-pool-size" => {
                    let v = value("a prefix length")?;
                    default_pool_size = v
                        .parse()
                        .map_err(|e| err!("--default-pool-size {v:?}: {e}"))?;
                }
                "--cni-conf-dir" => cni_conf_dir = PathBuf::from(value("a directory")?),
                "--agent-socket" => agent_socket = PathBuf::from(value("a path")?),
                "--debug" => debug = true,
                other => return Err(err!("unknown argument {other:?}; see --help")),
            }
        }
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            return Err(err!(
                "--name {name:?}: use 1-64 characters from [A-Za-z0-9_.-] (it becomes a file name)"
            ));
        }
        if !default_pool.is_ipv4()
            || default_pool_size < default_pool.prefix()
            || default_pool_size > 30
        {
            return Err(err!(
                "--default-pool {default_pool} / --default-pool-size {default_pool_size}: need an IPv4 pool and a size between its prefix and 30"
            ));
        }
        let socket =
            socket.unwrap_or_else(|| PathBuf::from(format!("/run/docker/plugins/{name}.sock")));
        Ok(Some(Config {
            name,
            socket,
            state_dir,
            cni_path,
            exec_timeout: Duration::from_secs(timeout),
            default_pool,
            default_pool_size,
            cni_conf_dir,
            agent_socket,
            debug,
        }))
    }

    /// host-local's `dataDir`.
    pub fn ipam_dir(&self) -> PathBuf {
        self.state_dir.join("ipam")
    }

    /// The CNI network name of every docker network of this instance: the host-local store
    /// (`<ipam_dir>/<store_name>`, one store for all pools, so an address in any pool can be
    /// reserved by IPAM calls that only know the pool) and the masquerade tag.
    pub fn store_name(&self) -> String {
        format!("cnm-{}", self.name)
    }

    /// `CNI_IFNAME` of the shim's calls on a store shared with other runtimes: host-local keys
    /// reservations by container ID + ifname, so this marks the shim's own there (reconciliation
    /// and pool releases never touch entries with another ifname).
    pub fn bound_ifname(&self) -> String {
        format!("cnm-{}", self.name).chars().take(15).collect()
    }

    /// Our nftables table (port mappings, internal isolation).
    pub fn nft_table(&self) -> String {
        let clean: String = self
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("cnm_{clean}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(a: &[&str]) -> Result<Option<Config>> {
        Config::from_args(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_flags() {
        let c = parse(&[]).unwrap().unwrap();
        assert_eq!(c.socket, PathBuf::from("/run/docker/plugins/cnm.sock"));
        assert_eq!(c.exec_timeout, Duration::from_secs(30));
        let c = parse(&["--name", "t1", "--state-dir=/tmp/x", "--exec-timeout", "5"])
            .unwrap()
            .unwrap();
        assert_eq!(c.socket, PathBuf::from("/run/docker/plugins/t1.sock"));
        assert_eq!(c.ipam_dir(), PathBuf::from("/tmp/x/ipam"));
        assert_eq!(c.nft_table(), "cnm_t1");
        assert_eq!(c.store_name(), "cnm-t1");
        assert_eq!(c.bound_ifname(), "cnm-t1");
        assert_eq!(c.cni_conf_dir, PathBuf::from("/etc/cni/net.d"));
    }

    #[test]
    fn bad_flags_name_the_fix() {
        assert!(parse(&["--bogus"]).unwrap_err().0.contains("--help"));
        assert!(parse(&["--name"]).unwrap_err().0.contains("needs a value"));
        assert!(parse(&["--name", "a/b"]).is_err());
        assert!(parse(&["--exec-timeout", "0"]).is_err());
        assert!(parse(&["--default-pool", "fd00::/48"]).is_err());
    }
}
