//! The ReplicaSet controller: keeps `replicas` active pods, owns them by a controller
//! reference, adopts orphans its selector matches and releases pods it no longer matches,
//! and reports `replicas`, `fullyLabeledReplicas`, `readyReplicas` and `availableReplicas`.
//!
//! [`plan`] decides from the ReplicaSet and the pods the cache holds; [`reconcile`] applies.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

use crate::pods::{self, controller_ref, deletion_order, is_active, selector_matches};
use crate::runtime::{controller_uid, Action, Key};
use crate::{podcontrol, Ctx, Error, Result};

/// Most pods created or deleted in one pass (Kubernetes: 500).
pub const BURST: usize = 500;

/// What one pass of the ReplicaSet controller wants.
#[derive(Debug, Default)]
pub struct Plan {
    pub adopt: Vec<Arc<Pod>>,
    pub release: Vec<Arc<Pod>>,
    pub create: usize,
    pub delete: Vec<Arc<Pod>>,
    pub status: ReplicaSetStatus,
    /// When a ready pod becomes available (minReadySeconds), look again.
    pub requeue: Option<Duration>,
}

/// Decides for `rs` given `candidates`: the pods it owns plus the pods of its namespace
/// without a controller. `trust_counts` is false while earlier creates or deletes are not in
/// the cache yet; then nothing is created or deleted.
pub fn plan(rs: &ReplicaSet, candidates: &[Arc<Pod>], trust_counts: bool, now: Timestamp) -> Plan {
    let mut plan = Plan::default();
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let spec = rs.spec.as_ref();
    let selector = spec.map(|s| &s.selector);
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let mut mine: Vec<Arc<Pod>> = Vec::new();
    for p in candidates {
        let matches = selector_matches(selector, p.metadata.labels.as_ref());
        match controller_uid(p.as_ref()) {
            Some(u) if u == uid => {
                if matches {
                    mine.push(p.clone());
                } else if p.metadata.deletion_timestamp.is_none() {
                    plan.release.push(p.clone());
                }
            }
            Some(_) => {}
            None => {
                if matches && !deleting && is_active(p) {
                    plan.adopt.push(p.clone());
                    mine.push(p.clone());
                }
            }
        }
    }
    let mut active: Vec<Arc<Pod>> = mine.into_iter().filter(|p| is_active(p)).collect();
    let want = spec.and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
    if trust_counts && !deleting {
        if active.len() < want {
            plan.create = (want - active.len()).min(BURST);
        } else if active.len() > want {
            active.sort_by(|a, b| deletion_order(a, b));
            plan.delete = active[..(active.len() - want).min(BURST)].to_vec();
        }
    }
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0) as i64;
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut status = ReplicaSetStatus {
        replicas: active.len() as i32,
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let mut fully = 0;
    let mut ready = 0;
    let mut available = 0;
    for p in &active {
        let labels = p.metadata.labels.as_ref();
        if template_labels
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        {
            fully += 1;
        }
        if pods::is_ready(p) {
            ready += 1;
            if pods::is_available(p, min_ready, now) {
                available += 1;
            } else if let Some(s) = pods::until_available(p, min_ready, now) {
                let d = Duration::from_secs(s as u64);
                plan.requeue = Some(plan.requeue.map_or(d, |r| r.min(d)));
            }
        }
    }
    status.fully_labeled_replicas = Some(fully);
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    plan.status = status;
    plan
}

fn status_changed(old: Option<&ReplicaSetStatus>, new: &ReplicaSetStatus) -> bool {
    let zero = |v: Option<i32>| v.unwrap_or(0);
    let Some(old) = old else { return true };
    old.replicas != new.replicas
        || zero(old.fully_labeled_replicas) != zero(new.fully_labeled_replicas)
        || zero(old.ready_replicas) != zero(new.ready_replicas)
        || zero(old.available_replicas) != zero(new.available_replicas)
        || old.observed_generation != new.observed_generation
}

/// One pass over one ReplicaSet.
pub async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action> {
    let key = Key::of(rs.as_ref());
    let ns = key.namespace.as_str();
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let mut candidates = ctx.pods.owned_by(&uid);
    candidates.extend(
        ctx.pods
            .in_namespace(ns)
            .into_iter()
            .filter(|p| controller_uid(p.as_ref()).is_none()),
    );
    let trust = ctx.expectations.satisfied(&uid);
    let plan = plan(&rs, &candidates, trust, Timestamp::now());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);

    for p in &plan.adopt {
        let mut refs = p.metadata.owner_references.clone().unwrap_or_default();
        refs.push(controller_ref(rs.as_ref()));
        podcontrol::set_owners(&pods, p, refs).await?;
    }
    for p in &plan.release {
        let refs: Vec<_> = p
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|o| o.uid != uid)
            .cloned()
            .collect();
        podcontrol::set_owners(&pods, p, refs).await?;
    }
    if plan.create > 0 {
        if let Some(template) = rs.spec.as_ref().and_then(|s| s.template.as_ref()) {
            let pod = pods::from_template(
                template,
                ns,
                &format!("{}-", key.name),
                controller_ref(rs.as_ref()),
            );
            podcontrol::create(&ctx, rs.as_ref(), vec![pod; plan.create]).await?;
        }
    }
    if !plan.delete.is_empty() {
        podcontrol::delete(&ctx, rs.as_ref(), &plan.delete).await?;
    }
    if status_changed(rs.status.as_ref(), &plan.status) {
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
        api.patch_status(
            &key.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": plan.status})),
        )
        .await
        .map_err(|e| Error::api("updating status of replicaset", &key, e))?;
    }
    Ok(plan
        .requeue
        .map(|d| Action::Requeue(d + Duration::from_millis(50)))
        .unwrap_or(Action::AwaitChange))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::fixtures::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    fn rs(replicas: i32) -> ReplicaSet {
        let labels: std::collections::BTreeMap<String, String> =
            [("app".to_string(), "web".to_string())].into();
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("rs-uid".into()),
                generation: Some(3),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..Default::default()
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..Default::default()
                    }),
                    spec: None,
                }),
                min_ready_seconds: Some(10),
            }),
            status: None,
        }
    }

    fn mine(name: &str) -> Pod {
        pod(name)
            .labels(&[("app", "web")])
            .owner(controller_ref(&rs(1)))
    }

    fn names(v: &[Arc<Pod>]) -> Vec<String> {
        v.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
    }

    const NOW: i64 = 1000;

    fn now() -> Timestamp {
        Timestamp::from_second(NOW).unwrap()
    }

    #[test]
    fn creates_the_missing_pods_counting_only_active_ones() {
        let pods = vec![
            Arc::new(mine("a").on("n").ready_at(0)),
            Arc::new(mine("b").deleting()),
            Arc::new(mine("c").phase("Failed")),
        ];
        let p = plan(&rs(3), &pods, true, now());
        assert_eq!(p.create, 2);
        assert!(p.delete.is_empty());
        assert_eq!(p.status.replicas, 1);
        assert_eq!(p.status.ready_replicas, Some(1));
        assert_eq!(p.status.available_replicas, Some(1));
        assert_eq!(p.status.observed_generation, Some(3));
    }

    #[test]
    fn deletes_the_least_useful_surplus_and_waits_on_expectations() {
        let pods = vec![
            Arc::new(mine("ready").on("n").ready_at(0)),
            Arc::new(mine("pending").on("n")),
            Arc::new(mine("unassigned")),
        ];
        let p = plan(&rs(1), &pods, true, now());
        assert_eq!(names(&p.delete), ["unassigned", "pending"]);
        let p = plan(&rs(1), &pods, false, now());
        assert!(p.delete.is_empty() && p.create == 0);
    }

    #[test]
    fn adopts_matching_orphans_and_releases_pods_that_stopped_matching() {
        let pods = vec![
            Arc::new(pod("orphan").labels(&[("app", "web")])),
            Arc::new(pod("stranger").labels(&[("app", "db")])),
            Arc::new(mine("relabelled").labels(&[("app", "db")])),
        ];
        let p = plan(&rs(1), &pods, true, now());
        assert_eq!(names(&p.adopt), ["orphan"]);
        assert_eq!(names(&p.release), ["relabelled"]);
        assert_eq!(p.create, 0, "the adopted pod counts");
    }

    #[test]
    fn a_pod_ready_for_less_than_min_ready_seconds_is_not_available_yet() {
        let pods = vec![Arc::new(mine("a").on("n").ready_at(NOW - 4))];
        let p = plan(&rs(1), &pods, true, now());
        assert_eq!(p.status.ready_replicas, Some(1));
        assert_eq!(p.status.available_replicas, Some(0));
        assert_eq!(p.requeue, Some(Duration::from_secs(6)));
    }

    #[test]
    fn a_replicaset_being_deleted_neither_creates_nor_adopts() {
        let mut r = rs(3);
        r.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::UNIX_EPOCH,
        ));
        let pods = vec![Arc::new(pod("orphan").labels(&[("app", "web")]))];
        let p = plan(&r, &pods, true, now());
        assert_eq!(p.create, 0);
        assert!(p.adopt.is_empty());
    }
}
