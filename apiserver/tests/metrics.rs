//! `metrics.k8s.io` from the agents' summaries: the real `kubectl top` against fake agents.

mod common;

use common::agent::FakeAgent;
use common::Cluster;
use serde_json::{json, Value};

fn pki(c: &Cluster) -> berth_apiserver::tls::Pki {
    berth_apiserver::tls::Pki::bootstrap(
        &c.args.data_dir,
        &["127.0.0.1".to_string(), "localhost".to_string()],
    )
    .unwrap()
}

/// A container's usage: name, nano cores, working set bytes.
type Usage<'a> = (&'a str, u64, u64);

/// A summary with the node's usage and the given pods, each `(ns, name, containers)`.
fn summary(node: &str, cpu: u64, memory: u64, pods: &[(&str, &str, &[Usage<'_>])]) -> Value {
    let t = "2026-01-01T00:00:00Z";
    let pods: Vec<Value> = pods
        .iter()
        .map(|(ns, name, containers)| {
            let cs: Vec<Value> = containers
                .iter()
                .map(|(c, cpu, mem)| {
                    json!({"name": c, "cpu": {"time": t, "usageNanoCores": cpu,
                        "usageCoreNanoSeconds": 1}, "memory": {"time": t, "workingSetBytes": mem,
                        "usageBytes": mem}})
                })
                .collect();
            json!({"podRef": {"name": name, "namespace": ns, "uid": ""}, "containers": cs})
        })
        .collect();
    json!({"node": {"nodeName": node,
            "cpu": {"time": t, "usageNanoCores": cpu, "usageCoreNanoSeconds": 1},
            "memory": {"time": t, "workingSetBytes": memory, "usageBytes": memory}},
        "pods": pods})
}

fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_top_reads_the_agents() {
    let c = Cluster::start().await;
    let pki = pki(&c);
    let a1 = FakeAgent::start(&pki, "n1").await;
    let a2 = FakeAgent::start(&pki, "n2").await;
    const MI: u64 = 1024 * 1024;
    *a1.state.summary.lock().unwrap() = summary(
        "n1",
        250_000_000,
        512 * MI,
        &[
            (
                "shop",
                "web",
                &[("app", 5_000_000, 10 * MI), ("side", 1_000_000, 2 * MI)],
            ),
            ("other", "elsewhere", &[("x", 9_000_000, 9 * MI)]),
        ],
    );
    *a2.state.summary.lock().unwrap() = summary(
        "n2",
        1_500_000_000,
        2048 * MI,
        &[("shop", "db", &[("pg", 100_000_000, 300 * MI)])],
    );
    let mut n2 = a2.node("n2");
    n2["metadata"]["labels"]["zone"] = json!("b");
    // A node whose agent does not answer: left out.
    let mut dead = a1.node("dead");
    dead["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] = json!(common::free_port());
    let ns =
        |name: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    let pod = |name: &str, node: &str, containers: &[&str], labels: Value| {
        let cs: Vec<Value> = containers
            .iter()
            .map(|c| json!({"name": c, "image": "busybox"}))
            .collect();
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "labels": labels},
            "spec": {"nodeName": node, "containers": cs}})
    };
    let manifests = [
        a1.node("n1"),
        n2,
        dead,
        ns("shop"),
        pod("web", "n1", &["app", "side"], json!({"app": "web"})),
        pod("db", "n2", &["pg"], json!({"app": "db"})),
    ];
    for m in manifests {
        let file = common::write(c.dir.path(), "obj.json", &m.to_string());
        c.kubectl_ok(&["create", "-f", file.to_str().unwrap()]);
    }

    let out = c.kubectl_ok(&["top", "node"]);
    let r = rows(&out);
    assert_eq!(
        r[0],
        ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"],
        "{out}"
    );
    assert!(
        r.contains(&vec![
            "n1".into(),
            "250m".into(),
            "6%".into(),
            "512Mi".into(),
            "6%".into()
        ]),
        "{out}"
    );
    assert!(
        r.contains(&vec![
            "n2".into(),
            "1500m".into(),
            "37%".into(),
            "2048Mi".into(),
            "25%".into()
        ]),
        "{out}"
    );
    // kubectl lists the node without metrics as unknown.
    assert!(
        r.contains(&vec![
            "dead".into(),
            "<unknown>".into(),
            "<unknown>".into(),
            "<unknown>".into(),
            "<unknown>".into()
        ]),
        "{out}"
    );

    let out = c.kubectl_ok(&["top", "node", "-l", "zone=b"]);
    assert_eq!(rows(&out).len(), 2, "{out}");
    assert!(out.contains("n2") && !out.contains("n1"), "{out}");

    let out = c.kubectl_ok(&["top", "pod", "-n", "shop"]);
    let r = rows(&out);
    assert_eq!(r[0], ["NAME", "CPU(cores)", "MEMORY(bytes)"], "{out}");
    assert!(
        r.contains(&vec!["web".into(), "6m".into(), "12Mi".into()]),
        "{out}"
    );
    assert!(
        r.contains(&vec!["db".into(), "100m".into(), "300Mi".into()]),
        "{out}"
    );
    assert_eq!(r.len(), 3, "{out}");

    let out = c.kubectl_ok(&["top", "pod", "-n", "shop", "-l", "app=web", "--containers"]);
    let r = rows(&out);
    assert!(
        r.contains(&vec![
            "web".into(),
            "app".into(),
            "5m".into(),
            "10Mi".into()
        ]),
        "{out}"
    );
    assert!(
        r.contains(&vec![
            "web".into(),
            "side".into(),
            "1m".into(),
            "2Mi".into()
        ]),
        "{out}"
    );
    assert!(!out.contains("db"), "{out}");

    // The objects on the wire.
    let raw = c.kubectl_ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes/n1"]);
    let v: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["kind"], "NodeMetrics");
    assert_eq!(
        v["usage"],
        json!({"cpu": "250000000n", "memory": "524288Ki"})
    );
    assert_eq!(v["timestamp"], "2026-01-01T00:00:00Z");
    assert_eq!(v["window"], "10s");
    let raw = c.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods/web",
    ]);
    let v: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["kind"], "PodMetrics");
    assert_eq!(
        v["containers"][1],
        json!({"name": "side", "usage": {"cpu": "1000000n", "memory": "2048Ki"}})
    );
    let watch = c.kubectl(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/nodes?watch=true",
    ]);
    assert!(!watch.status.success());
    let out = c.kubectl_ok(&["api-resources", "--api-group", "metrics.k8s.io"]);
    assert!(
        out.contains("NodeMetrics") && out.contains("PodMetrics"),
        "{out}"
    );

    let out = c.kubectl_ok(&["top", "pod", "db", "-n", "shop"]);
    assert!(out.contains("100m"), "{out}");
    let missing = c.kubectl(&["top", "pod", "nope", "-n", "shop"]);
    assert!(!missing.status.success());
    c.stop().await;
}
