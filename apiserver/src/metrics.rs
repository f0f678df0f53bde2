//! `metrics.k8s.io/v1beta1`, served by the API server itself (in place of an aggregated
//! metrics-server) so `kubectl top` works: `nodes` (NodeMetrics, cluster-scoped) and `pods`
//! (PodMetrics, namespaced), get and list, with label selectors (and field selectors on pods)
//! applied to the Node and Pod objects.
//!
//! Each request reads `/stats/summary` (kubelet's Summary API, `stats/v1alpha1`) from the agents
//! of the nodes concerned, concurrently and within [`SUMMARY_TIMEOUT`]; a node whose agent
//! fails is left out with a warning. Usage is the agent's instantaneous figure: CPU from
//! `cpu.usageNanoCores` as `<n>n`, memory from `memory.workingSetBytes` as `<n>Ki`, stamped
//! with the sample's time and a [`WINDOW`] window.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use berth_api::registry::{ResourceInfo, Scope};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::read::Filter;
use crate::request::{Format, Query};
use crate::server::{encode, ApiServer};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
/// How long an agent has to answer.
pub const SUMMARY_TIMEOUT: Duration = Duration::from_secs(5);
/// The window reported with each sample.
pub const WINDOW: &str = "10s";

const VERBS: &[&str] = &["get", "list"];

/// The resources of `metrics.k8s.io/v1beta1`, for discovery.
pub static RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        group: GROUP,
        version: VERSION,
        kind: "NodeMetrics",
        plural: "nodes",
        singular: "",
        short_names: &[],
        scope: Scope::Cluster,
        subresources: &[],
        categories: &[],
        verbs: VERBS,
    },
    ResourceInfo {
        group: GROUP,
        version: VERSION,
        kind: "PodMetrics",
        plural: "pods",
        singular: "",
        short_names: &[],
        scope: Scope::Namespaced,
        subresources: &[],
        categories: &[],
        verbs: VERBS,
    },
];

/// Which metrics a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Nodes {
        name: Option<String>,
    },
    Pods {
        namespace: Option<String>,
        name: Option<String>,
    },
}

impl Request {
    /// Parses the path segments after `/apis/metrics.k8s.io/v1beta1`.
    pub fn parse(rest: &[&str]) -> Option<Self> {
        let s = |x: &&str| x.to_string();
        match rest {
            ["nodes"] => Some(Self::Nodes { name: None }),
            ["nodes", name] => Some(Self::Nodes {
                name: Some(s(name)),
            }),
            ["pods"] => Some(Self::Pods {
                namespace: None,
                name: None,
            }),
            ["namespaces", ns, "pods"] => Some(Self::Pods {
                namespace: Some(s(ns)),
                name: None,
            }),
            ["namespaces", ns, "pods", name] => Some(Self::Pods {
                namespace: Some(s(ns)),
                name: Some(s(name)),
            }),
            _ => None,
        }
    }

    /// The authorisation attributes of the request.
    pub fn attributes(&self, verb: &str) -> crate::auth::Attributes {
        let (resource, namespace, name) = match self {
            Self::Nodes { name } => ("nodes", None, name),
            Self::Pods { namespace, name } => ("pods", namespace.as_ref(), name),
        };
        crate::auth::Attributes::Resource {
            verb: verb.into(),
            group: GROUP.into(),
            resource: resource.into(),
            subresource: String::new(),
            namespace: namespace.cloned().unwrap_or_default(),
            name: name.clone().unwrap_or_default(),
        }
    }
}

fn usage(stats: &Value) -> Option<Value> {
    let cpu = stats.pointer("/cpu/usageNanoCores")?.as_u64()?;
    let memory = stats.pointer("/memory/workingSetBytes")?.as_u64()?;
    Some(json!({"cpu": format!("{cpu}n"), "memory": format!("{}Ki", memory / 1024)}))
}

fn sample_time(stats: &Value) -> Value {
    stats
        .pointer("/cpu/time")
        .or_else(|| stats.pointer("/memory/time"))
        .cloned()
        .unwrap_or_else(|| json!(crate::objects::now()))
}

fn metadata(obj: &Value) -> Value {
    let mut meta = json!({
        "name": obj.pointer("/metadata/name"),
        "creationTimestamp": crate::objects::now(),
    });
    if let Some(ns) = obj.pointer("/metadata/namespace") {
        meta["namespace"] = ns.clone();
    }
    if let Some(labels) = obj.pointer("/metadata/labels") {
        meta["labels"] = labels.clone();
    }
    meta
}

/// The NodeMetrics of `node` (its object) from its agent's summary, if it reports usage.
pub fn node_metrics(node: &Value, summary: &Value) -> Option<Value> {
    let stats = summary.get("node")?;
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": metadata(node),
        "timestamp": sample_time(stats),
        "window": WINDOW,
        "usage": usage(stats)?,
    }))
}

/// The PodMetrics of `pod` (its object) from its node's summary, if the summary has it with
/// usage for every container listed.
pub fn pod_metrics(pod: &Value, summary: &Value) -> Option<Value> {
    let ns = pod.pointer("/metadata/namespace")?.as_str()?;
    let name = pod.pointer("/metadata/name")?.as_str()?;
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str);
    let stats = summary.get("pods")?.as_array()?.iter().find(|p| {
        p.pointer("/podRef/namespace").and_then(Value::as_str) == Some(ns)
            && p.pointer("/podRef/name").and_then(Value::as_str) == Some(name)
            && match (uid, p.pointer("/podRef/uid").and_then(Value::as_str)) {
                (Some(a), Some(b)) if !b.is_empty() => a == b,
                _ => true,
            }
    })?;
    let mut containers = Vec::new();
    for c in stats.get("containers")?.as_array()? {
        containers.push(json!({"name": c.get("name")?, "usage": usage(c)?}));
    }
    let time = stats
        .get("containers")
        .and_then(Value::as_array)
        .and_then(|cs| cs.first())
        .map(sample_time)
        .unwrap_or_else(|| sample_time(stats));
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": metadata(pod),
        "timestamp": time,
        "window": WINDOW,
        "containers": containers,
    }))
}

fn not_found(kind_plural: &str, name: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("{kind_plural}.{GROUP} \"{name}\" not found"),
    )
    .with_details(json!({"name": name, "group": GROUP, "kind": kind_plural}))
}

impl ApiServer {
    /// The summaries of `nodes` from their agents, fetched concurrently; failures are
    /// logged and left out.
    async fn summaries(&self, nodes: &BTreeSet<String>) -> BTreeMap<String, Value> {
        let fetches = nodes.iter().map(|node| async move {
            let result = async {
                let ep = self.node_endpoint(node).await?;
                self.kubelet
                    .get_json(&ep, "/stats/summary", SUMMARY_TIMEOUT)
                    .await
            }
            .await;
            match result {
                Ok(summary) => Some((node.clone(), summary)),
                Err(e) => {
                    tracing::warn!(%node, error = %e, "no metrics from node agent");
                    None
                }
            }
        });
        futures::future::join_all(fetches)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Serves `/apis/metrics.k8s.io/v1beta1/...`.
    pub async fn serve_metrics(
        &self,
        user: &crate::auth::User,
        method: &Method,
        rest: &[&str],
        q: &Query,
    ) -> ApiResult<Response> {
        let request = Request::parse(rest).ok_or_else(ApiError::path_not_found)?;
        let named = matches!(
            &request,
            Request::Nodes { name: Some(_) } | Request::Pods { name: Some(_), .. }
        );
        let verb = match (method, named) {
            (&Method::GET, true) => "get",
            (&Method::GET, false) if q.flag("watch") => "watch",
            (&Method::GET, false) => "list",
            _ => "unsupported",
        };
        self.check(user, &request.attributes(verb))?;
        if !matches!(verb, "get" | "list") {
            return Err(ApiError::method_not_allowed(format!(
                "{method}{} is not supported on {GROUP}",
                if verb == "watch" { " (watch)" } else { "" }
            )));
        }
        let value = match request {
            Request::Nodes { name } => self.node_metrics_of(name.as_deref(), q).await?,
            Request::Pods { namespace, name } => {
                self.pod_metrics_of(namespace.as_deref(), name.as_deref(), q)
                    .await?
            }
        };
        Ok(encode(StatusCode::OK, &value, Format::Json))
    }

    async fn node_metrics_of(&self, name: Option<&str>, q: &Query) -> ApiResult<Value> {
        let info = berth_api::registry::by_kind("Node").expect("nodes are registered");
        let (cached, _) = self.cache.list("/registry/core/nodes/", None);
        let nodes: Vec<Value> = match name {
            Some(n) => {
                let node = cached
                    .iter()
                    .find(|c| c.object.pointer("/metadata/name") == Some(&json!(n)))
                    .ok_or_else(|| not_found("nodemetrics", n))?;
                vec![(*node.object).clone()]
            }
            None => {
                let filter = Filter::from_query(info, q)?;
                cached
                    .iter()
                    .filter(|c| filter.matches(&c.object))
                    .map(|c| (*c.object).clone())
                    .collect()
            }
        };
        let names: BTreeSet<String> = nodes
            .iter()
            .filter_map(|n| n.pointer("/metadata/name")?.as_str().map(str::to_string))
            .collect();
        let summaries = self.summaries(&names).await;
        let items: Vec<Value> = nodes
            .iter()
            .filter_map(|n| {
                let summary = summaries.get(n.pointer("/metadata/name")?.as_str()?)?;
                node_metrics(n, summary)
            })
            .collect();
        match name {
            Some(n) => items
                .into_iter()
                .next()
                .ok_or_else(|| not_found("nodemetrics", n)),
            None => Ok(json!({"kind": "NodeMetricsList",
                "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items})),
        }
    }

    async fn pod_metrics_of(
        &self,
        namespace: Option<&str>,
        name: Option<&str>,
        q: &Query,
    ) -> ApiResult<Value> {
        let info = berth_api::registry::by_kind("Pod").expect("pods are registered");
        let prefix = info
            .store_prefix(namespace)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let (cached, _) = self.cache.list(&prefix, None);
        let filter = Filter::from_query(info, q)?;
        let pods: Vec<Value> = cached
            .iter()
            .filter(|c| match name {
                Some(n) => c.object.pointer("/metadata/name") == Some(&json!(n)),
                None => filter.matches(&c.object),
            })
            .map(|c| (*c.object).clone())
            .collect();
        let missing = || {
            not_found(
                "podmetrics",
                &format!("{}/{}", namespace.unwrap_or(""), name.unwrap_or("")),
            )
        };
        if name.is_some() && pods.is_empty() {
            return Err(missing());
        }
        let nodes: BTreeSet<String> = pods
            .iter()
            .filter_map(|p| p.pointer("/spec/nodeName")?.as_str().map(str::to_string))
            .filter(|n| !n.is_empty())
            .collect();
        let summaries = self.summaries(&nodes).await;
        let items: Vec<Value> = pods
            .iter()
            .filter_map(|p| {
                let summary = summaries.get(p.pointer("/spec/nodeName")?.as_str()?)?;
                pod_metrics(p, summary)
            })
            .collect();
        match name {
            Some(_) => items.into_iter().next().ok_or_else(missing),
            None => Ok(json!({"kind": "PodMetricsList",
                "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items})),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Value {
        json!({"node": {"nodeName": "n1",
                "cpu": {"time": "2026-01-01T00:00:00Z", "usageNanoCores": 250_000_000u64,
                    "usageCoreNanoSeconds": 1u64},
                "memory": {"time": "2026-01-01T00:00:00Z", "workingSetBytes": 536_870_912u64,
                    "usageBytes": 600_000_000u64}},
            "pods": [{"podRef": {"name": "web", "namespace": "shop", "uid": "u1"},
                "containers": [
                    {"name": "app", "cpu": {"time": "2026-01-01T00:00:01Z", "usageNanoCores": 5_000_000u64},
                        "memory": {"time": "2026-01-01T00:00:01Z", "workingSetBytes": 10_485_760u64}},
                    {"name": "side", "cpu": {"usageNanoCores": 1_000_000u64},
                        "memory": {"workingSetBytes": 2048u64}}]}]})
    }

    #[test]
    fn node_usage_comes_from_the_node_stats() {
        let node = json!({"metadata": {"name": "n1", "labels": {"zone": "a"}}});
        let m = node_metrics(&node, &summary()).unwrap();
        assert_eq!(
            m["usage"],
            json!({"cpu": "250000000n", "memory": "524288Ki"})
        );
        assert_eq!(m["metadata"]["name"], "n1");
        assert_eq!(m["metadata"]["labels"]["zone"], "a");
        assert_eq!(m["timestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(m["window"], WINDOW);
        assert!(node_metrics(&node, &json!({"node": {"cpu": {}}})).is_none());
    }

    #[test]
    fn pod_usage_is_per_container() {
        let pod = json!({"metadata": {"name": "web", "namespace": "shop", "uid": "u1"}});
        let m = pod_metrics(&pod, &summary()).unwrap();
        assert_eq!(m["kind"], "PodMetrics");
        assert_eq!(m["metadata"]["namespace"], "shop");
        assert_eq!(
            m["containers"],
            json!([{"name": "app", "usage": {"cpu": "5000000n", "memory": "10240Ki"}},
                {"name": "side", "usage": {"cpu": "1000000n", "memory": "2Ki"}}])
        );
        assert_eq!(m["timestamp"], "2026-01-01T00:00:01Z");
        let other_uid = json!({"metadata": {"name": "web", "namespace": "shop", "uid": "u2"}});
        assert!(pod_metrics(&other_uid, &summary()).is_none());
        let other_ns = json!({"metadata": {"name": "web", "namespace": "x"}});
        assert!(pod_metrics(&other_ns, &summary()).is_none());
    }

    #[test]
    fn paths() {
        assert_eq!(
            Request::parse(&["nodes", "n1"]),
            Some(Request::Nodes {
                name: Some("n1".into())
            })
        );
        assert_eq!(
            Request::parse(&["namespaces", "a", "pods"]),
            Some(Request::Pods {
                namespace: Some("a".into()),
                name: None
            })
        );
        assert!(Request::parse(&["namespaces", "a", "nodes"]).is_none());
        assert!(Request::parse(&["widgets"]).is_none());
    }
}
