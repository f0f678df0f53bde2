//! API server benchmark: create / get / list / watch-fanout latency (p50, p99) at concurrency 1
//! and 64, on a 3-member control plane (3 store members, an API server beside each) in this
//! process, with pods of realistic size (~2.5 KB of JSON). Clients spread over the three API
//! servers, so writes through followers are forwarded to the Raft leader.
//!
//! The anchor is the same create and get done straight on the store (the `Storage` trait, no
//! HTTP, TLS, JSON decoding or admission), measured in the same run: the ratio shows what the
//! API layer costs on top of consensus.
//!
//! `cargo bench -p berth-apiserver --bench api_bench -- [--ops N] [--watchers W]`

// A benchmark's output is its result.
#![allow(clippy::print_stdout)]

use berth_testkit::free_port;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_apiserver::{ControlPlane, ServerArgs};
use kube::Client;
use serde_json::{json, Value};

fn pod(name: &str) -> Value {
    let env: Vec<Value> = (0..12)
        .map(|i| json!({"name": format!("SETTING_{i}"), "value": format!("value-{i}-abcdefgh")}))
        .collect();
    let container = |n: &str| {
        json!({"name": n, "image": format!("registry.example/{n}:1.2.3"),
            "command": ["/bin/server", "--port=8080", "--log-level=info"],
            "ports": [{"containerPort": 8080, "name": "http"}, {"containerPort": 9090, "name": "metrics"}],
            "env": env,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                          "limits": {"cpu": "500m", "memory": "256Mi"}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5},
            "livenessProbe": {"httpGet": {"path": "/live", "port": 8080}, "periodSeconds": 10},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}]})
    };
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "web", "release": "r1"},
            "annotations": {"example.com/owner": "team-a", "example.com/commit": "0123456789abcdef0123456789abcdef01234567"}},
        "spec": {"containers": [container("app"), container("sidecar")],
            "volumes": [{"name": "config", "configMap": {"name": "app-config"}}],
            "nodeSelector": {"kubernetes.io/os": "linux"}}})
}

struct Stats {
    ops: usize,
    errors: usize,
    elapsed: Duration,
    lat: Vec<Duration>,
}

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        if self.lat.is_empty() {
            return f64::NAN;
        }
        let mut l = self.lat.clone();
        l.sort();
        let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
        l[i].as_secs_f64() * 1000.0
    }
}

async fn run<F, Fut>(concurrency: usize, total: usize, op: F) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let op = op.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                if op(i).await {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    Stats {
        ops: lat.len(),
        errors,
        elapsed: start.elapsed(),
        lat,
    }
}

fn row(target: &str, phase: &str, c: usize, s: &Stats) {
    println!(
        "{target:<8} {phase:<14} {c:>4} {:>7} {:>6} {:>9.0} {:>8.2} {:>8.2}",
        s.ops,
        s.errors,
        s.ops as f64 / s.elapsed.as_secs_f64(),
        s.pct(0.5),
        s.pct(0.99)
    );
}

async fn client(cp: &ControlPlane) -> Client {
    let kc = kube::config::Kubeconfig::read_from(&cp.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

async fn request(client: &Client, method: &str, path: &str, body: Option<&Value>) -> bool {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", "application/json")
        .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
        .unwrap();
    client.request_text(req).await.is_ok()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let ops = flag("--ops", 2000);
    let watchers = flag("--watchers", 64);

    let dir = tempfile::tempdir().unwrap();
    let members: Vec<(String, u16, u16, u16)> = (0..3)
        .map(|i| (format!("m{i}"), free_port(), free_port(), free_port()))
        .collect();
    let initial = members
        .iter()
        .map(|(n, _, _, peer)| format!("{n}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let starts = members.iter().map(|(name, api, client, peer)| {
        let args = ServerArgs {
            listen: format!("127.0.0.1:{api}").parse().unwrap(),
            name: name.clone(),
            store_client_url: format!("http://127.0.0.1:{client}"),
            store_peer_url: format!("http://127.0.0.1:{peer}"),
            initial_cluster: Some(initial.clone()),
            ..ServerArgs::new(dir.path().join(name))
        };
        ControlPlane::start(args)
    });
    let cps: Vec<ControlPlane> = futures::future::try_join_all(starts).await.unwrap();
    let clients: Vec<Client> = futures::future::join_all(cps.iter().map(client)).await;
    let pod_bytes = pod("x").to_string().len();
    println!(
        "# api_bench: 3 members, pods of {pod_bytes} bytes JSON, {ops} ops per phase, {watchers} watchers"
    );
    println!(
        "{:<8} {:<14} {:>4} {:>7} {:>6} {:>9} {:>8} {:>8}",
        "target", "phase", "conc", "ops", "errors", "ops/s", "p50 ms", "p99 ms"
    );
    let pods = "/api/v1/namespaces/default/pods";
    let mut results = Vec::new();
    for conc in [1usize, 64] {
        let n = if conc == 1 { ops / 4 } else { ops };
        let cl = clients.clone();
        let create = run(conc, n, move |i| {
            let c = cl[i % cl.len()].clone();
            async move { request(&c, "POST", pods, Some(&pod(&format!("p{conc}-{i}")))).await }
        })
        .await;
        row("api", "create", conc, &create);
        let cl = clients.clone();
        let get = run(conc, n, move |i| {
            let c = cl[i % cl.len()].clone();
            async move { request(&c, "GET", &format!("{pods}/p{conc}-{i}"), None).await }
        })
        .await;
        row("api", "get", conc, &get);
        let cl = clients.clone();
        let list = run(conc, (n / 10).max(10), move |i| {
            let c = cl[i % cl.len()].clone();
            async move { request(&c, "GET", &format!("{pods}?limit=100"), None).await }
        })
        .await;
        row("api", "list(100)", conc, &list);

        // The anchor: the same create and get on the store directly.
        let storage = cps[0].api.storage.clone();
        let bytes = pod("anchor").to_string().into_bytes();
        let anchor_create = run(conc, n, move |i| {
            let s = storage.clone();
            let b = bytes.clone();
            async move {
                s.create(&format!("/bench/anchor/{conc}/{i}"), b)
                    .await
                    .is_ok()
            }
        })
        .await;
        row("store", "create", conc, &anchor_create);
        let storage = cps[0].api.storage.clone();
        let anchor_get = run(conc, n, move |i| {
            let s = storage.clone();
            async move { s.get(&format!("/bench/anchor/{conc}/{i}")).await.is_ok() }
        })
        .await;
        row("store", "get", conc, &anchor_get);
        results.push((conc, create, get, anchor_create, anchor_get));
    }

    // Watch fan-out: W watchers (spread over the servers) on the namespace; each write's
    // delivery latency is measured from just before the write to each watcher's receipt.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut watch_tasks = Vec::new();
    for w in 0..watchers {
        let c = clients[w % clients.len()].clone();
        let tx = tx.clone();
        watch_tasks.push(tokio::spawn(async move {
            use futures::{AsyncBufReadExt, TryStreamExt};
            let req = http::Request::builder()
                .uri("/api/v1/namespaces/default/configmaps?watch=1&labelSelector=bench%3Dfanout")
                .body(Vec::new())
                .unwrap();
            let stream = c.request_stream(req).await.unwrap();
            let mut lines = stream.lines();
            while let Ok(Some(line)) = lines.try_next().await {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if let Some(name) = v.pointer("/object/metadata/name").and_then(Value::as_str) {
                    let _ = tx.send((name.to_string(), Instant::now()));
                }
            }
        }));
    }
    drop(tx);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = 50;
    let mut sent = std::collections::HashMap::new();
    for i in 0..writes {
        let name = format!("fan-{i}");
        sent.insert(name.clone(), Instant::now());
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"bench": "fanout"}}, "data": {"k": "v"}});
        request(
            &clients[0],
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some(&cm),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lat.len() < writes * watchers && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some((name, at))) => {
                if let Some(t0) = sent.get(&name) {
                    lat.push(at.duration_since(*t0));
                }
            }
            _ => break,
        }
    }
    let fan = Stats {
        ops: lat.len(),
        errors: writes * watchers - lat.len(),
        elapsed: Duration::from_secs(1),
        lat,
    };
    println!(
        "{:<8} {:<14} {:>4} {:>7} {:>6} {:>9} {:>8.2} {:>8.2}",
        "api",
        "watch-fanout",
        watchers,
        fan.ops,
        fan.errors,
        "-",
        fan.pct(0.5),
        fan.pct(0.99)
    );
    for t in watch_tasks {
        t.abort();
    }
    println!("# ratios (api / store anchor, p50 and p99):");
    for (conc, create, get, ac, ag) in &results {
        println!(
            "create c{conc}: p50 {:.1}x p99 {:.1}x; get c{conc}: p50 {:.1}x p99 {:.1}x",
            create.pct(0.5) / ac.pct(0.5),
            create.pct(0.99) / ac.pct(0.99),
            get.pct(0.5) / ag.pct(0.5),
            get.pct(0.99) / ag.pct(0.99)
        );
    }
    for cp in cps {
        cp.shutdown().await;
    }
}
