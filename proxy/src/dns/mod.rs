//! Cluster DNS: an authoritative server for the cluster domain and the reverse zones, fed by
//! watches on Services and EndpointSlices. It runs on every node and answers the pods there
//! (on the node's bridge gateway address). It forwards nothing: names outside its zones get
//! REFUSED.
//!
//! Start reading at [`serve`]. [`index`] holds the records and the pure lookup (the part with
//! the rules of Kubernetes' DNS specification); [`server`] puts it on UDP and TCP with
//! hickory-server; `watch` keeps the index current.
//!
//! hickory-server logs every query at `info` under the `hickory_server` target: binaries
//! that run this should filter it (`RUST_LOG=info,hickory_server=warn`).

pub mod index;
pub mod server;
mod watch;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use thiserror::Error;

pub use index::{Answer, Index, SCHEMA_VERSION, TTL};
pub use server::DnsServer;

#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid cluster domain {domain:?}: {reason}")]
    Domain { domain: String, reason: String },
    #[error("no listen address for the dns server")]
    NoListen,
    #[error("bind dns {proto} socket on {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("dns server failed: {0}")]
    Server(String),
    #[error("{0} watch ended")]
    WatchEnded(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The index the server reads and the watches (or a test) write.
pub type SharedIndex = Arc<RwLock<Index>>;

/// Where to listen and which domain to answer for.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// UDP and TCP are served on each address.
    pub listen: Vec<SocketAddr>,
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
}

/// Serves cluster DNS until the future is dropped or fails: binds the listen addresses, then
/// answers from an index fed by watches on Services and EndpointSlices. Until both first
/// lists are in, questions for the cluster zones get SERVFAIL (not a cacheable NXDOMAIN).
pub async fn serve(client: kube::Client, config: DnsConfig) -> Result<()> {
    let mut index = Index::new(&config.domain)?;
    index.set_synced(false);
    let index: SharedIndex = Arc::new(RwLock::new(index));
    let server = DnsServer::bind(index.clone(), &config.listen).await?;
    tracing::info!(listen = ?server.local_addrs(), domain = %config.domain, "cluster dns serving");
    tokio::select! {
        r = server.run() => r,
        r = watch::run(client, index) => r,
    }
}

/// Serves `index` on `listen` (UDP and TCP on each) until the future is dropped or fails.
/// For callers that fill the index themselves, such as tests.
pub async fn serve_index(index: SharedIndex, listen: Vec<SocketAddr>) -> Result<()> {
    DnsServer::bind(index, &listen).await?.run().await
}
