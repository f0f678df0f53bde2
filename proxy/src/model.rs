//! Services and EndpointSlices, translated purely into what a data plane programs: one
//! [`ServicePortInfo`] per service port, keyed by [`ServicePortName`].
//!
//! - [`service_ports`] is the translation of one Service and its slices.
//! - [`Model`] keeps the objects seen on the watches, recomputes only the Services an event
//!   touched, settles clashes (two service ports claiming one ClusterIP:port/protocol, or one
//!   nodePort: the one created first is programmed, the other is logged and left out), and
//!   hands out the [`Change`]s since the last call.
//! - [`diff`] compares two whole states, entry by entry.
//!
//! IPv4 only: Berth's pod and service networks are IPv4; slices of other address types and
//! IPv6 ClusterIPs are ignored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when it is not set (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;
/// The largest affinity timeout Kubernetes accepts (one day).
pub const MAX_AFFINITY_TIMEOUT: u32 = 86400;

/// A transport protocol the proxy balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// Lower case, as nft and conntrack spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a Kubernetes protocol (`None` is TCP). `Err` carries what was not understood.
fn protocol(p: Option<&str>) -> Result<Protocol, String> {
    match p.unwrap_or("TCP") {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        other => Err(other.to_string()),
    }
}

/// One port of one Service: `namespace/name:port` (the port's name, empty when the Service
/// has a single unnamed port).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    pub port: String,
}

impl ServicePortName {
    pub fn new(namespace: &str, name: &str, port: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            port: port.to_string(),
        }
    }
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// A ready backend: the pod address and the target port resolved from its slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// What a data plane programs for one service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortInfo {
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    /// Set for NodePort and LoadBalancer Services (and not for the loser of a nodePort clash).
    pub node_port: Option<u16>,
    /// `Some(seconds)` for `sessionAffinity: ClientIP`.
    pub affinity_timeout: Option<u32>,
    /// The ready endpoints, sorted, without duplicates.
    pub endpoints: Vec<Endpoint>,
}

/// The whole programmed state, in a stable order.
pub type State = BTreeMap<ServicePortName, ServicePortInfo>;

/// A change to one service port: the data plane touches only that port's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Add {
        name: ServicePortName,
        new: ServicePortInfo,
    },
    Update {
        name: ServicePortName,
        old: ServicePortInfo,
        new: ServicePortInfo,
    },
    Remove {
        name: ServicePortName,
        old: ServicePortInfo,
    },
}

impl Change {
    pub fn name(&self) -> &ServicePortName {
        match self {
            Change::Add { name, .. }
            | Change::Update { name, .. }
            | Change::Remove { name, .. } => name,
        }
    }

    /// The entry before the change, if there was one.
    pub fn before(&self) -> Option<&ServicePortInfo> {
        match self {
            Change::Add { .. } => None,
            Change::Update { old, .. } | Change::Remove { old, .. } => Some(old),
        }
    }

    /// The entry after the change, if there is one.
    pub fn after(&self) -> Option<&ServicePortInfo> {
        match self {
            Change::Remove { .. } => None,
            Change::Add { new, .. } | Change::Update { new, .. } => Some(new),
        }
    }

    fn between(
        name: &ServicePortName,
        old: Option<&ServicePortInfo>,
        new: Option<&ServicePortInfo>,
    ) -> Option<Change> {
        let name = name.clone();
        match (old, new) {
            (None, None) => None,
            (None, Some(new)) => Some(Change::Add {
                name,
                new: new.clone(),
            }),
            (Some(old), None) => Some(Change::Remove {
                name,
                old: old.clone(),
            }),
            (Some(old), Some(new)) if old == new => None,
            (Some(old), Some(new)) => Some(Change::Update {
                name,
                old: old.clone(),
                new: new.clone(),
            }),
        }
    }
}

/// The changes that turn `old` into `new`, in key order; equal entries give none.
pub fn diff(old: &State, new: &State) -> Vec<Change> {
    let keys: BTreeSet<&ServicePortName> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter_map(|k| Change::between(k, old.get(k), new.get(k)))
        .collect()
}

/// The first IPv4 ClusterIP of a Service, `None` when it is headless, not yet allocated, or
/// IPv6 only.
fn cluster_ip(svc: &Service) -> Option<Ipv4Addr> {
    let spec = svc.spec.as_ref()?;
    let ips: Vec<&String> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().collect(),
        _ => spec.cluster_ip.iter().collect(),
    };
    ips.into_iter().find_map(|ip| ip.parse::<Ipv4Addr>().ok())
}

fn port_u16(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

/// The service ports of `svc` with the ready endpoints from `slices` (the Service's slices;
/// others are not looked at). Empty for ExternalName and headless Services. Ports with a
/// protocol other than TCP or UDP are skipped with a warning.
pub fn service_ports(
    svc: &Service,
    slices: &[&EndpointSlice],
) -> Vec<(ServicePortName, ServicePortInfo)> {
    let namespace = svc.metadata.namespace.as_deref().unwrap_or("default");
    let svc_name = svc.metadata.name.as_deref().unwrap_or_default();
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return Vec::new();
    }
    let Some(cluster_ip) = cluster_ip(svc) else {
        return Vec::new();
    };
    let with_node_ports = matches!(kind, "NodePort" | "LoadBalancer");
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
            .min(MAX_AFFINITY_TIMEOUT)
    });
    let mut out = Vec::new();
    for sp in spec.ports.iter().flatten() {
        let port_name = sp.name.as_deref().unwrap_or_default();
        let name = ServicePortName::new(namespace, svc_name, port_name);
        let proto = match protocol(sp.protocol.as_deref()) {
            Ok(p) => p,
            Err(other) => {
                tracing::warn!(service = %name, protocol = %other, "service port skipped: only TCP and UDP are proxied");
                continue;
            }
        };
        let Some(port) = port_u16(sp.port) else {
            tracing::warn!(service = %name, port = sp.port, "service port skipped: port out of range");
            continue;
        };
        let node_port = if with_node_ports {
            sp.node_port.and_then(port_u16)
        } else {
            None
        };
        let mut endpoints = BTreeSet::new();
        for slice in slices {
            if slice.address_type != "IPv4" {
                continue;
            }
            // The slice port for this service port: same name, same protocol.
            let Some(target) = slice.ports.iter().flatten().find_map(|p| {
                let same_name = p.name.as_deref().unwrap_or_default() == port_name;
                let same_proto = protocol(p.protocol.as_deref()).ok() == Some(proto);
                (same_name && same_proto)
                    .then_some(p.port)
                    .flatten()
                    .and_then(port_u16)
            }) else {
                continue;
            };
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                if !ready {
                    continue;
                }
                // Addresses of one endpoint are fungible; the first is the one to use.
                if let Some(ip) = ep.addresses.first().and_then(|a| a.parse().ok()) {
                    endpoints.insert(Endpoint { ip, port: target });
                }
            }
        }
        out.push((
            name,
            ServicePortInfo {
                cluster_ip,
                port,
                protocol: proto,
                node_port,
                affinity_timeout,
                endpoints: endpoints.into_iter().collect(),
            },
        ));
    }
    out
}

/// `(namespace, name)` of an object.
type ObjKey = (String, String);

fn obj_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjKey {
    (
        meta.namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// A claim on an address: the older Service wins, then the smaller name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Claim {
    created: Option<Timestamp>,
    name: ServicePortName,
}

type VipKey = (Ipv4Addr, Protocol, u16);
type NodePortKey = (Protocol, u16);

/// What [`service_ports`] gave for one service port, before clashes are settled.
#[derive(Debug, Clone)]
struct Candidate {
    created: Option<Timestamp>,
    info: ServicePortInfo,
}

impl Candidate {
    fn vip(&self) -> VipKey {
        (self.info.cluster_ip, self.info.protocol, self.info.port)
    }

    fn node_port(&self) -> Option<NodePortKey> {
        self.info.node_port.map(|p| (self.info.protocol, p))
    }
}

/// The watched Services and EndpointSlices, and the state programmed from them.
#[derive(Debug, Default)]
pub struct Model {
    services: HashMap<ObjKey, Service>,
    /// Slices by the Service they belong to, then by slice name.
    slices: HashMap<ObjKey, BTreeMap<String, EndpointSlice>>,
    /// The Service each slice was filed under (its label may change or be missing on delete).
    slice_owner: HashMap<ObjKey, ObjKey>,
    candidates: HashMap<ServicePortName, Candidate>,
    ports_of: HashMap<ObjKey, Vec<ServicePortName>>,
    vip_claims: HashMap<VipKey, BTreeSet<Claim>>,
    node_port_claims: HashMap<NodePortKey, BTreeSet<Claim>>,
    state: State,
    dirty: BTreeSet<ObjKey>,
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    /// What is programmed after the last [`Model::take_changes`].
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether events arrived since the last [`Model::take_changes`].
    pub fn has_pending(&self) -> bool {
        !self.dirty.is_empty()
    }

    pub fn apply_service(&mut self, svc: Service) {
        let key = obj_key(&svc.metadata);
        self.dirty.insert(key.clone());
        self.services.insert(key, svc);
    }

    pub fn delete_service(&mut self, svc: &Service) {
        let key = obj_key(&svc.metadata);
        self.services.remove(&key);
        self.dirty.insert(key);
    }

    pub fn apply_slice(&mut self, slice: EndpointSlice) {
        let key = obj_key(&slice.metadata);
        self.forget_slice(&key);
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            return;
        };
        let owner = (key.0.clone(), service.clone());
        self.slices
            .entry(owner.clone())
            .or_default()
            .insert(key.1.clone(), slice);
        self.slice_owner.insert(key, owner.clone());
        self.dirty.insert(owner);
    }

    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        self.forget_slice(&obj_key(&slice.metadata));
    }

    fn forget_slice(&mut self, key: &ObjKey) {
        if let Some(owner) = self.slice_owner.remove(key) {
            if let Some(m) = self.slices.get_mut(&owner) {
                m.remove(&key.1);
                if m.is_empty() {
                    self.slices.remove(&owner);
                }
            }
            self.dirty.insert(owner);
        }
    }

    /// A fresh list of all Services (after a watch (re)list): the ones not in it are gone.
    pub fn replace_services(&mut self, list: Vec<Service>) {
        self.dirty.extend(self.services.keys().cloned());
        self.services.clear();
        for svc in list {
            self.apply_service(svc);
        }
    }

    /// A fresh list of all EndpointSlices (after a watch (re)list).
    pub fn replace_slices(&mut self, list: Vec<EndpointSlice>) {
        self.dirty.extend(self.slices.keys().cloned());
        self.slices.clear();
        self.slice_owner.clear();
        for slice in list {
            self.apply_slice(slice);
        }
    }

    /// Recomputes the Services touched since the last call (and those sharing an address
    /// with them), updates [`Model::state`], and returns the changes in key order.
    pub fn take_changes(&mut self) -> Vec<Change> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut affected = BTreeSet::new();
        for key in dirty {
            for name in self.ports_of.remove(&key).unwrap_or_default() {
                if let Some(c) = self.candidates.remove(&name) {
                    self.unclaim(&name, &c, &mut affected);
                }
                affected.insert(name);
            }
            let Some(svc) = self.services.get(&key) else {
                continue;
            };
            let slices: Vec<&EndpointSlice> = self
                .slices
                .get(&key)
                .map(|m| m.values().collect())
                .unwrap_or_default();
            let created = svc.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let mut names = Vec::new();
            for (name, info) in service_ports(svc, &slices) {
                let c = Candidate { created, info };
                self.claim(&name, &c, &mut affected);
                affected.insert(name.clone());
                self.candidates.insert(name.clone(), c);
                names.push(name);
            }
            self.ports_of.insert(key, names);
        }
        let mut changes = Vec::new();
        for name in affected {
            let new = self.effective(&name);
            if let Some(change) = Change::between(&name, self.state.get(&name), new.as_ref()) {
                changes.push(change);
            }
            match new {
                Some(info) => self.state.insert(name, info),
                None => self.state.remove(&name),
            };
        }
        changes
    }

    fn claim(
        &mut self,
        name: &ServicePortName,
        c: &Candidate,
        affected: &mut BTreeSet<ServicePortName>,
    ) {
        let claim = Claim {
            created: c.created,
            name: name.clone(),
        };
        let set = self.vip_claims.entry(c.vip()).or_default();
        affected.extend(set.iter().map(|c| c.name.clone()));
        set.insert(claim.clone());
        if let Some(np) = c.node_port() {
            let set = self.node_port_claims.entry(np).or_default();
            affected.extend(set.iter().map(|c| c.name.clone()));
            set.insert(claim);
        }
    }

    fn unclaim(
        &mut self,
        name: &ServicePortName,
        c: &Candidate,
        affected: &mut BTreeSet<ServicePortName>,
    ) {
        let claim = Claim {
            created: c.created,
            name: name.clone(),
        };
        let vip = c.vip();
        if let Some(set) = self.vip_claims.get_mut(&vip) {
            set.remove(&claim);
            affected.extend(set.iter().map(|c| c.name.clone()));
            if set.is_empty() {
                self.vip_claims.remove(&vip);
            }
        }
        if let Some(np) = c.node_port() {
            if let Some(set) = self.node_port_claims.get_mut(&np) {
                set.remove(&claim);
                affected.extend(set.iter().map(|c| c.name.clone()));
                if set.is_empty() {
                    self.node_port_claims.remove(&np);
                }
            }
        }
    }

    /// The entry to program for `name`: its candidate unless an older service port holds its
    /// ClusterIP:port, without the nodePort if an older one holds that.
    fn effective(&self, name: &ServicePortName) -> Option<ServicePortInfo> {
        let c = self.candidates.get(name)?;
        let (ip, proto, port) = c.vip();
        let holder = self.vip_claims.get(&c.vip()).and_then(|s| s.first())?;
        if &holder.name != name {
            tracing::error!(
                service = %name,
                holder = %holder.name,
                address = %format!("{ip}:{port}/{proto}"),
                "service port clash: the address is already taken by another service port, which stays programmed; this one is left out"
            );
            return None;
        }
        let mut info = c.info.clone();
        if let Some(np) = c.node_port() {
            let holder = self.node_port_claims.get(&np).and_then(|s| s.first());
            if let Some(holder) = holder.filter(|h| &h.name != name) {
                tracing::error!(
                    service = %name,
                    holder = %holder.name,
                    node_port = np.1,
                    protocol = %np.0,
                    "nodePort clash: the nodePort is already taken by another service port, which stays programmed; this one gets no nodePort"
                );
                info.node_port = None;
            }
        }
        Some(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ClientIPConfig, ServicePort, ServiceSpec, SessionAffinityConfig,
    };
    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    /// A Service fixture: `svc("web").ip("10.96.0.10").port("http", 80, "TCP")`.
    #[derive(Clone)]
    struct Svc(Service);

    fn svc(name: &str) -> Svc {
        Svc(Service {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(name.into()),
                creation_timestamp: Some(Time("2024-01-01T00:00:00Z".parse().unwrap())),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                ..Default::default()
            }),
            status: None,
        })
    }

    impl Svc {
        fn spec(&mut self) -> &mut ServiceSpec {
            self.0.spec.as_mut().unwrap()
        }
        fn ip(mut self, ip: &str) -> Self {
            self.spec().cluster_ip = Some(ip.into());
            self.spec().cluster_ips = Some(vec![ip.into()]);
            self
        }
        fn kind(mut self, t: &str) -> Self {
            self.spec().type_ = Some(t.into());
            self
        }
        fn port(mut self, name: &str, port: i32, proto: &str) -> Self {
            self.spec()
                .ports
                .get_or_insert_with(Vec::new)
                .push(ServicePort {
                    name: (!name.is_empty()).then(|| name.into()),
                    port,
                    protocol: Some(proto.into()),
                    ..Default::default()
                });
            self
        }
        fn node_port(mut self, np: i32) -> Self {
            self.spec()
                .ports
                .as_mut()
                .unwrap()
                .last_mut()
                .unwrap()
                .node_port = Some(np);
            self
        }
        fn affinity(mut self, timeout: Option<i32>) -> Self {
            self.spec().session_affinity = Some("ClientIP".into());
            self.spec().session_affinity_config = timeout.map(|t| SessionAffinityConfig {
                client_ip: Some(ClientIPConfig {
                    timeout_seconds: Some(t),
                }),
            });
            self
        }
        fn created(mut self, t: &str) -> Self {
            self.0.metadata.creation_timestamp = Some(Time(t.parse().unwrap()));
            self
        }
        fn build(self) -> Service {
            self.0
        }
    }

    /// An EndpointSlice fixture: `slice("web-1", "web").port("http", 8080, "TCP").ep("10.1.0.1", true)`.
    struct Slice(EndpointSlice);

    fn slice(name: &str, service: &str) -> Slice {
        Slice(EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: Vec::new(),
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(name.into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into()),
                ..Default::default()
            },
            ports: Some(Vec::new()),
        })
    }

    impl Slice {
        fn port(mut self, name: &str, port: i32, proto: &str) -> Self {
            self.0.ports.as_mut().unwrap().push(EndpointPort {
                name: Some(name.into()),
                port: Some(port),
                protocol: Some(proto.into()),
                app_protocol: None,
            });
            self
        }
        fn ep(mut self, ip: &str, ready: Option<bool>) -> Self {
            self.0.endpoints.push(SliceEndpoint {
                addresses: vec![ip.into()],
                conditions: Some(EndpointConditions {
                    ready,
                    ..Default::default()
                }),
                ..Default::default()
            });
            self
        }
        fn address_type(mut self, t: &str) -> Self {
            self.0.address_type = t.into();
            self
        }
        fn build(self) -> EndpointSlice {
            self.0
        }
    }

    fn ep(ip: &str, port: u16) -> Endpoint {
        Endpoint {
            ip: ip.parse().unwrap(),
            port,
        }
    }

    fn info(ip: &str, port: u16, proto: Protocol, eps: &[Endpoint]) -> ServicePortInfo {
        ServicePortInfo {
            cluster_ip: ip.parse().unwrap(),
            port,
            protocol: proto,
            node_port: None,
            affinity_timeout: None,
            endpoints: eps.to_vec(),
        }
    }

    fn name(svc: &str, port: &str) -> ServicePortName {
        ServicePortName::new("ns", svc, port)
    }

    #[test]
    fn ports_resolve_target_ports_by_name_and_protocol_and_keep_only_ready_endpoints() {
        let s = svc("dns")
            .ip("10.96.0.10")
            .port("dns", 53, "UDP")
            .port("dns-tcp", 53, "TCP")
            .build();
        let a = slice("dns-a", "dns")
            .port("dns", 5353, "UDP")
            .port("dns-tcp", 5354, "TCP")
            .ep("10.1.0.2", Some(true))
            .ep("10.1.0.1", None)
            .ep("10.1.0.3", Some(false))
            .build();
        // A second slice repeats one endpoint and adds one.
        let b = slice("dns-b", "dns")
            .port("dns", 5353, "UDP")
            .port("dns-tcp", 5354, "TCP")
            .ep("10.1.0.1", Some(true))
            .ep("10.1.0.4", Some(true))
            .build();
        let got = service_ports(&s, &[&a, &b]);
        assert_eq!(
            got,
            vec![
                (
                    name("dns", "dns"),
                    info(
                        "10.96.0.10",
                        53,
                        Protocol::Udp,
                        &[
                            ep("10.1.0.1", 5353),
                            ep("10.1.0.2", 5353),
                            ep("10.1.0.4", 5353)
                        ]
                    )
                ),
                (
                    name("dns", "dns-tcp"),
                    info(
                        "10.96.0.10",
                        53,
                        Protocol::Tcp,
                        &[
                            ep("10.1.0.1", 5354),
                            ep("10.1.0.2", 5354),
                            ep("10.1.0.4", 5354)
                        ]
                    )
                ),
            ]
        );
    }

    #[test]
    fn a_slice_port_of_the_wrong_protocol_or_name_gives_no_endpoints() {
        let s = svc("web").ip("10.96.0.1").port("http", 80, "TCP").build();
        let wrong_proto = slice("w1", "web")
            .port("http", 8080, "UDP")
            .ep("10.1.0.1", None)
            .build();
        let wrong_name = slice("w2", "web")
            .port("web", 8080, "TCP")
            .ep("10.1.0.2", None)
            .build();
        let v6 = slice("w3", "web")
            .address_type("IPv6")
            .port("http", 8080, "TCP")
            .ep("fd00::1", None)
            .build();
        let got = service_ports(&s, &[&wrong_proto, &wrong_name, &v6]);
        assert_eq!(
            got,
            vec![(
                name("web", "http"),
                info("10.96.0.1", 80, Protocol::Tcp, &[])
            )]
        );
    }

    #[test]
    fn headless_external_name_and_sctp_are_skipped() {
        let headless = svc("h").ip("None").port("p", 80, "TCP").build();
        assert!(service_ports(&headless, &[]).is_empty());
        let ext = svc("e").kind("ExternalName").port("p", 80, "TCP").build();
        assert!(service_ports(&ext, &[]).is_empty());
        let unallocated = svc("u").port("p", 80, "TCP").build();
        assert!(service_ports(&unallocated, &[]).is_empty());
        let sctp = svc("s")
            .ip("10.96.0.5")
            .port("a", 80, "SCTP")
            .port("b", 81, "TCP")
            .build();
        let got = service_ports(&sctp, &[]);
        assert_eq!(
            got,
            vec![(name("s", "b"), info("10.96.0.5", 81, Protocol::Tcp, &[]))]
        );
    }

    #[test]
    fn node_ports_only_for_node_port_and_load_balancer_types_and_affinity_defaults() {
        let np = svc("np")
            .kind("NodePort")
            .ip("10.96.0.7")
            .port("", 80, "TCP")
            .node_port(30080);
        let got = service_ports(&np.clone().affinity(None).build(), &[]);
        assert_eq!(got[0].0, name("np", ""));
        assert_eq!(got[0].1.node_port, Some(30080));
        assert_eq!(got[0].1.affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
        let lb = service_ports(
            &np.clone().kind("LoadBalancer").affinity(Some(60)).build(),
            &[],
        );
        assert_eq!(lb[0].1.node_port, Some(30080));
        assert_eq!(lb[0].1.affinity_timeout, Some(60));
        let cip = service_ports(&np.kind("ClusterIP").build(), &[]);
        assert_eq!(cip[0].1.node_port, None);
        assert_eq!(cip[0].1.affinity_timeout, None);
    }

    #[test]
    fn diff_reports_add_update_remove_in_key_order_and_nothing_for_equal_entries() {
        let a = info("10.96.0.1", 80, Protocol::Tcp, &[ep("10.1.0.1", 80)]);
        let b = info("10.96.0.2", 80, Protocol::Tcp, &[]);
        let b2 = info("10.96.0.2", 80, Protocol::Tcp, &[ep("10.1.0.9", 80)]);
        let c = info("10.96.0.3", 53, Protocol::Udp, &[]);
        let old: State = [(name("a", ""), a.clone()), (name("b", ""), b.clone())].into();
        let new: State = [(name("b", ""), b2.clone()), (name("c", ""), c.clone())].into();
        assert_eq!(
            diff(&old, &new),
            vec![
                Change::Remove {
                    name: name("a", ""),
                    old: a
                },
                Change::Update {
                    name: name("b", ""),
                    old: b,
                    new: b2
                },
                Change::Add {
                    name: name("c", ""),
                    new: c
                },
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn an_endpoint_change_touches_only_that_service() {
        let mut m = Model::new();
        m.apply_service(svc("a").ip("10.96.0.1").port("http", 80, "TCP").build());
        m.apply_service(svc("b").ip("10.96.0.2").port("http", 80, "TCP").build());
        m.apply_slice(
            slice("a-1", "a")
                .port("http", 8080, "TCP")
                .ep("10.1.0.1", None)
                .build(),
        );
        let first = m.take_changes();
        assert_eq!(first.len(), 2);
        assert!(!m.has_pending());

        m.apply_slice(
            slice("a-1", "a")
                .port("http", 8080, "TCP")
                .ep("10.1.0.1", None)
                .ep("10.1.0.2", None)
                .build(),
        );
        let changes = m.take_changes();
        assert_eq!(
            changes,
            vec![Change::Update {
                name: name("a", "http"),
                old: info("10.96.0.1", 80, Protocol::Tcp, &[ep("10.1.0.1", 8080)]),
                new: info(
                    "10.96.0.1",
                    80,
                    Protocol::Tcp,
                    &[ep("10.1.0.1", 8080), ep("10.1.0.2", 8080)]
                ),
            }]
        );
        // The same object again changes nothing.
        m.apply_service(svc("b").ip("10.96.0.2").port("http", 80, "TCP").build());
        assert!(m.take_changes().is_empty());
    }

    #[test]
    fn deleting_a_slice_or_the_service_removes_endpoints_then_entries() {
        let mut m = Model::new();
        let s = svc("a").ip("10.96.0.1").port("", 80, "TCP").build();
        let sl = slice("a-1", "a")
            .port("", 8080, "TCP")
            .ep("10.1.0.1", None)
            .build();
        m.apply_service(s.clone());
        m.apply_slice(sl.clone());
        m.take_changes();
        m.delete_slice(&sl);
        assert_eq!(
            m.take_changes(),
            vec![Change::Update {
                name: name("a", ""),
                old: info("10.96.0.1", 80, Protocol::Tcp, &[ep("10.1.0.1", 8080)]),
                new: info("10.96.0.1", 80, Protocol::Tcp, &[]),
            }]
        );
        m.delete_service(&s);
        assert_eq!(
            m.take_changes(),
            vec![Change::Remove {
                name: name("a", ""),
                old: info("10.96.0.1", 80, Protocol::Tcp, &[]),
            }]
        );
        assert!(m.state().is_empty());
    }

    #[test]
    fn a_slice_that_moves_to_another_service_leaves_the_first() {
        let mut m = Model::new();
        m.apply_service(svc("a").ip("10.96.0.1").port("", 80, "TCP").build());
        m.apply_service(svc("b").ip("10.96.0.2").port("", 80, "TCP").build());
        m.apply_slice(
            slice("x", "a")
                .port("", 8080, "TCP")
                .ep("10.1.0.1", None)
                .build(),
        );
        m.take_changes();
        m.apply_slice(
            slice("x", "b")
                .port("", 8080, "TCP")
                .ep("10.1.0.1", None)
                .build(),
        );
        m.take_changes();
        assert!(m.state()[&name("a", "")].endpoints.is_empty());
        assert_eq!(
            m.state()[&name("b", "")].endpoints,
            vec![ep("10.1.0.1", 8080)]
        );
    }

    #[test]
    fn a_clash_programs_the_older_service_and_the_other_takes_over_when_it_goes() {
        let mut m = Model::new();
        let old = svc("old")
            .ip("10.96.0.9")
            .port("", 80, "TCP")
            .created("2024-01-01T00:00:00Z")
            .build();
        let new = svc("new")
            .ip("10.96.0.9")
            .port("", 80, "TCP")
            .created("2024-02-01T00:00:00Z")
            .build();
        // Event order does not matter: the older one wins either way.
        m.apply_service(new.clone());
        m.take_changes();
        m.apply_service(old.clone());
        let changes = m.take_changes();
        assert_eq!(
            changes,
            vec![
                Change::Remove {
                    name: name("new", ""),
                    old: info("10.96.0.9", 80, Protocol::Tcp, &[]),
                },
                Change::Add {
                    name: name("old", ""),
                    new: info("10.96.0.9", 80, Protocol::Tcp, &[]),
                },
            ]
        );
        // An unrelated port of another service is unaffected.
        m.apply_service(svc("other").ip("10.96.0.9").port("", 81, "TCP").build());
        assert_eq!(m.take_changes().len(), 1);
        m.delete_service(&old);
        let changes = m.take_changes();
        assert_eq!(
            changes,
            vec![
                Change::Add {
                    name: name("new", ""),
                    new: info("10.96.0.9", 80, Protocol::Tcp, &[]),
                },
                Change::Remove {
                    name: name("old", ""),
                    old: info("10.96.0.9", 80, Protocol::Tcp, &[]),
                },
            ]
        );
    }

    #[test]
    fn a_node_port_clash_keeps_the_cluster_ip_of_the_younger_service() {
        let mut m = Model::new();
        m.apply_service(
            svc("a")
                .kind("NodePort")
                .ip("10.96.0.1")
                .port("", 80, "TCP")
                .node_port(30001)
                .created("2024-01-01T00:00:00Z")
                .build(),
        );
        m.apply_service(
            svc("b")
                .kind("NodePort")
                .ip("10.96.0.2")
                .port("", 80, "TCP")
                .node_port(30001)
                .created("2024-03-01T00:00:00Z")
                .build(),
        );
        m.take_changes();
        assert_eq!(m.state()[&name("a", "")].node_port, Some(30001));
        assert_eq!(m.state()[&name("b", "")].node_port, None);
        // The same nodePort on UDP is another address.
        m.apply_service(
            svc("c")
                .kind("NodePort")
                .ip("10.96.0.3")
                .port("", 53, "UDP")
                .node_port(30001)
                .build(),
        );
        m.take_changes();
        assert_eq!(m.state()[&name("c", "")].node_port, Some(30001));
    }

    #[test]
    fn a_relist_removes_what_is_no_longer_listed() {
        let mut m = Model::new();
        m.apply_service(svc("a").ip("10.96.0.1").port("", 80, "TCP").build());
        m.apply_service(svc("b").ip("10.96.0.2").port("", 80, "TCP").build());
        m.apply_slice(
            slice("a-1", "a")
                .port("", 8080, "TCP")
                .ep("10.1.0.1", None)
                .build(),
        );
        m.take_changes();
        m.replace_services(vec![svc("a").ip("10.96.0.1").port("", 80, "TCP").build()]);
        m.replace_slices(Vec::new());
        let changes = m.take_changes();
        assert_eq!(
            changes,
            vec![
                Change::Update {
                    name: name("a", ""),
                    old: info("10.96.0.1", 80, Protocol::Tcp, &[ep("10.1.0.1", 8080)]),
                    new: info("10.96.0.1", 80, Protocol::Tcp, &[]),
                },
                Change::Remove {
                    name: name("b", ""),
                    old: info("10.96.0.2", 80, Protocol::Tcp, &[]),
                },
            ]
        );
    }

    #[test]
    fn service_port_names_display_like_kube_proxy() {
        assert_eq!(name("web", "http").to_string(), "ns/web:http");
        assert_eq!(name("web", "").to_string(), "ns/web");
    }
}
