//! One printer per kind: its columns and the cells of one object, after
//! `pkg/printers/internalversion/printers.go` of Kubernetes 1.32 (and, for kinds without a
//! printer there, `rest.DefaultTableConvertor`).
//!
//! Printers decode the object into its k8s-openapi type. Kubernetes prints its internal types,
//! on which the API server's defaulting has run; where a stored object may lack a defaulted
//! field, the printer reads the default Kubernetes would have set (`TCP` for a port's protocol,
//! one replica, `ClusterIP`, `Opaque`, `Active`, `Pending`).

use std::collections::{BTreeMap, BTreeSet};

use berth_api::labels::Selector;
use berth_api::ResourceInfo;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerStatus, Endpoints, Event, Namespace, Node, Pod, PodCondition,
    Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, MicroTime, Time};
use k8s_openapi::serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::human_duration;

/// How one kind prints.
pub(crate) struct Printer {
    pub(crate) columns: &'static [Column],
    pub(crate) print: fn(&Value, Timestamp) -> Printed,
}

/// One row: its cells and, for finished pods, its `conditions`.
pub(crate) struct Printed {
    pub(crate) cells: Vec<Value>,
    pub(crate) conditions: Option<Value>,
}

impl Printed {
    fn cells(cells: Vec<Value>) -> Self {
        Printed {
            cells,
            conditions: None,
        }
    }
}

pub(crate) struct Column {
    pub(crate) name: &'static str,
    pub(crate) type_: &'static str,
    pub(crate) format: &'static str,
    pub(crate) description: Doc,
    pub(crate) priority: u8,
}

/// A column's description: literal, or the documentation of an API field, as Kubernetes takes
/// most of them from `SwaggerDoc()`.
pub(crate) enum Doc {
    Text(&'static str),
    Field(&'static str, &'static str),
}

impl Doc {
    pub(crate) fn text(&self) -> &'static str {
        match self {
            Doc::Text(text) => text,
            Doc::Field(schema, field) => {
                crate::openapi::field_description(schema, field).unwrap_or_default()
            }
        }
    }
}

use Doc::{Field, Text};

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

const fn column(name: &'static str, type_: &'static str, description: Doc, priority: u8) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority,
    }
}

const fn string(name: &'static str, description: Doc) -> Column {
    column(name, "string", description, 0)
}

const fn integer(name: &'static str, description: Doc) -> Column {
    column(name, "integer", description, 0)
}

const fn wide(name: &'static str, description: Doc) -> Column {
    column(name, "string", description, 1)
}

const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: Field(META, "name"),
    priority: 0,
};
const AGE: Column = string("Age", Field(META, "creationTimestamp"));
const CONTAINERS: Column = wide(
    "Containers",
    Text("Names of each container in the template."),
);
const IMAGES: Column = wide(
    "Images",
    Text("Images referenced by each container in the template."),
);

/// The printer of a kind; kinds Kubernetes prints without a printer of their own use
/// `DefaultTableConvertor`'s (Name, Created At), and kinds unknown to Berth's printers Name and
/// Age.
pub(crate) fn for_kind(info: &ResourceInfo) -> &'static Printer {
    match info.kind {
        "Pod" => &POD,
        "Node" => &NODE,
        "Service" => &SERVICE,
        "Endpoints" => &ENDPOINTS,
        "Namespace" => &NAMESPACE,
        "ConfigMap" => &CONFIG_MAP,
        "Secret" => &SECRET,
        "Event" => &EVENT,
        "ServiceAccount" => &SERVICE_ACCOUNT,
        "Deployment" => &DEPLOYMENT,
        "ReplicaSet" => &REPLICA_SET,
        "DaemonSet" => &DAEMON_SET,
        "StatefulSet" => &STATEFUL_SET,
        "Job" => &JOB,
        "EndpointSlice" => &ENDPOINT_SLICE,
        "Lease" => &LEASE,
        "HorizontalPodAutoscaler" => &HPA,
        "RoleBinding" => &ROLE_BINDING,
        "ClusterRoleBinding" => &CLUSTER_ROLE_BINDING,
        "CertificateSigningRequest" => &CERTIFICATE_SIGNING_REQUEST,
        "Role" | "ClusterRole" => &DEFAULT_CONVERTOR,
        _ => &NAME_AGE,
    }
}

// ---- helpers ----

fn decode<T: DeserializeOwned + Default>(obj: &Value) -> T {
    serde_json::from_value(obj.clone()).unwrap_or_default()
}

fn s(value: impl Into<String>) -> Value {
    Value::String(value.into())
}

fn n(value: impl Into<i64>) -> Value {
    Value::from(value.into())
}

fn name(obj: &Value) -> Value {
    s(obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default())
}

fn created(obj: &Value) -> Option<Timestamp> {
    obj.pointer("/metadata/creationTimestamp")?
        .as_str()?
        .parse()
        .ok()
}

/// `translateTimestampSince`: the age of a timestamp, `<unknown>` without one.
fn since(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => human_duration(now.duration_since(t)),
        None => "<unknown>".to_string(),
    }
}

fn age(obj: &Value, now: Timestamp) -> Value {
    s(since(created(obj), now))
}

fn time(t: &Option<Time>) -> Option<Timestamp> {
    t.as_ref().map(|t| t.0)
}

fn micro_time(t: &Option<MicroTime>) -> Option<Timestamp> {
    t.as_ref().map(|t| t.0)
}

fn or_none(value: &str) -> String {
    if value.is_empty() {
        "<none>".to_string()
    } else {
        value.to_string()
    }
}

/// `labels.FormatLabels`: `a=b,c=d` sorted by key, `<none>` when empty.
fn format_labels(labels: Option<&BTreeMap<String, String>>) -> String {
    let joined = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    or_none(&joined)
}

/// `metav1.FormatLabelSelector`: the selector's string form, `<none>` when it selects
/// everything (or is missing), `<error>` when it is malformed.
fn format_label_selector(selector: Option<&LabelSelector>) -> String {
    let Some(selector) = selector else {
        return "<none>".to_string();
    };
    match Selector::from_label_selector(selector) {
        Ok(selector) => or_none(&selector.to_string()),
        Err(_) => "<error>".to_string(),
    }
}

/// `layoutContainerCells`: names and images of containers, comma-separated.
fn container_cells(containers: &[Container]) -> (Value, Value) {
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|c| c.image.as_deref().unwrap_or_default())
        .collect();
    (s(names.join(",")), s(images.join(",")))
}

fn template_containers(
    template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
) -> (Value, Value) {
    let containers = template
        .and_then(|t| t.spec.as_ref())
        .map(|spec| spec.containers.as_slice())
        .unwrap_or_default();
    container_cells(containers)
}

fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let joined = list.join(",");
    if more {
        return format!("{joined} + {} more...", count - max);
    }
    if joined.is_empty() {
        "<unset>".to_string()
    } else {
        joined
    }
}

// ---- pods ----

static POD: Printer = Printer {
    columns: &[
        NAME,
        string(
            "Ready",
            Text("The aggregate readiness state of this pod for accepting traffic."),
        ),
        string(
            "Status",
            Text("The aggregate status of the containers in this pod."),
        ),
        string(
            "Restarts",
            Text("The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
        ),
        AGE,
        wide("IP", Field("io.k8s.api.core.v1.PodStatus", "podIP")),
        wide("Node", Field("io.k8s.api.core.v1.PodSpec", "nodeName")),
        wide(
            "Nominated Node",
            Field("io.k8s.api.core.v1.PodStatus", "nominatedNodeName"),
        ),
        wide(
            "Readiness Gates",
            Field("io.k8s.api.core.v1.PodSpec", "readinessGates"),
        ),
    ],
    print: print_pod,
};

fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

/// When the container last terminated, if it has.
fn last_termination(status: &ContainerStatus) -> Option<Timestamp> {
    let terminated = status.last_state.as_ref()?.terminated.as_ref()?;
    time(&terminated.finished_at)
}

fn keep_latest(latest: &mut Option<Timestamp>, candidate: Option<Timestamp>) {
    if let Some(t) = candidate {
        if latest.is_none_or(|l| l < t) {
            *latest = Some(t);
        }
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

fn print_pod(obj: &Value, now: Timestamp) -> Printed {
    let pod: Pod = decode(obj);
    let spec = pod.spec.unwrap_or_default();
    let status = pod.status.unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let conditions: &[PodCondition] = status.conditions.as_deref().unwrap_or_default();
    let init_specs: &[Container] = spec.init_containers.as_deref().unwrap_or_default();

    let mut reason = non_empty(&status.reason).unwrap_or(phase).to_string();
    if conditions
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated"))
    {
        reason = "SchedulingGated".to_string();
    }

    let total = spec.containers.len() + init_specs.iter().filter(|c| is_sidecar(c)).count();
    let mut ready = 0;
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let mut last_restart = None;
    let mut last_sidecar_restart = None;

    let mut initializing = false;
    for (i, container) in status.init_container_statuses.iter().flatten().enumerate() {
        restarts += i64::from(container.restart_count);
        keep_latest(&mut last_restart, last_termination(container));
        let sidecar = init_specs
            .iter()
            .any(|c| c.name == container.name && is_sidecar(c));
        if sidecar {
            sidecar_restarts += i64::from(container.restart_count);
            keep_latest(&mut last_sidecar_restart, last_termination(container));
        }
        let state = container.state.clone().unwrap_or_default();
        if state.terminated.as_ref().is_some_and(|t| t.exit_code == 0) {
            continue;
        }
        if sidecar && container.started == Some(true) {
            if container.ready {
                ready += 1;
            }
            continue;
        }
        let waiting = state
            .waiting
            .as_ref()
            .and_then(|w| non_empty(&w.reason))
            .filter(|r| *r != "PodInitializing");
        reason = if let Some(terminated) = &state.terminated {
            match (
                non_empty(&terminated.reason),
                terminated.signal.unwrap_or(0),
            ) {
                (Some(r), _) => format!("Init:{r}"),
                (None, 0) => format!("Init:ExitCode:{}", terminated.exit_code),
                (None, signal) => format!("Init:Signal:{signal}"),
            }
        } else if let Some(r) = waiting {
            format!("Init:{r}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    let initialized = conditions
        .iter()
        .find(|c| c.type_ == "Initialized")
        .is_some_and(|c| c.status == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for container in status.container_statuses.iter().flatten().rev() {
            restarts += i64::from(container.restart_count);
            keep_latest(&mut last_restart, last_termination(container));
            let state = container.state.clone().unwrap_or_default();
            if let Some(r) = state.waiting.as_ref().and_then(|w| non_empty(&w.reason)) {
                reason = r.to_string();
            } else if let Some(terminated) = &state.terminated {
                reason = match (
                    non_empty(&terminated.reason),
                    terminated.signal.unwrap_or(0),
                ) {
                    (Some(r), _) => r.to_string(),
                    (None, 0) => format!("ExitCode:{}", terminated.exit_code),
                    (None, signal) => format!("Signal:{signal}"),
                };
            } else if container.ready && state.running.is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }

    let deleting = pod.metadata.deletion_timestamp.is_some();
    if deleting && status.reason.as_deref() == Some("NodeLost") {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };

    let pod_ip = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.as_str())
        .next()
        .or(status.pod_ip.as_deref())
        .unwrap_or_default();
    let gates = spec.readiness_gates.as_deref().unwrap_or_default();
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let passing = gates
            .iter()
            .filter(|gate| {
                conditions
                    .iter()
                    .find(|c| c.type_ == gate.condition_type)
                    .is_some_and(|c| c.status == "True")
            })
            .count();
        format!("{passing}/{}", gates.len())
    };

    let conditions = match phase {
        "Succeeded" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                                    "message": "The pod has completed successfully."}]),
        ),
        "Failed" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Failed",
                                 "message": "The pod failed."}]),
        ),
        _ => None,
    };
    Printed {
        cells: vec![
            name(obj),
            s(format!("{ready}/{total}")),
            s(reason),
            s(restarts_cell),
            age(obj, now),
            s(or_none(pod_ip)),
            s(or_none(spec.node_name.as_deref().unwrap_or_default())),
            s(or_none(
                status.nominated_node_name.as_deref().unwrap_or_default(),
            )),
            s(readiness_gates),
        ],
        conditions,
    }
}

// ---- nodes ----

static NODE: Printer = Printer {
    columns: &[
        NAME,
        string("Status", Text("The status of the node")),
        string("Roles", Text("The roles of the node")),
        AGE,
        string(
            "Version",
            Field("io.k8s.api.core.v1.NodeSystemInfo", "kubeletVersion"),
        ),
        wide(
            "Internal-IP",
            Field("io.k8s.api.core.v1.NodeStatus", "addresses"),
        ),
        wide(
            "External-IP",
            Field("io.k8s.api.core.v1.NodeStatus", "addresses"),
        ),
        wide(
            "OS-Image",
            Field("io.k8s.api.core.v1.NodeSystemInfo", "osImage"),
        ),
        wide(
            "Kernel-Version",
            Field("io.k8s.api.core.v1.NodeSystemInfo", "kernelVersion"),
        ),
        wide(
            "Container-Runtime",
            Field(
                "io.k8s.api.core.v1.NodeSystemInfo",
                "containerRuntimeVersion",
            ),
        ),
    ],
    print: print_node,
};

fn print_node(obj: &Value, now: Timestamp) -> Printed {
    let node: Node = decode(obj);
    let status = node.status.unwrap_or_default();
    let mut state: Vec<&str> = Vec::new();
    // Conditions by type, the last of a type winning; only Ready is shown.
    let ready = status
        .conditions
        .iter()
        .flatten()
        .rfind(|c| c.type_ == "Ready");
    state.push(match ready {
        Some(c) if c.status == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    });
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        state.push("SchedulingDisabled");
    }

    let mut roles = BTreeSet::new();
    for (key, value) in node.metadata.labels.iter().flatten() {
        if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.insert(role.to_string());
            }
        } else if key == "kubernetes.io/role" && !value.is_empty() {
            roles.insert(value.clone());
        }
    }
    let roles = or_none(&roles.into_iter().collect::<Vec<_>>().join(","));

    let info = status.node_info.unwrap_or_default();
    let address = |type_: &str| {
        status
            .addresses
            .iter()
            .flatten()
            .find(|a| a.type_ == type_)
            .map(|a| a.address.clone())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let unknown = |v: String| {
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v
        }
    };
    Printed::cells(vec![
        name(obj),
        s(state.join(",")),
        s(roles),
        age(obj, now),
        s(info.kubelet_version),
        s(address("InternalIP")),
        s(address("ExternalIP")),
        s(unknown(info.os_image)),
        s(unknown(info.kernel_version)),
        s(unknown(info.container_runtime_version)),
    ])
}

// ---- services ----

static SERVICE: Printer = Printer {
    columns: &[
        NAME,
        string("Type", Field("io.k8s.api.core.v1.ServiceSpec", "type")),
        string(
            "Cluster-IP",
            Field("io.k8s.api.core.v1.ServiceSpec", "clusterIP"),
        ),
        string(
            "External-IP",
            Field("io.k8s.api.core.v1.ServiceSpec", "externalIPs"),
        ),
        string("Port(s)", Field("io.k8s.api.core.v1.ServiceSpec", "ports")),
        AGE,
        wide(
            "Selector",
            Field("io.k8s.api.core.v1.ServiceSpec", "selector"),
        ),
    ],
    print: print_service,
};

fn print_service(obj: &Value, now: Timestamp) -> Printed {
    let svc: Service = decode(obj);
    let spec = svc.spec.unwrap_or_default();
    let status = svc.status.unwrap_or_default();
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    let cluster_ip = spec
        .cluster_ips
        .iter()
        .flatten()
        .next()
        .map(String::as_str)
        .or(spec.cluster_ip.as_deref())
        .unwrap_or_default();
    let external_ips: &[String] = spec.external_ips.as_deref().unwrap_or_default();
    let external = match type_ {
        "ClusterIP" | "NodePort" => or_none(&external_ips.join(",")),
        "LoadBalancer" => {
            let ingress: BTreeSet<&str> = status
                .load_balancer
                .iter()
                .flat_map(|lb| lb.ingress.iter().flatten())
                .filter_map(|i| non_empty(&i.ip).or(non_empty(&i.hostname)))
                .collect();
            let mut all: Vec<&str> = ingress.into_iter().collect();
            if !external_ips.is_empty() {
                all.extend(external_ips.iter().map(String::as_str));
                all.join(",")
            } else if !all.is_empty() {
                all.join(",")
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => spec.external_name.clone().unwrap_or_default(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let protocol = p.protocol.as_deref().unwrap_or("TCP");
            match p.node_port {
                Some(node_port) if node_port > 0 => {
                    format!("{}:{node_port}/{protocol}", p.port)
                }
                _ => format!("{}/{protocol}", p.port),
            }
        })
        .collect();
    Printed::cells(vec![
        name(obj),
        s(type_),
        s(or_none(cluster_ip)),
        s(external),
        s(or_none(&ports.join(","))),
        age(obj, now),
        s(format_labels(spec.selector.as_ref())),
    ])
}

// ---- workloads ----

static DEPLOYMENT: Printer = Printer {
    columns: &[
        NAME,
        string("Ready", Text("Number of the pod with ready state")),
        string(
            "Up-to-date",
            Field("io.k8s.api.apps.v1.DeploymentStatus", "updatedReplicas"),
        ),
        string(
            "Available",
            Field("io.k8s.api.apps.v1.DeploymentStatus", "availableReplicas"),
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        wide(
            "Selector",
            Field("io.k8s.api.apps.v1.DeploymentSpec", "selector"),
        ),
    ],
    print: print_deployment,
};

fn print_deployment(obj: &Value, now: Timestamp) -> Printed {
    let deployment: Deployment = decode(obj);
    let spec = deployment.spec.unwrap_or_default();
    let status = deployment.status.unwrap_or_default();
    let (names, images) = template_containers(Some(&spec.template));
    // LabelSelectorAsSelector(...).String(): empty for an empty selector, unlike the other
    // workloads' FormatLabelSelector.
    let selector = match Selector::from_label_selector(&spec.selector) {
        Ok(selector) => selector.to_string(),
        Err(_) => "<invalid>".to_string(),
    };
    Printed::cells(vec![
        name(obj),
        s(format!(
            "{}/{}",
            status.ready_replicas.unwrap_or(0),
            spec.replicas.unwrap_or(1)
        )),
        n(status.updated_replicas.unwrap_or(0)),
        n(status.available_replicas.unwrap_or(0)),
        age(obj, now),
        names,
        images,
        s(selector),
    ])
}

static REPLICA_SET: Printer = Printer {
    columns: &[
        NAME,
        integer(
            "Desired",
            Field("io.k8s.api.apps.v1.ReplicaSetSpec", "replicas"),
        ),
        integer(
            "Current",
            Field("io.k8s.api.apps.v1.ReplicaSetStatus", "replicas"),
        ),
        integer(
            "Ready",
            Field("io.k8s.api.apps.v1.ReplicaSetStatus", "readyReplicas"),
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        wide(
            "Selector",
            Field("io.k8s.api.apps.v1.ReplicaSetSpec", "selector"),
        ),
    ],
    print: print_replica_set,
};

fn print_replica_set(obj: &Value, now: Timestamp) -> Printed {
    let rs: ReplicaSet = decode(obj);
    let spec = rs.spec.unwrap_or_default();
    let status = rs.status.unwrap_or_default();
    let (names, images) = template_containers(spec.template.as_ref());
    Printed::cells(vec![
        name(obj),
        n(spec.replicas.unwrap_or(1)),
        n(status.replicas),
        n(status.ready_replicas.unwrap_or(0)),
        age(obj, now),
        names,
        images,
        s(format_label_selector(Some(&spec.selector))),
    ])
}

static DAEMON_SET: Printer = Printer {
    columns: &[
        NAME,
        integer(
            "Desired",
            Field(
                "io.k8s.api.apps.v1.DaemonSetStatus",
                "desiredNumberScheduled",
            ),
        ),
        integer(
            "Current",
            Field(
                "io.k8s.api.apps.v1.DaemonSetStatus",
                "currentNumberScheduled",
            ),
        ),
        integer(
            "Ready",
            Field("io.k8s.api.apps.v1.DaemonSetStatus", "numberReady"),
        ),
        integer(
            "Up-to-date",
            Field(
                "io.k8s.api.apps.v1.DaemonSetStatus",
                "updatedNumberScheduled",
            ),
        ),
        integer(
            "Available",
            Field("io.k8s.api.apps.v1.DaemonSetStatus", "numberAvailable"),
        ),
        string(
            "Node Selector",
            Field("io.k8s.api.core.v1.PodSpec", "nodeSelector"),
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        wide(
            "Selector",
            Field("io.k8s.api.apps.v1.DaemonSetSpec", "selector"),
        ),
    ],
    print: print_daemon_set,
};

fn print_daemon_set(obj: &Value, now: Timestamp) -> Printed {
    let ds: DaemonSet = decode(obj);
    let spec = ds.spec.unwrap_or_default();
    let status = ds.status.unwrap_or_default();
    let (names, images) = template_containers(Some(&spec.template));
    let node_selector = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.node_selector.as_ref());
    Printed::cells(vec![
        name(obj),
        n(status.desired_number_scheduled),
        n(status.current_number_scheduled),
        n(status.number_ready),
        n(status.updated_number_scheduled.unwrap_or(0)),
        n(status.number_available.unwrap_or(0)),
        s(format_labels(node_selector)),
        age(obj, now),
        names,
        images,
        s(format_label_selector(Some(&spec.selector))),
    ])
}

static STATEFUL_SET: Printer = Printer {
    columns: &[
        NAME,
        string("Ready", Text("Number of the pod with ready state")),
        AGE,
        CONTAINERS,
        IMAGES,
    ],
    print: print_stateful_set,
};

fn print_stateful_set(obj: &Value, now: Timestamp) -> Printed {
    let sts: StatefulSet = decode(obj);
    let spec = sts.spec.unwrap_or_default();
    let status = sts.status.unwrap_or_default();
    let (names, images) = template_containers(Some(&spec.template));
    Printed::cells(vec![
        name(obj),
        s(format!(
            "{}/{}",
            status.ready_replicas.unwrap_or(0),
            spec.replicas.unwrap_or(1)
        )),
        age(obj, now),
        names,
        images,
    ])
}

static JOB: Printer = Printer {
    columns: &[
        NAME,
        string("Status", Text("Status of the job.")),
        string(
            "Completions",
            Field("io.k8s.api.batch.v1.JobStatus", "succeeded"),
        ),
        string("Duration", Text("Time required to complete the job.")),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", Field("io.k8s.api.batch.v1.JobSpec", "selector")),
    ],
    print: print_job,
};

fn print_job(obj: &Value, now: Timestamp) -> Printed {
    let job: Job = decode(obj);
    let spec = job.spec.unwrap_or_default();
    let status = job.status.unwrap_or_default();
    let succeeded = status.succeeded.unwrap_or(0);
    let completions = match spec.completions {
        Some(completions) => format!("{succeeded}/{completions}"),
        None => match spec.parallelism.unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (time(&status.start_time), time(&status.completion_time)) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now.duration_since(start)),
        (Some(start), Some(end)) => human_duration(end.duration_since(start)),
    };
    // The first condition of a type decides it.
    let holds = |type_: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .is_some_and(|c| c.status == "True")
    };
    let state = if holds("Complete") {
        "Complete"
    } else if holds("Failed") {
        "Failed"
    } else if job.metadata.deletion_timestamp.is_some() {
        "Terminating"
    } else if holds("Suspended") {
        "Suspended"
    } else if holds("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = template_containers(Some(&spec.template));
    Printed::cells(vec![
        name(obj),
        s(state),
        s(completions),
        s(duration),
        age(obj, now),
        names,
        images,
        s(format_label_selector(spec.selector.as_ref())),
    ])
}

// ---- configuration and accounts ----

static NAMESPACE: Printer = Printer {
    columns: &[
        NAME,
        string("Status", Text("The status of the namespace")),
        AGE,
    ],
    print: print_namespace,
};

fn print_namespace(obj: &Value, now: Timestamp) -> Printed {
    let ns: Namespace = decode(obj);
    let phase = ns
        .status
        .and_then(|s| s.phase)
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "Active".to_string());
    Printed::cells(vec![name(obj), s(phase), age(obj, now)])
}

static CONFIG_MAP: Printer = Printer {
    columns: &[
        NAME,
        string("Data", Field("io.k8s.api.core.v1.ConfigMap", "data")),
        AGE,
    ],
    print: print_config_map,
};

fn print_config_map(obj: &Value, now: Timestamp) -> Printed {
    let cm: ConfigMap = decode(obj);
    let count = cm.data.map_or(0, |d| d.len()) + cm.binary_data.map_or(0, |d| d.len());
    Printed::cells(vec![name(obj), n(count as i64), age(obj, now)])
}

static SECRET: Printer = Printer {
    columns: &[
        NAME,
        string("Type", Field("io.k8s.api.core.v1.Secret", "type")),
        string("Data", Field("io.k8s.api.core.v1.Secret", "data")),
        AGE,
    ],
    print: print_secret,
};

fn print_secret(obj: &Value, now: Timestamp) -> Printed {
    let secret: Secret = decode(obj);
    // stringData is merged into data on the way in, as Kubernetes converts it.
    let keys: BTreeSet<&String> = secret
        .data
        .iter()
        .flat_map(|d| d.keys())
        .chain(secret.string_data.iter().flat_map(|d| d.keys()))
        .collect();
    let type_ = non_empty(&secret.type_).unwrap_or("Opaque");
    Printed::cells(vec![
        name(obj),
        s(type_),
        n(keys.len() as i64),
        age(obj, now),
    ])
}

static SERVICE_ACCOUNT: Printer = Printer {
    columns: &[
        NAME,
        string(
            "Secrets",
            Field("io.k8s.api.core.v1.ServiceAccount", "secrets"),
        ),
        AGE,
    ],
    print: print_service_account,
};

fn print_service_account(obj: &Value, now: Timestamp) -> Printed {
    let sa: ServiceAccount = decode(obj);
    let secrets = sa.secrets.map_or(0, |s| s.len());
    Printed::cells(vec![name(obj), n(secrets as i64), age(obj, now)])
}

static LEASE: Printer = Printer {
    columns: &[
        NAME,
        string(
            "Holder",
            Field("io.k8s.api.coordination.v1.LeaseSpec", "holderIdentity"),
        ),
        AGE,
    ],
    print: print_lease,
};

fn print_lease(obj: &Value, now: Timestamp) -> Printed {
    let lease: Lease = decode(obj);
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    Printed::cells(vec![name(obj), s(holder), age(obj, now)])
}

// ---- autoscaling ----

const HPA_SPEC: &str = "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec";

static HPA: Printer = Printer {
    columns: &[
        NAME,
        string("Reference", Field(HPA_SPEC, "scaleTargetRef")),
        string("Targets", Field(HPA_SPEC, "metrics")),
        integer("MinPods", Field(HPA_SPEC, "minReplicas")),
        integer("MaxPods", Field(HPA_SPEC, "maxReplicas")),
        integer(
            "Replicas",
            Field(
                "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
                "currentReplicas",
            ),
        ),
        AGE,
    ],
    print: print_hpa,
};

/// kubectl's columns: `Deployment/web`, `cpu: 40%/50%` (`<unknown>` before a measurement).
fn print_hpa(obj: &Value, now: Timestamp) -> Printed {
    let hpa: k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler = decode(obj);
    let spec = hpa.spec.unwrap_or_default();
    let status = hpa.status.unwrap_or_default();
    let reference = format!(
        "{}/{}",
        spec.scale_target_ref.kind, spec.scale_target_ref.name
    );
    let mut targets = Vec::new();
    for (i, m) in spec.metrics.iter().flatten().enumerate() {
        let Some(r) = &m.resource else {
            targets.push("<unknown>".to_string());
            continue;
        };
        let current = status
            .current_metrics
            .as_ref()
            .and_then(|c| c.get(i))
            .and_then(|c| c.resource.as_ref())
            .and_then(|r| r.current.average_utilization)
            .map_or("<unknown>".to_string(), |u| format!("{u}%"));
        let target = r
            .target
            .average_utilization
            .map_or("<unknown>".to_string(), |u| format!("{u}%"));
        targets.push(format!("{}: {current}/{target}", r.name));
    }
    let targets = if targets.is_empty() {
        "<none>".to_string()
    } else {
        targets.join(", ")
    };
    Printed::cells(vec![
        name(obj),
        s(reference),
        s(targets),
        json!(spec.min_replicas.unwrap_or(1)),
        json!(spec.max_replicas),
        json!(status.current_replicas.unwrap_or(0)),
        age(obj, now),
    ])
}

// ---- certificates ----

const CSR_SPEC: &str = "io.k8s.api.certificates.v1.CertificateSigningRequestSpec";

static CERTIFICATE_SIGNING_REQUEST: Printer = Printer {
    columns: &[
        NAME,
        AGE,
        string("SignerName", Field(CSR_SPEC, "signerName")),
        string("Requestor", Text("Name of the requestor")),
        string("RequestedDuration", Field(CSR_SPEC, "expirationSeconds")),
        string("Condition", Text("Condition of the resource")),
    ],
    print: print_certificate_signing_request,
};

/// Kubernetes' `extractCSRStatus`: the decision, then Failed and Issued.
fn print_certificate_signing_request(obj: &Value, now: Timestamp) -> Printed {
    let spec = obj.get("spec");
    let field = |f: &str| {
        spec.and_then(|s| s.get(f))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let duration = spec
        .and_then(|s| s.get("expirationSeconds"))
        .and_then(Value::as_i64)
        .map(|secs| crate::table::human_duration(jiff::SignedDuration::from_secs(secs)))
        .unwrap_or_else(|| "<none>".to_string());
    let conditions = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |ty: &str| conditions.iter().any(|c| c["type"] == ty);
    let mut condition = if has("Denied") {
        "Denied"
    } else if has("Approved") {
        "Approved"
    } else {
        "Pending"
    }
    .to_string();
    if has("Failed") {
        condition.push_str(",Failed");
    }
    if obj
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty())
    {
        condition.push_str(",Issued");
    }
    Printed::cells(vec![
        name(obj),
        age(obj, now),
        s(field("signerName")),
        s(field("username")),
        s(duration),
        s(condition),
    ])
}

// ---- networking ----

static ENDPOINTS: Printer = Printer {
    columns: &[
        NAME,
        string(
            "Endpoints",
            Field("io.k8s.api.core.v1.Endpoints", "subsets"),
        ),
        AGE,
    ],
    print: print_endpoints,
};

/// `net.JoinHostPort`: IPv6 addresses in brackets.
fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `formatEndpoints`: up to three `ip:port`, then `+ N more...`.
fn format_endpoints(endpoints: &Endpoints) -> String {
    const MAX: usize = 3;
    let subsets = endpoints.subsets.as_deref().unwrap_or_default();
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut list = Vec::new();
    let mut more = false;
    let mut count = 0;
    for subset in subsets {
        let addresses = subset.addresses.as_deref().unwrap_or_default();
        let ports = subset.ports.as_deref().unwrap_or_default();
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(address.ip.clone());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(&address.ip, port.port));
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

fn print_endpoints(obj: &Value, now: Timestamp) -> Printed {
    let endpoints: Endpoints = decode(obj);
    Printed::cells(vec![
        name(obj),
        s(format_endpoints(&endpoints)),
        age(obj, now),
    ])
}

static ENDPOINT_SLICE: Printer = Printer {
    columns: &[
        NAME,
        string(
            "AddressType",
            Field("io.k8s.api.discovery.v1.EndpointSlice", "addressType"),
        ),
        string(
            "Ports",
            Field("io.k8s.api.discovery.v1.EndpointSlice", "ports"),
        ),
        string(
            "Endpoints",
            Field("io.k8s.api.discovery.v1.EndpointSlice", "endpoints"),
        ),
        AGE,
    ],
    print: print_endpoint_slice,
};

fn print_endpoint_slice(obj: &Value, now: Timestamp) -> Printed {
    const MAX: usize = 3;
    let slice: EndpointSlice = decode(obj);
    let ports = slice.ports.as_deref().unwrap_or_default();
    let port_list: Vec<String> = ports
        .iter()
        .take(MAX)
        .map(|p| match (p.port, &p.name) {
            (Some(port), _) => port.to_string(),
            (None, Some(name)) => name.clone(),
            (None, None) => "*".to_string(),
        })
        .collect();
    let addresses: Vec<&String> = slice.endpoints.iter().flat_map(|e| &e.addresses).collect();
    let address_list: Vec<String> = addresses.iter().take(MAX).map(|a| (*a).clone()).collect();
    Printed::cells(vec![
        name(obj),
        s(slice.address_type),
        s(list_with_more(
            &port_list,
            ports.len() > MAX,
            ports.len(),
            MAX,
        )),
        s(list_with_more(
            &address_list,
            addresses.len() > MAX,
            addresses.len(),
            MAX,
        )),
        age(obj, now),
    ])
}

// ---- events ----

static EVENT: Printer = Printer {
    columns: &[
        string(
            "Last Seen",
            Field("io.k8s.api.core.v1.Event", "lastTimestamp"),
        ),
        string("Type", Field("io.k8s.api.core.v1.Event", "type")),
        string("Reason", Field("io.k8s.api.core.v1.Event", "reason")),
        string(
            "Object",
            Field("io.k8s.api.core.v1.Event", "involvedObject"),
        ),
        wide(
            "Subobject",
            Field("io.k8s.api.core.v1.ObjectReference", "fieldPath"),
        ),
        wide("Source", Field("io.k8s.api.core.v1.Event", "source")),
        string("Message", Field("io.k8s.api.core.v1.Event", "message")),
        wide(
            "First Seen",
            Field("io.k8s.api.core.v1.Event", "firstTimestamp"),
        ),
        wide("Count", Field("io.k8s.api.core.v1.Event", "count")),
        Column {
            name: "Name",
            type_: "string",
            format: "name",
            description: Field(META, "name"),
            priority: 1,
        },
    ],
    print: print_event,
};

fn first_non_empty<'a>(values: &[&'a Option<String>]) -> &'a str {
    values.iter().find_map(|v| non_empty(v)).unwrap_or_default()
}

fn print_event(obj: &Value, now: Timestamp) -> Printed {
    let event: Event = decode(obj);
    let first_seen = match time(&event.first_timestamp) {
        Some(t) => since(Some(t), now),
        None => since(micro_time(&event.event_time), now),
    };
    let mut last_seen = match time(&event.last_timestamp) {
        Some(t) => since(Some(t), now),
        None => first_seen.clone(),
    };
    let mut count = event.count.unwrap_or(0);
    if let Some(series) = &event.series {
        last_seen = since(micro_time(&series.last_observed_time), now);
        count = series.count.unwrap_or(0);
    } else if count == 0 {
        // Singleton events of the events.k8s.io API have no count.
        count = 1;
    }
    let involved = &event.involved_object;
    let kind = involved.kind.as_deref().unwrap_or_default().to_lowercase();
    let target = match non_empty(&involved.name) {
        Some(name) => format!("{kind}/{name}"),
        None => kind,
    };
    let source = event.source.clone().unwrap_or_default();
    let component = first_non_empty(&[&source.component, &event.reporting_component]);
    let instance = first_non_empty(&[&source.host, &event.reporting_instance]);
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    Printed::cells(vec![
        s(last_seen),
        s(event.type_.unwrap_or_default()),
        s(event.reason.unwrap_or_default()),
        s(target),
        s(involved.field_path.clone().unwrap_or_default()),
        s(source),
        s(event.message.unwrap_or_default().trim()),
        s(first_seen),
        n(count),
        name(obj),
    ])
}

// ---- RBAC ----

static ROLE_BINDING: Printer = Printer {
    columns: &[
        NAME,
        string("Role", Field("io.k8s.api.rbac.v1.RoleBinding", "roleRef")),
        AGE,
        wide("Users", Text("Users in the roleBinding")),
        wide("Groups", Text("Groups in the roleBinding")),
        wide(
            "ServiceAccounts",
            Text("ServiceAccounts in the roleBinding"),
        ),
    ],
    print: print_role_binding,
};

static CLUSTER_ROLE_BINDING: Printer = Printer {
    columns: &[
        NAME,
        string(
            "Role",
            Field("io.k8s.api.rbac.v1.ClusterRoleBinding", "roleRef"),
        ),
        AGE,
        wide("Users", Text("Users in the clusterRoleBinding")),
        wide("Groups", Text("Groups in the clusterRoleBinding")),
        wide(
            "ServiceAccounts",
            Text("ServiceAccounts in the clusterRoleBinding"),
        ),
    ],
    print: print_cluster_role_binding,
};

/// `rbac.SubjectsStrings`: users, groups and `namespace/name` service accounts, each list
/// joined with `, `.
fn binding_cells(
    obj: &Value,
    now: Timestamp,
    role_kind: &str,
    role_name: &str,
    subjects: &[Subject],
) -> Printed {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut service_accounts = Vec::new();
    for subject in subjects {
        match subject.kind.as_str() {
            "ServiceAccount" => service_accounts.push(format!(
                "{}/{}",
                subject.namespace.as_deref().unwrap_or_default(),
                subject.name
            )),
            "User" => users.push(subject.name.clone()),
            "Group" => groups.push(subject.name.clone()),
            _ => {}
        }
    }
    Printed::cells(vec![
        name(obj),
        s(format!("{role_kind}/{role_name}")),
        age(obj, now),
        s(users.join(", ")),
        s(groups.join(", ")),
        s(service_accounts.join(", ")),
    ])
}

fn print_role_binding(obj: &Value, now: Timestamp) -> Printed {
    let binding: RoleBinding = decode(obj);
    let subjects = binding.subjects.unwrap_or_default();
    let role = &binding.role_ref;
    binding_cells(obj, now, &role.kind, &role.name, &subjects)
}

fn print_cluster_role_binding(obj: &Value, now: Timestamp) -> Printed {
    let binding: ClusterRoleBinding = decode(obj);
    let subjects = binding.subjects.unwrap_or_default();
    let role = &binding.role_ref;
    binding_cells(obj, now, &role.kind, &role.name, &subjects)
}

// ---- kinds without a printer ----

/// `rest.DefaultTableConvertor`: Name and the creation time in RFC 3339 (UTC, whole seconds).
static DEFAULT_CONVERTOR: Printer = Printer {
    columns: &[
        NAME,
        Column {
            name: "Created At",
            type_: "date",
            format: "",
            description: Field(META, "creationTimestamp"),
            priority: 0,
        },
    ],
    print: print_created_at,
};

fn print_created_at(obj: &Value, _now: Timestamp) -> Printed {
    // Go formats the zero time for an object without a creation time.
    let created = match created(obj) {
        Some(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "0001-01-01T00:00:00Z".to_string(),
    };
    Printed::cells(vec![name(obj), s(created)])
}

static NAME_AGE: Printer = Printer {
    columns: &[NAME, AGE],
    print: print_name_age,
};

fn print_name_age(obj: &Value, now: Timestamp) -> Printed {
    Printed::cells(vec![name(obj), age(obj, now)])
}

#[cfg(test)]
mod tests {
    use berth_api::{registry, Scope};
    use serde_json::json;

    use super::*;

    const NOW: &str = "2024-05-01T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    /// `metadata` of an object created five minutes before [`NOW`].
    fn meta(name: &str) -> Value {
        json!({"name": name, "namespace": "default", "creationTimestamp": "2024-05-01T11:55:00Z"})
    }

    fn info(kind: &'static str) -> ResourceInfo {
        registry::by_kind(kind).copied().unwrap_or(ResourceInfo {
            group: "rbac.authorization.k8s.io",
            version: "v1",
            kind,
            plural: "",
            singular: "",
            short_names: &[],
            scope: Scope::Namespaced,
            subresources: &[],
            categories: &[],
            verbs: &[],
        })
    }

    fn print(kind: &'static str, obj: Value) -> Value {
        Value::Array((for_kind(&info(kind)).print)(&obj, now()).cells)
    }

    /// Cells `from..to` of a row.
    fn part(cells: &Value, from: usize, to: usize) -> Value {
        Value::Array(cells.as_array().unwrap()[from..to].to_vec())
    }

    fn column_names(kind: &'static str) -> Vec<(&'static str, u8)> {
        for_kind(&info(kind))
            .columns
            .iter()
            .map(|c| (c.name, c.priority))
            .collect()
    }

    fn running(name: &str, restarts: i32) -> Value {
        json!({"name": name, "ready": true, "restartCount": restarts,
               "state": {"running": {"startedAt": "2024-05-01T11:56:00Z"}}})
    }

    fn waiting(name: &str, reason: &str, restarts: i32) -> Value {
        json!({"name": name, "ready": false, "restartCount": restarts,
               "state": {"waiting": {"reason": reason}}})
    }

    fn terminated(name: &str, exit_code: i32, reason: Option<&str>) -> Value {
        json!({"name": name, "ready": false, "restartCount": 0,
               "state": {"terminated": {"exitCode": exit_code, "reason": reason}}})
    }

    fn pod(containers: &[&str], statuses: Value) -> Value {
        let containers: Vec<Value> = containers
            .iter()
            .map(|c| json!({"name": c, "image": "busybox"}))
            .collect();
        json!({
            "metadata": meta("web"),
            "spec": {"containers": containers, "nodeName": "node-1"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}],
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": statuses},
        })
    }

    #[test]
    fn every_printer_fills_every_column() {
        for kind in [
            "Pod",
            "Node",
            "Service",
            "Endpoints",
            "Namespace",
            "ConfigMap",
            "Secret",
            "Event",
            "ServiceAccount",
            "Deployment",
            "ReplicaSet",
            "DaemonSet",
            "StatefulSet",
            "Job",
            "EndpointSlice",
            "Lease",
            "Role",
            "ClusterRole",
            "RoleBinding",
            "ClusterRoleBinding",
            "CertificateSigningRequest",
            "Widget",
        ] {
            let printer = for_kind(&info(kind));
            for obj in [
                json!({}),
                json!({"metadata": meta("x")}),
                json!("not an object"),
            ] {
                let cells = (printer.print)(&obj, now()).cells;
                assert_eq!(cells.len(), printer.columns.len(), "{kind}");
            }
        }
    }

    #[test]
    fn pod_columns_are_kubernetes() {
        assert_eq!(
            column_names("Pod"),
            [
                ("Name", 0),
                ("Ready", 0),
                ("Status", 0),
                ("Restarts", 0),
                ("Age", 0),
                ("IP", 1),
                ("Node", 1),
                ("Nominated Node", 1),
                ("Readiness Gates", 1),
            ]
        );
    }

    #[test]
    fn running_pod() {
        let cells = print(
            "Pod",
            pod(&["a", "b"], json!([running("a", 0), running("b", 0)])),
        );
        assert_eq!(
            cells,
            json!(["web", "2/2", "Running", "0", "5m", "10.0.0.5", "node-1", "<none>", "<none>"])
        );
    }

    #[test]
    fn crash_looping_pod_shows_restarts_with_the_last_one() {
        let mut status = waiting("a", "CrashLoopBackOff", 4);
        status["lastState"] =
            json!({"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:57:00Z"}});
        let cells = print("Pod", pod(&["a"], json!([status])));
        assert_eq!(
            part(&cells, 1, 4),
            json!(["0/1", "CrashLoopBackOff", "4 (3m ago)"])
        );
    }

    #[test]
    fn pending_pod_without_status() {
        let obj = json!({"metadata": meta("p"), "spec": {"containers": [{"name": "a"}]}});
        let cells = print("Pod", obj);
        assert_eq!(
            cells,
            json!(["p", "0/1", "Pending", "0", "5m", "<none>", "<none>", "<none>", "<none>"])
        );
    }

    #[test]
    fn init_containers_in_progress() {
        let mut obj = pod(&["app"], json!([waiting("app", "PodInitializing", 0)]));
        obj["spec"]["initContainers"] = json!([{"name": "one"}, {"name": "two"}]);
        obj["status"]["phase"] = json!("Pending");
        let with_init = |statuses: Value| {
            let mut obj = obj.clone();
            obj["status"]["initContainerStatuses"] = statuses;
            print("Pod", obj)[2].clone()
        };
        let done = terminated("one", 0, Some("Completed"));
        assert_eq!(with_init(json!([done, running("two", 0)])), "Init:1/2");
        assert_eq!(
            with_init(json!([waiting("one", "PodInitializing", 0)])),
            "Init:0/2"
        );
        assert_eq!(
            with_init(json!([waiting("one", "ErrImagePull", 0)])),
            "Init:ErrImagePull"
        );
        assert_eq!(
            with_init(json!([terminated("one", 1, None)])),
            "Init:ExitCode:1"
        );
        assert_eq!(
            with_init(json!([terminated("one", 2, Some("Error"))])),
            "Init:Error"
        );
        let mut killed = terminated("one", 137, None);
        killed["state"]["terminated"]["signal"] = json!(9);
        assert_eq!(with_init(json!([killed])), "Init:Signal:9");
        // Once every init container is done, the main containers decide.
        let done_two = terminated("two", 0, Some("Completed"));
        assert_eq!(with_init(json!([done, done_two])), "PodInitializing");
    }

    #[test]
    fn sidecars_count_as_containers() {
        let mut obj = pod(&["app"], json!([running("app", 1)]));
        obj["spec"]["initContainers"] = json!([{"name": "proxy", "restartPolicy": "Always"}]);
        let mut sidecar = running("proxy", 2);
        sidecar["started"] = json!(true);
        obj["status"]["initContainerStatuses"] = json!([sidecar]);
        obj["status"]["conditions"] = json!([{"type": "Initialized", "status": "True"},
                                              {"type": "Ready", "status": "True"}]);
        let cells = print("Pod", obj);
        assert_eq!(part(&cells, 1, 4), json!(["2/2", "Running", "3"]));
    }

    #[test]
    fn completed_and_failed_pods() {
        let mut obj = pod(&["a"], json!([terminated("a", 0, Some("Completed"))]));
        obj["status"]["phase"] = json!("Succeeded");
        let printed = (POD.print)(&obj, now());
        assert_eq!(
            part(&Value::Array(printed.cells.clone()), 1, 3),
            json!(["0/1", "Completed"])
        );
        assert_eq!(printed.conditions.unwrap()[0]["reason"], "Succeeded");

        let mut failed = pod(&["a"], json!([terminated("a", 3, None)]));
        failed["status"]["phase"] = json!("Failed");
        let printed = (POD.print)(&failed, now());
        assert_eq!(printed.cells[2], "ExitCode:3");
        assert_eq!(printed.conditions.unwrap()[0]["message"], "The pod failed.");
    }

    #[test]
    fn completed_container_beside_a_running_one() {
        let statuses = json!([terminated("a", 0, Some("Completed")), running("b", 0)]);
        // Statuses are walked last to first, so "a" sets the reason after "b" ran.
        let obj = pod(&["a", "b"], statuses.clone());
        assert_eq!(print("Pod", obj)[2], "Running");
        let mut not_ready = pod(&["a", "b"], statuses);
        not_ready["status"]["conditions"] = json!([]);
        assert_eq!(print("Pod", not_ready)[2], "NotReady");
    }

    #[test]
    fn deleted_pods() {
        let mut obj = pod(&["a"], json!([running("a", 0)]));
        obj["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
        assert_eq!(print("Pod", obj.clone())[2], "Terminating");
        obj["status"]["reason"] = json!("NodeLost");
        assert_eq!(print("Pod", obj.clone())[2], "Unknown");
        obj["status"]["reason"] = Value::Null;
        obj["status"]["phase"] = json!("Succeeded");
        obj["status"]["containerStatuses"] = json!([terminated("a", 0, Some("Completed"))]);
        assert_eq!(print("Pod", obj)[2], "Completed");
    }

    #[test]
    fn scheduling_gates_and_readiness_gates() {
        let mut obj = json!({
            "metadata": meta("gated"),
            "spec": {"containers": [{"name": "a"}],
                     "readinessGates": [{"conditionType": "lb/ready"}, {"conditionType": "x"}]},
            "status": {"phase": "Pending", "nominatedNodeName": "node-2",
                       "conditions": [{"type": "PodScheduled", "status": "False",
                                       "reason": "SchedulingGated"},
                                      {"type": "lb/ready", "status": "True"}]},
        });
        let cells = print("Pod", obj.clone());
        assert_eq!(cells[2], "SchedulingGated");
        assert_eq!(cells[7], "node-2");
        assert_eq!(cells[8], "1/2");
        obj["status"]["conditions"][1]["status"] = json!("False");
        assert_eq!(print("Pod", obj)[8], "0/2");
    }

    #[test]
    fn nodes() {
        let node = json!({
            "metadata": {"name": "n1", "creationTimestamp": "2024-04-29T09:00:00Z",
                         "labels": {"node-role.kubernetes.io/control-plane": "",
                                    "kubernetes.io/role": "worker",
                                    "node-role.kubernetes.io/": "x"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"},
                               {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "n1"},
                              {"type": "InternalIP", "address": "192.168.1.10"}],
                "nodeInfo": {"kubeletVersion": "v1.32.4", "osImage": "Debian GNU/Linux 12",
                             "kernelVersion": "6.1.0", "containerRuntimeVersion": "berth://0.1.0"},
            },
        });
        assert_eq!(
            print("Node", node),
            json!([
                "n1",
                "Ready,SchedulingDisabled",
                "control-plane,worker",
                "2d3h",
                "v1.32.4",
                "192.168.1.10",
                "<none>",
                "Debian GNU/Linux 12",
                "6.1.0",
                "berth://0.1.0"
            ])
        );
        let bare = json!({"metadata": meta("n2"),
                          "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(
            print("Node", bare),
            json!([
                "n2",
                "NotReady",
                "<none>",
                "5m",
                "",
                "<none>",
                "<none>",
                "<unknown>",
                "<unknown>",
                "<unknown>"
            ])
        );
        assert_eq!(print("Node", json!({"metadata": meta("n3")}))[1], "Unknown");
    }

    fn service(spec: Value) -> Value {
        json!({"metadata": meta("web"), "spec": spec})
    }

    #[test]
    fn services() {
        let cluster_ip = service(json!({
            "type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}, {"port": 443}],
            "selector": {"tier": "fe", "app": "web"},
        }));
        assert_eq!(
            print("Service", cluster_ip),
            json!([
                "web",
                "ClusterIP",
                "10.96.0.10",
                "<none>",
                "80/TCP,53/UDP,443/TCP",
                "5m",
                "app=web,tier=fe"
            ])
        );
        let node_port = service(json!({"type": "NodePort", "clusterIPs": ["10.96.0.11"],
                                       "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}],
                                       "externalIPs": ["1.2.3.4"]}));
        let cells = print("Service", node_port);
        assert_eq!(part(&cells, 3, 5), json!(["1.2.3.4", "80:30080/TCP"]));
        let headless = service(json!({"clusterIP": "None", "clusterIPs": ["None"]}));
        assert_eq!(
            part(&print("Service", headless), 1, 5),
            json!(["ClusterIP", "None", "<none>", "<none>"])
        );
        let pending = service(json!({"type": "LoadBalancer"}));
        assert_eq!(print("Service", pending)[3], "<pending>");
        let mut lb = service(json!({"type": "LoadBalancer", "externalIPs": ["9.9.9.9"]}));
        lb["status"] = json!({"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}, {"hostname": "lb.example"},
                                                           {"ip": "1.1.1.1"}]}});
        assert_eq!(
            print("Service", lb)[3],
            "1.1.1.1,5.6.7.8,lb.example,9.9.9.9"
        );
        let external = service(json!({"type": "ExternalName", "externalName": "db.example.com"}));
        assert_eq!(print("Service", external)[3], "db.example.com");
        let odd = service(json!({"type": "Weird"}));
        assert_eq!(print("Service", odd)[3], "<unknown>");
    }

    fn workload(spec: Value, status: Value) -> Value {
        json!({"metadata": meta("web"), "spec": spec, "status": status})
    }

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "web"}},
               "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"},
                                       {"name": "log", "image": "busybox"}]}})
    }

    #[test]
    fn deployments() {
        assert_eq!(
            column_names("Deployment"),
            [
                ("Name", 0),
                ("Ready", 0),
                ("Up-to-date", 0),
                ("Available", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1)
            ]
        );
        let d = workload(
            json!({"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template()}),
            json!({"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}),
        );
        assert_eq!(
            print("Deployment", d),
            json!([
                "web",
                "2/3",
                3,
                2,
                "5m",
                "nginx,log",
                "nginx:1.27,busybox",
                "app=web"
            ])
        );
        let defaulted = workload(json!({"selector": {}, "template": template()}), json!({}));
        let cells = print("Deployment", defaulted);
        assert_eq!(part(&cells, 1, 4), json!(["0/1", 0, 0]));
        assert_eq!(cells[7], "");
        let bad = workload(
            json!({"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}),
            json!({}),
        );
        assert_eq!(print("Deployment", bad)[7], "<invalid>");
    }

    #[test]
    fn replica_sets_daemon_sets_and_stateful_sets() {
        let selector = json!({"matchLabels": {"app": "web"},
                              "matchExpressions": [{"key": "tier", "operator": "In",
                                                    "values": ["fe", "be"]}]});
        let rs = workload(
            json!({"replicas": 2, "selector": selector, "template": template()}),
            json!({"replicas": 2, "readyReplicas": 1}),
        );
        assert_eq!(
            print("ReplicaSet", rs),
            json!([
                "web",
                2,
                2,
                1,
                "5m",
                "nginx,log",
                "nginx:1.27,busybox",
                "app=web,tier in (be,fe)"
            ])
        );
        let mut tpl = template();
        tpl["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
        let ds = workload(
            json!({"selector": {}, "template": tpl}),
            json!({"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                   "updatedNumberScheduled": 3, "numberAvailable": 2}),
        );
        assert_eq!(
            print("DaemonSet", ds),
            json!([
                "web",
                3,
                3,
                2,
                3,
                2,
                "kubernetes.io/os=linux",
                "5m",
                "nginx,log",
                "nginx:1.27,busybox",
                "<none>"
            ])
        );
        let sts = workload(
            json!({"replicas": 3, "template": template()}),
            json!({"readyReplicas": 3}),
        );
        assert_eq!(
            print("StatefulSet", sts),
            json!(["web", "3/3", "5m", "nginx,log", "nginx:1.27,busybox"])
        );
    }

    #[test]
    fn jobs() {
        let job = |spec: Value, status: Value| print("Job", workload(spec, status));
        let complete = job(
            json!({"completions": 1, "selector": {"matchLabels": {"job": "pi"}}, "template": template()}),
            json!({"succeeded": 1, "startTime": "2024-05-01T11:55:00Z",
                   "completionTime": "2024-05-01T11:55:42Z",
                   "conditions": [{"type": "Complete", "status": "True"}]}),
        );
        assert_eq!(
            complete,
            json!([
                "web",
                "Complete",
                "1/1",
                "42s",
                "5m",
                "nginx,log",
                "nginx:1.27,busybox",
                "job=pi"
            ])
        );
        let running = job(
            json!({"parallelism": 3}),
            json!({"startTime": "2024-05-01T11:57:00Z"}),
        );
        assert_eq!(part(&running, 1, 4), json!(["Running", "0/1 of 3", "3m"]));
        let not_started = job(json!({}), json!({}));
        assert_eq!(part(&not_started, 1, 4), json!(["Running", "0/1", ""]));
        let failed = job(
            json!({}),
            json!({"conditions": [
            {"type": "FailureTarget", "status": "True"}, {"type": "Failed", "status": "True"}]}),
        );
        assert_eq!(failed[1], "Failed");
        let suspended = job(
            json!({}),
            json!({"conditions": [
            {"type": "Suspended", "status": "True"}, {"type": "Complete", "status": "False"}]}),
        );
        assert_eq!(suspended[1], "Suspended");
        let mut deleting = workload(json!({}), json!({}));
        deleting["metadata"]["deletionTimestamp"] = json!(NOW);
        assert_eq!(print("Job", deleting)[1], "Terminating");
    }

    #[test]
    fn namespaces_config_maps_secrets_and_service_accounts() {
        let ns = json!({"metadata": meta("dev"), "status": {"phase": "Terminating"}});
        assert_eq!(print("Namespace", ns), json!(["dev", "Terminating", "5m"]));
        assert_eq!(
            print("Namespace", json!({"metadata": meta("new")}))[1],
            "Active"
        );
        let cm = json!({"metadata": meta("cfg"), "data": {"a": "1", "b": "2"},
                        "binaryData": {"c": "AA=="}});
        assert_eq!(print("ConfigMap", cm), json!(["cfg", 3, "5m"]));
        let secret = json!({"metadata": meta("tls"), "type": "kubernetes.io/tls",
                            "data": {"tls.crt": "AA==", "tls.key": "AA=="},
                            "stringData": {"tls.key": "x", "ca.crt": "y"}});
        assert_eq!(
            print("Secret", secret),
            json!(["tls", "kubernetes.io/tls", 3, "5m"])
        );
        assert_eq!(
            part(&print("Secret", json!({"metadata": meta("s")})), 1, 3),
            json!(["Opaque", 0])
        );
        let sa = json!({"metadata": meta("default"), "secrets": [{"name": "t"}]});
        assert_eq!(print("ServiceAccount", sa), json!(["default", 1, "5m"]));
        let lease = json!({"metadata": meta("kube-scheduler"),
                           "spec": {"holderIdentity": "node-1_abc"}});
        assert_eq!(
            print("Lease", lease),
            json!(["kube-scheduler", "node-1_abc", "5m"])
        );
        assert_eq!(print("Lease", json!({"metadata": meta("l")}))[1], "");
    }

    #[test]
    fn endpoints() {
        let ep = |subsets: Value| {
            print(
                "Endpoints",
                json!({"metadata": meta("web"), "subsets": subsets}),
            )[1]
            .clone()
        };
        assert_eq!(ep(json!([])), "<none>");
        assert_eq!(
            ep(
                json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::2"}],
                       "ports": [{"port": 8080}]}])
            ),
            "10.0.0.1:8080,[fd00::2]:8080"
        );
        assert_eq!(
            ep(
                json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                       "ports": [{"port": 80}, {"port": 443}]}])
            ),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."
        );
        assert_eq!(ep(json!([{"addresses": [{"ip": "10.0.0.9"}]}])), "10.0.0.9");
        assert_eq!(
            ep(json!([{"notReadyAddresses": [{"ip": "10.0.0.9"}], "ports": [{"port": 80}]}])),
            ""
        );
    }

    #[test]
    fn endpoint_slices() {
        let slice = json!({
            "metadata": meta("web-abc"), "addressType": "IPv4",
            "ports": [{"port": 80}, {"name": "metrics"}, {}, {"port": 9000}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]}],
        });
        assert_eq!(
            print("EndpointSlice", slice),
            json!([
                "web-abc",
                "IPv4",
                "80,metrics,* + 1 more...",
                "10.0.0.1,10.0.0.2,10.0.0.3",
                "5m"
            ])
        );
        let empty = json!({"metadata": meta("e"), "addressType": "IPv6"});
        assert_eq!(
            part(&print("EndpointSlice", empty), 2, 4),
            json!(["<unset>", "<unset>"])
        );
    }

    #[test]
    fn events() {
        assert_eq!(
            column_names("Event"),
            [
                ("Last Seen", 0),
                ("Type", 0),
                ("Reason", 0),
                ("Object", 0),
                ("Subobject", 1),
                ("Source", 1),
                ("Message", 0),
                ("First Seen", 1),
                ("Count", 1),
                ("Name", 1)
            ]
        );
        let event = json!({
            "metadata": meta("web.17a"),
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{nginx}"},
            "reason": "Pulled", "message": "  Container image pulled \n", "type": "Normal",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2024-05-01T11:50:00Z", "lastTimestamp": "2024-05-01T11:59:30Z",
            "count": 4,
        });
        assert_eq!(
            print("Event", event),
            json!([
                "30s",
                "Normal",
                "Pulled",
                "pod/web",
                "spec.containers{nginx}",
                "kubelet, node-1",
                "Container image pulled",
                "10m",
                4,
                "web.17a"
            ])
        );
        let new_api = json!({
            "metadata": meta("e2"), "involvedObject": {"kind": "Node"},
            "eventTime": "2024-05-01T11:58:00.123456Z", "reportingComponent": "scheduler",
        });
        let cells = print("Event", new_api);
        assert_eq!(cells[0], "119s", "1m59.88s truncates to whole seconds");
        assert_eq!(cells[3], "node");
        assert_eq!(cells[5], "scheduler");
        assert_eq!(cells[8], 1);
        let series = json!({
            "metadata": meta("e3"), "involvedObject": {"kind": "Pod", "name": "p"},
            "eventTime": "2024-05-01T11:40:00Z",
            "series": {"count": 7, "lastObservedTime": "2024-05-01T11:59:50Z"},
        });
        let cells = print("Event", series);
        assert_eq!(
            (cells[0].clone(), cells[7].clone(), cells[8].clone()),
            (json!("10s"), json!("20m"), json!(7))
        );
        assert_eq!(print("Event", json!({}))[0], "<unknown>");
    }

    #[test]
    fn rbac() {
        let binding = json!({
            "metadata": meta("read-pods"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "User", "name": "jane"}, {"kind": "User", "name": "joe"},
                         {"kind": "Group", "name": "devs"},
                         {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}],
        });
        assert_eq!(
            print("RoleBinding", binding.clone()),
            json!([
                "read-pods",
                "Role/reader",
                "5m",
                "jane, joe",
                "devs",
                "build/ci"
            ])
        );
        assert_eq!(print("ClusterRoleBinding", binding)[1], "Role/reader");
        assert_eq!(
            column_names("ClusterRole"),
            [("Name", 0), ("Created At", 0)]
        );
        let role =
            json!({"metadata": {"name": "reader", "creationTimestamp": "2024-05-01T11:55:00.5Z"}});
        assert_eq!(
            print("Role", role),
            json!(["reader", "2024-05-01T11:55:00Z"])
        );
        assert_eq!(print("ClusterRole", json!({}))[1], "0001-01-01T00:00:00Z");
        assert_eq!(for_kind(&info("Role")).columns[1].type_, "date");
    }

    #[test]
    fn unknown_kinds_print_name_and_age() {
        assert_eq!(column_names("Widget"), [("Name", 0), ("Age", 0)]);
        assert_eq!(
            print("Widget", json!({"metadata": meta("w")})),
            json!(["w", "5m"])
        );
        assert_eq!(
            print("Widget", json!({"metadata": {"name": "w"}}))[1],
            "<unknown>"
        );
        let future =
            json!({"metadata": {"name": "w", "creationTimestamp": "2024-05-01T12:00:05Z"}});
        assert_eq!(print("Widget", future)[1], "<invalid>");
    }

    #[test]
    fn column_descriptions_come_from_the_api_docs() {
        let pod = for_kind(&info("Pod"));
        assert!(pod.columns[0]
            .description
            .text()
            .starts_with("Name must be unique"));
        assert!(pod.columns[5].description.text().contains("IP address"));
        assert_eq!(
            pod.columns[1].description.text(),
            "The aggregate readiness state of this pod for accepting traffic."
        );
        // Every field a column cites exists in the schemas.
        for kind in [
            "Pod",
            "Node",
            "Service",
            "Endpoints",
            "Namespace",
            "ConfigMap",
            "Secret",
            "Event",
            "ServiceAccount",
            "Deployment",
            "ReplicaSet",
            "DaemonSet",
            "StatefulSet",
            "Job",
            "EndpointSlice",
            "Lease",
            "Role",
            "RoleBinding",
            "ClusterRoleBinding",
            "CertificateSigningRequest",
        ] {
            for column in for_kind(&info(kind)).columns {
                assert!(
                    !column.description.text().is_empty(),
                    "{kind} {}",
                    column.name
                );
            }
        }
    }
}
