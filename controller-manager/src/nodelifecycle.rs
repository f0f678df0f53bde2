//! Node lifecycle: nodes that stop renewing their Lease are marked unreachable, and pods on
//! nodes with `NoExecute` taints are evicted once their tolerations run out.
//!
//! - A node's heartbeat is its Lease in `kube-node-lease`. As in leader election, what
//!   counts is when *this controller* saw the renew time change, by its own monotonic clock
//!   (a node's clock is never compared with ours). A node not heard from for
//!   `node_monitor_grace_period` (40 s) gets every condition set to `Unknown` and the
//!   `node.kubernetes.io/unreachable` taints (`NoSchedule`, and `NoExecute` stamped with the
//!   time it was added). A node whose agent reports `Ready=False` gets the `not-ready` ones.
//!   Both go when the node is healthy again.
//! - Eviction (Kubernetes' taint manager): a pod on a node with a `NoExecute` taint it does
//!   not tolerate is deleted; one that tolerates it for `tolerationSeconds` is deleted that
//!   long after the taint was added. A pod with no toleration for `unreachable` or
//!   `not-ready` tolerates them for `default_toleration` (300 s; what Kubernetes'
//!   `DefaultTolerationSeconds` admission gives every pod).
//! - Fencing (on by default): node agents stop their own pods when they have not renewed
//!   their Lease for `fence_after` = grace period - 10 s (see the node agent's `--fence-after`).
//!   So when this controller declares a node unreachable, the pods there are already stopped,
//!   and evictions from it are *forced* deletions: the pod objects go at once and their
//!   owners' replacements can start elsewhere with no risk of two copies running. Without
//!   fencing the deletions are graceful and the pods stay `Terminating` until the node
//!   returns, as in Kubernetes.
//! - Pods bound to a Node object that was deleted are deleted (Kubernetes' pod GC).
//!
//! [`node_plan`] and [`evictions`] decide purely; [`reconcile`] applies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use serde_json::json;
use tokio::time::Instant;

use crate::events::Kind;
use crate::runtime::{self, Action, Change, Informer, Key, Queue, Synced};
use crate::{Ctx, Error, Result};

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// When each node's Lease was last seen to change, by this process's clock.
#[derive(Debug, Default)]
pub struct Heartbeats {
    seen: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

impl Heartbeats {
    /// Records a Lease; true when its renew time changed (or it is new).
    pub fn observe(&self, lease: &Lease) -> bool {
        let node = lease.metadata.name.clone().unwrap_or_default();
        let renew = lease
            .spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.to_string());
        let mut seen = self.seen.lock().expect("heartbeats lock");
        match seen.get(&node) {
            Some((r, _)) if *r == renew => false,
            _ => {
                seen.insert(node, (renew, Instant::now()));
                true
            }
        }
    }

    /// When the node was last heard from; a node never heard from counts from now, so a
    /// restarted controller gives every node a full grace period.
    pub fn last(&self, node: &str) -> Instant {
        let mut seen = self.seen.lock().expect("heartbeats lock");
        seen.entry(node.to_string())
            .or_insert((None, Instant::now()))
            .1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Its agent says `Ready=False`.
    NotReady,
    /// Not heard from for the grace period.
    Unreachable,
}

pub fn health(node: &Node, silent_for: Duration, grace: Duration) -> Health {
    if silent_for >= grace {
        return Health::Unreachable;
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    if ready == Some("False") {
        Health::NotReady
    } else {
        Health::Healthy
    }
}

/// What to change on a node.
#[derive(Debug, Default, PartialEq)]
pub struct NodePlan {
    /// The whole new taint list, when it changes.
    pub taints: Option<Vec<Taint>>,
    /// The conditions with every status `Unknown`, when the node just went silent.
    pub conditions: Option<Vec<NodeCondition>>,
}

fn taint(key: &str, effect: &str, now: Option<Timestamp>) -> Taint {
    Taint {
        key: key.into(),
        effect: effect.into(),
        time_added: now.map(Time),
        value: None,
    }
}

/// Decides the node's taints and conditions for its health.
pub fn node_plan(node: &Node, health: Health, now: Timestamp) -> NodePlan {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let wanted_key = match health {
        Health::Healthy => None,
        Health::NotReady => Some(NOT_READY),
        Health::Unreachable => Some(UNREACHABLE),
    };
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| {
            let ours = t.key == UNREACHABLE || t.key == NOT_READY;
            !ours || Some(t.key.as_str()) == wanted_key
        })
        .cloned()
        .collect();
    if let Some(key) = wanted_key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !taints.iter().any(|t| t.key == key && t.effect == effect) {
                let stamp = (effect == "NoExecute").then_some(now);
                taints.push(taint(key, effect, stamp));
            }
        }
    }
    let mut plan = NodePlan::default();
    if taints != current {
        plan.taints = Some(taints);
    }
    if health == Health::Unreachable {
        let conds = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let mut changed = false;
        let mut new: Vec<NodeCondition> = conds
            .into_iter()
            .map(|mut c| {
                if c.status != "Unknown" {
                    changed = true;
                    c.status = "Unknown".into();
                    c.reason = Some("NodeStatusUnknown".into());
                    c.message = Some("Kubelet stopped posting node status.".into());
                    c.last_transition_time = Some(Time(now));
                }
                c
            })
            .collect();
        if !new.iter().any(|c| c.type_ == "Ready") {
            changed = true;
            new.push(NodeCondition {
                type_: "Ready".into(),
                status: "Unknown".into(),
                reason: Some("NodeStatusNeverUpdated".into()),
                message: Some("Kubelet never posted node status.".into()),
                last_transition_time: Some(Time(now)),
                ..Default::default()
            });
        }
        if changed {
            plan.conditions = Some(new);
        }
    }
    plan
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect_ok = t
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    if !effect_ok {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        _ => {
            key == taint.key
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

/// How long `pod` may stay on a node with `taint` (NoExecute): `None` forever.
pub fn toleration_for(pod: &Pod, taint: &Taint, default: Duration) -> Option<Duration> {
    let tolerations: Vec<&Toleration> = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| tolerates(t, taint))
        .collect();
    if tolerations.is_empty() {
        return Some(if taint.key == UNREACHABLE || taint.key == NOT_READY {
            default
        } else {
            Duration::ZERO
        });
    }
    if tolerations.iter().any(|t| t.toleration_seconds.is_none()) {
        return None;
    }
    tolerations
        .iter()
        .filter_map(|t| t.toleration_seconds)
        .min()
        .map(|s| Duration::from_secs(s.max(0) as u64))
}

/// The pods to evict now from a node with `taints`, and when to look again.
pub fn evictions(
    pods: &[Arc<Pod>],
    taints: &[Taint],
    now: Timestamp,
    default: Duration,
) -> (Vec<Arc<Pod>>, Option<Duration>) {
    let mut evict = Vec::new();
    let mut next: Option<Duration> = None;
    for p in pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let mut due: Option<Timestamp> = None;
        for t in taints.iter().filter(|t| t.effect == "NoExecute") {
            let Some(allowed) = toleration_for(p, t, default) else {
                continue;
            };
            let added = t.time_added.as_ref().map_or(now, |a| a.0);
            let at = added
                .checked_add(jiff::SignedDuration::try_from(allowed).unwrap_or_default())
                .unwrap_or(added);
            due = Some(due.map_or(at, |d| d.min(at)));
        }
        let Some(due) = due else { continue };
        if due <= now {
            evict.push(p.clone());
        } else {
            let wait = Duration::from_millis((due.as_millisecond() - now.as_millisecond()) as u64);
            next = Some(next.map_or(wait, |n| n.min(wait)));
        }
    }
    (evict, next)
}

/// One pass over one node.
pub async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action> {
    let key = Key::of(node.as_ref());
    let cfg = &ctx.config;
    let silent = ctx.heartbeats.last(&key.name).elapsed();
    let health = health(&node, silent, cfg.node_monitor_grace_period);
    let now = Timestamp::now();
    let plan = node_plan(&node, health, now);
    let api: Api<Node> = Api::all(ctx.client.clone());
    if let Some(conds) = &plan.conditions {
        tracing::warn!(node = %key, silent_s = silent.as_secs(), "node stopped renewing its lease; marking it unreachable");
        ctx.events.object(
            crate::reference(node.as_ref()),
            Kind::Normal,
            "NodeNotReady",
            format!("Node {} status is now: NodeNotReady", key.name),
        );
        api.patch_status(
            &key.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": conds}})),
        )
        .await
        .map_err(|e| Error::api("marking node unknown", &key, e))?;
    }
    let taints = plan
        .taints
        .clone()
        .or_else(|| node.spec.as_ref().and_then(|s| s.taints.clone()))
        .unwrap_or_default();
    if let Some(t) = &plan.taints {
        let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": t}});
        match api
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {}
            // Changed meanwhile: the change event brings us back.
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(Action::AwaitChange),
            Err(e) => return Err(Error::api("tainting node", &key, e)),
        }
    }
    let pods = ctx.pods.indexed(&key.name);
    let (evict, next) = evictions(&pods, &taints, now, cfg.default_unreachable_toleration);
    let force = cfg.fencing && health == Health::Unreachable;
    for p in &evict {
        evict_pod(&ctx, p, force).await?;
    }
    if force {
        // Fenced pods already being deleted gracefully will never hear from their agent.
        for p in pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
        {
            evict_pod(&ctx, p, true).await?;
        }
    }
    let mut requeue = cfg.node_monitor_period;
    if let Some(n) = next {
        requeue = requeue.min(n + Duration::from_millis(10));
    }
    Ok(Action::Requeue(requeue))
}

async fn evict_pod(ctx: &Ctx, p: &Pod, force: bool) -> Result<()> {
    let key = Key::of(p);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.namespace);
    if p.metadata.deletion_timestamp.is_none() {
        tracing::info!(pod = %key, force, "evicting pod from tainted node");
        ctx.events.pod(
            p,
            None,
            Kind::Normal,
            "TaintManagerEviction",
            format!("Marking for deletion Pod {key}"),
        );
    }
    let dp = DeleteParams {
        grace_period_seconds: force.then_some(0),
        preconditions: Some(Preconditions {
            uid: p.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&key.name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(Error::api("evicting pod", &key, e)),
    }
}

/// The pod index this controller needs: pods by node name.
pub fn pod_node(p: &Pod) -> Option<String> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

/// Wires the controller: nodes are looked at when they change, when their Lease is renewed,
/// and every `node_monitor_period`; pods of deleted nodes are deleted.
pub fn register(
    ctx: &Arc<Ctx>,
    nodes: &Informer<Node>,
    leases: &Informer<Lease>,
) -> Vec<BoxFuture<'static, ()>> {
    let queue = Queue::new("node-lifecycle");
    {
        let q = queue.clone();
        let ctx2 = ctx.clone();
        nodes.on_change(move |c| match c {
            Change::Applied { .. } => q.add(Key::of(c.object())),
            Change::Deleted(n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                let ctx = ctx2.clone();
                tokio::spawn(async move {
                    for p in ctx.pods.indexed(&name) {
                        tracing::info!(pod = %Key::of(p.as_ref()), node = %name, "deleting pod of a deleted node");
                        if let Err(e) = evict_pod(&ctx, &p, true).await {
                            tracing::warn!(error = %e, "deleting pod of deleted node failed");
                        }
                    }
                });
            }
        });
    }
    {
        let q = queue.clone();
        let ctx2 = ctx.clone();
        leases.on_change(move |c| {
            if let Change::Applied { new, .. } = c {
                if ctx2.heartbeats.observe(new) {
                    q.add(Key::new(
                        "",
                        new.metadata.name.as_deref().unwrap_or_default(),
                    ));
                }
            }
        });
    }
    let synced: Vec<Arc<dyn Synced>> = vec![ctx.pods.clone()];
    vec![runtime::run(
        queue,
        ctx.nodes.clone(),
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
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};

    fn node(ready: &str, taints: Vec<Taint>) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some("n1".into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    const GRACE: Duration = Duration::from_secs(40);

    #[test]
    fn silence_past_the_grace_period_makes_a_node_unreachable() {
        let n = node("True", vec![]);
        assert_eq!(health(&n, Duration::from_secs(39), GRACE), Health::Healthy);
        assert_eq!(health(&n, GRACE, GRACE), Health::Unreachable);
        assert_eq!(
            health(&node("False", vec![]), Duration::ZERO, GRACE),
            Health::NotReady
        );
        let p = node_plan(&n, Health::Unreachable, at(100));
        let taints = p.taints.unwrap();
        assert_eq!(taints.len(), 2);
        assert!(taints.iter().any(|t| t.key == UNREACHABLE
            && t.effect == "NoExecute"
            && t.time_added == Some(Time(at(100)))));
        assert!(taints
            .iter()
            .any(|t| t.key == UNREACHABLE && t.effect == "NoSchedule"));
        let conds = p.conditions.unwrap();
        assert_eq!(conds[0].status, "Unknown");
        assert_eq!(conds[0].reason.as_deref(), Some("NodeStatusUnknown"));
    }

    #[test]
    fn taints_are_kept_stable_and_removed_when_healthy_again() {
        let tainted = node(
            "Unknown",
            vec![
                taint(UNREACHABLE, "NoSchedule", None),
                taint(UNREACHABLE, "NoExecute", Some(at(100))),
                taint("dedicated", "NoSchedule", None),
            ],
        );
        // Still unreachable: nothing changes (the time added stays).
        let p = node_plan(&tainted, Health::Unreachable, at(200));
        assert_eq!(p.taints, None);
        assert_eq!(p.conditions, None);
        // Heard from again: ours go, the others stay.
        let p = node_plan(&tainted, Health::Healthy, at(200));
        assert_eq!(
            p.taints.unwrap(),
            vec![taint("dedicated", "NoSchedule", None)]
        );
    }

    fn toleration(key: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
            value: None,
        }
    }

    fn with_tolerations(p: Pod, t: Vec<Toleration>) -> Pod {
        let mut p = p;
        p.spec.as_mut().unwrap().tolerations = Some(t);
        p
    }

    #[test]
    fn pods_are_evicted_when_their_toleration_runs_out() {
        let taints = vec![taint(UNREACHABLE, "NoExecute", Some(at(1000)))];
        let default = Duration::from_secs(300);
        let pods = vec![
            Arc::new(pod("default")),
            Arc::new(with_tolerations(
                pod("short"),
                vec![toleration(UNREACHABLE, Some(10))],
            )),
            Arc::new(with_tolerations(
                pod("forever"),
                vec![toleration(UNREACHABLE, None)],
            )),
            Arc::new(with_tolerations(
                pod("any"),
                vec![Toleration {
                    operator: Some("Exists".into()),
                    ..Default::default()
                }],
            )),
        ];
        let names = |v: &[Arc<Pod>]| {
            v.iter()
                .map(|p| p.metadata.name.clone().unwrap())
                .collect::<Vec<_>>()
        };
        let (now, next) = evictions(&pods, &taints, at(1005), default);
        assert!(now.is_empty());
        assert_eq!(next, Some(Duration::from_secs(5)));
        let (now, next) = evictions(&pods, &taints, at(1010), default);
        assert_eq!(names(&now), ["short"]);
        assert_eq!(next, Some(Duration::from_secs(290)));
        let (now, _) = evictions(&pods, &taints, at(1300), default);
        assert_eq!(names(&now), ["default", "short"]);
        // A taint nobody tolerates by default evicts at once.
        let other = vec![taint("maintenance", "NoExecute", Some(at(1000)))];
        let (now, _) = evictions(&pods, &other, at(1000), default);
        assert_eq!(names(&now), ["default", "short", "forever"]);
        // Pods already being deleted are left to it.
        let (now, _) = evictions(
            &[Arc::new(pod("gone").deleting())],
            &taints,
            at(2000),
            default,
        );
        assert!(now.is_empty());
    }
}
