//! IPVS mode: Services as kernel virtual servers, as kube-proxy's IPVS mode.
//!
//! Three layers, read in this order:
//! - [`netlink`]: the kernel's IPVS table over generic netlink ([`netlink::IpvsNetlink`]),
//!   and [`dummy`]: the `berth-ipvs0` dummy interface holding every ClusterIP.
//! - [`plan`]: pure functions from the desired virtual services ([`Desired`]) and what
//!   the kernel holds ([`Snapshot`]) to the fewest [`Op`]s that make them equal.
//! - [`Ipvs`]: the thin executor. It remembers what it programmed, so a change to one
//!   Service plans and touches only that Service's entries; it reads the kernel again
//!   after any failure.
//!
//! Around it, IPVS mode needs conntrack for IPVS connections and masquerade rules for
//! some packets: [`SYSCTLS`] and [`masquerade`] describe them, and [`rules`] writes them
//! (with the refusal of services without endpoints) as an nftables table.
//!
//! [`dataplane`]: the proxy's [`crate::Dataplane`] on top of all this ([`IpvsDataplane`]).

pub mod dataplane;
pub mod dummy;
pub mod masquerade;
pub mod netlink;
pub mod plan;
pub mod rules;
mod socket;

#[cfg(test)]
mod fake;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

pub use self::dataplane::{IpvsConfig, IpvsDataplane};
pub use self::dummy::DummyLink;
pub use self::netlink::{Destination, IpvsNetlink, Protocol, Service, ServiceKey};
pub use self::plan::{plan, plan_scope, plan_service, Scope};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read the kernel's ipvs state: {0}")]
    Read(#[source] netlink::Error),
    #[error("{op}: {source}")]
    Apply {
        op: Box<Op>,
        #[source]
        source: netlink::Error,
    },
    #[error("write sysctl {path}: {source}")]
    Sysctl {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The scheduler of every Berth service: round robin, as kube-proxy's default.
pub const SCHEDULER: &str = "rr";

/// Every real server gets this weight (0 would take it out of scheduling).
pub const WEIGHT: u32 = 1;

/// Sysctls (paths under `/proc/sys`) IPVS mode needs, as kube-proxy sets them. The
/// `net/ipv4/vs/*` ones exist once `ip_vs` is loaded, in every network namespace.
pub const SYSCTLS: &[(&str, &str)] = &[
    // Keep netfilter conntrack entries for IPVS connections, so nft can masquerade them
    // and so a reply is matched to its connection.
    ("net/ipv4/vs/conntrack", "1"),
    // Drop a connection at once when its real server is deleted, instead of
    // black-holing its packets until the entry times out.
    ("net/ipv4/vs/expire_nodest_conn", "1"),
    // Expire a persistence (ClientIP affinity) template when its real server is gone.
    ("net/ipv4/vs/expire_quiescent_template", "1"),
    ("net/ipv4/ip_forward", "1"),
];

/// Write [`SYSCTLS`] under `proc_sys` (normally `/proc/sys`).
pub fn write_sysctls(proc_sys: &Path) -> Result<()> {
    for (name, value) in SYSCTLS {
        let path = proc_sys.join(name);
        std::fs::write(&path, value).map_err(|source| Error::Sysctl {
            path: path.clone(),
            source,
        })?;
        debug!(path = %path.display(), value, "sysctl set");
    }
    Ok(())
}

/// Where a virtual address comes from, which decides whether it goes on `berth-ipvs0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VipKind {
    /// A ClusterIP (or external IP): held on the dummy interface.
    ClusterIp,
    /// A node address with a NodePort: already local, never added or removed.
    NodePort,
}

/// One virtual service Berth wants: a Service port on one address and protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualService {
    pub key: ServiceKey,
    pub kind: VipKind,
    /// `sessionAffinity: ClientIP` timeout in seconds; `None` for no affinity.
    pub affinity_timeout: Option<u32>,
    /// The ready endpoints.
    pub real_servers: BTreeSet<SocketAddr>,
}

impl VirtualService {
    /// A ClusterIP service without affinity and without endpoints.
    pub fn cluster_ip(protocol: Protocol, addr: SocketAddr) -> Self {
        VirtualService {
            key: ServiceKey::new(protocol, addr),
            kind: VipKind::ClusterIp,
            affinity_timeout: None,
            real_servers: BTreeSet::new(),
        }
    }

    /// A NodePort service on a node address, without affinity and without endpoints.
    pub fn node_port(protocol: Protocol, addr: SocketAddr) -> Self {
        VirtualService {
            kind: VipKind::NodePort,
            ..Self::cluster_ip(protocol, addr)
        }
    }

    pub fn affinity(mut self, timeout: u32) -> Self {
        self.affinity_timeout = Some(timeout);
        self
    }

    pub fn real_servers(mut self, servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.real_servers.extend(servers);
        self
    }

    /// The kernel service this should be.
    pub fn service(&self) -> Service {
        let service = Service::new(self.key, SCHEDULER);
        match self.affinity_timeout {
            Some(timeout) => service.persistent(timeout),
            None => service,
        }
    }

    /// The kernel destination for one of its real servers.
    pub fn destination(&self, addr: SocketAddr) -> Destination {
        Destination::masquerade(addr, WEIGHT)
    }

    /// The address to hold on the dummy interface, if any.
    pub fn bound_address(&self) -> Option<IpAddr> {
        (self.kind == VipKind::ClusterIp).then(|| self.key.addr.ip())
    }
}

/// The virtual services Berth wants, keyed by protocol, address and port, with a count
/// of the services on each address that must be held on the dummy interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    services: BTreeMap<ServiceKey, VirtualService>,
    bound: BTreeMap<IpAddr, usize>,
}

impl Desired {
    /// The set of `services`; a later one replaces an earlier one with the same key.
    pub fn new(services: impl IntoIterator<Item = VirtualService>) -> Self {
        let mut desired = Desired::default();
        for service in services {
            desired.insert(service);
        }
        desired
    }

    /// Add or replace a virtual service; returns the one it replaced.
    pub fn insert(&mut self, service: VirtualService) -> Option<VirtualService> {
        if let Some(ip) = service.bound_address() {
            *self.bound.entry(ip).or_default() += 1;
        }
        let old = self.services.insert(service.key, service);
        if let Some(old) = &old {
            self.unbind(old);
        }
        old
    }

    pub fn remove(&mut self, key: &ServiceKey) -> Option<VirtualService> {
        let old = self.services.remove(key);
        if let Some(old) = &old {
            self.unbind(old);
        }
        old
    }

    fn unbind(&mut self, service: &VirtualService) {
        if let Some(ip) = service.bound_address() {
            if let Some(count) = self.bound.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    self.bound.remove(&ip);
                }
            }
        }
    }

    pub fn get(&self, key: &ServiceKey) -> Option<&VirtualService> {
        self.services.get(key)
    }

    pub fn services(&self) -> impl Iterator<Item = &VirtualService> {
        self.services.values()
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Whether some virtual service needs `ip` on the dummy interface.
    pub fn is_bound(&self, ip: &IpAddr) -> bool {
        self.bound.contains_key(ip)
    }

    /// Every address the dummy interface must hold.
    pub fn bound_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.bound.keys().copied()
    }
}

/// One service as the kernel holds it, with its destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelService {
    pub service: Service,
    pub destinations: BTreeMap<SocketAddr, Destination>,
}

/// What the kernel holds: the IPVS table and the dummy interface's addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub services: BTreeMap<ServiceKey, KernelService>,
    pub addresses: BTreeSet<IpAddr>,
}

impl Snapshot {
    /// Record `op` as applied, the way the kernel applies it.
    pub fn record(&mut self, op: &Op) {
        match op {
            Op::AddAddress(ip) => {
                self.addresses.insert(*ip);
            }
            Op::DeleteAddress(ip) => {
                self.addresses.remove(ip);
            }
            Op::AddService(service) | Op::UpdateService(service) => {
                self.services
                    .entry(service.key)
                    .and_modify(|k| k.service = service.clone())
                    .or_insert_with(|| KernelService {
                        service: service.clone(),
                        destinations: BTreeMap::new(),
                    });
            }
            Op::DeleteService(key) => {
                self.services.remove(key);
            }
            Op::AddDestination(key, dest) | Op::UpdateDestination(key, dest) => {
                if let Some(k) = self.services.get_mut(key) {
                    k.destinations.insert(dest.addr, *dest);
                }
            }
            Op::DeleteDestination(key, addr) => {
                if let Some(k) = self.services.get_mut(key) {
                    k.destinations.remove(addr);
                }
            }
        }
    }
}

/// One change to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    AddAddress(IpAddr),
    AddService(Service),
    UpdateService(Service),
    /// Deletes the service's destinations with it.
    DeleteService(ServiceKey),
    AddDestination(ServiceKey, Destination),
    UpdateDestination(ServiceKey, Destination),
    DeleteDestination(ServiceKey, SocketAddr),
    DeleteAddress(IpAddr),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AddAddress(ip) => write!(f, "add address {ip}"),
            Op::AddService(s) => write!(f, "add ipvs service {}", s.key),
            Op::UpdateService(s) => write!(f, "update ipvs service {}", s.key),
            Op::DeleteService(key) => write!(f, "delete ipvs service {key}"),
            Op::AddDestination(key, d) => write!(f, "add destination {} to {key}", d.addr),
            Op::UpdateDestination(key, d) => {
                write!(f, "update destination {} of {key}", d.addr)
            }
            Op::DeleteDestination(key, addr) => write!(f, "delete destination {addr} of {key}"),
            Op::DeleteAddress(ip) => write!(f, "delete address {ip}"),
        }
    }
}

/// The kernel's IPVS table, as the executor drives it: [`IpvsNetlink`], or a fake.
pub trait IpvsKernel: Send {
    fn services(&mut self) -> netlink::Result<Vec<Service>>;
    fn destinations(&mut self, key: &ServiceKey) -> netlink::Result<Vec<Destination>>;
    fn add_service(&mut self, service: &Service) -> netlink::Result<()>;
    fn update_service(&mut self, service: &Service) -> netlink::Result<()>;
    fn delete_service(&mut self, key: &ServiceKey) -> netlink::Result<()>;
    fn add_destination(&mut self, key: &ServiceKey, dest: &Destination) -> netlink::Result<()>;
    fn update_destination(&mut self, key: &ServiceKey, dest: &Destination) -> netlink::Result<()>;
    fn delete_destination(&mut self, key: &ServiceKey, addr: SocketAddr) -> netlink::Result<()>;
}

impl IpvsKernel for IpvsNetlink {
    fn services(&mut self) -> netlink::Result<Vec<Service>> {
        IpvsNetlink::services(self)
    }
    fn destinations(&mut self, key: &ServiceKey) -> netlink::Result<Vec<Destination>> {
        IpvsNetlink::destinations(self, key)
    }
    fn add_service(&mut self, service: &Service) -> netlink::Result<()> {
        IpvsNetlink::add_service(self, service)
    }
    fn update_service(&mut self, service: &Service) -> netlink::Result<()> {
        IpvsNetlink::update_service(self, service)
    }
    fn delete_service(&mut self, key: &ServiceKey) -> netlink::Result<()> {
        IpvsNetlink::delete_service(self, key)
    }
    fn add_destination(&mut self, key: &ServiceKey, dest: &Destination) -> netlink::Result<()> {
        IpvsNetlink::add_destination(self, key, dest)
    }
    fn update_destination(&mut self, key: &ServiceKey, dest: &Destination) -> netlink::Result<()> {
        IpvsNetlink::update_destination(self, key, dest)
    }
    fn delete_destination(&mut self, key: &ServiceKey, addr: SocketAddr) -> netlink::Result<()> {
        IpvsNetlink::delete_destination(self, key, addr)
    }
}

/// The addresses of the dummy interface: [`DummyLink`], or a fake.
pub trait LocalAddresses: Send {
    fn addresses(&mut self) -> netlink::Result<BTreeSet<IpAddr>>;
    fn add_address(&mut self, addr: IpAddr) -> netlink::Result<()>;
    fn delete_address(&mut self, addr: IpAddr) -> netlink::Result<()>;
}

impl LocalAddresses for DummyLink {
    fn addresses(&mut self) -> netlink::Result<BTreeSet<IpAddr>> {
        DummyLink::addresses(self)
    }
    fn add_address(&mut self, addr: IpAddr) -> netlink::Result<()> {
        DummyLink::add_address(self, addr)
    }
    fn delete_address(&mut self, addr: IpAddr) -> netlink::Result<()> {
        DummyLink::delete_address(self, addr)
    }
}

/// Read the kernel's IPVS table and the dummy interface's addresses.
pub fn read_kernel(
    kernel: &mut dyn IpvsKernel,
    addresses: &mut dyn LocalAddresses,
) -> netlink::Result<Snapshot> {
    let mut snapshot = Snapshot {
        addresses: addresses.addresses()?,
        ..Snapshot::default()
    };
    for service in kernel.services()? {
        let destinations = kernel
            .destinations(&service.key)?
            .into_iter()
            .map(|d| (d.addr, d))
            .collect();
        snapshot.services.insert(
            service.key,
            KernelService {
                service,
                destinations,
            },
        );
    }
    Ok(snapshot)
}

/// The IPVS back end: owns the IPVS table of its network namespace and the addresses
/// of its dummy interface, and makes them match the desired virtual services.
pub struct Ipvs {
    kernel: Box<dyn IpvsKernel>,
    addresses: Box<dyn LocalAddresses>,
    desired: Desired,
    /// What the kernel holds, as far as we know; `None` after a failure, until the
    /// next full read.
    current: Option<Snapshot>,
}

impl fmt::Debug for Ipvs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ipvs")
            .field("services", &self.desired.len())
            .field("in_sync", &self.current.is_some())
            .finish()
    }
}

impl Ipvs {
    pub fn new(kernel: Box<dyn IpvsKernel>, addresses: Box<dyn LocalAddresses>) -> Self {
        Ipvs {
            kernel,
            addresses,
            desired: Desired::default(),
            current: None,
        }
    }

    /// The real thing: the IPVS family of this thread's network namespace and the dummy
    /// interface `link` (created if missing).
    pub fn connect(link: &str) -> netlink::Result<Self> {
        Ok(Ipvs::new(
            Box::new(IpvsNetlink::connect()?),
            Box::new(DummyLink::ensure(link)?),
        ))
    }

    /// Read the kernel, then make it hold exactly `desired`: services and addresses
    /// that are not desired are deleted. Returns the operations applied.
    pub fn sync(&mut self, desired: Desired) -> Result<Vec<Op>> {
        let snapshot =
            read_kernel(self.kernel.as_mut(), self.addresses.as_mut()).map_err(Error::Read)?;
        let ops = plan(&desired, &snapshot);
        info!(
            services = desired.len(),
            kernel_services = snapshot.services.len(),
            ops = ops.len(),
            "ipvs full sync"
        );
        self.desired = desired;
        self.current = Some(snapshot);
        self.apply(ops)
    }

    /// Change some virtual services: delete those in `removed`, add or replace those in
    /// `upserted`. Only their entries are planned and touched. After an earlier failure
    /// this reads the kernel and syncs everything instead.
    pub fn update(
        &mut self,
        removed: &[ServiceKey],
        upserted: Vec<VirtualService>,
    ) -> Result<Vec<Op>> {
        let mut scope = Scope::default();
        for key in removed {
            scope.services.insert(*key);
            if let Some(old) = self.desired.remove(key) {
                scope.addresses.extend(old.bound_address());
            }
        }
        for service in upserted {
            scope.services.insert(service.key);
            scope.addresses.extend(service.bound_address());
            if let Some(old) = self.desired.insert(service) {
                scope.addresses.extend(old.bound_address());
            }
        }
        let Some(current) = &self.current else {
            warn!("ipvs state unknown after an earlier failure: full sync");
            let desired = self.desired.clone();
            return self.sync(desired);
        };
        let ops = plan_scope(&self.desired, current, &scope);
        debug!(
            services = scope.services.len(),
            ops = ops.len(),
            "ipvs update"
        );
        self.apply(ops)
    }

    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// What the kernel holds as far as the back end knows (`None` after a failure).
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.current.as_ref()
    }

    fn apply(&mut self, ops: Vec<Op>) -> Result<Vec<Op>> {
        for op in &ops {
            let done = match op {
                Op::AddAddress(ip) => self.addresses.add_address(*ip),
                Op::DeleteAddress(ip) => self.addresses.delete_address(*ip),
                Op::AddService(s) => self.kernel.add_service(s),
                Op::UpdateService(s) => self.kernel.update_service(s),
                Op::DeleteService(key) => self.kernel.delete_service(key),
                Op::AddDestination(key, d) => self.kernel.add_destination(key, d),
                Op::UpdateDestination(key, d) => self.kernel.update_destination(key, d),
                Op::DeleteDestination(key, addr) => self.kernel.delete_destination(key, *addr),
            };
            if let Err(source) = done {
                warn!(%op, error = %source, "ipvs operation failed; the next update reads the kernel again");
                self.current = None;
                return Err(Error::Apply {
                    op: Box::new(op.clone()),
                    source,
                });
            }
            if let Some(current) = &mut self.current {
                current.record(op);
            }
        }
        Ok(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeKernel;
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn web(endpoints: &[&str]) -> VirtualService {
        VirtualService::cluster_ip(Protocol::Tcp, sa("10.96.0.20:80"))
            .real_servers(endpoints.iter().map(|e| sa(e)))
    }

    fn service(n: u16) -> VirtualService {
        VirtualService::cluster_ip(
            Protocol::Tcp,
            SocketAddr::new([10, 96, 1, n as u8].into(), 80),
        )
        .real_servers([SocketAddr::new([10, 244, 0, n as u8].into(), 8080)])
    }

    fn backend() -> (Ipvs, FakeKernel) {
        let fake = FakeKernel::default();
        let ipvs = Ipvs::new(Box::new(fake.clone()), Box::new(fake.clone()));
        (ipvs, fake)
    }

    #[test]
    fn desired_counts_the_services_on_each_address() {
        let udp = VirtualService::cluster_ip(Protocol::Udp, sa("10.96.0.10:53"));
        let tcp = VirtualService::cluster_ip(Protocol::Tcp, sa("10.96.0.10:53"));
        let ip: IpAddr = "10.96.0.10".parse().unwrap();
        let mut desired = Desired::new([udp.clone(), tcp.clone()]);
        assert!(desired.is_bound(&ip));
        // Replacing a service keeps the count right.
        desired.insert(tcp.clone().affinity(5));
        desired.remove(&udp.key);
        assert!(desired.is_bound(&ip));
        desired.remove(&tcp.key);
        assert!(!desired.is_bound(&ip));
        assert!(desired.is_empty());
        // A NodePort never binds its (node) address.
        let np = VirtualService::node_port(Protocol::Tcp, sa("192.0.2.1:30000"));
        assert_eq!(Desired::new([np]).bound_addresses().count(), 0);
    }

    #[test]
    fn sync_programs_everything_and_a_second_sync_changes_nothing() {
        let (mut ipvs, fake) = backend();
        let desired = Desired::new((1..=3).map(service));
        let ops = ipvs.sync(desired.clone()).unwrap();
        assert_eq!(ops.len(), 3 * 3, "address, service, destination each");
        assert_eq!(fake.state().services.len(), 3);
        assert_eq!(fake.state().addresses.len(), 3);
        assert_eq!(ipvs.sync(desired).unwrap(), vec![]);
        // What the back end believes is what the kernel holds.
        let mut kernel = fake.clone();
        let mut addrs = fake.clone();
        assert_eq!(
            read_kernel(&mut kernel, &mut addrs).unwrap(),
            *ipvs.snapshot().unwrap()
        );
    }

    #[test]
    fn an_update_touches_only_the_changed_service() {
        let (mut ipvs, fake) = backend();
        ipvs.sync(Desired::new(
            (1..=50).map(service).chain([web(&["10.244.9.1:80"])]),
        ))
        .unwrap();
        fake.take_calls();

        ipvs.update(&[], vec![web(&["10.244.9.1:80", "10.244.9.2:80"])])
            .unwrap();
        assert_eq!(
            fake.take_calls(),
            vec!["add_destination TCP 10.96.0.20:80 10.244.9.2:80"]
        );

        let gone = service(7).key;
        ipvs.update(&[gone], vec![]).unwrap();
        assert_eq!(
            fake.take_calls(),
            vec![
                "delete_service TCP 10.96.1.7:80",
                "delete_address 10.96.1.7"
            ]
        );
        assert!(!fake.state().services.contains_key(&gone));
        assert_eq!(fake.state().services.len(), 50);
    }

    #[test]
    fn after_a_failure_the_next_update_reads_the_kernel_again() {
        let (mut ipvs, fake) = backend();
        ipvs.sync(Desired::new([service(1), service(2)])).unwrap();
        fake.state().fail = Some("add_destination".to_owned());
        let err = ipvs
            .update(&[], vec![service(1).real_servers([sa("10.244.0.99:8080")])])
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("add destination 10.244.0.99:8080 to TCP 10.96.1.1:80: "),
            "{err}"
        );
        assert!(ipvs.snapshot().is_none());
        fake.take_calls();

        // Meanwhile someone removed a service behind our back; the full sync repairs it.
        fake.state().services.remove(&service(2).key);
        ipvs.update(&[], vec![]).unwrap();
        let calls = fake.take_calls();
        assert_eq!(calls[0], "addresses");
        assert_eq!(calls[1], "services");
        assert!(calls.contains(&"add_destination TCP 10.96.1.1:80 10.244.0.99:8080".to_owned()));
        assert!(calls.contains(&"add_service TCP 10.96.1.2:80".to_owned()));
        assert_eq!(fake.state().services[&service(1).key].1.len(), 2);
        assert!(ipvs.snapshot().is_some());
    }

    #[test]
    fn write_sysctls_writes_each_one_and_names_a_missing_path() {
        let dir = std::env::temp_dir().join(format!("bt-ipvs-sysctl-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("net/ipv4/vs")).unwrap();
        let result = write_sysctls(&dir);
        let conntrack = std::fs::read_to_string(dir.join("net/ipv4/vs/conntrack"));
        let forward = std::fs::read_to_string(dir.join("net/ipv4/ip_forward"));
        let missing = write_sysctls(&dir.join("absent"));
        std::fs::remove_dir_all(&dir).unwrap();
        result.unwrap();
        assert_eq!(conntrack.unwrap(), "1");
        assert_eq!(forward.unwrap(), "1");
        let err = missing.unwrap_err().to_string();
        assert!(err.contains("absent/net/ipv4/vs/conntrack"), "{err}");
    }
}
