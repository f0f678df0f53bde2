//! Cluster scenarios, written once and run against any cluster `deploy/cluster` brings up:
//! the provider is `BERTH_E2E_PROVIDER` (`netns`, the default, or `qemu`), the size
//! `BERTH_E2E_NODES` and `BERTH_E2E_CONTROL_PLANES` (default 3 and 3), and
//! `BERTH_E2E_SCENARIOS` picks some by name (comma-separated; default all). One cluster
//! serves every scenario, in order; each prints its wall time, and a failed one does not
//! stop the others. Needs root.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

mod cluster;
use cluster::{hostnames, Cluster};

type Scenario = fn(&Cluster);

/// In the order they run: the ones that power nodes off come last, and put them back on.
const SCENARIOS: &[(&str, Scenario)] = &[
    ("cross-node-service", cross_node_service),
    ("scale", scale_up_and_down),
    ("job", job_completes),
    ("crash-backoff", crashing_pod_backs_off),
    ("remote-pod-io", logs_exec_port_forward_on_a_remote_node),
    ("rolling-update", rolling_update_without_failed_requests),
    ("worker-loss", worker_loss),
    ("leader-loss", leader_loss),
];

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn scenarios() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let only: Option<BTreeSet<String>> = std::env::var("BERTH_E2E_SCENARIOS")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    if let Some(only) = &only {
        let known: BTreeSet<String> = SCENARIOS.iter().map(|s| s.0.to_string()).collect();
        let unknown: Vec<&String> = only.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "unknown scenarios {unknown:?}; known: {known:?}"
        );
    }
    let started = Instant::now();
    let c = Cluster::from_env(
        env_or("BERTH_E2E_NODES", 3),
        env_or("BERTH_E2E_CONTROL_PLANES", 3),
    );
    report("bring-up", &c, started.elapsed(), true);
    let mut failed = Vec::new();
    for (name, scenario) in SCENARIOS {
        if only.as_ref().is_some_and(|o| !o.contains(*name)) {
            continue;
        }
        let t = Instant::now();
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&c))).is_ok();
        report(name, &c, t.elapsed(), ok);
        if !ok {
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "scenarios failed: {failed:?}");
}

/// One line per scenario on stderr (the test's output), for the wall times in notes.
fn report(name: &str, c: &Cluster, took: Duration, ok: bool) {
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "scenario {name:<20} {provider} {nodes} nodes/{cps} cp: {} in {:.1} s",
            if ok { "ok" } else { "FAILED" },
            took.as_secs_f64(),
            provider = c.provider,
            nodes = c.nodes.len(),
            cps = c.control_planes,
        );
    }
}

/// A Deployment of the test server, spread over the nodes, with a Service of its name.
fn web(name: &str, replicas: usize, extra_args: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  strategy: {{rollingUpdate: {{maxUnavailable: 0, maxSurge: 1}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      topologySpreadConstraints:
      - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {{matchLabels: {{app: {name}}}}}}}
      tolerations:
      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}}
      - {{key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}}
      containers:
      - name: web
        image: berth-testserver:latest
        imagePullPolicy: Never
        args: [{extra_args}]
        ports: [{{containerPort: 8080, name: http}}]
        readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"#
    )
}

/// A pod that sleeps, to run clients in, on `node`.
fn client_pod(name: &str, node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: berth-testserver:latest, imagePullPolicy: Never, args: ["--sleep"]}}
"#
    )
}

/// (name, node, ready) of the pods labelled `app=<app>` that are not being deleted.
fn pods_of(c: &Cluster, app: &str) -> Vec<(String, String, bool)> {
    c.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.conditions[?(@.type==\"Ready\")].status} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ])
    .lines()
    .filter_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        (w.len() == 3).then(|| (w[0].to_string(), w[1].to_string(), w[2] == "True"))
    })
    .collect()
}

/// Waits for exactly `n` ready pods of `app` and nothing else; their (name, node).
fn ready_pods(c: &Cluster, app: &str, n: usize, secs: u64) -> Vec<(String, String)> {
    c.wait(&format!("{n} ready pods of {app}"), secs, || {
        let pods = pods_of(c, app);
        (pods.len() == n && pods.iter().all(|p| p.2))
            .then(|| pods.into_iter().map(|p| (p.0, p.1)).collect())
    })
}

fn wait_running(c: &Cluster, pod: &str) {
    c.wait(&format!("pod {pod} running"), 90, || {
        let phase = c.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]);
        (phase == "Running").then_some(())
    });
}

/// kubectl's arguments for this cluster, for a thread of its own.
fn kubectl_args(c: &Cluster) -> Vec<String> {
    c.kubectl_cmd()
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

fn delete(c: &Cluster, what: &[&str]) {
    let mut args = vec![
        "delete",
        "--ignore-not-found",
        "--wait=true",
        "--timeout=90s",
    ];
    args.extend_from_slice(what);
    c.kubectl_ok(&args);
}

/// A Deployment across the nodes and its Service, reached from a pod on another node by
/// ClusterIP and by DNS name; every backend answers.
fn cross_node_service(c: &Cluster) {
    let n = c.nodes.len();
    c.apply(&web("xweb", n, ""));
    let last = c.nodes.last().unwrap().clone();
    c.apply(&client_pod("xclient", &last));
    let pods = ready_pods(c, "xweb", n, 120);
    wait_running(c, "xclient");
    let nodes: BTreeSet<&str> = pods.iter().map(|p| p.1.as_str()).collect();
    assert!(nodes.len() >= 2, "backends on one node only: {pods:?}");
    assert!(
        pods.iter().any(|p| p.1 != last),
        "no backend on another node than the client's: {pods:?}"
    );
    let all: BTreeSet<String> = pods.iter().map(|p| p.0.clone()).collect();
    let vip = c.kubectl_ok(&["get", "svc", "xweb", "-o", "jsonpath={.spec.clusterIP}"]);
    for url in [
        format!("http://{vip}/"),
        "http://xweb.default.svc.cluster.local/".to_string(),
    ] {
        c.wait(&format!("{url} to reach every backend"), 60, || {
            let (_, lines) = c.get_from("xclient", &url, 10 * n as u32, 0);
            (hostnames(&lines) == all).then_some(())
        });
    }
    delete(c, &["deployment/xweb", "service/xweb", "pod/xclient"]);
}

/// Scale a Deployment up across the nodes, and back down.
fn scale_up_and_down(c: &Cluster) {
    c.apply(&web("scale", 1, ""));
    ready_pods(c, "scale", 1, 90);
    let up = 2 * c.nodes.len();
    c.kubectl_ok(&["scale", "deployment/scale", &format!("--replicas={up}")]);
    let pods = ready_pods(c, "scale", up, 120);
    let nodes: BTreeSet<&str> = pods.iter().map(|p| p.1.as_str()).collect();
    assert_eq!(
        nodes.len(),
        c.nodes.len(),
        "spread over every node: {pods:?}"
    );
    c.kubectl_ok(&["scale", "deployment/scale", "--replicas=2"]);
    ready_pods(c, "scale", 2, 90);
    delete(c, &["deployment/scale", "service/scale"]);
}

/// A Job of two pods that complete.
fn job_completes(c: &Cluster) {
    c.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: done}
spec:
  completions: 2
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: berth-testserver:latest, imagePullPolicy: Never, args: ["--exit-code", "0"]}
"#,
    );
    c.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/done",
        "--timeout=120s",
    ]);
    let succeeded = c.kubectl_ok(&["get", "job", "done", "-o", "jsonpath={.status.succeeded}"]);
    assert_eq!(succeeded, "2");
    delete(c, &["job/done"]);
}

/// A container that keeps crashing is restarted with a growing delay, shown as
/// CrashLoopBackOff.
fn crashing_pod_backs_off(c: &Cluster) {
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: berth-testserver:latest, imagePullPolicy: Never, args: ["--exit-code", "3"]}
"#,
    );
    let restarts = c.wait("CrashLoopBackOff", 120, || {
        let out = c.kubectl_ok(&[
            "get",
            "pod",
            "crasher",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].lastState.terminated.exitCode}",
        ]);
        let w: Vec<&str> = out.split_whitespace().collect();
        match w.as_slice() {
            ["CrashLoopBackOff", n, "3"] if n.parse::<u32>().unwrap_or(0) >= 1 => {
                n.parse::<u32>().ok()
            }
            _ => None,
        }
    });
    // Still backing off a while later: restarted at most once more in 5 s.
    std::thread::sleep(Duration::from_secs(5));
    let later: u32 = c
        .kubectl_ok(&[
            "get",
            "pod",
            "crasher",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ])
        .parse()
        .unwrap();
    assert!(
        later <= restarts + 1,
        "restarts {restarts} -> {later} in 5 s"
    );
    delete(c, &["pod/crasher"]);
}

/// `kubectl logs`, `exec` and `port-forward` on a pod on another node than the API
/// server kubectl talks to.
fn logs_exec_port_forward_on_a_remote_node(c: &Cluster) {
    let node = c.nodes.last().unwrap().clone();
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: remote}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: berth-testserver:latest, imagePullPolicy: Never, args: ["--print", "hello from {node}"]}}
"#
    ));
    wait_running(c, "remote");
    let logs = c.wait("the pod's logs", 30, || {
        let l = c.kubectl_ok(&["logs", "remote"]);
        l.contains("listening on").then_some(l)
    });
    assert!(logs.contains(&format!("hello from {node}")), "{logs}");
    let (ok, lines) = c.get_from("remote", "http://127.0.0.1:8080/", 1, 0);
    assert!(
        ok && hostnames(&lines) == BTreeSet::from(["remote".to_string()]),
        "{lines:?}"
    );

    // port-forward to an ephemeral local port; its first line names it.
    use std::io::{BufRead, Read, Write};
    let mut pf = c
        .kubectl_cmd()
        .args(["port-forward", "pod/remote", ":8080"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The reader lives until kubectl is killed: kubectl dies of SIGPIPE when its stdout
    // closes (it prints a second line for [::1]).
    let mut out = std::io::BufReader::new(pf.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let port = first
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("port-forward said {first:?}"))
        .to_string();
    let body = (|| -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut r = String::new();
        s.read_to_string(&mut r)?;
        Ok(r)
    })();
    let _ = pf.kill();
    let _ = pf.wait();
    drop(out);
    let body = body.unwrap();
    assert!(body.contains("hostname=remote"), "{body}");
    delete(c, &["pod/remote"]);
}

/// A rolling update while a client calls the Service all the while: no request fails.
fn rolling_update_without_failed_requests(c: &Cluster) {
    // Each server keeps serving 5 s after SIGTERM (failing readiness), the time it takes
    // every node's proxy to drop it, with room for a loaded machine.
    c.apply(&web("roll", 3, r#""--drain-secs", "5""#));
    let client_node = c.nodes.first().unwrap().clone();
    c.apply(&client_pod("rclient", &client_node));
    let before: BTreeSet<String> = ready_pods(c, "roll", 3, 120)
        .into_iter()
        .map(|p| p.0)
        .collect();
    wait_running(c, "rclient");
    // By ClusterIP: this is about the proxy during an update (DNS has scenarios of its own).
    let vip = c.kubectl_ok(&["get", "svc", "roll", "-o", "jsonpath={.spec.clusterIP}"]);
    let url = format!("http://{vip}/");
    c.wait("the Service to answer", 60, || {
        c.get_from("rclient", &url, 1, 0).0.then_some(())
    });
    // About 20 s of calls, 20 a second; the update starts 3 s in.
    let caller = {
        let args = kubectl_args(c);
        let url = url.clone();
        std::thread::spawn(move || {
            std::process::Command::new("kubectl")
                .args(&args)
                .args(["exec", "rclient", "--", "/testserver", "--get", &url])
                .args(["--count", "400", "--interval-ms", "50"])
                .output()
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    c.kubectl_ok(&["set", "env", "deployment/roll", "VERSION=2"]);
    c.kubectl_ok(&["rollout", "status", "deployment/roll", "--timeout=120s"]);
    let rollout = t.elapsed();
    let out = caller.join().unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    let failed: Vec<&String> = lines
        .iter()
        .filter(|l| !l.starts_with("hostname="))
        .collect();
    let seen = hostnames(&lines);
    let after: BTreeSet<String> = ready_pods(c, "roll", 3, 60)
        .into_iter()
        .map(|p| p.0)
        .collect();
    tracing::info!(
        requests = lines.len(),
        rollout_secs = rollout.as_secs_f64(),
        "rolling update"
    );
    assert!(
        failed.is_empty() && out.status.success(),
        "{} of {} requests failed during the update: {:?}",
        failed.len(),
        lines.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(lines.len() >= 400, "only {} answers", lines.len());
    assert!(
        before.is_disjoint(&after),
        "the update replaced no pod: {before:?} {after:?}"
    );
    assert!(
        !seen.is_disjoint(&before) && !seen.is_disjoint(&after),
        "the calls did not span the update (the rollout took {rollout:?}): saw {seen:?}, old {before:?}, new {after:?}"
    );
    delete(c, &["deployment/roll", "service/roll", "pod/rclient"]);
}

/// The Raft leader among the control-plane members, from each one's `/metrics`.
fn raft_leader(c: &Cluster, members: &[String]) -> Option<String> {
    members
        .iter()
        .find(|m| {
            let out = c
                .kubectl_cmd()
                .args(["--server", &format!("https://{}:6443", c.address(m))])
                .args(["--request-timeout=3s", "get", "--raw", "/metrics"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.starts_with("berth_store_is_leader{") && l.ends_with(" 1"))
        })
        .cloned()
}

fn control_planes(c: &Cluster) -> Vec<String> {
    c.nodes[..c.control_planes].to_vec()
}

/// Waits until `node` is Ready again.
fn node_ready(c: &Cluster, node: &str, secs: u64) {
    c.wait(&format!("{node} Ready"), secs, || {
        let s = c.kubectl_ok(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (s == "True").then_some(())
    });
}

/// A node powered off: its pods are replaced on the other nodes within the configured
/// bound (the node monitor's grace period, 40 s, plus the pods' 2 s toleration); then the
/// node comes back.
fn worker_loss(c: &Cluster) {
    // Not the node kubectl talks to (n1), nor the Raft leader.
    let leader = raft_leader(c, &control_planes(c));
    let victim = c
        .nodes
        .iter()
        .rev()
        .find(|n| n.as_str() != "n1" && Some(*n) != leader.as_ref())
        .expect("a node that is neither n1 nor the leader")
        .clone();
    let n = c.nodes.len();
    c.apply(&web("survivor", n, ""));
    let pods = ready_pods(c, "survivor", n, 120);
    assert!(
        pods.iter().any(|p| p.1 == victim),
        "no pod on {victim}: {pods:?}"
    );
    let t = Instant::now();
    c.stop_node(&victim);
    let bound = Duration::from_secs(40 + 2 + 60);
    let moved = c.wait(
        &format!("the pods of {victim} replaced elsewhere"),
        bound.as_secs(),
        || {
            let pods = pods_of(c, "survivor");
            let ok = pods.len() == n && pods.iter().all(|p| p.2 && p.1 != victim);
            ok.then_some(pods)
        },
    );
    let took = t.elapsed();
    tracing::info!(victim, secs = took.as_secs_f64(), ?moved, "pods replaced");
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "worker-loss: the pods of {victim} ran elsewhere {:.1} s after it went off",
            took.as_secs_f64()
        );
    }
    c.start_node(&victim);
    node_ready(c, &victim, 120);
    delete(c, &["deployment/survivor", "service/survivor"]);
}

/// The control-plane member holding Raft leadership powered off: the API keeps serving
/// after re-election, and no write it acknowledged is lost.
fn leader_loss(c: &Cluster) {
    if c.control_planes < 3 {
        tracing::warn!(
            control_planes = c.control_planes,
            "leader-loss needs 3 control-plane members: skipped"
        );
        return;
    }
    let members = control_planes(c);
    let leader = c.wait("a Raft leader", 30, || raft_leader(c, &members));
    let others: Vec<String> = members.iter().filter(|m| **m != leader).cloned().collect();
    c.use_member(&others[0]);
    // A writer creates ConfigMaps through a surviving member, one after the other, and keeps
    // the names of those the API acknowledged, and when.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Instant, String)>::new()));
    let writer = {
        let args = kubectl_args(c);
        let stop = stop.clone();
        let acked = acked.clone();
        std::thread::spawn(move || {
            let mut refused = 0;
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("ack-{i}");
                let out = std::process::Command::new("kubectl")
                    .args(&args)
                    .args(["create", "configmap", &name, "--from-literal=i=1"])
                    .output()
                    .unwrap();
                if out.status.success() {
                    acked.lock().unwrap().push((Instant::now(), name));
                } else {
                    refused += 1;
                }
                i += 1;
            }
            refused
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let lost_at = Instant::now();
    c.stop_node(&leader);
    let new_leader = c.wait("a new Raft leader", 90, || raft_leader(c, &others));
    let elected = lost_at.elapsed();
    // The API keeps serving: writes are acknowledged again.
    let after_loss = |acked: &[(Instant, String)]| acked.iter().filter(|a| a.0 > lost_at).count();
    c.wait("3 writes acknowledged after the loss", 90, || {
        (after_loss(&acked.lock().unwrap()) >= 3).then_some(())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let refused = writer.join().unwrap();
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    // The longest pause between acknowledged writes from the loss on: how long writes
    // stopped while the others elected a leader.
    let mut pause = Duration::ZERO;
    let mut last = lost_at;
    for (at, _) in acked.iter().filter(|a| a.0 > lost_at) {
        pause = pause.max(at.duration_since(last));
        last = *at;
    }
    let after = after_loss(&acked);
    let acked: Vec<String> = acked.into_iter().map(|a| a.1).collect();
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "leader-loss: {leader} off; {new_leader} seen leading {:.1} s later; the longest pause between acknowledged writes {:.1} s; {} writes acknowledged ({after} after the loss), {refused} refused",
            elected.as_secs_f64(),
            pause.as_secs_f64(),
            acked.len(),
        );
    }
    assert!(
        after >= 3,
        "the API did not keep serving writes: {after} acknowledged after the loss"
    );
    // Every acknowledged write is there, read through a survivor.
    let names = |c: &Cluster| -> BTreeSet<String> {
        c.kubectl_ok(&[
            "get",
            "configmaps",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .split_whitespace()
        .map(String::from)
        .collect()
    };
    let present = names(c);
    let lost: Vec<&String> = acked.iter().filter(|a| !present.contains(*a)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    // The old leader comes back and catches up.
    c.start_node(&leader);
    node_ready(c, &leader, 120);
    c.wait(&format!("{leader}'s API"), 60, || {
        let out = c
            .kubectl_cmd()
            .args(["--server", &format!("https://{}:6443", c.address(&leader))])
            .args(["--request-timeout=3s", "get", "--raw", "/readyz"])
            .output()
            .unwrap();
        out.status.success().then_some(())
    });
    c.use_member(&leader);
    c.wait(
        &format!("{leader} to serve every acknowledged write"),
        60,
        || {
            let there = names(c);
            acked.iter().all(|a| there.contains(a)).then_some(())
        },
    );
    c.use_member("n1");
    let mut args = vec!["delete", "configmap"];
    args.extend(
        present
            .iter()
            .filter(|n| n.starts_with("ack-"))
            .map(String::as_str),
    );
    c.kubectl_ok(&args);
}
