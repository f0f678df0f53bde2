//! Defaulting, as Kubernetes' `SetDefaults_*` functions do it: fields a client left out are
//! filled with the values every component may then rely on. Defaulting never overwrites a value
//! the client set, so applying it twice changes nothing.
//!
//! [`apply`] dispatches on the kind. Pod templates (in Deployments, ReplicaSets, DaemonSets and
//! Jobs) get the pod-spec defaults; a few defaults only ever materialise on Pods themselves
//! (requests copied from limits, `enableServiceLinks`, host ports under `hostNetwork`), as in
//! Kubernetes.

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetUpdateStrategy, Deployment, DeploymentStrategy, ReplicaSet,
    RollingUpdateDaemonSet, RollingUpdateDeployment, RollingUpdateStatefulSetStrategy, StatefulSet,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, Endpoints, Namespace, Node, Pod, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, Secret, Service, Volume,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, Subject};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;

use crate::object::Object;

pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// `0644`, the mode of files projected from ConfigMaps, Secrets and the downward API.
pub const DEFAULT_FILE_MODE: i32 = 0o644;
/// The label every Namespace carries with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Defaults an object of any served kind in place.
pub fn apply(obj: &mut Object) {
    match obj {
        Object::Pod(o) => default_pod(o),
        Object::Service(o) => default_service(o),
        Object::Deployment(o) => default_deployment(o),
        Object::ReplicaSet(o) => default_replica_set(o),
        Object::DaemonSet(o) => default_daemon_set(o),
        Object::Job(o) => default_job(o),
        Object::Namespace(o) => default_namespace(o),
        Object::Secret(o) => default_secret(o),
        Object::Node(o) => default_node(o),
        Object::Endpoints(o) => default_endpoints(o),
        Object::EndpointSlice(o) => default_endpoint_slice(o),
        Object::StatefulSet(o) => default_stateful_set(o),
        Object::RoleBinding(o) => default_role_binding(o),
        Object::ClusterRoleBinding(o) => default_cluster_role_binding(o),
        Object::HorizontalPodAutoscaler(o) => default_hpa(o),
        Object::ConfigMap(_)
        | Object::Event(_)
        | Object::ServiceAccount(_)
        | Object::Lease(_)
        | Object::Role(_)
        | Object::ClusterRole(_)
        | Object::CertificateSigningRequest(_) => {}
    }
}

fn set_if_none<T>(field: &mut Option<T>, value: T) {
    if field.is_none() {
        *field = Some(value);
    }
}

/// Like [`set_if_none`], but an empty string also counts as unset (Go's zero value).
fn set_str_if_empty(field: &mut Option<String>, value: &str) {
    if field.as_deref().is_none_or(str::is_empty) {
        *field = Some(value.to_string());
    }
}

/// Pod defaults: the pod-spec defaults, plus what only Pods get.
pub fn default_pod(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    default_pod_spec(spec);
    let host_network = spec.host_network == Some(true);
    let containers = spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut());
    for c in containers {
        // Requests default to limits, so a pod that only sets limits is Guaranteed.
        if let Some(resources) = c.resources.as_mut() {
            if let Some(limits) = &resources.limits {
                let requests = resources.requests.get_or_insert_with(Default::default);
                for (name, value) in limits {
                    requests
                        .entry(name.clone())
                        .or_insert_with(|| value.clone());
                }
            }
        }
        if host_network {
            for port in c.ports.iter_mut().flatten() {
                if port.host_port.is_none_or(|h| h == 0) {
                    port.host_port = Some(port.container_port);
                }
            }
        }
    }
    set_if_none(&mut spec.enable_service_links, true);
}

/// Defaults shared by Pods and pod templates.
pub fn default_pod_spec(spec: &mut PodSpec) {
    set_str_if_empty(&mut spec.dns_policy, "ClusterFirst");
    set_str_if_empty(&mut spec.restart_policy, "Always");
    set_if_none(&mut spec.security_context, PodSecurityContext::default());
    set_if_none(
        &mut spec.termination_grace_period_seconds,
        DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS,
    );
    set_str_if_empty(&mut spec.scheduler_name, DEFAULT_SCHEDULER_NAME);
    for c in spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
    {
        default_container(c);
    }
    for v in spec.volumes.iter_mut().flatten() {
        default_volume(v);
    }
}

pub fn default_pod_template(template: &mut PodTemplateSpec) {
    default_pod_spec(template.spec.get_or_insert_with(Default::default));
}

/// The tag of an image reference: `latest` when it has neither tag nor digest, `None` when it
/// is pinned by digest only. A registry port (`host:5000/app`) is not a tag.
pub fn image_tag(image: &str) -> Option<&str> {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match (last.split_once(':'), digest) {
        (Some((_, tag)), _) => Some(tag),
        (None, Some(_)) => None,
        (None, None) => Some("latest"),
    }
}

/// `Always` for `:latest` or untagged images, `IfNotPresent` otherwise.
pub fn default_pull_policy(image: &str) -> &'static str {
    if !image.is_empty() && image_tag(image) == Some("latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

pub fn default_container(c: &mut Container) {
    if c.image_pull_policy.as_deref().is_none_or(str::is_empty) {
        let policy = default_pull_policy(c.image.as_deref().unwrap_or(""));
        c.image_pull_policy = Some(policy.to_string());
    }
    set_str_if_empty(
        &mut c.termination_message_path,
        DEFAULT_TERMINATION_MESSAGE_PATH,
    );
    set_str_if_empty(&mut c.termination_message_policy, "File");
    for port in c.ports.iter_mut().flatten() {
        set_str_if_empty(&mut port.protocol, "TCP");
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
}

pub fn default_probe(probe: &mut Probe) {
    set_if_none(&mut probe.timeout_seconds, 1);
    set_if_none(&mut probe.period_seconds, 10);
    set_if_none(&mut probe.success_threshold, 1);
    set_if_none(&mut probe.failure_threshold, 3);
    if let Some(http) = probe.http_get.as_mut() {
        set_str_if_empty(&mut http.path, "/");
        set_str_if_empty(&mut http.scheme, "HTTP");
    }
}

fn default_volume(v: &mut Volume) {
    if let Some(cm) = v.config_map.as_mut() {
        set_if_none(&mut cm.default_mode, DEFAULT_FILE_MODE);
    }
    if let Some(secret) = v.secret.as_mut() {
        set_if_none(&mut secret.default_mode, DEFAULT_FILE_MODE);
    }
    if let Some(downward) = v.downward_api.as_mut() {
        set_if_none(&mut downward.default_mode, DEFAULT_FILE_MODE);
    }
    if let Some(projected) = v.projected.as_mut() {
        set_if_none(&mut projected.default_mode, DEFAULT_FILE_MODE);
    }
}

pub fn default_service(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(Default::default);
    set_str_if_empty(&mut spec.session_affinity, "None");
    if spec.session_affinity.as_deref() == Some("None") {
        spec.session_affinity_config = None;
    }
    set_str_if_empty(&mut spec.type_, "ClusterIP");
    for port in spec.ports.iter_mut().flatten() {
        set_str_if_empty(&mut port.protocol, "TCP");
        let unset = match &port.target_port {
            None => true,
            Some(IntOrString::Int(n)) => *n == 0,
            Some(IntOrString::String(s)) => s.is_empty(),
        };
        if unset {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    let has_external_ips = spec
        .external_ips
        .as_ref()
        .is_some_and(|ips| !ips.is_empty());
    let externally_accessible =
        matches!(type_, "NodePort" | "LoadBalancer") || (type_ == "ClusterIP" && has_external_ips);
    if externally_accessible {
        set_str_if_empty(&mut spec.external_traffic_policy, "Cluster");
    }
    if matches!(type_, "ClusterIP" | "NodePort" | "LoadBalancer") {
        set_if_none(&mut spec.internal_traffic_policy, "Cluster".to_string());
    }
    if type_ == "LoadBalancer" {
        set_if_none(&mut spec.allocate_load_balancer_node_ports, true);
    }
}

pub fn default_deployment(d: &mut Deployment) {
    let spec = d.spec.get_or_insert_with(Default::default);
    set_if_none(&mut spec.replicas, 1);
    let strategy = spec
        .strategy
        .get_or_insert_with(DeploymentStrategy::default);
    set_str_if_empty(&mut strategy.type_, "RollingUpdate");
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let rolling = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        set_if_none(
            &mut rolling.max_unavailable,
            IntOrString::String("25%".into()),
        );
        set_if_none(&mut rolling.max_surge, IntOrString::String("25%".into()));
    }
    set_if_none(&mut spec.revision_history_limit, 10);
    set_if_none(&mut spec.progress_deadline_seconds, 600);
    default_pod_template(&mut spec.template);
}

pub fn default_replica_set(rs: &mut ReplicaSet) {
    let spec = rs.spec.get_or_insert_with(Default::default);
    set_if_none(&mut spec.replicas, 1);
    if let Some(template) = spec.template.as_mut() {
        default_pod_template(template);
    }
}

/// `minReplicas` 1, and with no metrics the default one: 80% average CPU utilisation.
pub fn default_hpa(hpa: &mut crate::types::HorizontalPodAutoscaler) {
    use k8s_openapi::api::autoscaling::v2::{MetricSpec, MetricTarget, ResourceMetricSource};
    let spec = hpa.spec.get_or_insert_with(Default::default);
    set_if_none(&mut spec.min_replicas, 1);
    if spec.metrics.as_ref().is_none_or(|m| m.is_empty()) {
        spec.metrics = Some(vec![MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(80),
                    ..Default::default()
                },
            }),
            ..Default::default()
        }]);
    }
}

pub fn default_daemon_set(ds: &mut DaemonSet) {
    let spec = ds.spec.get_or_insert_with(Default::default);
    let strategy = spec
        .update_strategy
        .get_or_insert_with(DaemonSetUpdateStrategy::default);
    set_str_if_empty(&mut strategy.type_, "RollingUpdate");
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let rolling = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDaemonSet::default);
        set_if_none(&mut rolling.max_unavailable, IntOrString::Int(1));
        set_if_none(&mut rolling.max_surge, IntOrString::Int(0));
    }
    set_if_none(&mut spec.revision_history_limit, 10);
    default_pod_template(&mut spec.template);
}

pub fn default_stateful_set(ss: &mut StatefulSet) {
    let spec = ss.spec.get_or_insert_with(Default::default);
    set_if_none(&mut spec.replicas, 1);
    set_str_if_empty(&mut spec.pod_management_policy, "OrderedReady");
    let strategy = spec
        .update_strategy
        .get_or_insert_with(StatefulSetUpdateStrategy::default);
    set_str_if_empty(&mut strategy.type_, "RollingUpdate");
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let rolling = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateStatefulSetStrategy::default);
        set_if_none(&mut rolling.partition, 0);
    }
    set_if_none(&mut spec.revision_history_limit, 10);
    let retention = spec
        .persistent_volume_claim_retention_policy
        .get_or_insert_with(Default::default);
    set_str_if_empty(&mut retention.when_deleted, "Retain");
    set_str_if_empty(&mut retention.when_scaled, "Retain");
    default_pod_template(&mut spec.template);
}

/// A binding's subjects default their API group: `rbac.authorization.k8s.io` for users and
/// groups, the core group for service accounts.
fn default_subjects(subjects: Option<&mut Vec<Subject>>) {
    for s in subjects.into_iter().flatten() {
        if s.api_group.is_none() && matches!(s.kind.as_str(), "User" | "Group") {
            s.api_group = Some("rbac.authorization.k8s.io".into());
        }
    }
}

pub fn default_role_binding(rb: &mut RoleBinding) {
    default_subjects(rb.subjects.as_mut());
}

pub fn default_cluster_role_binding(crb: &mut ClusterRoleBinding) {
    default_subjects(crb.subjects.as_mut());
}

pub fn default_job(job: &mut Job) {
    let spec = job.spec.get_or_insert_with(Default::default);
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    set_if_none(&mut spec.parallelism, 1);
    let backoff = if spec.backoff_limit_per_index.is_some() {
        i32::MAX
    } else {
        6
    };
    set_if_none(&mut spec.backoff_limit, backoff);
    set_str_if_empty(&mut spec.completion_mode, "NonIndexed");
    set_if_none(&mut spec.suspend, false);
    let replacement = if spec.pod_failure_policy.is_some() {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    set_str_if_empty(&mut spec.pod_replacement_policy, replacement);
    // A Job without labels takes its template's.
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone());
    if job.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
        if let Some(labels) = template_labels {
            job.metadata.labels = Some(labels);
        }
    }
    default_pod_template(&mut spec.template);
}

pub fn default_namespace(ns: &mut Namespace) {
    if let Some(name) = ns.metadata.name.clone().filter(|n| !n.is_empty()) {
        ns.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(NAMESPACE_NAME_LABEL.to_string(), name);
    }
}

/// `type` defaults to `Opaque`, and `stringData` is merged into `data` (its values win), as the
/// Kubernetes API does on write: stored Secrets have no `stringData`.
pub fn default_secret(secret: &mut Secret) {
    set_str_if_empty(&mut secret.type_, "Opaque");
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        for (key, value) in string_data {
            data.insert(key, ByteString(value.into_bytes()));
        }
    }
}

/// A node's allocatable resources default to its capacity.
pub fn default_node(node: &mut Node) {
    if let Some(status) = node.status.as_mut() {
        if status.allocatable.as_ref().is_none_or(|a| a.is_empty()) {
            if let Some(capacity) = &status.capacity {
                status.allocatable = Some(capacity.clone());
            }
        }
    }
}

pub fn default_endpoints(ep: &mut Endpoints) {
    for subset in ep.subsets.iter_mut().flatten() {
        for port in subset.ports.iter_mut().flatten() {
            set_str_if_empty(&mut port.protocol, "TCP");
        }
    }
}

pub fn default_endpoint_slice(slice: &mut EndpointSlice) {
    for port in slice.ports.iter_mut().flatten() {
        set_if_none(&mut port.name, String::new());
        set_str_if_empty(&mut port.protocol, "TCP");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::testing::typed;
    use serde_json::{json, Value};

    fn defaulted(v: Value) -> Value {
        let mut obj = Object::from_value(v).unwrap();
        apply(&mut obj);
        let once = obj.clone();
        apply(&mut obj);
        assert_eq!(obj, once, "defaulting twice changed the object");
        obj.to_value().unwrap()
    }

    #[test]
    fn pod_spec_defaults() {
        let pod = defaulted(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}
        }));
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert!(c["ports"][0].get("hostPort").is_none());
    }

    #[test]
    fn explicit_values_are_kept() {
        let pod = defaulted(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                "dnsPolicy": "Default", "schedulerName": "mine", "enableServiceLinks": false,
                "containers": [{"name": "app", "image": "nginx", "imagePullPolicy": "Never",
                    "ports": [{"containerPort": 53, "protocol": "UDP"}]}]
            }
        }));
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["terminationGracePeriodSeconds"], 5);
        assert_eq!(spec["dnsPolicy"], "Default");
        assert_eq!(spec["schedulerName"], "mine");
        assert_eq!(spec["enableServiceLinks"], false);
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Never");
        assert_eq!(spec["containers"][0]["ports"][0]["protocol"], "UDP");
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        assert_eq!(default_pull_policy("nginx"), "Always");
        assert_eq!(default_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/app"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/app:v2"), "IfNotPresent");
        assert_eq!(default_pull_policy("app@sha256:abcd"), "IfNotPresent");
        assert_eq!(default_pull_policy("app:latest@sha256:abcd"), "Always");
        assert_eq!(default_pull_policy(""), "IfNotPresent");
        assert_eq!(image_tag("registry.example.com/team/app:1.0"), Some("1.0"));
        assert_eq!(image_tag("app@sha256:abcd"), None);
    }

    #[test]
    fn pod_only_defaults() {
        let pod = defaulted(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "hostNetwork": true,
                "initContainers": [{"name": "init", "image": "busybox",
                    "resources": {"limits": {"cpu": "1"}}}],
                "containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 8080}],
                    "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "100m"}}}]
            }
        }));
        let app = &pod["spec"]["containers"][0];
        assert_eq!(
            app["resources"]["requests"],
            json!({"cpu": "100m", "memory": "1Gi"})
        );
        assert_eq!(app["ports"][0]["hostPort"], 8080);
        assert_eq!(
            pod["spec"]["initContainers"][0]["resources"]["requests"],
            json!({"cpu": "1"})
        );
        assert_eq!(
            pod["spec"]["initContainers"][0]["imagePullPolicy"],
            "Always"
        );

        // Templates get the pod-spec defaults but not the Pod-only ones.
        let deploy = defaulted(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {"containers": [
                {"name": "app", "image": "nginx", "resources": {"limits": {"cpu": "1"}}}]}}}
        }));
        let spec = &deploy["spec"]["template"]["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["containers"][0]["terminationMessagePolicy"], "File");
        assert!(spec["containers"][0]["resources"].get("requests").is_none());
        assert!(spec.get("enableServiceLinks").is_none());
    }

    #[test]
    fn probe_and_volume_defaults() {
        let pod = defaulted(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "containers": [{"name": "app", "image": "nginx",
                    "livenessProbe": {"httpGet": {"port": 80}},
                    "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 3}}],
                "volumes": [{"name": "cfg", "configMap": {"name": "c"}}, {"name": "s", "secret": {"secretName": "s"}}]
            }
        }));
        let live = &pod["spec"]["containers"][0]["livenessProbe"];
        assert_eq!(live["timeoutSeconds"], 1);
        assert_eq!(live["periodSeconds"], 10);
        assert_eq!(live["successThreshold"], 1);
        assert_eq!(live["failureThreshold"], 3);
        assert_eq!(live["httpGet"]["path"], "/");
        assert_eq!(live["httpGet"]["scheme"], "HTTP");
        assert_eq!(
            pod["spec"]["containers"][0]["readinessProbe"]["periodSeconds"],
            3
        );
        assert_eq!(pod["spec"]["volumes"][0]["configMap"]["defaultMode"], 420);
        assert_eq!(pod["spec"]["volumes"][1]["secret"]["defaultMode"], 420);
    }

    #[test]
    fn service_defaults() {
        let svc = defaulted(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"port": 80}, {"port": 443, "targetPort": "https", "protocol": "TCP"}]}
        }));
        let spec = &svc["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert!(spec.get("externalTrafficPolicy").is_none());
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["ports"][1]["targetPort"], "https");

        let lb = defaulted(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 0}]}
        }));
        assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(lb["spec"]["ports"][0]["targetPort"], 80);
    }

    #[test]
    fn deployment_defaults() {
        let d = defaulted(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}}
        }));
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(
            spec["template"]["spec"]["schedulerName"],
            "default-scheduler"
        );

        let recreate = defaulted(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 0, "strategy": {"type": "Recreate"}, "selector": {}, "template": {}}
        }));
        assert_eq!(recreate["spec"]["replicas"], 0);
        assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn replica_set_and_daemon_set_defaults() {
        let rs = defaulted(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}}
        }));
        assert_eq!(rs["spec"]["replicas"], 1);
        assert_eq!(
            rs["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
        let ds = defaulted(json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "proxy", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}}
        }));
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(ds["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    }

    #[test]
    fn job_defaults() {
        let job = defaulted(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "namespace": "default"},
            "spec": {"template": {"metadata": {"labels": {"job": "pi"}},
                "spec": {"containers": [{"name": "pi", "image": "perl:5.34"}], "restartPolicy": "Never"}}}
        }));
        let spec = &job["spec"];
        assert_eq!(spec["parallelism"], 1);
        assert_eq!(spec["completions"], 1);
        assert_eq!(spec["backoffLimit"], 6);
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(job["metadata"]["labels"], json!({"job": "pi"}));

        // A parallel job with a work queue keeps completions unset.
        let queue = defaulted(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "q", "namespace": "default"},
            "spec": {"parallelism": 4, "template": {"spec": {"containers": []}}}
        }));
        assert_eq!(queue["spec"]["parallelism"], 4);
        assert!(queue["spec"].get("completions").is_none());
    }

    #[test]
    fn namespace_secret_node_and_endpoint_defaults() {
        let ns = defaulted(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}),
        );
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team-a"
        );

        let secret = defaulted(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "a"},
            "data": {"a": "b2xk"}, "stringData": {"a": "new", "b": "x"}
        }));
        assert_eq!(secret["type"], "Opaque");
        assert_eq!(secret["data"], json!({"a": "bmV3", "b": "eA=="}));
        assert!(secret.get("stringData").is_none());

        let node = defaulted(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"capacity": {"cpu": "4"}}
        }));
        assert_eq!(node["status"]["allocatable"], json!({"cpu": "4"}));

        let ep = defaulted(json!({
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e", "namespace": "a"},
            "subsets": [{"ports": [{"port": 80}]}]
        }));
        assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");

        let slice = defaulted(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "e", "namespace": "a"}, "addressType": "IPv4", "endpoints": [],
            "ports": [{"port": 80}]
        }));
        assert_eq!(
            slice["ports"][0],
            json!({"name": "", "port": 80, "protocol": "TCP"})
        );
    }

    #[test]
    fn defaulting_direct_types() {
        let mut pod: Pod = typed(json!({"metadata": {"name": "a"}}));
        default_pod(&mut pod);
        assert_eq!(pod.spec.unwrap().restart_policy.as_deref(), Some("Always"));
    }
}
