//! The Deployment controller: one ReplicaSet per pod template (named `<deployment>-<hash>`,
//! its pods labelled `pod-template-hash`), rolled with RollingUpdate (`maxSurge`,
//! `maxUnavailable`) or Recreate, revisions in `deployment.kubernetes.io/revision` (so
//! `kubectl rollout history|undo` work: undo copies an old ReplicaSet's template back and this
//! controller finds that ReplicaSet again and scales it up), history trimmed to
//! `revisionHistoryLimit`, pause and resume, `minReadySeconds`, and the `Available` and
//! `Progressing` conditions with `progressDeadlineSeconds`.
//!
//! The rolling algorithm is Kubernetes' (`reconcileNewReplicaSet`, `reconcileOldReplicaSets`)
//! with one change that makes its bounds hold at every instant rather than eventually: it
//! counts each ReplicaSet as the larger of its `replicas` and the active pods it still has
//! (a ReplicaSet just scaled down has not deleted its pods yet), and its available pods as
//! the smaller of `replicas` and the available pods the pod cache shows (a ReplicaSet's status
//! lags behind its pods). So `maxSurge` bounds the pods that exist and `maxUnavailable` the
//! pods that are available, not only the ReplicaSets' numbers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::Api;
use serde_json::{json, Value};

use crate::events::Kind;
use crate::pods::{self, controller_ref, is_active, selector_matches};
use crate::runtime::{self, controller_uid, Action, Informer, Key, Queue, Synced};
use crate::{podcontrol, Ctx, Error, Result};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";

/// Annotations of a Deployment that are not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED_REPLICAS,
    MAX_REPLICAS,
];

/// One ReplicaSet as the plan sees it: its object and what its pods are doing.
#[derive(Debug, Clone)]
pub struct RsView {
    pub rs: Arc<ReplicaSet>,
    /// Pods neither terminal nor being deleted.
    pub active: i32,
    pub ready: i32,
    /// Ready for `minReadySeconds`.
    pub available: i32,
    /// Pods not yet terminal, counting those being deleted (Recreate waits for them).
    pub running: i32,
}

impl RsView {
    pub fn of(rs: Arc<ReplicaSet>, pods: &[Arc<Pod>], min_ready: i64, now: Timestamp) -> Self {
        let mut v = RsView {
            rs,
            active: 0,
            ready: 0,
            available: 0,
            running: 0,
        };
        for p in pods {
            if !pods::is_terminal(p) {
                v.running += 1;
            }
            if !is_active(p) {
                continue;
            }
            v.active += 1;
            if pods::is_ready(p) {
                v.ready += 1;
                if pods::is_available(p, min_ready, now) {
                    v.available += 1;
                }
            }
        }
        v
    }

    fn replicas(&self) -> i32 {
        self.rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
    }

    /// Pods this ReplicaSet has or is about to have.
    fn size(&self) -> i32 {
        self.replicas().max(self.active)
    }

    /// Available pods it will keep.
    fn kept_available(&self) -> i32 {
        self.replicas().min(self.available)
    }

    fn name(&self) -> &str {
        self.rs.metadata.name.as_deref().unwrap_or_default()
    }

    fn revision(&self) -> i64 {
        revision_of(&self.rs)
    }
}

pub fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// A change the controller wants.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Create(Box<ReplicaSet>),
    /// Set `replicas` (and the annotations) of an existing ReplicaSet.
    Scale {
        name: String,
        replicas: i32,
        annotations: BTreeMap<String, String>,
        min_ready_seconds: i32,
    },
    Delete {
        name: String,
        uid: String,
    },
}

#[derive(Debug, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub status: DeploymentStatus,
    /// The deployment's own revision annotation, when it must change.
    pub revision: Option<String>,
    pub events: Vec<(Kind, &'static str, String)>,
    pub requeue: Option<Duration>,
}

/// Kubernetes' `pod-template-hash`: FNV-1a of the template (and the collision count),
/// spelled in the alphabet of `rand.SafeEncodeString`.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Drops nulls, empty objects and empty arrays, so templates compare by meaning.
fn normalise(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, normalise(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normalise).collect()),
        other => other,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Whether two templates are the same but for the `pod-template-hash` label.
pub fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.remove(HASH_LABEL);
        }
        normalise(serde_json::to_value(t).unwrap_or(Value::Null))
    };
    strip(a) == strip(b)
}

/// Resolves an int-or-percent against `total`, rounding up or down.
fn resolve(v: Option<&IntOrString>, default: &str, total: i32, round_up: bool) -> i32 {
    let s = match v {
        Some(IntOrString::Int(i)) => return (*i).max(0),
        Some(IntOrString::String(s)) => s.as_str(),
        None => default,
    };
    let Some(pct) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
        return s.parse().unwrap_or(0);
    };
    let x = pct * i64::from(total);
    (if round_up { (x + 99) / 100 } else { x / 100 }) as i32
}

/// `(maxSurge, maxUnavailable)` of a RollingUpdate deployment, as Kubernetes resolves them:
/// surge rounds up, unavailability down, and both zero means one unavailable.
pub fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let replicas = replicas(d);
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), "25%", replicas, true);
    let mut unavailable = resolve(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        "25%",
        replicas,
        false,
    );
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas))
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

fn paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

fn min_ready(d: &Deployment) -> i32 {
    d.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// The ReplicaSet a deployment would create for its current template.
pub fn new_replicaset(d: &Deployment, revision: i64, replicas: i32) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let collision = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = template_hash(&spec.template, collision);
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.clone());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.clone());
    let name = d.metadata.name.clone().unwrap_or_default();
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: d.metadata.namespace.clone(),
            labels: meta.labels.clone(),
            annotations: Some(rs_annotations(d, revision, replicas)),
            owner_references: Some(vec![controller_ref(d)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

fn rs_annotations(d: &Deployment, revision: i64, _replicas: i32) -> BTreeMap<String, String> {
    let mut a: BTreeMap<String, String> = d
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (surge, _) = surge_and_unavailable(d);
    a.insert(REVISION.into(), revision.to_string());
    a.insert(DESIRED_REPLICAS.into(), replicas(d).to_string());
    a.insert(
        MAX_REPLICAS.into(),
        (replicas(d) + if is_recreate(d) { 0 } else { surge }).to_string(),
    );
    a
}

/// Decides one pass for `d` over the ReplicaSets it owns (none being deleted).
pub fn plan(d: &Deployment, owned: &[RsView], now: Timestamp) -> Plan {
    let mut plan = Plan::default();
    let spec = d.spec.clone().unwrap_or_default();
    let want = replicas(d);
    let (surge, max_unavailable) = if is_recreate(d) {
        (0, 0)
    } else {
        surge_and_unavailable(d)
    };

    // Oldest first: by revision, then creation.
    let mut all: Vec<RsView> = owned.to_vec();
    all.sort_by_key(|v| {
        (
            v.revision(),
            v.rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
        )
    });
    let new_idx = all.iter().position(|v| {
        v.rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| same_template(t, &spec.template))
    });
    let max_old_revision = all
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_idx)
        .map(|(_, v)| v.revision())
        .max()
        .unwrap_or(0);
    let next_revision = max_old_revision + 1;
    let deleting = d.metadata.deletion_timestamp.is_some();

    // The new ReplicaSet: found (its revision brought up to date) or to be created.
    let mut new: Option<RsView> = new_idx.map(|i| all.remove(i));
    let mut created = None;
    let mut scaled = false;
    let mut desired: BTreeMap<String, i32> = BTreeMap::new();
    if !deleting && !paused(d) {
        if new.is_none() {
            let initial = if is_recreate(d) {
                0
            } else {
                let current: i32 = all.iter().map(RsView::size).sum();
                (want + surge - current).clamp(0, want)
            };
            let rs = new_replicaset(d, next_revision, initial);
            created = Some(rs.metadata.name.clone().unwrap_or_default());
            plan.events.push((
                Kind::Normal,
                "ScalingReplicaSet",
                format!(
                    "Scaled up replica set {} from 0 to {initial}",
                    rs.metadata.name.as_deref().unwrap_or_default()
                ),
            ));
            plan.steps.push(Step::Create(Box::new(rs.clone())));
            new = Some(RsView {
                rs: Arc::new(rs),
                active: 0,
                ready: 0,
                available: 0,
                running: 0,
            });
            scaled = initial > 0;
        } else if let Some(n) = &new {
            if n.revision() < next_revision || n.revision() == 0 {
                desired.insert(n.name().to_string(), n.replicas());
            }
        }
    }
    let old: Vec<RsView> = all;

    // Scaling decisions, one kind per pass as Kubernetes does.
    if !deleting && created.is_none() {
        if paused(d) {
            // Paused: only follow a change of `replicas` when no rollout is under way.
            if let Some(n) = &new {
                if old.iter().all(|o| o.replicas() == 0) && n.replicas() != want {
                    desired.insert(n.name().to_string(), want);
                }
            }
        } else if is_recreate(d) {
            let active_old: Vec<&RsView> = old.iter().filter(|o| o.replicas() > 0).collect();
            if !active_old.is_empty() {
                for o in active_old {
                    desired.insert(o.name().to_string(), 0);
                }
            } else if old.iter().all(|o| o.running == 0) {
                if let Some(n) = &new {
                    if n.replicas() != want {
                        desired.insert(n.name().to_string(), want);
                    }
                }
            }
        } else if let Some(n) = &new {
            // reconcileNewReplicaSet
            let total: i32 = old.iter().map(RsView::size).sum::<i32>() + n.size();
            let new_target = if n.replicas() > want {
                want
            } else if total >= want + surge {
                n.replicas()
            } else {
                n.replicas() + (want + surge - total).min(want - n.replicas())
            };
            if new_target != n.replicas() {
                desired.insert(n.name().to_string(), new_target);
            } else {
                // reconcileOldReplicaSets
                let min_available = want - max_unavailable;
                let all_pods = total;
                let new_unavailable = n.replicas() - n.kept_available();
                let max_scaled_down = all_pods - min_available - new_unavailable;
                if max_scaled_down > 0 {
                    let mut budget = max_scaled_down;
                    let mut targets: BTreeMap<String, i32> = old
                        .iter()
                        .map(|o| (o.name().to_string(), o.replicas()))
                        .collect();
                    // Unhealthy replicas first: they hold nothing up.
                    for o in &old {
                        if budget == 0 {
                            break;
                        }
                        let t = targets.get_mut(o.name()).expect("target");
                        let unhealthy = *t - o.kept_available();
                        if unhealthy > 0 {
                            let n = unhealthy.min(budget);
                            *t -= n;
                            budget -= n;
                        }
                    }
                    // Then available ones, as far as availability allows.
                    let available: i32 = old
                        .iter()
                        .map(|o| targets[o.name()].min(o.available))
                        .sum::<i32>()
                        + n.kept_available();
                    let mut can = (available - min_available).max(0);
                    for o in &old {
                        if can == 0 {
                            break;
                        }
                        let t = targets.get_mut(o.name()).expect("target");
                        let n = (*t).min(can);
                        *t -= n;
                        can -= n;
                    }
                    for o in &old {
                        if targets[o.name()] != o.replicas() {
                            desired.insert(o.name().to_string(), targets[o.name()]);
                        }
                    }
                }
            }
        }
    }

    // Steps for the scale changes, with the annotations each ReplicaSet should carry.
    for v in old.iter().chain(new.iter()) {
        let name = v.name().to_string();
        let Some(target) = desired.get(&name).copied() else {
            continue;
        };
        if created.as_deref() == Some(name.as_str()) {
            continue;
        }
        let is_new = new.as_ref().is_some_and(|n| n.name() == name);
        let mut annotations = v.rs.metadata.annotations.clone().unwrap_or_default();
        if is_new {
            let rev = if v.revision() < next_revision {
                next_revision
            } else {
                v.revision()
            };
            annotations.extend(rs_annotations(d, rev, target));
        }
        if target != v.replicas() {
            scaled = true;
            let verb = if target > v.replicas() { "up" } else { "down" };
            plan.events.push((
                Kind::Normal,
                "ScalingReplicaSet",
                format!(
                    "Scaled {verb} replica set {name} from {} to {target}",
                    v.replicas()
                ),
            ));
        }
        plan.steps.push(Step::Scale {
            name,
            replicas: target,
            annotations,
            min_ready_seconds: if is_new {
                min_ready(d)
            } else {
                v.rs.spec
                    .as_ref()
                    .and_then(|s| s.min_ready_seconds)
                    .unwrap_or(0)
            },
        });
    }

    // The deployment's revision follows its new ReplicaSet's.
    if let Some(n) = &new {
        let rev = if created.is_some() || n.revision() < next_revision {
            next_revision
        } else {
            n.revision()
        };
        let current = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .cloned();
        if current.as_deref() != Some(rev.to_string().as_str()) {
            plan.revision = Some(rev.to_string());
        }
    }

    // Status, from the pods.
    let views: Vec<&RsView> = old.iter().chain(new.iter()).collect();
    let total_active: i32 = views.iter().map(|v| v.active).sum();
    let ready: i32 = views.iter().map(|v| v.ready).sum();
    let available: i32 = views.iter().map(|v| v.available).sum();
    let updated = new.as_ref().map_or(0, |n| n.active);
    let old_status = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(total_active),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((want - available).max(0)),
        collision_count: old_status.collision_count,
        conditions: old_status.conditions.clone(),
    };
    let now_t = Time(now);
    let min_available = want - max_unavailable;
    if available >= min_available {
        set_condition(
            &mut status,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            &now_t,
            false,
        );
    } else {
        set_condition(
            &mut status,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            &now_t,
            false,
        );
    }
    let new_name = new
        .as_ref()
        .map(|n| n.name().to_string())
        .unwrap_or_default();
    let complete = updated == want
        && total_active == want
        && available == want
        && old.iter().all(|o| o.active == 0 && o.replicas() == 0)
        && new.is_some();
    let progressed = scaled
        || updated > old_status.updated_replicas.unwrap_or(0)
        || total_active < old_status.replicas.unwrap_or(0)
        || ready > old_status.ready_replicas.unwrap_or(0)
        || available > old_status.available_replicas.unwrap_or(0);
    if paused(d) {
        set_condition(
            &mut status,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            &now_t,
            true,
        );
    } else if complete {
        let first = !has_reason(&status, "NewReplicaSetAvailable");
        set_condition(
            &mut status,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            &now_t,
            progressed || first,
        );
    } else if let Some(c) = &created {
        set_condition(
            &mut status,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{c}\""),
            &now_t,
            true,
        );
    } else if progressed || !has_condition(&status, "Progressing") {
        set_condition(
            &mut status,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
            &now_t,
            true,
        );
    } else if let Some(deadline) = spec.progress_deadline_seconds {
        let last = progress_time(&status);
        let since = last.map_or(0, |t| now.as_second() - t.as_second());
        if since >= i64::from(deadline) {
            if !has_reason(&status, "ProgressDeadlineExceeded") {
                plan.events.push((
                    Kind::Warning,
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                ));
            }
            set_condition(
                &mut status,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                &now_t,
                false,
            );
        } else if !deleting {
            plan.requeue = Some(Duration::from_secs(
                (i64::from(deadline) - since + 1) as u64,
            ));
        }
    }

    // History: once complete, old empty ReplicaSets beyond the limit go, oldest first.
    if complete && !deleting {
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let empty: Vec<&RsView> = old
            .iter()
            .filter(|o| {
                o.replicas() == 0
                    && o.running == 0
                    && o.rs.status.as_ref().map_or(0, |s| s.replicas) == 0
            })
            .collect();
        if empty.len() > limit {
            for o in &empty[..empty.len() - limit] {
                plan.steps.push(Step::Delete {
                    name: o.name().to_string(),
                    uid: o.rs.metadata.uid.clone().unwrap_or_default(),
                });
            }
        }
    }

    // Pods still becoming available (minReadySeconds): look again when they do.
    let needs_look = views.iter().any(|v| v.ready > v.available);
    if needs_look && min_ready(d) > 0 {
        let d = Duration::from_secs(1);
        plan.requeue = Some(plan.requeue.map_or(d, |r| r.min(d)));
    }
    plan.status = status;
    plan
}

fn has_condition(s: &DeploymentStatus, type_: &str) -> bool {
    s.conditions.iter().flatten().any(|c| c.type_ == type_)
}

fn has_reason(s: &DeploymentStatus, reason: &str) -> bool {
    s.conditions
        .iter()
        .flatten()
        .any(|c| c.reason.as_deref() == Some(reason))
}

fn progress_time(s: &DeploymentStatus) -> Option<Timestamp> {
    s.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
        .and_then(|c| c.last_update_time.as_ref())
        .map(|t| t.0)
}

/// Sets a condition, keeping its transition time while its status stays, and its update
/// time unless `touch`.
fn set_condition(
    s: &mut DeploymentStatus,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: &Time,
    touch: bool,
) {
    let conds = s.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Some(now.clone());
            c.last_update_time = Some(now.clone());
        } else if touch || c.reason.as_deref() != Some(reason) {
            c.last_update_time = Some(now.clone());
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(message);
        return;
    }
    conds.push(DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(now.clone()),
        last_update_time: Some(now.clone()),
    });
}

fn status_changed(old: Option<&DeploymentStatus>, new: &DeploymentStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &DeploymentStatus| {
        let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
        v = normalise(v);
        // Zero counts are omitted by some writers.
        if let Value::Object(m) = &mut v {
            m.retain(|_, x| x != &json!(0));
        }
        v
    };
    strip(old) != strip(new)
}

/// One pass over one Deployment.
pub async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action> {
    let key = Key::of(d.as_ref());
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let selector = d.spec.as_ref().map(|s| &s.selector);

    // Claim: adopt orphans the selector matches, release ReplicaSets it no longer matches.
    let mut owned = Vec::new();
    for rs in ctx.replicasets.in_namespace(&key.namespace) {
        let matches = selector_matches(selector, rs.metadata.labels.as_ref());
        match controller_uid(rs.as_ref()) {
            Some(u) if u == uid => {
                if matches {
                    owned.push(rs);
                } else {
                    let refs: Vec<_> = rs
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .filter(|o| o.uid != uid)
                        .cloned()
                        .collect();
                    podcontrol::set_owners(&rs_api, rs.as_ref(), refs).await?;
                }
            }
            None if matches
                && d.metadata.deletion_timestamp.is_none()
                && rs.metadata.deletion_timestamp.is_none() =>
            {
                let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                refs.push(controller_ref(d.as_ref()));
                podcontrol::set_owners(&rs_api, rs.as_ref(), refs).await?;
                owned.push(rs);
            }
            _ => {}
        }
    }
    let now = Timestamp::now();
    let min_ready = i64::from(min_ready(&d));
    let views: Vec<RsView> = owned
        .into_iter()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .map(|rs| {
            let pods = ctx
                .pods
                .owned_by(rs.metadata.uid.as_deref().unwrap_or_default());
            let rs_min_ready = rs
                .spec
                .as_ref()
                .and_then(|s| s.min_ready_seconds)
                .map_or(min_ready, i64::from);
            RsView::of(rs, &pods, rs_min_ready, now)
        })
        .collect();
    let plan = plan(&d, &views, now);

    for step in &plan.steps {
        match step {
            Step::Create(rs) => match rs_api.create(&PostParams::default(), rs).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // Same name: ours not yet in the cache, or a hash collision.
                    let name = rs.metadata.name.as_deref().unwrap_or_default();
                    let existing = rs_api
                        .get(name)
                        .await
                        .map_err(|e| Error::api("reading replicaset", &key, e))?;
                    let same = existing
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.as_ref())
                        .zip(d.spec.as_ref().map(|s| &s.template))
                        .is_some_and(|(a, b)| same_template(a, b));
                    if !same {
                        let count = d
                            .status
                            .as_ref()
                            .and_then(|s| s.collision_count)
                            .unwrap_or(0)
                            + 1;
                        patch_status(&ctx, &key, json!({"status": {"collisionCount": count}}))
                            .await?;
                    }
                    return Ok(Action::AwaitChange);
                }
                Err(e) => return Err(Error::api("creating replicaset for deployment", &key, e)),
            },
            Step::Scale {
                name,
                replicas,
                annotations,
                min_ready_seconds,
            } => {
                let patch = json!({
                    "metadata": {"annotations": annotations},
                    "spec": {"replicas": replicas, "minReadySeconds": min_ready_seconds},
                });
                match rs_api
                    .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(Error::api("scaling replicaset of deployment", &key, e)),
                }
            }
            Step::Delete { name, uid } => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match rs_api.delete(name, &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(Error::api("deleting old replicaset", &key, e)),
                }
            }
        }
    }
    for (kind, reason, message) in &plan.events {
        ctx.events
            .object(crate::reference(d.as_ref()), *kind, reason, message.clone());
    }
    if let Some(rev) = &plan.revision {
        let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &key.namespace);
        let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
        match api
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(Error::api("annotating deployment", &key, e)),
        }
    }
    if status_changed(d.status.as_ref(), &plan.status) {
        patch_status(&ctx, &key, json!({"status": plan.status})).await?;
    }
    Ok(plan
        .requeue
        .map(Action::Requeue)
        .unwrap_or(Action::AwaitChange))
}

async fn patch_status(ctx: &Ctx, key: &Key, patch: Value) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &key.namespace);
    match api
        .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::api("updating status of deployment", key, e)),
    }
}

/// Wires the controller: a deployment is looked at when it changes, when one of its
/// ReplicaSets changes, and when a pod of one of its ReplicaSets changes.
pub fn register(
    ctx: &Arc<Ctx>,
    deployments: &Informer<Deployment>,
    replicasets: &Informer<ReplicaSet>,
    pods: &Informer<Pod>,
) -> Vec<BoxFuture<'static, ()>> {
    let queue = Queue::new("deployment");
    deployments.on_change(runtime::enqueue_self(&queue));
    replicasets.on_change(runtime::enqueue_owner(&queue, "Deployment"));
    {
        let queue = queue.clone();
        let rs_cache = ctx.replicasets.clone();
        pods.on_change(move |c| {
            let pod = c.object();
            let Some(ns) = pod.metadata.namespace.as_deref() else {
                return;
            };
            for o in pod.metadata.owner_references.iter().flatten() {
                if o.controller != Some(true) || o.kind != "ReplicaSet" {
                    continue;
                }
                if let Some(rs) = rs_cache.get(&Key::new(ns, &o.name)) {
                    for ro in rs.metadata.owner_references.iter().flatten() {
                        if ro.controller == Some(true) && ro.kind == "Deployment" {
                            queue.add(Key::new(ns, &ro.name));
                        }
                    }
                }
            }
        });
    }
    let synced: Vec<Arc<dyn Synced>> = vec![ctx.replicasets.clone(), ctx.pods.clone()];
    vec![runtime::run(
        queue,
        ctx.deployments.clone(),
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
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn labels() -> BTreeMap<String, String> {
        [("app".to_string(), "web".to_string())].into()
    }

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn deployment(replicas: i32, image: &str, surge: i32, unavailable: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("d-uid".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(labels()),
                    ..Default::default()
                },
                template: template(image),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(surge)),
                        max_unavailable: Some(IntOrString::Int(unavailable)),
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// A ReplicaSet of `d`'s template with `replicas`, whose pods are `active` and
    /// `available`, at `revision`.
    fn rs_of(d: &Deployment, revision: i64, replicas: i32, active: i32, available: i32) -> RsView {
        RsView {
            rs: Arc::new(new_replicaset(d, revision, replicas)),
            active,
            ready: available,
            available,
            running: active,
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(10_000).unwrap()
    }

    fn scales(p: &Plan) -> Vec<(String, i32)> {
        p.steps
            .iter()
            .filter_map(|s| match s {
                Step::Scale { name, replicas, .. } => Some((name.clone(), *replicas)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn percentages_resolve_as_kubernetes_does() {
        let mut d = deployment(10, "a", 0, 0);
        let ru = d
            .spec
            .as_mut()
            .unwrap()
            .strategy
            .as_mut()
            .unwrap()
            .rolling_update
            .as_mut()
            .unwrap();
        ru.max_surge = Some(IntOrString::String("25%".into()));
        ru.max_unavailable = Some(IntOrString::String("25%".into()));
        assert_eq!(surge_and_unavailable(&d), (3, 2));
        assert_eq!(surge_and_unavailable(&deployment(10, "a", 0, 0)), (0, 1));
    }

    #[test]
    fn a_new_deployment_creates_its_first_replicaset_at_full_size() {
        let d = deployment(3, "a", 1, 0);
        let p = plan(&d, &[], now());
        let Step::Create(rs) = &p.steps[0] else {
            panic!("{:?}", p.steps)
        };
        assert_eq!(rs.spec.as_ref().unwrap().replicas, Some(3));
        let hash = template_hash(&d.spec.as_ref().unwrap().template, None);
        assert_eq!(
            rs.metadata.name.as_deref(),
            Some(format!("web-{hash}").as_str())
        );
        assert_eq!(
            rs.metadata.annotations.as_ref().unwrap()[REVISION],
            "1".to_string()
        );
        assert_eq!(p.revision.as_deref(), Some("1"));
    }

    #[test]
    fn a_rollout_surges_first_then_scales_the_old_down_as_pods_become_available() {
        let old_d = deployment(10, "a", 3, 2);
        let d = deployment(10, "b", 3, 2);
        // Step 1: the new ReplicaSet is created with the surge.
        let old = rs_of(&old_d, 1, 10, 10, 10);
        let p = plan(&d, std::slice::from_ref(&old), now());
        let Step::Create(new_rs) = &p.steps[0] else {
            panic!("{:?}", p.steps)
        };
        assert_eq!(new_rs.spec.as_ref().unwrap().replicas, Some(3));
        assert_eq!(p.revision.as_deref(), Some("2"));
        // Step 2: nothing new is available; the old may lose maxUnavailable.
        let new = RsView {
            rs: Arc::new(new_replicaset(&d, 2, 3)),
            active: 3,
            ready: 0,
            available: 0,
            running: 3,
        };
        let p = plan(&d, &[old.clone(), new.clone()], now());
        assert_eq!(scales(&p), [(old.name().to_string(), 8)]);
        // Step 3: the old ReplicaSet still has its 10 pods: no more surge yet.
        let old8 = RsView {
            rs: Arc::new({
                let mut r = (*old.rs).clone();
                r.spec.as_mut().unwrap().replicas = Some(8);
                r
            }),
            ..old.clone()
        };
        let p = plan(&d, &[old8.clone(), new.clone()], now());
        assert!(scales(&p).is_empty(), "{:?}", scales(&p));
        // Step 4: its surplus pods gone, the new ReplicaSet may grow to 5.
        let old8_settled = RsView {
            active: 8,
            available: 8,
            ready: 8,
            running: 8,
            ..old8.clone()
        };
        let p = plan(&d, &[old8_settled.clone(), new.clone()], now());
        assert_eq!(scales(&p), [(new.name().to_string(), 5)]);
    }

    #[test]
    fn stale_availability_never_takes_the_old_below_the_minimum() {
        // The old ReplicaSet was scaled to 8 but the cache still shows 10 available pods;
        // counting at most `replicas` of them keeps the bound.
        let old_d = deployment(10, "a", 3, 2);
        let d = deployment(10, "b", 3, 2);
        let mut old_rs = new_replicaset(&old_d, 1, 8);
        old_rs.spec.as_mut().unwrap().replicas = Some(8);
        let old = RsView {
            rs: Arc::new(old_rs),
            active: 10,
            ready: 10,
            available: 10,
            running: 10,
        };
        let new = RsView {
            rs: Arc::new(new_replicaset(&d, 2, 5)),
            active: 5,
            ready: 2,
            available: 2,
            running: 5,
        };
        let p = plan(&d, &[old, new], now());
        // 8 old available (of 10 shown) + 2 new = 10 available, minimum 8: down by 2.
        assert_eq!(scales(&p).first().map(|s| s.1), Some(6));
    }

    #[test]
    fn a_finished_rollout_is_complete_and_trims_history() {
        let mut d = deployment(2, "z", 1, 0);
        d.spec.as_mut().unwrap().revision_history_limit = Some(1);
        let mut views = Vec::new();
        for (i, img) in ["a", "b", "c"].iter().enumerate() {
            views.push(rs_of(&deployment(2, img, 1, 0), i as i64 + 1, 0, 0, 0));
        }
        views.push(rs_of(&d, 4, 2, 2, 2));
        let p = plan(&d, &views, now());
        let deleted: Vec<_> = p
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Delete { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(deleted, [views[0].name(), views[1].name()]);
        let prog = p
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Progressing")
            .unwrap();
        assert_eq!(prog.reason.as_deref(), Some("NewReplicaSetAvailable"));
        assert_eq!(p.status.updated_replicas, Some(2));
        assert_eq!(p.status.available_replicas, Some(2));
    }

    #[test]
    fn undo_finds_the_old_replicaset_and_gives_it_the_next_revision() {
        let d_a = deployment(2, "a", 1, 0);
        let d_b = deployment(2, "b", 1, 0);
        // Template back to "a": its ReplicaSet (revision 1) is the new one again.
        let a = rs_of(&d_a, 1, 0, 0, 0);
        let b = rs_of(&d_b, 2, 2, 2, 2);
        let p = plan(&d_a, &[a.clone(), b], now());
        assert!(!p.steps.iter().any(|s| matches!(s, Step::Create(_))));
        let Step::Scale {
            name,
            replicas,
            annotations,
            ..
        } = &p.steps[0]
        else {
            panic!("{:?}", p.steps)
        };
        assert_eq!(name, a.name());
        assert_eq!(*replicas, 1, "one surge pod");
        assert_eq!(annotations[REVISION], "3");
        assert_eq!(p.revision.as_deref(), Some("3"));
    }

    #[test]
    fn recreate_empties_the_old_before_starting_the_new() {
        let mut d = deployment(3, "b", 0, 0);
        d.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        });
        let mut d_a = d.clone();
        d_a.spec.as_mut().unwrap().template = template("a");
        let old = rs_of(&d_a, 1, 3, 3, 3);
        let p = plan(&d, std::slice::from_ref(&old), now());
        let Step::Create(rs) = &p.steps[0] else {
            panic!()
        };
        assert_eq!(rs.spec.as_ref().unwrap().replicas, Some(0));
        let new = rs_of(&d, 2, 0, 0, 0);
        let p = plan(&d, &[old.clone(), new.clone()], now());
        assert_eq!(scales(&p), [(old.name().to_string(), 0)]);
        // Scaled to zero but a pod is still terminating: wait.
        let old0 = RsView {
            rs: Arc::new(new_replicaset(&d_a, 1, 0)),
            active: 0,
            ready: 0,
            available: 0,
            running: 1,
        };
        let p = plan(&d, &[old0.clone(), new.clone()], now());
        assert!(scales(&p).is_empty());
        let gone = RsView { running: 0, ..old0 };
        let p = plan(&d, &[gone, new.clone()], now());
        assert_eq!(scales(&p), [(new.name().to_string(), 3)]);
    }

    #[test]
    fn a_paused_deployment_does_not_roll_and_a_stuck_one_times_out() {
        let old_d = deployment(2, "a", 1, 0);
        let mut d = deployment(2, "b", 1, 0);
        d.spec.as_mut().unwrap().paused = Some(true);
        let p = plan(&d, &[rs_of(&old_d, 1, 2, 2, 2)], now());
        assert!(p.steps.is_empty());

        let mut d = deployment(2, "b", 1, 0);
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(60);
        d.status = Some(DeploymentStatus {
            updated_replicas: Some(1),
            replicas: Some(3),
            ready_replicas: Some(2),
            available_replicas: Some(2),
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "True".into(),
                reason: Some("ReplicaSetUpdated".into()),
                last_update_time: Some(Time(Timestamp::from_second(10_000 - 61).unwrap())),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let old = rs_of(&old_d, 1, 2, 2, 2);
        let new = RsView {
            rs: Arc::new(new_replicaset(&d, 2, 1)),
            active: 1,
            ready: 0,
            available: 0,
            running: 1,
        };
        let p = plan(&d, &[old, new], now());
        let prog = p
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Progressing")
            .unwrap();
        assert_eq!(prog.reason.as_deref(), Some("ProgressDeadlineExceeded"));
        assert_eq!(prog.status, "False");
    }
}
