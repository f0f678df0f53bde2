//! Create-time validation, as Kubernetes validates objects: every failing field is reported, each
//! with its path (`spec.containers[1].ports[0].containerPort`), an [`ErrorType`] and a detail.
//!
//! Start at [`validate_create`], which dispatches on the [`Object`]'s kind; each kind's rules
//! live in a submodule (`pod`, `service`, `workloads`, `config`, `cluster`), and the checks they
//! share in `meta` (names, labels, annotations, selectors) and [`names`] (string formats).
//!
//! Validation runs after defaulting, as in Kubernetes, but does not depend on it: a field that
//! defaulting fills may be absent and is then read as its default (a Job's absent
//! `restartPolicy` is `Always`, which a Job may not use).

mod certificates;
mod cluster;
mod config;
pub mod field;
mod meta;
pub mod names;
mod pod;
mod rbac;
mod service;
mod workloads;

pub use certificates::{validate_certificate_signing_request, KEY_USAGES};
pub use cluster::{validate_event, validate_lease, validate_namespace, validate_node};
pub use config::{validate_config_map, validate_secret, validate_service_account, MAX_DATA_SIZE};
pub use field::{ErrorList, ErrorType, FieldError, Invalid, Path};
pub use meta::{
    selector_is_empty, validate_annotations, validate_label_selector, validate_labels,
    validate_object_meta, NameRule, TOTAL_ANNOTATION_SIZE_LIMIT,
};
pub use pod::{
    validate_container, validate_pod, validate_pod_spec, validate_pod_template_spec,
    validate_resource_requirements,
};
pub use rbac::{
    validate_cluster_role, validate_cluster_role_binding, validate_role, validate_role_binding,
};
pub use service::{validate_endpoint_slice, validate_endpoints, validate_service};
pub use workloads::{
    validate_daemon_set, validate_deployment, validate_job, validate_replica_set,
    validate_stateful_set,
};

use crate::object::Object;

pub type Result<T, E = Invalid> = std::result::Result<T, E>;

/// Every failing field of `obj`, empty when it is valid.
pub fn validate(obj: &Object) -> ErrorList {
    match obj {
        Object::Pod(o) => validate_pod(o),
        Object::Node(o) => validate_node(o),
        Object::Service(o) => validate_service(o),
        Object::Endpoints(o) => validate_endpoints(o),
        Object::Namespace(o) => validate_namespace(o),
        Object::ConfigMap(o) => validate_config_map(o),
        Object::Secret(o) => validate_secret(o),
        Object::Event(o) => validate_event(o),
        Object::ServiceAccount(o) => validate_service_account(o),
        Object::Deployment(o) => validate_deployment(o),
        Object::ReplicaSet(o) => validate_replica_set(o),
        Object::DaemonSet(o) => validate_daemon_set(o),
        Object::Job(o) => validate_job(o),
        Object::EndpointSlice(o) => validate_endpoint_slice(o),
        Object::Lease(o) => validate_lease(o),
        Object::StatefulSet(o) => validate_stateful_set(o),
        Object::Role(o) => validate_role(o),
        Object::ClusterRole(o) => validate_cluster_role(o),
        Object::RoleBinding(o) => validate_role_binding(o),
        Object::ClusterRoleBinding(o) => validate_cluster_role_binding(o),
        Object::CertificateSigningRequest(o) => validate_certificate_signing_request(o),
        Object::HorizontalPodAutoscaler(o) => workloads::validate_horizontal_pod_autoscaler(o),
    }
}

/// Validates an object about to be created; the error carries every failing field and becomes
/// the API's 422 `Status` through [`Invalid::to_status`].
pub fn validate_create(obj: &Object) -> Result<()> {
    let errors = validate(obj);
    if errors.is_empty() {
        return Ok(());
    }
    let meta = obj.meta();
    let name = meta
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| meta.generate_name.clone())
        .unwrap_or_default();
    Err(Invalid {
        group: obj.info().group.to_string(),
        kind: obj.kind().to_string(),
        name,
        errors,
    })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Fixture helpers: objects are written as JSON, as a client sends them, then patched.

    use serde::de::DeserializeOwned;
    use serde_json::Value;

    use super::{ErrorList, ErrorType};

    #[track_caller]
    pub fn typed<T: DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("fixture does not decode: {e}"))
    }

    /// Sets the value at a JSON pointer (RFC 6901), creating missing objects on the way and
    /// appending when the index is one past the end of an array.
    #[track_caller]
    pub fn patched(mut root: Value, pointer: &str, new: Value) -> Value {
        let mut cur = &mut root;
        for raw in pointer.split('/').skip(1) {
            let seg = raw.replace("~1", "/").replace("~0", "~");
            cur = match cur {
                Value::Array(items) => {
                    let idx: usize = seg.parse().expect("array index in pointer");
                    if idx == items.len() {
                        items.push(Value::Null);
                    }
                    &mut items[idx]
                }
                other => {
                    if !other.is_object() {
                        *other = Value::Object(Default::default());
                    }
                    other
                        .as_object_mut()
                        .expect("just made an object")
                        .entry(seg)
                        .or_insert(Value::Null)
                }
            };
        }
        *cur = new;
        root
    }

    #[track_caller]
    pub fn assert_has(errs: &ErrorList, error_type: ErrorType, field: &str) {
        assert!(
            errs.iter()
                .any(|e| e.error_type == error_type && e.field == field),
            "expected {error_type:?} at {field}, got {:#?}",
            errs.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
    }

    #[track_caller]
    pub fn assert_clean(errs: &ErrorList) {
        assert!(
            errs.is_empty(),
            "expected no errors, got {:#?}",
            errs.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validate_create_dispatches_by_kind_and_names_the_object() {
        let pod = Object::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 0}]}]}
        }))
        .unwrap();
        let err = validate_create(&pod).unwrap_err();
        assert_eq!(
            (err.group.as_str(), err.kind.as_str(), err.name.as_str()),
            ("", "Pod", "web")
        );
        assert_eq!(err.errors.len(), 1);
        assert_eq!(
            err.errors[0].field,
            "spec.containers[0].ports[0].containerPort"
        );
        assert_eq!(
            err.to_string(),
            "Pod \"web\" is invalid: spec.containers[0].ports[0].containerPort: Required value"
        );

        let deploy = Object::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"generateName": "web-", "namespace": "default"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "a", "image": "b"}]}}}
        }))
        .unwrap();
        let err = validate_create(&deploy).unwrap_err();
        assert_eq!((err.group.as_str(), err.name.as_str()), ("apps", "web-"));
        assert_eq!(
            err.to_status().details.unwrap().causes.unwrap()[0]
                .field
                .as_deref(),
            Some("spec.selector")
        );
    }

    #[test]
    fn valid_objects_of_every_kind_pass() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}),
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "a"}}),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "a"}}),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "a"}}),
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e", "namespace": "a"}}),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l", "namespace": "a"}}),
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "e", "namespace": "a"}, "addressType": "IPv4", "endpoints": []}),
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "a"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "a"}}),
        ];
        for v in objects {
            let obj = Object::from_value(v.clone()).unwrap();
            assert!(validate_create(&obj).is_ok(), "{v}: {:?}", validate(&obj));
        }
    }

    #[test]
    fn the_pointer_helper_builds_paths() {
        let v = testing::patched(json!({"a": [1]}), "/a/1", json!(2));
        assert_eq!(v, json!({"a": [1, 2]}));
        let v = testing::patched(json!({}), "/b/c~1d", json!(true));
        assert_eq!(v, json!({"b": {"c/d": true}}));
    }
}
