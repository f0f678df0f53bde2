//! The nftables back end at scale, in a fresh network namespace per size:
//! - full sync time of N Services x E endpoints;
//! - single-Service update time at that size (one endpoint replaced, one removed, a Service
//!   added and removed), through the long-lived `nft -i` session and, for comparison,
//!   through one `nft -f -` process per update;
//! - TCP connect latency to a Service VIP with 10 and with N Services programmed, beside an
//!   anchor measured in the same run: direct connects to the backend address.
//!
//! `cargo bench -p berth-proxy --bench sync -- --services 1000,10000 --endpoints 10`
//! (root; prints figures, asserts nothing about time).
#![allow(clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use berth_proxy::model::diff;
use berth_proxy::{
    Change, Dataplane, Endpoint, NftConfig, Nftables, Protocol, ServicePortInfo, ServicePortName,
    State,
};
use common::{topology, Netns, TcpBackend};

struct Args {
    services: Vec<usize>,
    endpoints: usize,
    connects: usize,
    updates: usize,
}

fn args() -> Args {
    let mut a = Args {
        services: vec![1000, 10000],
        endpoints: 10,
        connects: 2000,
        updates: 40,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--services" => {
                a.services = v()
                    .split(',')
                    .map(|n| n.parse().expect("--services N[,N]"))
                    .collect()
            }
            "--endpoints" => a.endpoints = v().parse().expect("--endpoints N"),
            "--connects" => a.connects = v().parse().expect("--connects N"),
            "--updates" => a.updates = v().parse().expect("--updates N"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

const BACKEND: &str = "10.244.1.1";
const PROBE_VIP: &str = "10.96.255.254";

fn vip(s: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, (s / 250) as u8, (s % 250 + 1) as u8)
}

fn service(s: usize, endpoints: usize) -> (ServicePortName, ServicePortInfo) {
    let v = vip(s).octets();
    let mut eps: Vec<Endpoint> = (0..endpoints)
        .map(|j| Endpoint {
            ip: Ipv4Addr::new(10, 100 + j as u8, v[2], v[3]),
            port: 8080,
        })
        .collect();
    eps.sort();
    (
        ServicePortName::new("bench", &format!("svc-{s}"), "http"),
        ServicePortInfo {
            cluster_ip: vip(s),
            port: 80,
            protocol: Protocol::Tcp,
            node_port: None,
            affinity_timeout: None,
            endpoints: eps,
        },
    )
}

fn state(n: usize, endpoints: usize) -> State {
    let mut st: State = (0..n).map(|s| service(s, endpoints)).collect();
    st.insert(
        ServicePortName::new("bench", "probe", ""),
        ServicePortInfo {
            cluster_ip: PROBE_VIP.parse().unwrap(),
            port: 80,
            protocol: Protocol::Tcp,
            node_port: None,
            affinity_timeout: None,
            endpoints: vec![Endpoint {
                ip: BACKEND.parse().unwrap(),
                port: 8080,
            }],
        },
    );
    st
}

/// Median and 99th percentile.
fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (p(0.5), p(0.99))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

fn connect_times(addr: SocketAddr, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
            let d = t.elapsed();
            drop(c);
            d
        })
        .collect()
}

/// Connect latency to the probe VIP and, alternating in blocks, directly to the backend.
fn latency(label: &str, connects: usize) {
    let vip: SocketAddr = format!("{PROBE_VIP}:80").parse().unwrap();
    let direct: SocketAddr = format!("{BACKEND}:8080").parse().unwrap();
    // Warm up both paths.
    connect_times(vip, 50);
    connect_times(direct, 50);
    let (mut v, mut d) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        v.extend(connect_times(vip, connects / 10));
        d.extend(connect_times(direct, connects / 10));
    }
    let (vm, v99) = stats(v);
    let (dm, d99) = stats(d);
    println!(
        "  connect {label}: VIP median {} p99 {} | direct median {} p99 {} | ratio median {:.2} p99 {:.2}",
        us(vm),
        us(v99),
        us(dm),
        us(d99),
        vm.as_secs_f64() / dm.as_secs_f64(),
        v99.as_secs_f64() / d99.as_secs_f64()
    );
}

/// Times `updates` single-service changes made by `change(i, &state)`.
fn time_updates(
    dp: &mut Nftables,
    st: &mut State,
    updates: usize,
    mut change: impl FnMut(usize, &State) -> State,
) -> (Duration, Duration) {
    let mut times = Vec::new();
    for i in 0..updates {
        let next = change(i, st);
        let changes: Vec<Change> = diff(st, &next);
        assert!(!changes.is_empty());
        let t = Instant::now();
        dp.apply(&changes).expect("apply");
        times.push(t.elapsed());
        *st = next;
    }
    stats(times)
}

fn run_size(n: usize, a: &Args) {
    println!("== {n} services x {} endpoints", a.endpoints);
    let ns = Netns::new(&format!("bench-{n}")).expect("netns");
    ns.run(|| {
        topology(&[BACKEND]).expect("topology");
        let _backend = TcpBackend::start(&format!("{BACKEND}:8080"), "").expect("backend");
        let cfg = NftConfig {
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            ..NftConfig::default()
        };
        let mut dp = Nftables::new(cfg.clone());

        let small = state(10, a.endpoints);
        dp.sync_full(&small).expect("sync 10");
        latency("with 10 services", a.connects);

        let mut st = state(n, a.endpoints);
        let t = Instant::now();
        let script = berth_proxy::nft::full_script(&cfg, &st);
        let generated = t.elapsed();
        let t = Instant::now();
        dp.sync_full(&st).expect("full sync");
        let full = t.elapsed();
        println!(
            "  full sync: {} ({} commands; text generation {})",
            ms(full),
            script.len(),
            ms(generated)
        );
        latency(&format!("with {n} services"), a.connects);

        let e = a.endpoints;
        let replace = |i: usize, st: &State| {
            let mut next = st.clone();
            let (name, _) = service((i * 7919) % n, e);
            let info = next.get_mut(&name).unwrap();
            info.endpoints[0].ip = Ipv4Addr::new(10, 99, (i / 250) as u8, (i % 250) as u8);
            info.endpoints.sort();
            next
        };
        let (m, p) = time_updates(&mut dp, &mut st, a.updates, replace);
        println!(
            "  update, one endpoint replaced (nft -i session): median {} p99 {}",
            ms(m),
            ms(p)
        );
        let remove = |i: usize, st: &State| {
            let mut next = st.clone();
            let (name, _) = service((i * 104729 + 13) % n, e);
            next.get_mut(&name).unwrap().endpoints.pop();
            next
        };
        let (m, p) = time_updates(&mut dp, &mut st, a.updates, remove);
        println!(
            "  update, one endpoint removed (nft -i session): median {} p99 {}",
            ms(m),
            ms(p)
        );
        let add_remove = |i: usize, st: &State| {
            let mut next = st.clone();
            let (name, mut info) = service(n + i / 2, e);
            if i % 2 == 0 {
                info.cluster_ip = Ipv4Addr::new(10, 97, 0, (i / 2 % 250) as u8 + 1);
                next.insert(name, info);
            } else {
                next.remove(&name);
            }
            next
        };
        let (m, p) = time_updates(&mut dp, &mut st, a.updates, add_remove);
        println!(
            "  update, a service added or removed (nft -i session): median {} p99 {}",
            ms(m),
            ms(p)
        );

        let mut spawning = Nftables::new(NftConfig {
            persistent: false,
            ..cfg.clone()
        });
        spawning.sync_full(&st).expect("full sync");
        let (m, p) = time_updates(&mut spawning, &mut st, a.updates.min(20), |i, st| {
            replace(i + 100_000, st)
        });
        println!(
            "  update, one endpoint replaced (one nft -f per update): median {} p99 {}",
            ms(m),
            ms(p)
        );
        latency(&format!("with {n} services, after the updates"), a.connects);
        dp.cleanup().expect("cleanup");
    });
}

fn main() {
    let a = args();
    println!(
        "nftables back end: {} endpoints per service, {} connects per latency figure",
        a.endpoints, a.connects
    );
    for n in a.services.clone() {
        run_size(n, &a);
    }
}
