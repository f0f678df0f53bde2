//! kctl against a real `berth server`.
//!
//! The server is another package's binary, so `CARGO_BIN_EXE_berth` is not set for this test:
//! it is looked up as `berth` in the target profile directory this test binary runs from
//! (`target/<profile>/deps/kctl-<hash>` → `target/<profile>/berth`), or taken from the
//! `BERTH_BIN` environment variable. `cargo test --workspace` builds it; alone, run
//! `cargo build --bin berth` first. Each test starts its own server on free loopback ports in
//! 12000..30000 and a [`Server`] guard kills it when the test ends, failed or not.

use berth_testkit::free_port;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const KCTL: &str = env!("CARGO_BIN_EXE_kctl");

fn berth_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BERTH_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let berth = profile.join(format!("berth{}", std::env::consts::EXE_SUFFIX));
    assert!(
        berth.exists(),
        "the berth binary is missing at {}: build it first with `cargo build --bin berth` \
         (same profile as this test), or set BERTH_BIN to its path",
        berth.display()
    );
    berth
}

/// A running `berth server`, killed on drop.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut child = Command::new(berth_binary())
            .arg("server")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg(format!("--listen=127.0.0.1:{}", free_port()))
            .arg(format!(
                "--store-client-url=http://127.0.0.1:{}",
                free_port()
            ))
            .arg(format!("--store-peer-url=http://127.0.0.1:{}", free_port()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("berth server starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        // The guard exists before waiting, so a server that never gets ready is killed too.
        let mut server = Server {
            child,
            dir,
            kubeconfig: PathBuf::new(),
        };
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        assert!(
            !line.trim().is_empty(),
            "berth server did not print its kubeconfig path; its log:\n{}",
            std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default()
        );
        server.kubeconfig = PathBuf::from(line.trim());
        server
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(KCTL);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .env_remove("KUBE_EDITOR")
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kctl runs");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// kctl that must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_stdin(args, None)
    }

    fn ok_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "kctl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// kctl that must fail; its standard error.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(
            !out.status.success(),
            "kctl {args:?} succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }
}

const WEB: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
---
apiVersion: v1
kind: Service
metadata: {name: web, labels: {app: web}}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config, labels: {app: web, tier: front}}
data: {mode: blue}
"#;

const OTHERS: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: from-stdin, labels: {app: web}}
data: {a: "1"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: elsewhere, namespace: demo}
data: {b: "2"}
"#;

#[test]
fn apply_get_scale_describe_delete() {
    let s = Server::start();
    let web = s.write("web.yaml", WEB);

    // A multi-document file, then more from stdin (one object in another namespace).
    let out = s.ok(&["apply", "-f", &web]);
    assert_eq!(
        out,
        "deployment.apps/web serverside-applied\nservice/web serverside-applied\nconfigmap/web-config serverside-applied\n"
    );
    assert_eq!(
        s.ok(&["create", "namespace", "demo"]),
        "namespace/demo created\n"
    );
    let out = s.ok_stdin(&["apply", "-f", "-"], Some(OTHERS));
    assert!(
        out.contains("configmap/from-stdin serverside-applied"),
        "{out}"
    );
    assert!(
        out.contains("configmap/elsewhere serverside-applied"),
        "{out}"
    );

    // Server-side Tables: priority-1 columns only with -o wide.
    let out = s.ok(&["get", "deploy"]);
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("UP-TO-DATE"),
        "{out}"
    );
    assert!(!header.contains("IMAGES"), "{out}");
    let out = s.ok(&["get", "deploy", "-o", "wide"]);
    let header = out.lines().next().unwrap();
    for column in ["CONTAINERS", "IMAGES", "SELECTOR"] {
        assert!(header.contains(column), "{out}");
    }
    assert!(
        out.contains("nginx:1.27") && out.contains("app=web"),
        "{out}"
    );

    // Several types: NAME carries kind.group/.
    let out = s.ok(&["get", "deploy,svc"]);
    assert!(out.contains("deployment.apps/web"), "{out}");
    assert!(out.contains("service/web"), "{out}");

    // -A adds NAMESPACE; -l filters; --show-labels adds LABELS.
    let out = s.ok(&["get", "configmaps", "-A"]);
    assert!(
        out.lines().next().unwrap().starts_with("NAMESPACE"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("demo") && l.contains("elsewhere")),
        "{out}"
    );
    let out = s.ok(&["get", "cm", "-l", "tier=front", "--show-labels"]);
    assert!(out.lines().next().unwrap().ends_with("LABELS"), "{out}");
    assert!(out.contains("app=web,tier=front"), "{out}");
    assert!(!out.contains("from-stdin"), "{out}");

    // json, name, jsonpath.
    let got: Value = serde_json::from_str(&s.ok(&["get", "deploy", "web", "-o", "json"])).unwrap();
    assert_eq!(got["kind"], "Deployment");
    assert_eq!(got["spec"]["replicas"], 2);
    assert_eq!(
        s.ok(&["get", "cm", "-l", "app=web", "-o", "name"]),
        "configmap/from-stdin\nconfigmap/web-config\n"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "cm",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.name}"
        ]),
        "from-stdin web-config"
    );
    let yaml = s.ok(&["get", "svc/web", "-o", "yaml"]);
    assert!(yaml.contains("kind: Service"), "{yaml}");

    // scale through the scale subresource.
    assert_eq!(
        s.ok(&["scale", "deploy", "web", "--replicas=4"]),
        "deployment.apps/web scaled\n"
    );
    assert_eq!(
        s.ok(&["get", "deploy/web", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );

    // describe: fields and the Events section.
    let out = s.ok(&["describe", "deploy", "web"]);
    assert!(out.starts_with("Name:         web\n"), "{out}");
    assert!(out.contains("Replicas:"), "{out}");
    assert!(out.contains("Events:"), "{out}");

    // rollout restart stamps the template.
    assert_eq!(
        s.ok(&["rollout", "restart", "deploy/web"]),
        "deployment.apps/web restarted\n"
    );
    let stamp = s.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.metadata.annotations['kubectl.kubernetes.io/restartedAt']}",
    ]);
    assert!(stamp.ends_with('Z'), "{stamp}");

    // delete -f waits for the objects to be gone.
    let out = s.ok(&["delete", "-f", &web]);
    assert_eq!(
        out,
        "deployment.apps \"web\" deleted\nservice \"web\" deleted\nconfigmap \"web-config\" deleted\n"
    );
    let err = s.fails(&["get", "deploy", "web"]);
    assert_eq!(
        err.trim(),
        "Error from server (NotFound): deployments.apps \"web\" not found"
    );
    let out = s.ok(&["delete", "cm", "-l", "app=web"]);
    assert_eq!(out, "configmap \"from-stdin\" deleted\n");
}

#[test]
fn errors_discovery_and_versions() {
    let s = Server::start();

    // A manifest error names the file, the document and the line.
    let bad = s.write(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n",
    );
    let err = s.fails(&["apply", "-f", &bad]);
    assert_eq!(
        err.trim(),
        format!("error: error parsing \"{bad}\": document 2 (line 5): missing field \"kind\"")
    );

    // An API error shows the server's message, then one line per field cause.
    let invalid = s.write(
        "invalid.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: broken}\nspec:\n  replicas: -1\n  selector: {matchLabels: {app: x}}\n  template:\n    metadata: {labels: {app: x}}\n    spec:\n      containers: [{name: c}]\n",
    );
    let err = s.fails(&["apply", "-f", &invalid]);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "Error from server (Invalid): error when applying deployment.apps/broken from \"{invalid}\" document 1: "
        )),
        "{err}"
    );
    assert!(
        lines.contains(&"  * spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
        "{err}"
    );
    assert!(
        lines.contains(&"  * spec.template.spec.containers[0].image: Required value"),
        "{err}"
    );

    // create namespace twice.
    assert_eq!(s.ok(&["create", "ns", "demo"]), "namespace/demo created\n");
    let err = s.fails(&["create", "namespace", "demo"]);
    assert_eq!(
        err.trim(),
        "Error from server (AlreadyExists): namespaces \"demo\" already exists"
    );

    // Discovery, OpenAPI, versions.
    let out = s.ok(&["api-resources"]);
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("deployments")
            && l.contains("deploy")
            && l.contains("apps/v1")
            && l.contains("Deployment")),
        "{out}"
    );
    assert!(!out.contains("pods/log"), "{out}");
    let out = s.ok(&["explain", "pod.spec.containers"]);
    assert!(
        out.starts_with("KIND:       Pod\nVERSION:    v1\n\nFIELD: containers <[]Container>"),
        "{out}"
    );
    assert!(out.contains("  image\t<string>"), "{out}");
    let out = s.ok(&["version"]);
    assert!(out.starts_with("Client Version: v"), "{out}");
    assert!(out.contains("Server Version: v1.32"), "{out}");
    assert!(s
        .ok(&["cluster-info"])
        .contains("control plane is running at https://127.0.0.1:"));

    // Unknown types, and the APIs this cluster does not have yet.
    let err = s.fails(&["get", "widgets"]);
    assert_eq!(
        err.trim(),
        "error: the server doesn't have a resource type \"widgets\""
    );
    // The metrics API is served; no pod runs on a node agent, so there is no usage yet.
    assert_eq!(
        s.ok(&["top", "pods"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "CPU", "MEMORY"]
    );
    s.ok_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: busybox}]\n"),
    );
    let err = s.fails(&["exec", "p", "--", "true"]);
    assert!(err.contains("not supported by this cluster yet"), "{err}");

    // config use-context edits the kubeconfig file it came from.
    let err = s.fails(&["config", "use-context", "nope"]);
    assert!(
        err.contains("no context exists with the name: \"nope\""),
        "{err}"
    );
    let current = s.ok(&["config", "current-context"]);
    assert_eq!(
        s.ok(&["config", "use-context", current.trim()]),
        format!("Switched to context \"{}\".\n", current.trim())
    );
    assert!(s.ok(&["completion", "bash"]).contains("_kctl"));
}

#[test]
fn get_watch_prints_a_line_per_change() {
    let s = Server::start();
    s.ok_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\ndata: {a: \"1\"}\n"),
    );
    let mut child = s
        .command(&["get", "configmaps", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the watcher even if an assertion below fails.
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _guard = Kill(&mut child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("a line from get -w")
    };
    let header = next();
    assert!(
        header.starts_with("NAME") && header.contains("DATA"),
        "{header}"
    );
    assert!(next().starts_with("first"));
    s.ok_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: second}\ndata: {a: \"1\", b: \"2\"}\n"),
    );
    let line = next();
    assert!(line.starts_with("second") && line.contains(" 2 "), "{line}");
}

#[test]
fn prune_dry_run_directories_edit_and_rollout() {
    let s = Server::start();
    let dir = s.path("manifests");
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    let cm = |name: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, labels: {{app: shop}}}}\ndata: {{mode: blue}}\n")
    };
    std::fs::write(dir.join("a.yaml"), cm("a")).unwrap();
    std::fs::write(dir.join("nested/b.yaml"), cm("b")).unwrap();
    let d = dir.display().to_string();

    // A directory: only its own files without -R, the nested ones too with it.
    assert_eq!(
        s.ok(&["apply", "-f", &d]),
        "configmap/a serverside-applied\n"
    );
    assert_eq!(
        s.ok(&["apply", "-R", "-f", &d, "--dry-run=server"]),
        "configmap/a serverside-applied (server dry run)\nconfigmap/b serverside-applied (server dry run)\n"
    );
    assert!(s.fails(&["get", "cm", "b"]).contains("NotFound"));
    s.ok(&["apply", "-R", "-f", &d]);

    // --prune -l deletes what carries the selector but is no longer in the manifests.
    std::fs::remove_file(dir.join("nested/b.yaml")).unwrap();
    let out = s.ok(&["apply", "-R", "-f", &d, "--prune", "-l", "app=shop"]);
    assert_eq!(out, "configmap/a serverside-applied\nconfigmap/b pruned\n");
    assert_eq!(
        s.ok(&["get", "cm", "-l", "app=shop", "-o", "name"]),
        "configmap/a\n"
    );

    // edit: the editor's change is sent as an update; no change cancels.
    let out = s
        .command(&["edit", "cm", "a"])
        .env("EDITOR", "sed -i s/blue/green/")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "configmap/a edited\n");
    assert_eq!(
        s.ok(&["get", "cm", "a", "-o", "jsonpath={.data.mode}"]),
        "green"
    );
    let out = s
        .command(&["edit", "cm/a"])
        .env("EDITOR", "true")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Edit cancelled, no changes made.\n"
    );

    // rollout, with the controller-manager `berth server` runs: no node runs the pods, so the
    // rollout waits; history and undo follow the ReplicaSets the controller makes.
    s.ok_stdin(&["apply", "-f", "-"], Some(WEB));
    let eventually = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !check() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    eventually("the rollout to be observed", &|| {
        s.ok(&["rollout", "status", "deploy/web", "--watch=false"])
            == "Waiting for deployment \"web\" rollout to finish: 0 of 2 updated replicas are available...\n"
    });
    let err = s.fails(&["rollout", "status", "deploy/web", "--timeout=1s"]);
    assert!(err.contains("timed out"), "{err}");
    s.ok_stdin(
        &["apply", "-f", "-"],
        Some(&WEB.replacen("nginx:1.27", "nginx:1.28", 1)),
    );
    eventually("two revisions", &|| {
        s.ok(&["rollout", "history", "deploy/web"])
            == "deployment.apps/web\nREVISION   CHANGE-CAUSE\n1          <none>\n2          <none>\n"
    });
    assert_eq!(
        s.ok(&["rollout", "undo", "deploy/web"]),
        "deployment.apps/web rolled back\n"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "nginx:1.27"
    );
    // The controller takes the first ReplicaSet back as revision 3.
    eventually("revision 3", &|| {
        s.ok(&["rollout", "history", "deploy/web"])
            == "deployment.apps/web\nREVISION   CHANGE-CAUSE\n2          <none>\n3          <none>\n"
    });
}
