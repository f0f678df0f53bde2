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
    let leftovers: Vec<_> = ["pods", "logs"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(node.agent_dir.join(d))
                .into_iter()
                .flatten()
        })
        .map(|e| e.unwrap().path())
        .collect();
    assert!(leftovers.is_empty(), "agent state left: {leftovers:?}");
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
    // The delays grow: note when each restart shows up (1 s, 2 s, 4 s back-off here).
    let mut seen_at = vec![(restarts(&p, "main"), std::time::Instant::now())];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen_at.last().unwrap().0 < 6 && std::time::Instant::now() < deadline {
        let p = node.pods().get("crash").await.unwrap();
        let n = restarts(&p, "main");
        if n != seen_at.last().unwrap().0 {
            seen_at.push((n, std::time::Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gaps: Vec<Duration> = seen_at.windows(2).map(|w| w[1].1 - w[0].1).collect();
    assert!(gaps.len() >= 2, "too few restarts seen: {seen_at:?}");
    let (first, last) = (gaps[0], *gaps.last().unwrap());
    assert!(
        last > first + Duration::from_millis(500),
        "back-off did not grow: gaps {gaps:?}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_exec_port_forward_and_top_work() {
    let node = TestNode::start().await;
    node.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "talk"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", "for i in 1 2 3; do echo line-$i; done; while true; do echo tick; sleep 0.3; done"]
        }]}
    }))
    .await;
    node.wait_pod("talk", 60, "Running", |p| {
        container_status(p, "main").is_some_and(|c| c.ready)
    })
    .await;

    // logs, and --tail.
    let logs = node.kubectl_ok(&["logs", "talk"]);
    assert!(logs.starts_with("line-1\nline-2\nline-3\n"), "{logs}");
    let last = node.kubectl_ok(&["logs", "talk", "--tail=1"]);
    assert_eq!(last, "tick\n");
    // logs -f delivers new lines as they are written.
    let mut follow = node
        .kubectl_cmd(&["logs", "-f", "talk", "--since=1s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let got = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let started = std::time::Instant::now();
        let mut ticks = 0;
        while ticks < 5 {
            match lines.next() {
                Some(Ok(l)) if l == "tick" => ticks += 1,
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        (ticks, started.elapsed())
    });
    let (ticks, took) = tokio::time::timeout(Duration::from_secs(20), got)
        .await
        .unwrap()
        .unwrap();
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(ticks, 5, "logs -f stopped delivering");
    assert!(
        took >= Duration::from_millis(600),
        "5 ticks came at once ({took:?}): not followed live"
    );

    // attach follows the container's own output.
    let mut attach = node
        .kubectl_cmd(&["attach", "talk"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = attach.stdout.take().unwrap();
    let ticks = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l == "tick")
            .take(2)
            .count()
    });
    let ticks = tokio::time::timeout(Duration::from_secs(20), ticks)
        .await
        .unwrap()
        .unwrap();
    let _ = attach.kill();
    let _ = attach.wait();
    assert_eq!(ticks, 2, "kubectl attach showed no output");

    // exec: output, exit codes, stdin.
    let ls = node.kubectl_ok(&["exec", "talk", "--", "ls", "/"]);
    for d in ["bin", "etc", "proc"] {
        assert!(ls.lines().any(|l| l == d), "{ls}");
    }
    let out = node.kubectl(&[
        "exec",
        "talk",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err"));
    let mut cat = node
        .kubectl_cmd(&["exec", "-i", "talk", "--", "sh", "-c", "tr a-z A-Z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = cat.stdin.take().unwrap();
        stdin.write_all(b"hello through stdin\n").unwrap();
    }
    let out = cat.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HELLO THROUGH STDIN\n"
    );

    // exec -it through a real terminal.
    let transcript = tokio::task::spawn_blocking({
        let cmd = node.kubectl_cmd(&["exec", "-it", "talk", "--", "sh"]);
        move || drive_tty(cmd, &["tty; echo sum=$((40+2))\r", "exit 7\r"], "sum=42")
    })
    .await
    .unwrap();
    assert!(transcript.0.contains("/dev/pts/"), "{}", transcript.0);
    assert!(transcript.0.contains("sum=42"), "{}", transcript.0);
    assert_eq!(transcript.1, Some(7), "{}", transcript.0);

    // kubectl top: real numbers from the agent's stats (the first sample has no rate yet).
    let mut top = String::new();
    for _ in 0..20 {
        let out = node.kubectl(&["top", "pod", "talk", "--no-headers"]);
        top = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && !top.trim().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let fields: Vec<&str> = top.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"talk"), "{top}");
    assert!(
        fields[1].ends_with('m') && fields[2].ends_with("Mi"),
        "{top}"
    );
    // A busybox shell uses well under a MiB: look at the exact figure.
    let raw = node.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/talk",
    ]);
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let mem = v["containers"][0]["usage"]["memory"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let kib: u64 = mem.trim_end_matches("Ki").parse().unwrap_or(0);
    assert!(
        mem.ends_with("Ki") && kib > 0,
        "a running shell uses some memory: {raw}"
    );
    let top_node = node.kubectl_ok(&["top", "node", "--no-headers"]);
    let f: Vec<&str> = top_node.split_whitespace().collect();
    assert_eq!(f[0], node.node, "{top_node}");
    assert!(f[1].ends_with('m') && f[3].ends_with("Mi"), "{top_node}");
    let node_mem: u64 = f[3].trim_end_matches("Mi").parse().unwrap();
    assert!(node_mem > 64, "{top_node}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reaches_the_pod_and_images_load_through_the_api() {
    let node = TestNode::start().await;
    node.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "web", "image": "berth-testserver:latest", "imagePullPolicy": "Never",
            "args": ["--listen", "127.0.0.1:8080"]
        }]}
    }))
    .await;
    node.wait_pod("web", 60, "Running", |p| {
        container_status(p, "web").is_some_and(|c| c.ready)
    })
    .await;
    // The server listens on the pod's loopback only: port-forward dials inside the pod.
    let port = free_port();
    let mut pf = node
        .kubectl_cmd(&["port-forward", "pod/web", &format!("{port}:8080")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut body = String::new();
    for _ in 0..50 {
        if let Ok(Ok(b)) = tokio::time::timeout(
            Duration::from_secs(2),
            try_http_get(&format!("127.0.0.1:{port}"), "/"),
        )
        .await
        {
            body = b;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = pf.kill();
    let _ = pf.wait();
    assert!(body.contains("hostname=web"), "{body}");

    // An image tarball loaded into the node through the API server's node proxy.
    let tar = std::fs::read(images().join("busybox.tar")).unwrap();
    let req = http::Request::post(format!("/api/v1/nodes/{}/proxy/images/load", node.node))
        .header("content-type", "application/x-tar")
        .body(tar)
        .unwrap();
    let answer = node.client.request_text(req).await.unwrap();
    assert!(
        answer.contains("docker.io/library/busybox:latest"),
        "{answer}"
    );
    node.stop().await;
}

/// Run `cmd` on a new pseudo-terminal, type `inputs` (after `ready` text appears, the
/// first once the shell prompt shows), and return what the terminal showed and the exit code.
fn drive_tty(
    mut cmd: std::process::Command,
    inputs: &[&str],
    ready: &str,
) -> (String, Option<i32>) {
    use std::io::{Read, Write};
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    let mut child = cmd.spawn().unwrap();
    let master = std::fs::File::from(pty.master);
    let mut reader = master.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut writer = master;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let wait_for = |seen: &mut String, what: &str| {
        while !seen.contains(what) && std::time::Instant::now() < deadline {
            if let Ok(b) = rx.recv_timeout(Duration::from_millis(100)) {
                seen.push_str(&String::from_utf8_lossy(&b));
            }
        }
    };
    wait_for(&mut seen, "#");
    writer.write_all(inputs[0].as_bytes()).unwrap();
    wait_for(&mut seen, ready);
    for i in &inputs[1..] {
        writer.write_all(i.as_bytes()).unwrap();
    }
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    while let Ok(b) = rx.recv_timeout(Duration::from_millis(100)) {
        seen.push_str(&String::from_utf8_lossy(&b));
    }
    (seen, code)
}

async fn try_http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    if out.is_empty() {
        return Err(std::io::Error::other("empty answer"));
    }
    Ok(out)
}

/// An agent cut off from the API server (here: the server is stopped) stops its own
/// containers once it has gone `--fence-after` without renewing its Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_cannot_renew_its_lease_fences_its_pods() {
    let mut node = TestNode::start().await;
    node.kill_agent();
    node.agent_args.push("--fence-after=3s".into());
    node.start_agent();
    node.wait_node_ready().await;
    node.create_pod(sleeper("fenced")).await;
    node.wait_pod("fenced", 60, "Running", |p| {
        container_status(p, "main").is_some_and(|c| c.ready)
    })
    .await;
    let running = |node: &TestNode| {
        let shim = vec![env!("CARGO_BIN_EXE_berth").into(), "runtime".into()];
        let mut cfg = berth_runtime::pod::RuntimeConfig::new(node.runtime_root(), shim);
        cfg.cgroup_parent = node.cgroup_parent.clone();
        let rt = berth_runtime::pod::Runtime::open(cfg).unwrap();
        rt.list_containers(None)
            .unwrap()
            .iter()
            .filter(|c| c.state == berth_runtime::pod::ContainerState::Running)
            .count()
    };
    assert_eq!(running(&node), 1);
    let cut = std::time::Instant::now();
    node.cp.take().unwrap().shutdown().await;
    loop {
        if running(&node) == 0 {
            break;
        }
        assert!(
            cut.elapsed() < Duration::from_secs(20),
            "the container still runs {:?} after the cut: {}",
            cut.elapsed(),
            tail(&node.agent_log(), 20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fenced_after = cut.elapsed();
    tracing::info!(?fenced_after, "fenced");
    // The last renewal was at most 10 s before the cut; fencing comes 3 s after it.
    assert!(fenced_after <= Duration::from_secs(15), "{fenced_after:?}");
    // Fencing stops the pods, not the agent: it keeps trying to renew.
    assert!(
        node.agent.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the agent exited: {}",
        tail(&node.agent_log(), 20)
    );
    node.stop().await;
}
