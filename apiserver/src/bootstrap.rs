//! What a new cluster starts with: the system namespaces and the bootstrap RBAC policy
//! (`cluster-admin` for `system:masters`, discovery for every authenticated user,
//! `system:node-bootstrapper` (create and read CertificateSigningRequests) for
//! `system:bootstrappers`, and the `view` / `edit` / `admin` roles users bind to). Objects that exist are left alone, so a
//! restart changes nothing.

use serde_json::{json, Value};

use crate::error::ApiResult;
use crate::objects::{FieldValidation, WriteOptions};
use crate::request::Target;
use crate::server::ApiServer;

const RBAC: &str = "rbac.authorization.k8s.io/v1";

fn objects(server: &ApiServer) -> Vec<Value> {
    let mut out = Vec::new();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    let read = json!(["get", "list", "watch"]);
    let write = json!([
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection"
    ]);
    let workloads = json!([
        "pods",
        "pods/log",
        "pods/status",
        "services",
        "endpoints",
        "configmaps",
        "events",
        "serviceaccounts",
        "persistentvolumeclaims",
        "deployments",
        "deployments/scale",
        "deployments/status",
        "replicasets",
        "replicasets/scale",
        "daemonsets",
        "statefulsets",
        "statefulsets/scale",
        "jobs",
        "endpointslices",
        "leases"
    ]);
    let groups = json!([
        "",
        "apps",
        "batch",
        "discovery.k8s.io",
        "coordination.k8s.io"
    ]);
    // What metrics-server's `system:aggregated-metrics-reader` adds to view, edit and admin.
    let metrics = json!({"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"],
        "verbs": ["get", "list", "watch"]});
    let roles = [
        (
            "cluster-admin",
            json!([
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        (
            "system:discovery",
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*",
            "/version", "/version/", "/openapi", "/openapi/*", "/healthz", "/livez", "/readyz"],
            "verbs": ["get"]}]),
        ),
        (
            "view",
            json!([{"apiGroups": groups, "resources": workloads, "verbs": read}, metrics]),
        ),
        (
            "edit",
            json!([
            {"apiGroups": groups, "resources": workloads, "verbs": write},
            {"apiGroups": [""], "resources": ["secrets", "pods/exec", "pods/portforward",
                "pods/attach"], "verbs": write},
            metrics]),
        ),
        (
            "admin",
            json!([
            {"apiGroups": groups, "resources": workloads, "verbs": write},
            {"apiGroups": [""], "resources": ["secrets", "pods/exec", "pods/portforward",
                "pods/attach"], "verbs": write},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
                "verbs": write},
            metrics]),
        ),
    ];
    let roles = roles.into_iter().chain([(
        "system:node-bootstrapper",
        json!([{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
            "verbs": ["create", "get", "list", "watch"]}]),
    )]);
    for (name, rules) in roles {
        out.push(json!({"apiVersion": RBAC, "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": rules}));
    }
    for (name, role, group) in [
        ("cluster-admin", "cluster-admin", "system:masters"),
        (
            "system:discovery",
            "system:discovery",
            "system:authenticated",
        ),
        (
            "system:node-bootstrapper",
            "system:node-bootstrapper",
            crate::bootstrap_token::BOOTSTRAPPERS,
        ),
    ] {
        out.push(json!({"apiVersion": RBAC, "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]}));
    }
    // The Service in-cluster clients reach the API through.
    out.push(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": server.service_cidr.first().to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}}));
    out
}

/// Creates the bootstrap objects that are missing.
pub async fn ensure(server: &ApiServer) -> ApiResult<()> {
    let opts = WriteOptions {
        dry_run: false,
        field_manager: "berth-bootstrap".into(),
        validation: FieldValidation::Strict,
        apply: false,
        requester: None,
    };
    for obj in objects(server) {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let info = berth_api::registry::by_kind(kind).expect("bootstrap kinds are registered");
        let target = Target {
            info,
            namespace: obj["metadata"]["namespace"].as_str().map(str::to_string),
            name: obj["metadata"]["name"].as_str().map(str::to_string),
            subresource: None,
        };
        // Several API servers bootstrap at once: another one may win the race for the
        // object (or for the `kubernetes` Service's address) and be midway through creating
        // it, so a failed create is retried until the object shows up.
        let collection = Target {
            name: None,
            ..target.clone()
        };
        for attempt in 0.. {
            if server.current(&target).await?.is_some() {
                break;
            }
            match server.create(&collection, obj.clone(), &opts).await {
                Ok(_) => break,
                Err(e) if attempt >= 50 => return Err(e),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }
    Ok(())
}
