//! The node agent on one node with real containers: a pod's life from Pending to Running
//! with an IP, crash loops with growing back-off, probes, OOM kills, deletion leaving no
//! trace, and an agent killed and restarted under running pods.

mod support;

use std::time::Duration;

use kube::api::DeleteParams;
use serde_json::json;
use support::*;

fn sleeper(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "main", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "echo started; trap 'exit 0' TERM; while true; do sleep 1; done"]
            }]
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_runs_with_an_ip_and_deletion_leaves_nothing() {
    let node = TestNode::start().await;
    let before_links = links();
    node.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "web", "image": "berth-testserver:latest", "imagePullPolicy": "Never",
                "args": ["--listen", "0.0.0.0:8080"],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}
            }]
        }
    }))
    .await;
    let pod = node
        .wait_pod("web", 60, "Running and Ready", |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && condition(p, "Ready").as_deref() == Some("True")
        })
        .await;
    let ip = pod
        .status
        .as_ref()
        .unwrap()
        .pod_ip
        .clone()
        .expect("a pod IP");
    assert!(
        ip.starts_with(&node.subnet_prefix),
        "{ip} is not from {}",
        node.subnet_prefix
    );
    assert_eq!(
        pod.status.as_ref().unwrap().host_ip.as_deref(),
        Some("127.0.0.1")
    );
    // The pod answers on its own address (inside the network namespace we made).
    let body = http_get(&format!("{ip}:8080"), "/env").await;
    assert!(body.contains("POD_NAME=web"), "{body}");
    let cs = container_status(&pod, "web").unwrap();
    assert!(cs.container_id.unwrap().starts_with("berth://"));
    assert!(cs.state.unwrap().running.is_some());

    // Delete: the agent stops it, finalises it in the API and leaves nothing behind.
    node.pods()
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    node.wait_gone("web", 30).await;
    let (pods, containers) = node.runtime_entries();
    assert_eq!(
        (pods, containers),
        (0, 0),
        "runtime records left; agent log:\n{}",
        tail(&node.agent_log(), 40)
    );
    assert!(
        !std::path::Path::new(&format!("/sys/fs/cgroup/memory/{}", node.cgroup_parent))
            .read_dir()
            .map(|mut d| d.any(|e| e.unwrap().file_name().to_string_lossy().starts_with("pod-")))
            .unwrap_or(false),
        "pod cgroups left"
    );
    let after_links = links();
    let extra: Vec<_> = after_links
        .iter()
        .filter(|l| !before_links.contains(l) && l.starts_with("veth"))
        .collect();
    assert!(extra.is_empty(), "veths left: {extra:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(node.agent_dir.to_str().unwrap()),
        "mounts left under the agent dir"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_container_backs_off_with_growing_delays() {
    let node = TestNode::start().await;
    node.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "crash"},
        "spec": {"containers": [{
            "name": "main", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", "echo boom; exit 3"]
        }]}
    }))
    .await;
    let p = node
        .wait_pod("crash", 60, "CrashLoopBackOff after 3 restarts", |p| {
            restarts(p, "main") >= 3
                && waiting_reason(p, "main").as_deref() == Some("CrashLoopBackOff")
        })
        .await;
    let cs = container_status(&p, "main").unwrap();
    let last = cs.last_state.unwrap().terminated.unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    let msg = cs.state.unwrap().waiting.unwrap().message.unwrap();
    assert!(msg.starts_with("back-off "), "{msg}");
    // Restart times: each gap waits for the back-off (1 s, 2 s, 4 s with these flags).
    let events = events_for(&node, "crash").await;
    assert!(events.iter().any(|(r, _)| r == "BackOff"), "{events:?}");
    assert!(
        events.iter().filter(|(r, _)| r == "Started").count() >= 1,
        "{events:?}"
    );
    let started = node
        .wait_pod("crash", 60, "5 restarts", |p| restarts(p, "main") >= 5)
        .await;
    let st = container_status(&started, "main").unwrap();
    assert!(st.restart_count >= 5);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_restarts_and_readiness_only_flips_ready() {
    let node = TestNode::start().await;
    node.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "probes"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [
            {
                "name": "live", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; sleep 3600"],
                "livenessProbe": {"exec": {"command": ["cat", "/tmp/alive"]}, "periodSeconds": 1, "failureThreshold": 1}
            },
            {
                "name": "ready", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "touch /tmp/ready; sleep 3; rm /tmp/ready; sleep 3600"],
                "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1, "failureThreshold": 1}
            }
        ]}
    }))
    .await;
    node.wait_pod("probes", 60, "the ready container ready", |p| {
        container_status(p, "ready").is_some_and(|c| c.ready)
    })
    .await;
    let p = node
        .wait_pod("probes", 60, "liveness restart and readiness flip", |p| {
            restarts(p, "live") >= 1
                && container_status(p, "ready").is_some_and(|c| !c.ready)
                && condition(p, "Ready").as_deref() == Some("False")
        })
        .await;
    assert_eq!(restarts(&p, "ready"), 0, "readiness must not restart");
    let events = events_for(&node, "probes").await;
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Unhealthy" && m.starts_with("Liveness probe failed")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Killing" && m.contains("liveness")),
        "{events:?}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_is_reported_as_oomkilled() {
    let node = TestNode::start().await;
    node.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "oom"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "hog", "image": "berth-testserver:latest", "imagePullPolicy": "Never",
            "args": ["--alloc-mb", "256"],
            "resources": {"limits": {"memory": "32Mi"}}
        }]}
    }))
    .await;
    let p = node
        .wait_pod("oom", 60, "Failed with OOMKilled", |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
        })
        .await;
    let t = container_status(&p, "hog")
        .unwrap()
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(t.reason.as_deref(), Some("OOMKilled"), "{t:?}");
    assert_eq!(t.exit_code, 137);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_agent_under_twenty_pods_restarts_none() {
    let mut node = TestNode::start().await;
    for i in 0..20 {
        node.create_pod(sleeper(&format!("s{i}"))).await;
    }
    let mut before = Vec::new();
    for i in 0..20 {
        let p = node
            .wait_pod(&format!("s{i}"), 120, "Running", |p| {
                container_status(p, "main").is_some_and(|c| c.ready)
            })
            .await;
        let cs = container_status(&p, "main").unwrap();
        before.push((
            cs.container_id.clone(),
            cs.state.unwrap().running.unwrap().started_at,
        ));
    }
    node.kill_agent();
    // Deleted while the agent is away: cleaned up when it returns.
    node.pods()
        .delete(
            "s19",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    node.start_agent();
    node.wait_gone("s19", 30).await;
    // Give the new agent time to look at every pod, then check nothing restarted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, was) in before.iter().enumerate().take(19) {
        let p = node
            .wait_pod(&format!("s{i}"), 30, "still running", |p| {
                container_status(p, "main").is_some_and(|c| c.ready)
            })
            .await;
        let cs = container_status(&p, "main").unwrap();
        assert_eq!(cs.restart_count, 0, "s{i} restarted");
        assert_eq!(
            (
                cs.container_id.clone(),
                cs.state.unwrap().running.unwrap().started_at
            ),
            *was,
            "s{i} is not the same container"
        );
    }
    let (pods, _) = node.runtime_entries();
    assert_eq!(
        pods, 19,
        "the deleted pod's sandbox is gone, the others stay"
    );
    node.stop().await;
}

fn links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

async fn events_for(node: &TestNode, pod: &str) -> Vec<(String, String)> {
    let api: kube::Api<k8s_openapi::api::core::v1::Event> =
        kube::Api::namespaced(node.client.clone(), "default");
    // Events are written in the background: give them a moment.
    for _ in 0..20 {
        let list = api.list(&Default::default()).await.unwrap();
        let out: Vec<(String, String)> = list
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(pod))
            .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect();
        if !out.is_empty() {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    vec![]
}
