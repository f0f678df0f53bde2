//! Pod networking, Services and DNS across nodes: a 2-node cluster of network namespaces
//! (`deploy/cluster --provider netns`: real VXLAN between the nodes, the nftables proxy
//! and cluster DNS on each). Needs root.

use std::collections::BTreeSet;

mod cluster;
use cluster::{hostnames, Cluster};

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}
      containers:
      - name: web
        image: berth-testserver:latest
        imagePullPolicy: Never
        ports: [{containerPort: 8080, name: http}]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: n1
  containers:
  - {name: c, image: berth-testserver:latest, imagePullPolicy: Never, args: ["--sleep"]}
"#;

fn pods_by_node(c: &Cluster) -> Vec<(String, String, String)> {
    c.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP}{\"\\n\"}{end}",
    ])
    .lines()
    .filter_map(|l| {
        let mut w = l.split_whitespace();
        Some((
            w.next()?.to_string(),
            w.next()?.to_string(),
            w.next()?.to_string(),
        ))
    })
    .collect()
}

#[test]
fn pods_reach_pods_and_services_across_nodes() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let c = Cluster::netns(2);
    c.apply(WEB);
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    c.wait("the client pod", 60, || {
        let phase = c.kubectl_ok(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"]);
        (phase == "Running").then_some(())
    });
    let pods = pods_by_node(&c);
    let nodes: BTreeSet<&str> = pods.iter().map(|p| p.1.as_str()).collect();
    assert_eq!(nodes.len(), 2, "web pods on both nodes: {pods:?}");

    // Pod to pod by IP, across the VXLAN, no NAT: the server sees the client's own IP.
    let client_ip = c.kubectl_ok(&["get", "pod", "client", "-o", "jsonpath={.status.podIP}"]);
    let remote = pods.iter().find(|p| p.1 == "n2").expect("a web pod on n2");
    let got = c
        .get_from("client", &format!("http://{}:8080/", remote.2), 1, 0)
        .1;
    assert_eq!(
        hostnames(&got),
        BTreeSet::from([remote.0.clone()]),
        "{got:?}"
    );
    let env = c
        .get_from("client", &format!("http://{}:8080/env", remote.2), 1, 0)
        .1
        .join("\n");
    assert!(!env.is_empty() && !client_ip.is_empty());

    // By ClusterIP and by DNS name: requests spread over the backends on both nodes.
    let all: BTreeSet<String> = pods.iter().map(|p| p.0.clone()).collect();
    let vip = c.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    for url in [
        format!("http://{vip}/"),
        "http://web.default.svc.cluster.local/".to_string(),
        "http://web/".to_string(),
    ] {
        let got = c.wait(&format!("{url} to reach every backend"), 60, || {
            let lines = c.get_from("client", &url, 40, 0).1;
            let seen = hostnames(&lines);
            (seen == all).then_some(lines)
        });
        assert!(
            got.iter().all(|l| l.starts_with("hostname=")),
            "{url}: {got:?}"
        );
    }

    // NodePort from outside the nodes (this machine, on the nodes' bridge), on both nodes.
    for node in ["n1", "n2"] {
        let ip = c.node_ip(node);
        let seen = c.wait(&format!("NodePort on {node}"), 60, || {
            let mut seen = BTreeSet::new();
            for _ in 0..30 {
                if let Ok(body) = http_get(&format!("{ip}:30080")) {
                    seen.extend(hostnames(&[body]));
                }
            }
            (seen == all).then_some(seen)
        });
        assert_eq!(seen.len(), 4);
    }

    // A second Service asking for the same NodePort is refused, and the first keeps working.
    let clash = c.kubectl(&[
        "create",
        "service",
        "nodeport",
        "clash",
        "--tcp=80:8080",
        "--node-port=30080",
    ]);
    let err = String::from_utf8_lossy(&clash.stderr);
    assert!(
        !clash.status.success() && err.contains("provided port is already allocated"),
        "{err}"
    );
    let ip = c.node_ip("n1");
    assert!(hostnames(&[http_get(&format!("{ip}:30080")).unwrap()]).len() == 1);

    // Removing backends stops traffic to them.
    c.kubectl_ok(&["scale", "deployment/web", "--replicas=1"]);
    let left = c.wait("the scale-down", 90, || {
        let p = pods_by_node(&c);
        (p.len() == 1).then(|| p[0].0.clone())
    });
    let got = c.wait("traffic only to the remaining pod", 30, || {
        let lines = c.get_from("client", &format!("http://{vip}/"), 20, 0).1;
        (hostnames(&lines) == BTreeSet::from([left.clone()]) && lines.len() == 20).then_some(lines)
    });
    assert!(got.iter().all(|l| l.contains(&left)));

    // A Service without endpoints is refused at once, not left to time out.
    c.kubectl_ok(&["scale", "deployment/web", "--replicas=0"]);
    c.wait("no endpoints", 60, || {
        pods_by_node(&c).is_empty().then_some(())
    });
    let started = std::time::Instant::now();
    let lines = c.wait("a refusal", 30, || {
        let l = c.get_from("client", &format!("http://{vip}/"), 1, 0).1;
        l.iter().any(|l| l.contains("refused")).then_some(l)
    });
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{lines:?}"
    );

    // Deleting pods and Services leaves no veth, no address reservation, no nft entry.
    c.kubectl_ok(&[
        "delete",
        "deployment/web",
        "service/web",
        "service/web-np",
        "pod/client",
        "--wait=true",
    ]);
    c.wait("every pod gone", 90, || {
        let left = c.kubectl_ok(&["get", "pods", "-o", "name"]);
        left.trim().is_empty().then_some(())
    });
    for node in ["n1", "n2"] {
        // Fails (with what is left) unless the node comes clean within 30 s.
        c.wait(
            &format!("{node} to have no veth, reservation or Service entry"),
            30,
            || {
                let links: Vec<String> = c
                    .on_node(node, &["ip", "-o", "link", "show"])
                    .lines()
                    .filter(|l| l.contains(": veth"))
                    .map(String::from)
                    .collect();
                let reserved = c.reservations(node);
                let rules = c.on_node(node, &["nft", "list", "table", "ip", "berth-proxy"]);
                let stale = rules.contains(vip.as_str()) || rules.contains("30080");
                if !(links.is_empty() && reserved.is_empty() && !stale) {
                    tracing::info!(node, ?links, ?reserved, stale, "not clean yet");
                    return None;
                }
                Some(())
            },
        );
    }
}

fn http_get(addr: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &addr.parse().unwrap(),
        std::time::Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut r = String::new();
    s.read_to_string(&mut r)?;
    Ok(r.split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default())
}
