//! What the DNS server costs in memory: the process's resident set (VmRSS) with the server
//! up and empty, then with 1,000 and 10,000 Services indexed (two named ports each and a
//! 10-endpoint slice; one in ten headless), with a question answered at each step. A binary
//! of its own so no other test shares the process.

mod dns_common;

use std::sync::{Arc, RwLock};
use std::time::Instant;

use berth_proxy::dns::{DnsServer, Index};
use dns_common::{exchange, query, service, slice, Via};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn fill(index: &RwLock<Index>, from: usize, to: usize) {
    for i in from..to {
        let ns = format!("ns{}", i % 50);
        let name = format!("svc-{i}");
        let headless = i % 10 == 0;
        let ip = if headless {
            "None".to_string()
        } else {
            format!("10.{}.{}.{}", 96 + i / 65536, (i / 256) % 256, i % 256)
        };
        let ips: Vec<String> = (0..10)
            .map(|e| {
                format!(
                    "10.{}.{}.{}",
                    200 + i / 65536,
                    (i / 256) % 256,
                    e * 20 + i % 20
                )
            })
            .collect();
        let hosts: Vec<String> = (0..10).map(|e| format!("pod-{e}")).collect();
        let eps: Vec<(&str, Option<&str>)> = ips
            .iter()
            .zip(&hosts)
            .map(|(ip, h)| (ip.as_str(), Some(h.as_str())))
            .collect();
        let mut idx = index.write().unwrap();
        idx.apply_service(&service(
            &ns,
            &name,
            &ip,
            &[("http", 80), ("metrics", 9090)],
        ));
        idx.apply_slice(&slice(&ns, &format!("{name}-abcde"), &name, &eps));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stderr)] // the figures are the point of this test
async fn resident_memory_with_many_services() -> anyhow::Result<()> {
    let index = Arc::new(RwLock::new(Index::new("cluster.local")?));
    let server = DnsServer::bind(index.clone(), &["127.0.0.1:0".parse()?]).await?;
    let addr = server.local_addrs()[0];
    let task = tokio::spawn(server.run());
    let ask = |n: usize| {
        let q = query(
            &format!("svc-{n}.ns{}.svc.cluster.local.", n % 50),
            RecordType::A,
            None,
        );
        async move { exchange(addr, Via::Udp, &q).await }
    };
    let r = ask(1).await?;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let base = rss_kib();

    let mut last = base;
    for (from, to) in [(0, 1_000), (1_000, 10_000)] {
        let t = Instant::now();
        fill(&index, from, to);
        let took = t.elapsed();
        assert_eq!(index.read().unwrap().services(), to);
        let r = ask(to - 1).await?;
        assert_eq!(r.answers.len(), 1, "svc-{}", to - 1);
        let r = ask(to - 10).await?;
        assert_eq!(r.answers.len(), 10, "headless svc-{}", to - 10);
        let rss = rss_kib();
        eprintln!(
            "dns memory: {to} services: VmRSS {rss} KiB (server up, empty: {base} KiB; +{} KiB, \
             {} bytes/service); indexing {} took {took:?}",
            rss - base,
            (rss - last) * 1024 / (to - from) as u64,
            to - from
        );
        last = rss;
        // A generous bound that still catches a blow-up (records per name, copies per query).
        assert!(
            rss - base < (to as u64) * 4,
            "{to} services cost {} KiB",
            rss - base
        );
    }
    task.abort();
    Ok(())
}
