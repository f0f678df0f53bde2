//! Two nodes as network namespaces joined by a veth "wire", each with a pod from
//! `berth-cni`: the pods reach each other by IP over real VXLAN, then over direct
//! routes, and tearing the overlay down leaves no route or device. Needs root.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};

use berth_cni::netlink::{Netlink, RTPROT_BERTH};
use berth_cni::overlay::{self, Mode, NodeNet, Overlay};

mod common;
use common::{plugin, Namespaces};

const N1: usize = 0;
const N2: usize = 1;
const P1: usize = 2;
const P2: usize = 3;

fn node(name: &str, ip: [u8; 4], cidr: &str) -> NodeNet {
    NodeNet {
        name: name.into(),
        ip: Ipv4Addr::from(ip),
        pod_cidr: cidr.parse().unwrap(),
    }
}

fn add_pod(ns: &Namespaces, node: usize, pod: usize, subnet: &str, data: &std::path::Path) {
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"ovl","type":"berth-cni","subnet":"{subnet}","mtu":1450,"dataDir":"{}"}}"#,
        data.display()
    );
    let out = plugin(
        ns.name(node),
        "ADD",
        &format!("pod{pod}"),
        &ns.path(pod),
        &conf,
    );
    assert!(out.ok, "{}", out.json);
}

/// Connect from pod `from` to `to_ip`:7000 where pod `to` listens; the address the
/// server saw.
fn talk(ns: &Namespaces, from: usize, to: usize, to_ip: Ipv4Addr) -> Ipv4Addr {
    std::thread::scope(|s| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let server = s.spawn(move || {
            ns.run(to, move || {
                let l = TcpListener::bind((to_ip, 7000)).unwrap();
                ready_tx.send(()).unwrap();
                let (mut c, peer) = l.accept().unwrap();
                let mut b = [0u8; 2];
                c.read_exact(&mut b).unwrap();
                match peer.ip() {
                    std::net::IpAddr::V4(ip) => Ok(ip),
                    other => panic!("{other}"),
                }
            })
        });
        ready_rx.recv().unwrap();
        ns.run(from, move || {
            let mut c = TcpStream::connect_timeout(
                &(to_ip, 7000).into(),
                std::time::Duration::from_secs(5),
            )
            .expect("the pod on the other node answers");
            c.write_all(b"hi").unwrap();
            Ok(())
        });
        server.join().unwrap()
    })
}

#[test]
fn pods_on_two_nodes_talk_over_vxlan_and_direct_routes() {
    let ns = Namespaces::new("ovl", &["n1", "n2", "p1", "p2"]);
    // The wire between the nodes.
    ns.exec(
        N1,
        &[
            "ip",
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(N2),
        ],
    );
    for (i, ip) in [(N1, "192.168.77.1/24"), (N2, "192.168.77.2/24")] {
        ns.exec(i, &["ip", "addr", "add", ip, "dev", "eth0"]);
        ns.exec(i, &["ip", "link", "set", "eth0", "up"]);
        ns.exec(i, &["ip", "link", "set", "lo", "up"]);
        ns.exec(i, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    }
    let data = tempfile::tempdir().unwrap();
    add_pod(&ns, N1, P1, "10.98.1.0/24", &data.path().join("n1"));
    add_pod(&ns, N2, P2, "10.98.2.0/24", &data.path().join("n2"));
    let a = node("n1", [192, 168, 77, 1], "10.98.1.0/24");
    let b = node("n2", [192, 168, 77, 2], "10.98.2.0/24");
    let nodes = [a.clone(), b.clone()];

    for mode in [Mode::Vxlan, Mode::Direct] {
        for (i, me) in [(N1, &a), (N2, &b)] {
            let nodes = nodes.clone();
            let me = me.clone();
            let (first, again) = ns.run(i, move || {
                let mut nl = Netlink::open()?;
                let ovl = Overlay::new(mode, me.clone(), 1450);
                let dev = ovl.ensure_device(&mut nl)?;
                let plan = overlay::plan(mode, &me, &nodes, dev);
                let first = ovl.apply(&mut nl, &plan)?;
                // Applying the same plan again finds everything in place.
                let again = ovl.apply(&mut nl, &plan)?;
                Ok((first, again))
            });
            assert!(first.added > 0, "{mode:?}: {first:?}");
            assert_eq!(again, overlay::Applied::default(), "{mode:?}");
        }
        // No NAT: each side sees the other pod's own address.
        assert_eq!(
            talk(&ns, P1, P2, Ipv4Addr::new(10, 98, 2, 2)),
            Ipv4Addr::new(10, 98, 1, 2),
            "{mode:?}"
        );
        assert_eq!(
            talk(&ns, P2, P1, Ipv4Addr::new(10, 98, 1, 2)),
            Ipv4Addr::new(10, 98, 2, 2),
            "{mode:?}"
        );
    }

    // A node that goes away takes its entries with it; teardown leaves nothing.
    let left = ns.run(N1, move || {
        let mut nl = Netlink::open()?;
        let ovl = Overlay::new(Mode::Vxlan, a.clone(), 1450);
        let dev = ovl.ensure_device(&mut nl)?;
        let plan = overlay::plan(Mode::Vxlan, &a, std::slice::from_ref(&a), dev);
        ovl.apply(&mut nl, &plan)?;
        let ours = nl
            .routes()?
            .into_iter()
            .filter(|r| r.protocol == RTPROT_BERTH)
            .count();
        let vx = nl.must_link(overlay::VXLAN_DEVICE)?;
        let entries = nl.neighs(&vx)?.len()
            + nl.fdbs(&vx)?
                .iter()
                .filter(|n| !n.ip.is_unspecified())
                .count();
        ovl.teardown(&mut nl)?;
        Ok((ours, entries, nl.link(overlay::VXLAN_DEVICE)?.is_some()))
    });
    assert_eq!(left, (0, 0, false));
}
