//! The DNS server on loopback with a hand-fed index, asked over UDP and TCP as a pod's stub
//! resolver would: services, SRV, PTR, headless, negative answers, refusals, truncation, and
//! malformed questions.

mod dns_common;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use berth_proxy::dns::{DnsServer, Error, Index, SharedIndex};
use dns_common::{addrs, answers, exchange, query, service, slice, Via};
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};

/// A server on a free loopback port (UDP and TCP) over `index`, stopped when dropped.
struct Running {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<berth_proxy::dns::Result<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(index: SharedIndex) -> Running {
    let server = DnsServer::bind(index, &["127.0.0.1:0".parse().unwrap()])
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    assert_ne!(addr.port(), 0);
    Running {
        addr,
        task: tokio::spawn(server.run()),
    }
}

fn cluster() -> SharedIndex {
    let mut idx = Index::new("cluster.local").unwrap();
    idx.apply_service(&service("default", "web", "10.96.0.10", &[("http", 80)]));
    idx.apply_service(&service("default", "db", "None", &[("pg", 5432)]));
    idx.apply_slice(&slice(
        "default",
        "db-x1",
        "db",
        &[
            ("10.1.0.6", Some("db-1")),
            ("10.1.0.5", Some("db-0")),
            ("10.1.1.7", None),
        ],
    ));
    Arc::new(RwLock::new(idx))
}

#[tokio::test]
async fn answers_over_udp_and_tcp() -> anyhow::Result<()> {
    let index = cluster();
    let srv = start(index.clone()).await;
    for via in [Via::Udp, Via::Tcp] {
        for edns in [None, Some(1232)] {
            let ask = |name: &str, t| {
                let q = query(name, t, edns);
                async move { exchange(srv.addr, via, &q).await }
            };
            let ctx = format!("{via:?} edns {edns:?}");

            let r = ask("web.default.svc.cluster.local.", RecordType::A).await?;
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{ctx}");
            assert!(r.metadata.authoritative, "{ctx}");
            assert!(!r.metadata.recursion_available, "{ctx}");
            assert!(!r.metadata.truncation, "{ctx}");
            assert_eq!(r.queries.len(), 1, "{ctx}: the question is echoed");
            assert_eq!(
                answers(&r),
                ["web.default.svc.cluster.local. 5 IN A 10.96.0.10"],
                "{ctx}"
            );
            assert_eq!(r.edns.is_some(), edns.is_some(), "{ctx}: OPT only if asked");

            let r = ask("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV).await?;
            assert_eq!(
                answers(&r),
                ["_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."],
                "{ctx}"
            );
            assert_eq!(r.additionals.len(), 1, "{ctx}: the target's address");

            let r = ask("10.0.96.10.in-addr.arpa.", RecordType::PTR).await?;
            assert_eq!(
                answers(&r),
                ["10.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."],
                "{ctx}"
            );

            // Headless: every ready endpoint.
            let r = ask("db.default.svc.cluster.local.", RecordType::A).await?;
            assert_eq!(addrs(&r), ["10.1.0.5", "10.1.0.6", "10.1.1.7"], "{ctx}");
            let r = ask("db-1.db.default.svc.cluster.local.", RecordType::A).await?;
            assert_eq!(addrs(&r), ["10.1.0.6"], "{ctx}");
            let r = ask("_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV).await?;
            assert_eq!(r.answers.len(), 3, "{ctx}");
            assert_eq!(r.additionals.len(), 3, "{ctx}");

            // A name that does not exist, and one whose type does not.
            let r = ask("nope.default.svc.cluster.local.", RecordType::A).await?;
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{ctx}");
            assert!(r.answers.is_empty(), "{ctx}");
            assert_eq!(r.authorities.len(), 1, "{ctx}");
            assert_eq!(r.authorities[0].record_type(), RecordType::SOA, "{ctx}");
            assert_eq!(r.authorities[0].ttl, 5, "{ctx}");
            let r = ask("web.default.svc.cluster.local.", RecordType::AAAA).await?;
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{ctx}");
            assert!(r.answers.is_empty(), "{ctx}");
            assert_eq!(r.authorities.len(), 1, "{ctx}");

            // The search path's last try: refused, not forwarded.
            let r = ask("example.com.", RecordType::A).await?;
            assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{ctx}");
            assert!(!r.metadata.authoritative, "{ctx}");
            assert!(r.answers.is_empty() && r.authorities.is_empty(), "{ctx}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn index_changes_show_at_once() -> anyhow::Result<()> {
    let index = cluster();
    let srv = start(index.clone()).await;
    let q = query("api.default.svc.cluster.local.", RecordType::A, None);
    let r = exchange(srv.addr, Via::Udp, &q).await?;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    index
        .write()
        .unwrap()
        .apply_service(&service("default", "api", "10.96.0.20", &[]));
    let r = exchange(srv.addr, Via::Udp, &q).await?;
    assert_eq!(addrs(&r), ["10.96.0.20"]);
    index.write().unwrap().delete_service("default", "api");
    let r = exchange(srv.addr, Via::Tcp, &q).await?;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    Ok(())
}

#[tokio::test]
async fn big_answers_are_truncated_over_udp_and_whole_over_tcp() -> anyhow::Result<()> {
    let mut idx = Index::new("cluster.local").unwrap();
    idx.apply_service(&service("default", "many", "None", &[]));
    let ips: Vec<String> = (0..300)
        .map(|i| format!("10.2.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let eps: Vec<(&str, Option<&str>)> = ips.iter().map(|ip| (ip.as_str(), None)).collect();
    idx.apply_slice(&slice("default", "many-1", "many", &eps));
    let srv = start(Arc::new(RwLock::new(idx))).await;
    let name = "many.default.svc.cluster.local.";

    for (edns, limit) in [(None, 512), (Some(4096), 1232)] {
        let r = exchange(srv.addr, Via::Udp, &query(name, RecordType::A, edns)).await?;
        assert!(r.metadata.truncation, "edns {edns:?}");
        assert!(r.answers.len() < 300, "edns {edns:?}");
        assert!(r.to_vec()?.len() <= limit, "edns {edns:?}");
    }
    let r = exchange(srv.addr, Via::Tcp, &query(name, RecordType::A, None)).await?;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 300);
    Ok(())
}

#[tokio::test]
async fn odd_questions_get_the_right_error() -> anyhow::Result<()> {
    let srv = start(cluster()).await;
    let web = "web.default.svc.cluster.local.";

    let mut two = query(web, RecordType::A, None);
    two.add_query(two.queries[0].clone());
    let r = exchange(srv.addr, Via::Udp, &two).await?;
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);

    let mut chaos = query(web, RecordType::A, None);
    chaos.queries[0].set_query_class(DNSClass::CH);
    let r = exchange(srv.addr, Via::Udp, &chaos).await?;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);

    let mut notify = query(web, RecordType::SOA, None);
    notify.metadata.op_code = OpCode::Notify;
    let r = exchange(srv.addr, Via::Tcp, &notify).await?;
    assert_eq!(r.metadata.response_code, ResponseCode::NotImp);

    let mut v1 = query(web, RecordType::A, Some(1232));
    v1.edns.as_mut().unwrap().set_version(1);
    let r: Message = exchange(srv.addr, Via::Udp, &v1).await?;
    // BADVERS and BADSIG share the code 16; the decoder names it BADSIG.
    assert_eq!(
        u16::from(r.metadata.response_code),
        u16::from(ResponseCode::BADVERS)
    );
    assert_eq!(u16::from(ResponseCode::BADVERS), 16);
    assert!(r.answers.is_empty());
    Ok(())
}

#[tokio::test]
async fn bind_errors_name_the_address() {
    let index = cluster();
    assert!(matches!(
        DnsServer::bind(index.clone(), &[]).await,
        Err(Error::NoListen)
    ));
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = berth_proxy::dns::serve_index(index, vec![addr])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Bind { proto: "udp", addr: a, .. } if a == addr),
        "{err}"
    );
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}
