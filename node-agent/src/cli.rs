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
    /// Directory of CNI network configurations (the first, by name, is used).
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
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
pub async fn start(args: AgentArgs, shim: Vec<OsString>) -> anyhow::Result<Arc<Agent>> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let kubeconfig = kubeconfig_path(&args);
    let name = match &args.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .context("reading the host name")?
            .to_string_lossy()
            .to_lowercase(),
    };
    crate::join::ensure_kubeconfig(
        &kubeconfig,
        args.bootstrap_kubeconfig.as_deref(),
        &args.data_dir.join("pki"),
        &name,
    )
    .await?;
    let (client, server) = client_from(&kubeconfig).await?;
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
    let has_cni_config = std::fs::read_dir(&args.cni_conf_dir)
        .map(|d| {
            d.flatten().any(|e| {
                let p = e.path();
                matches!(
                    p.extension().and_then(|x| x.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
        })
        .unwrap_or(false);
    let cni = has_cni_config.then(|| Cni {
        conf_dir: args.cni_conf_dir.clone(),
        bin_dirs: args.cni_bin_dir.split(':').map(PathBuf::from).collect(),
    });
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
    Ok(Agent::new(client, rt, facts, cfg, cni).with_fence(fence))
}
