//! The agent's Node: registration with the machine's capacity, addresses, labels and
//! versions; conditions measured on the machine (`MemoryPressure`, `DiskPressure`,
//! `PIDPressure`, `Ready`); and the heartbeat Lease in `kube-node-lease`, renewed every
//! 10 s. The condition values are computed by [`conditions`], a pure function of
//! [`MachineState`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;

/// Pods a node runs at most, as kubelet's default.
pub const MAX_PODS: u32 = 110;

/// What the node reports about itself that does not change while it runs.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub name: String,
    pub ip: String,
    pub port: u16,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub labels: BTreeMap<String, String>,
    pub root: PathBuf,
}

impl NodeFacts {
    pub fn cpu_millis(&self) -> u64 {
        self.cpus as u64 * 1000
    }
}

/// The machine's total memory in bytes (MemTotal).
pub fn memory_total() -> u64 {
    meminfo("MemTotal:").unwrap_or(0)
}

fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Measurements the conditions are computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MachineState {
    pub memory_available: u64,
    pub disk_available: u64,
    pub disk_total: u64,
    pub pids: u64,
    pub pid_max: u64,
    /// The pod network is configured (a CNI configuration exists).
    pub network_ready: bool,
}

impl MachineState {
    pub fn measure(root: &Path, network_ready: bool) -> MachineState {
        let (disk_available, disk_total) = nix::sys::statvfs::statvfs(root)
            .map(|s| {
                (
                    s.blocks_available() * s.fragment_size(),
                    s.blocks() * s.fragment_size(),
                )
            })
            .unwrap_or((0, 0));
        // /proc/loadavg's fourth field is running/total scheduling entities.
        let pids = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok())
            .unwrap_or(0);
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(32768);
        MachineState {
            memory_available: meminfo("MemAvailable:").unwrap_or(0),
            disk_available,
            disk_total,
            pids,
            pid_max,
            network_ready,
        }
    }
}

/// (type, status, reason, message) of each node condition, with kubelet's default
/// thresholds: memory.available < 100Mi, nodefs.available < 10%, and fewer than 5% of pids
/// left.
pub fn conditions(m: &MachineState) -> Vec<(&'static str, bool, &'static str, String)> {
    let memory = m.memory_available < 100 << 20;
    let disk = m.disk_total > 0 && m.disk_available * 10 < m.disk_total;
    let pid = m.pid_max > 0 && (m.pid_max.saturating_sub(m.pids)) * 20 < m.pid_max;
    let pressure = |on: bool, what: &str| {
        if on {
            format!("kubelet has {what} pressure")
        } else {
            format!("kubelet has sufficient {what}")
        }
    };
    let ready_msg = if m.network_ready {
        "kubelet is posting ready status".to_string()
    } else {
        "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:no CNI network configuration".to_string()
    };
    vec![
        (
            "MemoryPressure",
            memory,
            if memory {
                "KubeletHasInsufficientMemory"
            } else {
                "KubeletHasSufficientMemory"
            },
            pressure(memory, "memory"),
        ),
        (
            "DiskPressure",
            disk,
            if disk {
                "KubeletHasDiskPressure"
            } else {
                "KubeletHasNoDiskPressure"
            },
            if disk {
                "kubelet has disk pressure".into()
            } else {
                "kubelet has no disk pressure".into()
            },
        ),
        (
            "PIDPressure",
            pid,
            if pid {
                "KubeletHasInsufficientPID"
            } else {
                "KubeletHasSufficientPID"
            },
            pressure(pid, "PID"),
        ),
        (
            "Ready",
            m.network_ready,
            if m.network_ready {
                "KubeletReady"
            } else {
                "KubeletNotReady"
            },
            ready_msg,
        ),
    ]
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|s| s.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// The Node status for `facts` and the measured `state`; transition times are kept from
/// `old` while a condition's value is unchanged.
pub fn node_status(
    facts: &NodeFacts,
    state: &MachineState,
    old: Option<&NodeStatus>,
    now: Timestamp,
) -> NodeStatus {
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_string(), Quantity(facts.cpus.to_string()));
    capacity.insert(
        "memory".to_string(),
        Quantity(format!("{}Ki", facts.memory_bytes / 1024)),
    );
    capacity.insert("pods".to_string(), Quantity(MAX_PODS.to_string()));
    capacity.insert(
        "ephemeral-storage".to_string(),
        Quantity(format!("{}Ki", state.disk_total / 1024)),
    );
    let conditions = conditions(state)
        .into_iter()
        .map(|(kind, on, reason, message)| {
            let value = if on { "True" } else { "False" };
            let since = old
                .and_then(|o| o.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == kind))
                .filter(|c| c.status == value)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            NodeCondition {
                type_: kind.into(),
                status: value.into(),
                reason: Some(reason.into()),
                message: Some(message),
                last_heartbeat_time: Some(Time(now)),
                last_transition_time: Some(since),
            }
        })
        .collect();
    NodeStatus {
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: facts.ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: facts.name.clone(),
            },
        ]),
        conditions: Some(conditions),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: facts.port as i32,
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.replace("x86_64", "amd64"),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            container_runtime_version: format!("berth://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: read_trim("/proc/sys/kernel/osrelease"),
            kube_proxy_version: String::new(),
            kubelet_version: format!("v1.32.0-berth.{}", env!("CARGO_PKG_VERSION")),
            machine_id: read_trim("/etc/machine-id"),
            operating_system: "linux".into(),
            os_image: os_image(),
            system_uuid: read_trim("/sys/class/dmi/id/product_uuid"),
        }),
        ..Default::default()
    }
}

/// Register the Node (or take over the existing one) and report its status.
pub async fn register(
    client: &kube::Client,
    facts: &NodeFacts,
    state: &MachineState,
) -> kube::Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let now = Timestamp::now();
    match api.get_opt(&facts.name).await? {
        None => {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(facts.name.clone()),
                    labels: Some(facts.labels.clone()),
                    ..Default::default()
                },
                spec: None,
                status: None,
            };
            match api.create(&PostParams::default(), &node).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Some(_) => {
            let patch = serde_json::json!({"metadata": {"labels": facts.labels}});
            api.patch(&facts.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
    }
    let old = api.get(&facts.name).await?;
    update_status(&api, facts, state, old.status.as_ref(), now).await
}

async fn update_status(
    api: &Api<Node>,
    facts: &NodeFacts,
    state: &MachineState,
    old: Option<&NodeStatus>,
    now: Timestamp,
) -> kube::Result<Node> {
    let status = node_status(facts, state, old, now);
    let patch = serde_json::json!({"status": status});
    api.patch_status(&facts.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

/// Self-fencing: a node that cannot renew its Lease stops its own pods before the
/// controller-manager may declare it unreachable and replace them elsewhere.
///
/// The agent measures from when it *sent* its last successful renewal, on its own monotonic
/// clock; the controller measures from when it *saw* that renewal, which is later. So with
/// `after` = the controller's grace period - a margin, the containers are killed (SIGKILL,
/// no grace) at least the margin before the controller acts, whatever the two clocks read,
/// as long as they run at nearly the same rate and the kill takes less than the margin.
#[derive(Debug)]
pub struct Fence {
    /// `None`: fencing is off.
    pub after: Option<Duration>,
    fenced: std::sync::atomic::AtomicBool,
    last_ok: Mutex<tokio::time::Instant>,
}

impl Fence {
    pub fn new(after: Option<Duration>) -> Self {
        Self {
            after,
            fenced: std::sync::atomic::AtomicBool::new(false),
            last_ok: Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// True while pods must not run.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A renewal sent at `sent` succeeded. Returns true when this lifts the fence.
    pub fn renewed(&self, sent: tokio::time::Instant) -> bool {
        *self.last_ok.lock().expect("fence lock") = sent;
        self.fenced.swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// Raises the fence when the last renewal is too old. Returns true when it just rose.
    pub fn check(&self) -> bool {
        let Some(after) = self.after else {
            return false;
        };
        if self.last_ok.lock().expect("fence lock").elapsed() < after {
            return false;
        }
        !self.fenced.swap(true, std::sync::atomic::Ordering::SeqCst)
    }
}

/// Renew the Lease every 10 s (every 2 s after a failure, each attempt bounded to 5 s) and
/// report the Node's status when a condition changes, a minute has passed, or the Lease is
/// renewed again after failures (the controller may have marked the node `Unknown`); runs
/// until the task is dropped.
pub async fn heartbeat(
    client: kube::Client,
    facts: NodeFacts,
    fence: Arc<Fence>,
    network_ready: impl Fn() -> bool + Send + 'static,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut last_report = std::time::Instant::now();
    let mut last_conditions = None;
    let mut failing = false;
    loop {
        let sent = tokio::time::Instant::now();
        let renewed =
            tokio::time::timeout(Duration::from_secs(5), renew_lease(&leases, &facts.name)).await;
        match renewed {
            Ok(Ok(())) => {
                if fence.renewed(sent) {
                    tracing::warn!(node = %facts.name, "lease renewed again: fence lifted, pods may run");
                }
                if failing {
                    last_conditions = None;
                }
                failing = false;
            }
            Ok(Err(e)) => {
                failing = true;
                tracing::warn!(error = %e, node = %facts.name, "renewing the node lease failed");
            }
            Err(_) => {
                failing = true;
                tracing::warn!(node = %facts.name, "renewing the node lease timed out");
            }
        }
        if failing {
            tokio::time::sleep_until(sent + Duration::from_secs(2)).await;
            continue;
        }
        let root = facts.root.clone();
        let ready = network_ready();
        let state = tokio::task::spawn_blocking(move || MachineState::measure(&root, ready))
            .await
            .unwrap_or_default();
        let values: Vec<bool> = conditions(&state).iter().map(|c| c.1).collect();
        if last_conditions.as_ref() != Some(&values)
            || last_report.elapsed() >= Duration::from_secs(60)
        {
            let old = nodes.get(&facts.name).await.ok();
            match update_status(
                &nodes,
                &facts,
                &state,
                old.as_ref().and_then(|n| n.status.as_ref()),
                Timestamp::now(),
            )
            .await
            {
                Ok(_) => {
                    last_conditions = Some(values);
                    last_report = std::time::Instant::now();
                }
                Err(e) => {
                    tracing::warn!(error = %e, node = %facts.name, "reporting node status failed")
                }
            }
        }
        tokio::time::sleep_until(sent + Duration::from_secs(10)).await;
    }
}

/// Create or renew the node's Lease.
pub async fn renew_lease(api: &Api<Lease>, node: &str) -> kube::Result<()> {
    let now = MicroTime(Timestamp::now());
    match api.get_opt(node).await? {
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(now);
            spec.holder_identity = Some(node.into());
            spec.lease_duration_seconds = Some(40);
            api.replace(node, &PostParams::default(), &lease).await?;
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.into()),
                    namespace: Some("kube-node-lease".into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.into()),
                    lease_duration_seconds: Some(40),
                    renew_time: Some(now.clone()),
                    acquire_time: Some(now),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}

/// The node's default labels.
pub fn default_labels(name: &str) -> BTreeMap<String, String> {
    let arch = std::env::consts::ARCH.replace("x86_64", "amd64");
    [
        ("kubernetes.io/hostname", name.to_string()),
        ("kubernetes.io/os", "linux".into()),
        ("kubernetes.io/arch", arch.clone()),
        ("beta.kubernetes.io/os", "linux".into()),
        ("beta.kubernetes.io/arch", arch),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> MachineState {
        MachineState {
            memory_available: 8 << 30,
            disk_available: 50,
            disk_total: 100,
            pids: 300,
            pid_max: 32768,
            network_ready: true,
        }
    }

    fn values(m: &MachineState) -> Vec<(&'static str, bool)> {
        conditions(m).into_iter().map(|c| (c.0, c.1)).collect()
    }

    #[test]
    fn conditions_follow_kubelet_thresholds() {
        assert_eq!(
            values(&healthy()),
            [
                ("MemoryPressure", false),
                ("DiskPressure", false),
                ("PIDPressure", false),
                ("Ready", true)
            ]
        );
        let m = MachineState {
            memory_available: 99 << 20,
            disk_available: 9,
            pids: 31500,
            network_ready: false,
            ..healthy()
        };
        assert_eq!(
            values(&m),
            [
                ("MemoryPressure", true),
                ("DiskPressure", true),
                ("PIDPressure", true),
                ("Ready", false)
            ]
        );
    }

    #[test]
    fn status_keeps_transition_times_of_unchanged_conditions() {
        let facts = NodeFacts {
            name: "n1".into(),
            ip: "10.0.0.1".into(),
            port: 10250,
            cpus: 2,
            memory_bytes: 4 << 30,
            labels: default_labels("n1"),
            root: "/".into(),
        };
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let t1 = Timestamp::from_second(1_700_000_100).unwrap();
        let first = node_status(&facts, &healthy(), None, t0);
        assert_eq!(first.capacity.as_ref().unwrap()["memory"].0, "4194304Ki");
        assert_eq!(first.capacity.as_ref().unwrap()["cpu"].0, "2");
        let second = node_status(
            &facts,
            &MachineState {
                network_ready: false,
                ..healthy()
            },
            Some(&first),
            t1,
        );
        let get = |s: &NodeStatus, k: &str| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == k)
                .unwrap()
                .clone()
        };
        assert_eq!(
            get(&second, "MemoryPressure").last_transition_time,
            Some(Time(t0))
        );
        assert_eq!(get(&second, "Ready").last_transition_time, Some(Time(t1)));
        assert_eq!(get(&second, "Ready").last_heartbeat_time, Some(Time(t1)));
    }
}
