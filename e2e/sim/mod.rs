//! A control plane with simulated nodes, in this process: a real API server (store and
//! HTTPS), the real scheduler and controller-manager as API clients, and nodes that are only
//! API objects. A simulated kubelet renews each live node's Lease, marks pods bound to a live
//! node Running and Ready after a short delay, ends pods that ask to (`sim/exit-code`), and
//! finishes their graceful deletion. No container runs.

#![allow(dead_code)]

pub use berth_testkit::free_port;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_apiserver::{ControlPlane, ServerArgs};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use serde_json::json;
use tokio::task::JoinHandle;

/// A pod annotation: the simulated kubelet ends the pod with this exit code once it runs.
pub const EXIT_CODE: &str = "sim/exit-code";

/// How the simulation behaves.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    /// From a pod's binding to its readiness.
    pub ready_after: Duration,
    pub controllers: berth_controller_manager::Config,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: 3,
            ready_after: Duration::from_millis(300),
            controllers: berth_controller_manager::Config::default(),
        }
    }
}

/// CPU usage the autoscaler reads: the same for every pod the selector matches, in
/// millicores (`None`: no metrics).
pub struct FakeMetrics {
    pub client: kube::Client,
    pub usage: Mutex<Option<i64>>,
}

impl berth_controller_manager::hpa::Metrics for FakeMetrics {
    fn pod_cpu<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
    ) -> futures::future::BoxFuture<'a, kube::Result<std::collections::HashMap<String, i64>>> {
        Box::pin(async move {
            let Some(usage) = *self.usage.lock().unwrap() else {
                return Ok(Default::default());
            };
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let list = pods.list(&ListParams::default().labels(selector)).await?;
            Ok(list
                .items
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .map(|n| (n, usage))
                .collect())
        })
    }
}

pub struct Sim {
    pub cp: Option<ControlPlane>,
    pub metrics: Arc<FakeMetrics>,
    pub dir: tempfile::TempDir,
    pub client: kube::Client,
    pub opts: Options,
    /// Node name -> alive (renews its Lease, runs its pods).
    alive: Arc<Mutex<BTreeMap<String, bool>>>,
    tasks: Vec<JoinHandle<()>>,
    controller_manager: Option<JoinHandle<()>>,
}

impl Sim {
    pub async fn start(opts: Options) -> Sim {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let args = ServerArgs {
            listen: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            store_client_url: format!("http://127.0.0.1:{}", free_port()),
            store_peer_url: format!("http://127.0.0.1:{}", free_port()),
            ..ServerArgs::new(dir.path().join("server"))
        };
        let cp = ControlPlane::start(args).await.unwrap();
        let client = berth_controller_manager::cli::client_from(&cp.kubeconfig)
            .await
            .unwrap();
        let mut sim = Sim {
            metrics: Arc::new(FakeMetrics {
                client: client.clone(),
                usage: Mutex::new(None),
            }),
            cp: Some(cp),
            dir,
            client,
            opts: opts.clone(),
            alive: Arc::default(),
            tasks: Vec::new(),
            controller_manager: None,
        };
        for i in 0..opts.nodes {
            sim.add_node(&format!("node-{i}")).await;
        }
        sim.tasks.push(tokio::spawn(kubelet(
            sim.client.clone(),
            sim.alive.clone(),
            opts.ready_after,
        )));
        sim.tasks
            .push(tokio::spawn(leases(sim.client.clone(), sim.alive.clone())));
        let client = sim.client.clone();
        sim.tasks.push(tokio::spawn(async move {
            if let Err(e) = berth_scheduler::run(client, berth_scheduler::Config::default()).await {
                tracing::error!(error = %e, "scheduler stopped");
            }
        }));
        sim.start_controller_manager();
        sim
    }

    pub fn kubeconfig(&self) -> std::path::PathBuf {
        self.cp.as_ref().unwrap().kubeconfig.clone()
    }

    /// Registers a Ready node with 8 CPUs, 16 GiB and 110 pods.
    pub async fn add_node(&mut self, name: &str) {
        self.alive.lock().unwrap().insert(name.to_string(), true);
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        let now = jiff::Timestamp::now().to_string();
        let status = json!({"status": {
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": "192.0.2.1"}],
        }});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
    }

    /// The node stops renewing its Lease and doing anything for its pods.
    pub fn stop_node(&self, name: &str) {
        self.alive.lock().unwrap().insert(name.to_string(), false);
    }

    pub fn start_controller_manager(&mut self) {
        let client = self.client.clone();
        let cfg = self.opts.controllers.clone();
        let metrics = self.metrics.clone();
        self.controller_manager = Some(tokio::spawn(berth_controller_manager::run_with_metrics(
            client, cfg, metrics,
        )));
    }

    /// Kills the controller-manager wherever it is (its in-flight requests are dropped).
    pub fn kill_controller_manager(&mut self) {
        if let Some(t) = self.controller_manager.take() {
            t.abort();
        }
    }

    pub fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    pub fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Applies a manifest (JSON) with server-side apply.
    pub async fn apply<K>(&self, ns: &str, obj: serde_json::Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let api: Api<K> = self.api(ns);
        api.patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap()
    }

    /// Polls `check` every 100 ms until it returns Some, for up to `secs`.
    pub async fn eventually<T, F, Fut>(&self, secs: u64, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {secs}s waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(mut self) {
        self.kill_controller_manager();
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(cp) = self.cp.take() {
            cp.shutdown().await;
        }
    }
}

fn alive(alive: &Mutex<BTreeMap<String, bool>>, node: &str) -> bool {
    alive.lock().unwrap().get(node).copied().unwrap_or(false)
}

/// Renews every live node's Lease each 2 s.
async fn leases(client: kube::Client, nodes: Arc<Mutex<BTreeMap<String, bool>>>) {
    let api: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    loop {
        let live: Vec<String> = nodes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, a)| **a)
            .map(|(n, _)| n.clone())
            .collect();
        for n in live {
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(n.clone()),
                    namespace: Some("kube-node-lease".into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(n.clone()),
                    lease_duration_seconds: Some(40),
                    renew_time: Some(MicroTime(jiff::Timestamp::now())),
                    ..Default::default()
                }),
            };
            let _ = api
                .patch(
                    &n,
                    &PatchParams::apply("sim").force(),
                    &Patch::Apply(&lease),
                )
                .await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Runs pods bound to live nodes: Running and Ready after `ready_after`; ends those that
/// carry [`EXIT_CODE`]; completes graceful deletions.
async fn kubelet(
    client: kube::Client,
    nodes: Arc<Mutex<BTreeMap<String, bool>>>,
    ready_after: Duration,
) {
    let all: Api<Pod> = Api::all(client.clone());
    let mut stream = std::pin::pin!(watcher::watcher(all, watcher::Config::default())
        .applied_objects()
        .boxed());
    while let Ok(Some(p)) = stream.try_next().await {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        if !alive(&nodes, &node) {
            continue;
        }
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if p.metadata.deletion_timestamp.is_some() {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            let _ = api.delete(&name, &dp).await;
            continue;
        }
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let exit = p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(EXIT_CODE))
            .and_then(|c| c.parse::<i32>().ok());
        let nodes = nodes.clone();
        match phase.as_str() {
            "Running" if exit.is_some() => {
                let code = exit.unwrap();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if !alive(&nodes, &node) {
                        return;
                    }
                    let phase = if code == 0 { "Succeeded" } else { "Failed" };
                    let now = jiff::Timestamp::now().to_string();
                    let status = json!({"status": {"phase": phase,
                        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
                        "containerStatuses": [{"name": "main", "ready": false, "restartCount": 0,
                            "image": "sim", "imageID": "", "state": {"terminated": {"exitCode": code,
                            "reason": if code == 0 { "Completed" } else { "Error" },
                            "startedAt": now, "finishedAt": now}}}]}});
                    let _ = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                        .await;
                });
            }
            "Running" | "Succeeded" | "Failed" => {}
            _ => {
                tokio::spawn(async move {
                    tokio::time::sleep(ready_after).await;
                    if !alive(&nodes, &node) {
                        return;
                    }
                    let now = jiff::Timestamp::now().to_string();
                    let status = json!({"status": {"phase": "Running", "podIP": "10.244.0.9",
                        "startTime": now,
                        "conditions": [
                            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                            {"type": "Ready", "status": "True", "lastTransitionTime": now}],
                        "containerStatuses": [{"name": "main", "ready": true, "restartCount": 0,
                            "started": true, "image": "sim", "imageID": "",
                            "state": {"running": {"startedAt": now}}}]}});
                    let _ = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                        .await;
                });
            }
        }
    }
}
