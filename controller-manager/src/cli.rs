//! `berth controller-manager`: the flags, and running every loop under leader election.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::ipam::{self, Cidr};
use crate::leader::{self, LeaseConfig};
use crate::Config;

/// Flags of `berth controller-manager` (kube-controller-manager's names where they exist).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Credentials and address of the API server.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Run only while holding the `kube-system/kube-controller-manager` Lease.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Workers per controller.
    #[arg(long, default_value_t = 4)]
    pub concurrent_syncs: usize,
    /// Give each Node a pod CIDR (`spec.podCIDR`) from --cluster-cidr.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub allocate_node_cidrs: bool,
    /// The pod network that node CIDRs are cut from.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: Cidr,
    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
}

impl Args {
    pub fn new(kubeconfig: PathBuf) -> Self {
        Self {
            kubeconfig,
            leader_elect: true,
            concurrent_syncs: 4,
            allocate_node_cidrs: Config::default().allocate_node_cidrs,
            cluster_cidr: Config::default().cluster_cidr,
            node_cidr_mask_size: Config::default().node_cidr_mask_size,
        }
    }

    pub fn config(&self) -> Config {
        Config {
            workers: self.concurrent_syncs,
            allocate_node_cidrs: self.allocate_node_cidrs,
            cluster_cidr: self.cluster_cidr,
            node_cidr_mask_size: self.node_cidr_mask_size,
        }
    }
}

/// A kube client from a kubeconfig file.
pub async fn client_from(path: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("kubeconfig {}", path.display()))?;
    kube::Client::try_from(cfg).context("building the API client")
}

/// Runs the controllers until the process stops.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = client_from(&args.kubeconfig).await?;
    let config = args.config();
    if config.allocate_node_cidrs {
        ipam::check_mask(config.cluster_cidr, config.node_cidr_mask_size)
            .context("--node-cidr-mask-size")?;
    }
    if !args.leader_elect {
        crate::run(client, config).await;
        return Ok(());
    }
    let mut lease = LeaseConfig::new("kube-controller-manager", LeaseConfig::identity());
    lease.retry_period = Duration::from_secs(2);
    leader::run(client.clone(), lease, || {
        crate::run(client.clone(), config.clone())
    })
    .await;
    Ok(())
}
