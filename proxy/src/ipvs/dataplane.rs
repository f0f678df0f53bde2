//! IPVS mode behind the proxy's [`Dataplane`] trait: [`IpvsDataplane`].
//!
//! Each service port becomes virtual services ([`virtual_services`]): one on its ClusterIP
//! (held on the `berth-ipvs0` dummy interface), and for a NodePort one on each of the
//! node's addresses ([`IpvsConfig::node_ips`]), as kube-proxy's IPVS mode. The executor
//! [`Ipvs`] programs them; the nftables table of [`super::rules`] adds the masquerade and
//! the refusal of services without endpoints.
//!
//! - [`Dataplane::sync_full`]: the whole table in one `nft -f -` transaction, the
//!   sysctls IPVS mode needs, then [`Ipvs::sync`] (reads the kernel, fixes every
//!   difference).
//! - [`Dataplane::apply`]: element deletes and adds for the changed service ports only
//!   (one transaction, on a long-lived `nft -i` unless configured otherwise), then
//!   [`Ipvs::update`] with only their virtual services, then stale UDP conntrack entries
//!   ([`crate::conntrack`]). The nft part goes first, so a new virtual service is
//!   masqueraded from its first packet and one losing its last endpoint is refused before
//!   IPVS has nothing to send it to.
//! - [`Dataplane::cleanup`]: flushes the namespace's IPVS table, deletes the dummy
//!   interface and the table, whatever this instance knows (it may be a fresh one).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use tracing::{debug, info};

use super::rules::{self, Elements, TableSpec};
use super::{
    dummy, netlink, write_sysctls, Desired, Ipvs, IpvsNetlink, Protocol, ServiceKey, VirtualService,
};
use crate::config::Ipv4Cidr;
use crate::conntrack::{stale_udp_flows, Conntrack};
use crate::dataplane::{self, Dataplane};
use crate::model::{self, Change, ServicePortInfo, State};
use crate::nft::{self, run_spawn, Session};

/// IPVS mode's nftables table (family `ip`).
pub const TABLE: &str = "berth-ipvs";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect to the kernel's ipvs: {0}")]
    Connect(#[source] netlink::Error),
    #[error(transparent)]
    Ipvs(#[from] super::Error),
    #[error("table ip {table}: {source}")]
    Nft {
        table: String,
        #[source]
        source: nft::Error,
    },
    #[error("delete interface: {0}")]
    Link(#[source] netlink::Error),
    #[error("flush ipvs: {0}")]
    Flush(#[source] netlink::Error),
    #[error("an earlier batch failed or no full sync ran yet: a full sync must come first")]
    NeedsFullSync,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How IPVS mode is set up.
#[derive(Debug, Clone)]
pub struct IpvsConfig {
    /// The addresses NodePort Services are reachable on (kube-proxy's IPVS mode uses every
    /// local address; the node agent passes its node IP). Empty: no NodePort at all.
    pub node_ips: Vec<Ipv4Addr>,
    /// The pod network: other sources reaching a ClusterIP are masqueraded. `None`: every
    /// source is (see [`rules::TableSpec::cluster_cidr`] for why IPVS mode needs it).
    pub cluster_cidr: Option<Ipv4Cidr>,
    /// The dummy interface holding the ClusterIPs.
    pub link: String,
    /// The nftables table (family `ip`).
    pub table: String,
    /// The packet mark bit meaning "masquerade this".
    pub masquerade_mark: u32,
    /// Where [`super::SYSCTLS`] are written at each full sync (`None`: not at all).
    pub proc_sys: Option<PathBuf>,
    /// The nft binary.
    pub nft: PathBuf,
    /// Send incremental batches to one long-lived `nft -i` (else `nft -f -` each time).
    pub persistent: bool,
    /// The conntrack binary (a missing one is a warning).
    pub conntrack: PathBuf,
}

impl Default for IpvsConfig {
    fn default() -> Self {
        Self {
            node_ips: Vec::new(),
            cluster_cidr: None,
            link: dummy::DEFAULT_NAME.to_string(),
            table: TABLE.to_string(),
            masquerade_mark: nft::DEFAULT_MASQUERADE_MARK,
            proc_sys: Some(PathBuf::from("/proc/sys")),
            nft: PathBuf::from("/usr/sbin/nft"),
            persistent: true,
            conntrack: PathBuf::from("conntrack"),
        }
    }
}

impl IpvsConfig {
    fn spec(&self) -> TableSpec<'_> {
        TableSpec {
            table: &self.table,
            cluster_cidr: self.cluster_cidr,
            mark: self.masquerade_mark,
        }
    }
}

fn protocol(p: model::Protocol) -> Protocol {
    match p {
        model::Protocol::Tcp => Protocol::Tcp,
        model::Protocol::Udp => Protocol::Udp,
    }
}

/// The virtual services of one service port: its ClusterIP, then its NodePort on each
/// of `node_ips`, all with the same real servers and affinity.
pub fn virtual_services(info: &ServicePortInfo, node_ips: &[Ipv4Addr]) -> Vec<VirtualService> {
    let proto = protocol(info.protocol);
    let endpoints = info
        .endpoints
        .iter()
        .map(|e| SocketAddr::from((e.ip, e.port)));
    let with = |vs: VirtualService| {
        let vs = vs.real_servers(endpoints.clone());
        match info.affinity_timeout {
            Some(t) => vs.affinity(t),
            None => vs,
        }
    };
    let mut out = vec![with(VirtualService::cluster_ip(
        proto,
        SocketAddr::from((info.cluster_ip, info.port)),
    ))];
    if let Some(np) = info.node_port {
        out.extend(node_ips.iter().map(|ip| {
            with(VirtualService::node_port(
                proto,
                SocketAddr::from((*ip, np)),
            ))
        }));
    }
    out
}

/// Every virtual service of `state`.
pub fn desired(state: &State, node_ips: &[Ipv4Addr]) -> Desired {
    Desired::new(
        state
            .values()
            .flat_map(|info| virtual_services(info, node_ips)),
    )
}

/// What a batch of changes does to the virtual services: the ones it replaces or
/// removes (`before`), the ones it adds or keeps (`after`), and the keys that go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub before: Vec<VirtualService>,
    pub after: Vec<VirtualService>,
    pub removed: Vec<ServiceKey>,
}

/// The [`Delta`] of `changes`, applied in order: a key a later change takes over (a
/// ClusterIP freed by one Service and claimed by another in the same batch) is kept.
pub fn delta(changes: &[Change], node_ips: &[Ipv4Addr]) -> Delta {
    let mut d = Delta::default();
    let mut last: BTreeMap<ServiceKey, Option<usize>> = BTreeMap::new();
    for c in changes {
        let old = c
            .before()
            .map(|i| virtual_services(i, node_ips))
            .unwrap_or_default();
        let new = c
            .after()
            .map(|i| virtual_services(i, node_ips))
            .unwrap_or_default();
        for vs in old {
            last.insert(vs.key, None);
            d.before.push(vs);
        }
        for vs in new {
            last.insert(vs.key, Some(d.after.len()));
            d.after.push(vs);
        }
    }
    // An `after` entry superseded by a later change is neither kept nor counted.
    let keep: Vec<bool> = (0..d.after.len())
        .map(|i| last.get(&d.after[i].key) == Some(&Some(i)))
        .collect();
    let mut i = 0;
    d.after.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    d.removed = last
        .into_iter()
        .filter_map(|(k, v)| v.is_none().then_some(k))
        .collect();
    d
}

/// The IPVS [`Dataplane`].
pub struct IpvsDataplane {
    cfg: IpvsConfig,
    /// Connected at the first full sync, in the network namespace of the calling thread.
    ipvs: Option<Ipvs>,
    elements: Elements,
    /// `elements` does not match the table (a batch failed, or no full sync yet).
    stale: bool,
    session: Option<Session>,
    conntrack: Conntrack,
}

impl std::fmt::Debug for IpvsDataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpvsDataplane")
            .field("cfg", &self.cfg)
            .field("ipvs", &self.ipvs)
            .field("elements", &self.elements.len())
            .field("stale", &self.stale)
            .finish()
    }
}

impl IpvsDataplane {
    /// Touches nothing until the first call; the first full sync connects to IPVS and
    /// creates the dummy interface in the calling thread's network namespace.
    pub fn new(cfg: IpvsConfig) -> Self {
        Self {
            conntrack: Conntrack::new(cfg.conntrack.clone()),
            cfg,
            ipvs: None,
            elements: Elements::default(),
            stale: true,
            session: None,
        }
    }

    /// With an executor of one's own (tests drive a fake kernel this way).
    pub fn with_ipvs(cfg: IpvsConfig, ipvs: Ipvs) -> Self {
        Self {
            ipvs: Some(ipvs),
            ..Self::new(cfg)
        }
    }

    pub fn config(&self) -> &IpvsConfig {
        &self.cfg
    }

    /// The executor, once connected.
    pub fn ipvs(&self) -> Option<&Ipvs> {
        self.ipvs.as_ref()
    }

    fn nft_err(&self, source: nft::Error) -> Error {
        Error::Nft {
            table: self.cfg.table.clone(),
            source,
        }
    }

    fn run_incremental(&mut self, cmds: &[String]) -> Result<()> {
        let result = if self.cfg.persistent {
            let session = match &mut self.session {
                Some(s) => Ok(s),
                None => Session::start(&self.cfg.nft).map(|s| self.session.insert(s)),
            };
            let result = session.and_then(|s| s.run(&self.cfg.table, cmds));
            if matches!(result, Err(nft::Error::Session(_))) {
                self.session = None;
            }
            result
        } else {
            run_spawn(&self.cfg.nft, cmds)
        };
        result.map_err(|e| self.nft_err(e))
    }

    fn sync(&mut self, state: &State) -> Result<()> {
        let desired = desired(state, &self.cfg.node_ips);
        self.stale = true;
        let (cmds, elements) = rules::full_script(&self.cfg.spec(), &desired);
        run_spawn(&self.cfg.nft, &cmds).map_err(|e| self.nft_err(e))?;
        self.elements = elements;
        self.stale = false;
        if let Some(dir) = &self.cfg.proc_sys {
            write_sysctls(dir)?;
        }
        let ipvs = match self.ipvs.take() {
            Some(ipvs) => ipvs,
            None => Ipvs::connect(&self.cfg.link).map_err(Error::Connect)?,
        };
        let ops = self.ipvs.insert(ipvs).sync(desired)?;
        info!(
            service_ports = state.len(),
            elements = self.elements.len(),
            ipvs_ops = ops.len(),
            "ipvs data plane synced"
        );
        Ok(())
    }

    fn update(&mut self, changes: &[Change]) -> Result<()> {
        if self.stale || self.ipvs.is_none() {
            return Err(Error::NeedsFullSync);
        }
        let d = delta(changes, &self.cfg.node_ips);
        let spec = self.cfg.spec();
        let cmds = rules::update_script(&spec, &mut self.elements, &d.before, &d.after);
        if !cmds.is_empty() {
            if let Err(err) = self.run_incremental(&cmds) {
                self.stale = true;
                return Err(err);
            }
        }
        let ops = match &mut self.ipvs {
            Some(ipvs) => ipvs.update(&d.removed, d.after)?,
            None => return Err(Error::NeedsFullSync),
        };
        debug!(
            changes = changes.len(),
            nft_cmds = cmds.len(),
            ipvs_ops = ops.len(),
            "ipvs data plane updated"
        );
        self.conntrack.clear(&stale_udp_flows(changes));
        Ok(())
    }

    fn clean(&mut self) -> Result<()> {
        self.ipvs = None;
        self.session = None;
        self.elements = Elements::default();
        self.stale = true;
        // Try every part, report the first failure.
        let ipvs = match IpvsNetlink::connect() {
            Ok(mut client) => client.flush().map_err(Error::Flush),
            Err(netlink::Error::FamilyNotFound) => Ok(()),
            Err(e) => Err(Error::Connect(e)),
        };
        let link = dummy::delete_if_exists(&self.cfg.link)
            .map(drop)
            .map_err(Error::Link);
        let t = format!("ip {}", self.cfg.table);
        let table = run_spawn(
            &self.cfg.nft,
            &[format!("add table {t}"), format!("delete table {t}")],
        )
        .map_err(|e| self.nft_err(e));
        info!(link = %self.cfg.link, table = %self.cfg.table, "ipvs data plane removed");
        ipvs.and(link).and(table)
    }
}

fn wrap(e: Error) -> dataplane::Error {
    dataplane::Error::backend("ipvs", e)
}

impl Dataplane for IpvsDataplane {
    fn name(&self) -> &'static str {
        "ipvs"
    }

    fn sync_full(&mut self, state: &State) -> dataplane::Result<()> {
        self.sync(state).map_err(wrap)
    }

    fn apply(&mut self, changes: &[Change]) -> dataplane::Result<()> {
        self.update(changes).map_err(wrap)
    }

    fn cleanup(&mut self) -> dataplane::Result<()> {
        self.clean().map_err(wrap)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::FakeKernel;
    use super::*;
    use crate::model::{diff, Endpoint, ServicePortName};

    fn ep(ip: &str, port: u16) -> Endpoint {
        Endpoint {
            ip: ip.parse().unwrap(),
            port,
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn info(vip: &str, port: u16, eps: &[Endpoint]) -> ServicePortInfo {
        ServicePortInfo {
            cluster_ip: vip.parse().unwrap(),
            port,
            protocol: model::Protocol::Tcp,
            node_port: None,
            affinity_timeout: None,
            endpoints: eps.to_vec(),
        }
    }

    fn node_ips() -> Vec<Ipv4Addr> {
        vec![
            "192.0.2.1".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
        ]
    }

    #[test]
    fn a_node_port_service_is_its_cluster_ip_and_one_virtual_service_per_node_address() {
        let mut i = info("10.96.0.20", 80, &[ep("10.244.1.2", 8080)]);
        i.protocol = model::Protocol::Udp;
        i.node_port = Some(30080);
        i.affinity_timeout = Some(60);
        let rs = [sa("10.244.1.2:8080")];
        assert_eq!(
            virtual_services(&i, &node_ips()),
            vec![
                VirtualService::cluster_ip(Protocol::Udp, sa("10.96.0.20:80"))
                    .real_servers(rs)
                    .affinity(60),
                VirtualService::node_port(Protocol::Udp, sa("192.0.2.1:30080"))
                    .real_servers(rs)
                    .affinity(60),
                VirtualService::node_port(Protocol::Udp, sa("198.51.100.1:30080"))
                    .real_servers(rs)
                    .affinity(60),
            ]
        );
        // Without node addresses, only the ClusterIP.
        assert_eq!(virtual_services(&i, &[]).len(), 1);
        // A plain ClusterIP service without endpoints: one service, no real server.
        let empty = virtual_services(&info("10.96.0.30", 81, &[]), &node_ips());
        assert_eq!(
            empty,
            vec![VirtualService::cluster_ip(
                Protocol::Tcp,
                sa("10.96.0.30:81")
            )]
        );
    }

    #[test]
    fn a_delta_keeps_a_key_a_later_change_claims() {
        let a = ServicePortName::new("ns", "a", "");
        let b = ServicePortName::new("ns", "b", "");
        let vip = info("10.96.0.20", 80, &[ep("10.244.1.2", 80)]);
        let mut np = info("10.96.0.21", 80, &[]);
        np.node_port = Some(30000);
        // b takes over a's ClusterIP in the same batch, in either order; a NodePort Service
        // goes away.
        for changes in [
            vec![
                Change::Remove {
                    name: a.clone(),
                    old: vip.clone(),
                },
                Change::Add {
                    name: b.clone(),
                    new: vip.clone(),
                },
            ],
            vec![
                Change::Add {
                    name: b.clone(),
                    new: vip.clone(),
                },
                Change::Remove {
                    name: a.clone(),
                    old: vip.clone(),
                },
            ],
        ] {
            let mut changes = changes;
            changes.push(Change::Remove {
                name: ServicePortName::new("ns", "np", ""),
                old: np.clone(),
            });
            let d = delta(&changes, &node_ips());
            assert_eq!(d.before.len(), 4);
            let removed: Vec<String> = d.removed.iter().map(|k| k.to_string()).collect();
            let after: Vec<String> = d.after.iter().map(|v| v.key.to_string()).collect();
            if matches!(changes[0], Change::Remove { .. }) {
                assert_eq!(after, ["TCP 10.96.0.20:80"]);
                assert_eq!(
                    removed,
                    [
                        "TCP 10.96.0.21:80",
                        "TCP 192.0.2.1:30000",
                        "TCP 198.51.100.1:30000"
                    ]
                );
            } else {
                // Added, then removed by the later change: it goes.
                assert!(after.is_empty(), "{after:?}");
                assert_eq!(removed.len(), 4);
            }
        }
    }

    /// An nft that appends each transaction to `log` and succeeds.
    fn recording_nft(dir: &std::path::Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("nft");
        let log = dir.join("log");
        std::fs::write(
            &script,
            format!("#!/bin/sh\ncat >> {0}\necho --- >> {0}\n", log.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    fn transactions(dir: &std::path::Path) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        std::fs::remove_file(dir.join("log")).ok();
        text.split("---\n")
            .filter(|t| !t.is_empty())
            .map(|t| t.lines().map(String::from).collect())
            .collect()
    }

    #[test]
    fn apply_touches_only_the_changed_service_in_ipvs_and_nft() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeKernel::default();
        let cfg = IpvsConfig {
            node_ips: node_ips(),
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            table: "bi".into(),
            proc_sys: None,
            nft: recording_nft(dir.path()),
            persistent: false,
            conntrack: "/nonexistent/conntrack".into(),
            ..IpvsConfig::default()
        };
        let mut dp = IpvsDataplane::with_ipvs(
            cfg,
            Ipvs::new(Box::new(fake.clone()), Box::new(fake.clone())),
        );
        // Before any full sync, apply refuses.
        assert!(dp.apply(&[]).is_err());

        let mut state: State = (1..=20u8)
            .map(|n| {
                (
                    ServicePortName::new("ns", &format!("s{n}"), ""),
                    info(
                        &format!("10.96.0.{n}"),
                        80,
                        &[ep(&format!("10.244.0.{n}"), 80)],
                    ),
                )
            })
            .collect();
        dp.sync_full(&state).unwrap();
        let txs = transactions(dir.path());
        assert_eq!(txs.len(), 1);
        assert!(txs[0].contains(&"add table ip bi".to_string()));
        assert_eq!(fake.state().services.len(), 20);
        assert_eq!(fake.state().addresses.len(), 20);
        fake.take_calls();

        // s3 loses its endpoint and becomes a NodePort; s7 goes.
        let before = state.clone();
        let s3 = ServicePortName::new("ns", "s3", "");
        let mut np = info("10.96.0.3", 80, &[]);
        np.node_port = Some(30003);
        state.insert(s3, np);
        state.remove(&ServicePortName::new("ns", "s7", ""));
        dp.apply(&diff(&before, &state)).unwrap();
        assert_eq!(
            fake.take_calls(),
            [
                "delete_destination TCP 10.96.0.3:80 10.244.0.3:80",
                "delete_service TCP 10.96.0.7:80",
                "add_service TCP 192.0.2.1:30003",
                "add_service TCP 198.51.100.1:30003",
                "delete_address 10.96.0.7",
            ]
        );
        assert_eq!(
            transactions(dir.path()),
            [[
                "delete element ip bi cluster-ips { 10.96.0.7 . tcp . 80 }",
                "delete element ip bi hairpin { 10.244.0.3 . tcp . 80 . 10.244.0.3, 10.244.0.7 . tcp . 80 . 10.244.0.7 }",
                "add element ip bi no-endpoints { 10.96.0.3 . tcp . 80, 192.0.2.1 . tcp . 30003, 198.51.100.1 . tcp . 30003 }",
                "add element ip bi node-ports { 192.0.2.1 . tcp . 30003, 198.51.100.1 . tcp . 30003 }",
            ]]
        );
        // What the increments add up to is what a full sync of the new state holds.
        assert_eq!(
            dp.elements,
            rules::full_script(&dp.cfg.spec(), &desired(&state, &node_ips())).1
        );
        assert_eq!(fake.state().services.len(), 21);

        // An IPVS failure fails the call; the executor reads the kernel at the next one.
        fake.state().fail = Some("add_destination".into());
        let mut next = state.clone();
        next.insert(
            ServicePortName::new("ns", "s1", ""),
            info(
                "10.96.0.1",
                80,
                &[ep("10.244.0.1", 80), ep("10.244.0.99", 80)],
            ),
        );
        let err = dp.apply(&diff(&state, &next)).unwrap_err();
        assert!(
            err.to_string().contains("add destination 10.244.0.99:80"),
            "{err}"
        );
    }

    #[test]
    fn a_failed_nft_transaction_asks_for_a_full_sync() {
        let fake = FakeKernel::default();
        let cfg = IpvsConfig {
            proc_sys: None,
            nft: "/bin/false".into(),
            persistent: false,
            ..IpvsConfig::default()
        };
        let mut dp = IpvsDataplane::with_ipvs(
            cfg,
            Ipvs::new(Box::new(fake.clone()), Box::new(fake.clone())),
        );
        let err = dp.sync_full(&State::new()).unwrap_err();
        assert!(
            err.to_string()
                .contains("table ip berth-ipvs: nft transaction failed"),
            "{err}"
        );
        // Nothing reached IPVS, and apply refuses until a full sync succeeds.
        assert!(fake.take_calls().is_empty());
        let err = dp.apply(&[]).unwrap_err();
        assert!(
            err.to_string().contains("a full sync must come first"),
            "{err}"
        );
    }
}
