//! The IPVS [`Dataplane`] against a real kernel, each test in a network namespace of its
//! own (a thread that unshares `CLONE_NEWNET`; pods are threads with namespaces of their
//! own behind routed veths): everything a test creates goes away with its threads, even
//! when an assertion fails.
//!
//! Traffic needs `ip_vs`: where the kernel has no IPVS family the traffic test checks that
//! this is really so and stops, unless `BERTH_REQUIRE_IPVS=1` (set by
//! `tests/qemu-ipvs.sh`, whose guest kernel has it). The cleanup test runs anywhere.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use berth_proxy::ipvs::dummy::{self, LinkKind};
use berth_proxy::ipvs::netlink::Error as NlError;
use berth_proxy::ipvs::{read_kernel, DummyLink, IpvsNetlink};
use berth_proxy::{
    model::diff, Change, Dataplane, Endpoint, IpvsConfig, IpvsDataplane, Protocol, ServicePortInfo,
    ServicePortName, State,
};
use nix::sched::{unshare, CloneFlags};

const TABLE: &str = berth_proxy::ipvs::dataplane::TABLE;
const NODE_IP: &str = "192.0.2.1";

fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare a network namespace (needs root)");
            ip_cmd("link set lo up");
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Run `ip` (iproute2) in the calling thread's network namespace.
fn ip_cmd(args: &str) {
    let status = std::process::Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .unwrap_or_else(|e| panic!("run ip {args}: {e}"));
    assert!(status.success(), "ip {args}: {status}");
}

/// Run a command; its stdout, or why it failed.
fn sh(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn nft_list(what: &[&str]) -> Result<String, String> {
    let mut args = vec!["/usr/sbin/nft", "list"];
    args.extend_from_slice(what);
    sh(&args)
}

fn ipvs_present(test: &str) -> bool {
    match IpvsNetlink::connect() {
        Ok(_) => true,
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
            false
        }
        Err(e) => panic!("connect to ipvs: {e}"),
    }
}

#[allow(clippy::print_stderr)]
fn skip_note(test: &str) {
    eprintln!("{test}: no ip_vs in this kernel; checked that it is absent, skipping the rest");
}

type Ask = (SocketAddr, Sender<std::io::Result<String>>);

/// A pod: a network namespace of its own behind a routed veth (`gateway` on the node's
/// end), serving `<its ip> <peer ip>` on port 8080 and asking Services on request.
struct Pod {
    ip: Ipv4Addr,
    gateway: Ipv4Addr,
    served: Arc<AtomicUsize>,
    asks: Option<Sender<Ask>>,
    thread: Option<JoinHandle<()>>,
}

impl Pod {
    /// Starts the pod's thread and wires it to the calling thread's namespace.
    fn start(ip: &str, gateway: &str, veth: &str) -> Pod {
        let (ip, gateway): (Ipv4Addr, Ipv4Addr) = (ip.parse().unwrap(), gateway.parse().unwrap());
        let (tid_tx, tid_rx) = channel();
        let (moved_tx, moved_rx) = channel::<()>();
        let (up_tx, up_rx) = channel::<()>();
        let (asks_tx, asks_rx) = channel::<Ask>();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        let thread = std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare the pod's network namespace");
            tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
            if moved_rx.recv().is_err() {
                return;
            }
            ip_cmd("link set lo up");
            ip_cmd(&format!("addr add {ip}/32 dev eth0"));
            ip_cmd("link set eth0 up");
            ip_cmd(&format!("route add {gateway} dev eth0"));
            ip_cmd(&format!("route add default via {gateway}"));
            pod_main(ip, counter, up_tx, asks_rx);
        });
        let tid: i32 = tid_rx.recv().unwrap();
        ip_cmd(&format!(
            "link add {veth} type veth peer name eth0 netns {tid}"
        ));
        ip_cmd(&format!("addr add {gateway}/32 dev {veth}"));
        ip_cmd(&format!("link set {veth} up"));
        ip_cmd(&format!("route add {ip}/32 dev {veth} src {gateway}"));
        moved_tx.send(()).unwrap();
        up_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the pod came up");
        Pod {
            ip,
            gateway,
            served,
            asks: Some(asks_tx),
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            ip: self.ip,
            port: 8080,
        }
    }

    /// One connection to `to` from inside the pod: `<server> <peer it saw>`.
    fn ask(&self, to: SocketAddr) -> String {
        self.ask_result(to)
            .unwrap_or_else(|e| panic!("{} asking {to}: {e}", self.ip))
    }

    fn ask_result(&self, to: SocketAddr) -> std::io::Result<String> {
        let (tx, rx) = channel();
        self.asks.as_ref().unwrap().send((to, tx)).unwrap();
        rx.recv().unwrap()
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.asks = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The pod's server (a thread of its own in the pod's namespace) and its client loop.
fn pod_main(ip: Ipv4Addr, served: Arc<AtomicUsize>, up: Sender<()>, asks: Receiver<Ask>) {
    let listener = TcpListener::bind((ip, 8080)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    // Threads start in the namespace of the thread that spawns them: this pod's.
    let server = std::thread::spawn(move || {
        while !stopped.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut conn, peer)) => {
                    conn.set_nonblocking(false).unwrap();
                    let _ = write!(conn, "{ip} {}", peer.ip());
                    served.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    up.send(()).unwrap();
    for (to, reply) in asks {
        let _ = reply.send(ask(to));
    }
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
}

/// One connection to `to`: what the server said.
fn ask(to: SocketAddr) -> std::io::Result<String> {
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
    conn.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    Ok(answer)
}

/// `(server, peer it saw)` -> count, over `n` connections made by `f`.
fn tally(n: usize, f: impl Fn() -> String) -> BTreeMap<(String, String), usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let answer = f();
        let (server, peer) = answer.split_once(' ').expect("`server peer`");
        *seen
            .entry((server.to_string(), peer.to_string()))
            .or_default() += 1;
    }
    seen
}

fn count(seen: &[(&Ipv4Addr, &Ipv4Addr, usize)]) -> BTreeMap<(String, String), usize> {
    seen.iter()
        .map(|(s, p, n)| ((s.to_string(), p.to_string()), *n))
        .collect()
}

fn service(vip: &str, node_port: Option<u16>, endpoints: &[Endpoint]) -> ServicePortInfo {
    ServicePortInfo {
        cluster_ip: vip.parse().unwrap(),
        port: 80,
        protocol: Protocol::Tcp,
        node_port,
        affinity_timeout: None,
        endpoints: endpoints.to_vec(),
    }
}

fn config() -> IpvsConfig {
    IpvsConfig {
        node_ips: vec![NODE_IP.parse().unwrap()],
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        ..IpvsConfig::default()
    }
}

/// Packets the table's reject chain refused so far.
fn rejected() -> u64 {
    let chain = nft_list(&["chain", "ip", TABLE, "reject-chain"]).unwrap();
    chain
        .split("counter packets ")
        .skip(1)
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

/// A connection to `to` is refused at once, by the table (IPVS alone would answer with
/// an ICMP port-unreachable as well: the reject chain's counters tell them apart).
fn refused_at_once(to: SocketAddr) {
    let before = rejected();
    let start = Instant::now();
    let err = ask(to).expect_err("a Service without endpoints refuses connections");
    let took = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{to}: {err}");
    assert!(took < Duration::from_secs(1), "{to} refused after {took:?}");
    assert_eq!(
        rejected(),
        before + 1,
        "{to} was not refused by the reject chain"
    );
}

#[test]
fn ipvs_dataplane_balances_masquerades_refuses_and_cleans_up() {
    in_private_netns(|| {
        if !ipvs_present("ipvs_dataplane_balances_masquerades_refuses_and_cleans_up") {
            return;
        }
        ip_cmd(&format!("addr add {NODE_IP}/32 dev lo"));
        let a = Pod::start("10.244.1.2", "10.244.1.1", "veth-a");
        let b = Pod::start("10.244.2.2", "10.244.2.1", "veth-b");
        let vip: SocketAddr = "10.96.0.20:80".parse().unwrap();
        let empty_vip: SocketAddr = "10.96.0.30:80".parse().unwrap();
        let node_port: SocketAddr = format!("{NODE_IP}:30080").parse().unwrap();
        let web = ServicePortName::new("default", "web", "");
        let empty = ServicePortName::new("default", "empty", "");
        let mut state: State = [
            (
                web.clone(),
                service("10.96.0.20", Some(30080), &[a.endpoint(), b.endpoint()]),
            ),
            (empty.clone(), service("10.96.0.30", None, &[])),
        ]
        .into();

        let mut dp = IpvsDataplane::new(config());
        dp.sync_full(&state).unwrap();
        // What the executor believes is what the kernel holds.
        let mut kernel = IpvsNetlink::connect().unwrap();
        let mut link = DummyLink::ensure(dummy::DEFAULT_NAME).unwrap();
        let snapshot = read_kernel(&mut kernel, &mut link).unwrap();
        assert_eq!(Some(&snapshot), dp.ipvs().unwrap().snapshot());
        assert_eq!(snapshot.services.len(), 3, "{snapshot:?}");

        // From the node (not the pod network): round robin over both pods, masqueraded
        // to the node's address on each pod's link (else they would see the ClusterIP,
        // the source the node picks for a local address).
        assert_eq!(
            tally(4, || ask(vip).unwrap()),
            count(&[(&a.ip, &a.gateway, 2), (&b.ip, &b.gateway, 2)])
        );
        // Through the NodePort: the same.
        assert_eq!(
            tally(2, || ask(node_port).unwrap()),
            count(&[(&a.ip, &a.gateway, 1), (&b.ip, &b.gateway, 1)])
        );
        // From pod a: reaching itself is masqueraded (hairpin), reaching b is not.
        assert_eq!(
            tally(4, || a.ask(vip)),
            count(&[(&a.ip, &a.gateway, 2), (&b.ip, &a.ip, 2)])
        );
        let served_a = a.served();
        assert_eq!(served_a, 5);

        // A Service without endpoints is refused at once, by the table's reject, from
        // the node and from a pod.
        refused_at_once(empty_vip);
        let before = rejected();
        let err = a.ask_result(empty_vip).expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        assert_eq!(rejected(), before + 1);
        let set = nft_list(&["set", "ip", TABLE, "no-endpoints"]).unwrap();
        assert!(set.contains("10.96.0.30 . tcp . 80"), "{set}");

        // Pod a leaves web: it gets no more connections, b gets them all.
        let before = state.clone();
        state.insert(
            web.clone(),
            service("10.96.0.20", Some(30080), &[b.endpoint()]),
        );
        // And the empty Service gets pod a.
        state.insert(empty.clone(), service("10.96.0.30", None, &[a.endpoint()]));
        dp.apply(&diff(&before, &state)).unwrap();
        assert_eq!(
            tally(3, || ask(vip).unwrap()),
            count(&[(&b.ip, &b.gateway, 3)])
        );
        assert_eq!(tally(2, || a.ask(vip)), count(&[(&b.ip, &a.ip, 2)]));
        assert_eq!(a.served(), served_a, "a removed endpoint got connections");
        assert_eq!(
            tally(1, || ask(empty_vip).unwrap()),
            count(&[(&a.ip, &a.gateway, 1)])
        );

        // Back to no endpoints: refused again.
        let before = state.clone();
        state.insert(empty.clone(), service("10.96.0.30", None, &[]));
        let changes = diff(&before, &state);
        assert!(matches!(changes[..], [Change::Update { .. }]));
        dp.apply(&changes).unwrap();
        refused_at_once(empty_vip);
        assert_eq!(
            snapshot_services(&mut kernel, &mut link),
            dp.ipvs().unwrap().snapshot().unwrap().services.len()
        );

        // Cleanup, from a fresh instance: no IPVS service, no interface, no table.
        drop(dp);
        IpvsDataplane::new(config()).cleanup().unwrap();
        assert_eq!(kernel.services().unwrap(), vec![]);
        assert!(!dummy::exists(dummy::DEFAULT_NAME).unwrap());
        assert!(nft_list(&["table", "ip", TABLE]).is_err());
        // The node's own address is not ours to remove.
        assert!(TcpListener::bind((NODE_IP.parse::<IpAddr>().unwrap(), 0)).is_ok());
    });
}

fn snapshot_services(kernel: &mut IpvsNetlink, link: &mut DummyLink) -> usize {
    read_kernel(kernel, link).unwrap().services.len()
}

/// Runs on any kernel: where there is no ip_vs, the full sync fails after writing the
/// table, and an interface of the dummy's name stands for one an earlier run left.
#[test]
fn cleanup_removes_the_table_the_interface_and_every_ipvs_service() {
    in_private_netns(|| {
        let cfg = IpvsConfig {
            proc_sys: None,
            ..config()
        };
        let state: State = [(
            ServicePortName::new("default", "web", ""),
            service(
                "10.96.0.20",
                Some(30080),
                &[Endpoint {
                    ip: "10.244.1.2".parse().unwrap(),
                    port: 8080,
                }],
            ),
        )]
        .into();
        let mut dp = IpvsDataplane::new(cfg.clone());
        let ipvs = match dp.sync_full(&state) {
            Ok(()) => true,
            Err(e) => {
                assert!(e.to_string().contains("IPVS"), "{e}");
                assert!(std::env::var_os("BERTH_REQUIRE_IPVS").is_none(), "{e}");
                let kind = match DummyLink::ensure(dummy::DEFAULT_NAME) {
                    Ok(_) => LinkKind::Dummy,
                    Err(_) => LinkKind::Ifb,
                };
                DummyLink::ensure_kind(dummy::DEFAULT_NAME, kind).unwrap();
                false
            }
        };
        let set = nft_list(&["set", "ip", TABLE, "cluster-ips"]).unwrap();
        assert!(set.contains("10.96.0.20 . tcp . 80"), "{set}");
        assert!(dummy::exists(dummy::DEFAULT_NAME).unwrap());

        IpvsDataplane::new(cfg.clone()).cleanup().unwrap();
        assert!(nft_list(&["table", "ip", TABLE]).is_err());
        assert!(!dummy::exists(dummy::DEFAULT_NAME).unwrap());
        if ipvs {
            assert_eq!(IpvsNetlink::connect().unwrap().services().unwrap(), vec![]);
        }
        // Twice is fine: nothing left to remove.
        dp.cleanup().unwrap();
    });
}
