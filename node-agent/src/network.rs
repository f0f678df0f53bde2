//! The node's share of Berth's own pod network (`--network vxlan|direct`).
//!
//! Once the controller-manager has given this node a pod range (`Node.spec.podCIDR`),
//! the agent makes the bridge (with the pods' gateway address), the overlay device and a
//! masquerade rule for traffic leaving the cluster, then writes the `berth-cni` network
//! configuration that pods are attached with. From then on it follows every Node and
//! keeps the overlay's routes, ARP and forwarding entries matching them
//! ([`berth_cni::overlay`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use berth_cni::netlink::Netlink;
use berth_cni::overlay::{self, Mode, NodeNet, Overlay};
use berth_cni::subnet::Subnet;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;
use serde_json::json;
use tokio::sync::watch;

/// The network's name in the CNI configuration and the IPAM store.
pub const NETWORK_NAME: &str = "berth";
/// The node's bridge.
pub const BRIDGE: &str = "berth0";
/// How often the overlay is checked against the kernel even without a Node change.
const RESYNC: Duration = Duration::from_secs(30);

/// What the network needs to know.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub mode: Mode,
    pub node_name: String,
    pub node_ip: Ipv4Addr,
    /// Where the CNI configuration is written (`DATA_DIR/cni/net.d`).
    pub conf_dir: PathBuf,
    /// Address reservations (`DATA_DIR/cni/ipam`).
    pub ipam_dir: PathBuf,
    /// Every pod range of the cluster: traffic from it to elsewhere is masqueraded.
    pub cluster_cidr: Subnet,
    /// MTU of the pods' interfaces and the overlay device.
    pub mtu: u32,
    /// The service proxy's back end; `None` runs no proxy.
    pub proxy: Option<berth_proxy::Mode>,
}

/// The pod range this node was given, once known.
pub type PodCidr = watch::Receiver<Option<Subnet>>;

/// The node's InternalIP (IPv4) and pod range, if it has both.
fn node_net(n: &Node) -> Option<Result<NodeNet, String>> {
    let name = n.metadata.name.clone()?;
    let spec = n.spec.as_ref()?;
    let cidr = spec.pod_cidr.as_deref()?;
    let ip = n
        .status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP" && a.address.parse::<Ipv4Addr>().is_ok())?
        .address
        .parse()
        .ok()?;
    Some(match cidr.parse::<Subnet>() {
        Ok(pod_cidr) => Ok(NodeNet { name, ip, pod_cidr }),
        Err(e) => Err(format!("node {name}: podCIDR: {e}")),
    })
}

/// The CNI network configuration for this node's range.
pub fn conflist(cfg: &NetworkConfig, pod_cidr: &Subnet) -> serde_json::Value {
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [{
            "type": "berth-cni",
            "bridge": BRIDGE,
            "subnet": pod_cidr.to_string(),
            "mtu": cfg.mtu,
            "dataDir": cfg.ipam_dir,
        }]
    })
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn sysctl(key: &str, value: &str) {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    if let Err(e) = std::fs::write(&path, value) {
        tracing::warn!(path = %path.display(), error = %e, "setting a sysctl failed");
    }
}

/// The masquerade of pod traffic leaving the cluster, as one nft transaction on a table
/// of our own.
fn masquerade_rules(cluster: &Subnet) -> String {
    format!(
        "table ip berth-net\ndelete table ip berth-net\ntable ip berth-net {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {cluster} ip daddr != {cluster} masquerade\n  }}\n}}\n"
    )
}

fn nft(script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Remove the masquerade table and the service proxy's, in either mode (`berth reset`).
pub fn remove_rules() {
    use berth_proxy::Dataplane;
    // IPVS mode's services, device and table; only where its device shows it ran here,
    // since the IPVS table may otherwise be someone else's.
    let ipvs = berth_proxy::IpvsConfig::default();
    if berth_proxy::ipvs::dummy::exists(&ipvs.link).unwrap_or(false) {
        if let Err(e) = berth_proxy::IpvsDataplane::new(ipvs).cleanup() {
            tracing::warn!(error = %e, "removing the IPVS proxy's state failed");
        }
    }
    for table in ["berth-net", berth_proxy::nft::TABLE] {
        if let Err(e) = nft(&format!("table ip {table}\ndelete table ip {table}\n")) {
            tracing::warn!(%table, error = %e, "removing an nft table failed");
        }
    }
}

/// Prepare the node once its range is known: sysctls, bridge, overlay device,
/// masquerade, then the CNI configuration (the node turns Ready when it appears).
fn setup(cfg: &NetworkConfig, local: &NodeNet) -> anyhow::Result<Overlay> {
    sysctl("net.ipv4.ip_forward", "1");
    // Bridged pod-to-pod traffic must see the proxy's NAT: the reply of a Service's
    // backend to a client on the same node crosses the bridge only. That needs br_netfilter,
    // loaded here if it is not (as kube-proxy loads what it needs).
    if !Path::new("/proc/sys/net/bridge").exists() {
        let loaded = std::process::Command::new("modprobe")
            .arg("br_netfilter")
            .status()
            .is_ok_and(|s| s.success());
        if !loaded {
            tracing::warn!("br_netfilter is not loaded and modprobe failed: a Service answered by a pod on the client's own node will time out (load br_netfilter)");
        }
    }
    sysctl("net.bridge.bridge-nf-call-iptables", "1");
    let mut nl = Netlink::open()?;
    berth_cni::plugin::ensure_bridge(&mut nl, BRIDGE, &local.pod_cidr, Some(cfg.mtu))
        .context("creating the pod bridge")?;
    let ovl = Overlay::new(cfg.mode, local.clone(), cfg.mtu);
    ovl.ensure_device(&mut nl)
        .context("creating the overlay device")?;
    if let Err(e) = nft(&masquerade_rules(&cfg.cluster_cidr)) {
        tracing::warn!(error = %e, "pod traffic leaving the cluster is not masqueraded");
    }
    std::fs::create_dir_all(&cfg.conf_dir)
        .with_context(|| format!("creating {}", cfg.conf_dir.display()))?;
    write_atomically(
        &cfg.conf_dir.join("10-berth.conflist"),
        &serde_json::to_string_pretty(&conflist(cfg, &local.pod_cidr))?,
    )?;
    Ok(ovl)
}

/// Bring up the node's network and keep the overlay in step with the Nodes until the
/// task is dropped. `pod_cidr` learns the node's range once set up.
pub async fn run(
    client: kube::Client,
    cfg: NetworkConfig,
    pod_cidr: watch::Sender<Option<Subnet>>,
) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client);
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    futures::pin_mut!(stream);
    let mut overlay: Option<Overlay> = None;
    let mut last_rejected: Vec<(String, String)> = Vec::new();
    let mut tick = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(_)) => {}
                Some(Err(e)) => { tracing::warn!(error = %e, "watching nodes"); continue; }
                None => anyhow::bail!("the node watch ended"),
            },
            _ = tick.tick() => {}
        }
        // Coalesce a burst of Node updates (every heartbeat writes status).
        tokio::time::sleep(Duration::from_millis(100)).await;
        while let Some(Some(Ok(_))) = futures::FutureExt::now_or_never(stream.next()) {}
        let nodes: Vec<NodeNet> = store
            .state()
            .iter()
            .filter_map(|n| node_net(n))
            .filter_map(|r| {
                r.map_err(|e| tracing::error!(error = %e, "ignoring a node"))
                    .ok()
            })
            .collect();
        if overlay.is_none() {
            let Some(me) = nodes.iter().find(|n| n.name == cfg.node_name) else {
                continue; // no range yet
            };
            if me.ip != cfg.node_ip {
                tracing::warn!(reported = %me.ip, flag = %cfg.node_ip, "the Node's InternalIP differs from --node-ip; the overlay uses the flag");
            }
            let mut local = me.clone();
            local.ip = cfg.node_ip;
            let c = cfg.clone();
            let ovl = tokio::task::spawn_blocking(move || setup(&c, &local)).await??;
            tracing::info!(pod_cidr = %me.pod_cidr, mode = ?cfg.mode, "pod network ready");
            let _ = pod_cidr.send(Some(me.pod_cidr));
            overlay = Some(ovl);
        }
        let ovl = overlay.take().expect("set above");
        let local = nodes.iter().find(|n| n.name == cfg.node_name).cloned();
        let Some(mut local) = local else {
            overlay = Some(ovl);
            continue;
        };
        local.ip = cfg.node_ip;
        let (ovl, result) = tokio::task::spawn_blocking(move || {
            let r = (|| -> anyhow::Result<_> {
                let mut nl = Netlink::open()?;
                let dev = ovl.ensure_device(&mut nl)?;
                let plan = overlay::plan(ovl.mode(), &local, &nodes, dev);
                let applied = ovl.apply(&mut nl, &plan)?;
                Ok((plan.rejected, applied))
            })();
            (ovl, r)
        })
        .await?;
        overlay = Some(ovl);
        match result {
            Ok((rejected, applied)) => {
                if applied != overlay::Applied::default() {
                    tracing::info!(
                        added = applied.added,
                        removed = applied.removed,
                        "overlay updated"
                    );
                }
                if rejected != last_rejected {
                    for (node, reason) in &rejected {
                        tracing::error!(%node, %reason, "node left out of the overlay");
                    }
                    last_rejected = rejected;
                }
            }
            Err(e) => tracing::error!(error = %e, "programming the overlay failed; retrying"),
        }
    }
}

/// The service proxy, until the task is dropped.
async fn proxy(client: kube::Client, cfg: NetworkConfig, requested: berth_proxy::Mode) {
    use berth_proxy::{Dataplane, IpvsConfig, IpvsDataplane, Mode, NftConfig, Nftables};
    let cluster_cidr: Option<berth_proxy::Ipv4Cidr> = cfg.cluster_cidr.to_string().parse().ok();
    let mode = berth_proxy::select_mode(requested);
    let config = berth_proxy::Config {
        node_name: cfg.node_name.clone(),
        cluster_cidr,
        mode,
        ..Default::default()
    };
    let nft_config = NftConfig {
        cluster_cidr,
        ..Default::default()
    };
    // NodePorts on the node's IP; ClusterIPs on the IPVS dummy interface.
    let ipvs_config = IpvsConfig {
        node_ips: vec![cfg.node_ip],
        cluster_cidr,
        ..Default::default()
    };
    tracing::info!(%mode, "service proxy starting");
    // What the other back end left (the mode changed since the last run) would catch
    // Service traffic first. IPVS leftovers are only looked for where its interface
    // exists: in nftables mode the IPVS table may be someone else's.
    let (nft_old, ipvs_old) = (nft_config.clone(), ipvs_config.clone());
    let cleaned = tokio::task::spawn_blocking(move || match mode {
        Mode::Ipvs => Nftables::new(nft_old).cleanup(),
        _ if berth_proxy::ipvs::dummy::exists(&ipvs_old.link).unwrap_or(false) => {
            IpvsDataplane::new(ipvs_old).cleanup()
        }
        _ => Ok(()),
    })
    .await;
    match cleaned {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "removing the other proxy back end's rules failed")
        }
        Err(e) => tracing::warn!(error = %e, "removing the other proxy back end's rules panicked"),
    }
    loop {
        let dataplane: Box<dyn Dataplane> = match mode {
            Mode::Ipvs => Box::new(IpvsDataplane::new(ipvs_config.clone())),
            _ => Box::new(Nftables::new(nft_config.clone())),
        };
        if let Err(e) = berth_proxy::run(client.clone(), config.clone(), dataplane).await {
            tracing::error!(error = %e, "the service proxy stopped; restarting");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Once the node's range is known: remember it (pods' resolv.conf points at its
/// gateway), start the service proxy, and serve cluster DNS on the gateway, port 53,
/// until the task is dropped. With `--cluster-dns` given, pods use those servers and no
/// DNS server runs here.
pub async fn services(
    client: kube::Client,
    cfg: NetworkConfig,
    dns: crate::pod::translate::DnsSettings,
    cell: std::sync::Arc<std::sync::OnceLock<Subnet>>,
    mut pod_cidr: PodCidr,
) {
    let cidr = loop {
        if let Some(c) = *pod_cidr.borrow_and_update() {
            break c;
        }
        if pod_cidr.changed().await.is_err() {
            return;
        }
    };
    let _ = cell.set(cidr);
    let _proxy = cfg
        .proxy
        .map(|mode| AbortOnDrop(tokio::spawn(proxy(client.clone(), cfg.clone(), mode))));
    if !dns.cluster_dns.is_empty() {
        return std::future::pending().await;
    }
    let listen = std::net::SocketAddr::from((cidr.gateway(), 53));
    let config = berth_proxy::dns::DnsConfig {
        listen: vec![listen],
        domain: dns.cluster_domain.clone(),
    };
    tracing::info!(%listen, domain = %dns.cluster_domain, "serving cluster DNS");
    loop {
        match berth_proxy::dns::serve(client.clone(), config.clone()).await {
            Ok(()) => tracing::warn!("the DNS server stopped; restarting"),
            Err(e) => tracing::error!(error = %e, "the DNS server failed; restarting"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Aborts a task when dropped (the services task is aborted with the network's).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    fn node(name: &str, ip: &str, cidr: Option<&str>) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(String::from),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: name.into(),
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: ip.into(),
                    },
                ]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn nodes_without_a_range_are_skipped_and_bad_ranges_reported() {
        let ok = node_net(&node("a", "192.168.1.5", Some("10.244.3.0/24")))
            .unwrap()
            .unwrap();
        assert_eq!(ok.ip, Ipv4Addr::new(192, 168, 1, 5));
        assert_eq!(ok.pod_cidr.to_string(), "10.244.3.0/24");
        assert!(node_net(&node("b", "192.168.1.6", None)).is_none());
        let bad = node_net(&node("c", "192.168.1.7", Some("10.244.3.9/24"))).unwrap();
        assert!(bad.unwrap_err().contains("node c"));
    }

    #[test]
    fn the_cni_configuration_names_berth_cni_and_the_range() {
        let cfg = NetworkConfig {
            mode: Mode::Vxlan,
            node_name: "a".into(),
            node_ip: Ipv4Addr::LOCALHOST,
            conf_dir: "/x/net.d".into(),
            ipam_dir: "/x/ipam".into(),
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            mtu: 1450,
            proxy: None,
        };
        let c = conflist(&cfg, &"10.244.3.0/24".parse().unwrap());
        assert_eq!(c["plugins"][0]["type"], "berth-cni");
        assert_eq!(c["plugins"][0]["subnet"], "10.244.3.0/24");
        assert_eq!(c["plugins"][0]["mtu"], 1450);
        // The plugin refuses unknown fields: what we write must parse.
        let mut plugin = c["plugins"][0].clone();
        plugin["cniVersion"] = c["cniVersion"].clone();
        plugin["name"] = c["name"].clone();
        berth_cni::plugin::NetConf::parse(plugin.to_string().as_bytes()).unwrap();
        assert!(masquerade_rules(&cfg.cluster_cidr)
            .contains("ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade"));
    }
}
