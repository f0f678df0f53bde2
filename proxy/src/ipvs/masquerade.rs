//! Which packets IPVS mode must masquerade (source NAT to the node), described as data;
//! [`super::rules`] turns it into the elements of IPVS mode's nftables table.
//!
//! IPVS with masquerade forwarding only rewrites the destination. A reply must come back
//! through this node for IPVS to undo that, which fails in three cases, the ones
//! kube-proxy's IPVS mode masquerades (its `KUBE-LOOP-BACK`, `KUBE-CLUSTER-IP` and
//! `KUBE-NODE-PORT-*` ipsets, then `KUBE-POSTROUTING`):
//!
//! - **Hairpin**: a pod reaches a Service and IPVS picks that same pod. Without SNAT the
//!   pod gets a packet from itself and answers itself directly.
//! - **ClusterIP from outside the pod network**: the node itself, or another host
//!   routing to the ClusterIP. The endpoint would answer the client directly (or via
//!   its own node), bypassing this node's IPVS.
//! - **NodePort**: the client is off-node; the endpoint may be on another node.
//!
//! Where to match: IPVS rewrites the destination in `LOCAL_IN`, after nat `prerouting`
//! and filter `input`, and sends the rewritten packet out through `LOCAL_OUT` and
//! `postrouting` (with `net/ipv4/vs/conntrack = 1` conntrack sees it). So the ClusterIP
//! and NodePort cases are matched on the original destination in `prerouting` and
//! `output` and set [`MASQUERADE_MARK`]; `postrouting` masquerades marked packets.
//! The hairpin case is matched in `postrouting` on the rewritten packet: source address
//! equals the chosen endpoint's address.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use super::{Desired, Protocol, ServiceKey, VipKind, VirtualService};

/// The packet mark that asks `postrouting` to masquerade (kube-proxy's `0x4000`).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// A network in CIDR notation: the pod network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// One class of packets to masquerade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MasqueradeRule {
    /// In `postrouting`: `protocol` to `endpoint` whose source address is the endpoint's
    /// own address (nft: `ip saddr . meta l4proto . th dport . ip daddr` in a set).
    Hairpin {
        protocol: Protocol,
        endpoint: SocketAddr,
    },
    /// In `prerouting`/`output`: to the ClusterIP `service` from a source outside
    /// `pod_cidr`; from any source when the pod network is not known (kube-proxy's
    /// `--masquerade-all`). Mark with [`MASQUERADE_MARK`].
    ClusterIpFromOutside {
        service: ServiceKey,
        pod_cidr: Option<Cidr>,
    },
    /// In `prerouting`/`output`: to the NodePort `service` (a node address and port).
    /// Mark with [`MASQUERADE_MARK`].
    NodePort { service: ServiceKey },
}

/// The rules for every desired virtual service: one ClusterIP or NodePort rule per
/// service in key order, then one hairpin rule per distinct endpoint.
pub fn masquerade_rules(desired: &Desired, pod_cidr: Option<Cidr>) -> Vec<MasqueradeRule> {
    let mut hairpins = BTreeSet::new();
    let mut rules = Vec::new();
    for service in desired.services() {
        for rule in service_rules(service, pod_cidr) {
            match rule {
                MasqueradeRule::Hairpin { .. } => {
                    hairpins.insert(rule);
                }
                _ => rules.push(rule),
            }
        }
    }
    rules.extend(hairpins);
    rules
}

/// The rules one virtual service needs: its ClusterIP or NodePort rule, then a hairpin
/// rule per real server (which other services may need as well).
pub fn service_rules(
    service: &VirtualService,
    pod_cidr: Option<Cidr>,
) -> impl Iterator<Item = MasqueradeRule> + '_ {
    let own = match service.kind {
        VipKind::ClusterIp => MasqueradeRule::ClusterIpFromOutside {
            service: service.key,
            pod_cidr,
        },
        VipKind::NodePort => MasqueradeRule::NodePort {
            service: service.key,
        },
    };
    let protocol = service.key.protocol;
    std::iter::once(own).chain(service.real_servers.iter().map(move |endpoint| {
        MasqueradeRule::Hairpin {
            protocol,
            endpoint: *endpoint,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_service_gets_its_rule_and_each_endpoint_one_hairpin() {
        let pods = Cidr {
            addr: "10.244.0.0".parse().unwrap(),
            prefix_len: 16,
        };
        let web = VirtualService::cluster_ip(Protocol::Tcp, sa("10.96.0.20:80"))
            .real_servers([sa("10.244.1.2:8080")]);
        let web_np = VirtualService::node_port(Protocol::Tcp, sa("192.0.2.10:30080"))
            .real_servers([sa("10.244.1.2:8080")]);
        let desired = Desired::new([web.clone(), web_np.clone()]);
        assert_eq!(
            masquerade_rules(&desired, Some(pods)),
            vec![
                MasqueradeRule::ClusterIpFromOutside {
                    service: web.key,
                    pod_cidr: Some(pods)
                },
                MasqueradeRule::NodePort {
                    service: web_np.key
                },
                // The endpoint behind both services: one hairpin rule.
                MasqueradeRule::Hairpin {
                    protocol: Protocol::Tcp,
                    endpoint: sa("10.244.1.2:8080")
                },
            ]
        );
    }
}
