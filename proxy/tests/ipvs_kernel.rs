//! The IPVS back end against a real kernel, each test in a network namespace of its own
//! (a thread that unshares `CLONE_NEWNET`): everything it creates goes away with the
//! thread, even when an assertion fails.
//!
//! The dummy interface test runs anywhere (as root). The IPVS tests need `ip_vs`: where
//! the kernel has no IPVS family they check that this is really so and stop, unless
//! `BERTH_REQUIRE_IPVS=1` (set by `tests/qemu-ipvs.sh`, whose guest kernel has it).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener};

use berth_proxy::ipvs::dummy::LinkKind;
use berth_proxy::ipvs::netlink::{Error as NlError, Info};
use berth_proxy::ipvs::{
    self, dummy, read_kernel, Desired, Destination, DummyLink, Ipvs, IpvsNetlink, Op, Protocol,
    Service, ServiceKey, VirtualService,
};
use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};

fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare a network namespace (needs root)");
            // With loopback down the kernel lets a socket bind any address; up, only
            // local ones, which is what `is_local` relies on.
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .expect("run ip link set lo up");
            assert!(up.success(), "ip link set lo up: {up}");
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Whether an address is local: binding to it only works if it is.
fn is_local(addr: IpAddr) -> bool {
    TcpListener::bind(SocketAddr::new(addr, 0)).is_ok()
}

/// The dummy interface, or where the kernel has no dummy driver (this repository's
/// development machines), an ifb device: the address handling is the same.
fn address_link() -> (DummyLink, LinkKind) {
    match DummyLink::ensure(dummy::DEFAULT_NAME) {
        Ok(link) => (link, LinkKind::Dummy),
        Err(e) if e.raw_os_error() == Some(Errno::EOPNOTSUPP as i32) => {
            assert!(
                std::env::var_os("BERTH_REQUIRE_IPVS").is_none(),
                "BERTH_REQUIRE_IPVS is set but the kernel cannot create a dummy interface"
            );
            assert!(
                e.to_string().contains("create Dummy interface berth-ipvs0"),
                "{e}"
            );
            let link = DummyLink::ensure_kind(dummy::DEFAULT_NAME, LinkKind::Ifb).unwrap();
            (link, LinkKind::Ifb)
        }
        Err(e) => panic!("create the dummy interface: {e}"),
    }
}

#[test]
fn dummy_interface_holds_cluster_ips_as_local_addresses() {
    in_private_netns(|| {
        let (mut link, kind) = address_link();
        assert!(link.index() > 0);
        assert_eq!(
            DummyLink::ensure_kind(dummy::DEFAULT_NAME, kind)
                .unwrap()
                .index(),
            link.index(),
            "a second ensure finds the same interface"
        );
        assert!(link.addresses().unwrap().is_empty());
        assert!(!is_local(ip("10.96.0.1")));

        for addr in ["10.96.0.1", "10.96.0.10", "fd00:96::a"] {
            link.add_address(ip(addr)).unwrap();
        }
        link.add_address(ip("10.96.0.1"))
            .expect("adding an address twice is no error");
        let want: BTreeSet<IpAddr> = ["10.96.0.1", "10.96.0.10", "fd00:96::a"]
            .into_iter()
            .map(ip)
            .collect();
        assert_eq!(link.addresses().unwrap(), want);
        // The interface is down, yet the kernel treats the addresses as its own.
        assert!(is_local(ip("10.96.0.1")));

        link.delete_address(ip("10.96.0.1")).unwrap();
        link.delete_address(ip("10.96.0.1"))
            .expect("deleting a missing address is no error");
        assert!(!link.addresses().unwrap().contains(&ip("10.96.0.1")));
        assert!(!is_local(ip("10.96.0.1")));

        let err = DummyLink::ensure("lo").unwrap_err();
        assert_eq!(
            err.to_string(),
            "interface lo: exists as kind None, not Dummy"
        );

        link.delete().unwrap();
        assert!(!is_local(ip("10.96.0.10")));
    });
}

/// Connect to IPVS, or tell why not: `None` where the kernel has no ip_vs (checked).
fn connect_or_skip(test: &str) -> Option<IpvsNetlink> {
    match IpvsNetlink::connect() {
        Ok(client) => Some(client),
        Err(NlError::FamilyNotFound) => {
            assert!(
                std::env::var_os("BERTH_REQUIRE_IPVS").is_none(),
                "BERTH_REQUIRE_IPVS is set but the kernel has no IPVS family"
            );
            assert!(
                !std::path::Path::new("/proc/net/ip_vs").exists(),
                "/proc/net/ip_vs exists, yet resolving the IPVS family failed"
            );
            skip_note(test);
            None
        }
        Err(e) => panic!("connect to ipvs: {e}"),
    }
}

#[allow(clippy::print_stderr)]
fn skip_note(test: &str) {
    eprintln!("{test}: no ip_vs in this kernel; checked that it is absent, skipping the rest");
}

/// The kernel lists a service's destinations newest first.
fn sorted(mut dests: Vec<Destination>) -> Vec<Destination> {
    dests.sort();
    dests
}

#[test]
fn ipvs_client_round_trip() {
    in_private_netns(|| {
        let Some(mut client) = connect_or_skip("ipvs_client_round_trip") else {
            return;
        };
        let Info { version, .. } = client.info().unwrap();
        assert!(version >= 0x010200, "ipvs version {version:#x}");
        client.flush().unwrap();
        assert_eq!(client.services().unwrap(), vec![]);

        let key = ServiceKey::new(Protocol::Tcp, sa("10.96.0.20:80"));
        let service = Service::new(key, "rr").persistent(10800);
        client.add_service(&service).unwrap();
        let err = client.add_service(&service).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::EEXIST as i32), "{err}");
        let a = Destination::masquerade(sa("10.244.1.2:8080"), 1);
        let b = Destination::masquerade(sa("10.244.2.3:8080"), 1);
        client.add_destination(&key, &a).unwrap();
        client.add_destination(&key, &b).unwrap();

        assert_eq!(client.services().unwrap(), vec![service.clone()]);
        assert_eq!(sorted(client.destinations(&key).unwrap()), vec![a, b]);

        let udp = ServiceKey::new(Protocol::Udp, sa("10.96.0.10:53"));
        client.add_service(&Service::new(udp, "rr")).unwrap();
        assert_eq!(client.services().unwrap().len(), 2);

        let b_drained = Destination::masquerade(b.addr, 0);
        client.update_destination(&key, &b_drained).unwrap();
        client.update_service(&Service::new(key, "rr")).unwrap();
        let services = client.services().unwrap();
        let tcp = services.iter().find(|s| s.key == key).unwrap();
        assert!(!tcp.is_persistent(), "{tcp:?}");
        assert_eq!(sorted(client.destinations(&key).unwrap()), vec![a, b_drained]);

        client.delete_destination(&key, a.addr).unwrap();
        assert_eq!(client.destinations(&key).unwrap(), vec![b_drained]);
        client.delete_service(&key).unwrap();
        let err = client.delete_service(&key).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::ESRCH as i32), "{err}");
        assert_eq!(client.destinations(&key).unwrap(), vec![]);
        client.flush().unwrap();
        assert_eq!(client.services().unwrap(), vec![]);
    });
}

#[test]
fn ipvs_back_end_syncs_and_updates_the_kernel() {
    in_private_netns(|| {
        if connect_or_skip("ipvs_back_end_syncs_and_updates_the_kernel").is_none() {
            return;
        }
        let mut ipvs = Ipvs::connect(dummy::DEFAULT_NAME).unwrap();
        let web = VirtualService::cluster_ip(Protocol::Tcp, sa("10.96.0.20:80"))
            .affinity(10800)
            .real_servers([sa("10.244.1.2:8080"), sa("10.244.2.3:8080")]);
        let dns = VirtualService::cluster_ip(Protocol::Udp, sa("10.96.0.10:53"))
            .real_servers([sa("10.244.1.5:53")]);
        ipvs.sync(Desired::new([web.clone(), dns.clone()])).unwrap();
        assert!(is_local(ip("10.96.0.20")));

        let mut kernel = IpvsNetlink::connect().unwrap();
        let mut link = DummyLink::ensure(dummy::DEFAULT_NAME).unwrap();
        let snapshot = read_kernel(&mut kernel, &mut link).unwrap();
        assert_eq!(&snapshot, ipvs.snapshot().unwrap());
        assert_eq!(ipvs::plan(ipvs.desired(), &snapshot), vec![]);

        let web2 = web.clone().real_servers([sa("10.244.3.4:8080")]);
        let ops = ipvs.update(&[dns.key], vec![web2.clone()]).unwrap();
        assert_eq!(
            ops,
            vec![
                Op::AddDestination(web.key, Destination::masquerade(sa("10.244.3.4:8080"), 1)),
                Op::DeleteService(dns.key),
                Op::DeleteAddress(ip("10.96.0.10")),
            ]
        );
        let snapshot = read_kernel(&mut kernel, &mut link).unwrap();
        assert_eq!(&snapshot, ipvs.snapshot().unwrap());
        assert_eq!(snapshot.services[&web.key].destinations.len(), 3);

        ipvs.sync(Desired::default()).unwrap();
        let snapshot = read_kernel(&mut kernel, &mut link).unwrap();
        assert!(
            snapshot.services.is_empty() && snapshot.addresses.is_empty(),
            "{snapshot:?}"
        );
    });
}
