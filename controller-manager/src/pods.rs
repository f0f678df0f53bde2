//! What controllers need to know about pods, as pure functions: which count, which are ready
//! and available, which to delete first, and how a pod is made from a template.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;

/// Neither terminal nor being deleted: a pod a controller counts.
pub fn is_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && !is_terminal(p)
}

pub fn is_terminal(p: &Pod) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// When the pod's Ready condition last turned True, if it is True.
pub fn ready_since(p: &Pod) -> Option<Timestamp> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    if c.status != "True" {
        return None;
    }
    Some(
        c.last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

pub fn is_ready(p: &Pod) -> bool {
    ready_since(p).is_some()
}

/// Ready for at least `min_ready_seconds` at `now`.
pub fn is_available(p: &Pod, min_ready_seconds: i64, now: Timestamp) -> bool {
    match ready_since(p) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(t) => now.as_second() - t.as_second() >= min_ready_seconds,
    }
}

/// Seconds until a ready pod becomes available, if it is ready and not yet available.
pub fn until_available(p: &Pod, min_ready_seconds: i64, now: Timestamp) -> Option<i64> {
    let t = ready_since(p)?;
    let left = min_ready_seconds - (now.as_second() - t.as_second());
    (left > 0).then_some(left)
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

/// Kubernetes' order for scale-down: the pod that should go first sorts first. Unassigned
/// before assigned, pending before unknown before running, not ready before ready, ready
/// for less time before longer, more restarts before fewer, newer before older.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    fn assigned(p: &Pod) -> bool {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    }
    fn phase_rank(p: &Pod) -> u8 {
        match phase(p) {
            "Pending" => 0,
            "Unknown" => 1,
            "Running" => 2,
            _ => 3,
        }
    }
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    assigned(a)
        .cmp(&assigned(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(is_ready(a).cmp(&is_ready(b)))
        // Ready more recently goes first.
        .then(ready_since(b).cmp(&ready_since(a)))
        .then(restarts(b).cmp(&restarts(a)))
        .then(created(b).cmp(&created(a)))
}

/// Whether `labels` satisfy `selector` (matchLabels and matchExpressions). An empty
/// selector matches everything; a missing one nothing.
pub fn selector_matches(
    selector: Option<&LabelSelector>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(sel) = selector else {
        return false;
    };
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    for (k, v) in sel.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let have = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or(&[]);
        let ok = match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A controller owner reference to `owner`.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A pod for `template`, named by the server from `generate_name`, owned by `owner`.
pub fn from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    generate_name: &str,
    owner: OwnerReference,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Pods that read like prose: `pod("a").owned_by(&rs).ready_at(t).on("n1")`.
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    pub fn pod(name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                creation_timestamp: Some(Time(Timestamp::UNIX_EPOCH)),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                ..Default::default()
            }),
        }
    }

    pub trait PodExt {
        fn on(self, node: &str) -> Self;
        fn running(self) -> Self;
        fn ready_at(self, secs: i64) -> Self;
        fn created_at(self, secs: i64) -> Self;
        fn labels(self, l: &[(&str, &str)]) -> Self;
        fn owner(self, r: OwnerReference) -> Self;
        fn deleting(self) -> Self;
        fn phase(self, p: &str) -> Self;
    }

    impl PodExt for Pod {
        fn on(mut self, node: &str) -> Self {
            self.spec.as_mut().unwrap().node_name = Some(node.into());
            self
        }
        fn running(self) -> Self {
            self.phase("Running")
        }
        fn ready_at(mut self, secs: i64) -> Self {
            let s = self.status.as_mut().unwrap();
            s.phase = Some("Running".into());
            s.conditions = Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(Timestamp::from_second(secs).unwrap())),
                ..Default::default()
            }]);
            self
        }
        fn created_at(mut self, secs: i64) -> Self {
            self.metadata.creation_timestamp = Some(Time(Timestamp::from_second(secs).unwrap()));
            self
        }
        fn labels(mut self, l: &[(&str, &str)]) -> Self {
            self.metadata.labels = Some(
                l.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            self
        }
        fn owner(mut self, r: OwnerReference) -> Self {
            self.metadata.owner_references = Some(vec![r]);
            self
        }
        fn deleting(mut self) -> Self {
            self.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
            self
        }
        fn phase(mut self, p: &str) -> Self {
            self.status.as_mut().unwrap().phase = Some(p.into());
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn scale_down_removes_the_least_useful_pod_first() {
        let mut pods = [
            pod("old-ready").on("n").ready_at(100).created_at(1),
            pod("new-ready").on("n").ready_at(200).created_at(2),
            pod("running").on("n").running(),
            pod("pending").on("n"),
            pod("unassigned"),
        ];
        pods.sort_by(deletion_order);
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            ["unassigned", "pending", "running", "new-ready", "old-ready"]
        );
    }

    #[test]
    fn availability_waits_min_ready_seconds() {
        let p = pod("a").ready_at(100);
        let at = |s| Timestamp::from_second(s).unwrap();
        assert!(is_available(&p, 0, at(100)));
        assert!(!is_available(&p, 10, at(105)));
        assert_eq!(until_available(&p, 10, at(105)), Some(5));
        assert!(is_available(&p, 10, at(110)));
        assert!(!is_available(&pod("b").running(), 0, at(100)));
        assert!(!is_active(&pod("c").deleting()));
        assert!(!is_active(&pod("d").phase("Succeeded")));
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let sel = |ml: &[(&str, &str)], ex: Vec<LabelSelectorRequirement>| LabelSelector {
            match_labels: Some(
                ml.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: Some(ex),
        };
        let req = |k: &str, op: &str, v: &[&str]| LabelSelectorRequirement {
            key: k.into(),
            operator: op.into(),
            values: Some(v.iter().map(|s| s.to_string()).collect()),
        };
        assert!(selector_matches(
            Some(&sel(&[("app", "web")], vec![])),
            Some(&labels)
        ));
        assert!(!selector_matches(
            Some(&sel(&[("app", "db")], vec![])),
            Some(&labels)
        ));
        assert!(selector_matches(
            Some(&sel(&[], vec![req("app", "In", &["web", "x"])])),
            Some(&labels)
        ));
        assert!(!selector_matches(
            Some(&sel(&[], vec![req("app", "NotIn", &["web"])])),
            Some(&labels)
        ));
        assert!(selector_matches(
            Some(&sel(&[], vec![req("tier", "DoesNotExist", &[])])),
            Some(&labels)
        ));
        assert!(selector_matches(Some(&LabelSelector::default()), None));
        assert!(!selector_matches(None, Some(&labels)));
    }
}
