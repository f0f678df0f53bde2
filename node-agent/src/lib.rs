//! The node agent: Berth's kubelet, run as `berth agent`.
//!
//! It registers its [`node`] (capacity, addresses, conditions, a heartbeat Lease), watches
//! the pods bound to it and runs each through the bundled runtime ([`pod`]: a worker per
//! pod that plans purely and then acts), wires pods to the network through CNI plugins
//! ([`cni`]), probes containers ([`probe`]), restarts them with [`backoff`], and writes
//! [`events`]. Its HTTPS endpoint ([`server`]) serves logs and stats, and exec, attach and
//! port-forward in the Kubernetes streaming protocols ([`stream`]). Everything it learns about the cluster comes from the API server; everything
//! it knows about its containers comes from the runtime's own records, so a restarted agent
//! picks up where it was without restarting anything.
//!
//! Start reading at [`Agent::run`].
#![forbid(unsafe_code)]

pub mod apilb;
pub mod backoff;
pub mod cli;
pub mod cni;
pub mod network;
pub use berth_controller_manager::events;
pub mod exec;
pub mod join;
pub mod node;
pub mod pod;
pub mod probe;
pub mod server;
pub mod stream;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_runtime::pod::Runtime;
use k8s_openapi::api::core::v1::{Container, Pod};

use crate::backoff::{Backoff, BackoffPolicy};
use crate::events::{Kind, Recorder};
use crate::node::NodeFacts;
use crate::pod::translate::DnsSettings;

/// How the agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The agent's own state: `pods/<uid>/` (network records, volumes), `logs/`.
    pub dir: PathBuf,
    pub dns: DnsSettings,
    pub backoff: BackoffPolicy,
    /// Registry settings for image pulls (k3s's registries.yaml shape).
    pub registries: berth_runtime::image::RegistryConfig,
}

/// Everything a pod worker shares.
pub struct Agent {
    pub client: kube::Client,
    pub rt: Arc<Runtime>,
    pub facts: NodeFacts,
    pub cfg: AgentConfig,
    pub cni: Option<cni::Cni>,
    pub backoff: Mutex<Backoff>,
    pub probes: probe::Probes,
    pub events: Recorder,
    pub workers: pod::Workers,
    /// The watch-fed cache of this node's pods, once the pod loop runs.
    pub pods: std::sync::OnceLock<kube::runtime::reflector::Store<Pod>>,
    pub cpu_samples: server::CpuSamples,
    pub fence: Arc<node::Fence>,
    /// Berth's own pod network, when the agent runs it.
    pub network: Option<network::NetworkConfig>,
    /// The node's pod range, once Berth's own network is up.
    pub pod_cidr: Arc<std::sync::OnceLock<berth_cni::subnet::Subnet>>,
    /// The balancer `client` goes through when the agent knows several API servers.
    pub api_balancer: Option<apilb::ApiBalancer>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node", &self.facts.name)
            .finish_non_exhaustive()
    }
}

impl Agent {
    pub fn new(
        client: kube::Client,
        rt: Arc<Runtime>,
        facts: NodeFacts,
        cfg: AgentConfig,
        cni: Option<cni::Cni>,
    ) -> Arc<Agent> {
        let events = Recorder::start(client.clone(), "kubelet", Some(facts.name.clone()));
        Arc::new(Agent {
            backoff: Mutex::new(Backoff::new(cfg.backoff)),
            client,
            rt,
            facts,
            cfg,
            cni,
            probes: probe::Probes::default(),
            events,
            workers: pod::Workers::default(),
            pods: std::sync::OnceLock::new(),
            cpu_samples: server::CpuSamples::default(),
            fence: Arc::new(node::Fence::new(None)),
            network: None,
            pod_cidr: Default::default(),
            api_balancer: None,
        })
    }

    /// The same agent with self-fencing after `after` without a renewed Lease.
    pub fn with_fence(self: Arc<Self>, after: Option<Duration>) -> Arc<Self> {
        let mut a = Arc::try_unwrap(self).expect("set the fence before sharing the agent");
        a.fence = Arc::new(node::Fence::new(after));
        Arc::new(a)
    }

    /// DNS for pods: `--cluster-dns` when given; with Berth's own network, the node's
    /// DNS server on the bridge's gateway address.
    pub fn dns_settings(&self) -> pod::translate::DnsSettings {
        let mut dns = self.cfg.dns.clone();
        if dns.cluster_dns.is_empty() {
            if let Some(cidr) = self.pod_cidr.get() {
                dns.cluster_dns = vec![cidr.gateway().to_string()];
            }
        }
        dns
    }

    /// The same agent running Berth's own pod network.
    pub fn with_network(self: Arc<Self>, network: Option<network::NetworkConfig>) -> Arc<Self> {
        let mut a = Arc::try_unwrap(self).expect("set the network before sharing the agent");
        a.network = network;
        Arc::new(a)
    }

    /// Keeps the balancer the client goes through for as long as the agent lives.
    pub fn with_api_balancer(self: Arc<Self>, lb: Option<apilb::ApiBalancer>) -> Arc<Self> {
        let mut a = Arc::try_unwrap(self).expect("set the balancer before sharing the agent");
        a.api_balancer = lb;
        Arc::new(a)
    }

    /// Kills every member container at once (the fence went up): pause containers and
    /// networks stay, so pods still here when the fence lifts restart by their policy.
    async fn fence_pods(&self) {
        let rt = self.rt.clone();
        let node = self.facts.name.clone();
        let killed = tokio::task::spawn_blocking(move || {
            let mut n = 0;
            for c in rt.list_containers(None).unwrap_or_default() {
                if c.state == berth_runtime::pod::ContainerState::Running {
                    match rt.stop_container(&c.id, Duration::ZERO) {
                        Ok(()) => n += 1,
                        Err(e) => tracing::error!(container = %c.id, error = %e, "fencing: killing a container failed"),
                    }
                }
            }
            n
        })
        .await
        .unwrap_or(0);
        tracing::error!(node = %node, killed, "fenced: the node lease could not be renewed in time; its containers are stopped");
    }

    /// Register the node, then keep its heartbeat and run its pods until dropped.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        // Ready for pods once a network configuration exists (Berth's own network writes
        // it when the node's pod range is set up).
        let cni = self.cni.clone();
        let cni_ready = move || cni.as_ref().is_some_and(|c| c.has_config());
        let root = self.facts.root.clone();
        let ready = cni_ready();
        let state =
            tokio::task::spawn_blocking(move || node::MachineState::measure(&root, ready)).await?;
        node::register(&self.client, &self.facts, &state).await?;
        tracing::info!(node = %self.facts.name, ip = %self.facts.ip, "node registered");
        let heartbeat = tokio::spawn(node::heartbeat(
            self.client.clone(),
            self.facts.clone(),
            self.fence.clone(),
            cni_ready,
        ));
        let network = match self.network.clone() {
            Some(cfg) => {
                let (tx, rx) = tokio::sync::watch::channel(None);
                let services = tokio::spawn(network::services(
                    self.client.clone(),
                    cfg.clone(),
                    self.cfg.dns.clone(),
                    self.pod_cidr.clone(),
                    rx,
                ));
                let net = network::run(self.client.clone(), cfg, tx);
                tokio::spawn(async move {
                    let r = net.await;
                    services.abort();
                    r
                })
            }
            None => tokio::spawn(std::future::pending()),
        };
        let me = self.clone();
        let watchdog = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                if me.fence.check() {
                    me.fence_pods().await;
                }
            }
        });
        let pods = tokio::spawn(pod::run(self.clone()));
        let r = tokio::select! {
            r = heartbeat => r,
            r = pods => r,
            r = watchdog => r,
            r = network => match r {
                Ok(Err(e)) => return Err(e.context("pod network")),
                other => other.map(drop),
            },
        };
        r.map_err(|e| anyhow::anyhow!("agent task ended: {e}"))
    }

    /// Make sure the image of `c` is on the node as its pull policy says; on failure the
    /// waiting reason and message for the container's status.
    pub async fn ensure_image(
        &self,
        pod: &Pod,
        c: &Container,
    ) -> Result<(), (&'static str, String)> {
        let image = c.image.clone().unwrap_or_default();
        if image.is_empty() {
            return Err(("InvalidImageName", "no image given".into()));
        }
        let policy = c
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| default_pull_policy(&image).into());
        let rt = self.rt.clone();
        let img = image.clone();
        let present = tokio::task::spawn_blocking(move || rt.images().get(&img).is_ok())
            .await
            .unwrap_or(false);
        if present && policy != "Always" {
            self.events.pod(
                pod,
                Some(&c.name),
                Kind::Normal,
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            );
            return Ok(());
        }
        if policy == "Never" {
            let msg =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            self.events.pod(
                pod,
                Some(&c.name),
                Kind::Warning,
                "ErrImageNeverPull",
                msg.clone(),
            );
            return Err(("ErrImageNeverPull", msg));
        }
        self.events.pod(
            pod,
            Some(&c.name),
            Kind::Normal,
            "Pulling",
            format!("Pulling image \"{image}\""),
        );
        let rt = self.rt.clone();
        let img = image.clone();
        let registries = self.cfg.registries.clone();
        let started = std::time::Instant::now();
        let pulled = tokio::task::spawn_blocking(move || rt.images().pull(&img, &registries)).await;
        match pulled {
            Ok(Ok(i)) => {
                self.events.pod(
                    pod,
                    Some(&c.name),
                    Kind::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {:.3}s. Image size: {} bytes.",
                        started.elapsed().as_secs_f64(),
                        i.size
                    ),
                );
                Ok(())
            }
            Ok(Err(e)) => {
                let msg = format!("Failed to pull image \"{image}\": {e}");
                self.events
                    .pod(pod, Some(&c.name), Kind::Warning, "Failed", msg.clone());
                Err(("ErrImagePull", msg))
            }
            Err(e) => Err((
                "ErrImagePull",
                format!("Failed to pull image \"{image}\": {e}"),
            )),
        }
    }
}

/// Kubernetes' default: `Always` for `:latest` or an untagged image, else `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    let name = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match name.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

#[async_trait::async_trait]
impl probe::Exec for Agent {
    async fn exec(
        &self,
        container_id: &str,
        command: &[String],
        timeout: Duration,
    ) -> std::io::Result<(i32, String)> {
        let opts = berth_runtime::container::ExecOptions {
            args: command.to_vec(),
            ..Default::default()
        };
        let mut cmd = tokio::process::Command::from(self.rt.exec_command(container_id, &opts));
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn()?;
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(out) => {
                let out = out?;
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                text.truncate(10 * 1024);
                Ok((out.status.code().unwrap_or(128), text))
            }
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("command timed out after {}s", timeout.as_secs()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults_like_kubernetes() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(
            default_pull_policy("localhost:5000/busybox:1"),
            "IfNotPresent"
        );
        assert_eq!(default_pull_policy("busybox@sha256:abc"), "IfNotPresent");
    }
}
