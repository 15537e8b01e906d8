//! The etcd client the agent shares between its networks: every call has a deadline, so an
//! unreachable etcd shows up as an error within seconds instead of a hung task.

use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KeyValue,
    LeaseKeepAliveStream, LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
    WatchStream,
};

#[derive(Clone)]
pub struct Etcd {
    client: Client,
    timeout: Duration,
}

/// TLS material for etcd (`--etcd-cacert`, `--etcd-cert`, `--etcd-key`), all PEM files.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub cacert: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl Tls {
    pub fn enabled(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// Reads the files now (a bad path fails the start, not the first etcd call).
    fn options(&self) -> Result<TlsOptions> {
        let read = |flag: &str, p: &std::path::Path| {
            std::fs::read(p).with_context(|| format!("{flag} {}", p.display()))
        };
        let mut o = TlsOptions::new();
        if let Some(ca) = &self.cacert {
            o = o.ca_certificate(Certificate::from_pem(read("--etcd-cacert", ca)?));
        }
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                o = o.identity(Identity::from_pem(
                    read("--etcd-cert", c)?,
                    read("--etcd-key", k)?,
                ))
            }
            (None, None) => {}
            _ => bail!("--etcd-cert and --etcd-key go together (client certificate and its key)"),
        }
        Ok(o)
    }
}

/// The etcd cluster's view from the member we talk to (`maintenance status`).
#[derive(Debug, Clone, Default)]
pub struct EtcdStatus {
    pub member: u64,
    pub leader: u64,
    pub version: String,
}

/// A snapshot of a prefix and the revision it was read at.
pub struct Listing {
    pub kvs: Vec<KeyValue>,
    pub revision: i64,
}

async fn within<T>(
    t: Duration,
    what: &str,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(t, f).await {
        Ok(r) => r.with_context(|| format!("etcd {what}")),
        Err(_) => Err(anyhow!("etcd {what}: no answer within {}s", t.as_secs())),
    }
}

impl Etcd {
    /// Connects lazily: the channel is created now, the connection when first used, so an
    /// agent starts (and keeps its data plane) while etcd is down.
    pub async fn new(endpoints: &[String], timeout: Duration, tls: &Tls) -> Result<Etcd> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_keep_alive(Duration::from_secs(2), timeout);
        if tls.enabled() {
            if let Some(e) = endpoints.iter().find(|e| !e.starts_with("https://")) {
                bail!("etcd endpoint {e}: TLS options need https:// endpoints");
            }
            opts = opts.with_tls(tls.options()?);
        }
        let client = Client::connect(endpoints, Some(opts))
            .await
            .with_context(|| format!("etcd endpoints {endpoints:?}"))?;
        Ok(Etcd { client, timeout })
    }

    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut c = self.client.clone();
        let r = within(self.timeout, &format!("get {key}"), c.get(key, None)).await?;
        Ok(r.kvs().first().cloned())
    }

    pub async fn list(&self, prefix: &str) -> Result<Listing> {
        let mut c = self.client.clone();
        let r = within(
            self.timeout,
            &format!("list {prefix}"),
            c.get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        Ok(Listing {
            revision: r.header().map(|h| h.revision()).unwrap_or(0),
            kvs: r.kvs().to_vec(),
        })
    }

    /// `Txn(If(Version(key)=0)).Then(Put(key, value, lease))`; true when created.
    pub async fn create(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<bool> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        let txn = Txn::new()
            .when(vec![Compare::version(key, CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(key, value, opts)]);
        self.txn(txn, &format!("create {key}")).await
    }

    pub async fn txn(&self, txn: Txn, what: &str) -> Result<bool> {
        let mut c = self.client.clone();
        Ok(within(self.timeout, &format!("txn {what}"), c.txn(txn))
            .await?
            .succeeded())
    }

    /// Puts `value` under `lease` only if `key` is still at `rev` (every update is guarded by
    /// revision: no blind writes, no ABA). False when the key changed meanwhile.
    pub async fn put_if_rev(
        &self,
        key: &str,
        rev: i64,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<bool> {
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(key, CompareOp::Equal, rev)])
            .and_then(vec![TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        self.txn(txn, key).await
    }

    /// Deletes `key` only if it is still at `rev`. False when it changed meanwhile.
    pub async fn delete_if_rev(&self, key: &str, rev: i64) -> Result<bool> {
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(key, CompareOp::Equal, rev)])
            .and_then(vec![TxnOp::delete(key, None)]);
        self.txn(txn, key).await
    }

    pub async fn grant(&self, ttl: i64) -> Result<i64> {
        let mut c = self.client.clone();
        Ok(
            within(self.timeout, "lease grant", c.lease_grant(ttl, None))
                .await?
                .id(),
        )
    }

    /// Remaining TTL of a lease; <= 0 when it no longer exists.
    pub async fn ttl(&self, id: i64) -> Result<i64> {
        let mut c = self.client.clone();
        Ok(within(
            self.timeout,
            "lease timetolive",
            c.lease_time_to_live(id, None),
        )
        .await?
        .ttl())
    }

    pub async fn revoke(&self, id: i64) -> Result<()> {
        let mut c = self.client.clone();
        within(self.timeout, "lease revoke", c.lease_revoke(id))
            .await
            .map(drop)
    }

    pub async fn keep_alive_stream(&self, id: i64) -> Result<(LeaseKeeper, LeaseKeepAliveStream)> {
        let mut c = self.client.clone();
        within(self.timeout, "lease keep-alive", c.lease_keep_alive(id)).await
    }

    pub async fn watch(&self, prefix: &str, from: i64) -> Result<WatchStream> {
        let mut c = self.client.clone();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(from);
        within(
            self.timeout,
            &format!("watch {prefix}"),
            c.watch(prefix, Some(opts)),
        )
        .await
    }

    /// Member, leader and version, from the member the client talks to.
    pub async fn status(&self) -> Result<EtcdStatus> {
        let mut c = self.client.clone();
        let r = within(self.timeout, "status", c.status()).await?;
        Ok(EtcdStatus {
            member: r.header().map(|h| h.member_id()).unwrap_or(0),
            leader: r.leader(),
            version: r.version().to_string(),
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// True when etcd answered that the lease does not exist (expired or revoked). That is an
/// answer, not an outage: the lease must be replaced. etcd-client reports it two ways: the
/// keep-alive opener's own error, and the server's NotFound status on a put or txn.
pub fn lease_gone(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| match c.downcast_ref::<etcd_client::Error>() {
            Some(etcd_client::Error::LeaseKeepAliveError(m)) => m.contains("lease not found"),
            Some(etcd_client::Error::GRpcStatus(s)) => {
                s.message().contains("requested lease not found")
            }
            _ => false,
        })
}

/// One keep-alive round on an open stream: the lease's new TTL (0: the lease is gone).
pub async fn keep_alive_once(
    t: Duration,
    keeper: &mut LeaseKeeper,
    stream: &mut LeaseKeepAliveStream,
) -> Result<i64> {
    within(t, "lease keep-alive send", keeper.keep_alive()).await?;
    match within(t, "lease keep-alive answer", stream.message()).await? {
        Some(r) => Ok(r.ttl()),
        None => Err(anyhow!("etcd lease keep-alive: stream closed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_gone_is_told_from_an_outage() {
        let gone: Result<()> = Err(etcd_client::Error::LeaseKeepAliveError(
            "lease not found".into(),
        ))
        .context("etcd lease keep-alive");
        assert!(lease_gone(&gone.unwrap_err()));
        let outage = anyhow!("etcd lease keep-alive answer: no answer within 2s");
        assert!(!lease_gone(&outage));
        let other: Result<()> =
            Err(etcd_client::Error::InvalidArgs("bad key".into())).context("etcd txn");
        assert!(!lease_gone(&other.unwrap_err()));
    }
}
