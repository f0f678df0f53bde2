//! The real kubectl 1.32 against a minimal fake API server in this process, whose pod
//! subresources `exec` and `portforward` go straight into the agent's stream endpoints:
//! the API server's splice is left out, the protocols on the wire are the same.
//!
//! Skipped (passing, with a note) when kubectl or curl is not on PATH.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use axum::extract::{Path as UrlPath, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use berth_node_agent::stream::fake::{FakeDialer, FakeExecBackend};
use berth_node_agent::stream::{
    serve_exec, serve_port_forward, ExecBackend, ExecOptions, PortForwardDialer, PortForwardOptions,
};
use common::{http_server, within, Task};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio_rustls::TlsAcceptor;

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// The fake API server: what kubectl 1.32 needs for exec and port-forward.
struct ApiServer {
    addr: SocketAddr,
    /// Every request line it got, for failure messages.
    log: Arc<Mutex<Vec<String>>>,
    _task: Task,
}

fn pod() -> serde_json::Value {
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": "web", "namespace": "default", "uid": "6c1a4f7e-0000-4000-8000-000000000001",
                     "resourceVersion": "7", "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "main", "image": "busybox",
                 "ports": [{"containerPort": 80, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": "10.244.0.7",
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "main", "ready": true, "restartCount": 0, "image": "busybox",
                                          "imageID": "", "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}]}
    })
}

fn not_found(what: &str) -> Response {
    (
        http::StatusCode::NOT_FOUND,
        Json(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{what} not found"), "reason": "NotFound", "code": 404}),
        ),
    )
        .into_response()
}

async fn api_server(
    backend: Arc<dyn ExecBackend>,
    dialer: Arc<dyn PortForwardDialer>,
) -> Result<ApiServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let log = Arc::new(Mutex::new(Vec::new()));

    let resources = json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
         "verbs": ["get", "list"], "shortNames": ["po"], "categories": ["all"]},
        {"name": "pods/attach", "singularName": "", "namespaced": true, "kind": "PodAttachOptions", "verbs": ["create", "get"]},
        {"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]},
        {"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]}
    ]});
    let router = Router::new()
        .route(
            "/version",
            get(|| async {
                Json(json!({"major": "1", "minor": "32", "gitVersion": "v1.32.4",
                    "gitCommit": "0000000", "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                    "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64"}))
            }),
        )
        .route(
            "/api",
            get(move || async move {
                Json(json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}]}))
            }),
        )
        .route(
            "/apis",
            get(|| async { Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})) }),
        )
        .route("/api/v1", get(move || async move { Json(resources.clone()) }))
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}",
            get(|UrlPath((ns, name)): UrlPath<(String, String)>| async move {
                if (ns.as_str(), name.as_str()) == ("default", "web") {
                    Json(pod()).into_response()
                } else {
                    not_found(&format!("pods \"{name}\""))
                }
            }),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/exec",
            any(move |req: Request| {
                let backend = backend.clone();
                async move {
                    match ExecOptions::from_query(req.uri().query().unwrap_or("")) {
                        Ok(opts) => serve_exec(req, opts, backend).await,
                        Err(err) => err.into_response(),
                    }
                }
            }),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/portforward",
            any(move |UrlPath((ns, name)): UrlPath<(String, String)>, req: Request| {
                let dialer = dialer.clone();
                async move {
                    let query = req.uri().query().unwrap_or("");
                    match PortForwardOptions::from_query(format!("{ns}/{name}"), query) {
                        Ok(opts) => serve_port_forward(req, opts, dialer).await,
                        Err(err) => err.into_response(),
                    }
                }
            }),
        )
        .fallback(|req: Request| async move { not_found(&req.uri().to_string()) });
    let logged = log.clone();
    let router = router.layer(axum::middleware::from_fn(
        move |req: Request, next: axum::middleware::Next| {
            let log = logged.clone();
            async move {
                let line = format!(
                    "{} {} upgrade={:?}",
                    req.method(),
                    req.uri(),
                    req.headers().get("upgrade")
                );
                let resp = next.run(req).await;
                log.lock()
                    .expect("log lock")
                    .push(format!("{line} -> {}", resp.status()));
                resp
            }
        },
    ));

    let acceptor = tls_acceptor()?;
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let svc = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok(ApiServer {
        addr,
        log,
        _task: Task(task),
    })
}

fn tls_acceptor() -> Result<TlsAcceptor> {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)?;
    // Upgrades need HTTP/1.1 (client-go asks for it on those connections anyway).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A kubeconfig and cache directory for one run.
struct Kubectl {
    dir: tempfile::TempDir,
    api: ApiServer,
}

impl Kubectl {
    async fn start(
        backend: Arc<dyn ExecBackend>,
        dialer: Arc<dyn PortForwardDialer>,
    ) -> Result<Self> {
        let api = api_server(backend, dialer).await?;
        let dir = tempfile::tempdir()?;
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: https://{}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: faketoken\ncontexts:\n- name: c\n  context: {{cluster: fake, user: u, namespace: default}}\ncurrent-context: c\n",
            api.addr
        );
        std::fs::write(dir.path().join("config"), config)?;
        Ok(Self { dir, api })
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", self.dir.path().join("config"))
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.cache_dir())
            .args(args)
            .envs(env.iter().copied())
            .kill_on_drop(true);
        cmd
    }

    fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Runs kubectl to completion; returns (exit code, stdout, stderr).
    async fn run(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> Result<(i32, String, String)> {
        let mut child = self
            .command(args, env)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting kubectl")?;
        if let Some(input) = stdin {
            let mut w = child.stdin.take().expect("piped stdin");
            w.write_all(input.as_bytes()).await?;
            drop(w);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .map_err(|_| {
                anyhow!(
                    "kubectl {args:?} timed out; requests: {:#?}",
                    self.requests()
                )
            })??;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    fn requests(&self) -> Vec<String> {
        self.api.log.lock().expect("log lock").clone()
    }
}

#[allow(clippy::print_stderr)]
fn tools_present() -> bool {
    let present = on_path("kubectl") && on_path("curl");
    if !present {
        eprintln!("skipped: kubectl or curl is not on PATH");
    }
    present
}

const WEBSOCKETS: &[(&str, &str)] = &[];
const SPDY_EXEC: &[(&str, &str)] = &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")];
const SPDY_PORT_FORWARD: &[(&str, &str)] = &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_over_websocket_and_spdy() -> Result<()> {
    if !tools_present() {
        return Ok(());
    }
    let backend = Arc::new(FakeExecBackend::new());
    let k = Kubectl::start(backend.clone(), Arc::new(FakeDialer::new())).await?;
    for (transport, env) in [("websocket", WEBSOCKETS), ("spdy", SPDY_EXEC)] {
        let (code, out, err) = k
            .run(
                &[
                    "exec",
                    "web",
                    "--",
                    "sh",
                    "-c",
                    "echo out; echo err >&2; exit 3",
                ],
                env,
                None,
            )
            .await?;
        let ctx = || {
            format!(
                "{transport}: rc {code}, stdout {out:?}, stderr {err:?}, requests {:#?}",
                k.requests()
            )
        };
        if code != 3 || out != "out\n" || !err.starts_with("err\n") {
            bail!("kubectl exec: {}", ctx());
        }
        if !err.contains("command terminated with exit code 3") {
            bail!("kubectl exec exit message: {}", ctx());
        }

        let (code, out, err) = k
            .run(
                &["exec", "-i", "web", "--", "sh", "-c", "cat; echo done"],
                env,
                Some("hello\nworld\n"),
            )
            .await?;
        if code != 0 || out != "hello\nworld\ndone\n" {
            bail!(
                "kubectl exec -i over {transport}: rc {code}, stdout {out:?}, stderr {err:?}, requests {:#?}",
                k.requests()
            );
        }
    }
    // Which transport carried each: a websocket GET, then SPDY POSTs.
    let requests = k.requests();
    let upgrades: Vec<&String> = requests.iter().filter(|r| r.contains("/exec?")).collect();
    assert!(
        upgrades[0].starts_with("GET ")
            && upgrades[0].contains("\"websocket\"")
            && upgrades[0].ends_with("101 Switching Protocols"),
        "{upgrades:#?}"
    );
    assert!(
        upgrades.iter().any(|r| r.starts_with("POST ")
            && r.contains("\"SPDY/3.1\"")
            && r.ends_with("101 Switching Protocols")),
        "{upgrades:#?}"
    );
    assert_eq!(backend.calls().len(), 4);
    Ok(())
}

/// Starts `kubectl port-forward pod/web :80` and returns the local port it chose.
async fn port_forward(k: &Kubectl, env: &[(&str, &str)]) -> Result<(tokio::process::Child, u16)> {
    let mut child = k
        .command(&["port-forward", "pod/web", ":80"], env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    // "Forwarding from 127.0.0.1:43117 -> 80"
    let port = within("kubectl port-forward to listen", async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                let port = rest.split(' ').next().unwrap_or("").parse::<u16>()?;
                return Ok::<u16, anyhow::Error>(port);
            }
        }
        bail!("kubectl port-forward ended before listening")
    })
    .await
    .with_context(|| format!("requests: {:#?}", k.requests()))??;
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, port))
}

async fn curl(port: u16) -> Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                &format!("http://127.0.0.1:{port}/"),
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow!("curl timed out"))??;
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_websocket_and_spdy() -> Result<()> {
    if !tools_present() {
        return Ok(());
    }
    let (web, _web) = http_server("hello through kubectl port-forward\n").await?;
    let dialer = Arc::new(FakeDialer::new().route(80, web));
    let k = Kubectl::start(Arc::new(FakeExecBackend::new()), dialer.clone()).await?;
    for (transport, env) in [("websocket", WEBSOCKETS), ("spdy", SPDY_PORT_FORWARD)] {
        let (mut child, port) = port_forward(&k, env).await?;
        // Two connections through one forwarding session.
        for _ in 0..2 {
            let body = curl(port)
                .await
                .with_context(|| format!("{transport}; requests: {:#?}", k.requests()))?;
            assert_eq!(body, "hello through kubectl port-forward\n", "{transport}");
        }
        child.kill().await?;
        let _ = child.wait().await;
    }
    assert_eq!(dialer.dialed(), [80, 80, 80, 80]);
    let requests = k.requests();
    let upgrades: Vec<&String> = requests
        .iter()
        .filter(|r| r.contains("/portforward"))
        .collect();
    assert!(
        upgrades[0].starts_with("GET ")
            && upgrades[0].contains("\"websocket\"")
            && upgrades[0].ends_with("101 Switching Protocols"),
        "{upgrades:#?}"
    );
    assert!(
        upgrades.iter().any(|r| r.starts_with("POST ")
            && r.contains("\"SPDY/3.1\"")
            && r.ends_with("101 Switching Protocols")),
        "{upgrades:#?}"
    );
    Ok(())
}
