//! `run` against a real API server in this process (one store member, HTTPS on loopback),
//! with a `FakeDataplane`: Services and EndpointSlices created, changed and deleted through
//! the API reach the data plane as one full sync and then incremental changes.

use berth_testkit::free_port;
use std::future::Future;
use std::time::Duration;

use berth_apiserver::{ControlPlane, ServerArgs};
use berth_proxy::dataplane::{Call, FakeDataplane};
use berth_proxy::{Config, Endpoint, ServicePortName, State};
use clap::Parser;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);

async fn client_from(path: &std::path::Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(path).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("client config");
    kube::Client::try_from(cfg).expect("client")
}

/// Polls `check` until it gives a value, failing after [`DEADLINE`] with `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn slice(name: &str, service: &str, endpoints: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

fn endpoints_of(state: &State, key: &ServicePortName) -> Option<Vec<Endpoint>> {
    state.get(key).map(|i| i.endpoints.clone())
}

fn ep(ip: &str) -> Endpoint {
    Endpoint {
        ip: ip.parse().unwrap(),
        port: 8080,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_services_and_slices_from_the_api_server() {
    let dir = tempfile::tempdir().unwrap();
    let args = ServerArgs::parse_from([
        "server".to_string(),
        format!("--data-dir={}", dir.path().join("data").display()),
        format!("--listen=127.0.0.1:{}", free_port()),
        format!("--store-client-url=http://127.0.0.1:{}", free_port()),
        format!("--store-peer-url=http://127.0.0.1:{}", free_port()),
    ]);
    let cp = ControlPlane::start(args).await.unwrap();
    let client = client_from(&cp.kubeconfig).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");

    // One Service exists before the proxy starts: it arrives in the initial full sync.
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    let svc = services.create(&PostParams::default(), &svc).await.unwrap();
    let vip = svc.spec.as_ref().unwrap().cluster_ip.clone().unwrap();

    let fake = FakeDataplane::new();
    let config = Config {
        node_name: "n1".into(),
        sync_interval: Duration::from_millis(20),
        ..Config::default()
    };
    let proxy = tokio::spawn(berth_proxy::run(
        client.clone(),
        config,
        Box::new(fake.clone()),
    ));
    let key = ServicePortName::new("default", "web", "http");

    let first = eventually("the initial full sync", || async {
        fake.calls().into_iter().next()
    })
    .await;
    match first {
        Call::SyncFull(state) => {
            let info = &state[&key];
            assert_eq!(info.cluster_ip.to_string(), vip);
            assert!(info.endpoints.is_empty());
        }
        other => panic!("the first call must be a full sync, got {other:?}"),
    }

    slices
        .create(
            &PostParams::default(),
            &slice(
                "web-1",
                "web",
                json!([
                    {"addresses": ["10.244.1.1"], "conditions": {"ready": true}},
                    {"addresses": ["10.244.1.2"], "conditions": {"ready": false}},
                ]),
            ),
        )
        .await
        .unwrap();
    eventually("the ready endpoint", || async {
        (endpoints_of(&fake.state(), &key)? == vec![ep("10.244.1.1")]).then_some(())
    })
    .await;

    // A second slice of the same Service adds to it; a duplicate address counts once.
    slices
        .create(
            &PostParams::default(),
            &slice(
                "web-2",
                "web",
                json!([
                    {"addresses": ["10.244.1.1"]},
                    {"addresses": ["10.244.1.3"]},
                ]),
            ),
        )
        .await
        .unwrap();
    eventually("endpoints from both slices", || async {
        (endpoints_of(&fake.state(), &key)? == vec![ep("10.244.1.1"), ep("10.244.1.3")])
            .then_some(())
    })
    .await;

    slices
        .delete("web-1", &DeleteParams::default())
        .await
        .unwrap();
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    // (The API server's own `kubernetes` Service stays.)
    eventually("the service gone", || async {
        (!fake.state().contains_key(&key)).then_some(())
    })
    .await;

    // One full sync, then only incremental changes.
    let calls = fake.calls();
    let full = calls
        .iter()
        .filter(|c| matches!(c, Call::SyncFull(_)))
        .count();
    assert_eq!(full, 1, "{calls:?}");
    assert!(calls.len() >= 3, "{calls:?}");

    proxy.abort();
    cp.shutdown().await;
}
