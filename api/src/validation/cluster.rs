//! Namespaces, Nodes, Leases and Events.

use std::collections::HashSet;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Node};

use super::field::{ErrorList, FieldError, Path};
use super::meta::{nonnegative, one_of, positive, validate_object_meta, NameRule};
use super::names;
use super::pod::TAINT_EFFECTS;
use crate::quantity::Quantity;

pub fn validate_namespace(ns: &Namespace) -> ErrorList {
    let mut errs = validate_object_meta(
        &ns.metadata,
        false,
        NameRule::Dns1123Label,
        &Path::new("metadata"),
    );
    let finalizers = ns.spec.as_ref().and_then(|s| s.finalizers.as_ref());
    for (i, finalizer) in finalizers.into_iter().flatten().enumerate() {
        for msg in names::is_qualified_name(finalizer) {
            errs.push(FieldError::invalid(
                &Path::new("spec").child("finalizers").index(i),
                finalizer,
                msg,
            ));
        }
    }
    errs
}

pub fn validate_node(node: &Node) -> ErrorList {
    let mut errs = validate_object_meta(
        &node.metadata,
        false,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    );
    let spec_path = Path::new("spec");
    if let Some(spec) = &node.spec {
        if let Some(cidr) = spec.pod_cidr.as_deref().filter(|c| !c.is_empty()) {
            for msg in names::is_valid_cidr(cidr) {
                errs.push(FieldError::invalid(&spec_path.child("podCIDR"), cidr, msg));
            }
        }
        let cidrs = spec.pod_cidrs.as_deref().unwrap_or_default();
        if cidrs.len() > 2 {
            errs.push(FieldError::too_many(
                &spec_path.child("podCIDRs"),
                cidrs.len(),
                2,
            ));
        }
        for (i, cidr) in cidrs.iter().enumerate() {
            let p = spec_path.child("podCIDRs").index(i);
            for msg in names::is_valid_cidr(cidr) {
                errs.push(FieldError::invalid(&p, cidr, msg));
            }
            if i == 0
                && spec
                    .pod_cidr
                    .as_deref()
                    .is_some_and(|c| !c.is_empty() && c != cidr)
            {
                errs.push(FieldError::invalid(&p, cidr, "must match `podCIDR`"));
            }
        }
        let mut taints = HashSet::new();
        for (i, taint) in spec.taints.iter().flatten().enumerate() {
            let p = spec_path.child("taints").index(i);
            if taint.key.is_empty() {
                errs.push(FieldError::required(&p.child("key"), ""));
            }
            for msg in names::is_qualified_name(&taint.key) {
                if !taint.key.is_empty() {
                    errs.push(FieldError::invalid(&p.child("key"), &taint.key, msg));
                }
            }
            let value = taint.value.as_deref().unwrap_or("");
            for msg in names::is_valid_label_value(value) {
                errs.push(FieldError::invalid(&p.child("value"), value, msg));
            }
            if taint.effect.is_empty() {
                errs.push(FieldError::required(&p.child("effect"), ""));
            } else {
                errs.extend(one_of(
                    Some(&taint.effect),
                    TAINT_EFFECTS,
                    &p.child("effect"),
                ));
            }
            if !taints.insert((taint.key.as_str(), taint.effect.as_str())) {
                errs.push(FieldError::duplicate(
                    &p,
                    format!("{}:{}", taint.key, taint.effect),
                ));
            }
        }
    }
    if let Some(status) = &node.status {
        let lists = [
            ("capacity", &status.capacity),
            ("allocatable", &status.allocatable),
        ];
        for (field, list) in lists {
            for (name, value) in list.iter().flatten() {
                let p = Path::new("status").child(field).key(name);
                match Quantity::parse(&value.0) {
                    Ok(q) if q.is_negative() => errs.push(FieldError::invalid(
                        &p,
                        &value.0,
                        "must be greater than or equal to 0",
                    )),
                    Ok(_) => {}
                    Err(e) => errs.push(FieldError::invalid(&p, &value.0, e.to_string())),
                }
            }
        }
    }
    errs
}

pub fn validate_lease(lease: &Lease) -> ErrorList {
    let mut errs = validate_object_meta(
        &lease.metadata,
        true,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    );
    if let Some(spec) = &lease.spec {
        let p = Path::new("spec");
        errs.extend(positive(
            spec.lease_duration_seconds,
            &p.child("leaseDurationSeconds"),
        ));
        errs.extend(nonnegative(
            spec.lease_transitions,
            &p.child("leaseTransitions"),
        ));
        errs.extend(one_of(
            spec.strategy.as_deref(),
            &["OldestEmulationVersion"],
            &p.child("strategy"),
        ));
        if spec
            .preferred_holder
            .as_deref()
            .is_some_and(|h| !h.is_empty())
            && spec.strategy.is_none()
        {
            errs.push(FieldError::forbidden(
                &p.child("preferredHolder"),
                "may only be specified if `strategy` is defined",
            ));
        }
    }
    errs
}

/// Longest values of the fields a new-style (eventTime) event must carry.
const EVENT_FIELD_MAX: usize = 128;
const EVENT_NOTE_MAX: usize = 1024;

/// Events, as Kubernetes validates core/v1 events: the involved object's namespace agrees with
/// the event's; events with `eventTime` also name their reporter, action and reason.
pub fn validate_event(event: &Event) -> ErrorList {
    let mut errs = validate_object_meta(
        &event.metadata,
        true,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    );
    let namespace = event.metadata.namespace.as_deref().unwrap_or("");
    let involved_ns = event.involved_object.namespace.as_deref().unwrap_or("");
    let ns_path = Path::new("involvedObject").child("namespace");
    let mismatch = if involved_ns.is_empty() {
        // A cluster-scoped involved object: the event goes to `default` (or `kube-system`).
        !matches!(namespace, "" | "default" | "kube-system")
    } else {
        involved_ns != namespace
    };
    if mismatch {
        errs.push(FieldError::invalid(
            &ns_path,
            involved_ns,
            "does not match event.namespace",
        ));
    }
    if event.event_time.is_some() {
        let fields = [
            ("reportingComponent", event.reporting_component.as_deref()),
            ("reportingInstance", event.reporting_instance.as_deref()),
            ("action", event.action.as_deref()),
            ("reason", event.reason.as_deref()),
        ];
        for (field, value) in fields {
            let value = value.unwrap_or("");
            if value.is_empty() {
                errs.push(FieldError::required(&Path::new(field), ""));
            } else if value.len() > EVENT_FIELD_MAX {
                errs.push(FieldError::too_long(&Path::new(field), EVENT_FIELD_MAX));
            }
        }
        if let Some(component) = event
            .reporting_component
            .as_deref()
            .filter(|c| !c.is_empty())
        {
            for msg in names::is_qualified_name(component) {
                errs.push(FieldError::invalid(
                    &Path::new("reportingComponent"),
                    component,
                    msg,
                ));
            }
        }
        if event
            .message
            .as_deref()
            .is_some_and(|m| m.len() > EVENT_NOTE_MAX)
        {
            errs.push(FieldError::too_long(&Path::new("message"), EVENT_NOTE_MAX));
        }
    }
    errs.extend(one_of(
        event.type_.as_deref().filter(|t| !t.is_empty()),
        &["Normal", "Warning"],
        &Path::new("type"),
    ));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::testing::{assert_clean, assert_has, patched, typed};
    use crate::validation::ErrorType::*;
    use serde_json::{json, Value};

    #[test]
    fn namespace_rules() {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}, "spec": {"finalizers": ["kubernetes"]}});
        let errs = |p: &str, v: Value| validate_namespace(&typed(patched(ns.clone(), p, v)));
        assert_clean(&validate_namespace(&typed(ns.clone())));
        assert_has(
            &errs("/metadata/name", json!("team.a")),
            Invalid,
            "metadata.name",
        );
        assert_has(
            &errs("/metadata/name", json!("Team")),
            Invalid,
            "metadata.name",
        );
        assert_has(
            &errs("/metadata/name", json!("a".repeat(64))),
            Invalid,
            "metadata.name",
        );
        assert_has(
            &errs("/metadata/namespace", json!("default")),
            Forbidden,
            "metadata.namespace",
        );
        assert_has(
            &errs("/spec/finalizers/0", json!("bad finalizer")),
            Invalid,
            "spec.finalizers[0]",
        );
    }

    fn node() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-1.example", "labels": {"kubernetes.io/hostname": "node-1"}},
            "spec": {
                "podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:1::/64"],
                "taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
            },
            "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
        })
    }

    #[test]
    fn node_rules() {
        let errs = |p: &str, v: Value| validate_node(&typed(patched(node(), p, v)));
        assert_clean(&validate_node(&typed(node())));
        assert_has(
            &errs("/metadata/name", json!("Node_1")),
            Invalid,
            "metadata.name",
        );
        assert_has(
            &errs("/metadata/namespace", json!("default")),
            Forbidden,
            "metadata.namespace",
        );
        assert_has(
            &errs("/spec/podCIDR", json!("10.244.1.0")),
            Invalid,
            "spec.podCIDR",
        );
        assert_has(
            &errs("/spec/podCIDRs/0", json!("10.244.2.0/24")),
            Invalid,
            "spec.podCIDRs[0]",
        );
        assert_has(
            &errs("/spec/podCIDRs/2", json!("10.0.0.0/8")),
            TooMany,
            "spec.podCIDRs",
        );
        assert_has(
            &errs("/spec/taints/0/effect", json!("Sometimes")),
            NotSupported,
            "spec.taints[0].effect",
        );
        assert_has(
            &errs("/spec/taints/0/effect", json!("")),
            Required,
            "spec.taints[0].effect",
        );
        assert_has(
            &errs("/spec/taints/0/key", json!("")),
            Required,
            "spec.taints[0].key",
        );
        assert_has(
            &errs("/spec/taints/0/value", json!("-x")),
            Invalid,
            "spec.taints[0].value",
        );
        assert_has(
            &errs(
                "/spec/taints/1",
                json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}),
            ),
            Duplicate,
            "spec.taints[1]",
        );
        assert_clean(&errs(
            "/spec/taints/1",
            json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoExecute"}),
        ));
        assert_has(
            &errs("/status/capacity/cpu", json!("four")),
            Invalid,
            "status.capacity[cpu]",
        );
        assert_has(
            &errs("/status/capacity/memory", json!("-1Gi")),
            Invalid,
            "status.capacity[memory]",
        );
    }

    #[test]
    fn lease_rules() {
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "node-1", "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40, "leaseTransitions": 0}
        });
        let errs = |p: &str, v: Value| validate_lease(&typed(patched(lease.clone(), p, v)));
        assert_clean(&validate_lease(&typed(lease.clone())));
        assert_has(
            &errs("/spec/leaseDurationSeconds", json!(0)),
            Invalid,
            "spec.leaseDurationSeconds",
        );
        assert_has(
            &errs("/spec/leaseTransitions", json!(-1)),
            Invalid,
            "spec.leaseTransitions",
        );
        assert_has(
            &errs("/spec/strategy", json!("Newest")),
            NotSupported,
            "spec.strategy",
        );
        assert_has(
            &errs("/spec/preferredHolder", json!("node-2")),
            Forbidden,
            "spec.preferredHolder",
        );
        let with_strategy = patched(
            lease.clone(),
            "/spec/strategy",
            json!("OldestEmulationVersion"),
        );
        assert_clean(&validate_lease(&typed(patched(
            with_strategy,
            "/spec/preferredHolder",
            json!("node-2"),
        ))));
        assert_has(
            &errs("/metadata/name", json!("Node-1")),
            Invalid,
            "metadata.name",
        );
    }

    fn event() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web.17a2b3c4d5e6f", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "Scheduled", "message": "assigned to n1", "type": "Normal",
            "source": {"component": "default-scheduler"}
        })
    }

    #[test]
    fn event_rules() {
        let errs = |p: &str, v: Value| validate_event(&typed(patched(event(), p, v)));
        assert_clean(&validate_event(&typed(event())));
        assert_has(
            &errs("/involvedObject/namespace", json!("other")),
            Invalid,
            "involvedObject.namespace",
        );
        let mut node_event = patched(
            event(),
            "/involvedObject",
            json!({"kind": "Node", "name": "n1"}),
        );
        assert_clean(&validate_event(&typed(node_event.clone())));
        node_event = patched(node_event, "/metadata/namespace", json!("team-a"));
        assert_has(
            &validate_event(&typed(node_event)),
            Invalid,
            "involvedObject.namespace",
        );
        assert_has(&errs("/type", json!("Info")), NotSupported, "type");
        let new_style = patched(event(), "/eventTime", json!("2024-01-01T00:00:00.000000Z"));
        let errs = validate_event(&typed(new_style.clone()));
        assert_has(&errs, Required, "reportingComponent");
        assert_has(&errs, Required, "reportingInstance");
        assert_has(&errs, Required, "action");
        let mut complete = patched(
            new_style,
            "/reportingComponent",
            json!("berth.io/scheduler"),
        );
        complete = patched(complete, "/reportingInstance", json!("scheduler-1"));
        complete = patched(complete, "/action", json!("Binding"));
        assert_clean(&validate_event(&typed(complete.clone())));
        assert_has(
            &validate_event(&typed(patched(
                complete.clone(),
                "/action",
                json!("a".repeat(129)),
            ))),
            TooLong,
            "action",
        );
        assert_has(
            &validate_event(&typed(patched(
                complete,
                "/message",
                json!("m".repeat(1025)),
            ))),
            TooLong,
            "message",
        );
    }
}
