//! The network between nodes. Every node owns a pod range (`Node.spec.podCIDR`); this
//! module makes every other node's range reachable, in one of two modes:
//!
//! - **VXLAN** (flannel's layout): one `berth.vxlan` device per node whose address is the
//!   base of its pod range (`10.244.1.0/32`) and whose MAC is derived from it. For each
//!   peer: a route `PEER_RANGE via PEER_BASE dev berth.vxlan onlink`, a permanent ARP entry
//!   `PEER_BASE -> PEER_MAC` and a forwarding entry `PEER_MAC -> PEER_NODE_IP`. No
//!   learning, no multicast: every entry comes from the Node objects.
//! - **Direct routing**, for nodes on one flat network: `PEER_RANGE via PEER_NODE_IP`.
//!
//! [`plan`] decides purely; [`Overlay`] applies a plan through netlink, removing what a
//! previous plan installed and this one does not want. Berth's routes carry
//! [`RTPROT_BERTH`](crate::netlink::RTPROT_BERTH), so nobody else's are touched.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::netlink::{self, Link, Mac, Neighbour, Netlink, Route, RTPROT_BERTH};
use crate::subnet::Subnet;

/// The VXLAN device.
pub const VXLAN_DEVICE: &str = "berth.vxlan";
/// VNI and UDP port (Linux's default VXLAN port, as flannel uses).
pub const VXLAN_VNI: u32 = 1;
pub const VXLAN_PORT: u16 = 8472;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Vxlan,
    Direct,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vxlan" => Ok(Mode::Vxlan),
            "direct" | "host-gw" => Ok(Mode::Direct),
            _ => Err(format!("unknown overlay mode {s:?} (vxlan or direct)")),
        }
    }
}

/// A node as the overlay sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNet {
    pub name: String,
    pub ip: Ipv4Addr,
    pub pod_cidr: Subnet,
}

/// The MAC of a node's VXLAN device: locally administered, from its pod range's base.
pub fn vtep_mac(pod_cidr: &Subnet) -> Mac {
    let o = pod_cidr.base().octets();
    [0x0e, 0xb7, o[0], o[1], o[2], o[3]]
}

/// What the kernel should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub routes: BTreeSet<Route>,
    pub neighs: BTreeSet<Neighbour>,
    pub fdbs: BTreeSet<Neighbour>,
    /// Peers left out, with the reason (an overlapping range, a duplicate address).
    pub rejected: Vec<(String, String)>,
}

/// The entries that make `peers` reachable from `local`. `vxlan` is the device's index
/// (VXLAN mode only).
pub fn plan(mode: Mode, local: &NodeNet, peers: &[NodeNet], vxlan: Option<u32>) -> Plan {
    let mut p = Plan::default();
    let mut taken: Vec<&NodeNet> = vec![local];
    let mut peers: Vec<&NodeNet> = peers.iter().filter(|n| n.name != local.name).collect();
    // A stable order, so the same peer loses a conflict on every node.
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    for peer in peers {
        if let Some(other) = taken.iter().find(|t| t.pod_cidr.overlaps(&peer.pod_cidr)) {
            p.rejected.push((
                peer.name.clone(),
                format!(
                    "pod range {} overlaps {} of node {}",
                    peer.pod_cidr, other.pod_cidr, other.name
                ),
            ));
            continue;
        }
        if let Some(other) = taken.iter().find(|t| t.ip == peer.ip) {
            p.rejected.push((
                peer.name.clone(),
                format!("address {} is also node {}'s", peer.ip, other.name),
            ));
            continue;
        }
        taken.push(peer);
        match mode {
            Mode::Direct => {
                p.routes.insert(Route {
                    dst: peer.pod_cidr.base(),
                    prefix: peer.pod_cidr.prefix(),
                    gateway: Some(peer.ip),
                    oif: None,
                    onlink: false,
                    protocol: RTPROT_BERTH,
                });
            }
            Mode::Vxlan => {
                let vtep = peer.pod_cidr.base();
                let mac = vtep_mac(&peer.pod_cidr);
                p.routes.insert(Route {
                    dst: peer.pod_cidr.base(),
                    prefix: peer.pod_cidr.prefix(),
                    gateway: Some(vtep),
                    oif: vxlan,
                    onlink: true,
                    protocol: RTPROT_BERTH,
                });
                p.neighs.insert(Neighbour { ip: vtep, mac });
                p.fdbs.insert(Neighbour { ip: peer.ip, mac });
            }
        }
    }
    p
}

/// What one [`Overlay::apply`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub removed: usize,
}

/// Applies plans to this network namespace.
pub struct Overlay {
    mode: Mode,
    local: NodeNet,
    mtu: u32,
}

impl Overlay {
    pub fn new(mode: Mode, local: NodeNet, mtu: u32) -> Overlay {
        Overlay { mode, local, mtu }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Create (or repair) the VXLAN device in VXLAN mode, remove it in direct mode.
    /// Returns the device's index.
    pub fn ensure_device(&self, nl: &mut Netlink) -> netlink::Result<Option<u32>> {
        if self.mode == Mode::Direct {
            nl.del_link(VXLAN_DEVICE)?;
            return Ok(None);
        }
        let mac = vtep_mac(&self.local.pod_cidr);
        let dev = match nl.link(VXLAN_DEVICE)? {
            Some(l) if l.kind.as_deref() == Some("vxlan") => l,
            Some(_) => {
                nl.del_link(VXLAN_DEVICE)?;
                self.create(nl)?
            }
            None => self.create(nl)?,
        };
        if dev.mac != Some(mac) {
            nl.set_mac(&dev, mac)?;
        }
        // The device answers for the base of the node's range.
        let vtep = self.local.pod_cidr.base();
        for (ip, prefix) in nl.addrs(&dev)? {
            if (ip, prefix) != (vtep, 32) {
                tracing::info!(%ip, prefix, "removing a stale VXLAN address");
            }
        }
        nl.add_addr(&dev, vtep, 32)?;
        if !dev.up {
            nl.set_up(&dev)?;
        }
        Ok(Some(dev.index))
    }

    fn create(&self, nl: &mut Netlink) -> netlink::Result<Link> {
        nl.add_vxlan(
            VXLAN_DEVICE,
            VXLAN_VNI,
            self.local.ip,
            VXLAN_PORT,
            None,
            Some(self.mtu),
        )?;
        nl.must_link(VXLAN_DEVICE)
    }

    /// Make the kernel hold exactly `plan`'s entries (of Berth's own).
    pub fn apply(&self, nl: &mut Netlink, plan: &Plan) -> netlink::Result<Applied> {
        let mut done = Applied::default();
        // Berth's routes are one per destination; the kernel reports the device of a
        // gateway route even when the plan leaves it to the kernel.
        let have: BTreeMap<(Ipv4Addr, u8), Route> = nl
            .routes()?
            .into_iter()
            .filter(|r| r.protocol == RTPROT_BERTH)
            .map(|r| ((r.dst, r.prefix), r))
            .collect();
        let want: BTreeMap<(Ipv4Addr, u8), &Route> =
            plan.routes.iter().map(|r| ((r.dst, r.prefix), r)).collect();
        for (key, r) in &have {
            if !want.contains_key(key) && nl.del_route(r)? {
                done.removed += 1;
            }
        }
        for (key, r) in &want {
            let same = have.get(key).is_some_and(|h| {
                h.gateway == r.gateway
                    && h.onlink == r.onlink
                    && (r.oif.is_none() || h.oif == r.oif)
            });
            if !same {
                nl.replace_route(r)?;
                done.added += 1;
            }
        }
        if let Some(dev) = nl.link(VXLAN_DEVICE)? {
            let have: BTreeSet<Neighbour> = nl.neighs(&dev)?.into_iter().collect();
            for n in have.difference(&plan.neighs) {
                done.removed += usize::from(nl.del_neigh(&dev, n)?);
            }
            for n in plan.neighs.difference(&have) {
                nl.replace_neigh(&dev, n)?;
                done.added += 1;
            }
            let have: BTreeSet<Neighbour> = nl
                .fdbs(&dev)?
                .into_iter()
                .filter(|n| !n.ip.is_unspecified())
                .collect();
            for n in have.difference(&plan.fdbs) {
                done.removed += usize::from(nl.del_fdb(&dev, n)?);
            }
            for n in plan.fdbs.difference(&have) {
                nl.replace_fdb(&dev, n)?;
                done.added += 1;
            }
        }
        Ok(done)
    }

    /// Remove every route and the device.
    pub fn teardown(&self, nl: &mut Netlink) -> netlink::Result<()> {
        self.apply(nl, &Plan::default())?;
        nl.del_link(VXLAN_DEVICE)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: [u8; 4], cidr: &str) -> NodeNet {
        NodeNet {
            name: name.into(),
            ip: Ipv4Addr::from(ip),
            pod_cidr: cidr.parse().unwrap(),
        }
    }

    #[test]
    fn vxlan_plans_a_route_an_arp_and_an_fdb_entry_per_peer() {
        let a = node("a", [192, 168, 5, 1], "10.244.0.0/24");
        let b = node("b", [192, 168, 5, 2], "10.244.1.0/24");
        let p = plan(Mode::Vxlan, &a, &[a.clone(), b.clone()], Some(7));
        let vtep = Ipv4Addr::new(10, 244, 1, 0);
        let mac = [0x0e, 0xb7, 10, 244, 1, 0];
        assert_eq!(
            p.routes.into_iter().collect::<Vec<_>>(),
            vec![Route {
                dst: vtep,
                prefix: 24,
                gateway: Some(vtep),
                oif: Some(7),
                onlink: true,
                protocol: RTPROT_BERTH
            }]
        );
        assert_eq!(
            p.neighs.into_iter().collect::<Vec<_>>(),
            vec![Neighbour { ip: vtep, mac }]
        );
        assert_eq!(
            p.fdbs.into_iter().collect::<Vec<_>>(),
            vec![Neighbour { ip: b.ip, mac }]
        );
        assert!(p.rejected.is_empty());
    }

    #[test]
    fn direct_routes_go_via_the_peer() {
        let a = node("a", [192, 168, 5, 1], "10.244.0.0/24");
        let b = node("b", [192, 168, 5, 2], "10.244.1.0/24");
        let p = plan(Mode::Direct, &a, &[b], None);
        let r = p.routes.iter().next().unwrap();
        assert_eq!(
            (r.gateway, r.oif, r.onlink),
            (Some(Ipv4Addr::new(192, 168, 5, 2)), None, false)
        );
        assert!(p.neighs.is_empty() && p.fdbs.is_empty());
    }

    #[test]
    fn overlapping_ranges_and_shared_addresses_are_rejected_not_programmed() {
        let a = node("a", [192, 168, 5, 1], "10.244.0.0/24");
        let b = node("b", [192, 168, 5, 2], "10.244.1.0/24");
        let bad = node("c", [192, 168, 5, 3], "10.244.0.0/16");
        let dup = node("d", [192, 168, 5, 2], "10.244.9.0/24");
        let p = plan(Mode::Vxlan, &a, &[dup, bad, b], Some(1));
        assert_eq!(p.routes.len(), 1);
        assert_eq!(p.rejected.len(), 2);
        assert_eq!(p.rejected[0].0, "c");
        assert!(
            p.rejected[0].1.contains("overlaps 10.244.0.0/24 of node a"),
            "{:?}",
            p.rejected
        );
        assert!(
            p.rejected[1].1.contains("also node b's"),
            "{:?}",
            p.rejected
        );
    }
}
