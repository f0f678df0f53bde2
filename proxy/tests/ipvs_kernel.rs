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
        assert_eq!(
            sorted(client.destinations(&key).unwrap()),
            vec![a, b_drained]
        );

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

/// Run `ip` (iproute2) with `args` in the calling thread's network namespace.
fn ip_cmd(args: &str) {
    let status = std::process::Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .unwrap_or_else(|e| panic!("run ip {args}: {e}"));
    assert!(status.success(), "ip {args}: {status}");
}

/// Two real servers in a namespace of their own behind a veth pair; each answers every
/// connection with its own address. Returns (address, connections served) per server.
fn serve(
    addrs: [&'static str; 2],
    ready: std::sync::mpsc::Sender<i32>,
    configured: std::sync::mpsc::Receiver<()>,
    stop: std::sync::mpsc::Receiver<()>,
) -> Vec<(SocketAddr, usize)> {
    use std::io::Write;
    unshare(CloneFlags::CLONE_NEWNET).expect("unshare the servers' network namespace");
    ready.send(nix::unistd::gettid().as_raw()).unwrap();
    configured.recv().unwrap(); // the veth end has been moved here
    ip_cmd("link set lo up");
    for addr in addrs {
        ip_cmd(&format!("addr add {addr}/24 dev veth-s"));
    }
    ip_cmd("link set veth-s up");
    ip_cmd("route add default via 10.244.1.1");
    let listeners: Vec<TcpListener> = addrs
        .iter()
        .map(|a| {
            let l = TcpListener::bind(SocketAddr::new(ip(a), 8080)).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        })
        .collect();
    let mut served = vec![0; listeners.len()];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while stop.try_recv().is_err() && std::time::Instant::now() < deadline {
        for (i, listener) in listeners.iter().enumerate() {
            if let Ok((mut conn, _)) = listener.accept() {
                conn.set_nonblocking(false).unwrap();
                conn.write_all(addrs[i].as_bytes()).unwrap();
                served[i] += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    addrs
        .iter()
        .map(|a| SocketAddr::new(ip(a), 8080))
        .zip(served)
        .collect()
}

/// Which real server answered one connection to `vip`.
fn ask(vip: SocketAddr) -> String {
    use std::io::Read;
    let mut conn = std::net::TcpStream::connect_timeout(&vip, std::time::Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("connect to {vip}: {e}"));
    conn.set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn ipvs_forwards_connections_round_robin_and_follows_endpoint_changes() {
    in_private_netns(|| {
        if connect_or_skip("ipvs_forwards_connections_round_robin_and_follows_endpoint_changes")
            .is_none()
        {
            return;
        }
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (configured_tx, configured_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let servers = s.spawn(|| {
                serve(
                    ["10.244.1.2", "10.244.1.3"],
                    ready_tx,
                    configured_rx,
                    stop_rx,
                )
            });
            let tid = ready_rx.recv().unwrap();
            ip_cmd(&format!(
                "link add veth-c type veth peer name veth-s netns {tid}"
            ));
            ip_cmd("addr add 10.244.1.1/24 dev veth-c");
            ip_cmd("link set veth-c up");
            configured_tx.send(()).unwrap();
            ipvs::write_sysctls(std::path::Path::new("/proc/sys")).unwrap();

            let mut ipvs = Ipvs::connect(dummy::DEFAULT_NAME).unwrap();
            let vip = sa("10.96.0.20:80");
            let web = VirtualService::cluster_ip(Protocol::Tcp, vip)
                .real_servers([sa("10.244.1.2:8080"), sa("10.244.1.3:8080")]);
            ipvs.sync(Desired::new([web.clone()])).unwrap();
            // The servers' namespace may still be coming up: wait for the first answer.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let mut answers = Vec::new();
            while answers.is_empty() {
                match std::panic::catch_unwind(|| ask(vip)) {
                    Ok(a) => answers.push(a),
                    Err(_) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(100))
                    }
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            answers.extend((0..3).map(|_| ask(vip)));
            let to_2 = answers.iter().filter(|a| *a == "10.244.1.2").count();
            let to_3 = answers.iter().filter(|a| *a == "10.244.1.3").count();
            assert_eq!(
                (to_2, to_3),
                (2, 2),
                "round robin over two servers: {answers:?}"
            );

            // One endpoint goes away: every new connection goes to the other one.
            let web3 = VirtualService {
                real_servers: [sa("10.244.1.3:8080")].into(),
                ..web
            };
            ipvs.update(&[], vec![web3]).unwrap();
            let after: Vec<String> = (0..3).map(|_| ask(vip)).collect();
            assert_eq!(after, vec!["10.244.1.3"; 3]);

            ipvs.sync(Desired::default()).unwrap();
            stop_tx.send(()).unwrap();
            let served = servers.join().unwrap();
            assert_eq!(
                served,
                vec![(sa("10.244.1.2:8080"), 2), (sa("10.244.1.3:8080"), 5)]
            );
        });
    });
}
