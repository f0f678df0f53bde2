//! The `berth-cni` binary against real network namespaces: a "node" namespace holds the
//! bridge, two "pod" namespaces get addresses and talk to each other through it. Needs
//! root; everything is removed when the test ends, even on failure.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;

use berth_cni::netlink::Netlink;
use berth_cni::netns;
use berth_cni::plugin::Error;

mod common;
use common::{plugin, Namespaces, Out};

fn conf(dir: &Path, extra: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"testnet","type":"berth-cni","bridge":"bt0","subnet":"10.99.7.0/24","mtu":1400,"dataDir":"{}"{extra}}}"#,
        dir.display()
    )
}

fn links_in(path: &Path) -> Vec<String> {
    let ns = netns::open(path).unwrap();
    netns::run_in(&ns, path, || -> Result<_, Error> {
        Ok(Netlink::open()?
            .links()?
            .into_iter()
            .map(|l| l.name)
            .collect::<Vec<_>>())
    })
    .map_err(|e| e.to_string())
    .unwrap()
}

#[test]
fn pods_get_addresses_talk_and_leave_nothing_behind() {
    let ns = Namespaces::new("cni", &["node", "a", "b"]);
    let data = tempfile::tempdir().unwrap();
    let conf = conf(data.path(), "");
    let a = plugin(ns.name(0), "ADD", "ctr-a", &ns.path(1), &conf);
    assert!(a.ok, "{}", a.json);
    let b = plugin(ns.name(0), "ADD", "ctr-b", &ns.path(2), &conf);
    assert!(b.ok, "{}", b.json);
    let ip = |o: &Out| o.json["ips"][0]["address"].as_str().unwrap().to_string();
    assert_eq!(ip(&a), "10.99.7.2/24");
    assert_eq!(ip(&b), "10.99.7.3/24");
    assert_eq!(a.json["ips"][0]["gateway"], "10.99.7.1");
    assert_eq!(
        a.json["interfaces"][1]["sandbox"],
        ns.path(1).display().to_string()
    );

    // A retried ADD gives the same address.
    let again = plugin(ns.name(0), "ADD", "ctr-a", &ns.path(1), &conf);
    assert_eq!(ip(&again), "10.99.7.2/24");

    // CHECK agrees.
    assert!(plugin(ns.name(0), "CHECK", "ctr-a", &ns.path(1), &conf).ok);

    // Pod a reaches pod b over the bridge.
    let pb = ns.path(2);
    let pa = ns.path(1);
    let server = std::thread::spawn(move || {
        let f = netns::open(&pb).unwrap();
        netns::run_in(&f, &pb, || -> Result<String, Error> {
            let l = TcpListener::bind((Ipv4Addr::new(10, 99, 7, 3), 7000)).unwrap();
            let (mut s, peer) = l.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            Ok(format!(
                "{} from {}",
                String::from_utf8_lossy(&buf),
                peer.ip()
            ))
        })
        .unwrap()
    });
    let f = netns::open(&pa).unwrap();
    netns::run_in(&f, &pa, || -> Result<(), Error> {
        for _ in 0..50 {
            if let Ok(mut s) = TcpStream::connect((Ipv4Addr::new(10, 99, 7, 3), 7000)) {
                s.write_all(b"hello").unwrap();
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("pod a never reached pod b");
    })
    .unwrap();
    assert_eq!(server.join().unwrap(), "hello from 10.99.7.2");

    // DEL, twice: no veth and no reservation left; the pod's interface is gone too.
    for _ in 0..2 {
        assert!(plugin(ns.name(0), "DEL", "ctr-a", &ns.path(1), &conf).ok);
        assert!(plugin(ns.name(0), "DEL", "ctr-b", &ns.path(2), &conf).ok);
    }
    let node_links = links_in(&ns.path(0));
    assert!(
        !node_links.iter().any(|l| l.starts_with("veth")),
        "{node_links:?}"
    );
    assert!(!links_in(&ns.path(1)).contains(&"eth0".to_string()));
    let left: Vec<_> = std::fs::read_dir(data.path().join("testnet"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<Ipv4Addr>().ok())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // DEL of a pod whose namespace is gone is still fine.
    assert!(
        plugin(
            ns.name(0),
            "DEL",
            "ctr-gone",
            Path::new("/run/netns/bt-none"),
            &conf
        )
        .ok
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_disturbs_nobody() {
    let ns = Namespaces::new("cnibad", &["node", "a"]);
    let data = tempfile::tempdir().unwrap();
    let good = conf(data.path(), "");
    let a = plugin(ns.name(0), "ADD", "ctr-a", &ns.path(1), &good);
    assert!(a.ok, "{}", a.json);

    let typo = conf(data.path(), r#","hairpinMode":true"#);
    let e = plugin(ns.name(0), "ADD", "ctr-x", &ns.path(1), &typo);
    assert!(!e.ok);
    assert_eq!(e.json["code"], 7);
    assert!(
        e.json["msg"]
            .as_str()
            .unwrap()
            .contains("unknown field `hairpinMode`"),
        "{}",
        e.json
    );

    let missing = plugin(
        ns.name(0),
        "ADD",
        "ctr-y",
        Path::new("/run/netns/bt-does-not-exist"),
        &good,
    );
    assert!(!missing.ok);
    assert_eq!(
        missing.json["msg"],
        "network namespace /run/netns/bt-does-not-exist does not exist"
    );

    // Another range on the same bridge is refused before anything changes.
    let other = conf(data.path(), "").replace("10.99.7.0/24", "10.99.0.0/16");
    let clash = plugin(ns.name(0), "ADD", "ctr-z", &ns.path(1), &other);
    assert!(!clash.ok);
    assert!(
        clash.json["msg"].as_str().unwrap().contains("overlaps"),
        "{}",
        clash.json
    );

    // The first pod is untouched and nothing was reserved for the failures.
    assert!(plugin(ns.name(0), "CHECK", "ctr-a", &ns.path(1), &good).ok);
    let reserved: Vec<_> = std::fs::read_dir(data.path().join("testnet"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<Ipv4Addr>().ok())
        .collect();
    assert_eq!(reserved, vec![Ipv4Addr::new(10, 99, 7, 2)]);
    assert!(plugin(ns.name(0), "DEL", "ctr-a", &ns.path(1), &good).ok);
}
