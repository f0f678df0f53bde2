//! A one-node cluster for scenarios: the control plane (store and API server) in this
//! process on free loopback ports, and a real `berth agent` process whose pods run on the
//! bundled runtime, wired by the reference CNI plugins (bridge, host-local) to a bridge of
//! the test's own. Everything is torn down on drop, even after a failed assertion:
//! containers, sandboxes, cgroups, the bridge.
#![allow(dead_code)]

pub use berth_testkit::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use berth_apiserver::{ControlPlane, ServerArgs};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::wait::await_condition;

#[path = "../../runtime/tests/support/images.rs"]
mod images;
pub use images::images;

pub struct TestNode {
    pub cp: Option<ControlPlane>,
    pub dir: tempfile::TempDir,
    pub client: kube::Client,
    pub node: String,
    pub agent_dir: PathBuf,
    pub agent_args: Vec<String>,
    pub agent: Option<Child>,
    pub bridge: String,
    pub cgroup_parent: String,
    pub subnet_prefix: String,
}

/// Options for [`TestNode::start`].
pub struct Options {
    pub backoff_initial: &'static str,
    pub backoff_max: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backoff_initial: "1s",
            backoff_max: "8s",
        }
    }
}

impl TestNode {
    pub async fn start() -> TestNode {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> TestNode {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let images = images();
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("server");
        let args = ServerArgs {
            listen: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            store_client_url: format!("http://127.0.0.1:{}", free_port()),
            store_peer_url: format!("http://127.0.0.1:{}", free_port()),
            ..ServerArgs::new(data.clone())
        };
        let cp = ControlPlane::start(args).await.unwrap();
        let tag = format!(
            "{:x}",
            std::process::id() as u64 * 1000 + free_port() as u64 % 1000
        );
        let node = format!("e2e-{tag}");

        let agent_dir = dir.path().join("agent");
        std::fs::create_dir_all(agent_dir.join("images")).unwrap();
        for img in ["busybox.tar", "testserver.tar"] {
            std::fs::copy(images.join(img), agent_dir.join("images").join(img)).unwrap();
        }

        // A bridge and a /24 of our own, so parallel tests do not meet.
        let n = (std::process::id() as u64 * 7 + free_port() as u64) % 250 + 1;
        let subnet_prefix = format!("10.{}.{}", 200 + (n % 50), n);
        let bridge = format!("bte{tag}");
        let bridge = bridge[..bridge.len().min(15)].to_string();
        let cni_dir = dir.path().join("cni");
        std::fs::create_dir_all(&cni_dir).unwrap();
        let conf = berth_node_agent::cni::bridge_conflist(
            "e2e",
            &bridge,
            &format!("{subnet_prefix}.0/24"),
            &dir.path().join("ipam"),
        );
        std::fs::write(cni_dir.join("10-e2e.conflist"), conf.to_string()).unwrap();
        let cgroup_parent = format!("berth-e2e-{tag}");
        let agent_args = vec![
            "agent".to_string(),
            format!("--data-dir={}", agent_dir.display()),
            format!("--hostname-override={node}"),
            "--node-ip=127.0.0.1".into(),
            format!("--port={}", free_port()),
            format!("--cni-conf-dir={}", cni_dir.display()),
            "--cni-bin-dir=/usr/lib/cni:/opt/cni/bin".into(),
            format!("--crash-backoff-initial={}", opts.backoff_initial),
            format!("--crash-backoff-max={}", opts.backoff_max),
            format!("--cgroup-parent={cgroup_parent}"),
            // The node joins with the server's bootstrap token (TLS bootstrap: its client
            // and serving certificates come from CertificateSigningRequests).
            format!(
                "--bootstrap-kubeconfig={}",
                data.join("bootstrap-kubeconfig.yaml").display()
            ),
        ];
        let kc = kube::config::Kubeconfig::read_from(&cp.kubeconfig).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(cfg).unwrap();
        let mut t = TestNode {
            cp: Some(cp),
            dir,
            client,
            node,
            agent_dir,
            agent_args,
            agent: None,
            bridge,
            cgroup_parent,
            subnet_prefix,
        };
        t.start_agent();
        t.wait_node_ready().await;
        t
    }

    pub fn start_agent(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(&self.agent_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(child);
    }

    /// SIGKILL the agent, as a crash would.
    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The real kubectl against this cluster (admin), with a private cache directory.
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        self.kubectl_cmd(args).output().unwrap()
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.cp.as_ref().unwrap().kubeconfig)
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .args(args);
        cmd
    }

    /// kubectl that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            tail(&self.agent_log(), 30)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    pub async fn wait_node_ready(&self) {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        let ready = |n: Option<&k8s_openapi::api::core::v1::Node>| {
            n.and_then(|n| n.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(nodes, &self.node, ready),
        )
        .await;
        assert!(
            r.is_ok(),
            "node did not become Ready; agent log:\n{}",
            self.agent_log()
        );
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Create a pod from JSON (its `spec.nodeName` is set to this node).
    pub async fn create_pod(&self, mut pod: serde_json::Value) -> Pod {
        pod["spec"]["nodeName"] = serde_json::json!(self.node);
        let pod: Pod = serde_json::from_value(pod).unwrap();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap()
    }

    /// Wait until `cond` holds for pod `name`, or fail after `secs` with the agent's log.
    pub async fn wait_pod(
        &self,
        name: &str,
        secs: u64,
        what: &str,
        cond: impl Fn(&Pod) -> bool,
    ) -> Pod {
        let r = tokio::time::timeout(
            Duration::from_secs(secs),
            await_condition(self.pods(), name, move |p: Option<&Pod>| {
                p.is_some_and(&cond)
            }),
        )
        .await;
        match r {
            Ok(Ok(Some(p))) => p,
            _ => {
                let p = self.pods().get_opt(name).await.ok().flatten();
                panic!(
                    "pod {name}: timed out waiting for {what}; pod now: {}\nagent log (tail):\n{}",
                    serde_json::to_string_pretty(&p.map(|p| p.status)).unwrap_or_default(),
                    tail(&self.agent_log(), 60)
                )
            }
        }
    }

    /// Wait until pod `name` is gone from the API.
    pub async fn wait_gone(&self, name: &str, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while self.pods().get_opt(name).await.unwrap().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "pod {name} was not removed; agent log:\n{}",
                tail(&self.agent_log(), 60)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn runtime_root(&self) -> PathBuf {
        self.agent_dir.join("runtime")
    }

    /// Sandbox and container directories the runtime holds.
    pub fn runtime_entries(&self) -> (usize, usize) {
        let count = |d: &str| {
            std::fs::read_dir(self.runtime_root().join(d))
                .map(|r| r.count())
                .unwrap_or(0)
        };
        (count("pods"), count("containers"))
    }

    pub async fn stop(mut self) {
        self.cleanup();
        if let Some(cp) = self.cp.take() {
            cp.shutdown().await;
        }
    }

    fn cleanup(&mut self) {
        self.kill_agent();
        // Kept for a look after a failure.
        if std::thread::panicking() {
            let _ = std::fs::copy(
                self.dir.path().join("agent.log"),
                std::env::temp_dir().join(format!("berth-e2e-{}.log", self.node)),
            );
        }
        // Whatever the agent left running goes, through the runtime itself.
        let shim = vec![env!("CARGO_BIN_EXE_berth").into(), "runtime".into()];
        let mut cfg = berth_runtime::pod::RuntimeConfig::new(self.runtime_root(), shim);
        cfg.cgroup_parent = self.cgroup_parent.clone();
        if let Ok(rt) = berth_runtime::pod::Runtime::open(cfg) {
            for sb in rt.list_sandboxes().unwrap_or_default() {
                let _ = rt.stop_sandbox(&sb.id, Duration::ZERO);
                let _ = rt.remove_sandbox(&sb.id);
            }
            let _ = rt.recover();
        }
        remove_cgroup_parent(&self.cgroup_parent);
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Remove a (by now empty) cgroup parent from every hierarchy.
pub fn remove_cgroup_parent(name: &str) {
    for hierarchy in [
        "memory", "cpu", "cpuacct", "pids", "devices", "freezer", "cpuset", "blkio", "systemd",
        "unified", "",
    ] {
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(hierarchy).join(name));
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn condition(p: &Pod, kind: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

pub fn container_status(
    p: &Pod,
    name: &str,
) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
        .cloned()
}

pub fn waiting_reason(p: &Pod, name: &str) -> Option<String> {
    container_status(p, name)?.state?.waiting?.reason
}

pub fn restarts(p: &Pod, name: &str) -> i32 {
    container_status(p, name).map_or(0, |c| c.restart_count)
}
