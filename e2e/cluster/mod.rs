//! A multi-node cluster for e2e scenarios: `deploy/cluster up` in a temporary directory
//! (torn down with `deploy/cluster down` on drop, even after a failure), and kubectl
//! against it. The provider is `BERTH_E2E_PROVIDER` (`netns`, the default, or `qemu`).

// Shared by several test crates, each using part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Cluster {
    pub dir: PathBuf,
    pub provider: String,
    /// Every node's name (`n1`...); the first `control_planes` run a control-plane member.
    pub nodes: Vec<String>,
    pub control_planes: usize,
    /// The API server kubectl uses instead of the kubeconfig's (see [`Cluster::use_member`]).
    server: std::sync::Mutex<Option<String>>,
    _tmp: tempfile::TempDir,
    down: bool,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding `berth` and `berth-cni` (the test binary's target dir).
fn bin_dir() -> PathBuf {
    let berth = PathBuf::from(env!("CARGO_BIN_EXE_berth"));
    berth.parent().expect("target dir").to_path_buf()
}

/// The test images (`deploy/images/build.sh`), built once per process.
pub fn images() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = root().join("deploy/images/out");
            if !out.join("testserver.tar").exists() {
                let ok = Command::new(root().join("deploy/images/build.sh"))
                    .status()
                    .expect("deploy/images/build.sh")
                    .success();
                assert!(ok, "building the test images failed");
            }
            out
        })
        .clone()
}

impl Cluster {
    /// `nodes` nodes as network namespaces, one control-plane member.
    pub fn netns(nodes: usize) -> Cluster {
        Self::up("netns", nodes, 1)
    }

    /// `nodes` nodes, `control_planes` of them control-plane members, on the provider
    /// `BERTH_E2E_PROVIDER` names (default `netns`).
    pub fn from_env(nodes: usize, control_planes: usize) -> Cluster {
        let provider = std::env::var("BERTH_E2E_PROVIDER").unwrap_or_else(|_| "netns".into());
        Self::up(&provider, nodes, control_planes)
    }

    pub fn up(provider: &str, nodes: usize, control_planes: usize) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("berth-e2e-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().to_path_buf();
        let started = Instant::now();
        let out = Command::new(root().join("deploy/cluster"))
            .args([
                "up",
                "--provider",
                provider,
                "--nodes",
                &nodes.to_string(),
                "--control-planes",
                &control_planes.to_string(),
            ])
            .arg("--dir")
            .arg(&dir)
            .arg("--images")
            .arg(images())
            .env("BERTH_BIN_DIR", bin_dir())
            .output()
            .unwrap();
        let cluster = Cluster {
            dir,
            provider: provider.to_string(),
            nodes: (1..=nodes).map(|i| format!("n{i}")).collect(),
            control_planes,
            server: Default::default(),
            _tmp: tmp,
            down: false,
        };
        assert!(
            out.status.success(),
            "deploy/cluster up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tracing::info!(
            provider,
            nodes,
            control_planes,
            secs = started.elapsed().as_secs_f64(),
            "cluster up"
        );
        cluster
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig.yaml")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd().args(args).output().unwrap()
    }

    /// kubectl against this cluster, to add arguments to.
    pub fn kubectl_cmd(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.join(".kube-cache"))
            .arg("--request-timeout=20s");
        if let Some(server) = self.server.lock().unwrap().as_ref() {
            cmd.arg("--server").arg(server);
        }
        cmd
    }

    /// From now on, kubectl talks to this control-plane member's API.
    pub fn use_member(&self, node: &str) {
        *self.server.lock().unwrap() = Some(format!("https://{}:6443", self.address(node)));
    }

    /// A node's address on the cluster's network (from the provider, so it works while
    /// the API does not).
    pub fn address(&self, node: &str) -> String {
        let env = std::fs::read_to_string(self.dir.join("cluster.env")).unwrap();
        let net = env
            .lines()
            .find_map(|l| l.strip_prefix("NET="))
            .expect("NET in cluster.env");
        format!("{net}.{}", node.trim_start_matches('n'))
    }

    /// `deploy/cluster stop-node`: powers a node off abruptly.
    pub fn stop_node(&self, node: &str) {
        self.cluster_cmd(&["stop-node", node]);
    }

    /// `deploy/cluster start-node`.
    pub fn start_node(&self, node: &str) {
        self.cluster_cmd(&["start-node", node]);
    }

    fn cluster_cmd(&self, args: &[&str]) {
        let out = Command::new(root().join("deploy/cluster"))
            .args(&args[..1])
            .arg("--dir")
            .arg(&self.dir)
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "deploy/cluster {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// kubectl that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl apply of a manifest given as text.
    pub fn apply(&self, manifest: &str) {
        let path = self.dir.join(format!("manifest-{}.yaml", rand_suffix()));
        std::fs::write(&path, manifest).unwrap();
        self.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    }

    /// Wait until `check` returns Some, or panic with `what` after `secs`.
    pub fn wait<T>(&self, what: &str, secs: u64, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = check() {
                return v;
            }
            if Instant::now() > deadline {
                let pods = self.kubectl(&["get", "pods", "-A", "-o", "wide"]);
                panic!(
                    "timed out waiting for {what}\n{}",
                    String::from_utf8_lossy(&pods.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A node's address on the cluster's network.
    pub fn node_ip(&self, node: &str) -> String {
        self.kubectl_ok(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
        ])
    }

    /// Run a command in a node's network namespace (its stdout; panics on failure).
    pub fn on_node(&self, node: &str, args: &[&str]) -> String {
        let env = std::fs::read_to_string(self.dir.join("cluster.env")).unwrap();
        let tag = env
            .lines()
            .find_map(|l| l.strip_prefix("TAG="))
            .expect("TAG in cluster.env");
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{tag}-{node}"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?} on {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `testserver --get` in a pod, `count` times `interval_ms` apart: whether every
    /// request succeeded, and the bodies (or errors), one per line.
    pub fn get_from(
        &self,
        pod: &str,
        url: &str,
        count: u32,
        interval_ms: u32,
    ) -> (bool, Vec<String>) {
        let out = self.kubectl(&[
            "exec",
            pod,
            "--",
            "/testserver",
            "--get",
            url,
            "--count",
            &count.to_string(),
            "--interval-ms",
            &interval_ms.to_string(),
        ]);
        let lines = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        (out.status.success(), lines)
    }

    /// The addresses reserved for pods on a node.
    pub fn reservations(&self, node: &str) -> Vec<String> {
        let dir = self.dir.join(node).join("agent/cni/ipam/berth");
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn down(&mut self) {
        if self.down {
            return;
        }
        self.down = true;
        if std::thread::panicking() {
            // Keep the logs of a failed run.
            for n in &self.nodes {
                for what in ["agent", "server"] {
                    let f = format!("{n}/{what}.log");
                    let _ = std::fs::copy(
                        self.dir.join(&f),
                        std::env::temp_dir().join(format!("berth-e2e-{n}-{what}.log")),
                    );
                }
            }
        }
        let _ = Command::new(root().join("deploy/cluster"))
            .args(["down", "--dir"])
            .arg(&self.dir)
            .status();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.down();
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `hostname=` of each test server answer.
pub fn hostnames(lines: &[String]) -> std::collections::BTreeSet<String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("hostname="))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}
