//! An in-process store cluster on loopback for tests: members can be killed and started
//! again from their data directories.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_store::node::{NodeConfig, StoreHandle, StoreNode};
use berth_store::pb::etcdserverpb::kv_client::KvClient;
use berth_store::pb::etcdserverpb::watch_client::WatchClient;
use tonic::transport::Channel;

/// A free loopback address that no other test process is handed (see `berth_testkit`).
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], berth_testkit::free_port()))
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,openraft=error".into()),
        )
        .with_test_writer()
        .try_init();
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub configs: Vec<NodeConfig>,
    pub members: Vec<Option<StoreHandle>>,
}

impl Cluster {
    /// Configurations for `n` members with fast timeouts, not yet started.
    pub fn configs(n: usize, dir: &std::path::Path) -> Vec<NodeConfig> {
        let addrs: Vec<(SocketAddr, SocketAddr)> =
            (0..n).map(|_| (free_addr(), free_addr())).collect();
        let initial: Vec<(String, String)> = addrs
            .iter()
            .enumerate()
            .map(|(i, (_, p))| (format!("m{i}"), format!("http://{p}")))
            .collect();
        addrs
            .iter()
            .enumerate()
            .map(|(i, (c, p))| {
                let mut cfg =
                    NodeConfig::single(&format!("m{i}"), &dir.join(format!("m{i}")), *c, *p);
                cfg.initial_cluster = initial.clone();
                cfg.heartbeat_interval = Duration::from_millis(50);
                cfg.election_timeout = Duration::from_millis(500);
                cfg.auto_compaction_retention = 0;
                cfg
            })
            .collect()
    }

    pub async fn start(n: usize) -> Self {
        Self::start_on(n, berth_store::backend::Engine::default()).await
    }

    pub async fn start_on(n: usize, engine: berth_store::backend::Engine) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut configs = Self::configs(n, dir.path());
        for c in &mut configs {
            c.engine = engine;
        }
        Self::start_with(dir, configs).await
    }

    pub async fn start_with(dir: tempfile::TempDir, configs: Vec<NodeConfig>) -> Self {
        let mut members = Vec::new();
        for cfg in &configs {
            members.push(Some(
                StoreNode::start(cfg.clone()).await.expect("start member"),
            ));
        }
        let c = Self {
            dir,
            configs,
            members,
        };
        c.wait_leader(Duration::from_secs(20))
            .await
            .expect("a leader is elected");
        c
    }

    pub fn client_url(&self, i: usize) -> String {
        format!("http://{}", self.configs[i].listen_client[0])
    }

    pub async fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(channel(&self.client_url(i)))
    }

    pub async fn watch(&self, i: usize) -> WatchClient<Channel> {
        WatchClient::new(channel(&self.client_url(i)))
    }

    /// The index of the member that leads, as the live members agree.
    pub fn leader(&self) -> Option<usize> {
        for m in self.members.iter().flatten() {
            if m.node.is_leader() {
                let id = m.node.id;
                return self
                    .members
                    .iter()
                    .position(|x| x.as_ref().is_some_and(|x| x.node.id == id));
            }
        }
        None
    }

    pub async fn wait_leader(&self, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub async fn kill(&mut self, i: usize) {
        if let Some(h) = self.members[i].take() {
            h.shutdown().await;
        }
    }

    pub async fn restart(&mut self, i: usize) {
        assert!(self.members[i].is_none(), "member {i} is running");
        let h = StoreNode::start(self.configs[i].clone())
            .await
            .expect("restart member");
        self.members[i] = Some(h);
    }

    /// Waits until every live member has applied the same log index.
    pub async fn wait_converged(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let applied: Vec<_> = self
                .members
                .iter()
                .flatten()
                .map(|m| m.node.raft.metrics().borrow().last_applied.map(|l| l.index))
                .collect();
            let last_log = self
                .members
                .iter()
                .flatten()
                .filter_map(|m| m.node.raft.metrics().borrow().last_log_index)
                .max();
            if applied.iter().all(|a| *a == applied[0]) && applied[0] == last_log {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.members.len() {
            self.kill(i).await;
        }
    }
}

pub fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}
