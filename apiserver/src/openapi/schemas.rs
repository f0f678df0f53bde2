//! `components.schemas`: every schema generated once from the k8s-openapi types (their schemars
//! implementations carry the Kubernetes names and the field docs), then given what k8s-openapi
//! leaves out and kubectl reads: `x-kubernetes-group-version-kind` on each kind, and the
//! strategic-merge-patch extensions on the lists and fields that have them.

use std::borrow::Cow;
use std::collections::{BTreeSet, VecDeque};
use std::sync::OnceLock;

use k8s_openapi::schemars::generate::SchemaSettings;
use k8s_openapi::schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

/// Where schemas live in a document; every `$ref` starts with this.
pub(crate) const REF_PREFIX: &str = "#/components/schemas/";

const META_V1: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

/// A kind with a k8s-openapi type: its schema is generated from that type.
struct KnownKind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    /// Served as a resource with a collection, so it also gets a `<Kind>List` schema.
    listable: bool,
    schema_name: fn() -> Cow<'static, str>,
    add: fn(&mut SchemaGenerator),
}

macro_rules! known_kinds {
    ($(($group:literal, $version:literal, $kind:literal, $listable:literal, $ty:ty)),* $(,)?) => {
        static KNOWN_KINDS: &[KnownKind] = &[
            $(KnownKind {
                group: $group,
                version: $version,
                kind: $kind,
                listable: $listable,
                schema_name: <$ty as JsonSchema>::schema_name,
                add: |generator| {
                    generator.subschema_for::<$ty>();
                },
            },)*
        ];
    };
}

use k8s_openapi::api::{
    apps, autoscaling, batch, certificates, coordination, core, discovery, rbac,
};
use k8s_openapi::apimachinery::pkg::apis::meta;

known_kinds!(
    ("", "v1", "Pod", true, core::v1::Pod),
    ("", "v1", "Node", true, core::v1::Node),
    ("", "v1", "Service", true, core::v1::Service),
    ("", "v1", "Endpoints", true, core::v1::Endpoints),
    ("", "v1", "Namespace", true, core::v1::Namespace),
    ("", "v1", "ConfigMap", true, core::v1::ConfigMap),
    ("", "v1", "Secret", true, core::v1::Secret),
    ("", "v1", "Event", true, core::v1::Event),
    ("", "v1", "ServiceAccount", true, core::v1::ServiceAccount),
    ("", "v1", "Binding", false, core::v1::Binding),
    ("apps", "v1", "Deployment", true, apps::v1::Deployment),
    ("apps", "v1", "ReplicaSet", true, apps::v1::ReplicaSet),
    ("apps", "v1", "DaemonSet", true, apps::v1::DaemonSet),
    ("apps", "v1", "StatefulSet", true, apps::v1::StatefulSet),
    ("autoscaling", "v1", "Scale", false, autoscaling::v1::Scale),
    (
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        true,
        autoscaling::v2::HorizontalPodAutoscaler
    ),
    ("batch", "v1", "Job", true, batch::v1::Job),
    (
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        true,
        discovery::v1::EndpointSlice
    ),
    (
        "coordination.k8s.io",
        "v1",
        "Lease",
        true,
        coordination::v1::Lease
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        true,
        rbac::v1::Role
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        true,
        rbac::v1::ClusterRole
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        true,
        rbac::v1::RoleBinding
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        true,
        rbac::v1::ClusterRoleBinding
    ),
    (
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        true,
        certificates::v1::CertificateSigningRequest
    ),
    ("", "v1", "Status", false, meta::v1::Status),
);

/// Schemas every group-version document refers to (request and response bodies of its
/// operations), without a kind of their own in the registry.
fn add_common(generator: &mut SchemaGenerator) {
    generator.subschema_for::<meta::v1::DeleteOptions>();
    generator.subschema_for::<meta::v1::Patch>();
}

pub(crate) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(crate) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(crate) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";

/// The strategic-merge-patch metadata of Kubernetes 1.32's Go types (`patchStrategy` and
/// `patchMergeKey` struct tags), as `(schema, property, strategy, merge key)`. kubectl builds
/// `kubectl apply` patches from these when a schema carries the kind's GVK: a list without them
/// is replaced whole instead of merged by key.
const PATCH_META: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        None,
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        Some("uid"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "containers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "hostAliases",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        Some("topologyKey"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        "merge",
        Some("containerPort"),
    ),
    ("io.k8s.api.core.v1.Container", "env", "merge", Some("name")),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        "merge",
        Some("containerPort"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "podIPs",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "hostIPs",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.ContainerStatus",
        "allocatedResourcesStatus",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.ContainerStatus",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", None),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        "merge",
        Some("port"),
    ),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        None,
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
];

/// Every schema, keyed by its Kubernetes name, built on first use.
pub(crate) fn definitions() -> &'static Map<String, Value> {
    static DEFINITIONS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFINITIONS.get_or_init(build_definitions)
}

/// The schema name of a kind with a k8s-openapi type (`io.k8s.api.core.v1.Pod`).
pub(crate) fn kind_schema(group: &str, version: &str, kind: &str) -> Option<String> {
    known_kind(group, version, kind).map(|k| (k.schema_name)().into_owned())
}

/// The schema name of a kind's list (`io.k8s.api.core.v1.PodList`), for listable kinds.
pub(crate) fn list_schema(group: &str, version: &str, kind: &str) -> Option<String> {
    known_kind(group, version, kind)
        .filter(|k| k.listable)
        .map(|k| format!("{}List", (k.schema_name)()))
}

fn known_kind(group: &str, version: &str, kind: &str) -> Option<&'static KnownKind> {
    KNOWN_KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
}

/// The description of one property of a schema, e.g. `("io.k8s.api.core.v1.PodStatus",
/// "podIP")`.
pub(crate) fn field_description(schema: &str, field: &str) -> Option<&'static str> {
    definitions()
        .get(schema)?
        .get("properties")?
        .get(field)?
        .get("description")?
        .as_str()
}

/// The names of every schema reachable through `$ref`s from `roots`, roots included.
pub(crate) fn closure<'a>(roots: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let defs = definitions();
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<String> = roots.into_iter().map(str::to_owned).collect();
    while let Some(name) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = defs.get(&name) {
            collect_refs(schema, &mut |target| {
                if !seen.contains(target) {
                    queue.push_back(target.to_owned());
                }
            });
        }
    }
    seen
}

/// Calls `found` with the schema name of every `$ref` inside `value`.
pub(crate) fn collect_refs(value: &Value, found: &mut dyn FnMut(&str)) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix(REF_PREFIX) {
                            found(name);
                        }
                    }
                    _ => collect_refs(v, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, found)),
        _ => {}
    }
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("{REF_PREFIX}{name}") })
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "version": version, "kind": kind })
}

fn build_definitions() -> Map<String, Value> {
    // OpenAPI 3.0 settings: refs under #/components/schemas/, and a `$ref` with a description
    // beside it becomes `allOf: [{$ref}]` plus the description, as Kubernetes writes them (a
    // sibling of `$ref` is ignored in 3.0, and kubectl resolves `allOf[0]`).
    let mut generator = SchemaSettings::openapi3().into_generator();
    for kind in KNOWN_KINDS {
        (kind.add)(&mut generator);
    }
    add_common(&mut generator);
    let mut defs = generator.take_definitions(true);

    for schema in defs.values_mut() {
        drop_required_metadata(schema);
    }
    for kind in KNOWN_KINDS.iter().filter(|k| k.listable) {
        let item = (kind.schema_name)().into_owned();
        defs.insert(format!("{item}List"), list_schema_for(kind.kind, &item));
    }
    for kind in KNOWN_KINDS {
        let name = (kind.schema_name)().into_owned();
        set_gvks(
            &mut defs,
            &name,
            vec![gvk(kind.group, kind.version, kind.kind)],
        );
        if kind.listable {
            let list_kind = format!("{}List", kind.kind);
            let list_gvk = gvk(kind.group, kind.version, &list_kind);
            set_gvks(&mut defs, &format!("{name}List"), vec![list_gvk]);
        }
    }
    // DeleteOptions is accepted by every group-version; Kubernetes lists each.
    let mut delete_gvks: Vec<Value> = berth_api::registry::group_versions()
        .into_iter()
        .map(|(g, v)| gvk(g, v, "DeleteOptions"))
        .collect();
    for (g, v) in [("rbac.authorization.k8s.io", "v1"), ("", "v1")] {
        let extra = gvk(g, v, "DeleteOptions");
        if !delete_gvks.contains(&extra) {
            delete_gvks.push(extra);
        }
    }
    set_gvks(&mut defs, DELETE_OPTIONS, delete_gvks);

    for (schema, property, strategy, key) in PATCH_META {
        let Some(prop) = defs
            .get_mut(*schema)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(*property))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        prop.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        if let Some(key) = key {
            prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
    }
    defs
}

fn set_gvks(defs: &mut Map<String, Value>, name: &str, gvks: Vec<Value>) {
    if let Some(schema) = defs.get_mut(name).and_then(Value::as_object_mut) {
        schema.insert("x-kubernetes-group-version-kind".into(), Value::Array(gvks));
    }
}

/// k8s-openapi marks `metadata` required because its Rust field is not optional; Kubernetes'
/// own schemas never require it (a create may send `generateName` only, or no metadata).
fn drop_required_metadata(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let Some(Value::Array(required)) = obj.get_mut("required") else {
        return;
    };
    required.retain(|r| r != "metadata");
    if required.is_empty() {
        obj.remove("required");
    }
}

/// `<Kind>List`, the shape of every list Kubernetes returns; k8s-openapi has one generic
/// `List<T>` type without a schema, so it is written here from the item's schema name.
fn list_schema_for(kind: &str, item: &str) -> Value {
    let conventions =
        "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md";
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": format!("APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: {conventions}#resources"),
                "type": "string",
            },
            "items": {
                "description": format!("List of {kind} objects."),
                "type": "array",
                "items": schema_ref(item),
            },
            "kind": {
                "description": format!("Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: {conventions}#types-kinds"),
                "type": "string",
            },
            "metadata": {
                "description": format!("Standard list metadata. More info: {conventions}#types-kinds"),
                "allOf": [schema_ref(&format!("{META_V1}.ListMeta"))],
            },
        },
        "required": ["items"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str) -> &'static Value {
        definitions()
            .get(name)
            .unwrap_or_else(|| panic!("no schema {name}"))
    }

    #[test]
    fn every_known_kind_has_a_schema_with_its_gvk() {
        for kind in KNOWN_KINDS {
            let name = (kind.schema_name)();
            let gvks = def(&name)["x-kubernetes-group-version-kind"]
                .as_array()
                .unwrap();
            assert_eq!(
                gvks,
                &vec![json!({"group": kind.group, "version": kind.version, "kind": kind.kind})],
                "{name}"
            );
            if kind.listable {
                let list = def(&format!("{name}List"));
                assert_eq!(
                    list["x-kubernetes-group-version-kind"][0]["kind"],
                    format!("{}List", kind.kind)
                );
            }
        }
    }

    #[test]
    fn schemas_use_kubernetes_names_and_refs() {
        assert_eq!(
            kind_schema("", "v1", "Pod").as_deref(),
            Some("io.k8s.api.core.v1.Pod")
        );
        assert_eq!(
            list_schema("apps", "v1", "Deployment").as_deref(),
            Some("io.k8s.api.apps.v1.DeploymentList")
        );
        assert_eq!(list_schema("autoscaling", "v1", "Scale"), None);
        let pod = def("io.k8s.api.core.v1.Pod");
        assert_eq!(
            pod["properties"]["spec"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.PodSpec"
        );
        assert!(pod["properties"]["spec"]["description"].is_string());
        assert!(pod.get("required").is_none(), "metadata is not required");
        assert!(
            def("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")["properties"]
                .get("annotations")
                .is_some()
        );
    }

    #[test]
    fn patch_strategies_sit_on_the_properties() {
        let spec = &def("io.k8s.api.core.v1.PodSpec")["properties"];
        assert_eq!(spec["containers"]["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(spec["containers"]["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(
            spec["volumes"]["x-kubernetes-patch-strategy"],
            "merge,retainKeys"
        );
        let container = &def("io.k8s.api.core.v1.Container")["properties"];
        assert_eq!(
            container["ports"]["x-kubernetes-patch-merge-key"],
            "containerPort"
        );
        let service = &def("io.k8s.api.core.v1.ServiceSpec")["properties"];
        assert_eq!(service["ports"]["x-kubernetes-patch-merge-key"], "port");
        let deploy = &def("io.k8s.api.apps.v1.DeploymentSpec")["properties"];
        assert_eq!(
            deploy["strategy"]["x-kubernetes-patch-strategy"],
            "retainKeys"
        );
        // Every entry of the table names a property that exists.
        for (schema, property, _, _) in PATCH_META {
            assert!(
                def(schema)["properties"].get(*property).is_some(),
                "{schema}.{property}"
            );
        }
    }

    #[test]
    fn field_descriptions_come_from_the_doc_comments() {
        let ip = field_description("io.k8s.api.core.v1.PodStatus", "podIP").unwrap();
        assert!(ip.contains("IP address"), "{ip}");
        assert!(field_description("io.k8s.api.core.v1.PodStatus", "nope").is_none());
    }

    #[test]
    fn closure_follows_refs() {
        let names = closure(["io.k8s.api.core.v1.Pod"]);
        assert!(names.contains("io.k8s.api.core.v1.Container"));
        assert!(names.contains("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
        assert!(names.contains("io.k8s.apimachinery.pkg.api.resource.Quantity"));
        assert!(!names.contains("io.k8s.api.apps.v1.Deployment"));
    }
}
