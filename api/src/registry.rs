//! The resource registry: every kind Berth serves, how it is named on the wire and on the command
//! line, its scope and subresources, and where its objects live in the store.
//!
//! Look-ups: [`by_resource`] for a request path (`/apis/apps/v1/deployments`), [`by_kind`] and
//! [`by_api_version_kind`] for a decoded object, [`resolve`] for what a user typed (`po`,
//! `deployments.apps`, `Pod`). Store keys: [`ResourceInfo::store_key`] and
//! [`ResourceInfo::store_prefix`].

use thiserror::Error;

/// Errors building store keys.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    #[error("{resource} is namespaced: a namespace is required")]
    NamespaceRequired { resource: String },
    #[error("{resource} is cluster-scoped: namespace {namespace:?} is not allowed")]
    NamespaceNotAllowed { resource: String, namespace: String },
    #[error("invalid {segment} {value:?} in store key: must be non-empty and contain no '/'")]
    InvalidKeySegment {
        segment: &'static str,
        value: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether objects of a kind live in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Namespaced,
    Cluster,
}

/// A subresource such as `pods/status` or `deployments/scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    /// The path segment after the object name: `status`, `scale`, `binding`, `log`...
    pub name: &'static str,
    /// Group of the kind the subresource reads and writes (`""` for core).
    pub group: &'static str,
    /// Version of the kind the subresource reads and writes.
    pub version: &'static str,
    /// The kind it reads and writes (`Scale` for `scale`, the parent's kind for `status`).
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

/// Everything the API server, the store and the command line need to know about one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group, `""` for the core (legacy) group served under `/api`.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The resource name in paths and store keys, e.g. `deployments`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub scope: Scope,
    pub subresources: &'static [Subresource],
    /// Discovery categories, e.g. `all` (what `kubectl get all` lists).
    pub categories: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

/// The verbs every top-level resource supports.
pub const RESOURCE_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];
const CREATE_ONLY: &[&str] = &["create"];
const GET_ONLY: &[&str] = &["get"];
const CREATE_GET: &[&str] = &["create", "get"];
const ALL: &[&str] = &["all"];
/// `nodes/proxy`: any method is forwarded to the node's agent.
const PROXY_VERBS: &[&str] = &["create", "delete", "get", "patch", "update"];

const fn status(group: &'static str, version: &'static str, kind: &'static str) -> Subresource {
    Subresource {
        name: "status",
        group,
        version,
        kind,
        verbs: STATUS_VERBS,
    }
}

const SCALE: Subresource = Subresource {
    name: "scale",
    group: "autoscaling",
    version: "v1",
    kind: "Scale",
    verbs: STATUS_VERBS,
};

const fn core_sub(
    name: &'static str,
    kind: &'static str,
    verbs: &'static [&'static str],
) -> Subresource {
    Subresource {
        name,
        group: "",
        version: "v1",
        kind,
        verbs,
    }
}

use Scope::{Cluster, Namespaced};

static RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        scope: Namespaced,
        subresources: &[
            status("", "v1", "Pod"),
            core_sub("binding", "Binding", CREATE_ONLY),
            core_sub("log", "Pod", GET_ONLY),
            core_sub("exec", "PodExecOptions", CREATE_GET),
            core_sub("attach", "PodAttachOptions", CREATE_GET),
            core_sub("portforward", "PodPortForwardOptions", CREATE_GET),
        ],
        categories: ALL,
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
        scope: Cluster,
        subresources: &[
            status("", "v1", "Node"),
            core_sub("proxy", "NodeProxyOptions", PROXY_VERBS),
        ],
        categories: &[],
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        scope: Namespaced,
        subresources: &[status("", "v1", "Service")],
        categories: ALL,
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        short_names: &["ep"],
        scope: Namespaced,
        subresources: &[],
        categories: &[],
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        scope: Cluster,
        subresources: &[
            status("", "v1", "Namespace"),
            core_sub("finalize", "Namespace", &["update"]),
        ],
        categories: &[],
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        short_names: &["cm"],
        scope: Namespaced,
        subresources: &[],
        categories: &[],
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
        scope: Namespaced,
        subresources: &[],
        categories: &[],
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        scope: Namespaced,
        subresources: &[],
        categories: &[],
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        short_names: &["sa"],
        scope: Namespaced,
        subresources: &[Subresource {
            name: "token",
            group: "authentication.k8s.io",
            version: "v1",
            kind: "TokenRequest",
            verbs: CREATE_ONLY,
        }],
        categories: &[],
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        short_names: &["deploy"],
        scope: Namespaced,
        subresources: &[status("apps", "v1", "Deployment"), SCALE],
        categories: ALL,
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        short_names: &["rs"],
        scope: Namespaced,
        subresources: &[status("apps", "v1", "ReplicaSet"), SCALE],
        categories: ALL,
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "DaemonSet",
        plural: "daemonsets",
        singular: "daemonset",
        short_names: &["ds"],
        scope: Namespaced,
        subresources: &[status("apps", "v1", "DaemonSet")],
        categories: ALL,
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "StatefulSet",
        plural: "statefulsets",
        singular: "statefulset",
        short_names: &["sts"],
        scope: Namespaced,
        subresources: &[status("apps", "v1", "StatefulSet"), SCALE],
        categories: ALL,
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "batch",
        version: "v1",
        kind: "Job",
        plural: "jobs",
        singular: "job",
        short_names: &[],
        scope: Namespaced,
        subresources: &[status("batch", "v1", "Job")],
        categories: ALL,
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "autoscaling",
        version: "v2",
        kind: "HorizontalPodAutoscaler",
        plural: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        short_names: &["hpa"],
        scope: Namespaced,
        subresources: &[status("autoscaling", "v2", "HorizontalPodAutoscaler")],
        categories: ALL,
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        short_names: &[],
        scope: Namespaced,
        subresources: &[],
        categories: &[],
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        short_names: &[],
        scope: Namespaced,
        subresources: &[],
        categories: &[],
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "Role",
        plural: "roles",
        singular: "role",
        short_names: &[],
        scope: Namespaced,
        subresources: &[],
        categories: &[],
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        singular: "clusterrole",
        short_names: &[],
        scope: Cluster,
        subresources: &[],
        categories: &[],
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        singular: "rolebinding",
        short_names: &[],
        scope: Namespaced,
        subresources: &[],
        categories: &[],
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        short_names: &[],
        scope: Cluster,
        subresources: &[],
        categories: &[],
        verbs: RESOURCE_VERBS,
    },
    ResourceInfo {
        group: "certificates.k8s.io",
        version: "v1",
        kind: "CertificateSigningRequest",
        plural: "certificatesigningrequests",
        singular: "certificatesigningrequest",
        short_names: &["csr"],
        scope: Cluster,
        subresources: &[
            status("certificates.k8s.io", "v1", "CertificateSigningRequest"),
            Subresource {
                name: "approval",
                group: "certificates.k8s.io",
                version: "v1",
                kind: "CertificateSigningRequest",
                verbs: STATUS_VERBS,
            },
        ],
        categories: &[],
        verbs: RESOURCE_VERBS,
    },
];

/// Every served kind, in a stable order (core first, then by group).
pub fn all() -> &'static [ResourceInfo] {
    RESOURCES
}

/// The distinct `(group, version)` pairs served, in registry order (for discovery).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// Splits an `apiVersion` into group and version: `apps/v1` is `("apps", "v1")`, `v1` is
/// `("", "v1")`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

/// The resource served at `/apis/<group>/<version>/<plural>` (group `""` for `/api/v1`).
pub fn by_resource(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of a kind (kinds are unique among the served resources), case-sensitive.
pub fn by_kind(kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.kind == kind)
}

/// The resource of a kind in one group and version.
pub fn by_group_version_kind(
    group: &str,
    version: &str,
    kind: &str,
) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// The resource of an object's `apiVersion` and `kind`.
pub fn by_api_version_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    let (group, version) = split_api_version(api_version);
    by_group_version_kind(group, version, kind)
}

/// Resolves a name as typed on the command line, case-insensitively: the plural (`pods`), the
/// singular (`pod`), a short name (`po`), the kind (`Pod`), or any of those qualified by group
/// (`deployments.apps`, `deploy.apps`) or by version and group (`deployments.v1.apps`).
pub fn resolve(name: &str) -> Option<&'static ResourceInfo> {
    let name = name.trim().to_ascii_lowercase();
    if name.is_empty() {
        return None;
    }
    let names_match = |r: &ResourceInfo, n: &str| {
        r.plural == n
            || r.singular == n
            || r.kind.eq_ignore_ascii_case(n)
            || r.short_names.contains(&n)
    };
    if let Some(found) = RESOURCES.iter().find(|r| names_match(r, &name)) {
        return Some(found);
    }
    // `<name>.<group>` or `<name>.<version>.<group>`; groups contain dots, so try each split.
    let (head, qualifier) = name.split_once('.')?;
    RESOURCES.iter().find(|r| {
        if !names_match(r, head) {
            return false;
        }
        let with_version = format!("{}.{}", r.version, r.group);
        (!r.group.is_empty() && qualifier == r.group) || qualifier == with_version
    })
}

impl ResourceInfo {
    /// `v1` for the core group, `<group>/<version>` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }

    /// The kind of a list of these objects, e.g. `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The group segment of store keys: `core` for the core group.
    pub fn store_group(&self) -> &'static str {
        if self.group.is_empty() {
            "core"
        } else {
            self.group
        }
    }

    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresource(name).is_some()
    }

    /// `plural.group` (just `plural` for the core group), as Kubernetes names a group resource.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The store key of one object: `/registry/<group>/<resource>/<namespace>/<name>`, without
    /// the namespace segment for cluster-scoped kinds.
    pub fn store_key(&self, namespace: Option<&str>, name: &str) -> Result<String> {
        check_segment("name", name)?;
        let prefix = self.store_prefix(namespace)?;
        if self.namespaced() && namespace.is_none() {
            return Err(Error::NamespaceRequired {
                resource: self.qualified_plural(),
            });
        }
        Ok(format!("{prefix}{name}"))
    }

    /// The key prefix listing objects, ending in `/` so that namespace `a` never matches `ab`:
    /// `/registry/<group>/<resource>/` for all namespaces (or a cluster-scoped kind), and
    /// `/registry/<group>/<resource>/<namespace>/` for one namespace.
    pub fn store_prefix(&self, namespace: Option<&str>) -> Result<String> {
        let base = format!("/registry/{}/{}/", self.store_group(), self.plural);
        match (self.scope, namespace) {
            (_, None) => Ok(base),
            (Scope::Namespaced, Some(ns)) => {
                check_segment("namespace", ns)?;
                Ok(format!("{base}{ns}/"))
            }
            (Scope::Cluster, Some(ns)) => Err(Error::NamespaceNotAllowed {
                resource: self.qualified_plural(),
                namespace: ns.to_string(),
            }),
        }
    }
}

fn check_segment(segment: &'static str, value: &str) -> Result<()> {
    if value.is_empty() || value.contains('/') {
        return Err(Error::InvalidKeySegment {
            segment,
            value: value.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_registered_once() {
        let kinds: Vec<_> = all().iter().map(|r| r.kind).collect();
        for kind in [
            "Pod",
            "Node",
            "Service",
            "Endpoints",
            "Namespace",
            "ConfigMap",
            "Secret",
            "Event",
            "ServiceAccount",
            "Deployment",
            "ReplicaSet",
            "DaemonSet",
            "Job",
            "EndpointSlice",
            "Lease",
            "StatefulSet",
            "Role",
            "ClusterRole",
            "RoleBinding",
            "ClusterRoleBinding",
            "CertificateSigningRequest",
            "HorizontalPodAutoscaler",
        ] {
            assert_eq!(kinds.iter().filter(|k| **k == kind).count(), 1, "{kind}");
        }
        assert_eq!(kinds.len(), 22);
    }

    #[test]
    fn short_names_are_the_kubernetes_ones() {
        let short = |kind: &str| by_kind(kind).unwrap().short_names.to_vec();
        assert_eq!(short("Pod"), ["po"]);
        assert_eq!(short("Node"), ["no"]);
        assert_eq!(short("Service"), ["svc"]);
        assert_eq!(short("Endpoints"), ["ep"]);
        assert_eq!(short("Namespace"), ["ns"]);
        assert_eq!(short("ConfigMap"), ["cm"]);
        assert_eq!(short("Event"), ["ev"]);
        assert_eq!(short("ServiceAccount"), ["sa"]);
        assert_eq!(short("Deployment"), ["deploy"]);
        assert_eq!(short("ReplicaSet"), ["rs"]);
        assert_eq!(short("DaemonSet"), ["ds"]);
        assert!(short("Secret").is_empty());
        assert!(short("Job").is_empty());
    }

    #[test]
    fn scopes_and_subresources() {
        assert_eq!(by_kind("Node").unwrap().scope, Scope::Cluster);
        assert_eq!(by_kind("Namespace").unwrap().scope, Scope::Cluster);
        assert!(by_kind("Lease").unwrap().namespaced());
        let pod = by_kind("Pod").unwrap();
        assert!(pod.has_subresource("status"));
        assert_eq!(pod.subresource("binding").unwrap().kind, "Binding");
        let deploy = by_kind("Deployment").unwrap();
        let scale = deploy.subresource("scale").unwrap();
        assert_eq!(
            (scale.group, scale.version, scale.kind),
            ("autoscaling", "v1", "Scale")
        );
        assert!(by_kind("ReplicaSet").unwrap().has_subresource("scale"));
        assert!(!by_kind("DaemonSet").unwrap().has_subresource("scale"));
        assert!(!by_kind("ConfigMap").unwrap().has_subresource("status"));
    }

    #[test]
    fn lookup_by_resource_and_kind() {
        assert_eq!(by_resource("", "v1", "pods").unwrap().kind, "Pod");
        assert_eq!(
            by_resource("apps", "v1", "deployments").unwrap().kind,
            "Deployment"
        );
        assert!(by_resource("apps", "v1", "pods").is_none());
        assert!(by_resource("apps", "v1beta1", "deployments").is_none());
        assert_eq!(
            by_api_version_kind("apps/v1", "DaemonSet").unwrap().plural,
            "daemonsets"
        );
        assert_eq!(by_api_version_kind("v1", "Pod").unwrap().plural, "pods");
        assert!(by_api_version_kind("v1", "Deployment").is_none());
        assert_eq!(
            by_kind("Lease").unwrap().api_version(),
            "coordination.k8s.io/v1"
        );
        assert_eq!(by_kind("Pod").unwrap().list_kind(), "PodList");
    }

    #[test]
    fn resolve_accepts_every_command_line_form() {
        for name in [
            "deployments",
            "deployment",
            "deploy",
            "Deployment",
            "DEPLOY",
            "deployments.apps",
            "deploy.apps",
            "deployments.v1.apps",
        ] {
            assert_eq!(resolve(name).map(|r| r.kind), Some("Deployment"), "{name}");
        }
        assert_eq!(resolve("po").unwrap().kind, "Pod");
        assert_eq!(
            resolve("endpointslices.discovery.k8s.io").unwrap().kind,
            "EndpointSlice"
        );
        assert_eq!(resolve("ep").unwrap().kind, "Endpoints");
        assert_eq!(resolve("leases.coordination.k8s.io").unwrap().kind, "Lease");
        assert_eq!(resolve("csr").unwrap().kind, "CertificateSigningRequest");
        assert!(resolve("deployments.batch").is_none());
        assert!(resolve("widgets").is_none());
        assert!(resolve("").is_none());
    }

    #[test]
    fn group_versions_are_distinct() {
        let gvs = group_versions();
        assert_eq!(gvs[0], ("", "v1"));
        assert!(gvs.contains(&("apps", "v1")));
        assert!(gvs.contains(&("batch", "v1")));
        assert!(gvs.contains(&("rbac.authorization.k8s.io", "v1")));
        assert!(gvs.contains(&("certificates.k8s.io", "v1")));
        assert!(gvs.contains(&("autoscaling", "v2")));
        assert_eq!(gvs.len(), 8);
    }

    #[test]
    fn store_keys() {
        let pod = by_kind("Pod").unwrap();
        assert_eq!(
            pod.store_key(Some("default"), "web").unwrap(),
            "/registry/core/pods/default/web"
        );
        let deploy = by_kind("Deployment").unwrap();
        assert_eq!(
            deploy.store_key(Some("prod"), "api").unwrap(),
            "/registry/apps/deployments/prod/api"
        );
        let node = by_kind("Node").unwrap();
        assert_eq!(
            node.store_key(None, "n1").unwrap(),
            "/registry/core/nodes/n1"
        );
    }

    #[test]
    fn store_key_errors() {
        let pod = by_kind("Pod").unwrap();
        assert_eq!(
            pod.store_key(None, "web").unwrap_err(),
            Error::NamespaceRequired {
                resource: "pods".into()
            }
        );
        assert!(matches!(
            pod.store_key(Some("default"), "a/b"),
            Err(Error::InvalidKeySegment {
                segment: "name",
                ..
            })
        ));
        assert!(matches!(
            pod.store_key(Some(""), "web"),
            Err(Error::InvalidKeySegment {
                segment: "namespace",
                ..
            })
        ));
        let node = by_kind("Node").unwrap();
        let err = node.store_key(Some("default"), "n1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "nodes is cluster-scoped: namespace \"default\" is not allowed"
        );
    }

    #[test]
    fn store_prefixes() {
        let pod = by_kind("Pod").unwrap();
        assert_eq!(pod.store_prefix(None).unwrap(), "/registry/core/pods/");
        assert_eq!(
            pod.store_prefix(Some("a")).unwrap(),
            "/registry/core/pods/a/"
        );
        let key = pod.store_key(Some("ab"), "x").unwrap();
        assert!(!key.starts_with(&pod.store_prefix(Some("a")).unwrap()));
        let lease = by_kind("Lease").unwrap();
        assert_eq!(
            lease.store_prefix(Some("kube-node-lease")).unwrap(),
            "/registry/coordination.k8s.io/leases/kube-node-lease/"
        );
        let ns = by_kind("Namespace").unwrap();
        assert_eq!(ns.store_prefix(None).unwrap(), "/registry/core/namespaces/");
        assert!(ns.store_prefix(Some("x")).is_err());
    }
}
