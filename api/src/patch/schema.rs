//! How each field of a served kind merges, as the Kubernetes Go types declare it.
//!
//! Strategic merge patch reads the struct tags (`patchStrategy:"merge" patchMergeKey:"name"`,
//! `patchStrategy:"merge,retainKeys"`); server-side apply reads the OpenAPI list and map types
//! (`+listType=map +listMapKey=containerPort +listMapKey=protocol`, `+listType=set`,
//! `+mapType=atomic`, `+structType=atomic`). The two mostly agree; where they differ (container
//! and Service ports are keyed by one field for patches and by two for apply, Job conditions are
//! merged by patches but atomic for apply) a [`List`] records both.
//!
//! Only fields that are not plain objects or atomic lists appear in the table: an unlisted
//! object merges key by key and an unlisted list is replaced whole, which is what both
//! mechanisms do for a field without tags. The tags come from k8s.io/api v0.32 (core/v1,
//! apps/v1, batch/v1, discovery/v1, coordination/v1, rbac/v1) and apimachinery's `ObjectMeta`.

/// How strategic merge patch treats a list (the field's `patchStrategy` tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// No strategy: the patch's list replaces the whole list.
    Atomic,
    /// `patchStrategy:"merge"` on a list of scalars (`metadata.finalizers`): union, with
    /// `$deleteFromPrimitiveList` to remove members.
    Set,
    /// `patchStrategy:"merge" patchMergeKey:"<key>"`: items are matched by `key` and merged.
    /// `retain_keys` is set for `merge,retainKeys` (a client may send `$retainKeys` in items).
    Merge {
        key: &'static str,
        retain_keys: bool,
    },
}

/// How server-side apply treats a list (`+listType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// `atomic`: one owner for the whole list.
    Atomic,
    /// `set`: a list of scalars, each value owned separately (`v:"value"`).
    Set,
    /// `map` with its `listMapKey`s: each item owned separately (`k:{"name":"nginx"}`).
    Map(&'static [&'static str]),
}

/// A list field: its patch strategy, its apply type and the shape of its items.
#[derive(Debug, Clone, Copy)]
pub struct List {
    pub patch: ListStrategy,
    pub apply: ListType,
    pub item: &'static Shape,
}

/// One notable field of an object.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub shape: Shape,
}

/// What is known about a value.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// Nothing notable below: objects merge key by key, lists are atomic.
    Any,
    /// An object with notable fields; fields not listed are [`Shape::Any`].
    Object(&'static [Field]),
    /// An object server-side apply treats as one value (`+structType=atomic`,
    /// `+mapType=atomic`). Strategic merge patch still merges it key by key.
    Atomic,
    /// A list.
    List(&'static List),
}

impl Shape {
    /// The shape of field `name` of this object ([`Shape::Any`] when unknown).
    pub fn field(self, name: &str) -> Shape {
        match self {
            Shape::Object(fields) => fields
                .iter()
                .find(|f| f.name == name)
                .map_or(Shape::Any, |f| f.shape),
            _ => Shape::Any,
        }
    }

    /// The list description, when this is a list.
    pub fn list(self) -> Option<&'static List> {
        match self {
            Shape::List(list) => Some(list),
            _ => None,
        }
    }

    /// The shape of the items when this is a list, else this shape.
    fn items(self) -> Shape {
        match self {
            Shape::List(list) => *list.item,
            other => other,
        }
    }
}

/// The shape of a whole object of `kind` (`"Deployment"`), or `None` for a kind Berth has no
/// table for.
pub fn for_kind(kind: &str) -> Option<Shape> {
    Some(match kind {
        "Pod" => POD,
        "PodTemplate" => POD_TEMPLATE,
        "Service" => SERVICE,
        "Node" => NODE,
        "Namespace" => NAMESPACE,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => WORKLOAD,
        "Job" => JOB,
        "CronJob" => CRON_JOB,
        "Endpoints"
        | "ConfigMap"
        | "Secret"
        | "Event"
        | "EndpointSlice"
        | "Lease"
        | "Role"
        | "ClusterRole"
        | "RoleBinding"
        | "ClusterRoleBinding"
        | "CertificateSigningRequest" => METADATA_ONLY,
        _ => return None,
    })
}

/// The shape server-side apply uses for `kind`: the kind's table, or only `metadata` for a kind
/// without one (every object has `ObjectMeta`).
pub fn apply_shape(kind: &str) -> Shape {
    for_kind(kind).unwrap_or(METADATA_ONLY)
}

/// The shape at `path` (field names from the object's root; list items are stepped through, so
/// `["spec", "containers", "ports"]` is the ports of any container).
pub fn lookup(root: Shape, path: &[&str]) -> Shape {
    path.iter()
        .fold(root, |shape, name| shape.items().field(name))
}

/// The strategic merge patch strategy of the list at `path` in a `kind`
/// ([`ListStrategy::Atomic`] for anything not declared otherwise).
///
/// `list_strategy("Pod", &["spec", "containers", "volumeMounts"])` is
/// `Merge { key: "mountPath", .. }`.
pub fn list_strategy(kind: &str, path: &[&str]) -> ListStrategy {
    for_kind(kind)
        .and_then(|root| lookup(root, path).list())
        .map_or(ListStrategy::Atomic, |list| list.patch)
}

/// The server-side apply list type of the list at `path` in a `kind`.
pub fn list_type(kind: &str, path: &[&str]) -> ListType {
    lookup(apply_shape(kind), path)
        .list()
        .map_or(ListType::Atomic, |list| list.apply)
}

const fn field(name: &'static str, shape: Shape) -> Field {
    Field { name, shape }
}

/// A list merged by one key for both patch and apply.
macro_rules! keyed {
    ($key:literal) => {
        keyed!($key, &Shape::Any)
    };
    ($key:literal, $item:expr) => {
        Shape::List(&List {
            patch: ListStrategy::Merge {
                key: $key,
                retain_keys: false,
            },
            apply: ListType::Map(&[$key]),
            item: $item,
        })
    };
}

/// `patchStrategy:"merge,retainKeys" patchMergeKey:"<key>"`.
macro_rules! keyed_retain {
    ($key:literal) => {
        Shape::List(&List {
            patch: ListStrategy::Merge {
                key: $key,
                retain_keys: true,
            },
            apply: ListType::Map(&[$key]),
            item: &Shape::Any,
        })
    };
}

/// `patchStrategy:"merge"` on a list of strings, `+listType=set`.
const SET: Shape = Shape::List(&List {
    patch: ListStrategy::Set,
    apply: ListType::Set,
    item: &Shape::Any,
});

/// `+listType=set` without a patch strategy.
const APPLY_SET: Shape = Shape::List(&List {
    patch: ListStrategy::Atomic,
    apply: ListType::Set,
    item: &Shape::Any,
});

const CONDITIONS: Shape = keyed!("type");

/// apimachinery `ObjectMeta`.
const OBJECT_META: Shape = Shape::Object(&[
    field("finalizers", SET),
    field("ownerReferences", keyed!("uid")),
]);

/// `metav1.LabelSelector` is `+structType=atomic`.
const LABEL_SELECTOR: Shape = Shape::Atomic;

const ENV_VAR: Shape = Shape::Object(&[field(
    "valueFrom",
    // ConfigMapKeySelector, SecretKeySelector, ObjectFieldSelector and ResourceFieldSelector
    // are all `+structType=atomic`.
    Shape::Object(&[
        field("configMapKeyRef", Shape::Atomic),
        field("fieldRef", Shape::Atomic),
        field("resourceFieldRef", Shape::Atomic),
        field("secretKeyRef", Shape::Atomic),
    ]),
)]);

/// `Container` and `EphemeralContainer` (they share `EphemeralContainerCommon`'s tags).
const CONTAINER: Shape = Shape::Object(&[
    field("env", keyed!("name", &ENV_VAR)),
    field(
        "ports",
        // patchMergeKey containerPort; listMapKey containerPort + protocol.
        Shape::List(&List {
            patch: ListStrategy::Merge {
                key: "containerPort",
                retain_keys: false,
            },
            apply: ListType::Map(&["containerPort", "protocol"]),
            item: &Shape::Any,
        }),
    ),
    field(
        "resources",
        Shape::Object(&[field(
            "claims",
            // `+listType=map +listMapKey=name` without a patch strategy.
            Shape::List(&List {
                patch: ListStrategy::Atomic,
                apply: ListType::Map(&["name"]),
                item: &Shape::Any,
            }),
        )]),
    ),
    field("volumeDevices", keyed!("devicePath")),
    field("volumeMounts", keyed!("mountPath")),
]);

const POD_SPEC: Shape = Shape::Object(&[
    field(
        "affinity",
        Shape::Object(&[field(
            "nodeAffinity",
            // NodeSelector is `+structType=atomic`.
            Shape::Object(&[field(
                "requiredDuringSchedulingIgnoredDuringExecution",
                Shape::Atomic,
            )]),
        )]),
    ),
    field("containers", keyed!("name", &CONTAINER)),
    field("ephemeralContainers", keyed!("name", &CONTAINER)),
    field("hostAliases", keyed!("ip")),
    // LocalObjectReference is `+structType=atomic`.
    field("imagePullSecrets", keyed!("name", &Shape::Atomic)),
    field("initContainers", keyed!("name", &CONTAINER)),
    field("nodeSelector", Shape::Atomic),
    field("resourceClaims", keyed_retain!("name")),
    field("schedulingGates", keyed!("name")),
    field(
        "topologySpreadConstraints",
        // patchMergeKey topologyKey; listMapKey topologyKey + whenUnsatisfiable.
        Shape::List(&List {
            patch: ListStrategy::Merge {
                key: "topologyKey",
                retain_keys: false,
            },
            apply: ListType::Map(&["topologyKey", "whenUnsatisfiable"]),
            item: &Shape::Object(&[field("labelSelector", LABEL_SELECTOR)]),
        }),
    ),
    field("volumes", keyed_retain!("name")),
]);

const POD_STATUS: Shape = Shape::Object(&[
    field("conditions", CONDITIONS),
    field("hostIPs", keyed!("ip")),
    field("podIPs", keyed!("ip")),
    field("resourceClaimStatuses", keyed_retain!("name")),
]);

const POD_TEMPLATE_SPEC: Shape =
    Shape::Object(&[field("metadata", OBJECT_META), field("spec", POD_SPEC)]);

const POD: Shape = Shape::Object(&[
    field("metadata", OBJECT_META),
    field("spec", POD_SPEC),
    field("status", POD_STATUS),
]);

const POD_TEMPLATE: Shape = Shape::Object(&[
    field("metadata", OBJECT_META),
    field("template", POD_TEMPLATE_SPEC),
]);

const SERVICE: Shape = Shape::Object(&[
    field("metadata", OBJECT_META),
    field(
        "spec",
        Shape::Object(&[
            field(
                "ports",
                // patchMergeKey port; listMapKey port + protocol.
                Shape::List(&List {
                    patch: ListStrategy::Merge {
                        key: "port",
                        retain_keys: false,
                    },
                    apply: ListType::Map(&["port", "protocol"]),
                    item: &Shape::Any,
                }),
            ),
            field("selector", Shape::Atomic),
        ]),
    ),
    field("status", Shape::Object(&[field("conditions", CONDITIONS)])),
]);

const NODE: Shape = Shape::Object(&[
    field("metadata", OBJECT_META),
    field("spec", Shape::Object(&[field("podCIDRs", SET)])),
    field(
        "status",
        Shape::Object(&[
            field("addresses", keyed!("type")),
            field("conditions", CONDITIONS),
        ]),
    ),
]);

const NAMESPACE: Shape = Shape::Object(&[
    field("metadata", OBJECT_META),
    field("status", Shape::Object(&[field("conditions", CONDITIONS)])),
]);

const SERVICE_ACCOUNT: Shape = Shape::Object(&[
    field("metadata", OBJECT_META),
    // ObjectReference is `+structType=atomic`.
    field("secrets", keyed!("name", &Shape::Atomic)),
]);

/// Deployment, ReplicaSet, DaemonSet and StatefulSet: a selector, a pod template and status
/// conditions keyed by type. (DeploymentSpec.strategy is `patchStrategy:"retainKeys"`, which
/// only changes how clients compute patches; the server honours any `$retainKeys` it gets.)
const WORKLOAD: Shape = Shape::Object(&[
    field("metadata", OBJECT_META),
    field(
        "spec",
        Shape::Object(&[
            field("selector", LABEL_SELECTOR),
            field("template", POD_TEMPLATE_SPEC),
        ]),
    ),
    field("status", Shape::Object(&[field("conditions", CONDITIONS)])),
]);

const JOB_SPEC: Shape = Shape::Object(&[
    field("selector", LABEL_SELECTOR),
    field("template", POD_TEMPLATE_SPEC),
]);

const JOB: Shape = Shape::Object(&[
    field("metadata", OBJECT_META),
    field("spec", JOB_SPEC),
    field(
        "status",
        Shape::Object(&[
            field(
                "conditions",
                // patchStrategy merge on type, but `+listType=atomic`.
                Shape::List(&List {
                    patch: ListStrategy::Merge {
                        key: "type",
                        retain_keys: false,
                    },
                    apply: ListType::Atomic,
                    item: &Shape::Any,
                }),
            ),
            field(
                "uncountedTerminatedPods",
                Shape::Object(&[field("failed", APPLY_SET), field("succeeded", APPLY_SET)]),
            ),
        ]),
    ),
]);

const CRON_JOB: Shape = Shape::Object(&[
    field("metadata", OBJECT_META),
    field(
        "spec",
        Shape::Object(&[field(
            "jobTemplate",
            Shape::Object(&[field("metadata", OBJECT_META), field("spec", JOB_SPEC)]),
        )]),
    ),
]);

/// Kinds whose only notable field is `metadata` (Endpoints subsets, EndpointSlice endpoints and
/// ports, RBAC rules and subjects are all atomic lists).
const METADATA_ONLY: Shape = Shape::Object(&[field("metadata", OBJECT_META)]);

#[cfg(test)]
mod tests {
    use super::*;

    fn merge(key: &'static str) -> ListStrategy {
        ListStrategy::Merge {
            key,
            retain_keys: false,
        }
    }

    #[test]
    fn pod_lists_follow_the_struct_tags() {
        let s = |path: &[&str]| list_strategy("Pod", path);
        assert_eq!(s(&["spec", "containers"]), merge("name"));
        assert_eq!(s(&["spec", "initContainers"]), merge("name"));
        assert_eq!(s(&["spec", "containers", "env"]), merge("name"));
        assert_eq!(s(&["spec", "containers", "ports"]), merge("containerPort"));
        assert_eq!(
            s(&["spec", "containers", "volumeMounts"]),
            merge("mountPath")
        );
        assert_eq!(s(&["spec", "containers", "envFrom"]), ListStrategy::Atomic);
        assert_eq!(s(&["spec", "containers", "command"]), ListStrategy::Atomic);
        assert_eq!(s(&["spec", "tolerations"]), ListStrategy::Atomic);
        assert_eq!(s(&["spec", "hostAliases"]), merge("ip"));
        assert_eq!(s(&["spec", "imagePullSecrets"]), merge("name"));
        assert_eq!(
            s(&["spec", "volumes"]),
            ListStrategy::Merge {
                key: "name",
                retain_keys: true
            }
        );
        assert_eq!(s(&["status", "conditions"]), merge("type"));
        assert_eq!(s(&["metadata", "finalizers"]), ListStrategy::Set);
        assert_eq!(s(&["metadata", "ownerReferences"]), merge("uid"));
    }

    #[test]
    fn templates_reach_the_pod_spec() {
        for kind in [
            "Deployment",
            "ReplicaSet",
            "DaemonSet",
            "StatefulSet",
            "Job",
        ] {
            assert_eq!(
                list_strategy(kind, &["spec", "template", "spec", "containers"]),
                merge("name"),
                "{kind}"
            );
        }
        assert_eq!(
            list_strategy(
                "CronJob",
                &[
                    "spec",
                    "jobTemplate",
                    "spec",
                    "template",
                    "spec",
                    "volumes",
                    "x"
                ]
            ),
            ListStrategy::Atomic
        );
        assert_eq!(
            list_strategy(
                "CronJob",
                &[
                    "spec",
                    "jobTemplate",
                    "spec",
                    "template",
                    "spec",
                    "initContainers"
                ]
            ),
            merge("name")
        );
    }

    #[test]
    fn service_ports_differ_between_patch_and_apply() {
        assert_eq!(list_strategy("Service", &["spec", "ports"]), merge("port"));
        assert_eq!(
            list_type("Service", &["spec", "ports"]),
            ListType::Map(&["port", "protocol"])
        );
        assert_eq!(
            list_type("Pod", &["spec", "containers", "ports"]),
            ListType::Map(&["containerPort", "protocol"])
        );
        assert_eq!(
            list_type("Job", &["status", "conditions"]),
            ListType::Atomic
        );
        assert_eq!(
            list_strategy("Job", &["status", "conditions"]),
            merge("type")
        );
    }

    #[test]
    fn unknown_kinds_and_fields_are_atomic() {
        assert_eq!(
            list_strategy("Widget", &["spec", "items"]),
            ListStrategy::Atomic
        );
        assert_eq!(
            list_strategy("Pod", &["spec", "nope"]),
            ListStrategy::Atomic
        );
        assert_eq!(
            list_type("Widget", &["metadata", "finalizers"]),
            ListType::Set
        );
        assert_eq!(
            list_strategy("Node", &["spec", "podCIDRs"]),
            ListStrategy::Set
        );
        assert_eq!(
            list_strategy("Node", &["spec", "taints"]),
            ListStrategy::Atomic
        );
        assert_eq!(list_strategy("ServiceAccount", &["secrets"]), merge("name"));
        assert_eq!(
            list_strategy("ServiceAccount", &["imagePullSecrets"]),
            ListStrategy::Atomic
        );
    }
}
