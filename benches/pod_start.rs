//! Pod start latency on one node: from the create request to the API server until a watch
//! sees the pod `Running` with `Ready=True`, for pods created one at a time and for a burst
//! created at once. The anchor, measured in the same run, is the bundled runtime alone
//! starting the same sandbox and container with no API server or agent in between.
//!
//! `cargo bench --bench pod_start -- [--pods 100] [--burst 30] [--anchor 20]`

// A benchmark binary: its output is the report.
#![allow(clippy::print_stdout)]

#[path = "../e2e/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

struct Args {
    pods: usize,
    burst: usize,
    anchor: usize,
}

fn args() -> Args {
    let mut a = Args {
        pods: 100,
        burst: 30,
        anchor: 20,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let val = |i: usize| -> usize {
            argv.get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{} needs a number", argv[i]))
        };
        match argv[i].as_str() {
            "--pods" => a.pods = val(i),
            "--burst" => a.burst = val(i),
            "--anchor" => a.anchor = val(i),
            // cargo bench passes --bench.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn pod(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "pod-start"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "main", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"]
            }]
        }
    })
}

fn ready(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(f64::NAN),
    )
}

/// The runtime alone: sandbox (no network) and the same container, `n` times.
fn anchor(n: usize) -> Vec<f64> {
    use berth_runtime::pod::{ContainerConfig, Runtime, RuntimeConfig, SandboxConfig};
    let dir = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir()
        .unwrap();
    let shim = vec![env!("CARGO_BIN_EXE_berth").into(), "runtime".into()];
    let mut cfg = RuntimeConfig::new(dir.path().join("rt"), shim);
    cfg.cgroup_parent = format!("berth-bench-{}", std::process::id());
    let cfg_parent = cfg.cgroup_parent.clone();
    let rt = Runtime::open(cfg).unwrap();
    rt.images()
        .import(&support::images().join("busybox.tar"))
        .unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let id = format!("anchor-{i}");
        let t0 = Instant::now();
        rt.run_sandbox(&SandboxConfig {
            id: id.clone(),
            name: id.clone(),
            namespace: "default".into(),
            hostname: id.clone(),
            ..Default::default()
        })
        .unwrap();
        let c = rt
            .create_container(
                &id,
                &ContainerConfig {
                    name: "main".into(),
                    image: "busybox:latest".into(),
                    command: vec!["sleep".into(), "3600".into()],
                    log_path: Some(dir.path().join(format!("{id}.log"))),
                    ..Default::default()
                },
            )
            .unwrap();
        rt.start_container(&c).unwrap();
        out.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    for i in 0..n {
        let id = format!("anchor-{i}");
        let _ = rt.stop_sandbox(&id, Duration::ZERO);
        let _ = rt.remove_sandbox(&id);
    }
    let _ = rt.recover();
    support::remove_cgroup_parent(&cfg_parent);
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let anchor_ms = tokio::task::spawn_blocking(move || anchor(a.anchor))
        .await
        .unwrap();
    let node = support::TestNode::start().await;
    let api = node.pods();
    // One watch sees every pod become Ready.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watch_api = api.clone();
    let watch = tokio::spawn(async move {
        let stream = watcher(
            watch_api,
            watcher::Config::default().labels("bench=pod-start"),
        )
        .applied_objects()
        .default_backoff();
        futures::pin_mut!(stream);
        let mut seen = std::collections::HashSet::new();
        while let Some(Ok(p)) = stream.next().await {
            let name = p.metadata.name.clone().unwrap_or_default();
            if ready(&p) && seen.insert(name.clone()) {
                let _ = tx.send((name, Instant::now()));
            }
        }
    });

    // One at a time.
    let mut seq = Vec::new();
    for i in 0..a.pods {
        let name = format!("seq-{i}");
        let t0 = Instant::now();
        node.create_pod(pod(&name)).await;
        loop {
            let (n, at) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .expect("a pod became ready within 60 s")
                .unwrap();
            if n == name {
                seq.push(at.duration_since(t0).as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    // A burst, all created at once.
    let mut created = HashMap::new();
    let creates = (0..a.burst).map(|i| {
        let name = format!("burst-{i}");
        let node = &node;
        async move {
            let t0 = Instant::now();
            node.create_pod(pod(&name)).await;
            (name, t0)
        }
    });
    for (n, t0) in futures::future::join_all(creates).await {
        created.insert(n, t0);
    }
    let mut burst = Vec::new();
    while burst.len() < a.burst {
        let (n, at) = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .expect("burst pods became ready within 120 s")
            .unwrap();
        if let Some(t0) = created.get(&n) {
            burst.push(at.duration_since(*t0).as_secs_f64() * 1000.0);
        }
    }
    watch.abort();

    let (ap50, ap99, amax) = summary(anchor_ms);
    let (sp50, sp99, smax) = summary(seq);
    let (bp50, bp99, bmax) = summary(burst);
    println!("pod start latency: create in the API -> Running and Ready seen by a watch (one node, 2 CPUs)");
    println!("| case | pods | p50 ms | p99 ms | max ms | p50 / anchor p50 |");
    println!("|---|---|---|---|---|---|");
    println!("| anchor: runtime alone (sandbox + container, no network) | {} | {ap50:.1} | {ap99:.1} | {amax:.1} | 1.0 |", a.anchor);
    println!(
        "| one at a time | {} | {sp50:.1} | {sp99:.1} | {smax:.1} | {:.1} |",
        a.pods,
        sp50 / ap50
    );
    println!(
        "| burst, created at once | {} | {bp50:.1} | {bp99:.1} | {bmax:.1} | {:.1} |",
        a.burst,
        bp50 / ap50
    );

    let _ = api
        .delete_collection(
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
            &kube::api::ListParams::default().labels("bench=pod-start"),
        )
        .await;
    // Give the agent a moment to remove what it ran; the node's drop removes the rest.
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.runtime_entries().0 > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.stop().await;
}
