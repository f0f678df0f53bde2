//! `berth store` flags, named as etcd names them where they mean the same, so anyone who
//! has run etcd can run a Berth store member.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::node::NodeConfig;

/// Runs one store member.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: `<name>.etcd`, as etcd).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic, comma-separated.
    #[arg(long, default_value = "http://localhost:2379", value_delimiter = ',')]
    pub listen_client_urls: Vec<String>,
    /// Client URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://localhost:2379", value_delimiter = ',')]
    pub advertise_client_urls: Vec<String>,
    /// URL to listen on for peer traffic.
    #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
    pub listen_peer_urls: Vec<String>,
    /// This member's peer URL, as advertised to the rest of the cluster.
    #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
    pub initial_advertise_peer_urls: Vec<String>,
    /// Initial cluster configuration for bootstrapping: `name=peer-url,...`.
    #[arg(long, default_value = "default=http://localhost:2380")]
    pub initial_cluster: String,
    /// `new` to bootstrap a new cluster, `existing` to join one (after `member add`).
    #[arg(long, default_value = "new")]
    pub initial_cluster_state: String,
    /// Initial cluster token; members of one cluster must share it.
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Entries kept behind a snapshot for slow followers.
    #[arg(long, default_value_t = 5_000)]
    pub snapshot_catchup_entries: u64,
    /// Auto compaction mode; only `revision` is supported.
    #[arg(long, default_value = "revision")]
    pub auto_compaction_mode: String,
    /// Revisions of history to keep (0 disables auto compaction).
    #[arg(long, default_value_t = 10_000)]
    pub auto_compaction_retention: i64,
    /// Storage engine for a new data directory: sled (default) or fjall. An existing
    /// directory must be started with the engine it was made with.
    #[arg(long, value_enum, default_value_t = crate::backend::Engine::Sled)]
    pub backend: crate::backend::Engine,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = 1536 * 1024)]
    pub max_request_bytes: usize,
}

/// `http://host:port` to a socket address (`localhost` resolves to loopback).
pub fn parse_url(url: &str) -> Result<SocketAddr> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        Error::InvalidArgument(format!(
            "URL {url:?}: only http:// URLs are supported on the store's ports for now"
        ))
    })?;
    let hostport = rest.trim_end_matches('/');
    hostport
        .to_socket_addrs()
        .map_err(|e| Error::InvalidArgument(format!("URL {url:?}: {e}")))?
        .find(|a| a.is_ipv4())
        .or_else(|| hostport.to_socket_addrs().ok()?.next())
        .ok_or_else(|| Error::InvalidArgument(format!("URL {url:?} resolves to no address")))
}

fn parse_cluster(s: &str) -> Result<Vec<(String, String)>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (name, url) = p.split_once('=').ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "--initial-cluster entry {p:?} is not name=peer-url"
                ))
            })?;
            parse_url(url)?;
            Ok((name.trim().to_string(), url.trim().to_string()))
        })
        .collect()
}

impl StoreArgs {
    pub fn to_config(&self) -> Result<NodeConfig> {
        let new = match self.initial_cluster_state.as_str() {
            "new" => true,
            "existing" => false,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "--initial-cluster-state {other:?}: expected new or existing"
                )))
            }
        };
        if self.auto_compaction_mode != "revision" {
            return Err(Error::InvalidArgument(format!(
                "--auto-compaction-mode {:?}: only revision is supported",
                self.auto_compaction_mode
            )));
        }
        let listen_client = self
            .listen_client_urls
            .iter()
            .map(|u| parse_url(u))
            .collect::<Result<Vec<_>>>()?;
        let [listen_peer] = self.listen_peer_urls.as_slice() else {
            return Err(Error::InvalidArgument(
                "--listen-peer-urls takes exactly one URL".into(),
            ));
        };
        if self.election_timeout < self.heartbeat_interval * 5 {
            return Err(Error::InvalidArgument(format!(
                "--election-timeout ({} ms) must be at least 5 times --heartbeat-interval ({} ms)",
                self.election_timeout, self.heartbeat_interval
            )));
        }
        let initial_cluster = parse_cluster(&self.initial_cluster)?;
        if new && !initial_cluster.iter().any(|(n, _)| n == &self.name) {
            return Err(Error::InvalidArgument(format!(
                "--initial-cluster {:?} has no entry for --name {:?}",
                self.initial_cluster, self.name
            )));
        }
        Ok(NodeConfig {
            name: self.name.clone(),
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name))),
            listen_client,
            advertise_client_urls: self.advertise_client_urls.clone(),
            listen_peer: parse_url(listen_peer)?,
            advertise_peer_urls: self.initial_advertise_peer_urls.clone(),
            initial_cluster,
            initial_cluster_state_new: new,
            initial_cluster_token: self.initial_cluster_token.clone(),
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval),
            election_timeout: Duration::from_millis(self.election_timeout),
            snapshot_count: self.snapshot_count,
            snapshot_catchup_entries: self.snapshot_catchup_entries,
            auto_compaction_retention: self.auto_compaction_retention,
            max_request_bytes: self.max_request_bytes,
            engine: self.backend,
        })
    }
}

/// Runs a member until Ctrl-C or SIGTERM.
pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    let cfg = args.to_config()?;
    let handle = crate::node::StoreNode::start(cfg).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    handle.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        store: StoreArgs,
    }

    #[test]
    fn etcd_style_flags_build_a_config() {
        let cli = Cli::parse_from([
            "x",
            "--name=b",
            "--data-dir=/tmp/b",
            "--listen-client-urls=http://127.0.0.1:3379",
            "--advertise-client-urls=http://127.0.0.1:3379",
            "--listen-peer-urls=http://127.0.0.1:3380",
            "--initial-advertise-peer-urls=http://127.0.0.1:3380",
            "--initial-cluster=a=http://127.0.0.1:2380,b=http://127.0.0.1:3380",
            "--initial-cluster-state=new",
        ]);
        let cfg = cli.store.to_config().unwrap();
        assert_eq!(cfg.initial_cluster.len(), 2);
        assert_eq!(cfg.listen_peer, "127.0.0.1:3380".parse().unwrap());
        assert!(cfg.initial_cluster_state_new);
    }

    #[test]
    fn bad_flags_are_named_in_the_error() {
        let cli = Cli::parse_from(["x", "--initial-cluster-state=old"]);
        assert!(cli
            .store
            .to_config()
            .unwrap_err()
            .to_string()
            .contains("--initial-cluster-state"));
        let cli = Cli::parse_from(["x", "--name=z", "--initial-cluster=a=http://127.0.0.1:1"]);
        assert!(cli
            .store
            .to_config()
            .unwrap_err()
            .to_string()
            .contains("no entry for --name"));
        assert!(parse_url("https://x:1")
            .unwrap_err()
            .to_string()
            .contains("only http://"));
    }
}
