//! The planner: pure functions from what Berth wants ([`Desired`]) and what the kernel
//! holds ([`Snapshot`]) to the fewest [`Op`]s that make the kernel match.
//!
//! Order within a plan: addresses are added first (so the kernel accepts the traffic
//! before a service exists for it), then each service in key order, then addresses
//! no longer needed are removed. Within one service, new and changed real servers come
//! before removals, so a service with endpoints never passes through having none.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{Desired, KernelService, Op, ServiceKey, Snapshot, VirtualService};

/// The part of the state a plan looks at: the services and addresses a change touches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub services: BTreeSet<ServiceKey>,
    pub addresses: BTreeSet<IpAddr>,
}

/// Everything: every desired or present service and address. Anything the kernel holds
/// that is not desired is deleted: Berth owns the IPVS table of its network namespace
/// and the addresses of its dummy interface.
pub fn plan(desired: &Desired, current: &Snapshot) -> Vec<Op> {
    let scope = Scope {
        services: desired
            .services()
            .map(|s| s.key)
            .chain(current.services.keys().copied())
            .collect(),
        addresses: desired
            .bound_addresses()
            .chain(current.addresses.iter().copied())
            .collect(),
    };
    plan_scope(desired, current, &scope)
}

/// Only the services and addresses in `scope`.
pub fn plan_scope(desired: &Desired, current: &Snapshot, scope: &Scope) -> Vec<Op> {
    let mut ops = Vec::new();
    for ip in &scope.addresses {
        if desired.is_bound(ip) && !current.addresses.contains(ip) {
            ops.push(Op::AddAddress(*ip));
        }
    }
    for key in &scope.services {
        ops.extend(plan_service(
            key,
            desired.get(key),
            current.services.get(key),
        ));
    }
    for ip in &scope.addresses {
        if !desired.is_bound(ip) && current.addresses.contains(ip) {
            ops.push(Op::DeleteAddress(*ip));
        }
    }
    ops
}

/// One service: what turns `current` into `desired`.
pub fn plan_service(
    key: &ServiceKey,
    desired: Option<&VirtualService>,
    current: Option<&KernelService>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    match (desired, current) {
        (None, None) => {}
        (None, Some(_)) => ops.push(Op::DeleteService(*key)),
        (Some(want), None) => {
            ops.push(Op::AddService(want.service()));
            for addr in &want.real_servers {
                ops.push(Op::AddDestination(*key, want.destination(*addr)));
            }
        }
        (Some(want), Some(have)) => {
            let service = want.service();
            if service != have.service {
                ops.push(Op::UpdateService(service));
            }
            for addr in &want.real_servers {
                let dest = want.destination(*addr);
                match have.destinations.get(addr) {
                    None => ops.push(Op::AddDestination(*key, dest)),
                    Some(old) if *old != dest => ops.push(Op::UpdateDestination(*key, dest)),
                    Some(_) => {}
                }
            }
            for addr in have.destinations.keys() {
                if !want.real_servers.contains(addr) {
                    ops.push(Op::DeleteDestination(*key, *addr));
                }
            }
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::ipvs::{Destination, Protocol, Service, VirtualService};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn tcp(addr: &str) -> ServiceKey {
        ServiceKey::new(Protocol::Tcp, sa(addr))
    }

    fn web() -> VirtualService {
        VirtualService::cluster_ip(Protocol::Tcp, sa("10.96.0.20:80"))
            .real_servers([sa("10.244.1.2:8080"), sa("10.244.2.3:8080")])
    }

    fn dns() -> VirtualService {
        VirtualService::cluster_ip(Protocol::Udp, sa("10.96.0.10:53"))
            .real_servers([sa("10.244.1.5:53")])
    }

    fn dns_tcp() -> VirtualService {
        VirtualService::cluster_ip(Protocol::Tcp, sa("10.96.0.10:53"))
            .real_servers([sa("10.244.1.5:53")])
    }

    /// The kernel state that `plan` makes from nothing.
    fn programmed(desired: &Desired) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for op in plan(desired, &Snapshot::default()) {
            snapshot.record(&op);
        }
        snapshot
    }

    #[test]
    fn a_new_service_is_its_address_then_the_service_then_each_endpoint() {
        let desired = Desired::new([web().affinity(10800)]);
        let key = tcp("10.96.0.20:80");
        assert_eq!(
            plan(&desired, &Snapshot::default()),
            vec![
                Op::AddAddress(ip("10.96.0.20")),
                Op::AddService(Service::new(key, "rr").persistent(10800)),
                Op::AddDestination(key, Destination::masquerade(sa("10.244.1.2:8080"), 1)),
                Op::AddDestination(key, Destination::masquerade(sa("10.244.2.3:8080"), 1)),
            ]
        );
    }

    #[test]
    fn a_kernel_that_matches_needs_nothing() {
        let desired = Desired::new([web(), dns(), dns_tcp().affinity(60)]);
        let snapshot = programmed(&desired);
        assert_eq!(snapshot.services.len(), 3);
        assert_eq!(snapshot.addresses.len(), 2);
        assert_eq!(plan(&desired, &snapshot), vec![]);
    }

    #[test]
    fn an_endpoint_change_touches_only_that_service() {
        let before = Desired::new([web(), dns(), dns_tcp()]);
        let snapshot = programmed(&before);
        let after = Desired::new([
            VirtualService::cluster_ip(Protocol::Tcp, sa("10.96.0.20:80"))
                .real_servers([sa("10.244.2.3:8080"), sa("10.244.3.4:8080")]),
            dns(),
            dns_tcp(),
        ]);
        let key = tcp("10.96.0.20:80");
        assert_eq!(
            plan(&after, &snapshot),
            vec![
                Op::AddDestination(key, Destination::masquerade(sa("10.244.3.4:8080"), 1)),
                Op::DeleteDestination(key, sa("10.244.1.2:8080")),
            ]
        );
    }

    #[test]
    fn turning_affinity_on_and_off_updates_the_service_alone() {
        let snapshot = programmed(&Desired::new([web()]));
        let key = tcp("10.96.0.20:80");
        let sticky = Desired::new([web().affinity(300)]);
        assert_eq!(
            plan(&sticky, &snapshot),
            vec![Op::UpdateService(Service::new(key, "rr").persistent(300))]
        );
        let sticky_snapshot = programmed(&sticky);
        assert_eq!(
            plan(&Desired::new([web()]), &sticky_snapshot),
            vec![Op::UpdateService(Service::new(key, "rr"))]
        );
    }

    #[test]
    fn a_changed_destination_is_updated_in_place() {
        let desired = Desired::new([web()]);
        let mut snapshot = programmed(&desired);
        let key = tcp("10.96.0.20:80");
        // Someone drained one server (weight 0), as kube-proxy does while terminating.
        let drained = Destination::masquerade(sa("10.244.1.2:8080"), 0);
        snapshot.record(&Op::UpdateDestination(key, drained));
        assert_eq!(
            plan(&desired, &snapshot),
            vec![Op::UpdateDestination(
                key,
                Destination::masquerade(sa("10.244.1.2:8080"), 1)
            )]
        );
    }

    #[test]
    fn a_shared_address_stays_until_its_last_service_goes() {
        let snapshot = programmed(&Desired::new([dns(), dns_tcp()]));
        let only_tcp = Desired::new([dns_tcp()]);
        assert_eq!(
            plan(&only_tcp, &snapshot),
            vec![Op::DeleteService(ServiceKey::new(
                Protocol::Udp,
                sa("10.96.0.10:53")
            ))]
        );
        assert_eq!(
            plan(&Desired::default(), &snapshot),
            vec![
                Op::DeleteService(tcp("10.96.0.10:53")),
                Op::DeleteService(ServiceKey::new(Protocol::Udp, sa("10.96.0.10:53"))),
                Op::DeleteAddress(ip("10.96.0.10")),
            ]
        );
    }

    #[test]
    fn strays_in_the_kernel_are_removed_and_node_ports_bind_nothing() {
        let mut snapshot = Snapshot::default();
        let stray = Service::new(tcp("10.96.9.9:9"), "wlc");
        snapshot.record(&Op::AddService(stray.clone()));
        snapshot.record(&Op::AddAddress(ip("10.96.9.9")));
        let node_port = VirtualService::node_port(Protocol::Tcp, sa("192.0.2.10:30080"))
            .real_servers([sa("10.244.1.2:8080")]);
        let key = node_port.key;
        let desired = Desired::new([node_port]);
        assert_eq!(
            plan(&desired, &snapshot),
            vec![
                Op::DeleteService(stray.key),
                Op::AddService(Service::new(key, "rr")),
                Op::AddDestination(key, Destination::masquerade(sa("10.244.1.2:8080"), 1)),
                Op::DeleteAddress(ip("10.96.9.9")),
            ]
        );
    }

    #[test]
    fn a_foreign_scheduler_is_replaced_by_ours() {
        let key = tcp("10.96.0.20:80");
        let current = KernelService {
            service: Service::new(key, "wlc"),
            destinations: Default::default(),
        };
        let want = web();
        let ops = plan_service(&key, Some(&want), Some(&current));
        assert_eq!(ops[0], Op::UpdateService(Service::new(key, "rr")));
        assert_eq!(ops.len(), 3);
    }

    #[test]
    fn a_scoped_plan_ignores_everything_outside_its_scope() {
        let before = Desired::new([web(), dns()]);
        let mut snapshot = programmed(&before);
        // Drift in a service outside the scope: not looked at.
        snapshot.record(&Op::DeleteDestination(
            ServiceKey::new(Protocol::Udp, sa("10.96.0.10:53")),
            sa("10.244.1.5:53"),
        ));
        let mut after = before.clone();
        after.remove(&tcp("10.96.0.20:80"));
        let scope = Scope {
            services: [tcp("10.96.0.20:80")].into(),
            addresses: [ip("10.96.0.20")].into(),
        };
        assert_eq!(
            plan_scope(&after, &snapshot, &scope),
            vec![
                Op::DeleteService(tcp("10.96.0.20:80")),
                Op::DeleteAddress(ip("10.96.0.20")),
            ]
        );
    }
}
