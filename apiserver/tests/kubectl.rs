//! The real kubectl 1.32 against a running Berth API server.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{write, Cluster};
use serde_json::Value;

const WEB: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: REPLICAS
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: IMAGE
        ports: [{containerPort: 80}]
        env: [{name: A, value: "1"}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config}
data: {mode: blue}
"#;

fn web(replicas: u32, image: &str) -> String {
    WEB.replace("REPLICAS", &replicas.to_string())
        .replace("IMAGE", image)
}

/// A stand-in deployment controller: reports every deployment as fully rolled out at its
/// current generation, as the real controller does once its pods are ready.
fn fake_deployment_controller(cluster: &Cluster) -> tokio::task::JoinHandle<()> {
    let api = cluster.cp().api.clone();
    tokio::spawn(async move {
        loop {
            let (items, _) = api.cache.list("/registry/apps/deployments/", None);
            for d in items {
                let gen = d.object.pointer("/metadata/generation").cloned();
                let replicas = d.object.pointer("/spec/replicas").cloned();
                let observed = d.object.pointer("/status/observedGeneration").cloned();
                let have = d.object.pointer("/status/availableReplicas").cloned();
                if observed == gen && have == replicas {
                    continue;
                }
                let ns = d.object["metadata"]["namespace"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let name = d.object["metadata"]["name"].as_str().unwrap().to_string();
                let target = berth_apiserver::request::Target {
                    info: berth_api::registry::by_kind("Deployment").unwrap(),
                    namespace: Some(ns),
                    name: Some(name),
                    subresource: Some("status".into()),
                };
                let opts = berth_apiserver::objects::WriteOptions {
                    dry_run: false,
                    field_manager: "test-controller".into(),
                    validation: berth_apiserver::objects::FieldValidation::Ignore,
                    apply: false,
                    requester: None,
                };
                let _ = api
                    .guaranteed_update(&target, &opts, |old| {
                        let mut new = old.cloned().unwrap_or(Value::Null);
                        let r = new["spec"]["replicas"].clone();
                        new["status"] = serde_json::json!({
                            "observedGeneration": new["metadata"]["generation"],
                            "replicas": r, "updatedReplicas": r, "readyReplicas": r,
                            "availableReplicas": r});
                        Ok(berth_apiserver::objects::Update::Replace {
                            object: new,
                            warnings: vec![],
                            precondition: None,
                        })
                    })
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apply_get_scale_rollout_describe_delete() {
    let c = Cluster::start().await;
    let dir = c.dir.path();
    let manifest = write(dir, "web.yaml", &web(2, "nginx:1.27"));
    let m = manifest.to_str().unwrap();

    // Client-side apply creates, then finds nothing to change.
    let out = c.kubectl_ok(&["apply", "-f", m]);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert!(out.contains("service/web created"), "{out}");
    assert!(out.contains("configmap/web-config created"), "{out}");
    let out = c.kubectl_ok(&["apply", "-f", m]);
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");

    // Tables, wide columns.
    let out = c.kubectl_ok(&["get", "deploy", "-o", "wide"]);
    let header = out.lines().next().unwrap();
    for col in [
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ] {
        assert!(header.contains(col), "{out}");
    }
    assert!(
        out.contains("nginx:1.27") && out.contains("app=web"),
        "{out}"
    );
    let out = c.kubectl_ok(&["get", "svc", "web"]);
    assert!(out.contains("80/TCP"), "{out}");

    // Server-side apply takes over, then an edited manifest is applied client-side.
    let out = c.kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", m]);
    assert!(
        out.contains("deployment.apps/web serverside-applied"),
        "{out}"
    );
    let edited = write(dir, "web2.yaml", &web(3, "nginx:1.28"));
    let out = c.kubectl_ok(&["apply", "-f", edited.to_str().unwrap()]);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let got: Value =
        serde_json::from_str(&c.kubectl_ok(&["get", "deploy", "web", "-o", "json"])).unwrap();
    assert_eq!(got["spec"]["replicas"], 3);
    let container = &got["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.28");
    // The strategic merge kept the fields the patch did not mention.
    assert_eq!(container["env"][0]["name"], "A");
    assert!(got["metadata"]["generation"].as_i64().unwrap() >= 2);

    // scale, then rollout status with a controller reporting progress.
    let out = c.kubectl_ok(&["scale", "deploy", "web", "--replicas=5"]);
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    let replicas = c.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas, "5");
    let controller = fake_deployment_controller(&c);
    let out = c.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    controller.abort();

    let out = c.kubectl_ok(&["describe", "deploy", "web"]);
    assert!(out.contains("Name:") && out.contains("web"), "{out}");
    assert!(out.contains("Replicas:"), "{out}");

    let out = c.kubectl_ok(&["delete", "-f", edited.to_str().unwrap()]);
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    let out = c.kubectl(&["get", "deploy", "web"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NotFound") && err.contains("\"web\" not found"),
        "{err}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_watch_prints_each_change() {
    let c = Cluster::start().await;
    c.kubectl_ok(&["create", "configmap", "first", "--from-literal=a=1"]);
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", c.kubeconfig())
        .env("HOME", c.dir.path())
        .args(["--cache-dir", c.dir.path().join("kc").to_str().unwrap()])
        .args(["get", "configmaps", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let next = |what: &str| -> String {
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no line with {what}"));
            if line.contains(what) {
                return line;
            }
        }
    };
    assert!(next("NAME").contains("DATA"));
    next("first");
    c.kubectl_ok(&[
        "create",
        "configmap",
        "second",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    let line = next("second");
    assert!(line.contains(" 2 "), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespaces_version_discovery_explain() {
    let c = Cluster::start().await;
    // kubectl sends this one as protobuf.
    let out = c.kubectl_ok(&["create", "namespace", "demo"]);
    assert!(out.contains("namespace/demo created"), "{out}");
    let out = c.kubectl(&["create", "namespace", "demo"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Error from server (AlreadyExists): namespaces \"demo\" already exists"),
        "{err}"
    );
    let out = c.kubectl_ok(&["get", "ns"]);
    for ns in ["default", "kube-system", "demo"] {
        assert!(out.contains(ns), "{out}");
    }
    assert!(out.contains("Active"), "{out}");

    // A namespace terminates with its content.
    c.kubectl_ok(&[
        "-n",
        "demo",
        "create",
        "configmap",
        "x",
        "--from-literal=a=b",
    ]);
    let out = c.kubectl_ok(&["delete", "namespace", "demo", "--timeout=30s"]);
    assert!(out.contains("namespace \"demo\" deleted"), "{out}");
    let out = c.kubectl(&["get", "ns", "demo"]);
    assert!(!out.status.success());

    let out = c.kubectl_ok(&["version"]);
    assert!(out.contains("Server Version: v1.32"), "{out}");
    let out = c.kubectl_ok(&["api-resources"]);
    for r in [
        "deployments",
        "pods",
        "namespaces",
        "clusterroles",
        "leases",
    ] {
        assert!(out.contains(r), "{out}");
    }
    let out = c.kubectl_ok(&["explain", "pod.spec.containers"]);
    assert!(
        out.contains("DESCRIPTION") && out.contains("image"),
        "{out}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_reports_bad_manifests() {
    let c = Cluster::start().await;
    let dir = c.dir.path();
    let unknown = write(
        dir,
        "unknown.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: u}\ndatta: {a: b}\n",
    );
    let out = c.kubectl(&["apply", "-f", unknown.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field") && err.contains("datta"),
        "{err}"
    );

    let bad_name = write(
        dir,
        "badname.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\n",
    );
    let out = c.kubectl(&["apply", "-f", bad_name.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value"),
        "{err}"
    );

    let nothing_stored = c.kubectl_ok(&["get", "cm", "-o", "name"]);
    assert!(!nothing_stored.contains("configmap/u") && !nothing_stored.contains("Bad_Name"));
    let _ = Arc::new(());
    c.stop().await;
}
