//! The DaemonSet controller: one pod on every node the template's node selector, required
//! node affinity and tolerations admit; pods on nodes that no longer qualify go; failed
//! pods are replaced; a template change rolls out node by node (`RollingUpdate` with
//! `maxUnavailable`, default 1) or waits for the user (`OnDelete`).
//!
//! Daemon pods are bound to their node at creation (`spec.nodeName`) and carry the
//! tolerations Kubernetes adds to them, so a node that is not ready, unreachable or under
//! pressure keeps its daemon. Each pod is labelled `controller-revision-hash` with the hash of
//! the template it was made from. [`plan`] decides; [`reconcile`] applies.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, Pod, PodSpec, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

use crate::deployment::template_hash;
use crate::pods::{self, controller_ref, is_active};
use crate::runtime::{self, Action, Change, Informer, Key, Queue, Synced};
use crate::{podcontrol, Ctx, Error, Result};

pub const HASH_LABEL: &str = "controller-revision-hash";

/// The tolerations every daemon pod gets (Kubernetes' `AddOrUpdateDaemonPodTolerations`).
pub fn daemon_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

fn expression_matches(e: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = e.values.as_deref().unwrap_or(&[]);
    match e.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(x)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|x| x.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if e.operator == "Gt" {
                v > x
            } else {
                v < x
            }
        }
        _ => false,
    }
}

/// Whether a pod with `spec` may run on `node`: node selector, required node affinity, and
/// the node's `NoSchedule`/`NoExecute` taints tolerated.
pub fn node_admits(spec: &PodSpec, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    if let Some(sel) = &spec.node_selector {
        if sel.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(req) = required {
        let name = node.metadata.name.clone().unwrap_or_default();
        let any = req.node_selector_terms.iter().any(|term| {
            term.match_expressions
                .iter()
                .flatten()
                .all(|e| expression_matches(e, labels.get(&e.key)))
                && term
                    .match_fields
                    .iter()
                    .flatten()
                    .all(|e| e.key == "metadata.name" && expression_matches(e, Some(&name)))
        });
        if !any {
            return false;
        }
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten();
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    for taint in taints.filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute") {
        let tolerated = tolerations.iter().any(|t| {
            let effect_ok = t
                .effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == taint.effect);
            let key = t.key.as_deref().unwrap_or("");
            let key_ok = match t.operator.as_deref().unwrap_or("Equal") {
                "Exists" => key.is_empty() || key == taint.key,
                _ => {
                    key == taint.key
                        && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
                }
            };
            effect_ok && key_ok
        });
        if !tolerated {
            return false;
        }
    }
    true
}

/// The template's spec with the daemon tolerations added.
pub fn daemon_spec(ds: &DaemonSet) -> PodSpec {
    let mut spec = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for t in daemon_tolerations() {
        if !tolerations.contains(&t) {
            tolerations.push(t);
        }
    }
    spec
}

/// What one pass wants.
#[derive(Debug, Default)]
pub struct Plan {
    /// Nodes to create a daemon pod on.
    pub create: Vec<String>,
    pub delete: Vec<Arc<Pod>>,
    pub status: DaemonSetStatus,
}

fn hash_of(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .map(String::as_str)
}

/// Decides for `ds` over all nodes and the pods it owns.
pub fn plan(ds: &DaemonSet, nodes: &[Arc<Node>], owned: &[Arc<Pod>], now: Timestamp) -> Plan {
    let mut plan = Plan::default();
    let spec = ds.spec.clone().unwrap_or_default();
    let hash = template_hash(
        &spec.template,
        ds.status.as_ref().and_then(|s| s.collision_count),
    );
    let pod_spec = daemon_spec(ds);
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for p in owned {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        by_node.entry(node).or_default().push(p.clone());
    }
    let mut status = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        ..Default::default()
    };
    let deleting = ds.metadata.deletion_timestamp.is_some();
    // Nodes that should run it, and what each has.
    let mut outdated_available: Vec<Arc<Pod>> = Vec::new();
    let mut unavailable = 0;
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let should = node_admits(&pod_spec, node);
        let mut pods: Vec<Arc<Pod>> = by_node.remove(&name).unwrap_or_default();
        // Failed daemon pods are replaced.
        for p in pods.iter().filter(|p| pods::phase(p) == "Failed") {
            if p.metadata.deletion_timestamp.is_none() {
                plan.delete.push(p.clone());
            }
        }
        pods.retain(|p| is_active(p));
        if !should {
            if !pods.is_empty() {
                status.number_misscheduled += 1;
            }
            plan.delete.extend(pods);
            continue;
        }
        status.desired_number_scheduled += 1;
        if pods.is_empty() {
            if !deleting {
                plan.create.push(name);
            }
            unavailable += 1;
            continue;
        }
        status.current_number_scheduled += 1;
        // More than one: keep the oldest.
        pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        plan.delete.extend(pods.drain(1..));
        let p = &pods[0];
        let ready = pods::is_ready(p);
        let available = pods::is_available(p, min_ready, now);
        if ready {
            status.number_ready += 1;
        }
        if available {
            status.number_available = Some(status.number_available.unwrap_or(0) + 1);
        } else {
            unavailable += 1;
        }
        if hash_of(p) == Some(hash.as_str()) {
            status.updated_number_scheduled =
                Some(status.updated_number_scheduled.unwrap_or(0) + 1);
        } else if available {
            outdated_available.push(p.clone());
        } else {
            // An outdated pod that is not available anyway goes at once.
            plan.delete.push(p.clone());
        }
    }
    // Pods on nodes that no longer exist.
    for (_, pods) in by_node {
        plan.delete
            .extend(pods.into_iter().filter(|p| is_active(p)));
    }
    status.number_unavailable = (unavailable > 0).then_some(unavailable);
    // Rolling update: replace outdated available pods while unavailability allows.
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref() != Some("OnDelete") {
        let max_unavailable = match strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.max_unavailable.as_ref())
        {
            Some(IntOrString::Int(i)) => *i,
            Some(IntOrString::String(s)) => {
                let pct: i32 = s.trim_end_matches('%').parse().unwrap_or(0);
                (pct * status.desired_number_scheduled / 100).max(1)
            }
            None => 1,
        };
        let budget = (max_unavailable - unavailable).max(0) as usize;
        outdated_available.sort_by_key(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()));
        plan.delete
            .extend(outdated_available.into_iter().take(budget));
    }
    plan.status = status;
    plan
}

/// One pass over one DaemonSet.
pub async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action> {
    let key = Key::of(ds.as_ref());
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let owned: Vec<Arc<Pod>> = ctx
        .pods
        .owned_by(&uid)
        .into_iter()
        .filter(|p| runtime::controller_uid(p.as_ref()) == Some(uid.as_str()))
        .collect();
    let nodes = ctx.nodes.list();
    let now = Timestamp::now();
    let trust = ctx.expectations.satisfied(&uid);
    let plan = plan(&ds, &nodes, &owned, now);
    if trust {
        let spec = ds.spec.clone().unwrap_or_default();
        let hash = template_hash(
            &spec.template,
            ds.status.as_ref().and_then(|s| s.collision_count),
        );
        let pods: Vec<Pod> = plan
            .create
            .iter()
            .map(|node| {
                let mut pod = pods::from_template(
                    &spec.template,
                    &key.namespace,
                    &format!("{}-", key.name),
                    controller_ref(ds.as_ref()),
                );
                pod.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert(HASH_LABEL.into(), hash.clone());
                let mut pspec = daemon_spec(&ds);
                pspec.node_name = Some(node.clone());
                pod.spec = Some(pspec);
                pod
            })
            .collect();
        podcontrol::create(&ctx, ds.as_ref(), pods).await?;
        podcontrol::delete(&ctx, ds.as_ref(), &plan.delete).await?;
    }
    let changed = ds.status.as_ref() != Some(&plan.status);
    if changed {
        let dsapi: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &key.namespace);
        match dsapi
            .patch_status(
                &key.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": plan.status})),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::api("updating status of daemonset", &key, e)),
        }
    }
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    Ok(if min_ready > 0 {
        Action::Requeue(std::time::Duration::from_secs(1))
    } else {
        Action::AwaitChange
    })
}

/// Wires the controller: a DaemonSet is looked at when it or its pods change, and all of
/// them when a node is added, removed or changes labels, taints or readiness.
pub fn register(
    ctx: &Arc<Ctx>,
    daemonsets: &Informer<DaemonSet>,
    pods: &Informer<Pod>,
    nodes: &Informer<Node>,
) -> Vec<BoxFuture<'static, ()>> {
    let queue = Queue::new("daemonset");
    daemonsets.on_change(runtime::enqueue_self(&queue));
    pods.on_change(runtime::enqueue_owner(&queue, "DaemonSet"));
    {
        let q = queue.clone();
        let cache = ctx.daemonsets.clone();
        nodes.on_change(move |c| {
            let relevant = match c {
                Change::Applied { old: Some(o), new } => {
                    o.metadata.labels != new.metadata.labels
                        || o.spec.as_ref().and_then(|s| s.taints.clone())
                            != new.spec.as_ref().and_then(|s| s.taints.clone())
                }
                _ => true,
            };
            if relevant {
                for ds in cache.list() {
                    q.add(Key::of(ds.as_ref()));
                }
            }
        });
    }
    let synced: Vec<Arc<dyn Synced>> = vec![ctx.pods.clone(), ctx.nodes.clone()];
    vec![runtime::run(
        queue,
        ctx.daemonsets.clone(),
        synced,
        ctx.config.workers,
        ctx.clone(),
        reconcile,
    )
    .boxed()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::fixtures::*;
    use k8s_openapi::api::apps::v1::DaemonSetSpec;
    use k8s_openapi::api::core::v1::{NodeSpec, PodTemplateSpec, Taint};
    use kube::api::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: None,
        })
    }

    fn ds(image: &str, selector: Option<(&str, &str)>) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("kube-system".into()),
                uid: Some("ds-uid".into()),
                ..Default::default()
            },
            spec: Some(DaemonSetSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        node_selector: selector
                            .map(|(k, v)| [(k.to_string(), v.to_string())].into()),
                        containers: vec![k8s_openapi::api::core::v1::Container {
                            name: "c".into(),
                            image: Some(image.into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn daemon(name: &str, node: &str, d: &DaemonSet) -> Arc<Pod> {
        let hash = template_hash(&d.spec.as_ref().unwrap().template, None);
        let mut p = pod(name).on(node).ready_at(0);
        p.metadata.labels = Some([(HASH_LABEL.to_string(), hash)].into());
        Arc::new(p)
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn one_pod_per_admitting_node() {
        let d = ds("a", Some(("role", "edge")));
        let nodes = vec![
            node("n1", &[("role", "edge")], vec![]),
            node("n2", &[("role", "core")], vec![]),
            node(
                "n3",
                &[("role", "edge")],
                vec![Taint {
                    key: "dedicated".into(),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                }],
            ),
            node(
                "n4",
                &[("role", "edge")],
                vec![Taint {
                    key: "node.kubernetes.io/unreachable".into(),
                    effect: "NoExecute".into(),
                    ..Default::default()
                }],
            ),
        ];
        let p = plan(&d, &nodes, &[daemon("on-n2", "n2", &d)], at(10));
        assert_eq!(
            p.create,
            ["n1", "n4"],
            "an unreachable node keeps its daemon"
        );
        assert_eq!(p.delete.len(), 1, "n2 no longer matches");
        assert_eq!(p.status.desired_number_scheduled, 2);
        assert_eq!(p.status.number_misscheduled, 1);
    }

    #[test]
    fn a_new_template_rolls_one_node_at_a_time() {
        let old = ds("a", None);
        let new = ds("b", None);
        let nodes = vec![
            node("n1", &[], vec![]),
            node("n2", &[], vec![]),
            node("n3", &[], vec![]),
        ];
        let pods = vec![
            daemon("p1", "n1", &old),
            daemon("p2", "n2", &old),
            daemon("p3", "n3", &old),
        ];
        let p = plan(&new, &nodes, &pods, at(10));
        assert_eq!(p.delete.len(), 1, "maxUnavailable 1");
        assert!(p.create.is_empty());
        // n1 replaced and not ready yet: nothing else goes.
        let mut fresh = pod("p1b").on("n1");
        fresh.metadata.labels = Some(
            [(
                HASH_LABEL.to_string(),
                template_hash(&new.spec.as_ref().unwrap().template, None),
            )]
            .into(),
        );
        let pods = vec![
            Arc::new(fresh),
            daemon("p2", "n2", &old),
            daemon("p3", "n3", &old),
        ];
        let p = plan(&new, &nodes, &pods, at(10));
        assert!(p.delete.is_empty());
        assert_eq!(p.status.updated_number_scheduled, Some(1));
        assert_eq!(p.status.number_unavailable, Some(1));
    }

    #[test]
    fn duplicates_and_failed_pods_are_removed() {
        let d = ds("a", None);
        let nodes = vec![node("n1", &[], vec![])];
        let mut failed = (*daemon("f", "n1", &d)).clone();
        failed.status.as_mut().unwrap().phase = Some("Failed".into());
        let pods = vec![
            daemon("a", "n1", &d),
            Arc::new(pod("b").on("n1").created_at(5).running()),
            Arc::new(failed),
        ];
        let p = plan(&d, &nodes, &pods, at(10));
        let names: Vec<_> = p
            .delete
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["f", "b"]);
    }
}
