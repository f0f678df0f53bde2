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
    /// A node whose Lease is not renewed for this long is unreachable (`40s`, `2m`...).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// How often node health is checked.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub node_monitor_period: Duration,
    /// Seconds a pod with no toleration of its own stays on an unreachable or not-ready node.
    #[arg(long, default_value_t = 300)]
    pub default_unreachable_toleration_seconds: u64,
    /// Node agents fence themselves (stop their pods when they cannot renew their Lease), so
    /// pods evicted from unreachable nodes are deleted at once. Must match the agents'
    /// `--fence-after` (grace period - 10 s).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub node_fencing: bool,
    /// The first delay before a Job replaces a failed pod; it doubles up to 6 minutes.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub job_backoff: Duration,
    /// How often each autoscaler looks at its metrics.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub horizontal_pod_autoscaler_sync_period: Duration,
    /// How far back an autoscaler looks for a higher recommendation before scaling down.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub horizontal_pod_autoscaler_downscale_stabilization: Duration,
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

/// `10s`, `500ms`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 10s, 500ms, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: unit must be ms, s, m or h"
            ))
        }
    };
    if !(0.0..=86400.0 * 365.0).contains(&secs) {
        return Err(format!("invalid duration {s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Args {
    pub fn new(kubeconfig: PathBuf) -> Self {
        Self {
            kubeconfig,
            leader_elect: true,
            concurrent_syncs: 4,
            node_monitor_grace_period: Duration::from_secs(40),
            node_monitor_period: Duration::from_secs(5),
            default_unreachable_toleration_seconds: 300,
            node_fencing: true,
            job_backoff: Duration::from_secs(10),
            horizontal_pod_autoscaler_sync_period: Duration::from_secs(15),
            horizontal_pod_autoscaler_downscale_stabilization: Duration::from_secs(300),
            allocate_node_cidrs: Config::default().allocate_node_cidrs,
            cluster_cidr: Config::default().cluster_cidr,
            node_cidr_mask_size: Config::default().node_cidr_mask_size,
        }
    }

    pub fn config(&self) -> Config {
        Config {
            workers: self.concurrent_syncs,
            node_monitor_grace_period: self.node_monitor_grace_period,
            node_monitor_period: self.node_monitor_period,
            default_unreachable_toleration: Duration::from_secs(
                self.default_unreachable_toleration_seconds,
            ),
            fencing: self.node_fencing,
            job_backoff: self.job_backoff,
            hpa_sync_period: self.horizontal_pod_autoscaler_sync_period,
            hpa_downscale_stabilization: self.horizontal_pod_autoscaler_downscale_stabilization,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_kubelet_flags() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").unwrap_err().contains("unit"));
    }
}
