//! The Endpoints and EndpointSlice controllers, as one loop over Services: every Service with
//! a selector (and not of type ExternalName) gets a core/v1 `Endpoints` of its name and
//! `discovery.k8s.io/v1` EndpointSlices (`<service>-<suffix>`, at most
//! [`MAX_ENDPOINTS_PER_SLICE`] endpoints each) listing the pods it selects.
//!
//! As in Kubernetes:
//! - a pod without an IP, or terminal, is left out; a pod being deleted is left out of the
//!   `Endpoints` (unless `publishNotReadyAddresses`) and listed in slices as terminating;
//! - ports are resolved per pod (a named `targetPort` is looked up in that pod's container
//!   ports by name and protocol), and pods with the same resolved ports share a subset (and a
//!   slice);
//! - slices are reused: endpoints stay in the slice that holds them, slices are updated in
//!   place rather than deleted and created again, surplus slices are deleted, and a Service
//!   that selects nothing keeps one empty placeholder slice.
//!
//! The Endpoints object has no owner reference, so when a Service is deleted this module
//! deletes its Endpoints; its slices are owned by the Service and go with the garbage
//! collector. [`plan`] decides; [`reconcile`] applies, after checking that the slice cache
//! shows every slice write this process made (a [`Tracker`]), so a lagging cache never makes
//! it create a slice twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference, Pod,
    Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::Api;
use tokio::time::Instant;

use crate::pods::{self, controller_ref};
use crate::runtime::{self, Action, Cache, Change, Informer, Key, Queue, Synced};
use crate::{Ctx, Error, Result};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// kube-controller-manager's `--max-endpoints-per-slice` default.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// How long a slice write this process made may stay unseen by the cache before the
/// controller stops waiting for it.
const TRACK_TTL: Duration = Duration::from_secs(30);
/// How soon to look again while the cache lags behind our own writes.
const STALE_RETRY: Duration = Duration::from_millis(200);

/// Whether this controller keeps endpoints for `svc`: it has a selector and is not
/// ExternalName. Others get their Endpoints and slices from whoever manages them.
pub fn is_managed(svc: &Service) -> bool {
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() != Some("ExternalName")
        && spec.selector.as_ref().is_some_and(|s| !s.is_empty())
}

fn selects(svc: &Service, labels: Option<&BTreeMap<String, String>>) -> bool {
    let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    !sel.is_empty()
        && sel
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

fn protocol(p: Option<&str>) -> &str {
    match p {
        None | Some("") => "TCP",
        Some(p) => p,
    }
}

/// The port `pod` serves `sp` on: a named `targetPort` is looked up in the pod's containers
/// (by name and protocol), a number is used as is, and none (or 0, or "") means `port`.
pub fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(0)) => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(s)) if s.is_empty() => Some(sp.port),
        Some(IntOrString::String(name)) => {
            let want = protocol(sp.protocol.as_deref());
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && protocol(p.protocol.as_deref()) == want
                })
                .map(|p| p.container_port)
        }
    }
}

/// One resolved port of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Port {
    name: String,
    port: i32,
    protocol: String,
    app_protocol: Option<String>,
}

impl Port {
    fn core(&self) -> CorePort {
        CorePort {
            name: (!self.name.is_empty()).then(|| self.name.clone()),
            port: self.port,
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }

    fn slice(&self) -> SlicePort {
        SlicePort {
            name: Some(self.name.clone()),
            port: Some(self.port),
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }

    fn from_slice(p: &SlicePort) -> Self {
        Port {
            name: p.name.clone().unwrap_or_default(),
            port: p.port.unwrap_or(0),
            protocol: protocol(p.protocol.as_deref()).to_string(),
            app_protocol: p.app_protocol.clone(),
        }
    }
}

fn resolve_ports(svc: &Service, pod: &Pod) -> Vec<Port> {
    svc.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|sp| {
            Some(Port {
                name: sp.name.clone().unwrap_or_default(),
                port: find_port(pod, sp)?,
                protocol: protocol(sp.protocol.as_deref()).to_string(),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

fn service_has_ports(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|p| !p.is_empty())
}

/// A selected pod that has an address, as both kinds of object see it.
struct Member<'a> {
    pod: &'a Pod,
    ip: String,
    ready: bool,
    terminating: bool,
    ports: Vec<Port>,
}

impl Member<'_> {
    fn target_ref(&self) -> ObjectReference {
        ObjectReference {
            kind: Some("Pod".into()),
            name: self.pod.metadata.name.clone(),
            namespace: self.pod.metadata.namespace.clone(),
            uid: self.pod.metadata.uid.clone(),
            ..Default::default()
        }
    }

    fn node_name(&self) -> Option<String> {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
    }

    /// The pod's hostname, when its subdomain is the service (DNS for headless services).
    fn hostname(&self, svc: &Service) -> Option<String> {
        let spec = self.pod.spec.as_ref()?;
        let host = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
        (spec.subdomain.as_deref() == svc.metadata.name.as_deref()).then(|| host.to_string())
    }
}

/// The pods `svc` selects that may be endpoints (an IP, not terminal), in address order.
fn members<'a>(svc: &Service, pods: &'a [Arc<Pod>]) -> Vec<Member<'a>> {
    let ns = svc.metadata.namespace.as_deref();
    let mut out: Vec<Member<'a>> = pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| p.metadata.namespace.as_deref() == ns)
        .filter(|p| selects(svc, p.metadata.labels.as_ref()))
        .filter(|p| !pods::is_terminal(p))
        .filter_map(|p| {
            let ip = p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty())?;
            Some(Member {
                pod: p,
                ip,
                ready: pods::is_ready(p),
                terminating: p.metadata.deletion_timestamp.is_some(),
                ports: resolve_ports(svc, p),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (a.ip.as_str(), a.pod.metadata.name.as_deref())
            .cmp(&(b.ip.as_str(), b.pod.metadata.name.as_deref()))
    });
    out
}

/// A change to the slices of a service.
#[derive(Debug, Clone, PartialEq)]
pub enum SliceChange {
    /// A new slice, named by the server from `generateName`.
    Create(EndpointSlice),
    /// An existing slice rewritten in place (its name and resourceVersion are set).
    Update(EndpointSlice),
    Delete {
        name: String,
        uid: String,
    },
}

/// What the controller wants for one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The wanted Endpoints: name, namespace, labels and subsets.
    pub endpoints: Endpoints,
    pub slices: Vec<SliceChange>,
}

/// Decides the Endpoints and slice changes of `svc`, given the pods of its namespace and the
/// slices of its namespace (only those this controller manages for `svc` are considered).
/// `None` for a service this controller leaves alone (see [`is_managed`]).
pub fn plan(svc: &Service, pods: &[Arc<Pod>], slices: &[Arc<EndpointSlice>]) -> Option<Plan> {
    if !is_managed(svc) {
        return None;
    }
    let members = members(svc, pods);
    let endpoints = plan_endpoints(svc, &members);
    let slices = plan_slices(svc, &members, slices);
    Some(Plan { endpoints, slices })
}

fn endpoints_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

fn plan_endpoints(svc: &Service, members: &[Member<'_>]) -> Endpoints {
    let publish = publish_not_ready(svc);
    let headless_without_ports = !service_has_ports(svc) && is_headless(svc);
    // Port set -> (ready, not ready); pods with the same resolved ports share a subset.
    let mut groups: BTreeMap<Vec<Port>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for m in members {
        if m.terminating && !publish {
            continue;
        }
        if m.ports.is_empty() && !headless_without_ports {
            continue;
        }
        let addr = EndpointAddress {
            ip: m.ip.clone(),
            hostname: m.hostname(svc),
            node_name: m.node_name(),
            target_ref: Some(m.target_ref()),
        };
        let mut key = m.ports.clone();
        key.sort();
        let (ready, not_ready) = groups.entry(key).or_default();
        if publish || m.ready {
            ready.push(addr);
        } else {
            not_ready.push(addr);
        }
    }
    let subsets: Vec<EndpointSubset> = groups
        .into_iter()
        .map(|(ports, (ready, not_ready))| EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then(|| ports.iter().map(Port::core).collect()),
        })
        .collect();
    Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(endpoints_labels(svc)),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

/// Whether `existing` already says what `wanted` does (labels and subsets, as the API server
/// stores them).
pub fn endpoints_match(existing: &Endpoints, wanted: &Endpoints) -> bool {
    let labels = |e: &Endpoints| e.metadata.labels.clone().unwrap_or_default();
    labels(existing) == labels(wanted)
        && normalise_subsets(existing.subsets.as_deref())
            == normalise_subsets(wanted.subsets.as_deref())
}

fn normalise_subsets(subsets: Option<&[EndpointSubset]>) -> Vec<EndpointSubset> {
    let nonempty = |v: &Option<Vec<EndpointAddress>>| v.clone().filter(|v| !v.is_empty());
    subsets
        .unwrap_or_default()
        .iter()
        .map(|s| EndpointSubset {
            addresses: nonempty(&s.addresses),
            not_ready_addresses: nonempty(&s.not_ready_addresses),
            ports: s
                .ports
                .as_ref()
                .map(|ps| {
                    ps.iter()
                        .map(|p| CorePort {
                            name: p.name.clone().filter(|n| !n.is_empty()),
                            protocol: Some(protocol(p.protocol.as_deref()).to_string()),
                            ..p.clone()
                        })
                        .collect::<Vec<_>>()
                })
                .filter(|v| !v.is_empty()),
        })
        .collect()
}

fn slice_endpoint(svc: &Service, m: &Member<'_>) -> Endpoint {
    let publish = publish_not_ready(svc);
    Endpoint {
        addresses: vec![m.ip.clone()],
        conditions: Some(EndpointConditions {
            // Never ready while terminating, unless not-ready addresses are published.
            ready: Some(publish || (m.ready && !m.terminating)),
            serving: Some(m.ready),
            terminating: Some(m.terminating),
        }),
        hostname: m.hostname(svc),
        node_name: m.node_name(),
        target_ref: Some(m.target_ref()),
        ..Default::default()
    }
}

/// What identifies an endpoint across passes: the pod it stands for.
fn endpoint_id(e: &Endpoint) -> String {
    e.target_ref
        .as_ref()
        .and_then(|r| r.name.clone())
        .or_else(|| e.addresses.first().cloned())
        .unwrap_or_default()
}

/// Whether `slice` is one this controller manages for the service `name`.
pub fn manages(slice: &EndpointSlice, name: &str) -> bool {
    let labels = slice.metadata.labels.as_ref();
    labels
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(MANAGED_BY)
        && labels
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .map(String::as_str)
            == Some(name)
}

fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = endpoints_labels(svc);
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels
}

/// A slice being worked out: an existing one (to keep or update) or a new one.
struct Work {
    base: Option<Arc<EndpointSlice>>,
    ports: Vec<Port>,
    endpoints: Vec<Endpoint>,
}

impl Work {
    fn room(&self) -> usize {
        MAX_ENDPOINTS_PER_SLICE.saturating_sub(self.endpoints.len())
    }
}

fn plan_slices(
    svc: &Service,
    members: &[Member<'_>],
    existing: &[Arc<EndpointSlice>],
) -> Vec<SliceChange> {
    let name = svc.metadata.name.clone().unwrap_or_default();
    // Port set -> wanted endpoints, in address order.
    let mut wanted: BTreeMap<Vec<Port>, Vec<Endpoint>> = BTreeMap::new();
    // Slices here are IPv4; a pod with an IPv6 address is only in the Endpoints.
    for m in members.iter().filter(|m| m.ip.parse::<Ipv4Addr>().is_ok()) {
        wanted
            .entry(m.ports.clone())
            .or_default()
            .push(slice_endpoint(svc, m));
    }
    let mut by_id: HashMap<(&Vec<Port>, String), &Endpoint> = HashMap::new();
    for (ports, eps) in &wanted {
        for e in eps {
            by_id.insert((ports, endpoint_id(e)), e);
        }
    }
    let mut mine: Vec<&Arc<EndpointSlice>> = existing
        .iter()
        .filter(|s| {
            s.metadata.namespace == svc.metadata.namespace
                && manages(s, &name)
                && s.metadata.deletion_timestamp.is_none()
        })
        .collect();
    mine.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

    // Each existing slice keeps the endpoints it holds that are still wanted with its ports.
    let mut placed: HashSet<(Vec<Port>, String)> = HashSet::new();
    let mut kept: Vec<Work> = Vec::new();
    let mut spare: Vec<Arc<EndpointSlice>> = Vec::new();
    for s in mine {
        let ports: Vec<Port> = s.ports.iter().flatten().map(Port::from_slice).collect();
        let mut eps = Vec::new();
        if s.address_type == "IPv4" {
            for e in &s.endpoints {
                let id = endpoint_id(e);
                if let Some(w) = by_id.get(&(&ports, id.clone())) {
                    if placed.insert((ports.clone(), id)) {
                        eps.push((*w).clone());
                    }
                }
            }
        }
        if eps.is_empty() {
            spare.push(s.clone());
        } else {
            kept.push(Work {
                base: Some(s.clone()),
                ports,
                endpoints: eps,
            });
        }
    }

    // The rest go to slices of their ports that are rewritten anyway, then to one that can
    // take them all, then to spare slices recycled in place, then to new slices.
    let mut fresh: Vec<Work> = Vec::new();
    for (ports, eps) in &wanted {
        let mut left: Vec<Endpoint> = eps
            .iter()
            .filter(|e| !placed.contains(&(ports.clone(), endpoint_id(e))))
            .cloned()
            .collect();
        if left.is_empty() {
            continue;
        }
        for w in kept.iter_mut().filter(|w| &w.ports == ports) {
            let base = w.base.as_deref().expect("kept slices exist");
            if !slice_matches(base, svc, &w.ports, &w.endpoints) {
                let n = w.room().min(left.len());
                w.endpoints.extend(left.drain(..n));
            }
        }
        if !left.is_empty() {
            if let Some(w) = kept
                .iter_mut()
                .filter(|w| &w.ports == ports && w.room() >= left.len())
                .max_by_key(|w| w.endpoints.len())
            {
                w.endpoints.append(&mut left);
            }
        }
        while !left.is_empty() {
            let n = MAX_ENDPOINTS_PER_SLICE.min(left.len());
            let base = (!spare.is_empty()).then(|| spare.remove(0));
            fresh.push(Work {
                base,
                ports: ports.clone(),
                endpoints: left.drain(..n).collect(),
            });
        }
    }
    if wanted.is_empty() {
        // A placeholder: one empty slice, preferably one that is empty already.
        let at = spare
            .iter()
            .position(|s| s.endpoints.is_empty() && s.ports.as_ref().is_none_or(|p| p.is_empty()))
            .unwrap_or(0);
        let base = (!spare.is_empty()).then(|| spare.remove(at));
        fresh.push(Work {
            base,
            ports: Vec::new(),
            endpoints: Vec::new(),
        });
    }

    let mut changes = Vec::new();
    for w in kept.into_iter().chain(fresh) {
        match &w.base {
            Some(b) if slice_matches(b, svc, &w.ports, &w.endpoints) => {}
            Some(b) => changes.push(SliceChange::Update(build_slice(svc, Some(b), &w))),
            None => changes.push(SliceChange::Create(build_slice(svc, None, &w))),
        }
    }
    for s in spare {
        changes.push(SliceChange::Delete {
            name: s.metadata.name.clone().unwrap_or_default(),
            uid: s.metadata.uid.clone().unwrap_or_default(),
        });
    }
    changes
}

/// Whether `slice` already holds exactly what is wanted, with the right labels and owner.
fn slice_matches(slice: &EndpointSlice, svc: &Service, ports: &[Port], eps: &[Endpoint]) -> bool {
    let have_ports: Vec<Port> = slice.ports.iter().flatten().map(Port::from_slice).collect();
    slice.address_type == "IPv4"
        && have_ports == ports
        && slice.endpoints == eps
        && slice.metadata.labels.as_ref() == Some(&slice_labels(svc))
        && slice.metadata.owner_references.as_deref() == Some(&[controller_ref(svc)][..])
}

fn build_slice(svc: &Service, base: Option<&Arc<EndpointSlice>>, w: &Work) -> EndpointSlice {
    let mut metadata = match base {
        Some(b) => b.metadata.clone(),
        None => ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                svc.metadata.name.as_deref().unwrap_or_default()
            )),
            namespace: svc.metadata.namespace.clone(),
            ..Default::default()
        },
    };
    metadata.labels = Some(slice_labels(svc));
    metadata.owner_references = Some(vec![controller_ref(svc)]);
    metadata.managed_fields = None;
    EndpointSlice {
        metadata,
        address_type: "IPv4".into(),
        endpoints: w.endpoints.clone(),
        ports: Some(w.ports.iter().map(Port::slice).collect()),
    }
}

/// The slice writes this process made that the cache may not show yet, per service:
/// Kubernetes' `EndpointSliceTracker`. While any is outstanding the service waits, so a
/// pass never plans from a cache that misses its own last pass.
#[derive(Default)]
pub struct Tracker {
    pending: Mutex<HashMap<Key, HashMap<String, Written>>>,
}

/// A slice write by name: the resourceVersion written (`None` for a deletion), and when.
type Written = (Option<u64>, Instant);

impl Tracker {
    /// Records a slice this process created or updated, at the resourceVersion written,
    /// unless `cache` shows it already (the watch can beat the write's response).
    fn applied(&self, svc: &Key, slice: &EndpointSlice, cache: &Cache<EndpointSlice>) {
        let Some(rv) = rv_number(slice) else {
            // No number to compare the cache with: nothing to wait for.
            return;
        };
        // Checked under the lock: an event that reaches the cache after this check is
        // observed only after the record is in.
        let mut pending = self.pending.lock().expect("tracker lock");
        let cached = cache.get(&Key::of(slice));
        if cached
            .as_deref()
            .and_then(rv_number)
            .is_some_and(|have| have >= rv)
        {
            return;
        }
        pending
            .entry(svc.clone())
            .or_default()
            .insert(name_of(slice), (Some(rv), Instant::now()));
    }

    /// Records a slice this process deleted, unless `cache` no longer shows it.
    fn deleted(&self, svc: &Key, name: &str, uid: &str, cache: &Cache<EndpointSlice>) {
        let mut pending = self.pending.lock().expect("tracker lock");
        let cached = cache.get(&Key::new(&svc.namespace, name));
        if cached.is_none_or(|s| s.metadata.uid.as_deref() != Some(uid)) {
            return;
        }
        pending
            .entry(svc.clone())
            .or_default()
            .insert(name.to_string(), (None, Instant::now()));
    }

    /// Marks writes the cache now shows.
    pub fn observe(&self, change: &Change<'_, EndpointSlice>) {
        let s = change.object();
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            return;
        };
        let key = Key::new(s.metadata.namespace.as_deref().unwrap_or_default(), svc);
        let name = s.metadata.name.clone().unwrap_or_default();
        let mut pending = self.pending.lock().expect("tracker lock");
        let Some(slices) = pending.get_mut(&key) else {
            return;
        };
        let seen = match change {
            Change::Deleted(_) => true,
            Change::Applied { new, .. } => {
                let rv = rv_number(new);
                matches!((slices.get(&name), rv), (Some((Some(want), _)), Some(have)) if have >= *want)
            }
        };
        if seen {
            slices.remove(&name);
            if slices.is_empty() {
                pending.remove(&key);
            }
        }
    }

    /// Whether the cache may not show every slice write made for `svc` yet.
    pub fn stale(&self, svc: &Key) -> bool {
        let mut pending = self.pending.lock().expect("tracker lock");
        let Some(slices) = pending.get_mut(svc) else {
            return false;
        };
        slices.retain(|_, (_, at)| at.elapsed() < TRACK_TTL);
        if slices.is_empty() {
            pending.remove(svc);
            return false;
        }
        true
    }
}

fn conflict_or_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}

/// One pass over one Service.
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>, tracker: Arc<Tracker>) -> Result<Action> {
    let key = Key::of(svc.as_ref());
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::AwaitChange);
    }
    // Asked before reading the slice cache: whether it may miss this process's writes.
    let stale = tracker.stale(&key);
    let pods = ctx.pods.in_namespace(&key.namespace);
    let slices = ctx.endpointslices.in_namespace(&key.namespace);
    let Some(plan) = plan(&svc, &pods, &slices) else {
        return Ok(Action::AwaitChange);
    };
    let mut action = Action::AwaitChange;

    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let written = match ctx.endpoints.get(&key) {
        None => api.create(&PostParams::default(), &plan.endpoints).await,
        Some(have) if endpoints_match(&have, &plan.endpoints) => Ok((*have).clone()),
        Some(have) => {
            let mut new = (*have).clone();
            new.metadata.labels = plan.endpoints.metadata.labels.clone();
            new.metadata.managed_fields = None;
            new.subsets = plan.endpoints.subsets.clone();
            api.replace(&key.name, &PostParams::default(), &new).await
        }
    };
    match written {
        Ok(_) => {}
        // Created or changed since the cache saw it: look again once it has.
        Err(e) if conflict_or_gone(&e) => {
            tracing::debug!(service = %key, error = %e, "endpoints changed meanwhile; retrying");
            action = Action::Requeue(STALE_RETRY);
        }
        Err(e) => return Err(Error::api("writing endpoints of service", &key, e)),
    }

    // Slices planned from such a cache could duplicate what is there: wait for it.
    if stale {
        return Ok(Action::Requeue(STALE_RETRY));
    }
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &key.namespace);
    for change in &plan.slices {
        let result = match change {
            SliceChange::Create(s) => slices
                .create(&PostParams::default(), s)
                .await
                .map(|s| tracker.applied(&key, &s, &ctx.endpointslices)),
            SliceChange::Update(s) => slices
                .replace(&name_of(s), &PostParams::default(), s)
                .await
                .map(|s| tracker.applied(&key, &s, &ctx.endpointslices)),
            SliceChange::Delete { name, uid } => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                slices
                    .delete(name, &dp)
                    .await
                    .map(|_| tracker.deleted(&key, name, uid, &ctx.endpointslices))
            }
        };
        match result {
            Ok(()) => {}
            Err(e) if conflict_or_gone(&e) => {
                tracing::debug!(service = %key, error = %e, "endpoint slice changed meanwhile; retrying");
                action = Action::Requeue(STALE_RETRY);
            }
            Err(e) => return Err(Error::api("writing endpoint slices of service", &key, e)),
        }
    }
    Ok(action)
}

fn rv_number(s: &EndpointSlice) -> Option<u64> {
    s.metadata.resource_version.as_deref()?.parse().ok()
}

fn name_of(s: &EndpointSlice) -> String {
    s.metadata.name.clone().unwrap_or_default()
}

/// Whether a pod change can change any endpoint.
fn pod_changed(old: &Pod, new: &Pod) -> bool {
    let status = |p: &Pod| {
        p.status
            .as_ref()
            .map(|s| (s.pod_ip.clone(), s.pod_ips.clone(), s.phase.clone()))
    };
    let placement = |p: &Pod| {
        p.spec
            .as_ref()
            .map(|s| (s.node_name.clone(), s.hostname.clone(), s.subdomain.clone()))
    };
    old.metadata.labels != new.metadata.labels
        || old.metadata.deletion_timestamp != new.metadata.deletion_timestamp
        || status(old) != status(new)
        || pods::is_ready(old) != pods::is_ready(new)
        || placement(old) != placement(new)
}

/// Every Service in `ns` whose selector matches `labels`.
fn services_selecting(
    services: &runtime::Cache<Service>,
    ns: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Vec<Key> {
    services
        .in_namespace(ns)
        .iter()
        .filter(|s| selects(s, labels))
        .map(|s| Key::of(s.as_ref()))
        .collect()
}

/// Wires the loop: Services, the pods they select, and the Endpoints and slices it manages
/// (so a manual edit is repaired). Deleted Services have their Endpoints deleted by a second
/// queue.
pub fn register(
    ctx: &Arc<Ctx>,
    services: &Informer<Service>,
    pods: &Informer<Pod>,
    endpoints: &Informer<Endpoints>,
    slices: &Informer<EndpointSlice>,
) -> Vec<BoxFuture<'static, ()>> {
    let queue = Queue::new("endpoints");
    let orphans: Arc<Queue> = Queue::new("endpoints-cleanup");
    {
        let (queue, orphans) = (queue.clone(), orphans.clone());
        services.on_change(move |c| {
            let key = Key::of(c.object());
            match c {
                Change::Applied { .. } => queue.add(key),
                Change::Deleted(_) => orphans.add(key),
            }
        });
    }
    {
        let queue = queue.clone();
        let services = ctx.services.clone();
        pods.on_change(move |c| {
            let pod = c.object();
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            let mut keys = services_selecting(&services, ns, pod.metadata.labels.as_ref());
            if let Change::Applied {
                old: Some(old),
                new,
            } = c
            {
                if !pod_changed(old, new) {
                    return;
                }
                if old.metadata.labels != new.metadata.labels {
                    keys.extend(services_selecting(
                        &services,
                        ns,
                        old.metadata.labels.as_ref(),
                    ));
                }
            }
            for k in keys {
                queue.add(k);
            }
        });
    }
    endpoints.on_change(runtime::enqueue_self(&queue));
    let tracker = Arc::new(Tracker::default());
    {
        let (queue, tracker) = (queue.clone(), tracker.clone());
        slices.on_change(move |c| {
            tracker.observe(c);
            let s = c.object();
            let labels = s.metadata.labels.as_ref();
            if labels
                .and_then(|l| l.get(MANAGED_BY_LABEL))
                .map(String::as_str)
                != Some(MANAGED_BY)
            {
                return;
            }
            if let Some(svc) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                queue.add(Key::new(
                    s.metadata.namespace.as_deref().unwrap_or_default(),
                    svc,
                ));
            }
        });
    }
    let synced: Vec<Arc<dyn Synced>> = vec![
        ctx.pods.clone(),
        ctx.endpoints.clone(),
        ctx.endpointslices.clone(),
    ];
    vec![
        runtime::run(
            queue,
            ctx.services.clone(),
            synced,
            ctx.config.workers,
            ctx.clone(),
            move |svc, ctx| reconcile(svc, ctx, tracker.clone()),
        )
        .boxed(),
        delete_orphans(orphans, ctx.clone()).boxed(),
    ]
}

/// Deletes the Endpoints of Services that were deleted (and not created again since).
async fn delete_orphans(queue: Arc<Queue>, ctx: Arc<Ctx>) {
    ctx.services.synced().await;
    ctx.endpoints.synced().await;
    loop {
        let key = queue.next().await;
        let result = delete_orphan(&ctx, &key).await;
        match result {
            Ok(()) => {
                queue.done(&key, false);
            }
            Err(e) => {
                let backoff = queue.done(&key, true).unwrap_or_default();
                tracing::warn!(service = %key, error = %e, ?backoff, "deleting endpoints failed");
                queue.add_after(key, backoff);
            }
        }
    }
}

async fn delete_orphan(ctx: &Ctx, key: &Key) -> Result<()> {
    if ctx.services.get(key).is_some() {
        return Ok(());
    }
    let Some(ep) = ctx.endpoints.get(key) else {
        return Ok(());
    };
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: ep.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&key.name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if conflict_or_gone(&e) => Ok(()),
        Err(e) => Err(Error::api("deleting endpoints of deleted service", key, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::fixtures::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, ServiceSpec};

    /// `svc("web")`: selects `app=web` in `default`, with no ports yet.
    fn svc(name: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("team".to_string(), "a".to_string())].into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    trait SvcExt {
        fn port(self, name: &str, port: i32, target: Option<IntOrString>) -> Self;
        fn no_selector(self) -> Self;
        fn external_name(self) -> Self;
        fn publishing_not_ready(self) -> Self;
    }

    impl SvcExt for Service {
        fn port(mut self, name: &str, port: i32, target: Option<IntOrString>) -> Self {
            let spec = self.spec.as_mut().unwrap();
            spec.ports.get_or_insert_with(Vec::new).push(ServicePort {
                name: Some(name.into()),
                port,
                target_port: target,
                protocol: Some("TCP".into()),
                ..Default::default()
            });
            self
        }
        fn no_selector(mut self) -> Self {
            self.spec.as_mut().unwrap().selector = None;
            self
        }
        fn external_name(mut self) -> Self {
            let spec = self.spec.as_mut().unwrap();
            spec.type_ = Some("ExternalName".into());
            spec.external_name = Some("example.com".into());
            self
        }
        fn publishing_not_ready(mut self) -> Self {
            self.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
            self
        }
    }

    fn named(n: &str) -> Option<IntOrString> {
        Some(IntOrString::String(n.into()))
    }

    trait EpPodExt {
        fn ip(self, ip: &str) -> Self;
        /// A container port named `name`.
        fn serves(self, name: &str, port: i32) -> Self;
    }

    impl EpPodExt for Pod {
        fn ip(mut self, ip: &str) -> Self {
            self.status.as_mut().unwrap().pod_ip = Some(ip.into());
            self
        }
        fn serves(mut self, name: &str, port: i32) -> Self {
            let spec = self.spec.get_or_insert_with(PodSpec::default);
            if spec.containers.is_empty() {
                spec.containers.push(Container {
                    name: "c".into(),
                    ..Default::default()
                });
            }
            spec.containers[0]
                .ports
                .get_or_insert_with(Vec::new)
                .push(ContainerPort {
                    name: Some(name.into()),
                    container_port: port,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                });
            self
        }
    }

    /// A pod `app=web` with an address, ready.
    fn web(name: &str, ip: &str) -> Pod {
        pod(name)
            .labels(&[("app", "web")])
            .on("n1")
            .ready_at(0)
            .ip(ip)
    }

    fn arcs(pods: Vec<Pod>) -> Vec<Arc<Pod>> {
        pods.into_iter().map(Arc::new).collect()
    }

    /// Subsets as `ports: ready | not ready`, e.g. `http:8080: a b | c`.
    fn subsets(e: &Endpoints) -> Vec<String> {
        let names = |v: &Option<Vec<EndpointAddress>>| {
            v.iter()
                .flatten()
                .map(|a| a.target_ref.as_ref().unwrap().name.clone().unwrap())
                .collect::<Vec<_>>()
                .join(" ")
        };
        e.subsets
            .iter()
            .flatten()
            .map(|s| {
                let ports: Vec<String> = s
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| format!("{}:{}", p.name.clone().unwrap_or_default(), p.port))
                    .collect();
                format!(
                    "{}: {} | {}",
                    ports.join(","),
                    names(&s.addresses),
                    names(&s.not_ready_addresses)
                )
            })
            .collect()
    }

    fn slice_line(s: &EndpointSlice) -> String {
        let ports: Vec<String> = s
            .ports
            .iter()
            .flatten()
            .map(|p| format!("{}:{}", p.name.clone().unwrap(), p.port.unwrap()))
            .collect();
        let eps: Vec<String> = s
            .endpoints
            .iter()
            .map(|e| {
                let c = e.conditions.clone().unwrap();
                let mut flags = Vec::new();
                for (on, f) in [
                    (c.ready, "ready"),
                    (c.serving, "serving"),
                    (c.terminating, "terminating"),
                ] {
                    if on == Some(true) {
                        flags.push(f);
                    }
                }
                format!("{}({})", endpoint_id(e), flags.join(","))
            })
            .collect();
        format!("[{}] {}", ports.join(","), eps.join(" "))
    }

    /// Changes as `create [ports] endpoints`, `update NAME [ports] endpoints`, `delete NAME`.
    fn changes(v: &[SliceChange]) -> Vec<String> {
        v.iter()
            .map(|c| match c {
                SliceChange::Create(s) => format!("create {}", slice_line(s)),
                SliceChange::Update(s) => {
                    format!("update {} {}", name_of(s), slice_line(s))
                }
                SliceChange::Delete { name, .. } => format!("delete {name}"),
            })
            .collect()
    }

    /// The API server's answer to creating `change`: the slice, named `name`.
    fn stored(change: &SliceChange, name: &str) -> Arc<EndpointSlice> {
        let (SliceChange::Create(s) | SliceChange::Update(s)) = change else {
            panic!("not a write: {change:?}");
        };
        let mut s = s.clone();
        s.metadata.name = Some(name.into());
        s.metadata.uid = Some(format!("uid-{name}"));
        s.metadata.resource_version = Some("7".into());
        Arc::new(s)
    }

    #[test]
    fn named_target_ports_are_resolved_in_each_pod() {
        let s = svc("web")
            .port("http", 80, named("web"))
            .port("metrics", 9100, Some(IntOrString::Int(9101)))
            .port("plain", 81, None);
        let pods = arcs(vec![
            web("a", "10.0.0.1").serves("web", 8080),
            web("b", "10.0.0.2").serves("web", 9090),
            web("c", "10.0.0.3").serves("web", 8080),
            // No port named `web`: only the numbered ports.
            web("d", "10.0.0.4").serves("other", 8080),
        ]);
        let p = plan(&s, &pods, &[]).unwrap();
        assert_eq!(
            subsets(&p.endpoints),
            [
                "http:8080,metrics:9101,plain:81: a c | ",
                "http:9090,metrics:9101,plain:81: b | ",
                "metrics:9101,plain:81: d | ",
            ]
        );
        assert_eq!(
            changes(&p.slices),
            [
                "create [http:8080,metrics:9101,plain:81] a(ready,serving) c(ready,serving)",
                "create [http:9090,metrics:9101,plain:81] b(ready,serving)",
                "create [metrics:9101,plain:81] d(ready,serving)",
            ]
        );
    }

    #[test]
    fn the_endpoints_and_a_slice_say_exactly_this() {
        let s = svc("web").port("http", 80, named("web"));
        let pods = arcs(vec![web("a", "10.0.0.1").serves("web", 8080)]);
        let p = plan(&s, &pods, &[]).unwrap();
        let target = ObjectReference {
            kind: Some("Pod".into()),
            name: Some("a".into()),
            namespace: Some("default".into()),
            uid: Some("uid-a".into()),
            ..Default::default()
        };
        assert_eq!(
            p.endpoints,
            Endpoints {
                metadata: ObjectMeta {
                    name: Some("web".into()),
                    namespace: Some("default".into()),
                    labels: Some([("team".to_string(), "a".to_string())].into()),
                    ..Default::default()
                },
                subsets: Some(vec![EndpointSubset {
                    addresses: Some(vec![EndpointAddress {
                        ip: "10.0.0.1".into(),
                        hostname: None,
                        node_name: Some("n1".into()),
                        target_ref: Some(target.clone()),
                    }]),
                    not_ready_addresses: None,
                    ports: Some(vec![CorePort {
                        name: Some("http".into()),
                        port: 8080,
                        protocol: Some("TCP".into()),
                        app_protocol: None,
                    }]),
                }]),
            }
        );
        let labels: BTreeMap<String, String> = [
            ("team", "a"),
            (SERVICE_NAME_LABEL, "web"),
            (MANAGED_BY_LABEL, MANAGED_BY),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            p.slices,
            [SliceChange::Create(EndpointSlice {
                metadata: ObjectMeta {
                    generate_name: Some("web-".into()),
                    namespace: Some("default".into()),
                    labels: Some(labels),
                    owner_references: Some(vec![controller_ref(&s)]),
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                endpoints: vec![Endpoint {
                    addresses: vec!["10.0.0.1".into()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    node_name: Some("n1".into()),
                    target_ref: Some(target),
                    ..Default::default()
                }],
                ports: Some(vec![SlicePort {
                    name: Some("http".into()),
                    port: Some(8080),
                    protocol: Some("TCP".into()),
                    app_protocol: None,
                }]),
            })]
        );
        // Stored as planned, it needs no change.
        let have = stored(&p.slices[0], "web-x1");
        assert!(plan(&s, &pods, &[have]).unwrap().slices.is_empty());
    }

    #[test]
    fn not_ready_pods_are_listed_apart_and_pods_without_an_address_not_at_all() {
        let s = svc("web").port("http", 80, None);
        let pods = arcs(vec![
            web("ready", "10.0.0.1"),
            pod("starting")
                .labels(&[("app", "web")])
                .running()
                .ip("10.0.0.2"),
            pod("no-ip").labels(&[("app", "web")]).running(),
            web("done", "10.0.0.4").phase("Succeeded"),
            web("other-app", "10.0.0.5").labels(&[("app", "db")]),
        ]);
        let p = plan(&s, &pods, &[]).unwrap();
        assert_eq!(subsets(&p.endpoints), ["http:80: ready | starting"]);
        assert_eq!(
            changes(&p.slices),
            ["create [http:80] ready(ready,serving) starting()"]
        );
    }

    #[test]
    fn terminating_pods_leave_the_endpoints_but_stay_in_slices_as_terminating() {
        let s = svc("web").port("http", 80, None);
        let pods = arcs(vec![
            web("a", "10.0.0.1"),
            web("going", "10.0.0.2").deleting(),
        ]);
        let p = plan(&s, &pods, &[]).unwrap();
        assert_eq!(subsets(&p.endpoints), ["http:80: a | "]);
        assert_eq!(
            changes(&p.slices),
            ["create [http:80] a(ready,serving) going(serving,terminating)"]
        );
        // Published not-ready addresses: everyone is ready, terminating or not.
        let s = s.publishing_not_ready();
        let pods = arcs(vec![
            web("going", "10.0.0.2").deleting(),
            pod("starting")
                .labels(&[("app", "web")])
                .running()
                .ip("10.0.0.3"),
        ]);
        let p = plan(&s, &pods, &[]).unwrap();
        assert_eq!(subsets(&p.endpoints), ["http:80: going starting | "]);
        assert_eq!(
            changes(&p.slices),
            ["create [http:80] going(ready,serving,terminating) starting(ready)"]
        );
    }

    #[test]
    fn slices_are_updated_in_place_and_surplus_ones_deleted() {
        let s = svc("web").port("http", 80, None);
        let before = arcs(vec![web("a", "10.0.0.1"), web("b", "10.0.0.2")]);
        let first = plan(&s, &before, &[]).unwrap().slices;
        let one = stored(&first[0], "web-1");
        // `b` is gone and `c` came: the slice is rewritten, `a` where it was.
        let after = arcs(vec![web("c", "10.0.0.0"), web("a", "10.0.0.1")]);
        let p = plan(&s, &after, std::slice::from_ref(&one)).unwrap();
        assert_eq!(
            changes(&p.slices),
            ["update web-1 [http:80] a(ready,serving) c(ready,serving)"]
        );
        let SliceChange::Update(u) = &p.slices[0] else {
            unreachable!()
        };
        assert_eq!(u.metadata.resource_version.as_deref(), Some("7"));
        // A second slice that holds nothing wanted is deleted; one that is still right
        // is left alone.
        let dup = stored(&first[0], "web-2");
        let p = plan(&s, &before, &[one.clone(), dup]).unwrap();
        assert_eq!(changes(&p.slices), ["delete web-2"]);
        // A slice of other ports with no wanted endpoints is reused for the new ports.
        let s2 = svc("web").port("http", 80, Some(IntOrString::Int(8080)));
        let p = plan(&s2, &before, &[one]).unwrap();
        assert_eq!(
            changes(&p.slices),
            ["update web-1 [http:8080] a(ready,serving) b(ready,serving)"]
        );
    }

    #[test]
    fn a_manually_edited_slice_is_repaired() {
        let s = svc("web").port("http", 80, None);
        let pods = arcs(vec![web("a", "10.0.0.1")]);
        let mut edited = (*stored(&plan(&s, &pods, &[]).unwrap().slices[0], "web-1")).clone();
        edited.endpoints[0].conditions.as_mut().unwrap().ready = Some(false);
        edited
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("extra".into(), "x".into());
        let p = plan(&s, &pods, &[Arc::new(edited)]).unwrap();
        assert_eq!(
            changes(&p.slices),
            ["update web-1 [http:80] a(ready,serving)"]
        );
        let SliceChange::Update(u) = &p.slices[0] else {
            unreachable!()
        };
        assert!(!u.metadata.labels.as_ref().unwrap().contains_key("extra"));
        // Slices of other services, or not managed by this controller, are not touched.
        let mut foreign = (*stored(&p.slices[0], "mine-1")).clone();
        foreign
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(MANAGED_BY_LABEL.into(), "someone-else".into());
        let other = stored(
            &plan(&svc("db").port("x", 1, None), &[], &[])
                .unwrap()
                .slices[0],
            "db-1",
        );
        let p = plan(&s, &pods, &[Arc::new(foreign), other]).unwrap();
        assert_eq!(changes(&p.slices), ["create [http:80] a(ready,serving)"]);
    }

    #[test]
    fn slices_split_at_a_hundred_endpoints_reusing_what_exists() {
        let s = svc("web").port("http", 80, None);
        let many = |from: u32, n: u32| {
            arcs(
                (from..from + n)
                    .map(|i| {
                        web(
                            &format!("p{i:03}"),
                            &format!("10.0.{}.{}", i / 200, i % 200 + 1),
                        )
                    })
                    .collect(),
            )
        };
        let sizes = |v: &[SliceChange]| {
            v.iter()
                .map(|c| match c {
                    SliceChange::Create(s) => format!("create {}", s.endpoints.len()),
                    SliceChange::Update(s) => {
                        format!("update {} {}", name_of(s), s.endpoints.len())
                    }
                    SliceChange::Delete { name, .. } => format!("delete {name}"),
                })
                .collect::<Vec<_>>()
        };
        let pods = many(0, 250);
        let p = plan(&s, &pods, &[]).unwrap();
        assert_eq!(sizes(&p.slices), ["create 100", "create 100", "create 50"]);
        let have: Vec<_> = p
            .slices
            .iter()
            .enumerate()
            .map(|(i, c)| stored(c, &format!("web-{i}")))
            .collect();
        assert!(plan(&s, &pods, &have).unwrap().slices.is_empty());
        // Twenty more fit in the slice with room: one update, no new slice.
        let mut more = pods.clone();
        more.extend(many(250, 20));
        let p = plan(&s, &more, &have).unwrap();
        assert_eq!(sizes(&p.slices), ["update web-2 70"]);
        // Every pod replaced by 120 others: two slices are recycled, the third deleted.
        let p = plan(&s, &many(1000, 120), &have).unwrap();
        assert_eq!(
            sizes(&p.slices),
            ["update web-0 100", "update web-1 20", "delete web-2"]
        );
    }

    #[test]
    fn a_service_that_selects_nothing_keeps_one_empty_slice() {
        let s = svc("web").port("http", 80, None);
        let p = plan(&s, &[], &[]).unwrap();
        assert_eq!(subsets(&p.endpoints), Vec::<String>::new());
        assert_eq!(p.endpoints.subsets, None);
        assert_eq!(changes(&p.slices), ["create [] "]);
        let placeholder = stored(&p.slices[0], "web-0");
        assert!(plan(&s, &[], std::slice::from_ref(&placeholder))
            .unwrap()
            .slices
            .is_empty());
        // Once a pod comes, the placeholder is filled rather than another slice made.
        let pods = arcs(vec![web("a", "10.0.0.1")]);
        let p = plan(&s, &pods, &[placeholder]).unwrap();
        assert_eq!(
            changes(&p.slices),
            ["update web-0 [http:80] a(ready,serving)"]
        );
    }

    #[test]
    fn services_without_a_selector_and_external_names_are_left_alone() {
        let pods = arcs(vec![web("a", "10.0.0.1")]);
        assert!(plan(&svc("web").port("http", 80, None).no_selector(), &pods, &[]).is_none());
        assert!(plan(&svc("web").external_name(), &pods, &[]).is_none());
        let mut empty = svc("web").port("http", 80, None);
        empty.spec.as_mut().unwrap().selector = Some(BTreeMap::new());
        assert!(plan(&empty, &pods, &[]).is_none());
    }

    #[test]
    fn endpoints_compare_as_the_server_stores_them() {
        let s = svc("web").port("", 80, None);
        let pods = arcs(vec![web("a", "10.0.0.1")]);
        let wanted = plan(&s, &pods, &[]).unwrap().endpoints;
        let mut stored = wanted.clone();
        stored.metadata.resource_version = Some("3".into());
        let port = &mut stored.subsets.as_mut().unwrap()[0].ports.as_mut().unwrap()[0];
        port.name = Some(String::new());
        assert!(endpoints_match(&stored, &wanted));
        stored.metadata.labels = None;
        assert!(!endpoints_match(&stored, &wanted));
    }

    #[test]
    fn the_tracker_waits_for_the_cache_to_show_each_write() {
        let t = Tracker::default();
        let key = Key::new("default", "web");
        let s = svc("web").port("http", 80, None);
        let written = |rv: &str| {
            let mut w = (*stored(&plan(&s, &[], &[]).unwrap().slices[0], "web-1")).clone();
            w.metadata.resource_version = Some(rv.into());
            w
        };
        // The cache shows an older version: stale until the informer tells the written one.
        let cache = Cache::from_objects([written("5")]);
        t.applied(&key, &written("7"), &cache);
        assert!(t.stale(&key));
        t.observe(&Change::Applied {
            old: None,
            new: &written("6"),
        });
        assert!(t.stale(&key));
        t.observe(&Change::Applied {
            old: None,
            new: &written("7"),
        });
        assert!(!t.stale(&key));
        // The watch told the write before its response came: nothing to wait for.
        let cache = Cache::from_objects([written("7")]);
        t.applied(&key, &written("7"), &cache);
        assert!(!t.stale(&key));
        // A deletion waits for the cache to drop the slice.
        t.deleted(&key, "web-1", "uid-web-1", &cache);
        assert!(t.stale(&key));
        t.observe(&Change::Deleted(&written("7")));
        assert!(!t.stale(&key));
        let empty = Cache::<EndpointSlice>::from_objects([]);
        t.deleted(&key, "web-1", "uid-web-1", &empty);
        assert!(!t.stale(&key));
    }

    #[test]
    fn only_pod_changes_that_matter_count() {
        let a = web("a", "10.0.0.1");
        let mut restarted = a.clone();
        restarted.metadata.resource_version = Some("9".into());
        assert!(!pod_changed(&a, &restarted));
        assert!(pod_changed(&a, &a.clone().deleting()));
        assert!(pod_changed(&a, &a.clone().phase("Pending")));
        assert!(pod_changed(&a, &a.clone().ip("10.0.0.9")));
        assert!(pod_changed(&a, &a.clone().labels(&[("app", "db")])));
    }
}
