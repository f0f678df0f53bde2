//! The endpoints, node IPAM and service-account controllers against a real API server in
//! this process (a single store member and the HTTPS API on free loopback ports).

use berth_testkit::free_port;
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use berth_apiserver::{ControlPlane, ServerArgs};
use berth_controller_manager::Config;
use clap::Parser;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

/// How long an eventual state may take.
const DEADLINE: Duration = Duration::from_secs(30);

struct Cluster {
    cp: Option<ControlPlane>,
    client: kube::Client,
    controllers: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let args = ServerArgs::parse_from([
            "server".to_string(),
            format!("--data-dir={}", dir.path().join("data").display()),
            format!("--listen=127.0.0.1:{}", free_port()),
            format!("--store-client-url=http://127.0.0.1:{}", free_port()),
            format!("--store-peer-url=http://127.0.0.1:{}", free_port()),
        ]);
        let cp = ControlPlane::start(args).await.unwrap();
        let client = berth_controller_manager::cli::client_from(&cp.kubeconfig)
            .await
            .unwrap();
        Self {
            cp: Some(cp),
            client,
            controllers: None,
            _dir: dir,
        }
    }

    fn run_controllers(&mut self) {
        let client = self.client.clone();
        self.controllers = Some(tokio::spawn(berth_controller_manager::run(
            client,
            Config::default(),
        )));
    }

    async fn stop(mut self) {
        if let Some(c) = self.controllers.take() {
            c.abort();
        }
        if let Some(cp) = self.cp.take() {
            cp.shutdown().await;
        }
    }
}

/// Polls `check` until it gives a value, failing after [`DEADLINE`] with `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn web_pod(name: &str, port: i32) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{
            "name": "c", "image": "busybox",
            "ports": [{"name": "web", "containerPort": port}],
        }]},
    }))
    .unwrap()
}

async fn set_status(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": status}],
        }})),
    )
    .await
    .unwrap();
}

fn ips(list: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>) -> Vec<String> {
    let mut v: Vec<String> = list.iter().flatten().map(|a| a.ip.clone()).collect();
    v.sort();
    v
}

/// `(ip, ready)` of every endpoint in the managed slices of `web`, and their ports.
async fn slice_view(slices: &Api<EndpointSlice>) -> (Vec<(String, bool)>, Vec<i32>, usize) {
    let list = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    let mut eps = Vec::new();
    let mut ports = Vec::new();
    for s in &list.items {
        for e in &s.endpoints {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
            eps.push((e.addresses[0].clone(), ready));
        }
        ports.extend(s.ports.iter().flatten().filter_map(|p| p.port));
    }
    eps.sort();
    (eps, ports, list.items.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_endpoints_and_slices_of_the_pods_they_select() {
    let mut cluster = Cluster::start().await;
    cluster.run_controllers();
    let client = cluster.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    pods.create(&pp, &web_pod("a", 8080)).await.unwrap();
    pods.create(&pp, &web_pod("b", 8080)).await.unwrap();
    set_status(&pods, "a", "10.1.0.1", true).await;
    set_status(&pods, "b", "10.1.0.2", true).await;
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "web"}],
        },
    }))
    .unwrap();
    services.create(&pp, &svc).await.unwrap();

    // Both pods, ready, on the named port resolved to 8080.
    let ep = eventually("endpoints of web with both pods", || async {
        let ep = endpoints.get_opt("web").await.unwrap()?;
        let subset = ep.subsets.as_ref()?.first()?.clone();
        (ips(&subset.addresses) == ["10.1.0.1", "10.1.0.2"]).then_some(subset)
    })
    .await;
    let port = &ep.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
    let (eps, ports, count) = eventually("a slice with both pods ready", || async {
        let v = slice_view(&slices).await;
        (v.0 == [("10.1.0.1".into(), true), ("10.1.0.2".into(), true)]).then_some(v)
    })
    .await;
    assert_eq!((eps.len(), ports, count), (2, vec![8080], 1));

    // `b` turns not ready: it moves to notReadyAddresses, and ready=false in the slice.
    set_status(&pods, "b", "10.1.0.2", false).await;
    eventually("b among the not-ready addresses", || async {
        let ep = endpoints.get_opt("web").await.unwrap()?;
        let subset = ep.subsets.as_ref()?.first()?.clone();
        (ips(&subset.addresses) == ["10.1.0.1"] && ips(&subset.not_ready_addresses) == ["10.1.0.2"])
            .then_some(())
    })
    .await;
    eventually("b not ready in the slice", || async {
        let v = slice_view(&slices).await;
        (v.0 == [("10.1.0.1".into(), true), ("10.1.0.2".into(), false)] && v.2 == 1).then_some(())
    })
    .await;

    // A manual edit of the Endpoints is undone.
    endpoints
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"subsets": null})),
        )
        .await
        .unwrap();
    eventually("the endpoints repaired", || async {
        let ep = endpoints.get_opt("web").await.unwrap()?;
        let subset = ep.subsets.as_ref()?.first()?.clone();
        (ips(&subset.addresses) == ["10.1.0.1"]).then_some(())
    })
    .await;

    // The service goes: its Endpoints with it, and its slices through the collector.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the endpoints deleted", || async {
        endpoints
            .get_opt("web")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    eventually("the slices collected", || async {
        (slice_view(&slices).await.2 == 0).then_some(())
    })
    .await;
    cluster.stop().await;
}

fn node(name: &str, pod_cidr: Option<&str>) -> Node {
    let mut n = json!({"metadata": {"name": name}});
    if let Some(c) = pod_cidr {
        n["spec"] = json!({"podCIDR": c, "podCIDRs": [c]});
    }
    serde_json::from_value(n).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_pod_cidrs() {
    let mut cluster = Cluster::start().await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let pp = PostParams::default();
    // Held before the controllers start: never handed out again.
    nodes
        .create(&pp, &node("held", Some("10.244.0.0/24")))
        .await
        .unwrap();
    nodes
        .create(&pp, &node("outside", Some("192.168.7.0/24")))
        .await
        .unwrap();
    cluster.run_controllers();
    let names: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
    let created = futures::future::join_all(names.iter().map(|n| {
        let (nodes, pp, n) = (nodes.clone(), pp.clone(), node(n, None));
        async move { nodes.create(&pp, &n).await }
    }))
    .await;
    for r in created {
        r.unwrap();
    }
    let cidrs = eventually("every node with a pod CIDR", || async {
        let mut cidrs = Vec::new();
        for n in &names {
            let spec = nodes.get(n).await.unwrap().spec?;
            let c = spec.pod_cidr?;
            assert_eq!(spec.pod_cidrs, Some(vec![c.clone()]));
            cidrs.push(c);
        }
        Some(cidrs)
    })
    .await;
    let distinct: BTreeSet<&String> = cidrs.iter().collect();
    assert_eq!(distinct.len(), names.len(), "{cidrs:?}");
    let want: BTreeSet<String> = (1..=5).map(|i| format!("10.244.{i}.0/24")).collect();
    assert_eq!(
        cidrs.iter().cloned().collect::<BTreeSet<_>>(),
        want,
        "the lowest free blocks, skipping the held one"
    );
    let outside = nodes.get("outside").await.unwrap().spec.unwrap();
    assert_eq!(outside.pod_cidr.as_deref(), Some("192.168.7.0/24"));

    // A block comes back once its node is gone.
    let freed = nodes
        .get("n0")
        .await
        .unwrap()
        .spec
        .unwrap()
        .pod_cidr
        .unwrap();
    nodes.delete("n0", &DeleteParams::default()).await.unwrap();
    nodes.create(&pp, &node("late", None)).await.unwrap();
    let got = eventually("the new node with a pod CIDR", || async {
        nodes.get("late").await.unwrap().spec?.pod_cidr
    })
    .await;
    assert_eq!(got, freed);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_has_a_default_service_account() {
    let mut cluster = Cluster::start().await;
    cluster.run_controllers();
    let client = cluster.client.clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "team-a");
    let first = eventually("team-a/default", || async {
        accounts.get_opt("default").await.unwrap()
    })
    .await;
    accounts
        .delete("default", &DeleteParams::default())
        .await
        .unwrap();
    let again = eventually("team-a/default again", || async {
        accounts
            .get_opt("default")
            .await
            .unwrap()
            .filter(|sa| sa.metadata.uid != first.metadata.uid)
    })
    .await;
    assert_ne!(again.metadata.uid, first.metadata.uid);
    // Namespaces that existed before the controller started have one too.
    let kube_system: Api<ServiceAccount> = Api::namespaced(client.clone(), "kube-system");
    eventually("kube-system/default", || async {
        kube_system.get_opt("default").await.unwrap()
    })
    .await;
    cluster.stop().await;
}

/// Two candidates for one Lease: only one works at a time; when the leader stops (its
/// future dropped, as a crashed process would), the other takes over once the Lease has
/// gone unrenewed for its duration, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_of_two_candidates_leads_and_the_other_takes_over() {
    use berth_controller_manager::leader::{self, LeaseConfig};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let c = Cluster::start().await;
    let working = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let leaders = Arc::new(std::sync::Mutex::new(Vec::<&'static str>::new()));
    let candidate = |id: &'static str| {
        let client = c.client.clone();
        let (working, most, leaders) = (working.clone(), most.clone(), leaders.clone());
        let cfg = LeaseConfig {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(300),
            ..LeaseConfig::new("test-leader", id.to_string())
        };
        tokio::spawn(leader::run(client, cfg, move || {
            let (working, most, leaders) = (working.clone(), most.clone(), leaders.clone());
            async move {
                leaders.lock().unwrap().push(id);
                let now = working.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                struct Done(Arc<AtomicUsize>);
                impl Drop for Done {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                let _done = Done(working);
                std::future::pending::<()>().await
            }
        }))
    };
    let a = candidate("a");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = candidate("b");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(*leaders.lock().unwrap(), ["a"], "b waits while a renews");
    a.abort();
    let stopped = tokio::time::Instant::now();
    eventually("b to take over", || async {
        (leaders.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    let took = stopped.elapsed();
    assert_eq!(*leaders.lock().unwrap(), ["a", "b"]);
    assert!(
        took >= Duration::from_secs(2),
        "b took over after {took:?}, inside the lease"
    );
    assert_eq!(most.load(Ordering::SeqCst), 1, "never two leaders at once");
    b.abort();
    c.stop().await;
}
