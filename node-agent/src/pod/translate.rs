//! A Pod in the runtime's terms, as kubelet does for CRI: the sandbox config, each
//! container's config (image, command, environment with its references resolved and
//! `$(VAR)` expanded, mounts, security context, resources) and the files of the pod's
//! configMap, secret, downwardAPI and projected volumes. Pure: ConfigMaps and Secrets are
//! fetched by the caller and passed in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use berth_api::quantity::Quantity;
use berth_runtime::pod::{ContainerConfig, DnsConfig, SandboxConfig, SeccompProfile, VolumeMount};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, ObjectFieldSelector, Pod, PodSpec,
    ResourceFieldSelector, Secret,
};

/// Why a container's config could not be made (shown as `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("unsupported fieldPath {0:?}")]
    FieldPath(String),
    #[error("unsupported resource {0:?} in resourceFieldRef")]
    ResourceField(String),
    #[error("volume {volume:?}: {reason}")]
    Volume { volume: String, reason: String },
    #[error("container {container:?}: volume mount {volume:?} names no volume of the pod")]
    NoVolume { container: String, volume: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// ConfigMaps and Secrets of the pod's namespace that it refers to (absent ones are
/// missing).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
}

/// The names of the ConfigMaps and Secrets the pod refers to, for the caller to fetch.
pub fn references(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let Some(spec) = &pod.spec else {
        return (cms, secrets);
    };
    for c in all_containers(spec) {
        for e in c.env.iter().flatten() {
            if let Some(v) = &e.value_from {
                if let Some(r) = &v.config_map_key_ref {
                    cms.insert(r.name.clone());
                }
                if let Some(r) = &v.secret_key_ref {
                    secrets.insert(r.name.clone());
                }
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &f.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = &v.config_map {
            cms.insert(c.name.clone());
        }
        if let Some(s) = &v.secret {
            secrets.insert(s.secret_name.clone().unwrap_or_default());
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &p.config_map {
                cms.insert(c.name.clone());
            }
            if let Some(s) = &p.secret {
                secrets.insert(s.name.clone());
            }
        }
    }
    (cms, secrets)
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}

/// How the node sets up pod DNS.
#[derive(Debug, Clone, Default)]
pub struct DnsSettings {
    /// The cluster DNS servers (`--cluster-dns`); empty means the host's resolvers.
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// The host's resolv.conf, parsed.
    pub host: DnsConfig,
}

/// Parse a resolv.conf.
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut out = DnsConfig::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => out.servers.extend(words.next().map(str::to_string)),
            Some("search") | Some("domain") => {
                out.searches = words.map(str::to_string).collect();
            }
            Some("options") => out.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    out
}

fn dns_config(pod: &Pod, dns: &DnsSettings) -> DnsConfig {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = match policy {
        "None" => DnsConfig::default(),
        "Default" => dns.host.clone(),
        // ClusterFirstWithHostNet, and ClusterFirst without host networking.
        p if !dns.cluster_dns.is_empty() && (p == "ClusterFirstWithHostNet" || !host_network) => {
            let d = &dns.cluster_domain;
            let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
            searches.extend(dns.host.searches.iter().cloned());
            DnsConfig {
                servers: dns.cluster_dns.clone(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        _ => dns.host.clone(),
    };
    if let Some(c) = spec.and_then(|s| s.dns_config.as_ref()) {
        out.servers.extend(c.nameservers.iter().flatten().cloned());
        out.searches.extend(c.searches.iter().flatten().cloned());
        for o in c.options.iter().flatten() {
            let Some(name) = &o.name else { continue };
            out.options.retain(|x| x.split(':').next() != Some(name));
            out.options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            });
        }
    }
    out
}

/// Sum of the containers' limits of one resource, when every container has one.
fn pod_limit(spec: &PodSpec, resource: &str) -> Option<i128> {
    let mut sum = 0;
    for c in &spec.containers {
        let q = c.resources.as_ref()?.limits.as_ref()?.get(resource)?;
        sum += Quantity::parse(&q.0).ok()?.milli_value();
    }
    Some(sum)
}

/// The sandbox of `pod`.
pub fn sandbox_config(pod: &Pod, id: &str, dns: &DnsSettings) -> SandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut hostname = spec.hostname.clone().unwrap_or_else(|| name.clone());
    hostname.truncate(63);
    let mut hosts = Vec::new();
    for a in spec.host_aliases.iter().flatten() {
        hosts.push((a.ip.clone(), a.hostnames.clone().unwrap_or_default()));
    }
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    labels.insert("io.kubernetes.pod.name".into(), name.clone());
    labels.insert("io.kubernetes.pod.namespace".into(), namespace.clone());
    labels.insert(
        "io.kubernetes.pod.uid".into(),
        pod.metadata.uid.clone().unwrap_or_default(),
    );
    let sysctls = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref())
        .map(|v| {
            v.iter()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    SandboxConfig {
        id: id.into(),
        name,
        namespace,
        hostname,
        dns: dns_config(pod, dns),
        hosts,
        host_network: spec.host_network.unwrap_or(false),
        host_pid: spec.host_pid.unwrap_or(false),
        host_ipc: spec.host_ipc.unwrap_or(false),
        share_process_namespace: spec.share_process_namespace.unwrap_or(false),
        user_namespace: spec.host_users == Some(false),
        memory_limit: pod_limit(&spec, "memory").map(|m| (m / 1000) as i64),
        cpu_quota: pod_limit(&spec, "cpu").map(|m| (m * 100) as i64),
        sysctls,
        labels,
        annotations: pod.metadata.annotations.clone().unwrap_or_default(),
    }
}

/// A file of a configMap, secret, downwardAPI or projected volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFile {
    pub path: PathBuf,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// How a volume is made on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumePlan {
    EmptyDir,
    HostPath {
        path: PathBuf,
        kind: String,
    },
    /// A read-only directory of generated files.
    Files(Vec<VolumeFile>),
}

fn items(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    optional: bool,
    missing_key: impl Fn(&str) -> Error,
) -> Result<Vec<VolumeFile>> {
    match items {
        None => Ok(data
            .iter()
            .map(|(k, v)| VolumeFile {
                path: k.into(),
                data: v.clone(),
                mode: default_mode,
            })
            .collect()),
        Some(list) => {
            let mut out = Vec::new();
            for i in list {
                match data.get(&i.key) {
                    Some(v) => out.push(VolumeFile {
                        path: i.path.clone().into(),
                        data: v.clone(),
                        mode: i.mode.map_or(default_mode, |m| m as u32),
                    }),
                    None if optional => {}
                    None => return Err(missing_key(&i.key)),
                }
            }
            Ok(out)
        }
    }
}

/// The files of a ConfigMap's or Secret's `data` (`None` when the object is missing) for a
/// volume or projection.
fn object_files(
    namespace: &str,
    name: &str,
    secret: bool,
    data: Option<BTreeMap<String, Vec<u8>>>,
    keys: Option<&Vec<KeyToPath>>,
    mode: u32,
    optional: bool,
) -> Result<Vec<VolumeFile>> {
    let Some(data) = data else {
        return match (optional, secret) {
            (true, _) => Ok(vec![]),
            (false, true) => Err(Error::SecretNotFound(name.into())),
            (false, false) => Err(Error::ConfigMapNotFound(name.into())),
        };
    };
    items(&data, keys, mode, optional, |key| {
        let (namespace, name, key) = (namespace.to_string(), name.to_string(), key.to_string());
        if secret {
            Error::SecretKey {
                namespace,
                name,
                key,
            }
        } else {
            Error::ConfigMapKey {
                namespace,
                name,
                key,
            }
        }
    })
}

fn cm_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        out.insert(k.clone(), v.0.clone());
    }
    out
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

fn field_value(pod: &Pod, path: &str, env: &EnvCtx<'_>) -> Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let label = |map: &Option<BTreeMap<String, String>>, prefix: &str| -> Option<String> {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(map.as_ref()?.get(key).cloned().unwrap_or_default())
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => env.host_ip.to_string(),
        "status.podIP" => env.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => env.pod_ips.join(","),
        "metadata.labels" => map_lines(&meta.labels),
        "metadata.annotations" => map_lines(&meta.annotations),
        p => label(&meta.labels, "metadata.labels")
            .or_else(|| label(&meta.annotations, "metadata.annotations"))
            .ok_or_else(|| Error::FieldPath(p.into()))?,
    })
}

fn map_lines(map: &Option<BTreeMap<String, String>>) -> String {
    map.iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}\n"))
        .collect()
}

fn resource_value(
    pod: &Pod,
    own: &str,
    r: &ResourceFieldSelector,
    env: &EnvCtx<'_>,
) -> Result<String> {
    let name = r
        .container_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(own);
    let c = pod
        .spec
        .iter()
        .flat_map(all_containers)
        .find(|c| c.name == name);
    let (kind, resource) = r
        .resource
        .split_once('.')
        .ok_or_else(|| Error::ResourceField(r.resource.clone()))?;
    let res = c.and_then(|c| c.resources.as_ref());
    let q = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return Err(Error::ResourceField(r.resource.clone())),
    }
    .and_then(|m| m.get(resource))
    .and_then(|q| Quantity::parse(&q.0).ok());
    // Without a limit, the node's allocatable is the limit.
    let milli = match (q, kind, resource) {
        (Some(q), _, _) => q.milli_value(),
        (None, "limits", "cpu") => env.node_cpu_millis as i128,
        (None, "limits", "memory") => env.node_memory_bytes as i128 * 1000,
        (None, _, _) => 0,
    };
    let divisor = r
        .divisor
        .as_ref()
        .and_then(|d| Quantity::parse(&d.0).ok())
        .map(|d| d.milli_value())
        .filter(|d| *d > 0)
        // In milli-units: one core, or one byte.
        .unwrap_or(1000);
    // Rounded up, as Kubernetes does.
    Ok(((milli + divisor - 1) / divisor).to_string())
}

/// Facts of the node and pod that environment and downward API values refer to.
#[derive(Debug, Clone, Copy)]
pub struct EnvCtx<'a> {
    pub host_ip: &'a str,
    pub pod_ips: &'a [String],
    pub node_cpu_millis: u64,
    pub node_memory_bytes: u64,
    pub sources: &'a Sources,
}

/// Expand `$(VAR)` from `vars` (`$$` escapes; unknown references stay as written).
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    if let Some(v) = vars.get(name) {
                        out.push_str(v);
                        i += 3 + end;
                        continue;
                    }
                }
            }
        }
        let ch = s[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The container's environment, in order, with references resolved.
pub fn environment(pod: &Pod, c: &Container, env: &EnvCtx<'_>) -> Result<Vec<(String, String)>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let set = |out: &mut Vec<(String, String)>,
               vars: &mut BTreeMap<String, String>,
               k: String,
               v: String| {
        out.retain(|(x, _)| *x != k);
        vars.insert(k.clone(), v.clone());
        out.push((k, v));
    };
    for f in c.env_from.iter().flatten() {
        let prefix = f.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &f.config_map_ref {
            match env.sources.config_maps.get(&r.name) {
                Some(cm) => cm_data(cm),
                None if r.optional == Some(true) => continue,
                None => return Err(Error::ConfigMapNotFound(r.name.clone())),
            }
        } else if let Some(r) = &f.secret_ref {
            match env.sources.secrets.get(&r.name) {
                Some(s) => secret_data(s),
                None if r.optional == Some(true) => continue,
                None => return Err(Error::SecretNotFound(r.name.clone())),
            }
        } else {
            continue;
        };
        for (k, v) in data {
            set(
                &mut out,
                &mut vars,
                format!("{prefix}{k}"),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            expand(v, &vars)
        } else if let Some(from) = &e.value_from {
            if let Some(r) = &from.config_map_key_ref {
                let cm = match env.sources.config_maps.get(&r.name) {
                    Some(cm) => cm,
                    None if r.optional == Some(true) => continue,
                    None => return Err(Error::ConfigMapNotFound(r.name.clone())),
                };
                match cm_data(cm).remove(&r.key) {
                    Some(v) => String::from_utf8_lossy(&v).into_owned(),
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(Error::ConfigMapKey {
                            namespace: ns.clone(),
                            name: r.name.clone(),
                            key: r.key.clone(),
                        })
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                let s = match env.sources.secrets.get(&r.name) {
                    Some(s) => s,
                    None if r.optional == Some(true) => continue,
                    None => return Err(Error::SecretNotFound(r.name.clone())),
                };
                match secret_data(s).remove(&r.key) {
                    Some(v) => String::from_utf8_lossy(&v).into_owned(),
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(Error::SecretKey {
                            namespace: ns.clone(),
                            name: r.name.clone(),
                            key: r.key.clone(),
                        })
                    }
                }
            } else if let Some(ObjectFieldSelector { field_path, .. }) = &from.field_ref {
                field_value(pod, field_path, env)?
            } else if let Some(r) = &from.resource_field_ref {
                resource_value(pod, &c.name, r, env)?
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut out, &mut vars, e.name.clone(), value);
    }
    Ok(out)
}

/// What each volume of the pod is made of.
pub fn volume_plans(pod: &Pod, env: &EnvCtx<'_>) -> Result<BTreeMap<String, VolumePlan>> {
    let mut out = BTreeMap::new();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let err = |reason: String| Error::Volume {
            volume: v.name.clone(),
            reason,
        };
        let plan = if v.empty_dir.is_some() {
            VolumePlan::EmptyDir
        } else if let Some(h) = &v.host_path {
            VolumePlan::HostPath {
                path: h.path.clone().into(),
                kind: h.type_.clone().unwrap_or_default(),
            }
        } else if let Some(c) = &v.config_map {
            let data = env.sources.config_maps.get(&c.name).map(cm_data);
            let mode = c.default_mode.unwrap_or(0o644) as u32;
            let optional = c.optional == Some(true);
            VolumePlan::Files(object_files(
                &ns,
                &c.name,
                false,
                data,
                c.items.as_ref(),
                mode,
                optional,
            )?)
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let data = env.sources.secrets.get(&name).map(secret_data);
            let mode = s.default_mode.unwrap_or(0o644) as u32;
            let optional = s.optional == Some(true);
            VolumePlan::Files(object_files(
                &ns,
                &name,
                true,
                data,
                s.items.as_ref(),
                mode,
                optional,
            )?)
        } else if let Some(d) = &v.downward_api {
            let mode = d.default_mode.unwrap_or(0o644) as u32;
            VolumePlan::Files(downward_files(pod, d.items.iter().flatten(), mode, env)?)
        } else if let Some(p) = &v.projected {
            let mode = p.default_mode.unwrap_or(0o644) as u32;
            let mut files = Vec::new();
            for s in p.sources.iter().flatten() {
                if let Some(c) = &s.config_map {
                    let data = env.sources.config_maps.get(&c.name).map(cm_data);
                    let optional = c.optional == Some(true);
                    files.extend(object_files(
                        &ns,
                        &c.name,
                        false,
                        data,
                        c.items.as_ref(),
                        mode,
                        optional,
                    )?);
                }
                if let Some(c) = &s.secret {
                    let data = env.sources.secrets.get(&c.name).map(secret_data);
                    let optional = c.optional == Some(true);
                    files.extend(object_files(
                        &ns,
                        &c.name,
                        true,
                        data,
                        c.items.as_ref(),
                        mode,
                        optional,
                    )?);
                }
                if let Some(d) = &s.downward_api {
                    files.extend(downward_files(pod, d.items.iter().flatten(), mode, env)?);
                }
                if s.service_account_token.is_some() {
                    return Err(err(
                        "serviceAccountToken projections are not supported yet".into()
                    ));
                }
            }
            VolumePlan::Files(files)
        } else {
            return Err(err("unsupported volume type (supported: emptyDir, hostPath, configMap, secret, downwardAPI, projected)".into()));
        };
        for f in match &plan {
            VolumePlan::Files(f) => f.as_slice(),
            _ => &[],
        } {
            if f.path.is_absolute()
                || f.path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(err(format!(
                    "path {:?} must be relative and stay inside the volume",
                    f.path
                )));
            }
        }
        out.insert(v.name.clone(), plan);
    }
    Ok(out)
}

fn downward_files<'a>(
    pod: &Pod,
    items: impl Iterator<Item = &'a DownwardAPIVolumeFile>,
    mode: u32,
    env: &EnvCtx<'_>,
) -> Result<Vec<VolumeFile>> {
    let mut out = Vec::new();
    for i in items {
        let value = if let Some(f) = &i.field_ref {
            field_value(pod, &f.field_path, env)?
        } else if let Some(r) = &i.resource_field_ref {
            resource_value(pod, "", r, env)?
        } else {
            String::new()
        };
        out.push(VolumeFile {
            path: i.path.clone().into(),
            data: value.into_bytes(),
            mode: i.mode.map_or(mode, |m| m as u32),
        });
    }
    Ok(out)
}

/// The runtime config of one container. `volumes` maps each pod volume to its directory on
/// the node.
pub fn container_config(
    pod: &Pod,
    c: &Container,
    attempt: u32,
    env: &EnvCtx<'_>,
    volumes: &BTreeMap<String, (PathBuf, bool)>,
    log_path: &Path,
) -> Result<ContainerConfig> {
    let environment = environment(pod, c, env)?;
    let vars: BTreeMap<String, String> = environment.iter().cloned().collect();
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let (dir, files) = volumes.get(&m.name).ok_or_else(|| Error::NoVolume {
            container: c.name.clone(),
            volume: m.name.clone(),
        })?;
        let mut host = dir.clone();
        let sub = m
            .sub_path
            .clone()
            .or_else(|| m.sub_path_expr.as_ref().map(|e| expand(e, &vars)))
            .filter(|s| !s.is_empty());
        if let Some(sub) = sub {
            let p = Path::new(&sub);
            if p.is_absolute()
                || p.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(Error::Volume {
                    volume: m.name.clone(),
                    reason: format!("subPath {sub:?} must be relative and stay inside the volume"),
                });
            }
            host = host.join(p);
        }
        mounts.push(VolumeMount {
            host_path: host,
            container_path: m.mount_path.clone().into(),
            readonly: m.read_only.unwrap_or(false) || *files,
        });
    }
    let spec = pod.spec.as_ref();
    let pod_sc = spec.and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.as_ref();
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user))
        .map(|u| u as u32);
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group))
        .map(|g| g as u32);
    let mut supplemental_groups: Vec<u32> = pod_sc
        .and_then(|s| s.supplemental_groups.as_ref())
        .map(|g| g.iter().map(|g| *g as u32).collect())
        .unwrap_or_default();
    if let Some(fs) = pod_sc.and_then(|s| s.fs_group) {
        supplemental_groups.push(fs as u32);
    }
    let seccomp = match sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .or(pod_sc.and_then(|s| s.seccomp_profile.as_ref()))
    {
        Some(p) if p.type_ == "RuntimeDefault" => SeccompProfile::RuntimeDefault,
        Some(p) if p.type_ == "Localhost" => {
            SeccompProfile::Localhost(p.localhost_profile.clone().unwrap_or_default().into())
        }
        _ => SeccompProfile::Unconfined,
    };
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let resources = c.resources.as_ref();
    let quantity = |which: &str, r: &str| -> Option<i128> {
        let map = match which {
            "limits" => resources?.limits.as_ref()?,
            _ => resources?.requests.as_ref()?,
        };
        Quantity::parse(&map.get(r)?.0)
            .ok()
            .map(|q| q.milli_value())
    };
    let cpu_request = quantity("requests", "cpu").or(quantity("limits", "cpu"));
    let mut labels = BTreeMap::new();
    labels.insert("io.kubernetes.container.name".into(), c.name.clone());
    Ok(ContainerConfig {
        name: c.name.clone(),
        attempt,
        image: c.image.clone().unwrap_or_default(),
        command: c
            .command
            .iter()
            .flatten()
            .map(|s| expand(s, &vars))
            .collect(),
        args: c.args.iter().flatten().map(|s| expand(s, &vars)).collect(),
        env: environment,
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        run_as_user,
        run_as_group,
        supplemental_groups,
        mounts,
        memory_limit: quantity("limits", "memory").map(|m| (m / 1000) as i64),
        // Kubernetes: shares = millicores * 1024 / 1000, at least 2.
        cpu_shares: cpu_request.map(|m| ((m * 1024 / 1000) as u64).max(2)),
        cpu_quota: quantity("limits", "cpu").map(|m| (m * 100) as i64),
        cpu_period: quantity("limits", "cpu").map(|_| 100_000),
        pids_limit: None,
        privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
        capabilities_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        capabilities_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
        seccomp,
        readonly_rootfs: sc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        no_new_privileges: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
        log_path: Some(log_path.to_path_buf()),
        log_max_size: Some(10 * 1024 * 1024),
        log_max_files: Some(5),
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::testing::pod;
    use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, EnvVarSource, SecretKeySelector};
    use k8s_openapi::ByteString;

    fn ctx(sources: &Sources) -> EnvCtx<'_> {
        EnvCtx {
            host_ip: "10.0.0.1",
            pod_ips: &[],
            node_cpu_millis: 2000,
            node_memory_bytes: 1 << 30,
            sources,
        }
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let mut vars = BTreeMap::new();
        vars.insert("A".to_string(), "1".to_string());
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$$(A) $(B) $(A", &vars), "$(A) $(B) $(A");
        assert_eq!(expand("é$(A)", &vars), "é1");
    }

    #[test]
    fn environment_resolves_sources_fields_and_references() {
        let mut p = pod("web").container("app", "busybox").build();
        let mut sources = Sources::default();
        let cm = ConfigMap {
            data: Some([("MODE".to_string(), "fast".to_string())].into()),
            ..Default::default()
        };
        sources.config_maps.insert("cfg".into(), cm);
        let s = Secret {
            data: Some([("pw".to_string(), ByteString(b"hunter2".to_vec()))].into()),
            ..Default::default()
        };
        sources.secrets.insert("creds".into(), s);
        let c = &mut p.spec.as_mut().unwrap().containers[0];
        c.env_from = Some(vec![EnvFromSource {
            config_map_ref: Some(k8s_openapi::api::core::v1::ConfigMapEnvSource {
                name: "cfg".into(),
                optional: None,
            }),
            prefix: Some("CFG_".into()),
            ..Default::default()
        }]);
        c.env = Some(vec![
            EnvVar {
                name: "PW".into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "creds".into(),
                        key: "pw".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            EnvVar {
                name: "POD".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        api_version: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            EnvVar {
                name: "BOTH".into(),
                value: Some("$(POD)-$(CFG_MODE)".into()),
                ..Default::default()
            },
        ]);
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        let env = environment(&p, &c, &ctx(&sources)).unwrap();
        assert_eq!(
            env,
            [
                ("CFG_MODE".to_string(), "fast".to_string()),
                ("PW".into(), "hunter2".into()),
                ("POD".into(), "web".into()),
                ("BOTH".into(), "web-fast".into()),
            ]
        );
        let empty = Sources::default();
        assert_eq!(
            environment(&p, &c, &ctx(&empty)).unwrap_err().to_string(),
            "configmap \"cfg\" not found"
        );
        let (cms, secrets) = references(&p);
        assert_eq!((cms.len(), secrets.len()), (1, 1));
    }

    #[test]
    fn cluster_dns_gives_kubernetes_search_paths() {
        let p = pod("web").container("app", "busybox").build();
        let dns = DnsSettings {
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            host: parse_resolv_conf("nameserver 1.1.1.1\nsearch corp\n"),
        };
        let sb = sandbox_config(&p, "uid", &dns);
        assert_eq!(sb.dns.servers, ["10.96.0.10"]);
        assert_eq!(
            sb.dns.searches,
            [
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp"
            ]
        );
        let no_cluster = DnsSettings {
            host: parse_resolv_conf("nameserver 1.1.1.1\n"),
            ..Default::default()
        };
        assert_eq!(
            sandbox_config(&p, "uid", &no_cluster).dns.servers,
            ["1.1.1.1"]
        );
    }

    #[test]
    fn resources_become_cgroup_limits() {
        let mut p = pod("web").container("app", "busybox").build();
        let c = &mut p.spec.as_mut().unwrap().containers[0];
        c.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
            limits: Some(
                [
                    (
                        "memory".to_string(),
                        k8s_openapi::apimachinery::pkg::api::resource::Quantity("64Mi".into()),
                    ),
                    (
                        "cpu".to_string(),
                        k8s_openapi::apimachinery::pkg::api::resource::Quantity("500m".into()),
                    ),
                ]
                .into(),
            ),
            ..Default::default()
        });
        let c = c.clone();
        let sources = Sources::default();
        let cfg =
            container_config(&p, &c, 0, &ctx(&sources), &BTreeMap::new(), Path::new("/l")).unwrap();
        assert_eq!(cfg.memory_limit, Some(64 << 20));
        assert_eq!(cfg.cpu_quota, Some(50_000));
        assert_eq!(cfg.cpu_shares, Some(512));
        assert_eq!(
            sandbox_config(&p, "u", &DnsSettings::default()).memory_limit,
            Some(64 << 20)
        );
    }
}
