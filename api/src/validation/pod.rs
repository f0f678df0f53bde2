//! Pods, pod templates, containers and resource requirements.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, Pod, PodSpec, PodTemplateSpec, ResourceRequirements,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as QuantityString;

use super::field::{ErrorList, FieldError, Path};
use super::meta::{
    nonnegative, one_of, positive, validate_annotations, validate_labels, validate_object_meta,
    NameRule,
};
use super::names;
use crate::quantity::Quantity;

pub const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
pub const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
pub const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
pub const TERMINATION_MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];
pub const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
pub const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
const TOLERATION_OPERATORS: &[&str] = &["Exists", "Equal"];

pub fn validate_pod(pod: &Pod) -> ErrorList {
    let mut errs = validate_object_meta(
        &pod.metadata,
        true,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    );
    let empty = PodSpec::default();
    errs.extend(validate_pod_spec(
        pod.spec.as_ref().unwrap_or(&empty),
        &Path::new("spec"),
    ));
    errs
}

/// A pod template: its labels and annotations, and its pod spec (an absent spec fails as an
/// empty one would: no containers).
pub fn validate_pod_template_spec(template: &PodTemplateSpec, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    if let Some(meta) = &template.metadata {
        let meta_path = path.child("metadata");
        errs.extend(validate_labels(
            meta.labels.as_ref(),
            &meta_path.child("labels"),
        ));
        errs.extend(validate_annotations(
            meta.annotations.as_ref(),
            &meta_path.child("annotations"),
        ));
    }
    let empty = PodSpec::default();
    errs.extend(validate_pod_spec(
        template.spec.as_ref().unwrap_or(&empty),
        &path.child("spec"),
    ));
    errs
}

/// The pod spec. Fields that defaulting fills (restartPolicy, dnsPolicy, protocols...) may be
/// absent; when present they must hold a supported value.
pub fn validate_pod_spec(spec: &PodSpec, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    let volumes = validate_volumes(spec.volumes.as_deref().unwrap_or_default(), path, &mut errs);

    let init = spec.init_containers.as_deref().unwrap_or_default();
    let mut container_names = HashSet::new();
    for (i, c) in init.iter().enumerate() {
        let p = path.child("initContainers").index(i);
        errs.extend(validate_container(c, &p, &volumes, true));
        check_unique_name(c, &p, &mut container_names, &mut errs);
    }
    if spec.containers.is_empty() {
        errs.push(FieldError::required(&path.child("containers"), ""));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let p = path.child("containers").index(i);
        errs.extend(validate_container(c, &p, &volumes, false));
        check_unique_name(c, &p, &mut container_names, &mut errs);
    }
    errs.extend(validate_host_ports(spec, path));

    errs.extend(one_of(
        spec.restart_policy.as_deref(),
        RESTART_POLICIES,
        &path.child("restartPolicy"),
    ));
    errs.extend(one_of(
        spec.dns_policy.as_deref(),
        DNS_POLICIES,
        &path.child("dnsPolicy"),
    ));
    errs.extend(validate_labels(
        spec.node_selector.as_ref(),
        &path.child("nodeSelector"),
    ));
    let subdomain_fields = [
        ("nodeName", &spec.node_name),
        ("serviceAccountName", &spec.service_account_name),
        ("schedulerName", &spec.scheduler_name),
    ];
    for (field, value) in subdomain_fields {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            for msg in names::is_dns1123_subdomain(v) {
                errs.push(FieldError::invalid(&path.child(field), v, msg));
            }
        }
    }
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            for msg in names::is_dns1123_label(v) {
                errs.push(FieldError::invalid(&path.child(field), v, msg));
            }
        }
    }
    errs.extend(positive(
        spec.active_deadline_seconds,
        &path.child("activeDeadlineSeconds"),
    ));
    errs.extend(nonnegative(
        spec.termination_grace_period_seconds,
        &path.child("terminationGracePeriodSeconds"),
    ));
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        errs.extend(validate_toleration(t, &path.child("tolerations").index(i)));
    }
    errs
}

fn check_unique_name(c: &Container, path: &Path, seen: &mut HashSet<String>, errs: &mut ErrorList) {
    if !c.name.is_empty() && !seen.insert(c.name.clone()) {
        errs.push(FieldError::duplicate(&path.child("name"), &c.name));
    }
}

/// Validates the volumes and returns their names, for volume mounts to refer to.
fn validate_volumes(volumes: &[Volume], spec_path: &Path, errs: &mut ErrorList) -> HashSet<String> {
    let mut seen = HashSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = spec_path.child("volumes").index(i);
        if v.name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        } else {
            for msg in names::is_dns1123_label(&v.name) {
                errs.push(FieldError::invalid(&p.child("name"), &v.name, msg));
            }
            if !seen.insert(v.name.clone()) {
                errs.push(FieldError::duplicate(&p.child("name"), &v.name));
            }
        }
        // Every volume source is an optional field beside `name`: exactly one must be set.
        let sources = serde_json::to_value(v)
            .ok()
            .and_then(|value| {
                value
                    .as_object()
                    .map(|o| o.keys().filter(|k| *k != "name").count())
            })
            .unwrap_or(0);
        match sources {
            0 => errs.push(FieldError::required(&p, "must specify a volume type")),
            1 => {}
            _ => errs.push(FieldError::forbidden(
                &p,
                "may not specify more than 1 volume type",
            )),
        }
    }
    seen
}

/// One container (or init container) at `path`.
pub fn validate_container(
    c: &Container,
    path: &Path,
    volumes: &HashSet<String>,
    init: bool,
) -> ErrorList {
    let mut errs = ErrorList::new();
    if c.name.is_empty() {
        errs.push(FieldError::required(&path.child("name"), ""));
    } else {
        for msg in names::is_dns1123_label(&c.name) {
            errs.push(FieldError::invalid(&path.child("name"), &c.name, msg));
        }
    }
    match c.image.as_deref() {
        None | Some("") => errs.push(FieldError::required(&path.child("image"), "")),
        Some(image) if image.trim() != image => errs.push(FieldError::invalid(
            &path.child("image"),
            image,
            "must not have leading or trailing whitespace",
        )),
        Some(_) => {}
    }
    errs.extend(one_of(
        c.image_pull_policy.as_deref(),
        PULL_POLICIES,
        &path.child("imagePullPolicy"),
    ));
    errs.extend(one_of(
        c.termination_message_policy.as_deref(),
        TERMINATION_MESSAGE_POLICIES,
        &path.child("terminationMessagePolicy"),
    ));
    match (init, c.restart_policy.as_deref()) {
        (_, None) => {}
        (true, Some(policy)) => errs.extend(one_of(
            Some(policy),
            &["Always"],
            &path.child("restartPolicy"),
        )),
        (false, Some(_)) => errs.push(FieldError::forbidden(
            &path.child("restartPolicy"),
            "may not be set for non-init containers",
        )),
    }
    errs.extend(validate_container_ports(
        c.ports.as_deref().unwrap_or_default(),
        &path.child("ports"),
    ));
    errs.extend(validate_env(
        c.env.as_deref().unwrap_or_default(),
        &path.child("env"),
    ));
    if let Some(resources) = &c.resources {
        errs.extend(validate_resource_requirements(
            resources,
            &path.child("resources"),
        ));
    }
    errs.extend(validate_volume_mounts(
        c.volume_mounts.as_deref().unwrap_or_default(),
        volumes,
        &path.child("volumeMounts"),
    ));
    errs
}

fn validate_container_ports(ports: &[ContainerPort], path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    let mut names_seen = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            for msg in names::is_valid_port_name(name) {
                errs.push(FieldError::invalid(&p.child("name"), name, msg));
            }
            if !names_seen.insert(name) {
                errs.push(FieldError::duplicate(&p.child("name"), name));
            }
        }
        if port.container_port == 0 {
            errs.push(FieldError::required(&p.child("containerPort"), ""));
        } else {
            for msg in names::is_valid_port_num(port.container_port) {
                errs.push(FieldError::invalid(
                    &p.child("containerPort"),
                    port.container_port,
                    msg,
                ));
            }
        }
        if let Some(host_port) = port.host_port.filter(|h| *h != 0) {
            for msg in names::is_valid_port_num(host_port) {
                errs.push(FieldError::invalid(&p.child("hostPort"), host_port, msg));
            }
        }
        errs.extend(one_of(
            port.protocol.as_deref(),
            PROTOCOLS,
            &p.child("protocol"),
        ));
    }
    errs
}

/// Two containers of a pod may not claim the same host port, IP and protocol.
fn validate_host_ports(spec: &PodSpec, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    let mut seen = HashSet::new();
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (path.child("initContainers").index(i), c))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| (path.child("containers").index(i), c)),
        );
    for (cpath, c) in all {
        for (j, port) in c.ports.iter().flatten().enumerate() {
            let Some(host_port) = port.host_port.filter(|h| *h != 0) else {
                continue;
            };
            let key = format!(
                "{}/{}/{}",
                port.host_ip.as_deref().unwrap_or(""),
                port.protocol.as_deref().unwrap_or("TCP"),
                host_port
            );
            if !seen.insert(key.clone()) {
                errs.push(FieldError::duplicate(
                    &cpath.child("ports").index(j).child("hostPort"),
                    key,
                ));
            }
        }
    }
    errs
}

fn validate_env(env: &[EnvVar], path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    for (i, var) in env.iter().enumerate() {
        let p = path.index(i);
        if var.name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        } else {
            for msg in names::is_env_var_name(&var.name) {
                errs.push(FieldError::invalid(&p.child("name"), &var.name, msg));
            }
        }
        if var.value.as_deref().is_some_and(|v| !v.is_empty()) && var.value_from.is_some() {
            errs.push(FieldError::invalid(
                &p.child("valueFrom"),
                "",
                "may not be specified when `value` is not empty",
            ));
        }
    }
    errs
}

fn validate_volume_mounts(
    mounts: &[VolumeMount],
    volumes: &HashSet<String>,
    path: &Path,
) -> ErrorList {
    let mut errs = ErrorList::new();
    let mut paths = HashSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let p = path.index(i);
        if m.name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        } else if !volumes.contains(&m.name) {
            errs.push(FieldError::not_found(&p.child("name"), &m.name));
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(&p.child("mountPath"), ""));
        } else if !paths.insert(m.mount_path.as_str()) {
            errs.push(FieldError::invalid(
                &p.child("mountPath"),
                &m.mount_path,
                "must be unique",
            ));
        }
    }
    errs
}

/// Names a container may request: the standard ones, `hugepages-<size>`, or a qualified name
/// with a domain (extended resources such as `example.com/gpu`).
fn validate_resource_name(name: &str, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    if name.contains('/') {
        for msg in names::is_qualified_name(name) {
            errs.push(FieldError::invalid(path, name, msg));
        }
    } else if !matches!(name, "cpu" | "memory" | "ephemeral-storage")
        && !name.starts_with("hugepages-")
    {
        errs.push(FieldError::invalid(
            path,
            name,
            "must be a standard resource for containers",
        ));
    }
    errs
}

fn parse_resources(
    list: Option<&BTreeMap<String, QuantityString>>,
    path: &Path,
    errs: &mut ErrorList,
) -> BTreeMap<String, Quantity> {
    let mut parsed = BTreeMap::new();
    for (name, value) in list.into_iter().flatten() {
        let p = path.key(name);
        errs.extend(validate_resource_name(name, &p));
        match Quantity::parse(&value.0) {
            Ok(q) if q.is_negative() => errs.push(FieldError::invalid(
                &p,
                &value.0,
                "must be greater than or equal to 0",
            )),
            Ok(q) => {
                parsed.insert(name.clone(), q);
            }
            Err(e) => errs.push(FieldError::invalid(&p, &value.0, e.to_string())),
        }
    }
    parsed
}

/// Every quantity parses and is not negative, names are valid, and no request exceeds its limit.
pub fn validate_resource_requirements(req: &ResourceRequirements, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    let limits = parse_resources(req.limits.as_ref(), &path.child("limits"), &mut errs);
    let requests = parse_resources(req.requests.as_ref(), &path.child("requests"), &mut errs);
    for (name, request) in &requests {
        if let Some(limit) = limits.get(name) {
            if request > limit {
                errs.push(FieldError::invalid(
                    &path.child("requests").key(name),
                    request.to_string(),
                    format!("must be less than or equal to {name} limit of {limit}"),
                ));
            }
        }
    }
    errs
}

pub fn validate_toleration(t: &Toleration, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    let key = t.key.as_deref().unwrap_or("");
    let operator = t.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        if operator != "Exists" {
            errs.push(FieldError::invalid(
                &path.child("operator"),
                operator,
                "operator must be Exists when `key` is empty, which means \"match all values \
                 and all keys\"",
            ));
        }
    } else {
        for msg in names::is_qualified_name(key) {
            errs.push(FieldError::invalid(&path.child("key"), key, msg));
        }
    }
    errs.extend(one_of(
        t.operator.as_deref(),
        TOLERATION_OPERATORS,
        &path.child("operator"),
    ));
    let value = t.value.as_deref().unwrap_or("");
    if operator == "Exists" && !value.is_empty() {
        errs.push(FieldError::invalid(
            &path.child("operator"),
            operator,
            "value must be empty when `operator` is 'Exists'",
        ));
    }
    if operator == "Equal" {
        for msg in names::is_valid_label_value(value) {
            errs.push(FieldError::invalid(&path.child("value"), value, msg));
        }
    }
    errs.extend(one_of(
        t.effect.as_deref().filter(|e| !e.is_empty()),
        TAINT_EFFECTS,
        &path.child("effect"),
    ));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::testing::{assert_clean, assert_has, patched, typed};
    use crate::validation::ErrorType::*;
    use serde_json::{json, Value};

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "containers": [{
                    "name": "app",
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "64Mi"},
                        "limits": {"cpu": "500m", "memory": "128Mi"}
                    },
                    "env": [{"name": "MODE", "value": "prod"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                }],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "restartPolicy": "Always",
                "dnsPolicy": "ClusterFirst"
            }
        })
    }

    fn errors_of(v: Value) -> ErrorList {
        validate_pod(&typed::<Pod>(v))
    }

    fn with(pointer: &str, value: Value) -> ErrorList {
        errors_of(patched(pod(), pointer, value))
    }

    #[test]
    fn a_valid_pod_passes() {
        assert_clean(&errors_of(pod()));
    }

    #[test]
    fn containers_required() {
        assert_has(
            &with("/spec/containers", json!([])),
            Required,
            "spec.containers",
        );
        let mut no_spec = pod();
        no_spec.as_object_mut().unwrap().remove("spec");
        assert_has(&errors_of(no_spec), Required, "spec.containers");
    }

    #[test]
    fn container_names() {
        assert_has(
            &with("/spec/containers/0/name", json!("")),
            Required,
            "spec.containers[0].name",
        );
        assert_has(
            &with("/spec/containers/0/name", json!("App")),
            Invalid,
            "spec.containers[0].name",
        );
        let errs = with(
            "/spec/initContainers",
            json!([{"name": "app", "image": "busybox"}]),
        );
        assert_has(&errs, Duplicate, "spec.containers[0].name");
        let errs = with(
            "/spec/containers/1",
            json!({"name": "app", "image": "busybox"}),
        );
        assert_has(&errs, Duplicate, "spec.containers[1].name");
        assert_clean(&with(
            "/spec/initContainers",
            json!([{"name": "init", "image": "busybox"}]),
        ));
    }

    #[test]
    fn image_required() {
        assert_has(
            &with("/spec/containers/0/image", json!("")),
            Required,
            "spec.containers[0].image",
        );
        assert_has(
            &with("/spec/containers/0/image", Value::Null),
            Required,
            "spec.containers[0].image",
        );
        assert_has(
            &with("/spec/containers/0/image", json!(" nginx")),
            Invalid,
            "spec.containers[0].image",
        );
        assert_has(
            &with("/spec/initContainers", json!([{"name": "init"}])),
            Required,
            "spec.initContainers[0].image",
        );
    }

    #[test]
    fn container_ports() {
        let port = "spec.containers[0].ports[0]";
        assert_has(
            &with("/spec/containers/0/ports/0/containerPort", json!(0)),
            Required,
            &format!("{port}.containerPort"),
        );
        assert_has(
            &with("/spec/containers/0/ports/0/containerPort", json!(65536)),
            Invalid,
            &format!("{port}.containerPort"),
        );
        assert_has(
            &with("/spec/containers/0/ports/0/containerPort", json!(-1)),
            Invalid,
            &format!("{port}.containerPort"),
        );
        assert_clean(&with(
            "/spec/containers/0/ports/0/containerPort",
            json!(65535),
        ));
        assert_has(
            &with("/spec/containers/0/ports/0/protocol", json!("ICMP")),
            NotSupported,
            &format!("{port}.protocol"),
        );
        for proto in ["TCP", "UDP", "SCTP"] {
            assert_clean(&with("/spec/containers/0/ports/0/protocol", json!(proto)));
        }
        assert_has(
            &with("/spec/containers/0/ports/0/hostPort", json!(70000)),
            Invalid,
            &format!("{port}.hostPort"),
        );
        assert_has(
            &with("/spec/containers/0/ports/0/name", json!("HTTP")),
            Invalid,
            &format!("{port}.name"),
        );
        let errs = with(
            "/spec/containers/0/ports/1",
            json!({"containerPort": 81, "name": "http"}),
        );
        assert_has(&errs, Duplicate, "spec.containers[0].ports[1].name");
        let nested = "spec.containers[1].ports[0].containerPort";
        let errs = with(
            "/spec/containers/1",
            json!({"name": "side", "image": "busybox", "ports": [{"containerPort": 0}]}),
        );
        assert_has(&errs, Required, nested);
    }

    #[test]
    fn host_ports_are_unique_per_pod() {
        let errs = with(
            "/spec/containers/1",
            json!({"name": "b", "image": "x", "ports": [{"containerPort": 81, "hostPort": 8080}]}),
        );
        assert_clean(&errs);
        let mut v = patched(pod(), "/spec/containers/0/ports/0/hostPort", json!(8080));
        v = patched(
            v,
            "/spec/containers/1",
            json!({"name": "b", "image": "x", "ports": [{"containerPort": 81, "hostPort": 8080}]}),
        );
        assert_has(
            &errors_of(v),
            Duplicate,
            "spec.containers[1].ports[0].hostPort",
        );
    }

    #[test]
    fn resources() {
        let r = "spec.containers[0].resources";
        assert_has(
            &with("/spec/containers/0/resources/limits/cpu", json!("1.5.5")),
            Invalid,
            &format!("{r}.limits[cpu]"),
        );
        assert_has(
            &with(
                "/spec/containers/0/resources/requests/memory",
                json!("-1Mi"),
            ),
            Invalid,
            &format!("{r}.requests[memory]"),
        );
        assert_has(
            &with("/spec/containers/0/resources/requests/cpu", json!("1")),
            Invalid,
            &format!("{r}.requests[cpu]"),
        );
        let errs = with("/spec/containers/0/resources/requests/cpu", json!("1"));
        assert_eq!(
            errs[0].to_string(),
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"1\": must be less \
             than or equal to cpu limit of 500m"
        );
        assert_clean(&with(
            "/spec/containers/0/resources/requests/cpu",
            json!("0.5"),
        ));
        assert_has(
            &with("/spec/containers/0/resources/limits/gpu", json!("1")),
            Invalid,
            &format!("{r}.limits[gpu]"),
        );
        assert_clean(&with(
            "/spec/containers/0/resources/limits/example.com~1gpu",
            json!("1"),
        ));
        assert_clean(&with(
            "/spec/containers/0/resources/limits/hugepages-2Mi",
            json!("2Mi"),
        ));
    }

    #[test]
    fn restart_dns_and_pull_policies() {
        assert_has(
            &with("/spec/restartPolicy", json!("Sometimes")),
            NotSupported,
            "spec.restartPolicy",
        );
        for p in ["Always", "OnFailure", "Never"] {
            assert_clean(&with("/spec/restartPolicy", json!(p)));
        }
        assert_has(
            &with("/spec/dnsPolicy", json!("Google")),
            NotSupported,
            "spec.dnsPolicy",
        );
        assert_has(
            &with("/spec/containers/0/imagePullPolicy", json!("Sometimes")),
            NotSupported,
            "spec.containers[0].imagePullPolicy",
        );
        assert_clean(&with("/spec/containers/0/imagePullPolicy", json!("Never")));
        assert_has(
            &with("/spec/containers/0/terminationMessagePolicy", json!("Log")),
            NotSupported,
            "spec.containers[0].terminationMessagePolicy",
        );
    }

    #[test]
    fn container_restart_policy_only_for_sidecars() {
        assert_has(
            &with("/spec/containers/0/restartPolicy", json!("Always")),
            Forbidden,
            "spec.containers[0].restartPolicy",
        );
        let sidecar = json!([{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]);
        assert_clean(&with("/spec/initContainers", sidecar));
        let bad = json!([{"name": "proxy", "image": "envoy", "restartPolicy": "Never"}]);
        assert_has(
            &with("/spec/initContainers", bad),
            NotSupported,
            "spec.initContainers[0].restartPolicy",
        );
    }

    #[test]
    fn env_vars() {
        assert_has(
            &with("/spec/containers/0/env/0/name", json!("")),
            Required,
            "spec.containers[0].env[0].name",
        );
        assert_has(
            &with("/spec/containers/0/env/0/name", json!("1X")),
            Invalid,
            "spec.containers[0].env[0].name",
        );
        assert_has(
            &with(
                "/spec/containers/0/env/0/valueFrom",
                json!({"fieldRef": {"fieldPath": "metadata.name"}}),
            ),
            Invalid,
            "spec.containers[0].env[0].valueFrom",
        );
    }

    #[test]
    fn volumes_and_mounts() {
        assert_has(
            &with("/spec/volumes/0/name", json!("Data")),
            Invalid,
            "spec.volumes[0].name",
        );
        assert_has(
            &with("/spec/volumes/1", json!({"name": "data", "emptyDir": {}})),
            Duplicate,
            "spec.volumes[1].name",
        );
        assert_has(
            &with("/spec/volumes/0", json!({"name": "data"})),
            Required,
            "spec.volumes[0]",
        );
        assert_has(
            &with(
                "/spec/volumes/0",
                json!({"name": "data", "emptyDir": {}, "hostPath": {"path": "/x"}}),
            ),
            Forbidden,
            "spec.volumes[0]",
        );
        assert_has(
            &with("/spec/containers/0/volumeMounts/0/name", json!("other")),
            NotFound,
            "spec.containers[0].volumeMounts[0].name",
        );
        assert_has(
            &with("/spec/containers/0/volumeMounts/0/mountPath", json!("")),
            Required,
            "spec.containers[0].volumeMounts[0].mountPath",
        );
        assert_has(
            &with(
                "/spec/containers/0/volumeMounts/1",
                json!({"name": "data", "mountPath": "/data"}),
            ),
            Invalid,
            "spec.containers[0].volumeMounts[1].mountPath",
        );
    }

    #[test]
    fn pod_level_fields() {
        assert_has(
            &with("/spec/nodeName", json!("Node_1")),
            Invalid,
            "spec.nodeName",
        );
        assert_clean(&with("/spec/nodeName", json!("node-1.example")));
        assert_has(
            &with("/spec/serviceAccountName", json!("SA")),
            Invalid,
            "spec.serviceAccountName",
        );
        assert_has(
            &with("/spec/hostname", json!("a.b")),
            Invalid,
            "spec.hostname",
        );
        assert_has(
            &with("/spec/activeDeadlineSeconds", json!(0)),
            Invalid,
            "spec.activeDeadlineSeconds",
        );
        assert_clean(&with("/spec/activeDeadlineSeconds", json!(30)));
        assert_has(
            &with("/spec/terminationGracePeriodSeconds", json!(-1)),
            Invalid,
            "spec.terminationGracePeriodSeconds",
        );
        assert_has(
            &with("/spec/nodeSelector", json!({"bad key": "x"})),
            Invalid,
            "spec.nodeSelector",
        );
        assert_clean(&with(
            "/spec/nodeSelector",
            json!({"kubernetes.io/os": "linux"}),
        ));
    }

    #[test]
    fn tolerations() {
        let t = "spec.tolerations[0]";
        assert_clean(&with(
            "/spec/tolerations",
            json!([{"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}]),
        ));
        assert_clean(&with("/spec/tolerations", json!([{"operator": "Exists"}])));
        assert_has(
            &with(
                "/spec/tolerations",
                json!([{"key": "k", "operator": "Like"}]),
            ),
            NotSupported,
            &format!("{t}.operator"),
        );
        assert_has(
            &with(
                "/spec/tolerations",
                json!([{"key": "k", "effect": "Never"}]),
            ),
            NotSupported,
            &format!("{t}.effect"),
        );
        assert_has(
            &with("/spec/tolerations", json!([{"value": "v"}])),
            Invalid,
            &format!("{t}.operator"),
        );
        assert_has(
            &with(
                "/spec/tolerations",
                json!([{"key": "k", "operator": "Exists", "value": "v"}]),
            ),
            Invalid,
            &format!("{t}.operator"),
        );
    }

    #[test]
    fn every_failure_is_reported_at_once() {
        let mut v = patched(pod(), "/spec/containers/0/image", json!(""));
        v = patched(v, "/spec/containers/0/ports/0/containerPort", json!(70000));
        v = patched(v, "/spec/restartPolicy", json!("Sometimes"));
        v = patched(v, "/metadata/name", json!("Web"));
        let errs = errors_of(v);
        assert_has(&errs, Required, "spec.containers[0].image");
        assert_has(&errs, Invalid, "spec.containers[0].ports[0].containerPort");
        assert_has(&errs, NotSupported, "spec.restartPolicy");
        assert_has(&errs, Invalid, "metadata.name");
        assert_eq!(errs.len(), 4);
    }
}
