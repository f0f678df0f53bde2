//! Scheduler throughput, in process, each figure beside an anchor measured in the same run.
//!
//! 1. Decisions alone: `--pods` pods with mixed requests, node selectors and hostname
//!    topology spread constraints, decided one after another (each assumed on its node) over a
//!    snapshot of `--nodes` simulated nodes. Anchor: a bare pass over every node of the same
//!    snapshot per pod doing only the resource-fit check.
//! 2. With bindings: a Berth control plane in this process, the same nodes and pods created
//!    through it first, then the real `run()` loop; timed from its start until a watch has
//!    seen every pod bound. Anchor: the same number of plain pod PATCH requests through the
//!    same client, as many in flight as the scheduler's bindings.
//!
//! `cargo bench -p berth-scheduler --bench scheduler -- --nodes 5000 --pods 10000` (the
//! defaults); `--nodes 200 --pods 500` is the smoke size; `--decisions-only` skips part 2;
//! `--in-flight K` sets the bindings in flight (default 64).
#![allow(clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_scheduler::decide::fits_only;
use berth_scheduler::testing::{node, pod, PodBuilder};
use berth_scheduler::{Config, Decider, PodInfo, Snapshot};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::Api;

struct Args {
    nodes: usize,
    pods: usize,
    decisions_only: bool,
    in_flight: usize,
}

fn args() -> Args {
    let mut a = Args {
        nodes: 5000,
        pods: 10000,
        decisions_only: false,
        in_flight: Config::default().max_writes_in_flight,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--nodes" => a.nodes = it.next().and_then(|v| v.parse().ok()).expect("--nodes N"),
            "--pods" => a.pods = it.next().and_then(|v| v.parse().ok()).expect("--pods M"),
            "--decisions-only" => a.decisions_only = true,
            "--in-flight" => {
                a.in_flight = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--in-flight K")
            }
            // cargo bench passes --bench.
            _ => {}
        }
    }
    a
}

const ZONES: usize = 10;
const APPS: usize = 50;

fn sim_node(i: usize) -> Node {
    node(&format!("node-{i:05}"))
        .cpu(["16", "32", "64"][i % 3])
        .memory(["64Gi", "128Gi", "256Gi"][i % 3])
        .pods(110)
        .label(
            "topology.kubernetes.io/zone",
            &format!("zone-{}", i % ZONES),
        )
        .label("disk", if i % 2 == 0 { "ssd" } else { "hdd" })
        .build()
}

/// Pod `i`: one of 50 apps (label and owner), mixed requests; 30% with a zone selector, 20%
/// with a disk selector, 30% with a DoNotSchedule spread constraint on the hostname.
fn sim_pod(i: usize) -> PodBuilder {
    let app = format!("app-{}", i % APPS);
    let mut p = pod(&format!("pod-{i:06}"))
        .label("app", &app)
        .owner(&format!("rs-{app}"))
        .requests(
            ["100m", "250m", "500m", "1", "2"][i % 5],
            ["128Mi", "256Mi", "512Mi", "1Gi", "4Gi"][(i / 5) % 5],
        )
        .priority([0, 0, 0, 100][i % 4]);
    match i % 10 {
        0..=2 => {
            p = p.selector(
                "topology.kubernetes.io/zone",
                &format!("zone-{}", i % ZONES),
            )
        }
        3 | 4 => p = p.selector("disk", "ssd"),
        _ => {}
    }
    if i % 10 >= 7 {
        p = p.spread("kubernetes.io/hostname", 1, true, &[("app", &app)]);
    }
    p
}

fn snapshot(nodes: usize) -> Snapshot {
    let mut s = Snapshot::new();
    for i in 0..nodes {
        s.upsert_node(&sim_node(i));
    }
    s
}

fn decisions(a: &Args) {
    let pods: Vec<Arc<PodInfo>> = (0..a.pods).map(|i| sim_pod(i).arc()).collect();

    let mut snap = snapshot(a.nodes);
    let mut d = Decider::new(None);
    let start = Instant::now();
    let mut placed = 0usize;
    for p in &pods {
        snap.ensure_groups(p);
        if let Ok(i) = d.decide(p, &snap) {
            snap.assume(p.clone(), i);
            placed += 1;
        }
    }
    let took = start.elapsed();

    // Anchor: one pass over every node per pod, resource fit only, best free cpu wins.
    let mut snap = snapshot(a.nodes);
    let start = Instant::now();
    let mut anchor_placed = 0usize;
    for p in &pods {
        let mut best: Option<(i64, usize)> = None;
        for (i, n) in snap.nodes.iter().enumerate() {
            if fits_only(p, n) {
                let free = n.alloc_cpu - n.req_cpu;
                if best.is_none_or(|(f, _)| free > f) {
                    best = Some((free, i));
                }
            }
        }
        if let Some((_, i)) = best {
            snap.assume(p.clone(), i);
            anchor_placed += 1;
        }
    }
    let anchor = start.elapsed();

    let rate = a.pods as f64 / took.as_secs_f64();
    let anchor_rate = a.pods as f64 / anchor.as_secs_f64();
    println!(
        "decisions: {} nodes, {} pods ({} placed) in {:.3} s: {:.0} pods/s",
        a.nodes,
        a.pods,
        placed,
        took.as_secs_f64(),
        rate
    );
    println!(
        "  anchor (resource fit over every node): {} placed in {:.3} s: {:.0} pods/s; ratio {:.2}",
        anchor_placed,
        anchor.as_secs_f64(),
        anchor_rate,
        rate / anchor_rate
    );
}

async fn create_all<K, F>(api: &Api<K>, n: usize, make: F) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    F: Fn(usize) -> K,
{
    let pp = PostParams::default();
    futures::stream::iter((0..n).map(|i| {
        let obj = make(i);
        let api = api.clone();
        let pp = pp.clone();
        async move { api.create(&pp, &obj).await.map(|_| ()) }
    }))
    .buffer_unordered(64)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

async fn bindings(a: &Args) -> anyhow::Result<()> {
    let cluster = common::Cluster::start().await?;
    let client = cluster.client().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let t = Instant::now();
    create_all(&nodes, a.nodes, sim_node).await?;
    create_all(&pods, a.pods, |i| {
        let mut p = sim_pod(i).build();
        p.metadata.uid = None;
        p
    })
    .await?;
    println!(
        "setup: {} nodes and {} pods created in {:.2} s",
        a.nodes,
        a.pods,
        t.elapsed().as_secs_f64()
    );

    // A watch that counts pods seen bound.
    let want = a.pods;
    let (tx, rx) = tokio::sync::oneshot::channel::<Instant>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let watch_api: Api<Pod> = Api::namespaced(cluster.client().await?, "default");
    tokio::spawn(async move {
        let mut bound = HashSet::new();
        let stream = watcher(watch_api, watcher::Config::default());
        futures::pin_mut!(stream);
        let mut ready = Some(ready_tx);
        let mut tx = Some(tx);
        while let Some(ev) = stream.next().await {
            let pods = match ev {
                Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => vec![p],
                Ok(watcher::Event::InitDone) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    vec![]
                }
                _ => vec![],
            };
            for p in pods {
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                    bound.insert(p.metadata.name.clone().unwrap_or_default());
                }
            }
            if bound.len() >= want {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(Instant::now());
                }
                break;
            }
        }
    });
    ready_rx.await?;

    let cfg = Config {
        max_writes_in_flight: a.in_flight,
        ..Config::default()
    };
    let in_flight = cfg.max_writes_in_flight;
    let start = Instant::now();
    let sched = tokio::spawn(berth_scheduler::run(client.clone(), cfg));
    let done = tokio::time::timeout(Duration::from_secs(600), rx).await??;
    let took = done - start;
    sched.abort();

    // Anchor: the same number of plain pod PATCHes through the same client.
    let start = Instant::now();
    futures::stream::iter((0..a.pods).map(|i| {
        let pods = pods.clone();
        async move {
            let patch = serde_json::json!({"metadata": {"annotations": {"bench": "1"}}});
            pods.patch(
                &format!("pod-{i:06}"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map(|_| ())
        }
    }))
    .buffer_unordered(in_flight)
    .try_collect::<Vec<()>>()
    .await?;
    let anchor = start.elapsed();

    let rate = a.pods as f64 / took.as_secs_f64();
    let anchor_rate = a.pods as f64 / anchor.as_secs_f64();
    println!(
        "with bindings: {} pods bound on {} nodes in {:.2} s (from start, initial lists \
         included): {:.0} pods/s",
        a.pods,
        a.nodes,
        took.as_secs_f64(),
        rate
    );
    println!(
        "  anchor ({} pod PATCHes, {} in flight): {:.2} s: {:.0} requests/s; ratio {:.2}",
        a.pods,
        in_flight,
        anchor.as_secs_f64(),
        anchor_rate,
        rate / anchor_rate
    );
    cluster.stop().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = args();
    decisions(&a);
    if a.decisions_only {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bindings(&a))
}
