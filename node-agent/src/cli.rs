//! `berth agent`: flags (kubelet's names where kubelet has one) and start-up.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use crate::backoff::BackoffPolicy;
use crate::cni::Cni;
use crate::node::{self, NodeFacts};
use crate::pod::translate::{parse_resolv_conf, DnsSettings};
use crate::{Agent, AgentConfig};

/// Flags of `berth agent`.
#[derive(Debug, Clone, Parser)]
pub struct AgentArgs {
    /// The agent's directory: its kubeconfig and certificates, the runtime's root
    /// (`runtime/`), pod volumes and logs, and `images/` (tarballs imported at start).
    #[arg(long, default_value = "/var/lib/berth/agent")]
    pub data_dir: PathBuf,
    /// Credentials for the API server; default `DATA_DIR/kubeconfig.yaml`. Made by the TLS
    /// bootstrap when missing.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Every control-plane member's API URL (`https://host:port,...`). The agent then
    /// reaches the API through a balancer on loopback that fails over between them, so
    /// losing a member does not cut the node off. Default: the kubeconfig's server alone.
    #[arg(long = "server", value_delimiter = ',')]
    pub servers: Vec<String>,
    /// A bootstrap token to join with (`berth server --bootstrap-token`), with --server
    /// and --ca-file, in place of --bootstrap-kubeconfig.
    #[arg(long, requires = "ca_file")]
    pub token: Option<String>,
    /// The cluster CA (PEM) the API servers' certificates chain to, for --token.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// A kubeconfig with a bootstrap token (`berth server` writes one to
    /// `DATA_DIR/bootstrap-kubeconfig.yaml`): used once, to get the node's own certificate.
    #[arg(long)]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// This node's name; default the host name.
    #[arg(long = "hostname-override")]
    pub node_name: Option<String>,
    /// The address other nodes and the API server reach this node at; default the local
    /// address of the route to the API server.
    #[arg(long)]
    pub node_ip: Option<String>,
    /// Port of the agent's HTTPS endpoint (logs, exec, port-forward, stats).
    #[arg(long, default_value_t = 10250)]
    pub port: u16,
    /// Extra node labels, `key=value,...`.
    #[arg(long = "node-labels", value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// Directory of CNI network configurations (the first, by name, is used) for
    /// `--network cni`.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// The pod network: `vxlan` or `direct` run Berth's own (the `berth-cni` plugin on a
    /// bridge, VXLAN or direct routes between nodes, configuration written to
    /// `DATA_DIR/cni/net.d`); `cni` uses the configuration in --cni-conf-dir as it is;
    /// `auto` is `cni` when that directory holds a configuration, else `vxlan`.
    #[arg(long, default_value = "auto")]
    pub network: NetworkMode,
    /// Every pod range of the cluster (the controller-manager's --cluster-cidr): pod
    /// traffic to anywhere else is masqueraded.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: berth_cni::subnet::Subnet,
    /// How Services are programmed with Berth's own network: `auto` (IPVS where the
    /// kernel has it, else nftables), `nftables`, `ipvs`, or `none` (no proxy here).
    #[arg(long, default_value = "auto")]
    pub proxy_mode: String,
    /// MTU of pod interfaces; default 1450 with VXLAN (50 bytes of encapsulation), 1500
    /// otherwise.
    #[arg(long)]
    pub network_mtu: Option<u32>,
    /// Directories holding CNI plugins, `:`-separated.
    #[arg(long, default_value = "/opt/cni/bin:/usr/lib/cni")]
    pub cni_bin_dir: String,
    /// Cluster DNS servers for ClusterFirst pods; none means the host's resolvers.
    #[arg(long, value_delimiter = ',')]
    pub cluster_dns: Vec<String>,
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The host resolv.conf pods with dnsPolicy Default get.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// First crash back-off delay (`10s`, `500ms`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub crash_backoff_initial: Duration,
    /// Longest crash back-off delay.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub crash_backoff_max: Duration,
    /// Self-fencing: stop every container when the node Lease has not been renewed for
    /// this long, so the controller-manager can replace the pods safely once it declares
    /// the node unreachable. Keep it below the controller's `--node-monitor-grace-period`
    /// (40s) by the time a kill takes plus clock-rate drift; `0` turns fencing off.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub fence_after: Duration,
    /// Cgroup parent of every pod.
    #[arg(long, default_value = "berth")]
    pub cgroup_parent: String,
    /// Serving certificate of the agent's HTTPS endpoint (PEM).
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA that callers' client certificates must chain to (the cluster CA).
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Registry settings for image pulls (mirrors, credentials, TLS; k3s's registries.yaml
    /// shape); default `DATA_DIR/registries.yaml` when it exists.
    #[arg(long)]
    pub registry_config: Option<PathBuf>,
}

pub use berth_controller_manager::cli::parse_duration;

/// `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkMode {
    Auto,
    Vxlan,
    Direct,
    Cni,
}

/// Whether `dir` holds a CNI network configuration.
fn has_cni_config(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten().any(|e| {
                matches!(
                    e.path().extension().and_then(|x| x.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
        })
        .unwrap_or(false)
}

/// The local address the kernel would use to reach `server` (no packet is sent).
fn route_source(server: &str) -> Option<String> {
    let url: http::Uri = server.parse().ok()?;
    let host = url.host()?.trim_matches(|c| c == '[' || c == ']');
    let port = url.port_u16().unwrap_or(443);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()?
        .next()?;
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(addr).ok()?;
    Some(s.local_addr().ok()?.ip().to_string())
}

/// Flags of `berth reset`.
#[derive(Debug, Clone, Parser)]
pub struct ResetArgs {
    /// The agent's directory, as given to `berth agent`.
    #[arg(long, default_value = "/var/lib/berth/agent")]
    pub data_dir: PathBuf,
    /// The agent's cgroup parent.
    #[arg(long, default_value = "berth")]
    pub cgroup_parent: String,
    /// Keep the pod network (bridge, overlay, masquerade rules) of this network namespace.
    #[arg(long)]
    pub keep_network: bool,
}

/// What `berth reset` removed.
#[derive(Debug, Default)]
pub struct ResetSummary {
    pub sandboxes: usize,
    pub links: usize,
    pub routes: usize,
}

/// Stop and remove every pod an agent left (a node leaving the cluster, a test
/// cluster's teardown): sandboxes through the runtime, the cgroup parent, address
/// reservations and, unless kept, Berth's pod network in this network namespace.
pub fn reset(args: &ResetArgs, shim: Vec<OsString>) -> anyhow::Result<ResetSummary> {
    let mut done = ResetSummary::default();
    // The runtime finds its mounts by absolute path.
    let data_dir = std::path::absolute(&args.data_dir)
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;
    let root = data_dir.join("runtime");
    if root.exists() {
        let mut cfg = berth_runtime::pod::RuntimeConfig::new(&root, shim);
        cfg.cgroup_parent = args.cgroup_parent.clone();
        let rt = berth_runtime::pod::Runtime::open(cfg).context("opening the runtime")?;
        for sb in rt.list_sandboxes().context("listing sandboxes")? {
            if let Err(e) = rt.stop_sandbox(&sb.id, Duration::ZERO) {
                tracing::warn!(sandbox = %sb.id, error = %e, "stopping a sandbox failed");
            }
            match rt.remove_sandbox(&sb.id) {
                Ok(()) => done.sandboxes += 1,
                Err(e) => tracing::warn!(sandbox = %sb.id, error = %e, "removing a sandbox failed"),
            }
        }
        let _ = rt.recover();
    }
    for hierarchy in [
        "memory", "cpu", "cpuacct", "pids", "devices", "freezer", "cpuset", "blkio", "systemd",
        "unified", "",
    ] {
        let _ = std::fs::remove_dir(
            std::path::Path::new("/sys/fs/cgroup")
                .join(hierarchy)
                .join(&args.cgroup_parent),
        );
    }
    let ipam = data_dir.join("cni/ipam");
    if ipam.exists() {
        std::fs::remove_dir_all(&ipam).with_context(|| format!("removing {}", ipam.display()))?;
    }
    if !args.keep_network {
        let mut nl = berth_cni::netlink::Netlink::open()?;
        for route in nl.routes()? {
            if route.protocol == berth_cni::netlink::RTPROT_BERTH && nl.del_route(&route)? {
                done.routes += 1;
            }
        }
        for link in [crate::network::BRIDGE, berth_cni::overlay::VXLAN_DEVICE] {
            if nl.del_link(link)? {
                done.links += 1;
            }
        }
        crate::network::remove_rules();
    }
    Ok(done)
}

/// A kube client from a kubeconfig file.
pub async fn client_from(path: &std::path::Path) -> anyhow::Result<(kube::Client, String)> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("kubeconfig {}", path.display()))?;
    let server = cfg.cluster_url.to_string();
    Ok((
        kube::Client::try_from(cfg).context("building the API client")?,
        server,
    ))
}

/// The agent's API client: straight to the kubeconfig's server, or through an
/// [`ApiBalancer`](crate::apilb::ApiBalancer) over it and `servers`. Also returns the
/// kubeconfig's server URL.
async fn api_client(
    path: &std::path::Path,
    servers: &[String],
) -> anyhow::Result<(kube::Client, String, Option<crate::apilb::ApiBalancer>)> {
    if servers.is_empty() {
        let (client, server) = client_from(path).await?;
        return Ok((client, server, None));
    }
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let mut cfg =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .with_context(|| format!("kubeconfig {}", path.display()))?;
    let server = cfg.cluster_url.to_string();
    let mut members = vec![crate::apilb::authority(&server)?];
    for s in servers {
        let m = crate::apilb::authority(s).context("--server")?;
        if !members.contains(&m) {
            members.push(m);
        }
    }
    let lb = crate::apilb::ApiBalancer::start(members).await?;
    // Every member's serving certificate covers 127.0.0.1.
    cfg.cluster_url = format!("https://{}", lb.addr)
        .parse()
        .context("the balancer's URL")?;
    let client = kube::Client::try_from(cfg).context("building the API client")?;
    Ok((client, server, Some(lb)))
}

/// The runtime shim: this executable with `runtime` when it is `berth`, else `berth-runtime`
/// next to it.
pub fn default_shim() -> Vec<OsString> {
    let exe = std::env::current_exe().unwrap_or_else(|_| "berth".into());
    if exe.file_name().is_some_and(|n| n == "berth") {
        vec![exe.into_os_string(), "runtime".into()]
    } else {
        vec![exe.with_file_name("berth-runtime").into_os_string()]
    }
}

/// Set up and run the agent until it fails.
pub async fn run(args: AgentArgs, shim: Vec<OsString>) -> anyhow::Result<()> {
    let agent = start(args.clone(), shim).await?;
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let (cert, key) = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (None, None) => {
            let sans = vec![agent.facts.ip.clone(), agent.facts.name.clone()];
            let pki = args.data_dir.join("pki");
            crate::join::serving_cert(&agent.client, &pki, &agent.facts.name, &sans).await?
        }
        _ => anyhow::bail!("--tls-cert-file and --tls-private-key-file go together"),
    };
    let client_ca_pem = match &args.client_ca_file {
        Some(p) => read(p)?,
        None => crate::join::cluster_of(&kubeconfig_path(&args))?.ca_pem,
    };
    let tls = crate::server::TlsFiles {
        cert_pem: read(&cert)?,
        key_pem: read(&key)?,
        client_ca_pem,
    };
    let addr = format!("0.0.0.0:{}", args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let server = tokio::spawn(crate::server::serve(agent.clone(), listener, tls));
    let r = agent.run().await;
    server.abort();
    r
}

fn kubeconfig_path(args: &AgentArgs) -> PathBuf {
    args.kubeconfig
        .clone()
        .unwrap_or_else(|| args.data_dir.join("kubeconfig.yaml"))
}

/// Import every image tarball (OCI layout or `docker save`) in `dir` into the node's store,
/// as k3s does with its air-gap directory; returns the names imported.
pub fn import_images(
    rt: &berth_runtime::pod::Runtime,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(names);
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for f in files {
        match rt.images().import(&f) {
            Ok(images) => {
                for i in images {
                    tracing::info!(file = %f.display(), image = %i.names.join(","), id = %i.id, "image imported");
                    names.extend(i.names);
                }
            }
            Err(e) => tracing::warn!(file = %f.display(), error = %e, "image import failed"),
        }
    }
    Ok(names)
}

/// Set everything up (runtime, client, node facts); the caller runs it.
pub async fn start(mut args: AgentArgs, shim: Vec<OsString>) -> anyhow::Result<Arc<Agent>> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    // Mounts and pod paths are recorded absolute.
    args.data_dir = std::path::absolute(&args.data_dir)
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;
    let kubeconfig = kubeconfig_path(&args);
    let name = match &args.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .context("reading the host name")?
            .to_string_lossy()
            .to_lowercase(),
    };
    if let (Some(token), Some(ca), false) = (&args.token, &args.ca_file, kubeconfig.exists()) {
        let server = args.servers.first().context("--token needs --server")?;
        let cluster = crate::join::ClusterInfo {
            server: server.clone(),
            ca_pem: std::fs::read_to_string(ca)
                .with_context(|| format!("reading --ca-file {}", ca.display()))?,
        };
        let path = args.data_dir.join("bootstrap-kubeconfig.yaml");
        crate::join::write_private(&path, &crate::join::token_kubeconfig_text(&cluster, token))?;
        args.bootstrap_kubeconfig = Some(path);
    }
    // The API may not answer yet (its members still electing a leader): try until it does,
    // as a kubelet does.
    let mut tries = 0u32;
    while let Err(e) = crate::join::ensure_kubeconfig(
        &kubeconfig,
        args.bootstrap_kubeconfig.as_deref(),
        &args.data_dir.join("pki"),
        &name,
    )
    .await
    {
        if args.bootstrap_kubeconfig.is_none() {
            return Err(e);
        }
        tries += 1;
        tracing::warn!(error = %format!("{e:#}"), tries, "joining the cluster; trying again");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (client, server, balancer) = api_client(&kubeconfig, &args.servers).await?;
    let ip = match &args.node_ip {
        Some(ip) => ip.clone(),
        None => route_source(&server).unwrap_or_else(|| "127.0.0.1".into()),
    };
    let mut labels = node::default_labels(&name);
    for l in &args.node_labels {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--node-labels: {l:?} is not key=value"))?;
        labels.insert(k.into(), v.into());
    }
    let root = args.data_dir.join("runtime");
    let mut rcfg = berth_runtime::pod::RuntimeConfig::new(&root, shim);
    rcfg.cgroup_parent = args.cgroup_parent.clone();
    let images = args.data_dir.join("images");
    let rt = tokio::task::spawn_blocking(move || {
        let rt = berth_runtime::pod::Runtime::open(rcfg).context("opening the runtime")?;
        import_images(&rt, &images)?;
        Ok::<_, anyhow::Error>(rt)
    })
    .await??;
    let rt = Arc::new(rt);
    let facts = NodeFacts {
        name,
        ip,
        port: args.port,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_bytes: node::memory_total(),
        labels,
        root: args.data_dir.clone(),
    };
    let mode = match args.network {
        NetworkMode::Auto if has_cni_config(&args.cni_conf_dir) => NetworkMode::Cni,
        NetworkMode::Auto => NetworkMode::Vxlan,
        m => m,
    };
    // Plugins next to the agent's own binary come first (`berth-cni`).
    let mut bin_dirs: Vec<PathBuf> = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .into_iter()
        .collect();
    bin_dirs.extend(args.cni_bin_dir.split(':').map(PathBuf::from));
    let network = match mode {
        NetworkMode::Vxlan | NetworkMode::Direct => {
            let node_ip: std::net::Ipv4Addr = facts.ip.parse().with_context(|| {
                format!(
                    "--network {mode:?} needs an IPv4 node address, not {}",
                    facts.ip
                )
            })?;
            let overlay = if mode == NetworkMode::Vxlan {
                berth_cni::overlay::Mode::Vxlan
            } else {
                berth_cni::overlay::Mode::Direct
            };
            Some(crate::network::NetworkConfig {
                mode: overlay,
                node_name: facts.name.clone(),
                node_ip,
                conf_dir: args.data_dir.join("cni/net.d"),
                ipam_dir: args.data_dir.join("cni/ipam"),
                cluster_cidr: args.cluster_cidr,
                proxy: match args.proxy_mode.as_str() {
                    "none" => None,
                    m => Some(m.parse::<berth_proxy::Mode>().context("--proxy-mode")?),
                },
                mtu: args.network_mtu.unwrap_or(if mode == NetworkMode::Vxlan {
                    1450
                } else {
                    1500
                }),
            })
        }
        _ => None,
    };
    let conf_dir = network
        .as_ref()
        .map_or_else(|| args.cni_conf_dir.clone(), |n| n.conf_dir.clone());
    let cni =
        (network.is_some() || has_cni_config(&conf_dir)).then_some(Cni { conf_dir, bin_dirs });
    if cni.is_none() {
        tracing::warn!(dir = %args.cni_conf_dir.display(), "no CNI configuration: the node reports NotReady and only hostNetwork pods run");
    }
    let host = std::fs::read_to_string(&args.resolv_conf).unwrap_or_default();
    let registries = match &args.registry_config {
        Some(p) => berth_runtime::image::RegistryConfig::load(p)?,
        None => {
            let p = args.data_dir.join("registries.yaml");
            if p.exists() {
                berth_runtime::image::RegistryConfig::load(&p)?
            } else {
                Default::default()
            }
        }
    };
    let cfg = AgentConfig {
        dir: args.data_dir.clone(),
        dns: DnsSettings {
            cluster_dns: args.cluster_dns.clone(),
            cluster_domain: args.cluster_domain.clone(),
            host: parse_resolv_conf(&host),
        },
        backoff: BackoffPolicy {
            initial: args.crash_backoff_initial,
            max: args.crash_backoff_max.max(args.crash_backoff_initial),
            reset_after: Duration::from_secs(600),
        },
        registries,
    };
    let fence = (!args.fence_after.is_zero()).then_some(args.fence_after);
    Ok(Agent::new(client, rt, facts, cfg, cni)
        .with_fence(fence)
        .with_network(network)
        .with_api_balancer(balancer))
}
