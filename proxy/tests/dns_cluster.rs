//! Cluster DNS against a real in-process Berth API server (one store member and the HTTPS
//! API on free loopback ports): Services and EndpointSlices created with kube appear in the
//! answers, and deleted ones go away.

mod dns_common;

use berth_testkit::free_port;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use berth_apiserver::{ControlPlane, ServerArgs};
use berth_proxy::dns::{serve, DnsConfig};
use dns_common::{addrs, answers, exchange, query, service, slice, Via};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Api;

const DEADLINE: Duration = Duration::from_secs(30);

/// The control plane and the DNS server, stopped on drop (the API server by `stop`).
struct Cluster {
    cp: Option<ControlPlane>,
    dns: tokio::task::JoinHandle<berth_proxy::dns::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.dns.abort();
    }
}

impl Cluster {
    async fn stop(mut self) {
        self.dns.abort();
        if let Some(cp) = self.cp.take() {
            cp.shutdown().await;
        }
    }
}

async fn start() -> anyhow::Result<(Cluster, kube::Client, SocketAddr)> {
    let dir = tempfile::tempdir()?;
    let cp = ControlPlane::start(ServerArgs {
        listen: format!("127.0.0.1:{}", free_port()).parse()?,
        store_client_url: format!("http://127.0.0.1:{}", free_port()),
        store_peer_url: format!("http://127.0.0.1:{}", free_port()),
        ..ServerArgs::new(dir.path().join("data"))
    })
    .await?;
    let kc = Kubeconfig::read_from(&cp.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(cfg)?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let dns = tokio::spawn(serve(
        client.clone(),
        DnsConfig {
            listen: vec![addr],
            domain: "cluster.local".into(),
        },
    ));
    let cluster = Cluster {
        cp: Some(cp),
        dns,
        _dir: dir,
    };
    Ok((cluster, client, addr))
}

/// Asks until `want` holds for the response, failing after [`DEADLINE`].
async fn until<F>(dns: SocketAddr, name: &str, t: RecordType, want: F) -> anyhow::Result<Message>
where
    F: Fn(&Message) -> bool,
{
    eventually(&format!("{name} {t}"), || async {
        match exchange(dns, Via::Udp, &query(name, t, None)).await {
            Ok(r) if want(&r) => Some(r),
            _ => None,
        }
    })
    .await
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn strip_ip(mut s: Service) -> Service {
    // The API server allocates ClusterIPs; "None" (headless) stays.
    if let Some(spec) = &mut s.spec {
        if spec.cluster_ip.as_deref() != Some("None") {
            spec.cluster_ip = None;
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_slices_from_the_api_server_are_answered() -> anyhow::Result<()> {
    let (cluster, client, dns) = start().await?;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    let web = services
        .create(
            &pp,
            &strip_ip(service("default", "web", "", &[("http", 80)])),
        )
        .await?;
    let ip = web
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("the api server allocates a cluster ip");
    let r = until(dns, "web.default.svc.cluster.local.", RecordType::A, |r| {
        !r.answers.is_empty()
    })
    .await?;
    assert_eq!(addrs(&r), std::slice::from_ref(&ip));
    let r = exchange(
        dns,
        Via::Tcp,
        &query(
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
            None,
        ),
    )
    .await?;
    assert_eq!(
        answers(&r),
        ["_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."]
    );
    let arpa = {
        let o: Vec<&str> = ip.split('.').rev().collect();
        format!("{}.in-addr.arpa.", o.join("."))
    };
    let r = exchange(dns, Via::Udp, &query(&arpa, RecordType::PTR, None)).await?;
    assert_eq!(
        answers(&r),
        [format!("{arpa} 5 IN PTR web.default.svc.cluster.local.")]
    );

    // A headless Service and a slice for it, as the endpoints controller would write.
    services
        .create(&pp, &service("default", "db", "None", &[("pg", 5432)]))
        .await?;
    slices
        .create(
            &pp,
            &slice(
                "default",
                "db-abcde",
                "db",
                &[("10.1.0.5", Some("db-0")), ("10.1.0.6", Some("db-1"))],
            ),
        )
        .await?;
    let r = until(dns, "db.default.svc.cluster.local.", RecordType::A, |r| {
        r.answers.len() == 2
    })
    .await?;
    assert_eq!(addrs(&r), ["10.1.0.5", "10.1.0.6"]);
    let r = exchange(
        dns,
        Via::Udp,
        &query("db-1.db.default.svc.cluster.local.", RecordType::A, None),
    )
    .await?;
    assert_eq!(addrs(&r), ["10.1.0.6"]);

    // An ExternalName Service: the CNAME only.
    let ext = Service {
        metadata: ObjectMeta {
            name: Some("ext".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some("www.example.com".into()),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    services.create(&pp, &ext).await?;
    let r = until(dns, "ext.default.svc.cluster.local.", RecordType::A, |r| {
        !r.answers.is_empty()
    })
    .await?;
    assert_eq!(
        answers(&r),
        ["ext.default.svc.cluster.local. 5 IN CNAME www.example.com."]
    );

    // Deleting the slice leaves the headless Service no names; deleting `web` removes it.
    slices.delete("db-abcde", &DeleteParams::default()).await?;
    until(dns, "db.default.svc.cluster.local.", RecordType::A, |r| {
        r.metadata.response_code == ResponseCode::NXDomain
    })
    .await?;
    services.delete("web", &DeleteParams::default()).await?;
    until(dns, "web.default.svc.cluster.local.", RecordType::A, |r| {
        r.metadata.response_code == ResponseCode::NXDomain
    })
    .await?;
    let r = exchange(dns, Via::Udp, &query(&arpa, RecordType::PTR, None)).await?;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);

    // The server is still up, and still refuses the rest of the world.
    let r = exchange(dns, Via::Udp, &query("example.com.", RecordType::A, None)).await?;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(!cluster.dns.is_finished());
    cluster.stop().await;
    Ok(())
}
