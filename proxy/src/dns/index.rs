//! The record index: Services and EndpointSlices reduced to what DNS needs, and the pure
//! lookup that turns a question into an [`Answer`], following Kubernetes' DNS-based service
//! discovery specification 1.0.1 (`kubernetes/dns`, `docs/specification.md`).
//!
//! Names are not stored as records: the index keeps, per namespace, each Service's addresses
//! and named ports and its endpoints (one small struct each), plus a reverse map from IP to
//! owner for `PTR`. A lookup walks the question's labels under the cluster zone
//! (`<svc>.<ns>.svc.<zone>`, `<host>.<svc>.<ns>.svc.<zone>`, `_<port>._<proto>.<svc>...`,
//! `<a-b-c-d>.<ns>.pod.<zone>`) and builds the few records it answers with.
//!
//! Existence follows the DNS rules resolvers rely on (RFC 8020): a name with records or with
//! names below it (`svc.<zone>`, `<ns>.svc.<zone>`, `_tcp.<svc>...`) exists, so a question of
//! another type there gets NOERROR with no answer; any other name under the zone gets
//! NXDOMAIN. Both carry the zone's SOA, whose minimum (5 s) bounds negative caching. Names
//! outside the cluster zone and the reverse zones get REFUSED: nothing is forwarded.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{Error, Result};

/// TTL of every answer, as the default of CoreDNS's kubernetes plugin.
pub const TTL: u32 = 5;
/// The schema version published at `dns-version.<zone>` (specification section 2.2).
pub const SCHEMA_VERSION: &str = "1.0.1";
/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The annotation that predates `spec.publishNotReadyAddresses`; the specification still
/// names it.
const TOLERATE_UNREADY: &str = "service.alpha.kubernetes.io/tolerate-unready-endpoints";

/// The answer to one question: the response code, whether it is authoritative, and the
/// records of each section.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub code: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// Services and EndpointSlices indexed for DNS, for one cluster domain.
#[derive(Debug)]
pub struct Index {
    /// The cluster zone, lowercase and fully qualified (`cluster.local.`).
    zone: Name,
    namespaces: HashMap<Box<str>, Namespace>,
    /// ClusterIPs and headless endpoint IPs to the names that own them.
    reverse: HashMap<IpAddr, Vec<Owner>>,
    /// The SOA serial: bumped on every change.
    serial: u32,
    /// False while the first lists are loading: questions for our zones get SERVFAIL rather
    /// than a negative answer resolvers would cache.
    synced: bool,
}

#[derive(Debug, Default)]
struct Namespace {
    /// By Service name; an entry exists while the Service or any of its slices does.
    services: HashMap<Box<str>, Entry>,
    /// Slice name to the Service it belongs to.
    slice_owner: HashMap<Box<str>, Box<str>>,
}

#[derive(Debug, Default)]
struct Entry {
    service: Option<ServiceRecord>,
    /// (slice name, its endpoints)
    slices: Vec<(Box<str>, Box<[Endpoint]>)>,
}

#[derive(Debug, PartialEq)]
struct ServiceRecord {
    kind: Kind,
    /// Named ports only: unnamed ports have no SRV record.
    ports: Box<[Port]>,
    publish_not_ready: bool,
}

#[derive(Debug, PartialEq)]
enum Kind {
    ClusterIp(Box<[IpAddr]>),
    Headless,
    External(Name),
}

#[derive(Debug, PartialEq)]
struct Port {
    name: Box<str>,
    /// `tcp`, `udp` or `sctp`.
    proto: Box<str>,
    number: u16,
}

#[derive(Debug, PartialEq)]
struct Endpoint {
    /// The first address: the API says all of an endpoint's addresses are fungible.
    addr: IpAddr,
    hostname: Option<Box<str>>,
    ready: bool,
}

/// The name an IP points back to: `<svc>.<ns>.svc` or `<host>.<svc>.<ns>.svc`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Owner {
    ns: Box<str>,
    svc: Box<str>,
    host: Option<Box<str>>,
}

/// What a name under the cluster zone is.
enum Node<'a> {
    /// The zone apex.
    Apex,
    /// `dns-version.<zone>`.
    Version,
    /// A name with names below it but no records of its own.
    Empty,
    Service(&'a Entry),
    /// An endpoint of a headless Service, by its label.
    Endpoint(&'a Entry, &'a str),
    /// `_<port>._<proto>.<svc>.<ns>.svc`: namespace, Service, entry, port name, protocol.
    Srv(&'a str, &'a str, &'a Entry, &'a str, &'a str),
    Pod(IpAddr),
}

impl Endpoint {
    /// The endpoint's DNS label: its hostname, else its address with dashes (as CoreDNS).
    fn label(&self) -> Box<str> {
        match &self.hostname {
            Some(h) => h.clone(),
            None => dashed(self.addr).into(),
        }
    }
}

impl Entry {
    fn published(&self) -> impl Iterator<Item = &Endpoint> {
        let all = self.service.as_ref().is_some_and(|s| s.publish_not_ready);
        self.slices
            .iter()
            .flat_map(|(_, eps)| eps.iter())
            .filter(move |e| all || e.ready)
    }

    fn exists(&self) -> bool {
        match self.service.as_ref().map(|s| &s.kind) {
            None => false,
            Some(Kind::ClusterIp(ips)) => !ips.is_empty(),
            Some(Kind::Headless) => self.published().next().is_some(),
            Some(Kind::External(_)) => true,
        }
    }

    fn headless(&self) -> bool {
        matches!(self.service.as_ref().map(|s| &s.kind), Some(Kind::Headless))
    }

    /// The IPs that point back at this entry, and the host label of each.
    fn owners(&self) -> Vec<(IpAddr, Option<Box<str>>)> {
        let mut out: Vec<_> = match self.service.as_ref().map(|s| &s.kind) {
            Some(Kind::ClusterIp(ips)) => ips.iter().map(|ip| (*ip, None)).collect(),
            Some(Kind::Headless) => self
                .published()
                .map(|e| (e.addr, Some(e.label())))
                .collect(),
            _ => Vec::new(),
        };
        out.sort();
        out.dedup();
        out
    }

    fn is_empty(&self) -> bool {
        self.service.is_none() && self.slices.is_empty()
    }
}

impl Index {
    /// An empty index for `domain` (e.g. `cluster.local`), ready to answer.
    pub fn new(domain: &str) -> Result<Self> {
        let bad = |reason: String| Error::Domain {
            domain: domain.to_string(),
            reason,
        };
        let mut zone = Name::from_ascii(domain)
            .map_err(|e| bad(e.to_string()))?
            .to_lowercase();
        zone.set_fqdn(true);
        if zone.is_root() {
            return Err(bad("the root zone cannot be the cluster domain".into()));
        }
        if zone.zone_of(&arpa_v4()) || arpa_v4().zone_of(&zone) || arpa_v6().zone_of(&zone) {
            return Err(bad(
                "the cluster domain cannot overlap the reverse zones".into()
            ));
        }
        Ok(Self {
            zone,
            namespaces: HashMap::new(),
            reverse: HashMap::new(),
            serial: 1,
            synced: true,
        })
    }

    /// The cluster zone, fully qualified.
    pub fn zone(&self) -> &Name {
        &self.zone
    }

    /// The SOA serial, which changes with every update.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Marks the index as loading (`false`) or complete (`true`).
    pub fn set_synced(&mut self, synced: bool) {
        self.synced = synced;
    }

    /// How many Services are indexed.
    pub fn services(&self) -> usize {
        self.namespaces
            .values()
            .flat_map(|n| n.services.values())
            .filter(|e| e.service.is_some())
            .count()
    }

    /// Adds or replaces a Service.
    pub fn apply_service(&mut self, svc: &Service) {
        let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
            return;
        };
        let record = service_record(svc);
        if record.is_none() {
            tracing::debug!(service = %format_args!("{ns}/{name}"), "service has no dns records");
        }
        self.update(ns, name, |e| {
            if e.service == record {
                return false;
            }
            e.service = record;
            true
        });
    }

    pub fn delete_service(&mut self, ns: &str, name: &str) {
        self.update(ns, name, |e| e.service.take().is_some());
    }

    /// Adds or replaces an EndpointSlice. A slice without the service-name label is removed.
    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let (Some(ns), Some(name)) = (&slice.metadata.namespace, &slice.metadata.name) else {
            return;
        };
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            self.delete_slice(ns, name);
            return;
        };
        let owner = self
            .namespaces
            .get(ns.as_str())
            .and_then(|n| n.slice_owner.get(name.as_str()))
            .cloned();
        if let Some(old) = owner.filter(|o| **o != **svc) {
            self.update(ns, &old, |e| remove_slice(e, name));
        }
        let eps = endpoints(slice);
        self.update(ns, svc, |e| {
            match e.slices.iter_mut().find(|(n, _)| **n == **name) {
                Some((_, old)) if *old == eps => return false,
                Some((_, old)) => *old = eps,
                None => e.slices.push((name.as_str().into(), eps)),
            }
            true
        });
        if let Some(n) = self.namespaces.get_mut(ns.as_str()) {
            n.slice_owner
                .insert(name.as_str().into(), svc.as_str().into());
        }
    }

    pub fn delete_slice(&mut self, ns: &str, name: &str) {
        let Some(svc) = self
            .namespaces
            .get_mut(ns)
            .and_then(|n| n.slice_owner.remove(name))
        else {
            return;
        };
        self.update(ns, &svc, |e| remove_slice(e, name));
    }

    /// Removes the Services for which `keep(namespace, name)` is false (after a re-list).
    pub fn retain_services(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        let gone = self.keys(|n| {
            n.services
                .iter()
                .filter(|(_, e)| e.service.is_some())
                .map(|(k, _)| k.as_ref())
                .collect()
        });
        for (ns, name) in gone.into_iter().filter(|(ns, n)| !keep(ns, n)) {
            self.delete_service(&ns, &name);
        }
    }

    /// Removes the EndpointSlices for which `keep(namespace, name)` is false.
    pub fn retain_slices(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        let gone = self.keys(|n| n.slice_owner.keys().map(|k| k.as_ref()).collect());
        for (ns, name) in gone.into_iter().filter(|(ns, n)| !keep(ns, n)) {
            self.delete_slice(&ns, &name);
        }
    }

    fn keys(&self, f: impl Fn(&Namespace) -> Vec<&str>) -> Vec<(String, String)> {
        self.namespaces
            .iter()
            .flat_map(|(ns, n)| f(n).into_iter().map(move |k| (ns.to_string(), k.into())))
            .collect()
    }

    /// Runs `change` on the entry for `ns/svc` (created if missing); when it reports a change,
    /// moves the entry's reverse records, bumps the serial and drops what became empty.
    fn update(&mut self, ns: &str, svc: &str, change: impl FnOnce(&mut Entry) -> bool) {
        let n = self.namespaces.entry(ns.into()).or_default();
        let e = n.services.entry(svc.into()).or_default();
        let before = e.owners();
        let changed = change(e);
        let after = e.owners();
        if e.is_empty() {
            n.services.remove(svc);
        }
        if n.services.is_empty() && n.slice_owner.is_empty() {
            self.namespaces.remove(ns);
        }
        if !changed {
            return;
        }
        self.serial = self.serial.wrapping_add(1);
        if before == after {
            return;
        }
        let owner = |host: &Option<Box<str>>| Owner {
            ns: ns.into(),
            svc: svc.into(),
            host: host.clone(),
        };
        for (ip, host) in &before {
            if let Some(v) = self.reverse.get_mut(ip) {
                let o = owner(host);
                v.retain(|x| *x != o);
                if v.is_empty() {
                    self.reverse.remove(ip);
                }
            }
        }
        for (ip, host) in &after {
            self.reverse.entry(*ip).or_default().push(owner(host));
        }
    }

    /// Answers a question of class IN. `qname` keeps its case in the answers' owner names.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Answer {
        let mut qname = qname.clone();
        qname.set_fqdn(true);
        let qname = &qname;
        let lower = qname.to_lowercase();
        let apex = [self.zone.clone(), arpa_v4(), arpa_v6()]
            .into_iter()
            .find(|z| z.zone_of(&lower));
        let Some(apex) = apex else {
            return Answer {
                code: ResponseCode::Refused,
                ..Answer::default()
            };
        };
        if !self.synced {
            return Answer {
                code: ResponseCode::ServFail,
                ..Answer::default()
            };
        }
        let records = if apex == self.zone {
            self.lookup_cluster(&lower, qname, qtype)
        } else {
            self.lookup_reverse(&lower, qname, qtype, &apex)
        };
        match records {
            Some((answers, additionals)) if !answers.is_empty() => Answer {
                code: ResponseCode::NoError,
                authoritative: true,
                answers,
                authorities: Vec::new(),
                additionals,
            },
            found => Answer {
                code: if found.is_some() {
                    ResponseCode::NoError
                } else {
                    ResponseCode::NXDomain
                },
                authoritative: true,
                answers: Vec::new(),
                authorities: vec![self.soa(apex)],
                additionals: Vec::new(),
            },
        }
    }

    fn soa(&self, owner: Name) -> Record {
        let name = |l: &[&str]| {
            Name::from_labels(l.iter().map(|s| s.as_bytes()))
                .and_then(|n| n.append_domain(&self.zone))
                .unwrap_or_else(|_| self.zone.clone())
        };
        let soa = SOA::new(
            name(&["ns", "dns"]),
            name(&["hostmaster"]),
            self.serial,
            7200,
            1800,
            86400,
            TTL,
        );
        Record::from_rdata(owner, TTL, RData::SOA(soa))
    }

    /// `None` for NXDOMAIN; else the answers (empty for NODATA) and additional records.
    fn lookup_cluster(&self, lower: &Name, qname: &Name, qtype: RecordType) -> Option<Records> {
        let rel = lower.num_labels() - self.zone.num_labels();
        let labels = lower
            .iter()
            .take(rel as usize)
            .map(std::str::from_utf8)
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        let node = self.node(&labels)?;
        Some(self.records(node, qname, qtype))
    }

    fn node<'a>(&'a self, labels: &[&'a str]) -> Option<Node<'a>> {
        let entry = |ns: &str, svc: &str| {
            self.namespaces
                .get(ns)
                .and_then(|n| n.services.get(svc))
                .filter(|e| e.exists())
        };
        let port_of = |e: &Entry, proto: &str, port: Option<&str>| {
            e.service.as_ref().is_some_and(|s| {
                !matches!(s.kind, Kind::External(_))
                    && s.ports
                        .iter()
                        .any(|p| *p.proto == *proto && port.is_none_or(|n| *p.name == *n))
            })
        };
        Some(match *labels {
            [] => Node::Apex,
            ["dns-version"] => Node::Version,
            ["svc"] | ["pod"] | [_, "pod"] => Node::Empty,
            [ns, "svc"] => {
                let n = self.namespaces.get(ns)?;
                n.services
                    .values()
                    .any(Entry::exists)
                    .then_some(Node::Empty)?
            }
            [svc, ns, "svc"] => Node::Service(entry(ns, svc)?),
            [proto, svc, ns, "svc"] if proto.starts_with('_') => {
                let e = entry(ns, svc)?;
                port_of(e, &proto[1..], None).then_some(Node::Empty)?
            }
            [host, svc, ns, "svc"] => {
                let e = entry(ns, svc).filter(|e| e.headless())?;
                e.published()
                    .any(|ep| *ep.label() == *host)
                    .then_some(Node::Endpoint(e, host))?
            }
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                let (port, proto) = (&port[1..], &proto[1..]);
                let e = entry(ns, svc)?;
                port_of(e, proto, Some(port)).then_some(Node::Srv(ns, svc, e, port, proto))?
            }
            [ip, _, "pod"] => Node::Pod(undashed(ip)?),
            _ => return None,
        })
    }

    fn records(&self, node: Node<'_>, qname: &Name, qtype: RecordType) -> Records {
        let rr = |data: RData| Record::from_rdata(qname.clone(), TTL, data);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        match node {
            Node::Apex if qtype == RecordType::SOA => answers.push(self.soa(qname.clone())),
            Node::Version if qtype == RecordType::TXT => {
                answers.push(rr(RData::TXT(TXT::new(vec![SCHEMA_VERSION.into()]))));
            }
            Node::Apex | Node::Version | Node::Empty => {}
            Node::Service(e) => match e.service.as_ref().map(|s| &s.kind) {
                Some(Kind::External(target)) => {
                    answers.push(rr(RData::CNAME(CNAME(target.clone()))))
                }
                Some(Kind::ClusterIp(ips)) => {
                    answers.extend(addresses(qname, qtype, ips.iter().copied()))
                }
                Some(Kind::Headless) => {
                    answers.extend(addresses(qname, qtype, e.published().map(|ep| ep.addr)))
                }
                None => {}
            },
            Node::Endpoint(e, host) => {
                let eps = e.published().filter(|ep| *ep.label() == *host);
                answers.extend(addresses(qname, qtype, eps.map(|ep| ep.addr)));
            }
            Node::Srv(ns, svc, e, port, proto) if qtype == RecordType::SRV => {
                let Some(s) = &e.service else {
                    return (answers, additionals);
                };
                let numbers: Vec<u16> = s
                    .ports
                    .iter()
                    .filter(|p| *p.name == *port && *p.proto == *proto)
                    .map(|p| p.number)
                    .collect();
                // Each target and the addresses behind it.
                let mut targets: Vec<(Name, Vec<IpAddr>)> = Vec::new();
                match &s.kind {
                    Kind::ClusterIp(ips) => {
                        if let Some(n) = self.name(&[svc, ns, "svc"]) {
                            targets.push((n, ips.to_vec()));
                        }
                    }
                    Kind::Headless => {
                        let mut by_label: Vec<(Box<str>, IpAddr)> =
                            e.published().map(|ep| (ep.label(), ep.addr)).collect();
                        by_label.sort();
                        by_label.dedup();
                        for (label, ip) in by_label {
                            match targets.last_mut() {
                                Some((n, ips)) if n.iter().next() == Some(label.as_bytes()) => {
                                    ips.push(ip)
                                }
                                _ => {
                                    if let Some(n) = self.name(&[&label, svc, ns, "svc"]) {
                                        targets.push((n, vec![ip]));
                                    }
                                }
                            }
                        }
                    }
                    Kind::External(_) => {}
                }
                let count = (targets.len() * numbers.len()).max(1);
                let weight = u16::try_from(100 / count).unwrap_or(0).max(1);
                for (target, ips) in &targets {
                    for number in &numbers {
                        answers.push(rr(RData::SRV(SRV::new(0, weight, *number, target.clone()))));
                    }
                    for t in [RecordType::A, RecordType::AAAA] {
                        additionals.extend(addresses(target, t, ips.iter().copied()));
                    }
                }
            }
            Node::Srv(..) => {}
            Node::Pod(ip) => answers.extend(addresses(qname, qtype, [ip])),
        }
        (answers, additionals)
    }

    fn lookup_reverse(
        &self,
        lower: &Name,
        qname: &Name,
        qtype: RecordType,
        apex: &Name,
    ) -> Option<Records> {
        let net = lower.parse_arpa_name().ok()?;
        let mut answers = Vec::new();
        if net.prefix_len() < net.max_prefix_len() {
            // The apex, or a name with addresses below it: NODATA either way (RFC 8020).
            if qtype == RecordType::SOA && lower == apex {
                answers.push(self.soa(qname.clone()));
            }
            return Some((answers, Vec::new()));
        }
        let owners = self.reverse.get(&net.addr())?;
        if qtype == RecordType::PTR {
            let mut names: Vec<Name> = owners
                .iter()
                .filter_map(|o| match &o.host {
                    Some(h) => self.name(&[h, &o.svc, &o.ns, "svc"]),
                    None => self.name(&[&o.svc, &o.ns, "svc"]),
                })
                .collect();
            names.sort();
            names.dedup();
            answers.extend(
                names
                    .into_iter()
                    .map(|n| Record::from_rdata(qname.clone(), TTL, RData::PTR(PTR(n)))),
            );
        }
        Some((answers, Vec::new()))
    }

    /// `labels` followed by the cluster zone.
    fn name(&self, labels: &[&str]) -> Option<Name> {
        Name::from_labels(labels.iter().map(|l| l.as_bytes()))
            .and_then(|n| n.append_domain(&self.zone))
            .inspect_err(|err| tracing::debug!(%err, ?labels, "name too long for dns"))
            .ok()
    }
}

/// (answers, additionals)
type Records = (Vec<Record>, Vec<Record>);

/// The A (or AAAA) records for the addresses of that family, sorted and deduplicated.
fn addresses(
    owner: &Name,
    qtype: RecordType,
    ips: impl IntoIterator<Item = IpAddr>,
) -> Vec<Record> {
    let mut ips: Vec<IpAddr> = ips
        .into_iter()
        .filter(|ip| match qtype {
            RecordType::A => ip.is_ipv4(),
            RecordType::AAAA => ip.is_ipv6(),
            RecordType::ANY => true,
            _ => false,
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips.into_iter()
        .map(|ip| {
            let data = match ip {
                IpAddr::V4(v4) => RData::A(A(v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
            };
            Record::from_rdata(owner.clone(), TTL, data)
        })
        .collect()
}

fn arpa_v4() -> Name {
    Name::from_labels([b"in-addr".as_slice(), b"arpa"]).expect("static name")
}

fn arpa_v6() -> Name {
    Name::from_labels([b"ip6".as_slice(), b"arpa"]).expect("static name")
}

/// `10.1.2.3` as `10-1-2-3`, `fd00::1` as `fd00--1`.
fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The inverse of [`dashed`], for pod names.
fn undashed(label: &str) -> Option<IpAddr> {
    let parts: Vec<&str> = label.split('-').collect();
    if parts.len() == 4 {
        let mut octets = [0u8; 4];
        for (o, p) in octets.iter_mut().zip(&parts) {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *o = p.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

fn remove_slice(e: &mut Entry, name: &str) -> bool {
    let before = e.slices.len();
    e.slices.retain(|(n, _)| **n != *name);
    e.slices.len() != before
}

/// What DNS needs of a Service; `None` when it has no records.
fn service_record(svc: &Service) -> Option<ServiceRecord> {
    let spec = svc.spec.as_ref()?;
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec.external_name.as_deref()?;
        let mut name = Name::from_ascii(target)
            .inspect_err(|err| tracing::debug!(%err, target, "bad externalName"))
            .ok()?
            .to_lowercase();
        name.set_fqdn(true);
        Kind::External(name)
    } else if spec.cluster_ip.as_deref() == Some("None") {
        Kind::Headless
    } else {
        let ips = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.iter().filter_map(|s| s.parse().ok()).collect(),
            _ => spec
                .cluster_ip
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
        };
        Kind::ClusterIp(ips)
    };
    let mut seen = HashSet::new();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let name = p.name.as_deref().filter(|n| !n.is_empty())?;
            let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
            let number = u16::try_from(p.port).ok()?;
            seen.insert((name, proto.clone(), number)).then(|| Port {
                name: name.to_ascii_lowercase().into(),
                proto: proto.into(),
                number,
            })
        })
        .collect();
    let tolerate = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TOLERATE_UNREADY))
        .is_some_and(|v| v == "true");
    Some(ServiceRecord {
        kind,
        ports,
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false) || tolerate,
    })
}

/// The slice's endpoints with an IP address (FQDN slices have none).
fn endpoints(slice: &EndpointSlice) -> Box<[Endpoint]> {
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return Box::default();
    }
    slice
        .endpoints
        .iter()
        .filter_map(|e| {
            let addr = e.addresses.first()?.parse().ok()?;
            let hostname = e
                .hostname
                .as_deref()
                .filter(|h| !h.is_empty())
                .map(|h| h.to_ascii_lowercase().into());
            // An unknown readiness counts as ready, as the API documents.
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            Some(Endpoint {
                addr,
                hostname,
                ready,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint as SliceEndpoint, EndpointConditions};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        }
    }

    struct Svc(Service);

    /// A ClusterIP Service in `ns` with the given addresses (none: not yet allocated).
    fn service(ns: &str, name: &str, ips: &[&str]) -> Svc {
        Svc(Service {
            metadata: meta(ns, name),
            spec: Some(ServiceSpec {
                cluster_ip: ips.first().map(|s| s.to_string()),
                cluster_ips: Some(ips.iter().map(|s| s.to_string()).collect()),
                ..ServiceSpec::default()
            }),
            status: None,
        })
    }

    fn headless(ns: &str, name: &str) -> Svc {
        service(ns, name, &["None"])
    }

    fn external(ns: &str, name: &str, target: &str) -> Svc {
        let mut s = service(ns, name, &[]);
        let spec = s.0.spec.as_mut().unwrap();
        spec.type_ = Some("ExternalName".into());
        spec.external_name = Some(target.into());
        s
    }

    impl Svc {
        fn port(mut self, name: &str, port: i32, proto: &str) -> Self {
            let spec = self.0.spec.as_mut().unwrap();
            spec.ports.get_or_insert_with(Vec::new).push(ServicePort {
                name: Some(name.into()).filter(|n: &String| !n.is_empty()),
                port,
                protocol: Some(proto.into()),
                ..ServicePort::default()
            });
            self
        }

        fn publish_not_ready(mut self) -> Self {
            self.0.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
            self
        }
    }

    struct Slice(EndpointSlice);

    fn slice(ns: &str, name: &str, service: &str) -> Slice {
        let mut m = meta(ns, name);
        m.labels = Some(BTreeMap::from([(
            SERVICE_NAME_LABEL.into(),
            service.into(),
        )]));
        Slice(EndpointSlice {
            metadata: m,
            address_type: "IPv4".into(),
            endpoints: Vec::new(),
            ports: None,
        })
    }

    impl Slice {
        fn endpoint(self, ip: &str) -> Self {
            self.add(ip, None, None)
        }
        fn host(self, ip: &str, hostname: &str) -> Self {
            self.add(ip, Some(hostname), None)
        }
        fn not_ready(self, ip: &str) -> Self {
            self.add(ip, None, Some(false))
        }
        fn ipv6(mut self) -> Self {
            self.0.address_type = "IPv6".into();
            self
        }
        fn add(mut self, ip: &str, hostname: Option<&str>, ready: Option<bool>) -> Self {
            self.0.endpoints.push(SliceEndpoint {
                addresses: vec![ip.into()],
                hostname: hostname.map(Into::into),
                conditions: Some(EndpointConditions {
                    ready,
                    ..EndpointConditions::default()
                }),
                ..SliceEndpoint::default()
            });
            self
        }
    }

    /// The cluster the tables below ask about.
    fn fixture() -> Index {
        let mut idx = Index::new("cluster.local").unwrap();
        for s in [
            service("default", "web", &["10.96.0.10"])
                .port("http", 80, "TCP")
                .port("dns", 53, "UDP")
                .port("", 8080, "TCP"),
            service("other", "dual", &["10.96.0.11", "fd00::11"]).port("http", 80, "TCP"),
            headless("default", "db").port("pg", 5432, "TCP"),
            headless("default", "empty").port("pg", 5432, "TCP"),
            headless("default", "tolerant").publish_not_ready(),
            external("default", "ext", "WWW.Example.com"),
            service("default", "pending", &[]),
            service("quiet", "gone", &["10.96.0.99"]),
        ] {
            idx.apply_service(&s.0);
        }
        for s in [
            slice("default", "db-a", "db")
                .host("10.1.0.5", "db-0")
                .host("10.1.0.6", "db-1")
                .not_ready("10.1.0.7"),
            slice("default", "db-b", "db").endpoint("10.1.1.8"),
            slice("default", "db-c", "db")
                .ipv6()
                .host("fd00:1::5", "db-0"),
            slice("default", "empty-a", "empty").not_ready("10.1.0.9"),
            slice("default", "tolerant-a", "tolerant").not_ready("10.1.0.10"),
        ] {
            idx.apply_slice(&s.0);
        }
        idx.delete_service("quiet", "gone");
        idx
    }

    /// An answer as text: the code, then each record with its section (`an`, `ns`, `ad`).
    fn show(a: &Answer) -> Vec<String> {
        let mut out = vec![format!(
            "{}{}",
            a.code,
            if a.authoritative { " aa" } else { "" }
        )];
        for (sec, rs) in [
            ("an", &a.answers),
            ("ns", &a.authorities),
            ("ad", &a.additionals),
        ] {
            out.extend(rs.iter().map(|r| format!("{sec} {r}")));
        }
        out
    }

    fn ask(idx: &Index, name: &str, qtype: RecordType) -> Vec<String> {
        show(&idx.lookup(&Name::from_ascii(name).unwrap(), qtype))
    }

    const NEG: &str = "ns cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local.";

    /// Checks the table; SOA lines are given without their serial and timers.
    fn check(idx: &Index, table: &[(&str, RecordType, &[&str])]) {
        for (name, qtype, want) in table {
            let got: Vec<String> = ask(idx, name, *qtype)
                .into_iter()
                .map(|l| match l.find(" hostmaster.") {
                    Some(i) if l.contains(" IN SOA ") => {
                        let end = l[i + 1..].find(' ').map_or(l.len(), |j| i + 1 + j);
                        l[..end].to_string()
                    }
                    _ => l,
                })
                .collect();
            assert_eq!(got, *want, "{name} {qtype}");
        }
    }

    #[test]
    fn services_answer_as_the_specification_says() {
        use RecordType::*;
        let idx = fixture();
        let table: &[(&str, RecordType, &[&str])] = &[
            // 2.3.1 A record of a ClusterIP Service.
            (
                "web.default.svc.cluster.local.",
                A,
                &["No Error aa", "an web.default.svc.cluster.local. 5 IN A 10.96.0.10"],
            ),
            // Without the trailing dot, as the name is still absolute here.
            (
                "web.default.svc.cluster.local",
                A,
                &["No Error aa", "an web.default.svc.cluster.local. 5 IN A 10.96.0.10"],
            ),
            // The name exists, the type does not: NODATA with the SOA.
            ("web.default.svc.cluster.local.", AAAA, &["No Error aa", NEG]),
            ("web.default.svc.cluster.local.", MX, &["No Error aa", NEG]),
            // Dual-stack: each family answers its own type.
            (
                "dual.other.svc.cluster.local.",
                A,
                &["No Error aa", "an dual.other.svc.cluster.local. 5 IN A 10.96.0.11"],
            ),
            (
                "dual.other.svc.cluster.local.",
                AAAA,
                &["No Error aa", "an dual.other.svc.cluster.local. 5 IN AAAA fd00::11"],
            ),
            // 2.3.2 SRV for named ports, the Service's A record in additionals; none for
            // the unnamed port, and the protocol must match.
            (
                "_http._tcp.web.default.svc.cluster.local.",
                SRV,
                &[
                    "No Error aa",
                    "an _http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local.",
                    "ad web.default.svc.cluster.local. 5 IN A 10.96.0.10",
                ],
            ),
            (
                "_dns._udp.web.default.svc.cluster.local.",
                SRV,
                &[
                    "No Error aa",
                    "an _dns._udp.web.default.svc.cluster.local. 5 IN SRV 0 100 53 web.default.svc.cluster.local.",
                    "ad web.default.svc.cluster.local. 5 IN A 10.96.0.10",
                ],
            ),
            ("_dns._tcp.web.default.svc.cluster.local.", SRV, &["Non-Existent Domain aa", NEG]),
            ("_http._tcp.web.default.svc.cluster.local.", A, &["No Error aa", NEG]),
            // `_tcp.<svc>` has names below it: it exists, with no records.
            ("_tcp.web.default.svc.cluster.local.", SRV, &["No Error aa", NEG]),
            ("_sctp.web.default.svc.cluster.local.", SRV, &["Non-Existent Domain aa", NEG]),
            // 2.4.1 Headless: the ready endpoints, sorted; not-ready ones left out.
            (
                "db.default.svc.cluster.local.",
                A,
                &[
                    "No Error aa",
                    "an db.default.svc.cluster.local. 5 IN A 10.1.0.5",
                    "an db.default.svc.cluster.local. 5 IN A 10.1.0.6",
                    "an db.default.svc.cluster.local. 5 IN A 10.1.1.8",
                ],
            ),
            (
                "db.default.svc.cluster.local.",
                AAAA,
                &["No Error aa", "an db.default.svc.cluster.local. 5 IN AAAA fd00:1::5"],
            ),
            // Endpoints by hostname, else by their dashed address; one record per IP.
            (
                "db-1.db.default.svc.cluster.local.",
                A,
                &["No Error aa", "an db-1.db.default.svc.cluster.local. 5 IN A 10.1.0.6"],
            ),
            (
                "db-0.db.default.svc.cluster.local.",
                AAAA,
                &["No Error aa", "an db-0.db.default.svc.cluster.local. 5 IN AAAA fd00:1::5"],
            ),
            (
                "10-1-1-8.db.default.svc.cluster.local.",
                A,
                &["No Error aa", "an 10-1-1-8.db.default.svc.cluster.local. 5 IN A 10.1.1.8"],
            ),
            ("10-1-0-7.db.default.svc.cluster.local.", A, &["Non-Existent Domain aa", NEG]),
            ("db-9.db.default.svc.cluster.local.", A, &["Non-Existent Domain aa", NEG]),
            // ClusterIP Services have no endpoint names.
            ("10-1-0-5.web.default.svc.cluster.local.", A, &["Non-Existent Domain aa", NEG]),
            // 2.4.2 SRV of a headless Service: one per ready endpoint name, and their
            // addresses in additionals.
            (
                "_pg._tcp.db.default.svc.cluster.local.",
                SRV,
                &[
                    "No Error aa",
                    "an _pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 33 5432 10-1-1-8.db.default.svc.cluster.local.",
                    "an _pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 33 5432 db-0.db.default.svc.cluster.local.",
                    "an _pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 33 5432 db-1.db.default.svc.cluster.local.",
                    "ad 10-1-1-8.db.default.svc.cluster.local. 5 IN A 10.1.1.8",
                    "ad db-0.db.default.svc.cluster.local. 5 IN A 10.1.0.5",
                    "ad db-0.db.default.svc.cluster.local. 5 IN AAAA fd00:1::5",
                    "ad db-1.db.default.svc.cluster.local. 5 IN A 10.1.0.6",
                ],
            ),
            // A headless Service with no ready endpoint has no name at all.
            ("empty.default.svc.cluster.local.", A, &["Non-Existent Domain aa", NEG]),
            ("_pg._tcp.empty.default.svc.cluster.local.", SRV, &["Non-Existent Domain aa", NEG]),
            // publishNotReadyAddresses publishes every endpoint.
            (
                "tolerant.default.svc.cluster.local.",
                A,
                &["No Error aa", "an tolerant.default.svc.cluster.local. 5 IN A 10.1.0.10"],
            ),
            // 2.5 ExternalName: the CNAME alone, for any type; nothing below it.
            (
                "ext.default.svc.cluster.local.",
                A,
                &["No Error aa", "an ext.default.svc.cluster.local. 5 IN CNAME www.example.com."],
            ),
            (
                "ext.default.svc.cluster.local.",
                CNAME,
                &["No Error aa", "an ext.default.svc.cluster.local. 5 IN CNAME www.example.com."],
            ),
            ("_tcp.ext.default.svc.cluster.local.", SRV, &["Non-Existent Domain aa", NEG]),
            // A Service without an address yet, and a deleted one.
            ("pending.default.svc.cluster.local.", A, &["Non-Existent Domain aa", NEG]),
            ("gone.quiet.svc.cluster.local.", A, &["Non-Existent Domain aa", NEG]),
            ("nope.default.svc.cluster.local.", A, &["Non-Existent Domain aa", NEG]),
            ("a.b.c.web.default.svc.cluster.local.", A, &["Non-Existent Domain aa", NEG]),
            // Names with names below them exist; a namespace only while it has a Service.
            ("default.svc.cluster.local.", A, &["No Error aa", NEG]),
            ("svc.cluster.local.", A, &["No Error aa", NEG]),
            ("quiet.svc.cluster.local.", A, &["Non-Existent Domain aa", NEG]),
            ("cluster.local.", A, &["No Error aa", NEG]),
            ("other.cluster.local.", A, &["Non-Existent Domain aa", NEG]),
            // 2.2 The schema version.
            (
                "dns-version.cluster.local.",
                TXT,
                &["No Error aa", "an dns-version.cluster.local. 5 IN TXT 1.0.1"],
            ),
            // 2.6 Pod records, from the name alone.
            (
                "10-1-2-3.default.pod.cluster.local.",
                A,
                &["No Error aa", "an 10-1-2-3.default.pod.cluster.local. 5 IN A 10.1.2.3"],
            ),
            (
                "fd00--7.default.pod.cluster.local.",
                AAAA,
                &["No Error aa", "an fd00--7.default.pod.cluster.local. 5 IN AAAA fd00::7"],
            ),
            ("10-1-2-3.default.pod.cluster.local.", AAAA, &["No Error aa", NEG]),
            ("10-1-2-300.default.pod.cluster.local.", A, &["Non-Existent Domain aa", NEG]),
            ("web.default.pod.cluster.local.", A, &["Non-Existent Domain aa", NEG]),
            // Outside our zones: refused, nothing forwarded.
            ("example.com.", A, &["Query Refused"]),
            ("cluster.local.example.com.", A, &["Query Refused"]),
            ("local.", SOA, &["Query Refused"]),
        ];
        check(&idx, table);
    }

    const NEG_V4: &str =
        "ns in-addr.arpa. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local.";
    const NEG_V6: &str = "ns ip6.arpa. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local.";

    #[test]
    fn reverse_names_point_at_services_and_headless_endpoints() {
        use RecordType::*;
        let idx = fixture();
        let v6 = |ip: &str| Name::from(ip.parse::<IpAddr>().unwrap()).to_ascii();
        let dual6 = v6("fd00::11");
        let db6 = v6("fd00:1::5");
        let table: &[(&str, RecordType, &[&str])] = &[
            // 2.3.3 ClusterIPs.
            (
                "10.0.96.10.in-addr.arpa.",
                PTR,
                &[
                    "No Error aa",
                    "an 10.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local.",
                ],
            ),
            (
                &dual6,
                PTR,
                &[
                    "No Error aa",
                    &format!("an {dual6} 5 IN PTR dual.other.svc.cluster.local."),
                ],
            ),
            // 2.4.3 Ready endpoints of headless Services, by hostname or dashed address.
            (
                "6.0.1.10.in-addr.arpa.",
                PTR,
                &[
                    "No Error aa",
                    "an 6.0.1.10.in-addr.arpa. 5 IN PTR db-1.db.default.svc.cluster.local.",
                ],
            ),
            (
                "8.1.1.10.in-addr.arpa.",
                PTR,
                &[
                    "No Error aa",
                    "an 8.1.1.10.in-addr.arpa. 5 IN PTR 10-1-1-8.db.default.svc.cluster.local.",
                ],
            ),
            (
                &db6,
                PTR,
                &[
                    "No Error aa",
                    &format!("an {db6} 5 IN PTR db-0.db.default.svc.cluster.local."),
                ],
            ),
            ("10.0.96.10.in-addr.arpa.", A, &["No Error aa", NEG_V4]),
            // Not ready, deleted, and unknown addresses; malformed names.
            (
                "7.0.1.10.in-addr.arpa.",
                PTR,
                &["Non-Existent Domain aa", NEG_V4],
            ),
            (
                "99.0.96.10.in-addr.arpa.",
                PTR,
                &["Non-Existent Domain aa", NEG_V4],
            ),
            (
                "8.8.8.8.in-addr.arpa.",
                PTR,
                &["Non-Existent Domain aa", NEG_V4],
            ),
            (
                "x.0.96.10.in-addr.arpa.",
                PTR,
                &["Non-Existent Domain aa", NEG_V4],
            ),
            (
                "1.2.3.4.5.in-addr.arpa.",
                PTR,
                &["Non-Existent Domain aa", NEG_V4],
            ),
            ("1.0.0.0.ip6.arpa.", PTR, &["No Error aa", NEG_V6]),
            // Partial names may have names below them: no data, never NXDOMAIN.
            ("96.10.in-addr.arpa.", PTR, &["No Error aa", NEG_V4]),
            (
                "in-addr.arpa.",
                SOA,
                &[
                    "No Error aa",
                    "an in-addr.arpa. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local.",
                ],
            ),
        ];
        check(&idx, table);
    }

    #[test]
    fn updates_touch_only_their_entry_and_leave_nothing_behind() {
        use RecordType::*;
        let mut idx = Index::new("cluster.local").unwrap();
        // A slice may come before its Service.
        idx.apply_slice(&slice("ns", "hl-a", "hl").host("10.1.0.5", "p0").0);
        check(
            &idx,
            &[(
                "hl.ns.svc.cluster.local.",
                A,
                &["Non-Existent Domain aa", NEG],
            )],
        );
        idx.apply_service(&headless("ns", "hl").0);
        check(
            &idx,
            &[
                (
                    "hl.ns.svc.cluster.local.",
                    A,
                    &["No Error aa", "an hl.ns.svc.cluster.local. 5 IN A 10.1.0.5"],
                ),
                (
                    "5.0.1.10.in-addr.arpa.",
                    PTR,
                    &[
                        "No Error aa",
                        "an 5.0.1.10.in-addr.arpa. 5 IN PTR p0.hl.ns.svc.cluster.local.",
                    ],
                ),
            ],
        );
        // The same pod behind a second headless Service: two PTRs.
        idx.apply_service(&headless("ns", "hl2").0);
        idx.apply_slice(&slice("ns", "hl2-a", "hl2").endpoint("10.1.0.5").0);
        check(
            &idx,
            &[(
                "5.0.1.10.in-addr.arpa.",
                PTR,
                &[
                    "No Error aa",
                    // Canonical DNS order: compared from the right.
                    "an 5.0.1.10.in-addr.arpa. 5 IN PTR p0.hl.ns.svc.cluster.local.",
                    "an 5.0.1.10.in-addr.arpa. 5 IN PTR 10-1-0-5.hl2.ns.svc.cluster.local.",
                ],
            )],
        );
        // The slice moves to another Service (its label changed).
        idx.apply_slice(&slice("ns", "hl-a", "hl2").host("10.1.0.6", "p1").0);
        check(
            &idx,
            &[
                (
                    "hl.ns.svc.cluster.local.",
                    A,
                    &["Non-Existent Domain aa", NEG],
                ),
                (
                    "hl2.ns.svc.cluster.local.",
                    A,
                    &[
                        "No Error aa",
                        "an hl2.ns.svc.cluster.local. 5 IN A 10.1.0.5",
                        "an hl2.ns.svc.cluster.local. 5 IN A 10.1.0.6",
                    ],
                ),
                (
                    "5.0.1.10.in-addr.arpa.",
                    PTR,
                    &[
                        "No Error aa",
                        "an 5.0.1.10.in-addr.arpa. 5 IN PTR 10-1-0-5.hl2.ns.svc.cluster.local.",
                    ],
                ),
            ],
        );
        // A new ClusterIP moves the PTR; an unchanged Service leaves the serial alone.
        idx.apply_service(&service("ns", "web", &["10.96.0.1"]).0);
        idx.apply_service(&service("ns", "web", &["10.96.0.2"]).0);
        let serial = idx.serial();
        idx.apply_service(&service("ns", "web", &["10.96.0.2"]).0);
        assert_eq!(idx.serial(), serial);
        check(
            &idx,
            &[
                (
                    "1.0.96.10.in-addr.arpa.",
                    PTR,
                    &["Non-Existent Domain aa", NEG_V4],
                ),
                (
                    "2.0.96.10.in-addr.arpa.",
                    PTR,
                    &[
                        "No Error aa",
                        "an 2.0.96.10.in-addr.arpa. 5 IN PTR web.ns.svc.cluster.local.",
                    ],
                ),
            ],
        );
        // A re-list that no longer has `web` or `hl2-a`.
        idx.retain_services(|_, n| n != "web");
        idx.retain_slices(|_, n| n != "hl2-a");
        assert!(idx.serial() > serial);
        check(
            &idx,
            &[
                (
                    "web.ns.svc.cluster.local.",
                    A,
                    &["Non-Existent Domain aa", NEG],
                ),
                (
                    "hl2.ns.svc.cluster.local.",
                    A,
                    &[
                        "No Error aa",
                        "an hl2.ns.svc.cluster.local. 5 IN A 10.1.0.6",
                    ],
                ),
            ],
        );
        // A slice without the label is gone; so is everything once deleted.
        let mut unlabeled = slice("ns", "hl-a", "hl2").0;
        unlabeled.metadata.labels = None;
        idx.apply_slice(&unlabeled);
        check(
            &idx,
            &[(
                "hl2.ns.svc.cluster.local.",
                A,
                &["Non-Existent Domain aa", NEG],
            )],
        );
        idx.delete_service("ns", "hl");
        idx.delete_service("ns", "hl2");
        idx.delete_slice("ns", "hl-a");
        idx.delete_slice("ns", "never-seen");
        assert!(idx.namespaces.is_empty(), "{:?}", idx.namespaces);
        assert!(idx.reverse.is_empty(), "{:?}", idx.reverse);
        assert_eq!(idx.services(), 0);
    }

    #[test]
    fn questions_match_without_case_and_answers_keep_it() {
        let idx = fixture();
        let q = Name::from_ascii("WEB.Default.SVC.Cluster.Local.").unwrap();
        let a = idx.lookup(&q, RecordType::A);
        assert_eq!(a.code, ResponseCode::NoError);
        assert_eq!(a.answers.len(), 1);
        assert!(a.answers[0].name.eq_case(&q), "{}", a.answers[0].name);
        let q = Name::from_ascii("_HTTP._Tcp.web.default.svc.cluster.local.").unwrap();
        assert_eq!(idx.lookup(&q, RecordType::SRV).answers.len(), 1);
    }

    #[test]
    fn an_index_still_loading_fails_rather_than_denies() {
        let mut idx = fixture();
        idx.set_synced(false);
        for name in [
            "web.default.svc.cluster.local.",
            "nope.cluster.local.",
            "10.0.96.10.in-addr.arpa.",
        ] {
            let a = idx.lookup(&Name::from_ascii(name).unwrap(), RecordType::A);
            assert_eq!(a.code, ResponseCode::ServFail, "{name}");
            assert!(a.answers.is_empty() && a.authorities.is_empty());
        }
        let a = idx.lookup(&Name::from_ascii("example.com.").unwrap(), RecordType::A);
        assert_eq!(a.code, ResponseCode::Refused);
        idx.set_synced(true);
        let a = idx.lookup(
            &Name::from_ascii("web.default.svc.cluster.local.").unwrap(),
            RecordType::A,
        );
        assert_eq!(a.code, ResponseCode::NoError);
    }

    #[test]
    fn the_soa_bounds_negative_caching_and_tracks_changes() {
        let mut idx = Index::new("Cluster.Local").unwrap();
        let nx = || {
            let a = idx.lookup(
                &Name::from_ascii("x.cluster.local.").unwrap(),
                RecordType::A,
            );
            assert_eq!(a.code, ResponseCode::NXDomain);
            a.authorities[0].to_string()
        };
        let before = nx();
        assert_eq!(
            before,
            "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"
        );
        idx.apply_service(&service("a", "b", &["10.96.0.3"]).0);
        assert_eq!(idx.serial(), 2);
        assert!(idx
            .lookup(
                &Name::from_ascii("x.cluster.local.").unwrap(),
                RecordType::A
            )
            .authorities[0]
            .to_string()
            .contains(" 2 7200 "));
    }

    #[test]
    fn cluster_domain_is_checked() {
        for bad in ["", ".", "in-addr.arpa", "arpa", "x.ip6.arpa", "a..b"] {
            assert!(Index::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Index::new("cluster.local").unwrap().zone().to_string(),
            "cluster.local."
        );
    }

    #[test]
    fn dashed_addresses_round_trip() {
        for ip in ["10.1.2.3", "0.0.0.0", "fd00::1", "2001:db8::a:b"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(undashed(&dashed(ip)), Some(ip), "{ip}");
        }
        for bad in [
            "1-2-3",
            "1-2-3-4-5",
            "a-b-c-d",
            "1-2-3-256",
            "01234-1-1-1",
            "-1-2-3",
            "web",
        ] {
            assert_eq!(undashed(bad), None, "{bad}");
        }
    }
}
