//! What the scheduler reads out of Pods and Nodes, computed once per object: requests as
//! integers (milli-CPU, bytes), node selectors and affinity terms, tolerations, host ports,
//! topology spread constraints. Everything after this module works on these, never on the
//! Kubernetes objects.

use std::collections::BTreeMap;

use berth_api::labels::{Operator, Requirement, Selector};
use berth_api::Quantity;
use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelectorTerm, Pod, PodAffinityTerm, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The hostname label: the topology key of "one domain per node".
pub const HOSTNAME: &str = "kubernetes.io/hostname";
/// The taint tolerated by pods that may land on cordoned nodes.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// The taint of a node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is Unknown (or was never posted).
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The scheduler Berth's pods name when they name none.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// What a pod without a cpu request counts as when nodes are scored (kube-scheduler's
/// `DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU: i64 = 100;
/// What a pod without a memory request counts as when nodes are scored (200 MiB).
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// Amounts of the resources the scheduler fits: cpu in millis, memory and ephemeral storage in
/// bytes, and extended resources (`nvidia.com/gpu`...) by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral: i64,
    pub scalar: Vec<(String, i64)>,
}

impl Resources {
    fn from_list(
        list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    ) -> Self {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            let Ok(q) = Quantity::parse(&q.0) else {
                continue;
            };
            match name.as_str() {
                "cpu" => r.milli_cpu = clamp(q.milli_value()),
                "memory" => r.memory = clamp(q.value()),
                "ephemeral-storage" => r.ephemeral = clamp(q.value()),
                "pods" => {}
                other if is_scalar(other) => r.scalar.push((other.to_string(), clamp(q.value()))),
                _ => {}
            }
        }
        r
    }

    fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral += o.ephemeral;
        for (name, v) in &o.scalar {
            match self.scalar.iter_mut().find(|(n, _)| n == name) {
                Some((_, x)) => *x += v,
                None => self.scalar.push((name.clone(), *v)),
            }
        }
    }

    fn max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral = self.ephemeral.max(o.ephemeral);
        for (name, v) in &o.scalar {
            match self.scalar.iter_mut().find(|(n, _)| n == name) {
                Some((_, x)) => *x = (*x).max(*v),
                None => self.scalar.push((name.clone(), *v)),
            }
        }
    }

    /// The amount of extended resource `name`.
    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }
}

fn clamp(v: i128) -> i64 {
    v.clamp(0, i64::MAX as i128) as i64
}

/// Extended resources and hugepages are fitted by name; everything else the scheduler does not
/// know is ignored, as kube-scheduler does.
fn is_scalar(name: &str) -> bool {
    name.starts_with("hugepages-") || (name.contains('/') && !name.starts_with("kubernetes.io/"))
}

/// A node-selector requirement (`matchExpressions` or `matchFields`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeExpr {
    pub key: String,
    pub op: NodeOp,
    pub values: Vec<String>,
}

/// The operators of node-selector requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
    /// An operator Kubernetes does not know: the requirement matches nothing.
    Invalid,
}

/// One `nodeSelectorTerm`: all of its expressions and fields must hold. A term with neither
/// matches no node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeTerm {
    pub exprs: Vec<NodeExpr>,
    /// `matchFields`; only `metadata.name` exists.
    pub fields: Vec<NodeExpr>,
}

impl NodeTerm {
    fn from_k8s(t: &NodeSelectorTerm) -> Self {
        let conv = |e: &k8s_openapi::api::core::v1::NodeSelectorRequirement| NodeExpr {
            key: e.key.clone(),
            op: match e.operator.as_str() {
                "In" => NodeOp::In,
                "NotIn" => NodeOp::NotIn,
                "Exists" => NodeOp::Exists,
                "DoesNotExist" => NodeOp::DoesNotExist,
                "Gt" => NodeOp::Gt,
                "Lt" => NodeOp::Lt,
                _ => NodeOp::Invalid,
            },
            values: e.values.clone().unwrap_or_default(),
        };
        NodeTerm {
            exprs: t.match_expressions.iter().flatten().map(conv).collect(),
            fields: t.match_fields.iter().flatten().map(conv).collect(),
        }
    }
}

/// A pod (anti-)affinity term, resolved against the pod that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityTerm {
    /// `None`: the term has no label selector and matches no pod.
    pub selector: Option<Selector>,
    /// Namespaces whose pods the term looks at; empty with `all_namespaces` false means the
    /// carrier's own namespace (already filled in).
    pub namespaces: Vec<String>,
    /// `namespaceSelector: {}`: every namespace. (A non-empty namespace selector would need
    /// namespace labels, which the scheduler does not watch; it selects no namespace.)
    pub all_namespaces: bool,
    pub topology_key: String,
}

impl AffinityTerm {
    fn from_k8s(t: &PodAffinityTerm, pod_ns: &str, pod_labels: &BTreeMap<String, String>) -> Self {
        let mut selector = t.label_selector.as_ref().and_then(selector_of);
        if let Some(sel) = &mut selector {
            let mut reqs = sel.requirements().to_vec();
            for key in t.match_label_keys.iter().flatten() {
                if let Some(v) = pod_labels.get(key) {
                    if let Ok(r) = Requirement::new(key, Operator::In, [v.as_str()]) {
                        reqs.push(r);
                    }
                }
            }
            for key in t.mismatch_label_keys.iter().flatten() {
                if let Some(v) = pod_labels.get(key) {
                    if let Ok(r) = Requirement::new(key, Operator::NotIn, [v.as_str()]) {
                        reqs.push(r);
                    }
                }
            }
            *sel = Selector::new(reqs);
        }
        let all_namespaces = t.namespace_selector.as_ref().is_some_and(|s| {
            s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
        });
        let mut namespaces = t.namespaces.clone().unwrap_or_default();
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.push(pod_ns.to_string());
        }
        AffinityTerm {
            selector,
            namespaces,
            all_namespaces,
            topology_key: t.topology_key.clone(),
        }
    }

    /// Whether `pod` is one of the pods this term selects.
    pub fn matches(&self, pod: &PodInfo) -> bool {
        let Some(sel) = &self.selector else {
            return false;
        };
        (self.all_namespaces || self.namespaces.contains(&pod.namespace))
            && sel.matches(&pod.labels)
    }
}

fn selector_of(ls: &LabelSelector) -> Option<Selector> {
    Selector::from_label_selector(ls).ok()
}

/// A `topologySpreadConstraint`, resolved against its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spread {
    pub max_skew: i32,
    pub topology_key: String,
    /// `DoNotSchedule` (a filter) rather than `ScheduleAnyway` (a score).
    pub hard: bool,
    /// The pods counted (in the pod's namespace), with `matchLabelKeys` folded in; `None`
    /// counts none.
    pub selector: Option<Selector>,
    pub min_domains: Option<i32>,
    /// `nodeAffinityPolicy: Honor` (the default): only nodes the pod may land on count.
    pub honor_affinity: bool,
    /// `nodeTaintsPolicy: Honor` (default Ignore): only nodes whose taints it tolerates count.
    pub honor_taints: bool,
    /// The pod matches its own selector, so placing it adds one to the domain.
    pub self_match: bool,
}

/// A host port a pod asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort {
    /// IPv4 or IPv6 address as written, `0.0.0.0` meaning every address; interned as a small
    /// fixed array to keep the struct `Copy`.
    pub ip: IpKey,
    pub protocol: Protocol,
    pub port: u16,
}

/// A host IP, kept as the bytes of its text (host IPs are short).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpKey([u8; 40]);

impl IpKey {
    pub const ANY: IpKey = IpKey([0; 40]);

    pub fn parse(s: &str) -> IpKey {
        if s.is_empty() || s == "0.0.0.0" || s == "::" {
            return IpKey::ANY;
        }
        let mut b = [0u8; 40];
        let n = s.len().min(40);
        b[..n].copy_from_slice(&s.as_bytes()[..n]);
        IpKey(b)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl HostPort {
    /// Whether two host ports cannot both be bound on one node.
    pub fn conflicts(&self, o: &HostPort) -> bool {
        self.port == o.port
            && self.protocol == o.protocol
            && (self.ip == IpKey::ANY || o.ip == IpKey::ANY || self.ip == o.ip)
    }
}

/// Everything the scheduler needs of a pod, computed once per version of it.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub resource_version: Option<String>,
    /// `metadata.generation`: a spec change bumps it.
    pub generation: i64,
    pub labels: BTreeMap<String, String>,
    pub node_name: Option<String>,
    pub scheduler_name: String,
    pub priority: i32,
    /// `preemptionPolicy: Never`.
    pub preempt_never: bool,
    /// Being deleted (`deletionTimestamp` set).
    pub terminating: bool,
    /// Succeeded or Failed: holds no resources.
    pub terminal: bool,
    /// Has scheduling gates: not to be scheduled yet.
    pub gated: bool,
    /// Requests as Kubernetes computes them: max(sum of containers, max of init containers),
    /// restartable (sidecar) init containers added to both, plus the pod overhead.
    pub requests: Resources,
    /// cpu and memory requests with unset container requests counted as 100m and 200Mi (for
    /// scoring only, as kube-scheduler's `NonZeroRequested`).
    pub nonzero_cpu: i64,
    pub nonzero_memory: i64,
    pub node_selector: Vec<(String, String)>,
    /// `requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms` (any one must hold);
    /// `None` when the pod has no required node affinity.
    pub required_terms: Option<Vec<NodeTerm>>,
    pub preferred_terms: Vec<(i32, NodeTerm)>,
    pub tolerations: Vec<Toleration>,
    pub host_ports: Vec<HostPort>,
    pub spread: Vec<Spread>,
    /// The uid of the controller owning the pod (a ReplicaSet, a StatefulSet...): pods of
    /// one owner are spread over nodes when they carry no spread constraints of their own.
    pub owner: Option<String>,
    pub affinity: Vec<AffinityTerm>,
    pub anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<(i32, AffinityTerm)>,
    pub preferred_anti_affinity: Vec<(i32, AffinityTerm)>,
    /// The message of the pod's current `PodScheduled=False` condition, if any.
    pub unschedulable_message: Option<String>,
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> PodInfo {
        let m = &pod.metadata;
        let labels = m.labels.clone().unwrap_or_default();
        let namespace = m.namespace.clone().unwrap_or_else(|| "default".into());
        let mut info = PodInfo {
            uid: m.uid.clone().unwrap_or_default(),
            namespace: namespace.clone(),
            name: m.name.clone().unwrap_or_default(),
            resource_version: m.resource_version.clone(),
            generation: m.generation.unwrap_or(0),
            terminating: m.deletion_timestamp.is_some(),
            owner: m
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
            ..Default::default()
        };
        if let Some(status) = &pod.status {
            info.terminal = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
            info.unschedulable_message = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                .and_then(|c| c.message.clone());
        }
        let Some(spec) = &pod.spec else {
            info.labels = labels;
            return info;
        };
        info.node_name = spec.node_name.clone().filter(|n| !n.is_empty());
        info.scheduler_name = spec
            .scheduler_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_SCHEDULER.into());
        info.priority = spec.priority.unwrap_or(0);
        info.preempt_never = spec.preemption_policy.as_deref() == Some("Never");
        info.gated = spec
            .scheduling_gates
            .as_ref()
            .is_some_and(|g| !g.is_empty());
        let (requests, nz_cpu, nz_mem) = pod_requests(
            &spec.containers,
            spec.init_containers.as_deref().unwrap_or_default(),
            spec.overhead.as_ref(),
        );
        info.requests = requests;
        info.nonzero_cpu = nz_cpu;
        info.nonzero_memory = nz_mem;
        info.node_selector = spec
            .node_selector
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        info.tolerations = spec.tolerations.clone().unwrap_or_default();
        info.host_ports = host_ports(spec);
        if let Some(aff) = &spec.affinity {
            if let Some(na) = &aff.node_affinity {
                info.required_terms = na
                    .required_during_scheduling_ignored_during_execution
                    .as_ref()
                    .map(|r| {
                        r.node_selector_terms
                            .iter()
                            .map(NodeTerm::from_k8s)
                            .collect()
                    });
                info.preferred_terms = na
                    .preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                    .map(|p| (p.weight, NodeTerm::from_k8s(&p.preference)))
                    .collect();
            }
            if let Some(pa) = &aff.pod_affinity {
                info.affinity = pa
                    .required_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                    .map(|t| AffinityTerm::from_k8s(t, &namespace, &labels))
                    .collect();
                info.preferred_affinity = pa
                    .preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                    .map(|w| {
                        let t = AffinityTerm::from_k8s(&w.pod_affinity_term, &namespace, &labels);
                        (w.weight, t)
                    })
                    .collect();
            }
            if let Some(pa) = &aff.pod_anti_affinity {
                info.anti_affinity = pa
                    .required_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                    .map(|t| AffinityTerm::from_k8s(t, &namespace, &labels))
                    .collect();
                info.preferred_anti_affinity = pa
                    .preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                    .map(|w| {
                        let t = AffinityTerm::from_k8s(&w.pod_affinity_term, &namespace, &labels);
                        (w.weight, t)
                    })
                    .collect();
            }
        }
        info.spread = spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .map(|c| {
                let mut selector = c.label_selector.as_ref().and_then(selector_of);
                if let Some(sel) = &mut selector {
                    let mut reqs = sel.requirements().to_vec();
                    for key in c.match_label_keys.iter().flatten() {
                        if let Some(v) = labels.get(key) {
                            if let Ok(r) = Requirement::new(key, Operator::In, [v.as_str()]) {
                                reqs.push(r);
                            }
                        }
                    }
                    *sel = Selector::new(reqs);
                }
                let self_match = selector.as_ref().is_some_and(|s| s.matches(&labels));
                Spread {
                    max_skew: c.max_skew.max(1),
                    topology_key: c.topology_key.clone(),
                    hard: c.when_unsatisfiable == "DoNotSchedule",
                    selector,
                    min_domains: c.min_domains,
                    honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                    honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
                    self_match,
                }
            })
            .collect();
        info.labels = labels;
        info
    }

    /// `namespace/name`, for logs and messages.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the pod carries any pod (anti-)affinity term, required or preferred.
    pub fn has_pod_affinity(&self) -> bool {
        !(self.affinity.is_empty()
            && self.anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }

    /// A pod this scheduler should place: unbound, ours, not gated, not being deleted, not
    /// finished.
    pub fn wants_scheduling(&self, scheduler_name: &str) -> bool {
        self.node_name.is_none()
            && self.scheduler_name == scheduler_name
            && !self.gated
            && !self.terminating
            && !self.terminal
    }
}

/// Requests of a pod as Kubernetes' `resourcehelper.PodRequests` computes them, and the
/// non-zero cpu and memory used for scoring.
fn pod_requests(
    containers: &[Container],
    init: &[Container],
    overhead: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> (Resources, i64, i64) {
    let requests_of = |c: &Container| {
        Resources::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
    };
    let nonzero_of = |c: &Container| {
        let list = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let r = Resources::from_list(list);
        let has = |k: &str| list.is_some_and(|l| l.contains_key(k));
        (
            if has("cpu") {
                r.milli_cpu
            } else {
                DEFAULT_MILLI_CPU
            },
            if has("memory") {
                r.memory
            } else {
                DEFAULT_MEMORY
            },
        )
    };

    let mut reqs = Resources::default();
    let (mut nz_cpu, mut nz_mem) = (0i64, 0i64);
    for c in containers {
        reqs.add(&requests_of(c));
        let (a, b) = nonzero_of(c);
        nz_cpu += a;
        nz_mem += b;
    }
    let mut sidecars = Resources::default();
    let (mut sc_cpu, mut sc_mem) = (0i64, 0i64);
    let mut init_max = Resources::default();
    let (mut init_cpu, mut init_mem) = (0i64, 0i64);
    for c in init {
        let r = requests_of(c);
        let (a, b) = nonzero_of(c);
        let (this, this_cpu, this_mem);
        if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&r);
            nz_cpu += a;
            nz_mem += b;
            sidecars.add(&r);
            sc_cpu += a;
            sc_mem += b;
            this = sidecars.clone();
            this_cpu = sc_cpu;
            this_mem = sc_mem;
        } else {
            let mut t = r;
            t.add(&sidecars);
            this = t;
            this_cpu = a + sc_cpu;
            this_mem = b + sc_mem;
        }
        init_max.max(&this);
        init_cpu = init_cpu.max(this_cpu);
        init_mem = init_mem.max(this_mem);
    }
    reqs.max(&init_max);
    nz_cpu = nz_cpu.max(init_cpu);
    nz_mem = nz_mem.max(init_mem);
    let over = Resources::from_list(overhead);
    reqs.add(&over);
    nz_cpu += over.milli_cpu;
    nz_mem += over.memory;
    (reqs, nz_cpu, nz_mem)
}

fn host_ports(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<HostPort> {
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|p| *p > 0)?;
            Some(HostPort {
                ip: IpKey::parse(p.host_ip.as_deref().unwrap_or("")),
                protocol: match p.protocol.as_deref() {
                    Some("UDP") => Protocol::Udp,
                    Some("SCTP") => Protocol::Sctp,
                    _ => Protocol::Tcp,
                },
                port: u16::try_from(port).ok()?,
            })
        })
        .collect()
}

/// What the scheduler needs of a node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The node's taints, plus `not-ready`/`unreachable` (NoSchedule) when its Ready condition
    /// is not True and it does not carry them yet: what the node lifecycle controller would
    /// add, so a node that is not Ready is avoided exactly as Kubernetes avoids it, through
    /// taints the pod may tolerate.
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    pub pods: i64,
}

impl NodeFacts {
    pub fn from_node(node: &Node) -> NodeFacts {
        let spec = node.spec.as_ref();
        let status = node.status.as_ref();
        let mut taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.as_str());
        let synthetic = match ready {
            Some("True") => None,
            Some("False") => Some(TAINT_NOT_READY),
            _ => Some(TAINT_UNREACHABLE),
        };
        if let Some(key) = synthetic {
            if !taints.iter().any(|t| t.key == key) {
                taints.push(Taint {
                    key: key.into(),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                });
            }
        }
        let alloc_list = status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
        let pods = alloc_list
            .and_then(|l| l.get("pods"))
            .and_then(|q| Quantity::parse(&q.0).ok())
            .map_or(0, |q| clamp(q.value()));
        NodeFacts {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable: Resources::from_list(alloc_list),
            pods,
        }
    }
}

/// Whether `toleration` tolerates `taint` (Kubernetes' `ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = toleration.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    if let Some(k) = toleration.key.as_deref().filter(|k| !k.is_empty()) {
        if k != taint.key {
            return false;
        }
    }
    match toleration.operator.as_deref() {
        None | Some("") | Some("Equal") => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        Some("Exists") => true,
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{container, pod};

    #[test]
    fn requests_are_the_max_of_containers_and_init_containers_plus_overhead() {
        let p = pod("web")
            .container(container("a").requests("500m", "1Gi"))
            .container(container("b").requests("250m", "512Mi"))
            .init_container(container("init").requests("1", "256Mi"))
            .overhead("100m", "64Mi")
            .info();
        assert_eq!(p.requests.milli_cpu, 1000 + 100);
        assert_eq!(p.requests.memory, (1536 + 64) << 20);
    }

    #[test]
    fn sidecar_init_containers_add_to_the_sum() {
        let p = pod("web")
            .container(container("a").requests("500m", "1Gi"))
            .init_container(container("side").requests("200m", "100Mi").sidecar())
            .init_container(container("init").requests("600m", "0"))
            .info();
        // containers + sidecar = 700m; the init container runs beside the sidecar: 800m.
        assert_eq!(p.requests.milli_cpu, 800);
        assert_eq!(p.requests.memory, (1024 + 100) << 20);
    }

    #[test]
    fn unset_requests_count_as_defaults_when_scoring() {
        let p = pod("web")
            .container(container("a"))
            .container(container("b").requests("300m", "1Gi"))
            .info();
        assert_eq!(p.requests.milli_cpu, 300);
        assert_eq!(p.nonzero_cpu, 400);
        assert_eq!(p.nonzero_memory, DEFAULT_MEMORY + (1 << 30));
    }

    #[test]
    fn a_node_that_is_not_ready_carries_the_lifecycle_taint() {
        let n = crate::testing::node("n1").not_ready().facts();
        assert_eq!(n.taints[0].key, TAINT_NOT_READY);
        let n = crate::testing::node("n1").ready_unknown().facts();
        assert_eq!(n.taints[0].key, TAINT_UNREACHABLE);
        let n = crate::testing::node("n1").facts();
        assert!(n.taints.is_empty());
    }

    #[test]
    fn tolerations_follow_kubernetes() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tol =
            |key: Option<&str>, op: Option<&str>, value: Option<&str>, effect: Option<&str>| {
                Toleration {
                    key: key.map(Into::into),
                    operator: op.map(Into::into),
                    value: value.map(Into::into),
                    effect: effect.map(Into::into),
                    ..Default::default()
                }
            };
        assert!(tolerates(&tol(Some("k"), None, Some("v"), None), &taint));
        assert!(!tolerates(&tol(Some("k"), None, Some("w"), None), &taint));
        assert!(tolerates(
            &tol(Some("k"), Some("Exists"), None, None),
            &taint
        ));
        assert!(tolerates(&tol(None, Some("Exists"), None, None), &taint));
        assert!(!tolerates(
            &tol(Some("k"), Some("Exists"), None, Some("NoExecute")),
            &taint
        ));
        assert!(tolerates(
            &tol(Some("k"), Some("Exists"), None, Some("NoSchedule")),
            &taint
        ));
    }
}
