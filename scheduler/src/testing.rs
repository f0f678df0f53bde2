//! Fixture builders that read like prose, for this crate's tests and benchmark:
//! `node("n1").cpu("4").memory("8Gi").taint("k", "v", "NoSchedule")`,
//! `pod("web").requests("500m", "1Gi").selector("disk", "ssd")`.
//!
//! Pods get the uid `<name>-uid`; nodes the label `kubernetes.io/hostname=<name>`, 110 pods,
//! 4 cpu, 8 GiB and 100 GiB of ephemeral storage, and Ready=True unless told otherwise.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{json, Value};

use crate::info::{NodeFacts, PodInfo};

/// A node named `name`.
pub fn node(name: &str) -> NodeBuilder {
    NodeBuilder {
        v: json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi"},
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }),
    }
}

#[derive(Debug, Clone)]
pub struct NodeBuilder {
    v: Value,
}

impl NodeBuilder {
    fn alloc(mut self, name: &str, q: &str) -> Self {
        self.v["status"]["allocatable"][name] = json!(q);
        self.v["status"]["capacity"][name] = json!(q);
        self
    }

    pub fn cpu(self, q: &str) -> Self {
        self.alloc("cpu", q)
    }

    pub fn memory(self, q: &str) -> Self {
        self.alloc("memory", q)
    }

    pub fn pods(self, n: u32) -> Self {
        self.alloc("pods", &n.to_string())
    }

    pub fn ephemeral(self, q: &str) -> Self {
        self.alloc("ephemeral-storage", q)
    }

    /// An extended resource (`example.com/gpu`).
    pub fn resource(self, name: &str, q: &str) -> Self {
        self.alloc(name, q)
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.v["metadata"]["labels"][k] = json!(v);
        self
    }

    /// Drops a label (e.g. the hostname).
    pub fn without_label(mut self, k: &str) -> Self {
        if let Some(m) = self.v["metadata"]["labels"].as_object_mut() {
            m.remove(k);
        }
        self
    }

    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        let t = if value.is_empty() {
            json!({"key": key, "effect": effect})
        } else {
            json!({"key": key, "value": value, "effect": effect})
        };
        match self.v["spec"]["taints"].as_array_mut() {
            Some(a) => a.push(t),
            None => self.v["spec"]["taints"] = json!([t]),
        }
        self
    }

    /// Cordoned (`spec.unschedulable`).
    pub fn unschedulable(mut self) -> Self {
        self.v["spec"]["unschedulable"] = json!(true);
        self
    }

    pub fn not_ready(mut self) -> Self {
        self.v["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
        self
    }

    pub fn ready_unknown(mut self) -> Self {
        self.v["status"]["conditions"] = json!([{"type": "Ready", "status": "Unknown"}]);
        self
    }

    pub fn build(self) -> Node {
        serde_json::from_value(self.v).expect("a valid node")
    }

    pub fn facts(self) -> NodeFacts {
        NodeFacts::from_node(&self.build())
    }
}

/// A container named `name` (for [`PodBuilder::container`]).
pub fn container(name: &str) -> ContainerBuilder {
    ContainerBuilder {
        v: json!({"name": name, "image": "busybox"}),
    }
}

#[derive(Debug, Clone)]
pub struct ContainerBuilder {
    v: Value,
}

impl ContainerBuilder {
    /// cpu and memory requests; an empty string leaves one unset.
    pub fn requests(mut self, cpu: &str, memory: &str) -> Self {
        if !cpu.is_empty() {
            self.v["resources"]["requests"]["cpu"] = json!(cpu);
        }
        if !memory.is_empty() {
            self.v["resources"]["requests"]["memory"] = json!(memory);
        }
        self
    }

    pub fn request(mut self, name: &str, q: &str) -> Self {
        self.v["resources"]["requests"][name] = json!(q);
        self
    }

    pub fn host_port(mut self, port: u16, protocol: &str, host_ip: &str) -> Self {
        let mut p = json!({"containerPort": port, "hostPort": port, "protocol": protocol});
        if !host_ip.is_empty() {
            p["hostIP"] = json!(host_ip);
        }
        match self.v["ports"].as_array_mut() {
            Some(a) => a.push(p),
            None => self.v["ports"] = json!([p]),
        }
        self
    }

    /// A restartable init container (a sidecar).
    pub fn sidecar(mut self) -> Self {
        self.v["restartPolicy"] = json!("Always");
        self
    }
}

/// A pod named `name` in namespace `default`.
pub fn pod(name: &str) -> PodBuilder {
    PodBuilder {
        v: json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid"),
                         "labels": {}},
            "spec": {"containers": []}
        }),
        main: None,
    }
}

#[derive(Debug, Clone)]
pub struct PodBuilder {
    v: Value,
    /// The container `app` that `requests` and `host_port` shape, added when first needed.
    main: Option<ContainerBuilder>,
}

fn push(v: &mut Value, item: Value) {
    match v.as_array_mut() {
        Some(a) => a.push(item),
        None => *v = json!([item]),
    }
}

fn labels_json(labels: &[(&str, &str)]) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    )
}

impl PodBuilder {
    fn main(&mut self) -> &mut ContainerBuilder {
        self.main.get_or_insert_with(|| container("app"))
    }

    /// cpu and memory requests of the pod's main container.
    pub fn requests(mut self, cpu: &str, memory: &str) -> Self {
        let c = self.main().clone().requests(cpu, memory);
        self.main = Some(c);
        self
    }

    /// Any request of the main container (`ephemeral-storage`, `example.com/gpu`).
    pub fn request(mut self, name: &str, q: &str) -> Self {
        let c = self.main().clone().request(name, q);
        self.main = Some(c);
        self
    }

    pub fn host_port(mut self, port: u16) -> Self {
        let c = self.main().clone().host_port(port, "TCP", "");
        self.main = Some(c);
        self
    }

    pub fn host_port_on(mut self, port: u16, protocol: &str, host_ip: &str) -> Self {
        let c = self.main().clone().host_port(port, protocol, host_ip);
        self.main = Some(c);
        self
    }

    pub fn container(mut self, c: ContainerBuilder) -> Self {
        push(&mut self.v["spec"]["containers"], c.v);
        self
    }

    pub fn init_container(mut self, c: ContainerBuilder) -> Self {
        push(&mut self.v["spec"]["initContainers"], c.v);
        self
    }

    pub fn overhead(mut self, cpu: &str, memory: &str) -> Self {
        self.v["spec"]["overhead"] = json!({"cpu": cpu, "memory": memory});
        self
    }

    pub fn namespace(mut self, ns: &str) -> Self {
        self.v["metadata"]["namespace"] = json!(ns);
        self
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.v["metadata"]["labels"][k] = json!(v);
        self
    }

    pub fn priority(mut self, p: i32) -> Self {
        self.v["spec"]["priority"] = json!(p);
        self
    }

    pub fn preempt_never(mut self) -> Self {
        self.v["spec"]["preemptionPolicy"] = json!("Never");
        self
    }

    pub fn on_node(mut self, node: &str) -> Self {
        self.v["spec"]["nodeName"] = json!(node);
        self
    }

    pub fn scheduler(mut self, name: &str) -> Self {
        self.v["spec"]["schedulerName"] = json!(name);
        self
    }

    /// Controlled by the owner of uid `uid` (a ReplicaSet).
    pub fn owner(mut self, uid: &str) -> Self {
        self.v["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": uid, "uid": uid,
            "controller": true
        }]);
        self
    }

    /// A nodeSelector entry.
    pub fn selector(mut self, k: &str, v: &str) -> Self {
        self.v["spec"]["nodeSelector"][k] = json!(v);
        self
    }

    /// A toleration: `operator` Equal or Exists, `effect` empty for any.
    pub fn tolerate(mut self, key: &str, operator: &str, value: &str, effect: &str) -> Self {
        let mut t = json!({"operator": operator});
        if !key.is_empty() {
            t["key"] = json!(key);
        }
        if !value.is_empty() {
            t["value"] = json!(value);
        }
        if !effect.is_empty() {
            t["effect"] = json!(effect);
        }
        push(&mut self.v["spec"]["tolerations"], t);
        self
    }

    /// A required node affinity term of one expression (`op` In, NotIn, Exists,
    /// DoesNotExist, Gt, Lt); call again for more terms (any one must hold).
    pub fn require(mut self, key: &str, op: &str, values: &[&str]) -> Self {
        let term = json!({"matchExpressions": [{"key": key, "operator": op, "values": values}]});
        push(
            &mut self.v["spec"]["affinity"]["nodeAffinity"]
                ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
            term,
        );
        self
    }

    /// A required term on `metadata.name`.
    pub fn require_name(mut self, op: &str, names: &[&str]) -> Self {
        let term =
            json!({"matchFields": [{"key": "metadata.name", "operator": op, "values": names}]});
        push(
            &mut self.v["spec"]["affinity"]["nodeAffinity"]
                ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
            term,
        );
        self
    }

    /// A preferred node affinity term of one expression.
    pub fn prefer(mut self, weight: i32, key: &str, op: &str, values: &[&str]) -> Self {
        let term = json!({"weight": weight, "preference": {
            "matchExpressions": [{"key": key, "operator": op, "values": values}]}});
        push(
            &mut self.v["spec"]["affinity"]["nodeAffinity"]
                ["preferredDuringSchedulingIgnoredDuringExecution"],
            term,
        );
        self
    }

    fn pod_term(key: &str, labels: &[(&str, &str)]) -> Value {
        json!({"topologyKey": key, "labelSelector": {"matchLabels": labels_json(labels)}})
    }

    /// Required pod anti-affinity to pods with `labels`, on topology `key`.
    pub fn anti_affinity(mut self, key: &str, labels: &[(&str, &str)]) -> Self {
        push(
            &mut self.v["spec"]["affinity"]["podAntiAffinity"]
                ["requiredDuringSchedulingIgnoredDuringExecution"],
            Self::pod_term(key, labels),
        );
        self
    }

    /// Required pod affinity to pods with `labels`, on topology `key`.
    pub fn affinity(mut self, key: &str, labels: &[(&str, &str)]) -> Self {
        push(
            &mut self.v["spec"]["affinity"]["podAffinity"]
                ["requiredDuringSchedulingIgnoredDuringExecution"],
            Self::pod_term(key, labels),
        );
        self
    }

    /// Preferred pod affinity (positive weight) or anti-affinity (`anti`).
    pub fn prefer_pods(
        mut self,
        anti: bool,
        weight: i32,
        key: &str,
        labels: &[(&str, &str)],
    ) -> Self {
        let kind = if anti {
            "podAntiAffinity"
        } else {
            "podAffinity"
        };
        push(
            &mut self.v["spec"]["affinity"][kind]
                ["preferredDuringSchedulingIgnoredDuringExecution"],
            json!({"weight": weight, "podAffinityTerm": Self::pod_term(key, labels)}),
        );
        self
    }

    /// A topology spread constraint over pods with `labels`; `hard` is DoNotSchedule.
    pub fn spread(mut self, key: &str, max_skew: i32, hard: bool, labels: &[(&str, &str)]) -> Self {
        push(
            &mut self.v["spec"]["topologySpreadConstraints"],
            json!({
                "maxSkew": max_skew, "topologyKey": key,
                "whenUnsatisfiable": if hard { "DoNotSchedule" } else { "ScheduleAnyway" },
                "labelSelector": {"matchLabels": labels_json(labels)}
            }),
        );
        self
    }

    pub fn build(mut self) -> Pod {
        if let Some(c) = self.main.take() {
            let mut cs = vec![c.v];
            if let Some(rest) = self.v["spec"]["containers"].as_array() {
                cs.extend(rest.iter().cloned());
            }
            self.v["spec"]["containers"] = Value::Array(cs);
        }
        if self.v["spec"]["containers"]
            .as_array()
            .is_none_or(|a| a.is_empty())
        {
            self.v["spec"]["containers"] = json!([{"name": "app", "image": "busybox"}]);
        }
        serde_json::from_value(self.v).expect("a valid pod")
    }

    pub fn info(self) -> PodInfo {
        PodInfo::from_pod(&self.build())
    }

    pub fn arc(self) -> Arc<PodInfo> {
        Arc::new(self.info())
    }
}
